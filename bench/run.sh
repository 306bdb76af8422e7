#!/usr/bin/env bash
# REST post benchmark: the module's acknowledged messages/s against the
# database's own batched insert rate, measured by the same tool in the same
# run on the same private FerretDB.  See bench/README.md.
#
#   bench/run.sh [--workers N] [--clients N] [--per-channel N] [--duration S]
#                [--warmup S] [--reps N] [--batch N] [--text-size N]
#                [--no-client-id] [--no-prime] [--no-build] [--keep]
#                [--json FILE]
#
# MODULE=<path to a .so> benchmarks that build instead of build/'s.
#
# Everything it starts (FerretDB, nginx) listens on 127.0.0.1 only, on free
# ports in 20000-29999, and is stopped on exit.
set -euo pipefail

bench=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$bench/.." && pwd)

workers=1
clients=256
per_channel=10
duration=10
warmup=2
reps=3
batch=256
text_size=100
client_id=true
prime=true
build=1
keep=0
json_out=

while [ $# -gt 0 ]; do
    case $1 in
        --workers) workers=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --per-channel) per_channel=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --batch) batch=$2; shift 2 ;;
        --text-size) text_size=$2; shift 2 ;;
        --no-client-id) client_id=false; shift ;;
        --no-prime) prime=false; shift ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        --json) json_out=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

ferretdb=${FERRETDB:-$root/.tools/bin/ferretdb-v1.24.2-id-index}
nginx=${NGINX:-/usr/sbin/nginx}
module=${MODULE:-$root/build/ngx_foko_chat_module.so}

tmp=$(mktemp -d /tmp/foko-bench.XXXXXX)
ferretdb_pid=
nginx_pid=

stop_all() {
    local rc=$?
    set +e
    if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
        kill -TERM "$nginx_pid"
        wait "$nginx_pid" 2>/dev/null
    fi
    if [ -n "$ferretdb_pid" ] && kill -0 "$ferretdb_pid" 2>/dev/null; then
        kill -TERM "$ferretdb_pid"     # a clean stop
        wait "$ferretdb_pid" 2>/dev/null
    fi
    if [ "$keep" = 1 ] || [ $rc -ne 0 ]; then
        echo "kept $tmp (logs: $tmp/nginx/logs/error.log, $tmp/ferretdb/ferretdb.log)" >&2
    else
        rm -rf "$tmp"
    fi
    exit $rc
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# a free loopback port in 20000-29999, below the ephemeral range
free_port() {
    python3 - "$@" <<'PY'
import random, socket, sys
taken = set(int(p) for p in sys.argv[1:])
for _ in range(200):
    port = random.randint(20000, 29999)
    if port in taken:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    sys.exit("no free port")
PY
}

wait_port() {
    local port=$1 pid=$2 what=$3 i
    for i in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "run.sh: $what exited" >&2
            return 1
        fi
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "run.sh: $what did not listen on $port" >&2
    return 1
}

# ---------------------------------------------------------------- build

if [ "$build" = 1 ]; then
    "$root/scripts/build-module.sh"
fi
[ -f "$module" ] || { echo "run.sh: $module not found (build it, or drop --no-build)" >&2; exit 1; }
[ -x "$ferretdb" ] || { echo "run.sh: $ferretdb not found (make deps)" >&2; exit 1; }

echo "building the load tool"
(cd "$bench/rest-post" && go build -o "$tmp/rest-post" .)

# nginx loads a private copy: a rebuild of build/ during the run must not
# change the file under the running workers
mkdir -p "$tmp/nginx/logs" "$tmp/nginx/conf" "$tmp/nginx/tmp" "$tmp/ferretdb"
cp "$module" "$tmp/nginx/ngx_foko_chat_module.so"
module_sum=$(sha1sum < "$module" | cut -c1-12)
tree=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)

# ---------------------------------------------------------------- FerretDB

fport=$(free_port)
"$ferretdb" --handler=sqlite --sqlite-url="file:$tmp/ferretdb/" \
    --listen-addr="127.0.0.1:$fport" --state-dir="$tmp/ferretdb" \
    --debug-addr=- --telemetry=disable --log-level=error \
    >> "$tmp/ferretdb/ferretdb.log" 2>&1 &
ferretdb_pid=$!
wait_port "$fport" "$ferretdb_pid" FerretDB
mongo_uri="mongodb://127.0.0.1:$fport/foko_chat"

# ---------------------------------------------------------------- nginx

nport=$(free_port "$fport")
cat > "$tmp/nginx/conf/nginx.conf" <<EOF
load_module $tmp/nginx/ngx_foko_chat_module.so;

worker_processes $workers;
daemon off;
master_process on;
pid $tmp/nginx/logs/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    keepalive_requests 100000;
    keepalive_timeout 300s;

    client_body_temp_path $tmp/nginx/tmp/body;
    proxy_temp_path $tmp/nginx/tmp/proxy;
    fastcgi_temp_path $tmp/nginx/tmp/fastcgi;
    uwsgi_temp_path $tmp/nginx/tmp/uwsgi;
    scgi_temp_path $tmp/nginx/tmp/scgi;

    foko_chat_mongo_uri $mongo_uri;
    foko_chat_jwt_secret bench-secret-0123456789abcdefghijklmnopqrstuv;
    foko_chat_password_hash argon2id t=1 m=8m;
    foko_chat_limit signup_address 100000/1h;
    foko_chat_limit login_address 100000/1h;

    server {
        listen 127.0.0.1:$nport;

        location /api/ {
            foko_chat_api;
        }

        location = /status {
            foko_chat_status;
        }
    }
}
EOF

"$nginx" -p "$tmp/nginx/" -c conf/nginx.conf -t -q
"$nginx" -p "$tmp/nginx/" -c conf/nginx.conf &
nginx_pid=$!
wait_port "$nport" "$nginx_pid" nginx

echo "FerretDB pid $ferretdb_pid on $fport; nginx pid $nginx_pid on $nport," \
     "$workers worker(s), module sha1 $module_sum (tree $tree)"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- run

bound=$(( reps * 2 * (duration + warmup + 20) + 300 + clients / 2 ))
timeout --signal=INT "$bound" "$tmp/rest-post" \
    -url "http://127.0.0.1:$nport" -mongo "$mongo_uri" \
    -mode both -reps "$reps" -workers "$workers" -inserters "$workers" \
    -clients "$clients" -per-channel "$per_channel" \
    -duration "${duration}s" -warmup "${warmup}s" -batch "$batch" \
    -text-size "$text_size" -client-id="$client_id" -prime="$prime" \
    -nginx-pid "$nginx_pid" -ferretdb-pid "$ferretdb_pid" \
    -json "$tmp/result.json"

if [ -n "$json_out" ]; then
    cp "$tmp/result.json" "$json_out"
fi

# ---------------------------------------------------------------- health

echo
if ! kill -0 "$nginx_pid" 2>/dev/null; then
    echo "nginx: the master is gone"
fi
log=$tmp/nginx/logs/error.log
bad=$(grep -cE '\[(error|alert|crit|emerg)\]|exited on signal' "$log" || true)
if [ "$bad" -gt 0 ]; then
    echo "nginx error log: $bad line(s) at error or above, first ones:"
    grep -E '\[(error|alert|crit|emerg)\]|exited on signal' "$log" | head -10
else
    echo "nginx error log: nothing at error or above"
fi
