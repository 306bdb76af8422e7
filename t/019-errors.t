# Every error that accounts and channels answer, byte for byte: its status
# and the whole body, {"error":{"code":...,"message":...}}, as the one
# error table renders it.

use strict;
use warnings;

use Test::More;

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

start_foko(http_config => "    foko_chat_max_members 3;\n"
                        . "    foko_chat_limit login_account 2/15m;\n");

# (status, raw body) of one request
sub call {
    my ($status, undef, undef, $raw) = api(@_);
    return ($status, $raw);
}

sub error_is {
    my ($name, $got, $status, $code, $message) = @_;
    is $got->[0], $status, "$name: $status";
    is $got->[1], qq({"error":{"code":"$code","message":"$message"}}\n),
        "$name: the body";
}

my $pw = 'correct horse';
my ($a_email, $b_email, $c_email) = map { unique_email($_) } qw(ea eb ec);
my ($a_token, $a) = signup(email => $a_email, username => 'ea');
my (undef, $b) = signup(email => $b_email, username => 'eb');
my (undef, $c) = signup(email => $c_email, username => 'ec');
my %auth = (token => $a_token);

# accounts

error_is 'sign-up with a taken email',
    [call(POST => '/api/auth/signup',
          { email => $a_email, password => $pw, username => 'again' })],
    409, 'email_taken', 'an account with this email exists already';

error_is 'a wrong password',
    [call(POST => '/api/auth/login',
          { email => $a_email, password => 'wrong horse' })],
    401, 'invalid_credentials', 'wrong email or password';

my $now = time;
error_is 'the token of a missing account',
    [call(GET => '/api/me', undef,
          token => forge_token({ sub => 'a' x 24, typ => 'access',
                                 name => 'x', iat => $now,
                                 exp => $now + 600 }, jwt_secret()))],
    401, 'invalid_token', 'the account no longer exists';

my $claims = token_claims($a_token);
$claims->{ver} = ($claims->{ver} // 0) + 1;
error_is 'a token of an older password',
    [call(GET => '/api/me', undef,
          token => forge_token($claims, jwt_secret()))],
    401, 'invalid_token', 'the password has changed since; sign in again';

error_is 'a reset link that is no token',
    [call(POST => '/api/auth/password/reset',
          { token => 'not.a.token', password => 'new correct horse' })],
    400, 'invalid_token', 'the link is invalid, used or expired';

my $limited = unique_email('limited');
call(POST => '/api/auth/login', { email => $limited, password => 'x' })
    for 1 .. 2;
error_is 'a sign-in over the limit',
    [call(POST => '/api/auth/login', { email => $limited, password => 'x' })],
    429, 'rate_limited', 'too many attempts; try again later';

# channels

error_is 'a channel of more members than allowed',
    [call(POST => '/api/channels',
          { name => 'big', members => [map { sprintf '%024x', $_ } 1 .. 4] },
          %auth)],
    422, 'channel_full', 'too many members';

error_is 'a channel with a member who is no user',
    [call(POST => '/api/channels',
          { name => 'ghosts', members => ['b' x 24] }, %auth)],
    422, 'unknown_user', 'a member is not a user';

my ($s, $direct) = api(POST => '/api/channels',
                       { members => [$b->{id}] }, %auth);
is $s, 201, 'a direct conversation';
my $d = $direct->{id} // $direct->{channel}{id};

error_is 'renaming a direct conversation',
    [call(PATCH => "/api/channels/$d", { name => 'named' }, %auth)],
    422, 'direct_channel', 'a direct conversation has no name';

error_is 'inviting to a direct conversation',
    [call(POST => "/api/channels/$d/invite", { email => $c_email }, %auth)],
    422, 'direct_channel', 'a direct conversation stays between two';

my ($s2, $named) = api(POST => '/api/channels',
                       { name => 'three', members => [$b->{id}, $c->{id}] },
                       %auth);
is $s2, 201, 'a channel of three';
my $n = $named->{id} // $named->{channel}{id};

error_is 'inviting a member',
    [call(POST => "/api/channels/$n/invite", { email => $b_email }, %auth)],
    409, 'already_member', 'already a member of this channel';

error_is 'inviting to a full channel',
    [call(POST => "/api/channels/$n/invite",
          { email => unique_email('fourth') }, %auth)],
    422, 'channel_full', 'the channel is full';

error_is 'a channel that does not exist',
    [call(GET => '/api/channels/' . 'f' x 24, undef, %auth)],
    404, 'not_found', 'no such channel';

error_is 'a channel id that is no id',
    [call(GET => '/api/channels/nope', undef, %auth)],
    404, 'not_found', 'no such channel';

stop_foko();

error_log_clean();

done_testing;
