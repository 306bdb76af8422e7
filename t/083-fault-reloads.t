# The fault matrix (t/lib/FokoChat/Fault.pm): two reloads 0.3 s apart in the middle of a
# posting load over REST and WebSocket. Every acknowledged post is stored
# once under its seq, the seqs have no gap, every resuming subscriber gets
# every message once and in order, and no worker crashes.

use strict;
use warnings;

use Test::More;

use FokoChat::Fault;

my $h = fault_harness();
fault_run($h, 'two reloads in quick succession');
fault_done($h);
done_testing();
