# Two workers store a channel's messages out of order (one is held up):
# history never shows N + 1 before N, and shows both once N is stored.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(sleep);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

my ($uri, $db) = ferretdb_start();

start_foko(workers => 2, mongo_uri => $uri);

my ($alice) = signup(username => 'alice');
my ($bob, $b) = signup(username => 'bob');
my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Order', members => [$b->{id}] }, token => $alice);
my $url = "/api/channels/$ch->{id}/messages";

($status) = api(POST => $url, { text => 'one' }, token => $alice);
is $status, 201, 'a first message';

# one keep-alive connection on each worker

sub request {
    my ($sock, $method, $path, $body) = @_;
    my $content = defined $body ? encode_json($body) : '';
    print {$sock} "$method $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Authorization: Bearer $alice\r\n"
        . "Content-Type: application/json\r\n"
        . 'Content-Length: ' . length($content) . "\r\n\r\n$content";
}

my %conn;
for (1 .. 40) {
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => server_port()) or next;
    request($sock, GET => '/status');
    my (undef, undef, $body) = http_recv($sock, timeout => 5);
    my $pid = decode_json($body)->{pid};
    $conn{$pid} //= $sock;
    last if keys %conn == 2;
}
is scalar keys %conn, 2, 'a connection on each worker';
my ($held, $other) = sort keys %conn;

ferretdb_stop($db);

request($conn{$held}, POST => $url, { text => 'two' });
sleep 0.5;
request($conn{$other}, POST => $url, { text => 'three' });
sleep 0.5;

kill STOP => $held;
ferretdb_start($db);

my ($s3, undef, $b3) = http_recv($conn{$other}, timeout => 30);
is $s3, 201, 'the other worker stores its message';
is decode_json($b3)->{message}{seq}, 3, 'which is seq 3';

my $res;
($status, $res) = api(GET => $url, undef, token => $bob);
is_deeply [map { $_->{seq} } @{ $res->{messages} }], [1],
    'while seq 2 is held up, history stops before it';
($status, $res) = api(GET => "$url?after=1", undef, token => $bob);
is_deeply $res->{messages}, [], 'also when paging after 1';

kill CONT => $held;

my ($s2, undef, $b2) = http_recv($conn{$held}, timeout => 30);
is $s2, 201, 'the held worker stores its message';
is decode_json($b2)->{message}{seq}, 2, 'seq 2';

($status, $res) = api(GET => $url, undef, token => $bob);
is_deeply [map { $_->{seq} } @{ $res->{messages} }], [1, 2, 3],
    'then history has all three, in order';

close $_ for values %conn;
# a batch that times out on a loaded machine is retried, in order: that
# is what this file checks, and no failure; a worker's check (every
# second) may find the stopped FerretDB, and says so, with whichever
# reason the driver gives (a refused connect, a kept connection closed, a
# server selection that timed out)
error_log_clean('nothing at [error] or above but a retried batch',
                qr/messages not written, will retry|MongoDB is unreachable: /);

stop_foko();
ferretdb_stop($db);

done_testing;
