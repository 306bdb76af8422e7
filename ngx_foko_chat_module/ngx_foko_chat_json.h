
/*
 * Foko chat: JSON responses and the error shape of the API.
 */


#ifndef _NGX_FOKO_CHAT_JSON_H_INCLUDED_
#define _NGX_FOKO_CHAT_JSON_H_INCLUDED_


#include <jansson.h>

#include "ngx_foko_chat.h"


ngx_int_t ngx_foko_chat_json_send(ngx_http_request_t *r, ngx_uint_t status,
    json_t *body);
json_t *ngx_foko_chat_json_error(const char *code, const char *message);
ngx_int_t ngx_foko_chat_json_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message);
ngx_int_t ngx_foko_chat_json_send_not_allowed(ngx_http_request_t *r,
    ngx_uint_t methods);


#endif /* _NGX_FOKO_CHAT_JSON_H_INCLUDED_ */
