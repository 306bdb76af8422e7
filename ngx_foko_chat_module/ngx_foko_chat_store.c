
/*
 * Foko chat: the MongoDB store.
 *
 * Each worker owns one mongoc client pool, created in init_process.  Making
 * the pool does not connect, so a worker starts whether or not MongoDB is
 * up; the driver connects in the background and pool threads wait at most
 * the server selection timeout for a usable server.
 */


#include "ngx_foko_chat_store.h"
#include "ngx_foko_chat_rehydrate.h"
#include "ngx_foko_chat_shm.h"


typedef struct {
    mongoc_client_pool_t      *pool;
    char                      *db;
    ngx_event_t                probe;
    unsigned                   probing:1;
    unsigned                   indexing:1;
    unsigned                   indexed:1;
} ngx_foko_chat_store_t;


static mongoc_uri_t *ngx_foko_chat_store_uri(ngx_str_t *s, ngx_log_t *log);
static void ngx_foko_chat_store_log(mongoc_log_level_t level,
    const char *domain, const char *message, void *data);
static void ngx_foko_chat_store_probe_handler(ngx_event_t *ev);
static ngx_int_t ngx_foko_chat_store_probe_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_store_indexes(ngx_log_t *log);
static void ngx_foko_chat_store_indexes_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_store_indexes_done(
    ngx_foko_chat_task_t *task);


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


static mongoc_uri_t *
ngx_foko_chat_store_uri(ngx_str_t *s, ngx_log_t *log)
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
                                       NGX_FOKO_CHAT_MONGO_SOCKET_MS);
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

    uri = ngx_foko_chat_store_uri(&fmcf->mongo_uri, cycle->log);
    if (uri == NULL) {
        return NGX_ERROR;
    }

    db = mongoc_uri_get_database(uri);
    if (db == NULL || *db == '\0') {
        db = NGX_FOKO_CHAT_DEFAULT_DB;
    }

    ngx_foko_chat_store.db = bson_strdup(db);

    ngx_foko_chat_store.pool = mongoc_client_pool_new(uri);
    mongoc_uri_destroy(uri);

    if (ngx_foko_chat_store.pool == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "foko chat: mongoc_client_pool_new() failed");
        return NGX_ERROR;
    }

    (void) mongoc_client_pool_set_error_api(ngx_foko_chat_store.pool,
                                            MONGOC_ERROR_API_VERSION_2);

    ngx_foko_chat_store.probe.handler = ngx_foko_chat_store_probe_handler;
    ngx_foko_chat_store.probe.data = fmcf;
    ngx_foko_chat_store.probe.log = cycle->log;
    ngx_foko_chat_store.probe.cancelable = 1;

    ngx_add_timer(&ngx_foko_chat_store.probe, 1);

    return NGX_OK;
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

    bson_free(ngx_foko_chat_store.db);
    ngx_foko_chat_store.db = NULL;

    mongoc_cleanup();
}


mongoc_client_t *
ngx_foko_chat_store_pop(void)
{
    return mongoc_client_pool_pop(ngx_foko_chat_store.pool);
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
    ngx_foko_chat_shm_ctx_t  *ctx;

    ctx = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);
    if (ctx == NULL) {
        return;
    }

    if (rc == NGX_OK) {
        if (ngx_foko_chat_shm_set_mongo_state(ctx, NGX_FOKO_CHAT_MONGO_UP)) {
            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "foko chat: MongoDB is reachable");
        }

        return;
    }

    if (ngx_foko_chat_shm_set_mongo_state(ctx, NGX_FOKO_CHAT_MONGO_DOWN)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "foko chat: MongoDB is unreachable: %s", err);
    }
}


/*
 * A probe per worker keeps the shared MongoDB state current for the status
 * page and lets the driver reconnect before a request needs it.
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

    if (ping->rc == NGX_OK && !ngx_foko_chat_store.indexed) {
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


static void
ngx_foko_chat_store_indexes_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_ping_t  *result = task->data;

    result->rc = ngx_foko_chat_store_users_indexes(result->err);

    if (result->rc == NGX_OK) {
        result->rc = ngx_foko_chat_store_channels_indexes(result->err);
    }
}


static ngx_int_t
ngx_foko_chat_store_indexes_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_ping_t  *result = task->data;

    ngx_foko_chat_store.indexing = 0;

    if (task->failed || result->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, task->log, 0,
                      "foko chat: cannot create indexes: %s", result->err);
        return NGX_OK;
    }

    ngx_foko_chat_store.indexed = 1;

    return NGX_OK;
}
