# Presence and resume over two workers: a user is online from the first
# connection (on any worker) to foko_chat_presence_grace after the last
# one, without flapping on a quick reconnect; GET /api/channels agrees.
# After a dropped connection, "resume" replays what was missed in seq
# order, once, then "resumed" (also past the zone's ring, from MongoDB, and
# with a message arriving during the replay); a reload closes connections
# with 1001 and the client resumes on the new workers.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

start_foko(mongo_uri => own_mongo_uri('ws43'),
           workers => 2,
           http_config => "    foko_chat_limit signup_address 1000/1h;\n"
               . "    foko_chat_presence_grace 1s;\n"
               . "    foko_chat_history_cache 5;\n",
           config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my ($alice, $ua) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');
my ($status, $room) = api(POST => '/api/channels',
    { name => 'Room', members => [$ub->{id}] }, token => $alice);
is $status, 201, 'a channel of alice and bob';
my ($st2, $side) = api(POST => '/api/channels',
    { name => 'Side', members => [$ub->{id}] }, token => $alice);
is $st2, 201, 'and another one';
my ($rid, $sid) = ($room->{id}, $side->{id});

my @pids = wait_workers(2);
is scalar @pids, 2, 'two workers';

# --- presence -----------------------------------------------------------------

my @B = ws_mojo_workers(token => $bob);
is_deeply [map { $_->{pid} } @B], \@pids, 'bob watches from both workers';

sub presence {
    my ($c, $online) = @_;
    return grep { ($_->{user_id} // '') eq $ua->{id}
                  && (!defined $online || !!$_->{online} == !!$online) }
        $c->events(type => 'presence');
}

# Waits until $cond holds for every connection; false (naming the
# workers of the connections it does not hold for) after $timeout seconds.
sub for_all {
    my ($conns, $cond, $timeout) = @_;
    return 1 if wait_until(sub { !grep { !$cond->($_) } @$conns }, $timeout // 10);
    diag 'not on the connection to worker ' . join ' ', map { $_->{pid} }
        grep { !$cond->($_) } @$conns;
    return 0;
}

sub alice_online {
    my ($st, $list) = api(GET => '/api/channels', undef, token => $bob);
    my ($ch) = grep { $_->{id} eq $rid } @{ $list || [] };
    my ($m) = grep { $_->{id} eq $ua->{id} } @{ $ch->{members} || [] };
    return $m ? ($m->{online} ? 'online' : 'offline') : 'not listed';
}

is alice_online(), 'offline', 'alice is offline before she connects';

my $a1 = ws_mojo(token => $alice, pid => $pids[0]);
ok for_all(\@B, sub { presence($_[0], 1) }, 5),
    'her first connection: bob gets "online" on both workers';
is alice_online(), 'online', 'GET /api/channels shows her online';

my $a2 = ws_mojo(token => $alice, pid => $pids[1]);
wait_until(sub { 0 }, 1);
is_deeply [map { scalar presence($_) } @B], [1, 1],
    'a second connection (other worker) announces nothing more';

$a1->close;
wait_until(sub { 0 }, 2.5);
is_deeply [map { scalar presence($_) } @B], [1, 1],
    'closing one of two: still online, past the grace';
is alice_online(), 'online', 'GET /api/channels agrees';

my $closed_at = time;
$a2->close;
ok for_all(\@B, sub { presence($_[0], 0) }, 6),
    'closing the last: bob gets "offline" on both workers';
my $after = time - $closed_at;
ok $after > 0.8, sprintf 'after the grace of 1 s (%.2f s)', $after;
is alice_online(), 'offline', 'GET /api/channels shows her offline';
for my $c (@B) {
    my @p = presence($c);
    is_deeply [map { $_->{online} ? 1 : 0 } @p], [1, 0],
        "bob\@$c->{pid}: exactly online then offline";
}

# a reconnect within the grace, on the other worker: no flapping
$a1 = ws_mojo(token => $alice, pid => $pids[0]);
ok for_all(\@B, sub { presence($_[0], 1) >= 2 }, 5), 'online again';
$_->forget for @B;
$a1->close;
wait_until(sub { 0 }, 0.3);
$a2 = ws_mojo(token => $alice, pid => $pids[1]);
wait_until(sub { 0 }, 2.5);
is_deeply [map { scalar presence($_) } @B], [0, 0],
    'closed and reopened within the grace: no offline, no online';
is alice_online(), 'online', 'and she is listed online';
$a2->close;
ok for_all(\@B, sub { presence($_[0], 0) }, 6), 'offline once she is gone for good';

# two closes on one worker a fraction of a second apart: the second one's
# grace decides, and it ends in "offline" too
$_->forget for @B;
$a1 = ws_mojo(token => $alice, pid => $pids[0]);
ok for_all(\@B, sub { presence($_[0], 1) }, 5), 'online once more';
$a1->close;
my $first_close = time;
$a2 = ws_mojo(token => $alice, pid => $pids[0]);
my $left = 0.15 - (time - $first_close);
sleep $left if $left > 0;
$a2->close;
my $gap = time - $first_close;
ok for_all(\@B, sub { presence($_[0], 0) }, 6),
    sprintf 'two closes %.2f s apart on one worker: "offline" after the last',
        $gap;
$_->close for @B;

# --- resume after a dropped connection -----------------------------------------

sub post {
    my ($cid, $text) = @_;
    my ($st, $res) = api(POST => "/api/channels/$cid/messages", { text => $text },
                         token => $bob);
    die "post: $st\n" unless $st == 201;
    return $res->{message};
}

# Reads events until $done returns true for the list so far; then 1 s more
# for anything that should not come.
sub collect {
    my ($c, $done, $timeout) = @_;
    my @ev;
    my $deadline = time + ($timeout // 10);
    while (!$done->(\@ev) && time < $deadline) {
        my $ev = $c->next_event($deadline - time) or last;
        push @ev, $ev;
    }
    my $ok = $done->(\@ev);
    push @ev, $c->drain_events(1);
    return ($ok, @ev);
}

sub seqs_of {
    my ($cid, @ev) = @_;
    return map { $_->{message}{seq} }
        grep { $_->{type} eq 'message' && $_->{message}{channel_id} eq $cid } @ev;
}

sub resumed_of {
    my ($cid, @ev) = @_;
    return grep { $_->{type} eq 'resumed' && $_->{channel_id} eq $cid } @ev;
}

my $r = ws_raw(token => $alice);
my %text;
for my $i (1 .. 3) {
    my $m = post($rid, "live $i");
    $text{$m->{seq}} = $m->{text};
}
my ($ok, @ev) = collect($r, sub { seqs_of($rid, @{ $_[0] }) >= 3 });
is_deeply [seqs_of($rid, @ev)], [1, 2, 3], 'alice reads 1 to 3 live';
$r->close;    # dropped: no close frame

my @side_texts;
for my $i (4 .. 7) {
    my $m = post($rid, "missed $i");
    $text{$m->{seq}} = $m->{text};
}
push @side_texts, post($sid, "side $_")->{text} for 1, 2;

$r = ws_raw(token => $alice);
my %last = map { $_->{id} => $_->{last_seq} } @{ $r->{ready}{channels} };
is_deeply [@last{$rid, $sid}], [7, 2], 'ready gives each channel\'s last seq';
$r->send_json({ type => 'resume', channels => { $rid => 3, $sid => 0 } });
($ok, @ev) = collect($r, sub { resumed_of($rid, @{ $_[0] }) && resumed_of($sid, @{ $_[0] }) });
ok $ok, 'resume: a resumed event for each channel';
is_deeply [seqs_of($rid, @ev)], [4 .. 7], 'the missed messages, in seq order, once';
is_deeply [map { $_->{message}{text} } grep { $_->{type} eq 'message'
               && $_->{message}{channel_id} eq $rid } @ev],
    [map { $text{$_} } 4 .. 7], 'as stored';
is_deeply [seqs_of($sid, @ev)], [1, 2], 'those of the other channel too';
my ($res_r) = resumed_of($rid, @ev);
my ($res_s) = resumed_of($sid, @ev);
is_deeply [@{$res_r}{qw(from to)}], [3, 7], 'resumed {from 3, to 7}';
is_deeply [@{$res_s}{qw(from to)}], [0, 2], 'resumed {from 0, to 2}';
my ($pos_resumed) = grep { $ev[$_] == $res_r } 0 .. $#ev;
my ($pos_last) = grep { $ev[$_]{type} eq 'message' && $ev[$_]{message}{seq} == 7
                        && $ev[$_]{message}{channel_id} eq $rid } 0 .. $#ev;
ok defined $pos_last && $pos_resumed > $pos_last, 'resumed comes after the replay';

my $m8 = post($rid, 'live 8');
($ok, @ev) = collect($r, sub { seqs_of($rid, @{ $_[0] }) });
is_deeply [seqs_of($rid, @ev)], [8], 'then live messages follow, once';
$r->close;

# a message posted while the replay runs
post($rid, "missed $_") for 9, 10;
$r = ws_raw(token => $alice);
$r->send_json({ type => 'resume', channels => { $rid => 8 } });
my $in_flight = api_send(POST => "/api/channels/$rid/messages", { text => 'during' },
                         token => $bob);
my ($st11, $m11) = api_recv($in_flight, 10);
is $m11->{message}{seq}, 11, 'a message is posted during the resume';
($ok, @ev) = collect($r, sub {
    resumed_of($rid, @{ $_[0] }) && grep { $_ == 11 } seqs_of($rid, @{ $_[0] })
});
ok $ok, 'resumed and the new message both come';
is_deeply [seqs_of($rid, @ev)], [9, 10, 11], 'replay and live together: in order, each once';
($res_r) = resumed_of($rid, @ev);
ok $res_r->{from} == 8 && ($res_r->{to} == 10 || $res_r->{to} == 11),
    "resumed from 8 to the last replayed ($res_r->{to})";

# nothing new
$r->send_json({ type => 'resume', channels => { $rid => 11 } });
($ok, @ev) = collect($r, sub { resumed_of($rid, @{ $_[0] }) });
is_deeply [@{ (resumed_of($rid, @ev))[0] || {} }{qw(from to)}], [11, 11],
    'resume with nothing missed: resumed {from 11, to 11}';
is_deeply [seqs_of($rid, @ev)], [], 'and no message';
$r->close;

# older than the ring (foko_chat_history_cache 5): from MongoDB
my %old;
for my $i (12 .. 31) {
    my $m = post($rid, "old $i");
    $old{$m->{seq}} = $m->{text};
}
$r = ws_raw(token => $alice);
$r->send_json({ type => 'resume', channels => { $rid => 11 } });
($ok, @ev) = collect($r, sub { resumed_of($rid, @{ $_[0] }) }, 20);
ok $ok, 'resume past the ring';
is_deeply [seqs_of($rid, @ev)], [12 .. 31], 'twenty missed messages, in order, once';
is_deeply [map { $_->{message}{text} } grep { $_->{type} eq 'message' } @ev],
    [map { $old{$_} } 12 .. 31], 'with their texts';
is_deeply [@{ (resumed_of($rid, @ev))[0] || {} }{qw(from to)}], [11, 31],
    'resumed {from 11, to 31}';
is_deeply $r->{violations}, [], 'well-formed frames';
$r->close;

# --- reload ---------------------------------------------------------------------

my @old_conns = map { ws_raw(token => $alice, pid => $_) } @pids;
my $mojo = ws_mojo(token => $bob);
my ($old, $new) = reload_nginx();
is scalar @$new, 2, 'nginx reloads with two new workers';
for my $c (@old_conns) {
    my $close = $c->wait_close(15);
    is $close->{code}, 1001, "the connection on old worker $c->{pid} is closed with 1001";
}
ok wait_until(sub { defined $mojo->{closed} }, 15), 'so is the Mojo client\'s';
is $mojo->{closed}, 1001, 'with 1001';

post($rid, "after reload $_") for 32, 33;
my %new = map { $_ => 1 } @$new;
$r = ws_raw(token => $alice, status_first => 1);
ok $new{$r->{pid}}, 'the client reconnects to a new worker';
$r->send_json({ type => 'resume', channels => { $rid => 31 } });
($ok, @ev) = collect($r, sub { resumed_of($rid, @{ $_[0] }) });
is_deeply [seqs_of($rid, @ev)], [32, 33], 'and resumes what it missed';
is_deeply [@{ (resumed_of($rid, @ev))[0] || {} }{qw(from to)}], [31, 33],
    'resumed {from 31, to 33}';
$r->close;

error_log_clean();

stop_foko();
done_testing;
