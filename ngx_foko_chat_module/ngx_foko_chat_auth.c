
/*
 * Foko chat: accounts: sign-up, sign-in, the caller's account, the user
 * search (the other files are listed in ngx_foko_chat_auth_int.h).
 *
 * Each call is a short chain of steps on one heap task: validation on the
 * event loop, then MongoDB on the storage pool and argon2id on the hash
 * pool, each step's completion deciding the next.  Failed sign-ins are
 * counted per account and per client address in the shared zone; an
 * unknown email costs the same hashing as a wrong password and gets the
 * same answer.
 */


#include "ngx_foko_chat_auth_int.h"
#include "ngx_foko_chat_limit.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_redis.h"
#include "ngx_foko_chat_users.h"


static ngx_int_t ngx_foko_chat_auth_signup_counted(ngx_http_request_t *r,
    ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_signup_hashed(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_signup_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_login_counted(ngx_http_request_t *r,
    ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_login_found(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_login_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_caller(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx, ngx_uint_t with_token);
static ngx_int_t ngx_foko_chat_auth_caller_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_caller_send(ngx_http_request_t *r,
    ngx_foko_chat_auth_op_t *op);
static ngx_int_t ngx_foko_chat_auth_users_done(ngx_foko_chat_task_t *task);


/* the account's and the address's limits of each kind of attempt */

static ngx_uint_t  ngx_foko_chat_login_limits[] = {
    NGX_FOKO_CHAT_LIMIT_LOGIN_ACCOUNT, NGX_FOKO_CHAT_LIMIT_LOGIN_ADDRESS
};

static ngx_uint_t  ngx_foko_chat_signup_limits[] = {
    0, NGX_FOKO_CHAT_LIMIT_SIGNUP_ADDRESS
};


/* POST /api/auth/signup {email, password, username} */

ngx_int_t
ngx_foko_chat_auth_signup(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
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

    return ngx_foko_chat_auth_limited(r, task, "signup", NULL,
                                      ngx_foko_chat_signup_limits,
                                      ngx_foko_chat_auth_signup_counted);
}


static ngx_int_t
ngx_foko_chat_auth_signup_counted(ngx_http_request_t *r,
    ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->user.created = (int64_t) ngx_time() * 1000;

    if (ngx_foko_chat_auth_hashing(r, task, ngx_foko_chat_auth_hash_run,
                                   ngx_foko_chat_auth_signup_hashed)
        != NGX_OK)
    {
        return ngx_foko_chat_auth_unavailable(r, NULL);
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_foko_chat_auth_signup_hashed(ngx_foko_chat_task_t *task)
{
    return ngx_foko_chat_auth_hashed(task, ngx_foko_chat_auth_insert_run,
                                     ngx_foko_chat_auth_signup_done);
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
        return ngx_foko_chat_json_send_err(task->request,
                                           NGX_FOKO_CHAT_E_EMAIL_TAKEN,
                                           NULL, NULL);
    }

    if (op->rc == NGX_BUSY) {
        return ngx_foko_chat_json_send_err(task->request,
                                           NGX_FOKO_CHAT_E_USERNAME_TAKEN,
                                           "username", NULL);
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

    return ngx_foko_chat_auth_limited(r, task, "login", op->user.email,
                                      ngx_foko_chat_login_limits,
                                      ngx_foko_chat_auth_login_counted);
}


static ngx_int_t
ngx_foko_chat_auth_login_counted(ngx_http_request_t *r,
    ngx_foko_chat_task_t *task)
{
    if (ngx_foko_chat_auth_storage(r, task, ngx_foko_chat_auth_by_email_run,
                                   ngx_foko_chat_auth_login_found)
        != NGX_OK)
    {
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

    return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_CREDENTIALS,
                                       NULL, NULL);
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
    ngx_int_t                 rc;
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

    /*
     * the zone's copy, which a reset or an accepted invitation forgets;
     * with Redis another host may reset the password: MongoDB is read
     */

    if (!ngx_foko_chat_redis_on()
        && ngx_foko_chat_users_get(ngx_foko_chat_shm_get(r), op->user.id,
                                   NULL, NULL, &op->user)
           == NGX_OK)
    {
        ngx_foko_chat_stat_inc(accounts_zone);
        rc = ngx_foko_chat_auth_caller_send(r, op);
        ngx_foko_chat_task_free(task);
        return rc;
    }

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

    ngx_foko_chat_stat_inc(accounts_mongo);

    return ngx_foko_chat_auth_caller_send(task->request, op);
}


/* the account read: gone, of another password version, or the answer */

static ngx_int_t
ngx_foko_chat_auth_caller_send(ngx_http_request_t *r,
    ngx_foko_chat_auth_op_t *op)
{
    if (op->rc == NGX_DECLINED || op->user.invited) {
        return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_ACCOUNT_GONE,
                                           NULL, NULL);
    }

    if (op->token_ver >= 0 && op->token_ver != op->user.ver) {
        return ngx_foko_chat_json_send_err(r,
                                           NGX_FOKO_CHAT_E_PASSWORD_CHANGED,
                                           NULL, NULL);
    }

    return ngx_foko_chat_auth_send_session(r, NGX_HTTP_OK, &op->user,
                                           op->with_token);
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

        /*
         * usernames are UTF-8: anything else matches none, and MongoDB
         * refuses it in a query
         */

        if (!ngx_foko_chat_utf8_valid(op->query, dst - op->query)) {
            ngx_foko_chat_task_free(task);
            return ngx_foko_chat_json_send_invalid(r, "q",
                                                   "must be UTF-8");
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
