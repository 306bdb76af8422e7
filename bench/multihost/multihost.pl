# bench/multihost: cross-host delivery against same-host delivery, in the
# same run, for one room spread over three hosts (one Redis, one
# FerretDB, three nginx of the module on loopback).
#
# MEMBERS users (default 90) sign up and join one channel; member i keeps
# a WebSocket open on host i mod 3, in a client process of that host's own
# (three processes).  A poster posts at each rate of RATES (messages per
# second, default 5,20,50) for DURATION seconds (default 10), open loop,
# to hosts A, B and C in turn: each message carries its scheduled time
# and the host it was posted on, and a delivery's latency is its arrival
# time minus that.  A delivery to a client of the host the message was
# posted on is same-host, the others cross-host; each process sees both,
# of the same messages, at the same reading load.  Per step: p50, p99 and
# max of both (and p99 per host), lost (expected but not received after
# the drain) and duplicated deliveries, posts renumbered because another
# host had stored their seq first, Redis's CPU and bytes in and out
# (INFO before and after) per message and per cross-host delivery, less
# what Redis does idle (measured first, as long as a step).
#
# HOSTS=1 runs the same load on one host alone, without Redis (every
# delivery same-host), against the same FerretDB: with HOSTS=3 (the
# default) beside it, what three hosts post per second against one.  Per
# step also the time from a post's scheduled time to its 201 (p50, p99)
# and the posts acknowledged per second.
#
# Run through bench/multihost/run.sh (it starts FerretDB and the harness).
# It stops by itself: every wait has a deadline.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use Mojo::UserAgent;
use Mojo::IOLoop;
use JSON::PP qw(encode_json decode_json);
use IO::Select;
use POSIX ();

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my $members = $ENV{MEMBERS} // 90;
my @rates = split /,/, $ENV{RATES} // '5,20,50';
my $limit = $ENV{LIMIT} // 600;
my $duration = $ENV{DURATION} // 10;
my $drain = 5;
my $nhosts = $ENV{HOSTS} // 3;
die "HOSTS is 1 or 3\n" unless $nhosts == 1 || $nhosts == 3;

my $redis = $nhosts > 1 ? redis_start() : undef;

sub host_config {
    my $id = shift;
    my $redis_config = $redis ? "    foko_chat_redis_url $redis->{uri};\n"
                                . "    foko_chat_host_id $id;\n"
                              : '';
    return (
        workers => 2,
        main_config => "thread_pool foko_redis threads=2;\n",
        http_config => $redis_config
                     . "    foko_chat_max_members 10000;\n"
                     . "    foko_chat_limit signup_address 100000/1h;\n"
                     . "    foko_chat_limit login_address 100000/1h;\n",
        config => <<'_EOC_',
        location = /ws {
            foko_chat_websocket;
        }
_EOC_
    );
}

start_foko(host_config('host-a'));
my $A = { name => 'A', root => server_root(), port => server_port() };
my @hosts = ($A);
if ($redis) {
    my $B = start_foko_host(name => 'b', host_config('host-b'));
    my $C = start_foko_host(name => 'c', host_config('host-c'));
    $B->{name} = 'B';
    $C->{name} = 'C';
    push @hosts, $B, $C;

    ok wait_until(sub {
        !grep { (on_host($_, sub { (api(GET => '/status'))[1] })->{redis}{state}
                 // '') ne 'up' } @hosts
    }, 15), 'every host reaches Redis';
}

my $t0 = time;
my (@tokens, @users);
for my $i (0 .. $members - 1) {
    my ($tok, $u) = on_host($hosts[$i % @hosts],
                            sub { signup(username => "m$i") });
    push @tokens, $tok;
    push @users, $u;
}
note sprintf '%d sign-ups in %.1f s', $members, time - $t0;

my ($st, $ch) = on_host($hosts[-1], sub {
    api(POST => '/api/channels',
        { name => 'Spread',
          members => [map { $_->{id} } @users[1 .. $#users]] },
        token => $tokens[0])
});
is $st, 201, "one channel of $members members";
my $cid = $ch->{id};

# One client process per host: member i keeps a WebSocket open on host
# i mod 3, in the process of that host.  Each process reads only its own
# host's frames, so the order in which one process reads a post's frames
# does not count as distance between hosts.  Posts go to the hosts in
# turn, so every process sees same-host and cross-host deliveries of the
# same messages, at the same reading load.
#
# Parent and process talk over two pipes, one line each way:
#   process: "ready N"                    its N members are signed in
#   parent:  "end [seq, ...]"             a step is over: these were stored
#   process: {"same": [...], ...}         what it received of them
#   parent:  "quit"
sub client_process {
    my ($h, $members_of, $cmd, $res) = @_;
    Mojo::IOLoop->reset;
    my @mine;
    for my $i (@$members_of) {
        my $c = on_host($h, sub { ws_mojo(token => $tokens[$i]) });
        $c->{got} = {};
        $c->{tx}->on(json => sub {
            my (undef, $ev) = @_;
            my $now = time;
            return unless ref $ev eq 'HASH' && ($ev->{type} // '') eq 'message';
            my $m = $ev->{message};
            return unless ($m->{channel_id} // '') eq $cid;
            my ($sched, $from) = ($m->{text} // '') =~ /^t=([\d.]+);h=(\w);/
                or return;
            push @{ $c->{got}{ $m->{seq} } }, [$now - $sched, $from];
        });
        push @mine, $c;
    }
    syswrite $res, 'ready ' . scalar(grep { $_->{ready} } @mine) . "\n";
    my $sel = IO::Select->new($cmd);
    my $buf = '';
    while (1) {
        wait_until(sub { $sel->can_read(0) }, $limit);
        sysread $cmd, $buf, 1 << 20, length $buf or last;
        my ($line) = $buf =~ /^(.*)\n/ or next;
        substr $buf, 0, length($line) + 1, '';
        last if $line eq 'quit';
        my ($json) = $line =~ /^end (.*)$/ or next;
        my @want = @{ decode_json($json) };
        wait_until(sub {
            !grep { my $c = $_; grep { !$c->{got}{$_} } @want } @mine
        }, $drain);
        my %r = (same => [], cross => [], lost => 0, duplicated => 0,
                 deliveries => 0);
        for my $c (@mine) {
            for my $s (@want) {
                my $got = $c->{got}{$s};
                if (!$got) {
                    $r{lost}++;
                    next;
                }
                $r{duplicated} += @$got - 1;
                $r{deliveries}++;
                my ($lat, $from) = @{ $got->[0] };
                push @{ $from eq $h->{name} ? $r{same} : $r{cross} }, $lat;
            }
            $c->{got} = {};
        }
        syswrite $res, encode_json(\%r) . "\n";
    }
    $_->close for @mine;
    POSIX::_exit(0);
}

my @procs;
for my $k (0 .. $#hosts) {
    pipe my $cmd_r, my $cmd_w or die "pipe: $!\n";
    pipe my $res_r, my $res_w or die "pipe: $!\n";
    my @ids = grep { $_ % @hosts == $k } 0 .. $members - 1;
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        close $cmd_w;
        close $res_r;
        client_process($hosts[$k], \@ids, $cmd_r, $res_w);
    }
    close $cmd_r;
    close $res_w;
    push @procs, { pid => $pid, cmd => $cmd_w, res => $res_r,
                   host => $hosts[$k]{name}, members => scalar @ids };
}

# one line from a client process, with a deadline
sub read_line {
    my ($p, $timeout) = @_;
    my $sel = IO::Select->new($p->{res});
    my $deadline = time + $timeout;
    $p->{buf} //= '';
    my $line;
    until (($line) = $p->{buf} =~ /^(.*)\n/) {
        my $left = $deadline - time;
        die "the client process of host $p->{host} did not answer\n"
            unless $left > 0 && $sel->can_read($left);
        sysread $p->{res}, $p->{buf}, 1 << 20, length $p->{buf}
            or die "the client process of host $p->{host} ended\n";
    }
    substr $p->{buf}, 0, length($line) + 1, '';
    return $line;
}

my $ready = 0;
for my $p (@procs) {
    my ($n) = read_line($p, 60 + $members) =~ /^ready (\d+)$/;
    $ready += $n // 0;
}
is $ready, $members, 'every member connected, each host with its own client process';

# bytes in and out, and CPU seconds, from one INFO to another
sub redis_delta {
    my ($a, $b) = @_;
    my $d = sub { ($b->{ $_[0] } // 0) - ($a->{ $_[0] } // 0) };
    return ($d->('total_net_input_bytes') + $d->('total_net_output_bytes'),
            $d->('used_cpu_sys') + $d->('used_cpu_user'));
}

# nothing without Redis
sub redis_info {
    my %i;
    return \%i unless $redis;
    for my $section ('stats', 'cpu') {
        for (split /\r?\n/, redis_cli($redis, 'INFO', $section)) {
            $i{$1} = $2 if /^(\w+):([\d.]+)/;
        }
    }
    return \%i;
}

sub pct {
    my ($list, $p) = @_;
    return 0 unless @$list;
    my @s = sort { $a <=> $b } @$list;
    return $s[int($p * $#s + 0.5)];
}

my $ua = Mojo::UserAgent->new(request_timeout => 10, max_connections => 64);
my @urls = map { "http://127.0.0.1:$_->{port}/api/channels/$cid/messages" }
               @hosts;
my $poster = $tokens[1];
my $pad = 'x' x 60;
my @results;

# what Redis does with no message at all (readers blocking, leases), for
# as long as a step lasts
my $idle0 = redis_info();
sleep $duration;
my $idle1 = redis_info();
my ($idle_bytes, $idle_cpu) = redis_delta($idle0, $idle1);
note sprintf 'Redis idle for %d s: %d B, %.3f s CPU', $duration, $idle_bytes,
    $idle_cpu;

for my $rate (@rates) {
    my $n = int($rate * $duration);
    my (%seq_of, $answered, $failed, @acked, $last_ack);
    $answered = 0;
    $failed = 0;

    my $before = redis_info();
    my %log_at = map { $_->{name} => -s "$_->{root}/logs/error.log" // 0 }
                     @hosts;
    my $start = time + 0.2;
    for my $k (0 .. $n - 1) {
        my $when = $start + $k / $rate;
        my $delay = $when - time();
        my $h = $hosts[$k % @hosts];
        Mojo::IOLoop->timer($delay > 0 ? $delay : 0, sub {
            my $sched = sprintf '%.6f', $when;
            $ua->post($urls[$k % @hosts] => { Authorization => "Bearer $poster" }
                => json => { text => "t=$sched;h=$h->{name};n=$k;$pad" } => sub {
                my (undef, $tx) = @_;
                $answered++;
                my $code = $tx->res->code // 0;
                if ($code == 201) {
                    $last_ack = time;
                    push @acked, $last_ack - $when;
                    $seq_of{$k} = $tx->res->json->{message}{seq};
                } else {
                    diag "a post: $code " . ($tx->res->body // '')
                        . ($tx->error ? ' ' . $tx->error->{message} : '')
                        unless $failed++;
                }
            });
        });
    }
    wait_until(sub { $answered >= $n }, $duration + 30);
    my @want = sort { $a <=> $b } values %seq_of;
    syswrite $_->{cmd}, 'end ' . encode_json(\@want) . "\n" for @procs;
    my (@same, @cross, %per_host);
    my ($lost, $dups, $deliveries) = (0, 0, 0);
    for my $p (@procs) {
        my $r = decode_json(read_line($p, $drain + 30));
        $lost += $r->{lost};
        $dups += $r->{duplicated};
        $deliveries += $r->{deliveries};
        push @same, @{ $r->{same} };
        push @cross, @{ $r->{cross} };
        $per_host{ $p->{host} } = {
            same_p99_ms => 1000 * pct($r->{same}, 0.99),
            cross_p99_ms => 1000 * pct($r->{cross}, 0.99),
            lost => $r->{lost},
        };
    }
    my $after = redis_info();

    # posts whose seq another host had stored first, renumbered by the
    # writer (each logs it at warn): what numbering from each host's own
    # zone costs
    my $renumbered = 0;
    for my $h (@hosts) {
        open my $fh, '<', "$h->{root}/logs/error.log" or next;
        seek $fh, $log_at{ $h->{name} }, 0;
        $renumbered += grep { /was stored by other workers/ } <$fh>;
    }

    my ($bytes, $cpu) = redis_delta($before, $after);
    my $cross_deliveries = scalar @cross;
    my $secs = $duration + (time - $start - $duration);
    my $net_bytes = $bytes - $idle_bytes * $secs / $duration;
    my $net_cpu = $cpu - $idle_cpu * $secs / $duration;
    my $stored = scalar @want;
    my $r = {
        hosts => scalar @hosts, rate => $rate, posted => $n,
        stored => $stored, failed => $failed, members => $members,
        clients => 'one process per host',
        posts_on => join(', ', map { $_->{name} } @hosts) . ' in turn',
        ack_p50_ms => 1000 * pct(\@acked, 0.5),
        ack_p99_ms => 1000 * pct(\@acked, 0.99),
        acked_per_s => $last_ack && $last_ack > $start
            ? scalar(@acked) / ($last_ack - $start) : 0,
        deliveries => $deliveries, lost => $lost, duplicated => $dups,
        renumbered => $renumbered,
        same_p50_ms => 1000 * pct(\@same, 0.5),
        same_p99_ms => 1000 * pct(\@same, 0.99),
        same_max_ms => 1000 * pct(\@same, 1),
        cross_p50_ms => 1000 * pct(\@cross, 0.5),
        cross_p99_ms => 1000 * pct(\@cross, 0.99),
        cross_max_ms => 1000 * pct(\@cross, 1),
        per_host => \%per_host,
        redis_cpu_s => $cpu,
        redis_bytes => $bytes,
        redis_idle_bytes => $idle_bytes, redis_idle_cpu_s => $idle_cpu,
        redis_bytes_per_message => $stored ? $net_bytes / $stored : 0,
        redis_bytes_per_cross_delivery =>
            $cross_deliveries ? $net_bytes / $cross_deliveries : 0,
        redis_cpu_us_per_message => $stored ? 1e6 * $net_cpu / $stored : 0,
    };
    push @results, $r;
    note sprintf 'rate %d/s: %d stored, same-host p50 %.1f p99 %.1f ms, '
        . 'cross-host p50 %.1f p99 %.1f ms (max %.1f), lost %d, dup %d, '
        . 'Redis %.0f B and %.0f us CPU per message (less idle), '
        . '%d renumbered after another host took their seq',
        $rate, $stored, @$r{qw(same_p50_ms same_p99_ms cross_p50_ms
        cross_p99_ms cross_max_ms)}, $lost, $dups,
        $r->{redis_bytes_per_message}, $r->{redis_cpu_us_per_message},
        $renumbered;
    note sprintf '  %d hosts: acknowledged p50 %.1f p99 %.1f ms, %.0f posts/s',
        scalar @hosts, @$r{qw(ack_p50_ms ack_p99_ms acked_per_s)};
    note sprintf '  host %s: same-host p99 %.1f ms, cross-host p99 %.1f ms',
        $_, @{ $per_host{$_} }{qw(same_p99_ms cross_p99_ms)}
        for sort keys %per_host;
    is $stored, $n, "rate $rate: every post stored";
    is $lost, 0, "rate $rate: no delivery lost";
    is $dups, 0, "rate $rate: none twice";
}

my $out = $ENV{RESULTS};
if ($out) {
    open my $fh, '>', $out or die "$out: $!\n";
    print $fh JSON::PP->new->canonical->encode($_), "\n" for @results;
    close $fh;
}

for my $p (@procs) {
    syswrite $p->{cmd}, "quit\n";
    close $p->{cmd};
}
waitpid $_->{pid}, 0 for @procs;
stop_foko_host($_) for @hosts[1 .. $#hosts];
stop_foko();
redis_stop($redis) if $redis;

done_testing;
