# Accounts: sign-up, sign-in, refresh, /api/me, /api/users, rate limits,
# enumeration rules and bad input, over two workers.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

# more sign-ups than signup_address lets one address make by default
start_foko(workers => 2,
           http_config => "    foko_chat_limit signup_address 1000/1h;\n");

# sign-up

my $email = unique_email('alice');
my ($status, $res) = api(POST => '/api/auth/signup',
    { email => uc $email, password => 'correct horse', username => 'Alice' });

is $status, 201, 'signup answers 201';
like $res->{user}{id}, qr/^[0-9a-f]{24}$/, 'with an ObjectId';
is $res->{user}{email}, $email, 'the email is stored lowercased';
is $res->{user}{username}, 'Alice', 'and the username as given';
ok !exists $res->{user}{hash}, 'the password hash never leaves';
my $alice = $res->{user};
my $token = $res->{token};
like $token, qr/^[\w-]+\.[\w-]+\.[\w-]+$/, 'and a token';

($status, $res) = api(POST => '/api/auth/signup',
    { email => $email, password => 'another horse', username => 'Alice2' });
is $status, 409, 'the same email again is a conflict';
is $res->{error}{code}, 'email_taken', 'email_taken';

# a race for one email: one account, the others 409

my $racer = unique_email('racer');
my @socks = map {
    api_send(POST => '/api/auth/signup',
        { email => $racer, password => 'correct horse', username => "r$_" })
} 1 .. 6;
my @codes = sort map { (api_recv($_))[0] } @socks;
close $_ for @socks;
is_deeply \@codes, [201, 409, 409, 409, 409, 409],
    'six concurrent signups for one email: one account';

# sign-in

($status, $res) = api(POST => '/api/auth/login',
    { email => $email, password => 'correct horse' });
is $status, 200, 'login with the right password';
is $res->{user}{id}, $alice->{id}, 'as the same user';
ok $res->{token}, 'with a token';

my ($wrong_status, $wrong) = api(POST => '/api/auth/login',
    { email => $email, password => 'wrong horse' });
my ($unknown_status, $unknown) = api(POST => '/api/auth/login',
    { email => unique_email('nobody'), password => 'wrong horse' });
is $wrong_status, 401, 'a wrong password is 401';
is $unknown_status, 401, 'an unknown email is 401';
is_deeply $unknown, $wrong, 'with the very same answer';
is $wrong->{error}{code}, 'invalid_credentials', 'invalid_credentials';

# the token

($status, $res) = api(GET => '/api/me', undef, token => $token);
is $status, 200, '/api/me with the token';
is_deeply $res, { user => $alice }, 'is the caller, with its email';

($status, $res) = api(GET => '/api/me');
is $status, 401, '/api/me without a token is 401';
is $res->{error}{code}, 'invalid_token', 'invalid_token';

($status, $res) = api(POST => '/api/auth/refresh', undef, token => $token);
is $status, 200, 'refresh';
is $res->{user}{id}, $alice->{id}, 'for the same user';
($status) = api(GET => '/api/me', undef, token => $res->{token});
is $status, 200, 'the refreshed token works';

# users to talk to

my ($bob_token, $bob) = signup(username => 'Bobby Tables', exact => 1);
signup(username => 'bobcat');
signup(username => 'robert');

($status, $res) = api(GET => '/api/users?q=bob', undef, token => $token);
is $status, 200, 'user search';
my @names = map { $_->{username} } @$res;
ok((grep { $_ eq 'Bobby Tables' } @names), 'finds by prefix, any case');
ok(!(grep { $_ eq 'robert' } @names), 'and only by prefix');
ok(!(grep { exists $_->{email} || exists $_->{hash} } @$res),
    'never with emails or hashes');
is_deeply [sort keys %{ $res->[0] }], ['id', 'username'], 'id and username';

($status, $res) = api(GET => '/api/users?q=' . 'Alice', undef,
                      token => $token);
ok(!(grep { $_->{id} eq $alice->{id} } @$res), 'never the caller');

($status, $res) = api(GET => '/api/users?q=.*', undef, token => $token);
is_deeply $res, [], 'a regex in the query is taken literally';

for my $q ('x' x 65, 'a' x 190, '%41' x 60) {
    ($status, $res) = api(GET => "/api/users?q=$q", undef, token => $token);
    is $status, 400, 'an overlong query is 400 (' . length($q) . ' bytes)';
}
($status) = api(GET => '/api/me', undef, token => $token);
is $status, 200, 'and the worker is fine';

for my $q ('%ff', 'bob%c3', '%c0%af', '%ed%a0%80', '%f4%90%80%80', 'a%80b') {
    ($status, $res) = api(GET => "/api/users?q=$q", undef, token => $token);
    is_deeply [$status, $res->{error}{code}, $res->{error}{field}],
        [400, 'invalid_request', 'q'], "q=$q, not UTF-8, is 400 naming q";
}
signup(username => "\x{e9}mile", email => unique_email('emile'),
       exact => 1);
($status, $res) = api(GET => '/api/users?q=%C3%A9MI', undef, token => $token);
is $status, 200, 'a UTF-8 query is fine';
ok((grep { $_->{username} eq "\x{e9}mile" } @$res), 'and finds by it');

# bad input: 400 naming the field, nothing written

my @bad = (
    ['not json', 'body', '{"email":'],
    ['an array', 'body', '[1,2]'],
    ['no email', 'email', { password => 'correct horse', username => 'x' }],
    ['an invalid email', 'email',
        { email => 'no-at-sign', password => 'correct horse', username => 'x' }],
    ['a number for email', 'email',
        { email => 42, password => 'correct horse', username => 'x' }],
    ['a short password', 'password',
        { email => unique_email(), password => 'short', username => 'x' }],
    ['an overlong password', 'password',
        { email => unique_email(), password => 'p' x 300, username => 'x' }],
    ['no username', 'username',
        { email => unique_email(), password => 'correct horse' }],
    ['a control character in the username', 'username',
        { email => unique_email(), password => 'correct horse',
          username => "evil\x07name" }],
    ['an overlong username', 'username',
        { email => unique_email(), password => 'correct horse',
          username => 'n' x 33 }],
    map({ ["a username with $_->[0]", 'username',
           { email => unique_email(), password => 'correct horse',
             username => $_->[1] }] }
        ['a C1 control (U+0085)', "evil\x{85}name"],
        ['a C1 control (U+009F)', "x\x{9f}"],
        ['a bidi override (U+202E)', "abc\x{202e}gpj.exe"],
        ['a bidi embedding (U+202A)', "\x{202a}abc"],
        ['a bidi isolate (U+2066)', "a\x{2066}b"],
        ['a bidi isolate end (U+2069)', "a\x{2069}"],
        ['only a zero-width space', "\x{200b}"],
        ['only zero-width characters', "\x{200b}\x{200d}\x{feff}\x{2060}"],
        ['only a Hangul filler', "\x{3164}"],
        ['only invisible spaces', "\x{a0}\x{2800}\x{3000}"],
        ['only a soft hyphen and a variation selector', "\x{ad}\x{fe0f}"]),
);

for my $case (@bad) {
    my ($name, $field, $body) = @$case;
    ($status, $res) = api(POST => '/api/auth/signup', $body);
    is $status, 400, "$name is 400";
    is $res->{error}{code}, 'invalid_request', "$name is invalid_request";
    is $res->{error}{field}, $field, "$name names \"$field\"";
}

for my $ok (["\x{5d0}\x{5d1}\x{5d2}", 'a right-to-left name'],
            ["\x{1f469}\x{200d}\x{1f4bb}", 'an emoji joined by U+200D'],
            ["Zo\x{eb} \x{200b}K", 'a zero-width space among letters']) {
    ($status, $res) = api(POST => '/api/auth/signup',
        { email => unique_email('fine'), password => 'correct horse',
          username => $ok->[0] });
    is $status, 201, "$ok->[1] is a username";
}

my $kept = unique_email('kept');
api(POST => '/api/auth/signup',
    { email => $kept, password => 'short', username => 'kept' });
api(POST => '/api/auth/signup',
    { email => $kept, password => 'correct horse', username => "a\tb" });
($status) = api(POST => '/api/auth/login',
    { email => $kept, password => 'short' });
is $status, 401, 'a refused signup wrote nothing';

($status, $res) = api(POST => '/api/auth/signup',
    { email => $kept, password => 'correct horse', username => 'ok',
      extra => 'ignored' });
is $status, 201, 'unknown fields are ignored (and the email was free)';

($status, $res) = api(POST => '/api/auth/signup',
    '{"email":"' . ('a' x 70000) . '"}');
is $status, 413, 'a body over the limit is 413';
is $res->{error}{code}, 'too_large', 'too_large';

# failed sign-ins are limited per account, whoever tries

my $victim = unique_email('victim');
signup(email => $victim, username => 'victim');

for (1 .. 10) {
    ($status) = api(POST => '/api/auth/login',
        { email => $victim, password => 'guess' . $_ });
}
is $status, 401, 'ten wrong passwords are ten 401s';

my $headers;
($status, $res, $headers) = api(POST => '/api/auth/login',
    { email => $victim, password => 'correct horse' });
is $status, 429, 'then even the right password is 429';
is $res->{error}{code}, 'rate_limited', 'rate_limited';
cmp_ok $headers->{'retry-after'}, '>', 0, 'with Retry-After';

# attempts in flight count at once: a burst cannot pass the limit

my $burst = unique_email('burst');
signup(email => $burst, username => 'burst');
my @burst = map {
    api_send(POST => '/api/auth/login', { email => $burst, password => "b$_" })
} 1 .. 20;
my %seen;
$seen{ (api_recv($_))[0] }++ for @burst;
close $_ for @burst;
is $seen{401}, 10, 'of twenty wrong passwords at once, ten are tried';
is $seen{429}, 10, 'and ten are refused';

# an unknown email is limited the same way: no enumeration by limits

my $ghost = unique_email('ghost');
for (1 .. 10) {
    api(POST => '/api/auth/login', { email => $ghost, password => 'x' });
}
($status) = api(POST => '/api/auth/login', { email => $ghost, password => 'x' });
is $status, 429, 'an unknown email is limited alike';

my $log = error_log_text();
unlike $log, qr/\[(error|alert|crit|emerg)\]/,
    'clients\' mistakes log nothing above info';

error_log_clean();

stop_foko();

done_testing;
