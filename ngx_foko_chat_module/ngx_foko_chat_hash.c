
/*
 * Foko chat: password hashing with argon2id.
 *
 * Hashing is slow on purpose and takes m_cost KiB of memory per hash, so
 * each worker runs at most "concurrency" hashes at once and queues the rest
 * (bounded).  With the default thread pool shared with MongoDB work this
 * cap keeps threads free for storage; "foko_chat_hash_thread_pool" moves
 * hashing to a pool of its own.
 *
 * A hash's memory is mapped for it and unmapped after it.  From malloc,
 * it stayed in the arena of each thread that ever hashed (glibc raises its
 * mmap threshold to the size of the first such block freed): some 500 MB
 * of a worker after a few dozen sign-ins on the default pool of 32
 * threads.  Encoding and decoding follow argon2's own
 * "$argon2id$v=19$m=M,t=T,p=P$salt$hash", base64 without padding.
 */


#include <sys/mman.h>
#include <argon2.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "ngx_foko_chat_hash.h"


#define NGX_FOKO_CHAT_HASH_SALT_LEN   16
#define NGX_FOKO_CHAT_HASH_RAW_LEN    32
#define NGX_FOKO_CHAT_HASH_QUEUE_MAX  1024
#define NGX_FOKO_CHAT_HASH_BYTES_MAX  64      /* of a stored salt or hash */
#define NGX_FOKO_CHAT_HASH_PREFIX     "$argon2id$v=19$"


static ngx_int_t ngx_foko_chat_hash_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_hash_start(ngx_queue_t *q);
static ngx_int_t ngx_foko_chat_hash_raw(ngx_foko_chat_hash_conf_t *hcf,
    ngx_str_t *password, ngx_str_t *salt, ngx_str_t *out);
static int ngx_foko_chat_hash_map(uint8_t **memory, size_t size);
static void ngx_foko_chat_hash_unmap(uint8_t *memory, size_t size);
static u_char *ngx_foko_chat_hash_base64(u_char *p, ngx_str_t *src);
static ngx_int_t ngx_foko_chat_hash_decode(u_char *encoded,
    ngx_foko_chat_hash_conf_t *hcf, ngx_str_t *salt, ngx_str_t *raw);
static ngx_int_t ngx_foko_chat_hash_unbase64(u_char *p, u_char *last,
    ngx_str_t *dst);


/* "concurrency" hashes of a worker at once, then a bounded queue */
static ngx_foko_chat_lane_t  ngx_foko_chat_hash_lane;


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
    ngx_int_t                   rc;
    ngx_foko_chat_lane_t       *lane;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);
    lane = &ngx_foko_chat_hash_lane;

    if (lane->start == NULL) {
        ngx_foko_chat_lane_init(lane, fmcf->hash.concurrency,
                                NGX_FOKO_CHAT_HASH_QUEUE_MAX,
                                ngx_foko_chat_hash_start);
    }

    /* the task's own "done" runs after the slot is given back */

    task->saved_done = task->done;
    task->done = ngx_foko_chat_hash_done;

    rc = ngx_foko_chat_lane_enter(lane, &task->queue);

    if (rc == NGX_OK) {

        if (ngx_foko_chat_task_post_request(task, fmcf->hash_pool.pool, r)
            != NGX_OK)
        {
            ngx_foko_chat_lane_leave(lane);
            task->done = task->saved_done;
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "foko chat: %ui password hashes are waiting already",
                      lane->waiting);
        task->done = task->saved_done;
        return NGX_ERROR;
    }

    if (task->request != r && ngx_foko_chat_task_attach(task, r) != NGX_OK) {
        ngx_foko_chat_lane_cancel(lane, &task->queue);
        task->done = task->saved_done;
        return NGX_ERROR;
    }

    /* queued, as good as posted: see ngx_foko_chat_task_event_handler() */
    task->again = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_hash_done(ngx_foko_chat_task_t *task)
{
    task->done = task->saved_done;

    ngx_foko_chat_lane_leave(&ngx_foko_chat_hash_lane);

    return task->done(task);
}


/* a queued hash's turn: it runs, or completes as failed at once */

static ngx_int_t
ngx_foko_chat_hash_start(ngx_queue_t *q)
{
    ngx_foko_chat_task_t       *task;
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_foko_chat_module);

    task = ngx_queue_data(q, ngx_foko_chat_task_t, queue);

    if (task->request == NULL
        || ngx_foko_chat_task_post(task, fmcf->hash_pool.pool) != NGX_OK)
    {
        /* the client is gone, or the pool is full: no hashing */
        ngx_foko_chat_task_fail(task);
    }

    return NGX_OK;
}


ngx_int_t
ngx_foko_chat_hash_make(ngx_foko_chat_hash_conf_t *hcf, ngx_str_t *password,
    u_char *out)
{
    u_char     *p;
    u_char      salt_data[NGX_FOKO_CHAT_HASH_SALT_LEN];
    u_char      raw_data[NGX_FOKO_CHAT_HASH_RAW_LEN];
    ngx_str_t   salt, raw;

    if (RAND_bytes(salt_data, sizeof(salt_data)) != 1) {
        return NGX_ERROR;
    }

    salt.data = salt_data;
    salt.len = sizeof(salt_data);
    raw.data = raw_data;
    raw.len = sizeof(raw_data);

    if (ngx_foko_chat_hash_raw(hcf, password, &salt, &raw) != NGX_OK) {
        return NGX_ERROR;
    }

    /* at most 35 + 22 + 1 + 43 + 1 bytes of NGX_FOKO_CHAT_HASH_LEN */

    p = ngx_sprintf(out, NGX_FOKO_CHAT_HASH_PREFIX "m=%uD,t=%uD,p=%uD$",
                    hcf->m_cost, hcf->t_cost, hcf->parallelism);
    p = ngx_foko_chat_hash_base64(p, &salt);
    *p++ = '$';
    p = ngx_foko_chat_hash_base64(p, &raw);
    *p = '\0';

    ngx_explicit_memzero(raw_data, sizeof(raw_data));

    return NGX_OK;
}


/*
 * NGX_OK on a match, NGX_DECLINED otherwise.  Without an encoded hash (an
 * unknown account) the same work is done against a throwaway salt, so that
 * the answer takes as long as for a wrong password.  A stored hash is
 * checked with the costs it was made with.
 */

ngx_int_t
ngx_foko_chat_hash_verify(ngx_foko_chat_hash_conf_t *hcf, u_char *encoded,
    ngx_str_t *password)
{
    u_char                     salt_data[NGX_FOKO_CHAT_HASH_BYTES_MAX];
    u_char                     raw_data[NGX_FOKO_CHAT_HASH_BYTES_MAX];
    u_char                     out_data[NGX_FOKO_CHAT_HASH_BYTES_MAX];
    ngx_int_t                  rc;
    ngx_str_t                  salt, raw, out;
    ngx_foko_chat_hash_conf_t  stored;

    salt.data = salt_data;
    raw.data = raw_data;
    out.data = out_data;

    if (encoded == NULL || encoded[0] == '\0') {
        ngx_memzero(salt_data, NGX_FOKO_CHAT_HASH_SALT_LEN);
        salt.len = NGX_FOKO_CHAT_HASH_SALT_LEN;
        out.len = NGX_FOKO_CHAT_HASH_RAW_LEN;

        (void) ngx_foko_chat_hash_raw(hcf, password, &salt, &out);
        return NGX_DECLINED;
    }

    if (ngx_foko_chat_hash_decode(encoded, &stored, &salt, &raw) != NGX_OK) {
        return NGX_DECLINED;
    }

    out.len = raw.len;
    rc = NGX_DECLINED;

    if (ngx_foko_chat_hash_raw(&stored, password, &salt, &out) == NGX_OK
        && CRYPTO_memcmp(out.data, raw.data, raw.len) == 0)
    {
        rc = NGX_OK;
    }

    ngx_explicit_memzero(out_data, sizeof(out_data));

    return rc;
}


static ngx_int_t
ngx_foko_chat_hash_raw(ngx_foko_chat_hash_conf_t *hcf, ngx_str_t *password,
    ngx_str_t *salt, ngx_str_t *out)
{
    argon2_context  ctx;

    ngx_memzero(&ctx, sizeof(argon2_context));

    ctx.out = out->data;
    ctx.outlen = out->len;
    ctx.pwd = password->data;
    ctx.pwdlen = password->len;
    ctx.salt = salt->data;
    ctx.saltlen = salt->len;
    ctx.t_cost = hcf->t_cost;
    ctx.m_cost = hcf->m_cost;
    ctx.lanes = hcf->parallelism;
    ctx.threads = hcf->parallelism;
    ctx.version = ARGON2_VERSION_13;
    ctx.allocate_cbk = ngx_foko_chat_hash_map;
    ctx.free_cbk = ngx_foko_chat_hash_unmap;
    ctx.flags = ARGON2_DEFAULT_FLAGS;

    return argon2id_ctx(&ctx) == ARGON2_OK ? NGX_OK : NGX_ERROR;
}


/* argon2 ignores the result and checks *memory for NULL */

static int
ngx_foko_chat_hash_map(uint8_t **memory, size_t size)
{
    void  *p;

    p = mmap(NULL, size, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS,
             -1, 0);

    if (p == MAP_FAILED) {
        *memory = NULL;
        return ARGON2_MEMORY_ALLOCATION_ERROR;
    }

    *memory = p;

    return ARGON2_OK;
}


/* argon2 has wiped the memory already */

static void
ngx_foko_chat_hash_unmap(uint8_t *memory, size_t size)
{
    (void) munmap(memory, size);
}


static u_char *
ngx_foko_chat_hash_base64(u_char *p, ngx_str_t *src)
{
    ngx_str_t  dst;

    dst.data = p;
    ngx_encode_base64(&dst, src);

    p += dst.len;

    while (p[-1] == '=') {
        p--;
    }

    return p;
}


/* the costs into hcf, within the bounds of the directive */

static ngx_int_t
ngx_foko_chat_hash_decode(u_char *encoded, ngx_foko_chat_hash_conf_t *hcf,
    ngx_str_t *salt, ngx_str_t *raw)
{
    u_char      *p, *last;
    ngx_int_t    v[3];
    ngx_uint_t   i;

    static const char  names[] = "mtp";

    if (ngx_strncmp(encoded, NGX_FOKO_CHAT_HASH_PREFIX,
                    sizeof(NGX_FOKO_CHAT_HASH_PREFIX) - 1)
        != 0)
    {
        return NGX_ERROR;
    }

    p = encoded + sizeof(NGX_FOKO_CHAT_HASH_PREFIX) - 1;

    for (i = 0; i < 3; i++) {
        if (p[0] != (u_char) names[i] || p[1] != '=') {
            return NGX_ERROR;
        }

        p += 2;

        for (last = p; *last >= '0' && *last <= '9'; last++) {
            /* void */
        }

        if (*last != (i < 2 ? ',' : '$')) {
            return NGX_ERROR;
        }

        v[i] = ngx_atoi(p, last - p);
        p = last + 1;
    }

    if (v[0] < 8 || v[0] > 1024 * 1024
        || v[1] < 1 || v[1] > 64
        || v[2] < 1 || v[2] > 16)
    {
        return NGX_ERROR;
    }

    hcf->m_cost = v[0];
    hcf->t_cost = v[1];
    hcf->parallelism = v[2];

    last = (u_char *) ngx_strchr(p, '$');
    if (last == NULL) {
        return NGX_ERROR;
    }

    if (ngx_foko_chat_hash_unbase64(p, last, salt) != NGX_OK) {
        return NGX_ERROR;
    }

    p = last + 1;

    return ngx_foko_chat_hash_unbase64(p, p + ngx_strlen(p), raw);
}


static ngx_int_t
ngx_foko_chat_hash_unbase64(u_char *p, u_char *last, ngx_str_t *dst)
{
    ngx_str_t  src;

    src.data = p;
    src.len = last - p;

    if (src.len == 0
        || ngx_base64_decoded_length(src.len) > NGX_FOKO_CHAT_HASH_BYTES_MAX)
    {
        return NGX_ERROR;
    }

    return ngx_decode_base64(dst, &src);
}
