# Leaving a channel takes effect at once on every worker, even while other
# requests are loading the channel into the cache.

use strict;
use warnings;

use Test::More;

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

start_foko(workers => 2);

my ($alice) = signup(username => 'alice');
my ($carol, $c) = signup(username => 'carol');

my $leaks = 0;

for my $round (1 .. 15) {
    my ($bob, $b) = signup(username => "bob$round");
    my ($status, $ch) = api(POST => '/api/channels',
        { name => "r$round", members => [$b->{id}, $c->{id}] },
        token => $alice);
    my $url = "/api/channels/$ch->{id}/messages";

    # carol's requests load the channel while bob leaves

    my @busy = map {
        $_ % 2 ? api_send(GET => $url, undef, token => $carol)
               : api_send(POST => $url, { text => "x$_" }, token => $carol)
    } 1 .. 6;
    my ($left) = api(DELETE => "/api/channels/$ch->{id}/members/me", undef,
                     token => $bob);
    api_recv($_, 20) for @busy;
    close $_ for @busy;

    is $left, 204, "round $round: bob left";

    my ($read) = api(GET => $url, undef, token => $bob);
    my ($wrote) = api(POST => $url, { text => 'still here?' },
                      token => $bob);
    $leaks++ if $read != 404 || $wrote != 404;
}

is $leaks, 0, 'after leaving, nobody reads or posts, on any worker';

error_log_clean();

stop_foko();

done_testing;
