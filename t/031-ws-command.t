# The WebSocket command decoder: builds t/ws_command_test.c with
# ngx_foko_chat_ws_command.c outside nginx (it needs jansson only), under
# the address and undefined-behaviour sanitizers when the compiler has
# them, and turns each line it prints into a test.  Needs a C compiler and
# jansson's headers.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use Test::More;

my $root = File::Spec->rel2abs(dirname(__FILE__) . '/..');
my $src = "$root/ngx_foko_chat_module";

my ($cc) = grep { defined && length && have($_) } $ENV{CC}, qw(cc gcc clang);

plan skip_all => 'no C compiler (cc, gcc or clang; or set CC)' unless $cc;

my $dir = tempdir('foko-ws-command-XXXXXX', TMPDIR => 1, CLEANUP => 1);

my @cflags = (qw(-std=gnu99 -g -O1 -W -Wall -Wpointer-arith
                 -Wno-unused-parameter -Werror),
              "-I$src");

# sanitizers if this compiler can build and run a program with them
my @san = ('-fsanitize=address,undefined', '-fno-sanitize-recover=all',
           '-fno-omit-frame-pointer');
open my $probe, '>', "$dir/probe.c" or die "$dir/probe.c: $!";
print $probe "int main(void) { return 0; }\n";
close $probe;
@san = () unless run(quote($cc), @san, '-o', quote("$dir/probe"),
                     quote("$dir/probe.c")) == 0
                 && run(quote("$dir/probe")) == 0;

my @cmd = ($cc, @cflags, @san, '-o', "$dir/ws_command_test",
           "$root/t/ws_command_test.c", "$src/ngx_foko_chat_ws_command.c",
           '-ljansson');
my $out = `@{[ join ' ', map { quote($_) } @cmd ]} 2>&1`;
is($?, 0, 'the harness builds with ' . (@san ? 'sanitizers' : 'no sanitizers'))
    or do { diag($out); done_testing(); exit; };

$ENV{ASAN_OPTIONS} = 'detect_leaks=1:abort_on_error=0';
$ENV{UBSAN_OPTIONS} = 'print_stacktrace=1:halt_on_error=1';

my @lines = `"$dir/ws_command_test" 2>&1`;
my $status = $?;
my ($done, $checks) = (0, 0);

for my $i (0 .. $#lines) {
    my $line = $lines[$i];
    chomp $line;

    if ($line =~ /^(not )?ok - (.*)$/) {
        my ($failed, $name) = ($1, $2);
        $checks++;
        ok(!$failed, $name);

        # the details the harness prints under a failure
        if ($failed) {
            for my $j ($i + 1 .. $#lines) {
                last unless $lines[$j] =~ /^#/;
                diag($lines[$j] =~ s/^#\s?//r);
            }
        }

    } elsif ($line =~ /^done (\d+)$/) {
        $done = $1;

    } elsif ($line !~ /^#/) {
        # a sanitizer report or anything else unexpected
        diag($line);
    }
}

ok($checks >= 25, "the harness ran its checks ($checks)");
is($done, $checks, 'the harness finished');
is($status, 0, 'the harness exits cleanly');

done_testing();


sub have {
    my ($prog) = @_;
    return -x $prog if $prog =~ m{/};
    return grep { -x "$_/$prog" } File::Spec->path();
}

# a command line, quiet; its exit status
sub run {
    system(join(' ', @_) . ' >/dev/null 2>&1');
    return $?;
}

sub quote {
    my ($s) = @_;
    return $s if $s =~ m{^[\w./=,+-]+$};
    $s =~ s/'/'\\''/g;
    return "'$s'";
}
