# bench/multihost: cross-host delivery against same-host delivery, in the
# same run, for one room spread over three hosts (one Redis, one
# FerretDB, three nginx of the module on loopback).
#
# MEMBERS users (default 90) sign up and join one channel; member i keeps
# a WebSocket open on host i mod 3.  A poster on host B posts at each
# rate of RATES (messages per second, default 5,20,50) for DURATION
# seconds (default 10), open loop: each message carries its scheduled
# time, and a delivery's latency is its arrival time minus that.  The
# clients on host B are the same-host deliveries, those on A and C the
# cross-host ones.  Per step: p50, p99 and max of both, lost (expected but
# not received after the drain) and duplicated deliveries, Redis's CPU and
# bytes in and out (INFO before and after) per message and per cross-host
# delivery, less what Redis does idle (measured first, as long as a step).
#
# Run through bench/multihost/run.sh (it starts FerretDB and the harness).
# It stops by itself: every wait has a deadline.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use Mojo::UserAgent;
use Mojo::IOLoop;
use JSON::PP;

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my $members = $ENV{MEMBERS} // 90;
my @rates = split /,/, $ENV{RATES} // '5,20,50';
my $limit = $ENV{LIMIT} // 600;
my $duration = $ENV{DURATION} // 10;
my $drain = 5;

my $redis = redis_start();

sub host_config {
    my $id = shift;
    return (
        workers => 2,
        main_config => "thread_pool foko_redis threads=2;\n",
        http_config => "    foko_chat_redis_url $redis->{uri};\n"
                     . "    foko_chat_host_id $id;\n"
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
my $B = start_foko_host(name => 'b', host_config('host-b'));
my $C = start_foko_host(name => 'c', host_config('host-c'));
$B->{name} = 'B';
$C->{name} = 'C';
my @hosts = ($A, $B, $C);

ok wait_until(sub {
    !grep { (on_host($_, sub { (api(GET => '/status'))[1] })->{redis}{state}
             // '') ne 'up' } @hosts
}, 15), 'every host reaches Redis';

my $t0 = time;
my (@tokens, @users);
for my $i (0 .. $members - 1) {
    my ($tok, $u) = on_host($hosts[$i % 3],
                            sub { signup(username => "m$i") });
    push @tokens, $tok;
    push @users, $u;
}
note sprintf '%d sign-ups in %.1f s', $members, time - $t0;

my ($st, $ch) = on_host($B, sub {
    api(POST => '/api/channels',
        { name => 'Spread',
          members => [map { $_->{id} } @users[1 .. $#users]] },
        token => $tokens[0])
});
is $st, 201, "one channel of $members members";
my $cid = $ch->{id};

# member i on host i mod 3; its arrival times by seq
my @clients;
for my $i (0 .. $members - 1) {
    my $h = $hosts[$i % 3];
    my $c = on_host($h, sub { ws_mojo(token => $tokens[$i]) });
    $c->{host} = $h->{name};
    $c->{got} = {};
    $c->{tx}->on(json => sub {
        my (undef, $ev) = @_;
        my $now = time;
        return unless ref $ev eq 'HASH' && ($ev->{type} // '') eq 'message';
        my $m = $ev->{message};
        return unless ($m->{channel_id} // '') eq $cid;
        my ($sched) = ($m->{text} // '') =~ /^t=([\d.]+);/ or return;
        push @{ $c->{got}{ $m->{seq} } }, $now - $sched;
    });
    push @clients, $c;
}
is scalar(grep { $_->{ready} } @clients), $members, 'every member connected';

# bytes in and out, and CPU seconds, from one INFO to another
sub redis_delta {
    my ($a, $b) = @_;
    return (($b->{total_net_input_bytes} - $a->{total_net_input_bytes})
            + ($b->{total_net_output_bytes} - $a->{total_net_output_bytes}),
            ($b->{used_cpu_sys} + $b->{used_cpu_user})
            - ($a->{used_cpu_sys} + $a->{used_cpu_user}));
}

sub redis_info {
    my %i;
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
my $url = "http://127.0.0.1:$B->{port}/api/channels/$cid/messages";
my $poster = $tokens[1];     # member 1: on host B
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
    my (%seq_of, $answered, $failed);
    $answered = 0;
    $failed = 0;
    $_->{got} = {} for @clients;

    my $before = redis_info();
    my $start = time + 0.2;
    for my $k (0 .. $n - 1) {
        my $when = $start + $k / $rate;
        my $delay = $when - time();
        Mojo::IOLoop->timer($delay > 0 ? $delay : 0, sub {
            my $sched = sprintf '%.6f', $when;
            $ua->post($url => { Authorization => "Bearer $poster" }
                => json => { text => "t=$sched;n=$k;$pad" } => sub {
                my (undef, $tx) = @_;
                $answered++;
                my $code = $tx->res->code // 0;
                if ($code == 201) {
                    $seq_of{$k} = $tx->res->json->{message}{seq};
                } else {
                    diag "a post: $code " . ($tx->res->body // '')
                        . ($tx->error ? " $tx->error->{message}" : '')
                        unless $failed++;
                }
            });
        });
    }
    wait_until(sub { $answered >= $n }, $duration + 30);
    my %want = map { $_ => 1 } values %seq_of;
    wait_until(sub {
        !grep { my $c = $_; grep { !$c->{got}{$_} } keys %want } @clients
    }, $drain);
    my $after = redis_info();

    my (@same, @cross, $lost, $dups, $deliveries);
    ($lost, $dups, $deliveries) = (0, 0, 0);
    for my $c (@clients) {
        for my $s (keys %want) {
            my $got = $c->{got}{$s};
            if (!$got) {
                $lost++;
                next;
            }
            $dups += @$got - 1;
            $deliveries++;
            push @{ $c->{host} eq 'B' ? \@same : \@cross }, $got->[0];
        }
    }
    my ($bytes, $cpu) = redis_delta($before, $after);
    my $cross_deliveries = scalar @cross;
    my $secs = $duration + (time - $start - $duration);
    my $net_bytes = $bytes - $idle_bytes * $secs / $duration;
    my $net_cpu = $cpu - $idle_cpu * $secs / $duration;
    my $r = {
        rate => $rate, posted => $n, stored => scalar(keys %want),
        failed => $failed, members => $members,
        deliveries => $deliveries, lost => $lost, duplicated => $dups,
        same_p50_ms => 1000 * pct(\@same, 0.5),
        same_p99_ms => 1000 * pct(\@same, 0.99),
        same_max_ms => 1000 * pct(\@same, 1),
        cross_p50_ms => 1000 * pct(\@cross, 0.5),
        cross_p99_ms => 1000 * pct(\@cross, 0.99),
        cross_max_ms => 1000 * pct(\@cross, 1),
        redis_cpu_s => $cpu,
        redis_bytes => $bytes,
        redis_idle_bytes => $idle_bytes, redis_idle_cpu_s => $idle_cpu,
        redis_bytes_per_message => keys %want ? $net_bytes / keys %want : 0,
        redis_bytes_per_cross_delivery =>
            $cross_deliveries ? $net_bytes / $cross_deliveries : 0,
        redis_cpu_us_per_message =>
            keys %want ? 1e6 * $net_cpu / keys %want : 0,
    };
    push @results, $r;
    note sprintf 'rate %d/s: %d stored, same-host p50 %.1f p99 %.1f ms, '
        . 'cross-host p50 %.1f p99 %.1f ms (max %.1f), lost %d, dup %d, '
        . 'Redis %.0f B and %.0f us CPU per message (less idle)',
        $rate, $r->{stored}, @$r{qw(same_p50_ms same_p99_ms cross_p50_ms
        cross_p99_ms cross_max_ms)}, $lost, $dups,
        $r->{redis_bytes_per_message}, $r->{redis_cpu_us_per_message};
    is $r->{stored}, $n, "rate $rate: every post stored";
    is $lost, 0, "rate $rate: no delivery lost";
    is $dups, 0, "rate $rate: none twice";
}

my $out = $ENV{RESULTS};
if ($out) {
    open my $fh, '>', $out or die "$out: $!\n";
    print $fh JSON::PP->new->canonical->encode($_), "\n" for @results;
    close $fh;
}

$_->close for @clients;
stop_foko_host($B);
stop_foko_host($C);
stop_foko();
redis_stop($redis);

done_testing;
