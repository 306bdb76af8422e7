#!/usr/bin/env perl
# Writes the seeds of fuzz/ws_frame_fuzz.c to fuzz/corpus/ws_frame/: one
# file per case, each two bytes of settings (the index of the message size
# limit in ws_fuzz_limits[], a seed for chunk sizes) and then client frames.
# Run again after changing a case; libFuzzer finds the rest.

use strict;
use warnings;

use File::Basename qw(dirname);

my $dir = dirname(__FILE__) . '/corpus/ws_frame';
my $keys = 0;

# limit indexes in ws_fuzz_limits[]
my ($L16, $L1000, $LMAX) = (4, 8, 13);

# a client frame: first byte, payload, and optionally the length as sent
# ("len" => n, "form" => 16 or 64) and "unmasked"
sub frame {
    my ($b0, $payload, %o) = @_;
    my $len = $o{len} // length $payload;
    my $form = $o{form} // ($len < 126 ? 7 : $len <= 0xffff ? 16 : 64);
    my $m = $o{unmasked} ? 0 : 0x80;
    my $h = chr($b0);

    if ($form == 7) {
        $h .= chr($m | $len);
    } elsif ($form == 16) {
        $h .= chr($m | 126) . pack('n', $len);
    } else {
        $h .= chr($m | 127) . pack('Q>', $len);
    }

    return $h . $payload if $o{unmasked};

    my $key = pack('C4', 0x37 + $keys, 0xfa ^ $keys, 0x21 + 3 * $keys, 0x3d);
    $keys++;
    my $mask = substr($key x (int(length($payload) / 4) + 1), 0,
                      length $payload);
    return $h . $key . ($payload ^ $mask);
}

sub close_frame {
    my ($code, $reason) = @_;
    return frame(0x88, pack('n', $code) . ($reason // ''));
}

my %seeds = (
    '01-text-hello' => [$L1000,
        "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"],
    '02-binary-300' => [$L1000, frame(0x82, join '', map { chr } 0 .. 255,
                                      0 .. 43)],
    '03-fragments-with-ping' => [$L1000,
        frame(0x01, 'Hel') . frame(0x89, 'ping') . frame(0x80, 'lo')],
    '04-utf8-split-with-pong' => [$L1000,
        frame(0x01, "\xe2") . frame(0x8a, '') . frame(0x00, "\x82")
        . frame(0x80, "\xac \xf0\x9f\x98\x80")],
    '05-close-normal' => [$L1000, close_frame(1000, 'bye')],
    '06-close-empty' => [$L1000, frame(0x88, '')],
    '07-several' => [$L1000,
        frame(0x81, '{"type":"auth","token":"x"}') . frame(0x82, "\0\1")
        . frame(0x89, 'p') . frame(0x8a, 'q') . close_frame(4001, "\xc3\xa9")],
    '08-unmasked' => [$L1000,
        frame(0x81, 'ok') . frame(0x81, 'Hello', unmasked => 1)],
    '09-reserved-bits' => [$L1000, frame(0xc1, 'Hi')],
    '10-reserved-opcode' => [$L1000, frame(0x83, 'x') . frame(0x8b, '')],
    '11-control-too-long' => [$L1000, frame(0x89, 'x' x 126)],
    '12-control-fragmented' => [$L1000, frame(0x09, 'p')],
    '13-continuation-alone' => [$L1000, frame(0x80, 'x')],
    '14-data-inside-fragments' => [$L1000,
        frame(0x01, 'a') . frame(0x81, 'b')],
    '15-close-one-byte' => [$L1000, frame(0x88, "\x03")],
    '16-close-bad-code' => [$L1000, close_frame(1005) . close_frame(2999)],
    '17-text-bad-utf8' => [$L1000,
        frame(0x81, "\xc0\xaf") . frame(0x81, "\xed\xa0\x80")
        . frame(0x81, "\xf4\x90\x80\x80")],
    '18-text-cut-utf8' => [$L1000, frame(0x01, "ab\xe2\x82") . frame(0x80, '')],
    '19-close-bad-reason' => [$L1000, close_frame(1000, "\xff\xfe")],
    '20-too-big' => [$L16,
        frame(0x01, 'x' x 10) . frame(0x80, 'y' x 7)],
    '21-top-bit-length' => [$LMAX,
        frame(0x82, '', len => 1 << 63, form => 64)],
    '22-non-minimal-lengths' => [$L1000,
        frame(0x81, 'Hello', form => 16) . frame(0x82, 'World', form => 64)],
    '23-empty-fragments' => [$L1000,
        frame(0x01, '') . frame(0x00, '') . frame(0x80, '') . frame(0x81, '')],
);

mkdir $dir unless -d $dir;

for my $name (sort keys %seeds) {
    my ($limit, $bytes) = @{ $seeds{$name} };
    open my $fh, '>:raw', "$dir/$name" or die "$dir/$name: $!";
    print $fh chr($limit) . chr(length($name) * 7 % 256) . $bytes;
    close $fh;
}

printf "%d seeds in %s\n", scalar keys %seeds, $dir;
