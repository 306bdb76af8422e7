
/*
 * Foko chat: several hosts through Redis: the reader.
 *
 * Worker 0 of each host (a respawned one takes over) reads every
 * partition stream with XREAD BLOCK, one task at a time on the Redis
 * thread pool, and applies the entries of other hosts to the zone as a
 * local writer would (ngx_foko_chat_event_remote_locked()).  The last id
 * applied of each partition is kept in the zone and an entry is applied
 * under the zone mutex only if it comes right after it, so that the two
 * readers of a reload apply each entry once.  An id that does not follow,
 * a "gap" entry (a host dropped events), a Redis with another run_id (a
 * restart or a failover) or a counter that went back are losses: the
 * host's WebSocket clients are closed with 1013 and resume from MongoDB,
 * and reading goes on from there.
 */


#include "ngx_foko_chat_redis_int.h"
#include "ngx_foko_chat_event.h"
#include "ngx_foko_chat_cache.h"
#include "ngx_foko_chat_users.h"


typedef struct {
    uint64_t                   id;
    ngx_uint_t                 partition;
    ngx_str_t                  host;
    ngx_str_t                  kind;
    ngx_str_t                  channel;
    ngx_str_t                  user;
    ngx_str_t                  ids;
    ngx_str_t                  json;
    int64_t                    seq;
    ngx_uint_t                 stored;         /* NGX_FOKO_CHAT_STORED_* */
    ngx_uint_t                 bus;            /* 0: not applied */
    json_t                    *message;        /* stored kinds */
    char                      *event;          /* stored kinds */
    unsigned                   gap:1;
    unsigned                   forget:1;       /* membership changed */
    unsigned                   presence:1;
    unsigned                   announce:2;     /* 2: online, 1: offline */
} ngx_foko_chat_redis_item_t;


typedef struct {
    redisContext              *c;
    ngx_uint_t                 n;              /* partitions */
    u_char                   (*keys)[NGX_FOKO_CHAT_REDIS_KEY_LEN];
    uint64_t                  *pos;            /* read from, per partition */
    uint64_t                  *tops;           /* the counters */
    u_char                     run_id[NGX_FOKO_CHAT_REDIS_RUN_ID + 1];

    redisReply                *reply;          /* XREAD's, until applied */
    ngx_foko_chat_redis_item_t  *items;
    ngx_uint_t                 nitems;
    ngx_uint_t                 next;

    ngx_event_t                retry;
    ngx_event_t                apply;
    ngx_msec_t                 backoff;

    ngx_int_t                  rc;
    u_char                     err[NGX_FOKO_CHAT_REDIS_ERR_LEN];
    unsigned                   sync:1;         /* the task connected */
    unsigned                   in_flight:1;
} ngx_foko_chat_redis_reader_t;


static void ngx_foko_chat_redis_reader_post(ngx_foko_chat_redis_reader_t *rd);
static void ngx_foko_chat_redis_reader_retry(ngx_event_t *ev);
static void ngx_foko_chat_redis_read_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_redis_sync_run(ngx_foko_chat_redis_reader_t *rd);
static ngx_int_t ngx_foko_chat_redis_xread_run(
    ngx_foko_chat_redis_reader_t *rd);
static ngx_int_t ngx_foko_chat_redis_tops(ngx_foko_chat_redis_reader_t *rd,
    redisReply *reply);
static ngx_int_t ngx_foko_chat_redis_parse(ngx_foko_chat_redis_reader_t *rd);
static void ngx_foko_chat_redis_parse_item(ngx_foko_chat_redis_item_t *it,
    redisReply *fields);
static ngx_int_t ngx_foko_chat_redis_read_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_redis_synced(ngx_foko_chat_redis_reader_t *rd);
static void ngx_foko_chat_redis_apply(ngx_event_t *ev);
static ngx_uint_t ngx_foko_chat_redis_apply_item(
    ngx_foko_chat_redis_reader_t *rd, ngx_foko_chat_redis_item_t *it,
    u_char **lost);
static void ngx_foko_chat_redis_lost(const char *why, ngx_uint_t partition);
static void ngx_foko_chat_redis_items_free(ngx_foko_chat_redis_reader_t *rd);


static ngx_foko_chat_redis_reader_t  ngx_foko_chat_redis_reader;


ngx_int_t
ngx_foko_chat_redis_reader_init(ngx_cycle_t *cycle)
{
    ngx_uint_t                     p;
    ngx_foko_chat_redis_reader_t  *rd;

    rd = &ngx_foko_chat_redis_reader;
    rd->n = ngx_foko_chat_redis_conf->partitions;

    rd->keys = ngx_alloc(rd->n * NGX_FOKO_CHAT_REDIS_KEY_LEN, cycle->log);
    rd->pos = ngx_calloc(rd->n * sizeof(uint64_t), cycle->log);
    rd->tops = ngx_calloc(rd->n * sizeof(uint64_t), cycle->log);

    if (rd->keys == NULL || rd->pos == NULL || rd->tops == NULL) {
        return NGX_ERROR;
    }

    for (p = 0; p < rd->n; p++) {
        *ngx_foko_chat_redis_key(rd->keys[p], p, "ev") = '\0';
    }

    rd->retry.handler = ngx_foko_chat_redis_reader_retry;
    rd->retry.log = cycle->log;
    rd->retry.data = rd;
    rd->retry.cancelable = 1;

    rd->apply.handler = ngx_foko_chat_redis_apply;
    rd->apply.log = cycle->log;
    rd->apply.data = rd;

    ngx_foko_chat_redis_reader_post(rd);

    return ngx_foko_chat_redis_lease_init(cycle);
}


static void
ngx_foko_chat_redis_reader_post(ngx_foko_chat_redis_reader_t *rd)
{
    ngx_foko_chat_task_t  *task;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        if (rd->c) {
            redisFree(rd->c);
            rd->c = NULL;
        }

        return;
    }

    task = ngx_foko_chat_task_create(0, ngx_cycle->log);
    if (task == NULL) {
        ngx_add_timer(&rd->retry, ngx_foko_chat_redis_backoff(&rd->backoff));
        return;
    }

    task->data = rd;
    task->run = ngx_foko_chat_redis_read_run;
    task->done = ngx_foko_chat_redis_read_done;

    rd->in_flight = 1;

    if (ngx_foko_chat_task_post(task, ngx_foko_chat_redis_conf->pool.pool)
        != NGX_OK)
    {
        rd->rc = NGX_ERROR;
        ngx_cpystrn(rd->err, (u_char *) "the thread pool's queue is full",
                    NGX_FOKO_CHAT_REDIS_ERR_LEN);
        ngx_foko_chat_task_fail(task);
    }
}


static void
ngx_foko_chat_redis_reader_retry(ngx_event_t *ev)
{
    ngx_foko_chat_redis_reader_post(ev->data);
}


/* on a thread: connect and look (run_id, counters), or read */

static void
ngx_foko_chat_redis_read_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_redis_reader_t  *rd = task->data;

    rd->sync = 0;

    if (rd->c == NULL) {
        rd->c = ngx_foko_chat_redis_connect(ngx_foko_chat_redis_conf, rd->err);
        rd->sync = 1;

        rd->rc = rd->c ? ngx_foko_chat_redis_sync_run(rd) : NGX_ERROR;
        return;
    }

    rd->rc = ngx_foko_chat_redis_xread_run(rd);
}


static ngx_int_t
ngx_foko_chat_redis_sync_run(ngx_foko_chat_redis_reader_t *rd)
{
    char        *p;
    size_t       len;
    ngx_uint_t   i;
    redisReply  *reply;
    const char  *argv[2 + NGX_FOKO_CHAT_REDIS_PARTITIONS_MAX];
    size_t       lens[2 + NGX_FOKO_CHAT_REDIS_PARTITIONS_MAX];
    u_char       keys[NGX_FOKO_CHAT_REDIS_PARTITIONS_MAX]
                     [NGX_FOKO_CHAT_REDIS_KEY_LEN];

    reply = redisCommand(rd->c, "INFO server");

    if (reply == NULL || reply->type != REDIS_REPLY_STRING) {
        ngx_foko_chat_redis_failed(&rd->c, reply, rd->err);
        return NGX_ERROR;
    }

    rd->run_id[0] = '\0';
    p = strstr(reply->str, "run_id:");

    if (p) {
        p += sizeof("run_id:") - 1;
        len = strcspn(p, "\r\n");
        len = ngx_min(len, NGX_FOKO_CHAT_REDIS_RUN_ID);
        *ngx_cpymem(rd->run_id, p, len) = '\0';
    }

    freeReplyObject(reply);

    argv[0] = "MGET";
    lens[0] = 4;

    for (i = 0; i < rd->n; i++) {
        argv[1 + i] = (const char *) keys[i];
        lens[1 + i] = ngx_foko_chat_redis_key(keys[i], i, "n") - keys[i];
    }

    reply = redisCommandArgv(rd->c, (int) (1 + rd->n), argv, lens);

    return ngx_foko_chat_redis_tops(rd, reply);
}


/* the counters of the partitions, from an MGET; frees the reply */

static ngx_int_t
ngx_foko_chat_redis_tops(ngx_foko_chat_redis_reader_t *rd, redisReply *reply)
{
    ngx_uint_t   i;
    redisReply  *r;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != rd->n)
    {
        ngx_foko_chat_redis_failed(&rd->c, reply, rd->err);
        return NGX_ERROR;
    }

    for (i = 0; i < rd->n; i++) {
        r = reply->element[i];
        rd->tops[i] = (r->type == REDIS_REPLY_STRING)
                      ? strtoull(r->str, NULL, 10) : 0;
    }

    freeReplyObject(reply);

    return NGX_OK;
}


/* MGET of the counters (for the lag), then XREAD from the positions */

static ngx_int_t
ngx_foko_chat_redis_xread_run(ngx_foko_chat_redis_reader_t *rd)
{
    u_char      *num;
    ngx_int_t    rc;
    ngx_uint_t   i, argc;
    redisReply  *reply;
    const char  *argv[7 + 2 * NGX_FOKO_CHAT_REDIS_PARTITIONS_MAX];
    size_t       lens[7 + 2 * NGX_FOKO_CHAT_REDIS_PARTITIONS_MAX];
    u_char       keys[NGX_FOKO_CHAT_REDIS_PARTITIONS_MAX]
                     [NGX_FOKO_CHAT_REDIS_KEY_LEN];
    u_char       ids[NGX_FOKO_CHAT_REDIS_PARTITIONS_MAX][NGX_INT64_LEN + 3];

    argv[0] = "MGET";
    lens[0] = 4;

    for (i = 0; i < rd->n; i++) {
        argv[1 + i] = (const char *) keys[i];
        lens[1 + i] = ngx_foko_chat_redis_key(keys[i], i, "n") - keys[i];
    }

    if (redisAppendCommandArgv(rd->c, (int) (1 + rd->n), argv, lens)
        != REDIS_OK)
    {
        ngx_foko_chat_redis_failed(&rd->c, NULL, rd->err);
        return NGX_ERROR;
    }

    argv[0] = "XREAD";
    argv[1] = "COUNT";
    argv[2] = NGX_FOKO_CHAT_REDIS_COUNT;
    argv[3] = "BLOCK";
    argv[4] = NGX_FOKO_CHAT_REDIS_BLOCK;
    argv[5] = "STREAMS";
    argc = 6;

    for (i = 0; i < rd->n; i++) {
        argv[argc] = (const char *) rd->keys[i];
        lens[argc++] = ngx_strlen(rd->keys[i]);
    }

    for (i = 0; i < rd->n; i++) {
        num = ngx_sprintf(ids[i], "%uL-0", rd->pos[i]);
        argv[argc] = (const char *) ids[i];
        lens[argc++] = num - ids[i];
    }

    for (i = 0; i < 6; i++) {
        lens[i] = ngx_strlen(argv[i]);
    }

    if (redisAppendCommandArgv(rd->c, (int) argc, argv, lens) != REDIS_OK) {
        ngx_foko_chat_redis_failed(&rd->c, NULL, rd->err);
        return NGX_ERROR;
    }

    if (redisGetReply(rd->c, (void **) &reply) != REDIS_OK) {
        ngx_foko_chat_redis_failed(&rd->c, NULL, rd->err);
        return NGX_ERROR;
    }

    if (ngx_foko_chat_redis_tops(rd, reply) != NGX_OK) {
        return NGX_ERROR;
    }

    if (redisGetReply(rd->c, (void **) &reply) != REDIS_OK) {
        ngx_foko_chat_redis_failed(&rd->c, NULL, rd->err);
        return NGX_ERROR;
    }

    if (reply->type == REDIS_REPLY_NIL) {
        /* nothing new within the BLOCK time */
        freeReplyObject(reply);
        return NGX_OK;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        ngx_foko_chat_redis_failed(&rd->c, reply, rd->err);
        return NGX_ERROR;
    }

    rd->reply = reply;

    rc = ngx_foko_chat_redis_parse(rd);

    if (rc != NGX_OK) {
        ngx_cpystrn(rd->err, (u_char *) "out of memory",
                    NGX_FOKO_CHAT_REDIS_ERR_LEN);
    }

    return rc;
}


/*
 * On the thread: the entries of every stream of the reply, in order, with
 * what the event loop applies prepared: stored messages parsed and their
 * events serialized as the writer does it.
 */

static ngx_int_t
ngx_foko_chat_redis_parse(ngx_foko_chat_redis_reader_t *rd)
{
    char                        *end;
    ngx_uint_t                   i, j, n, p;
    redisReply                  *stream, *entries, *entry;
    ngx_foko_chat_redis_item_t  *it;

    n = 0;

    for (i = 0; i < rd->reply->elements; i++) {
        stream = rd->reply->element[i];

        if (stream->type == REDIS_REPLY_ARRAY && stream->elements == 2
            && stream->element[1]->type == REDIS_REPLY_ARRAY)
        {
            n += stream->element[1]->elements;
        }
    }

    rd->items = calloc(n ? n : 1, sizeof(ngx_foko_chat_redis_item_t));
    if (rd->items == NULL) {
        return NGX_ERROR;
    }

    rd->nitems = 0;
    rd->next = 0;

    for (i = 0; i < rd->reply->elements; i++) {
        stream = rd->reply->element[i];

        if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2
            || stream->element[0]->type != REDIS_REPLY_STRING
            || stream->element[1]->type != REDIS_REPLY_ARRAY)
        {
            continue;
        }

        /* "foko:{p}:ev" */

        if (stream->element[0]->len < sizeof("foko:{}:ev") - 1) {
            continue;
        }

        p = strtoul(stream->element[0]->str + sizeof("foko:{") - 1, &end, 10);

        if (p >= rd->n || *end != '}') {
            continue;
        }

        entries = stream->element[1];

        for (j = 0; j < entries->elements; j++) {
            entry = entries->element[j];

            if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2
                || entry->element[0]->type != REDIS_REPLY_STRING
                || entry->element[1]->type != REDIS_REPLY_ARRAY)
            {
                continue;
            }

            it = &rd->items[rd->nitems++];
            it->partition = p;
            it->id = strtoull(entry->element[0]->str, NULL, 10);

            ngx_foko_chat_redis_parse_item(it, entry->element[1]);
        }
    }

    return NGX_OK;
}


static void
ngx_foko_chat_redis_parse_item(ngx_foko_chat_redis_item_t *it,
    redisReply *fields)
{
    ngx_str_t     name, *v;
    ngx_uint_t    i;
    json_t       *seq;
    const char   *channel;
    json_error_t  error;

    for (i = 0; i + 1 < fields->elements; i += 2) {
        if (fields->element[i]->type != REDIS_REPLY_STRING
            || fields->element[i + 1]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        name.data = (u_char *) fields->element[i]->str;
        name.len = fields->element[i]->len;

        v = (name.len == 4 && ngx_strncmp(name.data, "host", 4) == 0)
            ? &it->host
            : (name.len == 4 && ngx_strncmp(name.data, "kind", 4) == 0)
            ? &it->kind
            : (name.len == 7 && ngx_strncmp(name.data, "channel", 7) == 0)
            ? &it->channel
            : (name.len == 4 && ngx_strncmp(name.data, "user", 4) == 0)
            ? &it->user
            : (name.len == 3 && ngx_strncmp(name.data, "ids", 3) == 0)
            ? &it->ids
            : (name.len == 4 && ngx_strncmp(name.data, "json", 4) == 0)
            ? &it->json
            : NULL;

        if (v) {
            v->data = (u_char *) fields->element[i + 1]->str;
            v->len = fields->element[i + 1]->len;

        } else if (name.len == 3 && ngx_strncmp(name.data, "seq", 3) == 0) {
            it->seq = strtoll(fields->element[i + 1]->str, NULL, 10);
        }
    }

#define ngx_foko_chat_redis_is(s)                                            \
    (it->kind.len == sizeof(s) - 1                                           \
     && ngx_strncmp(it->kind.data, s, sizeof(s) - 1) == 0)

    if (ngx_foko_chat_redis_is("gap")) {
        it->gap = 1;
        return;
    }

    if (it->channel.len != NGX_FOKO_CHAT_OID_LEN
        || (it->user.len != 0 && it->user.len != NGX_FOKO_CHAT_OID_LEN)
        || it->ids.len % NGX_FOKO_CHAT_OID_LEN)
    {
        return;
    }

    if (ngx_foko_chat_redis_is("message")) {
        it->stored = NGX_FOKO_CHAT_STORED_NEW;
        it->bus = NGX_FOKO_CHAT_EV_MESSAGE;

    } else if (ngx_foko_chat_redis_is("message_updated")) {
        it->stored = NGX_FOKO_CHAT_STORED_UPDATED;
        it->bus = NGX_FOKO_CHAT_EV_CHANNEL;

    } else if (ngx_foko_chat_redis_is("message_deleted")) {
        it->stored = NGX_FOKO_CHAT_STORED_DELETED;
        it->bus = NGX_FOKO_CHAT_EV_CHANNEL;

    } else if (ngx_foko_chat_redis_is("channel")) {
        it->bus = NGX_FOKO_CHAT_EV_CHANNEL;
        it->forget = 1;

    } else if (ngx_foko_chat_redis_is("join")) {
        it->bus = NGX_FOKO_CHAT_EV_JOIN;
        it->forget = 1;

    } else if (ngx_foko_chat_redis_is("leave")) {
        it->bus = NGX_FOKO_CHAT_EV_LEAVE;
        it->forget = 1;

    } else if (ngx_foko_chat_redis_is("read")) {
        it->bus = NGX_FOKO_CHAT_EV_CHANNEL;

    } else if (ngx_foko_chat_redis_is("typing")) {
        it->bus = NGX_FOKO_CHAT_EV_TYPING;

    } else if (ngx_foko_chat_redis_is("presence")
               && it->user.len == NGX_FOKO_CHAT_OID_LEN)
    {
        it->presence = 1;
    }

#undef ngx_foko_chat_redis_is

    if (it->stored == 0) {
        return;
    }

    /* a message: its channel and seq must be the entry's */

    it->message = json_loadb((char *) it->json.data, it->json.len, 0, &error);

    channel = json_string_value(json_object_get(it->message, "channel_id"));
    seq = json_object_get(it->message, "seq");

    if (channel == NULL
        || ngx_strncmp(channel, it->channel.data, NGX_FOKO_CHAT_OID_LEN) != 0
        || !json_is_integer(seq) || json_integer_value(seq) != it->seq)
    {
        json_decref(it->message);
        it->message = NULL;
        it->bus = 0;
        return;
    }

    it->event = ngx_foko_chat_event_stored_json(it->message,
                                                (char *) it->json.data,
                                                it->stored);
    if (it->event == NULL) {
        json_decref(it->message);
        it->message = NULL;
        it->bus = 0;
    }
}


static ngx_int_t
ngx_foko_chat_redis_read_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_redis_reader_t  *rd = task->data;

    rd->in_flight = 0;

    if (task->failed || rd->rc != NGX_OK) {
        ngx_foko_chat_redis_items_free(rd);
        ngx_foko_chat_redis_state(0, "read", rd->err);
        ngx_add_timer(&rd->retry, ngx_foko_chat_redis_backoff(&rd->backoff));
        return NGX_OK;
    }

    rd->backoff = 0;
    ngx_foko_chat_redis_state(1, "read", NULL);

    if (rd->sync) {
        ngx_foko_chat_redis_synced(rd);
        ngx_foko_chat_redis_reader_post(rd);
        return NGX_OK;
    }

    /* what XREAD brought, if anything; then the next XREAD */
    ngx_foko_chat_redis_apply(&rd->apply);

    return NGX_OK;
}


/*
 * Connected: where to read from.  A Redis with another run_id restarted
 * or failed over and may have lost entries; a counter below what was
 * applied went back; partitions of another number are other streams.
 * Then reading starts again from the tops, and clients resume.  The first
 * reader of a fresh zone starts from the tops too: clients that signed in
 * before it resume, as they may have missed entries.
 */

static void
ngx_foko_chat_redis_synced(ngx_foko_chat_redis_reader_t *rd)
{
    ngx_uint_t                 p, fresh, back;
    const char                *why;
    ngx_foko_chat_shm_ctx_t   *ctx;
    ngx_foko_chat_redis_sh_t  *rsh;

    ctx = ngx_foko_chat_redis_shm;
    rsh = &ctx->sh->redis;
    why = NULL;
    fresh = 0;
    back = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (rsh->partitions == 0) {
        fresh = 1;

    } else if (rsh->partitions != rd->n) {
        why = "the number of partitions changed";

    } else if (ngx_strcmp(rsh->run_id, rd->run_id) != 0) {
        why = "Redis restarted or failed over (its run_id changed)";

    } else {
        for (p = 0; p < rd->n; p++) {
            if (rd->tops[p] < rsh->last[p]) {
                back = 1;
                why = "a partition's counter went back";
                rsh->last[p] = rd->tops[p];
            }
        }
    }

    if (fresh || (why && !back)) {
        for (p = 0; p < rd->n; p++) {
            rsh->last[p] = rd->tops[p];
        }

        rsh->partitions = rd->n;
        ngx_memcpy(rsh->run_id, rd->run_id, sizeof(rsh->run_id));
    }

    for (p = 0; p < rd->n; p++) {
        rd->pos[p] = rsh->last[p];
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (why) {
        ngx_foko_chat_redis_lost(why, NGX_ERROR);

    } else if (fresh) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "foko chat: reading the events of other hosts from "
                      "Redis at %V; this host is \"%s\"",
                      &ngx_foko_chat_redis_conf->url,
                      ngx_foko_chat_redis_host);

        ngx_foko_chat_redis_lost(NULL, NGX_ERROR);
    }
}


/*
 * Applies what was read, a share of the event log at a time, so that no
 * worker of this host falls behind the log: the rest after the workers
 * read it (a posted event runs after the bus's own).
 */

static void
ngx_foko_chat_redis_apply(ngx_event_t *ev)
{
    ngx_foko_chat_redis_reader_t  *rd = ev->data;

    size_t                       used, budget;
    u_char                      *lost;
    uint64_t                     lag;
    ngx_uint_t                   start, applied, p, lost_p;
    ngx_foko_chat_shm_ctx_t     *ctx;
    ngx_foko_chat_redis_sh_t    *rsh;
    ngx_foko_chat_redis_item_t  *it;

    ctx = ngx_foko_chat_redis_shm;
    rsh = &ctx->sh->redis;

    if (ev->posted) {
        ngx_delete_posted_event(ev);
    }

    budget = ctx->sh->log_size / 8;
    used = 0;
    applied = 0;
    lost = NULL;
    lost_p = 0;
    start = rd->next;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    while (rd->next < rd->nitems && used < budget) {
        it = &rd->items[rd->next++];

        if (ngx_foko_chat_redis_apply_item(rd, it, &lost)) {
            applied++;
            used += it->json.len + it->ids.len + 256;

        } else {
            /* not this reader's to apply: its cache is not to drop */
            it->forget = 0;
        }

        if (lost && lost_p == 0) {
            lost_p = it->partition + 1;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (applied) {
        (void) ngx_atomic_fetch_add(&rsh->applied, applied);
        ngx_foko_chat_bus_wake(ctx);
    }

    /* membership changed elsewhere: the cache loads it again */

    for (p = start; p < rd->next; p++) {
        it = &rd->items[p];

        if (it->forget) {
            ngx_foko_chat_cache_forget(ctx, it->channel.data);
            /* who joined elsewhere is not said: every user is loaded again */
            ngx_foko_chat_users_forget_all(ctx);
        }

        if (it->announce) {
            ngx_foko_chat_event_presence(it->user.data, it->ids.data,
                                         it->ids.len / NGX_FOKO_CHAT_OID_LEN,
                                         it->announce == 2);
        }
    }

    if (lost) {
        ngx_foko_chat_redis_lost((char *) lost, lost_p - 1);
    }

    if (rd->next < rd->nitems) {
        ngx_post_event(&rd->apply, &ngx_posted_events);
        return;
    }

    lag = 0;

    for (p = 0; p < rd->n; p++) {
        if (rd->tops[p] > rd->pos[p]) {
            lag += rd->tops[p] - rd->pos[p];
        }
    }

    rsh->lag = (ngx_atomic_uint_t) lag;

    ngx_foko_chat_redis_items_free(rd);
    ngx_foko_chat_redis_reader_post(rd);
}


/* with the zone locked: 1 if the entry went into the zone */

static ngx_uint_t
ngx_foko_chat_redis_apply_item(ngx_foko_chat_redis_reader_t *rd,
    ngx_foko_chat_redis_item_t *it, u_char **lost)
{
    u_char                    *own;
    uint64_t                  *last;
    ngx_foko_chat_event_t      ev;
    ngx_foko_chat_redis_sh_t  *rsh;

    rsh = &ngx_foko_chat_redis_shm->sh->redis;
    last = &rsh->last[it->partition];

    if (it->id > rd->pos[it->partition]) {
        rd->pos[it->partition] = it->id;
    }

    if (it->id <= *last) {
        /* the other reader of a reload applied it */
        return 0;
    }

    if (it->id != *last + 1) {
        *lost = (u_char *) "entries are missing (trimmed, or not written)";
    }

    *last = it->id;

    /* this zone's own ("/<zone id>"), whatever the host id was then */

    own = ngx_foko_chat_redis_host + ngx_foko_chat_redis_host_len
          - (NGX_FOKO_CHAT_REDIS_ZONE_ID + 1);

    if (it->host.len > NGX_FOKO_CHAT_REDIS_ZONE_ID
        && ngx_strncmp(it->host.data + it->host.len
                       - (NGX_FOKO_CHAT_REDIS_ZONE_ID + 1),
                       own, NGX_FOKO_CHAT_REDIS_ZONE_ID + 1)
           == 0)
    {
        (void) ngx_atomic_fetch_add(&rsh->own, 1);
        return 0;
    }

    if (it->gap) {
        *lost = (u_char *) "another host dropped events";
        return 0;
    }

    if (it->presence) {
        it->announce = ngx_foko_chat_redis_presence_locked(&it->host,
                           it->user.data, it->seq == 1, it->ids.data,
                           it->ids.len / NGX_FOKO_CHAT_OID_LEN);
        return 0;
    }

    if (it->bus == 0) {
        return 0;
    }

    ngx_memzero(&ev, sizeof(ngx_foko_chat_event_t));
    ev.kind = it->bus;
    ngx_memcpy(ev.channel, it->channel.data, NGX_FOKO_CHAT_OID_LEN);

    if (it->user.len) {
        ngx_memcpy(ev.user, it->user.data, NGX_FOKO_CHAT_OID_LEN);
    }

    ev.seq = it->seq;
    ev.ids = (u_char (*)[NGX_FOKO_CHAT_OID_LEN]) it->ids.data;
    ev.nids = it->ids.len / NGX_FOKO_CHAT_OID_LEN;

    if (it->stored) {
        ev.json = (u_char *) it->event;
        ev.json_len = ngx_strlen(it->event);

    } else {
        ev.json = it->json.data;
        ev.json_len = it->json.len;
    }

    return ngx_foko_chat_event_remote_locked(ngx_foko_chat_redis_shm, &ev,
                                             it->message,
                                             (char *) it->json.data,
                                             it->stored)
           == NGX_OK;
}


/*
 * Events of other hosts were missed: every worker of this host closes its
 * WebSocket clients with 1013, and they resume.  "why" NULL: the first
 * reading of a fresh zone, not counted.
 */

static void
ngx_foko_chat_redis_lost(const char *why, ngx_uint_t partition)
{
    ngx_foko_chat_event_t     ev;
    ngx_foko_chat_shm_ctx_t  *ctx;

    ctx = ngx_foko_chat_redis_shm;

    /* other hosts' presence is read again from their online hashes */
    ctx->sh->redis.presence_reset = 1;

    /* a lost join or leave: users' channel ids are read again too */
    ngx_foko_chat_users_forget_all(ctx);

    if (why) {
        (void) ngx_atomic_fetch_add(&ctx->sh->redis.losses, 1);

        /* the holes the lost events leave are filled soon (gaps.c) */
        ctx->sh->redis.lost_at = ngx_time();

        if (partition == (ngx_uint_t) NGX_ERROR) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "foko chat: events of other hosts may be lost: "
                          "%s; this host's WebSocket clients are asked to "
                          "resume", why);
        } else {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "foko chat: events of other hosts were lost in "
                          "partition %ui: %s; this host's WebSocket clients "
                          "are asked to resume", partition, why);
        }
    }

    ngx_memzero(&ev, sizeof(ngx_foko_chat_event_t));
    ev.kind = NGX_FOKO_CHAT_EV_LOST;
    ev.json = (u_char *) "";

    (void) ngx_foko_chat_bus_publish(ctx, &ev);
}


static void
ngx_foko_chat_redis_items_free(ngx_foko_chat_redis_reader_t *rd)
{
    ngx_uint_t  i;

    for (i = 0; i < rd->nitems; i++) {
        json_decref(rd->items[i].message);
        free(rd->items[i].event);
    }

    free(rd->items);
    rd->items = NULL;
    rd->nitems = 0;
    rd->next = 0;

    if (rd->reply) {
        freeReplyObject(rd->reply);
        rd->reply = NULL;
    }
}
