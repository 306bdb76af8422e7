# A client that goes away while its posts wait for MongoDB: with MongoDB
# stopped, sends to a cached channel wait in the write queue; the
# connection closes (a WebSocket client, and a REST client that hangs up);
# the worker lets go of their answers and goes on (no crash), and once
# MongoDB is back the posts are stored all the same, once each.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my ($uri, $db) = ferretdb_start();

start_foko(mongo_uri => $uri, master => 1,
           http_config => "    foko_chat_limit signup_address 1000/1h;\n",
           config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my ($alice) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');
my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Gone', members => [$ub->{id}] }, token => $alice);
is $status, 201, 'a channel';
($status) = api(POST => "/api/channels/$ch->{id}/messages",
                { text => 'first' }, token => $alice);
is $status, 201, 'with a message, so that it is cached';

my @before = worker_pids();

my $c = ws_raw(token => $alice);
ferretdb_stop($db);

$c->send_json({ type => 'send', ref => "ws-$_", channel_id => $ch->{id},
                text => "from a socket $_", client_id => "gone-ws-$_" })
    for 1 .. 3;
my $sock = api_send(POST => "/api/channels/$ch->{id}/messages",
                    { text => 'from a request', client_id => 'gone-rest' },
                    token => $alice);
sleep 0.5;
$c->close;
close $sock;
sleep 0.5;

# health is the zone's view, down within a few seconds of the stop
my $res;
my $until = time + 5;
do {
    ($status, $res) = api(GET => '/api/health');
} while (($status // 0) != 503 && time < $until && sleep 0.1);
is $status, 503, 'the worker still answers (MongoDB is down)';
is_deeply [worker_pids()], \@before, 'and it is the same worker';

ferretdb_start($db);

my @texts;
my $deadline = time + 30;
while (time < $deadline) {
    ($status, $res) = api(GET => "/api/channels/$ch->{id}/messages",
                          undef, token => $bob);
    @texts = map { $_->{text} } @{ $res->{messages} || [] };
    last if @texts >= 5;
    sleep 0.2;
}
is_deeply [sort @texts],
    [sort 'first', 'from a request', map { "from a socket $_" } 1 .. 3],
    'the posts of the clients that left are stored, once each';

error_log_clean('no crash; nothing at [error] or above but MongoDB down',
    qr/will retry|socket error|No suitable servers|Failed to connect|refused/i);

stop_foko();
ferretdb_stop($db);

done_testing;
