# Password hashes give their memory back: after 40 sign-ins with argon2id
# at its default m=19m, spread over the threads of the shared pool, the
# worker's resident memory is about what it was before them, not a hash's
# memory kept by every thread that ever hashed (389 MiB before, 282 under
# the sanitizers; 9 MiB after, 26 under the sanitizers).

use strict;
use warnings;

use Test::More;
use IO::Select;

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

# under the sanitizers too: a hash's memory is mapped, not from their
# allocator (whose quarantine kept it before); their own use is some
# 15 MiB more
my $sanitized = ($ENV{TEST_NGINX_LOAD_MODULES} // '') =~ /build-asan/;

my $bound_mib = 48;

# one process; the default pool of 32 threads, 4 hashes at once
setup_servroot();
write_conf(log_level => 'info',
    http_config => foko_http_config(extra =>
        "    foko_chat_limit login_account 1000/15m;\n"
        . "    foko_chat_limit login_address 1000/15m;\n")
        =~ s/t=1 m=8m/t=1 m=19m concurrency=4/r,
    config => "location /api/ { foko_chat_api; }\n");
my ($ok, $out) = start_nginx();
ok $ok, 'nginx starts' or BAIL_OUT($out);

sub vmrss_mib {
    my ($pid) = slurp_pid();
    open my $fh, '<', "/proc/$pid/status" or die "no /proc/$pid: $!\n";
    while (<$fh>) {
        return $1 / 1024 if /^VmRSS:\s+(\d+)\s+kB/;
    }
    die "no VmRSS for $pid\n";
}

sub slurp_pid {
    open my $fh, '<', server_root() . '/logs/nginx.pid' or die "$!\n";
    my ($pid) = <$fh> =~ /(\d+)/;
    return $pid;
}

my @emails = map { unique_email("mem$_") } 1 .. 4;
signup(email => $_, username => 'mem', password => 'correct horse')
    for @emails;

my $start = vmrss_mib();

# 40 sign-ins, 8 in flight at a time

my ($sent, $signed_in, %inflight) = (0, 0);
my $select = IO::Select->new;
my $deadline = time + 120;

while (($sent < 40 || $select->count) && time < $deadline) {
    while ($sent < 40 && $select->count < 8) {
        my $s = api_send(POST => '/api/auth/login',
            { email => $emails[$sent % 4], password => 'correct horse' });
        $select->add($s);
        $inflight{$s} = '';
        $sent++;
    }
    for my $s ($select->can_read(1)) {
        my $n = sysread $s, $inflight{$s}, 65536, length $inflight{$s};
        next if $n;
        $signed_in++ if $inflight{$s} =~ m{^HTTP/1\.1 200};
        $select->remove($s);
        delete $inflight{$s};
        close $s;
    }
}

is $signed_in, 40, '40 sign-ins answered 200';

my $after = vmrss_mib();
diag sprintf 'worker VmRSS: %.1f MiB after the sign-ups, '
    . '%.1f MiB after 40 sign-ins%s', $start, $after,
    $sanitized ? ' (sanitizers)' : '';

cmp_ok $after, '<', $bound_mib,
    "the worker's memory after 40 sign-ins stays under $bound_mib MiB";

stop_nginx();

error_log_clean();

done_testing;
