
/*
 * Foko chat: rate limits in the shared zone.
 *
 * Fixed windows counted per key ("login:acct:<email>", "login:addr:<ip>",
 * ...) in a red-black tree by crc32 with an LRU queue, in the manner of
 * limit_req: when the zone is short, the least recently used counters go
 * first.  With several hosts (foko_chat_redis_url) the counters are in
 * Redis (ngx_foko_chat_redis_limit.c); these are the fallback.
 */


#include "ngx_foko_chat_limit.h"
#include "ngx_foko_chat_redis.h"
#include "ngx_foko_chat_task.h"


/* a successful attempt, taken back in Redis too */
typedef struct {
    ngx_uint_t                 clear;
    ngx_str_t                  key;
    u_char                     err[NGX_FOKO_CHAT_REDIS_ERR_LEN];
    u_char                     data[NGX_FOKO_CHAT_LIMIT_KEY_MAX];
} ngx_foko_chat_limit_settle_t;




typedef struct {
    u_char                     color;
    u_char                     len;
    ngx_queue_t                queue;
    time_t                     start;
    time_t                     window;
    ngx_uint_t                 count;
    u_char                     data[1];
} ngx_foko_chat_limit_node_t;


static ngx_foko_chat_limit_node_t *ngx_foko_chat_limit_lookup(
    ngx_foko_chat_sh_t *sh, ngx_str_t *key, uint32_t hash);
static void ngx_foko_chat_limit_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_foko_chat_limit_expire(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_uint_t force);
static void ngx_foko_chat_limit_settle(ngx_str_t *key, ngx_uint_t clear);
static void ngx_foko_chat_limit_settle_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_limit_settle_done(ngx_foko_chat_task_t *task);


static struct {
    ngx_str_t                  name;
    ngx_foko_chat_limit_t      dflt;
} ngx_foko_chat_limit_names[NGX_FOKO_CHAT_LIMITS] = {
    { ngx_string("login_account"), { 10, 15 * 60 } },
    { ngx_string("login_address"), { 50, 15 * 60 } },
    { ngx_string("forgot_account"), { 3, 60 * 60 } },
    { ngx_string("forgot_address"), { 10, 60 * 60 } },
    { ngx_string("signup_address"), { 20, 60 * 60 } },
};


/* foko_chat_limit <name> <n>/<period>, e.g. "login_account 10/15m" */

char *
ngx_foko_chat_limit_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_foko_chat_main_conf_t  *fmcf = conf;

    u_char      *slash;
    time_t       window;
    ngx_int_t    max;
    ngx_str_t   *value, s;
    ngx_uint_t   i;

    value = cf->args->elts;

    for (i = 0; i < NGX_FOKO_CHAT_LIMITS; i++) {
        if (value[1].len == ngx_foko_chat_limit_names[i].name.len
            && ngx_strncmp(value[1].data,
                           ngx_foko_chat_limit_names[i].name.data,
                           value[1].len)
               == 0)
        {
            break;
        }
    }

    if (i == NGX_FOKO_CHAT_LIMITS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown limit \"%V\" in \"%V\"; expected "
                           "login_account, login_address, forgot_account, "
                           "forgot_address or signup_address",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (fmcf->limits[i].max) {
        return "is duplicate";
    }

    slash = ngx_strlchr(value[2].data, value[2].data + value[2].len, '/');

    max = slash ? ngx_atoi(value[2].data, slash - value[2].data) : NGX_ERROR;

    if (slash) {
        s.data = slash + 1;
        s.len = value[2].data + value[2].len - s.data;
        window = ngx_parse_time(&s, 1);

    } else {
        window = NGX_ERROR;
    }

    if (max < 1 || max > 1000000 || window == (time_t) NGX_ERROR
        || window < 1 || window > 86400)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\"; expected "
                           "<n>/<period>, such as 10/15m, with a period "
                           "of at most 1d", &value[2], &cmd->name);
        return NGX_CONF_ERROR;
    }

    fmcf->limits[i].max = max;
    fmcf->limits[i].window = window;

    return NGX_CONF_OK;
}


void
ngx_foko_chat_limit_init_conf(ngx_foko_chat_main_conf_t *fmcf)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_FOKO_CHAT_LIMITS; i++) {
        if (fmcf->limits[i].max == 0) {
            fmcf->limits[i] = ngx_foko_chat_limit_names[i].dflt;
        }
    }
}


void
ngx_foko_chat_limit_init(ngx_foko_chat_sh_t *sh)
{
    ngx_rbtree_init(&sh->limits, &sh->limits_sentinel,
                    ngx_foko_chat_limit_insert_value);
    ngx_queue_init(&sh->limits_lru);
}


/*
 * Counts one event for "key" unless the key is over its limit: returns 0
 * if counted, else the seconds until the window ends.  Checking and
 * counting under one lock keeps workers from passing the limit together.
 */

time_t
ngx_foko_chat_limit_take(ngx_foko_chat_shm_ctx_t *ctx, ngx_str_t *key,
    ngx_foko_chat_limit_t *limit)
{
    size_t                       size;
    time_t                       now, wait;
    uint32_t                     hash;
    ngx_rbtree_node_t           *node;
    ngx_foko_chat_limit_node_t  *ln;

    if (key->len > NGX_FOKO_CHAT_LIMIT_KEY_MAX) {
        key->len = NGX_FOKO_CHAT_LIMIT_KEY_MAX;
    }

    now = ngx_time();
    hash = ngx_crc32_short(key->data, key->len);
    wait = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ln = ngx_foko_chat_limit_lookup(ctx->sh, key, hash);

    if (ln) {
        ngx_queue_remove(&ln->queue);
        ngx_queue_insert_head(&ctx->sh->limits_lru, &ln->queue);

        if (now - ln->start >= limit->window) {
            ln->start = now;
            ln->count = 0;
        }

        if (ln->count >= limit->max) {
            wait = ln->start + limit->window - now;

        } else {
            ln->count++;
        }

        goto done;
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_foko_chat_limit_node_t, data)
           + key->len;

    ngx_foko_chat_limit_expire(ctx, 0);

    node = ngx_slab_alloc_locked(ctx->shpool, size);

    if (node == NULL) {
        ngx_foko_chat_limit_expire(ctx, 1);

        /* cached channels give way to counters that protect accounts */
        node = ngx_foko_chat_shm_alloc_locked(ctx, size, NULL);
        if (node == NULL) {
            /* open rather than evict counters that still count */
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "foko chat: the shared zone is full: an attempt "
                          "is not counted; raise foko_chat_shm_size");
            goto done;
        }
    }

    node->key = hash;

    ln = (ngx_foko_chat_limit_node_t *) &node->color;

    ln->len = (u_char) key->len;
    ln->start = now;
    ln->window = limit->window;
    ln->count = 1;
    ngx_memcpy(ln->data, key->data, key->len);

    ngx_rbtree_insert(&ctx->sh->limits, node);
    ngx_queue_insert_head(&ctx->sh->limits_lru, &ln->queue);

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return wait;
}


/* takes back one counted event, as for an attempt that succeeded */

void
ngx_foko_chat_limit_refund(ngx_foko_chat_shm_ctx_t *ctx, ngx_str_t *key)
{
    ngx_foko_chat_limit_node_t  *ln;

    if (key->len > NGX_FOKO_CHAT_LIMIT_KEY_MAX) {
        key->len = NGX_FOKO_CHAT_LIMIT_KEY_MAX;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ln = ngx_foko_chat_limit_lookup(ctx->sh, key, ngx_crc32_short(key->data,
                                                                 key->len));
    if (ln && ln->count) {
        ln->count--;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_foko_chat_limit_settle(key, 0);
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

    ngx_foko_chat_limit_settle(key, 1);
}


/*
 * With Redis the counters are there: the same change, on the storage
 * pool, answered by nobody (a failure leaves the attempt counted).
 */

static void
ngx_foko_chat_limit_settle(ngx_str_t *key, ngx_uint_t clear)
{
    ngx_foko_chat_task_t          *task;
    ngx_foko_chat_main_conf_t     *fmcf;
    ngx_foko_chat_limit_settle_t  *ls;

    if (!ngx_foko_chat_redis_on()) {
        return;
    }

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_limit_settle_t),
                                     ngx_cycle->log);
    if (task == NULL) {
        return;
    }

    ls = task->data;
    ls->clear = clear;
    ls->key.data = ls->data;
    ls->key.len = ngx_cpymem(ls->data, key->data, key->len) - ls->data;

    task->run = ngx_foko_chat_limit_settle_run;
    task->done = ngx_foko_chat_limit_settle_done;

    if (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool) != NGX_OK) {
        ngx_foko_chat_task_free(task);
    }
}


static void
ngx_foko_chat_limit_settle_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_limit_settle_t  *ls = task->data;

    (void) ngx_foko_chat_redis_limit_settle(ls->clear ? &ls->key : NULL,
                                            ls->clear ? NULL : &ls->key,
                                            ls->err);
}


static ngx_int_t
ngx_foko_chat_limit_settle_done(ngx_foko_chat_task_t *task)
{
    return NGX_OK;
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
 * Drops counters from the cold end of the LRU whose windows are over: a
 * couple on every new counter, more when the zone is full.  A counter
 * still within its window is never dropped.
 */

static void
ngx_foko_chat_limit_expire(ngx_foko_chat_shm_ctx_t *ctx, ngx_uint_t force)
{
    time_t                       now;
    ngx_uint_t                   n;
    ngx_queue_t                 *q;
    ngx_rbtree_node_t           *node;
    ngx_foko_chat_limit_node_t  *ln;

    now = ngx_time();

    for (n = 0; n < (force ? 64 : 2); n++) {

        if (ngx_queue_empty(&ctx->sh->limits_lru)) {
            return;
        }

        q = ngx_queue_last(&ctx->sh->limits_lru);
        ln = ngx_queue_data(q, ngx_foko_chat_limit_node_t, queue);

        if (now - ln->start < ln->window) {
            return;
        }

        ngx_queue_remove(q);

        node = (ngx_rbtree_node_t *)
                   ((u_char *) ln - offsetof(ngx_rbtree_node_t, color));

        ngx_rbtree_delete(&ctx->sh->limits, node);
        ngx_slab_free_locked(ctx->shpool, node);
    }
}
