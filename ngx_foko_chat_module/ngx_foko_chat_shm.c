
/*
 * Foko chat: the shared-memory zone.
 *
 * The zone is added while the configuration is read and initialized once
 * nginx has mapped it.  On "nginx -s reload" nginx hands the previous
 * cycle's zone to init_zone as "data" and the zone is adopted as it is, so
 * caches and counters survive a reload.
 *
 * The zone caches one database: "db" is a checksum of what names it in
 * foko_chat_mongo_uri (the database, the hosts, the replica set; not the
 * credentials nor the options).  nginx adopts a zone of the same name,
 * size and tag, so a reload that names another database uses the other
 * of two tags, and nginx maps a fresh zone, as for a new size: nothing
 * learnt from one database is served from another.
 */


#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_limit.h"
#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_cache.h"
#include "ngx_foko_chat_users.h"
#include "ngx_foko_chat_messages_idem.h"
#include "ngx_foko_chat_bus.h"
#include "ngx_foko_chat_presence.h"


static void *ngx_foko_chat_shm_tag(ngx_conf_t *cf, ngx_str_t *name,
    uint32_t db);
static ngx_int_t ngx_foko_chat_shm_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);


static u_char  ngx_foko_chat_shm_tags[2];


ngx_shm_zone_t *
ngx_foko_chat_shm_add(ngx_conf_t *cf, size_t size, uint32_t db)
{
    ngx_str_t                 name = ngx_string(NGX_FOKO_CHAT_SHM_NAME);
    ngx_shm_zone_t           *shm_zone;
    ngx_foko_chat_shm_ctx_t  *ctx;

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_foko_chat_shm_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->db = db;

    shm_zone = ngx_shared_memory_add(cf, &name, size,
                                     ngx_foko_chat_shm_tag(cf, &name, db));
    if (shm_zone == NULL) {
        return NULL;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "shared zone \"%V\" is already used by "
                           "another module", &name);
        return NULL;
    }

    shm_zone->init = ngx_foko_chat_shm_init_zone;
    shm_zone->data = ctx;

    return shm_zone;
}


/*
 * The tag of the previous cycle's zone if it caches the same database,
 * else the other one.  The module stays loaded across a reload, so the
 * tags keep their addresses.
 */

static void *
ngx_foko_chat_shm_tag(ngx_conf_t *cf, ngx_str_t *name, uint32_t db)
{
    ngx_uint_t                i;
    ngx_list_part_t          *part;
    ngx_shm_zone_t           *zone;
    ngx_foko_chat_shm_ctx_t  *octx;

    part = &cf->cycle->old_cycle->shared_memory.part;
    zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return &ngx_foko_chat_shm_tags[0];
            }

            part = part->next;
            zone = part->elts;
            i = 0;
        }

        if (zone[i].shm.name.len == name->len
            && ngx_strncmp(zone[i].shm.name.data, name->data, name->len)
               == 0)
        {
            break;
        }
    }

    if (zone[i].tag != &ngx_foko_chat_shm_tags[0]
        && zone[i].tag != &ngx_foko_chat_shm_tags[1])
    {
        return &ngx_foko_chat_shm_tags[0];
    }

    octx = zone[i].data;

    if (octx->sh && octx->sh->db == db) {
        return zone[i].tag;
    }

    ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                       "\"foko_chat_mongo_uri\" names another database: "
                       "the shared zone starts afresh");

    return zone[i].tag == &ngx_foko_chat_shm_tags[0]
           ? &ngx_foko_chat_shm_tags[1] : &ngx_foko_chat_shm_tags[0];
}


static ngx_int_t
ngx_foko_chat_shm_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_foko_chat_shm_ctx_t  *octx = data;

    size_t                    len;
    ngx_foko_chat_shm_ctx_t  *ctx;

    ctx = shm_zone->data;

    if (octx) {
        /* a reload: adopt the zone of the previous cycle as it is */

        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;

        (void) ngx_atomic_fetch_add(&ctx->sh->reloads, 1);

        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    ctx->sh = ngx_slab_calloc(ctx->shpool, sizeof(ngx_foko_chat_sh_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;
    ctx->sh->created = ngx_time();
    ctx->sh->db = ctx->db;

    ngx_foko_chat_limit_init(ctx->sh);
    ngx_foko_chat_seq_init(ctx->sh);
    ngx_foko_chat_cache_init(ctx->sh);
    ngx_foko_chat_users_init(ctx->sh);
    ngx_foko_chat_idem_init(ctx->sh);
    ngx_foko_chat_presence_init(ctx->sh);

    if (ngx_foko_chat_bus_init_zone(ctx, ctx->log_size) != NGX_OK) {
        return NGX_ERROR;
    }

    len = sizeof(" in foko chat zone \"\"") + shm_zone->shm.name.len;

    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->shpool->log_ctx, " in foko chat zone \"%V\"%Z",
                &shm_zone->shm.name);

    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


ngx_foko_chat_shm_ctx_t *
ngx_foko_chat_shm_cycle(ngx_cycle_t *cycle)
{
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_foko_chat_module);

    if (fmcf == NULL || fmcf->shm_zone == NULL) {
        return NULL;
    }

    return fmcf->shm_zone->data;
}


ngx_foko_chat_shm_ctx_t *
ngx_foko_chat_shm_get(ngx_http_request_t *r)
{
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    return fmcf->shm_zone->data;
}


void
ngx_foko_chat_shm_usage(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_shm_usage_t *usage)
{
    ngx_slab_pool_t  *shpool;

    shpool = ctx->shpool;

    usage->size = shpool->end - (u_char *) shpool;

    ngx_shmtx_lock(&shpool->mutex);
    usage->free = shpool->pfree << ngx_pagesize_shift;
    ngx_shmtx_unlock(&shpool->mutex);
}


/*
 * Records the state seen by the latest probe; returns 1 if this call
 * changed it, so that only one worker logs a transition.
 */

ngx_uint_t
ngx_foko_chat_shm_set_mongo_state(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_mongo_state_e state)
{
    ngx_atomic_uint_t  old;

    ctx->sh->mongo_checked = ngx_time();

    old = ctx->sh->mongo_state;

    if (old == (ngx_atomic_uint_t) state) {
        return 0;
    }

    return ngx_atomic_cmp_set(&ctx->sh->mongo_state, old, state);
}


/*
 * Red-black trees of zone entries keyed by a channel id (24 hex digits):
 * an entry is laid over the node from its "color" field on and starts
 * with "u_char color; u_char id[NGX_FOKO_CHAT_OID_LEN];".  The key is
 * the id's crc32.
 */

u_char *
ngx_foko_chat_shm_id_lookup(ngx_rbtree_t *tree, u_char *id)
{
    u_char             *entry;
    uint32_t            hash;
    ngx_int_t           rc;
    ngx_rbtree_node_t  *node, *sentinel;

    hash = ngx_crc32_short(id, NGX_FOKO_CHAT_OID_LEN);

    node = tree->root;
    sentinel = tree->sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        entry = &node->color;

        rc = ngx_memcmp(id, entry + 1, NGX_FOKO_CHAT_OID_LEN);

        if (rc == 0) {
            return entry;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


void
ngx_foko_chat_shm_id_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t  **p;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            p = (ngx_memcmp(&node->color + 1, &temp->color + 1,
                            NGX_FOKO_CHAT_OID_LEN) < 0)
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
 * Zone memory for every user of the zone (the cache, the counters, the
 * presence), with the zone locked: when the zone is full, cold cached
 * channels are evicted to make room, but never "keep".
 */

void *
ngx_foko_chat_shm_alloc_locked(ngx_foko_chat_shm_ctx_t *ctx, size_t size,
    void *keep)
{
    void        *p;
    ngx_uint_t   n;

    if (size == 0) {
        return NULL;
    }

    for (n = 0; n < 64; n++) {
        p = ngx_slab_alloc_locked(ctx->shpool, size);
        if (p) {
            return p;
        }

        if (!ctx->sh->evicting) {
            ctx->sh->evicting = 1;
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "foko chat: the shared zone is full: cold channels "
                          "are evicted from the cache; raise "
                          "foko_chat_shm_size to keep more");
        }

        if (ngx_foko_chat_cache_evict_locked(ctx, keep) != NGX_OK
            && ngx_foko_chat_users_evict_locked(ctx, keep) != NGX_OK)
        {
            return NULL;
        }
    }

    return NULL;
}
