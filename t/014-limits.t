# Rate limits (ngx_foko_chat_limit.c) as foko_chat_limit sets them, over
# two workers, so that both count in the one shared zone: sign-ups per
# address, failed sign-ins per account and per address, recoveries per
# account; 429 rate_limited with Retry-After inside the window.

use strict;
use warnings;

use Test::More;

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

start_foko(workers => 2,
           http_config => "    foko_chat_limit signup_address 4/1h;\n"
               . "    foko_chat_limit login_account 3/15m;\n"
               . "    foko_chat_limit login_address 6/15m;\n"
               . "    foko_chat_limit forgot_account 1/1h;\n");

sub limited {
    my ($what, $status, $res, $headers, $window) = @_;
    is $status, 429, "$what: 429";
    is $res->{error}{code}, 'rate_limited', "$what: rate_limited";
    my $after = $headers->{'retry-after'} // 0;
    ok $after > 0 && $after <= $window,
        "$what: Retry-After within the window ($after s)";
}

# sign-ups: four from this address, the fifth is refused

my @users;
for my $i (1 .. 4) {
    my $email = unique_email("limit$i");
    my ($status) = api(POST => '/api/auth/signup',
        { email => $email, password => 'correct horse', username => "l$i" });
    is $status, 201, "sign-up $i of 4: 201";
    push @users, $email;
}

my ($status, $res, $headers) = api(POST => '/api/auth/signup',
    { email => unique_email('limit5'), password => 'correct horse',
      username => 'l5' });
limited('a fifth sign-up from the address', $status, $res, $headers, 3600);

# failed sign-ins per account: a success clears the count

my ($a, $b, $c) = @users;
for (1 .. 2) {
    ($status) = api(POST => '/api/auth/login',
                    { email => $a, password => "wrong$_" });
}
is $status, 401, 'two wrong passwords: 401';
($status) = api(POST => '/api/auth/login',
                { email => $a, password => 'correct horse' });
is $status, 200, 'the right one still signs in';

for (1 .. 3) {
    ($status) = api(POST => '/api/auth/login',
                    { email => $a, password => "again$_" });
    is $status, 401, "after the success, wrong password $_ of 3: 401";
}

# the other accounts are not limited by the first one's count

($status) = api(POST => '/api/auth/login',
                { email => $b, password => 'correct horse' });
is $status, 200, 'another account signs in';

($status, $res, $headers) = api(POST => '/api/auth/login',
    { email => $a, password => 'correct horse' });
limited('a fourth attempt on the account, right password or not',
        $status, $res, $headers, 900);

# failed sign-ins per address: the address has its own count, whatever
# the accounts (five failures above, successes not counted); whether the
# refused attempt counted or not, a second one is past login_address

for (1 .. 2) {
    ($status, $res, $headers) = api(POST => '/api/auth/login',
        { email => $c, password => 'wrong' });
    last if $status == 429;
}
limited('past login_address, another account', $status, $res, $headers,
        900);

# recoveries per account: one an hour

($status) = api(POST => '/api/auth/password/forgot', { email => $c });
is $status, 202, 'a first recovery: 202';
($status, $res, $headers) = api(POST => '/api/auth/password/forgot',
                                { email => $c });
limited('a second recovery of the account', $status, $res, $headers, 3600);

# the clients' mistakes and the mail that is not configured log nothing
# at [error] or above

error_log_clean('nothing at [error] or above', qr/no foko_chat_mail/);

stop_foko();

done_testing;
