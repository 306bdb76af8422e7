# A WebSocket sign-in of a user the zone knows (account and channel ids)
# takes nothing from the thread pool: it is not queued behind the MongoDB
# reads that fill the pool.  The pool here has one thread; with MongoDB
# paused (SIGSTOP), four channel lists queue on it, each waiting for its
# read bound, so anything posted behind them waits several seconds.  The
# known user's sign-in is ready at once all the same, and the lists get
# their 503 once their turns come.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my ($uri, $db) = ferretdb_start();
start_foko(mongo_uri => $uri,
           main_config => 'thread_pool foko_one threads=1;',
           http_config => 'foko_chat_thread_pool foko_one;',
           config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my ($token, $ana) = signup(username => 'ana');
my (undef, $bo) = signup(username => 'bo');
my ($st, $room) = api(POST => '/api/channels',
                      { name => 'Room', members => [$bo->{id}] },
                      token => $token);
is $st, 201, 'a channel of ana and bo';

sub signin {
    my $c = eval { ws_mojo(token => $token, timeout => 20) };
    return $@ =~ /did not open: (\S+)/ ? $1 : "$@" if !$c;
    my @ids = map { $_->{id} } @{ $c->{ready}{channels} };
    $c->close;
    return "ready @ids";
}

is signin(), "ready $room->{id}", 'first sign-in (the zone learns ana)';

kill STOP => $db->{pid};

my @busy = map { api_send(GET => '/api/channels', undef, token => $token) }
           1 .. 4;
select undef, undef, undef, 0.3;

my $t0 = time;
is signin(), "ready $room->{id}", 'pool busy, MongoDB paused: ready';
my $took = time - $t0;
cmp_ok $took, '<', 1.5, 'the sign-in did not wait for the pool'
    or diag sprintf 'took %.2f s', $took;

for my $sock (@busy) {
    my ($s) = api_recv($sock, 30);
    is $s, 503, 'a channel list queued on the paused MongoDB: 503';
}

kill CONT => $db->{pid};

error_log_clean('only the paused reads at [error]',
                qr/socket error or timeout/);

stop_foko();
ferretdb_stop($db);
done_testing();
