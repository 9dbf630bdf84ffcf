/* entry — encoding of the ingress journal payload (see entry.h). */
#include "entry.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define ENTRY_VERSION 1
#define ENTRY_HDR 8

static void put16(unsigned char *p, size_t v)
{
    p[0] = (unsigned char)(v & 0xff);
    p[1] = (unsigned char)(v >> 8);
}

static size_t get16(const unsigned char *p) { return (size_t)p[0] | (size_t)p[1] << 8; }

int tds_entry_encode(const struct tds_entry *e, char **out, size_t *len)
{
    size_t n = ENTRY_HDR + e->org_len + e->entity_len + e->msgid_len + e->msg_len;
    unsigned char *p, *q;

    if (e->org_len > UINT16_MAX || e->entity_len > UINT16_MAX || e->msgid_len > UINT16_MAX)
        return TDS_E_TOO_LARGE;
    p = malloc(n);
    if (!p)
        return -ENOMEM;
    p[0] = ENTRY_VERSION;
    p[1] = (unsigned char)e->dest;
    put16(p + 2, e->org_len);
    put16(p + 4, e->entity_len);
    put16(p + 6, e->msgid_len);
    q = p + ENTRY_HDR;
    memcpy(q, e->org, e->org_len);
    q += e->org_len;
    memcpy(q, e->entity, e->entity_len);
    q += e->entity_len;
    memcpy(q, e->msgid, e->msgid_len);
    q += e->msgid_len;
    if (e->msg_len)
        memcpy(q, e->msg, e->msg_len);
    *out = (char *)p;
    *len = n;
    return 0;
}

int tds_entry_decode(const void *buf, size_t len, struct tds_entry *e)
{
    const unsigned char *p = buf;
    size_t ol, el, il;

    if (len < ENTRY_HDR || p[0] != ENTRY_VERSION ||
        (p[1] != TDS_ENTRY_PROCESSOR && p[1] != TDS_ENTRY_FETCHER))
        return TDS_E_INVALID;
    ol = get16(p + 2);
    el = get16(p + 4);
    il = get16(p + 6);
    if (ENTRY_HDR + ol + el + il > len || il == 0)
        return TDS_E_INVALID;
    e->dest = (enum tds_entry_dest)p[1];
    e->org = (const char *)p + ENTRY_HDR;
    e->org_len = ol;
    e->entity = e->org + ol;
    e->entity_len = el;
    e->msgid = e->entity + el;
    e->msgid_len = il;
    e->msg = e->msgid + il;
    e->msg_len = len - ENTRY_HDR - ol - el - il;
    return 0;
}
