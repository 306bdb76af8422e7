
/*
 * Foko chat: per-channel message sequence counters in the shared zone.
 *
 * A counter starts at the highest seq stored in MongoDB and is raised under
 * the zone mutex, so every worker hands out the next number exactly once.
 * Counters are never evicted: one whose messages are still being written
 * would otherwise restart from MongoDB and hand out a number twice.  A
 * restart reloads them from MongoDB, where only acknowledged messages are.
 *
 * The zone also records which worker took each seq not stored yet, so
 * that the seqs of a worker that died are known at once: the first worker
 * that sees the death takes them over and fills them with gap tombstones
 * (ngx_foko_chat_gaps.c), which readers and subscribers pass over.  With
 * several hosts, a seq that no worker here took and that stays missing
 * (another host stored it and its event was lost with Redis, or a host
 * died holding it) is taken over the same way, with every other such
 * seq of its channel: MongoDB's message, if it has one, stands in for
 * the tombstone.
 */


#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_redis.h"


#define ngx_foko_chat_seq_lookup(sh, channel)                                 \
    ((ngx_foko_chat_seq_node_t *)                                             \
     ngx_foko_chat_shm_id_lookup(&(sh)->seqs, channel))

#define NGX_FOKO_CHAT_SEQ_WINDOW  1024       /* bits of "stored" */
#define NGX_FOKO_CHAT_SEQ_STALL   30         /* seconds */
#define NGX_FOKO_CHAT_SEQ_LOST    2          /* seconds, after a loss */


typedef struct {
    u_char                     color;
    u_char                     id[NGX_FOKO_CHAT_OID_LEN];
    int64_t                    last;       /* handed out */
    int64_t                    acked;      /* stored, highest */

    /*
     * Every seq up to "through" is stored; bit i of "stored" says whether
     * through + 1 + i is.  Readers see history up to "through" only, so
     * that nobody sees N + 1 before N when two workers store out of order.
     */
    int64_t                    through;
    time_t                     moved;
    uint64_t                   stored[NGX_FOKO_CHAT_SEQ_WINDOW / 64];

    /* who took through + 1 + i: an owner number, 0 if not known */
    u_char                     owner[NGX_FOKO_CHAT_SEQ_WINDOW];
} ngx_foko_chat_seq_node_t;


static ngx_uint_t  ngx_foko_chat_seq_me;    /* this worker's owner number */


static ngx_foko_chat_seq_node_t *ngx_foko_chat_seq_add_locked(
    ngx_foko_chat_shm_ctx_t *ctx, u_char *channel, int64_t stored);
static ngx_int_t ngx_foko_chat_seq_claim(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, int64_t given, int64_t *seq);
static void ngx_foko_chat_seq_advance(ngx_foko_chat_seq_node_t *sn);
static void ngx_foko_chat_seq_skip(ngx_foko_chat_seq_node_t *sn, int64_t n);
static ngx_uint_t ngx_foko_chat_seq_dead_locked(ngx_foko_chat_sh_t *sh,
    u_char *dead);
static ngx_uint_t ngx_foko_chat_seq_stalled(ngx_foko_chat_sh_t *sh,
    ngx_foko_chat_seq_node_t *sn);
static ngx_uint_t ngx_foko_chat_seq_adopt_locked(ngx_foko_chat_seq_node_t *sn,
    u_char *dead, ngx_foko_chat_seq_gap_t *gaps, ngx_uint_t n, ngx_uint_t max);


void
ngx_foko_chat_seq_init(ngx_foko_chat_sh_t *sh)
{
    ngx_rbtree_init(&sh->seqs, &sh->seqs_sentinel,
                    ngx_foko_chat_shm_id_insert_value);
    ngx_memzero(sh->seq_owners, sizeof(sh->seq_owners));
}


/*
 * A worker takes an owner number for the seqs it hands out: a free one;
 * none free, its seqs are not recorded, and a hole of its stays until the
 * stall period passes, as before.
 */

void
ngx_foko_chat_seq_init_process(ngx_foko_chat_shm_ctx_t *ctx)
{
    ngx_uint_t  i;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    for (i = 0; i < NGX_FOKO_CHAT_SEQ_OWNERS; i++) {
        if (ctx->sh->seq_owners[i] == 0) {
            ctx->sh->seq_owners[i] = ngx_pid;
            ngx_foko_chat_seq_me = i + 1;
            break;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


ngx_int_t
ngx_foko_chat_seq_next(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    int64_t *seq)
{
    return ngx_foko_chat_seq_claim(ctx, channel, 0, seq);
}


/* a seq numbered elsewhere (by Redis): the counter follows it */

ngx_int_t
ngx_foko_chat_seq_use(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    int64_t seq)
{
    return ngx_foko_chat_seq_claim(ctx, channel, seq, &seq);
}


/*
 * The next seq of the channel's counter (given 0), or the given one, which
 * the counter is raised to; recorded as this worker's while it is in the
 * window.  NGX_DECLINED: the channel has no counter in the zone.
 */

static ngx_int_t
ngx_foko_chat_seq_claim(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    int64_t given, int64_t *seq)
{
    ngx_int_t                  rc;
    ngx_foko_chat_seq_node_t  *sn;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    sn = ngx_foko_chat_seq_lookup(ctx->sh, channel);
    if (sn) {
        if (given) {
            sn->last = ngx_max(sn->last, given);
            *seq = given;

        } else {
            *seq = ++sn->last;
        }

        rc = NGX_OK;

        if (*seq > sn->through
            && *seq - sn->through - 1 < NGX_FOKO_CHAT_SEQ_WINDOW)
        {
            sn->owner[*seq - sn->through - 1] = (u_char) ngx_foko_chat_seq_me;
        }

    } else {
        rc = NGX_DECLINED;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


ngx_uint_t
ngx_foko_chat_seq_ids(ngx_foko_chat_shm_ctx_t *ctx, u_char *ids,
    ngx_uint_t max, ngx_uint_t *from)
{
    ngx_uint_t                 i, n;
    ngx_rbtree_node_t         *node, *root, *sentinel;
    ngx_foko_chat_seq_node_t  *sn;

    n = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    root = ctx->sh->seqs.root;
    sentinel = ctx->sh->seqs.sentinel;

    for (i = 0, node = (root == sentinel) ? NULL
                                          : ngx_rbtree_min(root, sentinel);
         node && n < max;
         i++, node = ngx_rbtree_next(&ctx->sh->seqs, node))
    {
        if (i < *from) {
            continue;
        }

        sn = (ngx_foko_chat_seq_node_t *) &node->color;
        ngx_memcpy(ids + n * NGX_FOKO_CHAT_OID_LEN, sn->id,
                   NGX_FOKO_CHAT_OID_LEN);
        n++;
    }

    *from = node ? *from + n : 0;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return n;
}


ngx_uint_t
ngx_foko_chat_seq_heard(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    int64_t top)
{
    ngx_uint_t                 heard;
    ngx_foko_chat_seq_node_t  *sn;

    heard = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    sn = ngx_foko_chat_seq_lookup(ctx->sh, channel);

    if (sn && top > sn->last) {
        if (sn->last == sn->through) {
            /* a quiet channel: its wait for them starts now */
            sn->moved = ngx_time();
        }

        sn->last = top;
        heard = 1;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return heard;
}


int64_t
ngx_foko_chat_seq_last(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel)
{
    int64_t                    last;
    ngx_foko_chat_seq_node_t  *sn;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    sn = ngx_foko_chat_seq_lookup(ctx->sh, channel);
    last = sn ? sn->last : -1;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return last;
}


ngx_int_t
ngx_foko_chat_seq_load(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    int64_t stored)
{
    ngx_int_t  rc;

    rc = NGX_OK;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (ngx_foko_chat_seq_lookup(ctx->sh, channel) == NULL
        && ngx_foko_chat_seq_add_locked(ctx, channel, stored) == NULL)
    {
        rc = NGX_ERROR;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


static ngx_foko_chat_seq_node_t *
ngx_foko_chat_seq_add_locked(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    int64_t stored)
{
    ngx_rbtree_node_t         *node;
    ngx_foko_chat_seq_node_t  *sn;

    node = ngx_foko_chat_shm_alloc_locked(ctx,
                                   offsetof(ngx_rbtree_node_t, color)
                                   + sizeof(ngx_foko_chat_seq_node_t),
                                   NULL);
    if (node == NULL) {
        ngx_log_error(NGX_LOG_CRIT, ngx_cycle->log, 0,
                      "foko chat: the shared zone is full: no room for a "
                      "channel's seq counter; raise foko_chat_shm_size");
        return NULL;
    }

    node->key = ngx_crc32_short(channel, NGX_FOKO_CHAT_OID_LEN);

    sn = (ngx_foko_chat_seq_node_t *) &node->color;
    ngx_memcpy(sn->id, channel, NGX_FOKO_CHAT_OID_LEN);
    sn->last = stored;
    sn->acked = stored;
    sn->through = stored;
    sn->moved = ngx_time();
    ngx_memzero(sn->stored, sizeof(sn->stored));
    ngx_memzero(sn->owner, sizeof(sn->owner));

    ngx_rbtree_insert(&ctx->sh->seqs, node);

    return sn;
}


/*
 * Another host stored "seq" (ngx_foko_chat_redis_reader.c): this host's
 * counter goes past it, so that its next post does not collide.  A
 * counter not loaded here starts just before it: nobody on this host
 * subscribed to the channel when it would have been loaded.
 */

ngx_int_t
ngx_foko_chat_seq_remote_locked(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, int64_t seq)
{
    ngx_foko_chat_seq_node_t  *sn;

    sn = ngx_foko_chat_seq_lookup(ctx->sh, channel);

    if (sn == NULL) {
        sn = ngx_foko_chat_seq_add_locked(ctx, channel, seq - 1);
        if (sn == NULL) {
            return NGX_ERROR;
        }
    }

    if (seq > sn->last) {
        sn->last = seq;
    }

    return NGX_OK;
}


/*
 * The highest seq of a channel stored in MongoDB, as the workers saw their
 * writes acknowledged; -1 if not known.  Called with the zone locked.
 */

int64_t
ngx_foko_chat_seq_acked_locked(ngx_foko_chat_sh_t *sh, u_char *channel)
{
    ngx_foko_chat_seq_node_t  *sn;

    sn = ngx_foko_chat_seq_lookup(sh, channel);

    return sn ? sn->acked : -1;
}


void
ngx_foko_chat_seq_ack_locked(ngx_foko_chat_sh_t *sh, u_char *channel,
    int64_t seq)
{
    ngx_foko_chat_seq_node_t  *sn;

    int64_t  d;

    sn = ngx_foko_chat_seq_lookup(sh, channel);

    if (sn == NULL) {
        return;
    }

    if (seq > sn->acked) {
        sn->acked = seq;
    }

    d = seq - sn->through - 1;

    if (d < 0) {
        return;
    }

    if (d >= NGX_FOKO_CHAT_SEQ_WINDOW) {
        /* far ahead of a hole: the hole is given up on */
        ngx_foko_chat_seq_skip(sn, d - NGX_FOKO_CHAT_SEQ_WINDOW + 1);
        d = seq - sn->through - 1;
    }

    sn->stored[d / 64] |= (uint64_t) 1 << (d % 64);

    ngx_foko_chat_seq_advance(sn);
}


/*
 * The highest seq up to which every message is stored; a hole that stays
 * for NGX_FOKO_CHAT_SEQ_STALL seconds (a worker died with the message) is
 * skipped, and logged.  One that no worker here took, with several hosts,
 * is filled from MongoDB before (ngx_foko_chat_seq_orphans()): it is
 * skipped only if that did not happen.  Called with the zone locked.
 */

int64_t
ngx_foko_chat_seq_through_locked(ngx_foko_chat_sh_t *sh, u_char *channel)
{
    time_t                     stall;
    ngx_uint_t                 i, any;
    ngx_foko_chat_seq_node_t  *sn;

    sn = ngx_foko_chat_seq_lookup(sh, channel);

    if (sn == NULL) {
        return -1;
    }

    stall = (sn->owner[0] == 0 && ngx_foko_chat_redis_on())
            ? 2 * NGX_FOKO_CHAT_SEQ_STALL : NGX_FOKO_CHAT_SEQ_STALL;

    if (ngx_time() - sn->moved >= stall) {

        any = 0;

        for (i = 0; i < NGX_FOKO_CHAT_SEQ_WINDOW / 64; i++) {
            any |= (sn->stored[i] != 0);
        }

        if (any) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "foko chat: seq %L of channel %*s was never "
                          "stored; history goes on past it",
                          sn->through + 1, (size_t) NGX_FOKO_CHAT_OID_LEN,
                          sn->id);

            ngx_foko_chat_seq_skip(sn, 1);
            ngx_foko_chat_seq_advance(sn);
        }
    }

    return sn->through;
}


int64_t
ngx_foko_chat_seq_through(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel)
{
    int64_t  through;

    ngx_shmtx_lock(&ctx->shpool->mutex);
    through = ngx_foko_chat_seq_through_locked(ctx->sh, channel);
    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return through;
}


ngx_uint_t
ngx_foko_chat_seq_stored(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    int64_t seq)
{
    int64_t                    d;
    ngx_uint_t                 stored;
    ngx_foko_chat_seq_node_t  *sn;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    sn = ngx_foko_chat_seq_lookup(ctx->sh, channel);
    d = sn ? seq - sn->through - 1 : -1;

    if (d < 0) {
        stored = 1;

    } else if (d >= NGX_FOKO_CHAT_SEQ_WINDOW) {
        stored = 0;

    } else {
        stored = (sn->stored[d / 64] >> (d % 64)) & 1;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return stored;
}


/* moves "through" over the stored seqs that follow it */

static void
ngx_foko_chat_seq_advance(ngx_foko_chat_seq_node_t *sn)
{
    ngx_uint_t  n;

    for (n = 0; sn->stored[0] & 1; n++) {
        ngx_foko_chat_seq_skip(sn, 1);
    }

    if (n) {
        sn->moved = ngx_time();
    }
}


/* moves "through" n seqs on, stored or not */

static void
ngx_foko_chat_seq_skip(ngx_foko_chat_seq_node_t *sn, int64_t n)
{
    ngx_uint_t  i, words;

    words = NGX_FOKO_CHAT_SEQ_WINDOW / 64;

    if (n >= NGX_FOKO_CHAT_SEQ_WINDOW) {
        ngx_memzero(sn->stored, sizeof(sn->stored));
        ngx_memzero(sn->owner, sizeof(sn->owner));
        sn->through += n;
        sn->moved = ngx_time();
        return;
    }

    ngx_memmove(sn->owner, sn->owner + n, NGX_FOKO_CHAT_SEQ_WINDOW - n);
    ngx_memzero(sn->owner + NGX_FOKO_CHAT_SEQ_WINDOW - n, n);

    while (n--) {
        for (i = 0; i < words; i++) {
            sn->stored[i] >>= 1;

            if (i + 1 < words) {
                sn->stored[i] |= (sn->stored[i + 1] & 1) << 63;
            }
        }

        sn->through++;
    }

    sn->moved = ngx_time();
}


/*
 * A seq handed out here was found taken in MongoDB: another set of
 * workers (those of a zone replaced by a reload that changed its size, or
 * of a binary upgrade) stored it.  It counts as stored, and the counter
 * goes past what MongoDB holds.
 */

void
ngx_foko_chat_seq_taken(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    int64_t seq, int64_t stored)
{
    ngx_foko_chat_seq_node_t  *sn;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    sn = ngx_foko_chat_seq_lookup(ctx->sh, channel);

    if (sn && stored > sn->last) {
        sn->last = stored;
    }

    if (ngx_foko_chat_redis_on()) {
        /*
         * Other hosts stored them: their events come through Redis and
         * ack them, so that this host's subscribers get them in order.
         * No worker here holds "seq" now: should its event be lost, the
         * hole is filled from MongoDB (ngx_foko_chat_seq_orphans()).
         */
        if (sn && seq > sn->through
            && seq - sn->through - 1 < NGX_FOKO_CHAT_SEQ_WINDOW)
        {
            sn->owner[seq - sn->through - 1] = 0;
        }

        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return;
    }

    if (ctx->sh->replaced) {
        /*
         * Those of the zone this one replaced: they forward what they
         * store (ngx_foko_chat_bus.c), and that marks it stored here, its
         * event with it; marked now, it would reach no subscriber.
         */
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return;
    }

    ngx_foko_chat_seq_ack_locked(ctx->sh, channel, seq);

    /* what the others stored is history now */

    if (sn && stored > sn->through) {
        ngx_foko_chat_seq_skip(sn, stored - sn->through);
        ngx_foko_chat_seq_advance(sn);
    }

    if (sn && stored > sn->acked) {
        sn->acked = stored;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/*
 * The seqs that workers now dead took and never stored, and, with several
 * hosts, those of a stalled channel that no worker here took, at most
 * "max": this worker takes them over (they are its own holes from now on,
 * should it die as well) and returns them, for the gap tombstones.
 */

ngx_uint_t
ngx_foko_chat_seq_orphans(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_seq_gap_t *gaps, ngx_uint_t max)
{
    u_char                     dead[NGX_FOKO_CHAT_SEQ_OWNERS + 1];
    ngx_uint_t                 n, i, any, hosts;
    ngx_rbtree_node_t         *node, *root, *sentinel;
    ngx_foko_chat_seq_node_t  *sn;

    n = 0;

    /* a worker with no owner number could not tell its own takings */
    hosts = ngx_foko_chat_redis_on() && ngx_foko_chat_seq_me;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    any = ngx_foko_chat_seq_dead_locked(ctx->sh, dead);

    if (!any && !hosts) {
        goto done;
    }

    root = ctx->sh->seqs.root;
    sentinel = ctx->sh->seqs.sentinel;

    for (node = (root == sentinel) ? NULL : ngx_rbtree_min(root, sentinel);
         node && n < max;
         node = ngx_rbtree_next(&ctx->sh->seqs, node))
    {
        sn = (ngx_foko_chat_seq_node_t *) &node->color;

        /* owner 0: a seq that another host took */
        dead[0] = hosts && ngx_foko_chat_seq_stalled(ctx->sh, sn);

        if (any || dead[0]) {
            n = ngx_foko_chat_seq_adopt_locked(sn, dead, gaps, n, max);
        }
    }

    if (any && n < max) {
        /* every seq of theirs is taken over: the numbers are free again */

        for (i = 0; i < NGX_FOKO_CHAT_SEQ_OWNERS; i++) {
            if (dead[i + 1]) {
                ctx->sh->seq_owners[i] = 0;
            }
        }
    }

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return n;
}


/* marks in "dead" the owner numbers of workers gone; 0 if none */

static ngx_uint_t
ngx_foko_chat_seq_dead_locked(ngx_foko_chat_sh_t *sh, u_char *dead)
{
    ngx_pid_t   pid;
    ngx_uint_t  i, any;

    any = 0;
    dead[0] = 0;

    for (i = 0; i < NGX_FOKO_CHAT_SEQ_OWNERS; i++) {
        pid = sh->seq_owners[i];

        dead[i + 1] = (pid > 0 && pid != ngx_pid && kill(pid, 0) == -1
                       && ngx_errno == NGX_ESRCH);
        any |= dead[i + 1];
    }

    return any;
}


/*
 * Whether the channel has waited long enough at a hole that another host
 * may hold: the stall period, or only NGX_FOKO_CHAT_SEQ_LOST after events
 * of other hosts were lost (their seqs are stored, and will not come).
 */

static ngx_uint_t
ngx_foko_chat_seq_stalled(ngx_foko_chat_sh_t *sh,
    ngx_foko_chat_seq_node_t *sn)
{
    time_t  now, wait;

    if (sn->last <= sn->through) {
        return 0;
    }

    now = ngx_time();
    wait = NGX_FOKO_CHAT_SEQ_STALL;

    if (sh->redis.lost_at
        && now - (time_t) sh->redis.lost_at < NGX_FOKO_CHAT_SEQ_STALL)
    {
        wait = NGX_FOKO_CHAT_SEQ_LOST;
    }

    return now - sn->moved >= wait;
}


/*
 * Takes over the channel's seqs whose owner "dead" marks; all of them
 * taken, the stall period starts again, for their tombstones to be
 * stored.
 */

static ngx_uint_t
ngx_foko_chat_seq_adopt_locked(ngx_foko_chat_seq_node_t *sn, u_char *dead,
    ngx_foko_chat_seq_gap_t *gaps, ngx_uint_t n, ngx_uint_t max)
{
    int64_t     i, out;
    ngx_uint_t  start;

    start = n;
    out = ngx_min(sn->last - sn->through, NGX_FOKO_CHAT_SEQ_WINDOW);

    for (i = 0; i < out && n < max; i++) {
        if (!dead[sn->owner[i]]
            || (sn->stored[i / 64] & ((uint64_t) 1 << (i % 64))))
        {
            continue;
        }

        sn->owner[i] = (u_char) ngx_foko_chat_seq_me;

        ngx_memcpy(gaps[n].channel, sn->id, NGX_FOKO_CHAT_OID_LEN);
        gaps[n].seq = sn->through + 1 + i;
        n++;
    }

    if (n > start && i == out) {
        sn->moved = ngx_time();
    }

    return n;
}
