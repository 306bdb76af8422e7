# conf/production.conf as an operator runs it: the file itself, with only
# its example paths, ports and MongoDB URI replaced by the test's own (a
# self-signed certificate, a throwaway client build, a database of its
# own).  nginx -t passes without a warning; then over TLS: HTTP/2 for the
# API (a sign-up, so request bodies too), TLS 1.2 sessions resumed from
# the shared cache, the cipher list enforced, HSTS, the client's files, the
# status page and the metrics; a WebSocket that signs in, gets ready and a
# live message; the port-80 redirect; reset links kept out of the access
# log; a clean error log.
#
# TLS is spoken by curl and by "openssl s_client" (a WebSocket is carried
# through s_client's standard input and output), so that nothing but the
# openssl and curl commands is needed.

use strict;
use warnings;

use File::Path qw(make_path);
use File::Temp qw(tempdir);
use JSON::PP;
use POSIX ();
use Socket qw(AF_UNIX SOCK_STREAM PF_UNSPEC);
use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api qw(free_port unique_email);
use FokoChat::Ws qw(ws_key ws_accept error_log_problems nginx_conf_test
                    quit_nginx own_mongo_uri master_pid);

for my $tool (qw(openssl curl)) {
    plan skip_all => "no $tool command"
        unless grep { -x "$_/$tool" } split /:/, $ENV{PATH};
}
# curl and openssl run without the sanitizer runtimes that a sanitizer run
# preloads for nginx (curl -V hangs with libasan preloaded)
my $tool = 'env -u LD_PRELOAD';
my $curl_v = `$tool curl -V`;
plan skip_all => 'curl without HTTP/2' unless $curl_v =~ /\bHTTP2\b/;
my @modules = split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '';
plan skip_all => 'TEST_NGINX_LOAD_MODULES names no module' unless @modules;

my $Json = JSON::PP->new->utf8->canonical;
my $root = server_root();
my $tmp = tempdir('foko-tls-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{KEEP});
my $http_port = server_port();
my $https_port = free_port();
my $host = 'chat.example.com';

sub run {
    my @cmd = @_;
    my $out = `@cmd 2>&1`;
    return ($? >> 8, $out);
}

# --- what the operator would have: a certificate, keys, a client build ----

make_path("$tmp/tls", "$tmp/keys", "$tmp/dist/assets");
my ($rc, $out) = run("$tool openssl req -x509 -newkey rsa:2048 -nodes -days 2"
    . " -subj /CN=$host -addext subjectAltName=DNS:$host"
    . " -keyout $tmp/tls/privkey.pem -out $tmp/tls/fullchain.pem");
is $rc, 0, 'a self-signed certificate' or diag $out;
($rc, $out) = run("$tool openssl genpkey -algorithm EC"
    . " -pkeyopt ec_paramgen_curve:P-256 -out $tmp/keys/jwt.key");
is $rc, 0, 'a JWT signing key, as the comment says to make one' or diag $out;
write_file("$tmp/keys/sendgrid.key", "SG.test-key-not-used\n");

my $index = "<!doctype html><html><head><title>Foko chat</title></head>"
    . "<body><div id=\"root\"></div></body></html>\n";
write_file("$tmp/dist/index.html", $index);
write_file("$tmp/dist/assets/app-abc123.js",
    join '', map { "export const a$_ = $_;\n" } 1 .. 50);

# --- conf/production.conf with the test's paths ----------------------------

open my $fh, '<', 'conf/production.conf' or die "run from the repository root\n";
my $conf = do { local $/; <$fh> };
close $fh;

my $mongo = own_mongo_uri('tls70');
my $user = $> == 0 ? 'user root;' : '';
my $load = join "\n", map { "load_module $_;" } @modules;
# no more open files than the hard limit allows (root without
# CAP_SYS_RESOURCE, as in a container, cannot raise it)
chomp(my $hard = `sh -c 'ulimit -Hn'`);
my $nofile = $hard =~ /^\d+$/ && $hard < 65536 ? $hard : 65536;
my $temp = join '', map { "    ${_}_temp_path $root/${_}_temp;\n" }
    qw(client_body proxy fastcgi uwsgi scgi);

# each example value, replaced exactly as many times as it is there
my @subst = (
    [qr{^load_module /usr/lib/nginx/modules/ngx_foko_chat_module\.so;$}m,
     $load, 1],
    [qr{^user www-data;$}m, $user, 1],
    [qr{/var/log/nginx/}, "$root/logs/", 2],
    [qr{^error_log \S+ \Knotice;$}m, ($ENV{FOKO_LOG_LEVEL} // 'notice') . ';', 1],
    [qr{^worker_rlimit_nofile \K65536;$}m, "$nofile;", 1],
    [qr{^pid /run/nginx\.pid;$}m, "pid $root/logs/nginx.pid;", 1],
    [qr{^[ \t]*foko_chat_mongo_uri \K"[^"]*"}m, "\"$mongo\"", 1],
    [qr{/etc/nginx/foko-chat/}, "$tmp/keys/", 2],
    [qr{/etc/letsencrypt/live/chat\.example\.com/}, "$tmp/tls/", 2],
    [qr{^[ \t]*listen \K80;$}m, "127.0.0.1:$http_port;", 1],
    [qr{^[ \t]*listen \K443 ssl http2;$}m,
     "127.0.0.1:$https_port ssl http2;", 1],
    [qr{^[ \t]*listen \[::\]:\d+[^;]*;\n}m, '', 2],
    [qr{^[ \t]*root \K/var/www/foko-chat;$}m, "$tmp/dist;", 1],
    [qr{^http \{\n\K}m, $temp, 1],
);
for my $s (@subst) {
    my ($re, $with, $times) = @$s;
    my $n = () = $conf =~ /$re/g;
    is $n, $times, "production.conf has $re $times time(s)";
    $conf =~ s/$re/$with/g;
}
setup_servroot();
write_file("$root/conf/nginx.conf", $conf);

my ($passed, $test_out) = nginx_conf_test();
ok $passed, 'nginx -t passes on production.conf' or diag $test_out;
unlike $test_out, qr/\[(?:warn|emerg|alert|crit|error)\]/,
    'without a warning' or diag $test_out;

my ($started, $start_out) = start_nginx();
ok $started, 'nginx starts on it' or BAIL_OUT("nginx: $start_out");

# --- curl over TLS --------------------------------------------------------

# (status, decoded JSON or undef, HTTP version, {headers}, body)
sub curl {
    my ($method, $path, %o) = @_;
    my $port = $o{port} // $https_port;
    my $scheme = $o{plain} ? 'http' : 'https';
    my @cmd = ('env', '-u', 'LD_PRELOAD', 'curl', '-sk',
        '--max-time', $o{timeout} // 10,
        '--resolve', "$host:$port:127.0.0.1", '-X', $method,
        '-D', "$tmp/headers", '-o', "$tmp/body",
        '-w', '%{http_code} %{http_version}', @{ $o{args} || [] });
    push @cmd, $o{plain} ? () : $o{http1} ? '--http1.1' : '--http2';
    push @cmd, '-H', "Authorization: Bearer $o{token}" if $o{token};
    push @cmd, '-H', 'Content-Type: application/json',
        '--data-binary', $Json->encode($o{body}) if $o{body};
    push @cmd, "$scheme://$host:$port$path";
    open my $p, '-|', @cmd or die "curl: $!\n";
    my $w = do { local $/; <$p> };
    close $p;
    my ($status, $version) = split ' ', $w // '';
    my $body = do { local $/; open my $b, '<', "$tmp/body" or return ($status); <$b> };
    my %h;
    if (open my $hf, '<', "$tmp/headers") {
        while (<$hf>) {
            $h{lc $1} = $2 if /^([^:\s]+):\s*(.*?)\s*$/;
        }
    }
    unlink "$tmp/body", "$tmp/headers";
    my $json = eval { $Json->decode($body) };
    return ($status, $json, $version, \%h, $body);
}

my ($st, $res, $ver, $h, $body);
my $deadline = time + 10;
do {
    ($st, $res, $ver, $h) = curl(GET => '/api/health');
} until ($st // 0) == 200 || time > $deadline || !sleep 0.2;
is $st, 200, 'GET /api/health over TLS';
is $ver, '2', 'over HTTP/2';
is $res->{mongo}, 'up', 'MongoDB is up';
is $h->{'strict-transport-security'}, 'max-age=63072000', 'with HSTS';

my $email = unique_email('tls');
($st, $res, $ver) = curl(POST => '/api/auth/signup', body => {
    email => $email, password => 'correct horse', username => 'tls' });
is $st, 201, 'a sign-up over HTTP/2 (a request body)';
is $ver, '2', 'HTTP/2 it was';
my $token = $res->{token};
my $uid = $res->{user}{id};

($st, $res, $ver) = curl(POST => '/api/channels', token => $token,
    body => { name => 'Secure', members => [] });
is $st, 201, 'a channel';
my $cid = $res->{id};

($st, $res, $ver) = curl(GET => '/api/me', token => $token, http1 => 1);
is $st, 200, 'HTTP/1.1 over TLS works too';
is $ver, '1.1', 'as HTTP/1.1';
is $res->{user}{id}, $uid, 'the same user';

# the cipher list: forward-secret AEAD only, in TLS 1.2

($st) = curl(GET => '/api/health', http1 => 1,
    args => ['--tlsv1.2', '--tls-max', '1.2',
             '--ciphers', 'ECDHE-RSA-AES128-GCM-SHA256']);
is $st, 200, 'TLS 1.2 with ECDHE-RSA-AES128-GCM-SHA256';
($st) = curl(GET => '/api/health', http1 => 1,
    args => ['--tlsv1.2', '--tls-max', '1.2', '--ciphers', 'AES128-GCM-SHA256']);
is $st, '000', 'TLS 1.2 without forward secrecy (AES128-GCM-SHA256) is refused';

# the shared session cache: a second TLS 1.2 handshake resumes the session

my $s_client = "$tool openssl s_client -connect 127.0.0.1:$https_port"
    . " -servername $host -tls1_2 </dev/null";
($rc, $out) = run("$s_client -sess_out $tmp/session");
like $out, qr/^New, TLSv1\.2/m, 'a first TLS 1.2 handshake';
my $reused = 0;
for (1 .. 3) {      # workers share the cache: any of them resumes it
    ($rc, $out) = run("$s_client -sess_in $tmp/session");
    $reused++ if $out =~ /^Reused, TLSv1\.2/m;
}
is $reused, 3, 'later ones resume the session from the shared cache';

# the client, the status page, the metrics

($st, undef, $ver, $h, $body) = curl(GET => '/c/0123456789abcdef01234567');
is $st, 200, 'a client route';
is $body, $index, 'is index.html';
is $h->{'cache-control'}, 'no-cache', 'checked again on every load';
is $h->{'strict-transport-security'}, 'max-age=63072000', 'with HSTS';

($st, undef, $ver, $h) = curl(GET => '/assets/app-abc123.js',
                              args => ['--compressed']);
is $st, 200, 'a hashed asset';
is $h->{'cache-control'}, 'public, max-age=31536000, immutable',
    'kept for a year';
is $h->{'content-encoding'}, 'gzip', 'compressed';

($st, $res) = curl(GET => '/foko-status');
is $st, 200, 'the status page from this machine';
is $res->{zone}{size}, 64 * 1024 * 1024, 'the 64m zone';
is $res->{tasks}{thread_pool}, 'foko_store', 'the foko_store pool';

($st, undef, undef, undef, $body) = curl(GET => '/metrics');
is $st, 200, 'the metrics';
like $body, qr/^foko_chat_zone_size_bytes 67108864$/m, 'in Prometheus format';

# the port-80 server only redirects

($st, undef, undef, $h) = curl(GET => '/signin?x=1', port => $http_port,
                               plain => 1);
is $st, 301, 'plain HTTP is redirected';
is $h->{location}, "https://$host/signin?x=1", 'to the same path over HTTPS';
($st) = curl(GET => '/api/health', port => $http_port, plain => 1);
is $st, 301, 'the API too';

# reset and invitation links stay out of the access log

my $secret = 'eyJsecret' . int rand 1e9;
($st, undef, undef, undef, $body) = curl(GET => "/reset-password?token=$secret");
is $st, 200, 'a reset link loads the client';
($st) = curl(GET => "/invite?token=$secret");
is $st, 200, 'an invitation link too';
($st) = curl(GET => '/signin?marker=logged');

# --- a WebSocket over TLS -------------------------------------------------

# A connection to the TLS port through "openssl s_client": a
# FokoChat::Ws::Raw on one end of a socket pair whose other end is
# s_client's standard input and output.
my @tunnels;

sub tls_raw {
    socketpair(my $mine, my $theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC)
        or die "socketpair: $!\n";
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        close $mine;
        open STDIN, '<&', $theirs or POSIX::_exit(126);
        open STDOUT, '>&', $theirs or POSIX::_exit(126);
        open STDERR, '>', '/dev/null' or POSIX::_exit(126);
        delete $ENV{LD_PRELOAD};
        exec 'openssl', 's_client', '-quiet', '-nocommands',
            '-connect', "127.0.0.1:$https_port", '-servername', $host,
            '-alpn', 'http/1.1'
            or POSIX::_exit(127);
    }
    close $theirs;
    push @tunnels, $pid;
    binmode $mine;
    return bless { sock => $mine, buf => '', frames => [], backlog => [],
                   violations => [], pongs => [], pings => 0 },
                 'FokoChat::Ws::Raw';
}

sub tls_upgrade {
    my %o = @_;
    my $c = tls_raw();
    my $key = ws_key();
    $c->send_bytes("GET /ws HTTP/1.1\r\nHost: $host\r\n"
        . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Key: $key\r\nSec-WebSocket-Version: 13\r\n"
        . "Origin: $o{origin}\r\n\r\n")
        or die "cannot send the upgrade\n";
    my ($status, $hdr) = $c->read_http(10, upgrade => 1);
    return ($status, $hdr, $c, $key);
}

my ($ws_st, $ws_h) = tls_upgrade(origin => 'https://evil.example.com');
is $ws_st, 403, 'a WebSocket from another origin is refused';

($ws_st, $ws_h, my $ws, my $key) = tls_upgrade(origin => "https://$host");
is $ws_st, 101, 'a WebSocket upgrade over TLS from the site\'s origin';
is $ws_h->{'sec-websocket-accept'}, ws_accept($key), 'with the right accept';
$ws->send_json({ type => 'auth', token => $token });
my $ready = $ws->next_event(10, 'ready');
ok $ready, 'it signs in: ready';
is $ready->{user}{id}, $uid, 'as the user';
my @more = $ws->drain_events(1);
is scalar(grep { $_->{type} eq 'ready' } @more), 0, 'ready comes once'
    or diag scalar(@more) . ' more events: ' . join ' ', map { $_->{type} } @more[0 .. 2];
is_deeply [map { $_->{id} } @{ $ready->{channels} || [] }], [$cid],
    'with the channel';

($st, $res) = curl(POST => "/api/channels/$cid/messages", token => $token,
                   body => { text => 'over TLS', client_id => 'tls-1' });
is $st, 201, 'a post over HTTP/2';
my $live = $ws->next_event(10, 'message');
is $live->{message}{text}, 'over TLS', 'arrives live over the TLS WebSocket';

# a burst bigger than a TLS record buffer and than the socket takes at once
my $pad = 'x' x 2000;
$ws->send_json({ type => 'send', ref => "burst-$_", channel_id => $cid,
                 text => "burst $_ $pad", client_id => "tls-burst-$_" })
    for 1 .. 150;
my (@burst, @acks);
my $burst_end = time + 60;
while ((@burst < 150 || @acks < 150) && time < $burst_end) {
    my $e = $ws->next_event($burst_end - time,
        sub { $_[0]{type} eq 'message' || $_[0]{type} eq 'ack' }) or last;
    push @{ $e->{type} eq 'ack' ? \@acks : \@burst }, $e->{message}{seq};
}
is scalar(@acks), 150, 'a burst of 150 sends over TLS: every one acknowledged';
is_deeply \@burst, [map { $live->{message}{seq} + $_ } 1 .. 150],
    'and every message arrives live, once, in seq order';
is_deeply $ws->{violations}, [], 'the server\'s frames are well formed';

$ws->send_close(1000);
my $end = $ws->wait_close(5, no_reply => 1);
is $end->{code}, 1000, 'and closes cleanly';
$ws->close;

# --- the logs, the stop ---------------------------------------------------

my $access = do { local $/; open my $a, '<', "$root/logs/access.log"; <$a> // '' };
like $access, qr{"GET /signin\?marker=logged HTTP/2\.0" 200 \d+ "[^"]*" "[^"]*" [\d.]+$}m,
    'the access log has requests, in the foko format';
unlike $access, qr/\Q$secret\E/, 'but no reset or invitation token';
unlike $access, qr/\Q$token\E/, 'and no access token';

my $took = quit_nginx(15);
ok defined $took, 'nginx stops on SIGQUIT'
    and note sprintf 'in %.2f s', $took;

for my $pid (@tunnels) {
    kill TERM => $pid;
    waitpid $pid, 0;
}

my @problems = error_log_problems();
is_deeply \@problems, [], 'the error log has nothing at [error] or above';

stop_nginx();
done_testing();
