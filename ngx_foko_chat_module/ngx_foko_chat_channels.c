
/*
 * Foko chat: channels and direct conversations.
 *
 * Each call validates its input on the event loop, then one task does the
 * MongoDB work on the storage pool and leaves its answer (a status and a
 * body, or an error) for the completion to send.  Every call checks that
 * the caller is a member; to anyone else a channel does not exist (404,
 * as for an id that was never used).
 */


#include "ngx_foko_chat_channels_int.h"
#include "ngx_foko_chat_event.h"
#include "ngx_foko_chat_auth.h"
#include "ngx_foko_chat_cache.h"
#include "ngx_foko_chat_users.h"
#include "ngx_foko_chat_json.h"
#include "ngx_foko_chat_jwt.h"
#include "ngx_foko_chat_mail.h"
#include "ngx_foko_chat_task.h"
#include "ngx_foko_chat_bus.h"
#include "ngx_foko_chat_presence.h"


static void ngx_foko_chat_channels_thread(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_channels_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_channels_forget(ngx_foko_chat_channel_op_t *op);
static void ngx_foko_chat_channels_invite_mail(ngx_foko_chat_task_t *task);
static const char *ngx_foko_chat_channels_name(json_t *body, u_char *out,
    ngx_uint_t required);

static void ngx_foko_chat_channels_create_run(
    ngx_foko_chat_channel_op_t *op);
static void ngx_foko_chat_channels_get_run(ngx_foko_chat_channel_op_t *op);
static void ngx_foko_chat_channels_rename_run(
    ngx_foko_chat_channel_op_t *op);
static void ngx_foko_chat_channels_invite_run(
    ngx_foko_chat_channel_op_t *op);
static void ngx_foko_chat_channels_leave_run(ngx_foko_chat_channel_op_t *op);

static ngx_int_t ngx_foko_chat_channels_find_mine(
    ngx_foko_chat_channel_op_t *op);
static void ngx_foko_chat_channels_fail(ngx_foko_chat_channel_op_t *op,
    ngx_foko_chat_err_e e);


/* POST /api/channels {name?, members: [id]} */

ngx_int_t
ngx_foko_chat_channels_create(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    size_t                       i, j, n;
    json_t                      *members, *v;
    ngx_str_t                    id;
    const char                  *problem;
    ngx_foko_chat_task_t        *task;
    ngx_foko_chat_channel_op_t  *op;

    members = json_object_get(ctx->body, "members");

    if (!json_is_array(members)) {
        return ngx_foko_chat_json_send_invalid(r, "members",
                                               "must be an array of ids");
    }

    task = ngx_foko_chat_channels_task(r, ctx);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;

    problem = ngx_foko_chat_channels_name(ctx->body, op->ch.name, 0);
    if (problem) {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_invalid(r, "name", problem);
    }

    n = json_array_size(members);

    if (n > op->max_members) {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_TOO_MANY_MEMBERS,
                                           NULL, NULL);
    }

    /* the creator first, then the others once each */

    op->ch.members = malloc((n + 1) * sizeof(op->ch.members[0]));
    if (op->ch.members == NULL) {
        ngx_foko_chat_task_free(task);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(op->ch.members[0], op->user, NGX_FOKO_CHAT_OID_SIZE);
    op->ch.nmembers = 1;

    for (i = 0; i < n; i++) {
        v = json_array_get(members, i);

        id.data = (u_char *) json_string_value(v);
        id.len = json_is_string(v) ? json_string_length(v) : 0;

        if (!ngx_foko_chat_is_id(&id)) {
            free(op->ch.members);
            ngx_foko_chat_task_free(task);
            return ngx_foko_chat_json_send_invalid(r, "members",
                                                 "must be an array of ids");
        }

        for (j = 0; j < op->ch.nmembers; j++) {
            if (ngx_strncmp(op->ch.members[j], id.data,
                            NGX_FOKO_CHAT_OID_LEN)
                == 0)
            {
                break;
            }
        }

        if (j == op->ch.nmembers) {
            ngx_memcpy(op->ch.members[j], id.data, NGX_FOKO_CHAT_OID_LEN);
            op->ch.members[j][NGX_FOKO_CHAT_OID_LEN] = '\0';
            op->ch.nmembers++;
        }
    }

    if (op->ch.nmembers > op->max_members) {
        free(op->ch.members);
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_TOO_MANY_MEMBERS,
                                           NULL, NULL);
    }

    /*
     * A named channel may start with its creator alone and invite later;
     * no name means a direct conversation, which is between two.
     */

    if (op->ch.name[0] == '\0') {
        if (op->ch.nmembers != 2) {
            free(op->ch.members);
            ngx_foko_chat_task_free(task);
            return ngx_foko_chat_json_send_invalid(r, "name",
                          "is required unless the channel is between two");
        }

        op->ch.direct = 1;
    }

    op->ch.created = (int64_t) ngx_time() * 1000;

    return ngx_foko_chat_channels_start(r, ctx, task,
                                        ngx_foko_chat_channels_create_run);
}


/* GET /api/channels/:id */

ngx_int_t
ngx_foko_chat_channels_get(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    return ngx_foko_chat_channels_start(r, ctx, NULL,
                                        ngx_foko_chat_channels_get_run);
}


/* PATCH /api/channels/:id {name} */

ngx_int_t
ngx_foko_chat_channels_rename(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    const char                  *problem;
    ngx_foko_chat_task_t        *task;
    ngx_foko_chat_channel_op_t  *op;

    task = ngx_foko_chat_channels_task(r, ctx);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;

    problem = ngx_foko_chat_channels_name(ctx->body, op->ch.name, 1);
    if (problem) {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_invalid(r, "name", problem);
    }

    return ngx_foko_chat_channels_start(r, ctx, task,
                                        ngx_foko_chat_channels_rename_run);
}


/* POST /api/channels/:id/invite {email} */

ngx_int_t
ngx_foko_chat_channels_invite(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    const char                  *problem;
    ngx_foko_chat_task_t        *task;
    ngx_foko_chat_channel_op_t  *op;

    task = ngx_foko_chat_channels_task(r, ctx);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = task->data;

    /* the sign-up rule: the address must take mail */

    problem = ngx_foko_chat_auth_email(ctx->body, op->invitee.email, 1);
    if (problem) {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_invalid(r, "email", problem);
    }

    return ngx_foko_chat_channels_start(r, ctx, task,
                                        ngx_foko_chat_channels_invite_run);
}


/* DELETE /api/channels/:id/members/me */

ngx_int_t
ngx_foko_chat_channels_leave(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    return ngx_foko_chat_channels_start(r, ctx, NULL,
                                        ngx_foko_chat_channels_leave_run);
}


ngx_uint_t
ngx_foko_chat_channel_has(ngx_foko_chat_channel_doc_t *ch, u_char *user)
{
    ngx_uint_t  i;

    for (i = 0; i < ch->nmembers; i++) {
        if (ngx_strncmp(ch->members[i], user, NGX_FOKO_CHAT_OID_LEN) == 0) {
            return 1;
        }
    }

    return 0;
}


ngx_int_t
ngx_foko_chat_send_not_found(ngx_http_request_t *r)
{
    return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_NO_CHANNEL, NULL,
                                       NULL);
}


ngx_foko_chat_task_t *
ngx_foko_chat_channels_task(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_foko_chat_task_t        *task;
    ngx_foko_chat_channel_op_t  *op;
    ngx_foko_chat_main_conf_t   *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_channel_op_t),
                                     r->connection->log);
    if (task == NULL) {
        return NULL;
    }

    op = task->data;

    ngx_memcpy(op->user, ctx->claims.sub, sizeof(op->user));
    ngx_memcpy(op->username, ctx->claims.name, ctx->claims.name_len + 1);
    op->max_members = fmcf->max_members;
    op->error = NGX_FOKO_CHAT_E_NONE;

    if (ctx->nargs) {
        ngx_memcpy(op->channel, ctx->args[0].data, NGX_FOKO_CHAT_OID_LEN);
        ngx_memcpy(op->ch.id, ctx->args[0].data, NGX_FOKO_CHAT_OID_LEN);
    }

    return task;
}


ngx_int_t
ngx_foko_chat_channels_start(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx, ngx_foko_chat_task_t *task,
    ngx_foko_chat_channel_run_pt run)
{
    ngx_foko_chat_channel_op_t  *op;
    ngx_foko_chat_main_conf_t   *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    if (ctx->nargs && !ngx_foko_chat_is_id(&ctx->args[0])) {
        if (task) {
            op = task->data;
            free(op->ch.members);
            ngx_foko_chat_task_free(task);
        }

        return ngx_foko_chat_send_not_found(r);
    }

    if (task == NULL) {
        task = ngx_foko_chat_channels_task(r, ctx);
        if (task == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    op = task->data;
    op->run = run;

    task->run = ngx_foko_chat_channels_thread;
    task->done = ngx_foko_chat_channels_done;

    if (ngx_foko_chat_task_post_request(task, fmcf->storage_pool.pool, r)
        != NGX_OK)
    {
        free(op->ch.members);
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_unavailable(r, NULL);
    }

    return NGX_DONE;
}


static void
ngx_foko_chat_channels_thread(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_channel_op_t  *op = task->data;

    op->rc = NGX_OK;
    op->status = NGX_HTTP_OK;

    op->run(op);
}


static ngx_int_t
ngx_foko_chat_channels_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_channel_op_t  *op = task->data;

    json_t              *result;
    ngx_http_request_t  *r;

    r = task->request;

    if (op->keep) {
        op->keep(op, task->failed);
    }

    result = op->result;
    op->result = NULL;

    if (!task->failed && op->rc == NGX_OK) {
        ngx_foko_chat_channels_forget(op);
    }


    free(op->ch.members);
    op->ch.members = NULL;

    if (op->invited && !task->failed && op->rc == NGX_OK) {
        ngx_foko_chat_channels_invite_mail(task);
    }

    /* members' presence first: the event carries it too */
    ngx_foko_chat_channels_online(result);

    if (op->event && !task->failed && op->rc == NGX_OK
        && op->error == NGX_FOKO_CHAT_E_NONE)
    {
        if (op->event[0] == 'j') {
            ngx_foko_chat_event_channel(op->event, op->channel, result,
                                        op->invitee.id,
                                        op->invitee.username);
        } else {
            ngx_foko_chat_event_channel(op->event, op->channel, result,
                                        op->user, op->username);
        }
    }

    if (r == NULL) {
        json_decref(result);
        return NGX_OK;
    }

    if (task->failed || op->rc == NGX_ERROR) {
        json_decref(result);
        return ngx_foko_chat_json_send_unavailable(r, task->failed ? NULL
                                                                   : op->err);
    }

    if (result == NULL && op->error != NGX_FOKO_CHAT_E_NONE) {
        return ngx_foko_chat_json_send_err(r, op->error, NULL, NULL);
    }

    if (op->status == NGX_HTTP_NO_CONTENT) {
        r->header_only = 1;
        r->headers_out.status = NGX_HTTP_NO_CONTENT;
        r->headers_out.content_length_n = 0;
        return ngx_http_send_header(r);
    }

    return ngx_foko_chat_json_send(r, op->status, result);
}


/*
 * A channel changed in MongoDB: every worker loads it anew when next
 * used.  Of the users' channel ids in the zone, a create adds it to its
 * members' (no one can know the channel before its answer), a join or a
 * leave makes the zone load the one user again (two changes of one user
 * on two workers may end in either order), a rename changes no ids.
 */

static void
ngx_foko_chat_channels_forget(ngx_foko_chat_channel_op_t *op)
{
    ngx_uint_t                i;
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    if (op->changed) {
        ngx_foko_chat_cache_forget(shm, op->channel);
    }

    if (op->event == NULL || op->error != NGX_FOKO_CHAT_E_NONE) {
        return;
    }

    switch (op->event[0]) {

    case 'c':
        for (i = 0; op->ch.members && i < op->ch.nmembers; i++) {
            ngx_foko_chat_users_add(shm, op->ch.members[i], op->ch.id);
        }
        break;

    case 'j':
        ngx_foko_chat_users_forget(shm, op->invitee.id[0] ? op->invitee.id
                                                          : op->user);
        break;

    case 'l':
        ngx_foko_chat_users_forget(shm, op->user);
        break;
    }
}


/*
 * An invited account gets a link that signs it in: a token of its own
 * kind, tied to the account's password version like a reset token.
 */

static void
ngx_foko_chat_channels_invite_mail(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_channel_op_t  *op = task->data;

    u_char                      *p;
    char                        *token;
    ngx_str_t                    to, link, detail;
    ngx_foko_chat_claims_t       claims;
    ngx_foko_chat_main_conf_t   *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);

    ngx_memzero(&claims, sizeof(ngx_foko_chat_claims_t));
    ngx_memcpy(claims.sub, op->invitee.id, sizeof(claims.sub));
    claims.ver = op->invitee.ver;

    token = ngx_foko_chat_jwt_issue(fmcf->jwt, NGX_FOKO_CHAT_TOKEN_INVITE,
                                    &claims, NGX_FOKO_CHAT_INVITE_TTL);
    if (token == NULL) {
        ngx_log_error(NGX_LOG_ALERT, task->log, 0,
                      "foko chat: cannot sign an invitation token");
        return;
    }

    link.len = sizeof("/invite?channel=&token=") - 1 + NGX_FOKO_CHAT_OID_LEN
               + ngx_strlen(token);
    link.data = ngx_alloc(link.len, task->log);

    if (link.data) {
        p = ngx_sprintf(link.data, "/invite?channel=%s&token=%s",
                        op->channel, token);
        link.len = p - link.data;

        to.data = op->invitee.email;
        to.len = ngx_strlen(op->invitee.email);
        detail.data = op->ch.name;
        detail.len = ngx_strlen(op->ch.name);

        (void) ngx_foko_chat_mail_send(fmcf, task->log,
                                       NGX_FOKO_CHAT_MAIL_INVITE,
                                       &to, &link, &detail);
        ngx_free(link.data);
    }

    free(token);
}


/* a channel name: 1 to 64 characters, no controls, no outer spaces */

static const char *
ngx_foko_chat_channels_name(json_t *body, u_char *out, ngx_uint_t required)
{
    json_t  *v;

    out[0] = '\0';

    v = json_object_get(body, "name");

    if (!required && (v == NULL || json_is_null(v))) {
        return NULL;
    }

    return ngx_foko_chat_json_name(body, "name", NGX_FOKO_CHAT_CHANNEL_CHARS,
                                   NGX_FOKO_CHAT_CHANNEL_NAME_MAX, out);
}


/* the pool thread's side: MongoDB calls, then the answer to send */

static void
ngx_foko_chat_channels_create_run(ngx_foko_chat_channel_op_t *op)
{
    json_t      *names;
    ngx_int_t    rc;
    ngx_uint_t   i;

    /* every member must be a user; invited accounts count */

    if (ngx_foko_chat_store_usernames(op->ch.members, op->ch.nmembers, &names,
                                      op->err)
        != NGX_OK)
    {
        op->rc = NGX_ERROR;
        return;
    }

    for (i = 0; i < op->ch.nmembers; i++) {
        if (json_object_get(names, (char *) op->ch.members[i]) == NULL) {
            json_decref(names);
            ngx_foko_chat_channels_fail(op, NGX_FOKO_CHAT_E_UNKNOWN_USER);
            return;
        }
    }

    json_decref(names);

    op->status = NGX_HTTP_CREATED;

    rc = ngx_foko_chat_store_channel_insert(&op->ch, op->err);

    if (rc == NGX_DECLINED) {
        /* a direct conversation of these two exists: that one */
        op->status = NGX_HTTP_OK;
        rc = ngx_foko_chat_store_channel_find_direct(&op->ch, op->err);

    } else {
        op->event = "created";
    }

    if (rc != NGX_OK) {
        op->rc = NGX_ERROR;
        return;
    }

    op->result = ngx_foko_chat_channels_describe(op, &op->ch, NULL, 1,
                                                 NULL);

    if (op->result == NULL) {
        op->rc = NGX_ERROR;
    }
}


static void
ngx_foko_chat_channels_get_run(ngx_foko_chat_channel_op_t *op)
{
    json_t  *reads;

    if (ngx_foko_chat_channels_find_mine(op) != NGX_OK) {
        return;
    }

    reads = NULL;

    if (ngx_foko_chat_store_reads_of(op->user, &reads, op->err) != NGX_OK) {
        op->rc = NGX_ERROR;
        return;
    }

    op->result = ngx_foko_chat_channels_describe(op, &op->ch, reads, 1,
                                                 NULL);
    json_decref(reads);

    if (op->result == NULL) {
        op->rc = NGX_ERROR;
    }
}


static void
ngx_foko_chat_channels_rename_run(ngx_foko_chat_channel_op_t *op)
{
    u_char  name[NGX_FOKO_CHAT_CHANNEL_NAME_MAX + 1];

    ngx_memcpy(name, op->ch.name, sizeof(name));

    if (ngx_foko_chat_channels_find_mine(op) != NGX_OK) {
        return;
    }

    if (op->ch.direct) {
        ngx_foko_chat_channels_fail(op, NGX_FOKO_CHAT_E_DIRECT_NAME);
        return;
    }

    ngx_memcpy(op->ch.name, name, sizeof(name));

    if (ngx_foko_chat_store_channel_rename(&op->ch, op->err) != NGX_OK) {
        op->rc = NGX_ERROR;
        return;
    }

    op->changed = 1;
    op->event = "renamed";

    op->result = ngx_foko_chat_channels_describe(op, &op->ch, NULL, 1,
                                                 NULL);

    if (op->result == NULL) {
        op->rc = NGX_ERROR;
    }
}


static void
ngx_foko_chat_channels_invite_run(ngx_foko_chat_channel_op_t *op)
{
    ngx_foko_chat_join_e  joined;

    if (ngx_foko_chat_channels_find_mine(op) != NGX_OK) {
        return;
    }

    if (op->ch.direct) {
        ngx_foko_chat_channels_fail(op, NGX_FOKO_CHAT_E_DIRECT_MEMBERS);
        return;
    }

    if (ngx_foko_chat_store_user_invite(&op->invitee, op->err) != NGX_OK) {
        op->rc = NGX_ERROR;
        return;
    }

    joined = ngx_foko_chat_store_channel_join(op->channel, op->invitee.id,
                                              op->max_members, op->err);

    if (joined == NGX_FOKO_CHAT_JOIN_MEMBER) {
        ngx_foko_chat_channels_fail(op, NGX_FOKO_CHAT_E_ALREADY_MEMBER);
        return;
    }

    if (joined == NGX_FOKO_CHAT_JOIN_FULL) {
        ngx_foko_chat_channels_fail(op, NGX_FOKO_CHAT_E_CHANNEL_FULL);
        return;
    }

    if (joined == NGX_FOKO_CHAT_JOIN_NO_CHANNEL) {
        ngx_foko_chat_channels_fail(op, NGX_FOKO_CHAT_E_NO_CHANNEL);
        return;
    }

    if (joined != NGX_FOKO_CHAT_JOINED) {
        op->rc = NGX_ERROR;
        return;
    }

    op->invited = op->invitee.invited;
    op->changed = 1;
    op->event = "joined";

    ngx_foko_chat_store_channel_doc_free(&op->ch);

    if (ngx_foko_chat_store_channel_find(&op->ch, op->err) != NGX_OK) {
        op->rc = NGX_ERROR;
        return;
    }

    op->result = ngx_foko_chat_channels_describe(op, &op->ch, NULL, 1,
                                                 NULL);

    if (op->result == NULL) {
        op->rc = NGX_ERROR;
    }
}


static void
ngx_foko_chat_channels_leave_run(ngx_foko_chat_channel_op_t *op)
{
    ngx_int_t  rc;

    rc = ngx_foko_chat_store_channel_leave(op->channel, op->user, op->err);

    if (rc == NGX_DECLINED || rc == NGX_ABORT) {
        ngx_foko_chat_channels_fail(op, NGX_FOKO_CHAT_E_NO_CHANNEL);
        return;
    }

    if (rc != NGX_OK) {
        op->rc = NGX_ERROR;
        return;
    }

    op->changed = 1;
    op->event = "left";
    op->status = NGX_HTTP_NO_CONTENT;
}


/* op->ch is the channel of the path, if the caller is in it */

static ngx_int_t
ngx_foko_chat_channels_find_mine(ngx_foko_chat_channel_op_t *op)
{
    ngx_int_t  rc;

    rc = ngx_foko_chat_store_channel_find(&op->ch, op->err);

    if (rc == NGX_ERROR) {
        op->rc = NGX_ERROR;
        return NGX_ERROR;
    }

    if (rc != NGX_OK || !ngx_foko_chat_channel_has(&op->ch, op->user)) {
        ngx_foko_chat_channels_fail(op, NGX_FOKO_CHAT_E_NO_CHANNEL);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * { id, name, direct, members: [{id, username, online}], last_message,
 * last_seq, unread }; "reads" (the caller's read marks) may be NULL.
 */

json_t *
ngx_foko_chat_channels_describe(ngx_foko_chat_channel_op_t *op,
    ngx_foko_chat_channel_doc_t *ch, json_t *reads, ngx_uint_t limit,
    json_t *kept)
{
    json_t      *j, *members, *names, *page, *last, *name, *member;
    int64_t      last_seq, read;
    ngx_uint_t   i, more;

    names = NULL;
    page = NULL;

    if (ngx_foko_chat_store_usernames(ch->members, ch->nmembers, &names,
                                      op->err)
        != NGX_OK
        || ngx_foko_chat_store_messages_page(ch->id, 0, -1, -1,
                                             ngx_max(limit, 1), &page,
                                             &more, op->err)
           != NGX_OK)
    {
        json_decref(names);
        json_decref(page);
        return NULL;
    }

    members = json_array();

    for (i = 0; members && i < ch->nmembers; i++) {
        name = json_object_get(names, (char *) ch->members[i]);

        member = json_pack("{s:s,s:s,s:b}", "id", (char *) ch->members[i],
                           "username", name ? json_string_value(name) : "",
                           "online", 0);

        if (member == NULL || json_array_append_new(members, member) != 0) {
            json_decref(members);
            members = NULL;
        }
    }

    last = json_array_get(page, json_array_size(page) - 1);
    last_seq = last ? json_integer_value(json_object_get(last, "seq")) : 0;

    read = reads ? json_integer_value(json_object_get(reads,
                                                      (char *) ch->id))
                 : last_seq;

    j = json_pack("{s:s,s:s?,s:b,s:o,s:O?,s:I,s:I}",
                  "id", (char *) ch->id,
                  "name", ch->name[0] ? (char *) ch->name : NULL,
                  "direct", (int) ch->direct,
                  "members", members,
                  "last_message", last,
                  "last_seq", (json_int_t) last_seq,
                  "unread", (json_int_t) ngx_max(last_seq - read, 0));

    if (j && kept
        && json_array_append_new(kept, json_pack("[OO]", names, page)) != 0)
    {
        json_decref(j);
        j = NULL;
    }

    json_decref(names);
    json_decref(page);

    return j;
}


/* members' "online", from the shared zone: in a channel or in a list */

void
ngx_foko_chat_channels_online(json_t *result)
{
    json_t                   *channel, *members, *member;
    ngx_uint_t                i, j, n;
    const char               *id;
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    if (shm == NULL || result == NULL) {
        return;
    }

    n = json_is_array(result) ? json_array_size(result) : 1;

    ngx_shmtx_lock(&shm->shpool->mutex);

    for (i = 0; i < n; i++) {
        channel = json_is_array(result) ? json_array_get(result, i) : result;
        members = json_object_get(channel, "members");

        for (j = 0; j < json_array_size(members); j++) {
            member = json_array_get(members, j);
            id = json_string_value(json_object_get(member, "id"));

            if (id && ngx_strlen(id) == NGX_FOKO_CHAT_OID_LEN
                && ngx_foko_chat_presence_online_locked(shm->sh,
                                                        (u_char *) id))
            {
                (void) json_object_set_new(member, "online", json_true());
            }
        }
    }

    ngx_shmtx_unlock(&shm->shpool->mutex);
}


static void
ngx_foko_chat_channels_fail(ngx_foko_chat_channel_op_t *op,
    ngx_foko_chat_err_e e)
{
    op->error = e;
}
