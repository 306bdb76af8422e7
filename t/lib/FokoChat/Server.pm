package FokoChat::Server;

# What the test files need of the nginx under test besides its API and
# its WebSocket: the one check that its error log is clean, "nginx -t",
# its processes (master, workers, reload, graceful stop), the worker that
# answers, a database of the file's own, and tokens made by hand.
#
#   use FokoChat::Server;
#   error_log_clean();                        # a test: nothing at [error]+
#   error_log_clean('no alert', qr/\[error\]/);  # [error] lines allowed

use strict;
use warnings;

use Exporter 'import';
use Digest::SHA qw(hmac_sha256);
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64 decode_base64);
use Test::More ();
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(server_port server_root nginx_binary
                       error_log_lines write_file);

our @EXPORT = qw(
    error_log_problems error_log_clean nginx_conf_test worker_pids
    wait_workers master_pid reload_nginx edit_conf quit_nginx status_pid b64url
    forge_token token_claims own_mongo_uri
);

my $Json = JSON::PP->new->utf8->canonical->allow_nonref;

# TEST_NGINX_MONGO_URI with "_$suffix" added to the database name: a test
# file of its own database does not slow down on what other files stored
# (FerretDB's SQLite backend scans whole collections).
sub own_mongo_uri {
    my $suffix = shift;
    my $uri = $ENV{TEST_NGINX_MONGO_URI} // die "TEST_NGINX_MONGO_URI is not set\n";
    $uri =~ s{^(mongodb(?:\+srv)?://[^/?]+)(?:/([^?]*))?}{
        "$1/" . (length($2 // '') ? $2 : 'foko_chat') . "_$suffix"
    }e or die "cannot read the MongoDB URI $uri\n";
    return $uri;
}

# Lines of error.log at [error] or above that match none of @allowed.
sub error_log_problems {
    my @allowed = @_;
    return grep {
        my $line = $_;
        $line =~ /\[(?:error|crit|alert|emerg)\]/
            && !grep { $line =~ $_ } @allowed
    } error_log_lines();
}

# "nginx -t" on the written conf: (passed, output).
sub nginx_conf_test {
    my $root = server_root();
    my $bin = nginx_binary();
    my $out = qx{\Q$bin\E -t -p \Q$root/\E -c conf/nginx.conf -e \Q$root/logs/error.log\E 2>&1};
    return ($? == 0, $out);
}

sub slurp {
    open my $fh, '<', shift or return '';
    local $/;
    return scalar <$fh>;
}

sub master_pid {
    my ($pid) = slurp(server_root() . '/logs/nginx.pid') =~ /(\d+)/;
    return $pid;
}

# The worker processes of the running nginx (children of the master that
# are not the cache helpers).
sub worker_pids {
    my $master = shift // master_pid() // return;
    my @pids;
    for my $dir (glob '/proc/[0-9]*') {
        my ($pid) = $dir =~ /(\d+)$/;
        my $stat = slurp("$dir/stat") or next;
        my ($ppid) = $stat =~ /\)\s+\S+\s+(\d+)/ or next;
        next unless $ppid == $master;
        next unless slurp("$dir/cmdline") =~ /worker process/;
        push @pids, $pid;
    }
    return sort { $a <=> $b } @pids;
}

# The pids of $n workers, once that many run (they start after the master
# has written its pid file); fewer after $timeout seconds.
sub wait_workers {
    my ($n, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    my @pids;
    while (1) {
        @pids = worker_pids();
        return @pids if @pids >= $n || time >= $deadline;
        sleep 0.05;
    }
}

# Sends SIGHUP and waits until the old workers have been replaced by as
# many new ones; returns (old pids, new pids, whether the old are gone).
# With gone => 1 it also waits, within the same timeout, until the old
# workers have exited: until then one may still accept a connection.
sub reload_nginx {
    my %o = @_;
    my $master = master_pid() or die "no nginx to reload\n";
    my @old = worker_pids($master);
    my %old = map { $_ => 1 } @old;
    kill HUP => $master;
    my $deadline = time + ($o{timeout} // 10);
    my (@new, $gone);
    while (time < $deadline) {
        my @now = worker_pids($master);
        @new = grep { !$old{$_} } @now;
        $gone = !grep { $old{$_} } @now;
        last if @new >= @old && ($gone || !$o{gone});
        sleep 0.05;
    }
    return (\@old, \@new, $gone);
}

# Rewrites conf/nginx.conf with $edit, which changes $_ (the file's text);
# dies if the text is left as it was.
sub edit_conf {
    my ($edit) = @_;
    my $conf = server_root() . '/conf/nginx.conf';
    local $_ = slurp($conf);
    my $before = $_;
    $edit->();
    die "$conf: the edit changed nothing\n" if $_ eq $before;
    write_file($conf, $_);
}

# Sends SIGQUIT (graceful stop) and waits up to $timeout seconds for the
# master to exit: the seconds it took, or undef if it is still running.
sub quit_nginx {
    my $timeout = shift // 15;
    my $master = master_pid() or die "no nginx to stop\n";
    my $root = server_root();
    my $t0 = time;
    kill QUIT => $master;
    while (time - $t0 < $timeout) {
        return time - $t0
            if index(slurp("/proc/$master/cmdline"), $root) < 0;
        sleep 0.05;
    }
    return undef;
}

# The pid of a worker that answers GET /status on a new connection.
sub status_pid {
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => server_port(), Timeout => 5) or die "connect: $@\n";
    print {$sock} "GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    my ($status, undef, $body) = FokoChat::Nginx::http_recv($sock, timeout => 5);
    return $status == 200 ? $Json->decode($body)->{pid} : undef;
}

sub b64url {
    my $s = encode_base64(shift, '');
    $s =~ tr{+/}{-_};
    $s =~ s/=+$//;
    return $s;
}

sub b64url_decode {
    my $s = shift;
    $s =~ tr{-_}{+/};
    $s .= '=' x ((4 - length($s) % 4) % 4);
    return decode_base64($s);
}

# The claims of a JWT (not verified).
sub token_claims {
    my (undef, $payload) = split /\./, shift;
    return $Json->decode(b64url_decode($payload));
}

# An HS256 token with the given claims, signed with $secret.
sub forge_token {
    my ($claims, $secret) = @_;
    my $input = b64url($Json->encode({ alg => 'HS256', typ => 'JWT' }))
        . '.' . b64url($Json->encode($claims));
    return "$input." . b64url(hmac_sha256($input, $secret));
}

# The clean-error-log check of a test file, one test: no line at [error]
# or above but those matching @allowed.
sub error_log_clean {
    my ($name, @allowed) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @problems = error_log_problems(@allowed);
    return Test::More::is_deeply(\@problems, [],
                                 $name // 'nothing at [error] or above')
        || Test::More::diag(@problems);
}

1;
