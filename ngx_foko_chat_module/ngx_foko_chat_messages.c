
/*
 * Foko chat: the operations on messages, one entry point each, whichever
 * transport asked: edit, delete, mark read, a page of history (the post
 * has its own file, ngx_foko_chat_messages_post.c).
 *
 * Each checks the caller's membership by one rule (the channel cache of
 * the shared zone when it holds the channel, MongoDB otherwise), does its
 * work on the thread pool when it must, and answers its completion.
 */


#include "ngx_foko_chat_messages_int.h"
#include "ngx_foko_chat_cache.h"
#include "ngx_foko_chat_channels.h"
#include "ngx_foko_chat_event.h"
#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_status.h"
#include "ngx_foko_chat_store.h"
#include "ngx_foko_chat_task.h"
#include "ngx_foko_chat_writer.h"
#include "ngx_foko_chat_users.h"


static void ngx_foko_chat_messages_list_run(ngx_foko_chat_msg_op_t *op);
static ngx_int_t ngx_foko_chat_messages_list_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_messages_run(ngx_foko_chat_task_t *task,
    ngx_foko_chat_msg_run_pt run, ngx_foko_chat_task_done_pt done,
    void **handle);
static void ngx_foko_chat_messages_update_run(ngx_foko_chat_msg_op_t *op);
static ngx_int_t ngx_foko_chat_messages_update_done(
    ngx_foko_chat_task_t *task);
static void ngx_foko_chat_messages_read_run(ngx_foko_chat_msg_op_t *op);
static ngx_int_t ngx_foko_chat_messages_read_store(u_char *channel,
    u_char *user, int64_t *seq, int64_t last, u_char *err);
static ngx_int_t ngx_foko_chat_messages_read_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_messages_watch(ngx_event_t *ev);


/*
 * An operation on MongoDB that has run this long while the zone's view
 * of MongoDB is "down" (every worker's check failed: it hangs or is gone)
 * is answered 503 at once; its task goes on, and its result is dropped.
 * A slow MongoDB that answers the checks keeps its calls (their socket
 * timeout, 10 s for messages, still bounds them).
 */
#define NGX_FOKO_CHAT_WATCH_AFTER  2000
#define NGX_FOKO_CHAT_WATCH_EVERY  250


/* a debug log reads an event's data as a connection: give it one */
static ngx_connection_t  ngx_foko_chat_messages_conn;


ngx_foko_chat_main_conf_t *
ngx_foko_chat_messages_conf(void)
{
    return ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);
}


static ngx_int_t ngx_foko_chat_messages_update(ngx_foko_chat_op_in_t *in,
    void **handle, ngx_uint_t remove);


/* edit {text}: the author's own message, not deleted */

ngx_int_t
ngx_foko_chat_message_edit(ngx_foko_chat_op_in_t *in, void **handle)
{
    return ngx_foko_chat_messages_update(in, handle, 0);
}


/* delete: a tombstone stays */

ngx_int_t
ngx_foko_chat_message_delete(ngx_foko_chat_op_in_t *in, void **handle)
{
    return ngx_foko_chat_messages_update(in, handle, 1);
}


static ngx_int_t
ngx_foko_chat_messages_update(ngx_foko_chat_op_in_t *in, void **handle,
    ngx_uint_t remove)
{
    const char              *problem;
    ngx_foko_chat_task_t    *task;
    ngx_foko_chat_msg_op_t  *op;

    task = ngx_foko_chat_messages_op(in);
    if (task == NULL) {
        return NGX_ERROR;
    }

    op = task->data;
    op->remove = remove;

    if (!op->remove) {
        problem = ngx_foko_chat_messages_text(ngx_foko_chat_messages_conf(),
                                              in->body, op);

        if (problem == NGX_FOKO_CHAT_TEXT_TOO_LONG) {
            return ngx_foko_chat_messages_fail(task,
                                               NGX_FOKO_CHAT_E_TOO_LONG,
                                               NULL, NULL);
        }

        if (problem) {
            return ngx_foko_chat_messages_fail(task,
                                               NGX_FOKO_CHAT_E_INVALID,
                                               "text", problem);
        }
    }

    if (!op->ch.id[0]) {
        return ngx_foko_chat_messages_fail(task, NGX_FOKO_CHAT_E_NO_CHANNEL,
                                           NULL, NULL);
    }

    if (!op->mid[0]) {
        return ngx_foko_chat_messages_fail(task, NGX_FOKO_CHAT_E_NO_MESSAGE,
                                           NULL, NULL);
    }

    return ngx_foko_chat_messages_run(task,
                                      ngx_foko_chat_messages_update_run,
                                      ngx_foko_chat_messages_update_done,
                                      handle);
}


/* mark read {seq}: the mark stored, at most the channel's last seq */

ngx_int_t
ngx_foko_chat_message_mark_read(ngx_foko_chat_op_in_t *in, void **handle)
{
    ngx_int_t                 rc;
    ngx_foko_chat_task_t     *task;
    ngx_foko_chat_msg_op_t   *op;
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ngx_foko_chat_messages_conf()->shm_zone->data;

    task = ngx_foko_chat_messages_op(in);
    if (task == NULL) {
        return NGX_ERROR;
    }

    op = task->data;

    if (!op->ch.id[0]) {
        return ngx_foko_chat_messages_fail(task, NGX_FOKO_CHAT_E_NO_CHANNEL,
                                           NULL, NULL);
    }

    rc = ngx_foko_chat_messages_member(shm, op);

    if (rc == NGX_DECLINED) {
        return ngx_foko_chat_messages_fail(task, NGX_FOKO_CHAT_E_NO_CHANNEL,
                                           NULL, NULL);
    }

    op->member = (rc == NGX_OK);
    op->seq = in->seq;
    op->last = ngx_foko_chat_seq_last(shm, op->ch.id);

    return ngx_foko_chat_messages_run(task, ngx_foko_chat_messages_read_run,
                                      ngx_foko_chat_messages_read_done,
                                      handle);
}


/*
 * A page of history in seq order: the newest, the one below "before", or
 * the one after "after"; from the shared zone's ring when it has it.
 */

ngx_int_t
ngx_foko_chat_message_page(ngx_foko_chat_op_in_t *in, void **handle)
{
    json_t                   *page;
    ngx_int_t                 rc;
    ngx_uint_t                more;
    ngx_foko_chat_task_t     *task;
    ngx_foko_chat_answer_t    a;
    ngx_foko_chat_msg_op_t   *op;
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ngx_foko_chat_messages_conf()->shm_zone->data;

    task = ngx_foko_chat_messages_op(in);
    if (task == NULL) {
        return NGX_ERROR;
    }

    op = task->data;

    if (!op->ch.id[0]) {
        return ngx_foko_chat_messages_fail(task, NGX_FOKO_CHAT_E_NO_CHANNEL,
                                           NULL, NULL);
    }

    op->before = in->before;
    op->after = in->after;
    op->limit = in->limit;

    /* MongoDB may have N + 1 before N: history stops before a hole */
    op->upto = (in->upto >= 0) ? in->upto
                               : ngx_foko_chat_seq_through(shm, op->ch.id);

    rc = ngx_foko_chat_messages_member(shm, op);

    if (rc == NGX_DECLINED) {
        return ngx_foko_chat_messages_fail(task, NGX_FOKO_CHAT_E_NO_CHANNEL,
                                           NULL, NULL);
    }

    if (rc == NGX_OK
        && ngx_foko_chat_cache_page(shm, op->ch.id, op->before, op->after,
                                    op->limit, &page, &more)
           == NGX_OK)
    {
        if (json_array_size(page) == 0 && op->after >= 0
            && op->after < in->upto)
        {
            /*
             * The caller knows of messages up to "upto" that the ring
             * does not hold (a replay past a hole, after a worker died
             * with seqs it had handed out): MongoDB has them.
             */
            json_decref(page);
            goto stored;
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_foko_chat_op_log(op), 0,
                       "foko chat: page of %s from the ring, %uz messages",
                       op->ch.id, json_array_size(page));

        ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));
        a.status = NGX_HTTP_OK;
        a.error = NGX_FOKO_CHAT_E_NONE;
        a.page = page;
        a.more = more;

        ngx_foko_chat_messages_reply(op, &a);

        json_decref(page);
        ngx_foko_chat_messages_release(op);
        ngx_foko_chat_task_free(task);

        return NGX_OK;
    }

stored:

    return ngx_foko_chat_messages_run(task, ngx_foko_chat_messages_list_run,
                                      ngx_foko_chat_messages_list_done,
                                      handle);
}


void
ngx_foko_chat_messages_cancel(void *handle)
{
    ngx_foko_chat_target_t  *t = handle;

    t->handler = NULL;
    t->log = ngx_cycle->log;
}


/* an operation's task with its inputs copied in, and its target */

ngx_foko_chat_task_t *
ngx_foko_chat_messages_op(ngx_foko_chat_op_in_t *in)
{
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_target_t     *t;
    ngx_foko_chat_msg_op_t     *op;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_foko_chat_messages_conf();

    t = ngx_alloc(sizeof(ngx_foko_chat_target_t), in->log);
    if (t == NULL) {
        return NULL;
    }

    /* the task outlives the caller, and the caller's log */
    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_msg_op_t),
                                     ngx_cycle->log);
    if (task == NULL) {
        ngx_free(t);
        return NULL;
    }

    t->handler = in->handler;
    t->data = in->data;
    t->log = in->log;

    op = task->data;
    op->target = t;
    op->ring_size = fmcf->history_cache;
    op->cache_gen = ngx_foko_chat_cache_gen(fmcf->shm_zone->data);

    /* the user's id need not end with a NUL: 24 hex digits are taken */
    ngx_cpystrn(op->user, in->user, sizeof(op->user));

    if (in->username) {
        ngx_cpystrn(op->username, in->username, sizeof(op->username));
    }

    if (ngx_foko_chat_is_id(&in->channel)) {
        ngx_memcpy(op->ch.id, in->channel.data, NGX_FOKO_CHAT_OID_LEN);
    }

    if (ngx_foko_chat_is_id(&in->message)) {
        ngx_memcpy(op->mid, in->message.data, NGX_FOKO_CHAT_OID_LEN);
    }

    return task;
}


/*
 * The one membership rule: NGX_OK for a member and NGX_DECLINED for
 * anybody else when the shared zone caches the channel; NGX_AGAIN when
 * only MongoDB knows (the thread side asks it with find_mine).
 */

ngx_int_t
ngx_foko_chat_messages_member(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_msg_op_t *op)
{
    ngx_uint_t  member;

    if (ngx_foko_chat_cache_member(shm, op->ch.id, op->user, &member)
        != NGX_OK)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_foko_chat_op_log(op), 0,
                       "foko chat: channel %s not cached: ask MongoDB",
                       op->ch.id);
        return NGX_AGAIN;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_foko_chat_op_log(op), 0,
                   "foko chat: %s is %sa member of %s", op->user,
                   member ? "" : "not ", op->ch.id);

    if (!member) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_messages_run(ngx_foko_chat_task_t *task,
    ngx_foko_chat_msg_run_pt run, ngx_foko_chat_task_done_pt done,
    void **handle)
{
    ngx_foko_chat_msg_op_t     *op;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_foko_chat_messages_conf();
    op = task->data;

    op->run = run;
    task->run = ngx_foko_chat_messages_thread;
    task->done = done;

    if (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool) != NGX_OK) {
        ngx_foko_chat_stat_reject(OVERLOADED);
        return ngx_foko_chat_messages_fail(task, NGX_FOKO_CHAT_E_OVERLOADED,
                                           NULL, NULL);
    }

    ngx_foko_chat_messages_conn.fd = (ngx_socket_t) -1;

    op->since = ngx_current_msec;
    op->watch.handler = ngx_foko_chat_messages_watch;
    op->watch.data = &ngx_foko_chat_messages_conn;
    op->watch.log = ngx_cycle->log;
    op->watch.cancelable = 1;
    ngx_add_timer(&op->watch, NGX_FOKO_CHAT_WATCH_EVERY);

    *handle = op->target;

    return NGX_DONE;
}


static void
ngx_foko_chat_messages_watch(ngx_event_t *ev)
{
    ngx_foko_chat_answer_t    a;
    ngx_foko_chat_msg_op_t   *op;
    ngx_foko_chat_shm_ctx_t  *shm;

    op = (ngx_foko_chat_msg_op_t *)
             ((u_char *) ev - offsetof(ngx_foko_chat_msg_op_t, watch));

    if (op->target == NULL) {
        return;
    }

    shm = ngx_foko_chat_messages_conf()->shm_zone->data;

    if (ngx_current_msec - op->since < NGX_FOKO_CHAT_WATCH_AFTER
        || shm->sh->mongo_state != NGX_FOKO_CHAT_MONGO_DOWN)
    {
        ngx_add_timer(ev, NGX_FOKO_CHAT_WATCH_EVERY);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, op->target->log, 0,
                  "foko chat: MongoDB is down, the call is answered 503 "
                  "after %M ms", ngx_current_msec - op->since);

    ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));
    a.error = NGX_FOKO_CHAT_E_STORAGE;

    ngx_foko_chat_messages_reply(op, &a);
}


/* answered with an error before the task ran; frees the task */

ngx_int_t
ngx_foko_chat_messages_fail(ngx_foko_chat_task_t *task,
    ngx_foko_chat_err_e e, const char *field, const char *problem)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    ngx_foko_chat_answer_t  a;

    ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));
    a.error = e;
    a.field = field;
    a.problem = problem;

    ngx_foko_chat_messages_reply(op, &a);

    ngx_foko_chat_messages_release(op);
    ngx_foko_chat_task_free(task);

    return NGX_OK;
}


/*
 * What every completion checks first: 0 to go on, or 1 when the task
 * failed, MongoDB did, or the caller is not a member, and that was
 * answered.
 */

ngx_uint_t
ngx_foko_chat_messages_failed(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    ngx_foko_chat_answer_t  a;

    if (op->watch.timer_set) {
        ngx_del_timer(&op->watch);
    }

    ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));

    if (task->failed) {
        a.error = NGX_FOKO_CHAT_E_OVERLOADED;

    } else if (op->rc == NGX_ERROR) {
        if (op->err[0]) {
            ngx_log_error(NGX_LOG_ERR, ngx_foko_chat_op_log(op), 0,
                          "foko chat: %s", op->err);
        }

        a.error = NGX_FOKO_CHAT_E_STORAGE;

    } else if (op->found == NGX_DECLINED) {
        a.error = NGX_FOKO_CHAT_E_NO_CHANNEL;

    } else {
        return 0;
    }

    ngx_foko_chat_messages_reply(op, &a);
    ngx_foko_chat_messages_release(op);

    return 1;
}


void
ngx_foko_chat_messages_reply(ngx_foko_chat_msg_op_t *op,
    ngx_foko_chat_answer_t *a)
{
    if (op->target) {
        ngx_foko_chat_target_answer(op->target, a);
        op->target = NULL;
    }
}


ngx_int_t
ngx_foko_chat_messages_reply_message(ngx_foko_chat_msg_op_t *op,
    ngx_uint_t status, json_t *message)
{
    ngx_foko_chat_answer_t  a;

    ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));
    a.status = status;
    a.error = NGX_FOKO_CHAT_E_NONE;
    a.message = message;

    ngx_foko_chat_messages_reply(op, &a);

    return NGX_OK;
}


void
ngx_foko_chat_messages_thread(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    op->rc = NGX_OK;
    op->found = NGX_OK;

    op->run(op);
}


void
ngx_foko_chat_messages_release(ngx_foko_chat_msg_op_t *op)
{
    free(op->text);
    op->text = NULL;

    ngx_foko_chat_store_channel_doc_free(&op->ch);

    json_decref(op->result);
    op->result = NULL;

    json_decref(op->latest);
    op->latest = NULL;
}


/* NULL, what is wrong with the text, or NGX_FOKO_CHAT_TEXT_TOO_LONG */

const char *
ngx_foko_chat_messages_text(ngx_foko_chat_main_conf_t *fmcf, json_t *body,
    ngx_foko_chat_msg_op_t *op)
{
    u_char      *p, *end;
    ngx_str_t    text;
    const char  *problem;
    ngx_uint_t   blank;

    problem = ngx_foko_chat_json_string(body, "text", 1,
                                        NGX_FOKO_CHAT_API_MAX_BODY, 1,
                                        &text);
    if (problem) {
        return problem;
    }

    if (text.len > fmcf->max_message_size) {
        return NGX_FOKO_CHAT_TEXT_TOO_LONG;
    }

    end = text.data + text.len;
    blank = 1;

    for (p = text.data; p < end; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n') {
            blank = 0;
            break;
        }
    }

    if (blank) {
        return "must not be empty";
    }

    op->text = malloc(text.len + 1);
    if (op->text == NULL) {
        return "cannot be stored";
    }

    ngx_memcpy(op->text, text.data, text.len);
    op->text[text.len] = '\0';

    return NULL;
}


/* thread side: the channel of the path, if the caller is in it */

ngx_uint_t
ngx_foko_chat_messages_find_mine(ngx_foko_chat_msg_op_t *op)
{
    ngx_int_t  rc;

    rc = ngx_foko_chat_store_channel_find(&op->ch, op->err);

    if (rc == NGX_ERROR) {
        op->rc = NGX_ERROR;
        return 0;
    }

    if (rc != NGX_OK || !ngx_foko_chat_channel_has(&op->ch, op->user)) {
        op->found = NGX_DECLINED;
        return 0;
    }

    return 1;
}


static void
ngx_foko_chat_messages_list_run(ngx_foko_chat_msg_op_t *op)
{
    if (!ngx_foko_chat_messages_find_mine(op)) {
        return;
    }

    ngx_foko_chat_messages_load(op);

    if (ngx_foko_chat_store_messages_page(op->ch.id, op->before, op->after,
                                          op->upto, op->limit, &op->result,
                                          &op->more, op->err)
        != NGX_OK)
    {
        op->rc = NGX_ERROR;
    }
}


static void
ngx_foko_chat_messages_update_run(ngx_foko_chat_msg_op_t *op)
{
    ngx_int_t  rc;

    if (!ngx_foko_chat_messages_find_mine(op)) {
        return;
    }

    rc = ngx_foko_chat_store_message_update(op->ch.id, op->mid, op->user,
                                            op->remove ? NULL : op->text,
                                            &op->result, op->err);
    if (rc == NGX_ERROR) {
        op->rc = NGX_ERROR;

    } else if (rc != NGX_OK) {
        op->found = NGX_ABORT;
    }
}


static void
ngx_foko_chat_messages_read_run(ngx_foko_chat_msg_op_t *op)
{
    if (!op->member && !ngx_foko_chat_messages_find_mine(op)) {
        return;
    }

    if (ngx_foko_chat_messages_read_store(op->ch.id, op->user, &op->seq,
                                          op->last, op->err)
        != NGX_OK)
    {
        op->rc = NGX_ERROR;
    }
}


static ngx_int_t
ngx_foko_chat_messages_read_store(u_char *channel, u_char *user,
    int64_t *seq, int64_t last, u_char *err)
{
    if (last < 0
        && *seq > 0
        && ngx_foko_chat_store_messages_max_seq(channel, &last, err)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (last >= 0 && *seq > last) {
        *seq = last;
    }

    return ngx_foko_chat_store_read_set(channel, user, *seq, err);
}


static ngx_int_t
ngx_foko_chat_messages_list_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    ngx_foko_chat_answer_t  a;

    if (ngx_foko_chat_messages_failed(task)) {
        return NGX_OK;
    }

    ngx_foko_chat_messages_cache(op);

    ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));
    a.status = NGX_HTTP_OK;
    a.error = NGX_FOKO_CHAT_E_NONE;
    a.page = op->result;
    a.more = op->more;

    ngx_foko_chat_messages_reply(op, &a);
    ngx_foko_chat_messages_release(op);

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_messages_update_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    ngx_foko_chat_answer_t    a;
    ngx_foko_chat_shm_ctx_t  *shm;

    if (ngx_foko_chat_messages_failed(task)) {
        return NGX_OK;
    }

    if (op->found == NGX_ABORT) {
        /* no such message, not the caller's, or deleted already */
        ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));
        a.error = NGX_FOKO_CHAT_E_NOT_YOURS;
        ngx_foko_chat_messages_reply(op, &a);
        ngx_foko_chat_messages_release(op);
        return NGX_OK;
    }

    shm = ngx_foko_chat_messages_conf()->shm_zone->data;

    (void) ngx_foko_chat_event_stored(shm, op->result, NULL,
                                      op->remove
                                      ? NGX_FOKO_CHAT_STORED_DELETED
                                      : NGX_FOKO_CHAT_STORED_UPDATED);

    (void) ngx_foko_chat_messages_reply_message(op, NGX_HTTP_OK,
                                                op->result);
    ngx_foko_chat_messages_release(op);

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_messages_read_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    ngx_foko_chat_answer_t  a;

    if (ngx_foko_chat_messages_failed(task)) {
        return NGX_OK;
    }

    /* stored: the members hear of it, also if the reader went away */
    ngx_foko_chat_users_read(ngx_foko_chat_messages_conf()->shm_zone->data,
                             op->user, op->ch.id, op->seq);
    ngx_foko_chat_event_read(op->ch.id, op->user, op->seq);

    ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));
    a.status = NGX_HTTP_OK;
    a.error = NGX_FOKO_CHAT_E_NONE;
    a.channel = op->ch.id;
    a.seq = op->seq;

    ngx_foko_chat_messages_reply(op, &a);
    ngx_foko_chat_messages_release(op);

    return NGX_OK;
}


void
ngx_foko_chat_messages_cache(ngx_foko_chat_msg_op_t *op)
{
    if (!op->loaded) {
        return;
    }

    (void) ngx_foko_chat_cache_put_channel(
               ngx_foko_chat_messages_conf()->shm_zone->data, &op->ch, NULL,
               op->latest, op->ring_size, op->cache_gen);
}


/* thread side: what the channel cache needs besides the channel itself */

void
ngx_foko_chat_messages_load(ngx_foko_chat_msg_op_t *op)
{
    ngx_uint_t  more;

    if (op->ring_size
        && ngx_foko_chat_store_messages_page(op->ch.id, 0, -1, -1,
                                             op->ring_size, &op->latest,
                                             &more, op->err)
           != NGX_OK)
    {
        /* the cache stays empty; the request goes on */
        op->err[0] = '\0';
        return;
    }

    op->loaded = 1;
}


