
/*
 * Foko chat: shared types of the module.
 */


#ifndef _NGX_FOKO_CHAT_H_INCLUDED_
#define _NGX_FOKO_CHAT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_thread_pool.h>

#include "ngx_foko_chat_oid.h"


#define NGX_FOKO_CHAT_SHM_NAME        "foko_chat"
#define NGX_FOKO_CHAT_SHM_DEFAULT     (32 * 1024 * 1024)
#define NGX_FOKO_CHAT_SHM_MIN         (1024 * 1024)
#define NGX_FOKO_CHAT_DEFAULT_DB      "foko_chat"


/* the limits of names and ids, the same for every transport and file */
#define NGX_FOKO_CHAT_EMAIL_MAX        254
#define NGX_FOKO_CHAT_USERNAME_MAX     128     /* bytes, up to 32 chars */
#define NGX_FOKO_CHAT_CHANNEL_NAME_MAX 256     /* bytes, up to 64 chars */
#define NGX_FOKO_CHAT_CLIENT_ID_MAX    64
#define NGX_FOKO_CHAT_ERR_LEN          256     /* a storage error's text */

/* a ngx_str_t that holds exactly an ObjectId */
#define ngx_foko_chat_is_id(s)                                               \
    ngx_foko_chat_oid_valid((s)->data, (s)->len)


typedef struct ngx_foko_chat_jwt_conf_s   ngx_foko_chat_jwt_conf_t;
typedef struct ngx_foko_chat_mail_conf_s  ngx_foko_chat_mail_conf_t;
typedef struct ngx_foko_chat_redis_conf_s ngx_foko_chat_redis_conf_t;


/* a thread pool named by a directive */
typedef struct {
    ngx_str_t                  name;
    ngx_thread_pool_t         *pool;
} ngx_foko_chat_pool_t;


typedef struct {
    uint32_t                   t_cost;       /* passes */
    uint32_t                   m_cost;       /* KiB */
    uint32_t                   parallelism;
    ngx_uint_t                 concurrency;  /* hashes at once per worker */
} ngx_foko_chat_hash_conf_t;


/* so many events per window; max 0 is "not set" while parsing */
typedef struct {
    ngx_uint_t                 max;
    time_t                     window;       /* seconds */
} ngx_foko_chat_limit_t;


#define NGX_FOKO_CHAT_LIMIT_LOGIN_ACCOUNT    0
#define NGX_FOKO_CHAT_LIMIT_LOGIN_ADDRESS    1
#define NGX_FOKO_CHAT_LIMIT_FORGOT_ACCOUNT   2
#define NGX_FOKO_CHAT_LIMIT_FORGOT_ADDRESS   3
#define NGX_FOKO_CHAT_LIMIT_SIGNUP_ADDRESS   4
#define NGX_FOKO_CHAT_LIMITS                 5


typedef struct {
    ngx_str_t                  mongo_uri;
    size_t                     shm_size;
    ngx_foko_chat_pool_t       storage_pool;
    ngx_foko_chat_pool_t       hash_pool;
    ngx_shm_zone_t            *shm_zone;

    ngx_foko_chat_hash_conf_t  hash;

    ngx_foko_chat_limit_t      limits[NGX_FOKO_CHAT_LIMITS];

    ngx_uint_t                 max_members;
    size_t                     max_message_size;
    ngx_uint_t                 write_queue;
    ngx_uint_t                 history_cache;

    /* WebSocket connections: ngx_foko_chat_ws.c */
    ngx_msec_t                 ws_auth_timeout;
    ngx_msec_t                 ws_signin_timeout;
    ngx_msec_t                 ws_ping;
    size_t                     ws_buffer;
    ngx_msec_t                 presence_grace;

    /* owned by ngx_foko_chat_jwt.c and ngx_foko_chat_mail.c */
    ngx_foko_chat_jwt_conf_t  *jwt;
    ngx_foko_chat_mail_conf_t *mail;
    ngx_str_t                  public_url;

    /* ngx_foko_chat_redis_conf.c: NULL without any foko_chat_redis_* */
    ngx_foko_chat_redis_conf_t *redis;

    /* set when some location serves the module's handlers; api: tokens */
    unsigned                   used:1;
    unsigned                   api:1;
} ngx_foko_chat_main_conf_t;


extern ngx_module_t  ngx_foko_chat_module;


#endif /* _NGX_FOKO_CHAT_H_INCLUDED_ */
