#!/usr/bin/env bash
# WebSocket fan-out benchmark: the module's live delivery against nchan,
# both loaded into the same nginx, measured by the same tool (ws-load.c) in
# the same run.  See bench/README.md, section "ws-load".
#
#   bench/ws/run.sh [--quick] [--reps N] [--big-reps N] [--w2-reps N]
#                   [--mixed-rooms N]
#                   [--duration S] [--warmup S] [--only foko|nchan]
#                   [--scenarios LIST] [--state DIR [--setup-only]]
#                   [--keep] [--json FILE] [--budget S]
#
# --quick        a small smoke run (under a minute): 100-member rooms,
#                one repetition, 2 s windows
# --reps N       repetitions of fanout1k and slow (5)
# --big-reps N   repetitions of fanout5k and mixed (1)
# --w2-reps N    repetitions of fanout1k with two workers (3; 0: none)
# --mixed-rooms N  small rooms of 5 in the mixed scenario (400)
# --scenarios    a comma list of: fanout1k, fanout5k, mixed, slow, idle
#                (idle is not in the default list)
# --state DIR    keep FerretDB's data and the users' tokens in DIR and
#                reuse them next time (the setup takes long); with
#                --setup-only, stop once they are made
# --budget S     stop starting new measurements after S seconds
#
# MODULE=<path to a .so> benchmarks that build instead of build/'s.
#
# Everything it starts (FerretDB, nginx) listens on 127.0.0.1 only, on free
# ports in 20000-29999, and is stopped on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/scripts/lib.sh"

quick=0
reps=5
duration=8
warmup=2
only=
scenarios=fanout1k,fanout5k,mixed,slow
big_reps=1
w2_reps=3
mixed_rooms=400
state=
setup_only=0
keep=0
json_out=
budget=

while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1; shift ;;
        --reps) reps=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --scenarios) scenarios=$2; shift 2 ;;
        --big-reps) big_reps=$2; shift 2 ;;
        --w2-reps) w2_reps=$2; shift 2 ;;
        --mixed-rooms) mixed_rooms=$2; shift 2 ;;
        --state) state=$2; shift 2 ;;
        --setup-only) setup_only=1; shift ;;
        --keep) keep=1; shift ;;
        --json) json_out=$2; shift 2 ;;
        --budget) budget=$2; shift 2 ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

if [ "$quick" = 1 ]; then
    reps=1
    duration=2
    warmup=0.5
    w2_reps=0
    # sizes of the smoke run: every room has at most 100 members
    big=100; room1k=100; busy=20; small_rooms=20; small_members=5
    create_max=100
    size_tag=quick
else
    big=5000; room1k=1000; busy=100; small_rooms=2000; small_members=5
    create_max=2400
    size_tag=full
fi
if [ "$mixed_rooms" -gt "$small_rooms" ]; then
    mixed_rooms=$small_rooms
fi
budget=${budget:-$([ "$quick" = 1 ] && echo 55 || echo 14400)}

ferretdb_bin=${FERRETDB:-$ferretdb_bin}
nginx=${NGINX:-/usr/sbin/nginx}
module=${MODULE:-$root/build/ngx_foko_chat_module.so}
nchan=${NCHAN:-/usr/lib/nginx/modules/ngx_nchan_module.so}

tmp=$(mktemp -d /tmp/foko-ws-bench.XXXXXX)
chmod 755 "$tmp"
ferretdb_pid=
nginx_pid=
started=$(date +%s)

stop_nginx() {
    if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
        kill -TERM "$nginx_pid"
        wait "$nginx_pid" 2>/dev/null || true
    fi
    nginx_pid=
}

stop_all() {
    local rc=$?
    set +e
    stop_nginx
    if [ -n "$ferretdb_pid" ] && kill -0 "$ferretdb_pid" 2>/dev/null; then
        kill -TERM "$ferretdb_pid"
        wait "$ferretdb_pid" 2>/dev/null
    fi
    if [ "$keep" = 1 ] || [ $rc -ne 0 ]; then
        echo "kept $tmp (logs: $tmp/nginx/logs/error.log)" >&2
    else
        rm -rf "$tmp"
    fi
    exit $rc
}
trap stop_all EXIT
trap 'exit 130' INT TERM

wait_port() {
    local port=$1 pid=$2 what=$3 i
    for i in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "run.sh: $what exited" >&2
            return 1
        fi
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "run.sh: $what did not listen on $port" >&2
    return 1
}

elapsed() {
    echo $(( $(date +%s) - started ))
}

# ---------------------------------------------------------------- build

if [ ! -f "$module" ]; then
    "$root/scripts/build-module.sh"
fi
[ -f "$module" ] || { echo "run.sh: $module not found" >&2; exit 1; }
[ -f "$nchan" ] || { echo "run.sh: $nchan not found (apt-get install libnginx-mod-nchan)" >&2; exit 1; }
[ -x "$ferretdb_bin" ] || { echo "run.sh: $ferretdb_bin not found (make deps)" >&2; exit 1; }

echo "building the load tool"
gcc -O2 -Wall -o "$tmp/ws-load" "$here/ws-load.c"

# nginx loads a private copy: a rebuild of build/ during the run must not
# change the file under the running workers
mkdir -p "$tmp/nginx/logs" "$tmp/nginx/conf" "$tmp/nginx/tmp"
cp "$module" "$tmp/nginx/ngx_foko_chat_module.so"
module_sum=$(sha1sum < "$module" | cut -c1-12)
tree=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)

# as many descriptors as allowed: 10,000 idle connections need as many on
# each side
ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
if [ "$nofile" -lt 10400 ]; then
    echo "run.sh: only $nofile open files allowed; the 10k idle test is skipped" >&2
fi

# ---------------------------------------------------------------- FerretDB

if [ -n "$state" ]; then
    mkdir -p "$state/ferretdb"
    fdir=$(cd "$state" && pwd)/ferretdb
    if [ -f "$state/rooms.txt" ] && [ "$(cat "$state/size" 2>/dev/null)" != "$size_tag" ]; then
        echo "run.sh: $state holds a '$(cat "$state/size")' setup, not '$size_tag'" >&2
        exit 1
    fi
else
    fdir=$tmp/ferretdb
    mkdir -p "$fdir"
fi

# FerretDB (scripts/lib.sh) on a free port: base_uri, without a database
start_db() {
    start_ferretdb "$fdir"
    base_uri=${ferretdb_uri%/*}
    fport=${base_uri##*:}
}
start_db
mongo_uri="$base_uri/foko_chat"

# With --state, each scenario runs on a database of its own, a copy of the
# whole setup with only the scenario's channels (see setup.py --prune): on
# FerretDB, a sign-in reads every channel of the database.
split=0
split_tag="v2 1k 5k mixed:$mixed_rooms"
split_dbs() {
    local x
    [ -n "$state" ] && [ -f "$state/rooms.txt" ] || return 0
    if [ "$(cat "$state/split" 2>/dev/null)" != "$split_tag" ]; then
        echo "splitting the setup into one database per scenario"
        kill -TERM "$ferretdb_pid"
        wait "$ferretdb_pid" 2>/dev/null || true
        for x in 1k 5k mixed; do
            rm -f "$fdir/foko_$x.sqlite" "$fdir/foko_$x.sqlite-wal" \
                "$fdir/foko_$x.sqlite-shm"
            cp "$fdir/foko_chat.sqlite" "$fdir/foko_$x.sqlite"
            if [ -f "$fdir/foko_chat.sqlite-wal" ]; then
                cp "$fdir/foko_chat.sqlite-wal" "$fdir/foko_$x.sqlite-wal"
            fi
        done
        start_db
        python3 "$here/setup.py" --prune --mongo "$base_uri/foko_1k" \
            --rooms "$state/rooms.txt" --keep room1k
        python3 "$here/setup.py" --prune --mongo "$base_uri/foko_5k" \
            --rooms "$state/rooms.txt" --keep room5k
        python3 "$here/setup.py" --prune --mongo "$base_uri/foko_mixed" \
            --rooms "$state/rooms.txt" --keep "busy,small:$mixed_rooms"
        echo "$split_tag" > "$state/split"
    fi
    split=1
    mongo_uri="$base_uri/foko_mixed"
}

# the database of a scenario
scenario_db() {
    [ "$split" = 1 ] || return 0
    case $1 in
        fanout5k*|*-5000) mongo_uri="$base_uri/foko_5k" ;;
        mixed*|idle-small*) mongo_uri="$base_uri/foko_mixed" ;;
        *) mongo_uri="$base_uri/foko_1k" ;;
    esac
}

if [ "$setup_only" = 0 ]; then
    split_dbs
fi

# ---------------------------------------------------------------- nginx

nport=$(free_port)
workers=1
ws_location='location = /ws { foko_chat_websocket; }'

write_conf() {
    local affinity=
    if [ "$workers" = 1 ]; then
        affinity='worker_cpu_affinity 01;'
    fi
    cat > "$tmp/nginx/conf/nginx.conf" <<EOF
load_module $tmp/nginx/ngx_foko_chat_module.so;
load_module $nchan;

worker_processes $workers;
$affinity
worker_rlimit_nofile $nofile;
daemon off;
master_process on;
pid $tmp/nginx/logs/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;

events {
    worker_connections $(( nofile - 64 ));
}

http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    # a channel of 2400 members is a 64 KiB body: kept in memory
    client_body_buffer_size 128k;

    client_body_temp_path $tmp/nginx/tmp/body;
    proxy_temp_path $tmp/nginx/tmp/proxy;
    fastcgi_temp_path $tmp/nginx/tmp/fastcgi;
    uwsgi_temp_path $tmp/nginx/tmp/uwsgi;
    scgi_temp_path $tmp/nginx/tmp/scgi;

    nchan_shared_memory_size 256m;
    nchan_message_buffer_length 10;
    nchan_message_timeout 60s;

    foko_chat_mongo_uri $mongo_uri;
    foko_chat_jwt_secret bench-secret-0123456789abcdefghijklmnopqrstuv;
    foko_chat_jwt_ttl 7d;
    foko_chat_password_hash argon2id t=1 m=8m;
    foko_chat_max_members 10000;
    foko_chat_limit signup_address 100000/1h;
    foko_chat_limit login_address 100000/1h;

    server {
        listen 127.0.0.1:$nport reuseport backlog=4096;

        location /api/ {
            foko_chat_api;
        }

        $ws_location

        location = /status {
            foko_chat_status;
        }

        location ~ ^/sub/([A-Za-z0-9._-]+)\$ {
            nchan_subscriber websocket;
            nchan_channel_id \$1;
            nchan_subscriber_first_message newest;
        }

        location ~ ^/pub/([A-Za-z0-9._-]+)\$ {
            nchan_publisher http;
            nchan_channel_id \$1;
        }
    }
}
EOF
}

worker_pids=

start_nginx() {
    local i n
    write_conf
    "$nginx" -p "$tmp/nginx/" -c conf/nginx.conf -t -q \
        2>>"$tmp/nginx/logs/stderr.log"
    "$nginx" -p "$tmp/nginx/" -c conf/nginx.conf \
        2>>"$tmp/nginx/logs/stderr.log" &
    nginx_pid=$!
    wait_port "$nport" "$nginx_pid" nginx
    for i in $(seq 1 50); do
        worker_pids=$(pgrep -P "$nginx_pid" | sort -n | paste -sd, -)
        n=$(echo "$worker_pids" | tr ',' '\n' | grep -c . || true)
        [ "$n" -ge "$workers" ] && break
        sleep 0.1
    done
}

# At start, the module warms its cache up from MongoDB in the background
# (the newest 1000 channels, with their members' names): on FerretDB that
# takes minutes and slows every other query.  Nothing is measured before
# FerretDB is idle again: under 5% of a core over 5 s.
wait_warm() {
    local i t0 a b hz
    t0=$(date +%s)
    hz=$(getconf CLK_TCK)
    sleep 10
    for i in $(seq 1 720); do
        a=$(awk '{print $14 + $15}' "/proc/$ferretdb_pid/stat")
        sleep 5
        b=$(awk '{print $14 + $15}' "/proc/$ferretdb_pid/stat")
        if [ $(( (b - a) * 100 / (5 * hz) )) -lt 5 ]; then
            break
        fi
    done
    echo "FerretDB idle after $(( $(date +%s) - t0 )) s"
}

# new workers with the configuration written again, through a reload: the
# shared memory (the module's channel cache, nchan's store) stays warm
reload_nginx() {
    local old=" $(echo "$worker_pids" | tr ',' ' ') " i p n fresh
    write_conf
    "$nginx" -p "$tmp/nginx/" -c conf/nginx.conf -t -q \
        2>>"$tmp/nginx/logs/stderr.log"
    kill -HUP "$nginx_pid"
    for i in $(seq 1 300); do
        n=0
        fresh=1
        for p in $(pgrep -P "$nginx_pid"); do
            n=$((n + 1))
            case $old in *" $p "*) fresh=0 ;; esac
        done
        if [ "$fresh" = 1 ] && [ "$n" -eq "$workers" ]; then
            break
        fi
        sleep 0.1
    done
    worker_pids=$(pgrep -P "$nginx_pid" | sort -n | paste -sd, -)
}

# the module's WebSocket side: is the directive known, does /ws answer 101?
foko_ws=1
write_conf
if ! "$nginx" -p "$tmp/nginx/" -c conf/nginx.conf -t -q 2>/dev/null; then
    echo "run.sh: this build has no foko_chat_websocket: the module is skipped"
    foko_ws=0
    ws_location=
fi
start_nginx

if [ "$foko_ws" = 1 ]; then
    code=$(python3 - "$nport" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 5)
s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
print(s.recv(4096).split(b" ")[1].decode())
PY
) || code=none
    if [ "$code" != 101 ]; then
        echo "run.sh: GET /ws answered $code, not 101: the module is skipped"
        foko_ws=0
    fi
fi

targets="nchan foko"
if [ "$foko_ws" = 0 ]; then
    targets=nchan
fi
if [ -n "$only" ]; then
    targets=$only
fi

echo "FerretDB pid $ferretdb_pid on $fport; nginx pid $nginx_pid on $nport," \
     "workers $worker_pids, module sha1 $module_sum (tree $tree)"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- setup

rooms=$tmp/rooms.txt
if [[ " $targets " == *" foko "* ]]; then
    if [ -n "$state" ] && [ -f "$state/rooms.txt" ]; then
        echo "reusing the users and rooms of $state"
        rooms=$state/rooms.txt
    else
        echo "setup: users and rooms through the REST API (this takes a while)"
        timeout 7200 python3 "$here/setup.py" --url "http://127.0.0.1:$nport" \
            --mongo "$mongo_uri" \
            --out "$rooms" --big "$big" --room1k "$room1k" --busy "$busy" \
            --small-rooms "$small_rooms" --small-members "$small_members" \
            --create-max "$create_max"
        if [ -n "$state" ]; then
            cp "$rooms" "$state/rooms.txt"
            echo "$size_tag" > "$state/size"
        fi
    fi
fi

if [ "$setup_only" = 1 ]; then
    split_dbs
    echo "setup done: $state"
    exit 0
fi
if [ "$split" = 0 ]; then
    # made just now
    split_dbs
fi

# ---------------------------------------------------------------- runs

if [ "$foko_ws" = 1 ]; then
    wait_warm
fi

raw=$tmp/raw.jsonl
: > "$raw"
skipped=0

# one call of the tool, on fresh workers (a reload):
#   measure TARGET SCENARIO REP [--ladder] [--names A,B] [--connect NAME] ARGS
# With --ladder, the tool's --steps are rates over the same connections and
# each step is recorded as SCENARIO-r<rate>; --names names the steps
# instead; --connect records the connection phase (time, memory per
# connection) as NAME.  After the module, its messages are deleted again.
measure() {
    local target=$1 scen=$2 rep=$3 limit nsteps=1 a
    local wrap=()
    shift 3
    while :; do
        case ${1:-} in
            --ladder) wrap+=(--ladder); shift ;;
            --names|--connect) wrap+=("$1" "$2"); shift 2 ;;
            *) break ;;
        esac
    done
    if [ "$(elapsed)" -ge "$budget" ]; then
        skipped=$((skipped + 1))
        return 0
    fi
    for a in "$@"; do
        case $a in *,*) nsteps=$(( $(echo "$a" | tr -cd , | wc -c) + 1 )) ;; esac
    done
    limit=$(( connect_timeout + settle_max + 30
              + nsteps * (${warmup%.*} + ${duration%.*} + drain + 37) ))
    local extra=()
    if [ "$target" = foko ]; then
        extra=(--rooms-file "$rooms")
    else
        extra=(--tag "r$rep-$scen-$RANDOM")
    fi
    scenario_db "$scen"
    reload_nginx
    timeout -s KILL $(( limit + 60 )) \
        taskset -c 1 "$tmp/ws-load" --target "$target" --port "$nport" \
        --pids "$worker_pids" --db-pids "$ferretdb_pid" \
        --warmup "$warmup" --duration "$duration" --drain "$drain" \
        --connect-timeout "$connect_timeout" --settle "$settle" \
        --settle-max "$settle_max" \
        --time-limit "$limit" --label "$scen" "${extra[@]}" "$@" \
        2>>"$tmp/ws-load.log" |
    python3 "$here/report.py" --wrap --scenario "$scen" --target "$target" \
        --rep "$rep" --workers "$workers" "${wrap[@]}" "$raw" || true
    if [ "$target" = foko ]; then
        python3 "$here/setup.py" --trim --mongo "$mongo_uri" \
            2>>"$tmp/ws-load.log" || true
    fi
}

# the order of the two targets alternates from one repetition to the next
order() {
    local rep=$1 t out=
    for t in $targets; do
        if [ $((rep % 2)) = 0 ]; then out="$t $out"; else out="$out $t"; fi
    done
    echo $out
}

has() {
    [[ ",$scenarios," == *",$1,"* ]]
}

drain=5
settle=1
connect_timeout=3600
settle_max=180
if [ "$quick" = 1 ]; then
    f1k_rates=50
    f5k_rates=
    mixed_rates=100
    scenarios=$(echo ",$scenarios," | sed 's/,slow,/,/; s/^,//; s/,$//')
    pubs=16
    drain=2
    settle=0.5
    connect_timeout=20
    settle_max=5
else
    f1k_rates=20,50,100,200,400
    f5k_rates=4,10,20,40,80
    mixed_rates=250,500,1000
    pubs=64
fi
n_small=$(( mixed_rooms * small_members + busy ))

# every repetition: the 1,000-member room, then the slow readers
run_small() {
    local rep=$1 t
    if has fanout1k; then
        for t in $(order "$rep"); do
            measure "$t" fanout1k "$rep" --ladder --connect "connect-$room1k" \
                --steps "$f1k_rates" --group "room1k:1:$room1k:1" \
                --publishers "$pubs"
        done
    fi
    if has slow; then
        # one set of connections: everyone reads in the first step, 1% of
        # them stop reading in the second
        for t in $(order "$rep"); do
            measure "$t" slow "$rep" --names slow0-r100,slow1-r100 \
                --steps 1,1 --slow-from-step 2 --slow 0.01 --size 1000 \
                --group "room1k:1:$room1k:100" --publishers "$pubs"
        done
    fi
}

# the big populations, --big-reps times: for the module, each connection's
# sign-in costs FerretDB scans, so 5,000 and 10,000 connections take long
run_big() {
    local rep=$1 t
    if has fanout5k && [ -n "$f5k_rates" ]; then
        for t in $(order "$rep"); do
            measure "$t" fanout5k "$rep" --ladder --connect "connect-$big" \
                --steps "$f5k_rates" --group "room5k:1:$big:1" \
                --publishers "$pubs"
        done
    fi
    if has mixed; then
        for t in $(order "$rep"); do
            measure "$t" mixed "$rep" --ladder --connect "connect-$n_small" \
                --steps "$mixed_rates" \
                --group "small:$mixed_rooms:$small_members:1" \
                --group "busy:1:$busy:0.04" --publishers "$pubs"
        done
    fi
}

# idle connections alone (the load scenarios record their connection
# phase already): --scenarios idle
run_idle() {
    local rep=$1 t
    has idle || return 0
    for t in $(order "$rep"); do
        measure "$t" "idle-$room1k" "$rep" --idle \
            --group "room1k:1:$room1k:0"
        if [ "$nofile" -ge 10400 ] && [ "$quick" = 0 ]; then
            measure "$t" "idle-small-$(( mixed_rooms * small_members ))" \
                "$rep" --idle --group "small:$mixed_rooms:$small_members:0"
        fi
    done
}

for rep in $(seq 1 "$reps"); do
    echo "repetition $rep/$reps ($(elapsed) s)"
    run_small "$rep"
    if [ "$rep" -le "$big_reps" ]; then
        run_big "$rep"
    fi
    run_idle "$rep"
done

# two workers: the module delivers across workers
if [ "$w2_reps" -gt 0 ] && has fanout1k; then
    workers=2
    echo "two workers ($(elapsed) s)"
    for rep in $(seq 1 "$w2_reps"); do
        for t in $(order "$rep"); do
            measure "$t" w2-fanout1k "$rep" --ladder \
                --connect "w2-connect-$room1k" --steps "$f1k_rates" \
                --group "room1k:1:$room1k:1" --publishers "$pubs"
        done
    done
fi

# ---------------------------------------------------------------- report

log=$tmp/nginx/logs/error.log
bad=$(grep -cE '\[(error|alert|crit|emerg)\]|exited on signal' "$log" || true)
if [ "$bad" -gt 0 ]; then
    echo "nginx error log: $bad line(s) at error or above, first ones:"
    grep -E '\[(error|alert|crit|emerg)\]|exited on signal' "$log" | head -10
else
    echo "nginx error log: nothing at error or above"
fi
if [ "$skipped" -gt 0 ]; then
    echo "budget of $budget s reached: $skipped measurement(s) skipped"
fi

mkdir -p "$root/bench/results"
out=${json_out:-$root/bench/results/ws-$size_tag-$(date +%Y%m%d-%H%M%S).json}
python3 "$here/report.py" --out "$out" \
    --meta "$(printf '{"module_sha1":"%s","tree":"%s","nginx":"%s","nchan":"%s","cores":%s,"foko_ws":%s,"reps":%s,"warmup_s":%s,"window_s":%s,"size":"%s","error_log_lines":%s,"skipped":%s,"elapsed_s":%s}' \
        "$module_sum" "$tree" "$("$nginx" -v 2>&1 | sed 's/.*\///')" \
        "$(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo unknown)" \
        "$(nproc)" "$([ "$foko_ws" = 1 ] && echo true || echo false)" \
        "$reps" "$warmup" "$duration" "$size_tag" "$bad" "$skipped" "$(elapsed)")" \
    "$raw"
echo "results: $out"
