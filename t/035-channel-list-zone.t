# GET /api/channels from the zone: once the zone knows a user, its read
# marks and every one of its channels, the list is answered with no
# MongoDB query, also while MongoDB is paused (SIGSTOP).  After every
# change (posts by others and own, read marks over REST and WebSocket, a
# mark past the end or below the one kept, an edit, a delete, a rename, a
# leave, a join), the list with MongoDB paused equals what MongoDB says:
# each channel as GET /api/channels/:id (which always reads MongoDB)
# describes it, in the order of the list MongoDB answered.  Counted in
# /status and in the metrics (channel_lists from_zone / from_mongodb).

use strict;
use warnings;

use Test::More;

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my ($uri, $db) = ferretdb_start();
start_foko(mongo_uri => $uri,
           workers => 2,
           config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }

        location = /metrics {
            foko_chat_status prometheus;
        }
_EOC_

my @pids = wait_workers(2);
is scalar @pids, 2, 'two workers';

sub counted { zone_counted(channel_lists => @_) }

my ($ana, $ua) = signup(username => 'ana');
my ($bo, $ub) = signup(username => 'bo');

sub call {
    my ($method, $path, $body, $token, $want, $what) = @_;
    my ($st, $res) = api($method => $path, $body, token => $token,
                         timeout => 10);
    is $st, $want, "$what: $method $path $want";
    return $res;
}

my $room = call(POST => '/api/channels',
                { name => 'Room', members => [$ub->{id}] }, $ana, 201,
                'a channel of ana and bo');
my $talk = call(POST => '/api/channels', { members => [$ub->{id}] }, $ana,
                201, 'a direct conversation');
my $solo = call(POST => '/api/channels', { name => 'Solo', members => [] },
                $ana, 201, 'a channel of ana alone');

my $n = 0;
sub post {
    my ($token, $ch, $what) = @_;
    my $res = call(POST => "/api/channels/$ch->{id}/messages",
                   { text => "$what " . ++$n, client_id => "c$$-$n" },
                   $token, 201, $what);
    return $res->{message};
}

post($bo, $room, 'bo in Room') for 1 .. 3;
post($ana, $room, 'ana in Room');
post($bo, $talk, 'bo in Talk') for 1 .. 2;

# both stay online throughout: "online" does not move between two lists
my $wa = ws_mojo(token => $ana, timeout => 5);
my $wb = ws_mojo(token => $bo, timeout => 5);

# the list while MongoDB is paused equals what MongoDB says
sub check {
    my ($what, %want) = @_;
    my ($lst, $list, undef, $raw) = api(GET => '/api/channels', undef,
                                        token => $ana, timeout => 10);
    is $lst, 200, "$what: GET /api/channels 200";
    my @ref = map {
        call(GET => "/api/channels/$_->{id}", undef, $ana, 200,
             "$what, from MongoDB")
    } @$list;
    is_deeply $list, \@ref, "$what: the list is what MongoDB says";
    is_deeply { map { $_->{name} // 'direct' => $_->{unread} } @$list },
        $want{unread}, "$what: unread counts" if $want{unread};

    kill STOP => $db->{pid};
    is_deeply counted(sub {
        for my $i (1 .. 3) {
            my ($st, $paused, undef, $bytes) = api(GET => '/api/channels',
                                                   undef, token => $ana,
                                                   timeout => 5);
            is $st, 200, "$what, paused: list $i";
            is_deeply $paused, \@ref, "$what, paused: list $i is the same";
            is $bytes, $raw, "$what, paused: byte for byte";
        }
    }), [3, 0], "$what, paused: all three from the zone";
    kill CONT => $db->{pid};
    return $list;
}

my $first;
is_deeply counted(sub {
    $first = call(GET => '/api/channels', undef, $ana, 200, 'first list');
}), [0, 1], 'the first list reads MongoDB';
is scalar @$first, 3, 'three channels';
check('posts by others and own',
      unread => { Room => 4, direct => 2, Solo => 0 });

call(POST => "/api/channels/$room->{id}/read", { seq => 2 }, $ana, 200,
     'mark read over REST');
check('after a mark over REST', unread => { Room => 2, direct => 2, Solo => 0 });

call(POST => "/api/channels/$room->{id}/read", { seq => 1 }, $ana, 200,
     'a lower mark');
check('marks only rise', unread => { Room => 2, direct => 2, Solo => 0 });

sub ws_read {
    my ($ch, $seq, $stored) = @_;
    $wb->forget;
    $wa->send_json({ type => 'read', channel_id => $ch->{id}, seq => $seq });
    ok wait_until(sub {
        grep { $_->{user_id} eq $ua->{id} && $_->{seq} == $stored }
            $wb->events(type => 'read', channel_id => $ch->{id})
    }, 5), "mark $seq over WebSocket stored as $stored";
}

ws_read($talk, 1, 1);
check('after a mark over WebSocket',
      unread => { Room => 2, direct => 1, Solo => 0 });
ws_read($room, 1e12, 4);
check('a mark past the last seq', unread => { Room => 0, direct => 1, Solo => 0 });

post($bo, $room, 'bo again') for 1 .. 2;
my $own = post($ana, $room, 'ana again');
check('new posts, own included',
      unread => { Room => 3, direct => 1, Solo => 0 });

call(PATCH => "/api/channels/$room->{id}/messages/$own->{id}",
     { text => 'edited' }, $ana, 200, 'edit');
my $list = check('after an edit');
my ($r) = grep { $_->{id} eq $room->{id} } @$list;
is $r->{last_message}{text}, 'edited', 'the last message is the edited one';

my $gone = post($bo, $talk, 'bo to delete');
call(DELETE => "/api/channels/$talk->{id}/messages/$gone->{id}", undef,
     $bo, 200, 'delete');
$list = check('after a delete', unread => { Room => 3, direct => 2, Solo => 0 });
($r) = grep { $_->{id} eq $talk->{id} } @$list;
ok $r->{last_message}{deleted}, 'the last message is the tombstone';

call(PATCH => "/api/channels/$room->{id}", { name => 'Hall' }, $bo, 200,
     'rename');
check('after a rename', unread => { Hall => 3, direct => 2, Solo => 0 });

my ($st) = api(DELETE => "/api/channels/$solo->{id}/members/me", undef,
               token => $ana, timeout => 10);
is $st, 204, 'ana leaves Solo';
check('after a leave', unread => { Hall => 3, direct => 2 });

my $club = call(POST => '/api/channels', { name => 'Club', members => [] },
                $bo, 201, 'bo alone in Club');
post($bo, $club, 'bo in Club');
my $me = call(GET => '/api/me', undef, $ana, 200, 'ana');
call(POST => "/api/channels/$club->{id}/invite",
     { email => $me->{user}{email} }, $bo, 200, 'bo invites ana');
check('after a join', unread => { Hall => 3, direct => 2, Club => 1 });

# --- a user the zone learns from the list itself (no sign-in) ---------------

my ($cy, $uc) = signup(username => 'cy');
call(POST => '/api/channels', { name => 'Trio', members => [$uc->{id}] },
     $bo, 201, 'a channel of bo and cy');
my $cy_list;
is_deeply counted(sub {
    $cy_list = call(GET => '/api/channels', undef, $cy, 200, 'cy lists');
}), [0, 1], 'a user the zone does not know: from MongoDB';
kill STOP => $db->{pid};
is_deeply counted(sub {
    my ($st, $again) = api(GET => '/api/channels', undef, token => $cy,
                           timeout => 5);
    is_deeply $again, $cy_list, 'paused: the same list';
}), [1, 0], 'then from the zone';
kill CONT => $db->{pid};

# --- the metrics --------------------------------------------------------------

my (undef, undef, undef, $metrics) = api(GET => '/metrics', undef,
                                         timeout => 5);
like $metrics // '', qr/^foko_chat_channel_lists_total\{from="zone"\} [1-9]/m,
    'metrics: lists from the zone';
like $metrics // '', qr/^foko_chat_channel_lists_total\{from="mongodb"\} [1-9]/m,
    'metrics: lists from MongoDB';

$wa->close;
$wb->close;

error_log_clean();

stop_foko();
ferretdb_stop($db);
done_testing();
