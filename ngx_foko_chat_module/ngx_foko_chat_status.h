
/*
 * Foko chat: the operator's status page.
 */


#ifndef _NGX_FOKO_CHAT_STATUS_H_INCLUDED_
#define _NGX_FOKO_CHAT_STATUS_H_INCLUDED_


#include "ngx_foko_chat.h"


ngx_int_t ngx_foko_chat_status_handler(ngx_http_request_t *r);


#endif /* _NGX_FOKO_CHAT_STATUS_H_INCLUDED_ */
