
/*
 * Foko chat: the "channels" collection: channels and their membership.
 * Runs on pool threads only.
 *
 * A channel: { _id, name, direct, members: [ObjectId], direct_key (direct
 * channels only: both member ids sorted and joined by ":"), created }.
 *
 * The indexes are those of MongoDB; FerretDB, which the tests run against,
 * lacks partial indexes, and there a unique sparse index does the same
 * job: documents without the field are left out of it.
 */


#include "ngx_foko_chat_store_int.h"


static ngx_int_t ngx_foko_chat_store_direct_key(
    ngx_foko_chat_channel_doc_t *ch, char *key);
static ngx_int_t ngx_foko_chat_store_channel_one(bson_t *filter,
    ngx_foko_chat_channel_doc_t *ch, u_char *err);
static ngx_int_t ngx_foko_chat_store_channels_list(bson_t *filter,
    bson_t *opts, ngx_foko_chat_channel_doc_t **found, ngx_uint_t *n,
    u_char *err);
static ngx_int_t ngx_foko_chat_store_channel_read(const bson_t *doc,
    ngx_foko_chat_channel_doc_t *ch);


volatile ngx_uint_t  ngx_foko_chat_channels_indexed;


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
    char        a[NGX_FOKO_CHAT_OID_SIZE], b[NGX_FOKO_CHAT_OID_SIZE];
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
    char        key[NGX_FOKO_CHAT_LOCK_KEY_LEN];
    bson_t     *filter, *update;
    ngx_int_t   rc;
    bson_oid_t  oid;

    if (ngx_foko_chat_store_oid(ch->id, &oid) != NGX_OK) {
        return NGX_DECLINED;
    }

    ngx_foko_chat_store_lock_key(key, "channel", &oid, NULL);

    filter = BCON_NEW("_id", BCON_OID(&oid));
    update = BCON_NEW("$set", "{", "name", BCON_UTF8((char *) ch->name),
                      "}");

    rc = ngx_foko_chat_store_update_locked("channels", "channels rename",
                                           key, filter, update, 0, err);

    bson_destroy(filter);
    bson_destroy(update);

    return rc;
}


/*
 * Adds "user" to "channel" in one conditional update, so that concurrent
 * joins never go past "max" (0: no limit) nor add anyone twice: the
 * filter wants the user absent and no element at index max - 1.  When it
 * matches nothing, the channel is read to say why: a member already,
 * full, or no such channel.  A channel
 * that turns out to be neither (a member left in between) is tried again.
 */

ngx_foko_chat_join_e
ngx_foko_chat_store_channel_join(u_char *channel, u_char *user,
    ngx_uint_t max, u_char *err)
{
    bool                  ok;
    char                  path[NGX_INT_T_LEN + 9];
    char                  key[NGX_FOKO_CHAT_LOCK_KEY_LEN];
    bson_t                filter, sub, *by_id, *update, *opts, reply;
    ngx_int_t             locked;
    ngx_foko_chat_join_e  rc;
    bson_oid_t            cid, uid, token;
    bson_iter_t           it, members;
    ngx_uint_t            tries, n, member;
    bson_error_t          error;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    if (ngx_foko_chat_store_oid(channel, &cid) != NGX_OK) {
        return NGX_FOKO_CHAT_JOIN_NO_CHANNEL;
    }

    if (ngx_foko_chat_store_oid(user, &uid) != NGX_OK) {
        ngx_cpystrn(err, (u_char *) "invalid user id", NGX_FOKO_CHAT_ERR_LEN);
        return NGX_FOKO_CHAT_JOIN_FAILED;
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

    rc = NGX_FOKO_CHAT_JOIN_FAILED;
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
            rc = NGX_FOKO_CHAT_JOIN_FAILED;
            break;
        }

        n = ngx_foko_chat_store_matched(&reply);
        bson_destroy(&reply);

        if (n) {
            rc = NGX_FOKO_CHAT_JOINED;
            break;
        }

        /* why not: a member already, full, or no such channel */

        cursor = mongoc_collection_find_with_opts(coll, by_id, opts, NULL);

        if (!mongoc_cursor_next(cursor, &doc)) {
            if (mongoc_cursor_error(cursor, &error)) {
                ngx_foko_chat_store_error(err, "channels join", &error);
                rc = NGX_FOKO_CHAT_JOIN_FAILED;

            } else {
                rc = NGX_FOKO_CHAT_JOIN_NO_CHANNEL;
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
            rc = NGX_FOKO_CHAT_JOIN_MEMBER;
            break;
        }

        if (max && n >= max) {
            rc = NGX_FOKO_CHAT_JOIN_FULL;
            break;
        }
    }

    if (tries == NGX_FOKO_CHAT_JOIN_TRIES) {
        /* lost every race to leaving members: call it full */
        rc = NGX_FOKO_CHAT_JOIN_FULL;
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
    char        key[NGX_FOKO_CHAT_LOCK_KEY_LEN];
    bson_t     *filter, *update;
    ngx_int_t   rc;
    bson_oid_t  cid, uid;

    if (ngx_foko_chat_store_oid(channel, &cid) != NGX_OK
        || ngx_foko_chat_store_oid(user, &uid) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    ngx_foko_chat_store_lock_key(key, "channel", &cid, NULL);

    filter = BCON_NEW("_id", BCON_OID(&cid), "members", BCON_OID(&uid));
    update = BCON_NEW("$pull", "{", "members", BCON_OID(&uid), "}");

    rc = ngx_foko_chat_store_update_locked("channels", "channels leave",
                                           key, filter, update, 0, err);

    bson_destroy(filter);
    bson_destroy(update);

    return rc;
}
