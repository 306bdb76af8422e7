
/*
 * Foko chat: the shared-memory zone, one per configuration, kept across
 * reloads.
 */


#ifndef _NGX_FOKO_CHAT_SHM_H_INCLUDED_
#define _NGX_FOKO_CHAT_SHM_H_INCLUDED_


#include "ngx_foko_chat.h"


#define NGX_FOKO_CHAT_BUS_SLOTS       64   /* wakes coalesced by a flag */


typedef enum {
    NGX_FOKO_CHAT_MONGO_UNKNOWN = 0,
    NGX_FOKO_CHAT_MONGO_UP,
    NGX_FOKO_CHAT_MONGO_DOWN
} ngx_foko_chat_mongo_state_e;


typedef struct {
    /* ngx_foko_chat_mongo_state_e, changed with ngx_atomic_cmp_set() */
    ngx_atomic_t               mongo_state;
    ngx_atomic_t               mongo_checked;    /* time of the last probe */
    ngx_atomic_t               reloads;          /* cycles that reused us */
    ngx_atomic_t               rehydrated;       /* warmed up, or being */
    time_t                     created;

    /* rate limit counters: ngx_foko_chat_limit.c */
    ngx_rbtree_t               limits;
    ngx_rbtree_node_t          limits_sentinel;
    ngx_queue_t                limits_lru;

    /* channels' seq counters: ngx_foko_chat_seq.c */
    ngx_rbtree_t               seqs;
    ngx_rbtree_node_t          seqs_sentinel;

    /* the channel cache: ngx_foko_chat_cache.c */
    ngx_rbtree_t               channels;
    ngx_rbtree_node_t          channels_sentinel;
    ngx_queue_t                channels_lru;
    ngx_atomic_t               channels_gen;   /* bumped by every change */
    unsigned                   evicting:1;

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

    /* users' connections on all workers: ngx_foko_chat_presence.c */
    ngx_rbtree_t               presence;
    ngx_rbtree_node_t          presence_sentinel;
} ngx_foko_chat_sh_t;


typedef struct {
    ngx_foko_chat_sh_t        *sh;
    ngx_slab_pool_t           *shpool;
    size_t                     log_size;       /* for a fresh zone */
} ngx_foko_chat_shm_ctx_t;


typedef struct {
    size_t                     size;
    size_t                     free;
} ngx_foko_chat_shm_usage_t;


ngx_shm_zone_t *ngx_foko_chat_shm_add(ngx_conf_t *cf, size_t size);
ngx_foko_chat_shm_ctx_t *ngx_foko_chat_shm_get(ngx_http_request_t *r);
ngx_foko_chat_shm_ctx_t *ngx_foko_chat_shm_cycle(ngx_cycle_t *cycle);
void ngx_foko_chat_shm_usage(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_shm_usage_t *usage);
u_char *ngx_foko_chat_shm_id_lookup(ngx_rbtree_t *tree, u_char *id);
void ngx_foko_chat_shm_id_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
ngx_uint_t ngx_foko_chat_shm_set_mongo_state(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_mongo_state_e state);


#endif /* _NGX_FOKO_CHAT_SHM_H_INCLUDED_ */
