
/*
 * Foko chat: the operator's status page.
 *
 * Answers from counters in the shared zone and from the workers' slots
 * there, so it stays responsive whatever MongoDB does.  Counters are
 * counted by every worker into the zone, so that a scrape answered by any
 * worker sees the same totals; each worker also copies its own gauges into
 * its slot once a second (and the answering worker just before it
 * answers), so that every worker's state shows whichever one answers.
 */


#include "ngx_foko_chat_status.h"
#include "ngx_foko_chat_ws.h"
#include "ngx_foko_chat_messages.h"
#include "ngx_foko_chat_json.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_task.h"
#include "ngx_foko_chat_bus.h"
#include "ngx_foko_chat_redis.h"


#define NGX_FOKO_CHAT_STATUS_PERIOD   1000     /* ms between slot updates */

#define NGX_FOKO_CHAT_PROM_TYPE       "text/plain; version=0.0.4"


typedef enum {
    NGX_FOKO_CHAT_STATUS_JSON = 0,
    NGX_FOKO_CHAT_STATUS_PROMETHEUS,
    NGX_FOKO_CHAT_STATUS_BAD
} ngx_foko_chat_status_format_e;


/* a per-worker family of the Prometheus output */
typedef struct {
    const char                *name;
    const char                *type;
    const char                *help;
    size_t                     offset;
} ngx_foko_chat_prom_worker_t;


static ngx_int_t ngx_foko_chat_status_send(ngx_http_request_t *r,
    ngx_uint_t prometheus);
static ngx_uint_t ngx_foko_chat_status_choose(ngx_http_request_t *r,
    ngx_uint_t prometheus);
static ngx_int_t ngx_foko_chat_status_json(ngx_http_request_t *r);
static ngx_int_t ngx_foko_chat_status_prometheus(ngx_http_request_t *r);
static json_t *ngx_foko_chat_status_connections(void);
static ngx_uint_t ngx_foko_chat_status_mongo_state(ngx_foko_chat_sh_t *sh,
    ngx_log_t *log);
static void ngx_foko_chat_status_redis_json(json_t *body,
    ngx_foko_chat_shm_ctx_t *ctx);
static void ngx_foko_chat_status_redis_prom(ngx_buf_t *b,
    ngx_foko_chat_shm_ctx_t *ctx);
static ngx_uint_t ngx_foko_chat_status_nworkers(void);
static void ngx_foko_chat_status_update(void);
static void ngx_foko_chat_status_timer(ngx_event_t *ev);
static void ngx_foko_chat_prom(ngx_buf_t *b, const char *fmt, ...);
static void ngx_foko_chat_prom_family(ngx_buf_t *b, const char *name,
    const char *type, const char *help);
static u_char *ngx_foko_chat_prom_escape(ngx_pool_t *pool, ngx_str_t *s);


ngx_foko_chat_stats_t  *ngx_foko_chat_stats;

static ngx_uint_t       ngx_foko_chat_status_slot;
static ngx_event_t      ngx_foko_chat_status_ev;


static const char *ngx_foko_chat_mongo_states[] = {
    "unknown", "up", "down"
};

static const char *ngx_foko_chat_reject_reasons[] = {
    "invalid", "too_large", "not_member", "write_queue_full", "overloaded"
};


#define ngx_foko_chat_worker_field(f)                                        \
    offsetof(ngx_foko_chat_worker_stats_t, f)

static ngx_foko_chat_prom_worker_t  ngx_foko_chat_prom_workers[] = {

    { "foko_chat_worker_pid", "gauge",
      "The process id of the worker in this slot.",
      ngx_foko_chat_worker_field(pid) },

    { "foko_chat_worker_updated_timestamp_seconds", "gauge",
      "When the worker last wrote its slot (once a second).",
      ngx_foko_chat_worker_field(updated) },

    { "foko_chat_websocket_connections", "gauge",
      "WebSocket connections of the worker.",
      ngx_foko_chat_worker_field(ws_connections) },

    { "foko_chat_websocket_signins_running", "gauge",
      "WebSocket sign-ins being checked on the thread pool.",
      ngx_foko_chat_worker_field(signing_in) },

    { "foko_chat_websocket_signins_waiting", "gauge",
      "WebSocket connections that sent a token and wait for their turn.",
      ngx_foko_chat_worker_field(waiting_to_sign_in) },

    { "foko_chat_websocket_signins_limit", "gauge",
      "WebSocket sign-ins that may read MongoDB at once, now.",
      ngx_foko_chat_worker_field(signin_limit) },

    { "foko_chat_write_queue_messages", "gauge",
      "Posts of the worker waiting for MongoDB.",
      ngx_foko_chat_worker_field(queued) },

    { "foko_chat_channel_loads_total", "counter",
      "Channels the worker loaded from MongoDB for a post.",
      ngx_foko_chat_worker_field(channel_loads) },

    { "foko_chat_posts_waited_for_load_total", "counter",
      "Posts that waited for another post's channel load.",
      ngx_foko_chat_worker_field(waited_for_load) },

    { "foko_chat_event_log_lag_bytes", "gauge",
      "Bytes of the event log the worker has not read yet.",
      ngx_foko_chat_worker_field(log_lag) },

    { NULL, NULL, NULL, 0 }
};


ngx_int_t
ngx_foko_chat_status_handler(ngx_http_request_t *r)
{
    return ngx_foko_chat_status_send(r, 0);
}


ngx_int_t
ngx_foko_chat_status_prometheus_handler(ngx_http_request_t *r)
{
    return ngx_foko_chat_status_send(r, 1);
}


static ngx_int_t
ngx_foko_chat_status_send(ngx_http_request_t *r, ngx_uint_t prometheus)
{
    ngx_int_t         rc;
    ngx_table_elt_t  *h;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_foko_chat_json_send_not_allowed(r,
                                                   NGX_HTTP_GET|NGX_HTTP_HEAD);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!prometheus) {
        /* the answer depends on the Accept header */

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Vary");
        ngx_str_set(&h->value, "Accept");
    }

    switch (ngx_foko_chat_status_choose(r, prometheus)) {

    case NGX_FOKO_CHAT_STATUS_JSON:
        return ngx_foko_chat_status_json(r);

    case NGX_FOKO_CHAT_STATUS_PROMETHEUS:
        return ngx_foko_chat_status_prometheus(r);

    default:
        return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_STATUS_FORMAT,
                                           NULL, NULL);
    }
}


/*
 * "?format=" first; then a "foko_chat_status prometheus" location answers
 * Prometheus, and a JSON one answers Prometheus to a scraper, which asks
 * for the text format version 0.0.4 or for OpenMetrics.
 */

static ngx_uint_t
ngx_foko_chat_status_choose(ngx_http_request_t *r, ngx_uint_t prometheus)
{
    ngx_str_t         value;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    if (ngx_http_arg(r, (u_char *) "format", 6, &value) == NGX_OK) {

        if (value.len == 4 && ngx_strncmp(value.data, "json", 4) == 0) {
            return NGX_FOKO_CHAT_STATUS_JSON;
        }

        if (value.len == 10
            && ngx_strncmp(value.data, "prometheus", 10) == 0)
        {
            return NGX_FOKO_CHAT_STATUS_PROMETHEUS;
        }

        return NGX_FOKO_CHAT_STATUS_BAD;
    }

    if (prometheus) {
        return NGX_FOKO_CHAT_STATUS_PROMETHEUS;
    }

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != 6
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Accept", 6) != 0)
        {
            continue;
        }

        if (ngx_strlcasestrn(h[i].value.data,
                             h[i].value.data + h[i].value.len,
                             (u_char *) "application/openmetrics-text",
                             28 - 1)
            || ngx_strlcasestrn(h[i].value.data,
                                h[i].value.data + h[i].value.len,
                                (u_char *) "version=0.0.4", 13 - 1))
        {
            return NGX_FOKO_CHAT_STATUS_PROMETHEUS;
        }
    }

    return NGX_FOKO_CHAT_STATUS_JSON;
}


/* the JSON shape is kept as it was; the newer counters are in the metrics */

static ngx_int_t
ngx_foko_chat_status_json(ngx_http_request_t *r)
{
    json_t                     *body;
    ngx_uint_t                  state;
    ngx_foko_chat_sh_t         *sh;
    ngx_foko_chat_shm_ctx_t    *ctx;
    ngx_foko_chat_main_conf_t  *fmcf;
    ngx_foko_chat_shm_usage_t   usage;
    uint64_t                    events;
    ngx_uint_t                  queued, loads, waited, signing_in, waiting;
    ngx_uint_t                  limit;
    size_t                      log_size;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);
    ctx = ngx_foko_chat_shm_get(r);
    sh = ctx->sh;

    ngx_foko_chat_shm_usage(ctx, &usage);

    state = ngx_foko_chat_status_mongo_state(sh, r->connection->log);

    ngx_foko_chat_messages_stats(&queued, &loads, &waited);
    ngx_foko_chat_ws_signins(&signing_in, &waiting, &limit);

    ngx_shmtx_lock(&ctx->shpool->mutex);
    events = sh->events;
    log_size = sh->log_size;
    ngx_shmtx_unlock(&ctx->shpool->mutex);

    body = json_pack("{s:I,s:o,s:{s:I,s:I,s:I,s:I,s:I},"
                     "s:{s:s,s:I},s:{s:s%,s:I},"
                     "s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I},s:{s:I,s:I},"
                     "s:{s:I,s:I},s:{s:I,s:I,s:I}}",
                     "pid", (json_int_t) ngx_pid,
                     "connections", ngx_foko_chat_status_connections(),
                     "zone",
                       "size", (json_int_t) usage.size,
                       "used", (json_int_t) (usage.size - usage.free),
                       "free", (json_int_t) usage.free,
                       "created", (json_int_t) sh->created,
                       "reloads", (json_int_t) sh->reloads,
                     "mongo",
                       "state", ngx_foko_chat_mongo_states[state],
                       "checked", (json_int_t) sh->mongo_checked,
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
                       "signin_limit", (json_int_t) limit,
                       "signins_from_zone",
                         (json_int_t) sh->stats.signins_zone,
                       "signins_from_mongodb",
                         (json_int_t) sh->stats.signins_mongo,
                     "accounts",
                       "from_zone", (json_int_t) sh->stats.accounts_zone,
                       "from_mongodb", (json_int_t) sh->stats.accounts_mongo,
                     "channel_lists",
                       "from_zone",
                         (json_int_t) sh->stats.channel_lists_zone,
                       "from_mongodb",
                         (json_int_t) sh->stats.channel_lists_mongo,
                     "posts",
                       "queued", (json_int_t) queued,
                       "channel_loads", (json_int_t) loads,
                       "waited_for_load", (json_int_t) waited);

    ngx_foko_chat_status_redis_json(body, ctx);

    return ngx_foko_chat_json_send(r, NGX_HTTP_OK, body);
}


/* "redis", with foko_chat_redis_url only */

static void
ngx_foko_chat_status_redis_json(json_t *body, ngx_foko_chat_shm_ctx_t *ctx)
{
    ngx_foko_chat_redis_status_t  rs;

    if (body == NULL || ngx_foko_chat_redis_status(ctx, &rs) != NGX_OK) {
        return;
    }

    (void) json_object_set_new(body, "redis",
        json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
                  "state", rs.state,
                  "host_id", (char *) rs.host_id,
                  "checked", (json_int_t) rs.checked,
                  "published", (json_int_t) rs.published,
                  "applied", (json_int_t) rs.applied,
                  "own", (json_int_t) rs.own,
                  "losses", (json_int_t) rs.losses,
                  "seqs_heard", (json_int_t) rs.heard,
                  "dropped", (json_int_t) rs.dropped,
                  "lag", (json_int_t) rs.lag,
                  "queued", (json_int_t) rs.queued,
                  "hosts", (json_int_t) rs.hosts,
                  "hosts_gone", (json_int_t) rs.hosts_gone));
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


static ngx_uint_t
ngx_foko_chat_status_mongo_state(ngx_foko_chat_sh_t *sh, ngx_log_t *log)
{
    ngx_uint_t  state;

    state = sh->mongo_state;

    if (state >= sizeof(ngx_foko_chat_mongo_states) / sizeof(char *)) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "foko chat: invalid MongoDB state %ui", state);
        state = NGX_FOKO_CHAT_MONGO_UNKNOWN;
    }

    return state;
}


static ngx_int_t
ngx_foko_chat_status_prometheus(ngx_http_request_t *r)
{
    u_char                        *pool;
    size_t                         size;
    ngx_buf_t                     *b;
    ngx_int_t                      rc;
    ngx_uint_t                     i, n, state, count, cumulative;
    ngx_atomic_uint_t              value;
    ngx_chain_t                    out;
    ngx_foko_chat_sh_t            *sh;
    ngx_foko_chat_stats_t         *st;
    ngx_foko_chat_shm_ctx_t       *ctx;
    ngx_foko_chat_main_conf_t     *fmcf;
    ngx_foko_chat_shm_usage_t      usage;
    ngx_foko_chat_prom_worker_t   *pw;
    ngx_foko_chat_worker_stats_t  *w;
    uint64_t                       events;
    size_t                         log_size;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);
    ctx = ngx_foko_chat_shm_get(r);
    sh = ctx->sh;
    st = &sh->stats;

    pool = ngx_foko_chat_prom_escape(r->pool, &fmcf->storage_pool.name);
    if (pool == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* this worker's own slot is as fresh as the answer */
    ngx_foko_chat_status_update();

    n = ngx_foko_chat_status_nworkers();

    size = 16384 + 4096 + n * 1024 + 2 * ngx_strlen(pool);

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_foko_chat_shm_usage(ctx, &usage);
    state = ngx_foko_chat_status_mongo_state(sh, r->connection->log);

    ngx_shmtx_lock(&ctx->shpool->mutex);
    events = sh->events;
    log_size = sh->log_size;
    ngx_shmtx_unlock(&ctx->shpool->mutex);

    /* nginx */

    ngx_foko_chat_prom_family(b, "foko_chat_connections", "gauge",
                              "Client connections of nginx by state.");
#if (NGX_STAT_STUB)
    ngx_foko_chat_prom(b, "foko_chat_connections{state=\"active\"} %uA\n"
                       "foko_chat_connections{state=\"reading\"} %uA\n"
                       "foko_chat_connections{state=\"writing\"} %uA\n"
                       "foko_chat_connections{state=\"waiting\"} %uA\n",
                       *ngx_stat_active, *ngx_stat_reading,
                       *ngx_stat_writing, *ngx_stat_waiting);

    ngx_foko_chat_prom_family(b, "foko_chat_connections_accepted_total",
                              "counter",
                              "Client connections nginx accepted.");
    ngx_foko_chat_prom(b, "foko_chat_connections_accepted_total %uA\n",
                       *ngx_stat_accepted);

    ngx_foko_chat_prom_family(b, "foko_chat_connections_handled_total",
                              "counter",
                              "Client connections nginx handled.");
    ngx_foko_chat_prom(b, "foko_chat_connections_handled_total %uA\n",
                       *ngx_stat_handled);

    ngx_foko_chat_prom_family(b, "foko_chat_http_requests_total",
                              "counter", "Client requests nginx read.");
    ngx_foko_chat_prom(b, "foko_chat_http_requests_total %uA\n",
                       *ngx_stat_requests);
#else
    ngx_foko_chat_prom(b, "foko_chat_connections{state=\"active\"} %ui\n",
                       ngx_cycle->connection_n - ngx_cycle->free_connection_n);
#endif

    /* the zone */

    ngx_foko_chat_prom_family(b, "foko_chat_zone_size_bytes", "gauge",
                              "Size of the shared zone.");
    ngx_foko_chat_prom(b, "foko_chat_zone_size_bytes %uz\n", usage.size);

    ngx_foko_chat_prom_family(b, "foko_chat_zone_used_bytes", "gauge",
                              "Bytes of the shared zone in use.");
    ngx_foko_chat_prom(b, "foko_chat_zone_used_bytes %uz\n",
                       usage.size - usage.free);

    ngx_foko_chat_prom_family(b, "foko_chat_zone_free_bytes", "gauge",
                              "Free bytes of the shared zone.");
    ngx_foko_chat_prom(b, "foko_chat_zone_free_bytes %uz\n", usage.free);

    ngx_foko_chat_prom_family(b, "foko_chat_zone_created_timestamp_seconds",
                              "gauge", "When the shared zone was created; "
                              "the counters count from then.");
    ngx_foko_chat_prom(b, "foko_chat_zone_created_timestamp_seconds %T\n",
                       sh->created);

    ngx_foko_chat_prom_family(b, "foko_chat_zone_reloads_total", "counter",
                              "Reloads that kept the shared zone.");
    ngx_foko_chat_prom(b, "foko_chat_zone_reloads_total %uA\n", sh->reloads);

    ngx_foko_chat_prom_family(b, "foko_chat_cache_channels", "gauge",
                              "Channels in the cache of the shared zone.");
    ngx_foko_chat_prom(b, "foko_chat_cache_channels %uA\n",
                       st->cached_channels);

    ngx_foko_chat_prom_family(b, "foko_chat_cache_evictions_total",
                              "counter", "Channels evicted from the cache "
                              "because the shared zone was full.");
    ngx_foko_chat_prom(b, "foko_chat_cache_evictions_total %uA\n",
                       st->evictions);

    ngx_foko_chat_prom_family(b, "foko_chat_cache_users", "gauge",
                              "Users whose channel ids and account the "
                              "shared zone holds.");
    ngx_foko_chat_prom(b, "foko_chat_cache_users %uA\n", st->cached_users);

    ngx_foko_chat_prom_family(b, "foko_chat_signins_total", "counter",
                              "WebSocket sign-ins by where the user's "
                              "channel ids came from.");
    ngx_foko_chat_prom(b, "foko_chat_signins_total{from=\"zone\"} %uA\n",
                       st->signins_zone);
    ngx_foko_chat_prom(b, "foko_chat_signins_total{from=\"mongodb\"} %uA\n",
                       st->signins_mongo);

    ngx_foko_chat_prom_family(b, "foko_chat_accounts_total", "counter",
                              "Accounts read for a WebSocket sign-in or "
                              "GET /api/me, by where they came from.");
    ngx_foko_chat_prom(b, "foko_chat_accounts_total{from=\"zone\"} %uA\n",
                       st->accounts_zone);
    ngx_foko_chat_prom(b, "foko_chat_accounts_total{from=\"mongodb\"} %uA\n",
                       st->accounts_mongo);

    ngx_foko_chat_prom_family(b, "foko_chat_channel_lists_total", "counter",
                              "GET /api/channels answers, by where they "
                              "came from.");
    ngx_foko_chat_prom(b,
                       "foko_chat_channel_lists_total{from=\"zone\"} %uA\n",
                       st->channel_lists_zone);
    ngx_foko_chat_prom(b,
                       "foko_chat_channel_lists_total{from=\"mongodb\"} "
                       "%uA\n", st->channel_lists_mongo);

    /* MongoDB */

    ngx_foko_chat_prom_family(b, "foko_chat_mongo_up", "gauge",
                              "1 if the latest MongoDB check succeeded.");
    ngx_foko_chat_prom(b, "foko_chat_mongo_up %ui\n",
                       (ngx_uint_t) (state == NGX_FOKO_CHAT_MONGO_UP));

    ngx_foko_chat_prom_family(b, "foko_chat_mongo_state", "gauge",
                              "MongoDB state: 1 for the current one.");

    for (i = 0; i < sizeof(ngx_foko_chat_mongo_states) / sizeof(char *);
         i++)
    {
        ngx_foko_chat_prom(b, "foko_chat_mongo_state{state=\"%s\"} %ui\n",
                           ngx_foko_chat_mongo_states[i],
                           (ngx_uint_t) (i == state));
    }

    ngx_foko_chat_prom_family(b, "foko_chat_mongo_checked_timestamp_seconds",
                              "gauge", "When MongoDB was last checked.");
    ngx_foko_chat_prom(b, "foko_chat_mongo_checked_timestamp_seconds %uA\n",
                       sh->mongo_checked);

    ngx_foko_chat_prom_family(b, "foko_chat_mongo_probe_failures_total",
                              "counter", "MongoDB checks that failed.");
    ngx_foko_chat_prom(b, "foko_chat_mongo_probe_failures_total %uA\n",
                       st->probe_failures);

    /* messages */

    ngx_foko_chat_prom_family(b, "foko_chat_messages_stored_total",
                              "counter", "Messages written to MongoDB.");
    ngx_foko_chat_prom(b, "foko_chat_messages_stored_total %uA\n",
                       st->stored);

    ngx_foko_chat_prom_family(b, "foko_chat_messages_delivered_total",
                              "counter", "New messages queued to "
                              "WebSocket connections, one per connection.");
    ngx_foko_chat_prom(b, "foko_chat_messages_delivered_total %uA\n",
                       st->delivered);

    ngx_foko_chat_prom_family(b, "foko_chat_messages_rejected_total",
                              "counter", "Posts refused on arrival, by "
                              "reason.");

    for (i = 0; i < NGX_FOKO_CHAT_REJECTS; i++) {
        ngx_foko_chat_prom(b, "foko_chat_messages_rejected_total"
                           "{reason=\"%s\"} %uA\n",
                           ngx_foko_chat_reject_reasons[i],
                           st->rejected[i]);
    }

    ngx_foko_chat_prom_family(b, "foko_chat_write_batch_messages",
                              "histogram", "Messages per batch written to "
                              "MongoDB.");

    cumulative = 0;

    for (i = 0; i < NGX_FOKO_CHAT_STATUS_BUCKETS; i++) {
        cumulative += st->batches[i];
        ngx_foko_chat_prom(b, "foko_chat_write_batch_messages_bucket"
                           "{le=\"%ui\"} %ui\n",
                           (ngx_uint_t) 1 << i, cumulative);
    }

    count = cumulative;

    ngx_foko_chat_prom(b, "foko_chat_write_batch_messages_bucket"
                       "{le=\"+Inf\"} %ui\n"
                       "foko_chat_write_batch_messages_sum %uA\n"
                       "foko_chat_write_batch_messages_count %ui\n",
                       count, st->stored, count);

    ngx_foko_chat_prom_family(b, "foko_chat_write_batch_failures_total",
                              "counter", "Batches MongoDB did not take; "
                              "their messages are written again.");
    ngx_foko_chat_prom(b, "foko_chat_write_batch_failures_total %uA\n",
                       st->batch_failures);

    /* the event log */

    ngx_foko_chat_prom_family(b, "foko_chat_events_published_total",
                              "counter", "Events put into the event log.");
    ngx_foko_chat_prom(b, "foko_chat_events_published_total %uL\n", events);

    ngx_foko_chat_prom_family(b, "foko_chat_event_log_size_bytes", "gauge",
                              "Size of the event log in the shared zone.");
    ngx_foko_chat_prom(b, "foko_chat_event_log_size_bytes %uz\n", log_size);

    ngx_foko_chat_prom_family(b, "foko_chat_event_log_overruns_total",
                              "counter", "Times a worker fell behind the "
                              "event log and its clients had to resume.");
    ngx_foko_chat_prom(b, "foko_chat_event_log_overruns_total %uA\n",
                       st->log_overruns);

    ngx_foko_chat_status_redis_prom(b, ctx);

    /* the workers, each from its slot */

    ngx_foko_chat_prom_family(b, "foko_chat_thread_pool_tasks", "gauge",
                              "Storage tasks of the worker queued or "
                              "running on the thread pool.");

    for (i = 0; i < n; i++) {
        w = &st->workers[i];

        if (w->pid) {
            ngx_foko_chat_prom(b, "foko_chat_thread_pool_tasks"
                               "{worker=\"%ui\",pool=\"%s\"} %uA\n",
                               i, pool, w->tasks);
        }
    }

    for (pw = ngx_foko_chat_prom_workers; pw->name; pw++) {
        ngx_foko_chat_prom_family(b, pw->name, pw->type, pw->help);

        for (i = 0; i < n; i++) {
            w = &st->workers[i];

            if (w->pid == 0) {
                continue;
            }

            value = *(ngx_atomic_t *) ((u_char *) w + pw->offset);

            ngx_foko_chat_prom(b, "%s{worker=\"%ui\"} %uA\n",
                               pw->name, i, value);
        }
    }

    if (b->last == b->end) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "foko chat: the metrics took more than %uz bytes",
                      size);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;

    ngx_str_set(&r->headers_out.content_type, NGX_FOKO_CHAT_PROM_TYPE);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    ngx_str_set(&r->headers_out.charset, "utf-8");

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static void
ngx_foko_chat_status_redis_prom(ngx_buf_t *b, ngx_foko_chat_shm_ctx_t *ctx)
{
    ngx_foko_chat_redis_status_t  rs;

    if (ngx_foko_chat_redis_status(ctx, &rs) != NGX_OK) {
        return;
    }

    ngx_foko_chat_prom_family(b, "foko_chat_redis_up", "gauge",
                              "1 if the latest call to Redis succeeded.");
    ngx_foko_chat_prom(b, "foko_chat_redis_up %d\n",
                       ngx_strcmp(rs.state, "up") == 0);

    ngx_foko_chat_prom_family(b, "foko_chat_redis_published_total",
                              "counter", "Events this host wrote to "
                              "Redis for the other hosts.");
    ngx_foko_chat_prom(b, "foko_chat_redis_published_total %uL\n",
                       rs.published);

    ngx_foko_chat_prom_family(b, "foko_chat_redis_applied_total",
                              "counter", "Events of other hosts this "
                              "host read from Redis and applied.");
    ngx_foko_chat_prom(b, "foko_chat_redis_applied_total %uL\n",
                       rs.applied);

    ngx_foko_chat_prom_family(b, "foko_chat_redis_losses_total",
                              "counter", "Times events of other hosts were "
                              "missed and this host's clients resumed.");
    ngx_foko_chat_prom(b, "foko_chat_redis_losses_total %uL\n", rs.losses);

    ngx_foko_chat_prom_family(b, "foko_chat_redis_seqs_heard_total",
                              "counter", "Channels whose seq counter in "
                              "Redis was past this host's, with no event "
                              "for the seqs between.");
    ngx_foko_chat_prom(b, "foko_chat_redis_seqs_heard_total %uL\n",
                       rs.heard);

    ngx_foko_chat_prom_family(b, "foko_chat_redis_dropped_total",
                              "counter", "Events dropped because the queue "
                              "for Redis was full.");
    ngx_foko_chat_prom(b, "foko_chat_redis_dropped_total %uL\n", rs.dropped);

    ngx_foko_chat_prom_family(b, "foko_chat_redis_reader_lag_entries",
                              "gauge", "Entries in Redis this host's reader "
                              "has not read yet.");
    ngx_foko_chat_prom(b, "foko_chat_redis_reader_lag_entries %uL\n",
                       rs.lag);

    ngx_foko_chat_prom_family(b, "foko_chat_redis_hosts", "gauge",
                              "Hosts whose lease in Redis runs, this one "
                              "too.");
    ngx_foko_chat_prom(b, "foko_chat_redis_hosts %uL\n", rs.hosts);

    ngx_foko_chat_prom_family(b, "foko_chat_redis_hosts_gone_total",
                              "counter", "Other hosts whose lease ended; "
                              "their users went offline here.");
    ngx_foko_chat_prom(b, "foko_chat_redis_hosts_gone_total %uL\n",
                       rs.hosts_gone);
}


/* the slots that can belong to the workers of this configuration */

static ngx_uint_t
ngx_foko_chat_status_nworkers(void)
{
    ngx_int_t          n;
    ngx_core_conf_t   *ccf;

    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);

    n = (ccf->master && ccf->worker_processes > 0)
        ? ccf->worker_processes : 1;

    return ngx_min((ngx_uint_t) n, NGX_FOKO_CHAT_STATUS_WORKERS);
}


/* appends to b; a full buffer stays full, which the caller checks */

static void
ngx_foko_chat_prom(ngx_buf_t *b, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    b->last = ngx_vslprintf(b->last, b->end, fmt, args);
    va_end(args);
}


static void
ngx_foko_chat_prom_family(ngx_buf_t *b, const char *name, const char *type,
    const char *help)
{
    ngx_foko_chat_prom(b, "# HELP %s %s\n# TYPE %s %s\n",
                       name, help, name, type);
}


/* a label value: backslash, double quote and line feed escaped */

static u_char *
ngx_foko_chat_prom_escape(ngx_pool_t *pool, ngx_str_t *s)
{
    u_char      *dst, *p;
    ngx_uint_t   i;

    dst = ngx_pnalloc(pool, 2 * s->len + 1);
    if (dst == NULL) {
        return NULL;
    }

    p = dst;

    for (i = 0; i < s->len; i++) {
        switch (s->data[i]) {

        case '\\':
        case '"':
            *p++ = '\\';
            *p++ = s->data[i];
            break;

        case '\n':
            *p++ = '\\';
            *p++ = 'n';
            break;

        default:
            *p++ = s->data[i];
        }
    }

    *p = '\0';

    return dst;
}


ngx_int_t
ngx_foko_chat_status_init_process(ngx_cycle_t *cycle)
{
    ngx_foko_chat_shm_ctx_t  *ctx;

    ctx = ngx_foko_chat_shm_cycle(cycle);
    if (ctx == NULL) {
        return NGX_OK;
    }

    ngx_foko_chat_stats = &ctx->sh->stats;

    ngx_foko_chat_status_slot = (ngx_process == NGX_PROCESS_WORKER)
                                ? ngx_worker : 0;

    if (ngx_foko_chat_status_slot >= NGX_FOKO_CHAT_STATUS_WORKERS) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "foko chat: worker %ui has no status slot; the "
                      "status shows the first %d workers", ngx_worker,
                      NGX_FOKO_CHAT_STATUS_WORKERS);
        return NGX_OK;
    }

    /* the slot is this process's from now on, also after a reload */
    ngx_foko_chat_stats->workers[ngx_foko_chat_status_slot].pid = ngx_pid;

    ngx_foko_chat_status_update();

    ngx_foko_chat_status_ev.handler = ngx_foko_chat_status_timer;
    ngx_foko_chat_status_ev.log = cycle->log;
    ngx_foko_chat_status_ev.data = ctx;
    ngx_foko_chat_status_ev.cancelable = 1;

    ngx_add_timer(&ngx_foko_chat_status_ev, NGX_FOKO_CHAT_STATUS_PERIOD);

    return NGX_OK;
}


void
ngx_foko_chat_status_exit_process(ngx_cycle_t *cycle)
{
    ngx_foko_chat_worker_stats_t  *w;

    if (ngx_foko_chat_stats == NULL
        || ngx_foko_chat_status_slot >= NGX_FOKO_CHAT_STATUS_WORKERS)
    {
        return;
    }

    w = &ngx_foko_chat_stats->workers[ngx_foko_chat_status_slot];

    /* unless a worker of a newer cycle took the slot already */
    (void) ngx_atomic_cmp_set(&w->pid, ngx_pid, 0);
}


void
ngx_foko_chat_status_batch(ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_FOKO_CHAT_STATUS_BUCKETS - 1; i++) {
        if (n <= ((ngx_uint_t) 1 << i)) {
            break;
        }
    }

    ngx_foko_chat_stat_inc(batches[i]);
    ngx_foko_chat_stat_add(stored, n);
}


/* copies this worker's gauges into its slot, if it still has it */

static void
ngx_foko_chat_status_update(void)
{
    ngx_uint_t                     queued, loads, waited, running, waiting;
    ngx_uint_t                     limit;
    ngx_foko_chat_shm_ctx_t       *ctx;
    ngx_foko_chat_worker_stats_t  *w;

    if (ngx_foko_chat_stats == NULL
        || ngx_foko_chat_status_slot >= NGX_FOKO_CHAT_STATUS_WORKERS)
    {
        return;
    }

    w = &ngx_foko_chat_stats->workers[ngx_foko_chat_status_slot];

    if (w->pid != (ngx_atomic_uint_t) ngx_pid) {
        return;
    }

    ctx = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);
    if (ctx == NULL) {
        return;
    }

    ngx_foko_chat_messages_stats(&queued, &loads, &waited);
    ngx_foko_chat_ws_signins(&running, &waiting, &limit);

    w->ws_connections = ngx_foko_chat_ws_connections();
    w->signing_in = running;
    w->waiting_to_sign_in = waiting;
    w->signin_limit = limit;
    w->tasks = ngx_foko_chat_task_in_flight();
    w->queued = queued;
    w->channel_loads = loads;
    w->waited_for_load = waited;
    w->log_lag = (ngx_atomic_uint_t) ngx_foko_chat_bus_lag(ctx);
    w->updated = ngx_time();
}


static void
ngx_foko_chat_status_timer(ngx_event_t *ev)
{
    ngx_foko_chat_status_update();

    if (!ngx_exiting && !ngx_quit && !ngx_terminate) {
        ngx_add_timer(ev, NGX_FOKO_CHAT_STATUS_PERIOD);
    }
}


/* "foko_chat_status [json | prometheus];": the format of the location */

char *
ngx_foko_chat_status_format(ngx_conf_t *cf, ngx_http_core_loc_conf_t *clcf)
{
    ngx_str_t  *value;

    if (cf->args->nelts < 2) {
        return NGX_CONF_OK;
    }

    value = cf->args->elts;

    if (value[1].len == 4 && ngx_strncmp(value[1].data, "json", 4) == 0) {
        clcf->handler = ngx_foko_chat_status_handler;
        return NGX_CONF_OK;
    }

    if (value[1].len == 10
        && ngx_strncmp(value[1].data, "prometheus", 10) == 0)
    {
        clcf->handler = ngx_foko_chat_status_prometheus_handler;
        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\" in \"%V\", it must be "
                       "\"json\" or \"prometheus\"", &value[1], &value[0]);

    return NGX_CONF_ERROR;
}
