
/*
 * Foko chat: several hosts through Redis: posts numbered by all hosts
 * together.
 *
 * Each host's writer numbers a batch just before it writes it, with one
 * script call: per channel, a counter "foko:seq:<channel>" in Redis is
 * raised past the highest of itself and this host's own last seq, by as
 * many posts as the batch has there.  The floor heals a counter that
 * Redis lost (a restart, a failover) without asking MongoDB; a counter
 * that went back all the same only costs a collision, which the unique
 * {channel_id, seq} index catches as before.  A counter left alone for a
 * day expires, and the next post starts it again from the floor.
 *
 * The counters also tell a host of seqs that no event brought it: a post
 * whose stream entry was lost (trimmed, or its host died between
 * MongoDB's acknowledgement and its XADD) in a channel where nothing is
 * posted after it.  Every NGX_FOKO_CHAT_REDIS_AUDIT_EVERY seconds, and
 * right after a loss, one worker of the host reads the counters of up to
 * NGX_FOKO_CHAT_REDIS_AUDIT_MAX of the zone's channels (the next ones
 * each time) with one MGET; a counter past the zone's is a seq that the
 * channel then waits for as another host's, and that the gap check fills
 * from MongoDB (or with a tombstone) after the stall period.  After a
 * loss (Redis restarted empty, say, with the events and the counters),
 * the rounds go through all the channels again, and a counter that Redis
 * lacks is asked of MongoDB instead: a post whose event and counter were
 * both lost is found all the same.
 */


#include "ngx_foko_chat_redis_int.h"
#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_store.h"


#define NGX_FOKO_CHAT_REDIS_SEQ_TIMEOUT  250       /* ms: then the zone */
#define NGX_FOKO_CHAT_REDIS_AUDIT_EVERY  10        /* seconds */
#define NGX_FOKO_CHAT_REDIS_AUDIT_MAX    512       /* channels a round */
#define NGX_FOKO_CHAT_REDIS_AUDIT_TIMEOUT  1000    /* ms */
#define NGX_FOKO_CHAT_REDIS_AUDIT_MONGO  64        /* a second, after a loss */
#define NGX_FOKO_CHAT_REDIS_AUDIT_STALE  60        /* seconds: a dead round */


typedef struct {
    ngx_uint_t                 n;
    u_char                    *channels;       /* n ids, one after another */
    int64_t                   *tops;
    time_t                     started;        /* the round's turn */
    ngx_uint_t                 loss;           /* the pass, or 0 */
    ngx_uint_t                 next;           /* the next round's index */
    ngx_int_t                  rc;
    u_char                     err[NGX_FOKO_CHAT_REDIS_ERR_LEN];
} ngx_foko_chat_redis_audit_t;


static redisReply *ngx_foko_chat_redis_seq_call(redisContext **c,
    ngx_msec_t timeout, int argc, const char **argv, size_t *lens,
    ngx_uint_t n, u_char *err);
static void ngx_foko_chat_redis_seq_keys(u_char *names, u_char *channels,
    ngx_uint_t n, const char **argv, size_t *lens);
static ngx_int_t ngx_foko_chat_redis_seq_read(u_char *channels, ngx_uint_t n,
    int64_t *tops, u_char *err);
static void ngx_foko_chat_redis_audit_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_redis_audit_done(ngx_foko_chat_task_t *task);
static ngx_foko_chat_task_t *ngx_foko_chat_redis_audit_task(ngx_uint_t max);
static void ngx_foko_chat_redis_audit_end(ngx_foko_chat_shm_ctx_t *shm,
    time_t started, ngx_uint_t loss, ngx_uint_t next);
static void ngx_foko_chat_redis_audit_heard(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_redis_audit_t *au, const char *from);
static ngx_int_t ngx_foko_chat_redis_audit_mongo(
    ngx_foko_chat_redis_audit_t *au);
static void ngx_foko_chat_redis_audit_mongo_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_redis_audit_mongo_done(
    ngx_foko_chat_task_t *task);


/* KEYS: the counters; ARGV: per key, the floor and how many to take */

static const char  ngx_foko_chat_redis_seq_script[] =
    "local out = {}\n"
    "for i = 1, #KEYS do\n"
    "  local n = tonumber(redis.call('GET', KEYS[i]) or '0')\n"
    "  local floor = tonumber(ARGV[2 * i - 1])\n"
    "  if n < floor then n = floor end\n"
    "  out[i] = n + 1\n"
    "  redis.call('SET', KEYS[i],\n"
    "             string.format('%d', n + tonumber(ARGV[2 * i])),\n"
    "             'EX', 86400)\n"
    "end\n"
    "return out\n";


ngx_thread_pool_t *
ngx_foko_chat_redis_seq_pool(void)
{
    return ngx_foko_chat_redis_conf ? ngx_foko_chat_redis_conf->pool.pool
                                    : NULL;
}


ngx_int_t
ngx_foko_chat_redis_seq_take(u_char *channels, int64_t *floors,
    ngx_uint_t *counts, ngx_uint_t n, int64_t *firsts, u_char *err)
{
    u_char         *names, *nums, *p;
    size_t         *lens;
    ngx_int_t       rc;
    ngx_uint_t      i, argc;
    const char    **argv;
    redisReply     *reply;
    redisContext   *c;

    /* per channel: its key, its floor and its count */

    argv = malloc((3 + 3 * n) * (sizeof(char *) + sizeof(size_t)));
    names = malloc(n * (sizeof("foko:seq:") + NGX_FOKO_CHAT_OID_LEN)
                   + (2 * n + 1) * NGX_INT64_LEN);

    if (argv == NULL || names == NULL) {
        free(argv);
        free(names);
        ngx_cpystrn(err, (u_char *) "out of memory",
                    NGX_FOKO_CHAT_REDIS_ERR_LEN);
        return NGX_ERROR;
    }

    lens = (size_t *) (argv + 3 + 3 * n);
    nums = names + n * (sizeof("foko:seq:") + NGX_FOKO_CHAT_OID_LEN);

    argc = 0;
    argv[argc] = "EVAL"; lens[argc++] = 4;
    argv[argc] = ngx_foko_chat_redis_seq_script;
    lens[argc++] = sizeof(ngx_foko_chat_redis_seq_script) - 1;

    p = nums;
    argv[argc] = (const char *) p;
    p = ngx_sprintf(p, "%ui", n);
    lens[argc] = p - (u_char *) argv[argc];
    argc++;

    ngx_foko_chat_redis_seq_keys(names, channels, n, argv + argc,
                                 lens + argc);
    argc += n;

    for (i = 0; i < n; i++) {
        argv[argc] = (const char *) p;
        p = ngx_sprintf(p, "%L", floors[i]);
        lens[argc] = p - (u_char *) argv[argc];
        argc++;

        argv[argc] = (const char *) p;
        p = ngx_sprintf(p, "%ui", counts[i]);
        lens[argc] = p - (u_char *) argv[argc];
        argc++;
    }

    reply = ngx_foko_chat_redis_seq_call(&c, NGX_FOKO_CHAT_REDIS_SEQ_TIMEOUT,
                                         (int) argc, argv, lens, n, err);
    rc = NGX_ERROR;

    if (reply == NULL) {
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (reply->element[i]->type != REDIS_REPLY_INTEGER
            || reply->element[i]->integer <= floors[i])
        {
            ngx_foko_chat_redis_failed(&c, NULL, err);
            freeReplyObject(reply);
            goto done;
        }

        firsts[i] = reply->element[i]->integer;
    }

    freeReplyObject(reply);
    ngx_foko_chat_redis_kept_put(c);
    rc = NGX_OK;

done:

    free(argv);
    free(names);

    return rc;
}


/* on a thread: a call answered with one element per channel; NULL: not */

static redisReply *
ngx_foko_chat_redis_seq_call(redisContext **c, ngx_msec_t timeout, int argc,
    const char **argv, size_t *lens, ngx_uint_t n, u_char *err)
{
    redisReply  *reply;

    reply = ngx_foko_chat_redis_kept_call(c, timeout, argc, argv, lens, err);

    if (reply
        && (reply->type != REDIS_REPLY_ARRAY || reply->elements != n))
    {
        ngx_foko_chat_redis_failed(c, reply, err);
        return NULL;
    }

    return reply;
}


/* the counters' keys of "n" channels, written into "names" */

static void
ngx_foko_chat_redis_seq_keys(u_char *names, u_char *channels, ngx_uint_t n,
    const char **argv, size_t *lens)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        argv[i] = (const char *) names
                  + i * (sizeof("foko:seq:") + NGX_FOKO_CHAT_OID_LEN);
        (void) ngx_sprintf((u_char *) argv[i], "foko:seq:%*s",
                           (size_t) NGX_FOKO_CHAT_OID_LEN,
                           channels + i * NGX_FOKO_CHAT_OID_LEN);
        lens[i] = sizeof("foko:seq:") - 1 + NGX_FOKO_CHAT_OID_LEN;
    }
}


/* on a thread: the counters of "n" channels, 0 for one that Redis lacks */

static ngx_int_t
ngx_foko_chat_redis_seq_read(u_char *channels, ngx_uint_t n, int64_t *tops,
    u_char *err)
{
    u_char         *names;
    size_t         *lens;
    ngx_int_t       rc;
    ngx_uint_t      i;
    const char    **argv;
    redisReply     *reply, *e;
    redisContext   *c;

    argv = malloc((1 + n) * (sizeof(char *) + sizeof(size_t)));
    names = malloc(n * (sizeof("foko:seq:") + NGX_FOKO_CHAT_OID_LEN));

    if (argv == NULL || names == NULL) {
        free(argv);
        free(names);
        ngx_cpystrn(err, (u_char *) "out of memory",
                    NGX_FOKO_CHAT_REDIS_ERR_LEN);
        return NGX_ERROR;
    }

    lens = (size_t *) (argv + 1 + n);

    argv[0] = "MGET";
    lens[0] = 4;

    ngx_foko_chat_redis_seq_keys(names, channels, n, argv + 1, lens + 1);

    reply = ngx_foko_chat_redis_seq_call(&c,
                                         NGX_FOKO_CHAT_REDIS_AUDIT_TIMEOUT,
                                         (int) (1 + n), argv, lens, n, err);
    rc = NGX_ERROR;

    if (reply == NULL) {
        goto done;
    }

    for (i = 0; i < n; i++) {
        e = reply->element[i];
        tops[i] = (e->type == REDIS_REPLY_STRING)
                  ? ngx_atoof((u_char *) e->str, e->len) : 0;
    }

    freeReplyObject(reply);
    ngx_foko_chat_redis_kept_put(c);
    rc = NGX_OK;

done:

    free(argv);
    free(names);

    return rc;
}


/*
 * Called every second by every worker (ngx_foko_chat_gaps.c): the
 * worker whose turn it is reads the next channels' counters.  One round
 * runs at a time on the host; one that has run for
 * NGX_FOKO_CHAT_REDIS_AUDIT_STALE seconds (its worker died) no longer
 * holds the turn.
 *
 * After a loss the rounds go through all the zone's channels again,
 * NGX_FOKO_CHAT_REDIS_AUDIT_MONGO of them a second, and a counter that
 * Redis lacks is asked of MongoDB.  A round that fails (Redis or MongoDB
 * down, a kept connection that a restart closed) is run again the next
 * second from the same channel; the pass ends when a round reaches the
 * last channel.  A loss during the pass starts it again.
 */

void
ngx_foko_chat_redis_seq_audit(ngx_foko_chat_shm_ctx_t *shm)
{
    time_t                        now;
    ngx_uint_t                    n, from, max, loss;
    ngx_thread_pool_t            *pool;
    ngx_foko_chat_task_t         *task;
    ngx_foko_chat_redis_sh_t     *rsh;
    ngx_foko_chat_redis_audit_t  *au;

    pool = ngx_foko_chat_redis_seq_pool();

    if (pool == NULL) {
        return;
    }

    rsh = &shm->sh->redis;
    now = ngx_time();

    /* one worker a round: the one that moves "audited" */

    ngx_shmtx_lock(&shm->shpool->mutex);

    if (rsh->audit_busy
        && now - (time_t) rsh->audit_busy < NGX_FOKO_CHAT_REDIS_AUDIT_STALE)
    {
        ngx_shmtx_unlock(&shm->shpool->mutex);
        return;
    }

    loss = 0;

    if (rsh->losses != rsh->loss_audited) {

        if (rsh->losses != rsh->loss_pass) {
            rsh->loss_pass = rsh->losses;
            rsh->loss_from = 0;

        } else if (now == (time_t) rsh->audited) {
            ngx_shmtx_unlock(&shm->shpool->mutex);
            return;
        }

        loss = rsh->loss_pass;
        from = rsh->loss_from;
        max = NGX_FOKO_CHAT_REDIS_AUDIT_MONGO;

    } else if (now - (time_t) rsh->audited < NGX_FOKO_CHAT_REDIS_AUDIT_EVERY)
    {
        ngx_shmtx_unlock(&shm->shpool->mutex);
        return;

    } else {
        from = rsh->audit_from;
        max = NGX_FOKO_CHAT_REDIS_AUDIT_MAX;
    }

    rsh->audited = now;
    rsh->audit_busy = now;

    ngx_shmtx_unlock(&shm->shpool->mutex);

    task = ngx_foko_chat_redis_audit_task(max);
    if (task == NULL) {
        ngx_foko_chat_redis_audit_end(shm, now, 0, 0);
        return;
    }

    au = task->data;
    au->started = now;
    au->loss = loss;

    n = ngx_foko_chat_seq_ids(shm, au->channels, max, &from);
    au->next = from;

    if (loss == 0) {
        /* an ordinary round goes on from the next channel all the same */
        ngx_shmtx_lock(&shm->shpool->mutex);
        rsh->audit_from = from;
        ngx_shmtx_unlock(&shm->shpool->mutex);
    }

    if (n == 0) {
        ngx_foko_chat_task_free(task);
        ngx_foko_chat_redis_audit_end(shm, now, loss, 0);
        return;
    }

    au->n = n;
    task->run = ngx_foko_chat_redis_audit_run;
    task->done = ngx_foko_chat_redis_audit_done;

    if (ngx_foko_chat_task_post(task, pool) != NGX_OK) {
        ngx_foko_chat_task_free(task);
        ngx_foko_chat_redis_audit_end(shm, now, 0, 0);
    }
}


/* a task with room for the ids and tops of "max" channels */

static ngx_foko_chat_task_t *
ngx_foko_chat_redis_audit_task(ngx_uint_t max)
{
    ngx_foko_chat_task_t         *task;
    ngx_foko_chat_redis_audit_t  *au;

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_redis_audit_t)
                                     + max * (sizeof(int64_t)
                                              + NGX_FOKO_CHAT_OID_LEN),
                                     ngx_cycle->log);
    if (task == NULL) {
        return NULL;
    }

    au = task->data;
    au->tops = (int64_t *) (au + 1);
    au->channels = (u_char *) (au->tops + max);

    return task;
}


/*
 * A round is over: the turn is given back, and a round of an after-loss
 * pass that succeeded moves the pass on ("loss" is 0 otherwise), to its
 * end when "next" is 0.
 */

static void
ngx_foko_chat_redis_audit_end(ngx_foko_chat_shm_ctx_t *shm, time_t started,
    ngx_uint_t loss, ngx_uint_t next)
{
    ngx_foko_chat_redis_sh_t  *rsh;

    rsh = &shm->sh->redis;

    ngx_shmtx_lock(&shm->shpool->mutex);

    if ((time_t) rsh->audit_busy == started) {
        rsh->audit_busy = 0;
    }

    if (loss && loss == rsh->loss_pass) {
        rsh->loss_from = next;

        if (next == 0) {
            rsh->loss_audited = loss;
        }
    }

    ngx_shmtx_unlock(&shm->shpool->mutex);
}


static void
ngx_foko_chat_redis_audit_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_redis_audit_t  *au = task->data;

    au->rc = ngx_foko_chat_redis_seq_read(au->channels, au->n, au->tops,
                                          au->err);
}


static ngx_int_t
ngx_foko_chat_redis_audit_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_redis_audit_t  *au = task->data;

    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);
    if (shm == NULL) {
        return NGX_OK;
    }

    if (task->failed || au->rc != NGX_OK) {
        /* Redis's state and the reader report it; the next round tries */
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "foko chat: seq counters not read: %s",
                       task->failed ? "the thread pool failed"
                                    : (char *) au->err);
        ngx_foko_chat_redis_audit_end(shm, au->started, 0, 0);
        return NGX_OK;
    }

    ngx_foko_chat_redis_audit_heard(shm, au, "Redis's counters");

    if (au->loss && ngx_foko_chat_redis_audit_mongo(au) == NGX_AGAIN) {
        /* the round ends when MongoDB has answered */
        return NGX_OK;
    }

    ngx_foko_chat_redis_audit_end(shm, au->started, au->loss, au->next);

    return NGX_OK;
}


/* the tops read past this zone's: their seqs are waited for */

static void
ngx_foko_chat_redis_audit_heard(ngx_foko_chat_shm_ctx_t *shm,
    ngx_foko_chat_redis_audit_t *au, const char *from)
{
    ngx_uint_t  i, heard;

    heard = 0;

    for (i = 0; i < au->n; i++) {
        if (au->tops[i] > 0) {
            heard += ngx_foko_chat_seq_heard(shm,
                         au->channels + i * NGX_FOKO_CHAT_OID_LEN,
                         au->tops[i]);
        }
    }

    if (heard) {
        (void) ngx_atomic_fetch_add(&shm->sh->redis.heard, heard);

        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "foko chat: %s of %ui of %ui channels "
                      "are past this host's: their seqs are waited for, "
                      "then taken from MongoDB or filled with tombstones",
                      from, heard, au->n);
    }
}


/*
 * In an after-loss pass: the channels of the round whose counter Redis
 * lacks get their highest stored seq from MongoDB, on the storage thread
 * pool; NGX_AGAIN when it is asked, NGX_OK when there is nothing to ask,
 * NGX_ERROR when it could not be asked.
 */

static ngx_int_t
ngx_foko_chat_redis_audit_mongo(ngx_foko_chat_redis_audit_t *au)
{
    ngx_uint_t                    i, n;
    ngx_foko_chat_task_t         *task;
    ngx_foko_chat_main_conf_t    *fmcf;
    ngx_foko_chat_redis_audit_t  *mo;

    n = 0;

    for (i = 0; i < au->n; i++) {
        n += (au->tops[i] == 0);
    }

    if (n == 0) {
        return NGX_OK;
    }

    task = ngx_foko_chat_redis_audit_task(n);
    if (task == NULL) {
        return NGX_ERROR;
    }

    mo = task->data;
    mo->started = au->started;
    mo->loss = au->loss;
    mo->next = au->next;

    for (i = 0; i < au->n; i++) {
        if (au->tops[i] == 0) {
            ngx_memcpy(mo->channels + mo->n++ * NGX_FOKO_CHAT_OID_LEN,
                       au->channels + i * NGX_FOKO_CHAT_OID_LEN,
                       NGX_FOKO_CHAT_OID_LEN);
        }
    }

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);

    task->run = ngx_foko_chat_redis_audit_mongo_run;
    task->done = ngx_foko_chat_redis_audit_mongo_done;

    if (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool) != NGX_OK) {
        ngx_foko_chat_task_free(task);
        return NGX_ERROR;
    }

    return NGX_AGAIN;
}


static void
ngx_foko_chat_redis_audit_mongo_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log)
{
    ngx_foko_chat_redis_audit_t  *mo = task->data;

    u_char      id[NGX_FOKO_CHAT_OID_SIZE], err[NGX_FOKO_CHAT_ERR_LEN];
    ngx_uint_t  i;

    mo->rc = NGX_OK;

    for (i = 0; i < mo->n; i++) {
        ngx_memcpy(id, mo->channels + i * NGX_FOKO_CHAT_OID_LEN,
                   NGX_FOKO_CHAT_OID_LEN);
        id[NGX_FOKO_CHAT_OID_LEN] = '\0';

        if (ngx_foko_chat_store_messages_max_seq(id, &mo->tops[i], err)
            != NGX_OK)
        {
            mo->tops[i] = 0;
            ngx_cpystrn(mo->err, err, NGX_FOKO_CHAT_REDIS_ERR_LEN);
            mo->rc = NGX_ERROR;
        }
    }
}


static ngx_int_t
ngx_foko_chat_redis_audit_mongo_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_redis_audit_t  *mo = task->data;

    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);
    if (shm == NULL) {
        return NGX_OK;
    }

    if (task->failed || mo->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "foko chat: the highest seqs of channels whose "
                      "counters Redis lost were not all read from "
                      "MongoDB, asked again in a second: %s",
                      task->failed ? "the thread pool failed"
                                   : (char *) mo->err);
        ngx_foko_chat_redis_audit_heard(shm, mo, "MongoDB's highest seqs");
        ngx_foko_chat_redis_audit_end(shm, mo->started, 0, 0);
        return NGX_OK;
    }

    ngx_foko_chat_redis_audit_heard(shm, mo, "MongoDB's highest seqs");
    ngx_foko_chat_redis_audit_end(shm, mo->started, mo->loss, mo->next);

    return NGX_OK;
}
