
/*
 * Foko chat: the "messages" and "reads" collections: messages, in seq
 * order per channel, and read marks { channel_id, user_id, seq }.  Runs
 * on pool threads only.  Messages: see ngx_foko_chat_store.h.
 */


#include "ngx_foko_chat_store_int.h"


static ngx_int_t ngx_foko_chat_store_messages_stored(
    mongoc_collection_t *coll, bson_oid_t *oids, u_char *state,
    ngx_uint_t *pending, ngx_uint_t npending, u_char *err);
static ngx_int_t ngx_foko_chat_store_message_bson(json_t *message,
    bson_t *doc, bson_oid_t *oid, u_char *err);
static ngx_int_t ngx_foko_chat_store_message_one(mongoc_collection_t *coll,
    bson_t *filter, json_t **message, u_char *err);
static ngx_int_t ngx_foko_chat_store_reply_message(bson_t *reply,
    json_t **message);
static json_t *ngx_foko_chat_store_message_json(const bson_t *doc);
static ngx_int_t ngx_foko_chat_store_json_oid(json_t *obj, const char *key,
    bson_iter_t *it);
static ngx_int_t ngx_foko_chat_store_json_date(json_t *obj, const char *key,
    bson_iter_t *it);


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

    client = ngx_foko_chat_store_pop_slow();
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
    ngx_foko_chat_store_push_slow(client);
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

    client = ngx_foko_chat_store_pop_slow();
    coll = ngx_foko_chat_store_collection(client, "messages");

    rc = ngx_foko_chat_store_message_one(coll, filter, message, err);

    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push_slow(client);
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

    client = ngx_foko_chat_store_pop_slow();
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
    ngx_foko_chat_store_push_slow(client);
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

    client = ngx_foko_chat_store_pop_slow();
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
    ngx_foko_chat_store_push_slow(client);
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

    client = ngx_foko_chat_store_pop_slow();
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
    ngx_foko_chat_store_push_slow(client);
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
    char  hex[NGX_FOKO_CHAT_OID_SIZE];

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
    char        key[NGX_FOKO_CHAT_LOCK_KEY_LEN];
    bson_t     *filter, *update;
    ngx_int_t   rc;
    bson_oid_t  cid, uid;

    if (ngx_foko_chat_store_oid(channel, &cid) != NGX_OK
        || ngx_foko_chat_store_oid(user, &uid) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    filter = BCON_NEW("channel_id", BCON_OID(&cid),
                      "user_id", BCON_OID(&uid));
    update = BCON_NEW("$max", "{", "seq", BCON_INT64(seq), "}");

    ngx_foko_chat_store_lock_key(key, "read", &cid, &uid);

    rc = ngx_foko_chat_store_update_locked("reads", "reads set", key,
                                           filter, update, 1, err);

    bson_destroy(filter);
    bson_destroy(update);

    return rc;
}


ngx_int_t
ngx_foko_chat_store_reads_of(u_char *user, json_t **reads, u_char *err)
{
    char                  hex[NGX_FOKO_CHAT_OID_SIZE];
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

    client = ngx_foko_chat_store_pop_slow();
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
    ngx_foko_chat_store_push_slow(client);
    bson_destroy(filter);
    bson_destroy(opts);

    return rc;
}
