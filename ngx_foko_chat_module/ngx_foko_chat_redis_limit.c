
/*
 * Foko chat: several hosts through Redis: rate limits that all hosts
 * count together.
 *
 * The same fixed windows as the zone's (ngx_foko_chat_limit.c), as
 * counters "foko:limit:<key>" in Redis: one script per attempt counts it
 * under each of its keys (INCR, PEXPIRE when the window starts) unless a
 * key is over its limit.  Called on a thread (the sign-in's own task,
 * before the costly hashing), on connections kept for the next call;
 * ngx_foko_chat_auth_check.c falls back to the zone when Redis fails.
 */


#include "ngx_foko_chat_redis_int.h"


#define NGX_FOKO_CHAT_REDIS_LIMIT_KEYS   2


/*
 * KEYS: the counters; ARGV: per key, its window in ms and its limit.
 * Returns per key 0, or the ms to wait if over (the attempt is then not
 * counted under any key).
 */

static const char  ngx_foko_chat_redis_limit_script[] =
    "local out, over = {}, false\n"
    "for i = 1, #KEYS do\n"
    "  local n = tonumber(redis.call('GET', KEYS[i]) or '0')\n"
    "  out[i] = 0\n"
    "  if n >= tonumber(ARGV[2 * i]) then\n"
    "    local t = redis.call('PTTL', KEYS[i])\n"
    "    if t < 0 then\n"
    "      t = tonumber(ARGV[2 * i - 1])\n"
    "      redis.call('PEXPIRE', KEYS[i], t)\n"
    "    end\n"
    "    out[i] = t\n"
    "    over = true\n"
    "  end\n"
    "end\n"
    "if not over then\n"
    "  for i = 1, #KEYS do\n"
    "    if redis.call('INCR', KEYS[i]) == 1 then\n"
    "      redis.call('PEXPIRE', KEYS[i], ARGV[2 * i - 1])\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";


static ngx_int_t ngx_foko_chat_redis_limit_settle_on(redisContext **c,
    ngx_str_t *clear, ngx_str_t *refund, u_char *err);


/* on a thread: the seconds to wait (0: counted), or NGX_ERROR */

ngx_int_t
ngx_foko_chat_redis_limit_take(ngx_str_t *keys, ngx_foko_chat_limit_t *limits,
    ngx_uint_t n, time_t *wait, u_char *err)
{
    u_char         *p;
    ngx_uint_t      i, argc;
    redisReply     *reply;
    redisContext   *c;
    const char     *argv[3 + 3 * NGX_FOKO_CHAT_REDIS_LIMIT_KEYS];
    size_t          lens[3 + 3 * NGX_FOKO_CHAT_REDIS_LIMIT_KEYS];
    u_char          names[NGX_FOKO_CHAT_REDIS_LIMIT_KEYS][300];
    u_char          nums[2 * NGX_FOKO_CHAT_REDIS_LIMIT_KEYS][NGX_INT64_LEN];

    n = ngx_min(n, NGX_FOKO_CHAT_REDIS_LIMIT_KEYS);
    *wait = 0;

    argc = 0;
    argv[argc] = "EVAL"; lens[argc++] = 4;
    argv[argc] = ngx_foko_chat_redis_limit_script;
    lens[argc++] = sizeof(ngx_foko_chat_redis_limit_script) - 1;
    argv[argc] = (n == 1) ? "1" : "2"; lens[argc++] = 1;

    for (i = 0; i < n; i++) {
        p = ngx_snprintf(names[i], sizeof(names[i]), "foko:limit:%V",
                         &keys[i]);
        argv[argc] = (const char *) names[i];
        lens[argc++] = p - names[i];
    }

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(nums[2 * i], "%T", limits[i].window * 1000);
        argv[argc] = (const char *) nums[2 * i];
        lens[argc++] = p - nums[2 * i];

        p = ngx_sprintf(nums[2 * i + 1], "%ui", limits[i].max);
        argv[argc] = (const char *) nums[2 * i + 1];
        lens[argc++] = p - nums[2 * i + 1];
    }

    reply = ngx_foko_chat_redis_kept_call(&c, 0, (int) argc, argv, lens,
                                          err);

    if (reply == NULL) {
        return NGX_ERROR;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        ngx_foko_chat_redis_failed(&c, reply, err);
        return NGX_ERROR;
    }

    for (i = 0; i < reply->elements; i++) {
        if (reply->element[i]->type == REDIS_REPLY_INTEGER
            && reply->element[i]->integer > 0)
        {
            *wait = ngx_max(*wait,
                            (time_t) (reply->element[i]->integer + 999) / 1000);
        }
    }

    freeReplyObject(reply);
    ngx_foko_chat_redis_kept_put(c);

    return NGX_OK;
}


/* on a thread: a successful attempt: "clear" deleted, "refund" less one */

ngx_int_t
ngx_foko_chat_redis_limit_settle(ngx_str_t *clear, ngx_str_t *refund,
    u_char *err)
{
    ngx_int_t      rc;
    ngx_uint_t     kept;
    redisContext  *c;

    c = ngx_foko_chat_redis_kept_get(err, &kept);
    if (c == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_foko_chat_redis_limit_settle_on(&c, clear, refund, err);

    if (rc == NGX_DECLINED && kept) {
        /* a kept connection that Redis closed (a restart): a new one */
        c = ngx_foko_chat_redis_connect(ngx_foko_chat_redis_conf, err);
        if (c == NULL) {
            return NGX_ERROR;
        }

        rc = ngx_foko_chat_redis_limit_settle_on(&c, clear, refund, err);
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_foko_chat_redis_kept_put(c);

    return NGX_OK;
}


/* NGX_DECLINED: no answer at all; the connection is then dropped */

static ngx_int_t
ngx_foko_chat_redis_limit_settle_on(redisContext **c, ngx_str_t *clear,
    ngx_str_t *refund, u_char *err)
{
    ngx_uint_t   i;
    redisReply  *reply;

    if (clear) {
        redisAppendCommand(*c, "DEL foko:limit:%b", clear->data, clear->len);
    }

    if (refund) {
        /* never below 0, and the window stays */
        redisAppendCommand(*c, "EVAL %s 1 foko:limit:%b",
                           "if tonumber(redis.call('GET', KEYS[1]) or '0') > 0"
                           " then return redis.call('DECR', KEYS[1]) end"
                           " return 0",
                           refund->data, refund->len);
    }

    for (i = (clear == NULL) + (refund == NULL); i < 2; i++) {
        if (redisGetReply(*c, (void **) &reply) != REDIS_OK) {
            ngx_foko_chat_redis_failed(c, NULL, err);
            return NGX_DECLINED;
        }

        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_foko_chat_redis_failed(c, reply, err);
            return NGX_ERROR;
        }

        freeReplyObject(reply);
    }

    return NGX_OK;
}
