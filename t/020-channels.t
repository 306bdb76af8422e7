# Channels and direct conversations over two workers: create, list, get,
# rename, invite (an existing account, or an email that becomes an invited
# account with a mail), leave; to a non-member a channel does not exist.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use JSON::PP;

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

my $smtp = $ENV{TEST_NGINX_MAIL_SMTP_PORT};
my $http = $ENV{TEST_NGINX_MAIL_HTTP_PORT};

start_foko(workers => 2, http_config => "    foko_chat_max_members 4;\n"
    . ($smtp ? "    foko_chat_mail smtp://127.0.0.1:$smtp "
               . "from=chat\@example.org timeout=3s;\n"
               . "    foko_chat_public_url https://chat.example.org;\n"
             : ''));

my ($alice, $a) = signup(username => 'alice');
my ($bob, $b) = signup(username => 'bob');
my ($carol, $c) = signup(username => 'carol');
my ($mallory, $m) = signup(username => 'mallory');

# a named channel

my ($status, $res) = api(POST => '/api/channels',
    { name => 'Lunch', members => [$b->{id}, $c->{id}] }, token => $alice);
is $status, 201, 'a named channel is created';
my $lunch = $res;
like $lunch->{id}, qr/^[0-9a-f]{24}$/, 'with an id';
is $lunch->{name}, 'Lunch', 'and its name';
ok !$lunch->{direct}, 'not direct';
is_deeply [sort map { $_->{username} } @{ $lunch->{members} }],
    [map { $_->{username} } $a, $b, $c], 'the creator is a member';
is $lunch->{last_seq}, 0, 'no messages yet';
is $lunch->{last_message}, undef, 'so no last message';

# a named channel with only its creator, who invites later

($status, $res) = api(POST => '/api/channels',
    { name => 'Notes', members => [] }, token => $alice);
is $status, 201, 'a named channel with no other member is created';
my $notes = $res;
is $notes->{name}, 'Notes', 'with its name';
ok !$notes->{direct}, 'not direct';
is_deeply [map { $_->{username} } @{ $notes->{members} }],
    [$a->{username}],
    'its creator is its one member';
($status, $res) = api(POST => '/api/channels',
    { name => 'Solo', members => [$a->{id}] }, token => $alice);
is $status, 201, 'naming only the creator is the same';
is scalar @{ $res->{members} }, 1, 'one member, once';
my $solo = $res->{id};
($status, $res) = api(GET => "/api/channels/$notes->{id}", undef,
                      token => $alice);
is $status, 200, 'the creator gets it';
is $res->{unread}, 0, 'with nothing unread';
($status) = api(GET => "/api/channels/$notes->{id}", undef, token => $bob);
is $status, 404, 'nobody else sees it';
($status, $res) = api(POST => "/api/channels/$notes->{id}/messages",
                      { text => 'remember the milk' }, token => $alice);
is $status, 201, 'its creator posts to it alone';
($status, $res) = api(POST => "/api/channels/$solo/invite",
                      { email => $c->{email} }, token => $alice);
is $status, 200, 'and invites someone later';
is_deeply [sort map { $_->{username} } @{ $res->{members} }],
    [map { $_->{username} } $a, $c], 'who joins it';

# a direct conversation, created once

($status, $res) = api(POST => '/api/channels', { members => [$b->{id}] },
                      token => $alice);
is $status, 201, 'a direct conversation is created';
ok $res->{direct}, 'direct';
my $direct = $res->{id};

($status, $res) = api(POST => '/api/channels', { members => [$a->{id}] },
                      token => $bob);
is $status, 200, 'asked for again, from the other side';
is $res->{id}, $direct, 'it is the same one';

# bad input

my @bad = (
    [{ members => 'x' }, 'members', 'members not an array'],
    [{ members => ['nope'] }, 'members', 'a member that is no id'],
    [{ members => [$a->{id}] }, 'name', 'only the creator, no name'],
    [{ members => [] }, 'name', 'nobody and no name'],
    [{ name => '', members => [$b->{id}] }, 'name', 'an empty name'],
    [{ name => 'x' x 65, members => [$b->{id}] }, 'name', 'a long name'],
    [{ members => [$b->{id}, $c->{id}] }, 'name', 'a group without a name'],
);
for my $case (@bad) {
    ($status, $res) = api(POST => '/api/channels', $case->[0],
                          token => $alice);
    is $status, 400, "$case->[2] is 400";
    is $res->{error}{field}, $case->[1], "naming \"$case->[1]\"";
}

($status, $res) = api(POST => '/api/channels',
    { name => 'Ghosts', members => ['aaaaaaaaaaaaaaaaaaaaaaaa'] },
    token => $alice);
is $status, 422, 'a member that is no user is refused';

($status, $res) = api(POST => '/api/channels',
    { name => 'Crowd', members => [map { sprintf '%024x', $_ } 1 .. 5] },
    token => $alice);
is $status, 422, 'more members than foko_chat_max_members is 422';
is $res->{error}{code}, 'channel_full', 'channel_full';

($status) = api(POST => '/api/channels', { members => [$b->{id}] });
is $status, 401, 'no token, no channel';

# list and get

($status, $res) = api(GET => '/api/channels', undef, token => $bob);
is $status, 200, 'bob lists his channels';
is_deeply [sort map { $_->{id} } @$res], [sort $lunch->{id}, $direct],
    'both of them';
my ($listed) = grep { $_->{id} eq $lunch->{id} } @$res;
ok exists $listed->{unread}, 'with an unread count';
ok !(grep { !exists $_->{online} } @{ $listed->{members} }),
    'and members with their presence';

($status, $res) = api(GET => "/api/channels/$lunch->{id}", undef,
                      token => $carol);
is $status, 200, 'a member gets the channel';
is $res->{name}, 'Lunch', 'by id';

my ($nf_status, $nf) = api(GET => "/api/channels/$lunch->{id}", undef,
                           token => $mallory);
is $nf_status, 404, 'a non-member gets 404';
my ($none_status, $none) = api(GET => '/api/channels/' . ('f' x 24), undef,
                               token => $mallory);
is_deeply [$none_status, $none], [$nf_status, $nf],
    'exactly as for an id that does not exist';
($status) = api(GET => '/api/channels/not-an-id', undef, token => $alice);
is $status, 404, 'a malformed id is 404';

# rename

($status, $res) = api(PATCH => "/api/channels/$lunch->{id}",
                      { name => 'Dinner' }, token => $bob);
is $status, 200, 'a member renames';
is $res->{name}, 'Dinner', 'renamed';
($status) = api(PATCH => "/api/channels/$lunch->{id}", { name => 'Mine' },
                token => $mallory);
is $status, 404, 'a non-member cannot';
($status, $res) = api(PATCH => "/api/channels/$direct", { name => 'x' },
                      token => $alice);
is $status, 422, 'a direct conversation has no name';

# invite

($status, $res) = api(POST => "/api/channels/$lunch->{id}/invite",
                      { email => 'x' }, token => $alice);
is $status, 400, 'an invalid email is 400';

my ($dave, $d) = signup(username => 'dave');
($status, $res) = api(GET => '/api/me', undef, token => $dave);
my $dave_email = $res->{user}{email};

($status, $res) = api(POST => "/api/channels/$lunch->{id}/invite",
                      { email => uc $dave_email }, token => $alice);
is $status, 200, 'an existing account is invited';
ok((grep { $_->{id} eq $d->{id} } @{ $res->{members} }), 'and is a member');
($status, $res) = api(GET => "/api/channels/$lunch->{id}", undef,
                      token => $dave);
is $status, 200, 'who now sees the channel';

($status, $res) = api(POST => "/api/channels/$lunch->{id}/invite",
                      { email => $dave_email }, token => $alice);
is $status, 409, 'inviting a member again is 409';
is $res->{error}{code}, 'already_member', 'already_member';

my $newcomer = unique_email('newcomer');
($status, $res) = api(POST => "/api/channels/$lunch->{id}/invite",
                      { email => $newcomer }, token => $alice);
is $status, 422, 'past foko_chat_max_members, an invitation is 422';
is $res->{error}{code}, 'channel_full', 'channel_full';

($status) = api(DELETE => "/api/channels/$lunch->{id}/members/me", undef,
                token => $carol);
is $status, 204, 'carol leaves';
($status) = api(GET => "/api/channels/$lunch->{id}", undef, token => $carol);
is $status, 404, 'and no longer sees the channel';
($status) = api(DELETE => "/api/channels/$lunch->{id}/members/me", undef,
                token => $carol);
is $status, 404, 'leaving again is 404';

($status, $res) = api(POST => "/api/channels/$lunch->{id}/invite",
                      { email => $newcomer }, token => $alice);
is $status, 200, 'an unknown email is invited';
my ($invited) = grep { $_->{username} =~ /^newcomer/ } @{ $res->{members} };
ok $invited, 'as an invited account named after its email';

($status) = api(POST => '/api/auth/signup',
    { email => $newcomer, password => 'correct horse', username => 'thief' });
is $status, 409, 'nobody takes an invited account by signing up';

SKIP: {
    skip 'no mail peer', 6 unless $http;

    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $http, Timeout => 15);
    print {$sock} "GET /messages?to=$newcomer&wait=10 HTTP/1.0\r\n\r\n";
    local $/;
    my ($body) = <$sock> =~ /\r\n\r\n(.*)\z/s;
    my $mails = decode_json($body);
    is scalar @$mails, 1, 'the invited email gets one mail';
    like $mails->[0]{subject}, qr/Dinner/, 'naming the channel';
    my ($token) = $mails->[0]{link} =~ /[?&]token=([\w.-]+)/;
    like $mails->[0]{link}, qr{^https://chat\.example\.org/invite\?},
        'with a sign-in link';

    ($status, $res) = api(POST => '/api/auth/invite/accept',
        { token => $token, password => 'welcome horse', username => 'Newt' });
    is $status, 200, 'the link signs the invited account in';
    ($status, $res) = api(GET => "/api/channels/$lunch->{id}", undef,
                          token => $res->{token});
    is $status, 200, 'into the channel it was invited to';
    ($status) = api(POST => '/api/auth/invite/accept',
        { token => $token, password => 'again horse', username => 'Newt' });
    is $status, 400, 'the link works once';
}

error_log_clean('nothing above info in the log');

stop_foko();

done_testing;
