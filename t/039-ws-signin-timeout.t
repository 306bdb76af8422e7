# A WebSocket sign-in has a deadline: foko_chat_websocket_signin_timeout
# from its start, waiting for its turn on the thread pool included.  The
# pool here has one thread, MongoDB is paused (SIGSTOP) and four channel
# lists hold the thread for their read bounds, so a sign-in that needs
# MongoDB would wait its turn for many seconds.  With a 2 s deadline it is
# given up at 2 s: closed with 1013 "the server is too busy", and the
# client tries again.  Once MongoDB is back the same user signs in, and
# the given-up sign-in's task, done late, harms nothing.  Then the pacing:
# while MongoDB fails sign-ins, each failure (at most one a second) halves
# how many may read it at once; each sign-in it answers adds one.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;
use FokoChat::Ws qw(ws_mojo wait_until);
use Mojo::UserAgent;

my ($uri, $db) = ferretdb_start();
start_foko(mongo_uri => $uri, master => 1,
           main_config => 'thread_pool foko_one threads=1;',
           http_config => <<'_EOC_',
    foko_chat_thread_pool foko_one;
    foko_chat_websocket_auth_timeout 1s;
    foko_chat_websocket_signin_timeout 2s;
_EOC_
           config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my ($ana, $a) = signup(username => 'ana');
my ($bo, $b) = signup(username => 'bo');
my ($st, $room) = api(POST => '/api/channels',
                      { name => 'Room', members => [$b->{id}] },
                      token => $ana);
is $st, 201, 'a channel of ana and bo';

# bo has never signed in over a WebSocket: the zone does not know him
kill STOP => $db->{pid};

my @busy = map { api_send(GET => '/api/channels', undef, token => $bo) }
           1 .. 4;
sleep 0.3;

my ($code, $reason, $took);
{
    my $ua = Mojo::UserAgent->new(inactivity_timeout => 0,
                                  request_timeout => 0);
    my $port = server_port();
    my $t0 = time;
    $ua->websocket("ws://127.0.0.1:$port/ws"
                   => { Authorization => "Bearer $bo" } => sub {
        my (undef, $tx) = @_;
        if (!$tx->is_websocket) {
            $code = 'no upgrade';
            return;
        }
        $tx->on(finish => sub {
            (undef, $code, $reason) = @_;
            $took = time - $t0;
        });
    });
    wait_until(sub { defined $code }, 20);
}

is $code, 1013, 'the sign-in that waits too long is closed with 1013';
is $reason, 'the server is too busy', 'the server is too busy';
ok defined $took && $took >= 1.8 && $took < 4,
   'at its 2 s deadline, not at its turn'
    or diag 'took ' . ($took // 'forever');

kill CONT => $db->{pid};

for my $sock (@busy) {
    my ($s) = api_recv($sock, 60);
    ok $s == 503 || $s == 200, "a channel list queued on the pool: $s";
}

my $conn = eval { ws_mojo(token => $bo, timeout => 20) };
ok $conn, 'MongoDB back: bo signs in' or diag $@;
is_deeply [map { $_->{id} } @{ $conn ? $conn->{ready}{channels} : [] }],
          [$room->{id}], 'ready with Room';
$conn->close if $conn;

like error_log_text(), qr/sign-in given up after \d+ ms/,
     'the log says the sign-in was given up';

# --- pacing: fewer sign-ins at once while MongoDB fails them ------------

sub limit {
    my ($s, $res) = api(GET => '/status', undef, timeout => 5);
    return $res->{websocket}{signin_limit};
}

# a deadline past MongoDB's own bounds, so that the sign-ins fail on
# MongoDB (a reload: new workers, their lane at 64; the zone is kept)
edit_conf(sub {
    s/signin_timeout 2s/signin_timeout 20s/ or die "no 2 s deadline\n";
    s/auth_timeout 1s/auth_timeout 5s/ or die "no 1 s auth timeout\n";
});
ok +(reload_nginx(gone => 1, timeout => 20))[2],
   'reloaded with a 20 s sign-in deadline';

my @fresh = map { [signup(username => "u$_")] } 1 .. 4;
my $l0 = limit();
is $l0, 64, 'a new worker lets 64 sign-ins read MongoDB at once';

ferretdb_stop($db);
my $want = $l0;
for my $i (0 .. 2) {
    my $c = eval { ws_mojo(token => $fresh[0][0], timeout => 20) };
    like $@, qr/did not open: 1013/, "MongoDB stopped: sign-in $i gets 1013";
    $want = $want / 2 < 4 ? 4 : int($want / 2);
    sleep 1.1;
}
is limit(), $want, "three failures a second apart: $want at once";
like error_log_text(), qr/MongoDB fails sign-ins: \d+ at once/,
     'logged at warn';

ferretdb_start($db);
ok wait_until(sub { (api(GET => '/api/health', undef, timeout => 5))[0]
                    == 200 }, 15), 'MongoDB is back';
for my $u (@fresh[1, 2]) {
    my $c = eval { ws_mojo(token => $u->[0], timeout => 20) };
    ok $c && $c->{ready}, 'a sign-in MongoDB answers' or diag $@;
    $c->close if $c;
}
is limit(), $want + 2, 'each one answered: one more at once';

error_log_clean('only the paused or stopped MongoDB at [error]',
                qr/socket error or timeout|database is unreachable|No suitable servers|Failed to connect|connection refused/i);

stop_foko();
ferretdb_stop($db);
done_testing();
