# Access tokens: every forged, expired, malformed or misused token is a
# 401 invalid_token; HS256 by default, RS256 and ES256 from a key file.

use strict;
use warnings;

use Test::More;
use Digest::SHA qw(hmac_sha256 hmac_sha512);
use File::Temp qw(tempdir);
use JSON::PP;
use MIME::Base64 qw(encode_base64url);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

my $json = JSON::PP->new->canonical;
my $dir = tempdir(CLEANUP => 1);

sub b64 { encode_base64url($_[0]) }

sub hs_token {
    my ($claims, %o) = @_;
    my $alg = $o{alg} // 'HS256';
    my $input = b64($json->encode({ alg => $alg, typ => 'JWT' })) . '.'
        . b64($json->encode($claims));
    my $mac = $alg eq 'HS512' ? \&hmac_sha512 : \&hmac_sha256;
    return "$input." . b64($mac->($input, $o{key} // jwt_secret()));
}

sub rs_token {
    my ($claims, $key) = @_;
    my $input = b64($json->encode({ alg => 'RS256', typ => 'JWT' })) . '.'
        . b64($json->encode($claims));
    open my $fh, '>', "$dir/input" or die;
    print {$fh} $input;
    close $fh;
    my $sig = qx{openssl dgst -sha256 -sign $key $dir/input};
    die "openssl failed\n" if $?;
    return "$input." . b64($sig);
}

# the answer to GET /api/me with $token: (status, code, message)
sub me {
    my ($status, $res) = api(GET => '/api/me', undef, token => shift);
    return ($status, $res->{error}{code} // '', $res->{error}{message} // '');
}

my $nobody = 'aaaaaaaaaaaaaaaaaaaaaaaa';
my $now = time;
my %access = (sub => $nobody, typ => 'access', name => 'x',
              iat => $now, exp => $now + 600);

start_foko();

my ($status, $code, $message) = me(hs_token({ %access }));
is $status, 401, 'a well-signed token of a missing account is 401';
like $message, qr/no longer exists/, '(the signature itself was accepted)';

my ($token, $user) = signup(username => 'tokens');
($status) = me($token);
is $status, 200, 'an issued token works';

my @forged = (
    ['alg "none"', b64($json->encode({ alg => 'none', typ => 'JWT' })) . '.'
        . b64($json->encode({ %access })) . '.'],
    ['alg "none" with a signature', b64($json->encode({ alg => 'none' }))
        . '.' . b64($json->encode({ %access })) . '.c2ln'],
    ['another key', hs_token({ %access }, key => 'x' x 40)],
    ['another algorithm, same secret', hs_token({ %access }, alg => 'HS512')],
    ['expired', hs_token({ %access, exp => $now - 1 })],
    ['no exp', hs_token({ map { $_ => $access{$_} } qw(sub typ name iat) })],
    ['a reset token', hs_token({ %access, typ => 'reset', ver => 0 })],
    ['no kind', hs_token({ map { $_ => $access{$_} } qw(sub name iat exp) })],
    ['a bad subject', hs_token({ %access, sub => 'not-an-id' })],
    ['malformed base64', 'abc.d$f.ghi'],
    ['malformed JSON', b64('{"alg":"HS256"') . '.' . b64('{nope') . '.'
        . b64('sig')],
    ['two parts', 'abc.def'],
    ['a huge token', 'a' x 5000],
    ['a signature of another token',
        (split /\./, $token)[0] . '.' . (split /\./, hs_token({ %access }))[1]
        . '.' . (split /\./, $token)[2]],
);

for my $case (@forged) {
    my ($name, $t) = @$case;
    ($status, $code, $message) = me($t);
    is $status, 401, "$name: 401";
    is $code, 'invalid_token', "$name: invalid_token";
    like $message, qr/valid access token is required/,
        "$name: refused by the token check";
}

($status, my $res) = api(GET => '/api/me', undef,
                         headers => { Authorization => "Basic $token" });
is $status, 401, 'a token under another scheme is refused';

# Each worker keeps the access tokens it verified: a kept token still
# expires, and one byte changed is a token of its own.  Several calls, so
# that every worker has verified it.

my $flipped = $token;
substr($flipped, -2, 1) = substr($flipped, -2, 1) eq 'A' ? 'B' : 'A';
for my $i (1 .. 4) {
    ($status) = me($token);
    is $status, 200, "the issued token, again (call $i)";
    ($status, $code) = me($flipped);
    is $code, 'invalid_token',
        "the issued token with one byte changed is refused (call $i)";
}

my $short_exp = time + 5;
my $short = hs_token({ %access, exp => $short_exp });
for my $i (1 .. 6) {
    ($status, $code, $message) = me($short);
    like $message, qr/no longer exists/,
        "a token that expires soon is accepted before (call $i)";
}

sleep 1 while time <= $short_exp;
for my $i (1 .. 6) {
    ($status, $code, $message) = me($short);
    like $message, qr/valid access token is required/,
        "once expired, the kept token is refused (call $i)";
}

stop_foko();

# RS256 and ES256 from a key file

for my $kind (['RS256', 'openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048'],
              ['ES256', 'openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256'])
{
    my ($alg, $gen) = @$kind;
    my $key = "$dir/$alg.pem";
    system("$gen -out $key 2>/dev/null") == 0 or die "cannot make a key\n";
    my $pub = qx{openssl pkey -in $key -pubout};

    setup_servroot();
    write_conf(log_level => 'info',
        http_config => "    foko_chat_mongo_uri $ENV{TEST_NGINX_MONGO_URI};\n"
            . "    foko_chat_jwt_key_file $key;\n"
            . "    foko_chat_password_hash argon2id t=1 m=8m;\n",
        config => "location /api/ { foko_chat_api; }\n");
    my ($ok, $out) = start_nginx();
    ok $ok, "nginx starts with an $alg key" or diag $out;

    ($token) = signup(username => lc $alg);
    my ($header) = split /\./, $token;
    is decode_json(MIME::Base64::decode_base64url($header))->{alg}, $alg,
        "tokens are signed with $alg";
    ($status) = me($token);
    is $status, 200, "an $alg token works";

    ($status, $code, $message) = me(hs_token({ %access }, key => $pub));
    is $status, 401, "$alg: HS256 signed with the public key is refused";
    like $message, qr/valid access token is required/,
        "$alg: by the algorithm check";

    ($status, $code, $message) = me(hs_token({ %access }));
    is $status, 401, "$alg: an HS256 token is refused";

    if ($alg eq 'RS256') {
        ($status, $code, $message) = me(rs_token({ %access }, $key));
        like $message, qr/no longer exists/,
            'RS256: a token signed by the key passes the signature check';
        ($status, $code, $message) = me(rs_token({ %access, exp => $now - 5 },
                                                 $key));
        like $message, qr/valid access token is required/,
            'RS256: and expired, it does not';
    }

    stop_nginx();
}

error_log_clean('nothing above info in the log');

# a 256-bit curve that is not P-256 is no ES256 key

system("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:secp256k1 "
       . "-out $dir/k1.pem 2>/dev/null") == 0 or die "cannot make a key\n";
setup_servroot();
write_conf(http_config => "    foko_chat_mongo_uri $ENV{TEST_NGINX_MONGO_URI};\n"
    . "    foko_chat_jwt_key_file $dir/k1.pem;\n",
    config => "location /api/ { foko_chat_api; }\n");
my ($started, $output) = start_nginx();
ok !$started, 'a secp256k1 key is refused';
like error_log_text() . $output, qr/neither an RSA nor an EC P-256 key/,
    'naming the key';

done_testing;
