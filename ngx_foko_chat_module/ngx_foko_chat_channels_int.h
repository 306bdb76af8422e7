
/*
 * Foko chat: what the files of the channel calls share: the channel
 * operation, its task, and the helpers both use.
 * ngx_foko_chat_channels.c has the calls on one channel and the task's
 * completion, ngx_foko_chat_channels_list.c the channel list.
 */


#ifndef _NGX_FOKO_CHAT_CHANNELS_INT_H_INCLUDED_
#define _NGX_FOKO_CHAT_CHANNELS_INT_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_channels.h"
#include "ngx_foko_chat_json.h"
#include "ngx_foko_chat_store.h"
#include "ngx_foko_chat_task.h"


typedef struct ngx_foko_chat_channel_op_s  ngx_foko_chat_channel_op_t;

typedef void (*ngx_foko_chat_channel_run_pt)(ngx_foko_chat_channel_op_t *op);
typedef void (*ngx_foko_chat_channel_keep_pt)(ngx_foko_chat_channel_op_t *op,
    ngx_uint_t failed);


struct ngx_foko_chat_channel_op_s {
    ngx_foko_chat_channel_run_pt   run;

    /* on the event loop, before the answer: what to keep in the zone */
    ngx_foko_chat_channel_keep_pt  keep;

    /* input */
    u_char                         user[NGX_FOKO_CHAT_OID_SIZE];
    u_char                         username[NGX_FOKO_CHAT_USERNAME_MAX + 1];
    u_char                         channel[NGX_FOKO_CHAT_OID_SIZE];
    ngx_foko_chat_channel_doc_t    ch;
    ngx_uint_t                     max_members;
    ngx_foko_chat_user_t           invitee;

    /* output */
    ngx_int_t                      rc;          /* NGX_ERROR: storage */
    u_char                         err[NGX_FOKO_CHAT_ERR_LEN];
    ngx_uint_t                     status;
    ngx_foko_chat_err_e            error;       /* the answer, if not E_NONE */
    json_t                        *result;
    unsigned                       invited:1;
    unsigned                       changed:1;   /* members or name */

    /* what the members' connections hear: "created", "joined"... */
    const char                    *event;

    /* GET /api/channels: what MongoDB said, kept in the zone after */
    ngx_foko_chat_channel_doc_t   *found;
    ngx_uint_t                     nfound;
    json_t                        *reads;
    json_t                        *kept;        /* [names, page] each */
    ngx_uint_t                     ring_size;
    ngx_atomic_uint_t              users_gen;
    ngx_atomic_uint_t              reads_gen;
    ngx_atomic_uint_t              cache_gen;
    ngx_foko_chat_user_t           account;     /* if the zone lacks it */
    unsigned                       load_user:1;
    unsigned                       user_loaded:1;
};


ngx_foko_chat_task_t *ngx_foko_chat_channels_task(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_channels_start(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx, ngx_foko_chat_task_t *task,
    ngx_foko_chat_channel_run_pt run);
json_t *ngx_foko_chat_channels_describe(ngx_foko_chat_channel_op_t *op,
    ngx_foko_chat_channel_doc_t *ch, json_t *reads, ngx_uint_t limit,
    json_t *kept);
void ngx_foko_chat_channels_online(json_t *result);


#endif /* _NGX_FOKO_CHAT_CHANNELS_INT_H_INCLUDED_ */
