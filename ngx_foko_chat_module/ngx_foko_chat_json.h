
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
json_t *ngx_foko_chat_json_error(const char *code, const char *message);
ngx_int_t ngx_foko_chat_json_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message);
ngx_int_t ngx_foko_chat_json_send_not_allowed(ngx_http_request_t *r,
    ngx_uint_t methods);
ngx_int_t ngx_foko_chat_json_send_invalid(ngx_http_request_t *r,
    const char *field, const char *problem);
ngx_int_t ngx_foko_chat_json_send_unavailable(ngx_http_request_t *r,
    u_char *err);

/*
 * Reads a string member: NULL if it is there and fits, else what is wrong
 * with it.  max is in bytes; control characters are refused unless
 * "multiline", where only tabs and line feeds pass.
 */
const char *ngx_foko_chat_json_string(json_t *obj, const char *field,
    size_t min, size_t max, ngx_uint_t multiline, ngx_str_t *out);
const char *ngx_foko_chat_json_name(json_t *obj, const char *field,
    size_t max_chars, size_t max_bytes, u_char *out);


#endif /* _NGX_FOKO_CHAT_JSON_H_INCLUDED_ */
