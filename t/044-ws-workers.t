# Cross-worker delivery survives a worker's death and a reload: the
# notification sockets are bound by the master before it forks, so a
# respawned worker inherits its slot's socket, and the workers of a new
# cycle get new ones that every worker can reach by name.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

start_foko(workers => 2,
           http_config => "    foko_chat_presence_grace 1s;\n",
           config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my ($alice, $ua) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');
my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Workers', members => [$ub->{id}] }, token => $alice);
is $status, 201, 'a channel';
my $cid = $ch->{id};
my $url = "/api/channels/$cid/messages";
my $seq = 0;

# bob on one worker, alice on the other; a message of each reaches both
sub exchange {
    my ($what, $A, $B) = @_;
    isnt $A->{pid}, $B->{pid}, "$what: alice and bob are on different workers";

    my ($st, $res) = api(POST => $url, { text => "$what from bob" },
                         token => $bob);
    is $st, 201, "$what: bob posts";
    my $s = $res->{message}{seq};
    ok wait_until(sub { grep { $_ == $s } $A->seqs($cid) }, 5),
        "$what: alice gets bob's message on the other worker";

    $A->send_json({ type => 'send', ref => "$what", channel_id => $cid,
                    text => "$what from alice" });
    ok wait_until(sub { $A->events(type => 'ack', ref => $what) }, 5),
        "$what: alice's send is acknowledged";
    my ($ack) = $A->events(type => 'ack', ref => $what);
    my $s2 = $ack->{message}{seq};
    is $s2, $s + 1, "$what: with the next seq";
    ok wait_until(sub { grep { $_ == $s2 } $B->seqs($cid) }, 5),
        "$what: bob gets it on the other worker";
    $seq = $s2;
}

my @pids = wait_workers(2);
is scalar @pids, 2, 'two workers';

my $A = ws_mojo(token => $alice, pid => $pids[0]);
my $B = ws_mojo(token => $bob, pid => $pids[1]);
exchange('at start', $A, $B);

# --- a worker dies ------------------------------------------------------------

kill KILL => $pids[0];
ok wait_until(sub { defined $A->{closed} }, 5),
    "alice's connection ends with its worker";
my @after;
my $deadline = time + 10;
while (time < $deadline) {
    @after = grep { $_ != $pids[0] } worker_pids();
    last if @after == 2;
    sleep 0.05;
}
is scalar @after, 2, 'the master starts a new worker';
my ($respawned) = grep { $_ != $pids[1] } @after;

# her only connection died with its worker: the new one sees to it
ok wait_until(sub {
    grep { $_->{user_id} eq $ua->{id} && !$_->{online} }
        $B->events(type => 'presence')
}, 5), 'bob hears that alice is offline: her connection died with the worker';
my ($st, $list) = api(GET => '/api/channels', undef, token => $bob);
my ($member) = grep { $_->{id} eq $ua->{id} } @{ $list->[0]{members} };
ok !$member->{online}, 'and GET /api/channels says so';

my $A2 = ws_mojo(token => $alice, pid => $respawned);
is $A2->{ready}{channels}[0]{last_seq}, $seq,
    'alice reconnects to the new worker: ready says where the channel is';
exchange('after a respawn', $A2, $B);

# --- a reload -----------------------------------------------------------------

my ($old, $new) = reload_nginx();
is scalar @$new, 2, 'a reload starts two new workers';
ok wait_until(sub { defined $A2->{closed} && defined $B->{closed} }, 10),
    'the old workers close their connections';
is $A2->{closed}, 1001, 'with 1001 (going away)';

my $A3 = ws_mojo(token => $alice, pid => $new->[0]);
my $B3 = ws_mojo(token => $bob, pid => $new->[1]);
exchange('after a reload', $A3, $B3);

$A3->close;
$B3->close;

error_log_clean('the error log has nothing else at [error] or above',
                qr/exited on signal 9/);

stop_foko();
done_testing();
