
/*
 * Foko chat: who is online: every user's open WebSocket connections on all
 * workers, counted in the shared zone, and the other hosts that have the
 * user online (several hosts through Redis).
 */


#ifndef _NGX_FOKO_CHAT_PRESENCE_H_INCLUDED_
#define _NGX_FOKO_CHAT_PRESENCE_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_shm.h"


#define NGX_FOKO_CHAT_PRESENCE_GRACE   5000     /* ms */


typedef struct {
    u_char                     user[NGX_FOKO_CHAT_OID_LEN];
    u_char                    *ids;            /* ngx_alloc()ed */
    ngx_uint_t                 nids;
} ngx_foko_chat_presence_gone_t;


void ngx_foko_chat_presence_init(ngx_foko_chat_sh_t *sh);

/*
 * A connection of "user" is open: NGX_OK if the user comes online on this
 * host with it (for ngx_foko_chat_presence_announce()), NGX_DECLINED if
 * the user was online here already, NGX_ERROR if the zone is full.
 */
ngx_int_t ngx_foko_chat_presence_open(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *user);

/* NGX_OK if it was the user's last connection: the grace period starts */
ngx_int_t ngx_foko_chat_presence_close(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *user);

/*
 * After the grace period: NGX_OK if the user has no connection on this
 * host since "grace" ms and goes offline here now (to be announced).
 */
ngx_int_t ngx_foko_chat_presence_expire(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *user, ngx_msec_t grace);

/*
 * Drops the counts of workers that died; the users this host has no
 * connection of left go to "users" (24 bytes each, up to "max"), their
 * number is returned.
 */
ngx_uint_t ngx_foko_chat_presence_sweep(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *users, ngx_uint_t max);

/*
 * After NGX_OK from open, expire or sweep: tells the other hosts, and
 * this host's clients if the user's state changed on all hosts together.
 */
void ngx_foko_chat_presence_announce(u_char *user, u_char *channels,
    ngx_uint_t n, ngx_uint_t online);

/* other hosts' nodes, from ngx_foko_chat_redis_presence.c */
ngx_int_t ngx_foko_chat_presence_remote_locked(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_uint_t host, u_char *user, ngx_uint_t up, u_char *ids,
    ngx_uint_t nids);
void ngx_foko_chat_presence_drop_locked(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_int_t host, ngx_array_t *gone);

/* with the zone locked; on any host */
ngx_uint_t ngx_foko_chat_presence_online_locked(ngx_foko_chat_sh_t *sh,
    u_char *user);
ngx_uint_t ngx_foko_chat_presence_online(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *user);


#endif /* _NGX_FOKO_CHAT_PRESENCE_H_INCLUDED_ */
