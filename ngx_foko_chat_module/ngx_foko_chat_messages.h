
/*
 * Foko chat: messages: history, posting with group commit, edits, read
 * marks.
 */


#ifndef _NGX_FOKO_CHAT_MESSAGES_H_INCLUDED_
#define _NGX_FOKO_CHAT_MESSAGES_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_api.h"
#include "ngx_foko_chat_json.h"

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
 * The operations on messages, whichever transport asked: each takes its
 * input and a completion, and knows nothing of HTTP or WebSocket.  The
 * REST handlers above and the WebSocket commands decode, call one of
 * these, and encode the answer.
 *
 * The completion, handler(data, answer), is called once, maybe before the
 * call returns; it borrows the answer.  An operation that returns NGX_DONE
 * is still under way, and *handle can cancel its completion (a post is
 * stored all the same).  NGX_OK: answered already.  NGX_ERROR: out of
 * memory, nothing is called.
 */

typedef struct {
    ngx_uint_t                     status;
    ngx_foko_chat_err_e            error;       /* E_NONE: success */
    const char                    *field;       /* E_INVALID */
    const char                    *problem;

    json_t                        *message;     /* post, edit, delete */
    ngx_str_t                      text;        /* the message, dumped */
    json_t                        *page;        /* page */
    ngx_uint_t                     more;
    u_char                        *channel;     /* read */
    int64_t                        seq;
} ngx_foko_chat_answer_t;


typedef void (*ngx_foko_chat_answer_pt)(void *data,
    ngx_foko_chat_answer_t *answer);


typedef struct {
    u_char                        *user;        /* an ObjectId, NUL */
    u_char                        *username;
    ngx_str_t                      channel;     /* checked as an id */
    ngx_str_t                      message;     /* edit, delete */

    json_t                        *body;        /* post, edit: {text...} */
    int64_t                        seq;         /* read */
    int64_t                        before;      /* page: 0, or below */
    int64_t                        after;       /* page: -1, or above */
    int64_t                        upto;        /* page: -1: stored */
    ngx_uint_t                     limit;

    ngx_foko_chat_answer_pt        handler;
    void                          *data;
    ngx_log_t                     *log;
} ngx_foko_chat_op_in_t;


ngx_int_t ngx_foko_chat_message_post(ngx_foko_chat_op_in_t *in,
    void **handle);
ngx_int_t ngx_foko_chat_message_edit(ngx_foko_chat_op_in_t *in,
    void **handle);
ngx_int_t ngx_foko_chat_message_delete(ngx_foko_chat_op_in_t *in,
    void **handle);
ngx_int_t ngx_foko_chat_message_mark_read(ngx_foko_chat_op_in_t *in,
    void **handle);
ngx_int_t ngx_foko_chat_message_page(ngx_foko_chat_op_in_t *in,
    void **handle);

/* the caller went away: its operation goes on, the handler is not called */
void ngx_foko_chat_messages_cancel(void *handle);


#endif /* _NGX_FOKO_CHAT_MESSAGES_H_INCLUDED_ */
