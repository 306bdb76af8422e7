
/*
 * Foko chat: warming the shared zone up from MongoDB at start.
 *
 * A fresh zone is filled in the background with the newest channels:
 * members, the latest messages of each and its seq counter.  Nothing
 * waits for it: a channel that is not cached yet is loaded when a
 * request first needs it, and what the warm-up brings for a
 * channel that got cached meanwhile is dropped.  A reload keeps the zone,
 * so this runs once per zone, by whichever worker first finds MongoDB up.
 */


#include "ngx_foko_chat_rehydrate.h"
#include "ngx_foko_chat_cache.h"
#include "ngx_foko_chat_jwt.h"
#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_store.h"
#include "ngx_foko_chat_task.h"


typedef struct {
    ngx_foko_chat_channel_doc_t   *channels;
    ngx_uint_t                     n;
    json_t                       **latest;
    ngx_uint_t                     ring_size;
    ngx_atomic_uint_t              cache_gen;
    ngx_int_t                      rc;
    u_char                         err[NGX_FOKO_CHAT_ERR_LEN];
} ngx_foko_chat_rehydrate_t;


static void ngx_foko_chat_rehydrate_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_rehydrate_done(ngx_foko_chat_task_t *task);


void
ngx_foko_chat_rehydrate(ngx_log_t *log)
{
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_shm_ctx_t    *shm;
    ngx_foko_chat_rehydrate_t  *rh;
    ngx_foko_chat_main_conf_t  *fmcf;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    if (shm == NULL || shm->sh->rehydrated
        || !ngx_atomic_cmp_set(&shm->sh->rehydrated, 0, 1))
    {
        return;
    }

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_rehydrate_t), log);
    if (task == NULL) {
        shm->sh->rehydrated = 0;
        return;
    }

    rh = task->data;
    rh->ring_size = fmcf->history_cache;
    rh->cache_gen = ngx_foko_chat_cache_gen(shm);

    task->run = ngx_foko_chat_rehydrate_run;
    task->done = ngx_foko_chat_rehydrate_done;

    if (ngx_foko_chat_task_post(task, fmcf->storage_pool.pool) != NGX_OK) {
        ngx_foko_chat_task_free(task);
        shm->sh->rehydrated = 0;
    }
}


static void
ngx_foko_chat_rehydrate_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_rehydrate_t  *rh = task->data;

    ngx_uint_t                    i, more;
    ngx_foko_chat_channel_doc_t  *ch;

    rh->rc = ngx_foko_chat_store_channels_recent(
                 NGX_FOKO_CHAT_REHYDRATE_CHANNELS, &rh->channels, &rh->n,
                 rh->err);

    if (rh->rc != NGX_OK || rh->n == 0) {
        return;
    }

    rh->latest = calloc(rh->n, sizeof(json_t *));

    if (rh->latest == NULL) {
        rh->rc = NGX_ERROR;
        ngx_cpystrn(rh->err, (u_char *) "no memory", NGX_FOKO_CHAT_ERR_LEN);
        return;
    }

    for (i = 0; i < rh->n; i++) {
        ch = &rh->channels[i];

        if (ngx_foko_chat_store_messages_page(ch->id, 0, -1, -1,
                                              ngx_max(rh->ring_size, 1),
                                              &rh->latest[i], &more, rh->err)
            != NGX_OK)
        {
            rh->rc = NGX_ERROR;
            return;
        }
    }
}


static ngx_int_t
ngx_foko_chat_rehydrate_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_rehydrate_t  *rh = task->data;

    json_t                   *last;
    int64_t                   seq;
    ngx_uint_t                i, loaded, member;
    ngx_foko_chat_shm_ctx_t  *shm;

    static u_char             nobody[NGX_FOKO_CHAT_OID_LEN + 1];

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);
    loaded = 0;

    if (task->failed || rh->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, task->log, 0,
                      "foko chat: the shared zone is not warmed up: %s",
                      task->failed ? (u_char *) "the thread pool is full"
                                   : rh->err);

        /* the next worker to find MongoDB up tries again */
        shm->sh->rehydrated = 0;
        goto done;
    }

    for (i = 0; i < rh->n; i++) {
        last = json_array_get(rh->latest[i],
                              json_array_size(rh->latest[i]) - 1);
        seq = last ? json_integer_value(json_object_get(last, "seq")) : 0;

        if (ngx_foko_chat_seq_load(shm, rh->channels[i].id, seq) != NGX_OK) {
            break;
        }

        if (ngx_foko_chat_cache_member(shm, rh->channels[i].id, nobody,
                                       &member)
            == NGX_OK)
        {
            /* cached meanwhile, from fresher data */
            continue;
        }

        if (ngx_foko_chat_cache_put_channel(shm, &rh->channels[i],
                                            rh->ring_size
                                            ? rh->latest[i] : NULL,
                                            rh->ring_size, rh->cache_gen)
            != NGX_OK)
        {
            /* the zone is full, or channels changed meanwhile */
            break;
        }

        loaded++;
    }

    ngx_log_error(NGX_LOG_NOTICE, task->log, 0,
                  "foko chat: the shared zone is warmed up with %ui of the "
                  "newest channels", loaded);

done:

    for (i = 0; i < rh->n; i++) {
        ngx_foko_chat_store_channel_doc_free(&rh->channels[i]);

        if (rh->latest) {
            json_decref(rh->latest[i]);
        }
    }

    free(rh->channels);
    free(rh->latest);

    return NGX_OK;
}
