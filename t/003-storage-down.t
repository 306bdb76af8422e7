# MongoDB going away and coming back: health, answered at once from the
# zone, turns into 503 within a few seconds while the worker keeps
# answering, and back to 200 once the database returns; a
# worker starts (and reloads) while MongoDB is down.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

my ($uri, $db) = ferretdb_start();

# one process: if anything blocked its event loop, status would wait too
start_foko(mongo_uri => $uri);

my ($status, $res) = api(GET => '/api/health');
is $status, 200, 'health is ok while the database is up';
is_deeply $res, { status => 'ok', mongo => 'up' }, 'and says so';

ferretdb_stop($db);

# health is the zone's view of MongoDB, which the probes keep current:
# each answer comes at once, and it turns 503 within the probe's bounds

my $started = time;
my ($health_status, $health_res, $slowest) = (0, undef, 0);
while (time - $started < 8) {
    my $t0 = time;
    ($health_status, $health_res) = api(GET => '/api/health');
    $slowest = time - $t0 if time - $t0 > $slowest;
    last if ($health_status // 0) == 503;
    sleep 0.1;
}
my $health_done = time;

my ($probe_status) = api(GET => '/status');
is $probe_status, 200, 'status answers while the database is down';
cmp_ok $slowest, '<', 0.5, 'every health answer comes at once';
is $health_status, 503, 'health is 503 once the database is gone';
is $health_res->{mongo}, 'down', 'with "mongo":"down"';
is $health_res->{error}{code}, 'storage_unavailable', 'in the error shape';
cmp_ok $health_done - $started, '<', 5,
    'within the probe\'s bounds (every second, 2 s server selection)';

# the database comes back: the driver reconnects by itself

ferretdb_start($db);

my $back;
for (1 .. 40) {
    ($status) = api(GET => '/api/health');
    last if ($back = $status == 200);
    sleep 0.25;
}
ok $back, 'health is ok again once the database is back';

stop_foko();

# a worker starts while the database is down, and connects later

ferretdb_stop($db);

start_foko(mongo_uri => $uri, workers => 2);

($status, $res) = api(GET => '/status');
is $status, 200, 'workers start while the database is down';

($status, $res) = api(GET => '/api/health');
is $status, 503, 'health says the database is down';

# a reload while the database is down keeps serving

my $pid = (slurp_pid() or 0);
kill HUP => $pid if $pid;
sleep 1;

($status, $res) = api(GET => '/status');
is $status, 200, 'a reload while the database is down keeps serving';
is $res->{zone}{reloads}, 1, 'and keeps the shared zone';

ferretdb_start($db);

$back = 0;
for (1 .. 40) {
    ($status) = api(GET => '/api/health');
    last if ($back = $status == 200);
    sleep 0.25;
}
ok $back, 'the workers connect once the database comes up';

stop_foko();
ferretdb_stop($db);

error_log_clean('no alert, crit or emerg in the error log', qr/\[error\]/);

done_testing;


sub slurp_pid {
    open my $fh, '<', server_root() . '/logs/nginx.pid' or return;
    my ($pid) = <$fh> =~ /(\d+)/;
    return $pid;
}
