/* sqlgen — the writer's SQL, generated from the entity registry.
 *
 * The guard is the heart of idempotence: an upsert writes a row iff no row
 * exists, or the new modified_time is newer, or the times are equal and the
 * content hash differs and (the new row is detail or the stored one is not).
 * A soft-deleted row is revived only by a version observed after the delete
 * (deletes carry no modified_time, so the time it was observed is all that
 * orders them): a page fetched before the delete and written after it cannot
 * undo it, however new its modified_time.
 *
 * Staging tables carry two bookkeeping columns: _m (index of the message in
 * the batch) and _r (row index within its set). _m ties child rows to the
 * exact parent version that won, so a parent sent twice in one batch gets the
 * children of the version that was written.
 */
#include "sqlgen.h"

#include <stdio.h>
#include <string.h>

static const struct tds_column top_managed[] = {
    {"modified_time", TDS_T_TIMESTAMPTZ}, {"synced_at", TDS_T_TIMESTAMPTZ},
    {"deleted_at", TDS_T_TIMESTAMPTZ},    {"raw", TDS_T_JSONB},
    {"content_hash", TDS_T_TEXT},         {"is_detail", TDS_T_BOOL},
    {"observed_at", TDS_T_TIMESTAMPTZ},
};

/* The columns a DETAIL/LIST set starts with, in order (msg.h). */
static const char *const head_cols[] = {"modified_time", "raw", "content_hash", "is_detail"};

/* The guard, over the stored row t and the new one n (EXCLUDED in an upsert,
 * the fast path's lookup row): modified_time, content_hash, is_detail and
 * observed_at of n against t's.
 * A live row takes a newer modified_time, or the same one with another
 * content (detail over list) unless observed before the stored version: Zoho
 * keeps whole seconds, and of two versions in one second the one observed
 * later — page fetched or webhook received — is the newer; unknown on either
 * side, arrival order decides (as before observed_at).
 * A deleted row's observed_at is when the delete was observed: a version
 * observed after it, not older than the stored one, revives the row (Zoho
 * still had the record then); one observed before stays out, however new
 * its modified_time. A version observed inside its modified_time's second
 * (every webhook's is, apply.c's observed_text) shows only that Zoho had it
 * at some moment of that second, maybe before the delete: it revives only
 * when that second began after the delete was observed. Unknown on either
 * side (a delete or a version without received_ms), only a strictly newer
 * modified_time revives, the rule from before deletes were timed (migration
 * 007 cleared observed_at on the rows deleted before then, which held their
 * last version's). */
static int add_guard(struct tds_buf *b, const char *n)
{
    return tds_buf_addf(b,
        "CASE WHEN t.deleted_at IS NULL THEN "
        "(%1$s.modified_time > t.modified_time OR "
        "(t.modified_time IS NULL AND %1$s.modified_time IS NOT NULL)) OR "
        "(%1$s.modified_time IS NOT DISTINCT FROM t.modified_time "
        "AND %1$s.content_hash IS DISTINCT FROM t.content_hash "
        "AND (%1$s.is_detail OR NOT t.is_detail) "
        "AND (%1$s.observed_at IS NULL OR t.observed_at IS NULL OR "
        "%1$s.observed_at >= t.observed_at)) "
        "WHEN %1$s.observed_at IS NULL OR t.observed_at IS NULL THEN "
        "%1$s.modified_time > t.modified_time OR "
        "(t.modified_time IS NULL AND %1$s.modified_time IS NOT NULL) "
        "ELSE %1$s.observed_at > t.observed_at AND "
        "(t.modified_time IS NULL OR %1$s.modified_time >= t.modified_time) AND "
        "(%1$s.modified_time IS NULL OR %1$s.modified_time > t.observed_at OR "
        "%1$s.observed_at >= %1$s.modified_time + interval '1 second') END",
        n);
}

int tds_sqlgen_coltype(const struct tds_table *t, const char *col, enum tds_coltype *out)
{
    if (strcmp(col, "org_id") == 0 || strcmp(col, t->id_column) == 0) {
        *out = TDS_T_TEXT;
        return 0;
    }
    if (!t->parent) {
        for (size_t i = 0; i < TDS_ARRAY_SIZE(top_managed); i++)
            if (strcmp(col, top_managed[i].name) == 0) {
                *out = top_managed[i].type;
                return 0;
            }
    }
    for (size_t i = 0; i < t->n_cols; i++)
        if (strcmp(col, t->cols[i].name) == 0) {
            *out = t->cols[i].type;
            return 0;
        }
    return TDS_E_NOTFOUND;
}

int tds_sqlgen_check(const struct tds_table *t, enum tds_rowset_kind kind, char *const *cols,
                     size_t n_cols, char *err, size_t errlen)
{
    size_t first_own;

#define BAD(...) do { snprintf(err, errlen, __VA_ARGS__); return TDS_E_INVALID; } while (0)
    if (kind == TDS_ROWS_CHILD && !t->parent)
        BAD("child rows for top-level table %s", t->name);
    if (kind != TDS_ROWS_CHILD && t->parent)
        BAD("%s rows for child table %s", kind == TDS_ROWS_DELETE ? "delete" : "top-level",
            t->name);
    if (n_cols < 2 || strcmp(cols[0], "org_id") != 0 || strcmp(cols[1], t->id_column) != 0)
        BAD("columns of %s must start with org_id, %s", t->name, t->id_column);
    switch (kind) {
    case TDS_ROWS_DELETE:
        if (n_cols > 3 || (n_cols == 3 && strcmp(cols[2], "modified_time") != 0))
            BAD("delete rows of %s take org_id, %s and optionally modified_time", t->name,
                t->id_column);
        return 0;
    case TDS_ROWS_DETAIL:
    case TDS_ROWS_LIST:
        if (n_cols < 2 + TDS_ARRAY_SIZE(head_cols))
            BAD("rows of %s lack the managed columns", t->name);
        for (size_t i = 0; i < TDS_ARRAY_SIZE(head_cols); i++)
            if (strcmp(cols[2 + i], head_cols[i]) != 0)
                BAD("column %zu of %s rows must be %s, not %s", 3 + i, t->name, head_cols[i],
                    cols[2 + i]);
        first_own = 2 + TDS_ARRAY_SIZE(head_cols);
        break;
    case TDS_ROWS_CHILD:
        first_own = 2;
        for (const char *const *k = t->key; k && *k; k++) {
            bool found = false;

            for (size_t i = 2; i < n_cols; i++)
                found = found || strcmp(cols[i], *k) == 0;
            if (!found)
                BAD("rows of %s lack key column %s", t->name, *k);
        }
        break;
    default:
        BAD("unknown row set kind %d for %s", (int)kind, t->name);
    }
    /* Every message is checked on arrival: find each column from where the
     * last one was found (the processor sends them in registry order, so
     * that is one comparison each), and mark what was seen for duplicates. */
    bool seen[256] = {false};
    size_t at = 0;
    if (t->n_cols > TDS_ARRAY_SIZE(seen))
        BAD("table %s has more columns than the check handles", t->name);
    for (size_t i = first_own; i < n_cols; i++) {
        size_t j = t->n_cols;
        for (size_t k = 0; k < t->n_cols && j == t->n_cols; k++)
            if (strcmp(cols[i], t->cols[(at + k) % t->n_cols].name) == 0)
                j = (at + k) % t->n_cols;
        if (j == t->n_cols)
            BAD("unknown column %s in %s rows", cols[i], t->name);
        if (seen[j])
            BAD("column %s twice in %s rows", cols[i], t->name);
        seen[j] = true;
        at = j + 1;
    }
    return 0;
#undef BAD
}

/* Append a list of quoted identifiers, each optionally prefixed. */
static int add_cols(struct tds_buf *b, const char *prefix, char *const *cols, size_t from,
                    size_t n)
{
    int rc = 0;

    for (size_t i = from; i < n && rc == 0; i++)
        rc = tds_buf_addf(b, "%s%s\"%s\"", i > from ? ", " : "", prefix, cols[i]);
    return rc;
}

int tds_sqlgen_staging(struct tds_buf *b, const char *stg, const struct tds_table *t,
                       char *const *cols, size_t n_cols)
{
    int rc = tds_buf_addf(b, "CREATE TEMP TABLE IF NOT EXISTS %s (_m integer, _r integer, "
                             "_o timestamptz", stg);

    for (size_t i = 0; i < n_cols && rc == 0; i++) {
        enum tds_coltype ty = TDS_T_TEXT;

        tds_sqlgen_coltype(t, cols[i], &ty);
        rc = tds_buf_addf(b, ", \"%s\" %s", cols[i], tds_coltype_sql(ty));
    }
    return rc ? rc : tds_buf_addf(b, ")");
}

int tds_sqlgen_copy(struct tds_buf *b, const char *stg)
{
    return tds_buf_addf(b, "COPY %s FROM STDIN", stg);
}

/* ", $4::<type of cols[0]>[]" … (arrays) or ", $4::<type> AS "<col>"" … */
static int typed_params(struct tds_buf *b, const struct tds_table *t, char *const *cols,
                        size_t n_cols, bool arrays)
{
    int rc = 0;

    for (size_t i = 0; i < n_cols && rc == 0; i++) {
        enum tds_coltype ty = TDS_T_TEXT;

        tds_sqlgen_coltype(t, cols[i], &ty);
        rc = arrays ? tds_buf_addf(b, ", $%zu::%s[]", i + 4, tds_coltype_sql(ty))
                    : tds_buf_addf(b, ", $%zu::%s AS \"%s\"", i + 4, tds_coltype_sql(ty), cols[i]);
    }
    return rc;
}

int tds_sqlgen_unnest_rows(struct tds_buf *b, const struct tds_table *t, char *const *cols,
                           size_t n_cols)
{
    int rc = tds_buf_addf(b, "unnest($1::integer[], $2::integer[], $3::timestamptz[]");

    if (rc == 0)
        rc = typed_params(b, t, cols, n_cols, true);
    if (rc == 0)
        rc = tds_buf_addf(b, ") AS s(_m, _r, _o");
    for (size_t i = 0; i < n_cols && rc == 0; i++)
        rc = tds_buf_addf(b, ", \"%s\"", cols[i]);
    return rc ? rc : tds_buf_addf(b, ")");
}

int tds_sqlgen_one_row(struct tds_buf *b, const struct tds_table *t, char *const *cols,
                       size_t n_cols)
{
    int rc = tds_buf_addf(b, "SELECT $1::integer AS _m, $2::integer AS _r, $3::timestamptz AS _o");

    return rc ? rc : typed_params(b, t, cols, n_cols, false);
}

int tds_sqlgen_stage_insert(struct tds_buf *b, const char *stg, const struct tds_table *t,
                            char *const *cols, size_t n_cols)
{
    int rc = tds_buf_addf(b, "INSERT INTO %s SELECT * FROM ", stg);

    return rc ? rc : tds_sqlgen_unnest_rows(b, t, cols, n_cols);
}

int tds_sqlgen_collapse(struct tds_buf *b, const char *stg, const struct tds_table *t,
                        enum tds_rowset_kind kind, bool has_mtime)
{
    return tds_buf_addf(b,
        "DELETE FROM %s WHERE ctid NOT IN (SELECT DISTINCT ON (org_id, \"%s\") ctid FROM %s "
        "ORDER BY org_id, \"%s\"%s, _o DESC NULLS LAST%s, _m DESC, _r DESC)",
        stg, t->id_column, stg, t->id_column,
        has_mtime ? ", modified_time DESC NULLS LAST" : "",
        kind == TDS_ROWS_DELETE ? "" : ", is_detail DESC");
}

static int upsert_delete(struct tds_buf *b, const char *stg, const struct tds_table *t,
                         bool has_mtime, bool direct)
{
    /* A delete for a record never seen leaves a tombstone, so an older
     * version arriving later cannot bring the record back. observed_at
     * becomes when the delete was observed (_o): only a version observed
     * after it revives the row (add_guard), and, the same rule the other
     * way, a delete observed before the stored version leaves it live (Zoho
     * still had the record when that version was observed), whatever order
     * the two arrive in or run in inside one batch. A version observed
     * inside its modified_time's second (a webhook's) proves only that Zoho
     * had it at some moment of that second: a delete observed from the start
     * of that second deletes it, as such a version observed after a delete
     * revives only from the next second on (add_guard). (The stored version's
     * observed_at is its first sighting: a copy seen again later with the
     * same content is refused without moving it on, as moving it would
     * rewrite every unchanged row of a full sync. So a delete observed
     * between the two sightings and arriving after both deletes.) A delete of a row that
     * is deleted already moves its observed_at on to the later delete, so a
     * version observed between the two stays out; only newly deleted rows
     * are returned (counted, notified). A delete that does not say when it
     * was observed deletes a live row, and the guard falls back to
     * modified_time. */
    return tds_buf_addf(b,
        "%5$s w AS (INSERT INTO zoho.\"%1$s\" AS t (org_id, \"%2$s\", modified_time, "
        "observed_at, deleted_at, synced_at) SELECT org_id, \"%2$s\", %3$s, _o, now(), now() "
        "FROM %4$s "
        "ON CONFLICT (org_id, \"%2$s\") DO UPDATE SET deleted_at = COALESCE(t.deleted_at, now()), "
        "modified_time = GREATEST(t.modified_time, EXCLUDED.modified_time), "
        "observed_at = CASE WHEN EXCLUDED.observed_at IS NOT NULL "
        "THEN GREATEST(t.observed_at, EXCLUDED.observed_at) END, synced_at = now() "
        "WHERE CASE WHEN t.deleted_at IS NULL THEN "
        "(EXCLUDED.modified_time IS NULL OR t.modified_time IS NULL OR "
        "EXCLUDED.modified_time >= t.modified_time) AND "
        "(EXCLUDED.observed_at IS NULL OR t.observed_at IS NULL OR "
        "EXCLUDED.observed_at >= t.observed_at OR "
        "(t.observed_at < t.modified_time + interval '1 second' AND "
        "EXCLUDED.observed_at >= t.modified_time)) "
        "ELSE EXCLUDED.observed_at > t.observed_at OR "
        "(t.observed_at IS NULL AND EXCLUDED.observed_at IS NOT NULL) END "
        "RETURNING org_id, \"%2$s\", deleted_at = now() AS newly) "
        "SELECT org_id, \"%2$s\" FROM w WHERE newly",
        t->name, t->id_column, has_mtime ? "modified_time" : "NULL::timestamptz", stg,
        direct ? "," : "WITH");
}

int tds_sqlgen_upsert(struct tds_buf *b, const char *stg, const struct tds_table *t,
                      enum tds_rowset_kind kind, char *const *cols, size_t n_cols,
                      bool with_m, enum tds_sqlgen_src src)
{
    size_t first_own = 2 + TDS_ARRAY_SIZE(head_cols);
    bool direct = src != TDS_SRC_STAGING;
    int rc = 0;

    /* direct: the rows come as parameters (tds_sqlgen_unnest_rows, or
     * tds_sqlgen_one_row for one), read once into the CTE s, instead of
     * from a staging table */
    if (direct) {
        rc = tds_buf_addf(b, src == TDS_SRC_ROW ? "WITH s AS (" : "WITH s AS (SELECT * FROM ");
        if (rc == 0)
            rc = src == TDS_SRC_ROW ? tds_sqlgen_one_row(b, t, cols, n_cols)
                                    : tds_sqlgen_unnest_rows(b, t, cols, n_cols);
        if (rc == 0)
            rc = tds_buf_addf(b, with_m && kind != TDS_ROWS_DELETE ? ")" : ") ");
        stg = "s";
    }
    if (rc != 0)
        return rc;
    if (kind == TDS_ROWS_DELETE)
        return upsert_delete(b, stg, t, n_cols >= 3, direct);
    if (with_m)
        rc = tds_buf_addf(b, direct ? ", w AS (" : "WITH w AS (");
    if (rc == 0)
        rc = tds_buf_addf(b, "INSERT INTO zoho.\"%s\" AS t (", t->name);
    if (rc == 0)
        rc = add_cols(b, "", cols, 0, n_cols);
    if (rc == 0)
        rc = tds_buf_addf(b, ", observed_at, synced_at, deleted_at) SELECT ");
    if (rc == 0)
        rc = add_cols(b, "", cols, 0, n_cols);
    if (rc == 0)
        rc = tds_buf_addf(b, ", _o, now(), NULL FROM %s ON CONFLICT (org_id, \"%s\") DO UPDATE SET "
                             "modified_time = EXCLUDED.modified_time, "
                             "observed_at = EXCLUDED.observed_at, ", stg, t->id_column);
    /* LIST rows carry only some fields: merge raw so the fuller detail JSON
     * is kept; DETAIL rows replace it. */
    if (rc == 0)
        rc = tds_buf_addf(b, kind == TDS_ROWS_LIST
                                 ? "raw = CASE WHEN t.raw IS NULL THEN EXCLUDED.raw "
                                   "WHEN EXCLUDED.raw IS NULL THEN t.raw "
                                   "ELSE t.raw || EXCLUDED.raw END, "
                                 : "raw = EXCLUDED.raw, ");
    if (rc == 0)
        rc = tds_buf_addf(b, "content_hash = EXCLUDED.content_hash, "
                             "is_detail = EXCLUDED.is_detail");
    for (size_t i = first_own; i < n_cols && rc == 0; i++)
        rc = tds_buf_addf(b, ", \"%s\" = EXCLUDED.\"%s\"", cols[i], cols[i]);
    if (rc == 0)
        rc = tds_buf_addf(b, ", synced_at = now(), deleted_at = NULL WHERE ");
    if (rc == 0)
        rc = add_guard(b, "EXCLUDED");
    if (rc == 0)
        rc = tds_buf_addf(b, " RETURNING org_id, \"%s\"", t->id_column);
    if (rc == 0 && with_m)
        rc = tds_buf_addf(b,
            ") SELECT w.org_id, w.\"%s\", s._m FROM w JOIN %s s "
            "ON s.org_id = w.org_id AND s.\"%s\" = w.\"%s\"",
            t->id_column, stg, t->id_column, t->id_column);
    return rc;
}

int tds_sqlgen_child_delete(struct tds_buf *b, const struct tds_table *child, bool one)
{
    if (one)
        return tds_buf_addf(b, "DELETE FROM zoho.\"%s\" WHERE org_id = $1 AND \"%s\" = $2",
                            child->name, child->id_column);
    return tds_buf_addf(b, "DELETE FROM zoho.\"%s\" c USING unnest($1::text[], $2::text[]) "
                           "AS w(org_id, id) WHERE c.org_id = w.org_id AND c.\"%s\" = w.id",
                        child->name, child->id_column);
}

/* The condition that this transaction wrote the stored version of
 * zoho.<parent> (org $o, id $i) with content hash $h: see sqlgen.h. */
static int add_written(struct tds_buf *b, const struct tds_table *parent, int o, int i, int h)
{
    return tds_buf_addf(b, "EXISTS (SELECT 1 FROM zoho.\"%s\" p WHERE p.org_id = $%d "
                           "AND p.\"%s\" = $%d AND p.content_hash IS NOT DISTINCT FROM $%d "
                           "AND p.xmin = pg_current_xact_id()::xid)",
                        parent->name, o, parent->id_column, i, h);
}

int tds_sqlgen_child_delete_if_written(struct tds_buf *b, const struct tds_table *child,
                                       const struct tds_table *parent)
{
    int rc = tds_buf_addf(b, "DELETE FROM zoho.\"%s\" WHERE org_id = $1 AND \"%s\" = $2 AND ",
                          child->name, child->id_column);

    return rc ? rc : add_written(b, parent, 1, 2, 3);
}

/* INSERT INTO zoho.<child> (cols) SELECT s.cols FROM <rows as s>: the
 * staging table stg, or with stg NULL the tds_sqlgen_unnest_rows parameters. */
static int child_insert_head(struct tds_buf *b, const char *stg, const struct tds_table *child,
                             char *const *cols, size_t n_cols)
{
    int rc = tds_buf_addf(b, "INSERT INTO zoho.\"%s\" (", child->name);

    if (rc == 0)
        rc = add_cols(b, "", cols, 0, n_cols);
    if (rc == 0)
        rc = tds_buf_addf(b, ") SELECT ");
    if (rc == 0)
        rc = add_cols(b, "s.", cols, 0, n_cols);
    if (rc == 0 && !stg)
        rc = tds_buf_addf(b, " FROM ");
    if (rc == 0 && !stg)
        rc = tds_sqlgen_unnest_rows(b, child, cols, n_cols);
    if (rc == 0 && stg)
        rc = tds_buf_addf(b, " FROM %s s", stg);
    return rc;
}

int tds_sqlgen_child_insert_if_written(struct tds_buf *b, const struct tds_table *child,
                                       const struct tds_table *parent, char *const *cols,
                                       size_t n_cols)
{
    int k = (int)n_cols + 4;
    int rc = child_insert_head(b, NULL, child, cols, n_cols);

    if (rc == 0)
        rc = tds_buf_addf(b, " WHERE s.org_id = $%d AND s.\"%s\" = $%d AND s._m = $%d::int AND ",
                          k, child->id_column, k + 1, k + 2);
    return rc ? rc : add_written(b, parent, k, k + 1, k + 3);
}

int tds_sqlgen_notify_if_written(struct tds_buf *b, const struct tds_table *t)
{
    int rc = tds_buf_addf(b, "SELECT pg_notify('tds_changes', $1) WHERE ");

    return rc ? rc : add_written(b, t, 2, 3, 4);
}

int tds_sqlgen_child_insert(struct tds_buf *b, const char *stg, const struct tds_table *child,
                            char *const *cols, size_t n_cols, bool direct)
{
    /* direct: the child rows are $1..$(n_cols + 3), the parents after them */
    size_t k = direct ? n_cols + 4 : 1;
    int rc = child_insert_head(b, direct ? NULL : stg, child, cols, n_cols);

    if (rc == 0)
        rc = tds_buf_addf(b, " JOIN unnest($%zu::text[], $%zu::text[], $%zu::int[]) "
                             "AS w(org_id, id, _m) ON s.org_id = w.org_id "
                             "AND s.\"%s\" = w.id AND s._m = w._m",
                          k, k + 1, k + 2, child->id_column);
    return rc;
}

int tds_sqlgen_lookup(struct tds_buf *b, const struct tds_table *t)
{
    int rc = tds_buf_addf(b, "SELECT k.n, coalesce(");

    if (rc == 0)
        rc = add_guard(b, "k");
    if (rc == 0)
        rc = tds_buf_addf(b, ", false) FROM unnest($1::text[], $2::text[], $3::timestamptz[], "
                             "$4::text[], $5::boolean[], $6::timestamptz[]) WITH ORDINALITY "
                             "AS k(o, i, modified_time, content_hash, is_detail, observed_at, n) "
                             "JOIN zoho.\"%s\" t ON t.org_id = k.o AND t.\"%s\" = k.i",
                          t->name, t->id_column);
    return rc;
}
