
/*
 * Foko chat: outgoing mail, its configuration: the foko_chat_mail and
 * foko_chat_public_url directives.  URLs are checked with libcurl's own
 * parser; a SendGrid key is read from its file while the configuration is
 * parsed.
 */


#include "ngx_foko_chat_mail_int.h"


#define NGX_FOKO_CHAT_MAIL_SENDGRID_URL    "https://api.sendgrid.com"
#define NGX_FOKO_CHAT_MAIL_SENDGRID_PATH   "/v3/mail/send"

#define NGX_FOKO_CHAT_MAIL_KEY_MAX         4096
#define NGX_FOKO_CHAT_MAIL_TIMEOUT_MAX     300000


typedef struct {
    ngx_str_t                       scheme;
    ngx_str_t                       origin;
    unsigned                        userinfo:1;
    unsigned                        query:1;
} ngx_foko_chat_mail_url_t;


static char *ngx_foko_chat_mail_read_key(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_str_t *path, ngx_foko_chat_mail_conf_t *mcf);
static ngx_int_t ngx_foko_chat_mail_parse_http(ngx_pool_t *pool,
    u_char *url, ngx_foko_chat_mail_url_t *u);
static ngx_int_t ngx_foko_chat_mail_parse_url(ngx_pool_t *pool, u_char *url,
    ngx_foko_chat_mail_url_t *u);
static ngx_uint_t ngx_foko_chat_mail_url_has(CURLU *h, CURLUPart what);
static ngx_uint_t ngx_foko_chat_mail_curl_has(ngx_str_t *protocol);


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

    if (ngx_foko_chat_mail_parse_http(cf->pool, url.data, &u) != NGX_OK) {
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

    if (ngx_foko_chat_mail_parse_http(cf->pool, url.data, &u) != NGX_OK) {
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


/* http:// or https:// with a host, and no user, query or fragment */

static ngx_int_t
ngx_foko_chat_mail_parse_http(ngx_pool_t *pool, u_char *url,
    ngx_foko_chat_mail_url_t *u)
{
    if (ngx_foko_chat_mail_parse_url(pool, url, u) != NGX_OK
        || u->userinfo
        || u->query)
    {
        return NGX_ERROR;
    }

    if ((u->scheme.len == 4 && ngx_strncmp(u->scheme.data, "http", 4) == 0)
        || (u->scheme.len == 5
            && ngx_strncmp(u->scheme.data, "https", 5) == 0))
    {
        return NGX_OK;
    }

    return NGX_ERROR;
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
