
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
#include "ngx_foko_chat_users.h"


/* a user's channels: ids only, as ngx_foko_chat_users_put() takes them */
typedef struct {
    ngx_foko_chat_channel_doc_t   *found;
    ngx_uint_t                     n;
} ngx_foko_chat_rehydrate_ids_t;


/* one membership, sorted by user */
typedef struct {
    u_char                        *user;
    ngx_uint_t                     channel;
} ngx_foko_chat_rehydrate_pair_t;


typedef struct {
    ngx_foko_chat_channel_doc_t    *channels;
    ngx_uint_t                      n;
    json_t                        **latest;
    ngx_uint_t                      ring_size;
    ngx_atomic_uint_t               cache_gen;

    /* when every channel is read: the accounts and each one's channels */
    ngx_foko_chat_user_t           *users;
    ngx_uint_t                      nusers;
    ngx_foko_chat_rehydrate_ids_t  *ids;
    ngx_atomic_uint_t               users_gen;

    ngx_int_t                       rc;
    u_char                          err[NGX_FOKO_CHAT_ERR_LEN];
} ngx_foko_chat_rehydrate_t;


static void ngx_foko_chat_rehydrate_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static void ngx_foko_chat_rehydrate_users(ngx_foko_chat_rehydrate_t *rh);
static ngx_int_t ngx_foko_chat_rehydrate_ids(ngx_foko_chat_rehydrate_t *rh);
static int ngx_libc_cdecl ngx_foko_chat_rehydrate_cmp(const void *one,
    const void *two);
static ngx_uint_t ngx_foko_chat_rehydrate_put_users(
    ngx_foko_chat_rehydrate_t *rh, ngx_foko_chat_shm_ctx_t *shm);
static ngx_int_t ngx_foko_chat_rehydrate_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_rehydrate_free(ngx_foko_chat_rehydrate_t *rh);


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
    rh->users_gen = ngx_foko_chat_users_gen(shm);

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

    if (rh->n < NGX_FOKO_CHAT_REHYDRATE_CHANNELS) {
        ngx_foko_chat_rehydrate_users(rh);
    }
}


/*
 * Every channel is read: so is every account (up to a bound), and each
 * user's channel ids are exact, as a sign-in would read them.  A failure
 * here leaves the users to their first sign-ins; the channels stay.
 */

static void
ngx_foko_chat_rehydrate_users(ngx_foko_chat_rehydrate_t *rh)
{
    u_char  err[NGX_FOKO_CHAT_ERR_LEN];

    if (ngx_foko_chat_store_users_all(NGX_FOKO_CHAT_REHYDRATE_USERS,
                                      &rh->users, &rh->nusers, err)
        != NGX_OK
        || ngx_foko_chat_rehydrate_ids(rh) != NGX_OK)
    {
        free(rh->users);
        rh->users = NULL;
        rh->nusers = 0;
    }
}


/* the channels of each user, by a merge of two lists sorted by user */

static ngx_int_t
ngx_foko_chat_rehydrate_ids(ngx_foko_chat_rehydrate_t *rh)
{
    ngx_int_t                        c;
    ngx_uint_t                       i, j, k, npairs;
    ngx_foko_chat_rehydrate_ids_t   *ids;
    ngx_foko_chat_rehydrate_pair_t  *pairs;

    npairs = 0;

    for (i = 0; i < rh->n; i++) {
        npairs += rh->channels[i].nmembers;
    }

    pairs = malloc(ngx_max(npairs, 1) * sizeof(ngx_foko_chat_rehydrate_pair_t));
    rh->ids = calloc(ngx_max(rh->nusers, 1),
                     sizeof(ngx_foko_chat_rehydrate_ids_t));

    if (pairs == NULL || rh->ids == NULL) {
        free(pairs);
        return NGX_ERROR;
    }

    k = 0;

    for (i = 0; i < rh->n; i++) {
        for (j = 0; j < rh->channels[i].nmembers; j++) {
            pairs[k].user = rh->channels[i].members[j];
            pairs[k].channel = i;
            k++;
        }
    }

    qsort(pairs, npairs, sizeof(ngx_foko_chat_rehydrate_pair_t),
          ngx_foko_chat_rehydrate_cmp);

    ids = rh->ids;
    k = 0;

    /* users come in _id order, which is their hex ids' order */

    for (i = 0; i < rh->nusers; i++) {
        for ( /* void */ ; k < npairs; k++) {
            c = ngx_memcmp(pairs[k].user, rh->users[i].id,
                           NGX_FOKO_CHAT_OID_LEN);
            if (c >= 0) {
                break;
            }
        }

        for (j = k; j < npairs; j++) {
            if (ngx_memcmp(pairs[j].user, rh->users[i].id,
                           NGX_FOKO_CHAT_OID_LEN)
                != 0)
            {
                break;
            }
        }

        if (j == k) {
            continue;
        }

        ids[i].found = calloc(j - k, sizeof(ngx_foko_chat_channel_doc_t));
        if (ids[i].found == NULL) {
            free(pairs);
            return NGX_ERROR;
        }

        for (ids[i].n = 0; k < j; k++, ids[i].n++) {
            ngx_memcpy(ids[i].found[ids[i].n].id,
                       rh->channels[pairs[k].channel].id,
                       NGX_FOKO_CHAT_OID_LEN);
        }
    }

    free(pairs);

    return NGX_OK;
}


static int ngx_libc_cdecl
ngx_foko_chat_rehydrate_cmp(const void *one, const void *two)
{
    const ngx_foko_chat_rehydrate_pair_t  *a = one;
    const ngx_foko_chat_rehydrate_pair_t  *b = two;

    return ngx_memcmp(a->user, b->user, NGX_FOKO_CHAT_OID_LEN);
}


static ngx_int_t
ngx_foko_chat_rehydrate_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_rehydrate_t  *rh = task->data;

    json_t                   *last;
    int64_t                   seq;
    ngx_uint_t                i, loaded, users, member;
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

    /* the users first: the channels take their members' names from them */
    users = ngx_foko_chat_rehydrate_put_users(rh, shm);

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

        if (ngx_foko_chat_cache_put_channel(shm, &rh->channels[i], NULL,
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
                  "newest channels and %ui users", loaded,
                  users);

done:

    ngx_foko_chat_rehydrate_free(rh);

    return NGX_OK;
}


/*
 * The accounts and channel ids read with every channel, kept as a first
 * sign-in would keep them, unless a user changed since they were read.
 */

static ngx_uint_t
ngx_foko_chat_rehydrate_put_users(ngx_foko_chat_rehydrate_t *rh,
    ngx_foko_chat_shm_ctx_t *shm)
{
    ngx_uint_t  i, kept;

    kept = 0;

    for (i = 0; i < rh->nusers; i++) {
        if (rh->users[i].invited) {
            /* not signed up yet: as at a sign-in, not kept */
            continue;
        }

        if (ngx_foko_chat_users_put(shm, rh->users[i].id, rh->ids[i].found,
                                    rh->ids[i].n, &rh->users[i],
                                    rh->users_gen)
            != NGX_OK)
        {
            /* the zone is full, or a user changed meanwhile */
            break;
        }

        kept++;
    }

    return kept;
}


static void
ngx_foko_chat_rehydrate_free(ngx_foko_chat_rehydrate_t *rh)
{
    ngx_uint_t  i;

    for (i = 0; i < rh->n; i++) {
        ngx_foko_chat_store_channel_doc_free(&rh->channels[i]);

        if (rh->latest) {
            json_decref(rh->latest[i]);
        }
    }

    for (i = 0; rh->ids && i < rh->nusers; i++) {
        free(rh->ids[i].found);
    }

    if (rh->users) {
        ngx_explicit_memzero(rh->users,
                             rh->nusers * sizeof(ngx_foko_chat_user_t));
    }

    free(rh->channels);
    free(rh->latest);
    free(rh->users);
    free(rh->ids);
}
