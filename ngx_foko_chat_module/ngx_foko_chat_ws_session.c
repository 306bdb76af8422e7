
/*
 * Foko chat: a signed-in connection's commands (send, typing, read,
 * resume), each an adapter of an operation of ngx_foko_chat_messages.c
 * or of an event of ngx_foko_chat_event.c.
 */


#include "ngx_foko_chat_ws_int.h"


static void ngx_foko_chat_ws_sent(void *data, ngx_foko_chat_answer_t *a);
static void ngx_foko_chat_ws_marked(void *data, ngx_foko_chat_answer_t *a);
static ngx_foko_chat_ws_op_t *ngx_foko_chat_ws_op(ngx_foko_chat_ws_t *ws,
    u_char *ref);
static ngx_int_t ngx_foko_chat_ws_resume_sub(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_sub_t *sub, int64_t after);
static void ngx_foko_chat_ws_resume_begin(ngx_foko_chat_ws_sub_t *sub,
    int64_t after);
static void ngx_foko_chat_ws_resume_drain(ngx_foko_chat_ws_t *ws);
static void ngx_foko_chat_ws_resume_next(ngx_foko_chat_ws_t *ws);
static void ngx_foko_chat_ws_resumed(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_sub_t *sub);
static void ngx_foko_chat_ws_paged(void *data, ngx_foko_chat_answer_t *a);
static ngx_int_t ngx_foko_chat_ws_resume_failed(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_sub_t *sub, ngx_foko_chat_err_e e);
static ngx_int_t ngx_foko_chat_ws_resume_page(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_sub_t *sub, json_t *page, int64_t upto);


/* send: a post as the REST call makes it; "ack" or "error" by ref */

void
ngx_foko_chat_ws_send(ngx_foko_chat_ws_t *ws, ngx_foko_chat_cmd_t *cmd)
{
    ngx_foko_chat_op_in_t     in;
    ngx_foko_chat_ws_post_t  *p;

    if (ws->nposts >= NGX_FOKO_CHAT_WS_POSTS) {
        ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref, NGX_FOKO_CHAT_E_ACKS,
                               NULL, NULL);
        return;
    }

    p = ngx_calloc(sizeof(ngx_foko_chat_ws_post_t), ws->connection->log);
    if (p == NULL) {
        ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref,
                               NGX_FOKO_CHAT_E_NO_MEMORY, NULL, NULL);
        return;
    }

    p->ws = ws;
    ngx_cpystrn(p->ref, (u_char *) cmd->ref, sizeof(p->ref));

    ngx_queue_insert_tail(&ws->posts, &p->link);
    ws->nposts++;

    ngx_memzero(&in, sizeof(ngx_foko_chat_op_in_t));
    in.user = ws->user->id;
    in.username = ws->user->name;
    in.channel.data = (u_char *) cmd->channel;
    in.channel.len = ngx_strlen(cmd->channel);
    in.body = cmd->body;
    in.handler = ngx_foko_chat_ws_sent;
    in.data = p;
    in.log = ws->connection->log;

    if (ngx_foko_chat_message_post(&in, &p->handle) == NGX_ERROR) {
        ngx_queue_remove(&p->link);
        ws->nposts--;
        ngx_free(p);
        ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref,
                               NGX_FOKO_CHAT_E_NO_MEMORY, NULL, NULL);
    }
}


static void
ngx_foko_chat_ws_sent(void *data, ngx_foko_chat_answer_t *a)
{
    ngx_foko_chat_ws_post_t  *p = data;

    json_t              *event;
    ngx_foko_chat_ws_t  *ws;

    ws = p->ws;

    ngx_queue_remove(&p->link);
    ws->nposts--;

    if (a->error != NGX_FOKO_CHAT_E_NONE) {
        ngx_foko_chat_ws_error(ws, p->ref, a->error, a->field, a->problem);
        ngx_free(p);
        return;
    }

    event = json_pack("{s:s,s:s,s:O}", "type", "ack",
                      "ref", (char *) p->ref, "message", a->message);

    ngx_free(p);

    ngx_foko_chat_ws_queue_json(ws, event);
}


void
ngx_foko_chat_ws_typing(ngx_foko_chat_ws_t *ws, ngx_foko_chat_cmd_t *cmd)
{
    ngx_foko_chat_ws_sub_t  *sub;

    sub = ngx_foko_chat_ws_sub_find(ws, (u_char *) cmd->channel);

    if (sub == NULL) {
        ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref,
                               NGX_FOKO_CHAT_E_NO_CHANNEL, NULL, NULL);
        return;
    }

    if (sub->typing
        && ngx_current_msec - sub->typing < NGX_FOKO_CHAT_WS_TYPING)
    {
        return;
    }

    sub->typing = ngx_current_msec ? ngx_current_msec : 1;

    ngx_foko_chat_event_typing((u_char *) cmd->channel, ws->user->id,
                               ws->user->name);
}


void
ngx_foko_chat_ws_mark_read(ngx_foko_chat_ws_t *ws, ngx_foko_chat_cmd_t *cmd)
{
    ngx_int_t               rc;
    ngx_foko_chat_op_in_t   in;
    ngx_foko_chat_ws_op_t  *o;

    if (ws->njobs + ws->nops >= NGX_FOKO_CHAT_WS_TASKS) {
        ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref,
                               NGX_FOKO_CHAT_E_OVERLOADED, NULL, NULL);
        return;
    }

    o = ngx_foko_chat_ws_op(ws, (u_char *) cmd->ref);
    if (o == NULL) {
        return;
    }

    ngx_memzero(&in, sizeof(ngx_foko_chat_op_in_t));
    in.user = ws->user->id;
    in.channel.data = (u_char *) cmd->channel;
    in.channel.len = ngx_strlen(cmd->channel);
    in.seq = cmd->seq;
    in.handler = ngx_foko_chat_ws_marked;
    in.data = o;
    in.log = ws->connection->log;

    rc = ngx_foko_chat_message_mark_read(&in, &o->handle);

    if (rc == NGX_DONE) {
        o->at_once = 0;

    } else if (rc == NGX_ERROR) {
        ngx_foko_chat_ws_op_free(o);
        ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref,
                               NGX_FOKO_CHAT_E_NO_MEMORY, NULL, NULL);
    }
}


/* the read mark is stored (and announced by the messages layer), or not */

static void
ngx_foko_chat_ws_marked(void *data, ngx_foko_chat_answer_t *a)
{
    ngx_foko_chat_ws_op_t  *o = data;

    ngx_uint_t           at_once;
    ngx_foko_chat_ws_t  *ws;

    ws = o->ws;
    at_once = o->at_once;

    if (a->error != NGX_FOKO_CHAT_E_NONE) {
        ngx_foko_chat_ws_error(ws, o->ref, a->error, a->field, a->problem);
    }

    ngx_foko_chat_ws_op_free(o);

    if (!at_once && ngx_foko_chat_ws_flush(ws) != NGX_OK) {
        ngx_foko_chat_ws_free(ws);
    }
}


static ngx_foko_chat_ws_op_t *
ngx_foko_chat_ws_op(ngx_foko_chat_ws_t *ws, u_char *ref)
{
    ngx_foko_chat_ws_op_t  *o;

    o = ngx_calloc(sizeof(ngx_foko_chat_ws_op_t), ws->connection->log);
    if (o == NULL) {
        ngx_foko_chat_ws_error(ws, ref, NGX_FOKO_CHAT_E_NO_MEMORY, NULL, NULL);
        return NULL;
    }

    o->ws = ws;
    o->at_once = 1;
    o->error = NGX_FOKO_CHAT_E_NONE;

    if (ref) {
        ngx_cpystrn(o->ref, ref, sizeof(o->ref));
    }

    ngx_queue_insert_tail(&ws->ops, &o->link);
    ws->nops++;

    return o;
}


void
ngx_foko_chat_ws_op_free(ngx_foko_chat_ws_op_t *o)
{
    ngx_queue_remove(&o->link);
    o->ws->nops--;

    json_decref(o->page);
    ngx_free(o);
}


/*
 * resume: every message after the client's last seen seq that the
 * connection has not sent, in order, from the ring or from MongoDB, page
 * by page, then "resumed".  Live messages of the channel are held back
 * from the connection meanwhile: the replay goes on until it reaches what
 * was delivered live.
 *
 * Resumed with the sign-in (the auth frame's "resume"), the replay starts
 * before any live message of the channel is sent: the connection gets
 * the channel in strict seq order.  A standalone resume after live
 * messages were sent replays the older seqs below them, then goes on
 * after them: nothing twice, but the older seqs come after newer ones.
 */

void
ngx_foko_chat_ws_resume(ngx_foko_chat_ws_t *ws, ngx_foko_chat_cmd_t *cmd)
{
    ngx_uint_t               i;
    ngx_foko_chat_ws_sub_t  *sub;

    for (i = 0; i < cmd->nchannels; i++) {
        sub = ngx_foko_chat_ws_sub_find(ws, (u_char *) cmd->channels[i].id);

        if (sub == NULL) {
            ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref,
                                   NGX_FOKO_CHAT_E_NO_CHANNEL, "channels",
                                   NULL);
            continue;
        }

        if (ngx_foko_chat_ws_resume_sub(ws, sub, cmd->channels[i].seq)
            != NGX_OK)
        {
            ngx_foko_chat_ws_error(ws, (u_char *) cmd->ref,
                                   NGX_FOKO_CHAT_E_NO_MEMORY, NULL, NULL);
            break;
        }
    }

    ws->drain = ngx_foko_chat_ws_resume_drain;

    ngx_foko_chat_ws_resume_next(ws);
}


/*
 * The auth frame's resume, once subscribed: channels the user is not in
 * (any more) are left out, as "ready" leaves them out.
 */

void
ngx_foko_chat_ws_resume_signin(ngx_foko_chat_ws_t *ws)
{
    ngx_uint_t                    i, n;
    ngx_foko_chat_ws_sub_t       *sub;
    ngx_foko_chat_cmd_channel_t  *ch;

    ch = ws->signin_resume;
    n = ws->nsignin_resume;

    ws->signin_resume = NULL;
    ws->nsignin_resume = 0;

    for (i = 0; i < n; i++) {
        sub = ngx_foko_chat_ws_sub_find(ws, (u_char *) ch[i].id);

        if (sub == NULL) {
            continue;
        }

        if (ngx_foko_chat_ws_resume_sub(ws, sub, ch[i].seq) != NGX_OK) {
            free(ch);
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                    "the server is out of memory");
            return;
        }
    }

    free(ch);

    ws->drain = ngx_foko_chat_ws_resume_drain;

    ngx_foko_chat_ws_resume_next(ws);
}


/*
 * The fan-out counts messages as delivered that it could not send (see
 * ngx_foko_chat_ws_replay_to()): a replay the client did not ask for
 * sends them, without "resumed".
 */

void
ngx_foko_chat_ws_catch_up(ngx_foko_chat_ws_sub_t *sub)
{
    ngx_foko_chat_ws_t  *ws;

    ws = sub->ws;

    if (sub->resuming || ws->closing) {
        /* the replay under way goes as far */
        return;
    }

    if (ngx_foko_chat_ws_resume_sub(ws, sub, sub->sent) != NGX_OK) {
        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                "the server is out of memory");
        return;
    }

    sub->quiet = 1;
    ws->drain = ngx_foko_chat_ws_resume_drain;

    ngx_foko_chat_ws_resume_next(ws);
}


/* a subscription joins the resumes; one resumed already goes again after */

static ngx_int_t
ngx_foko_chat_ws_resume_sub(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_sub_t *sub, int64_t after)
{
    size_t                   size;
    ngx_uint_t               j;
    ngx_foko_chat_ws_sub_t **resumes;

    if (sub->resuming) {
        if (sub->again < 0 || after < sub->again) {
            sub->again = after;
        }

        return NGX_OK;
    }

    size = (ws->nresumes + 1) * sizeof(ngx_foko_chat_ws_sub_t *);

    resumes = ngx_alloc(size, ngx_cycle->log);
    if (resumes == NULL) {
        return NGX_ERROR;
    }

    for (j = 0; j < ws->nresumes; j++) {
        resumes[j] = ws->resumes[j];
    }

    ngx_free(ws->resumes);
    ws->resumes = resumes;
    ws->resumes[ws->nresumes++] = sub;

    ngx_foko_chat_ws_resume_begin(sub, after);

    return NGX_OK;
}


/* where the replay of a subscription starts, and what it jumps over */

/*
 * The client's seq is taken as it is: it may have seen more than this
 * zone knows to be stored (on the workers of a zone a reload replaced),
 * and those are not sent again.
 */

static void
ngx_foko_chat_ws_resume_begin(ngx_foko_chat_ws_sub_t *sub, int64_t after)
{
    sub->resuming = 1;
    sub->quiet = 0;
    sub->resume_from = after;
    sub->again = -1;
    sub->skip = 0;

    if (after >= sub->low) {
        /* the client has everything the connection sent it */
        sub->sent = ngx_max(sub->sent, after);
        return;
    }

    if (sub->low < sub->sent) {
        /* (low, sent] went out live: the replay jumps over them */
        sub->skip = sub->sent;

    } else {
        sub->low = after;
    }

    sub->sent = after;
}


/* the output queue has room again: the replay goes on */

static void
ngx_foko_chat_ws_resume_drain(ngx_foko_chat_ws_t *ws)
{
    if (ws->nresumes == 0) {
        ws->drain = NULL;
        return;
    }

    if (ws->page_op == NULL) {
        ngx_foko_chat_ws_resume_next(ws);
    }
}


static void
ngx_foko_chat_ws_resume_next(ngx_foko_chat_ws_t *ws)
{
    json_t                  *page;
    int64_t                  upto;
    ngx_int_t                rc;
    ngx_foko_chat_err_e      e;
    ngx_foko_chat_op_in_t    in;
    ngx_foko_chat_ws_op_t   *o;
    ngx_foko_chat_ws_sub_t  *sub;

    while (ws->nresumes && ws->page_op == NULL && !ws->closing) {

        if (ws->out_bytes > ws->fmcf->ws_buffer / 2) {
            /* more when the client has read what it has */
            return;
        }

        sub = ws->resumes[0];

        if (sub->skip && sub->sent >= sub->low) {
            /* the gap is replayed: on after what went out live */
            sub->sent = ngx_max(sub->sent, sub->skip);
            sub->skip = 0;
        }

        if (!sub->skip
            && (sub->chan->delivered < 0
                || sub->sent >= sub->chan->delivered))
        {
            /* caught up with the live messages */
            ngx_foko_chat_ws_resumed(ws, sub);
            continue;
        }

        /* from the ring when it has them, else from MongoDB */

        upto = sub->skip ? sub->low : sub->chan->delivered;

        o = ngx_foko_chat_ws_op(ws, NULL);
        if (o == NULL) {
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                    "the server is out of memory");
            return;
        }

        o->sub = sub;
        o->upto = upto;

        ngx_memzero(&in, sizeof(ngx_foko_chat_op_in_t));
        in.user = ws->user->id;
        in.channel.data = sub->chan->id;
        in.channel.len = NGX_FOKO_CHAT_OID_LEN;
        in.after = sub->sent;
        in.upto = upto;
        in.limit = NGX_FOKO_CHAT_WS_PAGE;
        in.handler = ngx_foko_chat_ws_paged;
        in.data = o;
        in.log = ws->connection->log;

        rc = ngx_foko_chat_message_page(&in, &o->handle);

        if (rc == NGX_DONE) {
            o->at_once = 0;
            ws->page_op = o;
            return;
        }

        if (rc == NGX_ERROR) {
            ngx_foko_chat_ws_op_free(o);
            ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                    "the server is out of memory");
            return;
        }

        /* answered at once, from the ring */

        page = o->page;
        o->page = NULL;
        e = o->error;
        ngx_foko_chat_ws_op_free(o);

        if (e != NGX_FOKO_CHAT_E_NONE) {
            if (ngx_foko_chat_ws_resume_failed(ws, sub, e) != NGX_OK) {
                return;
            }

            continue;
        }

        if (ngx_foko_chat_ws_resume_page(ws, sub, page, upto) != NGX_OK) {
            return;
        }
    }
}


/* a subscription has caught up: "resumed", then a resume asked meanwhile */

static void
ngx_foko_chat_ws_resumed(ngx_foko_chat_ws_t *ws, ngx_foko_chat_ws_sub_t *sub)
{
    json_t      *event;
    int64_t      again;
    ngx_uint_t   i;

    sub->low = ngx_min(sub->low, sub->resume_from);

    if (!sub->quiet) {
        event = json_pack("{s:s,s:s#,s:I,s:I}", "type", "resumed",
                          "channel_id", sub->chan->id,
                          (int) NGX_FOKO_CHAT_OID_LEN,
                          "from", (json_int_t) sub->resume_from,
                          "to", (json_int_t) ngx_max(sub->sent,
                                                     sub->resume_from));
        ngx_foko_chat_ws_queue_json(ws, event);
    }

    again = sub->again;

    if (again >= 0) {
        ngx_foko_chat_ws_resume_begin(sub, again);
        return;
    }

    sub->resuming = 0;

    for (i = 1; i < ws->nresumes; i++) {
        ws->resumes[i - 1] = ws->resumes[i];
    }

    ws->nresumes--;
}


static void
ngx_foko_chat_ws_paged(void *data, ngx_foko_chat_answer_t *a)
{
    ngx_foko_chat_ws_op_t  *o = data;

    json_t                  *page;
    int64_t                  upto;
    ngx_foko_chat_ws_t      *ws;
    ngx_foko_chat_err_e      e;
    ngx_foko_chat_ws_sub_t  *sub;

    e = a->error;
    page = (e == NGX_FOKO_CHAT_E_NONE) ? json_incref(a->page) : NULL;

    if (o->at_once) {
        /* the resume goes on with it when the call returns */
        o->error = e;
        o->page = page;
        return;
    }

    ws = o->ws;
    sub = o->sub;
    upto = o->upto;
    ws->page_op = NULL;
    ngx_foko_chat_ws_op_free(o);

    if (e != NGX_FOKO_CHAT_E_NONE) {
        if (ngx_foko_chat_ws_resume_failed(ws, sub, e) == NGX_OK) {
            ngx_foko_chat_ws_resume_next(ws);
        }

    } else if (ngx_foko_chat_ws_resume_page(ws, sub, page, upto) == NGX_OK) {
        ngx_foko_chat_ws_resume_next(ws);
    }

    if (ngx_foko_chat_ws_flush(ws) != NGX_OK) {
        ngx_foko_chat_ws_free(ws);
    }
}


/*
 * No page: for a channel the user is no longer in, there is nothing to
 * replay (NGX_OK); else history is unreachable and the client resumes
 * later.
 */

static ngx_int_t
ngx_foko_chat_ws_resume_failed(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_sub_t *sub, ngx_foko_chat_err_e e)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "foko chat: resume of %*s has no page",
                   (size_t) NGX_FOKO_CHAT_OID_LEN, sub->chan->id);

    if (e == NGX_FOKO_CHAT_E_NO_CHANNEL) {
        sub->sent = ngx_max(sub->sent,
                            ngx_max(sub->skip, sub->chan->delivered));
        sub->skip = 0;
        return NGX_OK;
    }

    ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                            "history is unreachable, resume later");

    return NGX_ERROR;
}


/*
 * A page of replayed messages, up to "upto"; takes "page".  The ring
 * answers past "upto" too: those wait for a later page, when the channel
 * is stored through them.  A page with nothing up to "upto": nothing more
 * is stored there (seqs given up), the replay goes on after it.
 */

static ngx_int_t
ngx_foko_chat_ws_resume_page(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_sub_t *sub, json_t *page, int64_t upto)
{
    json_t      *m;
    int64_t      seq;
    ngx_uint_t   i, n;

    n = 0;

    for (i = 0; i < json_array_size(page); i++) {
        m = json_array_get(page, i);
        seq = json_integer_value(json_object_get(m, "seq"));

        if (seq <= sub->sent) {
            continue;
        }

        if (seq > upto) {
            break;
        }

        sub->sent = seq;
        n++;

        ngx_foko_chat_ws_queue_json(ws, json_pack("{s:s,s:O}",
                                                  "type", "message",
                                                  "message", m));
        if (ws->closing) {
            json_decref(page);
            return NGX_ERROR;
        }
    }

    if (n == 0) {
        sub->sent = ngx_max(sub->sent, upto);
    }

    json_decref(page);

    return NGX_OK;
}
