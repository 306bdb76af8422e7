
/*
 * Foko chat: WebSocket connections (the foko_chat_websocket location).
 */


#ifndef _NGX_FOKO_CHAT_WS_H_INCLUDED_
#define _NGX_FOKO_CHAT_WS_H_INCLUDED_


#include "ngx_foko_chat.h"


#define NGX_FOKO_CHAT_WS_AUTH_TIMEOUT    5000       /* ms */
#define NGX_FOKO_CHAT_WS_SIGNIN_TIMEOUT  30000      /* ms */
#define NGX_FOKO_CHAT_WS_PING_INTERVAL   30000      /* ms */
#define NGX_FOKO_CHAT_WS_BUFFER          (512 * 1024)
#define NGX_FOKO_CHAT_WS_MAX_MESSAGE     (64 * 1024)
#define NGX_FOKO_CHAT_WS_TYPING          2000       /* ms between events */


/* server{} configuration: the origins allowed to open a connection */
typedef struct {
    ngx_array_t               *origins;    /* of ngx_str_t; NULL: same host */
} ngx_foko_chat_srv_conf_t;


ngx_int_t ngx_foko_chat_ws_handler(ngx_http_request_t *r);
char *ngx_foko_chat_ws_origins(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

ngx_int_t ngx_foko_chat_ws_init_process(ngx_cycle_t *cycle);

/* for the status page: this worker's connections */
ngx_uint_t ngx_foko_chat_ws_connections(void);
/* sign-ins on the thread pool, and the connections waiting for a turn */
void ngx_foko_chat_ws_signins(ngx_uint_t *running, ngx_uint_t *waiting,
    ngx_uint_t *limit);


#endif /* _NGX_FOKO_CHAT_WS_H_INCLUDED_ */
