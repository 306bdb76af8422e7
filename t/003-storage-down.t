# MongoDB going away and coming back: health turns into a prompt 503 while
# the worker keeps answering, and back to 200 once the database returns; a
# worker starts (and reloads) while MongoDB is down.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;

my ($uri, $db) = ferretdb_start();

# one process: if anything blocked its event loop, status would wait too
start_foko(mongo_uri => $uri);

my ($status, $res) = api(GET => '/api/health');
is $status, 200, 'health is ok while the database is up';
is_deeply $res, { status => 'ok', mongo => 'up' }, 'and says so';

ferretdb_stop($db);

my $started = time;
my $health = api_send(GET => '/api/health');
my $probe = api_send(GET => '/status');

my ($probe_status, $probe_res) = api_recv($probe, 5);
my $probe_done = time;
my ($health_status, $health_res) = api_recv($health, 10);
my $health_done = time;

is $probe_status, 200, 'status answers while the database is down';
cmp_ok $probe_done, '<=', $health_done,
    'status is answered before the pending health check';
is $health_status, 503, 'health is 503 once the database is gone';
is $health_res->{mongo}, 'down', 'with "mongo":"down"';
is $health_res->{error}{code}, 'storage_unavailable', 'in the error shape';
cmp_ok $health_done - $started, '<', 8,
    'within the bounded server selection time';

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

unlike error_log_text(), qr/\[(alert|crit|emerg)\]/,
    'no alert, crit or emerg in the error log';

done_testing;


sub slurp_pid {
    open my $fh, '<', server_root() . '/logs/nginx.pid' or return;
    my ($pid) = <$fh> =~ /(\d+)/;
    return $pid;
}
