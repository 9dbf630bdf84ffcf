/* entry — the payload ingress stores in each journal record.
 *
 * A record must be resendable on its own after a restart: it keeps where the
 * message goes (processor or fetcher), the organization (for replay --org),
 * the entity (for events and logs), the stable message id (acks name it) and
 * the encoded message, ready to send as one ZeroMQ frame. Layout: u8 version,
 * u8 dest, u16 org length, u16 entity length, u16 id length, org, entity, id,
 * message bytes. Never allocates on decode.
 */
#ifndef TDS_INGRESS_ENTRY_H
#define TDS_INGRESS_ENTRY_H

#include <stddef.h>

enum tds_entry_dest { TDS_ENTRY_PROCESSOR = 1, TDS_ENTRY_FETCHER = 2 };

struct tds_entry {
    enum tds_entry_dest dest;
    const char *org;
    size_t org_len;
    const char *entity;
    size_t entity_len;
    const char *msgid;
    size_t msgid_len;
    const void *msg;        /* encoded tds_msg (event or fetch) */
    size_t msg_len;
};

/* New buffer in *out (caller frees). Returns 0, TDS_E_TOO_LARGE or -ENOMEM. */
int tds_entry_encode(const struct tds_entry *e, char **out, size_t *len);
/* Pointers in e point into buf. Returns 0 or TDS_E_INVALID. */
int tds_entry_decode(const void *buf, size_t len, struct tds_entry *e);

#endif
