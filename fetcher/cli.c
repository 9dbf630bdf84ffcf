/* cli — `sync` (request + progress) and `auth` (exchange, status).
 *
 * Blocking by design: these run in a terminal, not in the daemon's loop.
 * Progress polls tds.sync_runs twice a second; the "calls left today"
 * figure comes from the running fetcher's /status when it is reachable on
 * this host, and is shown as "?" otherwise. Beside it the follow says what
 * keeps the request from moving: the organization's token refresh failing
 * or refused (tds.oauth_tokens), or no fetcher left to run it (no session
 * holds the organization's lock, owner.c).
 */
#include "cli.h"

#include <ctype.h>
#include <curl/curl.h>
#include <getopt.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "config.h"
#include "entities.h"
#include "oauth.h"
#include "pg.h"
#include "store.h"
#include "sync.h"
#include "util.h"

/* How long a claimed request may stand still with no fetcher holding its
 * organization before the follow says the claimer is gone: longer than a
 * restarted fetcher takes to lock its organizations (TDS_FETCHER_OWNER_CHECK_MS,
 * 2 s by default). */
#define TDS_CLI_GONE_MS 5000
/* organizations one `auth exchange` stores a token for */
#define TDS_EXCHANGE_MAX_ORGS 64

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static size_t collect(char *p, size_t sz, size_t n, void *ud)
{
    return tds_buf_add(ud, p, sz * n) == 0 ? sz * n : 0;
}

/* Calls left today for org, from the local fetcher's /status; -1 unknown. */
static long long quota_left(const struct tds_cli_env *env, const char *org)
{
    char host[256];
    uint16_t port;
    if (!env->admin_listen || tds_parse_hostport(env->admin_listen, host, sizeof(host), &port) != 0)
        return -1;
    if (!host[0] || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    char url[320];
    snprintf(url, sizeof(url), "http://%s:%u/status", host, (unsigned)port);
    CURL *c = curl_easy_init();
    if (!c)
        return -1;
    struct tds_buf b = {.max = 1u << 20};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 300L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    long long out = -1;
    if (curl_easy_perform(c) == CURLE_OK && b.len) {
        json_error_t je;
        json_t *root = json_loadb(b.p, b.len, 0, &je);
        json_t *orgs = json_object_get(root, "organizations");
        size_t i;
        json_t *o;
        json_array_foreach(orgs, i, o)
        {
            const char *id = json_string_value(json_object_get(o, "org"));
            if (id && strcmp(id, org) == 0 && json_is_true(json_object_get(o, "owned")))
                out = json_integer_value(json_object_get(o, "quota_remaining"));
        }
        json_decref(root);
    }
    tds_buf_deinit(&b);
    curl_easy_cleanup(c);
    return out;
}

static PGconn *connect_db(const struct tds_cli_env *env)
{
    char err[512];
    PGconn *c = tds_pg_connect(env->database_url, "tds-fetcher-cli", err, sizeof(err));
    if (!c) {
        fprintf(stderr, "tds-fetcher: could not connect to the database: %s\n", err);
    } else if (tds_pg_schema_check(c, err, sizeof(err)) != 0) {
        fprintf(stderr, "tds-fetcher: %s\n", err);
        PQfinish(c);
        c = NULL;
    }
    return c;
}

static void fmt_dur(double s, char *out, size_t cap)
{
    if (s < 0)
        snprintf(out, cap, "?");
    else if (s < 90)
        snprintf(out, cap, "%.0fs", s);
    else if (s < 5400)
        snprintf(out, cap, "%ldm%02lds", (long)s / 60, (long)s % 60);
    else
        snprintf(out, cap, "%.1fh", s / 3600);
}

/* How many records a walk of (org, entity) will pass, from the rows the table
 * holds; -1 when that says nothing: an incremental run
 * walks only what changed, and before the first full sync has completed the
 * table holds only what other runs happened to write (an item group's
 * variants), so Zoho, which gives no total, is the only one who knows. */
static long long walk_estimate(PGconn *c, const char *org, const char *entity, const char *mode,
                               const char *started_at)
{
    const struct tds_entity *e = tds_entity_find(entity);
    const struct tds_table *t = e ? tds_table_find(e->table) : NULL;
    if (!t || (strcmp(mode, "full") != 0 && strcmp(mode, "reconcile") != 0))
        return -1;
    const char *p[] = {org, entity, started_at};
    PGresult *r = PQexecParams(c,
                               "SELECT 1 FROM tds.sync_runs WHERE org_id = $1 AND entity = $2 "
                               "AND mode = 'full' AND status = 'completed' AND finished_at < $3 LIMIT 1",
                               3, NULL, p, NULL, NULL, 0);
    bool synced = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    if (!synced)
        return -1;
    /* every live row, also those this run has rewritten already (a row's
     * synced_at moves when it is written, so it cannot tell) */
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM zoho.%s WHERE org_id = $1 AND deleted_at IS NULL",
             t->name);
    const char *q[] = {org};
    r = PQexecParams(c, sql, 1, NULL, q, NULL, NULL, 0);
    long long n = -1;
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return n > 0 ? n : -1;
}

/* The runs a request for entity ("all" or one) of org starts. */
static int request_runs(const struct tds_org *o, const char *entity)
{
    if (strcmp(entity, "all") != 0)
        return 1;
    int n = 0;
    for (size_t i = 0; i < tds_entity_count(); i++)
        if (tds_sync_org_syncs(o, tds_entity_at(i)))
            n++;
    return n > 0 ? n : 1;
}

/* Entities of the request whose run has completed (a failed run is tried again
 * under a new run id, so rows are not entities). */
static int entities_completed(PGresult *rr, int n)
{
    int done = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(PQgetvalue(rr, i, 2), "completed") != 0)
            continue;
        bool seen = false;
        for (int k = 0; k < i && !seen; k++)
            seen = strcmp(PQgetvalue(rr, k, 2), "completed") == 0 &&
                   strcmp(PQgetvalue(rr, k, 0), PQgetvalue(rr, i, 0)) == 0;
        done += !seen;
    }
    return done;
}

static int watch_request(const struct tds_cli_env *env, PGconn *db, const char *id, const char *org,
                         const char *entity);

/* Why org's runs cannot call Zoho, from its token row (the states writer/alertd.c
 * raises token_failed for), or from that alert where the row cannot be read (a
 * role without access to tokens): one line into out, "" when nothing is wrong;
 * short_out gets a few words for the progress line. Returns 0, or -1 when
 * neither could be read (out then says nothing). */
static int token_problem(PGconn *db, const char *org, char *out, size_t cap, char *short_out,
                         size_t short_cap)
{
    out[0] = short_out[0] = '\0';
    const char *p[] = {org};
    PGresult *r = PQexecParams(db,
                               "SELECT status, coalesce(last_error, ''), "
                               "coalesce(to_char(locked_until, 'YYYY-MM-DD HH24:MI:SS TZ'), '') "
                               "FROM tds.oauth_tokens WHERE org_id = $1 AND (status IN ('revoked', 'invalid') "
                               "OR (status IN ('locked', 'locked_out') "
                               "AND (locked_until IS NULL OR locked_until > now())) "
                               "OR (status = 'ok' AND last_error IS NOT NULL))",
                               1, NULL, p, NULL, NULL, 0);
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK) {
        if (PQntuples(r) == 1) {
            const char *st = PQgetvalue(r, 0, 0), *err = PQgetvalue(r, 0, 1), *until = PQgetvalue(r, 0, 2);
            if (strcmp(st, "revoked") == 0) {
                snprintf(out, cap,
                         "organization %s is paused: Zoho refused its refresh token (%s); put a working "
                         "refresh_token in TDS_CONFIG and restart the fetcher, or run `tds-fetcher auth "
                         "exchange --org %s --code CODE`",
                         org, *err ? err : st, org);
                snprintf(short_out, short_cap, "organization paused: refresh token refused");
            } else if (strcmp(st, "invalid") == 0) {
                snprintf(out, cap,
                         "organization %s is paused: Zoho refused its client credentials (%s); fix "
                         "client_id or client_secret in TDS_CONFIG and restart the fetcher",
                         org, *err ? err : st);
                snprintf(short_out, short_cap, "organization paused: client refused");
            } else if (strcmp(st, "ok") != 0) {
                snprintf(out, cap, "token refresh for organization %s is locked out by Zoho%s%s%s%s; "
                         "the fetcher waits it out",
                         org, *until ? " until " : "", until, *err ? ": " : "", err);
                snprintf(short_out, short_cap, "token refresh locked out");
            } else {
                snprintf(out, cap, "token refresh failing for organization %s: %s; the fetcher keeps trying",
                         org, err);
                snprintf(short_out, short_cap, "token refresh failing");
            }
        }
        PQclear(r);
        return 0;
    }
    PQclear(r);
    if (PQstatus(db) != CONNECTION_OK)
        return -1;
    r = PQexecParams(db,
                     "SELECT summary FROM tds.alerts WHERE rule = 'token_failed' AND org_id = $1 "
                     "AND state = 'firing' ORDER BY fired_at DESC LIMIT 1",
                     1, NULL, p, NULL, NULL, 0);
    int rc = r && PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : -1;
    if (rc == 0 && PQntuples(r) == 1) {
        snprintf(out, cap, "token problem for organization %s: %s", org, PQgetvalue(r, 0, 0));
        snprintf(short_out, short_cap, "token problem");
    }
    PQclear(r);
    return rc;
}

/* A line of its own above the progress line (which a terminal redraws in place). */
static void say(bool tty, const char *text)
{
    printf("%s%s\n", tty ? "\r\033[K" : "", text);
    fflush(stdout);
}

/* Name each entity the request asked for (entity, or every one org syncs
 * for "all") of which the request has no run (rr, n rows, entity in column
 * 0), under the summary and in one line on stderr; returns how many. A run
 * that could not be recorded (its row not inserted: the database was away
 * for its retries) leaves none, and the request closes when the other
 * entities are done: judging only the rows, the command said done and
 * exited 0. */
static int missing_runs(const struct tds_org *o, const char *entity, PGresult *rr, int n,
                        const char *id)
{
    bool all = strcmp(entity, "all") == 0;
    struct tds_buf names = {0};
    int missing = 0;

    for (size_t k = 0; k < tds_entity_count(); k++) {
        const struct tds_entity *e = tds_entity_at(k);
        if (all ? !(o && tds_sync_org_syncs(o, e)) : strcmp(e->name, entity) != 0)
            continue;
        bool ran = false;
        for (int i = 0; i < n && !ran; i++)
            ran = strcmp(PQgetvalue(rr, i, 0), e->name) == 0;
        if (ran)
            continue;
        printf("  %-14s no run: the request closed without one\n", e->name);
        /* out of memory: the stderr line names fewer, the lines above all */
        (void)tds_buf_addf(&names, "%s%s", names.len ? ", " : "", e->name);
        missing++;
    }
    if (missing > 0)
        fprintf(stderr, "tds-fetcher: sync: request %s is done without a run of %s\n", id,
                names.len ? names.p : "every entity above");
    tds_buf_deinit(&names);
    return missing;
}

/* `sync --follow ID`: watch a request queued before (`up` queues every
 * organization's at once, so that each is taken ahead of the scheduled runs). */
static int follow_request(const struct tds_cli_env *env, const char *id, bool other_options)
{
    int64_t n;
    if (other_options) {
        fprintf(stderr, "tds-fetcher: sync: --follow takes the request's id alone\n");
        return 2;
    }
    if (tds_parse_i64(id, 1, INT64_MAX, &n) != 0) {
        fprintf(stderr, "tds-fetcher: sync: invalid --follow '%s' (a request id)\n", id);
        return 2;
    }
    /* as the request's runs name it ("01" is request 1: its runs are rq1.…) */
    char idbuf[24];
    snprintf(idbuf, sizeof(idbuf), "%lld", (long long)n);
    id = idbuf;
    PGconn *db = connect_db(env);
    if (!db)
        return 1;
    const char *p[] = {id};
    PGresult *r = PQexecParams(db, "SELECT org_id, entity, mode FROM tds.sync_requests WHERE id = $1", 1, NULL,
                               p, NULL, NULL, 0);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        bool missing = r && PQresultStatus(r) == PGRES_TUPLES_OK;
        if (missing)
            fprintf(stderr, "tds-fetcher: sync: no sync request %s\n", id);
        else
            fprintf(stderr, "tds-fetcher: could not read the sync request: %s", PQerrorMessage(db));
        PQclear(r);
        PQfinish(db);
        return missing ? 2 : 1;
    }
    char org[128], entity[64];
    snprintf(org, sizeof(org), "%s", PQgetvalue(r, 0, 0));
    snprintf(entity, sizeof(entity), "%s", PQgetvalue(r, 0, 1));
    printf("following sync request %s: %s %s for organization %s\n", id, PQgetvalue(r, 0, 2), entity, org);
    fflush(stdout);
    PQclear(r);
    if (!tds_orgs_find(env->orgs, org)) {
        fprintf(stderr, "tds-fetcher: sync: organization '%s' is not in TDS_CONFIG\n", org);
        PQfinish(db);
        return 2;
    }
    return watch_request(env, db, id, org, entity);
}

static const char auth_usage[] =
    "usage: tds-fetcher auth exchange --org ORG[,ORG...] --code CODE|-\n"
    "       tds-fetcher auth status\n"
    "--code - reads the grant code from the first line of standard input,\n"
    "keeping it out of the process list and the shell's history.\n"
    "One code serves several organizations of one Zoho user that share\n"
    "client_id, client_secret and data center: name them all in --org.\n";
static const char status_usage[] = "usage: tds-fetcher auth status\n"
                                   "Each organization's token state (never the token).\n";
static const char sync_usage[] =
    "usage: tds-fetcher sync --org ORG [--entity NAME|all] "
    "[--mode full|incremental|reconcile] [--detach]\n"
    "       tds-fetcher sync --follow ID   (a request queued before, e.g. with --detach)\n";

static bool is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

static int cmd_sync(int argc, char **argv, const struct tds_cli_env *env)
{
    static const struct option opts[] = {
        {"org", required_argument, NULL, 'o'},   {"entity", required_argument, NULL, 'e'},
        {"mode", required_argument, NULL, 'm'},  {"detach", no_argument, NULL, 'd'},
        {"follow", required_argument, NULL, 'f'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *org = NULL, *entity = "all", *mode = "incremental", *follow = NULL;
    bool detach = false, others = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:e:m:df:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': org = optarg; others = true; break;
        case 'e': entity = optarg; others = true; break;
        case 'm': mode = optarg; others = true; break;
        case 'd': detach = others = true; break;
        case 'f': follow = optarg; break;
        case 'h':
            fputs(sync_usage, stdout);
            return 0;
        default:
            fprintf(stderr, "tds-fetcher: sync: unknown or incomplete argument '%s'\n", argv[optind - 1]);
            return 2;
        }
    }
    if (follow)
        return follow_request(env, follow, others);
    if (!org) {
        fprintf(stderr, "tds-fetcher: sync: --org is required\n");
        return 2;
    }
    const struct tds_org *og = tds_orgs_find(env->orgs, org);
    if (!og) {
        fprintf(stderr, "tds-fetcher: sync: organization '%s' is not in TDS_CONFIG\n", org);
        return 2;
    }
    if (strcmp(entity, "all") != 0) {
        const struct tds_entity *e = tds_entity_find(entity);
        if (!e) {
            fprintf(stderr, "tds-fetcher: sync: unknown entity '%s'\n", entity);
            return 2;
        }
        /* The request would close without a run ("no run"), exit 1. */
        if (!tds_sync_org_syncs(og, e)) {
            if (!tds_org_product_has(og, e))
                fprintf(stderr, "tds-fetcher: sync: entity '%s' does not exist in Zoho %s\n", entity,
                        tds_org_books(og) ? "Books" : "Inventory");
            else
                fprintf(stderr,
                        "tds-fetcher: sync: organization '%s' does not sync '%s': its 'entities' in "
                        "TDS_CONFIG leave it out\n",
                        org, entity);
            return 2;
        }
    }
    if (strcmp(mode, "full") != 0 && strcmp(mode, "incremental") != 0 && strcmp(mode, "reconcile") != 0) {
        fprintf(stderr, "tds-fetcher: sync: invalid --mode '%s' (full, incremental or reconcile)\n", mode);
        return 2;
    }
    PGconn *db = connect_db(env);
    if (!db)
        return 1;
    char by[160];
    const char *user = getenv("USER");
    snprintf(by, sizeof(by), "cli:%s", user && *user ? user : "unknown");
    const char *p[] = {org, entity, mode, by};
    PGresult *r = PQexecParams(db,
                               "INSERT INTO tds.sync_requests (org_id, entity, mode, requested_by) "
                               "VALUES ($1, $2, $3, $4) RETURNING id",
                               4, NULL, p, NULL, NULL, 0);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "tds-fetcher: could not queue the sync request: %s", PQerrorMessage(db));
        PQclear(r);
        PQfinish(db);
        return 1;
    }
    char id[32];
    snprintf(id, sizeof(id), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    printf("sync request %s queued: %s %s for organization %s\n", id, mode, entity, org);
    fflush(stdout);
    if (detach) {
        PQfinish(db);
        return 0;
    }
    return watch_request(env, db, id, org, entity);
}

/* Show a request's runs until it is done; 0 when every run completed. Takes db. */
static int watch_request(const struct tds_cli_env *env, PGconn *db, const char *id, const char *org,
                         const char *entity)
{
    bool tty = isatty(STDOUT_FILENO);
    char like[48];
    snprintf(like, sizeof(like), "rq%s.%%", id);
    /* The runs are found by organization, entity and start (not before the
     * request) through sync_runs_org_entity_idx: run_id LIKE alone cannot
     * use the primary key outside the C collation, and read the whole
     * table (90 days of runs) twice a second. */
    char ents[512] = "{";
    for (size_t i = 0; i < tds_entity_count(); i++) {
        const struct tds_entity *e = tds_entity_at(i);
        if (strcmp(entity, "all") == 0 ? tds_sync_org_syncs(tds_orgs_find(env->orgs, org), e)
                                       : strcmp(entity, e->name) == 0)
            snprintf(ents + strlen(ents), sizeof(ents) - strlen(ents), "%s%s", ents[1] ? "," : "",
                     e->name);
    }
    snprintf(ents + strlen(ents), sizeof(ents) - strlen(ents), "}");
    char requested_at[64] = "-infinity";
    {
        const char *pr[] = {id};
        PGresult *r = PQexecParams(db, "SELECT requested_at FROM tds.sync_requests WHERE id = $1", 1,
                                   NULL, pr, NULL, NULL, 0);
        if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            snprintf(requested_at, sizeof(requested_at), "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    int64_t last_line = 0, last_quota = 0;
    int last_n = 0;
    long long quota = -1;
    char cur_run[128] = "";
    long long estimate = -1;
    int n_runs = request_runs(tds_orgs_find(env->orgs, org), entity);
    int status = 1;
    int64_t started = tds_now_ms();
    /* A claim outlives the fetcher that made it (killed, its host gone): the
     * request waits for the organization's next owner. While no session
     * holds the organization's lock (owner.c: only its owner runs it) and
     * nothing has moved for TDS_CLI_GONE_MS, that fetcher is gone; said once, and
     * once more when a fetcher holds the organization again. */
    int64_t owner_seen = started, moved = started;
    bool gone = false;
    char claimer[128] = "", last_sign[320] = "";
    char token_msg[1024] = "", token_short[64] = "";
    for (;;) {
        const char *pq[] = {id};
        PGresult *rq = PQexecParams(db,
                                    "SELECT r.done_at IS NOT NULL, r.claimed_by, EXISTS (SELECT 1 FROM pg_locks l "
                                    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                                    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                                    "AND ((l.classid::bigint << 32) | l.objid::bigint) "
                                    "= hashtext('tds-org:' || r.org_id)::bigint) "
                                    "FROM tds.sync_requests r WHERE r.id = $1",
                                    1, NULL, pq, NULL, NULL, 0);
        if (!rq || PQresultStatus(rq) != PGRES_TUPLES_OK || PQntuples(rq) != 1) {
            PQclear(rq);
            if (PQstatus(db) != CONNECTION_OK)
                PQreset(db);
            sleep_ms(1000);
            continue;
        }
        bool done = strcmp(PQgetvalue(rq, 0, 0), "t") == 0;
        bool claimed = !PQgetisnull(rq, 0, 1);
        bool owned = strcmp(PQgetvalue(rq, 0, 2), "t") == 0;
        snprintf(claimer, sizeof(claimer), "%s", claimed ? PQgetvalue(rq, 0, 1) : "");
        PQclear(rq);
        /* the request's time as a value, not a subquery: planned with it,
         * the start bound is seen to be narrow */
        const char *pl[] = {like, org, ents, requested_at};
        /* columns: 0 entity, 1 mode, 2 status, 3 pages_fetched, 4 records_fetched,
         * 5 pages_written, 6 records_written, 7 records_rejected, 8 api_calls,
         * 9 seconds, 10 error, 11 records_walked, 12 run_id, 13 started_at */
        PGresult *rr = PQexecParams(db,
                                    "SELECT entity, mode, status, pages_fetched, records_fetched, pages_written, "
                                    "records_written, records_rejected, api_calls, "
                                    "extract(epoch from (coalesce(finished_at, now()) - started_at)), "
                                    "coalesce(error, ''), records_walked, run_id, started_at "
                                    "FROM tds.sync_runs WHERE org_id = $2 AND entity = ANY($3::text[]) "
                                    "AND started_at >= $4::timestamptz - interval '1 minute' "
                                    "AND run_id LIKE $1 ORDER BY started_at",
                                    4, NULL, pl, NULL, NULL, 0);
        if (!rr || PQresultStatus(rr) != PGRES_TUPLES_OK) {
            PQclear(rr);
            if (PQstatus(db) == CONNECTION_OK) { /* not a lost connection: it will not pass */
                fprintf(stderr,
                        "tds-fetcher: sync: could not read tds.sync_runs: %s"
                        "(is the schema older than this release? `tds-writer migrate` applies it; "
                        "the request stays queued)\n",
                        PQerrorMessage(db));
                PQfinish(db);
                return 1;
            }
            PQreset(db);
            sleep_ms(1000);
            continue;
        }
        int n = PQntuples(rr);
        int64_t now = tds_now_ms();
        if (now - last_quota >= 2000) {
            quota = quota_left(env, org);
            last_quota = now;
            char msg[sizeof(token_msg)], sh[sizeof(token_short)];
            if (!done && token_problem(db, org, msg, sizeof(msg), sh, sizeof(sh)) == 0) {
                if (strcmp(msg, token_msg) != 0) {
                    char again[192];
                    snprintf(again, sizeof(again), "token refresh for organization %s works again", org);
                    say(tty, *msg ? msg : again);
                    last_n = -1; /* the progress line again under it */
                }
                snprintf(token_msg, sizeof(token_msg), "%s", msg);
                snprintf(token_short, sizeof(token_short), "%s", sh);
            }
        }
        /* what moves while a fetcher works: the claim, the runs, the latest one's counts */
        char sign[sizeof(last_sign)];
        snprintf(sign, sizeof(sign), "%s|%d|%s|%s|%s|%s|%s|%s", claimer, n, n ? PQgetvalue(rr, n - 1, 12) : "",
                 n ? PQgetvalue(rr, n - 1, 2) : "", n ? PQgetvalue(rr, n - 1, 11) : "",
                 n ? PQgetvalue(rr, n - 1, 3) : "", n ? PQgetvalue(rr, n - 1, 5) : "",
                 n ? PQgetvalue(rr, n - 1, 8) : "");
        if (strcmp(sign, last_sign) != 0) {
            snprintf(last_sign, sizeof(last_sign), "%s", sign);
            moved = now;
        }
        if (owned)
            owner_seen = now;
        if (!done && !gone && (claimed || n > 0) && now - owner_seen >= TDS_CLI_GONE_MS &&
            now - moved >= TDS_CLI_GONE_MS) {
            gone = true;
            char msg[512];
            snprintf(msg, sizeof(msg),
                     "%s, which took this request, is gone: no tds-fetcher holds organization %s (for "
                     "%llds, and the request has not moved); it stays open, and a fetcher started again "
                     "takes it over",
                     *claimer ? claimer : "the fetcher", org, (long long)((now - owner_seen) / 1000));
            say(tty, msg);
            last_n = -1;
        } else if (gone && owned && !done) {
            gone = false;
            char msg[192];
            snprintf(msg, sizeof(msg), "a tds-fetcher holds organization %s again", org);
            say(tty, msg);
            last_n = -1;
        }
        if (done) {
            if (tty)
                printf("\r\033[K");
            printf("sync request %s done:\n", id);
            /* Each entity is judged by its latest run (rows are in start
             * order): a failed attempt (or one abandoned at a takeover) that
             * a later run of the same entity made good is shown, but the
             * request succeeded. */
            status = n > 0 ? 0 : 1;
            int retried = 0;
            for (int i = 0; i < n; i++) {
                bool latest = true;
                for (int j = i + 1; j < n && latest; j++)
                    latest = strcmp(PQgetvalue(rr, i, 0), PQgetvalue(rr, j, 0)) != 0;
                bool ok = strcmp(PQgetvalue(rr, i, 2), "completed") == 0;
                if (latest && !ok)
                    status = 1;
                else if (!ok)
                    retried++;
                char dur[32], error[512];
                fmt_dur(strtod(PQgetvalue(rr, i, 9), NULL), dur, sizeof(dur));
                tds_term_text(PQgetvalue(rr, i, 10), (size_t)PQgetlength(rr, i, 10), error,
                              sizeof(error));
                printf("  %-14s %-11s %-9s %s records, %s fetched / %s written / %s rejected in %s pages, "
                       "%s api calls, %s%s%s\n",
                       PQgetvalue(rr, i, 0), PQgetvalue(rr, i, 1), PQgetvalue(rr, i, 2),
                       PQgetvalue(rr, i, 11), PQgetvalue(rr, i, 4), PQgetvalue(rr, i, 6),
                       PQgetvalue(rr, i, 7), PQgetvalue(rr, i, 3), PQgetvalue(rr, i, 8), dur,
                       *error ? ": " : "", error);
            }
            if (retried > 0)
                printf("  %d earlier attempt%s did not complete and %s retried\n", retried,
                       retried == 1 ? "" : "s", retried == 1 ? "was" : "were");
            if (missing_runs(tds_orgs_find(env->orgs, org), entity, rr, n, id) > 0)
                status = 1;
            else if (n == 0)
                printf("  no run was started (unknown entity for this organization?)\n");
            PQclear(rr);
            break;
        }
        char line[640];
        if (n == 0) {
            long long waited = (long long)((now - started) / 1000);
            /* a fetcher claims a request within about a second of its tick */
            if (claimed)
                snprintf(line, sizeof(line), "request taken by %s, waiting for its first run (%llds)", claimer,
                         waited);
            else
                snprintf(line, sizeof(line), "waiting for a fetcher to take the request (%llds)%s", waited,
                         waited >= 15 ? ": none has; is a tds-fetcher running, with this "
                                        "organization in its TDS_CONFIG and this database?"
                                      : "");
        } else {
            int i = n - 1;
            const char *ent = PQgetvalue(rr, i, 0), *rmode = PQgetvalue(rr, i, 1);
            const char *rstatus = PQgetvalue(rr, i, 2);
            bool running = strcmp(rstatus, "running") == 0;
            if (strcmp(PQgetvalue(rr, i, 12), cur_run) != 0) {
                snprintf(cur_run, sizeof(cur_run), "%s", PQgetvalue(rr, i, 12));
                estimate = walk_estimate(db, org, ent, rmode, PQgetvalue(rr, i, 13));
            }
            long long walked = strtoll(PQgetvalue(rr, i, 11), NULL, 10);
            double secs = strtod(PQgetvalue(rr, i, 9), NULL);
            int done_n = entities_completed(rr, n);
            /* this run's share: how far its walk is against the rows the table
             * held, when that is known (never shown as finished before it is) */
            double cur = running && estimate > 0 ? (double)walked / (double)estimate : 0;
            if (cur > 0.99)
                cur = 0.99;
            double frac = ((double)(done_n < n_runs ? done_n : n_runs) + cur) / (double)n_runs;
            char bar[32];
            int w = 20, fill = (int)(frac * w);
            for (int k = 0; k < w; k++)
                bar[k] = k < fill ? '#' : '-';
            bar[w] = '\0';
            char of[48] = "", rate[40] = "", eta[48] = "", q[32];
            if (estimate > 0)
                snprintf(of, sizeof(of), " of ~%lld", estimate);
            if (secs > 0.5) /* not before: a rate over the first instants says nothing */
                snprintf(rate, sizeof(rate), ", %.0f rec/s", (double)walked / secs);
            if (running && estimate > 0 && walked > 0 && secs > 0.5) {
                char d[32];
                fmt_dur(walked < estimate ? (double)(estimate - walked) / ((double)walked / secs) : 0, d,
                        sizeof(d));
                snprintf(eta, sizeof(eta), ", eta %s", d);
            }
            if (quota >= 0)
                snprintf(q, sizeof(q), "%lld", quota);
            else
                snprintf(q, sizeof(q), "?");
            int k = done_n + (running ? 1 : 0);
            snprintf(line, sizeof(line),
                     "[%s] %d/%d %s %s%s%s: %lld records%s, pages %s fetched / %s written%s, api calls %s, "
                     "calls left today %s%s",
                     bar, k < 1 ? 1 : (k > n_runs ? n_runs : k), n_runs, ent, rmode, running ? "" : " ",
                     running ? "" : rstatus, walked, of, PQgetvalue(rr, i, 3), PQgetvalue(rr, i, 5), rate,
                     PQgetvalue(rr, i, 8), q, eta);
        }
        PQclear(rr);
        /* the cause, shortly, on the line a terminal keeps in view */
        size_t l = strlen(line);
        if (gone)
            snprintf(line + l, sizeof(line) - l, "; %s gone: no tds-fetcher holds the organization",
                     *claimer ? claimer : "its fetcher");
        else if (*token_short)
            snprintf(line + l, sizeof(line) - l, "; %s", token_short);
        if (tty) {
            printf("\r\033[K%s", line);
            fflush(stdout);
        } else if (now - last_line >= 2000 || n != last_n) {
            last_n = n;
            printf("%s\n", line);
            fflush(stdout);
            last_line = now;
        }
        sleep_ms(500);
    }
    PQfinish(db);
    return status;
}

/* auth exchange, its arguments checked: the code to Zoho, the token stored
 * for each organization. */
static int exchange(const struct tds_org *const *orgs, size_t n, const char *code,
                    const struct tds_cli_env *env)
{
    struct tds_store *st = NULL;
    if (tds_store_new(&st, env->database_url, "tds-fetcher-cli") != 0 || tds_store_ensure(st) != 0) {
        fprintf(stderr, "tds-fetcher: could not connect to the database: %s\n",
                st ? tds_store_error(st) : "out of memory");
        tds_store_free(st);
        return 1;
    }
    /* Before the code goes to Zoho: it is good for one exchange only. */
    int ready = tds_store_tokens_ready(st);
    if (ready <= 0) {
        if (ready == 0)
            fprintf(stderr, "tds-fetcher: auth exchange: the database has no tds.oauth_tokens "
                            "(or an older one): run `tds-writer migrate` first; the code was not "
                            "used\n");
        else
            fprintf(stderr, "tds-fetcher: could not read the database: %s\n", tds_store_error(st));
        tds_store_free(st);
        return 1;
    }
    char err[512];
    int rc = tds_oauth_exchange(orgs, n, st, code, env->token_timeout_ms, err, sizeof(err));
    tds_store_free(st);
    if (rc != 0) {
        fprintf(stderr, "tds-fetcher: %s\n", err);
        return 1;
    }
    printf("refresh token stored for organization%s ", n > 1 ? "s" : "");
    for (size_t i = 0; i < n; i++)
        printf("%s%s", i ? ", " : "", orgs[i]->org_id);
    printf("\n");
    /* The file's refresh_token wins over the stored one (fetchers read
     * it first): a revoked one there would keep the organization paused
     * however often a code is exchanged. Exit 0 all the same: the code
     * is spent and the token stored; exchanging again would not help. */
    for (size_t i = 0; i < n; i++)
        if (orgs[i]->refresh_token && *orgs[i]->refresh_token)
            fprintf(stderr,
                    "tds-fetcher: auth exchange: warning: TDS_CONFIG sets refresh_token for "
                    "organization %s and the fetchers use it, not the token just stored: remove it "
                    "from the file and restart the fetchers\n",
                    orgs[i]->org_id);
    return 0;
}

static bool same_text(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* The organizations --org names (comma-separated, the option repeatable),
 * each once, into orgs (cap entries); 0, or 2 after saying why. One grant
 * code is one Zoho user's for one client: every organization must have the
 * first one's client and accounts server. */
static int exchange_orgs(const struct tds_cli_env *env, char *const *lists, size_t n_lists,
                         const struct tds_org **orgs, size_t cap, size_t *n)
{
    *n = 0;
    for (size_t l = 0; l < n_lists; l++) {
        const char *p = lists[l];
        for (;;) {
            size_t len = strcspn(p, ",");
            char id[128];
            if (len == 0 || len >= sizeof(id)) {
                fprintf(stderr, "tds-fetcher: auth exchange: --org '%s': an empty or overlong "
                                "organization id\n", lists[l]);
                return 2;
            }
            memcpy(id, p, len);
            id[len] = '\0';
            const struct tds_org *o = tds_orgs_find(env->orgs, id);
            if (!o) {
                fprintf(stderr, "tds-fetcher: auth exchange: organization '%s' is not in TDS_CONFIG\n",
                        id);
                return 2;
            }
            bool dup = false;
            for (size_t i = 0; i < *n && !dup; i++)
                dup = orgs[i] == o;
            if (!dup) {
                if (*n == cap) {
                    fprintf(stderr, "tds-fetcher: auth exchange: more than %zu organizations\n", cap);
                    return 2;
                }
                if (*n > 0 && (!same_text(o->accounts_url, orgs[0]->accounts_url) ||
                               !same_text(o->client_id, orgs[0]->client_id) ||
                               !same_text(o->client_secret, orgs[0]->client_secret))) {
                    fprintf(stderr,
                            "tds-fetcher: auth exchange: organizations %s and %s differ in data "
                            "center, client_id or client_secret: a grant code is made for one "
                            "client; exchange one code for each; the code was not used\n",
                            orgs[0]->org_id, o->org_id);
                    return 2;
                }
                orgs[(*n)++] = o;
            }
            if (p[len] == '\0')
                break;
            p += len + 1;
        }
    }
    return 0;
}

int tds_cli_help(int argc, char **argv)
{
    bool asked = false;
    for (int i = 1; i < argc && !asked; i++)
        asked = is_help(argv[i]);
    if (strcmp(argv[0], "sync") == 0 && asked) {
        fputs(sync_usage, stdout);
        return 0;
    }
    if (strcmp(argv[0], "auth") != 0)
        return -1;
    if (argc > 2 && strcmp(argv[1], "status") == 0 && asked) {
        fputs(status_usage, stdout);
        return 0;
    }
    if (argc < 2 || asked) {
        fputs(auth_usage, stdout);
        return argc < 2 ? 2 : 0;
    }
    return -1;
}

static int cmd_auth(int argc, char **argv, const struct tds_cli_env *env)
{
    if (argc < 2 || is_help(argv[1])) {
        fputs(auth_usage, stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "status") == 0) {
        if (argc > 2) {
            if (is_help(argv[2])) {
                fputs(status_usage, stdout);
                return 0;
            }
            fprintf(stderr, "tds-fetcher: auth status: unexpected argument '%s'\n", argv[2]);
            return 2;
        }
        PGconn *db = connect_db(env);
        if (!db)
            return 1;
        printf("%-20s %-9s %-8s %-25s %-25s %-7s %s\n", "organization", "status", "refresh",
               "expires_at", "locked_until", "window", "last_error");
        for (size_t i = 0; i < env->orgs->n; i++) {
            const struct tds_org *o = &env->orgs->orgs[i];
            const char *p[] = {o->org_id};
            PGresult *r = PQexecParams(db,
                                       "SELECT status, refresh_token IS NOT NULL, coalesce(expires_at::text, '-'), "
                                       "coalesce(locked_until::text, '-'), refresh_count, coalesce(last_error, '') "
                                       "FROM tds.oauth_tokens WHERE org_id = $1",
                                       1, NULL, p, NULL, NULL, 0);
            if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
                fprintf(stderr, "tds-fetcher: could not read tds.oauth_tokens: %s", PQerrorMessage(db));
                PQclear(r);
                PQfinish(db);
                return 1;
            }
            bool cfg_rt = o->refresh_token && *o->refresh_token;
            if (PQntuples(r) == 0) {
                printf("%-20s %-9s %-8s %-25s %-25s %-7s %s\n", o->org_id, "none",
                       cfg_rt ? "config" : "missing", "-", "-", "0", "");
            } else {
                bool db_rt = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
                char last_error[512]; /* Zoho's words */
                tds_term_text(PQgetvalue(r, 0, 5), (size_t)PQgetlength(r, 0, 5), last_error,
                              sizeof(last_error));
                printf("%-20s %-9s %-8s %-25s %-25s %-7s %s\n", o->org_id, PQgetvalue(r, 0, 0),
                       cfg_rt ? "config" : (db_rt ? "stored" : "missing"), PQgetvalue(r, 0, 2),
                       PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4), last_error);
            }
            PQclear(r);
        }
        PQfinish(db);
        return 0;
    }
    if (strcmp(argv[1], "exchange") == 0) {
        static const struct option opts[] = {
            {"org", required_argument, NULL, 'o'},
            {"code", required_argument, NULL, 'c'},
            {NULL, 0, NULL, 0},
        };
        char *lists[TDS_EXCHANGE_MAX_ORGS];
        size_t n_lists = 0;
        const char *code = NULL;
        int c;
        optind = 1;
        opterr = 0;
        while ((c = getopt_long(argc - 1, argv + 1, "o:c:", opts, NULL)) != -1) {
            switch (c) {
            case 'o':
                if (n_lists == TDS_EXCHANGE_MAX_ORGS) {
                    fprintf(stderr, "tds-fetcher: auth exchange: more than %d --org options\n",
                            TDS_EXCHANGE_MAX_ORGS);
                    return 2;
                }
                lists[n_lists++] = optarg;
                break;
            case 'c': code = optarg; break;
            default:
                fprintf(stderr, "tds-fetcher: auth exchange: unknown or incomplete argument\n");
                return 2;
            }
        }
        if (n_lists == 0 || !code || !*code) {
            fprintf(stderr, "tds-fetcher: auth exchange: --org and --code are required\n");
            return 2;
        }
        const struct tds_org *orgs[TDS_EXCHANGE_MAX_ORGS];
        size_t n_orgs = 0;
        int bad = exchange_orgs(env, lists, n_lists, orgs, TDS_EXCHANGE_MAX_ORGS, &n_orgs);
        if (bad)
            return bad;
        const char *org = orgs[0]->org_id;
        char *line = NULL;
        size_t line_cap = 0;
        if (strcmp(code, "-") == 0) {
            if (isatty(STDIN_FILENO) && n_orgs > 1)
                fprintf(stderr, "grant code for organizations %s and %zu more: ", org, n_orgs - 1);
            else if (isatty(STDIN_FILENO))
                fprintf(stderr, "grant code for organization %s: ", org);
            ssize_t n = getline(&line, &line_cap, stdin);
            while (n > 0 && isspace((unsigned char)line[n - 1]))
                line[--n] = '\0';
            /* at the end of input getline may have allocated line and left
             * it unwritten: its bytes were taken for the code */
            code = line && n > 0 ? line : "";
            while (isspace((unsigned char)*code))
                code++;
            if (!*code) {
                fprintf(stderr, "tds-fetcher: auth exchange: --code -: no grant code on standard "
                                "input\n");
                free(line);
                return 2;
            }
        }
        int rc = exchange(orgs, n_orgs, code, env);
        free(line);
        return rc;
    }
    fprintf(stderr, "tds-fetcher: auth: unknown subcommand '%s' (exchange or status)\n", argv[1]);
    return 2;
}

int tds_cli_main(int argc, char **argv, const struct tds_cli_env *env)
{
    if (strcmp(argv[0], "sync") == 0)
        return cmd_sync(argc, argv, env);
    if (strcmp(argv[0], "auth") == 0)
        return cmd_auth(argc, argv, env);
    fprintf(stderr, "tds-fetcher: unknown subcommand '%s'\n", argv[0]);
    return 2;
}
