
/*
 * Foko chat: rate limits kept in the shared zone, so that all workers
 * count together.
 */


#ifndef _NGX_FOKO_CHAT_LIMIT_H_INCLUDED_
#define _NGX_FOKO_CHAT_LIMIT_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_shm.h"


typedef struct {
    ngx_uint_t                 max;          /* events per window */
    time_t                     window;       /* seconds */
} ngx_foko_chat_limit_t;


void ngx_foko_chat_limit_init(ngx_foko_chat_sh_t *sh);

/* 0 if "key" is under its limit, else the seconds until it is again */
time_t ngx_foko_chat_limit_check(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_str_t *key, ngx_foko_chat_limit_t *limit);

/* counts one event for "key" */
void ngx_foko_chat_limit_hit(ngx_foko_chat_shm_ctx_t *ctx, ngx_str_t *key,
    ngx_foko_chat_limit_t *limit);

void ngx_foko_chat_limit_clear(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_str_t *key);


#endif /* _NGX_FOKO_CHAT_LIMIT_H_INCLUDED_ */
