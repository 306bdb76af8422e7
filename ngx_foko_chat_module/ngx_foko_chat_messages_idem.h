
/*
 * Foko chat: the posts of one client_id, across workers: the first makes
 * the message, the others wait for it and get its answer.
 */


#ifndef _NGX_FOKO_CHAT_MESSAGES_IDEM_H_INCLUDED_
#define _NGX_FOKO_CHAT_MESSAGES_IDEM_H_INCLUDED_


#include "ngx_foko_chat.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_writer.h"

#include <jansson.h>


/* how long a repeat waits for the post it repeats, in ms */
#define NGX_FOKO_CHAT_IDEM_WAIT      NGX_FOKO_CHAT_POST_WAIT

/* how long a stored post's answer stays for the repeats that waited, s */
#define NGX_FOKO_CHAT_IDEM_LINGER    2


void ngx_foko_chat_idem_init(ngx_foko_chat_sh_t *sh);

/*
 * A post of "author" with "client_id" to "channel" asks to make its
 * message.  NGX_DONE: it does (the zone marks it pending until
 * ngx_foko_chat_idem_settle()); NGX_OK: the message is made already,
 * *message is it (a new reference); NGX_BUSY: another post of it is
 * pending in the channel: wait for it; NGX_DECLINED: the client_id is the
 * author's in another channel.
 */
ngx_int_t ngx_foko_chat_idem_claim(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, u_char *author, u_char *client_id, json_t **message);

/* the zone has a post of "client_id" in "channel", pending or stored */
ngx_uint_t ngx_foko_chat_idem_known(ngx_foko_chat_shm_ctx_t *ctx,
    u_char *channel, u_char *author, u_char *client_id);

/*
 * The claim of "author" and "client_id" in "channel" is settled: "text"
 * is the stored message its repeats get (JSON_COMPACT), or NULL if none
 * was made: then the next repeat makes it.
 */
void ngx_foko_chat_idem_settle(ngx_foko_chat_shm_ctx_t *ctx,
    const char *channel, const char *author, const char *client_id,
    const char *text);


#endif /* _NGX_FOKO_CHAT_MESSAGES_IDEM_H_INCLUDED_ */
