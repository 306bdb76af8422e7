#!/usr/bin/env bash
# make test: installs what is missing, builds the module, starts a throwaway
# FerretDB and runs the whole suite with prove.
set -euo pipefail

. "$(dirname "$0")/lib.sh"

install_all
build_module

tmp=$(mktemp -d)
ferretdb_pid=
cleanup() {
    [ -n "$ferretdb_pid" ] && stop_pid "$ferretdb_pid"
    rm -rf "$tmp"
}
trap cleanup EXIT

if [ -n "${FOKO_MONGO_URI:-}" ]; then
    mongo_uri=$FOKO_MONGO_URI
else
    start_ferretdb "$tmp/db"
    mongo_uri=$ferretdb_uri
fi

export TEST_NGINX_BINARY=${TEST_NGINX_BINARY:-$(command -v nginx || echo /usr/sbin/nginx)}
export TEST_NGINX_LOAD_MODULES=$root/build/ngx_foko_chat_module.so
export TEST_NGINX_MONGO_URI=$mongo_uri
export TEST_NGINX_FERRETDB=$ferretdb_bin

cd "$root"
prove -r "${@:-t/}"
