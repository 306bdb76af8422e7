#!/usr/bin/env bash
# End-to-end tests of the web client: the built client in headless Chromium
# against the real nginx module (e2e/stack.mjs starts a private nginx per
# test file).  Without TEST_NGINX_MONGO_URI this starts a throwaway FerretDB,
# and without TEST_NGINX_MAIL_SMTP_PORT/TEST_NGINX_MAIL_HTTP_PORT the mail
# peer (t/lib/mailpeer.py), both stopped on exit.
#
#   frontend/e2e/run.sh                  # every e2e/*.test.mjs
#   frontend/e2e/run.sh e2e/smoke.test.mjs
#
# Env: TEST_NGINX_BINARY, TEST_NGINX_LOAD_MODULES (the module's .so),
# TEST_NGINX_MONGO_URI, TEST_NGINX_MAIL_SMTP_PORT, TEST_NGINX_MAIL_HTTP_PORT,
# CHROMIUM (default /usr/bin/chromium), E2E_KEEP=1 (keep nginx prefixes),
# E2E_DIST (serve another build of the client than frontend/dist).
set -euo pipefail

frontend=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../../scripts/lib.sh
. "$frontend/../scripts/lib.sh"

tmp=$(mktemp -d)
ferretdb_pid=
mailpeer_pid=
cleanup() {
    [ -n "$ferretdb_pid" ] && stop_pid "$ferretdb_pid"
    [ -n "$mailpeer_pid" ] && stop_pid "$mailpeer_pid"
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

if [ -z "${TEST_NGINX_MAIL_SMTP_PORT:-}" ] || [ -z "${TEST_NGINX_MAIL_HTTP_PORT:-}" ]; then
    TEST_NGINX_MAIL_SMTP_PORT=$(free_port)
    TEST_NGINX_MAIL_HTTP_PORT=$(free_port)
    export TEST_NGINX_MAIL_SMTP_PORT TEST_NGINX_MAIL_HTTP_PORT
    /usr/bin/python3 "$root/t/lib/mailpeer.py" \
        --smtp-port "$TEST_NGINX_MAIL_SMTP_PORT" \
        --http-port "$TEST_NGINX_MAIL_HTTP_PORT" \
        > "$tmp/mailpeer.out" 2> "$tmp/mailpeer.log" &
    mailpeer_pid=$!
    for _ in $(seq 1 50); do
        grep -q ready "$tmp/mailpeer.out" && break
        kill -0 "$mailpeer_pid" 2>/dev/null || { cat "$tmp/mailpeer.log" >&2; exit 1; }
        sleep 0.1
    done
    grep -q ready "$tmp/mailpeer.out" || { echo "mail peer did not start" >&2; exit 1; }
fi

cd "$frontend"
if [ -z "${E2E_DIST:-}" ] && [ ! -f dist/index.html ]; then
    [ -d node_modules ] || npm ci
    npm run build
fi

# the whole run is bounded: each test has its own timeout, this is the net
timeout --kill-after=10s 280s \
    node --test --test-concurrency=1 --test-timeout=120000 "${@:-e2e/}"
