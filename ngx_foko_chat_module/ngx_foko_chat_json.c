
/*
 * Foko chat: JSON responses and the error shape of the API.
 */


#include "ngx_foko_chat_json.h"


/*
 * Sends "body" as the whole response and releases it.  Returns what the
 * content handler returns, so callers end with "return ...".
 */

ngx_int_t
ngx_foko_chat_json_send(ngx_http_request_t *r, ngx_uint_t status,
    json_t *body)
{
    char       *text;
    ngx_str_t   t;
    ngx_int_t   rc;

    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);

    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    t.data = (u_char *) text;
    t.len = ngx_strlen(text);

    rc = ngx_foko_chat_json_send_text(r, status, NULL, &t, NULL);

    free(text);

    return rc;
}


/*
 * Sends prefix, text and suffix, one JSON document serialized already
 * (a message's text inside {"message": ...}), as the whole response.
 */

ngx_int_t
ngx_foko_chat_json_send_text(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *prefix, ngx_str_t *text, ngx_str_t *suffix)
{
    size_t        len;
    ngx_buf_t    *b;
    ngx_int_t     rc;
    ngx_chain_t   out;

    len = text->len + 1;
    len += prefix ? prefix->len : 0;
    len += suffix ? suffix->len : 0;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (prefix) {
        b->last = ngx_cpymem(b->last, prefix->data, prefix->len);
    }

    b->last = ngx_cpymem(b->last, text->data, text->len);

    if (suffix) {
        b->last = ngx_cpymem(b->last, suffix->data, suffix->len);
    }

    *b->last++ = '\n';

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    ngx_str_set(&r->headers_out.charset, "utf-8");

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


const ngx_foko_chat_error_t  ngx_foko_chat_errors[] = {
    { NGX_HTTP_BAD_REQUEST, "invalid_request", "the request is invalid" },
    { NGX_HTTP_NOT_FOUND, "not_found", "no such channel" },
    { NGX_HTTP_NOT_FOUND, "not_found", "no such message" },
    { NGX_HTTP_NOT_FOUND, "not_found", "no such message of yours" },
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "too_large",
      "the message is too long" },
    { NGX_HTTP_SERVICE_UNAVAILABLE, "storage_unavailable",
      "too many messages are waiting for the database" },
    { NGX_HTTP_SERVICE_UNAVAILABLE, "storage_unavailable",
      "the database is unreachable" },
    { NGX_HTTP_SERVICE_UNAVAILABLE, "overloaded", "the server is too busy" },
    { NGX_HTTP_SERVICE_UNAVAILABLE, "overloaded",
      "the server is out of memory" },
    { NGX_HTTP_INTERNAL_SERVER_ERROR, "internal",
      "the message was not taken" },
    { NGX_HTTP_INTERNAL_SERVER_ERROR, "internal",
      "the message collides with a stored one" },
    { NGX_HTTP_SERVICE_UNAVAILABLE, "overloaded",
      "too many messages wait for their ack" },

    { NGX_HTTP_CONFLICT, "email_taken",
      "an account with this email exists already" },
    { NGX_HTTP_CONFLICT, "username_taken", "this username is taken" },
    { NGX_HTTP_UNAUTHORIZED, "invalid_credentials",
      "wrong email or password" },
    { NGX_HTTP_UNAUTHORIZED, "invalid_token", "the account no longer exists" },
    { NGX_HTTP_UNAUTHORIZED, "invalid_token",
      "the password has changed since; sign in again" },
    { NGX_HTTP_BAD_REQUEST, "invalid_token",
      "the link is invalid, used or expired" },
    { NGX_HTTP_TOO_MANY_REQUESTS, "rate_limited",
      "too many attempts; try again later" },

    { 422, "channel_full", "too many members" },
    { 422, "channel_full", "the channel is full" },
    { 422, "unknown_user", "a member is not a user" },
    { 422, "direct_channel", "a direct conversation has no name" },
    { 422, "direct_channel", "a direct conversation stays between two" },
    { NGX_HTTP_CONFLICT, "already_member",
      "already a member of this channel" },

    { 422, "client_id_reused",
      "this client_id is taken by a message in another channel" },

    { NGX_HTTP_NOT_FOUND, "not_found", "no such API endpoint" },
    { NGX_HTTP_NOT_ALLOWED, "method_not_allowed", "method not allowed here" },
    { NGX_HTTP_UNAUTHORIZED, "invalid_token",
      "a valid access token is required" },
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "too_large",
      "the request body is too large" },
    { NGX_HTTP_BAD_REQUEST, "invalid_request",
      "format must be \"json\" or \"prometheus\"" },

    { NGX_HTTP_BAD_REQUEST, "invalid_request",
      "a WebSocket upgrade needs HTTP/1.1" },
    { NGX_HTTP_BAD_REQUEST, "invalid_request", "not a WebSocket upgrade" },
    { NGX_HTTP_BAD_REQUEST, "invalid_request",
      "Sec-WebSocket-Version is missing" },
    { 426, "invalid_request", "only WebSocket version 13 is spoken here" },
    { NGX_HTTP_BAD_REQUEST, "invalid_request",
      "Sec-WebSocket-Key is missing or malformed" },
    { NGX_HTTP_FORBIDDEN, "forbidden", "this origin may not connect" },
    { NGX_HTTP_BAD_REQUEST, "invalid_request", "an upgrade has no body" },

    { NGX_HTTP_BAD_REQUEST, "invalid_request", NULL },

    { NGX_HTTP_OK, "", "" }
};


json_t *
ngx_foko_chat_error_object(ngx_foko_chat_err_e e, const char *field,
    const char *problem)
{
    const char                   *message;
    const ngx_foko_chat_error_t  *err;

    err = &ngx_foko_chat_errors[e];

    if (e == NGX_FOKO_CHAT_E_INVALID && field && problem) {
        return json_pack("{s:s,s:s++,s:s}", "code", err->code,
                         "message", field, " ", problem, "field", field);
    }

    message = err->message ? err->message : problem;

    if (message == NULL) {
        message = ngx_foko_chat_errors[NGX_FOKO_CHAT_E_INVALID].message;
    }

    /*
     * a conflict names the field it is about, but has no problem text;
     * a command's problem is about its field
     */

    if (field && (problem == NULL || err->message == NULL)) {
        return json_pack("{s:s,s:s,s:s}", "code", err->code,
                         "message", message, "field", field);
    }

    return json_pack("{s:s,s:s}", "code", err->code, "message", message);
}


ngx_int_t
ngx_foko_chat_json_send_err(ngx_http_request_t *r, ngx_foko_chat_err_e e,
    const char *field, const char *problem)
{
    json_t  *error;

    error = ngx_foko_chat_error_object(e, field, problem);
    if (error == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_foko_chat_json_send(r, ngx_foko_chat_errors[e].status,
                                   json_pack("{s:o}", "error", error));
}


ngx_int_t
ngx_foko_chat_json_send_not_allowed(ngx_http_request_t *r, ngx_uint_t methods)
{
    u_char           *p;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    static struct {
        ngx_uint_t  method;
        ngx_str_t   name;
    } names[] = {
        { NGX_HTTP_GET, ngx_string("GET") },
        { NGX_HTTP_HEAD, ngx_string("HEAD") },
        { NGX_HTTP_POST, ngx_string("POST") },
        { NGX_HTTP_PUT, ngx_string("PUT") },
        { NGX_HTTP_PATCH, ngx_string("PATCH") },
        { NGX_HTTP_DELETE, ngx_string("DELETE") },
    };

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_pnalloc(r->pool, sizeof("GET, HEAD, POST, PUT, PATCH, DELETE"));
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    h->value.data = p;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (methods & names[i].method) {
            if (p != h->value.data) {
                *p++ = ',';
                *p++ = ' ';
            }

            p = ngx_cpymem(p, names[i].name.data, names[i].name.len);
        }
    }

    h->value.len = p - h->value.data;

    return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_NOT_ALLOWED, NULL,
                                       NULL);
}


ngx_int_t
ngx_foko_chat_json_send_invalid(ngx_http_request_t *r, const char *field,
    const char *problem)
{
    return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_INVALID, field,
                                       problem);
}


const char *
ngx_foko_chat_json_string(json_t *obj, const char *field, size_t min,
    size_t max, ngx_uint_t multiline, ngx_str_t *out)
{
    u_char  *p, *end;
    json_t  *v;

    v = json_object_get(obj, field);

    if (v == NULL || json_is_null(v)) {
        return "is required";
    }

    if (!json_is_string(v)) {
        return "must be a string";
    }

    out->data = (u_char *) json_string_value(v);
    out->len = json_string_length(v);

    if (out->len < min) {
        return min > 1 ? "is too short" : "must not be empty";
    }

    if (out->len > max) {
        return "is too long";
    }

    end = out->data + out->len;

    for (p = out->data; p < end; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            if (multiline && (*p == '\t' || *p == '\n')) {
                continue;
            }

            return "must not contain control characters";
        }
    }

    return NULL;
}


/*
 * A name (a username, a channel name): 1 to max_chars characters of at
 * most max_bytes, no control characters, no spaces around; copied to out
 * with a NUL.
 */

const char *
ngx_foko_chat_json_name(json_t *obj, const char *field, size_t max_chars,
    size_t max_bytes, u_char *out)
{
    u_char      *p, *end;
    size_t       chars;
    ngx_str_t    name;
    const char  *problem;

    problem = ngx_foko_chat_json_string(obj, field, 1, max_bytes, 0, &name);
    if (problem) {
        return problem;
    }

    end = name.data + name.len;
    chars = 0;

    for (p = name.data; p < end; p++) {
        chars += ((*p & 0xc0) != 0x80);
    }

    if (chars > max_chars) {
        return "is too long";
    }

    if (name.data[0] == ' ' || end[-1] == ' ') {
        return "must not start or end with a space";
    }

    ngx_memcpy(out, name.data, name.len);
    out[name.len] = '\0';

    return NULL;
}


uint32_t
ngx_foko_chat_utf8_next(u_char **p, u_char *end)
{
    u_char    *s;
    size_t     n, i;
    uint32_t   c, min;

    s = *p;
    c = *s;

    if (c < 0x80) {
        *p = s + 1;
        return c;
    }

    if (c >= 0xc2 && c <= 0xdf) {
        n = 1;
        c &= 0x1f;
        min = 0x80;

    } else if (c >= 0xe0 && c <= 0xef) {
        n = 2;
        c &= 0x0f;
        min = 0x800;

    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 3;
        c &= 0x07;
        min = 0x10000;

    } else {
        return NGX_FOKO_CHAT_UTF8_INVALID;
    }

    if ((size_t) (end - s) <= n) {
        return NGX_FOKO_CHAT_UTF8_INVALID;
    }

    for (i = 1; i <= n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return NGX_FOKO_CHAT_UTF8_INVALID;
        }

        c = (c << 6) | (s[i] & 0x3f);
    }

    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return NGX_FOKO_CHAT_UTF8_INVALID;
    }

    *p = s + n + 1;

    return c;
}


ngx_uint_t
ngx_foko_chat_utf8_valid(u_char *p, size_t len)
{
    u_char  *end;

    end = p + len;

    while (p < end) {
        if (ngx_foko_chat_utf8_next(&p, end) == NGX_FOKO_CHAT_UTF8_INVALID) {
            return 0;
        }
    }

    return 1;
}


/*
 * 503: storage failed, with "err" (logged here, once), or no thread took
 * the work (err NULL or empty).
 */

ngx_int_t
ngx_foko_chat_json_send_unavailable(ngx_http_request_t *r, u_char *err)
{
    if (err && err[0]) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "foko chat: %s", err);

        return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_STORAGE, NULL,
                                           NULL);
    }

    return ngx_foko_chat_json_send_err(r, NGX_FOKO_CHAT_E_OVERLOADED, NULL,
                                       NULL);
}
