#!/usr/bin/env bash
# The web client's benchmarks (bench/frontend/bench.mjs): bundle size, time
# to the first channel list, frame rate while scrolling 10,000 messages.
# Starts a throwaway FerretDB unless TEST_NGINX_MONGO_URI is set; builds the
# client if frontend/dist is missing.  Arguments go to bench.mjs, e.g.
#
#   bench/frontend/run.sh --json bench/frontend/results/latest.json
#   bench/frontend/run.sh --only bundle
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../scripts/lib.sh
. "$here/../../scripts/lib.sh"

tmp=$(mktemp -d)
ferretdb_pid=
cleanup() {
    [ -n "$ferretdb_pid" ] && stop_pid "$ferretdb_pid"
    rm -rf "$tmp"
}
trap cleanup EXIT

export TEST_NGINX_BINARY=${TEST_NGINX_BINARY:-$(command -v nginx || echo /usr/sbin/nginx)}
export TEST_NGINX_LOAD_MODULES=${TEST_NGINX_LOAD_MODULES:-$root/build/ngx_foko_chat_module.so}
if [ ! -f "$TEST_NGINX_LOAD_MODULES" ]; then
    flock /tmp/foko-build.lock "$root/scripts/build-module.sh"
fi
if [ -z "${TEST_NGINX_MONGO_URI:-}" ]; then
    install_ferretdb
    start_ferretdb "$tmp/db"
    export TEST_NGINX_MONGO_URI=$ferretdb_uri
fi
# no mail in the benchmarks
unset TEST_NGINX_MAIL_SMTP_PORT TEST_NGINX_MAIL_HTTP_PORT

if [ ! -f "$root/frontend/dist/index.html" ]; then
    (cd "$root/frontend" && npm run build)
fi

node "$here/bench.mjs" "$@"
