
/*
 * Foko chat: rate limits in the shared zone.
 *
 * Fixed windows counted per key ("login:acct:<email>", "login:addr:<ip>",
 * ...) in a red-black tree by crc32 with an LRU queue, in the manner of
 * limit_req: when the zone is short, the least recently used counters go
 * first.
 */


#include "ngx_foko_chat_limit.h"


#define NGX_FOKO_CHAT_LIMIT_KEY_MAX  255

/* longer than any window: such a counter can only say "no limit" */
#define NGX_FOKO_CHAT_LIMIT_STALE    86400


typedef struct {
    u_char                     color;
    u_char                     len;
    ngx_queue_t                queue;
    time_t                     start;
    ngx_uint_t                 count;
    u_char                     data[1];
} ngx_foko_chat_limit_node_t;


static ngx_foko_chat_limit_node_t *ngx_foko_chat_limit_lookup(
    ngx_foko_chat_sh_t *sh, ngx_str_t *key, uint32_t hash);
static void ngx_foko_chat_limit_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_foko_chat_limit_expire(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_uint_t force);


void
ngx_foko_chat_limit_init(ngx_foko_chat_sh_t *sh)
{
    ngx_rbtree_init(&sh->limits, &sh->limits_sentinel,
                    ngx_foko_chat_limit_insert_value);
    ngx_queue_init(&sh->limits_lru);
}


time_t
ngx_foko_chat_limit_check(ngx_foko_chat_shm_ctx_t *ctx, ngx_str_t *key,
    ngx_foko_chat_limit_t *limit)
{
    time_t                       now, wait;
    ngx_foko_chat_limit_node_t  *ln;

    if (key->len > NGX_FOKO_CHAT_LIMIT_KEY_MAX) {
        key->len = NGX_FOKO_CHAT_LIMIT_KEY_MAX;
    }

    now = ngx_time();
    wait = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ln = ngx_foko_chat_limit_lookup(ctx->sh, key, ngx_crc32_short(key->data,
                                                                 key->len));

    if (ln && now - ln->start < limit->window && ln->count >= limit->max) {
        wait = ln->start + limit->window - now;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return wait;
}


void
ngx_foko_chat_limit_hit(ngx_foko_chat_shm_ctx_t *ctx, ngx_str_t *key,
    ngx_foko_chat_limit_t *limit)
{
    size_t                       size;
    time_t                       now;
    uint32_t                     hash;
    ngx_rbtree_node_t           *node;
    ngx_foko_chat_limit_node_t  *ln;

    if (key->len > NGX_FOKO_CHAT_LIMIT_KEY_MAX) {
        key->len = NGX_FOKO_CHAT_LIMIT_KEY_MAX;
    }

    now = ngx_time();
    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ln = ngx_foko_chat_limit_lookup(ctx->sh, key, hash);

    if (ln) {
        ngx_queue_remove(&ln->queue);
        ngx_queue_insert_head(&ctx->sh->limits_lru, &ln->queue);

        if (now - ln->start >= limit->window) {
            ln->start = now;
            ln->count = 0;
        }

        ln->count++;

        goto done;
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_foko_chat_limit_node_t, data)
           + key->len;

    ngx_foko_chat_limit_expire(ctx, 0);

    node = ngx_slab_alloc_locked(ctx->shpool, size);

    if (node == NULL) {
        ngx_foko_chat_limit_expire(ctx, 1);

        node = ngx_slab_alloc_locked(ctx->shpool, size);
        if (node == NULL) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "foko chat: no memory for a rate limit counter");
            goto done;
        }
    }

    node->key = hash;

    ln = (ngx_foko_chat_limit_node_t *) &node->color;

    ln->len = (u_char) key->len;
    ln->start = now;
    ln->count = 1;
    ngx_memcpy(ln->data, key->data, key->len);

    ngx_rbtree_insert(&ctx->sh->limits, node);
    ngx_queue_insert_head(&ctx->sh->limits_lru, &ln->queue);

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


void
ngx_foko_chat_limit_clear(ngx_foko_chat_shm_ctx_t *ctx, ngx_str_t *key)
{
    ngx_foko_chat_limit_node_t  *ln;

    if (key->len > NGX_FOKO_CHAT_LIMIT_KEY_MAX) {
        key->len = NGX_FOKO_CHAT_LIMIT_KEY_MAX;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ln = ngx_foko_chat_limit_lookup(ctx->sh, key, ngx_crc32_short(key->data,
                                                                 key->len));
    if (ln) {
        ln->count = 0;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


static ngx_foko_chat_limit_node_t *
ngx_foko_chat_limit_lookup(ngx_foko_chat_sh_t *sh, ngx_str_t *key,
    uint32_t hash)
{
    ngx_int_t                    rc;
    ngx_rbtree_node_t           *node, *sentinel;
    ngx_foko_chat_limit_node_t  *ln;

    node = sh->limits.root;
    sentinel = sh->limits.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        /* hash == node->key */

        ln = (ngx_foko_chat_limit_node_t *) &node->color;

        rc = ngx_memn2cmp(key->data, ln->data, key->len, (size_t) ln->len);

        if (rc == 0) {
            return ln;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_foko_chat_limit_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t           **p;
    ngx_foko_chat_limit_node_t   *ln, *lnt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            ln = (ngx_foko_chat_limit_node_t *) &node->color;
            lnt = (ngx_foko_chat_limit_node_t *) &temp->color;

            p = (ngx_memn2cmp(ln->data, lnt->data, ln->len, lnt->len) < 0)
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


/*
 * Drops counters from the cold end of the LRU: a couple whose windows are
 * long over, or, when the zone is full ("force"), the coldest ones whatever
 * their state.
 */

static void
ngx_foko_chat_limit_expire(ngx_foko_chat_shm_ctx_t *ctx, ngx_uint_t force)
{
    ngx_uint_t                   n;
    ngx_queue_t                 *q;
    ngx_rbtree_node_t           *node;
    ngx_foko_chat_limit_node_t  *ln;

    for (n = 0; n < (force ? 16 : 2); n++) {

        if (ngx_queue_empty(&ctx->sh->limits_lru)) {
            return;
        }

        q = ngx_queue_last(&ctx->sh->limits_lru);
        ln = ngx_queue_data(q, ngx_foko_chat_limit_node_t, queue);

        if (!force && ngx_time() - ln->start < NGX_FOKO_CHAT_LIMIT_STALE) {
            return;
        }

        ngx_queue_remove(q);

        node = (ngx_rbtree_node_t *)
                   ((u_char *) ln - offsetof(ngx_rbtree_node_t, color));

        ngx_rbtree_delete(&ctx->sh->limits, node);
        ngx_slab_free_locked(ctx->shpool, node);
    }
}
