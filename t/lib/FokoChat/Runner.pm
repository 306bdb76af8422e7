package FokoChat::Runner;

# A small stand-in for Test::Nginx::Socket (CPAN), used by t::FokoChat when
# that module is not installed. Like it, this is a Test::Base subclass: test
# files get Test::Base's and Test::More's functions plus @EXPORT below, and
# the blocks after __DATA__ are run with the same meaning and test counts.
# Each block gets a fresh server root and nginx (see FokoChat::Nginx).
#
# Sections: main_config http_config config user_files log_level skip_nginx
# must_die request (string, or with eval an array of requests, each sent on
# its own connection) more_headers raw_request (one string, sent as is)
# timeout wait error_code response_body (eval: a qr// is matched)
# response_body_like response_body_unlike response_headers
# response_headers_like error_log no_error_log; Test::Base itself handles
# ONLY, SKIP and LAST.
#
# Not supported from Test::Nginx: pipelined_requests, requests split into
# packets, grep_error_log, access_log checks, response_body_filters,
# shutdown_error_log, tcp/udp servers, HUP/valgrind/check-leak modes.
# Errors that make Test::Nginx bail out (e.g. an unset $TEST_NGINX_FOO, an
# nginx that does not start) fail the block here and the file goes on.

use Test::Base -base;

use List::Util qw(shuffle);
use Time::HiRes qw(sleep);
use FokoChat::Nginx qw(
    server_port server_root nginx_version expand_env setup_servroot
    write_conf start_nginx stop_nginx error_log_lines build_request
    http_request write_file
);

our @EXPORT = qw(
    run_tests repeat_each timeout master_on master_off workers no_shuffle
    no_long_string log_level env_to_nginx server_name add_block_preprocessor
    no_root_location server_port server_root
);

my $RepeatEach = 1;
my $Timeout = $ENV{TEST_NGINX_TIMEOUT} || 3;
my $LogLevel = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
my $Master = ($ENV{TEST_NGINX_MASTER_PROCESS} // 'off') eq 'on';
my $Workers = 1;
my $NoShuffle = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
my $NoLongString = 0;
my $NoRootLocation = 0;
my $ServerName = 'localhost';
my (@EnvToNginx, @BlockPreprocessors);

sub repeat_each { $RepeatEach = shift if @_; $RepeatEach }
sub timeout { $Timeout = shift if @_; $Timeout }
sub master_on { $Master = 1 }
sub master_off { $Master = 0 }
sub workers { $Workers = shift if @_; $Workers }
sub no_shuffle { $NoShuffle = 1 }
sub no_long_string { $NoLongString = 1 }
sub log_level { $LogLevel = shift if @_; $LogLevel }
sub env_to_nginx { push @EnvToNginx, @_ }
sub server_name { $ServerName = shift if @_; $ServerName }
sub add_block_preprocessor(&) { unshift @BlockPreprocessors, shift }
sub no_root_location { $NoRootLocation = 1 }

sub run_tests {
    plan 'no_plan' unless Test::More->builder->has_plan;
    for my $block ($NoShuffle ? blocks() : shuffle blocks()) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value(name => "$0 " . $block->name);
        eval { run_block($block); 1 } or do { chomp(my $err = $@); fail($block->name . " - $err") };
    }
    stop_nginx() unless $ENV{TEST_NGINX_NO_CLEAN};
}

sub run_block {
    my $block = shift;
    my $name = $block->name;
    return if skip_nginx($block);
    setup_servroot();
    write_user_files($block);
    write_conf(
        map({ $_ => expand_env(scalar $block->$_) } qw(main_config http_config config)),
        log_level => $block->log_level || $LogLevel,
        master => $Master, workers => $Workers, env => \@EnvToNginx,
        server_name => $ServerName, root_location => !$NoRootLocation,
    );
    if (defined $block->must_die) {
        for my $rep (0 .. $RepeatEach - 1) {
            my ($started) = start_nginx();
            ok(!$started, "$name - die as expected");
            check_error_log($block, [error_log_lines()], $rep);
            stop_nginx() if $started;
        }
        return;
    }
    my ($started, $output) = start_nginx();
    die "cannot start nginx:\n$output" unless $started;
    my @requests = requests($block);
    my $timeout = parse_time($block->timeout) // $Timeout;
    my $seen = 0;    # error.log lines already checked
    for my $rep (0 .. $RepeatEach - 1) {
        for my $i (0 .. $#requests) {
            my ($status, $headers, $body) = eval { http_request($requests[$i], $timeout) };
            chomp(my $err = $@);
            fail("$name - ERROR: $err") if $err;
            check_response($block, $rep, $i, @requests > 1, $status // '', $headers // {}, $body);
            sleep(($block->wait || 0) + 0.05);    # + time for log-phase messages
            my @lines = error_log_lines();
            check_error_log($block, [@lines[$seen .. $#lines]], $rep);
            $seen = @lines;
        }
    }
}

# --- skip_nginx: "N: < 1.21.0 [: reason]" skips the block's N tests.
sub skip_nginx {
    my $block = shift;
    my $name = $block->name;
    my $spec = $block->skip_nginx // return 0;
    my ($n, $op, $ver, $reason) =
        $spec =~ /^\s*(\d+)\s*:\s*([<>]=?)\s*(\d+\.\d+\.\d+)(?:\s*:\s*(.*?))?\s*$/
        or die "invalid --- skip_nginx: $spec\n";
    my $canon = sub { sprintf '%d.%03d%03d', split /\./, shift };
    return 0 unless eval $canon->(nginx_version() // '0.0.0') . " $op " . $canon->($ver);
    SKIP: { skip("$name - " . ($reason || "nginx version $op $ver"), $n * $RepeatEach) }
    return 1;
}

# --- user_files: ">>> name" lines each start a file (under html/ unless
# the name is absolute); with eval, an array of [name, content] pairs.
sub write_user_files {
    my $block = shift;
    my $files = $block->user_files // return;
    if (!ref $files) {
        my @parts = split /^>>> (\S+)[^\n]*\n/m, $files;
        shift @parts;
        $files = [];
        push @$files, [splice @parts, 0, 2] while @parts;
    }
    for (@$files) {
        my ($file, $content) = @$_;
        my $path = $file =~ m{^/} ? $file : server_root() . "/html/$file";
        write_file($path, expand_env($content // ''));
    }
}

sub requests {
    my $block = shift;
    return $block->raw_request if defined $block->raw_request;
    my $request = $block->request // die "no --- request section\n";
    my $more = $block->more_headers;
    my @requests = ref $request ? @$request : $request;
    return map {
        build_request($requests[$_], ref $more ? $more->[$_] : $more, $ServerName)
    } 0 .. $#requests;
}

# The expectation for request $i: one per request if several were sent.
sub expected {
    my ($block, $section, $i, $multi) = @_;
    my $value = $block->$section;
    return $value->[$i] if ref $value eq 'ARRAY';
    die "--- $section: several requests were sent, so an array is expected\n" if $multi;
    return $value;
}

sub check_response {
    my ($block, $rep, $i, $multi, $status, $headers, $body) = @_;
    my $name = $block->name;
    my $port = server_port();

    is($status, defined $block->error_code ? expected($block, 'error_code', $i, $multi) : 200,
        "$name - status code ok");

    for my $section (qw(response_headers response_headers_like)) {
        next unless defined $block->$section;
        for (split /\n/, expected($block, $section, $i, $multi)) {
            s/^\s+|\s+$//g;
            if (s/^!\s*//) {
                ok(!exists $headers->{lc $_}, "$name - header $_ not present in the raw headers");
                next;
            }
            my ($key, $want) = split /\s*:\s*/, $_, 2;
            my $got = $headers->{lc $key} // '';
            if ($section eq 'response_headers') {
                $want =~ s/\$ServerPort\b/$port/g;
                is($got, $want, "$name - header $key ok");
            } else {
                like($got, qr/^$want$/, "$name - header $key like ok");
            }
        }
        last;
    }

    if (defined $block->response_body) {
        my $want = expected($block, 'response_body', $i, $multi);
        my $desc = "$name - response_body - response is expected (repeated req $rep, req $i)";
        if (ref $want) {
            like($body, $want, $desc);
        } else {
            $want =~ s/\$ServerPort\b/$port/g;
            $want = expand_env($want);
            ($NoLongString ? \&Test::More::is : \&is)->($body, $want, $desc);
        }
    } elsif (defined $block->response_body_like || defined $block->response_body_unlike) {
        my $type = defined $block->response_body_like ? 'like' : 'unlike';
        my $pat = expected($block, "response_body_$type", $i, $multi);
        $pat =~ s/\$ServerPort\b/$port/g;
        my $check = $type eq 'like' ? \&like : \&unlike;
        $check->($body // '', qr/$pat/s, "$name - response_body_$type - response is expected");
    }
}

# --- error_log / --- no_error_log: one substring per line, or with eval a
# qr// or an array of strings and qr//s, matched against $lines.
sub check_error_log {
    my ($block, $lines, $rep) = @_;
    my $name = $block->name;
    my @checked;
    for my $section (qw(error_log no_error_log)) {
        my $pats = $block->$section // next;
        for my $pat (ref $pats eq 'ARRAY' ? @$pats : ref $pats ? $pats : split /\n+/, $pats) {
            push @checked, $pat;
            my ($line) = grep { ref $pat ? $_ =~ $pat : index($_, $pat) >= 0 } @$lines;
            chomp $line if defined $line;
            if ($section eq 'error_log') {
                ok(defined $line, "$name - pattern \"$pat\" "
                    . (defined $line ? 'matches' : 'should match') . " a line in error.log (req $rep)");
            } else {
                ok(!defined $line, "$name - pattern \"$pat\" "
                    . (defined $line ? "should not match any line in error.log but matches line \"$line\""
                                     : 'does not match a line in error.log') . " (req $rep)");
            }
        }
    }
    for my $level (qw(alert crit emerg)) {
        next if grep { !ref && /\[\Q$level\E/ } @checked;
        warn "WARNING: $name - $_" for grep { /\[$level\]/ } @$lines;
    }
}

# "500ms" -> 0.5, "3s" or "3" -> 3
sub parse_time {
    my $time = shift // return undef;
    return $time =~ /^\s*([\d.]+)\s*ms\s*$/ ? $1 / 1000 : $time =~ /([\d.]+)/ ? $1 : undef;
}

1;
