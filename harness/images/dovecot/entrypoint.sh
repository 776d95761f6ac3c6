#!/bin/bash
# Writes /etc/dovecot/dovecot.conf from the environment, creates the users file and a self-signed
# certificate when none is mounted, then runs Dovecot in the foreground.
#
#   IMAP_PORT        plain / STARTTLS port (default 143)
#   IMAPS_PORT       implicit-TLS port (default 993; ignored when DOVECOT_SSL=no)
#   IMAP_LISTEN      address to bind (default 127.0.0.1)
#   DOVECOT_SSL      no | yes | required (default yes)
#   DOVECOT_USERS    newline-separated "name:password" lines (users may also come from a mounted
#                    passwd-file at /etc/dovecot/users or a mounted /etc/dovecot/users.d/ directory)
#   DOVECOT_TLS_SAN  subjectAltName of the generated certificate (default DNS:localhost,IP:127.0.0.1)
#   DOVECOT_OAUTH2_INTROSPECTION_URL
#                    when set, XOAUTH2 and OAUTHBEARER logins are accepted too, their bearer tokens
#                    checked against this RFC 7662 introspection endpoint (POST; the answer must say
#                    "active": true and name the user in "username"); unset, only passwords work
set -Eeuo pipefail

: "${IMAP_PORT:=143}"
: "${IMAPS_PORT:=993}"
: "${IMAP_LISTEN:=127.0.0.1}"
: "${DOVECOT_SSL:=yes}"
: "${DOVECOT_TLS_SAN:=DNS:localhost,IP:127.0.0.1}"

log() { printf '%s [entrypoint] %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

case "$DOVECOT_SSL" in
    no) IMAPS_PORT=0; ssl_files='' ;;
    yes|required)
        tls_dir=/etc/dovecot/tls
        if [ ! -s "$tls_dir/cert.pem" ]; then
            mkdir -p "$tls_dir"
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
                -subj /CN=localhost -addext "subjectAltName=$DOVECOT_TLS_SAN" \
                -keyout "$tls_dir/key.pem" -out "$tls_dir/cert.pem" 2>/dev/null
            chmod 600 "$tls_dir/key.pem"
            log "generated a self-signed certificate for $DOVECOT_TLS_SAN"
        fi
        ssl_files="ssl_server_cert_file = $tls_dir/cert.pem
ssl_server_key_file = $tls_dir/key.pem" ;;
    *) log "error: DOVECOT_SSL must be no, yes or required (got '$DOVECOT_SSL')"; exit 2 ;;
esac

for port in "$IMAP_PORT" "$IMAPS_PORT"; do
    if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -gt 65535 ]; then
        log "error: IMAP_PORT and IMAPS_PORT must be port numbers (got '$port')"; exit 2
    fi
done

# Users: /etc/dovecot/users.d/<name> files (mount the directory), plus a mounted passwd-file at
# /etc/dovecot/users (standard "name:{SCHEME}hash:..." lines), plus DOVECOT_USERS.
users_dir=/etc/dovecot/users.d
mkdir -p "$users_dir"
add_entry() {  # name, full passwd-file line
    case "$1" in
        ''|.*|*/*) log "error: invalid user name '$1'"; exit 2 ;;
    esac
    ( umask 027; printf '%s\n' "$2" > "$users_dir/$1" )
}
if [ -f /etc/dovecot/users ]; then
    while IFS= read -r line; do
        case "$line" in ''|'#'*) continue ;; esac
        add_entry "${line%%:*}" "$line"
    done < /etc/dovecot/users
fi
while IFS= read -r line; do
    [ -n "$line" ] || continue
    name=${line%%:*}
    password=${line#*:}
    if [ "$name" = "$line" ]; then
        log 'error: DOVECOT_USERS lines must read name:password'; exit 2
    fi
    add_entry "$name" "$name:{PLAIN}$password::::::"
done <<< "${DOVECOT_USERS:-}"
# Dovecot's auth process reads the files as the dovecot user.
chown -R root:dovecot "$users_dir"
chmod 750 "$users_dir"

mkdir -p /srv/mail
chown nobody:nogroup /srv/mail

auth_mechanisms='plain login'
oauth2_settings=''
if [ -n "${DOVECOT_OAUTH2_INTROSPECTION_URL:-}" ]; then
    case "$DOVECOT_OAUTH2_INTROSPECTION_URL" in
        http://*|https://*) ;;
        *) log "error: DOVECOT_OAUTH2_INTROSPECTION_URL must be an http(s) URL"; exit 2 ;;
    esac
    auth_mechanisms='plain login oauthbearer xoauth2'
    oauth2_settings="oauth2 {
  introspection_mode = post
  introspection_url = $DOVECOT_OAUTH2_INTROSPECTION_URL
  force_introspection = yes
  username_attribute = username
  active_attribute = active
  active_value = true
}"
fi

ssl_files_escaped=${ssl_files//$'\n'/\\n}
oauth2_escaped=${oauth2_settings//$'\n'/\\n}
sed -e "s|@IMAP_PORT@|$IMAP_PORT|" -e "s|@IMAPS_PORT@|$IMAPS_PORT|" -e "s|@IMAP_LISTEN@|$IMAP_LISTEN|" \
    -e "s|@DOVECOT_SSL@|$DOVECOT_SSL|" -e "s|@SSL_FILES@|$ssl_files_escaped|" \
    -e "s|@AUTH_MECHANISMS@|$auth_mechanisms|" -e "s|@OAUTH2@|$oauth2_escaped|" \
    /etc/dovecot/dovecot.conf.in > /etc/dovecot/dovecot.conf

exec dovecot -F "$@"
