package FokoChat::Fault;

# The fault matrix (t/080-fault-*.t): a posting load over REST and
# WebSocket with resuming subscribers, one fault (or a sequence of them)
# injected in the middle, then every promise checked.
#
#   use FokoChat::Fault;
#   my $h = fault_harness(workers => 2);          # FerretDB, nginx, users
#   fault_case($h, 'MongoDB paused 5 s', 'mongo_pause');
#   fault_case($h, 'paused, then a worker killed',
#              [[0, 'mongo_stop'], [2, 'worker_kill'], [3, 'mongo_cont']]);
#   fault_done($h);
#
# A case is a list of steps [seconds after the previous step, action]; a
# name of %Faults stands for its steps, and a list may mix names and
# steps, so a compound fault is one line. The actions (%Actions):
# mongo_kill (SIGKILL of FerretDB), mongo_start, mongo_stop (SIGSTOP),
# mongo_cont (SIGCONT), the same four of Redis (redis_kill, redis_start,
# empty, redis_stop, redis_cont; fault_harness(hosts => 2)), redis_save
# and redis_restore (Redis started again from a snapshot taken before),
# worker_kill
# (SIGKILL of the worker with the most subscriber connections), reload
# (SIGHUP), resize (foko_chat_shm_size changed in the configuration, then
# SIGHUP), host_kill (SIGKILL of a host's master and workers at once),
# host_start (that host started again), clients_move (the clients of a
# host go to another one from then on), wait (nothing). worker_kill,
# reload, resize, host_kill and host_start act on host A, or on the host
# their argument names: [0, 'reload', 'B'].
#
# The load, all in one Mojo loop:
# - REST posters: POST .../messages with a client_id of their own, one at
#   a time; on an error answer, a timeout or a dropped connection they
#   send it again with the same client_id (backoff 0.2 s to 2 s) until it
#   is acknowledged (201, or 200 for a client_id stored already);
# - WebSocket posters: "send" with a client_id, the same retries (a new
#   ref each time, on a new connection if the old one ended);
# - subscribers: WebSocket connections that reconnect with backoff and
#   sign in with an auth frame that resumes the case's channels from the
#   last seq they saw (the replay starts with the sign-in, so each
#   connection gets them in strict seq order).
#
# The checks of a case, after the load stopped and every post had its
# final answer:
# - every post was acknowledged in the end (the fault healed);
# - history (REST, paged from seq 1) holds every acknowledged message
#   once, under its acknowledged seq, with its text; no client_id twice;
# - a client_id whose final answer was an error is not stored (with the
#   retries above, a final answer is an error only if the post was given
#   up at the drain's end);
# - the seqs are 1..N with no gap (gap tombstones, deleted with no
#   client_id, fill theirs);
# - every subscriber got every message of the case's channels, in seq
#   order, none twice, over all its connections (resumes included);
# - history showed the newest acknowledged message within 35 s of the
#   last acknowledgement (one stall period of a hole, 30 s, and a margin);
# - the error log of the case: no "exited on signal" but of the killed
#   worker, nothing at [error] or above but the expected lines.
#
# @Cases lists every case; FOKO_FAULTS_FAILING=1 also runs those that are
# known to fail today (each says what fails). FOKO_FAULTS_VERBOSE=1 notes
# every fault step and reconnect; FOKO_FAULTS_CORES=DIR keeps the core of
# a crashed worker there.

use strict;
use warnings;

use Exporter 'import';
use List::Util qw(max min sum0);
use Mojo::IOLoop;
use Mojo::UserAgent;
use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws qw(wait_until worker_pids wait_workers master_pid);

our @EXPORT = qw(fault_harness fault_case fault_run fault_done %Faults @Cases);

our %Faults = (
    redis_kill    => [[0, 'redis_kill'], [3, 'redis_start']],
    redis_pause   => [[0, 'redis_stop'], [5, 'redis_cont']],
    mongo_kill    => [[0, 'mongo_kill'], [3, 'mongo_start']],
    mongo_pause   => [[0, 'mongo_stop'], [5, 'mongo_cont']],
    worker_kill   => [[0, 'worker_kill']],
    reload_twice  => [[0, 'reload'], [0.3, 'reload']],
    reload_resize => [[0, 'resize']],
);

# The cases of t/080-fault-*.t: a name, the steps, and, for a case known
# to fail today, what fails (it runs only with FOKO_FAULTS_FAILING=1).
our @Cases = (
    ['MongoDB killed and restarted', 'mongo_kill'],
    ['MongoDB paused 5 s', 'mongo_pause'],
    ['a worker killed', 'worker_kill'],
    ['two reloads in quick succession', 'reload_twice'],
    ['a reload with a new zone size', 'reload_resize'],
    # compound faults
    ['MongoDB paused, then a worker killed',
     [[0, 'mongo_stop'], [2, 'worker_kill'], [3, 'mongo_cont']]],
    ['MongoDB paused, then a reload',
     [[0, 'mongo_stop'], [2, 'reload'], [3, 'mongo_cont']]],
    ['MongoDB paused, then a reload with a new zone size',
     [[0, 'mongo_stop'], [2, 'resize'], [3, 'mongo_cont']]],
    # several hosts (fault_harness(hosts => 2), t/095): an action's
    # argument names the host it acts on
    ['Redis killed and restarted empty', 'redis_kill'],
    ['Redis paused 5 s', 'redis_pause'],
    ['Redis restored from a snapshot 2 s old',
     [[0, 'redis_save'], [2, 'redis_kill'], [1, 'redis_restore']]],
    ['a worker of host B killed', [[0, 'worker_kill', 'B']]],
    ['a reload of host B', [[0, 'reload', 'B']]],
    ['both hosts reloaded at once', [[0, 'reload', 'A'], [0, 'reload', 'B']]],
    ['host B killed (SIGKILL of master and workers) and started again',
     [[0, 'host_kill', 'B'], [3, 'host_start', 'B']]],
    ['host B killed, its clients moved to host A, B started again 20 s later',
     [[0, 'host_kill', 'B'], [0, 'clients_move', 'B'],
      [20, 'host_start', 'B']]],
    ['MongoDB paused 5 s under two hosts', 'mongo_pause'],
    # three hosts (fault_harness(hosts => 3), t/096)
    ['hosts B and C of three reloaded at once',
     [[0, 'reload', 'B'], [0, 'reload', 'C']]],
    ['host C of three killed and started again',
     [[0, 'host_kill', 'C'], [3, 'host_start', 'C']]],
    # the last of a run: host B stays down
    ['host B killed for good while it posts, its clients moved to host A',
     [[0, 'host_kill', 'B'], [0, 'clients_move', 'B']]],
);

# log lines at [error] or above that a case may show, by action
my %Expected = (
    mongo_kill => [qr/MongoDB is unreachable/,
                   qr/messages not written, will retry/,
                   qr/the shared zone is not warmed up/,
                   # a WebSocket sign-in reads the account from MongoDB
                   qr/users find: No suitable servers found/,
                   # the same, MongoDB paused (a killed worker's
                   # subscribers sign in again)
                   qr/users find: Failed to (?:send|read) .*socket error/],
);
$Expected{$_} = $Expected{mongo_kill} for qw(mongo_stop mongo_start);

my $Verbose = $ENV{FOKO_FAULTS_VERBOSE};
my $Seq = 0;

sub say_ { note sprintf '%7.2f %s', time - $_[0]{t0}, $_[1] if $Verbose }

# --- setup -------------------------------------------------------------------

# Options: hosts (1; more share one redis-server of the harness's own:
# host A in the test's server root, B, C... beside it, each client on
# one of them in turn), workers (2 per host), shm (the first zone size,
# "16m"), posters (REST and WebSocket posters, 2 each), subscribers (4),
# channels per case (3), gap (seconds between a poster's posts, 0.05),
# load (seconds of load around the fault: before => 2, after => 3).
sub fault_harness {
    my %o = @_;
    my $h = bless {
        workers => 2, shm => '16m', rest => 2, ws => 2, subs => 4,
        channels => 3, gap => 0.05, before => 2, after => 3, hosts => 1,
        %o, t0 => time,
    }, __PACKAGE__;
    ($h->{uri}, $h->{db}) = ferretdb_start();
    $h->{redis} = redis_start() if $h->{hosts} > 1;
    $h->{nodes} = [map {
        my $name = chr(ord('A') + $_);
        { name => $name, port => $_ ? free_port() : server_port(),
          root => server_root() . ($_ ? '.' . lc $name : '') }
    } 0 .. $h->{hosts} - 1];
    $h->{shm_now} = $h->{shm};
    $h->nginx_up($_) for @{ $h->{nodes} };
    for my $role (qw(rest ws sub)) {
        my $n = $role eq 'sub' ? $h->{subs} : $h->{$role};
        for my $i (1 .. $n) {
            my ($token, $user) = signup(username => "$role$i");
            push @{ $h->{users}{$role} },
                { name => "$role$i", token => $token, id => $user->{id} };
        }
    }
    return $h;
}

# the host named $name (A when none)
sub node {
    my ($h, $name) = @_;
    my ($n) = grep { $_->{name} eq ($name // 'A') } @{ $h->{nodes} };
    return $n // die "no host $name\n";
}

# the http{} lines of a host that shares the harness's Redis
sub redis_conf {
    my ($h, $node) = @_;
    return '' unless $h->{redis};
    return "    foko_chat_redis_url $h->{redis}{uri};\n"
        . "    foko_chat_host_id host-" . lc($node->{name}) . ";\n"
        . "    foko_chat_redis_partitions 4;\n";
}

# the configuration of $node, written under on_host
sub conf {
    my ($h, $node) = @_;
    write_conf(
        workers => $h->{workers}, master => 1,
        log_level => $ENV{FOKO_LOG_LEVEL} // 'info',
        # FOKO_FAULTS_CORES=DIR: a crashed worker leaves its core there
        main_config => ($ENV{FOKO_FAULTS_CORES}
            ? "worker_rlimit_core 2g;\nworking_directory $ENV{FOKO_FAULTS_CORES};\n"
            : '') . ($h->{redis} ? "thread_pool foko_redis threads=2;\n" : ''),
        http_config => foko_http_config(mongo_uri => $h->{uri}, extra =>
            "    foko_chat_shm_size $h->{shm_now};\n"
            . "    foko_chat_presence_grace 1s;\n"
            . $h->redis_conf($node)),
        config => <<'_EOC_');
        location /api/ {
            foko_chat_api;
        }

        location = /status {
            foko_chat_status;
        }

        location = /ws {
            foko_chat_websocket;
        }
_EOC_
}

sub nginx_up {
    my ($h, $node) = @_;
    on_host($node, sub {
        setup_servroot();
        $h->conf($node);
        my ($ok, $out) = FokoChat::Nginx::start_nginx();
        die "nginx of host $node->{name} did not start: $out\n" unless $ok;
        wait_workers($h->{workers});
        # with Redis: its reader has looked at Redis before a client comes
        wait_until(sub { $h->redis_state eq 'up' }, 10)
            or die "host $node->{name} does not reach Redis\n"
            if $h->{redis};
    });
}

sub redis_state {
    my ($st, $res) = eval { api(GET => '/status', undef, timeout => 5) };
    return ($st // 0) == 200 ? $res->{redis}{state} // '' : '';
}

sub fault_done {
    my $h = shift;
    on_host($_, sub { stop_nginx() }) for grep { !$_->{down} } @{ $h->{nodes} };
    kill CONT => $h->{db}{pid} if $h->{db}{pid};
    ferretdb_stop($h->{db});
    if ($h->{redis}) {
        kill CONT => $h->{redis}{pid} if $h->{redis}{pid};
        redis_stop($h->{redis});
    }
}

# --- actions -----------------------------------------------------------------

# SIGKILL of a server the harness started (FerretDB, Redis), reaped
sub kill_server {
    my $server = shift;
    kill KILL => $server->{pid};
    waitpid $server->{pid}, 0;
    delete $server->{pid};
}

my %Actions = (
    wait => sub { },
    mongo_kill => sub { kill_server($_[0]{db}) },
    mongo_start => sub { ferretdb_start($_[0]{db}); return '' },
    mongo_stop => sub { kill STOP => $_[0]{db}{pid} },
    mongo_cont => sub { kill CONT => $_[0]{db}{pid} },
    redis_kill => sub { kill_server($_[0]{redis}) },
    # on the same port, empty: a new run_id
    redis_start => sub { redis_start($_[0]{redis}); return '' },
    # a snapshot of Redis as it is now (SAVE), kept aside; redis_restore
    # starts Redis again on the same port from it: older streams, counters
    # and leases under a new run_id, as after a restore from a backup
    redis_save => sub {
        my $r = $_[0]{redis};
        my $out = redis_cli($r, 'SAVE');
        die "SAVE: $out\n" unless $out eq 'OK';
        rename "$r->{dir}/dump.rdb", "$r->{dir}/snapshot.rdb"
            or die "snapshot: $!\n";
        return 'snapshot taken';
    },
    redis_restore => sub {
        my $r = $_[0]{redis};
        rename "$r->{dir}/snapshot.rdb", "$r->{dir}/dump.rdb"
            or die "snapshot: $!\n";
        redis_start($r);
        # loaded at start; the next redis_start starts empty again
        wait_until(sub { redis_cli($r, 'PING') eq 'PONG' }, 10)
            or die "Redis did not load the snapshot\n";
        unlink "$r->{dir}/dump.rdb";
        return 'keys: ' . redis_cli($r, 'DBSIZE');
    },
    redis_stop => sub { kill STOP => $_[0]{redis}{pid} },
    redis_cont => sub { kill CONT => $_[0]{redis}{pid} },
    worker_kill => sub {
        my ($h, $host) = @_;
        my $pid = on_host($h->node($host),
                          sub { $h->busiest_worker(worker_pids()) })
            or die "no worker to kill\n";
        push @{ $h->{killed} }, $pid;
        kill KILL => $pid;
        return "worker $pid";
    },
    reload => sub {
        kill HUP => on_host($_[0]->node($_[1]), \&master_pid);
        return '';
    },
    # a whole host, master and workers at once (a power cut), and its
    # start on the same configuration: a new zone
    host_kill => sub {
        my ($h, $host) = @_;
        my @pids = on_host($h->node($host),
                           sub { grep { $_ } master_pid(), worker_pids() });
        kill KILL => @pids;
        wait_until(sub { !grep { kill 0 => $_ } @pids }, 5)
            or die "host $host did not die\n";
        $h->node($host)->{down} = 1;
        return "host $host: @pids";
    },
    host_start => sub {
        my ($h, $host) = @_;
        my $node = $h->node($host);
        on_host($node, sub {
            my ($ok, $out) = FokoChat::Nginx::start_nginx();
            die "nginx of host $host did not start again: $out\n"
                unless $ok;
            wait_workers($h->{workers});
        });
        delete $node->{down};
        return '';
    },
    # the clients of a host go to another from their next connection or
    # post on, as a load balancer sends them once that host is gone
    clients_move => sub {
        my ($h, $from) = @_;
        my $src = $h->node($from);
        my ($to) = grep { $_ != $src && !$_->{down} } @{ $h->{nodes} };
        my $n = 0;
        for my $who (@{ $h->{posters} }, @{ $h->{subs} }) {
            next unless $who->{host} == $src;
            $who->{host} = $to;
            $n++;
        }
        return "$n clients of host $from now go to host $to->{name}";
    },
    resize => sub {
        my ($h, $host) = @_;
        my ($n) = $h->{shm_now} =~ /^(\d+)m$/;
        $h->{shm_now} = ($n + 1) . 'm';
        on_host($h->node($host), sub {
            $h->conf($h->node($host));
            kill HUP => master_pid();
        });
        return "foko_chat_shm_size $h->{shm_now}";
    },
);

# Of @pids, the worker that holds the most subscriber connections, so
# that a worker killed is one they resume from (Linux: the server's side
# of each connection in /proc/net/tcp, its socket in /proc/PID/fd); the
# first if none is found.
sub busiest_worker {
    my ($h, @pids) = @_;
    my %ports = map { $_->{conn} && $_->{conn}{tx}
                      ? ($_->{conn}{tx}->local_port => 1) : () }
        @{ $h->{subs} || [] };
    my (%inodes, %n);
    for my $file ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $file or next;
        while (my $line = <$fh>) {
            my @f = split ' ', $line;
            my ($local) = ($f[1] // '') =~ /:([0-9A-F]{4})$/ or next;
            my ($remote) = ($f[2] // '') =~ /:([0-9A-F]{4})$/ or next;
            $inodes{ $f[9] } = 1
                if hex($local) == server_port() && $ports{ hex($remote) };
        }
    }
    for my $pid (@pids) {
        opendir my $dir, "/proc/$pid/fd" or next;
        for my $fd (readdir $dir) {
            my $link = readlink "/proc/$pid/fd/$fd" // next;
            $n{$pid}++ if $link =~ /^socket:\[(\d+)\]$/ && $inodes{$1};
        }
    }
    my ($pid) = sort { ($n{$b} // 0) <=> ($n{$a} // 0) } @pids;
    $h->say_(sprintf 'subscriber connections by worker: %s',
             join ', ', map { "$_ " . ($n{$_} // 0) } @pids);
    return $pid;
}

# the steps of a case: names of %Faults expanded
sub steps {
    my $spec = shift;
    return map {
        ref $_ ? [@$_] : @{ $Faults{$_} // die "no fault named $_\n" }
    } ref $spec ? @$spec : ($spec);
}

# --- the load ----------------------------------------------------------------

sub channel_ids {
    my ($h, $case) = @_;
    my @members = map { $_->{id} } map { @{ $h->{users}{$_} } } qw(rest ws sub);
    my $owner = $h->{users}{rest}[0];
    return map {
        my ($st, $ch) = api(POST => '/api/channels', {
            name => "$case-$_",
            members => [grep { $_ ne $owner->{id} } @members],
        }, token => $owner->{token}, timeout => 20);
        die "channel $case-$_: $st\n" unless $st == 201;
        $ch->{id};
    } 1 .. $h->{channels};
}

# A post of $p: its client_id, channel, text, answers; the poster
# records the final one.
sub new_post {
    my ($h, $p) = @_;
    my $n = ++$p->{n};
    my $cid = $h->{cids}[($n + $p->{offset}) % @{ $h->{cids} }];
    my $id = sprintf '%s-%s-%d', $h->{case_tag}, $p->{user}{name}, $n;
    my $post = { client_id => $id, channel => $cid, text => "text of $id",
                 answers => [], via => $p->{kind}, t => time };
    push @{ $h->{posts} }, $post;
    return $post;
}

sub backoff { min(2, 0.2 * 2 ** ($_[0] - 1)) }

sub acked {
    my ($h, $p, $post, $code, $msg) = @_;
    push @{ $post->{answers} }, $code;
    $post->{acked} = $msg->{seq};
    $post->{acked_id} = $msg->{id};
    $post->{acked_at} = time;
    $p->{busy} = undef;
    $h->{last_ack} = time;
    Mojo::IOLoop->timer($h->{gap} => sub { $h->poster_next($p) });
}

sub failed {
    my ($h, $p, $post, $what) = @_;
    push @{ $post->{answers} }, $what;
    my $tries = scalar @{ $post->{answers} };
    Mojo::IOLoop->timer(backoff($tries) => sub { $h->poster_send($p) });
}

sub poster_next {
    my ($h, $p) = @_;
    return if $h->{stopping};
    $p->{busy} = $h->new_post($p);
    $h->poster_send($p);
}

sub poster_send {
    my ($h, $p) = @_;
    my $post = $p->{busy} or return;
    return $p->{kind} eq 'rest' ? $h->rest_send($p, $post)
                                : $h->ws_send($p, $post);
}

sub rest_send {
    my ($h, $p, $post) = @_;
    my $url = "http://127.0.0.1:$p->{host}{port}"
        . "/api/channels/$post->{channel}/messages";
    $p->{ua}->post($url => { Authorization => "Bearer $p->{user}{token}" }
        => json => { text => $post->{text}, client_id => $post->{client_id} }
        => sub {
            my (undef, $tx) = @_;
            my $code = $tx->res->code;
            my $json = $tx->res->json;
            if (($code // 0) == 201 || ($code // 0) == 200) {
                return $h->acked($p, $post, $code, $json->{message});
            }
            my $what = defined $code ? "$code "
                . ($json && ref $json eq 'HASH' ? $json->{error}{code} // '' : '')
                : 'no answer: ' . ($tx->error->{message} // '?');
            $h->failed($p, $post, $what);
        });
}

# a WebSocket poster's send: on its connection, opened first if need be
sub ws_send {
    my ($h, $p, $post) = @_;
    my $c = $p->{conn};
    if (!$c || !$c->{ready}) {
        # sent once the connection (opening, or reopened after its
        # backoff) is ready
        $p->{resend} = 1;
        return;
    }
    my $ref = 'r' . ++$Seq;
    $p->{refs}{$ref} = $post;
    $c->{tx}->send({ json => { type => 'send', ref => $ref,
        channel_id => $post->{channel}, text => $post->{text},
        client_id => $post->{client_id} } });
    $post->{timer} = Mojo::IOLoop->timer(20 => sub {
        return unless delete $p->{refs}{$ref};
        $h->failed($p, $post, 'no answer: timeout');
    });
}

# A WebSocket connection of $who (a poster or a subscriber) that calls
# $who->{on_ready} after "ready" and reconnects after a close. It signs in
# with the Authorization header, or, if $who->{auth_frame} is set, with an
# auth frame that has the fields that function returns too.
sub ws_connect {
    my ($h, $who) = @_;
    my $c = { events => 0, t => time };
    my $frame = $who->{auth_frame};
    my %headers = $frame ? ()
        : (Authorization => "Bearer $who->{user}{token}");
    $who->{conn} = $c;
    my $url = "ws://127.0.0.1:$who->{host}{port}/ws";
    $who->{ua} //= Mojo::UserAgent->new(inactivity_timeout => 0,
        connect_timeout => 3, request_timeout => 0);
    my $retry = sub {
        my $why = shift;
        return if $c->{dead}++;
        push @{ $who->{closes} }, $why;
        $h->say_("$who->{user}{name}: $why");
        $who->{conn} = undef;
        return if $who->{done};
        my $k = ++$who->{failures};
        Mojo::IOLoop->timer(backoff($k) => sub { $h->ws_connect($who) });
    };
    $c->{auth_timer} = Mojo::IOLoop->timer(15 => sub {
        return if $c->{ready};
        $c->{tx}->finish(1000) if $c->{tx};
        $retry->('no ready in 15 s');
    });
    $who->{ua}->websocket($url => \%headers => sub {
        my (undef, $tx) = @_;
        if (!$tx->is_websocket) {
            return $retry->('upgrade: ' . ($tx->res->code
                // $tx->error->{message} // 'no answer'));
        }
        $c->{tx} = $tx;
        $tx->on(json => sub {
            my (undef, $ev) = @_;
            return unless ref $ev eq 'HASH';
            my $type = $ev->{type} // '';
            if ($type eq 'ready') {
                $c->{ready} = $ev;
                $who->{failures} = 0;
                $who->{on_ready}->($c, $ev);
                return;
            }
            $who->{on_event}->($c, $ev);
        });
        $tx->on(finish => sub {
            my (undef, $code) = @_;
            $retry->('closed ' . ($code // 'none'));
        });
        $tx->send({ json => { type => 'auth', token => $who->{user}{token},
                              %{ $frame->() } } })
            if $frame;
    });
}

sub start_ws_poster {
    my ($h, $p) = @_;
    $p->{on_ready} = sub {
        if (delete $p->{resend}) {
            $h->poster_send($p);
        }
    };
    $p->{on_event} = sub {
        my (undef, $ev) = @_;
        my $type = $ev->{type} // '';
        return unless $type eq 'ack' || $type eq 'error';
        my $post = delete $p->{refs}{ $ev->{ref} // '' } or return;
        Mojo::IOLoop->remove($post->{timer});
        return $h->acked($p, $post, 'ack', $ev->{message}) if $type eq 'ack';
        $h->failed($p, $post, "error $ev->{code}");
    };
    # a send whose connection ended is sent again on the next one
    my $orig = $p->{on_ready};
    $p->{on_ready} = sub {
        for my $ref (keys %{ $p->{refs} }) {
            my $post = delete $p->{refs}{$ref};
            Mojo::IOLoop->remove($post->{timer});
            push @{ $post->{answers} }, 'no answer: connection ended';
            $p->{resend} = 1;
        }
        $orig->(@_);
    };
    $h->ws_connect($p);
}

# A subscriber resumes every channel of the case in its auth frame, from
# the last seq it saw (0 for none); every connection after its first
# counts as a resume.
sub start_subscriber {
    my ($h, $s) = @_;
    $s->{auth_frame} = sub {
        $s->{resumes}++ if $s->{connections}++;
        return { resume => { map {
            $_ => max(0, @{ $s->{seqs}{$_} || [] })
        } @{ $h->{cids} } } };
    };
    $s->{on_ready} = sub { };
    $s->{on_event} = sub {
        my (undef, $ev) = @_;
        return unless ($ev->{type} // '') eq 'message'
            && ref $ev->{message} eq 'HASH';
        push @{ $s->{seqs}{ $ev->{message}{channel_id} } }, $ev->{message}{seq};
    };
    $h->ws_connect($s);
}

# --- history -----------------------------------------------------------------

# Every message of a channel on host $node, paged from the oldest: a list,
# or undef if a page failed.
sub history {
    my ($h, $cid, $node) = @_;
    return on_host($node, sub { $h->history_here($cid) });
}

sub history_here {
    my ($h, $cid) = @_;
    my ($after, @all) = (0);
    my $token = $h->{users}{sub}[0]{token};
    for (1 .. 100) {
        my ($st, $res) = eval {
            api(GET => "/api/channels/$cid/messages?after=$after&limit=200",
                undef, token => $token, timeout => 10);
        };
        return undef unless ($st // 0) == 200;
        push @all, @{ $res->{messages} };
        return \@all unless $res->{has_more} && @{ $res->{messages} };
        $after = $res->{messages}[-1]{seq};
    }
    return \@all;
}

# --- a case ------------------------------------------------------------------

# what tells two histories apart: seqs, ids, texts, tombstones
sub history_key {
    return join ';', map {
        join ',', $_->{seq}, $_->{id}, $_->{deleted} ? 'x' : $_->{text}
    } @{ $_[0] || [] };
}

sub log_offset { -s (server_root() . '/logs/error.log') // 0 }

sub log_since {
    my $off = shift;
    open my $fh, '<', server_root() . '/logs/error.log' or return;
    seek $fh, $off, 0;
    return <$fh>;
}

# Runs the case of @Cases named $name, unless it is known to fail and
# FOKO_FAULTS_FAILING is not set (then a skip that says why).
sub fault_run {
    my ($h, $name, %o) = @_;
    my ($case) = grep { $_->[0] eq $name } @Cases or die "no case $name\n";
    my (undef, $spec, $fails) = @$case;
    if ($fails && !$ENV{FOKO_FAULTS_FAILING}) {
        SKIP: { skip "$name: known to fail today ($fails);"
                     . ' FOKO_FAULTS_FAILING=1 runs it', 1 }
        return;
    }
    return fault_case($h, $name, $spec, %o);
}

sub fault_case {
    my ($h, $name, $spec, %o) = @_;
    my @steps = steps($spec);
    my $tag = sprintf 'c%d', ++$h->{ncase};
    @{$h}{qw(case_tag posts stopping last_ack killed)}
        = ($tag, [], 0, undef, []);
    my %log_off = map { $_->{name} => on_host($_, \&log_offset) }
        @{ $h->{nodes} };
    my @nodes = @{ $h->{nodes} };
    my $t_case = time;
    $h->{cids} = [$h->channel_ids($tag)];

    # the clients
    my @posters = (
        (map { { kind => 'rest', user => $_, n => 0,
                 ua => Mojo::UserAgent->new(request_timeout => 20,
                     connect_timeout => 3, inactivity_timeout => 20) } }
             @{ $h->{users}{rest} }),
        (map { { kind => 'ws', user => $_, n => 0, refs => {} } }
             @{ $h->{users}{ws} }),
    );
    for my $i (0 .. $#posters) {
        $posters[$i]{offset} = $i;
        $posters[$i]{host} = $nodes[$i % @nodes];
    }
    my @subs = map { { user => $_, seqs => {}, resumes => 0 } }
        @{ $h->{users}{sub} };
    $subs[$_]{host} = $nodes[$_ % @nodes] for 0 .. $#subs;
    $h->{subs} = \@subs;
    $h->{posters} = \@posters;
    $h->start_subscriber($_) for @subs;
    wait_until(sub { !grep { !($_->{conn} && $_->{conn}{ready}) } @subs }, 15)
        or die "$name: the subscribers did not sign in\n";
    for my $p (@posters) {
        $h->start_ws_poster($p) if $p->{kind} eq 'ws';
        $h->poster_next($p);
    }

    # the load, the fault's steps, the load again
    wait_until(sub { 0 }, $h->{before});
    my @done;
    for my $step (@steps) {
        my ($delay, $action, @args) = @$step;
        wait_until(sub { 0 }, $delay) if $delay;
        my $what = $Actions{$action}->($h, @args) // '';
        push @done, $action;
        $h->say_("step $action $what");
    }
    wait_until(sub { 0 }, $h->{after});

    # no new posts; every post goes on until it is acknowledged
    $h->{stopping} = 1;
    my $t_stop = time;
    my $all_final = wait_until(sub {
        !grep { $_->{busy} } @posters
    }, $o{drain} // 60);
    $_->{busy} = undef for @posters;   # given up: the last answer stays
    my $t_acked = time;

    my @posts = @{ $h->{posts} };
    my @acked = grep { defined $_->{acked} } @posts;
    my %last;    # channel => highest acknowledged seq
    for (@acked) {
        $last{ $_->{channel} } = max($last{ $_->{channel} } // 0, $_->{acked});
    }

    # history reaches the newest acknowledged message, on every host that
    # is up (a host killed and not started again is gone for good)
    my @up = grep { !$_->{down} } @nodes;
    my (%on, $t_hist);
    my $caught_up = wait_until(sub {
        for my $node (@up) {
            for my $cid (@{ $h->{cids} }) {
                $on{ $node->{name} }{$cid} = $h->history($cid, $node)
                    or return 0;
            }
        }
        return 0 if grep { my $hist = $_; grep {
            max(0, map { $_->{seq} } @{ $hist->{$_} }) < ($last{$_} // 0)
        } @{ $h->{cids} } } values %on;
        $t_hist = time;
    }, 40);
    my $hist_wait = ($t_hist // time) - $t_acked;
    my %hist = %{ $on{A} || {} };
    my @differ = grep {
        my $name = $_;
        grep {
            history_key($on{$name}{$_}) ne history_key($hist{$_})
        } @{ $h->{cids} }
    } map { $_->{name} } @up[1 .. $#up];

    # every subscriber gets all of it
    my %want;    # channel => [seqs of messages that are not tombstones]
    for my $cid (@{ $h->{cids} }) {
        $want{$cid} = [map { $_->{seq} }
                       grep { !$_->{deleted} } @{ $hist{$cid} || [] }];
    }
    my $delivered = wait_until(sub {
        !grep { my $s = $_; grep {
            my %got = map { $_ => 1 } @{ $s->{seqs}{$_} || [] };
            grep { !$got{$_} } @{ $want{$_} }
        } @{ $h->{cids} } } @subs
    }, 20);
    wait_until(sub { 0 }, 0.5);    # a duplicate that would follow

    # --- the checks
    my $label = "$name:";
    my @unacked = grep { !defined $_->{acked} } @posts;
    is scalar(@unacked), 0,
        "$label every one of " . scalar(@posts) . " posts acknowledged"
        or diag explain [map { [$_->{client_id}, $_->{answers}] }
                         @unacked[0 .. min(4, $#unacked)]];

    my (@wrong, @twice, @holes, @stray, @bad_err);
    my (%by_cid, %stored_n);
    for my $cid (@{ $h->{cids} }) {
        my @msgs = @{ $hist{$cid} || [] };
        my %by_seq;
        for my $m (@msgs) {
            push @twice, "seq $m->{seq}" if $by_seq{ $m->{seq} }++;
            next unless defined $m->{client_id};
            $stored_n{ $m->{client_id} }++;
            $by_cid{ $m->{client_id} } = $m;
        }
        my $top = max(0, keys %by_seq);
        push @holes, map { "$cid seq $_" } grep { !$by_seq{$_} } 1 .. $top;
    }
    push @twice, grep { $stored_n{$_} > 1 } sort keys %stored_n;
    my %posted = map { $_->{client_id} => $_ } @posts;
    for my $p (@acked) {
        my $m = $by_cid{ $p->{client_id} };
        push @wrong, "$p->{client_id} (acked seq $p->{acked}): "
            . ($m ? "stored as seq $m->{seq}" : 'not stored')
            unless $m && $m->{seq} == $p->{acked}
                && $m->{channel_id} eq $p->{channel}
                && $m->{text} eq $p->{text} && $m->{id} eq $p->{acked_id};
    }
    for my $p (@unacked) {
        my $final = $p->{answers}[-1] // 'none';
        push @bad_err, "$p->{client_id} (final $final) is stored"
            if $by_cid{ $p->{client_id} } && $final =~ /^\d|^error/;
    }
    push @stray, grep { !$posted{$_} } sort keys %by_cid;
    ok $caught_up, sprintf "$label history reaches the newest acknowledged "
        . 'message (%.1f s after the last ack)', $hist_wait;
    is "@wrong[0 .. min(9, $#wrong)]", '',
        "$label every acknowledged message is stored under its seq"
        . ' (' . scalar(@acked) . ')';
    is "@twice", '', "$label nothing is stored twice";
    is "@stray", '', "$label nothing stored that was not posted";
    is "@bad_err", '', "$label no post whose final answer was an error"
        . ' is stored';
    is "@holes", '', "$label seqs run 1..N with no gap";
    is "@differ", '', "$label every host's history is host A's" if @up > 1;

    my (@dups, @order, @missing);
    my ($ndup, $nmiss) = (0, 0);
    for my $s (@subs) {
        for my $cid (@{ $h->{cids} }) {
            my @got = @{ $s->{seqs}{$cid} || [] };
            my (%n, $prev);
            for my $q (@got) {
                if ($n{$q}++) {
                    $ndup++;
                    push @dups, "$s->{user}{name} seq $q";
                } elsif (defined $prev && $q < $prev) {
                    push @order, "$s->{user}{name} $q after $prev";
                }
                $prev = $q;
            }
            my @m = grep { !$n{$_} } @{ $want{$cid} };
            $nmiss += @m;
            push @missing, "$s->{user}{name} " . scalar(@m) . ' in ' . $cid
                . " (seq @m[0 .. min(4, $#m)])" if @m;
        }
    }
    ok $delivered && !@missing, "$label every subscriber got every message"
        or diag "missing: @missing";
    is "@dups[0 .. min(9, $#dups)]", '', "$label no subscriber got one twice"
        . ($ndup ? " ($ndup duplicates)" : '');
    is "@order[0 .. min(9, $#order)]", '',
        "$label each subscriber got them in seq order";

    my %killed = map { $_ => 1 } @{ $h->{killed} };
    my @allowed = map { @{ $Expected{$_} || [] } } @done;
    my (@crashes, @problems);
    for my $line (map {
        my $node = $_;
        map { "$node->{name}: $_" }
            on_host($node, sub { log_since($log_off{ $node->{name} }) })
    } @nodes) {
        if (my ($pid, $sig) = $line =~ /process (\d+) exited on signal (\d+)/) {
            push @crashes, $line unless $sig == 9 && $killed{$pid};
            next;
        }
        next unless $line =~ /\[(?:error|crit|alert|emerg)\]/;
        push @problems, $line unless grep { $line =~ $_ } @allowed;
    }
    is_deeply \@crashes, [], "$label no worker crashed";
    is_deeply [@problems[0 .. min(9, $#problems)]], [],
        "$label nothing unexpected at [error] or above";

    # figures
    my %answers;
    for my $p (@posts) {
        $answers{$_ =~ s/^(no answer):.*/$1/r}++ for @{ $p->{answers} };
    }
    my $retried_found = grep {
        @{ $_->{answers} } > 1 && ($_->{answers}[-1] // '') eq '200'
    } @posts;
    my $slowest = max(0, map { $_->{acked_at} - $_->{t} } @acked);
    my $resumes = sum0(map { $_->{resumes} } @subs);
    my $reconnects = sum0(map { scalar @{ $_->{closes} || [] } } @subs, @posters);
    note sprintf "$label %d posts (%d REST, %d WebSocket), answers: %s; "
        . 'retries that found their post stored: %d; subscriber resumes %d, '
        . 'reconnects %d; duplicates %d, missing %d; slowest ack %.1f s; '
        . 'drain %.1f s, case %.1f s',
        scalar(@posts), scalar(grep { $_->{via} eq 'rest' } @posts),
        scalar(grep { $_->{via} eq 'ws' } @posts),
        join(', ', map { "$_ x$answers{$_}" } sort keys %answers),
        $retried_found, $resumes, $reconnects, $ndup, $nmiss,
        $slowest, $t_acked - $t_stop, time - $t_case;

    # the clients go away
    for my $c (@subs, @posters) {
        $c->{done} = 1;
        $c->{conn}{tx}->finish(1000) if $c->{conn} && $c->{conn}{tx};
    }
    wait_until(sub { 0 }, 0.3);
    return { duplicates => $ndup, missing => $nmiss, holes => scalar @holes };
}

1;
