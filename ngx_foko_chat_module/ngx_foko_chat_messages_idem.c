
/*
 * Foko chat: the posts of one client_id (a double submit, a retry while
 * the first attempt is still being written), on any worker.
 *
 * The unique index of MongoDB is {author_id, client_id}.  The post that
 * takes a seq for a client_id first leaves a marker in the shared zone,
 * keyed by author and client_id, with the channel and the worker's pid.
 * A repeat that finds the marker pending waits for it (polling the zone,
 * with a deadline) instead of taking a seq of its own, which would end as
 * a tombstone; once the writer has stored the message, the marker holds
 * its JSON for a few seconds if a repeat waited, and every repeat is
 * answered with it; if none waited, the marker goes at once (a later
 * repeat finds the message in the ring, or MongoDB), so that the zone
 * holds a marker per post still being written, not per post.  A marker
 * whose post was not made is dropped: the next repeat makes it.  A marker
 * of a worker that died pending is dropped too.
 */


#include "ngx_foko_chat_messages_int.h"
#include "ngx_foko_chat_messages_idem.h"


#define NGX_FOKO_CHAT_IDEM_POLL      10     /* ms between a waiter's looks */
#define NGX_FOKO_CHAT_IDEM_SWEEP     8      /* markers looked at per claim */

#define NGX_FOKO_CHAT_IDEM_PENDING   0
#define NGX_FOKO_CHAT_IDEM_STORED    1


typedef struct {
    u_char                         color;
    u_char                         state;
    u_char                         wanted;       /* a repeat waited */
    u_char                         author[NGX_FOKO_CHAT_OID_LEN];
    u_char                         client_id[NGX_FOKO_CHAT_CLIENT_ID_MAX];
    u_char                         channel[NGX_FOKO_CHAT_OID_LEN];
    ngx_queue_t                    queue;        /* oldest first */
    ngx_pid_t                      pid;
    time_t                         stamp;
    u_char                        *json;         /* STORED */
    size_t                         len;
} ngx_foko_chat_idem_node_t;


/* a repeat on this worker that waits for the marker of its client_id */

typedef struct {
    ngx_event_t                    ev;
    ngx_msec_t                     deadline;
    ngx_foko_chat_msg_op_t         op;
} ngx_foko_chat_idem_waiter_t;


static ngx_foko_chat_idem_node_t *ngx_foko_chat_idem_find(
    ngx_foko_chat_sh_t *sh, uint32_t hash, u_char *key);
static void ngx_foko_chat_idem_key(u_char *key, const char *author,
    const char *client_id, uint32_t *hash);
static void ngx_foko_chat_idem_sweep_locked(ngx_foko_chat_shm_ctx_t *ctx);
static ngx_uint_t ngx_foko_chat_idem_stale(ngx_foko_chat_idem_node_t *in);
static void ngx_foko_chat_idem_free_locked(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_idem_node_t *in);
static void ngx_foko_chat_idem_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_foko_chat_idem_poll(ngx_event_t *ev);
static void ngx_foko_chat_idem_unwait(ngx_foko_chat_idem_waiter_t *w,
    ngx_foko_chat_err_e e);


#define NGX_FOKO_CHAT_IDEM_KEY                                               \
    (NGX_FOKO_CHAT_OID_LEN + NGX_FOKO_CHAT_CLIENT_ID_MAX)

#define ngx_foko_chat_idem_of(node)                                          \
    ((ngx_foko_chat_idem_node_t *) &(node)->color)

#define ngx_foko_chat_idem_node(in)                                          \
    ((ngx_rbtree_node_t *) ((u_char *) (in)                                  \
                            - offsetof(ngx_rbtree_node_t, color)))


/* a debug log reads an event's data as a connection: give it one */
static ngx_connection_t  ngx_foko_chat_idem_conn;


void
ngx_foko_chat_idem_init(ngx_foko_chat_sh_t *sh)
{
    ngx_rbtree_init(&sh->posts, &sh->posts_sentinel,
                    ngx_foko_chat_idem_insert_value);
    ngx_queue_init(&sh->posts_age);
}


ngx_int_t
ngx_foko_chat_idem_claim(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    u_char *author, u_char *client_id, json_t **message)
{
    u_char                      key[NGX_FOKO_CHAT_IDEM_KEY];
    u_char                     *json;
    size_t                      len;
    uint32_t                    hash;
    json_error_t                error;
    ngx_rbtree_node_t          *node;
    ngx_foko_chat_idem_node_t  *in;

    ngx_foko_chat_idem_key(key, (char *) author, (char *) client_id, &hash);

    json = NULL;
    len = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ngx_foko_chat_idem_sweep_locked(ctx);

    in = ngx_foko_chat_idem_find(ctx->sh, hash, key);

    if (in && in->state == NGX_FOKO_CHAT_IDEM_PENDING
        && ngx_foko_chat_idem_stale(in))
    {
        /* its worker died with the post: nobody will settle it */
        ngx_foko_chat_idem_free_locked(ctx, in);
        in = NULL;
    }

    if (in) {
        if (ngx_memcmp(in->channel, channel, NGX_FOKO_CHAT_OID_LEN) != 0) {
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            return NGX_DECLINED;
        }

        if (in->state == NGX_FOKO_CHAT_IDEM_PENDING) {
            in->wanted = 1;
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            return NGX_BUSY;
        }

        /* parsed outside the lock */
        json = ngx_alloc(in->len, ngx_cycle->log);
        if (json) {
            len = in->len;
            ngx_memcpy(json, in->json, len);
        }

        ngx_shmtx_unlock(&ctx->shpool->mutex);

        if (json == NULL) {
            return NGX_BUSY;
        }

        *message = json_loadb((char *) json, len, 0, &error);
        ngx_free(json);

        return (*message == NULL) ? NGX_BUSY : NGX_OK;
    }

    node = ngx_slab_alloc_locked(ctx->shpool,
                                 offsetof(ngx_rbtree_node_t, color)
                                 + sizeof(ngx_foko_chat_idem_node_t));

    if (node) {
        node->key = hash;
        in = ngx_foko_chat_idem_of(node);
        in->state = NGX_FOKO_CHAT_IDEM_PENDING;
        in->wanted = 0;
        ngx_memcpy(in->author, key, NGX_FOKO_CHAT_IDEM_KEY);
        ngx_memcpy(in->channel, channel, NGX_FOKO_CHAT_OID_LEN);
        in->pid = ngx_pid;
        in->stamp = ngx_time();
        in->json = NULL;
        in->len = 0;

        ngx_rbtree_insert(&ctx->sh->posts, node);
        ngx_queue_insert_tail(&ctx->sh->posts_age, &in->queue);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (node == NULL) {
        /* the zone is full: the post goes on unmarked, as it may */
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "foko chat: no room in the zone to mark the post of "
                      "client_id \"%s\"", client_id);
    }

    return NGX_DONE;
}


ngx_uint_t
ngx_foko_chat_idem_known(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    u_char *author, u_char *client_id)
{
    u_char                      key[NGX_FOKO_CHAT_IDEM_KEY];
    uint32_t                    hash;
    ngx_uint_t                  known;
    ngx_foko_chat_idem_node_t  *in;

    ngx_foko_chat_idem_key(key, (char *) author, (char *) client_id, &hash);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    in = ngx_foko_chat_idem_find(ctx->sh, hash, key);

    known = in
            && ngx_memcmp(in->channel, channel, NGX_FOKO_CHAT_OID_LEN) == 0;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return known;
}


void
ngx_foko_chat_idem_settle(ngx_foko_chat_shm_ctx_t *ctx, const char *channel,
    const char *author, const char *client_id, const char *text)
{
    u_char                      key[NGX_FOKO_CHAT_IDEM_KEY];
    size_t                      len;
    uint32_t                    hash;
    ngx_foko_chat_idem_node_t  *in;

    if (channel == NULL || author == NULL || client_id == NULL
        || ngx_strlen(channel) != NGX_FOKO_CHAT_OID_LEN
        || ngx_strlen(author) != NGX_FOKO_CHAT_OID_LEN
        || ngx_strlen(client_id) > NGX_FOKO_CHAT_CLIENT_ID_MAX)
    {
        return;
    }

    ngx_foko_chat_idem_key(key, author, client_id, &hash);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    in = ngx_foko_chat_idem_find(ctx->sh, hash, key);

    if (in == NULL || in->state != NGX_FOKO_CHAT_IDEM_PENDING
        || in->pid != ngx_pid
        || ngx_memcmp(in->channel, channel, NGX_FOKO_CHAT_OID_LEN) != 0)
    {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return;
    }

    /* nobody waited: later repeats find the ring or MongoDB */

    len = (text && in->wanted) ? ngx_strlen(text) : 0;

    in->json = len ? ngx_slab_alloc_locked(ctx->shpool, len) : NULL;

    if (in->json == NULL) {
        ngx_foko_chat_idem_free_locked(ctx, in);
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return;
    }

    ngx_memcpy(in->json, text, len);
    in->len = len;
    in->state = NGX_FOKO_CHAT_IDEM_STORED;
    in->stamp = ngx_time();

    ngx_queue_remove(&in->queue);
    ngx_queue_insert_tail(&ctx->sh->posts_age, &in->queue);

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/*
 * A repeat whose client_id is pending: the post waits on this worker, its
 * op copied into a waiter that owns the target and the text from now on.
 * NGX_DONE: waiting; NGX_BUSY: the op is a waiter's already (it looks
 * again later); NGX_OK: answered (no memory).
 */

ngx_int_t
ngx_foko_chat_messages_idem_wait(ngx_foko_chat_msg_op_t *op)
{
    ngx_foko_chat_answer_t        a;
    ngx_foko_chat_idem_waiter_t  *w;

    if (op->idem_waiting) {
        return NGX_BUSY;
    }

    w = ngx_calloc(sizeof(ngx_foko_chat_idem_waiter_t), ngx_cycle->log);
    if (w == NULL) {
        ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));
        a.error = NGX_FOKO_CHAT_E_NO_MEMORY;
        ngx_foko_chat_messages_reply(op, &a);
        return NGX_OK;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_foko_chat_op_log(op), 0,
                   "foko chat: client_id \"%s\" is pending: the repeat "
                   "waits for it", op->client_id);

    ngx_memcpy(w->op.user, op->user, sizeof(op->user));
    ngx_memcpy(w->op.username, op->username, sizeof(op->username));
    ngx_memcpy(w->op.client_id, op->client_id, sizeof(op->client_id));
    ngx_memcpy(w->op.ch.id, op->ch.id, NGX_FOKO_CHAT_OID_LEN);
    w->op.found = NGX_OK;
    w->op.idem_waiting = 1;

    w->op.text = op->text;
    op->text = NULL;
    w->op.target = op->target;
    op->target = NULL;

    ngx_foko_chat_idem_conn.fd = (ngx_socket_t) -1;

    w->ev.data = &ngx_foko_chat_idem_conn;
    w->ev.handler = ngx_foko_chat_idem_poll;
    w->ev.log = ngx_cycle->log;
    w->deadline = ngx_current_msec + NGX_FOKO_CHAT_IDEM_WAIT;

    ngx_foko_chat_writer_preparing(1);

    ngx_add_timer(&w->ev, NGX_FOKO_CHAT_IDEM_POLL);

    return NGX_DONE;
}


static void
ngx_foko_chat_idem_poll(ngx_event_t *ev)
{
    ngx_int_t                     rc;
    ngx_foko_chat_shm_ctx_t      *shm;
    ngx_foko_chat_idem_waiter_t  *w;

    w = (ngx_foko_chat_idem_waiter_t *)
            ((u_char *) ev - offsetof(ngx_foko_chat_idem_waiter_t, ev));

    if (w->op.target->handler == NULL) {
        /* the caller went away: the post it repeats goes on */
        ngx_foko_chat_idem_unwait(w, NGX_FOKO_CHAT_E_STORAGE);
        return;
    }

    shm = ngx_foko_chat_messages_conf()->shm_zone->data;

    rc = ngx_foko_chat_messages_enqueue(shm, &w->op);

    if (rc != NGX_BUSY) {
        /* answered, or queued: the writer owns the target */
        ngx_foko_chat_idem_unwait(w, NGX_FOKO_CHAT_E_NONE);
        return;
    }

    if ((ngx_msec_int_t) (w->deadline - ngx_current_msec) <= 0) {
        ngx_log_error(NGX_LOG_INFO, w->op.target->log, 0,
                      "foko chat: client_id \"%s\" still pending after "
                      "%M ms", w->op.client_id,
                      (ngx_msec_t) NGX_FOKO_CHAT_IDEM_WAIT);
        ngx_foko_chat_idem_unwait(w, NGX_FOKO_CHAT_E_STORAGE);
        return;
    }

    ngx_add_timer(&w->ev, NGX_FOKO_CHAT_IDEM_POLL);
}


/* the waiter ends; with a target still, answered with the error "e" */

static void
ngx_foko_chat_idem_unwait(ngx_foko_chat_idem_waiter_t *w,
    ngx_foko_chat_err_e e)
{
    ngx_foko_chat_answer_t  a;

    ngx_foko_chat_writer_preparing(-1);

    if (w->op.target) {
        ngx_memzero(&a, sizeof(ngx_foko_chat_answer_t));
        a.error = (e == NGX_FOKO_CHAT_E_NONE) ? NGX_FOKO_CHAT_E_STORAGE : e;
        ngx_foko_chat_messages_reply(&w->op, &a);
    }

    ngx_foko_chat_messages_release(&w->op);
    ngx_free(w);
}


static void
ngx_foko_chat_idem_key(u_char *key, const char *author,
    const char *client_id, uint32_t *hash)
{
    size_t  len;

    len = ngx_min(ngx_strlen(client_id), NGX_FOKO_CHAT_CLIENT_ID_MAX);

    ngx_memzero(key, NGX_FOKO_CHAT_IDEM_KEY);
    ngx_memcpy(key, author, NGX_FOKO_CHAT_OID_LEN);
    ngx_memcpy(key + NGX_FOKO_CHAT_OID_LEN, client_id, len);

    *hash = ngx_crc32_short(key, NGX_FOKO_CHAT_IDEM_KEY);
}


/* with the zone locked */

static ngx_foko_chat_idem_node_t *
ngx_foko_chat_idem_find(ngx_foko_chat_sh_t *sh, uint32_t hash, u_char *key)
{
    ngx_int_t                   rc;
    ngx_rbtree_node_t          *node, *sentinel;
    ngx_foko_chat_idem_node_t  *in;

    node = sh->posts.root;
    sentinel = sh->posts.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        in = ngx_foko_chat_idem_of(node);

        rc = ngx_memcmp(key, in->author, NGX_FOKO_CHAT_IDEM_KEY);

        if (rc == 0) {
            return in;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_foko_chat_idem_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t         **p;
    ngx_foko_chat_idem_node_t  *in, *it;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            in = ngx_foko_chat_idem_of(node);
            it = ngx_foko_chat_idem_of(temp);

            p = (ngx_memcmp(in->author, it->author, NGX_FOKO_CHAT_IDEM_KEY)
                 < 0) ? &temp->left : &temp->right;
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


/* with the zone locked: the oldest markers go when they are stale */

static void
ngx_foko_chat_idem_sweep_locked(ngx_foko_chat_shm_ctx_t *ctx)
{
    ngx_uint_t                  n;
    ngx_queue_t                *q, *next;
    ngx_foko_chat_idem_node_t  *in;

    q = ngx_queue_head(&ctx->sh->posts_age);

    for (n = 0;
         n < NGX_FOKO_CHAT_IDEM_SWEEP
         && q != ngx_queue_sentinel(&ctx->sh->posts_age);
         n++, q = next)
    {
        next = ngx_queue_next(q);
        in = ngx_queue_data(q, ngx_foko_chat_idem_node_t, queue);

        if (ngx_foko_chat_idem_stale(in)) {
            ngx_foko_chat_idem_free_locked(ctx, in);
        }
    }
}


/*
 * A stored marker past its linger time, or a pending one of a worker that
 * is gone (looked at once the marker is a second old).
 */

static ngx_uint_t
ngx_foko_chat_idem_stale(ngx_foko_chat_idem_node_t *in)
{
    time_t  now;

    now = ngx_time();

    if (in->state == NGX_FOKO_CHAT_IDEM_STORED) {
        return now - in->stamp >= NGX_FOKO_CHAT_IDEM_LINGER;
    }

    if (in->pid == ngx_pid || now - in->stamp < 1) {
        return 0;
    }

    return kill(in->pid, 0) == -1 && ngx_errno == NGX_ESRCH;
}


static void
ngx_foko_chat_idem_free_locked(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_idem_node_t *in)
{
    ngx_queue_remove(&in->queue);
    ngx_rbtree_delete(&ctx->sh->posts, ngx_foko_chat_idem_node(in));

    if (in->json) {
        ngx_slab_free_locked(ctx->shpool, in->json);
    }

    ngx_slab_free_locked(ctx->shpool, ngx_foko_chat_idem_node(in));
}
