package t::FokoChat;

# What the t/*.t files load: `use t::FokoChat;` (or `use t::FokoChat
# 'no_plan';`), then `plan tests => ...;` if wanted, `run_tests();` and the
# blocks after __DATA__, in the format of Test::Nginx::Socket (CPAN).
#
# Like OpenResty's t::TestCore, this is a subclass of Test::Nginx::Socket
# when that is installed, so the test files get exactly its functions. When
# it is not, it is a subclass of FokoChat::Runner (t/lib), which runs the
# same files with the same meaning; see there for the supported sections.
# Either way the file also gets Test::More's and Test::Base's functions.
#
# Functions: run_tests, plan, blocks, repeat_each, timeout, master_on,
# master_off, workers, no_shuffle, no_long_string, log_level, env_to_nginx,
# server_name, add_block_preprocessor, no_root_location, server_port,
# server_root. Environment: TEST_NGINX_BINARY, TEST_NGINX_LOAD_MODULES
# (absolute .so paths), TEST_NGINX_SERVER_PORT, TEST_NGINX_SERVROOT,
# TEST_NGINX_NO_CLEAN (leave the last nginx running), TEST_NGINX_TIMEOUT,
# TEST_NGINX_LOG_LEVEL, TEST_NGINX_NO_SHUFFLE.
#
# A plain-Perl test (e.g. one needing concurrent clients) uses
# FokoChat::Nginx instead; see t/lib/FokoChat/Nginx.pm.

use strict;
use warnings;

use File::Basename qw(dirname);
use lib dirname(__FILE__) . '/lib';

our @ISA = eval { require Test::Nginx::Socket; 1 }
    ? 'Test::Nginx::Socket'
    : do { require FokoChat::Runner; 'FokoChat::Runner' };

1;
