
/*
 * Foko chat: the REST API router.
 *
 * Routes are matched against the URI below the location's prefix, segment
 * by segment; a ":name" segment matches any one non-empty segment.  A path
 * that matches with another method answers 405 with "Allow".
 */


#include "ngx_foko_chat_api.h"
#include "ngx_foko_chat_auth.h"
#include "ngx_foko_chat_channels.h"
#include "ngx_foko_chat_json.h"
#include "ngx_foko_chat_messages.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_task.h"
#include "ngx_foko_chat_store.h"


typedef ngx_int_t (*ngx_foko_chat_route_pt)(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);


#define NGX_FOKO_CHAT_ROUTE_BODY   0x01    /* takes a JSON object */
#define NGX_FOKO_CHAT_ROUTE_AUTH   0x02    /* needs an access token */


struct ngx_foko_chat_route_s {
    ngx_uint_t                 method;
    char                      *path;
    ngx_foko_chat_route_pt     handler;
    ngx_uint_t                 flags;
};


static ngx_uint_t ngx_foko_chat_api_match(const char *pattern, ngx_str_t *path,
    ngx_foko_chat_api_ctx_t *ctx);
static ngx_int_t ngx_foko_chat_api_route(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
static void ngx_foko_chat_api_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_foko_chat_api_parse_body(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
static void ngx_foko_chat_api_body_cleanup(void *data);
static ngx_int_t ngx_foko_chat_api_health(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
static ngx_int_t ngx_foko_chat_api_health_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_api_health_send(ngx_http_request_t *r,
    ngx_int_t rc);


#define B  NGX_FOKO_CHAT_ROUTE_BODY
#define A  NGX_FOKO_CHAT_ROUTE_AUTH

static ngx_foko_chat_route_t  ngx_foko_chat_routes[] = {

    { NGX_HTTP_GET|NGX_HTTP_HEAD, "health", ngx_foko_chat_api_health, 0 },

    { NGX_HTTP_POST, "auth/signup", ngx_foko_chat_auth_signup, B },
    { NGX_HTTP_POST, "auth/login", ngx_foko_chat_auth_login, B },
    { NGX_HTTP_POST, "auth/refresh", ngx_foko_chat_auth_refresh, A },
    { NGX_HTTP_POST, "auth/password/forgot", ngx_foko_chat_auth_forgot, B },
    { NGX_HTTP_POST, "auth/password/reset", ngx_foko_chat_auth_reset, B },
    { NGX_HTTP_POST, "auth/invite/accept", ngx_foko_chat_auth_accept, B },
    { NGX_HTTP_GET, "me", ngx_foko_chat_auth_me, A },
    { NGX_HTTP_GET, "users", ngx_foko_chat_auth_users, A },

    { NGX_HTTP_GET, "channels", ngx_foko_chat_channels_list, A },
    { NGX_HTTP_POST, "channels", ngx_foko_chat_channels_create, A|B },
    { NGX_HTTP_GET, "channels/:id", ngx_foko_chat_channels_get, A },
    { NGX_HTTP_PATCH, "channels/:id", ngx_foko_chat_channels_rename, A|B },
    { NGX_HTTP_POST, "channels/:id/invite", ngx_foko_chat_channels_invite,
      A|B },
    { NGX_HTTP_DELETE, "channels/:id/members/me",
      ngx_foko_chat_channels_leave, A },

    { NGX_HTTP_GET, "channels/:id/messages", ngx_foko_chat_messages_list, A },
    { NGX_HTTP_POST, "channels/:id/messages", ngx_foko_chat_messages_post,
      A|B },
    { NGX_HTTP_PATCH, "channels/:id/messages/:mid",
      ngx_foko_chat_messages_edit, A|B },
    { NGX_HTTP_DELETE, "channels/:id/messages/:mid",
      ngx_foko_chat_messages_delete, A },
    { NGX_HTTP_POST, "channels/:id/read", ngx_foko_chat_messages_read, A|B },

    { 0, NULL, NULL, 0 }
};

#undef B
#undef A


ngx_int_t
ngx_foko_chat_api_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_str_t                  path;
    ngx_uint_t                 allowed;
    ngx_foko_chat_route_t     *route;
    ngx_foko_chat_api_ctx_t   *ctx;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    /* the location is a prefix one: checked when it was configured */

    path.data = r->uri.data + clcf->name.len;
    path.len = r->uri.len - clcf->name.len;

    if (r->uri.len < clcf->name.len) {
        path.len = 0;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_foko_chat_api_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_foko_chat_module);

    allowed = 0;

    for (route = ngx_foko_chat_routes; route->path; route++) {

        if (!ngx_foko_chat_api_match(route->path, &path, ctx)) {
            continue;
        }

        if (!(route->method & r->method)) {
            allowed |= route->method;
            continue;
        }

        ctx->route = route;

        return ngx_foko_chat_api_route(r, ctx);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (allowed) {
        return ngx_foko_chat_json_send_not_allowed(r, allowed);
    }

    return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_NO_ENDPOINT, NULL,
                                       NULL);
}


static ngx_int_t
ngx_foko_chat_api_route(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_int_t  rc;

    if ((ctx->route->flags & NGX_FOKO_CHAT_ROUTE_AUTH)
        && ngx_foko_chat_auth_bearer(r, ctx) != NGX_OK)
    {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_NO_TOKEN, NULL,
                                           NULL);
    }

    if (!(ctx->route->flags & NGX_FOKO_CHAT_ROUTE_BODY)) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ctx->route->handler(r, ctx);
    }

    if (r->headers_in.content_length_n > NGX_FOKO_CHAT_API_MAX_BODY) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_BODY_TOO_LARGE,
                                           NULL, NULL);
    }

    rc = ngx_http_read_client_request_body(r, ngx_foko_chat_api_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_foko_chat_api_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_foko_chat_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_foko_chat_module);

    rc = ngx_foko_chat_api_parse_body(r, ctx);

    if (ctx->body) {
        rc = ctx->route->handler(r, ctx);
    }

    ngx_http_finalize_request(r, rc);
}


/* sets ctx->body, or answers with an error and returns what that returned */

static ngx_int_t
ngx_foko_chat_api_parse_body(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    u_char              *p;
    size_t               len;
    ssize_t              n;
    json_t              *body;
    ngx_buf_t           *b;
    ngx_chain_t         *cl;
    json_error_t         error;
    ngx_pool_cleanup_t  *cln;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return ngx_foko_chat_json_send_invalid(r, "body",
                                               "must be a JSON object");
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? (size_t) (b->file_last - b->file_pos)
                          : (size_t) (b->last - b->pos);
    }

    if (len > NGX_FOKO_CHAT_API_MAX_BODY) {
        return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_BODY_TOO_LARGE,
                                           NULL, NULL);
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            ngx_memcpy(p + len, b->pos, b->last - b->pos);
            len += b->last - b->pos;
            continue;
        }

        /* a body past client_body_buffer_size: a small local temp file */

        n = ngx_read_file(b->file, p + len, b->file_last - b->file_pos,
                          b->file_pos);
        if (n != b->file_last - b->file_pos) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        len += n;
    }

    body = json_loadb((char *) p, len, JSON_REJECT_DUPLICATES, &error);

    if (body == NULL || !json_is_object(body)) {
        json_decref(body);
        return ngx_foko_chat_json_send_invalid(r, "body",
                                               "must be a JSON object");
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        json_decref(body);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_foko_chat_api_body_cleanup;
    cln->data = body;

    ctx->body = body;

    return NGX_OK;
}


static void
ngx_foko_chat_api_body_cleanup(void *data)
{
    json_decref(data);
}


static ngx_uint_t
ngx_foko_chat_api_match(const char *pattern, ngx_str_t *path,
    ngx_foko_chat_api_ctx_t *ctx)
{
    u_char      *p, *end, *seg;
    const char  *q;

    ctx->nargs = 0;

    p = path->data;
    end = path->data + path->len;
    q = pattern;

    for ( ;; ) {
        seg = p;

        while (p < end && *p != '/') {
            p++;
        }

        if (*q == ':') {
            if (p == seg || ctx->nargs == NGX_FOKO_CHAT_API_MAX_ARGS) {
                return 0;
            }

            ctx->args[ctx->nargs].data = seg;
            ctx->args[ctx->nargs].len = p - seg;
            ctx->nargs++;

            while (*q && *q != '/') {
                q++;
            }

        } else {
            while (seg < p && *q && *q != '/' && *q == *seg) {
                seg++;
                q++;
            }

            if (seg != p || (*q && *q != '/')) {
                return 0;
            }
        }

        /* both at the end of a segment */

        if (*q == '\0' || p == end) {
            return *q == '\0' && p == end;
        }

        /* both at a '/' */

        p++;
        q++;
    }
}


/*
 * Health is the zone's view of MongoDB, which the probes of the workers
 * keep current (every second each): an answer at once, also while MongoDB
 * hangs.  Only before the first probe has answered does it ask MongoDB.
 */

static ngx_int_t
ngx_foko_chat_api_health(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_atomic_uint_t           state;
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_shm_ctx_t    *shm;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);
    shm = fmcf->shm_zone->data;

    state = shm->sh->mongo_state;

    if (state != NGX_FOKO_CHAT_MONGO_UNKNOWN) {
        return ngx_foko_chat_api_health_send(r,
                   state == NGX_FOKO_CHAT_MONGO_UP ? NGX_OK : NGX_ERROR);
    }

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_ping_t),
                                     r->connection->log);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    task->run = ngx_foko_chat_store_ping_run;
    task->done = ngx_foko_chat_api_health_done;

    if (ngx_foko_chat_task_post_request(task, fmcf->storage_pool.pool, r)
        != NGX_OK)
    {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_unavailable(r, NULL);
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_foko_chat_api_health_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_ping_t  *ping = task->data;

    ngx_foko_chat_store_report(ping->rc, ping->err, task->log);

    if (task->request == NULL) {
        return NGX_OK;
    }

    return ngx_foko_chat_api_health_send(task->request, ping->rc);
}


static ngx_int_t
ngx_foko_chat_api_health_send(ngx_http_request_t *r, ngx_int_t rc)
{
    json_t      *body, *error;
    ngx_uint_t   status;

    if (rc == NGX_OK) {
        body = json_pack("{s:s,s:s}", "status", "ok", "mongo", "up");
        return ngx_foko_chat_json_send(r, NGX_HTTP_OK, body);
    }

    /* the error of the table, and the state of MongoDB beside it */

    error = ngx_foko_chat_error_object(NGX_FOKO_CHAT_E_STORAGE, NULL, NULL);
    if (error == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body = json_pack("{s:o,s:s}", "error", error, "mongo", "down");
    status = ngx_foko_chat_errors[NGX_FOKO_CHAT_E_STORAGE].status;

    return ngx_foko_chat_json_send(r, status, body);
}
