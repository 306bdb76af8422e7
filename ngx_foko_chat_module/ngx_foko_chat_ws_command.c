
/*
 * Foko chat: the JSON commands of WebSocket clients.
 *
 * Every field is checked here, before any other code sees the command:
 * types, lengths, ids, ranges.  What a command means for a channel (is the
 * caller a member, is the text acceptable) is decided by the code that
 * carries it out.
 */


#include <stdlib.h>
#include <string.h>

#include "ngx_foko_chat_ws_command.h"


static int ngx_foko_chat_cmd_id(ngx_foko_chat_cmd_t *cmd, const char *field,
    char *out);
static int ngx_foko_chat_cmd_seqs(ngx_foko_chat_cmd_t *cmd,
    const char *field);
static int ngx_foko_chat_cmd_fail(ngx_foko_chat_cmd_t *cmd,
    const char *field, const char *problem);


int
ngx_foko_chat_cmd_decode(const char *data, size_t len,
    ngx_foko_chat_cmd_t *cmd)
{
    json_t       *v;
    const char   *type;
    json_error_t  error;

    memset(cmd, 0, sizeof(ngx_foko_chat_cmd_t));

    cmd->root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &error);

    if (cmd->root == NULL) {
        return ngx_foko_chat_cmd_fail(cmd, "message", "is not valid JSON");
    }

    if (!json_is_object(cmd->root)) {
        return ngx_foko_chat_cmd_fail(cmd, "message",
                                      "must be a JSON object");
    }

    v = json_object_get(cmd->root, "ref");

    if (v && !json_is_null(v)) {
        if (!json_is_string(v)
            || json_string_length(v) == 0
            || json_string_length(v) > NGX_FOKO_CHAT_CMD_REF_MAX
            || strlen(json_string_value(v)) != json_string_length(v))
        {
            return ngx_foko_chat_cmd_fail(cmd, "ref",
                                          "must be a string of 1 to 64 "
                                          "bytes");
        }

        memcpy(cmd->ref, json_string_value(v), json_string_length(v) + 1);
    }

    v = json_object_get(cmd->root, "type");
    type = json_string_value(v);

    if (type == NULL) {
        return ngx_foko_chat_cmd_fail(cmd, "type", "is required");
    }

    if (strcmp(type, "auth") == 0) {
        cmd->type = NGX_FOKO_CHAT_CMD_AUTH;

        v = json_object_get(cmd->root, "token");

        if (!json_is_string(v) || json_string_length(v) == 0
            || json_string_length(v) > NGX_FOKO_CHAT_CMD_TOKEN_MAX)
        {
            return ngx_foko_chat_cmd_fail(cmd, "token", "is required");
        }

        cmd->token = json_string_value(v);
        cmd->token_len = json_string_length(v);

        /* where the client is in its channels: replayed from the sign-in */
        v = json_object_get(cmd->root, "resume");

        if (v == NULL || json_is_null(v)) {
            return 0;
        }

        return ngx_foko_chat_cmd_seqs(cmd, "resume");
    }

    if (strcmp(type, "send") == 0) {
        cmd->type = NGX_FOKO_CHAT_CMD_SEND;

        if (cmd->ref[0] == '\0') {
            return ngx_foko_chat_cmd_fail(cmd, "ref", "is required");
        }

        /* text and client_id are checked as the REST call checks them */
        cmd->body = cmd->root;

        return ngx_foko_chat_cmd_id(cmd, "channel_id", cmd->channel);
    }

    if (strcmp(type, "typing") == 0) {
        cmd->type = NGX_FOKO_CHAT_CMD_TYPING;
        return ngx_foko_chat_cmd_id(cmd, "channel_id", cmd->channel);
    }

    if (strcmp(type, "read") == 0) {
        cmd->type = NGX_FOKO_CHAT_CMD_READ;

        if (ngx_foko_chat_cmd_id(cmd, "channel_id", cmd->channel) != 0) {
            return -1;
        }

        v = json_object_get(cmd->root, "seq");

        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            return ngx_foko_chat_cmd_fail(cmd, "seq",
                                          "must be an integer of 0 or "
                                          "more");
        }

        cmd->seq = json_integer_value(v);

        return 0;
    }

    if (strcmp(type, "resume") == 0) {
        cmd->type = NGX_FOKO_CHAT_CMD_RESUME;
        return ngx_foko_chat_cmd_seqs(cmd, "channels");
    }

    return ngx_foko_chat_cmd_fail(cmd, "type",
                                  "must be auth, send, typing, read or "
                                  "resume");
}


void
ngx_foko_chat_cmd_free(ngx_foko_chat_cmd_t *cmd)
{
    free(cmd->channels);
    cmd->channels = NULL;

    json_decref(cmd->root);
    cmd->root = NULL;
}


static int
ngx_foko_chat_cmd_id(ngx_foko_chat_cmd_t *cmd, const char *field, char *out)
{
    json_t  *v;

    v = json_object_get(cmd->root, field);

    if (!json_is_string(v)
        || !ngx_foko_chat_oid_valid((const unsigned char *)
                                        json_string_value(v),
                                    json_string_length(v)))
    {
        return ngx_foko_chat_cmd_fail(cmd, field, "must be a channel id");
    }

    memcpy(out, json_string_value(v), NGX_FOKO_CHAT_OID_SIZE);

    return 0;
}


/* channel ids and seqs: "channels" of resume, "resume" of auth */

static int
ngx_foko_chat_cmd_seqs(ngx_foko_chat_cmd_t *cmd, const char *field)
{
    size_t       n;
    json_t      *v, *seq;
    const char  *key;

    v = json_object_get(cmd->root, field);

    if (!json_is_object(v)) {
        return ngx_foko_chat_cmd_fail(cmd, field,
                                      "must be an object of channel ids "
                                      "and seqs");
    }

    n = json_object_size(v);

    if (n > NGX_FOKO_CHAT_CMD_RESUME_MAX) {
        return ngx_foko_chat_cmd_fail(cmd, field,
                                      "has more than 1000 channels");
    }

    if (n) {
        cmd->channels = malloc(n * sizeof(ngx_foko_chat_cmd_channel_t));
        if (cmd->channels == NULL) {
            return ngx_foko_chat_cmd_fail(cmd, field, "is too large");
        }
    }

    json_object_foreach(v, key, seq) {
        if (!ngx_foko_chat_oid_valid((const unsigned char *) key,
                                     strlen(key)))
        {
            return ngx_foko_chat_cmd_fail(cmd, field,
                                          "has a key that is not a "
                                          "channel id");
        }

        if (!json_is_integer(seq) || json_integer_value(seq) < 0) {
            return ngx_foko_chat_cmd_fail(cmd, field,
                                          "has a seq that is not an "
                                          "integer of 0 or more");
        }

        memcpy(cmd->channels[cmd->nchannels].id, key,
               NGX_FOKO_CHAT_OID_SIZE);
        cmd->channels[cmd->nchannels].seq = json_integer_value(seq);
        cmd->nchannels++;
    }

    return 0;
}


static int
ngx_foko_chat_cmd_fail(ngx_foko_chat_cmd_t *cmd, const char *field,
    const char *problem)
{
    cmd->field = field;
    cmd->problem = problem;

    return -1;
}
