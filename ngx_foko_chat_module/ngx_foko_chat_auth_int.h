
/*
 * Foko chat: accounts, the internals their files share.
 *
 *   ngx_foko_chat_auth.c           sign-up, sign-in, the caller's account,
 *                                  the user search
 *   ngx_foko_chat_auth_recovery.c  password recovery and invitations: the
 *                                  mailed link and its redemption
 *   ngx_foko_chat_auth_check.c     what a request may carry (email,
 *                                  password, username) and how often
 *   ngx_foko_chat_auth_steps.c     a call's task and its steps on the
 *                                  pools, the session answer with its
 *                                  token, the bearer check
 */


#ifndef _NGX_FOKO_CHAT_AUTH_INT_H_INCLUDED_
#define _NGX_FOKO_CHAT_AUTH_INT_H_INCLUDED_


#include "ngx_foko_chat_auth.h"
#include "ngx_foko_chat_hash.h"
#include "ngx_foko_chat_json.h"
#include "ngx_foko_chat_store.h"
#include "ngx_foko_chat_task.h"


#define NGX_FOKO_CHAT_QUERY_MAX        64


/* which counter: account or client address, of sign-ins or recoveries */

#define NGX_FOKO_CHAT_LIMIT_ACCOUNT   0
#define NGX_FOKO_CHAT_LIMIT_ADDRESS   1


typedef struct ngx_foko_chat_auth_limit_s  ngx_foko_chat_auth_limit_t;


/* the data of a call's task */
typedef struct {
    ngx_int_t                  rc;
    u_char                     err[NGX_FOKO_CHAT_ERR_LEN];
    ngx_foko_chat_user_t       user;
    ngx_str_t                  password;
    u_char                     password_data[NGX_FOKO_CHAT_PASSWORD_MAX];
    u_char                     query[NGX_FOKO_CHAT_QUERY_MAX + 1];
    json_t                    *found;
    ngx_foko_chat_hash_conf_t  hash;
    long                       token_ver;
    const char                *kind;        /* reset or invite */
    ngx_foko_chat_auth_limit_t  *limit;     /* while counted in Redis */
    unsigned                   with_token:1;
} ngx_foko_chat_auth_op_t;


/*
 * What a call does once its attempt is counted and not over the limit:
 * the next step posted (NGX_DONE), or the answer's rc; it never frees the
 * task.
 */
typedef ngx_int_t (*ngx_foko_chat_auth_next_pt)(ngx_http_request_t *r,
    ngx_foko_chat_task_t *task);


/* ngx_foko_chat_auth_steps.c, on the event loop */

ngx_foko_chat_task_t *ngx_foko_chat_auth_task(ngx_http_request_t *r);
/* the next step on the storage pool or the hash pool */
ngx_int_t ngx_foko_chat_auth_storage(ngx_http_request_t *r,
    ngx_foko_chat_task_t *task, ngx_foko_chat_task_run_pt run,
    ngx_foko_chat_task_done_pt done);
ngx_int_t ngx_foko_chat_auth_hashing(ngx_http_request_t *r,
    ngx_foko_chat_task_t *task, ngx_foko_chat_task_run_pt run,
    ngx_foko_chat_task_done_pt done);
ngx_int_t ngx_foko_chat_auth_hashed(ngx_foko_chat_task_t *task,
    ngx_foko_chat_task_run_pt run, ngx_foko_chat_task_done_pt done);
ngx_int_t ngx_foko_chat_auth_unavailable(ngx_http_request_t *r,
    ngx_foko_chat_auth_op_t *op);
/* {user, token?} */
ngx_int_t ngx_foko_chat_auth_send_session(ngx_http_request_t *r,
    ngx_uint_t status, ngx_foko_chat_user_t *user, ngx_uint_t with_token);

/* ngx_foko_chat_auth_steps.c, the runs on a pool thread */

void ngx_foko_chat_auth_hash_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
void ngx_foko_chat_auth_verify_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
void ngx_foko_chat_auth_insert_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
void ngx_foko_chat_auth_by_email_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
void ngx_foko_chat_auth_by_id_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
void ngx_foko_chat_auth_set_password_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
void ngx_foko_chat_auth_search_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);

/* ngx_foko_chat_auth_check.c: NULL, or what is wrong with the field */

const char *ngx_foko_chat_auth_password(json_t *body,
    ngx_foko_chat_auth_op_t *op, ngx_uint_t strict);
const char *ngx_foko_chat_auth_username(json_t *body, u_char *out);
ngx_int_t ngx_foko_chat_auth_limited(ngx_http_request_t *r,
    ngx_foko_chat_task_t *task, const char *what, u_char *email,
    ngx_uint_t *limits, ngx_foko_chat_auth_next_pt next);
ngx_str_t *ngx_foko_chat_auth_key(ngx_http_request_t *r,
    const char *what, ngx_uint_t which, u_char *email);


#endif /* _NGX_FOKO_CHAT_AUTH_INT_H_INCLUDED_ */
