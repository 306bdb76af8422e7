# The fault matrix (t/lib/FokoChat/Fault.pm): the worker with the most
# subscriber connections killed (SIGKILL; the master starts another) in
# the middle of a posting load over REST and WebSocket. Every acknowledged
# post is stored once under its seq, the seqs have no gap, every
# subscriber, resuming in its auth frame, gets every message once and in
# order, and no worker crashes.

use strict;
use warnings;

use Test::More;

use FokoChat::Fault;

my $h = fault_harness();
fault_run($h, 'a worker killed');
fault_done($h);
done_testing();
