#!/bin/bash
# Healthy once the IMAP listener answers with its greeting.
host=${IMAP_LISTEN:-127.0.0.1}
# A wildcard listener is reachable on loopback.
case "$host" in '*'|'0.0.0.0'|'::'|'[::]') host=127.0.0.1 ;; esac
exec 3<>"/dev/tcp/$host/${IMAP_PORT:-143}" || exit 1
IFS= read -r -t 2 greeting <&3 || exit 1
[[ "$greeting" == "* OK"* ]]
