
/*
 * Foko chat: tests of ngx_foko_chat_ws_frame.c, built and run by
 * t/030-ws-frame.t:
 *
 *     cc -DNGX_FOKO_CHAT_WS_STANDALONE=1 -I t -I ngx_foko_chat_module \
 *         t/ws_frame_test.c ngx_foko_chat_module/ngx_foko_chat_ws_frame.c
 *
 * Prints "ok - name" or "not ok - name" with "# " details, one line per
 * check, then "done N".  Each parser case is fed whole, one byte at a time
 * and in odd chunks, each chunk in a buffer of its own size so that the
 * sanitizers see any read past it.  A case's outcome is written as a
 * transcript: the complete messages and control frames, then how the
 * input ended (AGAIN, DONE, or E and the close code).
 */


#include <stdio.h>
#include <stdlib.h>

#include "ngx_foko_chat_ws_frame.h"


#define WS_TEST_OUT   4096
#define WS_TEST_SHOW  64


typedef struct {
    u_char      *data;
    size_t       len;
    size_t       cap;
} ws_test_stream_t;


static ngx_uint_t        ws_tests;
static ngx_uint_t        ws_failed;
static ws_test_stream_t  ws_in;
static u_char            ws_key_n;


static void
ws_test_result(int ok, const char *name, const char *got,
    const char *expected)
{
    ws_tests++;

    if (ok) {
        printf("ok - %s\n", name);
        return;
    }

    ws_failed++;
    printf("not ok - %s\n", name);

    if (got) {
        printf("#      got: %s\n# expected: %s\n", got, expected);
    }
}


static void
ws_test_put(const void *data, size_t len)
{
    if (ws_in.len + len > ws_in.cap) {
        ws_in.cap = (ws_in.len + len) * 2;
        ws_in.data = realloc(ws_in.data, ws_in.cap);

        if (ws_in.data == NULL) {
            perror("realloc");
            exit(2);
        }
    }

    if (len) {
        memcpy(ws_in.data + ws_in.len, data, len);
    }

    ws_in.len += len;
}


/*
 * A client frame: first byte b0 (FIN, RSV, opcode), "hdrlen" in the header
 * in the form asked (0: shortest, 16 or 64 bits), then "len" bytes of
 * payload (fewer than hdrlen for a cut frame), masked unless "unmasked".
 */

static void
ws_test_frame_ex(u_char b0, int unmasked, uint64_t hdrlen, int form,
    const void *payload, size_t len)
{
    u_char       h[14], key[4], c;
    size_t       n, i;
    const u_char *s;

    h[0] = b0;
    n = 2;

    if (form == 0) {
        form = hdrlen < 126 ? 7 : hdrlen <= 0xffff ? 16 : 64;
    }

    if (form == 7) {
        h[1] = (u_char) hdrlen;

    } else if (form == 16) {
        h[1] = 126;
        h[n++] = (u_char) (hdrlen >> 8);
        h[n++] = (u_char) hdrlen;

    } else {
        h[1] = 127;

        for (i = 0; i < 8; i++) {
            h[n++] = (u_char) (hdrlen >> (56 - 8 * i));
        }
    }

    /* a different key for every frame, and never all zero */

    ws_key_n++;
    key[0] = (u_char) (0x37 + ws_key_n);
    key[1] = (u_char) (0xfa ^ ws_key_n);
    key[2] = (u_char) (0x21 + 3 * ws_key_n);
    key[3] = 0x3d;

    if (!unmasked) {
        h[1] |= 0x80;
        memcpy(h + n, key, 4);
        n += 4;
    }

    ws_test_put(h, n);

    s = payload;

    for (i = 0; i < len; i++) {
        c = unmasked ? s[i] : s[i] ^ key[i & 3];
        ws_test_put(&c, 1);
    }
}


static void
ws_test_frame(u_char b0, const void *payload, size_t len)
{
    ws_test_frame_ex(b0, 0, len, 0, payload, len);
}


#define ws_str(s)         ws_test_frame(0x81, s, sizeof(s) - 1)
#define ws_fr(b0, s)      ws_test_frame(b0, s, sizeof(s) - 1)
#define ws_raw(s)         ws_test_put(s, sizeof(s) - 1)


static void
ws_test_close(ngx_uint_t code, const char *reason, size_t len)
{
    u_char  buf[256];

    buf[0] = (u_char) (code >> 8);
    buf[1] = (u_char) code;
    memcpy(buf + 2, reason, len);

    ws_test_frame(0x88, buf, 2 + len);
}


static uint32_t
ws_test_fnv(const u_char *p, size_t len)
{
    uint32_t  h;

    h = 2166136261u;

    while (len--) {
        h = (h ^ *p++) * 16777619u;
    }

    return h;
}


/* appends to a transcript, escaping bytes; long payloads as a hash */

static void
ws_test_say(char *out, const char *tag, const u_char *p, size_t len)
{
    size_t  i, n;

    n = strlen(out);

    if (len > WS_TEST_SHOW) {
        snprintf(out + n, WS_TEST_OUT - n, "%s#%zu:%08x ", tag, len,
                 (unsigned) ws_test_fnv(p, len));
        return;
    }

    n += snprintf(out + n, WS_TEST_OUT - n, "%s'", tag);

    for (i = 0; i < len && n < WS_TEST_OUT - 8; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\'' && p[i] != '\\') {
            out[n++] = p[i];

        } else {
            n += snprintf(out + n, WS_TEST_OUT - n, "\\x%02x", p[i]);
        }
    }

    snprintf(out + n, WS_TEST_OUT - n, "' ");
}


static char    ws_expected[WS_TEST_OUT];
static u_char  ws_125[NGX_FOKO_CHAT_WS_CONTROL_MAX];


/* the transcript of one message or control frame, then "end" */

static void
ws_expect(const char *tag, const void *p, size_t len, const char *end)
{
    ws_expected[0] = '\0';
    ws_test_say(ws_expected, tag, p, len);
    strcat(ws_expected, end);
}


/*
 * Feeds ws_in in chunks of "chunk" bytes (0: whole) to a parser with the
 * given limit and writes the transcript to out.
 */

static void
ws_test_run(size_t max, size_t chunk, char *out)
{
    char                       tag[32];
    u_char                    *buf, *pos, *msg;
    size_t                     off, n, msg_len;
    ngx_int_t                  rc;
    ngx_uint_t                 in_message, opcode;
    ngx_foko_chat_ws_frame_t   f;
    ngx_foko_chat_ws_parser_t  p;

    out[0] = '\0';

    ngx_foko_chat_ws_parser_init(&p, max);

    msg = malloc(max + 1);
    if (msg == NULL) {
        perror("malloc");
        exit(2);
    }

    msg_len = 0;
    in_message = 0;
    opcode = 0;
    off = 0;
    rc = NGX_AGAIN;

    do {
        n = ws_in.len - off;

        if (chunk && n > chunk) {
            n = chunk;
        }

        /* exactly n bytes, so that a read past them is caught */

        buf = malloc(n ? n : 1);
        if (buf == NULL) {
            perror("malloc");
            exit(2);
        }

        memcpy(buf, ws_in.data + off, n);
        off += n;
        pos = buf;

        for ( ;; ) {
            rc = ngx_foko_chat_ws_parse(&p, &pos, buf + n, &f);

            if (pos < buf || pos > buf + n) {
                strcat(out, "BADPOS ");
                rc = NGX_ERROR;
                break;
            }

            if (rc != NGX_OK) {
                break;
            }

            if (f.opcode & 0x8) {
                if (f.len > NGX_FOKO_CHAT_WS_CONTROL_MAX
                    || f.data != p.control)
                {
                    strcat(out, "BADCONTROL ");
                }

                if (f.opcode == NGX_FOKO_CHAT_WS_CLOSE) {
                    snprintf(tag, sizeof(tag), "CLOSE%u",
                             (unsigned) f.close_code);
                    ws_test_say(out, tag, f.reason, f.reason_len);

                } else {
                    ws_test_say(out, f.opcode == NGX_FOKO_CHAT_WS_PING
                                     ? "PING" : "PONG", f.data, f.len);
                }

                continue;
            }

            /* a data chunk: inside what this call used, in order */

            if (f.data < buf || f.data + f.len > pos
                || f.first != !in_message
                || (in_message && f.opcode != opcode)
                || (f.len == 0 && !f.last)
                || msg_len + f.len > max
                || f.message_len > max
                || f.message_len < msg_len + f.len)
            {
                strcat(out, "BADCHUNK ");
            }

            if (msg_len + f.len <= max && f.len) {
                memcpy(msg + msg_len, f.data, f.len);
            }

            msg_len += f.len;
            in_message = 1;
            opcode = f.opcode;

            if (f.last) {
                ws_test_say(out, opcode == NGX_FOKO_CHAT_WS_TEXT ? "T" : "B",
                            msg, msg_len > max ? max : msg_len);
                msg_len = 0;
                in_message = 0;
            }
        }

        if (rc == NGX_AGAIN && pos != buf + n) {
            strcat(out, "BADAGAIN ");
        }

        free(buf);

    } while (rc == NGX_AGAIN && off < ws_in.len);

    free(msg);

    n = strlen(out);

    if (rc == NGX_AGAIN) {
        snprintf(out + n, WS_TEST_OUT - n, "AGAIN");

    } else if (rc == NGX_DONE) {
        snprintf(out + n, WS_TEST_OUT - n, "DONE");

    } else {
        snprintf(out + n, WS_TEST_OUT - n, "E%u", (unsigned) p.close_code);

        if (p.error == NULL) {
            strcat(out, " NOREASON");
        }
    }
}


/*
 * Runs the stream built so far whole, one byte at a time, and in chunks
 * of 2, 3, 7 and 61 bytes; all must give the expected transcript.
 */

static void
ws_test_case(const char *name, size_t max, const char *expected)
{
    char        got[WS_TEST_OUT], label[256];
    size_t      i;
    static size_t  chunks[] = { 2, 3, 7, 61 };

    ws_test_run(max, 0, got);
    snprintf(label, sizeof(label), "%s (whole)", name);
    ws_test_result(strcmp(got, expected) == 0, label, got, expected);

    ws_test_run(max, 1, got);
    snprintf(label, sizeof(label), "%s (byte by byte)", name);
    ws_test_result(strcmp(got, expected) == 0, label, got, expected);

    for (i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        ws_test_run(max, chunks[i], got);

        if (strcmp(got, expected) != 0) {
            break;
        }
    }

    snprintf(label, sizeof(label), "%s (chunks)", name);
    ws_test_result(strcmp(got, expected) == 0, label, got, expected);

    ws_in.len = 0;
}


static void
ws_test_bytes(const char *name, const u_char *got, size_t got_len,
    const char *expected, size_t expected_len)
{
    char    g[WS_TEST_OUT], e[WS_TEST_OUT];
    int     ok;

    ok = got_len == expected_len && memcmp(got, expected, got_len) == 0;

    g[0] = '\0';
    e[0] = '\0';

    if (!ok) {
        ws_test_say(g, "", got, got_len);
        ws_test_say(e, "", (const u_char *) expected, expected_len);
    }

    ws_test_result(ok, name, g, e);
}


#define ws_bytes(name, got, len, s)  ws_test_bytes(name, got, len, s,         \
                                                   sizeof(s) - 1)


static void
ws_test_rfc(void)
{
    u_char  *big;
    char     expected[WS_TEST_OUT];
    size_t   i;

    /* RFC 6455, 5.7 */

    ws_raw("\x81\x05\x48\x65\x6c\x6c\x6f");
    ws_test_case("rfc 5.7: unmasked \"Hello\" from a client is refused",
                 1024, "E1002");

    ws_raw("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
    ws_test_case("rfc 5.7: masked \"Hello\"", 1024, "T'Hello' AGAIN");

    ws_raw("\x01\x03\x48\x65\x6c");
    ws_raw("\x80\x02\x6c\x6f");
    ws_test_case("rfc 5.7: unmasked fragments are refused", 1024, "E1002");

    ws_fr(0x01, "Hel");
    ws_fr(0x80, "lo");
    ws_test_case("rfc 5.7: fragmented \"Hello\", masked", 1024,
                 "T'Hello' AGAIN");

    ws_raw("\x89\x05\x48\x65\x6c\x6c\x6f");
    ws_test_case("rfc 5.7: unmasked ping is refused", 1024, "E1002");

    ws_raw("\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
    ws_test_case("rfc 5.7: masked pong \"Hello\"", 1024,
                 "PONG'Hello' AGAIN");

    big = malloc(65536);
    if (big == NULL) {
        perror("malloc");
        exit(2);
    }

    for (i = 0; i < 65536; i++) {
        big[i] = (u_char) (i * 7 + (i >> 8));
    }

    expected[0] = '\0';
    ws_test_say(expected, "B", big, 256);
    strcat(expected, "AGAIN");

    ws_test_frame(0x82, big, 256);

    if (memcmp(ws_in.data, "\x82\xfe\x01\x00", 4) != 0) {
        ws_test_result(0, "rfc 5.7: 256 bytes have a 16-bit length", NULL,
                       NULL);
    }

    ws_test_case("rfc 5.7: 256 bytes of binary in one frame", 65536,
                 expected);

    expected[0] = '\0';
    ws_test_say(expected, "B", big, 65536);
    strcat(expected, "AGAIN");

    ws_test_frame(0x82, big, 65536);

    if (memcmp(ws_in.data, "\x82\xff\0\0\0\0\0\x01\0\0", 10) != 0) {
        ws_test_result(0, "rfc 5.7: 64 KiB have a 64-bit length", NULL,
                       NULL);
    }

    ws_test_case("rfc 5.7: 64 KiB of binary in one frame", 65536, expected);

    ws_test_frame_ex(0x82, 0, 65536, 0, NULL, 0);
    ws_test_case("64 KiB over a 65535-byte limit: 1009 from the header",
                 65535, "E1009");

    free(big);
}


static void
ws_test_masking(void)
{
    size_t   i;
    u_char   payload[300];
    char     expected[WS_TEST_OUT];

    ws_test_frame_ex(0x81, 1, 2, 0, "Hi", 2);
    ws_test_case("unmasked text frame: 1002", 1024, "E1002");

    ws_test_frame_ex(0x82, 1, 2, 0, "Hi", 2);
    ws_test_case("unmasked binary frame: 1002", 1024, "E1002");

    ws_test_frame_ex(0x88, 1, 2, 0, "\x03\xe8", 2);
    ws_test_case("unmasked close frame: 1002", 1024, "E1002");

    ws_str("Hi");
    ws_fr(0x89, "p");
    ws_test_frame_ex(0x81, 1, 2, 0, "Hi", 2);
    ws_test_case("unmasked frame after masked ones: 1002", 1024,
                 "T'Hi' PING'p' E1002");

    ws_fr(0x01, "Hel");
    ws_test_frame_ex(0x80, 1, 2, 0, "lo", 2);
    ws_test_case("unmasked continuation: 1002", 1024, "E1002");

    /* every mask offset and the 8-byte fast path */

    for (i = 0; i < sizeof(payload); i++) {
        payload[i] = (u_char) ('a' + i % 26);
    }

    ws_test_frame(0x01, payload, 1);
    ws_test_frame(0x00, payload + 1, 17);
    ws_test_frame(0x00, payload + 18, 5);
    ws_test_frame(0x80, payload + 23, sizeof(payload) - 23);

    expected[0] = '\0';
    ws_test_say(expected, "T", payload, sizeof(payload));
    strcat(expected, "AGAIN");

    ws_test_case("fragments of odd sizes unmask right", 1024, expected);
}


static void
ws_test_header_rules(void)
{
    char        name[128];
    ngx_uint_t  op;

    ws_fr(0xc1, "Hi");
    ws_test_case("RSV1 set: 1002", 1024, "E1002");

    ws_fr(0xa1, "Hi");
    ws_test_case("RSV2 set: 1002", 1024, "E1002");

    ws_fr(0x91, "Hi");
    ws_test_case("RSV3 set: 1002", 1024, "E1002");

    ws_fr(0xc9, "");
    ws_test_case("RSV1 on a ping: 1002", 1024, "E1002");

    ws_fr(0x01, "a");
    ws_fr(0xa0, "b");
    ws_test_case("RSV2 on a continuation: 1002", 1024, "E1002");

    for (op = 3; op < 16; op++) {
        if (op >= 8 && op <= 10) {
            continue;
        }

        ws_test_frame((u_char) (0x80 | op), "x", 1);
        snprintf(name, sizeof(name), "opcode 0x%x: 1002", (unsigned) op);
        ws_test_case(name, 1024, "E1002");
    }

    ws_str("ok");
    ws_fr(0x8b, "");
    ws_test_case("reserved control opcode after a message: 1002", 1024,
                 "T'ok' E1002");

    ws_test_frame_ex(0x89, 0, 126, 16, "", 0);
    ws_test_case("ping of 126 bytes: 1002", 1024, "E1002");

    ws_test_frame_ex(0x88, 0, 126, 16, "", 0);
    ws_test_case("close of 126 bytes: 1002", 1024, "E1002");

    ws_test_frame_ex(0x8a, 0, 127, 64, "", 0);
    ws_test_case("pong with a 64-bit length: 1002", 1024, "E1002");

    ws_test_frame_ex(0x89, 0, 5, 16, "Hello", 5);
    ws_test_case("control frame with a 16-bit length form: 1002", 1024,
                 "E1002");

    ws_test_frame(0x89, ws_125, 125);
    ws_expect("PING", ws_125, 125, "AGAIN");
    ws_test_case("ping of 125 bytes, over a limit of 0 for messages", 0,
                 ws_expected);

    ws_fr(0x09, "a");
    ws_test_case("fragmented ping: 1002", 1024, "E1002");

    ws_fr(0x08, "");
    ws_test_case("fragmented close: 1002", 1024, "E1002");

    ws_fr(0x0a, "");
    ws_test_case("fragmented pong: 1002", 1024, "E1002");

    ws_fr(0x80, "x");
    ws_test_case("continuation without a message: 1002", 1024, "E1002");

    ws_fr(0x00, "x");
    ws_test_case("non-final continuation without a message: 1002", 1024,
                 "E1002");

    ws_str("a");
    ws_fr(0x80, "b");
    ws_test_case("continuation after a whole message: 1002", 1024,
                 "T'a' E1002");

    ws_fr(0x01, "a");
    ws_fr(0x81, "b");
    ws_test_case("text frame inside a fragmented message: 1002", 1024,
                 "E1002");

    ws_fr(0x02, "a");
    ws_fr(0x82, "b");
    ws_test_case("binary frame inside a fragmented message: 1002", 1024,
                 "E1002");

    ws_fr(0x01, "a");
    ws_fr(0x89, "p");
    ws_fr(0x01, "b");
    ws_test_case("new fragmented message inside one: 1002", 1024,
                 "PING'p' E1002");
}


static void
ws_test_close_rules(void)
{
    char        name[128], expected[128];
    ngx_uint_t  i;

    static ngx_uint_t  bad[] = {
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
        5000, 65535
    };

    static ngx_uint_t  good[] = {
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
        1013, 1014, 3000, 3999, 4000, 4001, 4999
    };

    ws_fr(0x88, "\x03");
    ws_test_case("close payload of 1 byte: 1002", 1024, "E1002");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ws_test_close(bad[i], "", 0);
        snprintf(name, sizeof(name), "close code %u: 1002",
                 (unsigned) bad[i]);
        ws_test_case(name, 1024, "E1002");
    }

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ws_test_close(good[i], "", 0);
        snprintf(name, sizeof(name), "close code %u is accepted",
                 (unsigned) good[i]);
        snprintf(expected, sizeof(expected), "CLOSE%u'' DONE",
                 (unsigned) good[i]);
        ws_test_case(name, 1024, expected);
    }

    ws_fr(0x88, "");
    ws_test_case("close without a code reads as 1005", 1024,
                 "CLOSE1005'' DONE");

    ws_test_close(1000, "bye", 3);
    ws_test_case("close with a reason", 1024, "CLOSE1000'bye' DONE");

    ws_test_close(1001, "\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80", 10);
    ws_test_case("close with a UTF-8 reason", 1024,
                 "CLOSE1001'\\xc3\\xa9t\\xc3\\xa9 \\xf0\\x9f\\x98\\x80' DONE");

    ws_test_close(1000, "\xff", 1);
    ws_test_case("close reason not UTF-8: 1007", 1024, "E1007");

    ws_test_close(1000, "ab\xe2\x82", 4);
    ws_test_case("close reason with a cut sequence: 1007", 1024, "E1007");

    ws_test_close(1000, "\xed\xa0\x80", 3);
    ws_test_case("close reason with a surrogate: 1007", 1024, "E1007");

    ws_test_close(4999, "\xc0\xaf", 2);
    ws_test_case("close reason with an overlong form: 1007", 1024, "E1007");

    ws_test_close(1000, "", 0);
    ws_str("after");
    ws_test_frame_ex(0x81, 1, 2, 0, "no", 2);
    ws_test_case("nothing is read after a close", 1024, "CLOSE1000'' DONE");

    ws_fr(0x01, "Hel");
    ws_test_close(1001, "", 0);
    ws_test_case("close inside a fragmented message", 1024,
                 "CLOSE1001'' DONE");
}


static void
ws_test_utf8_rules(void)
{
    char        name[128];
    ngx_uint_t  i;

    static struct {
        const char  *name;
        const char  *bytes;
        size_t       len;
    } bad[] = {
        { "lone continuation byte", "\x80", 1 },
        { "continuation byte after ASCII", "a\xbf", 2 },
        { "overlong C0 80", "\xc0\x80", 2 },
        { "overlong C1 BF", "\xc1\xbf", 2 },
        { "overlong E0 80 80", "\xe0\x80\x80", 3 },
        { "overlong E0 9F BF", "\xe0\x9f\xbf", 3 },
        { "overlong F0 8F BF BF", "\xf0\x8f\xbf\xbf", 4 },
        { "surrogate ED A0 80", "\xed\xa0\x80", 3 },
        { "surrogate ED BF BF", "\xed\xbf\xbf", 3 },
        { "over U+10FFFF: F4 90 80 80", "\xf4\x90\x80\x80", 4 },
        { "F5", "\xf5\x80\x80\x80", 4 },
        { "F8", "\xf8\x88\x80\x80\x80", 5 },
        { "FE", "\xfe", 1 },
        { "FF", "\xff", 1 },
        { "lead byte then ASCII", "\xc3(", 2 },
        { "3-byte sequence cut by ASCII", "\xe2\x82(", 3 },
        { "cut at the end of the message", "a\xe2\x82", 3 },
        { "lead byte at the end of the message", "\xf0", 1 },
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ws_test_frame(0x81, bad[i].bytes, bad[i].len);
        snprintf(name, sizeof(name), "text with %s: 1007", bad[i].name);
        ws_test_case(name, 1024, "E1007");

        ws_test_frame(0x82, bad[i].bytes, bad[i].len);
        ws_expect("B", bad[i].bytes, bad[i].len, "AGAIN");
        snprintf(name, sizeof(name), "binary with %s is not checked",
                 bad[i].name);
        ws_test_case(name, 1024, ws_expected);
    }

    ws_fr(0x01, "\xe2");
    ws_fr(0x00, "\x82");
    ws_fr(0x89, "p");
    ws_fr(0x80, "\xac!");
    ws_test_case("a sequence split over fragments, a ping between", 1024,
                 "PING'p' T'\\xe2\\x82\\xac!' AGAIN");

    ws_fr(0x01, "\xf0");
    ws_fr(0x00, "\x9f");
    ws_fr(0x00, "");
    ws_fr(0x80, "\x98\x80");
    ws_test_case("a 4-byte sequence over three fragments and an empty one",
                 1024, "T'\\xf0\\x9f\\x98\\x80' AGAIN");

    ws_str("\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80"
           "\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf");
    ws_test_case("the edges of valid UTF-8", 1024,
                 "T'\\x7f\\xc2\\x80\\xdf\\xbf\\xe0\\xa0\\x80\\xed\\x9f\\xbf"
                 "\\xee\\x80\\x80\\xef\\xbf\\xbf\\xf0\\x90\\x80\\x80"
                 "\\xf4\\x8f\\xbf\\xbf' AGAIN");

    ws_fr(0x01, "ab\xe2");
    ws_fr(0x80, "");
    ws_test_case("a sequence cut by the last, empty fragment: 1007", 1024,
                 "E1007");

    ws_fr(0x01, "\xc3");
    ws_fr(0x80, "a");
    ws_test_case("a sequence broken in the next fragment: 1007", 1024,
                 "E1007");

    ws_fr(0x01, "fine");
    ws_fr(0x00, "\xed\xa0\x80");
    ws_test_case("a surrogate in a later fragment: 1007", 1024, "E1007");

    /* fails before the message ends: no more frames follow here */

    ws_fr(0x01, "ok\xc0");
    ws_test_case("fails at the bad byte, not at the message end", 1024,
                 "E1007");

    ws_fr(0x01, "\xf4");
    ws_test_frame_ex(0x80, 0, 3, 0, "\x90", 1);
    ws_test_case("fails in a cut frame at the first bad byte", 1024,
                 "E1007");

    ws_fr(0x02, "\xff");
    ws_fr(0x80, "\xfe");
    ws_test_case("a fragmented binary message is not checked", 1024,
                 "B'\\xff\\xfe' AGAIN");
}


static void
ws_test_limits(void)
{
    u_char  payload[200];

    memset(payload, 'x', sizeof(payload));

    ws_test_frame(0x81, payload, 16);
    ws_expect("T", payload, 16, "AGAIN");
    ws_test_case("a message of exactly the limit", 16, ws_expected);

    ws_test_frame(0x81, payload, 17);
    ws_test_case("a message one byte over the limit: 1009", 16, "E1009");

    ws_test_frame_ex(0x82, 0, 17, 0, NULL, 0);
    ws_test_case("too big from the header alone: 1009", 16, "E1009");

    ws_test_frame(0x01, payload, 10);
    ws_test_frame(0x00, payload, 6);
    ws_test_frame(0x80, payload, 0);
    ws_expect("T", payload, 16, "AGAIN");
    ws_test_case("fragments adding up to the limit", 16, ws_expected);

    ws_test_frame(0x01, payload, 10);
    ws_test_frame(0x89, payload, 100);
    ws_test_frame_ex(0x80, 0, 7, 0, NULL, 0);
    ws_expect("PING", payload, 100, "E1009");
    ws_test_case("fragments over the limit: 1009 from the header", 16,
                 ws_expected);

    ws_test_frame_ex(0x82, 0, (uint64_t) 1 << 63, 64, NULL, 0);
    ws_test_case("64-bit length with the top bit set: 1002 (RFC 6455 5.2)",
                 (size_t) -1, "E1002");

    ws_test_frame_ex(0x81, 0, 0xffffffffffffffffULL, 64, NULL, 0);
    ws_test_case("64-bit length of all ones: 1002", (size_t) -1, "E1002");

    ws_test_frame_ex(0x82, 0, (uint64_t) 1 << 40, 64, NULL, 0);
    ws_test_case("a terabyte frame: 1009", 65536, "E1009");

    ws_test_frame(0x01, payload, 100);
    ws_test_frame_ex(0x00, 0, 0x7fffffffffffffffULL, 64, NULL, 0);
    ws_test_case("a huge continuation: 1009", 65536, "E1009");

    ws_test_frame(0x81, payload, 126);
    ws_test_case("126 bytes over a limit of 125: 1009", 125, "E1009");

    ws_fr(0x81, "");
    ws_fr(0x82, "");
    ws_fr(0x89, "ping");
    ws_fr(0x81, "x");
    ws_test_case("a limit of 0 lets empty messages and pings in", 0,
                 "T'' B'' PING'ping' E1009");

    ws_test_frame_ex(0x81, 0, 5, 16, "Hello", 5);
    ws_test_frame_ex(0x82, 0, 5, 64, "World", 5);
    ws_test_case("non-minimal length forms are accepted", 16,
                 "T'Hello' B'World' AGAIN");
}


static void
ws_test_streams(void)
{
    ws_fr(0x01, "Hel");
    ws_fr(0x89, "p");
    ws_fr(0x8a, "q");
    ws_fr(0x80, "lo");
    ws_test_case("ping and pong inside a fragmented message", 1024,
                 "PING'p' PONG'q' T'Hello' AGAIN");

    ws_str("a");
    ws_fr(0x82, "b");
    ws_fr(0x89, "");
    ws_str("c");
    ws_test_close(1000, "bye", 3);
    ws_test_case("several frames in one read", 1024,
                 "T'a' B'b' PING'' T'c' CLOSE1000'bye' DONE");

    ws_fr(0x81, "");
    ws_test_case("an empty text message", 1024, "T'' AGAIN");

    ws_fr(0x01, "");
    ws_fr(0x00, "");
    ws_fr(0x80, "");
    ws_test_case("a message of empty fragments", 1024, "T'' AGAIN");

    ws_fr(0x02, "ab");
    ws_fr(0x80, "");
    ws_test_case("an empty last fragment", 1024, "B'ab' AGAIN");

    ws_raw("\x81");
    ws_test_case("one header byte", 1024, "AGAIN");

    ws_raw("\x81\xfe\x01");
    ws_test_case("a cut 16-bit length", 1024, "AGAIN");

    ws_raw("\x81\x85\x37\xfa");
    ws_test_case("a cut mask key", 1024, "AGAIN");

    ws_str("done");
    ws_test_frame_ex(0x81, 0, 5, 0, "Hel", 3);
    ws_test_case("a cut payload", 1024, "T'done' AGAIN");

    ws_test_frame_ex(0x88, 0, 5, 0, "\x03\xe8", 2);
    ws_test_case("a cut close frame", 1024, "AGAIN");
}


/* properties a transcript cannot show */

static void
ws_test_api(void)
{
    u_char                     buf[64], *pos;
    ngx_int_t                  rc;
    ngx_foko_chat_ws_frame_t   f;
    ngx_foko_chat_ws_parser_t  p;

    ngx_foko_chat_ws_parser_init(&p, 1024);

    ws_str("Hello");
    memcpy(buf, ws_in.data, ws_in.len);
    pos = buf;

    rc = ngx_foko_chat_ws_parse(&p, &pos, buf + ws_in.len, &f);

    ws_test_result(rc == NGX_OK && f.first && f.last
                   && f.opcode == NGX_FOKO_CHAT_WS_TEXT
                   && f.data == buf + 6 && f.len == 5 && f.message_len == 5
                   && memcmp(buf + 6, "Hello", 5) == 0
                   && pos == buf + ws_in.len,
                   "a whole frame is one chunk, unmasked in place",
                   NULL, NULL);

    rc = ngx_foko_chat_ws_parse(&p, &pos, buf + ws_in.len, &f);
    ws_test_result(rc == NGX_AGAIN && pos == buf + ws_in.len,
                   "then NGX_AGAIN", NULL, NULL);

    ws_in.len = 0;

    ws_fr(0x01, "Hello");
    ws_fr(0x80, " world");
    memcpy(buf, ws_in.data, ws_in.len);
    pos = buf;

    ngx_foko_chat_ws_parser_init(&p, 1024);
    rc = ngx_foko_chat_ws_parse(&p, &pos, buf + 8, &f);

    ws_test_result(rc == NGX_OK && f.first && !f.last && f.len == 2
                   && f.message_len == 5 && pos == buf + 8,
                   "a cut frame gives what arrived", NULL, NULL);

    rc = ngx_foko_chat_ws_parse(&p, &pos, buf + ws_in.len, &f);
    ws_test_result(rc == NGX_OK && !f.first && !f.last && f.len == 3,
                   "then the rest of the frame", NULL, NULL);

    rc = ngx_foko_chat_ws_parse(&p, &pos, buf + ws_in.len, &f);
    ws_test_result(rc == NGX_OK && !f.first && f.last && f.len == 6
                   && f.message_len == 11
                   && f.opcode == NGX_FOKO_CHAT_WS_TEXT,
                   "then the last fragment, with the message's opcode",
                   NULL, NULL);

    ws_in.len = 0;

    ws_test_frame_ex(0x81, 1, 2, 0, "Hi", 2);
    ws_str("ok");
    memcpy(buf, ws_in.data, ws_in.len);
    pos = buf;

    ngx_foko_chat_ws_parser_init(&p, 1024);
    rc = ngx_foko_chat_ws_parse(&p, &pos, buf + ws_in.len, &f);

    ws_test_result(rc == NGX_ERROR && p.close_code == 1002
                   && p.error != NULL && pos == buf + 2,
                   "an error stops at the offending byte", NULL, NULL);

    rc = ngx_foko_chat_ws_parse(&p, &pos, buf + ws_in.len, &f);
    ws_test_result(rc == NGX_ERROR && p.close_code == 1002,
                   "and stays", NULL, NULL);

    ws_in.len = 0;

    ws_test_close(1000, "", 0);
    ws_str("x");
    memcpy(buf, ws_in.data, ws_in.len);
    pos = buf;

    ngx_foko_chat_ws_parser_init(&p, 1024);
    rc = ngx_foko_chat_ws_parse(&p, &pos, buf + ws_in.len, &f);

    ws_test_result(rc == NGX_OK && f.opcode == NGX_FOKO_CHAT_WS_CLOSE
                   && f.close_code == 1000 && pos == buf + 8,
                   "a close frame", NULL, NULL);

    rc = ngx_foko_chat_ws_parse(&p, &pos, buf + ws_in.len, &f);
    ws_test_result(rc == NGX_DONE && pos == buf + 8,
                   "then NGX_DONE, reading nothing", NULL, NULL);

    ws_in.len = 0;
}


static void
ws_test_encode(void)
{
    u_char  buf[256], reason[200];
    size_t  n;

    n = ngx_foko_chat_ws_header(buf, NGX_FOKO_CHAT_WS_TEXT, 5);
    memcpy(buf + n, "Hello", 5);
    ws_bytes("rfc 5.7: server \"Hello\"", buf, n + 5,
             "\x81\x05\x48\x65\x6c\x6c\x6f");

    n = ngx_foko_chat_ws_ping(buf, (u_char *) "Hello", 5);
    ws_bytes("rfc 5.7: server ping \"Hello\"", buf, n,
             "\x89\x05\x48\x65\x6c\x6c\x6f");

    n = ngx_foko_chat_ws_pong(buf, (u_char *) "Hello", 5);
    ws_bytes("pong \"Hello\"", buf, n, "\x8a\x05\x48\x65\x6c\x6c\x6f");

    n = ngx_foko_chat_ws_header(buf, NGX_FOKO_CHAT_WS_BINARY, 256);
    ws_bytes("rfc 5.7: header of 256 bytes", buf, n, "\x82\x7e\x01\x00");

    n = ngx_foko_chat_ws_header(buf, NGX_FOKO_CHAT_WS_BINARY, 65536);
    ws_bytes("rfc 5.7: header of 64 KiB", buf, n,
             "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00");

    n = ngx_foko_chat_ws_header(buf, NGX_FOKO_CHAT_WS_TEXT, 125);
    ws_bytes("header of 125 bytes", buf, n, "\x81\x7d");

    n = ngx_foko_chat_ws_header(buf, NGX_FOKO_CHAT_WS_TEXT, 126);
    ws_bytes("header of 126 bytes", buf, n, "\x81\x7e\x00\x7e");

    n = ngx_foko_chat_ws_header(buf, NGX_FOKO_CHAT_WS_TEXT, 65535);
    ws_bytes("header of 65535 bytes", buf, n, "\x81\x7e\xff\xff");

    n = ngx_foko_chat_ws_header(buf, NGX_FOKO_CHAT_WS_TEXT,
                                (uint64_t) 1 << 32);
    ws_bytes("header of 4 GiB", buf, n,
             "\x81\x7f\x00\x00\x00\x01\x00\x00\x00\x00");

    ws_test_result(ngx_foko_chat_ws_header_len(0) == 2
                   && ngx_foko_chat_ws_header_len(125) == 2
                   && ngx_foko_chat_ws_header_len(126) == 4
                   && ngx_foko_chat_ws_header_len(65535) == 4
                   && ngx_foko_chat_ws_header_len(65536) == 10,
                   "header lengths", NULL, NULL);

    n = ngx_foko_chat_ws_close(buf, 1000, (u_char *) "bye", 3);
    ws_bytes("close 1000 \"bye\"", buf, n, "\x88\x05\x03\xe8" "bye");

    n = ngx_foko_chat_ws_close(buf, 0, (u_char *) "ignored", 7);
    ws_bytes("close without a code", buf, n, "\x88\x00");

    n = ngx_foko_chat_ws_close(buf, 4001, NULL, 0);
    ws_bytes("close 4001", buf, n, "\x88\x02\x0f\xa1");

    memset(reason, 'r', sizeof(reason));
    n = ngx_foko_chat_ws_close(buf, 1008, reason, sizeof(reason));
    ws_test_result(n == 127 && buf[1] == 125 && buf[126] == 'r',
                   "a long close reason is cut to 123 bytes", NULL, NULL);

    /* a 3-byte character over bytes 121 to 123: it must go whole */

    memcpy(reason + 121, "\xe2\x82\xac", 3);
    n = ngx_foko_chat_ws_close(buf, 1008, reason, sizeof(reason));
    ws_test_result(n == 4 + 121 && buf[1] == 123,
                   "the cut falls between characters", NULL, NULL);

    n = ngx_foko_chat_ws_pong(buf, reason, sizeof(reason));
    ws_test_result(n == 127 && buf[0] == 0x8a && buf[1] == 125,
                   "a long pong is cut to 125 bytes", NULL, NULL);

    /* the client frames the server sends, masked, read back */

    ws_in.len = 0;
    n = ngx_foko_chat_ws_close(buf, 1000, (u_char *) "bye", 3);
    ws_test_frame(buf[0], buf + 2, n - 2);
    ws_test_case("a close frame read back", 1024, "CLOSE1000'bye' DONE");
}


static void
ws_test_handshake(void)
{
    u_char  out[NGX_FOKO_CHAT_WS_ACCEPT_LEN + 1];

    static const char  *key = "dGhlIHNhbXBsZSBub25jZQ==";

    /*
     * The value printed in RFC 6455, 1.3 and 4.2.2 (and by MDN, and by
     * Python's hashlib); "s3pPLMBiTxaQ9kZs+xi+WlZ1Qw0=" seen elsewhere is
     * a corrupted copy of it.
     */

    memset(out, 0, sizeof(out));
    ngx_foko_chat_ws_accept_key((const u_char *) key, strlen(key), out);

    ws_test_result(strcmp((char *) out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0,
                   "rfc 1.3: Sec-WebSocket-Accept of the sample key",
                   (char *) out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    ngx_foko_chat_ws_accept_key((const u_char *) "", 0, out);
    ws_test_result(strcmp((char *) out, "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w=") == 0,
                   "Sec-WebSocket-Accept of an empty key", (char *) out,
                   "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w=");

#define ws_key(k, ok, name)                                                   \
    ws_test_result((ngx_foko_chat_ws_key_valid((const u_char *) k,            \
                                               sizeof(k) - 1) == NGX_OK)      \
                   == ok, name, NULL, NULL)

    ws_key("dGhlIHNhbXBsZSBub25jZQ==", 1, "key: the RFC sample is valid");
    ws_key("AAAAAAAAAAAAAAAAAAAAAA==", 1, "key: all zeros is valid");
    ws_key("/+/+/+/+/+/+/+/+/+/+/w==", 1, "key: + and / are valid");
    ws_key("dGhlIHNhbXBsZSBub25jZQ=", 0, "key: 23 bytes is not");
    ws_key("dGhlIHNhbXBsZSBub25jZQ===", 0, "key: 25 bytes is not");
    ws_key("dGhlIHNhbXBsZSBub25jZQAA", 0, "key: no padding is not");
    ws_key("dGhlIHNhbXBsZSBub25jZ===", 0, "key: three = is not");
    ws_key("dGhlIHNhbXBsZSBub25j*Q==", 0, "key: a stray * is not");
    ws_key("dGhlIHNhbXBsZSBub25jZ Q==", 0, "key: a space is not");
    ws_key("dGhlIHNhbXBsZSBub25jZR==", 0,
           "key: stray bits in the last character are not");
    ws_key("", 0, "key: empty is not");

#undef ws_key
}


int
main(void)
{
    size_t  i;

    for (i = 0; i < sizeof(ws_125); i++) {
        ws_125[i] = (u_char) ('0' + i % 10);
    }

    ws_test_rfc();
    ws_test_masking();
    ws_test_header_rules();
    ws_test_close_rules();
    ws_test_utf8_rules();
    ws_test_limits();
    ws_test_streams();
    ws_test_api();
    ws_test_encode();
    ws_test_handshake();

    printf("done %u\n", (unsigned) ws_tests);

    free(ws_in.data);

    return ws_failed ? 1 : 0;
}
