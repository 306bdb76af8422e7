# The zone keeps each known user's account (username, email, password
# version) with the channel ids: a WebSocket sign-in and GET /api/me of
# a user the zone knows need no MongoDB, and still work while it is
# paused (SIGSTOP).  A revocation is checked with a password reset: its
# answer comes only after the zone forgot the account, so the token of
# the old version is refused at once on both workers (the account is
# read again from MongoDB, counted so), and while MongoDB is paused again
# the zone refuses the old token and admits the new one.  A refused
# sign-in is not counted; a refused GET /api/me is.

use strict;
use warnings;

use Test::More;

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;
use FokoChat::Server qw(token_claims forge_token);

my ($uri, $db) = ferretdb_start();
start_foko(mongo_uri => $uri,
           workers => 2,
           config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my @pids = wait_workers(2);
is scalar @pids, 2, 'two workers';

sub counted { zone_counted(accounts => @_) }

my $email = unique_email('ana');
my ($token, $ana) = signup(username => 'ana', email => $email);
my (undef, $bo) = signup(username => 'bo');
my ($st, $room) = api(POST => '/api/channels',
                      { name => 'Room', members => [$bo->{id}] },
                      token => $token);
is $st, 201, 'a channel of ana and bo';

sub me {
    my ($t, $what, $want) = @_;
    my ($st, $res) = api(GET => '/api/me', undef, token => $t,
                         timeout => 5);
    is $st, $want, "$what: GET /api/me $want";
    return $res;
}

sub signin {
    my ($t, $i) = @_;
    my $c = eval { ws_mojo(token => $t, pid => $pids[$i], timeout => 5) };
    return $@ =~ /did not open: (\S+)/ ? $1 : "$@" if !$c;
    my @ids = map { $_->{id} } @{ $c->{ready}{channels} };
    $c->close;
    return "ready @ids";
}

is_deeply counted(sub { me($token, 'unknown user', 200) }), [0, 1],
    'a user the zone does not know: GET /api/me reads MongoDB';
is_deeply counted(sub {
    is signin($token, 0), "ready $room->{id}", 'first sign-in';
}), [0, 1], 'the first sign-in reads the account from MongoDB';
is_deeply counted(sub {
    is signin($token, 1), "ready $room->{id}", 'sign-in on the other worker';
    me($token, 'known user', 200);
}), [2, 0], 'then the sign-in and GET /api/me take it from the zone';

# --- MongoDB paused: the known user still signs in ---------------------------

kill STOP => $db->{pid};

is_deeply counted(sub {
    for my $i (0, 1) {
        is signin($token, $i), "ready $room->{id}",
           "paused: sign-in on worker $i";
    }
    my $me = me($token, 'paused', 200);
    is_deeply $me->{user}, { id => $ana->{id}, username => $ana->{username},
                             email => $email },
        'paused: GET /api/me answers the account';
}), [3, 0], 'paused: all three from the zone';

my $claims = token_claims($token);
my $older = forge_token({ %$claims, ver => ($claims->{ver} // 0) + 1 },
                        jwt_secret());
is signin($older, 0), '4001',
   'paused: a token of another password version is refused';
me($older, 'paused, another version', 401);

kill CONT => $db->{pid};

# --- a password reset revokes the old token at once --------------------------

my $reset = forge_token({ %$claims, typ => 'reset' }, jwt_secret());
my $res;
($st, $res) = api(POST => '/api/auth/password/reset',
                  { token => $reset, password => 'brand new horse' },
                  timeout => 10);
is $st, 200, 'password reset';
my $new = $res->{token};

is_deeply counted(sub {
    is signin($token, 0), '4001', 'old token refused on worker 0';
    is signin($token, 1), '4001', 'old token refused on worker 1';
    my $r = me($token, 'old token after the reset', 401);
    is $r->{error}{code}, 'invalid_token', 'invalid_token';
}), [0, 1], 'the reset made the zone forget: MongoDB was asked';

is signin($new, 0), "ready $room->{id}", 'the new token signs in';

kill STOP => $db->{pid};
is_deeply counted(sub {
    is signin($new, 1), "ready $room->{id}", 'paused: the new token';
    me($new, 'paused, new token', 200);
    is signin($token, 1), '4001', 'paused: the old one still refused';
    me($token, 'paused, old token', 401);
}), [3, 0], 'paused: the zone holds the new version';
kill CONT => $db->{pid};

error_log_clean();

stop_foko();
ferretdb_stop($db);
done_testing();
