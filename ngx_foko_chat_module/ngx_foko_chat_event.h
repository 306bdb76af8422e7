
/*
 * Foko chat: server events.  Every event a client can get (message,
 * message_updated, message_deleted, channel, read, typing, presence) is
 * built and published here, and only here.
 */


#ifndef _NGX_FOKO_CHAT_EVENT_H_INCLUDED_
#define _NGX_FOKO_CHAT_EVENT_H_INCLUDED_


#include <jansson.h>

#include "ngx_foko_chat.h"
#include "ngx_foko_chat_shm.h"
#include "ngx_foko_chat_bus.h"


#define NGX_FOKO_CHAT_STORED_QUIET     0   /* into the ring, no event */
#define NGX_FOKO_CHAT_STORED_NEW       1   /* "message" */
#define NGX_FOKO_CHAT_STORED_UPDATED   2   /* "message_updated" */
#define NGX_FOKO_CHAT_STORED_DELETED   3   /* "message_deleted" */


/*
 * A message MongoDB stored (acknowledged, edited, deleted), in one
 * critical section of the zone: its seq is marked stored, it goes into
 * the ring if the channel is cached, and unless "kind" is QUIET its event
 * goes into the event log; then the other workers are woken.  "dumped",
 * if not NULL, is the message serialized already (JSON_COMPACT).
 */
ngx_int_t ngx_foko_chat_event_stored(ngx_foko_chat_shm_ctx_t *ctx,
    json_t *message, char *dumped, ngx_uint_t kind);

/* the event of a stored message, as clients get it (malloc()ed) */
char *ngx_foko_chat_event_stored_json(json_t *message, const char *text,
    ngx_uint_t kind);

/* an event of another host (ngx_foko_chat_redis_reader.c); zone locked */
ngx_int_t ngx_foko_chat_event_remote_locked(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_event_t *ev, json_t *message, char *text, ngx_uint_t kind);

/* a message stored by a worker of the zone this one replaced */
void ngx_foko_chat_event_forwarded(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_uint_t kind, u_char *text, size_t len);

/* "channel": created, joined, left, renamed; result: the channel, or NULL */
void ngx_foko_chat_event_channel(const char *kind, u_char *channel_id,
    json_t *result, u_char *user, u_char *name);

/* "read": a member's read mark was stored */
void ngx_foko_chat_event_read(u_char *channel, u_char *user, int64_t seq);

/* "typing": to the channel's members but the typer */
void ngx_foko_chat_event_typing(u_char *channel, u_char *user,
    u_char *username);

/* "presence": to the members of the user's channels (24 bytes each) */
void ngx_foko_chat_event_presence(u_char *user, u_char *channels,
    ngx_uint_t n, ngx_uint_t online);


#endif /* _NGX_FOKO_CHAT_EVENT_H_INCLUDED_ */
