
/*
 * Foko chat: the REST API router.
 */


#ifndef _NGX_FOKO_CHAT_API_H_INCLUDED_
#define _NGX_FOKO_CHAT_API_H_INCLUDED_


#include <jansson.h>

#include "ngx_foko_chat.h"
#include "ngx_foko_chat_jwt.h"


#define NGX_FOKO_CHAT_API_MAX_ARGS  4


/* bodies of API calls are JSON objects of at most this size */
#define NGX_FOKO_CHAT_API_MAX_BODY  (64 * 1024)


typedef struct ngx_foko_chat_route_s  ngx_foko_chat_route_t;


typedef struct {
    ngx_foko_chat_route_t     *route;

    /* the ":name" segments of the matched route, in order */
    ngx_str_t                  args[NGX_FOKO_CHAT_API_MAX_ARGS];
    ngx_uint_t                 nargs;

    /* the request body, for routes that take one; released with r->pool */
    json_t                    *body;

    /* the caller, for routes that need a token */
    ngx_foko_chat_claims_t     claims;
} ngx_foko_chat_api_ctx_t;


ngx_int_t ngx_foko_chat_api_handler(ngx_http_request_t *r);


#endif /* _NGX_FOKO_CHAT_API_H_INCLUDED_ */
