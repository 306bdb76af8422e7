
/*
 * Foko chat: shared types of the module.
 */


#ifndef _NGX_FOKO_CHAT_H_INCLUDED_
#define _NGX_FOKO_CHAT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_thread_pool.h>


#define NGX_FOKO_CHAT_SHM_NAME        "foko_chat"
#define NGX_FOKO_CHAT_SHM_DEFAULT     (32 * 1024 * 1024)
#define NGX_FOKO_CHAT_SHM_MIN         (1024 * 1024)
#define NGX_FOKO_CHAT_DEFAULT_DB      "foko_chat"


typedef struct {
    ngx_str_t                  mongo_uri;
    size_t                     shm_size;
    ngx_str_t                  thread_pool_name;
    ngx_thread_pool_t         *thread_pool;
    ngx_shm_zone_t            *shm_zone;

    /* set when some location serves the module's handlers */
    unsigned                   used:1;
} ngx_foko_chat_main_conf_t;


extern ngx_module_t  ngx_foko_chat_module;


#endif /* _NGX_FOKO_CHAT_H_INCLUDED_ */
