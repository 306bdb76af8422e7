
/*
 * Foko chat: the MongoDB store.  Every function that talks to MongoDB runs
 * on a pool thread; the rest runs on the event loop.
 */


#ifndef _NGX_FOKO_CHAT_STORE_H_INCLUDED_
#define _NGX_FOKO_CHAT_STORE_H_INCLUDED_


#include <jansson.h>

#include "ngx_foko_chat.h"
#include "ngx_foko_chat_task.h"


/*
 * The bounds of a call to MongoDB unless the URI sets them: server
 * selection, connection, and how long a reply may be silent: 2 s for the
 * calls on users, channels and locks, 10 s for those on messages and read
 * marks, which FerretDB can take seconds to answer on a large collection
 * (bench/README.md, dbscale).  A monitor checks the server twice a second,
 * so that a silent server is known as such within about 2.5 s and later
 * calls fail at server selection.
 */
#define NGX_FOKO_CHAT_MONGO_SELECT_MS     2000
#define NGX_FOKO_CHAT_MONGO_CONNECT_MS    2000
#define NGX_FOKO_CHAT_MONGO_SOCKET_MS     2000
#define NGX_FOKO_CHAT_MONGO_SLOW_MS       10000
#define NGX_FOKO_CHAT_MONGO_HEARTBEAT_MS  500

/* the probe that keeps the zone's view of MongoDB current */
#define NGX_FOKO_CHAT_MONGO_PROBE_MS      1000

/* index creation and the usernames backfill retry after 1, 2, 4 ... 30 s */
#define NGX_FOKO_CHAT_INDEXES_RETRY_MS    1000
#define NGX_FOKO_CHAT_INDEXES_RETRY_MAX   30000
/* old accounts keyed by one run of the username backfill */
#define NGX_FOKO_CHAT_BACKFILL_BATCH      50



/* a fresh ObjectId, 24 hex digits and a NUL; no I/O */
void ngx_foko_chat_store_new_id(u_char *id);

/* now, as a message's "created_at" is, with a NUL */
#define NGX_FOKO_CHAT_ISO_SIZE  sizeof("1970-01-01T00:00:00.000Z")
void ngx_foko_chat_store_iso_now(u_char *buf);

char *ngx_foko_chat_store_check_uri(ngx_conf_t *cf, ngx_str_t *uri);
uint32_t ngx_foko_chat_store_db_id(ngx_str_t *uri);
ngx_int_t ngx_foko_chat_store_init_process(ngx_cycle_t *cycle);
void ngx_foko_chat_store_exit_process(ngx_cycle_t *cycle);

/* the result of a "ping" task */
typedef struct {
    ngx_int_t                  rc;
    u_char                     err[NGX_FOKO_CHAT_ERR_LEN];
} ngx_foko_chat_ping_t;


/* thread side of a task whose data is an ngx_foko_chat_ping_t */
void ngx_foko_chat_store_ping_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);

/* users: ngx_foko_chat_store_users.c */

#define NGX_FOKO_CHAT_USERS_PAGE       20
#define NGX_FOKO_CHAT_USERS_BATCH      500       /* warming up, a read */

typedef struct {
    u_char                     id[NGX_FOKO_CHAT_OID_SIZE];
    u_char                     email[NGX_FOKO_CHAT_EMAIL_MAX + 1];
    u_char                     username[NGX_FOKO_CHAT_USERNAME_MAX + 1];
    u_char                     hash[160];
    int64_t                    ver;          /* password version */
    int64_t                    created;      /* ms since the epoch */
    unsigned                   invited:1;
} ngx_foko_chat_user_t;

/*
 * Thread side.  NGX_OK; NGX_DECLINED: no such user, or for insert an email
 * that is taken; NGX_BUSY (insert, set_password with a username): the
 * username is taken; NGX_ERROR: storage failed, with a message in err.
 */
ngx_int_t ngx_foko_chat_store_user_insert(ngx_foko_chat_user_t *user,
    u_char *err);
ngx_int_t ngx_foko_chat_store_user_by_email(ngx_foko_chat_user_t *user,
    u_char *err);
ngx_int_t ngx_foko_chat_store_user_by_id(ngx_foko_chat_user_t *user,
    u_char *err);
ngx_int_t ngx_foko_chat_store_user_set_password(ngx_foko_chat_user_t *user,
    u_char *err);
ngx_int_t ngx_foko_chat_store_user_search(u_char *prefix, u_char *self,
    json_t **found, u_char *err);
ngx_int_t ngx_foko_chat_store_users_indexes(u_char *err);
ngx_int_t ngx_foko_chat_store_users_backfill(u_char *err);

/* json of a user as others may see it, or with the email for its owner */
json_t *ngx_foko_chat_user_json(ngx_foko_chat_user_t *user,
    ngx_uint_t own);


/*
 * channels: ngx_foko_chat_store_channels.c; messages and read marks:
 * ngx_foko_chat_store_messages.c
 */


typedef struct {
    u_char                     id[NGX_FOKO_CHAT_OID_SIZE];
    u_char                     name[NGX_FOKO_CHAT_CHANNEL_NAME_MAX + 1];
    unsigned                   direct:1;
    int64_t                    created;      /* ms since the epoch */

    /* member ids, 24 hex digits and a NUL each; released with free() */
    ngx_uint_t                 nmembers;
    u_char                   (*members)[NGX_FOKO_CHAT_OID_SIZE];
} ngx_foko_chat_channel_doc_t;

/*
 * A message as stored: { _id, channel_id, seq, author_id, author_name,
 * text, created (date), edited (date, optional), deleted (bool, optional),
 * client_id (optional) }.  Indexes: unique { channel_id, seq }, unique
 * { author_id, client_id } where client_id exists.
 *
 * Messages cross between threads and the event loop as jansson objects in
 * the API's shape: { id, channel_id, seq, author: { id, username }, text,
 * created_at (ISO 8601 UTC with milliseconds), edited_at?, deleted?,
 * client_id? }; a deleted message keeps its id, seq and author, with
 * "text": "" and "deleted": true.
 */

ngx_int_t ngx_foko_chat_store_channels_indexes(u_char *err);

/* NGX_OK, or NGX_DECLINED: a direct channel of this pair exists already */
ngx_int_t ngx_foko_chat_store_channel_insert(ngx_foko_chat_channel_doc_t *ch,
    u_char *err);
ngx_int_t ngx_foko_chat_store_channel_find(ngx_foko_chat_channel_doc_t *ch,
    u_char *err);
/* by the two members of a direct channel, in ch->members */
ngx_int_t ngx_foko_chat_store_channel_find_direct(
    ngx_foko_chat_channel_doc_t *ch, u_char *err);
/* the channels "user" is a member of: *found is an array of them */
ngx_int_t ngx_foko_chat_store_channels_of(u_char *user,
    ngx_foko_chat_channel_doc_t **found, ngx_uint_t *n, u_char *err);
/* the same with no member lists (nmembers 0) */
/*
 * Up to "max" accounts in _id order, read in pages (warming the zone up):
 * *found is a malloc()ed array of *n (NULL when there are none).
 */
ngx_int_t ngx_foko_chat_store_users_all(ngx_uint_t max,
    ngx_foko_chat_user_t **found, ngx_uint_t *n, u_char *err);

ngx_int_t ngx_foko_chat_store_channel_ids_of(u_char *user,
    ngx_foko_chat_channel_doc_t **found, ngx_uint_t *n, u_char *err);
/* the "limit" newest channels */
ngx_int_t ngx_foko_chat_store_channels_recent(ngx_uint_t limit,
    ngx_foko_chat_channel_doc_t **found, ngx_uint_t *n, u_char *err);
void ngx_foko_chat_store_channel_doc_free(ngx_foko_chat_channel_doc_t *ch);
ngx_int_t ngx_foko_chat_store_channel_rename(ngx_foko_chat_channel_doc_t *ch,
    u_char *err);
/* what a join did */
typedef enum {
    NGX_FOKO_CHAT_JOINED = 0,
    NGX_FOKO_CHAT_JOIN_MEMBER,         /* a member already */
    NGX_FOKO_CHAT_JOIN_FULL,           /* "max" members reached */
    NGX_FOKO_CHAT_JOIN_NO_CHANNEL,
    NGX_FOKO_CHAT_JOIN_FAILED          /* storage failed, see err */
} ngx_foko_chat_join_e;

ngx_foko_chat_join_e ngx_foko_chat_store_channel_join(u_char *channel,
    u_char *user, ngx_uint_t max, u_char *err);
/* NGX_OK, or NGX_DECLINED: not a member */
ngx_int_t ngx_foko_chat_store_channel_leave(u_char *channel, u_char *user,
    u_char *err);

/* inserts all messages in one round trip; NGX_OK when all are stored */
ngx_int_t ngx_foko_chat_store_messages_insert(json_t **messages,
    ngx_uint_t n, u_char *err);
/* NGX_OK with *message, or NGX_DECLINED */
ngx_int_t ngx_foko_chat_store_message_by_client_id(u_char *author,
    u_char *client_id, json_t **message, u_char *err);
/*
 * Up to "limit" messages of a channel in seq order: after "after" (if
 * >= 0), else before "before" (if > 0, the newest page below it), else
 * the newest page; none past "upto" (if >= 0); *more says whether more
 * exist on the far side.
 */
ngx_int_t ngx_foko_chat_store_messages_page(u_char *channel, int64_t before,
    int64_t after, int64_t upto, ngx_uint_t limit, json_t **messages,
    ngx_uint_t *more, u_char *err);
/* the highest seq of a channel, 0 if none */
ngx_int_t ngx_foko_chat_store_messages_max_seq(u_char *channel,
    int64_t *seq, u_char *err);
/* edits or tombstones a message of "author"; *message is the result */
ngx_int_t ngx_foko_chat_store_message_update(u_char *channel, u_char *id,
    u_char *author, u_char *text, json_t **message, u_char *err);

/* read marks: { channel_id, user_id, seq }, only ever raised */
ngx_int_t ngx_foko_chat_store_read_set(u_char *channel, u_char *user,
    int64_t seq, u_char *err);
/* *reads: an object { "<channel id>": seq } of one user */
ngx_int_t ngx_foko_chat_store_reads_of(u_char *user, json_t **reads,
    u_char *err);

/* usernames by id: *names is an object { "<id>": "<username>" } */
ngx_int_t ngx_foko_chat_store_usernames(u_char (*ids)[NGX_FOKO_CHAT_OID_SIZE],
    ngx_uint_t n,
    json_t **names, u_char *err);
/*
 * The account of an email, created as invited (no password, username
 * from the email's local part) when there is none: NGX_OK, user filled.
 */
ngx_int_t ngx_foko_chat_store_user_invite(ngx_foko_chat_user_t *user,
    u_char *err);


/* event loop side: record a probe's outcome in the shared zone */
void ngx_foko_chat_store_report(ngx_int_t rc, u_char *err, ngx_log_t *log);


#endif /* _NGX_FOKO_CHAT_STORE_H_INCLUDED_ */
