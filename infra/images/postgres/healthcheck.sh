#!/bin/sh
# Healthy once the final server (not the initialisation one, which listens on no TCP port) accepts
# connections to the application database.
exec pg_isready -q -h 127.0.0.1 -p "${PGPORT:-5432}" -U "${POSTGRES_USER:-postgres}" -d "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}"
