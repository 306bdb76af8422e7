
/*
 * Foko chat: who is online: every user's open WebSocket connections on all
 * workers, counted in the shared zone.
 */


#ifndef _NGX_FOKO_CHAT_PRESENCE_H_INCLUDED_
#define _NGX_FOKO_CHAT_PRESENCE_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_shm.h"


#define NGX_FOKO_CHAT_PRESENCE_GRACE   5000     /* ms */


void ngx_foko_chat_presence_init(ngx_foko_chat_sh_t *sh);

/*
 * A connection of "user" is open: NGX_OK if the user comes online with it
 * (to be announced), NGX_DECLINED if the user was online already,
 * NGX_ERROR if the zone is full.
 */
ngx_int_t ngx_foko_chat_presence_open(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *user);

/* NGX_OK if it was the user's last connection: the grace period starts */
ngx_int_t ngx_foko_chat_presence_close(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *user);

/*
 * After the grace period: NGX_OK if the user has no connection since
 * "grace" ms and goes offline now (to be announced).
 */
ngx_int_t ngx_foko_chat_presence_expire(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *user, ngx_msec_t grace);

/*
 * Drops the counts of workers that died; the users left offline by that
 * go to "users" (24 bytes each, up to "max"), their number is returned.
 */
ngx_uint_t ngx_foko_chat_presence_sweep(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *users, ngx_uint_t max);

/* with the zone locked */
ngx_uint_t ngx_foko_chat_presence_online_locked(ngx_foko_chat_sh_t *sh,
    u_char *user);
ngx_uint_t ngx_foko_chat_presence_online(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *user);


#endif /* _NGX_FOKO_CHAT_PRESENCE_H_INCLUDED_ */
