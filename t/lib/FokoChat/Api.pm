package FokoChat::Api;

# Helpers for the plain-Perl tests of the chat API (flows whose later
# requests need values from earlier answers, or concurrency): an nginx with
# the module on the test MongoDB, JSON requests, and a private FerretDB that
# a test may stop and start.
#
#   use FokoChat::Api;
#   start_foko(workers => 2);
#   my ($status, $json, $headers) = api(POST => '/api/auth/signup',
#       { email => ..., password => ..., username => ... });
#   my ($s, $me) = api(GET => '/api/me', undef, token => $json->{token});
#   stop_foko();

use strict;
use warnings;

use Exporter 'import';
use File::Temp qw(tempdir);
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);

our @EXPORT = qw(
    foko_http_config start_foko stop_foko api api_send api_recv
    signup unique_email unique_username ferretdb_start ferretdb_stop jwt_secret free_port
    error_log_text json redis_start redis_stop redis_cli start_foko_host
    stop_foko_host on_host zone_counted
);

my $Json = JSON::PP->new->utf8->canonical->allow_nonref;
my $Secret = 'test-secret-0123456789abcdefghijklmnop';
my $Seq = 0;

sub json { $Json }
sub jwt_secret { $Secret }

# The http{} directives every test needs, plus $extra.
sub foko_http_config {
    my %o = @_;
    my $uri = $o{mongo_uri} // $ENV{TEST_NGINX_MONGO_URI}
        // die "TEST_NGINX_MONGO_URI is not set\n";
    return <<"_EOC_" . ($o{extra} // '');
    foko_chat_mongo_uri $uri;
    foko_chat_jwt_secret $Secret;
    foko_chat_password_hash argon2id t=1 m=8m;
_EOC_
}

# Starts nginx with the API under /api/ and the status page at /status.
# Options: workers (1; more turns the master on), master (on with one
# worker too, for a reload), mongo_uri, http_config (extra http{}
# directives), config (extra server{} directives), main_config.
sub start_foko {
    my %o = @_;
    my $workers = $o{workers} // 1;
    setup_servroot();
    write_conf(
        workers => $workers,
        master => $o{master} || $workers > 1,
        log_level => $ENV{FOKO_LOG_LEVEL} // 'info',
        main_config => $o{main_config} // '',
        http_config => foko_http_config(mongo_uri => $o{mongo_uri},
                                        extra => $o{http_config}),
        config => <<"_EOC_" . ($o{config} // ''),
        location /api/ {
            foko_chat_api;
        }

        location = /status {
            foko_chat_status;
        }
_EOC_
    );
    my ($ok, $out) = start_nginx();
    die "nginx did not start: $out\n" unless $ok;
}

sub stop_foko { stop_nginx() }

sub error_log_text { join '', error_log_lines() }

sub raw_request {
    my ($method, $path, $body, %o) = @_;
    my $content = ref $body ? $Json->encode($body) : $body;
    my $headers = "Host: localhost\r\nConnection: close\r\n";
    $headers .= "Authorization: Bearer $o{token}\r\n" if defined $o{token};
    $headers .= "$_: $o{headers}{$_}\r\n" for sort keys %{ $o{headers} || {} };
    if (defined $content) {
        $headers .= "Content-Type: application/json\r\n"
            . "Content-Length: " . length($content) . "\r\n";
    }
    return "$method $path HTTP/1.1\r\n$headers\r\n" . ($content // '');
}

# Sends a request and leaves it in flight: returns the socket.
sub api_send { http_send(raw_request(@_), 10) }

# Reads the answer to api_send: (status, decoded JSON or undef, headers).
sub api_recv {
    my ($sock, $timeout) = @_;
    my ($status, $headers, $body) = http_recv($sock, timeout => $timeout // 10);
    my $decoded = eval { $Json->decode($body) };
    return ($status, $decoded, $headers, $body);
}

# One request, one answer: (status, decoded JSON or undef, headers, raw).
sub api {
    my ($method, $path, $body, %o) = @_;
    return api_recv(api_send($method, $path, $body, %o), $o{timeout});
}

# What the /status counters $what.from_zone and $what.from_mongodb moved
# by while $code ran: [zone, mongodb].
sub zone_counted {
    my ($what, $code) = @_;
    my $counts = sub {
        my ($st, $s) = api(GET => '/status', undef, timeout => 5);
        die "GET /status: $st\n" unless $st == 200;
        return [@{ $s->{$what} }{qw(from_zone from_mongodb)}];
    };
    my $before = $counts->();
    $code->();
    my $after = $counts->();
    return [$after->[0] - $before->[0], $after->[1] - $before->[1]];
}

# An email no other test run has used.
sub unique_email {
    my $who = shift // 'user';
    return sprintf '%s.%d.%d.%d@example.com', $who, $$, int(time * 1000), ++$Seq;
}

# A username no other account has: usernames are unique handles, and
# the test files share one database.
sub unique_username {
    my $who = shift // 'user';
    return sprintf '%s.%x%x', $who, $$, ++$Seq;
}

# Signs a new user up: returns (token, user).  The username gets a suffix
# that makes it unique (see unique_username) unless exact => 1.
sub signup {
    my %o = @_;
    my $name = $o{username} // 'user';
    my $email = $o{email} // unique_email(lc($name =~ s/\W//gr));
    my ($status, $res) = api(POST => '/api/auth/signup', {
        email => $email, password => $o{password} // 'correct horse',
        username => $o{exact} ? $name : unique_username($name),
    });
    die "signup of $email: $status\n" unless $status == 201;
    return ($res->{token}, $res->{user});
}

# A FerretDB of the test's own, on a free port: returns (uri, handle);
# ferretdb_stop(handle) stops it, ferretdb_start(handle) starts it again
# on the same port and data.
sub ferretdb_start {
    my $h = shift // do {
        my $bin = $ENV{TEST_NGINX_FERRETDB}
            // die "TEST_NGINX_FERRETDB is not set\n";
        { bin => $bin, port => free_port(), dir => tempdir(CLEANUP => !$ENV{KEEP}) };
    };
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        open STDOUT, '>>', "$h->{dir}/ferretdb.log" or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
        exec $h->{bin}, '--handler=sqlite', "--sqlite-url=file:$h->{dir}/",
            "--listen-addr=127.0.0.1:$h->{port}", "--state-dir=$h->{dir}",
            '--debug-addr=-', '--telemetry=disable', '--log-level=error'
            or POSIX::_exit(127);
    }
    $h->{pid} = $pid;
    for (1 .. 100) {
        return ("mongodb://127.0.0.1:$h->{port}/foko_chat", $h)
            if IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $h->{port});
        sleep 0.1;
    }
    die "FerretDB did not start\n";
}

# A free port below the kernel's ephemeral range: a client reconnecting to a
# stopped server on an ephemeral port may connect to itself and take it.
sub free_port {
    for (1 .. 100) {
        my $port = 20000 + int rand 10000;
        my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
            LocalPort => $port, Listen => 1) or next;
        close $sock;
        return $port;
    }
    die "no free port\n";
}

# A redis-server of the test's own on a free loopback port, nothing kept
# on disk: returns a handle with {uri} (redis://127.0.0.1:port) and
# {port}; redis_stop(handle) stops it, redis_start(handle) starts it
# again on the same port (empty: a new run_id).
sub redis_start {
    my $h = shift // { port => free_port(),
                       dir => tempdir(CLEANUP => !$ENV{KEEP}) };
    my $bin = $ENV{TEST_NGINX_REDIS} // 'redis-server';
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        open STDOUT, '>>', "$h->{dir}/redis.log" or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
        exec $bin, '--save', '', '--appendonly', 'no', '--port', $h->{port},
            '--bind', '127.0.0.1', '--dir', $h->{dir},
            '--maxmemory-policy', 'noeviction'
            or POSIX::_exit(127);
    }
    $h->{pid} = $pid;
    $h->{uri} = "redis://127.0.0.1:$h->{port}";
    for (1 .. 100) {
        return $h if IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                           PeerPort => $h->{port});
        sleep 0.1;
    }
    die "redis-server did not start\n";
}

sub redis_stop {
    my $h = shift;
    return unless $h->{pid};
    kill TERM => $h->{pid};
    waitpid $h->{pid}, 0;
    delete $h->{pid};
}

# One command through redis-cli: its output, without the last newline.
sub redis_cli {
    my ($h, @args) = @_;
    my $out = qx{redis-cli -h 127.0.0.1 -p $h->{port} @{[ map { quotemeta } @args ]} 2>&1};
    chomp $out;
    return $out;
}

# Another nginx of the module, as start_foko starts it, in its own server
# root (beside the test's, named $o{name}) on its own port: a host among
# several. Returns a handle for on_host and stop_foko_host.
sub start_foko_host {
    my %o = @_;
    my $name = delete $o{name} // die "start_foko_host: a name\n";
    my $h = { name => $name, port => $o{port} // free_port(),
              root => server_root() . ".$name" };
    on_host($h, sub { start_foko(%o) });
    return $h;
}

# Runs $code with the API, the WebSocket clients and the error log of the
# test pointed at host $h.
sub on_host {
    my ($h, $code) = @_;
    return with_instance($h->{root}, $h->{port}, $code);
}

sub stop_foko_host { on_host($_[0], sub { stop_foko() }) }

sub ferretdb_stop {
    my $h = shift;
    return unless $h->{pid};
    # a clean stop: a killed FerretDB may leave a half-created database
    kill TERM => $h->{pid};
    waitpid $h->{pid}, 0;
    delete $h->{pid};
}

1;
