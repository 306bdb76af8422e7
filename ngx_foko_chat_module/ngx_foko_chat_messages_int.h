
/*
 * Foko chat: what the files of the operations on messages share: the
 * operation, its task, and the helpers every operation uses.
 * ngx_foko_chat_messages.c has the operations but the post,
 * ngx_foko_chat_messages_post.c the post, ngx_foko_chat_messages_idem.c
 * the posts of one client_id.
 */


#ifndef _NGX_FOKO_CHAT_MESSAGES_INT_H_INCLUDED_
#define _NGX_FOKO_CHAT_MESSAGES_INT_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_messages.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_store.h"
#include "ngx_foko_chat_task.h"
#include "ngx_foko_chat_writer.h"


#define NGX_FOKO_CHAT_TEXT_TOO_LONG  ((const char *) -1)

/* the caller's log while somebody waits for the answer */
#define ngx_foko_chat_op_log(op)                                             \
    ((op)->target ? (op)->target->log : ngx_cycle->log)


typedef struct ngx_foko_chat_msg_op_s  ngx_foko_chat_msg_op_t;

typedef void (*ngx_foko_chat_msg_run_pt)(ngx_foko_chat_msg_op_t *op);


struct ngx_foko_chat_msg_op_s {
    ngx_foko_chat_msg_run_pt       run;

    /* input */
    u_char                         user[NGX_FOKO_CHAT_OID_SIZE];
    u_char                         username[NGX_FOKO_CHAT_USERNAME_MAX + 1];
    u_char                         mid[NGX_FOKO_CHAT_OID_SIZE];
    u_char                         client_id[NGX_FOKO_CHAT_CLIENT_ID_MAX + 1];
    u_char                        *text;         /* malloc()ed */
    int64_t                        before;
    int64_t                        after;
    int64_t                        upto;         /* stored through */
    int64_t                        seq;
    int64_t                        last;         /* a read: -1 unknown */
    ngx_uint_t                     limit;
    ngx_foko_chat_channel_doc_t    ch;
    unsigned                       load_seq:1;
    unsigned                       remove:1;
    unsigned                       waited:1;     /* for another's load */
    unsigned                       member:1;     /* the cache said so */
    unsigned                       idem_waiting:1; /* a repeat, waiting */

    /* output */
    ngx_int_t                      rc;           /* NGX_ERROR: storage */
    u_char                         err[NGX_FOKO_CHAT_ERR_LEN];
    ngx_int_t                      found;        /* NGX_OK, NGX_DECLINED */
    int64_t                        stored_seq;
    ngx_uint_t                     more;
    json_t                        *result;

    /* what the channel cache is filled with: the latest messages */
    unsigned                       loaded:1;
    json_t                        *latest;
    ngx_uint_t                     ring_size;
    ngx_atomic_uint_t              cache_gen;

    /* who waits for the answer */
    ngx_foko_chat_target_t        *target;

    /* while the task runs: answers 503 if MongoDB is known to hang */
    ngx_event_t                    watch;
    ngx_msec_t                     since;
};


ngx_foko_chat_main_conf_t *ngx_foko_chat_messages_conf(void);

/* an operation's task with its inputs copied in, and its target */
ngx_foko_chat_task_t *ngx_foko_chat_messages_op(ngx_foko_chat_op_in_t *in);

/*
 * The one membership rule: NGX_OK for a member and NGX_DECLINED for
 * anybody else when the shared zone caches the channel; NGX_AGAIN when
 * only MongoDB knows (the thread side asks it with find_mine).
 */
ngx_int_t ngx_foko_chat_messages_member(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_msg_op_t *op);

/* answered with an error before the task ran; frees the task */
ngx_int_t ngx_foko_chat_messages_fail(ngx_foko_chat_task_t *task,
    ngx_foko_chat_err_e e, const char *field, const char *problem);

/* 1 when the task, MongoDB or the membership failed, and was answered */
ngx_uint_t ngx_foko_chat_messages_failed(ngx_foko_chat_task_t *task);

void ngx_foko_chat_messages_reply(ngx_foko_chat_msg_op_t *op,
    ngx_foko_chat_answer_t *a);
ngx_int_t ngx_foko_chat_messages_reply_message(ngx_foko_chat_msg_op_t *op,
    ngx_uint_t status, json_t *message);
void ngx_foko_chat_messages_thread(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
void ngx_foko_chat_messages_release(ngx_foko_chat_msg_op_t *op);

/* NULL, what is wrong with the text, or NGX_FOKO_CHAT_TEXT_TOO_LONG */
const char *ngx_foko_chat_messages_text(ngx_foko_chat_main_conf_t *fmcf,
    json_t *body, ngx_foko_chat_msg_op_t *op);

/*
 * The post of a member (op->found NGX_OK) takes a seq and enters the write
 * queue, or is answered with the message its client_id made.  NGX_DONE:
 * queued or waiting, the op's target is taken; NGX_OK: answered; NGX_BUSY
 * (for a waiting repeat only): its client_id is still pending.
 */
ngx_int_t ngx_foko_chat_messages_enqueue(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_msg_op_t *op);

/* ngx_foko_chat_messages_idem.c: a repeat waits for its client_id */
ngx_int_t ngx_foko_chat_messages_idem_wait(ngx_foko_chat_msg_op_t *op);

/* thread side: the channel of the path, if the caller is in it */
ngx_uint_t ngx_foko_chat_messages_find_mine(ngx_foko_chat_msg_op_t *op);

/* thread side: what the channel cache needs besides the channel itself */
void ngx_foko_chat_messages_load(ngx_foko_chat_msg_op_t *op);
void ngx_foko_chat_messages_cache(ngx_foko_chat_msg_op_t *op);


#endif /* _NGX_FOKO_CHAT_MESSAGES_INT_H_INCLUDED_ */
