# MongoDB hung, not dead: FerretDB paused with SIGSTOP keeps its sockets
# open and answers nothing.  /api/health answers at once from the zone's
# view of MongoDB, which turns "down" within a few seconds; sign-in, a
# history page beyond the zone, the channel list and a post are answered
# 503 storage_unavailable within their bounds (README, "When MongoDB is
# down"); after SIGCONT a post retried with the same client_id gets the
# stored message, stored once.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;

my ($uri, $db) = ferretdb_start();

start_foko(workers => 2, mongo_uri => $uri,
           http_config => "    foko_chat_history_cache 5;\n");

my $email = unique_email('alice');
my ($alice) = signup(username => 'alice', email => $email);
my ($bob, $ub) = signup(username => 'bob');

my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Hung', members => [$ub->{id}] }, token => $alice);
my $url = "/api/channels/$ch->{id}/messages";

for my $i (1 .. 10) {
    ($status) = api(POST => $url, { text => "m$i", client_id => "m$i" },
                    token => $alice);
    die "post $i: $status\n" unless $status == 201;
}
# the channel cached on both workers
api(GET => $url, undef, token => $bob) for 1 .. 4;

($status) = api(GET => '/api/health');
is $status, 200, 'health is 200 while MongoDB answers';

sub timed {
    my ($method, $path, $body, %o) = @_;
    my $t0 = time;
    my ($st, $res) = api($method, $path, $body, %o, timeout => 30);
    return ($st // 'none', $res, time - $t0);
}

sub unavailable {
    my ($what, $bound, $st, $res, $took) = @_;
    is $st, 503, "$what: 503";
    is $res && $res->{error}{code}, 'storage_unavailable',
        "$what: storage_unavailable";
    cmp_ok $took, '<', $bound, "$what: within $bound s";
    note sprintf '%s took %.2f s', $what, $took;
}

kill STOP => $db->{pid};
my $paused = time;

# calls sent right away reach MongoDB before it is known to hang: a call
# on accounts or channels ends at its 2 s socket timeout; one on messages
# (10 s) is answered once the zone knows MongoDB is down
my @inflight = (
    ['sign-in sent at the pause', 3, api_send(POST => '/api/auth/login',
        { email => $email, password => 'correct horse' })],
    ['a history page sent at the pause', 4,
        api_send(GET => "$url?before=4&limit=2", undef, token => $bob)],
    ['a read mark sent at the pause', 4,
        api_send(POST => "/api/channels/$ch->{id}/read", { seq => 9 },
                 token => $bob)],
);

# (one that MongoDB answered just before it stopped may succeed)
for my $call (@inflight) {
    my ($what, $bound, $sock) = @$call;
    my ($st, $res) = api_recv($sock, 30);
    my $took = time - $paused;
    $st //= 'none';
    if ($st =~ /^20[01]$/) {
        pass "$what: answered before MongoDB stopped";
    } else {
        is $res && $res->{error}{code}, 'storage_unavailable',
            "$what: 503 storage_unavailable";
    }
    cmp_ok $took, '<', $bound, "$what: within $bound s";
    note sprintf '%s: %s after %.2f s', $what, $st, $took;
}

# health: at once, whatever it says; "down" within a few seconds
my ($down, $slowest) = (0, 0);
my $looking = time;
while (time - $looking < 8) {
    my ($st, $res, $took) = timed(GET => '/api/health');
    $slowest = $took if $took > $slowest;
    if ($st eq '503') {
        $down = time - $paused;
        is $res->{mongo}, 'down', 'health says mongo down';
        is $res->{error}{code}, 'storage_unavailable', 'storage_unavailable';
        last;
    }
    sleep 0.1;
}
ok $down, 'health turns 503 while MongoDB is paused';
cmp_ok $down, '<', 5, 'within 5 s of the pause';
cmp_ok $slowest, '<', 0.5, 'every health answer came at once';
note sprintf 'health down after %.2f s, slowest answer %.3f s',
    $down, $slowest;

# the calls a client waits on, once the hang is known
unavailable('sign-in', 3,
            timed(POST => '/api/auth/login',
                  { email => $email, password => 'correct horse' }));
unavailable('a history page beyond the zone', 3,
            timed(GET => "$url?before=3&limit=2", undef, token => $bob));
unavailable('the channel list', 3,
            timed(GET => '/api/channels', undef, token => $bob));
unavailable('a read mark', 3,
            timed(POST => "/api/channels/$ch->{id}/read", { seq => 10 },
                  token => $bob));

# a post waits in the write queue, up to its bound
my $post = { text => 'while hung', client_id => 'hung-1' };
unavailable('a post', 7, timed(POST => $url, $post, token => $alice));

# a recent page is still served from the zone
my ($st, $page, $took) = timed(GET => "$url?limit=5", undef,
                               token => $bob);
is $st, 200, 'recent history is served from the zone';
cmp_ok $took, '<', 0.5, 'at once';

kill CONT => $db->{pid};

# the retry with the same client_id: the stored message, once
my $res;
my $deadline = time + 30;
while (time < $deadline) {
    ($st, $res) = timed(POST => $url, $post, token => $alice);
    last if $st eq '200' || $st eq '201';
    sleep 0.5;
}
like $st, qr/^20[01]$/, 'the retry after SIGCONT is answered';
is $res->{message}{client_id}, 'hung-1', 'with the message';
is $res->{message}{seq}, 11, 'under seq 11';

($st, $page) = timed(GET => "$url?after=0&limit=50", undef, token => $bob);
is_deeply [map { $_->{seq} } @{ $page->{messages} }], [1 .. 11],
    'history has every message once, no gap';
is scalar(grep { ($_->{client_id} // '') eq 'hung-1' }
          @{ $page->{messages} }), 1, 'the post is stored once';
is scalar(grep { $_->{deleted} } @{ $page->{messages} }), 0,
    'and no tombstone';

my $h0 = time;
$deadline = time + 10;
($st) = timed(GET => '/api/health');
while ($st ne '200' && time < $deadline) {
    sleep 0.2;
    ($st) = timed(GET => '/api/health');
}
is $st, 200, 'health is 200 again';

my @problems = grep { /\[(error|crit|alert|emerg)\]/ } error_log_lines();
is_deeply [grep { !/not written, will retry|unreachable|timed out|Failed to|socket error|No suitable servers|could not read/ } @problems],
    [], 'nothing unexpected at error or above';

stop_foko();
ferretdb_stop($db);
done_testing();
