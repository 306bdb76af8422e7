
/*
 * Foko chat: accounts: what a request may carry and how often.  The rules
 * of an email, a password and a username, and the rate limits of sign-ups,
 * sign-ins and recoveries, counted in the shared zone, or in Redis by all
 * hosts together.
 */


#include "ngx_foko_chat_auth_int.h"
#include "ngx_foko_chat_limit.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_redis.h"


#define NGX_FOKO_CHAT_USERNAME_CHARS   32


/* an attempt being counted: its keys, and what goes on after */
struct ngx_foko_chat_auth_limit_s {
    ngx_foko_chat_auth_next_pt  next;
    const char                 *what;
    u_char                     *email;         /* the op's */
    ngx_uint_t                  n;
    ngx_str_t                   keys[2];
    ngx_foko_chat_limit_t       limits[2];
    time_t                      wait;
    ngx_int_t                   rc;
    u_char                      err[NGX_FOKO_CHAT_REDIS_ERR_LEN];
    u_char                      data[1];       /* the keys */
};


static ngx_uint_t ngx_foko_chat_auth_invisible(uint32_t c);
static ngx_foko_chat_auth_limit_t *ngx_foko_chat_auth_limit_new(
    ngx_http_request_t *r, const char *what, u_char *email,
    ngx_uint_t *limits, ngx_foko_chat_auth_next_pt next);
static time_t ngx_foko_chat_auth_limit_zone(ngx_http_request_t *r,
    ngx_foko_chat_auth_limit_t *l);
static void ngx_foko_chat_auth_limit_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static ngx_int_t ngx_foko_chat_auth_limit_done(ngx_foko_chat_task_t *task);
static ngx_int_t ngx_foko_chat_auth_too_many(ngx_http_request_t *r,
    const char *what, u_char *email, time_t wait);


/*
 * An email: one "@", a dot in the domain, no spaces or controls; stored
 * lowercased.  "strict" is for sign-up and recovery; a sign-in only needs a
 * non-empty string, so that every unknown email gets the same 401.
 */

const char *
ngx_foko_chat_auth_email(json_t *body, u_char *out, ngx_uint_t strict)
{
    u_char      *p, *at, *dot, *end;
    ngx_str_t    email;
    const char  *problem;

    problem = ngx_foko_chat_json_string(body, "email", 1,
                                        NGX_FOKO_CHAT_EMAIL_MAX, 0, &email);
    if (problem) {
        return problem;
    }

    if (strict) {
        at = NULL;
        dot = NULL;
        end = email.data + email.len;

        for (p = email.data; p < end; p++) {
            if (*p <= ' ' || *p >= 0x7f
                || ngx_strchr("\"(),:;<>[\\]", *p) != NULL)
            {
                return "is not a valid email address";
            }

            if (*p == '@') {
                if (at) {
                    return "is not a valid email address";
                }

                at = p;

            } else if (*p == '.' && at) {
                dot = p;
            }
        }

        if (at == NULL || at == email.data || dot == NULL
            || dot == at + 1 || dot == end - 1)
        {
            return "is not a valid email address";
        }
    }

    ngx_strlow(out, email.data, email.len);
    out[email.len] = '\0';

    return NULL;
}


const char *
ngx_foko_chat_auth_password(json_t *body, ngx_foko_chat_auth_op_t *op,
    ngx_uint_t strict)
{
    ngx_str_t    password;
    const char  *problem;

    problem = ngx_foko_chat_json_string(body, "password",
                                        strict ? NGX_FOKO_CHAT_PASSWORD_MIN
                                               : 1,
                                        NGX_FOKO_CHAT_PASSWORD_MAX, 0,
                                        &password);
    if (problem) {
        return problem;
    }

    ngx_memcpy(op->password_data, password.data, password.len);
    op->password.len = password.len;

    return NULL;
}


/*
 * A username is shown to others next to what they write, so besides the
 * rules of every name (no C0 controls, no space at either end) it may not
 * hold C1 controls, line or paragraph separators, nor the bidirectional
 * embeddings, overrides and isolates that reorder the text shown after
 * it; and it must show something: not only characters that are blank or
 * invisible.  Zero-width joiners and the like are fine among others
 * (emoji sequences, scripts that need them).
 */

const char *
ngx_foko_chat_auth_username(json_t *body, u_char *out)
{
    u_char      *p, *end;
    uint32_t     c;
    ngx_uint_t   visible;
    const char  *problem;

    problem = ngx_foko_chat_json_name(body, "username",
                                      NGX_FOKO_CHAT_USERNAME_CHARS,
                                      NGX_FOKO_CHAT_USERNAME_MAX, out);
    if (problem) {
        return problem;
    }

    p = out;
    end = out + ngx_strlen(out);
    visible = 0;

    while (p < end) {
        c = ngx_foko_chat_utf8_next(&p, end);

        if (c == NGX_FOKO_CHAT_UTF8_INVALID) {
            return "must be UTF-8";
        }

        if ((c >= 0x80 && c <= 0x9f) || c == 0x2028 || c == 0x2029) {
            return "must not contain control characters";
        }

        if ((c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069)) {
            return "must not contain bidirectional overrides or isolates";
        }

        if (!ngx_foko_chat_auth_invisible(c)) {
            visible = 1;
        }
    }

    if (!visible) {
        return "must contain a visible character";
    }

    return NULL;
}


/* blank or invisible when shown: spaces, fillers, zero-width characters */

static ngx_uint_t
ngx_foko_chat_auth_invisible(uint32_t c)
{
    return c == 0x20 || c == 0xa0 || c == 0xad || c == 0x34f || c == 0x61c
           || c == 0x115f || c == 0x1160 || c == 0x1680
           || c == 0x17b4 || c == 0x17b5
           || (c >= 0x180b && c <= 0x180f)
           || (c >= 0x2000 && c <= 0x200f)
           || c == 0x202f
           || (c >= 0x205f && c <= 0x2064)
           || (c >= 0x206a && c <= 0x206f)
           || c == 0x2800 || c == 0x3000 || c == 0x3164
           || (c >= 0xfe00 && c <= 0xfe0f)
           || c == 0xfeff || c == 0xffa0
           || (c >= 0xfff0 && c <= 0xfff8)
           || (c >= 0x1d173 && c <= 0x1d17a)
           || (c >= 0xe0000 && c <= 0xe0fff);
}


/*
 * Counts an attempt against the account (if "email") and the client
 * address, under the limits numbered limits[0] and limits[1], then goes
 * on with "next" if neither is over its limit; else answers 429.  Returns
 * what the handler returns; the task is freed unless a step of it runs.
 * Attempts are counted as they arrive, so that a burst in flight cannot
 * pass the limit; a successful one is taken back by the caller.
 *
 * With Redis, every host counts in Redis: the script runs as the task's
 * first step on the storage pool, and the zone's counters are used when
 * Redis fails (logged once each time).
 */

ngx_int_t
ngx_foko_chat_auth_limited(ngx_http_request_t *r, ngx_foko_chat_task_t *task,
    const char *what, u_char *email, ngx_uint_t *limits,
    ngx_foko_chat_auth_next_pt next)
{
    time_t                       wait;
    ngx_int_t                    rc;
    ngx_foko_chat_auth_limit_t  *l;

    l = ngx_foko_chat_auth_limit_new(r, what, email, limits, next);
    if (l == NULL) {
        ngx_foko_chat_task_free(task);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_foko_chat_redis_on()) {
        ((ngx_foko_chat_auth_op_t *) task->data)->limit = l;

        if (ngx_foko_chat_auth_storage(r, task, ngx_foko_chat_auth_limit_run,
                                       ngx_foko_chat_auth_limit_done)
            == NGX_OK)
        {
            return NGX_DONE;
        }

        ((ngx_foko_chat_auth_op_t *) task->data)->limit = NULL;
    }

    wait = ngx_foko_chat_auth_limit_zone(r, l);
    ngx_free(l);

    rc = wait ? ngx_foko_chat_auth_too_many(r, what, email, wait)
              : next(r, task);

    if (!task->again) {
        ngx_foko_chat_task_free(task);
    }

    return rc;
}


static ngx_foko_chat_auth_limit_t *
ngx_foko_chat_auth_limit_new(ngx_http_request_t *r, const char *what,
    u_char *email, ngx_uint_t *limits, ngx_foko_chat_auth_next_pt next)
{
    u_char                      *p;
    ngx_str_t                   *key;
    ngx_uint_t                   i;
    ngx_foko_chat_auth_limit_t  *l;
    ngx_foko_chat_main_conf_t   *fmcf;

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);

    l = ngx_alloc(sizeof(ngx_foko_chat_auth_limit_t)
                  + 2 * (NGX_FOKO_CHAT_LIMIT_KEY_MAX + 1), r->connection->log);
    if (l == NULL) {
        return NULL;
    }

    ngx_memzero(l, sizeof(ngx_foko_chat_auth_limit_t));
    l->next = next;
    l->what = what;
    l->email = email;
    p = l->data;

    for (i = (email ? 0 : 1); i < 2; i++) {
        key = ngx_foko_chat_auth_key(r, what, i, email);
        if (key == NULL) {
            ngx_free(l);
            return NULL;
        }

        l->keys[l->n].len = ngx_min(key->len, NGX_FOKO_CHAT_LIMIT_KEY_MAX);
        l->keys[l->n].data = p;
        p = ngx_cpymem(p, key->data, l->keys[l->n].len);
        l->limits[l->n] = fmcf->limits[limits[i]];
        l->n++;
    }

    return l;
}


/* the zone's counters: 0, or the seconds to wait */

static time_t
ngx_foko_chat_auth_limit_zone(ngx_http_request_t *r,
    ngx_foko_chat_auth_limit_t *l)
{
    time_t                    wait, w;
    ngx_uint_t                i;
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ngx_foko_chat_shm_get(r);
    wait = 0;

    for (i = 0; i < l->n; i++) {
        w = ngx_foko_chat_limit_take(shm, &l->keys[i], &l->limits[i]);

        if (w > wait) {
            wait = w;
        }
    }

    return wait;
}


/* on a thread */

static void
ngx_foko_chat_auth_limit_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    ngx_foko_chat_auth_limit_t  *l;

    l = op->limit;
    l->rc = ngx_foko_chat_redis_limit_take(l->keys, l->limits, l->n,
                                           &l->wait, l->err);
}


static ngx_int_t
ngx_foko_chat_auth_limit_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_auth_op_t  *op = task->data;

    time_t                       wait;
    ngx_int_t                    rc;
    ngx_http_request_t          *r;
    ngx_foko_chat_auth_limit_t  *l;

    static ngx_uint_t  down;

    l = op->limit;
    op->limit = NULL;
    r = task->request;

    if (r == NULL) {
        ngx_free(l);
        return NGX_OK;
    }

    if (task->failed || l->rc != NGX_OK) {
        if (!down) {
            down = 1;
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "foko chat: Redis failed for the rate limits "
                          "(%s): this host counts alone until it answers",
                          task->failed ? "no thread took the work"
                                       : (char *) l->err);
        }

        wait = ngx_foko_chat_auth_limit_zone(r, l);

    } else {
        if (down) {
            down = 0;
            ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                          "foko chat: the rate limits are counted in "
                          "Redis again");
        }

        wait = l->wait;
    }

    if (wait) {
        rc = ngx_foko_chat_auth_too_many(r, l->what, l->email, wait);
        ngx_free(l);
        return rc;
    }

    rc = l->next(r, task);
    ngx_free(l);

    if (task->request == NULL) {
        /*
         * "next" answered and let go of the request (its step runs on its
         * own, or could not be posted): the task's end will not finish it
         */
        ngx_http_finalize_request(r, rc);
    }

    return rc;
}


static ngx_int_t
ngx_foko_chat_auth_too_many(ngx_http_request_t *r, const char *what,
    u_char *email, time_t wait)
{
    ngx_table_elt_t  *h;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "foko chat: rate limited %s for \"%s\"", what,
                  email ? email : (u_char *) "");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (h->value.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");
    h->value.len = ngx_sprintf(h->value.data, "%T", wait) - h->value.data;

    return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_RATE_LIMITED,
                                       NULL, NULL);
}


ngx_str_t *
ngx_foko_chat_auth_key(ngx_http_request_t *r, const char *what,
    ngx_uint_t which, u_char *email)
{
    size_t      len;
    ngx_str_t  *key;

    key = ngx_palloc(r->pool, sizeof(ngx_str_t));
    if (key == NULL) {
        return NULL;
    }

    if (which == NGX_FOKO_CHAT_LIMIT_ACCOUNT) {
        len = ngx_strlen(email);

    } else {
        len = r->connection->addr_text.len;
    }

    len += ngx_strlen(what) + sizeof(":address:") - 1;

    key->data = ngx_pnalloc(r->pool, len);
    if (key->data == NULL) {
        return NULL;
    }

    if (which == NGX_FOKO_CHAT_LIMIT_ACCOUNT) {
        key->len = ngx_sprintf(key->data, "%s:account:%s", what, email)
                   - key->data;

    } else {
        key->len = ngx_sprintf(key->data, "%s:address:%V", what,
                               &r->connection->addr_text)
                   - key->data;
    }

    return key;
}
