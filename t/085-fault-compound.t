# The fault matrix (t/lib/FokoChat/Fault.pm), compound faults: MongoDB
# paused, and while it is, a worker killed, a reload, or a reload with a
# new zone size; MongoDB goes on 3 s later. The same checks as for a
# single fault. Cases known to fail today are skipped unless
# FOKO_FAULTS_FAILING=1.

use strict;
use warnings;

use Test::More;

use FokoChat::Fault;

my $h = fault_harness();
fault_run($h, $_) for 'MongoDB paused, then a worker killed',
    'MongoDB paused, then a reload',
    'MongoDB paused, then a reload with a new zone size';
fault_done($h);
done_testing();
