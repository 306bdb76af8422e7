
/*
 * Foko chat: channels and direct conversations.
 */


#ifndef _NGX_FOKO_CHAT_CHANNELS_H_INCLUDED_
#define _NGX_FOKO_CHAT_CHANNELS_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_api.h"
#include "ngx_foko_chat_store.h"


#define NGX_FOKO_CHAT_MAX_MEMBERS       10
#define NGX_FOKO_CHAT_CHANNEL_CHARS     64


ngx_int_t ngx_foko_chat_channels_list(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_channels_create(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_channels_get(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_channels_rename(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_channels_invite(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_channels_leave(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);

ngx_uint_t ngx_foko_chat_channel_has(ngx_foko_chat_channel_doc_t *ch,
    u_char *user);
ngx_int_t ngx_foko_chat_send_not_found(ngx_http_request_t *r);


#endif /* _NGX_FOKO_CHAT_CHANNELS_H_INCLUDED_ */
