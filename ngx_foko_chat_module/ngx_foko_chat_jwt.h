
/*
 * Foko chat: JSON Web Tokens.
 */


#ifndef _NGX_FOKO_CHAT_JWT_H_INCLUDED_
#define _NGX_FOKO_CHAT_JWT_H_INCLUDED_


#include <jwt.h>

#include "ngx_foko_chat.h"


#define NGX_FOKO_CHAT_JWT_SECRET_MIN   32
#define NGX_FOKO_CHAT_JWT_TTL          86400
#define NGX_FOKO_CHAT_JWT_MAX_LEN      4096



/* what a token is for: an access token is never accepted as another kind */
#define NGX_FOKO_CHAT_TOKEN_ACCESS     "access"
#define NGX_FOKO_CHAT_TOKEN_RESET      "reset"
#define NGX_FOKO_CHAT_TOKEN_INVITE     "invite"


struct ngx_foko_chat_jwt_conf_s {
    jwt_alg_t                  alg;
    ngx_str_t                  sign_key;     /* secret or private key PEM */
    ngx_str_t                  verify_key;   /* secret or public key PEM */
    time_t                     ttl;
};


typedef struct {
    u_char                     sub[NGX_FOKO_CHAT_OID_LEN + 1];
    u_char                     name[NGX_FOKO_CHAT_USERNAME_MAX + 1];
    size_t                     name_len;
    long                       ver;          /* password version, or -1 */
    time_t                     exp;
} ngx_foko_chat_claims_t;


char *ngx_foko_chat_jwt_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_foko_chat_jwt_key_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_foko_chat_jwt_ttl(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_foko_chat_jwt_init_conf(ngx_conf_t *cf,
    ngx_foko_chat_main_conf_t *fmcf);

/* a token string to be released with free(), or NULL */
char *ngx_foko_chat_jwt_issue(ngx_foko_chat_jwt_conf_t *conf,
    const char *kind, ngx_foko_chat_claims_t *claims, time_t ttl);
ngx_int_t ngx_foko_chat_jwt_verify(ngx_foko_chat_jwt_conf_t *conf,
    ngx_str_t *token, const char *kind, ngx_foko_chat_claims_t *claims,
    ngx_log_t *log);


#endif /* _NGX_FOKO_CHAT_JWT_H_INCLUDED_ */
