
/*
 * Foko chat: the REST API router.
 *
 * Routes are matched against the URI below the location's prefix, segment
 * by segment; a ":name" segment matches any one non-empty segment.  A path
 * that matches with another method answers 405 with "Allow".
 */


#include "ngx_foko_chat_api.h"
#include "ngx_foko_chat_json.h"
#include "ngx_foko_chat_task.h"
#include "ngx_foko_chat_store.h"


typedef ngx_int_t (*ngx_foko_chat_route_pt)(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);


typedef struct {
    ngx_uint_t                 method;
    char                      *path;
    ngx_foko_chat_route_pt     handler;
} ngx_foko_chat_route_t;


static ngx_uint_t ngx_foko_chat_api_match(const char *pattern, ngx_str_t *path,
    ngx_foko_chat_api_ctx_t *ctx);
static ngx_int_t ngx_foko_chat_api_health(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
static ngx_int_t ngx_foko_chat_api_health_done(ngx_foko_chat_task_t *task);


static ngx_foko_chat_route_t  ngx_foko_chat_routes[] = {

    { NGX_HTTP_GET|NGX_HTTP_HEAD, "health", ngx_foko_chat_api_health },

    { 0, NULL, NULL }
};


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

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return route->handler(r, ctx);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (allowed) {
        return ngx_foko_chat_json_send_not_allowed(r, allowed);
    }

    return ngx_foko_chat_json_send_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                         "no such API endpoint");
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


static ngx_int_t
ngx_foko_chat_api_health(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_ping_t),
                                     r->connection->log);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    task->run = ngx_foko_chat_store_ping_run;
    task->done = ngx_foko_chat_api_health_done;

    if (ngx_foko_chat_task_post_request(task, fmcf->thread_pool, r)
        != NGX_OK)
    {
        ngx_foko_chat_task_free(task);
        return ngx_foko_chat_json_send_error(r,
                                             NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "overloaded",
                                             "the server is too busy");
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_foko_chat_api_health_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_ping_t  *ping = task->data;

    json_t  *body;

    ngx_foko_chat_store_report(ping->rc, ping->err, task->log);

    if (task->request == NULL) {
        return NGX_OK;
    }

    if (ping->rc == NGX_OK) {
        body = json_pack("{s:s,s:s}", "status", "ok", "mongo", "up");
        return ngx_foko_chat_json_send(task->request, NGX_HTTP_OK, body);
    }

    body = ngx_foko_chat_json_error("storage_unavailable",
                                    "the database is unreachable");
    if (body == NULL || json_object_set_new(body, "mongo",
                                            json_string("down")) != 0)
    {
        json_decref(body);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_foko_chat_json_send(task->request,
                                   NGX_HTTP_SERVICE_UNAVAILABLE, body);
}
