
/*
 * Foko chat: libFuzzer target for the WebSocket frame parser
 * (ngx_foko_chat_module/ngx_foko_chat_ws_frame.c), built by fuzz/run.sh.
 *
 * Input: byte 0 picks the message size limit, byte 1 seeds the chunk
 * sizes, the rest is what a client sent.  The stream is parsed three
 * times: whole, one byte at a time, and in pseudo-random chunks, each
 * chunk in a heap buffer of exactly its size so that the sanitizers see
 * any access past it.  Each run must keep the invariants of the API, and
 * all three must agree on the messages, control frames and outcome.
 * Then the same bytes go through the UTF-8 check as a text message and as
 * a close reason, against a plain decoding validator, and through the
 * encoders.
 */


#include <stdio.h>
#include <stdlib.h>

#include "ngx_foko_chat_ws_frame.h"


#define WS_FUZZ_WHOLE    0
#define WS_FUZZ_BYTES    1
#define WS_FUZZ_RANDOM   2


typedef struct {
    ngx_uint_t   type;          /* 'M' message, 'C' control frame */
    ngx_uint_t   opcode;
    uint64_t     len;
    uint64_t     hash;
    ngx_uint_t   code;
} ws_fuzz_event_t;


typedef struct {
    ws_fuzz_event_t            *events;
    size_t                      n;
    size_t                      cap;

    ngx_int_t                   rc;
    ngx_foko_chat_ws_parser_t   p;
} ws_fuzz_log_t;


static const size_t  ws_fuzz_limits[] = {
    0, 1, 2, 7, 16, 125, 126, 127, 1000, 4096, 65535, 65536,
    (size_t) 1 << 32, (size_t) -1
};


#define ws_fuzz_check(cond)                                                   \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "ws_frame_fuzz: %s:%d: check failed: %s\n",      \
                    __FILE__, __LINE__, #cond);                               \
            abort();                                                          \
        }                                                                     \
    } while (0)


/* a decoding validator, deliberately unlike the parser's range checks */

static int
ws_fuzz_utf8(const u_char *s, size_t n)
{
    size_t    i, k, len;
    uint32_t  cp;

    i = 0;

    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }

        if ((s[i] & 0xe0) == 0xc0) {
            len = 2;
            cp = s[i] & 0x1f;

        } else if ((s[i] & 0xf0) == 0xe0) {
            len = 3;
            cp = s[i] & 0x0f;

        } else if ((s[i] & 0xf8) == 0xf0) {
            len = 4;
            cp = s[i] & 0x07;

        } else {
            return 0;
        }

        if (n - i < len) {
            return 0;
        }

        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            cp = (cp << 6) | (s[i + k] & 0x3f);
        }

        if ((len == 2 && cp < 0x80)
            || (len == 3 && cp < 0x800)
            || (len == 4 && cp < 0x10000)
            || cp > 0x10ffff
            || (cp >= 0xd800 && cp <= 0xdfff))
        {
            return 0;
        }

        i += len;
    }

    return 1;
}


static int
ws_fuzz_close_code(ngx_uint_t code)
{
    return (code >= 1000 && code <= 1003)
           || (code >= 1007 && code <= 1014)
           || (code >= 3000 && code <= 4999);
}


static uint64_t
ws_fuzz_hash(uint64_t h, const u_char *p, size_t len)
{
    while (len--) {
        h = (h ^ *p++) * 1099511628211ULL;
    }

    return h;
}


static void
ws_fuzz_event(ws_fuzz_log_t *log, ngx_uint_t type, ngx_uint_t opcode,
    uint64_t len, uint64_t hash, ngx_uint_t code)
{
    ws_fuzz_event_t  *e;

    if (log->n == log->cap) {
        log->cap = log->cap ? log->cap * 2 : 16;
        log->events = realloc(log->events,
                              log->cap * sizeof(ws_fuzz_event_t));
        ws_fuzz_check(log->events != NULL);
    }

    e = &log->events[log->n++];
    memset(e, 0, sizeof(ws_fuzz_event_t));

    e->type = type;
    e->opcode = opcode;
    e->len = len;
    e->hash = hash;
    e->code = code;
}


static size_t
ws_fuzz_chunk(ngx_uint_t mode, uint32_t *seed, size_t left)
{
    size_t    n;
    uint32_t  r;

    if (mode == WS_FUZZ_WHOLE) {
        return left;
    }

    if (mode == WS_FUZZ_BYTES) {
        n = 1;

    } else {
        /* xorshift32: mostly small chunks, now and then large ones */

        r = *seed;
        r ^= r << 13;
        r ^= r >> 17;
        r ^= r << 5;
        *seed = r;

        n = 1 + (r >> 8) % ((r & 3) == 0 ? 300 : (r & 3) == 1 ? 16 : 4);
    }

    return n < left ? n : left;
}


static void
ws_fuzz_run(const u_char *data, size_t size, size_t max, ngx_uint_t mode,
    uint32_t seed, ws_fuzz_log_t *log)
{
    u_char                    *buf, *pos, *start, *text;
    size_t                     off, n;
    uint64_t                   msg_len, hash;
    ngx_int_t                  rc;
    ngx_uint_t                 in_message, opcode;
    ngx_foko_chat_ws_frame_t   f;
    ngx_foko_chat_ws_parser_t *p;

    p = &log->p;
    ngx_foko_chat_ws_parser_init(p, max);

    in_message = 0;
    opcode = 0;
    msg_len = 0;
    hash = 0;
    off = 0;
    rc = NGX_AGAIN;

    /* a message is never longer than the input: a copy of it fits here */

    text = malloc(size + 1);
    ws_fuzz_check(text != NULL);

    while (off < size && rc == NGX_AGAIN) {
        n = ws_fuzz_chunk(mode, &seed, size - off);

        buf = malloc(n);
        ws_fuzz_check(buf != NULL);

        memcpy(buf, data + off, n);
        off += n;
        pos = buf;

        for ( ;; ) {
            start = pos;
            rc = ngx_foko_chat_ws_parse(p, &pos, buf + n, &f);

            ws_fuzz_check(pos >= start && pos <= buf + n);

            if (rc == NGX_AGAIN) {
                ws_fuzz_check(pos == buf + n);
                break;
            }

            if (rc == NGX_DONE) {
                ws_fuzz_check(pos == start);
                break;
            }

            if (rc == NGX_ERROR) {
                ws_fuzz_check(p->close_code == 1002
                              || p->close_code == 1007
                              || p->close_code == 1009);
                ws_fuzz_check(p->error != NULL);
                break;
            }

            ws_fuzz_check(rc == NGX_OK);

            if (f.opcode & 0x8) {
                ws_fuzz_check(f.opcode == NGX_FOKO_CHAT_WS_CLOSE
                              || f.opcode == NGX_FOKO_CHAT_WS_PING
                              || f.opcode == NGX_FOKO_CHAT_WS_PONG);
                ws_fuzz_check(f.data == p->control);
                ws_fuzz_check(f.len <= NGX_FOKO_CHAT_WS_CONTROL_MAX);
                ws_fuzz_check(f.first && f.last);

                if (f.opcode == NGX_FOKO_CHAT_WS_CLOSE) {
                    if (f.len == 0) {
                        ws_fuzz_check(f.close_code == 1005);
                        ws_fuzz_check(f.reason_len == 0);

                    } else {
                        ws_fuzz_check(f.len >= 2);
                        ws_fuzz_check(ws_fuzz_close_code(f.close_code));
                        ws_fuzz_check(f.close_code
                                      == (ngx_uint_t) ((f.data[0] << 8)
                                                       | f.data[1]));
                        ws_fuzz_check(f.reason == f.data + 2);
                        ws_fuzz_check(f.reason_len == f.len - 2);
                        ws_fuzz_check(ws_fuzz_utf8(f.reason, f.reason_len));
                    }
                }

                ws_fuzz_event(log, 'C', f.opcode, f.len,
                              ws_fuzz_hash(14695981039346656037ULL, f.data,
                                           f.len),
                              f.close_code);
                continue;
            }

            /* a chunk of a data message, inside what this call used */

            ws_fuzz_check(f.opcode == NGX_FOKO_CHAT_WS_TEXT
                          || f.opcode == NGX_FOKO_CHAT_WS_BINARY);
            ws_fuzz_check(f.data >= start && f.data + f.len <= pos);
            ws_fuzz_check(f.first == !in_message);
            ws_fuzz_check(!in_message || f.opcode == opcode);
            ws_fuzz_check(f.len > 0 || f.last);
            ws_fuzz_check(msg_len + f.len <= max);
            ws_fuzz_check(f.message_len <= max);
            ws_fuzz_check(f.message_len >= msg_len + f.len);

            if (!in_message) {
                hash = 14695981039346656037ULL;
            }

            memcpy(text + msg_len, f.data, f.len);

            in_message = 1;
            opcode = f.opcode;
            msg_len += f.len;
            hash = ws_fuzz_hash(hash, f.data, f.len);

            if (f.last) {
                if (opcode == NGX_FOKO_CHAT_WS_TEXT) {
                    ws_fuzz_check(ws_fuzz_utf8(text, msg_len));
                }

                ws_fuzz_event(log, 'M', opcode, msg_len, hash, 0);

                in_message = 0;
                msg_len = 0;
            }
        }

        free(buf);
    }

    free(text);

    log->rc = rc;
}


static void
ws_fuzz_compare(ws_fuzz_log_t *a, ws_fuzz_log_t *b)
{
    size_t  i;

    ws_fuzz_check(a->n == b->n);

    for (i = 0; i < a->n; i++) {
        ws_fuzz_check(memcmp(&a->events[i], &b->events[i],
                             sizeof(ws_fuzz_event_t)) == 0);
    }

    ws_fuzz_check(a->rc == b->rc);
    ws_fuzz_check(a->p.state == b->p.state);

    if (a->rc == NGX_ERROR) {
        ws_fuzz_check(a->p.close_code == b->p.close_code);
        ws_fuzz_check(a->p.error == b->p.error);
        return;
    }

    /* at the end of the input both parsers wait in the same place */

    ws_fuzz_check(a->p.header_len == b->p.header_len);
    ws_fuzz_check(a->p.left == b->p.left);
    ws_fuzz_check(a->p.message == b->p.message);
    ws_fuzz_check(a->p.message_len == b->p.message_len);
    ws_fuzz_check(a->p.mask_pos == b->p.mask_pos);
    ws_fuzz_check(a->p.control_len == b->p.control_len);
    ws_fuzz_check(a->p.utf8.need == b->p.utf8.need);
    ws_fuzz_check(a->p.first == b->p.first);
}


/*
 * The input as one masked text frame, and as a close reason: the parser
 * must agree with the decoding validator.
 */

static void
ws_fuzz_utf8_diff(const u_char *s, size_t size, uint32_t seed)
{
    u_char                    *frame, *pos, key[4];
    size_t                     n, i, hlen, off, chunk;
    ngx_int_t                  rc;
    ngx_uint_t                 got, code;
    ngx_foko_chat_ws_frame_t   f;
    ngx_foko_chat_ws_parser_t  p;

    key[0] = (u_char) seed;
    key[1] = (u_char) (seed >> 8);
    key[2] = (u_char) (seed >> 16);
    key[3] = (u_char) (seed >> 24);

    frame = malloc(size + 14);
    ws_fuzz_check(frame != NULL);

    hlen = ngx_foko_chat_ws_header(frame, NGX_FOKO_CHAT_WS_TEXT, size);
    frame[1] |= 0x80;
    memcpy(frame + hlen, key, 4);
    hlen += 4;

    for (i = 0; i < size; i++) {
        frame[hlen + i] = s[i] ^ key[i & 3];
    }

    n = hlen + size;

    ngx_foko_chat_ws_parser_init(&p, size);

    got = 1;
    off = 0;
    chunk = 1 + seed % 7;

    /* in chunks, so that sequences are cut between calls */

    do {
        pos = frame + off;
        off = (n - off > chunk) ? off + chunk : n;

        for ( ;; ) {
            rc = ngx_foko_chat_ws_parse(&p, &pos, frame + off, &f);

            if (rc != NGX_OK) {
                break;
            }
        }

        if (rc == NGX_ERROR) {
            ws_fuzz_check(p.close_code == 1007);
            got = 0;
            break;
        }

        ws_fuzz_check(rc == NGX_AGAIN);

    } while (off < n);

    ws_fuzz_check(got == (ngx_uint_t) ws_fuzz_utf8(s, size));

    if (got) {
        ws_fuzz_check(memcmp(frame + hlen, s, size) == 0);
    }

    free(frame);

    /* a close frame with the first 123 bytes as its reason */

    n = size < NGX_FOKO_CHAT_WS_REASON_MAX ? size
                                           : NGX_FOKO_CHAT_WS_REASON_MAX;
    code = 1000 + seed % 4;

    frame = malloc(2 + 4 + 2 + n);
    ws_fuzz_check(frame != NULL);

    frame[0] = 0x88;
    frame[1] = (u_char) (0x80 | (2 + n));
    memcpy(frame + 2, key, 4);
    frame[6] = (u_char) ((code >> 8) ^ key[0]);
    frame[7] = (u_char) (code ^ key[1]);

    for (i = 0; i < n; i++) {
        frame[8 + i] = s[i] ^ key[(i + 2) & 3];
    }

    ngx_foko_chat_ws_parser_init(&p, 0);
    pos = frame;
    rc = ngx_foko_chat_ws_parse(&p, &pos, frame + 8 + n, &f);

    if (ws_fuzz_utf8(s, n)) {
        ws_fuzz_check(rc == NGX_OK && f.close_code == code
                      && f.reason_len == n
                      && memcmp(f.reason, s, n) == 0);

    } else {
        ws_fuzz_check(rc == NGX_ERROR && p.close_code == 1007);
    }

    free(frame);
}


static void
ws_fuzz_encode(const u_char *s, size_t size)
{
    u_char      buf[NGX_FOKO_CHAT_WS_CONTROL_FRAME_MAX];
    u_char      accept[NGX_FOKO_CHAT_WS_ACCEPT_LEN];
    size_t      n, i, cut;
    uint64_t    len, back;
    ngx_uint_t  code;

    len = 0;

    for (i = 0; i < 8 && i < size; i++) {
        len = (len << 8) | s[i];
    }

    len >>= 1;

    n = ngx_foko_chat_ws_header(buf, NGX_FOKO_CHAT_WS_BINARY, len);
    ws_fuzz_check(n == ngx_foko_chat_ws_header_len(len));
    ws_fuzz_check(buf[0] == 0x82);

    back = buf[1];

    if (back == 126) {
        ws_fuzz_check(n == 4);
        back = ((uint64_t) buf[2] << 8) | buf[3];
        ws_fuzz_check(back >= 126);

    } else if (back == 127) {
        ws_fuzz_check(n == 10);
        back = 0;

        for (i = 2; i < 10; i++) {
            back = (back << 8) | buf[i];
        }

        ws_fuzz_check(back > 0xffff);

    } else {
        ws_fuzz_check(n == 2);
    }

    ws_fuzz_check(back == len);

    /* a close reason is cut at a character boundary, and stays UTF-8 */

    code = size ? 3000 + s[0] : 1000;
    n = ngx_foko_chat_ws_close(buf, code, (u_char *) s, size);
    cut = n - 4;

    ws_fuzz_check(n <= NGX_FOKO_CHAT_WS_CONTROL_FRAME_MAX);
    ws_fuzz_check(buf[0] == 0x88 && buf[1] == 2 + cut);
    ws_fuzz_check(((ngx_uint_t) buf[2] << 8 | buf[3]) == code);
    ws_fuzz_check(cut <= size && memcmp(buf + 4, s, cut) == 0);
    ws_fuzz_check(cut <= NGX_FOKO_CHAT_WS_REASON_MAX);

    if (size <= NGX_FOKO_CHAT_WS_REASON_MAX) {
        ws_fuzz_check(cut == size);

    } else if (ws_fuzz_utf8(s, size)) {
        /* at most the 3 bytes of a character that did not fit go */
        ws_fuzz_check(cut + 3 >= NGX_FOKO_CHAT_WS_REASON_MAX);
        ws_fuzz_check(ws_fuzz_utf8(buf + 4, cut));
    }

    n = ngx_foko_chat_ws_pong(buf, (u_char *) s, size);
    ws_fuzz_check(n == 2 + (size < 125 ? size : 125));

    if (ngx_foko_chat_ws_key_valid(s, size) == NGX_OK) {
        ws_fuzz_check(size == 24 && s[22] == '=' && s[23] == '=');
    }

    ngx_foko_chat_ws_accept_key(s, size, accept);
    ws_fuzz_check(accept[27] == '=');
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t         max;
    uint32_t       seed;
    ws_fuzz_log_t  whole, bytes, random;

    if (size < 2) {
        return 0;
    }

    max = ws_fuzz_limits[data[0] % (sizeof(ws_fuzz_limits)
                                    / sizeof(ws_fuzz_limits[0]))];
    seed = 0x9e3779b9u * (data[1] + 1);

    data += 2;
    size -= 2;

    memset(&whole, 0, sizeof(ws_fuzz_log_t));
    memset(&bytes, 0, sizeof(ws_fuzz_log_t));
    memset(&random, 0, sizeof(ws_fuzz_log_t));

    ws_fuzz_run(data, size, max, WS_FUZZ_WHOLE, seed, &whole);
    ws_fuzz_run(data, size, max, WS_FUZZ_BYTES, seed, &bytes);
    ws_fuzz_run(data, size, max, WS_FUZZ_RANDOM, seed, &random);

    ws_fuzz_compare(&whole, &bytes);
    ws_fuzz_compare(&whole, &random);

    free(whole.events);
    free(bytes.events);
    free(random.events);

    ws_fuzz_utf8_diff(data, size, seed);
    ws_fuzz_encode(data, size);

    return 0;
}
