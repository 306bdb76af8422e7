
/*
 * Foko chat: accounts: password recovery and invitations.  A recovery is
 * answered at once and mails its link on its own; redeeming a link (a
 * reset, or an invitation accepted) sets the password and signs in.
 */


#include "ngx_foko_chat_auth_int.h"
#include "ngx_foko_chat_mail.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_users.h"


static ngx_int_t ngx_foko_chat_auth_forgot_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_redeem(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx, const char *kind);
static ngx_int_t ngx_foko_chat_auth_forgot_counted(ngx_http_request_t *r,
    ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_reset_hashed(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_reset_done(ngx_foko_chat_task_t *task);


/* the account's and the address's limits of recoveries */

static ngx_uint_t  ngx_foko_chat_forgot_limits[] = {
    NGX_FOKO_CHAT_LIMIT_FORGOT_ACCOUNT, NGX_FOKO_CHAT_LIMIT_FORGOT_ADDRESS
};


/*
 * POST /api/auth/password/forgot {email}: 202 at once, whether or not the
 * account exists; the lookup and the mail follow on their own.
 */

ngx_int_t
ngx_foko_chat_auth_forgot(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
    const char                 *problem;
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_auth_op_t    *op;

    task = ngx_foko_chat_auth_task(r);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;

    problem = ngx_foko_chat_auth_email(ctx->body, op->user.email, 1);
    if (problem) {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_invalid(r, "email", problem);
    }

    return ngx_foko_chat_auth_limited(r, task, "forgot", op->user.email,
                                      ngx_foko_chat_forgot_limits,
                                      ngx_foko_chat_auth_forgot_counted);
}


/* the lookup goes on without the request, which is answered now */

static ngx_int_t
ngx_foko_chat_auth_forgot_counted(ngx_http_request_t *r,
    ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    if (task->request) {
        /* counted in Redis, as a step of the request */
        task->cleanup->handler = NULL;
        task->request = NULL;
    }

    task->log = ngx_cycle->log;
    task->thread_task.event.log = ngx_cycle->log;
    task->run = ngx_foko_chat_auth_by_email_run;
    task->done = ngx_foko_chat_auth_forgot_done;

    if (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool) != NGX_OK) {
        return ngx_foko_chat_auth_unavailable(r, NULL);
    }

    return ngx_foko_chat_json_send(r, NGX_HTTP_ACCEPTED,
                                   json_pack("{s:s}", "status", "accepted"));
}


static ngx_int_t
ngx_foko_chat_auth_forgot_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    u_char                     *p;
    char                       *token;
    ngx_str_t                   to, link, name;
    ngx_foko_chat_claims_t      claims;
    ngx_foko_chat_main_conf_t  *fmcf;

    if (task->failed || op->rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, task->log, 0,
                      "foko chat: password reset not sent: %s",
                      task->failed ? (u_char *) "thread pool is full"
                                   : op->err);
        return NGX_OK;
    }

    if (op->rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_INFO, task->log, 0,
                      "foko chat: password reset asked for an unknown "
                      "account");
        return NGX_OK;
    }

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);

    ngx_memzero(&claims, sizeof(ngx_foko_chat_claims_t));
    ngx_memcpy(claims.sub, op->user.id, sizeof(claims.sub));
    claims.ver = op->user.ver;

    token = ngx_foko_chat_jwt_issue(fmcf->jwt, NGX_FOKO_CHAT_TOKEN_RESET,
                                    &claims, NGX_FOKO_CHAT_RESET_TTL);
    if (token == NULL) {
        ngx_log_error(NGX_LOG_ALERT, task->log, 0,
                      "foko chat: cannot sign a reset token");
        return NGX_OK;
    }

    link.len = sizeof("/reset-password?token=") - 1 + ngx_strlen(token);
    link.data = ngx_alloc(link.len, task->log);

    if (link.data) {
        p = ngx_cpymem(link.data, "/reset-password?token=",
                       sizeof("/reset-password?token=") - 1);
        ngx_memcpy(p, token, ngx_strlen(token));

        to.data = op->user.email;
        to.len = ngx_strlen(op->user.email);
        name.data = op->user.username;
        name.len = ngx_strlen(op->user.username);

        (void) ngx_foko_chat_mail_send(fmcf, task->log,
                                       NGX_FOKO_CHAT_MAIL_RESET,
                                       &to, &link, &name);
        ngx_free(link.data);
    }

    free(token);

    return NGX_OK;
}


/* POST /api/auth/password/reset {token, password} */

ngx_int_t
ngx_foko_chat_auth_reset(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
    return ngx_foko_chat_auth_redeem(r, ctx, NGX_FOKO_CHAT_TOKEN_RESET);
}


/*
 * POST /api/auth/invite/accept {token, password, username}: an invited
 * account, proven by the link mailed to it, chooses its name and password.
 */

ngx_int_t
ngx_foko_chat_auth_accept(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
    return ngx_foko_chat_auth_redeem(r, ctx, NGX_FOKO_CHAT_TOKEN_INVITE);
}


static ngx_int_t
ngx_foko_chat_auth_redeem(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx,
    const char *kind)
{
    ngx_str_t                   token;
    const char                 *field, *problem;
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_claims_t      claims;
    ngx_foko_chat_auth_op_t    *op;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    problem = ngx_foko_chat_json_string(ctx->body, "token", 1,
                                        NGX_FOKO_CHAT_JWT_MAX_LEN, 0, &token);
    if (problem) {
        return ngx_foko_chat_json_send_invalid(r, "token", problem);
    }

    task = ngx_foko_chat_auth_task(r);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;
    op->kind = kind;

    field = "password";
    problem = ngx_foko_chat_auth_password(ctx->body, op, 1);

    if (problem == NULL
        && ngx_strcmp(kind, NGX_FOKO_CHAT_TOKEN_INVITE) == 0)
    {
        field = "username";
        problem = ngx_foko_chat_auth_username(ctx->body, op->user.username);
    }

    if (problem) {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_invalid(r, field, problem);
    }

    if (ngx_foko_chat_jwt_verify(fmcf->jwt, &token, kind, &claims,
                                 r->connection->log)
        != NGX_OK
        || claims.ver < 0)
    {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_BAD_LINK,
                                           NULL, NULL);
    }

    ngx_memcpy(op->user.id, claims.sub, sizeof(op->user.id));
    op->user.ver = claims.ver;

    if (ngx_foko_chat_auth_hashing(r, task, ngx_foko_chat_auth_hash_run,
                                   ngx_foko_chat_auth_reset_hashed)
        != NGX_OK)
    {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_auth_unavailable(r, NULL);
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_foko_chat_auth_reset_hashed(ngx_foko_chat_task_t *task)
{
    return ngx_foko_chat_auth_hashed(task, ngx_foko_chat_auth_set_password_run,
                                     ngx_foko_chat_auth_reset_done);
}


static ngx_int_t
ngx_foko_chat_auth_reset_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    /*
     * whatever the answer, the version may have moved: the zone's copy
     * goes before anyone is told, and tokens of the old one are refused
     */

    ngx_foko_chat_users_forget(
                         ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle),
                         op->user.id);

    if (task->request == NULL) {
        return NGX_OK;
    }

    if (task->failed || op->rc == NGX_ERROR) {
        return ngx_foko_chat_auth_unavailable(task->request, op);
    }

    if (op->rc == NGX_DECLINED) {
        return ngx_foko_chat_json_send_err(task->request,
                                           NGX_FOKO_CHAT_E_BAD_LINK,
                                           NULL, NULL);
    }

    if (op->rc == NGX_BUSY) {
        return ngx_foko_chat_json_send_err(task->request,
                                           NGX_FOKO_CHAT_E_USERNAME_TAKEN,
                                           "username", NULL);
    }

    ngx_log_error(NGX_LOG_INFO, task->log, 0,
                  "foko chat: account %s %s", op->user.id,
                  ngx_strcmp(op->kind, NGX_FOKO_CHAT_TOKEN_INVITE) == 0
                  ? "accepted its invitation" : "reset its password");

    return ngx_foko_chat_auth_send_session(task->request, NGX_HTTP_OK,
                                           &op->user, 1);
}
