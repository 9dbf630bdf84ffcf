/* store — the fetcher's SQL, parameterized, on one connection.
 *
 * Every query goes through run(): if the connection is gone it is
 * re-opened once and the statement tried again, so a PostgreSQL restart
 * costs one failed call at most. Times cross the boundary as wall-clock
 * milliseconds. Identifiers come from the entity registry only.
 */
#include "store.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entities.h"
#include "pg.h"
#include "util.h"

struct tds_store {
    char *conninfo;
    char *app;
    PGconn *conn;
    char err[512];
    char sqlstate[6]; /* of the last failed statement, "" if none was given */
    int64_t connect_failed_ms; /* monotonic; 0 after a connection that worked */
};

/* After a failed connection attempt, the next comes no sooner than this: a
 * database that refuses connections answers each statement's caller at once
 * with the last error, instead of every caller paying for an attempt (with
 * hundreds of runs retrying, the loop stalled for seconds, SIGTERM too). */
#define CONNECT_RETRY_MS 1000

int tds_store_new(struct tds_store **out, const char *conninfo, const char *app_name)
{
    struct tds_store *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->conninfo = strdup(conninfo);
    s->app = strdup(app_name);
    if (!s->conninfo || !s->app) {
        tds_store_free(s);
        return -ENOMEM;
    }
    *out = s;
    return 0;
}

struct tds_store *tds_store_free(struct tds_store *s)
{
    if (!s)
        return NULL;
    if (s->conn)
        PQfinish(s->conn);
    free(s->conninfo);
    free(s->app);
    free(s);
    return NULL;
}

const char *tds_store_error(const struct tds_store *s) { return s->err; }

int tds_store_ensure(struct tds_store *s)
{
    if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
        return 0;
    if (s->conn) {
        PQfinish(s->conn);
        s->conn = NULL;
    }
    if (s->connect_failed_ms && tds_now_ms() - s->connect_failed_ms < CONNECT_RETRY_MS)
        return -EIO; /* s->err still says why */
    s->conn = tds_pg_connect(s->conninfo, s->app, s->err, sizeof(s->err));
    if (!s->conn) {
        s->connect_failed_ms = tds_now_ms();
        return -EIO;
    }
    s->connect_failed_ms = 0;
    /* a stuck statement must not stall the loop for long */
    char e[256];
    if (tds_pg_exec(s->conn, "SET statement_timeout = '10s'", e, sizeof(e)) != 0) {
        snprintf(s->err, sizeof(s->err), "%s", e);
        PQfinish(s->conn);
        s->conn = NULL;
        return -EIO;
    }
    return 0;
}

bool tds_store_ok(struct tds_store *s)
{
    if (tds_store_ensure(s) != 0)
        return false;
    PGresult *r = PQexec(s->conn, "SELECT 1");
    bool ok = r && PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok;
}

/* Run a statement; returns the result (caller clears) or NULL with s->err. */
static PGresult *run(struct tds_store *s, const char *sql, int n, const char *const *params);

/* A statement answering one boolean: 1 true, 0 false, -EIO. */
static int query_bool(struct tds_store *s, const char *sql, int n, const char *const *params)
{
    PGresult *r = run(s, sql, n, params);
    if (!r)
        return -EIO;
    int v = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return v;
}

int tds_store_tokens_ready(struct tds_store *s)
{
    /* the last column the token statements use (migration 016) */
    return query_bool(s,
                      "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema "
                      "= 'tds' AND table_name = 'oauth_tokens' AND column_name = "
                      "'failed_credentials')",
                      0, NULL);
}

/* Run a statement; returns the result (caller clears) or NULL with s->err. */
static PGresult *run(struct tds_store *s, const char *sql, int n, const char *const *params)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (tds_store_ensure(s) != 0)
            return NULL;
        PGresult *r = PQexecParams(s->conn, sql, n, NULL, params, NULL, NULL, 0);
        ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
            return r;
        snprintf(s->err, sizeof(s->err), "%s", PQerrorMessage(s->conn));
        const char *code = r ? tds_pg_sqlstate(r) : NULL;
        snprintf(s->sqlstate, sizeof(s->sqlstate), "%s", code ? code : "");
        size_t l = strlen(s->err);
        while (l && (s->err[l - 1] == '\n' || s->err[l - 1] == ' '))
            s->err[--l] = '\0';
        bool again = PQstatus(s->conn) != CONNECTION_OK;
        PQclear(r);
        if (!again)
            return NULL;
        PQfinish(s->conn);
        s->conn = NULL;
    }
    return NULL;
}

static int exec0(struct tds_store *s, const char *sql, int n, const char *const *params)
{
    PGresult *r = run(s, sql, n, params);
    if (!r)
        return -EIO;
    PQclear(r);
    return 0;
}

/* A statement that changes rows: how many it changed, or -EIO. */
static int64_t exec_count(struct tds_store *s, const char *sql, int n, const char *const *params)
{
    PGresult *r = run(s, sql, n, params);
    if (!r)
        return -EIO;
    int64_t v = 0;
    tds_parse_i64(PQcmdTuples(r), 0, INT64_MAX, &v);
    PQclear(r);
    return v;
}

static char *dupval(PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    return strdup(PQgetvalue(r, row, col));
}

static int64_t i64val(PGresult *r, int row, int col, int64_t null_value)
{
    if (PQgetisnull(r, row, col))
        return null_value;
    int64_t v;
    if (tds_parse_i64(PQgetvalue(r, row, col), INT64_MIN, INT64_MAX, &v) != 0)
        return null_value;
    return v;
}

#define MS_EXPR(col) "(extract(epoch from " col ") * 1000)::bigint"
#define FROM_MS(p) "to_timestamp(" p "::double precision / 1000)"

/* ---- tokens ---- */

void tds_token_row_clear(struct tds_token_row *r)
{
    free(r->access_token);
    free(r->api_domain);
    free(r->refresh_token);
    free(r->status);
    free(r->last_error);
    free(r->accounts_url);
    free(r->failed_credentials);
    memset(r, 0, sizeof(*r));
}

int tds_store_token_get(struct tds_store *s, const char *org, struct tds_token_row *out)
{
    memset(out, 0, sizeof(*out));
    const char *p[] = {org};
    PGresult *r = run(s,
                      "SELECT access_token, api_domain, refresh_token, status, last_error, "
                      MS_EXPR("expires_at") ", " MS_EXPR("locked_until") ", "
                      MS_EXPR("refresh_window_start") ", " MS_EXPR("refreshed_at")
                      ", refresh_count, accounts_url, failed_credentials "
                      "FROM tds.oauth_tokens WHERE org_id = $1",
                      1, p);
    if (!r)
        return -EIO;
    if (PQntuples(r) == 1) {
        out->exists = true;
        out->access_token = dupval(r, 0, 0);
        out->api_domain = dupval(r, 0, 1);
        out->refresh_token = dupval(r, 0, 2);
        out->status = dupval(r, 0, 3);
        out->last_error = dupval(r, 0, 4);
        out->expires_at_ms = i64val(r, 0, 5, 0);
        out->locked_until_ms = i64val(r, 0, 6, 0);
        out->window_start_ms = i64val(r, 0, 7, 0);
        out->refreshed_at_ms = i64val(r, 0, 8, 0);
        out->refresh_count = i64val(r, 0, 9, 0);
        out->accounts_url = dupval(r, 0, 10);
        out->failed_credentials = dupval(r, 0, 11);
    }
    PQclear(r);
    return 0;
}

static int bool_query(struct tds_store *s, const char *sql, const char *org, bool *got)
{
    const char *p[] = {org};
    PGresult *r = run(s, sql, 1, p);
    if (!r)
        return -EIO;
    *got = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return 0;
}

int tds_store_token_lock(struct tds_store *s, const char *org, bool *got)
{
    return bool_query(s, "SELECT pg_try_advisory_lock(hashtext('tds-oauth:' || $1))", org, got);
}

int tds_store_token_unlock(struct tds_store *s, const char *org)
{
    bool got;
    return bool_query(s, "SELECT pg_advisory_unlock(hashtext('tds-oauth:' || $1))", org, &got);
}

int tds_store_token_count_refresh(struct tds_store *s, const char *org, const char *family,
                                  int64_t window_ms, int64_t budget, bool *counted, int64_t *count,
                                  int64_t *window_start_ms, int64_t *free_at_ms)
{
    char w[32], b[32];
    snprintf(w, sizeof(w), "%lld", (long long)window_ms);
    snprintf(b, sizeof(b), "%lld", (long long)budget);
    const char *p[] = {org, w, family && *family ? family : NULL, b};
    /* One statement: the family's count (this row's window, if it is not
     * over, and the other rows' of the family whose windows are not), and
     * the attempt counted in this row only when that is under the budget.
     * A refused attempt writes nothing. The caller holds the family's lock,
     * so no other counting of the family runs between the sum and the
     * count. */
    PGresult *r = run(
        s,
        "WITH own AS (SELECT refresh_count AS n, refresh_window_start AS ws FROM tds.oauth_tokens "
        "WHERE org_id = $1 AND refresh_count > 0 AND refresh_window_start >= now() - "
        "($2::bigint * interval '1 millisecond')), "
        "fam AS (SELECT coalesce(sum(refresh_count), 0) AS n, min(refresh_window_start) AS ws "
        "FROM tds.oauth_tokens WHERE $3::text IS NOT NULL AND family = $3::text AND org_id <> $1 "
        "AND refresh_count > 0 AND refresh_window_start >= now() - "
        "($2::bigint * interval '1 millisecond')), "
        "tot AS (SELECT fam.n + coalesce((SELECT n FROM own), 0) AS n, "
        "least(fam.ws, (SELECT ws FROM own)) AS oldest FROM fam), "
        "up AS (INSERT INTO tds.oauth_tokens AS t (org_id, refresh_window_start, refresh_count, "
        "updated_at, family) SELECT $1, now(), 1, now(), $3::text FROM tot WHERE tot.n < $4::bigint "
        "ON CONFLICT (org_id) DO UPDATE SET "
        "refresh_count = CASE WHEN t.refresh_window_start IS NULL OR t.refresh_window_start < now() - "
        "($2::bigint * interval '1 millisecond') THEN 1 ELSE t.refresh_count + 1 END, "
        "refresh_window_start = CASE WHEN t.refresh_window_start IS NULL OR t.refresh_window_start < "
        "now() - ($2::bigint * interval '1 millisecond') THEN now() ELSE t.refresh_window_start END, "
        "family = COALESCE($3::text, t.family), updated_at = now() RETURNING refresh_window_start) "
        "SELECT EXISTS (SELECT 1 FROM up), tot.n + (SELECT count(*) FROM up), "
        "(SELECT " MS_EXPR("refresh_window_start") " FROM up), " MS_EXPR("tot.oldest")
        " FROM tot",
        4, p);
    if (!r)
        return -EIO;
    if (PQntuples(r) != 1) {
        snprintf(s->err, sizeof(s->err), "counting a refresh returned %d rows", PQntuples(r));
        PQclear(r);
        return -EIO;
    }
    *counted = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    *count = i64val(r, 0, 1, 0);
    *window_start_ms = i64val(r, 0, 2, 0);
    int64_t oldest = i64val(r, 0, 3, 0);
    *free_at_ms = oldest ? oldest + window_ms : 0;
    PQclear(r);
    return 0;
}

int tds_store_token_uncount_refresh(struct tds_store *s, const char *org, int64_t window_start_ms)
{
    char w[32];
    snprintf(w, sizeof(w), "%lld", (long long)window_start_ms);
    const char *p[] = {org, w};
    return exec0(s,
                 "UPDATE tds.oauth_tokens SET refresh_count = refresh_count - 1, updated_at = now() "
                 "WHERE org_id = $1 AND refresh_count > 0 AND " MS_EXPR("refresh_window_start")
                 " = $2::bigint",
                 2, p);
}

static char *text_array(const char *const *ids, size_t n);

int tds_store_token_save(struct tds_store *s, const char *org, const char *access_token,
                         const char *api_domain, int64_t expires_at_ms, const char *refresh_token,
                         const char *accounts_url, const char *family)
{
    const char *orgs[] = {org}, *families[] = {family ? family : ""};
    return tds_store_token_save_orgs(s, orgs, families, 1, access_token, api_domain, expires_at_ms,
                                     refresh_token, accounts_url);
}

int tds_store_token_save_orgs(struct tds_store *s, const char *const *orgs,
                              const char *const *families, size_t n, const char *access_token,
                              const char *api_domain, int64_t expires_at_ms,
                              const char *refresh_token, const char *accounts_url)
{
    char ex[32];
    snprintf(ex, sizeof(ex), "%lld", (long long)expires_at_ms);
    char *oa = text_array(orgs, n), *fa = text_array(families, n);
    if (!oa || !fa) {
        free(oa);
        free(fa);
        return -ENOMEM;
    }
    const char *p[] = {oa, access_token, api_domain && *api_domain ? api_domain : NULL, ex,
                       refresh_token && *refresh_token ? refresh_token : NULL,
                       accounts_url && *accounts_url ? accounts_url : NULL, fa};
    /* One statement: every organization gets the token, or none does. */
    int rc = exec0(s,
                   "INSERT INTO tds.oauth_tokens AS t (org_id, access_token, api_domain, expires_at, "
                   "refresh_token, status, refreshed_at, updated_at, accounts_url, family) SELECT u.o, "
                   "$2, $3, " FROM_MS("$4") ", $5, 'ok', now(), now(), $6, nullif(u.f, '') FROM "
                   "unnest($1::text[], $7::text[]) AS u(o, f) ON CONFLICT (org_id) DO "
                   "UPDATE SET access_token = $2, api_domain = CASE WHEN t.accounts_url IS DISTINCT "
                   "FROM $6 THEN $3 ELSE COALESCE($3, t.api_domain) END, expires_at = " FROM_MS("$4")
                   ", refresh_token = COALESCE($5, t.refresh_token), status = 'ok', locked_until = NULL, "
                   "last_error = NULL, refreshed_at = now(), updated_at = now(), accounts_url = $6, "
                   "family = EXCLUDED.family, failed_credentials = NULL",
                   7, p);
    free(oa);
    free(fa);
    return rc;
}

int tds_store_token_family_peek(struct tds_store *s, const char *family, const char *org,
                                const char *accounts_url, int64_t min_expires_ms,
                                struct tds_token_row *out, bool *found)
{
    char ex[32];
    snprintf(ex, sizeof(ex), "%lld", (long long)min_expires_ms);
    const char *p[] = {family, org, accounts_url ? accounts_url : "", ex};
    memset(out, 0, sizeof(*out));
    *found = false;
    PGresult *r = run(s,
                      "SELECT access_token, api_domain, " MS_EXPR("expires_at")
                      " FROM tds.oauth_tokens WHERE family = $1 AND org_id <> $2 "
                      "AND accounts_url = $3 AND status = 'ok' AND access_token IS NOT NULL "
                      "AND expires_at > " FROM_MS("$4") " ORDER BY expires_at DESC LIMIT 1",
                      4, p);
    if (!r)
        return -EIO;
    if (PQntuples(r) == 1) {
        out->exists = true;
        out->access_token = dupval(r, 0, 0);
        out->api_domain = dupval(r, 0, 1);
        out->expires_at_ms = i64val(r, 0, 2, 0);
        *found = out->access_token != NULL;
    }
    PQclear(r);
    return 0;
}

int tds_store_token_family_locked(struct tds_store *s, const char *family, int64_t *until_ms)
{
    const char *p[] = {family};
    PGresult *r = run(s,
                      "SELECT " MS_EXPR("max(locked_until)") " FROM tds.oauth_tokens "
                      "WHERE family = $1 AND locked_until > now()",
                      1, p);
    if (!r)
        return -EIO;
    *until_ms = i64val(r, 0, 0, 0);
    PQclear(r);
    return 0;
}

int tds_store_token_fail(struct tds_store *s, const char *org, const char *family,
                         const char *status, int64_t locked_until_ms, const char *error,
                         const char *failed_credentials)
{
    char lu[32];
    snprintf(lu, sizeof(lu), "%lld", (long long)locked_until_ms);
    const char *p[] = {org, status, locked_until_ms ? lu : NULL, error,
                       family && *family ? family : NULL,
                       failed_credentials && *failed_credentials ? failed_credentials : NULL};
    return exec0(s,
                 "INSERT INTO tds.oauth_tokens AS t (org_id, status, locked_until, last_error, "
                 "updated_at, family, failed_credentials) VALUES ($1, $2, " FROM_MS("$3")
                 ", $4, now(), $5, $6) ON CONFLICT (org_id) DO UPDATE SET status = $2, "
                 "locked_until = " FROM_MS("$3") ", last_error = $4, updated_at = now(), "
                 "family = COALESCE($5, t.family), failed_credentials = $6",
                 6, p);
}

int tds_store_token_expire(struct tds_store *s, const char *org, const char *access_token)
{
    const char *p[] = {org, access_token};
    return exec0(s,
                 "UPDATE tds.oauth_tokens SET expires_at = now(), updated_at = now() "
                 "WHERE org_id = $1 AND access_token = $2",
                 2, p);
}

/* ---- runs ---- */

int tds_store_run_insert(struct tds_store *s, const char *run_id, const char *org,
                         const char *entity, const char *mode)
{
    const char *p[] = {run_id, org, entity, mode};
    return exec0(s,
                 "INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, started_at, "
                 "updated_at) VALUES ($1, $2, $3, $4, 'running', now(), now()) "
                 "ON CONFLICT (run_id) DO NOTHING",
                 4, p);
}

int tds_store_run_progress(struct tds_store *s, const char *run_id, int64_t pages,
                           int64_t records, int64_t walked, int64_t api_calls)
{
    char a[32], b[32], c[32], d[32];
    snprintf(a, sizeof(a), "%lld", (long long)pages);
    snprintf(b, sizeof(b), "%lld", (long long)records);
    snprintf(c, sizeof(c), "%lld", (long long)api_calls);
    snprintf(d, sizeof(d), "%lld", (long long)walked);
    const char *p[] = {run_id, a, b, c, d};
    int rc = exec0(s,
                   "UPDATE tds.sync_runs SET pages_fetched = $2, records_fetched = $3, api_calls = $4, "
                   "records_walked = $5, updated_at = now() WHERE run_id = $1",
                   5, p);
    /* a schema before migration 005 (a fetcher rolled out before the
     * migration ran): keep the other counts going */
    if (rc != 0 && strcmp(s->sqlstate, "42703") == 0)
        rc = exec0(s,
                   "UPDATE tds.sync_runs SET pages_fetched = $2, records_fetched = $3, api_calls = $4, "
                   "updated_at = now() WHERE run_id = $1",
                   4, p);
    return rc;
}

int tds_store_run_fail(struct tds_store *s, const char *run_id, const char *error)
{
    const char *p[] = {run_id, error};
    return exec0(s,
                 "UPDATE tds.sync_runs SET status = 'failed', error = $2, finished_at = now(), "
                 "updated_at = now() WHERE run_id = $1 AND status = 'running'",
                 2, p);
}

int tds_store_run_stop(struct tds_store *s, const char *run_id, const char *why)
{
    const char *p[] = {run_id, why};
    int rc = exec0(s,
                   "UPDATE tds.sync_runs SET status = 'stopped', error = $2, finished_at = now(), "
                   "updated_at = now() WHERE run_id = $1 AND status = 'running'",
                   2, p);
    /* A database the writer has not migrated to 018 yet (a rolling deploy)
     * refuses the status: recorded as failed, as before. */
    if (rc != 0 && strcmp(s->sqlstate, "23514") == 0)
        rc = tds_store_run_fail(s, run_id, why);
    return rc;
}

int tds_store_runs_abandon(struct tds_store *s, const char *org, const char *why, int64_t *n)
{
    const char *p[] = {org, why};
    int64_t v = exec_count(s,
                           "UPDATE tds.sync_runs SET status = 'failed', error = $2, "
                           "finished_at = now(), updated_at = now() WHERE org_id = $1 "
                           "AND status = 'running' AND mode <> 'fetch'",
                           2, p);
    if (v < 0)
        return (int)v;
    *n = v;
    return 0;
}

int tds_store_run_status(struct tds_store *s, const char *run_id, char *status, size_t cap)
{
    const char *p[] = {run_id};
    PGresult *r = run(s, "SELECT status FROM tds.sync_runs WHERE run_id = $1", 1, p);
    if (!r)
        return -EIO;
    snprintf(status, cap, "%s", PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    return 0;
}

/* ---- state ---- */

int tds_store_state_get(struct tds_store *s, const char *org, const char *entity, char **cursor,
                        int64_t *last_success_ms)
{
    *cursor = NULL;
    *last_success_ms = 0;
    const char *p[] = {org, entity};
    PGresult *r = run(s,
                      "SELECT cursor, " MS_EXPR("last_success_at")
                      " FROM tds.sync_state WHERE org_id = $1 AND entity = $2",
                      2, p);
    if (!r)
        return -EIO;
    if (PQntuples(r) == 1) {
        *cursor = dupval(r, 0, 0);
        *last_success_ms = i64val(r, 0, 1, 0);
    }
    PQclear(r);
    return 0;
}

int tds_store_last_run(struct tds_store *s, const char *org, const char *entity, const char *mode,
                       int64_t *finished_ms)
{
    const char *p[] = {org, entity, mode};
    PGresult *r = run(s,
                      "SELECT " MS_EXPR("max(finished_at)") " FROM tds.sync_runs WHERE org_id = $1 "
                      "AND entity = $2 AND mode = $3 AND status = 'completed'",
                      3, p);
    if (!r)
        return -EIO;
    *finished_ms = PQntuples(r) == 1 ? i64val(r, 0, 0, 0) : 0;
    PQclear(r);
    return 0;
}

/* ---- zoho.* ---- */

/* '{"1","2"}' with quotes and backslashes escaped. */
static char *text_array(const char *const *ids, size_t n)
{
    struct tds_buf b = {0};
    int rc = tds_buf_add(&b, "{", 1);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i)
            rc = tds_buf_add(&b, ",", 1);
        rc = rc ? rc : tds_buf_add(&b, "\"", 1);
        for (const char *c = ids[i]; *c && rc == 0; c++) {
            if (*c == '"' || *c == '\\')
                rc = tds_buf_add(&b, "\\", 1);
            if (rc == 0)
                rc = tds_buf_add(&b, c, 1);
        }
        rc = rc ? rc : tds_buf_add(&b, "\"", 1);
    }
    rc = rc ? rc : tds_buf_add(&b, "}", 2);
    if (rc) {
        tds_buf_deinit(&b);
        return NULL;
    }
    return b.p;
}

static size_t figure_count(const struct tds_entity *e)
{
    size_t n = 0;
    while (e->list_figures && e->list_figures[n])
        n++;
    return n;
}

int tds_store_known(struct tds_store *s, const struct tds_entity *e, const char *org,
                    const char *const *ids, size_t n, struct tds_known **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    const struct tds_table *t = tds_table_find(e->table);
    if (!t || n == 0)
        return 0;
    size_t n_fig = figure_count(e);
    struct tds_buf sql = {0};
    int rc = tds_buf_addf(&sql, "SELECT %s, extract(epoch from modified_time)::bigint, is_detail, "
                                "deleted_at IS NOT NULL",
                          t->id_column);
    for (size_t f = 0; f < n_fig && rc == 0; f++)
        rc = tds_buf_addf(&sql, ", \"%s\"::text", e->list_figures[f]);
    if (rc == 0)
        rc = tds_buf_addf(&sql, " FROM zoho.%s WHERE org_id = $1 AND %s = ANY($2::text[])", t->name,
                          t->id_column);
    char *arr = rc == 0 ? text_array(ids, n) : NULL;
    if (!arr) {
        tds_buf_deinit(&sql);
        return -ENOMEM;
    }
    const char *p[] = {org, arr};
    PGresult *r = run(s, sql.p, 2, p);
    free(arr);
    tds_buf_deinit(&sql);
    if (!r)
        return -EIO;
    int rows = PQntuples(r);
    struct tds_known *k = calloc(rows ? (size_t)rows : 1, sizeof(*k));
    if (!k) {
        PQclear(r);
        return -ENOMEM;
    }
    for (int i = 0; i < rows; i++) {
        bool oom = !(k[i].id = strdup(PQgetvalue(r, i, 0)));
        k[i].modified_s = i64val(r, i, 1, INT64_MIN);
        k[i].is_detail = strcmp(PQgetvalue(r, i, 2), "t") == 0;
        k[i].deleted = strcmp(PQgetvalue(r, i, 3), "t") == 0;
        if (n_fig && !oom)
            oom = !(k[i].figures = calloc(n_fig, sizeof(*k[i].figures)));
        for (size_t f = 0; f < n_fig && !oom; f++)
            if (!PQgetisnull(r, i, 4 + (int)f))
                oom = !(k[i].figures[f] = strdup(PQgetvalue(r, i, 4 + (int)f)));
        if (oom) {
            tds_store_known_free(k, (size_t)i + 1, e);
            PQclear(r);
            return -ENOMEM;
        }
    }
    PQclear(r);
    *out = k;
    *n_out = (size_t)rows;
    return 0;
}

void tds_store_known_free(struct tds_known *k, size_t n, const struct tds_entity *e)
{
    if (!k)
        return;
    size_t n_fig = figure_count(e);
    for (size_t i = 0; i < n; i++) {
        free(k[i].id);
        for (size_t f = 0; k[i].figures && f < n_fig; f++)
            free(k[i].figures[f]);
        free(k[i].figures);
    }
    free(k);
}

/* Run sql ($1 org, $2 a wall time in ms) and copy the first column of every
 * row into *ids (caller frees each and the array). */
/* The first column of every row of r as a malloc'd array of strings. 0 or
 * -ENOMEM; r stays the caller's. */
static int result_ids(PGresult *r, char ***ids, size_t *n)
{
    int rows = PQntuples(r);
    char **a = calloc(rows ? (size_t)rows : 1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    for (int i = 0; i < rows; i++) {
        a[i] = strdup(PQgetvalue(r, i, 0));
        if (!a[i]) {
            for (int j = 0; j < i; j++)
                free(a[j]);
            free(a);
            return -ENOMEM;
        }
    }
    *ids = a;
    *n = (size_t)rows;
    return 0;
}

static int query_ids(struct tds_store *s, const char *sql, const char *org, int64_t before_wall_ms,
                     char ***ids, size_t *n)
{
    char b[32];
    snprintf(b, sizeof(b), "%lld", (long long)before_wall_ms);
    const char *p[] = {org, b};
    PGresult *r = run(s, sql, 2, p);
    if (!r)
        return -EIO;
    int rc = result_ids(r, ids, n);
    PQclear(r);
    return rc;
}

int tds_store_live_ids(struct tds_store *s, const struct tds_entity *e, const char *org,
                       int64_t before_wall_ms, char ***ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    const struct tds_table *t = tds_table_find(e->table);
    if (!t)
        return 0;
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT %s FROM zoho.%s WHERE org_id = $1 AND deleted_at IS NULL AND synced_at < "
             FROM_MS("$2"),
             t->id_column, t->name);
    return query_ids(s, sql, org, before_wall_ms, ids, n);
}

int tds_store_list_only_due(struct tds_store *s, const struct tds_entity *e, const char *org,
                            int64_t before_wall_ms, int limit, int64_t backoff_ms,
                            int64_t backoff_max_ms, char ***ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    const struct tds_table *t = tds_table_find(e->table);
    if (!t)
        return 0;
    /* One statement: choose the rows and record the attempt, so that a
     * fetcher that dies right after still leaves the backoff behind. An
     * attempt counts for the row as written then (row_synced_at); the
     * CASEs read the old values of the conflicting row. */
    char sql[2048];
    snprintf(sql, sizeof(sql),
             "WITH due AS (SELECT t.%s AS id, t.synced_at FROM zoho.%s t WHERE t.org_id = $1 AND "
             "t.deleted_at IS NULL AND NOT t.is_detail AND t.synced_at < " FROM_MS("$2") " AND NOT "
             "EXISTS (SELECT 1 FROM tds.detail_attempts a WHERE a.org_id = $1 AND a.entity = $3 AND "
             "a.zoho_id = t.%s AND a.row_synced_at = t.synced_at AND a.next_at > now()) LIMIT %d) "
             "INSERT INTO tds.detail_attempts AS a (org_id, entity, zoho_id, row_synced_at, "
             "attempts, asked_at, next_at) SELECT $1, $3, id, synced_at, 1, now(), now() + "
             "make_interval(secs => $4::double precision / 1000) FROM due "
             "ON CONFLICT (org_id, entity, zoho_id) DO UPDATE SET "
             "attempts = CASE WHEN a.row_synced_at = EXCLUDED.row_synced_at THEN a.attempts + 1 "
             "ELSE 1 END, row_synced_at = EXCLUDED.row_synced_at, asked_at = now(), "
             "next_at = now() + make_interval(secs => least($5::double precision, "
             "$4::double precision * power(2, CASE WHEN a.row_synced_at = EXCLUDED.row_synced_at "
             "THEN least(a.attempts, 40) ELSE 0 END)) / 1000) RETURNING zoho_id",
             t->id_column, t->name, t->id_column, limit);
    char b[32], bo[32], bm[32];
    snprintf(b, sizeof(b), "%lld", (long long)before_wall_ms);
    snprintf(bo, sizeof(bo), "%lld", (long long)backoff_ms);
    snprintf(bm, sizeof(bm), "%lld", (long long)backoff_max_ms);
    const char *p[] = {org, b, e->name, bo, bm};
    PGresult *r = run(s, sql, 5, p);
    if (!r)
        return -EIO;
    int rc = result_ids(r, ids, n);
    PQclear(r);
    return rc;
}

int tds_store_stock_due(struct tds_store *s, const char *org, int limit, char ***ids, size_t *n,
                        char *at, size_t at_len)
{
    *ids = NULL;
    *n = 0;
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *p[] = {org, lim};
    PGresult *r = run(s,
                      "SELECT item_id, now()::text FROM tds.stock_refresh WHERE org_id = $1 AND "
                      "(next_at IS NULL OR next_at <= now()) GROUP BY item_id "
                      "ORDER BY min(queued_at) LIMIT $2::int",
                      2, p);
    if (!r)
        return -EIO;
    int rc = result_ids(r, ids, n);
    snprintf(at, at_len, "%s", PQntuples(r) ? PQgetvalue(r, 0, 1) : "");
    PQclear(r);
    return rc;
}

int tds_store_stock_waiting(struct tds_store *s, const char *org)
{
    const char *p[] = {org};
    return query_bool(s,
                      "SELECT EXISTS (SELECT 1 FROM tds.stock_refresh WHERE org_id = $1 AND "
                      "(next_at IS NULL OR next_at <= now()))",
                      1, p);
}

int tds_store_stock_drop(struct tds_store *s, const char *org)
{
    const char *p[] = {org};
    return exec0(s, "DELETE FROM tds.stock_refresh WHERE org_id = $1", 1, p);
}

int tds_store_stock_done(struct tds_store *s, const char *org, const char *const *ids, size_t n,
                         const char *at, bool refused)
{
    if (n == 0)
        return 0;
    char *ia = text_array(ids, n);
    if (!ia)
        return -ENOMEM;
    const char *p[] = {org, ia, at};
    /* A row queued again after `at` waits for its own refetch: the one that
     * just ended may have asked before the document changed. */
    int rc = exec0(s,
                   refused ? "UPDATE tds.stock_refresh SET attempts = attempts + 1, next_at = now() + "
                             "least(interval '1 minute' * power(2, least(attempts, 20)), "
                             "interval '1 day') WHERE org_id = $1 AND item_id = ANY($2::text[]) "
                             "AND queued_at <= $3::timestamptz"
                           : "DELETE FROM tds.stock_refresh WHERE org_id = $1 AND "
                             "item_id = ANY($2::text[]) AND queued_at <= $3::timestamptz",
                   3, p);
    free(ia);
    return rc;
}

int tds_store_stock_by_location(struct tds_store *s, const char *org)
{
    const char *p[] = {org};
    return query_bool(s,
                      "SELECT EXISTS (SELECT 1 FROM zoho.item_stock WHERE org_id = $1 AND "
                      "site_kind = 'location')",
                      1, p);
}

int tds_store_detail_attempts_prune(struct tds_store *s, const char *org)
{
    /* past the longest backoff by a day: the row got its detail, was
     * deleted, or is no longer synced; bounded batches, index on next_at */
    const char *p[] = {org};
    return exec0(s,
                 "DELETE FROM tds.detail_attempts WHERE ctid IN (SELECT ctid FROM "
                 "tds.detail_attempts WHERE org_id = $1 AND next_at < now() - interval '1 day' "
                 "LIMIT 1000)",
                 1, p);
}

/* ---- quota use ---- */

int tds_store_quota_save(struct tds_store *s, const char *instance, const char *claim,
                         const char *rows_json, void (*saved)(void *ud, const char *org), void *ud)
{
    const char *p[] = {instance, claim, rows_json};
#define QUOTA_SAVE_SQL(col, val, set)                                                          \
    "INSERT INTO tds.quota_use AS q (org_id, instance, claim, saved_at, next_at, "              \
    "paused_until, in_flight, done_at" col ") "                                                \
    "SELECT r.org, $1, $2, " FROM_MS("r.at") ", " FROM_MS("r.next") ", " FROM_MS("r.pause")     \
    ", r.inflight, ARRAY(SELECT " FROM_MS("e.x") " FROM jsonb_array_elements_text(r.done) "     \
    "WITH ORDINALITY AS e(x, i) ORDER BY e.i)" val " "                                          \
    "FROM jsonb_to_recordset($3::jsonb) AS r(org text, at bigint, next bigint, "               \
    "pause bigint, inflight integer, done jsonb, every integer, stopped boolean) "              \
    "ON CONFLICT (org_id) DO UPDATE SET instance = EXCLUDED.instance, "                        \
    "saved_at = EXCLUDED.saved_at, next_at = EXCLUDED.next_at, "                               \
    "paused_until = EXCLUDED.paused_until, in_flight = EXCLUDED.in_flight, "                   \
    "done_at = EXCLUDED.done_at" set " WHERE q.claim = EXCLUDED.claim "                        \
    "RETURNING org_id"
    PGresult *r = run(s,
                      QUOTA_SAVE_SQL(", incremental_every_s, stopped_at",
                                     ", r.every, CASE WHEN r.stopped THEN " FROM_MS("r.at") " END",
                                     ", incremental_every_s = EXCLUDED.incremental_every_s, "
                                     "stopped_at = EXCLUDED.stopped_at"),
                      3, p);
    /* a schema without the columns of migrations 023 and 020 (a column
     * dropped by hand; the owner check waits for this release's schema):
     * the record without them, or no licence. Without stopped_at a last
     * record reads as any other, and the successor assumes the calls it
     * could have made after it. */
    if (!r && strcmp(s->sqlstate, "42703") == 0)
        r = run(s,
                QUOTA_SAVE_SQL(", incremental_every_s", ", r.every",
                               ", incremental_every_s = EXCLUDED.incremental_every_s"),
                3, p);
    if (!r && strcmp(s->sqlstate, "42703") == 0)
        r = run(s, QUOTA_SAVE_SQL("", "", ""), 3, p);
#undef QUOTA_SAVE_SQL
    if (!r)
        return -EIO;
    for (int i = 0; i < PQntuples(r); i++)
        saved(ud, PQgetvalue(r, i, 0));
    PQclear(r);
    return 0;
}

int tds_store_clock_lead(struct tds_store *s, const char *org, const char *claim, int64_t lead_s)
{
    char l[32];
    snprintf(l, sizeof(l), "%lld", (long long)lead_s);
    const char *p[] = {org, claim, l};
    int64_t n = exec_count(s,
                           "UPDATE tds.quota_use SET clock_lead_s = $3, clock_lead_at = now() "
                           "WHERE org_id = $1 AND claim = $2",
                           3, p);
    if (n < 0)
        return (int)n;
    return n > 0 ? 0 : -ENOENT;
}

int tds_store_quota_claim(struct tds_store *s, const char *org, const char *instance,
                          const char *claim, bool *found, bool *stopped, int64_t *at_ms,
                          int64_t *next_ms, int64_t *pause_ms, int64_t *inflight, int64_t *done,
                          size_t cap, size_t *n_done)
{
    *found = false;
    *stopped = false;
    *n_done = 0;
    const char *p[] = {org, instance, claim};
    /* the row as its last owner left it, locked, and this owner's claim put
     * in its place in the same statement: nothing the old owner writes
     * lands in between or after. stopped_at counts only while it is the
     * record's own time: a fetcher before migration 023 rewrites saved_at
     * and leaves it. */
#define QUOTA_CLAIM_SQL(stopped)                                                                \
    "WITH old AS (SELECT * FROM tds.quota_use WHERE org_id = $1 FOR UPDATE), "                 \
    "claimed AS (UPDATE tds.quota_use q SET instance = $2, claim = $3 FROM old "               \
    "WHERE q.org_id = old.org_id) "                                                            \
    "SELECT " MS_EXPR("saved_at") ", " MS_EXPR("next_at") ", " MS_EXPR("paused_until")         \
    ", in_flight, (SELECT string_agg(" MS_EXPR("d") "::text, ',' ORDER BY d) "                 \
    "FROM unnest(done_at) AS d), " stopped " FROM old"
    PGresult *r = run(s, QUOTA_CLAIM_SQL("coalesce(stopped_at = saved_at, false)"), 3, p);
    if (!r && strcmp(s->sqlstate, "42703") == 0) /* no stopped_at (dropped by hand) */
        r = run(s, QUOTA_CLAIM_SQL("false"), 3, p);
#undef QUOTA_CLAIM_SQL
    if (!r)
        return -EIO;
    if (PQntuples(r) == 1) {
        *found = true;
        *stopped = strcmp(PQgetvalue(r, 0, 5), "t") == 0;
        *at_ms = i64val(r, 0, 0, 0);
        *next_ms = i64val(r, 0, 1, INT64_MIN / 2);
        *pause_ms = i64val(r, 0, 2, 0);
        *inflight = i64val(r, 0, 3, 0);
        /* the newest cap of them */
        const char *list = PQgetisnull(r, 0, 4) ? "" : PQgetvalue(r, 0, 4);
        size_t total = *list ? 1 : 0;
        for (const char *c = list; *c; c++)
            total += *c == ',';
        size_t skip = total > cap ? total - cap : 0;
        for (const char *c = list; *c;) {
            char *end;
            long long v = strtoll(c, &end, 10);
            if (end == c)
                break;
            if (skip)
                skip--;
            else if (*n_done < cap)
                done[(*n_done)++] = v;
            c = *end == ',' ? end + 1 : end;
        }
    }
    PQclear(r);
    return 0;
}

/* ---- requests ---- */

static char *i64_array(const int64_t *v, size_t n)
{
    struct tds_buf b = {0};
    int rc = tds_buf_add(&b, "{", 1);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = tds_buf_addf(&b, "%s%lld", i ? "," : "", (long long)v[i]);
    rc = rc ? rc : tds_buf_add(&b, "}", 2);
    if (rc) {
        tds_buf_deinit(&b);
        return NULL;
    }
    return b.p;
}

int tds_store_request_claim(struct tds_store *s, const char *instance, const char *const *orgs,
                            size_t n_orgs, const int64_t *skip, size_t n_skip,
                            struct tds_request *out, bool *found)
{
    *found = false;
    if (n_orgs == 0)
        return 0;
    char *oa = text_array(orgs, n_orgs);
    char *sa = i64_array(skip, n_skip);
    if (!oa || !sa) {
        free(oa);
        free(sa);
        return -ENOMEM;
    }
    const char **names = malloc(tds_entity_count() * sizeof(*names));
    char *ea = NULL;
    if (names) {
        for (size_t i = 0; i < tds_entity_count(); i++)
            names[i] = tds_entity_at(i)->name;
        ea = text_array(names, tds_entity_count());
        free(names);
    }
    if (!ea) {
        free(oa);
        free(sa);
        return -ENOMEM;
    }
    const char *p[] = {instance, oa, sa, ea};
    /* Only the owner of an organization takes its requests, so a request
     * claimed by an owner that died is taken again by the next one. The
     * entities whose run for it completed come along: found by
     * organization, entity and a start not before the request, through
     * sync_runs_org_entity_idx (run_id LIKE alone reads the whole table
     * outside the C collation). */
    PGresult *r = run(s,
                      "UPDATE tds.sync_requests q SET claimed_by = $1, claimed_at = now() WHERE id = ("
                      "SELECT id FROM tds.sync_requests WHERE done_at IS NULL AND org_id = ANY($2::text[]) "
                      "AND mode <> 'fetch' AND NOT (id = ANY($3::bigint[])) ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) "
                      "RETURNING q.id, q.org_id, q.entity, q.mode, (SELECT string_agg(DISTINCT u.entity, ',') "
                      "FROM tds.sync_runs u WHERE u.org_id = q.org_id "
                      "AND u.entity = ANY(CASE WHEN q.entity = 'all' THEN $4::text[] ELSE ARRAY[q.entity] END) "
                      "AND u.started_at >= q.requested_at - interval '1 minute' "
                      "AND u.run_id LIKE 'rq' || q.id || '.%' AND u.status = 'completed')",
                      4, p);
    free(oa);
    free(sa);
    free(ea);
    if (!r)
        return -EIO;
    if (PQntuples(r) == 1) {
        out->id = i64val(r, 0, 0, 0);
        snprintf(out->org, sizeof(out->org), "%s", PQgetvalue(r, 0, 1));
        snprintf(out->entity, sizeof(out->entity), "%s", PQgetvalue(r, 0, 2));
        snprintf(out->mode, sizeof(out->mode), "%s", PQgetvalue(r, 0, 3));
        /* cut short, the list names fewer entities: those run again */
        const char *done = PQgetvalue(r, 0, 4);
        out->completed[0] = '\0';
        if (strlen(done) < sizeof(out->completed))
            snprintf(out->completed, sizeof(out->completed), "%s", done);
        *found = true;
    }
    PQclear(r);
    return 0;
}

int tds_store_request_fetch(struct tds_store *s, const char *org, const char *entity,
                            const char *zoho_id, const char *instance)
{
    const char *p[] = {org, entity, zoho_id, instance};
    return exec0(s,
                 "INSERT INTO tds.sync_requests (org_id, entity, mode, zoho_id, requested_by) "
                 "VALUES ($1, $2, 'fetch', $3, $4)",
                 4, p);
}

int tds_store_request_fetch_once(struct tds_store *s, const char *org, const char *entity,
                                 const char *zoho_id, const char *requested_by,
                                 const int64_t *held, size_t n_held)
{
    char *ha = i64_array(held, n_held);
    if (!ha)
        return -ENOMEM;
    const char *p[] = {org, entity, zoho_id, requested_by, ha};
    int rc = exec0(s,
                   "INSERT INTO tds.sync_requests (org_id, entity, mode, zoho_id, requested_by) "
                   "SELECT $1, $2, 'fetch', $3, $4 WHERE NOT EXISTS (SELECT 1 FROM tds.sync_requests "
                   "WHERE done_at IS NULL AND zoho_id IS NOT NULL AND org_id = $1 AND entity = $2 "
                   "AND zoho_id = $3 AND mode = 'fetch' AND NOT (id = ANY($5::bigint[])))",
                   5, p);
    free(ha);
    return rc;
}

int tds_store_request_reconcile(struct tds_store *s, const char *org, const char *entity,
                                const char *requested_by)
{
    const char *p[] = {org, entity, requested_by};
    return exec0(s,
                 "INSERT INTO tds.sync_requests (org_id, entity, mode, requested_by) "
                 "SELECT $1, $2, 'reconcile', $3 WHERE NOT EXISTS (SELECT 1 FROM tds.sync_requests "
                 "WHERE done_at IS NULL AND claimed_at IS NULL AND org_id = $1 AND entity = $2 "
                 "AND mode = 'reconcile')",
                 3, p);
}

int tds_store_request_take_fetches(struct tds_store *s, const char *instance,
                                   const char *const *orgs, size_t n_orgs, int max,
                                   int64_t lease_ms, const int64_t *held, size_t n_held,
                                   const char *const *refused, size_t n_refused,
                                   void (*fn)(void *ud, int64_t id, const char *org,
                                              const char *entity, const char *zoho_id),
                                   void *ud)
{
    if (n_orgs == 0)
        return 0;
    char *oa = text_array(orgs, n_orgs);
    char *ha = i64_array(held, n_held);
    char *ra = text_array(refused, n_refused);
    if (!oa || !ha || !ra) {
        free(oa);
        free(ha);
        free(ra);
        return -ENOMEM;
    }
    char lim[16], lease[32];
    snprintf(lim, sizeof(lim), "%d", max);
    snprintf(lease, sizeof(lease), "%lld", (long long)lease_ms);
    const char *p[] = {instance, oa, lim, lease, ha, ra};
    PGresult *r = run(s,
                      "UPDATE tds.sync_requests SET claimed_by = $1, claimed_at = now() "
                      "WHERE id IN (SELECT id FROM tds.sync_requests WHERE done_at IS NULL "
                      "AND mode = 'fetch' AND org_id = ANY($2::text[]) AND (claimed_at IS NULL "
                      "OR claimed_at < now() - make_interval(secs => $4::float8 / 1000)) "
                      "AND NOT (id = ANY($5::bigint[])) "
                      "AND NOT (org_id || '/' || entity = ANY($6::text[])) ORDER BY id "
                      "FOR UPDATE SKIP LOCKED LIMIT $3::int) RETURNING id, org_id, entity, zoho_id",
                      6, p);
    free(oa);
    free(ha);
    free(ra);
    if (!r)
        return -EIO;
    int n = PQntuples(r);
    for (int i = 0; i < n; i++)
        fn(ud, strtoll(PQgetvalue(r, i, 0), NULL, 10), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
           PQgetvalue(r, i, 3));
    PQclear(r);
    return n;
}

int tds_store_request_set_run(struct tds_store *s, int64_t id, const char *run_id)
{
    char a[32];
    snprintf(a, sizeof(a), "%lld", (long long)id);
    const char *p[] = {a, run_id};
    return exec0(s, "UPDATE tds.sync_requests SET run_id = $2 WHERE id = $1", 2, p);
}

int tds_store_request_done(struct tds_store *s, int64_t id)
{
    char a[32];
    snprintf(a, sizeof(a), "%lld", (long long)id);
    const char *p[] = {a};
    return exec0(s, "UPDATE tds.sync_requests SET done_at = now() WHERE id = $1", 1, p);
}

/* ---- alerts ---- */

int tds_store_alert(struct tds_store *s, const char *rule, const char *severity, const char *org,
                    const char *entity, const char *summary)
{
    const char *p[] = {rule, severity, org, entity, summary};
    /* One firing alert per rule/org/entity: a repeat refreshes last_seen_at. */
    int64_t n = exec_count(s,
                           "UPDATE tds.alerts SET last_seen_at = now(), summary = $5 WHERE "
                           "rule = $1 AND org_id IS NOT DISTINCT FROM $3 AND "
                           "entity IS NOT DISTINCT FROM $4 AND state = 'firing' AND $2 <> ''",
                           5, p);
    if (n < 0)
        return (int)n;
    if (n > 0)
        return 0;
    return exec0(s,
                 "INSERT INTO tds.alerts (rule, severity, org_id, entity, summary, state) "
                 "VALUES ($1, $2, $3, $4, $5, 'firing')",
                 5, p);
}
