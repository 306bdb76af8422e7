# Rate limits shared by several hosts (one Redis, three nginx): the
# failed sign-ins of one account, round-robin over three hosts, count
# together, so that the 11th gets 429 rate_limited on any host (the
# default login_account 10/15m), recoveries likewise; a successful
# sign-in clears the account's counter in Redis.  With Redis down, each
# host counts alone in its zone again (and says so at warn), and
# sign-ins go on.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

system('command -v redis-server >/dev/null') == 0
    or plan skip_all => 'redis-server is not installed';

my $redis = redis_start();

sub host_config {
    my $id = shift;
    return (
        workers => 2,
        main_config => "thread_pool foko_redis threads=2;\n",
        http_config => "    foko_chat_redis_url $redis->{uri};\n"
                     . "    foko_chat_host_id $id;\n"
                     . "    foko_chat_limit signup_address 1000/1h;\n"
                     . "    foko_chat_redis_partitions 4;\n",
    );
}

start_foko(host_config('host-a'));
my $A = { name => 'A', root => server_root(), port => server_port() };
my $B = start_foko_host(name => 'b', host_config('host-b'));
my $C = start_foko_host(name => 'c', host_config('host-c'));
$B->{name} = 'B';
$C->{name} = 'C';
my @hosts = ($A, $B, $C);

sub status_of {
    my $h = shift;
    return on_host($h, sub { (api(GET => '/status'))[1] });
}

ok wait_until(sub {
    !grep { (status_of($_)->{redis}{state} // '') ne 'up' } @hosts
}, 10), 'every host reaches Redis';

my $email = unique_email('erin');
my ($token) = signup(username => 'erin', email => $email,
                     password => 'right-password-1');
ok $token, 'erin signs up';

sub login_on {
    my ($h, $password) = @_;
    return on_host($h, sub {
        my ($st, $body, $headers) = api(POST => '/api/auth/login',
            { email => $email, password => $password });
        return ($st, $body, $headers);
    });
}

# --- a success clears the account's counter --------------------------------

my ($st) = login_on($A, 'wrong-password');
is $st, 401, 'a failed sign-in on host A';
my @k = grep { /login:account/ }
    split /\n/, redis_cli($redis, 'KEYS', 'foko:limit:*');
is scalar @k, 1, 'is counted in Redis';
is redis_cli($redis, 'GET', $k[0]), 1, 'once';
($st) = login_on($B, 'right-password-1');
is $st, 200, 'a success on host B';
# the counter is deleted by a task after the answer
ok wait_until(sub { redis_cli($redis, 'EXISTS', $k[0]) eq '0' }, 5),
    'deletes the account\'s counter';

# --- 10 failures over three hosts, then 429 on every host ------------------

my @answers;
for my $i (0 .. 9) {
    my ($s) = login_on($hosts[$i % 3], 'wrong-password');
    push @answers, $s;
}
is_deeply \@answers, [(401) x 10],
    '10 failed sign-ins, round-robin over hosts A, B and C: 401 each';
is redis_cli($redis, 'GET', $k[0]), 10, 'Redis counts all ten';
my ($s11, $b11, $h11) = login_on($hosts[10 % 3], 'wrong-password');
is $s11, 429, 'the 11th, on host B, is 429';
is $b11->{error}{code} // $b11->{error}, 'rate_limited', 'rate_limited'
    if ref $b11;
for my $h (@hosts) {
    my ($s) = login_on($h, 'right-password-1');
    is $s, 429, "then even the right password on host $h->{name}: 429";
}
is redis_cli($redis, 'GET', $k[0]), 10,
    'attempts over the limit are not counted';
my $ttl = redis_cli($redis, 'PTTL', $k[0]);
ok $ttl > 14 * 60 * 1000 && $ttl <= 15 * 60 * 1000,
    'in a window of 15 minutes';

# --- recoveries too: forgot_account 3/1h over three hosts ------------------

my @forgot;
for my $i (0 .. 3) {
    push @forgot, on_host($hosts[$i % 3], sub {
        (api(POST => '/api/auth/password/forgot', { email => $email }))[0]
    });
}
is_deeply \@forgot, [202, 202, 202, 429],
    'three recoveries on hosts A, B and C are accepted, the 4th is 429';

# --- Redis down: each host counts alone again ------------------------------

redis_stop($redis);
my $email2 = unique_email('fred');
my ($t2) = signup(username => 'fred', email => $email2,
                  password => 'right-password-2');
ok $t2, 'a sign-up while Redis is down';
$email = $email2;
@answers = ();
for my $i (1 .. 11) {
    my ($s) = login_on($B, 'wrong-password');
    push @answers, $s;
}
is_deeply \@answers, [(401) x 10, 429],
    'with Redis down, host B counts alone: the 11th failure there is 429';
my ($sa) = login_on($A, 'right-password-2');
is $sa, 200, 'and host A, which has not seen them, lets the right one in';

my @warn = grep { /Redis failed for the rate limits .*this host counts alone/ }
    on_host($B, sub { error_log_lines() });
ok @warn >= 1 && @warn <= 2, 'host B says so at warn, once (per worker)'
    or diag scalar @warn;

# --- Redis back, empty: hosts count there again, on new connections ------

redis_start($redis);
($st) = login_on($C, 'wrong-password');
is $st, 401, 'a failed sign-in on host C once Redis is back';
my @k2 = grep { /login:account/ }
    split /\n/, redis_cli($redis, 'KEYS', 'foko:limit:*');
is scalar @k2, 1, 'is counted in the Redis that came back';
is scalar(grep { /Redis failed for the rate limits/ }
              on_host($C, sub { error_log_lines() })), 0,
    'by host C, whose kept connections Redis had closed, at once';
($st) = login_on($C, 'right-password-2');
is $st, 200, 'a success on host C';
ok wait_until(sub { redis_cli($redis, 'EXISTS', $k2[0]) eq '0' }, 5),
    'deletes the counter in the Redis that came back';

for my $h (@hosts) {
    my @bad = grep { /\[(?:alert|crit|error|emerg)\]/ }
        on_host($h, sub { error_log_lines() });
    is scalar @bad, 0, "host $h->{name}: no error in the log"
        or diag @bad[0 .. ($#bad < 4 ? $#bad : 4)];
}

stop_foko_host($B);
stop_foko_host($C);
stop_foko();
redis_stop($redis);

done_testing;
