
/*
 * Foko chat: the operator's status page.
 *
 * Answers from this worker's counters and the shared zone only, so it
 * stays responsive whatever MongoDB does.
 */


#include "ngx_foko_chat_status.h"
#include "ngx_foko_chat_ws.h"
#include "ngx_foko_chat_messages.h"
#include "ngx_foko_chat_json.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_task.h"


static const char *ngx_foko_chat_mongo_states[] = {
    "unknown", "up", "down"
};


static json_t *ngx_foko_chat_status_connections(void);


ngx_int_t
ngx_foko_chat_status_handler(ngx_http_request_t *r)
{
    json_t                     *body;
    ngx_int_t                   rc;
    ngx_uint_t                  state;
    ngx_foko_chat_shm_ctx_t    *ctx;
    ngx_foko_chat_main_conf_t  *fmcf;
    ngx_foko_chat_shm_usage_t   usage;
    uint64_t                    events;
    ngx_uint_t                  queued, loads, waited, signing_in, waiting;
    size_t                      log_size;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_foko_chat_json_send_not_allowed(r,
                                                   NGX_HTTP_GET|NGX_HTTP_HEAD);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);
    ctx = ngx_foko_chat_shm_get(r);

    ngx_foko_chat_shm_usage(ctx, &usage);

    state = ctx->sh->mongo_state;
    if (state >= sizeof(ngx_foko_chat_mongo_states) / sizeof(char *)) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "foko chat: invalid MongoDB state %ui", state);
        state = NGX_FOKO_CHAT_MONGO_UNKNOWN;
    }

    ngx_foko_chat_messages_stats(&queued, &loads, &waited);
    ngx_foko_chat_ws_signins(&signing_in, &waiting);

    ngx_shmtx_lock(&ctx->shpool->mutex);
    events = ctx->sh->events;
    log_size = ctx->sh->log_size;
    ngx_shmtx_unlock(&ctx->shpool->mutex);

    body = json_pack("{s:I,s:o,s:{s:I,s:I,s:I,s:I,s:I},"
                     "s:{s:s,s:I},s:{s:s%,s:I},s:{s:I,s:I,s:I,s:I,s:I},"
                     "s:{s:I,s:I,s:I}}",
                     "pid", (json_int_t) ngx_pid,
                     "connections", ngx_foko_chat_status_connections(),
                     "zone",
                       "size", (json_int_t) usage.size,
                       "used", (json_int_t) (usage.size - usage.free),
                       "free", (json_int_t) usage.free,
                       "created", (json_int_t) ctx->sh->created,
                       "reloads", (json_int_t) ctx->sh->reloads,
                     "mongo",
                       "state", ngx_foko_chat_mongo_states[state],
                       "checked", (json_int_t) ctx->sh->mongo_checked,
                     "tasks",
                       "thread_pool", (char *) fmcf->storage_pool.name.data,
                         fmcf->storage_pool.name.len,
                       "in_flight",
                         (json_int_t) ngx_foko_chat_task_in_flight(),
                     "websocket",
                       "connections",
                         (json_int_t) ngx_foko_chat_ws_connections(),
                       "events", (json_int_t) events,
                       "event_log", (json_int_t) log_size,
                       "signing_in", (json_int_t) signing_in,
                       "waiting_to_sign_in", (json_int_t) waiting,
                     "posts",
                       "queued", (json_int_t) queued,
                       "channel_loads", (json_int_t) loads,
                       "waited_for_load", (json_int_t) waited);

    return ngx_foko_chat_json_send(r, NGX_HTTP_OK, body);
}


static json_t *
ngx_foko_chat_status_connections(void)
{
#if (NGX_STAT_STUB)

    return json_pack("{s:I,s:I,s:I,s:I}",
                     "active", (json_int_t) *ngx_stat_active,
                     "reading", (json_int_t) *ngx_stat_reading,
                     "writing", (json_int_t) *ngx_stat_writing,
                     "waiting", (json_int_t) *ngx_stat_waiting);
#else

    return json_pack("{s:I}", "active",
                     (json_int_t) (ngx_cycle->connection_n
                                   - ngx_cycle->free_connection_n));
#endif
}
