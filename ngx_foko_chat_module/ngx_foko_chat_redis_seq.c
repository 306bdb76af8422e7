
/*
 * Foko chat: several hosts through Redis: posts numbered by all hosts
 * together.
 *
 * Each host's writer numbers a batch just before it writes it, with one
 * script call: per channel, a counter "foko:seq:<channel>" in Redis is
 * raised past the highest of itself and this host's own last seq, by as
 * many posts as the batch has there.  The floor heals a counter that
 * Redis lost (a restart, a failover) without asking MongoDB; a counter
 * that went back all the same only costs a collision, which the unique
 * {channel_id, seq} index catches as before.  A counter left alone for a
 * day expires, and the next post starts it again from the floor.
 */


#include "ngx_foko_chat_redis_int.h"


#define NGX_FOKO_CHAT_REDIS_SEQ_TIMEOUT  250       /* ms: then the zone */


/* KEYS: the counters; ARGV: per key, the floor and how many to take */

static const char  ngx_foko_chat_redis_seq_script[] =
    "local out = {}\n"
    "for i = 1, #KEYS do\n"
    "  local n = tonumber(redis.call('GET', KEYS[i]) or '0')\n"
    "  local floor = tonumber(ARGV[2 * i - 1])\n"
    "  if n < floor then n = floor end\n"
    "  out[i] = n + 1\n"
    "  redis.call('SET', KEYS[i],\n"
    "             string.format('%d', n + tonumber(ARGV[2 * i])),\n"
    "             'EX', 86400)\n"
    "end\n"
    "return out\n";


ngx_thread_pool_t *
ngx_foko_chat_redis_seq_pool(void)
{
    return ngx_foko_chat_redis_conf ? ngx_foko_chat_redis_conf->pool.pool
                                    : NULL;
}


ngx_int_t
ngx_foko_chat_redis_seq_take(u_char *channels, int64_t *floors,
    ngx_uint_t *counts, ngx_uint_t n, int64_t *firsts, u_char *err)
{
    u_char         *names, *nums, *p;
    size_t         *lens;
    ngx_int_t       rc;
    ngx_uint_t      i, argc;
    const char    **argv;
    redisReply     *reply;
    redisContext   *c;

    /* per channel: its key, its floor and its count */

    argv = malloc((3 + 3 * n) * (sizeof(char *) + sizeof(size_t)));
    names = malloc(n * (sizeof("foko:seq:") + NGX_FOKO_CHAT_OID_LEN)
                   + (2 * n + 1) * NGX_INT64_LEN);

    if (argv == NULL || names == NULL) {
        free(argv);
        free(names);
        ngx_cpystrn(err, (u_char *) "out of memory",
                    NGX_FOKO_CHAT_REDIS_ERR_LEN);
        return NGX_ERROR;
    }

    lens = (size_t *) (argv + 3 + 3 * n);
    nums = names + n * (sizeof("foko:seq:") + NGX_FOKO_CHAT_OID_LEN);

    argc = 0;
    argv[argc] = "EVAL"; lens[argc++] = 4;
    argv[argc] = ngx_foko_chat_redis_seq_script;
    lens[argc++] = sizeof(ngx_foko_chat_redis_seq_script) - 1;

    p = nums;
    argv[argc] = (const char *) p;
    p = ngx_sprintf(p, "%ui", n);
    lens[argc] = p - (u_char *) argv[argc];
    argc++;

    for (i = 0; i < n; i++) {
        argv[argc] = (const char *) names
                     + i * (sizeof("foko:seq:") + NGX_FOKO_CHAT_OID_LEN);
        (void) ngx_sprintf((u_char *) argv[argc], "foko:seq:%*s",
                           (size_t) NGX_FOKO_CHAT_OID_LEN,
                           channels + i * NGX_FOKO_CHAT_OID_LEN);
        lens[argc++] = sizeof("foko:seq:") - 1 + NGX_FOKO_CHAT_OID_LEN;
    }

    for (i = 0; i < n; i++) {
        argv[argc] = (const char *) p;
        p = ngx_sprintf(p, "%L", floors[i]);
        lens[argc] = p - (u_char *) argv[argc];
        argc++;

        argv[argc] = (const char *) p;
        p = ngx_sprintf(p, "%ui", counts[i]);
        lens[argc] = p - (u_char *) argv[argc];
        argc++;
    }

    reply = ngx_foko_chat_redis_kept_call(&c, NGX_FOKO_CHAT_REDIS_SEQ_TIMEOUT,
                                          (int) argc, argv, lens, err);
    rc = NGX_ERROR;

    if (reply == NULL) {
        goto done;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != n) {
        ngx_foko_chat_redis_failed(&c, reply, err);
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (reply->element[i]->type != REDIS_REPLY_INTEGER
            || reply->element[i]->integer <= floors[i])
        {
            ngx_foko_chat_redis_failed(&c, NULL, err);
            freeReplyObject(reply);
            goto done;
        }

        firsts[i] = reply->element[i]->integer;
    }

    freeReplyObject(reply);
    ngx_foko_chat_redis_kept_put(c);
    rc = NGX_OK;

done:

    free(argv);
    free(names);

    return rc;
}
