
/*
 * Foko chat: the "users" collection.  Runs on pool threads only.
 *
 * A user document: { _id, email (lowercased, unique), username,
 * username_key (the username case-folded, unique; see
 * ngx_foko_chat_store_username_key()), hash, ver (password version:
 * bumped by every reset, so that a reset token works once), created,
 * invited (an account made by an invitation, with no password until its
 * owner signs up) }.  Also the usernames of ids and the accounts that
 * invitations make.
 *
 * An invited account has no username_key: its name, the email's local
 * part, is only a placeholder until its owner accepts and picks one.  The
 * same holds for accounts stored before the key existed, until
 * ngx_foko_chat_store_users_backfill() gives them one.
 */


#include "ngx_foko_chat_store_int.h"


/*
 * Set by whichever thread first creates the indexes; an insert never runs
 * before the unique email index exists.
 */
static volatile ngx_uint_t  ngx_foko_chat_users_indexed;

/* the same for the index that keeps invited accounts single */
static volatile ngx_uint_t  ngx_foko_chat_invite_indexed;

/* set once this worker's backfill has keyed every old account it could */
static volatile ngx_uint_t  ngx_foko_chat_users_backfilled;

/*
 * Where the next batch of the backfill starts, and the accounts left
 * unkeyed so far; only the one indexes task of a worker touches them.
 */
static bson_oid_t           ngx_foko_chat_users_backfill_after;
static ngx_uint_t           ngx_foko_chat_users_backfill_resume;
static ngx_uint_t           ngx_foko_chat_users_backfill_skipped;


static ngx_uint_t ngx_foko_chat_store_users_has_index(const char *name);
static ngx_int_t ngx_foko_chat_store_user_find(bson_t *filter,
    ngx_foko_chat_user_t *user, u_char *err);
static ngx_int_t ngx_foko_chat_store_users_page(bson_t *filter,
    bson_t *opts, ngx_foko_chat_user_t *users, ngx_uint_t from,
    ngx_uint_t max, ngx_uint_t *got, u_char *err);
static void ngx_foko_chat_store_user_read(const bson_t *doc,
    ngx_foko_chat_user_t *user);
static void ngx_foko_chat_store_copy(const bson_t *doc, const char *key,
    u_char *dst, size_t size);
static void ngx_foko_chat_store_username_key(u_char *name, u_char *key);
static ngx_int_t ngx_foko_chat_store_user_taken(ngx_foko_chat_user_t *user,
    u_char *err);
static ngx_uint_t ngx_foko_chat_store_key_taken(mongoc_collection_t *coll,
    u_char *key, bson_oid_t *self);
static ngx_int_t ngx_foko_chat_store_backfill_rc(bson_error_t *error);
static ngx_int_t ngx_foko_chat_store_old_name_taken(u_char *name,
    u_char *err);
static u_char *ngx_foko_chat_store_literal(u_char *text, ngx_uint_t whole);


ngx_int_t
ngx_foko_chat_store_users_indexes(u_char *err)
{
    bool              ok;
    bson_t           *cmd, *key;
    ngx_int_t         rc;
    bson_error_t      error;
    mongoc_client_t  *client;

    cmd = BCON_NEW("createIndexes", BCON_UTF8("users"),
                   "indexes", "[",
                       "{", "key", "{", "email", BCON_INT32(1), "}",
                            "name", BCON_UTF8("email_unique"),
                            "unique", BCON_BOOL(true), "}",
                       "{", "key", "{", "username", BCON_INT32(1), "}",
                            "name", BCON_UTF8("username"), "}",
                   "]");

    client = ngx_foko_chat_store_pop();

    ok = mongoc_client_write_command_with_opts(client,
                                               ngx_foko_chat_store_db(),
                                               cmd, NULL, NULL, &error);

    ngx_foko_chat_store_push(client);
    bson_destroy(cmd);

    if (!ok && !ngx_foko_chat_store_users_has_index("email_unique")) {
        ngx_foko_chat_store_error(err, "users indexes", &error);
        return (error.domain == MONGOC_ERROR_SERVER) ? NGX_ERROR : NGX_AGAIN;
    }

    /* only accounts with a key are in it: see the top of the file */

    key = BCON_NEW("username_key", BCON_INT32(1));
    client = ngx_foko_chat_store_pop();

    rc = ngx_foko_chat_store_index(client, "users", "username_key_unique",
                                   "username_key", key, 1, "username_key",
                                   err);

    ngx_foko_chat_store_push(client);
    bson_destroy(key);

    if (rc != NGX_OK) {
        return rc;
    }

    ngx_foko_chat_users_indexed = 1;

    return NGX_OK;
}


/*
 * Another worker creating the same indexes at the same moment may make
 * ours fail (some servers even drop the connection): what counts is that
 * the index exists.
 */

static ngx_uint_t
ngx_foko_chat_store_users_has_index(const char *name)
{
    bson_iter_t           it;
    ngx_uint_t            found;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "users");

    cursor = mongoc_collection_find_indexes_with_opts(coll, NULL);
    found = 0;

    while (!found && mongoc_cursor_next(cursor, &doc)) {
        found = bson_iter_init_find(&it, doc, "name")
                && BSON_ITER_HOLDS_UTF8(&it)
                && ngx_strcmp(bson_iter_utf8(&it, NULL), name) == 0;
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);

    return found;
}


ngx_int_t
ngx_foko_chat_store_user_insert(ngx_foko_chat_user_t *user, u_char *err)
{
    bool                   ok;
    u_char                 key[NGX_FOKO_CHAT_USERNAME_MAX + 1];
    bson_t                *doc;
    ngx_int_t              rc;
    bson_oid_t             oid;
    bson_error_t           error;
    mongoc_client_t       *client;
    mongoc_collection_t   *coll;

    if (!ngx_foko_chat_users_indexed
        && ngx_foko_chat_store_users_indexes(err) != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = ngx_foko_chat_store_old_name_taken(user->username, err);

    if (rc == NGX_BUSY) {
        return ngx_foko_chat_store_user_taken(user, err);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    bson_oid_init(&oid, NULL);
    ngx_foko_chat_store_username_key(user->username, key);

    doc = BCON_NEW("_id", BCON_OID(&oid),
                   "email", BCON_UTF8((char *) user->email),
                   "username", BCON_UTF8((char *) user->username),
                   "username_key", BCON_UTF8((char *) key),
                   "hash", BCON_UTF8((char *) user->hash),
                   "ver", BCON_INT64(user->ver),
                   "created", BCON_DATE_TIME(user->created));

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "users");

    ok = mongoc_collection_insert_one(coll, doc, NULL, NULL, &error);
    bson_destroy(doc);

    /*
     * A taken email, by an account or an invitation, is a conflict: an
     * invited account is claimed only through its invitation link, which
     * proves the email (ngx_foko_chat_store_user_set_password()).
     */

    if (ok) {
        bson_oid_to_string(&oid, (char *) user->id);
        rc = NGX_OK;

    } else if (error.code == NGX_FOKO_CHAT_DUPLICATE_KEY) {
        rc = NGX_DECLINED;

    } else {
        ngx_foko_chat_store_error(err, "users insert", &error);
        rc = NGX_ERROR;
    }

    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);

    if (rc == NGX_DECLINED) {
        rc = ngx_foko_chat_store_user_taken(user, err);
    }

    return rc;
}


/*
 * Which unique key an insert collided on: servers word the duplicate key
 * error differently, so the email is looked up.  A taken email answers
 * first, as it did before usernames were unique.
 */

static ngx_int_t
ngx_foko_chat_store_user_taken(ngx_foko_chat_user_t *user, u_char *err)
{
    ngx_int_t             rc;
    ngx_foko_chat_user_t  other;

    ngx_memzero(&other, sizeof(ngx_foko_chat_user_t));
    ngx_memcpy(other.email, user->email, sizeof(other.email));

    rc = ngx_foko_chat_store_user_by_email(&other, err);

    if (rc == NGX_OK) {
        return NGX_DECLINED;
    }

    return (rc == NGX_DECLINED) ? NGX_BUSY : rc;
}


/* whether an account other than "self" has the username key */

static ngx_uint_t
ngx_foko_chat_store_key_taken(mongoc_collection_t *coll, u_char *key,
    bson_oid_t *self)
{
    bson_t        *filter;
    int64_t        n;
    bson_error_t   error;

    filter = BCON_NEW("username_key", BCON_UTF8((char *) key),
                      "_id", "{", "$ne", BCON_OID(self), "}");

    n = mongoc_collection_count_documents(coll, filter, NULL, NULL, NULL,
                                          &error);
    bson_destroy(filter);

    return n > 0;
}


/*
 * The key that makes usernames unique: ASCII letters folded to lowercase,
 * every other byte kept, so "Alice" and "ALICE" are one name while one
 * in another normalization form, or with a fullwidth letter, is another.
 */

static void
ngx_foko_chat_store_username_key(u_char *name, u_char *key)
{
    u_char  *p;

    for (p = name; *p; p++) {
        *key++ = ngx_tolower(*p);
    }

    *key = '\0';
}


ngx_int_t
ngx_foko_chat_store_user_by_email(ngx_foko_chat_user_t *user, u_char *err)
{
    bson_t     *filter;
    ngx_int_t   rc;

    filter = BCON_NEW("email", BCON_UTF8((char *) user->email));
    rc = ngx_foko_chat_store_user_find(filter, user, err);
    bson_destroy(filter);

    return rc;
}


ngx_int_t
ngx_foko_chat_store_user_by_id(ngx_foko_chat_user_t *user, u_char *err)
{
    bson_t      *filter;
    ngx_int_t    rc;
    bson_oid_t   oid;

    if (!bson_oid_is_valid((char *) user->id, NGX_FOKO_CHAT_OID_LEN)) {
        return NGX_DECLINED;
    }

    bson_oid_init_from_string(&oid, (char *) user->id);

    filter = BCON_NEW("_id", BCON_OID(&oid));
    rc = ngx_foko_chat_store_user_find(filter, user, err);
    bson_destroy(filter);

    return rc;
}


/*
 * Sets user->hash (and user->username, if given: an invitation accepted)
 * if the stored password version still is user->ver, and bumps the
 * version: a reset or invitation token carries the version it was issued
 * for, so it works once, and a reset voids all older tokens.
 */

ngx_int_t
ngx_foko_chat_store_user_set_password(ngx_foko_chat_user_t *user,
    u_char *err)
{
    bool                  ok;
    u_char                key[NGX_FOKO_CHAT_USERNAME_MAX + 1];
    bson_t               *query, *update, reply, doc;
    uint32_t              len;
    bson_oid_t            oid;
    bson_iter_t           it;
    const uint8_t        *data;
    bson_error_t          error;
    ngx_int_t             rc;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    if (!bson_oid_is_valid((char *) user->id, NGX_FOKO_CHAT_OID_LEN)) {
        return NGX_DECLINED;
    }

    if (user->username[0]) {
        rc = ngx_foko_chat_store_old_name_taken(user->username, err);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    bson_oid_init_from_string(&oid, (char *) user->id);

    query = BCON_NEW("_id", BCON_OID(&oid), "ver", BCON_INT64(user->ver));

    if (user->username[0]) {
        ngx_foko_chat_store_username_key(user->username, key);

        update = BCON_NEW("$set", "{",
                              "hash", BCON_UTF8((char *) user->hash),
                              "username", BCON_UTF8((char *) user->username),
                              "username_key", BCON_UTF8((char *) key),
                              "ver", BCON_INT64(user->ver + 1),
                          "}",
                          "$unset", "{", "invited", BCON_UTF8(""), "}");

    } else {
        update = BCON_NEW("$set", "{",
                              "hash", BCON_UTF8((char *) user->hash),
                              "ver", BCON_INT64(user->ver + 1),
                          "}",
                          "$unset", "{", "invited", BCON_UTF8(""), "}");
    }

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "users");

    ok = mongoc_collection_find_and_modify(coll, query, NULL, update, NULL,
                                           false, false, true, &reply,
                                           &error);
    bson_destroy(query);
    bson_destroy(update);

    rc = NGX_DECLINED;

    /*
     * FerretDB answers a duplicate key here with an internal error instead
     * of 11000: whether another account has the key tells them apart
     */

    if (!ok && user->username[0]
        && (error.code == NGX_FOKO_CHAT_DUPLICATE_KEY
            || ngx_foko_chat_store_key_taken(coll, key, &oid)))
    {
        rc = NGX_BUSY;

    } else if (!ok) {
        ngx_foko_chat_store_error(err, "users set password", &error);
        rc = NGX_ERROR;

    } else if (bson_iter_init_find(&it, &reply, "value")
               && BSON_ITER_HOLDS_DOCUMENT(&it))
    {
        bson_iter_document(&it, &len, &data);

        if (bson_init_static(&doc, data, len)) {
            ngx_foko_chat_store_user_read(&doc, user);
            rc = NGX_OK;
        }
    }

    bson_destroy(&reply);
    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);

    return rc;
}


/* users whose name starts with "prefix", case-insensitively, but "self" */

ngx_int_t
ngx_foko_chat_store_user_search(u_char *prefix, u_char *self, json_t **found,
    u_char *err)
{
    u_char                *pattern;
    bson_t                *filter, *opts;
    json_t                *list, *item;
    bson_oid_t             oid;
    bson_error_t           error;
    const bson_t          *doc;
    ngx_int_t              rc;
    mongoc_cursor_t       *cursor;
    mongoc_client_t       *client;
    mongoc_collection_t   *coll;
    ngx_foko_chat_user_t   user;

    /* the prefix is matched literally: regex metacharacters are escaped */

    pattern = ngx_foko_chat_store_literal(prefix, 0);
    if (pattern == NULL) {
        ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
        return NGX_ERROR;
    }

    bson_oid_init_from_string(&oid, (char *) self);

    filter = BCON_NEW("username", "{", "$regex", BCON_UTF8((char *) pattern),
                                       "$options", BCON_UTF8("i"), "}",
                      "invited", "{", "$exists", BCON_BOOL(false), "}",
                      "_id", "{", "$ne", BCON_OID(&oid), "}");
    opts = BCON_NEW("limit", BCON_INT64(NGX_FOKO_CHAT_USERS_PAGE),
                    "sort", "{", "username", BCON_INT32(1), "}",
                    "projection", "{", "username", BCON_INT32(1), "}");
    free(pattern);

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "users");

    cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

    list = json_array();
    rc = NGX_OK;

    while (list && mongoc_cursor_next(cursor, &doc)) {
        ngx_memzero(&user, sizeof(ngx_foko_chat_user_t));
        ngx_foko_chat_store_user_read(doc, &user);

        item = ngx_foko_chat_user_json(&user, 0);
        if (item == NULL || json_array_append_new(list, item) != 0) {
            json_decref(list);
            list = NULL;
        }
    }

    if (mongoc_cursor_error(cursor, &error)) {
        ngx_foko_chat_store_error(err, "users search", &error);
        rc = NGX_ERROR;

    } else if (list == NULL) {
        ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
        rc = NGX_ERROR;
    }

    if (rc != NGX_OK) {
        json_decref(list);
        list = NULL;
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(filter);
    bson_destroy(opts);

    *found = list;

    return rc;
}


json_t *
ngx_foko_chat_user_json(ngx_foko_chat_user_t *user, ngx_uint_t own)
{
    json_t  *j;

    j = json_pack("{s:s,s:s}", "id", (char *) user->id,
                  "username", (char *) user->username);

    if (j && own) {
        if (json_object_set_new(j, "email",
                                json_string((char *) user->email))
            != 0)
        {
            json_decref(j);
            return NULL;
        }
    }

    return j;
}


static ngx_int_t
ngx_foko_chat_store_user_find(bson_t *filter, ngx_foko_chat_user_t *user,
    u_char *err)
{
    bson_error_t          error;
    ngx_int_t             rc;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "users");

    cursor = mongoc_collection_find_with_opts(coll, filter, NULL, NULL);

    if (mongoc_cursor_next(cursor, &doc)) {
        ngx_foko_chat_store_user_read(doc, user);
        rc = NGX_OK;

    } else if (mongoc_cursor_error(cursor, &error)) {
        ngx_foko_chat_store_error(err, "users find", &error);
        rc = NGX_ERROR;

    } else {
        rc = NGX_DECLINED;
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);

    return rc;
}


/*
 * Pages by _id rather than one cursor's batches: FerretDB 1.24 was seen
 * losing a cursor between batches.
 */

ngx_int_t
ngx_foko_chat_store_users_all(ngx_uint_t max, ngx_foko_chat_user_t **found,
    ngx_uint_t *n, u_char *err)
{
    bson_t                *filter, *opts;
    ngx_int_t              rc;
    ngx_uint_t             got;
    bson_oid_t             last;
    ngx_foko_chat_user_t  *users;

    *found = NULL;
    *n = 0;

    users = calloc(ngx_max(max, 1), sizeof(ngx_foko_chat_user_t));
    if (users == NULL) {
        ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
        return NGX_ERROR;
    }

    opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}",
                    "projection", "{", "hash", BCON_INT32(0), "}",
                    "limit", BCON_INT64(NGX_FOKO_CHAT_USERS_BATCH),
                    "batchSize", BCON_INT64(NGX_FOKO_CHAT_USERS_BATCH));
    rc = NGX_OK;

    do {
        if (*n == 0) {
            filter = bson_new();

        } else {
            bson_oid_init_from_string(&last, (char *) users[*n - 1].id);
            filter = BCON_NEW("_id", "{", "$gt", BCON_OID(&last), "}");
        }

        rc = ngx_foko_chat_store_users_page(filter, opts, users, *n, max,
                                            &got, err);
        bson_destroy(filter);

        *n += got;

    } while (rc == NGX_OK && got == NGX_FOKO_CHAT_USERS_BATCH && *n < max);

    bson_destroy(opts);

    if (rc != NGX_OK || *n == 0) {
        free(users);
        *n = 0;
        return rc;
    }

    *found = users;

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_store_users_page(bson_t *filter, bson_t *opts,
    ngx_foko_chat_user_t *users, ngx_uint_t from, ngx_uint_t max,
    ngx_uint_t *got, u_char *err)
{
    ngx_int_t              rc;
    bson_error_t           error;
    const bson_t          *doc;
    mongoc_cursor_t       *cursor;
    mongoc_client_t       *client;
    mongoc_collection_t   *coll;

    *got = 0;

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "users");

    cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

    while (from + *got < max && mongoc_cursor_next(cursor, &doc)) {
        ngx_foko_chat_store_user_read(doc, &users[from + *got]);
        (*got)++;
    }

    rc = NGX_OK;

    if (mongoc_cursor_error(cursor, &error)) {
        ngx_foko_chat_store_error(err, "users all", &error);
        rc = NGX_ERROR;
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);

    return rc;
}


static void
ngx_foko_chat_store_user_read(const bson_t *doc, ngx_foko_chat_user_t *user)
{
    bson_iter_t  it;

    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_OID(&it)) {
        bson_oid_to_string(bson_iter_oid(&it), (char *) user->id);
    }

    ngx_foko_chat_store_copy(doc, "email", user->email, sizeof(user->email));
    ngx_foko_chat_store_copy(doc, "username", user->username,
                             sizeof(user->username));
    ngx_foko_chat_store_copy(doc, "hash", user->hash, sizeof(user->hash));

    if (bson_iter_init_find(&it, doc, "ver")) {
        user->ver = bson_iter_as_int64(&it);
    }

    if (bson_iter_init_find(&it, doc, "created")
        && BSON_ITER_HOLDS_DATE_TIME(&it))
    {
        user->created = bson_iter_date_time(&it);
    }

    user->invited = bson_iter_init_find(&it, doc, "invited")
                    && bson_iter_as_bool(&it);
}


static void
ngx_foko_chat_store_copy(const bson_t *doc, const char *key, u_char *dst,
    size_t size)
{
    uint32_t     len;
    const char  *s;
    bson_iter_t  it;

    dst[0] = '\0';

    if (!bson_iter_init_find(&it, doc, key) || !BSON_ITER_HOLDS_UTF8(&it)) {
        return;
    }

    s = bson_iter_utf8(&it, &len);

    if (len >= size) {
        len = size - 1;
    }

    ngx_memcpy(dst, s, len);
    dst[len] = '\0';
}


/*
 * Gives a username_key to the accounts stored before it existed, oldest
 * first: of two that fold to the same key the older keeps its name as a
 * unique handle, and the younger stays without a key (its name is not
 * reserved) and is counted in err.  Runs after the indexes, in every
 * worker; a second run finds nothing left to do.  A run keys at most
 * NGX_FOKO_CHAT_BACKFILL_BATCH accounts and answers NGX_BUSY while more
 * are left, so that a pool thread is never held for minutes and a stop
 * waits for one batch at most; the next run goes on after the last _id.
 */

ngx_int_t
ngx_foko_chat_store_users_backfill(u_char *err)
{
    u_char                name[NGX_FOKO_CHAT_USERNAME_MAX + 1];
    u_char                key[NGX_FOKO_CHAT_USERNAME_MAX + 1];
    bson_t               *filter, *opts, *query, *update;
    ngx_int_t             rc;
    ngx_uint_t            seen;
    bson_error_t          error;
    const bson_t         *doc;
    mongoc_cursor_t      *cursor;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;
    bson_oid_t            oid;
    bson_iter_t           it;

    filter = BCON_NEW("username_key", "{", "$exists", BCON_BOOL(false), "}",
                      "invited", "{", "$exists", BCON_BOOL(false), "}");

    if (ngx_foko_chat_users_backfill_resume) {
        BCON_APPEND(filter, "_id", "{",
                    "$gt", BCON_OID(&ngx_foko_chat_users_backfill_after),
                    "}");
    }

    opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}",
                    "projection", "{", "username", BCON_INT32(1), "}",
                    "limit", BCON_INT64(NGX_FOKO_CHAT_BACKFILL_BATCH));

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "users");
    cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

    rc = NGX_OK;
    seen = 0;

    while (rc == NGX_OK && mongoc_cursor_next(cursor, &doc)) {
        seen++;

        if (!bson_iter_init_find(&it, doc, "_id")
            || !BSON_ITER_HOLDS_OID(&it))
        {
            continue;
        }

        bson_oid_copy(bson_iter_oid(&it), &oid);
        ngx_foko_chat_store_copy(doc, "username", name, sizeof(name));

        if (name[0] == '\0') {
            bson_oid_copy(&oid, &ngx_foko_chat_users_backfill_after);
            ngx_foko_chat_users_backfill_resume = 1;
            continue;
        }

        ngx_foko_chat_store_username_key(name, key);

        query = BCON_NEW("_id", BCON_OID(&oid),
                         "username_key", "{", "$exists", BCON_BOOL(false),
                         "}");
        update = BCON_NEW("$set", "{", "username_key",
                          BCON_UTF8((char *) key), "}");

        if (!mongoc_collection_update_one(coll, query, update, NULL, NULL,
                                          &error))
        {
            /* FerretDB: see ngx_foko_chat_store_user_set_password() */

            if (error.code == NGX_FOKO_CHAT_DUPLICATE_KEY
                || ngx_foko_chat_store_key_taken(coll, key, &oid))
            {
                ngx_foko_chat_users_backfill_skipped++;

            } else {
                ngx_foko_chat_store_error(err, "users backfill", &error);
                rc = ngx_foko_chat_store_backfill_rc(&error);
            }
        }

        bson_destroy(query);
        bson_destroy(update);

        if (rc == NGX_OK) {
            bson_oid_copy(&oid, &ngx_foko_chat_users_backfill_after);
            ngx_foko_chat_users_backfill_resume = 1;
        }
    }

    if (rc == NGX_OK && mongoc_cursor_error(cursor, &error)) {
        ngx_foko_chat_store_error(err, "users backfill", &error);
        rc = ngx_foko_chat_store_backfill_rc(&error);
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(filter);
    bson_destroy(opts);

    if (rc == NGX_OK && seen == NGX_FOKO_CHAT_BACKFILL_BATCH) {
        return NGX_BUSY;
    }

    if (rc == NGX_OK) {
        ngx_foko_chat_users_backfilled = 1;
    }

    if (rc == NGX_OK && ngx_foko_chat_users_backfill_skipped) {
        (void) ngx_snprintf(err, NGX_FOKO_CHAT_ERR_LEN - 1,
                            "users backfill: %ui accounts share a "
                            "username with an older one, left unkeyed%Z",
                            ngx_foko_chat_users_backfill_skipped);
        rc = NGX_DECLINED;
    }

    return rc;
}


/* a refusal by the server is NGX_ERROR, a slow or lost one NGX_AGAIN */

static ngx_int_t
ngx_foko_chat_store_backfill_rc(bson_error_t *error)
{
    return (error->domain == MONGOC_ERROR_SERVER) ? NGX_ERROR : NGX_AGAIN;
}


/*
 * Until this worker's backfill is done, an account stored before
 * usernames were unique may hold a name without its key, which the
 * unique index does not see: a name that folds to it is taken.  The
 * regular expression folds more than ASCII, so meanwhile a name that
 * differs from an old one only in another letter's case is refused too.
 */

static ngx_int_t
ngx_foko_chat_store_old_name_taken(u_char *name, u_char *err)
{
    u_char               *pattern;
    bson_t               *filter;
    int64_t               n;
    bson_error_t          error;
    mongoc_client_t      *client;
    mongoc_collection_t  *coll;

    if (ngx_foko_chat_users_backfilled) {
        return NGX_OK;
    }

    pattern = ngx_foko_chat_store_literal(name, 1);
    if (pattern == NULL) {
        ngx_cpystrn(err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
        return NGX_ERROR;
    }

    filter = BCON_NEW("username", "{", "$regex", BCON_UTF8((char *) pattern),
                                       "$options", BCON_UTF8("i"), "}",
                      "username_key", "{", "$exists", BCON_BOOL(false), "}",
                      "invited", "{", "$exists", BCON_BOOL(false), "}");
    free(pattern);

    client = ngx_foko_chat_store_pop();
    coll = ngx_foko_chat_store_collection(client, "users");

    n = mongoc_collection_count_documents(coll, filter, NULL, NULL, NULL,
                                          &error);

    mongoc_collection_destroy(coll);
    ngx_foko_chat_store_push(client);
    bson_destroy(filter);

    if (n < 0) {
        ngx_foko_chat_store_error(err, "users old names", &error);
        return NGX_ERROR;
    }

    return (n > 0) ? NGX_BUSY : NGX_OK;
}


/* "^text" (and "$" if whole) with regex metacharacters escaped; malloc()ed */

static u_char *
ngx_foko_chat_store_literal(u_char *text, ngx_uint_t whole)
{
    u_char  *p, *q, *pattern;

    pattern = malloc(2 * ngx_strlen(text) + 3);
    if (pattern == NULL) {
        return NULL;
    }

    q = pattern;
    *q++ = '^';

    for (p = text; *p; p++) {
        if (ngx_strchr("\\^$.|?*+()[]{}", *p)) {
            *q++ = '\\';
        }

        *q++ = *p;
    }

    if (whole) {
        *q++ = '$';
    }

    *q = '\0';

    return pattern;
}


/* ids that are no user (or no id) are simply not in *names */

ngx_int_t
ngx_foko_chat_store_usernames(u_char (*ids)[NGX_FOKO_CHAT_OID_SIZE],
    ngx_uint_t n,
    json_t **names, u_char *err)
{
    char                  hex[NGX_FOKO_CHAT_OID_SIZE], index[16];
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
