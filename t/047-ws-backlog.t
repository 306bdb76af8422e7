# A WebSocket connection holds at most 256 sends that wait for their ack:
# with MongoDB stopped, posts to a cached channel wait in the write queue,
# and each send past the 256th is answered at once with an "overloaded"
# error for its ref, the connection staying open.  Once MongoDB is back
# every waiting send is acknowledged, each once.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my $pending = 256;
my $extra = 6;

my ($uri, $db) = ferretdb_start();

start_foko(mongo_uri => $uri,
           http_config => "    foko_chat_limit signup_address 1000/1h;\n",
           config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my ($alice) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');
my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Backlog', members => [$ub->{id}] }, token => $alice);
is $status, 201, 'a channel';
($status) = api(POST => "/api/channels/$ch->{id}/messages",
                { text => 'first' }, token => $alice);
is $status, 201, 'with a message, so that it is cached';

my $c = ws_raw(token => $alice);

ferretdb_stop($db);

for my $i (1 .. $pending + $extra) {
    $c->send_json({ type => 'send', ref => "s$i", channel_id => $ch->{id},
                    text => "waiting $i", client_id => "backlog-$i" });
}

my (%error, %ack);

sub collect {
    my ($until, $timeout) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline && !$until->()) {
        my $ev = $c->next_event(0.2) or next;
        if ($ev->{type} eq 'error') {
            $error{ $ev->{ref} // '' } = $ev->{code};
        } elsif ($ev->{type} eq 'ack') {
            $ack{ $ev->{ref} }++;
        }
    }
}

collect(sub { keys %error >= $extra }, 10);
is_deeply \%error,
    { map { ("s$_" => 'overloaded') } $pending + 1 .. $pending + $extra },
    "past $pending sends waiting for their ack, each is overloaded at once";
collect(sub { 0 }, 1);
is scalar keys %ack, 0, 'nothing is acknowledged while MongoDB is down';

ferretdb_start($db);

collect(sub { keys %ack >= $pending }, 60);
is_deeply [sort keys %ack], [sort map { "s$_" } 1 .. $pending],
    "once MongoDB is back, the $pending waiting sends are acknowledged";
ok !(grep { $_ != 1 } values %ack), 'each once';
is scalar keys %error, $extra, 'and no other send failed';

($status, my $res) = api(GET => "/api/channels/$ch->{id}/messages?limit=200",
                         undef, token => $bob);
is $res->{messages}[-1]{seq}, $pending + 1, 'history has them all';

$c->close;
error_log_clean('nothing at [error] or above but MongoDB being down',
    qr/will retry|socket error|No suitable servers|Failed to connect|refused/i);

stop_foko();
ferretdb_stop($db);

done_testing;
