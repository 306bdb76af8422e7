
/*
 * Foko chat: password hashing with argon2id.
 */


#ifndef _NGX_FOKO_CHAT_HASH_H_INCLUDED_
#define _NGX_FOKO_CHAT_HASH_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_task.h"


#define NGX_FOKO_CHAT_HASH_LEN       160     /* an encoded argon2id hash */
#define NGX_FOKO_CHAT_PASSWORD_MIN   8
#define NGX_FOKO_CHAT_PASSWORD_MAX   256


char *ngx_foko_chat_hash_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void ngx_foko_chat_hash_init_conf(ngx_foko_chat_hash_conf_t *hcf);

/* event loop: runs a task on the hash pool, at most "concurrency" at once */
ngx_int_t ngx_foko_chat_hash_post(ngx_foko_chat_task_t *task,
    ngx_http_request_t *r);

/* thread side */
ngx_int_t ngx_foko_chat_hash_make(ngx_foko_chat_hash_conf_t *hcf,
    ngx_str_t *password, u_char *out);
ngx_int_t ngx_foko_chat_hash_verify(ngx_foko_chat_hash_conf_t *hcf,
    u_char *encoded, ngx_str_t *password);


#endif /* _NGX_FOKO_CHAT_HASH_H_INCLUDED_ */
