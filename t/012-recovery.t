# Password recovery by email, through SendGrid's API and through SMTP, with
# the mail test peer (t/lib/mailpeer.py) recording what arrives.

use strict;
use warnings;

use Test::More;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;

my $smtp = $ENV{TEST_NGINX_MAIL_SMTP_PORT}
    or plan skip_all => 'TEST_NGINX_MAIL_SMTP_PORT is not set';
my $http = $ENV{TEST_NGINX_MAIL_HTTP_PORT}
    or plan skip_all => 'TEST_NGINX_MAIL_HTTP_PORT is not set';

my $dir = tempdir(CLEANUP => 1);
write_file("$dir/sendgrid.key", "  SG.test-key-42\n");

# the mail peer's own HTTP API: recorded messages for one recipient
sub mailbox {
    my ($path) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $http, Timeout => 15)
        or die "mail peer: $@\n";
    print {$sock} "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n";
    local $/;
    my $res = <$sock>;
    my ($body) = $res =~ /\r\n\r\n(.*)\z/s;
    return decode_json($body);
}

sub mails_to { mailbox("/messages?to=$_[0]&wait=" . ($_[1] // 10)) }

sub token_of {
    my ($link) = @_;
    return $link =~ /[?&]token=([\w.-]+)/ ? $1 : undef;
}

for my $transport ('sendgrid', 'smtp') {
    my $mail = $transport eq 'sendgrid'
        ? "foko_chat_mail sendgrid key_file=$dir/sendgrid.key "
          . "from=chat\@example.org url=http://127.0.0.1:$http timeout=3s;"
        : "foko_chat_mail smtp://127.0.0.1:$smtp from=chat\@example.org "
          . "timeout=3s;";

    start_foko(http_config => "    $mail\n"
        . "    foko_chat_public_url https://chat.example.org/;\n");

    my $email = unique_email("reset-$transport");
    my ($old_token, $user) = signup(email => $email, username => 'Resetter');

    my ($status, $res) = api(POST => '/api/auth/password/forgot',
                             { email => uc $email });
    is $status, 202, "$transport: forgot answers 202";

    my $mails = mails_to($email);
    is scalar @$mails, 1, "$transport: one mail arrives";
    my $m = $mails->[0];
    is $m->{transport}, $transport, "$transport: through $transport";
    like $m->{from}, qr/chat\@example\.org/, "$transport: from the sender";
    like $m->{subject}, qr/password/i, "$transport: about the password";
    like $m->{link}, qr{^https://chat\.example\.org/reset-password\?token=},
        "$transport: with a link from foko_chat_public_url";

    if ($transport eq 'sendgrid') {
        is $m->{authorization}, 'Bearer SG.test-key-42',
            'sendgrid: the key from key_file, trimmed';
        is $m->{path}, '/v3/mail/send', 'sendgrid: POST /v3/mail/send';
        my $body = $m->{body};
        $body = decode_json($body) unless ref $body;
        is $body->{personalizations}[0]{to}[0]{email}, $email,
            'sendgrid: personalizations name the recipient';
        is $body->{from}{email}, 'chat@example.org', 'sendgrid: from';
        like $body->{content}[0]{value}, qr/reset-password\?token=/,
            'sendgrid: content carries the link';
    }

    my $reset = token_of($m->{link});
    ok $reset, "$transport: the link carries a token";

    ($status, $res) = api(GET => '/api/me', undef, token => $reset);
    is $status, 401, "$transport: a reset token is no access token";

    ($status, $res) = api(POST => '/api/auth/password/reset',
                          { token => $reset, password => 'short' });
    is $status, 400, "$transport: the new password obeys the rules";
    is $res->{error}{field}, 'password', "$transport: naming the field";

    ($status, $res) = api(POST => '/api/auth/password/reset',
                          { token => $reset, password => 'brand new horse' });
    is $status, 200, "$transport: reset";
    is $res->{user}{id}, $user->{id}, "$transport: of the right account";
    ok $res->{token}, "$transport: signed in";

    ($status, $res) = api(POST => '/api/auth/password/reset',
                          { token => $reset, password => 'another horse' });
    is $status, 400, "$transport: the same reset token again is refused";
    is $res->{error}{code}, 'invalid_token', "$transport: invalid_token";

    ($status) = api(POST => '/api/auth/login',
                    { email => $email, password => 'correct horse' });
    is $status, 401, "$transport: the old password is gone";
    ($status, $res) = api(GET => '/api/me', undef, token => $old_token);
    is $status, 401, "$transport: and so are the tokens signed before";
    ($status) = api(POST => '/api/auth/login',
                    { email => $email, password => 'brand new horse' });
    is $status, 200, "$transport: the new one works";

    # an unknown account: the same answer, no mail

    my $ghost = unique_email('ghost');
    ($status, $res) = api(POST => '/api/auth/password/forgot',
                          { email => $ghost });
    is $status, 202, "$transport: an unknown email also gets 202";
    is_deeply mails_to($ghost, 1), [], "$transport: and no mail";

    stop_foko();
}

# older reset tokens die with a reset, and forged ones never work

start_foko(http_config => "    foko_chat_mail smtp://127.0.0.1:$smtp "
    . "from=chat\@example.org timeout=3s;\n"
    . "    foko_chat_public_url http://127.0.0.1:8080;\n");

my $email = unique_email('twice');
signup(email => $email, username => 'Twice');

api(POST => '/api/auth/password/forgot', { email => $email });
my $first = token_of(mails_to($email)->[0]{link});
api(POST => '/api/auth/password/forgot', { email => $email });
my $mails = mails_to($email);
for (1 .. 50) {
    last if @$mails >= 2;
    sleep 0.2;
    $mails = mails_to($email, 0);
}
my $second = token_of($mails->[1]{link});

my ($status, $res) = api(POST => '/api/auth/password/reset',
                         { token => $second, password => 'second horse' });
is $status, 200, 'the newer reset token works';
($status, $res) = api(POST => '/api/auth/password/reset',
                      { token => $first, password => 'first horse' });
is $status, 400, 'the older one is void after a reset';

my ($access) = signup(username => 'not-a-reset');
($status, $res) = api(POST => '/api/auth/password/reset',
                      { token => $access, password => 'sneaky horse' });
is $status, 400, 'an access token is no reset token';
is $res->{error}{code}, 'invalid_token', 'invalid_token';

($status, $res) = api(POST => '/api/auth/password/reset',
                      { token => 'garbage', password => 'sneaky horse' });
is $status, 400, 'garbage is an invalid token';

($status, $res) = api(POST => '/api/auth/password/reset',
                      { password => 'sneaky horse' });
is $status, 400, 'a missing token is invalid input';
is $res->{error}{field}, 'token', 'naming the field';

# forgot-password is limited per account and per address

my $limited = unique_email('limited');
my @codes = map {
    (api(POST => '/api/auth/password/forgot', { email => $limited }))[0]
} 1 .. 4;
is_deeply \@codes, [202, 202, 202, 429],
    'three recoveries per account an hour, then 429';

stop_foko();

# a failing provider is retried, a silent one given up: never in the way

start_foko(http_config => "    foko_chat_mail sendgrid key_file=$dir/sendgrid.key "
    . "from=chat\@example.org url=http://127.0.0.1:$http timeout=1s;\n"
    . "    foko_chat_public_url https://chat.example.org;\n");

my $failing = unique_email('fail');
my $slow = unique_email('slow');
signup(email => $failing, username => 'Failing');
signup(email => $slow, username => 'Slow');

($status) = api(POST => '/api/auth/password/forgot', { email => $slow },
                timeout => 0.9);
is $status, 202, 'forgot answers at once while the provider hangs';
($status) = api(POST => '/api/auth/password/forgot', { email => $failing });
is $status, 202, 'and while it fails';

$mails = mails_to($failing, 15);
is scalar @$mails, 1, 'the failing provider\'s mail arrives after retries';
is mailbox("/attempts?to=$failing")->{sendgrid}, 3,
    'on the third attempt';

my $given_up;
for (1 .. 100) {
    last if ($given_up = error_log_text()
             =~ /mail to "\Q$slow\E".*giving up/);
    sleep 0.1;
}
ok $given_up, 'the silent provider is given up after the bounded attempts';
is mailbox("/attempts?to=$slow")->{sendgrid}, 3, 'three of them';
unlike error_log_text(), qr/token=/, 'no reset link in the log';

stop_foko();

# at most four attempts of a worker at once: a fifth mail waits its turn

start_foko(http_config => "    foko_chat_mail sendgrid key_file=$dir/sendgrid.key "
    . "from=chat\@example.org url=http://127.0.0.1:$http timeout=2s;\n"
    . "    foko_chat_public_url https://chat.example.org;\n");

my @hanging = map { unique_email('slow') } 1 .. 4;
signup(email => $_, username => 'Hanging') for @hanging;
my $fifth = unique_email('fifth');
signup(email => $fifth, username => 'Fifth');

api(POST => '/api/auth/password/forgot', { email => $_ }) for @hanging;
is scalar(grep { mailbox("/attempts?to=$_&min=1&wait=5")->{sendgrid} == 1 }
          @hanging), 4, 'four attempts hang at the provider';
my $t0 = time;
($status) = api(POST => '/api/auth/password/forgot', { email => $fifth });
is $status, 202, 'a fifth mail while four attempts hang: 202 at once';

$mails = mails_to($fifth, 10);
my $waited = time - $t0;
is scalar @$mails, 1, 'the fifth mail is sent';
cmp_ok $waited, '>=', 1.5, 'once one of the four attempts timed out';
cmp_ok $waited, '<', 4, 'before their retries';
is mailbox("/attempts?to=$fifth")->{sendgrid}, 1, 'in one attempt';

stop_foko();

# no mail transport configured: the call still behaves, the log says why

start_foko();
$email = unique_email('nomail');
signup(email => $email, username => 'Nomail');
($status) = api(POST => '/api/auth/password/forgot', { email => $email });
is $status, 202, 'without foko_chat_mail, forgot still answers 202';
my $logged;
for (1 .. 50) {
    last if ($logged = error_log_text() =~ /not sent: no foko_chat_mail/);
    sleep 0.1;
}
ok $logged, 'and the log says the mail was not sent';
stop_foko();

done_testing;
