
/*
 * Foko chat: rate limits kept in the shared zone, so that all workers
 * count together.
 */


#ifndef _NGX_FOKO_CHAT_LIMIT_H_INCLUDED_
#define _NGX_FOKO_CHAT_LIMIT_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_shm.h"


#define NGX_FOKO_CHAT_LIMIT_KEY_MAX  255


void ngx_foko_chat_limit_init(ngx_foko_chat_sh_t *sh);

char *ngx_foko_chat_limit_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void ngx_foko_chat_limit_init_conf(ngx_foko_chat_main_conf_t *fmcf);

/* counts an event unless over the limit: 0, or the seconds to wait */
time_t ngx_foko_chat_limit_take(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_str_t *key, ngx_foko_chat_limit_t *limit);

void ngx_foko_chat_limit_refund(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_str_t *key);
void ngx_foko_chat_limit_clear(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_str_t *key);


#endif /* _NGX_FOKO_CHAT_LIMIT_H_INCLUDED_ */
