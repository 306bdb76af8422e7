
/*
 * Foko chat: messages: history, posting with group commit, edits, read
 * marks.
 */


#ifndef _NGX_FOKO_CHAT_MESSAGES_H_INCLUDED_
#define _NGX_FOKO_CHAT_MESSAGES_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_api.h"

#include <jansson.h>


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

/*
 * This worker's posts waiting for MongoDB, the channel loads it started
 * for posts, and the posts that waited for another post's load.
 */
void ngx_foko_chat_messages_stats(ngx_uint_t *queued, ngx_uint_t *loads,
    ngx_uint_t *waited);


/*
 * A post made outside an HTTP request (a WebSocket "send").  The body has
 * "text" and "client_id" as the REST call takes them.  The answer, later,
 * goes to handler(data, status, answer): 201 or 200 with { message }, or
 * an error status with { code, message, field? }; the handler owns
 * "answer".
 */

typedef void (*ngx_foko_chat_post_done_pt)(void *data, ngx_uint_t status,
    json_t *answer);

typedef struct {
    u_char                        *user;          /* 24 hex digits, NUL */
    u_char                        *username;
    u_char                        *channel;       /* 24 hex digits, NUL */
    json_t                        *body;
    ngx_foko_chat_post_done_pt     handler;
    void                          *data;
    ngx_log_t                     *log;
} ngx_foko_chat_post_t;

/*
 * NGX_DONE: the handler is called later, and *handle can cancel that;
 * NGX_OK: answered at once with *status and *answer (the handler is not
 * called); NGX_ERROR: out of memory.
 */
ngx_int_t ngx_foko_chat_messages_submit(ngx_foko_chat_post_t *post,
    void **handle, ngx_uint_t *status, json_t **answer);
/* the caller went away: the post is stored, the handler is not called */
void ngx_foko_chat_messages_cancel(void *handle);

/* a read mark was stored: every member's connections hear of it */
void ngx_foko_chat_messages_publish_read(u_char *channel, u_char *user,
    int64_t seq);


#endif /* _NGX_FOKO_CHAT_MESSAGES_H_INCLUDED_ */
