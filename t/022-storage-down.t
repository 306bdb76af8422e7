# MongoDB stops in the middle of a run of posts and comes back: posts to a
# cached channel wait in the write queue (up to foko_chat_write_queue, then
# 503 at once), each answered 503 once it has waited 5 s but kept queued;
# recent history is served from the shared zone meanwhile; once MongoDB is
# back the queue is written, a retry with the same client_id gets the
# stored message, and every acknowledged message is stored exactly once,
# in seq order, with no gap.  A reload keeps the zone.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

my ($uri, $db) = ferretdb_start();

start_foko(workers => 2, mongo_uri => $uri,
           http_config => "    foko_chat_write_queue 30;\n");

my ($alice) = signup(username => 'alice');
my ($bob, $b) = signup(username => 'bob');

my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Durable', members => [$b->{id}] }, token => $alice);
my $url = "/api/channels/$ch->{id}/messages";

my (%acked, %sent, @queued);

sub post {
    my ($text, $token) = @_;
    my $s = api_send(POST => $url, { text => $text, client_id => $text },
                     token => $token);
    $sent{$s} = [$text, $token];
    return $s;
}

# the answers by status; a 503 of a post that waited its bound (it stays
# queued) is "503 queued", one refused at once "503 full"
sub collect {
    my ($socks, $timeout) = @_;
    my %codes;
    for my $s (@$socks) {
        my ($st, $res) = eval { api_recv($s, $timeout) };
        $st //= 'timeout';
        if ($st eq '503') {
            my $full = ($res->{error}{message} // '') =~ /too many/;
            $st = $full ? '503 full' : '503 queued';
            push @queued, $sent{$s} unless $full;
        }
        $codes{$st}++;
        $acked{ $res->{message}{seq} } = $res->{message}
            if $st eq '201' || $st eq '200';
        close $s;
    }
    return \%codes;
}

# once MongoDB is back: the posts answered 503 after their bound are sent
# again with the same client_id, and get the message their queue stored
sub retry_queued {
    my %codes;
    for my $try (1 .. 10) {
        my @again = map { post(@$_) } @queued;
        @queued = ();
        my $c = collect(\@again, 30);
        $codes{$_} += $c->{$_} for grep { !/503 queued/ } keys %$c;
        last unless @queued;
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

my $t0 = time;
is_deeply collect(\@socks, 20), { '503 queued' => 20 },
    'a post that waited 5 s is answered 503, and stays queued';
cmp_ok time - $t0, '<', 8, 'about 5 s after it was sent';

my $over = collect(\@over, 20);
cmp_ok $over->{'503 full'} // 0, '>=', 20,
    'past foko_chat_write_queue, posts are refused with 503 at once'
    or diag explain $over;
is(($over->{'503 full'} // 0) + ($over->{'503 queued'} // 0), 80,
   'the others waited their bound');

ferretdb_start($db);

my $n = @queued;
my $again = retry_queued();
is_deeply $again, { 200 => $n },
    'once MongoDB is back, a retry gets the message its queue stored (200)'
    or diag explain $again;

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

my $reloaded = collect(\@reloaded, 20);
is_deeply $reloaded, { '503 queued' => 6 },
    'posts waiting across a reload are answered 503 after their bound'
    or diag explain $reloaded;

ferretdb_start($db);

is_deeply retry_queued(), { 200 => 6 },
    'the old workers store them: a retry gets each (200)';

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

error_log_clean('no alert in the log', qr/\[error\]/);

done_testing;
