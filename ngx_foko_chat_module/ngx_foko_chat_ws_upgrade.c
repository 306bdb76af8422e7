
/*
 * Foko chat: the WebSocket upgrade: the handshake, the Origin check and
 * the foko_chat_allowed_origins directive.
 */


#include "ngx_foko_chat_ws_int.h"


static ngx_int_t ngx_foko_chat_ws_refuse(ngx_http_request_t *r,
    ngx_foko_chat_err_e e);
static ngx_table_elt_t *ngx_foko_chat_ws_header_in(ngx_http_request_t *r,
    const char *name);
static ngx_int_t ngx_foko_chat_ws_origin_ok(ngx_http_request_t *r,
    ngx_table_elt_t *origin);
static void ngx_foko_chat_ws_request_cleanup(void *data);
static void ngx_foko_chat_ws_handshake_read(ngx_event_t *rev);
static void ngx_foko_chat_ws_handshake_write(ngx_event_t *wev);


static ngx_str_t  ngx_foko_chat_ws_status_line =
    ngx_string("101 Switching Protocols");


/* the upgrade */

ngx_int_t
ngx_foko_chat_ws_handler(ngx_http_request_t *r)
{
    u_char                     *accept;
    ngx_str_t                   token;
    ngx_table_elt_t            *h, *key, *version, *conn;
    ngx_connection_t           *c;
    ngx_pool_cleanup_t         *cln;
    ngx_foko_chat_claims_t      claims;
    ngx_foko_chat_ws_t         *ws;
    ngx_foko_chat_main_conf_t  *fmcf;

    if (r->method != NGX_HTTP_GET) {
        return ngx_foko_chat_json_send_not_allowed(r, NGX_HTTP_GET);
    }

    if (r != r->main || r->http_version != NGX_HTTP_VERSION_11) {
        return ngx_foko_chat_ws_refuse(r, NGX_FOKO_CHAT_E_WS_HTTP11);
    }

    h = r->headers_in.upgrade;

    /* nginx keeps only the type of "Connection": the header is looked up */
    conn = ngx_foko_chat_ws_header_in(r, "Connection");

    if (h == NULL
        || ngx_strlcasestrn(h->value.data, h->value.data + h->value.len,
                            (u_char *) "websocket", 9 - 1) == NULL
        || conn == NULL
        || ngx_strlcasestrn(conn->value.data,
                            conn->value.data + conn->value.len,
                            (u_char *) "upgrade", 7 - 1) == NULL)
    {
        return ngx_foko_chat_ws_refuse(r, NGX_FOKO_CHAT_E_WS_NOT_UPGRADE);
    }

    version = ngx_foko_chat_ws_header_in(r, "Sec-WebSocket-Version");

    if (version == NULL) {
        return ngx_foko_chat_ws_refuse(r, NGX_FOKO_CHAT_E_WS_NO_VERSION);
    }

    if (version->value.len != 2
        || ngx_strncmp(version->value.data, "13", 2) != 0)
    {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Sec-WebSocket-Version");
        ngx_str_set(&h->value, "13");

        return ngx_foko_chat_ws_refuse(r, NGX_FOKO_CHAT_E_WS_VERSION);
    }

    key = ngx_foko_chat_ws_header_in(r, "Sec-WebSocket-Key");

    if (key == NULL
        || ngx_foko_chat_ws_key_valid(key->value.data, key->value.len)
           != NGX_OK)
    {
        return ngx_foko_chat_ws_refuse(r, NGX_FOKO_CHAT_E_WS_KEY);
    }

    if (ngx_foko_chat_ws_origin_ok(r, ngx_foko_chat_ws_header_in(r, "Origin"))
        != NGX_OK)
    {
        return ngx_foko_chat_ws_refuse(r, NGX_FOKO_CHAT_E_WS_ORIGIN);
    }

    if (r->headers_in.content_length_n > 0 || r->headers_in.chunked) {
        return ngx_foko_chat_ws_refuse(r, NGX_FOKO_CHAT_E_WS_BODY);
    }

    fmcf = ngx_http_get_module_main_conf(r, ngx_foko_chat_module);
    c = r->connection;

    ws = ngx_foko_chat_ws_alloc(c->log);
    if (ws == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ws->connection = c;
    ws->fmcf = fmcf;
    ngx_queue_init(&ws->jobs);
    ngx_queue_init(&ws->posts);
    ngx_queue_init(&ws->ops);
    ngx_foko_chat_ws_parser_init(&ws->parser, NGX_FOKO_CHAT_WS_MAX_MESSAGE);

    /* freed with the request unless the connection is taken over */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_foko_chat_ws_release(ws);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_foko_chat_ws_request_cleanup;
    cln->data = ws;

    /* a token in the upgrade: checked once the connection is ours */

    h = r->headers_in.authorization;

    if (h && h->value.len > 7
        && ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", 7) == 0)
    {
        token.data = h->value.data + 7;
        token.len = h->value.len - 7;

        ws->header_auth = 1;

        if (ngx_foko_chat_jwt_verify(fmcf->jwt, &token,
                                     NGX_FOKO_CHAT_TOKEN_ACCESS, &claims,
                                     c->log)
            == NGX_OK)
        {
            ngx_memcpy(ws->sub, claims.sub, sizeof(ws->sub));
            ws->ver = claims.ver;
        }

        ngx_explicit_memzero(&claims, sizeof(ngx_foko_chat_claims_t));
    }

    accept = ngx_pnalloc(r->pool, NGX_FOKO_CHAT_WS_ACCEPT_LEN);
    if (accept == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_foko_chat_ws_accept_key(key->value.data, key->value.len, accept);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Upgrade");
    ngx_str_set(&h->value, "websocket");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Sec-WebSocket-Accept");
    h->value.data = accept;
    h->value.len = NGX_FOKO_CHAT_WS_ACCEPT_LEN;

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    r->headers_out.status_line = ngx_foko_chat_ws_status_line;
    r->headers_out.content_length_n = -1;
    r->header_only = 1;
    r->keepalive = 0;
    r->lingering_close = 0;

    if (ngx_http_send_header(r) == NGX_ERROR
        || ngx_http_send_special(r, NGX_HTTP_FLUSH) == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    /*
     * The request stays ours (count) until the 101 is written; then the
     * connection's own handlers take over, out of this call chain.
     */

    r->main->count++;

    c->read->handler = ngx_foko_chat_ws_handshake_read;
    c->write->handler = ngx_foko_chat_ws_handshake_write;

    ngx_post_event(c->write, &ngx_posted_events);

    return NGX_DONE;
}


static ngx_int_t
ngx_foko_chat_ws_refuse(ngx_http_request_t *r, ngx_foko_chat_err_e e)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "foko chat: WebSocket upgrade refused: %s",
                  ngx_foko_chat_errors[e].message);

    return ngx_foko_chat_json_send_err(r, e, NULL, NULL);
}


static ngx_table_elt_t *
ngx_foko_chat_ws_header_in(ngx_http_request_t *r, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * Without foko_chat_allowed_origins a browser may connect from the site
 * itself only: the Origin's host must be the request's Host.  Clients
 * that send no Origin are not browsers, and cannot be led by a page.
 */

static ngx_int_t
ngx_foko_chat_ws_origin_ok(ngx_http_request_t *r, ngx_table_elt_t *origin)
{
    u_char                    *p, *host;
    size_t                     len;
    ngx_str_t                 *allowed;
    ngx_uint_t                 i;
    ngx_foko_chat_srv_conf_t  *fscf;

    if (origin == NULL) {
        return NGX_OK;
    }

    fscf = ngx_http_get_module_srv_conf(r, ngx_foko_chat_module);

    if (fscf->origins) {
        allowed = fscf->origins->elts;

        for (i = 0; i < fscf->origins->nelts; i++) {
            if ((allowed[i].len == 1 && allowed[i].data[0] == '*')
                || (allowed[i].len == origin->value.len
                    && ngx_strncasecmp(allowed[i].data, origin->value.data,
                                       origin->value.len) == 0))
            {
                return NGX_OK;
            }
        }

        return NGX_DECLINED;
    }

    p = origin->value.data;
    len = origin->value.len;

    if (len > 7 && ngx_strncasecmp(p, (u_char *) "http://", 7) == 0) {
        p += 7;
        len -= 7;

    } else if (len > 8 && ngx_strncasecmp(p, (u_char *) "https://", 8) == 0) {
        p += 8;
        len -= 8;

    } else {
        return NGX_DECLINED;
    }

    if (r->headers_in.host == NULL) {
        return NGX_DECLINED;
    }

    host = r->headers_in.host->value.data;

    if (r->headers_in.host->value.len == len
        && ngx_strncasecmp(host, p, len) == 0)
    {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/* "foko_chat_allowed_origins http://a.example https://b.example ...;" */

char *
ngx_foko_chat_ws_origins(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_foko_chat_srv_conf_t  *fscf = conf;

    u_char      *p, *last, *host, *port;
    ngx_str_t   *value, *o;
    ngx_uint_t   i;

    if (fscf->origins != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    fscf->origins = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                     sizeof(ngx_str_t));
    if (fscf->origins == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (!(value[i].len == 1 && value[i].data[0] == '*')) {
            p = value[i].data;
            last = p + value[i].len;

            if (value[i].len > 7
                && ngx_strncasecmp(p, (u_char *) "http://", 7) == 0)
            {
                p += 7;

            } else if (value[i].len > 8
                       && ngx_strncasecmp(p, (u_char *) "https://", 8) == 0)
            {
                p += 8;

            } else {
                p = NULL;
            }

            /* scheme://host[:port], nothing after it */

            host = p;
            port = NULL;

            while (p && p < last) {
                if (*p == '/' || *p == '?' || *p == '#' || *p == ' '
                    || *p == '@')
                {
                    p = NULL;
                    break;
                }

                if (*p == ':' && port == NULL) {
                    port = p + 1;

                } else if (port && (*p < '0' || *p > '9')) {
                    p = NULL;
                    break;
                }

                p++;
            }

            if (p && (host == last || *host == ':'
                      || (port && (port == last || last - port > 5
                                   || ngx_atoi(port, last - port) > 65535
                                   || ngx_atoi(port, last - port) < 1))))
            {
                p = NULL;
            }

            if (p == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" is not an origin "
                                   "(scheme://host[:port]) in \"%V\"",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }
        }

        o = ngx_array_push(fscf->origins);
        if (o == NULL) {
            return NGX_CONF_ERROR;
        }

        *o = value[i];
    }

    return NGX_CONF_OK;
}


static void
ngx_foko_chat_ws_request_cleanup(void *data)
{
    ngx_foko_chat_ws_t  *ws = data;

    ngx_foko_chat_ws_release(ws);
}


/* our reference was the last one: as nginx closes a request */

void
ngx_foko_chat_ws_handshake_fail(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_free_request(r, rc);
    ngx_http_close_connection(c);
}


static void
ngx_foko_chat_ws_handshake_read(ngx_event_t *rev)
{
    /* client frames wait in the socket until the 101 is out */
}


static void
ngx_foko_chat_ws_handshake_write(ngx_event_t *wev)
{
    ngx_connection_t          *c;
    ngx_pool_cleanup_t        *cln;
    ngx_http_request_t        *r;
    ngx_foko_chat_ws_t        *ws;
    ngx_http_core_loc_conf_t  *clcf;

    c = wev->data;
    r = c->data;

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client timed out");
        c->timedout = 1;
        ngx_foko_chat_ws_handshake_fail(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    if (r->out || c->buffered) {
        if (ngx_http_output_filter(r, NULL) == NGX_ERROR) {
            ngx_foko_chat_ws_handshake_fail(r, 0);
            return;
        }
    }

    if (r->out || c->buffered) {
        clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

        ngx_add_timer(wev, clcf->send_timeout);

        if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
            ngx_foko_chat_ws_handshake_fail(r, 0);
        }

        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    ws = NULL;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_foko_chat_ws_request_cleanup) {
            ws = cln->data;
            cln->handler = NULL;
            break;
        }
    }

    if (ws == NULL) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "foko chat: a WebSocket upgrade lost its context");
        ngx_foko_chat_ws_handshake_fail(r, 0);
        return;
    }

    ngx_foko_chat_ws_take_over(r, ws);
}
