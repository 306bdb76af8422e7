#!/usr/bin/env bash
# Worker memory after sign-ins: the resident memory (VmRSS) of the one
# nginx worker after N sign-ups and N sign-ins (argon2id at its default
# m=19m), C clients at a time, so that the hashes land on many threads of
# the pool.  Two layouts: hashing on the shared pool ("default", 32
# threads) and on a pool of its own ("foko_hash", threads=4,
# concurrency=4).  Each module given is measured in the same run, in turn,
# REPS times.  See bench/README.md, "hash-memory".
#
#   bench/hash-memory/run.sh [--count N] [--clients C] [--reps R] [SO...]
#
# SO defaults to build/ngx_foko_chat_module.so.  Everything listens on
# 127.0.0.1, on free ports, and is stopped on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/scripts/lib.sh"

count=50
clients=8
reps=3

while [ $# -gt 0 ]; do
    case $1 in
        --count) count=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done

modules=()
for so in "$@"; do
    modules+=("$(realpath "$so")")
done
if [ ${#modules[@]} -eq 0 ]; then
    modules=("$root/build/ngx_foko_chat_module.so")
    [ -f "${modules[0]}" ] || "$root/scripts/build-module.sh"
fi

tmp=$(mktemp -d /tmp/foko-hash-memory.XXXXXX)
nginx_master=
ferretdb_pid=

cleanup() {
    [ -n "$nginx_master" ] && kill -TERM "$nginx_master" 2>/dev/null || true
    [ -n "$ferretdb_pid" ] && stop_pid "$ferretdb_pid"
    rm -rf "$tmp"
}
trap cleanup EXIT

start_ferretdb "$tmp/ferretdb"

# start_nginx SO LAYOUT: one worker; sets nginx_master, worker and port
start_nginx() {
    local so=$1 layout=$2 pool=
    port=$(free_port)
    rm -rf "$tmp/nginx"
    mkdir -p "$tmp/nginx/logs" "$tmp/nginx/conf" "$tmp/nginx/tmp"
    if [ "$layout" = foko_hash ]; then
        pool="foko_chat_hash_thread_pool foko_hash;"
    fi
    cat > "$tmp/nginx/conf/nginx.conf" <<CONF
load_module $so;
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
thread_pool foko_hash threads=4 max_queue=1024;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    foko_chat_mongo_uri ${ferretdb_uri%/*}/hash_$RANDOM$RANDOM;
    foko_chat_jwt_secret bench-secret-0123456789abcdefghijklmnop;
    foko_chat_password_hash argon2id concurrency=4;
    foko_chat_limit signup_address 1000/1m;
    foko_chat_limit login_address 1000/1m;
    $pool
    server {
        listen 127.0.0.1:$port;
        location /api/ { foko_chat_api; }
    }
}
CONF
    /usr/sbin/nginx -p "$tmp/nginx/" -c conf/nginx.conf
    for _ in $(seq 1 50); do
        [ -s "$tmp/nginx/logs/nginx.pid" ] && break
        sleep 0.1
    done
    nginx_master=$(cat "$tmp/nginx/logs/nginx.pid")
    sleep 1
    worker=$(pgrep -P "$nginx_master" | head -1)
}

stop_nginx() {
    kill -QUIT "$nginx_master"
    for _ in $(seq 1 100); do
        kill -0 "$nginx_master" 2>/dev/null || break
        sleep 0.1
    done
    nginx_master=
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$count sign-ups then $count sign-ins, $clients at a time;" \
     "worker VmRSS in MiB: start / after sign-ups / after sign-ins;" \
     "seconds of the sign-ups, of the sign-ins"

for rep in $(seq 1 "$reps"); do
    for layout in default foko_hash; do
        for so in "${modules[@]}"; do
            start_nginx "$so" "$layout"
            out=$(timeout 600 python3 "$here/signins.py" --port "$port" \
                      --worker "$worker" --count "$count" \
                      --clients "$clients")
            echo "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
m = lambda k: "%.1f" % (r[k] / 1024)
print("rep %s  %-9s  %s / %s / %s  %.2f s %.2f s  %s" % (sys.argv[1],
      sys.argv[2], m("rss_start_kib"), m("rss_signups_kib"),
      m("rss_signins_kib"), r["signups_s"], r["signins_s"], sys.argv[3]))
' "$rep" "$layout" "$so"
            stop_nginx
            if grep -E '\[(error|crit|alert|emerg)\]' \
                   "$tmp/nginx/logs/error.log"
            then
                echo "run.sh: nginx logged errors" >&2
                exit 1
            fi
        done
    done
done
