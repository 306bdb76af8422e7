# Operations under live traffic, each bounded in time, on loopback:
# (a) "nginx -s reload" while messages are posted keeps the zone, closes
#     the old workers' WebSocket connections with 1001, and clients that
#     reconnect and resume miss no message;
# (b) a graceful stop (SIGQUIT) writes the posts a worker holds to MongoDB
#     before it exits: every acknowledged post is in history after a
#     restart;
# (d) with MongoDB hung for good, a graceful stop still ends within its
#     bound (20 s after the quit): the posts it held are answered 503 or
#     201, what was 201 is stored once, and a retry of a 503 with the same
#     client_id once MongoDB is back stores it once;
# (c) a worker killed with SIGKILL is replaced, its clients reconnect and
#     resume, and the zone is not left locked: a post and a sign-in
#     succeed at once.

use strict;
use warnings;

use List::Util qw(max);
use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my ($uri, $db) = ferretdb_start();

my $ws_location = <<'_EOC_';
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

sub start {
    start_foko(workers => 2, mongo_uri => $uri, config => $ws_location,
               http_config => "    foko_chat_presence_grace 1s;\n", @_);
}

start();

my @users = map {
    my ($token, $user) = signup(username => "u$_");
    { name => "u$_", token => $token, id => $user->{id} }
} 1 .. 4;
my $poster = $users[0];

sub channel {
    my $name = shift;
    my ($st, $ch) = api(POST => '/api/channels',
        { name => $name, members => [map { $_->{id} } @users[1 .. 3]] },
        token => $poster->{token});
    die "channel $name: $st\n" unless $st == 201;
    return $ch->{id};
}

sub status { (api(GET => '/status'))[1] }

# --- clients that reconnect and resume -------------------------------------

# A user's connections in turn (a new one when the last has ended), all
# following channel $cid: the seqs of all of them together.
sub seen {
    my ($u, $cid) = @_;
    return map { $_->seqs($cid) } @{ $u->{conns} };
}

sub connect_user {
    my ($u, $cid, %o) = @_;
    my $c;
    for (1 .. 50) {
        $c = eval { ws_mojo(token => $u->{token}, %o) } and last;
        sleep 0.1;
    }
    die "$u->{name} cannot reconnect\n" unless $c;
    push @{ $u->{conns} }, $c;
    my $last = max(0, seen($u, $cid));
    my ($ch) = grep { $_->{id} eq $cid } @{ $c->{ready}{channels} };
    if ($ch && $ch->{last_seq} > $last) {
        $c->send_json({ type => 'resume', channels => { $cid => $last } });
        $u->{resumes}++;
    }
    return $c;
}

# Runs the loop a moment; reconnects the users whose connection ended.
sub pump {
    my $cid = shift;
    FokoChat::Ws::wait_until(sub { 0 }, 0.02);
    for my $u (@users) {
        my $c = $u->{conns}[-1];
        next unless defined $c->{closed};
        push @{ $u->{closes} }, $c->{closed};
        connect_user($u, $cid);
    }
}

# every user got exactly the seqs of @$want, once each
sub check_delivery {
    my ($what, $cid, $want) = @_;
    my %want = map { $_ => 1 } @$want;
    FokoChat::Ws::wait_until(sub {
        pump($cid);
        !grep { my $u = $_;
                scalar(grep { $want{$_} } seen($u, $cid)) < @$want } @users
    }, 15);
    for my $u (@users) {
        my %n;
        $n{$_}++ for seen($u, $cid);
        my @missing = grep { !$n{$_} } @$want;
        is "@missing", '', "$what: $u->{name} misses nothing";
    }
}

sub post {
    my ($cid, $text) = @_;
    my ($st, $res) = api(POST => "/api/channels/$cid/messages",
        { text => $text, client_id => $text }, token => $poster->{token},
        timeout => 10);
    return $st == 201 ? $res->{message}{seq} : undef;
}

# --- (a) a reload under live traffic ---------------------------------------

my $cid = channel('Reload');
my @pids = wait_workers(2);
for my $i (0 .. $#users) {
    $users[$i]{conns} = [];
    connect_user($users[$i], $cid, pid => $pids[$i % 2]);
}
my $before = status();
my $n = 40;
my @acked;
for my $i (1 .. $n) {
    if ($i == 15) {
        kill HUP => master_pid();
        note 'reload sent';
    }
    my $seq = post($cid, "reload-$i");
    push @acked, $seq if defined $seq;
    pump($cid);
}
is_deeply \@acked, [1 .. $n], "(a) $n posts across the reload, all stored";
check_delivery('(a)', $cid, \@acked);
for my $u (@users) {
    is $u->{closes}[0], 1001, "(a) $u->{name}'s old connection closed with 1001";
}
my $after = status();
is $after->{zone}{created}, $before->{zone}{created},
    '(a) the reload kept the zone (same creation time)';
is $after->{zone}{reloads}, $before->{zone}{reloads} + 1,
    '(a) and counted the reload';
my @new = wait_workers(2);
ok !grep({ my $p = $_; grep { $_ == $p } @pids } @new),
    '(a) only new workers are left';

# --- (c) a worker killed with SIGKILL ------------------------------------

$_->{conns}[-1]->close for @users;
my $cid2 = channel('Kill');
@pids = wait_workers(2);
for my $i (0 .. $#users) {
    @{ $users[$i] }{qw(conns closes resumes)} = ([], [], 0);
    connect_user($users[$i], $cid2, pid => $pids[$i % 2]);
}
my $victim = $pids[0];
@acked = ();
my ($post_took, $login_took);
for my $i (1 .. 30) {
    if ($i == 10) {
        kill KILL => $victim;
        my $t0 = time;
        my $seq = post($cid2, "kill-$i");
        $post_took = time - $t0;
        push @acked, $seq if defined $seq;
        ok defined $seq, '(c) a post right after the kill succeeds';
        $t0 = time;
        my ($st) = api(POST => '/api/auth/login',
            { email => 'nobody@example.com', password => 'wrong horse' });
        my ($st2) = api(POST => '/api/auth/signup', { email =>
            unique_email('after'), password => 'correct horse',
            username => 'after' });
        $login_took = time - $t0;
        is $st, 401, '(c) a sign-in right after it is answered';
        is $st2, 201, '(c) and a sign-up';
        next;
    }
    my $seq = post($cid2, "kill-$i");
    push @acked, $seq if defined $seq;
    pump($cid2);
}
cmp_ok $post_took, '<', 2, '(c) the post took under 2 s (zone not locked)';
cmp_ok $login_took, '<', 3, '(c) the sign-in and sign-up under 3 s';
note sprintf '(c) post %.3f s, sign-in and sign-up %.3f s',
    $post_took, $login_took;
is_deeply \@acked, [1 .. 30], '(c) 30 posts across the kill, all stored';
check_delivery('(c)', $cid2, \@acked);
my @killed = grep { $_->{closes}[0] } @users;
is scalar @killed, 2, '(c) the two clients of the killed worker lost it';
is scalar(grep { $_->{resumes} } @killed), 2, '(c) and resumed';
my @now = wait_workers(2);
is scalar(grep { $_ != $victim } @now), 2, '(c) the master replaced it';

$_->{conns}[-1]->close for @users;

# --- (b) a graceful stop writes what the workers hold ---------------------

# MongoDB is paused (SIGSTOP) so that the posts wait in the write queue,
# acknowledged by nobody yet, when the stop comes; it goes on a moment
# after the stop, and the workers write them before they exit.

my $cid3 = channel('Quit');
post($cid3, 'quit-0') // die "no first post\n";
my $k = 40;
kill STOP => $db->{pid};
my @socks = map {
    api_send(POST => "/api/channels/$cid3/messages",
             { text => "quit-$_", client_id => "quit-$_" },
             token => $poster->{token})
} 1 .. $k;
sleep 1;
my $master = master_pid();
my $quit_at = time;
kill QUIT => $master;
sleep 0.5;
kill CONT => $db->{pid};
my (%codes, %ok);
for my $i (1 .. $k) {
    my ($st, $res) = eval { api_recv($socks[$i - 1], 15) };
    $st //= 'none';
    $codes{$st}++;
    next unless $st eq '201';
    $ok{ $res->{message}{seq} } = "quit-$i";
}
my $stopped;
for (1 .. 300) {
    last if $stopped = !-e "/proc/$master";
    sleep 0.05;
}
my $took = time - $quit_at;
ok $stopped, '(b) nginx stops on SIGQUIT';
note sprintf '(b) in %.2f s; answers: %s', $took,
    join ', ', map { "$_ x$codes{$_}" } sort keys %codes;
is $codes{201}, $k, '(b) every post waiting at the stop is acknowledged';

my @problems = grep { !/exited on signal 9/ } error_log_problems();
is_deeply \@problems, [], 'nothing else at [error] or above in the error log';

start();
my ($st, $page) = api(GET => "/api/channels/$cid3/messages?after=0&limit=200",
                      undef, token => $poster->{token});
is $st, 200, '(b) history after a restart';
my %stored = map { $_->{seq} => $_->{text} } @{ $page->{messages} };
my @lost = grep { ($stored{$_} // '') ne $ok{$_} } sort { $a <=> $b } keys %ok;
is "@lost", '', '(b) holds every acknowledged post, with its seq';
is scalar(keys %stored), $k + 1, '(b) and nothing else';

@problems = error_log_problems();
is_deeply \@problems, [], 'nor after the restart';

# --- (d) a graceful stop while MongoDB stays hung ------------------------

my $cid4 = channel('Down');
post($cid4, 'down-0') // die "no first post\n";
kill STOP => $db->{pid};
@socks = map {
    api_send(POST => "/api/channels/$cid4/messages",
             { text => "down-$_", client_id => "down-$_" },
             token => $poster->{token})
} 1 .. $k;
sleep 1;
my @workers = wait_workers(2);
$master = master_pid();
$quit_at = time;
kill QUIT => $master;
my (%down, %down_ok);
for my $i (1 .. $k) {
    my ($st, $res) = eval {
        api_recv($socks[$i - 1], max(0.1, $quit_at + 15 - time))
    };
    $st //= 'none';
    $down{$i} = $st;
    $down_ok{$i} = $res->{message}{seq} if $st eq '201';
}
my $answered = time - $quit_at;
my %gone;
for (1 .. 400) {
    for my $w (grep { !$gone{$_} } @workers) {
        $gone{$w} = sprintf '%.2f', time - $quit_at unless -e "/proc/$w";
    }
    last if $stopped = !-e "/proc/$master";
    sleep 0.05;
}
$took = time - $quit_at;
note sprintf '(d) answered within %.2f s; workers gone at %s s', $answered,
    join ', ', map { $gone{$_} // 'never' } @workers;
ok $stopped, '(d) nginx stops on SIGQUIT with MongoDB hung';
cmp_ok $took, '<=', 20,
    '(d) within the bound: 20 s after the quit (README, When MongoDB is down)';
my %dcodes;
$dcodes{$_}++ for values %down;
note sprintf '(d) in %.2f s; answers: %s', $took,
    join ', ', map { "$_ x$dcodes{$_}" } sort keys %dcodes;
is scalar(grep { $_ ne '201' && $_ ne '503' } values %down), 0,
    '(d) every post is answered 201 or 503';
unless ($stopped) {
    kill TERM => $master;
    sleep 0.05 while -e "/proc/$master";
}
kill CONT => $db->{pid};

start();
my (%retried, @bad);
for my $i (grep { $down{$_} ne '201' } sort { $a <=> $b } keys %down) {
    my ($st, $res) = api(POST => "/api/channels/$cid4/messages",
        { text => "down-$i", client_id => "down-$i" },
        token => $poster->{token}, timeout => 10);
    push @bad, "down-$i: $st" unless $st == 200 || $st == 201;
}
is "@bad", '', '(d) every retry of a 503 after MongoDB is back is stored';
($st, $page) = api(GET => "/api/channels/$cid4/messages?after=0&limit=200",
                   undef, token => $poster->{token});
is $st, 200, '(d) history after the restart';
my %times;
$times{ $_->{text} }++ for grep { !$_->{deleted} } @{ $page->{messages} };
my @twice = grep { ($times{"down-$_"} // 0) != 1 } 1 .. $k;
is "@twice", '', '(d) every post is stored once';
%stored = map { $_->{seq} => $_->{text} } @{ $page->{messages} };
@lost = grep { ($stored{ $down_ok{$_} } // '') ne "down-$_" } keys %down_ok;
is "@lost", '', '(d) a post answered 201 has its seq';

stop_foko();
ferretdb_stop($db);
done_testing();
