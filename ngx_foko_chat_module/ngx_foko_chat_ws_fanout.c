
/*
 * Foko chat: fan-out to this worker's subscribers.  The fan-out registers
 * itself with the bus; each event of the log comes here once, is framed
 * once, and the same bytes are queued for every local connection
 * subscribed to its channel (held back while the channel is not stored
 * through its seq, or while the connection resumes it).
 */


#include "ngx_foko_chat_ws_int.h"
#include "ngx_foko_chat_redis.h"


static ngx_foko_chat_ws_chan_t *ngx_foko_chat_ws_chan_get(u_char *channel);
static void ngx_foko_chat_ws_chan_put(ngx_foko_chat_ws_chan_t *chan);
static void ngx_foko_chat_ws_sweep_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_ws_sweep_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_ws_event(ngx_foko_chat_event_t *ev);
static void ngx_foko_chat_ws_deliver(ngx_foko_chat_ws_chan_t *chan,
    int64_t seq, u_char *json, size_t len);
static void ngx_foko_chat_ws_release_held(ngx_foko_chat_ws_chan_t *chan);
static void ngx_foko_chat_ws_from_ring(ngx_foko_chat_ws_chan_t *chan);
static void ngx_foko_chat_ws_replay_to(ngx_foko_chat_ws_chan_t *chan,
    int64_t upto);
static void ngx_foko_chat_ws_stall(ngx_event_t *ev);
static void ngx_foko_chat_ws_to_channel(ngx_foko_chat_ws_chan_t *chan,
    ngx_foko_chat_ws_frame_buf_t *f, u_char *except, int64_t seq);
static void ngx_foko_chat_ws_lost(void);
static void ngx_foko_chat_ws_presence_again(ngx_foko_chat_shm_ctx_t *shm);
static ngx_foko_chat_ws_user_t *ngx_foko_chat_ws_user_next(
    ngx_foko_chat_ws_user_t *user);


static ngx_rbtree_t                  ngx_foko_chat_ws_chans;
static ngx_rbtree_node_t             ngx_foko_chat_ws_chans_sentinel;
ngx_rbtree_t                         ngx_foko_chat_ws_users;
static ngx_rbtree_node_t             ngx_foko_chat_ws_users_sentinel;
static ngx_uint_t                    ngx_foko_chat_ws_mark;
static ngx_event_t                   ngx_foko_chat_ws_sweep_ev;
static ngx_atomic_uint_t             ngx_foko_chat_ws_again;


ngx_int_t
ngx_foko_chat_ws_fanout_init(ngx_cycle_t *cycle)
{
    ngx_rbtree_init(&ngx_foko_chat_ws_chans, &ngx_foko_chat_ws_chans_sentinel,
                    ngx_foko_chat_shm_id_insert_value);
    ngx_rbtree_init(&ngx_foko_chat_ws_users, &ngx_foko_chat_ws_users_sentinel,
                    ngx_foko_chat_shm_id_insert_value);

    /* a worker that replaces a dead one: its users go offline */

    ngx_foko_chat_ws_sweep_ev.handler = ngx_foko_chat_ws_sweep;
    ngx_foko_chat_ws_sweep_ev.log = cycle->log;
    ngx_foko_chat_ws_sweep_ev.data = &ngx_foko_chat_ws_no_conn;
    ngx_foko_chat_ws_sweep_ev.cancelable = 1;

    if (ngx_foko_chat_shm_cycle(cycle)) {
        ngx_foko_chat_ws_again =
            ngx_foko_chat_shm_cycle(cycle)->sh->redis.presence_again;
        ngx_add_timer(&ngx_foko_chat_ws_sweep_ev, 1000);
    }

    return ngx_foko_chat_bus_init_process(cycle, ngx_foko_chat_ws_event,
                                          ngx_foko_chat_ws_lost);
}


/* subscriptions */

ngx_foko_chat_ws_sub_t *
ngx_foko_chat_ws_sub_find(ngx_foko_chat_ws_t *ws, u_char *channel)
{
    ngx_uint_t  i;

    for (i = 0; i < ws->nsubs; i++) {
        if (ngx_memcmp(ws->subs[i]->chan->id, channel, NGX_FOKO_CHAT_OID_LEN)
            == 0)
        {
            return ws->subs[i];
        }
    }

    return NULL;
}


ngx_foko_chat_ws_sub_t *
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
    sub->low = sub->sent;
    sub->again = -1;

    ngx_queue_insert_tail(&chan->subs, &sub->link);
    chan->nsubs++;

    ws->subs[ws->nsubs++] = sub;

    return sub;
}


void
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

    if (ws->page_op && ws->page_op->sub == sub) {
        /* the page is dropped when it comes */
        ngx_foko_chat_messages_cancel(ws->page_op->handle);
        ngx_foko_chat_ws_op_free(ws->page_op);
        ws->page_op = NULL;
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
    int64_t                   acked;
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

    node->key = ngx_crc32_short(channel, NGX_FOKO_CHAT_OID_LEN);
    chan = (ngx_foko_chat_ws_chan_t *) &node->color;
    ngx_memcpy(chan->id, channel, NGX_FOKO_CHAT_OID_LEN);
    ngx_queue_init(&chan->subs);
    ngx_queue_init(&chan->held);

    chan->stall.handler = ngx_foko_chat_ws_stall;
    chan->stall.data = chan;
    chan->stall.log = ngx_cycle->log;
    chan->stall.cancelable = 1;

    /*
     * Events of seqs up to "through" are in the log already: those not
     * read yet by this worker are skipped, the client resumes them.
     * Messages stored above "through" (out of order) were published too,
     * and this worker may have read their events before the node was:
     * those come from the ring, once the channel is stored through them.
     */

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    ngx_shmtx_lock(&shm->shpool->mutex);
    chan->through = ngx_foko_chat_seq_through_locked(shm->sh, channel);
    acked = ngx_foko_chat_seq_acked_locked(shm->sh, channel);
    ngx_shmtx_unlock(&shm->shpool->mutex);

    chan->delivered = chan->through;
    chan->early = (chan->through >= 0 && acked > chan->through) ? acked : -1;

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

void
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

        user->channels = ngx_alloc(ws->nsubs * NGX_FOKO_CHAT_OID_LEN + 1,
                                   ngx_cycle->log);

        if (user->channels) {
            for (i = 0; i < ws->nsubs; i++) {
                ngx_memcpy(user->channels + i * NGX_FOKO_CHAT_OID_LEN,
                           ws->subs[i]->chan->id, NGX_FOKO_CHAT_OID_LEN);
            }

            user->nchannels = ws->nsubs;
        }

        /*
         * From now, not from an earlier close: ngx_add_timer() keeps a
         * timer that would move by less than NGX_TIMER_LAZY_DELAY.
         */
        if (user->grace.timer_set) {
            ngx_del_timer(&user->grace);
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


void
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
        ngx_foko_chat_presence_announce(user->id, user->channels,
                                        user->nchannels, 0);
    }

    if (user->nconns == 0) {
        ngx_free(user->channels);
        node = (ngx_rbtree_node_t *)
                   ((u_char *) user - offsetof(ngx_rbtree_node_t, color));
        ngx_rbtree_delete(&ngx_foko_chat_ws_users, node);
        ngx_free(node);
    }
}


/*
 * Every few seconds: the users who were online only through workers that
 * are gone (one that died, or one that shut down before its grace periods
 * ended) get "offline" in the channels MongoDB says are theirs.
 */

void
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

    ngx_foko_chat_ws_presence_again(fmcf->shm_zone->data);

    users = ngx_alloc(NGX_FOKO_CHAT_WS_SWEEP_MAX * NGX_FOKO_CHAT_OID_LEN,
                      ev->log);
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
        ngx_memcpy(sw->users[i], users + i * NGX_FOKO_CHAT_OID_LEN,
                   NGX_FOKO_CHAT_OID_LEN);

        sw->known[i] = ngx_foko_chat_users_get(fmcf->shm_zone->data,
                                               sw->users[i],
                                               &sw->channels[i],
                                               &sw->nchannels[i], NULL)
                       == NGX_OK;
    }

    ngx_free(users);

    task->run = ngx_foko_chat_ws_sweep_run;
    task->done = ngx_foko_chat_ws_sweep_done;

    if (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool) != NGX_OK) {
        for (i = 0; i < n; i++) {
            free(sw->channels[i]);    /* ids only: nothing inside */
        }

        ngx_foko_chat_task_free(task);
    }
}


static void
ngx_foko_chat_ws_sweep_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_ws_sweep_t  *sw = task->data;

    ngx_uint_t  i;

    for (i = 0; i < sw->n; i++) {
        if (!sw->known[i]
            && ngx_foko_chat_store_channel_ids_of(sw->users[i],
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

    u_char      *ids;
    ngx_uint_t   i, j;

    for (i = 0; i < sw->n; i++) {
        ids = ngx_alloc(sw->nchannels[i] * NGX_FOKO_CHAT_OID_LEN + 1,
                        ngx_cycle->log);

        if (ids && !task->failed) {
            for (j = 0; j < sw->nchannels[i]; j++) {
                ngx_memcpy(ids + j * NGX_FOKO_CHAT_OID_LEN,
                           sw->channels[i][j].id, NGX_FOKO_CHAT_OID_LEN);
            }

            ngx_foko_chat_presence_announce(sw->users[i], ids,
                                            sw->nchannels[i], 0);
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
                    || ngx_memcmp(ws->user->id, ev->user,
                                  NGX_FOKO_CHAT_OID_LEN) == 0)
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

        ngx_foko_chat_ws_from_ring(chan);

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

            ngx_foko_chat_ws_from_ring(chan);
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

            if (ngx_memcmp(sub->ws->user->id, ev->user,
                           NGX_FOKO_CHAT_OID_LEN)
                == 0)
            {
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
        /*
         * Before this worker's subscribers came (they resume it), or sent
         * from the ring already
         */
        return;
    }

    if (chan->nheld >= NGX_FOKO_CHAT_WS_PENDING) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "foko chat: too many messages of channel %*s wait "
                      "for an earlier one; its subscribers resume",
                      (size_t) NGX_FOKO_CHAT_OID_LEN, chan->id);
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

    ngx_foko_chat_ws_from_ring(chan);

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


/*
 * The messages a new node's worker may have read the events of before the
 * node was (see ngx_foko_chat_ws_chan_get()), from the ring in seq order,
 * as far as the channel is stored through.  The events that come for them
 * still are dropped as delivered.
 */

static void
ngx_foko_chat_ws_from_ring(ngx_foko_chat_ws_chan_t *chan)
{
    char                          *text;
    json_t                        *page, *m, *event;
    int64_t                        upto, seq;
    ngx_uint_t                     i, more;
    ngx_foko_chat_shm_ctx_t       *shm;
    ngx_foko_chat_ws_frame_buf_t  *f;

    if (chan->early <= chan->delivered || chan->delivered < 0) {
        chan->early = -1;
        return;
    }

    upto = ngx_min(chan->through, chan->early);

    if (upto <= chan->delivered) {
        return;
    }

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    if (ngx_foko_chat_cache_page(shm, chan->id, 0, chan->delivered,
                                 (ngx_uint_t) (upto - chan->delivered),
                                 &page, &more)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "foko chat: messages of channel %*s stored out of "
                      "order are not in the ring; they are replayed from "
                      "MongoDB", (size_t) NGX_FOKO_CHAT_OID_LEN, chan->id);
        ngx_foko_chat_ws_replay_to(chan, upto);
        return;
    }

    for (i = 0; i < json_array_size(page); i++) {
        m = json_array_get(page, i);
        seq = json_integer_value(json_object_get(m, "seq"));

        if (seq <= chan->delivered || seq > upto) {
            continue;
        }

        chan->delivered = seq;

        event = json_pack("{s:s,s:O}", "type", "message", "message", m);
        text = event ? json_dumps(event, JSON_COMPACT) : NULL;
        json_decref(event);

        if (text == NULL) {
            ngx_foko_chat_ws_replay_to(chan, upto);
            break;
        }

        f = ngx_foko_chat_ws_frame(NGX_FOKO_CHAT_WS_TEXT, (u_char *) text,
                                   ngx_strlen(text));
        free(text);

        if (f == NULL) {
            ngx_foko_chat_ws_replay_to(chan, upto);
            break;
        }

        ngx_foko_chat_ws_to_channel(chan, f, NULL, seq);
        ngx_foko_chat_ws_frame_put(f);
    }

    json_decref(page);

    if (chan->delivered >= chan->early) {
        chan->early = -1;
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

        if (except
            && ngx_memcmp(sub->ws->user->id, except, NGX_FOKO_CHAT_OID_LEN)
               == 0)
        {
            continue;
        }

        if (seq >= 0) {
            if (sub->resuming || seq <= sub->sent) {
                /* the replay brings it */
                continue;
            }

            sub->sent = seq;
            ngx_foko_chat_stat_inc(delivered);
        }

        ngx_foko_chat_ws_queue(sub->ws, f);
    }
}


/*
 * Messages up to "upto" are stored but cannot be sent from here: they
 * count as delivered, and each subscriber gets them by a replay of its
 * own (from MongoDB), live messages held back until it has caught up.
 */

static void
ngx_foko_chat_ws_replay_to(ngx_foko_chat_ws_chan_t *chan, int64_t upto)
{
    ngx_queue_t             *q;
    ngx_foko_chat_ws_sub_t  *sub;

    if (upto >= chan->early) {
        chan->early = -1;
    }

    if (upto > chan->delivered) {
        chan->delivered = upto;
    }

    for (q = ngx_queue_head(&chan->subs);
         q != ngx_queue_sentinel(&chan->subs);
         q = ngx_queue_next(q))
    {
        sub = ngx_queue_data(q, ngx_foko_chat_ws_sub_t, link);
        ngx_foko_chat_ws_catch_up(sub);
    }
}


/*
 * This host's lease in Redis had ended or was lost (worker 0 counts it in
 * the zone): the other hosts may have taken this worker's users offline,
 * and its online hash may be gone.  Each user online here, or in the
 * grace period, is told to the other hosts again, with the channels of a
 * connection (or of the last one).
 */

static void
ngx_foko_chat_ws_presence_again(ngx_foko_chat_shm_ctx_t *shm)
{
    u_char                   *ids;
    ngx_uint_t                i, n;
    ngx_atomic_uint_t         again;
    ngx_foko_chat_ws_t       *ws;
    ngx_foko_chat_ws_user_t  *user;

    again = shm->sh->redis.presence_again;

    if (again == ngx_foko_chat_ws_again) {
        return;
    }

    ngx_foko_chat_ws_again = again;

    for (user = ngx_foko_chat_ws_user_next(NULL);
         user;
         user = ngx_foko_chat_ws_user_next(user))
    {
        if (user->nconns == 0) {
            if (user->grace.timer_set) {
                ngx_foko_chat_redis_publish_presence(user->id, user->channels,
                                                     user->nchannels, 1);
            }

            continue;
        }

        ws = ngx_queue_data(ngx_queue_head(&user->conns), ngx_foko_chat_ws_t,
                            user_link);
        n = ws->nsubs;

        ids = ngx_alloc(n * NGX_FOKO_CHAT_OID_LEN + 1, ngx_cycle->log);
        if (ids == NULL) {
            continue;
        }

        for (i = 0; i < n; i++) {
            ngx_memcpy(ids + i * NGX_FOKO_CHAT_OID_LEN, ws->subs[i]->chan->id,
                       NGX_FOKO_CHAT_OID_LEN);
        }

        ngx_foko_chat_redis_publish_presence(user->id, ids, n, 1);
        ngx_free(ids);
    }
}


/* this worker missed events: every client resumes */

static void
ngx_foko_chat_ws_lost(void)
{
    ngx_queue_t              *uq;
    ngx_foko_chat_ws_t       *ws;
    ngx_foko_chat_ws_user_t  *user;

    for (user = ngx_foko_chat_ws_user_next(NULL);
         user;
         user = ngx_foko_chat_ws_user_next(user))
    {
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


/* this worker's users in turn: the first after NULL, NULL after the last */

static ngx_foko_chat_ws_user_t *
ngx_foko_chat_ws_user_next(ngx_foko_chat_ws_user_t *user)
{
    ngx_rbtree_node_t  *node, *root, *sentinel;

    if (user) {
        node = (ngx_rbtree_node_t *)
                   ((u_char *) user - offsetof(ngx_rbtree_node_t, color));
        node = ngx_rbtree_next(&ngx_foko_chat_ws_users, node);

    } else {
        root = ngx_foko_chat_ws_users.root;
        sentinel = ngx_foko_chat_ws_users.sentinel;
        node = (root == sentinel) ? NULL : ngx_rbtree_min(root, sentinel);
    }

    return node ? (ngx_foko_chat_ws_user_t *) &node->color : NULL;
}
