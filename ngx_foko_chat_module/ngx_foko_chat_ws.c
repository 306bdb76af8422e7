
/*
 * Foko chat: WebSocket connections.
 *
 * The upgrade is answered by the module itself.  Once the 101 is written,
 * the HTTP request is freed, as nginx frees a request before keeping its
 * connection alive, and the connection is driven by the handlers here
 * with a small context of its own: an idle connection holds its frame
 * parser, its subscriptions and nothing else.
 *
 * Events reach a worker through the event log (ngx_foko_chat_bus.c).  Each
 * event is framed once per worker and the same bytes are queued for every
 * local subscriber; a connection writes everything queued for it with one
 * call.  A connection whose queue grows past foko_chat_websocket_buffer
 * is closed with 1013: it reconnects and resumes, the others go on.
 *
 * Messages of a channel are delivered in seq order: an event that comes
 * before its predecessors (two workers stored them in the other order)
 * waits until the channel is stored through it.
 */


#include "ngx_foko_chat_ws.h"
#include "ngx_foko_chat_bus.h"
#include "ngx_foko_chat_cache.h"
#include "ngx_foko_chat_json.h"
#include "ngx_foko_chat_jwt.h"
#include "ngx_foko_chat_messages.h"
#include "ngx_foko_chat_presence.h"
#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_store.h"
#include "ngx_foko_chat_task.h"
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


/* a connection's subscription to a channel */

typedef struct {
    ngx_queue_t                link;         /* in the channel's list */
    ngx_foko_chat_ws_chan_t   *chan;
    ngx_foko_chat_ws_t        *ws;
    int64_t                    sent;         /* the last seq it was sent */
    int64_t                    resume_from;
    ngx_msec_t                 typing;
    unsigned                   resuming:1;
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
    u_char                     id[24];
    ngx_queue_t                subs;
    ngx_uint_t                 nsubs;
    int64_t                    delivered;    /* -1: not known yet */
    int64_t                    through;
    ngx_queue_t                held;
    ngx_uint_t                 nheld;
    ngx_event_t                stall;
};


/* a user with connections on this worker: allocated as a tree node */

struct ngx_foko_chat_ws_user_s {
    u_char                     color;
    u_char                     id[24];
    u_char                     name[NGX_FOKO_CHAT_NAME_MAX + 1];
    ngx_queue_t                conns;
    ngx_uint_t                 nconns;
    ngx_event_t                grace;
    /* the channels of the last connection, for the offline event */
    u_char                    *channels;
    ngx_uint_t                 nchannels;
};


/* work of a connection on the thread pool */

typedef struct {
    ngx_queue_t                link;
    ngx_foko_chat_ws_t        *ws;          /* NULL: the connection went */
    ngx_foko_chat_ws_sub_t    *sub;
    ngx_uint_t                 what;
    u_char                     user[25];
    u_char                     channel[25];
    int64_t                    after;
    int64_t                    upto;
    int64_t                    seq;
    long                       ver;

    ngx_int_t                  rc;
    u_char                     err[NGX_FOKO_CHAT_ERR_LEN];
    ngx_foko_chat_user_t       account;
    ngx_foko_chat_channel_doc_t  *channels;
    ngx_uint_t                 nchannels;
    int64_t                   *max_seq;
    json_t                    *page;
} ngx_foko_chat_ws_job_t;


#define NGX_FOKO_CHAT_WS_JOB_AUTH     1
#define NGX_FOKO_CHAT_WS_JOB_READ     2
#define NGX_FOKO_CHAT_WS_JOB_PAGE     3


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

    /* the subscription being resumed and the ones waiting for it */
    ngx_foko_chat_ws_sub_t   **resumes;
    ngx_uint_t                 nresumes;
    ngx_foko_chat_ws_job_t    *page_job;

    ngx_uint_t                 mark;         /* of the event being sent */
    /* the token's user and password version, until the auth is done */
    u_char                     sub[NGX_FOKO_CHAT_ID_LEN + 1];
    long                       ver;

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


static ngx_int_t ngx_foko_chat_ws_refuse(ngx_http_request_t *r,
    ngx_uint_t status, const char *message);
static ngx_table_elt_t *ngx_foko_chat_ws_header_in(ngx_http_request_t *r,
    const char *name);
static ngx_int_t ngx_foko_chat_ws_origin_ok(ngx_http_request_t *r,
    ngx_table_elt_t *origin);
static void ngx_foko_chat_ws_handshake_write(ngx_event_t *wev);
static void ngx_foko_chat_ws_handshake_read(ngx_event_t *rev);
static void ngx_foko_chat_ws_request_cleanup(void *data);
static void ngx_foko_chat_ws_handshake_fail(ngx_http_request_t *r,
    ngx_int_t rc);
static void ngx_foko_chat_ws_take_over(ngx_http_request_t *r,
    ngx_foko_chat_ws_t *ws);

static void ngx_foko_chat_ws_read(ngx_event_t *rev);
static void ngx_foko_chat_ws_write(ngx_event_t *wev);
static void ngx_foko_chat_ws_linger(ngx_event_t *rev);
static ngx_uint_t ngx_foko_chat_ws_gone(ngx_connection_t *c);
static ngx_int_t ngx_foko_chat_ws_input(ngx_foko_chat_ws_t *ws, u_char *pos,
    u_char *last);
static void ngx_foko_chat_ws_message(ngx_foko_chat_ws_t *ws, u_char *data,
    size_t len);
static void ngx_foko_chat_ws_auth(ngx_foko_chat_ws_t *ws, u_char *token,
    size_t len);
static void ngx_foko_chat_ws_auth_start(ngx_foko_chat_ws_t *ws);
static void ngx_foko_chat_ws_auth_next(void);
static void ngx_foko_chat_ws_auth_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static void ngx_foko_chat_ws_auth_seq_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_ws_auth_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_ws_auth_seqs(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_task_t *task);
static void ngx_foko_chat_ws_ready(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_job_t *job);
static void ngx_foko_chat_ws_send(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_cmd_t *cmd);
static void ngx_foko_chat_ws_sent(void *data, ngx_uint_t status,
    json_t *answer);
static void ngx_foko_chat_ws_typing(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_cmd_t *cmd);
static void ngx_foko_chat_ws_mark_read(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_cmd_t *cmd);
static void ngx_foko_chat_ws_resume(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_cmd_t *cmd);
static void ngx_foko_chat_ws_resume_next(ngx_foko_chat_ws_t *ws);
static ngx_int_t ngx_foko_chat_ws_resume_page(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_sub_t *sub, json_t *page);

static ngx_int_t ngx_foko_chat_ws_job_post(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_task_t *task, ngx_foko_chat_task_run_pt run,
    ngx_foko_chat_task_done_pt done);
static void ngx_foko_chat_ws_job_release(ngx_foko_chat_ws_job_t *job);
static void ngx_foko_chat_ws_job_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_ws_job_done(ngx_foko_chat_task_t *task);

static ngx_foko_chat_ws_sub_t *ngx_foko_chat_ws_sub_find(
    ngx_foko_chat_ws_t *ws, u_char *channel);
static ngx_foko_chat_ws_sub_t *ngx_foko_chat_ws_subscribe(
    ngx_foko_chat_ws_t *ws, u_char *channel);
static void ngx_foko_chat_ws_unsubscribe(ngx_foko_chat_ws_sub_t *sub);
static ngx_foko_chat_ws_chan_t *ngx_foko_chat_ws_chan_get(u_char *channel);
static void ngx_foko_chat_ws_chan_put(ngx_foko_chat_ws_chan_t *chan);
static void ngx_foko_chat_ws_user_leave(ngx_foko_chat_ws_t *ws);
static void ngx_foko_chat_ws_grace(ngx_event_t *ev);
static void ngx_foko_chat_ws_presence(ngx_foko_chat_ws_user_t *user,
    u_char *channels, ngx_uint_t n, ngx_uint_t online);

static void ngx_foko_chat_ws_sweep(ngx_event_t *ev);
static void ngx_foko_chat_ws_sweep_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_ws_sweep_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_ws_event(ngx_foko_chat_event_t *ev);
static void ngx_foko_chat_ws_lost(void);
static void ngx_foko_chat_ws_deliver(ngx_foko_chat_ws_chan_t *chan,
    int64_t seq, u_char *json, size_t len);
static void ngx_foko_chat_ws_release_held(ngx_foko_chat_ws_chan_t *chan);
static void ngx_foko_chat_ws_stall(ngx_event_t *ev);
static void ngx_foko_chat_ws_to_channel(ngx_foko_chat_ws_chan_t *chan,
    ngx_foko_chat_ws_frame_buf_t *f, u_char *except, int64_t seq);

static ngx_foko_chat_ws_frame_buf_t *ngx_foko_chat_ws_frame(
    ngx_uint_t opcode, u_char *data, size_t len);
static void ngx_foko_chat_ws_frame_put(ngx_foko_chat_ws_frame_buf_t *f);
static void ngx_foko_chat_ws_queue(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_frame_buf_t *f);
static void ngx_foko_chat_ws_queue_new(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_frame_buf_t *f);
static ngx_int_t ngx_foko_chat_ws_append(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_frame_buf_t *f);
static void ngx_foko_chat_ws_queue_json(ngx_foko_chat_ws_t *ws,
    json_t *event);
static void ngx_foko_chat_ws_error(ngx_foko_chat_ws_t *ws, u_char *ref,
    const char *code, const char *message, const char *field);
static void ngx_foko_chat_ws_flush_all(ngx_event_t *ev);
static ngx_int_t ngx_foko_chat_ws_flush(ngx_foko_chat_ws_t *ws);
static void ngx_foko_chat_ws_finish(ngx_foko_chat_ws_t *ws, ngx_uint_t code,
    const char *reason);
static void ngx_foko_chat_ws_drop(ngx_foko_chat_ws_t *ws);
static void ngx_foko_chat_ws_free(ngx_foko_chat_ws_t *ws);
static ngx_foko_chat_ws_t *ngx_foko_chat_ws_alloc(ngx_log_t *log);
static void ngx_foko_chat_ws_release(ngx_foko_chat_ws_t *ws);


static ngx_str_t  ngx_foko_chat_ws_status_line =
    ngx_string("101 Switching Protocols");


/* this worker's connections, channels and users */
static ngx_rbtree_t                  ngx_foko_chat_ws_chans;
static ngx_rbtree_node_t             ngx_foko_chat_ws_chans_sentinel;
static ngx_rbtree_t                  ngx_foko_chat_ws_users;
static ngx_rbtree_node_t             ngx_foko_chat_ws_users_sentinel;
static ngx_queue_t                   ngx_foko_chat_ws_dirty;
static ngx_event_t                   ngx_foko_chat_ws_flush_ev;
static ngx_uint_t                    ngx_foko_chat_ws_nconns;
static ngx_uint_t                    ngx_foko_chat_ws_mark;
static ngx_queue_t                   ngx_foko_chat_ws_all;
static u_char                       *ngx_foko_chat_ws_buf;
static ngx_event_t                   ngx_foko_chat_ws_sweep_ev;
#if !defined(__SANITIZE_ADDRESS__)
static ngx_foko_chat_ws_t           *ngx_foko_chat_ws_spare;
#endif

/* sign-ins on the thread pool, and the connections waiting for a turn */
static ngx_uint_t                    ngx_foko_chat_ws_nauths;
static ngx_uint_t                    ngx_foko_chat_ws_nwaiting;
static ngx_queue_t                   ngx_foko_chat_ws_auth_queue;

/* what the timers' and posted events' data points to, for debug logs */
static ngx_connection_t              ngx_foko_chat_ws_no_conn;


#define NGX_FOKO_CHAT_WS_SWEEP_MAX      256     /* users, a sweep */
#define NGX_FOKO_CHAT_WS_SWEEP          5000    /* ms between sweeps */


/* users whose connections died with a worker: their channels, from MongoDB */

typedef struct {
    ngx_uint_t                 n;
    u_char                     users[NGX_FOKO_CHAT_WS_SWEEP_MAX][25];
    ngx_foko_chat_channel_doc_t  *channels[NGX_FOKO_CHAT_WS_SWEEP_MAX];
    ngx_uint_t                 nchannels[NGX_FOKO_CHAT_WS_SWEEP_MAX];
    u_char                     err[NGX_FOKO_CHAT_ERR_LEN];
} ngx_foko_chat_ws_sweep_t;


ngx_int_t
ngx_foko_chat_ws_init_process(ngx_cycle_t *cycle)
{
    ngx_rbtree_init(&ngx_foko_chat_ws_chans, &ngx_foko_chat_ws_chans_sentinel,
                    ngx_foko_chat_shm_id_insert_value);
    ngx_rbtree_init(&ngx_foko_chat_ws_users, &ngx_foko_chat_ws_users_sentinel,
                    ngx_foko_chat_shm_id_insert_value);
    ngx_queue_init(&ngx_foko_chat_ws_dirty);
    ngx_queue_init(&ngx_foko_chat_ws_all);
    ngx_queue_init(&ngx_foko_chat_ws_auth_queue);

    ngx_foko_chat_ws_no_conn.fd = (ngx_socket_t) -1;

    ngx_foko_chat_ws_flush_ev.handler = ngx_foko_chat_ws_flush_all;
    ngx_foko_chat_ws_flush_ev.log = cycle->log;
    ngx_foko_chat_ws_flush_ev.data = &ngx_foko_chat_ws_no_conn;

    ngx_foko_chat_ws_buf = ngx_alloc(NGX_FOKO_CHAT_WS_READ_BUF, cycle->log);
    if (ngx_foko_chat_ws_buf == NULL) {
        return NGX_ERROR;
    }

    /* a worker that replaces a dead one: its users go offline */

    ngx_foko_chat_ws_sweep_ev.handler = ngx_foko_chat_ws_sweep;
    ngx_foko_chat_ws_sweep_ev.log = cycle->log;
    ngx_foko_chat_ws_sweep_ev.data = &ngx_foko_chat_ws_no_conn;
    ngx_foko_chat_ws_sweep_ev.cancelable = 1;

    if (ngx_foko_chat_shm_cycle(cycle)) {
        ngx_add_timer(&ngx_foko_chat_ws_sweep_ev, 1000);
    }

    return ngx_foko_chat_bus_init_process(cycle, ngx_foko_chat_ws_event,
                                          ngx_foko_chat_ws_lost);
}


ngx_uint_t
ngx_foko_chat_ws_connections(void)
{
    return ngx_foko_chat_ws_nconns;
}


void
ngx_foko_chat_ws_signins(ngx_uint_t *running, ngx_uint_t *waiting)
{
    *running = ngx_foko_chat_ws_nauths;
    *waiting = ngx_foko_chat_ws_nwaiting;
}


/* the upgrade */

ngx_int_t
ngx_foko_chat_ws_handler(ngx_http_request_t *r)
{
    u_char                     *accept;
    ngx_str_t                   token;
    ngx_table_elt_t            *h, *key, *version, *conn;
    ngx_connection_t           *c;
    ngx_pool_cleanup_t         *cln;
    ngx_foko_chat_claims_t      claims;
    ngx_foko_chat_ws_t         *ws;
    ngx_foko_chat_main_conf_t  *fmcf;

    if (r->method != NGX_HTTP_GET) {
        return ngx_foko_chat_json_send_not_allowed(r, NGX_HTTP_GET);
    }

    if (r != r->main || r->http_version != NGX_HTTP_VERSION_11) {
        return ngx_foko_chat_ws_refuse(r, NGX_HTTP_BAD_REQUEST,
                                       "a WebSocket upgrade needs "
                                       "HTTP/1.1");
    }

    h = r->headers_in.upgrade;

    /* nginx keeps only the type of "Connection": the header is looked up */
    conn = ngx_foko_chat_ws_header_in(r, "Connection");

    if (h == NULL
        || ngx_strlcasestrn(h->value.data, h->value.data + h->value.len,
                            (u_char *) "websocket", 9 - 1) == NULL
        || conn == NULL
        || ngx_strlcasestrn(conn->value.data,
                            conn->value.data + conn->value.len,
                            (u_char *) "upgrade", 7 - 1) == NULL)
    {
        return ngx_foko_chat_ws_refuse(r, NGX_HTTP_BAD_REQUEST,
                                       "not a WebSocket upgrade");
    }

    version = ngx_foko_chat_ws_header_in(r, "Sec-WebSocket-Version");

    if (version == NULL) {
        return ngx_foko_chat_ws_refuse(r, NGX_HTTP_BAD_REQUEST,
                                       "Sec-WebSocket-Version is missing");
    }

    if (version->value.len != 2
        || ngx_strncmp(version->value.data, "13", 2) != 0)
    {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Sec-WebSocket-Version");
        ngx_str_set(&h->value, "13");

        return ngx_foko_chat_ws_refuse(r, 426,
                                       "only WebSocket version 13 is "
                                       "spoken here");
    }

    key = ngx_foko_chat_ws_header_in(r, "Sec-WebSocket-Key");

    if (key == NULL
        || ngx_foko_chat_ws_key_valid(key->value.data, key->value.len)
           != NGX_OK)
    {
        return ngx_foko_chat_ws_refuse(r, NGX_HTTP_BAD_REQUEST,
                                       "Sec-WebSocket-Key is missing or "
                                       "malformed");
    }

    if (ngx_foko_chat_ws_origin_ok(r, ngx_foko_chat_ws_header_in(r, "Origin"))
        != NGX_OK)
    {
        return ngx_foko_chat_ws_refuse(r, NGX_HTTP_FORBIDDEN,
                                       "this origin may not connect");
    }

    if (r->headers_in.content_length_n > 0 || r->headers_in.chunked) {
        return ngx_foko_chat_ws_refuse(r, NGX_HTTP_BAD_REQUEST,
                                       "an upgrade has no body");
    }

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);
    c = r->connection;

    ws = ngx_foko_chat_ws_alloc(c->log);
    if (ws == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ws->connection = c;
    ws->fmcf = fmcf;
    ngx_queue_init(&ws->jobs);
    ngx_queue_init(&ws->posts);
    ngx_foko_chat_ws_parser_init(&ws->parser, NGX_FOKO_CHAT_WS_MAX_MESSAGE);

    /* freed with the request unless the connection is taken over */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_foko_chat_ws_release(ws);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_foko_chat_ws_request_cleanup;
    cln->data = ws;

    /* a token in the upgrade: checked once the connection is ours */

    h = r->headers_in.authorization;

    if (h && h->value.len > 7
        && ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", 7) == 0)
    {
        token.data = h->value.data + 7;
        token.len = h->value.len - 7;

        ws->header_auth = 1;

        if (ngx_foko_chat_jwt_verify(fmcf->jwt, &token,
                                     NGX_FOKO_CHAT_TOKEN_ACCESS, &claims,
                                     c->log)
            == NGX_OK)
        {
            ngx_memcpy(ws->sub, claims.sub, sizeof(ws->sub));
            ws->ver = claims.ver;
        }

        ngx_explicit_memzero(&claims, sizeof(ngx_foko_chat_claims_t));
    }

    accept = ngx_pnalloc(r->pool, NGX_FOKO_CHAT_WS_ACCEPT_LEN);
    if (accept == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_foko_chat_ws_accept_key(key->value.data, key->value.len, accept);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Upgrade");
    ngx_str_set(&h->value, "websocket");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Sec-WebSocket-Accept");
    h->value.data = accept;
    h->value.len = NGX_FOKO_CHAT_WS_ACCEPT_LEN;

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    r->headers_out.status_line = ngx_foko_chat_ws_status_line;
    r->headers_out.content_length_n = -1;
    r->header_only = 1;
    r->keepalive = 0;
    r->lingering_close = 0;

    if (ngx_http_send_header(r) == NGX_ERROR
        || ngx_http_send_special(r, NGX_HTTP_FLUSH) == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    /*
     * The request stays ours (count) until the 101 is written; then the
     * connection's own handlers take over, out of this call chain.
     */

    r->main->count++;

    c->read->handler = ngx_foko_chat_ws_handshake_read;
    c->write->handler = ngx_foko_chat_ws_handshake_write;

    ngx_post_event(c->write, &ngx_posted_events);

    return NGX_DONE;
}


static ngx_int_t
ngx_foko_chat_ws_refuse(ngx_http_request_t *r, ngx_uint_t status,
    const char *message)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "foko chat: WebSocket upgrade refused: %s", message);

    return ngx_foko_chat_json_send_error(r, status,
                                         status == NGX_HTTP_FORBIDDEN
                                         ? "forbidden" : "invalid_request",
                                         message);
}


static ngx_table_elt_t *
ngx_foko_chat_ws_header_in(ngx_http_request_t *r, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * Without foko_chat_allowed_origins a browser may connect from the site
 * itself only: the Origin's host must be the request's Host.  Clients
 * that send no Origin are not browsers, and cannot be led by a page.
 */

static ngx_int_t
ngx_foko_chat_ws_origin_ok(ngx_http_request_t *r, ngx_table_elt_t *origin)
{
    u_char                    *p, *host;
    size_t                     len;
    ngx_str_t                 *allowed;
    ngx_uint_t                 i;
    ngx_foko_chat_srv_conf_t  *fscf;

    if (origin == NULL) {
        return NGX_OK;
    }

    fscf = ngx_http_get_module_srv_conf(r, ngx_foko_chat_module);

    if (fscf->origins) {
        allowed = fscf->origins->elts;

        for (i = 0; i < fscf->origins->nelts; i++) {
            if ((allowed[i].len == 1 && allowed[i].data[0] == '*')
                || (allowed[i].len == origin->value.len
                    && ngx_strncasecmp(allowed[i].data, origin->value.data,
                                       origin->value.len) == 0))
            {
                return NGX_OK;
            }
        }

        return NGX_DECLINED;
    }

    p = origin->value.data;
    len = origin->value.len;

    if (len > 7 && ngx_strncasecmp(p, (u_char *) "http://", 7) == 0) {
        p += 7;
        len -= 7;

    } else if (len > 8 && ngx_strncasecmp(p, (u_char *) "https://", 8) == 0) {
        p += 8;
        len -= 8;

    } else {
        return NGX_DECLINED;
    }

    if (r->headers_in.host == NULL) {
        return NGX_DECLINED;
    }

    host = r->headers_in.host->value.data;

    if (r->headers_in.host->value.len == len
        && ngx_strncasecmp(host, p, len) == 0)
    {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/* "foko_chat_allowed_origins http://a.example https://b.example ...;" */

char *
ngx_foko_chat_ws_origins(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_foko_chat_srv_conf_t  *fscf = conf;

    u_char      *p, *last, *host, *port;
    ngx_str_t   *value, *o;
    ngx_uint_t   i;

    if (fscf->origins != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    fscf->origins = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                     sizeof(ngx_str_t));
    if (fscf->origins == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (!(value[i].len == 1 && value[i].data[0] == '*')) {
            p = value[i].data;
            last = p + value[i].len;

            if (value[i].len > 7
                && ngx_strncasecmp(p, (u_char *) "http://", 7) == 0)
            {
                p += 7;

            } else if (value[i].len > 8
                       && ngx_strncasecmp(p, (u_char *) "https://", 8) == 0)
            {
                p += 8;

            } else {
                p = NULL;
            }

            /* scheme://host[:port], nothing after it */

            host = p;
            port = NULL;

            while (p && p < last) {
                if (*p == '/' || *p == '?' || *p == '#' || *p == ' '
                    || *p == '@')
                {
                    p = NULL;
                    break;
                }

                if (*p == ':' && port == NULL) {
                    port = p + 1;

                } else if (port && (*p < '0' || *p > '9')) {
                    p = NULL;
                    break;
                }

                p++;
            }

            if (p && (host == last || *host == ':'
                      || (port && (port == last || last - port > 5
                                   || ngx_atoi(port, last - port) > 65535
                                   || ngx_atoi(port, last - port) < 1))))
            {
                p = NULL;
            }

            if (p == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" is not an origin "
                                   "(scheme://host[:port]) in \"%V\"",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }
        }

        o = ngx_array_push(fscf->origins);
        if (o == NULL) {
            return NGX_CONF_ERROR;
        }

        *o = value[i];
    }

    return NGX_CONF_OK;
}


static void
ngx_foko_chat_ws_request_cleanup(void *data)
{
    ngx_foko_chat_ws_t  *ws = data;

    ngx_foko_chat_ws_release(ws);
}


/* our reference was the last one: as nginx closes a request */

static void
ngx_foko_chat_ws_handshake_fail(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_free_request(r, rc);
    ngx_http_close_connection(c);
}


static void
ngx_foko_chat_ws_handshake_read(ngx_event_t *rev)
{
    /* client frames wait in the socket until the 101 is out */
}


static void
ngx_foko_chat_ws_handshake_write(ngx_event_t *wev)
{
    ngx_connection_t          *c;
    ngx_pool_cleanup_t        *cln;
    ngx_http_request_t        *r;
    ngx_foko_chat_ws_t        *ws;
    ngx_http_core_loc_conf_t  *clcf;

    c = wev->data;
    r = c->data;

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client timed out");
        c->timedout = 1;
        ngx_foko_chat_ws_handshake_fail(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    if (r->out || c->buffered) {
        if (ngx_http_output_filter(r, NULL) == NGX_ERROR) {
            ngx_foko_chat_ws_handshake_fail(r, 0);
            return;
        }
    }

    if (r->out || c->buffered) {
        clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

        ngx_add_timer(wev, clcf->send_timeout);

        if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
            ngx_foko_chat_ws_handshake_fail(r, 0);
        }

        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    ws = NULL;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_foko_chat_ws_request_cleanup) {
            ws = cln->data;
            cln->handler = NULL;
            break;
        }
    }

    if (ws == NULL) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "foko chat: a WebSocket upgrade lost its context");
        ngx_foko_chat_ws_handshake_fail(r, 0);
        return;
    }

    ngx_foko_chat_ws_take_over(r, ws);
}


/*
 * The 101 is written: the request is freed as nginx frees one before
 * keeping its connection alive, and what the client sent after the
 * upgrade request goes to the frame parser.
 */

static void
ngx_foko_chat_ws_take_over(ngx_http_request_t *r, ngx_foko_chat_ws_t *ws)
{
    int                     sndbuf;
    u_char                 *early;
    size_t                  len;
    ngx_buf_t              *b;
    ngx_chain_t            *cl, *ln;
    ngx_connection_t       *c;
    ngx_http_connection_t  *hc;

    c = r->connection;
    hc = r->http_connection;
    b = r->header_in;

    early = NULL;
    len = 0;

    if (b && b->pos < b->last) {
        len = b->last - b->pos;
        early = ngx_alloc(len, c->log);
        if (early == NULL) {
            ngx_foko_chat_ws_release(ws);
            ngx_foko_chat_ws_handshake_fail(r, 0);
            return;
        }

        ngx_memcpy(early, b->pos, len);
    }

    ngx_http_free_request(r, 0);

    c->destroyed = 0;
    c->data = ws;
    c->log->action = "serving WebSocket";
    c->idle = 1;

    /* the header buffers, as for a keep-alive connection */

    if (hc->busy) {
        for (cl = hc->busy; cl; /* void */) {
            ln = cl;
            cl = cl->next;
            ngx_pfree(c->pool, ln->buf->start);
            ngx_free_chain(c->pool, ln);
        }

        hc->busy = NULL;
        hc->nbusy = 0;
    }

    if (hc->free) {
        for (cl = hc->free; cl; /* void */) {
            ln = cl;
            cl = cl->next;
            ngx_pfree(c->pool, ln->buf->start);
            ngx_free_chain(c->pool, ln);
        }

        hc->free = NULL;
    }

    b = c->buffer;

    if (b && b->start && ngx_pfree(c->pool, b->start) == NGX_OK) {
        b->start = NULL;
        b->pos = NULL;
        b->last = NULL;
        b->end = NULL;
    }

    c->read->handler = ngx_foko_chat_ws_read;
    c->write->handler = ngx_foko_chat_ws_write;

    /*
     * The kernel's share of a slow client's output is bounded too: its
     * send buffer would otherwise grow to megabytes before our queue does.
     */

    sndbuf = (int) ws->fmcf->ws_buffer;

    if (setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, (const void *) &sndbuf,
                   sizeof(int))
        == -1)
    {
        ngx_log_error(NGX_LOG_ALERT, c->log, ngx_socket_errno,
                      "setsockopt(SO_SNDBUF) failed");
    }

    ngx_queue_insert_tail(&ngx_foko_chat_ws_all, &ws->user_link);
    ngx_foko_chat_ws_nconns++;

    if (ngx_exiting || ngx_terminate) {
        ngx_free(early);
        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_GOING_AWAY,
                                "the server is restarting");
        return;
    }

    ngx_add_timer(c->read, ws->fmcf->ws_auth_timeout);

    if (ws->header_auth) {
        if (ws->sub[0] == '\0') {
            ngx_free(early);
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_AUTH,
                                    "the token is not valid");
            return;
        }

        ngx_foko_chat_ws_auth(ws, NULL, 0);
    }

    if (early) {
        if (ws->authing) {
            ws->held = early;
            ws->held_len = len;
            return;
        }

        (void) ngx_foko_chat_ws_input(ws, early, early + len);
        ngx_free(early);

        if (ws->shut) {
            return;
        }
    }

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_foko_chat_ws_free(ws);
    }
}


/* the connection's handlers */

static void
ngx_foko_chat_ws_read(ngx_event_t *rev)
{
    ssize_t              n;
    ngx_connection_t    *c;
    ngx_foko_chat_ws_t  *ws;

    c = rev->data;
    ws = c->data;

    if (c->close) {
        /*
         * The worker is shutting down (reload, upgrade, stop): the close
         * frame goes now, posted events wait for the next event.
         */
        c->close = 0;
        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_GOING_AWAY,
                                "the server is restarting");

        if (ngx_foko_chat_ws_flush(ws) != NGX_OK) {
            ngx_foko_chat_ws_free(ws);
        }

        return;
    }

    if (rev->timedout) {
        rev->timedout = 0;

        if (!ws->authed) {
            if (ws->authing) {
                /* the database is slow: the check goes on */
                ngx_add_timer(rev, ws->fmcf->ws_auth_timeout);
                return;
            }

            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_AUTH,
                                    "no authentication in time");
            return;
        }

        if (ws->pinged) {
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "foko chat: WebSocket client stopped answering");
            ngx_foko_chat_ws_free(ws);
            return;
        }

        ws->pinged = 1;
        ngx_foko_chat_ws_queue_new(ws, ngx_foko_chat_ws_frame(
                                           NGX_FOKO_CHAT_WS_PING, NULL, 0));
        ngx_add_timer(rev, ws->fmcf->ws_ping);

        if (ngx_foko_chat_ws_flush(ws) != NGX_OK) {
            ngx_foko_chat_ws_free(ws);
        }

        return;
    }

    if (ws->authing) {
        /*
         * Input waits until the token is checked.  A client that went
         * away meanwhile is let go at once: its sign-in is not run (or
         * its result is dropped), and it is never announced online.
         */
        if (ngx_foko_chat_ws_gone(c)) {
            ngx_foko_chat_ws_free(ws);
        }

        return;
    }

    while (rev->ready && !ws->closing) {

        n = c->recv(c, ngx_foko_chat_ws_buf, NGX_FOKO_CHAT_WS_READ_BUF);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            /* the client is gone */
            ngx_foko_chat_ws_free(ws);
            return;
        }

        ws->pinged = 0;

        if (ws->authed) {
            ngx_add_timer(rev, ws->fmcf->ws_ping);
        }

        if (ngx_foko_chat_ws_input(ws, ngx_foko_chat_ws_buf,
                                   ngx_foko_chat_ws_buf + n)
            != NGX_OK)
        {
            ngx_foko_chat_ws_free(ws);
            return;
        }

        if (ws->authing) {
            return;
        }
    }

    if (ws->closing) {
        return;
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_foko_chat_ws_free(ws);
        return;
    }

    if (ngx_foko_chat_ws_flush(ws) != NGX_OK) {
        ngx_foko_chat_ws_free(ws);
    }
}


static void
ngx_foko_chat_ws_write(ngx_event_t *wev)
{
    ngx_connection_t    *c;
    ngx_foko_chat_ws_t  *ws;

    c = wev->data;
    ws = c->data;

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "foko chat: WebSocket client timed out");
        ngx_foko_chat_ws_free(ws);
        return;
    }

    if (ngx_foko_chat_ws_flush(ws) != NGX_OK) {
        ngx_foko_chat_ws_free(ws);
    }
}


/* whether the client closed its side or reset, without reading its data */

static ngx_uint_t
ngx_foko_chat_ws_gone(ngx_connection_t *c)
{
    u_char        b;
    ssize_t       n;
    ngx_err_t     err;
    ngx_event_t  *rev;

    rev = c->read;

    if (!rev->ready) {
        return 0;
    }

#if (NGX_HAVE_EPOLLRDHUP)

    if ((ngx_event_flags & NGX_USE_EPOLL_EVENT) && ngx_use_epoll_rdhup
        && !rev->pending_eof)
    {
        /* only data came */
        return 0;
    }

#endif

    n = recv(c->fd, &b, 1, MSG_PEEK);

    if (n > 0) {
        return 0;
    }

    if (n == -1) {
        err = ngx_socket_errno;

        if (err == NGX_EAGAIN || err == NGX_EINTR) {
            return 0;
        }
    }

    return 1;
}


/* after our close frame: what the client still sends is dropped */

static void
ngx_foko_chat_ws_linger(ngx_event_t *rev)
{
    ssize_t              n;
    ngx_connection_t    *c;
    ngx_foko_chat_ws_t  *ws;

    c = rev->data;
    ws = c->data;

    if (rev->timedout || c->close) {
        ngx_foko_chat_ws_free(ws);
        return;
    }

    do {
        n = c->recv(c, ngx_foko_chat_ws_buf, NGX_FOKO_CHAT_WS_READ_BUF);

        if (n == 0 || n == NGX_ERROR) {
            ngx_foko_chat_ws_free(ws);
            return;
        }

    } while (n > 0);

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_foko_chat_ws_free(ws);
    }
}


/*
 * Frames from the client.  NGX_ERROR: the connection must be freed (out
 * of memory); a protocol error queues a close frame and returns NGX_OK.
 */

static ngx_int_t
ngx_foko_chat_ws_input(ngx_foko_chat_ws_t *ws, u_char *pos, u_char *last)
{
    u_char                    *p;
    size_t                     size;
    ngx_int_t                  rc;
    ngx_uint_t                 code;
    ngx_foko_chat_ws_frame_t   f;

    while (!ws->closing) {

        if (ws->authing) {
            /* the rest waits for the token check */
            if (pos < last) {
                ws->held = ngx_alloc(last - pos, ngx_cycle->log);
                if (ws->held == NULL) {
                    return NGX_ERROR;
                }

                ws->held_len = last - pos;
                ngx_memcpy(ws->held, pos, ws->held_len);
            }

            return NGX_OK;
        }

        rc = ngx_foko_chat_ws_parse(&ws->parser, &pos, last, &f);

        if (rc == NGX_AGAIN || rc == NGX_DONE) {
            return NGX_OK;
        }

        if (rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                          "foko chat: WebSocket client broke the protocol: "
                          "%s", ws->parser.error);
            ngx_foko_chat_ws_finish(ws, ws->parser.close_code,
                                    ws->parser.error);
            return NGX_OK;
        }

        switch (f.opcode) {

        case NGX_FOKO_CHAT_WS_TEXT:

            if (f.first && f.last) {
                ngx_foko_chat_ws_message(ws, f.data, f.len);
                break;
            }

            if (f.first || ws->msg == NULL) {
                ngx_free(ws->msg);
                ws->msg_len = 0;
                ws->msg_size = 0;
                ws->msg = NULL;
            }

            if (ws->msg_len + f.len > ws->msg_size) {
                size = ngx_max((size_t) f.message_len, ws->msg_len + f.len);

                p = ngx_alloc(size, ngx_cycle->log);
                if (p == NULL) {
                    return NGX_ERROR;
                }

                if (ws->msg) {
                    ngx_memcpy(p, ws->msg, ws->msg_len);
                    ngx_free(ws->msg);
                }

                ws->msg = p;
                ws->msg_size = size;
            }

            ngx_memcpy(ws->msg + ws->msg_len, f.data, f.len);
            ws->msg_len += f.len;

            if (f.last) {
                p = ws->msg;
                ws->msg = NULL;

                ngx_foko_chat_ws_message(ws, p, ws->msg_len);

                ngx_free(p);
                ws->msg_len = 0;
                ws->msg_size = 0;
            }

            break;

        case NGX_FOKO_CHAT_WS_BINARY:
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_BINARY,
                                    "binary messages are not accepted");
            return NGX_OK;

        case NGX_FOKO_CHAT_WS_PING:
            ngx_foko_chat_ws_queue_new(ws, ngx_foko_chat_ws_frame(
                                               NGX_FOKO_CHAT_WS_PONG, f.data,
                                               f.len));
            break;

        case NGX_FOKO_CHAT_WS_PONG:
            break;

        case NGX_FOKO_CHAT_WS_CLOSE:
            /* echoed: the code the client sent, none if it sent none */
            code = (f.close_code == NGX_FOKO_CHAT_WS_CLOSE_NO_STATUS)
                   ? 0 : f.close_code;
            ngx_foko_chat_ws_finish(ws, code, NULL);
            return NGX_OK;

        default:
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_PROTOCOL,
                                    "unexpected opcode");
            return NGX_OK;
        }
    }

    return NGX_OK;
}


/* one whole text message: a command */

static void
ngx_foko_chat_ws_message(ngx_foko_chat_ws_t *ws, u_char *data, size_t len)
{
    ngx_foko_chat_cmd_t  cmd;

    if (ngx_foko_chat_cmd_decode((char *) data, len, &cmd) != 0) {

        if (!ws->authed) {
            ngx_foko_chat_cmd_free(&cmd);
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_AUTH,
                                    "authenticate first");
            return;
        }

        ngx_foko_chat_ws_error(ws, (u_char *) cmd.ref, "invalid_request",
                               cmd.problem, cmd.field);
        ngx_foko_chat_cmd_free(&cmd);
        return;
    }

    if (!ws->authed) {
        if (cmd.type == NGX_FOKO_CHAT_CMD_AUTH && !ws->header_auth) {
            ngx_foko_chat_ws_auth(ws, (u_char *) cmd.token, cmd.token_len);

        } else {
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_AUTH,
                                    "authenticate first");
        }

        ngx_foko_chat_cmd_free(&cmd);
        return;
    }

    switch (cmd.type) {

    case NGX_FOKO_CHAT_CMD_SEND:
        ngx_foko_chat_ws_send(ws, &cmd);
        break;

    case NGX_FOKO_CHAT_CMD_TYPING:
        ngx_foko_chat_ws_typing(ws, &cmd);
        break;

    case NGX_FOKO_CHAT_CMD_READ:
        ngx_foko_chat_ws_mark_read(ws, &cmd);
        break;

    case NGX_FOKO_CHAT_CMD_RESUME:
        ngx_foko_chat_ws_resume(ws, &cmd);
        break;

    default: /* NGX_FOKO_CHAT_CMD_AUTH */
        ngx_foko_chat_ws_error(ws, (u_char *) cmd.ref, "invalid_request",
                               "authenticated already", "type");
    }

    ngx_foko_chat_cmd_free(&cmd);
}


/* auth: the token, then the account and its channels from MongoDB */

static void
ngx_foko_chat_ws_auth(ngx_foko_chat_ws_t *ws, u_char *token, size_t len)
{
    ngx_str_t                t;
    ngx_int_t                rc;
    ngx_foko_chat_claims_t   claims;

    if (token) {
        t.data = token;
        t.len = len;

        rc = ngx_foko_chat_jwt_verify(ws->fmcf->jwt, &t,
                                      NGX_FOKO_CHAT_TOKEN_ACCESS, &claims,
                                      ws->connection->log);

        ngx_memcpy(ws->sub, claims.sub, sizeof(ws->sub));
        ws->ver = claims.ver;
        ngx_explicit_memzero(&claims, sizeof(ngx_foko_chat_claims_t));

        if (rc != NGX_OK) {
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_AUTH,
                                    "the token is not valid");
            return;
        }
    }

    ws->authing = 1;

    /*
     * A burst of connections (all clients back after a restart) waits
     * here in turn, in its contexts, instead of as thousands of tasks:
     * those, freed between the connections' long-lived allocations, left
     * about 1 KB of free heap per connection behind.
     */

    if (ngx_foko_chat_ws_nauths >= NGX_FOKO_CHAT_WS_AUTHS) {
        ws->auth_waiting = 1;
        ngx_queue_insert_tail(&ngx_foko_chat_ws_auth_queue, &ws->auth_link);
        ngx_foko_chat_ws_nwaiting++;
        return;
    }

    ngx_foko_chat_ws_auth_start(ws);
}


static void
ngx_foko_chat_ws_auth_start(ngx_foko_chat_ws_t *ws)
{
    ngx_foko_chat_task_t    *task;
    ngx_foko_chat_ws_job_t  *job;

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_ws_job_t),
                                     ngx_cycle->log);
    if (task == NULL) {
        ws->authing = 0;
        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                "the server is too busy");
        return;
    }

    job = task->data;
    job->what = NGX_FOKO_CHAT_WS_JOB_AUTH;
    job->ver = ws->ver;
    ngx_memcpy(job->user, ws->sub, 24);

    if (ngx_foko_chat_ws_job_post(ws, task, ngx_foko_chat_ws_auth_run,
                                  ngx_foko_chat_ws_auth_done)
        != NGX_OK)
    {
        ws->authing = 0;
        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                "the server is too busy");
        return;
    }

    ngx_foko_chat_ws_nauths++;
}


/* a sign-in is done: the next waiting connections get their turn */

static void
ngx_foko_chat_ws_auth_next(void)
{
    ngx_queue_t         *q;
    ngx_foko_chat_ws_t  *ws;

    while (ngx_foko_chat_ws_nauths < NGX_FOKO_CHAT_WS_AUTHS
           && !ngx_queue_empty(&ngx_foko_chat_ws_auth_queue))
    {
        q = ngx_queue_head(&ngx_foko_chat_ws_auth_queue);
        ngx_queue_remove(q);
        ws = ngx_queue_data(q, ngx_foko_chat_ws_t, auth_link);
        ws->auth_waiting = 0;
        ngx_foko_chat_ws_nwaiting--;

        if (ws->closing) {
            /* closed while it waited (the worker shuts down) */
            ws->authing = 0;
            continue;
        }

        ngx_foko_chat_ws_auth_start(ws);

        if (!ws->authing && ngx_foko_chat_ws_flush(ws) != NGX_OK) {
            ngx_foko_chat_ws_free(ws);
        }
    }
}


static void
ngx_foko_chat_ws_auth_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_ws_job_t  *job = task->data;

    ngx_int_t   rc;
    ngx_uint_t  i;

    job->rc = NGX_OK;

    ngx_memcpy(job->account.id, job->user, 25);

    rc = ngx_foko_chat_store_user_by_id(&job->account, job->err);

    if (rc != NGX_OK) {
        job->rc = rc;
        return;
    }

    if (job->ver >= 0 && job->ver != job->account.ver) {
        /* the password was reset since the token was issued */
        job->rc = NGX_DECLINED;
        return;
    }

    if (ngx_foko_chat_store_channel_ids_of(job->user, &job->channels,
                                           &job->nchannels, job->err)
        != NGX_OK)
    {
        job->rc = NGX_ERROR;
        return;
    }

    if (job->nchannels == 0) {
        return;
    }

    /* which counters the zone lacks is seen on the event loop */

    job->max_seq = malloc(job->nchannels * sizeof(int64_t));
    if (job->max_seq == NULL) {
        job->rc = NGX_ERROR;
        return;
    }

    for (i = 0; i < job->nchannels; i++) {
        job->max_seq[i] = -1;
    }
}


/* the highest stored seqs of the channels whose counters the zone lacks */

static void
ngx_foko_chat_ws_auth_seq_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_ws_job_t  *job = task->data;

    ngx_uint_t  i;

    job->rc = NGX_OK;

    for (i = 0; i < job->nchannels; i++) {
        if (job->max_seq[i] != -2) {
            continue;
        }

        if (ngx_foko_chat_store_messages_max_seq(job->channels[i].id,
                                                 &job->max_seq[i], job->err)
            != NGX_OK)
        {
            job->rc = NGX_ERROR;
            return;
        }
    }
}


static ngx_int_t
ngx_foko_chat_ws_auth_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_ws_job_t  *job = task->data;

    u_char              *held;
    ngx_connection_t    *c;
    ngx_foko_chat_ws_t  *ws;

    ws = job->ws;

    if (ws && !task->failed && job->rc == NGX_OK && job->max_seq
        && ngx_foko_chat_ws_auth_seqs(ws, task) == NGX_AGAIN)
    {
        /* a second round for the counters the zone lacks */
        return NGX_OK;
    }

    /* this sign-in's turn on the thread pool is over */

    ngx_foko_chat_ws_nauths--;
    ngx_foko_chat_ws_auth_next();

    if (ws == NULL) {
        ngx_foko_chat_ws_job_release(job);
        return NGX_OK;
    }

    ngx_queue_remove(&job->link);
    ws->njobs--;
    ws->authing = 0;
    c = ws->connection;

    if (task->failed || job->rc == NGX_ERROR) {
        if (job->err[0]) {
            ngx_log_error(NGX_LOG_ERR, c->log, 0, "foko chat: %s", job->err);
        }

        ngx_foko_chat_ws_job_release(job);
        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                task->failed ? "the server is too busy"
                                             : "the database is unreachable");
        goto flush;
    }

    if (job->rc != NGX_OK) {
        ngx_foko_chat_ws_job_release(job);
        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_AUTH,
                                "the token is not valid any more");
        goto flush;
    }

    if (ngx_exiting || ngx_terminate) {
        ngx_foko_chat_ws_job_release(job);
        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_GOING_AWAY,
                                "the server is restarting");
        goto flush;
    }

    ngx_foko_chat_ws_ready(ws, job);
    ngx_foko_chat_ws_job_release(job);

    if (ws->closing) {
        goto flush;
    }

    ngx_add_timer(c->read, ws->fmcf->ws_ping);

    if (ws->held) {
        held = ws->held;
        ws->held = NULL;

        if (ngx_foko_chat_ws_input(ws, held, held + ws->held_len) != NGX_OK) {
            ngx_free(held);
            ngx_foko_chat_ws_free(ws);
            return NGX_OK;
        }

        ngx_free(held);
    }

    if (!ws->closing && c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }

flush:

    if (ngx_foko_chat_ws_flush(ws) != NGX_OK) {
        ngx_foko_chat_ws_free(ws);
    }

    return NGX_OK;
}


/*
 * The counters of the user's channels: those the zone has are used as
 * they are; for the others the task goes again to read MongoDB's highest
 * seqs (NGX_AGAIN).  Most connections find them all in the zone.
 */

static ngx_int_t
ngx_foko_chat_ws_auth_seqs(ngx_foko_chat_ws_t *ws, ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_ws_job_t  *job = task->data;

    ngx_uint_t                missing, i;
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ws->fmcf->shm_zone->data;
    missing = 0;

    for (i = 0; i < job->nchannels; i++) {
        if (job->max_seq[i] >= 0) {
            /* read just now */
            continue;
        }

        if (ngx_foko_chat_seq_last(shm, job->channels[i].id) < 0) {
            job->max_seq[i] = -2;
            missing++;
        }
    }

    if (missing == 0 || task->run == ngx_foko_chat_ws_auth_seq_run) {
        return NGX_OK;
    }

    task->run = ngx_foko_chat_ws_auth_seq_run;

    if (ngx_foko_chat_task_post(task, ws->fmcf->storage_pool.pool)
        != NGX_OK)
    {
        task->failed = 1;
        return NGX_OK;
    }

    return NGX_AGAIN;
}


/* subscribed to every channel of the user: "ready" */

static void
ngx_foko_chat_ws_ready(ngx_foko_chat_ws_t *ws, ngx_foko_chat_ws_job_t *job)
{
    u_char                   *ids;
    json_t                   *channels, *ready;
    uint32_t                  hash;
    ngx_int_t                 rc;
    ngx_uint_t                i;
    ngx_rbtree_node_t        *node;
    ngx_foko_chat_ws_sub_t   *sub;
    ngx_foko_chat_ws_user_t  *user;
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ws->fmcf->shm_zone->data;

    for (i = 0; i < job->nchannels; i++) {
        if (job->max_seq[i] >= 0
            && ngx_foko_chat_seq_load(shm, job->channels[i].id,
                                      job->max_seq[i])
               != NGX_OK)
        {
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                    "the server is out of memory");
            return;
        }
    }

    /* the user's node on this worker */

    user = (ngx_foko_chat_ws_user_t *)
               ngx_foko_chat_shm_id_lookup(&ngx_foko_chat_ws_users,
                                           job->user);

    if (user == NULL) {
        node = ngx_calloc(offsetof(ngx_rbtree_node_t, color)
                          + sizeof(ngx_foko_chat_ws_user_t), ngx_cycle->log);
        if (node == NULL) {
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                    "the server is out of memory");
            return;
        }

        hash = ngx_crc32_short(job->user, 24);
        node->key = hash;
        user = (ngx_foko_chat_ws_user_t *) &node->color;
        ngx_memcpy(user->id, job->user, 24);
        ngx_queue_init(&user->conns);
        user->grace.handler = ngx_foko_chat_ws_grace;
        user->grace.data = user;
        user->grace.log = ngx_cycle->log;

        /*
         * A worker that shuts down does not wait: the workers of the
         * zone see to the users it leaves (ngx_foko_chat_ws_sweep).
         */
        user->grace.cancelable = 1;

        ngx_rbtree_insert(&ngx_foko_chat_ws_users, node);
    }

    ngx_cpystrn(user->name, job->account.username, sizeof(user->name));

    ngx_queue_remove(&ws->user_link);
    ngx_queue_insert_tail(&user->conns, &ws->user_link);
    user->nconns++;
    ws->user = user;
    ws->authed = 1;

    for (i = 0; i < job->nchannels; i++) {
        if (ngx_foko_chat_ws_subscribe(ws, job->channels[i].id) == NULL) {
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                    "the server is out of memory");
            return;
        }
    }

    rc = ngx_foko_chat_presence_open(shm, user->id);

    if (rc != NGX_ERROR) {
        ws->present = 1;
    }

    if (rc == NGX_OK) {
        ids = ngx_alloc(ws->nsubs * 24 + 1, ngx_cycle->log);

        if (ids) {
            for (i = 0; i < ws->nsubs; i++) {
                ngx_memcpy(ids + i * 24, ws->subs[i]->chan->id, 24);
            }

            ngx_foko_chat_ws_presence(user, ids, ws->nsubs, 1);
            ngx_free(ids);
        }
    }

    channels = json_array();

    for (i = 0; channels && i < ws->nsubs; i++) {
        sub = ws->subs[i];

        if (json_array_append_new(channels,
                json_pack("{s:s#,s:I}", "id", sub->chan->id, (int) 24,
                          "last_seq", (json_int_t) ngx_max(sub->sent, 0)))
            != 0)
        {
            json_decref(channels);
            channels = NULL;
        }
    }

    ready = json_pack("{s:s,s:{s:s#,s:s},s:o*}", "type", "ready",
                      "user", "id", user->id, (int) 24,
                      "username", (char *) user->name,
                      "channels", channels);

    ngx_foko_chat_ws_queue_json(ws, ready);
}


/* send: a post as the REST call makes it; "ack" or "error" by ref */

static void
ngx_foko_chat_ws_send(ngx_foko_chat_ws_t *ws, ngx_foko_chat_cmd_t *cmd)
{
    json_t                   *answer;
    ngx_int_t                 rc;
    ngx_uint_t                status;
    ngx_foko_chat_post_t      post;
    ngx_foko_chat_ws_post_t  *p;

    if (ws->nposts >= NGX_FOKO_CHAT_WS_POSTS) {
        ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref, "overloaded",
                               "too many messages wait for their ack", NULL);
        return;
    }

    p = ngx_calloc(sizeof(ngx_foko_chat_ws_post_t), ngx_cycle->log);
    if (p == NULL) {
        ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref, "overloaded",
                               "the server is out of memory", NULL);
        return;
    }

    p->ws = ws;
    ngx_cpystrn(p->ref, (u_char *) cmd->ref, sizeof(p->ref));

    post.user = ws->user->id;
    post.username = ws->user->name;
    post.channel = (u_char *) cmd->channel;
    post.body = cmd->body;
    post.handler = ngx_foko_chat_ws_sent;
    post.data = p;
    post.log = ngx_cycle->log;

    answer = NULL;

    rc = ngx_foko_chat_messages_submit(&post, &p->handle, &status, &answer);

    if (rc == NGX_DONE) {
        ngx_queue_insert_tail(&ws->posts, &p->link);
        ws->nposts++;
        return;
    }

    /* answered at once */

    ngx_queue_init(&p->link);
    ws->nposts++;

    if (rc == NGX_ERROR) {
        answer = json_pack("{s:s,s:s}", "code", "overloaded",
                           "message", "the server is out of memory");
        status = NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ngx_foko_chat_ws_sent(p, status, answer);
}


static void
ngx_foko_chat_ws_sent(void *data, ngx_uint_t status, json_t *answer)
{
    ngx_foko_chat_ws_post_t  *p = data;

    json_t              *event;
    ngx_foko_chat_ws_t  *ws;

    ws = p->ws;

    if (ws == NULL || answer == NULL) {
        json_decref(answer);
        ngx_free(p);
        return;
    }

    ngx_queue_remove(&p->link);
    ws->nposts--;

    if (status == NGX_HTTP_OK || status == NGX_HTTP_CREATED) {
        event = json_pack("{s:s,s:s,s:O}", "type", "ack",
                          "ref", (char *) p->ref,
                          "message", json_object_get(answer, "message"));
    } else {
        event = json_deep_copy(answer);

        if (event) {
            (void) json_object_set_new(event, "type", json_string("error"));
            (void) json_object_set_new(event, "ref",
                                       json_string((char *) p->ref));
        }
    }

    json_decref(answer);
    ngx_free(p);

    ngx_foko_chat_ws_queue_json(ws, event);
}


static void
ngx_foko_chat_ws_typing(ngx_foko_chat_ws_t *ws, ngx_foko_chat_cmd_t *cmd)
{
    char                     *json;
    json_t                   *event;
    ngx_foko_chat_event_t     ev;
    ngx_foko_chat_ws_sub_t   *sub;

    sub = ngx_foko_chat_ws_sub_find(ws, (u_char *) cmd->channel);

    if (sub == NULL) {
        ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref, "not_found",
                               "no such channel", NULL);
        return;
    }

    if (sub->typing
        && ngx_current_msec - sub->typing < NGX_FOKO_CHAT_WS_TYPING)
    {
        return;
    }

    sub->typing = ngx_current_msec ? ngx_current_msec : 1;

    event = json_pack("{s:s,s:s,s:{s:s#,s:s}}", "type", "typing",
                      "channel_id", cmd->channel,
                      "user", "id", ws->user->id, (int) 24,
                      "username", (char *) ws->user->name);
    json = event ? json_dumps(event, JSON_COMPACT) : NULL;
    json_decref(event);

    if (json == NULL) {
        return;
    }

    ngx_memzero(&ev, sizeof(ngx_foko_chat_event_t));
    ev.kind = NGX_FOKO_CHAT_EV_TYPING;
    ngx_memcpy(ev.channel, cmd->channel, 24);
    ngx_memcpy(ev.user, ws->user->id, 24);
    ev.json = (u_char *) json;
    ev.json_len = ngx_strlen(json);

    (void) ngx_foko_chat_bus_publish(ws->fmcf->shm_zone->data, &ev);

    free(json);
}


static void
ngx_foko_chat_ws_mark_read(ngx_foko_chat_ws_t *ws, ngx_foko_chat_cmd_t *cmd)
{
    ngx_foko_chat_task_t    *task;
    ngx_foko_chat_ws_job_t  *job;

    if (ngx_foko_chat_ws_sub_find(ws, (u_char *) cmd->channel) == NULL) {
        ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref, "not_found",
                               "no such channel", NULL);
        return;
    }

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_ws_job_t),
                                     ngx_cycle->log);
    if (task == NULL) {
        ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref, "overloaded",
                               "the server is out of memory", NULL);
        return;
    }

    job = task->data;
    job->what = NGX_FOKO_CHAT_WS_JOB_READ;
    ngx_memcpy(job->user, ws->user->id, 24);
    ngx_memcpy(job->channel, cmd->channel, 24);
    job->seq = cmd->seq;

    if (ngx_foko_chat_ws_job_post(ws, task, ngx_foko_chat_ws_job_run,
                                  ngx_foko_chat_ws_job_done)
        != NGX_OK)
    {
        ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref, "overloaded",
                               "the server is too busy", NULL);
    }
}


/*
 * resume: every message after the client's last seen seq, in order, from
 * the ring or from MongoDB, page by page, then "resumed".  Live messages
 * of the channel are held back from the connection meanwhile: the replay
 * goes on until it reaches what was delivered live.
 */

static void
ngx_foko_chat_ws_resume(ngx_foko_chat_ws_t *ws, ngx_foko_chat_cmd_t *cmd)
{
    size_t                   size;
    int64_t                  seq;
    ngx_uint_t               i, j;
    ngx_foko_chat_ws_sub_t  *sub, **resumes;

    for (i = 0; i < cmd->nchannels; i++) {
        sub = ngx_foko_chat_ws_sub_find(ws, (u_char *) cmd->channels[i].id);

        if (sub == NULL) {
            ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref, "not_found",
                                   "no such channel", "channels");
            continue;
        }

        /* a client cannot have seen what was not delivered yet */
        seq = ngx_min(cmd->channels[i].seq,
                      ngx_max(sub->chan->delivered, 0));

        if (sub->resuming) {
            /* the later request wins */
            sub->resume_from = cmd->channels[i].seq;
            sub->sent = seq;
            continue;
        }

        size = (ws->nresumes + 1) * sizeof(ngx_foko_chat_ws_sub_t *);

        resumes = ngx_alloc(size, ngx_cycle->log);
        if (resumes == NULL) {
            ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref, "overloaded",
                                   "the server is out of memory", NULL);
            return;
        }

        for (j = 0; j < ws->nresumes; j++) {
            resumes[j] = ws->resumes[j];
        }

        ngx_free(ws->resumes);
        ws->resumes = resumes;
        ws->resumes[ws->nresumes++] = sub;

        sub->resuming = 1;
        sub->resume_from = cmd->channels[i].seq;
        sub->sent = seq;
    }

    ngx_foko_chat_ws_resume_next(ws);
}


static void
ngx_foko_chat_ws_resume_next(ngx_foko_chat_ws_t *ws)
{
    json_t                   *page, *event;
    ngx_int_t                 rc;
    ngx_uint_t                more, i;
    ngx_foko_chat_task_t     *task;
    ngx_foko_chat_ws_job_t   *job;
    ngx_foko_chat_ws_sub_t   *sub;
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ws->fmcf->shm_zone->data;

    while (ws->nresumes && ws->page_job == NULL && !ws->closing) {

        if (ws->out_bytes > ws->fmcf->ws_buffer / 2) {
            /* more when the client has read what it has */
            return;
        }

        sub = ws->resumes[0];

        if (sub->chan->delivered < 0 || sub->sent >= sub->chan->delivered) {
            /* caught up with the live messages */

            sub->resuming = 0;

            for (i = 1; i < ws->nresumes; i++) {
                ws->resumes[i - 1] = ws->resumes[i];
            }

            ws->nresumes--;

            event = json_pack("{s:s,s:s#,s:I,s:I}", "type", "resumed",
                              "channel_id", sub->chan->id, (int) 24,
                              "from", (json_int_t) sub->resume_from,
                              "to", (json_int_t) ngx_max(sub->sent,
                                                         sub->resume_from));
            ngx_foko_chat_ws_queue_json(ws, event);
            continue;
        }

        page = NULL;

        rc = ngx_foko_chat_cache_page(shm, sub->chan->id, 0, sub->sent,
                                      NGX_FOKO_CHAT_WS_PAGE, &page, &more);

        if (rc == NGX_OK && json_array_size(page)) {
            if (ngx_foko_chat_ws_resume_page(ws, sub, page) != NGX_OK) {
                return;
            }

            continue;
        }

        json_decref(page);

        /* older than the ring: from MongoDB */

        task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_ws_job_t),
                                         ngx_cycle->log);
        if (task == NULL) {
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                    "the server is out of memory");
            return;
        }

        job = task->data;
        job->what = NGX_FOKO_CHAT_WS_JOB_PAGE;
        job->sub = sub;
        ngx_memcpy(job->channel, sub->chan->id, 24);
        job->after = sub->sent;
        job->upto = sub->chan->delivered;

        if (ngx_foko_chat_ws_job_post(ws, task, ngx_foko_chat_ws_job_run,
                                      ngx_foko_chat_ws_job_done)
            != NGX_OK)
        {
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                    "the server is too busy");
            return;
        }

        ws->page_job = job;
        return;
    }
}


/* a page of replayed messages; takes "page" */

static ngx_int_t
ngx_foko_chat_ws_resume_page(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_sub_t *sub, json_t *page)
{
    json_t      *m;
    int64_t      seq;
    ngx_uint_t   i;

    for (i = 0; i < json_array_size(page); i++) {
        m = json_array_get(page, i);
        seq = json_integer_value(json_object_get(m, "seq"));

        if (seq <= sub->sent) {
            continue;
        }

        sub->sent = seq;

        ngx_foko_chat_ws_queue_json(ws, json_pack("{s:s,s:O}",
                                                  "type", "message",
                                                  "message", m));
        if (ws->closing) {
            json_decref(page);
            return NGX_ERROR;
        }
    }

    if (json_array_size(page) == 0) {
        /* nothing more stored: the rest was skipped */
        sub->sent = sub->chan->delivered;
    }

    json_decref(page);

    return NGX_OK;
}


/* work on the thread pool */

static ngx_int_t
ngx_foko_chat_ws_job_post(ngx_foko_chat_ws_t *ws, ngx_foko_chat_task_t *task,
    ngx_foko_chat_task_run_pt run, ngx_foko_chat_task_done_pt done)
{
    ngx_foko_chat_ws_job_t  *job = task->data;

    if (ws->njobs >= NGX_FOKO_CHAT_WS_TASKS) {
        ngx_foko_chat_task_free(task);
        return NGX_ERROR;
    }

    job->ws = ws;
    task->run = run;
    task->done = done;

    if (ngx_foko_chat_task_post(task, ws->fmcf->storage_pool.pool) != NGX_OK) {
        ngx_foko_chat_task_free(task);
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&ws->jobs, &job->link);
    ws->njobs++;

    return NGX_OK;
}


static void
ngx_foko_chat_ws_job_release(ngx_foko_chat_ws_job_t *job)
{
    ngx_uint_t  i;

    for (i = 0; job->channels && i < job->nchannels; i++) {
        ngx_foko_chat_store_channel_doc_free(&job->channels[i]);
    }

    free(job->channels);
    job->channels = NULL;

    free(job->max_seq);
    job->max_seq = NULL;

    json_decref(job->page);
    job->page = NULL;
}


static void
ngx_foko_chat_ws_job_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_ws_job_t  *job = task->data;

    ngx_uint_t  more;

    if (job->what == NGX_FOKO_CHAT_WS_JOB_READ) {
        job->rc = ngx_foko_chat_store_read_set(job->channel, job->user,
                                               job->seq, job->err);
        return;
    }

    job->rc = ngx_foko_chat_store_messages_page(job->channel, 0, job->after,
                                                job->upto,
                                                NGX_FOKO_CHAT_WS_PAGE,
                                                &job->page, &more, job->err);
}


static ngx_int_t
ngx_foko_chat_ws_job_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_ws_job_t  *job = task->data;

    json_t              *page;
    ngx_foko_chat_ws_t  *ws;

    ws = job->ws;

    if (job->what == NGX_FOKO_CHAT_WS_JOB_READ
        && !task->failed && job->rc == NGX_OK)
    {
        /* stored: the members hear of it, also if the reader went away */
        ngx_foko_chat_messages_publish_read(job->channel, job->user,
                                            job->seq);
    }

    if (ws == NULL) {
        ngx_foko_chat_ws_job_release(job);
        return NGX_OK;
    }

    ngx_queue_remove(&job->link);
    ws->njobs--;

    if (job->what == NGX_FOKO_CHAT_WS_JOB_READ) {
        if (task->failed || job->rc != NGX_OK) {
            ngx_foko_chat_ws_error(ws, NULL, "storage_unavailable",
                                   "the read mark was not stored", NULL);
        }

        goto done;
    }

    /* a page of a resume */

    ws->page_job = NULL;

    if (task->failed || job->rc != NGX_OK) {
        if (job->err[0]) {
            ngx_log_error(NGX_LOG_ERR, ws->connection->log, 0,
                          "foko chat: %s", job->err);
        }

        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                "history is unreachable, resume later");
        goto done;
    }

    page = job->page;
    job->page = NULL;

    if (ngx_foko_chat_ws_resume_page(ws, job->sub, page) == NGX_OK) {
        ngx_foko_chat_ws_resume_next(ws);
    }

done:

    ngx_foko_chat_ws_job_release(job);

    if (ngx_foko_chat_ws_flush(ws) != NGX_OK) {
        ngx_foko_chat_ws_free(ws);
    }

    return NGX_OK;
}


/* subscriptions */

static ngx_foko_chat_ws_sub_t *
ngx_foko_chat_ws_sub_find(ngx_foko_chat_ws_t *ws, u_char *channel)
{
    ngx_uint_t  i;

    for (i = 0; i < ws->nsubs; i++) {
        if (ngx_memcmp(ws->subs[i]->chan->id, channel, 24) == 0) {
            return ws->subs[i];
        }
    }

    return NULL;
}


static ngx_foko_chat_ws_sub_t *
ngx_foko_chat_ws_subscribe(ngx_foko_chat_ws_t *ws, u_char *channel)
{
    ngx_uint_t                size;
    ngx_foko_chat_ws_sub_t   *sub, **subs;
    ngx_foko_chat_ws_chan_t  *chan;

    sub = ngx_foko_chat_ws_sub_find(ws, channel);
    if (sub) {
        return sub;
    }

    if (ws->nsubs == ws->subs_size) {
        size = ws->subs_size ? 2 * ws->subs_size : 4;

        subs = ngx_alloc(size * sizeof(ngx_foko_chat_ws_sub_t *),
                         ngx_cycle->log);
        if (subs == NULL) {
            return NULL;
        }

        if (ws->subs) {
            ngx_memcpy(subs, ws->subs,
                       ws->nsubs * sizeof(ngx_foko_chat_ws_sub_t *));
            ngx_free(ws->subs);
        }

        ws->subs = subs;
        ws->subs_size = size;
    }

    chan = ngx_foko_chat_ws_chan_get(channel);
    if (chan == NULL) {
        return NULL;
    }

    sub = ngx_calloc(sizeof(ngx_foko_chat_ws_sub_t), ngx_cycle->log);
    if (sub == NULL) {
        ngx_foko_chat_ws_chan_put(chan);
        return NULL;
    }

    sub->chan = chan;
    sub->ws = ws;
    sub->sent = chan->delivered;

    ngx_queue_insert_tail(&chan->subs, &sub->link);
    chan->nsubs++;

    ws->subs[ws->nsubs++] = sub;

    return sub;
}


static void
ngx_foko_chat_ws_unsubscribe(ngx_foko_chat_ws_sub_t *sub)
{
    ngx_uint_t           i, j;
    ngx_foko_chat_ws_t  *ws;

    ws = sub->ws;

    for (i = 0; i < ws->nsubs; i++) {
        if (ws->subs[i] == sub) {
            ws->subs[i] = ws->subs[--ws->nsubs];
            break;
        }
    }

    for (i = 0; i < ws->nresumes; i++) {
        if (ws->resumes[i] == sub) {
            for (j = i + 1; j < ws->nresumes; j++) {
                ws->resumes[j - 1] = ws->resumes[j];
            }

            ws->nresumes--;
            break;
        }
    }

    if (ws->page_job && ws->page_job->sub == sub) {
        /* the page is dropped when it comes */
        ngx_queue_remove(&ws->page_job->link);
        ngx_queue_init(&ws->page_job->link);
        ws->njobs--;
        ws->page_job->ws = NULL;
        ws->page_job = NULL;
    }

    ngx_queue_remove(&sub->link);
    sub->chan->nsubs--;

    ngx_foko_chat_ws_chan_put(sub->chan);
    ngx_free(sub);
}


/* a channel's node, created with what the zone says it is stored through */

static ngx_foko_chat_ws_chan_t *
ngx_foko_chat_ws_chan_get(u_char *channel)
{
    ngx_rbtree_node_t        *node;
    ngx_foko_chat_ws_chan_t  *chan;
    ngx_foko_chat_shm_ctx_t  *shm;

    chan = (ngx_foko_chat_ws_chan_t *)
               ngx_foko_chat_shm_id_lookup(&ngx_foko_chat_ws_chans, channel);
    if (chan) {
        return chan;
    }

    node = ngx_calloc(offsetof(ngx_rbtree_node_t, color)
                      + sizeof(ngx_foko_chat_ws_chan_t), ngx_cycle->log);
    if (node == NULL) {
        return NULL;
    }

    node->key = ngx_crc32_short(channel, 24);
    chan = (ngx_foko_chat_ws_chan_t *) &node->color;
    ngx_memcpy(chan->id, channel, 24);
    ngx_queue_init(&chan->subs);
    ngx_queue_init(&chan->held);

    chan->stall.handler = ngx_foko_chat_ws_stall;
    chan->stall.data = chan;
    chan->stall.log = ngx_cycle->log;
    chan->stall.cancelable = 1;

    /*
     * Events of seqs up to "through" are in the log already: those not
     * read yet by this worker are skipped, the client resumes them.
     */

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);
    chan->through = ngx_foko_chat_seq_through(shm, channel);
    chan->delivered = chan->through;

    ngx_rbtree_insert(&ngx_foko_chat_ws_chans, node);

    return chan;
}


static void
ngx_foko_chat_ws_chan_put(ngx_foko_chat_ws_chan_t *chan)
{
    ngx_queue_t              *q;
    ngx_rbtree_node_t        *node;
    ngx_foko_chat_ws_held_t  *h;

    if (chan->nsubs) {
        return;
    }

    while (!ngx_queue_empty(&chan->held)) {
        q = ngx_queue_head(&chan->held);
        ngx_queue_remove(q);
        h = ngx_queue_data(q, ngx_foko_chat_ws_held_t, queue);
        ngx_free(h);
    }

    if (chan->stall.timer_set) {
        ngx_del_timer(&chan->stall);
    }

    node = (ngx_rbtree_node_t *)
               ((u_char *) chan - offsetof(ngx_rbtree_node_t, color));

    ngx_rbtree_delete(&ngx_foko_chat_ws_chans, node);
    ngx_free(node);
}


/* the connection leaves its user; the last one starts the grace period */

static void
ngx_foko_chat_ws_user_leave(ngx_foko_chat_ws_t *ws)
{
    ngx_uint_t                i;
    ngx_rbtree_node_t        *node;
    ngx_foko_chat_ws_user_t  *user;
    ngx_foko_chat_shm_ctx_t  *shm;

    user = ws->user;
    ws->user = NULL;

    ngx_queue_remove(&ws->user_link);
    user->nconns--;

    shm = ws->fmcf->shm_zone->data;

    if (ws->present
        && ngx_foko_chat_presence_close(shm, user->id) == NGX_OK)
    {
        /* the channels to tell, as the last connection knew them */

        ngx_free(user->channels);
        user->nchannels = 0;

        user->channels = ngx_alloc(ws->nsubs * 24 + 1, ngx_cycle->log);

        if (user->channels) {
            for (i = 0; i < ws->nsubs; i++) {
                ngx_memcpy(user->channels + i * 24, ws->subs[i]->chan->id,
                           24);
            }

            user->nchannels = ws->nsubs;
        }

        ngx_add_timer(&user->grace, ws->fmcf->presence_grace);
        return;
    }

    if (user->nconns == 0 && !user->grace.timer_set) {
        ngx_free(user->channels);
        node = (ngx_rbtree_node_t *)
                   ((u_char *) user - offsetof(ngx_rbtree_node_t, color));
        ngx_rbtree_delete(&ngx_foko_chat_ws_users, node);
        ngx_free(node);
    }
}


static void
ngx_foko_chat_ws_grace(ngx_event_t *ev)
{
    ngx_foko_chat_ws_user_t  *user = ev->data;

    ngx_rbtree_node_t          *node;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);

    if (ngx_foko_chat_presence_expire(fmcf->shm_zone->data, user->id,
                                      fmcf->presence_grace)
        == NGX_OK)
    {
        ngx_foko_chat_ws_presence(user, user->channels, user->nchannels, 0);
    }

    if (user->nconns == 0) {
        ngx_free(user->channels);
        node = (ngx_rbtree_node_t *)
                   ((u_char *) user - offsetof(ngx_rbtree_node_t, color));
        ngx_rbtree_delete(&ngx_foko_chat_ws_users, node);
        ngx_free(node);
    }
}


static void
ngx_foko_chat_ws_presence(ngx_foko_chat_ws_user_t *user, u_char *channels,
    ngx_uint_t n, ngx_uint_t online)
{
    char                     *json;
    json_t                   *event;
    ngx_uint_t                max;
    ngx_foko_chat_event_t     ev;
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    event = json_pack("{s:s,s:s#,s:b}", "type", "presence",
                      "user_id", user->id, (int) 24, "online", online);
    json = event ? json_dumps(event, JSON_COMPACT) : NULL;
    json_decref(event);

    if (json == NULL) {
        return;
    }

    /* the log takes records of a quarter of its size */
    max = (shm->sh->log_size / 4 - 1024) / 24;

    ngx_memzero(&ev, sizeof(ngx_foko_chat_event_t));
    ev.kind = NGX_FOKO_CHAT_EV_PRESENCE;
    ngx_memcpy(ev.user, user->id, 24);
    ev.ids = (u_char (*)[24]) channels;
    ev.nids = ngx_min(n, max);
    ev.json = (u_char *) json;
    ev.json_len = ngx_strlen(json);

    (void) ngx_foko_chat_bus_publish(shm, &ev);

    free(json);
}


/*
 * Every few seconds: the users who were online only through workers that
 * are gone (one that died, or one that shut down before its grace periods
 * ended) get "offline" in the channels MongoDB says are theirs.
 */

static void
ngx_foko_chat_ws_sweep(ngx_event_t *ev)
{
    u_char                     *users;
    ngx_uint_t                  i, n;
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_ws_sweep_t   *sw;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);

    if (!ngx_exiting) {
        ngx_add_timer(ev, NGX_FOKO_CHAT_WS_SWEEP);
    }

    users = ngx_alloc(NGX_FOKO_CHAT_WS_SWEEP_MAX * 24, ev->log);
    if (users == NULL) {
        return;
    }

    n = ngx_foko_chat_presence_sweep(fmcf->shm_zone->data, users,
                                     NGX_FOKO_CHAT_WS_SWEEP_MAX);
    if (n == 0) {
        ngx_free(users);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ev->log, 0,
                  "foko chat: %ui users were online only through workers "
                  "that are gone; they go offline", n);

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_ws_sweep_t),
                                     ngx_cycle->log);
    if (task == NULL) {
        ngx_free(users);
        return;
    }

    sw = task->data;
    sw->n = n;

    for (i = 0; i < n; i++) {
        ngx_memcpy(sw->users[i], users + i * 24, 24);
    }

    ngx_free(users);

    task->run = ngx_foko_chat_ws_sweep_run;
    task->done = ngx_foko_chat_ws_sweep_done;

    if (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool) != NGX_OK) {
        ngx_foko_chat_task_free(task);
    }
}


static void
ngx_foko_chat_ws_sweep_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_ws_sweep_t  *sw = task->data;

    ngx_uint_t  i;

    for (i = 0; i < sw->n; i++) {
        if (ngx_foko_chat_store_channel_ids_of(sw->users[i],
                                               &sw->channels[i],
                                               &sw->nchannels[i], sw->err)
            != NGX_OK)
        {
            sw->channels[i] = NULL;
            sw->nchannels[i] = 0;
        }
    }
}


static ngx_int_t
ngx_foko_chat_ws_sweep_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_ws_sweep_t  *sw = task->data;

    u_char                   *ids;
    ngx_uint_t                i, j;
    ngx_foko_chat_ws_user_t   user;

    for (i = 0; i < sw->n; i++) {
        ngx_memcpy(user.id, sw->users[i], 24);

        ids = ngx_alloc(sw->nchannels[i] * 24 + 1, ngx_cycle->log);

        if (ids && !task->failed) {
            for (j = 0; j < sw->nchannels[i]; j++) {
                ngx_memcpy(ids + j * 24, sw->channels[i][j].id, 24);
            }

            ngx_foko_chat_ws_presence(&user, ids, sw->nchannels[i], 0);
        }

        if (ids) {
            ngx_free(ids);
        }

        for (j = 0; j < sw->nchannels[i]; j++) {
            ngx_foko_chat_store_channel_doc_free(&sw->channels[i][j]);
        }

        free(sw->channels[i]);
    }

    return NGX_OK;
}


/* events from the log: every worker's, this one's too */

static void
ngx_foko_chat_ws_event(ngx_foko_chat_event_t *ev)
{
    ngx_uint_t                     i, mark;
    ngx_queue_t                   *q, *next;
    ngx_foko_chat_ws_t            *ws;
    ngx_foko_chat_ws_sub_t        *sub;
    ngx_foko_chat_ws_chan_t       *chan;
    ngx_foko_chat_ws_user_t       *user;
    ngx_foko_chat_ws_frame_buf_t  *f;

    if (ev->kind == NGX_FOKO_CHAT_EV_PRESENCE) {
        /* once to each connection that shares a channel with the user */

        f = NULL;
        mark = ++ngx_foko_chat_ws_mark;

        for (i = 0; i < ev->nids; i++) {
            chan = (ngx_foko_chat_ws_chan_t *)
                       ngx_foko_chat_shm_id_lookup(&ngx_foko_chat_ws_chans,
                                                   ev->ids[i]);
            if (chan == NULL) {
                continue;
            }

            for (q = ngx_queue_head(&chan->subs);
                 q != ngx_queue_sentinel(&chan->subs);
                 q = ngx_queue_next(q))
            {
                sub = ngx_queue_data(q, ngx_foko_chat_ws_sub_t, link);
                ws = sub->ws;

                if (ws->mark == mark
                    || ngx_memcmp(ws->user->id, ev->user, 24) == 0)
                {
                    continue;
                }

                ws->mark = mark;

                if (f == NULL) {
                    f = ngx_foko_chat_ws_frame(NGX_FOKO_CHAT_WS_TEXT,
                                               ev->json, ev->json_len);
                    if (f == NULL) {
                        return;
                    }
                }

                ngx_foko_chat_ws_queue(ws, f);
            }
        }

        if (f) {
            ngx_foko_chat_ws_frame_put(f);
        }

        return;
    }

    if (ev->kind == NGX_FOKO_CHAT_EV_JOIN) {
        /* the joining users' connections here subscribe first */

        for (i = 0; i < ev->nids; i++) {
            user = (ngx_foko_chat_ws_user_t *)
                       ngx_foko_chat_shm_id_lookup(&ngx_foko_chat_ws_users,
                                                   ev->ids[i]);
            if (user == NULL) {
                continue;
            }

            for (q = ngx_queue_head(&user->conns);
                 q != ngx_queue_sentinel(&user->conns);
                 q = ngx_queue_next(q))
            {
                ws = ngx_queue_data(q, ngx_foko_chat_ws_t, user_link);

                if (!ws->closing
                    && ngx_foko_chat_ws_subscribe(ws, ev->channel) == NULL)
                {
                    ngx_foko_chat_ws_finish(ws,
                                            NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                            "the server is out of memory");
                }
            }
        }
    }

    chan = (ngx_foko_chat_ws_chan_t *)
               ngx_foko_chat_shm_id_lookup(&ngx_foko_chat_ws_chans,
                                           ev->channel);
    if (chan == NULL) {
        return;
    }

    if (ev->kind == NGX_FOKO_CHAT_EV_MESSAGE) {

        if (ev->through > chan->through) {
            chan->through = ev->through;
        }

        if (ngx_queue_empty(&chan->held)
            && (chan->delivered < 0 || ev->seq == chan->delivered + 1)
            && ev->seq <= chan->through)
        {
            /* in order, as almost always: framed and sent at once */

            chan->delivered = ev->seq;

            f = ngx_foko_chat_ws_frame(NGX_FOKO_CHAT_WS_TEXT, ev->json,
                                       ev->json_len);
            if (f) {
                ngx_foko_chat_ws_to_channel(chan, f, NULL, ev->seq);
                ngx_foko_chat_ws_frame_put(f);
            }

            return;
        }

        ngx_foko_chat_ws_deliver(chan, ev->seq, ev->json, ev->json_len);
        ngx_foko_chat_ws_release_held(chan);
        return;
    }

    f = ngx_foko_chat_ws_frame(NGX_FOKO_CHAT_WS_TEXT, ev->json, ev->json_len);
    if (f == NULL) {
        return;
    }

    ngx_foko_chat_ws_to_channel(chan, f,
                                ev->kind == NGX_FOKO_CHAT_EV_TYPING
                                ? ev->user : NULL, -1);

    ngx_foko_chat_ws_frame_put(f);

    if (ev->kind == NGX_FOKO_CHAT_EV_LEAVE) {
        /* the one who left stops receiving the channel */

        for (q = ngx_queue_head(&chan->subs);
             q != ngx_queue_sentinel(&chan->subs);
             q = next)
        {
            next = ngx_queue_next(q);
            sub = ngx_queue_data(q, ngx_foko_chat_ws_sub_t, link);

            if (ngx_memcmp(sub->ws->user->id, ev->user, 24) == 0) {
                if (next == ngx_queue_sentinel(&chan->subs)
                    && chan->nsubs == 1)
                {
                    /* the channel's node goes with its last subscriber */
                    ngx_foko_chat_ws_unsubscribe(sub);
                    return;
                }

                ngx_foko_chat_ws_unsubscribe(sub);
            }
        }
    }
}


/* a message event: in seq order, or held until its turn */

static void
ngx_foko_chat_ws_deliver(ngx_foko_chat_ws_chan_t *chan, int64_t seq,
    u_char *json, size_t len)
{
    ngx_queue_t              *q;
    ngx_foko_chat_ws_held_t  *h, *t;

    if (chan->delivered >= 0 && seq <= chan->delivered) {
        /* before this worker's subscribers came: they resume it */
        return;
    }

    if (chan->nheld >= NGX_FOKO_CHAT_WS_PENDING) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "foko chat: too many messages of channel %*s wait "
                      "for an earlier one; its subscribers resume",
                      (size_t) 24, chan->id);
        ngx_foko_chat_ws_lost();
        return;
    }

    h = ngx_alloc(offsetof(ngx_foko_chat_ws_held_t, json) + len,
                  ngx_cycle->log);
    if (h == NULL) {
        return;
    }

    h->seq = seq;
    h->len = len;
    ngx_memcpy(h->json, json, len);

    /* in seq order; usually at the tail */

    for (q = ngx_queue_last(&chan->held);
         q != ngx_queue_sentinel(&chan->held);
         q = ngx_queue_prev(q))
    {
        t = ngx_queue_data(q, ngx_foko_chat_ws_held_t, queue);

        if (t->seq == seq) {
            ngx_free(h);
            return;
        }

        if (t->seq < seq) {
            break;
        }
    }

    ngx_queue_insert_after(q, &h->queue);
    chan->nheld++;
}


/* sends the held messages the channel is stored through, in order */

static void
ngx_foko_chat_ws_release_held(ngx_foko_chat_ws_chan_t *chan)
{
    ngx_queue_t                   *q;
    ngx_foko_chat_ws_held_t       *h;
    ngx_foko_chat_ws_frame_buf_t  *f;

    while (!ngx_queue_empty(&chan->held)) {
        q = ngx_queue_head(&chan->held);
        h = ngx_queue_data(q, ngx_foko_chat_ws_held_t, queue);

        if (h->seq > chan->through) {
            break;
        }

        ngx_queue_remove(q);
        chan->nheld--;

        if (h->seq > chan->delivered) {
            chan->delivered = h->seq;

            f = ngx_foko_chat_ws_frame(NGX_FOKO_CHAT_WS_TEXT, h->json,
                                       h->len);
            if (f) {
                ngx_foko_chat_ws_to_channel(chan, f, NULL, h->seq);
                ngx_foko_chat_ws_frame_put(f);
            }
        }

        ngx_free(h);
    }

    if (!ngx_queue_empty(&chan->held)) {
        if (!chan->stall.timer_set) {
            ngx_add_timer(&chan->stall, NGX_FOKO_CHAT_WS_STALL);
        }

    } else if (chan->stall.timer_set) {
        ngx_del_timer(&chan->stall);
    }
}


/* held messages wait for a seq that may never be stored: ask the zone */

static void
ngx_foko_chat_ws_stall(ngx_event_t *ev)
{
    ngx_foko_chat_ws_chan_t  *chan = ev->data;

    int64_t                   through;
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);
    through = ngx_foko_chat_seq_through(shm, chan->id);

    if (through > chan->through) {
        chan->through = through;
    }

    ngx_foko_chat_ws_release_held(chan);
    ngx_foko_chat_ws_flush_all(NULL);
}


static void
ngx_foko_chat_ws_to_channel(ngx_foko_chat_ws_chan_t *chan,
    ngx_foko_chat_ws_frame_buf_t *f, u_char *except, int64_t seq)
{
    ngx_queue_t             *q;
    ngx_foko_chat_ws_sub_t  *sub;

    for (q = ngx_queue_head(&chan->subs);
         q != ngx_queue_sentinel(&chan->subs);
         q = ngx_queue_next(q))
    {
        sub = ngx_queue_data(q, ngx_foko_chat_ws_sub_t, link);

        if (except && ngx_memcmp(sub->ws->user->id, except, 24) == 0) {
            continue;
        }

        if (seq >= 0) {
            if (sub->resuming || seq <= sub->sent) {
                /* the replay brings it */
                continue;
            }

            sub->sent = seq;
        }

        ngx_foko_chat_ws_queue(sub->ws, f);
    }
}


/* this worker missed events: every client resumes */

static void
ngx_foko_chat_ws_lost(void)
{
    ngx_queue_t              *uq;
    ngx_rbtree_node_t        *node, *root, *sentinel;
    ngx_foko_chat_ws_t       *ws;
    ngx_foko_chat_ws_user_t  *user;

    root = ngx_foko_chat_ws_users.root;
    sentinel = ngx_foko_chat_ws_users.sentinel;

    if (root == sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(root, sentinel);
         node;
         node = ngx_rbtree_next(&ngx_foko_chat_ws_users, node))
    {
        user = (ngx_foko_chat_ws_user_t *) &node->color;

        for (uq = ngx_queue_head(&user->conns);
             uq != ngx_queue_sentinel(&user->conns);
             uq = ngx_queue_next(uq))
        {
            ws = ngx_queue_data(uq, ngx_foko_chat_ws_t, user_link);
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                    "events were missed, resume");
        }
    }
}


/* output */

static ngx_foko_chat_ws_frame_buf_t *
ngx_foko_chat_ws_frame(ngx_uint_t opcode, u_char *data, size_t len)
{
    size_t                         hlen;
    ngx_foko_chat_ws_frame_buf_t  *f;

    hlen = ngx_foko_chat_ws_header_len(len);

    f = ngx_alloc(offsetof(ngx_foko_chat_ws_frame_buf_t, data) + hlen + len,
                  ngx_cycle->log);
    if (f == NULL) {
        return NULL;
    }

    f->refs = 1;
    f->len = ngx_foko_chat_ws_header(f->data, opcode, len) + len;

    if (len) {
        ngx_memcpy(f->data + hlen, data, len);
    }

    return f;
}


static void
ngx_foko_chat_ws_frame_put(ngx_foko_chat_ws_frame_buf_t *f)
{
    if (--f->refs == 0) {
        ngx_free(f);
    }
}


/*
 * Queues a frame (taking a reference of its own) and schedules the write.
 * Past the connection's buffer, the client is too slow: what it has not
 * started to receive is dropped and it is closed with 1013.
 */

static void
ngx_foko_chat_ws_queue(ngx_foko_chat_ws_t *ws, ngx_foko_chat_ws_frame_buf_t *f)
{
    if (f == NULL || ws->closing) {
        return;
    }

    if ((ws->out_bytes + f->len > ws->fmcf->ws_buffer
         || ws->out_n == NGX_FOKO_CHAT_WS_OUT_MAX)
        && ws->connection->write->ready)
    {
        /* what the socket takes now does not count */

        if (ngx_foko_chat_ws_flush(ws) != NGX_OK) {
            ngx_foko_chat_ws_drop(ws);
            return;
        }

        if (ws->closing) {
            return;
        }
    }

    if (ws->out_bytes + f->len > ws->fmcf->ws_buffer
        || ws->out_n == NGX_FOKO_CHAT_WS_OUT_MAX)
    {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "foko chat: WebSocket client too slow, %uz bytes "
                      "queued", ws->out_bytes);

        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                "too slow to read");
        return;
    }

    if (ngx_foko_chat_ws_append(ws, f) != NGX_OK) {
        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                "the server is out of memory");
    }
}


/* a frame made for this connection alone */

static void
ngx_foko_chat_ws_queue_new(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_frame_buf_t *f)
{
    if (f == NULL) {
        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_INTERNAL,
                                "the server is out of memory");
        return;
    }

    ngx_foko_chat_ws_queue(ws, f);
    ngx_foko_chat_ws_frame_put(f);
}


/* the frame at the end of the queue, and the connection in the flush list */

static ngx_int_t
ngx_foko_chat_ws_append(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_frame_buf_t *f)
{
    ngx_uint_t                      i, size;
    ngx_foko_chat_ws_frame_buf_t  **out;

    if (ws->out_n == ws->out_size) {
        size = ws->out_size ? 2 * ws->out_size : 8;

        out = ngx_alloc(size * sizeof(ngx_foko_chat_ws_frame_buf_t *),
                        ngx_cycle->log);
        if (out == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < ws->out_n; i++) {
            out[i] = ws->out[(ws->out_head + i) % ws->out_size];
        }

        ngx_free(ws->out);
        ws->out = out;
        ws->out_size = size;
        ws->out_head = 0;
    }

    f->refs++;
    ws->out[(ws->out_head + ws->out_n) % ws->out_size] = f;
    ws->out_n++;
    ws->out_bytes += f->len;

    if (!ws->in_dirty) {
        ws->in_dirty = 1;
        ngx_queue_insert_tail(&ngx_foko_chat_ws_dirty, &ws->dirty);

        if (!ngx_foko_chat_ws_flush_ev.posted) {
            ngx_post_event(&ngx_foko_chat_ws_flush_ev, &ngx_posted_events);
        }
    }

    return NGX_OK;
}


/* takes "event" */

static void
ngx_foko_chat_ws_queue_json(ngx_foko_chat_ws_t *ws, json_t *event)
{
    char                          *json;
    ngx_foko_chat_ws_frame_buf_t  *f;

    json = event ? json_dumps(event, JSON_COMPACT) : NULL;
    json_decref(event);

    if (json == NULL) {
        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_INTERNAL,
                                "an event could not be made");
        return;
    }

    f = ngx_foko_chat_ws_frame(NGX_FOKO_CHAT_WS_TEXT, (u_char *) json,
                               ngx_strlen(json));
    free(json);

    if (f == NULL) {
        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_INTERNAL,
                                "the server is out of memory");
        return;
    }

    ngx_foko_chat_ws_queue(ws, f);
    ngx_foko_chat_ws_frame_put(f);
}


static void
ngx_foko_chat_ws_error(ngx_foko_chat_ws_t *ws, u_char *ref, const char *code,
    const char *message, const char *field)
{
    json_t  *event;

    event = json_pack("{s:s,s:s,s:s}", "type", "error", "code", code,
                      "message", message);

    if (event && ref && ref[0]) {
        (void) json_object_set_new(event, "ref", json_string((char *) ref));
    }

    if (event && field) {
        (void) json_object_set_new(event, "field", json_string(field));
    }

    ngx_foko_chat_ws_queue_json(ws, event);
}


/* after a round of events: every connection with output writes it */

static void
ngx_foko_chat_ws_flush_all(ngx_event_t *ev)
{
    ngx_queue_t         *q;
    ngx_foko_chat_ws_t  *ws;

    while (!ngx_queue_empty(&ngx_foko_chat_ws_dirty)) {
        q = ngx_queue_head(&ngx_foko_chat_ws_dirty);
        ws = ngx_queue_data(q, ngx_foko_chat_ws_t, dirty);

        if (ngx_foko_chat_ws_flush(ws) != NGX_OK) {
            ngx_foko_chat_ws_free(ws);
        }
    }
}


/*
 * Writes what is queued, every frame at once (up to NGX_FOKO_CHAT_WS_IOV
 * a call).  NGX_ERROR: the connection is to be freed.
 */

static ngx_int_t
ngx_foko_chat_ws_flush(ngx_foko_chat_ws_t *ws)
{
    off_t                          sent;
    size_t                         n, len;
    ngx_uint_t                     i, k;
    ngx_chain_t                   *rest;
    ngx_connection_t              *c;
    ngx_foko_chat_ws_frame_buf_t  *f;

    static ngx_buf_t               bufs[NGX_FOKO_CHAT_WS_IOV];
    static ngx_chain_t             chain[NGX_FOKO_CHAT_WS_IOV];

    c = ws->connection;

    if (ws->in_dirty) {
        ws->in_dirty = 0;
        ngx_queue_remove(&ws->dirty);
    }

    if (c->error) {
        return NGX_ERROR;
    }

    while (ws->out_n && c->write->ready) {

        k = ngx_min(ws->out_n, NGX_FOKO_CHAT_WS_IOV);

        for (i = 0; i < k; i++) {
            f = ws->out[(ws->out_head + i) % ws->out_size];

            ngx_memzero(&bufs[i], sizeof(ngx_buf_t));
            bufs[i].memory = 1;
            bufs[i].start = f->data;
            bufs[i].pos = f->data + (i == 0 ? ws->out_pos : 0);
            bufs[i].last = f->data + f->len;
            bufs[i].end = bufs[i].last;

            chain[i].buf = &bufs[i];
            chain[i].next = (i + 1 < k) ? &chain[i + 1] : NULL;
        }

        sent = c->sent;

        rest = c->send_chain(c, chain, 0);

        if (rest == NGX_CHAIN_ERROR) {
            c->error = 1;
            return NGX_ERROR;
        }

        n = (size_t) (c->sent - sent);
        ws->out_bytes -= n;

        /* drop what is written */

        while (n && ws->out_n) {
            f = ws->out[ws->out_head];
            len = f->len - ws->out_pos;

            if (n < len) {
                ws->out_pos += n;
                break;
            }

            n -= len;
            ws->out_pos = 0;
            ws->out_head = (ws->out_head + 1) % ws->out_size;
            ws->out_n--;
            ngx_foko_chat_ws_frame_put(f);
        }

        if (rest) {
            break;
        }
    }

    if (ws->out_n) {
        if (!c->write->timer_set) {
            ngx_add_timer(c->write, ws->fmcf->ws_ping * 2);
        }

        if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    /* an idle connection keeps no output ring */

    if (ws->out) {
        ngx_free(ws->out);
        ws->out = NULL;
        ws->out_size = 0;
        ws->out_head = 0;
    }

    if (ws->closing && !ws->shut) {
        /* the close frame is out: the client closes, or we do soon */

        ws->shut = 1;

#if (NGX_SSL)
        if (c->ssl == NULL)
#endif
        {
            /* over TLS, the close_notify comes with the connection's end */
            if (shutdown(c->fd, SHUT_WR) == -1) {
                return NGX_ERROR;
            }
        }

        c->read->handler = ngx_foko_chat_ws_linger;

        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        /* a worker that shuts down does not wait long for the answer */
        ngx_add_timer(c->read, ngx_exiting ? NGX_FOKO_CHAT_WS_LINGER / 4
                                           : NGX_FOKO_CHAT_WS_LINGER);

        if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
            return NGX_ERROR;
        }

        if (c->read->ready) {
            ngx_post_event(c->read, &ngx_posted_events);
        }

        return NGX_OK;
    }

    if (ws->nresumes && ws->page_job == NULL && !ws->closing) {
        ngx_foko_chat_ws_resume_next(ws);

        if (ws->out_n && ws->in_dirty == 0) {
            ws->in_dirty = 1;
            ngx_queue_insert_tail(&ngx_foko_chat_ws_dirty, &ws->dirty);

            if (!ngx_foko_chat_ws_flush_ev.posted) {
                ngx_post_event(&ngx_foko_chat_ws_flush_ev,
                               &ngx_posted_events);
            }
        }
    }

    return NGX_OK;
}


/*
 * Queues a close frame (code 0: without a code) after what the client is
 * receiving already; nothing else is read or queued from now on.
 */

static void
ngx_foko_chat_ws_finish(ngx_foko_chat_ws_t *ws, ngx_uint_t code,
    const char *reason)
{
    u_char                         buf[NGX_FOKO_CHAT_WS_CONTROL_FRAME_MAX];
    size_t                         len;
    ngx_uint_t                     keep;
    ngx_foko_chat_ws_frame_buf_t  *f;

    if (ws->closing) {
        return;
    }

    /* frames not begun are dropped: a slow client would wait for them */

    keep = (ws->out_n && ws->out_pos) ? 1 : 0;

    while (ws->out_n > keep) {
        f = ws->out[(ws->out_head + ws->out_n - 1) % ws->out_size];
        ws->out_bytes -= f->len;
        ws->out_n--;
        ngx_foko_chat_ws_frame_put(f);
    }

    len = ngx_foko_chat_ws_close(buf, code, (u_char *) reason,
                                 reason ? ngx_strlen(reason) : 0);

    f = ngx_alloc(offsetof(ngx_foko_chat_ws_frame_buf_t, data) + len,
                  ngx_cycle->log);

    ws->closing = 1;

    if (f) {
        f->refs = 0;
        f->len = len;
        ngx_memcpy(f->data, buf, len);

        if (ngx_foko_chat_ws_append(ws, f) == NGX_OK) {
            return;
        }

        ngx_free(f);
    }

    /* no close frame: the connection just goes */

    ngx_foko_chat_ws_drop(ws);
}


/* the connection is freed on the next flush round, out of any loop */

static void
ngx_foko_chat_ws_drop(ngx_foko_chat_ws_t *ws)
{
    ws->closing = 1;
    ws->shut = 1;
    ws->connection->error = 1;

    if (!ws->in_dirty) {
        ws->in_dirty = 1;
        ngx_queue_insert_tail(&ngx_foko_chat_ws_dirty, &ws->dirty);
    }

    if (!ngx_foko_chat_ws_flush_ev.posted) {
        ngx_post_event(&ngx_foko_chat_ws_flush_ev, &ngx_posted_events);
    }
}


static void
ngx_foko_chat_ws_free(ngx_foko_chat_ws_t *ws)
{
    ngx_queue_t                   *q;
    ngx_connection_t              *c;
    ngx_foko_chat_ws_job_t        *job;
    ngx_foko_chat_ws_post_t       *p;
    ngx_foko_chat_ws_frame_buf_t  *f;

    c = ws->connection;

    if (ws->in_dirty) {
        ngx_queue_remove(&ws->dirty);
    }

    if (ws->auth_waiting) {
        ngx_queue_remove(&ws->auth_link);
        ngx_foko_chat_ws_nwaiting--;
    }

    while (!ngx_queue_empty(&ws->jobs)) {
        q = ngx_queue_head(&ws->jobs);
        ngx_queue_remove(q);
        ngx_queue_init(q);
        job = ngx_queue_data(q, ngx_foko_chat_ws_job_t, link);
        job->ws = NULL;
    }

    while (!ngx_queue_empty(&ws->posts)) {
        q = ngx_queue_head(&ws->posts);
        ngx_queue_remove(q);
        p = ngx_queue_data(q, ngx_foko_chat_ws_post_t, link);

        /* stored all the same; nobody to ack */
        ngx_foko_chat_messages_cancel(p->handle);
        ngx_free(p);
    }

    ngx_free(ws->resumes);
    ws->resumes = NULL;
    ws->nresumes = 0;

    if (ws->user) {
        /* with its subscriptions still: the channels of the offline event */
        ngx_foko_chat_ws_user_leave(ws);

    } else {
        ngx_queue_remove(&ws->user_link);
    }

    while (ws->nsubs) {
        ngx_foko_chat_ws_unsubscribe(ws->subs[ws->nsubs - 1]);
    }

    ngx_free(ws->subs);

    while (ws->out_n) {
        f = ws->out[ws->out_head];
        ws->out_head = (ws->out_head + 1) % ws->out_size;
        ws->out_n--;
        ngx_foko_chat_ws_frame_put(f);
    }

    ngx_free(ws->out);
    ngx_free(ws->msg);
    ngx_free(ws->held);

    ngx_foko_chat_ws_nconns--;

    ngx_foko_chat_ws_release(ws);

    ngx_http_close_connection(c);
}


/*
 * Connection contexts come from blocks of their own.  Allocated with
 * malloc() while the upgrade's request pool and header buffer were live,
 * and those freed right after, they left holes in the heap that later
 * connections did not fill: 0.9 KB of free heap per idle connection at
 * 10,000.  Free contexts are kept for the next connections (as nginx
 * keeps its free connections); sanitizer builds use malloc() for each, so
 * that a context used after its release is still caught.
 */

#define NGX_FOKO_CHAT_WS_BLOCK  64


static ngx_foko_chat_ws_t *
ngx_foko_chat_ws_alloc(ngx_log_t *log)
{
#if defined(__SANITIZE_ADDRESS__)

    return ngx_calloc(sizeof(ngx_foko_chat_ws_t), log);

#else

    ngx_uint_t           i;
    ngx_foko_chat_ws_t  *ws, *block;

    if (ngx_foko_chat_ws_spare == NULL) {
        block = ngx_alloc(NGX_FOKO_CHAT_WS_BLOCK * sizeof(ngx_foko_chat_ws_t),
                          log);
        if (block == NULL) {
            return NULL;
        }

        for (i = 0; i < NGX_FOKO_CHAT_WS_BLOCK; i++) {
            /* a free context is linked through its first field */
            block[i].connection = (ngx_connection_t *) ngx_foko_chat_ws_spare;
            ngx_foko_chat_ws_spare = &block[i];
        }
    }

    ws = ngx_foko_chat_ws_spare;
    ngx_foko_chat_ws_spare = (ngx_foko_chat_ws_t *) ws->connection;

    ngx_memzero(ws, sizeof(ngx_foko_chat_ws_t));

    return ws;

#endif
}


static void
ngx_foko_chat_ws_release(ngx_foko_chat_ws_t *ws)
{
#if defined(__SANITIZE_ADDRESS__)

    ngx_free(ws);

#else

    ws->connection = (ngx_connection_t *) ngx_foko_chat_ws_spare;
    ngx_foko_chat_ws_spare = ws;

#endif
}
