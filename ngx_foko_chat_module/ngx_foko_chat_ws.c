
/*
 * Foko chat: WebSocket connections: the connection core (reading,
 * messages in, closing, the connection contexts).  The other concerns of
 * a connection have files of their own, behind ngx_foko_chat_ws_int.h:
 * the upgrade, the sign-in queue, the session's commands, the fan-out to
 * local subscribers, the output queue.
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


#include "ngx_foko_chat_ws_int.h"


static void ngx_foko_chat_ws_read(ngx_event_t *rev);
static void ngx_foko_chat_ws_write(ngx_event_t *wev);
static ngx_uint_t ngx_foko_chat_ws_gone(ngx_connection_t *c);
static void ngx_foko_chat_ws_message(ngx_foko_chat_ws_t *ws, u_char *data,
    size_t len);


static ngx_uint_t                    ngx_foko_chat_ws_nconns;
static ngx_queue_t                   ngx_foko_chat_ws_all;
static u_char                        *ngx_foko_chat_ws_buf;
static ngx_foko_chat_ws_t            *ngx_foko_chat_ws_spare;
ngx_connection_t                     ngx_foko_chat_ws_no_conn;


ngx_int_t
ngx_foko_chat_ws_init_process(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_foko_chat_ws_all);

    ngx_foko_chat_ws_no_conn.fd = (ngx_socket_t) -1;

    ngx_foko_chat_ws_buf = ngx_alloc(NGX_FOKO_CHAT_WS_READ_BUF, cycle->log);
    if (ngx_foko_chat_ws_buf == NULL) {
        return NGX_ERROR;
    }

    ngx_foko_chat_ws_out_init(cycle);
    ngx_foko_chat_ws_signin_init();

    /* the fan-out registers itself with the bus */
    return ngx_foko_chat_ws_fanout_init(cycle);
}


ngx_uint_t
ngx_foko_chat_ws_connections(void)
{
    return ngx_foko_chat_ws_nconns;
}


/*
 * The 101 is written: the request is freed as nginx frees one before
 * keeping its connection alive, and what the client sent after the
 * upgrade request goes to the frame parser.
 */

void
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

#if (NGX_SSL)
    if (c->ssl) {
        /*
         * frames go out as they are queued, and what is written is counted
         * in c->sent: TLS must not hold them back to fill a record buffer
         */
        c->ssl->buffer = 0;
        ngx_ssl_free_buffer(c);
    }
#endif

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
                /* the database is slow: the check goes on, bounded */
                if (ngx_foko_chat_ws_signin_late(ws) == NGX_AGAIN) {
                    return;
                }

                if (ngx_foko_chat_ws_flush(ws) != NGX_OK) {
                    ngx_foko_chat_ws_free(ws);
                }

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

void
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

ngx_int_t
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
    u_char               reason[NGX_FOKO_CHAT_WS_REASON_MAX + 1], *p;
    ngx_foko_chat_cmd_t  cmd;

    if (ngx_foko_chat_cmd_decode((char *) data, len, &cmd) != 0) {

        if (!ws->authed) {
            /* an auth frame that is wrong says where */
            p = ngx_cpymem(reason, "authenticate first",
                           sizeof("authenticate first") - 1);

            if (cmd.type == NGX_FOKO_CHAT_CMD_AUTH) {
                p = ngx_snprintf(reason, NGX_FOKO_CHAT_WS_REASON_MAX,
                                 "%s %s", cmd.field, cmd.problem);
            }

            *p = '\0';

            ngx_foko_chat_cmd_free(&cmd);
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_AUTH,
                                    (const char *) reason);
            return;
        }

        ngx_foko_chat_ws_error(ws, (u_char *) cmd.ref, NGX_FOKO_CHAT_E_COMMAND,
                               cmd.field, cmd.problem);
        ngx_foko_chat_cmd_free(&cmd);
        return;
    }

    if (!ws->authed) {
        if (cmd.type == NGX_FOKO_CHAT_CMD_AUTH && !ws->header_auth) {
            /* kept until "ready" */
            free(ws->signin_resume);
            ws->signin_resume = cmd.channels;
            ws->nsignin_resume = cmd.nchannels;
            cmd.channels = NULL;
            cmd.nchannels = 0;

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
        ngx_foko_chat_ws_error(ws, (u_char *) cmd.ref, NGX_FOKO_CHAT_E_COMMAND,
                               "type", "authenticated already");
    }

    ngx_foko_chat_cmd_free(&cmd);
}


/*
 * Queues a close frame (code 0: without a code) after what the client is
 * receiving already; nothing else is read or queued from now on.
 */

void
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

void
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


void
ngx_foko_chat_ws_free(ngx_foko_chat_ws_t *ws)
{
    ngx_queue_t                   *q;
    ngx_connection_t              *c;
    ngx_foko_chat_ws_job_t        *job;
    ngx_foko_chat_ws_op_t         *o;
    ngx_foko_chat_ws_post_t       *p;
    ngx_foko_chat_ws_frame_buf_t  *f;

    c = ws->connection;

    if (ws->in_dirty) {
        ngx_queue_remove(&ws->dirty);
    }

    ngx_foko_chat_ws_signin_cancel(ws);

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

    while (!ngx_queue_empty(&ws->ops)) {
        q = ngx_queue_head(&ws->ops);
        o = ngx_queue_data(q, ngx_foko_chat_ws_op_t, link);

        ngx_foko_chat_messages_cancel(o->handle);
        ngx_foko_chat_ws_op_free(o);
    }

    ws->page_op = NULL;

    ngx_free(ws->resumes);
    ws->resumes = NULL;
    ws->nresumes = 0;

    free(ws->signin_resume);
    ws->signin_resume = NULL;

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
 * keeps its free connections).  Sanitizer builds use the same allocator
 * and poison a free context but its link, so that a context used after
 * its release is still caught.
 */

#define NGX_FOKO_CHAT_WS_BLOCK  64

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define ngx_foko_chat_ws_poison(ws)                                          \
    ASAN_POISON_MEMORY_REGION(&(ws)->connection + 1,                         \
                              sizeof(ngx_foko_chat_ws_t)                     \
                              - sizeof(ngx_connection_t *))
#define ngx_foko_chat_ws_unpoison(ws)                                        \
    ASAN_UNPOISON_MEMORY_REGION(ws, sizeof(ngx_foko_chat_ws_t))
#else
#define ngx_foko_chat_ws_poison(ws)
#define ngx_foko_chat_ws_unpoison(ws)
#endif


ngx_foko_chat_ws_t *
ngx_foko_chat_ws_alloc(ngx_log_t *log)
{
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
            ngx_foko_chat_ws_poison(&block[i]);
        }
    }

    ws = ngx_foko_chat_ws_spare;
    ngx_foko_chat_ws_spare = (ngx_foko_chat_ws_t *) ws->connection;

    ngx_foko_chat_ws_unpoison(ws);
    ngx_memzero(ws, sizeof(ngx_foko_chat_ws_t));

    return ws;
}


void
ngx_foko_chat_ws_release(ngx_foko_chat_ws_t *ws)
{
    ws->connection = (ngx_connection_t *) ngx_foko_chat_ws_spare;
    ngx_foko_chat_ws_spare = ws;
    ngx_foko_chat_ws_poison(ws);
}
