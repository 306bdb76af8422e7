
/*
 * Foko chat: outgoing mail, a worker's mails from queued to sent or given
 * up (the other files are listed in ngx_foko_chat_mail_int.h).
 *
 * ngx_foko_chat_mail_send() composes the whole request (a SendGrid JSON
 * body or an RFC 5322 message) on the event loop, into one heap block that
 * stays with the mail until it is sent or given up.  Each attempt is a
 * thread task that only runs libcurl; its completion logs the outcome and
 * either frees the mail or arms a cancelable retry timer, so a pending
 * retry never holds a worker that is shutting down.
 *
 * At most NGX_FOKO_CHAT_MAIL_CONCURRENCY attempts of a worker run at once,
 * so that a slow mail provider cannot occupy the thread pool that MongoDB
 * work shares; other mails wait their turn in the mail lane.
 */


#include "ngx_foko_chat_mail_int.h"


static ngx_int_t ngx_foko_chat_mail_init_worker(ngx_log_t *log);
static void ngx_foko_chat_mail_enqueue(ngx_foko_chat_mail_t *mail);
static ngx_int_t ngx_foko_chat_mail_start(ngx_queue_t *q);
static ngx_int_t ngx_foko_chat_mail_post(ngx_foko_chat_mail_t *mail);
static ngx_int_t ngx_foko_chat_mail_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_mail_failed(ngx_foko_chat_mail_t *mail,
    ngx_int_t rc, const char *reason);
static void ngx_foko_chat_mail_retry_handler(ngx_event_t *ev);
static void ngx_foko_chat_mail_free(ngx_foko_chat_mail_t *mail);


/* this worker's mails; their attempts, a few at once, the others wait */
static ngx_queue_t           ngx_foko_chat_mail_all;
static ngx_uint_t            ngx_foko_chat_mail_pending;
static ngx_foko_chat_lane_t  ngx_foko_chat_mail_lane;

/* 0: not initialized yet, 1: libcurl ready, -1: curl_global_init failed */
static ngx_int_t    ngx_foko_chat_mail_state;


ngx_int_t
ngx_foko_chat_mail_init_process(ngx_cycle_t *cycle)
{
    ngx_foko_chat_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_foko_chat_module);

    if (fmcf == NULL || fmcf->mail == NULL) {
        return NGX_OK;
    }

    /* a worker whose libcurl failed still serves chat, without mail */

    (void) ngx_foko_chat_mail_init_worker(cycle->log);

    return NGX_OK;
}


/*
 * curl_global_init() must run before any thread uses libcurl; no mail task
 * exists yet when this runs, either from init_process or from the first
 * ngx_foko_chat_mail_send() of a worker.
 */

static ngx_int_t
ngx_foko_chat_mail_init_worker(ngx_log_t *log)
{
    CURLcode  code;

    if (ngx_foko_chat_mail_state != 0) {
        return ngx_foko_chat_mail_state == 1 ? NGX_OK : NGX_ERROR;
    }

    ngx_queue_init(&ngx_foko_chat_mail_all);

    /* the bound is on the mails: NGX_FOKO_CHAT_MAIL_MAX_PENDING */
    ngx_foko_chat_lane_init(&ngx_foko_chat_mail_lane,
                            NGX_FOKO_CHAT_MAIL_CONCURRENCY, 0,
                            ngx_foko_chat_mail_start);

    code = curl_global_init(CURL_GLOBAL_DEFAULT);

    if (code != CURLE_OK) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "foko chat: curl_global_init() failed: %s; "
                      "this worker sends no mail",
                      curl_easy_strerror(code));
        ngx_foko_chat_mail_state = -1;
        return NGX_ERROR;
    }

    ngx_foko_chat_mail_state = 1;

    return NGX_OK;
}


/* the thread pools have been drained by now */

void
ngx_foko_chat_mail_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t           *q;
    ngx_foko_chat_mail_t  *mail;

    if (ngx_foko_chat_mail_state == 0) {
        return;
    }

    while (!ngx_queue_empty(&ngx_foko_chat_mail_all)) {
        q = ngx_queue_head(&ngx_foko_chat_mail_all);
        mail = ngx_queue_data(q, ngx_foko_chat_mail_t, queue);

        if (mail->running) {
            ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                          "foko chat: %s mail to \"%V\": the outcome of "
                          "attempt %ui is unknown, the worker exits",
                          mail->kind, &mail->to, mail->attempts);

        } else {
            ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                          "foko chat: %s mail to \"%V\" dropped after "
                          "%ui attempt(s): the worker exits",
                          mail->kind, &mail->to, mail->attempts);
        }

        ngx_foko_chat_mail_free(mail);
    }

    if (ngx_foko_chat_mail_state == 1) {
        curl_global_cleanup();
    }

    ngx_foko_chat_mail_state = 0;
}


ngx_int_t
ngx_foko_chat_mail_send(ngx_foko_chat_main_conf_t *fmcf, ngx_log_t *log,
    ngx_foko_chat_mail_kind_e kind, ngx_str_t *to, ngx_str_t *link_path,
    ngx_str_t *detail)
{
    u_char                     *p;
    size_t                      size;
    ngx_int_t                   rc;
    ngx_str_t                   link, payload;
    ngx_pool_t                 *pool;
    const char                 *name;
    ngx_foko_chat_mail_t       *mail;
    ngx_foko_chat_mail_conf_t  *mcf;

    switch (kind) {

    case NGX_FOKO_CHAT_MAIL_RESET:
        name = "password reset";
        break;

    case NGX_FOKO_CHAT_MAIL_INVITE:
        name = "invitation";
        break;

    default:
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "foko chat: unknown mail kind %d", (int) kind);
        return NGX_ERROR;
    }

    /* the address is checked first: it goes into the logs below */

    if (ngx_foko_chat_mail_check_addr(to) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "foko chat: %s mail not sent: invalid recipient "
                      "address of %uz bytes", name, to->len);
        return NGX_ERROR;
    }

    mcf = fmcf->mail;

    if (mcf == NULL) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "foko chat: %s mail to \"%V\" not sent: "
                      "no foko_chat_mail configured", name, to);
        return NGX_OK;
    }

    if (ngx_foko_chat_mail_check_path(link_path) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "foko chat: %s mail to \"%V\" not sent: invalid "
                      "link path of %uz bytes", name, to, link_path->len);
        return NGX_ERROR;
    }

    if (fmcf->storage_pool.pool == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "foko chat: %s mail to \"%V\" not sent: "
                      "no thread pool", name, to);
        return NGX_ERROR;
    }

    if (ngx_foko_chat_mail_init_worker(log) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "foko chat: %s mail to \"%V\" not sent: "
                      "libcurl is not initialized", name, to);
        return NGX_ERROR;
    }

    if (ngx_foko_chat_mail_pending >= NGX_FOKO_CHAT_MAIL_MAX_PENDING) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "foko chat: %s mail to \"%V\" not sent: %ui mails "
                      "are pending in this worker already",
                      name, to, ngx_foko_chat_mail_pending);
        return NGX_ERROR;
    }

    pool = ngx_create_pool(4096, log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    link.len = fmcf->public_url.len + link_path->len;
    link.data = ngx_pnalloc(pool, link.len);
    if (link.data == NULL) {
        goto done;
    }

    p = ngx_cpymem(link.data, fmcf->public_url.data, fmcf->public_url.len);
    ngx_memcpy(p, link_path->data, link_path->len);

    if (ngx_foko_chat_mail_payload(pool, mcf, kind, to, &link, detail,
                                   &payload)
        != NGX_OK)
    {
        goto done;
    }

    /* the mail outlives the request, so it logs to the cycle's log */

    size = sizeof(ngx_foko_chat_mail_t) + 2 * to->len + sizeof("<>")
           + 1 + payload.len;

    mail = ngx_alloc(size, ngx_cycle->log);
    if (mail == NULL) {
        goto done;
    }

    ngx_memzero(mail, sizeof(ngx_foko_chat_mail_t));

    mail->conf = mcf;
    mail->thread_pool = fmcf->storage_pool.pool;
    mail->log = ngx_cycle->log;
    mail->kind = name;

    p = (u_char *) (mail + 1);

    mail->to.data = p;
    mail->to.len = to->len;
    p = ngx_cpymem(p, to->data, to->len);
    *p++ = '\0';

    mail->rcpt = (char *) p;
    p = ngx_sprintf(p, "<%V>%Z", to);

    mail->payload.data = p;
    mail->payload.len = payload.len;
    ngx_memcpy(p, payload.data, payload.len);

    mail->retry.handler = ngx_foko_chat_mail_retry_handler;
    mail->retry.data = mail;
    mail->retry.log = mail->log;
    mail->retry.cancelable = 1;

    ngx_queue_insert_tail(&ngx_foko_chat_mail_all, &mail->queue);
    ngx_foko_chat_mail_pending++;

    /* the link may hold a secret token: debug level only */

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "foko chat: %s mail to \"%V\" queued, link \"%V\"",
                   name, to, &link);

    ngx_foko_chat_mail_enqueue(mail);

    rc = NGX_OK;

done:

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "foko chat: %s mail to \"%V\" not sent: "
                      "out of memory", name, to);
    }

    ngx_destroy_pool(pool);

    return rc;
}


static void
ngx_foko_chat_mail_enqueue(ngx_foko_chat_mail_t *mail)
{
    switch (ngx_foko_chat_lane_enter(&ngx_foko_chat_mail_lane, &mail->wait)) {

    case NGX_OK:
        if (ngx_foko_chat_mail_post(mail) != NGX_OK) {
            ngx_foko_chat_lane_leave(&ngx_foko_chat_mail_lane);
        }

        break;

    default: /* NGX_AGAIN: the lane has no bound of its own */
        mail->waiting = 1;
    }
}


static ngx_int_t
ngx_foko_chat_mail_start(ngx_queue_t *q)
{
    ngx_foko_chat_mail_t  *mail;

    mail = ngx_queue_data(q, ngx_foko_chat_mail_t, wait);
    mail->waiting = 0;

    return ngx_foko_chat_mail_post(mail);
}


/* an attempt on the pool, or its failure handled: retried or given up */

static ngx_int_t
ngx_foko_chat_mail_post(ngx_foko_chat_mail_t *mail)
{
    ngx_foko_chat_task_t          *task;
    ngx_foko_chat_mail_attempt_t  *at;

    mail->attempts++;

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_mail_attempt_t),
                                     mail->log);
    if (task == NULL) {
        ngx_foko_chat_mail_failed(mail, NGX_AGAIN, "out of memory");
        return NGX_ERROR;
    }

    at = task->data;
    at->mail = mail;
    at->pos = mail->payload.data;
    at->left = mail->payload.len;

    task->run = ngx_foko_chat_mail_run;
    task->done = ngx_foko_chat_mail_done;

    if (ngx_foko_chat_task_post(task, mail->thread_pool) != NGX_OK) {
        ngx_foko_chat_task_free(task);
        ngx_foko_chat_mail_failed(mail, NGX_AGAIN,
                                  "the thread pool refused the task");
        return NGX_ERROR;
    }

    mail->running = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_mail_done(ngx_foko_chat_task_t *task)
{
    ngx_foko_chat_mail_attempt_t  *at = task->data;

    u_char                *p, *last;
    ngx_foko_chat_mail_t  *mail;
    u_char                 code[NGX_INT_T_LEN + 1];
    u_char                 reason[CURL_ERROR_SIZE
                                  + NGX_FOKO_CHAT_MAIL_REPLY_MAX + 32];

    mail = at->mail;

    mail->running = 0;

    if (at->rc == NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, mail->log, 0,
                      "foko chat: %s mail to \"%V\" sent via %V "
                      "(attempt %ui)", mail->kind, &mail->to,
                      &mail->conf->endpoint, mail->attempts);

        ngx_foko_chat_mail_free(mail);

    } else {
        last = reason + sizeof(reason) - 1;

        p = ngx_slprintf(reason, last, "%s", at->error);

        /* where an SMTP dialog stopped, unless libcurl said it already */

        if (mail->conf->transport == NGX_FOKO_CHAT_MAIL_SMTP
            && at->status)
        {
            ngx_sprintf(code, "%l%Z", at->status);

            if (ngx_strstr(at->error, code) == NULL) {
                p = ngx_slprintf(p, last, " (last reply %s)", code);
            }
        }

        if (at->reply_len) {
            p = ngx_slprintf(p, last, ": \"%*s\"",
                             at->reply_len, at->reply);
        }

        *p = '\0';

        ngx_foko_chat_mail_failed(mail, at->rc, (char *) reason);
    }

    ngx_foko_chat_lane_leave(&ngx_foko_chat_mail_lane);

    return NGX_OK;
}


static void
ngx_foko_chat_mail_failed(ngx_foko_chat_mail_t *mail, ngx_int_t rc,
    const char *reason)
{
    ngx_msec_t  delay;

    if (rc == NGX_AGAIN && mail->attempts < NGX_FOKO_CHAT_MAIL_ATTEMPTS) {
        delay = NGX_FOKO_CHAT_MAIL_RETRY_DELAY << (mail->attempts - 1);

        ngx_log_error(NGX_LOG_WARN, mail->log, 0,
                      "foko chat: %s mail to \"%V\" via %V failed "
                      "(attempt %ui of %d): %s; retrying in %M ms",
                      mail->kind, &mail->to, &mail->conf->endpoint,
                      mail->attempts, NGX_FOKO_CHAT_MAIL_ATTEMPTS, reason,
                      delay);

        ngx_add_timer(&mail->retry, delay);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, mail->log, 0,
                  "foko chat: %s mail to \"%V\" via %V failed "
                  "(attempt %ui of %d): %s; giving up%s",
                  mail->kind, &mail->to, &mail->conf->endpoint,
                  mail->attempts, NGX_FOKO_CHAT_MAIL_ATTEMPTS, reason,
                  rc == NGX_AGAIN ? "" : ", the error is permanent");

    ngx_foko_chat_mail_free(mail);
}


static void
ngx_foko_chat_mail_retry_handler(ngx_event_t *ev)
{
    ngx_foko_chat_mail_t  *mail = ev->data;

    ngx_foko_chat_mail_enqueue(mail);
}


static void
ngx_foko_chat_mail_free(ngx_foko_chat_mail_t *mail)
{
    if (mail->retry.timer_set) {
        ngx_del_timer(&mail->retry);
    }

    if (mail->waiting) {
        ngx_foko_chat_lane_cancel(&ngx_foko_chat_mail_lane, &mail->wait);
    }

    ngx_queue_remove(&mail->queue);
    ngx_foko_chat_mail_pending--;

    ngx_free(mail);
}
