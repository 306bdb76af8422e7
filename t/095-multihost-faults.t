# The fault matrix on two hosts (t/lib/FokoChat/Fault.pm): two nginx,
# each its own zone, on one FerretDB and one redis-server; REST and
# WebSocket posters retrying with their client_id on both hosts, and
# subscribers resuming on both hosts in the same channels. Faults: Redis
# killed and restarted empty, Redis paused 5 s, Redis killed and started
# from a snapshot taken 2 s before, a worker of host B killed,
# a reload of host B, both hosts reloaded at once, host B killed whole
# (master and workers) and started again 3 s later, host B killed while
# its clients move to host A and started again only 20 s later, MongoDB
# paused 5 s, and last host B killed for good while its clients move to
# host A (the checks then look at host A alone).
# After each: every acknowledged post stored once under its seq, seqs
# 1..N with no gap, every subscriber of either host got every message
# once and in seq order, history on both hosts reaches the newest message
# and is the same, no worker crashed, nothing unexpected in either host's
# error log.

use strict;
use warnings;

use Test::More;

use FokoChat::Fault;

system('command -v redis-server >/dev/null') == 0
    or plan skip_all => 'redis-server is not installed';

my $h = fault_harness(hosts => 2);
fault_run($h, $_) for 'Redis killed and restarted empty', 'Redis paused 5 s',
    'Redis restored from a snapshot 2 s old',
    'a worker of host B killed', 'a reload of host B',
    'both hosts reloaded at once',
    'host B killed (SIGKILL of master and workers) and started again',
    'host B killed, its clients moved to host A, B started again 20 s later',
    'MongoDB paused 5 s under two hosts',
    'host B killed for good while it posts, its clients moved to host A';
fault_done($h);
done_testing();
