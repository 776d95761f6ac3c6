#!/bin/bash
# Entry point in the manner of the official postgres image, plus what pg_cron needs:
#   shared_preload_libraries = pg_cron (and http), cron.database_name = $POSTGRES_DB, and cron.host set to the
#   local socket directory so that each job run authenticates over the socket (trust) instead of TCP
#   (password), where it would fail with "connection failed".
set -Eeuo pipefail

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_INITDB_ARGS:=}"
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
export POSTGRES_USER POSTGRES_DB PGPORT="${PGPORT:-5432}"

log() { printf '%s [entrypoint] %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

if [ "${1:-}" = 'postgres' ] && [ "$(id -u)" = '0' ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

psql_app() { psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc -U "$POSTGRES_USER" "$@"; }

initialise() {
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
        log 'error: database is uninitialised and POSTGRES_PASSWORD is not set.'
        log '       Set POSTGRES_PASSWORD to a non-empty value for the superuser, or'
        log '       POSTGRES_HOST_AUTH_METHOD=trust to allow connections without a password (unsafe).'
        exit 1
    fi
    log "initialising $PGDATA"
    local pwfile
    pwfile=$(mktemp)
    printf '%s' "${POSTGRES_PASSWORD:-}" > "$pwfile"
    # shellcheck disable=SC2086
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
        --auth-host="$POSTGRES_HOST_AUTH_METHOD" --encoding=UTF8 $POSTGRES_INITDB_ARGS >/dev/null
    rm -f "$pwfile"
    {
        echo "host all all all $POSTGRES_HOST_AUTH_METHOD"
    } >> "$PGDATA/pg_hba.conf"
    cat >> "$PGDATA/postgresql.conf" <<CONF

# --- autosync image ---
listen_addresses = '*'
unix_socket_directories = '/var/run/postgresql'
# http preloaded: each pg_cron run is a new backend, and loading libcurl in every one of them
# costs ~4 ms, a third of a trigger's cold cost.
shared_preload_libraries = 'pg_cron,http'
cron.database_name = '$POSTGRES_DB'
cron.host = '/var/run/postgresql'
CONF

    # A server on the socket only, so that nothing reaches it over TCP before initialisation is done.
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -p $PGPORT" start >/dev/null
    if [ "$POSTGRES_DB" != 'postgres' ]; then
        psql_app -d postgres -v db="$POSTGRES_DB" <<'SQL' >/dev/null
SELECT format('CREATE DATABASE %I', :'db') \gexec
SQL
    fi
    local f
    for f in /docker-entrypoint-initdb.d/*; do
        [ -e "$f" ] || continue
        case "$f" in
            *.sh) log "running $f"; . "$f" ;;
            *.sql) log "running $f"; psql_app -d "$POSTGRES_DB" -f "$f" >/dev/null ;;
            *) log "ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    log 'initialisation complete; starting the server'
}

if [ "${1:-}" = 'postgres' ]; then
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        initialise
    fi
    exec "$@"
fi

exec "$@"
