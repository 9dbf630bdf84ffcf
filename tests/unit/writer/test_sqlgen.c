/* test_sqlgen — column checks and statement text generated from the registry. */
#include "../../assert.h"
#include "sqlgen.h"

#include <stdlib.h>
#include <string.h>

static char err[256];

static int check(const char *table, enum tds_rowset_kind kind, char *const *cols, size_t n)
{
    return tds_sqlgen_check(tds_table_find(table), kind, cols, n, err, sizeof(err));
}

static void test_check_columns(void)
{
    char *detail[] = {"org_id", "item_id", "modified_time", "raw", "content_hash", "is_detail",
                      "name", "sku", "rate"};
    char *bad_order[] = {"org_id", "item_id", "raw", "modified_time", "content_hash", "is_detail"};
    char *unknown[] = {"org_id", "item_id", "modified_time", "raw", "content_hash", "is_detail",
                       "colour"};
    char *twice[] = {"org_id", "item_id", "modified_time", "raw", "content_hash", "is_detail",
                     "sku", "sku"};
    char *del[] = {"org_id", "item_id", "modified_time"};
    char *del_bad[] = {"org_id", "item_id", "name"};
    char *child[] = {"org_id", "item_id", "warehouse_id", "stock_on_hand"};
    char *child_nokey[] = {"org_id", "item_id", "stock_on_hand"};
    char *wrong_id[] = {"org_id", "contact_id"};

    T_INT(check("items", TDS_ROWS_DETAIL, detail, 9), ==, 0);
    T_INT(check("items", TDS_ROWS_LIST, detail, 6), ==, 0);
    T_INT(check("items", TDS_ROWS_DETAIL, bad_order, 6), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "must be modified_time") != NULL);
    T_INT(check("items", TDS_ROWS_DETAIL, unknown, 7), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "unknown column colour") != NULL);
    T_INT(check("items", TDS_ROWS_DETAIL, twice, 8), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "column sku twice") != NULL);
    /* own columns in any order; a repeat found after a wrap-around too */
    char *shuffled[] = {"org_id", "item_id", "modified_time", "raw", "content_hash", "is_detail",
                        "rate", "name", "sku"};
    char *twice_apart[] = {"org_id", "item_id", "modified_time", "raw", "content_hash",
                           "is_detail", "sku", "rate", "name", "sku"};
    T_INT(check("items", TDS_ROWS_DETAIL, shuffled, 9), ==, 0);
    T_INT(check("items", TDS_ROWS_DETAIL, twice_apart, 10), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "column sku twice") != NULL);
    /* every registry column of every table, in registry order */
    for (size_t ti = 0; ti < tds_table_count(); ti++) {
        const struct tds_table *t = tds_table_at(ti);
        char *all[2 + 4 + 256];
        size_t n = 0;
        enum tds_rowset_kind kind = t->parent ? TDS_ROWS_CHILD : TDS_ROWS_DETAIL;

        all[n++] = "org_id";
        all[n++] = (char *)t->id_column;
        if (!t->parent) {
            all[n++] = "modified_time";
            all[n++] = "raw";
            all[n++] = "content_hash";
            all[n++] = "is_detail";
        }
        T_TRUE(t->n_cols <= 256);
        for (size_t c = 0; c < t->n_cols; c++)
            all[n++] = (char *)t->cols[c].name;
        T_INT(tds_sqlgen_check(t, kind, all, n, err, sizeof(err)), ==, 0);
    }
    T_INT(check("items", TDS_ROWS_DELETE, del, 2), ==, 0);
    T_INT(check("items", TDS_ROWS_DELETE, del, 3), ==, 0);
    T_INT(check("items", TDS_ROWS_DELETE, del_bad, 3), ==, TDS_E_INVALID);
    T_INT(check("item_stock", TDS_ROWS_CHILD, child, 4), ==, 0);
    T_INT(check("item_stock", TDS_ROWS_CHILD, child_nokey, 3), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "key column warehouse_id") != NULL);
    T_INT(check("items", TDS_ROWS_CHILD, child, 4), ==, TDS_E_INVALID);
    T_INT(check("item_stock", TDS_ROWS_DETAIL, detail, 6), ==, TDS_E_INVALID);
    T_INT(check("items", TDS_ROWS_DETAIL, wrong_id, 2), ==, TDS_E_INVALID);
}

static void test_coltypes(void)
{
    const struct tds_table *items = tds_table_find("items");
    const struct tds_table *stock = tds_table_find("item_stock");
    enum tds_coltype t;

    T_INT(tds_sqlgen_coltype(items, "raw", &t), ==, 0);
    T_INT(t, ==, TDS_T_JSONB);
    T_INT(tds_sqlgen_coltype(items, "rate", &t), ==, 0);
    T_INT(t, ==, TDS_T_NUMERIC);
    T_INT(tds_sqlgen_coltype(items, "item_id", &t), ==, 0);
    T_INT(t, ==, TDS_T_TEXT);
    T_INT(tds_sqlgen_coltype(stock, "is_detail", &t), ==, TDS_E_NOTFOUND);
    T_INT(tds_sqlgen_coltype(items, "nope", &t), ==, TDS_E_NOTFOUND);
}

/* The fetcher reads an entity's list figures from its table's columns of
 * the same name and compares them as numbers. */
static void test_list_figures(void)
{
    size_t n_fig = 0;

    for (size_t i = 0; i < tds_entity_count(); i++) {
        const struct tds_entity *e = tds_entity_at(i);
        const struct tds_table *t = tds_table_find(e->table);
        enum tds_coltype ty;

        for (const char *const *f = e->list_figures; f && *f; f++, n_fig++) {
            T_INT(tds_sqlgen_coltype(t, *f, &ty), ==, 0);
            T_INT(ty, ==, TDS_T_NUMERIC);
        }
    }
    T_INT(n_fig, ==, 8); /* the items' stock totals */
    T_TRUE(tds_entity_find("contacts")->list_figures == NULL);
}

#define GUARD(n)                                                                             \
    "CASE WHEN t.deleted_at IS NULL THEN (" n ".modified_time > t.modified_time OR "            \
    "(t.modified_time IS NULL AND " n ".modified_time IS NOT NULL)) OR (" n ".modified_time "   \
    "IS NOT DISTINCT FROM t.modified_time AND " n ".content_hash IS DISTINCT FROM "             \
    "t.content_hash AND (" n ".is_detail OR NOT t.is_detail) AND (" n ".observed_at IS NULL "   \
    "OR t.observed_at IS NULL OR " n ".observed_at >= t.observed_at)) WHEN " n ".observed_at "  \
    "IS NULL OR t.observed_at IS NULL THEN " n ".modified_time > t.modified_time OR "           \
    "(t.modified_time IS NULL AND " n ".modified_time IS NOT NULL) ELSE " n ".observed_at > "   \
    "t.observed_at AND (t.modified_time IS NULL OR " n ".modified_time >= t.modified_time) AND " \
    "(" n ".modified_time IS NULL OR " n ".modified_time > t.observed_at OR " n ".observed_at " \
    ">= " n ".modified_time + interval '1 second') END"
#define GUARD_EXCLUDED GUARD("EXCLUDED")
#define GUARD_K GUARD("k")

static const char *gen(int (*fn)(struct tds_buf *), struct tds_buf *b)
{
    tds_buf_reset(b);
    T_INT(fn(b), ==, 0);
    T_INT(tds_buf_add(b, "", 1), ==, 0);
    return b->p;
}

static char *const detail_cols[] = {"org_id", "item_id", "modified_time", "raw", "content_hash",
                                    "is_detail", "name", "rate"};

static int gen_staging(struct tds_buf *b)
{
    return tds_sqlgen_staging(b, "_tds_s1", tds_table_find("items"), detail_cols, 8);
}
static int gen_detail(struct tds_buf *b)
{
    return tds_sqlgen_upsert(b, "_tds_s1", tds_table_find("items"), TDS_ROWS_DETAIL, detail_cols,
                             8, true, TDS_SRC_STAGING);
}
static int gen_detail_direct(struct tds_buf *b)
{
    return tds_sqlgen_upsert(b, "_tds_s1", tds_table_find("items"), TDS_ROWS_DETAIL, detail_cols,
                             8, true, TDS_SRC_ARRAYS);
}
static int gen_detail_one_row(struct tds_buf *b)
{
    return tds_sqlgen_upsert(b, "_tds_s1", tds_table_find("items"), TDS_ROWS_DETAIL, detail_cols,
                             8, true, TDS_SRC_ROW);
}
static int gen_list(struct tds_buf *b)
{
    return tds_sqlgen_upsert(b, "_tds_s2", tds_table_find("items"), TDS_ROWS_LIST, detail_cols, 7,
                             false, TDS_SRC_STAGING);
}
static int gen_delete(struct tds_buf *b)
{
    return tds_sqlgen_upsert(b, "_tds_s3", tds_table_find("items"), TDS_ROWS_DELETE, detail_cols,
                             2, false, TDS_SRC_STAGING);
}
static int gen_lookup(struct tds_buf *b)
{
    return tds_sqlgen_lookup(b, tds_table_find("items"));
}
static int gen_collapse(struct tds_buf *b)
{
    return tds_sqlgen_collapse(b, "_tds_s1", tds_table_find("items"), TDS_ROWS_DETAIL, true);
}
static char *const child_cols[] = {"org_id", "item_id", "warehouse_id", "stock_on_hand"};
static int gen_child(struct tds_buf *b)
{
    return tds_sqlgen_child_insert(b, "_tds_s4", tds_table_find("item_stock"), child_cols, 4,
                                   false);
}
static int gen_child_direct(struct tds_buf *b)
{
    return tds_sqlgen_child_insert(b, "_tds_s4", tds_table_find("item_stock"), child_cols, 4,
                                   true);
}
static int gen_stage_insert(struct tds_buf *b)
{
    return tds_sqlgen_stage_insert(b, "_tds_s4", tds_table_find("item_stock"), child_cols, 4);
}
static int gen_child_delete(struct tds_buf *b)
{
    return tds_sqlgen_child_delete(b, tds_table_find("item_stock"), false);
}
static int gen_child_delete_one(struct tds_buf *b)
{
    return tds_sqlgen_child_delete(b, tds_table_find("item_stock"), true);
}
static int gen_child_delete_if_written(struct tds_buf *b)
{
    return tds_sqlgen_child_delete_if_written(b, tds_table_find("item_stock"),
                                              tds_table_find("items"));
}
static int gen_child_insert_if_written(struct tds_buf *b)
{
    return tds_sqlgen_child_insert_if_written(b, tds_table_find("item_stock"),
                                              tds_table_find("items"), child_cols, 4);
}
static int gen_notify_if_written(struct tds_buf *b)
{
    return tds_sqlgen_notify_if_written(b, tds_table_find("items"));
}

static void test_statements(void)
{
    struct tds_buf b = {0};
    const char *s;

    s = gen(gen_staging, &b);
    T_STR(s, "CREATE TEMP TABLE IF NOT EXISTS _tds_s1 (_m integer, _r integer, _o timestamptz, "
             "\"org_id\" text, "
             "\"item_id\" text, \"modified_time\" timestamptz, \"raw\" jsonb, \"content_hash\" text, "
             "\"is_detail\" boolean, \"name\" text, \"rate\" numeric)");
    s = gen(gen_detail, &b);
    T_TRUE(strstr(s, "WITH w AS (INSERT INTO zoho.\"items\" AS t (") == s);
    T_TRUE(strstr(s, "ON CONFLICT (org_id, \"item_id\") DO UPDATE SET") != NULL);
    T_TRUE(strstr(s, "raw = EXCLUDED.raw") != NULL);
    T_TRUE(strstr(s, "\"rate\" = EXCLUDED.\"rate\"") != NULL);
    /* The guard: a live row takes a newer version, or one at the same time with
     * another hash, (detail or stored not detail), not observed earlier than the
     * stored version; a deleted row only a version observed after the delete and
     * not older (strictly newer when either observation is unknown). */
    T_TRUE(strstr(s, "WHERE " GUARD_EXCLUDED " RETURNING") != NULL);
    T_TRUE(strstr(s, ", _o, now(), NULL FROM _tds_s1") != NULL);
    T_TRUE(strstr(s, "observed_at = EXCLUDED.observed_at") != NULL);
    /* the written keys come back with the message index of the version written */
    T_TRUE(strstr(s, "RETURNING org_id, \"item_id\") SELECT w.org_id, w.\"item_id\", s._m FROM w "
                     "JOIN _tds_s1 s ON s.org_id = w.org_id AND s.\"item_id\" = w.\"item_id\"") != NULL);
    s = gen(gen_list, &b);
    T_TRUE(strstr(s, "WITH") == NULL);
    T_TRUE(strstr(s, "ELSE t.raw || EXCLUDED.raw END") != NULL);
    T_TRUE(strstr(s, "\"rate\"") == NULL); /* only the listed columns */
    s = gen(gen_delete, &b);
    T_TRUE(strstr(s, "NULL::timestamptz") != NULL);
    T_TRUE(strstr(s, "WITH w AS (INSERT INTO zoho.\"items\"") == s);
    T_TRUE(strstr(s, "deleted_at = COALESCE(t.deleted_at, now())") != NULL);
    /* a live row: a delete not older and not observed before it, or
     * observed from the start of the second of a version observed inside it
     * (a webhook's); a deleted row: only a later observation moves
     * observed_at on */
    T_TRUE(strstr(s, "WHERE CASE WHEN t.deleted_at IS NULL THEN (EXCLUDED.modified_time IS NULL "
                     "OR t.modified_time IS NULL OR EXCLUDED.modified_time >= t.modified_time) "
                     "AND (EXCLUDED.observed_at IS NULL OR t.observed_at IS NULL OR "
                     "EXCLUDED.observed_at >= t.observed_at OR (t.observed_at < t.modified_time "
                     "+ interval '1 second' AND EXCLUDED.observed_at >= t.modified_time)) "
                     "ELSE EXCLUDED.observed_at > "
                     "t.observed_at OR (t.observed_at IS NULL AND EXCLUDED.observed_at IS NOT "
                     "NULL) END") != NULL);
    /* only the rows this delete deleted come back */
    T_TRUE(strstr(s, "RETURNING org_id, \"item_id\", deleted_at = now() AS newly) "
                     "SELECT org_id, \"item_id\" FROM w WHERE newly") != NULL);
    /* a delete stores when it was observed; unknown stays unknown */
    T_TRUE(strstr(s, "(org_id, \"item_id\", modified_time, observed_at, deleted_at, synced_at) "
                     "SELECT org_id, \"item_id\", NULL::timestamptz, _o, now(), now() "
                     "FROM _tds_s3") != NULL);
    T_TRUE(strstr(s, "observed_at = CASE WHEN EXCLUDED.observed_at IS NOT NULL THEN "
                     "GREATEST(t.observed_at, EXCLUDED.observed_at) END") != NULL);
    /* the fast path asks the upsert's own guard */
    s = gen(gen_lookup, &b);
    T_STR(s, "SELECT k.n, coalesce(" GUARD_K ", false) FROM unnest($1::text[], $2::text[], "
             "$3::timestamptz[], $4::text[], $5::boolean[], $6::timestamptz[]) WITH ORDINALITY "
             "AS k(o, i, modified_time, content_hash, is_detail, observed_at, n) "
             "JOIN zoho.\"items\" t ON t.org_id = k.o AND t.\"item_id\" = k.i");
    s = gen(gen_collapse, &b);
    T_STR(s, "DELETE FROM _tds_s1 WHERE ctid NOT IN (SELECT DISTINCT ON (org_id, \"item_id\") ctid "
             "FROM _tds_s1 ORDER BY org_id, \"item_id\", modified_time DESC NULLS LAST, "
             "_o DESC NULLS LAST, is_detail DESC, _m DESC, _r DESC)");
    s = gen(gen_child, &b);
    T_STR(s, "INSERT INTO zoho.\"item_stock\" (\"org_id\", \"item_id\", \"warehouse_id\", "
             "\"stock_on_hand\") SELECT s.\"org_id\", s.\"item_id\", s.\"warehouse_id\", "
             "s.\"stock_on_hand\" FROM _tds_s4 s JOIN unnest($1::text[], $2::text[], $3::int[]) "
             "AS w(org_id, id, _m) ON s.org_id = w.org_id AND s.\"item_id\" = w.id "
             "AND s._m = w._m");
    /* a small group: the rows as typed arrays, no staging table */
    s = gen(gen_stage_insert, &b);
    T_STR(s, "INSERT INTO _tds_s4 SELECT * FROM unnest($1::integer[], $2::integer[], "
             "$3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::numeric[]) "
             "AS s(_m, _r, _o, \"org_id\", \"item_id\", \"warehouse_id\", \"stock_on_hand\")");
    s = gen(gen_child_direct, &b);
    T_STR(s, "INSERT INTO zoho.\"item_stock\" (\"org_id\", \"item_id\", \"warehouse_id\", "
             "\"stock_on_hand\") SELECT s.\"org_id\", s.\"item_id\", s.\"warehouse_id\", "
             "s.\"stock_on_hand\" FROM unnest($1::integer[], $2::integer[], $3::timestamptz[], "
             "$4::text[], $5::text[], $6::text[], $7::numeric[]) AS s(_m, _r, _o, \"org_id\", "
             "\"item_id\", \"warehouse_id\", \"stock_on_hand\") JOIN unnest($8::text[], "
             "$9::text[], $10::int[]) AS w(org_id, id, _m) ON s.org_id = w.org_id "
             "AND s.\"item_id\" = w.id AND s._m = w._m");
    s = gen(gen_detail_direct, &b);
    T_TRUE(strstr(s, "WITH s AS (SELECT * FROM unnest($1::integer[], $2::integer[], "
                     "$3::timestamptz[], $4::text[], $5::text[], $6::timestamptz[], $7::jsonb[], "
                     "$8::text[], $9::boolean[], $10::text[], $11::numeric[]) AS s(_m, _r, _o, "
                     "\"org_id\", ") == s);
    T_TRUE(strstr(s, "\"rate\")), w AS (INSERT INTO zoho.\"items\" AS t (") != NULL);
    T_TRUE(strstr(s, ", _o, now(), NULL FROM s ON CONFLICT") != NULL);
    T_TRUE(strstr(s, "FROM w JOIN s s ON s.org_id = w.org_id") != NULL);
    /* a lone record: the same upsert over one row of scalars, no arrays */
    {
        char *arrays = strdup(gen(gen_detail_direct, &b));
        const char *tail;

        T_TRUE(arrays != NULL);
        s = gen(gen_detail_one_row, &b);
        T_TRUE(strstr(s, "WITH s AS (SELECT $1::integer AS _m, $2::integer AS _r, "
                         "$3::timestamptz AS _o, $4::text AS \"org_id\", $5::text AS \"item_id\", "
                         "$6::timestamptz AS \"modified_time\", $7::jsonb AS \"raw\", "
                         "$8::text AS \"content_hash\", $9::boolean AS \"is_detail\", "
                         "$10::text AS \"name\", $11::numeric AS \"rate\"), w AS (") == s);
        T_TRUE(strstr(s, "[]") == NULL);
        /* from the CTE w on, the statement is the arrays' one */
        tail = strstr(arrays, "), w AS (");
        T_TRUE(tail != NULL && strstr(s, tail) != NULL);
        free(arrays);
    }
    s = gen(gen_child_delete, &b);
    T_STR(s, "DELETE FROM zoho.\"item_stock\" c USING unnest($1::text[], $2::text[]) "
             "AS w(org_id, id) WHERE c.org_id = w.org_id AND c.\"item_id\" = w.id");
    s = gen(gen_child_delete_one, &b);
    T_STR(s, "DELETE FROM zoho.\"item_stock\" WHERE org_id = $1 AND \"item_id\" = $2");
    /* a lone record in one round trip: written by this transaction, this version */
    s = gen(gen_child_delete_if_written, &b);
    T_STR(s, "DELETE FROM zoho.\"item_stock\" WHERE org_id = $1 AND \"item_id\" = $2 AND "
             "EXISTS (SELECT 1 FROM zoho.\"items\" p WHERE p.org_id = $1 AND p.\"item_id\" = $2 "
             "AND p.content_hash IS NOT DISTINCT FROM $3 "
             "AND p.xmin = pg_current_xact_id()::xid)");
    s = gen(gen_notify_if_written, &b);
    T_STR(s, "SELECT pg_notify('tds_changes', $1) WHERE EXISTS (SELECT 1 FROM zoho.\"items\" p "
             "WHERE p.org_id = $2 AND p.\"item_id\" = $3 AND p.content_hash IS NOT DISTINCT "
             "FROM $4 AND p.xmin = pg_current_xact_id()::xid)");
    s = gen(gen_child_insert_if_written, &b);
    T_TRUE(strstr(s, "INSERT INTO zoho.\"item_stock\" (") == s);
    T_TRUE(strstr(s, " FROM unnest($1::integer[], $2::integer[], $3::timestamptz[], ") != NULL);
    T_TRUE(strstr(s, " WHERE s.org_id = $8 AND s.\"item_id\" = $9 AND s._m = $10::int AND "
                     "EXISTS (SELECT 1 FROM zoho.\"items\" p WHERE p.org_id = $8 AND "
                     "p.\"item_id\" = $9 AND p.content_hash IS NOT DISTINCT FROM $11 AND "
                     "p.xmin = pg_current_xact_id()::xid)") != NULL);
    tds_buf_deinit(&b);
}

int main(void)
{
    T_RUN(test_check_columns);
    T_RUN(test_coltypes);
    T_RUN(test_list_figures);
    T_RUN(test_statements);
    return 0;
}
