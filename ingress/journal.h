/* journal — the ingress's durable log of accepted webhooks (see DESIGN.md here).
 *
 * Owns a directory of segment files, the group-commit sync thread and the
 * bookkeeping of which entries are still unacknowledged. Records are framed as
 * magic + length + type + seq + wall time + CRC32C + payload; a record whose
 * checksum fails at open time (a torn write from a crash) ends its segment and
 * is truncated away, never replayed. The payload is opaque here: the journal
 * never parses what it stores and never talks to the network.
 *
 * Threads: append/wait/is_synced from any thread; ack/gc/read from one thread
 * (the loop); the sync thread is internal. All state is behind one mutex.
 */
#ifndef TDS_INGRESS_JOURNAL_H
#define TDS_INGRESS_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    TDS_JOURNAL_E_FULL = 1,    /* over max_bytes even after dropping acked segments */
    TDS_JOURNAL_E_FAILED = 2,  /* a write or fdatasync failed: the journal refuses work */
    TDS_JOURNAL_E_TIMEOUT = 3, /* wait timed out */
    TDS_JOURNAL_E_CORRUPT = 4, /* read: record at loc does not check out */
    TDS_JOURNAL_E_NOSPACE = 5, /* sync/wait: no room on the disk; the write is retried */
    TDS_JOURNAL_E_BACKLOG = 6, /* append: max_unacked entries wait for their ack */
    TDS_JOURNAL_E_BUSY = 7,    /* append: max_pending_bytes wait for their sync */
    TDS_JOURNAL_E_LOCKED = 8,  /* open: another process holds the folder */
};

/* While a write finds no room on the disk, how long the sync thread waits
 * before writing the same batch again. */
#define TDS_JOURNAL_RETRY_MS 250
/* A group commit smaller than this may wait sync_delay_us for more entries
 * (while webhooks arrive closer together than that); it stops waiting once it
 * holds this many. */
#define TDS_JOURNAL_LINGER_BATCH 8

/* Largest payload one record may carry. */
#define TDS_JOURNAL_MAX_PAYLOAD (32u * 1024 * 1024)
/* How far the segment taking writes is zero-filled ahead of its records
 * (journal.c). The commit that crosses that length writes the next zeros and
 * waits for them while no other commit can begin, so the step is small
 * (1 MiB took ~3 ms alone and more under load: ingress/DESIGN.md). */
#define TDS_JOURNAL_PREFILL_BYTES (64u * 1024)

struct tds_journal;

struct tds_journal_opts {
    const char *dir;          /* created if missing */
    uint64_t max_bytes;       /* all segments together, acked ones included */
    uint64_t segment_bytes;   /* start a new segment past this size */
    int64_t retention_ms;     /* keep fully acked segments this long (for replay) */
    bool sync_thread;         /* false: nothing syncs until tds_journal_sync() (tests) */
    int64_t sync_delay_us;    /* a small group commit waits up to this for company; 0: never */
    bool read_only;           /* replay CLI: scan only, no truncation, no new segment */
    /* Entries not acked at most (0: no bound). Once the count reaches it,
     * appends are refused (TDS_JOURNAL_E_BACKLOG) until acks bring it under
     * tds_journal_backlog_resume(): each unacked entry costs the caller
     * memory until acked. An open that finds more keeps them all. */
    uint64_t max_unacked;
    /* Bytes of records appended and not yet synced at most (0: no bound):
     * each is held in memory until its sync ends, and its caller usually
     * holds a copy too, so a disk whose syncs take seconds would let them
     * grow with every request. Past it appends are refused
     * (TDS_JOURNAL_E_BUSY); one record alone always goes in. */
    uint64_t max_pending_bytes;
};

/* Where a record lives: segment id (its first seq) and byte offset. */
struct tds_journal_loc {
    uint64_t seg;
    uint64_t off;
    uint32_t len;             /* payload length */
};

/* One entry seen while opening. payload is valid during the callback only. */
struct tds_journal_rec {
    uint64_t seq;
    int64_t wall_ms;
    bool acked;
    struct tds_journal_loc loc;
    const void *payload;
    size_t len;
};

/* Return 0 to go on, anything else stops the open with that code. */
typedef int (*tds_journal_scan_cb)(const struct tds_journal_rec *r, void *ud);
/* After every group commit, on the sync thread, without the journal's lock:
 * every seq ≤ synced is durable. failed is true when the journal just failed. */
typedef void (*tds_journal_synced_cb)(uint64_t synced, bool failed, void *ud);
/* After every group commit: entries in the batch and seconds spent syncing. */
typedef void (*tds_journal_stats_cb)(uint64_t batch, double sync_s, void *ud);
/* Before a group commit's writes, on the sync thread, without the journal's
 * lock: every seq ≤ upto is on its way to disk (and may yet fail to get
 * there). */
typedef void (*tds_journal_syncing_cb)(uint64_t upto, void *ud);
/* Called by the sync thread when a write found no room on the disk: every
 * entry above `synced` now reads as not durable (tds_journal_state -1) until a
 * retry fits, and appends are refused with TDS_JOURNAL_E_FULL. */
typedef void (*tds_journal_stalled_cb)(uint64_t synced, void *ud);

struct tds_journal_open_info {
    size_t segments;
    uint64_t entries;
    uint64_t unacked;
    uint64_t torn;            /* segment tails cut: a torn or damaged record with no
                               * whole record after it */
    uint64_t damaged;         /* damaged stretches inside a segment, skipped: whole
                               * records after each were kept */
    uint64_t damaged_bytes;   /* their bytes */
};

/* Open (or create) the journal, calling cb for every entry in seq order with
 * its acked state. cb may be NULL. Returns 0, -errno, TDS_JOURNAL_E_CORRUPT
 * (a record the first pass found whole no longer reads back),
 * TDS_JOURNAL_E_LOCKED (another open journal, in this process or another,
 * holds the folder's lock; read_only takes none), or cb's code.
 * With no room on the disk for a new segment (ENOSPC, EDQUOT), even after
 * deleting the fully acked segments at the front, it still returns 0, with
 * tds_journal_no_space() true: appends are refused until the sync thread (or
 * tds_journal_sync) can create the segment; reads and acks work meanwhile. */
int tds_journal_open(struct tds_journal **out, const struct tds_journal_opts *o,
                     tds_journal_scan_cb cb, void *ud, struct tds_journal_open_info *info);
/* Stops the sync thread after a last sync; takes NULL; returns NULL. */
struct tds_journal *tds_journal_close(struct tds_journal *j);

/* Callbacks; set before traffic starts. */
void tds_journal_on_synced(struct tds_journal *j, tds_journal_synced_cb cb, void *ud);
void tds_journal_on_stats(struct tds_journal *j, tds_journal_stats_cb cb, void *ud);
void tds_journal_on_syncing(struct tds_journal *j, tds_journal_syncing_cb cb, void *ud);
void tds_journal_on_stalled(struct tds_journal *j, tds_journal_stalled_cb cb, void *ud);

/* Append one entry (copied). *seq and *loc are set on success. It is durable
 * only once synced. Returns 0, TDS_JOURNAL_E_FULL (over max_bytes, counting
 * room for the ack of every unacked entry, or no room on the disk: see
 * tds_journal_no_space), TDS_JOURNAL_E_BACKLOG (max_unacked
 * entries wait for their ack: see tds_journal_backlog_full),
 * TDS_JOURNAL_E_BUSY (max_pending_bytes wait for their sync),
 * TDS_JOURNAL_E_FAILED, TDS_E_TOO_LARGE (payload over TDS_JOURNAL_MAX_PAYLOAD)
 * or -errno. */
int tds_journal_append(struct tds_journal *j, const void *payload, size_t len, int64_t wall_ms,
                       uint64_t *seq, struct tds_journal_loc *loc);
/* Returns 1 when seq is durable, 0 while it is pending, -1 when it is not
 * durable now and its request must fail: the journal failed before syncing it,
 * or its write waits for room on the disk (it may still become durable later;
 * a request answered 503 is sent again by its client). Never blocks on I/O. */
int tds_journal_state(struct tds_journal *j, uint64_t seq);
/* Every seq up to the returned one is durable. *failed is set when the
 * journal has failed: nothing above it ever will be. While it is not set, an
 * entry above it may still become durable (its commit is under way, or its
 * write waits for room on the disk). */
uint64_t tds_journal_synced_seq(struct tds_journal *j, bool *failed);
/* Block until seq is durable. Returns 0, TDS_JOURNAL_E_FAILED,
 * TDS_JOURNAL_E_NOSPACE or TDS_JOURNAL_E_TIMEOUT. */
int tds_journal_wait(struct tds_journal *j, uint64_t seq, int64_t timeout_ms);
/* Write and fdatasync everything appended so far (the sync thread's work; call
 * directly when opened without one). Returns 0, TDS_JOURNAL_E_FAILED, or
 * TDS_JOURNAL_E_NOSPACE when a write found no room (the batch stays queued and
 * the next call writes it again; the sync thread retries every
 * TDS_JOURNAL_RETRY_MS). */
int tds_journal_sync(struct tds_journal *j);

/* Mark entries acknowledged (each seq once; unknown seqs are ignored). The ack
 * is journaled without waiting for a sync, in records of at most
 * TDS_JOURNAL_MAX_PAYLOAD / 8 seqs, whatever n: losing it only means a
 * resend (as while the journal has no segment taking writes: opened without
 * room for one). */
int tds_journal_ack(struct tds_journal *j, const uint64_t *seqs, size_t n);
/* Delete the oldest segments whose entries are all acked, while they are older
 * than the retention or the journal is over its soft budget. Returns the
 * number of segments deleted. */
int tds_journal_gc(struct tds_journal *j, int64_t now_wall_ms);
/* The errno of the last failed delete of an acked segment since the last
 * call (0: none), and that segment's id in *seg_id; clears it. Such a
 * segment is kept, counted in tds_journal_bytes, and tried again at each gc. */
int tds_journal_drop_error(struct tds_journal *j, uint64_t *seg_id);
/* Read a record's payload back (new buffer, caller frees). Returns 0,
 * TDS_JOURNAL_E_CORRUPT, TDS_E_NOTFOUND (segment gone) or -errno. */
int tds_journal_read(struct tds_journal *j, const struct tds_journal_loc *loc, void **buf,
                     size_t *len);

uint64_t tds_journal_bytes(struct tds_journal *j);
/* The share of max_bytes that gc cannot free: every segment from the first
 * one holding an entry not yet acked (or not yet written), or whose delete
 * failed, on, the active one included. At 1 appends are refused (E_FULL),
 * whatever the retention; acked segments kept for replay give way before
 * that. */
double tds_journal_held_ratio(struct tds_journal *j);
uint64_t tds_journal_unacked(struct tds_journal *j);
/* Bytes of records appended and not yet synced. */
uint64_t tds_journal_pending_bytes(struct tds_journal *j);
size_t tds_journal_segments(struct tds_journal *j);
bool tds_journal_failed(struct tds_journal *j);
/* True while a write waits for room on the disk (lock-free). */
bool tds_journal_no_space(struct tds_journal *j);
/* True from the moment max_unacked entries wait for their ack until acks
 * bring them under tds_journal_backlog_resume(): appends are refused
 * meanwhile (lock-free). */
bool tds_journal_backlog_full(struct tds_journal *j);
/* The count of unacked entries under which appends are taken again after
 * the bound was reached: max_unacked less a tenth, so that the stage does not
 * flip between refusing and taking at every ack. */
uint64_t tds_journal_backlog_resume(struct tds_journal *j);

/* CRC32C (Castagnoli), exposed for tests. */
uint32_t tds_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
