#!/usr/bin/env bash
# Idle WebSocket memory: the nginx worker's resident memory per idle
# connection, for the module (authenticated, subscribed to one channel)
# and for nchan (a WebSocket subscriber of one channel), both loaded into
# the same stock nginx, one worker each, measured by the same client
# (idle.py) in the same run.  See bench/README.md, "ws-idle".
#
#   bench/ws-idle/run.sh [--counts "1000 10000"] [--reps N] [--warm W]
#
# Everything listens on 127.0.0.1 only, on free ports in 20000-29999, and
# is stopped on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/scripts/lib.sh"

counts="1000 10000"
reps=3
warm=200

while [ $# -gt 0 ]; do
    case $1 in
        --counts) counts=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --warm) warm=$2; shift 2 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

nchan_so=/usr/lib/nginx/modules/ngx_nchan_module.so
[ -f "$nchan_so" ] || { echo "run.sh: needs libnginx-mod-nchan" >&2; exit 1; }
module=${MODULE:-$root/build/ngx_foko_chat_module.so}
[ -f "$module" ] || "$root/scripts/build-module.sh"

tmp=$(mktemp -d /tmp/foko-ws-idle.XXXXXX)
nginx_master=
ferretdb_pid=

cleanup() {
    [ -n "$nginx_master" ] && kill -TERM "$nginx_master" 2>/dev/null || true
    [ -n "$ferretdb_pid" ] && stop_pid "$ferretdb_pid"
    rm -rf "$tmp"
}
trap cleanup EXIT

max=0
for n in $counts; do [ "$n" -gt "$max" ] && max=$n; done
ulimit -n $((max + 1000)) 2>/dev/null || true
if [ "$(ulimit -n)" -lt $((max + 100)) ]; then
    echo "run.sh: open files limited to $(ulimit -n), need $((max + 100))" >&2
    exit 1
fi

start_ferretdb "$tmp/ferretdb"

# start_nginx ARENAS: one worker with both modules; sets nginx_master,
# worker and port
start_nginx() {
    local arenas=$1
    port=$(free_port)
    rm -rf "$tmp/nginx"
    mkdir -p "$tmp/nginx/logs" "$tmp/nginx/conf" "$tmp/nginx/tmp"
    cat > "$tmp/nginx/conf/nginx.conf" <<CONF
load_module $module;
load_module $nchan_so;
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections $((max + 1000)); }
http {
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    foko_chat_mongo_uri ${ferretdb_uri%/*}/idle_$RANDOM$RANDOM;
    foko_chat_jwt_secret bench-secret-0123456789abcdefghijklmnop;
    foko_chat_password_hash argon2id t=1 m=8m;
    server {
        listen 127.0.0.1:$port;
        location /api/ { foko_chat_api; }
        location = /ws { foko_chat_websocket; }
        location ~ ^/sub/(\w+)$ {
            nchan_subscriber websocket;
            nchan_channel_id \$1;
        }
    }
}
CONF
    if [ "$arenas" = default ]; then
        /usr/sbin/nginx -p "$tmp/nginx/" -c conf/nginx.conf
    else
        MALLOC_ARENA_MAX=$arenas /usr/sbin/nginx -p "$tmp/nginx/" \
            -c conf/nginx.conf
    fi
    sleep 1
    nginx_master=$(cat "$tmp/nginx/logs/nginx.pid")
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

api() {
    curl -sf -X POST -H 'Content-Type: application/json' "$@"
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "warm-up: $warm connections opened and closed before each measurement"
echo "target   arenas   connections   bytes/connection (rep 1..$reps)"

for arenas in default 1; do
    for n in $counts; do
        for target in foko nchan; do
            line="$target $arenas $n"
            for rep in $(seq 1 "$reps"); do
                start_nginx "$arenas"
                if [ $target = foko ]; then
                    a=$(api -d "{\"email\":\"a$RANDOM$rep@example.com\",\"password\":\"correct horse\",\"username\":\"a\"}" \
                            "http://127.0.0.1:$port/api/auth/signup")
                    b=$(api -d "{\"email\":\"b$RANDOM$rep@example.com\",\"password\":\"correct horse\",\"username\":\"b\"}" \
                            "http://127.0.0.1:$port/api/auth/signup")
                    token=$(echo "$a" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
                    bid=$(echo "$b" | python3 -c 'import json,sys; print(json.load(sys.stdin)["user"]["id"])')
                    api -H "Authorization: Bearer $token" \
                        -d "{\"name\":\"idle\",\"members\":[\"$bid\"]}" \
                        "http://127.0.0.1:$port/api/channels" >/dev/null
                    out=$(timeout 600 python3 "$here/idle.py" --port "$port" \
                              --path /ws --count "$n" --worker "$worker" \
                              --token "$token" --warm "$warm")
                else
                    out=$(timeout 600 python3 "$here/idle.py" --port "$port" \
                              --path /sub/idle --count "$n" --worker "$worker" \
                              --warm "$warm")
                fi
                per=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_per_connection"])')
                line="$line $per"
                stop_nginx
            done
            echo "$line"
        done
    done
done

if grep -E '\[(error|crit|alert|emerg)\]' "$tmp/nginx/logs/error.log"; then
    echo "run.sh: the last nginx logged errors" >&2
    exit 1
fi
