#!/usr/bin/env bash
# The module's hot paths as the database grows: for each size, a fresh
# FerretDB (SQLite), nginx with the module (2 workers), a dataset of the
# module's own documents (gen.py), then the timings (measure.py).  See
# bench/README.md, "dbscale".
#
#   bench/dbscale/run.sh [--sizes 10k,100k,1m] [--n 30] [--n-slow 5]
#                        [--budget 90] [--timeout 300] [--workers 2]
#                        [--ops a,b] [--out DIR] [--keep]
#
# MODULE=<.so> measures that build (default: build/ngx_foko_chat_module.so).
# Per size, the results go to DIR/dbscale-<size>.json (default DIR:
# bench/results).  Everything listens on 127.0.0.1 and stops on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
module=${MODULE:-$root/build/ngx_foko_chat_module.so}
py=/usr/bin/python3          # Debian's, with python3-pymongo
sizes=10k,100k,1m
n=30
n_slow=5
budget=90
timeout_s=300
workers=2
ops=
out=$root/bench/results
keep=0

while [ $# -gt 0 ]; do
    case $1 in
        --sizes) sizes=$2; shift 2 ;;
        --n) n=$2; shift 2 ;;
        --n-slow) n_slow=$2; shift 2 ;;
        --budget) budget=$2; shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --workers) workers=$2; shift 2 ;;
        --ops) ops=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
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

# shellcheck source=stack.sh
. "$here/stack.sh"
ulimit -n 65536 2>/dev/null || true

module_sum=$(sha1sum < "$module" | cut -c1-12)
echo "module $module ($module_sum), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

for size in ${sizes//,/ }; do
    case $size in
        *k) msgs=$(( ${size%k} * 1000 )) ;;
        *m) msgs=$(( ${size%m} * 1000000 )) ;;
        *) msgs=$size ;;
    esac
    [ -n "$tmp" ] && rm -rf "$tmp"
    tmp=$(mktemp -d /tmp/foko-dbscale.XXXXXX)
    nport=
    echo "== $size: $msgs messages"
    start_ferretdb
    write_nginx_conf 4096
    start_nginx
    "$py" "$here/gen.py" --port "$nport" --mongo "$mongo_uri" \
        --messages "$msgs" --secret "$jwt_secret" --out "$tmp/plan.json"
    timeout $(( timeout_s * 20 + 600 )) \
        "$py" "$here/measure.py" --port "$nport" --mongo "$mongo_uri" \
        --plan "$tmp/plan.json" --ferretdb-pid "$ferretdb_pid" \
        --n "$n" --n-slow "$n_slow" --budget "$budget" \
        --timeout "$timeout_s" ${ops:+--ops "$ops"} \
        --json "$tmp/result.json"
    "$py" - "$tmp/result.json" "$out/dbscale-$size.json" "$module_sum" \
        "$workers" "$tmp/nginx/logs/error.log" <<'PY'
import json, subprocess, sys, time
r = json.load(open(sys.argv[1]))
log = open(sys.argv[5], errors="replace").read().splitlines()
r["module_sha1"] = sys.argv[3]
r["workers"] = int(sys.argv[4])
r["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
r["loadavg"] = open("/proc/loadavg").read().split()[:3]
r["error_log"] = [l for l in log if any(
    "[%s]" % x in l for x in ("error", "crit", "alert", "emerg"))][:20]
json.dump(r, open(sys.argv[2], "w"), indent=1)
if r["error_log"]:
    print("error log:", *r["error_log"][:5], sep="\n  ", file=sys.stderr)
PY
    stop_nginx
    stop_ferretdb
done
"$py" "$here/report.py" "$out"/dbscale-*.json
