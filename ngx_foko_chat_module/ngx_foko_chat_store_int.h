
/*
 * Foko chat: what the files of the MongoDB store share: the driver, the
 * documents' helpers, the locks that make FerretDB's updates atomic.  Only
 * the store's files include it; the rest of the module knows the store by
 * ngx_foko_chat_store.h, which does not pull the driver in.
 */


#ifndef _NGX_FOKO_CHAT_STORE_INT_H_INCLUDED_
#define _NGX_FOKO_CHAT_STORE_INT_H_INCLUDED_


#include <mongoc/mongoc.h>

#include "ngx_foko_chat_store.h"


#define NGX_FOKO_CHAT_DUPLICATE_KEY  11000

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" and a NUL, with room to spare */
#define NGX_FOKO_CHAT_ISO_LEN        32

/* 9999-12-31T23:59:59.999Z, the last instant ISO 8601 writes in 4 digits */
#define NGX_FOKO_CHAT_TIME_MAX       253402300799999LL

/* conditional updates that lose a race are tried again this many times */
#define NGX_FOKO_CHAT_JOIN_TRIES     3

/* a lock is waited for this long, and broken when this old */
#define NGX_FOKO_CHAT_LOCK_WAIT      2000
#define NGX_FOKO_CHAT_LOCK_STALE     10000
#define NGX_FOKO_CHAT_LOCK_KEY_LEN   64

#define NGX_FOKO_CHAT_MESSAGE_PENDING   0
#define NGX_FOKO_CHAT_MESSAGE_STORED    1
#define NGX_FOKO_CHAT_MESSAGE_CONFLICT  2


/* thread side: a client of this worker's pool and a collection of ours */
mongoc_client_t *ngx_foko_chat_store_pop(void);
const char *ngx_foko_chat_store_db(void);
void ngx_foko_chat_store_push(mongoc_client_t *client);
mongoc_client_t *ngx_foko_chat_store_pop_slow(void);
void ngx_foko_chat_store_push_slow(mongoc_client_t *client);
mongoc_collection_t *ngx_foko_chat_store_collection(mongoc_client_t *client,
    const char *name);
void ngx_foko_chat_store_error(u_char *err, const char *what,
    bson_error_t *error);


/*
 * Set once the indexes exist: a direct channel or a message is never
 * inserted before the unique indexes that keep them single.
 */
extern volatile ngx_uint_t  ngx_foko_chat_channels_indexed;


ngx_int_t ngx_foko_chat_store_index(mongoc_client_t *client,
    const char *coll, const char *name, const char *fallback, bson_t *key,
    ngx_uint_t unique, const char *partial, u_char *err);
ngx_uint_t ngx_foko_chat_store_has_index(mongoc_client_t *client,
    const char *coll, const char *name);
ngx_int_t ngx_foko_chat_store_lock(mongoc_client_t *client,
    const char *key, bson_oid_t *token, u_char *err);
void ngx_foko_chat_store_unlock(mongoc_client_t *client,
    const char *key, bson_oid_t *token);
void ngx_foko_chat_store_lock_key(char *key, const char *what,
    const bson_oid_t *a, const bson_oid_t *b);
ngx_int_t ngx_foko_chat_store_is_racy(mongoc_client_t *client,
    u_char *err);
ngx_int_t ngx_foko_chat_store_oid(u_char *hex, bson_oid_t *oid);
void ngx_foko_chat_store_iso(int64_t ms, u_char *buf);
ngx_int_t ngx_foko_chat_store_parse_iso(const char *s, int64_t *ms);
int64_t ngx_foko_chat_store_now(void);
int64_t ngx_foko_chat_store_matched(bson_t *reply);

ngx_int_t ngx_foko_chat_store_update_locked(const char *collection,
    const char *what, const char *key, bson_t *filter, bson_t *update,
    ngx_uint_t upsert, u_char *err);


#endif /* _NGX_FOKO_CHAT_STORE_INT_H_INCLUDED_ */
