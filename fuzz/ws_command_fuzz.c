
/*
 * Foko chat: libFuzzer target for the WebSocket command decoder
 * (ngx_foko_chat_module/ngx_foko_chat_ws_command.c), built by fuzz/run.sh
 * with jansson.
 *
 * Input: one text message as a client sends it.  Whatever the bytes, the
 * decoder must either fail with a field and a reason, or succeed with a
 * command whose every field keeps its documented bounds; and the same
 * bytes decoded twice must give the same result.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_foko_chat_ws_command.h"


#define check(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "ws_command_fuzz: %s:%d: %s\n", __FILE__,       \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)


/* the channels of a resume, or of an auth frame's "resume" */

static void
ws_command_fuzz_channels(ngx_foko_chat_cmd_t *cmd)
{
    size_t  i;

    check(cmd->nchannels <= NGX_FOKO_CHAT_CMD_RESUME_MAX);
    check(cmd->nchannels == 0 || cmd->channels != NULL);

    for (i = 0; i < cmd->nchannels; i++) {
        check(ngx_foko_chat_oid_valid((const unsigned char *)
                                      cmd->channels[i].id,
                                      NGX_FOKO_CHAT_OID_LEN)
              && cmd->channels[i].id[24] == '\0');
        check(cmd->channels[i].seq >= 0);
    }
}


static void
ws_command_fuzz_check(ngx_foko_chat_cmd_t *cmd, int rc)
{
    check(strlen(cmd->ref) <= NGX_FOKO_CHAT_CMD_REF_MAX);

    if (rc != 0) {
        check(cmd->field != NULL && cmd->problem != NULL);
        return;
    }

    check(cmd->root != NULL && json_is_object(cmd->root));

    switch (cmd->type) {

    case NGX_FOKO_CHAT_CMD_AUTH:
        check(cmd->token != NULL);
        check(cmd->token_len > 0
              && cmd->token_len <= NGX_FOKO_CHAT_CMD_TOKEN_MAX);
        ws_command_fuzz_channels(cmd);
        break;

    case NGX_FOKO_CHAT_CMD_SEND:
        check(cmd->ref[0] != '\0');
        check(cmd->body == cmd->root);
        /* fall through */

    case NGX_FOKO_CHAT_CMD_TYPING:
        check(ngx_foko_chat_oid_valid((const unsigned char *) cmd->channel,
                                      strlen(cmd->channel)));
        break;

    case NGX_FOKO_CHAT_CMD_READ:
        check(ngx_foko_chat_oid_valid((const unsigned char *) cmd->channel,
                                      strlen(cmd->channel)));
        check(cmd->seq >= 0);
        break;

    case NGX_FOKO_CHAT_CMD_RESUME:
        ws_command_fuzz_channels(cmd);
        break;

    default:
        check(0);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                   rc1, rc2;
    char                 *copy;
    ngx_foko_chat_cmd_t   a, b;

    /* an exact-size heap copy: reads past the message are caught */

    copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return 0;
    }

    memcpy(copy, data, size);

    rc1 = ngx_foko_chat_cmd_decode(copy, size, &a);
    ws_command_fuzz_check(&a, rc1);

    rc2 = ngx_foko_chat_cmd_decode(copy, size, &b);
    ws_command_fuzz_check(&b, rc2);

    check(rc1 == rc2);
    check(a.type == b.type);
    check(strcmp(a.ref, b.ref) == 0);
    check(a.nchannels == b.nchannels);

    if (rc1 == 0 && (a.type == NGX_FOKO_CHAT_CMD_SEND
                     || a.type == NGX_FOKO_CHAT_CMD_TYPING
                     || a.type == NGX_FOKO_CHAT_CMD_READ))
    {
        check(strcmp(a.channel, b.channel) == 0);
    }

    ngx_foko_chat_cmd_free(&a);
    ngx_foko_chat_cmd_free(&b);

    check(a.root == NULL && a.channels == NULL);

    free(copy);

    return 0;
}
