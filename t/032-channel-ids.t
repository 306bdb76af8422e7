# A user's channel list is exact right after every change of membership
# made on the other worker: a create, an invite, a leave, a rename, and a
# direct conversation. Each change is sent on a connection that landed on
# one worker; at once, a WebSocket sign-in and GET /api/channels on the
# other worker must list exactly the user's channels, with their names.
# The sign-ins take the channel ids from the shared zone when it holds
# them, and the status page says which did.

use strict;
use warnings;

use JSON::PP;
use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my $Json = JSON::PP->new->utf8->canonical;

start_foko(workers => 2, config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my @pids = wait_workers(2);
is scalar @pids, 2, 'two workers';

# One request on a connection that worker $pid accepted: a GET /status
# first tells which worker it is (keep-alive), then the request.
sub on_worker {
    my ($pid, $method, $path, $body, $token) = @_;
    for (1 .. 100) {
        my $sock = http_send("GET /status HTTP/1.1\r\nHost: localhost\r\n"
                             . "Connection: keep-alive\r\n\r\n", 5);
        my ($st, undef, $raw) = http_recv($sock, timeout => 5);
        my $at = eval { $Json->decode($raw)->{pid} } // 0;
        next unless $st == 200 && $at == $pid;
        my $content = defined $body ? $Json->encode($body) : '';
        print {$sock} "$method $path HTTP/1.1\r\nHost: localhost\r\n"
            . "Connection: close\r\nAuthorization: Bearer $token\r\n"
            . "Content-Type: application/json\r\n"
            . 'Content-Length: ' . length($content) . "\r\n\r\n$content";
        my ($st2, undef, $raw2) = http_recv($sock, timeout => 10);
        return ($st2, $raw2 ne '' ? eval { $Json->decode($raw2) } : undef);
    }
    die "no connection landed on worker $pid\n";
}

my %users;
for my $name (qw(ana ben cy)) {
    my $email = unique_email($name);
    my ($token, $user) = signup(username => $name, email => $email);
    $users{$name} = { token => $token, id => $user->{id}, email => $email };
}
my ($ana, $ben, $cy) = @users{qw(ana ben cy)};

# the lists a user has at once on worker $pid: the ids of the WebSocket
# sign-in's ready, and "id=name" of GET /api/channels, sorted
sub lists_of {
    my ($u, $pid) = @_;
    my $c = ws_mojo(token => $u->{token}, pid => $pid);
    my $ws = join ' ', sort map { $_->{id} } @{ $c->{ready}{channels} };
    $c->close;
    my ($st, $res) = on_worker($pid, GET => '/api/channels', undef,
                               $u->{token});
    my $rest = $st == 200
        ? join ' ', sort map { "$_->{id}=" . ($_->{name} // '') }
              @{ ref $res eq 'HASH' ? $res->{channels} : $res }
        : "status $st";
    return ($ws, $rest);
}

my %want;    # ben's channels: id => name

sub check {
    my $what = shift;
    my $want = join ' ', sort map { "$_=$want{$_}" } keys %want;
    my $ids = join ' ', sort keys %want;
    for my $i (0, 1) {
        my ($ws, $rest) = lists_of($ben, $pids[$i]);
        is $ws, $ids, "$what: ben's WebSocket sign-in on worker $i";
        is $rest, $want, "$what: ben's GET /api/channels on worker $i";
    }
}

# Each change on one worker, then at once the check on both (the other
# one first: lists_of is called for worker 0 then 1, so alternate).
my $n = 0;
sub change {
    my ($what, $method, $path, $body, $token, $want_st) = @_;
    my $pid = $pids[$n++ % 2];
    my ($st, $res) = on_worker($pid, $method, $path, $body, $token);
    is $st, $want_st, "$what: answered $want_st";
    return $res;
}

check('at first');

my $ch = change('ana creates a channel with ben', POST => '/api/channels',
    { name => 'First', members => [$ben->{id}] }, $ana->{token}, 201);
$want{ $ch->{id} } = 'First';
check('after the create');

my $ch2 = change('ana creates one without ben', POST => '/api/channels',
    { name => 'Second', members => [$cy->{id}] }, $ana->{token}, 201);
check('after a create ben is not in');

change('ana invites ben', POST => "/api/channels/$ch2->{id}/invite",
       { email => $ben->{email} }, $ana->{token}, 200);
$want{ $ch2->{id} } = 'Second';
check('after the invite');

change('cy renames it', PATCH => "/api/channels/$ch2->{id}",
       { name => 'Renamed' }, $cy->{token}, 200);
$want{ $ch2->{id} } = 'Renamed';
check('after the rename');

change('ben leaves the first', DELETE =>
       "/api/channels/$ch->{id}/members/me", undef, $ben->{token}, 204);
delete $want{ $ch->{id} };
check('after the leave');

my $dm = change('cy opens a conversation with ben', POST => '/api/channels',
    { members => [$ben->{id}] }, $cy->{token}, 201);
$want{ $dm->{id} } = $dm->{name} // '';
check('after the direct conversation');

change('ben leaves the renamed one', DELETE =>
       "/api/channels/$ch2->{id}/members/me", undef, $ben->{token}, 204);
delete $want{ $ch2->{id} };
check('after the second leave');

# the zone was in the path: of ben's 16 sign-ins, MongoDB gave his
# channel ids to the first and to the first after the invite and each
# leave (the creates added the channel to the zone's ids in place)
my (undef, $status) = api(GET => '/status');
is_deeply [@{ $status->{websocket} }{qw(signins_from_zone
                                        signins_from_mongodb)}], [12, 4],
          'sign-ins took their channel ids from the zone but after his own '
          . 'changes';

is_deeply [grep { !/\[(?:error|crit|alert|emerg)\]/ ? 0 : 1 }
           error_log_lines()], [], 'nothing at [error] or above';

stop_foko();
done_testing();
