
/*
 * Foko chat: the shared-memory zone, one per configuration, kept across
 * reloads.
 */


#ifndef _NGX_FOKO_CHAT_SHM_H_INCLUDED_
#define _NGX_FOKO_CHAT_SHM_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_status.h"


#define NGX_FOKO_CHAT_BUS_SLOTS       64   /* wakes coalesced by a flag */
#define NGX_FOKO_CHAT_SEQ_OWNERS      64   /* workers with seqs out */

#define NGX_FOKO_CHAT_REDIS_PARTITIONS_MAX  1024
#define NGX_FOKO_CHAT_HOST_ID_MAX           64
#define NGX_FOKO_CHAT_REDIS_RUN_ID          40
#define NGX_FOKO_CHAT_REDIS_ZONE_ID         16
#define NGX_FOKO_CHAT_REDIS_PEERS           64
/* "<host id>/<zone id>" and its NUL */
#define NGX_FOKO_CHAT_REDIS_NAME_LEN                                         \
    (NGX_FOKO_CHAT_HOST_ID_MAX + 2 + NGX_FOKO_CHAT_REDIS_ZONE_ID)


typedef enum {
    NGX_FOKO_CHAT_MONGO_UNKNOWN = 0,
    NGX_FOKO_CHAT_MONGO_UP,
    NGX_FOKO_CHAT_MONGO_DOWN
} ngx_foko_chat_mongo_state_e;


/* another host whose users this zone has nodes of; "" name: free */
typedef struct {
    u_char                     name[NGX_FOKO_CHAT_REDIS_NAME_LEN];
    uint64_t                   seen;           /* ms, a lease or an event */
    unsigned                   listed:1;       /* its lease was seen */
} ngx_foko_chat_redis_peer_t;


/* several hosts through Redis: ngx_foko_chat_redis*.c */
typedef struct {
    u_char                     host_id[NGX_FOKO_CHAT_HOST_ID_MAX + 1];
    u_char                     zone_id[NGX_FOKO_CHAT_REDIS_ZONE_ID + 1];
    u_char                     run_id[NGX_FOKO_CHAT_REDIS_RUN_ID + 1];

    /* the last entry applied of each partition; 0 partitions: none yet */
    ngx_uint_t                 partitions;
    uint64_t                   last[NGX_FOKO_CHAT_REDIS_PARTITIONS_MAX];

    ngx_atomic_t               state;          /* as mongo_state */
    ngx_atomic_t               checked;
    ngx_atomic_t               published;
    ngx_atomic_t               applied;
    ngx_atomic_t               own;            /* this host's, skipped */
    ngx_atomic_t               losses;
    ngx_atomic_t               dropped;        /* the queue was full */
    ngx_atomic_t               lag;            /* entries not read yet */

    /* presence: ngx_foko_chat_redis_presence.c */
    ngx_foko_chat_redis_peer_t  peers[NGX_FOKO_CHAT_REDIS_PEERS];
    ngx_atomic_t               hosts;          /* live leases, this one's too */
    ngx_atomic_t               hosts_gone;     /* leases that expired */
    ngx_atomic_t               presence_reset; /* events were lost */
    ngx_atomic_t               presence_again; /* the lease had ended */
    ngx_atomic_t               lost_at;        /* when, the last time */

    /* Redis's seq counters read back: ngx_foko_chat_redis_seq.c */
    ngx_atomic_t               audited;        /* when, the last time */
    ngx_uint_t                 audit_from;     /* the next counter's index */
    ngx_atomic_t               audit_busy;     /* a round's start, or 0 */
    ngx_atomic_t               loss_pass;      /* the losses a pass follows */
    ngx_uint_t                 loss_from;      /* its next channel's index */
    ngx_atomic_t               loss_audited;   /* the losses it went past */
    ngx_atomic_t               heard;          /* seqs no event brought */
} ngx_foko_chat_redis_sh_t;


typedef struct {
    /* ngx_foko_chat_mongo_state_e, changed with ngx_atomic_cmp_set() */
    ngx_atomic_t               mongo_state;
    ngx_atomic_t               mongo_checked;    /* time of the last probe */
    ngx_msec_t                 mongo_up_at;      /* the last probe that
                                                    answered, monotonic */
    ngx_atomic_t               reloads;          /* cycles that reused us */
    ngx_atomic_t               rehydrated;       /* warmed up, or being */
    time_t                     created;
    uint32_t                   db;               /* the database cached:
                                                    see ngx_foko_chat_shm.c */

    /* rate limit counters: ngx_foko_chat_limit.c */
    ngx_rbtree_t               limits;
    ngx_rbtree_node_t          limits_sentinel;
    ngx_queue_t                limits_lru;

    /* channels' seq counters: ngx_foko_chat_seq.c */
    ngx_rbtree_t               seqs;
    ngx_rbtree_node_t          seqs_sentinel;
    /* the pids of the workers that take seqs, by their owner number - 1 */
    ngx_pid_t                  seq_owners[NGX_FOKO_CHAT_SEQ_OWNERS];

    /* the channel cache: ngx_foko_chat_cache.c */
    ngx_rbtree_t               channels;
    ngx_rbtree_node_t          channels_sentinel;
    ngx_queue_t                channels_lru;
    ngx_atomic_t               channels_gen;   /* bumped by every change */
    unsigned                   evicting:1;

    /* users' channel ids: ngx_foko_chat_users.c */
    ngx_rbtree_t               users;
    ngx_rbtree_node_t          users_sentinel;
    ngx_queue_t                users_lru;
    ngx_uint_t                 nusers;
    ngx_atomic_t               users_gen;      /* bumped by every change */
    ngx_atomic_t               reads_gen;      /* ... by every mark read */

    /* posts by client_id, pending or stored: ngx_foko_chat_messages_idem.c */
    ngx_rbtree_t               posts;
    ngx_rbtree_node_t          posts_sentinel;
    ngx_queue_t                posts_age;

    /* the event log and the workers' wake sockets: ngx_foko_chat_bus.c */
    u_char                    *log;
    size_t                     log_size;
    uint64_t                   log_head;       /* bytes ever written */
    uint64_t                   log_tail;       /* the oldest whole record */
    uint64_t                   events;
    ngx_uint_t                 bus_pid;
    uint64_t                   bus_stamp;
    ngx_uint_t                 bus_slots;
    ngx_atomic_t               bus_wake[NGX_FOKO_CHAT_BUS_SLOTS];

    /*
     * A reload that replaced the zone (a new size): in the old zone, the
     * names of the new cycle's sockets, that its workers forward what
     * they store to; in the new one, that a replaced zone's workers may
     * still store.
     */
    ngx_uint_t                 next_pid;
    uint64_t                   next_stamp;
    time_t                     replaced;

    /* users' connections on all workers: ngx_foko_chat_presence.c */
    ngx_rbtree_t               presence;
    ngx_rbtree_node_t          presence_sentinel;

    /* counters and the workers' slots: ngx_foko_chat_status.c */
    ngx_foko_chat_stats_t      stats;

    ngx_foko_chat_redis_sh_t   redis;
} ngx_foko_chat_sh_t;


typedef struct {
    ngx_foko_chat_sh_t        *sh;
    ngx_slab_pool_t           *shpool;
    size_t                     log_size;       /* for a fresh zone */
    uint32_t                   db;             /* for a fresh zone */
} ngx_foko_chat_shm_ctx_t;


typedef struct {
    size_t                     size;
    size_t                     free;
} ngx_foko_chat_shm_usage_t;


ngx_shm_zone_t *ngx_foko_chat_shm_add(ngx_conf_t *cf, size_t size,
    uint32_t db);
ngx_foko_chat_shm_ctx_t *ngx_foko_chat_shm_get(ngx_http_request_t *r);
ngx_foko_chat_shm_ctx_t *ngx_foko_chat_shm_cycle(ngx_cycle_t *cycle);
void ngx_foko_chat_shm_usage(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_shm_usage_t *usage);
u_char *ngx_foko_chat_shm_id_lookup(ngx_rbtree_t *tree, u_char *id);
void ngx_foko_chat_shm_id_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
/* zone memory, with the zone locked; evicts cold cached channels */
void *ngx_foko_chat_shm_alloc_locked(ngx_foko_chat_shm_ctx_t *ctx,
    size_t size, void *keep);

ngx_uint_t ngx_foko_chat_shm_set_mongo_state(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_mongo_state_e state);


#endif /* _NGX_FOKO_CHAT_SHM_H_INCLUDED_ */
