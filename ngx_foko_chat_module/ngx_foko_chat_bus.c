
/*
 * Foko chat: inter-worker notification.
 *
 * Every event that clients of other workers must see (a stored message, a
 * membership change, typing, presence) is appended to a log in the shared
 * zone: a ring of bytes where each event is one record, written under the
 * zone mutex, together with the change it announces.  Each worker reads
 * the log from the position it stopped at, so every worker sees every
 * event once and in the same order.
 *
 * Workers are woken, not polled.  Before forking, the master binds one
 * datagram socket per worker slot to an abstract Unix address named after
 * the master's pid, a per-cycle stamp and the slot, and writes the stamp
 * and the number of slots into the zone.  The worker of a slot reads its
 * socket; any process sends to every slot of the current cycle by name.
 * A respawned worker inherits its slot's socket from the master, and
 * after a reload the workers of the old cycle still reach the new ones by
 * name: the zone holds the names, not file descriptors.  One flag per slot
 * in the zone coalesces wakes: a datagram is sent only when the slot has
 * none pending.
 *
 * A worker that falls so far behind that the ring overwrote events it had
 * not read is told so (the "lost" handler): its clients have to resume.
 *
 * A reload that changes the zone's size gives the new cycle a new zone,
 * which the old workers never see, while they still store the posts they
 * hold.  The master writes the names of the new cycle's sockets into the
 * old zone; an old worker that stores a message forwards it in one
 * datagram to the new cycle's first slot, whose worker applies it to the
 * new zone as if it were stored there (ngx_foko_chat_event_forwarded()):
 * marked stored, into the ring and the new zone's event log.
 */


#include "ngx_foko_chat_bus.h"
#include "ngx_foko_chat_event.h"

#include <sys/un.h>


#define NGX_FOKO_CHAT_BUS_MIN        (64 * 1024)
#define NGX_FOKO_CHAT_BUS_ALIGN      8


typedef struct {
    uint32_t                   len;        /* the record, aligned; 0: pad */
    uint32_t                   kind;
    int64_t                    seq;
    int64_t                    through;
    u_char                     channel[NGX_FOKO_CHAT_OID_LEN];
    u_char                     user[NGX_FOKO_CHAT_OID_LEN];
    uint32_t                   nids;
    uint32_t                   json_len;
    /* nids ids of 24 bytes, then the JSON */
} ngx_foko_chat_bus_rec_t;


typedef struct {
    ngx_socket_t              *fds;
    ngx_uint_t                 n;
} ngx_foko_chat_bus_socks_t;


/* a stored message forwarded to the workers of the zone that replaced ours */
#define NGX_FOKO_CHAT_BUS_FWD_MAGIC  0x666f6b31

typedef struct {
    uint32_t                   magic;
    uint32_t                   kind;       /* NGX_FOKO_CHAT_STORED_* */
    /* the message as serialized */
} ngx_foko_chat_bus_fwd_t;


static void ngx_foko_chat_bus_close_socks(void *data);
static void ngx_foko_chat_bus_name(struct sockaddr_un *sa, socklen_t *len,
    ngx_uint_t pid, uint64_t stamp, ngx_uint_t slot);
static void ngx_foko_chat_bus_read(ngx_event_t *ev);
static void ngx_foko_chat_bus_consume(ngx_event_t *ev);
static void ngx_foko_chat_bus_successor(ngx_cycle_t *cycle,
    ngx_foko_chat_shm_ctx_t *ctx, uint64_t stamp);


/* the sockets of the current cycle: in a worker, inherited */
static ngx_foko_chat_bus_socks_t    *ngx_foko_chat_bus_socks;

/* this worker */
static ngx_uint_t                    ngx_foko_chat_bus_slot;
static uint64_t                      ngx_foko_chat_bus_stamp;
static ngx_connection_t             *ngx_foko_chat_bus_conn;
static uint64_t                      ngx_foko_chat_bus_pos;
static u_char                       *ngx_foko_chat_bus_buf;
static size_t                        ngx_foko_chat_bus_buf_size;
static u_char                       *ngx_foko_chat_bus_dgram;
static ngx_event_t                   ngx_foko_chat_bus_local;
static ngx_foko_chat_bus_handler_pt  ngx_foko_chat_bus_handler;
static ngx_foko_chat_bus_lost_pt     ngx_foko_chat_bus_lost;
static ngx_foko_chat_bus_exit_pt     ngx_foko_chat_bus_exit;


/* the largest record of a message event, and the log that fits many */

size_t
ngx_foko_chat_bus_log_size(size_t shm_size, size_t max_message)
{
    size_t  size, record;

    /* text is JSON-escaped (tabs and line feeds double), plus its fields */
    record = sizeof(ngx_foko_chat_bus_rec_t) + 2 * max_message + 4096;

    size = ngx_max(shm_size / 16, NGX_FOKO_CHAT_BUS_MIN);
    size = ngx_max(size, 8 * record);
    size = ngx_align(size, NGX_FOKO_CHAT_BUS_ALIGN);

    return (size > shm_size / 2) ? 0 : size;
}


ngx_int_t
ngx_foko_chat_bus_init_zone(ngx_foko_chat_shm_ctx_t *ctx, size_t size)
{
    ngx_foko_chat_sh_t  *sh = ctx->sh;

    sh->log = ngx_slab_alloc_locked(ctx->shpool, size);
    if (sh->log == NULL) {
        return NGX_ERROR;
    }

    sh->log_size = size;
    sh->log_head = 0;
    sh->log_tail = 0;

    return NGX_OK;
}


/*
 * In the master, before the workers of a cycle are forked (and once in a
 * single-process nginx): one bound socket per worker slot.
 */

ngx_int_t
ngx_foko_chat_bus_init_module(ngx_cycle_t *cycle)
{
    uint64_t                    stamp;
    socklen_t                   len;
    ngx_uint_t                  i, n;
    ngx_core_conf_t            *ccf;
    ngx_pool_cleanup_t         *cln;
    struct sockaddr_un          sa;
    ngx_foko_chat_shm_ctx_t    *ctx;
    ngx_foko_chat_bus_socks_t  *socks;

    static ngx_uint_t           cycles;

    ctx = ngx_foko_chat_shm_cycle(cycle);
    if (ctx == NULL || ctx->sh == NULL) {
        return NGX_OK;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    n = (ccf->master && ccf->worker_processes > 0)
        ? (ngx_uint_t) ccf->worker_processes : 1;

    cln = ngx_pool_cleanup_add(cycle->pool, sizeof(ngx_foko_chat_bus_socks_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    socks = cln->data;
    socks->n = 0;
    socks->fds = ngx_palloc(cycle->pool, n * sizeof(ngx_socket_t));
    if (socks->fds == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_foko_chat_bus_close_socks;

    /* unique among this master's cycles, also across a zone's recreation */
    stamp = ((uint64_t) ngx_time() << 16) | (++cycles & 0xffff);

    for (i = 0; i < n; i++) {
        socks->fds[i] = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK
                                        | SOCK_CLOEXEC, 0);
        if (socks->fds[i] == (ngx_socket_t) -1) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_socket_errno,
                          "foko chat: socket(AF_UNIX) failed");
            return NGX_ERROR;
        }

        socks->n++;

        ngx_foko_chat_bus_name(&sa, &len, ngx_pid, stamp, i);

        if (bind(socks->fds[i], (struct sockaddr *) &sa, len) == -1) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_socket_errno,
                          "foko chat: bind() of a notification socket "
                          "failed");
            return NGX_ERROR;
        }
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ctx->sh->bus_pid = ngx_pid;
    ctx->sh->bus_stamp = stamp;
    ctx->sh->bus_slots = n;

    for (i = 0; i < NGX_FOKO_CHAT_BUS_SLOTS; i++) {
        ctx->sh->bus_wake[i] = 0;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_foko_chat_bus_socks = socks;

    ngx_foko_chat_bus_successor(cycle, ctx, stamp);

    return NGX_OK;
}


/*
 * A reload that replaced the zone: the old zone, still mapped in the
 * master until the new cycle is set up, learns where its workers forward
 * what they store from now on.
 */

static void
ngx_foko_chat_bus_successor(ngx_cycle_t *cycle, ngx_foko_chat_shm_ctx_t *ctx,
    uint64_t stamp)
{
    ngx_foko_chat_shm_ctx_t  *octx;

    if (cycle->old_cycle == NULL || cycle->old_cycle->conf_ctx == NULL) {
        return;
    }

    octx = ngx_foko_chat_shm_cycle(cycle->old_cycle);

    if (octx == NULL || octx->sh == NULL || octx->sh == ctx->sh) {
        return;
    }

    if (octx->sh->db != ctx->sh->db) {
        /* what the old workers store goes to the old database only */
        return;
    }

    ngx_shmtx_lock(&octx->shpool->mutex);
    octx->sh->next_pid = ngx_pid;
    octx->sh->next_stamp = stamp;
    ngx_shmtx_unlock(&octx->shpool->mutex);

    ngx_shmtx_lock(&ctx->shpool->mutex);
    ctx->sh->replaced = ngx_time();
    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "foko chat: the shared zone is replaced; the old "
                  "workers forward what they store to the new ones");
}


static void
ngx_foko_chat_bus_close_socks(void *data)
{
    ngx_foko_chat_bus_socks_t  *socks = data;

    ngx_uint_t  i;

    for (i = 0; i < socks->n; i++) {
        if (socks->fds[i] != (ngx_socket_t) -1) {
            (void) close(socks->fds[i]);
            socks->fds[i] = (ngx_socket_t) -1;
        }
    }

    if (ngx_foko_chat_bus_socks == socks) {
        ngx_foko_chat_bus_socks = NULL;
    }
}


static void
ngx_foko_chat_bus_name(struct sockaddr_un *sa, socklen_t *len, ngx_uint_t pid,
    uint64_t stamp, ngx_uint_t slot)
{
    u_char  *p;

    ngx_memzero(sa, sizeof(struct sockaddr_un));
    sa->sun_family = AF_UNIX;

    /* an abstract address: sun_path starts with a zero byte */
    p = ngx_snprintf((u_char *) sa->sun_path + 1, sizeof(sa->sun_path) - 1,
                     "foko_chat.%ui.%uL.%ui", pid, stamp, slot);

    *len = offsetof(struct sockaddr_un, sun_path)
           + (p - (u_char *) sa->sun_path);
}


ngx_int_t
ngx_foko_chat_bus_init_process(ngx_cycle_t *cycle,
    ngx_foko_chat_bus_handler_pt handler, ngx_foko_chat_bus_lost_pt lost)
{
    ngx_uint_t                  i;
    ngx_socket_t                fd;
    ngx_connection_t           *c;
    ngx_foko_chat_shm_ctx_t    *ctx;
    ngx_foko_chat_bus_socks_t  *socks;

    ctx = ngx_foko_chat_shm_cycle(cycle);
    socks = ngx_foko_chat_bus_socks;

    if (ctx == NULL || ctx->sh == NULL || socks == NULL) {
        return NGX_OK;
    }

    ngx_foko_chat_bus_handler = handler;
    ngx_foko_chat_bus_lost = lost;

    ngx_foko_chat_bus_slot = (ngx_process == NGX_PROCESS_WORKER)
                             ? ngx_worker : 0;

    if (ngx_foko_chat_bus_slot >= socks->n) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "foko chat: worker %ui has no notification socket",
                      ngx_foko_chat_bus_slot);
        return NGX_ERROR;
    }

    /* the other slots' sockets are for their workers */

    for (i = 0; i < socks->n; i++) {
        if (i != ngx_foko_chat_bus_slot && socks->fds[i] != (ngx_socket_t) -1
            && ngx_process == NGX_PROCESS_WORKER)
        {
            (void) close(socks->fds[i]);
            socks->fds[i] = (ngx_socket_t) -1;
        }
    }

    ngx_foko_chat_bus_buf_size = ngx_max(ctx->sh->log_size / 4,
                                         NGX_FOKO_CHAT_BUS_MIN);
    ngx_foko_chat_bus_buf = ngx_alloc(ngx_foko_chat_bus_buf_size, cycle->log);
    ngx_foko_chat_bus_dgram = ngx_alloc(ngx_foko_chat_bus_buf_size,
                                        cycle->log);

    if (ngx_foko_chat_bus_buf == NULL || ngx_foko_chat_bus_dgram == NULL) {
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);
    ngx_foko_chat_bus_pos = ctx->sh->log_head;
    ngx_foko_chat_bus_stamp = ctx->sh->bus_stamp;
    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_foko_chat_bus_local.handler = ngx_foko_chat_bus_consume;
    ngx_foko_chat_bus_local.log = cycle->log;
    ngx_foko_chat_bus_local.data = ctx;

    fd = socks->fds[ngx_foko_chat_bus_slot];

    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->pool = cycle->pool;
    c->data = ctx;
    c->read->handler = ngx_foko_chat_bus_read;
    c->read->log = cycle->log;

    /* not a client: kept open until the worker exits, never reported */
    c->read->channel = 1;

    /*
     * "Idle", so that nginx calls the read handler with c->close set when
     * a graceful shutdown begins: the exit handler learns of it then.
     */
    c->idle = 1;

    if (ngx_add_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_free_connection(c);
        return NGX_ERROR;
    }

    ngx_foko_chat_bus_conn = c;

    return NGX_OK;
}


ngx_int_t
ngx_foko_chat_bus_publish(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_event_t *ev)
{
    ngx_int_t  rc;

    ngx_shmtx_lock(&ctx->shpool->mutex);
    rc = ngx_foko_chat_bus_publish_locked(ctx, ev);
    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (rc == NGX_OK) {
        ngx_foko_chat_bus_wake(ctx);
    }

    return rc;
}


ngx_int_t
ngx_foko_chat_bus_publish_locked(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_event_t *ev)
{
    u_char                   *p;
    size_t                    len, room;
    uint64_t                  head, end;
    ngx_foko_chat_sh_t       *sh = ctx->sh;
    ngx_foko_chat_bus_rec_t  *rec, *old;

    if (sh->log == NULL) {
        return NGX_DECLINED;
    }

    len = sizeof(ngx_foko_chat_bus_rec_t) + ev->nids * NGX_FOKO_CHAT_OID_LEN
          + ev->json_len;
    len = ngx_align(len, NGX_FOKO_CHAT_BUS_ALIGN);

    if (len > sh->log_size / 4) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "foko chat: an event of %uz bytes does not fit in "
                      "the event log", len);
        return NGX_ERROR;
    }

    head = sh->log_head;
    room = sh->log_size - (size_t) (head % sh->log_size);

    if (room < len) {
        /* a record never wraps: pad to the start of the ring */
        end = head + room + len;

    } else {
        end = head + len;
    }

    /* give up the oldest records that the new one overwrites */

    while (sh->log_tail < head && sh->log_tail + sh->log_size < end) {
        old = (ngx_foko_chat_bus_rec_t *)
                  (sh->log + (size_t) (sh->log_tail % sh->log_size));

        if (old->len == 0) {
            /* padding: to the start of the ring */
            sh->log_tail += sh->log_size
                            - (size_t) (sh->log_tail % sh->log_size);
        } else {
            sh->log_tail += old->len;
        }
    }

    if (sh->log_tail + sh->log_size < end) {
        sh->log_tail = end - sh->log_size;
    }

    if (room < len) {
        rec = (ngx_foko_chat_bus_rec_t *)
                  (sh->log + (size_t) (head % sh->log_size));
        rec->len = 0;
        head += room;
    }

    rec = (ngx_foko_chat_bus_rec_t *)
              (sh->log + (size_t) (head % sh->log_size));

    rec->len = (uint32_t) len;
    rec->kind = (uint32_t) ev->kind;
    rec->seq = ev->seq;
    rec->through = ev->through;
    ngx_memcpy(rec->channel, ev->channel, NGX_FOKO_CHAT_OID_LEN);
    ngx_memcpy(rec->user, ev->user, NGX_FOKO_CHAT_OID_LEN);
    rec->nids = (uint32_t) ev->nids;
    rec->json_len = (uint32_t) ev->json_len;

    p = (u_char *) (rec + 1);

    if (ev->nids) {
        p = ngx_cpymem(p, ev->ids, ev->nids * NGX_FOKO_CHAT_OID_LEN);
    }

    ngx_memcpy(p, ev->json, ev->json_len);

    sh->log_head = head + len;
    sh->events++;

    return NGX_OK;
}


/* every other worker of the current cycle, and this one on its next turn */

void
ngx_foko_chat_bus_wake(ngx_foko_chat_shm_ctx_t *ctx)
{
    u_char               b;
    uint64_t             stamp;
    socklen_t            len;
    ngx_uint_t           i, n, pid;
    ngx_socket_t         fd;
    struct sockaddr_un   sa;
    ngx_foko_chat_sh_t  *sh = ctx->sh;

    if (ngx_foko_chat_bus_conn && !ngx_foko_chat_bus_local.posted) {
        ngx_post_event(&ngx_foko_chat_bus_local, &ngx_posted_events);
    }

    if (ngx_foko_chat_bus_conn == NULL) {
        return;
    }

    fd = ngx_foko_chat_bus_conn->fd;

    ngx_shmtx_lock(&ctx->shpool->mutex);
    pid = sh->bus_pid;
    stamp = sh->bus_stamp;
    n = sh->bus_slots;
    ngx_shmtx_unlock(&ctx->shpool->mutex);

    b = 0;

    for (i = 0; i < n; i++) {
        if (i == ngx_foko_chat_bus_slot && stamp == ngx_foko_chat_bus_stamp) {
            /* this worker: the posted event above */
            continue;
        }

        if (i < NGX_FOKO_CHAT_BUS_SLOTS
            && !ngx_atomic_cmp_set(&sh->bus_wake[i], 0, 1))
        {
            /* that worker has a wake pending */
            continue;
        }

        ngx_foko_chat_bus_name(&sa, &len, pid, stamp, i);

        if (sendto(fd, &b, 1, 0, (struct sockaddr *) &sa, len) == -1
            && ngx_socket_errno != NGX_EAGAIN)
        {
            /*
             * EAGAIN: its socket is full of wakes, it will read the log;
             * ECONNREFUSED: the slot's socket is gone with its cycle (the
             * zone outlived it: a reload replaced the zone).
             */
            if (ngx_socket_errno != NGX_ECONNREFUSED) {
                ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, ngx_socket_errno,
                              "foko chat: sendto() of a wake to worker %ui "
                              "failed", i);
            }

            if (i < NGX_FOKO_CHAT_BUS_SLOTS) {
                sh->bus_wake[i] = 0;
            }
        }
    }
}


static void
ngx_foko_chat_bus_read(ngx_event_t *ev)
{
    ssize_t                   n;
    ngx_connection_t         *c = ev->data;
    ngx_foko_chat_bus_fwd_t  *fwd;
    ngx_foko_chat_shm_ctx_t  *ctx;

    ctx = c->data;

    if (c->close) {
        /* the worker shuts down; the socket stays for the wakes */
        c->close = 0;
        c->idle = 0;

        if (ngx_foko_chat_bus_exit) {
            ngx_foko_chat_bus_exit();
        }
    }

    for ( ;; ) {
        n = recv(c->fd, ngx_foko_chat_bus_dgram, ngx_foko_chat_bus_buf_size,
                 MSG_TRUNC);

        if (n == -1) {
            if (ngx_socket_errno != NGX_EAGAIN
                && ngx_socket_errno != NGX_EINTR)
            {
                ngx_log_error(NGX_LOG_ALERT, ev->log, ngx_socket_errno,
                              "foko chat: recv() of a wake failed");
            }

            break;
        }

        if ((size_t) n <= sizeof(ngx_foko_chat_bus_fwd_t)) {
            /* a wake */
            continue;
        }

        fwd = (ngx_foko_chat_bus_fwd_t *) ngx_foko_chat_bus_dgram;

        if (fwd->magic != NGX_FOKO_CHAT_BUS_FWD_MAGIC) {
            continue;
        }

        if ((size_t) n > ngx_foko_chat_bus_buf_size) {
            ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                          "foko chat: a message of %z bytes forwarded by "
                          "a replaced zone's worker is too long", n);
            continue;
        }

        ngx_foko_chat_event_forwarded(ctx, fwd->kind, (u_char *) (fwd + 1),
                                      n - sizeof(ngx_foko_chat_bus_fwd_t));
    }

    /*
     * After the wakes are read and before the log is: a publisher that
     * still saw the flag set appended its event before this, so the log
     * has it; one that sees it clear sends a new wake.
     */

    if (ngx_foko_chat_bus_slot < NGX_FOKO_CHAT_BUS_SLOTS
        && ngx_foko_chat_bus_stamp == ctx->sh->bus_stamp)
    {
        ctx->sh->bus_wake[ngx_foko_chat_bus_slot] = 0;
        ngx_memory_barrier();
    }

    ngx_foko_chat_bus_consume(&ngx_foko_chat_bus_local);
}


/* reads the log from where this worker stopped */

static void
ngx_foko_chat_bus_consume(ngx_event_t *ev)
{
    u_char                   *p, *last;
    size_t                    off, room, len;
    uint64_t                  pos;
    ngx_uint_t                lost;
    ngx_foko_chat_sh_t       *sh;
    ngx_foko_chat_event_t     e;
    ngx_foko_chat_bus_rec_t  *rec;
    ngx_foko_chat_shm_ctx_t  *ctx = ev->data;

    sh = ctx->sh;

    if (ev->posted) {
        ngx_delete_posted_event(ev);
    }

    for ( ;; ) {
        lost = 0;
        last = ngx_foko_chat_bus_buf;

        ngx_shmtx_lock(&ctx->shpool->mutex);

        pos = ngx_foko_chat_bus_pos;

        if (pos < sh->log_tail) {
            lost = 1;
            pos = sh->log_head;
        }

        while (pos < sh->log_head) {
            off = (size_t) (pos % sh->log_size);
            rec = (ngx_foko_chat_bus_rec_t *) (sh->log + off);

            if (rec->len == 0) {
                pos += sh->log_size - off;
                continue;
            }

            room = ngx_foko_chat_bus_buf_size
                   - (last - ngx_foko_chat_bus_buf);

            if (rec->len > room) {
                break;
            }

            last = ngx_cpymem(last, rec, rec->len);
            pos += rec->len;
        }

        ngx_foko_chat_bus_pos = pos;

        ngx_shmtx_unlock(&ctx->shpool->mutex);

        if (lost) {
            ngx_foko_chat_stat_inc(log_overruns);

            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "foko chat: this worker fell behind the event "
                          "log; its WebSocket clients are asked to resume");

            if (ngx_foko_chat_bus_lost) {
                ngx_foko_chat_bus_lost();
            }
        }

        if (last == ngx_foko_chat_bus_buf) {
            return;
        }

        for (p = ngx_foko_chat_bus_buf; p < last; p += len) {
            rec = (ngx_foko_chat_bus_rec_t *) p;
            len = rec->len;

            e.kind = rec->kind;
            ngx_memcpy(e.channel, rec->channel, NGX_FOKO_CHAT_OID_LEN);
            ngx_memcpy(e.user, rec->user, NGX_FOKO_CHAT_OID_LEN);
            e.seq = rec->seq;
            e.through = rec->through;
            e.nids = rec->nids;
            e.ids = (u_char (*)[NGX_FOKO_CHAT_OID_LEN]) (rec + 1);
            e.json = (u_char *) (rec + 1) + rec->nids * NGX_FOKO_CHAT_OID_LEN;
            e.json_len = rec->json_len;

            if (e.kind == NGX_FOKO_CHAT_EV_LOST) {
                /* ngx_foko_chat_redis_reader.c: every worker's clients */
                if (ngx_foko_chat_bus_lost) {
                    ngx_foko_chat_bus_lost();
                }

                continue;
            }

            if (ngx_foko_chat_bus_handler) {
                ngx_foko_chat_bus_handler(&e);
            }
        }
    }
}


void
ngx_foko_chat_bus_on_exit(ngx_foko_chat_bus_exit_pt handler)
{
    ngx_foko_chat_bus_exit = handler;
}


/*
 * A message this worker stored, if a reload replaced the zone: to the new
 * cycle's first slot, by name.  1 if it went.
 */

ngx_uint_t
ngx_foko_chat_bus_forward(ngx_foko_chat_shm_ctx_t *ctx, ngx_uint_t kind,
    u_char *text, size_t len)
{
    uint64_t                  stamp;
    socklen_t                 salen;
    ngx_uint_t                pid;
    struct iovec              iov[2];
    struct msghdr             msg;
    struct sockaddr_un        sa;
    ngx_foko_chat_bus_fwd_t   fwd;

    if (ngx_foko_chat_bus_conn == NULL || ctx->sh->next_stamp == 0) {
        return 0;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);
    pid = ctx->sh->next_pid;
    stamp = ctx->sh->next_stamp;
    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_foko_chat_bus_name(&sa, &salen, pid, stamp, 0);

    fwd.magic = NGX_FOKO_CHAT_BUS_FWD_MAGIC;
    fwd.kind = (uint32_t) kind;

    iov[0].iov_base = &fwd;
    iov[0].iov_len = sizeof(ngx_foko_chat_bus_fwd_t);
    iov[1].iov_base = text;
    iov[1].iov_len = len;

    ngx_memzero(&msg, sizeof(struct msghdr));
    msg.msg_name = &sa;
    msg.msg_namelen = salen;
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;

    if (sendmsg(ngx_foko_chat_bus_conn->fd, &msg, 0) == -1) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, ngx_socket_errno,
                      "foko chat: a stored message could not be forwarded "
                      "to the workers of the new zone; their clients get "
                      "it when they resume");
        return 0;
    }

    return 1;
}


uint64_t
ngx_foko_chat_bus_lag(ngx_foko_chat_shm_ctx_t *ctx)
{
    uint64_t  head;

    ngx_shmtx_lock(&ctx->shpool->mutex);
    head = ctx->sh->log_head;
    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return head > ngx_foko_chat_bus_pos ? head - ngx_foko_chat_bus_pos : 0;
}
