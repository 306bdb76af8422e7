# Presence across several hosts (one Redis, three nginx): a user is online
# while a connection is open on any host, and goes offline after the
# grace period once the last one closed, wherever it was.  A reconnect
# that moves the user from one host to another within the grace period
# announces nothing; GET /api/channels on any host agrees; a host killed
# with SIGKILL (master and workers) takes its users offline on the others
# once its lease ends (15 s, checked every 5 s).

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

system('command -v redis-server >/dev/null') == 0
    or plan skip_all => 'redis-server is not installed';

my $redis = redis_start();

sub host_config {
    my $id = shift;
    return (
        workers => 2,
        main_config => "thread_pool foko_redis threads=2;\n",
        http_config => "    foko_chat_redis_url $redis->{uri};\n"
                     . "    foko_chat_host_id $id;\n"
                     . "    foko_chat_presence_grace 1s;\n"
                     . "    foko_chat_redis_partitions 4;\n",
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

sub status_of {
    my $h = shift;
    return on_host($h, sub { (api(GET => '/status'))[1] });
}

ok wait_until(sub {
    !grep { (status_of($_)->{redis}{hosts} // 0) < 3 } @hosts
}, 15), 'every host sees the leases of three hosts';

my ($alice, $ua) = signup(username => 'alice');
my ($carol, $uc) = signup(username => 'carol');
my ($status, $room) = api(POST => '/api/channels',
    { name => 'Room', members => [$uc->{id}] }, token => $alice);
is $status, 201, 'a channel of alice and carol';
my $rid = $room->{id};

# what carol's GET /api/channels on host $h says of alice
sub alice_on {
    my $h = shift;
    my ($st, $list) = on_host($h, sub {
        api(GET => '/api/channels', undef, token => $carol)
    });
    my ($ch) = grep { $_->{id} eq $rid } @{ $list || [] };
    my ($m) = grep { $_->{id} eq $ua->{id} } @{ $ch->{members} || [] };
    return $m ? ($m->{online} ? 'online' : 'offline') : 'not listed';
}

sub presence {
    my ($c, $online) = @_;
    return grep { ($_->{user_id} // '') eq $ua->{id}
                  && (!defined $online || !!$_->{online} == !!$online) }
        $c->events(type => 'presence');
}

is alice_on($C), 'offline', 'alice is offline before she connects';

# carol watches from host C (both workers)
my @W = on_host($C, sub { ws_mojo_workers(token => $carol) });
is scalar @W, 2, 'carol watches from both workers of host C';

# --- online on A: seen on C ------------------------------------------------

my $a1 = ws_mojo(token => $alice);
ok wait_until(sub { !grep { !presence($_, 1) } @W }, 5),
    'alice connects on host A: carol on host C sees her online';
is alice_on($_), 'online', "GET /api/channels on host $_->{name} says online"
    for @hosts;

# --- closed: offline on C after the grace ----------------------------------

my $t0 = time;
$a1->close;
ok wait_until(sub { !grep { !presence($_, 0) } @W }, 8),
    'alice closes on host A: carol on host C sees her offline';
my $took = time - $t0;
ok $took >= 0.9, sprintf 'after the grace period (%.1f s)', $took;
is alice_on($_), 'offline', "GET /api/channels on host $_->{name} says offline"
    for @hosts;
is_deeply [map { scalar presence($_) } @W], [2, 2],
    'one online and one offline on each connection';

# --- moved from A to B within the grace: no flap on C ----------------------

my $a2 = ws_mojo(token => $alice);
ok wait_until(sub { !grep { presence($_, 1) < 2 } @W }, 5),
    'alice is back on host A';
$a2->close;
sleep 0.3;
my $b1 = on_host($B, sub { ws_mojo(token => $alice) });
sleep 3;
is_deeply [map { scalar presence($_) } @W], [3, 3],
    'a reconnect from host A to host B within the grace period: '
    . 'no offline, no second online on host C';
is alice_on($_), 'online', "host $_->{name} still says online" for @hosts;

my ($bkey) = grep { m{^foko:\{host-b/\w+\}:online$} }
    split /\n/, redis_cli($redis, 'KEYS', 'foko:*');
ok $bkey && redis_cli($redis, 'HEXISTS', $bkey, $ua->{id}) == 1,
    'host B has alice in its online hash in Redis';
ok !redis_cli($redis, 'HEXISTS', $_, $ua->{id}),
    'host A\'s hash no longer has her'
    for grep { m{^foko:\{host-a/\w+\}:online$} }
        split /\n/, redis_cli($redis, 'KEYS', 'foko:*');

# --- a host that starts reads the others' online sets ----------------------

my $D = start_foko_host(name => 'd', host_config('host-d'));
$D->{name} = 'D';
ok wait_until(sub { alice_on($D) eq 'online' }, 10),
    'a host started later knows alice is online on host B';

# --- host B paused past its lease: offline elsewhere, online once back ----

my ($master) = on_host($B, sub { master_pid() });
my @workers = on_host($B, sub { worker_pids() });
is scalar @workers, 2, 'host B has two workers';
my $offline0 = presence($W[0], 0);
my $online0 = presence($W[0], 1);
kill STOP => $master, @workers;
$t0 = time;
ok wait_until(sub { !grep { presence($_, 0) <= $offline0 } @W }, 30),
    'host B paused (SIGSTOP): carol on host C sees alice offline once its '
    . 'lease ended';
ok wait_until(sub { !grep { alice_on($_) ne 'offline' } $A, $C, $D }, 10),
    'hosts A, C and D say offline';
note sprintf 'host B paused: alice offline on C after %.1f s', time - $t0;
is redis_cli($redis, 'HEXISTS', $bkey, $ua->{id}), '0',
    'host B\'s online hash was deleted with its lease';
kill CONT => $master, @workers;
$t0 = time;
ok wait_until(sub { !grep { presence($_, 1) <= $online0 } @W }, 10),
    'host B goes on (SIGCONT): carol on host C sees alice online again';
note sprintf 'host B back: alice online on C after %.1f s', time - $t0;
ok wait_until(sub { !grep { alice_on($_) ne 'online' } $A, $C, $D }, 10),
    'hosts A, C and D say online';
ok wait_until(sub { redis_cli($redis, 'HEXISTS', $bkey, $ua->{id}) eq '1' }, 5),
    'host B\'s online hash has her again';
ok scalar(grep { /this host's lease in Redis had (?:ended|gone); its online users are told/ }
              on_host($B, sub { error_log_lines() })),
    'host B logs that it tells its users again';
$offline0 = presence($W[0], 0);

# --- host B killed: alice goes offline on A and C after its lease ----------

$t0 = time;
kill KILL => $master, @workers;
ok wait_until(sub { !grep { kill 0 => $_ } $master, @workers }, 5),
    'host B is killed, master and workers';

ok wait_until(sub { !grep { presence($_, 0) <= $offline0 } @W }, 30),
    'carol on host C sees alice offline';
$took = time - $t0;
ok wait_until(sub { !grep { alice_on($_) ne 'offline' } $A, $C, $D }, 30),
    'hosts A, C and D say offline';
my $all = time - $t0;
note sprintf 'host B killed: offline on C after %.1f s, on all after %.1f s',
    $took, $all;
ok $all < 15 + 5 + 1 + 3,
    sprintf 'within the lease bound, 15 s + 5 s + the grace (%.1f s)', $all;
ok $took >= 5, 'not before the lease could end';

my @gone = grep { /the lease of host "host-b\/\w+" ended/ }
    on_host($C, sub { error_log_lines() });
ok scalar @gone, 'host C logs that host B\'s lease ended';
is_deeply [grep { m{^host-b/} }
           split /\n/, redis_cli($redis, 'HKEYS', 'foko:hosts')], [],
    'host B\'s lease is no longer in Redis';
my @keys = grep { /host-b/ } split /\n/, redis_cli($redis, 'KEYS', 'foko:*');
is_deeply [grep { /online/ } @keys], [],
    'and its online hash was deleted (by one host)';

# --- the logs --------------------------------------------------------------

for my $h ($A, $C, $D) {
    my @bad = grep { /\[(?:alert|crit|error|emerg)\]/ }
        on_host($h, sub { error_log_lines() });
    is scalar @bad, 0, "host $h->{name}: no error in the log"
        or diag @bad[0 .. ($#bad < 4 ? $#bad : 4)];
}

$_->close for @W, $b1;
unlink on_host($B, sub { server_root() }) . '/logs/nginx.pid';
stop_foko_host($C);
stop_foko_host($D);
stop_foko();
redis_stop($redis);

done_testing;
