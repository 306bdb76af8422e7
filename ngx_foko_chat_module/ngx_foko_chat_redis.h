
/*
 * Foko chat: several hosts as one chat, through Redis Streams.
 *
 * After MongoDB's ack, the events a host publishes in its zone are also
 * appended to one of N partition streams in Redis (by channel); worker 0
 * of every host reads all partitions and feeds other hosts' events into
 * its own zone as a local writer would.  Redis holds nothing that cannot
 * be lost: a gap or a restarted Redis makes the host's WebSocket clients
 * resume from MongoDB.  Without foko_chat_redis_url nothing here runs.
 */


#ifndef _NGX_FOKO_CHAT_REDIS_H_INCLUDED_
#define _NGX_FOKO_CHAT_REDIS_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_bus.h"


#define NGX_FOKO_CHAT_REDIS_PARTITIONS    16
#define NGX_FOKO_CHAT_REDIS_LENGTH        10000
#define NGX_FOKO_CHAT_REDIS_POOL          "foko_redis"
#define NGX_FOKO_CHAT_REDIS_ERR_LEN       256


struct ngx_foko_chat_redis_conf_s {
    ngx_str_t                  url;
    char                       ip[NGX_INET6_ADDRSTRLEN + 1];
    int                        port;
    ngx_uint_t                 db;
    ngx_str_t                  host_id;        /* empty: generated */
    ngx_uint_t                 partitions;
    ngx_uint_t                 stream_length;
    ngx_foko_chat_pool_t       pool;
};


/* what the status page shows */
typedef struct {
    const char                *state;
    uint64_t                   published;
    uint64_t                   applied;
    uint64_t                   own;
    uint64_t                   losses;
    uint64_t                   heard;
    uint64_t                   dropped;
    uint64_t                   lag;
    uint64_t                   hosts;
    uint64_t                   hosts_gone;
    ngx_uint_t                 queued;         /* this worker's */
    time_t                     checked;
    u_char                    *host_id;
} ngx_foko_chat_redis_status_t;


/* the directives */
char *ngx_foko_chat_redis_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_foko_chat_redis_host_id(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_foko_chat_redis_number(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_foko_chat_redis_pool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_foko_chat_redis_init_conf(ngx_conf_t *cf,
    ngx_foko_chat_main_conf_t *fmcf);

ngx_int_t ngx_foko_chat_redis_init_process(ngx_cycle_t *cycle);
void ngx_foko_chat_redis_exit_process(ngx_cycle_t *cycle);

/*
 * The hooks of ngx_foko_chat_event.c, after an event went into the zone:
 * a stored message ("text" is the message as the ring has it) and any
 * other event.  They only queue; nothing waits for Redis.
 */
void ngx_foko_chat_redis_publish_stored(ngx_uint_t kind, u_char *channel,
    int64_t seq, char *text);
void ngx_foko_chat_redis_publish_event(const char *kind,
    ngx_foko_chat_event_t *ev);

/*
 * This host's presence transition of "user" (up: its first connection on
 * this host; else the end of its last one here), with the user's channels.
 */
void ngx_foko_chat_redis_publish_presence(u_char *user, u_char *ids,
    ngx_uint_t n, ngx_uint_t up);

/*
 * On a thread: an attempt counted in Redis under "n" keys (up to 2) in
 * fixed windows, unless one is over its limit: *wait is then the seconds
 * to wait.  NGX_ERROR: Redis failed ("err").
 */
ngx_int_t ngx_foko_chat_redis_limit_take(ngx_str_t *keys,
    ngx_foko_chat_limit_t *limits, ngx_uint_t n, time_t *wait, u_char *err);
/* on a thread: a successful attempt; either key may be NULL */
ngx_int_t ngx_foko_chat_redis_limit_settle(ngx_str_t *clear,
    ngx_str_t *refund, u_char *err);

/* numbering (ngx_foko_chat_redis_seq.c): the pool its calls run on */
ngx_thread_pool_t *ngx_foko_chat_redis_seq_pool(void);
/*
 * On a thread: seqs taken together with every host, for "n" channels
 * (their ids one after another in "channels"): counts[i] of them past
 * the highest of Redis's counter and floors[i]; the first in firsts[i].
 * NGX_ERROR: Redis failed ("err").
 */
ngx_int_t ngx_foko_chat_redis_seq_take(u_char *channels, int64_t *floors,
    ngx_uint_t *counts, ngx_uint_t n, int64_t *firsts, u_char *err);

/*
 * Every second, from every worker: one worker of the host at a time reads
 * Redis's counters of the zone's channels back (after a loss at once,
 * otherwise every few seconds); a seq that no event brought is then
 * waited for and filled like another host's.
 */
void ngx_foko_chat_redis_seq_audit(ngx_foko_chat_shm_ctx_t *shm);

/* this process publishes to and reads from Redis */
ngx_uint_t ngx_foko_chat_redis_on(void);

/* NGX_DECLINED: Redis is not configured */
ngx_int_t ngx_foko_chat_redis_status(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_redis_status_t *st);


#endif /* _NGX_FOKO_CHAT_REDIS_H_INCLUDED_ */
