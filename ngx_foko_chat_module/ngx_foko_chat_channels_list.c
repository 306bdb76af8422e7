
/*
 * Foko chat: the channel list, GET /api/channels.
 *
 * From the shared zone when it holds all of the caller's list; else one
 * task reads MongoDB on the storage pool, and its completion keeps what
 * was read in the zone, so that the next list is served from there.
 */


#include "ngx_foko_chat_channels_int.h"
#include "ngx_foko_chat_cache.h"
#include "ngx_foko_chat_users.h"
#include "ngx_foko_chat_redis.h"
#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_status.h"


typedef struct {
    int64_t                        created;
    json_t                        *channel;
} ngx_foko_chat_channel_sort_t;


static ngx_int_t ngx_foko_chat_channels_from_zone(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx);
static json_t *ngx_foko_chat_channels_zone_list(ngx_foko_chat_shm_ctx_t *shm,
    u_char (*ids)[NGX_FOKO_CHAT_OID_LEN], int64_t *reads, ngx_uint_t n);
static int ngx_libc_cdecl ngx_foko_chat_channels_cmp(const void *one,
    const void *two);
static void ngx_foko_chat_channels_list_run(ngx_foko_chat_channel_op_t *op);
static void ngx_foko_chat_channels_list_keep(ngx_foko_chat_channel_op_t *op,
    ngx_uint_t failed);


/*
 * GET /api/channels: from the zone when it knows the caller's channels,
 * read marks and every channel of them (one host only: with Redis, marks
 * and changes made on other hosts do not reach this zone); else from
 * MongoDB, and what was read is kept in the zone for the next call.
 */

ngx_int_t
ngx_foko_chat_channels_list(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_int_t                    rc;
    ngx_foko_chat_task_t        *task;
    ngx_foko_chat_shm_ctx_t     *shm;
    ngx_foko_chat_main_conf_t   *fmcf;
    ngx_foko_chat_channel_op_t  *op;

    if (!ngx_foko_chat_redis_on()) {
        rc = ngx_foko_chat_channels_from_zone(r, ctx);
        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    ngx_foko_chat_stat_inc(channel_lists_mongo);

    task = ngx_foko_chat_channels_task(r, ctx);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);
    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    op = task->data;
    op->keep = ngx_foko_chat_channels_list_keep;
    op->ring_size = fmcf->history_cache;

    if (shm) {
        op->users_gen = ngx_foko_chat_users_gen(shm);
        op->reads_gen = ngx_foko_chat_users_reads_gen(shm);
        op->cache_gen = ngx_foko_chat_cache_gen(shm);
        op->load_user = (ngx_foko_chat_users_get(shm, op->user, NULL, NULL,
                                                 NULL)
                         == NGX_DECLINED);
    }

    return ngx_foko_chat_channels_start(r, ctx, task,
                                        ngx_foko_chat_channels_list_run);
}


static ngx_int_t
ngx_foko_chat_channels_from_zone(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    json_t                   *list;
    int64_t                  *reads;
    ngx_int_t                 rc;
    ngx_uint_t                n;
    ngx_foko_chat_shm_ctx_t  *shm;
    u_char                  (*ids)[NGX_FOKO_CHAT_OID_LEN];

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    if (shm == NULL) {
        return NGX_DECLINED;
    }

    rc = ngx_foko_chat_users_reads_get(shm, ctx->claims.sub, &ids, &reads,
                                       &n);
    if (rc != NGX_OK) {
        return NGX_DECLINED;
    }

    list = ngx_foko_chat_channels_zone_list(shm, ids, reads, n);
    free(reads);

    if (list == NULL) {
        return NGX_DECLINED;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "foko chat: %ui channels listed from the zone", n);

    ngx_foko_chat_stat_inc(channel_lists_zone);
    ngx_foko_chat_channels_online(list);

    return ngx_foko_chat_json_send(r, NGX_HTTP_OK, list);
}


/* in MongoDB's order: the newest channel first (created, then id) */

static json_t *
ngx_foko_chat_channels_zone_list(ngx_foko_chat_shm_ctx_t *shm,
    u_char (*ids)[NGX_FOKO_CHAT_OID_LEN], int64_t *reads, ngx_uint_t n)
{
    json_t                        *list, *j;
    int64_t                        last;
    ngx_uint_t                     i, got, ok;
    ngx_foko_chat_channel_sort_t  *all;

    list = json_array();
    all = n ? ngx_alloc(n * sizeof(ngx_foko_chat_channel_sort_t),
                        ngx_cycle->log)
            : NULL;

    if (list == NULL || (n && all == NULL)) {
        json_decref(list);
        return NULL;
    }

    for (got = 0; got < n; got++) {
        j = ngx_foko_chat_cache_describe(shm, ids[got], &all[got].created);
        if (j == NULL) {
            break;
        }

        last = json_integer_value(json_object_get(j, "last_seq"));
        all[got].channel = j;

        if (json_object_set_new(j, "unread",
                                json_integer(ngx_max(last - reads[got], 0)))
            != 0)
        {
            got++;
            break;
        }
    }

    ok = (got == n);

    if (ok && n) {
        ngx_qsort(all, n, sizeof(ngx_foko_chat_channel_sort_t),
                  ngx_foko_chat_channels_cmp);
    }

    for (i = 0; i < got; i++) {
        if (!ok) {
            json_decref(all[i].channel);

        } else if (json_array_append_new(list, all[i].channel) != 0) {
            ok = 0;
        }
    }

    if (!ok) {
        json_decref(list);
        list = NULL;
    }

    if (all) {
        ngx_free(all);
    }

    return list;
}


static int ngx_libc_cdecl
ngx_foko_chat_channels_cmp(const void *one, const void *two)
{
    const ngx_foko_chat_channel_sort_t  *a = one, *b = two;

    if (a->created != b->created) {
        return a->created > b->created ? -1 : 1;
    }

    return -ngx_strcmp(json_string_value(json_object_get(a->channel, "id")),
                       json_string_value(json_object_get(b->channel, "id")));
}


/* the pool thread's side: the channels, the read marks, each described */

static void
ngx_foko_chat_channels_list_run(ngx_foko_chat_channel_op_t *op)
{
    json_t      *list, *item;
    ngx_uint_t   i, n;

    if (ngx_foko_chat_store_channels_of(op->user, &op->found, &op->nfound,
                                        op->err)
        != NGX_OK)
    {
        op->rc = NGX_ERROR;
        return;
    }

    n = op->nfound;

    if (ngx_foko_chat_store_reads_of(op->user, &op->reads, op->err)
        != NGX_OK)
    {
        op->rc = NGX_ERROR;
        n = 0;
    }

    list = op->rc == NGX_OK ? json_array() : NULL;
    op->kept = list ? json_array() : NULL;

    for (i = 0; i < n; i++) {
        item = list ? ngx_foko_chat_channels_describe(op, &op->found[i],
                                                      op->reads,
                                                      op->ring_size,
                                                      op->kept)
                    : NULL;

        if (item == NULL || json_array_append_new(list, item) != 0) {
            json_decref(list);
            list = NULL;
        }
    }

    if (op->rc == NGX_OK && list == NULL) {
        op->rc = NGX_ERROR;
    }

    op->result = list;

    if (list && op->load_user) {
        /* the account too, for the zone to know the user */
        ngx_memcpy(op->account.id, op->user, sizeof(op->account.id));
        op->user_loaded = (ngx_foko_chat_store_user_by_id(&op->account,
                                                          op->err)
                           == NGX_OK);
        op->err[0] = '\0';
    }
}


/*
 * On the event loop, after a list from MongoDB: the caller's read marks
 * into the zone, and the channels it could not list, with their latest
 * messages (as a post's membership load does), so that the next list is
 * served from the zone.  Not with Redis, whose lists read MongoDB.
 */

static void
ngx_foko_chat_channels_list_keep(ngx_foko_chat_channel_op_t *op,
    ngx_uint_t failed)
{
    json_t                       *kept, *page, *held;
    int64_t                       last, created;
    ngx_uint_t                    i;
    ngx_foko_chat_shm_ctx_t      *shm;
    ngx_foko_chat_channel_doc_t  *ch;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    if (shm && !failed && op->rc == NGX_OK && op->result
        && json_array_size(op->kept) == op->nfound
        && !ngx_foko_chat_redis_on())
    {
        if (op->user_loaded && !op->account.invited) {
            (void) ngx_foko_chat_users_put(shm, op->user, op->found,
                                           op->nfound, &op->account,
                                           op->users_gen);
        }

        ngx_foko_chat_users_reads_put(shm, op->user, op->found, op->nfound,
                                      op->reads, op->reads_gen);

        for (i = 0; i < op->nfound; i++) {
            ch = &op->found[i];

            /* also one cached with a member's username not known then */

            held = ngx_foko_chat_cache_describe(shm, ch->id, &created);

            if (held) {
                json_decref(held);
                continue;
            }

            kept = json_array_get(op->kept, i);
            page = json_array_get(kept, 1);
            last = json_integer_value(json_object_get(
                       json_array_get(page, json_array_size(page) - 1),
                       "seq"));

            if (ngx_foko_chat_seq_load(shm, ch->id, last) == NGX_OK) {
                (void) ngx_foko_chat_cache_put_channel(shm, ch,
                                                json_array_get(kept, 0),
                                                page, op->ring_size,
                                                op->cache_gen);
            }
        }
    }

    for (i = 0; op->found && i < op->nfound; i++) {
        ngx_foko_chat_store_channel_doc_free(&op->found[i]);
    }

    free(op->found);
    op->found = NULL;
    json_decref(op->reads);
    op->reads = NULL;
    json_decref(op->kept);
    op->kept = NULL;
}
