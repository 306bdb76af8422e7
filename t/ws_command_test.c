
/*
 * The WebSocket command decoder (ngx_foko_chat_ws_command.c) outside
 * nginx: each check prints "ok - name" or "not ok - name", then "done N";
 * t/031-ws-command.t turns the lines into tests.
 */


#include <stdio.h>
#include <string.h>

#include "ngx_foko_chat_ws_command.h"


#define ID  "0123456789abcdef01234567"

static int  checks;


static void
check(int ok, const char *name)
{
    checks++;
    printf("%sok - %s\n", ok ? "" : "not ", name);
}


/* decodes "json"; 1 if the result is rc, with field (on failure) */

static int
decode(const char *json, ngx_foko_chat_cmd_t *cmd, int rc,
    const char *field)
{
    int  got;

    got = ngx_foko_chat_cmd_decode(json, strlen(json), cmd);

    if (got != rc) {
        printf("# %s: decoded %d, not %d (%s %s)\n", json, got, rc,
               cmd->field ? cmd->field : "-",
               cmd->problem ? cmd->problem : "-");
        return 0;
    }

    if (rc == -1 && (cmd->field == NULL || strcmp(cmd->field, field) != 0)) {
        printf("# %s: the field at fault is %s, not %s\n", json,
               cmd->field ? cmd->field : "none", field);
        return 0;
    }

    return 1;
}


static void
refused(const char *json, const char *field, const char *name)
{
    ngx_foko_chat_cmd_t  cmd;

    check(decode(json, &cmd, -1, field), name);
    ngx_foko_chat_cmd_free(&cmd);
}


int
main(void)
{
    char                 ref[80];
    ngx_foko_chat_cmd_t  cmd;

    /* the message itself */

    refused("{", "message", "invalid JSON is refused, naming the message");
    refused("[1]", "message", "an array is no command");
    refused("{\"type\":\"auth\",\"type\":\"auth\",\"token\":\"t\"}",
            "message", "duplicate keys make the message invalid");
    refused("{\"ref\":\"r\"}", "type", "a message without a type");
    refused("{\"type\":\"shout\"}", "type", "an unknown type");

    /* ref */

    memset(ref, 'r', 65);
    ref[65] = '\0';
    {
        char  json[160];

        snprintf(json, sizeof(json), "{\"type\":\"typing\",\"ref\":\"%s\","
                 "\"channel_id\":\"" ID "\"}", ref);
        refused(json, "ref", "a ref of 65 bytes is refused");

        ref[64] = '\0';
        snprintf(json, sizeof(json), "{\"type\":\"typing\",\"ref\":\"%s\","
                 "\"channel_id\":\"" ID "\"}", ref);
        check(decode(json, &cmd, 0, NULL) && strcmp(cmd.ref, ref) == 0,
              "a ref of 64 bytes is kept as given");
        ngx_foko_chat_cmd_free(&cmd);
    }

    refused("{\"type\":\"typing\",\"ref\":\"a\\u0000b\","
            "\"channel_id\":\"" ID "\"}", "message",
            "a NUL in a string (a ref) makes the message invalid");
    refused("{\"type\":\"typing\",\"ref\":7,\"channel_id\":\"" ID "\"}",
            "ref", "a ref that is no string is refused");

    check(decode("{\"type\":\"send\",\"ref\":\"r1\"}", &cmd, -1,
                 "channel_id")
          && strcmp(cmd.ref, "r1") == 0,
          "a failed command keeps its ref, for the error event");
    ngx_foko_chat_cmd_free(&cmd);

    /* auth */

    check(decode("{\"type\":\"auth\",\"token\":\"abc\"}", &cmd, 0, NULL)
          && cmd.type == NGX_FOKO_CHAT_CMD_AUTH && cmd.token_len == 3
          && memcmp(cmd.token, "abc", 3) == 0,
          "auth: the token");
    ngx_foko_chat_cmd_free(&cmd);

    refused("{\"type\":\"auth\"}", "token", "auth without a token");
    refused("{\"type\":\"auth\",\"token\":\"\"}", "token",
            "auth with an empty token");

    check(decode("{\"type\":\"auth\",\"token\":\"abc\",\"resume\":{\"" ID
                 "\":7}}", &cmd, 0, NULL)
          && cmd.type == NGX_FOKO_CHAT_CMD_AUTH && cmd.token_len == 3
          && cmd.nchannels == 1 && strcmp(cmd.channels[0].id, ID) == 0
          && cmd.channels[0].seq == 7,
          "auth with resume: the token, each channel with its seq");
    ngx_foko_chat_cmd_free(&cmd);

    check(decode("{\"type\":\"auth\",\"token\":\"abc\",\"resume\":null}",
                 &cmd, 0, NULL)
          && cmd.nchannels == 0 && cmd.channels == NULL,
          "auth with a null resume: none");
    ngx_foko_chat_cmd_free(&cmd);

    refused("{\"type\":\"auth\",\"token\":\"abc\",\"resume\":[]}", "resume",
            "auth with a resume that is no object");
    refused("{\"type\":\"auth\",\"token\":\"abc\",\"resume\":{\"nope\":1}}",
            "resume", "auth with a resume key that is no channel id");
    refused("{\"type\":\"auth\",\"token\":\"abc\",\"resume\":{\"" ID
            "\":-1}}", "resume", "auth with a negative resume seq");
    refused("{\"type\":\"auth\",\"resume\":{}}", "token",
            "auth with resume but no token");

    /* send */

    check(decode("{\"type\":\"send\",\"ref\":\"s\",\"channel_id\":\"" ID
                 "\",\"text\":\"hi\"}", &cmd, 0, NULL)
          && cmd.type == NGX_FOKO_CHAT_CMD_SEND
          && strcmp(cmd.channel, ID) == 0 && cmd.body == cmd.root,
          "send: the channel, and the body as the REST call takes it");
    ngx_foko_chat_cmd_free(&cmd);

    refused("{\"type\":\"send\",\"channel_id\":\"" ID "\",\"text\":\"x\"}",
            "ref", "send without a ref");
    refused("{\"type\":\"send\",\"ref\":\"s\","
            "\"channel_id\":\"0123456789ABCDEF01234567\"}",
            "channel_id", "send to an id in upper case");
    refused("{\"type\":\"send\",\"ref\":\"s\","
            "\"channel_id\":\"0123456789abcdef0123456\"}",
            "channel_id", "send to an id of 23 digits");

    /* typing, read */

    check(decode("{\"type\":\"typing\",\"channel_id\":\"" ID "\"}", &cmd, 0,
                 NULL)
          && cmd.type == NGX_FOKO_CHAT_CMD_TYPING,
          "typing: the channel");
    ngx_foko_chat_cmd_free(&cmd);

    check(decode("{\"type\":\"read\",\"channel_id\":\"" ID "\",\"seq\":5}",
                 &cmd, 0, NULL)
          && cmd.type == NGX_FOKO_CHAT_CMD_READ && cmd.seq == 5,
          "read: the channel and the seq");
    ngx_foko_chat_cmd_free(&cmd);

    refused("{\"type\":\"read\",\"channel_id\":\"" ID "\",\"seq\":-1}",
            "seq", "read with a negative seq");
    refused("{\"type\":\"read\",\"channel_id\":\"" ID "\",\"seq\":\"5\"}",
            "seq", "read with a seq that is a string");

    /* resume */

    check(decode("{\"type\":\"resume\",\"channels\":{\"" ID "\":3,"
                 "\"abcdefabcdefabcdefabcdef\":0}}", &cmd, 0, NULL)
          && cmd.type == NGX_FOKO_CHAT_CMD_RESUME && cmd.nchannels == 2
          && strcmp(cmd.channels[0].id, ID) == 0 && cmd.channels[0].seq == 3
          && cmd.channels[1].seq == 0,
          "resume: each channel with its seq");
    ngx_foko_chat_cmd_free(&cmd);

    check(decode("{\"type\":\"resume\",\"channels\":{}}", &cmd, 0, NULL)
          && cmd.nchannels == 0,
          "resume of no channel");
    ngx_foko_chat_cmd_free(&cmd);

    refused("{\"type\":\"resume\",\"channels\":[]}", "channels",
            "resume with channels that are no object");
    refused("{\"type\":\"resume\",\"channels\":{\"nope\":1}}", "channels",
            "resume with a key that is no channel id");
    refused("{\"type\":\"resume\",\"channels\":{\"" ID "\":-2}}", "channels",
            "resume with a negative seq");

    printf("done %d\n", checks);

    return 0;
}
