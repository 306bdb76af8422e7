# Several nginx hosts as one chat through one Redis: three instances of
# the module (own zones, own masters) on one FerretDB and one Redis.
# WebSocket clients on every host get every message posted on any host,
# once and in seq order; a channel change on one host reaches a client
# on another live; a Redis that restarts empty makes the clients resume.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

system('command -v redis-server >/dev/null') == 0
    or plan skip_all => 'redis-server is not installed';

my $redis = redis_start();

# a FerretDB of its own: on the suite's shared one, grown by every file
# before, the renumbering of colliding posts reads the whole messages
# table and passes the posts' 5 s bound
my ($uri, $db) = ferretdb_start();

sub host_config {
    my $id = shift;
    return (
        workers => 2,
        mongo_uri => $uri,
        main_config => "thread_pool foko_redis threads=2;\n",
        http_config => "    foko_chat_redis_url $redis->{uri};\n"
                     . "    foko_chat_host_id $id;\n"
                     . "    foko_chat_redis_partitions 4;\n",
        config => <<'_EOC_',
        location = /ws {
            foko_chat_websocket;
        }
_EOC_
    );
}

# host A is the test's own server root; B and C beside it
start_foko(host_config('host-a'));
my $A = { name => 'A', root => server_root(), port => server_port() };
my $B = start_foko_host(name => 'b', host_config('host-b'));
my $C = start_foko_host(name => 'c', host_config('host-c'));
$B->{name} = 'B';
$C->{name} = 'C';
my @hosts = ($A, $B, $C);

sub status_of {
    my $h = shift;
    return on_host($h, sub { (api(GET => '/status'))[1] });
}

# every host's reader has looked at Redis before any client comes
ok wait_until(sub {
    !grep { (status_of($_)->{redis}{state} // '') ne 'up' } @hosts
}, 10), 'every host reaches Redis';
sleep 0.5;

my $st = status_of($B);
is $st->{redis}{host_id}, 'host-b', 'the status names the host';

my ($alice, $ua) = signup(username => 'alice');
my ($bob, $ub) = on_host($B, sub { signup(username => 'bob') });
my $carol_email = unique_email('carol');
my ($carol, $uc) = on_host($C, sub {
    signup(username => 'carol', email => $carol_email)
});
my ($dave, $ud) = signup(username => 'dave');

my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Hosts', members => [$ub->{id}, $uc->{id}] }, token => $alice);
is $status, 201, 'alice creates a channel with bob and carol';
my $cid = $ch->{id};
my $url = "/api/channels/$cid/messages";

# two clients of each member, each on its own host
my %who = (A => $alice, B => $bob, C => $carol);
my @clients;
for my $h (@hosts) {
    for (1 .. 2) {
        my $c = on_host($h, sub { ws_mojo(token => $who{ $h->{name} }) });
        $c->{host} = $h->{name};
        push @clients, $c;
    }
}
my ($dave_ws) = on_host($C, sub { ws_mojo(token => $dave) });

# --- every message posted on any host, on every host, once, in order -------

my @posted;
for my $round (1 .. 5) {
    for my $h (@hosts) {
        my ($st, $res) = on_host($h, sub {
            api(POST => $url, { text => "round $round from $h->{name}" },
                token => $who{ $h->{name} })
        });
        is $st, 201, "round $round: a post on host $h->{name}";
        push @posted, $res->{message}{seq};
    }
}

is_deeply [sort { $a <=> $b } @posted], [1 .. 15],
    'posts on three hosts, one after another, take seqs 1 to 15';

ok wait_until(sub { !grep { $_->seqs($cid) < 15 } @clients }, 10),
    'every client on every host gets all 15 messages';
for my $c (@clients) {
    is_deeply [$c->seqs($cid)], [1 .. 15],
        "a client on host $c->{host}: each once, in seq order";
}
is scalar $dave_ws->messages($cid), 0, 'a non-member gets none';

my @texts = map { $_->{text} } $clients[5]->messages($cid);
is $texts[0], 'round 1 from A', 'with the text posted on the other host';

# --- a channel change on host A reaches a client on host C live ------------

($status) = on_host($A, sub {
    api(POST => '/api/channels', { name => 'Later', members => [$ud->{id}] },
        token => $alice)
});
is $status, 201, 'alice, on host A, creates a channel with dave';
ok wait_until(sub {
    grep { ($_->{type} // '') eq 'channel' && $_->{event} eq 'created' }
        $dave_ws->events
}, 5), 'dave, on host C, gets it live';

my ($later) = map { $_->{channel}{id} }
    grep { ($_->{type} // '') eq 'channel' && $_->{event} eq 'created' }
    $dave_ws->events;
($status) = api(POST => "/api/channels/$later/messages", { text => 'hi dave' },
                token => $alice);
is $status, 201, 'alice posts there on host A';
ok wait_until(sub { $dave_ws->seqs($later) >= 1 }, 5),
    'dave gets it on host C, in the channel he just joined';

# --- with Redis the channel list reads MongoDB: marks of other hosts count --

sub bob_unread {
    my $h = shift;
    my ($st, $list) = on_host($h, sub {
        api(GET => '/api/channels', undef, token => $bob)
    });
    return join ',', map { $_->{unread} } grep { $_->{id} eq $cid } @$list;
}

is bob_unread($C), '15', 'bob on host C: 15 unread';
is bob_unread($C), '15', 'twice';
($status) = on_host($B, sub {
    api(POST => "/api/channels/$cid/read", { seq => 15 }, token => $bob)
});
is $status, 200, 'bob marks all read on host B';
is bob_unread($C), '0', 'host C lists none unread at once';
is status_of($C)->{channel_lists}{from_zone}, 0,
    'host C answered every list from MongoDB';
is_deeply [$dave_ws->seqs($later)], [1], 'once';

# --- a leave on host B stops delivery on host C ----------------------------

sub channel_events {
    my ($c, $event, $id) = @_;
    return grep { ($_->{event} // '') eq $event
                  && ($_->{channel}{id} // '') eq $id }
        $c->events(type => 'channel');
}

($status, my $lv) = on_host($A, sub {
    api(POST => '/api/channels',
        { name => 'Leave', members => [$ub->{id}, $uc->{id}] }, token => $alice)
});
is $status, 201, 'alice, on host A, creates a channel with bob and carol';
my $lid = $lv->{id};
my $lurl = "/api/channels/$lid/messages";
ok wait_until(sub { !grep { !channel_events($_, 'created', $lid) } @clients }, 5),
    'every client on every host gets it';
($status) = api(POST => $lurl, { text => 'before the leave' }, token => $alice);
is $status, 201, 'alice posts there on host A';
ok wait_until(sub { !grep { $_->seqs($lid) < 1 } @clients }, 5),
    'every client gets it';

($status) = on_host($B, sub {
    api(DELETE => "/api/channels/$lid/members/me", undef, token => $carol)
});
is $status, 204, 'carol leaves through host B';
ok wait_until(sub {
    !grep {
        !grep { ($_->{user}{id} // '') eq $uc->{id} } channel_events($_, 'left', $lid)
    } @clients[0 .. 3]
}, 5), 'the clients of alice on A and bob on B get "left" naming her';
($status, my $after) = on_host($A, sub {
    api(POST => $lurl, { text => 'after the leave' }, token => $alice)
});
is $after->{message}{seq}, 2, 'alice posts again on host A';
ok wait_until(sub { !grep { $_->seqs($lid) < 2 } @clients[0 .. 3] }, 5),
    'the members on hosts A and B get it';
# a second more for a late one
wait_until(sub { 0 }, 1);
for my $c (@clients[4, 5]) {
    is_deeply [$c->seqs($lid)], [1], 'carol, on host C, does not get it';
}

# --- typing and read marks cross too ---------------------------------------

$clients[0]->send_json({ type => 'typing', channel_id => $cid });
ok wait_until(sub {
    grep { ($_->{type} // '') eq 'typing' } $clients[4]->events
}, 5), 'alice typing on host A shows on host C';

($status) = on_host($B, sub {
    api(POST => "/api/channels/$cid/read", { seq => 15 }, token => $bob)
});
is $status, 200, 'bob marks the channel read on host B';
ok wait_until(sub {
    grep { ($_->{type} // '') eq 'read' && $_->{user_id} eq $ub->{id} }
        $clients[0]->events
}, 5), 'alice on host A sees his read mark';

# --- an edit on host B and a deletion on host C reach host A ---------------

my %by_seq = map { $_->{seq} => $_ } $clients[0]->messages($cid);
($status) = on_host($B, sub {
    api(PATCH => "$url/$by_seq{2}{id}", { text => 'edited on B' },
        token => $bob)
});
is $status, 200, 'bob edits his message on host B';
($status) = on_host($C, sub {
    api(DELETE => "$url/$by_seq{3}{id}", undef, token => $carol)
});
is $status, 200, 'carol deletes hers on host C';
ok wait_until(sub {
    (grep { ($_->{message}{text} // '') eq 'edited on B' }
         $clients[1]->events(type => 'message_updated'))
    && (grep { $_->{seq} == 3 } $clients[1]->events(type => 'message_deleted'))
}, 5), 'a client on host A gets both';
my ($hs0, $page) = on_host($C, sub {
    api(GET => "$url?after=1&limit=2", undef, token => $carol)
});
is_deeply [map { [$_->{seq}, $_->{text}, $_->{deleted} ? 1 : 0] }
           @{ $page->{messages} }],
    [[2, 'edited on B', 0], [3, '', 1]], 'history on host C has both';

# --- posts on all hosts at once: seqs 1..N, none twice ---------------------

my $n = 30;
my @socks;
for my $i (1 .. $n) {
    my $h = $hosts[$i % 3];
    push @socks, [$h, on_host($h, sub {
        api_send(POST => $url, { text => "burst $i" },
                 token => $who{ $h->{name} })
    })];
}
my (@burst, @failed);
for my $s (@socks) {
    my ($st, $res) = api_recv($s->[1], 20);
    close $s->[1];
    if ($st == 201) {
        push @burst, $res->{message}{seq};
    } else {
        push @failed, $st;
    }
}
is scalar @failed, 0, "$n posts at once over three hosts are all stored"
    or diag "answers: @failed";
my %seen;
is scalar(grep { $seen{$_}++ } @burst), 0, 'no seq answered twice';
is_deeply [sort { $a <=> $b } @burst], [16 .. 15 + $n],
    "and together they are seqs 16 to @{[15 + $n]}";

ok wait_until(sub { !grep { $_->seqs($cid) < 15 + $n } @clients }, 15),
    'every client gets the burst';
for my $c (@clients) {
    is_deeply [$c->seqs($cid)], [1 .. 15 + $n],
        "a client on host $c->{host}: the burst too, each once, in order";
}

my ($hs, $hist) = api(GET => "$url?after=0&limit=200", undef, token => $bob);
is_deeply [map { $_->{seq} } @{ $hist->{messages} }], [1 .. 15 + $n],
    'history has them once each';

my $reseq = grep { /was stored by other workers/ }
    map { on_host($_, sub { error_log_lines() }) } @hosts;
is $reseq, 0, 'none renumbered after a collision: Redis numbers the posts '
    . 'of every host';

for my $h (@hosts) {
    my $s = status_of($h)->{redis};
    ok $s->{published} > 0 && $s->{applied} > 0,
        "host $h->{name}: published $s->{published}, applied $s->{applied}";
    is $s->{losses}, 0, "host $h->{name}: no loss";
}

my $prom = on_host($B, sub { (api(GET => '/status?format=prometheus'))[3] });
like $prom, qr/^foko_chat_redis_applied_total \d+$/m, 'the metrics have it';

# --- Redis restarts empty: the clients of every host resume ----------------

redis_stop($redis);
redis_start($redis);
ok wait_until(sub { !grep { !defined $_->{closed} } @clients }, 10),
    'after Redis restarted empty, every client is closed';
is_deeply [sort { $a <=> $b } map { $_->{closed} } @clients],
    [(1013) x @clients], 'with 1013, to resume';
ok wait_until(sub {
    !grep { (status_of($_)->{redis}{losses} // 0) < 1 } @hosts
}, 5), 'every host counted the loss';

my @new;
for my $h (@hosts) {
    push @new, on_host($h, sub { ws_mojo(token => $who{ $h->{name} }) });
}
($status) = on_host($C, sub {
    api(POST => $url, { text => 'after the restart' }, token => $carol)
});
is $status, 201, 'carol posts on host C after the restart';
ok wait_until(sub { !grep { !$_->seqs($cid) } @new }, 10),
    'the new clients of every host get it';
is_deeply [map { [$_->seqs($cid)] } @new], [([16 + $n]) x 3],
    'with the next seq';

# --- a reload of B, host A's reader killed: each entry applied once --------

my $losses = { map { $_->{name} => status_of($_)->{redis}{losses} } @hosts };
$_->close for @new;

my ($old, $reloaded) = on_host($B, sub { reload_nginx() });
is scalar @$reloaded, 2, 'host B reloads';
ok wait_until(sub { !grep { kill 0 => $_ } @$old }, 10),
    'and its old workers are gone';

my $metrics = on_host($A, sub {
    (api(GET => '/status?format=prometheus'))[3]
});
my ($reader) = $metrics =~ /^foko_chat_worker_pid\{worker="0"\} (\d+)$/m;
ok $reader, "host A's worker 0 reads";
kill KILL => $reader;
ok wait_until(sub {
    my @w = on_host($A, sub { worker_pids() });
    @w == 2 && !grep { $_ == $reader } @w
}, 10), 'and is replaced when killed';

my @late;
for my $h (@hosts) {
    my $c = on_host($h, sub { ws_mojo(token => $who{ $h->{name} }) });
    $c->{host} = $h->{name};
    push @late, $c;
}
my @more;
for my $h (@hosts) {
    my ($st, $res) = on_host($h, sub {
        api(POST => $url, { text => "late from $h->{name}" },
            token => $who{ $h->{name} })
    });
    is $st, 201, "a post on host $h->{name} after that";
    push @more, $res->{message}{seq};
}
is_deeply \@more, [17 + $n .. 19 + $n], 'with the next seqs';
ok wait_until(sub { !grep { $_->seqs($cid) < 3 } @late }, 10),
    'the clients of every host get them'
    or diag explain [map { status_of($_)->{redis} } @hosts];
for my $c (@late) {
    is_deeply [$c->seqs($cid)], \@more,
        "a client on host $c->{host}: each once, in order";
}
for my $h (@hosts) {
    is status_of($h)->{redis}{losses}, $losses->{ $h->{name} },
        "host $h->{name}: the reload and the new reader lost nothing";
}

# --- how long a message takes to another host, beside the same host -------

my (@same, @cross);
my ($la, $lb) = @late[0, 1];
for my $i (1 .. 20) {
    my $t0 = time;
    my ($st, $res) = on_host($B, sub {
        api(POST => $url, { text => "timed $i" }, token => $bob)
    });
    my $s = $res->{message}{seq};
    my ($tb, $ta);
    wait_until(sub {
        $tb //= time if grep { $_ == $s } $lb->seqs($cid);
        $ta //= time if grep { $_ == $s } $la->seqs($cid);
        $ta && $tb
    }, 5);
    push @same, ($tb // time) - $t0;
    push @cross, ($ta // time) - $t0;
}
sub ms { sprintf '%.1f', 1000 * $_[0] }
@same = sort { $a <=> $b } @same;
@cross = sort { $a <=> $b } @cross;
note sprintf 'post on B to frame on B: median %s ms, max %s ms; '
    . 'to frame on A: median %s ms, max %s ms (20 posts)',
    ms($same[10]), ms($same[-1]), ms($cross[10]), ms($cross[-1]);
ok $cross[-1] < 5, 'every timed message reached host A';

# --- entries missing from a stream: the clients of every host resume ------

$losses = { map { $_->{name} => status_of($_)->{redis}{losses} } @hosts };
for my $p (0 .. 3) {
    my $top = redis_cli($redis, 'GET', "foko:{$p}:n") || 0;
    my $id = $top + 5;
    redis_cli($redis, 'XADD', "foko:{$p}:ev", "$id-0", host => 'x/0',
              kind => 'read', channel => $cid, seq => 0, json => '{}');
    redis_cli($redis, 'SET', "foko:{$p}:n", $id);
}
ok wait_until(sub { !grep { !defined $_->{closed} } @late }, 10),
    'after ids that skip 4 in every stream, every client is closed';
is_deeply [map { $_->{closed} } @late], [(1013) x @late], 'with 1013';
for my $h (@hosts) {
    ok status_of($h)->{redis}{losses} > $losses->{ $h->{name} },
        "host $h->{name} counts the loss";
}
my @gap = grep { /events of other hosts were lost in partition \d: entries are missing/ }
    on_host($B, sub { error_log_lines() });
ok scalar @gap, 'and logs it at warn, naming the partition';

# --- a quiet channel whose last event host A never read ------------------
# Host A's reader (worker 0) is gone, its master paused so that nothing
# replaces it, while bob posts on host B into a channel that then stays
# quiet, and the post's stream entry is gone (trimmed, or its host died
# between MongoDB's acknowledgement and its XADD): no later event shows
# host A the hole, only the channel's counter in Redis knows the seq.
# Host A's history reaches it all the same.

# the seqs of a channel's history on host $h
sub quiet_seqs {
    my ($h, $qurl) = @_;
    my ($st, $res) = on_host($h, sub {
        api(GET => "$qurl?after=0&limit=50", undef, token => $alice)
    });
    return $st == 200 ? map { $_->{seq} } @{ $res->{messages} } : ();
}

# a channel of alice and bob with alice's first message in it, on host B
# too: its id and messages URL
sub quiet_channel {
    my $name = shift;
    my ($st, $ch) = api(POST => '/api/channels',
        { name => $name, members => [$ub->{id}] }, token => $alice);
    is $st, 201, "alice creates the quiet channel \"$name\" with bob";
    my $qurl = "/api/channels/$ch->{id}/messages";
    is((api(POST => $qurl, { text => 'first, on A' }, token => $alice))[0],
       201, 'alice posts the first message on host A');
    ok wait_until(sub { ((quiet_seqs($B, $qurl))[-1] // 0) == 1 }, 10),
        'host B has it';
    return ($ch->{id}, $qurl);
}

# host A's worker 0 (its reader) killed, its master paused so that nothing
# replaces it; bob posts on host B: the master's and the reader's pids
sub bob_posts_unread {
    my $qurl = shift;
    my $master = on_host($A, sub { master_pid() });
    my ($r) = on_host($A, sub { (api(GET => '/status?format=prometheus'))[3] })
        =~ /^foko_chat_worker_pid\{worker="0"\} (\d+)$/m;
    kill STOP => $master;
    kill KILL => $r;
    sleep 0.3;
    my ($st, $res) = on_host($B, sub {
        api(POST => $qurl, { text => 'second, on B' }, token => $bob)
    });
    is $st, 201, 'bob posts the second on host B while host A reads nothing';
    is $res->{message}{seq}, 2, 'seq 2';
    return ($master, $r);
}

# host A's master goes on, and a new worker 0 replaces the killed one
sub host_a_goes_on {
    my ($master, $r) = @_;
    kill CONT => $master;
    ok wait_until(sub {
        my @w = on_host($A, sub { worker_pids() });
        @w == 2 && !grep { $_ == $r } @w
    }, 10), "host A's worker 0 is replaced";
}

my ($quiet, $qurl) = quiet_channel('Quiet');
my ($a_master, $reader2) = bob_posts_unread($qurl);
my @gone;
for my $p (0 .. 3) {
    my @lines = split /\n/,
        redis_cli($redis, 'XREVRANGE', "foko:{$p}:ev", '+', '-', 'COUNT', 5);
    while (@lines) {
        my ($id, %f) = (shift @lines);
        while (@lines && $lines[0] !~ /^\d+-\d+$/) {
            my $k = shift @lines;
            $f{$k} = shift @lines;
        }
        push @gone, [$p, $id] if ($f{channel} // '') eq $quiet
            && ($f{seq} // '') eq '2';
    }
}
is scalar @gone, 1, "the post's entry is in one stream";
redis_cli($redis, 'XDEL', "foko:{$_->[0]}:ev", $_->[1]) for @gone;
host_a_goes_on($a_master, $reader2);
is_deeply [quiet_seqs($B, $qurl)], [1, 2], 'host B shows both';
my $t_quiet = time;
ok wait_until(sub { ((quiet_seqs($A, $qurl))[-1] // 0) == 2 }, 45),
    "host A's history reaches the seq that only Redis's counter knew"
    or diag explain [quiet_seqs($A, $qurl)];
note sprintf 'host A shows seq 2 %.1f s after its reader came back',
    time - $t_quiet;
my ($ast, $ares) = on_host($A, sub { api(GET => $qurl, undef, token => $alice) });
is $ares->{messages}[-1]{text}, 'second, on B', 'with its text';
ok status_of($A)->{redis}{seqs_heard} >= 1,
    'host A counts the seq it heard of from the counter only';

# --- a quiet channel whose last event and counter Redis lost --------------
# The same, but Redis restarts empty instead: the post's entry and the
# channel's counter are gone with it. Host A asks MongoDB for the highest
# seq of the channels whose counters Redis lacks, right after the loss.

my ($quiet2, $q2url) = quiet_channel('Quiet too');
my $heard0 = status_of($A)->{redis}{seqs_heard};
($a_master, my $reader3) = bob_posts_unread($q2url);
sleep 0.3;
redis_stop($redis);
redis_start($redis);
is redis_cli($redis, 'EXISTS', "foko:seq:$quiet2"), '0',
    'Redis restarted empty: the counter is gone with the entry';
host_a_goes_on($a_master, $reader3);
is_deeply [quiet_seqs($B, $q2url)], [1, 2], 'host B shows both';
$t_quiet = time;
ok wait_until(sub { ((quiet_seqs($A, $q2url))[-1] // 0) == 2 }, 45),
    "host A's history reaches the seq that only MongoDB knew"
    or diag explain [quiet_seqs($A, $q2url)];
note sprintf 'host A shows seq 2 %.1f s after its reader came back',
    time - $t_quiet;
ok status_of($A)->{redis}{seqs_heard} > $heard0,
    'host A counts the seq it heard of from MongoDB';

# --- the logs --------------------------------------------------------------

for my $h (@hosts) {
    my @bad = grep { /\[(?:alert|crit|error|emerg)\]/
                     && !/worker process (?:$reader|$reader2|$reader3) exited on signal 9/ }
        on_host($h, sub { error_log_lines() });
    is scalar @bad, 0, "host $h->{name}: no error in the log"
        or diag @bad[0 .. ($#bad < 4 ? $#bad : 4)];
}
my @warn = grep { /events of other hosts may be lost/ }
    on_host($A, sub { error_log_lines() });
is scalar @warn, 2,
    'each restart of Redis (the second while host A\'s reader was gone) is '
    . 'logged at warn';

$_->close for @late, $dave_ws;
stop_foko_host($B);
stop_foko_host($C);
stop_foko();
redis_stop($redis);
ferretdb_stop($db);

done_testing;
