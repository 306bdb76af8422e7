# Live events over two workers: every member has a WebSocket on each worker
# (each one the upgraded keep-alive connection of a GET /status that named
# the worker), and every event of a channel reaches every connection of
# every member once, in seq order, whether it came from REST or from a
# WebSocket on the other worker: messages, acks, idempotent sends, typing,
# read marks, invite, rename, edits, tombstones, leave; non-members get
# nothing and cannot send; a slow reader is closed while the others keep
# receiving everything.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

start_foko(mongo_uri => own_mongo_uri('ws42'),
           workers => 2,
           http_config => "    foko_chat_limit signup_address 1000/1h;\n"
               . "    foko_chat_websocket_buffer 64k;\n",
           config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my ($alice, $ua) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');
my $carol_email = unique_email('carol');
my ($carol, $uc) = signup(username => 'carol', email => $carol_email);
my ($dave, $ud) = signup(username => 'dave');

my @pids = wait_workers(2);
is scalar @pids, 2, 'two workers';

my @A = ws_mojo_workers(token => $alice);
my @B = ws_mojo_workers(token => $bob);
my @C = ws_mojo_workers(token => $carol);
my $D = ws_mojo(token => $dave);
is_deeply [map { $_->{pid} } @A, @B, @C], [@pids, @pids, @pids],
    'alice, bob and carol each have a connection on each worker';
my @AB = (@A, @B);
my %name;
$name{$A[$_]} = "alice\@$pids[$_]" for 0, 1;
$name{$B[$_]} = "bob\@$pids[$_]" for 0, 1;
$name{$C[$_]} = "carol\@$pids[$_]" for 0, 1;
$name{$D} = 'dave';

is_deeply $A[0]{ready}{user}, { id => $ua->{id}, username => $ua->{username} },
    'ready names the user';
is_deeply $A[0]{ready}{channels}, [], 'who has no channel yet';

# channel events for channel $cid
sub channel_events {
    my ($c, $event, $cid) = @_;
    return grep { ($_->{event} // '') eq $event && ($_->{channel}{id} // '') eq $cid }
        $c->events(type => 'channel');
}

# Waits until $cond holds for every connection; false (naming the
# connections it does not hold for) after $timeout seconds.
sub for_all {
    my ($conns, $cond, $timeout) = @_;
    return 1 if wait_until(sub { !grep { !$cond->($_) } @$conns }, $timeout // 10);
    diag 'not on ' . join ' ', map { $name{$_} // $_->{pid} } grep { !$cond->($_) } @$conns;
    return 0;
}

sub none_of {
    my ($conns, $cond) = @_;
    return join ' ', map { $name{$_} } grep { $cond->($_) } @$conns;
}

# --- created ----------------------------------------------------------------

my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Room', members => [$ub->{id}] }, token => $alice);
is $status, 201, 'alice creates a channel with bob over REST';
my $cid = $ch->{id};
my $url = "/api/channels/$cid/messages";

ok for_all(\@AB, sub { channel_events($_[0], 'created', $cid) }),
    'every connection of alice and bob gets "created"';
for my $c (@AB) {
    my ($ev) = channel_events($c, 'created', $cid);
    next unless $ev;
    is $ev->{channel}{name}, 'Room', "$name{$c}: with the channel's name";
    ok !$ev->{channel}{direct}, "$name{$c}: not direct";
    is_deeply [sort map { $_->{username} } @{ $ev->{channel}{members} }],
        [map { $_->{username} } $ua, $ub], "$name{$c}: and its members";
    is_deeply $ev->{user}, { id => $ua->{id}, username => $ua->{username} },
        "$name{$c}: by alice";
    is_deeply { map { $_->{username} => ($_->{online} ? 1 : 0) }
                    @{ $ev->{channel}{members} } },
        { $ua->{username} => 1, $ub->{username} => 1 },
        "$name{$c}: both online, as they are connected";
}
sleep 0.5;
is none_of([@C, $D], sub { channel_events($_[0], 'created', $cid) }), '',
    'carol and dave get nothing of it';

# --- messages from REST and from WebSockets on both workers at once --------

for my $i (1 .. 10) {
    $B[$i % 2]->send_json({ type => 'send', ref => "ws-$i", channel_id => $cid,
                            text => "ws $i" });
}
wait_until(sub { 0 }, 0.05);
my @socks = map {
    api_send(POST => $url, { text => "rest $_", client_id => "rest-$_" },
             token => $alice)
} 1 .. 10;
my %by_seq;
for my $s (@socks) {
    my ($st, $r) = api_recv($s, 20);
    is $st, 201, 'a REST post is stored';
    $by_seq{$r->{message}{seq}} = $r->{message} if $r && $r->{message};
}
close $_ for @socks;

ok for_all(\@AB, sub { $_[0]->seqs($cid) >= 20 }, 20),
    'twenty messages reach every connection of both members';
wait_until(sub { 0 }, 0.5);
for my $c (@AB) {
    is_deeply [$c->seqs($cid)], [1 .. 20], "$name{$c}: seqs 1 to 20, each once, in order";
}
is none_of([@C, $D], sub { $_[0]->messages($cid) }), '', 'none reach non-members';

my %acks;
for my $c (@B) {
    for my $ack ($c->events(type => 'ack')) {
        push @{ $acks{$ack->{ref}} }, $ack->{message};
    }
}
is_deeply [sort keys %acks], [sort map { "ws-$_" } 1 .. 10],
    'every WebSocket send is acknowledged by its ref';
is_deeply [grep { @{ $acks{$_} } != 1 } sort keys %acks], [], 'once';
for my $ref (sort keys %acks) {
    my $m = $acks{$ref}[0];
    my ($n) = $ref =~ /(\d+)/;
    is $m->{text}, "ws $n", "$ref: the ack carries the message";
    $by_seq{$m->{seq}} = $m;
}
is_deeply [sort { $a <=> $b } keys %by_seq], [1 .. 20],
    'REST answers and acks account for seqs 1 to 20';
for my $c (@AB) {
    my @got = map { [$_->{seq}, $_->{id}, $_->{text}, $_->{author}{id}] }
        $c->messages($cid);
    my @want = map { [$_, $by_seq{$_}{id}, $by_seq{$_}{text}, $by_seq{$_}{author}{id}] }
        1 .. 20;
    is_deeply \@got, \@want, "$name{$c}: the same messages as stored";
}

# --- the same client_id twice: one message ------------------------------

$B[0]->send_json({ type => 'send', ref => 'dup-1', channel_id => $cid,
                   text => 'once', client_id => 'bob-once' });
ok wait_until(sub { $B[0]->events(type => 'ack', ref => 'dup-1') }, 5), 'a send with a client_id';
$B[1]->send_json({ type => 'send', ref => 'dup-2', channel_id => $cid,
                   text => 'once', client_id => 'bob-once' });
ok wait_until(sub { $B[1]->events(type => 'ack', ref => 'dup-2') }, 5),
    'the same client_id again, from the other worker';
my ($ack1) = $B[0]->events(type => 'ack', ref => 'dup-1');
my ($ack2) = $B[1]->events(type => 'ack', ref => 'dup-2');
is_deeply $ack2->{message}, $ack1->{message}, 'is acknowledged with the same message';
is $ack1->{message}{seq}, 21, 'seq 21';
($status, my $res) = api(POST => $url, { text => 'once', client_id => 'bob-once' },
                         token => $bob);
is $status, 200, 'and over REST it is the same message too (200)';
is $res->{message}{id}, $ack1->{message}{id}, 'same id';
ok for_all(\@AB, sub { $_[0]->seqs($cid) >= 21 }), 'seq 21 reaches everyone';
wait_until(sub { 0 }, 0.7);
for my $c (@AB) {
    is_deeply [$c->seqs($cid)], [1 .. 21], "$name{$c}: once";
}

# --- typing -------------------------------------------------------------------

$A[0]->send_json({ type => 'typing', channel_id => $cid }) for 1 .. 3;
ok for_all(\@B, sub { $_[0]->events(type => 'typing', channel_id => $cid) }, 5),
    'typing reaches the other member on both workers';
wait_until(sub { 0 }, 1);
for my $c (@B) {
    my @t = $c->events(type => 'typing', channel_id => $cid);
    is scalar @t, 1, "$name{$c}: one event for three typings within 2 s";
    is_deeply $t[0]{user}, { id => $ua->{id}, username => $ua->{username} }, "$name{$c}: naming alice";
}
is none_of(\@A, sub { $_[0]->events(type => 'typing') }), '',
    'no connection of the typer gets it';
is none_of([@C, $D], sub { $_[0]->events(type => 'typing') }), '',
    'nor do non-members';
wait_until(sub { 0 }, 1.2);
$A[0]->send_json({ type => 'typing', channel_id => $cid });
ok for_all(\@B, sub { $_[0]->events(type => 'typing', channel_id => $cid) >= 2 }, 5),
    'typing again after 2 s is sent again';

# --- read marks -------------------------------------------------------------

$B[0]->send_json({ type => 'read', channel_id => $cid, seq => 21 });
ok for_all(\@A, sub {
    grep { $_->{user_id} eq $ub->{id} && $_->{seq} == 21 }
        $_[0]->events(type => 'read', channel_id => $cid)
}, 5), 'a read mark sent over a WebSocket reaches the other member';
($status) = api(POST => "/api/channels/$cid/read", { seq => 20 }, token => $alice);
is $status, 200, 'alice marks read over REST';
ok for_all(\@B, sub {
    grep { $_->{user_id} eq $ua->{id} && $_->{seq} == 20 }
        $_[0]->events(type => 'read', channel_id => $cid)
}, 5), 'which reaches bob on both workers';

# a mark past the last message is stored and announced as the last seq,
# so that later messages are unread (checked below, after seq 22)
my $alice_reads = sub {
    grep { $_->{user_id} eq $ua->{id} }
        $_[0]->events(type => 'read', channel_id => $cid)
};
my %before = map { $_ => scalar $alice_reads->($_) } @B;
$A[0]->send_json({ type => 'read', channel_id => $cid, seq => 1e12 });
ok for_all(\@B, sub { $alice_reads->($_[0]) > $before{$_[0]} }, 5),
    'a read mark past the last seq reaches bob on both workers';
is_deeply [map { ($alice_reads->($_))[-1]{seq} } @B], [21, 21],
    'as the last seq, not as sent';

# --- invite: the channel appears live ---------------------------------------

($status) = api(POST => "/api/channels/$cid/invite", { email => $carol_email },
                token => $alice);
is $status, 200, 'alice invites carol';
ok for_all(\@C, sub { channel_events($_[0], 'joined', $cid) }, 5),
    'carol gets "joined" on both workers';
my ($joined) = channel_events($C[0], 'joined', $cid);
is_deeply $joined->{user}, { id => $uc->{id}, username => $uc->{username} }, 'naming her';
is_deeply [sort map { $_->{username} } @{ $joined->{channel}{members} || [] }],
    [map { $_->{username} } $ua, $ub, $uc],
    'with the channel and its members';
ok for_all(\@AB, sub { channel_events($_[0], 'joined', $cid) }, 5),
    'the members get "joined" too';

($status, $res) = api(POST => $url, { text => 'welcome carol' }, token => $bob);
is $res->{message}{seq}, 22, 'bob posts';
($status, $res) = api(GET => "/api/channels/$cid", undef, token => $alice);
is $res->{unread}, 1, 'which alice, whose mark was sent far ahead, has unread';
my @ABC = (@AB, @C);
ok for_all(\@ABC, sub { grep { $_ == 22 } $_[0]->seqs($cid) }, 5),
    'and the message reaches carol on both workers too';
for my $c (@C) {
    is_deeply [$c->seqs($cid)], [22], "$name{$c}: only what came after she joined";
}

# --- rename, edit, delete -----------------------------------------------------

($status) = api(PATCH => "/api/channels/$cid", { name => 'Lounge' }, token => $bob);
is $status, 200, 'bob renames the channel';
ok for_all(\@ABC, sub {
    grep { $_->{channel}{name} eq 'Lounge' } channel_events($_[0], 'renamed', $cid)
}, 5), 'every member connection gets "renamed" with the new name';

my $first = $by_seq{1};
my $author_token = $first->{author}{id} eq $ua->{id} ? $alice : $bob;
($status, $res) = api(PATCH => "$url/$first->{id}", { text => 'edited' },
                      token => $author_token);
is $status, 200, 'the first message is edited';
ok for_all(\@ABC, sub {
    grep { $_->{message}{id} eq $first->{id} && $_->{message}{text} eq 'edited'
           && $_->{message}{seq} == 1 }
        $_[0]->events(type => 'message_updated')
}, 5), 'message_updated reaches every member connection';

($status) = api(DELETE => "$url/$first->{id}", undef, token => $author_token);
is $status, 200, 'and deleted';
ok for_all(\@ABC, sub {
    grep { $_->{id} eq $first->{id} && $_->{seq} == 1 }
        $_[0]->events(type => 'message_deleted', channel_id => $cid)
}, 5), 'message_deleted {channel_id, id, seq} reaches every member connection';
is none_of([$D], sub { $_[0]->events(type => 'message_updated')
                       || $_[0]->events(type => 'message_deleted') }), '',
    'not dave';

# --- leave stops delivery -------------------------------------------------------

($status) = api(DELETE => "/api/channels/$cid/members/me", undef, token => $carol);
is $status, 204, 'carol leaves';
ok for_all(\@AB, sub {
    grep { ($_->{user}{id} // '') eq $uc->{id} } channel_events($_[0], 'left', $cid)
}, 5), 'the members get "left" naming her';
($status, $res) = api(POST => $url, { text => 'after carol' }, token => $alice);
is $res->{message}{seq}, 23, 'alice posts';
ok for_all(\@AB, sub { grep { $_ == 23 } $_[0]->seqs($cid) }, 5), 'the members get it';
wait_until(sub { 0 }, 1);
for my $c (@C) {
    is_deeply [$c->seqs($cid)], [22], "$name{$c}: carol does not";
}

$C[0]->send_json({ type => 'send', ref => 'carol-1', channel_id => $cid, text => 'back?' });
ok wait_until(sub { $C[0]->events(type => 'error', ref => 'carol-1') }, 5),
    'a send after leaving is an error';
my ($cerr) = $C[0]->events(type => 'error', ref => 'carol-1');
is $cerr->{code}, 'not_found', 'not_found';

$D->send_json({ type => 'send', ref => 'dave-1', channel_id => $cid, text => 'hi' });
ok wait_until(sub { $D->events(type => 'error', ref => 'dave-1') }, 5),
    'a non-member cannot send';
my ($derr) = $D->events(type => 'error', ref => 'dave-1');
is $derr->{code}, 'not_found', 'not_found, as if the channel did not exist';
ok !$D->events(type => 'ack'), 'no ack';

($status, $res) = api(GET => "$url?after=22", undef, token => $alice);
is_deeply [map { $_->{seq} } @{ $res->{messages} }], [23],
    'nothing was stored for them';

# --- a slow reader -------------------------------------------------------------

my $slow = ws_raw(token => $bob, rcvbuf => 4096);
ok $slow->{ready}, 'a slow reader of bob connects (small receive buffer)';

# waves of 30 messages of 3 KB (90 KB, under the fast readers' 64k queue
# and 128k socket buffer): the fast readers catch up after each wave, the
# slow reader falls behind by 90 KB a wave
my $n = 600;
my $wave = 30;
my $text = 'x' x 3000;
for my $w (0 .. $n / $wave - 1) {
    for my $i ($w * $wave + 1 .. ($w + 1) * $wave) {
        $A[$i % 2]->send_json({ type => 'send', ref => "burst-$i",
                                channel_id => $cid, text => "$i $text" });
    }
    my $upto = 23 + ($w + 1) * $wave;
    for_all(\@AB, sub { $_[0]->seqs($cid) >= $upto || defined $_[0]{closed} },
            30);
}
my $last = 23 + $n;
# until every fast connection has them all (or was closed)
for_all(\@AB, sub { $_[0]->seqs($cid) >= $last || defined $_[0]{closed} }, 90);
wait_until(sub { 0 }, 0.5);
for my $c (@AB) {
    is_deeply [$c->seqs($cid)], [1 .. $last], "$name{$c}: all of them, once, in order";
    is $c->{closed}, undef, "$name{$c}: still open";
}

my @slow_seqs;
my $slow_end = time + 15;
while (time < $slow_end) {
    my $ev = $slow->next_event($slow_end - time) or last;
    push @slow_seqs, $ev->{message}{seq}
        if $ev->{type} eq 'message' && $ev->{message}{channel_id} eq $cid;
}
ok $slow->{eof} || $slow->{close}, 'the slow reader is closed: ' . $slow->describe_end;
ok !$slow->{close} || $slow->{close}{code} == 1013,
    'with 1013 if it gets a close frame';
ok @slow_seqs < $n, sprintf 'before it got everything (%d of %d)', scalar @slow_seqs, $n;
is_deeply \@slow_seqs, [24 .. 23 + @slow_seqs], 'what it got was in order, without a gap';
is_deeply $slow->{violations}, [], 'in well-formed frames';
$slow->close;

for my $c (@AB, @C, $D) {
    $c->close;
}
error_log_clean();

# a graceful stop (SIGQUIT) with clients connected: 1001 to each, and
# nginx is gone soon after, not held up by timers of closed connections
my @last = map { ws_raw(token => $alice, pid => $_) } @pids;
my $quit = quit_nginx(20);
for my $c (@last) {
    is $c->wait_close(1)->{code}, 1001, "a graceful stop closes the connection on $c->{pid} with 1001";
}
ok defined $quit && $quit < 3,
    sprintf 'and nginx exits within 3 s of SIGQUIT (%s)',
        defined $quit ? sprintf('%.1f s', $quit) : 'still running after 20 s';

stop_foko();
done_testing;
