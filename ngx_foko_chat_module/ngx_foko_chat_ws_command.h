
/*
 * Foko chat: the JSON commands a WebSocket client sends, decoded and
 * checked.  No event code and no nginx types: the fuzz target links it
 * with jansson alone.
 */


#ifndef _NGX_FOKO_CHAT_WS_COMMAND_H_INCLUDED_
#define _NGX_FOKO_CHAT_WS_COMMAND_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "ngx_foko_chat_oid.h"


#define NGX_FOKO_CHAT_CMD_AUTH          1
#define NGX_FOKO_CHAT_CMD_SEND          2
#define NGX_FOKO_CHAT_CMD_TYPING        3
#define NGX_FOKO_CHAT_CMD_READ          4
#define NGX_FOKO_CHAT_CMD_RESUME        5

#define NGX_FOKO_CHAT_CMD_REF_MAX       64      /* bytes of a "ref" */
#define NGX_FOKO_CHAT_CMD_TOKEN_MAX     4096
#define NGX_FOKO_CHAT_CMD_RESUME_MAX    1000    /* channels in a resume */


typedef struct {
    char                       id[NGX_FOKO_CHAT_OID_SIZE];
    int64_t                    seq;
} ngx_foko_chat_cmd_channel_t;


typedef struct {
    int                        type;
    json_t                    *root;       /* json_decref() when done */

    /* "ref" as given, NUL-terminated; empty if none */
    char                       ref[NGX_FOKO_CHAT_CMD_REF_MAX + 1];

    const char                *token;      /* auth */
    size_t                     token_len;
    /* send, typing, read */
    char                       channel[NGX_FOKO_CHAT_OID_SIZE];
    int64_t                    seq;                    /* read */
    json_t                    *body;       /* send: root, with text... */

    /* resume; auth's "resume" (none if absent): malloc() */
    ngx_foko_chat_cmd_channel_t  *channels;
    size_t                     nchannels;

    /* when decoding fails: the field at fault and what is wrong */
    const char                *field;
    const char                *problem;
} ngx_foko_chat_cmd_t;


/*
 * Decodes one text message.  Returns 0 with cmd filled, or -1 with
 * cmd->field and cmd->problem set (cmd->ref too, if the message had a
 * usable one).  Either way ngx_foko_chat_cmd_free() releases it.
 */
int ngx_foko_chat_cmd_decode(const char *data, size_t len,
    ngx_foko_chat_cmd_t *cmd);
void ngx_foko_chat_cmd_free(ngx_foko_chat_cmd_t *cmd);



#endif /* _NGX_FOKO_CHAT_WS_COMMAND_H_INCLUDED_ */
