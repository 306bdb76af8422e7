
/*
 * Foko chat: what the files of a WebSocket connection share: the
 * connection's context, its subscriptions, and each file's entry points.
 */


#ifndef _NGX_FOKO_CHAT_WS_INT_H_INCLUDED_
#define _NGX_FOKO_CHAT_WS_INT_H_INCLUDED_


#include "ngx_foko_chat_ws.h"
#include "ngx_foko_chat_bus.h"
#include "ngx_foko_chat_cache.h"
#include "ngx_foko_chat_event.h"
#include "ngx_foko_chat_json.h"
#include "ngx_foko_chat_jwt.h"
#include "ngx_foko_chat_messages.h"
#include "ngx_foko_chat_presence.h"
#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_store.h"
#include "ngx_foko_chat_task.h"
#include "ngx_foko_chat_users.h"
#include "ngx_foko_chat_ws_command.h"
#include "ngx_foko_chat_ws_frame.h"


#define NGX_FOKO_CHAT_WS_CLOSE_AUTH     4001
#define NGX_FOKO_CHAT_WS_CLOSE_BINARY   1003
#define NGX_FOKO_CHAT_WS_READ_BUF       16384
#define NGX_FOKO_CHAT_WS_IOV            64
#define NGX_FOKO_CHAT_WS_OUT_MAX        4096     /* frames queued */
#define NGX_FOKO_CHAT_WS_LINGER         2000     /* ms after our close */
#define NGX_FOKO_CHAT_WS_TASKS          16       /* in flight, each */
#define NGX_FOKO_CHAT_WS_AUTHS          64       /* in flight, a worker */
#define NGX_FOKO_CHAT_WS_POSTS          256      /* sends not yet acked */
#define NGX_FOKO_CHAT_WS_PAGE           200      /* messages per resume */
#define NGX_FOKO_CHAT_WS_PENDING        4096     /* held back, a channel */
#define NGX_FOKO_CHAT_WS_STALL          1000     /* ms */


typedef struct ngx_foko_chat_ws_s       ngx_foko_chat_ws_t;
typedef struct ngx_foko_chat_ws_chan_s  ngx_foko_chat_ws_chan_t;
typedef struct ngx_foko_chat_ws_user_s  ngx_foko_chat_ws_user_t;


/* framed bytes, shared by every connection they are queued for */

typedef struct {
    ngx_uint_t                 refs;
    size_t                     len;
    u_char                     data[1];
} ngx_foko_chat_ws_frame_buf_t;


/*
 * A connection's subscription to a channel.  Every stored seq in (low,
 * sent] was sent to the connection (or is, by the replay under way), and
 * live messages go on after "sent"; a resume replays only below "low".
 * While it replays a gap below messages sent live, "skip" is the last of
 * those: the replay jumps from "low" over them.
 */

typedef struct {
    ngx_queue_t                link;         /* in the channel's list */
    ngx_foko_chat_ws_chan_t   *chan;
    ngx_foko_chat_ws_t        *ws;
    int64_t                    sent;         /* the last seq it was sent */
    int64_t                    low;
    int64_t                    skip;         /* 0: none */
    int64_t                    resume_from;  /* the client's seq */
    int64_t                    again;        /* asked meanwhile; -1: no */
    ngx_msec_t                 typing;
    unsigned                   resuming:1;
    unsigned                   quiet:1;      /* no "resumed": not asked */
} ngx_foko_chat_ws_sub_t;


/* a message event that waits for its predecessors */

typedef struct {
    ngx_queue_t                queue;
    int64_t                    seq;
    size_t                     len;
    u_char                     json[1];
} ngx_foko_chat_ws_held_t;


/* a channel with subscribers on this worker: allocated as a tree node */

struct ngx_foko_chat_ws_chan_s {
    u_char                     color;
    u_char                     id[NGX_FOKO_CHAT_OID_LEN];
    ngx_queue_t                subs;
    ngx_uint_t                 nsubs;
    int64_t                    delivered;    /* -1: not known yet */
    int64_t                    through;
    int64_t                    early;        /* from the ring; -1: none */
    ngx_queue_t                held;
    ngx_uint_t                 nheld;
    ngx_event_t                stall;
};


/* a user with connections on this worker: allocated as a tree node */

struct ngx_foko_chat_ws_user_s {
    u_char                     color;
    u_char                     id[NGX_FOKO_CHAT_OID_LEN];
    u_char                     name[NGX_FOKO_CHAT_USERNAME_MAX + 1];
    ngx_queue_t                conns;
    ngx_uint_t                 nconns;
    ngx_event_t                grace;
    /* the channels of the last connection, for the offline event */
    u_char                    *channels;
    ngx_uint_t                 nchannels;
};


/* the sign-in of a connection, on the thread pool */

typedef struct {
    ngx_queue_t                link;
    ngx_foko_chat_ws_t        *ws;          /* NULL: the connection went */
    ngx_uint_t                 what;
    u_char                     user[NGX_FOKO_CHAT_OID_SIZE];
    long                       ver;

    ngx_int_t                  rc;
    u_char                     err[NGX_FOKO_CHAT_ERR_LEN];
    ngx_foko_chat_user_t       account;
    ngx_foko_chat_channel_doc_t  *channels;
    ngx_uint_t                 nchannels;
    int64_t                   *max_seq;

    /*
     * the channel ids: from the zone (known), or MongoDB's kept there;
     * the account too, but with Redis (another host may reset a password)
     */
    ngx_atomic_uint_t          users_gen;
    unsigned                   known:1;
    unsigned                   account_known:1;
    unsigned                   counted:1;
} ngx_foko_chat_ws_job_t;


#define NGX_FOKO_CHAT_WS_JOB_AUTH     1


/* a read mark or a resume page under way in the messages layer */

typedef struct {
    ngx_queue_t                link;
    ngx_foko_chat_ws_t        *ws;
    ngx_foko_chat_ws_sub_t    *sub;         /* a page: whose */
    int64_t                    upto;        /* a page: its last seq */
    void                      *handle;
    json_t                    *page;        /* answered at once */
    ngx_foko_chat_err_e        error;
    u_char                     ref[NGX_FOKO_CHAT_CMD_REF_MAX + 1];
    unsigned                   at_once:1;   /* the call is not back yet */
} ngx_foko_chat_ws_op_t;


/* a "send" waiting for its ack */

typedef struct {
    ngx_queue_t                link;
    ngx_foko_chat_ws_t        *ws;
    void                      *handle;
    u_char                     ref[NGX_FOKO_CHAT_CMD_REF_MAX + 1];
} ngx_foko_chat_ws_post_t;


struct ngx_foko_chat_ws_s {
    ngx_connection_t          *connection;
    ngx_foko_chat_main_conf_t *fmcf;
    ngx_foko_chat_ws_parser_t  parser;

    /* a fragmented message being put together */
    u_char                    *msg;
    size_t                     msg_len;
    size_t                     msg_size;

    /* input read while the auth was checked, to go on with after it */
    u_char                    *held;
    size_t                     held_len;

    /* the output queue: a ring of frames, the first one sent up to pos */
    ngx_foko_chat_ws_frame_buf_t **out;
    ngx_uint_t                 out_head;
    ngx_uint_t                 out_n;
    ngx_uint_t                 out_size;
    size_t                     out_pos;
    size_t                     out_bytes;
    ngx_queue_t                dirty;        /* in the flush list */

    ngx_foko_chat_ws_user_t   *user;
    ngx_queue_t                user_link;
    ngx_queue_t                auth_link;    /* waiting for its check */
    ngx_foko_chat_ws_sub_t   **subs;
    ngx_uint_t                 nsubs;
    ngx_uint_t                 subs_size;

    ngx_queue_t                jobs;
    ngx_uint_t                 njobs;
    ngx_queue_t                posts;
    ngx_uint_t                 nposts;
    ngx_queue_t                ops;
    ngx_uint_t                 nops;

    /* the subscription being resumed and the ones waiting for it */
    ngx_foko_chat_ws_sub_t   **resumes;
    ngx_uint_t                 nresumes;
    ngx_foko_chat_ws_op_t     *page_op;

    /* the auth frame's resume, until "ready" (malloc()) */
    ngx_foko_chat_cmd_channel_t  *signin_resume;
    ngx_uint_t                 nsignin_resume;

    ngx_uint_t                 mark;         /* of the event being sent */

    /* the output queue has room again: the session may queue more */
    void                     (*drain)(ngx_foko_chat_ws_t *ws);
    /* the token's user and password version, until the auth is done */
    u_char                     sub[NGX_FOKO_CHAT_OID_LEN + 1];
    long                       ver;
    ngx_msec_t                 auth_since;   /* the check began */

    unsigned                   authing:1;
    unsigned                   auth_waiting:1;
    unsigned                   authed:1;
    unsigned                   header_auth:1;
    unsigned                   pinged:1;
    unsigned                   closing:1;    /* a close frame is queued */
    unsigned                   shut:1;       /* it is sent */
    unsigned                   in_dirty:1;
    unsigned                   present:1;    /* counted in presence */
};


#define NGX_FOKO_CHAT_WS_SWEEP_MAX      256     /* users, a sweep */
#define NGX_FOKO_CHAT_WS_SWEEP          5000    /* ms between sweeps */


/*
 * users whose connections died with a worker: their channels, from the
 * zone if it knows them (known), else from MongoDB
 */

typedef struct {
    ngx_uint_t                 n;
    u_char    users[NGX_FOKO_CHAT_WS_SWEEP_MAX][NGX_FOKO_CHAT_OID_SIZE];
    ngx_foko_chat_channel_doc_t  *channels[NGX_FOKO_CHAT_WS_SWEEP_MAX];
    ngx_uint_t                 nchannels[NGX_FOKO_CHAT_WS_SWEEP_MAX];
    u_char                     known[NGX_FOKO_CHAT_WS_SWEEP_MAX];
    u_char                     err[NGX_FOKO_CHAT_ERR_LEN];
} ngx_foko_chat_ws_sweep_t;


extern ngx_rbtree_t                  ngx_foko_chat_ws_users;
extern ngx_queue_t                   ngx_foko_chat_ws_dirty;
extern ngx_event_t                   ngx_foko_chat_ws_flush_ev;
extern ngx_connection_t              ngx_foko_chat_ws_no_conn;


/* ngx_foko_chat_ws.c */
void ngx_foko_chat_ws_take_over(ngx_http_request_t *r,
    ngx_foko_chat_ws_t *ws);
void ngx_foko_chat_ws_linger(ngx_event_t *rev);
ngx_int_t ngx_foko_chat_ws_input(ngx_foko_chat_ws_t *ws, u_char *pos,
    u_char *last);
void ngx_foko_chat_ws_finish(ngx_foko_chat_ws_t *ws, ngx_uint_t code,
    const char *reason);
void ngx_foko_chat_ws_drop(ngx_foko_chat_ws_t *ws);
void ngx_foko_chat_ws_free(ngx_foko_chat_ws_t *ws);
ngx_foko_chat_ws_t *ngx_foko_chat_ws_alloc(ngx_log_t *log);
void ngx_foko_chat_ws_release(ngx_foko_chat_ws_t *ws);

/* ngx_foko_chat_ws_upgrade.c */
void ngx_foko_chat_ws_handshake_fail(ngx_http_request_t *r,
    ngx_int_t rc);

/* ngx_foko_chat_ws_signin.c */
void ngx_foko_chat_ws_signin_init(void);
void ngx_foko_chat_ws_signin_cancel(ngx_foko_chat_ws_t *ws);
ngx_int_t ngx_foko_chat_ws_signin_late(ngx_foko_chat_ws_t *ws);
void ngx_foko_chat_ws_auth(ngx_foko_chat_ws_t *ws, u_char *token,
    size_t len);

/* ngx_foko_chat_ws_session.c */
void ngx_foko_chat_ws_send(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_cmd_t *cmd);
void ngx_foko_chat_ws_typing(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_cmd_t *cmd);
void ngx_foko_chat_ws_mark_read(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_cmd_t *cmd);
void ngx_foko_chat_ws_op_free(ngx_foko_chat_ws_op_t *o);
void ngx_foko_chat_ws_resume(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_cmd_t *cmd);
void ngx_foko_chat_ws_resume_signin(ngx_foko_chat_ws_t *ws);
void ngx_foko_chat_ws_catch_up(ngx_foko_chat_ws_sub_t *sub);

/* ngx_foko_chat_ws_fanout.c */
ngx_int_t ngx_foko_chat_ws_fanout_init(ngx_cycle_t *cycle);
ngx_foko_chat_ws_sub_t *ngx_foko_chat_ws_sub_find(
    ngx_foko_chat_ws_t *ws, u_char *channel);
ngx_foko_chat_ws_sub_t *ngx_foko_chat_ws_subscribe(
    ngx_foko_chat_ws_t *ws, u_char *channel);
void ngx_foko_chat_ws_unsubscribe(ngx_foko_chat_ws_sub_t *sub);
void ngx_foko_chat_ws_user_leave(ngx_foko_chat_ws_t *ws);
void ngx_foko_chat_ws_grace(ngx_event_t *ev);
void ngx_foko_chat_ws_sweep(ngx_event_t *ev);

/* ngx_foko_chat_ws_out.c */
void ngx_foko_chat_ws_out_init(ngx_cycle_t *cycle);
ngx_foko_chat_ws_frame_buf_t *ngx_foko_chat_ws_frame(
    ngx_uint_t opcode, u_char *data, size_t len);
void ngx_foko_chat_ws_frame_put(ngx_foko_chat_ws_frame_buf_t *f);
void ngx_foko_chat_ws_queue(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_frame_buf_t *f);
void ngx_foko_chat_ws_queue_new(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_frame_buf_t *f);
ngx_int_t ngx_foko_chat_ws_append(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_frame_buf_t *f);
void ngx_foko_chat_ws_queue_json(ngx_foko_chat_ws_t *ws,
    json_t *event);
void ngx_foko_chat_ws_error(ngx_foko_chat_ws_t *ws, u_char *ref,
    ngx_foko_chat_err_e e, const char *field, const char *problem);
void ngx_foko_chat_ws_flush_all(ngx_event_t *ev);
ngx_int_t ngx_foko_chat_ws_flush(ngx_foko_chat_ws_t *ws);


#endif /* _NGX_FOKO_CHAT_WS_INT_H_INCLUDED_ */
