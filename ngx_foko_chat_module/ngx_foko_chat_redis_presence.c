
/*
 * Foko chat: several hosts through Redis: presence across hosts.
 *
 * A host's own transitions of a user (its first connection on the host,
 * the end of the last grace period there) travel in the streams like any
 * event (ngx_foko_chat_redis_publish_presence()); the script that appends
 * them also keeps the host's online hash "foko:{<host>}:online".  Here:
 *
 * - the entries of other hosts become nodes (user, host) in the zone
 *   (ngx_foko_chat_presence_remote_locked()), under the reader's lock;
 * - every NGX_FOKO_CHAT_REDIS_LEASE_EVERY ms worker 0 renews this host's
 *   lease in the hash "foko:hosts" (host: expiry, by Redis's clock) and
 *   reads the others'.  A host whose lease ended is gone: its nodes are
 *   dropped and its users with no node left go offline here; the one host
 *   that wins "SET foko:reap:<host> NX" deletes its lease and its hash;
 * - the first lease of a worker 0, and the first after events were lost,
 *   also read the online hashes of the live hosts (a bootstrap).
 *
 * The host's name is "<host id>/<zone id>": a restarted host is another
 * host, and the users of the one before go offline with its lease.
 */


#include "ngx_foko_chat_redis_int.h"
#include "ngx_foko_chat_presence.h"
#include "ngx_foko_chat_event.h"


#define NGX_FOKO_CHAT_REDIS_LEASE_EVERY  5000     /* ms */
#define NGX_FOKO_CHAT_REDIS_LEASE        15000    /* ms */
#define NGX_FOKO_CHAT_REDIS_HOSTS_KEY    "foko:hosts"


/*
 * KEYS: foko:hosts; ARGV: this host, the lease in ms.  Returns whether
 * this host's lease had run (0), had ended (1: the host was paused
 * longer than its lease, the others may have taken its users offline)
 * or was missing (2: a new host, reaped, or Redis lost it), and the hosts
 * whose lease runs; ended ones are cleaned up by the first to see them.
 */

static const char  ngx_foko_chat_redis_lease_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local was = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "local mine = 0\n"
    "if not was then mine = 2 elseif tonumber(was) < now then mine = 1 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))\n"
    "local all = redis.call('HGETALL', KEYS[1])\n"
    "local live = {}\n"
    "for i = 1, #all, 2 do\n"
    "  if tonumber(all[i + 1]) >= now then\n"
    "    live[#live + 1] = all[i]\n"
    "  elseif redis.call('SET', 'foko:reap:' .. all[i], '1', 'NX',\n"
    "                    'PX', ARGV[2]) then\n"
    "    redis.call('HDEL', KEYS[1], all[i])\n"
    "    redis.call('DEL', 'foko:{' .. all[i] .. '}:online')\n"
    "  end\n"
    "end\n"
    "return {mine, live}\n";


typedef struct {
    redisContext              *c;
    ngx_event_t                timer;
    unsigned                   in_flight:1;
    unsigned                   booted:1;       /* this process read hashes */
    u_char                     err[NGX_FOKO_CHAT_REDIS_ERR_LEN]; /* last */
} ngx_foko_chat_redis_lease_t;


typedef struct {
    ngx_foko_chat_redis_lease_t  *lease;
    redisContext                 *c;
    ngx_uint_t                    bootstrap;
    ngx_uint_t                    reset;
    redisReply                   *reply;
    redisReply                   *live;         /* in reply */
    ngx_int_t                     mine;         /* this host's lease */
    redisReply                  **online;       /* per live host, or NULL */
    ngx_int_t                     rc;
    u_char                        err[NGX_FOKO_CHAT_REDIS_ERR_LEN];
} ngx_foko_chat_redis_lease_job_t;


static void ngx_foko_chat_redis_lease_post(ngx_event_t *ev);
static void ngx_foko_chat_redis_lease_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_redis_online_run(
    ngx_foko_chat_redis_lease_job_t *job);
static ngx_int_t ngx_foko_chat_redis_lease_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_redis_bootstrap_locked(
    ngx_foko_chat_redis_lease_job_t *job);
static void ngx_foko_chat_redis_reap_locked(
    ngx_foko_chat_redis_lease_job_t *job, ngx_array_t *gone);
static ngx_int_t ngx_foko_chat_redis_peer_locked(u_char *name, size_t len,
    ngx_uint_t create);
static ngx_uint_t ngx_foko_chat_redis_me(u_char *name, size_t len);
static uint64_t ngx_foko_chat_redis_ms(void);
static void ngx_foko_chat_redis_lease_free(
    ngx_foko_chat_redis_lease_job_t *job);


static ngx_foko_chat_redis_lease_t  ngx_foko_chat_redis_lease;


ngx_int_t
ngx_foko_chat_redis_lease_init(ngx_cycle_t *cycle)
{
    ngx_foko_chat_redis_lease_t  *ls;

    ls = &ngx_foko_chat_redis_lease;

    ls->timer.handler = ngx_foko_chat_redis_lease_post;
    ls->timer.log = cycle->log;
    ls->timer.data = ls;
    ls->timer.cancelable = 1;

    ngx_add_timer(&ls->timer, 1);

    return NGX_OK;
}


static void
ngx_foko_chat_redis_lease_post(ngx_event_t *ev)
{
    ngx_foko_chat_redis_lease_t  *ls = ev->data;

    ngx_foko_chat_task_t             *task;
    ngx_foko_chat_redis_sh_t         *rsh;
    ngx_foko_chat_redis_lease_job_t  *job;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        if (ls->c && !ls->in_flight) {
            redisFree(ls->c);
            ls->c = NULL;
        }

        return;
    }

    ngx_add_timer(&ls->timer, NGX_FOKO_CHAT_REDIS_LEASE_EVERY);

    if (ls->in_flight) {
        return;
    }

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_redis_lease_job_t),
                                     ngx_cycle->log);
    if (task == NULL) {
        return;
    }

    rsh = &ngx_foko_chat_redis_shm->sh->redis;

    job = task->data;
    job->lease = ls;
    job->c = ls->c;
    job->reset = (rsh->presence_reset != 0);
    job->bootstrap = job->reset || !ls->booted;

    if (job->reset) {
        rsh->presence_reset = 0;
    }

    task->run = ngx_foko_chat_redis_lease_run;
    task->done = ngx_foko_chat_redis_lease_done;

    ls->c = NULL;
    ls->in_flight = 1;

    if (ngx_foko_chat_task_post(task, ngx_foko_chat_redis_conf->pool.pool)
        != NGX_OK)
    {
        ngx_cpystrn(job->err, (u_char *) "the thread pool's queue is full",
                    NGX_FOKO_CHAT_REDIS_ERR_LEN);
        job->rc = NGX_ERROR;
        ngx_foko_chat_task_fail(task);
    }
}


/* on a thread: the lease, then the online hashes if a bootstrap */

static void
ngx_foko_chat_redis_lease_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_redis_lease_job_t  *job = task->data;

    u_char       lease[NGX_INT_T_LEN];
    redisReply  *reply;

    job->rc = NGX_ERROR;

    if (job->c == NULL) {
        job->c = ngx_foko_chat_redis_connect(ngx_foko_chat_redis_conf,
                                             job->err);
        if (job->c == NULL) {
            return;
        }
    }

    *ngx_sprintf(lease, "%d", NGX_FOKO_CHAT_REDIS_LEASE) = '\0';

    reply = redisCommand(job->c, "EVAL %s 1 %s %b %s",
                         ngx_foko_chat_redis_lease_script,
                         NGX_FOKO_CHAT_REDIS_HOSTS_KEY,
                         ngx_foko_chat_redis_host,
                         ngx_foko_chat_redis_host_len, lease);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_INTEGER
        || reply->element[1]->type != REDIS_REPLY_ARRAY)
    {
        ngx_foko_chat_redis_failed(&job->c, reply, job->err);
        return;
    }

    job->reply = reply;
    job->mine = (ngx_int_t) reply->element[0]->integer;
    job->live = reply->element[1];

    job->rc = job->bootstrap ? ngx_foko_chat_redis_online_run(job) : NGX_OK;
}


static ngx_int_t
ngx_foko_chat_redis_online_run(ngx_foko_chat_redis_lease_job_t *job)
{
    ngx_uint_t   i, n;
    redisReply  *h;

    n = job->live->elements;

    job->online = calloc(n + 1, sizeof(redisReply *));
    if (job->online == NULL) {
        ngx_cpystrn(job->err, (u_char *) "out of memory",
                    NGX_FOKO_CHAT_REDIS_ERR_LEN);
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        h = job->live->element[i];

        if (redisAppendCommand(job->c, "HGETALL foko:{%b}:online",
                               h->str, h->len)
            != REDIS_OK)
        {
            ngx_foko_chat_redis_failed(&job->c, NULL, job->err);
            return NGX_ERROR;
        }
    }

    for (i = 0; i < n; i++) {
        if (redisGetReply(job->c, (void **) &job->online[i]) != REDIS_OK) {
            job->online[i] = NULL;
            ngx_foko_chat_redis_failed(&job->c, NULL, job->err);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_redis_lease_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_redis_lease_job_t  *job = task->data;

    ngx_uint_t                       i;
    ngx_pool_t                      *pool;
    ngx_array_t                      gone;
    ngx_foko_chat_shm_ctx_t         *ctx;
    ngx_foko_chat_redis_lease_t     *ls;
    ngx_foko_chat_presence_gone_t   *g;

    ls = job->lease;
    ls->in_flight = 0;
    ls->c = job->c;
    ctx = ngx_foko_chat_redis_shm;

    if (task->failed || job->rc != NGX_OK) {
        if (job->reset) {
            ctx->sh->redis.presence_reset = 1;
        }

        ngx_memcpy(ls->err, job->err, NGX_FOKO_CHAT_REDIS_ERR_LEN);
        ngx_foko_chat_redis_state(0, "lease", ls->err);
        ngx_foko_chat_redis_lease_free(job);
        return NGX_OK;
    }

    pool = ngx_create_pool(1024, ngx_cycle->log);

    if (pool == NULL
        || ngx_array_init(&gone, pool, 4,
                          sizeof(ngx_foko_chat_presence_gone_t))
           != NGX_OK)
    {
        if (pool) {
            ngx_destroy_pool(pool);
        }

        ngx_foko_chat_redis_lease_free(job);
        return NGX_OK;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (job->bootstrap) {
        ngx_foko_chat_redis_bootstrap_locked(job);
    }

    ngx_foko_chat_redis_reap_locked(job, &gone);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    /*
     * The lease had ended, or went missing after this process had one:
     * the other hosts may have taken this host's users offline and Redis
     * may have lost its online hash; every worker tells its users again
     * (ngx_foko_chat_ws_presence_again()).  A new host's first lease
     * is missing too, and has nothing to tell.
     */

    if (job->mine == 1 || (job->mine == 2 && ls->booted)) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "foko chat: this host's lease in Redis had %s; its "
                      "online users are told to the other hosts again",
                      job->mine == 1 ? "ended" : "gone");
        (void) ngx_atomic_fetch_add(&ctx->sh->redis.presence_again, 1);
    }

    ls->booted = 1;
    ctx->sh->redis.hosts = job->live->elements;

    g = gone.elts;

    if (gone.nelts) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "foko chat: %ui users were online only on hosts "
                      "whose lease ended; they go offline", gone.nelts);
    }

    for (i = 0; i < gone.nelts; i++) {
        ngx_foko_chat_event_presence(g[i].user, g[i].ids, g[i].nids, 0);
        ngx_free(g[i].ids);
    }

    ngx_destroy_pool(pool);
    ngx_foko_chat_redis_lease_free(job);

    return NGX_OK;
}


/*
 * With the zone locked: the live hosts' online hashes become their
 * nodes; after a loss, every other host's nodes are read anew.
 */

static void
ngx_foko_chat_redis_bootstrap_locked(ngx_foko_chat_redis_lease_job_t *job)
{
    ngx_int_t                 slot;
    ngx_uint_t                i, j;
    redisReply               *h, *o, *user, *ids;
    ngx_foko_chat_shm_ctx_t  *ctx;

    ctx = ngx_foko_chat_redis_shm;

    if (job->reset) {
        ngx_foko_chat_presence_drop_locked(ctx, NGX_ERROR, NULL);
    }

    for (i = 0; i < job->live->elements; i++) {
        h = job->live->element[i];
        o = job->online[i];

        if (h->type != REDIS_REPLY_STRING
            || ngx_foko_chat_redis_me((u_char *) h->str, h->len)
            || o == NULL || o->type != REDIS_REPLY_ARRAY)
        {
            continue;
        }

        slot = ngx_foko_chat_redis_peer_locked((u_char *) h->str, h->len, 1);
        if (slot == NGX_ERROR) {
            continue;
        }

        for (j = 0; j + 1 < o->elements; j += 2) {
            user = o->element[j];
            ids = o->element[j + 1];

            if (user->type != REDIS_REPLY_STRING
                || user->len != NGX_FOKO_CHAT_OID_LEN
                || ids->type != REDIS_REPLY_STRING
                || ids->len % NGX_FOKO_CHAT_OID_LEN)
            {
                continue;
            }

            (void) ngx_foko_chat_presence_remote_locked(ctx, slot,
                                   (u_char *) user->str, 1,
                                   (u_char *) ids->str,
                                   ids->len / NGX_FOKO_CHAT_OID_LEN);
        }
    }
}


/*
 * With the zone locked: the hosts whose lease runs are seen; the others
 * are gone once their lease was seen, or 15 s after their last event (a
 * host's entries may come before its first lease).
 */

static void
ngx_foko_chat_redis_reap_locked(ngx_foko_chat_redis_lease_job_t *job,
    ngx_array_t *gone)
{
    uint64_t                     now;
    ngx_int_t                    slot;
    ngx_uint_t                   i, live;
    redisReply                  *h;
    ngx_foko_chat_redis_sh_t    *rsh;
    ngx_foko_chat_redis_peer_t  *peer;

    rsh = &ngx_foko_chat_redis_shm->sh->redis;
    now = ngx_foko_chat_redis_ms();

    for (i = 0; i < job->live->elements; i++) {
        h = job->live->element[i];

        if (h->type != REDIS_REPLY_STRING) {
            continue;
        }

        slot = ngx_foko_chat_redis_peer_locked((u_char *) h->str, h->len, 0);

        if (slot != NGX_ERROR) {
            rsh->peers[slot].seen = now;
            rsh->peers[slot].listed = 1;
        }
    }

    for (slot = 0; slot < NGX_FOKO_CHAT_REDIS_PEERS; slot++) {
        peer = &rsh->peers[slot];

        if (peer->name[0] == '\0') {
            continue;
        }

        live = 0;

        for (i = 0; i < job->live->elements; i++) {
            h = job->live->element[i];

            if (h->type == REDIS_REPLY_STRING
                && ngx_strlen(peer->name) == h->len
                && ngx_strncmp(peer->name, h->str, h->len) == 0)
            {
                live = 1;
                break;
            }
        }

        if (live
            || (!peer->listed && now < peer->seen + NGX_FOKO_CHAT_REDIS_LEASE))
        {
            continue;
        }

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "foko chat: the lease of host \"%s\" ended; its "
                      "users go offline here", peer->name);

        ngx_foko_chat_presence_drop_locked(ngx_foko_chat_redis_shm, slot,
                                           gone);
        peer->name[0] = '\0';
        peer->listed = 0;
        (void) ngx_atomic_fetch_add(&rsh->hosts_gone, 1);
    }
}


ngx_uint_t
ngx_foko_chat_redis_presence_locked(ngx_str_t *host, u_char *user,
    ngx_uint_t up, u_char *ids, ngx_uint_t nids)
{
    ngx_int_t                  slot, rc;
    ngx_foko_chat_redis_sh_t  *rsh;

    rsh = &ngx_foko_chat_redis_shm->sh->redis;

    slot = ngx_foko_chat_redis_peer_locked(host->data, host->len, up);
    if (slot == NGX_ERROR) {
        return 0;
    }

    rsh->peers[slot].seen = ngx_foko_chat_redis_ms();

    rc = ngx_foko_chat_presence_remote_locked(ngx_foko_chat_redis_shm, slot,
                                              user, up, ids, nids);
    if (rc != 1) {
        return 0;
    }

    return up ? 2 : 1;
}


/* the slot of a host; NGX_ERROR: none (and none free, if "create") */

static ngx_int_t
ngx_foko_chat_redis_peer_locked(u_char *name, size_t len, ngx_uint_t create)
{
    ngx_int_t                    i, free;
    ngx_foko_chat_redis_peer_t  *peer;

    if (len == 0 || len >= NGX_FOKO_CHAT_REDIS_NAME_LEN) {
        return NGX_ERROR;
    }

    free = NGX_ERROR;

    for (i = 0; i < NGX_FOKO_CHAT_REDIS_PEERS; i++) {
        peer = &ngx_foko_chat_redis_shm->sh->redis.peers[i];

        if (peer->name[0] == '\0') {
            if (free == NGX_ERROR) {
                free = i;
            }

            continue;
        }

        if (ngx_strlen(peer->name) == len
            && ngx_strncmp(peer->name, name, len) == 0)
        {
            return i;
        }
    }

    if (!create || free == NGX_ERROR) {
        if (create) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "foko chat: more than %d other hosts: the "
                          "presence of users on \"%*s\" is not known here",
                          NGX_FOKO_CHAT_REDIS_PEERS, len, name);
        }

        return NGX_ERROR;
    }

    peer = &ngx_foko_chat_redis_shm->sh->redis.peers[free];
    *ngx_cpymem(peer->name, name, len) = '\0';
    peer->seen = ngx_foko_chat_redis_ms();
    peer->listed = 0;

    return free;
}


static ngx_uint_t
ngx_foko_chat_redis_me(u_char *name, size_t len)
{
    return len == ngx_foko_chat_redis_host_len
           && ngx_strncmp(name, ngx_foko_chat_redis_host, len) == 0;
}


static uint64_t
ngx_foko_chat_redis_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


static void
ngx_foko_chat_redis_lease_free(ngx_foko_chat_redis_lease_job_t *job)
{
    ngx_uint_t  i;

    if (job->online) {
        for (i = 0; job->live && i < job->live->elements; i++) {
            if (job->online[i]) {
                freeReplyObject(job->online[i]);
            }
        }

        free(job->online);
    }

    if (job->reply) {
        freeReplyObject(job->reply);
    }
}
