
/*
 * Foko chat: the group-commit writer of posted messages.
 */


#ifndef _NGX_FOKO_CHAT_WRITER_H_INCLUDED_
#define _NGX_FOKO_CHAT_WRITER_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_messages.h"

#include <jansson.h>


/* who waits for an operation's answer; handler NULL: nobody any more */

typedef struct {
    ngx_foko_chat_answer_pt        handler;
    void                          *data;
    ngx_log_t                     *log;
} ngx_foko_chat_target_t;


/*
 * How long a post waits for MongoDB before it is answered 503 (it stays
 * queued), and how long a repeat of its client_id waits for it, in ms.
 */
#define NGX_FOKO_CHAT_POST_WAIT        5000


ngx_int_t ngx_foko_chat_writer_init_process(ngx_cycle_t *cycle);

/*
 * Queues a post that has its seq; the writer owns "message" and "t" from
 * now on, and answers t once MongoDB has stored the message.
 */
ngx_int_t ngx_foko_chat_writer_add(ngx_foko_chat_target_t *t,
    json_t *message);

/* the posts counted against foko_chat_write_queue: queued or preparing */
ngx_uint_t ngx_foko_chat_writer_load(void);
ngx_uint_t ngx_foko_chat_writer_queued(void);
void ngx_foko_chat_writer_preparing(ngx_int_t delta);

/* calls the target's handler, if anybody waits, and frees the target */
void ngx_foko_chat_target_answer(ngx_foko_chat_target_t *t,
    ngx_foko_chat_answer_t *a);


#endif /* _NGX_FOKO_CHAT_WRITER_H_INCLUDED_ */
