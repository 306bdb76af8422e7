# Usernames are unique handles, case-insensitively (ASCII folding): a
# taken one is 409 username_taken on sign-up and on accepting an
# invitation; of concurrent sign-ups for one name the unique index lets
# one through.  Over two workers.

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

start_foko(workers => 2, http_config =>
    "    foko_chat_limit signup_address 1000/1h;\n"
    . ($smtp ? "    foko_chat_mail smtp://127.0.0.1:$smtp "
               . "from=chat\@example.org timeout=3s;\n"
               . "    foko_chat_public_url https://chat.example.org;\n"
             : ''));

sub signup_as {
    my ($name) = @_;
    return api(POST => '/api/auth/signup', { email => unique_email('u'),
        password => 'correct horse', username => $name });
}

sub is_taken {
    my ($what, $status, $res) = @_;
    is $status, 409, "$what: 409";
    is $res->{error}{code}, 'username_taken', "$what: username_taken";
    is $res->{error}{field}, 'username', "$what: about the username";
    ok length($res->{error}{message} // ''), "$what: with a message";
}

# one name, twice and in other cases

my $name = unique_username('Handle');
my ($status, $res) = signup_as($name);
is $status, 201, 'a fresh username signs up';
is $res->{user}{username}, $name, 'kept as given';
my $owner = $res->{token};

is_taken('the same username again', signup_as($name));
is_taken('the username lowercased', signup_as(lc $name));
is_taken('the username uppercased', signup_as(uc $name));

($status) = signup_as("$name.2");
is $status, 201, 'a longer name that starts with it is another name';

# a taken email still answers email_taken, even with a taken name

my $email = unique_email('twice');
($status) = api(POST => '/api/auth/signup', { email => $email,
    password => 'correct horse', username => unique_username('twice') });
is $status, 201, 'an account for an email';
($status, $res) = api(POST => '/api/auth/signup', { email => $email,
    password => 'correct horse', username => $name });
is $status, 409, 'its email and a taken name: 409';
is $res->{error}{code}, 'email_taken', 'email_taken first';

# a race for one name: one account, the others 409 username_taken

my $raced = unique_username('racer');
my @socks = map {
    api_send(POST => '/api/auth/signup', { email => unique_email("r$_"),
        password => 'correct horse', username => $_ % 2 ? $raced : uc $raced })
} 1 .. 6;
my @answers = map { [api_recv($_)] } @socks;
close $_ for @socks;
is_deeply [sort map { $_->[0] } @answers], [201, 409, 409, 409, 409, 409],
    'six concurrent signups for one name: one account';
is_deeply [map { $_->[1]{error}{code} } grep { $_->[0] == 409 } @answers],
    [('username_taken') x 5], 'the others username_taken';

# user search still finds by the name's prefix, in any case

($status, $res) = api(GET => '/api/users?q=' . lc(substr $name, 0, 8),
                      undef, token => (signup(username => 'searcher'))[0]);
is $status, 200, 'user search answers';
is_deeply [sort map { $_->{username} } grep { $_->{username} =~ /^\Q$name/ }
           @$res], [sort $name, "$name.2"], 'and finds both names';

# an invitation accepted with a taken name: 409, and the link still works

SKIP: {
    skip 'no mail peer', 13 unless $http;

    my ($status, $ch) = api(POST => '/api/channels',
        { name => 'Names', members => [] },
                            token => $owner);
    is $status, 201, 'a channel';
    my $guest = unique_email('guest');
    ($status) = api(POST => "/api/channels/$ch->{id}/invite",
                    { email => $guest }, token => $owner);
    is $status, 200, 'an email invited';

    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $http, Timeout => 15);
    print {$sock} "GET /messages?to=$guest&wait=10 HTTP/1.0\r\n\r\n";
    local $/;
    my ($body) = <$sock> =~ /\r\n\r\n(.*)\z/s;
    my ($token) = decode_json($body)->[0]{link} =~ /[?&]token=([\w.-]+)/;
    ok $token, 'its mail has a link';

    is_taken('accepting with a taken name',
        api(POST => '/api/auth/invite/accept', { token => $token,
            password => 'welcome horse', username => uc $name }));

    my $mine = unique_username('Guest');
    ($status, my $res) = api(POST => '/api/auth/invite/accept',
        { token => $token, password => 'welcome horse', username => $mine });
    is $status, 200, 'the same link then works with a free name';
    is $res->{user}{username}, $mine, 'which the account takes';

    is_taken('the accepted name on sign-up', signup_as(lc $mine));
}

error_log_clean('nothing above info in the log');

stop_foko();

done_testing;
