# A reload that changes foko_chat_shm_size starts a fresh zone while the
# old workers still hold posts with seqs of the old zone.  When a seq turns
# out to be stored already, the post takes the next free seq instead of
# failing: every post is stored once, and history has no gap.  What the
# old workers store after the reload reaches the new workers' WebSocket
# subscribers live, once each and in seq order.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws qw(worker_pids wait_workers master_pid ws_mojo wait_until);
use FokoChat::Server qw(edit_conf);

my ($uri, $db) = ferretdb_start();

start_foko(workers => 2, mongo_uri => $uri,
           http_config => "    foko_chat_shm_size 8m;\n",
           config => "        location = /ws {\n"
                     . "            foko_chat_websocket;\n        }\n");

my ($alice) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');
my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Zones', members => [$ub->{id}] }, token => $alice);
my $url = "/api/channels/$ch->{id}/messages";
($status) = api(POST => $url, { text => 'one' }, token => $alice);
is $status, 201, 'a first message';

my @old_workers = wait_workers(2);

# the old workers hold four posts while MongoDB is down
ferretdb_stop($db);
my @old = map {
    api_send(POST => $url, { text => "old $_", client_id => "old-$_" },
             token => $alice)
} 1 .. 4;
sleep 0.5;

# a reload with another zone size: the new workers get a fresh zone
edit_conf(sub { s/foko_chat_shm_size 8m/foko_chat_shm_size 9m/ });

kill HUP => master_pid();
my @new;
my $deadline = time + 10;
while (time < $deadline) {
    my %old = map { $_ => 1 } @old_workers;
    @new = grep { !$old{$_} } worker_pids();
    last if @new == 2;
    sleep 0.05;
}
is scalar @new, 2, 'a reload with another zone size starts new workers';

# the new workers store four posts first, with the seqs the old ones hold
kill STOP => @old_workers;
ferretdb_start($db);

my @fresh = map {
    api_send(POST => $url, { text => "new $_", client_id => "new-$_" },
             token => $bob)
} 1 .. 4;

my %seq;
for my $sock (@fresh) {
    my ($st, $res) = api_recv($sock, 30);
    is $st, 201, 'a post to the new workers is stored';
    $seq{ $res->{message}{seq} } = 'new' if $res;
}

# a subscriber on each new worker, signed in once seqs 2 to 5 are stored
my @subs = map { ws_mojo(token => $bob, pid => $_) } @new;
is_deeply [map { $_->{ready}{channels}[0]{last_seq} } @subs], [5, 5],
    'ready says seq 5 on both new workers';

# the old workers go on: their seqs are taken
kill CONT => @old_workers;

for my $sock (@old) {
    my ($st, $res) = api_recv($sock, 30);
    is $st, 201, 'a post held by an old worker is stored';
    $seq{ $res->{message}{seq} } .= 'old' if $res;
}

is_deeply [sort { $a <=> $b } keys %seq], [2 .. 9],
    'the eight posts have seqs 2 to 9, once each';

# the new zone learns of the old workers' seqs with the channel's next post
($status, my $res) = api(POST => $url, { text => 'next' }, token => $bob);
is $status, 201, 'the next post';
is $res->{message}{seq}, 10, 'takes seq 10';

wait_until(sub { !grep { $_->seqs($ch->{id}) < 5 } @subs }, 10);
is_deeply [map { [$_->seqs($ch->{id})] } @subs], [([6 .. 10]) x 2],
    'both subscribers of the new workers get seqs 6 to 10 live, once, '
    . 'in order: those the old workers stored too';
$_->close for @subs;

my ($st, $page) = api(GET => "$url?after=0&limit=50", undef, token => $bob);
is_deeply [map { $_->{seq} } @{ $page->{messages} }], [1 .. 10],
    'history has every message once, without a gap';
is scalar(grep { $_->{text} =~ /^old / } @{ $page->{messages} }), 4,
    'the old posts are there';

ok scalar(grep { /stored by other workers/ } error_log_lines()),
    'the change of seq is logged';
my @problems = grep { /\[(error|crit|alert|emerg)\]/ } error_log_lines();
is_deeply [grep { !/not written, will retry|unreachable|No suitable servers|Failed to connect/ } @problems], [],
    'nothing else at error or above';

stop_foko();
ferretdb_stop($db);
done_testing();
