# The shared zone keeps each user's channel ids: the first WebSocket
# sign-in of a user reads them from MongoDB, the next ones (on either
# worker) take them from the zone, and the status page counts both.  The
# zone stays exact: a create adds the channel to its members' ids in
# place, an invite or a leave makes the zone load that one user again,
# a rename or another member's leave changes nothing of the user's.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

start_foko(mongo_uri => own_mongo_uri('zone33'),
           workers => 2,
           config => <<'_EOC_');
        location = /metrics {
            foko_chat_status prometheus;
        }

        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my @pids = wait_workers(2);
is scalar @pids, 2, 'two workers';

sub metrics {
    my ($status, undef, $body) = http_request(build_request('GET /metrics'),
                                              10);
    die "GET /metrics: $status\n" unless $status == 200;
    my %v = map { /^(\S+) (\S+)$/ ? ($1 => $2) : () }
            grep { !/^#/ } split /\n/, $body;
    return \%v;
}

sub counts {
    my $m = metrics();
    return ($m->{'foko_chat_signins_total{from="zone"}'} // -1,
            $m->{'foko_chat_signins_total{from="mongodb"}'} // -1);
}

my %users;
for my $name (qw(ana ben cy)) {
    my $email = unique_email($name);
    my ($token, $user) = signup(username => $name, email => $email);
    $users{$name} = { token => $token, id => $user->{id}, email => $email };
}
my ($ana, $ben, $cy) = @users{qw(ana ben cy)};

my %want;    # ben's channel ids

# a sign-in of ben on worker $i: its channel ids, and from where they came
sub signin {
    my ($what, $i, $from) = @_;
    my ($zone0, $mongo0) = counts();
    my $c = ws_mojo(token => $ben->{token}, pid => $pids[$i]);
    my $ids = join ' ', sort map { $_->{id} } @{ $c->{ready}{channels} };
    $c->close;
    is $ids, join(' ', sort keys %want),
       "$what: ben's sign-in on worker $i lists his channels";
    my ($zone, $mongo) = counts();
    is_deeply [$zone - $zone0, $mongo - $mongo0],
              $from eq 'zone' ? [1, 0] : [0, 1],
              "$what: ben's sign-in on worker $i took them from $from";
}

sub change {
    my ($method, $path, $token, $body, $want_st) = @_;
    my ($st, $res) = api($method, $path, $body, token => $token);
    is $st, $want_st, "$method $path: $want_st";
    return $res;
}

my $ch = change(POST => '/api/channels', $ana->{token},
             { name => 'First', members => [$ben->{id}] }, 201);
$want{ $ch->{id} } = 1;

signin('first', 0, 'mongodb');
signin('again', 0, 'zone');
signin('on the other worker', 1, 'zone');

my ($zone, $mongo) = counts();
is metrics()->{foko_chat_cache_users}, 1, 'the zone holds one user';

my $ch2 = change(POST => '/api/channels', $ana->{token},
              { name => 'Second', members => [$cy->{id}] }, 201);
signin('after a create ben is not in', 1, 'zone');

change(POST => "/api/channels/$ch2->{id}/invite", $ana->{token},
    { email => $ben->{email} }, 200);
$want{ $ch2->{id} } = 1;
signin('after the invite', 0, 'mongodb');
signin('after the invite, again', 1, 'zone');

change(PATCH => "/api/channels/$ch2->{id}", $cy->{token},
    { name => 'Renamed' }, 200);
signin('after the rename', 1, 'zone');
signin('after the rename, again', 0, 'zone');

my $ch3 = change(POST => '/api/channels', $cy->{token},
              { name => 'Third', members => [$ben->{id}] }, 201);
$want{ $ch3->{id} } = 1;
signin('after a create with him', 0, 'zone');
signin('after the create, again', 1, 'zone');

change(DELETE => "/api/channels/$ch->{id}/members/me", $ben->{token}, undef,
    204);
delete $want{ $ch->{id} };
signin('after the leave', 1, 'mongodb');
signin('after the leave, again', 0, 'zone');

change(DELETE => "/api/channels/$ch3->{id}/members/me", $cy->{token}, undef,
    204);
signin('after another member left', 0, 'zone');
signin('after that, again', 1, 'zone');

is_deeply [grep { !/\[(?:error|crit|alert|emerg)\]/ ? 0 : 1 }
           error_log_lines()], [], 'nothing at [error] or above';

stop_foko();
done_testing();
