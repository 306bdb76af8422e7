
/*
 * Foko chat: outgoing mail, one attempt: the run of its thread task, which
 * only drives libcurl (an HTTP POST to SendGrid or an SMTP dialog) and
 * leaves the outcome in the attempt for its completion on the event loop.
 */


#include "ngx_foko_chat_mail_int.h"


#define NGX_FOKO_CHAT_MAIL_USER_AGENT      "foko-chat-nginx"

/* CURLOPT_PROTOCOLS is deprecated since libcurl 7.85 */
#if (LIBCURL_VERSION_NUM >= 0x075500)
#define ngx_foko_chat_mail_protocols(curl, names, bits)                     \
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, names)
#else
#define ngx_foko_chat_mail_protocols(curl, names, bits)                     \
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS, (long) (bits))
#endif


static size_t ngx_foko_chat_mail_read(char *buf, size_t size, size_t n,
    void *data);
static size_t ngx_foko_chat_mail_write(char *buf, size_t size, size_t n,
    void *data);


/* runs on a pool thread: libcurl only, the outcome goes into the attempt */

void
ngx_foko_chat_mail_run(ngx_foko_chat_task_t *task, ngx_log_t *log)
{
    ngx_foko_chat_mail_attempt_t  *at = task->data;

    CURL                       *curl;
    CURLcode                    code;
    struct curl_slist          *list, *l;
    ngx_foko_chat_mail_t       *mail;
    ngx_foko_chat_mail_conf_t  *mcf;

    mail = at->mail;
    mcf = mail->conf;

    at->rc = NGX_AGAIN;
    list = NULL;

    curl = curl_easy_init();
    if (curl == NULL) {
        ngx_cpystrn((u_char *) at->error, (u_char *) "curl_easy_init() failed",
                    CURL_ERROR_SIZE);
        return;
    }

    if (curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, at->error) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_URL, mcf->url) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                            (long) mcf->connect_timeout) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long) mcf->timeout)
           != CURLE_OK)
    {
        goto setopt_failed;
    }

    if (mcf->transport == NGX_FOKO_CHAT_MAIL_SENDGRID) {

        list = curl_slist_append(NULL, mcf->auth_header);
        l = list ? curl_slist_append(list, "Content-Type: application/json")
                 : NULL;
        l = l ? curl_slist_append(l, "Expect:") : NULL;

        if (l == NULL) {
            goto setopt_failed;
        }

        if (ngx_foko_chat_mail_protocols(curl, "http,https",
                                         CURLPROTO_HTTP|CURLPROTO_HTTPS)
            != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_USERAGENT,
                                NGX_FOKO_CHAT_MAIL_USER_AGENT) != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list) != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_POSTFIELDS,
                                (char *) mail->payload.data) != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                                (curl_off_t) mail->payload.len) != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION,
                                ngx_foko_chat_mail_write) != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_WRITEDATA, at) != CURLE_OK)
        {
            goto setopt_failed;
        }

    } else {

        list = curl_slist_append(NULL, mail->rcpt);
        if (list == NULL) {
            goto setopt_failed;
        }

        /*
         * smtp:// upgrades with STARTTLS when offered, and must when it
         * would send a password; smtps:// is TLS from the start
         */

        if (ngx_foko_chat_mail_protocols(curl, "smtp,smtps",
                                         CURLPROTO_SMTP|CURLPROTO_SMTPS)
            != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_USE_SSL,
                                mcf->credentials ? (long) CURLUSESSL_ALL
                                                 : (long) CURLUSESSL_TRY)
               != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_MAIL_FROM, mcf->mail_from)
               != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, list) != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L) != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_READFUNCTION,
                                ngx_foko_chat_mail_read) != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_READDATA, at) != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE,
                                (curl_off_t) mail->payload.len) != CURLE_OK)
        {
            goto setopt_failed;
        }
    }

    code = curl_easy_perform(curl);

    (void) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &at->status);

    if (code != CURLE_OK) {
        if (at->error[0] == '\0') {
            ngx_cpystrn((u_char *) at->error,
                        (u_char *) curl_easy_strerror(code), CURL_ERROR_SIZE);
        }

        /* a refused login or a 5xx SMTP reply will not change by itself */

        if (code == CURLE_LOGIN_DENIED
            || (mcf->transport == NGX_FOKO_CHAT_MAIL_SMTP
                && at->status >= 500))
        {
            at->rc = NGX_ERROR;
        }

        goto done;
    }

    if (mcf->transport == NGX_FOKO_CHAT_MAIL_SENDGRID
        && (at->status < 200 || at->status > 299))
    {
        ngx_sprintf((u_char *) at->error, "HTTP status %l%Z", at->status);

        /* a 4xx (a bad key, a refused address) is final, but for these */

        if (at->status >= 400 && at->status < 500
            && at->status != 408 && at->status != 429)
        {
            at->rc = NGX_ERROR;
        }

        goto done;
    }

    at->rc = NGX_OK;

    goto done;

setopt_failed:

    ngx_cpystrn((u_char *) at->error,
                (u_char *) "cannot set the libcurl options", CURL_ERROR_SIZE);

done:

    curl_easy_cleanup(curl);
    curl_slist_free_all(list);
}


static size_t
ngx_foko_chat_mail_read(char *buf, size_t size, size_t n, void *data)
{
    ngx_foko_chat_mail_attempt_t  *at = data;

    size_t  len;

    len = ngx_min(size * n, at->left);

    ngx_memcpy(buf, at->pos, len);

    at->pos += len;
    at->left -= len;

    return len;
}


/* keeps the start of the answer, printable, for the log */

static size_t
ngx_foko_chat_mail_write(char *buf, size_t size, size_t n, void *data)
{
    ngx_foko_chat_mail_attempt_t  *at = data;

    u_char  *p, *last;

    p = (u_char *) buf;
    last = p + size * n;

    while (p < last && at->reply_len < NGX_FOKO_CHAT_MAIL_REPLY_MAX) {
        at->reply[at->reply_len++] = (*p < 0x20 || *p == 0x7f) ? ' ' : *p;
        p++;
    }

    return size * n;
}
