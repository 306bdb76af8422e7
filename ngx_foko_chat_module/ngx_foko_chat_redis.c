
/*
 * Foko chat: several hosts through Redis: the publisher (the directives
 * are in ngx_foko_chat_redis_conf.c).
 *
 * An event that went into this host's zone is copied into a bounded queue
 * of the worker; a posted event drains the queue, in batches, into a task
 * on the Redis thread pool that appends each partition's share with one
 * Lua script: the partition's counter is raised once per entry and the
 * entry goes into the partition's stream with that number as its id,
 * "<n>-0", so that the ids of a partition are dense and a reader sees any
 * gap.  The script is called by its SHA1 (EVALSHA); a Redis that does
 * not know it (restarted, SCRIPT FLUSH) answers NOSCRIPT, having done
 * nothing, and gets the script itself (EVAL) in the same task.  One batch
 * is in flight per worker; a failed one is written again after a backoff.
 * Entries the full queue had to drop leave a "gap" entry behind, which
 * makes every other host's clients resume.
 *
 * The timers of a batch in flight and of a retry are not cancelable: a
 * worker that shuts down (a reload, a stop) writes its queue out first,
 * for up to NGX_FOKO_CHAT_REDIS_EXIT seconds of failures.
 */


#include "ngx_foko_chat_redis_int.h"

#include <sys/random.h>
#include <pthread.h>
#include <ngx_sha1.h>


#define NGX_FOKO_CHAT_REDIS_QUEUE        8192      /* entries a worker */
#define NGX_FOKO_CHAT_REDIS_QUEUE_BYTES  (16 * 1024 * 1024)
#define NGX_FOKO_CHAT_REDIS_BATCH        512       /* entries a task */
#define NGX_FOKO_CHAT_REDIS_BATCH_BYTES  (1024 * 1024)
#define NGX_FOKO_CHAT_REDIS_FIELDS       6         /* arguments an entry */
#define NGX_FOKO_CHAT_REDIS_EXIT         10        /* s to flush at exit */
#define NGX_FOKO_CHAT_REDIS_KEEP         8         /* idle connections */


/*
 * KEYS: the counter, the stream; ARGV: MAXLEN, the host, entries this
 * host dropped (a "gap" entry marks them), then per entry: kind, channel,
 * seq, user, ids, json.  A counter that went missing restarts from the
 * stream's top, so that ids never go backwards.  A presence entry (seq 1:
 * up, 0: down) also updates the host's online hash, "foko:{<host>}:online"
 * (user: channels), which a host that starts or lost events reads.
 */

static const char  ngx_foko_chat_redis_script[] =
    "local n = redis.call('GET', KEYS[1])\n"
    "if n then\n"
    "  n = tonumber(n)\n"
    "else\n"
    "  n = 0\n"
    "  local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)\n"
    "  if top[1] then n = tonumber(string.match(top[1][1], '^%d+')) end\n"
    "end\n"
    "local function add(f)\n"
    "  n = n + 1\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1],\n"
    "             string.format('%d-0', n), unpack(f))\n"
    "end\n"
    "if tonumber(ARGV[3]) > 0 then\n"
    "  add({'host', ARGV[2], 'kind', 'gap', 'seq', ARGV[3]})\n"
    "end\n"
    "for i = 4, #ARGV, 6 do\n"
    "  if ARGV[i] == 'presence' then\n"
    "    local k = 'foko:{' .. ARGV[2] .. '}:online'\n"
    "    if ARGV[i + 2] == '1' then\n"
    "      redis.call('HSET', k, ARGV[i + 3], ARGV[i + 4])\n"
    "    else\n"
    "      redis.call('HDEL', k, ARGV[i + 3])\n"
    "    end\n"
    "  end\n"
    "  add({'host', ARGV[2], 'kind', ARGV[i], 'channel', ARGV[i + 1],\n"
    "       'seq', ARGV[i + 2], 'user', ARGV[i + 3], 'ids', ARGV[i + 4],\n"
    "       'json', ARGV[i + 5]})\n"
    "end\n"
    "redis.call('SET', KEYS[1], string.format('%d', n))\n"
    "return n\n";


typedef struct {
    ngx_queue_t                queue;
    ngx_uint_t                 partition;
    const char                *kind;
    u_char                     channel[NGX_FOKO_CHAT_OID_LEN];
    u_char                     user[NGX_FOKO_CHAT_OID_LEN];
    size_t                     user_len;
    int64_t                    seq;
    size_t                     ids_len;
    size_t                     json_len;
    u_char                     data[1];        /* ids, then the JSON */
} ngx_foko_chat_redis_entry_t;


/* this worker's publisher */
typedef struct {
    redisContext              *c;              /* the task's while in flight */
    ngx_queue_t                waiting;
    ngx_uint_t                 nwaiting;
    size_t                     bytes;
    ngx_uint_t                *gaps;           /* dropped, per partition */
    ngx_uint_t                 ngaps;
    ngx_event_t                drain;
    ngx_event_t                retry;
    ngx_event_t                hold;           /* a batch is in flight */
    ngx_msec_t                 backoff;
    time_t                     exiting;        /* first failure since */
    unsigned                   in_flight:1;
    unsigned                   full:1;         /* logged */
} ngx_foko_chat_redis_pub_t;


typedef struct {
    ngx_foko_chat_redis_conf_t  *rcf;
    redisContext                *c;
    ngx_queue_t                  batch;
    ngx_uint_t                   n;
    ngx_uint_t                  *gaps;         /* taken, per partition */
    u_char                      *ok;           /* written, per partition */
    ngx_int_t                    rc;
    u_char                       err[NGX_FOKO_CHAT_REDIS_ERR_LEN];
} ngx_foko_chat_redis_job_t;


static ngx_int_t ngx_foko_chat_redis_host_init(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_redis_conf_t *rcf);
static void ngx_foko_chat_redis_sha_init(void);
static void ngx_foko_chat_redis_enqueue(ngx_foko_chat_redis_entry_t *e);
static void ngx_foko_chat_redis_drain(ngx_event_t *ev);
static void ngx_foko_chat_redis_retry(ngx_event_t *ev);
static void ngx_foko_chat_redis_hold(ngx_event_t *ev);
static void ngx_foko_chat_redis_write_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_redis_write_once(
    ngx_foko_chat_redis_job_t *job);
static ngx_int_t ngx_foko_chat_redis_write_round(
    ngx_foko_chat_redis_job_t *job, ngx_uint_t eval, ngx_uint_t *answered);
static ngx_int_t ngx_foko_chat_redis_write_group(ngx_foko_chat_redis_job_t *job,
    ngx_uint_t p, ngx_uint_t eval);
static ngx_int_t ngx_foko_chat_redis_write_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_redis_requeue(ngx_foko_chat_redis_job_t *job);
static int ngx_foko_chat_redis_timeout(redisContext *c, ngx_msec_t ms);


ngx_foko_chat_redis_conf_t  *ngx_foko_chat_redis_conf;
ngx_foko_chat_shm_ctx_t     *ngx_foko_chat_redis_shm;
u_char  ngx_foko_chat_redis_host[NGX_FOKO_CHAT_HOST_ID_MAX + 2
                                + NGX_FOKO_CHAT_REDIS_ZONE_ID];
size_t  ngx_foko_chat_redis_host_len;

static ngx_foko_chat_redis_pub_t  ngx_foko_chat_redis_pub;

/* connections of the calls of limits and numbering, kept for the next */
static redisContext    *ngx_foko_chat_redis_idle[NGX_FOKO_CHAT_REDIS_KEEP];
static ngx_uint_t       ngx_foko_chat_redis_nidle;
static pthread_mutex_t  ngx_foko_chat_redis_idle_mutex =
                            PTHREAD_MUTEX_INITIALIZER;

/* the script's SHA1 in hex, made at the worker's start */
static u_char  ngx_foko_chat_redis_sha[40];

static const char *ngx_foko_chat_redis_states[] = {
    "unknown", "up", "down"
};


/* the script's SHA1, as EVALSHA and SCRIPT LOAD name it */

static void
ngx_foko_chat_redis_sha_init(void)
{
    u_char      digest[20];
    ngx_sha1_t  sha1;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, ngx_foko_chat_redis_script,
                    sizeof(ngx_foko_chat_redis_script) - 1);
    ngx_sha1_final(digest, &sha1);

    ngx_hex_dump(ngx_foko_chat_redis_sha, digest, sizeof(digest));
}


ngx_int_t
ngx_foko_chat_redis_init_process(ngx_cycle_t *cycle)
{
    ngx_foko_chat_shm_ctx_t     *ctx;
    ngx_foko_chat_redis_pub_t   *pub;
    ngx_foko_chat_main_conf_t   *fmcf;
    ngx_foko_chat_redis_conf_t  *rcf;

    fmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_foko_chat_module);
    ctx = ngx_foko_chat_shm_cycle(cycle);

    if (fmcf == NULL || fmcf->redis == NULL || fmcf->redis->url.data == NULL
        || ctx == NULL || ctx->sh == NULL)
    {
        return NGX_OK;
    }

    rcf = fmcf->redis;

    if (ngx_foko_chat_redis_host_init(ctx, rcf) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_foko_chat_redis_sha_init();

    pub = &ngx_foko_chat_redis_pub;

    pub->gaps = ngx_calloc(rcf->partitions * sizeof(ngx_uint_t), cycle->log);
    if (pub->gaps == NULL) {
        return NGX_ERROR;
    }

    ngx_queue_init(&pub->waiting);

    pub->drain.handler = ngx_foko_chat_redis_drain;
    pub->drain.log = cycle->log;
    pub->drain.data = pub;

    pub->retry.handler = ngx_foko_chat_redis_retry;
    pub->retry.log = cycle->log;
    pub->retry.data = pub;

    pub->hold.handler = ngx_foko_chat_redis_hold;
    pub->hold.log = cycle->log;
    pub->hold.data = pub;

    ngx_foko_chat_redis_conf = rcf;
    ngx_foko_chat_redis_shm = ctx;

    if ((ngx_process == NGX_PROCESS_WORKER && ngx_worker == 0)
        || ngx_process == NGX_PROCESS_SINGLE)
    {
        return ngx_foko_chat_redis_reader_init(cycle);
    }

    return NGX_OK;
}


/*
 * The host id: the configured one, else the zone's, generated when the
 * zone was made, so that a reload keeps it.
 */

static ngx_int_t
ngx_foko_chat_redis_host_init(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_redis_conf_t *rcf)
{
    u_char                    *p;
    u_char                     bytes[16];
    ngx_uint_t                 i;
    ngx_foko_chat_redis_sh_t  *rsh;

    rsh = &ctx->sh->redis;

    if (getrandom(bytes, sizeof(bytes), GRND_NONBLOCK)
        != (ssize_t) sizeof(bytes))
    {
        for (i = 0; i < sizeof(bytes); i++) {
            bytes[i] = (u_char) ngx_random();
        }
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (rsh->zone_id[0] == '\0') {
        *ngx_hex_dump(rsh->zone_id, bytes, NGX_FOKO_CHAT_REDIS_ZONE_ID / 2)
            = '\0';
    }

    if (rcf->host_id.len) {
        *ngx_cpymem(rsh->host_id, rcf->host_id.data, rcf->host_id.len) = '\0';

    } else if (rsh->host_id[0] == '\0') {
        *ngx_hex_dump(ngx_cpymem(rsh->host_id, "h-", 2), bytes + 8, 6) = '\0';
    }

    p = ngx_sprintf(ngx_foko_chat_redis_host, "%s/%s",
                    rsh->host_id, rsh->zone_id);
    ngx_foko_chat_redis_host_len = p - ngx_foko_chat_redis_host;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_OK;
}


void
ngx_foko_chat_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t                  *q;
    ngx_foko_chat_redis_pub_t    *pub;
    ngx_foko_chat_redis_entry_t  *e;

    if (ngx_foko_chat_redis_conf == NULL) {
        return;
    }

    pub = &ngx_foko_chat_redis_pub;

    /* the thread pools have stopped: nothing runs on the connection */

    if (pub->c && !pub->in_flight) {
        redisFree(pub->c);
        pub->c = NULL;
    }

    if (pub->nwaiting) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "foko chat: %ui events were not written to Redis "
                      "before the worker exited; other hosts' clients "
                      "resume when they see the gap", pub->nwaiting);
    }

    while (!ngx_queue_empty(&pub->waiting)) {
        q = ngx_queue_head(&pub->waiting);
        ngx_queue_remove(q);
        e = ngx_queue_data(q, ngx_foko_chat_redis_entry_t, queue);
        ngx_free(e);
    }

    pub->nwaiting = 0;
}


/* the hooks */

void
ngx_foko_chat_redis_publish_stored(ngx_uint_t kind, u_char *channel,
    int64_t seq, char *text)
{
    size_t                        len;
    ngx_foko_chat_redis_entry_t  *e;

    static const char  *kinds[] = {
        NULL, "message", "message_updated", "message_deleted"
    };

    if (ngx_foko_chat_redis_conf == NULL || kind == 0 || kind > 3) {
        return;
    }

    len = ngx_strlen(text);

    e = ngx_alloc(sizeof(ngx_foko_chat_redis_entry_t) + len, ngx_cycle->log);
    if (e == NULL) {
        return;
    }

    e->kind = kinds[kind];
    ngx_memcpy(e->channel, channel, NGX_FOKO_CHAT_OID_LEN);
    e->user_len = 0;
    e->seq = seq;
    e->ids_len = 0;
    e->json_len = len;
    ngx_memcpy(e->data, text, len);

    ngx_foko_chat_redis_enqueue(e);
}


void
ngx_foko_chat_redis_publish_event(const char *kind,
    ngx_foko_chat_event_t *ev)
{
    size_t                        ids;
    ngx_foko_chat_redis_entry_t  *e;

    if (ngx_foko_chat_redis_conf == NULL) {
        return;
    }

    ids = ev->nids * NGX_FOKO_CHAT_OID_LEN;

    e = ngx_alloc(sizeof(ngx_foko_chat_redis_entry_t) + ids + ev->json_len,
                  ngx_cycle->log);
    if (e == NULL) {
        return;
    }

    e->kind = kind;
    ngx_memcpy(e->channel, ev->channel, NGX_FOKO_CHAT_OID_LEN);
    ngx_memcpy(e->user, ev->user, NGX_FOKO_CHAT_OID_LEN);
    e->user_len = ngx_strnlen(ev->user, NGX_FOKO_CHAT_OID_LEN);
    e->seq = ev->seq;
    e->ids_len = ids;
    e->json_len = ev->json_len;

    if (ids) {
        ngx_memcpy(e->data, ev->ids, ids);
    }

    ngx_memcpy(e->data + ids, ev->json, ev->json_len);

    ngx_foko_chat_redis_enqueue(e);
}


/* partitioned by user: a user's transitions stay in order */

void
ngx_foko_chat_redis_publish_presence(u_char *user, u_char *ids,
    ngx_uint_t n, ngx_uint_t up)
{
    size_t                        len;
    ngx_foko_chat_redis_entry_t  *e;

    if (ngx_foko_chat_redis_conf == NULL) {
        return;
    }

    len = n * NGX_FOKO_CHAT_OID_LEN;

    e = ngx_alloc(sizeof(ngx_foko_chat_redis_entry_t) + len, ngx_cycle->log);
    if (e == NULL) {
        return;
    }

    e->kind = "presence";
    ngx_memcpy(e->channel, user, NGX_FOKO_CHAT_OID_LEN);
    ngx_memcpy(e->user, user, NGX_FOKO_CHAT_OID_LEN);
    e->user_len = NGX_FOKO_CHAT_OID_LEN;
    e->seq = up ? 1 : 0;
    e->ids_len = len;
    e->json_len = 0;

    if (len) {
        ngx_memcpy(e->data, ids, len);
    }

    ngx_foko_chat_redis_enqueue(e);
}


static void
ngx_foko_chat_redis_enqueue(ngx_foko_chat_redis_entry_t *e)
{
    size_t                      size;
    ngx_foko_chat_redis_pub_t  *pub;

    pub = &ngx_foko_chat_redis_pub;

    e->partition = ngx_crc32_short(e->channel, NGX_FOKO_CHAT_OID_LEN)
                   % ngx_foko_chat_redis_conf->partitions;

    size = e->ids_len + e->json_len;

    if (pub->nwaiting >= NGX_FOKO_CHAT_REDIS_QUEUE
        || pub->bytes + size > NGX_FOKO_CHAT_REDIS_QUEUE_BYTES)
    {
        if (!pub->full) {
            pub->full = 1;
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "foko chat: the queue of events for Redis is "
                          "full: events are dropped, and the WebSocket "
                          "clients of other hosts will resume");
        }

        pub->gaps[e->partition]++;
        pub->ngaps++;
        (void) ngx_atomic_fetch_add(&ngx_foko_chat_redis_shm->sh->redis.dropped,
                                    1);
        ngx_free(e);
        return;
    }

    ngx_queue_insert_tail(&pub->waiting, &e->queue);
    pub->nwaiting++;
    pub->bytes += size;

    if (!pub->drain.posted) {
        ngx_post_event(&pub->drain, &ngx_posted_events);
    }
}


/* the next batch, unless one is in flight or a retry waits */

static void
ngx_foko_chat_redis_drain(ngx_event_t *ev)
{
    size_t                        bytes, size;
    ngx_uint_t                    p, n;
    ngx_queue_t                  *q;
    ngx_foko_chat_task_t         *task;
    ngx_foko_chat_redis_pub_t    *pub = ev->data;
    ngx_foko_chat_redis_job_t    *job;
    ngx_foko_chat_redis_conf_t   *rcf;
    ngx_foko_chat_redis_entry_t  *e;

    rcf = ngx_foko_chat_redis_conf;

    if (pub->in_flight || pub->retry.timer_set
        || (pub->nwaiting == 0 && pub->ngaps == 0))
    {
        return;
    }

    n = rcf->partitions;

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_redis_job_t)
                                     + n * sizeof(ngx_uint_t) + n,
                                     ngx_cycle->log);
    if (task == NULL) {
        ngx_add_timer(&pub->retry, ngx_foko_chat_redis_backoff(&pub->backoff));
        return;
    }

    job = task->data;
    job->rcf = rcf;
    job->c = pub->c;
    job->gaps = (ngx_uint_t *) (job + 1);
    job->ok = (u_char *) (job->gaps + n);
    ngx_queue_init(&job->batch);

    for (p = 0; p < n; p++) {
        job->gaps[p] = pub->gaps[p];
    }

    bytes = 0;

    while (!ngx_queue_empty(&pub->waiting)
           && job->n < NGX_FOKO_CHAT_REDIS_BATCH
           && bytes < NGX_FOKO_CHAT_REDIS_BATCH_BYTES)
    {
        q = ngx_queue_head(&pub->waiting);
        e = ngx_queue_data(q, ngx_foko_chat_redis_entry_t, queue);

        ngx_queue_remove(q);
        ngx_queue_insert_tail(&job->batch, q);

        size = e->ids_len + e->json_len;
        bytes += size;
        pub->bytes -= size;
        pub->nwaiting--;
        job->n++;
    }

    task->run = ngx_foko_chat_redis_write_run;
    task->done = ngx_foko_chat_redis_write_done;

    pub->c = NULL;
    pub->in_flight = 1;

    ngx_add_timer(&pub->hold, NGX_FOKO_CHAT_REDIS_CONNECT_TIMEOUT
                              + 2 * NGX_FOKO_CHAT_REDIS_TIMEOUT);

    if (ngx_foko_chat_task_post(task, rcf->pool.pool) != NGX_OK) {
        ngx_cpystrn(job->err, (u_char *) "the thread pool's queue is full",
                    NGX_FOKO_CHAT_REDIS_ERR_LEN);
        job->rc = NGX_ERROR;
        ngx_foko_chat_task_fail(task);
    }
}


static void
ngx_foko_chat_redis_retry(ngx_event_t *ev)
{
    ngx_foko_chat_redis_drain(&ngx_foko_chat_redis_pub.drain);
}


/* keeps a worker that shuts down until its batch is answered */

static void
ngx_foko_chat_redis_hold(ngx_event_t *ev)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "foko chat: a batch for Redis is slow to be answered");
}


/* on a thread: every partition's share in one pipeline */

static void
ngx_foko_chat_redis_write_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_redis_job_t  *job = task->data;

    ngx_uint_t  stale;

    stale = (job->c != NULL);

    if (ngx_foko_chat_redis_write_once(job) == NGX_DECLINED && stale) {
        /*
         * The kept connection was dead before anything was answered (a
         * restarted Redis closed it): once more, on a new one.
         */
        (void) ngx_foko_chat_redis_write_once(job);
    }
}


/*
 * NGX_DECLINED: the connection failed before any answer.  Per partition,
 * job->ok: 0 nothing written, 1 written, 2 sent and not answered yet, 3
 * NOSCRIPT (to be sent again with the script).
 */

static ngx_int_t
ngx_foko_chat_redis_write_once(ngx_foko_chat_redis_job_t *job)
{
    ngx_int_t   rc;
    ngx_uint_t  p, answered;

    job->rc = NGX_OK;

    if (job->c == NULL) {
        job->c = ngx_foko_chat_redis_connect(job->rcf, job->err);
        if (job->c == NULL) {
            job->rc = NGX_ERROR;
            return NGX_ERROR;
        }
    }

    answered = 0;

    rc = ngx_foko_chat_redis_write_round(job, 0, &answered);

    for (p = 0; rc != NGX_DECLINED && p < job->rcf->partitions; p++) {
        if (job->ok[p] == 3) {
            rc = ngx_foko_chat_redis_write_round(job, 1, &answered);
            break;
        }
    }

    return rc;
}


/*
 * On a thread: the partitions' calls in one pipeline, by SHA1 or, with
 * "eval", those that were answered NOSCRIPT, with the script.
 */

static ngx_int_t
ngx_foko_chat_redis_write_round(ngx_foko_chat_redis_job_t *job,
    ngx_uint_t eval, ngx_uint_t *answered)
{
    ngx_uint_t    p, sent;
    redisReply   *reply;

    sent = 0;

    for (p = 0; p < job->rcf->partitions; p++) {
        if (eval && job->ok[p] != 3) {
            continue;
        }

        job->ok[p] = 0;

        switch (ngx_foko_chat_redis_write_group(job, p, eval)) {

        case NGX_OK:
            job->ok[p] = 2;
            sent++;
            break;

        case NGX_DECLINED:
            break;

        default:
            ngx_cpystrn(job->err, (u_char *) "out of memory",
                        NGX_FOKO_CHAT_REDIS_ERR_LEN);
            job->rc = NGX_ERROR;
            p = job->rcf->partitions;
        }
    }

    for (p = 0; sent && p < job->rcf->partitions; p++) {
        if (job->ok[p] != 2) {
            continue;
        }

        job->ok[p] = 0;
        sent--;

        if (redisGetReply(job->c, (void **) &reply) != REDIS_OK) {
            ngx_foko_chat_redis_failed(&job->c, NULL, job->err);
            job->rc = NGX_ERROR;
            return *answered ? NGX_ERROR : NGX_DECLINED;
        }

        (*answered)++;

        if (reply->type != REDIS_REPLY_ERROR) {
            job->ok[p] = 1;

        } else if (!eval && reply->len >= 8
                   && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
        {
            job->ok[p] = 3;

        } else {
            ngx_cpystrn(job->err, (u_char *) reply->str,
                        NGX_FOKO_CHAT_REDIS_ERR_LEN);
            job->rc = NGX_ERROR;
        }

        freeReplyObject(reply);
    }

    return job->rc;
}


/* on a thread: appends one partition's script call; NGX_DECLINED: none */

static ngx_int_t
ngx_foko_chat_redis_write_group(ngx_foko_chat_redis_job_t *job, ngx_uint_t p,
    ngx_uint_t eval)
{
    u_char                       *nums, *num;
    size_t                       *lens;
    ngx_int_t                     rc;
    ngx_uint_t                    n, argc, i;
    const char                  **argv;
    ngx_queue_t                  *q;
    ngx_foko_chat_redis_entry_t  *e;
    u_char                        keys[2][NGX_FOKO_CHAT_REDIS_KEY_LEN];

    n = 0;

    for (q = ngx_queue_head(&job->batch);
         q != ngx_queue_sentinel(&job->batch);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_foko_chat_redis_entry_t, queue);
        n += (e->partition == p);
    }

    if (n == 0 && job->gaps[p] == 0) {
        return NGX_DECLINED;
    }

    argc = 8 + n * NGX_FOKO_CHAT_REDIS_FIELDS;

    argv = malloc(argc * (sizeof(char *) + sizeof(size_t)));
    nums = malloc((n + 3) * NGX_INT64_LEN);

    if (argv == NULL || nums == NULL) {
        free(argv);
        free(nums);
        return NGX_ERROR;
    }

    lens = (size_t *) (argv + argc);
    num = nums;
    i = 0;

#define ngx_foko_chat_redis_arg(s, l)                                        \
    argv[i] = (const char *) (s); lens[i] = (l); i++

    if (eval) {
        ngx_foko_chat_redis_arg("EVAL", 4);
        ngx_foko_chat_redis_arg(ngx_foko_chat_redis_script,
                                sizeof(ngx_foko_chat_redis_script) - 1);

    } else {
        ngx_foko_chat_redis_arg("EVALSHA", 7);
        ngx_foko_chat_redis_arg(ngx_foko_chat_redis_sha,
                                sizeof(ngx_foko_chat_redis_sha));
    }

    ngx_foko_chat_redis_arg("2", 1);

    *ngx_foko_chat_redis_key(keys[0], p, "n") = '\0';
    *ngx_foko_chat_redis_key(keys[1], p, "ev") = '\0';
    ngx_foko_chat_redis_arg(keys[0], ngx_strlen(keys[0]));
    ngx_foko_chat_redis_arg(keys[1], ngx_strlen(keys[1]));

    ngx_foko_chat_redis_arg(num, ngx_sprintf(num, "%ui",
                                             job->rcf->stream_length) - num);
    num += NGX_INT64_LEN;
    ngx_foko_chat_redis_arg(ngx_foko_chat_redis_host,
                            ngx_foko_chat_redis_host_len);
    ngx_foko_chat_redis_arg(num, ngx_sprintf(num, "%ui", job->gaps[p]) - num);
    num += NGX_INT64_LEN;

    for (q = ngx_queue_head(&job->batch);
         q != ngx_queue_sentinel(&job->batch);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_foko_chat_redis_entry_t, queue);

        if (e->partition != p) {
            continue;
        }

        ngx_foko_chat_redis_arg(e->kind, ngx_strlen(e->kind));
        ngx_foko_chat_redis_arg(e->channel, NGX_FOKO_CHAT_OID_LEN);
        ngx_foko_chat_redis_arg(num, ngx_sprintf(num, "%L", e->seq) - num);
        num += NGX_INT64_LEN;
        ngx_foko_chat_redis_arg(e->user, e->user_len);
        ngx_foko_chat_redis_arg(e->data, e->ids_len);
        ngx_foko_chat_redis_arg(e->data + e->ids_len, e->json_len);
    }

#undef ngx_foko_chat_redis_arg

    rc = (redisAppendCommandArgv(job->c, (int) i, argv, lens) == REDIS_OK)
         ? NGX_OK : NGX_ERROR;

    free(argv);
    free(nums);

    return rc;
}


static ngx_int_t
ngx_foko_chat_redis_write_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_redis_job_t  *job = task->data;

    ngx_uint_t                    p, n;
    ngx_queue_t                  *q, *next;
    ngx_foko_chat_redis_pub_t    *pub;
    ngx_foko_chat_redis_entry_t  *e;

    pub = &ngx_foko_chat_redis_pub;
    pub->in_flight = 0;
    pub->c = job->c;

    if (pub->hold.timer_set) {
        ngx_del_timer(&pub->hold);
    }

    /* what was written is done with; the rest goes back, in order */

    n = 0;

    for (q = ngx_queue_head(&job->batch);
         q != ngx_queue_sentinel(&job->batch);
         q = next)
    {
        next = ngx_queue_next(q);
        e = ngx_queue_data(q, ngx_foko_chat_redis_entry_t, queue);

        if (!task->failed && job->ok[e->partition] == 1) {
            ngx_queue_remove(q);
            ngx_free(e);
            n++;
        }
    }

    for (p = 0; !task->failed && p < job->rcf->partitions; p++) {
        if (job->ok[p] == 1) {
            pub->gaps[p] -= job->gaps[p];
            pub->ngaps -= job->gaps[p];
        }
    }

    if (n) {
        (void) ngx_atomic_fetch_add(
                         &ngx_foko_chat_redis_shm->sh->redis.published, n);
    }

    ngx_foko_chat_redis_requeue(job);

    if (job->rc != NGX_OK) {
        ngx_foko_chat_redis_state(0, "write", job->err);

        if (ngx_exiting || ngx_terminate) {
            if (pub->exiting == 0) {
                pub->exiting = ngx_time();
            }

            if (ngx_terminate
                || ngx_time() - pub->exiting >= NGX_FOKO_CHAT_REDIS_EXIT)
            {
                /* given up: exit_process counts what is left */
                return NGX_OK;
            }
        }

        ngx_add_timer(&pub->retry, ngx_foko_chat_redis_backoff(&pub->backoff));
        return NGX_OK;
    }

    ngx_foko_chat_redis_state(1, "write", NULL);
    pub->backoff = 0;
    pub->full = 0;

    if (pub->nwaiting || pub->ngaps) {
        ngx_post_event(&pub->drain, &ngx_posted_events);
    }

    return NGX_OK;
}


static void
ngx_foko_chat_redis_requeue(ngx_foko_chat_redis_job_t *job)
{
    ngx_queue_t                  *q;
    ngx_foko_chat_redis_pub_t    *pub;
    ngx_foko_chat_redis_entry_t  *e;

    pub = &ngx_foko_chat_redis_pub;

    while (!ngx_queue_empty(&job->batch)) {
        q = ngx_queue_last(&job->batch);
        ngx_queue_remove(q);
        ngx_queue_insert_head(&pub->waiting, q);

        e = ngx_queue_data(q, ngx_foko_chat_redis_entry_t, queue);
        pub->nwaiting++;
        pub->bytes += e->ids_len + e->json_len;
    }
}


/* shared with the reader */

redisContext *
ngx_foko_chat_redis_connect(ngx_foko_chat_redis_conf_t *rcf, u_char *err)
{
    redisReply      *reply;
    redisContext    *c;
    struct timeval   tv;

    tv.tv_sec = NGX_FOKO_CHAT_REDIS_CONNECT_TIMEOUT / 1000;
    tv.tv_usec = (NGX_FOKO_CHAT_REDIS_CONNECT_TIMEOUT % 1000) * 1000;

    c = redisConnectWithTimeout(rcf->ip, rcf->port, tv);

    if (c == NULL || c->err) {
        ngx_foko_chat_redis_failed(&c, NULL, err);
        return NULL;
    }

    tv.tv_sec = NGX_FOKO_CHAT_REDIS_TIMEOUT / 1000;
    tv.tv_usec = (NGX_FOKO_CHAT_REDIS_TIMEOUT % 1000) * 1000;

    if (redisSetTimeout(c, tv) != REDIS_OK) {
        ngx_foko_chat_redis_failed(&c, NULL, err);
        return NULL;
    }

    if (rcf->db) {
        reply = redisCommand(c, "SELECT %u", (unsigned) rcf->db);

        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            ngx_foko_chat_redis_failed(&c, reply, err);
            return NULL;
        }

        freeReplyObject(reply);
    }

    return c;
}


redisContext *
ngx_foko_chat_redis_kept_get(u_char *err, ngx_uint_t *kept)
{
    redisContext  *c;

    c = NULL;

    (void) pthread_mutex_lock(&ngx_foko_chat_redis_idle_mutex);

    if (ngx_foko_chat_redis_nidle) {
        c = ngx_foko_chat_redis_idle[--ngx_foko_chat_redis_nidle];
    }

    (void) pthread_mutex_unlock(&ngx_foko_chat_redis_idle_mutex);

    *kept = (c != NULL);

    if (c) {
        return c;
    }

    return ngx_foko_chat_redis_connect(ngx_foko_chat_redis_conf, err);
}


void
ngx_foko_chat_redis_kept_put(redisContext *c)
{
    (void) pthread_mutex_lock(&ngx_foko_chat_redis_idle_mutex);

    if (ngx_foko_chat_redis_nidle < NGX_FOKO_CHAT_REDIS_KEEP) {
        ngx_foko_chat_redis_idle[ngx_foko_chat_redis_nidle++] = c;
        c = NULL;
    }

    (void) pthread_mutex_unlock(&ngx_foko_chat_redis_idle_mutex);

    if (c) {
        redisFree(c);
    }
}


redisReply *
ngx_foko_chat_redis_kept_call(redisContext **c, ngx_msec_t timeout,
    int argc, const char **argv, const size_t *lens, u_char *err)
{
    ngx_uint_t   kept, again;
    redisReply  *reply;

    *c = ngx_foko_chat_redis_kept_get(err, &kept);

    for (again = kept; *c; again = 0) {
        if (timeout
            && ngx_foko_chat_redis_timeout(*c, timeout) != REDIS_OK)
        {
            break;
        }

        reply = redisCommandArgv(*c, argc, argv, lens);

        if (reply) {
            if (timeout
                && ngx_foko_chat_redis_timeout(*c, NGX_FOKO_CHAT_REDIS_TIMEOUT)
                   != REDIS_OK)
            {
                ngx_foko_chat_redis_failed(c, reply, err);
                return NULL;
            }

            return reply;
        }

        if (!again) {
            break;
        }

        /* a kept connection that Redis closed (a restart): a new one */
        redisFree(*c);
        *c = ngx_foko_chat_redis_connect(ngx_foko_chat_redis_conf, err);
    }

    if (*c) {
        ngx_foko_chat_redis_failed(c, NULL, err);
    }

    return NULL;
}


static int
ngx_foko_chat_redis_timeout(redisContext *c, ngx_msec_t ms)
{
    struct timeval  tv;

    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;

    return redisSetTimeout(c, tv);
}


void
ngx_foko_chat_redis_failed(redisContext **c, redisReply *reply, u_char *err)
{
    const char  *text;

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        text = reply->str;

    } else if (*c == NULL) {
        text = "out of memory";

    } else if ((*c)->err) {
        text = (*c)->errstr[0] ? (*c)->errstr : "connection error";

    } else {
        text = "unexpected reply";
    }

    ngx_cpystrn(err, (u_char *) text, NGX_FOKO_CHAT_REDIS_ERR_LEN);

    if (reply) {
        freeReplyObject(reply);
    }

    if (*c) {
        redisFree(*c);
        *c = NULL;
    }
}


u_char *
ngx_foko_chat_redis_key(u_char *buf, ngx_uint_t partition, const char *what)
{
    return ngx_sprintf(buf, "foko:{%ui}:%s", partition, what);
}


/*
 * The state every worker's latest call found, for the status page; only
 * the worker whose call changed it logs the change.
 */

void
ngx_foko_chat_redis_state(ngx_uint_t up, const char *who, u_char *err)
{
    ngx_atomic_uint_t          old, state;
    ngx_foko_chat_redis_sh_t  *rsh;

    rsh = &ngx_foko_chat_redis_shm->sh->redis;
    state = up ? NGX_FOKO_CHAT_REDIS_UP : NGX_FOKO_CHAT_REDIS_DOWN;

    rsh->checked = ngx_time();
    old = rsh->state;

    if (old == state || !ngx_atomic_cmp_set(&rsh->state, old, state)) {
        return;
    }

    if (up && old == NGX_FOKO_CHAT_REDIS_UNKNOWN) {
        return;
    }

    if (up) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "foko chat: Redis at %V answers again",
                      &ngx_foko_chat_redis_conf->url);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "foko chat: Redis at %V failed (%s): %s; local delivery "
                  "goes on, events for other hosts wait",
                  &ngx_foko_chat_redis_conf->url, who, err);
}


ngx_msec_t
ngx_foko_chat_redis_backoff(ngx_msec_t *backoff)
{
    *backoff = (*backoff == 0) ? NGX_FOKO_CHAT_REDIS_BACKOFF_MIN
                               : ngx_min(*backoff * 2,
                                         NGX_FOKO_CHAT_REDIS_BACKOFF_MAX);
    return *backoff;
}


ngx_uint_t
ngx_foko_chat_redis_on(void)
{
    return ngx_foko_chat_redis_conf != NULL;
}


ngx_int_t
ngx_foko_chat_redis_status(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_redis_status_t *st)
{
    ngx_uint_t                 state;
    ngx_foko_chat_redis_sh_t  *rsh;

    if (ngx_foko_chat_redis_conf == NULL) {
        return NGX_DECLINED;
    }

    rsh = &ctx->sh->redis;

    state = rsh->state;
    if (state > NGX_FOKO_CHAT_REDIS_DOWN) {
        state = NGX_FOKO_CHAT_REDIS_UNKNOWN;
    }

    st->state = ngx_foko_chat_redis_states[state];
    st->published = rsh->published;
    st->applied = rsh->applied;
    st->own = rsh->own;
    st->losses = rsh->losses;
    st->heard = rsh->heard;
    st->dropped = rsh->dropped;
    st->lag = rsh->lag;
    st->hosts = rsh->hosts;
    st->hosts_gone = rsh->hosts_gone;
    st->checked = rsh->checked;
    st->queued = ngx_foko_chat_redis_pub.nwaiting;
    st->host_id = rsh->host_id;

    return NGX_OK;
}
