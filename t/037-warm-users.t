# A fresh zone is warmed up with the accounts too, when it could read
# every channel: each user's channel ids come from the channels' members,
# so the first WebSocket sign-in after a restart and GET /api/me need no
# MongoDB (checked with FerretDB paused), and the channels each user is
# ready with are exactly theirs.  An invited account that has not signed
# up is not kept.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my ($uri, $db) = ferretdb_start();
my $ws = <<'_EOC_';
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

start_foko(workers => 2, mongo_uri => $uri, config => $ws);

my ($ana, $a) = signup(username => 'ana');
my ($bo, $b) = signup(username => 'bo');
my ($cy, $c) = signup(username => 'cy');
my ($st, $room) = api(POST => '/api/channels',
                      { name => 'Room', members => [$b->{id}] },
                      token => $ana);
is $st, 201, 'Room: ana and bo';
my $side;
($st, $side) = api(POST => '/api/channels',
                   { name => 'Side', members => [$c->{id}] }, token => $ana);
is $st, 201, 'Side: ana and cy';
($st) = api(POST => "/api/channels/$room->{id}/invite",
            { email => unique_email('dee') }, token => $bo);
ok $st == 200 || $st == 201, 'an invitation by email to Room';

stop_foko();

# a new nginx: a new zone, warmed up in the background

start_foko(workers => 2, mongo_uri => $uri, config => $ws);

my $users;
for (1 .. 100) {
    last if ($users) = error_log_text() =~ /warmed up with .* and (\d+) users/;
    sleep 0.1;
}
is $users, 3, 'the zone is warmed up with the three signed-up users';

sub accounts {
    my ($s, $res) = api(GET => '/status', undef, timeout => 5);
    return [@{ $res->{accounts} }{qw(from_zone from_mongodb)}];
}

sub ready {
    my ($token) = @_;
    my $conn = eval { ws_mojo(token => $token, timeout => 5) };
    return $@ =~ /did not open: (\S+)/ ? $1 : "$@" if !$conn;
    my @ids = sort map { $_->{id} } @{ $conn->{ready}{channels} };
    $conn->close;
    return "@ids";
}

my $before = accounts();

kill STOP => $db->{pid};

is ready($ana), join(' ', sort $room->{id}, $side->{id}),
   'paused: ana is ready with Room and Side';
is ready($bo), $room->{id}, 'paused: bo with Room';
is ready($cy), $side->{id}, 'paused: cy with Side';

my $me;
($st, $me) = api(GET => '/api/me', undef, token => $cy, timeout => 5);
is $st, 200, 'paused: GET /api/me';
is $me->{user}{username}, $c->{username}, 'the account from the zone';

kill CONT => $db->{pid};

my $after = accounts();
is_deeply [$after->[0] - $before->[0], $after->[1] - $before->[1]], [4, 0],
    'all four from the zone, none from MongoDB';

error_log_clean();

stop_foko();
ferretdb_stop($db);
done_testing();
