# Posts to a channel that is not cached: the first one loads the channel
# from MongoDB and the others posted meanwhile on the same worker wait for
# that load instead of each loading it again.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

my ($uri, $db) = ferretdb_start();

start_foko(workers => 1, mongo_uri => $uri,
           http_config => "    foko_chat_limit signup_address 1000/1h;\n");

my @tokens;
my @ids;
for my $i (1 .. 10) {
    my ($token, $user) = signup(username => "member$i");
    push @tokens, $token;
    push @ids, $user->{id};
}

my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Cold', members => [@ids[1 .. 9]] }, token => $tokens[0]);
is $status, 201, 'a channel of ten';
my $url = "/api/channels/$ch->{id}/messages";

($status) = api(POST => $url, { text => 'first' }, token => $tokens[0]);
is $status, 201, 'a first message: the channel is cached';

# a change of the channel drops it from the cache
($status) = api(PATCH => "/api/channels/$ch->{id}", { name => 'Colder' },
                token => $tokens[0]);
is $status, 200, 'renamed: no longer cached';

sub posts_status {
    my (undef, $s) = api(GET => '/status');
    return $s->{posts};
}

my $before = posts_status();

# MongoDB holds the first load while the other posts come in
kill STOP => $db->{pid};

my @socks = map {
    api_send(POST => $url, { text => "cold $_", client_id => "cold-$_" },
             token => $tokens[$_ % 10])
} 1 .. 30;

sleep 0.5;
my $held = posts_status();
kill CONT => $db->{pid};

is $held->{waited_for_load} - $before->{waited_for_load}, 29,
    'while the first post loads the channel, the 29 others wait for it';

my %seq;
my $created = 0;
for my $sock (@socks) {
    my ($st, $res) = api_recv($sock, 20);
    $created++ if $st == 201;
    $seq{ $res->{message}{seq} }++ if $res && $res->{message};
}

is $created, 30, 'every post is stored';
is_deeply [sort { $a <=> $b } keys %seq], [2 .. 31],
    'with seqs 2 to 31, once each';

my $after = posts_status();
my $loads = $after->{channel_loads} - $before->{channel_loads};
my $waited = $after->{waited_for_load} - $before->{waited_for_load};

is $loads, 1, 'the channel was loaded once for the 30 posts';
is $waited, 29, 'the others waited for that load';
is $after->{queued}, 0, 'nothing is left in the write queue';

($status, my $page) = api(GET => "$url?after=0&limit=100", undef,
                          token => $tokens[3]);
is scalar @{ $page->{messages} }, 31, 'history has all 31';

my @problems = grep { /\[(error|crit|alert|emerg)\]/ } error_log_lines();
is_deeply \@problems, [], 'the error log is clean';

error_log_clean();

stop_foko();
ferretdb_stop($db);
done_testing();
