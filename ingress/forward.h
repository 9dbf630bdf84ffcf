/* forward — sends journaled webhooks downstream and releases them on ack.
 *
 * Owns the PUSH sockets to the processor (`event`) and the fetcher (`fetch`),
 * the SUB socket for the writer's acks, and the table of entries sent but not
 * acknowledged. Everything but submit/synced runs on the loop thread (ZeroMQ
 * sockets belong to one thread): HTTP threads submit entries under their
 * intake lock, the journal's sync thread says through an eventfd how far its
 * group commit goes as it begins one, and the loop sends what that commit
 * holds, while it is written (forward.c). An entry not acked within
 * ack_timeout_ms is sent again with the same message id, until acked, the
 * wait doubling with each send up to resend_max_ms; at
 * start-up every unacked journal entry is sent again. `fetch` entries are
 * released once ZeroMQ takes them unless fetch_acks is set (no stage acks a
 * fetch today). Never answers HTTP.
 */
#ifndef TDS_INGRESS_FORWARD_H
#define TDS_INGRESS_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tds_forward;
struct tds_forward_slot;
struct tds_loop;
struct tds_bus;
struct tds_journal;
struct tds_journal_loc;
struct tds_metrics;
struct tds_events;

struct tds_forward_opts {
    const char *origin;             /* "ingress.<instance>": ack topic */
    const char *processor_connect;
    const char *fetcher_connect;
    const char *ack_connect;
    int64_t ack_timeout_ms;
    int64_t resend_max_ms;          /* the wait doubles per send up to this (≥ ack_timeout_ms) */
    size_t max_buffered_bytes;      /* entry bytes kept in memory; beyond, re-read from journal */
    /* Bytes of messages in ZeroMQ's send queues at most (0: no bound; its
     * high-water mark counts messages, whatever their size): past it a
     * message waits for the next flush, as for a full queue. */
    size_t max_queued_bytes;
    int hwm;                        /* ZeroMQ high-water mark of the PUSH sockets */
    bool fetch_acks;                /* keep `fetch` entries until an ack names them */
};

int tds_forward_new(struct tds_forward **out, const struct tds_forward_opts *o,
                    struct tds_loop *loop, struct tds_bus *bus, struct tds_journal *j,
                    struct tds_metrics *m, struct tds_events *ev);
struct tds_forward *tds_forward_free(struct tds_forward *f);
/* The journal may be opened after forward (its scan feeds tds_forward_recover). */
void tds_forward_set_journal(struct tds_forward *f, struct tds_journal *j);

/* Any thread: the memory one submit needs, taken before the journal append,
 * so that handing over an entry cannot fail once it is journaled (a request
 * answered 500 with its entry journaled and in the dedupe window would never
 * be sent until a restart). Returns 0 or -ENOMEM. An unused slot is freed
 * with tds_forward_slot_free (takes NULL, returns NULL). */
int tds_forward_slot_new(struct tds_forward_slot **out);
struct tds_forward_slot *tds_forward_slot_free(struct tds_forward_slot *s);
/* Any thread, in seq order: an appended, not yet durable entry. Takes *slot
 * and *buf (sets both to NULL). Cannot fail. */
void tds_forward_submit(struct tds_forward *f, struct tds_forward_slot **slot, uint64_t seq,
                        const struct tds_journal_loc *loc, char **buf, size_t len);
/* Sync thread: a group commit of everything ≤ upto begins. Arms the loop's
 * held-up timer for HELD_UP_US from now (tds_forward_synced disarms it); one
 * thread only, as the journal's sync thread is. */
void tds_forward_syncing(struct tds_forward *f, uint64_t upto);
/* Sync thread: everything ≤ synced is durable (failed: nothing more will be).
 * Wakes the loop when a node read back before its record was written waits
 * for this sync. */
void tds_forward_synced(struct tds_forward *f, uint64_t synced, bool failed);
/* Counts n journal records found at start that can never be sent (dead
 * letters; the caller acks them in the journal). */
void tds_forward_dead(struct tds_forward *f, size_t n);
/* Loop thread, before running: an unacked entry found in the journal. */
int tds_forward_recover(struct tds_forward *f, uint64_t seq, const struct tds_journal_loc *loc,
                        const void *payload, size_t len);

size_t tds_forward_unacked(struct tds_forward *f);
/* Gauges (journal bytes, unacked) and segment GC; the loop calls it each second. */
void tds_forward_tick(struct tds_forward *f);

#endif
