
/*
 * Foko chat: outgoing mail, the internals its files share.
 *
 *   ngx_foko_chat_mail.c          a worker's mails: queue, attempts, retries
 *   ngx_foko_chat_mail_conf.c     the foko_chat_mail and foko_chat_public_url
 *                                 directives, URLs checked by libcurl
 *   ngx_foko_chat_mail_compose.c  what a mail says and carries: addresses,
 *                                 texts, the SendGrid body, the RFC 5322
 *                                 message
 *   ngx_foko_chat_mail_curl.c     one attempt on a pool thread: libcurl over
 *                                 HTTP or SMTP
 */


#ifndef _NGX_FOKO_CHAT_MAIL_INT_H_INCLUDED_
#define _NGX_FOKO_CHAT_MAIL_INT_H_INCLUDED_


#include <curl/curl.h>

#include "ngx_foko_chat_mail.h"
#include "ngx_foko_chat_task.h"


#define NGX_FOKO_CHAT_MAIL_REPLY_MAX       200


typedef enum {
    NGX_FOKO_CHAT_MAIL_SENDGRID = 0,
    NGX_FOKO_CHAT_MAIL_SMTP
} ngx_foko_chat_mail_transport_e;


struct ngx_foko_chat_mail_conf_s {
    ngx_foko_chat_mail_transport_e  transport;

    /* null-terminated, for libcurl */
    char                           *url;
    char                           *auth_header;
    char                           *mail_from;

    ngx_str_t                       from;
    ngx_str_t                       domain;

    /* the endpoint as logged: never a key or a password */
    ngx_str_t                       endpoint;

    ngx_msec_t                      timeout;
    ngx_msec_t                      connect_timeout;

    /* the SMTP URL carries a user and password: TLS is required then */
    unsigned                        credentials:1;
};


typedef struct {
    ngx_foko_chat_mail_conf_t      *conf;
    ngx_thread_pool_t              *thread_pool;
    ngx_log_t                      *log;
    const char                     *kind;

    /* null-terminated; rcpt is "<to>" */
    ngx_str_t                       to;
    char                           *rcpt;

    /* the JSON body or the RFC 5322 message */
    ngx_str_t                       payload;

    ngx_uint_t                      attempts;
    ngx_event_t                     retry;

    ngx_queue_t                     queue;
    ngx_queue_t                     wait;

    unsigned                        running:1;
    unsigned                        waiting:1;
} ngx_foko_chat_mail_t;


/* one attempt: the data of its thread task */
typedef struct {
    ngx_foko_chat_mail_t           *mail;

    /* the part of the message the SMTP upload has not read yet */
    u_char                         *pos;
    size_t                          left;

    /* NGX_OK: sent, NGX_AGAIN: worth retrying, NGX_ERROR: not */
    ngx_int_t                       rc;
    long                            status;
    char                            error[CURL_ERROR_SIZE];
    u_char                          reply[NGX_FOKO_CHAT_MAIL_REPLY_MAX];
    size_t                          reply_len;
} ngx_foko_chat_mail_attempt_t;


/* ngx_foko_chat_mail_compose.c, on the event loop */

/* a plain addr-spec, as a header and an SMTP envelope carry it as is */
ngx_int_t ngx_foko_chat_mail_check_addr(ngx_str_t *addr);
/* the caller's part of a link: "/...", printable ASCII, escaped already */
ngx_int_t ngx_foko_chat_mail_check_path(ngx_str_t *path);
/* the whole request of a mail of "kind" into pool, for mcf's transport */
ngx_int_t ngx_foko_chat_mail_payload(ngx_pool_t *pool,
    ngx_foko_chat_mail_conf_t *mcf, ngx_foko_chat_mail_kind_e kind,
    ngx_str_t *to, ngx_str_t *link, ngx_str_t *detail, ngx_str_t *out);

/* ngx_foko_chat_mail_curl.c: the run of an attempt's thread task */
void ngx_foko_chat_mail_run(ngx_foko_chat_task_t *task, ngx_log_t *log);


#endif /* _NGX_FOKO_CHAT_MAIL_INT_H_INCLUDED_ */
