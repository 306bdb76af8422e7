
/*
 * Foko chat: WebSocket frames (RFC 6455), pure parse and encode.
 *
 * The parser is a state machine over single header bytes and runs of
 * payload, so it gives the same results however the input is cut.  Every
 * check happens at a fixed point of a frame: the opcode and reserved bits
 * at its first byte, the mask bit and control sizes at its second, the
 * size limits once its length is known and before any payload is read,
 * UTF-8 as the payload goes by, close codes when the close frame is whole.
 */


#include "ngx_foko_chat_ws_frame.h"

#if !(NGX_FOKO_CHAT_WS_STANDALONE)
#include <ngx_sha1.h>
#endif


#define NGX_FOKO_CHAT_WS_ST_HEADER    0
#define NGX_FOKO_CHAT_WS_ST_DATA      1
#define NGX_FOKO_CHAT_WS_ST_CONTROL   2
#define NGX_FOKO_CHAT_WS_ST_CLOSED    3
#define NGX_FOKO_CHAT_WS_ST_FAILED    4

#define NGX_FOKO_CHAT_WS_GUID  "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


static ngx_int_t ngx_foko_chat_ws_parse_header(ngx_foko_chat_ws_parser_t *p);
static ngx_int_t ngx_foko_chat_ws_parse_opcode(ngx_foko_chat_ws_parser_t *p);
static ngx_int_t ngx_foko_chat_ws_parse_length(ngx_foko_chat_ws_parser_t *p,
    uint64_t len);
static ngx_int_t ngx_foko_chat_ws_control_done(ngx_foko_chat_ws_parser_t *p,
    ngx_foko_chat_ws_frame_t *f);
static ngx_int_t ngx_foko_chat_ws_fail(ngx_foko_chat_ws_parser_t *p,
    ngx_uint_t code, const char *error);
static void ngx_foko_chat_ws_unmask(ngx_foko_chat_ws_parser_t *p, u_char *b,
    size_t n);
static ngx_int_t ngx_foko_chat_ws_utf8(ngx_foko_chat_ws_utf8_t *u, u_char *b,
    size_t n);
static ngx_uint_t ngx_foko_chat_ws_close_code_valid(ngx_uint_t code);


void
ngx_foko_chat_ws_parser_init(ngx_foko_chat_ws_parser_t *p,
    size_t max_message)
{
    ngx_memzero(p, sizeof(ngx_foko_chat_ws_parser_t));

    p->max_message = max_message;
    p->state = NGX_FOKO_CHAT_WS_ST_HEADER;
}


ngx_int_t
ngx_foko_chat_ws_parse(ngx_foko_chat_ws_parser_t *p, u_char **pos,
    u_char *last, ngx_foko_chat_ws_frame_t *f)
{
    u_char  *b, *start;
    size_t   n;

    b = *pos;

    for ( ;; ) {

        switch (p->state) {

        case NGX_FOKO_CHAT_WS_ST_HEADER:

            if (b == last) {
                *pos = b;
                return NGX_AGAIN;
            }

            /* a header is at most 14 bytes: one at a time keeps it simple */

            p->header[p->header_len++] = *b++;

            if (ngx_foko_chat_ws_parse_header(p) != NGX_OK) {
                *pos = b;
                return NGX_ERROR;
            }

            continue;

        case NGX_FOKO_CHAT_WS_ST_DATA:

            n = (size_t) (last - b);

            if ((uint64_t) n > p->left) {
                n = (size_t) p->left;
            }

            if (n == 0 && p->left) {
                *pos = b;
                return NGX_AGAIN;
            }

            start = b;
            b += n;
            p->left -= n;

            ngx_foko_chat_ws_unmask(p, start, n);

            if (p->message == NGX_FOKO_CHAT_WS_TEXT
                && ngx_foko_chat_ws_utf8(&p->utf8, start, n) != NGX_OK)
            {
                *pos = b;
                return ngx_foko_chat_ws_fail(p,
                                          NGX_FOKO_CHAT_WS_CLOSE_INVALID_DATA,
                                          "invalid UTF-8 in a text message");
            }

            if (p->left == 0) {
                p->state = NGX_FOKO_CHAT_WS_ST_HEADER;

                if (!p->fin && n == 0) {
                    /* an empty fragment: nothing to hand out */
                    continue;
                }

                /* a sequence cut by the end of the message */

                if (p->fin
                    && p->message == NGX_FOKO_CHAT_WS_TEXT
                    && p->utf8.need)
                {
                    *pos = b;
                    return ngx_foko_chat_ws_fail(p,
                                          NGX_FOKO_CHAT_WS_CLOSE_INVALID_DATA,
                                          "truncated UTF-8 in a text message");
                }
            }

            f->opcode = p->message;
            f->data = start;
            f->len = n;
            f->message_len = p->message_len;
            f->close_code = 0;
            f->reason = NULL;
            f->reason_len = 0;
            f->first = p->first;
            f->last = (p->left == 0 && p->fin);

            p->first = 0;

            if (f->last) {
                p->message = 0;
            }

            *pos = b;
            return NGX_OK;

        case NGX_FOKO_CHAT_WS_ST_CONTROL:

            n = (size_t) (last - b);

            if ((uint64_t) n > p->left) {
                n = (size_t) p->left;
            }

            /* the caller's buffer may be reused: keep the bytes here */

            ngx_memcpy(p->control + p->control_len, b, n);
            ngx_foko_chat_ws_unmask(p, p->control + p->control_len, n);

            b += n;
            p->left -= n;
            p->control_len += n;

            *pos = b;

            if (p->left) {
                return NGX_AGAIN;
            }

            p->state = NGX_FOKO_CHAT_WS_ST_HEADER;

            return ngx_foko_chat_ws_control_done(p, f);

        case NGX_FOKO_CHAT_WS_ST_CLOSED:
            *pos = b;
            return NGX_DONE;

        default: /* NGX_FOKO_CHAT_WS_ST_FAILED */
            *pos = b;
            return NGX_ERROR;
        }
    }
}


/*
 * Called with each new header byte.  Moves to the payload once the mask
 * key is in; until then the state stays "header".
 */

static ngx_int_t
ngx_foko_chat_ws_parse_header(ngx_foko_chat_ws_parser_t *p)
{
    u_char      *h;
    uint64_t     len;
    ngx_uint_t   i;

    h = p->header;

    if (p->header_len == 1) {
        return ngx_foko_chat_ws_parse_opcode(p);
    }

    if (p->header_len == 2) {

        /* RFC 6455, 5.1: a server must close on an unmasked frame */

        if ((h[1] & 0x80) == 0) {
            return ngx_foko_chat_ws_fail(p, NGX_FOKO_CHAT_WS_CLOSE_PROTOCOL,
                                         "unmasked frame");
        }

        len = h[1] & 0x7f;

        if (p->opcode & 0x8) {
            if (len > NGX_FOKO_CHAT_WS_CONTROL_MAX) {
                return ngx_foko_chat_ws_fail(p,
                                             NGX_FOKO_CHAT_WS_CLOSE_PROTOCOL,
                                             "control frame over 125 bytes");
            }

            if (p->opcode == NGX_FOKO_CHAT_WS_CLOSE && len == 1) {
                return ngx_foko_chat_ws_fail(p,
                                             NGX_FOKO_CHAT_WS_CLOSE_PROTOCOL,
                                             "close frame of one byte");
            }
        }

        p->header_need = 2 + 4;

        if (len == 126) {
            p->header_need += 2;

        } else if (len == 127) {
            p->header_need += 8;
        }
    }

    if (p->header_len == p->header_need - 4) {
        len = h[1] & 0x7f;

        if (len >= 126) {
            len = 0;

            /* non-minimal encodings are accepted, as most servers do */

            for (i = 2; i < p->header_len; i++) {
                len = (len << 8) | h[i];
            }
        }

        return ngx_foko_chat_ws_parse_length(p, len);
    }

    if (p->header_len == p->header_need) {
        ngx_memcpy(p->mask, &h[p->header_len - 4], 4);

        p->header_len = 0;
        p->mask_pos = 0;
        p->control_len = 0;

        p->state = (p->opcode & 0x8) ? NGX_FOKO_CHAT_WS_ST_CONTROL
                                     : NGX_FOKO_CHAT_WS_ST_DATA;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_ws_parse_opcode(ngx_foko_chat_ws_parser_t *p)
{
    u_char  h;

    h = p->header[0];

    p->header_need = 2;
    p->fin = (h & 0x80) ? 1 : 0;
    p->opcode = h & 0x0f;

    /* no extension is negotiated, so no reserved bit may be set */

    if (h & 0x70) {
        return ngx_foko_chat_ws_fail(p, NGX_FOKO_CHAT_WS_CLOSE_PROTOCOL,
                                     "reserved bits set");
    }

    switch (p->opcode) {

    case NGX_FOKO_CHAT_WS_CONT:
        if (p->message == 0) {
            return ngx_foko_chat_ws_fail(p, NGX_FOKO_CHAT_WS_CLOSE_PROTOCOL,
                                         "continuation without a message");
        }

        return NGX_OK;

    case NGX_FOKO_CHAT_WS_TEXT:
    case NGX_FOKO_CHAT_WS_BINARY:
        if (p->message) {
            return ngx_foko_chat_ws_fail(p, NGX_FOKO_CHAT_WS_CLOSE_PROTOCOL,
                                         "data frame inside a fragmented "
                                         "message");
        }

        return NGX_OK;

    case NGX_FOKO_CHAT_WS_CLOSE:
    case NGX_FOKO_CHAT_WS_PING:
    case NGX_FOKO_CHAT_WS_PONG:
        if (!p->fin) {
            return ngx_foko_chat_ws_fail(p, NGX_FOKO_CHAT_WS_CLOSE_PROTOCOL,
                                         "fragmented control frame");
        }

        return NGX_OK;

    default:
        return ngx_foko_chat_ws_fail(p, NGX_FOKO_CHAT_WS_CLOSE_PROTOCOL,
                                     "unknown opcode");
    }
}


/*
 * The limit is applied here, from the header alone, so that nothing is
 * allocated or read for a message that cannot fit.
 */

static ngx_int_t
ngx_foko_chat_ws_parse_length(ngx_foko_chat_ws_parser_t *p, uint64_t len)
{
    /*
     * RFC 6455, section 5.2: "the most significant bit MUST be 0".  Such a
     * frame breaks the protocol, whatever the limit: 1002, not 1009.
     */

    if (len >> 63) {
        return ngx_foko_chat_ws_fail(p, NGX_FOKO_CHAT_WS_CLOSE_PROTOCOL,
                                     "frame length with the top bit set");
    }

    p->length = len;
    p->left = len;

    if (p->opcode & 0x8) {
        return NGX_OK;
    }

    if (p->opcode == NGX_FOKO_CHAT_WS_CONT) {

        /* message_len never exceeds max_message: no overflow */

        if (len > (uint64_t) p->max_message - p->message_len) {
            return ngx_foko_chat_ws_fail(p, NGX_FOKO_CHAT_WS_CLOSE_TOO_BIG,
                                         "message over the size limit");
        }

        p->message_len += len;

        return NGX_OK;
    }

    if (len > (uint64_t) p->max_message) {
        return ngx_foko_chat_ws_fail(p, NGX_FOKO_CHAT_WS_CLOSE_TOO_BIG,
                                     "message over the size limit");
    }

    p->message = p->opcode;
    p->message_len = len;
    p->first = 1;
    p->utf8.need = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_ws_control_done(ngx_foko_chat_ws_parser_t *p,
    ngx_foko_chat_ws_frame_t *f)
{
    ngx_uint_t               code;
    ngx_foko_chat_ws_utf8_t  utf8;

    f->opcode = p->opcode;
    f->data = p->control;
    f->len = p->control_len;
    f->message_len = p->control_len;
    f->close_code = 0;
    f->reason = NULL;
    f->reason_len = 0;
    f->first = 1;
    f->last = 1;

    if (p->opcode != NGX_FOKO_CHAT_WS_CLOSE) {
        return NGX_OK;
    }

    if (p->control_len == 0) {
        f->close_code = NGX_FOKO_CHAT_WS_CLOSE_NO_STATUS;
        p->state = NGX_FOKO_CHAT_WS_ST_CLOSED;
        return NGX_OK;
    }

    /* a 1-byte close payload was refused with the header */

    code = (p->control[0] << 8) | p->control[1];

    if (!ngx_foko_chat_ws_close_code_valid(code)) {
        return ngx_foko_chat_ws_fail(p, NGX_FOKO_CHAT_WS_CLOSE_PROTOCOL,
                                     "close code not allowed");
    }

    ngx_memzero(&utf8, sizeof(ngx_foko_chat_ws_utf8_t));

    if (ngx_foko_chat_ws_utf8(&utf8, p->control + 2, p->control_len - 2)
        != NGX_OK
        || utf8.need)
    {
        return ngx_foko_chat_ws_fail(p, NGX_FOKO_CHAT_WS_CLOSE_INVALID_DATA,
                                     "invalid UTF-8 in a close reason");
    }

    f->close_code = code;
    f->reason = p->control + 2;
    f->reason_len = p->control_len - 2;

    p->state = NGX_FOKO_CHAT_WS_ST_CLOSED;

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_ws_fail(ngx_foko_chat_ws_parser_t *p, ngx_uint_t code,
    const char *error)
{
    p->state = NGX_FOKO_CHAT_WS_ST_FAILED;
    p->close_code = code;
    p->error = error;

    return NGX_ERROR;
}


static void
ngx_foko_chat_ws_unmask(ngx_foko_chat_ws_parser_t *p, u_char *b, size_t n)
{
    u_char      *end, key[8];
    uint64_t     word, wkey;
    ngx_uint_t   i, k;

    end = b + n;
    k = p->mask_pos;

    /*
     * Eight bytes at a time with the key turned to the current offset;
     * eight is a multiple of four, so the offset stays.  memcpy() keeps
     * this free of alignment and byte order concerns.
     */

    if (n >= 16) {
        for (i = 0; i < 8; i++) {
            key[i] = p->mask[(k + i) & 3];
        }

        ngx_memcpy(&wkey, key, 8);

        while (end - b >= 8) {
            ngx_memcpy(&word, b, 8);
            word ^= wkey;
            ngx_memcpy(b, &word, 8);
            b += 8;
        }
    }

    while (b < end) {
        *b++ ^= p->mask[k];
        k = (k + 1) & 3;
    }

    p->mask_pos = k;
}


/*
 * Refuses a byte as soon as no valid UTF-8 can follow: overlong forms,
 * surrogates and code points over U+10FFFF are caught by the range the
 * second byte must fall in.  A sequence still open at the end of the
 * input stays in u->need for the next call.
 */

static ngx_int_t
ngx_foko_chat_ws_utf8(ngx_foko_chat_ws_utf8_t *u, u_char *b, size_t n)
{
    u_char  c, *end;

    for (end = b + n; b < end; b++) {
        c = *b;

        if (u->need) {
            if (c < u->lo || c > u->hi) {
                return NGX_ERROR;
            }

            u->need--;
            u->lo = 0x80;
            u->hi = 0xbf;

            continue;
        }

        if (c < 0x80) {
            continue;
        }

        u->lo = 0x80;
        u->hi = 0xbf;

        if (c < 0xc2) {
            /* a stray continuation byte, or an overlong 2-byte form */
            return NGX_ERROR;
        }

        if (c < 0xe0) {
            u->need = 1;
            continue;
        }

        if (c < 0xf0) {
            u->need = 2;

            if (c == 0xe0) {
                u->lo = 0xa0;       /* overlong */

            } else if (c == 0xed) {
                u->hi = 0x9f;       /* U+D800 to U+DFFF, surrogates */
            }

            continue;
        }

        if (c < 0xf5) {
            u->need = 3;

            if (c == 0xf0) {
                u->lo = 0x90;       /* overlong */

            } else if (c == 0xf4) {
                u->hi = 0x8f;       /* over U+10FFFF */
            }

            continue;
        }

        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Codes a peer may send (RFC 6455, 7.4): 1004-1006 and 1015 are reserved
 * for local use, the rest of 1000-2999 for future protocol versions; 1012
 * to 1014 are registered with IANA since.
 */

static ngx_uint_t
ngx_foko_chat_ws_close_code_valid(ngx_uint_t code)
{
    if (code >= 3000 && code <= 4999) {
        return 1;
    }

    if (code < 1000 || code > 1014) {
        return 0;
    }

    return (code != 1004 && code != 1005 && code != 1006);
}


size_t
ngx_foko_chat_ws_header_len(uint64_t len)
{
    if (len < 126) {
        return 2;
    }

    if (len <= 0xffff) {
        return 4;
    }

    return 10;
}


size_t
ngx_foko_chat_ws_header(u_char *buf, ngx_uint_t opcode, uint64_t len)
{
    ngx_uint_t  i;

    buf[0] = (u_char) (0x80 | (opcode & 0x0f));

    if (len < 126) {
        buf[1] = (u_char) len;
        return 2;
    }

    if (len <= 0xffff) {
        buf[1] = 126;
        buf[2] = (u_char) (len >> 8);
        buf[3] = (u_char) len;
        return 4;
    }

    buf[1] = 127;

    for (i = 0; i < 8; i++) {
        buf[2 + i] = (u_char) (len >> (56 - 8 * i));
    }

    return 10;
}


size_t
ngx_foko_chat_ws_control(u_char *buf, ngx_uint_t opcode, u_char *data,
    size_t len)
{
    if (len > NGX_FOKO_CHAT_WS_CONTROL_MAX) {
        len = NGX_FOKO_CHAT_WS_CONTROL_MAX;
    }

    (void) ngx_foko_chat_ws_header(buf, opcode, len);

    if (len) {
        ngx_memcpy(buf + 2, data, len);
    }

    return 2 + len;
}


size_t
ngx_foko_chat_ws_close(u_char *buf, ngx_uint_t code, u_char *reason,
    size_t len)
{
    if (code == 0) {
        return ngx_foko_chat_ws_header(buf, NGX_FOKO_CHAT_WS_CLOSE, 0);
    }

    if (len > NGX_FOKO_CHAT_WS_REASON_MAX) {
        len = NGX_FOKO_CHAT_WS_REASON_MAX;

        /* back to the start of the character the cut falls in */

        while (len && (reason[len] & 0xc0) == 0x80) {
            len--;
        }
    }

    (void) ngx_foko_chat_ws_header(buf, NGX_FOKO_CHAT_WS_CLOSE, 2 + len);

    buf[2] = (u_char) (code >> 8);
    buf[3] = (u_char) code;

    if (len) {
        ngx_memcpy(buf + 4, reason, len);
    }

    return 4 + len;
}


ngx_int_t
ngx_foko_chat_ws_key_valid(const u_char *key, size_t len)
{
    u_char      c;
    ngx_uint_t  i;

    if (len != NGX_FOKO_CHAT_WS_KEY_LEN || key[22] != '=' || key[23] != '=')
    {
        return NGX_DECLINED;
    }

    for (i = 0; i < 22; i++) {
        c = key[i];

        if ((c >= 'A' && c <= 'Z')
            || (c >= 'a' && c <= 'z')
            || (c >= '0' && c <= '9')
            || c == '+' || c == '/')
        {
            continue;
        }

        return NGX_DECLINED;
    }

    /*
     * The last character carries only the top two bits of the 16th byte;
     * the four bits below are zero in a canonical encoding.
     */

    c = key[21];

    if (c != 'A' && c != 'Q' && c != 'g' && c != 'w') {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


void
ngx_foko_chat_ws_accept_key(const u_char *key, size_t len, u_char *out)
{
    u_char      digest[20];
    ngx_str_t   src, dst;
    ngx_sha1_t  sha1;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, key, len);
    ngx_sha1_update(&sha1, NGX_FOKO_CHAT_WS_GUID,
                    sizeof(NGX_FOKO_CHAT_WS_GUID) - 1);
    ngx_sha1_final(digest, &sha1);

    src.len = sizeof(digest);
    src.data = digest;
    dst.data = out;

    ngx_encode_base64(&dst, &src);
}
