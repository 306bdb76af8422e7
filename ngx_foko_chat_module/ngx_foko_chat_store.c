
/*
 * Foko chat: the MongoDB store.
 *
 * Each worker owns one mongoc client pool, created in init_process.  Making
 * the pool does not connect, so a worker starts whether or not MongoDB is
 * up; the driver connects in the background and pool threads wait at most
 * the server selection timeout for a usable server.
 *
 * Also the helpers the store's files share: indexes, ObjectIds, dates,
 * and the locks.  MongoDB applies each update to a document atomically.
 * FerretDB 1.x reads, changes and writes documents back without
 * isolation, so that of two concurrent updates of one document one is
 * lost (20 concurrent $push of one array keep 3).  There, and only there,
 * every update that depends on what a document holds runs under a lock:
 * a document in "locks" whose unique _id makes one insert win.
 */


#include "ngx_foko_chat_store_int.h"
#include "ngx_foko_chat_rehydrate.h"
#include "ngx_foko_chat_shm.h"


typedef struct {
    mongoc_client_pool_t      *pool;          /* the quick calls */
    mongoc_client_pool_t      *slow;          /* messages, read marks */
    char                      *db;
    ngx_event_t                probe;
    ngx_msec_t                 retry;         /* the indexes' backoff */
    ngx_msec_t                 retry_at;
    unsigned                   probing:1;
    unsigned                   alone:1;       /* failing, others not */
    unsigned                   indexing:1;
    unsigned                   indexed:1;
} ngx_foko_chat_store_t;


static mongoc_uri_t *ngx_foko_chat_store_uri(ngx_str_t *s,
    int32_t socket_ms, ngx_log_t *log);
static mongoc_client_pool_t *ngx_foko_chat_store_pool(ngx_str_t *s,
    int32_t socket_ms, ngx_log_t *log);
static void ngx_foko_chat_store_log(mongoc_log_level_t level,
    const char *domain, const char *message, void *data);
static void ngx_foko_chat_store_probe_handler(ngx_event_t *ev);
static ngx_int_t ngx_foko_chat_store_probe_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_store_indexes(ngx_log_t *log);
static void ngx_foko_chat_store_indexes_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_store_indexes_done(
    ngx_foko_chat_task_t *task);
static void ngx_foko_chat_store_indexes_retry(ngx_foko_chat_task_t *task,
    ngx_foko_chat_ping_t *result);


static ngx_foko_chat_store_t  ngx_foko_chat_store;


char *
ngx_foko_chat_store_check_uri(ngx_conf_t *cf, ngx_str_t *uri)
{
    mongoc_uri_t  *u;
    bson_error_t   error;

    /* configuration strings are null-terminated by the parser */

    u = mongoc_uri_new_with_error((char *) uri->data, &error);
    if (u == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid MongoDB URI \"%V\" in "
                           "\"foko_chat_mongo_uri\": %s",
                           uri, error.message);
        return NGX_CONF_ERROR;
    }

    mongoc_uri_destroy(u);

    return NGX_CONF_OK;
}


/*
 * What names the database in a checked URI, as a checksum: the database
 * (the default if none), the SRV name or the hosts in their order, and
 * the replica set.  The credentials and the options are left out: a new
 * password or timeout is the same database.
 */

uint32_t
ngx_foko_chat_store_db_id(ngx_str_t *s)
{
    uint32_t                    crc;
    const char                 *v;
    mongoc_uri_t               *uri;
    const mongoc_host_list_t   *host;

    ngx_crc32_init(crc);

    uri = mongoc_uri_new((char *) s->data);
    if (uri == NULL) {
        ngx_crc32_update(&crc, s->data, s->len);
        ngx_crc32_final(crc);
        return crc;
    }

    v = mongoc_uri_get_database(uri);
    if (v == NULL || *v == '\0') {
        v = NGX_FOKO_CHAT_DEFAULT_DB;
    }

    ngx_crc32_update(&crc, (u_char *) v, ngx_strlen(v) + 1);

    v = mongoc_uri_get_srv_hostname(uri);
    if (v) {
        ngx_crc32_update(&crc, (u_char *) v, ngx_strlen(v) + 1);
    }

    for (host = mongoc_uri_get_hosts(uri); host; host = host->next) {
        ngx_crc32_update(&crc, (u_char *) host->host_and_port,
                         ngx_strlen(host->host_and_port) + 1);
    }

    v = mongoc_uri_get_replica_set(uri);
    if (v) {
        ngx_crc32_update(&crc, (u_char *) v, ngx_strlen(v) + 1);
    }

    mongoc_uri_destroy(uri);

    ngx_crc32_final(crc);

    return crc;
}


static mongoc_uri_t *
ngx_foko_chat_store_uri(ngx_str_t *s, int32_t socket_ms, ngx_log_t *log)
{
    mongoc_uri_t  *uri;
    bson_error_t   error;

    uri = mongoc_uri_new_with_error((char *) s->data, &error);
    if (uri == NULL) {
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "foko chat: invalid MongoDB URI: %s", error.message);
        return NULL;
    }

    if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS)) {
        mongoc_uri_set_option_as_int32(uri,
                                       MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
                                       NGX_FOKO_CHAT_MONGO_SELECT_MS);
    }

    if (!mongoc_uri_has_option(uri, MONGOC_URI_CONNECTTIMEOUTMS)) {
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS,
                                       NGX_FOKO_CHAT_MONGO_CONNECT_MS);
    }

    /* no call may hold a pool thread for the driver's 300 s default */

    if (!mongoc_uri_has_option(uri, MONGOC_URI_SOCKETTIMEOUTMS)) {
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS,
                                       socket_ms);
    }

    /* a read that lost its server is answered 503, not tried again */

    if (!mongoc_uri_has_option(uri, MONGOC_URI_RETRYREADS)) {
        mongoc_uri_set_option_as_bool(uri, MONGOC_URI_RETRYREADS, false);
    }

    /* a server that stops answering is known within a few seconds */

    if (!mongoc_uri_has_option(uri, MONGOC_URI_HEARTBEATFREQUENCYMS)) {
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_HEARTBEATFREQUENCYMS,
                                       NGX_FOKO_CHAT_MONGO_HEARTBEAT_MS);
    }

    if (!mongoc_uri_has_option(uri, MONGOC_URI_APPNAME)) {
        mongoc_uri_set_appname(uri, "foko-chat-nginx");
    }

    return uri;
}


ngx_int_t
ngx_foko_chat_store_init_process(ngx_cycle_t *cycle)
{
    const char                 *db;
    mongoc_uri_t               *uri;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_foko_chat_module);

    if (fmcf == NULL || !fmcf->used) {
        return NGX_OK;
    }

    mongoc_init();
    mongoc_log_set_handler(ngx_foko_chat_store_log, NULL);

    uri = ngx_foko_chat_store_uri(&fmcf->mongo_uri,
                                  NGX_FOKO_CHAT_MONGO_SOCKET_MS, cycle->log);
    if (uri == NULL) {
        return NGX_ERROR;
    }

    db = mongoc_uri_get_database(uri);
    if (db == NULL || *db == '\0') {
        db = NGX_FOKO_CHAT_DEFAULT_DB;
    }

    ngx_foko_chat_store.db = bson_strdup(db);

    mongoc_uri_destroy(uri);

    ngx_foko_chat_store.pool = ngx_foko_chat_store_pool(&fmcf->mongo_uri,
                                   NGX_FOKO_CHAT_MONGO_SOCKET_MS, cycle->log);
    if (ngx_foko_chat_store.pool == NULL) {
        return NGX_ERROR;
    }

    ngx_foko_chat_store.slow = ngx_foko_chat_store_pool(&fmcf->mongo_uri,
                                   NGX_FOKO_CHAT_MONGO_SLOW_MS, cycle->log);
    if (ngx_foko_chat_store.slow == NULL) {
        return NGX_ERROR;
    }

    ngx_foko_chat_store.probe.handler = ngx_foko_chat_store_probe_handler;
    ngx_foko_chat_store.probe.data = fmcf;
    ngx_foko_chat_store.probe.log = cycle->log;
    ngx_foko_chat_store.probe.cancelable = 1;

    ngx_add_timer(&ngx_foko_chat_store.probe, 1);

    return NGX_OK;
}


/*
 * A client pool whose replies may be silent for socket_ms: the calls that
 * FerretDB answers quickly whatever the data, and the others, have pools
 * of their own (the driver has no socket timeout per call).
 */

static mongoc_client_pool_t *
ngx_foko_chat_store_pool(ngx_str_t *s, int32_t socket_ms, ngx_log_t *log)
{
    mongoc_uri_t          *uri;
    mongoc_client_pool_t  *pool;

    uri = ngx_foko_chat_store_uri(s, socket_ms, log);
    if (uri == NULL) {
        return NULL;
    }

    pool = mongoc_client_pool_new(uri);
    mongoc_uri_destroy(uri);

    if (pool == NULL) {
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "foko chat: mongoc_client_pool_new() failed");
        return NULL;
    }

    (void) mongoc_client_pool_set_error_api(pool, MONGOC_ERROR_API_VERSION_2);

    return pool;
}


/* the driver's own messages go to nginx's error log, not to stderr */

static void
ngx_foko_chat_store_log(mongoc_log_level_t level, const char *domain,
    const char *message, void *data)
{
    ngx_uint_t  lvl;

    switch (level) {

    case MONGOC_LOG_LEVEL_ERROR:
    case MONGOC_LOG_LEVEL_CRITICAL:
        lvl = NGX_LOG_ERR;
        break;

    case MONGOC_LOG_LEVEL_WARNING:
        lvl = NGX_LOG_WARN;
        break;

    case MONGOC_LOG_LEVEL_MESSAGE:
    case MONGOC_LOG_LEVEL_INFO:
        lvl = NGX_LOG_INFO;
        break;

    default:
        return;
    }

    ngx_log_error(lvl, ngx_cycle->log, 0, "foko chat: mongoc %s: %s",
                  domain, message);
}


void
ngx_foko_chat_store_exit_process(ngx_cycle_t *cycle)
{
    /* the thread pools have been drained by now */

    if (ngx_foko_chat_store.pool == NULL) {
        return;
    }

    mongoc_client_pool_destroy(ngx_foko_chat_store.pool);
    ngx_foko_chat_store.pool = NULL;

    if (ngx_foko_chat_store.slow) {
        mongoc_client_pool_destroy(ngx_foko_chat_store.slow);
        ngx_foko_chat_store.slow = NULL;
    }

    bson_free(ngx_foko_chat_store.db);
    ngx_foko_chat_store.db = NULL;

    mongoc_cleanup();
}


mongoc_client_t *
ngx_foko_chat_store_pop(void)
{
    return mongoc_client_pool_pop(ngx_foko_chat_store.pool);
}


/* for the calls on messages and read marks: see NGX_FOKO_CHAT_MONGO_SLOW_MS */

mongoc_client_t *
ngx_foko_chat_store_pop_slow(void)
{
    return mongoc_client_pool_pop(ngx_foko_chat_store.slow);
}


void
ngx_foko_chat_store_push_slow(mongoc_client_t *client)
{
    mongoc_client_pool_push(ngx_foko_chat_store.slow, client);
}


const char *
ngx_foko_chat_store_db(void)
{
    return ngx_foko_chat_store.db;
}


void
ngx_foko_chat_store_push(mongoc_client_t *client)
{
    mongoc_client_pool_push(ngx_foko_chat_store.pool, client);
}


mongoc_collection_t *
ngx_foko_chat_store_collection(mongoc_client_t *client, const char *name)
{
    return mongoc_client_get_collection(client, ngx_foko_chat_store.db, name);
}


void
ngx_foko_chat_store_error(u_char *err, const char *what, bson_error_t *error)
{
    (void) ngx_snprintf(err, NGX_FOKO_CHAT_ERR_LEN - 1, "%s: %s%Z", what,
                        error->message);
}


void
ngx_foko_chat_store_ping_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_ping_t  *ping = task->data;

    bool              ok;
    bson_t           *cmd;
    bson_error_t      error;
    mongoc_client_t  *client;

    ping->rc = NGX_ERROR;

    client = mongoc_client_pool_pop(ngx_foko_chat_store.pool);
    if (client == NULL) {
        ngx_cpystrn(ping->err, (u_char *) "no MongoDB client available",
                    NGX_FOKO_CHAT_ERR_LEN);
        return;
    }

    cmd = BCON_NEW("ping", BCON_INT32(1));

    ok = mongoc_client_command_simple(client, "admin", cmd, NULL, NULL,
                                      &error);
    bson_destroy(cmd);

    mongoc_client_pool_push(ngx_foko_chat_store.pool, client);

    if (!ok) {
        ngx_cpystrn(ping->err, (u_char *) error.message,
                    NGX_FOKO_CHAT_ERR_LEN);
        return;
    }

    ping->rc = NGX_OK;
}


void
ngx_foko_chat_store_report(ngx_int_t rc, u_char *err, ngx_log_t *log)
{
    ngx_msec_int_t            since;
    ngx_foko_chat_shm_ctx_t  *ctx;

    ctx = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);
    if (ctx == NULL) {
        return;
    }

    if (rc == NGX_OK) {
        ctx->sh->mongo_up_at = ngx_current_msec;
        ngx_foko_chat_store.alone = 0;

        if (ngx_foko_chat_shm_set_mongo_state(ctx, NGX_FOKO_CHAT_MONGO_UP)) {
            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "foko chat: MongoDB is reachable");
        }

        return;
    }

    ngx_foko_chat_stat_inc(probe_failures);

    /*
     * Another worker reached MongoDB since this check began: the zone's
     * view stays up (a server that hangs or is gone fails every worker's
     * check, and the next one turns it down).
     */

    since = (ngx_msec_int_t) (ngx_current_msec - ctx->sh->mongo_up_at);

    if (ctx->sh->mongo_state == NGX_FOKO_CHAT_MONGO_UP
        && since < NGX_FOKO_CHAT_MONGO_PROBE_MS * 3 / 2)
    {
        if (!ngx_foko_chat_store.alone) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "foko chat: this worker's check of MongoDB "
                          "failed while another's succeeded: %s", err);
            ngx_foko_chat_store.alone = 1;
        }

        return;
    }

    if (ngx_foko_chat_shm_set_mongo_state(ctx, NGX_FOKO_CHAT_MONGO_DOWN)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "foko chat: MongoDB is unreachable: %s", err);
    }
}


/*
 * A probe per worker, every second, keeps the shared MongoDB state current
 * for /api/health and the status page (on the 2 s pool: a hung server is
 * known within about 3 s), and lets the driver reconnect before a request
 * needs it.
 */

static void
ngx_foko_chat_store_probe_handler(ngx_event_t *ev)
{
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ev->data;

    if (ngx_exiting || ngx_quit || ngx_foko_chat_store.probing) {
        return;
    }

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_ping_t), ev->log);
    if (task == NULL) {
        goto next;
    }

    task->run = ngx_foko_chat_store_ping_run;
    task->done = ngx_foko_chat_store_probe_done;

    if (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool) != NGX_OK) {
        ngx_foko_chat_task_free(task);
        goto next;
    }

    ngx_foko_chat_store.probing = 1;

    return;

next:

    ngx_add_timer(ev, NGX_FOKO_CHAT_MONGO_PROBE_MS);
}


static ngx_int_t
ngx_foko_chat_store_probe_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_ping_t  *ping = task->data;

    ngx_foko_chat_store.probing = 0;

    ngx_foko_chat_store_report(ping->rc, ping->err, task->log);

    if (ping->rc == NGX_OK && !ngx_foko_chat_store.indexed
        && (ngx_foko_chat_store.retry == 0
            || (ngx_msec_int_t) (ngx_current_msec
                                 - ngx_foko_chat_store.retry_at) >= 0))
    {
        ngx_foko_chat_store_indexes(task->log);
    }

    if (ping->rc == NGX_OK) {
        ngx_foko_chat_rehydrate(task->log);
    }

    if (!ngx_exiting && !ngx_quit) {
        ngx_add_timer(&ngx_foko_chat_store.probe,
                      NGX_FOKO_CHAT_MONGO_PROBE_MS);
    }

    return NGX_OK;
}


/*
 * Indexes are created by every worker once MongoDB answers; creating an
 * existing index is a no-op.  Until then uniqueness is not enforced, so
 * the first probe runs right at start.
 */

static void
ngx_foko_chat_store_indexes(ngx_log_t *log)
{
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_main_conf_t  *fmcf;

    if (ngx_foko_chat_store.indexing) {
        return;
    }

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_ping_t), log);
    if (task == NULL) {
        return;
    }

    task->run = ngx_foko_chat_store_indexes_run;
    task->done = ngx_foko_chat_store_indexes_done;

    if (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool) != NGX_OK) {
        ngx_foko_chat_task_free(task);
        return;
    }

    ngx_foko_chat_store.indexing = 1;
}


/* the indexes exist: the next runs only go on with the backfill */
static ngx_uint_t  ngx_foko_chat_store_indexes_made;


static void
ngx_foko_chat_store_indexes_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_ping_t  *result = task->data;

    result->rc = NGX_OK;

    if (!ngx_foko_chat_store_indexes_made) {
        result->rc = ngx_foko_chat_store_users_indexes(result->err);

        if (result->rc == NGX_OK) {
            result->rc = ngx_foko_chat_store_channels_indexes(result->err);
        }

        ngx_foko_chat_store_indexes_made = (result->rc == NGX_OK);
    }

    if (result->rc == NGX_OK) {
        result->rc = ngx_foko_chat_store_users_backfill(result->err);
    }
}


static ngx_int_t
ngx_foko_chat_store_indexes_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_ping_t  *result = task->data;

    ngx_foko_chat_store.indexing = 0;

    if (!task->failed && result->rc == NGX_BUSY) {
        /* one batch of the backfill done, more left: the next at once */
        ngx_foko_chat_store.retry = 0;

        if (!ngx_exiting && !ngx_quit) {
            ngx_foko_chat_store_indexes(task->log);
        }

        return NGX_OK;
    }

    if (!task->failed && result->rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_WARN, task->log, 0,
                      "foko chat: %s", result->err);

    } else if (task->failed || result->rc != NGX_OK) {
        ngx_foko_chat_store_indexes_retry(task, result);
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_NOTICE, task->log, 0,
                  "foko chat: indexes created, usernames are unique now");

    ngx_foko_chat_store.indexed = 1;

    return NGX_OK;
}


/*
 * A slow or lost MongoDB (a timeout, a dropped connection) is tried again
 * at warn; a refusal by the server, an operator's matter, at error.  Each
 * failure doubles the wait up to NGX_FOKO_CHAT_INDEXES_RETRY_MAX, and only
 * a check that MongoDB answers starts the next try.  What the backfill
 * did stays done, so a retry goes on where the last one stopped.
 */

static void
ngx_foko_chat_store_indexes_retry(ngx_foko_chat_task_t *task,
    ngx_foko_chat_ping_t *result)
{
    ngx_uint_t   level;
    ngx_msec_t  *retry = &ngx_foko_chat_store.retry;

    *retry = (*retry == 0) ? NGX_FOKO_CHAT_INDEXES_RETRY_MS
                           : ngx_min(*retry * 2,
                                     NGX_FOKO_CHAT_INDEXES_RETRY_MAX);

    ngx_foko_chat_store.retry_at = ngx_current_msec + *retry;

    level = (!task->failed && result->rc == NGX_ERROR) ? NGX_LOG_ERR
                                                        : NGX_LOG_WARN;

    ngx_log_error(level, task->log, 0,
                  "foko chat: indexes not created yet, will retry in %M s: "
                  "%s", *retry / 1000,
                  task->failed ? "the task failed" : (char *) result->err);
}


/* whether the server loses concurrent updates: -1 until known */
static volatile ngx_int_t   ngx_foko_chat_store_racy = -1;


/*
 * Creates one index, trying the best variant first.  With "partial" (the
 * field whose presence puts a document in a unique index) that is a
 * partial index, then a unique sparse one for servers without partial
 * indexes, then a plain index named "fallback", so that at least queries
 * stay fast where neither exists.  A server that refuses a variant moves
 * us to the next; a failed connection does not, and answers NGX_AGAIN.
 */

ngx_int_t
ngx_foko_chat_store_index(mongoc_client_t *client, const char *coll,
    const char *name, const char *fallback, bson_t *key, ngx_uint_t unique,
    const char *partial, u_char *err)
{
    bool           ok;
    bson_t         cmd, indexes, index, filter, exists;
    ngx_uint_t     variant, last;
    const char    *variant_name;
    bson_error_t   error;

    last = (partial != NULL) ? 2 : 0;

    for (variant = 0; variant <= last; variant++) {
        variant_name = (variant == 2) ? fallback : name;

        bson_init(&cmd);
        BSON_APPEND_UTF8(&cmd, "createIndexes", coll);
        BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &indexes);
        BSON_APPEND_DOCUMENT_BEGIN(&indexes, "0", &index);
        BSON_APPEND_DOCUMENT(&index, "key", key);
        BSON_APPEND_UTF8(&index, "name", variant_name);

        if (unique && variant < 2) {
            BSON_APPEND_BOOL(&index, "unique", true);
        }

        if (partial != NULL && variant == 0) {
            BSON_APPEND_DOCUMENT_BEGIN(&index, "partialFilterExpression",
                                       &filter);
            BSON_APPEND_DOCUMENT_BEGIN(&filter, partial, &exists);
            BSON_APPEND_BOOL(&exists, "$exists", true);
            bson_append_document_end(&filter, &exists);
            bson_append_document_end(&index, &filter);

        } else if (partial != NULL && variant == 1) {
            BSON_APPEND_BOOL(&index, "sparse", true);
        }

        bson_append_document_end(&indexes, &index);
        bson_append_array_end(&cmd, &indexes);

        ok = mongoc_client_write_command_with_opts(client,
                                                   ngx_foko_chat_store_db(),
                                                   &cmd, NULL, NULL, &error);
        bson_destroy(&cmd);

        /*
         * a concurrent creator may make ours fail, or even cost us the
         * connection: what counts is that the index exists
         */

        if (ok
            || ngx_foko_chat_store_has_index(client, coll, variant_name))
        {
            return NGX_OK;
        }

        if (error.domain != MONGOC_ERROR_SERVER) {
            break;
        }
    }

    (void) ngx_snprintf(err, NGX_FOKO_CHAT_ERR_LEN - 1,
                        "%s index \"%s\": %s%Z", coll, name, error.message);

    return (error.domain == MONGOC_ERROR_SERVER) ? NGX_ERROR : NGX_AGAIN;
}


ngx_uint_t
ngx_foko_chat_store_has_index(mongoc_client_t *client, const char *coll,
    const char *name)
{
    bson_iter_t           it;
    ngx_uint_t            found;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_collection_t  *c;

    c = ngx_foko_chat_store_collection(client, coll);

    cursor = mongoc_collection_find_indexes_with_opts(c, NULL);
    found = 0;

    while (!found && mongoc_cursor_next(cursor, &doc)) {
        found = bson_iter_init_find(&it, doc, "name")
                && BSON_ITER_HOLDS_UTF8(&it)
                && ngx_strcmp(bson_iter_utf8(&it, NULL), name) == 0;
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(c);

    return found;
}


/*
 * Where updates race (see the top of the file), takes the lock "key":
 * NGX_OK, to be released with ngx_foko_chat_store_unlock(); NGX_DECLINED
 * where no lock is needed; NGX_ERROR if it stays taken.  A lock is held
 * for a round trip or two; one older than NGX_FOKO_CHAT_LOCK_STALE was
 * left by a thread that lost its connection, and is broken.
 */

ngx_int_t
ngx_foko_chat_store_lock(mongoc_client_t *client, const char *key,
    bson_oid_t *token, u_char *err)
{
    bool                  ok;
    bson_t               *doc, *stale;
    int64_t               now, deadline;
    ngx_int_t             racy;
    ngx_msec_t            delay;
    bson_error_t          error;
    mongoc_collection_t  *coll;

    racy = ngx_foko_chat_store_is_racy(client, err);

    if (racy != 1) {
        return (racy == 0) ? NGX_DECLINED : NGX_ERROR;
    }

    bson_oid_init(token, NULL);

    coll = ngx_foko_chat_store_collection(client, "locks");

    deadline = ngx_foko_chat_store_now() + NGX_FOKO_CHAT_LOCK_WAIT;
    delay = 1;

    for ( ;; ) {
        now = ngx_foko_chat_store_now();

        doc = BCON_NEW("_id", BCON_UTF8(key), "token", BCON_OID(token),
                       "at", BCON_DATE_TIME(now));
        ok = mongoc_collection_insert_one(coll, doc, NULL, NULL, &error);
        bson_destroy(doc);

        if (ok) {
            break;
        }

        if (error.code != NGX_FOKO_CHAT_DUPLICATE_KEY) {
            ngx_foko_chat_store_error(err, "lock", &error);
            break;
        }

        stale = BCON_NEW("_id", BCON_UTF8(key),
                         "at", "{", "$lt",
                             BCON_DATE_TIME(now - NGX_FOKO_CHAT_LOCK_STALE),
                         "}");
        (void) mongoc_collection_delete_one(coll, stale, NULL, NULL, NULL);
        bson_destroy(stale);

        if (now > deadline) {
            (void) ngx_snprintf(err, NGX_FOKO_CHAT_ERR_LEN - 1,
                                "lock \"%s\" stays taken%Z", key);
            break;
        }

        ngx_msleep(delay);

        if (delay < 32) {
            delay *= 2;
        }
    }

    mongoc_collection_destroy(coll);

    return ok ? NGX_OK : NGX_ERROR;
}


void
ngx_foko_chat_store_unlock(mongoc_client_t *client, const char *key,
    bson_oid_t *token)
{
    bson_t               *doc;
    mongoc_collection_t  *coll;

    /* a failure leaves the lock to go stale */

    doc = BCON_NEW("_id", BCON_UTF8(key), "token", BCON_OID(token));
    coll = ngx_foko_chat_store_collection(client, "locks");

    (void) mongoc_collection_delete_one(coll, doc, NULL, NULL, NULL);

    mongoc_collection_destroy(coll);
    bson_destroy(doc);
}


/* "<what>:<a hex>[:<b hex>]": the canonical ids, one key per document */

void
ngx_foko_chat_store_lock_key(char *key, const char *what,
    const bson_oid_t *a, const bson_oid_t *b)
{
    char  x[NGX_FOKO_CHAT_OID_SIZE], y[NGX_FOKO_CHAT_OID_SIZE];

    bson_oid_to_string(a, x);

    if (b == NULL) {
        ngx_sprintf((u_char *) key, "%s:%s%Z", what, x);
        return;
    }

    bson_oid_to_string(b, y);
    ngx_sprintf((u_char *) key, "%s:%s:%s%Z", what, x, y);
}


/*
 * 1 if the server loses concurrent updates, 0 if not, NGX_ERROR if it
 * does not answer.  FerretDB 1.x names itself in buildInfo.
 */

ngx_int_t
ngx_foko_chat_store_is_racy(mongoc_client_t *client, u_char *err)
{
    bool          ok;
    bson_t       *cmd, reply;
    ngx_int_t     racy;
    const char   *version;
    bson_iter_t   it;
    bson_error_t  error;

    if (ngx_foko_chat_store_racy >= 0) {
        return ngx_foko_chat_store_racy;
    }

    cmd = BCON_NEW("buildInfo", BCON_INT32(1));
    ok = mongoc_client_command_simple(client, "admin", cmd, NULL, &reply,
                                      &error);
    bson_destroy(cmd);

    if (!ok) {
        bson_destroy(&reply);
        ngx_foko_chat_store_error(err, "build info", &error);
        return NGX_ERROR;
    }

    racy = 0;

    if (bson_iter_init_find(&it, &reply, "ferretdbVersion")
        && BSON_ITER_HOLDS_UTF8(&it))
    {
        version = bson_iter_utf8(&it, NULL);
        racy = (ngx_strncmp(version, "v1.", 3) == 0
                || ngx_strncmp(version, "v0.", 3) == 0);
    }

    bson_destroy(&reply);

    ngx_foko_chat_store_racy = racy;

    return racy;
}


/* NGX_OK with *oid for 24 hex digits, else NGX_DECLINED */

ngx_int_t
ngx_foko_chat_store_oid(u_char *hex, bson_oid_t *oid)
{
    if (hex == NULL
        || ngx_strlen(hex) != NGX_FOKO_CHAT_OID_LEN
        || !bson_oid_is_valid((char *) hex, NGX_FOKO_CHAT_OID_LEN))
    {
        return NGX_DECLINED;
    }

    bson_oid_init_from_string(oid, (char *) hex);

    return NGX_OK;
}


/* "YYYY-MM-DDTHH:MM:SS.mmmZ", UTC; buf has NGX_FOKO_CHAT_ISO_LEN bytes */

void
ngx_foko_chat_store_iso(int64_t ms, u_char *buf)
{
    ngx_tm_t  tm;

    if (ms < 0) {
        ms = 0;

    } else if (ms > NGX_FOKO_CHAT_TIME_MAX) {
        ms = NGX_FOKO_CHAT_TIME_MAX;
    }

    ngx_gmtime((time_t) (ms / 1000), &tm);

    (void) ngx_sprintf(buf, "%4d-%02d-%02dT%02d:%02d:%02d.%03dZ%Z",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       (int) (ms % 1000));
}


/*
 * The reverse, for the dates of messages: "YYYY-MM-DDTHH:MM:SS", then
 * optionally a fraction (milliseconds kept), then "Z".
 */

ngx_int_t
ngx_foko_chat_store_parse_iso(const char *s, int64_t *ms)
{
    int64_t      days, frac;
    ngx_int_t    year, month, day, hour, min, sec, i, digits;
    const char  *p;

    static const char  layout[] = "dddd-dd-ddTdd:dd:dd";

    for (i = 0; layout[i]; i++) {
        if (layout[i] == 'd' ? (s[i] < '0' || s[i] > '9')
                             : (s[i] != layout[i]))
        {
            return NGX_ERROR;
        }
    }

#define ngx_foko_chat_digits2(p)  (((p)[0] - '0') * 10 + (p)[1] - '0')

    year = ngx_foko_chat_digits2(s) * 100 + ngx_foko_chat_digits2(s + 2);
    month = ngx_foko_chat_digits2(s + 5);
    day = ngx_foko_chat_digits2(s + 8);
    hour = ngx_foko_chat_digits2(s + 11);
    min = ngx_foko_chat_digits2(s + 14);
    sec = ngx_foko_chat_digits2(s + 17);

#undef ngx_foko_chat_digits2

    if (year < 1970 || month < 1 || month > 12 || day < 1 || day > 31
        || hour > 23 || min > 59 || sec > 60)
    {
        return NGX_ERROR;
    }

    p = s + sizeof(layout) - 1;
    frac = 0;

    if (*p == '.') {
        for (p++, digits = 0; *p >= '0' && *p <= '9'; p++, digits++) {
            if (digits < 3) {
                frac = frac * 10 + *p - '0';
            }
        }

        if (digits == 0) {
            return NGX_ERROR;
        }

        for ( /* void */ ; digits < 3; digits++) {
            frac *= 10;
        }
    }

    if (p[0] != 'Z' || p[1] != '\0') {
        return NGX_ERROR;
    }

    /* days since the epoch of a proleptic Gregorian date, March based */

    if (month <= 2) {
        year--;
        month += 12;
    }

    days = 365 * year + year / 4 - year / 100 + year / 400
           + (153 * (month - 3) + 2) / 5 + day - 1 - 719468;

    *ms = ((days * 86400 + hour * 3600 + min * 60 + sec) * 1000) + frac;

    return NGX_OK;
}


/* the wall clock: the event loop's cached time is not ours to read */

int64_t
ngx_foko_chat_store_now(void)
{
    struct timeval  tv;

    ngx_gettimeofday(&tv);

    return (int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000;
}


/* "matchedCount" of an update's reply */

int64_t
ngx_foko_chat_store_matched(bson_t *reply)
{
    bson_iter_t  it;

    if (bson_iter_init_find(&it, reply, "matchedCount")) {
        return bson_iter_as_int64(&it);
    }

    return 0;
}


void
ngx_foko_chat_store_new_id(u_char *id)
{
    bson_oid_t  oid;

    bson_oid_init(&oid, NULL);
    bson_oid_to_string(&oid, (char *) id);
}


void
ngx_foko_chat_store_iso_now(u_char *buf)
{
    ngx_tm_t     tm;
    ngx_time_t  *tp;

    tp = ngx_timeofday();
    ngx_gmtime(tp->sec, &tm);

    (void) ngx_sprintf(buf, "%4d-%02d-%02dT%02d:%02d:%02d.%03MZ%Z",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       tp->msec);
}


/*
 * One update_one of a document under its lock "key": NGX_OK if it matched
 * (with "upsert": or was inserted), NGX_DECLINED if it matched nothing,
 * NGX_ERROR with err.  An upsert that loses to a concurrent insert of the
 * same document (a duplicate key) is tried once again, as an update.
 */

ngx_int_t
ngx_foko_chat_store_update_locked(const char *collection, const char *what,
    const char *key, bson_t *filter, bson_t *update, ngx_uint_t upsert,
    u_char *err)
{
    bool                  ok;
    bson_t               *opts, reply;
    ngx_int_t             rc, locked;
    bson_oid_t            token;
    ngx_uint_t            tries;
    bson_error_t          error;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    opts = upsert ? BCON_NEW("upsert", BCON_BOOL(true)) : NULL;

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, collection);

    locked = ngx_foko_chat_store_lock(client, key, &token, err);

    if (locked == NGX_ERROR) {
        rc = NGX_ERROR;
        goto done;
    }

    rc = NGX_ERROR;

    for (tries = 0; tries < 2; tries++) {
        ok = mongoc_collection_update_one(coll, filter, update, opts, &reply,
                                          &error);
        if (ok) {
            rc = (upsert || ngx_foko_chat_store_matched(&reply))
                 ? NGX_OK : NGX_DECLINED;
            bson_destroy(&reply);
            break;
        }

        bson_destroy(&reply);
        ngx_foko_chat_store_error(err, what, &error);

        if (!upsert || error.code != NGX_FOKO_CHAT_DUPLICATE_KEY) {
            break;
        }
    }

    if (locked == NGX_OK) {
        ngx_foko_chat_store_unlock(client, key, &token);
    }

done:

    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);

    if (opts) {
        bson_destroy(opts);
    }

    return rc;
}
