
/*
 * Foko chat: outgoing mail, what it says and carries: the addresses and
 * the link checked, the subject and text of each kind, and the request of
 * each transport (a SendGrid JSON body, an RFC 5322 message), composed on
 * the event loop.
 */


#include <jansson.h>

#include "ngx_foko_chat_mail_int.h"


#define NGX_FOKO_CHAT_MAIL_ADDR_MAX        254
#define NGX_FOKO_CHAT_MAIL_LINK_MAX        900
#define NGX_FOKO_CHAT_MAIL_DETAIL_MAX      100

/* bytes of text per RFC 2047 encoded word: 60 base64 characters */
#define NGX_FOKO_CHAT_MAIL_WORD_TEXT       45


static void ngx_foko_chat_mail_clean(ngx_str_t *src, u_char *dst,
    ngx_str_t *out);
static ngx_int_t ngx_foko_chat_mail_compose(ngx_pool_t *pool,
    ngx_foko_chat_mail_kind_e kind, ngx_str_t *detail, ngx_str_t *link,
    ngx_str_t *subject, ngx_str_t *text);
static ngx_int_t ngx_foko_chat_mail_sendgrid_body(ngx_pool_t *pool,
    ngx_foko_chat_mail_conf_t *mcf, ngx_str_t *to, ngx_str_t *subject,
    ngx_str_t *text, ngx_str_t *out);
static ngx_int_t ngx_foko_chat_mail_message(ngx_pool_t *pool,
    ngx_foko_chat_mail_conf_t *mcf, ngx_str_t *to, ngx_str_t *subject,
    ngx_str_t *text, ngx_str_t *out);
static u_char *ngx_foko_chat_mail_header_text(u_char *p, ngx_str_t *text);
static u_char *ngx_foko_chat_mail_date(u_char *p);


/* this worker's Message-IDs */
static ngx_uint_t   ngx_foko_chat_mail_serial;


static const char  *ngx_foko_chat_mail_week[] = {
    "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"
};

static const char  *ngx_foko_chat_mail_months[] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
};


/*
 * A plain addr-spec, as a header and an SMTP envelope can carry it as is:
 * printable ASCII, no white space, no quoting, one "@" not at either end.
 */

ngx_int_t
ngx_foko_chat_mail_check_addr(ngx_str_t *addr)
{
    u_char  *p, *last, *at;

    if (addr->len == 0 || addr->len > NGX_FOKO_CHAT_MAIL_ADDR_MAX) {
        return NGX_ERROR;
    }

    at = NULL;
    last = addr->data + addr->len;

    for (p = addr->data; p < last; p++) {

        if (*p <= ' ' || *p >= 0x7f) {
            return NGX_ERROR;
        }

        switch (*p) {

        case '"': case '(': case ')': case ',': case ':': case ';':
        case '<': case '>': case '[': case ']': case '\\':
            return NGX_ERROR;

        case '@':
            at = p;
            break;
        }
    }

    if (at == NULL || at == addr->data || at == last - 1) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the caller's part of a link: "/...", printable ASCII, escaped already */

ngx_int_t
ngx_foko_chat_mail_check_path(ngx_str_t *path)
{
    u_char  *p, *last;

    if (path->len == 0 || path->data[0] != '/'
        || path->len > NGX_FOKO_CHAT_MAIL_LINK_MAX)
    {
        return NGX_ERROR;
    }

    last = path->data + path->len;

    for (p = path->data; p < last; p++) {
        if (*p <= ' ' || *p >= 0x7f) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * The whole request of a mail: its subject and text for "kind", then the
 * SendGrid JSON body or the RFC 5322 message of them.
 */

ngx_int_t
ngx_foko_chat_mail_payload(ngx_pool_t *pool, ngx_foko_chat_mail_conf_t *mcf,
    ngx_foko_chat_mail_kind_e kind, ngx_str_t *to, ngx_str_t *link,
    ngx_str_t *detail, ngx_str_t *out)
{
    ngx_str_t  clean, subject, text;
    u_char     buf[NGX_FOKO_CHAT_MAIL_DETAIL_MAX];

    ngx_foko_chat_mail_clean(detail, buf, &clean);

    if (ngx_foko_chat_mail_compose(pool, kind, &clean, link, &subject, &text)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (mcf->transport == NGX_FOKO_CHAT_MAIL_SENDGRID) {
        return ngx_foko_chat_mail_sendgrid_body(pool, mcf, to, &subject,
                                                &text, out);
    }

    return ngx_foko_chat_mail_message(pool, mcf, to, &subject, &text, out);
}


/*
 * The caller's detail (a user or channel name) goes into a subject line
 * and a JSON string: it is cut to NGX_FOKO_CHAT_MAIL_DETAIL_MAX bytes at a
 * character boundary, control characters become spaces, and bytes that
 * are not UTF-8 become "?".
 */

static void
ngx_foko_chat_mail_clean(ngx_str_t *src, u_char *dst, ngx_str_t *out)
{
    u_char    *p, *last, *start, *d;
    uint32_t   ch;

    d = dst;
    out->data = dst;
    out->len = 0;

    if (src == NULL || src->data == NULL) {
        return;
    }

    p = src->data;
    last = p + src->len;

    while (p < last) {
        start = p;

        if (*p < 0x80) {
            ch = *p++;

        } else {
            ch = ngx_utf8_decode(&p, last - p);

            if (ch > 0x10ffff || (ch >= 0xd800 && ch <= 0xdfff)) {
                p = start + 1;
                ch = '?';
            }
        }

        if (d + (p - start) > dst + NGX_FOKO_CHAT_MAIL_DETAIL_MAX) {
            break;
        }

        if (ch < 0x20 || (ch >= 0x7f && ch < 0xa0)) {
            *d++ = ' ';

        } else if (ch < 0x80) {
            *d++ = (u_char) ch;

        } else {
            d = ngx_cpymem(d, start, p - start);
        }
    }

    out->len = d - dst;
}


static ngx_int_t
ngx_foko_chat_mail_compose(ngx_pool_t *pool, ngx_foko_chat_mail_kind_e kind,
    ngx_str_t *detail, ngx_str_t *link, ngx_str_t *subject, ngx_str_t *text)
{
    u_char  *p;
    size_t   len;

    len = 512 + detail->len + link->len;

    subject->data = ngx_pnalloc(pool, 64 + detail->len);
    text->data = ngx_pnalloc(pool, len);

    if (subject->data == NULL || text->data == NULL) {
        return NGX_ERROR;
    }

    p = text->data;

    if (kind == NGX_FOKO_CHAT_MAIL_RESET) {
        subject->len = ngx_sprintf(subject->data,
                                   "Reset your Foko chat password")
                       - subject->data;

        if (detail->len) {
            p = ngx_sprintf(p, "Hello %V,\n\n", detail);

        } else {
            p = ngx_sprintf(p, "Hello,\n\n");
        }

        p = ngx_sprintf(p,
                "Someone, probably you, asked to reset the password of "
                "your\nFoko chat account. To choose a new password, open "
                "this link:\n\n%V\n\nThe link works once and expires soon. "
                "If you did not ask for it,\nignore this message: your "
                "password stays as it is.\n", link);

    } else {
        if (detail->len) {
            subject->len = ngx_sprintf(subject->data,
                                       "Invitation to Foko chat: %V", detail)
                           - subject->data;

            p = ngx_sprintf(p, "Hello,\n\nYou are invited to a conversation "
                            "on Foko chat: %V\n\n", detail);

        } else {
            subject->len = ngx_sprintf(subject->data,
                                       "Invitation to Foko chat")
                           - subject->data;

            p = ngx_sprintf(p, "Hello,\n\nYou are invited to a conversation "
                            "on Foko chat.\n\n");
        }

        p = ngx_sprintf(p,
                "To join it, open this link:\n\n%V\n\nIf you did not "
                "expect this invitation, you can ignore this message.\n",
                link);
    }

    text->len = p - text->data;

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_mail_sendgrid_body(ngx_pool_t *pool,
    ngx_foko_chat_mail_conf_t *mcf, ngx_str_t *to, ngx_str_t *subject,
    ngx_str_t *text, ngx_str_t *out)
{
    size_t    len;
    json_t   *body;

    body = json_pack("{s:[{s:[{s:s%}]}],s:{s:s%},s:s%,s:[{s:s,s:s%}]}",
                     "personalizations",
                       "to",
                         "email", to->data, to->len,
                     "from",
                       "email", mcf->from.data, mcf->from.len,
                     "subject", subject->data, subject->len,
                     "content",
                       "type", "text/plain",
                       "value", text->data, text->len);
    if (body == NULL) {
        return NGX_ERROR;
    }

    len = json_dumpb(body, NULL, 0, JSON_COMPACT);

    out->data = (len == 0) ? NULL : ngx_pnalloc(pool, len);

    if (out->data == NULL) {
        json_decref(body);
        return NGX_ERROR;
    }

    out->len = json_dumpb(body, (char *) out->data, len, JSON_COMPACT);

    json_decref(body);

    return (out->len == len) ? NGX_OK : NGX_ERROR;
}


/*
 * An RFC 5322 message with CRLF line ends, as the SMTP DATA phase takes
 * it (libcurl escapes leading dots).  A body that is not ASCII goes in
 * base64, so that the relay needs no 8BITMIME.
 */

static ngx_int_t
ngx_foko_chat_mail_message(ngx_pool_t *pool, ngx_foko_chat_mail_conf_t *mcf,
    ngx_str_t *to, ngx_str_t *subject, ngx_str_t *text, ngx_str_t *out)
{
    u_char         *p, *s, *last;
    size_t          len;
    ngx_str_t       crlf, b64, body;
    ngx_uint_t      ascii;
    ngx_time_t     *tp;
    const char     *encoding;

    crlf.data = ngx_pnalloc(pool, 2 * text->len);
    if (crlf.data == NULL) {
        return NGX_ERROR;
    }

    ascii = 1;
    p = crlf.data;
    last = text->data + text->len;

    for (s = text->data; s < last; s++) {
        if (*s == LF) {
            *p++ = CR;

        } else if (*s >= 0x80) {
            ascii = 0;
        }

        *p++ = *s;
    }

    crlf.len = p - crlf.data;

    if (ascii) {
        body = crlf;
        encoding = "7bit";

    } else {
        b64.len = ngx_base64_encoded_length(crlf.len);
        b64.data = ngx_pnalloc(pool, b64.len);

        body.data = ngx_pnalloc(pool, b64.len + (b64.len / 76 + 1) * 2);

        if (b64.data == NULL || body.data == NULL) {
            return NGX_ERROR;
        }

        ngx_encode_base64(&b64, &crlf);

        p = body.data;

        for (s = b64.data; s < b64.data + b64.len; s += 76) {
            len = ngx_min(76, (size_t) (b64.data + b64.len - s));
            p = ngx_cpymem(p, s, len);
            *p++ = CR;
            *p++ = LF;
        }

        body.len = p - body.data;
        encoding = "base64";
    }

    len = 512 + mcf->from.len + mcf->domain.len + to->len
          + (subject->len / 40 + 1) * 80 + body.len;

    out->data = ngx_pnalloc(pool, len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    tp = ngx_timeofday();

    p = ngx_cpymem(out->data, "Date: ", sizeof("Date: ") - 1);
    p = ngx_foko_chat_mail_date(p);

    p = ngx_sprintf(p, CRLF "From: %V" CRLF "To: %V" CRLF "Subject: ",
                    &mcf->from, to);
    p = ngx_foko_chat_mail_header_text(p, subject);

    p = ngx_sprintf(p, CRLF "Message-ID: <%xL.%xL.%P.%ui@%V>" CRLF
                    "MIME-Version: 1.0" CRLF
                    "Content-Type: text/plain; charset=utf-8" CRLF
                    "Content-Transfer-Encoding: %s" CRLF
                    "Auto-Submitted: auto-generated" CRLF CRLF,
                    (uint64_t) tp->sec * 1000 + tp->msec,
                    (uint64_t) ngx_random(), ngx_pid,
                    ++ngx_foko_chat_mail_serial, &mcf->domain, encoding);

    p = ngx_cpymem(p, body.data, body.len);

    out->len = p - out->data;

    return NGX_OK;
}


/*
 * Printable ASCII goes as is; other text as RFC 2047 "B" encoded words of
 * at most 75 characters on folded lines, never splitting a character.
 * Room needed: (text->len / 40 + 1) * 80 bytes.
 */

static u_char *
ngx_foko_chat_mail_header_text(u_char *p, ngx_str_t *text)
{
    u_char     *s, *end, *last;
    ngx_str_t   src, dst;

    end = text->data + text->len;

    for (s = text->data; s < end; s++) {
        if (*s < 0x20 || *s >= 0x7f) {
            break;
        }
    }

    if (s == end) {
        return ngx_cpymem(p, text->data, text->len);
    }

    for (s = text->data; s < end; s = last) {
        last = s + ngx_min(NGX_FOKO_CHAT_MAIL_WORD_TEXT, (size_t) (end - s));

        while (last < end && last > s + 1 && (*last & 0xc0) == 0x80) {
            last--;
        }

        if (s != text->data) {
            *p++ = CR;
            *p++ = LF;
            *p++ = ' ';
        }

        p = ngx_cpymem(p, "=?UTF-8?B?", sizeof("=?UTF-8?B?") - 1);

        src.data = s;
        src.len = last - s;
        dst.data = p;

        ngx_encode_base64(&dst, &src);

        p += dst.len;
        *p++ = '?';
        *p++ = '=';
    }

    return p;
}


static u_char *
ngx_foko_chat_mail_date(u_char *p)
{
    ngx_tm_t  tm;

    ngx_gmtime(ngx_time(), &tm);

    return ngx_sprintf(p, "%s, %02d %s %4d %02d:%02d:%02d +0000",
                       ngx_foko_chat_mail_week[tm.ngx_tm_wday],
                       tm.ngx_tm_mday,
                       ngx_foko_chat_mail_months[tm.ngx_tm_mon - 1],
                       tm.ngx_tm_year, tm.ngx_tm_hour, tm.ngx_tm_min,
                       tm.ngx_tm_sec);
}
