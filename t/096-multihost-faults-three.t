# The fault matrix on three hosts (t/lib/FokoChat/Fault.pm): three nginx,
# each its own zone, on one FerretDB and one redis-server, posters and
# subscribers spread over the three in turn. Faults: Redis killed and
# restarted empty, Redis paused 5 s, hosts B and C reloaded at once, and
# host C killed whole (master and workers) and started again 3 s later.
# After each, the checks of t/095: every acknowledged post stored once
# under its seq, seqs 1..N with no gap, every subscriber on every host
# got every message once and in seq order, history the same on all
# hosts, no worker crashed, nothing unexpected in any host's error log.

use strict;
use warnings;

use Test::More;

use FokoChat::Fault;

system('command -v redis-server >/dev/null') == 0
    or plan skip_all => 'redis-server is not installed';

my $h = fault_harness(hosts => 3);
fault_run($h, $_) for 'Redis killed and restarted empty', 'Redis paused 5 s',
    'hosts B and C of three reloaded at once',
    'host C of three killed and started again';
fault_done($h);
done_testing();
