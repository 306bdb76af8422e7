# The fault matrix (t/lib/FokoChat/Fault.pm): MongoDB killed (SIGKILL) in
# the middle of a posting load over REST and WebSocket, and started again
# 3 s later. Every acknowledged post is stored once under its seq, the
# seqs have no gap, every resuming subscriber gets every message once and
# in order, and no worker crashes.

use strict;
use warnings;

use Test::More;

use FokoChat::Fault;

my $h = fault_harness();
fault_run($h, 'MongoDB killed and restarted');
fault_done($h);
done_testing();
