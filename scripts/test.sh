#!/usr/bin/env bash
# make test: installs what is missing, builds the module, starts a throwaway
# FerretDB and the mail peer, and runs the whole suite with prove; then,
# unless FOKO_SANITIZE is set or test files were named, the web client's
# checks: type check, unit tests, build, and the end-to-end tests in
# headless Chromium against the same FerretDB and mail peer.
#
#   scripts/test.sh                  # everything
#   scripts/test.sh t/020-channels.t # those files only, no client checks
set -euo pipefail

. "$(dirname "$0")/lib.sh"

client_checks=
if [ -z "${FOKO_SANITIZE:-}" ] && [ $# -eq 0 ]; then
    client_checks=1
fi

install_all
# the suite's own peers (prometheus, pymongo, dpkg-dev, ...) for every run,
# the sanitizer one included, so that no file skips for want of them
install_packages "${test_apt_packages[@]}"
if [ -n "$client_checks" ]; then
    check_node
fi
build_module

# FOKO_SANITIZE=1: the module built with AddressSanitizer and UBSan, loaded
# into the stock nginx with the sanitizer runtimes preloaded
module=$root/build/ngx_foko_chat_module.so
if [ -n "${FOKO_SANITIZE:-}" ]; then
    module=$root/build-asan/ngx_foko_chat_module.so
fi
# FOKO_MODULE=path: another build (a benchmark's "before"), as it is
module=${FOKO_MODULE:-$module}

tmp=$(mktemp -d)
ferretdb_pid=
mailpeer_pid=
cleanup() {
    [ -n "$ferretdb_pid" ] && stop_pid "$ferretdb_pid"
    [ -n "$mailpeer_pid" ] && stop_pid "$mailpeer_pid"
    rm -rf "$tmp"
}
trap cleanup EXIT

if [ -n "${FOKO_MONGO_URI:-}" ]; then
    mongo_uri=$FOKO_MONGO_URI
else
    start_ferretdb "$tmp/db"
    mongo_uri=$ferretdb_uri
fi

# a real SMTP server and a SendGrid-like HTTP endpoint, with a mailbox
mail_smtp_port=$(free_port)
mail_http_port=$(free_port)
/usr/bin/python3 "$root/t/lib/mailpeer.py" \
    --smtp-port "$mail_smtp_port" --http-port "$mail_http_port" \
    > "$tmp/mailpeer.out" 2> "$tmp/mailpeer.log" &
mailpeer_pid=$!
for _ in $(seq 1 50); do
    grep -q ready "$tmp/mailpeer.out" && break
    kill -0 "$mailpeer_pid" 2>/dev/null || { cat "$tmp/mailpeer.log" >&2; exit 1; }
    sleep 0.1
done

export TEST_NGINX_MAIL_SMTP_PORT=$mail_smtp_port
export TEST_NGINX_MAIL_HTTP_PORT=$mail_http_port
export TEST_NGINX_BINARY=${TEST_NGINX_BINARY:-$(command -v nginx || echo /usr/sbin/nginx)}
export TEST_NGINX_LOAD_MODULES=$module
export TEST_NGINX_MONGO_URI=$mongo_uri
export TEST_NGINX_FERRETDB=$ferretdb_bin

cd "$root"

# the web client's checks, each in frontend/; the first that fails ends them
run_client_checks() {
    client_deps || return 1
    echo "web client: type check (tsc -b)"
    (cd "$frontend" && npx tsc -b) || return 1
    echo "web client: unit tests (vitest run)"
    (cd "$frontend" && npx vitest run) || return 1
    echo "web client: build (npm run build)"
    (cd "$frontend" && npm run build --silent) || return 1
    if [ -f "$frontend/e2e/run.sh" ]; then
        echo "web client: end-to-end tests (frontend/e2e/run.sh)"
        bash "$frontend/e2e/run.sh" || return 1
    fi
}

if [ -z "${FOKO_SANITIZE:-}" ]; then
    failed=
    prove -r "${@:-t/}" || failed="prove"
    if [ -n "$client_checks" ]; then
        run_client_checks || failed="${failed:+$failed, }the web client's checks"
    fi
    if [ -n "$failed" ]; then
        echo "FAILED: $failed" >&2
        exit 1
    fi
    exit 0
fi

mkdir -p "$tmp/sanitizer"
LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS="detect_leaks=0:log_path=$tmp/sanitizer/asan" \
UBSAN_OPTIONS="print_stacktrace=1:log_path=$tmp/sanitizer/ubsan" \
    prove -r "${@:-t/}"

if [ -n "$(ls -A "$tmp/sanitizer")" ]; then
    echo "sanitizer reports:" >&2
    cat "$tmp/sanitizer"/* >&2
    exit 1
fi
echo "sanitizers: no reports"
