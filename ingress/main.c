/* tds-ingress — Zoho webhooks in, verified, deduplicated and journaled, out to
 * the processor (events) and the fetcher (fetch by id).
 *
 * Wires config, the organizations file, the journal (and its recovery scan),
 * the dedupe window, the HTTP server, forwarding, admin and metrics, and runs
 * the `replay` subcommand. SIGTERM: stop accepting connections, let requests
 * in flight get their answer, exit 0; unacked entries stay in the journal and
 * are sent again by the next start.
 */
#include <errno.h>
#include <getopt.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "admin.h"
#include "bus.h"
#include "config.h"
#include "dedupe.h"
#include "entry.h"
#include "events.h"
#include "forward.h"
#include "http.h"
#include "journal.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "msg.h"
#include "stage.h"
#include "util.h"
#include "ztime.h"

struct settings {
    char *listen;
    char *journal_dir;
    char *config;
    char *processor;
    char *fetcher;
    char *acks;
    char *admin;
    char *log_level;
    char *instance;
    char *events;
    char *curve_secret;
    char *curve_public;
    int64_t max_body;
    int64_t body_memory;
    int64_t dedupe_s;
    int64_t dedupe_max;
    int64_t journal_max;
    int64_t max_unacked;
    int64_t segment_bytes;
    int64_t retention_s;
    int64_t sync_delay_us;
    int64_t ack_timeout_ms;
    int64_t resend_max_ms;
    int64_t threads;
    bool thread_per_conn;
    int64_t sync_wait_ms;
    bool use_poll;
    int64_t conn_limit;
    int64_t per_ip_limit;
    int64_t timeout_s;
    int64_t body_deadline_s;
    int64_t header_deadline_s;
    int64_t sig_max_age_s;
    int64_t hwm;
    bool fetch_acks;
    int64_t health_stall_ms;
};

#define S(f) offsetof(struct settings, f)
static const struct tds_config_entry config_table[] = {
    {"TDS_INGRESS_LISTEN", TDS_CFG_STR, "0.0.0.0:8080", 0, 0, 0, S(listen),
     "webhook HTTP host:port (POST, PUT or DELETE /webhooks/zoho/{org_id})"},
    {"TDS_INGRESS_JOURNAL_DIR", TDS_CFG_STR, "/var/lib/tds/journal", 0, 0, 0, S(journal_dir),
     "directory of the durable webhook journal (one ingress each: held locked while it runs)"},
    {"TDS_CONFIG", TDS_CFG_STR, NULL, TDS_CFG_REQUIRED, 0, 0, S(config),
     "organizations file (JSON): org ids and webhook secrets"},
    {"TDS_PROCESSOR_CONNECT", TDS_CFG_STR, "tcp://127.0.0.1:5557", 0, 0, 0, S(processor),
     "processor endpoint(s) for event messages (comma-separated)"},
    {"TDS_FETCHER_CONNECT", TDS_CFG_STR, "tcp://127.0.0.1:5556", 0, 0, 0, S(fetcher),
     "fetcher endpoint(s) for fetch-by-id messages (comma-separated)"},
    {"TDS_ACK_CONNECT", TDS_CFG_STR, "tcp://127.0.0.1:5559", 0, 0, 0, S(acks),
     "writer ack PUB endpoint(s) (comma-separated)"},
    {"TDS_ADMIN_LISTEN", TDS_CFG_STR, "0.0.0.0:9101", 0, 0, 0, S(admin),
     "admin HTTP host:port (/healthz /readyz /metrics /status)"},
    {"TDS_HEALTH_STALL_MS", TDS_CFG_INT, "30000", 0, 2000, 3600000, S(health_stall_ms), "/healthz answers 503 when the event loop has not completed an iteration for this long "
     "(an idle loop completes one every second)"},
    {"TDS_LOG_LEVEL", TDS_CFG_STR, "info", 0, 0, 0, S(log_level), "debug, info, warn or error"},
    {"TDS_INSTANCE", TDS_CFG_STR, "", 0, 0, 0, S(instance),
     "instance name used in this stage's origin (default: hostname)"},
    {"TDS_EVENTS_BIND", TDS_CFG_STR, "", 0, 0, 0, S(events),
     "PUB endpoint for tds.zoho.webhook.* events (empty: off)"},
    {"TDS_INGRESS_MAX_BODY", TDS_CFG_INT, "1048576", 0, 1024, 16 * 1024 * 1024, S(max_body),
     "largest webhook body in bytes (more: 413; a chunked body, its connection closed at the "
     "chunk that passes it); its JSON, form-decoded, is at most 1 MiB "
     "whatever this says, as the processor reads no larger record"},
    {"TDS_INGRESS_BODY_MEMORY", TDS_CFG_INT, "67108864", 0, 1024, INT64_MAX / 2, S(body_memory),
     "bytes of request bodies held in memory at once, all connections together (at least "
     "TDS_INGRESS_MAX_BODY). A body counts as it arrives (its buffer, at most twice what came), "
     "so one announced and not sent holds nothing. A request whose Content-Length does not fit "
     "in what is free is answered 503 with Retry-After before its body is read; a body that "
     "cannot grow is read to its end without being kept, answered 503 and its connection "
     "closed. It also bounds what waits elsewhere: webhooks journaled and waiting for their "
     "sync at most half of it (more: 503), and messages queued to the processor and fetcher "
     "at most half of it (each at least twice TDS_INGRESS_MAX_BODY). Keep it well under the memory limit (the k8s manifest's is 384 MiB)"},
    {"TDS_INGRESS_DEDUPE_S", TDS_CFG_INT, "600", 0, 0, 7 * 86400, S(dedupe_s),
     "seconds an event id is remembered as a duplicate"},
    {"TDS_INGRESS_DEDUPE_MAX", TDS_CFG_INT, "1000000", 0, 16, 100000000, S(dedupe_max),
     "event ids remembered at most (bounds memory, about 40 bytes each)"},
    {"TDS_INGRESS_JOURNAL_MAX_BYTES", TDS_CFG_INT, "1073741824", 0, 4096, INT64_MAX / 2,
     S(journal_max), "journal size bound in bytes (over it, with nothing acked to drop: 503)"},
    {"TDS_INGRESS_MAX_UNACKED", TDS_CFG_INT, "200000", 0, 1, 100000000, S(max_unacked),
     "journaled webhooks waiting for the writer's ack at most, each holding ~250 bytes of "
     "memory until acked (200,000: ~48 MiB, within the k8s manifest's 384 MiB with the other "
     "budgets: ingress/DESIGN.md); from the bound on, webhooks get 503 and /readyz 503 until "
     "acks bring the count under nine tenths of it. A restart finding more keeps them all"},
    {"TDS_INGRESS_SEGMENT_BYTES", TDS_CFG_INT, "67108864", 0, 1024, 1073741824,
     S(segment_bytes), "journal segment file size (at most half of TDS_INGRESS_JOURNAL_MAX_BYTES)"},
    {"TDS_INGRESS_RETENTION_S", TDS_CFG_INT, "86400", 0, 0, 365 * 86400, S(retention_s),
     "seconds acked journal segments are kept for replay (within the size bound)"},
    {"TDS_INGRESS_SYNC_DELAY_US", TDS_CFG_INT, "1000", 0, 0, 100000, S(sync_delay_us),
     "a group commit of fewer than 8 webhooks waits up to this many microseconds for more to "
     "share its fdatasync, while webhooks arrive closer together than that (fewer disk "
     "flushes; only the 200 waits, forwarding does not); 0 = never"},
    {"TDS_INGRESS_ACK_TIMEOUT_MS", TDS_CFG_INT, "10000", 0, 10, 3600000, S(ack_timeout_ms),
     "resend an entry not acked within this time after its first send"},
    {"TDS_INGRESS_RESEND_MAX_MS", TDS_CFG_INT, "60000", 0, 10, 86400000, S(resend_max_ms),
     "the wait for an ack doubles with each resend of an entry, from TDS_INGRESS_ACK_TIMEOUT_MS "
     "up to this: a message no stage acks (a stage down for long, one that dies on it) costs a "
     "send a minute; the ack timeout or less resends at a fixed interval"},
    {"TDS_INGRESS_THREADS", TDS_CFG_INT, "2", 0, 1, 256, S(threads),
     "HTTP worker threads (thread-pool mode)"},
    {"TDS_INGRESS_THREAD_PER_CONNECTION", TDS_CFG_BOOL, "false", 0, 0, 0, S(thread_per_conn),
     "one thread per connection that blocks for the sync, instead of suspend/resume"},
    {"TDS_INGRESS_SYNC_WAIT_MS", TDS_CFG_INT, "30000", 0, 1, 600000, S(sync_wait_ms),
     "with a thread per connection: longest a request blocks for its fdatasync; past it the "
     "answer is 503 (not durable yet) and Zoho sends the webhook again"},
    {"TDS_INGRESS_POLL", TDS_CFG_BOOL, "false", 0, 0, 0, S(use_poll),
     "worker threads poll() their connections instead of epoll: cheaper per request with a "
     "few hundred connections, dearer with thousands (ingress/DESIGN.md)"},
    {"TDS_INGRESS_CONN_LIMIT", TDS_CFG_INT, "2048", 0, 1, 100000, S(conn_limit),
     "concurrent HTTP connections at most"},
    {"TDS_INGRESS_PER_IP_LIMIT", TDS_CFG_INT, "512", 0, 1, 100000, S(per_ip_limit),
     "concurrent HTTP connections per client address at most"},
    {"TDS_INGRESS_TIMEOUT_S", TDS_CFG_INT, "15", 0, 1, 3600, S(timeout_s),
     "idle connection timeout: a client silent this long (headers or body) is dropped"},
    {"TDS_INGRESS_BODY_DEADLINE_S", TDS_CFG_INT, "60", 0, 1, 3600, S(body_deadline_s),
     "a body still incomplete this long after its headers is cut and its connection closed "
     "(a client trickling bytes under the idle timeout would hold its share of "
     "TDS_INGRESS_BODY_MEMORY for ever)"},
    {"TDS_INGRESS_HEADER_DEADLINE_S", TDS_CFG_INT, "10", 0, 1, 3600, S(header_deadline_s),
     "a request's headers still incomplete this long after their first byte: the connection is "
     "closed, counted in tds_ingress_headers_cut_total (a client sending a byte at a time under "
     "the idle timeout would hold its connection for ever); checked each second. A keep-alive "
     "connection idle between requests is left to TDS_INGRESS_TIMEOUT_S"},
    {"TDS_INGRESS_SIGNATURE_MAX_AGE_S", TDS_CFG_INT, "300", 0, 0, 86400, S(sig_max_age_s),
     "age limit of timestamped (t=,v=) signatures"},
    {"TDS_INGRESS_HWM", TDS_CFG_INT, "10000", 0, 1, 1000000, S(hwm),
     "high-water mark (messages) of the outgoing sockets"},
    {"TDS_INGRESS_FETCH_ACKS", TDS_CFG_BOOL, "true", 0, 0, 0, S(fetch_acks),
     "keep fetch-by-id entries until the writer acks the page that answers them "
     "(false: released once the fetcher takes them)"},
    {"TDS_CURVE_SECRET_KEY", TDS_CFG_STR, "", TDS_CFG_SECRET, 0, 0, S(curve_secret),
     "pipeline CURVE server secret key (Z85), with TDS_CURVE_PUBLIC_KEY turns on encryption of "
     "every ZeroMQ link; empty = off"},
    {"TDS_CURVE_PUBLIC_KEY", TDS_CFG_STR, "", 0, 0, 0, S(curve_public),
     "pipeline CURVE server public key (Z85) matching TDS_CURVE_SECRET_KEY; empty = off"},
};
#undef S

/* CURVE on the bus before any socket binds or connects. Returns 0, or 2 (the
 * exit status) after one line naming the setting. */
static int curve_on(struct tds_bus *bus, const struct settings *cfg)
{
    int r = tds_bus_set_curve(bus, cfg->curve_secret, cfg->curve_public);

    if (r > 0)
        fprintf(stderr, "tds-ingress: invalid %s (TDS_CURVE_SECRET_KEY and TDS_CURVE_PUBLIC_KEY: "
                "both set, 40-character Z85, one keypair)\n",
                cfg->curve_secret && strlen(cfg->curve_secret) == 40 ? "TDS_CURVE_PUBLIC_KEY"
                                                                     : "TDS_CURVE_SECRET_KEY");
    else if (r < 0)
        fprintf(stderr, "tds-ingress: invalid TDS_CURVE_SECRET_KEY: libzmq has no CURVE support\n");
    return r ? 2 : 0;
}
#define N_CONFIG (sizeof(config_table) / sizeof(config_table[0]))

struct app {
    struct settings cfg;
    struct tds_orgs *orgs;
    struct tds_loop *loop;
    struct tds_bus *bus;
    struct tds_metrics *metrics;
    struct tds_events *events;
    struct tds_admin *admin;
    struct tds_journal *journal;
    struct tds_dedupe *dedupe;
    struct tds_forward *forward;
    /* set once the server listens, read by the journal's sync thread too */
    struct tds_http *_Atomic http;
    struct tds_series *h_batch, *h_fsync, *g_no_space, *g_unacked_full;
    int64_t dedupe_window_ms;
    /* unacked records the start-up scan could not decode: acked once the
     * journal is open, or their segments could never be dropped */
    uint64_t *dead;
    size_t n_dead, cap_dead;
    int64_t drain_timer;
    /* The journal as the tick last saw it: what /readyz says and the log
     * lines of each change. A failure after a full disk still says so. */
    enum { JOURNAL_OK, JOURNAL_BACKLOG, JOURNAL_NO_SPACE, JOURNAL_FAILED } journal_state;
};

/* ---- journal callbacks (sync thread) ---- */

static void on_synced(uint64_t synced, bool failed, void *ud)
{
    struct app *a = ud;
    struct tds_http *h = a->http;

    if (h)
        tds_http_synced(h, synced, failed);
    tds_forward_synced(a->forward, synced, failed);
}

/* A write found no room: the waiting requests get 503 now (their entries
 * stay queued and are written when there is room). */
static void on_stalled(uint64_t synced, void *ud)
{
    struct app *a = ud;
    struct tds_http *h = a->http;

    if (h)
        tds_http_synced(h, synced, true);
}

static void on_syncing(uint64_t upto, void *ud)
{
    tds_forward_syncing(((struct app *)ud)->forward, upto);
}

static void on_stats(uint64_t batch, double s, void *ud)
{
    struct app *a = ud;

    if (batch)
        tds_series_observe(a->h_batch, (double)batch);
    tds_series_observe(a->h_fsync, s);
}

/* Journal scan at start-up: resend what is unacked, refill the dedupe window. */
static int on_recovered(const struct tds_journal_rec *r, void *ud)
{
    struct app *a = ud;
    struct tds_entry e;

    if (tds_entry_decode(r->payload, r->len, &e)) {
        if (r->acked)
            return 0;
        tds_error("journal record %llu checks out but is not an ingress entry this version "
                  "reads: it cannot be sent, and is released (a dead letter)",
                  (unsigned long long)r->seq);
        if (a->n_dead == a->cap_dead) {
            size_t cap = a->cap_dead ? a->cap_dead * 2 : 16;
            uint64_t *d = realloc(a->dead, cap * sizeof(*d));

            if (!d)
                return -ENOMEM;
            a->dead = d;
            a->cap_dead = cap;
        }
        a->dead[a->n_dead++] = r->seq;
        return 0;
    }
    if (tds_wall_ms() - r->wall_ms <= a->dedupe_window_ms && e.msgid_len > 3)
        tds_dedupe_insert(a->dedupe, e.msgid + 3, e.msgid_len - 3, r->wall_ms, r->seq);
    if (!r->acked)
        return tds_forward_recover(a->forward, r->seq, &r->loc, r->payload, r->len);
    return 0;
}

/* ---- loop callbacks ---- */

static char *status_json(void *ud)
{
    struct app *a = ud;
    char *s = malloc(512);

    if (!s)
        return NULL;
    snprintf(s, 512,
             "{\"stage\":\"ingress\",\"journal_bytes\":%llu,\"journal_segments\":%zu,"
             "\"unacked\":%llu,\"unacked_full\":%s,\"journal_failed\":%s,"
             "\"journal_no_space\":%s,\"http_inflight\":%zu,\"dedupe_size\":%zu}",
             (unsigned long long)tds_journal_bytes(a->journal), tds_journal_segments(a->journal),
             (unsigned long long)tds_journal_unacked(a->journal),
             tds_journal_backlog_full(a->journal) ? "true" : "false",
             tds_journal_failed(a->journal) ? "true" : "false",
             tds_journal_no_space(a->journal) ? "true" : "false",
             a->http ? tds_http_inflight(a->http) : (size_t)0, tds_dedupe_size(a->dedupe));
    return s;
}

/* What /readyz, the gauges and the log say of the journal: each change is
 * logged once. Called each second, and at start-up before anything is
 * answered (a restart may find the unacked bound reached). */
static void journal_check(struct app *a)
{
    bool no_space = tds_journal_no_space(a->journal);
    bool backlog = tds_journal_backlog_full(a->journal);
    int st = tds_journal_failed(a->journal) ? JOURNAL_FAILED
             : no_space                      ? JOURNAL_NO_SPACE
             : backlog                       ? JOURNAL_BACKLOG
                                             : JOURNAL_OK;
    int was = (int)a->journal_state;

    if (st == was)
        goto gauges;
    if (st == JOURNAL_FAILED) {
        /* /healthz too: the liveness probe restarts the process, and the
         * restart replays what the journal holds */
        tds_admin_set_ready(a->admin, false, "journal failed (disk error), restart needed");
        tds_admin_set_failed(a->admin, "journal failed (disk error), restart needed");
        tds_error("journal failed: a write or fdatasync error; answering 503 until restarted");
    } else if (st == JOURNAL_NO_SPACE) {
        tds_admin_set_ready(a->admin, false, "journal: no space left on its disk, retrying");
        tds_error("journal: no space left on its disk; answering 503 and writing the "
                  "waiting batch again every %d ms until it fits", TDS_JOURNAL_RETRY_MS);
    } else if (st == JOURNAL_BACKLOG) {
        tds_admin_set_ready(a->admin, false,
                            "journal: TDS_INGRESS_MAX_UNACKED webhooks wait for the writer's "
                            "ack; refusing new ones until acks make room");
        tds_error("journal: %llu webhooks wait for the writer's ack, the bound "
                  "TDS_INGRESS_MAX_UNACKED (%lld); answering 503 until acks bring them under "
                  "%llu",
                  (unsigned long long)tds_journal_unacked(a->journal),
                  (long long)a->cfg.max_unacked,
                  (unsigned long long)tds_journal_backlog_resume(a->journal));
    } else {
        tds_admin_set_ready(a->admin, true, NULL);
        if (was == JOURNAL_BACKLOG)
            tds_info("journal: acks made room (unacked now %llu); accepting webhooks",
                     (unsigned long long)tds_journal_unacked(a->journal));
        else
            tds_info("journal: the disk has room again; accepting webhooks");
    }
    a->journal_state = st;
gauges:
    /* last: whoever sees a gauge set finds /readyz and the log saying so */
    tds_series_set(a->g_no_space, no_space ? 1 : 0);
    tds_series_set(a->g_unacked_full, backlog ? 1 : 0);
}

static void on_tick(struct tds_loop *loop, void *ud)
{
    struct app *a = ud;

    (void)loop;
    tds_forward_tick(a->forward);
    if (a->http)
        tds_http_tick(a->http);
    /* the processor, fetcher and writer names (forward.c's sockets): replicas
     * come and go, and a name may not resolve yet at start-up */
    tds_bus_refresh_all(a->bus);
    journal_check(a);
}

static void on_drain_check(struct tds_loop *loop, void *ud)
{
    struct app *a = ud;

    if (tds_http_inflight(a->http) == 0)
        tds_loop_stop(loop);
}

static void on_drain(struct tds_loop *loop, void *ud)
{
    struct app *a = ud;

    tds_admin_set_ready(a->admin, false, "stopping");
    tds_http_quiesce(a->http); /* first: the line below says it is done */
    tds_info("stopping: no new connections, finishing %zu requests in flight (%zu unacked stay "
             "in the journal)",
             tds_http_inflight(a->http), tds_forward_unacked(a->forward));
    a->drain_timer = tds_loop_timer_add(loop, 0, 20, on_drain_check, a);
}

/* Each connection takes a file descriptor, and so does each new journal
 * segment: at a soft limit of 1,024 (a common default) the connections
 * allowed by TDS_INGRESS_CONN_LIMIT (2,048) could take them all, and the
 * next segment could not be created (its webhooks answered 503). So the
 * soft limit is raised to the hard one when it is below what the settings
 * need: a descriptor per connection, two per HTTP thread (its epoll and
 * wake-up), and a margin for the journal, ZeroMQ and the admin server.
 * Nothing here uses select(), which a descriptor over 1,023 would break. */
static void raise_nofile(const struct settings *cfg)
{
    rlim_t need = (rlim_t)cfg->conn_limit + 2 * (rlim_t)cfg->threads + 256;
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
        return;
    {
        rlim_t was = rl.rlim_cur;

        /* A soft limit over fs.nr_open is refused (an unlimited hard
         * limit, say): then what is needed, if the hard limit allows it. */
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : was;
            if (rl.rlim_cur == was || setrlimit(RLIMIT_NOFILE, &rl) != 0)
                rl.rlim_cur = was;
        }
        if (rl.rlim_cur >= need)
            tds_info("raised the open-file limit from %llu to %llu (TDS_INGRESS_CONN_LIMIT %lld "
                     "needs about %llu)",
                     (unsigned long long)was, (unsigned long long)rl.rlim_cur,
                     (long long)cfg->conn_limit, (unsigned long long)need);
        else
            tds_warn("open-file limit %llu (hard limit %llu) is under the %llu that "
                     "TDS_INGRESS_CONN_LIMIT %lld needs: past it connections are refused and a "
                     "journal segment that cannot be created answers 503; raise the hard limit "
                     "(ulimit -Hn, LimitNOFILE=) or lower TDS_INGRESS_CONN_LIMIT",
                     (unsigned long long)rl.rlim_cur,
                     rl.rlim_max == RLIM_INFINITY ? 0ULL : (unsigned long long)rl.rlim_max,
                     (unsigned long long)need, (long long)cfg->conn_limit);
    }
}

/* ---- command line ---- */

static const struct tds_stage stage = {
    .name = "ingress",
    .usage = "usage: tds-ingress [--help] [--version] [--print-config]\n"
             "       tds-ingress replay --org ORG --since WHEN [--until WHEN] [--wait SECONDS]\n"
             "                          [--dry-run]\n"
             "\n"
             "Receives Zoho workflow webhooks on POST (or PUT; DELETE: a notice to fetch the\n"
             "record) /webhooks/zoho/{org_id},\n"
             "verifies their X-Zoho-Webhook-Signature (or X-Webhook-Token), drops duplicates,\n"
             "journals them durably (fdatasync, group commit) before answering 200, and\n"
             "forwards them to the processor (event) or the fetcher (fetch by id) until the\n"
             "writer acknowledges them.\n"
             "\n"
             "replay re-sends journaled webhooks of one organization received since WHEN\n"
             "(\"2026-01-05T10:00:00Z\", \"2026-01-05T10:00:00+03:00\": a time names its zone;\n"
             "\"30m\", \"2h\", \"1d\" ago; or epoch milliseconds), within the journal's retention,\n"
             "and waits up to --wait seconds (default 30, 0 = no wait) for the writer's acks,\n"
             "sending again what is not acked within TDS_INGRESS_ACK_TIMEOUT_MS.\n"
             "\n",
    .table = config_table,
    .n = N_CONFIG,
};

/* "30m" / "2h" ago, ISO 8601 with Z or ±hh:mm / ±hhmm, or epoch ms. A
 * time without its zone is refused: read as UTC, a local time typed by an
 * operator east of Greenwich starts the replay hours too late, and the
 * webhooks before it are not sent, without a word. */
static int parse_when(const char *s, int64_t now_ms, int64_t *out)
{
    size_t n = strlen(s);
    int64_t v;
    int off;

    if (n >= 2 && strchr("smhd", s[n - 1])) {
        char num[32];
        int64_t mult = s[n - 1] == 's' ? 1000 : s[n - 1] == 'm' ? 60000
                     : s[n - 1] == 'h' ? 3600000 : 86400000;

        if (n - 1 >= sizeof(num))
            return TDS_E_INVALID;
        memcpy(num, s, n - 1);
        num[n - 1] = '\0';
        if (tds_parse_i64(num, 0, INT64_MAX / 86400000, &v))
            return TDS_E_INVALID;
        *out = now_ms - v * mult;
        return 0;
    }
    if (tds_parse_i64(s, 0, INT64_MAX, &v) == 0) {
        *out = v;
        return 0;
    }
    /* fractional seconds are accepted and dropped, as in Zoho's times */
    if (tds_ztime_parse_at(s, &v, &off) != 0 || off == TDS_ZTIME_NO_OFFSET)
        return TDS_E_INVALID;
    *out = v * 1000;
    return 0;
}

/* What tds_journal_open's code means, for an operator. */
static const char *journal_open_error(int r)
{
    if (r < 0)
        return strerror(-r);
    if (r == TDS_JOURNAL_E_LOCKED)
        return "in use by another tds-ingress (each needs a journal folder of its own)";
    return r == TDS_JOURNAL_E_CORRUPT ? "a record could not be read back whole" : "error";
}

/* ---- replay ---- */

/* replay gives up sending when the processor or fetcher takes no message for
 * this long; a slow one that keeps taking them is waited for. */
#define REPLAY_STALL_MS 10000
/* Messages replay queues for each peer. A full ZeroMQ queue takes more only
 * once its reader has taken half of it (libzmq's low-water mark), so the
 * queue must be small for a slow peer's progress to show within
 * REPLAY_STALL_MS: 500 messages taken in 10 s (50/s) are enough here, where a
 * queue of 100,000 needed 50,000 (ingress/DESIGN.md, "Replay"). */
#define REPLAY_HWM 1000

/* The kernel's send buffer of replay's connections. Linux wakes a writer
 * only once half of what it queued has gone: with its own default, grown to
 * megabytes, a peer taking 200 small messages a second freed no room for
 * more than REPLAY_STALL_MS, and replay gave up on a fetcher that was
 * reading. */
#define REPLAY_SNDBUF (64 * 1024)

static int replay_sndbuf(struct tds_bus_sock *s)
{
    int v = REPLAY_SNDBUF;
    return zmq_setsockopt(tds_bus_sock_raw(s), ZMQ_SNDBUF, &v, sizeof(v)) ? -errno : 0;
}

struct rentry {
    char *buf;
    size_t len;
    const char *msgid; /* within buf */
    size_t msgid_len;
    int64_t sent_ms; /* last sent (monotonic), 0 before */
    bool acked;
};

struct replay {
    const char *org;
    int64_t since, until;
    struct rentry *e;
    size_t n, cap;
};

static int replay_collect(const struct tds_journal_rec *r, void *ud)
{
    struct replay *rp = ud;
    struct tds_entry e;

    if (r->wall_ms < rp->since || r->wall_ms > rp->until)
        return 0;
    if (tds_entry_decode(r->payload, r->len, &e) || e.org_len != strlen(rp->org) ||
        memcmp(e.org, rp->org, e.org_len) != 0)
        return 0;
    if (rp->n == rp->cap) {
        size_t cap = rp->cap ? rp->cap * 2 : 256;
        struct rentry *ne = realloc(rp->e, cap * sizeof(*ne));

        if (!ne)
            return -ENOMEM;
        rp->e = ne;
        rp->cap = cap;
    }
    rp->e[rp->n].buf = malloc(r->len);
    if (!rp->e[rp->n].buf)
        return -ENOMEM;
    memcpy(rp->e[rp->n].buf, r->payload, r->len);
    rp->e[rp->n].len = r->len;
    rp->e[rp->n].msgid = rp->e[rp->n].buf + (e.msgid - (const char *)r->payload);
    rp->e[rp->n].msgid_len = e.msgid_len;
    rp->e[rp->n].sent_ms = 0;
    rp->e[rp->n].acked = false;
    rp->n++;
    return 0;
}

static int cmp_rentry(const void *x, const void *y)
{
    const struct rentry *a = *(const struct rentry *const *)x, *b = *(const struct rentry *const *)y;

    return tds_bytes_cmp(a->msgid, a->msgid_len, b->msgid, b->msgid_len);
}

/* Marks every sent entry with message id `id` acked (one id may have been
 * journaled more than once): by binary search over `by_id`, the sent
 * entries sorted by id. Returns how many it marked. */
static size_t replay_ack(struct rentry **by_id, size_t n, const char *id)
{
    size_t lo = 0, hi = n, il = strlen(id), marked = 0;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (tds_bytes_cmp(by_id[mid]->msgid, by_id[mid]->msgid_len, id, il) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < n && tds_bytes_cmp(by_id[lo]->msgid, by_id[lo]->msgid_len, id, il) == 0; lo++)
        if (!by_id[lo]->acked) {
            by_id[lo]->acked = true;
            marked++;
        }
    return marked;
}

/* Sends again, without waiting, each sent entry not acked within
 * `timeout_ms` of its last send: an ack lost on the way (a SUB whose
 * subscription reached the writer's PUB only after its first acks, a
 * writer restarted between applying and acking) or a message the
 * processor or fetcher lost (killed before handing it on). Replay is
 * idempotent downstream, as the running ingress's own resends are. An entry
 * a full queue does not take now is tried at the next call. Returns how
 * many it sent. */
static size_t replay_resend(struct replay *rp, size_t sent, struct tds_bus_sock *const *push,
                            int64_t timeout_ms)
{
    int64_t now = tds_now_ms();
    size_t n = 0;

    for (size_t i = 0; i < sent; i++) {
        struct tds_entry e;

        if (rp->e[i].acked || now - rp->e[i].sent_ms < timeout_ms)
            continue;
        tds_entry_decode(rp->e[i].buf, rp->e[i].len, &e);
        if (tds_bus_send(push[e.dest], e.msg, e.msg_len, ZMQ_DONTWAIT) == 0) {
            rp->e[i].sent_ms = now;
            n++;
        }
    }
    return n;
}

static int replay_main(int argc, char **argv, struct settings *cfg)
{
    static const struct option opts[] = {
        {"org", required_argument, NULL, 'o'},   {"since", required_argument, NULL, 's'},
        {"until", required_argument, NULL, 'u'}, {"wait", required_argument, NULL, 'w'},
        {"dry-run", no_argument, NULL, 'n'},     {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct replay rp = {.until = INT64_MAX};
    const char *since = NULL, *until = NULL;
    struct tds_journal_opts jo = {.dir = cfg->journal_dir, .max_bytes = UINT64_MAX,
                                  .read_only = true};
    struct tds_journal *j = NULL;
    struct tds_journal_open_info info;
    struct tds_bus *bus = NULL;
    struct tds_bus_sock *push[3] = {NULL}, *sub = NULL;
    struct rentry **by_id = NULL;
    struct tds_bus_opts bo = {.hwm = 100000, .linger_ms = 10000, .reconnect_ms = 100};
    struct tds_bus_opts bo_push = {.hwm = REPLAY_HWM, .linger_ms = 10000, .reconnect_ms = 100};
    int64_t wait_s = 30, now = tds_wall_ms(), deadline, stalled;
    size_t sent = 0, acked = 0, events = 0, fetches = 0, resent = 0, released = 0;
    bool dry = false;
    int c, r, status = 1;

    optind = 1;
    while ((c = getopt_long(argc, argv, "o:s:u:w:nh", opts, NULL)) != -1) {
        switch (c) {
        case 'o': rp.org = optarg; break;
        case 's': since = optarg; break;
        case 'u': until = optarg; break;
        case 'w':
            if (tds_parse_i64(optarg, 0, 86400, &wait_s)) {
                fprintf(stderr, "tds-ingress: invalid --wait: '%s'\n", optarg);
                return 2;
            }
            break;
        case 'n': dry = true; break;
        case 'h': tds_stage_usage(&stage, stdout); return 0;
        default:
            fprintf(stderr, "tds-ingress: unknown replay argument '%s'\n", argv[optind - 1]);
            return 2;
        }
    }
    if (!rp.org || !since) {
        fprintf(stderr, "tds-ingress: replay needs --org and --since\n");
        return 2;
    }
    if (parse_when(since, now, &rp.since)) {
        fprintf(stderr, "tds-ingress: invalid --since: '%s' (a time with its zone, Z or "
                "+hh:mm; 30m, 2h or 1d ago; or epoch milliseconds)\n", since);
        return 2;
    }
    if (until && parse_when(until, now, &rp.until)) {
        fprintf(stderr, "tds-ingress: invalid --until: '%s' (a time with its zone, Z or "
                "+hh:mm; 30m, 2h or 1d ago; or epoch milliseconds)\n", until);
        return 2;
    }
    if (rp.until < rp.since) {
        fprintf(stderr, "tds-ingress: replay: --until (%s) is before --since (%s)\n", until, since);
        return 2;
    }
    r = tds_journal_open(&j, &jo, replay_collect, &rp, &info);
    if (r) {
        fprintf(stderr, "tds-ingress: could not read journal '%s': %s\n", cfg->journal_dir,
                journal_open_error(r));
        goto out;
    }
    if (info.damaged)
        fprintf(stderr, "tds-ingress: replay: skipped %llu damaged stretches inside journal "
                        "segments (%llu bytes): what they held cannot be replayed\n",
                (unsigned long long)info.damaged, (unsigned long long)info.damaged_bytes);
    if (rp.n == 0) {
        /* A misspelt organization matched nothing and said so as a success.
         * One taken out of TDS_CONFIG since may still have entries. */
        struct tds_orgs *orgs = NULL;
        char err[512];
        if (tds_orgs_load_webhooks(cfg->config, &orgs, err, sizeof(err)) == 0 &&
            !tds_orgs_find(orgs, rp.org)) {
            fprintf(stderr, "tds-ingress: replay: organization '%s' is not in TDS_CONFIG and "
                            "no journaled webhook of it is in that window\n", rp.org);
            tds_orgs_free(orgs);
            status = 2;
            goto out;
        }
        tds_orgs_free(orgs);
    }
    if (dry || rp.n == 0) {
        printf("%zu journaled webhooks of org %s match%s\n", rp.n, rp.org,
               dry ? " (dry run, nothing sent)" : "");
        status = 0;
        goto out;
    }
    if ((r = tds_bus_new(&bus)) == 0 && curve_on(bus, cfg) != 0) {
        status = 2;
        goto out;
    }
    /* Every ack, whatever its origin: the writer acks an event to the origin
     * journaled in it, the ingress that took the webhook, which need not be
     * the name this command runs under (another pod, another TDS_INSTANCE).
     * Acks wait in the SUB while the events go out: room for all of them. */
    if (r || (r = tds_bus_sock_new(bus, ZMQ_PUSH, &bo_push, &push[1])) ||
        (r = tds_bus_sock_new(bus, ZMQ_PUSH, &bo_push, &push[2])) ||
        (r = tds_bus_sock_new(bus, ZMQ_SUB, &bo, &sub)) ||
        (r = replay_sndbuf(push[1])) || (r = replay_sndbuf(push[2])) ||
        (r = tds_bus_connect(push[1], cfg->processor)) ||
        (r = tds_bus_connect(push[2], cfg->fetcher)) || (r = tds_bus_subscribe(sub, "")) ||
        (r = tds_bus_connect(sub, cfg->acks))) {
        fprintf(stderr, "tds-ingress: could not set up sockets: %s\n", zmq_strerror(-r));
        goto out;
    }
    /* Give the SUB time to subscribe, so early acks are not missed. */
    usleep(300 * 1000);
    /* A full queue is waited out for as long as the peer keeps taking
     * messages: a replay larger than the queue goes at the pace of the
     * processor or fetcher. Only REPLAY_STALL_MS without a message taken
     * (no peer connected, or one that stopped reading) ends it. That time is
     * what replay spent waiting for room, each wait counted up to its own
     * 100 ms: a replay that was not running (a loaded machine, a stopped
     * process) and wakes to a queue its I/O thread has not yet drained has
     * not watched the peer stall, so its pause is not counted. */
    stalled = 0;
    for (size_t i = 0; i < rp.n; i++) {
        struct tds_entry e;

        tds_entry_decode(rp.e[i].buf, rp.e[i].len, &e);
        for (;;) {
            zmq_pollitem_t pi = {tds_bus_sock_raw(push[e.dest]), 0, ZMQ_POLLOUT, 0};
            int64_t start, waited;

            r = tds_bus_send(push[e.dest], e.msg, e.msg_len, ZMQ_DONTWAIT);
            if (r != -EAGAIN || stalled >= REPLAY_STALL_MS)
                break;
            start = tds_now_ms();
            zmq_poll(&pi, 1, 100);
            waited = tds_now_ms() - start;
            /* At least 1 ms a round, so a queue said writable that still
             * refuses cannot spin for ever. */
            stalled += waited < 1 ? 1 : waited > 100 ? 100 : waited;
        }
        if (r == -EAGAIN) {
            fprintf(stderr, "tds-ingress: could not send to the %s: it took no message for %d s "
                    "(none connected, or it stopped reading); %zu of %zu sent\n",
                    e.dest == TDS_ENTRY_PROCESSOR ? "processor" : "fetcher",
                    REPLAY_STALL_MS / 1000, sent, rp.n);
            break;
        }
        if (r) {
            fprintf(stderr, "tds-ingress: could not send to the %s: %s\n",
                    e.dest == TDS_ENTRY_PROCESSOR ? "processor" : "fetcher", zmq_strerror(-r));
            break;
        }
        stalled = 0;
        rp.e[i].sent_ms = tds_now_ms();
        sent++;
        if (e.dest == TDS_ENTRY_PROCESSOR) {
            events++;
        } else {
            fetches++;
            /* As in the running ingress: with fetch acks off, no ack ever
             * names a fetch, which is done once ZeroMQ took it (not awaited,
             * not sent again). */
            if (!cfg->fetch_acks) {
                rp.e[i].acked = true;
                acked++;
                released++;
            }
        }
    }
    if (wait_s && sent) {
        by_id = malloc(sent * sizeof(*by_id));
        if (!by_id) {
            fprintf(stderr, "tds-ingress: out of memory\n");
            goto out;
        }
        for (size_t i = 0; i < sent; i++)
            by_id[i] = &rp.e[i];
        qsort(by_id, sent, sizeof(*by_id), cmp_rentry);
    }
    deadline = tds_now_ms() + wait_s * 1000;
    while (wait_s && acked < sent && tds_now_ms() < deadline) {
        zmq_pollitem_t pi = {tds_bus_sock_raw(sub), 0, ZMQ_POLLIN, 0};
        char *topic = NULL, *body = NULL;
        size_t tl, bl;
        int more = 0;
        struct tds_msg m;

        resent += replay_resend(&rp, sent, push, cfg->ack_timeout_ms);
        if (zmq_poll(&pi, 1, 200) <= 0)
            continue;
        if (tds_bus_recv(sub, &topic, &tl, 256, 0, &more) || !more) {
            free(topic);
            continue;
        }
        if (tds_bus_recv(sub, &body, &bl, 4u << 20, 0, &more) == 0 &&
            tds_msg_decode(body, bl, &m) == 0) {
            if (m.type == TDS_MSG_ACK)
                for (size_t k = 0; k < m.u.ack.n_ids; k++)
                    acked += replay_ack(by_id, sent, m.u.ack.ids[k]);
            tds_msg_clear(&m);
        }
        free(topic);
        free(body);
    }
    printf("replayed %zu of %zu journaled webhooks of org %s (%zu events, %zu fetches)", sent,
           rp.n, rp.org, events, fetches);
    if (wait_s)
        printf(", %zu acknowledged", acked);
    if (wait_s && released)
        printf(" (%zu of them fetches, done once sent: TDS_INGRESS_FETCH_ACKS=false)",
               released);
    if (resent)
        printf(", %zu sent again for want of an ack", resent);
    printf("\n");
    status = sent == rp.n && (!wait_s || acked == sent) ? 0 : 1;
out:
    free(by_id);
    for (size_t i = 0; i < rp.n; i++)
        free(rp.e[i].buf);
    free(rp.e);
    tds_bus_sock_free(push[1]);
    tds_bus_sock_free(push[2]);
    tds_bus_sock_free(sub);
    tds_bus_free(bus);
    tds_journal_close(j);
    return status;
}

/* ---- main ---- */

/* The bound of what waits for a sync, and of what waits in ZeroMQ's
 * queues: half of the bodies' budget, and room for two of the largest
 * webhooks, so that one alone never waits for traffic to pause. */
static int64_t held_bound(const struct settings *cfg)
{
    int64_t half = cfg->body_memory / 2, two = 2 * (cfg->max_body + 64 * 1024);
    return half > two ? half : two;
}

int main(int argc, char **argv)
{
    static const double batch_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
    static const double fsync_buckets[] = {.0001, .00025, .0005, .001, .0025, .005,
                                           .01,   .025,   .05,   .1,   .25,   1};
    struct app a;
    struct settings *cfg = &a.cfg;
    char err[512], origin[320], host[256];
    struct tds_stage_cmdline cl = {0};
    bool replay = false;
    enum tds_log_level level;
    int rc, status = 2; /* bad settings exit 2 */

    memset(&a, 0, sizeof(a));
    if (argc > 1 && strcmp(argv[1], "replay") == 0) {
        replay = true;
    } else if ((rc = tds_stage_args(&stage, argc, argv, 0, &cl)) != TDS_STAGE_CONTINUE) {
        return rc;
    }
    if (tds_stage_config(&stage, cfg, &level) != 0)
        goto out;
    if (cl.print_config) {
        tds_config_print(config_table, N_CONFIG, cfg, stdout);
        status = 0;
        goto out;
    }
    {
        uint16_t port;

        if (tds_parse_hostport(cfg->admin, host, sizeof(host), &port) != 0) {
            fprintf(stderr, "tds-ingress: invalid TDS_ADMIN_LISTEN: '%s'\n", cfg->admin);
            goto out;
        }
        if (tds_parse_hostport(cfg->listen, host, sizeof(host), &port) != 0) {
            fprintf(stderr, "tds-ingress: invalid TDS_INGRESS_LISTEN: '%s'\n", cfg->listen);
            goto out;
        }
    }
    if (cfg->body_memory < cfg->max_body) {
        fprintf(stderr, "tds-ingress: invalid TDS_INGRESS_BODY_MEMORY: '%lld' (less than "
                "TDS_INGRESS_MAX_BODY, %lld: a body that large would never fit)\n",
                (long long)cfg->body_memory, (long long)cfg->max_body);
        goto out;
    }
    if (cfg->segment_bytes > cfg->journal_max / 2) {
        fprintf(stderr, "tds-ingress: invalid TDS_INGRESS_SEGMENT_BYTES: '%lld' (more than half "
                "of TDS_INGRESS_JOURNAL_MAX_BYTES, %lld: the segment being written is never "
                "dropped, so the journal could fill up with nothing left to free)\n",
                (long long)cfg->segment_bytes, (long long)cfg->journal_max);
        goto out;
    }
    tds_stage_instance(cfg->instance, host, sizeof(host));
    snprintf(origin, sizeof(origin), "ingress.%s", host);
    if (replay) {
        status = replay_main(argc - 1, argv + 1, cfg);
        goto out;
    }
    if (tds_orgs_load_webhooks(cfg->config, &a.orgs, err, sizeof(err)) != 0) {
        fprintf(stderr, "tds-ingress: invalid TDS_CONFIG: %s\n", err);
        goto out;
    }
    status = 1;
    a.dedupe_window_ms = cfg->dedupe_s * 1000;
    {
        size_t x, y;

        if (tds_orgs_shared_secret(a.orgs, &x, &y))
            tds_log(TDS_LOG_WARN, NULL,
                    "organizations %s and %s share a webhook secret or token: a delivery for "
                    "one is accepted when posted to the other's path; give each its own",
                    a.orgs->orgs[x].org_id, a.orgs->orgs[y].org_id);
        for (size_t i = 0; i < a.orgs->n; i++) {
            const struct tds_org *g = &a.orgs->orgs[i];

            if (g->webhooks_unsigned)
                tds_log(TDS_LOG_WARN, NULL,
                        "organization %s takes unsigned webhooks%s: anyone may post to its "
                        "path, so each is only a notice to fetch its record from Zoho by id (an "
                        "API call each), never a record to write",
                        g->org_id,
                        g->n_webhook_secrets || g->n_webhook_tokens
                            ? " (those with neither a signature nor a token; a wrong one is "
                              "still refused)"
                            : "");
        }
    }

    raise_nofile(cfg);
    if ((rc = tds_loop_new(&a.loop)) < 0 || (rc = tds_metrics_new(&a.metrics)) < 0 ||
        (rc = tds_bus_new(&a.bus)) < 0 ||
        (rc = tds_dedupe_new(&a.dedupe, (size_t)cfg->dedupe_max, a.dedupe_window_ms)) < 0) {
        tds_error("could not start: %s", strerror(-rc));
        goto out;
    }
    if (curve_on(a.bus, cfg) != 0) {
        status = 2;
        goto out;
    }
    rc = tds_events_new(&a.events, a.bus, "ingress", cfg->events);
    if (rc) {
        tds_error("could not bind TDS_EVENTS_BIND '%s': %s", cfg->events,
                  rc < 0 ? zmq_strerror(-rc) : "invalid");
        goto out;
    }
    a.h_batch = tds_metrics_get(a.metrics, TDS_HISTOGRAM, "tds_ingress_group_commit_size",
                                "webhooks made durable by one fdatasync", "", batch_buckets,
                                TDS_ARRAY_SIZE(batch_buckets));
    a.h_fsync = tds_metrics_get(a.metrics, TDS_HISTOGRAM, "tds_ingress_fsync_seconds",
                                "time of one group commit: its writes and fdatasync (not its "
                                "wait for company)",
                                "", fsync_buckets, TDS_ARRAY_SIZE(fsync_buckets));
    a.g_no_space = tds_metrics_get(a.metrics, TDS_GAUGE, "tds_ingress_journal_no_space",
                                   "1 while the journal's disk has no room (webhooks get 503)",
                                   "", NULL, 0);
    a.g_unacked_full = tds_metrics_get(a.metrics, TDS_GAUGE, "tds_ingress_unacked_full",
                                       "1 while TDS_INGRESS_MAX_UNACKED webhooks wait for the "
                                       "writer's ack (new webhooks get 503)",
                                       "", NULL, 0);
    {
        struct tds_forward_opts fo = {
            .origin = origin,
            .processor_connect = cfg->processor,
            .fetcher_connect = cfg->fetcher,
            .ack_connect = cfg->acks,
            .ack_timeout_ms = cfg->ack_timeout_ms,
            .resend_max_ms = cfg->resend_max_ms,
            .max_buffered_bytes = 64u * 1024 * 1024,
            .max_queued_bytes = (size_t)held_bound(cfg),
            .hwm = (int)cfg->hwm,
            .fetch_acks = cfg->fetch_acks,
        };

        rc = tds_forward_new(&a.forward, &fo, a.loop, a.bus, NULL, a.metrics, a.events);
        if (rc) {
            tds_error("could not set up forwarding (TDS_PROCESSOR_CONNECT '%s', "
                      "TDS_FETCHER_CONNECT '%s', TDS_ACK_CONNECT '%s'): %s",
                      cfg->processor, cfg->fetcher, cfg->acks,
                      rc < 0 ? zmq_strerror(-rc) : "invalid");
            goto out;
        }
    }
    {
        struct tds_journal_opts jo = {
            .dir = cfg->journal_dir,
            .max_bytes = (uint64_t)cfg->journal_max,
            .segment_bytes = (uint64_t)cfg->segment_bytes,
            .retention_ms = cfg->retention_s * 1000,
            .sync_thread = true,
            .sync_delay_us = cfg->sync_delay_us,
            .max_unacked = (uint64_t)cfg->max_unacked,
            .max_pending_bytes = (uint64_t)held_bound(cfg),
        };
        struct tds_journal_open_info info;

        rc = tds_journal_open(&a.journal, &jo, on_recovered, &a, &info);
        if (rc) {
            tds_error("could not open journal '%s': %s", cfg->journal_dir,
                      journal_open_error(rc));
            goto out;
        }
        tds_series_set(tds_metrics_get(a.metrics, TDS_GAUGE, "tds_ingress_journal_torn_at_start",
                                       "records the journal's open cut at segment ends (torn "
                                       "by a crash mid-write, or damaged)",
                                       "", NULL, 0),
                       (double)info.torn);
        tds_series_set(tds_metrics_get(a.metrics, TDS_GAUGE,
                                       "tds_ingress_journal_damaged_bytes_at_start",
                                       "bytes the journal's open skipped inside segments: damaged "
                                       "on disk, what they held is lost",
                                       "", NULL, 0),
                       (double)info.damaged_bytes);
        if (info.torn)
            tds_warn("journal: dropped %llu torn or damaged records at segment ends",
                     (unsigned long long)info.torn);
        if (info.damaged)
            tds_warn("journal: skipped %llu damaged stretches inside segments (%llu bytes); "
                     "the whole records after them were kept, what the damage held is lost",
                     (unsigned long long)info.damaged, (unsigned long long)info.damaged_bytes);
        if (a.n_dead) {
            tds_forward_dead(a.forward, a.n_dead);
            if (tds_journal_ack(a.journal, a.dead, a.n_dead))
                tds_warn("journal: could not release %zu dead letters: out of memory (their "
                         "segments stay until a restart does)", a.n_dead);
        }
        free(a.dead);
        a.dead = NULL;
        tds_info("journal '%s': %zu segments, %llu entries, %llu unacked (resending)",
                 cfg->journal_dir, info.segments, (unsigned long long)info.entries,
                 (unsigned long long)info.unacked);
        tds_forward_set_journal(a.forward, a.journal);
        tds_journal_on_stats(a.journal, on_stats, &a);
        tds_journal_on_synced(a.journal, on_synced, &a);
        tds_journal_on_syncing(a.journal, on_syncing, &a); /* a.forward outlives the journal */
        tds_journal_on_stalled(a.journal, on_stalled, &a);
    }
    {
        struct tds_http_opts ho = {
            .listen = cfg->listen,
            .threads = (unsigned)cfg->threads,
            .thread_per_connection = cfg->thread_per_conn,
            .sync_wait_ms = cfg->sync_wait_ms,
            .use_poll = cfg->use_poll,
            .conn_limit = (unsigned)cfg->conn_limit,
            .per_ip_limit = (unsigned)cfg->per_ip_limit,
            .timeout_s = (unsigned)cfg->timeout_s,
            .body_deadline_s = (unsigned)cfg->body_deadline_s,
            .header_deadline_s = (unsigned)cfg->header_deadline_s,
            .max_body = (size_t)cfg->max_body,
            .body_memory = (size_t)cfg->body_memory,
            .sig_max_age_ms = cfg->sig_max_age_s * 1000,
            .dedupe_window_ms = a.dedupe_window_ms,
        };
        struct tds_http_deps hd = {a.orgs, a.journal, a.dedupe, a.forward, a.metrics, origin};
        struct tds_http *h = NULL;

        rc = tds_http_new(&h, &ho, &hd);
        /* Before the server starts: a request it parks from its first
         * moment is resumed by the sync that makes it durable. On failure
         * the end of main detaches the sync callbacks, then frees it. */
        a.http = h;
        if (rc == 0)
            rc = tds_http_start(h);
        if (rc) {
            tds_error("could not listen on TDS_INGRESS_LISTEN '%s': %s", cfg->listen,
                      rc < 0 ? strerror(-rc) : "invalid address");
            goto out;
        }
    }
    tds_loop_on_drain(a.loop, on_drain, &a);
    if (tds_loop_timer_add(a.loop, 1000, 1000, on_tick, &a) < 0) {
        tds_error("could not start: timer");
        goto out;
    }
    if ((rc = tds_admin_new(&a.admin, cfg->admin, a.metrics, a.loop)) < 0 ||
        (tds_admin_set_status_cb(a.admin, status_json, &a), (rc = tds_admin_start(a.admin)) < 0)) {
        tds_error("could not start the admin server on '%s': %s", cfg->admin,
                  rc < 0 ? strerror(-rc) : "error");
        goto out;
    }
    tds_admin_set_stall_ms(a.admin, cfg->health_stall_ms);
    /* Ready unless the journal says otherwise: a restart may find the
     * unacked bound reached. */
    a.journal_state = JOURNAL_OK;
    journal_check(&a);
    if (a.journal_state == JOURNAL_OK)
        tds_admin_set_ready(a.admin, true, NULL);
    tds_forward_tick(a.forward);
    char model[64];
    if (cfg->thread_per_conn)
        snprintf(model, sizeof(model), "%s", tds_http_model(a.http));
    else
        snprintf(model, sizeof(model), "%lld threads, %s", (long long)cfg->threads,
                 tds_http_model(a.http));
    tds_info("started: webhooks on %s (port %u; %s), events to %s, fetches to %s, acks from %s, "
             "origin %s",
             cfg->listen, (unsigned)tds_http_port(a.http), model, cfg->processor, cfg->fetcher,
             cfg->acks, origin);
    rc = tds_loop_run(a.loop);
    if (rc < 0) {
        tds_error("event loop failed: %s", strerror(-rc));
        goto out;
    }
    tds_info("stopped: %zu webhooks unacked stay in the journal for the next start",
             tds_forward_unacked(a.forward));
    status = 0;
out:
    if (a.admin)
        tds_admin_set_ready(a.admin, false, "stopping");
    a.admin = tds_admin_free(a.admin);
    /* No sync callback may run into a freed server: detach, then free. */
    if (a.journal) {
        tds_journal_on_synced(a.journal, NULL, NULL);
        tds_journal_on_stalled(a.journal, NULL, NULL);
    }
    a.http = tds_http_free(a.http);
    free(a.dead);
    a.journal = tds_journal_close(a.journal);
    a.forward = tds_forward_free(a.forward);
    a.dedupe = tds_dedupe_free(a.dedupe);
    a.events = tds_events_free(a.events);
    a.bus = tds_bus_free(a.bus);
    a.loop = tds_loop_free(a.loop);
    a.metrics = tds_metrics_free(a.metrics);
    a.orgs = tds_orgs_free(a.orgs);
    tds_config_free(config_table, N_CONFIG, cfg);
    return status;
}
