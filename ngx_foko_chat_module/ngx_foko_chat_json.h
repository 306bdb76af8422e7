
/*
 * Foko chat: JSON responses and the error shape of the API.
 */


#ifndef _NGX_FOKO_CHAT_JSON_H_INCLUDED_
#define _NGX_FOKO_CHAT_JSON_H_INCLUDED_


#include <jansson.h>

#include "ngx_foko_chat.h"


ngx_int_t ngx_foko_chat_json_send(ngx_http_request_t *r, ngx_uint_t status,
    json_t *body);
ngx_int_t ngx_foko_chat_json_send_text(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *prefix, ngx_str_t *text, ngx_str_t *suffix);
ngx_int_t ngx_foko_chat_json_send_not_allowed(ngx_http_request_t *r,
    ngx_uint_t methods);
ngx_int_t ngx_foko_chat_json_send_invalid(ngx_http_request_t *r,
    const char *field, const char *problem);
ngx_int_t ngx_foko_chat_json_send_unavailable(ngx_http_request_t *r,
    u_char *err);


/*
 * The errors an operation answers, whichever transport carries them: the
 * REST API renders one as {"error": {code, message, field?}} with its
 * status, the WebSocket as {"type": "error", ref?, code, message, field?}.
 */

typedef enum {
    NGX_FOKO_CHAT_E_INVALID = 0,     /* 400, with a field and a problem */
    NGX_FOKO_CHAT_E_NO_CHANNEL,
    NGX_FOKO_CHAT_E_NO_MESSAGE,
    NGX_FOKO_CHAT_E_NOT_YOURS,
    NGX_FOKO_CHAT_E_TOO_LONG,
    NGX_FOKO_CHAT_E_QUEUE_FULL,
    NGX_FOKO_CHAT_E_STORAGE,
    NGX_FOKO_CHAT_E_OVERLOADED,
    NGX_FOKO_CHAT_E_NO_MEMORY,
    NGX_FOKO_CHAT_E_NOT_TAKEN,
    NGX_FOKO_CHAT_E_COLLISION,
    NGX_FOKO_CHAT_E_ACKS,

    /* accounts */
    NGX_FOKO_CHAT_E_EMAIL_TAKEN,
    NGX_FOKO_CHAT_E_USERNAME_TAKEN,
    NGX_FOKO_CHAT_E_CREDENTIALS,
    NGX_FOKO_CHAT_E_ACCOUNT_GONE,
    NGX_FOKO_CHAT_E_PASSWORD_CHANGED,
    NGX_FOKO_CHAT_E_BAD_LINK,
    NGX_FOKO_CHAT_E_RATE_LIMITED,

    /* channels */
    NGX_FOKO_CHAT_E_TOO_MANY_MEMBERS,
    NGX_FOKO_CHAT_E_CHANNEL_FULL,
    NGX_FOKO_CHAT_E_UNKNOWN_USER,
    NGX_FOKO_CHAT_E_DIRECT_NAME,
    NGX_FOKO_CHAT_E_DIRECT_MEMBERS,
    NGX_FOKO_CHAT_E_ALREADY_MEMBER,

    /* messages, again */
    NGX_FOKO_CHAT_E_CLIENT_ID_REUSED, /* 422: the client_id is elsewhere */

    /* the REST router and the status page */
    NGX_FOKO_CHAT_E_NO_ENDPOINT,
    NGX_FOKO_CHAT_E_NOT_ALLOWED,
    NGX_FOKO_CHAT_E_NO_TOKEN,
    NGX_FOKO_CHAT_E_BODY_TOO_LARGE,
    NGX_FOKO_CHAT_E_STATUS_FORMAT,

    /* the WebSocket upgrade */
    NGX_FOKO_CHAT_E_WS_HTTP11,
    NGX_FOKO_CHAT_E_WS_NOT_UPGRADE,
    NGX_FOKO_CHAT_E_WS_NO_VERSION,
    NGX_FOKO_CHAT_E_WS_VERSION,      /* 426 */
    NGX_FOKO_CHAT_E_WS_KEY,
    NGX_FOKO_CHAT_E_WS_ORIGIN,       /* 403 */
    NGX_FOKO_CHAT_E_WS_BODY,

    /* a WebSocket command: the problem alone is the message */
    NGX_FOKO_CHAT_E_COMMAND,

    NGX_FOKO_CHAT_E_NONE             /* not an error */
} ngx_foko_chat_err_e;


typedef struct {
    ngx_uint_t                 status;
    const char                *code;
    const char                *message;
} ngx_foko_chat_error_t;


extern const ngx_foko_chat_error_t  ngx_foko_chat_errors[];


/*
 * {code, message, field?}: "field" and "problem" for E_INVALID; "field"
 * alone for a conflict about one field (E_USERNAME_TAKEN); an entry
 * without a message (E_COMMAND) takes the problem as its message.
 */
json_t *ngx_foko_chat_error_object(ngx_foko_chat_err_e e, const char *field,
    const char *problem);
ngx_int_t ngx_foko_chat_json_send_err(ngx_http_request_t *r,
    ngx_foko_chat_err_e e, const char *field, const char *problem);

/*
 * Reads a string member: NULL if it is there and fits, else what is wrong
 * with it.  max is in bytes; control characters are refused unless
 * "multiline", where only tabs and line feeds pass.
 */
const char *ngx_foko_chat_json_string(json_t *obj, const char *field,
    size_t min, size_t max, ngx_uint_t multiline, ngx_str_t *out);
const char *ngx_foko_chat_json_name(json_t *obj, const char *field,
    size_t max_chars, size_t max_bytes, u_char *out);


#define NGX_FOKO_CHAT_UTF8_INVALID  0xffffffff

/*
 * The code point of valid UTF-8 (RFC 3629: no overlong form, surrogate or
 * code point past U+10FFFF) at *p, before "end", moving *p past it; else
 * NGX_FOKO_CHAT_UTF8_INVALID, *p unchanged.
 */
uint32_t ngx_foko_chat_utf8_next(u_char **p, u_char *end);
ngx_uint_t ngx_foko_chat_utf8_valid(u_char *p, size_t len);


#endif /* _NGX_FOKO_CHAT_JSON_H_INCLUDED_ */
