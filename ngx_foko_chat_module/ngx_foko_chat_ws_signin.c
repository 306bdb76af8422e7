
/*
 * Foko chat: the WebSocket sign-in: the token check, then the account and
 * its channels read on the thread pool, at most NGX_FOKO_CHAT_WS_AUTHS
 * sign-ins of a worker at a time; the others wait for their turn in the
 * sign-in lane.
 */


#include "ngx_foko_chat_ws_int.h"
#include "ngx_foko_chat_redis.h"


static ngx_int_t ngx_foko_chat_ws_auth_start(ngx_foko_chat_ws_t *ws);
static ngx_int_t ngx_foko_chat_ws_auth_turn(ngx_queue_t *q);
static void ngx_foko_chat_ws_auth_known(ngx_foko_chat_ws_job_t *job);
static void ngx_foko_chat_ws_auth_keep(ngx_foko_chat_ws_job_t *job);
static void ngx_foko_chat_ws_auth_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static void ngx_foko_chat_ws_auth_seq_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_ws_auth_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_ws_auth_seqs(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_task_t *task);
static void ngx_foko_chat_ws_ready(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_ws_job_t *job);
static ngx_int_t ngx_foko_chat_ws_job_post(ngx_foko_chat_ws_t *ws,
    ngx_foko_chat_task_t *task, ngx_foko_chat_task_run_pt run,
    ngx_foko_chat_task_done_pt done);
static void ngx_foko_chat_ws_job_release(ngx_foko_chat_ws_job_t *job);
static void ngx_foko_chat_ws_auth_pace(ngx_foko_chat_task_t *task);


/* the sign-ins of a worker on the thread pool, and those that wait */
static ngx_foko_chat_lane_t          ngx_foko_chat_ws_auth_lane;


void
ngx_foko_chat_ws_signin_init(void)
{
    /* no bound of its own: a waiting sign-in is a connection */
    ngx_foko_chat_lane_init(&ngx_foko_chat_ws_auth_lane,
                            NGX_FOKO_CHAT_WS_AUTHS, 0,
                            ngx_foko_chat_ws_auth_turn);
}


void
ngx_foko_chat_ws_signins(ngx_uint_t *running, ngx_uint_t *waiting,
    ngx_uint_t *limit)
{
    *running = ngx_foko_chat_ws_auth_lane.running;
    *waiting = ngx_foko_chat_ws_auth_lane.waiting;
    *limit = ngx_foko_chat_ws_auth_lane.limit;
}


/* a connection that closes while its sign-in waits */

void
ngx_foko_chat_ws_signin_cancel(ngx_foko_chat_ws_t *ws)
{
    if (ws->auth_waiting) {
        ws->auth_waiting = 0;
        ngx_foko_chat_lane_cancel(&ngx_foko_chat_ws_auth_lane,
                                  &ws->auth_link);
    }
}


/*
 * A sign-in still under way when the read timer fires: it goes on within
 * foko_chat_websocket_signin_timeout of its start (NGX_AGAIN, the timer
 * armed again); past it, it is given up (NGX_DECLINED): out of the lane,
 * its task's result dropped, and the client is told to come back later.
 */

ngx_int_t
ngx_foko_chat_ws_signin_late(ngx_foko_chat_ws_t *ws)
{
    ngx_msec_t               spent;
    ngx_queue_t             *q, *next;
    ngx_foko_chat_ws_job_t  *job;

    spent = ngx_current_msec - ws->auth_since;

    if (spent < ws->fmcf->ws_signin_timeout) {
        ngx_add_timer(ws->connection->read,
                      ngx_min(ws->fmcf->ws_auth_timeout,
                              ws->fmcf->ws_signin_timeout - spent));
        return NGX_AGAIN;
    }

    ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                  "foko chat: WebSocket sign-in given up after %M ms%s",
                  spent, ws->auth_waiting ? ", waiting for its turn" : "");

    ngx_foko_chat_ws_signin_cancel(ws);

    for (q = ngx_queue_head(&ws->jobs);
         q != ngx_queue_sentinel(&ws->jobs);
         q = next)
    {
        next = ngx_queue_next(q);
        job = ngx_queue_data(q, ngx_foko_chat_ws_job_t, link);

        if (job->what == NGX_FOKO_CHAT_WS_JOB_AUTH) {
            /* its completion leaves the lane and frees it */
            ngx_queue_remove(q);
            ngx_queue_init(q);
            job->ws = NULL;
            ws->njobs--;
        }
    }

    ws->authing = 0;

    ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                            "the server is too busy");

    return NGX_DECLINED;
}


/* auth: the token, then the account and its channels from MongoDB */

void
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
    ws->auth_since = ngx_current_msec;

    /*
     * A burst of connections (all clients back after a restart) waits
     * here in turn, in its contexts, instead of as thousands of tasks:
     * those, freed between the connections' long-lived allocations, left
     * about 1 KB of free heap per connection behind.
     */

    if (ngx_foko_chat_lane_enter(&ngx_foko_chat_ws_auth_lane, &ws->auth_link)
        == NGX_AGAIN)
    {
        ws->auth_waiting = 1;
        return;
    }

    if (ngx_foko_chat_ws_auth_start(ws) != NGX_OK) {
        ngx_foko_chat_lane_leave(&ngx_foko_chat_ws_auth_lane);
    }
}


/* a waiting sign-in's turn */

static ngx_int_t
ngx_foko_chat_ws_auth_turn(ngx_queue_t *q)
{
    ngx_foko_chat_ws_t  *ws;

    ws = ngx_queue_data(q, ngx_foko_chat_ws_t, auth_link);
    ws->auth_waiting = 0;

    if (ws->closing) {
        /* closed while it waited (the worker shuts down) */
        ws->authing = 0;
        return NGX_DECLINED;
    }

    if (ngx_foko_chat_ws_auth_start(ws) == NGX_OK) {
        return NGX_OK;
    }

    if (ngx_foko_chat_ws_flush(ws) != NGX_OK) {
        ngx_foko_chat_ws_free(ws);
    }

    return NGX_DECLINED;
}


static ngx_int_t
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
        return NGX_ERROR;
    }

    job = task->data;
    job->what = NGX_FOKO_CHAT_WS_JOB_AUTH;
    job->ver = ws->ver;
    ngx_memcpy(job->user, ws->sub, NGX_FOKO_CHAT_OID_LEN);

    ngx_foko_chat_ws_auth_known(job);

    if (ngx_foko_chat_ws_job_post(ws, task, ngx_foko_chat_ws_auth_run,
                                  ngx_foko_chat_ws_auth_done)
        != NGX_OK)
    {
        ws->authing = 0;
        ngx_foko_chat_ws_finish(ws, NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN,
                                "the server is too busy");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the user's channel ids and account from the zone, if it knows them */

static void
ngx_foko_chat_ws_auth_known(ngx_foko_chat_ws_job_t *job)
{
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    /* before MongoDB is read: a change since, and what it says is stale */
    job->users_gen = ngx_foko_chat_users_gen(shm);

    if (ngx_foko_chat_users_get(shm, job->user, &job->channels,
                                &job->nchannels, &job->account)
        == NGX_OK)
    {
        job->known = 1;
        job->account_known = !ngx_foko_chat_redis_on();
    }
}


/* counted once; what MongoDB said is kept for the next sign-in */

static void
ngx_foko_chat_ws_auth_keep(ngx_foko_chat_ws_job_t *job)
{
    ngx_foko_chat_shm_ctx_t  *shm;

    if (job->counted) {
        return;
    }

    job->counted = 1;

    if (job->account_known) {
        ngx_foko_chat_stat_inc(accounts_zone);

    } else {
        ngx_foko_chat_stat_inc(accounts_mongo);
    }

    if (job->known) {
        ngx_foko_chat_stat_inc(signins_zone);
        return;
    }

    ngx_foko_chat_stat_inc(signins_mongo);

    if (job->account.invited) {
        return;
    }

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    (void) ngx_foko_chat_users_put(shm, job->user, job->channels,
                                   job->nchannels, &job->account,
                                   job->users_gen);
}


static void
ngx_foko_chat_ws_auth_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_ws_job_t  *job = task->data;

    ngx_int_t   rc;
    ngx_uint_t  i;

    job->rc = NGX_OK;

    if (!job->account_known) {
        ngx_memcpy(job->account.id, job->user, NGX_FOKO_CHAT_OID_SIZE);

        rc = ngx_foko_chat_store_user_by_id(&job->account, job->err);

        if (rc != NGX_OK) {
            job->rc = rc;
            return;
        }
    }

    if (job->ver >= 0 && job->ver != job->account.ver) {
        /* the password was reset since the token was issued */
        job->rc = NGX_DECLINED;
        return;
    }

    if (!job->known
        && ngx_foko_chat_store_channel_ids_of(job->user, &job->channels,
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

    if (!task->failed && job->rc == NGX_OK) {
        ngx_foko_chat_ws_auth_keep(job);
    }

    if (ws && !task->failed && job->rc == NGX_OK && job->max_seq
        && ngx_foko_chat_ws_auth_seqs(ws, task) == NGX_AGAIN)
    {
        /* a second round for the counters the zone lacks */
        return NGX_OK;
    }

    /* this sign-in's turn on the thread pool is over */

    ngx_foko_chat_ws_auth_pace(task);
    ngx_foko_chat_lane_leave(&ngx_foko_chat_ws_auth_lane);

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


/* subscribed to every channel of the user: "ready", then the replay */

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

        hash = ngx_crc32_short(job->user, NGX_FOKO_CHAT_OID_LEN);
        node->key = hash;
        user = (ngx_foko_chat_ws_user_t *) &node->color;
        ngx_memcpy(user->id, job->user, NGX_FOKO_CHAT_OID_LEN);
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
        ids = ngx_alloc(ws->nsubs * NGX_FOKO_CHAT_OID_LEN + 1,
                        ngx_cycle->log);

        if (ids) {
            for (i = 0; i < ws->nsubs; i++) {
                ngx_memcpy(ids + i * NGX_FOKO_CHAT_OID_LEN,
                           ws->subs[i]->chan->id, NGX_FOKO_CHAT_OID_LEN);
            }

            ngx_foko_chat_presence_announce(user->id, ids, ws->nsubs, 1);
            ngx_free(ids);
        }
    }

    channels = json_array();

    for (i = 0; channels && i < ws->nsubs; i++) {
        sub = ws->subs[i];

        if (json_array_append_new(channels,
                json_pack("{s:s#,s:I}", "id", sub->chan->id,
                          (int) NGX_FOKO_CHAT_OID_LEN,
                          "last_seq", (json_int_t) ngx_max(sub->sent, 0)))
            != 0)
        {
            json_decref(channels);
            channels = NULL;
        }
    }

    ready = json_pack("{s:s,s:{s:s#,s:s},s:o*}", "type", "ready",
                      "user", "id", user->id, (int) NGX_FOKO_CHAT_OID_LEN,
                      "username", (char *) user->name,
                      "channels", channels);

    ngx_foko_chat_ws_queue_json(ws, ready);

    /*
     * The auth frame's resume starts before this worker reads any more
     * events: no live message of those channels goes out before the
     * replay has sent what comes before it.
     */

    if (ws->signin_resume && !ws->closing) {
        ngx_foko_chat_ws_resume_signin(ws);
    }
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

    if (job->known && job->account_known) {
        /* all from the zone: not behind the MongoDB reads on the pool */
        ngx_foko_chat_task_post_here(task);

    } else if (ngx_foko_chat_task_post(task, ws->fmcf->storage_pool.pool)
               != NGX_OK)
    {
        ngx_foko_chat_task_free(task);
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&ws->jobs, &job->link);
    ws->njobs++;

    return NGX_OK;
}


/*
 * A sign-in that read MongoDB paces the next ones: fewer at once while
 * MongoDB fails them (a slow database times out the calls it is given
 * beyond what it can answer), one more for each that it answers.
 */

static void
ngx_foko_chat_ws_auth_pace(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_ws_job_t  *job = task->data;

    if (task->failed || (job->known && job->account_known)) {
        /* the pool was full, or MongoDB was not asked */
        return;
    }

    if (job->rc != NGX_ERROR) {
        ngx_foko_chat_lane_faster(&ngx_foko_chat_ws_auth_lane);
        return;
    }

    if (ngx_foko_chat_lane_slower(&ngx_foko_chat_ws_auth_lane) == NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, task->log, 0,
                      "foko chat: MongoDB fails sign-ins: %ui at once from "
                      "now on", ngx_foko_chat_ws_auth_lane.limit);
    }
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
}
