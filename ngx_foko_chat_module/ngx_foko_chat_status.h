
/*
 * Foko chat: the operator's status page, as JSON or in the Prometheus
 * text format, and the counters behind it.
 */


#ifndef _NGX_FOKO_CHAT_STATUS_H_INCLUDED_
#define _NGX_FOKO_CHAT_STATUS_H_INCLUDED_


#include "ngx_foko_chat.h"


#define NGX_FOKO_CHAT_STATUS_WORKERS      64   /* slots, as the bus has */
#define NGX_FOKO_CHAT_STATUS_BUCKETS      9    /* batches: 1, 2, 4 .. 256 */


/* why a post was refused when it came */
typedef enum {
    NGX_FOKO_CHAT_REJECT_INVALID = 0,
    NGX_FOKO_CHAT_REJECT_TOO_LARGE,
    NGX_FOKO_CHAT_REJECT_NOT_MEMBER,
    NGX_FOKO_CHAT_REJECT_QUEUE_FULL,
    NGX_FOKO_CHAT_REJECT_OVERLOADED,
    NGX_FOKO_CHAT_REJECTS
} ngx_foko_chat_reject_e;


/* what a worker last wrote of its own state; read by every worker */
typedef struct {
    ngx_atomic_t               pid;          /* 0: a free slot */
    ngx_atomic_t               updated;      /* Unix time */
    ngx_atomic_t               ws_connections;
    ngx_atomic_t               signing_in;
    ngx_atomic_t               waiting_to_sign_in;
    ngx_atomic_t               signin_limit;
    ngx_atomic_t               tasks;
    ngx_atomic_t               queued;
    ngx_atomic_t               channel_loads;
    ngx_atomic_t               waited_for_load;
    ngx_atomic_t               log_lag;      /* event log bytes unread */
} ngx_foko_chat_worker_stats_t;


/* in the shared zone: counted by every worker, since the zone was made */
typedef struct {
    ngx_atomic_t               stored;       /* messages written */
    ngx_atomic_t               delivered;    /* to WebSocket connections */
    ngx_atomic_t               rejected[NGX_FOKO_CHAT_REJECTS];
    ngx_atomic_t               batches[NGX_FOKO_CHAT_STATUS_BUCKETS];
    ngx_atomic_t               batch_failures;
    ngx_atomic_t               probe_failures;
    ngx_atomic_t               cached_channels;
    ngx_atomic_t               evictions;
    ngx_atomic_t               cached_users;
    ngx_atomic_t               signins_zone;   /* channel ids from the zone */
    ngx_atomic_t               signins_mongo;  /* ... from MongoDB */
    ngx_atomic_t               accounts_zone;  /* sign-in, GET /api/me */
    ngx_atomic_t               accounts_mongo;
    ngx_atomic_t               channel_lists_zone;  /* GET /api/channels */
    ngx_atomic_t               channel_lists_mongo;
    ngx_atomic_t               log_overruns;
    ngx_foko_chat_worker_stats_t  workers[NGX_FOKO_CHAT_STATUS_WORKERS];
} ngx_foko_chat_stats_t;


/* this process's counters in its cycle's zone; NULL in the master */
extern ngx_foko_chat_stats_t  *ngx_foko_chat_stats;


#define ngx_foko_chat_stat_add(field, n)                                     \
    do {                                                                      \
        if (ngx_foko_chat_stats) {                                            \
            (void) ngx_atomic_fetch_add(&ngx_foko_chat_stats->field, n);      \
        }                                                                     \
    } while (0)

#define ngx_foko_chat_stat_inc(field)  ngx_foko_chat_stat_add(field, 1)

#define ngx_foko_chat_stat_reject(reason)                                    \
    ngx_foko_chat_stat_inc(rejected[NGX_FOKO_CHAT_REJECT_ ## reason])


ngx_int_t ngx_foko_chat_status_handler(ngx_http_request_t *r);
ngx_int_t ngx_foko_chat_status_prometheus_handler(ngx_http_request_t *r);

/* "foko_chat_status json|prometheus": the location's handler */
char *ngx_foko_chat_status_format(ngx_conf_t *cf,
    ngx_http_core_loc_conf_t *clcf);

ngx_int_t ngx_foko_chat_status_init_process(ngx_cycle_t *cycle);
void ngx_foko_chat_status_exit_process(ngx_cycle_t *cycle);

/* a batch of n messages was written */
void ngx_foko_chat_status_batch(ngx_uint_t n);


#endif /* _NGX_FOKO_CHAT_STATUS_H_INCLUDED_ */
