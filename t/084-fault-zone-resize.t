# The fault matrix (t/lib/FokoChat/Fault.pm): a reload with a new foko_chat_shm_size (a new zone) in the middle of a
# posting load over REST and WebSocket. Every acknowledged post is stored
# once under its seq, the seqs have no gap, every resuming subscriber gets
# every message once and in order, and no worker crashes.

use strict;
use warnings;

use Test::More;

use FokoChat::Fault;

my $h = fault_harness();
fault_run($h, 'a reload with a new zone size');
fault_done($h);
done_testing();
