
/*
 * Foko chat: a connection's output queue and its frames: frames shared by
 * the connections they are queued for, written with one call each round.
 */


#include "ngx_foko_chat_ws_int.h"


ngx_queue_t                          ngx_foko_chat_ws_dirty;
ngx_event_t                          ngx_foko_chat_ws_flush_ev;


void
ngx_foko_chat_ws_out_init(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_foko_chat_ws_dirty);

    ngx_foko_chat_ws_flush_ev.handler = ngx_foko_chat_ws_flush_all;
    ngx_foko_chat_ws_flush_ev.log = cycle->log;
    ngx_foko_chat_ws_flush_ev.data = &ngx_foko_chat_ws_no_conn;
}


/* output */

ngx_foko_chat_ws_frame_buf_t *
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


void
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

void
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

void
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

ngx_int_t
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

void
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


/* an error of the table as the WebSocket renders it: {type, ref?, ...} */

void
ngx_foko_chat_ws_error(ngx_foko_chat_ws_t *ws, u_char *ref,
    ngx_foko_chat_err_e e, const char *field, const char *problem)
{
    json_t  *event;

    event = ngx_foko_chat_error_object(e, field, problem);

    if (event
        && (json_object_set_new(event, "type", json_string("error")) != 0
            || (ref && ref[0]
                && json_object_set_new(event, "ref",
                                       json_string((char *) ref))
                   != 0)))
    {
        json_decref(event);
        event = NULL;
    }

    ngx_foko_chat_ws_queue_json(ws, event);
}


/* after a round of events: every connection with output writes it */

void
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

ngx_int_t
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

    if (ws->drain && !ws->closing) {
        /* room again: the session may queue more (a replay goes on) */
        ws->drain(ws);

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
