
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
 *
 * With several hosts (foko_chat_redis_url) the zone also keeps a node per
 * (user, other host) that has the user online, keyed by a negative "pid":
 * minus one minus the host's slot (ngx_foko_chat_redis_presence.c).  This
 * host's own transitions (the first connection of a user on any worker,
 * the end of the last grace period) go to the other hosts through Redis;
 * "online" and "offline" are announced to this host's clients only when
 * the user's first node anywhere appears or the last one goes.
 */


#include "ngx_foko_chat_presence.h"
#include "ngx_foko_chat_event.h"
#include "ngx_foko_chat_redis.h"


typedef struct {
    u_char                     color;
    u_char                     id[NGX_FOKO_CHAT_OID_LEN];
    ngx_pid_t                  pid;
    ngx_uint_t                 count;
    uint64_t                   closed;     /* ms since the epoch */
    ngx_uint_t                 nids;       /* a remote node's channels */
    u_char                     ids[1];
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
static ngx_rbtree_node_t *ngx_foko_chat_presence_first(
    ngx_foko_chat_sh_t *sh, u_char *user);
static void ngx_foko_chat_presence_count(ngx_foko_chat_sh_t *sh,
    u_char *user, ngx_uint_t *local, ngx_uint_t *remote);
static void ngx_foko_chat_presence_record(u_char *user, ngx_uint_t global);


/*
 * What the last open or expire of this worker found, under the zone
 * lock: whether the user's first or last node anywhere came or went.
 * ngx_foko_chat_presence_announce() that follows at once uses it.
 */
static u_char      ngx_foko_chat_presence_last[NGX_FOKO_CHAT_OID_LEN];
static ngx_int_t   ngx_foko_chat_presence_global = -1;


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
    ngx_uint_t                      local, remote;
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
    ngx_foko_chat_presence_count(ctx->sh, user, &local, &remote);
    rc = local ? NGX_DECLINED : NGX_OK;

    if (rc == NGX_OK) {
        ngx_foko_chat_presence_record(user, remote == 0);
    }

    node = ngx_foko_chat_shm_alloc_locked(ctx,
                                  offsetof(ngx_rbtree_node_t, color)
                                  + sizeof(ngx_foko_chat_presence_node_t),
                                  NULL);
    if (node == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    node->key = ngx_crc32_short(user, NGX_FOKO_CHAT_OID_LEN);
    pn = ngx_foko_chat_presence_of(node);
    ngx_memcpy(pn->id, user, NGX_FOKO_CHAT_OID_LEN);
    pn->pid = ngx_pid;
    pn->count = 1;
    pn->closed = 0;
    pn->nids = 0;

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
    ngx_uint_t                      local, remote;
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

        ngx_foko_chat_presence_count(ctx->sh, user, &local, &remote);

        if (local == 0) {
            rc = NGX_OK;
            ngx_foko_chat_presence_record(user, remote == 0);
        }
    }

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


/*
 * Drops the nodes of workers that are gone without closing their
 * connections.  Returns how many users this host lost with them (other
 * hosts may still have them); their ids go to "users" (up to "max").
 */

ngx_uint_t
ngx_foko_chat_presence_sweep(ngx_foko_chat_shm_ctx_t *ctx, u_char *users,
    ngx_uint_t max)
{
    ngx_pid_t                       dead, alive;
    ngx_uint_t                      n, local, remote;
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

        if (pn->pid == alive || pn->pid <= 0) {
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
        ngx_foko_chat_presence_count(ctx->sh, pn->id, &local, &remote);

        if (n < max && local == 0) {
            ngx_memcpy(users + n * NGX_FOKO_CHAT_OID_LEN, pn->id,
                       NGX_FOKO_CHAT_OID_LEN);
            n++;
        }

        ngx_slab_free_locked(ctx->shpool, node);
    }

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return n;
}


/*
 * This host's transition of "user" (after open, expire or sweep said so):
 * told to the other hosts, and announced here if the user's first node
 * anywhere came or the last one went.
 */

void
ngx_foko_chat_presence_announce(u_char *user, u_char *channels, ngx_uint_t n,
    ngx_uint_t online)
{
    ngx_uint_t                global, local, remote;
    ngx_foko_chat_shm_ctx_t  *ctx;

    ctx = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);
    if (ctx == NULL) {
        return;
    }

    if (ngx_foko_chat_presence_global != -1
        && ngx_memcmp(ngx_foko_chat_presence_last, user,
                      NGX_FOKO_CHAT_OID_LEN) == 0)
    {
        global = ngx_foko_chat_presence_global;

    } else {
        /* a sweep, some time after the nodes went */
        ngx_shmtx_lock(&ctx->shpool->mutex);
        ngx_foko_chat_presence_count(ctx->sh, user, &local, &remote);
        ngx_shmtx_unlock(&ctx->shpool->mutex);

        global = online ? (remote == 0) : (local + remote == 0);
    }

    ngx_foko_chat_presence_global = -1;

    ngx_foko_chat_redis_publish_presence(user, channels, n, online);

    if (global) {
        ngx_foko_chat_event_presence(user, channels, n, online);
    }
}


/*
 * With the zone locked: another host's transition of "user"; "host" is
 * its slot.  Returns 1 if the user's state changed for this host too
 * (to be announced after the unlock), 0 if not, NGX_ERROR if the zone is
 * full.
 */

ngx_int_t
ngx_foko_chat_presence_remote_locked(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_uint_t host, u_char *user, ngx_uint_t up, u_char *ids,
    ngx_uint_t nids)
{
    ngx_pid_t                       pid;
    ngx_uint_t                      local, remote;
    ngx_rbtree_node_t              *node;
    ngx_foko_chat_presence_node_t  *pn;

    pid = -1 - (ngx_pid_t) host;
    node = ngx_foko_chat_presence_find(ctx->sh, user, pid);

    if (!up) {
        if (node == NULL) {
            return 0;
        }

        ngx_rbtree_delete(&ctx->sh->presence, node);
        ngx_slab_free_locked(ctx->shpool, node);

        ngx_foko_chat_presence_count(ctx->sh, user, &local, &remote);

        return local + remote == 0;
    }

    if (node) {
        /* up twice (a bootstrap after the event): the newer channels */
        ngx_rbtree_delete(&ctx->sh->presence, node);
        ngx_slab_free_locked(ctx->shpool, node);
        node = NULL;
        local = 1;

    } else {
        ngx_foko_chat_presence_count(ctx->sh, user, &local, &remote);
        local += remote;
    }

    node = ngx_foko_chat_shm_alloc_locked(ctx,
                                  offsetof(ngx_rbtree_node_t, color)
                                  + sizeof(ngx_foko_chat_presence_node_t)
                                  + nids * NGX_FOKO_CHAT_OID_LEN,
                                  NULL);
    if (node == NULL) {
        return NGX_ERROR;
    }

    node->key = ngx_crc32_short(user, NGX_FOKO_CHAT_OID_LEN);
    pn = ngx_foko_chat_presence_of(node);
    ngx_memcpy(pn->id, user, NGX_FOKO_CHAT_OID_LEN);
    pn->pid = pid;
    pn->count = 1;
    pn->closed = 0;
    pn->nids = nids;

    if (nids) {
        ngx_memcpy(pn->ids, ids, nids * NGX_FOKO_CHAT_OID_LEN);
    }

    ngx_rbtree_insert(&ctx->sh->presence, node);

    return local == 0;
}


/*
 * With the zone locked: drops the nodes of the host in slot "host" (all
 * other hosts' if NGX_ERROR).  The users left with no node anywhere, and
 * the channels to tell, go to "gone" unless it is NULL.
 */

void
ngx_foko_chat_presence_drop_locked(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_int_t host, ngx_array_t *gone)
{
    ngx_uint_t                       local, remote;
    ngx_rbtree_node_t               *node, *next, *root, *sentinel;
    ngx_foko_chat_presence_node_t   *pn;
    ngx_foko_chat_presence_gone_t   *g;

    root = ctx->sh->presence.root;
    sentinel = ctx->sh->presence.sentinel;

    if (root == sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(root, sentinel); node; node = next) {
        next = ngx_rbtree_next(&ctx->sh->presence, node);
        pn = ngx_foko_chat_presence_of(node);

        if (pn->pid >= 0
            || (host != NGX_ERROR && pn->pid != -1 - (ngx_pid_t) host))
        {
            continue;
        }

        ngx_rbtree_delete(&ctx->sh->presence, node);
        ngx_foko_chat_presence_count(ctx->sh, pn->id, &local, &remote);

        g = (gone && local + remote == 0) ? ngx_array_push(gone) : NULL;

        if (g) {
            ngx_memcpy(g->user, pn->id, NGX_FOKO_CHAT_OID_LEN);
            g->nids = pn->nids;
            g->ids = ngx_alloc(pn->nids * NGX_FOKO_CHAT_OID_LEN + 1,
                               ngx_cycle->log);

            if (g->ids == NULL) {
                gone->nelts--;

            } else {
                ngx_memcpy(g->ids, pn->ids, pn->nids * NGX_FOKO_CHAT_OID_LEN);
            }
        }

        ngx_slab_free_locked(ctx->shpool, node);
    }
}


/* the numbers of this host's nodes and of other hosts' for "user" */

static void
ngx_foko_chat_presence_count(ngx_foko_chat_sh_t *sh, u_char *user,
    ngx_uint_t *local, ngx_uint_t *remote)
{
    ngx_rbtree_node_t              *node;
    ngx_foko_chat_presence_node_t  *pn;

    *local = 0;
    *remote = 0;

    for (node = ngx_foko_chat_presence_first(sh, user);
         node;
         node = ngx_rbtree_next(&sh->presence, node))
    {
        pn = ngx_foko_chat_presence_of(node);

        if (ngx_memcmp(pn->id, user, NGX_FOKO_CHAT_OID_LEN) != 0) {
            break;
        }

        if (pn->pid > 0) {
            (*local)++;

        } else {
            (*remote)++;
        }
    }
}


/* the leftmost node of "user": the user's nodes follow it */

static ngx_rbtree_node_t *
ngx_foko_chat_presence_first(ngx_foko_chat_sh_t *sh, u_char *user)
{
    uint32_t            hash;
    ngx_int_t           rc;
    ngx_rbtree_node_t  *node, *sentinel, *first;

    hash = ngx_crc32_short(user, NGX_FOKO_CHAT_OID_LEN);

    node = sh->presence.root;
    sentinel = sh->presence.sentinel;
    first = NULL;

    while (node != sentinel) {
        rc = ngx_foko_chat_presence_cmp(node, hash, user, 0);

        if (rc == 0) {
            first = node;
            node = node->left;
            continue;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return first;
}


static void
ngx_foko_chat_presence_record(u_char *user, ngx_uint_t global)
{
    ngx_memcpy(ngx_foko_chat_presence_last, user, NGX_FOKO_CHAT_OID_LEN);
    ngx_foko_chat_presence_global = global;
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

    hash = ngx_crc32_short(user, NGX_FOKO_CHAT_OID_LEN);

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

    rc = ngx_memcmp(user, pn->id, NGX_FOKO_CHAT_OID_LEN);

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
