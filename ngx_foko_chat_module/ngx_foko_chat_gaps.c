
/*
 * Foko chat: gap tombstones for the seqs of a worker that died.
 *
 * A worker killed while MongoDB is slow or away takes the seqs it handed
 * out with it; readers and subscribers would wait at the first of them
 * for the stall period, then at the next.  Every worker looks once a
 * second (and at its start, which is when a killed worker's replacement
 * comes) for the seqs of workers that are gone (ngx_foko_chat_seq.c),
 * and queues a tombstone for each of them with its writer: stored, it
 * moves the channel past the hole like any message.  A seq the dead
 * worker did store after all is published as what it holds (see
 * ngx_foko_chat_writer.c).
 *
 * With several hosts, the seqs of another host that a channel waits for
 * (their events lost with Redis, or the host died) go the same way, all
 * of a channel at once: those MongoDB has are published in seq order,
 * the others get their tombstone.
 */


#include "ngx_foko_chat_gaps.h"
#include "ngx_foko_chat_redis.h"
#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_store.h"
#include "ngx_foko_chat_writer.h"


#define NGX_FOKO_CHAT_GAPS_EVERY   1000      /* ms */
#define NGX_FOKO_CHAT_GAPS_MAX     256       /* tombstones queued a round */

#define NGX_FOKO_CHAT_GAPS_AUTHOR  "000000000000000000000000"


static void ngx_foko_chat_gaps_check(ngx_event_t *ev);
static ngx_int_t ngx_foko_chat_gaps_fill(ngx_foko_chat_seq_gap_t *gap);
static json_t *ngx_foko_chat_gaps_tombstone(ngx_foko_chat_seq_gap_t *gap);


static ngx_event_t       ngx_foko_chat_gaps_ev;
static ngx_connection_t  ngx_foko_chat_gaps_conn;


ngx_int_t
ngx_foko_chat_gaps_init_process(ngx_cycle_t *cycle)
{
    ngx_foko_chat_shm_ctx_t  *shm;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    shm = ngx_foko_chat_shm_cycle(cycle);
    if (shm == NULL) {
        return NGX_OK;
    }

    ngx_foko_chat_seq_init_process(shm);

    /* a debug log reads an event's data as a connection: give it one */
    ngx_foko_chat_gaps_conn.fd = (ngx_socket_t) -1;
    ngx_foko_chat_gaps_ev.data = &ngx_foko_chat_gaps_conn;
    ngx_foko_chat_gaps_ev.handler = ngx_foko_chat_gaps_check;
    ngx_foko_chat_gaps_ev.log = cycle->log;
    ngx_foko_chat_gaps_ev.cancelable = 1;

    /* at once: this worker may be the replacement of one killed */
    ngx_add_timer(&ngx_foko_chat_gaps_ev, 1);

    return NGX_OK;
}


static void
ngx_foko_chat_gaps_check(ngx_event_t *ev)
{
    ngx_uint_t                i, n, queued;
    ngx_foko_chat_seq_gap_t  *gaps;
    ngx_foko_chat_shm_ctx_t  *shm;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);
    gaps = ngx_alloc(NGX_FOKO_CHAT_GAPS_MAX * sizeof(ngx_foko_chat_seq_gap_t),
                     ev->log);

    n = 0;
    queued = 0;

    if (shm && ngx_foko_chat_redis_on()) {
        ngx_foko_chat_redis_seq_audit(shm);
    }

    if (shm && gaps) {
        n = ngx_foko_chat_seq_orphans(shm, gaps, NGX_FOKO_CHAT_GAPS_MAX);

        for (i = 0; i < n; i++) {
            queued += (ngx_foko_chat_gaps_fill(&gaps[i]) == NGX_OK);
        }
    }

    if (n) {
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "foko chat: %ui seqs that a worker gone or another "
                      "host took are filled from MongoDB or with gap "
                      "tombstones, %ui queued", n, queued);
    }

    ngx_free(gaps);

    ngx_add_timer(ev, n == NGX_FOKO_CHAT_GAPS_MAX
                      ? 1 : NGX_FOKO_CHAT_GAPS_EVERY);
}


/* the writer stores it, as it does a post that nobody waits for */

static ngx_int_t
ngx_foko_chat_gaps_fill(ngx_foko_chat_seq_gap_t *gap)
{
    json_t                  *tomb;
    ngx_foko_chat_target_t  *t;

    tomb = ngx_foko_chat_gaps_tombstone(gap);
    if (tomb == NULL) {
        return NGX_ERROR;
    }

    t = ngx_calloc(sizeof(ngx_foko_chat_target_t), ngx_cycle->log);
    if (t == NULL) {
        json_decref(tomb);
        return NGX_ERROR;
    }

    t->log = ngx_cycle->log;

    if (ngx_foko_chat_writer_add(t, tomb) != NGX_OK) {
        ngx_free(t);
        json_decref(tomb);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static json_t *
ngx_foko_chat_gaps_tombstone(ngx_foko_chat_seq_gap_t *gap)
{
    char    id[NGX_FOKO_CHAT_OID_SIZE];
    char    channel[NGX_FOKO_CHAT_OID_SIZE];
    u_char  created[NGX_FOKO_CHAT_ISO_SIZE];

    ngx_foko_chat_store_new_id((u_char *) id);
    ngx_foko_chat_store_iso_now(created);

    ngx_memcpy(channel, gap->channel, NGX_FOKO_CHAT_OID_LEN);
    channel[NGX_FOKO_CHAT_OID_LEN] = '\0';

    return json_pack("{s:s,s:s,s:I,s:{s:s,s:s},s:s,s:s,s:b}",
                     "id", id,
                     "channel_id", channel,
                     "seq", (json_int_t) gap->seq,
                     "author", "id", NGX_FOKO_CHAT_GAPS_AUTHOR,
                              "username", "",
                     "text", "",
                     "created_at", (char *) created,
                     "deleted", 1);
}
