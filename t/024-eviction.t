# A zone too small for the channels in use evicts cold channels from the
# cache (logged once) and goes on serving everything correctly from
# MongoDB: no corruption, no crash.

use strict;
use warnings;

use Test::More;

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

start_foko(workers => 2, http_config => "    foko_chat_shm_size 1m;\n"
    . "    foko_chat_history_cache 100;\n"
    . "    foko_chat_max_message_size 8k;\n");

my ($alice) = signup(username => 'alice');
my ($bob, $b) = signup(username => 'bob');

my @channels;
for my $i (1 .. 12) {
    my ($status, $ch) = api(POST => '/api/channels',
        { name => "c$i", members => [$b->{id}] }, token => $alice);
    push @channels, $ch->{id};
}

# about 12 x 30 x 3 KB: several times what the zone can hold

my $fat = 'x' x 3000;
my $ok = 0;
for my $round (1 .. 30) {
    my @socks = map {
        api_send(POST => "/api/channels/$_/messages",
                 { text => "$round $fat" }, token => $alice)
    } @channels;
    for (@socks) {
        my ($status) = api_recv($_, 20);
        $ok++ if $status == 201;
        close $_;
    }
}
is $ok, 360, 'every post is stored';

like error_log_text(), qr/the shared zone is full: cold channels are evicted/,
    'the evictions are logged';
my $logged = () = error_log_text() =~ /cold channels are evicted/g;
cmp_ok $logged, '<=', 1, 'once';

for my $id (@channels) {
    my ($status, $res) = api(GET => "/api/channels/$id/messages?limit=30",
                             undef, token => $bob);
    is_deeply [map { $_->{seq} } @{ $res->{messages} }], [1 .. 30],
        "channel $id: its whole history, in order";
}

my ($status, $res) = api(GET => '/status');
is $status, 200, 'the status page still answers';

error_log_clean('no alert', qr/\[error\]/);

stop_foko();

done_testing;
