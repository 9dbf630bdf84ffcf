/* alertd — the writer's alert engine (see alertd.h).
 *
 * Owns a PostgreSQL connection of its own (the session that holds the
 * leadership lock), the alert state machine, the channels, the scrape
 * history and the /status snapshot. Runs on its own thread; the only things
 * shared with other threads are the tick counter and the snapshot string,
 * both under the mutex, and atomics. All SQL is parameterized.
 */
#include "alertd.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>

#include "alerts.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "scrape.h"
#include "util.h"

#define HIST_MAX 128
#define SNAP_MAX 4096
#define MAX_TARGETS 256
#define MIN_API_CALLS 20.0

/* Counter history of one aggregated series on one target (for rates). */
struct hist {
    char *kind, *addr, *org;
    int64_t t[HIST_MAX];
    double v[HIST_MAX];
    size_t n;
    int64_t touched_ms;
};

/* The writer's own figures at one moment, for /status windows. */
struct snap {
    int64_t t;
    double batches, rows, rejects, dead, commit_count, commit_sum;
    double le[34], cum[34];
    size_t nb;
};

/* The stage last seen at an address, to name it once it stops answering. */
struct seen_stage {
    char *addr;
    char stage[16];
};

struct org_iv {
    char *org;
    int64_t interval_s;
    char **entities; /* the configured entities; NULL: all of them */
    size_t n_entities;
};

struct tds_alertd {
    char *database_url, *instance, *scrape, *orgs_file;
    int64_t sync_interval_s, scrape_timeout_ms;
    struct tds_alert_rules *rules;
    struct tds_alertsm *sm;
    struct tds_channels *ch;
    struct tds_metrics *metrics;
    struct org_iv *orgs;
    size_t n_orgs;

    PGconn *conn;
    bool leader_local;
    int64_t lead_since_ms;   /* monotonic: when this replica began to evaluate (its history) */
    atomic_bool leader;
    atomic_ulong cycles;

    struct hist **hist;
    size_t n_hist, cap_hist;
    struct seen_stage *seen;
    size_t n_seen;
    struct snap *snaps;
    size_t n_snaps;
    int64_t now_ms, wall_ms;
    bool scrape_failed;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started, stop, curl_inited;
    atomic_bool stopping; /* read without the mutex between scrapes */
    unsigned ticks;
    char *status; /* JSON object text of the last cycle, under mu */

    struct tds_series *m_leader, *m_cycles, *m_scrape_err, *m_firing[TDS_SEV_CRITICAL + 1];
    struct tds_log_limit db_limit, scrape_limit;
};

/* ---- small helpers ---- */

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static const char *val(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

static double dval(PGresult *r, int row, int col)
{
    const char *s = val(r, row, col);
    char *end;
    double d;

    if (!s)
        return NAN;
    d = strtod(s, &end);
    return end == s ? NAN : d;
}

static PGresult *query(struct tds_alertd *d, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(d->conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;

    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return r;
    tds_log_limited(&d->db_limit, TDS_LOG_WARN, NULL, "alert query failed: %s, retrying next cycle",
                    r ? PQresultErrorMessage(r) : PQerrorMessage(d->conn));
    PQclear(r);
    return NULL;
}

static int64_t org_interval(const struct tds_alertd *d, const char *org)
{
    for (size_t i = 0; org && i < d->n_orgs; i++)
        if (strcmp(d->orgs[i].org, org) == 0)
            return d->orgs[i].interval_s;
    return d->sync_interval_s;
}

/* Whether org's entity is still synced: with TDS_CONFIG, only what it lists.
 * A tds.sync_state row outlives an organization or entity taken out of the
 * configuration, and would be stale for ever. */
static bool configured(const struct tds_alertd *d, const char *org, const char *entity)
{
    if (!d->orgs)
        return true; /* no TDS_CONFIG: every row counts */
    for (size_t i = 0; org && i < d->n_orgs; i++) {
        if (strcmp(d->orgs[i].org, org) != 0)
            continue;
        if (!d->orgs[i].entities)
            return true;
        for (size_t k = 0; entity && k < d->orgs[i].n_entities; k++)
            if (strcmp(d->orgs[i].entities[k], entity) == 0)
                return true;
        return false;
    }
    return false;
}

/* Whether org is still synced at all (configured(), any entity). A token
 * row or a failed run outlives an organization taken out of TDS_CONFIG
 * (its connection revoked, say): its token_failed would fire, critical, for
 * ever, for an organization `tds-fetcher auth status` no longer lists. */
static bool org_configured(const struct tds_alertd *d, const char *org)
{
    if (!d->orgs)
        return true;
    for (size_t i = 0; org && i < d->n_orgs; i++)
        if (strcmp(d->orgs[i].org, org) == 0)
            return true;
    return false;
}

static int load_orgs(struct tds_alertd *d, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root, *list, *o;
    size_t i;

    if (!d->orgs_file || !d->orgs_file[0])
        return 0;
    /* jansson reads a folder as an empty file ("'[' or '{' expected") */
    struct stat st;
    if (stat(d->orgs_file, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "invalid TDS_CONFIG: '%s': a folder, not a file", d->orgs_file);
        return TDS_E_INVALID;
    }
    root = json_load_file(d->orgs_file, 0, &je);
    if (!root) {
        tds_config_json_error_clean(je.text);
        snprintf(err, errlen, "invalid TDS_CONFIG: '%s': %s", d->orgs_file, je.text);
        return TDS_E_INVALID;
    }
    list = json_object_get(root, "organizations");
    if (!json_is_array(list)) {
        snprintf(err, errlen, "invalid TDS_CONFIG: '%s': no organizations array", d->orgs_file);
        json_decref(root);
        return TDS_E_INVALID;
    }
    d->orgs = calloc(json_array_size(list) + 1, sizeof(*d->orgs));
    if (!d->orgs) {
        json_decref(root);
        return -ENOMEM;
    }
    json_array_foreach(list, i, o) {
        json_t *id = json_object_get(o, "org_id"), *iv = json_object_get(o, "incremental_every_s");
        json_t *ents = json_object_get(o, "entities"), *e;
        struct org_iv *g = &d->orgs[d->n_orgs];
        char num[32];
        size_t k;

        /* an id given as a number, as the stages' loader takes it */
        if (json_is_integer(id))
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(id));
        else if (!json_is_string(id))
            continue;
        g->org = strdup(json_is_string(id) ? json_string_value(id) : num);
        g->interval_s = json_is_integer(iv) && json_integer_value(iv) > 0 ? json_integer_value(iv)
                                                                        : d->sync_interval_s;
        if (!g->org)
            continue;
        d->n_orgs++;
        if (!json_is_array(ents) || json_array_size(ents) == 0)
            continue;
        g->entities = calloc(json_array_size(ents), sizeof(*g->entities));
        if (!g->entities)
            continue; /* all entities: no alert lost for lack of memory */
        json_array_foreach(ents, k, e)
            if (json_is_string(e) && (g->entities[g->n_entities] = strdup(json_string_value(e))))
                g->n_entities++;
    }
    json_decref(root);
    return 0;
}

/* ---- history for rates ---- */

static struct hist *hist_get(struct tds_alertd *d, const char *kind, const char *addr,
                             const char *org)
{
    struct hist *h;

    org = org ? org : "";
    for (size_t i = 0; i < d->n_hist; i++) {
        h = d->hist[i];
        if (strcmp(h->kind, kind) == 0 && strcmp(h->addr, addr) == 0 && strcmp(h->org, org) == 0)
            return h;
    }
    if (d->n_hist == d->cap_hist) {
        size_t nc = d->cap_hist ? d->cap_hist * 2 : 32;
        struct hist **p = realloc(d->hist, nc * sizeof(*p));

        if (!p)
            return NULL;
        d->hist = p;
        d->cap_hist = nc;
    }
    h = calloc(1, sizeof(*h));
    if (!h || !(h->kind = strdup(kind)) || !(h->addr = strdup(addr)) || !(h->org = strdup(org))) {
        if (h) {
            free(h->kind);
            free(h->addr);
            free(h->org);
        }
        free(h);
        return NULL;
    }
    d->hist[d->n_hist++] = h;
    return h;
}

static void hist_free(struct hist *h)
{
    free(h->kind);
    free(h->addr);
    free(h->org);
    free(h);
}

static void hist_put(struct hist *h, int64_t t, double v)
{
    if (h->n == HIST_MAX) {
        memmove(h->t, h->t + 1, (HIST_MAX - 1) * sizeof(h->t[0]));
        memmove(h->v, h->v + 1, (HIST_MAX - 1) * sizeof(h->v[0]));
        h->n--;
    }
    h->t[h->n] = t;
    h->v[h->n] = v;
    h->n++;
    h->touched_ms = t;
}

/* Increase of a counter over the window ending at the last point, counting
 * a drop as a restart from zero. *dt_ms = time covered. */
static double hist_increase(const struct hist *h, int64_t window_ms, int64_t *dt_ms)
{
    size_t base = 0;
    double inc = 0;

    *dt_ms = 0;
    if (h->n < 2)
        return 0;
    for (size_t i = 0; i < h->n; i++)
        if (h->t[i] <= h->t[h->n - 1] - window_ms)
            base = i;
    for (size_t i = base + 1; i < h->n; i++) {
        double dv = h->v[i] - h->v[i - 1];

        inc += dv >= 0 ? dv : h->v[i];
    }
    *dt_ms = h->t[h->n - 1] - h->t[base];
    return inc;
}

static double hist_delta(const struct hist *h, int64_t window_ms)
{
    size_t base = 0;

    if (h->n < 2)
        return 0;
    for (size_t i = 0; i < h->n; i++)
        if (h->t[i] <= h->t[h->n - 1] - window_ms)
            base = i;
    return h->v[h->n - 1] - h->v[base];
}

static void hist_gc(struct tds_alertd *d)
{
    for (size_t i = 0; i < d->n_hist;) {
        if (d->hist[i]->touched_ms < d->now_ms - 30 * 60 * 1000) {
            hist_free(d->hist[i]);
            memmove(&d->hist[i], &d->hist[i + 1], (d->n_hist - i - 1) * sizeof(d->hist[0]));
            d->n_hist--;
            continue;
        }
        i++;
    }
}

/* ---- observations ---- */

static char *details_of(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    return s;
}

static void observe(struct tds_alertd *d, const char *rule, const char *key, const char *org,
                    const char *entity, double value, const char *summary, json_t *details)
{
    char *det = details_of(details);
    char text[1200];

    /* Summaries are formatted into fixed buffers, which cut long text (a
     * reason, an error) at any byte; stored and sent as text, they must not
     * end inside a character. */
    snprintf(text, sizeof(text), "%s", summary);
    tds_utf8_trim(text);
    if (tds_alertsm_observe(d->sm, rule, key, org, entity, value, text, det) != 0)
        tds_error("out of memory evaluating alert rule %s, skipping", rule);
    free(det);
}

static const struct tds_alert_rule *rule_of(struct tds_alertd *d, const char *name)
{
    return tds_alert_rules_find(d->rules, name);
}

static void db_sync_failed(struct tds_alertd *d)
{
    const struct tds_alert_rule *r = rule_of(d, "sync_failed");
    char win[32], key[512], summary[1024];
    const char *p[1] = {win};
    PGresult *res;

    snprintf(win, sizeof(win), "%lld", (long long)r->window_s);
    res = query(d,
                /* finished_at, which a finished run always has: sync_runs_status_idx
                 * (status, finished_at) then reads the window only, not 90 days of
                 * runs each cycle */
                "WITH fin AS (SELECT org_id, entity, status, run_id, error, "
                "finished_at AS t FROM tds.sync_runs "
                "WHERE status IN ('completed', 'failed') "
                "AND finished_at > now() - make_interval(secs => $1::float8)), "
                "ok AS (SELECT org_id, entity, max(t) AS t FROM fin WHERE status = 'completed' "
                "GROUP BY 1, 2) "
                "SELECT f.org_id, f.entity, count(*), (array_agg(f.run_id ORDER BY f.t DESC))[1], "
                "left((array_agg(f.error ORDER BY f.t DESC))[1], 300) "
                "FROM fin f LEFT JOIN ok o USING (org_id, entity) "
                "WHERE f.status = 'failed' AND (o.t IS NULL OR f.t > o.t) GROUP BY 1, 2",
                1, p);
    if (!res) {
        tds_alertsm_rule_unknown(d->sm, "sync_failed");
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        const char *org = val(res, i, 0), *ent = val(res, i, 1), *err = val(res, i, 4);
        double n = dval(res, i, 2);

        if (!configured(d, org, ent))
            continue;
        snprintf(key, sizeof(key), "org=%s,entity=%s", org, ent);
        snprintf(summary, sizeof(summary), "sync of %s for org %s failed%s%.0f time%s in a row%s%s",
                 ent, org, " ", n, n == 1 ? "" : "s", err ? ": " : "", err ? err : "");
        observe(d, "sync_failed", key, org, ent, n, summary,
                json_pack("{s:s?, s:s?}", "run_id", val(res, i, 3), "error", err));
    }
    PQclear(res);
}

static void db_sync_stuck(struct tds_alertd *d)
{
    const struct tds_alert_rule *r = rule_of(d, "sync_stuck");
    char thr[64], key[512], summary[1024];
    const char *p[1] = {thr};
    PGresult *res;

    snprintf(thr, sizeof(thr), "%f", isnan(r->threshold) ? 0 : r->threshold);
    res = query(d,
                "SELECT org_id, entity, max(extract(epoch FROM now() - updated_at)), "
                "(array_agg(run_id ORDER BY updated_at))[1] FROM tds.sync_runs "
                "WHERE status = 'running' AND updated_at < now() - make_interval(secs => $1::float8) "
                "GROUP BY 1, 2",
                1, p);
    if (!res) {
        tds_alertsm_rule_unknown(d->sm, "sync_stuck");
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        const char *org = val(res, i, 0), *ent = val(res, i, 1);
        double age = dval(res, i, 2);

        snprintf(key, sizeof(key), "org=%s,entity=%s", org, ent);
        snprintf(summary, sizeof(summary),
                 "sync run %s of %s for org %s has made no progress for %.0f s", val(res, i, 3),
                 ent, org, age);
        observe(d, "sync_stuck", key, org, ent, age, summary,
                json_pack("{s:s?}", "run_id", val(res, i, 3)));
    }
    PQclear(res);
}

/* A tds.quota_use row not rewritten for this long (its owner rewrites it
 * every second) is a fetcher that is gone: its interval no longer says when
 * the next run comes. */
#define STALE_QUOTA_TRUST_S 600

/* Also feeds /status freshness. An entity is judged against the interval its
 * fetcher uses: the configured one, stretched to fit the daily API budget
 * (fetcher/sync.c, tds_sync_incremental_ms), as the owner records it in
 * tds.quota_use.incremental_every_s; never below the configured one. */
static void db_stale(struct tds_alertd *d, json_t *fresh, bool evaluate)
{
    const struct tds_alert_rule *r = rule_of(d, "entity_stale");
    char key[512], summary[1024], trust[32];
    const char *p[1] = {trust};
    PGresult *res;

    snprintf(trust, sizeof(trust), "%d", STALE_QUOTA_TRUST_S);
    res = query(d,
                "SELECT s.org_id, s.entity, extract(epoch FROM now() - s.last_success_at), "
                "to_char(s.last_success_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                "q.incremental_every_s FROM tds.sync_state s LEFT JOIN tds.quota_use q "
                "ON q.org_id = s.org_id AND q.saved_at > now() - make_interval(secs => $1::float8) "
                "ORDER BY 1, 2 LIMIT 10000",
                1, p);
    if (!res) {
        if (evaluate)
            tds_alertsm_rule_unknown(d->sm, "entity_stale");
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        const char *org = val(res, i, 0), *ent = val(res, i, 1);
        if (!configured(d, org, ent))
            continue;
        double age = dval(res, i, 2), used = dval(res, i, 4);
        int64_t conf = org_interval(d, org);
        int64_t iv = !isnan(used) && used > (double)conf ? (int64_t)used : conf;
        double mult = isnan(age) ? NAN : age / (double)iv;
        bool stale = tds_alert_rule_judge(r, mult) != TDS_SEV_NONE;

        if (fresh)
            json_array_append_new(fresh, json_pack("{s:s, s:s, s:s?, s:o, s:I, s:b}", "org", org,
                                                   "entity", ent, "last_success_at",
                                                   val(res, i, 3), "age_s",
                                                   isnan(age) ? json_null() : json_real(age),
                                                   "interval_s", (json_int_t)iv, "stale", stale));
        if (!evaluate || isnan(mult))
            continue;
        snprintf(key, sizeof(key), "org=%s,entity=%s", org, ent);
        snprintf(summary, sizeof(summary),
                 "%s of org %s last synced %.0f s ago (%.1f times its %lld s interval)", ent, org,
                 age, mult, (long long)iv);
        observe(d, "entity_stale", key, org, ent, mult, summary,
                json_pack("{s:f, s:I, s:I}", "age_s", age, "interval_s", (json_int_t)iv,
                          "configured_interval_s", (json_int_t)conf));
    }
    PQclear(res);
}

static void db_tokens(struct tds_alertd *d)
{
    char key[512], summary[1024];
    PGresult *res = query(d,
                          "SELECT org_id, status, left(last_error, 300) FROM tds.oauth_tokens "
                          "WHERE status IN ('revoked', 'invalid') "
                          "OR (status IN ('locked', 'locked_out') "
                          "    AND (locked_until IS NULL OR locked_until > now())) "
                          "OR (status = 'ok' AND last_error IS NOT NULL)",
                          0, NULL);

    if (!res) {
        tds_alertsm_rule_unknown(d->sm, "token_failed");
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        const char *org = val(res, i, 0), *st = val(res, i, 1), *err = val(res, i, 2);

        if (!org_configured(d, org))
            continue;
        double v = strcmp(st, "revoked") == 0 || strcmp(st, "invalid") == 0 ? 2
                   : strcmp(st, "ok") == 0                                  ? 0.5
                                                                            : 1;

        snprintf(key, sizeof(key), "org=%s", org);
        if (v == 2)
            snprintf(summary, sizeof(summary),
                     "Zoho refresh token of org %s is %s; the organization is paused until "
                     "`tds-fetcher auth exchange`%s%s", org, st, err ? ": " : "", err ? err : "");
        else if (v == 1)
            snprintf(summary, sizeof(summary), "token refresh of org %s is locked out%s%s", org,
                     err ? ": " : "", err ? err : "");
        else
            snprintf(summary, sizeof(summary), "token refresh of org %s failed%s%s", org,
                     err ? ": " : "", err ? err : "");
        observe(d, "token_failed", key, org, NULL, v, summary,
                json_pack("{s:s, s:s?}", "status", st, "last_error", err));
    }
    PQclear(res);
}

static void db_rejects(struct tds_alertd *d)
{
    const struct tds_alert_rule *r = rule_of(d, "rejects_spike");
    char win[32], key[512], summary[1024];
    const char *p[1] = {win};
    PGresult *res;

    snprintf(win, sizeof(win), "%lld", (long long)r->window_s);
    res = query(d,
                "SELECT coalesce(org_id, ''), coalesce(entity, ''), count(*), "
                "(array_agg(reason ORDER BY id DESC))[1] FROM tds.rejected "
                "WHERE created_at > now() - make_interval(secs => $1::float8) GROUP BY 1, 2",
                1, p);
    if (!res) {
        tds_alertsm_rule_unknown(d->sm, "rejects_spike");
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        const char *org = val(res, i, 0), *ent = val(res, i, 1);
        double n = dval(res, i, 2);

        snprintf(key, sizeof(key), "org=%s,entity=%s", org, ent);
        const char *why = val(res, i, 3) ? val(res, i, 3) : "";

        snprintf(summary, sizeof(summary),
                 "%.0f %s records of org %s rejected in the last %lld s (latest: %.*s)", n,
                 ent[0] ? ent : "(unknown)", org[0] ? org : "(unknown)", (long long)r->window_s,
                 (int)tds_utf8_prefix(why, strlen(why), 200), why);
        observe(d, "rejects_spike", key, org[0] ? org : NULL, ent[0] ? ent : NULL, n, summary,
                json_pack("{s:I}", "window_s", (json_int_t)r->window_s));
    }
    PQclear(res);
}

/* ---- scraping ---- */

struct fetch {
    struct tds_buf body;
};

static size_t fetch_cb(char *buf, size_t size, size_t nmemb, void *ud)
{
    struct fetch *f = ud;

    if (tds_buf_add(&f->body, buf, size * nmemb) != 0)
        return 0; /* over the limit: curl aborts the transfer */
    return size * nmemb;
}

/* GET url; returns the HTTP status (0 when no answer) and the body. */
static long http_get(struct tds_alertd *d, const char *url, struct fetch *f, char *err,
                     size_t errlen)
{
    CURL *h = curl_easy_init();
    long code = 0;
    CURLcode cc;

    f->body.max = TDS_SCRAPE_MAX_BYTES;
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return 0;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)d->scrape_timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)d->scrape_timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fetch_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
    cc = curl_easy_perform(h);
    if (cc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    else
        snprintf(err, errlen, "%s", curl_easy_strerror(cc));
    curl_easy_cleanup(h);
    return code;
}

struct agg {
    char *org;
    double a, b;
    bool has_b;
};

struct aggs {
    struct agg *v;
    size_t n, cap;
};

static struct agg *agg_get(struct aggs *g, const char *org)
{
    org = org ? org : "";
    for (size_t i = 0; i < g->n; i++)
        if (strcmp(g->v[i].org, org) == 0)
            return &g->v[i];
    if (g->n == g->cap) {
        size_t nc = g->cap ? g->cap * 2 : 16;
        struct agg *p = realloc(g->v, nc * sizeof(*p));

        if (!p)
            return NULL;
        g->v = p;
        g->cap = nc;
    }
    memset(&g->v[g->n], 0, sizeof(g->v[0]));
    if (!(g->v[g->n].org = strdup(org)))
        return NULL;
    return &g->v[g->n++];
}

static void aggs_free(struct aggs *g)
{
    for (size_t i = 0; i < g->n; i++)
        free(g->v[i].org);
    free(g->v);
}

static bool api_error_status(const char *st)
{
    if (!st)
        return true;
    if (st[0] == '2' && strlen(st) == 3)
        return false;
    return strcmp(st, "404") != 0 && strcmp(st, "429") != 0;
}

static void remember_stage(struct tds_alertd *d, const char *addr, const char *stage)
{
    struct seen_stage *p;

    for (size_t i = 0; i < d->n_seen; i++)
        if (strcmp(d->seen[i].addr, addr) == 0) {
            snprintf(d->seen[i].stage, sizeof(d->seen[i].stage), "%s", stage);
            return;
        }
    if (d->n_seen >= MAX_TARGETS * 4)
        return; /* bounded: past this, unreachable targets are just "stage" */
    p = realloc(d->seen, (d->n_seen + 1) * sizeof(*p));
    if (!p)
        return;
    d->seen = p;
    if (!(p[d->n_seen].addr = strdup(addr)))
        return;
    snprintf(p[d->n_seen].stage, sizeof(p[d->n_seen].stage), "%s", stage);
    d->n_seen++;
}

/* One admin endpoint (one address of a configured name). */
static void scrape_one(struct tds_alertd *d, const char *name, const char *addr, struct aggs *quota)
{
    char url[600], err[256] = "", key[600], summary[1024];
    struct fetch f = {{0}};
    struct tds_scrape *s = NULL;
    const char *stage = "stage";
    char known[16];
    long code;
    size_t bad = 0;
    double ready;

    snprintf(url, sizeof(url), "http://%s/metrics", addr);
    code = http_get(d, url, &f, err, sizeof(err));
    if (code == 200 && tds_scrape_parse(f.body.p ? f.body.p : "", f.body.len, &s, &bad) != 0) {
        snprintf(err, sizeof(err), "unparsable /metrics (line %zu)", bad);
        s = NULL;
    }
    if (!s) {
        d->scrape_failed = true;
        if (d->m_scrape_err)
            tds_series_inc(d->m_scrape_err, 1);
        tds_log_limited(&d->scrape_limit, TDS_LOG_WARN, NULL,
                        "could not scrape %s (%s): %s, retrying next cycle", addr, name,
                        err[0] ? err : "bad status");
    }
    tds_buf_deinit(&f.body);
    for (size_t i = 0; i < d->n_seen; i++)
        if (strcmp(d->seen[i].addr, addr) == 0) {
            snprintf(known, sizeof(known), "%s", d->seen[i].stage);
            stage = known;
        }
    if (s) {
        if (tds_scrape_has(s, NULL, "tds_fetcher_"))
            stage = "fetcher";
        else if (tds_scrape_has(s, NULL, "tds_ingress_"))
            stage = "ingress";
        else if (tds_scrape_has(s, NULL, "tds_processor_"))
            stage = "processor";
        else if (tds_scrape_has(s, NULL, "tds_writer_"))
            stage = "writer";
        remember_stage(d, addr, stage);
    }

    /* readiness */
    snprintf(url, sizeof(url), "http://%s/readyz", addr);
    memset(&f, 0, sizeof(f));
    err[0] = '\0';
    code = http_get(d, url, &f, err, sizeof(err));
    ready = code == 200 ? 0 : code > 0 ? 1 : 2;
    const char *ready_body = f.body.p && f.body.len ? f.body.p : "";
    snprintf(key, sizeof(key), "target=%s", addr);
    if (ready == 0)
        snprintf(summary, sizeof(summary), "%s at %s is ready", stage, addr);
    else if (ready == 1)
        snprintf(summary, sizeof(summary), "%s at %s (%s) is not ready: %ld %.*s", stage, addr,
                 name, code, (int)tds_utf8_prefix(ready_body, strlen(ready_body), 200),
                 ready_body);
    else
        snprintf(summary, sizeof(summary), "%s at %s (%s) does not answer: %s", stage, addr, name,
                 err);
    for (char *p = summary; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    tds_buf_deinit(&f.body);
    observe(d, "stage_not_ready", key, NULL, NULL, ready, summary,
            json_pack("{s:s, s:s, s:s, s:I}", "target", addr, "name", name, "stage", stage,
                      "status", (json_int_t)code));
    if (!s)
        return;

    /* counters into history, per target and organization */
    struct aggs calls = {0}, r429 = {0};

    for (size_t i = 0; i < tds_scrape_count(s); i++) {
        const struct tds_scrape_sample *smp = tds_scrape_at(s, i);
        struct agg *g;

        if (strcmp(smp->name, "tds_fetcher_api_calls_total") == 0) {
            if ((g = agg_get(&calls, tds_scrape_label(smp, "org")))) {
                g->a += smp->value;
                if (api_error_status(tds_scrape_label(smp, "status")))
                    g->b += smp->value;
            }
        } else if (strcmp(smp->name, "tds_fetcher_429_total") == 0) {
            if ((g = agg_get(&r429, tds_scrape_label(smp, "org"))))
                g->a += smp->value;
        } else if (strcmp(smp->name, "tds_fetcher_quota_remaining") == 0) {
            /* Every fetcher exports every organization's quota, but only the
             * owner's is current (the others' is 0, or stale since they lost
             * it): believe the replica whose tds_fetcher_org_owned says 1. */
            const char *org = tds_scrape_label(smp, "org");
            size_t n_owned = 0;
            double owned = org ? tds_scrape_sum(s, "tds_fetcher_org_owned", "org", org, &n_owned)
                               : 0;

            if (n_owned == 0 || owned < 1)
                continue;
            if ((g = agg_get(quota, org)) && (!g->has_b || smp->value < g->a)) {
                g->a = smp->value;
                g->has_b = true;
            }
        }
    }
    for (size_t i = 0; i < calls.n; i++) {
        struct hist *h1 = hist_get(d, "calls", addr, calls.v[i].org);
        struct hist *h2 = hist_get(d, "errors", addr, calls.v[i].org);

        if (h1 && h2) {
            hist_put(h1, d->now_ms, calls.v[i].a);
            hist_put(h2, d->now_ms, calls.v[i].b);
        }
    }
    for (size_t i = 0; i < r429.n; i++) {
        struct hist *h = hist_get(d, "429", addr, r429.v[i].org);

        if (h)
            hist_put(h, d->now_ms, r429.v[i].a);
    }
    aggs_free(&calls);
    aggs_free(&r429);

    if (strcmp(stage, "ingress") == 0) {
        size_t n = 0;
        double sig = tds_scrape_sum(s, "tds_ingress_signature_failures_total", NULL, NULL, &n);
        double unacked = tds_scrape_sum(s, "tds_ingress_unacked", NULL, NULL, NULL);
        size_t n_held = 0, n_damaged = 0;
        double bytes = tds_scrape_sum(s, "tds_ingress_journal_bytes", NULL, NULL, NULL);
        double damaged = tds_scrape_sum(s, "tds_ingress_journal_damaged_bytes_at_start", NULL,
                                        NULL, &n_damaged);
        double held = tds_scrape_sum(s, "tds_ingress_journal_held_ratio", NULL, NULL, &n_held);
        struct hist *hs = hist_get(d, "sig", addr, NULL), *hu = hist_get(d, "unacked", addr, NULL);
        const struct tds_alert_rule *ru = rule_of(d, "ingress_unacked");

        if (hs)
            hist_put(hs, d->now_ms, sig);
        if (hu) {
            hist_put(hu, d->now_ms, unacked);
            /* only a backlog that is still growing is news */
            if (hist_delta(hu, ru->window_s * 1000) > 0) {
                snprintf(key, sizeof(key), "target=%s", addr);
                snprintf(summary, sizeof(summary),
                         "%.0f journaled webhooks on ingress %s wait for the writer, and growing",
                         unacked, addr);
                observe(d, "ingress_unacked", key, NULL, NULL, unacked, summary,
                        json_pack("{s:s}", "target", addr));
            }
        }
        /* The bytes on disk never pass TDS_INGRESS_JOURNAL_MAX_BYTES (the
         * ingress answers 503 first) and include acked segments kept for
         * replay, which give way: what fills the journal is the share held
         * from the first unacked entry on. An ingress of a release before
         * that gauge is not judged. */
        if (n_held) {
            snprintf(key, sizeof(key), "target=%s", addr);
            snprintf(summary, sizeof(summary),
                     "%.0f%% of the journal bound of ingress %s is held by webhooks the writer has "
                     "not acked (%.0f bytes on disk); at 100%% webhooks get 503",
                     held * 100, addr, bytes);
            observe(d, "journal_bytes", key, NULL, NULL, held, summary,
                    json_pack("{s:s}", "target", addr));
        }
        /* Damage the journal's open skipped: the disk gave back other bytes
         * than were written. It stands until the ingress starts again and
         * finds none (its segment dropped once its webhooks were acked). */
        if (n_damaged) {
            snprintf(key, sizeof(key), "target=%s", addr);
            snprintf(summary, sizeof(summary),
                     "the journal of ingress %s had %.0f damaged bytes inside its segments at "
                     "start: what they held is lost; check its disk and run an incremental sync",
                     addr, damaged);
            observe(d, "journal_damaged", key, NULL, NULL, damaged, summary,
                    json_pack("{s:s}", "target", addr));
        }
    }
    tds_scrape_free(s);
}

static int split_target(const char *item, char *host, size_t hl, char *port, size_t pl)
{
    const char *p = item, *e;

    while (*p == ' ')
        p++;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    e = p + strcspn(p, "/");
    while (e > p && e[-1] == ' ')
        e--;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(e - p));

        if (!rb || rb[1] != ':' || (size_t)(rb - p - 1) >= hl)
            return TDS_E_INVALID;
        snprintf(host, hl, "%.*s", (int)(rb - p - 1), p + 1);
        p = rb + 2;
    } else {
        const char *c = NULL;

        for (const char *q = p; q < e; q++)
            if (*q == ':')
                c = q;
        if (!c || (size_t)(c - p) >= hl || c == p)
            return TDS_E_INVALID;
        snprintf(host, hl, "%.*s", (int)(c - p), p);
        p = c + 1;
    }
    if (e <= p || (size_t)(e - p) >= pl)
        return TDS_E_INVALID;
    snprintf(port, pl, "%.*s", (int)(e - p), p);
    return 0;
}

static void scrape_all(struct tds_alertd *d)
{
    const char *p = d->scrape;
    struct aggs quota = {0};
    size_t n_targets = 0;
    char key[512], summary[1024];

    d->scrape_failed = false;
    while (p && *p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        char item[512], host[256], port[16];
        struct addrinfo hints, *res = NULL;

        snprintf(item, sizeof(item), "%.*s", (int)(l < sizeof(item) - 1 ? l : sizeof(item) - 1), p);
        p = e ? e + 1 : p + l;
        if (split_target(item, host, sizeof(host), port, sizeof(port)) != 0)
            continue; /* checked at start-up */
        memset(&hints, 0, sizeof(hints));
        hints.ai_socktype = SOCK_STREAM;
        if (getaddrinfo(host, port, &hints, &res) != 0) {
            /* A name that does not resolve (a typo in TDS_ALERT_SCRAPE, a
             * Service deleted or with no replica left): no replica to ask,
             * so the metric rules hold, and stage_not_ready says why, as for
             * a target that does not answer. It raised nothing and counted
             * no scrape error, while the metric alerts could not resolve. */
            d->scrape_failed = true;
            if (d->m_scrape_err)
                tds_series_inc(d->m_scrape_err, 1);
            tds_log_limited(&d->scrape_limit, TDS_LOG_WARN, NULL,
                            "could not resolve scrape target %s, retrying next cycle", host);
            snprintf(key, sizeof(key), "target=%s:%s", host, port);
            snprintf(summary, sizeof(summary), "scrape target %s does not resolve: no stage to ask",
                     item);
            observe(d, "stage_not_ready", key, NULL, NULL, 2, summary,
                    json_pack("{s:s, s:s}", "target", key + 7, "name", item));
            continue;
        }
        for (struct addrinfo *ai = res; ai && n_targets < MAX_TARGETS && !atomic_load(&d->stopping);
             ai = ai->ai_next) {
            char ip[INET6_ADDRSTRLEN], addr[INET6_ADDRSTRLEN + 16];
            bool dup = false;

            if (ai->ai_family == AF_INET)
                inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, ip, sizeof(ip));
            else if (ai->ai_family == AF_INET6)
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, ip,
                          sizeof(ip));
            else
                continue;
            snprintf(addr, sizeof(addr), ai->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s", ip, port);
            for (struct addrinfo *q = res; q != ai; q = q->ai_next)
                dup = dup || (q->ai_addrlen == ai->ai_addrlen &&
                              memcmp(q->ai_addr, ai->ai_addr, ai->ai_addrlen) == 0);
            if (dup)
                continue;
            scrape_one(d, item, addr, &quota);
            n_targets++;
        }
        freeaddrinfo(res);
    }

    /* rates summed over every target, per organization */
    const struct tds_alert_rule *re = rule_of(d, "api_error_rate"), *rs = rule_of(d, "rate_limit_storm"),
                                *rq = rule_of(d, "signature_failures");
    struct aggs err = {0}, r429 = {0};
    double sig = 0;
    int64_t sig_dt = 0;

    for (size_t i = 0; i < d->n_hist; i++) {
        struct hist *h = d->hist[i];
        int64_t dt;
        struct agg *g;

        if (h->touched_ms != d->now_ms)
            continue;
        if (strcmp(h->kind, "calls") == 0 || strcmp(h->kind, "errors") == 0) {
            double inc = hist_increase(h, re->window_s * 1000, &dt);

            if ((g = agg_get(&err, h->org))) {
                if (h->kind[0] == 'c')
                    g->a += inc;
                else
                    g->b += inc;
            }
        } else if (strcmp(h->kind, "429") == 0) {
            double inc = hist_increase(h, rs->window_s * 1000, &dt);

            if (dt > 0 && (g = agg_get(&r429, h->org)))
                g->a += inc / ((double)dt / 1000.0);
        } else if (strcmp(h->kind, "sig") == 0) {
            double inc = hist_increase(h, rq->window_s * 1000, &dt);

            if (dt > 0) {
                sig += inc / ((double)dt / 1000.0);
                sig_dt = dt;
            }
        }
    }
    for (size_t i = 0; i < err.n; i++) {
        if (err.v[i].a < MIN_API_CALLS)
            continue;
        double rate = err.v[i].b / err.v[i].a;

        snprintf(key, sizeof(key), "org=%s", err.v[i].org);
        snprintf(summary, sizeof(summary),
                 "%.1f%% of Zoho API calls for org %s failed in the last %lld s (%.0f of %.0f)",
                 rate * 100, err.v[i].org, (long long)re->window_s, err.v[i].b, err.v[i].a);
        observe(d, "api_error_rate", key, err.v[i].org, NULL, rate, summary,
                json_pack("{s:f, s:f}", "calls", err.v[i].a, "errors", err.v[i].b));
    }
    for (size_t i = 0; i < r429.n; i++) {
        snprintf(key, sizeof(key), "org=%s", r429.v[i].org);
        snprintf(summary, sizeof(summary), "Zoho answers 429 to org %s at %.2f/s", r429.v[i].org,
                 r429.v[i].a);
        observe(d, "rate_limit_storm", key, r429.v[i].org, NULL, r429.v[i].a, summary,
                json_pack("{s:f}", "per_second", r429.v[i].a));
    }
    for (size_t i = 0; i < quota.n; i++) {
        snprintf(key, sizeof(key), "org=%s", quota.v[i].org);
        snprintf(summary, sizeof(summary), "org %s has %.0f Zoho API calls left today",
                 quota.v[i].org, quota.v[i].a);
        observe(d, "quota_low", key, quota.v[i].org, NULL, quota.v[i].a, summary,
                json_pack("{s:f}", "remaining", quota.v[i].a));
    }
    if (sig_dt > 0) {
        snprintf(summary, sizeof(summary), "%.2f/s webhooks fail the signature check", sig);
        observe(d, "signature_failures", "all", NULL, NULL, sig, summary,
                json_pack("{s:f}", "per_second", sig));
    }
    aggs_free(&err);
    aggs_free(&r429);
    aggs_free(&quota);
    /* A rule over a counter's increase sees nothing until this replica's
     * history covers its window: a new leader (a restart, a takeover) used
     * to resolve the alerts it had just reloaded as firing, and fire them
     * again a few minutes later. Not seen yet is not cleared. */
    {
        const struct tds_alert_rule *ru = rule_of(d, "ingress_unacked");
        const struct tds_alert_rule *hist_rules[] = {re, rs, rq, ru};

        for (size_t i = 0; i < TDS_ARRAY_SIZE(hist_rules); i++)
            if (d->now_ms - d->lead_since_ms < hist_rules[i]->window_s * 1000)
                tds_alertsm_rule_unknown(d->sm, hist_rules[i]->name);
    }
    if (d->scrape_failed) {
        /* one unreachable replica must not resolve what the others report */
        static const char *const rules[] = {"api_error_rate", "rate_limit_storm", "quota_low",
                                            "signature_failures", "ingress_unacked",
                                            "journal_bytes", "journal_damaged"};

        for (size_t i = 0; i < TDS_ARRAY_SIZE(rules); i++)
            tds_alertsm_rule_unknown(d->sm, rules[i]);
    }
    hist_gc(d);
}

/* ---- persistence and notices ---- */

static void post_notice(struct tds_alertd *d, enum tds_alert_notice notice, const struct tds_alert *a)
{
    struct tds_notice n = {
        .kind = notice == TDS_NOTICE_RESOLVED    ? TDS_NOTICE_KIND_RESOLVED
                : notice == TDS_NOTICE_ESCALATED ? TDS_NOTICE_KIND_ESCALATED
                                                 : TDS_NOTICE_KIND_FIRING,
        .id = a->id,
        .rule = a->rule,
        .severity = tds_alert_sev_name(a->severity),
        .org = a->org,
        .entity = a->entity,
        .summary = a->summary,
        .details = a->details,
        .value = a->value,
        .instance = d->instance,
        .fired_wall_ms = a->fired_wall_ms,
        .wall_ms = d->wall_ms,
    };

    tds_channels_post(d->ch, &n);
}

static int on_action(enum tds_alert_action act, enum tds_alert_notice notice, struct tds_alert *a,
                     void *ud)
{
    struct tds_alertd *d = ud;
    char idbuf[32], valbuf[64];
    const char *sev = tds_alert_sev_name(a->severity);
    PGresult *r;

    snprintf(idbuf, sizeof(idbuf), "%lld", (long long)a->id);
    snprintf(valbuf, sizeof(valbuf), "%.17g", isfinite(a->value) ? a->value : 0);
    if (act == TDS_ALERT_ACT_FIRE) {
        const char *p[8] = {a->rule, sev, a->org, a->entity, a->summary ? a->summary : a->rule,
                            a->details, a->key, valbuf};

        r = query(d,
                  "INSERT INTO tds.alerts (rule, severity, org_id, entity, summary, details, state, "
                  "fired_at, last_seen_at, notified_at) VALUES ($1, $2, $3, $4, $5, "
                  "coalesce($6::jsonb, '{}'::jsonb) || jsonb_build_object('key', $7::text, "
                  "'value', $8::float8, 'notified_severity', $2::text), 'firing', now(), now(), "
                  "now()) RETURNING id, (extract(epoch FROM fired_at) * 1000)::bigint",
                  8, p);
        if (!r)
            return -EIO;
        a->id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        a->fired_wall_ms = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        PQclear(r);
        post_notice(d, TDS_NOTICE_FIRING, a);
        return 0;
    }
    if (act == TDS_ALERT_ACT_UPDATE) {
        const char *notify = notice != TDS_NOTICE_NONE ? "true" : "false";
        const char *p[7] = {idbuf, sev, a->summary ? a->summary : a->rule, a->details, a->key,
                            valbuf, notify};

        r = query(d,
                  "UPDATE tds.alerts SET severity = $2, summary = $3, "
                  "details = coalesce($4::jsonb, details, '{}'::jsonb) || "
                  "jsonb_build_object('key', $5::text, 'value', $6::float8, 'notified_severity', "
                  "CASE WHEN $7::boolean THEN $2::text ELSE details->>'notified_severity' END), "
                  "last_seen_at = now(), "
                  "notified_at = CASE WHEN $7::boolean THEN now() ELSE notified_at END "
                  "WHERE id = $1::bigint AND state = 'firing' RETURNING acknowledged_at IS NOT NULL",
                  7, p);
        if (!r)
            return -EIO;
        if (PQntuples(r) == 0) {
            /* resolved or removed by hand: start a new alert next cycle */
            PQclear(r);
            a->id = 0;
            a->notified_severity = 0;
            return -ENOENT;
        }
        PQclear(r);
        if (notice != TDS_NOTICE_NONE)
            post_notice(d, notice, a);
        return 0;
    }
    {
        const char *p[1] = {idbuf};

        r = query(d,
                  "UPDATE tds.alerts SET state = 'resolved', resolved_at = now(), "
                  "last_seen_at = last_seen_at WHERE id = $1::bigint AND state = 'firing'",
                  1, p);
        if (!r)
            return -EIO;
        PQclear(r);
        if (notice == TDS_NOTICE_RESOLVED) {
            char summary[1200];
            char *old = a->summary;

            snprintf(summary, sizeof(summary), "resolved: %s", old ? old : a->rule);
            a->summary = summary;
            post_notice(d, notice, a);
            a->summary = old;
        }
        return 0;
    }
}

static int load_firing(struct tds_alertd *d)
{
    PGresult *r = query(d,
                        "SELECT id, rule, severity, org_id, entity, summary, "
                        "coalesce(details->>'key', 'org=' || coalesce(org_id, '') || ',entity=' || "
                        "coalesce(entity, '')), details->>'notified_severity', "
                        "notified_at IS NOT NULL, (extract(epoch FROM fired_at) * 1000)::bigint, "
                        "acknowledged_at IS NOT NULL FROM tds.alerts WHERE state = 'firing' "
                        "ORDER BY id",
                        0, NULL);

    if (!r)
        return -EIO;
    tds_alertsm_clear(d->sm);
    for (int i = 0; i < PQntuples(r); i++) {
        int sev = TDS_SEV_ERROR, nsev = 0;

        /* rows of rules this version does not know (written by hand, or by
         * a newer writer during a rolling upgrade) are not ours to resolve */
        if (!rule_of(d, val(r, i, 1)))
            continue;
        tds_alert_sev_parse(val(r, i, 2), &sev);
        if (val(r, i, 7))
            tds_alert_sev_parse(val(r, i, 7), &nsev);
        else if (strcmp(PQgetvalue(r, i, 8), "t") == 0)
            nsev = sev;
        tds_alertsm_load(d->sm, val(r, i, 1), val(r, i, 6), val(r, i, 3), val(r, i, 4),
                         val(r, i, 5), strtoll(PQgetvalue(r, i, 0), NULL, 10), sev, nsev,
                         strtoll(PQgetvalue(r, i, 9), NULL, 10),
                         strcmp(PQgetvalue(r, i, 10), "t") == 0);
    }
    PQclear(r);
    return 0;
}

static void refresh_acks(struct tds_alertd *d)
{
    PGresult *r = query(d,
                        "SELECT id, acknowledged_at IS NOT NULL FROM tds.alerts "
                        "WHERE state = 'firing'",
                        0, NULL);

    if (!r)
        return;
    for (int i = 0; i < PQntuples(r); i++)
        tds_alertsm_set_ack(d->sm, strtoll(PQgetvalue(r, i, 0), NULL, 10),
                            strcmp(PQgetvalue(r, i, 1), "t") == 0);
    PQclear(r);
}

/* The fetcher records some conditions in tds.alerts itself, as it meets
 * them (rule names zoho_*), and never resolves them. They describe what the
 * engine's own rules watch, so the engine resolves such a row once its own
 * rule for the same organization (and entity) is clear, and does not notify
 * for it: the notice comes from the engine's rule. */
static const struct {
    const char *foreign, *rule;
    bool by_entity;
} adopted[] = {
    {"zoho_sync_failed", "sync_failed", true},
    {"zoho_token_revoked", "token_failed", false},
    {"zoho_token_invalid", "token_failed", false},
    {"zoho_token_lockout", "token_failed", false},
};

static bool condition_present(struct tds_alertd *d, const char *rule, const char *org,
                              const char *entity, bool by_entity)
{
    for (size_t i = 0; i < tds_alertsm_count(d->sm); i++) {
        const struct tds_alert *a = tds_alertsm_at(d->sm, i);

        if (strcmp(a->rule, rule) != 0 || !a->org || !org || strcmp(a->org, org) != 0)
            continue;
        if (!by_entity || (a->entity && entity && strcmp(a->entity, entity) == 0))
            return true;
    }
    return false;
}

static void resolve_adopted(struct tds_alertd *d)
{
    PGresult *r = query(d,
                        "SELECT id, rule, org_id, entity FROM tds.alerts WHERE state = 'firing' "
                        "AND rule IN ('zoho_sync_failed', 'zoho_token_revoked', "
                        "'zoho_token_invalid', 'zoho_token_lockout')",
                        0, NULL);

    if (!r)
        return;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *rule = val(r, i, 1), *org = val(r, i, 2), *ent = val(r, i, 3);

        for (size_t k = 0; k < TDS_ARRAY_SIZE(adopted); k++) {
            const struct tds_alert_rule *own = rule_of(d, adopted[k].rule);
            const char *p[1] = {PQgetvalue(r, i, 0)};

            if (strcmp(rule, adopted[k].foreign) != 0 || !own || !own->enabled ||
                tds_alertsm_rule_is_unknown(d->sm, adopted[k].rule) ||
                condition_present(d, adopted[k].rule, org, ent, adopted[k].by_entity))
                continue;
            PQclear(query(d,
                          "UPDATE tds.alerts SET state = 'resolved', resolved_at = now() "
                          "WHERE id = $1::bigint AND state = 'firing'",
                          1, p));
            tds_info("resolved alert %s (%s, recorded by the fetcher): rule %s is clear",
                     p[0], rule, adopted[k].rule);
        }
    }
    PQclear(r);
}

/* ---- /status ---- */

static void take_snapshot(struct tds_alertd *d)
{
    char *text = NULL;
    size_t len = 0;
    struct tds_scrape *s = NULL;
    struct snap sn;

    if (!d->metrics || tds_metrics_render(d->metrics, &text, &len) != 0)
        return;
    if (tds_scrape_parse(text, len, &s, NULL) != 0) {
        free(text);
        return;
    }
    free(text);
    memset(&sn, 0, sizeof(sn));
    sn.t = d->now_ms;
    sn.batches = tds_scrape_sum(s, "tds_writer_batches_total", NULL, NULL, NULL);
    sn.rows = tds_scrape_sum(s, "tds_writer_rows_written_total", NULL, NULL, NULL);
    sn.rejects = tds_scrape_sum(s, "tds_writer_rejects_total", NULL, NULL, NULL);
    sn.dead = tds_scrape_sum(s, "tds_writer_dead_letters_total", NULL, NULL, NULL);
    sn.commit_count = tds_scrape_sum(s, "tds_writer_commit_seconds_count", NULL, NULL, NULL);
    sn.commit_sum = tds_scrape_sum(s, "tds_writer_commit_seconds_sum", NULL, NULL, NULL);
    for (size_t i = 0; i < tds_scrape_count(s) && sn.nb < TDS_ARRAY_SIZE(sn.le); i++) {
        const struct tds_scrape_sample *smp = tds_scrape_at(s, i);
        const char *le;

        if (strcmp(smp->name, "tds_writer_commit_seconds_bucket") != 0 ||
            !(le = tds_scrape_label(smp, "le")))
            continue;
        sn.le[sn.nb] = strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, NULL);
        sn.cum[sn.nb] = smp->value;
        sn.nb++;
    }
    tds_scrape_free(s);
    if (!d->snaps && !(d->snaps = calloc(SNAP_MAX, sizeof(*d->snaps))))
        return;
    /* keep an hour and a bit */
    size_t drop = 0;
    while (drop < d->n_snaps && d->snaps[drop].t < d->now_ms - 3700 * 1000)
        drop++;
    if (d->n_snaps - drop == SNAP_MAX)
        drop++;
    if (drop) {
        memmove(d->snaps, d->snaps + drop, (d->n_snaps - drop) * sizeof(*d->snaps));
        d->n_snaps -= drop;
    }
    d->snaps[d->n_snaps++] = sn;
}

static json_t *window_json(const struct tds_alertd *d, int64_t window_ms)
{
    const struct snap *b, *e;
    double rows, rej, dead, cnt, p99 = NAN, cum[34];
    size_t i = 0;

    if (d->n_snaps == 0)
        return json_null();
    e = &d->snaps[d->n_snaps - 1];
    while (i + 1 < d->n_snaps && d->snaps[i].t < e->t - window_ms)
        i++;
    /* the oldest snapshot inside the window; right after start-up that may
     * be the latest one, and every figure is then over 0 s */
    b = &d->snaps[i];
    rows = e->rows - b->rows;
    rej = e->rejects - b->rejects;
    dead = e->dead - b->dead;
    cnt = e->commit_count - b->commit_count;
    if (e->nb == b->nb && e->nb > 0 && cnt > 0) {
        for (size_t k = 0; k < e->nb; k++)
            cum[k] = e->cum[k] - b->cum[k];
        p99 = tds_scrape_quantile(e->le, cum, e->nb, 0.99);
    }
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:o, s:o, s:o, s:o}", "covered_s",
                     (double)(e->t - b->t) / 1000.0, "batches", e->batches - b->batches,
                     "rows_written", rows, "rejects", rej, "dead_letters", dead, "success_rate",
                     rows + rej > 0 ? json_real(rows / (rows + rej)) : json_null(), "error_rate",
                     rows + rej + dead > 0 ? json_real((rej + dead) / (rows + rej + dead))
                                           : json_null(),
                     "commit_avg_ms",
                     cnt > 0 ? json_real((e->commit_sum - b->commit_sum) / cnt * 1000.0)
                             : json_null(),
                     "commit_p99_ms", isnan(p99) ? json_null() : json_real(p99 * 1000.0));
}

static json_t *open_alerts_json(struct tds_alertd *d)
{
    json_t *arr = json_array();
    PGresult *r;

    if (!d->conn || !arr)
        return arr;
    r = query(d,
              "SELECT id, rule, severity, org_id, entity, summary, "
              "to_char(fired_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
              "acknowledged_by FROM tds.alerts WHERE state = 'firing' ORDER BY id LIMIT 100",
              0, NULL);
    if (!r)
        return arr;
    for (int i = 0; i < PQntuples(r); i++)
        json_array_append_new(arr, json_pack("{s:I, s:s, s:s, s:s?, s:s?, s:s, s:s, s:s?}", "id",
                                             (json_int_t)strtoll(PQgetvalue(r, i, 0), NULL, 10),
                                             "rule", val(r, i, 1), "severity", val(r, i, 2), "org",
                                             val(r, i, 3), "entity", val(r, i, 4), "summary",
                                             val(r, i, 5), "fired_at", val(r, i, 6),
                                             "acknowledged_by", val(r, i, 7)));
    PQclear(r);
    return arr;
}

/* ---- the cycle ---- */

static void drop_conn(struct tds_alertd *d)
{
    if (d->conn)
        PQfinish(d->conn);
    d->conn = NULL;
    if (d->leader_local)
        tds_warn("gave up alert evaluation (database connection lost)");
    d->leader_local = false;
    atomic_store(&d->leader, false);
    tds_alertsm_clear(d->sm);
}

static void cycle(struct tds_alertd *d)
{
    json_t *fresh = json_array(), *st;
    char err[512];
    size_t firing;
    char *s;

    d->now_ms = tds_now_ms();
    d->wall_ms = tds_wall_ms();
    take_snapshot(d);
    if (d->conn && !tds_pg_ok(d->conn))
        drop_conn(d);
    if (!d->conn) {
        d->conn = tds_pg_connect(d->database_url, "tds-writer alerts", err, sizeof(err));
        if (!d->conn)
            tds_log_limited(&d->db_limit, TDS_LOG_WARN, NULL, "%s, retrying next alert cycle", err);
        /* A lock held elsewhere (a transaction left open in psql on an
         * alert row, DDL) must fail the cycle, not stall it: the rules go
         * unknown, the next cycle tries again, and shutdown does not wait. */
        else {
            PQclear(query(d,
                          "SELECT set_config('lock_timeout', '5s', false), "
                          "set_config('statement_timeout', '30s', false)",
                          0, NULL));
            /* Leadership is this session's advisory lock: if this
             * writer's node dies, the server must end the idle session
             * soon, or no replica evaluates the rules until its own
             * keepalive gives up (over two hours by default). */
            if (tds_pg_server_keepalive(d->conn, err, sizeof(err)) != 0)
                tds_log(TDS_LOG_WARN, NULL, "%s; if this writer's node dies, the alert rules "
                        "may go unevaluated until the server notices", err);
        }
    }
    if (d->conn && !d->leader_local) {
        PGresult *r = query(d, "SELECT pg_try_advisory_lock(hashtext('tds-alerts'))", 0, NULL);

        if (r && strcmp(PQgetvalue(r, 0, 0), "t") == 0) {
            if (load_firing(d) == 0) {
                d->leader_local = true;
                d->lead_since_ms = d->now_ms;
                atomic_store(&d->leader, true);
                tds_info("this writer now evaluates the alert rules (%zu alerts firing)",
                         tds_alertsm_count(d->sm));
            } else {
                PQclear(query(d, "SELECT pg_advisory_unlock(hashtext('tds-alerts'))", 0, NULL));
            }
        }
        PQclear(r);
    }
    if (d->leader_local) {
        tds_alertsm_begin(d->sm);
        db_sync_failed(d);
        db_sync_stuck(d);
        db_stale(d, fresh, true);
        db_tokens(d);
        db_rejects(d);
        scrape_all(d);
        /* a cycle cut short by shutdown saw only part of the targets */
        if (d->conn && tds_pg_ok(d->conn) && !atomic_load(&d->stopping)) {
            refresh_acks(d);
            firing = tds_alertsm_eval(d->sm, d->now_ms, d->wall_ms, on_action, d);
            (void)firing;
            resolve_adopted(d);
        }
    } else if (d->conn) {
        db_stale(d, fresh, false);
    }
    if (d->m_leader)
        tds_series_set(d->m_leader, d->leader_local ? 1 : 0);
    if (!d->leader_local) {
        /* another replica evaluates (or none, after a lost connection):
         * this one's counts are not current */
        for (int k = TDS_SEV_INFO; k <= TDS_SEV_CRITICAL; k++)
            if (d->m_firing[k])
                tds_series_set(d->m_firing[k], 0);
    } else {
        double by_sev[TDS_SEV_CRITICAL + 1] = {0};

        for (size_t i = 0; i < tds_alertsm_count(d->sm); i++) {
            const struct tds_alert *a = tds_alertsm_at(d->sm, i);

            if (a->state == TDS_ALERT_FIRING && a->severity <= TDS_SEV_CRITICAL)
                by_sev[a->severity] += 1;
        }
        for (int k = TDS_SEV_INFO; k <= TDS_SEV_CRITICAL; k++)
            if (d->m_firing[k])
                tds_series_set(d->m_firing[k], by_sev[k]);
    }
    st = json_pack("{s:{s:b, s:b, s:o, s:I}, s:o, s:{s:o, s:o}}", "alerts", "evaluating",
                   d->leader_local, "database", d->conn != NULL, "open", open_alerts_json(d),
                   "cycles", (json_int_t)(atomic_load(&d->cycles) + 1), "freshness",
                   fresh ? fresh : json_array(), "writer_window", "5m",
                   window_json(d, 300 * 1000), "1h", window_json(d, 3600 * 1000));
    s = st ? json_dumps(st, JSON_COMPACT) : NULL;
    json_decref(st);
    if (d->conn && !tds_pg_ok(d->conn))
        drop_conn(d);
    pthread_mutex_lock(&d->mu);
    free(d->status);
    d->status = s;
    pthread_mutex_unlock(&d->mu);
    atomic_fetch_add(&d->cycles, 1);
    if (d->m_cycles)
        tds_series_inc(d->m_cycles, 1);
}

static void *thread_main(void *ud)
{
    struct tds_alertd *d = ud;

    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->stop && d->ticks == 0)
            pthread_cond_wait(&d->cv, &d->mu);
        if (d->stop)
            break;
        d->ticks = 0;
        pthread_mutex_unlock(&d->mu);
        cycle(d);
        pthread_mutex_lock(&d->mu);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* ---- lifecycle ---- */

int tds_alertd_new(struct tds_alertd **out, const struct tds_alertd_cfg *cfg,
                   struct tds_alert_rules **rules, struct tds_metrics *metrics, char *err,
                   size_t errlen)
{
    struct tds_alertd *d = calloc(1, sizeof(*d));
    int rc;

    *out = NULL;
    if (!d)
        return -ENOMEM;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    d->rules = *rules;
    *rules = NULL;
    d->metrics = metrics;
    d->db_limit.interval_ms = 60000;
    d->scrape_limit.interval_ms = 60000;
    d->sync_interval_s = cfg->sync_interval_s > 0 ? cfg->sync_interval_s : 300;
    d->scrape_timeout_ms = cfg->scrape_timeout_ms > 0 ? cfg->scrape_timeout_ms : 2000;
    d->database_url = xstrdup(cfg->database_url);
    d->instance = xstrdup(cfg->instance ? cfg->instance : "writer");
    d->scrape = xstrdup(cfg->scrape ? cfg->scrape : "");
    d->orgs_file = xstrdup(cfg->orgs_file);
    if (!d->database_url || !d->instance || !d->scrape ||
        (cfg->orgs_file && !d->orgs_file)) {
        rc = -ENOMEM;
        goto fail;
    }
    /* every scrape item must be host:port, checked once here */
    for (const char *p = d->scrape; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        char item[512], host[256], port[16];

        snprintf(item, sizeof(item), "%.*s", (int)(l < sizeof(item) - 1 ? l : sizeof(item) - 1), p);
        if (l >= sizeof(item) - 1 || split_target(item, host, sizeof(host), port, sizeof(port)) != 0) {
            snprintf(err, errlen, "invalid TDS_ALERT_SCRAPE: '%s'", item);
            rc = TDS_E_INVALID;
            goto fail;
        }
        p = e ? e + 1 : p + l;
    }
    if ((rc = load_orgs(d, err, errlen)) != 0)
        goto fail;
    if ((rc = tds_alertsm_new(&d->sm, d->rules)) != 0)
        goto fail;
    if ((rc = tds_channels_new(&d->ch, &cfg->channels, metrics, err, errlen)) != 0)
        goto fail;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        rc = -ENOMEM;
        goto fail;
    }
    d->curl_inited = true;
    if (metrics) {
        d->m_leader = tds_metrics_get(metrics, TDS_GAUGE, "tds_alert_leader",
                                      "1 while this writer evaluates the alert rules", "", NULL, 0);
        d->m_cycles = tds_metrics_get(metrics, TDS_COUNTER, "tds_alert_cycles_total",
                                      "Alert engine cycles run", "", NULL, 0);
        d->m_scrape_err = tds_metrics_get(metrics, TDS_COUNTER, "tds_alert_scrape_errors_total",
                                          "Stage /metrics scrapes that failed", "", NULL, 0);
        for (int k = TDS_SEV_INFO; k <= TDS_SEV_CRITICAL; k++)
            d->m_firing[k] = tds_metrics_getf(metrics, TDS_GAUGE, "tds_alerts_firing",
                                              "Alerts firing, by severity (on the evaluating writer)",
                                              "severity=\"%s\"", tds_alert_sev_name(k));
    }
    *out = d;
    return 0;
fail:
    tds_alertd_free(d);
    return rc;
}

int tds_alertd_start(struct tds_alertd *d)
{
    int rc = pthread_create(&d->thread, NULL, thread_main, d);

    if (rc != 0)
        return -rc;
    d->started = true;
    return 0;
}

void tds_alertd_tick(struct tds_alertd *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->ticks++;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

struct tds_alertd *tds_alertd_free(struct tds_alertd *d)
{
    if (!d)
        return NULL;
    if (d->started) {
        atomic_store(&d->stopping, true);
        pthread_mutex_lock(&d->mu);
        d->stop = true;
        pthread_cond_broadcast(&d->cv);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->thread, NULL);
    }
    if (d->conn)
        PQfinish(d->conn); /* ends the session: the lock goes to another replica */
    d->ch = tds_channels_free(d->ch);
    d->sm = tds_alertsm_free(d->sm);
    d->rules = tds_alert_rules_free(d->rules);
    for (size_t i = 0; i < d->n_hist; i++)
        hist_free(d->hist[i]);
    free(d->hist);
    for (size_t i = 0; i < d->n_seen; i++)
        free(d->seen[i].addr);
    free(d->seen);
    free(d->snaps);
    for (size_t i = 0; i < d->n_orgs; i++) {
        free(d->orgs[i].org);
        for (size_t k = 0; k < d->orgs[i].n_entities; k++)
            free(d->orgs[i].entities[k]);
        free(d->orgs[i].entities);
    }
    free(d->orgs);
    free(d->status);
    free(d->database_url);
    free(d->instance);
    free(d->scrape);
    free(d->orgs_file);
    if (d->curl_inited)
        curl_global_cleanup();
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    free(d);
    return NULL;
}

bool tds_alertd_is_leader(struct tds_alertd *d)
{
    return d && atomic_load(&d->leader);
}

uint64_t tds_alertd_cycles(struct tds_alertd *d)
{
    return d ? atomic_load(&d->cycles) : 0;
}

char *tds_alertd_status_merge(struct tds_alertd *d, const char *base)
{
    json_t *b = json_loads(base ? base : "{}", 0, NULL), *extra = NULL;
    char *out = NULL;

    if (!b || !json_is_object(b))
        goto out;
    pthread_mutex_lock(&d->mu);
    if (d->status)
        extra = json_loads(d->status, 0, NULL);
    pthread_mutex_unlock(&d->mu);
    if (extra)
        json_object_update(b, extra);
    else
        json_object_set_new(b, "alerts", json_pack("{s:b}", "evaluating", false));
    out = json_dumps(b, JSON_COMPACT);
out:
    json_decref(extra);
    json_decref(b);
    return out;
}

/* ---- operator commands ---- */

int tds_alertd_cmd_list(PGconn *c, bool all, FILE *out, char *err, size_t errlen)
{
    const char *p[1] = {all ? "true" : "false"};
    PGresult *r = PQexecParams(c,
                               "SELECT id, state, severity, rule, coalesce(org_id, '-'), "
                               "coalesce(entity, '-'), "
                               "to_char(fired_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), "
                               "coalesce(to_char(resolved_at AT TIME ZONE 'UTC', "
                               "'YYYY-MM-DD HH24:MI:SS'), '-'), coalesce(acknowledged_by, '-'), "
                               "summary FROM tds.alerts WHERE state = 'firing' OR $1::boolean "
                               "ORDER BY id DESC LIMIT 200",
                               1, NULL, p, NULL, NULL, 0);

    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "could not list alerts: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -EIO;
    }
    fprintf(out, "%-6s %-8s %-8s %-18s %-14s %-14s %-19s %-19s %-12s %s\n", "ID", "STATE",
            "SEVERITY", "RULE", "ORG", "ENTITY", "FIRED (UTC)", "RESOLVED (UTC)", "ACK BY",
            "SUMMARY");
    for (int i = 0; i < PQntuples(r); i++) {
        char ack_by[128], summary[1024]; /* an operator's name, and text from Zoho */
        tds_term_text(PQgetvalue(r, i, 8), (size_t)PQgetlength(r, i, 8), ack_by, sizeof(ack_by));
        tds_term_text(PQgetvalue(r, i, 9), (size_t)PQgetlength(r, i, 9), summary, sizeof(summary));
        fprintf(out, "%-6s %-8s %-8s %-18s %-14s %-14s %-19s %-19s %-12s %s\n", PQgetvalue(r, i, 0),
                PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
                PQgetvalue(r, i, 5), PQgetvalue(r, i, 6), PQgetvalue(r, i, 7), ack_by, summary);
    }
    if (PQntuples(r) == 0)
        fprintf(out, "%s\n", all ? "(no alerts)" : "(no alerts firing)");
    PQclear(r);
    return 0;
}

int tds_alertd_cmd_ack(PGconn *c, int64_t id, const char *by, FILE *out, char *err, size_t errlen)
{
    char idbuf[32];
    const char *p[2] = {idbuf, by};
    PGresult *r;
    int rc = 0;

    snprintf(idbuf, sizeof(idbuf), "%lld", (long long)id);
    r = PQexecParams(c,
                     "UPDATE tds.alerts SET acknowledged_by = $2, acknowledged_at = now() "
                     "WHERE id = $1::bigint AND acknowledged_at IS NULL RETURNING state, rule",
                     2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "could not acknowledge alert %lld: %s", (long long)id,
                 PQresultErrorMessage(r));
        PQclear(r);
        return -EIO;
    }
    if (PQntuples(r) == 1) {
        fprintf(out, "alert %lld (%s, %s) acknowledged by %s\n", (long long)id, PQgetvalue(r, 0, 1),
                PQgetvalue(r, 0, 0), by);
        PQclear(r);
        return 0;
    }
    PQclear(r);
    r = PQexecParams(c, "SELECT acknowledged_by FROM tds.alerts WHERE id = $1::bigint", 1, NULL, p,
                     NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "could not read alert %lld: %s", (long long)id,
                 PQresultErrorMessage(r));
        rc = -EIO;
    } else if (PQntuples(r) == 0) {
        snprintf(err, errlen, "no alert %lld", (long long)id);
        rc = TDS_E_NOTFOUND;
    } else {
        snprintf(err, errlen, "alert %lld is already acknowledged by %s", (long long)id,
                 PQgetvalue(r, 0, 0));
        rc = TDS_E_INVALID;
    }
    PQclear(r);
    return rc;
}

int tds_alertd_cli(const char *database_url, int argc, char **argv, FILE *out)
{
    bool all = false, list;
    const char *by = NULL;
    int64_t id = 0;
    char err[1024];
    PGconn *c;
    int rc;

    if (argc < 1 || (strcmp(argv[0], "list") != 0 && strcmp(argv[0], "ack") != 0)) {
        fprintf(stderr, "tds-writer: unknown alerts command '%s' (expected list or ack)\n",
                argc >= 1 ? argv[0] : "");
        return 2;
    }
    list = strcmp(argv[0], "list") == 0;
    for (int i = 1; i < argc; i++) {
        if (list && strcmp(argv[i], "--all") == 0) {
            all = true;
        } else if (!list && strcmp(argv[i], "--by") == 0 && i + 1 < argc) {
            by = argv[++i];
        } else if (!list && id == 0 && argv[i][0] != '-') {
            if (tds_parse_i64(argv[i], 1, INT64_MAX, &id) != 0) {
                fprintf(stderr, "tds-writer: invalid alert id: '%s'\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "tds-writer: unexpected argument '%s' for alerts %s\n", argv[i],
                    argv[0]);
            return 2;
        }
    }
    if (!list && (id == 0 || !by || !by[0])) {
        fprintf(stderr, "tds-writer: usage: tds-writer alerts ack ID --by NAME\n");
        return 2;
    }
    c = tds_pg_connect(database_url, "tds-writer alerts", err, sizeof(err));
    if (!c || tds_pg_schema_check(c, err, sizeof(err)) != 0) {
        fprintf(stderr, "tds-writer: %s\n", err);
        PQfinish(c);
        return 1;
    }
    rc = list ? tds_alertd_cmd_list(c, all, out, err, sizeof(err))
              : tds_alertd_cmd_ack(c, id, by, out, err, sizeof(err));
    PQfinish(c);
    if (rc != 0) {
        fprintf(stderr, "tds-writer: %s\n", err);
        return 1;
    }
    return 0;
}
