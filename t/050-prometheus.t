# The status page in the Prometheus text format over two workers: the
# output passes Debian's "promtool check metrics", every family has HELP
# and TYPE, labels are escaped, each worker's gauges appear under its own
# "worker" label, and the counters follow what happens: messages stored,
# delivered to a WebSocket, refused for a reason.  "?format=" and the
# scraper's Accept header choose the format on any status location;
# "foko_chat_status yaml;" fails nginx -t.

use strict;
use warnings;

use File::Temp qw(tempfile);
use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my $promtool = (grep { -x } map { "$_/promtool" } split /:/, $ENV{PATH})[0];

my $Type = 'text/plain; version=0.0.4; charset=utf-8';
my $Accept = 'application/openmetrics-text;version=1.0.0,'
    . 'application/openmetrics-text;version=0.0.1;q=0.75,'
    . 'text/plain;version=0.0.4;q=0.5,*/*;q=0.1';

# a pool name with a quote and a backslash, to see labels escaped
start_foko(mongo_uri => own_mongo_uri('prom50'),
           workers => 2,
           main_config => qq{thread_pool 'we"ird\\\\pool' threads=4;\n},
           http_config => qq{    foko_chat_thread_pool 'we"ird\\\\pool';\n}
               . "    foko_chat_max_message_size 100;\n",
           config => <<'_EOC_');
        location = /metrics {
            foko_chat_status prometheus;
        }

        location = /ws {
            foko_chat_websocket;
        }
_EOC_

sub get {
    my ($path, %headers) = @_;
    my ($status, $h, $body) = http_request(build_request("GET $path",
        join("\n", map { "$_: $headers{$_}" } sort keys %headers)), 10);
    return ($status, $h, $body);
}

# {"name{labels}" => value} of an exposition, and the families' types
sub parse {
    my $text = shift;
    my (%v, %type, %help);
    for (split /\n/, $text) {
        if (/^# TYPE (\S+) (\S+)$/) { $type{$1} = $2; next }
        if (/^# HELP (\S+) /) { $help{$1} = 1; next }
        next if /^#/ || $_ eq '';
        /^(\S+?(?:\{.*\})?) (\S+)$/ or die "bad sample line: $_\n";
        $v{$1} = $2;
    }
    return (\%v, \%type, \%help);
}

sub metrics {
    my ($status, $h, $body) = get('/metrics');
    die "GET /metrics: $status\n" unless $status == 200;
    return (parse($body))[0];
}

sub wait_for {
    my ($cond, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    my $m;
    while (1) {
        $m = metrics();
        return $m if $cond->($m);
        return undef if time > $deadline;
        sleep 0.2;
    }
}

my @pids = wait_workers(2);
is scalar @pids, 2, 'two workers';

# the format

my ($status, $h, $body) = get('/metrics');
is $status, 200, 'GET /metrics is 200';
is $h->{'content-type'}, $Type, 'with the text format version 0.0.4';
like $body, qr/\n\z/, 'ending with a newline';

SKIP: {
    skip 'promtool is not installed (Debian package "prometheus")', 2
        unless $promtool;
    my ($fh, $file) = tempfile(UNLINK => 1);
    print {$fh} $body;
    close $fh;
    my $out = `'$promtool' check metrics < '$file' 2>&1`;
    is $?, 0, 'promtool check metrics passes' or diag $out;
    is $out, '', 'with no lint remark';
}

my ($v, $type, $help) = parse($body);
my @names = map { /^([^{]+)/ } keys %$v;
is_deeply [grep { !/^foko_chat_/ } @names], [], 'every sample is foko_chat_';
my %family = map {
    my $n = $_;
    $n =~ s/_(?:bucket|sum|count)$// if !$type->{$n};
    ($n => 1)
} @names;
is_deeply [grep { !$type->{$_} } sort keys %family], [],
    'every family has a TYPE';
is_deeply [grep { !$help->{$_} } sort keys %family], [],
    'every family has a HELP';
is_deeply [grep { /_total$/ && $type->{$_} ne 'counter' } keys %$type], [],
    'only counters end in _total';
is_deeply [grep { $type->{$_} eq 'counter' && !/_total$/ } keys %$type], [],
    'and every counter does';

for my $name (qw(foko_chat_zone_size_bytes foko_chat_zone_used_bytes
                 foko_chat_cache_channels foko_chat_event_log_size_bytes
                 foko_chat_messages_stored_total foko_chat_mongo_up
                 foko_chat_events_published_total))
{
    ok exists $v->{$name}, "$name is there";
}
is $type->{foko_chat_write_batch_messages}, 'histogram',
    'batch sizes are a histogram';
ok exists $v->{'foko_chat_write_batch_messages_bucket{le="+Inf"}'},
    'with its +Inf bucket';
ok exists $v->{"foko_chat_connections{state=\"$_\"}"}, "connections $_"
    for qw(active reading writing waiting);
ok exists $v->{"foko_chat_mongo_state{state=\"$_\"}"}, "MongoDB state $_"
    for qw(unknown up down);

# each worker under its label, with its pid, once its slot is written

my $m = wait_for(sub {
    defined $_[0]{'foko_chat_worker_pid{worker="0"}'}
        && defined $_[0]{'foko_chat_worker_pid{worker="1"}'}
}, 5);
ok $m, 'both workers are listed';
is_deeply [sort { $a <=> $b } map { $m->{"foko_chat_worker_pid{worker=\"$_\"}"} }
           0, 1], \@pids, 'with their pids';
ok exists $m->{qq(foko_chat_thread_pool_tasks{worker="0",pool="we\\"ird\\\\pool"})},
    'the pool name escaped in its label';
ok exists $m->{qq(foko_chat_event_log_lag_bytes{worker="$_"})},
    "event log lag of worker $_" for 0, 1;

$m = wait_for(sub { ($_[0]{foko_chat_mongo_up} // 0) == 1 }, 12);
ok $m, 'MongoDB is up';
is $m->{'foko_chat_mongo_state{state="up"}'}, 1, 'state up is 1';
is $m->{'foko_chat_mongo_state{state="down"}'}, 0, 'state down is 0';

# counters follow what happens

my ($alice, $ua) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');
($status, my $ch) = api(POST => '/api/channels',
    { name => 'Metrics', members => [$ub->{id}] }, token => $alice);
is $status, 201, 'a channel';
my $url = "/api/channels/$ch->{id}/messages";

my $ws = ws_raw(token => $bob);
ok $ws->{ready}, "bob's WebSocket is ready";

$m = wait_for(sub {
    my $n = 0;
    $n += $_[0]{"foko_chat_websocket_connections{worker=\"$_\"}"} // 0
        for 0, 1;
    $n == 1;
}, 5);
ok $m, 'one WebSocket connection over the workers';

my $before = metrics();

for my $i (1 .. 3) {
    ($status) = api(POST => $url, { text => "m$i", client_id => "p$i" },
                    token => $alice);
    is $status, 201, "post $i";
}
($status) = api(POST => $url, { text => '   ' }, token => $alice);
is $status, 400, 'a blank text is refused';
($status) = api(POST => $url, { text => 'x' x 101 }, token => $alice);
is $status, 413, 'a long one too';

for my $i (1 .. 3) {
    ok $ws->next_event(10, 'message'), "bob gets message $i";
}

my $d = sub { my ($m, $k) = @_; ($m->{$k} // 0) - ($before->{$k} // 0) };

$m = wait_for(sub {
    $d->($_[0], 'foko_chat_messages_delivered_total') >= 3
}, 5);
ok $m, 'the deliveries are counted';
is $d->($m, 'foko_chat_messages_stored_total'), 3, 'three more stored';
is $d->($m, 'foko_chat_messages_delivered_total'), 3,
    'three more delivered to WebSocket connections';
is $d->($m, 'foko_chat_messages_rejected_total{reason="invalid"}'), 1,
    'one more refused as invalid';
is $d->($m, 'foko_chat_messages_rejected_total{reason="too_large"}'), 1,
    'one more refused as too large';
is $d->($m, 'foko_chat_write_batch_messages_sum'), 3,
    'the batches carried three messages';
cmp_ok $d->($m, 'foko_chat_write_batch_messages_count'), '>=', 1,
    'in one batch or more';
is $m->{'foko_chat_write_batch_messages_bucket{le="+Inf"}'},
    $m->{foko_chat_write_batch_messages_count}, '+Inf counts every batch';
cmp_ok $m->{foko_chat_cache_channels}, '>=', 1, 'the channel is cached';
cmp_ok $d->($m, 'foko_chat_events_published_total'), '>=', 3,
    'the events are counted';

$ws->close;

# choosing the format

($status, $h, $body) = get('/status');
is $h->{'content-type'}, 'application/json; charset=utf-8',
    '/status is JSON by default';
ok eval { json->decode($body)->{pid} }, 'with a pid';
like $h->{vary} // '', qr/Accept/, 'and Vary: Accept';

($status, $h, $body) = get('/status', Accept => $Accept);
is $status, 200, '/status with the scraper Accept header';
is $h->{'content-type'}, $Type, 'answers the text format';
like $body, qr/^foko_chat_zone_size_bytes \d+$/m, 'the metrics';

($status, $h, $body) = get('/status?format=prometheus');
is $h->{'content-type'}, $Type, '/status?format=prometheus';

($status, $h, $body) = get('/metrics?format=json');
is $h->{'content-type'}, 'application/json; charset=utf-8',
    '/metrics?format=json is JSON';
ok eval { json->decode($body)->{zone}{size} }, 'the JSON status';

($status, $h, $body) = get('/metrics', Accept => 'application/json');
is $h->{'content-type'}, $Type,
    'a prometheus location ignores the Accept header';

($status, $h, $body) = get('/metrics?format=yaml');
is $status, 400, 'an unknown format is 400';

($status, $h, $body) = http_request(build_request('HEAD /metrics'), 5);
is $status, 200, 'HEAD /metrics';
is $h->{'content-type'}, $Type, 'with the type';
is $body, '', 'and no body';

($status) = http_request(build_request("POST /metrics\nx"), 5);
is $status, 405, 'POST /metrics is 405';

error_log_clean('no error in the log');

stop_foko();

# a bad argument fails the configuration

setup_servroot();
write_conf(http_config => foko_http_config(), config => <<'_EOC_');
        location = /metrics {
            foko_chat_status yaml;
        }
_EOC_
my ($ok, $out) = start_nginx();
ok !$ok, 'foko_chat_status yaml; fails';
like $out, qr/invalid value "yaml" in "foko_chat_status".*json.*prometheus/,
    'naming the value and the choices';

done_testing;
