/* tds-writer — the only stage that writes PostgreSQL.
 *
 * Wires the modules together: configuration, the PULL socket for rows, the
 * PUB socket for acks, the admin server, and the loop. The loop reads what
 * has arrived (up to TDS_WRITER_BATCH_MAX_ROWS rows or _MAX_BYTES bytes), writes it in one transaction
 * and goes back to the socket: whatever arrived while a transaction was
 * committing is the next batch (group commit, no timed wait). While the
 * database is unreachable it stops reading, keeps its batch and retries with
 * backoff (100 ms doubling to 5 s); /readyz says not ready meanwhile.
 * Subcommands: `migrate`, `status`, `alerts list|ack` and `events tail`.
 * The alert engine (alertd.c) runs on its own thread, woken by a loop timer.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "admin.h"
#include "alertd.h"
#include "alerts.h"
#include "apply.h"
#include "bus.h"
#include "config.h"
#include "events.h"
#include "evtail.h"
#include "flusher.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "migrate.h"
#include "msg.h"
#include "pg.h"
#include "prune.h"
#include "stage.h"
#include "status.h"
#include "util.h"
#include "writer.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define PRUNE_AGAIN_MS 1000 /* the next pruning pass while old rows are left */
#define MIGRATE_POLL_MS 100  /* how often the loop looks at a migration under way */
#define MIGRATE_SAY_MS 10000 /* a migration under way this long is logged */
/* While acks wait for PostgreSQL's WAL flush (synchronous_commit off), the
 * flushed position is read this often; at exit they are waited for at most
 * FLUSH_DRAIN_MS (the WAL writer flushes every wal_writer_delay, 200 ms by
 * default), then left to upstream's resend. */
#define FLUSH_POLL_MS 10
#define FLUSH_DRAIN_MS 1500

enum { MIG_IDLE, MIG_RUNNING, MIG_DONE };

struct settings {
    char *log_level;
    char *admin_listen;
    char *instance;
    char *events_bind;
    char *database_url;
    char *writer_bind;
    char *ack_bind;
    char *curve_secret;
    char *curve_public;
    int64_t batch_max_rows;
    int64_t batch_max_bytes;
    int64_t hwm;
    int64_t retain_webhook_events_days;
    int64_t retain_rejected_days;
    int64_t retain_runs_days;
    int64_t retain_alerts_days;
    int64_t prune_interval_s;
    bool alerts;
    int64_t alert_interval_s;
    char *alert_rules;
    char *alert_scrape;
    int64_t alert_scrape_timeout_ms;
    int64_t alert_sync_interval_s;
    char *orgs_file;
    char *alert_webhook_url;
    char *alert_smtp_url;
    char *alert_smtp_from;
    char *alert_smtp_to;
    char *alert_smtp_user;
    char *alert_smtp_password;
    int64_t alert_retry_min_ms;
    int64_t health_stall_ms;
    int64_t unready_after_s;
    char *toast_compression;
    bool async_commit;
};

#define OFF(f) offsetof(struct settings, f)
static const struct tds_config_entry config_table[] = {
    {"TDS_LOG_LEVEL", TDS_CFG_STR, "info", 0, 0, 0, OFF(log_level),
     "log threshold: debug, info, warn or error"},
    {"TDS_ADMIN_LISTEN", TDS_CFG_STR, "0.0.0.0:9104", 0, 0, 0, OFF(admin_listen),
     "admin HTTP server (/healthz /readyz /metrics /status), host:port"},
    {"TDS_HEALTH_STALL_MS", TDS_CFG_INT, "30000", 0, 2000, 3600000, OFF(health_stall_ms), "/healthz answers 503 when the event loop has not completed an iteration for this long "
     "(an idle loop completes one every second)"},
    {"TDS_WRITER_UNREADY_AFTER_S", TDS_CFG_INT, "30", 0, 1, 86400, OFF(unready_after_s),
     "/readyz answers 503 once batches have failed this long with the database reachable "
     "(a schema or permission problem: upstream resends meanwhile)"},
    {"TDS_INSTANCE", TDS_CFG_STR, NULL, 0, 0, 0, OFF(instance),
     "name of this instance in logs and events (default: host name)"},
    {"TDS_EVENTS_BIND", TDS_CFG_STR, "", 0, 0, 0, OFF(events_bind),
     "PUB socket for tds.zoho.* events, empty = off"},
    {"TDS_DATABASE_URL", TDS_CFG_STR, NULL, TDS_CFG_REQUIRED | TDS_CFG_SECRET, 0, 0,
     OFF(database_url), "PostgreSQL connection (URL or conninfo; inline, env:NAME or file:/path)"},
    {"TDS_WRITER_BIND", TDS_CFG_STR, "tcp://127.0.0.1:5558", 0, 0, 0, OFF(writer_bind),
     "PULL socket where processors send rows; loopback by default: the socket takes unauthenticated messages, so a deployment names its interface (tcp://*:PORT)"},
    {"TDS_ACK_BIND", TDS_CFG_STR, "tcp://127.0.0.1:5559", 0, 0, 0, OFF(ack_bind),
     "PUB socket for acks after commit (topic = origin); loopback by default, as above"},
    {"TDS_WRITER_BATCH_MAX_ROWS", TDS_CFG_INT, "20000", 0, 1, 1000000, OFF(batch_max_rows),
     "most rows written in one transaction"},
    {"TDS_WRITER_BATCH_MAX_BYTES", TDS_CFG_INT, "8388608", 0, 65536, INT64_MAX / 2,
     OFF(batch_max_bytes),
     "a transaction also ends once its rows messages add up to this many bytes (bounds the "
     "writer's memory when records are large)"},
    {"TDS_WRITER_TOAST_COMPRESSION", TDS_CFG_STR, "lz4", 0, 0, 0, OFF(toast_compression),
     "how PostgreSQL compresses large values (raw JSON over ~2 KB): lz4 (a full sync about "
     "a third faster, zoho.items about a quarter larger), pglz (smaller), or server (the "
     "server's default_toast_compression)"},
    {"TDS_WRITER_ASYNC_COMMIT", TDS_CFG_BOOL, "true", 0, 0, 0, OFF(async_commit),
     "COMMIT does not wait for the WAL flush, so rows are visible about one disk sync "
     "sooner; acks still wait for it (a side connection has PostgreSQL flush at once), so "
     "nothing acked is lost in a crash. false: every COMMIT waits as the server's "
     "synchronous_commit says (also the case under synchronous_standby_names)"},
    {"TDS_WRITER_HWM", TDS_CFG_INT, "1000", 0, 1, 1000000, OFF(hwm),
     "ZeroMQ high-water mark of the rows socket (messages)"},
    {"TDS_WRITER_RETAIN_WEBHOOK_EVENTS_DAYS", TDS_CFG_INT, "7", 0, 1, 36500,
     OFF(retain_webhook_events_days),
     "days tds.webhook_events and tds.applied_pages are kept (dedupe horizon)"},
    {"TDS_WRITER_RETAIN_REJECTED_DAYS", TDS_CFG_INT, "30", 0, 1, 36500, OFF(retain_rejected_days),
     "days tds.rejected rows are kept"},
    {"TDS_WRITER_RETAIN_RUNS_DAYS", TDS_CFG_INT, "90", 0, 1, 36500, OFF(retain_runs_days),
     "days finished tds.sync_runs and tds.sync_requests are kept"},
    {"TDS_WRITER_RETAIN_ALERTS_DAYS", TDS_CFG_INT, "90", 0, 1, 36500, OFF(retain_alerts_days),
     "days resolved tds.alerts are kept"},
    {"TDS_WRITER_PRUNE_INTERVAL_S", TDS_CFG_INT, "600", 0, 1, 86400, OFF(prune_interval_s),
     "seconds between pruning passes (the next one after 1 s while a pass leaves old rows)"},
    {"TDS_ALERTS", TDS_CFG_BOOL, "true", 0, 0, 0, OFF(alerts),
     "run the alert engine (one writer replica evaluates at a time; see writer/ALERTS.md)"},
    {"TDS_ALERT_INTERVAL_S", TDS_CFG_INT, "15", 0, 1, 3600, OFF(alert_interval_s),
     "seconds between alert evaluations"},
    {"TDS_ALERT_RULES", TDS_CFG_STR, "", 0, 0, 0, OFF(alert_rules),
     "JSON file overriding rule thresholds, for_s, severities (TDS_ALERT_<RULE>_* override it)"},
    {"TDS_ALERT_SCRAPE", TDS_CFG_STR, "", 0, 0, 0, OFF(alert_scrape),
     "stage admin URLs to scrape for metric rules, http://host:port,... (every address of a name)"},
    {"TDS_ALERT_SCRAPE_TIMEOUT_MS", TDS_CFG_INT, "2000", 0, 100, 60000,
     OFF(alert_scrape_timeout_ms), "timeout of one /metrics or /readyz request"},
    {"TDS_ALERT_SYNC_INTERVAL_S", TDS_CFG_INT, "300", 0, 1, 86400 * 7,
     OFF(alert_sync_interval_s), "sync interval assumed by entity_stale when TDS_CONFIG is unset or gives an organization no incremental_every_s"},
    {"TDS_CONFIG", TDS_CFG_STR, "", 0, 0, 0, OFF(orgs_file),
     "optional organizations file; the writer reads only org_id, incremental_every_s and entities (which organizations, entities and intervals its alert rules judge)"},
    {"TDS_ALERT_WEBHOOK_URL", TDS_CFG_STR, NULL, TDS_CFG_SECRET, 0, 0, OFF(alert_webhook_url),
     "webhook for alert notices (Slack-compatible JSON POST), unset = off"},
    {"TDS_ALERT_SMTP_URL", TDS_CFG_STR, "", 0, 0, 0, OFF(alert_smtp_url),
     "SMTP server for alert email, smtp://host:port (STARTTLS; required when a user or password is set, else used when offered) or smtps://, empty = off"},
    {"TDS_ALERT_SMTP_FROM", TDS_CFG_STR, "", 0, 0, 0, OFF(alert_smtp_from),
     "sender address of alert email"},
    {"TDS_ALERT_SMTP_TO", TDS_CFG_STR, "", 0, 0, 0, OFF(alert_smtp_to),
     "recipients of alert email, comma-separated"},
    {"TDS_ALERT_SMTP_USER", TDS_CFG_STR, NULL, TDS_CFG_SECRET, 0, 0, OFF(alert_smtp_user),
     "SMTP user name, unset = no authentication"},
    {"TDS_ALERT_SMTP_PASSWORD", TDS_CFG_STR, NULL, TDS_CFG_SECRET, 0, 0, OFF(alert_smtp_password),
     "SMTP password"},
    {"TDS_ALERT_RETRY_MIN_MS", TDS_CFG_INT, "1000", 0, 10, 600000, OFF(alert_retry_min_ms),
     "first retry delay of a failed notice delivery (doubles up to 5 min, 10 attempts)"},
    {"TDS_CURVE_SECRET_KEY", TDS_CFG_STR, "", TDS_CFG_SECRET, 0, 0, OFF(curve_secret),
     "pipeline CURVE server secret key (Z85), with TDS_CURVE_PUBLIC_KEY turns on encryption of "
     "every ZeroMQ link; empty = off"},
    {"TDS_CURVE_PUBLIC_KEY", TDS_CFG_STR, "", 0, 0, 0, OFF(curve_public),
     "pipeline CURVE server public key (Z85) matching TDS_CURVE_SECRET_KEY; empty = off"},
};
#define N_CONFIG (sizeof(config_table) / sizeof(config_table[0]))

struct app {
    struct settings cfg;
    struct tds_loop *loop;
    struct tds_bus *bus;
    struct tds_bus_sock *pull, *pub;
    struct tds_metrics *metrics;
    struct tds_admin *admin;
    struct tds_events *events;
    struct tds_apply *db;
    struct tds_writer *writer;
    struct tds_alertd *alertd;
    /* Has PostgreSQL flush its WAL while acks wait for it; flusher_fd: its
     * socket as the loop watches it (-1: not watched), for output when
     * flusher_out (its handshake waits to send), else for input. */
    struct tds_flusher *flusher;
    int flusher_fd;
    bool flusher_out;
    bool side_said; /* the flush connection reached another server: said */
    bool migrated, reading, draining, waiting, ever_connected;
    bool prune_soon; /* a one-shot pruning pass is due (on_prune) */
    bool flush_poll; /* a read of the flushed WAL position is due (on_flush_poll) */
    int64_t drain_until_ms; /* at exit, when held acks stop being waited for */
    /* Migrations run on a thread of their own (migrate_main): waiting for
     * another process's migration lock, or a long migration, must not stall
     * the loop (/healthz would fail and a liveness probe would kill the
     * process mid-migration, to start it over). */
    pthread_t mig_thread;
    _Atomic int mig_state;
    int mig_rc;
    char mig_err[1024];
    int mig_newer;         /* migrations in the database this binary lacks */
    char mig_newest[96];   /* the newest of them, NNN_name */
    int64_t mig_since_ms;
    bool mig_said;
    pthread_mutex_t mig_mu; /* guards mig_cancel */
    PGcancel *mig_cancel;   /* the migration's session, to cancel at exit */
    int64_t backoff_ms;
    int64_t retry_timer;
    bool db_up;
    int64_t failing_since_ms; /* first of the batches failing in a row, 0 when the last committed */
    int exit_code;
    struct tds_series *m_db_up, *m_reconnects, *m_oversize, *m_flushes, *m_async;
    struct tds_log_limit db_limit, frame_limit;
    /* read by the admin thread */
    atomic_int st_db_up;
    atomic_size_t st_pending;
    atomic_ulong st_batches, st_rows, st_rejects, st_acks, st_messages;
};

static const struct tds_stage stage = {
    .name = "writer",
    .usage = "Usage: tds-writer [OPTION]... [COMMAND]\n"
             "Write rows from the processors into PostgreSQL and ack them after commit.\n\n"
             "Commands:\n"
             "  (none)     run the writer\n"
             "  migrate    apply pending database migrations and exit\n"
             "  status     print a summary of the database for operators and exit\n"
             "  alerts list [--all]        firing alerts (--all: with resolved ones)\n"
             "  alerts ack ID --by NAME    acknowledge an alert (no more notices for it)\n"
             "  events tail --connect tcp://HOST:PORT[,...] [--topic P] [--count N]\n"
             "             print the stages' tds.zoho.* events live\n\n"
             "Options:\n"
             "  -h, --help          show this help\n"
             "  -V, --version       show the version\n"
             "      --print-config  print the effective configuration (secrets masked)\n\n",
    .table = config_table,
    .n = N_CONFIG,
};

/* ---- acks ---- */

static void send_ack(void *ud, const char *origin, char *const *ids, size_t n_ids,
                     int64_t written, int64_t rejected)
{
    struct app *app = ud;
    struct tds_msg m;
    int rc;

    memset(&m, 0, sizeof(m));
    m.type = TDS_MSG_ACK;
    m.v = TDS_MSG_VERSION;
    m.id = tds_uid("ack");
    if (!m.id)
        return;
    m.u.ack.origin = (char *)origin;
    m.u.ack.ids = (char **)ids;
    m.u.ack.n_ids = n_ids;
    m.u.ack.rows_written = written;
    m.u.ack.rows_rejected = rejected;
    rc = tds_bus_send_msg(app->pub, &m, ZMQ_DONTWAIT);
    if (rc != 0)
        tds_log_limited(&app->frame_limit, TDS_LOG_WARN, NULL,
                        "could not publish ack to %s: %s, upstream will resend", origin,
                        rc < 0 ? strerror(-rc) : tds_msg_strerror(rc));
    free(m.id);
}

/* ---- state ---- */

static void publish_stats(struct app *app)
{
    struct tds_writer_stats st;

    tds_writer_stats(app->writer, &st);
    atomic_store(&app->st_pending, tds_writer_pending(app->writer));
    atomic_store(&app->st_batches, st.batches);
    atomic_store(&app->st_rows, st.rows_written);
    atomic_store(&app->st_rejects, st.rejects);
    atomic_store(&app->st_acks, st.acks);
    atomic_store(&app->st_messages, st.messages);
}

static void set_reading(struct app *app, bool on)
{
    if (app->reading == on)
        return;
    app->reading = on;
    tds_loop_set_events(app->loop, tds_bus_sock_raw(app->pull), -1, on ? ZMQ_POLLIN : 0);
}

/* Ready: the database is reachable and batches commit. A batch that fails
 * with the database reachable is retried for ever (data errors are split out
 * and rejected, so what is left is a schema or permission problem, say an
 * older writer on a newer schema); past TDS_WRITER_UNREADY_AFTER_S the
 * writer says so on /readyz, and the stage_not_ready alert follows. */
static void update_ready(struct app *app)
{
    char why[300];
    int64_t failing = app->failing_since_ms ? tds_now_ms() - app->failing_since_ms : 0;

    if (app->draining) {
        tds_admin_set_ready(app->admin, false, "stopping");
    } else if (!app->db_up) {
        tds_admin_set_ready(app->admin, false, "database unreachable");
    } else if (failing >= app->cfg.unready_after_s * 1000) {
        snprintf(why, sizeof(why), "batches failing for %lld s: %.200s", (long long)(failing / 1000),
                 tds_writer_last_error(app->writer));
        tds_admin_set_ready(app->admin, false, why);
    } else {
        tds_admin_set_ready(app->admin, true, NULL);
    }
}

static void set_db_up(struct app *app, bool up)
{
    app->db_up = up;
    atomic_store(&app->st_db_up, up);
    if (app->m_db_up)
        tds_series_set(app->m_db_up, up ? 1 : 0);
    update_ready(app);
}

static void on_retry(struct tds_loop *loop, void *ud);

static void schedule_retry(struct app *app)
{
    int64_t wait = app->backoff_ms;

    app->backoff_ms = wait * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : wait * 2;
    app->waiting = true;
    app->retry_timer = tds_loop_timer_add(app->loop, wait, 0, on_retry, app);
}

/* ---- the WAL flush the held acks wait for ---- */

static bool drain_done(struct app *app);
static void on_flusher(struct tds_loop *loop, short revents, void *ud);

/* The loop watches the flusher's socket as it is now, for what it waits
 * for (a connection given up is no longer watched, before the flusher
 * closes it). */
static void watch_flusher(struct app *app)
{
    bool out = false;
    int fd = tds_flusher_socket(app->flusher, &out);

    if (fd == app->flusher_fd && fd >= 0 && out != app->flusher_out &&
        tds_loop_set_events(app->loop, NULL, fd, out ? ZMQ_POLLOUT : ZMQ_POLLIN) == 0)
        app->flusher_out = out;
    if (fd == app->flusher_fd)
        return;
    if (app->flusher_fd >= 0)
        tds_loop_remove_fd(app->loop, app->flusher_fd);
    app->flusher_fd = -1;
    if (fd >= 0 && tds_loop_add_fd(app->loop, fd, out ? ZMQ_POLLOUT : ZMQ_POLLIN, on_flusher,
                                   app) == 0) {
        app->flusher_fd = fd;
        app->flusher_out = out;
    }
}

/* Acks wait for commits that did not wait for their flush: have PostgreSQL
 * flush now rather than at its WAL writer's next round. While its
 * connection is still being opened, that goes on a step. */
static void kick_flusher(struct app *app)
{
    bool on = tds_apply_async_commit(app->db);
    uint64_t side;

    if (app->m_async)
        tds_series_set(app->m_async, on ? 1 : 0);
    if (!on || tds_flusher_busy(app->flusher))
        return;
    if (tds_writer_held(app->writer) > 0)
        tds_flusher_start(app->flusher);
    else
        tds_flusher_advance(app->flusher);
    watch_flusher(app);
    /* Acks of the commits from now on may go by this connection's flushes
     * (connected before them), if it reached the writer's server. */
    side = tds_flusher_serial(app->flusher);
    if (side && strcmp(tds_flusher_server(app->flusher), tds_apply_server(app->db)) != 0) {
        if (!app->side_said)
            tds_warn("the WAL flush connection reached another server than the writer's "
                     "session (started %s, not %s): acks wait for the session's own reads",
                     tds_flusher_server(app->flusher), tds_apply_server(app->db));
        app->side_said = true;
        side = 0;
    }
    tds_writer_set_side(app->writer, side);
}

/* A new session of the writer's: the flusher's connection may be from
 * before a restart of the server. Another is begun at once (when commits do
 * not wait), so that it is ready by the first ack. */
static void reset_flusher(struct app *app)
{
    if (app->flusher_fd >= 0)
        tds_loop_remove_fd(app->loop, app->flusher_fd);
    app->flusher_fd = -1;
    tds_flusher_close(app->flusher);
    tds_writer_set_side(app->writer, 0);
    kick_flusher(app);
}

static void on_flusher(struct tds_loop *loop, short revents, void *ud)
{
    struct app *app = ud;
    uint64_t side = tds_flusher_serial(app->flusher), flushed = 0;
    size_t held = tds_writer_held(app->writer);
    int rc;

    (void)loop;
    (void)revents;
    rc = tds_flusher_collect(app->flusher, &flushed);
    watch_flusher(app);
    if (rc < 0)
        tds_writer_set_side(app->writer, 0);
    if (rc == 2) {
        /* the connection is ready: the acks held now have it flush */
        kick_flusher(app);
        return;
    }
    if (rc != 1)
        return;
    if (app->m_flushes)
        tds_series_inc(app->m_flushes, 1);
    if (held > 0)
        tds_writer_release_side(app->writer, side, flushed);
    publish_stats(app);
    if (app->draining && drain_done(app))
        return;
    /* A flush covers every ack held when it was sent (but for those of a
     * connection before this one: the poll's). One that released none (a
     * server whose flushed position did not move) is not sent again at
     * once: the poll timer does, every FLUSH_POLL_MS. */
    if (held == 0 || tds_writer_held(app->writer) < held)
        kick_flusher(app);
}

static void on_flush_poll(struct tds_loop *loop, void *ud);

static void schedule_flush_poll(struct app *app)
{
    if (app->flush_poll || tds_writer_held(app->writer) == 0)
        return;
    app->flush_poll = true;
    tds_loop_timer_add(app->loop, FLUSH_POLL_MS, 0, on_flush_poll, app);
}

/* Exit once nothing is pending and no ack waits for a flush, or the wait
 * for the flush is over. True when the loop was stopped. */
static bool drain_done(struct app *app)
{
    size_t held = tds_writer_held(app->writer);

    if (tds_writer_pending(app->writer) > 0)
        return false;
    if (held > 0 && tds_now_ms() < app->drain_until_ms) {
        schedule_flush_poll(app);
        return false;
    }
    if (held > 0)
        tds_warn("exiting with %zu acks not sent: PostgreSQL did not flush their commits' WAL "
                 "within %d ms; upstream sends those messages again",
                 tds_writer_drop_held(app->writer), FLUSH_DRAIN_MS);
    tds_loop_stop(app->loop);
    return true;
}

static void on_flush_poll(struct tds_loop *loop, void *ud)
{
    struct app *app = ud;

    (void)loop;
    app->flush_poll = false;
    tds_writer_poll_flushed(app->writer);
    publish_stats(app);
    if (app->draining && drain_done(app))
        return;
    kick_flusher(app);
    schedule_flush_poll(app);
}

static void flush(struct app *app)
{
    int rc = tds_writer_flush(app->writer);

    publish_stats(app);
    kick_flusher(app);
    schedule_flush_poll(app);
    if (rc == -ENOMEM) {
        tds_error("out of memory while writing a batch, retrying in %lld ms",
                  (long long)app->backoff_ms);
        set_reading(app, false);
        schedule_retry(app);
        return;
    }
    if (rc == TDS_WRITER_E_DB) {
        bool up = tds_apply_connected(app->db);

        tds_log_limited(&app->db_limit, TDS_LOG_WARN, NULL,
                        "could not write batch of %zu messages: %s, retrying in %lld ms",
                        tds_writer_pending(app->writer), tds_writer_last_error(app->writer),
                        (long long)app->backoff_ms);
        if (up && !app->failing_since_ms)
            app->failing_since_ms = tds_now_ms();
        set_db_up(app, up);
        set_reading(app, false);
        schedule_retry(app);
        return;
    }
    app->backoff_ms = BACKOFF_MIN_MS;
    if (app->failing_since_ms) {
        tds_info("batches commit again after %lld s of failures",
                 (long long)((tds_now_ms() - app->failing_since_ms) / 1000));
        app->failing_since_ms = 0;
        update_ready(app);
    }
    if (app->draining) {
        drain_done(app);
        return;
    }
    set_reading(app, true);
}

static int migrate_once(struct app *app, char *err, size_t errlen)
{
    PGconn *c = tds_pg_connect(app->cfg.database_url, "tds-writer", err, errlen);
    int applied = 0, rc;

    if (!c)
        return TDS_APPLY_E_CONN;
    tds_apply_quiet(c);
    pthread_mutex_lock(&app->mig_mu);
    app->mig_cancel = PQgetCancel(c);
    pthread_mutex_unlock(&app->mig_mu);
    rc = tds_migrate_run(c, &applied, err, errlen);
    if (rc == 0) {
        if (applied)
            tds_info("applied %d database migrations", applied);
        rc = tds_migrate_newer(c, &app->mig_newer, app->mig_newest, sizeof(app->mig_newest), err,
                               errlen);
    }
    if (rc == 0) {
        /* A later release set the database up (an upgrade rolled back, or
         * a writer of the old release still running beside the new one).
         * Not refused: the check below still requires every table and
         * column this writer writes, and a rollback must keep working.
         * But said, for what a later migration changed is not known here. */
        if (app->mig_newer)
            tds_warn("the database has %d migration%s newer than this writer (the newest "
                     "%s, this writer's %03d): it was set up by a later release, whose "
                     "writer should run it",
                     app->mig_newer, app->mig_newer == 1 ? "" : "s", app->mig_newest,
                     tds_migrations[tds_migrations_count - 1].version);
        rc = tds_migrate_verify(c, err, errlen);
        if (rc == TDS_E_INVALID)
            rc = -EINVAL;
    }
    if (rc == 0) {
        /* Migration 022 leaves a table whose id a view depends on as it
         * was: it works, only its key comparisons cost more. Said at every
         * start until the operator converts it. */
        char first[160];
        int n = 0;

        rc = tds_migrate_uncollated(c, &n, first, sizeof(first), err, errlen);
        if (rc == 0 && n > 0)
            tds_warn("%d table%s (%s%s) keep%s the database's collation for %s ids, as a view, "
                     "rule or policy depends on them: key comparisons there cost more under a "
                     "language locale; drop what depends on them, run SELECT * FROM "
                     "tds.collate_ids(); and create it again (README, \"The database\")",
                     n, n == 1 ? "" : "s", first, n > 1 ? " and others" : "", n == 1 ? "s" : "",
                     n == 1 ? "its" : "their");
    }
    pthread_mutex_lock(&app->mig_mu);
    PQfreeCancel(app->mig_cancel);
    app->mig_cancel = NULL;
    pthread_mutex_unlock(&app->mig_mu);
    PQfinish(c);
    return rc;
}

static void *migrate_main(void *arg)
{
    struct app *app = arg;

    app->mig_rc = migrate_once(app, app->mig_err, sizeof(app->mig_err));
    atomic_store(&app->mig_state, MIG_DONE);
    return NULL;
}

/* At exit with a migration under way: cancel its statement (the lock wait
 * or the DDL, rolled back) and wait for the thread. */
static void migrate_stop(struct app *app)
{
    char why[256];

    if (atomic_load(&app->mig_state) == MIG_IDLE)
        return;
    pthread_mutex_lock(&app->mig_mu);
    if (app->mig_cancel)
        PQcancel(app->mig_cancel, why, sizeof(why));
    pthread_mutex_unlock(&app->mig_mu);
    pthread_join(app->mig_thread, NULL);
    atomic_store(&app->mig_state, MIG_IDLE);
}

/* The migration step of on_retry: false while it is under way (on_retry
 * comes back in MIGRATE_POLL_MS), else true with its result in *rc (0 or a
 * code of migrate_once), err filled. "Under way" is not a code: the codes
 * (TDS_APPLY_E_DATA is 1) are all results. */
static bool migrate_step(struct app *app, int *rc, char *err, size_t errlen)
{
    switch (atomic_load(&app->mig_state)) {
    case MIG_IDLE:
        app->mig_err[0] = '\0';
        app->mig_since_ms = tds_now_ms();
        app->mig_said = false;
        atomic_store(&app->mig_state, MIG_RUNNING);
        if (pthread_create(&app->mig_thread, NULL, migrate_main, app) != 0) {
            atomic_store(&app->mig_state, MIG_IDLE);
            snprintf(err, errlen, "could not start the migration thread");
            *rc = TDS_APPLY_E_CONN; /* retried */
            return true;
        }
        return false;
    case MIG_RUNNING:
        if (!app->mig_said && tds_now_ms() - app->mig_since_ms >= MIGRATE_SAY_MS) {
            app->mig_said = true;
            tds_info("database migrations under way for %lld s (applying them, or waiting for "
                     "another process that applies them); webhooks and pages wait",
                     (long long)((tds_now_ms() - app->mig_since_ms) / 1000));
        }
        return false;
    default:
        pthread_join(app->mig_thread, NULL);
        atomic_store(&app->mig_state, MIG_IDLE);
        snprintf(err, errlen, "%s", app->mig_err);
        *rc = app->mig_rc;
        return true;
    }
}

static void on_retry(struct tds_loop *loop, void *ud)
{
    struct app *app = ud;
    char err[1024] = "";
    int rc;

    (void)loop;
    app->waiting = false;
    if (!app->migrated) {
        if (!migrate_step(app, &rc, err, sizeof(err))) {
            app->waiting = true;
            app->retry_timer = tds_loop_timer_add(app->loop, MIGRATE_POLL_MS, 0, on_retry, app);
            return;
        }
        if (rc == TDS_APPLY_E_CONN) {
            tds_log_limited(&app->db_limit, TDS_LOG_WARN, NULL,
                            "%s, retrying in %lld ms", err,
                            (long long)app->backoff_ms);
            set_db_up(app, false);
            schedule_retry(app);
            return;
        }
        if (rc == TDS_APPLY_E_RETRY) {
            /* A deadlock or a serialization failure (rolled back): the
             * migration itself is fine, run it again. */
            tds_log_limited(&app->db_limit, TDS_LOG_WARN, NULL, "%s, retrying in %lld ms", err,
                            (long long)app->backoff_ms);
            schedule_retry(app);
            return;
        }
        if (rc != 0) {
            /* A schema that does not match the registry, or a migration the
             * database refuses (its data, its SQL, a permission): retrying
             * cannot help. Stop, as `tds-writer migrate` does. */
            fprintf(stderr, "tds-writer: %s\n", err);
            tds_error("refusing to run: %s", err);
            app->exit_code = 1;
            tds_loop_stop(app->loop);
            return;
        }
        app->migrated = true;
    }
    if (!tds_apply_connected(app->db)) {
        rc = tds_apply_connect(app->db, err, sizeof(err));
        if (rc != 0) {
            tds_log_limited(&app->db_limit, TDS_LOG_WARN, NULL,
                            "%s, retrying in %lld ms", err,
                            (long long)app->backoff_ms);
            set_db_up(app, false);
            schedule_retry(app);
            return;
        }
        reset_flusher(app);
        if (app->m_reconnects && app->ever_connected)
            tds_series_inc(app->m_reconnects, 1);
        app->ever_connected = true;
        tds_info("connected to database");
    }
    set_db_up(app, true);
    flush(app);
}

static void on_rows(struct tds_loop *loop, short revents, void *ud)
{
    struct app *app = ud;

    (void)revents;
    if (app->waiting || app->draining) {
        set_reading(app, false);
        return;
    }
    while (!tds_writer_full(app->writer)) {
        char *buf = NULL;
        size_t len = 0;
        int more = 0;
        int rc = tds_bus_recv(app->pull, &buf, &len, TDS_MSG_MAX_FRAME, ZMQ_DONTWAIT, &more);

        if (rc == -EAGAIN) {
            tds_loop_zsock_drained(loop, tds_bus_sock_raw(app->pull));
            break;
        }
        if (rc == TDS_E_TOO_LARGE) {
            if (app->m_oversize)
                tds_series_inc(app->m_oversize, 1);
            tds_log_limited(&app->frame_limit, TDS_LOG_WARN, NULL,
                            "rows message over %u bytes, skipping", TDS_MSG_MAX_FRAME);
        } else if (rc != 0) {
            tds_log_limited(&app->frame_limit, TDS_LOG_WARN, NULL,
                            "could not receive rows: %s", strerror(rc < 0 ? -rc : EIO));
            break;
        } else if (tds_writer_take(app->writer, buf, len) != 0) {
            free(buf);
            tds_error("out of memory taking a rows message, upstream will resend it");
            break;
        }
        free(buf);
        /* A rows message is one frame; drop stray extra parts, oversized
         * ones included, so none passes for a message of its own. */
        if (more)
            tds_bus_skip_rest(app->pull);
    }
    if (tds_writer_pending(app->writer) > 0)
        flush(app);
}

static void on_prune(struct tds_loop *loop, void *ud)
{
    struct app *app = ud;
    struct tds_prune_cfg pc = {
        app->cfg.retain_webhook_events_days, app->cfg.retain_rejected_days,
        app->cfg.retain_runs_days, app->cfg.retain_alerts_days, 1000, 20,
    };
    char err[512];
    int64_t deleted = 0;
    bool more = false;
    PGconn *c;

    (void)loop;
    app->prune_soon = false;
    if (app->waiting || app->draining || tds_writer_pending(app->writer) > 0 ||
        !(c = tds_apply_conn(app->db)) || !tds_apply_connected(app->db))
        return;
    if (tds_prune_run(c, &pc, &deleted, &more, err, sizeof(err)) != 0)
        tds_log_limited(&app->db_limit, TDS_LOG_WARN, NULL, "%s, skipping", err);
    else if (deleted > 0 && more)
        tds_debug("pruned %lld old rows from tds tables, more left", (long long)deleted);
    else if (deleted > 0)
        tds_info("pruned %lld old rows from tds tables", (long long)deleted);
    /* More old rows than one pass takes: the next pass in a second, not at
     * the next interval, so pruning keeps up with any steady flow. */
    if (more && !app->prune_soon) {
        app->prune_soon = true;
        tds_loop_timer_add(app->loop, PRUNE_AGAIN_MS, 0, on_prune, app);
    }
}

/* An idle writer learns that PostgreSQL went away only when it reads the
 * socket: PQconsumeInput sees the server's goodbye or the closed socket, so
 * /readyz turns not-ready without waiting for the next batch. */
static void on_health(struct tds_loop *loop, void *ud)
{
    struct app *app = ud;
    PGconn *c;

    (void)loop;
    if (app->waiting || app->draining || !app->migrated)
        return;
    c = tds_apply_conn(app->db);
    if (c && PQconsumeInput(c) == 1 && PQstatus(c) == CONNECTION_OK) {
        tds_apply_maintain(app->db);
        return;
    }
    tds_warn("lost the database connection, reconnecting in %lld ms",
             (long long)app->backoff_ms);
    tds_apply_disconnect(app->db);
    set_db_up(app, false);
    set_reading(app, false);
    schedule_retry(app);
}

static void on_drain(struct tds_loop *loop, void *ud)
{
    struct app *app = ud;

    (void)loop;
    app->draining = true;
    app->drain_until_ms = tds_now_ms() + FLUSH_DRAIN_MS;
    set_reading(app, false);
    if (drain_done(app))
        return;
    if (tds_writer_pending(app->writer) == 0)
        return; /* acks wait for the flush */
    tds_info("finishing the current batch of %zu messages before exit",
             tds_writer_pending(app->writer));
}

static char *status_json(void *ud)
{
    struct app *app = ud;
    size_t cap = 512;
    char *s = malloc(cap);

    if (!s)
        return NULL;
    snprintf(s, cap,
             "{\"stage\":\"writer\",\"database\":\"%s\",\"pending_messages\":%zu,"
             "\"messages\":%lu,\"batches\":%lu,\"rows_written\":%lu,\"rejects\":%lu,"
             "\"acks\":%lu}",
             atomic_load(&app->st_db_up) ? "up" : "down", atomic_load(&app->st_pending),
             atomic_load(&app->st_messages), atomic_load(&app->st_batches),
             atomic_load(&app->st_rows), atomic_load(&app->st_rejects),
             atomic_load(&app->st_acks));
    if (app->alertd) {
        char *merged = tds_alertd_status_merge(app->alertd, s);

        free(s);
        s = merged;
    }
    return s;
}

static void on_alert_tick(struct tds_loop *loop, void *ud)
{
    (void)loop;
    tds_alertd_tick(ud);
}

static const char *env_get(const char *name)
{
    return getenv(name);
}

/* Rules from defaults, TDS_ALERT_RULES, then TDS_ALERT_<RULE>_* variables. */
static int start_alerts(struct app *app)
{
    struct tds_alert_rules *rules = NULL;
    struct tds_alertd_cfg ac = {
        .database_url = app->cfg.database_url,
        .instance = app->cfg.instance,
        .scrape = app->cfg.alert_scrape,
        .orgs_file = app->cfg.orgs_file,
        .sync_interval_s = app->cfg.alert_sync_interval_s,
        .scrape_timeout_ms = app->cfg.alert_scrape_timeout_ms,
        .channels = {
            .webhook_url = app->cfg.alert_webhook_url,
            .smtp_url = app->cfg.alert_smtp_url,
            .smtp_from = app->cfg.alert_smtp_from,
            .smtp_to = app->cfg.alert_smtp_to,
            .smtp_user = app->cfg.alert_smtp_user,
            .smtp_password = app->cfg.alert_smtp_password,
            .retry_min_ms = app->cfg.alert_retry_min_ms,
        },
    };
    char err[512];
    int rc;

    if (!app->cfg.alerts)
        return 0;
    if ((rc = tds_alert_rules_new(&rules)) != 0) {
        fprintf(stderr, "tds-writer: out of memory\n");
        return 1;
    }
    if ((app->cfg.alert_rules && app->cfg.alert_rules[0] &&
         tds_alert_rules_load_json(rules, app->cfg.alert_rules, err, sizeof(err)) != 0) ||
        tds_alert_rules_apply_env(rules, env_get, err, sizeof(err)) != 0) {
        fprintf(stderr, "tds-writer: %s\n", err);
        tds_alert_rules_free(rules);
        return 2;
    }
    rc = tds_alertd_new(&app->alertd, &ac, &rules, app->metrics, err, sizeof(err));
    tds_alert_rules_free(rules);
    if (rc != 0) {
        fprintf(stderr, "tds-writer: %s\n", rc == TDS_E_INVALID ? err : "could not start alerts");
        return rc == TDS_E_INVALID ? 2 : 1;
    }
    if (tds_alertd_start(app->alertd) != 0) {
        fprintf(stderr, "tds-writer: could not start the alert engine\n");
        return 1;
    }
    tds_loop_timer_add(app->loop, 1000, app->cfg.alert_interval_s * 1000, on_alert_tick,
                       app->alertd);
    return 0;
}

/* ---- commands ---- */

/* A deadlock or a serialization failure (with the stages running, or a
 * second migrate beside this one) is nobody's fault: run it again, as the
 * daemon does, a few times with a growing wait, before giving up. */
#define MIGRATE_CMD_TRIES 6

static int cmd_migrate(struct app *app)
{
    char err[1024];
    int rc = migrate_once(app, err, sizeof(err));

    for (int n = 1; rc == TDS_APPLY_E_RETRY && n < MIGRATE_CMD_TRIES; n++) {
        unsigned ms = 100u << n; /* 200 ms … 3.2 s */

        fprintf(stderr, "tds-writer: %s, running it again in %u ms\n", err, ms);
        usleep(ms * 1000u);
        rc = migrate_once(app, err, sizeof(err));
    }
    if (rc != 0) {
        fprintf(stderr, "tds-writer: %s\n", err);
        return 1;
    }
    if (app->mig_newer)
        printf("database schema is newer than this writer (it has %s, this writer goes to "
               "version %d); its tables check out\n",
               app->mig_newest, tds_migrations[tds_migrations_count - 1].version);
    else
        printf("database schema is up to date (version %d)\n",
               tds_migrations[tds_migrations_count - 1].version);
    return 0;
}

static int cmd_status(struct app *app)
{
    char err[1024];
    PGconn *c = tds_pg_connect(app->cfg.database_url, "tds-writer status", err, sizeof(err));
    int rc;

    if (!c || tds_pg_schema_check(c, err, sizeof(err)) != 0) {
        fprintf(stderr, "tds-writer: %s\n", err);
        PQfinish(c);
        return 1;
    }
    tds_apply_quiet(c);
    rc = tds_status_print(c, stdout, err, sizeof(err));
    PQfinish(c);
    if (rc != 0) {
        fprintf(stderr, "tds-writer: %s\n", err);
        return 1;
    }
    return 0;
}

static int run(struct app *app)
{
    struct tds_bus_opts opts = {(int)app->cfg.hwm, 1000, 100};
    int rc;

    if ((rc = tds_loop_new(&app->loop)) != 0 || (rc = tds_metrics_new(&app->metrics)) != 0 ||
        (rc = tds_bus_new(&app->bus)) != 0) {
        fprintf(stderr, "tds-writer: could not start: %s\n", strerror(rc < 0 ? -rc : EINVAL));
        return 1;
    }
    if ((rc = tds_bus_set_curve(app->bus, app->cfg.curve_secret, app->cfg.curve_public)) != 0) {
        if (rc > 0)
            fprintf(stderr, "tds-writer: invalid %s (TDS_CURVE_SECRET_KEY and TDS_CURVE_PUBLIC_KEY: "
                    "both set, 40-character Z85, one keypair)\n",
                    app->cfg.curve_secret && strlen(app->cfg.curve_secret) == 40
                        ? "TDS_CURVE_PUBLIC_KEY"
                        : "TDS_CURVE_SECRET_KEY");
        else
            fprintf(stderr, "tds-writer: invalid TDS_CURVE_SECRET_KEY: libzmq has no CURVE support\n");
        return 2;
    }
    app->m_db_up = tds_metrics_get(app->metrics, TDS_GAUGE, "tds_writer_db_up",
                                   "1 while the database is reachable", "", NULL, 0);
    app->m_reconnects = tds_metrics_get(app->metrics, TDS_COUNTER, "tds_writer_reconnects_total",
                                        "Database reconnections after a lost connection", "",
                                        NULL, 0);
    app->m_oversize = tds_metrics_get(app->metrics, TDS_COUNTER, "tds_writer_oversize_frames_total",
                                      "Rows frames over the size limit, skipped", "", NULL, 0);
    app->m_async = tds_metrics_get(app->metrics, TDS_GAUGE, "tds_writer_async_commit",
                                   "1 while COMMIT does not wait for the WAL flush and acks do "
                                   "(TDS_WRITER_ASYNC_COMMIT)", "", NULL, 0);
    app->m_flushes = tds_metrics_get(app->metrics, TDS_COUNTER, "tds_writer_wal_flushes_total",
                                     "WAL flushes the writer asked PostgreSQL for, for acks that "
                                     "wait for one", "", NULL, 0);
    if ((rc = tds_bus_sock_new(app->bus, ZMQ_PULL, &opts, &app->pull)) != 0 ||
        (rc = tds_bus_bind(app->pull, app->cfg.writer_bind)) != 0) {
        fprintf(stderr, "tds-writer: could not bind TDS_WRITER_BIND '%s': %s\n",
                app->cfg.writer_bind, zmq_strerror(rc < 0 ? -rc : EINVAL));
        return 1;
    }
    if ((rc = tds_bus_sock_new(app->bus, ZMQ_PUB, &opts, &app->pub)) != 0 ||
        (rc = tds_bus_bind(app->pub, app->cfg.ack_bind)) != 0) {
        fprintf(stderr, "tds-writer: could not bind TDS_ACK_BIND '%s': %s\n", app->cfg.ack_bind,
                zmq_strerror(rc < 0 ? -rc : EINVAL));
        return 1;
    }
    if ((rc = tds_events_new(&app->events, app->bus, "writer", app->cfg.events_bind)) != 0) {
        fprintf(stderr, "tds-writer: could not bind TDS_EVENTS_BIND '%s'\n", app->cfg.events_bind);
        return 1;
    }
    if ((rc = tds_apply_new(&app->db, app->cfg.database_url)) != 0 ||
        (rc = tds_flusher_new(&app->flusher, app->cfg.database_url)) != 0 ||
        (rc = tds_writer_new(&app->writer, app->db, app->metrics, app->events,
                             (size_t)app->cfg.batch_max_rows, send_ack, app)) != 0) {
        fprintf(stderr, "tds-writer: out of memory\n");
        return 1;
    }
    tds_apply_set_metrics(app->db, app->metrics);
    tds_apply_set_async_commit(app->db, app->cfg.async_commit);
    tds_apply_set_toast_compression(app->db, strcmp(app->cfg.toast_compression, "server") == 0
                                                 ? NULL
                                                 : app->cfg.toast_compression);
    tds_writer_set_max_bytes(app->writer, (size_t)app->cfg.batch_max_bytes);
    if ((rc = tds_admin_new(&app->admin, app->cfg.admin_listen, app->metrics, app->loop)) != 0) {
        fprintf(stderr, "tds-writer: invalid TDS_ADMIN_LISTEN: '%s'\n", app->cfg.admin_listen);
        return 2;
    }
    if ((rc = start_alerts(app)) != 0)
        return rc;
    tds_admin_set_status_cb(app->admin, status_json, app);
    tds_admin_set_stall_ms(app->admin, app->cfg.health_stall_ms);
    tds_admin_set_ready(app->admin, false, "connecting to database");
    if ((rc = tds_admin_start(app->admin)) != 0) {
        fprintf(stderr, "tds-writer: could not start admin server on '%s': %s\n",
                app->cfg.admin_listen, strerror(rc < 0 ? -rc : EINVAL));
        return 1;
    }
    tds_series_set(app->m_db_up, 0);
    app->reading = true;
    tds_loop_add_zsock(app->loop, tds_bus_sock_raw(app->pull), ZMQ_POLLIN, on_rows, app);
    set_reading(app, false);
    tds_loop_on_drain(app->loop, on_drain, app);
    app->backoff_ms = BACKOFF_MIN_MS;
    app->waiting = true;
    tds_loop_timer_add(app->loop, 0, 0, on_retry, app);
    tds_loop_timer_add(app->loop, 1000, 1000, on_health, app);
    tds_loop_timer_add(app->loop, app->cfg.prune_interval_s * 1000, app->cfg.prune_interval_s * 1000,
                       on_prune, app);
    tds_info("writer started: rows on %s, acks on %s, at most %lld rows or %lld bytes per batch",
             app->cfg.writer_bind, app->cfg.ack_bind, (long long)app->cfg.batch_max_rows,
             (long long)app->cfg.batch_max_bytes);
    rc = tds_loop_run(app->loop);
    migrate_stop(app);
    if (rc != 0 && app->exit_code == 0)
        app->exit_code = 1;
    if (tds_writer_pending(app->writer) > 0)
        tds_warn("exiting with %zu uncommitted messages; upstream will resend them",
                 tds_writer_pending(app->writer));
    tds_info("writer stopped");
    return app->exit_code;
}

static void app_free(struct app *app)
{
    /* The admin thread reads app state: stop it first. */
    app->admin = tds_admin_free(app->admin);
    app->alertd = tds_alertd_free(app->alertd);
    app->writer = tds_writer_free(app->writer);
    app->db = tds_apply_free(app->db);
    app->flusher = tds_flusher_free(app->flusher);
    app->events = tds_events_free(app->events);
    app->pull = tds_bus_sock_free(app->pull);
    app->pub = tds_bus_sock_free(app->pub);
    app->bus = tds_bus_free(app->bus);
    app->metrics = tds_metrics_free(app->metrics);
    app->loop = tds_loop_free(app->loop);
    tds_config_free(config_table, N_CONFIG, &app->cfg);
}

int main(int argc, char **argv)
{
    static struct app app;
    struct tds_stage_cmdline cl;
    enum tds_log_level level;
    const char *cmd = NULL;
    int rc;

    pthread_mutex_init(&app.mig_mu, NULL);
    app.flusher_fd = -1;

    if ((rc = tds_stage_args(&stage, argc, argv, TDS_STAGE_COMMANDS, &cl)) != TDS_STAGE_CONTINUE)
        return rc;
    optind = cl.next; /* the commands below read their arguments from here */
    if (optind < argc)
        cmd = argv[optind++];
    if (cmd && strcmp(cmd, "events") == 0)
        return tds_evtail_main(argc - optind, argv + optind, stdout);
    /* `tds-writer status --help`, `alerts --help`, `alerts list -h`: the help */
    for (int i = optind; cmd && i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            tds_stage_usage(&stage, stdout);
            return 0;
        }
    }
    if (optind < argc && (!cmd || strcmp(cmd, "alerts") != 0)) {
        fprintf(stderr, "tds-writer: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (cmd && strcmp(cmd, "migrate") != 0 && strcmp(cmd, "status") != 0 &&
        strcmp(cmd, "run") != 0 && strcmp(cmd, "alerts") != 0) {
        fprintf(stderr, "tds-writer: unknown command '%s' (see --help)\n", cmd);
        return 2;
    }
    if (tds_stage_config(&stage, &app.cfg, &level) != 0)
        return 2;
    if (!app.cfg.instance || !app.cfg.instance[0]) {
        char host[256] = "writer";

        gethostname(host, sizeof(host) - 1);
        free(app.cfg.instance);
        app.cfg.instance = strdup(host);
    }
    if (strcmp(app.cfg.toast_compression, "lz4") != 0 &&
        strcmp(app.cfg.toast_compression, "pglz") != 0 &&
        strcmp(app.cfg.toast_compression, "server") != 0) {
        fprintf(stderr,
                "tds-writer: invalid TDS_WRITER_TOAST_COMPRESSION '%s': lz4, pglz or server\n",
                app.cfg.toast_compression);
        tds_config_free(config_table, N_CONFIG, &app.cfg);
        return 2;
    }
    if (cl.print_config) {
        tds_config_print(config_table, N_CONFIG, &app.cfg, stdout);
        tds_config_free(config_table, N_CONFIG, &app.cfg);
        return 0;
    }
    {
        char perr[256];
        if (tds_pg_url_check(app.cfg.database_url, perr, sizeof(perr)) != 0) {
            fprintf(stderr, "tds-writer: invalid TDS_DATABASE_URL: %s\n", perr);
            tds_config_free(config_table, N_CONFIG, &app.cfg);
            return 2;
        }
    }
    if (cmd && strcmp(cmd, "migrate") == 0)
        rc = cmd_migrate(&app);
    else if (cmd && strcmp(cmd, "status") == 0)
        rc = cmd_status(&app);
    else if (cmd && strcmp(cmd, "alerts") == 0)
        rc = tds_alertd_cli(app.cfg.database_url, argc - optind, argv + optind, stdout);
    else
        rc = run(&app);
    app_free(&app);
    return rc;
}
