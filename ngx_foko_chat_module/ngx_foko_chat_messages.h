
/*
 * Foko chat: messages: history, posting with group commit, edits, read
 * marks.
 */


#ifndef _NGX_FOKO_CHAT_MESSAGES_H_INCLUDED_
#define _NGX_FOKO_CHAT_MESSAGES_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_api.h"


#define NGX_FOKO_CHAT_MESSAGE_SIZE      4096
#define NGX_FOKO_CHAT_WRITE_QUEUE       1000
#define NGX_FOKO_CHAT_PAGE_DEFAULT      50
#define NGX_FOKO_CHAT_PAGE_MAX          200
#define NGX_FOKO_CHAT_BATCH_MAX         256


ngx_int_t ngx_foko_chat_messages_list(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_messages_post(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_messages_edit(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_messages_delete(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_messages_read(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);

ngx_int_t ngx_foko_chat_messages_init_process(ngx_cycle_t *cycle);


#endif /* _NGX_FOKO_CHAT_MESSAGES_H_INCLUDED_ */
