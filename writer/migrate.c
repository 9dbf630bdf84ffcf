/* migrate — embedded migrations and the registry check.
 *
 * The advisory lock key is fixed ("tds-migr" in ASCII) so that every writer
 * version agrees on it. tds.schema_migrations is created by this file before
 * the first migration because the runner needs it to know what is applied;
 * migration 001 declares it too (IF NOT EXISTS) so the SQL alone is complete.
 */
#include "migrate.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "entities.h"
#include "sqlgen.h"
#include "util.h"

#define LOCK_KEY "7310593858020348530"

/* "what: PostgreSQL's message" on one line, without the trailing newline. */
static void one_line(char *err, size_t errlen, const char *what, const char *msg)
{
    size_t n;

    snprintf(err, errlen, "%s: %s", what, msg);
    for (char *p = err; *p; p++)
        if (*p == '\n')
            *p = ' ';
    for (n = strlen(err); n > 0 && err[n - 1] == ' '; n--)
        err[n - 1] = '\0';
}

static int run(PGconn *c, const char *sql, int np, const char *const *vals, PGresult **out,
               char *err, size_t errlen, const char *what)
{
    PGresult *r = PQexecParams(c, sql, np, NULL, vals, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    int code;

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (out)
            *out = r;
        else
            PQclear(r);
        return 0;
    }
    code = tds_apply_classify(c, r);
    one_line(err, errlen, what, PQresultErrorMessage(r));
    PQclear(r);
    return code;
}

static int simple(PGconn *c, const char *sql, char *err, size_t errlen, const char *what)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int code;

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(r);
        return 0;
    }
    code = tds_apply_classify(c, r);
    one_line(err, errlen, what, PQresultErrorMessage(r));
    PQclear(r);
    return code;
}

/* Zoho's text (Arabic names, say) needs a UTF8 database: another encoding
 * would refuse such records one by one, and SQL_ASCII would store bytes
 * unchecked. Refused before anything is created. */
static int check_encoding(PGconn *c, char *err, size_t errlen)
{
    PGresult *r = NULL;
    int rc = run(c, "SELECT current_database(), pg_encoding_to_char(encoding) FROM pg_database "
                    "WHERE datname = current_database()",
                 0, NULL, &r, err, errlen, "could not read the database's encoding");

    if (rc != 0)
        return rc;
    if (PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 1), "UTF8") != 0) {
        snprintf(err, errlen,
                 "database %s is encoded in %s; Zoho's text needs UTF8 (CREATE DATABASE ... "
                 "ENCODING 'UTF8' TEMPLATE template0)",
                 PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
        rc = TDS_APPLY_E_DB;
    }
    PQclear(r);
    return rc;
}

int tds_migrate_run(PGconn *c, int *applied, char *err, size_t errlen)
{
    int rc;

    *applied = 0;
    if ((rc = check_encoding(c, err, errlen)) != 0)
        return rc;
    if ((rc = simple(c, "SELECT pg_advisory_lock(" LOCK_KEY ")", err, errlen,
                     "could not take the migration lock")) != 0)
        return rc;
    /* Only create what is missing: a writer whose role may not run DDL can
     * still start on a database that is already up to date. */
    {
        PGresult *r = NULL;

        rc = run(c, "SELECT to_regclass('tds.schema_migrations') IS NULL", 0, NULL, &r, err,
                 errlen, "could not read tds.schema_migrations");
        if (rc == 0 && strcmp(PQgetvalue(r, 0, 0), "t") == 0)
            rc = simple(c, "CREATE SCHEMA IF NOT EXISTS tds; "
                           "CREATE TABLE IF NOT EXISTS tds.schema_migrations (version integer "
                           "PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL "
                           "DEFAULT now())",
                        err, errlen, "could not create tds.schema_migrations");
        PQclear(r);
    }
    for (size_t i = 0; rc == 0 && i < tds_migrations_count; i++) {
        const struct tds_migration *m = &tds_migrations[i];
        char ver[16], what[128];
        const char *vals[2] = {ver, m->name};
        PGresult *r = NULL;
        bool done;

        snprintf(ver, sizeof(ver), "%d", m->version);
        rc = run(c, "SELECT 1 FROM tds.schema_migrations WHERE version = $1", 1, vals, &r, err,
                 errlen, "could not read tds.schema_migrations");
        if (rc != 0)
            break;
        done = PQntuples(r) > 0;
        PQclear(r);
        if (done)
            continue;
        snprintf(what, sizeof(what), "migration %03d_%s failed", m->version, m->name);
        if ((rc = simple(c, "BEGIN", err, errlen, what)) != 0)
            break;
        rc = simple(c, m->sql, err, errlen, what);
        if (rc == 0)
            rc = run(c, "INSERT INTO tds.schema_migrations (version, name) VALUES ($1, $2)", 2,
                     vals, NULL, err, errlen, what);
        if (rc == 0)
            rc = simple(c, "COMMIT", err, errlen, what);
        if (rc != 0) {
            char ignore[256]; /* the error of a cleanup step is not reported */

            simple(c, "ROLLBACK", ignore, sizeof(ignore), "rollback");
            break;
        }
        (*applied)++;
    }
    {
        char ignore[256];

        simple(c, "SELECT pg_advisory_unlock(" LOCK_KEY ")", ignore, sizeof(ignore), "unlock");
    }
    return rc;
}

int tds_migrate_newer(PGconn *c, int *n, char *newest, size_t newestlen, char *err,
                      size_t errlen)
{
    char ver[16];
    const char *vals[1] = {ver};
    PGresult *r = NULL;
    int rc;

    *n = 0;
    if (newestlen)
        newest[0] = '\0';
    snprintf(ver, sizeof(ver), "%d",
             tds_migrations_count ? tds_migrations[tds_migrations_count - 1].version : 0);
    rc = run(c, "SELECT version, name FROM tds.schema_migrations WHERE version > $1 "
                "ORDER BY version DESC",
             1, vals, &r, err, errlen, "could not read tds.schema_migrations");
    if (rc == 0 && PQntuples(r) > 0) {
        *n = PQntuples(r);
        snprintf(newest, newestlen, "%03d_%s", atoi(PQgetvalue(r, 0, 0)), PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    return rc;
}

static const char *udt_of(enum tds_coltype t)
{
    switch (t) {
    case TDS_T_TEXT: return "text";
    case TDS_T_NUMERIC: return "numeric";
    case TDS_T_INT: return "int4";
    case TDS_T_BOOL: return "bool";
    case TDS_T_TIMESTAMPTZ: return "timestamptz";
    case TDS_T_DATE: return "date";
    case TDS_T_JSONB: return "jsonb";
    }
    return "text";
}

static int check_col(PGresult *r, const struct tds_table *t, const char *col, char *err,
                     size_t errlen)
{
    enum tds_coltype ty = TDS_T_TEXT;

    tds_sqlgen_coltype(t, col, &ty);
    for (int i = 0; i < PQntuples(r); i++) {
        if (strcmp(PQgetvalue(r, i, 0), t->name) != 0 || strcmp(PQgetvalue(r, i, 1), col) != 0)
            continue;
        if (strcmp(PQgetvalue(r, i, 2), udt_of(ty)) == 0)
            return 0;
        snprintf(err, errlen, "column zoho.%s.%s is %s in the database, the registry says %s",
                 t->name, col, PQgetvalue(r, i, 2), tds_coltype_sql(ty));
        return TDS_E_INVALID;
    }
    snprintf(err, errlen, "column zoho.%s.%s is missing from the database", t->name, col);
    return TDS_E_INVALID;
}

int tds_migrate_uncollated(PGconn *c, int *n, char *first, size_t firstlen, char *err,
                           size_t errlen)
{
    PGresult *r = NULL;
    int rc = run(c,
                 "SELECT DISTINCT n.nspname || '.' || c.relname FROM pg_class c "
                 "JOIN pg_namespace n ON n.oid = c.relnamespace "
                 "JOIN pg_attribute a ON a.attrelid = c.oid "
                 "WHERE n.nspname IN ('zoho', 'tds') AND c.relkind IN ('r', 'p') "
                 "AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'text'::regtype "
                 "AND a.attname LIKE '%\\_id' AND a.attcollation <> 'pg_catalog.\"C\"'::regcollation "
                 "ORDER BY 1",
                 0, NULL, &r, err, errlen, "could not read the collation of the id columns");

    *n = 0;
    if (firstlen)
        first[0] = '\0';
    if (rc != 0)
        return rc;
    *n = PQntuples(r);
    if (*n > 0 && firstlen)
        snprintf(first, firstlen, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

int tds_migrate_verify(PGconn *c, char *err, size_t errlen)
{
    static const char *const managed[] = {"org_id", "modified_time", "synced_at", "deleted_at",
                                          "raw", "content_hash", "is_detail", "observed_at"};
    PGresult *r = NULL;
    int rc = run(c, "SELECT table_name::text, column_name::text, udt_name::text "
                    "FROM information_schema.columns WHERE table_schema = 'zoho'",
                 0, NULL, &r, err, errlen, "could not read the zoho schema");

    if (rc != 0)
        return rc;
    for (size_t i = 0; rc == 0 && i < tds_table_count(); i++) {
        const struct tds_table *t = tds_table_at(i);

        rc = check_col(r, t, t->id_column, err, errlen);
        for (size_t k = 0; rc == 0 && k < (t->parent ? 1 : TDS_ARRAY_SIZE(managed)); k++)
            rc = check_col(r, t, managed[k], err, errlen);
        for (size_t k = 0; rc == 0 && k < t->n_cols; k++)
            rc = check_col(r, t, t->cols[k].name, err, errlen);
    }
    PQclear(r);
    return rc;
}
