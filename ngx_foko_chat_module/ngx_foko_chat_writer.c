
/*
 * Foko chat: the group-commit writer of posted messages.
 *
 * A post gets its seq from the channel's counter in the shared zone
 * before it gets here, then waits in this worker's write queue.  With
 * several hosts (Redis) it comes without one, and the writer numbers the
 * posts of a batch together with every host's, in one call to Redis, just
 * before it writes them; if Redis does not answer, from the zone.  One batch
 * at a time goes to MongoDB in a single round trip (group commit); when
 * MongoDB has acknowledged it, each message becomes an event and every
 * post of the batch is answered.  A failed batch goes back to the head of
 * the queue and is retried with backoff, so the batches of a worker
 * complete in seq order and nothing acknowledged is ever lost.
 *
 * A worker that shuts down (a reload, a stop) writes its queue out first,
 * for NGX_FOKO_CHAT_EXIT_WAIT at most: then what MongoDB has not taken
 * gets one last try, and if that fails too, its posts are answered 503
 * and dropped (none was acknowledged; a retry with the same client_id
 * gets the message if the last try stored it after all, or makes it).
 */


#include "ngx_foko_chat_writer.h"
#include "ngx_foko_chat_event.h"
#include "ngx_foko_chat_messages_idem.h"
#include "ngx_foko_chat_redis.h"
#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_status.h"
#include "ngx_foko_chat_store.h"
#include "ngx_foko_chat_task.h"


#define NGX_FOKO_CHAT_RETRY_MIN   100
#define NGX_FOKO_CHAT_RETRY_MAX   5000
#define NGX_FOKO_CHAT_HOLD        1000      /* a tick while posts wait */
#define NGX_FOKO_CHAT_EXIT_HOLD   250       /* the tick while exiting */
#define NGX_FOKO_CHAT_EXIT_WAIT   4000      /* to write the queue at exit */
#define NGX_FOKO_CHAT_EXIT_RETRY  500       /* the backoff while exiting */
#define NGX_FOKO_CHAT_NUMBER_OFF  1000      /* ms from the zone, Redis failed */

#define NGX_FOKO_CHAT_SEQ_TAKEN   NGX_HTTP_CONFLICT  /* status: again */
#define NGX_FOKO_CHAT_REUSED      422                /* status: elsewhere */
/*
 * How often a post may find its seq taken before it is answered as a
 * collision.  With Redis away, hosts posting into one channel number from
 * their own zones and keep overtaking each other: 8 was seen exhausted
 * there (t/095, "Redis paused 5 s", the sanitizer build).
 */
#define NGX_FOKO_CHAT_SEQ_TRIES   32


/* a post waiting for its batch */

typedef struct {
    ngx_queue_t                    queue;
    json_t                        *message;
    ngx_foko_chat_target_t        *target;       /* NULL: answered 503 */
    ngx_uint_t                     tries;        /* seqs found taken */
    ngx_event_t                    bound;        /* POST_WAIT */
    unsigned                       unnumbered:1; /* no seq yet (Redis) */
} ngx_foko_chat_pending_t;


/* the posts of a batch to be numbered in Redis, by channel */

typedef struct {
    ngx_foko_chat_pending_t      **posts;        /* in queue order */
    ngx_uint_t                    *group;        /* each post's channel */
    ngx_uint_t                     nposts;
    u_char                        *channels;     /* ids, one after another */
    int64_t                       *floors;
    ngx_uint_t                    *counts;
    int64_t                       *firsts;
    ngx_uint_t                     n;
    ngx_int_t                      rc;
    u_char                         err[NGX_FOKO_CHAT_REDIS_ERR_LEN];
} ngx_foko_chat_numbering_t;


typedef struct {
    json_t                       **messages;
    json_t                       **tombs;        /* filling seqs, or NULL */
    ngx_uint_t                    *status;       /* the answer of each */
    int64_t                       *stored;       /* for SEQ_TAKEN */
    ngx_uint_t                     n;
    ngx_int_t                      rc;
    u_char                         err[NGX_FOKO_CHAT_ERR_LEN];
} ngx_foko_chat_batch_t;


typedef struct {
    ngx_queue_t                    waiting;
    ngx_queue_t                    writing;
    ngx_uint_t                     nwaiting;
    ngx_uint_t                     nwriting;
    ngx_event_t                    retry;
    ngx_event_t                    hold;
    ngx_msec_t                     backoff;
    ngx_uint_t                     npreparing;
    ngx_msec_t                     exit_at;      /* the exit was seen */
    ngx_msec_t                     number_off;   /* zone seqs until then */
    unsigned                       busy:1;       /* a batch or numbering */
    unsigned                       failing:1;
    unsigned                       exiting:1;
    unsigned                       given_up:1;   /* EXIT_WAIT is over */
} ngx_foko_chat_writer_t;


static void ngx_foko_chat_writer_kick(void);
static ngx_int_t ngx_foko_chat_writer_number(void);
static void ngx_foko_chat_writer_number_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_writer_number_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_writer_numbered(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_pending_t *p, int64_t seq);
static void ngx_foko_chat_writer_unqueue(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_pending_t *p, ngx_foko_chat_err_e error);
static void ngx_foko_chat_writer_retry(ngx_event_t *ev);
static void ngx_foko_chat_writer_hold(ngx_event_t *ev);
static ngx_uint_t ngx_foko_chat_writer_exit(void);
static void ngx_foko_chat_writer_drop(void);
static void ngx_foko_chat_writer_bound(ngx_event_t *ev);
static void ngx_foko_chat_writer_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_writer_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_writer_failed(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_writer_gap_taken(ngx_foko_chat_batch_t *batch,
    ngx_uint_t i);
static ngx_uint_t ngx_foko_chat_writer_older(ngx_foko_chat_shm_ctx_t *shm,
    json_t *message);
static void ngx_foko_chat_writer_recovered(ngx_foko_chat_batch_t *batch);
static ngx_uint_t ngx_foko_chat_writer_settle(ngx_foko_chat_batch_t *batch,
    ngx_queue_t *done);
static ngx_uint_t ngx_foko_chat_writer_again(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_batch_t *batch, ngx_uint_t i, ngx_foko_chat_pending_t *p);
static ngx_int_t ngx_foko_chat_writer_reseq(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_pending_t *p, int64_t stored);
static void ngx_foko_chat_writer_stored(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_batch_t *batch, ngx_uint_t i, ngx_foko_chat_pending_t *p);
static ngx_uint_t ngx_foko_chat_writer_here(json_t *post, json_t *existing);
static void ngx_foko_chat_writer_settle_idem(ngx_foko_chat_shm_ctx_t *shm,
    json_t *post, char *text);
static void ngx_foko_chat_writer_requeue(ngx_queue_t *again);


static ngx_foko_chat_writer_t  ngx_foko_chat_writer;
static ngx_connection_t        ngx_foko_chat_writer_conn;


ngx_int_t
ngx_foko_chat_writer_init_process(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_foko_chat_writer.waiting);
    ngx_queue_init(&ngx_foko_chat_writer.writing);

    /*
     * Neither timer is cancelable: a worker that is shutting down stays
     * while it holds posts ("hold" is armed whenever the queue is not
     * empty, also while a batch is in its thread), for EXIT_WAIT and a
     * last try at most.
     */

    /* a debug log reads an event's data as a connection: give it one */
    ngx_foko_chat_writer.retry.data = &ngx_foko_chat_writer_conn;
    ngx_foko_chat_writer.hold.data = &ngx_foko_chat_writer_conn;
    ngx_foko_chat_writer_conn.fd = (ngx_socket_t) -1;

    ngx_foko_chat_writer.retry.handler = ngx_foko_chat_writer_retry;
    ngx_foko_chat_writer.retry.log = cycle->log;
    ngx_foko_chat_writer.hold.handler = ngx_foko_chat_writer_hold;
    ngx_foko_chat_writer.hold.log = cycle->log;
    ngx_foko_chat_writer.backoff = NGX_FOKO_CHAT_RETRY_MIN;

    return NGX_OK;
}


ngx_uint_t
ngx_foko_chat_writer_load(void)
{
    return ngx_foko_chat_writer.nwaiting + ngx_foko_chat_writer.nwriting
           + ngx_foko_chat_writer.npreparing;
}


ngx_uint_t
ngx_foko_chat_writer_queued(void)
{
    return ngx_foko_chat_writer.nwaiting + ngx_foko_chat_writer.nwriting;
}


void
ngx_foko_chat_writer_preparing(ngx_int_t delta)
{
    ngx_foko_chat_writer.npreparing += delta;
}


void
ngx_foko_chat_target_answer(ngx_foko_chat_target_t *t,
    ngx_foko_chat_answer_t *a)
{
    if (a->error != NGX_FOKO_CHAT_E_NONE) {
        a->status = ngx_foko_chat_errors[a->error].status;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, t->log, 0,
                   "foko chat: answer %ui%s%s", a->status,
                   t->handler ? "" : ", nobody waits",
                   a->error != NGX_FOKO_CHAT_E_NONE
                   ? ngx_foko_chat_errors[a->error].code : "");

    if (t->handler) {
        t->handler(t->data, a);
    }

    ngx_free(t);
}


ngx_int_t
ngx_foko_chat_writer_add(ngx_foko_chat_target_t *t, json_t *message)
{
    ngx_foko_chat_pending_t  *p;

    p = ngx_calloc(sizeof(ngx_foko_chat_pending_t), ngx_cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p->message = message;
    p->target = t;
    p->unnumbered = (json_integer_value(json_object_get(message, "seq")) == 0);

    p->bound.handler = ngx_foko_chat_writer_bound;
    p->bound.data = &ngx_foko_chat_writer_conn;
    p->bound.log = ngx_cycle->log;
    ngx_add_timer(&p->bound, NGX_FOKO_CHAT_POST_WAIT);

    ngx_queue_insert_tail(&ngx_foko_chat_writer.waiting, &p->queue);
    ngx_foko_chat_writer.nwaiting++;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, t->log, 0,
                   "foko chat: post queued, %ui waiting, batch %s",
                   ngx_foko_chat_writer.nwaiting,
                   ngx_foko_chat_writer.busy ? "in flight" : "idle");

    if (!ngx_foko_chat_writer.hold.timer_set) {
        ngx_add_timer(&ngx_foko_chat_writer.hold, NGX_FOKO_CHAT_HOLD);
    }

    ngx_foko_chat_writer_kick();

    return NGX_OK;
}


static void
ngx_foko_chat_writer_kick(void)
{
    ngx_uint_t                  n;
    ngx_queue_t                *q;
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_batch_t      *batch;
    ngx_foko_chat_pending_t    *p;
    ngx_foko_chat_main_conf_t  *fmcf;

    if (ngx_foko_chat_writer.busy || ngx_foko_chat_writer.retry.timer_set
        || ngx_queue_empty(&ngx_foko_chat_writer.waiting))
    {
        return;
    }

    if (ngx_foko_chat_writer_number() != NGX_OK
        || ngx_queue_empty(&ngx_foko_chat_writer.waiting))
    {
        /* Redis numbers them: the batch starts once they have seqs */
        return;
    }

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);

    n = ngx_min(ngx_foko_chat_writer.nwaiting, NGX_FOKO_CHAT_BATCH_MAX);

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_batch_t)
                                     + 2 * n * sizeof(json_t *)
                                     + n * sizeof(ngx_uint_t)
                                     + n * sizeof(int64_t),
                                     ngx_cycle->log);
    if (task == NULL) {
        goto retry;
    }

    batch = task->data;
    batch->messages = (json_t **) (batch + 1);
    batch->tombs = batch->messages + n;
    batch->status = (ngx_uint_t *) (batch->tombs + n);
    batch->stored = (int64_t *) (batch->status + n);

    /* the batch owns references of its own: the queue may be dropped */

    for (q = ngx_queue_head(&ngx_foko_chat_writer.waiting);
         batch->n < n;
         q = ngx_queue_next(q))
    {
        p = ngx_queue_data(q, ngx_foko_chat_pending_t, queue);
        batch->messages[batch->n++] = json_incref(p->message);
    }

    task->run = ngx_foko_chat_writer_run;
    task->done = ngx_foko_chat_writer_done;

    if (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool) != NGX_OK) {
        for (n = 0; n < batch->n; n++) {
            json_decref(batch->messages[n]);
        }

        ngx_foko_chat_task_free(task);
        goto retry;
    }

    /* move the batch's posts from "waiting" to "writing" */

    while (ngx_foko_chat_writer.nwriting < batch->n) {
        q = ngx_queue_head(&ngx_foko_chat_writer.waiting);
        ngx_queue_remove(q);
        ngx_queue_insert_tail(&ngx_foko_chat_writer.writing, q);
        ngx_foko_chat_writer.nwaiting--;
        ngx_foko_chat_writer.nwriting++;
    }

    ngx_foko_chat_writer.busy = 1;

    return;

retry:

    ngx_add_timer(&ngx_foko_chat_writer.retry, ngx_foko_chat_writer.backoff);
}


/*
 * The posts of the next batch that have no seq yet get theirs: NGX_OK,
 * from the zone if Redis failed a moment ago; or NGX_AGAIN, from Redis,
 * in a task on its pool, which kicks the writer again when it is done.
 */

static ngx_int_t
ngx_foko_chat_writer_number(void)
{
    size_t                      size;
    u_char                     *channel;
    ngx_uint_t                  i, g, k;
    ngx_queue_t                *q;
    ngx_thread_pool_t          *pool;
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_pending_t    *p;
    ngx_foko_chat_shm_ctx_t    *shm;
    ngx_foko_chat_numbering_t  *nb;

    if (!ngx_foko_chat_redis_on()) {
        /* one host: take() numbered every post from the zone */
        return NGX_OK;
    }

    k = 0;

    for (q = ngx_queue_head(&ngx_foko_chat_writer.waiting);
         q != ngx_queue_sentinel(&ngx_foko_chat_writer.waiting)
         && k < NGX_FOKO_CHAT_BATCH_MAX;
         q = ngx_queue_next(q))
    {
        p = ngx_queue_data(q, ngx_foko_chat_pending_t, queue);
        k += p->unnumbered;
    }

    if (k == 0) {
        return NGX_OK;
    }

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);
    pool = ngx_foko_chat_redis_seq_pool();
    task = NULL;

    if (pool && (ngx_msec_int_t) (ngx_current_msec
                                  - ngx_foko_chat_writer.number_off) >= 0)
    {
        size = sizeof(ngx_foko_chat_numbering_t)
               + k * (sizeof(ngx_foko_chat_pending_t *) + 2 * sizeof(ngx_uint_t)
                      + NGX_FOKO_CHAT_OID_LEN + 2 * sizeof(int64_t));

        task = ngx_foko_chat_task_create(size, ngx_cycle->log);
    }

    if (task == NULL) {
        /* without Redis for now: numbered here, as on one host */

        q = ngx_queue_head(&ngx_foko_chat_writer.waiting);

        for (i = 0;
             i < NGX_FOKO_CHAT_BATCH_MAX
             && q != ngx_queue_sentinel(&ngx_foko_chat_writer.waiting);
             /* void */)
        {
            p = ngx_queue_data(q, ngx_foko_chat_pending_t, queue);
            q = ngx_queue_next(q);

            if (!p->unnumbered
                || ngx_foko_chat_writer_numbered(shm, p, 0) == NGX_OK)
            {
                /* a post that could not be numbered left the queue */
                i++;
            }
        }

        return NGX_OK;
    }

    nb = task->data;
    nb->posts = (ngx_foko_chat_pending_t **) (nb + 1);
    nb->firsts = (int64_t *) (nb->posts + k);
    nb->floors = nb->firsts + k;
    nb->group = (ngx_uint_t *) (nb->floors + k);
    nb->counts = nb->group + k;
    nb->channels = (u_char *) (nb->counts + k);

    for (q = ngx_queue_head(&ngx_foko_chat_writer.waiting);
         nb->nposts < k;
         q = ngx_queue_next(q))
    {
        p = ngx_queue_data(q, ngx_foko_chat_pending_t, queue);

        if (!p->unnumbered) {
            continue;
        }

        channel = (u_char *) json_string_value(json_object_get(p->message,
                                                               "channel_id"));

        for (g = 0; g < nb->n; g++) {
            if (ngx_memcmp(nb->channels + g * NGX_FOKO_CHAT_OID_LEN, channel,
                           NGX_FOKO_CHAT_OID_LEN)
                == 0)
            {
                break;
            }
        }

        if (g == nb->n) {
            ngx_memcpy(nb->channels + g * NGX_FOKO_CHAT_OID_LEN, channel,
                       NGX_FOKO_CHAT_OID_LEN);
            nb->floors[g] = ngx_max(ngx_foko_chat_seq_last(shm, channel), 0);
            nb->counts[g] = 0;
            nb->n++;
        }

        nb->counts[g]++;
        nb->group[nb->nposts] = g;
        nb->posts[nb->nposts++] = p;
    }

    task->run = ngx_foko_chat_writer_number_run;
    task->done = ngx_foko_chat_writer_number_done;

    if (ngx_foko_chat_task_post(task, pool) != NGX_OK) {
        for (i = 0; i < nb->nposts; i++) {
            (void) ngx_foko_chat_writer_numbered(shm, nb->posts[i], 0);
        }

        ngx_foko_chat_task_free(task);

        return NGX_OK;
    }

    /* nothing leaves the queue meanwhile: not written, not dropped */
    ngx_foko_chat_writer.busy = 1;

    return NGX_AGAIN;
}


static void
ngx_foko_chat_writer_number_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_numbering_t  *nb = task->data;

    nb->rc = ngx_foko_chat_redis_seq_take(nb->channels, nb->floors,
                                          nb->counts, nb->n, nb->firsts,
                                          nb->err);
}


static ngx_int_t
ngx_foko_chat_writer_number_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_numbering_t  *nb = task->data;

    ngx_uint_t                i, g;
    ngx_foko_chat_shm_ctx_t  *shm;

    ngx_foko_chat_writer.busy = 0;
    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    if (task->failed || nb->rc != NGX_OK) {
        if ((ngx_msec_int_t) (ngx_current_msec
                              - ngx_foko_chat_writer.number_off) >= 0)
        {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "foko chat: Redis did not number %ui posts (%s); "
                          "numbered from this host's zone for %M ms",
                          nb->nposts,
                          task->failed ? "the thread pool failed"
                                       : (char *) nb->err,
                          (ngx_msec_t) NGX_FOKO_CHAT_NUMBER_OFF);
        }

        ngx_foko_chat_writer.number_off = ngx_current_msec
                                          + NGX_FOKO_CHAT_NUMBER_OFF;
    }

    for (i = 0; i < nb->nposts; i++) {
        if (task->failed || nb->rc != NGX_OK) {
            (void) ngx_foko_chat_writer_numbered(shm, nb->posts[i], 0);
            continue;
        }

        g = nb->group[i];
        (void) ngx_foko_chat_writer_numbered(shm, nb->posts[i],
                                             nb->firsts[g]++);
    }

    ngx_foko_chat_writer_kick();

    return NGX_OK;
}


/*
 * A post takes "seq" from Redis, or with 0, the next one of the zone; a
 * post that cannot (no counter) is answered and leaves the queue:
 * NGX_ERROR.
 */

static ngx_int_t
ngx_foko_chat_writer_numbered(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_pending_t *p, int64_t seq)
{
    u_char     *channel;
    ngx_int_t   rc;

    channel = (u_char *) json_string_value(json_object_get(p->message,
                                                           "channel_id"));

    rc = seq ? ngx_foko_chat_seq_use(shm, channel, seq)
             : ngx_foko_chat_seq_next(shm, channel, &seq);

    if (rc == NGX_OK
        && json_object_set_new(p->message, "seq", json_integer(seq)) == 0)
    {
        p->unnumbered = 0;

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "foko chat: post to %s takes seq %L", channel, seq);
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                  "foko chat: no seq counter for channel %s", channel);

    ngx_foko_chat_writer_unqueue(shm, p, NGX_FOKO_CHAT_E_NOT_TAKEN);

    return NGX_ERROR;
}


/* a waiting post leaves the queue unstored, answered with the error */

static void
ngx_foko_chat_writer_unqueue(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_pending_t *p, ngx_foko_chat_err_e error)
{
    ngx_foko_chat_answer_t  a;

    ngx_queue_remove(&p->queue);
    ngx_foko_chat_writer.nwaiting--;

    if (p->bound.timer_set) {
        ngx_del_timer(&p->bound);
    }

    if (p->target) {
        ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));
        a.error = error;
        ngx_foko_chat_target_answer(p->target, &a);
    }

    ngx_foko_chat_writer_settle_idem(shm, p->message, NULL);
    json_decref(p->message);
    ngx_free(p);
}


static void
ngx_foko_chat_writer_retry(ngx_event_t *ev)
{
    ngx_foko_chat_writer_kick();
}


static void
ngx_foko_chat_writer_hold(ngx_event_t *ev)
{
    ngx_foko_chat_writer_t  *w = &ngx_foko_chat_writer;

    if (w->given_up) {
        if (!w->busy) {
            /* the last try could not even start */
            ngx_foko_chat_writer_drop();
        }

    } else if (ngx_foko_chat_writer_exit()) {
        /* a last try now, whatever the backoff */

        if (w->retry.timer_set) {
            ngx_del_timer(&w->retry);
        }

        ngx_foko_chat_writer_kick();
    }

    if (w->nwaiting + w->nwriting) {
        ngx_add_timer(ev, ngx_exiting ? NGX_FOKO_CHAT_EXIT_HOLD
                                      : NGX_FOKO_CHAT_HOLD);
    }
}


/* 1 once a worker that shuts down has tried for EXIT_WAIT */

static ngx_uint_t
ngx_foko_chat_writer_exit(void)
{
    ngx_foko_chat_writer_t  *w = &ngx_foko_chat_writer;

    if (!ngx_exiting) {
        return 0;
    }

    if (!w->exiting) {
        w->exiting = 1;
        w->exit_at = ngx_current_msec;

        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "foko chat: the worker exits: %ui posts to write "
                      "within %M ms", w->nwaiting + w->nwriting,
                      (ngx_msec_t) NGX_FOKO_CHAT_EXIT_WAIT);
    }

    if (ngx_current_msec - w->exit_at < NGX_FOKO_CHAT_EXIT_WAIT) {
        return 0;
    }

    w->given_up = 1;

    return 1;
}


/*
 * The worker exits and MongoDB did not take the waiting posts: each is
 * answered 503 storage_unavailable, unless that was done already, and
 * its client_id is freed for a retry, which gets the message if the last
 * batch was stored after all (MongoDB has the client_id) or makes it.
 */

static void
ngx_foko_chat_writer_drop(void)
{
    ngx_uint_t                n;
    ngx_queue_t              *q;
    ngx_foko_chat_shm_ctx_t  *shm;
    ngx_foko_chat_pending_t  *p;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    for (n = 0; !ngx_queue_empty(&ngx_foko_chat_writer.waiting); n++) {
        q = ngx_queue_head(&ngx_foko_chat_writer.waiting);
        p = ngx_queue_data(q, ngx_foko_chat_pending_t, queue);

        ngx_foko_chat_writer_unqueue(shm, p, NGX_FOKO_CHAT_E_STORAGE);
    }

    if (ngx_foko_chat_writer.retry.timer_set) {
        ngx_del_timer(&ngx_foko_chat_writer.retry);
    }

    if (n) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "foko chat: %ui posts not written within %M ms of "
                      "the worker's exit, dropped (answered 503, none "
                      "acknowledged)", n,
                      (ngx_msec_t) NGX_FOKO_CHAT_EXIT_WAIT);
    }
}


/*
 * A post not stored within NGX_FOKO_CHAT_POST_WAIT is answered 503
 * storage_unavailable, and stays in the queue: if it is stored later, its
 * client's retry with the same client_id gets it, as it would any stored
 * message; it is never stored twice.
 */

static void
ngx_foko_chat_writer_bound(ngx_event_t *ev)
{
    ngx_foko_chat_answer_t    a;
    ngx_foko_chat_pending_t  *p;

    p = (ngx_foko_chat_pending_t *)
            ((u_char *) ev - offsetof(ngx_foko_chat_pending_t, bound));

    if (p->target == NULL) {
        return;
    }

    ngx_log_error(NGX_LOG_INFO, p->target->log, 0,
                  "foko chat: post not stored within %M ms, answered 503; "
                  "it stays queued", (ngx_msec_t) NGX_FOKO_CHAT_POST_WAIT);

    ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));
    a.error = NGX_FOKO_CHAT_E_STORAGE;

    ngx_foko_chat_target_answer(p->target, &a);
    p->target = NULL;
}


/*
 * One round trip for the whole batch.  A batch that collides with stored
 * messages (a retry of a post whose first attempt is stored but no longer
 * in the ring nor marked in the zone, see ngx_foko_chat_messages_idem.c) is
 * written again one by one: a post whose client_id was taken is answered
 * with the message that took it (422 client_id_reused if that one is in
 * another channel), and its own seq holds a tombstone, so that the
 * channel's history has no gap.
 */

static void
ngx_foko_chat_writer_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_batch_t  *batch = task->data;

    json_t      *existing, *tomb;
    ngx_int_t    rc;
    ngx_uint_t   i;
    const char  *client_id, *author;

    for (i = 0; i < batch->n; i++) {
        batch->status[i] = NGX_HTTP_CREATED;
        json_decref(batch->tombs[i]);
        batch->tombs[i] = NULL;
    }

    batch->rc = ngx_foko_chat_store_messages_insert(batch->messages,
                                                    batch->n, batch->err);
    if (batch->rc != NGX_DECLINED) {
        return;
    }

    for (i = 0; i < batch->n; i++) {
        rc = ngx_foko_chat_store_messages_insert(&batch->messages[i], 1,
                                                 batch->err);
        if (rc == NGX_ERROR) {
            batch->rc = NGX_ERROR;
            return;
        }

        if (rc == NGX_OK) {
            continue;
        }

        if (json_is_true(json_object_get(batch->messages[i], "deleted"))) {
            /* a gap tombstone whose seq was stored after all */

            if (ngx_foko_chat_writer_gap_taken(batch, i) != NGX_OK) {
                batch->rc = NGX_ERROR;
                return;
            }

            continue;
        }

        client_id = json_string_value(json_object_get(batch->messages[i],
                                                      "client_id"));
        author = json_string_value(json_object_get(
                     json_object_get(batch->messages[i], "author"), "id"));
        existing = NULL;

        rc = NGX_DECLINED;

        if (client_id && author) {
            rc = ngx_foko_chat_store_message_by_client_id((u_char *) author,
                                                          (u_char *) client_id,
                                                          &existing,
                                                          batch->err);
        }

        if (rc == NGX_OK) {
            /* the seq handed out stays filled: by a tombstone */

            tomb = json_deep_copy(batch->messages[i]);

            if (tomb == NULL
                || json_object_del(tomb, "client_id") != 0
                || json_object_set_new(tomb, "text", json_string("")) != 0
                || json_object_set_new(tomb, "deleted", json_true()) != 0
                || ngx_foko_chat_store_messages_insert(&tomb, 1, batch->err)
                   == NGX_ERROR)
            {
                json_decref(tomb);
                json_decref(existing);
                batch->rc = NGX_ERROR;
                return;
            }

            batch->tombs[i] = tomb;
            batch->status[i] = ngx_foko_chat_writer_here(batch->messages[i],
                                                         existing)
                               ? NGX_HTTP_OK : NGX_FOKO_CHAT_REUSED;
            json_decref(batch->messages[i]);
            batch->messages[i] = existing;
            continue;
        }

        if (rc == NGX_ERROR) {
            /* the lookup failed: the whole batch is tried again */
            batch->rc = NGX_ERROR;
            return;
        }

        /*
         * A seq taken by another message: workers of another zone stored
         * it.  The post gets a seq past MongoDB's highest and goes again.
         */
        if (ngx_foko_chat_store_messages_max_seq((u_char *)
                json_string_value(json_object_get(batch->messages[i],
                                                  "channel_id")),
                &batch->stored[i], batch->err)
            != NGX_OK)
        {
            batch->rc = NGX_ERROR;
            return;
        }

        batch->status[i] = NGX_FOKO_CHAT_SEQ_TAKEN;
    }

    batch->rc = NGX_OK;
}


/*
 * The batch is back from MongoDB: a failed one goes back to the head of
 * the queue; of a stored one, each message becomes an event and its post
 * is answered, and a post whose seq was taken goes again with a new one.
 */

/*
 * A gap tombstone (ngx_foko_chat_gaps.c) for a seq that the worker which
 * took it did store before it died, its event never published: the
 * message stored stands in for the tombstone, and is published as new.
 */

static ngx_int_t
ngx_foko_chat_writer_gap_taken(ngx_foko_chat_batch_t *batch, ngx_uint_t i)
{
    json_t      *list, *stored;
    int64_t      seq;
    ngx_int_t    rc;
    ngx_uint_t   more;
    const char  *channel;

    channel = json_string_value(json_object_get(batch->messages[i],
                                                "channel_id"));
    seq = json_integer_value(json_object_get(batch->messages[i], "seq"));

    rc = ngx_foko_chat_store_messages_page((u_char *) channel, seq + 1,
                                           seq - 1, -1, 1, &list, &more,
                                           batch->err);
    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    stored = json_array_get(list, 0);

    if (stored == NULL) {
        json_decref(list);
        ngx_cpystrn(batch->err, (u_char *) "a gap's seq is taken, but by "
                    "no message", NGX_FOKO_CHAT_ERR_LEN);
        return NGX_ERROR;
    }

    json_incref(stored);
    json_decref(list);

    json_decref(batch->messages[i]);
    batch->messages[i] = stored;

    return NGX_OK;
}


/* the event kind of an older message that a post's client_id found */

static ngx_uint_t
ngx_foko_chat_writer_older(ngx_foko_chat_shm_ctx_t *shm, json_t *message)
{
    int64_t      seq;
    const char  *channel;

    channel = json_string_value(json_object_get(message, "channel_id"));
    seq = json_integer_value(json_object_get(message, "seq"));

    if (channel == NULL
        || ngx_foko_chat_seq_stored(shm, (u_char *) channel, seq))
    {
        return NGX_FOKO_CHAT_STORED_QUIET;
    }

    return NGX_FOKO_CHAT_STORED_NEW;
}


static ngx_int_t
ngx_foko_chat_writer_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_batch_t  *batch = task->data;

    ngx_uint_t                i, reseq;
    ngx_queue_t              *q, again, done;
    ngx_foko_chat_shm_ctx_t  *shm;
    ngx_foko_chat_pending_t  *p;

    ngx_foko_chat_writer.busy = 0;

    if (task->failed || batch->rc != NGX_OK) {
        ngx_foko_chat_writer_failed(task);
        return NGX_OK;
    }

    ngx_foko_chat_writer_recovered(batch);

    reseq = ngx_foko_chat_writer_settle(batch, &done);

    /*
     * The next batch goes to MongoDB before this one's posts are answered,
     * so that MongoDB does not wait for the answers; unless some post must
     * be written again with a new seq, ahead of the waiting ones.
     */

    if (!reseq) {
        ngx_foko_chat_writer_kick();
    }

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    ngx_queue_init(&again);

    for (i = 0; !ngx_queue_empty(&done); i++) {
        q = ngx_queue_head(&done);
        ngx_queue_remove(q);

        p = ngx_queue_data(q, ngx_foko_chat_pending_t, queue);

        if (ngx_foko_chat_writer_again(shm, batch, i, p)) {
            ngx_queue_insert_tail(&again, q);
            continue;
        }

        ngx_foko_chat_writer_stored(shm, batch, i, p);
    }

    ngx_foko_chat_writer_requeue(&again);

    ngx_foko_chat_writer_kick();

    return NGX_OK;
}


/* the batch was not written: back to the head of the queue, in order */

static void
ngx_foko_chat_writer_failed(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_batch_t  *batch = task->data;

    ngx_uint_t    i;
    ngx_queue_t  *q;

    ngx_foko_chat_stat_inc(batch_failures);

    for (i = 0; i < batch->n; i++) {
        json_decref(batch->messages[i]);
        json_decref(batch->tombs[i]);
    }

    if (!ngx_foko_chat_writer.failing) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "foko chat: %ui messages not written, will retry: "
                      "%s", batch->n,
                      task->failed ? (u_char *) "the thread pool is full"
                                   : batch->err);
        ngx_foko_chat_writer.failing = 1;
    }

    while (!ngx_queue_empty(&ngx_foko_chat_writer.writing)) {
        q = ngx_queue_last(&ngx_foko_chat_writer.writing);
        ngx_queue_remove(q);
        ngx_queue_insert_head(&ngx_foko_chat_writer.waiting, q);
        ngx_foko_chat_writer.nwriting--;
        ngx_foko_chat_writer.nwaiting++;
    }

    if (ngx_foko_chat_writer.given_up) {
        ngx_foko_chat_writer_drop();
        return;
    }

    if (ngx_foko_chat_writer_exit()) {
        /* EXIT_WAIT ended while the batch was in MongoDB: its last try */
        ngx_foko_chat_writer_drop();
        return;
    }

    if (ngx_exiting) {
        ngx_foko_chat_writer.backoff = ngx_min(ngx_foko_chat_writer.backoff,
                                               NGX_FOKO_CHAT_EXIT_RETRY);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "foko chat: batch of %ui failed, retry in %M ms",
                   batch->n, ngx_foko_chat_writer.backoff);

    ngx_add_timer(&ngx_foko_chat_writer.retry, ngx_foko_chat_writer.backoff);

    ngx_foko_chat_writer.backoff = ngx_min(2 * ngx_foko_chat_writer.backoff,
                                           NGX_FOKO_CHAT_RETRY_MAX);
}


static void
ngx_foko_chat_writer_recovered(ngx_foko_chat_batch_t *batch)
{
    if (ngx_foko_chat_writer.failing) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "foko chat: messages are written again");
        ngx_foko_chat_writer.failing = 0;
    }

    ngx_foko_chat_writer.backoff = NGX_FOKO_CHAT_RETRY_MIN;

    ngx_foko_chat_status_batch(batch->n);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "foko chat: batch of %ui stored", batch->n);
}


/* the batch's posts leave "writing"; 1 if some seq was found taken */

static ngx_uint_t
ngx_foko_chat_writer_settle(ngx_foko_chat_batch_t *batch, ngx_queue_t *done)
{
    ngx_uint_t    i, reseq;
    ngx_queue_t  *q;

    ngx_queue_init(done);
    reseq = 0;

    for (i = 0; !ngx_queue_empty(&ngx_foko_chat_writer.writing); i++) {
        q = ngx_queue_head(&ngx_foko_chat_writer.writing);
        ngx_queue_remove(q);
        ngx_queue_insert_tail(done, q);
        ngx_foko_chat_writer.nwriting--;

        if (batch->status[i] == NGX_FOKO_CHAT_SEQ_TAKEN) {
            reseq = 1;
        }
    }

    return reseq;
}


/*
 * A post whose seq was taken: 1 if it goes again with a new seq, before
 * the waiting ones; else, past its tries, it is answered as a collision.
 */

static ngx_uint_t
ngx_foko_chat_writer_again(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_batch_t *batch, ngx_uint_t i, ngx_foko_chat_pending_t *p)
{
    if (batch->status[i] != NGX_FOKO_CHAT_SEQ_TAKEN) {
        return 0;
    }

    if (shm && p->tries++ < NGX_FOKO_CHAT_SEQ_TRIES
        && ngx_foko_chat_writer_reseq(shm, p, batch->stored[i]) == NGX_OK)
    {
        json_decref(batch->messages[i]);
        batch->messages[i] = NULL;
        return 1;
    }

    batch->status[i] = NGX_HTTP_INTERNAL_SERVER_ERROR;

    return 0;
}


/*
 * A post whose seq MongoDB holds already (stored by the workers of a
 * replaced zone): that seq counts as stored, and the post takes the next
 * seq past MongoDB's highest.  The post is not answered yet, so nobody
 * has seen the old seq.
 */

static ngx_int_t
ngx_foko_chat_writer_reseq(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_pending_t *p, int64_t stored)
{
    int64_t      old, seq;
    const char  *channel;

    channel = json_string_value(json_object_get(p->message, "channel_id"));
    old = json_integer_value(json_object_get(p->message, "seq"));

    if (channel == NULL || ngx_strlen(channel) != NGX_FOKO_CHAT_OID_LEN) {
        return NGX_ERROR;
    }

    ngx_foko_chat_seq_taken(shm, (u_char *) channel, old, stored);

    if (ngx_foko_chat_seq_next(shm, (u_char *) channel, &seq) != NGX_OK
        || json_object_set_new(p->message, "seq", json_integer(seq)) != 0)
    {
        return NGX_ERROR;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "foko chat: seq %L of channel %s was stored by other "
                  "workers; the message takes seq %L", old, channel, seq);

    return NGX_OK;
}



/*
 * A message of the batch is stored: it becomes an event (ring, event log,
 * subscribers), then its post is answered.
 */

static void
ngx_foko_chat_writer_stored(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_batch_t *batch, ngx_uint_t i, ngx_foko_chat_pending_t *p)
{
    char                    *text;
    ngx_foko_chat_answer_t   a;

    ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));
    a.error = NGX_FOKO_CHAT_E_NONE;
    a.status = batch->status[i];

    text = NULL;

    if (batch->status[i] == NGX_HTTP_INTERNAL_SERVER_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, p->target ? p->target->log
                                               : ngx_cycle->log, 0,
                      "foko chat: a message collides with a stored "
                      "one of the same seq");
        a.error = NGX_FOKO_CHAT_E_COLLISION;

        ngx_foko_chat_writer_settle_idem(shm, p->message, NULL);

    } else if (batch->status[i] == NGX_FOKO_CHAT_REUSED) {
        /* the client_id made a message in another channel: not shown */

        if (shm) {
            (void) ngx_foko_chat_event_stored(shm, batch->tombs[i], NULL,
                                              NGX_FOKO_CHAT_STORED_NEW);
        }

        a.error = NGX_FOKO_CHAT_E_CLIENT_ID_REUSED;

        ngx_foko_chat_writer_settle_idem(shm, p->message, NULL);

    } else {
        /* one serialization for the ring, the event and the answer */
        text = json_dumps(batch->messages[i], JSON_COMPACT);

        if (shm && batch->tombs[i]) {
            /*
             * The seq is the tombstone's; the message is older, and was
             * published when it was stored, unless a worker that died
             * stored it (its seq is not stored here yet): then it is new.
             */
            (void) ngx_foko_chat_event_stored(shm, batch->tombs[i], NULL,
                                              NGX_FOKO_CHAT_STORED_NEW);
            (void) ngx_foko_chat_event_stored(shm, batch->messages[i], text,
                       ngx_foko_chat_writer_older(shm, batch->messages[i]));

        } else if (shm) {
            (void) ngx_foko_chat_event_stored(shm, batch->messages[i], text,
                                              NGX_FOKO_CHAT_STORED_NEW);
        }

        a.message = batch->messages[i];

        ngx_foko_chat_writer_settle_idem(shm, p->message, text);

        if (text) {
            a.text.data = (u_char *) text;
            a.text.len = ngx_strlen(text);
        }
    }

    if (p->bound.timer_set) {
        ngx_del_timer(&p->bound);
    }

    if (p->target) {
        ngx_foko_chat_target_answer(p->target, &a);
    }

    free(text);
    json_decref(batch->messages[i]);
    json_decref(batch->tombs[i]);
    json_decref(p->message);
    ngx_free(p);
}


/* the message that has the post's client_id is in the post's channel */

static ngx_uint_t
ngx_foko_chat_writer_here(json_t *post, json_t *existing)
{
    const char  *a, *b;

    a = json_string_value(json_object_get(post, "channel_id"));
    b = json_string_value(json_object_get(existing, "channel_id"));

    return a && b && ngx_strcmp(a, b) == 0;
}


/*
 * The post's client_id is answered from now on by "text" (its message, or
 * the one that had its client_id), or made again by the next repeat.
 */

static void
ngx_foko_chat_writer_settle_idem(ngx_foko_chat_shm_ctx_t *shm, json_t *post,
    char *text)
{
    const char  *client_id;

    client_id = json_string_value(json_object_get(post, "client_id"));

    if (shm == NULL || client_id == NULL) {
        return;
    }

    ngx_foko_chat_idem_settle(shm,
        json_string_value(json_object_get(post, "channel_id")),
        json_string_value(json_object_get(json_object_get(post, "author"),
                                          "id")),
        client_id, text);
}


static void
ngx_foko_chat_writer_requeue(ngx_queue_t *again)
{
    ngx_queue_t  *q;

    while (!ngx_queue_empty(again)) {
        q = ngx_queue_last(again);
        ngx_queue_remove(q);
        ngx_queue_insert_head(&ngx_foko_chat_writer.waiting, q);
        ngx_foko_chat_writer.nwaiting++;
    }

    if (ngx_foko_chat_writer.nwaiting + ngx_foko_chat_writer.nwriting == 0
        && ngx_foko_chat_writer.hold.timer_set)
    {
        ngx_del_timer(&ngx_foko_chat_writer.hold);
    }
}
