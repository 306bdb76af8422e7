
/*
 * Foko chat: WebSocket frames (RFC 6455), pure parse and encode.
 *
 * No event code here: the connection code hands the parser whatever bytes
 * arrived, one at a time or many frames at once, and the parser keeps all
 * of its state in ngx_foko_chat_ws_parser_t between calls.  Built inside
 * the module it uses nginx's types, ngx_sha1 and ngx_encode_base64; with
 * -DNGX_FOKO_CHAT_WS_STANDALONE=1 a test harness supplies them through
 * "ws_frame_shim.h" instead.
 */


#ifndef _NGX_FOKO_CHAT_WS_FRAME_H_INCLUDED_
#define _NGX_FOKO_CHAT_WS_FRAME_H_INCLUDED_


#if (NGX_FOKO_CHAT_WS_STANDALONE)
#include "ws_frame_shim.h"
#else
#include <ngx_config.h>
#include <ngx_core.h>
#endif


#define NGX_FOKO_CHAT_WS_CONT                 0x0
#define NGX_FOKO_CHAT_WS_TEXT                 0x1
#define NGX_FOKO_CHAT_WS_BINARY               0x2
#define NGX_FOKO_CHAT_WS_CLOSE                0x8
#define NGX_FOKO_CHAT_WS_PING                 0x9
#define NGX_FOKO_CHAT_WS_PONG                 0xa

/* close codes this code uses; the connection code adds its own 4xxx */
#define NGX_FOKO_CHAT_WS_CLOSE_NORMAL         1000
#define NGX_FOKO_CHAT_WS_CLOSE_GOING_AWAY     1001
#define NGX_FOKO_CHAT_WS_CLOSE_PROTOCOL       1002
#define NGX_FOKO_CHAT_WS_CLOSE_NO_STATUS      1005
#define NGX_FOKO_CHAT_WS_CLOSE_INVALID_DATA   1007
#define NGX_FOKO_CHAT_WS_CLOSE_POLICY         1008
#define NGX_FOKO_CHAT_WS_CLOSE_TOO_BIG        1009
#define NGX_FOKO_CHAT_WS_CLOSE_INTERNAL       1011
#define NGX_FOKO_CHAT_WS_CLOSE_TRY_AGAIN      1013

/* payload of a control frame, and of the reason in a close frame */
#define NGX_FOKO_CHAT_WS_CONTROL_MAX          125
#define NGX_FOKO_CHAT_WS_REASON_MAX           123

/* the largest server frame header: no mask, 64-bit length */
#define NGX_FOKO_CHAT_WS_HEADER_MAX           10

/* a whole server control frame: ngx_foko_chat_ws_control/close() */
#define NGX_FOKO_CHAT_WS_CONTROL_FRAME_MAX    (2 + NGX_FOKO_CHAT_WS_CONTROL_MAX)

/* Sec-WebSocket-Key (base64 of 16 bytes), Sec-WebSocket-Accept (of 20) */
#define NGX_FOKO_CHAT_WS_KEY_LEN              24
#define NGX_FOKO_CHAT_WS_ACCEPT_LEN           28

/* a client frame header: 2 bytes, up to 8 of length, 4 of mask key */
#define NGX_FOKO_CHAT_WS_CLIENT_HEADER_MAX    14


/* an incremental UTF-8 validator: continuation bytes still expected */
typedef struct {
    u_char                      need;
    u_char                      lo;     /* range of the next byte */
    u_char                      hi;
} ngx_foko_chat_ws_utf8_t;


typedef struct {
    /* set by ngx_foko_chat_ws_parser_init(), read-only afterwards */
    size_t                      max_message;

    ngx_uint_t                  state;

    /* the frame header being read */
    u_char                      header[NGX_FOKO_CHAT_WS_CLIENT_HEADER_MAX];
    ngx_uint_t                  header_len;
    ngx_uint_t                  header_need;

    /* the current frame */
    ngx_uint_t                  opcode;
    u_char                      mask[4];
    ngx_uint_t                  mask_pos;   /* payload offset, modulo 4 */
    uint64_t                    length;
    uint64_t                    left;       /* payload bytes not yet read */

    /*
     * The data message being read: its opcode (0 if none is open), the
     * sum of the lengths of its frames so far, never above max_message.
     */
    ngx_uint_t                  message;
    uint64_t                    message_len;
    ngx_foko_chat_ws_utf8_t     utf8;

    /* a control frame is collected here, unmasked */
    u_char                      control[NGX_FOKO_CHAT_WS_CONTROL_MAX];
    size_t                      control_len;

    /* after NGX_ERROR: the close code to send, and why, for the log */
    ngx_uint_t                  close_code;
    const char                 *error;

    unsigned                    fin:1;
    unsigned                    first:1;    /* no chunk of message given */
} ngx_foko_chat_ws_parser_t;


/*
 * One event of the parser.  For data (opcode TEXT or BINARY, also for the
 * continuation frames of a message): a chunk of the message, unmasked in
 * place inside the caller's input buffer; "first" and "last" mark the
 * first and the final chunk of the message.  A chunk with both set is the
 * whole message, usable in place without a copy.  "message_len" is the
 * sum of the lengths announced by the message's frames so far: exact for
 * a single-frame message, and never above max_message, so a buffer that
 * size always fits the message.
 *
 * For a control frame (CLOSE, PING, PONG): the whole payload, in the
 * parser's own buffer.  For CLOSE also the code (1005, NO_STATUS, if the
 * frame had none) and the reason, already checked as UTF-8.
 *
 * A data chunk lives as long as the caller's input buffer, a control
 * payload until the next call: copy what must outlive them.
 */
typedef struct {
    ngx_uint_t                  opcode;
    u_char                     *data;
    size_t                      len;
    uint64_t                    message_len;

    ngx_uint_t                  close_code;
    u_char                     *reason;
    size_t                      reason_len;

    unsigned                    first:1;
    unsigned                    last:1;
} ngx_foko_chat_ws_frame_t;


/*
 * Sets the parser up for a new connection.  max_message bounds a data
 * message, all of its frames together; control frames have their own
 * bound, 125 bytes.
 */
void ngx_foko_chat_ws_parser_init(ngx_foko_chat_ws_parser_t *p,
    size_t max_message);

/*
 * Reads client frames from *pos up to last and moves *pos past what it
 * used.  Returns
 *
 *   NGX_OK      an event is in *f; call again for the rest of the input;
 *   NGX_AGAIN   all the input is used (*pos == last), nothing to report;
 *   NGX_DONE    a close frame was returned before: nothing more is read,
 *               *pos stays;
 *   NGX_ERROR   the client broke the protocol: p->close_code is 1002
 *               (protocol), 1007 (bad UTF-8) or 1009 (too big) and
 *               p->error says why; every later call fails the same way.
 *
 * Any chunking of the same bytes gives the same messages, control frames
 * and outcome; only how data messages are cut into chunks differs.  Sizes
 * are decided from the frame header, before any payload is given out.
 */
ngx_int_t ngx_foko_chat_ws_parse(ngx_foko_chat_ws_parser_t *p, u_char **pos,
    u_char *last, ngx_foko_chat_ws_frame_t *f);


/*
 * Server frames: final and unmasked.  The header of a frame with "len"
 * bytes of payload (len < 2^63) goes to buf, which has room for
 * NGX_FOKO_CHAT_WS_HEADER_MAX bytes; returns its length, 2, 4 or 10.
 * Framed bytes built once can be shared by every subscriber.
 */
size_t ngx_foko_chat_ws_header(u_char *buf, ngx_uint_t opcode, uint64_t len);
size_t ngx_foko_chat_ws_header_len(uint64_t len);

/*
 * A whole control frame in buf (NGX_FOKO_CHAT_WS_CONTROL_FRAME_MAX bytes);
 * a payload over 125 bytes is cut.  Returns the frame's length.
 */
size_t ngx_foko_chat_ws_control(u_char *buf, ngx_uint_t opcode,
    u_char *data, size_t len);

#define ngx_foko_chat_ws_pong(buf, data, len)                                 \
    ngx_foko_chat_ws_control(buf, NGX_FOKO_CHAT_WS_PONG, data, len)
#define ngx_foko_chat_ws_ping(buf, data, len)                                 \
    ngx_foko_chat_ws_control(buf, NGX_FOKO_CHAT_WS_PING, data, len)

/*
 * A whole close frame in buf (NGX_FOKO_CHAT_WS_CONTROL_FRAME_MAX bytes).
 * Code 0 sends no code and no reason.  The reason, UTF-8, is cut to 123
 * bytes at a character boundary.  Returns the frame's length.
 */
size_t ngx_foko_chat_ws_close(u_char *buf, ngx_uint_t code, u_char *reason,
    size_t len);

/* NGX_OK for a Sec-WebSocket-Key that is base64 of 16 bytes */
ngx_int_t ngx_foko_chat_ws_key_valid(const u_char *key, size_t len);

/* Sec-WebSocket-Accept of a key: NGX_FOKO_CHAT_WS_ACCEPT_LEN bytes */
void ngx_foko_chat_ws_accept_key(const u_char *key, size_t len, u_char *out);


#endif /* _NGX_FOKO_CHAT_WS_FRAME_H_INCLUDED_ */
