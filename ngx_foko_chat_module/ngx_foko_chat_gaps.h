
/*
 * Foko chat: gap tombstones for the seqs of a worker that died.
 */


#ifndef _NGX_FOKO_CHAT_GAPS_H_INCLUDED_
#define _NGX_FOKO_CHAT_GAPS_H_INCLUDED_


#include "ngx_foko_chat.h"


ngx_int_t ngx_foko_chat_gaps_init_process(ngx_cycle_t *cycle);


#endif /* _NGX_FOKO_CHAT_GAPS_H_INCLUDED_ */
