
/*
 * Foko chat: the foko_chat_redis_* directives and their defaults.
 */


#include "ngx_foko_chat_redis_int.h"


static ngx_foko_chat_redis_conf_t *ngx_foko_chat_redis_conf_get(
    ngx_conf_t *cf, void *conf);
static ngx_int_t ngx_foko_chat_redis_parse_url(ngx_conf_t *cf,
    ngx_foko_chat_redis_conf_t *rcf, ngx_str_t *url);


/* the directives: every foko_chat_redis_* shares one struct */

static ngx_foko_chat_redis_conf_t *
ngx_foko_chat_redis_conf_get(ngx_conf_t *cf, void *conf)
{
    ngx_foko_chat_main_conf_t  *fmcf = conf;

    ngx_foko_chat_redis_conf_t  *rcf;

    if (fmcf->redis) {
        return fmcf->redis;
    }

    rcf = ngx_pcalloc(cf->pool, sizeof(ngx_foko_chat_redis_conf_t));
    if (rcf == NULL) {
        return NULL;
    }

    rcf->partitions = NGX_CONF_UNSET_UINT;
    rcf->stream_length = NGX_CONF_UNSET_UINT;

    fmcf->redis = rcf;

    return rcf;
}


char *
ngx_foko_chat_redis_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t                   *value;
    ngx_foko_chat_redis_conf_t  *rcf;

    rcf = ngx_foko_chat_redis_conf_get(cf, conf);
    if (rcf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (rcf->url.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_foko_chat_redis_parse_url(cf, rcf, &value[1]) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid Redis URL \"%V\" in \"%V\": it must be "
                           "redis://ip[:port][/db], with an IPv4 or [IPv6] "
                           "address", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    rcf->url = value[1];

    return NGX_CONF_OK;
}


/* redis://ip[:port][/db]: an address, so that no worker resolves names */

static ngx_int_t
ngx_foko_chat_redis_parse_url(ngx_conf_t *cf, ngx_foko_chat_redis_conf_t *rcf,
    ngx_str_t *url)
{
    u_char     *p, *last, *host, *host_end;
    ngx_int_t   n;
    u_char      addr[16];

    p = url->data;
    last = p + url->len;

    if (url->len < 8 || ngx_strncmp(p, "redis://", 8) != 0) {
        return NGX_ERROR;
    }

    p += 8;

    if (p < last && *p == '[') {
        host = ++p;

        while (p < last && *p != ']') {
            p++;
        }

        if (p == last) {
            return NGX_ERROR;
        }

        host_end = p++;

#if (NGX_HAVE_INET6)
        if (ngx_inet6_addr(host, host_end - host, addr) != NGX_OK) {
            return NGX_ERROR;
        }
#else
        return NGX_ERROR;
#endif

    } else {
        host = p;

        while (p < last && *p != ':' && *p != '/') {
            p++;
        }

        host_end = p;

        if (ngx_inet_addr(host, host_end - host) == INADDR_NONE) {
            return NGX_ERROR;
        }
    }

    if ((size_t) (host_end - host) >= sizeof(rcf->ip)) {
        return NGX_ERROR;
    }

    ngx_memcpy(rcf->ip, host, host_end - host);
    rcf->ip[host_end - host] = '\0';

    rcf->port = 6379;
    rcf->db = 0;

    if (p < last && *p == ':') {
        host = ++p;

        while (p < last && *p != '/') {
            p++;
        }

        n = ngx_atoi(host, p - host);
        if (n < 1 || n > 65535) {
            return NGX_ERROR;
        }

        rcf->port = (int) n;
    }

    if (p < last && *p == '/') {
        p++;

        if (p < last) {
            n = ngx_atoi(p, last - p);
            if (n == NGX_ERROR || n > 65535) {
                return NGX_ERROR;
            }

            rcf->db = (ngx_uint_t) n;
            p = last;
        }
    }

    return (p == last) ? NGX_OK : NGX_ERROR;
}


char *
ngx_foko_chat_redis_host_id(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    u_char                      *p;
    ngx_str_t                   *value;
    ngx_uint_t                   i;
    ngx_foko_chat_redis_conf_t  *rcf;

    rcf = ngx_foko_chat_redis_conf_get(cf, conf);
    if (rcf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (rcf->host_id.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    p = value[1].data;

    for (i = 0; i < value[1].len; i++) {
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z')
              || (p[i] >= '0' && p[i] <= '9')
              || p[i] == '-' || p[i] == '_' || p[i] == '.'))
        {
            break;
        }
    }

    if (value[1].len == 0 || value[1].len > NGX_FOKO_CHAT_HOST_ID_MAX
        || i < value[1].len)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid host id \"%V\" in \"%V\": 1 to %d "
                           "letters, digits, \"-\", \"_\" or \".\"",
                           &value[1], &cmd->name, NGX_FOKO_CHAT_HOST_ID_MAX);
        return NGX_CONF_ERROR;
    }

    rcf->host_id = value[1];

    return NGX_CONF_OK;
}


/* foko_chat_redis_partitions and _stream_length; cmd->post: the bounds */

char *
ngx_foko_chat_redis_number(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_int_t                    n;
    ngx_str_t                   *value;
    ngx_uint_t                  *field;
    ngx_conf_num_bounds_t       *bounds;
    ngx_foko_chat_redis_conf_t  *rcf;

    rcf = ngx_foko_chat_redis_conf_get(cf, conf);
    if (rcf == NULL) {
        return NGX_CONF_ERROR;
    }

    field = (ngx_uint_t *) ((char *) rcf + cmd->offset);

    if (*field != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    bounds = cmd->post;

    n = ngx_atoi(value[1].data, value[1].len);

    if (n == NGX_ERROR || n < bounds->low || n > bounds->high) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\": it must be a "
                           "number from %i to %i", &value[1], &cmd->name,
                           bounds->low, bounds->high);
        return NGX_CONF_ERROR;
    }

    *field = (ngx_uint_t) n;

    return NGX_CONF_OK;
}


char *
ngx_foko_chat_redis_pool(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t                   *value;
    ngx_thread_pool_t           *tp;
    ngx_foko_chat_redis_conf_t  *rcf;

    rcf = ngx_foko_chat_redis_conf_get(cf, conf);
    if (rcf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (rcf->pool.name.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    tp = ngx_thread_pool_get(cf->cycle, &value[1]);
    if (tp == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown thread pool \"%V\" in \"%V\"; "
                           "declare it with \"thread_pool %V ...;\" "
                           "before the http block",
                           &value[1], &cmd->name, &value[1]);
        return NGX_CONF_ERROR;
    }

    rcf->pool.name = value[1];
    rcf->pool.pool = tp;

    return NGX_CONF_OK;
}


/* the defaults; Redis stays off without foko_chat_redis_url */

char *
ngx_foko_chat_redis_init_conf(ngx_conf_t *cf, ngx_foko_chat_main_conf_t *fmcf)
{
    ngx_foko_chat_redis_conf_t  *rcf = fmcf->redis;

    if (rcf == NULL) {
        return NGX_CONF_OK;
    }

    ngx_conf_init_uint_value(rcf->partitions, NGX_FOKO_CHAT_REDIS_PARTITIONS);
    ngx_conf_init_uint_value(rcf->stream_length, NGX_FOKO_CHAT_REDIS_LENGTH);

    if (rcf->url.data == NULL) {
        /* the other directives wait for a URL */
        return NGX_CONF_OK;
    }

    if (rcf->pool.pool == NULL) {
        ngx_str_set(&rcf->pool.name, NGX_FOKO_CHAT_REDIS_POOL);

        rcf->pool.pool = ngx_thread_pool_get(cf->cycle, &rcf->pool.name);
        if (rcf->pool.pool == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"foko_chat_redis_url\" needs the thread "
                               "pool \"%V\": declare it with \"thread_pool "
                               "%V threads=2;\" before the http block, or "
                               "name another one with "
                               "\"foko_chat_redis_thread_pool\"",
                               &rcf->pool.name, &rcf->pool.name);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}
