# Sourced by bench/dbscale/run.sh and bench/storm/run.sh: a private
# FerretDB (SQLite) and nginx with the module, on 127.0.0.1 only, free
# ports in 20000-29999, stopped on exit.
#
# Needs: $tmp (a scratch directory), $module (the .so), $workers.
# Sets: mongo_uri, nport, ferretdb_pid, nginx_pid.

ferretdb=${FERRETDB:-$root/.tools/bin/ferretdb-v1.24.2-id-index}
nginx=${NGINX:-/usr/sbin/nginx}
jwt_secret=bench-secret-0123456789abcdefghijklmnopqrstuv
ferretdb_pid=
nginx_pid=

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
    for i in $(seq 1 200); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$what exited" >&2
            return 1
        fi
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$what did not listen on $port" >&2
    return 1
}

start_ferretdb() {
    mkdir -p "$tmp/ferretdb"
    fport=$(free_port)
    "$ferretdb" --handler=sqlite --sqlite-url="file:$tmp/ferretdb/" \
        --listen-addr="127.0.0.1:$fport" --state-dir="$tmp/ferretdb" \
        --debug-addr=- --telemetry=disable --log-level=error \
        >> "$tmp/ferretdb/ferretdb.log" 2>&1 &
    ferretdb_pid=$!
    wait_port "$fport" "$ferretdb_pid" FerretDB
    mongo_uri="mongodb://127.0.0.1:$fport/foko_chat"
}

# write_nginx_conf NOFILE
write_nginx_conf() {
    local nofile=${1:-4096}
    mkdir -p "$tmp/nginx/logs" "$tmp/nginx/conf" "$tmp/nginx/tmp"
    [ -f "$tmp/nginx/ngx_foko_chat_module.so" ] ||
        cp "$module" "$tmp/nginx/ngx_foko_chat_module.so"
    [ -n "${nport:-}" ] || nport=$(free_port "$fport")
    cat > "$tmp/nginx/conf/nginx.conf" <<CONF
load_module $tmp/nginx/ngx_foko_chat_module.so;

worker_processes $workers;
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
    keepalive_timeout 900s;
    client_body_buffer_size 128k;

    client_body_temp_path $tmp/nginx/tmp/body;
    proxy_temp_path $tmp/nginx/tmp/proxy;
    fastcgi_temp_path $tmp/nginx/tmp/fastcgi;
    uwsgi_temp_path $tmp/nginx/tmp/uwsgi;
    scgi_temp_path $tmp/nginx/tmp/scgi;

    foko_chat_mongo_uri $mongo_uri;
    foko_chat_jwt_secret $jwt_secret;
    foko_chat_password_hash argon2id t=1 m=8m;
    foko_chat_limit signup_address 100000/1h;
    foko_chat_limit login_address 100000/1h;
    foko_chat_max_members 1000;
    foko_chat_shm_size ${SHM_SIZE:-64m};

    server {
        listen 127.0.0.1:$nport reuseport backlog=4096;

        location /api/ {
            foko_chat_api;
        }

        location = /ws {
            foko_chat_websocket;
        }

        location = /status {
            foko_chat_status;
        }

        location = /metrics {
            foko_chat_status prometheus;
        }
    }
}
CONF
}

start_nginx() {
    "$nginx" -p "$tmp/nginx/" -c conf/nginx.conf -t -q
    "$nginx" -p "$tmp/nginx/" -c conf/nginx.conf &
    nginx_pid=$!
    wait_port "$nport" "$nginx_pid" nginx
}

stop_nginx() {
    if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
        kill -TERM "$nginx_pid"
        wait "$nginx_pid" 2>/dev/null || true
    fi
    nginx_pid=
}

stop_ferretdb() {
    if [ -n "$ferretdb_pid" ] && kill -0 "$ferretdb_pid" 2>/dev/null; then
        kill -TERM "$ferretdb_pid"
        wait "$ferretdb_pid" 2>/dev/null || true
    fi
    ferretdb_pid=
}
