
/*
 * Foko chat: accounts: sign-up, sign-in, tokens, password recovery.
 *
 * Each call is a short chain of steps on one heap task: validation on the
 * event loop, then MongoDB on the storage pool and argon2id on the hash
 * pool, each step's completion deciding the next.  Failed sign-ins are
 * counted per account and per client address in the shared zone; an
 * unknown email costs the same hashing as a wrong password and gets the
 * same answer.
 */


#include "ngx_foko_chat_auth.h"
#include "ngx_foko_chat_hash.h"
#include "ngx_foko_chat_json.h"
#include "ngx_foko_chat_limit.h"
#include "ngx_foko_chat_mail.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_store.h"


#define NGX_FOKO_CHAT_USERNAME_CHARS   32
#define NGX_FOKO_CHAT_QUERY_MAX        64


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
    unsigned                   with_token:1;
} ngx_foko_chat_auth_op_t;


static ngx_foko_chat_task_t *ngx_foko_chat_auth_task(ngx_http_request_t *r);
static ngx_int_t ngx_foko_chat_auth_redeem(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx, const char *kind);
static ngx_int_t ngx_foko_chat_auth_storage(ngx_http_request_t *r,
    ngx_foko_chat_task_t *task, ngx_foko_chat_task_run_pt run,
    ngx_foko_chat_task_done_pt done);
static ngx_int_t ngx_foko_chat_auth_hashing(ngx_http_request_t *r,
    ngx_foko_chat_task_t *task, ngx_foko_chat_task_run_pt run,
    ngx_foko_chat_task_done_pt done);
static ngx_int_t ngx_foko_chat_auth_unavailable(ngx_http_request_t *r,
    ngx_foko_chat_auth_op_t *op);
static ngx_int_t ngx_foko_chat_auth_send_session(ngx_http_request_t *r,
    ngx_uint_t status, ngx_foko_chat_user_t *user, ngx_uint_t with_token);
static const char *ngx_foko_chat_auth_password(json_t *body,
    ngx_foko_chat_auth_op_t *op, ngx_uint_t strict);
static const char *ngx_foko_chat_auth_username(json_t *body, u_char *out);
static ngx_uint_t ngx_foko_chat_auth_limited(ngx_http_request_t *r,
    const char *what, u_char *email, ngx_uint_t *limits, ngx_int_t *rc);
static ngx_str_t *ngx_foko_chat_auth_key(ngx_http_request_t *r,
    const char *what, ngx_uint_t which, u_char *email);

static void ngx_foko_chat_auth_hash_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static void ngx_foko_chat_auth_verify_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static void ngx_foko_chat_auth_insert_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static void ngx_foko_chat_auth_by_email_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static void ngx_foko_chat_auth_by_id_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static void ngx_foko_chat_auth_set_password_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static void ngx_foko_chat_auth_search_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);

static ngx_int_t ngx_foko_chat_auth_signup_hashed(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_signup_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_login_found(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_login_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_caller(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx, ngx_uint_t with_token);
static ngx_int_t ngx_foko_chat_auth_caller_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_users_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_forgot_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_reset_hashed(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_reset_done(ngx_foko_chat_task_t *task);


/* which counter: account or client address, of sign-ins or recoveries */

#define NGX_FOKO_CHAT_LIMIT_ACCOUNT   0
#define NGX_FOKO_CHAT_LIMIT_ADDRESS   1


/* the account's and the address's limits of each kind of attempt */

static ngx_uint_t  ngx_foko_chat_login_limits[] = {
    NGX_FOKO_CHAT_LIMIT_LOGIN_ACCOUNT, NGX_FOKO_CHAT_LIMIT_LOGIN_ADDRESS
};

static ngx_uint_t  ngx_foko_chat_forgot_limits[] = {
    NGX_FOKO_CHAT_LIMIT_FORGOT_ACCOUNT, NGX_FOKO_CHAT_LIMIT_FORGOT_ADDRESS
};

static ngx_uint_t  ngx_foko_chat_signup_limits[] = {
    0, NGX_FOKO_CHAT_LIMIT_SIGNUP_ADDRESS
};


/* POST /api/auth/signup {email, password, username} */

ngx_int_t
ngx_foko_chat_auth_signup(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_int_t                 rc;
    const char               *field, *problem;
    ngx_foko_chat_task_t     *task;
    ngx_foko_chat_auth_op_t  *op;

    task = ngx_foko_chat_auth_task(r);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;

    field = "email";
    problem = ngx_foko_chat_auth_email(ctx->body, op->user.email, 1);

    if (problem == NULL) {
        field = "password";
        problem = ngx_foko_chat_auth_password(ctx->body, op, 1);
    }

    if (problem == NULL) {
        field = "username";
        problem = ngx_foko_chat_auth_username(ctx->body, op->user.username);
    }

    if (problem) {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_invalid(r, field, problem);
    }

    /* hashing is costly: sign-ups are limited per client address */

    if (ngx_foko_chat_auth_limited(r, "signup", NULL,
                                   ngx_foko_chat_signup_limits, &rc))
    {
        ngx_foko_chat_task_free(task);
        return rc;
    }

    op->user.created = (int64_t) ngx_time() * 1000;

    if (ngx_foko_chat_auth_hashing(r, task, ngx_foko_chat_auth_hash_run,
                                   ngx_foko_chat_auth_signup_hashed)
        != NGX_OK)
    {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_auth_unavailable(r, NULL);
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_foko_chat_auth_signup_hashed(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    if (task->request == NULL) {
        return NGX_OK;
    }

    if (task->failed || op->rc != NGX_OK) {
        return ngx_foko_chat_auth_unavailable(task->request, op);
    }

    if (ngx_foko_chat_auth_storage(task->request, task,
                                   ngx_foko_chat_auth_insert_run,
                                   ngx_foko_chat_auth_signup_done)
        != NGX_OK)
    {
        return ngx_foko_chat_auth_unavailable(task->request, NULL);
    }

    return NGX_AGAIN;
}


static ngx_int_t
ngx_foko_chat_auth_signup_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    if (task->request == NULL) {
        return NGX_OK;
    }

    if (task->failed || op->rc == NGX_ERROR) {
        return ngx_foko_chat_auth_unavailable(task->request, op);
    }

    if (op->rc == NGX_DECLINED) {
        return ngx_foko_chat_json_send_error(task->request,
                                             NGX_HTTP_CONFLICT, "email_taken",
                                             "an account with this email "
                                             "exists already");
    }

    ngx_log_error(NGX_LOG_INFO, task->log, 0,
                  "foko chat: account %s signed up", op->user.id);

    return ngx_foko_chat_auth_send_session(task->request, NGX_HTTP_CREATED,
                                           &op->user, 1);
}


/* POST /api/auth/login {email, password} */

ngx_int_t
ngx_foko_chat_auth_login(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_int_t                 rc;
    const char               *field, *problem;
    ngx_foko_chat_task_t     *task;
    ngx_foko_chat_auth_op_t  *op;

    task = ngx_foko_chat_auth_task(r);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;

    /* not the sign-up rules: a bad email or password is a failed sign-in */

    field = "email";
    problem = ngx_foko_chat_auth_email(ctx->body, op->user.email, 0);

    if (problem == NULL) {
        field = "password";
        problem = ngx_foko_chat_auth_password(ctx->body, op, 0);
    }

    if (problem) {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_invalid(r, field, problem);
    }

    if (ngx_foko_chat_auth_limited(r, "login", op->user.email,
                                   ngx_foko_chat_login_limits, &rc))
    {
        ngx_foko_chat_task_free(task);
        return rc;
    }

    if (ngx_foko_chat_auth_storage(r, task, ngx_foko_chat_auth_by_email_run,
                                   ngx_foko_chat_auth_login_found)
        != NGX_OK)
    {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_auth_unavailable(r, NULL);
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_foko_chat_auth_login_found(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    if (task->request == NULL) {
        return NGX_OK;
    }

    if (task->failed || op->rc == NGX_ERROR) {
        return ngx_foko_chat_auth_unavailable(task->request, op);
    }

    if (op->rc == NGX_DECLINED) {
        /* no such account: verify against nothing, at the same cost */
        op->user.hash[0] = '\0';
    }

    if (ngx_foko_chat_auth_hashing(task->request, task,
                                   ngx_foko_chat_auth_verify_run,
                                   ngx_foko_chat_auth_login_done)
        != NGX_OK)
    {
        return ngx_foko_chat_auth_unavailable(task->request, NULL);
    }

    return NGX_AGAIN;
}


static ngx_int_t
ngx_foko_chat_auth_login_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    ngx_str_t                *key;
    ngx_http_request_t       *r;
    ngx_foko_chat_shm_ctx_t  *shm;

    r = task->request;

    if (r == NULL) {
        return NGX_OK;
    }

    if (task->failed) {
        return ngx_foko_chat_auth_unavailable(r, NULL);
    }

    shm = ngx_foko_chat_shm_get(r);

    if (op->rc == NGX_OK) {
        /* a success clears the account's failures and is not counted */

        key = ngx_foko_chat_auth_key(r, "login", NGX_FOKO_CHAT_LIMIT_ACCOUNT,
                                     op->user.email);
        if (key) {
            ngx_foko_chat_limit_clear(shm, key);
        }

        key = ngx_foko_chat_auth_key(r, "login", NGX_FOKO_CHAT_LIMIT_ADDRESS,
                                     op->user.email);
        if (key) {
            ngx_foko_chat_limit_refund(shm, key);
        }

        return ngx_foko_chat_auth_send_session(r, NGX_HTTP_OK, &op->user, 1);
    }

    ngx_log_error(NGX_LOG_INFO, task->log, 0,
                  "foko chat: failed sign-in for \"%s\"", op->user.email);

    return ngx_foko_chat_json_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                         "invalid_credentials",
                                         "wrong email or password");
}


/* POST /api/auth/refresh: a fresh token for a valid one */

ngx_int_t
ngx_foko_chat_auth_refresh(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
    return ngx_foko_chat_auth_caller(r, ctx, 1);
}


/* GET /api/me */

ngx_int_t
ngx_foko_chat_auth_me(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
    return ngx_foko_chat_auth_caller(r, ctx, 0);
}


/* the caller's account, read from storage: it may have gone meanwhile */

static ngx_int_t
ngx_foko_chat_auth_caller(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx,
    ngx_uint_t with_token)
{
    ngx_foko_chat_task_t     *task;
    ngx_foko_chat_auth_op_t  *op;

    task = ngx_foko_chat_auth_task(r);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;
    op->with_token = with_token;
    op->token_ver = ctx->claims.ver;
    ngx_memcpy(op->user.id, ctx->claims.sub, sizeof(op->user.id));

    if (ngx_foko_chat_auth_storage(r, task, ngx_foko_chat_auth_by_id_run,
                                   ngx_foko_chat_auth_caller_done)
        != NGX_OK)
    {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_auth_unavailable(r, NULL);
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_foko_chat_auth_caller_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    if (task->request == NULL) {
        return NGX_OK;
    }

    if (task->failed || op->rc == NGX_ERROR) {
        return ngx_foko_chat_auth_unavailable(task->request, op);
    }

    if (op->rc == NGX_DECLINED || op->user.invited) {
        return ngx_foko_chat_json_send_error(task->request,
                                             NGX_HTTP_UNAUTHORIZED,
                                             "invalid_token",
                                             "the account no longer exists");
    }

    if (op->token_ver >= 0 && op->token_ver != op->user.ver) {
        return ngx_foko_chat_json_send_error(task->request,
                                             NGX_HTTP_UNAUTHORIZED,
                                             "invalid_token",
                                             "the password has changed "
                                             "since; sign in again");
    }

    return ngx_foko_chat_auth_send_session(task->request, NGX_HTTP_OK,
                                           &op->user, op->with_token);
}


/* GET /api/users?q=<prefix> */

ngx_int_t
ngx_foko_chat_auth_users(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
    u_char                   *dst, *src, *p;
    ngx_str_t                 q;
    ngx_foko_chat_task_t     *task;
    ngx_foko_chat_auth_op_t  *op;

    task = ngx_foko_chat_auth_task(r);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;
    ngx_memcpy(op->user.id, ctx->claims.sub, sizeof(op->user.id));

    if (ngx_http_arg(r, (u_char *) "q", 1, &q) == NGX_OK) {

        /* unescaping never lengthens: a longer q is too long decoded too */

        if (q.len > NGX_FOKO_CHAT_QUERY_MAX) {
            ngx_foko_chat_task_free(task);
            return ngx_foko_chat_json_send_invalid(r, "q", "is too long");
        }

        /* "+" is a space in a query string */

        for (p = q.data; p < q.data + q.len; p++) {
            if (*p == '+') {
                *p = ' ';
            }
        }

        src = q.data;
        dst = op->query;
        ngx_unescape_uri(&dst, &src, q.len, 0);

        if (dst - op->query > NGX_FOKO_CHAT_QUERY_MAX) {
            ngx_foko_chat_task_free(task);
            return ngx_foko_chat_json_send_invalid(r, "q", "is too long");
        }

        *dst = '\0';

        for (p = op->query; p < dst; p++) {
            if (*p < 0x20 || *p == 0x7f) {
                ngx_foko_chat_task_free(task);
                return ngx_foko_chat_json_send_invalid(r, "q",
                                      "must not contain control characters");
            }
        }
    }

    if (ngx_foko_chat_auth_storage(r, task, ngx_foko_chat_auth_search_run,
                                   ngx_foko_chat_auth_users_done)
        != NGX_OK)
    {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_auth_unavailable(r, NULL);
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_foko_chat_auth_users_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    json_t  *found;

    found = op->found;
    op->found = NULL;

    if (task->request == NULL) {
        json_decref(found);
        return NGX_OK;
    }

    if (task->failed || op->rc != NGX_OK) {
        json_decref(found);
        return ngx_foko_chat_auth_unavailable(task->request, op);
    }

    return ngx_foko_chat_json_send(task->request, NGX_HTTP_OK, found);
}


/*
 * POST /api/auth/password/forgot {email}: 202 at once, whether or not the
 * account exists; the lookup and the mail follow on their own.
 */

ngx_int_t
ngx_foko_chat_auth_forgot(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_int_t                   rc;
    const char                 *problem;
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_auth_op_t    *op;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

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

    if (ngx_foko_chat_auth_limited(r, "forgot", op->user.email,
                                   ngx_foko_chat_forgot_limits, &rc))
    {
        ngx_foko_chat_task_free(task);
        return rc;
    }

    task->log = ngx_cycle->log;
    task->thread_task.event.log = ngx_cycle->log;
    task->run = ngx_foko_chat_auth_by_email_run;
    task->done = ngx_foko_chat_auth_forgot_done;

    if (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool) != NGX_OK) {
        ngx_foko_chat_task_free(task);
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
        return ngx_foko_chat_json_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "invalid_token",
                                             "the link is invalid, used "
                                             "or expired");
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
    ngx_foko_chat_auth_op_t  *op = task->data;

    if (task->request == NULL) {
        return NGX_OK;
    }

    if (task->failed || op->rc != NGX_OK) {
        return ngx_foko_chat_auth_unavailable(task->request, op);
    }

    if (ngx_foko_chat_auth_storage(task->request, task,
                                   ngx_foko_chat_auth_set_password_run,
                                   ngx_foko_chat_auth_reset_done)
        != NGX_OK)
    {
        return ngx_foko_chat_auth_unavailable(task->request, NULL);
    }

    return NGX_AGAIN;
}


static ngx_int_t
ngx_foko_chat_auth_reset_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    if (task->request == NULL) {
        return NGX_OK;
    }

    if (task->failed || op->rc == NGX_ERROR) {
        return ngx_foko_chat_auth_unavailable(task->request, op);
    }

    if (op->rc == NGX_DECLINED) {
        return ngx_foko_chat_json_send_error(task->request,
                                             NGX_HTTP_BAD_REQUEST,
                                             "invalid_token",
                                             "the link is invalid, used "
                                             "or expired");
    }

    ngx_log_error(NGX_LOG_INFO, task->log, 0,
                  "foko chat: account %s %s", op->user.id,
                  ngx_strcmp(op->kind, NGX_FOKO_CHAT_TOKEN_INVITE) == 0
                  ? "accepted its invitation" : "reset its password");

    return ngx_foko_chat_auth_send_session(task->request, NGX_HTTP_OK,
                                           &op->user, 1);
}


ngx_int_t
ngx_foko_chat_auth_bearer(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_str_t                   token;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    if (r->headers_in.authorization == NULL) {
        return NGX_DECLINED;
    }

    token = r->headers_in.authorization->value;

    if (token.len < sizeof("Bearer ") - 1
        || ngx_strncasecmp(token.data, (u_char *) "Bearer ",
                           sizeof("Bearer ") - 1)
           != 0)
    {
        return NGX_DECLINED;
    }

    token.data += sizeof("Bearer ") - 1;
    token.len -= sizeof("Bearer ") - 1;

    while (token.len && token.data[0] == ' ') {
        token.data++;
        token.len--;
    }

    return ngx_foko_chat_jwt_verify(fmcf->jwt, &token,
                                    NGX_FOKO_CHAT_TOKEN_ACCESS, &ctx->claims,
                                    r->connection->log);
}


static ngx_foko_chat_task_t *
ngx_foko_chat_auth_task(ngx_http_request_t *r)
{
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_auth_op_t    *op;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_auth_op_t),
                                     r->connection->log);
    if (task == NULL) {
        return NULL;
    }

    op = task->data;
    op->password.data = op->password_data;
    op->hash = fmcf->hash;

    return task;
}


static ngx_int_t
ngx_foko_chat_auth_storage(ngx_http_request_t *r, ngx_foko_chat_task_t *task,
    ngx_foko_chat_task_run_pt run, ngx_foko_chat_task_done_pt done)
{
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    task->run = run;
    task->done = done;

    return ngx_foko_chat_task_post_request(task, fmcf->storage_pool.pool, r);
}


static ngx_int_t
ngx_foko_chat_auth_hashing(ngx_http_request_t *r, ngx_foko_chat_task_t *task,
    ngx_foko_chat_task_run_pt run, ngx_foko_chat_task_done_pt done)
{
    task->run = run;
    task->done = done;

    return ngx_foko_chat_hash_post(task, r);
}


/* 503: storage failed (logged once), or no thread took the work */

static ngx_int_t
ngx_foko_chat_auth_unavailable(ngx_http_request_t *r,
    ngx_foko_chat_auth_op_t *op)
{
    return ngx_foko_chat_json_send_unavailable(r, op ? op->err : NULL);
}


static ngx_int_t
ngx_foko_chat_auth_send_session(ngx_http_request_t *r, ngx_uint_t status,
    ngx_foko_chat_user_t *user, ngx_uint_t with_token)
{
    char                       *token;
    json_t                     *body;
    ngx_foko_chat_claims_t      claims;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    body = json_pack("{s:o}", "user", ngx_foko_chat_user_json(user, 1));

    if (body == NULL || !with_token) {
        return ngx_foko_chat_json_send(r, status, body);
    }

    ngx_memzero(&claims, sizeof(ngx_foko_chat_claims_t));
    ngx_memcpy(claims.sub, user->id, sizeof(claims.sub));
    claims.name_len = ngx_strlen(user->username);
    ngx_memcpy(claims.name, user->username, claims.name_len + 1);

    /* a password reset bumps the version: older tokens stop working */
    claims.ver = user->ver;

    token = ngx_foko_chat_jwt_issue(fmcf->jwt, NGX_FOKO_CHAT_TOKEN_ACCESS,
                                    &claims, fmcf->jwt->ttl);

    if (token == NULL
        || json_object_set_new(body, "token", json_string(token)) != 0)
    {
        free(token);
        json_decref(body);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    free(token);

    return ngx_foko_chat_json_send(r, status, body);
}


/*
 * An email: one "@", a dot in the domain, no spaces or controls; stored
 * lowercased.  "strict" is for sign-up and recovery; a sign-in only needs a
 * non-empty string, so that every unknown email gets the same 401.
 */

const char *
ngx_foko_chat_auth_email(json_t *body, u_char *out, ngx_uint_t strict)
{
    u_char      *p, *at, *dot, *end;
    ngx_str_t    email;
    const char  *problem;

    problem = ngx_foko_chat_json_string(body, "email", 1,
                                        NGX_FOKO_CHAT_EMAIL_MAX, 0, &email);
    if (problem) {
        return problem;
    }

    if (strict) {
        at = NULL;
        dot = NULL;
        end = email.data + email.len;

        for (p = email.data; p < end; p++) {
            if (*p <= ' ' || *p >= 0x7f
                || ngx_strchr("\"(),:;<>[\\]", *p) != NULL)
            {
                return "is not a valid email address";
            }

            if (*p == '@') {
                if (at) {
                    return "is not a valid email address";
                }

                at = p;

            } else if (*p == '.' && at) {
                dot = p;
            }
        }

        if (at == NULL || at == email.data || dot == NULL
            || dot == at + 1 || dot == end - 1)
        {
            return "is not a valid email address";
        }
    }

    ngx_strlow(out, email.data, email.len);
    out[email.len] = '\0';

    return NULL;
}


static const char *
ngx_foko_chat_auth_password(json_t *body, ngx_foko_chat_auth_op_t *op,
    ngx_uint_t strict)
{
    ngx_str_t    password;
    const char  *problem;

    problem = ngx_foko_chat_json_string(body, "password",
                                        strict ? NGX_FOKO_CHAT_PASSWORD_MIN
                                               : 1,
                                        NGX_FOKO_CHAT_PASSWORD_MAX, 0,
                                        &password);
    if (problem) {
        return problem;
    }

    ngx_memcpy(op->password_data, password.data, password.len);
    op->password.len = password.len;

    return NULL;
}


static const char *
ngx_foko_chat_auth_username(json_t *body, u_char *out)
{
    return ngx_foko_chat_json_name(body, "username",
                                   NGX_FOKO_CHAT_USERNAME_CHARS,
                                   NGX_FOKO_CHAT_USERNAME_MAX, out);
}


/*
 * Counts an attempt against the account (if "email") and the client
 * address, under the limits numbered limits[0] and limits[1].  Returns 0
 * if neither is over its limit; else 1, with the 429 sent and *rc what
 * that returned.
 * Attempts are counted as they arrive, so that a burst in flight cannot
 * pass the limit; a successful one is taken back by the caller.
 */

static ngx_uint_t
ngx_foko_chat_auth_limited(ngx_http_request_t *r, const char *what,
    u_char *email, ngx_uint_t *limits, ngx_int_t *rc)
{
    time_t                      wait, w;
    ngx_str_t                  *key;
    ngx_uint_t                  i;
    ngx_table_elt_t            *h;
    ngx_foko_chat_shm_ctx_t    *shm;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);
    shm = ngx_foko_chat_shm_get(r);
    wait = 0;

    for (i = (email ? 0 : 1); i < 2; i++) {
        key = ngx_foko_chat_auth_key(r, what, i, email);
        if (key == NULL) {
            *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            return 1;
        }

        w = ngx_foko_chat_limit_take(shm, key,
                                     &fmcf->limits[limits[i]]);

        if (w > wait) {
            wait = w;
        }
    }

    if (wait == 0) {
        return 0;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "foko chat: rate limited %s for \"%s\"", what,
                  email ? email : (u_char *) "");

    *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return 1;
    }

    h->value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (h->value.data == NULL) {
        return 1;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");
    h->value.len = ngx_sprintf(h->value.data, "%T", wait) - h->value.data;

    *rc = ngx_foko_chat_json_send_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                        "rate_limited",
                                        "too many attempts; "
                                        "try again later");
    return 1;
}


static ngx_str_t *
ngx_foko_chat_auth_key(ngx_http_request_t *r, const char *what,
    ngx_uint_t which, u_char *email)
{
    size_t      len;
    ngx_str_t  *key;

    key = ngx_palloc(r->pool, sizeof(ngx_str_t));
    if (key == NULL) {
        return NULL;
    }

    if (which == NGX_FOKO_CHAT_LIMIT_ACCOUNT) {
        len = ngx_strlen(email);

    } else {
        len = r->connection->addr_text.len;
    }

    len += ngx_strlen(what) + sizeof(":address:") - 1;

    key->data = ngx_pnalloc(r->pool, len);
    if (key->data == NULL) {
        return NULL;
    }

    if (which == NGX_FOKO_CHAT_LIMIT_ACCOUNT) {
        key->len = ngx_sprintf(key->data, "%s:account:%s", what, email)
                   - key->data;

    } else {
        key->len = ngx_sprintf(key->data, "%s:address:%V", what,
                               &r->connection->addr_text)
                   - key->data;
    }

    return key;
}


static void
ngx_foko_chat_auth_hash_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->rc = ngx_foko_chat_hash_make(&op->hash, &op->password,
                                     op->user.hash);

    ngx_explicit_memzero(op->password_data, sizeof(op->password_data));

    if (op->rc != NGX_OK) {
        ngx_cpystrn(op->err, (u_char *) "password hashing failed",
                    NGX_FOKO_CHAT_ERR_LEN);
    }
}


static void
ngx_foko_chat_auth_verify_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->rc = ngx_foko_chat_hash_verify(&op->hash, op->user.hash,
                                       &op->password);

    ngx_explicit_memzero(op->password_data, sizeof(op->password_data));
}


static void
ngx_foko_chat_auth_insert_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->rc = ngx_foko_chat_store_user_insert(&op->user, op->err);
}


static void
ngx_foko_chat_auth_by_email_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->rc = ngx_foko_chat_store_user_by_email(&op->user, op->err);
}


static void
ngx_foko_chat_auth_by_id_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->rc = ngx_foko_chat_store_user_by_id(&op->user, op->err);
}


static void
ngx_foko_chat_auth_set_password_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->rc = ngx_foko_chat_store_user_set_password(&op->user, op->err);
}


static void
ngx_foko_chat_auth_search_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->rc = ngx_foko_chat_store_user_search(op->query, op->user.id,
                                             &op->found, op->err);
}
