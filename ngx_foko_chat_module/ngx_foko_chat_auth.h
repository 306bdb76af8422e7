
/*
 * Foko chat: accounts: sign-up, sign-in, tokens, password recovery.
 */


#ifndef _NGX_FOKO_CHAT_AUTH_H_INCLUDED_
#define _NGX_FOKO_CHAT_AUTH_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_api.h"


/* reset tokens live this long; invitations a week */
#define NGX_FOKO_CHAT_RESET_TTL        (15 * 60)
#define NGX_FOKO_CHAT_INVITE_TTL       (7 * 86400)


ngx_int_t ngx_foko_chat_auth_signup(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_auth_login(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_auth_refresh(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_auth_me(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_auth_users(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_auth_forgot(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_auth_reset(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
ngx_int_t ngx_foko_chat_auth_accept(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);

/*
 * The "email" of a body, lowercased into out (NGX_FOKO_CHAT_EMAIL_MAX + 1
 * bytes): NULL, or what is wrong with it.  "strict" is the sign-up rule
 * (ASCII, one "@", a dot in the domain), which mail can be sent to.
 */
const char *ngx_foko_chat_auth_email(json_t *body, u_char *out,
    ngx_uint_t strict);

/* checks "Authorization: Bearer"; NGX_OK fills ctx->claims */
ngx_int_t ngx_foko_chat_auth_bearer(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);


#endif /* _NGX_FOKO_CHAT_AUTH_H_INCLUDED_ */
