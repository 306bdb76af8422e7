# A storm of sign-ins on one worker neither stalls its event loop nor holds
# up MongoDB work: the status page and a health check (a MongoDB round trip
# on the thread pool) are answered while the storm is still being hashed.

use strict;
use warnings;

use Test::More;
use IO::Select;

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

# one worker process; a deliberately costly hash
setup_servroot();
write_conf(log_level => 'info',
    http_config => foko_http_config(extra =>
        "    foko_chat_limit login_account 100/15m;\n")
        =~ s/t=1 m=8m/t=3 m=32m/r,
    config => "location /api/ { foko_chat_api; }\n"
            . "location = /status { foko_chat_status; }\n");
my ($ok, $out) = start_nginx();
ok $ok, 'nginx starts' or BAIL_OUT($out);

my $email = unique_email('storm');
signup(email => $email, username => 'storm', password => 'correct horse');

my %name;
my @socks;

for my $i (1 .. 50) {
    my $s = api_send(POST => '/api/auth/login',
        { email => $email, password => $i % 2 ? 'correct horse' : "no $i" });
    $name{$s} = "login $i";
    push @socks, $s;
}

for my $path ('/status', '/api/health') {
    my $s = api_send(GET => $path);
    $name{$s} = $path;
    push @socks, $s;
}

# read every answer as it completes; remember the order

my $select = IO::Select->new(@socks);
my (%buf, @done);
my $deadline = time + 120;

while ($select->count && time < $deadline) {
    for my $s ($select->can_read(1)) {
        my $n = sysread $s, $buf{$s}, 65536, length($buf{$s} // '');
        next if $n;
        push @done, $name{$s};
        $select->remove($s);
        close $s;
    }
}

is scalar @done, 52, 'every request was answered';

my %pos = map { $done[$_] => $_ } 0 .. $#done;
my $last_login = (grep { /^login/ } @done)[-1];

cmp_ok $pos{'/status'}, '<', $pos{$last_login},
    'the status page is answered before the storm ends';
cmp_ok $pos{'/api/health'}, '<', $pos{$last_login},
    'a MongoDB health check is answered before the storm ends';
cmp_ok $pos{'/api/health'}, '<', 10,
    'in fact before the tenth sign-in: hashing never starves storage work';

my @answers = map { $buf{$_} } grep { $name{$_} =~ /^login/ } keys %buf;
my $ok_logins = grep { m{^HTTP/1\.1 200} } @answers;
my $bad_logins = grep { m{^HTTP/1\.1 401} } @answers;
is $ok_logins, 25, 'the right passwords signed in';
is $bad_logins, 25, 'the wrong ones got 401';

my ($health) = grep { $name{$_} eq '/api/health' } keys %buf;
like $buf{$health}, qr{^HTTP/1\.1 200}, 'health said ok';

stop_nginx();

error_log_clean();

done_testing;
