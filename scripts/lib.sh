# Shared by the scripts: installing what is missing, building, FerretDB.
# shellcheck shell=bash

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=$root/.tools
ferretdb_version=v1.24.2
# built with its lookups by _id on the _id index (install_ferretdb)
ferretdb_bin=$tools/bin/ferretdb-$ferretdb_version-id-index

apt_packages=(
    nginx nginx-dev build-essential pkg-config
    libmongoc-dev libbson-dev libjansson-dev libjwt-dev
    libcurl4-openssl-dev libargon2-dev libcrypt-dev
    libpcre2-dev libssl-dev zlib1g-dev libhiredis-dev
    libtest-base-perl libmojolicious-perl libprotocol-websocket-perl
    python3-aiosmtpd redis-server
)

# only for "make test": the browser of the client's end-to-end tests, a
# font for the text in their screenshots, Prometheus (promtool and a real
# scraper for the metrics tests), dpkg-dev (the package test), openssl and
# curl (the TLS test of production.conf), pymongo (tests that write old
# documents straight into the database), nchan (another module's sockets
# in a reload test)
test_apt_packages=(chromium fonts-dejavu-core prometheus dpkg-dev binutils
    openssl curl python3-pymongo libnginx-mod-nchan)

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# install_packages [PACKAGE...]: those (default: apt_packages) not yet
# installed
install_packages() {
    local missing=() p
    [ $# -gt 0 ] || set -- "${apt_packages[@]}"
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# FerretDB's release binary is not packaged here; it is built from its Go
# module.  "go install" of it panics on a missing version file, so the module
# source is copied to a scratch folder and the file added before building.
#
# One expression is changed there: the SQLite backend filters a lookup by
# _id with  _ferretdb_sjson->'$._id'  while the _id index it creates is on
#  _ferretdb_sjson->"_id" ; SQLite uses an index on an expression only for
# the same expression, so every lookup by _id read the whole table.  With
# '_id' (the same path, as the index spells it) a lookup by _id is a
# search of the index (README, "The embedded database").
install_ferretdb() {
    [ -x "$ferretdb_bin" ] && return 0
    command -v go >/dev/null || { echo "go is needed to build FerretDB" >&2; return 1; }
    echo "building FerretDB $ferretdb_version"
    local dir src
    dir=$(go mod download -json "github.com/FerretDB/FerretDB@$ferretdb_version" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    src=$(mktemp -d)
    cp -r "$dir/." "$src"
    chmod -R u+w "$src"
    echo "$ferretdb_version" > "$src/build/version/version.txt"
    local meta=$src/internal/backends/sqlite/metadata/metadata.go
    sed -i "s|DefaultColumn + \"->'\\\$\._id'\"|DefaultColumn + \"->'_id'\"|" "$meta"
    grep -q "DefaultColumn + \"->'_id'\"" "$meta" || {
        echo "FerretDB $ferretdb_version: the _id expression was not found" >&2
        rm -rf "$src"
        return 1
    }
    mkdir -p "$tools/bin"
    (cd "$src" && go build -o "$ferretdb_bin" ./cmd/ferretdb)
    rm -rf "$src"
}

install_all() {
    install_packages
    install_ferretdb
}

# --- the web client (frontend/), built with Vite into frontend/dist

frontend=$root/frontend
node_min=20.19

# Vite needs node 20.19 or later; Debian 12's nodejs (18) is too old
check_node() {
    local v
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "node $node_min or later (with npm) is needed to build the" \
            "web client in frontend/; install it from https://nodejs.org/" >&2
        return 1
    fi
    v=$(node -p 'process.versions.node')
    if ! node -e '
        const [a, b] = process.versions.node.split(".").map(Number);
        const [x, y] = process.argv[1].split(".").map(Number);
        process.exit(a > x || (a === x && b >= y) ? 0 : 1);' "$node_min"
    then
        echo "node $v is too old to build the web client in frontend/:" \
            "$node_min or later is needed (https://nodejs.org/)" >&2
        return 1
    fi
}

# npm ci when node_modules is missing or older than package-lock.json
# (npm writes node_modules/.package-lock.json on every install)
client_deps() {
    if [ ! -f "$frontend/node_modules/.package-lock.json" ] \
        || [ "$frontend/package-lock.json" \
             -nt "$frontend/node_modules/.package-lock.json" ]
    then
        check_node || return 1
        echo "installing the web client's dependencies (npm ci)"
        (cd "$frontend" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

# whether frontend/dist is missing or older than a source of it
client_stale() {
    local built=$frontend/dist/index.html
    [ -f "$built" ] || return 0
    [ -n "$(cd "$frontend" && find src public index.html package.json \
        package-lock.json vite.config.* tsconfig*.json \
        -newer "$built" -print -quit 2>/dev/null)" ]
}

# builds frontend/dist when it is missing or older than its sources
build_client() {
    if client_stale; then
        check_node || return 1
        client_deps || return 1
        echo "building the web client (npm run build)"
        (cd "$frontend" && npm run build --silent)
    fi
}

# the sanitizer build with FOKO_SANITIZE=1 (scripts/build-module.sh)
build_module() {
    "$root/scripts/build-module.sh"
}

# a free port below the kernel's ephemeral range, so that no client's own
# ephemeral port can take it while the server is down
free_port() {
    python3 - <<'PY'
import random, socket
for _ in range(100):
    port = random.randint(20000, 29999)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    s.close()
    print(port)
    break
PY
}

# start_ferretdb DIR: starts FerretDB with its data in DIR on a free loopback
# port; sets ferretdb_pid and ferretdb_uri
start_ferretdb() {
    local dir=$1 port i
    mkdir -p "$dir"
    port=$(free_port)
    "$ferretdb_bin" --handler=sqlite --sqlite-url="file:$dir/" \
        --listen-addr="127.0.0.1:$port" --state-dir="$dir" \
        --debug-addr=- --telemetry=disable --log-level=warn \
        > "$dir/ferretdb.log" 2>&1 &
    ferretdb_pid=$!
    ferretdb_uri="mongodb://127.0.0.1:$port/foko_chat"
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        kill -0 "$ferretdb_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "FerretDB did not start; see $dir/ferretdb.log" >&2
    return 1
}

stop_pid() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}
