
/*
 * Foko chat: the channel cache in the shared zone: name, members (with
 * their names) and a ring of each channel's latest messages.
 */


#ifndef _NGX_FOKO_CHAT_CACHE_H_INCLUDED_
#define _NGX_FOKO_CHAT_CACHE_H_INCLUDED_


#include <jansson.h>

#include "ngx_foko_chat.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_store.h"


#define NGX_FOKO_CHAT_HISTORY_CACHE   50


void ngx_foko_chat_cache_init(ngx_foko_chat_sh_t *sh);

/*
 * Caches a channel as MongoDB has it: its doc, the members' names (an
 * object of id: username, or NULL: then those the zone's users know) and
 * its latest messages (an array in seq order, may be NULL).  Replaces
 * what was cached of it.  "gen" is what ngx_foko_chat_cache_gen() said
 * before MongoDB was read: if a channel changed since, what was read may
 * be stale, and nothing is cached.
 */
ngx_int_t ngx_foko_chat_cache_put_channel(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_channel_doc_t *ch, json_t *names, json_t *latest,
    ngx_uint_t ring_size, ngx_atomic_uint_t gen);
ngx_atomic_uint_t ngx_foko_chat_cache_gen(ngx_foko_chat_shm_ctx_t *ctx);

/* NGX_OK: cached, *member says if "user" is in it; NGX_DECLINED: not */
ngx_int_t ngx_foko_chat_cache_member(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, u_char *user, ngx_uint_t *member);

/* after a change made in MongoDB */
void ngx_foko_chat_cache_forget(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel);

/*
 * With the zone locked: a stored message (acknowledged, edited, deleted)
 * into the channel's ring if the channel is cached; "text" is the message
 * serialized (JSON_COMPACT).  ngx_foko_chat_event_stored() calls it.
 */
void ngx_foko_chat_cache_ring_locked(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, json_t *message, char *text);

/*
 * A page of history from the ring, as GET .../messages defines it (after
 * < 0: not given; before 0: not given): NGX_OK with *page and *more, or
 * NGX_DECLINED if the ring does not hold all of it.
 */
ngx_int_t ngx_foko_chat_cache_page(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, int64_t before, int64_t after, ngx_uint_t limit,
    json_t **page, ngx_uint_t *more);

/*
 * With the zone locked: evicts the coldest cached channel but "keep";
 * NGX_DECLINED if there is none.  ngx_foko_chat_shm_alloc_locked() calls
 * it when the zone is full.
 */
ngx_int_t ngx_foko_chat_cache_evict_locked(ngx_foko_chat_shm_ctx_t *ctx,
    void *keep);

/*
 * GET /api/channels's { id, name, direct, members, last_message,
 * last_seq } of a channel, with its creation time, or NULL if the zone
 * cannot say it exactly.
 */
json_t *ngx_foko_chat_cache_describe(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, int64_t *created);

/* the message of "author" with "client_id" if the ring has it */
json_t *ngx_foko_chat_cache_find_client_id(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, u_char *author, u_char *client_id);


#endif /* _NGX_FOKO_CHAT_CACHE_H_INCLUDED_ */
