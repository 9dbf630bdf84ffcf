/* status — `tds-writer status`: a readable summary of the database for operators.
 *
 * Each section is one query whose result is printed as an aligned table.
 * Table names in the row-count query come from the registry, never from data.
 */
#include "status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "entities.h"
#include "util.h"

static int query(PGconn *c, const char *sql, PGresult **out, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    int code;

    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        *out = r;
        return 0;
    }
    code = tds_apply_classify(c, r);
    snprintf(err, errlen, "could not read status: %s", PQresultErrorMessage(r));
    for (char *p = err; *p; p++)
        if (*p == '\n')
            *p = ' ';
    PQclear(r);
    return code;
}

/* Characters (code points) in the first n bytes of UTF-8 text: the width of
 * the text in a terminal, Arabic included (one column each). */
static size_t u8_chars(const char *s, size_t n)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

/* Bytes of the first max characters of s, never inside a character. */
static size_t u8_prefix(const char *s, size_t max)
{
    size_t i = 0, k = 0;

    for (; s[i]; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80 && k++ == max)
            break;
    }
    return i;
}

#define CELL_MAX 60 /* characters of a cell shown */

/* Print a result as an aligned table, with a title and "(none)" when empty.
 * Widths count characters, not bytes, and a long cell is cut at a character
 * boundary. */
static void print_table(FILE *out, const char *title, PGresult *r)
{
    int nf = PQnfields(r), nt = PQntuples(r);
    size_t w[32] = {0};

    fprintf(out, "\n%s\n", title);
    if (nt == 0) {
        fprintf(out, "  (none)\n");
        return;
    }
    if (nf > 32)
        nf = 32;
    for (int f = 0; f < nf; f++) {
        w[f] = u8_chars(PQfname(r, f), strlen(PQfname(r, f)));
        for (int t = 0; t < nt; t++) {
            size_t l = u8_chars(PQgetvalue(r, t, f), (size_t)PQgetlength(r, t, f));

            if (l > w[f])
                w[f] = l > CELL_MAX ? CELL_MAX : l;
        }
    }
    fprintf(out, " ");
    for (int f = 0; f < nf; f++) {
        const char *name = PQfname(r, f);

        fprintf(out, " %s%*s", name, (int)(w[f] - u8_chars(name, strlen(name))), "");
    }
    fprintf(out, "\n ");
    for (int f = 0; f < nf; f++) {
        fprintf(out, " ");
        for (size_t i = 0; i < w[f]; i++)
            fputc('-', out);
    }
    fprintf(out, "\n");
    for (int t = 0; t < nt; t++) {
        fprintf(out, " ");
        for (int f = 0; f < nf; f++) {
            const char *v = PQgetisnull(r, t, f) ? "-" : PQgetvalue(r, t, f);
            size_t n = u8_prefix(v, CELL_MAX), k = u8_chars(v, n);
            char cell[CELL_MAX * 4 + 1];

            /* a reject's reason or a run's error may carry Zoho's text */
            fprintf(out, " %s%*s", tds_term_text(v, n, cell, sizeof(cell)),
                    (int)(w[f] > k ? w[f] - k : 0), "");
        }
        fprintf(out, "\n");
    }
}

static int section(PGconn *c, FILE *out, const char *title, const char *sql, char *err,
                   size_t errlen)
{
    PGresult *r = NULL;
    int rc = query(c, sql, &r, err, errlen);

    if (rc != 0)
        return rc;
    print_table(out, title, r);
    PQclear(r);
    return 0;
}

static int rows_section(PGconn *c, FILE *out, char *err, size_t errlen)
{
    struct tds_buf b = {0};
    int rc = 0;

    for (size_t i = 0; i < tds_table_count() && rc == 0; i++) {
        const struct tds_table *t = tds_table_at(i);

        if (t->parent)
            rc = tds_buf_addf(&b, "%sSELECT org_id, '%s' AS table, count(*) AS rows, "
                                  "NULL::bigint AS deleted, NULL::timestamptz AS last_synced "
                                  "FROM zoho.\"%s\" GROUP BY org_id",
                              i ? " UNION ALL " : "", t->name, t->name);
        else
            rc = tds_buf_addf(&b, "%sSELECT org_id, '%s' AS table, count(*) AS rows, "
                                  "count(deleted_at) AS deleted, "
                                  "date_trunc('second', max(synced_at)) AS last_synced "
                                  "FROM zoho.\"%s\" GROUP BY org_id",
                              i ? " UNION ALL " : "", t->name, t->name);
    }
    if (rc == 0)
        rc = tds_buf_addf(&b, " ORDER BY 1, 2");
    if (rc == 0)
        rc = tds_buf_add(&b, "", 1);
    if (rc == 0)
        rc = section(c, out, "Rows per organization and table", b.p, err, errlen);
    else
        snprintf(err, errlen, "out of memory");
    tds_buf_deinit(&b);
    return rc;
}

int tds_status_print(PGconn *c, FILE *out, char *err, size_t errlen)
{
    PGresult *r;
    int rc;

    r = PQexec(c, "BEGIN READ ONLY");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        rc = tds_apply_classify(c, r);
        snprintf(err, errlen, "could not read status: %s", PQresultErrorMessage(r));
        PQclear(r);
        return rc;
    }
    PQclear(r);
    rc = query(c, "SELECT coalesce(max(version), 0), now()::timestamptz(0) "
                  "FROM tds.schema_migrations", &r, err, errlen);
    if (rc != 0)
        return rc;
    fprintf(out, "tds-writer status at %s: database reachable, schema version %s\n",
            PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 0));
    PQclear(r);
    if ((rc = rows_section(c, out, err, errlen)) != 0)
        return rc;
    rc = section(c, out, "Last sync per entity",
        "SELECT org_id, entity, cursor, "
        "CASE WHEN cursor_at IS NULL THEN NULL ELSE "
        "justify_interval(date_trunc('second', now() - cursor_at))::text END AS cursor_age, "
        "date_trunc('second', last_success_at) AS last_success, "
        "justify_interval(date_trunc('second', now() - last_success_at))::text AS age, "
        "date_trunc('second', last_full_at) AS last_full, last_run_id "
        "FROM tds.sync_state ORDER BY org_id, entity", err, errlen);
    if (rc == 0)
        rc = section(c, out, "Runs in progress",
            "SELECT run_id, org_id, entity, mode, records_walked AS records, "
            "pages_written || '/' || pages_fetched AS pages_written_fetched, "
            "records_written || '/' || records_fetched AS records_written_fetched, "
            "records_rejected AS rejected, api_calls, "
            "date_trunc('second', started_at) AS started, "
            "justify_interval(date_trunc('second', now() - updated_at))::text AS idle "
            "FROM tds.sync_runs WHERE status = 'running' ORDER BY started_at", err, errlen);
    if (rc == 0)
        rc = section(c, out, "Runs finished in the last 24 hours",
            "SELECT status, org_id, entity, mode, count(*) AS runs, sum(records_walked) AS records, "
            "sum(records_written) AS records_written, sum(records_rejected) AS rejected, "
            "date_trunc('second', max(finished_at)) AS last_finished, "
            "(array_agg(error ORDER BY finished_at DESC) FILTER (WHERE status = 'failed'))[1] "
            "AS last_error "
            "FROM tds.sync_runs WHERE status <> 'running' AND finished_at > now() - interval '24 hours' "
            "GROUP BY 1, 2, 3, 4 ORDER BY 2, 3, 1, 4", err, errlen);
    if (rc == 0)
        rc = section(c, out, "Rejects in the last 24 hours",
            "SELECT stage, org_id, entity, count(*) AS rejects, "
            "date_trunc('second', max(created_at)) AS last_at, "
            "left((array_agg(reason ORDER BY created_at DESC))[1], 60) AS last_reason "
            "FROM tds.rejected WHERE created_at > now() - interval '24 hours' "
            "GROUP BY 1, 2, 3 ORDER BY 4 DESC", err, errlen);
    if (rc == 0)
        rc = section(c, out, "Open alerts",
            "SELECT id, severity, rule, org_id, entity, left(summary, 60) AS summary, "
            "date_trunc('second', fired_at) AS fired, "
            "coalesce(acknowledged_by, '') AS acknowledged_by "
            "FROM tds.alerts WHERE state = 'firing' "
            "ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'error' THEN 1 "
            "WHEN 'warning' THEN 2 ELSE 3 END, fired_at", err, errlen);
    PQclear(PQexec(c, "COMMIT"));
    return rc;
}
