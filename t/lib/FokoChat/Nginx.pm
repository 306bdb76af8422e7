package FokoChat::Nginx;

# Drives a test nginx and talks HTTP to it, independently of Test::Nginx.
# FokoChat::Runner (the fallback for Test::Nginx::Socket) is built on these
# functions; a plain-Perl test that needs concurrency (e.g. several
# long-polling clients at once) can use them directly, whether or not the
# real Test::Nginx is installed:
#
#   use Test::More;
#   use FokoChat::Nginx qw(:all);     # t/lib is in @INC through .proverc
#
#   setup_servroot();
#   write_conf(config => 'location = /t { return 200 "ok\n"; }');
#   my ($started, $output) = start_nginx();
#   BAIL_OUT("nginx: $output") unless $started;
#   my $waiting = http_send(build_request("GET /t"));    # open socket
#   my ($status, $headers, $body) = http_recv($waiting, timeout => 5);
#   my ($status2) = http_request(build_request("GET /t"), 3);
#   stop_nginx();
#   done_testing;
#
# Environment: TEST_NGINX_BINARY (default: nginx in PATH, else
# /usr/sbin/nginx), TEST_NGINX_SERVROOT (default t/servroot),
# TEST_NGINX_SERVER_PORT (default 1984, or a free port if 1984 is busy; the
# variable is set to the port in use), TEST_NGINX_LOAD_MODULES (paths of
# .so files, separated by spaces, loaded with load_module).

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Spec;
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(
    server_port server_root nginx_binary nginx_version expand_env
    setup_servroot write_conf start_nginx stop_nginx error_log_lines
    build_request http_send http_recv http_request write_file
    with_instance
);
our %EXPORT_TAGS = (all => \@EXPORT_OK);

my $ServerRoot = $ENV{TEST_NGINX_SERVER_ROOT}
    = File::Spec->rel2abs($ENV{TEST_NGINX_SERVROOT} || 't/servroot');
my $ServerPort = $ENV{TEST_NGINX_SERVER_PORT} //= pick_port(1984);
my $PidFile = "$ServerRoot/logs/nginx.pid";
my $NginxV;

# The given port if nothing listens on it, else one the kernel says is free.
sub pick_port {
    my $wanted = shift;
    for my $port ($wanted, 0) {
        my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
            LocalPort => $port, Listen => 1, ReuseAddr => 1) or next;
        return $sock->sockport;
    }
    die "cannot find a free TCP port: $@\n";
}

sub server_port {
    $ServerPort = $ENV{TEST_NGINX_SERVER_PORT} = shift if @_;
    return $ServerPort;
}

sub server_root { $ServerRoot }

sub nginx_binary {
    return $ENV{TEST_NGINX_BINARY} if $ENV{TEST_NGINX_BINARY};
    my ($found) = grep { -x } map { "$_/nginx" } File::Spec->path;
    return $found // '/usr/sbin/nginx';
}

# Output of `nginx -V` (version and configure arguments), read once.
sub nginx_V {
    my $binary = nginx_binary();
    $NginxV //= qx{\Q$binary\E -V 2>&1};
    return $NginxV;
}

sub nginx_version { nginx_V() =~ m{nginx/(\d+\.\d+\.\d+)} ? $1 : undef }

# Replaces each $TEST_NGINX_FOO by $ENV{TEST_NGINX_FOO}; dies on unset ones.
sub expand_env {
    my $text = shift;
    return undef unless defined $text;
    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{
        $ENV{$1} // die "No environment $1 defined.\n"
    }ge;
    return $text;
}

sub slurp {
    my $path = shift;
    open my $fh, '<', $path or return '';
    local $/;
    return scalar <$fh>;
}

# Writes $content to $path (bytes), creating the directories.
sub write_file {
    my ($path, $content) = @_;
    make_path(dirname($path));
    open my $fh, '>', $path or die "cannot write $path: $!\n";
    binmode $fh;
    print {$fh} $content;
    close $fh or die "cannot write $path: $!\n";
}

# Stops a leftover nginx, then recreates conf/, logs/ and html/ (with an
# index.html) under the server root, removing the *_temp directories.
sub setup_servroot {
    stop_nginx();
    remove_tree((map { "$ServerRoot/$_" } qw(conf logs html)),
        glob "$ServerRoot/*_temp");
    make_path(map { "$ServerRoot/$_" } qw(conf logs html));
    write_file("$ServerRoot/html/index.html",
        '<html><head><title>It works!</title></head><body>It works!</body></html>');
}

# Writes conf/nginx.conf, laid out like Test::Nginx's. Options: main_config,
# http_config, config (inside server {}), log_level (debug), master (false),
# workers (1), env (names for `env`), server_name (localhost),
# root_location (true: a `location /` serving html/).
sub write_conf {
    my %o = (log_level => 'debug', workers => 1, env => [],
             server_name => 'localhost', root_location => 1, @_);
    my ($r, $port) = ($ServerRoot, $ServerPort);
    my $http_config = $o{http_config} // '';
    my $main = join '', map { "load_module $_;\n" }
        split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '';
    $main .= "user root;\n" if $> == 0;
    $main .= "env $_;\n" for @{ $o{env} };
    my $temp_paths = join '', map { "    ${_}_temp_path $r/${_}_temp;\n" }
        grep { $http_config !~ /\b${_}_temp_path\b/ }
        grep { nginx_V() !~ /--without-http_${_}_module/ }
        qw(client_body proxy fastcgi uwsgi scgi);
    my $master = $o{master} ? 'on' : 'off';
    my $root_location = !$o{root_location} ? '' : <<"_EOC_";
        location / {
            root $r/html;
            index index.html index.htm;
        }
_EOC_
    write_file("$r/conf/nginx.conf", <<"_EOC_");
worker_processes $o{workers};
daemon on;
master_process $master;
error_log $r/logs/error.log $o{log_level};
pid $PidFile;
$main
@{[ $o{main_config} // '' ]}

events {
    accept_mutex off;
    worker_connections 1024;
}

http {
    access_log $r/logs/access.log;
$temp_paths
    default_type text/plain;
    keepalive_timeout 68;

$http_config

    server {
        listen 127.0.0.1:$port;
        server_name $o{server_name};
        client_max_body_size 30M;

        # Begin test case config...
@{[ $o{config} // '' ]}
        # End test case config.

$root_location    }
}
_EOC_
}

# Whether $pid runs an nginx of this server root (false for a zombie too),
# so that a stale pid file never gets another process signalled.
sub alive {
    my $pid = shift;
    return index(slurp("/proc/$pid/cmdline"), $ServerRoot) >= 0;
}

sub nginx_pid {
    my ($pid) = slurp($PidFile) =~ /(\d+)/ or return undef;
    return alive($pid) ? $pid : undef;
}

# Starts nginx on the written conf. Returns (1, output) once it runs, or
# (0, output) if it did not start; output is what nginx printed.
sub start_nginx {
    my $out = "$ServerRoot/logs/nginx.stderr";
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        open STDOUT, '>', $out or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
        exec nginx_binary(), '-p', "$ServerRoot/", '-c', 'conf/nginx.conf',
            '-e', "$ServerRoot/logs/error.log"
            or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $status = $?;
    return (0, slurp($out) . "(nginx exited with code " . ($status >> 8) . ")\n") if $status;
    # The daemon writes its pid file; it is listening already by then.
    for (1 .. 100) {
        return (1, slurp($out)) if nginx_pid();
        sleep 0.05;
    }
    return (0, slurp($out) . "(no running nginx after 5 seconds)\n");
}

# Stops the nginx of the server root if any: QUIT, and after 3 seconds KILL
# of its process group (the master and its workers).
sub stop_nginx {
    my $pid = nginx_pid() or return;
    kill QUIT => $pid;
    for (1 .. 60) {
        last unless alive($pid);
        sleep 0.05;
    }
    if (alive($pid)) {
        warn "nginx $pid did not exit on SIGQUIT; killing it\n";
        kill KILL => -$pid;
        for (1 .. 20) {
            last unless alive($pid);
            sleep 0.05;
        }
    }
    unlink $PidFile;
}

# Runs $code with the functions above pointed at another nginx instance:
# its own server root and port (several nginx at once, e.g. hosts that
# share one Redis); then points them back. Returns what $code returns.
sub with_instance {
    my ($root, $port, $code) = @_;
    my @saved = ($ServerRoot, $ServerPort, $PidFile);
    my @env = @ENV{qw(TEST_NGINX_SERVER_ROOT TEST_NGINX_SERVER_PORT)};
    ($ServerRoot, $ServerPort) = ($root, $port);
    $PidFile = "$root/logs/nginx.pid";
    @ENV{qw(TEST_NGINX_SERVER_ROOT TEST_NGINX_SERVER_PORT)} = ($root, $port);
    my @res = eval { wantarray ? $code->() : scalar $code->() };
    my $err = $@;
    ($ServerRoot, $ServerPort, $PidFile) = @saved;
    @ENV{qw(TEST_NGINX_SERVER_ROOT TEST_NGINX_SERVER_PORT)} = @env;
    die $err if $err;
    return wantarray ? @res : $res[0];
}

sub error_log_lines {
    open my $fh, '<', "$ServerRoot/logs/error.log" or return;
    return <$fh>;
}

# Builds an HTTP/1.1 request the way Test::Nginx does from a --- request
# section: "METHOD [URI [VERSION]]" then the body (trimmed, Content-Length
# added). $more_headers has "Name: value" lines; Host (default localhost)
# and "Connection: close" are added unless given.
sub build_request {
    my ($req, $more_headers, $host) = @_;
    $req =~ s/\A(?:\s*#[^\n]*\n|\s+)+//;
    my ($line, $body) = split /\n/, $req, 2;
    my ($method, $uri, $version) = split ' ', $line // '';
    die "bad request line: '" . ($line // '') . "'\n" unless defined $method;
    $body //= '';
    my ($headers, $chunked) = ('', 0);
    for (split /\n+/, $more_headers // '') {
        next if /^\s*#/;
        my ($name, $value) = split /:\s*/, $_, 2;
        $chunked = 1 if lc $name eq 'transfer-encoding' && ($value // '') eq 'chunked';
        $headers .= "$name: " . ($value // '') . "\r\n";
    }
    if (!$chunked && $body ne '' && $headers !~ /^Content-Length:/mi) {
        $body =~ s/^\s+|\s+$//g;
        $headers .= "Content-Length: " . length($body) . "\r\n";
    }
    $headers = "Connection: close\r\n$headers" unless $headers =~ /^Connection:/mi;
    $headers = "Host: " . ($host // 'localhost') . "\r\n$headers"
        unless $headers =~ /^Host:/mi;
    return "$method " . ($uri // '/') . ' ' . ($version // 'HTTP/1.1')
        . "\r\n$headers\r\n$body";
}

# Connects to the test server and writes $raw; returns the socket.
sub http_send {
    my ($raw, $timeout) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $ServerPort, Timeout => $timeout // 3)
        or die "cannot connect to 127.0.0.1:$ServerPort: $@\n";
    binmode $sock;
    local $SIG{PIPE} = 'IGNORE';
    print {$sock} $raw or die "cannot send the request: $!\n";
    return $sock;
}

# Reads one response from $sock: (status, {lowercased name => value},
# body). Options: timeout (seconds, default 3), head (response to a HEAD
# request, so no body). Dies on timeout or on an incomplete response.
sub http_recv {
    my ($sock, %o) = @_;
    my $deadline = time + ($o{timeout} // 3);
    my $select = IO::Select->new($sock);
    my $buf = '';
    while (1) {
        my $left = $deadline - time;
        die "client socket timed out\n" if $left <= 0 || !$select->can_read($left);
        my $n = sysread $sock, $buf, 65536, length $buf;
        die "cannot read the response: $!\n" unless defined $n;
        my @res = parse_response($buf, $o{head}, $n == 0);
        return @res if @res;
        die "connection closed before the response was complete\n" if $n == 0;
    }
}

# http_send then http_recv on one new connection.
sub http_request {
    my ($raw, $timeout) = @_;
    return http_recv(http_send($raw, $timeout),
        timeout => $timeout, head => scalar($raw =~ /^\s*HEAD\s/));
}

# (status, headers, body) if $buf holds a whole response, else ().
sub parse_response {
    my ($buf, $head, $eof) = @_;
    my $end = index $buf, "\r\n\r\n";
    return if $end < 0;
    my ($status_line, @lines) = split /\r\n/, substr($buf, 0, $end);
    my ($status) = $status_line =~ m{^HTTP/\d\.\d\s+(\d{3})}
        or die "bad status line: $status_line\n";
    my %headers;
    for (@lines) {
        my ($name, $value) = /^([^:]+?)\s*:\s*(.*?)\s*$/ or next;
        $name = lc $name;
        $headers{$name} = exists $headers{$name} ? "$headers{$name}, $value" : $value;
    }
    my $rest = substr $buf, $end + 4;
    my $body;
    if ($head || $status == 204 || $status == 304) {
        $body = '';
    } elsif (($headers{'transfer-encoding'} // '') =~ /chunked/i) {
        $body = dechunk($rest);
    } elsif (defined $headers{'content-length'}) {
        $body = substr $rest, 0, $headers{'content-length'}
            if length $rest >= $headers{'content-length'};
    } elsif ($eof) {
        $body = $rest;
    }
    return defined $body ? ($status, \%headers, $body) : ();
}

# The decoded body if $data holds all chunks up to the last one, else undef.
sub dechunk {
    my $data = shift;
    my $body = '';
    while ($data =~ /\G([0-9a-fA-F]+)[^\r\n]*\r\n/gc) {
        my ($size, $pos) = (hex $1, pos $data);
        return $body if $size == 0 && substr($data, $pos) =~ /\A(?:[^\r\n]+\r\n)*\r\n/;
        return undef if $size == 0 || length $data < $pos + $size + 2;
        $body .= substr $data, $pos, $size;
        pos($data) = $pos + $size + 2;
    }
    return undef;
}

1;
