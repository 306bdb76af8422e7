
/*
 * Foko chat: server events, built and published in one place.
 *
 * An event is serialized once, as clients get it, and goes into the
 * zone's event log (ngx_foko_chat_bus.c) with what the workers need to
 * route it: the channel, the user, the seq.  Every worker reads the log
 * and hands each event to its local subscribers (ngx_foko_chat_ws.c's
 * fan-out), which is why a subscriber got a message: its connection
 * subscribed to the channel, and the event named that channel.
 */


#include "ngx_foko_chat_event.h"
#include "ngx_foko_chat_bus.h"
#include "ngx_foko_chat_cache.h"
#include "ngx_foko_chat_seq.h"
#include "ngx_foko_chat_redis.h"


/*
 * The event of a stored message as clients get it: "message" and
 * "message_updated" carry the message as serialized ("text"),
 * "message_deleted" its id and seq.  Pure, so that the Redis reader's
 * thread builds other hosts' events the same way.
 */

char *
ngx_foko_chat_event_stored_json(json_t *message, const char *text,
    ngx_uint_t kind)
{
    char    *json;
    size_t   len;
    json_t  *event;

    if (kind == NGX_FOKO_CHAT_STORED_DELETED) {
        event = json_pack("{s:s,s:O,s:O,s:O}", "type", "message_deleted",
                          "channel_id", json_object_get(message, "channel_id"),
                          "id", json_object_get(message, "id"),
                          "seq", json_object_get(message, "seq"));
        json = event ? json_dumps(event, JSON_COMPACT) : NULL;
        json_decref(event);

        return json;
    }

    /* {"type":"message","message":<the ring's text>} */
    len = ngx_strlen(text);
    json = malloc(sizeof("{\"type\":\"message_updated\","
                         "\"message\":}") + len);

    if (json) {
        ngx_sprintf((u_char *) json, "{\"type\":\"%s\",\"message\":%*s}%Z",
                    (kind == NGX_FOKO_CHAT_STORED_NEW)
                    ? "message" : "message_updated",
                    len, text);
    }

    return json;
}


ngx_int_t
ngx_foko_chat_event_stored(ngx_foko_chat_shm_ctx_t *ctx,
    json_t *message, char *dumped, ngx_uint_t kind)
{
    char                           *json, *text;
    json_t                         *seq;
    ngx_int_t                       rc;
    const char                     *channel;
    ngx_foko_chat_event_t           ev;

    channel = json_string_value(json_object_get(message, "channel_id"));
    seq = json_object_get(message, "seq");

    if (channel == NULL || ngx_strlen(channel) != NGX_FOKO_CHAT_OID_LEN
        || !json_is_integer(seq))
    {
        return NGX_ERROR;
    }

    /* serialized before the zone is locked, for the ring */
    text = dumped ? dumped : json_dumps(message, JSON_COMPACT);
    if (text == NULL) {
        return NGX_ERROR;
    }

    json = NULL;
    ngx_memzero(&ev, sizeof(ngx_foko_chat_event_t));

    if (kind) {
        /* serialized once here; every worker frames it once */

        json = ngx_foko_chat_event_stored_json(message, text, kind);

        if (json == NULL) {
            if (text != dumped) {
                free(text);
            }

            return NGX_ERROR;
        }

        ev.kind = (kind == NGX_FOKO_CHAT_STORED_NEW)
                  ? NGX_FOKO_CHAT_EV_MESSAGE : NGX_FOKO_CHAT_EV_CHANNEL;
        ngx_memcpy(ev.channel, channel, NGX_FOKO_CHAT_OID_LEN);
        ev.seq = json_integer_value(seq);
        ev.json = (u_char *) json;
        ev.json_len = ngx_strlen(json);
    }

    rc = NGX_OK;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ngx_foko_chat_seq_ack_locked(ctx->sh, (u_char *) channel,
                                 json_integer_value(seq));

    ngx_foko_chat_cache_ring_locked(ctx, (u_char *) channel, message, text);

    if (json) {
        /*
         * In the same critical section as the ack: a worker that sees the
         * channel stored through N has the events of every seq up to N.
         */
        ev.through = ngx_foko_chat_seq_through_locked(ctx->sh,
                                                      (u_char *) channel);
        rc = ngx_foko_chat_bus_publish_locked(ctx, &ev);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (json) {
        free(json);

        if (rc == NGX_OK) {
            ngx_foko_chat_bus_wake(ctx);

            /* and to the other hosts, if there are */
            ngx_foko_chat_redis_publish_stored(kind, (u_char *) channel,
                                               json_integer_value(seq), text);
        }
    }

    /* and to the workers of a zone that a reload put in place of ours */
    (void) ngx_foko_chat_bus_forward(ctx, kind, (u_char *) text,
                                     ngx_strlen(text));

    if (text != dumped) {
        free(text);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "foko chat: seq %L of %s stored, event kind %ui",
                   json_integer_value(seq), channel, kind);

    return rc;
}


/*
 * An event another host published, with the zone locked, as that host's
 * writer put it into its own zone: a stored message is acked (a new one
 * also raises the channel's counter past it), goes into the ring, and its
 * event carries this host's "through", so that the fan-out holds it until
 * its predecessors are here.
 */

ngx_int_t
ngx_foko_chat_event_remote_locked(ngx_foko_chat_shm_ctx_t *ctx,
    ngx_foko_chat_event_t *ev, json_t *message, char *text, ngx_uint_t kind)
{
    if (kind) {
        if (kind == NGX_FOKO_CHAT_STORED_NEW
            && ngx_foko_chat_seq_remote_locked(ctx, ev->channel, ev->seq)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_foko_chat_seq_ack_locked(ctx->sh, ev->channel, ev->seq);
        ngx_foko_chat_cache_ring_locked(ctx, ev->channel, message, text);
        ev->through = ngx_foko_chat_seq_through_locked(ctx->sh, ev->channel);
    }

    return ngx_foko_chat_bus_publish_locked(ctx, ev);
}


/*
 * A message that a worker of the zone this one replaced stored (forwarded
 * by ngx_foko_chat_bus.c), applied as if a worker of this zone had: its
 * seq marked stored (the counter goes past it), into the ring,
 * and its event into the log, so that this zone's subscribers get it
 * once and in seq order.
 */

void
ngx_foko_chat_event_forwarded(ngx_foko_chat_shm_ctx_t *ctx, ngx_uint_t kind,
    u_char *data, size_t len)
{
    char                   *text, *json;
    json_t                 *message, *seq;
    ngx_int_t               rc;
    const char             *channel;
    json_error_t            err;
    ngx_foko_chat_event_t   ev;

    text = ngx_alloc(len + 1, ngx_cycle->log);
    if (text == NULL) {
        return;
    }

    ngx_memcpy(text, data, len);
    text[len] = '\0';

    json = NULL;
    message = json_loadb(text, len, 0, &err);

    channel = json_string_value(json_object_get(message, "channel_id"));
    seq = json_object_get(message, "seq");

    if (channel == NULL || ngx_strlen(channel) != NGX_FOKO_CHAT_OID_LEN
        || !json_is_integer(seq) || kind > NGX_FOKO_CHAT_STORED_DELETED)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "foko chat: a forwarded message is not valid");
        goto done;
    }

    ngx_memzero(&ev, sizeof(ngx_foko_chat_event_t));

    if (kind) {
        json = ngx_foko_chat_event_stored_json(message, text, kind);
        if (json == NULL) {
            goto done;
        }

        ev.kind = (kind == NGX_FOKO_CHAT_STORED_NEW)
                  ? NGX_FOKO_CHAT_EV_MESSAGE : NGX_FOKO_CHAT_EV_CHANNEL;
        ngx_memcpy(ev.channel, channel, NGX_FOKO_CHAT_OID_LEN);
        ev.seq = json_integer_value(seq);
        ev.json = (u_char *) json;
        ev.json_len = ngx_strlen(json);
    }

    rc = NGX_OK;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (kind == NGX_FOKO_CHAT_STORED_NEW) {
        /*
         * A counter not loaded yet starts here: one loaded later from
         * MongoDB, read before this message was stored, would never
         * learn that it is.
         */
        rc = ngx_foko_chat_seq_remote_locked(ctx, (u_char *) channel,
                                             ev.seq);
    }

    ngx_foko_chat_seq_ack_locked(ctx->sh, (u_char *) channel,
                                 json_integer_value(seq));

    ngx_foko_chat_cache_ring_locked(ctx, (u_char *) channel, message, text);

    if (json && rc == NGX_OK) {
        ev.through = ngx_foko_chat_seq_through_locked(ctx->sh,
                                                      (u_char *) channel);
        rc = ngx_foko_chat_bus_publish_locked(ctx, &ev);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (json && rc == NGX_OK) {
        ngx_foko_chat_bus_wake(ctx);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "foko chat: seq %L of %s forwarded by a replaced zone",
                   json_integer_value(seq), channel);

done:

    free(json);
    json_decref(message);
    ngx_free(text);
}


/*
 * A change of a channel goes to its members' connections on every worker:
 * those who join (the members of a new channel, an invitee) start
 * receiving the channel with this event, one who leaves stops after it.
 */

void
ngx_foko_chat_event_channel(const char *kind, u_char *channel_id,
    json_t *result, u_char *user, u_char *name)
{
    char                     *json;
    u_char                   *ids;
    json_t                   *event, *channel, *members;
    ngx_uint_t                i, n;
    const char               *id;
    ngx_foko_chat_event_t     ev;
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);
    if (shm == NULL) {
        return;
    }

    ngx_memzero(&ev, sizeof(ngx_foko_chat_event_t));

    if (result) {
        channel = json_pack("{s:O,s:O,s:O,s:O}",
                            "id", json_object_get(result, "id"),
                            "name", json_object_get(result, "name"),
                            "direct", json_object_get(result, "direct"),
                            "members", json_object_get(result, "members"));
    } else {
        channel = json_pack("{s:s}", "id", (char *) channel_id);
    }

    event = json_pack("{s:s,s:s,s:o,s:{s:s,s:s}}", "type", "channel",
                      "event", kind, "channel", channel,
                      "user", "id", (char *) user, "username", (char *) name);
    json = event ? json_dumps(event, JSON_COMPACT) : NULL;
    json_decref(event);

    if (json == NULL) {
        return;
    }

    ids = NULL;
    ngx_memcpy(ev.channel, result ? (u_char *) json_string_value(
                                        json_object_get(result, "id"))
                                  : channel_id, NGX_FOKO_CHAT_OID_LEN);
    ngx_memcpy(ev.user, user, NGX_FOKO_CHAT_OID_LEN);

    switch (kind[0]) {

    case 'c':
        /* created: every member joins */
        members = json_object_get(result, "members");
        n = json_array_size(members);

        ids = ngx_alloc(n * NGX_FOKO_CHAT_OID_LEN + 1, ngx_cycle->log);
        if (ids == NULL) {
            free(json);
            return;
        }

        for (i = 0; i < n; i++) {
            id = json_string_value(json_object_get(
                                       json_array_get(members, i), "id"));
            if (id == NULL || ngx_strlen(id) != NGX_FOKO_CHAT_OID_LEN) {
                break;
            }

            ngx_memcpy(ids + ev.nids * NGX_FOKO_CHAT_OID_LEN, id,
                       NGX_FOKO_CHAT_OID_LEN);
            ev.nids++;
        }

        ev.kind = NGX_FOKO_CHAT_EV_JOIN;
        ev.ids = (u_char (*)[NGX_FOKO_CHAT_OID_LEN]) ids;
        break;

    case 'j':
        ev.kind = NGX_FOKO_CHAT_EV_JOIN;
        ev.ids = (u_char (*)[NGX_FOKO_CHAT_OID_LEN]) ev.user;
        ev.nids = 1;
        break;

    case 'l':
        ev.kind = NGX_FOKO_CHAT_EV_LEAVE;
        break;

    default:
        ev.kind = NGX_FOKO_CHAT_EV_CHANNEL;
    }

    ev.json = (u_char *) json;
    ev.json_len = ngx_strlen(json);

    if (ngx_foko_chat_bus_publish(shm, &ev) == NGX_OK) {
        ngx_foko_chat_redis_publish_event(
            (ev.kind == NGX_FOKO_CHAT_EV_JOIN) ? "join"
            : (ev.kind == NGX_FOKO_CHAT_EV_LEAVE) ? "leave" : "channel", &ev);
    }

    if (ids) {
        ngx_free(ids);
    }

    free(json);
}


/*
 * Serializes "event" (and releases it), then publishes it with what the
 * workers route it by, in "ev"; nothing happens without a zone or memory.
 * "redis": its kind for other hosts; NULL: this host's only (presence).
 */

static void
ngx_foko_chat_event_publish(json_t *event, ngx_foko_chat_event_t *ev,
    const char *redis)
{
    char                     *json;
    ngx_foko_chat_shm_ctx_t  *shm;

    shm = ngx_foko_chat_shm_cycle((ngx_cycle_t *) ngx_cycle);

    json = event ? json_dumps(event, JSON_COMPACT) : NULL;
    json_decref(event);

    if (json == NULL || shm == NULL) {
        free(json);
        return;
    }

    if (ev->kind == NGX_FOKO_CHAT_EV_PRESENCE) {
        /* the log takes records of a quarter of its size */
        ev->nids = ngx_min(ev->nids, (shm->sh->log_size / 4 - 1024)
                                     / NGX_FOKO_CHAT_OID_LEN);
    }

    ev->json = (u_char *) json;
    ev->json_len = ngx_strlen(json);

    if (ngx_foko_chat_bus_publish(shm, ev) == NGX_OK && redis) {
        ngx_foko_chat_redis_publish_event(redis, ev);
    }

    free(json);
}


void
ngx_foko_chat_event_read(u_char *channel, u_char *user, int64_t seq)
{
    ngx_foko_chat_event_t  ev;

    ngx_memzero(&ev, sizeof(ngx_foko_chat_event_t));
    ev.kind = NGX_FOKO_CHAT_EV_CHANNEL;
    ngx_memcpy(ev.channel, channel, NGX_FOKO_CHAT_OID_LEN);
    ngx_memcpy(ev.user, user, NGX_FOKO_CHAT_OID_LEN);

    ngx_foko_chat_event_publish(
        json_pack("{s:s,s:s#,s:s#,s:I}", "type", "read",
                  "channel_id", channel, (int) NGX_FOKO_CHAT_OID_LEN,
                  "user_id", user, (size_t) NGX_FOKO_CHAT_OID_LEN,
                  "seq", (json_int_t) seq),
        &ev, "read");
}


void
ngx_foko_chat_event_typing(u_char *channel, u_char *user, u_char *username)
{
    ngx_foko_chat_event_t  ev;

    ngx_memzero(&ev, sizeof(ngx_foko_chat_event_t));
    ev.kind = NGX_FOKO_CHAT_EV_TYPING;
    ngx_memcpy(ev.channel, channel, NGX_FOKO_CHAT_OID_LEN);
    ngx_memcpy(ev.user, user, NGX_FOKO_CHAT_OID_LEN);

    ngx_foko_chat_event_publish(
        json_pack("{s:s,s:s,s:{s:s#,s:s}}", "type", "typing",
                  "channel_id", channel,
                  "user", "id", user, (int) NGX_FOKO_CHAT_OID_LEN,
                  "username", (char *) username),
        &ev, "typing");
}


void
ngx_foko_chat_event_presence(u_char *user, u_char *channels, ngx_uint_t n,
    ngx_uint_t online)
{
    ngx_foko_chat_event_t  ev;

    ngx_memzero(&ev, sizeof(ngx_foko_chat_event_t));
    ev.kind = NGX_FOKO_CHAT_EV_PRESENCE;
    ngx_memcpy(ev.user, user, NGX_FOKO_CHAT_OID_LEN);
    ev.ids = (u_char (*)[NGX_FOKO_CHAT_OID_LEN]) channels;
    ev.nids = n;

    ngx_foko_chat_event_publish(
        json_pack("{s:s,s:s#,s:b}", "type", "presence",
                  "user_id", user, (int) NGX_FOKO_CHAT_OID_LEN,
                  "online", online),
        &ev, NULL);
}
