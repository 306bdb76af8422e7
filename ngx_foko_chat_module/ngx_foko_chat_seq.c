
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


typedef struct {
    u_char                     color;
    u_char                     id[24];
    int64_t                    last;       /* handed out */
    int64_t                    acked;      /* stored, highest */
} ngx_foko_chat_seq_node_t;


static ngx_foko_chat_seq_node_t *ngx_foko_chat_seq_lookup(
    ngx_foko_chat_sh_t *sh, u_char *channel, uint32_t hash);
static void ngx_foko_chat_seq_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);


void
ngx_foko_chat_seq_init(ngx_foko_chat_sh_t *sh)
{
    ngx_rbtree_init(&sh->seqs, &sh->seqs_sentinel,
                    ngx_foko_chat_seq_insert_value);
}


ngx_int_t
ngx_foko_chat_seq_next(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    int64_t *seq)
{
    ngx_int_t                  rc;
    ngx_foko_chat_seq_node_t  *sn;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    sn = ngx_foko_chat_seq_lookup(ctx->sh, channel,
                                  ngx_crc32_short(channel, 24));
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

    sn = ngx_foko_chat_seq_lookup(ctx->sh, channel,
                                  ngx_crc32_short(channel, 24));
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

    if (ngx_foko_chat_seq_lookup(ctx->sh, channel, hash)) {
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

    sn = ngx_foko_chat_seq_lookup(sh, channel, ngx_crc32_short(channel, 24));

    return sn ? sn->acked : -1;
}


void
ngx_foko_chat_seq_ack_locked(ngx_foko_chat_sh_t *sh, u_char *channel,
    int64_t seq)
{
    ngx_foko_chat_seq_node_t  *sn;

    sn = ngx_foko_chat_seq_lookup(sh, channel, ngx_crc32_short(channel, 24));

    if (sn && seq > sn->acked) {
        sn->acked = seq;
    }
}


static ngx_foko_chat_seq_node_t *
ngx_foko_chat_seq_lookup(ngx_foko_chat_sh_t *sh, u_char *channel,
    uint32_t hash)
{
    ngx_int_t                  rc;
    ngx_rbtree_node_t         *node, *sentinel;
    ngx_foko_chat_seq_node_t  *sn;

    node = sh->seqs.root;
    sentinel = sh->seqs.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        sn = (ngx_foko_chat_seq_node_t *) &node->color;

        rc = ngx_memcmp(channel, sn->id, 24);

        if (rc == 0) {
            return sn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_foko_chat_seq_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t         **p;
    ngx_foko_chat_seq_node_t   *sn, *snt;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            sn = (ngx_foko_chat_seq_node_t *) &node->color;
            snt = (ngx_foko_chat_seq_node_t *) &temp->color;

            p = (ngx_memcmp(sn->id, snt->id, 24) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}
