
/*
 * Foko chat: the REST API router.
 */


#ifndef _NGX_FOKO_CHAT_API_H_INCLUDED_
#define _NGX_FOKO_CHAT_API_H_INCLUDED_


#include "ngx_foko_chat.h"


#define NGX_FOKO_CHAT_API_MAX_ARGS  4


typedef struct {
    /* the ":name" segments of the matched route, in order */
    ngx_str_t                  args[NGX_FOKO_CHAT_API_MAX_ARGS];
    ngx_uint_t                 nargs;
} ngx_foko_chat_api_ctx_t;


ngx_int_t ngx_foko_chat_api_handler(ngx_http_request_t *r);


#endif /* _NGX_FOKO_CHAT_API_H_INCLUDED_ */
