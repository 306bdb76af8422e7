# A restart warms the new zone up from MongoDB: recent history is served
# from memory (even with MongoDB gone right after) and seq counters go on
# where MongoDB left them.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

my ($uri, $db) = ferretdb_start();

start_foko(workers => 2, mongo_uri => $uri);

my ($alice) = signup(username => 'alice');
my ($bob, $b) = signup(username => 'bob');
my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Restart', members => [$b->{id}] }, token => $alice);
my $url = "/api/channels/$ch->{id}/messages";

for my $i (1 .. 7) {
    ($status) = api(POST => $url, { text => "m$i" }, token => $alice);
}
is $status, 201, 'seven messages stored';

stop_foko();

# a new nginx: a new zone, warmed up in the background

start_foko(workers => 2, mongo_uri => $uri);

my $warm;
for (1 .. 50) {
    last if ($warm = error_log_text() =~ /warmed up with (\d+) of/);
    sleep 0.1;
}
ok $warm, 'the new zone is warmed up from MongoDB';

ferretdb_stop($db);

my $res;
($status, $res) = api(GET => $url, undef, token => $bob);
is $status, 200, 'with MongoDB gone, recent history is served';
is_deeply [map { $_->{text} } @{ $res->{messages} }], [map { "m$_" } 1 .. 7],
    'all of it, from the warmed-up zone';

ferretdb_start($db);

($status, $res) = api(POST => $url, { text => 'after' }, token => $bob,
                      timeout => 20);
is $status, 201, 'posting goes on';
is $res->{message}{seq}, 8, 'with the next seq after the restart';

# right after the restart a pooled connection to FerretDB may time out:
# the batch is retried, and that is no failure (a retried index creation
# is at warn); a worker's check (every second) may find FerretDB stopped,
# and says so, with whichever reason the driver gives (a refused connect,
# a kept connection closed, a server selection that timed out)
error_log_clean('nothing at [error] or above but retried database calls',
                qr/not written, will retry: |MongoDB is unreachable: /);

stop_foko();
ferretdb_stop($db);

done_testing;
