# Live messages follow the stored-through mark: when two workers store a
# channel's messages out of order (one is held up), a subscriber gets N
# before N + 1, each once, on either worker.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(sleep);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my ($uri, $db) = ferretdb_start();

start_foko(workers => 2, mongo_uri => $uri, config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my ($alice) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');
my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Order', members => [$ub->{id}] }, token => $alice);
my $cid = $ch->{id};
my $url = "/api/channels/$cid/messages";

($status) = api(POST => $url, { text => 'one' }, token => $alice);
is $status, 201, 'a first message';

sub request {
    my ($sock, $method, $path, $body) = @_;
    my $content = defined $body ? encode_json($body) : '';
    print {$sock} "$method $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Authorization: Bearer $alice\r\n"
        . "Content-Type: application/json\r\n"
        . 'Content-Length: ' . length($content) . "\r\n\r\n$content";
}

# a keep-alive connection on each worker for the posts
my %conn;
for (1 .. 40) {
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => server_port()) or next;
    request($sock, GET => '/status');
    my (undef, undef, $body) = http_recv($sock, timeout => 5);
    $conn{ decode_json($body)->{pid} } //= $sock;
    last if keys %conn == 2;
}
is scalar keys %conn, 2, 'a connection on each worker';
my ($held, $other) = sort keys %conn;

# bob listens on both workers
my @B = map { ws_mojo(token => $bob, pid => $_) } $held, $other;
is $B[0]{ready}{channels}[0]{last_seq}, 1, 'bob is ready at seq 1';

ferretdb_stop($db);

request($conn{$held}, POST => $url, { text => 'two' });
sleep 0.5;
request($conn{$other}, POST => $url, { text => 'three' });
sleep 0.5;

kill STOP => $held;
ferretdb_start($db);

my ($s3, undef, $b3) = http_recv($conn{$other}, timeout => 30);
is $s3, 201, 'the other worker stores its message first';
is decode_json($b3)->{message}{seq}, 3, 'seq 3';

# the subscriber on the running worker must not see 3 before 2
wait_until(sub { 0 }, 1.5);
is_deeply [$B[1]->seqs($cid)], [], 'while seq 2 is held up, 3 waits';

kill CONT => $held;

my ($s2, undef, $b2) = http_recv($conn{$held}, timeout => 30);
is $s2, 201, 'the held worker stores its message';
is decode_json($b2)->{message}{seq}, 2, 'seq 2';

for my $i (0, 1) {
    ok wait_until(sub { $B[$i]->seqs($cid) >= 2 }, 10),
        "bob's connection $i gets both";
}
wait_until(sub { 0 }, 0.5);
for my $i (0, 1) {
    is_deeply [$B[$i]->seqs($cid)], [2, 3], "connection $i: 2 then 3, once each";
}

$_->close for @B;
close $_ for values %conn;

error_log_clean('nothing unexpected at error or above',
    qr/not written, will retry|unreachable|No suitable servers|Failed to connect|connection refused/i);

stop_foko();
ferretdb_stop($db);
done_testing();
