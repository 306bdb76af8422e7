#!/usr/bin/env bash
# make soak: a few thousand WebSocket clients in many channels sending and
# receiving at a steady rate for minutes, with a reload and a worker kill
# in the middle; then sent / acknowledged / received / lost / duplicated,
# delivery latency and worker memory.  See bench/README.md, section "Soak".
#
#   bench/soak/run.sh [--channels 100] [--members 25] [--rate 200]
#                     [--duration 120] [--reload-at 40] [--kill-at 80]
#                     [--workers 2] [--keep]
#
# MODULE=<path to a .so> runs that build instead of build/'s (built if
# missing).  Everything listens on 127.0.0.1 only, on free ports, and is
# stopped on exit; the whole run is bounded (duration + 10 minutes).
# Exit status 1 if anything was lost, duplicated, out of order or not
# acknowledged, or a worker died other than the one killed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/scripts/lib.sh"

channels=100
members=25
rate=200
duration=120
reload_at=40
kill_at=80
workers=2
keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --channels) channels=$2; shift 2 ;;
        --members) members=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --reload-at) reload_at=$2; shift 2 ;;
        --kill-at) kill_at=$2; shift 2 ;;
        --workers) workers=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "soak: unknown option $1" >&2; exit 2 ;;
    esac
done

nginx=${NGINX:-/usr/sbin/nginx}
module=${MODULE:-$root/build/ngx_foko_chat_module.so}
if [ ! -f "$module" ]; then
    "$root/scripts/build-module.sh"
fi
[ -x "$ferretdb_bin" ] || { echo "soak: $ferretdb_bin not found (make deps)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/foko-soak.XXXXXX)
chmod 755 "$tmp"
ferretdb_pid=
nginx_pid=
finish() {
    local rc=$?
    set +e
    if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
        kill -TERM "$nginx_pid"
        wait "$nginx_pid" 2>/dev/null
    fi
    [ -n "$ferretdb_pid" ] && stop_pid "$ferretdb_pid"
    if [ "$keep" = 1 ] || [ $rc -ne 0 ]; then
        echo "soak: kept $tmp (logs: $tmp/nginx/logs/error.log)" >&2
    else
        rm -rf "$tmp"
    fi
    exit $rc
}
trap finish EXIT
trap 'exit 130' INT TERM

# every client is a descriptor on each side, in this shell's children
ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
clients=$((channels * members))
if [ "$nofile" -lt $((clients + 512)) ]; then
    echo "soak: only $nofile open files allowed for $clients clients" >&2
    exit 1
fi

mkdir -p "$tmp/nginx/logs" "$tmp/nginx/conf" "$tmp/nginx/tmp"
# a private copy: a rebuild during the run must not change the loaded file
cp "$module" "$tmp/nginx/ngx_foko_chat_module.so"
start_ferretdb "$tmp/db"
port=$(free_port)

cat > "$tmp/nginx/conf/nginx.conf" <<CONF
load_module $tmp/nginx/ngx_foko_chat_module.so;
worker_processes $workers;
worker_rlimit_nofile $nofile;
daemon off;
master_process on;
pid $tmp/nginx/logs/nginx.pid;
error_log $tmp/nginx/logs/error.log notice;

events {
    worker_connections $(( nofile - 64 ));
}

http {
    access_log off;
    client_body_temp_path $tmp/nginx/tmp/body;
    proxy_temp_path $tmp/nginx/tmp/proxy;
    fastcgi_temp_path $tmp/nginx/tmp/fastcgi;
    uwsgi_temp_path $tmp/nginx/tmp/uwsgi;
    scgi_temp_path $tmp/nginx/tmp/scgi;

    foko_chat_mongo_uri $ferretdb_uri;
    foko_chat_jwt_secret soak-secret-0123456789abcdefghijklmnopqrstuv;
    foko_chat_jwt_ttl 1d;
    foko_chat_password_hash argon2id t=1 m=8m;
    foko_chat_limit signup_address 100000/1h;
    foko_chat_limit login_address 100000/1h;
    foko_chat_max_members 1000;

    server {
        listen 127.0.0.1:$port backlog=4096;
        location /api/ { foko_chat_api; }
        location = /ws { foko_chat_websocket; }
        location = /status { foko_chat_status; }
    }
}
CONF

"$nginx" -p "$tmp/nginx/" -c conf/nginx.conf -t -q
"$nginx" -p "$tmp/nginx/" -c conf/nginx.conf 2>>"$tmp/nginx/logs/stderr.log" &
nginx_pid=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

echo "soak: $clients clients in $channels channels of $members, $rate msgs/s" \
     "for $duration s, reload at $reload_at s, worker kill at $kill_at s;" \
     "module sha1 $(sha1sum < "$module" | cut -c1-12)," \
     "tree $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)," \
     "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

mkdir -p "$root/bench/results"
out=$root/bench/results/soak-$(date +%Y%m%d-%H%M%S).json
rc=0
timeout -s KILL $(( ${duration%.*} + 600 )) \
    python3 "$here/soak.py" --port "$port" --pid-file "$tmp/nginx/logs/nginx.pid" \
    --channels "$channels" --members "$members" --rate "$rate" \
    --duration "$duration" --reload-at "$reload_at" --kill-at "$kill_at" \
    --json "$out" > "$tmp/soak.json" || rc=$?

log=$tmp/nginx/logs/error.log
crashes=$(grep 'exited on signal' "$log" | grep -vc 'signal 9$' || true)
echo "soak: error log: $(grep -cE '\[(error|crit|alert|emerg)\]' "$log" || true)" \
     "line(s) at [error] or above, $crashes worker(s) died other than the one killed"
grep -E '\[(error|crit|alert|emerg)\]' "$log" | grep -v 'exited on signal 9$' |
    sed 's/^[^[]*//' | sort | uniq -c | sort -rn | head -10 || true
python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("soak: sent %(sent)d, acknowledged %(acknowledged)d, received "
      "%(received)d of %(expected_deliveries)d expected, lost %(lost)d, "
      "duplicated %(duplicated)d, out of order %(out_of_order)d; "
      "acknowledged but not in history %(acked_not_in_history)d, "
      "stored twice %(stored_twice)d, seq gaps %(seq_gaps)d" % r)
print("soak: latency p50 %(latency_p50_ms)s ms, p99 %(latency_p99_ms)s ms, "
      "max %(latency_max_ms)s ms; reconnects %(reconnects)d, resumes "
      "%(resumes)d; error answers %(error_answers)d" % r)
print("soak: worker RSS at start %s KiB, at the end %s KiB" % (
    sorted(r["worker_rss_start_kb"].values()),
    sorted(r["worker_rss_end_kb"].values())))
PY
echo "soak: results in $out"
if [ "$crashes" -gt 0 ]; then
    rc=1
fi
exit $rc
