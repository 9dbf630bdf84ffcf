/* apply — one writer session on PostgreSQL and one batch per transaction.
 *
 * Statement order inside a transaction is fixed: staging (COPY; a small group
 * is not staged but goes to its table as arrays of parameters), then for
 * each top-level table in registry order its DETAIL upserts, the replacement
 * of its children, its LIST upserts and its deletes; then the meta statements
 * and NOTIFY. Rows are sorted by (org_id, id), so every writer takes row
 * locks in the same order and two writers on overlapping batches wait for
 * each other instead of deadlocking (a rare deadlock across tables is still
 * retried by the caller).
 *
 * Staging tables are created once per session and reused, which avoids
 * catalog churn per batch: those of whole records at connect (prewarm()),
 * others on first use. They are created and the statements prepared
 * before BEGIN: a CREATE inside a transaction that later rolls back would
 * leave the cache pointing at nothing. A transaction empties the staging
 * tables it filled with DELETE just before COMMIT (a rolled-back one leaves
 * them empty anyway), and a table is TRUNCATEd between transactions once
 * its dead rows add up (STAGE_DEAD_ROWS). ON COMMIT DELETE ROWS would
 * truncate every staging table of the session at every commit, used or not:
 * ~0.4 ms each, and a session has one per column list.
 */
#include "apply.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "copytext.h"
#include "entities.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "pg.h"
#include "sqlgen.h"
#include "util.h"
#include "ztime.h"

#define COPY_CHUNK (64 * 1024)
#define META_PARAMS 8
#define MAX_SIGS 256
/* Groups at least this big check which keys exist and COPY new rows straight
 * into the table; smaller ones are not worth the extra round trip. */
#define FAST_MIN_ROWS 64
/* Groups smaller than this go to their table as arrays of parameters, with
 * no staging (or, with a key twice, staged by a prepared INSERT of arrays);
 * bigger ones are staged by COPY. */
#define ARRAY_MAX_ROWS 64
#define FAST_SKIP_BATCHES 8
/* A table is analyzed once this session has written max(this, its row count
 * at the last analyze) rows into it: see tds_apply_maintain(). */
#define ANALYZE_MIN_ROWS 1000
/* How long the side connection's handshake may take before the ANALYZEs
 * are left to autovacuum until the tables grow again. */
#define ANALYZE_CONNECT_TIMEOUT_MS 10000
/* Below ANALYZE_MIN_ROWS, the session's cached plans are reset before child
 * rows are written each time the parent has doubled (from this many rows):
 * see refresh_fk_plans(). */
#define PLAN_RESET_MIN_ROWS 256
/* A staging table is TRUNCATEd after a transaction once this many rows went
 * through it since the last time: DELETE leaves dead rows that only a
 * TRUNCATE (or VACUUM) gives back, and every scan of the table reads them. */
#define STAGE_DEAD_ROWS 2048
/* Times a batch is written again after its event insert found events that
 * other transactions recorded meanwhile (see "webhook duplicates"). */
#define SEEN_ROUNDS 3

/* One staging table: what rows of one (table, kind, column list) go through. */
struct sig {
    const struct tds_table *t;
    size_t tidx;                 /* registry index of t */
    enum tds_rowset_kind kind;
    char **cols;
    size_t n_cols;
    char stg[24];
    char upsert[24], collapse[24], stage_ins[24], direct[24];
    char one[24];                /* DETAIL parent: the upsert of one row of scalars */
    char if_written[24];         /* child: tds_sqlgen_child_insert_if_written */
    size_t dead;                 /* rows staged since the last TRUNCATE */
};

struct ref {
    uint32_t m, s, r;
};

struct group {
    size_t sig;
    struct ref *refs;
    size_t n, cap;
    size_t n_stage;   /* refs[0..n_stage) go through staging and the upsert */
    size_t n_fast;    /* rows COPYed straight into the table (new keys) */
    /* A parent group's rows COPYed as new keys (sorted like refs): their
     * children need no DELETE and no staging (children_direct()). */
    struct ref *fresh;
    bool dups;
    bool direct;      /* refs[0..n_stage) go to the table as parameters, not staged */
};

/* A statement in a pipeline: what failed if it fails; for a child table's
 * insert, the table whose rows it counts into the result (and into mods). */
struct pipe_stmt {
    const char *what;
    const struct tds_table *child;
    size_t tidx;
    bool mods;
    bool parent;      /* a top-level upsert: its RETURNING rows are counted */
    bool events;      /* the insert into tds.webhook_events or tds.applied_pages */
    bool after_commit; /* after COMMIT: its failure is not the transaction's */
};

/* Up to this many written parents, their old child rows go by one scalar
 * DELETE each (~20 µs of PostgreSQL time a call) rather than by one DELETE
 * over arrays (planned again at every call: ~150 µs). */
#define WKEYS_ONE 4

struct tds_apply {
    char *conninfo;
    PGconn *conn;
    struct sig *sigs;
    size_t n_sigs, cap_sigs;
    struct tds_buf buf;          /* COPY data and SQL text */
    struct tds_buf params[META_PARAMS];
    /* The parents the current table's DETAIL upserts wrote, in the order
     * written: org id, id and message index, each NUL-terminated, one after
     * another; wk_groups counts the upserts that wrote any (wkeys_build). */
    struct tds_buf wk;
    size_t n_wk, wk_groups;
    /* the same (org ids, ids, message indexes) as array literals, each key
     * once: whose old child rows are deleted and whose staged child rows of
     * that version are inserted */
    struct tds_buf wkeys[3];
    size_t n_wkeys;
    /* the first WKEYS_ONE of them, org id and id as text: so few parents
     * get one scalar DELETE each (tds_sqlgen_child_delete) */
    struct tds_buf wkey1[WKEYS_ONE][2];
    /* A small group's staging rows as array literals, one per column
     * (_m, _r, _o, then the set's columns): stage_arrays(). */
    struct tds_buf *abuf;
    const char **avals;
    size_t n_abuf;
    struct tds_notify *notify;
    /* NOTIFY tds_changes is left out of transactions until then (monotonic
     * ms): PostgreSQL's notification queue was full (notify_refused()) */
    int64_t notify_off_until;
    bool txn_notified;           /* this transaction sends a pg_notify */
    bool no_fast;                /* a fast COPY met a concurrent insert: upsert only, once */
    /* Per table: batches to go without the fast path, after a lookup found
     * mostly existing keys (an update stream gains nothing from it). */
    unsigned fast_skip[TDS_APPLY_MAX_TABLES];
    /* Per table: rows this session wrote since its last ANALYZE, and the
     * table's row count then (pg_class.reltuples; 0 when never analyzed). */
    int64_t mods[TDS_APPLY_MAX_TABLES];
    double analyzed_rows[TDS_APPLY_MAX_TABLES];
    /* Per parent table: its size as this session knew it when it last reset
     * its cached plans (refresh_fk_plans()). */
    double planned_rows[TDS_APPLY_MAX_TABLES];
    bool analyze_off;            /* ANALYZE refused (not the tables' owner) */
    /* The side connection ANALYZE runs on, the table it is analyzing (-1:
     * none), the rows that made it due, and when it started. The connection
     * is opened without waiting (an_want: what its handshake waits for, until
     * PGRES_POLLING_OK), since then. */
    PGconn *an_conn;
    int an_table;
    int64_t an_rows, an_t0;
    PostgresPollingStatusType an_want;
    int64_t an_conn_t0;
    /* The transaction's BEGIN has gone out (it travels with the first
     * statement, exec_in_txn() and run_prepared()). */
    bool begun;
    /* In pipeline mode: run_prepared() sends and pipe_finish() reads the
     * answers (struct pipe_stmt, one per statement sent). */
    bool piped;
    struct pipe_stmt *pipe;
    size_t n_pipe, cap_pipe;
    /* Per message of the run in hand, 1 = a webhook whose event or a page
     * that is recorded already: its rows and its metadata are left out.
     * NULL when the run holds neither. */
    uint8_t *dup;
    bool events_seen;            /* an event or page insert met a recorded one */
    struct tds_series *m_dups, *m_page_dups;
    /* default_toast_compression of the session: "lz4", "pglz", or NULL to
     * leave the server's; toast_warned: a server that refused it was told */
    const char *toast;
    bool toast_warned;
    /* Which connection this is (1 for the first, one more at each connect):
     * a WAL position is only compared with another read on the same one. */
    uint64_t session;
    /* The WAL positions can be read (t_lsn, t_flushed); lsn_warned: the
     * operator was told that they cannot. */
    bool lsn_ok, lsn_warned;
    /* Commit without waiting for the WAL flush when the server's setting
     * would wait (async_wanted: TDS_WRITER_ASYNC_COMMIT); async: this
     * session does; mode_said: the last mode logged (0 none, 1 async,
     * 2 waits), so a reconnect says it only when it changes. */
    bool async_wanted, async;
    int mode_said;
    char server[64]; /* pg_postmaster_start_time() of the session's server (async only) */
    bool after_commit_failed;    /* set by pipe_finish(), with its message */
    char after_commit_error[256];
};

/* Run right after COMMIT, in its pipeline: whether the commit waited for
 * its WAL flush (synchronous_commit not off: the session's setting, which a
 * role or database may set), the WAL insert position (at or past the end of
 * the commit record) and the position flushed to disk, in bytes. */
static const char *const SQL_LSN =
    "SELECT current_setting('synchronous_commit') <> 'off', "
    "(pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::text, "
    "(pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::text";
static const char *const SQL_FLUSHED =
    "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::text";

/* An event is known by its organization and its id: Zoho numbers events per
 * organization (migration 006). A message without an organization is
 * recorded under ''. No ON CONFLICT: an event recorded already fails the
 * transaction, which is then written again without it ("webhook
 * duplicates"). Inserted in key order, so two writers with events in common
 * wait for each other instead of deadlocking. */
static const char *const SQL_WEBHOOK =
    "INSERT INTO tds.webhook_events (event_id, org_id, entity, zoho_id, received_at, applied_at) "
    "SELECT e, coalesce(o, ''), en, z, CASE WHEN r > 0 THEN to_timestamp(r / 1000.0) ELSE now() END, "
    "now() "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS u(e, o, en, z, r) "
    "ORDER BY 2, 1";
/* Which of these events are recorded: the element numbers (from 1). */
static const char *const SQL_WEBHOOK_SEEN =
    "SELECT u.n FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(e, o, n) "
    "JOIN tds.webhook_events w ON w.org_id = coalesce(u.o, '') AND w.event_id = u.e";
/* A page is known by its message id, which the fetcher keeps when it sends
 * the page again (migration 008); like the event insert, no ON CONFLICT. */
static const char *const SQL_PAGES =
    "INSERT INTO tds.applied_pages (page_id, org_id, entity, run_id, mode, applied_at) "
    "SELECT p, coalesce(o, ''), coalesce(e, ''), r, coalesce(md, ''), now() "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) "
    "AS u(p, o, e, r, md) ORDER BY 1";
static const char *const SQL_PAGES_SEEN =
    "SELECT u.n FROM unnest($1::text[]) WITH ORDINALITY AS u(p, n) "
    "JOIN tds.applied_pages a ON a.page_id = u.p";
static const char *const SQL_REJECT =
    "INSERT INTO tds.rejected (stage, org_id, entity, zoho_id, reason, raw, source) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
    "$6::text[], $7::text[])";
static const char *const SQL_RUNS =
    "INSERT INTO tds.sync_runs AS r (run_id, org_id, entity, mode, pages_written, "
    "records_written, records_rejected, updated_at) "
    "SELECT id, o, e, coalesce(md, 'unknown'), p, w, j, now() FROM unnest($1::text[], $2::text[], "
    "$3::text[], $4::text[], $5::int[], $6::bigint[], $7::bigint[]) AS u(id, o, e, md, p, w, j) "
    "ON CONFLICT (run_id) DO UPDATE SET pages_written = r.pages_written + EXCLUDED.pages_written, "
    "records_written = r.records_written + EXCLUDED.records_written, "
    "records_rejected = r.records_rejected + EXCLUDED.records_rejected, updated_at = now()";
static const char *const SQL_FINAL_RUNS =
    "UPDATE tds.sync_runs SET status = 'completed', finished_at = now(), updated_at = now() "
    "WHERE run_id = ANY($1::text[]) AND status = 'running'";
/* A final page without a cursor (full sync) keeps the previous cursor: an
 * incremental run from it re-reads more than needed but misses nothing. */
static const char *const SQL_FINAL_STATE =
    "INSERT INTO tds.sync_state AS s (org_id, entity, cursor, cursor_at, last_run_id, "
    "last_success_at, last_full_at) "
    "SELECT o, e, c, CASE WHEN c IS NOT NULL THEN now() END, r, now(), "
    "CASE WHEN md = 'full' THEN now() END "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(o, e, c, r, md) "
    "ON CONFLICT (org_id, entity) DO UPDATE SET cursor = coalesce(EXCLUDED.cursor, s.cursor), "
    "cursor_at = coalesce(EXCLUDED.cursor_at, s.cursor_at), last_run_id = EXCLUDED.last_run_id, "
    "last_success_at = now(), last_full_at = coalesce(EXCLUDED.last_full_at, s.last_full_at)";
/* Every payload of the transaction in one round trip: a batch of webhooks
 * from many organizations has one payload per organization, and one
 * statement each made the batch's cost grow with its size under backlog.
 * pg_notify is volatile, so it runs after the sort: payloads keep their order. */
static const char *const SQL_NOTIFY =
    "SELECT pg_notify('tds_changes', p) FROM unnest($1::text[]) WITH ORDINALITY AS u(p, n) "
    "ORDER BY n";

static void no_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

void tds_apply_quiet(PGconn *c)
{
    if (c)
        PQsetNoticeProcessor(c, no_notice, NULL);
}

int tds_apply_classify(PGconn *c, const PGresult *r)
{
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

    if (!c || PQstatus(c) != CONNECTION_OK || !st)
        return TDS_APPLY_E_CONN;
    if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0)
        return TDS_APPLY_E_RETRY;
    if (strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0 || strcmp(st, "53300") == 0)
        return TDS_APPLY_E_CONN;
    /* Data exceptions, integrity violations, program limits (a value too big
     * for an index), and a datatype mismatch from odd input text. */
    if (strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0 || strncmp(st, "54", 2) == 0 ||
        strcmp(st, "42804") == 0)
        return TDS_APPLY_E_DATA;
    return TDS_APPLY_E_DB;
}

/* A COMMIT of a transaction that sent a pg_notify, refused for a program
 * limit (54000): "too many notifications in the NOTIFY queue", the 8 GB
 * queue filled by a listener that does not read. Not the records' fault:
 * the batch is written again (TDS_APPLY_E_DB) without its notifications,
 * and so are the transactions of the next NOTIFY_OFF_MS, rather than the
 * records going to tds.rejected or the pipeline waiting on that listener. */
#define NOTIFY_OFF_MS 10000

static bool notify_refused(struct tds_apply *a, const char *st, const char *what)
{
    if (!a->txn_notified || !st || strncmp(st, "54", 2) != 0 ||
        strcmp(what, "could not commit") != 0)
        return false;
    a->notify_off_until = tds_now_ms() + NOTIFY_OFF_MS;
    return true;
}

static bool notify_off(const struct tds_apply *a)
{
    return a->notify_off_until != 0 && tds_now_ms() < a->notify_off_until;
}

static int fail(struct tds_apply *a, PGresult *r, struct tds_apply_result *res, const char *what)
{
    int code = tds_apply_classify(a->conn, r);
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *prim = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *det = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *ctx = r ? PQresultErrorField(r, PG_DIAG_CONTEXT) : NULL;

    snprintf(res->sqlstate, sizeof(res->sqlstate), "%s", st ? st : "");
    if (prim)
        snprintf(res->error, sizeof(res->error), "%s: %s%s%s%s%s (SQLSTATE %s)", what, prim,
                 det ? ", " : "", det ? det : "", ctx ? ", " : "", ctx ? ctx : "", st);
    else
        snprintf(res->error, sizeof(res->error), "%s: %s", what,
                 a->conn ? PQerrorMessage(a->conn) : "no connection");
    /* libpq messages end with a newline; log lines must not. The message may
     * quote a record's text (a key in DETAIL, a value in CONTEXT) and becomes
     * a rejection's reason: cut at 1 KiB, it must not end inside a character. */
    for (char *p = res->error; *p; p++)
        if (*p == '\n')
            *p = ' ';
    tds_utf8_trim(res->error);
    if (code == TDS_APPLY_E_DATA && notify_refused(a, st, what)) {
        code = TDS_APPLY_E_DB;
        res->notify_refused = true;
    }
    PQclear(r);
    return code;
}

int tds_apply_new(struct tds_apply **out, const char *conninfo)
{
    struct tds_apply *a = calloc(1, sizeof(*a));

    if (!a)
        return -ENOMEM;
    a->an_table = -1;
    a->conninfo = strdup(conninfo);
    if (!a->conninfo || tds_notify_new(&a->notify) != 0) {
        tds_apply_free(a);
        return -ENOMEM;
    }
    *out = a;
    return 0;
}

static void forget_session(struct tds_apply *a)
{
    for (size_t i = 0; i < a->n_sigs; i++) {
        for (size_t c = 0; c < a->sigs[i].n_cols; c++)
            free(a->sigs[i].cols[c]);
        free(a->sigs[i].cols);
    }
    a->n_sigs = 0;
}

void tds_apply_disconnect(struct tds_apply *a)
{
    if (a->conn)
        PQfinish(a->conn);
    a->conn = NULL;
    a->piped = false;
    a->n_pipe = 0;
    forget_session(a);
}

struct tds_apply *tds_apply_free(struct tds_apply *a)
{
    if (!a)
        return NULL;
    tds_apply_disconnect(a);
    free(a->sigs);
    tds_buf_deinit(&a->buf);
    tds_buf_deinit(&a->wk);
    for (size_t k = 0; k < TDS_ARRAY_SIZE(a->wkeys); k++)
        tds_buf_deinit(&a->wkeys[k]);
    for (size_t i = 0; i < WKEYS_ONE; i++)
        for (size_t k = 0; k < 2; k++)
            tds_buf_deinit(&a->wkey1[i][k]);
    for (size_t i = 0; i < META_PARAMS; i++)
        tds_buf_deinit(&a->params[i]);
    for (size_t i = 0; i < a->n_abuf; i++)
        tds_buf_deinit(&a->abuf[i]);
    free(a->abuf);
    free(a->avals);
    tds_notify_free(a->notify);
    if (a->an_conn)
        PQfinish(a->an_conn);
    free(a->pipe);
    free(a->conninfo);
    free(a);
    return NULL;
}

PGconn *tds_apply_conn(struct tds_apply *a) { return a->conn; }

bool tds_apply_connected(const struct tds_apply *a)
{
    return a->conn && PQstatus(a->conn) == CONNECTION_OK;
}

static bool has_children(const struct tds_table *t)
{
    for (size_t i = 0; i < tds_table_count(); i++) {
        const struct tds_table *c = tds_table_at(i);

        if (c->parent && strcmp(c->parent, t->name) == 0)
            return true;
    }
    return false;
}

/* ---- round trips ----
 *
 * Each statement the writer waits for costs a round trip to PostgreSQL: on
 * one machine ~0.1 ms, across a network to a managed database often more
 * than the statement itself. So a statement whose answer is not needed
 * before the next one is only queued in a libpq pipeline: BEGIN, a staging
 * INSERT of arrays, the collapse of duplicates, the child DELETEs and
 * inserts (of staged rows or of arrays), the meta statements, the staging
 * DELETEs. They go out with the
 * next statement whose answer is needed — an upsert's RETURNING, the
 * fast path's lookup — or with COMMIT, and their answers are read then
 * (pipe_finish). A COPY cannot join a pipeline: the queue is sent first. */

/* sql, with BEGIN in front when the transaction has not begun. A simple
 * query of several statements stops at the first error, and PQexec returns
 * at a COPY's start, so the caller sees what it would without the BEGIN. */
static PGresult *exec_in_txn(struct tds_apply *a, const char *sql)
{
    size_t len = strlen(sql);
    PGresult *r;
    char *s;

    if (a->begun)
        return PQexec(a->conn, sql);
    if (!(s = malloc(len + 7)))
        return NULL;
    memcpy(s, "BEGIN;", 6);
    memcpy(s + 6, sql, len + 1);
    a->begun = true;
    r = PQexec(a->conn, s);
    free(s);
    return r;
}

/* Queue a prepared statement (name) or a statement without parameters;
 * st says what it is (st.what must outlive the pipeline). */
static int pipe_queue(struct tds_apply *a, const char *name, const char *sql, int n,
                      const char *const *vals, struct pipe_stmt st, struct tds_apply_result *res)
{
    int ok;

    if (a->n_pipe == a->cap_pipe) {
        size_t cap = a->cap_pipe ? a->cap_pipe * 2 : 16;
        struct pipe_stmt *p = realloc(a->pipe, cap * sizeof(*p));

        if (!p)
            return -ENOMEM;
        a->pipe = p;
        a->cap_pipe = cap;
    }
    ok = name ? PQsendQueryPrepared(a->conn, name, n, vals, NULL, NULL, 0)
              : PQsendQueryParams(a->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    if (ok != 1)
        return fail(a, NULL, res, st.what);
    a->pipe[a->n_pipe++] = st;
    return 0;
}

static int pipe_send(struct tds_apply *a, const char *name, const char *sql, int n,
                     const char *const *vals, const char *what, struct tds_apply_result *res)
{
    return pipe_queue(a, name, sql, n, vals, (struct pipe_stmt){.what = what}, res);
}

/* Enter pipeline mode unless in it; the transaction's BEGIN leads if it has
 * not gone out. On an error the caller still calls pipe_finish() once
 * a->piped is set (tds_apply_run() does for whatever is left queued). */
static int pipe_start(struct tds_apply *a, struct tds_apply_result *res)
{
    if (a->piped)
        return 0;
    a->n_pipe = 0;
    if (PQenterPipelineMode(a->conn) != 1)
        return fail(a, NULL, res, "could not enter pipeline mode");
    a->piped = true;
    if (a->begun)
        return 0;
    a->begun = true;
    return pipe_send(a, "t_begin", NULL, 0, NULL, "could not begin", res);
}

/* Send the pipeline and read every answer; always leaves pipeline mode. rc:
 * an error met while queueing (returned as is, the answers only drained).
 * Else the first statement's error, or 0 with *last (if asked) holding the
 * last statement's result. A statement after a failed one is skipped by
 * the server, and the transaction is left for the caller to roll back. */
static int pipe_finish(struct tds_apply *a, int rc, PGresult **last, struct tds_apply_result *res)
{
    PGresult *r, *err = NULL;
    const char *what = "could not run a pipeline";
    char child_what[96];
    bool ok = PQpipelineSync(a->conn) == 1;

    for (size_t i = 0; ok && i < a->n_pipe; i++) {
        ExecStatusType st;

        if (!(r = PQgetResult(a->conn))) {
            ok = false;
            break;
        }
        st = PQresultStatus(r);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            const struct pipe_stmt *ps = &a->pipe[i];

            if (ps->child) {
                long long n = strtoll(PQcmdTuples(r), NULL, 10);

                res->child_rows += n;
                if (ps->mods)
                    a->mods[ps->tidx] += n;
            } else if (ps->parent) {
                int n = PQntuples(r);

                res->written[ps->tidx] += n;
                res->written_total += n;
                if (ps->mods)
                    a->mods[ps->tidx] += n;
            }
            if (last && i + 1 == a->n_pipe && !err)
                *last = r;
            else
                PQclear(r);
        } else if (a->pipe[i].after_commit && st != PGRES_PIPELINE_ABORTED) {
            const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);

            snprintf(a->after_commit_error, sizeof(a->after_commit_error), "%s",
                     msg ? msg : "no message");
            a->after_commit_failed = true;
            PQclear(r);
        } else if (!err && st != PGRES_PIPELINE_ABORTED) {
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

            err = r;
            what = a->pipe[i].what;
            /* unique_violation: an event of the batch is recorded already */
            a->events_seen = a->pipe[i].events && state && strcmp(state, "23505") == 0;
            if (a->pipe[i].child) {
                snprintf(child_what, sizeof(child_what), "could not write zoho.%s rows",
                         a->pipe[i].child->name);
                what = child_what;
            }
        } else {
            PQclear(r);
        }
        /* each statement's answers end with a NULL */
        while ((r = PQgetResult(a->conn)))
            PQclear(r);
    }
    if (ok) {
        r = PQgetResult(a->conn);
        ok = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        PQclear(r);
    }
    a->piped = false;
    a->n_pipe = 0;
    if (PQexitPipelineMode(a->conn) != 1)
        ok = false;
    if ((rc != 0 || err || !ok) && last && *last) {
        PQclear(*last);
        *last = NULL;
    }
    if (!ok) {
        /* Answers missing, or stuck in pipeline mode: the connection is of
         * no further use. */
        PQclear(err);
        if (rc == 0)
            fail(a, NULL, res, what);
        return TDS_APPLY_E_CONN;
    }
    if (rc != 0) {
        PQclear(err);
        return rc;
    }
    return err ? fail(a, err, res, what) : 0;
}

/* Send what is queued and read the answers, before a statement that cannot
 * join the pipeline (COPY, DISCARD PLANS as a simple query, ROLLBACK). */
static int pipe_flush(struct tds_apply *a, struct tds_apply_result *res)
{
    return a->piped ? pipe_finish(a, 0, NULL, res) : 0;
}

static int exec_ok(struct tds_apply *a, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(a->conn, sql);
    ExecStatusType st = PQresultStatus(r);
    int code;

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(r);
        return 0;
    }
    code = tds_apply_classify(a->conn, r);
    snprintf(err, errlen, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return code;
}

static int prepare(struct tds_apply *a, const char *name, const char *sql, char *err,
                   size_t errlen)
{
    PGresult *r = PQprepare(a->conn, name, sql, 0, NULL);
    int code;

    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        PQclear(r);
        return 0;
    }
    code = tds_apply_classify(a->conn, r);
    snprintf(err, errlen, "could not prepare %s: %s", name, PQresultErrorMessage(r));
    PQclear(r);
    return code;
}

/* ---- keeping the planner's picture of growing tables current ----
 *
 * PostgreSQL caches the plan of each foreign-key check for the life of a
 * session. Planned while zoho.items is empty, the check of a new item_stock
 * row may pick any (org_id, ...) index and then walk every item of the
 * organization (measured: 200 us a row at 5,000 items, growing with the
 * table). Autovacuum analyzes only after a minute or more; a fresh database
 * filled by a full sync or a webhook stream suffers until then. So the writer
 * analyzes a table itself each time it has written as many rows into it as
 * the table held at its last analyze (at least ANALYZE_MIN_ROWS): a handful
 * of ANALYZEs while a table grows from empty, each one invalidating the
 * cached plans, none once it is large (autovacuum's turn). */

static int read_row_counts(struct tds_apply *a, char *err, size_t errlen)
{
    PGresult *r = PQexec(a->conn,
        "SELECT c.relname, greatest(c.reltuples, 0), pg_has_role(c.relowner, 'MEMBER') "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'zoho' AND c.relkind IN ('r', 'p')");
    int code;

    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        code = tds_apply_classify(a->conn, r);
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        PQclear(r);
        return code;
    }
    a->analyze_off = false;
    for (size_t i = 0; i < tds_table_count(); i++) {
        a->mods[i] = 0;
        a->analyzed_rows[i] = 0;
        a->planned_rows[i] = 0;
    }
    for (int k = 0; k < PQntuples(r); k++) {
        const struct tds_table *t = tds_table_find(PQgetvalue(r, k, 0));

        if (!t)
            continue;
        for (size_t i = 0; i < tds_table_count(); i++)
            if (tds_table_at(i) == t)
                a->analyzed_rows[i] = strtod(PQgetvalue(r, k, 1), NULL);
        /* Only the owner may analyze; a writer role that is not is left
         * to autovacuum. */
        if (PQgetvalue(r, k, 2)[0] != 't')
            a->analyze_off = true;
    }
    PQclear(r);
    return 0;
}

static size_t table_index(const struct tds_table *t)
{
    for (size_t i = 0; i < tds_table_count(); i++)
        if (tds_table_at(i) == t)
            return i;
    return 0;
}

/* The plans of the foreign-key checks while a parent table is still small.
 * PostgreSQL plans such a check generically after its fifth run in a session
 * and keeps that plan until the parent's statistics change. Planned while
 * zoho.items held a handful of rows, every index on (org_id, ...) costs the
 * same, and the check sometimes takes items_modified_time_idx: then each new
 * item_stock row walks every item of its organization. One batch of 2,000
 * new items after a few single-item ones paid that (9.5 million index
 * entries read, PostgreSQL CPU per webhook 112-185 us instead of 62-84, in
 * about a third of fresh-database runs), and the ANALYZE that fixes it comes
 * only after that batch commits. So before child rows are written, while the
 * parent is below ANALYZE_MIN_ROWS at its last analyze, the session discards
 * its cached plans each time the parent has doubled since the last discard
 * (from PLAN_RESET_MIN_ROWS): the next checks are planned for the table as it
 * is. A few times per table, never once the table is analyzed at size. */
static int refresh_fk_plans(struct tds_apply *a, const struct tds_table *child,
                            struct tds_apply_result *res)
{
    const struct tds_table *parent = tds_table_find(child->parent);
    size_t p;
    double known;
    PGresult *r;
    char sql[200];
    int rc;

    if (!parent)
        return 0;
    p = table_index(parent);
    known = a->analyzed_rows[p] + (double)a->mods[p];
    if (a->analyzed_rows[p] >= ANALYZE_MIN_ROWS || known < PLAN_RESET_MIN_ROWS ||
        known < 2 * a->planned_rows[p])
        return 0;
    if ((rc = pipe_flush(a, res)) != 0)
        return rc;
    /* Replanned without statistics, the check still saw every index the
     * same: org_id = $1 took PostgreSQL's default selectivity (0.5 %), so
     * items_modified_time_idx looked as narrow as the primary key, and a
     * whole batch's checks walked the organization (1,000 of 4,000 in
     * about one run in six of test_key_checks_are_replanned_when_a_small_
     * table_grows). So the key columns are analyzed first, in this
     * transaction, which counts its own new rows, with the side
     * connection's small sample (3,000 rows): a few milliseconds, a few
     * times in the table's life. SKIP_LOCKED: one that
     * autovacuum or the side connection is analyzing is left to it; a role
     * that does not own the table gets a warning, not an error. */
    if (a->analyze_off)
        snprintf(sql, sizeof(sql), "DISCARD PLANS");
    else
        snprintf(sql, sizeof(sql),
                 "SET LOCAL default_statistics_target = 10; "
                 "ANALYZE (SKIP_LOCKED) zoho.\"%s\" (org_id, \"%s\"); DISCARD PLANS",
                 parent->name, parent->id_column);
    r = exec_in_txn(a, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return fail(a, r, res, "could not replan the foreign-key checks");
    PQclear(r);
    tds_debug("zoho.%s holds ~%.0f rows: %s before writing zoho.%s", child->parent, known,
              a->analyze_off ? "cached plans discarded" : "key columns analyzed, cached plans discarded",
              child->name);
    a->planned_rows[p] = known;
    return 0;
}

/* The ANALYZE in flight on the side connection: collect it when done. */
static void analyze_collect(struct tds_apply *a)
{
    PGresult *r;
    bool failed = false, lost = false;
    char why[256] = "";

    if (a->an_table < 0)
        return;
    if (PQconsumeInput(a->an_conn) != 1) {
        snprintf(why, sizeof(why), "%s", PQerrorMessage(a->an_conn));
        failed = lost = true;
    } else if (PQisBusy(a->an_conn)) {
        return;
    }
    /* read to the end even past an error: the connection takes no next
     * ANALYZE while a result is left unread */
    while (!lost && (r = PQgetResult(a->an_conn)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && !failed) {
            snprintf(why, sizeof(why), "%s", PQresultErrorMessage(r));
            failed = true;
        }
        PQclear(r);
    }
    for (char *p = why; *p; p++)
        if (*p == '\n')
            *p = ' ';
    if (failed) {
        /* Not worth failing anything over; tried again after as many rows. */
        tds_warn("could not analyze zoho.%s, leaving it to autovacuum for now: %s",
                 tds_table_at((size_t)a->an_table)->name, why);
        if (PQstatus(a->an_conn) != CONNECTION_OK) {
            PQfinish(a->an_conn);
            a->an_conn = NULL;
        }
    } else {
        tds_debug("analyzed zoho.%s after %lld rows written, in %lld ms",
                  tds_table_at((size_t)a->an_table)->name, (long long)a->an_rows,
                  (long long)(tds_now_ms() - a->an_t0));
        a->analyzed_rows[a->an_table] += (double)a->an_rows;
    }
    a->an_table = -1;
}

/* Give up analyzing for now (the side connection failed): tables due are
 * due again after as many rows. */
static void analyze_give_up(struct tds_apply *a, const char *why)
{
    tds_warn("could not connect to analyze, leaving the growing tables to autovacuum for "
             "now: %s", why);
    if (a->an_conn)
        PQfinish(a->an_conn);
    a->an_conn = NULL;
    a->an_table = -1;
    for (size_t i = 0; i < tds_table_count(); i++)
        a->mods[i] = 0;
}

/* The side connection's handshake, without waiting for it: opening a session
 * takes PostgreSQL a few to tens of ms (longer on a fresh database), and the
 * writer's batches must not wait behind it. True once it is ready. */
static bool analyze_conn_ready(struct tds_apply *a)
{
    char err[256];
    int rc;

    if (!a->an_conn) {
        /* A tenth of the default sample (3,000 rows): the row count and the
         * key columns' spread are all the plans need, and at 100,000 rows
         * it takes ~20 ms instead of ~260 ms of a core the batches share.
         * Autovacuum's later ANALYZE takes the full sample. */
        a->an_conn = tds_pg_connect_start(a->conninfo, "tds-writer-analyze",
                                          "-c default_statistics_target=10", err, sizeof(err));
        if (!a->an_conn) {
            analyze_give_up(a, err);
            return false;
        }
        tds_apply_quiet(a->an_conn);
        a->an_want = PGRES_POLLING_WRITING;
        a->an_conn_t0 = tds_now_ms();
    }
    if (a->an_want == PGRES_POLLING_OK)
        return true;
    rc = tds_pg_connect_poll(a->an_conn, &a->an_want, err, sizeof(err));
    if (rc < 0) {
        analyze_give_up(a, err);
        return false;
    }
    if (rc == 0 && tds_now_ms() - a->an_conn_t0 > ANALYZE_CONNECT_TIMEOUT_MS) {
        analyze_give_up(a, "timed out");
        return false;
    }
    return rc == 1;
}

void tds_apply_maintain(struct tds_apply *a)
{
    analyze_collect(a);
    for (size_t i = 0; i < tds_table_count() && !a->analyze_off && a->an_table < 0; i++) {
        const struct tds_table *t = tds_table_at(i);
        double due = a->analyzed_rows[i] > ANALYZE_MIN_ROWS ? a->analyzed_rows[i]
                                                            : ANALYZE_MIN_ROWS;
        char sql[160];

        if ((double)a->mods[i] < due)
            continue;
        if (!analyze_conn_ready(a))
            return;
        /* The key columns are all the writer's statements and the foreign-key
         * checks need; the row count comes with any ANALYZE. The other
         * columns (wide raw JSON) are autovacuum's. SKIP_LOCKED: a table
         * autovacuum is working on is skipped (it is being analyzed anyway).
         * On its own connection, so the batches go on meanwhile (an ANALYZE
         * of a growing table takes up to ~150 ms, which used to hold every
         * webhook behind it); the new statistics reach the writer's
         * session as a plan invalidation. */
        snprintf(sql, sizeof(sql), "ANALYZE (SKIP_LOCKED) zoho.\"%s\" (org_id, \"%s\")",
                 t->name, t->id_column);
        if (!PQsendQuery(a->an_conn, sql)) {
            tds_warn("could not analyze zoho.%s, leaving it to autovacuum for now: %s",
                     t->name, PQerrorMessage(a->an_conn));
            PQfinish(a->an_conn);
            a->an_conn = NULL;
            a->mods[i] = 0;
            return;
        }
        a->an_table = (int)i;
        a->an_rows = a->mods[i];
        a->an_t0 = tds_now_ms();
        a->mods[i] = 0;
    }
}

/* How the session compresses the values PostgreSQL stores out of line: a
 * record's raw JSON over ~2 KB (an item's detail from Zoho is ~4 KB). pglz,
 * PostgreSQL's default, made COPY of such records 118-142 us a row, lz4 90
 * (20,000 items, jsonb); a full sync of 100,000 items ran at 3,965 items/s
 * with pglz, 4,727 with lz4 (medians of 5 pairs), and left zoho.items 24%
 * larger (writer/DESIGN.md "Compression of large values"). A server that does not
 * take the setting (PostgreSQL before 14, or built without lz4) compresses
 * as it always did: that is said once, and the writer goes on. Only a broken
 * connection fails. */
static int set_toast(struct tds_apply *a, char *err, size_t errlen)
{
    char sql[64];
    PGresult *r;

    if (!a->toast)
        return 0;
    snprintf(sql, sizeof(sql), "SET default_toast_compression = %s", a->toast);
    r = PQexec(a->conn, sql);
    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        PQclear(r);
        return 0;
    }
    if (PQstatus(a->conn) != CONNECTION_OK) {
        int code = tds_apply_classify(a->conn, r);

        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        PQclear(r);
        return code;
    }
    if (!a->toast_warned) {
        char msg[256];

        snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(r));
        msg[strcspn(msg, "\n")] = '\0';
        tds_log(TDS_LOG_WARN, NULL,
                "PostgreSQL refused default_toast_compression = %s (%s): large values are "
                "compressed with the server's default (TDS_WRITER_TOAST_COMPRESSION)",
                a->toast, msg);
        a->toast_warned = true;
    }
    PQclear(r);
    return 0;
}

void tds_apply_set_toast_compression(struct tds_apply *a, const char *method)
{
    a->toast = method;
}

int tds_apply_parse_lsn(const char *text, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (!text || !*text)
        return -1;
    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* Prepare the WAL position statements and read one: a role may be refused
 * the functions (REVOKE), and then every commit is acked as soon as it
 * returns, as it is durable with synchronous_commit on (said once). */
static int check_lsn(struct tds_apply *a, char *err, size_t errlen)
{
    PGresult *r;
    uint64_t v;
    int rc;

    a->lsn_ok = false;
    if ((rc = prepare(a, "t_lsn", SQL_LSN, err, errlen)) != 0 ||
        (rc = prepare(a, "t_flushed", SQL_FLUSHED, err, errlen)) != 0)
        return rc;
    r = PQexecPrepared(a->conn, "t_flushed", 0, NULL, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
        tds_apply_parse_lsn(PQgetvalue(r, 0, 0), &v) == 0) {
        a->lsn_ok = true;
    } else if (PQstatus(a->conn) != CONNECTION_OK) {
        snprintf(err, errlen, "could not read the WAL position: %s", PQerrorMessage(a->conn));
        PQclear(r);
        return TDS_APPLY_E_CONN;
    } else if (!a->lsn_warned) {
        const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);

        tds_warn("cannot read PostgreSQL's WAL position (%s): acks go out when COMMIT returns, "
                 "so with synchronous_commit off a crash of PostgreSQL can lose acked rows; "
                 "grant EXECUTE on pg_current_wal_insert_lsn() and pg_current_wal_flush_lsn()",
                 msg ? msg : "unexpected answer");
        a->lsn_warned = true;
    }
    PQclear(r);
    return 0;
}

int tds_apply_wal_flushed(struct tds_apply *a, uint64_t *flushed, uint64_t *session)
{
    PGresult *r;
    int rc = 0;

    if (!tds_apply_connected(a))
        return TDS_APPLY_E_CONN;
    if (!a->lsn_ok)
        return TDS_APPLY_E_DB;
    r = PQexecPrepared(a->conn, "t_flushed", 0, NULL, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 ||
        tds_apply_parse_lsn(PQgetvalue(r, 0, 0), flushed) != 0)
        rc = PQstatus(a->conn) == CONNECTION_OK ? TDS_APPLY_E_DB : TDS_APPLY_E_CONN;
    PQclear(r);
    if (rc == TDS_APPLY_E_CONN)
        tds_apply_disconnect(a);
    *session = a->session;
    return rc;
}

/* How this session commits. With TDS_WRITER_ASYNC_COMMIT (the default) a
 * COMMIT does not wait for the WAL flush: the rows are visible, and NOTIFY
 * sent, about one fdatasync sooner (writer/DESIGN.md, "Commits that do not
 * wait"); the acks wait for it instead (writer.c), and the flusher has
 * PostgreSQL flush at once. It stays as the server says when:
 *  - the WAL positions cannot be read (the acks could not wait);
 *  - synchronous_commit is off already (a role or server setting: the acks
 *    wait as before, for the WAL writer);
 *  - synchronous_standby_names is set: a commit then waits for a standby
 *    too, which the local flushed position the acks compare cannot say.
 * Read at each connect, so a change of those settings counts from the next
 * one. */
static int commit_mode(struct tds_apply *a, char *err, size_t errlen)
{
    PGresult *r;
    const char *why = NULL;
    char sc[32] = "", standbys[256] = "";
    int rc;

    a->async = false;
    a->server[0] = 0;
    if (!a->async_wanted) {
        why = "TDS_WRITER_ASYNC_COMMIT is false";
    } else if (!a->lsn_ok) {
        why = "the WAL position cannot be read";
    } else {
        r = PQexec(a->conn, "SELECT current_setting('synchronous_commit'), "
                            "current_setting('synchronous_standby_names'), "
                            "pg_postmaster_start_time()::text");
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
            rc = tds_apply_classify(a->conn, r);
            snprintf(err, errlen, "could not read synchronous_commit: %s",
                     PQresultErrorMessage(r));
            PQclear(r);
            return rc;
        }
        snprintf(sc, sizeof(sc), "%s", PQgetvalue(r, 0, 0));
        snprintf(standbys, sizeof(standbys), "%s", PQgetvalue(r, 0, 1));
        snprintf(a->server, sizeof(a->server), "%s", PQgetvalue(r, 0, 2));
        PQclear(r);
        if (strcmp(sc, "off") == 0)
            why = "synchronous_commit is off for this role or server: acks wait for the WAL "
                  "writer";
        else if (standbys[0])
            why = "synchronous_standby_names is set: commits wait for the standbys";
    }
    if (!why) {
        if ((rc = exec_ok(a, "SET synchronous_commit = off", err, errlen)) != 0)
            return rc;
        a->async = true;
        if (a->mode_said != 1)
            tds_info("commits do not wait for the WAL flush (the server's synchronous_commit "
                     "is %s); acks do, and a side connection has PostgreSQL flush at once",
                     sc);
        a->mode_said = 1;
        return 0;
    }
    if (a->mode_said != 2)
        tds_info("commits wait for the WAL flush as the server says: %s", why);
    a->mode_said = 2;
    return 0;
}

void tds_apply_set_async_commit(struct tds_apply *a, bool on) { a->async_wanted = on; }

bool tds_apply_async_commit(const struct tds_apply *a)
{
    return a->async && tds_apply_connected(a);
}

const char *tds_apply_server(const struct tds_apply *a) { return a->server; }

static int prewarm(struct tds_apply *a, char *err, size_t errlen);

int tds_apply_connect(struct tds_apply *a, char *err, size_t errlen)
{
    char name[64];
    int rc;

    tds_apply_disconnect(a);
    a->conn = tds_pg_connect(a->conninfo, "tds-writer", err, errlen);
    if (!a->conn)
        return TDS_APPLY_E_CONN;
    tds_apply_quiet(a->conn);
    /* A 20000-row batch of wide records is tens of MB of staging: with the
     * default 8 MB of temp_buffers it would spill to disk. Must be set before
     * the session's first temporary table. */
    if ((rc = exec_ok(a, "SET temp_buffers = '128MB'", err, errlen)) != 0)
        goto fail;
    /* The loop blocks while a statement waits; a lock held elsewhere for long
     * (a manual ALTER TABLE) must not keep it from signals: give up, back
     * off and retry. Other writers hold row locks only for one batch. */
    if ((rc = exec_ok(a, "SET lock_timeout = '8s'", err, errlen)) != 0)
        goto fail;
    if ((rc = set_toast(a, err, errlen)) != 0)
        goto fail;
    /* BEGIN and COMMIT prepared too: each transaction then skips two parses
     * (~0.02 ms each in the server log's durations). */
    if ((rc = prepare(a, "t_begin", "BEGIN", err, errlen)) != 0 ||
        (rc = prepare(a, "t_commit", "COMMIT", err, errlen)) != 0 ||
        (rc = prepare(a, "m_webhook", SQL_WEBHOOK, err, errlen)) != 0 ||
        (rc = prepare(a, "m_webhook_seen", SQL_WEBHOOK_SEEN, err, errlen)) != 0 ||
        (rc = prepare(a, "m_pages", SQL_PAGES, err, errlen)) != 0 ||
        (rc = prepare(a, "m_pages_seen", SQL_PAGES_SEEN, err, errlen)) != 0 ||
        (rc = prepare(a, "m_reject", SQL_REJECT, err, errlen)) != 0 ||
        (rc = prepare(a, "m_runs", SQL_RUNS, err, errlen)) != 0 ||
        (rc = prepare(a, "m_final_runs", SQL_FINAL_RUNS, err, errlen)) != 0 ||
        (rc = prepare(a, "m_final_state", SQL_FINAL_STATE, err, errlen)) != 0 ||
        (rc = prepare(a, "m_notify", SQL_NOTIFY, err, errlen)) != 0)
        goto fail;
    for (size_t i = 0; i < tds_table_count(); i++) {
        const struct tds_table *t = tds_table_at(i);

        if (t->parent)
            continue;
        snprintf(name, sizeof(name), "x_%zu", i);
        tds_buf_reset(&a->buf);
        /* For each incoming row whose key exists: would the guard let it
         * through? The upsert's own expression (sqlgen.c). */
        if (tds_sqlgen_lookup(&a->buf, t) != 0 || tds_buf_add(&a->buf, "", 1) != 0) {
            rc = -ENOMEM;
            goto fail;
        }
        if ((rc = prepare(a, name, a->buf.p, err, errlen)) != 0)
            goto fail;
        snprintf(name, sizeof(name), "nw_%zu", i);
        tds_buf_reset(&a->buf);
        if (tds_sqlgen_notify_if_written(&a->buf, t) != 0 || tds_buf_add(&a->buf, "", 1) != 0) {
            rc = -ENOMEM;
            goto fail;
        }
        if ((rc = prepare(a, name, a->buf.p, err, errlen)) != 0)
            goto fail;
    }
    for (size_t i = 0; i < tds_table_count(); i++) {
        const struct tds_table *c = tds_table_at(i);

        if (!c->parent)
            continue;
        snprintf(name, sizeof(name), "cw_%zu", i);
        tds_buf_reset(&a->buf);
        if (tds_sqlgen_child_delete_if_written(&a->buf, c, tds_table_find(c->parent)) != 0 ||
            tds_buf_add(&a->buf, "", 1) != 0) {
            rc = -ENOMEM;
            goto fail;
        }
        if ((rc = prepare(a, name, a->buf.p, err, errlen)) != 0)
            goto fail;
        for (int one = 0; one < 2; one++) {
            snprintf(name, sizeof(name), "%s_%zu", one ? "ce" : "cd", i);
            tds_buf_reset(&a->buf);
            if (tds_sqlgen_child_delete(&a->buf, c, one) != 0 ||
                tds_buf_add(&a->buf, "", 1) != 0) {
                rc = -ENOMEM;
                goto fail;
            }
            if ((rc = prepare(a, name, a->buf.p, err, errlen)) != 0)
                goto fail;
        }
    }
    if ((rc = read_row_counts(a, err, errlen)) != 0)
        goto fail;
    if ((rc = check_lsn(a, err, errlen)) != 0 || (rc = commit_mode(a, err, errlen)) != 0 ||
        (rc = prewarm(a, err, errlen)) != 0)
        goto fail;
    a->session++;
    return 0;
fail:
    tds_apply_disconnect(a);
    return rc;
}

static bool same_cols(const struct sig *g, char *const *cols, size_t n)
{
    if (g->n_cols != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(g->cols[i], cols[i]) != 0)
            return false;
    return true;
}

/* Find or create the session's staging table for a set; outside any transaction. */
static int get_sig(struct tds_apply *a, const struct tds_table *t, const struct tds_msg_rowset *set,
                   size_t *out, struct tds_apply_result *res)
{
    struct sig *g;
    bool sent = false; /* the session has seen statements of this entry */
    int rc;

    for (size_t i = 0; i < a->n_sigs; i++)
        if (a->sigs[i].t == t && a->sigs[i].kind == set->kind &&
            same_cols(&a->sigs[i], set->cols, set->n_cols)) {
            *out = i;
            return 0;
        }
    if (a->n_sigs == a->cap_sigs) {
        size_t cap = a->cap_sigs ? a->cap_sigs * 2 : 16;
        struct sig *p = realloc(a->sigs, cap * sizeof(*p));

        if (!p)
            return -ENOMEM;
        a->sigs = p;
        a->cap_sigs = cap;
    }
    g = &a->sigs[a->n_sigs];
    memset(g, 0, sizeof(*g));
    g->t = t;
    g->tidx = table_index(t);
    g->kind = set->kind;
    g->cols = calloc(set->n_cols, sizeof(*g->cols));
    if (!g->cols)
        return -ENOMEM;
    g->n_cols = set->n_cols;
    for (size_t c = 0; c < set->n_cols; c++)
        if (!(g->cols[c] = strdup(set->cols[c]))) {
            for (size_t k = 0; k < c; k++)
                free(g->cols[k]);
            free(g->cols);
            return -ENOMEM;
        }
    a->n_sigs++;
    snprintf(g->stg, sizeof(g->stg), "_tds_s%zu", a->n_sigs);
    snprintf(g->upsert, sizeof(g->upsert), "u%zu", a->n_sigs);
    snprintf(g->collapse, sizeof(g->collapse), "c%zu", a->n_sigs);
    snprintf(g->stage_ins, sizeof(g->stage_ins), "i%zu", a->n_sigs);
    snprintf(g->direct, sizeof(g->direct), "d%zu", a->n_sigs);
    snprintf(g->if_written, sizeof(g->if_written), "w%zu", a->n_sigs);
    snprintf(g->one, sizeof(g->one), "o%zu", a->n_sigs);

    tds_buf_reset(&a->buf);
    if (tds_sqlgen_staging(&a->buf, g->stg, t, g->cols, g->n_cols) != 0 ||
        tds_buf_add(&a->buf, "", 1) != 0)
        goto nomem;
    sent = true;
    if ((rc = exec_ok(a, a->buf.p, res->error, sizeof(res->error))) != 0)
        goto failed;
    tds_buf_reset(&a->buf);
    if (tds_sqlgen_stage_insert(&a->buf, g->stg, t, g->cols, g->n_cols) != 0 ||
        tds_buf_add(&a->buf, "", 1) != 0)
        goto nomem;
    if ((rc = prepare(a, g->stage_ins, a->buf.p, res->error, sizeof(res->error))) != 0)
        goto failed;
    /* staging, arrays, and (a DETAIL parent, for run_one_flight()) one row */
    for (int src = TDS_SRC_STAGING; src <= TDS_SRC_ROW; src++) {
        const char *name = src == TDS_SRC_STAGING ? g->upsert
                           : src == TDS_SRC_ARRAYS ? g->direct
                                                   : g->one;

        if (src == TDS_SRC_ROW && (t->parent || set->kind != TDS_ROWS_DETAIL))
            break;
        tds_buf_reset(&a->buf);
        if (t->parent) {
            if (tds_sqlgen_child_insert(&a->buf, g->stg, t, g->cols, g->n_cols,
                                        src == TDS_SRC_ARRAYS) != 0)
                goto nomem;
        } else if (tds_sqlgen_upsert(&a->buf, g->stg, t, set->kind, g->cols, g->n_cols,
                                     set->kind == TDS_ROWS_DETAIL && has_children(t),
                                     (enum tds_sqlgen_src)src) != 0) {
            goto nomem;
        }
        if (tds_buf_add(&a->buf, "", 1) != 0)
            goto nomem;
        if ((rc = prepare(a, name, a->buf.p, res->error, sizeof(res->error))) != 0)
            goto failed;
    }
    if (t->parent) {
        tds_buf_reset(&a->buf);
        if (tds_sqlgen_child_insert_if_written(&a->buf, t, tds_table_find(t->parent), g->cols,
                                               g->n_cols) != 0 ||
            tds_buf_add(&a->buf, "", 1) != 0)
            goto nomem;
        if ((rc = prepare(a, g->if_written, a->buf.p, res->error, sizeof(res->error))) != 0)
            goto failed;
    }
    if (!t->parent) {
        tds_buf_reset(&a->buf);
        if (tds_sqlgen_collapse(&a->buf, g->stg, t, set->kind,
                                set->kind != TDS_ROWS_DELETE || set->n_cols >= 3) != 0 ||
            tds_buf_add(&a->buf, "", 1) != 0)
            goto nomem;
        if ((rc = prepare(a, g->collapse, a->buf.p, res->error, sizeof(res->error))) != 0)
            goto failed;
    }
    *out = a->n_sigs - 1;
    return 0;
nomem:
    rc = -ENOMEM;
failed:
    if (!sent) {
        /* Nothing of it reached the session: forget the entry, so the next
         * batch with these columns registers it again. */
        for (size_t c = 0; c < g->n_cols; c++)
            free(g->cols[c]);
        free(g->cols);
        a->n_sigs--;
        return rc;
    }
    /* The session may hold half of it (the staging table, some statements
     * prepared): kept, the entry would send later batches to statements that
     * do not exist (SQLSTATE 26000, retried for ever); forgotten, its number
     * would name another column list's staging table. Start the session
     * over: the retry reconnects. */
    tds_apply_disconnect(a);
    return rc;
}

/* Stage, before any batch, the sets the processor sends whole: every top
 * table's DETAIL rows and every child table's rows, with the column lists it
 * sends (tds_table_set_cols), so that a webhook's first batch finds its
 * staging tables made and its statements prepared. Made on first use, they
 * took ~15 ms of a fresh session (the session's first temporary table ~5 ms
 * of it), which the first batch and every webhook behind it waited out.
 * Other lists (a LIST's present columns, a delete's) are still made on
 * first use. */
static int prewarm(struct tds_apply *a, char *err, size_t errlen)
{
    const char *cols[6 + 64];
    struct tds_apply_result res;
    size_t idx;
    int rc;

    for (size_t i = 0; i < tds_table_count(); i++) {
        const struct tds_table *t = tds_table_at(i);
        struct tds_msg_rowset set = {.kind = t->parent ? TDS_ROWS_CHILD : TDS_ROWS_DETAIL};

        set.table = (char *)t->name;
        set.n_cols = tds_table_set_cols(t, !t->parent, UINT64_MAX, cols);
        set.cols = (char **)cols;
        memset(&res, 0, sizeof(res));
        if ((rc = get_sig(a, t, &set, &idx, &res)) != 0) {
            snprintf(err, errlen, "could not prepare the statements of zoho.%s: %s", t->name,
                     rc == -ENOMEM ? "out of memory" : res.error);
            return rc;
        }
    }
    return 0;
}

/* ---- grouping and COPY ---- */

struct sort_ctx {
    struct tds_bmsg *const *msgs;
};

static int cmp_val(const struct tds_bytes *a, const struct tds_bytes *b)
{
    size_t n = a->n < b->n ? a->n : b->n;
    int c;

    if (!a->p || !b->p)
        return (a->p != NULL) - (b->p != NULL);
    c = memcmp(a->p, b->p, n);
    return c ? c : (a->n > b->n) - (a->n < b->n);
}

static const struct tds_bytes *ref_vals(struct tds_bmsg *const *msgs, const struct ref *r)
{
    const struct tds_msg_rowset *set = &msgs[r->m]->msg.u.rows.sets[r->s];

    return &set->vals[(size_t)r->r * set->n_cols];
}

/* A modified_time value (processor's "yyyy-MM-dd HH:mm:ss[.fff]±hh:mm", or
 * Zoho's own form) as milliseconds since the epoch of its whole second;
 * false for anything else. */
static bool mtime_ms(const struct tds_bytes *v, int64_t *out)
{
    char s[TDS_ZTIME_LEN];
    int64_t t;

    if (!v->p || v->n == 0 || v->n >= sizeof(s))
        return false;
    memcpy(s, v->p, v->n);
    s[v->n] = '\0';
    if (tds_ztime_parse(s, &t) != 0)
        return false;
    *out = t * 1000;
    return true;
}

/* When a row's message was observed (rows.received_ms: page fetched, webhook
 * received) as timestamptz input text in out (>= 40 bytes); false when the
 * message does not say.
 * A page fetched at F shows what Zoho had at F. A webhook's version shows
 * only that Zoho had it in its modified_time's second: the delivery may
 * come late (Zoho's retry policies resend a failed one minutes after), when
 * the record has changed or been deleted since. So a webhook's version
 * counts as observed at the end of that second when it arrived after it:
 * a retried update received after the delete no longer revives the record,
 * and a delete received after the version was made deletes it, however
 * late the version's webhook came. */
static bool observed_text(struct tds_bmsg *const *msgs, const struct ref *r, char *out,
                          size_t outlen)
{
    const struct tds_msg_rows *rw = &msgs[r->m]->msg.u.rows;
    int64_t ms = rw->received_ms, mt;
    time_t s;
    struct tm tm;

    if (ms <= 0)
        return false;
    if (rw->mode && strcmp(rw->mode, "webhook") == 0) {
        const struct tds_msg_rowset *set = &rw->sets[r->s];

        if ((set->kind == TDS_ROWS_DETAIL || set->kind == TDS_ROWS_LIST) && set->n_cols > 2 &&
            strcmp(set->cols[2], "modified_time") == 0 &&
            mtime_ms(&set->vals[(size_t)r->r * set->n_cols + 2], &mt) && mt > 0 &&
            mt + 999 < ms)
            ms = mt + 999;
    }
    s = (time_t)(ms / 1000);
    if (!gmtime_r(&s, &tm))
        return false;
    snprintf(out, outlen, "%04d-%02d-%02d %02d:%02d:%02d.%03d+00", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return true;
}

/* The observed time as a COPY text field: the time, or \N when unknown. */
static int add_observed(struct tds_buf *b, struct tds_bmsg *const *msgs, const struct ref *r)
{
    char obs[48];

    if (!observed_text(msgs, r, obs, sizeof(obs)))
        return tds_buf_add(b, "\\N", 2);
    return tds_buf_add(b, obs, strlen(obs));
}

static int cmp_ref(const void *pa, const void *pb, void *ud)
{
    const struct sort_ctx *ctx = ud;
    const struct ref *a = pa, *b = pb;
    const struct tds_bytes *va = ref_vals(ctx->msgs, a), *vb = ref_vals(ctx->msgs, b);
    int c = cmp_val(&va[0], &vb[0]);

    if (c == 0)
        c = cmp_val(&va[1], &vb[1]);
    if (c == 0)
        c = (a->m > b->m) - (a->m < b->m);
    if (c == 0)
        c = (a->r > b->r) - (a->r < b->r);
    return c;
}

static int group_add(struct group *g, struct ref r)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 64;
        struct ref *p = realloc(g->refs, cap * sizeof(*p));

        if (!p)
            return -ENOMEM;
        g->refs = p;
        g->cap = cap;
    }
    g->refs[g->n++] = r;
    return 0;
}

static void groups_free(struct group *gs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(gs[i].refs);
        free(gs[i].fresh);
    }
    free(gs);
}

static int run_prepared(struct tds_apply *a, const char *name, int n, const char *const *vals,
                        PGresult **out, struct tds_apply_result *res, const char *what);

enum copy_form { COPY_STAGING, COPY_TARGET, COPY_CHILD };

/* Stream refs[0..n) as COPY text lines into the statement `sql`. */
static int copy_rows(struct tds_apply *a, const char *sql, struct tds_bmsg *const *msgs,
                     const struct ref *refs, size_t n, size_t n_cols, enum copy_form form,
                     struct tds_apply_result *res)
{
    PGresult *r;
    char head[32];
    int rc = pipe_flush(a, res);

    if (rc != 0)
        return rc;
    r = exec_in_txn(a, sql);
    if (PQresultStatus(r) != PGRES_COPY_IN)
        return fail(a, r, res, "could not start COPY");
    PQclear(r);
    tds_buf_reset(&a->buf);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct ref *rf = &refs[i];
        const struct tds_bytes *v = ref_vals(msgs, rf);
        int len;

        switch (form) {
        case COPY_STAGING:
            len = snprintf(head, sizeof(head), "%u\t%u\t", rf->m, rf->r);
            rc = tds_buf_add(&a->buf, head, (size_t)len);
            if (rc == 0)
                rc = add_observed(&a->buf, msgs, rf);
            for (size_t c = 0; c < n_cols && rc == 0; c++) {
                rc = tds_buf_add(&a->buf, "\t", 1);
                if (rc == 0)
                    rc = tds_copytext_add(&a->buf, v[c].p, v[c].n);
            }
            break;
        case COPY_TARGET:
        case COPY_CHILD:
            for (size_t c = 0; c < n_cols && rc == 0; c++) {
                if (c > 0)
                    rc = tds_buf_add(&a->buf, "\t", 1);
                if (rc == 0)
                    rc = tds_copytext_add(&a->buf, v[c].p, v[c].n);
            }
            /* then observed_at (copy_fast's column list ends with it) */
            if (rc == 0 && form == COPY_TARGET)
                rc = tds_buf_add(&a->buf, "\t", 1);
            if (rc == 0 && form == COPY_TARGET)
                rc = add_observed(&a->buf, msgs, rf);
            break;
        }
        if (rc == 0)
            rc = tds_buf_add(&a->buf, "\n", 1);
        if (rc == 0 && a->buf.len >= COPY_CHUNK) {
            if (PQputCopyData(a->conn, a->buf.p, (int)a->buf.len) != 1) {
                rc = TDS_APPLY_E_CONN;
                break;
            }
            tds_buf_reset(&a->buf);
        }
    }
    /* The rest, and the end. A piece libpq did not take (out of memory, a
     * broken connection) must not let the COPY end as if it were whole:
     * it is ended with an error, so the server discards it, and the batch
     * is tried again on a fresh session. */
    if (rc == 0 && a->buf.len > 0 && PQputCopyData(a->conn, a->buf.p, (int)a->buf.len) != 1)
        rc = TDS_APPLY_E_CONN;
    if (rc != 0) {
        snprintf(res->error, sizeof(res->error), "could not %s: %s",
                 rc == TDS_APPLY_E_CONN ? "send the rows to COPY" : "build the rows to COPY",
                 rc == TDS_APPLY_E_CONN ? PQerrorMessage(a->conn) : "out of memory");
        tds_utf8_trim(res->error);
        PQputCopyEnd(a->conn, rc == TDS_APPLY_E_CONN ? "could not send the rows" : "out of memory");
        while ((r = PQgetResult(a->conn)))
            PQclear(r);
        tds_buf_reset(&a->buf);
        return rc;
    }
    tds_buf_reset(&a->buf);
    if (PQputCopyEnd(a->conn, NULL) != 1) {
        snprintf(res->error, sizeof(res->error), "could not end COPY: %s", PQerrorMessage(a->conn));
        tds_utf8_trim(res->error);
        while ((r = PQgetResult(a->conn)))
            PQclear(r);
        return TDS_APPLY_E_CONN;
    }
    r = PQgetResult(a->conn);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        PGresult *extra;
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        int code;

        while ((extra = PQgetResult(a->conn)))
            PQclear(extra);
        /* A fast COPY of keys that did not exist a moment ago met another
         * writer inserting the same key: redo the batch through the upsert. */
        if (form == COPY_TARGET && st && strcmp(st, "23505") == 0) {
            fail(a, r, res, "could not copy new rows");
            a->no_fast = true;
            return TDS_APPLY_E_RETRY;
        }
        code = fail(a, r, res, "could not copy rows");
        return code;
    }
    PQclear(r);
    while ((r = PQgetResult(a->conn)))
        PQclear(r);
    return 0;
}

/* COPY refs[0..n) straight into zoho.<table>: the set's columns, then
 * observed_at for a top-level table (COPY_TARGET). */
static int copy_into_table(struct tds_apply *a, struct tds_bmsg *const *msgs,
                           const struct sig *sg, const struct ref *refs, size_t n,
                           enum copy_form form, struct tds_apply_result *res)
{
    char *sql;
    int rc;

    tds_buf_reset(&a->buf);
    rc = tds_buf_addf(&a->buf, "COPY zoho.\"%s\" (", sg->t->name);
    for (size_t c = 0; c < sg->n_cols && rc == 0; c++)
        rc = tds_buf_addf(&a->buf, "%s\"%s\"", c ? ", " : "", sg->cols[c]);
    if (rc == 0)
        rc = tds_buf_addf(&a->buf, "%s) FROM STDIN", form == COPY_TARGET ? ", observed_at" : "");
    if (rc == 0)
        rc = tds_buf_add(&a->buf, "", 1);
    if (rc != 0)
        return rc;
    if (!(sql = strdup(a->buf.p)))
        return -ENOMEM;
    rc = copy_rows(a, sql, msgs, refs, n, sg->n_cols, form, res);
    free(sql);
    return rc;
}

/* Fast path for a big group without duplicate keys: one lookup says which
 * keys exist and whether the guard would let each existing row through.
 * Rows with new keys are COPYed straight into the table (the plain-COPY
 * cost, no staging, no conflict handling); rows the guard would refuse are
 * dropped (an unchanged re-sync then costs one lookup and no row locks); the
 * rest, moved to the front of refs, go through staging and the guarded
 * upsert, which checks the guard again. A new key has no stored row, so the
 * guard would write it anyway; the only race, another writer inserting the
 * same key meanwhile, ends in a unique violation and a retry without the
 * fast path. */
static int cmp_key(const void *pa, const void *pb)
{
    const struct tds_bytes *const *a = pa, *const *b = pb;
    int c = cmp_val(&(*a)[0], &(*b)[0]);

    return c ? c : cmp_val(&(*a)[1], &(*b)[1]);
}

/* The (org, id) keys of the batch's DETAIL rows of table t, sorted: a LIST
 * row of one of them is not COPYed as new ahead of them (the DETAIL goes
 * first, step 4, and the guard never lets a LIST row over a DETAIL one of
 * the same time). *keys NULL and *n 0 when there are none. */
static int detail_keys(struct tds_apply *a, struct tds_bmsg *const *msgs, const struct group *gs,
                       size_t n_groups, const struct tds_table *t,
                       const struct tds_bytes ***keys, size_t *n)
{
    size_t total = 0, k = 0;
    const struct tds_bytes **v;

    *keys = NULL;
    *n = 0;
    for (size_t i = 0; i < n_groups; i++)
        if (a->sigs[gs[i].sig].t == t && a->sigs[gs[i].sig].kind == TDS_ROWS_DETAIL)
            total += gs[i].n;
    if (total == 0)
        return 0;
    if (!(v = malloc(total * sizeof(*v))))
        return -ENOMEM;
    for (size_t i = 0; i < n_groups; i++)
        if (a->sigs[gs[i].sig].t == t && a->sigs[gs[i].sig].kind == TDS_ROWS_DETAIL)
            for (size_t j = 0; j < gs[i].n; j++)
                v[k++] = ref_vals(msgs, &gs[i].refs[j]);
    qsort(v, k, sizeof(*v), cmp_key);
    *keys = v;
    *n = k;
    return 0;
}

static int copy_fast(struct tds_apply *a, struct tds_bmsg *const *msgs, const struct group *gs,
                     size_t n_groups, struct group *g, bool probe, struct tds_apply_result *res)
{
    /* Columns of a DETAIL/LIST row: org_id, id, modified_time, raw,
     * content_hash, is_detail (tds_sqlgen_check). */
    static const size_t lookup_col[] = {0, 1, 2, 4, 5};
    const struct sig *sg = &a->sigs[g->sig];
    struct ref *fresh = NULL;
    uint8_t *state = NULL; /* 0 new key, 1 existing and newer, 2 existing and not newer */
    PGresult *r = NULL;
    const char *vals[6];
    char name[32], obs[48];
    size_t k_old = 0, k_new = 0;
    int rc = 0;

    for (size_t p = 0; p < 6; p++) {
        tds_buf_reset(&a->params[p]);
        tds_copytext_array_begin(&a->params[p]);
    }
    for (size_t i = 0; i < g->n && rc == 0; i++) {
        const struct tds_bytes *v = ref_vals(msgs, &g->refs[i]);
        bool known = observed_text(msgs, &g->refs[i], obs, sizeof(obs));

        for (size_t p = 0; p < 5 && rc == 0; p++)
            rc = tds_copytext_array_elem(&a->params[p], i == 0, v[lookup_col[p]].p,
                                         v[lookup_col[p]].n);
        if (rc == 0)
            rc = tds_copytext_array_elem(&a->params[5], i == 0, known ? obs : NULL,
                                         known ? strlen(obs) : 0);
    }
    for (size_t p = 0; p < 6 && rc == 0; p++)
        if ((rc = tds_copytext_array_end(&a->params[p])) == 0)
            rc = tds_buf_add(&a->params[p], "", 1);
    if (rc != 0)
        return rc;
    for (size_t p = 0; p < 6; p++)
        vals[p] = a->params[p].p;
    snprintf(name, sizeof(name), "x_%zu", sg->tidx);
    if ((rc = run_prepared(a, name, 6, vals, &r, res, "could not look up existing rows")) != 0)
        return rc;
    state = calloc(g->n, 1);
    fresh = malloc(g->n * sizeof(*fresh));
    if (!state || !fresh) {
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        long long n = strtoll(PQgetvalue(r, i, 0), NULL, 10);

        if (n >= 1 && (size_t)n <= g->n)
            state[n - 1] = PQgetvalue(r, i, 1)[0] == 't' ? 1 : 2;
    }
    if (sg->kind == TDS_ROWS_LIST) {
        const struct tds_bytes **dk = NULL;
        size_t n_dk = 0;

        if ((rc = detail_keys(a, msgs, gs, n_groups, sg->t, &dk, &n_dk)) != 0)
            goto out;
        for (size_t i = 0; n_dk && i < g->n; i++) {
            const struct tds_bytes *v = ref_vals(msgs, &g->refs[i]);

            if (state[i] == 0 && bsearch(&v, dk, n_dk, sizeof(*dk), cmp_key))
                state[i] = 1; /* after its DETAIL, through the guarded upsert */
        }
        free(dk);
    }
    for (size_t i = 0; i < g->n; i++) {
        const struct tds_bytes *v = ref_vals(msgs, &g->refs[i]);

        if (state[i] == 0 && v[0].p && v[1].p)
            fresh[k_new++] = g->refs[i];
        else if (state[i] != 2)
            g->refs[k_old++] = g->refs[i];
        /* state 2: the stored row wins; the guard only gets stricter as
         * other writers commit newer versions, so it is safe to drop it
         * here instead of locking the row for an update that never comes. */
    }
    g->n_stage = k_old;
    g->n_fast = k_new;
    /* An update stream gains nothing from the lookup: skip it for a while. */
    if (k_old * 2 > g->n)
        a->fast_skip[sg->tidx] = FAST_SKIP_BATCHES;
    if (k_new == 0)
        goto out;
    if ((rc = copy_into_table(a, msgs, sg, fresh, k_new, COPY_TARGET, res)) != 0)
        goto out;
    res->written[sg->tidx] += (int64_t)k_new;
    res->written_total += (int64_t)k_new;
    if (!probe)
        a->mods[sg->tidx] += (int64_t)k_new;
    for (size_t i = 0; i < k_new && !probe; i++) {
        const struct tds_bytes *v = ref_vals(msgs, &fresh[i]);

        if ((rc = tds_notify_add(a->notify, v[0].p, sg->t->name, v[1].p)) != 0)
            goto out;
    }
    /* A new key has no child rows yet (they cascade with their parent): the
     * children of this version are COPYed straight in (children_direct()),
     * with no DELETE and no staging. */
    if (sg->kind == TDS_ROWS_DETAIL && has_children(sg->t)) {
        g->fresh = fresh;
        fresh = NULL;
    }
out:
    PQclear(r);
    free(state);
    free(fresh);
    return rc;
}

/* Does the parent version in message m with key (org, id) sit in g->fresh? */
static bool is_fresh(struct tds_bmsg *const *msgs, const struct group *g, uint32_t m,
                     const struct tds_bytes *org, const struct tds_bytes *id)
{
    size_t lo = 0, hi = g->n_fast;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct tds_bytes *v = ref_vals(msgs, &g->fresh[mid]);
        int c = cmp_val(&v[0], org);

        if (c == 0)
            c = cmp_val(&v[1], id);
        if (c == 0)
            return g->fresh[mid].m == m;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* Child rows whose parent version was just COPYed as a new key (copy_fast)
 * go straight into the child table: nothing to replace, so no staging, no
 * DELETE, no join. The rest, moved to the front of refs (order kept), go
 * through staging and the child insert as before. */
static int children_direct(struct tds_apply *a, struct tds_bmsg *const *msgs,
                           const struct group *gs, size_t n_groups, struct group *g, bool probe,
                           struct tds_apply_result *res)
{
    const struct sig *sg = &a->sigs[g->sig];
    struct ref *direct;
    size_t k_stage = 0, k_direct = 0;
    bool any = false;
    int rc;

    for (size_t i = 0; i < n_groups; i++)
        any = any || (gs[i].fresh && gs[i].n_fast > 0 &&
                      strcmp(a->sigs[gs[i].sig].t->name, sg->t->parent) == 0);
    if (!any)
        return 0;
    if (!(direct = malloc(g->n * sizeof(*direct))))
        return -ENOMEM;
    for (size_t r = 0; r < g->n; r++) {
        const struct tds_bytes *v = ref_vals(msgs, &g->refs[r]);
        bool fresh = false;

        for (size_t i = 0; i < n_groups && !fresh; i++)
            fresh = gs[i].fresh && strcmp(a->sigs[gs[i].sig].t->name, sg->t->parent) == 0 &&
                    is_fresh(msgs, &gs[i], g->refs[r].m, &v[0], &v[1]);
        if (fresh)
            direct[k_direct++] = g->refs[r];
        else
            g->refs[k_stage++] = g->refs[r];
    }
    g->n_stage = k_stage;
    rc = 0;
    if (k_direct > 0) {
        rc = copy_into_table(a, msgs, sg, direct, k_direct, COPY_CHILD, res);
        if (rc == 0) {
            res->child_rows += (int64_t)k_direct;
            if (!probe)
                a->mods[sg->tidx] += (int64_t)k_direct;
        }
    }
    free(direct);
    return rc;
}

/* Room for n_par parameters in avals and abuf (avals keeps 4 more). */
static int params_room(struct tds_apply *a, size_t n_par)
{
    if (a->n_abuf < n_par) {
        /* avals first: n_abuf only grows once both arrays are big enough */
        const char **v = realloc(a->avals, (n_par + 4) * sizeof(*v));
        struct tds_buf *b;

        if (!v)
            return -ENOMEM;
        a->avals = v;
        if (!(b = realloc(a->abuf, n_par * sizeof(*b))))
            return -ENOMEM;
        a->abuf = b;
        memset(&a->abuf[a->n_abuf], 0, (n_par - a->n_abuf) * sizeof(*b));
        a->n_abuf = n_par;
    }
    return 0;
}

/* refs[0..n) of a small group as array literals in a->avals[0..n_cols+3)
 * (tds_sqlgen_unnest_rows), with room for 4 more values after them. */
static int build_arrays(struct tds_apply *a, struct tds_bmsg *const *msgs, const struct group *g,
                        size_t n)
{
    const struct sig *sg = &a->sigs[g->sig];
    size_t n_par = sg->n_cols + 3;
    char num[24], obs[48];
    int rc = params_room(a, n_par);

    for (size_t p = 0; p < n_par && rc == 0; p++) {
        tds_buf_reset(&a->abuf[p]);
        rc = tds_copytext_array_begin(&a->abuf[p]);
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct ref *rf = &g->refs[i];
        const struct tds_bytes *v = ref_vals(msgs, rf);
        bool known = observed_text(msgs, rf, obs, sizeof(obs));

        snprintf(num, sizeof(num), "%u", rf->m);
        rc = tds_copytext_array_elem(&a->abuf[0], i == 0, num, strlen(num));
        snprintf(num, sizeof(num), "%u", rf->r);
        if (rc == 0)
            rc = tds_copytext_array_elem(&a->abuf[1], i == 0, num, strlen(num));
        if (rc == 0)
            rc = tds_copytext_array_elem(&a->abuf[2], i == 0, known ? obs : NULL,
                                         known ? strlen(obs) : 0);
        for (size_t c = 0; c < sg->n_cols && rc == 0; c++)
            rc = tds_copytext_array_elem(&a->abuf[3 + c], i == 0, v[c].p, v[c].n);
    }
    for (size_t p = 0; p < n_par && rc == 0; p++) {
        if ((rc = tds_copytext_array_end(&a->abuf[p])) == 0)
            rc = tds_buf_add(&a->abuf[p], "", 1);
        a->avals[p] = a->abuf[p].p;
    }
    return rc;
}

/* The parameters of tds_sqlgen_one_row for refs[0] of g: its values as they
 * are (NUL-terminated copies; NULL stays NULL), no array to escape. */
static int build_row(struct tds_apply *a, struct tds_bmsg *const *msgs, const struct group *g)
{
    const struct sig *sg = &a->sigs[g->sig];
    const struct ref *rf = &g->refs[0];
    const struct tds_bytes *v = ref_vals(msgs, rf);
    char obs[48];
    bool known = observed_text(msgs, rf, obs, sizeof(obs));
    int rc = params_room(a, sg->n_cols + 3);

    for (size_t p = 0; p < sg->n_cols + 3 && rc == 0; p++) {
        const char *x = NULL;
        size_t n = 0;
        char num[24];

        if (p < 2) {
            n = (size_t)snprintf(num, sizeof(num), "%u", p == 0 ? rf->m : rf->r);
            x = num;
        } else if (p == 2) {
            x = known ? obs : NULL;
            n = known ? strlen(obs) : 0;
        } else {
            x = v[p - 3].p;
            n = v[p - 3].n;
        }
        tds_buf_reset(&a->abuf[p]);
        if (x && (rc = tds_buf_add(&a->abuf[p], x, n)) == 0)
            rc = tds_buf_add(&a->abuf[p], "", 1);
        a->avals[p] = x ? a->abuf[p].p : NULL;
    }
    return rc;
}

/* Stage refs[0..n) of a small group with the prepared INSERT of arrays
 * (tds_sqlgen_stage_insert): queued, it goes out with the upsert. */
static int stage_arrays(struct tds_apply *a, struct tds_bmsg *const *msgs, const struct group *g,
                        size_t n, struct tds_apply_result *res)
{
    const struct sig *sg = &a->sigs[g->sig];
    int rc = build_arrays(a, msgs, g, n);

    if (rc != 0)
        return rc;
    return run_prepared(a, sg->stage_ins, (int)sg->n_cols + 3, a->avals, NULL, res,
                        "could not stage rows");
}

static int copy_group(struct tds_apply *a, struct tds_bmsg *const *msgs, struct group *gs,
                      size_t n_groups, struct group *g, bool probe, struct tds_apply_result *res)
{
    const struct sig *sg = &a->sigs[g->sig];
    struct sort_ctx ctx = {msgs};
    int rc;

    qsort_r(g->refs, g->n, sizeof(*g->refs), cmp_ref, &ctx);
    g->dups = false;
    for (size_t i = 1; i < g->n && !sg->t->parent; i++) {
        const struct tds_bytes *p = ref_vals(msgs, &g->refs[i - 1]), *q = ref_vals(msgs, &g->refs[i]);

        if (cmp_val(&p[0], &q[0]) == 0 && cmp_val(&p[1], &q[1]) == 0) {
            g->dups = true;
            break;
        }
    }
    g->n_stage = g->n;
    g->n_fast = 0;
    g->direct = false;
    free(g->fresh);
    g->fresh = NULL;
    if (sg->t->parent && ((rc = refresh_fk_plans(a, sg->t, res)) != 0 ||
                          (rc = children_direct(a, msgs, gs, n_groups, g, probe, res)) != 0))
        return rc;
    if (!sg->t->parent && sg->kind != TDS_ROWS_DELETE && !g->dups && !a->no_fast &&
        g->n >= FAST_MIN_ROWS) {
        if (a->fast_skip[sg->tidx] > 0)
            a->fast_skip[sg->tidx]--;
        else if ((rc = copy_fast(a, msgs, gs, n_groups, g, probe, res)) != 0)
            return rc;
    }
    if (g->n_stage == 0)
        return 0;
    /* A small group goes to its table as parameters at its turn (run_upsert),
     * unless a key comes twice: the collapse needs the staging table. */
    if (g->n_stage < ARRAY_MAX_ROWS && (sg->t->parent || !g->dups)) {
        g->direct = true;
        return 0;
    }
    /* committed (then DELETEd) or rolled back, they are dead rows now */
    a->sigs[g->sig].dead += g->n_stage;
    if (g->n_stage < ARRAY_MAX_ROWS)
        return stage_arrays(a, msgs, g, g->n_stage, res);
    tds_buf_reset(&a->buf);
    if (tds_sqlgen_copy(&a->buf, sg->stg) != 0 || tds_buf_add(&a->buf, "", 1) != 0)
        return -ENOMEM;
    {
        char *sql = strdup(a->buf.p);

        rc = sql ? copy_rows(a, sql, msgs, g->refs, g->n_stage, sg->n_cols, COPY_STAGING, res)
                 : -ENOMEM;
        free(sql);
    }
    return rc;
}

/* Run a prepared statement. Without out it is only queued (see "round
 * trips"); with out, it goes out with everything queued before it and on
 * success *out holds its result (caller clears). */
static int run_prepared(struct tds_apply *a, const char *name, int n, const char *const *vals,
                        PGresult **out, struct tds_apply_result *res, const char *what)
{
    int rc = pipe_start(a, res);

    if (rc == 0)
        rc = pipe_send(a, name, NULL, n, vals, what, res);
    if (!out)
        return rc;
    *out = NULL;
    return a->piped ? pipe_finish(a, rc, out, res) : rc;
}

/* keys: the written parents (org ids, ids, message indexes) for a child
 * set's insert; NULL for a top-level table. */
static int run_upsert(struct tds_apply *a, struct tds_bmsg *const *msgs, const struct sig *sg,
                      const struct group *g, const char *const *keys,
                      struct tds_apply_result *res, bool probe)
{
    const char *name = sg->upsert;
    const char *const *vals = keys;
    int n_vals = keys ? 3 : 0;
    char what[96];
    PGresult *r = NULL;
    int rc;

    if (g->n_stage == 0)
        return 0;
    if (g->direct) {
        /* the rows as arrays, then the written parents' keys if any */
        if ((rc = build_arrays(a, msgs, g, g->n_stage)) != 0)
            return rc;
        n_vals = (int)sg->n_cols + 3;
        for (int k = 0; keys && k < 3; k++)
            a->avals[n_vals++] = keys[k];
        name = sg->direct;
        vals = a->avals;
    }
    if (a->piped && sg->t->parent) /* counted when its answer is read */
        return pipe_queue(a, name, NULL, n_vals, vals,
                          (struct pipe_stmt){.what = "could not write child rows", .child = sg->t,
                                             .tidx = sg->tidx, .mods = !probe},
                          res);
    snprintf(what, sizeof(what), "could not write zoho.%s rows", sg->t->name);
    if (g->dups && !g->direct &&
        (rc = run_prepared(a, sg->collapse, 0, NULL, NULL, res, what)) != 0)
        return rc;
    if ((rc = run_prepared(a, name, n_vals, vals, &r, res, what)) != 0)
        return rc;
    if (sg->t->parent) {
        long long n = strtoll(PQcmdTuples(r), NULL, 10);

        res->child_rows += n;
        if (!probe)
            a->mods[sg->tidx] += n;
    } else {
        int n = PQntuples(r);

        if (!probe)
            a->mods[sg->tidx] += n;
        res->written[sg->tidx] += n;
        res->written_total += n;
        if (n > 0 && sg->kind == TDS_ROWS_DETAIL && has_children(sg->t))
            a->wk_groups++;
        for (int i = 0; i < n && sg->kind == TDS_ROWS_DETAIL && has_children(sg->t); i++) {
            for (int k = 0; k < 3; k++)
                if (tds_buf_add(&a->wk, PQgetvalue(r, i, k), (size_t)PQgetlength(r, i, k) + 1) !=
                    0) {
                    PQclear(r);
                    return -ENOMEM;
                }
            a->n_wk++;
        }
        for (int i = 0; i < n && !probe; i++)
            if (tds_notify_add(a->notify, PQgetvalue(r, i, 0), sg->t->name,
                               PQgetvalue(r, i, 1)) != 0) {
                PQclear(r);
                return -ENOMEM;
            }
    }
    PQclear(r);
    return 0;
}

/* One written parent: its org id, id and message index (in wk). */
struct wkey {
    const char *org, *id, *m;
    size_t at;  /* its place in the order written */
    bool kept;
};

static int cmp_wkey(const void *pa, const void *pb)
{
    const struct wkey *x = pa, *y = pb;
    int c = strcmp(x->org, y->org);

    if (c == 0)
        c = strcmp(x->id, y->id);
    return c != 0 ? c : (x->at > y->at) - (x->at < y->at);
}

/* The written parents as the child step takes them: wkeys (array literals)
 * and wkey1 (the first WKEYS_ONE), each parent once. A parent is written by
 * two upserts of one transaction when the batch holds two versions of it in
 * sets of different columns (two groups: a rolling upgrade's old and new
 * processors), the older first; only the version written last is stored,
 * and only its child rows may be inserted (both used to be: the stored
 * parent kept the child rows of the version it replaced). */
static int wkeys_build(struct tds_apply *a)
{
    struct wkey *w;
    const char *p = a->wk.p;
    size_t n = 0;
    int rc = 0;

    if (!(w = malloc((a->n_wk ? a->n_wk : 1) * sizeof(*w))))
        return -ENOMEM;
    for (size_t i = 0; i < a->n_wk; i++) {
        w[i].org = p;
        p += strlen(p) + 1;
        w[i].id = p;
        p += strlen(p) + 1;
        w[i].m = p;
        p += strlen(p) + 1;
        w[i].at = i;
        w[i].kept = true;
    }
    if (a->wk_groups > 1) {
        qsort(w, a->n_wk, sizeof(*w), cmp_wkey);
        for (size_t i = 0; i + 1 < a->n_wk; i++)
            w[i].kept = strcmp(w[i].org, w[i + 1].org) != 0 || strcmp(w[i].id, w[i + 1].id) != 0;
    }
    for (int k = 0; k < 3 && rc == 0; k++) {
        tds_buf_reset(&a->wkeys[k]);
        rc = tds_copytext_array_begin(&a->wkeys[k]);
    }
    a->n_wkeys = 0;
    for (size_t i = 0; i < a->n_wk && rc == 0; i++) {
        const char *v[3] = {w[i].org, w[i].id, w[i].m};

        if (!w[i].kept)
            continue;
        for (int k = 0; k < 2 && n < WKEYS_ONE && rc == 0; k++) {
            tds_buf_reset(&a->wkey1[n][k]);
            rc = tds_buf_add(&a->wkey1[n][k], v[k], strlen(v[k]) + 1);
        }
        for (int k = 0; k < 3 && rc == 0; k++)
            rc = tds_copytext_array_elem(&a->wkeys[k], n == 0, v[k], strlen(v[k]));
        n++;
    }
    for (int k = 0; k < 3 && rc == 0; k++)
        if ((rc = tds_copytext_array_end(&a->wkeys[k])) == 0)
            rc = tds_buf_add(&a->wkeys[k], "", 1);
    a->n_wkeys = n;
    free(w);
    return rc ? -ENOMEM : 0;
}

/* ---- meta statements ---- */

static void params_reset(struct tds_apply *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tds_buf_reset(&a->params[i]);
        tds_copytext_array_begin(&a->params[i]);
    }
}

/* Append one element; text from outside is made valid UTF-8 first. */
static int elem(struct tds_buf *b, bool first, const char *s)
{
    char *clean;
    int rc;

    if (!s || tds_utf8_valid(s, strlen(s)))
        return tds_copytext_array_elem(b, first, s, s ? strlen(s) : 0);
    clean = tds_copytext_sanitize(s, strlen(s), 0);
    if (!clean)
        return -ENOMEM;
    rc = tds_copytext_array_elem(b, first, clean, strlen(clean));
    free(clean);
    return rc;
}

static int elem_i64(struct tds_buf *b, bool first, int64_t v)
{
    char num[32];

    snprintf(num, sizeof(num), "%lld", (long long)v);
    return tds_copytext_array_elem(b, first, num, strlen(num));
}

/* Queue prepared statement name with params[0..n) as its parameters. */
static int params_queue(struct tds_apply *a, const char *name, size_t n, struct pipe_stmt st,
                        struct tds_apply_result *res)
{
    const char *vals[META_PARAMS];
    int rc;

    for (size_t i = 0; i < n; i++) {
        if (tds_copytext_array_end(&a->params[i]) != 0 || tds_buf_add(&a->params[i], "", 1) != 0)
            return -ENOMEM;
        vals[i] = a->params[i].p;
    }
    if ((rc = pipe_start(a, res)) != 0)
        return rc;
    return pipe_queue(a, name, NULL, (int)n, vals, st, res);
}

static int params_run(struct tds_apply *a, const char *name, size_t n, struct tds_apply_result *res,
                      const char *what)
{
    return params_queue(a, name, n, (struct pipe_stmt){.what = what}, res);
}

/* ---- webhook duplicates and pages sent again ----
 *
 * A webhook's event is applied once. Zoho sends an event again when its
 * delivery timed out, and the retry may reach another ingress replica, which
 * knows nothing of the first; with the same modified_time (whole seconds)
 * and a later observation, the guard alone would let an older version back
 * over a newer one. So the event insert at the end of the transaction has
 * no ON CONFLICT: an event recorded by an earlier transaction (of any
 * writer; one in flight is waited for) fails it, with no round trip added
 * to the batches without one. The batch is then rolled back, the events
 * recorded are looked up, and it is written again without their rows. Each
 * is acked all the same, and counted. An event twice in one batch is
 * applied once, the first time.
 *
 * A page the fetcher sends again because its ack was lost (a writer that
 * died after COMMIT, an ack timeout under load) is known the same way, by
 * its message id in tds.applied_pages: its rows are guarded anyway, but its
 * counts in tds.sync_runs and its rows in tds.rejected would be added twice. */

enum src_kind { SRC_NONE, SRC_EVENT, SRC_PAGE };

/* The event id of a webhook's rows, or NULL: another kind of message, or
 * one written without its metadata. The source id is "ev-<org>:<event id>"
 * ("ev-<event id>" from an ingress journal older than that). */
static const char *event_of(const struct tds_bmsg *m)
{
    const struct tds_msg_rows *rw = &m->msg.u.rows;
    const char *id;
    size_t ol;

    if (m->msg.type != TDS_MSG_ROWS || m->meta_off || !rw->mode ||
        strcmp(rw->mode, "webhook") != 0 || !rw->src)
        return NULL;
    id = strncmp(rw->src, "ev-", 3) == 0 ? rw->src + 3 : rw->src;
    ol = rw->org ? strlen(rw->org) : 0;
    if (ol && strncmp(id, rw->org, ol) == 0 && id[ol] == ':')
        id += ol + 1;
    return id;
}

/* The page id of a page's rows (a sync run's, a fetch's), or NULL. A dead
 * letter's id is new each time: nothing to recognise. */
static const char *page_of(const struct tds_bmsg *m)
{
    const struct tds_msg_rows *rw = &m->msg.u.rows;

    if (m->msg.type != TDS_MSG_ROWS || m->meta_off || !rw->mode || !rw->src || !rw->src[0] ||
        strcmp(rw->mode, "webhook") == 0 || strcmp(rw->mode, "deadletter") == 0)
        return NULL;
    return rw->src;
}

/* What makes a message's metadata once-only: kind and id (NULL: none). */
static const char *src_of(const struct tds_bmsg *m, enum src_kind *kind)
{
    const char *id = event_of(m);

    *kind = id ? SRC_EVENT : (id = page_of(m)) ? SRC_PAGE : SRC_NONE;
    return id;
}

static const char *event_org(const struct tds_bmsg *m)
{
    return m->msg.u.rows.org ? m->msg.u.rows.org : "";
}

static int cmp_src(const void *pa, const void *pb, void *ud)
{
    struct tds_bmsg *const *msgs = ud;
    size_t x = *(const size_t *)pa, y = *(const size_t *)pb;
    enum src_kind kx, ky;
    const char *ix = src_of(msgs[x], &kx), *iy = src_of(msgs[y], &ky);
    int c = (kx > ky) - (kx < ky);

    if (c == 0 && kx == SRC_EVENT)
        c = strcmp(event_org(msgs[x]), event_org(msgs[y]));
    if (c == 0)
        c = strcmp(ix, iy);
    return c != 0 ? c : (x > y) - (x < y);
}

/* a->dup for msgs[0..n): each event or page after its first time in the
 * batch. */
static int events_mark(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n)
{
    size_t *idx, k = 0;
    enum src_kind kind;

    a->dup = NULL;
    for (size_t i = 0; i < n; i++)
        k += src_of(msgs[i], &kind) != NULL;
    if (k == 0)
        return 0;
    if (!(a->dup = calloc(n, 1)) || !(idx = malloc(k * sizeof(*idx)))) {
        free(a->dup);
        a->dup = NULL;
        return -ENOMEM;
    }
    k = 0;
    for (size_t i = 0; i < n; i++)
        if (src_of(msgs[i], &kind))
            idx[k++] = i;
    qsort_r(idx, k, sizeof(*idx), cmp_src, (void *)msgs);
    for (size_t j = 1; j < k; j++) {
        size_t x = idx[j - 1], y = idx[j];
        enum src_kind kx, ky;
        const char *ix = src_of(msgs[x], &kx), *iy = src_of(msgs[y], &ky);

        if (kx == ky && strcmp(ix, iy) == 0 &&
            (kx != SRC_EVENT || strcmp(event_org(msgs[x]), event_org(msgs[y])) == 0))
            a->dup[y] = 1;
    }
    free(idx);
    return 0;
}

/* After the event or page insert failed on a recorded one: mark in a->dup
 * the events and pages of the batch that are recorded (outside any
 * transaction, so what other transactions committed). *found: how many were
 * not marked before. */
static int events_lookup(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n,
                         size_t *found, struct tds_apply_result *res)
{
    size_t *map = malloc((n ? n : 1) * sizeof(*map));
    int rc = 0;

    *found = 0;
    if (!map)
        return -ENOMEM;
    for (enum src_kind want = SRC_EVENT; want <= SRC_PAGE && rc == 0; want++) {
        size_t k = 0, np = want == SRC_EVENT ? 2 : 1;
        const char *vals[2];
        PGresult *r;

        params_reset(a, 2);
        for (size_t i = 0; i < n && rc == 0; i++) {
            enum src_kind kind;
            const char *id = src_of(msgs[i], &kind);

            if (kind != want || a->dup[i])
                continue;
            rc = elem(&a->params[0], k == 0, id);
            if (rc == 0 && want == SRC_EVENT)
                rc = elem(&a->params[1], k == 0, msgs[i]->msg.u.rows.org);
            map[k++] = i;
        }
        for (size_t p = 0; p < np && rc == 0; p++) {
            if (tds_copytext_array_end(&a->params[p]) != 0 ||
                tds_buf_add(&a->params[p], "", 1) != 0)
                rc = -ENOMEM;
            vals[p] = a->params[p].p;
        }
        if (rc != 0 || k == 0)
            continue;
        r = PQexecPrepared(a->conn, want == SRC_EVENT ? "m_webhook_seen" : "m_pages_seen",
                           (int)np, vals, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = fail(a, r, res, want == SRC_EVENT ? "could not look up webhook events"
                                                   : "could not look up applied pages");
            break;
        }
        for (int t = 0; t < PQntuples(r); t++) {
            long long e = strtoll(PQgetvalue(r, t, 0), NULL, 10);

            if (e >= 1 && (size_t)e <= k && !a->dup[map[e - 1]]) {
                a->dup[map[e - 1]] = 1;
                (*found)++;
            }
        }
        PQclear(r);
    }
    free(map);
    return rc;
}

/* After COMMIT: mark and count the duplicates left out, and say which at
 * debug level. */
static void events_count(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n)
{
    size_t k_ev = 0, k_pg = 0;

    for (size_t i = 0; a->dup && i < n; i++) {
        const struct tds_msg_rows *rw = &msgs[i]->msg.u.rows;
        struct tds_log_ctx ctx = {rw->org, rw->entity, rw->run};
        enum src_kind kind;
        const char *id;

        if (!a->dup[i])
            continue;
        msgs[i]->duplicate = true;
        id = src_of(msgs[i], &kind);
        if (kind == SRC_EVENT)
            k_ev++;
        else
            k_pg++;
        tds_log(TDS_LOG_DEBUG, &ctx, "%s %s already applied, skipping",
                kind == SRC_EVENT ? "webhook event" : "page", id);
    }
    if (k_ev > 0 && a->m_dups)
        tds_series_inc(a->m_dups, (double)k_ev);
    if (k_pg > 0 && a->m_page_dups)
        tds_series_inc(a->m_page_dups, (double)k_pg);
}

static const char *webhook_zoho_id(const struct tds_bmsg *m)
{
    const struct tds_msg_rows *rows = &m->msg.u.rows;

    for (size_t s = 0; s < rows->n_sets; s++)
        if (m->tables[s] && !m->tables[s]->parent && rows->sets[s].n_rows > 0)
            return rows->sets[s].vals[1].p;
    return NULL;
}

static int meta_webhooks(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n,
                         struct tds_apply_result *res)
{
    size_t k = 0;
    int rc = 0;

    params_reset(a, 5);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct tds_msg_rows *rw = &msgs[i]->msg.u.rows;
        const char *ev = event_of(msgs[i]);

        if (!ev || (a->dup && a->dup[i]))
            continue;
        rc = elem(&a->params[0], k == 0, ev);
        if (rc == 0)
            rc = elem(&a->params[1], k == 0, rw->org);
        if (rc == 0)
            rc = elem(&a->params[2], k == 0, rw->entity);
        if (rc == 0)
            rc = elem(&a->params[3], k == 0, webhook_zoho_id(msgs[i]));
        if (rc == 0)
            rc = elem_i64(&a->params[4], k == 0, rw->received_ms);
        k++;
    }
    if (rc != 0 || k == 0)
        return rc;
    return params_queue(a, "m_webhook", 5,
                        (struct pipe_stmt){.what = "could not record webhook events",
                                           .events = true},
                        res);
}

static int meta_pages(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n,
                      struct tds_apply_result *res)
{
    size_t k = 0;
    int rc = 0;

    params_reset(a, 5);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct tds_msg_rows *rw = &msgs[i]->msg.u.rows;
        const char *pg = page_of(msgs[i]);

        if (!pg || (a->dup && a->dup[i]))
            continue;
        rc = elem(&a->params[0], k == 0, pg);
        if (rc == 0)
            rc = elem(&a->params[1], k == 0, rw->org);
        if (rc == 0)
            rc = elem(&a->params[2], k == 0, rw->entity);
        if (rc == 0)
            rc = elem(&a->params[3], k == 0, rw->run);
        if (rc == 0)
            rc = elem(&a->params[4], k == 0, rw->mode);
        k++;
    }
    if (rc != 0 || k == 0)
        return rc;
    return params_queue(a, "m_pages", 5,
                        (struct pipe_stmt){.what = "could not record applied pages",
                                           .events = true},
                        res);
}

/* Whether msgs[i] is left out of this run as applied already. */
static bool is_dup(const struct tds_apply *a, size_t i)
{
    return a->dup && a->dup[i];
}

static int meta_rejects(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n,
                        struct tds_apply_result *res)
{
    size_t k = 0;
    int rc = 0;

    params_reset(a, 7);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct tds_bmsg *m = msgs[i];
        const struct tds_msg_rows *rw = &m->msg.u.rows;
        bool rows = m->msg.type == TDS_MSG_ROWS;

        if (is_dup(a, i))
            continue;
        for (size_t j = 0; rows && j < rw->n_rejects && rc == 0; j++, k++) {
            const struct tds_msg_reject *pr = &rw->rejects[j];
            char *raw = pr->raw.p ? tds_copytext_sanitize(pr->raw.p, pr->raw.n, 0) : NULL;

            if (pr->raw.p && !raw)
                return -ENOMEM;
            rc = elem(&a->params[0], k == 0, "processor");
            if (rc == 0) rc = elem(&a->params[1], k == 0, rw->org);
            if (rc == 0) rc = elem(&a->params[2], k == 0, pr->entity ? pr->entity : rw->entity);
            if (rc == 0) rc = elem(&a->params[3], k == 0, pr->zoho_id);
            if (rc == 0) rc = elem(&a->params[4], k == 0, pr->reason ? pr->reason : "rejected");
            if (rc == 0) rc = elem(&a->params[5], k == 0, raw);
            if (rc == 0) rc = elem(&a->params[6], k == 0, rw->src);
            free(raw);
        }
        for (size_t j = 0; j < m->n_rej && rc == 0; j++, k++) {
            const struct tds_wreject *wr = &m->rej[j];

            rc = elem(&a->params[0], k == 0, "writer");
            if (rc == 0) rc = elem(&a->params[1], k == 0, rows ? rw->org : NULL);
            if (rc == 0) rc = elem(&a->params[2], k == 0, wr->entity ? wr->entity : rows ? rw->entity : NULL);
            if (rc == 0) rc = elem(&a->params[3], k == 0, wr->zoho_id);
            if (rc == 0) rc = elem(&a->params[4], k == 0, wr->reason);
            if (rc == 0) rc = elem(&a->params[5], k == 0, wr->raw);
            if (rc == 0) rc = elem(&a->params[6], k == 0, rows ? rw->src : NULL);
        }
    }
    if (rc != 0 || k == 0)
        return rc;
    return params_run(a, "m_reject", 7, res, "could not record rejects");
}

static int meta_runs(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n,
                     struct tds_apply_result *res)
{
    size_t k = 0;
    int rc = 0;

    /* One element per run (ON CONFLICT may touch a row once per statement). */
    params_reset(a, 7);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct tds_msg_rows *rw = &msgs[i]->msg.u.rows;
        int64_t pages = 0, written = 0, rejected = 0;
        bool seen = false;

        if (msgs[i]->msg.type != TDS_MSG_ROWS || msgs[i]->meta_off || !rw->run || is_dup(a, i))
            continue;
        for (size_t j = 0; j < i && !seen; j++)
            seen = msgs[j]->msg.type == TDS_MSG_ROWS && !msgs[j]->meta_off && msgs[j]->msg.u.rows.run &&
                   !is_dup(a, j) && strcmp(msgs[j]->msg.u.rows.run, rw->run) == 0;
        if (seen)
            continue;
        for (size_t j = i; j < n; j++) {
            const struct tds_bmsg *m = msgs[j];

            if (m->msg.type != TDS_MSG_ROWS || m->meta_off || !m->msg.u.rows.run || is_dup(a, j) ||
                strcmp(m->msg.u.rows.run, rw->run) != 0)
                continue;
            pages += !m->msg.u.rows.final;
            written += tds_bmsg_records_written(m);
            rejected += (int64_t)(m->msg.u.rows.n_rejects + tds_bmsg_records_rejected(m));
        }
        rc = elem(&a->params[0], k == 0, rw->run);
        if (rc == 0) rc = elem(&a->params[1], k == 0, rw->org);
        if (rc == 0) rc = elem(&a->params[2], k == 0, rw->entity);
        if (rc == 0) rc = elem(&a->params[3], k == 0, rw->mode);
        if (rc == 0) rc = elem_i64(&a->params[4], k == 0, pages);
        if (rc == 0) rc = elem_i64(&a->params[5], k == 0, written);
        if (rc == 0) rc = elem_i64(&a->params[6], k == 0, rejected);
        k++;
    }
    if (rc != 0 || k == 0)
        return rc;
    return params_run(a, "m_runs", 7, res, "could not update sync runs");
}

static bool final_page(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t i)
{
    const struct tds_msg_rows *rw = &msgs[i]->msg.u.rows;

    return msgs[i]->msg.type == TDS_MSG_ROWS && !msgs[i]->meta_off && rw->final && rw->org &&
           rw->entity && !is_dup(a, i);
}

/* The batch's final pages: every one completes its run (params[5]), and
 * each (org, entity) advances tds.sync_state once (an upsert may not touch
 * a row twice): the last page's run, the last cursor any of them carries
 * (a page without one keeps the one before), and last_full_at when any of
 * them ended a full sync. Two runs of one entity end in one batch when the
 * fetcher starts the next (a queued reconcile) before the first's ack. */
/* A stock run (items fetched again for tds.stock_refresh) is no sync of its
 * entity: it completes, but leaves tds.sync_state as it was, and does not
 * stand in for another run's final page of the same batch. */
static bool stock_run(const struct tds_msg_rows *rw)
{
    return rw->mode && strcmp(rw->mode, "stock") == 0;
}

static int meta_finals(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n,
                       struct tds_apply_result *res)
{
    size_t k = 0;
    int rc = 0;

    params_reset(a, 6);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct tds_msg_rows *rw = &msgs[i]->msg.u.rows;
        const char *cursor = NULL;
        bool later = false, full = false;

        if (!final_page(a, msgs, i))
            continue;
        if (rw->run)
            rc = elem(&a->params[5], a->params[5].len == 1, rw->run);
        if (stock_run(rw))
            continue;
        for (size_t j = i + 1; j < n && !later; j++) {
            const struct tds_msg_rows *o = &msgs[j]->msg.u.rows;

            later = final_page(a, msgs, j) && !stock_run(o) && strcmp(o->org, rw->org) == 0 &&
                    strcmp(o->entity, rw->entity) == 0;
        }
        if (later || rc != 0)
            continue;
        for (size_t j = 0; j <= i; j++) {
            const struct tds_msg_rows *o = &msgs[j]->msg.u.rows;

            if (!final_page(a, msgs, j) || stock_run(o) || strcmp(o->org, rw->org) != 0 ||
                strcmp(o->entity, rw->entity) != 0)
                continue;
            if (o->cursor)
                cursor = o->cursor;
            full = full || (o->mode && strcmp(o->mode, "full") == 0);
        }
        rc = elem(&a->params[0], k == 0, rw->org);
        if (rc == 0) rc = elem(&a->params[1], k == 0, rw->entity);
        if (rc == 0) rc = elem(&a->params[2], k == 0, cursor);
        if (rc == 0) rc = elem(&a->params[3], k == 0, rw->run);
        if (rc == 0) rc = elem(&a->params[4], k == 0, full ? "full" : rw->mode);
        k++;
    }
    if (rc != 0)
        return rc;
    if (k > 0 && (rc = params_run(a, "m_final_state", 5, res, "could not advance sync cursors")) != 0)
        return rc;
    if (a->params[5].len == 1)
        return 0; /* no final page named its run */
    if (tds_copytext_array_end(&a->params[5]) != 0 || tds_buf_add(&a->params[5], "", 1) != 0)
        return -ENOMEM;
    {
        const char *vals[1] = {a->params[5].p};

        return run_prepared(a, "m_final_runs", 1, vals, NULL, res, "could not complete sync runs");
    }
}

static int meta_notify(struct tds_apply *a, struct tds_apply_result *res)
{
    /* tds_notify_payloads sets nothing when it fails */
    char **payloads = NULL;
    size_t n = 0;
    int rc = tds_notify_payloads(a->notify, &payloads, &n);

    if (rc == 0 && n > 0 && notify_off(a)) {
        res->notifies_dropped += (int64_t)n;
    } else if (rc == 0 && n > 0) {
        a->txn_notified = true;
        params_reset(a, 1);
        for (size_t i = 0; rc == 0 && i < n; i++)
            rc = elem(&a->params[0], i == 0, payloads[i]);
        if (rc == 0)
            rc = params_run(a, "m_notify", 1, res, "could not notify tds_changes");
        if (rc == 0)
            res->notifies += (int64_t)n;
    }
    tds_notify_payloads_free(payloads, n);
    return rc;
}

/* ---- the end of a transaction; staging upkeep ---- */

/* The meta statements, the DELETEs that empty the staging tables this
 * transaction filled, and COMMIT: one pipeline, one round trip. After a
 * failed statement the server skips the rest, COMMIT included, and the
 * caller rolls back. */
static int finish_txn(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n,
                      const struct group *gs, size_t n_groups, struct tds_apply_result *res)
{
    PGresult *last = NULL;
    char sql[64];
    int rc = pipe_start(a, res);

    if (rc != 0 && !a->piped)
        return rc;
    if (rc == 0 && (rc = meta_webhooks(a, msgs, n, res)) == 0 &&
        (rc = meta_pages(a, msgs, n, res)) == 0 &&
        (rc = meta_rejects(a, msgs, n, res)) == 0 && (rc = meta_runs(a, msgs, n, res)) == 0 &&
        (rc = meta_finals(a, msgs, n, res)) == 0)
        rc = meta_notify(a, res);
    for (size_t i = 0; i < n_groups && rc == 0; i++) {
        if (gs[i].n_stage == 0 || gs[i].direct)
            continue;
        snprintf(sql, sizeof(sql), "DELETE FROM %s", a->sigs[gs[i].sig].stg);
        rc = pipe_send(a, NULL, sql, 0, NULL, "could not empty a staging table", res);
    }
    if (rc == 0)
        rc = pipe_send(a, "t_commit", NULL, 0, NULL, "could not commit", res);
    if (!a->lsn_ok)
        return pipe_finish(a, rc, NULL, res);
    /* Where the commit is in the WAL, in the same round trip: what the ack
     * waits for when the commit did not wait for its flush (writer.c). */
    if (rc == 0)
        rc = pipe_queue(a, "t_lsn", NULL, 0, NULL,
                        (struct pipe_stmt){.what = "could not read the WAL position",
                                           .after_commit = true},
                        res);
    a->after_commit_failed = false;
    rc = pipe_finish(a, rc, &last, res);
    if (rc == 0 && last && PQntuples(last) == 1 && PQnfields(last) == 3 &&
        tds_apply_parse_lsn(PQgetvalue(last, 0, 1), &res->commit_lsn) == 0 &&
        tds_apply_parse_lsn(PQgetvalue(last, 0, 2), &res->flushed_lsn) == 0) {
        res->lsn_known = true;
        res->durable = strcmp(PQgetvalue(last, 0, 0), "t") == 0;
        res->session = a->session;
    } else if (rc == 0) {
        /* Committed all the same: acked at once, as before the check. */
        a->lsn_ok = false;
        if (!a->lsn_warned)
            tds_warn("cannot read PostgreSQL's WAL position after COMMIT (%s): acks go out "
                     "when COMMIT returns from now on in this session, so with "
                     "synchronous_commit off a crash of PostgreSQL can lose acked rows",
                     a->after_commit_failed ? a->after_commit_error : "unexpected answer");
        a->lsn_warned = true;
    }
    PQclear(last);
    return rc;
}

/* Between transactions: TRUNCATE the staging tables whose dead rows add up.
 * A failure is logged and left for the next time (the rows are dead either
 * way); a lost connection shows at the next batch. */
static void truncate_staging(struct tds_apply *a)
{
    PGresult *r;
    int rc = 0;

    tds_buf_reset(&a->buf);
    for (size_t i = 0; i < a->n_sigs && rc == 0; i++)
        if (a->sigs[i].dead >= STAGE_DEAD_ROWS)
            rc = tds_buf_addf(&a->buf, "%s%s", a->buf.len ? ", " : "TRUNCATE ", a->sigs[i].stg);
    if (rc != 0 || a->buf.len == 0 || tds_buf_add(&a->buf, "", 1) != 0)
        return;
    r = PQexec(a->conn, a->buf.p);
    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        for (size_t i = 0; i < a->n_sigs; i++)
            if (a->sigs[i].dead >= STAGE_DEAD_ROWS)
                a->sigs[i].dead = 0;
    } else {
        const char *prim = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);

        tds_warn("could not truncate the staging tables (retried after the next batch): %s",
                 prim ? prim : "no connection");
    }
    PQclear(r);
}

/* ---- one transaction ---- */

/* A lone record: one DETAIL row of one top-level table, its child rows as
 * parameters, nothing staged (a webhook's batch at a low rate). Returns the
 * group of that row, or SIZE_MAX. */
static size_t one_flight_group(const struct tds_apply *a, const struct group *gs,
                               size_t n_groups)
{
    size_t top = SIZE_MAX;

    for (size_t i = 0; i < n_groups; i++) {
        const struct sig *sg = &a->sigs[gs[i].sig];

        if (gs[i].n_stage == 0 && gs[i].n_fast == 0)
            continue;
        if (!gs[i].direct || gs[i].n_fast > 0)
            return SIZE_MAX;
        if (sg->t->parent)
            continue;
        if (top != SIZE_MAX || gs[i].n_stage != 1 || sg->kind != TDS_ROWS_DETAIL)
            return SIZE_MAX;
        top = i;
    }
    for (size_t i = 0; i < n_groups && top != SIZE_MAX; i++) {
        const struct sig *sg = &a->sigs[gs[i].sig];

        if (gs[i].n_stage > 0 && sg->t->parent &&
            strcmp(sg->t->parent, a->sigs[gs[top].sig].t->name) != 0)
            return SIZE_MAX;
    }
    return top;
}

static int col_index(const struct sig *sg, const char *name)
{
    for (size_t c = 0; c < sg->n_cols; c++)
        if (strcmp(sg->cols[c], name) == 0)
            return (int)c;
    return -1;
}

/* The lone record's transaction in one round trip: BEGIN, its upsert, the
 * replacement of its child rows, the meta statements, NOTIFY and COMMIT all
 * go out before any answer is read. The two-trip way waits for the upsert's
 * RETURNING to learn whether the guard let the record through; here each
 * later statement asks the table instead (tds_sqlgen_child_delete_if_written
 * and the like). The upsert's rows are counted when the answers are read. */
static int run_one_flight(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n,
                          struct group *gs, size_t n_groups, size_t top,
                          struct tds_apply_result *res)
{
    const struct group *g = &gs[top];
    const struct sig *sg = &a->sigs[g->sig];
    const struct tds_bytes *v = ref_vals(msgs, &g->refs[0]);
    int hc = col_index(sg, "content_hash");
    const char *key[3];
    char m[16], what[96], **payloads = NULL, name[32];
    size_t n_payloads = 0;
    bool dropped = false;
    int rc;

    /* org id, id and content hash as C strings; NULL stays NULL */
    for (int k = 0; k < 3; k++) {
        const struct tds_bytes *x = &v[k < 2 ? k : hc];
        struct tds_buf *kb = &a->wkey1[k / 2][k % 2];

        tds_buf_reset(kb);
        if (x->p && (tds_buf_add(kb, x->p, x->n) != 0 || tds_buf_add(kb, "", 1) != 0))
            return -ENOMEM;
        key[k] = x->p ? kb->p : NULL;
    }
    snprintf(m, sizeof(m), "%u", g->refs[0].m);
    if ((rc = build_row(a, msgs, g)) != 0)
        return rc;
    snprintf(what, sizeof(what), "could not write zoho.%s rows", sg->t->name);
    if ((rc = pipe_start(a, res)) != 0 ||
        (rc = pipe_queue(a, sg->one, NULL, (int)sg->n_cols + 3, a->avals,
                         (struct pipe_stmt){.what = what, .parent = true, .tidx = sg->tidx,
                                            .mods = true},
                         res)) != 0)
        return rc;
    for (size_t ci = 0; ci < tds_table_count() && rc == 0; ci++) {
        const struct tds_table *c = tds_table_at(ci);

        if (!c->parent || strcmp(c->parent, sg->t->name) != 0)
            continue;
        if ((rc = refresh_fk_plans(a, c, res)) != 0 || (rc = pipe_start(a, res)) != 0)
            return rc;
        snprintf(name, sizeof(name), "cw_%zu", ci);
        rc = pipe_send(a, name, NULL, 3, key, "could not replace child rows", res);
        for (size_t i = 0; i < n_groups && rc == 0; i++) {
            const struct sig *cs = &a->sigs[gs[i].sig];
            int k;

            if (cs->t != c || gs[i].n_stage == 0)
                continue;
            if ((rc = build_arrays(a, msgs, &gs[i], gs[i].n_stage)) != 0)
                return rc;
            k = (int)cs->n_cols + 3;
            a->avals[k] = key[0];
            a->avals[k + 1] = key[1];
            a->avals[k + 2] = m;
            a->avals[k + 3] = key[2];
            rc = pipe_queue(a, cs->if_written, NULL, k + 4, a->avals,
                            (struct pipe_stmt){.what = "could not write child rows", .child = c,
                                               .tidx = cs->tidx, .mods = true},
                            res);
        }
    }
    /* the payload notify.c renders for this one row, sent if it was written */
    tds_notify_reset(a->notify);
    if (rc == 0 && (rc = tds_notify_add(a->notify, key[0], sg->t->name, key[1])) == 0 &&
        (rc = tds_notify_payloads(a->notify, &payloads, &n_payloads)) == 0) {
        const char *nv[4] = {payloads[0], key[0], key[1], key[2]};

        if (notify_off(a)) {
            dropped = true; /* counted below if the guard let the row through */
        } else {
            a->txn_notified = true;
            snprintf(name, sizeof(name), "nw_%zu", sg->tidx);
            rc = pipe_send(a, name, NULL, 4, nv, "could not notify tds_changes", res);
        }
    }
    if (payloads)
        tds_notify_payloads_free(payloads, n_payloads);
    tds_notify_reset(a->notify); /* finish_txn() has nothing more to notify */
    if (rc != 0)
        return rc; /* tds_apply_run() reads what is queued */
    rc = finish_txn(a, msgs, n, gs, n_groups, res);
    if (rc == 0 && res->written[sg->tidx] > 0 && a->txn_notified)
        res->notifies++;
    if (rc == 0 && res->written[sg->tidx] > 0 && dropped)
        res->notifies_dropped++;
    res->one_flight = rc == 0;
    return rc;
}

/* The lone record's org id and id go into its NOTIFY payload before
 * PostgreSQL has seen them: a key it would refuse (NULL, not UTF-8, a NUL
 * inside) takes the two-trip way instead, where the refusal makes it a
 * reject. */
static bool lone_key_ok(struct tds_bmsg *const *msgs, const struct group *g)
{
    const struct tds_bytes *v = ref_vals(msgs, &g->refs[0]);

    for (int k = 0; k < 2; k++)
        if (!v[k].p || !tds_utf8_valid(v[k].p, v[k].n) || memchr(v[k].p, '\0', v[k].n))
            return false;
    return true;
}

static int run_txn(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n, bool probe,
                   struct group *gs, size_t n_groups, struct tds_apply_result *res)
{
    PGresult *r;
    int rc;

    a->begun = false; /* BEGIN goes out with the first statement */
    for (size_t i = 0; i < n_groups; i++)
        if ((rc = copy_group(a, msgs, gs, n_groups, &gs[i], probe, res)) != 0)
            return rc;
    if (!probe) {
        size_t top = one_flight_group(a, gs, n_groups);

        if (top != SIZE_MAX && col_index(&a->sigs[gs[top].sig], "content_hash") >= 0 &&
            lone_key_ok(msgs, &gs[top]))
            return run_one_flight(a, msgs, n, gs, n_groups, top, res);
    }
    for (size_t ti = 0; ti < tds_table_count(); ti++) {
        const struct tds_table *t = tds_table_at(ti);
        static const enum tds_rowset_kind order[] = {TDS_ROWS_DETAIL, TDS_ROWS_CHILD,
                                                     TDS_ROWS_LIST, TDS_ROWS_DELETE};

        if (t->parent)
            continue;
        tds_buf_reset(&a->wk);
        a->n_wk = 0;
        a->wk_groups = 0;
        for (size_t o = 0; o < TDS_ARRAY_SIZE(order); o++) {
            if (order[o] == TDS_ROWS_CHILD) {
                /* children of parents the upserts wrote are replaced here;
                 * those of new keys were COPYed already (children_direct()) */
                const char *keys[3];

                if (a->n_wk == 0 || !has_children(t))
                    continue;
                if ((rc = wkeys_build(a)) != 0)
                    return rc;
                for (int k = 0; k < 3; k++)
                    keys[k] = a->wkeys[k].p;
                for (size_t ci = 0; ci < tds_table_count(); ci++) {
                    const struct tds_table *c = tds_table_at(ci);

                    if (c->parent && strcmp(c->parent, t->name) == 0 &&
                        (rc = refresh_fk_plans(a, c, res)) != 0)
                        return rc;
                }
                /* Each child table's DELETE, then its inserts, all child
                 * tables of t, queued: none needs another's answer, and
                 * they go out with the next answer awaited or COMMIT. */
                if ((rc = pipe_start(a, res)) != 0)
                    return rc;
                for (size_t ci = 0; ci < tds_table_count() && rc == 0; ci++) {
                    const struct tds_table *c = tds_table_at(ci);
                    char name[32];

                    if (!c->parent || strcmp(c->parent, t->name) != 0)
                        continue;
                    if (a->n_wkeys <= WKEYS_ONE) {
                        snprintf(name, sizeof(name), "ce_%zu", ci);
                        for (size_t w = 0; w < a->n_wkeys && rc == 0; w++) {
                            const char *one[2] = {a->wkey1[w][0].p, a->wkey1[w][1].p};

                            rc = run_prepared(a, name, 2, one, NULL, res,
                                              "could not replace child rows");
                        }
                    } else {
                        snprintf(name, sizeof(name), "cd_%zu", ci);
                        rc = run_prepared(a, name, 2, keys, NULL, res,
                                          "could not replace child rows");
                    }
                    for (size_t i = 0; i < n_groups && rc == 0; i++)
                        if (a->sigs[gs[i].sig].t == c)
                            rc = run_upsert(a, msgs, &a->sigs[gs[i].sig], &gs[i], keys, res,
                                            probe);
                }
                if (rc != 0)
                    return rc;
                continue;
            }
            for (size_t i = 0; i < n_groups; i++) {
                const struct sig *sg = &a->sigs[gs[i].sig];

                if (sg->t != t || sg->kind != order[o])
                    continue;
                if ((rc = run_upsert(a, msgs, sg, &gs[i], NULL, res, probe)) != 0)
                    return rc;
            }
        }
    }
    if (!probe)
        return finish_txn(a, msgs, n, gs, n_groups, res);
    if (!a->begun)
        return 0; /* nothing was sent */
    /* a probe fails on the statement that refuses its record */
    if ((rc = pipe_flush(a, res)) != 0)
        return rc;
    r = PQexec(a->conn, "ROLLBACK");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return fail(a, r, res, "could not roll back");
    PQclear(r);
    return 0;
}

static int cmp_group(const void *pa, const void *pb, void *ud)
{
    const struct tds_apply *a = ud;
    const struct sig *x = &a->sigs[((const struct group *)pa)->sig];
    const struct sig *y = &a->sigs[((const struct group *)pb)->sig];

    if (x->tidx != y->tidx)
        return x->tidx < y->tidx ? -1 : 1;
    return ((int)x->kind > (int)y->kind) - ((int)x->kind < (int)y->kind);
}

static int run_batch(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n, bool probe,
                     struct tds_apply_result *res)
{
    struct group *gs = NULL;
    size_t n_groups = 0;
    int rc = 0;

    memset(res, 0, sizeof(*res));
    a->events_seen = false;
    a->txn_notified = false;
    if (!tds_apply_connected(a)) {
        snprintf(res->error, sizeof(res->error), "not connected to the database");
        return TDS_APPLY_E_CONN;
    }
    if (tds_table_count() > TDS_APPLY_MAX_TABLES)
        return -EINVAL;
    /* LIST sets get one column list per combination of fields present, so
     * the session's staging tables could pile up: start over when many. */
    if (a->n_sigs > MAX_SIGS) {
        /* each one holds some of the backend's memory (~0.6 MB measured) */
        tds_log(TDS_LOG_INFO, NULL,
                "%zu staging tables in this database session (one per column list of the list "
                "pages seen): reconnecting to drop them",
                a->n_sigs);
        int rc2 = tds_apply_connect(a, res->error, sizeof(res->error));

        if (rc2 != 0)
            return rc2;
    }
    tds_notify_reset(a->notify);
    /* Group live rows by staging table; create what the session lacks. */
    for (size_t m = 0; m < n && rc == 0; m++) {
        const struct tds_msg_rows *rw = &msgs[m]->msg.u.rows;

        if (msgs[m]->msg.type != TDS_MSG_ROWS || (a->dup && a->dup[m]))
            continue;
        for (size_t s = 0; s < rw->n_sets && rc == 0; s++) {
            const struct tds_msg_rowset *set = &rw->sets[s];
            size_t sg, gi = SIZE_MAX;

            for (size_t r = 0; r < set->n_rows && rc == 0; r++) {
                if (!tds_bmsg_row_live(msgs[m], s, r))
                    continue;
                if (gi == SIZE_MAX) {
                    if ((rc = get_sig(a, msgs[m]->tables[s], set, &sg, res)) != 0)
                        break;
                    for (size_t g = 0; g < n_groups; g++)
                        if (gs[g].sig == sg)
                            gi = g;
                    if (gi == SIZE_MAX) {
                        struct group *p = realloc(gs, (n_groups + 1) * sizeof(*p));

                        if (!p) {
                            rc = -ENOMEM;
                            break;
                        }
                        gs = p;
                        memset(&gs[n_groups], 0, sizeof(*gs));
                        gs[n_groups].sig = sg;
                        gi = n_groups++;
                    }
                }
                rc = group_add(&gs[gi], (struct ref){(uint32_t)m, (uint32_t)s, (uint32_t)r});
            }
        }
    }
    if (rc == 0) {
        bool slow = a->no_fast;

        /* COPY (and fast inserts) in registry table order, like the upserts. */
        if (n_groups > 1)
            qsort_r(gs, n_groups, sizeof(*gs), cmp_group, a);
        rc = run_txn(a, msgs, n, probe, gs, n_groups, res);
        /* an error met with statements still queued: read their answers */
        if (a->piped)
            rc = pipe_finish(a, rc, NULL, res);
        if (rc == 0 && !probe)
            tds_apply_maintain(a);
        if (slow)
            a->no_fast = false;
        if (rc != 0 && tds_apply_connected(a)) {
            PGresult *r = PQexec(a->conn, "ROLLBACK");

            PQclear(r);
        }
        if (tds_apply_connected(a) && PQtransactionStatus(a->conn) == PQTRANS_IDLE)
            truncate_staging(a);
    }
    if (rc == TDS_APPLY_E_CONN)
        tds_apply_disconnect(a);
    groups_free(gs, n_groups);
    return rc;
}

int tds_apply_run(struct tds_apply *a, struct tds_bmsg *const *msgs, size_t n, bool probe,
                  struct tds_apply_result *res)
{
    int rc = events_mark(a, msgs, n);

    for (int round = 1; rc == 0; round++) {
        size_t found = 0;

        rc = run_batch(a, msgs, n, probe, res);
        if (rc != TDS_APPLY_E_DATA || !a->events_seen)
            break;
        /* Rolled back: an event of the batch is recorded already. */
        if (round == SEEN_ROUNDS) {
            snprintf(res->error, sizeof(res->error),
                     "webhook events or pages of the batch recorded by other transactions "
                     "while it was written, %d times", round);
            rc = TDS_APPLY_E_RETRY;
            break;
        }
        if ((rc = events_lookup(a, msgs, n, &found, res)) != 0) {
            if (rc == TDS_APPLY_E_CONN)
                tds_apply_disconnect(a);
            break;
        }
        /* None found: not a recorded event after all; the caller isolates
         * the message as for any refused metadata. */
        if (found == 0) {
            rc = TDS_APPLY_E_DATA;
            break;
        }
    }
    if (rc == 0 && !probe)
        events_count(a, msgs, n);
    free(a->dup);
    a->dup = NULL;
    return rc;
}

void tds_apply_set_metrics(struct tds_apply *a, struct tds_metrics *metrics)
{
    a->m_dups = tds_metrics_get(metrics, TDS_COUNTER, "tds_writer_webhook_duplicates_total",
                                "Webhook messages acked without their rows: their event was "
                                "applied already", "", NULL, 0);
    a->m_page_dups = tds_metrics_get(metrics, TDS_COUNTER, "tds_writer_page_duplicates_total",
                                     "Page messages acked without their rows: the page was "
                                     "applied already (its ack was lost and it was sent again)",
                                     "", NULL, 0);
}
