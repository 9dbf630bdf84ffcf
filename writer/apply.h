/* apply — one writer session on PostgreSQL and one batch per transaction.
 *
 * Owns the writer's connection and what lives in its session: a staging
 * table and prepared statements per (table, kind, column list) seen, the
 * tables of DETAIL-written parents, and the prepared meta statements. A run
 * writes a set of held messages in one transaction: staging by COPY (a
 * small group goes to its table as arrays), guarded upserts in registry
 * order (rows sorted by key, so concurrent writers lock in the same order),
 * child replacement for written DETAIL parents, soft deletes, webhook
 * events, rejects, run counts, cursors and NOTIFY tds_changes. A webhook
 * whose event is recorded already is left out (its rows and its event): the
 * one transaction a run writes again itself is one that met such an event.
 * Otherwise it never retries, splits or acks: the caller (writer.c) decides
 * that from the result code.
 */
#ifndef TDS_APPLY_H
#define TDS_APPLY_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batch.h"

enum {
    TDS_APPLY_E_DATA = 1,  /* PostgreSQL refused the data (SQLSTATE class 22, 23, 54, ...) */
    TDS_APPLY_E_RETRY = 2, /* deadlock or serialization failure: run again */
    TDS_APPLY_E_CONN = 3,  /* no connection, or it broke: reconnect, then run again */
    TDS_APPLY_E_DB = 4,    /* any other database error: wait, then run again */
};

#define TDS_APPLY_MAX_TABLES 32

struct tds_apply;
struct tds_metrics;

struct tds_apply_result {
    int64_t written[TDS_APPLY_MAX_TABLES]; /* top-level rows written, by registry table index */
    int64_t written_total;
    int64_t child_rows;                    /* child rows inserted */
    int64_t notifies;
    int64_t notifies_dropped;              /* left out: the NOTIFY queue was full lately */
    bool notify_refused;                   /* COMMIT refused: the NOTIFY queue is full */
    bool one_flight;                       /* sent in one round trip (a lone record) */
    /* Read right after COMMIT (lsn_known; not when the session cannot read
     * WAL positions): durable when the commit waited for its WAL flush
     * (synchronous_commit not off); else the commit is on disk once the
     * flushed position, read on the same session, reaches commit_lsn. */
    bool lsn_known, durable;
    uint64_t commit_lsn, flushed_lsn;      /* WAL positions in bytes */
    uint64_t session;                      /* the connection they were read on */
    char sqlstate[6];
    char error[1024];                      /* primary message and detail when a run failed */
};

/* conninfo: libpq conninfo or URL (copied). Does not connect. */
int tds_apply_new(struct tds_apply **out, const char *conninfo);
struct tds_apply *tds_apply_free(struct tds_apply *a);

/* Connect and prepare the session. 0, or TDS_APPLY_E_CONN / E_DB with a
 * message (no password) in err. Drops any previous connection first. */
int tds_apply_connect(struct tds_apply *a, char *err, size_t errlen);
bool tds_apply_connected(const struct tds_apply *a);
void tds_apply_disconnect(struct tds_apply *a);
/* The session's connection for autocommit work between batches (pruning);
 * NULL when disconnected. Owned by a. */
PGconn *tds_apply_conn(struct tds_apply *a);

/* The WAL position PostgreSQL has flushed to disk, and the session (one
 * more at each connect) it was read on. 0, TDS_APPLY_E_CONN (disconnected
 * now) or TDS_APPLY_E_DB (the session cannot read it). */
int tds_apply_wal_flushed(struct tds_apply *a, uint64_t *flushed, uint64_t *session);

/* A WAL position as the writer's statements read it (bytes, in decimal
 * text): 0, or -1 when text is not one. */
int tds_apply_parse_lsn(const char *text, uint64_t *out);

/* Write msgs[0..n) in one transaction. probe = true rolls back at the end and
 * skips everything but the zoho.* statements (used to find bad records).
 * The rows of a webhook whose (organization, event id) is in
 * tds.webhook_events, or comes earlier in msgs, are not written; the
 * message counts as committed all the same (tds_writer_webhook_duplicates_total).
 * Returns 0 (committed, res filled) or a TDS_APPLY_E_* code with
 * res->error/sqlstate, or -ENOMEM. */
int tds_apply_run(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n, bool probe,
                  struct tds_apply_result *res);

/* Register the session's own metrics (webhook duplicates) in metrics, which
 * must outlive a. Without it they are not counted. */
void tds_apply_set_metrics(struct tds_apply *a, struct tds_metrics *metrics);

/* default_toast_compression for the session from its next connection: "lz4"
 * or "pglz" (a static or long-lived string, not copied), or NULL to leave the
 * server's. A server that refuses it is logged once and left as it is. */
void tds_apply_set_toast_compression(struct tds_apply *a, const char *method);

/* Commit without waiting for the WAL flush where the server's setting would
 * wait (from the next connect; apply.c, commit_mode()). Off by default here;
 * the writer turns it on unless TDS_WRITER_ASYNC_COMMIT=false. */
void tds_apply_set_async_commit(struct tds_apply *a, bool on);
/* True while the session's commits do not wait for their flush because of
 * the above: its acks then need a flush (flusher.h). */
bool tds_apply_async_commit(const struct tds_apply *a);
/* pg_postmaster_start_time() of the session's server, read with the above
 * (empty when commits wait): which server the session reached. */
const char *tds_apply_server(const struct tds_apply *a);

/* Upkeep between batches, never blocking: collect a finished ANALYZE and
 * start the next one a growing table is due for, on a side connection (see
 * "keeping the planner's picture" in apply.c). Run after each committed
 * batch and from a timer. */
void tds_apply_maintain(struct tds_apply *a);

/* Drop server NOTICEs ("schema already exists, skipping") instead of letting
 * libpq print them on stderr, where only JSON log lines belong. */
void tds_apply_quiet(PGconn *c);

/* Classify a failed result (exposed for migrate/prune/status). */
int tds_apply_classify(PGconn *c, const PGresult *r);

#endif
