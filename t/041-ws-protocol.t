# The WebSocket protocol at foko_chat_websocket, from a frame-level client:
# authentication (first message or Authorization header, 4001 otherwise),
# every framing violation closed with the right code (also when written one
# byte at a time), the close handshake, pings, fragmented and oversized
# messages, errors that keep the connection open, and idle pings.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Ws;

my $ws_location = <<'_EOC_';
        location = /ws {
            foko_chat_websocket;
        }
_EOC_

start_foko(mongo_uri => own_mongo_uri('ws41'),
           http_config => "    foko_chat_limit signup_address 1000/1h;\n"
               . "    foko_chat_websocket_auth_timeout 1s;\n",
           config => $ws_location);

my ($alice, $ua) = signup(username => 'alice');
my ($bob, $ub) = signup(username => 'bob');
my ($status, $ch) = api(POST => '/api/channels',
    { name => 'Proto', members => [$ub->{id}] }, token => $alice);
is $status, 201, 'a channel to talk in';
($status) = api(POST => "/api/channels/$ch->{id}/messages",
                { text => 'before' }, token => $bob);
is $status, 201, 'with one message';

my @violations;    # server frames a server must not send, over all clients
sub done_with {
    my $c = shift;
    push @violations, @{ $c->{violations} };
    $c->close;
}

# --- authentication ---------------------------------------------------------

my $c = ws_raw();
$c->send_json({ type => 'auth', token => $alice });
my $ready = $c->next_event(5, 'ready');
ok $ready, 'auth by the first message: ready';
is_deeply $ready->{user}, { id => $ua->{id}, username => $ua->{username} },
    'ready names the user';
my ($listed) = grep { $_->{id} eq $ch->{id} } @{ $ready->{channels} || [] };
is_deeply $listed, { id => $ch->{id}, last_seq => 1 },
    'and lists the channel with its last seq';
sleep 1.5;
$c->send_frame(opcode => 0x9, payload => 'still');
is $c->next_pong(3), 'still', 'an authenticated connection outlives the auth timeout';
done_with($c);

$c = ws_raw();
$c->send_json({ type => 'auth', token => $alice }, bytewise => 1);
ok $c->next_event(5, 'ready'), 'auth written one byte at a time: ready';
done_with($c);

$c = ws_raw(token => $alice, auth => 'header', no_ready => 1);
$ready = $c->next_event(5, 'ready');
ok $ready, 'auth by the Authorization header: ready without a message';
is $ready->{user}{id}, $ua->{id}, 'for that user';
$c->send_json({ type => 'auth', ref => 'again', token => $alice });
my $again = $c->next_event(3, 'error');
is $again->{code}, 'invalid_request', 'a second auth: invalid_request';
is $again->{ref}, 'again', 'by its ref';
is $again->{field}, 'type', 'about the type';
is $again->{message}, 'authenticated already', 'authenticated already';
done_with($c);

$c = ws_raw();
my $t0 = time;
my $close = $c->wait_close(5);
my $took = time - $t0;
is $close->{code}, 4001, 'no auth within foko_chat_websocket_auth_timeout: 4001';
ok $took > 0.7 && $took < 3, sprintf 'after about 1 s (%.2f s)', $took;
ok $close->{eof}, 'and the server ends the connection';
done_with($c);

my $claims = token_claims($alice);
my $now = int time;
my $expired = forge_token({ %$claims, iat => $now - 7200, exp => $now - 3600 },
                          jwt_secret());
my $foreign = forge_token({ %$claims, exp => $now + 3600 },
                          'another-secret-0123456789abcdefghijklm');
my $unexpired = forge_token({ %$claims, exp => $now + 3600 }, jwt_secret());

$c = ws_raw();
$c->send_json({ type => 'auth', token => $unexpired });
ok $c->next_event(5, 'ready'), 'a token signed here (control for the forged ones): ready';
done_with($c);

for my $case (
    [{ type => 'auth', token => 'not.a.token' }, 'a token that is no JWT'],
    [{ type => 'auth', token => $expired }, 'an expired token'],
    [{ type => 'auth', token => $foreign }, 'a token signed with another key'],
    [{ type => 'auth' }, 'auth without a token'],
    [{ type => 'typing', channel_id => $ch->{id} }, 'another message before auth'],
    [{ type => 'send', ref => 'x', channel_id => $ch->{id}, text => 'sneaky' },
     'a send before auth'],
) {
    $c = ws_raw();
    $c->send_json($case->[0]);
    $close = $c->wait_close(5);
    is $close->{code}, 4001, "$case->[1]: 4001";
    done_with($c);
}

for my $case ([$expired, 'an expired token'], ['garbage', 'a garbage token']) {
    my ($st, undef, undef, $raw) = ws_handshake(token => $case->[0]);
    is $st, 101, "$case->[1] in the Authorization header: the upgrade succeeds";
    if ($raw) {
        $close = $raw->wait_close(5);
        is $close->{code}, 4001, 'then the connection is closed with 4001';
        done_with($raw);
    } else {
        fail 'then the connection is closed with 4001';
    }
}

($status, my $res) = api(GET => "/api/channels/$ch->{id}/messages", undef,
                         token => $bob);
is_deeply [map { $_->{text} } @{ $res->{messages} }], ['before'],
    'nothing was posted before auth';

# --- framing violations, whole and one byte at a time ----------------------

my $big = 64 * 1024;

# Sends a frame's header and, unless the server answers first, its payload.
sub header_then_payload {
    my ($c, $bytewise, %f) = @_;
    my $frame = ws_frame(%f);
    my $payload_len = length $f{payload};
    my $header = substr $frame, 0, length($frame) - $payload_len;
    $c->send_bytes($header, bytewise => $bytewise);
    return if $c->readable(0.5);
    $c->send_bytes(substr $frame, length $header);
}

my @cases = (
    ['an unmasked text frame', 1002, sub {
        $_[0]->send_frame(opcode => 0x1, payload => '{"type":"x"}', mask => 0,
                          bytewise => $_[1]) }],
    ['an unmasked ping', 1002, sub {
        $_[0]->send_frame(opcode => 0x9, payload => 'p', mask => 0,
                          bytewise => $_[1]) }],
    ['an unmasked frame after masked ones', 1002, sub {
        my ($c, $bw) = @_;
        $c->send_frame(opcode => 0x9, payload => 'one', bytewise => $bw);
        $c->send_json({ type => 'nope', ref => 'm1' }, bytewise => $bw);
        my $pong = $c->next_pong(3);
        my $err = $c->next_event(3, 'error');
        ok defined $pong && $pong eq 'one' && $err,
            'the masked frames before it are answered';
        $c->send_frame(opcode => 0x1, payload => '{"type":"nope"}', mask => 0,
                       bytewise => $bw);
    }],
    ['an unmasked continuation of a masked first fragment', 1002, sub {
        $_[0]->send_frame(opcode => 0x1, fin => 0, payload => '{"type":',
                          bytewise => $_[1]);
        $_[0]->send_frame(opcode => 0x0, payload => '"nope"}', mask => 0,
                          bytewise => $_[1]);
    }],
    (map { my $rsv = $_; ["reserved bits $rsv on a text frame", 1002, sub {
        $_[0]->send_frame(opcode => 0x1, rsv => $rsv, payload => '{"type":"x"}',
                          bytewise => $_[1]) }] } 4, 2, 1),
    ['RSV1 on a ping', 1002, sub {
        $_[0]->send_frame(opcode => 0x9, rsv => 4, payload => 'p',
                          bytewise => $_[1]) }],
    (map { my $op = $_; [sprintf('reserved opcode 0x%X', $op), 1002, sub {
        $_[0]->send_frame(opcode => $op, payload => 'x', bytewise => $_[1]) }] }
        0x3, 0x7, 0xB, 0xF),
    ['a ping of 126 bytes', 1002, sub {
        $_[0]->send_frame(opcode => 0x9, payload => 'p' x 126,
                          bytewise => $_[1]) }],
    ['a fragmented ping', 1002, sub {
        $_[0]->send_frame(opcode => 0x9, fin => 0, payload => 'p',
                          bytewise => $_[1]) }],
    ['a fragmented close', 1002, sub {
        $_[0]->send_frame(opcode => 0x8, fin => 0, payload => pack('n', 1000),
                          bytewise => $_[1]) }],
    ['a close with a 1-byte payload', 1002, sub {
        $_[0]->send_frame(opcode => 0x8, payload => "\x03",
                          bytewise => $_[1]) }],
    (map { my $code = $_; ["close code $code", 1002, sub {
        $_[0]->send_close($code, '', bytewise => $_[1]) }] }
        0, 999, 1004, 1005, 1006, 1015, 1016, 2999),
    ['a continuation without a message', 1002, sub {
        $_[0]->send_frame(opcode => 0x0, payload => '{"type":"x"}',
                          bytewise => $_[1]) }],
    ['a new text frame inside a fragmented message', 1002, sub {
        $_[0]->send_frame(opcode => 0x1, fin => 0, payload => '{"type":',
                          bytewise => $_[1]);
        $_[0]->send_frame(opcode => 0x1, payload => '"nope"}',
                          bytewise => $_[1]);
    }],
    ['invalid UTF-8 (0xFF)', 1007, sub {
        $_[0]->send_text(qq({"type":"nope","t":"\xff"}), bytewise => $_[1]) }],
    ['an overlong encoding', 1007, sub {
        $_[0]->send_text(qq({"type":"nope","t":"\xc0\xaf"}), bytewise => $_[1]) }],
    ['a UTF-16 surrogate', 1007, sub {
        $_[0]->send_text(qq({"type":"nope","t":"\xed\xa0\x80"}), bytewise => $_[1]) }],
    ['a code point over U+10FFFF', 1007, sub {
        $_[0]->send_text(qq({"type":"nope","t":"\xf4\x90\x80\x80"}), bytewise => $_[1]) }],
    ['a message ending inside a character', 1007, sub {
        $_[0]->send_text(qq({"type":"nope","t":"\xe2\x82), bytewise => $_[1]) }],
    ['invalid UTF-8 split across fragments', 1007, sub {
        $_[0]->send_frame(opcode => 0x1, fin => 0,
                          payload => qq({"type":"nope","t":"\xe2\x82),
                          bytewise => $_[1]);
        $_[0]->send_frame(opcode => 0x0, payload => qq(\x28"}),
                          bytewise => $_[1]);
    }],
    ['a text frame of 64 KiB + 1', 1009, sub {
        header_then_payload($_[0], $_[1], opcode => 0x1,
                            payload => 'a' x ($big + 1)) }],
    ['a message of 64 KiB + 1 in three fragments', 1009, sub {
        my ($c, $bw) = @_;
        my $third = int(($big + 1) / 3) + 1;
        $c->send_frame(opcode => 0x1, fin => 0, payload => 'a' x $third);
        $c->send_frame(opcode => 0x0, fin => 0, payload => 'a' x $third);
        header_then_payload($c, $bw, opcode => 0x0, payload => 'a' x $third);
    }],
    ['a 64-bit length with the top bit set (RFC 6455 5.2)', 1002, sub {
        $_[0]->send_frame(opcode => 0x1, len => 2**63 + 5, payload => '',
                          bytewise => $_[1]) }],
    ['a binary message', 1003, sub {
        $_[0]->send_frame(opcode => 0x2, payload => "\x00\x01\x02",
                          bytewise => $_[1]) }],
);

for my $case (@cases) {
    my ($what, $want, $send) = @$case;
    for my $bytewise (0, 1) {
        my $how = $bytewise ? ', one byte at a time' : '';
        my $c = ws_raw(token => $alice);
        $send->($c, $bytewise);
        my $close = $c->wait_close(3);
        is $close->{code}, $want, "$what$how: close $want"
            or diag 'ended by: ' . $c->describe_end;
        ok $close->{eof}, "$what$how: then the server ends the connection";
        done_with($c);
    }
}

# --- the close handshake -----------------------------------------------------

for my $code (1000, 1001, 3000, 4000, 4999) {
    my $c = ws_raw(token => $alice);
    $c->send_close($code, 'bye');
    my $close = $c->wait_close(5, no_reply => 1);
    is $close->{code}, $code, "a close with $code is answered with $code";
    ok $close->{eof}, 'and the server ends the connection';
    done_with($c);
}

$c = ws_raw(token => $alice);
$c->send_close(1000, "caf\xc3\xa9", bytewise => 1);
$close = $c->wait_close(5, no_reply => 1);
is $close->{code}, 1000, 'a close with a UTF-8 reason, one byte at a time, is echoed';
done_with($c);

$c = ws_raw(token => $alice);
$c->send_close();
$close = $c->wait_close(5, no_reply => 1);
ok $close->{close} && (!defined $close->{code} || $close->{code} == 1000),
    'a close without a code is answered by a close without one (or 1000)'
    or diag explain $close;
ok $close->{eof}, 'and the server ends the connection';
done_with($c);

# --- pings, errors that keep the connection, fragments ----------------------

$c = ws_raw(token => $alice);
$c->send_frame(opcode => 0x9, payload => 'x' x 125);
is $c->next_pong(3), 'x' x 125, 'a ping of 125 bytes is answered with the same payload';
$c->send_frame(opcode => 0x9, payload => '');
is $c->next_pong(3), '', 'an empty ping with an empty pong';
$c->send_frame(opcode => 0xA, payload => 'unasked');
$c->send_frame(opcode => 0x9, payload => 'after', bytewise => 1);
is $c->next_pong(3), 'after', 'an unsolicited pong is ignored';

$c->send_text('{"type":');
my $err = $c->next_event(3, 'error');
is $err->{code}, 'invalid_request', 'bad JSON: an error event, code invalid_request';
is $err->{field}, 'message', 'about the message';
is $err->{message}, 'is not valid JSON', 'which says what is wrong with it';
$c->send_text('[1,2]');
$err = $c->next_event(3, 'error');
is $err->{code}, 'invalid_request', 'a JSON array: invalid_request';
$c->send_json({ type => 'dance', ref => 'r-dance' });
$err = $c->next_event(3, 'error');
is $err->{code}, 'invalid_request', 'an unknown type: invalid_request';
is $err->{ref}, 'r-dance', 'with the ref of the message';
$c->send_json({ ref => 'r-none' });
$err = $c->next_event(3, 'error');
is $err->{code}, 'invalid_request', 'no type: invalid_request';

my $pad = '{"type":"nope","ref":"exact","pad":"';
my $exact = $pad . ('a' x ($big - length($pad) - 2)) . '"}';
is length $exact, $big, 'a message of exactly 64 KiB';
$c->send_text($exact);
$err = $c->next_event(5, 'error');
is $err->{ref}, 'exact', 'is read whole: answered as an unknown type';
isnt $err->{code}, 'too_large', 'not refused as too big';

$c->send_json({ type => 'send', ref => 's1', channel_id => $ch->{id},
                text => 'hello', client_id => 'proto-1' });
my $ack = $c->next_event(5, 'ack');
is $ack->{ref}, 's1', 'a send is acknowledged by ref';
is $ack->{message}{text}, 'hello', 'with the message';
is $ack->{message}{seq}, 2, 'stored with the next seq';
is $ack->{message}{channel_id}, $ch->{id}, 'in the channel';
is_deeply $ack->{message}{author}, { id => $ua->{id}, username => $ua->{username} },
    'by its author';

$c->send_json({ type => 'send', ref => 's2', channel_id => $ch->{id},
                text => 'x' x 5000 });
$err = $c->next_event(5, sub { ($_[0]{ref} // '') eq 's2' });
is $err->{type}, 'error', 'a text over foko_chat_max_message_size: an error';
is $err->{code}, 'too_large', 'too_large';

$c->send_json({ type => 'send', ref => 's3', channel_id => $ch->{id}, text => '' });
$err = $c->next_event(5, sub { ($_[0]{ref} // '') eq 's3' });
is $err->{type}, 'error', 'an empty text: an error';
is $err->{code}, 'invalid_request', 'invalid_request, as the REST call answers';

$c->send_json({ type => 'send', ref => 's4', channel_id => 'f' x 24, text => 'hi' });
$err = $c->next_event(5, sub { ($_[0]{ref} // '') eq 's4' });
is $err->{code}, 'not_found', 'a channel that does not exist: not_found';

# a fragmented send with a ping between the fragments, and a euro sign cut
# in two by the fragment boundary
my $json = json()->encode({ type => 'send', ref => 'frag', channel_id => $ch->{id},
                            text => "fragmented \x{20ac}5" });
my $cut = index($json, "\xe2\x82\xac") + 1;
$c->send_frame(opcode => 0x1, fin => 0, payload => substr($json, 0, 10));
$c->send_frame(opcode => 0x9, payload => 'between');
$c->send_frame(opcode => 0x0, fin => 0, payload => substr($json, 10, $cut - 10));
$c->send_frame(opcode => 0x0, payload => substr($json, $cut), bytewise => 1);
is $c->next_pong(3), 'between', 'a ping between fragments is answered at once';
$ack = $c->next_event(5, 'ack');
is $ack->{ref}, 'frag', 'then the reassembled message is handled';
is $ack->{message}{text}, "fragmented \x{20ac}5", 'whole, a character split across fragments included';

$c->send_frame(opcode => 0x9, payload => 'alive');
is $c->next_pong(3), 'alive', 'after all that the connection is still open';
done_with($c);

# binary after auth is covered above (1003); before auth it is closed too,
# at once and with 1003: the sign-in timeout (1 s here) would close later,
# with 4001, a server that ignored binary frames
$c = ws_raw();
$t0 = time;
$c->send_frame(opcode => 0x2, payload => 'x');
$close = $c->wait_close(5);
$took = time - $t0;
is $close->{code}, 1003, 'a binary message before auth is closed with 1003';
ok $took < 0.5, sprintf 'at once, not by the sign-in timeout (%.2f s)', $took;
ok $close->{close} || $close->{eof}, 'and the connection ends';
done_with($c);

is_deeply \@violations, [], 'every server frame was well formed'
    or diag explain \@violations;
error_log_clean();

# --- idle pings ------------------------------------------------------------

stop_foko();
start_foko(mongo_uri => own_mongo_uri('ws41'),
           http_config => "    foko_chat_limit signup_address 1000/1h;\n"
               . "    foko_chat_websocket_ping 1s;\n",
           config => $ws_location);
($alice) = signup(username => 'alice');

my $lively = ws_raw(token => $alice);
my $silent = ws_raw(token => $alice);
$silent->{no_pong} = 1;

# both read at once: the silent one is pinged, never answers and is
# closed; the lively one answers every ping and stays open
$t0 = time;
my ($pinged_at, $ended_at, $lively_end);
while (time - $t0 < 6) {
    if (!defined $ended_at) {
        my $f = $silent->read_frame(0.05);
        if ($f && ($f->{eof} || $f->{opcode} == 0x8)) {
            $ended_at = time;
        } elsif ($f && $f->{opcode} == 0x9) {
            $pinged_at //= time;
        }
    }
    my $f = $lively->read_frame(0.05) or next;
    if ($f->{eof} || $f->{opcode} == 0x8) {
        $lively_end = $lively->describe_end;
        last;
    }
    $lively->handle_control($f);
}
ok defined $pinged_at, 'with foko_chat_websocket_ping 1s an idle connection is pinged';
ok $pinged_at && $pinged_at - $t0 < 3, 'within about a second';
ok defined $ended_at, 'a connection that answers nothing is closed';
ok $ended_at && $ended_at - $t0 < 5,
    sprintf 'soon after (%.1f s)', ($ended_at // time) - $t0;
done_with($silent);

is $lively_end, undef, 'a connection answering the pings is not closed';
ok $lively->{pings} >= 2, "a connection answering pings is pinged again ($lively->{pings} pings)";
$lively->send_frame(opcode => 0x9, payload => 'here');
is $lively->next_pong(3), 'here', 'and stays open';
done_with($lively);

is_deeply \@violations, [], 'well-formed server pings';
error_log_clean();

stop_foko();
done_testing;
