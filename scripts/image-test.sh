#!/usr/bin/env bash
# make image-test: builds the container image of docker/Dockerfile with
# podman and runs it against a FerretDB on this machine, then checks it
# from outside: /api/health, sign-up, sign-in, a WebSocket send and its ack,
# the web client at /, /status from allowed and refused addresses, the
# health check, /api/health once MongoDB is gone, and a graceful stop.
#
# No registry is used for the base images: debian:bookworm (and its -slim
# name) and debian:trixie are made with debootstrap from this machine's
# own Debian mirror, once, and kept in podman's storage.  The container
# runs with the host's network, on a free loopback port.
#
#   FOKO_IMAGE           the image's name (localhost/foko-chat:test)
#   FOKO_DEBIAN_MIRROR   the mirror for debootstrap (default: apt's own)
#   FOKO_IMAGE_NO_CACHE  set: build without podman's layer cache
set -euo pipefail

. "$(dirname "$0")/lib.sh"

image=${FOKO_IMAGE:-localhost/foko-chat:test}
name=foko-image-test-$$
t0=$(date +%s)

work=$(mktemp -d "${TMPDIR:-/tmp}/foko-image-test.XXXXXX")
ferretdb_pid=
container=
container2=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$container" ]; then
        if [ "$rc" != 0 ]; then
            echo "--- the container's log (last 40 lines)" >&2
            timeout 20 podman logs --tail 40 "$container" >&2 || true
        fi
        timeout 60 podman rm -f -t 5 "$container" >/dev/null 2>&1 || true
    fi
    if [ -n "$container2" ]; then
        timeout 60 podman rm -f -t 5 "$container2" >/dev/null 2>&1 || true
    fi
    [ -n "$ferretdb_pid" ] && stop_pid "$ferretdb_pid"
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# bounded: a step that hangs fails the test instead
step() {
    local limit=$1
    shift
    timeout --kill-after=10 "$limit" "$@"
}

# debootstrap, and podman's root storage where the base images are kept
if [ "$(id -u)" != 0 ]; then
    echo "image-test: run it as root (sudo make image-test)" >&2
    exit 1
fi

install_packages podman runc debootstrap libmojolicious-perl python3-yaml
install_ferretdb

# docker/compose.yaml cannot run here (no MongoDB image): its structure,
# at least, and that nothing waits for an engine's health checks
python3 - "$root/docker/compose.yaml" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
s = c["services"]
base = {k for k, v in s.items() if "profiles" not in v}
assert base == {"mongo", "mongo-init", "nginx"}, sorted(base)
multi = {k for k, v in s.items() if "multihost" in v.get("profiles", [])}
assert multi == {"redis", "web-1", "web-2"}, sorted(multi)
for w in ("web-1", "web-2"):
    env = s[w]["environment"]
    assert env["FOKO_REDIS_URL"].startswith("redis://172.30.0.10"), env
    assert env["FOKO_HOST_ID"] == w, env
assert s["redis"]["networks"]["hosts"]["ipv4_address"] == "172.30.0.10"
assert "--replSet" in s["mongo"]["command"], s["mongo"]["command"]
assert "rs.initiate" in "".join(s["mongo-init"]["entrypoint"])
assert s["mongo-init"]["restart"] == "no"
dep = s["nginx"]["depends_on"]
assert dep == {"mongo-init": {"condition": "service_completed_successfully"}}, dep
assert s["nginx"]["build"]["dockerfile"] == "docker/Dockerfile"
assert ".env" in s["nginx"]["env_file"]
for name, svc in s.items():
    d = svc.get("depends_on", {})
    if isinstance(d, dict):
        for k, v in d.items():
            assert v.get("condition") != "service_healthy", (name, k)
PY
echo "ok - docker/compose.yaml: mongo, a one-shot mongo-init, nginx after it;" \
    "profile multihost: redis, web-1, web-2"

# podman's settings for this test only: runc (crun can neither raise these
# limits nor use every cgroup layout), the limits nginx wants, and no
# systemd for cgroups or events
export CONTAINERS_CONF=$work/containers.conf
cat > "$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF

# the Debian archive that apt on this machine uses: a "deb" source of the
# machine's own release (deb822 .sources files, then sources.list)
debian_mirror() {
    if [ -n "${FOKO_DEBIAN_MIRROR:-}" ]; then
        echo "$FOKO_DEBIAN_MIRROR"
        return
    fi
    python3 - <<'PY'
import glob, re, sys
codename = ""
for line in open("/etc/os-release"):
    if line.startswith("VERSION_CODENAME="):
        codename = line.split("=", 1)[1].strip().strip('"')
found = []
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        f = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            k, v = line.split(":", 1)
            f[k.strip().lower()] = v.split()
        if ("deb" in f.get("types", []) and codename in f.get("suites", [])
                and f.get("enabled", ["yes"])[0] != "no"):
            found += f.get("uris", [])
for path in ["/etc/apt/sources.list"] + sorted(
        glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        w = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(w) >= 3 and w[0] == "deb" and w[2] == codename:
            found.append(w[1])
if not found:
    sys.exit("no Debian source for %r in apt's configuration;"
             " set FOKO_DEBIAN_MIRROR" % codename)
print(found[0])
PY
}

# base_image SUITE [TAG...]: docker.io/library/debian:SUITE made with
# debootstrap unless podman already has it; the other tags name it too
base_image() {
    local suite=$1 ref=docker.io/library/debian:$1 dir tag
    shift
    if ! podman image exists "$ref"; then
        dir=$work/rootfs-$suite
        echo "making $ref with debootstrap from $mirror"
        step 600 debootstrap --variant=minbase "$suite" "$dir" "$mirror" \
            > "$work/debootstrap-$suite.log" 2>&1 || {
            tail -20 "$work/debootstrap-$suite.log" >&2
            return 1
        }
        rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
        tar -C "$dir" -c . | podman import -q - "$ref" >/dev/null
        rm -rf "$dir"
    fi
    for tag in "$@"; do
        podman tag "$ref" "docker.io/library/debian:$tag"
    done
}

tb=$(date +%s)
if ! podman image exists docker.io/library/debian:bookworm \
    || ! podman image exists docker.io/library/debian:trixie
then
    mirror=$(debian_mirror)
    # both at once: each waits on the network more than on the CPU
    base_image bookworm bookworm-slim & bookworm_pid=$!
    base_image trixie & trixie_pid=$!
    wait "$bookworm_pid"
    wait "$trixie_pid"
fi
base_image bookworm bookworm-slim
base_image trixie
t_base=$(( $(date +%s) - tb ))

# the host's CA bundle reaches npm as a build secret, for registries behind
# a TLS-inspecting proxy; the Dockerfile itself holds nothing of this host
build_args=(-f docker/Dockerfile --ignorefile docker/Dockerfile.dockerignore
    --format docker --layers --jobs 2 -t "$image")
[ -s /etc/ssl/certs/ca-certificates.crt ] &&
    build_args+=(--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt)

build() {
    local log=$work/build-$1.log
    shift
    (cd "$root" && step 900 podman build "${build_args[@]}" "$@" .) \
        > "$log" 2>&1 || {
        tail -40 "$log" >&2
        echo "image-test: podman build failed" >&2
        return 1
    }
}

tb=$(date +%s)
if [ -n "${FOKO_IMAGE_NO_CACHE:-}" ]; then
    build first --no-cache
else
    build first
fi
t_build=$(( $(date +%s) - tb ))
tb=$(date +%s)
build again
t_rebuild=$(( $(date +%s) - tb ))
steps=$(grep '^\[[0-9]*/[0-9]*\] STEP ' "$work/build-again.log" |
    grep -vc ': FROM ' || true)
cached=$(grep -c -- '^--> Using cache' "$work/build-again.log" || true)
if [ "$cached" = 0 ]; then
    echo "image-test: the second build used no cached layer" >&2
    exit 1
fi
# a source edited meanwhile (frontend/src, the module) is built again
echo "built $image: first build ${t_build}s, cached rebuild ${t_rebuild}s" \
    "($cached of $steps steps from the cache; base images ${t_base}s)"

start_ferretdb "$work/ferretdb"
port=$(free_port)
base=http://127.0.0.1:$port

# the secrets come in an env file, as an operator's would
secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
cat > "$work/env" <<EOF
FOKO_MONGO_URI=$ferretdb_uri
FOKO_JWT_SECRET=$secret
FOKO_LISTEN=127.0.0.1:$port
FOKO_STATUS_ALLOW=127.0.0.1, 127.0.0.3/32
FOKO_WORKERS=2
FOKO_LOG_LEVEL=info
EOF
chmod 600 "$work/env"

ts=$(date +%s)
container=$(step 60 podman run -d --name "$name" --network host --no-healthcheck \
    --env-file "$work/env" "$image")

# up when /api/health answers at all; bounded, and the container must live
for i in $(seq 1 150); do
    if curl -s -o /dev/null --max-time 2 "$base/api/health"; then
        break
    fi
    state=$(podman inspect -f '{{.State.Status}}' "$container")
    if [ "$state" != running ]; then
        echo "image-test: the container is $state" >&2
        exit 1
    fi
    [ "$i" = 150 ] && { echo "image-test: no answer on $base" >&2; exit 1; }
    sleep 0.2
done
echo "the container answers on $base after $(( $(date +%s) - ts ))s"

# the checks from outside, over HTTP and WebSocket (Mojolicious)
step 120 perl - "$base" <<'PL'
use strict;
use warnings;
use Mojo::UserAgent;
use Mojo::IOLoop;
use Mojo::JSON qw(decode_json);

my $base = shift;
my $ua = Mojo::UserAgent->new(request_timeout => 20, inactivity_timeout => 20);
my $fails = 0;

sub check {
    my ($ok, $what, $detail) = @_;
    print(($ok ? "ok" : "not ok"), " - $what\n");
    unless ($ok) {
        $fails++;
        print "#   $detail\n" if defined $detail;
    }
    return $ok;
}

sub json_of {
    my ($res) = @_;
    my $j = eval { decode_json($res->body) };
    return $j;
}

# health, with MongoDB (FerretDB) reachable
my $res = $ua->get("$base/api/health")->result;
my $j = json_of($res);
check($res->code == 200 && $j && $j->{mongo} eq 'up',
    'GET /api/health is 200 with mongo up', $res->code . ' ' . $res->body);

# sign-up, then sign-in with the same password
my $email = sprintf 'ada-%d-%d@example.com', time, $$;
$res = $ua->post("$base/api/auth/signup" => json => {
    email => $email, password => 'correct horse', username => "Ada$$" })
    ->result;
$j = json_of($res);
check($res->code == 201 && $j && $j->{token} && $j->{user}{email} eq $email,
    'POST /api/auth/signup is 201 with a user and a token',
    $res->code . ' ' . $res->body);

$res = $ua->post("$base/api/auth/login" => json => {
    email => $email, password => 'correct horse' })->result;
$j = json_of($res);
my $token = $j && $j->{token};
check($res->code == 200 && $token, 'POST /api/auth/login is 200 with a token',
    $res->code . ' ' . $res->body);

$res = $ua->post("$base/api/auth/login" => json => {
    email => $email, password => 'wrong horse' })->result;
check($res->code == 401, 'a wrong password is 401', $res->code);

my %auth = (Authorization => "Bearer $token");
$res = $ua->get("$base/api/me" => \%auth)->result;
$j = json_of($res);
check($res->code == 200 && $j->{user}{email} eq $email,
    'GET /api/me with the token', $res->code . ' ' . $res->body);

$res = $ua->post("$base/api/channels" => \%auth => json => {
    name => 'general', members => [] })->result;
$j = json_of($res);
my $channel = $j && $j->{id};
check($res->code == 201 && $channel, 'POST /api/channels is 201',
    $res->code . ' ' . $res->body);

# WebSocket: auth, then ready listing the channel; a send, then its ack
my (@got, $ready, $ack, $ws_error);
my $client_id = "c-$$-" . time;
$ua->websocket("ws" . substr($base, 4) . "/ws" => sub {
    my ($ua, $tx) = @_;
    unless ($tx->is_websocket) {
        $ws_error = 'no upgrade: ' . ($tx->res->code // 'none');
        Mojo::IOLoop->stop;
        return;
    }
    $tx->on(finish => sub {
        my (undef, $code) = @_;
        $ws_error //= "closed with $code" unless $ack;
        Mojo::IOLoop->stop;
    });
    $tx->on(json => sub {
        my (undef, $m) = @_;
        push @got, $m->{type};
        if ($m->{type} eq 'ready') {
            $ready = $m;
            $tx->send({json => {type => 'send', ref => 'r1',
                channel_id => $channel, text => 'hello from the image',
                client_id => $client_id}});
        } elsif ($m->{type} eq 'ack' && ($m->{ref} // '') eq 'r1') {
            $ack = $m;
            $tx->finish(1000);
        } elsif ($m->{type} eq 'error') {
            $ws_error = "error $m->{code}";
            $tx->finish(1000);
        }
    });
    $tx->send({json => {type => 'auth', token => $token}});
});
my $timer = Mojo::IOLoop->timer(20 => sub {
    $ws_error //= 'timed out'; Mojo::IOLoop->stop });
Mojo::IOLoop->start;
Mojo::IOLoop->remove($timer);

check($ready && grep({ $_->{id} eq $channel } @{ $ready->{channels} }),
    'WebSocket: auth, then ready with the channel',
    ($ws_error // '') . " got: @got");
check($ack && $ack->{message}{seq} == 1
        && $ack->{message}{text} eq 'hello from the image',
    'WebSocket: send, then its ack with seq 1',
    ($ws_error // '') . " got: @got");

# the message is stored: history over REST
$res = $ua->get("$base/api/channels/$channel/messages" => \%auth)->result;
$j = json_of($res);
check($res->code == 200 && @{ $j->{messages} } == 1
        && $j->{messages}[0]{client_id} eq $client_id,
    'the message is in the channel\'s history', $res->code . ' ' . $res->body);

# the web client: index.html with the app's root, a hashed asset, routes
$res = $ua->get("$base/")->result;
my $html = $res->body;
check($res->code == 200 && ($res->headers->content_type // '') =~ m{text/html}
        && $html =~ m{<div id="root"></div>},
    'GET / is the client\'s HTML with its root element', $res->code);
my ($asset) = $html =~ m{<script[^>]+src="(/assets/[^"]+-[A-Za-z0-9_-]{6,}\.js)"};
check($asset, 'the page names a hashed JS asset', substr($html, 0, 300));
if ($asset) {
    $res = $ua->get("$base$asset")->result;
    check($res->code == 200
            && ($res->headers->content_type // '') =~ /javascript/
            && ($res->headers->cache_control // '') =~ /immutable/
            && length($res->body) > 1000,
        "GET $asset is 200, JavaScript, immutable", $res->code);
}
$res = $ua->get("$base/c/$channel")->result;
check($res->code == 200 && $res->body =~ m{<div id="root"></div>},
    'a client route (/c/<id>) is index.html', $res->code);
$res = $ua->get("$base/assets/missing-00000000.js")->result;
check($res->code == 404, 'a missing asset is 404', $res->code);

# /status: FOKO_STATUS_ALLOW lets 127.0.0.1 and 127.0.0.3 in, not 127.0.0.2
for my $from (qw(127.0.0.1 127.0.0.3 127.0.0.2)) {
    my $u = Mojo::UserAgent->new(request_timeout => 10,
        socket_options => {LocalAddr => $from});
    $res = $u->get("$base/status")->result;
    if ($from eq '127.0.0.2') {
        check($res->code == 403, "/status from $from is 403", $res->code);
    } else {
        $j = json_of($res);
        check($res->code == 200 && $j && $j->{mongo}{state} eq 'up',
            "/status from $from is 200 with mongo up",
            $res->code . ' ' . substr($res->body, 0, 200));
    }
}

exit($fails ? 1 : 0);
PL

# inside the container: the health check, the rendered configuration is
# root's alone, and nginx's environment holds no secret
step 30 podman exec "$container" foko-chat-healthcheck
echo "ok - the image's health check passes"
mode=$(step 30 podman exec "$container" stat -c '%a %U' /etc/nginx/nginx.conf)
[ "$mode" = "600 root" ] || {
    echo "image-test: nginx.conf is $mode, not 600 root" >&2; exit 1; }
echo "ok - /etc/nginx/nginx.conf is 600 root"
if step 30 podman exec "$container" cat /proc/1/environ | tr '\0' '\n' |
    grep -q '^FOKO_JWT_SECRET='
then
    echo "image-test: the JWT secret is in nginx's environment" >&2
    exit 1
fi
echo "ok - the JWT secret is not in nginx's environment"

# through a published port on podman's bridge network, requests come from
# the network's gateway: /status answers it when FOKO_STATUS_ALLOW names
# it, and no longer 127.0.0.1 inside; the secret comes from a file here
gateway=$(podman network inspect podman \
    --format '{{range .Subnets}}{{.Gateway}} {{end}}' | awk '{print $1}')
port2=$(free_port)
echo "$secret" > "$work/jwt-secret"
published=$(step 60 podman run -d --name "$name-published" --no-healthcheck \
    -p "127.0.0.1:$port2:8080" -v "$work/jwt-secret:/run/secrets/jwt:ro" \
    -e FOKO_MONGO_URI=mongodb://127.0.0.1:9/foko_chat \
    -e FOKO_JWT_SECRET_FILE=/run/secrets/jwt \
    -e FOKO_STATUS_ALLOW="$gateway" "$image")
container2=$published
code=
for i in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
        "http://127.0.0.1:$port2/status" || true)
    [ "$code" != 000 ] && break
    sleep 0.2
done
[ "$code" = 200 ] || {
    echo "image-test: /status through the published port is $code" >&2
    exit 1; }
echo "ok - /status through a published port is 200 from the gateway $gateway"
code=$(step 30 podman exec "$published" curl -s -o /dev/null \
    -w '%{http_code}' http://127.0.0.1:8080/status || true)
[ "$code" = 403 ] || {
    echo "image-test: /status from 127.0.0.1 is $code, not 403" >&2; exit 1; }
echo "ok - /status from 127.0.0.1 is 403 when FOKO_STATUS_ALLOW omits it"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
    "http://127.0.0.1:$port2/api/health" || true)
[ "$code" = 503 ] || {
    echo "image-test: /api/health without MongoDB is $code" >&2; exit 1; }
echo "ok - the secret from FOKO_JWT_SECRET_FILE; /api/health 503 without MongoDB"
step 60 podman rm -f -t 5 "$published" >/dev/null
container2=

# MongoDB gone: /api/health says so (503, mongo down) within a bound
stop_pid "$ferretdb_pid"
ferretdb_pid=
code=
for i in $(seq 1 40); do
    code=$(curl -s -o "$work/health" -w '%{http_code}' --max-time 5 \
        "$base/api/health" || true)
    [ "$code" = 503 ] && grep -q '"mongo":"down"' "$work/health" && break
    sleep 0.5
done
[ "$code" = 503 ] || {
    echo "image-test: /api/health is $code with MongoDB stopped" >&2; exit 1; }
echo "ok - /api/health is 503 with mongo down once MongoDB is stopped"

# a graceful stop (SIGQUIT, the image's STOPSIGNAL) ends nginx in time
ts=$(date +%s)
step 60 podman stop -t 20 "$container" >/dev/null
rc=$(podman inspect -f '{{.State.ExitCode}}' "$container")
[ "$rc" = 0 ] || { echo "image-test: nginx exited with $rc" >&2; exit 1; }
echo "ok - podman stop: nginx exits 0 in $(( $(date +%s) - ts ))s"

echo "image-test: all checks passed in $(( $(date +%s) - t0 ))s" \
    "(base images ${t_base}s, first build ${t_build}s," \
    "cached rebuild ${t_rebuild}s)"
