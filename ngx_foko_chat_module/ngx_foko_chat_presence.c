
/*
 * Foko chat: who is online.
 *
 * A user is online while one of their WebSocket connections is open on
 * any worker: the zone counts them per user.  When the count falls to
 * zero the user stays online for a grace period, so that a reconnect (a
 * page reload, a network hiccup) announces nothing; the worker that closed
 * the last connection checks again when the period is over.
 */


#include "ngx_foko_chat_presence.h"
#include "ngx_foko_chat_cache.h"


#define ngx_foko_chat_presence_lookup(sh, user)                               \
    ((ngx_foko_chat_presence_node_t *)                                        \
     ngx_foko_chat_shm_id_lookup(&(sh)->presence, user))


typedef struct {
    u_char                     color;
    u_char                     id[24];
    ngx_uint_t                 count;
    uint64_t                   closed;     /* ms since the epoch */
} ngx_foko_chat_presence_node_t;


static uint64_t ngx_foko_chat_presence_now(void);


void
ngx_foko_chat_presence_init(ngx_foko_chat_sh_t *sh)
{
    ngx_rbtree_init(&sh->presence, &sh->presence_sentinel,
                    ngx_foko_chat_shm_id_insert_value);
}


ngx_int_t
ngx_foko_chat_presence_open(ngx_foko_chat_shm_ctx_t *ctx, u_char *user)
{
    ngx_int_t                       rc;
    ngx_rbtree_node_t              *node;
    ngx_foko_chat_presence_node_t  *pn;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    pn = ngx_foko_chat_presence_lookup(ctx->sh, user);

    if (pn) {
        /* online already, or within the grace period of the last close */
        pn->count++;
        rc = NGX_DECLINED;
        goto done;
    }

    node = ngx_foko_chat_cache_alloc_locked(ctx,
                                  offsetof(ngx_rbtree_node_t, color)
                                  + sizeof(ngx_foko_chat_presence_node_t));
    if (node == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    node->key = ngx_crc32_short(user, 24);
    pn = (ngx_foko_chat_presence_node_t *) &node->color;
    ngx_memcpy(pn->id, user, 24);
    pn->count = 1;
    pn->closed = 0;

    ngx_rbtree_insert(&ctx->sh->presence, node);

    rc = NGX_OK;

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


ngx_int_t
ngx_foko_chat_presence_close(ngx_foko_chat_shm_ctx_t *ctx, u_char *user)
{
    ngx_int_t                       rc;
    ngx_foko_chat_presence_node_t  *pn;

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    pn = ngx_foko_chat_presence_lookup(ctx->sh, user);

    if (pn && pn->count) {
        if (--pn->count == 0) {
            pn->closed = ngx_foko_chat_presence_now();
            rc = NGX_OK;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


ngx_int_t
ngx_foko_chat_presence_expire(ngx_foko_chat_shm_ctx_t *ctx, u_char *user,
    ngx_msec_t grace)
{
    ngx_int_t                       rc;
    ngx_rbtree_node_t              *node;
    ngx_foko_chat_presence_node_t  *pn;

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    pn = ngx_foko_chat_presence_lookup(ctx->sh, user);

    /* a later close has a timer of its own: it decides */

    if (pn && pn->count == 0
        && ngx_foko_chat_presence_now() + 50 >= pn->closed + grace)
    {
        node = (ngx_rbtree_node_t *)
                   ((u_char *) pn - offsetof(ngx_rbtree_node_t, color));
        ngx_rbtree_delete(&ctx->sh->presence, node);
        ngx_slab_free_locked(ctx->shpool, node);
        rc = NGX_OK;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


ngx_uint_t
ngx_foko_chat_presence_online_locked(ngx_foko_chat_sh_t *sh, u_char *user)
{
    return ngx_foko_chat_presence_lookup(sh, user) != NULL;
}


ngx_uint_t
ngx_foko_chat_presence_online(ngx_foko_chat_shm_ctx_t *ctx, u_char *user)
{
    ngx_uint_t  online;

    ngx_shmtx_lock(&ctx->shpool->mutex);
    online = ngx_foko_chat_presence_online_locked(ctx->sh, user);
    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return online;
}


static uint64_t
ngx_foko_chat_presence_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}
