# Messages over two workers: seq strictly +1 across workers, idempotent
# posts by client_id, history pages, edits and tombstones by the author
# only, read marks and unread counts, bad input.

use strict;
use warnings;

use Test::More;

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

start_foko(workers => 2,
           http_config => "    foko_chat_max_message_size 100;\n");

my ($alice, $ua) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');
my ($eve) = signup(username => 'eve');

my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Room', members => [$ub->{id}] }, token => $alice);
my $url = "/api/channels/$ch->{id}/messages";

# one message

($status, my $res) = api(POST => $url, { text => 'hello', client_id => 'c1' },
                         token => $alice);
is $status, 201, 'a post is 201 once stored';
my $first = $res->{message};
is $first->{seq}, 1, 'the first message has seq 1';
is $first->{text}, 'hello', 'its text';
is_deeply $first->{author}, { id => $ua->{id}, username => $ua->{username} },
    'its author';
is $first->{channel_id}, $ch->{id}, 'its channel';
like $first->{created_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
    'a UTC timestamp';

($status, $res) = api(POST => $url, { text => 'hello', client_id => 'c1' },
                      token => $alice);
is $status, 200, 'the same client_id again is 200';
is_deeply $res->{message}, $first, 'with the very same message';

# many posts at once, from two users, over both workers

my @socks;
for my $i (1 .. 40) {
    push @socks, api_send(POST => $url,
        { text => "m$i", client_id => "burst-$i" },
        token => $i % 2 ? $alice : $bob);
}
my @seqs;
for my $s (@socks) {
    my ($st, $r) = api_recv($s, 20);
    push @seqs, $r->{message}{seq} if $st == 201;
}
close $_ for @socks;
is scalar @seqs, 40, 'forty concurrent posts are stored';
is_deeply [sort { $a <=> $b } @seqs], [2 .. 41],
    'with seqs 2 to 41: no gap, no repeat';

# history

($status, $res) = api(GET => $url, undef, token => $bob);
is $status, 200, 'history';
is_deeply [map { $_->{seq} } @{ $res->{messages} }], [1 .. 41],
    'the newest page, in seq order';
ok !$res->{has_more}, 'and nothing more';

($status, $res) = api(GET => "$url?limit=10", undef, token => $bob);
is_deeply [map { $_->{seq} } @{ $res->{messages} }], [32 .. 41],
    'a page of ten is the newest ten';
ok $res->{has_more}, 'with more before';

($status, $res) = api(GET => "$url?limit=10&before=32", undef, token => $bob);
is_deeply [map { $_->{seq} } @{ $res->{messages} }], [22 .. 31],
    'before= pages back';

($status, $res) = api(GET => "$url?after=38", undef, token => $bob);
is_deeply [map { $_->{seq} } @{ $res->{messages} }], [39 .. 41],
    'after= gives what follows';
ok !$res->{has_more}, 'up to the newest';

($status, $res) = api(GET => "$url?after=0&limit=5", undef, token => $bob);
is_deeply [map { $_->{seq} } @{ $res->{messages} }], [1 .. 5],
    'after=0 starts at the oldest';
ok $res->{has_more}, 'with more after';

for my $q ('limit=0', 'limit=1000', 'limit=x', 'before=-1', 'after=x') {
    ($status, $res) = api(GET => "$url?$q", undef, token => $bob);
    is $status, 400, "$q is 400";
}

# edits and tombstones

my $mid = $first->{id};
($status, $res) = api(PATCH => "$url/$mid", { text => 'hello, all' },
                      token => $alice);
is $status, 200, 'the author edits';
is $res->{message}{text}, 'hello, all', 'the new text';
ok $res->{message}{edited_at}, 'marked edited';
is $res->{message}{seq}, 1, 'in place';

($status) = api(PATCH => "$url/$mid", { text => 'hacked' }, token => $bob);
is $status, 404, 'another member cannot edit it';
($status) = api(DELETE => "$url/$mid", undef, token => $bob);
is $status, 404, 'nor delete it';

($status, $res) = api(DELETE => "$url/$mid", undef, token => $alice);
is $status, 200, 'the author deletes';
ok $res->{message}{deleted}, 'leaving a tombstone';
is $res->{message}{text}, '', 'without the text';

($status, $res) = api(GET => "$url?after=0&limit=1", undef, token => $bob);
ok $res->{messages}[0]{deleted}, 'the tombstone stays in history';
is $res->{messages}[0]{seq}, 1, 'at its seq';

($status) = api(PATCH => "$url/$mid", { text => 'back' }, token => $alice);
is $status, 404, 'a deleted message is not edited';

# not a member: nothing exists

($status) = api(GET => $url, undef, token => $eve);
is $status, 404, 'a non-member reads no history';
($status) = api(POST => $url, { text => 'hi' }, token => $eve);
is $status, 404, 'nor posts';
($status) = api(PATCH => "$url/$mid", { text => 'x' }, token => $eve);
is $status, 404, 'nor edits';

# bad input, nothing written

my @bad = (
    [{ text => '' }, 400, 'an empty text'],
    [{ text => " \n\t" }, 400, 'a blank text'],
    [{ text => 42 }, 400, 'a number for text'],
    [{}, 400, 'no text'],
    [{ text => 'x' x 101 }, 413, 'a text over foko_chat_max_message_size'],
    [{ text => "bell\x07" }, 400, 'a control character'],
    [{ text => 'ok', client_id => 'x' x 65 }, 400, 'a long client_id'],
);
for my $case (@bad) {
    ($status, $res) = api(POST => $url, $case->[0], token => $alice);
    is $status, $case->[1], "$case->[2] is $case->[1]";
}

($status, $res) = api(POST => $url, '{"text":"\\u00e9t\\u00e9 \\ud83c\\udf1e"}',
                      token => $alice);
is $status, 201, 'unicode text is fine';
is $res->{message}{seq}, 42, 'and takes the next seq: nothing was spent';
is $res->{message}{text}, "\x{e9}t\x{e9} \x{1f31e}", 'stored as sent';

($status) = api(POST => $url, "{\"text\":\"\xff\xfe\"}", token => $alice);
is $status, 400, 'invalid UTF-8 is 400';

($status) = api(GET => "/api/channels/$ch->{id}/messages/" . ('0' x 24),
                undef, token => $alice);
is $status, 405, 'a message has no GET of its own';
($status) = api(PATCH => "$url/not-an-id", { text => 'x' }, token => $alice);
is $status, 404, 'a malformed message id is 404';
($status) = api(PATCH => "$url/" . ('0' x 24), { text => 'x' },
                token => $alice);
is $status, 404, 'an unknown message id is 404';

# read marks

($status, $res) = api(GET => '/api/channels', undef, token => $bob);
my ($room) = grep { $_->{id} eq $ch->{id} } @$res;
is $room->{last_seq}, 42, 'the list has the last seq';
is $room->{last_message}{seq}, 42, 'and the last message';
is $room->{unread}, 42, 'all of it unread for bob';

($status, $res) = api(POST => "/api/channels/$ch->{id}/read", { seq => 40 },
                      token => $bob);
is $status, 200, 'bob marks read up to 40';
($status, $res) = api(POST => "/api/channels/$ch->{id}/read", { seq => 30 },
                      token => $bob);
is $status, 200, 'a lower mark is accepted';
($status, $res) = api(GET => '/api/channels', undef, token => $bob);
($room) = grep { $_->{id} eq $ch->{id} } @$res;
is $room->{unread}, 2, 'but marks only rise: two unread';

($status) = api(POST => "/api/channels/$ch->{id}/read", { seq => -1 },
                token => $bob);
is $status, 400, 'a negative mark is 400';

# a mark past the last message is the last message, so that what comes
# later is unread

($status, $res) = api(POST => "/api/channels/$ch->{id}/read",
                      { seq => 1_000_000_000 }, token => $bob);
is $status, 200, 'a mark past the last seq is accepted';
is $res->{seq}, 42, 'as the last seq';
($status, $res) = api(POST => $url, { text => 'after the far mark' },
                      token => $alice);
is $res->{message}{seq}, 43, 'alice posts again';
($status, $res) = api(GET => '/api/channels', undef, token => $bob);
($room) = grep { $_->{id} eq $ch->{id} } @$res;
is $room->{unread}, 1, 'and bob has it unread';

($status, my $quiet) = api(POST => '/api/channels',
    { name => 'Quiet', members => [$ub->{id}] }, token => $alice);
($status, $res) = api(POST => "/api/channels/$quiet->{id}/read",
                      { seq => 1_000_000_000 }, token => $bob);
is_deeply [$status, $res->{seq}], [200, 0],
    'in a channel without messages, a far mark is 0';
($status) = api(POST => "/api/channels/$quiet->{id}/messages",
                { text => 'first' }, token => $alice);
($status, $res) = api(GET => "/api/channels/$quiet->{id}", undef,
                      token => $bob);
is $res->{unread}, 1, 'and its first message is unread';

error_log_clean('nothing above info in the log');

stop_foko();

done_testing;
