# MongoDB stops in the middle of a run of posts and comes back: posts to a
# cached channel wait in the write queue (up to foko_chat_write_queue, then
# 503), recent history is served from the shared zone meanwhile, and once
# MongoDB is back every acknowledged message is stored exactly once, in
# seq order, with no gap.  A reload keeps the zone.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;

my ($uri, $db) = ferretdb_start();

start_foko(workers => 2, mongo_uri => $uri,
           http_config => "    foko_chat_write_queue 30;\n");

my ($alice) = signup(username => 'alice');
my ($bob, $b) = signup(username => 'bob');

my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Durable', members => [$b->{id}] }, token => $alice);
my $url = "/api/channels/$ch->{id}/messages";

my %acked;

sub post {
    my ($text, $token) = @_;
    return api_send(POST => $url, { text => $text, client_id => $text },
                    token => $token);
}

sub collect {
    my ($socks, $timeout) = @_;
    my %codes;
    for my $s (@$socks) {
        my ($st, $res) = eval { api_recv($s, $timeout) };
        $st //= 'timeout';
        $codes{$st}++;
        $acked{ $res->{message}{seq} } = $res->{message}
            if $st eq '201';
        close $s;
    }
    return \%codes;
}

# a few messages while MongoDB is up: the channel is cached on both workers

my @socks = map { post("before-$_", $_ % 2 ? $alice : $bob) } 1 .. 10;
is_deeply collect(\@socks, 10), { 201 => 10 }, 'ten messages stored';
for (1 .. 2) {
    ($status) = api(GET => $url, undef, token => $bob);
}

# MongoDB stops

ferretdb_stop($db);

@socks = map { post("during-$_", $_ % 2 ? $alice : $bob) } 1 .. 20;
sleep 1;

($status, my $res) = api(GET => "$url?limit=10", undef, token => $bob);
is $status, 200, 'recent history is served while MongoDB is down';
is_deeply [map { $_->{seq} } @{ $res->{messages} }], [1 .. 10],
    'the stored messages, none of the waiting ones';

# the queue holds 30 per worker: of 80 more, some are refused at once

my @over = map { post("over-$_", $alice) } 1 .. 80;
my (@refused, @waiting);
for my $s (@over) {
    my ($st) = eval { api_recv($s, 0.5) };
    if (defined $st && $st == 503) {
        push @refused, $s;
        close $s;
    } else {
        push @waiting, $s;
    }
}
ok @refused >= 20, 'past foko_chat_write_queue, posts are refused with 503'
    or diag scalar(@refused) . ' refused';

ferretdb_start($db);

my $during = collect(\@socks, 60);
is_deeply $during, { 201 => 20 },
    'once MongoDB is back, the waiting posts are stored and answered';
my $late = collect(\@waiting, 60);
is_deeply $late, { 201 => scalar @waiting }, 'all that waited, too';

# a reload keeps the zone: with MongoDB down again, history still comes
# from memory

my $pid = do {
    open my $fh, '<', server_root() . '/logs/nginx.pid' or die;
    <$fh> =~ /(\d+)/ ? $1 : die;
};
ferretdb_stop($db);

# posts waiting in the old workers' queues when the reload comes

my @reloaded = map { post("reload-$_", $_ % 2 ? $alice : $bob) } 1 .. 6;
sleep 0.5;

kill HUP => $pid;
sleep 1.5;

($status, $res) = api(GET => "$url?limit=5", undef, token => $alice);
is $status, 200, 'after a reload, with MongoDB down, history is served';
is scalar @{ $res->{messages} }, 5, 'from the zone kept across the reload';

ferretdb_start($db);

is_deeply collect(\@reloaded, 60), { 201 => 6 },
    'posts waiting across a reload are stored and answered by the old '
    . 'workers';

# everything acknowledged is in MongoDB exactly once, in order, no gaps

my @stored;
my $after = 0;
for (1 .. 10) {
    ($status, $res) = api(GET => "$url?after=$after&limit=200", undef,
                          token => $alice, timeout => 20);
    last unless $status == 200 && @{ $res->{messages} };
    push @stored, @{ $res->{messages} };
    $after = $stored[-1]{seq};
    last unless $res->{has_more};
}

my @seqs = map { $_->{seq} } @stored;
is_deeply \@seqs, [1 .. scalar @seqs], 'stored seqs run 1, 2, 3... no gap';
ok !(grep { !exists $acked{$_} && !$stored[$_ - 1]{deleted} } @seqs),
    'every stored message was acknowledged';
my %by_id = map { $_->{id} => $_ } @stored;
is scalar(grep { $by_id{ $acked{$_}{id} } } keys %acked), scalar keys %acked,
    'every acknowledged message is stored';
my %texts;
$texts{ $_->{text} }++ for @stored;
ok !(grep { $_ > 1 } values %texts), 'none twice';

stop_foko();
ferretdb_stop($db);

unlike error_log_text(), qr/\[(alert|crit|emerg)\]/,
    'no alert in the log';

done_testing;
