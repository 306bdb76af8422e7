
/*
 * Foko chat: the few nginx types and functions that
 * ngx_foko_chat_ws_frame.c needs, for building it outside nginx (the test
 * harness of t/030-ws-frame.t and the fuzzer) with
 * -DNGX_FOKO_CHAT_WS_STANDALONE=1 -I t.  Same names and meanings as in
 * nginx; SHA-1 and base64 are small local versions, checked by the harness
 * against the RFC 6455 handshake example.
 */


#ifndef _NGX_FOKO_CHAT_WS_SHIM_H_INCLUDED_
#define _NGX_FOKO_CHAT_WS_SHIM_H_INCLUDED_


#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>


typedef intptr_t   ngx_int_t;
typedef uintptr_t  ngx_uint_t;

typedef struct {
    size_t     len;
    u_char    *data;
} ngx_str_t;

#define NGX_OK          0
#define NGX_ERROR      -1
#define NGX_AGAIN      -2
#define NGX_DONE       -4
#define NGX_DECLINED   -5

#define ngx_memcpy(dst, src, n)   (void) memcpy(dst, src, n)
#define ngx_memzero(buf, n)       (void) memset(buf, 0, n)

#define ngx_base64_encoded_length(len)  (((len + 2) / 3) * 4)


typedef struct {
    uint64_t   bytes;
    uint32_t   h[5];
    u_char     buffer[64];
} ngx_sha1_t;


#define ngx_ws_shim_rol(x, n)  (((x) << (n)) | ((x) >> (32 - (n))))


static inline void
ngx_ws_shim_sha1_block(ngx_sha1_t *ctx, const u_char *p)
{
    uint32_t    w[80], a, b, c, d, e, f, k, t;
    ngx_uint_t  i;

    for (i = 0; i < 16; i++) {
        w[i] = ((uint32_t) p[4 * i] << 24) | ((uint32_t) p[4 * i + 1] << 16)
               | ((uint32_t) p[4 * i + 2] << 8) | p[4 * i + 3];
    }

    for (i = 16; i < 80; i++) {
        t = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
        w[i] = ngx_ws_shim_rol(t, 1);
    }

    a = ctx->h[0];
    b = ctx->h[1];
    c = ctx->h[2];
    d = ctx->h[3];
    e = ctx->h[4];

    for (i = 0; i < 80; i++) {
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;

        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;

        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;

        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }

        t = ngx_ws_shim_rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = ngx_ws_shim_rol(b, 30);
        b = a;
        a = t;
    }

    ctx->h[0] += a;
    ctx->h[1] += b;
    ctx->h[2] += c;
    ctx->h[3] += d;
    ctx->h[4] += e;
}


static inline void
ngx_sha1_init(ngx_sha1_t *ctx)
{
    ctx->bytes = 0;
    ctx->h[0] = 0x67452301;
    ctx->h[1] = 0xefcdab89;
    ctx->h[2] = 0x98badcfe;
    ctx->h[3] = 0x10325476;
    ctx->h[4] = 0xc3d2e1f0;
}


static inline void
ngx_sha1_update(ngx_sha1_t *ctx, const void *data, size_t size)
{
    size_t         used, n;
    const u_char  *p;

    p = data;

    while (size) {
        used = (size_t) (ctx->bytes & 63);
        n = 64 - used;

        if (n > size) {
            n = size;
        }

        memcpy(ctx->buffer + used, p, n);

        ctx->bytes += n;
        p += n;
        size -= n;

        if ((ctx->bytes & 63) == 0) {
            ngx_ws_shim_sha1_block(ctx, ctx->buffer);
        }
    }
}


static inline void
ngx_sha1_final(u_char result[20], ngx_sha1_t *ctx)
{
    u_char      pad[72];
    uint64_t    bits;
    size_t      n;
    ngx_uint_t  i;

    bits = ctx->bytes * 8;

    /* 0x80, zeros up to 56 modulo 64, then the length in bits */

    n = 64 - (size_t) ((ctx->bytes + 8) & 63);

    memset(pad, 0, sizeof(pad));
    pad[0] = 0x80;

    for (i = 0; i < 8; i++) {
        pad[n + i] = (u_char) (bits >> (56 - 8 * i));
    }

    ngx_sha1_update(ctx, pad, n + 8);

    for (i = 0; i < 20; i++) {
        result[i] = (u_char) (ctx->h[i / 4] >> (24 - 8 * (i % 4)));
    }
}


static inline void
ngx_encode_base64(ngx_str_t *dst, ngx_str_t *src)
{
    u_char         *d;
    size_t          len;
    const u_char   *s;
    static u_char   alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    s = src->data;
    len = src->len;
    d = dst->data;

    while (len > 2) {
        *d++ = alphabet[s[0] >> 2];
        *d++ = alphabet[((s[0] & 3) << 4) | (s[1] >> 4)];
        *d++ = alphabet[((s[1] & 0x0f) << 2) | (s[2] >> 6)];
        *d++ = alphabet[s[2] & 0x3f];

        s += 3;
        len -= 3;
    }

    if (len) {
        *d++ = alphabet[s[0] >> 2];

        if (len == 1) {
            *d++ = alphabet[(s[0] & 3) << 4];
            *d++ = '=';

        } else {
            *d++ = alphabet[((s[0] & 3) << 4) | (s[1] >> 4)];
            *d++ = alphabet[(s[1] & 0x0f) << 2];
        }

        *d++ = '=';
    }

    dst->len = d - dst->data;
}


#endif /* _NGX_FOKO_CHAT_WS_SHIM_H_INCLUDED_ */
