# A real Prometheus (Debian's binary) scrapes the module every second, from
# a "foko_chat_status prometheus;" location and from a JSON status location
# through its Accept header; the values read back through its HTTP API
# follow the posts.  Prometheus gets a temporary directory and a loopback
# port of its own and is stopped at the end.

use strict;
use warnings;

use File::Temp qw(tempdir);
use HTTP::Tiny;
use JSON::PP;
use POSIX ();
use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my $prometheus = (grep { -x } map { "$_/prometheus" } split /:/, $ENV{PATH})[0];
plan skip_all => 'prometheus is not installed (Debian package "prometheus")'
    unless $prometheus;

start_foko(mongo_uri => own_mongo_uri('prom51'),
           workers => 2,
           config => <<'_EOC_');
        location = /metrics {
            foko_chat_status prometheus;
        }
_EOC_

my ($alice, $ua) = signup(username => 'alice');
my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Scraped', members => [] }, token => $alice);
is $status, 201, 'a channel';
my $url = "/api/channels/$ch->{id}/messages";

for my $i (1 .. 2) {
    ($status) = api(POST => $url, { text => "m$i" }, token => $alice);
    is $status, 201, "post $i";
}

my $dir = tempdir(CLEANUP => !$ENV{KEEP});
my $port = free_port();
my $target = '127.0.0.1:' . server_port();
write_file("$dir/prometheus.yml", <<"_EOC_");
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: metrics
    metrics_path: /metrics
    static_configs:
      - targets: ['$target']
  - job_name: status
    metrics_path: /status
    static_configs:
      - targets: ['$target']
_EOC_

my $pid = fork // die "fork: $!\n";
if (!$pid) {
    open STDOUT, '>', "$dir/prometheus.log" or POSIX::_exit(126);
    open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
    exec $prometheus, "--config.file=$dir/prometheus.yml",
        "--storage.tsdb.path=$dir/data",
        "--web.listen-address=127.0.0.1:$port", '--log.level=warn'
        or POSIX::_exit(127);
}

END {
    if ($pid) {
        kill TERM => $pid;
        waitpid $pid, 0;
    }
}

my $http = HTTP::Tiny->new(timeout => 3);

# {job => value} of an instant query; {} while there is none
sub query {
    my $q = shift;
    my $res = $http->get("http://127.0.0.1:$port/api/v1/query?query="
        . $http->www_form_urlencode({ x => $q }) =~ s/^x=//r);
    return {} unless $res->{success};
    my $data = eval { decode_json($res->{content}) } or return {};
    return { map { ($_->{metric}{job} => $_->{value}[1]) }
             @{ $data->{data}{result} || [] } };
}

# waits until the query answers $want for both jobs, at most $timeout s
sub wait_value {
    my ($q, $want, $timeout) = @_;
    my $deadline = time + $timeout;
    my $r;
    while (time < $deadline) {
        $r = query($q);
        return $r if ($r->{metrics} // '') eq $want
                     && ($r->{status} // '') eq $want;
        last if waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.5;
    }
    diag "prometheus: " . slurp("$dir/prometheus.log");
    return $r;
}

my $r = wait_value('up', '1', 30);
is $r->{metrics}, '1', 'the metrics location is scraped';
is $r->{status}, '1', 'the JSON status location too, through Accept';

$r = wait_value('foko_chat_messages_stored_total', '2', 15);
is $r->{metrics}, '2', 'two messages stored, read back from Prometheus';
is $r->{status}, '2', 'the same through the status location';

for my $i (3 .. 5) {
    ($status) = api(POST => $url, { text => "m$i" }, token => $alice);
    is $status, 201, "post $i";
}

$r = wait_value('foko_chat_messages_stored_total', '5', 15);
is $r->{metrics}, '5', 'five after three more posts';

$r = wait_value('count by (job) (foko_chat_worker_pid)', '2', 15);
is $r->{metrics}, '2', 'both workers are listed';

$r = wait_value('sum by (job) (foko_chat_write_batch_messages_sum)', '5', 15);
is $r->{metrics}, '5', 'the batches carried five messages';

error_log_clean('no error in the log');

done_testing;
