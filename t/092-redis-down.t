# A host whose Redis is down goes on serving its own clients: posts are
# answered and delivered at once, the status page says Redis is down and
# how many events wait; when Redis comes up the queue goes out, and the
# clients that connected meanwhile resume once (they may have missed
# other hosts' events).  Presence transitions wait in the queue too.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

system('command -v redis-server >/dev/null') == 0
    or plan skip_all => 'redis-server is not installed';

my $port = free_port();

start_foko(
    master => 1,
    main_config => "thread_pool foko_redis threads=2;\n",
    http_config => "    foko_chat_redis_url redis://127.0.0.1:$port;\n"
                 . "    foko_chat_presence_grace 1s;\n",
    config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

sub redis_status { (api(GET => '/status'))[1]{redis} }

ok wait_until(sub { (redis_status()->{state} // '') eq 'down' }, 10),
    'the status page says Redis is down';
like redis_status()->{host_id}, qr/^h-[0-9a-f]{12}$/, 'with a generated host id';

my ($alice, $ua) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');
my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Down', members => [$ub->{id}] }, token => $alice);
is $status, 201, 'a channel';
my $cid = $ch->{id};

my $B = ws_mojo(token => $bob);
my $t0 = time;
for my $i (1 .. 5) {
    ($status) = api(POST => "/api/channels/$cid/messages", { text => "m$i" },
                    token => $alice);
    is $status, 201, "post $i is answered";
}
ok time - $t0 < 3, 'without waiting for Redis';
ok wait_until(sub { $B->seqs($cid) == 5 }, 5), 'and delivered on this host';
is_deeply [$B->seqs($cid)], [1 .. 5], 'in order';

my $st = redis_status();
is $st->{state}, 'down', 'Redis is still down';
is $st->{queued}, 7,
    'the events wait: the channel, bob online, the five messages';
is $st->{published}, 0, 'none published';

my $redis = redis_start({ port => $port, dir => File::Temp::tempdir(CLEANUP => 1) });
ok wait_until(sub {
    my $s = redis_status();
    ($s->{state} // '') eq 'up' && $s->{queued} == 0
}, 15), 'when Redis comes up, the queue goes out';
$st = redis_status();
is $st->{published}, 7, 'every event that waited';
is $st->{dropped}, 0, 'none dropped';
is redis_cli($redis, 'EVAL',
    "local n = 0 for p = 0, 15 do n = n + redis.call('XLEN', 'foko:{' .. p .. '}:ev') end return n",
    0), 7, 'Redis holds them';

ok wait_until(sub { defined $B->{closed} }, 5),
    'the client that connected while Redis was down is asked to resume';
is $B->{closed}, 1013, 'with 1013';

my $C = ws_mojo(token => $bob);
($status) = api(POST => "/api/channels/$cid/messages", { text => 'm6' },
                token => $alice);
ok wait_until(sub { $C->seqs($cid) }, 5), 'a new client gets the next post';
is_deeply [$C->seqs($cid)], [6], 'seq 6';
ok wait_until(sub { redis_status()->{published} == 8 }, 5), 'published too';
$C->close;
ok wait_until(sub { redis_status()->{published} == 9 }, 5),
    'and bob going offline, after the grace period';

# --- a reload while Redis is down: the old worker writes its queue first --

redis_stop($redis);
($status) = api(POST => "/api/channels/$cid/messages", { text => 'm7' },
                token => $alice);
is $status, 201, 'a post while Redis is down again';
ok wait_until(sub { redis_status()->{state} eq 'down' }, 5), 'it is down';
is redis_status()->{queued}, 1, 'the post waits for it';

my ($old, $new) = reload_nginx();
ok scalar @$new, 'a reload';
sleep 1;
ok scalar(grep { kill 0 => $_ } @$old), 'the old worker waits for Redis';
redis_start($redis);
ok wait_until(sub { !grep { kill 0 => $_ } @$old }, 15),
    'and exits once Redis is back';
is redis_status()->{published}, 10, 'having written the post';
is redis_cli($redis, 'EVAL',
    "local n = 0 for p = 0, 15 do n = n + redis.call('XLEN', 'foko:{' .. p .. '}:ev') end return n",
    0), 1, 'into the Redis that came back';

# --- the script is called by its SHA1; a Redis that lost it gets it again -

is redis_cli($redis, 'SCRIPT', 'FLUSH'), 'OK', "Redis's script cache flushed";
for my $i (8, 9) {
    ($status) = api(POST => "/api/channels/$cid/messages", { text => "m$i" },
                    token => $alice);
    is $status, 201, "post m$i";
    ok wait_until(sub { redis_status()->{published} == 3 + $i }, 5),
        "m$i published" . ($i == 8 ? ' (NOSCRIPT: sent again with the script)'
                                   : ' (by its SHA1 again)');
}
is redis_cli($redis, 'EVAL',
    "local n = 0 for p = 0, 15 do n = n + redis.call('XLEN', 'foko:{' .. p .. '}:ev') end return n",
    0), 3, 'both in the streams, once each';
is redis_status()->{dropped}, 0, 'nothing dropped';
my $stats = redis_cli($redis, 'INFO', 'commandstats');
my ($evalsha) = $stats =~ /cmdstat_evalsha:calls=(\d+)/;
ok +($evalsha // 0) >= 2, 'called by SHA1 (EVALSHA calls: ' . ($evalsha // 0) . ')';
like redis_cli($redis, 'INFO', 'errorstats'), qr/errorstat_NOSCRIPT:count=[1-9]/,
    'one of them was NOSCRIPT';

my @bad = grep { /\[(?:alert|crit|error|emerg)\]/ } error_log_lines();
is scalar @bad, 0, 'nothing at [error] or above' or diag @bad;
ok scalar(grep { /Redis at \S+ failed/ } error_log_lines()) >= 2,
    'Redis down is logged at warn, once each time';

stop_foko();
redis_stop($redis);

done_testing;
