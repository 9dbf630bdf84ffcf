/* tds-fetcher — the only stage that talks to Zoho's API.
 *
 * Wires configuration, the loop, the sockets (PUSH pages to the processor,
 * SUB acks from the writers, PULL fetch requests), the database (store,
 * ownership locks), libcurl, and the modules that do the work: sync (runs,
 * pages, acks), schedule (timing, sync_requests), owner (advisory locks).
 * Subcommands `sync` and `auth` are in cli.c. SIGTERM: stop starting
 * anything, mark running runs failed (their requests stay open for the
 * next owner), release the locks, exit 0.
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "admin.h"
#include "bus.h"
#include "cli.h"
#include "config.h"
#include "events.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "msg.h"
#include "owner.h"
#include "pg.h"
#include "schedule.h"
#include "schema_version.h"
#include "stage.h"
#include "store.h"
#include "sync.h"
#include "util.h"

#define RECV_BATCH 64

struct settings {
    char *database_url;
    char *config;
    char *bind;
    char *processor;
    char *ack;
    char *admin;
    char *log_level;
    char *instance;
    char *events;
    char *curve_secret;
    char *curve_public;
    int64_t max_inflight;
    int64_t max_inflight_bytes;
    int64_t page_max_bytes;
    int64_t ack_timeout_ms;
    int64_t per_page;
    int64_t overlap_s;
    int64_t http_timeout_ms;
    int64_t token_timeout_ms;
    int64_t lockout_s;
    int64_t minute_ms;
    int64_t max_attempts;
    int64_t owner_check_ms;
    int64_t sweep_ms;
    int64_t run_retry_ms;
    int64_t stock_ms;
    int64_t detail_backoff_ms;
    int64_t detail_backoff_max_ms;
    bool schedule;
    int64_t hwm;
    int64_t health_stall_ms;
};

#define OFF(f) offsetof(struct settings, f)
static const struct tds_config_entry config_table[] = {
    {"TDS_DATABASE_URL", TDS_CFG_STR, NULL, TDS_CFG_REQUIRED | TDS_CFG_SECRET, 0, 0, OFF(database_url),
     "PostgreSQL connection (libpq URL or conninfo)"},
    {"TDS_CONFIG", TDS_CFG_STR, NULL, TDS_CFG_REQUIRED, 0, 0, OFF(config),
     "organizations file (JSON)"},
    {"TDS_FETCHER_BIND", TDS_CFG_STR, "tcp://127.0.0.1:5556", 0, 0, 0, OFF(bind),
     "PULL endpoint(s) for fetch-by-id messages; loopback by default: the socket takes unauthenticated messages, so a deployment names its interface (tcp://*:PORT)"},
    {"TDS_PROCESSOR_CONNECT", TDS_CFG_STR, "tcp://127.0.0.1:5557", 0, 0, 0, OFF(processor),
     "processor endpoint(s) to PUSH pages to (comma-separated)"},
    {"TDS_ACK_CONNECT", TDS_CFG_STR, "tcp://127.0.0.1:5559", 0, 0, 0, OFF(ack),
     "writer ack endpoint(s) to SUB to (comma-separated)"},
    {"TDS_ADMIN_LISTEN", TDS_CFG_STR, "0.0.0.0:9102", 0, 0, 0, OFF(admin),
     "admin HTTP host:port (/healthz /readyz /metrics /status)"},
    {"TDS_HEALTH_STALL_MS", TDS_CFG_INT, "30000", 0, 2000, 3600000, OFF(health_stall_ms), "/healthz answers 503 when the event loop has not completed an iteration for this long "
     "(an idle loop completes one every second)"},
    {"TDS_LOG_LEVEL", TDS_CFG_STR, "info", 0, 0, 0, OFF(log_level), "debug, info, warn or error"},
    {"TDS_INSTANCE", TDS_CFG_STR, "", 0, 0, 0, OFF(instance),
     "instance name used in this stage's origin (default: hostname)"},
    {"TDS_EVENTS_BIND", TDS_CFG_STR, "", 0, 0, 0, OFF(events),
     "PUB endpoint for tds.zoho.* events (empty: off)"},
    {"TDS_FETCHER_MAX_INFLIGHT", TDS_CFG_INT, "32", 0, 2, 100000, OFF(max_inflight),
     "pages sent and not yet acked by the writer (credits)"},
    {"TDS_FETCHER_MAX_INFLIGHT_BYTES", TDS_CFG_INT, "4194304", 0, 65536, INT64_MAX / 2,
     OFF(max_inflight_bytes),
     "no new list page is asked for while the pages in flight hold this many bytes (bounds the "
     "memory they take here and in the writer; raise it where Zoho's rate limit is not what "
     "paces a sync)"},
    {"TDS_FETCHER_PAGE_MAX_BYTES", TDS_CFG_INT, "8388608", 0, 65536, 16777216,
     OFF(page_max_bytes),
     "record JSON in one detail page: the details of a list page that add up to more go in "
     "several pages, so that the rows of large records (invoices of hundreds of lines) still "
     "fit in one message"},
    {"TDS_FETCHER_ACK_TIMEOUT_MS", TDS_CFG_INT, "30000", 0, 100, 3600000, OFF(ack_timeout_ms),
     "send a page again when no ack came within this time"},
    {"TDS_FETCHER_PER_PAGE", TDS_CFG_INT, "200", 0, 1, 200, OFF(per_page),
     "records per list page (Zoho's maximum is 200)"},
    {"TDS_FETCHER_OVERLAP_S", TDS_CFG_INT, "120", 0, 1, 86400, OFF(overlap_s),
     "incremental runs re-read this many seconds before the cursor (at least 1: Zoho's filter "
     "is strictly after a whole second, so 0 would skip changes in the cursor's own second)"},
    {"TDS_FETCHER_HTTP_TIMEOUT_MS", TDS_CFG_INT, "30000", 0, 100, 600000, OFF(http_timeout_ms),
     "whole-transfer timeout of one API call"},
    {"TDS_FETCHER_TOKEN_TIMEOUT_MS", TDS_CFG_INT, "15000", 0, 100, 600000, OFF(token_timeout_ms),
     "whole-transfer timeout of a token endpoint call"},
    {"TDS_FETCHER_LOCKOUT_S", TDS_CFG_INT, "1200", 0, 1, 86400, OFF(lockout_s),
     "after Zoho's 'Access Denied' on a token refresh, wait this long; a refresh denied again "
     "right after such a wait waits twice as long, at most twice this (Zoho's lockout lasts "
     "15-30 minutes and every try during it starts it over)"},
    {"TDS_FETCHER_MINUTE_MS", TDS_CFG_INT, "60000", 0, 100, 3600000, OFF(minute_ms),
     "length of Zoho's per-minute rate window (shorter only against the simulator)"},
    {"TDS_FETCHER_MAX_ATTEMPTS", TDS_CFG_INT, "6", 0, 1, 100, OFF(max_attempts),
     "tries of one API call on 5xx/timeouts/resets before the run fails"},
    {"TDS_FETCHER_OWNER_CHECK_MS", TDS_CFG_INT, "2000", 0, 100, 600000, OFF(owner_check_ms),
     "how often organization locks not held are tried again"},
    {"TDS_FETCHER_RUN_RETRY_MS", TDS_CFG_INT, "2000", 0, 10, 600000, OFF(run_retry_ms),
     "a failed run is tried again after this, doubling with each failure up to 15 times it "
     "(2 s, 4, 8, 16, 30 s), five times before its request fails"},
    {"TDS_FETCHER_SWEEP_MS", TDS_CFG_INT, "10000", 0, 100, 3600000, OFF(sweep_ms),
     "how often the rows stored only in list form are looked for, to fetch their detail"},
    {"TDS_FETCHER_STOCK_MS", TDS_CFG_INT, "10000", 0, 1000, 3600000, OFF(stock_ms),
     "how often items queued in tds.stock_refresh (the documents that moved their stock were "
     "written) are looked for, to fetch them again; at most one call of GET /itemdetails "
     "(100 items) a look, and looks no closer than the daily budget allows (the share of "
     "incremental_budget_pct)"},
    {"TDS_FETCHER_DETAIL_BACKOFF_MS", TDS_CFG_INT, "600000", 0, 100, 86400000,
     OFF(detail_backoff_ms),
     "a row in list form whose detail was asked for is not asked for again before this, "
     "doubling with each attempt (its detail was rejected, refused by Zoho, or answered without it)"},
    {"TDS_FETCHER_DETAIL_BACKOFF_MAX_MS", TDS_CFG_INT, "86400000", 0, 100, 604800000,
     OFF(detail_backoff_max_ms), "longest wait between two detail calls for a row in list form"},
    {"TDS_FETCHER_SCHEDULE", TDS_CFG_BOOL, "true", 0, 0, 0, OFF(schedule),
     "run the incremental and reconciliation schedule (false: only requests and fetches)"},
    {"TDS_FETCHER_HWM", TDS_CFG_INT, "1000", 0, 1, 1000000, OFF(hwm),
     "high-water mark (messages) of the sockets"},
    {"TDS_CURVE_SECRET_KEY", TDS_CFG_STR, "", TDS_CFG_SECRET, 0, 0, OFF(curve_secret),
     "pipeline CURVE server secret key (Z85), with TDS_CURVE_PUBLIC_KEY turns on encryption of "
     "every ZeroMQ link; empty = off"},
    {"TDS_CURVE_PUBLIC_KEY", TDS_CFG_STR, "", 0, 0, 0, OFF(curve_public),
     "pipeline CURVE server public key (Z85) matching TDS_CURVE_SECRET_KEY; empty = off"},
};
#define N_CONFIG (sizeof(config_table) / sizeof(config_table[0]))

struct app {
    struct settings cfg;
    struct tds_orgs *orgs;
    struct tds_loop *loop;
    struct tds_bus *bus;
    struct tds_bus_sock *push, *sub, *pull;
    struct tds_metrics *metrics;
    struct tds_events *events;
    struct tds_admin *admin;
    struct tds_store *store;
    struct tds_http *http;
    struct tds_sync *sync;
    struct tds_owner *owner;
    struct tds_schedule *sched;
    int64_t status_timer;
    pthread_mutex_t status_lock;
    char *status;          /* JSON made on the loop thread, read by the admin thread */
    struct tds_log_limit recv_log;
    bool draining;
};

static char *status_cb(void *ud)
{
    struct app *a = ud;
    pthread_mutex_lock(&a->status_lock);
    char *s = strdup(a->status ? a->status : "{\"stage\":\"fetcher\"}");
    pthread_mutex_unlock(&a->status_lock);
    return s;
}

static void on_status_tick(struct tds_loop *loop, void *ud)
{
    (void)loop;
    struct app *a = ud;
    char *s = tds_sync_status_json(a->sync);
    pthread_mutex_lock(&a->status_lock);
    free(a->status);
    a->status = s;
    pthread_mutex_unlock(&a->status_lock);
    if (a->draining)
        return;
    bool db = tds_store_ok(a->store);
    bool down = tds_bus_peer_count(a->push) > 0;
    int schema;
    if (!db) {
        tds_admin_set_ready(a->admin, false, "database unreachable");
    } else if (!tds_owner_schema_ok(a->owner, &schema)) {
        char why[160];
        if (schema < 0)
            snprintf(why, sizeof(why), "database schema not read yet");
        else
            snprintf(why, sizeof(why),
                     "database schema at version %d, this release needs %d: run `tds-writer migrate`",
                     schema, TDS_SCHEMA_VERSION);
        tds_admin_set_ready(a->admin, false, why);
    } else if (!down) {
        tds_admin_set_ready(a->admin, false, "no processor to send pages to");
    } else {
        tds_admin_set_ready(a->admin, true, NULL);
    }
    tds_bus_refresh(a->push);
    tds_bus_refresh(a->sub);
}

static void on_owner(const char *org, bool owned, void *ud)
{
    struct app *a = ud;
    tds_sync_set_owned(a->sync, org, owned);
    if (a->sched)
        tds_schedule_owned(a->sched, org, owned);
}

static void on_ack(struct tds_loop *loop, short revents, void *ud)
{
    (void)loop;
    (void)revents;
    struct app *a = ud;
    for (int i = 0; i < RECV_BATCH; i++) {
        char *topic = NULL, *body = NULL;
        size_t tlen = 0, blen = 0;
        int more = 0;
        int rc = tds_bus_recv(a->sub, &topic, &tlen, 1024, ZMQ_DONTWAIT, &more);
        if (rc == -EAGAIN)
            break;
        if (rc != 0 || !more) {
            free(topic);
            if (more)
                tds_bus_skip_rest(a->sub);
            continue;
        }
        rc = tds_bus_recv(a->sub, &body, &blen, TDS_MSG_MAX_FRAME, ZMQ_DONTWAIT, &more);
        if (more) /* acks are two frames: drop anything beyond, oversized parts too */
            tds_bus_skip_rest(a->sub);
        if (rc == 0) {
            struct tds_msg m;
            int drc = tds_msg_decode(body, blen, &m);
            if (drc == 0 && m.type == TDS_MSG_ACK)
                tds_sync_on_ack(a->sync, &m.u.ack);
            else if (drc != 0)
                tds_log_limited(&a->recv_log, TDS_LOG_WARN, NULL, "could not decode an ack: %s, skipping",
                                tds_msg_strerror(drc));
            tds_msg_clear(&m);
        }
        free(topic);
        free(body);
    }
}

static void on_fetch(struct tds_loop *loop, short revents, void *ud)
{
    (void)loop;
    (void)revents;
    struct app *a = ud;
    for (int i = 0; i < RECV_BATCH && !a->draining; i++) {
        char *body = NULL;
        size_t blen = 0;
        int more = 0;
        int rc = tds_bus_recv(a->pull, &body, &blen, 1u << 20, ZMQ_DONTWAIT, &more);
        if (rc == -EAGAIN)
            break;
        if (more) /* a fetch is one frame: drop the rest, oversized parts too */
            tds_bus_skip_rest(a->pull);
        if (rc == 0) {
            struct tds_msg m;
            int drc = tds_msg_decode(body, blen, &m);
            if (drc == 0 && m.type == TDS_MSG_FETCH)
                tds_sync_on_fetch(a->sync, &m.u.fetch, m.id, 0);
            else
                tds_log_limited(&a->recv_log, TDS_LOG_WARN, NULL,
                                "received a message that is not a fetch (%s), skipping",
                                drc ? tds_msg_strerror(drc) : tds_msg_type_name(m.type));
            tds_msg_clear(&m);
        } else if (rc == TDS_E_TOO_LARGE) {
            tds_log_limited(&a->recv_log, TDS_LOG_WARN, NULL,
                            "received a fetch over 1 MiB (%zu bytes), skipping", blen);
        }
        free(body);
    }
}

static void on_drain(struct tds_loop *loop, void *ud)
{
    struct app *a = ud;
    a->draining = true;
    tds_admin_set_ready(a->admin, false, "stopping");
    tds_info("stopping: no new runs, releasing organizations");
    tds_schedule_stop(a->sched);
    tds_sync_stop(a->sync, "fetcher shut down before the run finished");
    tds_owner_release(a->owner);
    tds_loop_stop(loop);
}

static const struct tds_stage stage = {
    .name = "fetcher",
    .usage = "usage: tds-fetcher [--help] [--version] [--print-config]\n"
             "       tds-fetcher sync --org ORG [--entity NAME|all] [--mode full|incremental|reconcile] [--detach]\n"
             "       tds-fetcher sync --follow ID\n"
             "       tds-fetcher auth exchange --org ORG[,ORG...] --code CODE|-\n"
             "       tds-fetcher auth status\n"
             "\n"
             "Fetches Zoho Inventory/Books data for the organizations in TDS_CONFIG that this\n"
             "replica owns (one PostgreSQL advisory lock per organization), within Zoho's rate\n"
             "limits, and sends pages to the processor until the writer acks them.\n"
             "\n"
             "  sync   queue a sync request and follow it to completion (unless --detach);\n"
             "         --follow ID follows a request queued before\n"
             "  auth   exchange a self-client grant code for a refresh token; show token state\n"
             "\n",
    .table = config_table,
    .n = N_CONFIG,
};

int main(int argc, char **argv)
{
    struct tds_stage_cmdline cl = {0};
    struct app a;
    char err[512], host[256], origin[320];
    int rc, status = 1;
    enum tds_log_level level;

    memset(&a, 0, sizeof(a));
    pthread_mutex_init(&a.status_lock, NULL);
    bool sub = argc > 1 && (strcmp(argv[1], "sync") == 0 || strcmp(argv[1], "auth") == 0);
    if (!sub && (rc = tds_stage_args(&stage, argc, argv, 0, &cl)) != TDS_STAGE_CONTINUE)
        return rc;
    if (sub && (rc = tds_cli_help(argc - 1, argv + 1)) >= 0)
        return rc; /* usage needs no settings */
    if (tds_stage_config(&stage, &a.cfg, &level) != 0)
        return 2;
    {
        char h[256];
        uint16_t port;
        if (tds_parse_hostport(a.cfg.admin, h, sizeof(h), &port) != 0) {
            fprintf(stderr, "tds-fetcher: invalid TDS_ADMIN_LISTEN: '%s'\n", a.cfg.admin);
            tds_config_free(config_table, N_CONFIG, &a.cfg);
            return 2;
        }
    }
    if (cl.print_config) {
        tds_config_print(config_table, N_CONFIG, &a.cfg, stdout);
        tds_config_free(config_table, N_CONFIG, &a.cfg);
        return 0;
    }
    if (tds_pg_url_check(a.cfg.database_url, err, sizeof(err)) != 0) {
        fprintf(stderr, "tds-fetcher: invalid TDS_DATABASE_URL: %s\n", err);
        tds_config_free(config_table, N_CONFIG, &a.cfg);
        return 2;
    }
    if (tds_orgs_load_api(a.cfg.config, &a.orgs, err, sizeof(err)) != 0) {
        fprintf(stderr, "tds-fetcher: invalid TDS_CONFIG: %s\n", err);
        tds_config_free(config_table, N_CONFIG, &a.cfg);
        return 2;
    }
    tds_stage_instance(a.cfg.instance, host, sizeof(host));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (sub) {
        tds_log_init("fetcher", TDS_LOG_WARN);
        struct tds_cli_env env = {a.cfg.database_url, a.orgs, a.cfg.admin, host,
                                  (long long)a.cfg.token_timeout_ms};
        status = tds_cli_main(argc - 1, argv + 1, &env);
        goto out;
    }
    snprintf(origin, sizeof(origin), "fetcher.%s", host);
    a.recv_log.interval_ms = 30000;

    struct tds_bus_opts bopts = {.hwm = (int)a.cfg.hwm, .linger_ms = 1000, .reconnect_ms = 100};
    struct tds_http_cfg hcfg = {.connect_timeout_ms = 5000};
    if ((rc = tds_loop_new(&a.loop)) < 0 || (rc = tds_metrics_new(&a.metrics)) < 0 ||
        (rc = tds_bus_new(&a.bus)) < 0) {
        tds_error("could not start: %s", strerror(-rc));
        goto out;
    }
    /* Before any socket binds or connects, the events PUB included. */
    if ((rc = tds_bus_set_curve(a.bus, a.cfg.curve_secret, a.cfg.curve_public)) != 0) {
        if (rc > 0)
            fprintf(stderr, "tds-fetcher: invalid %s (TDS_CURVE_SECRET_KEY and TDS_CURVE_PUBLIC_KEY: "
                    "both set, 40-character Z85, one keypair)\n",
                    a.cfg.curve_secret && strlen(a.cfg.curve_secret) == 40 ? "TDS_CURVE_PUBLIC_KEY"
                                                                           : "TDS_CURVE_SECRET_KEY");
        else
            fprintf(stderr, "tds-fetcher: invalid TDS_CURVE_SECRET_KEY: libzmq has no CURVE support\n");
        status = 2;
        goto out;
    }
    if ((rc = tds_events_new(&a.events, a.bus, "fetcher", a.cfg.events)) != 0) {
        tds_error("could not bind TDS_EVENTS_BIND '%s': %s", a.cfg.events,
                  rc < 0 ? zmq_strerror(-rc) : "invalid");
        goto out;
    }
    if ((rc = tds_bus_sock_new(a.bus, ZMQ_PUSH, &bopts, &a.push)) < 0 ||
        (rc = tds_bus_sock_new(a.bus, ZMQ_SUB, &bopts, &a.sub)) < 0 ||
        (rc = tds_bus_sock_new(a.bus, ZMQ_PULL, &bopts, &a.pull)) < 0 ||
        (rc = tds_store_new(&a.store, a.cfg.database_url, "tds-fetcher")) < 0 ||
        (rc = tds_http_new(&a.http, a.loop, &hcfg)) < 0) {
        tds_error("could not start: %s", strerror(-rc));
        goto out;
    }
    if ((rc = tds_bus_bind(a.pull, a.cfg.bind)) < 0) {
        tds_error("could not bind TDS_FETCHER_BIND '%s': %s", a.cfg.bind, zmq_strerror(-rc));
        goto out;
    }
    if ((rc = tds_bus_connect(a.push, a.cfg.processor)) < 0) {
        tds_error("could not connect to TDS_PROCESSOR_CONNECT '%s': %s", a.cfg.processor,
                  zmq_strerror(-rc));
        goto out;
    }
    if ((rc = tds_bus_connect(a.sub, a.cfg.ack)) < 0 || (rc = tds_bus_subscribe(a.sub, origin)) < 0) {
        tds_error("could not connect to TDS_ACK_CONNECT '%s': %s", a.cfg.ack, zmq_strerror(-rc));
        goto out;
    }
    struct tds_sync_cfg scfg = {
        .origin = origin,
        .max_inflight = a.cfg.max_inflight,
        .max_inflight_bytes = a.cfg.max_inflight_bytes,
        .page_max_bytes = a.cfg.page_max_bytes,
        .ack_timeout_ms = a.cfg.ack_timeout_ms,
        .per_page = a.cfg.per_page,
        .overlap_s = a.cfg.overlap_s,
        .http_timeout_ms = a.cfg.http_timeout_ms,
        .token_timeout_ms = a.cfg.token_timeout_ms,
        .lockout_ms = a.cfg.lockout_s * 1000,
        .minute_ms = a.cfg.minute_ms,
        .max_attempts = a.cfg.max_attempts,
        .run_retry_ms = a.cfg.run_retry_ms,
        .sweep_every_ms = a.cfg.sweep_ms,
        .sweep_backoff_ms = a.cfg.detail_backoff_ms,
        .sweep_backoff_max_ms = a.cfg.detail_backoff_max_ms,
        .stock_every_ms = a.cfg.stock_ms,
        .owner_check_ms = a.cfg.owner_check_ms,
    };
    if ((rc = tds_sync_new(&a.sync, a.loop, a.push, a.store, a.http, a.metrics, a.events, a.orgs,
                           &scfg)) < 0 ||
        (rc = tds_schedule_new(&a.sched, a.loop, a.store, a.sync, a.orgs, host, a.cfg.schedule, 1000)) < 0 ||
        (rc = tds_owner_new(&a.owner, a.loop, a.cfg.database_url, a.orgs, a.cfg.owner_check_ms,
                            on_owner, &a)) < 0) {
        tds_error("could not start: %s", strerror(-rc));
        goto out;
    }
    if ((rc = tds_loop_add_zsock(a.loop, tds_bus_sock_raw(a.sub), ZMQ_POLLIN, on_ack, &a)) < 0 ||
        (rc = tds_loop_add_zsock(a.loop, tds_bus_sock_raw(a.pull), ZMQ_POLLIN, on_fetch, &a)) < 0) {
        tds_error("could not start: %s", strerror(-rc));
        goto out;
    }
    a.status_timer = tds_loop_timer_add(a.loop, 0, 1000, on_status_tick, &a);
    tds_loop_on_drain(a.loop, on_drain, &a);
    if ((rc = tds_admin_new(&a.admin, a.cfg.admin, a.metrics, a.loop)) < 0 ||
        (tds_admin_set_status_cb(a.admin, status_cb, &a), (rc = tds_admin_start(a.admin)) < 0)) {
        tds_error("could not start the admin server on '%s': %s", a.cfg.admin,
                  rc < 0 ? strerror(-rc) : "error");
        goto out;
    }
    tds_admin_set_stall_ms(a.admin, a.cfg.health_stall_ms);
    tds_admin_set_ready(a.admin, false, "starting");
    tds_info("started: %zu organizations, pages to %s, acks from %s, fetches on %s, origin %s",
             a.orgs->n, a.cfg.processor, a.cfg.ack, a.cfg.bind, origin);
    rc = tds_loop_run(a.loop);
    if (rc < 0) {
        tds_error("event loop failed: %s", strerror(-rc));
        goto out;
    }
    tds_info("stopped");
    status = 0;
out:
    if (a.admin)
        tds_admin_set_ready(a.admin, false, "stopping");
    a.admin = tds_admin_free(a.admin);
    a.owner = tds_owner_free(a.owner);
    a.sched = tds_schedule_free(a.sched);
    a.sync = tds_sync_free(a.sync);
    a.http = tds_http_free(a.http);
    a.store = tds_store_free(a.store);
    a.events = tds_events_free(a.events);
    a.push = tds_bus_sock_free(a.push);
    a.sub = tds_bus_sock_free(a.sub);
    a.pull = tds_bus_sock_free(a.pull);
    a.bus = tds_bus_free(a.bus);
    a.loop = tds_loop_free(a.loop);
    a.metrics = tds_metrics_free(a.metrics);
    free(a.status);
    pthread_mutex_destroy(&a.status_lock);
    a.orgs = tds_orgs_free(a.orgs);
    tds_config_free(config_table, N_CONFIG, &a.cfg);
    curl_global_cleanup();
    return status;
}
