
/*
 * Foko chat: each user's channel ids and account in the shared zone.
 *
 * A user is kept when a sign-in first reads the channels from MongoDB;
 * later sign-ins on any worker take them from here.  A membership change
 * forgets every user it may touch (those who had the channel and those
 * named by the change), who are loaded again when next needed; a load
 * that began before a change is not kept (the generation counter).  At
 * most NGX_FOKO_CHAT_USERS_MAX users are kept, the least recently used
 * go first, also when the zone is full.
 *
 * With the ids the zone keeps what a sign-in and GET /api/me need of the
 * account: the username, the email and the password version that tokens
 * carry.  A reset or an accepted invitation forgets the user, so that a
 * token of the old version is refused at once.
 *
 * For GET /api/channels it keeps the user's read mark of each channel:
 * unknown until a list read them from MongoDB, then raised by every mark
 * stored (as MongoDB's $max does); a list read before a mark changed is
 * not kept.
 */


#include "ngx_foko_chat_users.h"


typedef struct {
    u_char                     color;
    u_char                     id[NGX_FOKO_CHAT_OID_LEN];
    ngx_queue_t                lru;
    int64_t                    ver;          /* password version */
    u_short                    name_len;
    u_short                    email_len;
    unsigned                   reads_known:1;
    ngx_uint_t                 nchannels;
    u_char                     channels[1][NGX_FOKO_CHAT_OID_LEN];
    /* then the read marks, the username and the email */
} ngx_foko_chat_users_user_t;


/* the account as it is kept */
typedef struct {
    int64_t                    ver;
    ngx_str_t                  name;
    ngx_str_t                  email;
} ngx_foko_chat_users_account_t;


static ngx_int_t ngx_foko_chat_users_keep_locked(
    ngx_foko_chat_shm_ctx_t *ctx, u_char *user, u_char *ids, size_t stride,
    ngx_uint_t n, u_char *extra, ngx_foko_chat_users_account_t *a,
    int64_t *reads);
static ngx_int_t ngx_foko_chat_users_find(ngx_foko_chat_users_user_t *u,
    u_char *channel);
static void ngx_foko_chat_users_account_of(ngx_foko_chat_users_user_t *u,
    ngx_foko_chat_users_account_t *a);
static void ngx_foko_chat_users_copy(ngx_foko_chat_users_user_t *u,
    ngx_foko_chat_user_t *account);
static void ngx_foko_chat_users_free(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_users_user_t *u);
static ngx_uint_t ngx_foko_chat_users_has(ngx_foko_chat_users_user_t *u,
    u_char *channel);


#define ngx_foko_chat_users_lookup(sh, user)                                  \
    ((ngx_foko_chat_users_user_t *)                                           \
     ngx_foko_chat_shm_id_lookup(&(sh)->users, user))

#define ngx_foko_chat_users_node(u)                                           \
    ((ngx_rbtree_node_t *) ((u_char *) (u)                                    \
                            - offsetof(ngx_rbtree_node_t, color)))

/* the user's read mark of each channel: the last seq read, 0 if none */
#define ngx_foko_chat_users_reads(u)                                          \
    ((int64_t *) (u)->channels[ngx_max((u)->nchannels, 1)])

#define ngx_foko_chat_users_strings(u)                                        \
    ((u_char *) (ngx_foko_chat_users_reads(u) + ngx_max((u)->nchannels, 1)))


void
ngx_foko_chat_users_init(ngx_foko_chat_sh_t *sh)
{
    ngx_rbtree_init(&sh->users, &sh->users_sentinel,
                    ngx_foko_chat_shm_id_insert_value);
    ngx_queue_init(&sh->users_lru);
}


ngx_atomic_uint_t
ngx_foko_chat_users_gen(ngx_foko_chat_shm_ctx_t *ctx)
{
    return ctx->sh->users_gen;
}


ngx_int_t
ngx_foko_chat_users_get(ngx_foko_chat_shm_ctx_t *ctx, u_char *user,
    ngx_foko_chat_channel_doc_t **found, ngx_uint_t *n,
    ngx_foko_chat_user_t *account)
{
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    ngx_foko_chat_users_user_t  *u;

    if (found) {
        *found = NULL;
        *n = 0;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    u = ngx_foko_chat_users_lookup(ctx->sh, user);

    if (u == NULL) {
        rc = NGX_DECLINED;
        goto done;
    }

    ngx_queue_remove(&u->lru);
    ngx_queue_insert_head(&ctx->sh->users_lru, &u->lru);

    rc = NGX_OK;

    if (account) {
        ngx_foko_chat_users_copy(u, account);
    }

    if (found == NULL || u->nchannels == 0) {
        goto done;
    }

    *found = calloc(u->nchannels, sizeof(ngx_foko_chat_channel_doc_t));
    if (*found == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    for (i = 0; i < u->nchannels; i++) {
        ngx_memcpy((*found)[i].id, u->channels[i], NGX_FOKO_CHAT_OID_LEN);
    }

    *n = u->nchannels;

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


ngx_int_t
ngx_foko_chat_users_put(ngx_foko_chat_shm_ctx_t *ctx, u_char *user,
    ngx_foko_chat_channel_doc_t *found, ngx_uint_t n,
    ngx_foko_chat_user_t *account, ngx_atomic_uint_t gen)
{
    u_char                         *ids;
    ngx_int_t                       rc;
    ngx_foko_chat_users_account_t   a;

    a.ver = account->ver;
    a.name.data = account->username;
    a.name.len = ngx_strlen(account->username);
    a.email.data = account->email;
    a.email.len = ngx_strlen(account->email);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (ctx->sh->users_gen != gen) {
        /* a membership changed while MongoDB was read */
        rc = NGX_DECLINED;

    } else {
        ids = found ? found[0].id : NULL;
        rc = ngx_foko_chat_users_keep_locked(ctx, user, ids, sizeof(*found),
                                             ids ? n : 0, NULL, &a, NULL);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


void
ngx_foko_chat_users_add(ngx_foko_chat_shm_ctx_t *ctx, u_char *user,
    u_char *channel)
{
    ngx_foko_chat_users_user_t     *u;
    ngx_foko_chat_users_account_t   a;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ctx->sh->users_gen++;

    u = ngx_foko_chat_users_lookup(ctx->sh, user);

    if (u) {
        ngx_foko_chat_users_account_of(u, &a);
    }

    if (u && !ngx_foko_chat_users_has(u, channel)
        && ngx_foko_chat_users_keep_locked(ctx, user, u->channels[0],
                                           NGX_FOKO_CHAT_OID_LEN,
                                           u->nchannels, channel, &a,
                                           u->reads_known
                                           ? ngx_foko_chat_users_reads(u)
                                           : NULL)
           != NGX_OK)
    {
        /* no room: loaded again when next needed */
        u = ngx_foko_chat_users_lookup(ctx->sh, user);
        if (u) {
            ngx_foko_chat_users_free(ctx, u);
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


ngx_int_t
ngx_foko_chat_users_reads_get(ngx_foko_chat_shm_ctx_t *ctx, u_char *user,
    u_char (**ids)[NGX_FOKO_CHAT_OID_LEN], int64_t **reads, ngx_uint_t *n)
{
    size_t                       size;
    ngx_int_t                    rc;
    ngx_foko_chat_users_user_t  *u;

    *ids = NULL;
    *reads = NULL;
    *n = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    u = ngx_foko_chat_users_lookup(ctx->sh, user);

    if (u == NULL || !u->reads_known) {
        rc = NGX_DECLINED;
        goto done;
    }

    rc = NGX_OK;

    if (u->nchannels == 0) {
        goto done;
    }

    size = u->nchannels * (NGX_FOKO_CHAT_OID_LEN + sizeof(int64_t));

    *reads = malloc(size);
    if (*reads == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    *ids = (void *) (*reads + u->nchannels);
    ngx_memcpy(*reads, ngx_foko_chat_users_reads(u),
               u->nchannels * sizeof(int64_t));
    ngx_memcpy(*ids, u->channels, u->nchannels * NGX_FOKO_CHAT_OID_LEN);
    *n = u->nchannels;

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


ngx_atomic_uint_t
ngx_foko_chat_users_reads_gen(ngx_foko_chat_shm_ctx_t *ctx)
{
    return ctx->sh->users_gen + ctx->sh->reads_gen;
}


/*
 * The read marks MongoDB has ({ "<channel id>": seq }) into a known user
 * whose channels are those of "found", unless a user or a mark changed
 * since "gen".
 */

void
ngx_foko_chat_users_reads_put(ngx_foko_chat_shm_ctx_t *ctx, u_char *user,
    ngx_foko_chat_channel_doc_t *found, ngx_uint_t n, json_t *reads,
    ngx_atomic_uint_t gen)
{
    u_char                       id[NGX_FOKO_CHAT_OID_SIZE];
    int64_t                     *marks;
    ngx_uint_t                   i;
    ngx_foko_chat_users_user_t  *u;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    u = ngx_foko_chat_users_lookup(ctx->sh, user);

    if (u == NULL || u->nchannels != n
        || ctx->sh->users_gen + ctx->sh->reads_gen != gen)
    {
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (!ngx_foko_chat_users_has(u, found[i].id)) {
            goto done;
        }
    }

    marks = ngx_foko_chat_users_reads(u);
    id[NGX_FOKO_CHAT_OID_LEN] = '\0';

    for (i = 0; i < n; i++) {
        ngx_memcpy(id, u->channels[i], NGX_FOKO_CHAT_OID_LEN);
        marks[i] = json_integer_value(json_object_get(reads, (char *) id));
    }

    u->reads_known = 1;

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/* a mark read stored in MongoDB: marks only rise, as there ($max) */

void
ngx_foko_chat_users_read(ngx_foko_chat_shm_ctx_t *ctx, u_char *user,
    u_char *channel, int64_t seq)
{
    ngx_int_t                    i;
    ngx_foko_chat_users_user_t  *u;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ctx->sh->reads_gen++;

    u = ngx_foko_chat_users_lookup(ctx->sh, user);
    i = u ? ngx_foko_chat_users_find(u, channel) : -1;

    if (i >= 0 && u->reads_known) {
        ngx_foko_chat_users_reads(u)[i] =
                               ngx_max(ngx_foko_chat_users_reads(u)[i], seq);

    } else if (u) {
        /* a channel the zone does not list: loaded again when needed */
        u->reads_known = 0;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


void
ngx_foko_chat_users_forget(ngx_foko_chat_shm_ctx_t *ctx, u_char *user)
{
    ngx_foko_chat_users_user_t  *u;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ctx->sh->users_gen++;

    u = ngx_foko_chat_users_lookup(ctx->sh, user);
    if (u) {
        ngx_foko_chat_users_free(ctx, u);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


void
ngx_foko_chat_users_forget_all(ngx_foko_chat_shm_ctx_t *ctx)
{
    ngx_queue_t  *q;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ctx->sh->users_gen++;

    while (!ngx_queue_empty(&ctx->sh->users_lru)) {
        q = ngx_queue_head(&ctx->sh->users_lru);
        ngx_foko_chat_users_free(ctx,
                           ngx_queue_data(q, ngx_foko_chat_users_user_t, lru));
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


ngx_int_t
ngx_foko_chat_users_evict_locked(ngx_foko_chat_shm_ctx_t *ctx, void *keep)
{
    ngx_queue_t                 *q;
    ngx_foko_chat_users_user_t  *u;

    if (ngx_queue_empty(&ctx->sh->users_lru)) {
        return NGX_DECLINED;
    }

    q = ngx_queue_last(&ctx->sh->users_lru);
    u = ngx_queue_data(q, ngx_foko_chat_users_user_t, lru);

    if (u == keep) {
        return NGX_DECLINED;
    }

    ngx_foko_chat_users_free(ctx, u);

    return NGX_OK;
}


/*
 * With the zone locked: "user" with "n" ids ("stride" bytes apart),
 * "extra" if not NULL, account "a" and the read marks of the "n" ids if
 * "reads" is not NULL ("extra" is a new channel: none), in place of what
 * was kept of the user ("a" and "reads" may point into that).
 */

static ngx_int_t
ngx_foko_chat_users_keep_locked(ngx_foko_chat_shm_ctx_t *ctx, u_char *user,
    u_char *ids, size_t stride, ngx_uint_t n, u_char *extra,
    ngx_foko_chat_users_account_t *a, int64_t *reads)
{
    u_char                      *p;
    size_t                       size;
    ngx_uint_t                   i, total;
    ngx_rbtree_node_t           *node;
    ngx_foko_chat_users_user_t  *u, *old;

    old = ngx_foko_chat_users_lookup(ctx->sh, user);

    if (old == NULL && ctx->sh->nusers >= NGX_FOKO_CHAT_USERS_MAX) {
        (void) ngx_foko_chat_users_evict_locked(ctx, NULL);
    }

    total = n + (extra ? 1 : 0);

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_foko_chat_users_user_t, channels)
           + ngx_max(total, 1) * (NGX_FOKO_CHAT_OID_LEN + sizeof(int64_t))
           + a->name.len + a->email.len;

    node = ngx_foko_chat_shm_alloc_locked(ctx, size, old);
    if (node == NULL) {
        return NGX_ERROR;
    }

    node->key = ngx_crc32_short(user, NGX_FOKO_CHAT_OID_LEN);

    u = (ngx_foko_chat_users_user_t *) &node->color;
    ngx_memcpy(u->id, user, NGX_FOKO_CHAT_OID_LEN);
    u->nchannels = total;

    for (i = 0; i < n; i++) {
        ngx_memcpy(u->channels[i], ids + i * stride, NGX_FOKO_CHAT_OID_LEN);
    }

    if (extra) {
        ngx_memcpy(u->channels[n], extra, NGX_FOKO_CHAT_OID_LEN);
    }

    u->reads_known = (reads != NULL);

    if (reads) {
        ngx_memcpy(ngx_foko_chat_users_reads(u), reads,
                   n * sizeof(int64_t));
    }

    if (reads && extra) {
        ngx_foko_chat_users_reads(u)[n] = 0;
    }

    u->ver = a->ver;
    u->name_len = (u_short) a->name.len;
    u->email_len = (u_short) a->email.len;
    p = ngx_cpymem(ngx_foko_chat_users_strings(u), a->name.data, a->name.len);
    ngx_memcpy(p, a->email.data, a->email.len);

    /* the zone may have evicted the old one to make room */

    old = ngx_foko_chat_users_lookup(ctx->sh, user);
    if (old) {
        ngx_foko_chat_users_free(ctx, old);
    }

    ngx_rbtree_insert(&ctx->sh->users, node);
    ngx_queue_insert_head(&ctx->sh->users_lru, &u->lru);
    ctx->sh->nusers++;
    ngx_foko_chat_stat_inc(cached_users);

    return NGX_OK;
}


static void
ngx_foko_chat_users_free(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_users_user_t *u)
{
    ngx_queue_remove(&u->lru);
    ngx_rbtree_delete(&ctx->sh->users, ngx_foko_chat_users_node(u));
    ngx_slab_free_locked(ctx->shpool, ngx_foko_chat_users_node(u));

    ctx->sh->nusers--;
    ngx_foko_chat_stat_add(cached_users, -1);
}


static ngx_uint_t
ngx_foko_chat_users_has(ngx_foko_chat_users_user_t *u, u_char *channel)
{
    return ngx_foko_chat_users_find(u, channel) >= 0;
}


static ngx_int_t
ngx_foko_chat_users_find(ngx_foko_chat_users_user_t *u, u_char *channel)
{
    ngx_uint_t  i;

    for (i = 0; i < u->nchannels; i++) {
        if (ngx_memcmp(u->channels[i], channel, NGX_FOKO_CHAT_OID_LEN) == 0) {
            return (ngx_int_t) i;
        }
    }

    return -1;
}


ngx_str_t
ngx_foko_chat_users_name_locked(ngx_foko_chat_sh_t *sh, u_char *user)
{
    ngx_str_t                    name;
    ngx_foko_chat_users_user_t  *u;

    ngx_str_null(&name);

    u = ngx_foko_chat_users_lookup(sh, user);

    if (u) {
        name.data = ngx_foko_chat_users_strings(u);
        name.len = u->name_len;
    }

    return name;
}


static void
ngx_foko_chat_users_account_of(ngx_foko_chat_users_user_t *u,
    ngx_foko_chat_users_account_t *a)
{
    a->ver = u->ver;
    a->name.data = ngx_foko_chat_users_strings(u);
    a->name.len = u->name_len;
    a->email.data = a->name.data + u->name_len;
    a->email.len = u->email_len;
}


static void
ngx_foko_chat_users_copy(ngx_foko_chat_users_user_t *u,
    ngx_foko_chat_user_t *account)
{
    ngx_foko_chat_users_account_t  a;

    ngx_foko_chat_users_account_of(u, &a);

    ngx_memcpy(account->id, u->id, NGX_FOKO_CHAT_OID_LEN);
    account->id[NGX_FOKO_CHAT_OID_LEN] = '\0';
    *ngx_cpymem(account->username, a.name.data, a.name.len) = '\0';
    *ngx_cpymem(account->email, a.email.data, a.email.len) = '\0';
    account->ver = a.ver;
    account->invited = 0;
}
