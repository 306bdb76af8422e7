
/*
 * Foko chat: the module, its directives and process hooks.
 */


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_api.h"
#include "ngx_foko_chat_hash.h"
#include "ngx_foko_chat_jwt.h"
#include "ngx_foko_chat_limit.h"
#include "ngx_foko_chat_mail.h"
#include "ngx_foko_chat_cache.h"
#include "ngx_foko_chat_channels.h"
#include "ngx_foko_chat_messages.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_store.h"
#include "ngx_foko_chat_status.h"
#include "ngx_foko_chat_bus.h"
#include "ngx_foko_chat_ws.h"
#include "ngx_foko_chat_presence.h"
#include "ngx_foko_chat_redis.h"


static void *ngx_foko_chat_create_main_conf(ngx_conf_t *cf);
static char *ngx_foko_chat_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_foko_chat_mongo_uri(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_foko_chat_thread_pool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_foko_chat_shm_size_check(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_foko_chat_message_size_check(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_foko_chat_location(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void *ngx_foko_chat_create_srv_conf(ngx_conf_t *cf);
static char *ngx_foko_chat_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_foko_chat_buffer_check(ngx_conf_t *cf, void *post,
    void *data);
static ngx_int_t ngx_foko_chat_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_foko_chat_init_process(ngx_cycle_t *cycle);
static void ngx_foko_chat_exit_process(ngx_cycle_t *cycle);
static void ngx_foko_chat_exiting(void);
static void ngx_foko_chat_keep(ngx_event_t *ev);
static ngx_uint_t ngx_foko_chat_open_clients(ngx_cycle_t *cycle);


/*
 * A worker that shuts down (a reload, a graceful stop) leaves as soon as
 * only cancelable timers are left, and a request that waits on the
 * thread pool (a post whose membership or seq is being read, a batch
 * being stored) has none: its client would get no answer for a message
 * that is stored.  When the shutdown begins (the bus tells), the keeper,
 * a timer that is never cancelable, looks every 100 ms whether a
 * client's connection is still open, for at most 60 s.
 */

#define NGX_FOKO_CHAT_KEEP_EXITING   100
#define NGX_FOKO_CHAT_KEEP_MAX       60


static ngx_event_t       ngx_foko_chat_keeper;
static ngx_connection_t  ngx_foko_chat_keeper_conn;
static time_t            ngx_foko_chat_keeper_since;


static ngx_conf_post_t  ngx_foko_chat_shm_size_post = {
    ngx_foko_chat_shm_size_check
};

static ngx_conf_num_bounds_t  ngx_foko_chat_max_members_bounds = {
    ngx_conf_check_num_bounds, 2, 10000
};

static ngx_conf_num_bounds_t  ngx_foko_chat_write_queue_bounds = {
    ngx_conf_check_num_bounds, 1, 1000000
};

static ngx_conf_num_bounds_t  ngx_foko_chat_history_cache_bounds = {
    ngx_conf_check_num_bounds, 0, 10000
};

static ngx_conf_post_t  ngx_foko_chat_message_size_post = {
    ngx_foko_chat_message_size_check
};

static ngx_conf_post_t  ngx_foko_chat_buffer_post = {
    ngx_foko_chat_buffer_check
};

static ngx_conf_num_bounds_t  ngx_foko_chat_redis_partitions_bounds = {
    ngx_conf_check_num_bounds, 1, NGX_FOKO_CHAT_REDIS_PARTITIONS_MAX
};

static ngx_conf_num_bounds_t  ngx_foko_chat_redis_length_bounds = {
    ngx_conf_check_num_bounds, 100, 100000000
};


static ngx_command_t  ngx_foko_chat_commands[] = {

    { ngx_string("foko_chat_mongo_uri"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_foko_chat_mongo_uri,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, mongo_uri),
      NULL },

    { ngx_string("foko_chat_shm_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, shm_size),
      &ngx_foko_chat_shm_size_post },

    { ngx_string("foko_chat_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_foko_chat_thread_pool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, storage_pool),
      NULL },

    { ngx_string("foko_chat_hash_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_foko_chat_thread_pool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, hash_pool),
      NULL },

    { ngx_string("foko_chat_password_hash"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_foko_chat_hash_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, hash),
      NULL },

    { ngx_string("foko_chat_jwt_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_foko_chat_jwt_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("foko_chat_jwt_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_foko_chat_jwt_key_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("foko_chat_jwt_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_foko_chat_jwt_ttl,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("foko_chat_mail"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_foko_chat_mail_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("foko_chat_public_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_foko_chat_mail_public_url,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("foko_chat_limit"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_foko_chat_limit_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("foko_chat_max_members"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, max_members),
      &ngx_foko_chat_max_members_bounds },

    { ngx_string("foko_chat_max_message_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, max_message_size),
      &ngx_foko_chat_message_size_post },

    { ngx_string("foko_chat_write_queue"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, write_queue),
      &ngx_foko_chat_write_queue_bounds },

    { ngx_string("foko_chat_history_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, history_cache),
      &ngx_foko_chat_history_cache_bounds },

    { ngx_string("foko_chat_allowed_origins"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_1MORE,
      ngx_foko_chat_ws_origins,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("foko_chat_websocket_auth_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, ws_auth_timeout),
      NULL },

    { ngx_string("foko_chat_websocket_signin_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, ws_signin_timeout),
      NULL },

    { ngx_string("foko_chat_websocket_ping"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, ws_ping),
      NULL },

    { ngx_string("foko_chat_websocket_buffer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, ws_buffer),
      &ngx_foko_chat_buffer_post },

    { ngx_string("foko_chat_presence_grace"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_main_conf_t, presence_grace),
      NULL },

    { ngx_string("foko_chat_redis_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_foko_chat_redis_url,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("foko_chat_host_id"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_foko_chat_redis_host_id,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("foko_chat_redis_partitions"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_foko_chat_redis_number,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_redis_conf_t, partitions),
      &ngx_foko_chat_redis_partitions_bounds },

    { ngx_string("foko_chat_redis_stream_length"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_foko_chat_redis_number,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_foko_chat_redis_conf_t, stream_length),
      &ngx_foko_chat_redis_length_bounds },

    { ngx_string("foko_chat_redis_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_foko_chat_redis_pool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("foko_chat_websocket"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_foko_chat_location,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_foko_chat_ws_handler },

    { ngx_string("foko_chat_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_foko_chat_location,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_foko_chat_api_handler },

    { ngx_string("foko_chat_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_foko_chat_location,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_foko_chat_status_handler },

      ngx_null_command
};


static ngx_http_module_t  ngx_foko_chat_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_foko_chat_create_main_conf,        /* create main configuration */
    ngx_foko_chat_init_main_conf,          /* init main configuration */

    ngx_foko_chat_create_srv_conf,         /* create server configuration */
    ngx_foko_chat_merge_srv_conf,          /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_foko_chat_module = {
    NGX_MODULE_V1,
    &ngx_foko_chat_module_ctx,             /* module context */
    ngx_foko_chat_commands,                /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_foko_chat_init_module,             /* init module */
    ngx_foko_chat_init_process,            /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_foko_chat_exit_process,            /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_foko_chat_create_main_conf(ngx_conf_t *cf)
{
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_pcalloc(cf->pool, sizeof(ngx_foko_chat_main_conf_t));
    if (fmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     fmcf->mongo_uri = { 0, NULL };
     *     fmcf->storage_pool = { { 0, NULL }, NULL };
     *     fmcf->hash_pool = { { 0, NULL }, NULL };
     *     fmcf->shm_zone = NULL;
     *     fmcf->hash = { 0, 0, 0, 0 };
     *     fmcf->limits = { { 0, 0 }, ... };
     *     fmcf->jwt = NULL;
     *     fmcf->mail = NULL;
     *     fmcf->public_url = { 0, NULL };
     *     fmcf->redis = NULL;
     *     fmcf->used = 0;
     *     fmcf->api = 0;
     */

    fmcf->shm_size = NGX_CONF_UNSET_SIZE;
    fmcf->max_members = NGX_CONF_UNSET_UINT;
    fmcf->max_message_size = NGX_CONF_UNSET_SIZE;
    fmcf->write_queue = NGX_CONF_UNSET_UINT;
    fmcf->history_cache = NGX_CONF_UNSET_UINT;
    fmcf->ws_auth_timeout = NGX_CONF_UNSET_MSEC;
    fmcf->ws_signin_timeout = NGX_CONF_UNSET_MSEC;
    fmcf->ws_ping = NGX_CONF_UNSET_MSEC;
    fmcf->ws_buffer = NGX_CONF_UNSET_SIZE;
    fmcf->presence_grace = NGX_CONF_UNSET_MSEC;

    return fmcf;
}


static void *
ngx_foko_chat_create_srv_conf(ngx_conf_t *cf)
{
    ngx_foko_chat_srv_conf_t  *fscf;

    fscf = ngx_pcalloc(cf->pool, sizeof(ngx_foko_chat_srv_conf_t));
    if (fscf == NULL) {
        return NULL;
    }

    fscf->origins = NGX_CONF_UNSET_PTR;

    return fscf;
}


static char *
ngx_foko_chat_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_foko_chat_srv_conf_t  *prev = parent;
    ngx_foko_chat_srv_conf_t  *conf = child;

    ngx_conf_merge_ptr_value(conf->origins, prev->origins, NULL);

    return NGX_CONF_OK;
}


static char *
ngx_foko_chat_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_foko_chat_main_conf_t  *fmcf = conf;

    ngx_foko_chat_shm_ctx_t  *ctx;

    ngx_conf_init_size_value(fmcf->shm_size, NGX_FOKO_CHAT_SHM_DEFAULT);
    ngx_conf_init_uint_value(fmcf->max_members, NGX_FOKO_CHAT_MAX_MEMBERS);
    ngx_conf_init_size_value(fmcf->max_message_size,
                             NGX_FOKO_CHAT_MESSAGE_SIZE);
    ngx_conf_init_uint_value(fmcf->write_queue, NGX_FOKO_CHAT_WRITE_QUEUE);
    ngx_conf_init_uint_value(fmcf->history_cache,
                             NGX_FOKO_CHAT_HISTORY_CACHE);
    ngx_conf_init_msec_value(fmcf->ws_auth_timeout,
                             NGX_FOKO_CHAT_WS_AUTH_TIMEOUT);
    ngx_conf_init_msec_value(fmcf->ws_signin_timeout,
                             NGX_FOKO_CHAT_WS_SIGNIN_TIMEOUT);
    ngx_conf_init_msec_value(fmcf->ws_ping, NGX_FOKO_CHAT_WS_PING_INTERVAL);
    ngx_conf_init_size_value(fmcf->ws_buffer, NGX_FOKO_CHAT_WS_BUFFER);
    ngx_conf_init_msec_value(fmcf->presence_grace,
                             NGX_FOKO_CHAT_PRESENCE_GRACE);

    if (fmcf->storage_pool.name.data == NULL) {
        ngx_str_set(&fmcf->storage_pool.name, "default");
    }

    if (ngx_foko_chat_mail_init_main_conf(cf, fmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_foko_chat_redis_init_conf(cf, fmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (!fmcf->used) {
        return NGX_CONF_OK;
    }

    if (fmcf->mongo_uri.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"foko_chat_mongo_uri\" is not set; the "
                           "\"foko_chat_*\" locations need a MongoDB");
        return NGX_CONF_ERROR;
    }

    if (fmcf->storage_pool.pool == NULL) {
        /* nginx creates the "default" pool when it is referenced */
        fmcf->storage_pool.pool = ngx_thread_pool_add(cf,
                                                  &fmcf->storage_pool.name);
        if (fmcf->storage_pool.pool == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (fmcf->hash_pool.pool == NULL) {
        /* a capped share of the storage pool: see ngx_foko_chat_hash.c */
        fmcf->hash_pool = fmcf->storage_pool;
    }

    ngx_foko_chat_hash_init_conf(&fmcf->hash);
    ngx_foko_chat_limit_init_conf(fmcf);

    if (fmcf->api && ngx_foko_chat_jwt_init_conf(cf, fmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (fmcf->ws_auth_timeout == 0 || fmcf->ws_signin_timeout == 0
        || fmcf->ws_ping == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"foko_chat_websocket_auth_timeout\", "
                           "\"foko_chat_websocket_signin_timeout\" and "
                           "\"foko_chat_websocket_ping\" must be above 0");
        return NGX_CONF_ERROR;
    }

    fmcf->shm_zone = ngx_foko_chat_shm_add(cf, fmcf->shm_size,
                                       ngx_foko_chat_store_db_id(
                                           &fmcf->mongo_uri));
    if (fmcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    ctx = fmcf->shm_zone->data;
    ctx->log_size = ngx_foko_chat_bus_log_size(fmcf->shm_size,
                                               fmcf->max_message_size);

    if (ctx->log_size == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"foko_chat_shm_size\" %uz is too small for "
                           "messages of \"foko_chat_max_message_size\" "
                           "%uz: the event log would take over half of it",
                           fmcf->shm_size, fmcf->max_message_size);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_foko_chat_mongo_uri(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_foko_chat_main_conf_t  *fmcf = conf;

    ngx_str_t  *value;

    if (fmcf->mongo_uri.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_foko_chat_store_check_uri(cf, &value[1]) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    fmcf->mongo_uri = value[1];

    return NGX_CONF_OK;
}


/*
 * A named pool must be declared with "thread_pool" before the http block,
 * so that a typo fails here naming this directive.  "default" needs no
 * declaration: nginx creates it when it is first referenced.
 */

static char *
ngx_foko_chat_thread_pool(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t             *value;
    ngx_thread_pool_t     *tp;
    ngx_foko_chat_pool_t  *ref;

    ref = (ngx_foko_chat_pool_t *) ((char *) conf + cmd->offset);

    if (ref->name.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    tp = ngx_thread_pool_get(cf->cycle, &value[1]);

    if (tp == NULL) {
        if (value[1].len != 7
            || ngx_strncmp(value[1].data, "default", 7) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown thread pool \"%V\" in \"%V\"; "
                               "declare it with \"thread_pool %V ...;\" "
                               "before the http block",
                               &value[1], &cmd->name, &value[1]);
            return NGX_CONF_ERROR;
        }

        tp = ngx_thread_pool_add(cf, &value[1]);
        if (tp == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    ref->name = value[1];
    ref->pool = tp;

    return NGX_CONF_OK;
}


static char *
ngx_foko_chat_shm_size_check(ngx_conf_t *cf, void *post, void *data)
{
    size_t  *sp = data;

    if (*sp < NGX_FOKO_CHAT_SHM_MIN) {
        return "must be at least 1m";
    }

    return NGX_CONF_OK;
}


/* a message must fit in an API body, with room for its JSON around it */

static char *
ngx_foko_chat_message_size_check(ngx_conf_t *cf, void *post, void *data)
{
    size_t  *sp = data;

    if (*sp < 1 || *sp > NGX_FOKO_CHAT_API_MAX_BODY / 2) {
        return "must be between 1 and 32k";
    }

    return NGX_CONF_OK;
}


/* a connection's output queue must hold the largest event, with room */

static char *
ngx_foko_chat_buffer_check(ngx_conf_t *cf, void *post, void *data)
{
    size_t  *sp = data;

    if (*sp < 64 * 1024 || *sp > 64 * 1024 * 1024) {
        return "must be between 64k and 64m";
    }

    return NGX_CONF_OK;
}


/* the locations: cmd->post is the handler */

static char *
ngx_foko_chat_location(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t   *clcf;
    ngx_foko_chat_main_conf_t  *fmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate or conflicts with another content handler";
    }

    if (cmd->post == ngx_foko_chat_api_handler
        && (clcf->exact_match || clcf->named
#if (NGX_PCRE)
            || clcf->regex
#endif
           ))
    {
        return "needs a prefix location, such as \"location /api/\"";
    }

    clcf->handler = (ngx_http_handler_pt) cmd->post;

    fmcf = ngx_http_conf_get_module_main_conf(cf, ngx_foko_chat_module);
    fmcf->used = 1;

    if (cmd->post == ngx_foko_chat_api_handler
        || cmd->post == ngx_foko_chat_ws_handler)
    {
        /* both check tokens */
        fmcf->api = 1;
    }

    if (cmd->post == ngx_foko_chat_status_handler) {
        return ngx_foko_chat_status_format(cf, clcf);
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_foko_chat_init_module(ngx_cycle_t *cycle)
{
    /* in the master, before the workers are forked */
    return ngx_foko_chat_bus_init_module(cycle);
}


static ngx_int_t
ngx_foko_chat_init_process(ngx_cycle_t *cycle)
{
    /*
     * Nothing here may depend on MongoDB or the mail provider being up:
     * nginx does not respawn a worker whose init_process failed.
     */

    if (ngx_foko_chat_status_init_process(cycle) != NGX_OK
        || ngx_foko_chat_mail_init_process(cycle) != NGX_OK
        || ngx_foko_chat_messages_init_process(cycle) != NGX_OK
        || ngx_foko_chat_ws_init_process(cycle) != NGX_OK
        || ngx_foko_chat_redis_init_process(cycle) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_process == NGX_PROCESS_WORKER) {
        /* a debug log reads an event's data as a connection */
        ngx_foko_chat_keeper_conn.fd = (ngx_socket_t) -1;
        ngx_foko_chat_keeper.data = &ngx_foko_chat_keeper_conn;
        ngx_foko_chat_keeper.handler = ngx_foko_chat_keep;
        ngx_foko_chat_keeper.log = cycle->log;
        ngx_foko_chat_bus_on_exit(ngx_foko_chat_exiting);
    }

    return ngx_foko_chat_store_init_process(cycle);
}


/* the worker begins to shut down: before nginx looks at its timers */

static void
ngx_foko_chat_exiting(void)
{
    if (ngx_foko_chat_keeper_since == 0) {
        ngx_foko_chat_keeper_since = ngx_time();
        ngx_foko_chat_keep(&ngx_foko_chat_keeper);
    }
}


static void
ngx_foko_chat_keep(ngx_event_t *ev)
{
    ngx_uint_t  n;

    n = ngx_foko_chat_open_clients((ngx_cycle_t *) ngx_cycle);

    if (n == 0) {
        return;
    }

    if (ngx_time() - ngx_foko_chat_keeper_since >= NGX_FOKO_CHAT_KEEP_MAX) {
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "foko chat: %ui client connections still wait for "
                      "an answer after %d s; the worker exits",
                      n, NGX_FOKO_CHAT_KEEP_MAX);
        return;
    }

    ngx_add_timer(ev, NGX_FOKO_CHAT_KEEP_EXITING);
}


/*
 * The clients' connections that nginx would report as left open at exit:
 * accepted ones only, not the sockets that other modules (nchan) keep in
 * nginx connections of their own.
 */

static ngx_uint_t
ngx_foko_chat_open_clients(ngx_cycle_t *cycle)
{
    ngx_uint_t         i, n;
    ngx_connection_t  *c;

    c = cycle->connections;
    n = 0;

    for (i = 0; i < cycle->connection_n; i++) {
        if (c[i].fd != (ngx_socket_t) -1 && c[i].read && c[i].listening
            && !c[i].read->accept && !c[i].read->channel
            && !c[i].read->resolver)
        {
            n++;
        }
    }

    return n;
}


static void
ngx_foko_chat_exit_process(ngx_cycle_t *cycle)
{
    ngx_foko_chat_redis_exit_process(cycle);
    ngx_foko_chat_store_exit_process(cycle);
    ngx_foko_chat_mail_exit_process(cycle);
    ngx_foko_chat_status_exit_process(cycle);
}
