
/*
 * Foko chat: accounts: the steps of a call.  A call is one heap task that
 * goes from the event loop to the storage pool or the hash pool and back,
 * each completion choosing the next step; the runs here are the thread
 * side of each, one call of the store or the hash.  A sign-in's answer is
 * the session: the account and a fresh token.
 */


#include "ngx_foko_chat_auth_int.h"


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


ngx_foko_chat_task_t *
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


ngx_int_t
ngx_foko_chat_auth_storage(ngx_http_request_t *r, ngx_foko_chat_task_t *task,
    ngx_foko_chat_task_run_pt run, ngx_foko_chat_task_done_pt done)
{
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    task->run = run;
    task->done = done;

    return ngx_foko_chat_task_post_request(task, fmcf->storage_pool.pool, r);
}


ngx_int_t
ngx_foko_chat_auth_hashing(ngx_http_request_t *r, ngx_foko_chat_task_t *task,
    ngx_foko_chat_task_run_pt run, ngx_foko_chat_task_done_pt done)
{
    task->run = run;
    task->done = done;

    return ngx_foko_chat_hash_post(task, r);
}


/*
 * The completion of a hash that a storage step follows (a sign-up's
 * insert, a reset's new password): that step, unless the hash failed or
 * the client is gone.
 */

ngx_int_t
ngx_foko_chat_auth_hashed(ngx_foko_chat_task_t *task,
    ngx_foko_chat_task_run_pt run, ngx_foko_chat_task_done_pt done)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    if (task->request == NULL) {
        return NGX_OK;
    }

    if (task->failed || op->rc != NGX_OK) {
        return ngx_foko_chat_auth_unavailable(task->request, op);
    }

    if (ngx_foko_chat_auth_storage(task->request, task, run, done)
        != NGX_OK)
    {
        return ngx_foko_chat_auth_unavailable(task->request, NULL);
    }

    return NGX_AGAIN;
}


/* 503: storage failed (logged once), or no thread took the work */

ngx_int_t
ngx_foko_chat_auth_unavailable(ngx_http_request_t *r,
    ngx_foko_chat_auth_op_t *op)
{
    return ngx_foko_chat_json_send_unavailable(r, op ? op->err : NULL);
}


ngx_int_t
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


void
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


void
ngx_foko_chat_auth_verify_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->rc = ngx_foko_chat_hash_verify(&op->hash, op->user.hash,
                                       &op->password);

    ngx_explicit_memzero(op->password_data, sizeof(op->password_data));
}


void
ngx_foko_chat_auth_insert_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->rc = ngx_foko_chat_store_user_insert(&op->user, op->err);
}


void
ngx_foko_chat_auth_by_email_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->rc = ngx_foko_chat_store_user_by_email(&op->user, op->err);
}


void
ngx_foko_chat_auth_by_id_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->rc = ngx_foko_chat_store_user_by_id(&op->user, op->err);
}


void
ngx_foko_chat_auth_set_password_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->rc = ngx_foko_chat_store_user_set_password(&op->user, op->err);
}


void
ngx_foko_chat_auth_search_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    op->rc = ngx_foko_chat_store_user_search(op->query, op->user.id,
                                             &op->found, op->err);
}

