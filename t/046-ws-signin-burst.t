# A burst of sign-ins (every client back at once after a restart): at
# most 64 are checked on the thread pool at a time, the others wait for
# their turn, and every one of them gets "ready" and then every message.
# A bad token is refused at once, not after the queue; a connection that
# goes away while it waits is let go at once: it leaves no trace in the
# counters and its user is never announced online. A reload closes the
# waiting ones with 1001. Both bursts come while MongoDB is paused
# (SIGSTOP), so that they queue however fast a sign-in is otherwise.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

# one storage thread, so that the sign-ins queue up; a FerretDB of its
# own, to hold the second burst in the queue
my ($uri, $db) = ferretdb_start();
start_foko(mongo_uri => $uri,
           master => 1,
           main_config => "thread_pool burst threads=1;\n",
           http_config => "    foko_chat_thread_pool burst;\n",
           config => <<'_EOC_');
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

my ($alice, $ua) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');
my ($carol, $uc) = signup(username => 'carol');
my ($status, $room) = api(POST => '/api/channels',
    { name => 'Room', members => [$ub->{id}, $uc->{id}] }, token => $alice);
is $status, 201, 'a channel of alice, bob and carol';

sub ws_status {
    my ($st, $s) = api(GET => '/status');
    die "GET /status: $st\n" unless $st == 200;
    return $s->{websocket};
}

my $n = 300;
my (@live, @bad);
my ($most_running, $most_waiting) = (0, 0);
my $sample = sub {
    my $w = ws_status();
    $most_running = $w->{signing_in} if $w->{signing_in} > $most_running;
    $most_waiting = $w->{waiting_to_sign_in}
        if $w->{waiting_to_sign_in} > $most_waiting;
};

# carol's connections come late in the burst, when the queue is long,
# and leave at once
my $leaves = sub { $_[0] > 200 && $_[0] % 10 == 5 };
# MongoDB paused for the burst: a sign-in takes as long as it takes when
# the database is slow, whatever the zone holds
kill STOP => $db->{pid};
for my $i (1 .. $n) {
    # the token in the upgrade's header: the sign-in starts at the 101
    my ($st, $h, $body, $c) = ws_handshake(token => $i % 50 == 0
        ? "$alice" . 'x' : $leaves->($i) ? $carol : $i % 2 ? $alice : $bob);
    die "upgrade $i: " . ($st // 'nothing') . "\n" unless $c;
    if ($i % 50 == 0) {
        push @bad, $c;
    } elsif ($leaves->($i)) {
        $c->close;
        $sample->();
    } else {
        push @live, $c;
    }
    $sample->() if $i % 20 == 0;
}

ok $most_waiting > 0,
    "connections waited for a turn (up to $most_waiting at once)";
ok $most_running <= 64,
    "at most 64 sign-ins on the thread pool at once (saw $most_running)";

for my $c (@bad) {
    my $r = $c->wait_close(5);
    is $r->{code}, 4001, 'a bad token in the burst is refused with 4001';
}
kill CONT => $db->{pid};

my $readies = 0;
for my $c (@live) {
    $c->{ready} = $c->next_event(60, 'ready');
    $readies++ if $c->{ready} && @{ $c->{ready}{channels} } == 1;
    $sample->() if $readies % 40 == 0;
}
is $readies, scalar @live,
    'every connection that stayed got ready with its channel ('
    . scalar(@live) . ')';
ok $most_running <= 64, "still at most 64 at once (saw $most_running)";

ok wait_until(sub {
        my $w = ws_status();
        $w->{connections} == @live && $w->{signing_in} == 0
            && $w->{waiting_to_sign_in} == 0
    }, 10),
    'the counters come back: only the connections that stayed, none waiting'
    or diag explain ws_status();

my ($st2, $posted) = api(POST => "/api/channels/$room->{id}/messages",
    { text => 'after the storm' }, token => $alice);
is $st2, 201, 'a message after the burst';

my $got = grep {
    my $ev = $_->next_event(10, 'message');
    $ev && $ev->{message}{seq} == $posted->{message}{seq}
        && $ev->{message}{text} eq 'after the storm'
} @live;
is $got, scalar @live, 'every connection received it';

my @carol_online = grep {
    ($_->{type} // '') eq 'presence' && ($_->{user_id} // '') eq $uc->{id}
} map { $_->drain_events(0.01) } @live;
is scalar @carol_online, 0,
    'carol, whose connections left while they waited, was never online';

# --- a reload while sign-ins wait -------------------------------------------

# MongoDB paused: the sign-in on the thread does not end, the rest wait;
# of a user who never signed in, whose account the zone does not hold
my ($dave) = signup(username => 'dave');
kill STOP => $db->{pid};
my @storm;
for (1 .. 150) {
    my $c = (ws_handshake(token => $dave))[3] or die "upgrade refused\n";
    push @storm, $c;
}
my $w = ws_status();
ok $w->{waiting_to_sign_in} > 0,
    "a second burst waits ($w->{waiting_to_sign_in} connections)";
my ($old) = reload_nginx();
kill CONT => $db->{pid};
my $ended = grep {
    my $r = $_->wait_close(20);
    ($r->{code} // 0) == 1001
} @storm;
is $ended, 150, 'then a reload: every one of them is closed with 1001';
ok wait_until(sub { !grep { kill 0, $_ } @$old }, 20),
    'and the old worker exits';

error_log_clean('the error log is clean');

stop_foko();
ferretdb_stop($db);
done_testing;
