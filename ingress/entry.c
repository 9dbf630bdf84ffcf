/* entry — encoding of the ingress journal payload (see entry.h). */
#include "entry.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define ENTRY_VERSION 1
#define ENTRY_HDR 6

int tds_entry_encode(const struct tds_entry *e, char **out, size_t *len)
{
    size_t n = ENTRY_HDR + e->org_len + e->msgid_len + e->msg_len;
    unsigned char *p;

    if (e->org_len > UINT16_MAX || e->msgid_len > UINT16_MAX)
        return TDS_E_TOO_LARGE;
    p = malloc(n);
    if (!p)
        return -ENOMEM;
    p[0] = ENTRY_VERSION;
    p[1] = (unsigned char)e->dest;
    p[2] = (unsigned char)(e->org_len & 0xff);
    p[3] = (unsigned char)(e->org_len >> 8);
    p[4] = (unsigned char)(e->msgid_len & 0xff);
    p[5] = (unsigned char)(e->msgid_len >> 8);
    memcpy(p + ENTRY_HDR, e->org, e->org_len);
    memcpy(p + ENTRY_HDR + e->org_len, e->msgid, e->msgid_len);
    if (e->msg_len)
        memcpy(p + ENTRY_HDR + e->org_len + e->msgid_len, e->msg, e->msg_len);
    *out = (char *)p;
    *len = n;
    return 0;
}

int tds_entry_decode(const void *buf, size_t len, struct tds_entry *e)
{
    const unsigned char *p = buf;
    size_t ol, il;

    if (len < ENTRY_HDR || p[0] != ENTRY_VERSION ||
        (p[1] != TDS_ENTRY_PROCESSOR && p[1] != TDS_ENTRY_FETCHER))
        return TDS_E_INVALID;
    ol = (size_t)p[2] | (size_t)p[3] << 8;
    il = (size_t)p[4] | (size_t)p[5] << 8;
    if (ENTRY_HDR + ol + il > len || il == 0)
        return TDS_E_INVALID;
    e->dest = (enum tds_entry_dest)p[1];
    e->org = (const char *)p + ENTRY_HDR;
    e->org_len = ol;
    e->msgid = (const char *)p + ENTRY_HDR + ol;
    e->msgid_len = il;
    e->msg = p + ENTRY_HDR + ol + il;
    e->msg_len = len - ENTRY_HDR - ol - il;
    return 0;
}
