# Resuming while live messages flow, over two workers: nothing missed,
# nothing twice.
#
# - The standalone "resume" after live messages have started: a message
#   posted between "ready" and the client's "resume" (on the connection's
#   worker and on the other one) comes live, and the replay does not send
#   it again; the replay brings only what the connection has not sent,
#   also when it reads MongoDB while more live messages come.
# - Resume positions in the auth frame: the replay starts with the
#   sign-in, so the replayed messages, then the live ones (posted during
#   the sign-in and the replay), come in strict seq order, each once;
#   also when the worker had no subscriber of the channel yet and the two
#   workers store messages out of order while it signs in (their events
#   may be read before the channel has a subscriber there: they come from
#   the ring, or from MongoDB with foko_chat_history_cache 5); channels
#   the user is not in are ignored; a seq beyond what the zone knows of is
#   taken as given; a malformed resume refuses the sign-in.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use JSON::PP;
use List::Util qw(max);
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

start_foko(mongo_uri => own_mongo_uri('ws49'),
           workers => 2,
           http_config => "    foko_chat_limit signup_address 1000/1h;\n"
               . "    foko_chat_history_cache 5;\n",
           config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my ($alice, $ua) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');
my ($st, $room) = api(POST => '/api/channels',
    { name => 'Room', members => [$ub->{id}] }, token => $alice);
is $st, 201, 'a channel of alice and bob';
my ($st2, $side) = api(POST => '/api/channels',
    { name => 'Side', members => [$ub->{id}] }, token => $alice);
is $st2, 201, 'and another one';
my ($rid, $sid) = ($room->{id}, $side->{id});

my @pids = wait_workers(2);
is scalar @pids, 2, 'two workers';

# --- bob's posts, on the worker of our choosing -----------------------------

sub request {
    my ($sock, $method, $path, $body) = @_;
    my $content = defined $body ? encode_json($body) : '';
    print {$sock} "$method $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Authorization: Bearer $bob\r\n"
        . "Content-Type: application/json\r\n"
        . 'Content-Length: ' . length($content) . "\r\n\r\n$content";
}

# three keep-alive connections on each worker
my %conns;
for (1 .. 200) {
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => server_port()) or next;
    request($sock, GET => '/status');
    my (undef, undef, $body) = http_recv($sock, timeout => 5);
    my $pid = decode_json($body)->{pid};
    push @{ $conns{$pid} }, $sock if @{ $conns{$pid} || [] } < 3;
    last if keys %conns == 2 && !grep { @{ $conns{$_} } < 3 } keys %conns;
}
is_deeply [map { scalar @{ $conns{$_} || [] } } @pids], [3, 3],
    'three connections on each worker for the posts';

# a post left in flight on connection $i of worker $pid; post_end reads it
sub post_start {
    my ($pid, $cid, $text, $i) = @_;
    my $sock = $conns{$pid}[$i // 0];
    request($sock, POST => "/api/channels/$cid/messages", { text => $text });
    return $sock;
}

sub post_end {
    my $sock = shift;
    my ($s, undef, $b) = http_recv($sock, timeout => 20);
    die "post: $s\n" unless $s == 201;
    return decode_json($b)->{message};
}

sub post_on { post_end(post_start(@_)) }

# --- what a connection gets ---------------------------------------------------

# Reads events until $done holds for the list so far; then 1 s more for
# anything that should not come.
sub collect {
    my ($c, $done, $timeout) = @_;
    my @ev;
    my $deadline = time + ($timeout // 15);
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
        grep { $_->{type} eq 'message' && $_->{message}{channel_id} eq $cid }
        @ev;
}

sub resumed_of {
    my ($cid, @ev) = @_;
    return grep { $_->{type} eq 'resumed' && $_->{channel_id} eq $cid } @ev;
}

# waits for live message $seq of $cid on $c: the events read meanwhile
sub until_seq {
    my ($c, $cid, $seq) = @_;
    my ($ok, @ev) = collect($c,
        sub { grep { $_ == $seq } seqs_of($cid, @{ $_[0] }) }, 10);
    ok $ok, "message $seq comes live";
    return @ev;
}

sub twice { my %n; grep { $n{$_}++ } @_ }

my $last = 0;    # Room's highest seq
sub room_post { my $m = post_on(@_); $last = $m->{seq}; return $m }

# --- the standalone resume after live messages --------------------------------

for my $k (0, 1) {
    my ($here, $there) = $k ? reverse @pids : @pids;
    my $seen = $last;
    room_post($there, $rid, "missed $_") for 1, 2;
    my $r = ws_raw(token => $alice, pid => $here);
    my %at = map { $_->{id} => $_->{last_seq} } @{ $r->{ready}{channels} };
    is $at{$rid} // -1, $last,
        "worker $here: ready at $last, alice saw $seen";
    my $m1 = room_post($here, $rid, 'live here');
    my @ev = until_seq($r, $rid, $m1->{seq});
    my $m2 = room_post($there, $rid, 'live there');
    push @ev, until_seq($r, $rid, $m2->{seq});
    is_deeply [seqs_of($rid, @ev)], [$m1->{seq}, $m2->{seq}],
        'posted on this worker and on the other, before the resume';

    $r->send_json({ type => 'resume', channels => { $rid => $seen } });
    my ($ok, @after) = collect($r, sub { resumed_of($rid, @{ $_[0] }) });
    ok $ok, 'resumed';
    is_deeply [seqs_of($rid, @after)], [$seen + 1, $seen + 2],
        'the resume replays only what the connection had not sent';
    my @all = (seqs_of($rid, @ev), seqs_of($rid, @after));
    is_deeply [twice(@all)], [], 'no message twice';
    is_deeply [sort { $a <=> $b } @all], [$seen + 1 .. $last],
        'every message once, in seq order once sorted';
    my ($res) = resumed_of($rid, @after);
    is_deeply [@{$res}{qw(from to)}], [$seen, $last],
        "resumed {from $seen, to $last}";

    my $m3 = room_post($there, $rid, 'live after');
    ($ok, @after) = collect($r, sub { seqs_of($rid, @{ $_[0] }) });
    is_deeply [seqs_of($rid, @after)], [$m3->{seq}], 'then live messages, once';
    is_deeply $r->{violations}, [], 'well-formed frames';
    $r->close;
}

# past the ring (foko_chat_history_cache 5): the replay reads MongoDB
# while live messages keep coming; the same resume sent again replays
# nothing
{
    my $seen = $last;
    room_post($pids[1], $rid, "old $_") for 1 .. 12;
    my $r = ws_raw(token => $alice, pid => $pids[0]);
    my $m1 = room_post($pids[1], $rid, 'live 1');
    my @ev = until_seq($r, $rid, $m1->{seq});
    $r->send_json({ type => 'resume', channels => { $rid => $seen } });
    my @during = map { post_start($pids[$_ % 2], $rid, "during $_", $_ % 3) }
        0 .. 3;
    my $top = max(map { post_end($_)->{seq} } @during);
    $last = $top;
    my ($ok, @after) = collect($r, sub {
        resumed_of($rid, @{ $_[0] })
            && grep { $_ == $top } seqs_of($rid, @{ $_[0] })
    }, 20);
    ok $ok, 'resumed past the ring, and the messages posted meanwhile came';
    my @replayed = seqs_of($rid, @after);
    is_deeply [twice(seqs_of($rid, @ev), @replayed)], [], 'none twice';
    is_deeply [sort { $a <=> $b } seqs_of($rid, @ev), @replayed],
        [$seen + 1 .. $top], 'none missing';
    is_deeply [@replayed], [sort { $a <=> $b } @replayed],
        'after the resume: in seq order';

    $r->send_json({ type => 'resume', channels => { $rid => $seen } });
    ($ok, @after) = collect($r, sub { resumed_of($rid, @{ $_[0] }) });
    is_deeply [seqs_of($rid, @after)], [],
        'the same resume again: nothing twice';
    is_deeply [@{ (resumed_of($rid, @after))[0] || {} }{qw(from to)}],
        [$seen, $top], "resumed {from $seen, to $top}";
    $r->close;
}

# --- resume positions in the auth frame ------------------------------------

# Signs alice in with the auth frame; right after it, bob posts on both
# workers ($n posts, in flight during the sign-in and the replay). The
# events until both channels are resumed and every post has come.
sub signin_race {
    my ($pid, $resume, $n) = @_;
    my $r = ws_raw(token => $alice, pid => $pid, auth => 'frame',
                   no_ready => 1);
    $r->send_json({ type => 'auth', token => $alice, resume => $resume });
    my @socks = map {
        post_start($pids[$_ % 2], $rid, "race $_", int($_ / 2) % 3)
    } 0 .. $n - 1;
    my $top = max(map { post_end($_)->{seq} } @socks);
    $last = $top;
    my ($ok, @ev) = collect($r, sub {
        my $ev = shift;
        (grep { $_ == $top } seqs_of($rid, @$ev))
            && !grep { !resumed_of($_, @$ev) } keys %$resume
    }, 20);
    return ($r, $ok, $top, @ev);
}

{
    my $seen = $last;
    my @side = map { post_on($pids[0], $sid, "side $_")->{seq} } 1, 2;
    room_post($pids[1], $rid, "missed $_") for 1 .. 3;
    my ($r, $ok, $top, @ev) = signin_race($pids[0],
        { $rid => $seen, $sid => 0 }, 6);
    ok $ok, 'auth frame with resume: both channels resumed, every post came';
    is $ev[0]{type}, 'ready', 'ready comes first';
    is_deeply [seqs_of($rid, @ev)], [$seen + 1 .. $top],
        'the replayed messages, then those posted during the sign-in: in'
        . ' seq order, each once'
        or diag join ' ', map { $_->{type} eq 'message'
            ? "$_->{message}{seq}" : $_->{type} } @ev;
    is_deeply [seqs_of($sid, @ev)], \@side, 'the other channel replayed too';
    my ($res) = resumed_of($sid, @ev);
    is_deeply [@{$res}{qw(from to)}], [0, $side[-1]], 'resumed {from 0, to 2}';
    is_deeply $r->{violations}, [], 'well-formed frames';
    $r->close;
}

# over and over, on either worker, past the ring too
{
    my @bad;
    for my $i (1 .. 8) {
        my $seen = $last;
        room_post($pids[$i % 2], $rid, "away $i.$_") for 1 .. ($i % 3 ? 2 : 9);
        my ($r, $ok, $top, @ev) = signin_race($pids[$i % 2],
                                              { $rid => $seen }, 4);
        my @got = seqs_of($rid, @ev);
        push @bad, "round $i: " . ($ok ? '' : 'incomplete; ') . "@got"
            . ' (' . join(' ', map { $_->{type} eq 'message'
                ? $_->{message}{seq} : $_->{type} } @ev) . ')'
            unless $ok && "@got" eq join ' ', $seen + 1 .. $top;
        $r->close;
    }
    is "@bad", '', 'eight sign-ins with resume while bob posts: each in seq'
        . ' order, each message once';
}

# a channel alice is not in; a seq beyond what the zone knows of (the
# client saw it on the workers of a zone that a reload replaced): taken as
# given, what it claims is not sent again
{
    my $r = ws_raw(token => $alice, auth => 'frame',
                   resume => { '0123456789abcdef01234567' => 3,
                               $rid => $last + 2 });
    my ($ok, @ev) = collect($r, sub { resumed_of($rid, @{ $_[0] }) });
    ok $ok, 'a resume beyond the channel\'s last seq: resumed';
    is_deeply [grep { $_->{type} eq 'error' || $_->{type} eq 'resumed'
                      && $_->{channel_id} ne $rid } @ev], [],
        'a channel alice is not in is ignored';
    is_deeply [seqs_of($rid, @ev)], [], 'nothing replayed';
    my @m = map { room_post($pids[$_ % 2], $rid, "after $_") } 1 .. 3;
    ($ok, @ev) = collect($r, sub { seqs_of($rid, @{ $_[0] }) });
    is_deeply [seqs_of($rid, @ev)], [$m[2]{seq}],
        'the messages up to that seq are not sent, the next one is';
    $r->close;
}

# a malformed resume refuses the sign-in
for my $bad ([], { nope => 1 }, { $rid => -1 }) {
    my $r = ws_raw(token => $alice, auth => 'frame', no_ready => 1);
    $r->send_json({ type => 'auth', token => $alice, resume => $bad });
    my $close = $r->wait_close(5);
    is $close->{code}, 4001, 'auth with resume ' . encode_json($bad) . ': 4001';
    like $close->{reason} // '', qr/^resume /, 'the reason names the resume';
}

error_log_clean();

close $_ for map { @$_ } values %conns;
stop_foko();
done_testing;
