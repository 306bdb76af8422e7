# The shared zone caches one database.  A reload that points
# foko_chat_mongo_uri at another database starts a fresh zone, as a new
# foko_chat_shm_size does: nothing the zone learnt from the old database
# (a user's channel ids, an account, channels, seqs) is served from the
# new one.  Here the new database is a copy of the accounts only, as a
# migration would leave it: the same user ids, none of the channels.  A
# reload that changes only the URI's options (or its credentials) keeps
# the zone.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;
use FokoChat::Ws qw(ws_mojo wait_until);

plan skip_all => 'python3-pymongo is not installed (scripts/test.sh installs it)'
    if system('/usr/bin/python3', '-c', 'import pymongo') != 0;

my $uri_a = own_mongo_uri('zone38a');
my $uri_b = own_mongo_uri('zone38b');

my $ws = <<'_EOC_';
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

start_foko(workers => 1, master => 1, mongo_uri => $uri_a, config => $ws);

my ($ana, $a) = signup(username => 'ana');
my ($bo, $b) = signup(username => 'bo');
my ($cy, $c) = signup(username => 'cy');
my ($st, $room) = api(POST => '/api/channels',
                      { name => 'Room', members => [$b->{id}, $c->{id}] },
                      token => $ana);
is $st, 201, 'Room in the first database';
($st) = api(POST => "/api/channels/$room->{id}/messages", { text => 'hi' },
            token => $ana);
is $st, 201, 'a message in Room';

sub ready {
    my ($token) = @_;
    my $conn = eval { ws_mojo(token => $token, timeout => 5) };
    return $@ =~ /did not open: (.*)/ ? "closed: $1" : "failed: $@"
        if !$conn;
    my @ids = sort map { $_->{id} } @{ $conn->{ready}{channels} };
    $conn->close;
    return "ready: @ids";
}

# what the sign-ins from the zone and from MongoDB moved by while $code ran
sub signins {
    my ($code) = @_;
    my $count = sub {
        my $w = zone()->{websocket};
        return ($w->{signins_from_zone}, $w->{signins_from_mongodb});
    };
    my ($zone, $mongo) = $count->();
    $code->();
    my ($zone2, $mongo2) = $count->();
    return [$zone2 - $zone, $mongo2 - $mongo];
}

sub zone {
    my ($s, $res) = api(GET => '/status', undef, timeout => 5);
    die "GET /status: $s\n" unless $s == 200;
    return $res;
}

# the zone learns every account and its channels by a sign-in
for ([ana => $ana], [bo => $bo], [cy => $cy]) {
    is ready($_->[1]), "ready: $room->{id}", "$_->[0] is ready with Room";
}
is zone()->{zone}{reloads}, 0, 'a fresh zone at start';

# the accounts of ana and bo copied to the second database, as they are
my $copied = qx{/usr/bin/python3 -c '
import sys, pymongo
a = pymongo.MongoClient(sys.argv[1]).get_default_database()
b = pymongo.MongoClient(sys.argv[2]).get_default_database()
b.users.drop()
for doc in a.users.find({"username": {"\$in": sys.argv[3:]}}):
    b.users.insert_one(doc)
print(b.users.count_documents({}))
' '$uri_a' '$uri_b' '$a->{username}' '$b->{username}'};
chomp $copied;
is $copied, 2, 'ana and bo copied to the second database';

sub point_at {
    my ($from, $to) = @_;
    edit_conf(sub { s/\Q$from\E/$to/ });
    my (undef, $new, $gone) = reload_nginx(gone => 1);
    die "the old worker does not exit\n" unless @$new && $gone;
    is zone()->{pid}, $new->[0], 'the new worker answers';
}

# a reload that changes only an option keeps the zone and what it knows
my $uri_a2 = $uri_a . ($uri_a =~ /\?/ ? '&' : '?') . 'appname=foko38';
point_at($uri_a, $uri_a2);
is zone()->{zone}{reloads}, 1, 'another option: the zone is kept';
my $counted = signins(sub {
    is ready($bo), "ready: $room->{id}", 'bo is ready with Room';
});
is_deeply $counted, [1, 0], 'bo signed in from the zone';

# the first database after the second: a fresh zone, nothing of the first
point_at($uri_a2, $uri_b);
is zone()->{zone}{reloads}, 0, 'another database: a fresh zone';

$counted = signins(sub {
    is ready($ana), 'ready: ', 'ana is ready with no channel: Room is not '
                               . 'in this database';
});
is_deeply $counted, [0, 1], 'her channels read from the new database';

like ready($cy), qr/^closed: .*4001/,
     'cy, who is not in this database, is refused';
($st) = api(GET => '/api/me', undef, token => $cy);
is $st, 401, 'GET /api/me of cy: 401';
my $list;
($st, $list) = api(GET => '/api/channels', undef, token => $ana);
is $st, 200, 'GET /api/channels of ana';
is ref $list, 'ARRAY', 'a list';
is_deeply [map { $_->{id} } @{ ref $list eq "ARRAY" ? $list : [] }], [],
          'no channel of the first database is listed';

# the chat goes on in the new database
my $other;
($st, $other) = api(POST => '/api/channels',
                    { name => 'Other', members => [$b->{id}] },
                    token => $ana);
is $st, 201, 'Other in the new database';
my $conn = ws_mojo(token => $bo, timeout => 5);
is_deeply [map { $_->{id} } @{ $conn->{ready}{channels} }], [$other->{id}],
          'bo is ready with Other only';
($st) = api(POST => "/api/channels/$other->{id}/messages",
            { text => 'new home' }, token => $ana);
is $st, 201, 'a message in Other';
my $got = wait_until(sub {
    grep { $_->{type} eq 'message' } $conn->events
}, 5);
ok $got, 'it reaches bo live';
my ($m) = grep { $_->{type} eq 'message' } $conn->events;
is $m->{message}{seq}, 1, 'with seq 1: no counter of the old zone';
$conn->close;

error_log_clean();

stop_foko();
done_testing();
