/* writer — what the writer holds, how it commits it, and when it acks.
 *
 * Owns the pending batch: rows messages taken from the PULL socket and not
 * yet committed. A flush writes all of them in one transaction (apply.c);
 * when PostgreSQL refuses the data, it splits the batch by message and then a
 * message by record (probing in rolled-back transactions) until the bad
 * records are isolated in tds.rejected and the rest commits. After each
 * COMMIT — never before, and once the commit is on disk — it hands one ack
 * per origin to the ack callback.
 * When the database is unreachable it keeps everything and says so; the
 * caller retries with backoff. It never sleeps and never touches sockets.
 */
#ifndef TDS_WRITER_H
#define TDS_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tds_writer;
struct tds_apply;
struct tds_metrics;
struct tds_events;

enum {
    /* distinct from the TDS_APPLY_E_* codes, which writer.c passes through */
    TDS_WRITER_E_DB = 100, /* database unreachable or failing: batch kept, retry later */
};

/* Called once per origin after a commit: ids are the committed source ids. */
typedef void (*tds_writer_ack_cb)(void *ud, const char *origin, char *const *ids, size_t n_ids,
                                  int64_t rows_written, int64_t rows_rejected);

/* How a transaction is run: tds_apply_run on a struct tds_apply by default;
 * unit tests substitute their own to exercise splitting without PostgreSQL. */
struct tds_bmsg;
struct tds_apply_result;
typedef int (*tds_writer_run_fn)(void *db, struct tds_bmsg *const *msgs, size_t n, bool probe,
                                 struct tds_apply_result *res);

/* db, metrics and events are borrowed (metrics and events may be NULL). */
int tds_writer_new(struct tds_writer **out, struct tds_apply *db, struct tds_metrics *metrics,
                   struct tds_events *events, size_t max_rows, tds_writer_ack_cb ack, void *ud);
struct tds_writer *tds_writer_free(struct tds_writer *w);
/* Also call the batch full once its frames add up to max_bytes (0: rows
 * only). A single larger frame still makes a batch of its own. */
void tds_writer_set_max_bytes(struct tds_writer *w, size_t max_bytes);
/* Replace the transaction runner (tests). */
void tds_writer_set_runner(struct tds_writer *w, tds_writer_run_fn run, void *db);

/* How the WAL position flushed to disk is read, with the session it was
 * read on: tds_apply_wal_flushed by default (tests substitute their own).
 * 0, TDS_APPLY_E_CONN (the session is gone) or another TDS_APPLY_E_*. */
typedef int (*tds_writer_flushed_fn)(void *db, uint64_t *flushed, uint64_t *session);
void tds_writer_set_flushed(struct tds_writer *w, tds_writer_flushed_fn flushed);

/* Acks held: their commits did not wait for the WAL flush (synchronous_commit
 * off) and PostgreSQL has not yet said that they are on disk. */
size_t tds_writer_held(const struct tds_writer *w);
/* Read the flushed position and send the held acks it covers. 0, or
 * TDS_WRITER_E_DB (not read; a lost session drops its held acks: upstream
 * resends those messages). Nothing is read when nothing is held. */
int tds_writer_poll_flushed(struct tds_writer *w);
/* The side connection that flushes the WAL (flusher.h), by a number that
 * changes at each of its connects, 0 while there is none: held acks are
 * stamped with the one open when their commit returned. */
void tds_writer_set_side(struct tds_writer *w, uint64_t side);
/* A flush on side connection `side` read `flushed` after it: send the held
 * acks, from the first, that it covers and that were stamped with that
 * connection (it was open since before their commits, so no crash of the
 * server came between). How many went. */
size_t tds_writer_release_side(struct tds_writer *w, uint64_t side, uint64_t flushed);
/* Forget the held acks (at exit: upstream resends those messages); how many. */
size_t tds_writer_drop_held(struct tds_writer *w);

/* Take one received frame into the pending batch (decoded and checked here).
 * 0 or -ENOMEM. */
int tds_writer_take(struct tds_writer *w, const void *frame, size_t len);
/* True when the pending batch has reached the row or byte maximum. */
bool tds_writer_full(const struct tds_writer *w);
size_t tds_writer_pending(const struct tds_writer *w);
/* Bytes of the pending messages' frames. */
size_t tds_writer_pending_bytes(const struct tds_writer *w);

/* Commit everything pending. 0 when nothing is pending any more,
 * TDS_WRITER_E_DB when some is kept for a retry (tds_writer_last_error says
 * why), -ENOMEM. */
int tds_writer_flush(struct tds_writer *w);
const char *tds_writer_last_error(const struct tds_writer *w);

/* Totals for /status (loop thread only). */
struct tds_writer_stats {
    uint64_t batches, rows_written, rejects, acks, messages;
};
void tds_writer_stats(const struct tds_writer *w, struct tds_writer_stats *out);

#endif
