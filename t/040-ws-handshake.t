# The WebSocket upgrade at foko_chat_websocket: 101 with the right
# Sec-WebSocket-Accept, the refusals (400, 403, 405, 426), the Origin rules
# with and without foko_chat_allowed_origins, and nginx -t refusing bad
# values of the WebSocket directives.

use strict;
use warnings;

use Test::More;

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my $limits = "    foko_chat_limit signup_address 1000/1h;\n";
my $ws_location = <<'_EOC_';
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

start_foko(mongo_uri => own_mongo_uri('ws40'),
           http_config => $limits
               . "    foko_chat_websocket_auth_timeout 1s;\n",
           config => $ws_location);
my $port = server_port();

my ($token, $user) = signup(username => 'alice');

# the RFC 6455 example key

my ($status, $h, $body, $c) = ws_handshake(
    key => 'dGhlIHNhbXBsZSBub25jZQ==',
    extra => [['Sec-WebSocket-Extensions' => 'permessage-deflate; client_max_window_bits']]);
is $status, 101, 'an upgrade is answered 101';
is $h->{'sec-websocket-accept'}, 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=',
    'with the Sec-WebSocket-Accept of RFC 6455 section 1.3';
like $h->{upgrade} // '', qr/^websocket$/i, 'Upgrade: websocket';
like $h->{connection} // '', qr/(?:^|,)\s*upgrade\s*(?:,|$)/i, 'Connection: upgrade';
ok !exists $h->{'sec-websocket-extensions'},
    'no extension is accepted (frames have no reserved bits)';
ok !exists $h->{'sec-websocket-protocol'}, 'and no subprotocol that was not asked for';
my $close = $c->wait_close(5);
is $close->{code}, 4001, 'the connection is usable: without auth it ends with 4001';
is_deeply $c->{violations}, [], 'in well-formed server frames';

for my $i (1 .. 3) {
    my $key = ws_key();
    ($status, $h) = ws_handshake(key => $key, token => $token);
    is $status, 101, "random key $i: 101";
    is $h->{'sec-websocket-accept'}, ws_accept($key),
        "random key $i: SHA-1 of key and GUID, base64";
}

($status, $h) = ws_handshake(set => { Connection => 'keep-alive, Upgrade',
                                      Upgrade => 'WebSocket' });
is $status, 101, '"Connection: keep-alive, Upgrade" and "Upgrade: WebSocket" are an upgrade too';

# a usable connection through an independent client library

my $mojo = ws_mojo(token => $token);
is $mojo->{ready}{user}{id}, $user->{id}, 'Mojo::UserAgent upgrades and is ready';
$mojo->close;

# refusals

sub error_shape {
    my ($body, $what) = @_;
    my $json = eval { json()->decode($body) };
    ok $json && ref $json->{error} eq 'HASH' && defined $json->{error}{code}
        && defined $json->{error}{message},
        "$what: the JSON error shape" or diag "body: " . ($body // '');
}

for my $case (
    [undef, 'no Sec-WebSocket-Key'],
    ['', 'an empty key'],
    ['abc', 'a short key'],
    ['AAAAAAAAAAAAAAAAAAAA', 'base64 of 15 bytes'],
    ['AAAAAAAAAAAAAAAAAAAAAAA=', 'base64 of 17 bytes'],
    ['AAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'base64 of 21 bytes'],
    ['!!!!AAAAAAAAAAAAAAAAAA==', 'characters outside base64'],
    ['AAAAAAAAAAAAAAAAAAAA=A==', 'padding in the middle'],
) {
    ($status, $h, $body) = ws_handshake(key => $case->[0]);
    is $status, 400, "$case->[1]: 400";
    error_shape($body, $case->[1]);
}

for my $case (
    [{ Upgrade => undef }, 'no Upgrade header'],
    [{ Upgrade => 'h2c' }, 'Upgrade: h2c'],
    [{ Connection => undef }, 'no Connection header'],
    [{ Connection => 'keep-alive' }, 'Connection without upgrade'],
) {
    ($status, $h, $body) = ws_handshake(set => $case->[0]);
    is $status, 400, "$case->[1]: 400";
    error_shape($body, $case->[1]);
}

for my $v (8, 12, 14) {
    ($status, $h) = ws_handshake(version => $v);
    is $status, 426, "Sec-WebSocket-Version $v: 426";
    is $h->{'sec-websocket-version'}, '13', 'naming version 13';
}

for my $method (qw(POST PUT DELETE)) {
    ($status) = ws_handshake(method => $method);
    is $status, 405, "$method: 405";
}

# Origin without foko_chat_allowed_origins: the request's own host

for my $case (
    ["localhost:$port", undef, 101, 'no Origin (not a browser)'],
    ["localhost:$port", "http://localhost:$port", 101, 'the same host and port over http'],
    ["localhost:$port", "https://localhost:$port", 101, 'the same host and port over https'],
    ['chat.example', 'https://chat.example', 101, 'a host without a port, https'],
    ['chat.example', 'http://chat.example', 101, 'a host without a port, http'],
    ["localhost:$port", 'http://evil.example', 403, 'another host'],
    ["localhost:$port", 'http://localhost:' . ($port + 1), 403, 'another port'],
    ["localhost:$port", 'http://localhost', 403, 'no port where Host has one'],
    ['chat.example', 'http://chat.example:8080', 403, 'a port where Host has none'],
    ["localhost:$port", "http://localhost:$port.evil.example", 403, 'the host as a prefix'],
    ["localhost:$port", "http://evil.localhost:$port", 403, 'the host as a suffix'],
    ["localhost:$port", "ftp://localhost:$port", 403, 'another scheme'],
    ["localhost:$port", 'null', 403, 'the opaque origin "null"'],
) {
    my ($host, $origin, $want, $what) = @$case;
    ($status) = ws_handshake(host => $host, origin => $origin);
    is $status, $want, "default origin rule, $what: $want";
}

sub log_clean {
    error_log_clean("$_[0]: nothing at [error] or above in error.log");
}

log_clean('default origin rule');
stop_foko();

# foko_chat_allowed_origins at http{}: only the listed origins

start_foko(mongo_uri => own_mongo_uri('ws40'),
           http_config => $limits . "    foko_chat_allowed_origins "
               . "http://allowed.example https://app.example:8443;\n",
           config => $ws_location);
$port = server_port();

for my $case (
    [undef, 101, 'no Origin'],
    ['http://allowed.example', 101, 'a listed origin'],
    ['https://app.example:8443', 101, 'another listed origin'],
    ["http://localhost:$port", 403, 'the request\'s own host, not listed'],
    ['https://allowed.example', 403, 'a listed host with another scheme'],
    ['http://app.example:8443', 403, 'a listed host and port with another scheme'],
    ['https://app.example', 403, 'a listed host without its port'],
    ['http://allowed.example.evil', 403, 'a listed origin as a prefix'],
) {
    my ($origin, $want, $what) = @$case;
    ($status) = ws_handshake(host => "localhost:$port", origin => $origin);
    is $status, $want, "allowed origins at http, $what: $want";
}

log_clean('allowed origins at http');
stop_foko();

# at server{}, overriding http{}; "*" allows any

start_foko(mongo_uri => own_mongo_uri('ws40'),
           http_config => $limits
               . "    foko_chat_allowed_origins http://allowed.example;\n",
           config => "        foko_chat_allowed_origins *;\n" . $ws_location);
$port = server_port();

for my $origin ('http://evil.example', 'https://allowed.example', 'null') {
    ($status) = ws_handshake(host => "localhost:$port", origin => $origin);
    is $status, 101, "\"*\" in server{}: $origin is allowed";
}

log_clean('"*" at server');
stop_foko();
start_foko(mongo_uri => own_mongo_uri('ws40'),
           http_config => $limits,
           config => "        foko_chat_allowed_origins http://allowed.example;\n"
               . $ws_location);
$port = server_port();
($status) = ws_handshake(host => "localhost:$port", origin => 'http://allowed.example');
is $status, 101, 'a list in server{}: a listed origin is allowed';
($status) = ws_handshake(host => "localhost:$port", origin => "http://localhost:$port");
is $status, 403, 'and the same-host default no longer applies';

log_clean('a list at server');
stop_foko();

# nginx -t

sub conf_with {
    my $extra = shift;
    setup_servroot();
    write_conf(log_level => 'info',
               http_config => foko_http_config(extra => $extra),
               config => $ws_location);
}

conf_with(<<'_EOC_');
    foko_chat_allowed_origins http://localhost:8080 https://chat.example.org;
    foko_chat_websocket_auth_timeout 5s;
    foko_chat_websocket_ping 30s;
    foko_chat_websocket_buffer 512k;
    foko_chat_presence_grace 5s;
_EOC_
my ($ok, $out) = nginx_conf_test();
ok $ok, 'nginx -t accepts every WebSocket directive with a good value'
    or diag $out;

for my $case (
    ['foko_chat_websocket_buffer 0;', 'foko_chat_websocket_buffer', 'a zero buffer'],
    ['foko_chat_websocket_buffer lots;', 'foko_chat_websocket_buffer', 'a buffer that is no size'],
    ['foko_chat_websocket_auth_timeout soon;', 'foko_chat_websocket_auth_timeout', 'an auth timeout that is no time'],
    ['foko_chat_websocket_ping often;', 'foko_chat_websocket_ping', 'a ping interval that is no time'],
    ['foko_chat_presence_grace later;', 'foko_chat_presence_grace', 'a grace that is no time'],
    ['foko_chat_allowed_origins example.com;', 'foko_chat_allowed_origins', 'an origin without a scheme'],
    ['foko_chat_allowed_origins ftp://example.com;', 'foko_chat_allowed_origins', 'an origin with another scheme'],
    ['foko_chat_allowed_origins http://example.com/chat;', 'foko_chat_allowed_origins', 'an origin with a path'],
    ['foko_chat_allowed_origins http://;', 'foko_chat_allowed_origins', 'an origin without a host'],
    ['foko_chat_allowed_origins http://example.com:port;', 'foko_chat_allowed_origins', 'an origin with a bad port'],
    ["foko_chat_websocket_ping 30s;\n    foko_chat_websocket_ping 10s;", 'foko_chat_websocket_ping', 'a directive given twice'],
) {
    my ($conf, $directive, $what) = @$case;
    conf_with("    $conf\n");
    ($ok, $out) = nginx_conf_test();
    ok !$ok, "nginx -t refuses $what";
    like $out, qr/\[emerg\].*\Q$directive\E/, "naming \"$directive\" at [emerg]"
        or diag $out;
    unlike $out, qr/unknown directive/, 'a directive the module knows';
}

done_testing;
