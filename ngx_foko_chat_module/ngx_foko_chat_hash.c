
/*
 * Foko chat: password hashing with argon2id.
 *
 * Hashing is slow on purpose and takes m_cost KiB of memory per hash, so
 * each worker runs at most "concurrency" hashes at once and queues the rest
 * (bounded).  With the default thread pool shared with MongoDB work this
 * cap keeps threads free for storage; "foko_chat_hash_thread_pool" moves
 * hashing to a pool of its own.
 */


#include <argon2.h>
#include <openssl/rand.h>

#include "ngx_foko_chat_hash.h"


#define NGX_FOKO_CHAT_HASH_SALT_LEN   16
#define NGX_FOKO_CHAT_HASH_RAW_LEN    32
#define NGX_FOKO_CHAT_HASH_QUEUE_MAX  1024


static ngx_int_t ngx_foko_chat_hash_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_hash_next(void);


static ngx_uint_t   ngx_foko_chat_hash_active;
static ngx_uint_t   ngx_foko_chat_hash_waiting;
static ngx_queue_t  ngx_foko_chat_hash_queue;


/* foko_chat_password_hash argon2id [t=N] [m=SIZE] [p=N] [concurrency=N] */

char *
ngx_foko_chat_hash_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_foko_chat_hash_conf_t  *hcf;

    size_t      m;
    ngx_int_t   n;
    ngx_str_t  *value, s;
    ngx_uint_t  i;

    hcf = (ngx_foko_chat_hash_conf_t *) ((char *) conf + cmd->offset);

    if (hcf->t_cost) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len != 8 || ngx_strncmp(value[1].data, "argon2id", 8) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unsupported algorithm \"%V\" in \"%V\"; "
                           "use \"argon2id\"", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    ngx_foko_chat_hash_init_conf(hcf);

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "t=", 2) == 0) {
            n = ngx_atoi(value[i].data + 2, value[i].len - 2);
            if (n < 1 || n > 64) {
                goto invalid;
            }

            hcf->t_cost = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "m=", 2) == 0) {
            s.data = value[i].data + 2;
            s.len = value[i].len - 2;

            m = ngx_parse_size(&s);
            if (m == (size_t) NGX_ERROR || m < 8 * 1024
                || m > 1024 * 1024 * 1024)
            {
                goto invalid;
            }

            hcf->m_cost = m / 1024;
            continue;
        }

        if (ngx_strncmp(value[i].data, "p=", 2) == 0) {
            n = ngx_atoi(value[i].data + 2, value[i].len - 2);
            if (n < 1 || n > 16) {
                goto invalid;
            }

            hcf->parallelism = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "concurrency=", 12) == 0) {
            n = ngx_atoi(value[i].data + 12, value[i].len - 12);
            if (n < 1 || n > 256) {
                goto invalid;
            }

            hcf->concurrency = n;
            continue;
        }

        goto invalid;
    }

    /* argon2 needs at least 8 KiB of memory per lane */

    if (hcf->m_cost < 8 * hcf->parallelism) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": m= must be at least p= times 8k",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\"; expected "
                       "t=1..64, m=8k..1g, p=1..16 or concurrency=1..256",
                       &value[i], &cmd->name);

    return NGX_CONF_ERROR;
}


/* OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane */

void
ngx_foko_chat_hash_init_conf(ngx_foko_chat_hash_conf_t *hcf)
{
    if (hcf->t_cost == 0) {
        hcf->t_cost = 2;
        hcf->m_cost = 19 * 1024;
        hcf->parallelism = 1;
    }

    if (hcf->concurrency == 0) {
        hcf->concurrency = ngx_ncpu > 0 ? ngx_ncpu : 1;
    }
}


ngx_int_t
ngx_foko_chat_hash_post(ngx_foko_chat_task_t *task, ngx_http_request_t *r)
{
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    if (ngx_foko_chat_hash_queue.next == NULL) {
        ngx_queue_init(&ngx_foko_chat_hash_queue);
    }

    /* the task's own "done" runs after the slot is given back */

    task->saved_done = task->done;
    task->done = ngx_foko_chat_hash_done;

    if (ngx_foko_chat_hash_active < fmcf->hash.concurrency) {

        if (ngx_foko_chat_task_post_request(task, fmcf->hash_pool.pool, r)
            != NGX_OK)
        {
            task->done = task->saved_done;
            return NGX_ERROR;
        }

        ngx_foko_chat_hash_active++;

        return NGX_OK;
    }

    if (ngx_foko_chat_hash_waiting >= NGX_FOKO_CHAT_HASH_QUEUE_MAX) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "foko chat: %ui password hashes are waiting already",
                      ngx_foko_chat_hash_waiting);
        task->done = task->saved_done;
        return NGX_ERROR;
    }

    if (task->request != r && ngx_foko_chat_task_attach(task, r) != NGX_OK) {
        task->done = task->saved_done;
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&ngx_foko_chat_hash_queue, &task->queue);
    ngx_foko_chat_hash_waiting++;

    /* queued, as good as posted: see ngx_foko_chat_task_event_handler() */
    task->again = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_hash_done(ngx_foko_chat_task_t *task)
{
    task->done = task->saved_done;

    ngx_foko_chat_hash_active--;
    ngx_foko_chat_hash_next();

    return task->done(task);
}


static void
ngx_foko_chat_hash_next(void)
{
    ngx_queue_t                *q, failed;
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);

    ngx_queue_init(&failed);

    while (!ngx_queue_empty(&ngx_foko_chat_hash_queue)
           && ngx_foko_chat_hash_active < fmcf->hash.concurrency)
    {
        q = ngx_queue_head(&ngx_foko_chat_hash_queue);
        ngx_queue_remove(q);
        ngx_foko_chat_hash_waiting--;

        task = ngx_queue_data(q, ngx_foko_chat_task_t, queue);

        if (task->request == NULL
            || ngx_foko_chat_task_post(task, fmcf->hash_pool.pool)
               != NGX_OK)
        {
            /* the client is gone, or the pool is full: no hashing */
            ngx_queue_insert_tail(&failed, q);
            continue;
        }

        ngx_foko_chat_hash_active++;
    }

    /* completed after the loop: no recursion through the whole queue */

    while (!ngx_queue_empty(&failed)) {
        q = ngx_queue_head(&failed);
        ngx_queue_remove(q);

        task = ngx_queue_data(q, ngx_foko_chat_task_t, queue);

        ngx_foko_chat_hash_active++;
        ngx_foko_chat_task_fail(task);
    }
}


ngx_int_t
ngx_foko_chat_hash_make(ngx_foko_chat_hash_conf_t *hcf, ngx_str_t *password,
    u_char *out)
{
    u_char  salt[NGX_FOKO_CHAT_HASH_SALT_LEN];

    if (RAND_bytes(salt, sizeof(salt)) != 1) {
        return NGX_ERROR;
    }

    if (argon2id_hash_encoded(hcf->t_cost, hcf->m_cost, hcf->parallelism,
                              password->data, password->len,
                              salt, sizeof(salt),
                              NGX_FOKO_CHAT_HASH_RAW_LEN,
                              (char *) out, NGX_FOKO_CHAT_HASH_LEN)
        != ARGON2_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * NGX_OK on a match, NGX_DECLINED otherwise.  Without an encoded hash (an
 * unknown account) the same work is done against a throwaway salt, so that
 * the answer takes as long as for a wrong password.
 */

ngx_int_t
ngx_foko_chat_hash_verify(ngx_foko_chat_hash_conf_t *hcf, u_char *encoded,
    ngx_str_t *password)
{
    u_char  salt[NGX_FOKO_CHAT_HASH_SALT_LEN];
    u_char  raw[NGX_FOKO_CHAT_HASH_RAW_LEN];

    if (encoded == NULL || encoded[0] == '\0') {
        ngx_memzero(salt, sizeof(salt));

        (void) argon2id_hash_raw(hcf->t_cost, hcf->m_cost, hcf->parallelism,
                                 password->data, password->len,
                                 salt, sizeof(salt), raw, sizeof(raw));
        return NGX_DECLINED;
    }

    if (argon2id_verify((char *) encoded, password->data, password->len)
        == ARGON2_OK)
    {
        return NGX_OK;
    }

    return NGX_DECLINED;
}
