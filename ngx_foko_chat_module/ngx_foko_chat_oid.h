
/*
 * Foko chat: MongoDB ObjectIds as the module passes them around: 24
 * lowercase hex digits, usually followed by a NUL.  Plain C, so that the
 * command decoder and its fuzz target share the one check.
 */


#ifndef _NGX_FOKO_CHAT_OID_H_INCLUDED_
#define _NGX_FOKO_CHAT_OID_H_INCLUDED_


#include <stddef.h>


#define NGX_FOKO_CHAT_OID_LEN          24
#define NGX_FOKO_CHAT_OID_SIZE         (NGX_FOKO_CHAT_OID_LEN + 1)


/* 1 if p holds exactly an ObjectId in lowercase hex, else 0 */

static inline int
ngx_foko_chat_oid_valid(const unsigned char *p, size_t len)
{
    size_t  i;

    if (p == NULL || len != NGX_FOKO_CHAT_OID_LEN) {
        return 0;
    }

    for (i = 0; i < NGX_FOKO_CHAT_OID_LEN; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) {
            return 0;
        }
    }

    return 1;
}


#endif /* _NGX_FOKO_CHAT_OID_H_INCLUDED_ */
