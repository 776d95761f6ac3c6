#!/bin/bash
# Healthy once the IMAP listener answers with its greeting.
exec 3<>"/dev/tcp/${IMAP_LISTEN:-127.0.0.1}/${IMAP_PORT:-143}" || exit 1
IFS= read -r -t 2 greeting <&3 || exit 1
[[ "$greeting" == "* OK"* ]]
