
/*
 * Foko chat: outgoing mail.
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
 * work shares; other mails wait their turn in a queue.
 */


#include <curl/curl.h>
#include <jansson.h>

#include "ngx_foko_chat_mail.h"
#include "ngx_foko_chat_task.h"


#define NGX_FOKO_CHAT_MAIL_SENDGRID_URL    "https://api.sendgrid.com"
#define NGX_FOKO_CHAT_MAIL_SENDGRID_PATH   "/v3/mail/send"
#define NGX_FOKO_CHAT_MAIL_USER_AGENT      "foko-chat-nginx"

#define NGX_FOKO_CHAT_MAIL_KEY_MAX         4096
#define NGX_FOKO_CHAT_MAIL_ADDR_MAX        254
#define NGX_FOKO_CHAT_MAIL_LINK_MAX        900
#define NGX_FOKO_CHAT_MAIL_DETAIL_MAX      100
#define NGX_FOKO_CHAT_MAIL_REPLY_MAX       200
#define NGX_FOKO_CHAT_MAIL_TIMEOUT_MAX     300000

/* bytes of text per RFC 2047 encoded word: 60 base64 characters */
#define NGX_FOKO_CHAT_MAIL_WORD_TEXT       45

/* CURLOPT_PROTOCOLS is deprecated since libcurl 7.85 */
#if (LIBCURL_VERSION_NUM >= 0x075500)
#define ngx_foko_chat_mail_protocols(curl, names, bits)                     \
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, names)
#else
#define ngx_foko_chat_mail_protocols(curl, names, bits)                     \
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS, (long) (bits))
#endif


typedef enum {
    NGX_FOKO_CHAT_MAIL_SENDGRID = 0,
    NGX_FOKO_CHAT_MAIL_SMTP
} ngx_foko_chat_mail_transport_e;


struct ngx_foko_chat_mail_conf_s {
    ngx_foko_chat_mail_transport_e  transport;

    /* null-terminated, for libcurl */
    char                           *url;
    char                           *auth_header;
    char                           *mail_from;

    ngx_str_t                       from;
    ngx_str_t                       domain;

    /* the endpoint as logged: never a key or a password */
    ngx_str_t                       endpoint;

    ngx_msec_t                      timeout;
    ngx_msec_t                      connect_timeout;

    /* the SMTP URL carries a user and password: TLS is required then */
    unsigned                        credentials:1;
};


typedef struct {
    ngx_foko_chat_mail_conf_t      *conf;
    ngx_thread_pool_t              *thread_pool;
    ngx_log_t                      *log;
    const char                     *kind;

    /* null-terminated; rcpt is "<to>" */
    ngx_str_t                       to;
    char                           *rcpt;

    /* the JSON body or the RFC 5322 message */
    ngx_str_t                       payload;

    ngx_uint_t                      attempts;
    ngx_event_t                     retry;

    ngx_queue_t                     queue;
    ngx_queue_t                     wait;

    unsigned                        running:1;
    unsigned                        waiting:1;
} ngx_foko_chat_mail_t;


/* one attempt: the data of its thread task */
typedef struct {
    ngx_foko_chat_mail_t           *mail;

    /* the part of the message the SMTP upload has not read yet */
    u_char                         *pos;
    size_t                          left;

    /* NGX_OK: sent, NGX_AGAIN: worth retrying, NGX_ERROR: not */
    ngx_int_t                       rc;
    long                            status;
    char                            error[CURL_ERROR_SIZE];
    u_char                          reply[NGX_FOKO_CHAT_MAIL_REPLY_MAX];
    size_t                          reply_len;
} ngx_foko_chat_mail_attempt_t;


typedef struct {
    ngx_str_t                       scheme;
    ngx_str_t                       origin;
    unsigned                        userinfo:1;
    unsigned                        query:1;
} ngx_foko_chat_mail_url_t;


static char *ngx_foko_chat_mail_read_key(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_str_t *path, ngx_foko_chat_mail_conf_t *mcf);
static ngx_int_t ngx_foko_chat_mail_parse_url(ngx_pool_t *pool, u_char *url,
    ngx_foko_chat_mail_url_t *u);
static ngx_uint_t ngx_foko_chat_mail_url_has(CURLU *h, CURLUPart what);
static ngx_uint_t ngx_foko_chat_mail_curl_has(ngx_str_t *protocol);
static ngx_int_t ngx_foko_chat_mail_check_addr(ngx_str_t *addr);
static ngx_int_t ngx_foko_chat_mail_check_path(ngx_str_t *path);
static ngx_int_t ngx_foko_chat_mail_init_worker(ngx_log_t *log);

static void ngx_foko_chat_mail_clean(ngx_str_t *src, u_char *dst,
    ngx_str_t *out);
static ngx_int_t ngx_foko_chat_mail_compose(ngx_pool_t *pool,
    ngx_foko_chat_mail_kind_e kind, ngx_str_t *detail, ngx_str_t *link,
    ngx_str_t *subject, ngx_str_t *text);
static ngx_int_t ngx_foko_chat_mail_sendgrid_body(ngx_pool_t *pool,
    ngx_foko_chat_mail_conf_t *mcf, ngx_str_t *to, ngx_str_t *subject,
    ngx_str_t *text, ngx_str_t *out);
static ngx_int_t ngx_foko_chat_mail_message(ngx_pool_t *pool,
    ngx_foko_chat_mail_conf_t *mcf, ngx_str_t *to, ngx_str_t *subject,
    ngx_str_t *text, ngx_str_t *out);
static u_char *ngx_foko_chat_mail_header_text(u_char *p, ngx_str_t *text);
static u_char *ngx_foko_chat_mail_date(u_char *p);

static void ngx_foko_chat_mail_enqueue(ngx_foko_chat_mail_t *mail);
static void ngx_foko_chat_mail_dispatch(void);
static void ngx_foko_chat_mail_post(ngx_foko_chat_mail_t *mail);
static void ngx_foko_chat_mail_run(ngx_foko_chat_task_t *task,
    ngx_log_t *log);
static size_t ngx_foko_chat_mail_read(char *buf, size_t size, size_t n,
    void *data);
static size_t ngx_foko_chat_mail_write(char *buf, size_t size, size_t n,
    void *data);
static ngx_int_t ngx_foko_chat_mail_done(ngx_foko_chat_task_t *task);
static void ngx_foko_chat_mail_failed(ngx_foko_chat_mail_t *mail,
    ngx_int_t rc, const char *reason);
static void ngx_foko_chat_mail_retry_handler(ngx_event_t *ev);
static void ngx_foko_chat_mail_free(ngx_foko_chat_mail_t *mail);


/* this worker's mails: all of them, and those waiting for a thread */
static ngx_queue_t  ngx_foko_chat_mail_all;
static ngx_queue_t  ngx_foko_chat_mail_ready;
static ngx_uint_t   ngx_foko_chat_mail_pending;
static ngx_uint_t   ngx_foko_chat_mail_running;
static ngx_uint_t   ngx_foko_chat_mail_serial;

/* 0: not initialized yet, 1: libcurl ready, -1: curl_global_init failed */
static ngx_int_t    ngx_foko_chat_mail_state;


static const char  *ngx_foko_chat_mail_week[] = {
    "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"
};

static const char  *ngx_foko_chat_mail_months[] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
};


/*
 * foko_chat_mail sendgrid key_file=<path> from=<addr> [url=<base>]
 *     [timeout=<time>];
 * foko_chat_mail smtp[s]://[user:pass@]host[:port] from=<addr>
 *     [timeout=<time>];
 */

char *
ngx_foko_chat_mail_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_foko_chat_main_conf_t  *fmcf = conf;

    u_char                     *p;
    ngx_int_t                   n;
    ngx_str_t                  *value, from, key_file, url, timeout;
    ngx_uint_t                  i;
    ngx_foko_chat_mail_url_t    u;
    ngx_foko_chat_mail_conf_t  *mcf;

    if (fmcf->mail) {
        return "is duplicate";
    }

    value = cf->args->elts;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_foko_chat_mail_conf_t));
    if (mcf == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_str_null(&from);
    ngx_str_null(&key_file);
    ngx_str_null(&url);
    ngx_str_null(&timeout);

    /* the parser null-terminates each word, hence each value too */

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "from=", 5) == 0) {
            from.data = value[i].data + 5;
            from.len = value[i].len - 5;
            continue;
        }

        if (ngx_strncmp(value[i].data, "key_file=", 9) == 0) {
            key_file.data = value[i].data + 9;
            key_file.len = value[i].len - 9;
            continue;
        }

        if (ngx_strncmp(value[i].data, "url=", 4) == 0) {
            url.data = value[i].data + 4;
            url.len = value[i].len - 4;
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            timeout.data = value[i].data + 8;
            timeout.len = value[i].len - 8;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\"",
                           &value[i], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (value[1].len == 8
        && ngx_strncmp(value[1].data, "sendgrid", 8) == 0)
    {
        mcf->transport = NGX_FOKO_CHAT_MAIL_SENDGRID;

    } else if (ngx_strncasecmp(value[1].data, (u_char *) "smtp://", 7) == 0
               || ngx_strncasecmp(value[1].data, (u_char *) "smtps://", 8)
                  == 0)
    {
        mcf->transport = NGX_FOKO_CHAT_MAIL_SMTP;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid mail transport \"%V\" in \"%V\": "
                           "expected \"sendgrid\", \"smtp://...\" or "
                           "\"smtps://...\"", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (from.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V %V\" needs \"from=<address>\"",
                           &cmd->name, &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_foko_chat_mail_check_addr(&from) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid address \"%V\" in \"from=\" of \"%V\"",
                           &from, &cmd->name);
        return NGX_CONF_ERROR;
    }

    mcf->from = from;

    /* the domain, for Message-ID, follows the last "@" */

    for (p = from.data + from.len - 1; *p != '@'; p--) { /* void */ }

    mcf->domain.data = p + 1;
    mcf->domain.len = from.data + from.len - (p + 1);

    mcf->timeout = NGX_FOKO_CHAT_MAIL_TIMEOUT;

    if (timeout.data) {
        n = ngx_parse_time(&timeout, 0);

        if (n == NGX_ERROR || n == 0 || n > NGX_FOKO_CHAT_MAIL_TIMEOUT_MAX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid timeout \"%V\" in \"%V\": expected "
                               "a time between 1ms and 300s",
                               &timeout, &cmd->name);
            return NGX_CONF_ERROR;
        }

        mcf->timeout = (ngx_msec_t) n;
    }

    mcf->connect_timeout = ngx_min(mcf->timeout,
                                   NGX_FOKO_CHAT_MAIL_CONNECT_TIMEOUT);

    if (mcf->transport == NGX_FOKO_CHAT_MAIL_SMTP) {

        if (key_file.data || url.data) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" takes \"key_file=\" and \"url=\" "
                               "with \"sendgrid\" only", &cmd->name);
            return NGX_CONF_ERROR;
        }

        u.scheme.data = value[1].data;
        u.scheme.len = ngx_strlchr(value[1].data,
                                   value[1].data + value[1].len, ':')
                       - value[1].data;

        if (!ngx_foko_chat_mail_curl_has(&u.scheme)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" in \"%V\" needs libcurl with %V "
                               "support, which this one lacks",
                               &value[1], &cmd->name, &u.scheme);
            return NGX_CONF_ERROR;
        }

        if (ngx_foko_chat_mail_parse_url(cf->pool, value[1].data, &u)
            != NGX_OK
            || u.query)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid SMTP URL \"%V\" in \"%V\": expected "
                               "smtp[s]://[user:password@]host[:port]",
                               &value[1], &cmd->name);
            return NGX_CONF_ERROR;
        }

        mcf->url = (char *) value[1].data;
        mcf->endpoint = u.origin;
        mcf->credentials = u.userinfo;

        mcf->mail_from = ngx_pnalloc(cf->pool, from.len + 3);
        if (mcf->mail_from == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_sprintf((u_char *) mcf->mail_from, "<%V>%Z", &from);

        fmcf->mail = mcf;

        return NGX_CONF_OK;
    }

    if (key_file.data == NULL || key_file.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V sendgrid\" needs \"key_file=<path>\"",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (url.data == NULL) {
        ngx_str_set(&url, NGX_FOKO_CHAT_MAIL_SENDGRID_URL);
    }

    if (ngx_foko_chat_mail_parse_url(cf->pool, url.data, &u) != NGX_OK
        || u.userinfo
        || u.query
        || !((u.scheme.len == 4
              && ngx_strncmp(u.scheme.data, "http", 4) == 0)
             || (u.scheme.len == 5
                 && ngx_strncmp(u.scheme.data, "https", 5) == 0)))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid URL \"%V\" in \"url=\" of \"%V\": "
                           "expected http:// or https:// with a host and "
                           "no user, query or fragment", &url, &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (!ngx_foko_chat_mail_curl_has(&u.scheme)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"url=%V\" in \"%V\" needs libcurl with %V "
                           "support, which this one lacks",
                           &url, &cmd->name, &u.scheme);
        return NGX_CONF_ERROR;
    }

    while (url.len && url.data[url.len - 1] == '/') {
        url.len--;
    }

    mcf->url = ngx_pnalloc(cf->pool,
                           url.len + sizeof(NGX_FOKO_CHAT_MAIL_SENDGRID_PATH));
    if (mcf->url == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf((u_char *) mcf->url,
                "%V" NGX_FOKO_CHAT_MAIL_SENDGRID_PATH "%Z", &url);

    mcf->endpoint.len = sizeof("sendgrid ") - 1 + url.len;
    mcf->endpoint.data = ngx_pnalloc(cf->pool, mcf->endpoint.len);
    if (mcf->endpoint.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(mcf->endpoint.data, "sendgrid %V", &url);

    if (ngx_foko_chat_mail_read_key(cf, cmd, &key_file, mcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    fmcf->mail = mcf;

    return NGX_CONF_OK;
}


/*
 * The key is read while the configuration is parsed, as the master's user
 * may read files a worker cannot.  It must be one token: surrounding white
 * space and a final newline are trimmed.
 */

static char *
ngx_foko_chat_mail_read_key(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_str_t *path, ngx_foko_chat_mail_conf_t *mcf)
{
    char        *rv;
    u_char      *start, *end, *p;
    size_t       size;
    ssize_t      n;
    ngx_fd_t     fd;
    ngx_err_t    err;
    ngx_str_t    name;
    u_char       buf[NGX_FOKO_CHAT_MAIL_KEY_MAX + 1];

    name = *path;

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot open key_file \"%s\" of \"%V\"",
                           name.data, &cmd->name);
        return NGX_CONF_ERROR;
    }

    rv = NGX_CONF_ERROR;
    size = 0;

    for ( ;; ) {
        n = ngx_read_fd(fd, buf + size, sizeof(buf) - size);

        if (n == -1) {
            err = ngx_errno;

            if (err == NGX_EINTR) {
                continue;
            }

            ngx_conf_log_error(NGX_LOG_EMERG, cf, err,
                               "cannot read key_file \"%s\" of \"%V\"",
                               name.data, &cmd->name);
            goto done;
        }

        if (n == 0) {
            break;
        }

        size += n;

        if (size == sizeof(buf)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "key_file \"%s\" of \"%V\" is larger than "
                               "%d bytes", name.data, &cmd->name,
                               NGX_FOKO_CHAT_MAIL_KEY_MAX);
            goto done;
        }
    }

    start = buf;
    end = buf + size;

    while (start < end && (*start == ' ' || *start == '\t'
                           || *start == CR || *start == LF))
    {
        start++;
    }

    while (end > start && (end[-1] == ' ' || end[-1] == '\t'
                           || end[-1] == CR || end[-1] == LF))
    {
        end--;
    }

    if (start == end) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key_file \"%s\" of \"%V\" holds no key",
                           name.data, &cmd->name);
        goto done;
    }

    /* the key goes into a header line */

    for (p = start; p < end; p++) {
        if (*p <= ' ' || *p >= 0x7f) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "key_file \"%s\" of \"%V\" holds more than "
                               "one word or a non-ASCII character",
                               name.data, &cmd->name);
            goto done;
        }
    }

    mcf->auth_header = ngx_pnalloc(cf->pool, sizeof("Authorization: Bearer ")
                                             + (end - start));
    if (mcf->auth_header == NULL) {
        goto done;
    }

    p = ngx_cpymem(mcf->auth_header, "Authorization: Bearer ",
                   sizeof("Authorization: Bearer ") - 1);
    p = ngx_cpymem(p, start, end - start);
    *p = '\0';

    rv = NGX_CONF_OK;

done:

    ngx_explicit_memzero(buf, sizeof(buf));

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%s\" failed", name.data);
    }

    return rv;
}


/* foko_chat_public_url http[s]://host[:port][/path] */

char *
ngx_foko_chat_mail_public_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_foko_chat_main_conf_t  *fmcf = conf;

    ngx_str_t                 *value, url;
    ngx_foko_chat_mail_url_t   u;

    if (fmcf->public_url.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    url = value[1];

    if (ngx_foko_chat_mail_parse_url(cf->pool, url.data, &u) != NGX_OK
        || u.userinfo
        || u.query
        || !((u.scheme.len == 4
              && ngx_strncmp(u.scheme.data, "http", 4) == 0)
             || (u.scheme.len == 5
                 && ngx_strncmp(u.scheme.data, "https", 5) == 0)))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid URL \"%V\" in \"%V\": expected "
                           "http:// or https:// with a host and no user, "
                           "query or fragment", &url, &cmd->name);
        return NGX_CONF_ERROR;
    }

    /* links are public_url + "/...", so a trailing slash would double */

    while (url.len && url.data[url.len - 1] == '/') {
        url.len--;
    }

    fmcf->public_url = url;

    return NGX_CONF_OK;
}


char *
ngx_foko_chat_mail_init_main_conf(ngx_conf_t *cf,
    ngx_foko_chat_main_conf_t *fmcf)
{
    if (fmcf->mail && fmcf->public_url.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"foko_chat_mail\" needs \"foko_chat_public_url\" "
                           "for the links it sends");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * URLs are checked with libcurl's own parser, so that what passes here is
 * what libcurl will use.  The origin is "scheme://host:port", without
 * credentials: the form that logs show.
 */

static ngx_int_t
ngx_foko_chat_mail_parse_url(ngx_pool_t *pool, u_char *url,
    ngx_foko_chat_mail_url_t *u)
{
    char       *scheme, *host, *port;
    CURLU      *h;
    ngx_int_t   rc;

    h = curl_url();
    if (h == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;
    scheme = NULL;
    host = NULL;
    port = NULL;

    if (curl_url_set(h, CURLUPART_URL, (char *) url, 0) != CURLUE_OK
        || curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK
        || curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK
        || curl_url_get(h, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT)
           != CURLUE_OK
        || host[0] == '\0')
    {
        goto done;
    }

    u->userinfo = ngx_foko_chat_mail_url_has(h, CURLUPART_USER)
                  || ngx_foko_chat_mail_url_has(h, CURLUPART_PASSWORD);
    u->query = ngx_foko_chat_mail_url_has(h, CURLUPART_QUERY)
               || ngx_foko_chat_mail_url_has(h, CURLUPART_FRAGMENT);

    u->scheme.len = ngx_strlen(scheme);
    u->scheme.data = (u_char *) scheme;
    u->scheme.data = ngx_pstrdup(pool, &u->scheme);
    if (u->scheme.data == NULL) {
        goto done;
    }

    u->origin.len = u->scheme.len + sizeof("://:") - 1 + ngx_strlen(host)
                    + ngx_strlen(port);
    u->origin.data = ngx_pnalloc(pool, u->origin.len);
    if (u->origin.data == NULL) {
        goto done;
    }

    ngx_sprintf(u->origin.data, "%s://%s:%s", scheme, host, port);

    rc = NGX_OK;

done:

    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(h);

    return rc;
}


static ngx_uint_t
ngx_foko_chat_mail_url_has(CURLU *h, CURLUPart what)
{
    char  *part;

    if (curl_url_get(h, what, &part, 0) != CURLUE_OK) {
        return 0;
    }

    curl_free(part);

    return 1;
}


static ngx_uint_t
ngx_foko_chat_mail_curl_has(ngx_str_t *protocol)
{
    const char *const       *p;
    curl_version_info_data  *info;

    info = curl_version_info(CURLVERSION_NOW);

    for (p = info->protocols; *p; p++) {
        if (ngx_strlen(*p) == protocol->len
            && ngx_strncasecmp((u_char *) *p, protocol->data, protocol->len)
               == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * A plain addr-spec, as a header and an SMTP envelope can carry it as is:
 * printable ASCII, no white space, no quoting, one "@" not at either end.
 */

static ngx_int_t
ngx_foko_chat_mail_check_addr(ngx_str_t *addr)
{
    u_char  *p, *last, *at;

    if (addr->len == 0 || addr->len > NGX_FOKO_CHAT_MAIL_ADDR_MAX) {
        return NGX_ERROR;
    }

    at = NULL;
    last = addr->data + addr->len;

    for (p = addr->data; p < last; p++) {

        if (*p <= ' ' || *p >= 0x7f) {
            return NGX_ERROR;
        }

        switch (*p) {

        case '"': case '(': case ')': case ',': case ':': case ';':
        case '<': case '>': case '[': case ']': case '\\':
            return NGX_ERROR;

        case '@':
            at = p;
            break;
        }
    }

    if (at == NULL || at == addr->data || at == last - 1) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the caller's part of a link: "/...", printable ASCII, escaped already */

static ngx_int_t
ngx_foko_chat_mail_check_path(ngx_str_t *path)
{
    u_char  *p, *last;

    if (path->len == 0 || path->data[0] != '/'
        || path->len > NGX_FOKO_CHAT_MAIL_LINK_MAX)
    {
        return NGX_ERROR;
    }

    last = path->data + path->len;

    for (p = path->data; p < last; p++) {
        if (*p <= ' ' || *p >= 0x7f) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


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
    ngx_queue_init(&ngx_foko_chat_mail_ready);

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
    ngx_str_t                   link, clean, subject, text, payload;
    ngx_pool_t                 *pool;
    const char                 *name;
    ngx_foko_chat_mail_t       *mail;
    ngx_foko_chat_mail_conf_t  *mcf;
    u_char                      buf[NGX_FOKO_CHAT_MAIL_DETAIL_MAX];

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

    ngx_foko_chat_mail_clean(detail, buf, &clean);

    if (ngx_foko_chat_mail_compose(pool, kind, &clean, &link, &subject, &text)
        != NGX_OK)
    {
        goto done;
    }

    if (mcf->transport == NGX_FOKO_CHAT_MAIL_SENDGRID) {
        rc = ngx_foko_chat_mail_sendgrid_body(pool, mcf, to, &subject, &text,
                                              &payload);

    } else {
        rc = ngx_foko_chat_mail_message(pool, mcf, to, &subject, &text,
                                        &payload);
    }

    if (rc != NGX_OK) {
        goto done;
    }

    rc = NGX_ERROR;

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


/*
 * The caller's detail (a user or channel name) goes into a subject line
 * and a JSON string: it is cut to NGX_FOKO_CHAT_MAIL_DETAIL_MAX bytes at a
 * character boundary, control characters become spaces, and bytes that
 * are not UTF-8 become "?".
 */

static void
ngx_foko_chat_mail_clean(ngx_str_t *src, u_char *dst, ngx_str_t *out)
{
    u_char    *p, *last, *start, *d;
    uint32_t   ch;

    d = dst;
    out->data = dst;
    out->len = 0;

    if (src == NULL || src->data == NULL) {
        return;
    }

    p = src->data;
    last = p + src->len;

    while (p < last) {
        start = p;

        if (*p < 0x80) {
            ch = *p++;

        } else {
            ch = ngx_utf8_decode(&p, last - p);

            if (ch > 0x10ffff || (ch >= 0xd800 && ch <= 0xdfff)) {
                p = start + 1;
                ch = '?';
            }
        }

        if (d + (p - start) > dst + NGX_FOKO_CHAT_MAIL_DETAIL_MAX) {
            break;
        }

        if (ch < 0x20 || (ch >= 0x7f && ch < 0xa0)) {
            *d++ = ' ';

        } else if (ch < 0x80) {
            *d++ = (u_char) ch;

        } else {
            d = ngx_cpymem(d, start, p - start);
        }
    }

    out->len = d - dst;
}


static ngx_int_t
ngx_foko_chat_mail_compose(ngx_pool_t *pool, ngx_foko_chat_mail_kind_e kind,
    ngx_str_t *detail, ngx_str_t *link, ngx_str_t *subject, ngx_str_t *text)
{
    u_char  *p;
    size_t   len;

    len = 512 + detail->len + link->len;

    subject->data = ngx_pnalloc(pool, 64 + detail->len);
    text->data = ngx_pnalloc(pool, len);

    if (subject->data == NULL || text->data == NULL) {
        return NGX_ERROR;
    }

    p = text->data;

    if (kind == NGX_FOKO_CHAT_MAIL_RESET) {
        subject->len = ngx_sprintf(subject->data,
                                   "Reset your Foko chat password")
                       - subject->data;

        if (detail->len) {
            p = ngx_sprintf(p, "Hello %V,\n\n", detail);

        } else {
            p = ngx_sprintf(p, "Hello,\n\n");
        }

        p = ngx_sprintf(p,
                "Someone, probably you, asked to reset the password of "
                "your\nFoko chat account. To choose a new password, open "
                "this link:\n\n%V\n\nThe link works once and expires soon. "
                "If you did not ask for it,\nignore this message: your "
                "password stays as it is.\n", link);

    } else {
        if (detail->len) {
            subject->len = ngx_sprintf(subject->data,
                                       "Invitation to Foko chat: %V", detail)
                           - subject->data;

            p = ngx_sprintf(p, "Hello,\n\nYou are invited to a conversation "
                            "on Foko chat: %V\n\n", detail);

        } else {
            subject->len = ngx_sprintf(subject->data,
                                       "Invitation to Foko chat")
                           - subject->data;

            p = ngx_sprintf(p, "Hello,\n\nYou are invited to a conversation "
                            "on Foko chat.\n\n");
        }

        p = ngx_sprintf(p,
                "To join it, open this link:\n\n%V\n\nIf you did not "
                "expect this invitation, you can ignore this message.\n",
                link);
    }

    text->len = p - text->data;

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_mail_sendgrid_body(ngx_pool_t *pool,
    ngx_foko_chat_mail_conf_t *mcf, ngx_str_t *to, ngx_str_t *subject,
    ngx_str_t *text, ngx_str_t *out)
{
    size_t    len;
    json_t   *body;

    body = json_pack("{s:[{s:[{s:s%}]}],s:{s:s%},s:s%,s:[{s:s,s:s%}]}",
                     "personalizations",
                       "to",
                         "email", to->data, to->len,
                     "from",
                       "email", mcf->from.data, mcf->from.len,
                     "subject", subject->data, subject->len,
                     "content",
                       "type", "text/plain",
                       "value", text->data, text->len);
    if (body == NULL) {
        return NGX_ERROR;
    }

    len = json_dumpb(body, NULL, 0, JSON_COMPACT);

    out->data = (len == 0) ? NULL : ngx_pnalloc(pool, len);

    if (out->data == NULL) {
        json_decref(body);
        return NGX_ERROR;
    }

    out->len = json_dumpb(body, (char *) out->data, len, JSON_COMPACT);

    json_decref(body);

    return (out->len == len) ? NGX_OK : NGX_ERROR;
}


/*
 * An RFC 5322 message with CRLF line ends, as the SMTP DATA phase takes
 * it (libcurl escapes leading dots).  A body that is not ASCII goes in
 * base64, so that the relay needs no 8BITMIME.
 */

static ngx_int_t
ngx_foko_chat_mail_message(ngx_pool_t *pool, ngx_foko_chat_mail_conf_t *mcf,
    ngx_str_t *to, ngx_str_t *subject, ngx_str_t *text, ngx_str_t *out)
{
    u_char         *p, *s, *last;
    size_t          len;
    ngx_str_t       crlf, b64, body;
    ngx_uint_t      ascii;
    ngx_time_t     *tp;
    const char     *encoding;

    crlf.data = ngx_pnalloc(pool, 2 * text->len);
    if (crlf.data == NULL) {
        return NGX_ERROR;
    }

    ascii = 1;
    p = crlf.data;
    last = text->data + text->len;

    for (s = text->data; s < last; s++) {
        if (*s == LF) {
            *p++ = CR;

        } else if (*s >= 0x80) {
            ascii = 0;
        }

        *p++ = *s;
    }

    crlf.len = p - crlf.data;

    if (ascii) {
        body = crlf;
        encoding = "7bit";

    } else {
        b64.len = ngx_base64_encoded_length(crlf.len);
        b64.data = ngx_pnalloc(pool, b64.len);

        body.data = ngx_pnalloc(pool, b64.len + (b64.len / 76 + 1) * 2);

        if (b64.data == NULL || body.data == NULL) {
            return NGX_ERROR;
        }

        ngx_encode_base64(&b64, &crlf);

        p = body.data;

        for (s = b64.data; s < b64.data + b64.len; s += 76) {
            len = ngx_min(76, (size_t) (b64.data + b64.len - s));
            p = ngx_cpymem(p, s, len);
            *p++ = CR;
            *p++ = LF;
        }

        body.len = p - body.data;
        encoding = "base64";
    }

    len = 512 + mcf->from.len + mcf->domain.len + to->len
          + (subject->len / 40 + 1) * 80 + body.len;

    out->data = ngx_pnalloc(pool, len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    tp = ngx_timeofday();

    p = ngx_cpymem(out->data, "Date: ", sizeof("Date: ") - 1);
    p = ngx_foko_chat_mail_date(p);

    p = ngx_sprintf(p, CRLF "From: %V" CRLF "To: %V" CRLF "Subject: ",
                    &mcf->from, to);
    p = ngx_foko_chat_mail_header_text(p, subject);

    p = ngx_sprintf(p, CRLF "Message-ID: <%xL.%xL.%P.%ui@%V>" CRLF
                    "MIME-Version: 1.0" CRLF
                    "Content-Type: text/plain; charset=utf-8" CRLF
                    "Content-Transfer-Encoding: %s" CRLF
                    "Auto-Submitted: auto-generated" CRLF CRLF,
                    (uint64_t) tp->sec * 1000 + tp->msec,
                    (uint64_t) ngx_random(), ngx_pid,
                    ++ngx_foko_chat_mail_serial, &mcf->domain, encoding);

    p = ngx_cpymem(p, body.data, body.len);

    out->len = p - out->data;

    return NGX_OK;
}


/*
 * Printable ASCII goes as is; other text as RFC 2047 "B" encoded words of
 * at most 75 characters on folded lines, never splitting a character.
 * Room needed: (text->len / 40 + 1) * 80 bytes.
 */

static u_char *
ngx_foko_chat_mail_header_text(u_char *p, ngx_str_t *text)
{
    u_char     *s, *end, *last;
    ngx_str_t   src, dst;

    end = text->data + text->len;

    for (s = text->data; s < end; s++) {
        if (*s < 0x20 || *s >= 0x7f) {
            break;
        }
    }

    if (s == end) {
        return ngx_cpymem(p, text->data, text->len);
    }

    for (s = text->data; s < end; s = last) {
        last = s + ngx_min(NGX_FOKO_CHAT_MAIL_WORD_TEXT, (size_t) (end - s));

        while (last < end && last > s + 1 && (*last & 0xc0) == 0x80) {
            last--;
        }

        if (s != text->data) {
            *p++ = CR;
            *p++ = LF;
            *p++ = ' ';
        }

        p = ngx_cpymem(p, "=?UTF-8?B?", sizeof("=?UTF-8?B?") - 1);

        src.data = s;
        src.len = last - s;
        dst.data = p;

        ngx_encode_base64(&dst, &src);

        p += dst.len;
        *p++ = '?';
        *p++ = '=';
    }

    return p;
}


static u_char *
ngx_foko_chat_mail_date(u_char *p)
{
    ngx_tm_t  tm;

    ngx_gmtime(ngx_time(), &tm);

    return ngx_sprintf(p, "%s, %02d %s %4d %02d:%02d:%02d +0000",
                       ngx_foko_chat_mail_week[tm.ngx_tm_wday],
                       tm.ngx_tm_mday,
                       ngx_foko_chat_mail_months[tm.ngx_tm_mon - 1],
                       tm.ngx_tm_year, tm.ngx_tm_hour, tm.ngx_tm_min,
                       tm.ngx_tm_sec);
}


static void
ngx_foko_chat_mail_enqueue(ngx_foko_chat_mail_t *mail)
{
    ngx_queue_insert_tail(&ngx_foko_chat_mail_ready, &mail->wait);
    mail->waiting = 1;

    ngx_foko_chat_mail_dispatch();
}


static void
ngx_foko_chat_mail_dispatch(void)
{
    ngx_queue_t           *q;
    ngx_foko_chat_mail_t  *mail;

    while (ngx_foko_chat_mail_running < NGX_FOKO_CHAT_MAIL_CONCURRENCY
           && !ngx_queue_empty(&ngx_foko_chat_mail_ready))
    {
        q = ngx_queue_head(&ngx_foko_chat_mail_ready);
        mail = ngx_queue_data(q, ngx_foko_chat_mail_t, wait);

        ngx_queue_remove(q);
        mail->waiting = 0;

        ngx_foko_chat_mail_post(mail);
    }
}


static void
ngx_foko_chat_mail_post(ngx_foko_chat_mail_t *mail)
{
    ngx_foko_chat_task_t          *task;
    ngx_foko_chat_mail_attempt_t  *at;

    mail->attempts++;

    task = ngx_foko_chat_task_create(sizeof(ngx_foko_chat_mail_attempt_t),
                                     mail->log);
    if (task == NULL) {
        ngx_foko_chat_mail_failed(mail, NGX_AGAIN, "out of memory");
        return;
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
        return;
    }

    mail->running = 1;
    ngx_foko_chat_mail_running++;
}


/* runs on a pool thread: libcurl only, the outcome goes into the attempt */

static void
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
    ngx_foko_chat_mail_running--;

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

    ngx_foko_chat_mail_dispatch();

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
        ngx_queue_remove(&mail->wait);
    }

    ngx_queue_remove(&mail->queue);
    ngx_foko_chat_mail_pending--;

    ngx_free(mail);
}
