#!/usr/bin/env bash
# make run: installs what is missing, builds the module and the web client
# (frontend/dist, again whenever a source of it is newer), starts FerretDB
# (unless FOKO_MONGO_URI names a MongoDB) and nginx in the foreground with
# conf/dev.conf on 127.0.0.1:8080.  Ctrl-C or SIGTERM stops both.
set -euo pipefail

. "$(dirname "$0")/lib.sh"

install_all
build_module
build_client

var=$root/var
prefix=$var/nginx
mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"

ferretdb_pid=
mailpeer_pid=
nginx_pid=
stop() {
    trap - INT TERM EXIT
    [ -n "$nginx_pid" ] && stop_pid "$nginx_pid"
    [ -n "$mailpeer_pid" ] && stop_pid "$mailpeer_pid"
    [ -n "$ferretdb_pid" ] && stop_pid "$ferretdb_pid"
    exit 0
}
trap stop INT TERM EXIT

if [ -n "${FOKO_MONGO_URI:-}" ]; then
    mongo_uri=$FOKO_MONGO_URI
else
    start_ferretdb "$var/ferretdb"
    mongo_uri=$ferretdb_uri
fi

# mail (password resets, invitations) goes to a local catcher that prints
# each one with its link here
mail_port=$(free_port)
/usr/bin/python3 "$root/t/lib/mailpeer.py" --print \
    --smtp-port "$mail_port" --http-port "$(free_port)" &
mailpeer_pid=$!

sed -e "s|@FOKO_MODULE@|$root/build/ngx_foko_chat_module.so|g" \
    -e "s|@FOKO_MONGO_URI@|$mongo_uri|g" \
    -e "s|@FOKO_MAIL_PORT@|$mail_port|g" \
    -e "s|@FOKO_ROOT@|$root|g" \
    "$root/conf/dev.conf" > "$prefix/conf/nginx.conf"
cp /etc/nginx/mime.types "$prefix/conf/mime.types"

nginx -p "$prefix" -c conf/nginx.conf -t -q
nginx -p "$prefix" -c conf/nginx.conf -g 'daemon off;' &
nginx_pid=$!

echo "Foko chat is running at http://127.0.0.1:8080/ (MongoDB: $mongo_uri)"
echo "Mail is not sent out: each mail is printed here with its link."
echo "Press Ctrl-C to stop."
wait "$nginx_pid"
