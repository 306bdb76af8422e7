
/*
 * Foko chat: each user's channel ids, read marks and account in the
 * shared zone, so that a sign-in, GET /api/me and GET /api/channels need
 * no MongoDB query for them.
 */


#ifndef _NGX_FOKO_CHAT_USERS_H_INCLUDED_
#define _NGX_FOKO_CHAT_USERS_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_store.h"


/* users kept at most; the coldest go first, and when the zone is full */
#define NGX_FOKO_CHAT_USERS_MAX   100000


void ngx_foko_chat_users_init(ngx_foko_chat_sh_t *sh);

/* read before MongoDB is asked: a change since makes the answer stale */
ngx_atomic_uint_t ngx_foko_chat_users_gen(ngx_foko_chat_shm_ctx_t *ctx);

/*
 * NGX_OK: the zone knows "user"; unless "found" is NULL, *found is a
 * malloc()ed array of *n documents with only their ids (NULL when there
 * are none), freed like ngx_foko_chat_store_channel_ids_of()'s; unless
 * "account" is NULL, it gets the id, username, email and version.
 * NGX_DECLINED: not known; NGX_ERROR: no memory.
 */
ngx_int_t ngx_foko_chat_users_get(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *user, ngx_foko_chat_channel_doc_t **found, ngx_uint_t *n,
    ngx_foko_chat_user_t *account);

/* keeps what MongoDB said unless a user changed since "gen" */
ngx_int_t ngx_foko_chat_users_put(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *user, ngx_foko_chat_channel_doc_t *found, ngx_uint_t n,
    ngx_foko_chat_user_t *account, ngx_atomic_uint_t gen);

/* after a create: "channel" into the ids of "user" if the zone knows it */
void ngx_foko_chat_users_add(ngx_foko_chat_shm_ctx_t *ctx, u_char *user,
    u_char *channel);

/*
 * after a join, a leave, a password reset or an accepted invitation:
 * "user" is loaded again when next needed
 */
void ngx_foko_chat_users_forget(ngx_foko_chat_shm_ctx_t *ctx, u_char *user);

/* after a change that does not say whose: every user is */
void ngx_foko_chat_users_forget_all(ngx_foko_chat_shm_ctx_t *ctx);

/*
 * GET /api/channels: NGX_OK with the channel ids of "user" and its read
 * marks, one malloc()ed block (free *reads; *ids point into it, both NULL
 * when there are none); NGX_DECLINED if the zone does not know the user
 * or its marks; NGX_ERROR: no memory.
 */
ngx_int_t ngx_foko_chat_users_reads_get(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *user, u_char (**ids)[NGX_FOKO_CHAT_OID_LEN], int64_t **reads,
    ngx_uint_t *n);
/* read before MongoDB is asked for the marks */
ngx_atomic_uint_t ngx_foko_chat_users_reads_gen(ngx_foko_chat_shm_ctx_t *ctx);
/* the marks MongoDB gave, kept unless a user or a mark changed since */
void ngx_foko_chat_users_reads_put(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *user, ngx_foko_chat_channel_doc_t *found, ngx_uint_t n,
    json_t *reads, ngx_atomic_uint_t gen);
/* after a mark read was stored: "seq" as MongoDB took it */
void ngx_foko_chat_users_read(ngx_foko_chat_shm_ctx_t *ctx, u_char *user,
    u_char *channel, int64_t seq);

/* with the zone locked: the username of a known user, or a zero length */
ngx_str_t ngx_foko_chat_users_name_locked(ngx_foko_chat_sh_t *sh,
    u_char *user);

/* with the zone locked: evicts the coldest user but "keep" */
ngx_int_t ngx_foko_chat_users_evict_locked(ngx_foko_chat_shm_ctx_t *ctx,
    void *keep);


#endif /* _NGX_FOKO_CHAT_USERS_H_INCLUDED_ */
