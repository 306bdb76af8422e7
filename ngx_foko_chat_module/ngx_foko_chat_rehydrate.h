
/*
 * Foko chat: warming the shared zone up from MongoDB at start.
 */


#ifndef _NGX_FOKO_CHAT_REHYDRATE_H_INCLUDED_
#define _NGX_FOKO_CHAT_REHYDRATE_H_INCLUDED_


#include "ngx_foko_chat.h"


#define NGX_FOKO_CHAT_REHYDRATE_CHANNELS  1000

/* accounts read when every channel was (fewer than the bound above) */
#define NGX_FOKO_CHAT_REHYDRATE_USERS     20000


/* once per zone, by the first worker that finds MongoDB up */
void ngx_foko_chat_rehydrate(ngx_log_t *log);


#endif /* _NGX_FOKO_CHAT_REHYDRATE_H_INCLUDED_ */
