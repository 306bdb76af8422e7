
/*
 * Foko chat: the "channels", "messages" and "reads" collections, and the
 * invited accounts of "users".  Runs on pool threads only.
 *
 * A channel: { _id, name, direct, members: [ObjectId], direct_key (direct
 * channels only: both member ids sorted and joined by ":"), created }.
 * A read mark: { channel_id, user_id, seq }.  Messages: see the header.
 *
 * The indexes are those of MongoDB; FerretDB, which the tests run against,
 * lacks partial indexes, and there a unique sparse index does the same
 * job: documents without the field are left out of it.
 *
 * MongoDB applies each update to a document atomically.  FerretDB 1.x
 * reads, changes and writes documents back without isolation, so that
 * of two concurrent updates of one document one is lost (20 concurrent
 * $push of one array keep 3).  There, and only there, every update that
 * depends on what a document holds runs under a lock: a document in
 * "locks" whose unique _id makes one insert win.
 */


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


/*
 * Set once the indexes exist: a direct channel or a message is never
 * inserted before the unique indexes that keep them single.
 */
static volatile ngx_uint_t  ngx_foko_chat_channels_indexed;
static volatile ngx_uint_t  ngx_foko_chat_invite_indexed;

/* whether the server loses concurrent updates: -1 until known */
static volatile ngx_int_t   ngx_foko_chat_store_racy = -1;


static ngx_int_t ngx_foko_chat_store_index(mongoc_client_t *client,
    const char *coll, const char *name, const char *fallback, bson_t *key,
    ngx_uint_t unique, const char *partial, u_char *err);
static ngx_uint_t ngx_foko_chat_store_has_index(mongoc_client_t *client,
    const char *coll, const char *name);
static ngx_int_t ngx_foko_chat_store_oid(u_char *hex, bson_oid_t *oid);
static ngx_int_t ngx_foko_chat_store_lock(mongoc_client_t *client,
    const char *key, bson_oid_t *token, u_char *err);
static void ngx_foko_chat_store_unlock(mongoc_client_t *client,
    const char *key, bson_oid_t *token);
static void ngx_foko_chat_store_lock_key(char *key, const char *what,
    const bson_oid_t *a, const bson_oid_t *b);
static ngx_int_t ngx_foko_chat_store_is_racy(mongoc_client_t *client,
    u_char *err);
static ngx_int_t ngx_foko_chat_store_direct_key(
    ngx_foko_chat_channel_doc_t *ch, char *key);
static ngx_int_t ngx_foko_chat_store_channel_one(bson_t *filter,
    ngx_foko_chat_channel_doc_t *ch, u_char *err);
static ngx_int_t ngx_foko_chat_store_channels_list(bson_t *filter,
    bson_t *opts, ngx_foko_chat_channel_doc_t **found, ngx_uint_t *n,
    u_char *err);
static ngx_int_t ngx_foko_chat_store_channel_read(const bson_t *doc,
    ngx_foko_chat_channel_doc_t *ch);
static ngx_int_t ngx_foko_chat_store_message_bson(json_t *message,
    bson_t *doc, bson_oid_t *oid, u_char *err);
static ngx_int_t ngx_foko_chat_store_messages_stored(
    mongoc_collection_t *coll, bson_oid_t *oids, u_char *state,
    ngx_uint_t *pending, ngx_uint_t npending, u_char *err);
static ngx_int_t ngx_foko_chat_store_message_one(mongoc_collection_t *coll,
    bson_t *filter, json_t **message, u_char *err);
static json_t *ngx_foko_chat_store_message_json(const bson_t *doc);
static ngx_int_t ngx_foko_chat_store_reply_message(bson_t *reply,
    json_t **message);
static ngx_int_t ngx_foko_chat_store_json_oid(json_t *obj, const char *key,
    bson_iter_t *it);
static ngx_int_t ngx_foko_chat_store_json_date(json_t *obj, const char *key,
    bson_iter_t *it);
static void ngx_foko_chat_store_iso(int64_t ms, u_char *buf);
static ngx_int_t ngx_foko_chat_store_parse_iso(const char *s, int64_t *ms);
static int64_t ngx_foko_chat_store_now(void);
static int64_t ngx_foko_chat_store_matched(bson_t *reply);


ngx_int_t
ngx_foko_chat_store_channels_indexes(u_char *err)
{
    bson_t           *key;
    ngx_int_t         rc;
    mongoc_client_t  *client;

    client = ngx_foko_chat_store_pop();
    if (client == NULL) {
        ngx_cpystrn(err, (u_char *) "no MongoDB client available",
                    NGX_FOKO_CHAT_ERR_LEN);
        return NGX_ERROR;
    }

    /* one index per command: a refused one must not stop the others */

    key = BCON_NEW("members", BCON_INT32(1));
    rc = ngx_foko_chat_store_index(client, "channels", "members", NULL, key,
                                   0, NULL, err);
    bson_destroy(key);

    if (rc == NGX_OK) {
        key = BCON_NEW("direct_key", BCON_INT32(1));
        rc = ngx_foko_chat_store_index(client, "channels",
                                       "direct_key_unique", "direct_key",
                                       key, 1, "direct_key", err);
        bson_destroy(key);
    }

    if (rc == NGX_OK) {
        key = BCON_NEW("channel_id", BCON_INT32(1), "seq", BCON_INT32(1));
        rc = ngx_foko_chat_store_index(client, "messages",
                                       "channel_seq_unique", NULL, key, 1,
                                       NULL, err);
        bson_destroy(key);
    }

    if (rc == NGX_OK) {
        key = BCON_NEW("author_id", BCON_INT32(1),
                       "client_id", BCON_INT32(1));
        rc = ngx_foko_chat_store_index(client, "messages",
                                       "author_client_unique",
                                       "author_client", key, 1, "client_id",
                                       err);
        bson_destroy(key);
    }

    if (rc == NGX_OK) {
        key = BCON_NEW("user_id", BCON_INT32(1), "channel_id", BCON_INT32(1));
        rc = ngx_foko_chat_store_index(client, "reads",
                                       "user_channel_unique", NULL, key, 1,
                                       NULL, err);
        bson_destroy(key);
    }

    ngx_foko_chat_store_push(client);

    if (rc == NGX_OK) {
        ngx_foko_chat_channels_indexed = 1;
    }

    return rc;
}


/*
 * Creates one index, trying the best variant first.  With "partial" (the
 * field whose presence puts a document in a unique index) that is a
 * partial index, then a unique sparse one for servers without partial
 * indexes, then a plain index named "fallback", so that at least queries
 * stay fast where neither exists.  A server that refuses a variant moves
 * us to the next; a failed connection does not.
 */

static ngx_int_t
ngx_foko_chat_store_index(mongoc_client_t *client, const char *coll,
    const char *name, const char *fallback, bson_t *key, ngx_uint_t unique,
    const char *partial, u_char *err)
{
    bool           ok;
    bson_t         cmd, indexes, index, filter, exists;
    ngx_uint_t     variant, last;
    const char    *variant_name;
    bson_error_t   error;

    last = (partial != NULL) ? 2 : 0;

    for (variant = 0; variant <= last; variant++) {
        variant_name = (variant == 2) ? fallback : name;

        bson_init(&cmd);
        BSON_APPEND_UTF8(&cmd, "createIndexes", coll);
        BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &indexes);
        BSON_APPEND_DOCUMENT_BEGIN(&indexes, "0", &index);
        BSON_APPEND_DOCUMENT(&index, "key", key);
        BSON_APPEND_UTF8(&index, "name", variant_name);

        if (unique && variant < 2) {
            BSON_APPEND_BOOL(&index, "unique", true);
        }

        if (partial != NULL && variant == 0) {
            BSON_APPEND_DOCUMENT_BEGIN(&index, "partialFilterExpression",
                                       &filter);
            BSON_APPEND_DOCUMENT_BEGIN(&filter, partial, &exists);
            BSON_APPEND_BOOL(&exists, "$exists", true);
            bson_append_document_end(&filter, &exists);
            bson_append_document_end(&index, &filter);

        } else if (partial != NULL && variant == 1) {
            BSON_APPEND_BOOL(&index, "sparse", true);
        }

        bson_append_document_end(&indexes, &index);
        bson_append_array_end(&cmd, &indexes);

        ok = mongoc_client_write_command_with_opts(client,
                                                   ngx_foko_chat_store_db(),
                                                   &cmd, NULL, NULL, &error);
        bson_destroy(&cmd);

        /*
         * a concurrent creator may make ours fail, or even cost us the
         * connection: what counts is that the index exists
         */

        if (ok
            || ngx_foko_chat_store_has_index(client, coll, variant_name))
        {
            return NGX_OK;
        }

        if (error.domain != MONGOC_ERROR_SERVER) {
            break;
        }
    }

    (void) ngx_snprintf(err, NGX_FOKO_CHAT_ERR_LEN - 1,
                        "%s index \"%s\": %s%Z", coll, name, error.message);

    return NGX_ERROR;
}


static ngx_uint_t
ngx_foko_chat_store_has_index(mongoc_client_t *client, const char *coll,
    const char *name)
{
    bson_iter_t           it;
    ngx_uint_t            found;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_collection_t  *c;

    c = ngx_foko_chat_store_collection(client, coll);

    cursor = mongoc_collection_find_indexes_with_opts(c, NULL);
    found = 0;

    while (!found && mongoc_cursor_next(cursor, &doc)) {
        found = bson_iter_init_find(&it, doc, "name")
                && BSON_ITER_HOLDS_UTF8(&it)
                && ngx_strcmp(bson_iter_utf8(&it, NULL), name) == 0;
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(c);

    return found;
}


/*
 * For a direct channel, NGX_DECLINED when one of the same pair exists
 * already (the unique direct_key index says so); ch->id is set on NGX_OK,
 * and ch->created if it was 0.
 */

ngx_int_t
ngx_foko_chat_store_channel_insert(ngx_foko_chat_channel_doc_t *ch,
    u_char *err)
{
    bool                  ok;
    char                  key[50], index[16];
    bson_t                doc, members;
    ngx_int_t             rc;
    bson_oid_t            oid, member;
    ngx_uint_t            i;
    const char           *k;
    bson_error_t          error;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    if (ch->direct
        && ngx_foko_chat_store_direct_key(ch, key) != NGX_OK)
    {
        ngx_cpystrn(err, (u_char *) "a direct channel has two members",
                    NGX_FOKO_CHAT_ERR_LEN);
        return NGX_ERROR;
    }

    if (!ngx_foko_chat_channels_indexed
        && ngx_foko_chat_store_channels_indexes(err) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ch->created == 0) {
        ch->created = ngx_foko_chat_store_now();
    }

    bson_oid_init(&oid, NULL);

    bson_init(&doc);
    BSON_APPEND_OID(&doc, "_id", &oid);
    BSON_APPEND_UTF8(&doc, "name", (char *) ch->name);
    BSON_APPEND_BOOL(&doc, "direct", ch->direct ? true : false);
    BSON_APPEND_ARRAY_BEGIN(&doc, "members", &members);

    for (i = 0; i < ch->nmembers; i++) {
        if (ngx_foko_chat_store_oid(ch->members[i], &member) != NGX_OK) {
            bson_append_array_end(&doc, &members);
            bson_destroy(&doc);
            ngx_cpystrn(err, (u_char *) "invalid member id",
                        NGX_FOKO_CHAT_ERR_LEN);
            return NGX_ERROR;
        }

        (void) bson_uint32_to_string((uint32_t) i, &k, index, sizeof(index));
        bson_append_oid(&members, k, -1, &member);
    }

    bson_append_array_end(&doc, &members);

    if (ch->direct) {
        BSON_APPEND_UTF8(&doc, "direct_key", key);
    }

    BSON_APPEND_DATE_TIME(&doc, "created", ch->created);

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "channels");

    ok = mongoc_collection_insert_one(coll, &doc, NULL, NULL, &error);
    bson_destroy(&doc);

    if (ok) {
        bson_oid_to_string(&oid, (char *) ch->id);
        rc = NGX_OK;

    } else if (error.code == NGX_FOKO_CHAT_DUPLICATE_KEY && ch->direct) {
        rc = NGX_DECLINED;

    } else {
        ngx_foko_chat_store_error(err, "channels insert", &error);
        rc = NGX_ERROR;
    }

    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);

    return rc;
}


/*
 * The channel of ch->id: NGX_OK, NGX_DECLINED if there is none.  The
 * members replace ch->members, which must be NULL or malloc()ed: it is
 * reallocated, never leaked.
 */

ngx_int_t
ngx_foko_chat_store_channel_find(ngx_foko_chat_channel_doc_t *ch,
    u_char *err)
{
    bson_t      *filter;
    ngx_int_t    rc;
    bson_oid_t   oid;

    if (ngx_foko_chat_store_oid(ch->id, &oid) != NGX_OK) {
        return NGX_DECLINED;
    }

    filter = BCON_NEW("_id", BCON_OID(&oid));
    rc = ngx_foko_chat_store_channel_one(filter, ch, err);
    bson_destroy(filter);

    return rc;
}


/*
 * The direct channel of the two members in ch->members, found by its
 * direct_key; as with ngx_foko_chat_store_channel_find(), the stored
 * members replace (reallocate) ch->members.
 */

ngx_int_t
ngx_foko_chat_store_channel_find_direct(ngx_foko_chat_channel_doc_t *ch,
    u_char *err)
{
    char        key[50];
    bson_t     *filter;
    ngx_int_t   rc;

    if (ngx_foko_chat_store_direct_key(ch, key) != NGX_OK) {
        return NGX_DECLINED;
    }

    filter = BCON_NEW("direct_key", BCON_UTF8(key));
    rc = ngx_foko_chat_store_channel_one(filter, ch, err);
    bson_destroy(filter);

    return rc;
}


/*
 * The direct_key of the two members: their canonical (lowercase) ids in
 * order, so that a pair has one key whatever the order or case given.
 */

static ngx_int_t
ngx_foko_chat_store_direct_key(ngx_foko_chat_channel_doc_t *ch, char *key)
{
    char        a[25], b[25];
    bson_oid_t  oid;

    if (ch->nmembers != 2
        || ngx_foko_chat_store_oid(ch->members[0], &oid) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    bson_oid_to_string(&oid, a);

    if (ngx_foko_chat_store_oid(ch->members[1], &oid) != NGX_OK) {
        return NGX_DECLINED;
    }

    bson_oid_to_string(&oid, b);

    if (ngx_strcmp(a, b) < 0) {
        ngx_sprintf((u_char *) key, "%s:%s%Z", a, b);

    } else {
        ngx_sprintf((u_char *) key, "%s:%s%Z", b, a);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_store_channel_one(bson_t *filter,
    ngx_foko_chat_channel_doc_t *ch, u_char *err)
{
    bson_t               *opts;
    ngx_int_t             rc;
    bson_error_t          error;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    opts = BCON_NEW("limit", BCON_INT64(1));

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "channels");

    cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

    if (mongoc_cursor_next(cursor, &doc)) {
        rc = ngx_foko_chat_store_channel_read(doc, ch);

        if (rc != NGX_OK) {
            ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
        }

    } else if (mongoc_cursor_error(cursor, &error)) {
        ngx_foko_chat_store_error(err, "channels find", &error);
        rc = NGX_ERROR;

    } else {
        rc = NGX_DECLINED;
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(opts);

    return rc;
}


/*
 * The channels "user" is a member of, newest first: *found is a malloc()ed
 * array of *n documents (NULL when there are none), each freed with
 * ngx_foko_chat_store_channel_doc_free() before the array is free()d.
 */

ngx_int_t
ngx_foko_chat_store_channels_of(u_char *user,
    ngx_foko_chat_channel_doc_t **found, ngx_uint_t *n, u_char *err)
{
    bson_t      *filter, *opts;
    ngx_int_t    rc;
    bson_oid_t   oid;

    *found = NULL;
    *n = 0;

    if (ngx_foko_chat_store_oid(user, &oid) != NGX_OK) {
        return NGX_OK;
    }

    filter = BCON_NEW("members", BCON_OID(&oid));
    opts = BCON_NEW("sort", "{", "created", BCON_INT32(-1),
                                 "_id", BCON_INT32(-1), "}");

    rc = ngx_foko_chat_store_channels_list(filter, opts, found, n, err);

    bson_destroy(filter);
    bson_destroy(opts);

    return rc;
}


/* the same without the member lists: for a user of a large channel */

ngx_int_t
ngx_foko_chat_store_channel_ids_of(u_char *user,
    ngx_foko_chat_channel_doc_t **found, ngx_uint_t *n, u_char *err)
{
    bson_t      *filter, *opts;
    ngx_int_t    rc;
    bson_oid_t   oid;

    *found = NULL;
    *n = 0;

    if (ngx_foko_chat_store_oid(user, &oid) != NGX_OK) {
        return NGX_OK;
    }

    filter = BCON_NEW("members", BCON_OID(&oid));
    opts = BCON_NEW("projection", "{", "members", BCON_INT32(0), "}");

    rc = ngx_foko_chat_store_channels_list(filter, opts, found, n, err);

    bson_destroy(filter);
    bson_destroy(opts);

    return rc;
}


/* the newest channels, for warming the cache up at start */

ngx_int_t
ngx_foko_chat_store_channels_recent(ngx_uint_t limit,
    ngx_foko_chat_channel_doc_t **found, ngx_uint_t *n, u_char *err)
{
    bson_t     *filter, *opts;
    ngx_int_t   rc;

    /*
     * One batch, as far as 16 MB allow.  In benchmark runs FerretDB 1.24
     * lost this cursor between batches (its connection handler failed,
     * and the next getMore found no cursor): the cache was not warmed up.
     */

    filter = bson_new();
    opts = BCON_NEW("sort", "{", "_id", BCON_INT32(-1), "}",
                    "limit", BCON_INT64((int64_t) limit),
                    "batchSize", BCON_INT64((int64_t) limit));

    rc = ngx_foko_chat_store_channels_list(filter, opts, found, n, err);

    bson_destroy(filter);
    bson_destroy(opts);

    return rc;
}


static ngx_int_t
ngx_foko_chat_store_channels_list(bson_t *filter, bson_t *opts,
    ngx_foko_chat_channel_doc_t **found, ngx_uint_t *n, u_char *err)
{
    ngx_int_t                     rc;
    ngx_uint_t                    i, nalloc;
    bson_error_t                  error;
    const bson_t                 *doc;
    mongoc_cursor_t              *cursor;
    mongoc_client_t              *client;
    mongoc_collection_t          *coll;
    ngx_foko_chat_channel_doc_t  *list, *grown;

    *found = NULL;
    *n = 0;

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "channels");

    cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

    list = NULL;
    nalloc = 0;
    i = 0;
    rc = NGX_OK;

    while (rc == NGX_OK && mongoc_cursor_next(cursor, &doc)) {
        if (i == nalloc) {
            nalloc = nalloc ? 2 * nalloc : 16;

            grown = realloc(list, nalloc * sizeof(ngx_foko_chat_channel_doc_t));
            if (grown == NULL) {
                rc = NGX_ERROR;
                break;
            }

            list = grown;
        }

        ngx_memzero(&list[i], sizeof(ngx_foko_chat_channel_doc_t));

        rc = ngx_foko_chat_store_channel_read(doc, &list[i]);

        if (rc == NGX_OK) {
            i++;
        }
    }

    if (rc != NGX_OK) {
        ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);

    } else if (mongoc_cursor_error(cursor, &error)) {
        ngx_foko_chat_store_error(err, "channels", &error);
        rc = NGX_ERROR;
    }

    if (rc == NGX_OK) {
        *found = list;
        *n = i;

    } else {
        while (i) {
            ngx_foko_chat_store_channel_doc_free(&list[--i]);
        }

        free(list);
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);

    return rc;
}


/* frees what the store allocated in a document, not the document */

void
ngx_foko_chat_store_channel_doc_free(ngx_foko_chat_channel_doc_t *ch)
{
    free(ch->members);
    ch->members = NULL;
    ch->nmembers = 0;
}


/* NGX_ERROR only when memory runs out; ch->members is reallocated */

static ngx_int_t
ngx_foko_chat_store_channel_read(const bson_t *doc,
    ngx_foko_chat_channel_doc_t *ch)
{
    void         *members;
    uint32_t      len;
    const char   *s;
    ngx_uint_t    n;
    bson_iter_t   it, sub;

    n = 0;

    if (bson_iter_init_find(&it, doc, "members")
        && BSON_ITER_HOLDS_ARRAY(&it)
        && bson_iter_recurse(&it, &sub))
    {
        while (bson_iter_next(&sub)) {
            n += BSON_ITER_HOLDS_OID(&sub);
        }
    }

    /* one spare entry: malloc(0) may well return NULL */

    members = realloc(ch->members, (n + 1) * sizeof(ch->members[0]));
    if (members == NULL) {
        return NGX_ERROR;
    }

    ch->members = members;
    ch->nmembers = 0;

    if (n && bson_iter_init_find(&it, doc, "members")
        && bson_iter_recurse(&it, &sub))
    {
        while (bson_iter_next(&sub) && ch->nmembers < n) {
            if (BSON_ITER_HOLDS_OID(&sub)) {
                bson_oid_to_string(bson_iter_oid(&sub),
                                   (char *) ch->members[ch->nmembers++]);
            }
        }
    }

    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_OID(&it)) {
        bson_oid_to_string(bson_iter_oid(&it), (char *) ch->id);
    }

    ch->name[0] = '\0';

    if (bson_iter_init_find(&it, doc, "name") && BSON_ITER_HOLDS_UTF8(&it)) {
        s = bson_iter_utf8(&it, &len);

        if (len > NGX_FOKO_CHAT_CHANNEL_NAME_MAX) {
            len = NGX_FOKO_CHAT_CHANNEL_NAME_MAX;
        }

        ngx_memcpy(ch->name, s, len);
        ch->name[len] = '\0';
    }

    ch->direct = bson_iter_init_find(&it, doc, "direct")
                 && bson_iter_as_bool(&it);

    ch->created = 0;

    if (bson_iter_init_find(&it, doc, "created")
        && BSON_ITER_HOLDS_DATE_TIME(&it))
    {
        ch->created = bson_iter_date_time(&it);
    }

    return NGX_OK;
}


/* sets the name of ch->id: NGX_OK, or NGX_DECLINED if there is no such */

ngx_int_t
ngx_foko_chat_store_channel_rename(ngx_foko_chat_channel_doc_t *ch,
    u_char *err)
{
    bool                  ok;
    char                  key[NGX_FOKO_CHAT_LOCK_KEY_LEN];
    bson_t               *filter, *update, reply;
    ngx_int_t             rc, locked;
    bson_oid_t            oid, token;
    bson_error_t          error;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    if (ngx_foko_chat_store_oid(ch->id, &oid) != NGX_OK) {
        return NGX_DECLINED;
    }

    ngx_foko_chat_store_lock_key(key, "channel", &oid, NULL);

    filter = BCON_NEW("_id", BCON_OID(&oid));
    update = BCON_NEW("$set", "{", "name", BCON_UTF8((char *) ch->name),
                      "}");

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "channels");

    locked = ngx_foko_chat_store_lock(client, key, &token, err);

    if (locked == NGX_ERROR) {
        rc = NGX_ERROR;
        goto done;
    }

    ok = mongoc_collection_update_one(coll, filter, update, NULL, &reply,
                                      &error);

    if (!ok) {
        ngx_foko_chat_store_error(err, "channels rename", &error);
        rc = NGX_ERROR;

    } else {
        rc = ngx_foko_chat_store_matched(&reply) ? NGX_OK : NGX_DECLINED;
    }

    bson_destroy(&reply);

    if (locked == NGX_OK) {
        ngx_foko_chat_store_unlock(client, key, &token);
    }

done:

    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(filter);
    bson_destroy(update);

    return rc;
}


/*
 * Adds "user" to "channel" in one conditional update, so that concurrent
 * joins never go past "max" (0: no limit) nor add anyone twice: the
 * filter wants the user absent and no element at index max - 1.  When it
 * matches nothing, the channel is read to say why: NGX_BUSY, a member
 * already; NGX_DECLINED, full; NGX_ABORT, no such channel.  A channel
 * that turns out to be neither (a member left in between) is tried again.
 */

ngx_int_t
ngx_foko_chat_store_channel_join(u_char *channel, u_char *user,
    ngx_uint_t max, u_char *err)
{
    bool                  ok;
    char                  path[NGX_INT_T_LEN + 9];
    char                  key[NGX_FOKO_CHAT_LOCK_KEY_LEN];
    bson_t                filter, sub, *by_id, *update, *opts, reply;
    ngx_int_t             rc, locked;
    bson_oid_t            cid, uid, token;
    bson_iter_t           it, members;
    ngx_uint_t            tries, n, member;
    bson_error_t          error;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    if (ngx_foko_chat_store_oid(channel, &cid) != NGX_OK) {
        return NGX_ABORT;
    }

    if (ngx_foko_chat_store_oid(user, &uid) != NGX_OK) {
        ngx_cpystrn(err, (u_char *) "invalid user id", NGX_FOKO_CHAT_ERR_LEN);
        return NGX_ERROR;
    }

    bson_init(&filter);
    BSON_APPEND_OID(&filter, "_id", &cid);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "members", &sub);
    BSON_APPEND_OID(&sub, "$ne", &uid);
    bson_append_document_end(&filter, &sub);

    if (max) {
        ngx_sprintf((u_char *) path, "members.%ui%Z", max - 1);
        BSON_APPEND_DOCUMENT_BEGIN(&filter, path, &sub);
        BSON_APPEND_BOOL(&sub, "$exists", false);
        bson_append_document_end(&filter, &sub);
    }

    by_id = BCON_NEW("_id", BCON_OID(&cid));
    update = BCON_NEW("$push", "{", "members", BCON_OID(&uid), "}");
    opts = BCON_NEW("projection", "{", "members", BCON_INT32(1), "}",
                    "limit", BCON_INT64(1));

    ngx_foko_chat_store_lock_key(key, "channel", &cid, NULL);

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "channels");

    rc = NGX_ERROR;
    tries = 0;

    locked = ngx_foko_chat_store_lock(client, key, &token, err);

    if (locked == NGX_ERROR) {
        goto done;
    }

    for ( /* void */ ; tries < NGX_FOKO_CHAT_JOIN_TRIES; tries++) {
        ok = mongoc_collection_update_one(coll, &filter, update, NULL, &reply,
                                          &error);

        if (!ok) {
            bson_destroy(&reply);
            ngx_foko_chat_store_error(err, "channels join", &error);
            rc = NGX_ERROR;
            break;
        }

        n = ngx_foko_chat_store_matched(&reply);
        bson_destroy(&reply);

        if (n) {
            rc = NGX_OK;
            break;
        }

        /* why not: a member already, full, or no such channel */

        cursor = mongoc_collection_find_with_opts(coll, by_id, opts, NULL);

        if (!mongoc_cursor_next(cursor, &doc)) {
            if (mongoc_cursor_error(cursor, &error)) {
                ngx_foko_chat_store_error(err, "channels join", &error);
                rc = NGX_ERROR;

            } else {
                rc = NGX_ABORT;
            }

            mongoc_cursor_destroy(cursor);
            break;
        }

        n = 0;
        member = 0;

        if (bson_iter_init_find(&it, doc, "members")
            && BSON_ITER_HOLDS_ARRAY(&it)
            && bson_iter_recurse(&it, &members))
        {
            while (bson_iter_next(&members)) {
                n++;

                if (BSON_ITER_HOLDS_OID(&members)
                    && bson_oid_equal(bson_iter_oid(&members), &uid))
                {
                    member = 1;
                }
            }
        }

        mongoc_cursor_destroy(cursor);

        if (member) {
            rc = NGX_BUSY;
            break;
        }

        if (max && n >= max) {
            rc = NGX_DECLINED;
            break;
        }
    }

    if (tries == NGX_FOKO_CHAT_JOIN_TRIES) {
        /* lost every race to leaving members: call it full */
        rc = NGX_DECLINED;
    }

    if (locked == NGX_OK) {
        ngx_foko_chat_store_unlock(client, key, &token);
    }

done:

    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(&filter);
    bson_destroy(by_id);
    bson_destroy(update);
    bson_destroy(opts);

    return rc;
}


/* NGX_OK, or NGX_DECLINED: not a member, or no such channel */

ngx_int_t
ngx_foko_chat_store_channel_leave(u_char *channel, u_char *user, u_char *err)
{
    bool                  ok;
    char                  key[NGX_FOKO_CHAT_LOCK_KEY_LEN];
    bson_t               *filter, *update, reply;
    ngx_int_t             rc, locked;
    bson_oid_t            cid, uid, token;
    bson_error_t          error;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    if (ngx_foko_chat_store_oid(channel, &cid) != NGX_OK
        || ngx_foko_chat_store_oid(user, &uid) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    ngx_foko_chat_store_lock_key(key, "channel", &cid, NULL);

    filter = BCON_NEW("_id", BCON_OID(&cid), "members", BCON_OID(&uid));
    update = BCON_NEW("$pull", "{", "members", BCON_OID(&uid), "}");

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "channels");

    locked = ngx_foko_chat_store_lock(client, key, &token, err);

    if (locked == NGX_ERROR) {
        rc = NGX_ERROR;
        goto done;
    }

    ok = mongoc_collection_update_one(coll, filter, update, NULL, &reply,
                                      &error);

    if (!ok) {
        ngx_foko_chat_store_error(err, "channels leave", &error);
        rc = NGX_ERROR;

    } else {
        rc = ngx_foko_chat_store_matched(&reply) ? NGX_OK : NGX_DECLINED;
    }

    bson_destroy(&reply);

    if (locked == NGX_OK) {
        ngx_foko_chat_store_unlock(client, key, &token);
    }

done:

    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(filter);
    bson_destroy(update);

    return rc;
}


/*
 * One ordered insert_many for the whole batch.  A batch is retried when
 * its acknowledgement was lost, so a duplicate key is no failure by
 * itself: the messages of the batch already stored under their own _id
 * are counted as stored, and the rest is inserted again, until every
 * message is stored or found to collide with a different stored message
 * (the same seq, or the same client_id of the same author, under another
 * _id).  Such a collision is permanent: the others are stored all the
 * same, and the answer is NGX_DECLINED, naming the first collision in
 * err.  NGX_ERROR is a storage failure, worth retrying.
 */

ngx_int_t
ngx_foko_chat_store_messages_insert(json_t **messages, ngx_uint_t n,
    u_char *err)
{
    bool                  ok;
    u_char               *state;
    bson_t              **docs, *opts, reply;
    int64_t               index;
    ngx_int_t             rc;
    bson_oid_t           *oids;
    bson_iter_t           it, sub;
    ngx_uint_t            i, npending, *pending, conflicts, first;
    bson_error_t          error;
    const bson_t        **batch;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    if (n == 0) {
        return NGX_OK;
    }

    if (!ngx_foko_chat_channels_indexed
        && ngx_foko_chat_store_channels_indexes(err) != NGX_OK)
    {
        return NGX_ERROR;
    }

    docs = calloc(n, sizeof(bson_t *));
    batch = calloc(n, sizeof(bson_t *));
    oids = calloc(n, sizeof(bson_oid_t));
    pending = calloc(n, sizeof(ngx_uint_t));
    state = calloc(n, 1);

    if (docs == NULL || batch == NULL || oids == NULL || pending == NULL
        || state == NULL)
    {
        ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
        rc = NGX_ERROR;
        goto done;
    }

    for (i = 0; i < n; i++) {
        docs[i] = bson_new();

        if (ngx_foko_chat_store_message_bson(messages[i], docs[i], &oids[i],
                                             err)
            != NGX_OK)
        {
            rc = NGX_ERROR;
            goto done;
        }
    }

    opts = BCON_NEW("ordered", BCON_BOOL(true));

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "messages");

    rc = NGX_OK;
    conflicts = 0;
    first = 0;

    /* every round settles at least one message: at most n rounds */

    for ( ;; ) {
        npending = 0;

        for (i = 0; i < n; i++) {
            if (state[i] == NGX_FOKO_CHAT_MESSAGE_PENDING) {
                pending[npending] = i;
                batch[npending++] = docs[i];
            }
        }

        if (npending == 0) {
            break;
        }

        ok = mongoc_collection_insert_many(coll, batch, npending, opts,
                                           &reply, &error);

        if (ok) {
            bson_destroy(&reply);
            break;
        }

        /* ordered: the first write error is where the insert stopped */

        index = -1;

        if (error.code == NGX_FOKO_CHAT_DUPLICATE_KEY
            && bson_iter_init_find(&it, &reply, "writeErrors")
            && BSON_ITER_HOLDS_ARRAY(&it)
            && bson_iter_recurse(&it, &sub)
            && bson_iter_find(&sub, "0")
            && BSON_ITER_HOLDS_DOCUMENT(&sub)
            && bson_iter_recurse(&sub, &it)
            && bson_iter_find(&it, "index"))
        {
            index = bson_iter_as_int64(&it);
        }

        bson_destroy(&reply);

        if (index < 0 || (ngx_uint_t) index >= npending) {
            ngx_foko_chat_store_error(err, "messages insert", &error);
            rc = NGX_ERROR;
            break;
        }

        for (i = 0; i < (ngx_uint_t) index; i++) {
            state[pending[i]] = NGX_FOKO_CHAT_MESSAGE_STORED;
        }

        if (ngx_foko_chat_store_messages_stored(coll, oids, state,
                                                pending + index,
                                                npending - index, err)
            != NGX_OK)
        {
            rc = NGX_ERROR;
            break;
        }

        i = pending[index];

        if (state[i] == NGX_FOKO_CHAT_MESSAGE_PENDING) {
            state[i] = NGX_FOKO_CHAT_MESSAGE_CONFLICT;

            if (conflicts++ == 0) {
                first = i;
            }
        }
    }

    if (rc == NGX_OK && conflicts) {
        (void) ngx_snprintf(err, NGX_FOKO_CHAT_ERR_LEN - 1,
                            "messages insert: %ui message(s) collide with "
                            "stored ones, the first is seq %L of channel "
                            "%s%Z", conflicts,
                            (int64_t) json_integer_value(
                                json_object_get(messages[first], "seq")),
                            json_string_value(
                                json_object_get(messages[first],
                                                "channel_id")));
        rc = NGX_DECLINED;
    }

    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(opts);

done:

    for (i = 0; docs && i < n; i++) {
        if (docs[i]) {
            bson_destroy(docs[i]);
        }
    }

    free(docs);
    free(batch);
    free(oids);
    free(pending);
    free(state);

    return rc;
}


/* marks as stored those of the "pending" messages found by their _id */

static ngx_int_t
ngx_foko_chat_store_messages_stored(mongoc_collection_t *coll,
    bson_oid_t *oids, u_char *state, ngx_uint_t *pending, ngx_uint_t npending,
    u_char *err)
{
    char               index[16];
    bson_t             filter, id, in, *opts;
    ngx_int_t          rc;
    ngx_uint_t         i;
    const char        *k;
    bson_iter_t        it;
    bson_error_t       error;
    const bson_t      *doc;
    mongoc_cursor_t   *cursor;
    const bson_oid_t  *oid;

    bson_init(&filter);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &id);
    BSON_APPEND_ARRAY_BEGIN(&id, "$in", &in);

    for (i = 0; i < npending; i++) {
        (void) bson_uint32_to_string((uint32_t) i, &k, index, sizeof(index));
        bson_append_oid(&in, k, -1, &oids[pending[i]]);
    }

    bson_append_array_end(&id, &in);
    bson_append_document_end(&filter, &id);

    opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "}");

    cursor = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);

    while (mongoc_cursor_next(cursor, &doc)) {
        if (!bson_iter_init_find(&it, doc, "_id")
            || !BSON_ITER_HOLDS_OID(&it))
        {
            continue;
        }

        oid = bson_iter_oid(&it);

        for (i = 0; i < npending; i++) {
            if (bson_oid_equal(oid, &oids[pending[i]])) {
                state[pending[i]] = NGX_FOKO_CHAT_MESSAGE_STORED;
                break;
            }
        }
    }

    rc = NGX_OK;

    if (mongoc_cursor_error(cursor, &error)) {
        ngx_foko_chat_store_error(err, "messages insert check", &error);
        rc = NGX_ERROR;
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(&filter);
    bson_destroy(opts);

    return rc;
}


/* a message in the API's shape as a document to store */

static ngx_int_t
ngx_foko_chat_store_message_bson(json_t *message, bson_t *doc,
    bson_oid_t *oid, u_char *err)
{
    int           deleted;
    int64_t       created, edited;
    json_int_t    seq;
    bson_oid_t    channel, author;
    json_error_t  error;
    const char   *id, *channel_id, *author_id, *author_name, *text;
    const char   *created_at, *edited_at, *client_id;

    edited_at = NULL;
    client_id = NULL;
    deleted = 0;

    if (json_unpack_ex(message, &error, 0,
                       "{s:s, s:s, s:I, s:{s:s, s:s}, s:s, s:s,"
                       " s?s, s?b, s?s}",
                       "id", &id, "channel_id", &channel_id, "seq", &seq,
                       "author", "id", &author_id, "username", &author_name,
                       "text", &text, "created_at", &created_at,
                       "edited_at", &edited_at, "deleted", &deleted,
                       "client_id", &client_id)
        != 0)
    {
        (void) ngx_snprintf(err, NGX_FOKO_CHAT_ERR_LEN - 1,
                            "invalid message: %s%Z", error.text);
        return NGX_ERROR;
    }

    if (ngx_foko_chat_store_oid((u_char *) id, oid) != NGX_OK
        || ngx_foko_chat_store_oid((u_char *) channel_id, &channel) != NGX_OK
        || ngx_foko_chat_store_oid((u_char *) author_id, &author) != NGX_OK
        || ngx_foko_chat_store_parse_iso(created_at, &created) != NGX_OK
        || (edited_at
            && ngx_foko_chat_store_parse_iso(edited_at, &edited) != NGX_OK))
    {
        ngx_cpystrn(err, (u_char *) "invalid message: a bad id or date",
                    NGX_FOKO_CHAT_ERR_LEN);
        return NGX_ERROR;
    }

    BSON_APPEND_OID(doc, "_id", oid);
    BSON_APPEND_OID(doc, "channel_id", &channel);
    BSON_APPEND_INT64(doc, "seq", seq);
    BSON_APPEND_OID(doc, "author_id", &author);
    BSON_APPEND_UTF8(doc, "author_name", author_name);
    BSON_APPEND_UTF8(doc, "text", deleted ? "" : text);
    BSON_APPEND_DATE_TIME(doc, "created", created);

    if (edited_at) {
        BSON_APPEND_DATE_TIME(doc, "edited", edited);
    }

    if (deleted) {
        BSON_APPEND_BOOL(doc, "deleted", true);
    }

    if (client_id) {
        BSON_APPEND_UTF8(doc, "client_id", client_id);
    }

    return NGX_OK;
}


/* the message of "client_id" by "author": NGX_OK, or NGX_DECLINED */

ngx_int_t
ngx_foko_chat_store_message_by_client_id(u_char *author, u_char *client_id,
    json_t **message, u_char *err)
{
    bson_t               *filter;
    ngx_int_t             rc;
    bson_oid_t            oid;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    *message = NULL;

    if (ngx_foko_chat_store_oid(author, &oid) != NGX_OK) {
        return NGX_DECLINED;
    }

    filter = BCON_NEW("author_id", BCON_OID(&oid),
                      "client_id", BCON_UTF8((char *) client_id));

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "messages");

    rc = ngx_foko_chat_store_message_one(coll, filter, message, err);

    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(filter);

    return rc;
}


static ngx_int_t
ngx_foko_chat_store_message_one(mongoc_collection_t *coll, bson_t *filter,
    json_t **message, u_char *err)
{
    bson_t           *opts;
    ngx_int_t         rc;
    bson_error_t      error;
    const bson_t     *doc;
    mongoc_cursor_t  *cursor;

    opts = BCON_NEW("limit", BCON_INT64(1));

    cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

    if (mongoc_cursor_next(cursor, &doc)) {
        *message = ngx_foko_chat_store_message_json(doc);

        if (*message == NULL) {
            ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
            rc = NGX_ERROR;

        } else {
            rc = NGX_OK;
        }

    } else if (mongoc_cursor_error(cursor, &error)) {
        ngx_foko_chat_store_error(err, "messages find", &error);
        rc = NGX_ERROR;

    } else {
        rc = NGX_DECLINED;
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(opts);

    return rc;
}


/*
 * A page is read from the far end of the range plus one message: the
 * extra one, dropped, tells whether there are more.  A page below
 * "before" (or the newest) is read backwards and turned around.
 */

ngx_int_t
ngx_foko_chat_store_messages_page(u_char *channel, int64_t before,
    int64_t after, int64_t upto, ngx_uint_t limit, json_t **messages,
    ngx_uint_t *more, u_char *err)
{
    bson_t                filter, range, *opts;
    json_t               *list, *item;
    ngx_int_t             rc;
    bson_oid_t            oid;
    ngx_uint_t            n, backwards;
    bson_error_t          error;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    *messages = NULL;
    *more = 0;

    list = json_array();
    if (list == NULL) {
        ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
        return NGX_ERROR;
    }

    if (ngx_foko_chat_store_oid(channel, &oid) != NGX_OK) {
        *messages = list;
        return NGX_OK;
    }

    backwards = (after < 0);

    bson_init(&filter);
    BSON_APPEND_OID(&filter, "channel_id", &oid);

    if (upto >= 0 && (before <= 0 || before > upto + 1)) {
        /* nothing past "upto": the page below it, or after "after" */
        before = upto + 1;
    }

    if (after >= 0 || before > 0) {
        BSON_APPEND_DOCUMENT_BEGIN(&filter, "seq", &range);

        if (after >= 0) {
            BSON_APPEND_INT64(&range, "$gt", after);
        }

        if (before > 0) {
            BSON_APPEND_INT64(&range, "$lt", before);
        }

        bson_append_document_end(&filter, &range);
    }

    opts = BCON_NEW("sort", "{", "seq", BCON_INT32(backwards ? -1 : 1), "}",
                    "limit", BCON_INT64((int64_t) limit + 1));

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "messages");

    cursor = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);

    n = 0;
    rc = NGX_OK;

    while (mongoc_cursor_next(cursor, &doc)) {
        if (n == limit) {
            *more = 1;
            break;
        }

        item = ngx_foko_chat_store_message_json(doc);

        if (item == NULL
            || (backwards ? json_array_insert_new(list, 0, item)
                          : json_array_append_new(list, item))
               != 0)
        {
            ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
            rc = NGX_ERROR;
            break;
        }

        n++;
    }

    if (rc == NGX_OK && mongoc_cursor_error(cursor, &error)) {
        ngx_foko_chat_store_error(err, "messages page", &error);
        rc = NGX_ERROR;
    }

    if (rc == NGX_OK) {
        *messages = list;

    } else {
        json_decref(list);
        *more = 0;
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(&filter);
    bson_destroy(opts);

    return rc;
}


ngx_int_t
ngx_foko_chat_store_messages_max_seq(u_char *channel, int64_t *seq,
    u_char *err)
{
    bson_t               *filter, *opts;
    ngx_int_t             rc;
    bson_oid_t            oid;
    bson_iter_t           it;
    bson_error_t          error;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    *seq = 0;

    if (ngx_foko_chat_store_oid(channel, &oid) != NGX_OK) {
        return NGX_OK;
    }

    filter = BCON_NEW("channel_id", BCON_OID(&oid));
    opts = BCON_NEW("sort", "{", "seq", BCON_INT32(-1), "}",
                    "projection", "{", "seq", BCON_INT32(1), "}",
                    "limit", BCON_INT64(1));

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "messages");

    cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

    rc = NGX_OK;

    if (mongoc_cursor_next(cursor, &doc)) {
        if (bson_iter_init_find(&it, doc, "seq")) {
            *seq = bson_iter_as_int64(&it);
        }

    } else if (mongoc_cursor_error(cursor, &error)) {
        ngx_foko_chat_store_error(err, "messages max seq", &error);
        rc = NGX_ERROR;
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(filter);
    bson_destroy(opts);

    return rc;
}


/*
 * Only the author's message of that channel.  With "text" an edit, which
 * a deleted message refuses; without, a delete, which leaves a tombstone
 * and, on a tombstone, changes nothing and answers with it.  NGX_DECLINED:
 * no such message of that author in that channel (or a deleted one to
 * edit).
 */

ngx_int_t
ngx_foko_chat_store_message_update(u_char *channel, u_char *id,
    u_char *author, u_char *text, json_t **message, u_char *err)
{
    bool                  ok;
    char                  key[NGX_FOKO_CHAT_LOCK_KEY_LEN];
    bson_t                filter, sub, *update, *mine, reply;
    int64_t               now;
    ngx_int_t             rc, locked;
    bson_oid_t            cid, mid, aid, token;
    bson_error_t          error;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    *message = NULL;

    if (ngx_foko_chat_store_oid(channel, &cid) != NGX_OK
        || ngx_foko_chat_store_oid(id, &mid) != NGX_OK
        || ngx_foko_chat_store_oid(author, &aid) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    now = ngx_foko_chat_store_now();

    bson_init(&filter);
    BSON_APPEND_OID(&filter, "_id", &mid);
    BSON_APPEND_OID(&filter, "channel_id", &cid);
    BSON_APPEND_OID(&filter, "author_id", &aid);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "deleted", &sub);
    BSON_APPEND_BOOL(&sub, "$ne", true);
    bson_append_document_end(&filter, &sub);

    if (text) {
        update = BCON_NEW("$set", "{", "text", BCON_UTF8((char *) text),
                                       "edited", BCON_DATE_TIME(now), "}");

    } else {
        update = BCON_NEW("$set", "{", "text", BCON_UTF8(""),
                                       "deleted", BCON_BOOL(true),
                                       "edited", BCON_DATE_TIME(now), "}");
    }

    ngx_foko_chat_store_lock_key(key, "message", &mid, NULL);

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "messages");

    locked = ngx_foko_chat_store_lock(client, key, &token, err);

    if (locked == NGX_ERROR) {
        rc = NGX_ERROR;
        goto done;
    }

    ok = mongoc_collection_find_and_modify(coll, &filter, NULL, update, NULL,
                                           false, false, true, &reply,
                                           &error);

    if (!ok) {
        ngx_foko_chat_store_error(err, "messages update", &error);
        rc = NGX_ERROR;

    } else {
        rc = ngx_foko_chat_store_reply_message(&reply, message);

        if (rc == NGX_ERROR) {
            ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
        }
    }

    bson_destroy(&reply);

    if (rc == NGX_DECLINED && text == NULL) {
        /* deleted already: the tombstone as it is */

        mine = BCON_NEW("_id", BCON_OID(&mid), "channel_id", BCON_OID(&cid),
                        "author_id", BCON_OID(&aid));
        rc = ngx_foko_chat_store_message_one(coll, mine, message, err);
        bson_destroy(mine);
    }

    if (locked == NGX_OK) {
        ngx_foko_chat_store_unlock(client, key, &token);
    }

done:

    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(&filter);
    bson_destroy(update);

    return rc;
}


/*
 * The "value" of a findAndModify reply as a message: NGX_OK, NGX_DECLINED
 * if nothing matched, NGX_ERROR if memory ran out.
 */

static ngx_int_t
ngx_foko_chat_store_reply_message(bson_t *reply, json_t **message)
{
    bson_t          doc;
    uint32_t        len;
    bson_iter_t     it;
    const uint8_t  *data;

    if (!bson_iter_init_find(&it, reply, "value")
        || !BSON_ITER_HOLDS_DOCUMENT(&it))
    {
        return NGX_DECLINED;
    }

    bson_iter_document(&it, &len, &data);

    if (!bson_init_static(&doc, data, len)) {
        return NGX_DECLINED;
    }

    *message = ngx_foko_chat_store_message_json(&doc);

    return (*message != NULL) ? NGX_OK : NGX_ERROR;
}


/* a stored message in the API's shape; NULL when memory runs out */

static json_t *
ngx_foko_chat_store_message_json(const bson_t *doc)
{
    json_t       *j, *author;
    uint32_t      len;
    ngx_uint_t    failed, deleted;
    const char   *s;
    bson_iter_t   it;

    j = json_object();
    author = json_object();

    if (j == NULL || author == NULL) {
        json_decref(j);
        json_decref(author);
        return NULL;
    }

    deleted = bson_iter_init_find(&it, doc, "deleted")
              && bson_iter_as_bool(&it);

    failed = ngx_foko_chat_store_json_oid(j, "id",
                 bson_iter_init_find(&it, doc, "_id") ? &it : NULL);

    failed |= ngx_foko_chat_store_json_oid(j, "channel_id",
                  bson_iter_init_find(&it, doc, "channel_id") ? &it : NULL);

    failed |= json_object_set_new(j, "seq",
                  json_integer(bson_iter_init_find(&it, doc, "seq")
                               ? bson_iter_as_int64(&it) : 0))
              != 0;

    failed |= ngx_foko_chat_store_json_oid(author, "id",
                  bson_iter_init_find(&it, doc, "author_id") ? &it : NULL);

    s = "";
    len = 0;

    if (bson_iter_init_find(&it, doc, "author_name")
        && BSON_ITER_HOLDS_UTF8(&it))
    {
        s = bson_iter_utf8(&it, &len);
    }

    failed |= json_object_set_new(author, "username", json_stringn(s, len))
              != 0;

    failed |= json_object_set_new(j, "author", author) != 0;

    s = "";
    len = 0;

    if (!deleted
        && bson_iter_init_find(&it, doc, "text")
        && BSON_ITER_HOLDS_UTF8(&it))
    {
        s = bson_iter_utf8(&it, &len);
    }

    failed |= json_object_set_new(j, "text", json_stringn(s, len)) != 0;

    failed |= ngx_foko_chat_store_json_date(j, "created_at",
                  bson_iter_init_find(&it, doc, "created") ? &it : NULL);

    if (bson_iter_init_find(&it, doc, "edited")
        && BSON_ITER_HOLDS_DATE_TIME(&it))
    {
        failed |= ngx_foko_chat_store_json_date(j, "edited_at", &it);
    }

    if (deleted) {
        failed |= json_object_set_new(j, "deleted", json_true()) != 0;
    }

    if (bson_iter_init_find(&it, doc, "client_id")
        && BSON_ITER_HOLDS_UTF8(&it))
    {
        s = bson_iter_utf8(&it, &len);
        failed |= json_object_set_new(j, "client_id", json_stringn(s, len))
                  != 0;
    }

    if (failed) {
        json_decref(j);
        return NULL;
    }

    return j;
}


/* sets obj[key] to the hex of an ObjectId, or "" if "it" holds none */

static ngx_int_t
ngx_foko_chat_store_json_oid(json_t *obj, const char *key, bson_iter_t *it)
{
    char  hex[25];

    hex[0] = '\0';

    if (it && BSON_ITER_HOLDS_OID(it)) {
        bson_oid_to_string(bson_iter_oid(it), hex);
    }

    return json_object_set_new(obj, key, json_string(hex)) != 0;
}


static ngx_int_t
ngx_foko_chat_store_json_date(json_t *obj, const char *key, bson_iter_t *it)
{
    u_char  iso[NGX_FOKO_CHAT_ISO_LEN];

    ngx_foko_chat_store_iso((it && BSON_ITER_HOLDS_DATE_TIME(it))
                            ? bson_iter_date_time(it) : 0, iso);

    return json_object_set_new(obj, key, json_string((char *) iso)) != 0;
}


/*
 * Read marks only ever go up: $max in an upsert (under the lock where
 * updates race).  Two first marks at once may both try to insert; the
 * loser of the unique index tries again and then finds the winner's
 * document.
 */

ngx_int_t
ngx_foko_chat_store_read_set(u_char *channel, u_char *user, int64_t seq,
    u_char *err)
{
    bool                  ok;
    char                  key[NGX_FOKO_CHAT_LOCK_KEY_LEN];
    bson_t               *filter, *update, *opts;
    ngx_int_t             rc, locked;
    bson_oid_t            cid, uid, token;
    ngx_uint_t            tries;
    bson_error_t          error;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    if (ngx_foko_chat_store_oid(channel, &cid) != NGX_OK
        || ngx_foko_chat_store_oid(user, &uid) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    filter = BCON_NEW("channel_id", BCON_OID(&cid),
                      "user_id", BCON_OID(&uid));
    update = BCON_NEW("$max", "{", "seq", BCON_INT64(seq), "}");
    opts = BCON_NEW("upsert", BCON_BOOL(true));

    ngx_foko_chat_store_lock_key(key, "read", &cid, &uid);

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "reads");

    locked = ngx_foko_chat_store_lock(client, key, &token, err);

    if (locked == NGX_ERROR) {
        rc = NGX_ERROR;
        goto done;
    }

    rc = NGX_OK;

    for (tries = 0; tries < 2; tries++) {
        ok = mongoc_collection_update_one(coll, filter, update, opts, NULL,
                                          &error);
        if (ok) {
            rc = NGX_OK;
            break;
        }

        ngx_foko_chat_store_error(err, "reads set", &error);
        rc = NGX_ERROR;

        if (error.code != NGX_FOKO_CHAT_DUPLICATE_KEY) {
            break;
        }
    }

    if (locked == NGX_OK) {
        ngx_foko_chat_store_unlock(client, key, &token);
    }

done:

    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(filter);
    bson_destroy(update);
    bson_destroy(opts);

    return rc;
}


ngx_int_t
ngx_foko_chat_store_reads_of(u_char *user, json_t **reads, u_char *err)
{
    char                  hex[25];
    bson_t               *filter, *opts;
    json_t               *obj;
    ngx_int_t             rc;
    bson_oid_t            oid;
    bson_iter_t           it, seq;
    bson_error_t          error;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    *reads = NULL;

    obj = json_object();
    if (obj == NULL) {
        ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
        return NGX_ERROR;
    }

    if (ngx_foko_chat_store_oid(user, &oid) != NGX_OK) {
        *reads = obj;
        return NGX_OK;
    }

    filter = BCON_NEW("user_id", BCON_OID(&oid));
    opts = BCON_NEW("projection", "{", "channel_id", BCON_INT32(1),
                                       "seq", BCON_INT32(1), "}");

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "reads");

    cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

    rc = NGX_OK;

    while (mongoc_cursor_next(cursor, &doc)) {
        if (!bson_iter_init_find(&it, doc, "channel_id")
            || !BSON_ITER_HOLDS_OID(&it)
            || !bson_iter_init_find(&seq, doc, "seq"))
        {
            continue;
        }

        bson_oid_to_string(bson_iter_oid(&it), hex);

        if (json_object_set_new(obj, hex,
                                json_integer(bson_iter_as_int64(&seq)))
            != 0)
        {
            ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
            rc = NGX_ERROR;
            break;
        }
    }

    if (rc == NGX_OK && mongoc_cursor_error(cursor, &error)) {
        ngx_foko_chat_store_error(err, "reads of user", &error);
        rc = NGX_ERROR;
    }

    if (rc == NGX_OK) {
        *reads = obj;

    } else {
        json_decref(obj);
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(filter);
    bson_destroy(opts);

    return rc;
}


/* ids that are no user (or no id) are simply not in *names */

ngx_int_t
ngx_foko_chat_store_usernames(u_char (*ids)[25], ngx_uint_t n,
    json_t **names, u_char *err)
{
    char                  hex[25], index[16];
    bson_t                filter, id, in, *opts;
    json_t               *obj;
    uint32_t              len;
    ngx_int_t             rc;
    bson_oid_t            oid;
    ngx_uint_t            i, k;
    const char           *key, *s;
    bson_iter_t           it, name;
    bson_error_t          error;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    *names = NULL;

    obj = json_object();
    if (obj == NULL) {
        ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
        return NGX_ERROR;
    }

    bson_init(&filter);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &id);
    BSON_APPEND_ARRAY_BEGIN(&id, "$in", &in);

    for (i = 0, k = 0; i < n; i++) {
        if (ngx_foko_chat_store_oid(ids[i], &oid) == NGX_OK) {
            (void) bson_uint32_to_string((uint32_t) k++, &key, index,
                                         sizeof(index));
            bson_append_oid(&in, key, -1, &oid);
        }
    }

    bson_append_array_end(&id, &in);
    bson_append_document_end(&filter, &id);

    if (k == 0) {
        bson_destroy(&filter);
        *names = obj;
        return NGX_OK;
    }

    opts = BCON_NEW("projection", "{", "username", BCON_INT32(1), "}");

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "users");

    cursor = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);

    rc = NGX_OK;

    while (mongoc_cursor_next(cursor, &doc)) {
        if (!bson_iter_init_find(&it, doc, "_id")
            || !BSON_ITER_HOLDS_OID(&it)
            || !bson_iter_init_find(&name, doc, "username")
            || !BSON_ITER_HOLDS_UTF8(&name))
        {
            continue;
        }

        bson_oid_to_string(bson_iter_oid(&it), hex);
        s = bson_iter_utf8(&name, &len);

        if (json_object_set_new(obj, hex, json_stringn(s, len)) != 0) {
            ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
            rc = NGX_ERROR;
            break;
        }
    }

    if (rc == NGX_OK && mongoc_cursor_error(cursor, &error)) {
        ngx_foko_chat_store_error(err, "users names", &error);
        rc = NGX_ERROR;
    }

    if (rc == NGX_OK) {
        *names = obj;

    } else {
        json_decref(obj);
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(&filter);
    bson_destroy(opts);

    return rc;
}


/*
 * The account of user->email (lowercased here), made as an invited one
 * when there is none: { email, username: the email's local part (at most
 * 32 characters), invited: true, ver: 0, created }.  Two invitations of
 * the same email at once: the unique email index lets one insert through,
 * and the other reads what it inserted.
 */

ngx_int_t
ngx_foko_chat_store_user_invite(ngx_foko_chat_user_t *user, u_char *err)
{
    bool                  ok;
    u_char               *p, *at;
    bson_t               *doc;
    int64_t               now;
    ngx_int_t             rc;
    bson_oid_t            oid;
    ngx_uint_t            chars;
    bson_error_t          error;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    for (p = user->email; *p; p++) {
        *p = ngx_tolower(*p);
    }

    rc = ngx_foko_chat_store_user_by_email(user, err);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (!ngx_foko_chat_invite_indexed) {
        if (ngx_foko_chat_store_users_indexes(err) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_foko_chat_invite_indexed = 1;
    }

    /* the local part, cut after 32 characters of UTF-8 */

    at = (u_char *) ngx_strchr(user->email, '@');
    if (at == NULL) {
        at = p;
    }

    chars = 0;

    for (p = user->email; p < at; p++) {
        if ((*p & 0xc0) != 0x80 && chars++ == 32) {
            break;
        }
    }

    if (p == user->email) {
        ngx_cpystrn(user->username, (u_char *) "invited",
                    sizeof(user->username));

    } else {
        ngx_cpystrn(user->username, user->email, p - user->email + 1);
    }

    now = ngx_foko_chat_store_now();

    bson_oid_init(&oid, NULL);

    doc = BCON_NEW("_id", BCON_OID(&oid),
                   "email", BCON_UTF8((char *) user->email),
                   "username", BCON_UTF8((char *) user->username),
                   "invited", BCON_BOOL(true),
                   "ver", BCON_INT64(0),
                   "created", BCON_DATE_TIME(now));

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "users");

    ok = mongoc_collection_insert_one(coll, doc, NULL, NULL, &error);

    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(doc);

    if (ok) {
        bson_oid_to_string(&oid, (char *) user->id);
        user->hash[0] = '\0';
        user->ver = 0;
        user->created = now;
        user->invited = 1;

        return NGX_OK;
    }

    if (error.code != NGX_FOKO_CHAT_DUPLICATE_KEY) {
        ngx_foko_chat_store_error(err, "users invite", &error);
        return NGX_ERROR;
    }

    rc = ngx_foko_chat_store_user_by_email(user, err);

    if (rc == NGX_DECLINED) {
        ngx_cpystrn(err, (u_char *) "users invite: the email is taken, "
                    "and its account is gone", NGX_FOKO_CHAT_ERR_LEN);
        rc = NGX_ERROR;
    }

    return rc;
}


/*
 * Where updates race (see the top of the file), takes the lock "key":
 * NGX_OK, to be released with ngx_foko_chat_store_unlock(); NGX_DECLINED
 * where no lock is needed; NGX_ERROR if it stays taken.  A lock is held
 * for a round trip or two; one older than NGX_FOKO_CHAT_LOCK_STALE was
 * left by a thread that lost its connection, and is broken.
 */

static ngx_int_t
ngx_foko_chat_store_lock(mongoc_client_t *client, const char *key,
    bson_oid_t *token, u_char *err)
{
    bool                  ok;
    bson_t               *doc, *stale;
    int64_t               now, deadline;
    ngx_int_t             racy;
    ngx_msec_t            delay;
    bson_error_t          error;
    mongoc_collection_t  *coll;

    racy = ngx_foko_chat_store_is_racy(client, err);

    if (racy != 1) {
        return (racy == 0) ? NGX_DECLINED : NGX_ERROR;
    }

    bson_oid_init(token, NULL);

    coll = ngx_foko_chat_store_collection(client, "locks");

    deadline = ngx_foko_chat_store_now() + NGX_FOKO_CHAT_LOCK_WAIT;
    delay = 1;

    for ( ;; ) {
        now = ngx_foko_chat_store_now();

        doc = BCON_NEW("_id", BCON_UTF8(key), "token", BCON_OID(token),
                       "at", BCON_DATE_TIME(now));
        ok = mongoc_collection_insert_one(coll, doc, NULL, NULL, &error);
        bson_destroy(doc);

        if (ok) {
            break;
        }

        if (error.code != NGX_FOKO_CHAT_DUPLICATE_KEY) {
            ngx_foko_chat_store_error(err, "lock", &error);
            break;
        }

        stale = BCON_NEW("_id", BCON_UTF8(key),
                         "at", "{", "$lt",
                             BCON_DATE_TIME(now - NGX_FOKO_CHAT_LOCK_STALE),
                         "}");
        (void) mongoc_collection_delete_one(coll, stale, NULL, NULL, NULL);
        bson_destroy(stale);

        if (now > deadline) {
            (void) ngx_snprintf(err, NGX_FOKO_CHAT_ERR_LEN - 1,
                                "lock \"%s\" stays taken%Z", key);
            break;
        }

        ngx_msleep(delay);

        if (delay < 32) {
            delay *= 2;
        }
    }

    mongoc_collection_destroy(coll);

    return ok ? NGX_OK : NGX_ERROR;
}


static void
ngx_foko_chat_store_unlock(mongoc_client_t *client, const char *key,
    bson_oid_t *token)
{
    bson_t               *doc;
    mongoc_collection_t  *coll;

    /* a failure leaves the lock to go stale */

    doc = BCON_NEW("_id", BCON_UTF8(key), "token", BCON_OID(token));
    coll = ngx_foko_chat_store_collection(client, "locks");

    (void) mongoc_collection_delete_one(coll, doc, NULL, NULL, NULL);

    mongoc_collection_destroy(coll);
    bson_destroy(doc);
}


/* "<what>:<a hex>[:<b hex>]": the canonical ids, one key per document */

static void
ngx_foko_chat_store_lock_key(char *key, const char *what,
    const bson_oid_t *a, const bson_oid_t *b)
{
    char  x[25], y[25];

    bson_oid_to_string(a, x);

    if (b == NULL) {
        ngx_sprintf((u_char *) key, "%s:%s%Z", what, x);
        return;
    }

    bson_oid_to_string(b, y);
    ngx_sprintf((u_char *) key, "%s:%s:%s%Z", what, x, y);
}


/*
 * 1 if the server loses concurrent updates, 0 if not, NGX_ERROR if it
 * does not answer.  FerretDB 1.x names itself in buildInfo.
 */

static ngx_int_t
ngx_foko_chat_store_is_racy(mongoc_client_t *client, u_char *err)
{
    bool          ok;
    bson_t       *cmd, reply;
    ngx_int_t     racy;
    const char   *version;
    bson_iter_t   it;
    bson_error_t  error;

    if (ngx_foko_chat_store_racy >= 0) {
        return ngx_foko_chat_store_racy;
    }

    cmd = BCON_NEW("buildInfo", BCON_INT32(1));
    ok = mongoc_client_command_simple(client, "admin", cmd, NULL, &reply,
                                      &error);
    bson_destroy(cmd);

    if (!ok) {
        bson_destroy(&reply);
        ngx_foko_chat_store_error(err, "build info", &error);
        return NGX_ERROR;
    }

    racy = 0;

    if (bson_iter_init_find(&it, &reply, "ferretdbVersion")
        && BSON_ITER_HOLDS_UTF8(&it))
    {
        version = bson_iter_utf8(&it, NULL);
        racy = (ngx_strncmp(version, "v1.", 3) == 0
                || ngx_strncmp(version, "v0.", 3) == 0);
    }

    bson_destroy(&reply);

    ngx_foko_chat_store_racy = racy;

    return racy;
}


/* NGX_OK with *oid for 24 hex digits, else NGX_DECLINED */

static ngx_int_t
ngx_foko_chat_store_oid(u_char *hex, bson_oid_t *oid)
{
    if (hex == NULL
        || ngx_strlen(hex) != 24
        || !bson_oid_is_valid((char *) hex, 24))
    {
        return NGX_DECLINED;
    }

    bson_oid_init_from_string(oid, (char *) hex);

    return NGX_OK;
}


/* "YYYY-MM-DDTHH:MM:SS.mmmZ", UTC; buf has NGX_FOKO_CHAT_ISO_LEN bytes */

static void
ngx_foko_chat_store_iso(int64_t ms, u_char *buf)
{
    ngx_tm_t  tm;

    if (ms < 0) {
        ms = 0;

    } else if (ms > NGX_FOKO_CHAT_TIME_MAX) {
        ms = NGX_FOKO_CHAT_TIME_MAX;
    }

    ngx_gmtime((time_t) (ms / 1000), &tm);

    (void) ngx_sprintf(buf, "%4d-%02d-%02dT%02d:%02d:%02d.%03dZ%Z",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       (int) (ms % 1000));
}


/*
 * The reverse, for the dates of messages: "YYYY-MM-DDTHH:MM:SS", then
 * optionally a fraction (milliseconds kept), then "Z".
 */

static ngx_int_t
ngx_foko_chat_store_parse_iso(const char *s, int64_t *ms)
{
    int64_t      days, frac;
    ngx_int_t    year, month, day, hour, min, sec, i, digits;
    const char  *p;

    static const char  layout[] = "dddd-dd-ddTdd:dd:dd";

    for (i = 0; layout[i]; i++) {
        if (layout[i] == 'd' ? (s[i] < '0' || s[i] > '9')
                             : (s[i] != layout[i]))
        {
            return NGX_ERROR;
        }
    }

#define ngx_foko_chat_digits2(p)  (((p)[0] - '0') * 10 + (p)[1] - '0')

    year = ngx_foko_chat_digits2(s) * 100 + ngx_foko_chat_digits2(s + 2);
    month = ngx_foko_chat_digits2(s + 5);
    day = ngx_foko_chat_digits2(s + 8);
    hour = ngx_foko_chat_digits2(s + 11);
    min = ngx_foko_chat_digits2(s + 14);
    sec = ngx_foko_chat_digits2(s + 17);

#undef ngx_foko_chat_digits2

    if (year < 1970 || month < 1 || month > 12 || day < 1 || day > 31
        || hour > 23 || min > 59 || sec > 60)
    {
        return NGX_ERROR;
    }

    p = s + sizeof(layout) - 1;
    frac = 0;

    if (*p == '.') {
        for (p++, digits = 0; *p >= '0' && *p <= '9'; p++, digits++) {
            if (digits < 3) {
                frac = frac * 10 + *p - '0';
            }
        }

        if (digits == 0) {
            return NGX_ERROR;
        }

        for ( /* void */ ; digits < 3; digits++) {
            frac *= 10;
        }
    }

    if (p[0] != 'Z' || p[1] != '\0') {
        return NGX_ERROR;
    }

    /* days since the epoch of a proleptic Gregorian date, March based */

    if (month <= 2) {
        year--;
        month += 12;
    }

    days = 365 * year + year / 4 - year / 100 + year / 400
           + (153 * (month - 3) + 2) / 5 + day - 1 - 719468;

    *ms = ((days * 86400 + hour * 3600 + min * 60 + sec) * 1000) + frac;

    return NGX_OK;
}


/* the wall clock: the event loop's cached time is not ours to read */

static int64_t
ngx_foko_chat_store_now(void)
{
    struct timeval  tv;

    ngx_gettimeofday(&tv);

    return (int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000;
}


/* "matchedCount" of an update's reply */

static int64_t
ngx_foko_chat_store_matched(bson_t *reply)
{
    bson_iter_t  it;

    if (bson_iter_init_find(&it, reply, "matchedCount")) {
        return bson_iter_as_int64(&it);
    }

    return 0;
}
