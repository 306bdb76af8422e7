
/*
 * Foko chat: per-channel message sequence counters in the shared zone.
 */


#ifndef _NGX_FOKO_CHAT_SEQ_H_INCLUDED_
#define _NGX_FOKO_CHAT_SEQ_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_shm.h"


typedef struct {
    u_char                     channel[NGX_FOKO_CHAT_OID_LEN];
    int64_t                    seq;
} ngx_foko_chat_seq_gap_t;


void ngx_foko_chat_seq_init(ngx_foko_chat_sh_t *sh);
void ngx_foko_chat_seq_init_process(ngx_foko_chat_shm_ctx_t *ctx);

/*
 * The next seq of a channel: NGX_OK with *seq; NGX_DECLINED if the counter
 * is not loaded yet (the caller reads the highest stored seq and calls
 * ngx_foko_chat_seq_load); NGX_ERROR if the zone is full.
 */
ngx_int_t ngx_foko_chat_seq_next(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, int64_t *seq);

/*
 * A seq numbered with the other hosts (in Redis): the counter goes past
 * it, and this worker holds it until it is stored.  NGX_DECLINED: the
 * counter is not loaded.
 */
ngx_int_t ngx_foko_chat_seq_use(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, int64_t seq);

/* the highest seq handed out, or -1 if the counter is not loaded */
int64_t ngx_foko_chat_seq_last(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel);

/*
 * Starts a counter at the highest stored seq, unless another worker did
 * meanwhile: then that counter stands.
 */
ngx_int_t ngx_foko_chat_seq_load(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, int64_t stored);


/* the highest acknowledged seq; with the zone locked */
int64_t ngx_foko_chat_seq_acked_locked(ngx_foko_chat_sh_t *sh,
    u_char *channel);
void ngx_foko_chat_seq_ack_locked(ngx_foko_chat_sh_t *sh, u_char *channel,
    int64_t seq);
/* every seq up to it is stored; -1 if not known; with the zone locked */
int64_t ngx_foko_chat_seq_through_locked(ngx_foko_chat_sh_t *sh,
    u_char *channel);
/* another host stored "seq": the counter goes past it; zone locked */
ngx_int_t ngx_foko_chat_seq_remote_locked(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, int64_t seq);
/* "seq" is stored by others, and MongoDB has seqs up to "stored" */
void ngx_foko_chat_seq_taken(ngx_foko_chat_shm_ctx_t *ctx, u_char *channel,
    int64_t seq, int64_t stored);

/*
 * The seqs that workers now dead took and never stored, taken over by
 * this worker: up to "max" of them into "gaps"; their number.
 */
ngx_uint_t ngx_foko_chat_seq_orphans(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_seq_gap_t *gaps, ngx_uint_t max);

/*
 * Up to "max" channel ids of the zone's counters into "ids", one after
 * another, from the "*from"th on (then *from moves on, back to 0 at the
 * end); how many.
 */
ngx_uint_t ngx_foko_chat_seq_ids(ngx_foko_chat_shm_ctx_t *ctx, u_char *ids,
    ngx_uint_t max, ngx_uint_t *from);

/*
 * Redis's counter of the channel says some host took seqs up to "top":
 * the zone's counter goes past them, and they are waited for as seqs of
 * another host (then filled from MongoDB or with tombstones).  1 if this
 * zone had not heard of them.
 */
ngx_uint_t ngx_foko_chat_seq_heard(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, int64_t top);

/* whether this zone knows "seq" stored (1 also if it has no counter) */
ngx_uint_t ngx_foko_chat_seq_stored(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, int64_t seq);

/* the same, taking the lock */
int64_t ngx_foko_chat_seq_through(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel);


#endif /* _NGX_FOKO_CHAT_SEQ_H_INCLUDED_ */
