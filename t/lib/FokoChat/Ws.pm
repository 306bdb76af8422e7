package FokoChat::Ws;

# WebSocket clients for the tests of foko_chat_websocket, written from
# RFC 6455 and sharing no code with the module:
#
# - FokoChat::Ws::Raw, a frame-level client over IO::Socket::INET that can
#   also break the protocol (unmasked frames, reserved bits and opcodes,
#   any length field, bytes written one at a time) and reports every frame
#   the server sends, checking that the server's own frames are well formed;
# - FokoChat::Ws::Client, a Mojo::UserAgent client for the product flows,
#   optionally pinned to one worker: Mojo keeps the connection of a
#   "GET /status" (which answers the worker's pid) alive and upgrades that
#   very connection.
#
#   use FokoChat::Api;
#   use FokoChat::Ws;
#   my ($status, $headers, $body, $raw) = ws_handshake(origin => ...);
#   my $raw = ws_raw(token => $token);            # authenticated, ready
#   $raw->send_frame(opcode => 0x9, payload => 'x', mask => 0);
#   my $close = $raw->wait_close(5);              # {code => 1002, ...}
#   my $c = ws_mojo(token => $token, pid => $pid);
#   wait_until(sub { $c->events(type => 'message') >= 3 }, 10);
#
# The helpers that are not about WebSocket (the error log, the processes,
# tokens) live in FokoChat::Server; they are exported from here too.

use strict;
use warnings;

use Exporter 'import';
use Digest::SHA qw(sha1);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64 decode_base64);
use Mojo::IOLoop;
use Mojo::UserAgent;
use Socket qw(IPPROTO_TCP TCP_NODELAY SOL_SOCKET SO_RCVBUF inet_aton
              pack_sockaddr_in);
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(server_port server_root nginx_binary
                       error_log_lines);
use FokoChat::Server;

# the WebSocket clients, and FokoChat::Server's helpers for the files that
# use both
our @EXPORT = (qw(
    ws_key ws_accept ws_frame ws_handshake ws_raw ws_mojo ws_mojo_workers
    wait_until
), @FokoChat::Server::EXPORT);

my $Json = JSON::PP->new->utf8->canonical->allow_nonref;

# RFC 6455 section 1.3
my $Guid = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

sub ws_key { encode_base64(join('', map { chr int rand 256 } 1 .. 16), '') }

sub ws_accept { encode_base64(sha1($_[0] . $Guid), '') }

# A client frame. Options: opcode, payload (bytes), fin (1), rsv (the
# three bits as a number 0-7), mask (1), mask_key (4 bytes), len (the
# length to announce, default the payload's), len64 (announce it in the
# 64-bit form whatever its size).
sub ws_frame {
    my %f = (fin => 1, rsv => 0, mask => 1, payload => '', @_);
    my $payload = $f{payload};
    utf8::downgrade($payload);
    my $len = $f{len} // length $payload;
    my $frame = chr(($f{fin} ? 0x80 : 0) | (($f{rsv} & 7) << 4)
                    | ($f{opcode} & 0x0f));
    my $m = $f{mask} ? 0x80 : 0;
    if ($f{len64} || $len > 0xffff) {
        $frame .= chr($m | 127) . pack 'Q>', $len;
    } elsif ($len > 125) {
        $frame .= chr($m | 126) . pack 'n', $len;
    } else {
        $frame .= chr($m | $len);
    }
    if ($f{mask}) {
        my $key = $f{mask_key} // pack 'N', int rand 2**32;
        $frame .= $key;
        $payload ^= substr $key x (int(length($payload) / 4) + 1), 0,
                           length $payload;
    }
    return $frame . $payload;
}

# The close payload of a code and reason.
sub close_payload {
    my ($code, $reason) = @_;
    return '' unless defined $code;
    return pack('n', $code) . ($reason // '');
}

# Runs the Mojo loop until $cond returns true or $timeout seconds pass;
# returns the last value of $cond.
sub wait_until {
    my ($cond, $timeout) = @_;
    my $loop = Mojo::IOLoop->singleton;
    my $deadline = time + ($timeout // 10);
    my $tick = $loop->recurring(0.02 => sub { });
    my $ok;
    until ($ok = $cond->()) {
        last if time >= $deadline;
        $loop->one_tick;
    }
    $loop->remove($tick);
    return $ok;
}

# --- the upgrade request ---------------------------------------------------

# Opens a connection, sends an upgrade request and reads the answer.
# Options: path (/ws), method (GET), host (127.0.0.1:port), key (a fresh
# one), version (13), origin, token (Authorization: Bearer), set (a hash of
# header => value replacing the defaults; undef removes one), extra
# (more [name, value] pairs), rcvbuf (SO_RCVBUF before connecting),
# status_first (send GET /status on the connection first and remember the
# pid that answered it), timeout (5).
# Returns (status, {lowercased name => value}, body, raw client or undef).
sub ws_handshake {
    my %o = @_;
    my $port = server_port();
    my $timeout = $o{timeout} // 5;
    my $key = exists $o{key} ? $o{key} : ws_key();
    my @headers = (
        [Host => $o{host} // "127.0.0.1:$port"],
        [Upgrade => 'websocket'],
        [Connection => 'Upgrade'],
        ['Sec-WebSocket-Key' => $key],
        ['Sec-WebSocket-Version' => $o{version} // 13],
    );
    push @headers, [Origin => $o{origin}] if defined $o{origin};
    push @headers, [Authorization => "Bearer $o{token}"]
        if defined $o{token} && ($o{auth} // 'header') eq 'header';
    for my $name (keys %{ $o{set} || {} }) {
        @headers = grep { lc $_->[0] ne lc $name } @headers;
        push @headers, [$name => $o{set}{$name}] if defined $o{set}{$name};
    }
    push @headers, @{ $o{extra} || [] };
    @headers = grep { defined $_->[1] } @headers;

    my $sock = IO::Socket::INET->new(Proto => 'tcp') or die "socket: $!\n";
    setsockopt $sock, SOL_SOCKET, SO_RCVBUF, $o{rcvbuf} or die "SO_RCVBUF: $!\n"
        if $o{rcvbuf};
    $sock->connect(pack_sockaddr_in($port, inet_aton('127.0.0.1')))
        or die "cannot connect to 127.0.0.1:$port: $!\n";
    setsockopt $sock, IPPROTO_TCP, TCP_NODELAY, 1;
    binmode $sock;
    my $c = bless { sock => $sock, buf => '', key => $key, frames => [],
                    backlog => [], violations => [], pongs => [],
                    pings => 0 }, 'FokoChat::Ws::Raw';

    if ($o{status_first}) {
        $c->send_bytes("GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n")
            or die "cannot send GET /status\n";
        my ($st, $h, $body) = $c->read_http($timeout);
        die "GET /status: $st\n" unless ($st // 0) == 200;
        $c->{pid} = $Json->decode($body)->{pid};
    }

    my $req = ($o{method} // 'GET') . ' ' . ($o{path} // '/ws') . " HTTP/1.1\r\n"
        . join('', map { "$_->[0]: $_->[1]\r\n" } @headers) . "\r\n";
    $c->send_bytes($req) or die "cannot send the upgrade request\n";
    my ($status, $h, $body) = $c->read_http($timeout, upgrade => 1);
    return ($status, $h, $body, $status && $status == 101 ? $c : undef);
}

# An upgraded connection, authenticated when given a token: by the
# Authorization header (auth => 'header', the default) or by a first
# message (auth => 'frame', with resume => {channel => seq} in it if
# given); it then waits for "ready" (kept in {ready}). Dies if the
# upgrade is refused or no ready comes.
sub ws_raw {
    my %o = @_;
    my $tries = defined $o{pid} ? 100 : 1;
    for (1 .. $tries) {
        my ($status, $h, $body, $c) = ws_handshake(%o,
            status_first => $o{status_first} || defined $o{pid});
        die "the upgrade was answered " . ($status // 'nothing') . "\n"
            unless $c;
        next if defined $o{pid} && $c->{pid} != $o{pid};
        $c->{headers} = $h;
        return $c unless defined $o{token} && !$o{no_ready};
        $c->send_json({ type => 'auth', token => $o{token},
                        $o{resume} ? (resume => $o{resume}) : () })
            if ($o{auth} // 'header') eq 'frame';
        $c->{ready} = $c->next_event($o{timeout} // 10, 'ready')
            or die "no ready event: " . $c->describe_end . "\n";
        return $c;
    }
    die "no connection landed on worker $o{pid}\n";
}

package FokoChat::Ws::Raw;

use strict;
use warnings;

use IO::Select;
use Time::HiRes qw(sleep time);

sub sock { $_[0]{sock} }

# Reads an HTTP answer (head, and the body unless it is a 101): (status,
# headers, body); (undef) on timeout or a closed connection.
sub read_http {
    my ($c, $timeout, %o) = @_;
    my $deadline = time + $timeout;
    my $end;
    while (($end = index $c->{buf}, "\r\n\r\n") < 0) {
        $c->fill($deadline - time) or return;
    }
    my $head = substr $c->{buf}, 0, $end + 4, '';
    my ($line, @lines) = split /\r\n/, $head;
    my ($status) = $line =~ m{^HTTP/1\.[01] (\d{3})} or return;
    my %h;
    for (@lines) {
        my ($n, $v) = /^([^:]+?)\s*:\s*(.*?)\s*$/ or next;
        $h{lc $n} = exists $h{lc $n} ? "$h{lc $n}, $v" : $v;
    }
    return ($status, \%h, '') if $status == 101 && $o{upgrade};
    if (defined $h{'content-length'}) {
        while (length $c->{buf} < $h{'content-length'}) {
            $c->fill($deadline - time) or last;
        }
        return ($status, \%h, substr $c->{buf}, 0, $h{'content-length'}, '');
    }
    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        my $body;
        until (defined($body = FokoChat::Nginx::dechunk($c->{buf}))) {
            $c->fill($deadline - time) or last;
        }
        return ($status, \%h, $body // '');
    }
    1 while $c->fill($deadline - time);
    return ($status, \%h, substr $c->{buf}, 0, length $c->{buf}, '');
}

# Reads what arrives within $timeout into the buffer: true if some did.
sub fill {
    my ($c, $timeout) = @_;
    return 0 if $c->{eof};
    $timeout = 0 if $timeout < 0;
    return 0 unless IO::Select->new($c->{sock})->can_read($timeout);
    my $n = sysread $c->{sock}, $c->{buf}, 65536, length $c->{buf};
    if (!$n) {
        $c->{eof} = 1;
        $c->{read_error} = "$!" unless defined $n;
        return 0;
    }
    return 1;
}

# Whether something (data or the end) can be read within $timeout.
sub readable {
    my ($c, $timeout) = @_;
    return 1 if length $c->{buf} || $c->{eof};
    return scalar IO::Select->new($c->{sock})->can_read($timeout);
}

# Writes bytes, one at a time with a pause between them if bytewise:
# true if all were written (false once the server has closed).
sub send_bytes {
    my ($c, $bytes, %o) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my @parts = $o{bytewise} ? split(//, $bytes) : ($bytes);
    for my $i (0 .. $#parts) {
        my $part = $parts[$i];
        while (length $part) {
            my $n = syswrite $c->{sock}, $part;
            return 0 unless defined $n;
            substr $part, 0, $n, '';
        }
        sleep 0.002 if $o{bytewise} && $i < $#parts;
    }
    return 1;
}

# ws_frame(%f), sent; bytewise => 1 writes it one byte at a time.
sub send_frame {
    my ($c, %f) = @_;
    my $bytewise = delete $f{bytewise};
    return $c->send_bytes(FokoChat::Ws::ws_frame(%f), bytewise => $bytewise);
}

sub send_text {
    my ($c, $text, %o) = @_;
    return $c->send_frame(opcode => 0x1, payload => $text, %o);
}

sub send_json {
    my ($c, $obj, %o) = @_;
    return $c->send_text($Json->encode($obj), %o);
}

sub send_close {
    my ($c, $code, $reason, %o) = @_;
    return $c->send_frame(opcode => 0x8,
        payload => FokoChat::Ws::close_payload($code, $reason), %o);
}

# The next frame from the server: {fin, rsv, opcode, masked, payload}, or
# {eof => 1} once the connection is closed, or undef after $timeout.
# Frames that a server must not send are noted in {violations}.
sub read_frame {
    my ($c, $timeout) = @_;
    my $deadline = time + $timeout;
    while (1) {
        if (my $f = $c->parse_frame) {
            push @{ $c->{frames} }, $f;
            return $f;
        }
        return { eof => 1 } if $c->{eof};
        $c->fill($deadline - time) or do {
            return { eof => 1 } if $c->{eof};
            return undef;
        };
    }
}

sub parse_frame {
    my $c = shift;
    my $buf = \$c->{buf};
    return undef if length $$buf < 2;
    my ($b0, $b1) = unpack 'CC', $$buf;
    my $len = $b1 & 0x7f;
    my $pos = 2;
    if ($len == 126) {
        return undef if length $$buf < 4;
        $len = unpack 'n', substr $$buf, 2, 2;
        $pos = 4;
    } elsif ($len == 127) {
        return undef if length $$buf < 10;
        $len = unpack 'Q>', substr $$buf, 2, 8;
        $pos = 10;
    }
    my $masked = $b1 & 0x80;
    $pos += 4 if $masked;
    return undef if length $$buf < $pos + $len;
    my $f = { fin => ($b0 & 0x80) ? 1 : 0, rsv => ($b0 >> 4) & 7,
              opcode => $b0 & 0x0f, masked => $masked ? 1 : 0,
              payload => substr $$buf, $pos, $len };
    substr $$buf, 0, $pos + $len, '';
    my @bad;
    push @bad, 'masked' if $masked;
    push @bad, 'reserved bits' if $f->{rsv};
    push @bad, "opcode $f->{opcode}"
        unless grep { $_ == $f->{opcode} } 0, 1, 2, 8, 9, 10;
    push @bad, 'fragmented control frame' if $f->{opcode} >= 8 && !$f->{fin};
    push @bad, 'control frame over 125 bytes' if $f->{opcode} >= 8 && $len > 125;
    push @bad, 'close payload of 1 byte' if $f->{opcode} == 8 && $len == 1;
    push @bad, 'server fragments' if !$f->{fin} || $f->{opcode} == 0;
    push @{ $c->{violations} }, map { "$_ (opcode $f->{opcode})" } @bad;
    if ($f->{opcode} == 8) {
        $c->{close} = length $f->{payload} >= 2
            ? { code => unpack('n', $f->{payload}),
                reason => substr($f->{payload}, 2) }
            : { code => undef, reason => '' };
    }
    return $f;
}

# The next JSON event, answering pings (unless {no_pong}) and keeping the
# other events in the backlog. $want: a type, a code ref on the event, or
# undef for any. undef on timeout, close or end of the connection.
sub next_event {
    my ($c, $timeout, $want) = @_;
    my $match = !defined $want ? sub { 1 }
        : ref $want ? $want
        : sub { ($_[0]{type} // '') eq $want };
    for my $i (0 .. $#{ $c->{backlog} }) {
        next unless $match->($c->{backlog}[$i]);
        return splice @{ $c->{backlog} }, $i, 1;
    }
    my $deadline = time + $timeout;
    while (1) {
        my $f = $c->read_frame($deadline - time) or return undef;
        return undef if $f->{eof} || $f->{opcode} == 0x8;
        $c->handle_control($f) and next;
        next unless $f->{opcode} == 0x1;
        my $ev = eval { $Json->decode($f->{payload}) };
        if (!$ev || ref $ev ne 'HASH') {
            push @{ $c->{violations} }, "not a JSON object: $f->{payload}";
            next;
        }
        return $ev if $match->($ev);
        push @{ $c->{backlog} }, $ev;
    }
}

# Every event that arrives within $timeout (after the backlog).
sub drain_events {
    my ($c, $timeout) = @_;
    my @ev = splice @{ $c->{backlog} };
    my $deadline = time + $timeout;
    while (time < $deadline) {
        my $ev = $c->next_event($deadline - time) or last;
        push @ev, $ev;
    }
    return @ev;
}

# Pings are answered (unless {no_pong}), pongs kept: true for those.
sub handle_control {
    my ($c, $f) = @_;
    if ($f->{opcode} == 0x9) {
        $c->{pings}++;
        $c->send_frame(opcode => 0xA, payload => $f->{payload})
            unless $c->{no_pong};
        return 1;
    }
    if ($f->{opcode} == 0xA) {
        push @{ $c->{pongs} }, $f->{payload};
        return 1;
    }
    return 0;
}

# The pong to a ping, within $timeout: its payload, or undef.
sub next_pong {
    my ($c, $timeout) = @_;
    return shift @{ $c->{pongs} } if @{ $c->{pongs} };
    my $deadline = time + $timeout;
    while (1) {
        my $f = $c->read_frame($deadline - time) or return undef;
        return undef if $f->{eof} || $f->{opcode} == 0x8;
        if ($f->{opcode} == 0x1) {
            my $ev = eval { $Json->decode($f->{payload}) };
            push @{ $c->{backlog} }, $ev if ref $ev eq 'HASH';
            next;
        }
        $c->handle_control($f);
        return shift @{ $c->{pongs} } if @{ $c->{pongs} };
    }
}

# Reads up to the server's close frame or the end of the connection.
# Returns {code, reason} (code undef for a close frame without a code),
# with close => 1 if a close frame came, eof => 1 if the connection ended
# (within 3 s after the close frame, which is answered), timeout => 1 if
# neither came within $timeout, events => the events read before.
sub wait_close {
    my ($c, $timeout, %o) = @_;
    my $deadline = time + $timeout;
    my %r = (events => []);
    while (1) {
        my $f = $c->read_frame($deadline - time);
        if (!$f) {
            $r{timeout} = 1;
            return \%r;
        }
        if ($f->{eof}) {
            $r{eof} = 1;
            return \%r;
        }
        if ($f->{opcode} == 0x8) {
            $r{close} = 1;
            @r{qw(code reason)} = @{ $c->{close} }{qw(code reason)};
            $r{close_at} = time;
            # the closing handshake: our close (echoing the code) ...
            $c->send_close($r{code}) unless $o{no_reply};
            # ... then the server closes the TCP connection
            my $end = time + 3;
            while (time < $end) {
                my $g = $c->read_frame($end - time) or last;
                if ($g->{eof}) {
                    $r{eof} = 1;
                    last;
                }
                push @{ $r{after_close} }, $g;
            }
            return \%r;
        }
        next if $c->handle_control($f);
        push @{ $r{events} }, $f;
    }
}

# How the connection ended, for test names and diagnostics.
sub describe_end {
    my $c = shift;
    return "close frame " . ($c->{close}{code} // 'without a code')
        if $c->{close};
    return 'connection closed' . ($c->{read_error} ? " ($c->{read_error})" : '')
        if $c->{eof};
    return 'still open';
}

sub close { CORE::close $_[0]{sock} }

package FokoChat::Ws::Client;

# A Mojo::UserAgent WebSocket client: every JSON event is kept in
# {events} (in arrival order); {ready} is the ready event, {closed} the
# close code once the connection has ended (1006 if it dropped).

use strict;
use warnings;

use Mojo::UserAgent;

sub FokoChat::Ws::ws_mojo {
    my %o = @_;
    my $port = FokoChat::Nginx::server_port();
    my $tries = defined $o{pid} || $o{avoid} ? 100 : 1;
    for (1 .. $tries) {
        my $ua = Mojo::UserAgent->new(inactivity_timeout => 0,
                                      connect_timeout => 5,
                                      request_timeout => 0);
        my ($pid, $local_port);
        if (defined $o{pid} || $o{avoid}) {
            my $done;
            $ua->get("http://127.0.0.1:$port/status" => sub {
                my (undef, $tx) = @_;
                $done = 1;
                my $json = $tx->res->json or return;
                $pid = $json->{pid};
                $local_port = $tx->local_port;
            });
            FokoChat::Ws::wait_until(sub { $done }, 5) && defined $pid
                or die "GET /status did not answer\n";
            next if defined $o{pid} && $pid != $o{pid};
            next if $o{avoid} && grep { $_ == $pid } @{ $o{avoid} };
        }
        my $c = bless { events => [], ua => $ua, name => $o{name} },
                      'FokoChat::Ws::Client';
        my %headers = %{ $o{headers} || {} };
        my $auth = $o{auth} // 'header';
        $headers{Authorization} = "Bearer $o{token}"
            if defined $o{token} && $auth eq 'header';
        $ua->websocket("ws://127.0.0.1:$port/ws" => \%headers => sub {
            my (undef, $tx) = @_;
            if (!$tx->is_websocket) {
                $c->{failed} = $tx->res->code // $tx->error->{message} // 'no answer';
                return;
            }
            $c->{tx} = $tx;
            $c->{local_port} = $tx->local_port;
            $tx->on(json => sub {
                my (undef, $ev) = @_;
                push @{ $c->{events} }, $ev;
                return unless ref $ev eq 'HASH';
                my $type = $ev->{type} // '';
                $c->{ready} //= $ev if $type eq 'ready';
                push @{ $c->{seqs}{ $ev->{message}{channel_id} // '' } },
                    $ev->{message}{seq}
                    if $type eq 'message' && ref $ev->{message} eq 'HASH';
            });
            $tx->on(finish => sub {
                my (undef, $code, $reason) = @_;
                $c->{closed} = $code // 'none';
                $c->{close_reason} = $reason;
            });
            $tx->send({ json => { type => 'auth', token => $o{token},
                    $o{resume} ? (resume => $o{resume}) : () } })
                if defined $o{token} && $auth eq 'frame';
        });
        my $ok = FokoChat::Ws::wait_until(sub {
            $c->{failed} || defined $c->{closed}
                || ($o{token} ? $c->{ready} : $c->{tx})
        }, $o{timeout} // 10);
        die "the WebSocket did not open: " . ($c->{failed} // $c->{closed}
            // 'timeout') . "\n"
            unless $ok && !$c->{failed} && !defined $c->{closed};
        if (defined $pid) {
            die "the upgrade did not reuse the connection of GET /status\n"
                unless $c->{local_port} == $local_port;
            $c->{pid} = $pid;
        }
        return $c;
    }
    die "no connection landed on the wanted worker\n";
}

# One client per worker of the running nginx: a list in pid order.
sub FokoChat::Ws::ws_mojo_workers {
    my %o = @_;
    my @clients;
    for my $pid (FokoChat::Ws::wait_workers($o{workers} // 2)) {
        push @clients, FokoChat::Ws::ws_mojo(%o, pid => $pid);
    }
    return @clients;
}

sub tx { $_[0]{tx} }

# The events that have every given top-level key => value.
sub events {
    my ($c, %want) = @_;
    return grep {
        my $ev = $_;
        ref $ev eq 'HASH' && !grep {
            !defined $ev->{$_} || ref $ev->{$_} || $ev->{$_} ne $want{$_}
        } keys %want
    } @{ $c->{events} };
}

# The messages of the message events of a channel, in arrival order.
sub messages {
    my ($c, $channel_id) = @_;
    return map { $_->{message} }
        grep { ($_->{message}{channel_id} // '') eq $channel_id }
        $c->events(type => 'message');
}

# The seqs of the message events of a channel, in arrival order.
sub seqs { @{ $_[0]{seqs}{ $_[1] } || [] } }

sub send_json {
    my ($c, $obj) = @_;
    $c->{tx}->send({ json => $obj });
}

sub finish {
    my ($c, $code) = @_;
    $c->{tx}->finish($code // 1000) if $c->{tx} && !defined $c->{closed};
}

# Closes and waits for the end of the connection.
sub close {
    my ($c, $code) = @_;
    $c->finish($code);
    FokoChat::Ws::wait_until(sub { defined $c->{closed} }, 5);
}

sub forget {
    @{ $_[0]{events} } = ();
    $_[0]{seqs} = {};
}

1;
