#!/bin/sh
# Renders /etc/nginx/nginx.conf from /etc/nginx/foko-chat/nginx.conf.template
# and the environment, then runs nginx in the foreground (or, with
# arguments, runs them instead, for instance "nginx -T").
#
#   FOKO_MONGO_URI         required: the MongoDB connection string
#   FOKO_JWT_SECRET        the HS256 signing secret (at least 32 bytes), or
#   FOKO_JWT_SECRET_FILE   a file holding it (a mounted secret), or
#   FOKO_JWT_KEY_FILE      a PEM private key (RS256 or ES256); exactly one
#   FOKO_LISTEN            port or address:port of the server (8080)
#   FOKO_STATUS_ALLOW      addresses or CIDR ranges allowed to read /status,
#                          separated by spaces or commas (127.0.0.1 ::1)
#   FOKO_PUBLIC_URL        the site's address, the base of links in mail
#   FOKO_MAIL              the arguments of foko_chat_mail, e.g.
#                          "smtps://user:pass@smtp.example.com from=a@b.c"
#   FOKO_ALLOWED_ORIGINS   origins allowed to open /ws, space-separated
#   FOKO_WORKERS           worker processes (auto)
#   FOKO_SHM_SIZE          the shared zone (32m)
#   FOKO_LOG_LEVEL         error log level (notice)
#   FOKO_REDIS_URL         redis://ip[:port][/db]: one of several hosts
#                          that share this Redis (none: a single host)
#   FOKO_HOST_ID           this host's name among them (generated)
set -eu

template=/etc/nginx/foko-chat/nginx.conf.template
conf=/etc/nginx/nginx.conf

die() {
    echo "foko-chat: $*" >&2
    exit 1
}

# a value that goes between double quotes in the configuration
quotable() {
    case $2 in
        *'"'* | *'\'* | *'
'*) die "$1 may not contain a double quote, a backslash or a newline" ;;
    esac
}

: "${FOKO_MONGO_URI:?set FOKO_MONGO_URI, e.g. mongodb://mongo:27017/foko_chat}"
: "${FOKO_LISTEN:=8080}"
: "${FOKO_STATUS_ALLOW:=127.0.0.1 ::1}"
: "${FOKO_WORKERS:=auto}"
: "${FOKO_SHM_SIZE:=32m}"
: "${FOKO_LOG_LEVEL:=notice}"

quotable FOKO_MONGO_URI "$FOKO_MONGO_URI"

case $FOKO_LISTEN in
    *[!0-9A-Fa-f.:\[\]]* | '') die "FOKO_LISTEN must be a port or address:port" ;;
esac

case $FOKO_WORKERS in
    auto | [1-9] | [1-9][0-9]) ;;
    *) die "FOKO_WORKERS must be auto or a number" ;;
esac

case $FOKO_SHM_SIZE in
    *[!0-9kKmMgG]* | '') die "FOKO_SHM_SIZE must be a size, e.g. 64m" ;;
esac

case $FOKO_LOG_LEVEL in
    debug | info | notice | warn | error | crit | alert | emerg) ;;
    *) die "FOKO_LOG_LEVEL must be an nginx log level" ;;
esac

# the signing key: exactly one of the three
n=0
for v in "${FOKO_JWT_SECRET:-}" "${FOKO_JWT_SECRET_FILE:-}" \
    "${FOKO_JWT_KEY_FILE:-}"
do
    [ -z "$v" ] || n=$((n + 1))
done
[ "$n" = 1 ] || die "set one of FOKO_JWT_SECRET, FOKO_JWT_SECRET_FILE" \
    "and FOKO_JWT_KEY_FILE (found $n)"

if [ -n "${FOKO_JWT_SECRET_FILE:-}" ]; then
    [ -r "$FOKO_JWT_SECRET_FILE" ] \
        || die "FOKO_JWT_SECRET_FILE: cannot read $FOKO_JWT_SECRET_FILE"
    FOKO_JWT_SECRET=$(tr -d ' \t\r\n' < "$FOKO_JWT_SECRET_FILE")
fi
if [ -n "${FOKO_JWT_SECRET:-}" ]; then
    quotable FOKO_JWT_SECRET "$FOKO_JWT_SECRET"
    [ "${#FOKO_JWT_SECRET}" -ge 32 ] \
        || die "FOKO_JWT_SECRET must be at least 32 bytes" \
            "(openssl rand -base64 48 makes one)"
    FOKO_JWT_DIRECTIVE="foko_chat_jwt_secret \"$FOKO_JWT_SECRET\";"
else
    quotable FOKO_JWT_KEY_FILE "$FOKO_JWT_KEY_FILE"
    FOKO_JWT_DIRECTIVE="foko_chat_jwt_key_file \"$FOKO_JWT_KEY_FILE\";"
fi

FOKO_OPTIONAL_DIRECTIVES=
add() {
    FOKO_OPTIONAL_DIRECTIVES="$FOKO_OPTIONAL_DIRECTIVES    $1
"
}
if [ -n "${FOKO_PUBLIC_URL:-}" ]; then
    quotable FOKO_PUBLIC_URL "$FOKO_PUBLIC_URL"
    add "foko_chat_public_url \"$FOKO_PUBLIC_URL\";"
fi
if [ -n "${FOKO_MAIL:-}" ]; then
    # several words: kept apart, each checked
    case $FOKO_MAIL in
        *[\;\{\}\"\\\#]* | *'
'*) die "FOKO_MAIL may not contain ; { } # \" \\ or a newline" ;;
    esac
    add "foko_chat_mail $FOKO_MAIL;"
fi
if [ -n "${FOKO_ALLOWED_ORIGINS:-}" ]; then
    case $FOKO_ALLOWED_ORIGINS in
        *[!A-Za-z0-9.:/*\ -]*)
            die "FOKO_ALLOWED_ORIGINS must be origins, space-separated" ;;
    esac
    add "foko_chat_allowed_origins $FOKO_ALLOWED_ORIGINS;"
fi
if [ -n "${FOKO_REDIS_URL:-}" ]; then
    case $FOKO_REDIS_URL in
        redis://*[!0-9A-Fa-f.:/\[\]]* | redis://) die "FOKO_REDIS_URL must be" \
            "redis://ip[:port][/db]" ;;
        redis://*) ;;
        *) die "FOKO_REDIS_URL must be redis://ip[:port][/db]" ;;
    esac
    add "foko_chat_redis_url $FOKO_REDIS_URL;"
    # the storage pool's threads: worker 0's reader holds one
    add "foko_chat_redis_thread_pool foko_store;"
fi
if [ -n "${FOKO_HOST_ID:-}" ]; then
    case $FOKO_HOST_ID in
        *[!A-Za-z0-9._-]*) die "FOKO_HOST_ID: letters, digits, . _ - only" ;;
    esac
    add "foko_chat_host_id $FOKO_HOST_ID;"
fi

FOKO_STATUS_RULES=
for a in $(echo "$FOKO_STATUS_ALLOW" | tr ',' ' '); do
    case $a in
        all) ;;
        *[!0-9A-Fa-f.:/]*)
            die "FOKO_STATUS_ALLOW: '$a' is not an address or range" ;;
    esac
    FOKO_STATUS_RULES="$FOKO_STATUS_RULES            allow $a;
"
done

# without their last newline: the template has its own
FOKO_OPTIONAL_DIRECTIVES=$(printf '%s' "$FOKO_OPTIONAL_DIRECTIVES")
FOKO_STATUS_RULES=$(printf '%s' "$FOKO_STATUS_RULES")

export FOKO_MONGO_URI FOKO_LISTEN FOKO_WORKERS FOKO_SHM_SIZE FOKO_LOG_LEVEL \
    FOKO_JWT_DIRECTIVE FOKO_OPTIONAL_DIRECTIVES FOKO_STATUS_RULES

# the configuration holds the secret: readable by root (the master) only
umask 077
envsubst '${FOKO_MONGO_URI} ${FOKO_LISTEN} ${FOKO_WORKERS} ${FOKO_SHM_SIZE}
${FOKO_LOG_LEVEL} ${FOKO_JWT_DIRECTIVE} ${FOKO_OPTIONAL_DIRECTIVES}
${FOKO_STATUS_RULES}' < "$template" > "$conf.new"
mv -f "$conf.new" "$conf"
umask 022

# nothing secret is left in the environment of nginx or of the command
unset FOKO_JWT_SECRET FOKO_JWT_DIRECTIVE FOKO_MAIL FOKO_OPTIONAL_DIRECTIVES \
    FOKO_MONGO_URI

if [ $# -gt 0 ]; then
    exec "$@"
fi
exec nginx -g 'daemon off;'
