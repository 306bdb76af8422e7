
/*
 * Foko chat: what the directives (ngx_foko_chat_redis_conf.c), the
 * publisher (ngx_foko_chat_redis.c) and the reader
 * (ngx_foko_chat_redis_reader.c) share; the only header that pulls in
 * hiredis.  Its synchronous API runs on the Redis thread pool only, with
 * a timeout on every call.
 */


#ifndef _NGX_FOKO_CHAT_REDIS_INT_H_INCLUDED_
#define _NGX_FOKO_CHAT_REDIS_INT_H_INCLUDED_


#include <hiredis/hiredis.h>

#include "ngx_foko_chat_redis.h"
#include "ngx_foko_chat_task.h"


#define NGX_FOKO_CHAT_REDIS_CONNECT_TIMEOUT  1000     /* ms */
#define NGX_FOKO_CHAT_REDIS_TIMEOUT          3000     /* ms, > the BLOCK */
#define NGX_FOKO_CHAT_REDIS_BLOCK            "1000"   /* ms */
#define NGX_FOKO_CHAT_REDIS_COUNT            "512"
#define NGX_FOKO_CHAT_REDIS_BACKOFF_MIN      100      /* ms */
#define NGX_FOKO_CHAT_REDIS_BACKOFF_MAX      5000     /* ms */

/* "foko:{p}:ev", "foko:{p}:n": one hash tag, one Cluster slot */
#define NGX_FOKO_CHAT_REDIS_KEY_LEN          (sizeof("foko:{}:ev") + 8)


typedef enum {
    NGX_FOKO_CHAT_REDIS_UNKNOWN = 0,
    NGX_FOKO_CHAT_REDIS_UP,
    NGX_FOKO_CHAT_REDIS_DOWN
} ngx_foko_chat_redis_state_e;


/* this process's configuration and zone; NULL: Redis is not used */
extern ngx_foko_chat_redis_conf_t  *ngx_foko_chat_redis_conf;
extern ngx_foko_chat_shm_ctx_t     *ngx_foko_chat_redis_shm;
/*
 * What entries are signed with: "<host id>/<zone id>".  The zone id is
 * this zone's, made with it: entries of this zone are in it already,
 * those of another zone of the same host (a reload that made a new zone)
 * are not.
 */
extern u_char  ngx_foko_chat_redis_host[NGX_FOKO_CHAT_HOST_ID_MAX + 2
                                        + NGX_FOKO_CHAT_REDIS_ZONE_ID];
extern size_t  ngx_foko_chat_redis_host_len;


/* on a thread: a connection with its timeouts, or NULL and "err" */
redisContext *ngx_foko_chat_redis_connect(ngx_foko_chat_redis_conf_t *rcf,
    u_char *err);
/*
 * On a thread: connections kept between calls (of limits, of numbering):
 * one, "kept" if it was; one back, or closed if enough are kept.
 */
redisContext *ngx_foko_chat_redis_kept_get(u_char *err, ngx_uint_t *kept);
void ngx_foko_chat_redis_kept_put(redisContext *c);
/*
 * On a thread: one command on a kept connection, once more on a new one
 * if Redis had closed it, within "timeout" ms (0: the default); the reply
 * (*c to be put back), or NULL with "err" and no connection.
 */
redisReply *ngx_foko_chat_redis_kept_call(redisContext **c,
    ngx_msec_t timeout, int argc, const char **argv, const size_t *lens,
    u_char *err);
/* on a thread: the text of a failed call; the connection is dropped */
void ngx_foko_chat_redis_failed(redisContext **c, redisReply *reply,
    u_char *err);
u_char *ngx_foko_chat_redis_key(u_char *buf, ngx_uint_t partition,
    const char *what);

/* on the event loop: a call succeeded or failed; logs the transitions */
void ngx_foko_chat_redis_state(ngx_uint_t up, const char *who, u_char *err);
ngx_msec_t ngx_foko_chat_redis_backoff(ngx_msec_t *backoff);

ngx_int_t ngx_foko_chat_redis_reader_init(ngx_cycle_t *cycle);

/* presence across hosts: ngx_foko_chat_redis_presence.c */
ngx_int_t ngx_foko_chat_redis_lease_init(ngx_cycle_t *cycle);
/*
 * With the zone locked: another host's presence entry; 2: the user comes
 * online here, 1: goes offline here (to be announced), 0: neither.
 */
ngx_uint_t ngx_foko_chat_redis_presence_locked(ngx_str_t *host,
    u_char *user, ngx_uint_t up, u_char *ids, ngx_uint_t nids);


#endif /* _NGX_FOKO_CHAT_REDIS_INT_H_INCLUDED_ */
