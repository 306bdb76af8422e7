
/*
 * Foko chat: inter-worker notification.
 *
 * Events go into a log in the shared zone; a datagram on a socket that the
 * master created before forking wakes every other worker, which reads the
 * log from where it stopped.  See ngx_foko_chat_bus.c.
 */


#ifndef _NGX_FOKO_CHAT_BUS_H_INCLUDED_
#define _NGX_FOKO_CHAT_BUS_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_shm.h"


#define NGX_FOKO_CHAT_EV_MESSAGE          1   /* a new message: seq order */
#define NGX_FOKO_CHAT_EV_CHANNEL          2   /* to the channel's members */
#define NGX_FOKO_CHAT_EV_JOIN             3   /* ids: users who joined */
#define NGX_FOKO_CHAT_EV_LEAVE            4   /* user: who left */
#define NGX_FOKO_CHAT_EV_TYPING           5   /* not to "user" */
#define NGX_FOKO_CHAT_EV_PRESENCE         6   /* ids: the user's channels */
#define NGX_FOKO_CHAT_EV_LOST             7   /* other hosts' events missed */


typedef struct {
    ngx_uint_t                 kind;
    u_char                     channel[NGX_FOKO_CHAT_OID_LEN];
    u_char                     user[NGX_FOKO_CHAT_OID_LEN];
    int64_t                    seq;
    int64_t                    through;    /* the channel's, as published */
    u_char                    *json;       /* the event as clients get it */
    size_t                     json_len;
    u_char                   (*ids)[NGX_FOKO_CHAT_OID_LEN];
    ngx_uint_t                 nids;
} ngx_foko_chat_event_t;


/* runs on the event loop of every worker, for every event in log order */
typedef void (*ngx_foko_chat_bus_handler_pt)(ngx_foko_chat_event_t *ev);

/* events were overwritten before this worker read them */
typedef void (*ngx_foko_chat_bus_lost_pt)(void);


/* the log's size for a zone of "size" bytes; 0: the zone is too small */
size_t ngx_foko_chat_bus_log_size(size_t shm_size, size_t max_message);

/* fresh zone: the log; called with the zone locked */
ngx_int_t ngx_foko_chat_bus_init_zone(ngx_foko_chat_shm_ctx_t *ctx,
    size_t size);

ngx_int_t ngx_foko_chat_bus_init_module(ngx_cycle_t *cycle);
ngx_int_t ngx_foko_chat_bus_init_process(ngx_cycle_t *cycle,
    ngx_foko_chat_bus_handler_pt handler, ngx_foko_chat_bus_lost_pt lost);

/*
 * Appends an event; with the zone locked, so that an event goes in at the
 * same moment as the change it announces.  Call ngx_foko_chat_bus_wake()
 * after unlocking.
 */
ngx_int_t ngx_foko_chat_bus_publish_locked(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_event_t *ev);
void ngx_foko_chat_bus_wake(ngx_foko_chat_shm_ctx_t *ctx);

/* both of them */
ngx_int_t ngx_foko_chat_bus_publish(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_event_t *ev);

/*
 * A message this worker stored ("kind": NGX_FOKO_CHAT_STORED_*, "text" as
 * serialized), forwarded to the workers of the zone that replaced this
 * one, if a reload did; 1 if it was sent.
 */
ngx_uint_t ngx_foko_chat_bus_forward(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_uint_t kind, u_char *text, size_t len);

/* called once, when this worker begins a graceful shutdown */
typedef void (*ngx_foko_chat_bus_exit_pt)(void);
void ngx_foko_chat_bus_on_exit(ngx_foko_chat_bus_exit_pt handler);

/* bytes of the log this worker has not read yet */
uint64_t ngx_foko_chat_bus_lag(ngx_foko_chat_shm_ctx_t *ctx);

#endif /* _NGX_FOKO_CHAT_BUS_H_INCLUDED_ */
