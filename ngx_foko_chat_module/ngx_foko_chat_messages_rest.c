
/*
 * Foko chat: the REST calls on messages, as adapters: each decodes the
 * request, calls the operation of ngx_foko_chat_messages.c, and encodes
 * its answer.  The request is held while the operation is under way.
 */


#include "ngx_foko_chat_messages.h"
#include "ngx_foko_chat_json.h"


typedef ngx_int_t (*ngx_foko_chat_rest_op_pt)(ngx_foko_chat_op_in_t *in,
    void **handle);
typedef ngx_int_t (*ngx_foko_chat_rest_encode_pt)(ngx_http_request_t *r,
    ngx_foko_chat_answer_t *a);


/* a request waiting for its operation's answer */

typedef struct {
    ngx_http_request_t            *request;
    ngx_http_cleanup_t            *cleanup;
    ngx_foko_chat_rest_encode_pt   encode;
    void                          *handle;
    ngx_int_t                      rc;
    unsigned                       held:1;
} ngx_foko_chat_rest_call_t;


static ngx_int_t ngx_foko_chat_rest_call(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx, ngx_foko_chat_op_in_t *in,
    ngx_foko_chat_rest_op_pt op, ngx_foko_chat_rest_encode_pt encode);
static void ngx_foko_chat_rest_answer(void *data, ngx_foko_chat_answer_t *a);
static void ngx_foko_chat_rest_cleanup(void *data);
static ngx_int_t ngx_foko_chat_rest_int_arg(ngx_http_request_t *r,
    const char *name, int64_t min, int64_t max, int64_t *value);
static ngx_int_t ngx_foko_chat_rest_message(ngx_http_request_t *r,
    ngx_foko_chat_answer_t *a);
static ngx_int_t ngx_foko_chat_rest_page(ngx_http_request_t *r,
    ngx_foko_chat_answer_t *a);
static ngx_int_t ngx_foko_chat_rest_read(ngx_http_request_t *r,
    ngx_foko_chat_answer_t *a);


/* the answer to a post: {"message": <the message>} */
static ngx_str_t  ngx_foko_chat_rest_prefix = ngx_string("{\"message\":");
static ngx_str_t  ngx_foko_chat_rest_suffix = ngx_string("}");


/* GET /api/channels/:id/messages?before=&after=&limit= */

ngx_int_t
ngx_foko_chat_messages_list(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    int64_t                limit;
    ngx_foko_chat_op_in_t  in;

    ngx_memzero(&in, sizeof(ngx_foko_chat_op_in_t));
    in.before = 0;
    in.after = -1;
    in.upto = -1;
    limit = NGX_FOKO_CHAT_PAGE_DEFAULT;

    if (ngx_foko_chat_rest_int_arg(r, "before", 1, NGX_MAX_INT_T_VALUE,
                                   &in.before)
        != NGX_OK)
    {
        return ngx_foko_chat_json_send_invalid(r, "before",
                                               "must be a positive seq");
    }

    if (ngx_foko_chat_rest_int_arg(r, "after", 0, NGX_MAX_INT_T_VALUE,
                                   &in.after)
        != NGX_OK)
    {
        return ngx_foko_chat_json_send_invalid(r, "after",
                                               "must be a seq");
    }

    if (ngx_foko_chat_rest_int_arg(r, "limit", 1, NGX_FOKO_CHAT_PAGE_MAX,
                                   &limit)
        != NGX_OK)
    {
        return ngx_foko_chat_json_send_invalid(r, "limit",
                                               "must be between 1 and 200");
    }

    in.limit = (ngx_uint_t) limit;

    return ngx_foko_chat_rest_call(r, ctx, &in, ngx_foko_chat_message_page,
                                   ngx_foko_chat_rest_page);
}


/* POST /api/channels/:id/messages {text, client_id} */

ngx_int_t
ngx_foko_chat_messages_post(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_foko_chat_op_in_t  in;

    ngx_memzero(&in, sizeof(ngx_foko_chat_op_in_t));
    in.body = ctx->body;

    return ngx_foko_chat_rest_call(r, ctx, &in, ngx_foko_chat_message_post,
                                   ngx_foko_chat_rest_message);
}


/* PATCH /api/channels/:id/messages/:mid {text} */

ngx_int_t
ngx_foko_chat_messages_edit(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_foko_chat_op_in_t  in;

    ngx_memzero(&in, sizeof(ngx_foko_chat_op_in_t));
    in.body = ctx->body;

    return ngx_foko_chat_rest_call(r, ctx, &in, ngx_foko_chat_message_edit,
                                   ngx_foko_chat_rest_message);
}


/* DELETE /api/channels/:id/messages/:mid: a tombstone stays */

ngx_int_t
ngx_foko_chat_messages_delete(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    ngx_foko_chat_op_in_t  in;

    ngx_memzero(&in, sizeof(ngx_foko_chat_op_in_t));

    return ngx_foko_chat_rest_call(r, ctx, &in, ngx_foko_chat_message_delete,
                                   ngx_foko_chat_rest_message);
}


/* POST /api/channels/:id/read {seq} */

ngx_int_t
ngx_foko_chat_messages_read(ngx_http_request_t *r,
    ngx_foko_chat_api_ctx_t *ctx)
{
    json_t                 *v;
    ngx_foko_chat_op_in_t   in;

    v = json_object_get(ctx->body, "seq");

    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        return ngx_foko_chat_json_send_invalid(r, "seq",
                                         "must be a non-negative integer");
    }

    ngx_memzero(&in, sizeof(ngx_foko_chat_op_in_t));
    in.seq = json_integer_value(v);

    return ngx_foko_chat_rest_call(r, ctx, &in,
                                   ngx_foko_chat_message_mark_read,
                                   ngx_foko_chat_rest_read);
}


static ngx_int_t
ngx_foko_chat_rest_call(ngx_http_request_t *r, ngx_foko_chat_api_ctx_t *ctx,
    ngx_foko_chat_op_in_t *in, ngx_foko_chat_rest_op_pt op,
    ngx_foko_chat_rest_encode_pt encode)
{
    ngx_int_t                   rc;
    ngx_http_cleanup_t         *cln;
    ngx_foko_chat_rest_call_t  *call;

    call = ngx_pcalloc(r->pool, sizeof(ngx_foko_chat_rest_call_t));
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = NULL;
    cln->data = call;

    call->request = r;
    call->cleanup = cln;
    call->encode = encode;
    call->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    in->user = ctx->claims.sub;
    in->username = ctx->claims.name;

    if (ctx->nargs > 0) {
        in->channel = ctx->args[0];
    }

    if (ctx->nargs > 1) {
        in->message = ctx->args[1];
    }

    in->handler = ngx_foko_chat_rest_answer;
    in->data = call;
    in->log = r->connection->log;

    rc = op(in, &call->handle);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK) {
        /* answered at once */
        return call->rc;
    }

    /* held until the answer; a request that goes away cancels it */

    cln->handler = ngx_foko_chat_rest_cleanup;
    call->held = 1;
    r->main->count++;

    return NGX_DONE;
}


static void
ngx_foko_chat_rest_answer(void *data, ngx_foko_chat_answer_t *a)
{
    ngx_foko_chat_rest_call_t  *call = data;

    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = call->request;
    call->cleanup->handler = NULL;

    if (a->error != NGX_FOKO_CHAT_E_NONE) {
        rc = ngx_foko_chat_json_send_err(r, a->error, a->field, a->problem);

    } else {
        rc = call->encode(r, a);
    }

    if (!call->held) {
        call->rc = rc;
        return;
    }

    c = r->connection;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_foko_chat_rest_cleanup(void *data)
{
    ngx_foko_chat_rest_call_t  *call = data;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, call->request->connection->log, 0,
                   "foko chat: request gone before its answer");

    ngx_foko_chat_messages_cancel(call->handle);
}


static ngx_int_t
ngx_foko_chat_rest_int_arg(ngx_http_request_t *r, const char *name,
    int64_t min, int64_t max, int64_t *value)
{
    ngx_int_t  n;
    ngx_str_t  arg;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &arg) != NGX_OK) {
        return NGX_OK;
    }

    n = ngx_atoi(arg.data, arg.len);

    if (n == NGX_ERROR || n < min || n > max) {
        return NGX_ERROR;
    }

    *value = n;

    return NGX_OK;
}


static ngx_int_t
ngx_foko_chat_rest_message(ngx_http_request_t *r, ngx_foko_chat_answer_t *a)
{
    if (a->text.len) {
        /* serialized once already: for the ring, the event and us */
        return ngx_foko_chat_json_send_text(r, a->status,
                                            &ngx_foko_chat_rest_prefix,
                                            &a->text,
                                            &ngx_foko_chat_rest_suffix);
    }

    return ngx_foko_chat_json_send(r, a->status,
                                   json_pack("{s:O}", "message",
                                             a->message));
}


static ngx_int_t
ngx_foko_chat_rest_page(ngx_http_request_t *r, ngx_foko_chat_answer_t *a)
{
    return ngx_foko_chat_json_send(r, NGX_HTTP_OK,
                                   json_pack("{s:O,s:b}",
                                             "messages", a->page,
                                             "has_more", (int) a->more));
}


static ngx_int_t
ngx_foko_chat_rest_read(ngx_http_request_t *r, ngx_foko_chat_answer_t *a)
{
    return ngx_foko_chat_json_send(r, NGX_HTTP_OK,
                                   json_pack("{s:s#,s:I}", "channel_id",
                                             (char *) a->channel,
                                             (int) NGX_FOKO_CHAT_OID_LEN,
                                             "seq", (json_int_t) a->seq));
}
