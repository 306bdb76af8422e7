
/*
 * Foko chat: the MongoDB store.  Every function that talks to MongoDB runs
 * on a pool thread; the rest runs on the event loop.
 */


#ifndef _NGX_FOKO_CHAT_STORE_H_INCLUDED_
#define _NGX_FOKO_CHAT_STORE_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_task.h"


/* server selection and connection bounds unless the URI sets them */
#define NGX_FOKO_CHAT_MONGO_SELECT_MS     2000
#define NGX_FOKO_CHAT_MONGO_CONNECT_MS    2000

#define NGX_FOKO_CHAT_MONGO_PROBE_MS      5000

#define NGX_FOKO_CHAT_ERR_LEN             256


char *ngx_foko_chat_store_check_uri(ngx_conf_t *cf, ngx_str_t *uri);
ngx_int_t ngx_foko_chat_store_init_process(ngx_cycle_t *cycle);
void ngx_foko_chat_store_exit_process(ngx_cycle_t *cycle);

/* the result of a "ping" task */
typedef struct {
    ngx_int_t                  rc;
    u_char                     err[NGX_FOKO_CHAT_ERR_LEN];
} ngx_foko_chat_ping_t;


/* thread side of a task whose data is an ngx_foko_chat_ping_t */
void ngx_foko_chat_store_ping_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);

/* event loop side: record a probe's outcome in the shared zone */
void ngx_foko_chat_store_report(ngx_int_t rc, u_char *err, ngx_log_t *log);


#endif /* _NGX_FOKO_CHAT_STORE_H_INCLUDED_ */
