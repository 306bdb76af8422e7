
/*
 * Foko chat: who is online.
 *
 * A user is online while one of their WebSocket connections is open on
 * any worker.  Each worker counts its own connections of a user in a node
 * of the zone keyed by the user and the worker's pid, so that the
 * connections of a worker that died (a crash, kill -9) can be told apart
 * and dropped when the master starts its replacement.
 *
 * When a worker's count falls to zero its node stays for a grace period,
 * so that a reconnect (a page reload, a network hiccup) announces nothing;
 * the worker checks again when the period is over, and the user goes
 * offline when no worker has a node for them any more.
 */


#include "ngx_foko_chat_presence.h"
#include "ngx_foko_chat_cache.h"


typedef struct {
    u_char                     color;
    u_char                     id[24];
    ngx_pid_t                  pid;
    ngx_uint_t                 count;
    uint64_t                   closed;     /* ms since the epoch */
} ngx_foko_chat_presence_node_t;


#define ngx_foko_chat_presence_of(node)                                       \
    ((ngx_foko_chat_presence_node_t *) &(node)->color)


static ngx_rbtree_node_t *ngx_foko_chat_presence_find(
    ngx_foko_chat_sh_t *sh, u_char *user, ngx_pid_t pid);
static void ngx_foko_chat_presence_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_foko_chat_presence_cmp(ngx_rbtree_node_t *a,
    uint32_t key, u_char *user, ngx_pid_t pid);
static uint64_t ngx_foko_chat_presence_now(void);


void
ngx_foko_chat_presence_init(ngx_foko_chat_sh_t *sh)
{
    ngx_rbtree_init(&sh->presence, &sh->presence_sentinel,
                    ngx_foko_chat_presence_insert_value);
}


ngx_int_t
ngx_foko_chat_presence_open(ngx_foko_chat_shm_ctx_t *ctx, u_char *user)
{
    ngx_int_t                       rc;
    ngx_rbtree_node_t              *node;
    ngx_foko_chat_presence_node_t  *pn;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    node = ngx_foko_chat_presence_find(ctx->sh, user, ngx_pid);

    if (node) {
        ngx_foko_chat_presence_of(node)->count++;
        rc = NGX_DECLINED;
        goto done;
    }

    /* online already if another worker has the user, or had just now */
    rc = ngx_foko_chat_presence_find(ctx->sh, user, 0) ? NGX_DECLINED
                                                        : NGX_OK;

    node = ngx_foko_chat_cache_alloc_locked(ctx,
                                  offsetof(ngx_rbtree_node_t, color)
                                  + sizeof(ngx_foko_chat_presence_node_t));
    if (node == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    node->key = ngx_crc32_short(user, 24);
    pn = ngx_foko_chat_presence_of(node);
    ngx_memcpy(pn->id, user, 24);
    pn->pid = ngx_pid;
    pn->count = 1;
    pn->closed = 0;

    ngx_rbtree_insert(&ctx->sh->presence, node);

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


ngx_int_t
ngx_foko_chat_presence_close(ngx_foko_chat_shm_ctx_t *ctx, u_char *user)
{
    ngx_int_t                       rc;
    ngx_rbtree_node_t              *node;
    ngx_foko_chat_presence_node_t  *pn;

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    node = ngx_foko_chat_presence_find(ctx->sh, user, ngx_pid);

    if (node) {
        pn = ngx_foko_chat_presence_of(node);

        if (pn->count && --pn->count == 0) {
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

    node = ngx_foko_chat_presence_find(ctx->sh, user, ngx_pid);

    if (node == NULL) {
        goto done;
    }

    pn = ngx_foko_chat_presence_of(node);

    /* a later close has a timer of its own: it decides */

    if (pn->count == 0
        && ngx_foko_chat_presence_now() + 50 >= pn->closed + grace)
    {
        ngx_rbtree_delete(&ctx->sh->presence, node);
        ngx_slab_free_locked(ctx->shpool, node);

        if (ngx_foko_chat_presence_find(ctx->sh, user, 0) == NULL) {
            rc = NGX_OK;
        }
    }

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


/*
 * Drops the nodes of workers that are gone without closing their
 * connections.  Returns how many users went offline with them; their ids
 * go to "users" (up to "max").
 */

ngx_uint_t
ngx_foko_chat_presence_sweep(ngx_foko_chat_shm_ctx_t *ctx, u_char *users,
    ngx_uint_t max)
{
    ngx_pid_t                       dead, alive;
    ngx_uint_t                      n;
    ngx_rbtree_node_t              *node, *next, *root, *sentinel;
    ngx_foko_chat_presence_node_t  *pn;

    n = 0;
    dead = 0;
    alive = ngx_pid;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    root = ctx->sh->presence.root;
    sentinel = ctx->sh->presence.sentinel;

    if (root == sentinel) {
        goto done;
    }

    for (node = ngx_rbtree_min(root, sentinel); node; node = next) {
        next = ngx_rbtree_next(&ctx->sh->presence, node);
        pn = ngx_foko_chat_presence_of(node);

        /* a worker's nodes are many: the last answers are remembered */

        if (pn->pid == alive) {
            continue;
        }

        if (pn->pid != dead) {
            if (kill(pn->pid, 0) == 0 || ngx_errno != NGX_ESRCH) {
                alive = pn->pid;
                continue;
            }

            dead = pn->pid;
        }

        ngx_rbtree_delete(&ctx->sh->presence, node);

        if (n < max
            && ngx_foko_chat_presence_find(ctx->sh, pn->id, 0) == NULL)
        {
            ngx_memcpy(users + n * 24, pn->id, 24);
            n++;
        }

        ngx_slab_free_locked(ctx->shpool, node);
    }

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return n;
}


ngx_uint_t
ngx_foko_chat_presence_online_locked(ngx_foko_chat_sh_t *sh, u_char *user)
{
    return ngx_foko_chat_presence_find(sh, user, 0) != NULL;
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


/* the node of (user, pid); pid 0: of the user and any worker */

static ngx_rbtree_node_t *
ngx_foko_chat_presence_find(ngx_foko_chat_sh_t *sh, u_char *user,
    ngx_pid_t pid)
{
    uint32_t            hash;
    ngx_int_t           rc;
    ngx_rbtree_node_t  *node, *sentinel;

    hash = ngx_crc32_short(user, 24);

    node = sh->presence.root;
    sentinel = sh->presence.sentinel;

    while (node != sentinel) {
        rc = ngx_foko_chat_presence_cmp(node, hash, user, pid);

        if (rc == 0) {
            return node;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* where (key, user, pid) goes relative to a node: <0 left, >0 right */

static ngx_int_t
ngx_foko_chat_presence_cmp(ngx_rbtree_node_t *a, uint32_t key, u_char *user,
    ngx_pid_t pid)
{
    ngx_int_t                       rc;
    ngx_foko_chat_presence_node_t  *pn;

    if (key != a->key) {
        return (key < a->key) ? -1 : 1;
    }

    pn = ngx_foko_chat_presence_of(a);

    rc = ngx_memcmp(user, pn->id, 24);

    if (rc != 0 || pid == 0 || pid == pn->pid) {
        return rc;
    }

    return (pid < pn->pid) ? -1 : 1;
}


static void
ngx_foko_chat_presence_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t              **p;
    ngx_foko_chat_presence_node_t   *pn;

    pn = ngx_foko_chat_presence_of(node);

    for ( ;; ) {
        p = (ngx_foko_chat_presence_cmp(temp, node->key, pn->id, pn->pid)
             < 0)
            ? &temp->left : &temp->right;

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


static uint64_t
ngx_foko_chat_presence_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}
