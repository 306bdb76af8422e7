
/*
 * Foko chat: per-channel message sequence counters in the shared zone.
 *
 * A counter starts at the highest seq stored in MongoDB and is raised under
 * the zone mutex, so every worker hands out the next number exactly once.
 * Counters are never evicted: one whose messages are still being written
 * would otherwise restart from MongoDB and hand out a number twice.  A
 * restart reloads them from MongoDB, where only acknowledged messages are.
 */


#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_cache.h"


#define ngx_foko_chat_seq_lookup(sh, channel)                                 \
    ((ngx_foko_chat_seq_node_t *)                                             \
     ngx_foko_chat_shm_id_lookup(&(sh)->seqs, channel))

#define NGX_FOKO_CHAT_SEQ_WINDOW  1024       /* bits of "stored" */
#define NGX_FOKO_CHAT_SEQ_STALL   30         /* seconds */


typedef struct {
    u_char                     color;
    u_char                     id[24];
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
} ngx_foko_chat_seq_node_t;


static void ngx_foko_chat_seq_advance(ngx_foko_chat_seq_node_t *sn);
static void ngx_foko_chat_seq_skip(ngx_foko_chat_seq_node_t *sn, int64_t n);


void
ngx_foko_chat_seq_init(ngx_foko_chat_sh_t *sh)
{
    ngx_rbtree_init(&sh->seqs, &sh->seqs_sentinel,
                    ngx_foko_chat_shm_id_insert_value);
}


ngx_int_t
ngx_foko_chat_seq_next(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    int64_t *seq)
{
    ngx_int_t                  rc;
    ngx_foko_chat_seq_node_t  *sn;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    sn = ngx_foko_chat_seq_lookup(ctx->sh, channel);
    if (sn) {
        *seq = ++sn->last;
        rc = NGX_OK;

    } else {
        rc = NGX_DECLINED;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
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
    uint32_t                   hash;
    ngx_int_t                  rc;
    ngx_rbtree_node_t         *node;
    ngx_foko_chat_seq_node_t  *sn;

    hash = ngx_crc32_short(channel, 24);
    rc = NGX_OK;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (ngx_foko_chat_seq_lookup(ctx->sh, channel)) {
        goto done;
    }

    node = ngx_foko_chat_cache_alloc_locked(ctx,
                                   offsetof(ngx_rbtree_node_t, color)
                                   + sizeof(ngx_foko_chat_seq_node_t));
    if (node == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    node->key = hash;

    sn = (ngx_foko_chat_seq_node_t *) &node->color;
    ngx_memcpy(sn->id, channel, 24);
    sn->last = stored;
    sn->acked = stored;
    sn->through = stored;
    sn->moved = ngx_time();
    ngx_memzero(sn->stored, sizeof(sn->stored));

    ngx_rbtree_insert(&ctx->sh->seqs, node);

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_CRIT, ngx_cycle->log, 0,
                      "foko chat: the shared zone is full: no room for a "
                      "channel's seq counter; raise foko_chat_shm_size");
    }

    return rc;
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
 * skipped, and logged.  Called with the zone locked.
 */

int64_t
ngx_foko_chat_seq_through_locked(ngx_foko_chat_sh_t *sh, u_char *channel)
{
    ngx_uint_t                 i, any;
    ngx_foko_chat_seq_node_t  *sn;

    sn = ngx_foko_chat_seq_lookup(sh, channel);

    if (sn == NULL) {
        return -1;
    }

    if (ngx_time() - sn->moved >= NGX_FOKO_CHAT_SEQ_STALL) {

        any = 0;

        for (i = 0; i < NGX_FOKO_CHAT_SEQ_WINDOW / 64; i++) {
            any |= (sn->stored[i] != 0);
        }

        if (any) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "foko chat: seq %L of channel %*s was never "
                          "stored; history goes on past it",
                          sn->through + 1, (size_t) 24, sn->id);

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
        sn->through += n;
        sn->moved = ngx_time();
        return;
    }

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

    ngx_foko_chat_seq_ack_locked(ctx->sh, channel, seq);

    sn = ngx_foko_chat_seq_lookup(ctx->sh, channel);

    if (sn && stored > sn->last) {
        sn->last = stored;
    }

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
