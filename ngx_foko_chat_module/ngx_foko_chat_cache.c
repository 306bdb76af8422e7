
/*
 * Foko chat: the channel cache in the shared zone.
 *
 * A channel is cached when a worker first needs it: its members, so that
 * posting needs no MongoDB round trip to check membership, and a ring of
 * its latest messages (foko_chat_history_cache of them), so that recent
 * history is served from memory, also while MongoDB is away.  Every
 * acknowledged message enters the ring of its channel; the slot of a seq
 * is seq % size, and a slot counts only if it holds that very seq.
 *
 * The ring of a channel is trusted for the newest page only if it holds
 * the highest seq that any worker saw acknowledged (kept beside the seq
 * counter); a ring that missed one (loaded while the message was being
 * written) is dropped, and the channel is loaded again.
 *
 * When the zone runs short, the least recently used channels are evicted
 * whole; they come back from MongoDB when next used.
 */


#include "ngx_foko_chat_cache.h"
#include "ngx_foko_chat_bus.h"
#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_users.h"


typedef struct {
    u_char                         id[NGX_FOKO_CHAT_OID_LEN];
    u_char                         name_len;
    u_char                         name[NGX_FOKO_CHAT_USERNAME_MAX];
} ngx_foko_chat_cache_member_t;


typedef struct {
    int64_t                        seq;
    u_char                        *json;
    size_t                         len;
    uint32_t                       cid;     /* of author and client_id */
} ngx_foko_chat_cache_slot_t;


typedef struct {
    u_char                         color;
    u_char                         id[NGX_FOKO_CHAT_OID_LEN];
    ngx_queue_t                    lru;
    ngx_uint_t                     nmembers;
    ngx_foko_chat_cache_member_t  *members;
    ngx_uint_t                     ring_size;
    ngx_foko_chat_cache_slot_t    *ring;
    int64_t                        top;          /* highest seq in ring */
    int64_t                        created;      /* ms since the epoch */
    unsigned                       direct:1;
    u_short                        name_len;
    u_char                         name[NGX_FOKO_CHAT_CHANNEL_NAME_MAX];
} ngx_foko_chat_cache_channel_t;


static void *ngx_foko_chat_cache_alloc(ngx_foko_chat_shm_ctx_t *ctx,
    size_t size, ngx_foko_chat_cache_channel_t *keep);
static void ngx_foko_chat_cache_free(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_cache_channel_t *cc);
static ngx_int_t ngx_foko_chat_cache_put_locked(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_cache_channel_t *cc, json_t *message, char *text);
static uint32_t ngx_foko_chat_cache_cid(const char *author,
    const char *client_id);
static ngx_uint_t ngx_foko_chat_cache_has(ngx_foko_chat_cache_channel_t *cc,
    int64_t from, int64_t to);
static json_t *ngx_foko_chat_cache_members_json(
    ngx_foko_chat_cache_channel_t *cc);
static json_t *ngx_foko_chat_cache_last_json(ngx_foko_chat_cache_channel_t *cc,
    int64_t acked);


#define ngx_foko_chat_cache_lookup(sh, channel)                               \
    ((ngx_foko_chat_cache_channel_t *)                                        \
     ngx_foko_chat_shm_id_lookup(&(sh)->channels, channel))

#define ngx_foko_chat_cache_node(cc)                                          \
    ((ngx_rbtree_node_t *) ((u_char *) (cc)                                   \
                            - offsetof(ngx_rbtree_node_t, color)))


void
ngx_foko_chat_cache_init(ngx_foko_chat_sh_t *sh)
{
    ngx_rbtree_init(&sh->channels, &sh->channels_sentinel,
                    ngx_foko_chat_shm_id_insert_value);
    ngx_queue_init(&sh->channels_lru);
}


ngx_atomic_uint_t
ngx_foko_chat_cache_gen(ngx_foko_chat_shm_ctx_t *ctx)
{
    return ctx->sh->channels_gen;
}


ngx_int_t
ngx_foko_chat_cache_put_channel(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_channel_doc_t *ch, json_t *names, json_t *latest,
    ngx_uint_t ring_size, ngx_atomic_uint_t gen)
{
    size_t                          len;
    json_t                         *name;
    ngx_str_t                       zname;
    ngx_int_t                       rc;
    ngx_uint_t                      i;
    const char                     *s;
    ngx_rbtree_node_t              *node;
    ngx_foko_chat_cache_member_t   *m;
    ngx_foko_chat_cache_channel_t  *cc;

    rc = NGX_ERROR;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (ctx->sh->channels_gen != gen) {
        /* a membership or name changed while MongoDB was read */
        rc = NGX_DECLINED;
        goto done;
    }

    cc = ngx_foko_chat_cache_lookup(ctx->sh, ch->id);
    if (cc) {
        ngx_foko_chat_cache_free(ctx, cc);
    }

    node = ngx_foko_chat_cache_alloc(ctx,
                                     offsetof(ngx_rbtree_node_t, color)
                                     + sizeof(ngx_foko_chat_cache_channel_t),
                                     NULL);
    if (node == NULL) {
        goto done;
    }

    ngx_memzero(node, offsetof(ngx_rbtree_node_t, color)
                      + sizeof(ngx_foko_chat_cache_channel_t));

    node->key = ngx_crc32_short(ch->id, NGX_FOKO_CHAT_OID_LEN);

    cc = (ngx_foko_chat_cache_channel_t *) &node->color;
    ngx_memcpy(cc->id, ch->id, NGX_FOKO_CHAT_OID_LEN);
    cc->top = -1;
    cc->created = ch->created;
    cc->direct = ch->direct;
    cc->name_len = (u_short) ngx_min(ngx_strlen(ch->name),
                                    NGX_FOKO_CHAT_CHANNEL_NAME_MAX);
    ngx_memcpy(cc->name, ch->name, cc->name_len);

    ngx_rbtree_insert(&ctx->sh->channels, node);
    ngx_queue_insert_head(&ctx->sh->channels_lru, &cc->lru);
    ngx_foko_chat_stat_inc(cached_channels);

    cc->members = ngx_foko_chat_cache_alloc(ctx, ch->nmembers
                                      * sizeof(ngx_foko_chat_cache_member_t),
                                            cc);
    if (cc->members == NULL && ch->nmembers) {
        ngx_foko_chat_cache_free(ctx, cc);
        goto done;
    }

    for (i = 0; i < ch->nmembers; i++) {
        m = &cc->members[i];
        ngx_memcpy(m->id, ch->members[i], NGX_FOKO_CHAT_OID_LEN);

        name = names ? json_object_get(names, (char *) ch->members[i])
                     : NULL;
        s = name ? json_string_value(name) : NULL;

        if (s) {
            zname.data = (u_char *) s;
            zname.len = ngx_strlen(s);

        } else {
            /* a load for posts reads no users: the zone may know them */
            zname = ngx_foko_chat_users_name_locked(ctx->sh,
                                                    ch->members[i]);
        }

        len = ngx_min(zname.len, NGX_FOKO_CHAT_USERNAME_MAX);

        m->name_len = (u_char) ngx_min(len, 255);

        if (m->name_len) {
            ngx_memcpy(m->name, zname.data, m->name_len);
        }
    }

    cc->nmembers = ch->nmembers;

    if (ring_size) {
        cc->ring = ngx_foko_chat_cache_alloc(ctx, ring_size
                                        * sizeof(ngx_foko_chat_cache_slot_t),
                                             cc);
        if (cc->ring) {
            ngx_memzero(cc->ring,
                        ring_size * sizeof(ngx_foko_chat_cache_slot_t));
            cc->ring_size = ring_size;

            for (i = 0; i < json_array_size(latest); i++) {
                if (ngx_foko_chat_cache_put_locked(ctx, cc,
                                                   json_array_get(latest, i),
                                                   NULL)
                    != NGX_OK)
                {
                    break;
                }
            }
        }
    }

    rc = NGX_OK;

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


ngx_int_t
ngx_foko_chat_cache_member(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    u_char *user, ngx_uint_t *member)
{
    ngx_uint_t                      i;
    ngx_foko_chat_cache_channel_t  *cc;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    cc = ngx_foko_chat_cache_lookup(ctx->sh, channel);

    if (cc == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NGX_DECLINED;
    }

    ngx_queue_remove(&cc->lru);
    ngx_queue_insert_head(&ctx->sh->channels_lru, &cc->lru);

    *member = 0;

    for (i = 0; i < cc->nmembers; i++) {
        if (ngx_memcmp(cc->members[i].id, user, NGX_FOKO_CHAT_OID_LEN) == 0) {
            *member = 1;
            break;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_OK;
}


void
ngx_foko_chat_cache_forget(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel)
{
    ngx_foko_chat_cache_channel_t  *cc;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ctx->sh->channels_gen++;

    cc = ngx_foko_chat_cache_lookup(ctx->sh, channel);
    if (cc) {
        ngx_foko_chat_cache_free(ctx, cc);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/*
 * With the zone locked: a stored message into its channel's ring, if the
 * channel is cached (a ring that cannot take it is dropped, so that it
 * never answers with a hole).
 */

void
ngx_foko_chat_cache_ring_locked(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, json_t *message, char *text)
{
    ngx_foko_chat_cache_channel_t  *cc;

    cc = ngx_foko_chat_cache_lookup(ctx->sh, channel);

    if (cc && cc->ring) {
        if (ngx_foko_chat_cache_put_locked(ctx, cc, message, text)
            != NGX_OK)
        {
            ngx_foko_chat_cache_free(ctx, cc);
        }
    }
}



ngx_int_t
ngx_foko_chat_cache_page(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    int64_t before, int64_t after, ngx_uint_t limit, json_t **page,
    ngx_uint_t *more)
{
    json_t                         *list, *m;
    int64_t                         from, to, acked, through, seq;
    ngx_int_t                       rc;
    json_error_t                    error;
    ngx_foko_chat_cache_slot_t     *slot;
    ngx_foko_chat_cache_channel_t  *cc;

    rc = NGX_DECLINED;
    list = NULL;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    cc = ngx_foko_chat_cache_lookup(ctx->sh, channel);

    if (cc == NULL || cc->ring == NULL) {
        goto done;
    }

    acked = ngx_foko_chat_seq_acked_locked(ctx->sh, channel);
    through = ngx_foko_chat_seq_through_locked(ctx->sh, channel);

    if (acked < 0 || cc->top < acked) {
        /* the ring missed a message: load the channel again */
        ngx_foko_chat_cache_free(ctx, cc);
        goto done;
    }

    ngx_queue_remove(&cc->lru);
    ngx_queue_insert_head(&ctx->sh->channels_lru, &cc->lru);

    /* history ends where the first message still being stored is */

    if (after >= 0) {
        from = after + 1;
        to = ngx_min(after + (int64_t) limit, through);
        *more = (to < through);

    } else {
        to = (before > 0) ? ngx_min(before - 1, through) : through;
        from = ngx_max(to - (int64_t) limit + 1, 1);
        *more = (from > 1);
    }

    if (from <= to && !ngx_foko_chat_cache_has(cc, from, to)) {
        goto done;
    }

    list = json_array();

    for (seq = from; list && seq <= to; seq++) {
        slot = &cc->ring[seq % cc->ring_size];

        m = json_loadb((char *) slot->json, slot->len, 0, &error);

        if (m == NULL || json_array_append_new(list, m) != 0) {
            json_decref(list);
            list = NULL;
        }
    }

    rc = list ? NGX_OK : NGX_DECLINED;

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    *page = list;

    return rc;
}


/*
 * A channel as GET /api/channels lists it, from the zone: only when the
 * ring holds the highest acknowledged seq (MongoDB's newest message) and
 * every member's username is known.
 */

json_t *
ngx_foko_chat_cache_describe(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    int64_t *created)
{
    json_t                         *j, *members, *last, *name;
    int64_t                         acked;
    ngx_foko_chat_cache_channel_t  *cc;

    j = NULL;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    cc = ngx_foko_chat_cache_lookup(ctx->sh, channel);
    acked = ngx_foko_chat_seq_acked_locked(ctx->sh, channel);

    if (cc == NULL || cc->ring == NULL || acked < 0
        || (acked > 0 && cc->top < acked))
    {
        goto done;
    }

    members = ngx_foko_chat_cache_members_json(cc);
    if (members == NULL) {
        goto done;
    }

    last = ngx_foko_chat_cache_last_json(cc, acked);
    if (acked > 0 && last == NULL) {
        json_decref(members);
        goto done;
    }

    ngx_queue_remove(&cc->lru);
    ngx_queue_insert_head(&ctx->sh->channels_lru, &cc->lru);

    name = cc->name_len ? json_stringn((char *) cc->name, cc->name_len)
                        : json_null();

    j = json_pack("{s:s%,s:o,s:b,s:o,s:o?,s:I}",
                  "id", (char *) cc->id, (size_t) NGX_FOKO_CHAT_OID_LEN,
                  "name", name,
                  "direct", (int) cc->direct,
                  "members", members,
                  "last_message", last,
                  "last_seq", (json_int_t) acked);

    *created = cc->created;

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return j;
}


/* NULL also when a member's username is not known */

static json_t *
ngx_foko_chat_cache_members_json(ngx_foko_chat_cache_channel_t *cc)
{
    json_t                        *members, *member;
    ngx_uint_t                     i;
    ngx_foko_chat_cache_member_t  *m;

    members = json_array();

    for (i = 0; members && i < cc->nmembers; i++) {
        m = &cc->members[i];

        member = m->name_len
                 ? json_pack("{s:s%,s:s%,s:b}",
                             "id", (char *) m->id,
                             (size_t) NGX_FOKO_CHAT_OID_LEN,
                             "username", (char *) m->name,
                             (size_t) m->name_len,
                             "online", 0)
                 : NULL;

        if (member == NULL || json_array_append_new(members, member) != 0) {
            json_decref(members);
            members = NULL;
        }
    }

    return members;
}


static json_t *
ngx_foko_chat_cache_last_json(ngx_foko_chat_cache_channel_t *cc,
    int64_t acked)
{
    json_error_t                 error;
    ngx_foko_chat_cache_slot_t  *slot;

    if (acked == 0) {
        return NULL;
    }

    slot = &cc->ring[acked % cc->ring_size];

    if (slot->seq != acked || slot->json == NULL) {
        return NULL;
    }

    return json_loadb((char *) slot->json, slot->len, 0, &error);
}


json_t *
ngx_foko_chat_cache_find_client_id(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, u_char *author, u_char *client_id)
{
    json_t                         *m, *found;
    uint32_t                        cid;
    ngx_uint_t                      i;
    json_error_t                    error;
    const char                     *s, *a;
    ngx_foko_chat_cache_slot_t     *slot;
    ngx_foko_chat_cache_channel_t  *cc;

    found = NULL;
    cid = ngx_foko_chat_cache_cid((char *) author, (char *) client_id);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    cc = ngx_foko_chat_cache_lookup(ctx->sh, channel);

    for (i = 0; cc && cc->ring && found == NULL && i < cc->ring_size; i++) {
        slot = &cc->ring[i];

        if (slot->json == NULL || slot->cid != cid) {
            continue;
        }

        m = json_loadb((char *) slot->json, slot->len, 0, &error);

        s = json_string_value(json_object_get(m, "client_id"));
        a = json_string_value(json_object_get(json_object_get(m, "author"),
                                              "id"));

        if (s && a && ngx_strcmp(s, client_id) == 0
            && ngx_strcmp(a, author) == 0)
        {
            found = m;

        } else {
            json_decref(m);
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return found;
}


/* a message's author and client_id, hashed: most lookups stop at it */

static uint32_t
ngx_foko_chat_cache_cid(const char *author, const char *client_id)
{
    uint32_t  crc;

    ngx_crc32_init(crc);
    ngx_crc32_update(&crc, (u_char *) author, ngx_strlen(author));
    ngx_crc32_update(&crc, (u_char *) "/", 1);
    ngx_crc32_update(&crc, (u_char *) client_id, ngx_strlen(client_id));
    ngx_crc32_final(crc);

    return crc | 1;
}


/* with the zone locked */

static ngx_int_t
ngx_foko_chat_cache_put_locked(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_cache_channel_t *cc, json_t *message, char *dumped)
{
    char                        *text;
    size_t                       len;
    int64_t                      seq;
    const char                  *author, *client_id;
    ngx_foko_chat_cache_slot_t  *slot;

    seq = json_integer_value(json_object_get(message, "seq"));

    if (seq < 1) {
        return NGX_OK;
    }

    slot = &cc->ring[seq % cc->ring_size];

    if (slot->json && slot->seq > seq) {
        /* a newer message has the slot already */
        return NGX_OK;
    }

    text = dumped ? dumped : json_dumps(message, JSON_COMPACT);
    if (text == NULL) {
        return NGX_ERROR;
    }

    len = ngx_strlen(text);

    if (slot->json) {
        ngx_slab_free_locked(ctx->shpool, slot->json);
        slot->json = NULL;
    }

    slot->json = ngx_foko_chat_cache_alloc(ctx, len, cc);

    if (slot->json == NULL) {
        if (dumped == NULL) {
            free(text);
        }

        return NGX_ERROR;
    }

    ngx_memcpy(slot->json, text, len);

    if (dumped == NULL) {
        free(text);
    }

    client_id = json_string_value(json_object_get(message, "client_id"));
    author = json_string_value(json_object_get(
                                   json_object_get(message, "author"), "id"));

    slot->seq = seq;
    slot->len = len;
    slot->cid = (client_id && author)
                ? ngx_foko_chat_cache_cid(author, client_id) : 0;

    if (seq > cc->top) {
        cc->top = seq;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_foko_chat_cache_has(ngx_foko_chat_cache_channel_t *cc, int64_t from,
    int64_t to)
{
    int64_t                      seq;
    ngx_foko_chat_cache_slot_t  *slot;

    if (to - from + 1 > (int64_t) cc->ring_size) {
        return 0;
    }

    for (seq = from; seq <= to; seq++) {
        slot = &cc->ring[seq % cc->ring_size];

        if (slot->json == NULL || slot->seq != seq) {
            return 0;
        }
    }

    return 1;
}


/*
 * Allocates from the zone, evicting the least recently used channels but
 * "keep" when it runs short; logged once per zone.
 */

static void *
ngx_foko_chat_cache_alloc(ngx_foko_chat_shm_ctx_t *ctx, size_t size,
    ngx_foko_chat_cache_channel_t *keep)
{
    return ngx_foko_chat_shm_alloc_locked(ctx, size, keep);
}


/*
 * The zone is full: the coldest cached channel goes, unless it is "keep"
 * (the one being filled).  NGX_DECLINED: nothing more to evict.
 */

ngx_int_t
ngx_foko_chat_cache_evict_locked(ngx_foko_chat_shm_ctx_t *ctx, void *keep)
{
    ngx_queue_t                    *q;
    ngx_foko_chat_cache_channel_t  *cc;

    if (ngx_queue_empty(&ctx->sh->channels_lru)) {
        return NGX_DECLINED;
    }

    q = ngx_queue_last(&ctx->sh->channels_lru);
    cc = ngx_queue_data(q, ngx_foko_chat_cache_channel_t, lru);

    if (cc == keep) {
        return NGX_DECLINED;
    }

    ngx_foko_chat_stat_inc(evictions);
    ngx_foko_chat_cache_free(ctx, cc);

    return NGX_OK;
}


static void
ngx_foko_chat_cache_free(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_cache_channel_t *cc)
{
    ngx_uint_t  i;

    for (i = 0; cc->ring && i < cc->ring_size; i++) {
        if (cc->ring[i].json) {
            ngx_slab_free_locked(ctx->shpool, cc->ring[i].json);
        }
    }

    if (cc->ring) {
        ngx_slab_free_locked(ctx->shpool, cc->ring);
    }

    if (cc->members) {
        ngx_slab_free_locked(ctx->shpool, cc->members);
    }

    ngx_queue_remove(&cc->lru);
    ngx_rbtree_delete(&ctx->sh->channels, ngx_foko_chat_cache_node(cc));
    ngx_slab_free_locked(ctx->shpool, ngx_foko_chat_cache_node(cc));
    ngx_foko_chat_stat_add(cached_channels, -1);
}
