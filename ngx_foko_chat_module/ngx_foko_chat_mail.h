
/*
 * Foko chat: outgoing mail (password resets, invitations) through the
 * SendGrid v3 API or an SMTP server, with libcurl on a pool thread.
 *
 * Sending is fire-and-forget: ngx_foko_chat_mail_send() copies what it
 * needs and returns at once; the outcome is only logged.  A failed attempt
 * is retried a bounded number of times after a growing delay.
 */


#ifndef _NGX_FOKO_CHAT_MAIL_H_INCLUDED_
#define _NGX_FOKO_CHAT_MAIL_H_INCLUDED_


#include "ngx_foko_chat.h"


/* attempts per mail, and the delay before the second one (then doubled) */
#define NGX_FOKO_CHAT_MAIL_ATTEMPTS          3
#define NGX_FOKO_CHAT_MAIL_RETRY_DELAY       1000

/* bounds of one attempt; "timeout=" of foko_chat_mail replaces the total */
#define NGX_FOKO_CHAT_MAIL_CONNECT_TIMEOUT   5000
#define NGX_FOKO_CHAT_MAIL_TIMEOUT           10000

/* per worker: attempts running at once, mails kept (running or waiting) */
#define NGX_FOKO_CHAT_MAIL_CONCURRENCY       4
#define NGX_FOKO_CHAT_MAIL_MAX_PENDING       1000


typedef enum {
    NGX_FOKO_CHAT_MAIL_RESET = 0,      /* detail: the user name */
    NGX_FOKO_CHAT_MAIL_INVITE          /* detail: channel name or inviter */
} ngx_foko_chat_mail_kind_e;


/* directive handlers: conf is the ngx_foko_chat_main_conf_t */
char *ngx_foko_chat_mail_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_foko_chat_mail_public_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* from init_main_conf, once every directive has been read */
char *ngx_foko_chat_mail_init_main_conf(ngx_conf_t *cf,
    ngx_foko_chat_main_conf_t *fmcf);

/* from the module's init_process and exit_process hooks */
ngx_int_t ngx_foko_chat_mail_init_process(ngx_cycle_t *cycle);
void ngx_foko_chat_mail_exit_process(ngx_cycle_t *cycle);

/*
 * Event loop only.  Mails public_url + link_path to "to"; the inputs are
 * copied, so they may live in the request's pool.  NGX_OK means queued (or
 * skipped because no foko_chat_mail is configured), NGX_ERROR that the mail
 * was refused (bad input, no memory); either way it has been logged, and
 * the caller answers its client as if the mail went out.
 */
ngx_int_t ngx_foko_chat_mail_send(ngx_foko_chat_main_conf_t *fmcf,
    ngx_log_t *log, ngx_foko_chat_mail_kind_e kind, ngx_str_t *to,
    ngx_str_t *link_path, ngx_str_t *detail);


#endif /* _NGX_FOKO_CHAT_MAIL_H_INCLUDED_ */
