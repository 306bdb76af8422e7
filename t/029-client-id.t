# The client_id of a post, the client's idempotency key ({author_id,
# client_id} is unique).
#
# A double submit: the same author posts the same client_id several times
# at once, over REST and WebSocket, on two workers.  The first post takes a
# seq; the others wait for it and are answered with its message: one
# message, one seq, no tombstone, unread and last_message right.
#
# A client_id used again in another channel is refused (422
# client_id_reused): the message of the other channel, which the author
# may have left, is not shown, and no message is made (a seq taken for it
# holds a tombstone).

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

start_foko(mongo_uri => own_mongo_uri('double'), workers => 2,
           config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my ($alice, $ua) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');

my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Twice', members => [$ub->{id}] }, token => $alice);
my $url = "/api/channels/$ch->{id}/messages";

# the channel cached on both workers
for (1 .. 4) {
    api(GET => $url, undef, token => $alice);
}

my @ws = ws_mojo_workers(token => $alice);
is scalar @ws, 2, 'a WebSocket of alice on each worker';

# 12 posts of one client_id at once; with $ws, 4 of them are WebSocket
# sends (two on each worker): the answers, their status and time
sub burst {
    my ($cid, $ws) = @_;
    my $body = { text => "text of $cid", client_id => $cid };
    my $t0 = time;
    my (@answers, @refs);
    if ($ws) {
        for my $i (0 .. 3) {
            my $ref = "$cid-$i";
            push @refs, [$ws[$i % 2], $ref];
            $ws[$i % 2]->send_json({ type => 'send', ref => $ref,
                                     channel_id => $ch->{id}, %$body });
        }
        wait_until(sub { 0 }, 0.01);
    }
    my @socks = map { api_send(POST => $url, $body, token => $alice) }
        1 .. ($ws ? 8 : 12);
    for my $s (@socks) {
        my ($st, $res) = api_recv($s, 20);
        push @answers, [$st // 'none', $res->{message}, time - $t0];
        close $s;
    }
    for my $r (@refs) {
        my ($c, $ref) = @$r;
        wait_until(sub { $c->events(ref => $ref) }, 20);
        my ($ev) = $c->events(ref => $ref);
        push @answers, [$ev && $ev->{type} eq 'ack' ? 'ack' : 'none',
                        $ev && $ev->{message}, time - $t0];
    }
    return @answers;
}

my %seen;
for my $round (['once', 0], ['twice', 0], ['mixed', 1]) {
    my ($cid, $ws) = @$round;
    my @a = burst($cid, $ws);
    my %codes;
    $codes{ $_->[0] }++ for @a;
    my @rest = grep { $_->[0] ne 'ack' } @a;
    # the first may be a WebSocket send
    my $created = grep { $_->[0] eq '201' } @rest;
    ok $ws ? $created <= 1 : $created == 1, "$cid: one answer is 201";
    is scalar(grep { $_->[0] eq '200' } @rest), scalar(@rest) - $created,
        "$cid: the other REST answers are 200 (a repeat)"
        or diag explain \%codes;
    is scalar(grep { $_->[0] eq 'ack' } @a), $ws ? 4 : 0,
        "$cid: every WebSocket send is acknowledged";
    my %ids = map { ($_->[1]{id} // 'none') => 1 } @a;
    my %seqs = map { ($_->[1]{seq} // 'none') => 1 } @a;
    is scalar(keys %ids), 1, "$cid: all 12 answers carry one message"
        or diag explain [keys %ids];
    is scalar(keys %seqs), 1, "$cid: with one seq";
    my ($m) = map { $_->[1] } @a;
    is $m->{client_id}, $cid, "$cid: the message of the client_id";
    ok !$m->{deleted}, "$cid: not a tombstone";
    my $slowest = (sort { $b <=> $a } map { $_->[2] } @a)[0];
    cmp_ok $slowest, "<", 2, "$cid: all answered within 2 s";
    note sprintf "%s: the slowest answer took %.3f s", $cid, $slowest;
    $seen{ $m->{seq} } = $m;
}

is_deeply [sort { $a <=> $b } keys %seen], [1, 2, 3],
    'three client_ids took seqs 1, 2 and 3';

($status, my $page) = api(GET => $url, undef, token => $bob);
is $status, 200, 'history';
is_deeply [map { [$_->{seq}, $_->{client_id} // '', $_->{deleted} ? 1 : 0] }
           @{ $page->{messages} }],
    [[1, 'once', 0], [2, 'twice', 0], [3, 'mixed', 0]],
    'holds three messages, no tombstone, nothing burnt';

($status, my $list) = api(GET => '/api/channels', undef, token => $bob);
my ($c) = grep { $_->{id} eq $ch->{id} } @$list;
is $c->{unread}, 3, 'bob has 3 unread';
is $c->{last_seq}, 3, 'the last seq is 3';
is $c->{last_message}{client_id}, 'mixed', 'the last message is the last post';
ok !$c->{last_message}{deleted}, 'not a tombstone';

# a later repeat, once stored, is still the same message
($status, my $res) = api(POST => $url,
    { text => 'text of once', client_id => 'once' }, token => $alice);
is $status, 200, 'a later repeat is 200';
is $res->{message}{id}, $seen{1}{id}, 'with the same message';

# --- a client_id used again in another channel ----------------------------

($status, my $other) = api(POST => '/api/channels',
    { name => 'Other', members => [$ub->{id}] }, token => $alice);
my $ourl = "/api/channels/$other->{id}/messages";
api(GET => $ourl, undef, token => $alice) for 1 .. 4;

($status, $res) = api(POST => $ourl,
    { text => 'text of once', client_id => 'once' }, token => $alice);
is $status, 422, 'a client_id of another channel is 422';
is $res->{error}{code}, 'client_id_reused', 'client_id_reused';
ok !exists $res->{message}, "the other channel's message is not shown";

$ws[0]->send_json({ type => 'send', ref => 'reuse-1',
                    channel_id => $other->{id}, text => 'again',
                    client_id => 'twice' });
wait_until(sub { $ws[0]->events(ref => 'reuse-1') }, 10);
my ($ev) = $ws[0]->events(ref => 'reuse-1');
is $ev && $ev->{type}, 'error', 'a WebSocket send of it is an error';
is $ev && $ev->{code}, 'client_id_reused', 'client_id_reused';

# bob posts in Twice, leaves it, and uses the client_id in Other
($status) = api(POST => $url, { text => 'bye', client_id => 'bob-1' },
                token => $bob);
is $status, 201, 'bob posts in Twice';
($status) = api(DELETE => "/api/channels/$ch->{id}/members/me", undef,
                token => $bob);
is $status, 204, 'and leaves it';
($status, $res) = api(POST => $ourl, { text => 'hi', client_id => 'bob-1' },
                      token => $bob);
is $status, 422, "his client_id of a channel he left is 422";
unlike json()->encode($res // {}), qr/bye/, 'without its message';

($status, $res) = api(POST => $ourl,
    { text => 'first here', client_id => 'here-1' }, token => $alice);
is $status, 201, 'a new client_id in the other channel';

$_->close for @ws;

unlike error_log_text(), qr/\[(error|crit|alert|emerg)\]/,
    'nothing logged at error or above';

# after a restart the zone has no mark of the client_ids: MongoDB says

stop_foko();
start_foko(mongo_uri => own_mongo_uri('double'), workers => 2);

# first with the channel not cached (MongoDB is asked before a seq is
# taken), then cached (the seq taken holds a tombstone)
for my $try ('not cached', 'cached') {
    ($status, $res) = api(POST => $ourl,
        { text => 'text of mixed', client_id => 'mixed' }, token => $alice);
    is $status, 422, "after a restart, $try: still 422";
    is $res->{error}{code}, 'client_id_reused', 'client_id_reused';
    api(GET => $ourl, undef, token => $alice) for 1 .. 4;
}

($status, $res) = api(POST => $ourl,
    { text => 'second here', client_id => 'here-2' }, token => $alice);
is $status, 201, 'the next post in the other channel';
($status, $page) = api(GET => $ourl, undef, token => $bob);
my @msgs = @{ $page->{messages} };
is_deeply [map { $_->{seq} } @msgs], [1 .. $res->{message}{seq}],
    'its history has no gap';
is_deeply [map { $_->{client_id} } grep { !$_->{deleted} } @msgs],
    ['here-1', 'here-2'], 'and only its own messages';

unlike error_log_text(), qr/\[(error|crit|alert|emerg)\]/,
    'nothing logged at error or above';

stop_foko();

done_testing();
