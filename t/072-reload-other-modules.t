# A worker that shuts down (reload, graceful stop) stays while clients
# still wait for an answer from the module, and not for another module's
# own sockets: nchan, loaded next to the module, keeps socket pairs
# between its workers in nginx connections, which are no clients.  Before
# the fix the old worker stayed 60 s after every reload, the bound for
# clients that wait.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;
use FokoChat::Ws qw(ws_mojo wait_until);

my $nchan = $ENV{TEST_NGINX_NCHAN} // '/usr/lib/nginx/modules/ngx_nchan_module.so';
plan skip_all => "nchan is not installed ($nchan; libnginx-mod-nchan)"
    unless -f $nchan;

start_foko(workers => 2, master => 1,
           main_config => "load_module $nchan;",
           config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }

        location = /sub {
            nchan_subscriber;
            nchan_channel_id foko72;
        }

        location = /pub {
            nchan_publisher;
            nchan_channel_id foko72;
        }
_EOC_

my ($ana) = signup(username => 'ana');
my $conn = ws_mojo(token => $ana, timeout => 10);
ok $conn->{ready}, 'a WebSocket client is ready';

my ($st) = api(POST => '/pub', 'hello');
ok $st >= 200 && $st < 300, "nchan publishes: $st";

for my $what ('a reload', 'another reload') {
    my $t0 = time;
    my (undef, $new, $gone) = reload_nginx(gone => 1, timeout => 20);
    is scalar @$new, 2, "$what starts two workers";
    my $took = time - $t0;
    ok $gone && $took < 10, "$what: the old workers exit at once"
        or diag sprintf 'after %.1f s: %s', $took,
                        $gone ? 'gone' : 'still there';
}

wait_until(sub { defined $conn->{closed} }, 5);
is $conn->{closed}, 1001, 'the client of an old worker got 1001';

error_log_clean();

stop_foko();
done_testing();
