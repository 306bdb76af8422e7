
/*
 * Foko chat: the MongoDB store.  Every function that talks to MongoDB runs
 * on a pool thread; the rest runs on the event loop.
 */


#ifndef _NGX_FOKO_CHAT_STORE_H_INCLUDED_
#define _NGX_FOKO_CHAT_STORE_H_INCLUDED_


#include <mongoc/mongoc.h>
#include <jansson.h>

#include "ngx_foko_chat.h"
#include "ngx_foko_chat_task.h"


/* server selection and connection bounds unless the URI sets them */
#define NGX_FOKO_CHAT_MONGO_SELECT_MS     2000
#define NGX_FOKO_CHAT_MONGO_CONNECT_MS    2000

#define NGX_FOKO_CHAT_MONGO_PROBE_MS      5000

#define NGX_FOKO_CHAT_ERR_LEN             256


char *ngx_foko_chat_store_check_uri(ngx_conf_t *cf, ngx_str_t *uri);
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

/* thread side: a client of this worker's pool and a collection of ours */
mongoc_client_t *ngx_foko_chat_store_pop(void);
const char *ngx_foko_chat_store_db(void);
void ngx_foko_chat_store_push(mongoc_client_t *client);
mongoc_collection_t *ngx_foko_chat_store_collection(mongoc_client_t *client,
    const char *name);
void ngx_foko_chat_store_error(u_char *err, const char *what,
    bson_error_t *error);


/* users: ngx_foko_chat_store_users.c */

#define NGX_FOKO_CHAT_EMAIL_MAX        254
#define NGX_FOKO_CHAT_USERNAME_MAX     128     /* bytes, up to 32 chars */
#define NGX_FOKO_CHAT_USERS_PAGE       20

typedef struct {
    u_char                     id[25];
    u_char                     email[NGX_FOKO_CHAT_EMAIL_MAX + 1];
    u_char                     username[NGX_FOKO_CHAT_USERNAME_MAX + 1];
    u_char                     hash[160];
    int64_t                    ver;          /* password version */
    int64_t                    created;      /* ms since the epoch */
    unsigned                   invited:1;
} ngx_foko_chat_user_t;

/*
 * Thread side.  NGX_OK; NGX_DECLINED: no such user, or for insert an email
 * that is taken; NGX_ERROR: storage failed, with a message in err.
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

/* json of a user as others may see it, or with the email for its owner */
json_t *ngx_foko_chat_user_json(ngx_foko_chat_user_t *user,
    ngx_uint_t own);


/* event loop side: record a probe's outcome in the shared zone */
void ngx_foko_chat_store_report(ngx_int_t rc, u_char *err, ngx_log_t *log);


#endif /* _NGX_FOKO_CHAT_STORE_H_INCLUDED_ */
