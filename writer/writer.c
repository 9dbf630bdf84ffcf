/* writer — what the writer holds, how it commits it, and when it acks.
 *
 * Invariants: a message is acked only after the transaction that wrote it
 * committed and is on disk (a commit that did not wait for its WAL flush,
 * synchronous_commit off, holds its acks until PostgreSQL's flushed WAL
 * position passes it: "Acks wait for the WAL flush" in DESIGN.md); each
 * message is committed in exactly one transaction (a split
 * commits halves separately and marks what committed, so a connection lost
 * in the middle of a split never writes a message's run counts twice); a
 * message is never dropped while the database is unreachable.
 *
 * Isolation of bad data: a batch that fails with a data error is split in
 * halves by message and each half retried; a single failing message is
 * probed record by record (bisection, each probe rolled back) to find the
 * records PostgreSQL refuses; those go to tds.rejected with the error and
 * the rest of the message commits with its metadata. When what PostgreSQL
 * refuses is the metadata (run counts, webhook event, cursor), the records
 * commit without it and a note in tds.rejected says so.
 */
#include "writer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "batch.h"
#include "entities.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define DEADLOCK_RETRIES 5

/* An ack whose commit is not known to be on disk yet: sent once the WAL
 * flushed, read on the same session, reaches lsn; never sent if the session
 * ends first (upstream resends the message, and a copy already applied
 * changes nothing). Also sent once a flush on the side connection that was
 * open before the commit (side, 0: none) has read a position that reaches
 * lsn: a crash of the server in between would have ended that connection. */
struct held {
    uint64_t session, lsn, side;
    char *origin;
    char **ids;
    size_t n_ids;
    int64_t written, rejected;
};

struct tds_writer {
    void *db;
    tds_writer_run_fn run;
    struct tds_metrics *metrics;
    struct tds_events *events;
    tds_writer_ack_cb ack;
    void *ack_ud;
    tds_writer_flushed_fn flushed;
    uint64_t side; /* the side connection open now (tds_writer_set_side) */
    struct held *held;
    size_t n_held, cap_held;
    size_t max_rows, max_bytes;
    struct tds_bmsg **pending;
    size_t n_pending, cap_pending, pending_rows, pending_bytes;
    char last_error[1024];
    struct tds_log_limit data_limit, notify_limit;
    struct tds_writer_stats stats;
    /* metric series, looked up once */
    struct tds_series *m_rows[TDS_APPLY_MAX_TABLES];
    struct tds_series *m_one_flight;
    struct tds_series *m_batches, *m_batch_rows, *m_commit, *m_rejects_w, *m_rejects_p, *m_acks,
        *m_deadlocks, *m_dead_letters, *m_webhook_age, *m_notify_dropped, *m_held,
        *m_held_dropped;
};

static const double ROW_BUCKETS[] = {1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000};
static const double COMMIT_BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                        0.25,  0.5,    1,     2.5,  5,    10};
static const double AGE_BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                     0.5,   1,      2.5,   5,    10,   30,    60,  300};

static int run_apply(void *db, struct tds_bmsg *const *msgs, size_t n, bool probe,
                     struct tds_apply_result *res)
{
    return tds_apply_run(db, msgs, n, probe, res);
}

static int flushed_apply(void *db, uint64_t *flushed, uint64_t *session)
{
    return tds_apply_wal_flushed(db, flushed, session);
}

int tds_writer_new(struct tds_writer **out, struct tds_apply *db, struct tds_metrics *metrics,
                   struct tds_events *events, size_t max_rows, tds_writer_ack_cb ack, void *ud)
{
    struct tds_writer *w = calloc(1, sizeof(*w));

    if (!w)
        return -ENOMEM;
    w->db = db;
    w->run = run_apply;
    w->flushed = flushed_apply;
    w->metrics = metrics;
    w->events = events;
    w->ack = ack;
    w->ack_ud = ud;
    w->max_rows = max_rows ? max_rows : 1;
    w->data_limit.interval_ms = 10000;
    w->notify_limit.interval_ms = 60000;
    for (size_t i = 0; metrics && i < tds_table_count() && i < TDS_APPLY_MAX_TABLES; i++)
        w->m_rows[i] = tds_metrics_getf(metrics, TDS_COUNTER, "tds_writer_rows_written_total",
                                        "Top-level rows written (inserted, updated or soft-deleted)",
                                        "table=\"%s\"", tds_table_at(i)->name);
    if (metrics) {
        w->m_batches = tds_metrics_get(metrics, TDS_COUNTER, "tds_writer_batches_total",
                                       "Transactions committed", "", NULL, 0);
        w->m_one_flight = tds_metrics_get(metrics, TDS_COUNTER,
                                          "tds_writer_one_flight_batches_total",
                                          "Transactions of a lone record sent in one round trip",
                                          "", NULL, 0);
        w->m_batch_rows = tds_metrics_get(metrics, TDS_HISTOGRAM, "tds_writer_batch_rows",
                                          "Rows per committed batch", "", ROW_BUCKETS,
                                          TDS_ARRAY_SIZE(ROW_BUCKETS));
        w->m_commit = tds_metrics_get(metrics, TDS_HISTOGRAM, "tds_writer_commit_seconds",
                                      "Time to write and commit one batch", "", COMMIT_BUCKETS,
                                      TDS_ARRAY_SIZE(COMMIT_BUCKETS));
        w->m_rejects_w = tds_metrics_get(metrics, TDS_COUNTER, "tds_writer_rejects_total",
                                         "Records recorded in tds.rejected, by the stage that refused them",
                                         "stage=\"writer\"", NULL, 0);
        w->m_rejects_p = tds_metrics_get(metrics, TDS_COUNTER, "tds_writer_rejects_total",
                                         "Records recorded in tds.rejected, by the stage that refused them",
                                         "stage=\"processor\"", NULL, 0);
        w->m_acks = tds_metrics_get(metrics, TDS_COUNTER, "tds_writer_acks_sent_total",
                                    "Ack messages published (one per origin per commit)", "", NULL, 0);
        w->m_deadlocks = tds_metrics_get(metrics, TDS_COUNTER, "tds_writer_tx_retries_total",
                                         "Transactions retried after a deadlock, a serialization failure or a concurrent insert of a new key",
                                         "", NULL, 0);
        w->m_dead_letters = tds_metrics_get(metrics, TDS_COUNTER, "tds_writer_dead_letters_total",
                                            "Frames that were not decodable rows messages", "", NULL, 0);
        w->m_notify_dropped = tds_metrics_get(
            metrics, TDS_COUNTER, "tds_writer_notifies_dropped_total",
            "tds_changes notifications left out because PostgreSQL's NOTIFY queue was full",
            "", NULL, 0);
        w->m_held = tds_metrics_get(
            metrics, TDS_GAUGE, "tds_writer_acks_held",
            "Acks of commits that did not wait for their WAL flush (synchronous_commit off), "
            "held until PostgreSQL has them on disk", "", NULL, 0);
        w->m_held_dropped = tds_metrics_get(
            metrics, TDS_COUNTER, "tds_writer_acks_held_dropped_total",
            "Held acks never sent: the database session ended before their commits were seen "
            "on disk (upstream sends those messages again)", "", NULL, 0);
        w->m_webhook_age = tds_metrics_get(
            metrics, TDS_HISTOGRAM, "tds_writer_webhook_age_seconds",
            "Time from the ingress receiving a webhook to the commit of its rows (wall clocks "
            "of the two hosts)", "", AGE_BUCKETS, TDS_ARRAY_SIZE(AGE_BUCKETS));
    }
    *out = w;
    return 0;
}

static void held_free(struct held *h)
{
    for (size_t i = 0; i < h->n_ids; i++)
        free(h->ids[i]);
    free(h->ids);
    free(h->origin);
}

struct tds_writer *tds_writer_free(struct tds_writer *w)
{
    if (!w)
        return NULL;
    for (size_t i = 0; i < w->n_pending; i++)
        tds_bmsg_free(w->pending[i]);
    free(w->pending);
    for (size_t i = 0; i < w->n_held; i++)
        held_free(&w->held[i]);
    free(w->held);
    free(w);
    return NULL;
}

void tds_writer_set_max_bytes(struct tds_writer *w, size_t max_bytes) { w->max_bytes = max_bytes; }

void tds_writer_set_runner(struct tds_writer *w, tds_writer_run_fn run, void *db)
{
    w->run = run;
    w->db = db;
}

void tds_writer_set_flushed(struct tds_writer *w, tds_writer_flushed_fn flushed)
{
    w->flushed = flushed;
}

static void inc(struct tds_series *s, double by)
{
    if (s)
        tds_series_inc(s, by);
}

static void send_ack(struct tds_writer *w, const char *origin, char *const *ids, size_t n,
                     int64_t written, int64_t rejected)
{
    /* counted first, for the same reason as the held gauge (release) */
    inc(w->m_acks, 1);
    w->stats.acks++;
    w->ack(w->ack_ud, origin, ids, n, written, rejected);
}

static void held_gauge(struct tds_writer *w)
{
    if (w->m_held)
        tds_series_set(w->m_held, (double)w->n_held);
}

static size_t drop_held(struct tds_writer *w, size_t i)
{
    held_free(&w->held[i]);
    inc(w->m_held_dropped, 1);
    return 1;
}

/* Send the held acks that the flushed position of session covers, in the
 * order they were held; drop those of an earlier session. */
static void release(struct tds_writer *w, uint64_t session, uint64_t flushed)
{
    size_t k = 0, dropped = 0, stay = 0;

    /* The gauge first: whoever has an ack in hand must not then read it
     * as still held (the metrics are read from another thread). */
    for (size_t i = 0; i < w->n_held; i++)
        stay += w->held[i].session == session && w->held[i].lsn > flushed;
    if (w->m_held)
        tds_series_set(w->m_held, (double)stay);
    for (size_t i = 0; i < w->n_held; i++) {
        struct held *h = &w->held[i];

        if (h->session != session) {
            dropped += drop_held(w, i);
        } else if (h->lsn <= flushed) {
            send_ack(w, h->origin, h->ids, h->n_ids, h->written, h->rejected);
            held_free(h);
        } else {
            w->held[k++] = *h;
        }
    }
    w->n_held = k;
    if (dropped)
        tds_log(TDS_LOG_INFO, NULL,
                "%zu acks not sent: the database session ended before their commits were seen "
                "on disk; upstream sends those messages again", dropped);
}

static int held_copy(const struct tds_writer *w, struct held *h,
                     const struct tds_apply_result *res, const char *origin, char *const *ids,
                     size_t n, int64_t written, int64_t rejected)
{
    memset(h, 0, sizeof(*h));
    h->session = res->session;
    h->lsn = res->commit_lsn;
    h->side = w->side;
    h->written = written;
    h->rejected = rejected;
    if (!(h->origin = strdup(origin)) || !(h->ids = calloc(n ? n : 1, sizeof(*h->ids))))
        goto fail;
    for (; h->n_ids < n; h->n_ids++)
        if (!(h->ids[h->n_ids] = strdup(ids[h->n_ids])))
            goto fail;
    return 0;
fail:
    held_free(h);
    return -ENOMEM;
}

/* One ack after a commit: sent now when the commit is on disk (or nothing
 * says otherwise: res NULL, positions unknown), else held. Without memory
 * to hold it, it is not sent: upstream resends the message. */
static void deliver(struct tds_writer *w, const struct tds_apply_result *res, const char *origin,
                    char *const *ids, size_t n, int64_t written, int64_t rejected)
{
    if (!res || !res->lsn_known || res->durable || res->flushed_lsn >= res->commit_lsn) {
        send_ack(w, origin, ids, n, written, rejected);
        return;
    }
    if (w->n_held == w->cap_held) {
        size_t cap = w->cap_held ? w->cap_held * 2 : 16;
        struct held *p = realloc(w->held, cap * sizeof(*p));

        if (!p)
            goto nomem;
        w->held = p;
        w->cap_held = cap;
    }
    if (held_copy(w, &w->held[w->n_held], res, origin, ids, n, written, rejected) != 0)
        goto nomem;
    w->n_held++;
    held_gauge(w);
    return;
nomem:
    inc(w->m_held_dropped, 1);
    tds_log_limited(&w->data_limit, TDS_LOG_WARN, NULL,
                    "out of memory holding an ack for %s until its commit is on disk: not "
                    "sent, upstream sends those messages again", origin);
}

size_t tds_writer_held(const struct tds_writer *w) { return w->n_held; }

void tds_writer_set_side(struct tds_writer *w, uint64_t side) { w->side = side; }

size_t tds_writer_release_side(struct tds_writer *w, uint64_t side, uint64_t flushed)
{
    size_t n = 0;

    if (side == 0)
        return 0;
    /* In the order held: the first that this flush does not cover keeps
     * the rest (within a session the positions only grow). */
    while (n < w->n_held && w->held[n].side == side && w->held[n].lsn <= flushed)
        n++;
    if (n == 0)
        return 0;
    if (w->m_held)
        tds_series_set(w->m_held, (double)(w->n_held - n));
    for (size_t i = 0; i < n; i++) {
        struct held *h = &w->held[i];

        send_ack(w, h->origin, h->ids, h->n_ids, h->written, h->rejected);
        held_free(h);
    }
    memmove(w->held, w->held + n, (w->n_held - n) * sizeof(*w->held));
    w->n_held -= n;
    return n;
}

int tds_writer_poll_flushed(struct tds_writer *w)
{
    uint64_t flushed = 0, session = 0;
    int rc;

    if (w->n_held == 0)
        return 0;
    rc = w->flushed(w->db, &flushed, &session);
    if (rc == TDS_APPLY_E_CONN) {
        /* that session is gone, and with it what it could say */
        for (size_t i = 0; i < w->n_held; i++)
            drop_held(w, i);
        tds_log(TDS_LOG_INFO, NULL,
                "%zu acks not sent: the database connection was lost before their commits "
                "were seen on disk; upstream sends those messages again", w->n_held);
        w->n_held = 0;
        held_gauge(w);
        return TDS_WRITER_E_DB;
    }
    if (rc != 0)
        return TDS_WRITER_E_DB;
    release(w, session, flushed);
    return 0;
}

size_t tds_writer_drop_held(struct tds_writer *w)
{
    size_t n = w->n_held;

    for (size_t i = 0; i < w->n_held; i++)
        drop_held(w, i);
    w->n_held = 0;
    held_gauge(w);
    return n;
}

int tds_writer_take(struct tds_writer *w, const void *frame, size_t len)
{
    struct tds_bmsg *m;
    int rc;

    if (w->n_pending == w->cap_pending) {
        size_t cap = w->cap_pending ? w->cap_pending * 2 : 64;
        struct tds_bmsg **p = realloc(w->pending, cap * sizeof(*p));

        if (!p)
            return -ENOMEM;
        w->pending = p;
        w->cap_pending = cap;
    }
    if ((rc = tds_bmsg_new(&m, frame, len)) != 0)
        return rc;
    if (m->msg.type != TDS_MSG_ROWS) {
        inc(w->m_dead_letters, 1);
        tds_log_limited(&w->data_limit, TDS_LOG_WARN, NULL, "%s, keeping it in tds.rejected",
                        m->rej[0].reason);
    } else if (m->n_rej > 0) {
        const struct tds_msg_rows *rw = &m->msg.u.rows;
        struct tds_log_ctx ctx = {rw->org, rw->entity, rw->run};

        tds_log_limited(&w->data_limit, TDS_LOG_WARN, &ctx,
                        "message %s: %zu rejected on arrival (%s), keeping them in "
                        "tds.rejected", rw->src ? rw->src : "?", m->n_rej, m->rej[0].reason);
    }
    w->pending[w->n_pending++] = m;
    w->pending_rows += m->n_rows ? m->n_rows : 1;
    w->pending_bytes += m->frame_len;
    w->stats.messages++;
    return 0;
}

bool tds_writer_full(const struct tds_writer *w)
{
    return w->pending_rows >= w->max_rows || (w->max_bytes && w->pending_bytes >= w->max_bytes);
}

size_t tds_writer_pending(const struct tds_writer *w) { return w->n_pending; }

size_t tds_writer_pending_bytes(const struct tds_writer *w) { return w->pending_bytes; }

const char *tds_writer_last_error(const struct tds_writer *w) { return w->last_error; }

void tds_writer_stats(const struct tds_writer *w, struct tds_writer_stats *out) { *out = w->stats; }

/* The messages a page answers (an ingress's fetch-by-id), each acked to its
 * own origin now that the page is committed. */
static void ack_answered(struct tds_writer *w, const struct tds_apply_result *res,
                         const struct tds_bmsg *m)
{
    const struct tds_msg_rows *rw = &m->msg.u.rows;

    if (m->msg.type != TDS_MSG_ROWS)
        return;
    for (size_t i = 0; i + 1 < rw->n_acks; i += 2) {
        if (!rw->acks[i] || !rw->acks[i + 1])
            continue;
        deliver(w, res, rw->acks[i], &rw->acks[i + 1], 1, 0, 0);
    }
}

/* After COMMIT: metrics, events, then one ack per origin. res NULL: nothing
 * was committed (a message given up on, acked all the same), so no
 * transaction is counted. */
static void committed(struct tds_writer *w, struct tds_bmsg **msgs, size_t n,
                      const struct tds_apply_result *res, double seconds)
{
    size_t rows = 0;
    char **ids = malloc((n ? n : 1) * sizeof(*ids));
    int64_t now = tds_wall_ms();

    for (size_t i = 0; res && i < tds_table_count() && i < TDS_APPLY_MAX_TABLES; i++)
        if (res->written[i])
            inc(w->m_rows[i], (double)res->written[i]);
    for (size_t i = 0; i < n; i++) {
        const struct tds_msg_rows *rw = &msgs[i]->msg.u.rows;
        size_t rejected = tds_bmsg_records_rejected(msgs[i]);

        rows += msgs[i]->n_rows;
        msgs[i]->committed = true;
        if (msgs[i]->duplicate)
            continue; /* applied before: counted, logged and announced then */
        inc(w->m_rejects_w, (double)rejected);
        w->stats.rejects += rejected;
        if (msgs[i]->msg.type != TDS_MSG_ROWS)
            continue;
        inc(w->m_rejects_p, (double)rw->n_rejects);
        if (rw->final && !msgs[i]->meta_off) {
            struct tds_log_ctx ctx = {rw->org, rw->entity, rw->run};

            tds_log(TDS_LOG_INFO, &ctx, "sync run completed, cursor %s",
                    rw->cursor ? rw->cursor : "unchanged");
            if (w->events)
                tds_events_emit(w->events, "tds.zoho.sync.completed", "org", rw->org, "entity",
                                rw->entity, "run", rw->run, "mode", rw->mode, NULL);
        }
        if (rw->mode && strcmp(rw->mode, "webhook") == 0) {
            if (w->m_webhook_age && res && rw->received_ms > 0) {
                int64_t age = now - rw->received_ms;

                tds_series_observe(w->m_webhook_age, (double)(age > 0 ? age : 0) / 1000.0);
            }
            if (w->events)
                tds_events_emit(w->events, "tds.zoho.webhook.processed", "org", rw->org,
                                "entity", rw->entity, "event_id", rw->src, NULL);
        }
    }
    if (res) {
        inc(w->m_batches, 1);
        if (res->notifies_dropped > 0)
            inc(w->m_notify_dropped, (double)res->notifies_dropped);
        if (res->one_flight)
            inc(w->m_one_flight, 1);
        if (w->m_batch_rows)
            tds_series_observe(w->m_batch_rows, (double)rows);
        if (w->m_commit)
            tds_series_observe(w->m_commit, seconds);
        w->stats.batches++;
        w->stats.rows_written += (uint64_t)res->written_total;
    }
    /* What this commit read of the WAL first sends the acks held before it. */
    if (res && res->lsn_known && w->n_held)
        release(w, res->session, res->flushed_lsn);
    for (size_t i = 0; i < n; i++)
        ack_answered(w, res, msgs[i]);
    if (!ids) {
        /* Without memory for the list, ack one message at a time. */
        for (size_t i = 0; i < n; i++) {
            const struct tds_msg_rows *rw = &msgs[i]->msg.u.rows;

            if (msgs[i]->msg.type == TDS_MSG_ROWS && rw->origin && rw->src)
                deliver(w, res, rw->origin, &rw->src, 1, tds_bmsg_records_written(msgs[i]),
                        (int64_t)(rw->n_rejects + tds_bmsg_records_rejected(msgs[i])));
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const struct tds_msg_rows *rw = &msgs[i]->msg.u.rows;
        int64_t written = 0, rejected = 0;
        size_t k = 0;
        bool seen = false;

        if (msgs[i]->msg.type != TDS_MSG_ROWS || !rw->origin || !rw->src)
            continue;
        for (size_t j = 0; j < i && !seen; j++)
            seen = msgs[j]->msg.type == TDS_MSG_ROWS && msgs[j]->msg.u.rows.origin &&
                   msgs[j]->msg.u.rows.src && strcmp(msgs[j]->msg.u.rows.origin, rw->origin) == 0;
        if (seen)
            continue;
        for (size_t j = i; j < n; j++) {
            const struct tds_msg_rows *o = &msgs[j]->msg.u.rows;

            if (msgs[j]->msg.type != TDS_MSG_ROWS || !o->origin || !o->src ||
                strcmp(o->origin, rw->origin) != 0)
                continue;
            ids[k++] = o->src;
            written += tds_bmsg_records_written(msgs[j]);
            rejected += (int64_t)(o->n_rejects + tds_bmsg_records_rejected(msgs[j]));
        }
        deliver(w, res, rw->origin, ids, k, written, rejected);
    }
    free(ids);
}

/* One transaction over msgs, retried on deadlocks. */
static int attempt(struct tds_writer *w, struct tds_bmsg **msgs, size_t n, bool probe,
                   struct tds_apply_result *res)
{
    bool notify_retried = false;
    int rc;

    for (int i = 0;; i++) {
        int64_t t0 = tds_now_ms();

        rc = w->run(w->db, msgs, n, probe, res);
        if (rc == 0 && !probe)
            committed(w, msgs, n, res, (double)(tds_now_ms() - t0) / 1000.0);
        if (rc == TDS_APPLY_E_DB && res->notify_refused && !notify_retried) {
            /* the records are fine: written again at once, without NOTIFY */
            tds_log_limited(&w->notify_limit, TDS_LOG_WARN, NULL,
                            "PostgreSQL's NOTIFY queue is full (a LISTEN session is not "
                            "reading): tds_changes notifications are left out while it is, "
                            "the rows are written: %s", res->error);
            notify_retried = true;
            continue;
        }
        if (rc != TDS_APPLY_E_RETRY || i + 1 >= DEADLOCK_RETRIES)
            break;
        inc(w->m_deadlocks, 1);
    }
    if (rc == TDS_APPLY_E_RETRY || rc == TDS_APPLY_E_CONN || rc == TDS_APPLY_E_DB) {
        snprintf(w->last_error, sizeof(w->last_error), "%s", res->error);
        return TDS_WRITER_E_DB;
    }
    return rc; /* 0, TDS_APPLY_E_DATA or -ENOMEM */
}

/* Find the records of m that PostgreSQL refuses: bisection over recs[0..n),
 * each probe in a rolled-back transaction. Marks them rejected. */
static int find_bad(struct tds_writer *w, struct tds_bmsg *m, const uint32_t *recs, size_t n)
{
    struct tds_apply_result res;
    int rc;

    memset(m->probe_in, 0, m->n_recs);
    for (size_t i = 0; i < n; i++)
        m->probe_in[recs[i]] = 1;
    rc = attempt(w, &m, 1, true, &res);
    if (rc != TDS_APPLY_E_DATA)
        return rc;
    if (n == 1) {
        /* Clear the probe before rejecting: the reject list is what remains. */
        uint8_t *probe = m->probe_in;

        m->probe_in = NULL;
        rc = tds_bmsg_reject_record(m, recs[0], res.error);
        m->probe_in = probe;
        return rc;
    }
    if ((rc = find_bad(w, m, recs, n / 2)) != 0)
        return rc;
    return find_bad(w, m, recs + n / 2, n - n / 2);
}

static int isolate(struct tds_writer *w, struct tds_bmsg *m, const char *first_error)
{
    struct tds_apply_result res;
    const struct tds_msg_rows *rw = &m->msg.u.rows;
    struct tds_log_ctx ctx = {rw->org, rw->entity, rw->run};
    uint32_t *recs = NULL;
    size_t n = 0, before = m->n_rej;
    int rc;

    if ((rc = tds_bmsg_live_records(m, &recs, &n)) != 0)
        return rc;
    if (n > 0) {
        m->probe_in = calloc(m->n_recs, 1);
        if (!m->probe_in) {
            free(recs);
            return -ENOMEM;
        }
        rc = find_bad(w, m, recs, n);
        free(m->probe_in);
        m->probe_in = NULL;
    }
    free(recs);
    if (rc != 0)
        return rc;
    if (m->n_rej > before)
        tds_log(TDS_LOG_WARN, &ctx, "rejected %zu records of message %s: %s", m->n_rej - before,
                rw->src ? rw->src : "?", m->rej[before].reason);
    rc = attempt(w, &m, 1, false, &res);
    if (rc != TDS_APPLY_E_DATA)
        return rc;
    /* The records pass alone (probes run no metadata): what fails is the
     * message's metadata (run, webhook event, cursor) or records only failing
     * together. Write the records without the metadata, and say so in
     * tds.rejected, in the same transaction. */
    if (!m->meta_off) {
        size_t keep = m->n_rej;
        char cause[sizeof(res.error)], reason[sizeof(res.error) + 128];

        snprintf(cause, sizeof(cause), "%s", res.error[0] ? res.error : first_error);
        snprintf(reason, sizeof(reason), "could not apply the message's run/webhook/cursor "
                 "updates, its records are written without them: %s", cause);
        m->meta_off = true;
        if ((rc = tds_bmsg_note(m, reason)) != 0)
            return rc;
        rc = attempt(w, &m, 1, false, &res);
        if (rc == 0)
            tds_log(TDS_LOG_WARN, &ctx, "message %s written without its run/webhook/cursor "
                    "updates: %s", rw->src ? rw->src : "?", cause);
        if (rc != TDS_APPLY_E_DATA)
            return rc;
        /* Not the metadata, then: the records fail together. */
        tds_bmsg_drop_rejects(m, keep);
    }
    if ((rc = tds_bmsg_reject_all(m, res.error[0] ? res.error : first_error)) != 0)
        return rc;
    tds_log(TDS_LOG_WARN, &ctx, "message %s could not be written: %s, keeping it in tds.rejected",
            rw->src ? rw->src : "?", res.error);
    /* Its records all rejected, the message's metadata goes with them (run
     * counts, the page recorded as applied, a final page's cursor) unless
     * that is what fails too. */
    if (m->meta_off) {
        size_t keep = m->n_rej;
        char cause[sizeof(res.error)], reason[sizeof(res.error) + 128];

        snprintf(cause, sizeof(cause), "%s", res.error[0] ? res.error : first_error);
        m->meta_off = false;
        rc = attempt(w, &m, 1, false, &res);
        if (rc != TDS_APPLY_E_DATA)
            return rc;
        snprintf(reason, sizeof(reason), "could not apply the message's run/webhook/cursor "
                 "updates either: %s", res.error[0] ? res.error : cause);
        m->meta_off = true;
        if ((rc = tds_bmsg_note(m, reason)) != 0)
            return rc;
        rc = attempt(w, &m, 1, false, &res);
        if (rc != TDS_APPLY_E_DATA)
            return rc;
        tds_bmsg_drop_rejects(m, keep);
    } else {
        rc = attempt(w, &m, 1, false, &res);
        if (rc != TDS_APPLY_E_DATA)
            return rc;
    }
    /* Not even the rejects insert: nothing more can be done with it. Ack it
     * so upstream stops resending, and say so loudly. */
    tds_log(TDS_LOG_ERROR, &ctx, "could not record message %s even as rejected: %s, dropping it",
            rw->src ? rw->src : "?", res.error);
    committed(w, &m, 1, NULL, 0);
    return 0;
}

static int commit_range(struct tds_writer *w, struct tds_bmsg **msgs, size_t n)
{
    struct tds_apply_result res;
    int rc;

    if (n == 0)
        return 0;
    rc = attempt(w, msgs, n, false, &res);
    if (rc != TDS_APPLY_E_DATA)
        return rc;
    tds_log_limited(&w->data_limit, TDS_LOG_WARN, NULL,
                    "batch of %zu messages refused by the database: %s, splitting", n, res.error);
    if (n == 1)
        return isolate(w, msgs[0], res.error);
    if ((rc = commit_range(w, msgs, n / 2)) != 0)
        return rc;
    return commit_range(w, msgs + n / 2, n - n / 2);
}

int tds_writer_flush(struct tds_writer *w)
{
    size_t k = 0;
    int rc;

    if (w->n_pending == 0)
        return 0;
    w->last_error[0] = '\0';
    rc = commit_range(w, w->pending, w->n_pending);
    /* Keep what did not commit, in order. */
    w->pending_rows = 0;
    w->pending_bytes = 0;
    for (size_t i = 0; i < w->n_pending; i++) {
        if (w->pending[i]->committed) {
            tds_bmsg_free(w->pending[i]);
            continue;
        }
        w->pending_rows += w->pending[i]->n_rows ? w->pending[i]->n_rows : 1;
        w->pending_bytes += w->pending[i]->frame_len;
        w->pending[k++] = w->pending[i];
    }
    w->n_pending = k;
    return rc;
}
