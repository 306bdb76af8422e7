#!/usr/bin/env bash
# The reconnect storm after "nginx -s reload": N signed-in WebSocket
# clients in channels of 100, 2 workers, a light posting load; see
# bench/README.md, "storm".
#
#   bench/storm/run.sh [--clients 1000,3000,10000] [--rate 20]
#                      [--per-channel 100] [--workers 2] [--before 10]
#                      [--storm-timeout 360] [--connect-timeout 900]
#                      [--out DIR] [--keep] [--warm]
#
# --warm restarts nginx once the users are in MongoDB, so that the fresh
# zone is warmed up with them (README, foko_chat_shm_size) and the first
# connection of every client is served from the zone, as after any
# restart of a running site; without it the first connection reads each
# account from MongoDB (minutes on FerretDB at 10,000 users).  The storm
# after the reload is measured the same way in both.
#
# MODULE=<.so> measures that build (default: build/ngx_foko_chat_module.so).
# One fresh FerretDB and nginx per client count; results in
# DIR/storm-<N>.json (default DIR: bench/results).  Loopback only; each
# count is bounded by the timeouts above.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
module=${MODULE:-$root/build/ngx_foko_chat_module.so}
py=/usr/bin/python3
counts=1000,3000,10000
rate=20
per_channel=100
workers=2
before=10
storm_timeout=360
connect_timeout=900
out=$root/bench/results
keep=0
warm=0

while [ $# -gt 0 ]; do
    case $1 in
        --clients) counts=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --per-channel) per_channel=$2; shift 2 ;;
        --workers) workers=$2; shift 2 ;;
        --before) before=$2; shift 2 ;;
        --storm-timeout) storm_timeout=$2; shift 2 ;;
        --connect-timeout) connect_timeout=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        --warm) warm=1; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

"$py" -c 'import pymongo' 2>/dev/null ||
    { echo "run.sh: needs python3-pymongo (apt-get install python3-pymongo)" >&2; exit 1; }
[ -f "$module" ] || { echo "run.sh: $module not found" >&2; exit 1; }
mkdir -p "$out"

tmp=
cleanup() {
    local rc=$?
    set +e
    stop_nginx
    stop_ferretdb
    if [ -n "$tmp" ]; then
        if [ "$keep" = 1 ] || [ $rc -ne 0 ]; then
            echo "kept $tmp" >&2
        else
            rm -rf "$tmp"
        fi
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=../dbscale/stack.sh
. "$root/bench/dbscale/stack.sh"

ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
max=${counts##*,}
for c in ${counts//,/ }; do [ "$c" -gt "$max" ] && max=$c; done
# per process: the tool holds every client, a worker at most all of them
if [ "$nofile" -lt $(( max + 1000 )) ]; then
    echo "run.sh: open files limited to $nofile, need $(( max + 1000 ))" >&2
    exit 1
fi
[ "$nofile" -gt 1048576 ] && nofile=1048576

bin=$(mktemp -d /tmp/foko-storm-bin.XXXXXX)
gcc -O2 -Wall -o "$bin/storm" "$here/storm.c"
module_sum=$(sha1sum < "$module" | cut -c1-12)
echo "module $module ($module_sum), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

for n in ${counts//,/ }; do
    [ -n "$tmp" ] && rm -rf "$tmp"
    tmp=$(mktemp -d /tmp/foko-storm.XXXXXX)
    nport=
    echo "== $n clients"
    start_ferretdb
    write_nginx_conf "$nofile"
    start_nginx
    "$py" "$here/setup.py" --port "$nport" --mongo "$mongo_uri" \
        --secret "$jwt_secret" --clients "$n" --per-channel "$per_channel" \
        --out "$tmp/plan.txt"
    if [ "$warm" = 1 ]; then
        stop_nginx
        start_nginx
        # the users the zone holds, until all N are in (at most 10 min)
        users=0
        for _ in $(seq 1 1200); do
            users=$(curl -s "http://127.0.0.1:$nport/metrics" |
                    awk '$1 == "foko_chat_cache_users" { print $2 }')
            [ "${users:-0}" -ge "$n" ] && break
            sleep 0.5
        done
        echo "restarted: the zone holds ${users:-0} users"
    fi
    set +e
    timeout $(( connect_timeout + storm_timeout + 120 )) "$bin/storm" \
        --port "$nport" --plan "$tmp/plan.txt" --master-pid "$nginx_pid" \
        --rate "$rate" --before "$before" --storm-timeout "$storm_timeout" \
        --connect-timeout "$connect_timeout" --seqs "$tmp/seqs.txt" \
        > "$tmp/storm.json"
    rc=$?
    set -e
    "$py" - "$tmp/storm.json" "$out/storm-$n.json" "$module_sum" \
        "$workers" "$tmp/nginx/logs/error.log" "$rc" "$mongo_uri" \
        "$tmp/seqs.txt" <<'PY'
import json, sys, time
import pymongo
from bson import ObjectId
raw = open(sys.argv[1]).read().strip()
r = json.loads(raw) if raw else {"error": "no output, rc %s" % sys.argv[6]}
# what the clients missed or got twice, against what MongoDB stored
db = pymongo.MongoClient(sys.argv[7]).get_default_database()
stored = {}
try:
    lines = open(sys.argv[8]).read().split("\n")
except OSError:
    lines = []
for l in lines:
    f = l.split()
    if f and f[0] == "max":
        seqs = [d["seq"] for d in db.messages.find(
            {"channel_id": ObjectId(f[1])}, {"seq": 1})]
        stored[f[1]] = set(seqs)
        r["stored_seq_repeats"] = r.get("stored_seq_repeats", 0) + \
            len(seqs) - len(set(seqs))
        top = max(seqs) if seqs else 0
        r["seq_holes"] = r.get("seq_holes", 0) + sum(
            1 for x in range(1, top + 1) if x not in stored[f[1]])
r["missed_stored"] = r["got_twice"] = r["missing_not_stored"] = 0
examples = []
for l in lines:
    f = l.split()
    if f and f[0] == "seq":
        ch, seq, miss, twice = f[1], int(f[2]), int(f[3]), int(f[4])
        if seq in stored.get(ch, ()):
            r["missed_stored"] += miss
        else:
            r["missing_not_stored"] += miss
        r["got_twice"] += twice
        if len(examples) < 5:
            examples.append(l)
r["seq_examples"] = examples
log = open(sys.argv[5], errors="replace").read().splitlines()
r.update(module_sha1=sys.argv[3], workers=int(sys.argv[4]),
         when=time.strftime("%Y-%m-%d %H:%M:%S"),
         loadavg=open("/proc/loadavg").read().split()[:3],
         error_log=[l for l in log if any("[%s]" % x in l for x in
                    ("error", "crit", "alert", "emerg"))][:20])
json.dump(r, open(sys.argv[2], "w"), indent=1)
print(json.dumps(r, indent=1))
PY
    stop_nginx
    stop_ferretdb
done
rm -rf "$bin"
