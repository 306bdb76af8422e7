
/*
 * Foko chat: messages: history, posting with group commit, edits, read
 * marks.
 *
 * A post gets its seq from the channel's counter in the shared zone at
 * once, then waits in this worker's write queue.  One batch at a time goes
 * to MongoDB in a single round trip (group commit); when MongoDB has
 * acknowledged it, every post of the batch is answered 201.  A failed batch
 * goes back to the head of the queue and is retried with backoff, so the
 * batches of a worker complete in seq order and nothing acknowledged is
 * ever lost.  Past foko_chat_write_queue waiting posts, new ones get 503
 * before a seq is spent on them.
 */


#include "ngx_foko_chat_messages.h"
#include "ngx_foko_chat_cache.h"
#include "ngx_foko_chat_bus.h"
#include "ngx_foko_chat_channels.h"
#include "ngx_foko_chat_json.h"
#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_store.h"
#include "ngx_foko_chat_task.h"


#define NGX_FOKO_CHAT_RETRY_MIN   100
#define NGX_FOKO_CHAT_TEXT_TOO_LONG  ((const char *) -1)
#define NGX_FOKO_CHAT_RETRY_MAX   5000


typedef struct ngx_foko_chat_msg_op_s  ngx_foko_chat_msg_op_t;

typedef void (*ngx_foko_chat_msg_run_pt)(ngx_foko_chat_msg_op_t *op);


/* who waits for a post made outside a request; handler NULL: nobody */

typedef struct {
    ngx_foko_chat_post_done_pt     handler;
    void                          *data;
} ngx_foko_chat_target_t;


struct ngx_foko_chat_msg_op_s {
    ngx_foko_chat_msg_run_pt       run;

    /* input */
    u_char                         user[25];
    u_char                         username[NGX_FOKO_CHAT_USERNAME_MAX + 1];
    u_char                         mid[25];
    u_char                         client_id[NGX_FOKO_CHAT_CLIENT_ID_MAX + 1];
    u_char                        *text;         /* malloc()ed */
    int64_t                        before;
    int64_t                        after;
    int64_t                        upto;         /* stored through */
    int64_t                        seq;
    ngx_uint_t                     limit;
    ngx_foko_chat_channel_doc_t    ch;
    unsigned                       load_seq:1;
    unsigned                       remove:1;
    unsigned                       waited:1;     /* for another's load */

    /* output */
    ngx_int_t                      rc;           /* NGX_ERROR: storage */
    u_char                         err[NGX_FOKO_CHAT_ERR_LEN];
    ngx_int_t                      found;        /* NGX_OK, NGX_DECLINED */
    int64_t                        stored_seq;
    ngx_uint_t                     more;
    json_t                        *result;

    /* what the channel cache is filled with: member names, latest */
    json_t                        *names;
    json_t                        *latest;
    ngx_uint_t                     ring_size;
    ngx_atomic_uint_t              cache_gen;

    /* a post made outside a request */
    ngx_foko_chat_target_t        *target;
};


/* a post waiting for its batch: a request's, or a target's */

typedef struct {
    ngx_queue_t                    queue;
    json_t                        *message;
    ngx_http_request_t            *request;
    ngx_http_cleanup_t            *cleanup;
    ngx_foko_chat_target_t        *target;
    ngx_uint_t                     tries;        /* seqs found taken */
} ngx_foko_chat_pending_t;


#define NGX_FOKO_CHAT_SEQ_TAKEN   NGX_HTTP_CONFLICT  /* status: again */
#define NGX_FOKO_CHAT_SEQ_TRIES   8


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
    unsigned                       busy:1;
    unsigned                       failing:1;
} ngx_foko_chat_writer_t;


static ngx_int_t ngx_foko_chat_messages_start(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx, ngx_foko_chat_task_t *task,
    ngx_foko_chat_msg_run_pt run, ngx_foko_chat_task_done_pt done);
static ngx_foko_chat_task_t *ngx_foko_chat_messages_task(
    ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx);
static void ngx_foko_chat_messages_thread(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_uint_t ngx_foko_chat_messages_answered(ngx_foko_chat_task_t *task,
    ngx_int_t *rc);
static void ngx_foko_chat_messages_release(ngx_foko_chat_msg_op_t *op);
static ngx_int_t ngx_foko_chat_messages_int_arg(ngx_http_request_t *r,
    const char *name, int64_t min, int64_t max, int64_t *value);
static ngx_int_t ngx_foko_chat_messages_refuse(ngx_http_request_t *r,
    const char *problem);
static const char *ngx_foko_chat_messages_text(
    ngx_foko_chat_main_conf_t *fmcf, json_t *body,
    ngx_foko_chat_msg_op_t *op);
static json_t *ngx_foko_chat_messages_problem(const char *problem,
    ngx_uint_t *status);
static ngx_int_t ngx_foko_chat_messages_submitted(
    ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_messages_take(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_msg_op_t *op, json_t **message);
static void ngx_foko_chat_target_answer(ngx_foko_chat_target_t *t,
    ngx_uint_t status, json_t *answer);
static ngx_uint_t ngx_foko_chat_messages_find_mine(
    ngx_foko_chat_msg_op_t *op);

static void ngx_foko_chat_messages_list_run(ngx_foko_chat_msg_op_t *op);
static ngx_int_t ngx_foko_chat_messages_list_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_messages_prepare_run(ngx_foko_chat_msg_op_t *op);
static ngx_int_t ngx_foko_chat_messages_post_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_messages_update_run(ngx_foko_chat_msg_op_t *op);
static ngx_int_t ngx_foko_chat_messages_update_done(
    ngx_foko_chat_task_t *task);
static void ngx_foko_chat_messages_read_run(ngx_foko_chat_msg_op_t *op);
static ngx_int_t ngx_foko_chat_messages_read_done(ngx_foko_chat_task_t *task);

static json_t *ngx_foko_chat_messages_new(ngx_foko_chat_msg_op_t *op,
    int64_t seq);
static ngx_int_t ngx_foko_chat_messages_accept(ngx_http_request_t *r,
    ngx_foko_chat_msg_op_t *op);
static void ngx_foko_chat_messages_load(ngx_foko_chat_msg_op_t *op);
static void ngx_foko_chat_messages_cache(ngx_http_request_t *r,
    ngx_foko_chat_msg_op_t *op);
static ngx_uint_t ngx_foko_chat_messages_wait(ngx_foko_chat_task_t *task,
    ngx_http_request_t *r);
static void ngx_foko_chat_messages_loaded(u_char *channel);
static ngx_int_t ngx_foko_chat_writer_add(ngx_http_request_t *r,
    ngx_foko_chat_target_t *t, json_t *message);
static void ngx_foko_chat_writer_cleanup(void *data);
static void ngx_foko_chat_writer_kick(void);
static void ngx_foko_chat_writer_retry(ngx_event_t *ev);
static void ngx_foko_chat_writer_hold(ngx_event_t *ev);
static void ngx_foko_chat_writer_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_writer_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_writer_reseq(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_pending_t *p, int64_t stored);


static ngx_foko_chat_writer_t  ngx_foko_chat_writer;
static ngx_connection_t        ngx_foko_chat_writer_conn;


/*
 * A channel this worker is loading from MongoDB for a post.  Other posts
 * to it wait here for that load instead of each loading it again; then
 * they go on as posts to a cached channel.
 */

typedef struct {
    ngx_queue_t                    queue;
    u_char                         id[24];
    ngx_queue_t                    waiters;     /* of tasks, by task->queue */
} ngx_foko_chat_load_t;


static ngx_queue_t  ngx_foko_chat_loads;
static ngx_uint_t   ngx_foko_chat_loads_started;
static ngx_uint_t   ngx_foko_chat_loads_waited;


ngx_int_t
ngx_foko_chat_messages_init_process(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_foko_chat_writer.waiting);
    ngx_queue_init(&ngx_foko_chat_writer.writing);
    ngx_queue_init(&ngx_foko_chat_loads);

    /*
     * Neither timer is cancelable: a worker that is shutting down stays
     * while it holds posts, and keeps retrying them ("hold" is armed
     * whenever the queue is not empty, also while a batch is in its
     * thread).  worker_shutdown_timeout bounds that.
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


/* GET /api/channels/:id/messages?before=&after=&limit= */

ngx_int_t
ngx_foko_chat_messages_list(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    json_t                   *page;
    int64_t                   before, after, limit;
    ngx_uint_t                member, more;
    ngx_foko_chat_task_t     *task;
    ngx_foko_chat_msg_op_t   *op;
    ngx_foko_chat_shm_ctx_t  *shm;

    before = 0;
    after = -1;
    limit = NGX_FOKO_CHAT_PAGE_DEFAULT;

    if (ngx_foko_chat_messages_int_arg(r, "before", 1, NGX_MAX_INT_T_VALUE,
                                       &before)
        != NGX_OK)
    {
        return ngx_foko_chat_json_send_invalid(r, "before",
                                               "must be a positive seq");
    }

    if (ngx_foko_chat_messages_int_arg(r, "after", 0, NGX_MAX_INT_T_VALUE,
                                       &after)
        != NGX_OK)
    {
        return ngx_foko_chat_json_send_invalid(r, "after",
                                               "must be a seq");
    }

    if (ngx_foko_chat_messages_int_arg(r, "limit", 1, NGX_FOKO_CHAT_PAGE_MAX,
                                       &limit)
        != NGX_OK)
    {
        return ngx_foko_chat_json_send_invalid(r, "limit",
                                               "must be between 1 and 200");
    }

    task = ngx_foko_chat_messages_task(r, ctx);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;
    op->before = before;
    op->after = after;
    op->limit = (ngx_uint_t) limit;

    /* recent history of a cached channel comes from the shared zone */

    shm = ngx_foko_chat_shm_get(r);

    /* MongoDB may have N + 1 before N: history stops before a hole */
    op->upto = (ctx->nargs && ngx_foko_chat_is_id(&ctx->args[0]))
               ? ngx_foko_chat_seq_through(shm, ctx->args[0].data) : -1;

    if (ctx->nargs && ngx_foko_chat_is_id(&ctx->args[0])
        && ngx_foko_chat_cache_member(shm, op->ch.id, op->user, &member)
           == NGX_OK)
    {
        if (!member) {
            ngx_foko_chat_task_free(task);
            return ngx_foko_chat_send_not_found(r);
        }

        if (ngx_foko_chat_cache_page(shm, op->ch.id, before, after,
                                     op->limit, &page, &more)
            == NGX_OK)
        {
            ngx_foko_chat_task_free(task);
            return ngx_foko_chat_json_send(r, NGX_HTTP_OK,
                                           json_pack("{s:o,s:b}",
                                                     "messages", page,
                                                     "has_more", (int) more));
        }
    }

    return ngx_foko_chat_messages_start(r, ctx, task,
                                        ngx_foko_chat_messages_list_run,
                                        ngx_foko_chat_messages_list_done);
}


/* POST /api/channels/:id/messages {text, client_id} */

ngx_int_t
ngx_foko_chat_messages_post(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    json_t                     *v;
    ngx_int_t                   rc;
    ngx_str_t                   id;
    ngx_uint_t                  member;
    const char                 *problem;
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_msg_op_t     *op;
    ngx_foko_chat_shm_ctx_t    *shm;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    task = ngx_foko_chat_messages_task(r, ctx);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;

    problem = ngx_foko_chat_messages_text(fmcf, ctx->body, op);
    if (problem) {
        ngx_foko_chat_messages_release(op);
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_messages_refuse(r, problem);
    }

    v = json_object_get(ctx->body, "client_id");

    if (v && !json_is_null(v)) {
        problem = ngx_foko_chat_json_string(ctx->body, "client_id", 1,
                                            NGX_FOKO_CHAT_CLIENT_ID_MAX, 0,
                                            &id);
        if (problem) {
            ngx_foko_chat_messages_release(op);
            ngx_foko_chat_task_free(task);
            return ngx_foko_chat_json_send_invalid(r, "client_id", problem);
        }

        ngx_memcpy(op->client_id, id.data, id.len);
    }

    if (ngx_foko_chat_writer.nwaiting + ngx_foko_chat_writer.nwriting
        + ngx_foko_chat_writer.npreparing
        >= fmcf->write_queue)
    {
        ngx_foko_chat_messages_release(op);
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "storage_unavailable",
                                             "too many messages are waiting "
                                             "for the database");
    }

    shm = ngx_foko_chat_shm_get(r);

    if (ctx->nargs && ngx_foko_chat_is_id(&ctx->args[0])) {
        op->load_seq = ngx_foko_chat_seq_last(shm, ctx->args[0].data) < 0;

        /* a cached channel: no MongoDB round trip before the write */

        if (!op->load_seq
            && ngx_foko_chat_cache_member(shm, op->ch.id, op->user, &member)
               == NGX_OK)
        {
            rc = member ? ngx_foko_chat_messages_accept(r, op)
                        : ngx_foko_chat_send_not_found(r);

            ngx_foko_chat_messages_release(op);
            ngx_foko_chat_task_free(task);

            return rc;
        }
    }

    if (ctx->nargs && ngx_foko_chat_is_id(&ctx->args[0])) {
        op->run = ngx_foko_chat_messages_prepare_run;
        task->run = ngx_foko_chat_messages_thread;
        task->done = ngx_foko_chat_messages_post_done;

        if (ngx_foko_chat_messages_wait(task, r)) {
            ngx_foko_chat_writer.npreparing++;
            return NGX_DONE;
        }
    }

    rc = ngx_foko_chat_messages_start(r, ctx, task,
                                      ngx_foko_chat_messages_prepare_run,
                                      ngx_foko_chat_messages_post_done);

    if (rc == NGX_DONE) {
        /* counted against the write queue from now on */
        ngx_foko_chat_writer.npreparing++;
    }

    return rc;
}


/* PATCH /api/channels/:id/messages/:mid {text} */

ngx_int_t
ngx_foko_chat_messages_edit(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    const char              *problem;
    ngx_foko_chat_task_t    *task;
    ngx_foko_chat_msg_op_t  *op;

    task = ngx_foko_chat_messages_task(r, ctx);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;

    problem = ngx_foko_chat_messages_text(
                  ngx_http_get_module_main_conf(r, ngx_foko_chat_module),
                  ctx->body, op);
    if (problem) {
        ngx_foko_chat_messages_release(op);
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_messages_refuse(r, problem);
    }

    return ngx_foko_chat_messages_start(r, ctx, task,
                                        ngx_foko_chat_messages_update_run,
                                        ngx_foko_chat_messages_update_done);
}


/* DELETE /api/channels/:id/messages/:mid: a tombstone stays */

ngx_int_t
ngx_foko_chat_messages_delete(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_foko_chat_task_t    *task;
    ngx_foko_chat_msg_op_t  *op;

    task = ngx_foko_chat_messages_task(r, ctx);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;
    op->remove = 1;

    return ngx_foko_chat_messages_start(r, ctx, task,
                                        ngx_foko_chat_messages_update_run,
                                        ngx_foko_chat_messages_update_done);
}


/* POST /api/channels/:id/read {seq} */

ngx_int_t
ngx_foko_chat_messages_read(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    json_t                  *v;
    ngx_foko_chat_task_t    *task;
    ngx_foko_chat_msg_op_t  *op;

    v = json_object_get(ctx->body, "seq");

    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        return ngx_foko_chat_json_send_invalid(r, "seq",
                                         "must be a non-negative integer");
    }

    task = ngx_foko_chat_messages_task(r, ctx);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;
    op->seq = json_integer_value(v);

    return ngx_foko_chat_messages_start(r, ctx, task,
                                        ngx_foko_chat_messages_read_run,
                                        ngx_foko_chat_messages_read_done);
}


static ngx_foko_chat_task_t *
ngx_foko_chat_messages_task(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_msg_op_t     *op;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_msg_op_t),
                                     r->connection->log);
    if (task == NULL) {
        return NULL;
    }

    op = task->data;
    op->ring_size = fmcf->history_cache;
    op->cache_gen = ngx_foko_chat_cache_gen(ngx_foko_chat_shm_get(r));

    ngx_memcpy(op->user, ctx->claims.sub, sizeof(op->user));
    ngx_memcpy(op->username, ctx->claims.name, ctx->claims.name_len + 1);

    if (ctx->nargs > 0 && ctx->args[0].len == 24) {
        ngx_memcpy(op->ch.id, ctx->args[0].data, 24);
    }

    if (ctx->nargs > 1 && ctx->args[1].len == 24) {
        ngx_memcpy(op->mid, ctx->args[1].data, 24);
    }

    return task;
}


static ngx_int_t
ngx_foko_chat_messages_start(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx, ngx_foko_chat_task_t *task,
    ngx_foko_chat_msg_run_pt run, ngx_foko_chat_task_done_pt done)
{
    ngx_uint_t                  i;
    ngx_foko_chat_msg_op_t     *op;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);
    op = task->data;

    for (i = 0; i < ctx->nargs; i++) {
        if (!ngx_foko_chat_is_id(&ctx->args[i])) {
            ngx_foko_chat_messages_release(op);
            ngx_foko_chat_task_free(task);
            return i == 0 ? ngx_foko_chat_send_not_found(r)
                          : ngx_foko_chat_json_send_error(r,
                                NGX_HTTP_NOT_FOUND, "not_found",
                                "no such message");
        }
    }

    op->run = run;
    task->run = ngx_foko_chat_messages_thread;
    task->done = done;

    if (ngx_foko_chat_task_post_request(task, fmcf->storage_pool.pool, r)
        != NGX_OK)
    {
        ngx_foko_chat_messages_release(op);
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_unavailable(r, NULL);
    }

    return NGX_DONE;
}


static void
ngx_foko_chat_messages_thread(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    op->rc = NGX_OK;
    op->found = NGX_OK;

    op->run(op);
}


/*
 * What every completion checks first: 0 to go on, or 1 when there is
 * nothing more to do (an error was answered, or the request is gone) and
 * *rc is the code to finalize the request with.
 */

static ngx_uint_t
ngx_foko_chat_messages_answered(ngx_foko_chat_task_t *task, ngx_int_t *rc)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    ngx_http_request_t  *r;

    r = task->request;

    if (r == NULL) {
        ngx_foko_chat_messages_release(op);
        *rc = NGX_DONE;
        return 1;
    }

    if (task->failed || op->rc == NGX_ERROR) {
        ngx_foko_chat_messages_release(op);
        *rc = ngx_foko_chat_json_send_unavailable(r, task->failed ? NULL
                                                                  : op->err);
        return 1;
    }

    if (op->found == NGX_DECLINED) {
        ngx_foko_chat_messages_release(op);
        *rc = ngx_foko_chat_send_not_found(r);
        return 1;
    }

    return 0;
}


static void
ngx_foko_chat_messages_release(ngx_foko_chat_msg_op_t *op)
{
    free(op->text);
    op->text = NULL;

    ngx_foko_chat_store_channel_doc_free(&op->ch);

    json_decref(op->result);
    op->result = NULL;

    json_decref(op->names);
    op->names = NULL;

    json_decref(op->latest);
    op->latest = NULL;
}


static ngx_int_t
ngx_foko_chat_messages_int_arg(ngx_http_request_t *r, const char *name,
    int64_t min, int64_t max, int64_t *value)
{
    ngx_int_t  n;
    ngx_str_t  arg;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &arg) != NGX_OK) {
        return NGX_OK;
    }

    n = ngx_atoi(arg.data, arg.len);

    if (n == NGX_ERROR || n < min || n > max) {
        return NGX_ERROR;
    }

    *value = n;

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_messages_refuse(ngx_http_request_t *r, const char *problem)
{
    if (problem == NGX_FOKO_CHAT_TEXT_TOO_LONG) {
        return ngx_foko_chat_json_send_error(r,
                                             NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                             "too_large",
                                             "the message is too long");
    }

    return ngx_foko_chat_json_send_invalid(r, "text", problem);
}


/* NULL, what is wrong with the text, or NGX_FOKO_CHAT_TEXT_TOO_LONG */

static const char *
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

static ngx_uint_t
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


static ngx_int_t
ngx_foko_chat_messages_list_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    json_t     *body;
    ngx_int_t   rc;

    if (ngx_foko_chat_messages_answered(task, &rc)) {
        return rc;
    }

    ngx_foko_chat_messages_cache(task->request, op);

    body = json_pack("{s:O,s:b}", "messages", op->result,
                     "has_more", (int) op->more);

    ngx_foko_chat_messages_release(op);

    return ngx_foko_chat_json_send(task->request, NGX_HTTP_OK, body);
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


static ngx_int_t
ngx_foko_chat_messages_post_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    json_t                   *body;
    ngx_int_t                 rc;
    ngx_http_request_t       *r;
    ngx_foko_chat_shm_ctx_t  *shm;

    ngx_foko_chat_writer.npreparing--;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    if (!task->failed && op->rc == NGX_OK && op->found == NGX_OK) {
        if (op->names) {
            (void) ngx_foko_chat_cache_put_channel(shm, &op->ch, op->names,
                                                   op->latest,
                                                   op->ring_size,
                                                   op->cache_gen);
            json_decref(op->names);
            op->names = NULL;
        }

        if (op->load_seq && op->result == NULL) {
            if (ngx_foko_chat_seq_load(shm, op->ch.id, op->stored_seq)
                != NGX_OK)
            {
                op->rc = NGX_ERROR;
            }

            op->load_seq = 0;
        }
    }

    /* the posts that waited for this load go on */
    ngx_foko_chat_messages_loaded(op->ch.id);

    if (ngx_foko_chat_messages_answered(task, &rc)) {
        return rc;
    }

    r = task->request;

    if (op->result) {
        /* the same client_id again: the message it made, not another */

        body = json_pack("{s:O}", "message", op->result);
        ngx_foko_chat_messages_release(op);

        return ngx_foko_chat_json_send(r, NGX_HTTP_OK, body);
    }

    rc = ngx_foko_chat_messages_accept(r, op);

    ngx_foko_chat_messages_release(op);

    return rc;
}


/*
 * The member's post enters the write queue with the channel's next seq,
 * unless the ring shows its client_id already (a retry): then that message
 * is the answer.  Returns the code to finalize the request with.
 */

static ngx_int_t
ngx_foko_chat_messages_accept(ngx_http_request_t *r,
    ngx_foko_chat_msg_op_t *op)
{
    json_t     *message;
    ngx_int_t   rc;

    rc = ngx_foko_chat_messages_take(ngx_foko_chat_shm_get(r), op, &message);

    if (rc == NGX_OK) {
        return ngx_foko_chat_json_send(r, NGX_HTTP_OK,
                                       json_pack("{s:o}", "message",
                                                 message));
    }

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_foko_chat_writer_add(r, NULL, message) != NGX_OK) {
        json_decref(message);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the write queue holds the request now */

    return NGX_DONE;
}


/*
 * The member's post with the channel's next seq (NGX_DONE: to be written),
 * or the message its client_id made already, from the ring (NGX_OK).
 */

static ngx_int_t
ngx_foko_chat_messages_take(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_msg_op_t *op, json_t **message)
{
    int64_t  seq;

    if (op->client_id[0]) {
        *message = ngx_foko_chat_cache_find_client_id(shm, op->ch.id,
                                                      op->user,
                                                      op->client_id);
        if (*message) {
            return NGX_OK;
        }
    }

    if (ngx_foko_chat_seq_next(shm, op->ch.id, &seq) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "foko chat: no seq counter for channel %s",
                      op->ch.id);
        return NGX_ERROR;
    }

    *message = ngx_foko_chat_messages_new(op, seq);
    if (*message == NULL) {
        return NGX_ERROR;
    }

    return NGX_DONE;
}


ngx_int_t
ngx_foko_chat_messages_submit(ngx_foko_chat_post_t *post, void **handle,
    ngx_uint_t *status, json_t **answer)
{
    json_t                     *v, *message;
    ngx_int_t                   rc;
    ngx_str_t                   id;
    ngx_uint_t                  member;
    const char                 *problem;
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_msg_op_t     *op;
    ngx_foko_chat_target_t     *t;
    ngx_foko_chat_shm_ctx_t    *shm;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);
    shm = fmcf->shm_zone->data;

    *answer = NULL;

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_msg_op_t),
                                     post->log);
    if (task == NULL) {
        return NGX_ERROR;
    }

    op = task->data;
    op->ring_size = fmcf->history_cache;
    op->cache_gen = ngx_foko_chat_cache_gen(shm);

    ngx_memcpy(op->user, post->user, 24);
    ngx_cpystrn(op->username, post->username, sizeof(op->username));
    ngx_memcpy(op->ch.id, post->channel, 24);

    problem = ngx_foko_chat_messages_text(fmcf, post->body, op);

    if (problem == NULL) {
        v = json_object_get(post->body, "client_id");

        if (v && !json_is_null(v)) {
            problem = ngx_foko_chat_json_string(post->body, "client_id", 1,
                                                NGX_FOKO_CHAT_CLIENT_ID_MAX,
                                                0, &id);
            if (problem) {
                *status = NGX_HTTP_BAD_REQUEST;
                *answer = json_pack("{s:s,s:s+,s:s}",
                                    "code", "invalid_request",
                                    "message", "client_id ", problem,
                                    "field", "client_id");
                goto answered;
            }

            ngx_memcpy(op->client_id, id.data, id.len);
        }

    } else {
        *answer = ngx_foko_chat_messages_problem(problem, status);
        goto answered;
    }

    if (ngx_foko_chat_writer.nwaiting + ngx_foko_chat_writer.nwriting
        + ngx_foko_chat_writer.npreparing
        >= fmcf->write_queue)
    {
        *status = NGX_HTTP_SERVICE_UNAVAILABLE;
        *answer = json_pack("{s:s,s:s}", "code", "storage_unavailable",
                            "message", "too many messages are waiting for "
                            "the database");
        goto answered;
    }

    t = ngx_alloc(sizeof(ngx_foko_chat_target_t), post->log);
    if (t == NULL) {
        goto failed;
    }

    t->handler = post->handler;
    t->data = post->data;

    op->load_seq = ngx_foko_chat_seq_last(shm, op->ch.id) < 0;

    if (!op->load_seq
        && ngx_foko_chat_cache_member(shm, op->ch.id, op->user, &member)
           == NGX_OK)
    {
        /* a cached channel: no MongoDB round trip before the write */

        if (!member) {
            ngx_free(t);
            *status = NGX_HTTP_NOT_FOUND;
            *answer = json_pack("{s:s,s:s}", "code", "not_found",
                                "message", "no such channel");
            goto answered;
        }

        rc = ngx_foko_chat_messages_take(shm, op, &message);

        if (rc == NGX_OK) {
            ngx_free(t);
            *status = NGX_HTTP_OK;
            *answer = json_pack("{s:o}", "message", message);
            goto answered;
        }

        if (rc == NGX_ERROR || ngx_foko_chat_writer_add(NULL, t, message)
                               != NGX_OK)
        {
            if (rc != NGX_ERROR) {
                json_decref(message);
            }

            ngx_free(t);
            goto failed;
        }

        ngx_foko_chat_messages_release(op);
        ngx_foko_chat_task_free(task);

        *handle = t;
        return NGX_DONE;
    }

    op->run = ngx_foko_chat_messages_prepare_run;
    task->run = ngx_foko_chat_messages_thread;
    task->done = ngx_foko_chat_messages_submitted;
    task->saved_done = NULL;
    op->target = t;

    if (ngx_foko_chat_messages_wait(task, NULL)) {
        ngx_foko_chat_writer.npreparing++;
        *handle = t;
        return NGX_DONE;
    }

    if (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool) != NGX_OK) {
        ngx_free(t);
        *status = NGX_HTTP_SERVICE_UNAVAILABLE;
        *answer = json_pack("{s:s,s:s}", "code", "overloaded",
                            "message", "the server is too busy");
        goto answered;
    }

    /* counted against the write queue from now on */
    ngx_foko_chat_writer.npreparing++;

    *handle = t;
    return NGX_DONE;

answered:

    ngx_foko_chat_messages_release(op);
    ngx_foko_chat_task_free(task);

    return (*answer == NULL) ? NGX_ERROR : NGX_OK;

failed:

    ngx_foko_chat_messages_release(op);
    ngx_foko_chat_task_free(task);

    return NGX_ERROR;
}


void
ngx_foko_chat_messages_cancel(void *handle)
{
    ngx_foko_chat_target_t  *t = handle;

    t->handler = NULL;
}


/* the channel is known now: the post goes on as for a cached channel */

static ngx_int_t
ngx_foko_chat_messages_submitted(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    json_t                   *message;
    ngx_int_t                 rc;
    ngx_foko_chat_target_t   *t;
    ngx_foko_chat_shm_ctx_t  *shm;

    ngx_foko_chat_writer.npreparing--;

    t = op->target;
    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    if ((task->failed || op->rc == NGX_ERROR || op->found != NGX_OK)
        && !op->waited)
    {
        /* the waiters try for themselves */
        ngx_foko_chat_messages_loaded(op->ch.id);
    }

    if (task->failed || op->rc == NGX_ERROR) {
        if (op->err[0]) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "foko chat: %s",
                          op->err);
        }

        ngx_foko_chat_target_answer(t, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    json_pack("{s:s,s:s}", "code",
                                              task->failed
                                              ? "overloaded"
                                              : "storage_unavailable",
                                              "message",
                                              task->failed
                                              ? "the server is too busy"
                                              : "the database is "
                                                "unreachable"));
        goto done;
    }

    if (op->found == NGX_DECLINED) {
        ngx_foko_chat_target_answer(t, NGX_HTTP_NOT_FOUND,
                                    json_pack("{s:s,s:s}", "code",
                                              "not_found", "message",
                                              "no such channel"));
        goto done;
    }

    if (op->names) {
        (void) ngx_foko_chat_cache_put_channel(shm, &op->ch, op->names,
                                               op->latest, op->ring_size,
                                               op->cache_gen);
    }

    if (op->load_seq && op->result == NULL
        && ngx_foko_chat_seq_load(shm, op->ch.id, op->stored_seq) != NGX_OK)
    {
        ngx_foko_chat_messages_loaded(op->ch.id);
        goto failed;
    }

    if (!op->waited) {
        ngx_foko_chat_messages_loaded(op->ch.id);
    }

    if (op->result) {
        ngx_foko_chat_target_answer(t, NGX_HTTP_OK,
                                    json_pack("{s:O}", "message",
                                              op->result));
        goto done;
    }

    rc = ngx_foko_chat_messages_take(shm, op, &message);

    if (rc == NGX_OK) {
        ngx_foko_chat_target_answer(t, NGX_HTTP_OK,
                                    json_pack("{s:o}", "message", message));
        goto done;
    }

    if (rc == NGX_ERROR) {
        goto failed;
    }

    if (ngx_foko_chat_writer_add(NULL, t, message) != NGX_OK) {
        json_decref(message);
        goto failed;
    }

    ngx_foko_chat_messages_release(op);

    return NGX_OK;

failed:

    ngx_foko_chat_target_answer(t, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                json_pack("{s:s,s:s}", "code", "internal",
                                          "message", "the message was not "
                                          "taken"));
done:

    ngx_foko_chat_messages_release(op);

    return NGX_OK;
}


/* calls the target's handler, if anybody waits, and frees the target */

static void
ngx_foko_chat_target_answer(ngx_foko_chat_target_t *t, ngx_uint_t status,
    json_t *answer)
{
    if (t->handler) {
        t->handler(t->data, status, answer);

    } else {
        json_decref(answer);
    }

    ngx_free(t);
}


static json_t *
ngx_foko_chat_messages_problem(const char *problem, ngx_uint_t *status)
{
    if (problem == NGX_FOKO_CHAT_TEXT_TOO_LONG) {
        *status = NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
        return json_pack("{s:s,s:s}", "code", "too_large",
                         "message", "the message is too long");
    }

    *status = NGX_HTTP_BAD_REQUEST;

    return json_pack("{s:s,s:s+,s:s}", "code", "invalid_request",
                     "message", "text ", problem, "field", "text");
}


void
ngx_foko_chat_messages_publish_read(u_char *channel, u_char *user,
    int64_t seq)
{
    char                     *json;
    json_t                   *event;
    ngx_foko_chat_event_t     ev;
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    event = json_pack("{s:s,s:s#,s:s#,s:I}", "type", "read",
                      "channel_id", channel, (int) 24,
                      "user_id", user, (size_t) 24,
                      "seq", (json_int_t) seq);
    json = event ? json_dumps(event, JSON_COMPACT) : NULL;
    json_decref(event);

    if (json == NULL || shm == NULL) {
        free(json);
        return;
    }

    ngx_memzero(&ev, sizeof(ngx_foko_chat_event_t));
    ev.kind = NGX_FOKO_CHAT_EV_CHANNEL;
    ngx_memcpy(ev.channel, channel, 24);
    ngx_memcpy(ev.user, user, 24);
    ev.json = (u_char *) json;
    ev.json_len = ngx_strlen(json);

    (void) ngx_foko_chat_bus_publish(shm, &ev);

    free(json);
}


/* thread side: what the channel cache needs besides the channel itself */

static void
ngx_foko_chat_messages_load(ngx_foko_chat_msg_op_t *op)
{
    ngx_uint_t  more;

    if (ngx_foko_chat_store_usernames(op->ch.members, op->ch.nmembers,
                                      &op->names, op->err)
        != NGX_OK
        || (op->ring_size
            && ngx_foko_chat_store_messages_page(op->ch.id, 0, -1, -1,
                                                 op->ring_size, &op->latest,
                                                 &more, op->err)
               != NGX_OK))
    {
        /* the cache stays empty; the request goes on */
        json_decref(op->names);
        op->names = NULL;
        op->err[0] = '\0';
    }
}


static void
ngx_foko_chat_messages_cache(ngx_http_request_t *r,
    ngx_foko_chat_msg_op_t *op)
{
    if (op->names == NULL) {
        return;
    }

    (void) ngx_foko_chat_cache_put_channel(ngx_foko_chat_shm_get(r), &op->ch,
                                           op->names, op->latest,
                                           op->ring_size, op->cache_gen);
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


static ngx_int_t
ngx_foko_chat_messages_update_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    json_t     *body;
    ngx_int_t   rc;

    if (ngx_foko_chat_messages_answered(task, &rc)) {
        return rc;
    }

    if (op->found == NGX_ABORT) {
        /* no such message, not the caller's, or deleted already */
        ngx_foko_chat_messages_release(op);
        return ngx_foko_chat_json_send_error(task->request,
                                             NGX_HTTP_NOT_FOUND, "not_found",
                                             "no such message of yours");
    }

    (void) ngx_foko_chat_cache_put_message(
               ngx_foko_chat_shm_get(task->request), op->result, NULL,
               op->remove ? NGX_FOKO_CHAT_CACHE_DELETED
                          : NGX_FOKO_CHAT_CACHE_UPDATED);

    body = json_pack("{s:O}", "message", op->result);
    ngx_foko_chat_messages_release(op);

    return ngx_foko_chat_json_send(task->request, NGX_HTTP_OK, body);
}


static void
ngx_foko_chat_messages_read_run(ngx_foko_chat_msg_op_t *op)
{
    if (!ngx_foko_chat_messages_find_mine(op)) {
        return;
    }

    if (ngx_foko_chat_store_read_set(op->ch.id, op->user, op->seq, op->err)
        != NGX_OK)
    {
        op->rc = NGX_ERROR;
    }
}


static ngx_int_t
ngx_foko_chat_messages_read_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_msg_op_t  *op = task->data;

    json_t     *body;
    ngx_int_t   rc;

    if (ngx_foko_chat_messages_answered(task, &rc)) {
        return rc;
    }

    ngx_foko_chat_messages_publish_read(op->ch.id, op->user, op->seq);

    body = json_pack("{s:s,s:I}", "channel_id", (char *) op->ch.id,
                     "seq", (json_int_t) op->seq);
    ngx_foko_chat_messages_release(op);

    return ngx_foko_chat_json_send(task->request, NGX_HTTP_OK, body);
}


/* a new message in the API's shape, with a fresh ObjectId */

static json_t *
ngx_foko_chat_messages_new(ngx_foko_chat_msg_op_t *op, int64_t seq)
{
    char        id[25];
    u_char      created[sizeof("1970-01-01T00:00:00.000Z")];
    json_t     *m;
    ngx_tm_t    tm;
    ngx_time_t *tp;
    bson_oid_t  oid;

    bson_oid_init(&oid, NULL);
    bson_oid_to_string(&oid, id);

    tp = ngx_timeofday();
    ngx_gmtime(tp->sec, &tm);

    (void) ngx_sprintf(created, "%4d-%02d-%02dT%02d:%02d:%02d.%03MZ%Z",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       tp->msec);

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
 * loads it and the post is recorded as the loader (0).  A waiting REST
 * request is held as a task's is.
 */

static ngx_uint_t
ngx_foko_chat_messages_wait(ngx_foko_chat_task_t *task, ngx_http_request_t *r)
{
    ngx_queue_t             *q;
    ngx_foko_chat_load_t    *load;
    ngx_foko_chat_msg_op_t  *op = task->data;

    for (q = ngx_queue_head(&ngx_foko_chat_loads);
         q != ngx_queue_sentinel(&ngx_foko_chat_loads);
         q = ngx_queue_next(q))
    {
        load = ngx_queue_data(q, ngx_foko_chat_load_t, queue);

        if (ngx_memcmp(load->id, op->ch.id, 24) != 0) {
            continue;
        }

        if (r && ngx_foko_chat_task_attach(task, r) != NGX_OK) {
            return 0;
        }

        ngx_queue_insert_tail(&load->waiters, &task->queue);
        ngx_foko_chat_loads_waited++;

        return 1;
    }

    load = ngx_alloc(sizeof(ngx_foko_chat_load_t), ngx_cycle->log);

    if (load) {
        ngx_memcpy(load->id, op->ch.id, 24);
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
    ngx_uint_t                  member;
    ngx_queue_t                *q, waiters;
    ngx_connection_t           *c;
    ngx_http_request_t         *r;
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

        if (ngx_memcmp(load->id, channel, 24) == 0) {
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
        r = task->request;

        ngx_foko_chat_writer.npreparing--;

        if (op->target == NULL && r == NULL) {
            /* the client went away meanwhile */
            ngx_foko_chat_messages_release(op);
            ngx_foko_chat_task_free(task);
            continue;
        }

        if (ngx_foko_chat_seq_last(shm, op->ch.id) >= 0
            && ngx_foko_chat_cache_member(shm, op->ch.id, op->user, &member)
               == NGX_OK)
        {
            if (op->target) {
                task->done = ngx_foko_chat_messages_submitted;
                op->waited = 1;
                op->load_seq = 0;
                op->found = member ? NGX_OK : NGX_DECLINED;
                op->rc = NGX_OK;

                /* as if the task had run: the cache answers */
                ngx_foko_chat_writer.npreparing++;
                (void) ngx_foko_chat_messages_submitted(task);
                ngx_foko_chat_task_free(task);
                continue;
            }

            rc = member ? ngx_foko_chat_messages_accept(r, op)
                        : ngx_foko_chat_send_not_found(r);

            ngx_foko_chat_messages_release(op);

            c = r->connection;
            task->cleanup->handler = NULL;
            ngx_foko_chat_task_free(task);

            ngx_http_finalize_request(r, rc);
            ngx_http_run_posted_requests(c);
            continue;
        }

        /* not cached after all: this post loads it */

        if (ngx_foko_chat_messages_wait(task, NULL)) {
            /* another waiter became the loader just now */
            ngx_foko_chat_writer.npreparing++;
            continue;
        }

        rc = (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool)
              == NGX_OK) ? NGX_OK : NGX_ERROR;

        if (rc == NGX_OK) {
            ngx_foko_chat_writer.npreparing++;
            continue;
        }

        /* the pool is full: answered as a failed task */
        ngx_foko_chat_writer.npreparing++;
        ngx_foko_chat_task_fail(task);
    }
}


void
ngx_foko_chat_messages_stats(ngx_uint_t *queued, ngx_uint_t *loads,
    ngx_uint_t *waited)
{
    *queued = ngx_foko_chat_writer.nwaiting + ngx_foko_chat_writer.nwriting;
    *loads = ngx_foko_chat_loads_started;
    *waited = ngx_foko_chat_loads_waited;
}


/* the write queue */

static ngx_int_t
ngx_foko_chat_writer_add(ngx_http_request_t *r, ngx_foko_chat_target_t *t,
    json_t *message)
{
    ngx_http_cleanup_t       *cln;
    ngx_foko_chat_pending_t  *p;

    p = ngx_calloc(sizeof(ngx_foko_chat_pending_t), ngx_cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (r) {
        cln = ngx_http_cleanup_add(r, 0);
        if (cln == NULL) {
            ngx_free(p);
            return NGX_ERROR;
        }

        cln->handler = ngx_foko_chat_writer_cleanup;
        cln->data = p;

        p->request = r;
        p->cleanup = cln;

        /* held until the batch is written; the task's hold ends now */
        r->main->count++;
    }

    p->message = message;
    p->target = t;

    ngx_queue_insert_tail(&ngx_foko_chat_writer.waiting, &p->queue);
    ngx_foko_chat_writer.nwaiting++;

    if (!ngx_foko_chat_writer.hold.timer_set) {
        ngx_add_timer(&ngx_foko_chat_writer.hold, 60000);
    }

    ngx_foko_chat_writer_kick();

    return NGX_OK;
}


/* the client went away: the message is written all the same */

static void
ngx_foko_chat_writer_cleanup(void *data)
{
    ngx_foko_chat_pending_t  *p = data;

    p->request = NULL;
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


static void
ngx_foko_chat_writer_retry(ngx_event_t *ev)
{
    ngx_foko_chat_writer_kick();
}


static void
ngx_foko_chat_writer_hold(ngx_event_t *ev)
{
    if (ngx_foko_chat_writer.nwaiting + ngx_foko_chat_writer.nwriting) {
        ngx_add_timer(ev, 60000);
    }
}


/*
 * One round trip for the whole batch.  A batch that collides with stored
 * messages (a retry of a post whose first attempt is stored but no longer
 * in the ring, or the same client_id posted at once on two workers) is
 * written again one by one: a post whose client_id was taken is answered
 * with the message that took it, and its own seq holds a tombstone, so
 * that the channel's history has no gap.
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
            json_decref(batch->messages[i]);
            batch->messages[i] = existing;
            batch->status[i] = NGX_HTTP_OK;
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


/* the answer to a post: {"message": <the message>} */
static ngx_str_t  ngx_foko_chat_post_prefix = ngx_string("{\"message\":");
static ngx_str_t  ngx_foko_chat_post_suffix = ngx_string("}");


static ngx_int_t
ngx_foko_chat_writer_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_batch_t  *batch = task->data;

    char                     *text;
    json_t                   *body;
    ngx_str_t                 t;
    ngx_uint_t                i, reseq;
    ngx_queue_t              *q, again, done;
    ngx_connection_t         *c;
    ngx_http_request_t       *r;
    ngx_foko_chat_shm_ctx_t  *shm;
    ngx_foko_chat_pending_t  *p;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    ngx_queue_init(&again);

    ngx_foko_chat_writer.busy = 0;

    if (task->failed || batch->rc != NGX_OK) {

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

        /* back to the head of the queue, in order */

        while (!ngx_queue_empty(&ngx_foko_chat_writer.writing)) {
            q = ngx_queue_last(&ngx_foko_chat_writer.writing);
            ngx_queue_remove(q);
            ngx_queue_insert_head(&ngx_foko_chat_writer.waiting, q);
            ngx_foko_chat_writer.nwriting--;
            ngx_foko_chat_writer.nwaiting++;
        }

        ngx_add_timer(&ngx_foko_chat_writer.retry,
                      ngx_foko_chat_writer.backoff);

        ngx_foko_chat_writer.backoff = ngx_min(2 * ngx_foko_chat_writer.backoff,
                                               NGX_FOKO_CHAT_RETRY_MAX);
        return NGX_OK;
    }

    if (ngx_foko_chat_writer.failing) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "foko chat: messages are written again");
        ngx_foko_chat_writer.failing = 0;
    }

    ngx_foko_chat_writer.backoff = NGX_FOKO_CHAT_RETRY_MIN;

    /*
     * The next batch goes to MongoDB before this one's posts are answered,
     * so that MongoDB does not wait for the answers; unless some post must
     * be written again with a new seq, ahead of the waiting ones.
     */

    ngx_queue_init(&done);
    reseq = 0;

    for (i = 0; !ngx_queue_empty(&ngx_foko_chat_writer.writing); i++) {
        q = ngx_queue_head(&ngx_foko_chat_writer.writing);
        ngx_queue_remove(q);
        ngx_queue_insert_tail(&done, q);
        ngx_foko_chat_writer.nwriting--;

        if (batch->status[i] == NGX_FOKO_CHAT_SEQ_TAKEN) {
            reseq = 1;
        }
    }

    if (!reseq) {
        ngx_foko_chat_writer_kick();
    }

    for (i = 0; !ngx_queue_empty(&done); i++) {
        q = ngx_queue_head(&done);
        ngx_queue_remove(q);

        p = ngx_queue_data(q, ngx_foko_chat_pending_t, queue);
        r = p->request;

        if (batch->status[i] == NGX_FOKO_CHAT_SEQ_TAKEN) {
            if (shm && p->tries++ < NGX_FOKO_CHAT_SEQ_TRIES
                && ngx_foko_chat_writer_reseq(shm, p, batch->stored[i])
                   == NGX_OK)
            {
                /* written again with its new seq, before the others */
                json_decref(batch->messages[i]);
                ngx_queue_insert_tail(&again, q);
                continue;
            }

            batch->status[i] = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        text = NULL;

        if (batch->status[i] == NGX_HTTP_INTERNAL_SERVER_ERROR) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "foko chat: a message collides with a stored "
                          "one of the same seq");

        } else {
            /* one serialization for the ring, the event and the answer */
            text = json_dumps(batch->messages[i], JSON_COMPACT);

            if (shm && batch->tombs[i]) {
                /* the seq is the tombstone's; the message is older */
                (void) ngx_foko_chat_cache_put_message(shm, batch->tombs[i],
                                                   NULL,
                                                   NGX_FOKO_CHAT_CACHE_NEW);
                (void) ngx_foko_chat_cache_put_message(shm,
                                                   batch->messages[i], text,
                                                   NGX_FOKO_CHAT_CACHE_QUIET);

            } else if (shm) {
                (void) ngx_foko_chat_cache_put_message(shm,
                                                   batch->messages[i], text,
                                                   NGX_FOKO_CHAT_CACHE_NEW);
            }
        }

        if (p->target) {
            ngx_foko_chat_target_answer(p->target, batch->status[i],
                (batch->status[i] == NGX_HTTP_INTERNAL_SERVER_ERROR)
                ? json_pack("{s:s,s:s}", "code", "internal", "message",
                            "the message collides with a stored one")
                : json_pack("{s:O}", "message", batch->messages[i]));
        }

        if (r) {
            p->cleanup->handler = NULL;
            c = r->connection;

            if (batch->status[i] == NGX_HTTP_INTERNAL_SERVER_ERROR) {
                ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);

            } else if (text) {
                t.data = (u_char *) text;
                t.len = ngx_strlen(text);
                ngx_http_finalize_request(r,
                    ngx_foko_chat_json_send_text(r, batch->status[i],
                                                 &ngx_foko_chat_post_prefix,
                                                 &t,
                                                 &ngx_foko_chat_post_suffix));

            } else {
                body = json_pack("{s:O}", "message", batch->messages[i]);
                ngx_http_finalize_request(r,
                    ngx_foko_chat_json_send(r, batch->status[i], body));
            }

            ngx_http_run_posted_requests(c);
        }

        free(text);
        json_decref(batch->messages[i]);
        json_decref(batch->tombs[i]);
        json_decref(p->message);
        ngx_free(p);
    }

    while (!ngx_queue_empty(&again)) {
        q = ngx_queue_last(&again);
        ngx_queue_remove(q);
        ngx_queue_insert_head(&ngx_foko_chat_writer.waiting, q);
        ngx_foko_chat_writer.nwaiting++;
    }

    if (ngx_foko_chat_writer.nwaiting == 0
        && ngx_foko_chat_writer.hold.timer_set)
    {
        ngx_del_timer(&ngx_foko_chat_writer.hold);
    }

    ngx_foko_chat_writer_kick();

    return NGX_OK;
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

    if (channel == NULL || ngx_strlen(channel) != 24) {
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
