/* owner — advisory locks per organization on a dedicated connection.
 *
 * The connection is checked (SELECT 1) on every tick while it holds locks:
 * a silently broken connection would otherwise let two replicas fetch the
 * same organization once the server drops our session.
 */
#include "owner.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "loop.h"
#include "pg.h"
#include "schema_version.h"
#include "util.h"

struct tds_owner {
    struct tds_loop *loop;
    char *conninfo;
    const struct tds_orgs *orgs;
    bool *owned;
    size_t n_owned;
    PGconn *conn;
    int64_t timer_id;
    tds_owner_cb cb;
    void *ud;
    bool released;
    int schema;          /* the database's schema version; -1 not read yet */
    bool schema_ok;      /* at TDS_SCHEMA_VERSION or newer: never goes back */
    struct tds_log_limit err_log;
    struct tds_log_limit schema_log;
};

static void lose_all(struct tds_owner *w, const char *why)
{
    bool any = false;
    for (size_t i = 0; i < w->orgs->n; i++) {
        if (!w->owned[i])
            continue;
        w->owned[i] = false;
        w->n_owned--;
        any = true;
        if (w->cb)
            w->cb(w->orgs->orgs[i].org_id, false, w->ud);
    }
    if (any)
        tds_warn("lost every organization lock: %s", why);
}

static void drop_conn(struct tds_owner *w, const char *why)
{
    if (w->conn) {
        PQfinish(w->conn);
        w->conn = NULL;
    }
    lose_all(w, why);
}

/* The schema check, on the lock connection. false: not ours yet, or the
 * connection failed (dropped). */
static bool schema_check(struct tds_owner *w)
{
    if (w->schema_ok)
        return true;
    /* two statements: a missing table fails the plan of one that names it */
    PGresult *r = PQexec(w->conn, "SELECT to_regclass('tds.schema_migrations') IS NOT NULL");
    bool read = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    bool exists = read && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    if (exists) {
        PQclear(r);
        r = PQexec(w->conn, "SELECT coalesce(max(version), 0) FROM tds.schema_migrations");
        read = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    }
    if (read)
        w->schema = exists ? atoi(PQgetvalue(r, 0, 0)) : 0;
    else
        tds_log_limited(&w->err_log, TDS_LOG_WARN, NULL, "could not read the schema version: %s",
                        PQerrorMessage(w->conn));
    PQclear(r);
    if (!read) {
        drop_conn(w, "schema query failed");
        return false;
    }
    if (w->schema >= TDS_SCHEMA_VERSION) {
        w->schema_ok = true;
        return true;
    }
    tds_log_limited(&w->schema_log, TDS_LOG_WARN, NULL,
                    "the database schema is at version %d, this fetcher needs %d: waiting, with no "
                    "organization taken; `tds-writer migrate` applies it (a writer of this release "
                    "does at its start)",
                    w->schema, TDS_SCHEMA_VERSION);
    return false;
}

static void tick(struct tds_loop *loop, void *ud)
{
    (void)loop;
    struct tds_owner *w = ud;
    if (w->released)
        return;
    if (w->conn && PQstatus(w->conn) != CONNECTION_OK)
        drop_conn(w, "connection to the database lost");
    if (w->conn && w->n_owned) {
        PGresult *r = PQexec(w->conn, "SELECT 1");
        bool ok = r && PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (!ok) {
            drop_conn(w, "lock connection failed its check");
        }
    }
    if (!w->conn) {
        char err[512];
        w->conn = tds_pg_connect(w->conninfo, "tds-fetcher-owner", err, sizeof(err));
        if (!w->conn) {
            tds_log_limited(&w->err_log, TDS_LOG_WARN, NULL,
                            "could not connect for organization locks: %s, retrying", err);
            return;
        }
        /* The locks live as long as this session: if this process's node
         * dies, the server must end it soon, so another replica can take
         * the organizations. Without it they wait for the server's own
         * keepalive (hours by default); it is worth a warning, not a stop. */
        if (tds_pg_server_keepalive(w->conn, err, sizeof(err)) != 0)
            tds_log(TDS_LOG_WARN, NULL, "%s; a replica that dies may keep its organizations "
                    "locked until the server notices", err);
    }
    if (!schema_check(w))
        return;
    for (size_t i = 0; i < w->orgs->n; i++) {
        if (w->owned[i])
            continue;
        const char *org = w->orgs->orgs[i].org_id;
        const char *p[] = {org};
        PGresult *r = PQexecParams(w->conn, "SELECT pg_try_advisory_lock(hashtext('tds-org:' || $1))",
                                   1, NULL, p, NULL, NULL, 0);
        bool got = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                   strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        bool failed = !r || PQresultStatus(r) != PGRES_TUPLES_OK;
        PQclear(r);
        if (failed) {
            drop_conn(w, "lock query failed");
            return;
        }
        if (got) {
            w->owned[i] = true;
            w->n_owned++;
            struct tds_log_ctx c = {.org = org};
            tds_log(TDS_LOG_INFO, &c, "acquired organization lock");
            if (w->cb)
                w->cb(org, true, w->ud);
        }
    }
}

int tds_owner_new(struct tds_owner **out, struct tds_loop *loop, const char *conninfo,
                  const struct tds_orgs *orgs, int64_t every_ms, tds_owner_cb cb, void *ud)
{
    struct tds_owner *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->loop = loop;
    w->orgs = orgs;
    w->cb = cb;
    w->ud = ud;
    w->err_log.interval_ms = 30000;
    w->schema_log.interval_ms = 60000;
    w->schema = -1;
    w->conninfo = strdup(conninfo);
    w->owned = calloc(orgs->n ? orgs->n : 1, sizeof(*w->owned));
    if (!w->conninfo || !w->owned) {
        tds_owner_free(w);
        return -ENOMEM;
    }
    w->timer_id = tds_loop_timer_add(loop, 0, every_ms > 0 ? every_ms : 2000, tick, w);
    if (w->timer_id < 0) {
        tds_owner_free(w);
        return -ENOMEM;
    }
    *out = w;
    return 0;
}

void tds_owner_release(struct tds_owner *w)
{
    if (!w)
        return;
    w->released = true;
    if (w->timer_id > 0)
        tds_loop_timer_cancel(w->loop, w->timer_id);
    w->timer_id = 0;
    if (w->conn) {
        PQfinish(w->conn); /* the session ends: every advisory lock goes with it */
        w->conn = NULL;
    }
    for (size_t i = 0; w->owned && i < w->orgs->n; i++)
        w->owned[i] = false;
    w->n_owned = 0;
}

struct tds_owner *tds_owner_free(struct tds_owner *w)
{
    if (!w)
        return NULL;
    tds_owner_release(w);
    free(w->conninfo);
    free(w->owned);
    free(w);
    return NULL;
}

bool tds_owner_connected(const struct tds_owner *w) { return w->conn != NULL; }

bool tds_owner_schema_ok(const struct tds_owner *w, int *version)
{
    if (version)
        *version = w->schema;
    return w->schema_ok;
}
size_t tds_owner_count(const struct tds_owner *w) { return w->n_owned; }
