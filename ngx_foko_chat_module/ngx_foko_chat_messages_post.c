
/*
 * Foko chat: posting a message.
 *
 * The text and client_id are checked, then the write queue's bound, then
 * the caller's membership: the channel cache when it holds the channel,
 * else MongoDB on the thread pool, one load per channel for all the posts
 * that wait for it.  The post takes the channel's next seq from the
 * shared zone (with several hosts, the writer numbers it) and goes to the
 * group-commit writer
 * (ngx_foko_chat_writer.c), which answers it once MongoDB has stored it.
 * Past foko_chat_write_queue waiting posts, new ones get 503 before a seq
 * is spent on them.
 */


#include "ngx_foko_chat_messages_int.h"
#include "ngx_foko_chat_messages_idem.h"
#include "ngx_foko_chat_cache.h"
#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_gaps.h"
#include "ngx_foko_chat_redis.h"
#include "ngx_foko_chat_status.h"


/*
 * A channel this worker is loading from MongoDB for a post.  Other posts
 * to it wait here for that load instead of each loading it again; then
 * they go on as posts to a cached channel.
 */

typedef struct {
    ngx_queue_t                    queue;
    u_char                         id[NGX_FOKO_CHAT_OID_LEN];
    ngx_queue_t                    waiters;     /* of tasks, by task->queue */
} ngx_foko_chat_load_t;


static ngx_int_t ngx_foko_chat_messages_take(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_msg_op_t *op, json_t **message);
static ngx_int_t ngx_foko_chat_messages_posted(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_messages_prepare_run(ngx_foko_chat_msg_op_t *op);
static ngx_uint_t ngx_foko_chat_messages_here(ngx_foko_chat_msg_op_t *op,
    json_t *message);
static json_t *ngx_foko_chat_messages_new(ngx_foko_chat_msg_op_t *op,
    int64_t seq);
static ngx_uint_t ngx_foko_chat_messages_wait(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_messages_loaded(u_char *channel);


static ngx_queue_t  ngx_foko_chat_loads;
static ngx_uint_t   ngx_foko_chat_loads_started;
static ngx_uint_t   ngx_foko_chat_loads_waited;


ngx_int_t
ngx_foko_chat_messages_init_process(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_foko_chat_loads);

    if (ngx_foko_chat_writer_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_foko_chat_gaps_init_process(cycle);
}


/* post {text, client_id?}: answered once MongoDB has stored it */

ngx_int_t
ngx_foko_chat_message_post(ngx_foko_chat_op_in_t *in, void **handle)
{
    json_t                     *v;
    ngx_str_t                   id;
    ngx_int_t                   rc;
    const char                 *problem;
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_msg_op_t     *op;
    ngx_foko_chat_target_t     *target;
    ngx_foko_chat_shm_ctx_t    *shm;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_foko_chat_messages_conf();
    shm = fmcf->shm_zone->data;

    task = ngx_foko_chat_messages_op(in);
    if (task == NULL) {
        return NGX_ERROR;
    }

    op = task->data;

    problem = ngx_foko_chat_messages_text(fmcf, in->body, op);

    if (problem == NGX_FOKO_CHAT_TEXT_TOO_LONG) {
        ngx_foko_chat_stat_reject(TOO_LARGE);
        return ngx_foko_chat_messages_fail(task, NGX_FOKO_CHAT_E_TOO_LONG,
                                           NULL, NULL);
    }

    if (problem) {
        ngx_foko_chat_stat_reject(INVALID);
        return ngx_foko_chat_messages_fail(task, NGX_FOKO_CHAT_E_INVALID,
                                           "text", problem);
    }

    v = json_object_get(in->body, "client_id");

    if (v && !json_is_null(v)) {
        problem = ngx_foko_chat_json_string(in->body, "client_id", 1,
                                            NGX_FOKO_CHAT_CLIENT_ID_MAX, 0,
                                            &id);
        if (problem) {
            ngx_foko_chat_stat_reject(INVALID);
            return ngx_foko_chat_messages_fail(task,
                                               NGX_FOKO_CHAT_E_INVALID,
                                               "client_id", problem);
        }

        ngx_memcpy(op->client_id, id.data, id.len);
    }

    /* a retry of a queued or stored post adds nothing to the queue */

    if (ngx_foko_chat_writer_load() >= fmcf->write_queue
        && !(op->client_id[0] && op->ch.id[0]
             && ngx_foko_chat_idem_known(shm, op->ch.id, op->user,
                                         op->client_id)))
    {
        ngx_foko_chat_stat_reject(QUEUE_FULL);
        return ngx_foko_chat_messages_fail(task, NGX_FOKO_CHAT_E_QUEUE_FULL,
                                           NULL, NULL);
    }

    if (!op->ch.id[0]) {
        return ngx_foko_chat_messages_fail(task, NGX_FOKO_CHAT_E_NO_CHANNEL,
                                           NULL, NULL);
    }

    op->load_seq = ngx_foko_chat_seq_last(shm, op->ch.id) < 0;

    if (!op->load_seq) {
        rc = ngx_foko_chat_messages_member(shm, op);

        if (rc != NGX_AGAIN) {
            /* a cached channel: no MongoDB round trip before the write */

            if (rc == NGX_DECLINED) {
                ngx_foko_chat_stat_reject(NOT_MEMBER);
            }

            op->found = (rc == NGX_OK) ? NGX_OK : NGX_DECLINED;

            /* queued, the writer owns the target, and enqueue forgets it */
            target = op->target;

            rc = ngx_foko_chat_messages_enqueue(shm, op);

            if (rc == NGX_DONE) {
                *handle = target;
            }

            op->target = NULL;
            ngx_foko_chat_messages_release(op);
            ngx_foko_chat_task_free(task);

            return rc;
        }
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_foko_chat_op_log(op), 0,
                   "foko chat: post to %s loads the channel%s", op->ch.id,
                   op->load_seq ? " and its seq" : "");

    op->run = ngx_foko_chat_messages_prepare_run;
    task->run = ngx_foko_chat_messages_thread;
    task->done = ngx_foko_chat_messages_posted;

    if (ngx_foko_chat_messages_wait(task)) {
        ngx_foko_chat_writer_preparing(1);
        *handle = op->target;
        return NGX_DONE;
    }

    if (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool) != NGX_OK) {
        ngx_foko_chat_messages_loaded(op->ch.id);
        ngx_foko_chat_stat_reject(OVERLOADED);
        return ngx_foko_chat_messages_fail(task, NGX_FOKO_CHAT_E_OVERLOADED,
                                           NULL, NULL);
    }

    /* counted against the write queue from now on */
    ngx_foko_chat_writer_preparing(1);

    *handle = op->target;

    return NGX_DONE;
}


/*
 * The post of a member enters the write queue with the channel's next
 * seq, unless its client_id made a message already (a retry): then that
 * message is the answer; or waits for the post of its client_id that is
 * still pending (a double submit).
 */

ngx_int_t
ngx_foko_chat_messages_enqueue(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_msg_op_t *op)
{
    json_t                  *message;
    ngx_int_t                rc;
    ngx_foko_chat_answer_t   a;

    ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));

    if (op->found != NGX_OK) {
        a.error = NGX_FOKO_CHAT_E_NO_CHANNEL;
        ngx_foko_chat_messages_reply(op, &a);
        return NGX_OK;
    }

    rc = ngx_foko_chat_messages_take(shm, op, &message);

    if (rc == NGX_BUSY) {
        return ngx_foko_chat_messages_idem_wait(op);
    }

    if (rc == NGX_DECLINED) {
        a.error = NGX_FOKO_CHAT_E_CLIENT_ID_REUSED;
        ngx_foko_chat_messages_reply(op, &a);
        return NGX_OK;
    }

    if (rc == NGX_OK) {
        /* the same client_id again: the message it made, not another */
        (void) ngx_foko_chat_messages_reply_message(op, NGX_HTTP_OK,
                                                    message);
        json_decref(message);
        return NGX_OK;
    }

    if (rc == NGX_ERROR
        || ngx_foko_chat_writer_add(op->target, message) != NGX_OK)
    {
        if (rc != NGX_ERROR) {
            json_decref(message);
        }

        if (op->client_id[0]) {
            ngx_foko_chat_idem_settle(shm, (char *) op->ch.id,
                                      (char *) op->user,
                                      (char *) op->client_id, NULL);
        }

        a.error = NGX_FOKO_CHAT_E_NOT_TAKEN;
        ngx_foko_chat_messages_reply(op, &a);
        return NGX_OK;
    }

    /* the writer answers the target */
    op->target = NULL;

    return NGX_DONE;
}


/* the channel is known now: the post goes on as for a cached channel */

static ngx_int_t
ngx_foko_chat_messages_posted(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    ngx_foko_chat_err_e       e;
    ngx_foko_chat_answer_t    a;
    ngx_foko_chat_shm_ctx_t  *shm;

    ngx_foko_chat_writer_preparing(-1);

    shm = ngx_foko_chat_messages_conf()->shm_zone->data;

    if (task->failed || op->rc == NGX_ERROR || op->found != NGX_OK) {
        if (!op->waited) {
            /* the waiters try for themselves */
            ngx_foko_chat_messages_loaded(op->ch.id);
        }

        (void) ngx_foko_chat_messages_failed(task);
        return NGX_OK;
    }

    ngx_foko_chat_messages_cache(op);

    if (op->load_seq && op->result == NULL
        && ngx_foko_chat_seq_load(shm, op->ch.id, op->stored_seq) != NGX_OK)
    {
        ngx_foko_chat_messages_loaded(op->ch.id);
        e = NGX_FOKO_CHAT_E_NOT_TAKEN;
        goto failed;
    }

    if (!op->waited) {
        ngx_foko_chat_messages_loaded(op->ch.id);
    }

    if (op->result && !ngx_foko_chat_messages_here(op, op->result)) {
        e = NGX_FOKO_CHAT_E_CLIENT_ID_REUSED;
        goto failed;
    }

    if (op->result) {
        /* the same client_id again, found in MongoDB */
        (void) ngx_foko_chat_messages_reply_message(op, NGX_HTTP_OK,
                                                    op->result);

    } else {
        (void) ngx_foko_chat_messages_enqueue(shm, op);
    }

    ngx_foko_chat_messages_release(op);

    return NGX_OK;

failed:

    /* the task is freed by whoever called: answered, not failed */

    ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));
    a.error = e;
    ngx_foko_chat_messages_reply(op, &a);
    ngx_foko_chat_messages_release(op);

    return NGX_OK;
}


/*
 * The member's post with the channel's next seq (NGX_DONE: to be written),
 * or the message its client_id made already (NGX_OK), or NGX_BUSY: the
 * post of its client_id is pending.
 *
 * The claim comes before the look into the ring: the writer puts a
 * message into the ring before it settles the claim, so a repeat that
 * claims after the settling finds the message in the ring.
 */

static ngx_int_t
ngx_foko_chat_messages_take(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_msg_op_t *op, json_t **message)
{
    int64_t    seq;
    ngx_int_t  rc;

    if (op->client_id[0]) {
        rc = ngx_foko_chat_idem_claim(shm, op->ch.id, op->user,
                                      op->client_id, message);

        if (rc != NGX_DONE) {
            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_foko_chat_op_log(op), 0,
                           "foko chat: client_id \"%s\" again, %s",
                           op->client_id,
                           rc == NGX_OK ? "stored"
                           : rc == NGX_BUSY ? "pending"
                           : "in another channel");
            return rc;
        }

        *message = ngx_foko_chat_cache_find_client_id(shm, op->ch.id,
                                                      op->user,
                                                      op->client_id);
        if (*message) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_foko_chat_op_log(op), 0,
                           "foko chat: client_id \"%s\" again, from the ring",
                           op->client_id);
            ngx_foko_chat_idem_settle(shm, (char *) op->ch.id,
                                      (char *) op->user,
                                      (char *) op->client_id, NULL);
            return NGX_OK;
        }
    }

    if (ngx_foko_chat_redis_on()) {
        /* the writer numbers it with every host's posts */
        seq = 0;

    } else if (ngx_foko_chat_seq_next(shm, op->ch.id, &seq) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ngx_foko_chat_op_log(op), 0,
                      "foko chat: no seq counter for channel %s",
                      op->ch.id);
        return NGX_ERROR;

    } else {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_foko_chat_op_log(op), 0,
                       "foko chat: post to %s takes seq %L", op->ch.id, seq);
    }

    *message = ngx_foko_chat_messages_new(op, seq);
    if (*message == NULL) {
        return NGX_ERROR;
    }

    return NGX_DONE;
}


static void
ngx_foko_chat_messages_prepare_run(ngx_foko_chat_msg_op_t *op)
{
    ngx_int_t  rc;

    if (!ngx_foko_chat_messages_find_mine(op)) {
        return;
    }

    ngx_foko_chat_messages_load(op);

    if (op->client_id[0]) {
        rc = ngx_foko_chat_store_message_by_client_id(op->user,
                                                      op->client_id,
                                                      &op->result, op->err);
        if (rc == NGX_ERROR) {
            op->rc = NGX_ERROR;
            return;
        }

        if (rc == NGX_OK) {
            return;
        }
    }

    if (op->load_seq
        && ngx_foko_chat_store_messages_max_seq(op->ch.id, &op->stored_seq,
                                                op->err)
           != NGX_OK)
    {
        op->rc = NGX_ERROR;
    }
}


/* the message of the post's client_id is in the post's channel */

static ngx_uint_t
ngx_foko_chat_messages_here(ngx_foko_chat_msg_op_t *op, json_t *message)
{
    const char  *channel;

    channel = json_string_value(json_object_get(message, "channel_id"));

    return channel && ngx_strcmp(channel, op->ch.id) == 0;
}


/* a new message in the API's shape, with a fresh ObjectId */

static json_t *
ngx_foko_chat_messages_new(ngx_foko_chat_msg_op_t *op, int64_t seq)
{
    char     id[NGX_FOKO_CHAT_OID_SIZE];
    u_char   created[NGX_FOKO_CHAT_ISO_SIZE];
    json_t  *m;

    ngx_foko_chat_store_new_id((u_char *) id);
    ngx_foko_chat_store_iso_now(created);

    m = json_pack("{s:s,s:s,s:I,s:{s:s,s:s},s:s,s:s}",
                  "id", id,
                  "channel_id", (char *) op->ch.id,
                  "seq", (json_int_t) seq,
                  "author", "id", (char *) op->user,
                           "username", (char *) op->username,
                  "text", (char *) op->text,
                  "created_at", (char *) created);

    if (m && op->client_id[0]
        && json_object_set_new(m, "client_id",
                               json_string((char *) op->client_id))
           != 0)
    {
        json_decref(m);
        return NULL;
    }

    return m;
}


/*
 * A post to a channel that is not cached: if this worker is loading the
 * channel already, the post waits for that load (1); else its own task
 * loads it and the post is recorded as the loader (0).
 */

static ngx_uint_t
ngx_foko_chat_messages_wait(ngx_foko_chat_task_t *task)
{
    ngx_queue_t             *q;
    ngx_foko_chat_load_t    *load;
    ngx_foko_chat_msg_op_t  *op = task->data;

    for (q = ngx_queue_head(&ngx_foko_chat_loads);
         q != ngx_queue_sentinel(&ngx_foko_chat_loads);
         q = ngx_queue_next(q))
    {
        load = ngx_queue_data(q, ngx_foko_chat_load_t, queue);

        if (ngx_memcmp(load->id, op->ch.id, NGX_FOKO_CHAT_OID_LEN) != 0) {
            continue;
        }

        ngx_queue_insert_tail(&load->waiters, &task->queue);
        ngx_foko_chat_loads_waited++;

        return 1;
    }

    load = ngx_alloc(sizeof(ngx_foko_chat_load_t), ngx_cycle->log);

    if (load) {
        ngx_memcpy(load->id, op->ch.id, NGX_FOKO_CHAT_OID_LEN);
        ngx_queue_init(&load->waiters);
        ngx_queue_insert_tail(&ngx_foko_chat_loads, &load->queue);
        ngx_foko_chat_loads_started++;
    }

    return 0;
}


/*
 * The load of a channel is over: each post that waited for it goes on as
 * a post to a cached channel, or loads the channel itself if it is still
 * not cached (the load failed, or a change made it stale).
 */

static void
ngx_foko_chat_messages_loaded(u_char *channel)
{
    ngx_int_t                   rc;
    ngx_queue_t                *q, waiters;
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_load_t       *load;
    ngx_foko_chat_msg_op_t     *op;
    ngx_foko_chat_shm_ctx_t    *shm;
    ngx_foko_chat_main_conf_t  *fmcf;

    load = NULL;

    for (q = ngx_queue_head(&ngx_foko_chat_loads);
         q != ngx_queue_sentinel(&ngx_foko_chat_loads);
         q = ngx_queue_next(q))
    {
        load = ngx_queue_data(q, ngx_foko_chat_load_t, queue);

        if (ngx_memcmp(load->id, channel, NGX_FOKO_CHAT_OID_LEN) == 0) {
            break;
        }

        load = NULL;
    }

    if (load == NULL) {
        return;
    }

    ngx_queue_remove(&load->queue);

    /* the list moves out: posts may start another load of the channel */

    ngx_queue_init(&waiters);

    if (!ngx_queue_empty(&load->waiters)) {
        waiters = load->waiters;
        waiters.next->prev = &waiters;
        waiters.prev->next = &waiters;
    }

    ngx_free(load);

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);
    shm = fmcf->shm_zone->data;

    while (!ngx_queue_empty(&waiters)) {
        q = ngx_queue_head(&waiters);
        ngx_queue_remove(q);

        task = ngx_queue_data(q, ngx_foko_chat_task_t, queue);
        op = task->data;

        ngx_foko_chat_writer_preparing(-1);

        rc = (ngx_foko_chat_seq_last(shm, op->ch.id) >= 0)
             ? ngx_foko_chat_messages_member(shm, op) : NGX_AGAIN;

        if (rc != NGX_AGAIN) {
            /* as if the task had run: the cache answers */
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, task->log, 0,
                           "foko chat: post waited for the load of %s",
                           op->ch.id);

            op->waited = 1;
            op->load_seq = 0;
            op->found = (rc == NGX_OK) ? NGX_OK : NGX_DECLINED;
            op->rc = NGX_OK;

            ngx_foko_chat_writer_preparing(1);
            (void) ngx_foko_chat_messages_posted(task);
            ngx_foko_chat_task_free(task);
            continue;
        }

        /* not cached after all: this post loads it */

        if (ngx_foko_chat_messages_wait(task)) {
            /* another waiter became the loader just now */
            ngx_foko_chat_writer_preparing(1);
            continue;
        }

        rc = (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool)
              == NGX_OK) ? NGX_OK : NGX_ERROR;

        if (rc == NGX_OK) {
            ngx_foko_chat_writer_preparing(1);
            continue;
        }

        /* the pool is full: answered as a failed task */
        ngx_foko_chat_writer_preparing(1);
        ngx_foko_chat_task_fail(task);
    }
}


void
ngx_foko_chat_messages_stats(ngx_uint_t *queued, ngx_uint_t *loads,
    ngx_uint_t *waited)
{
    *queued = ngx_foko_chat_writer_queued();
    *loads = ngx_foko_chat_loads_started;
    *waited = ngx_foko_chat_loads_waited;
}
