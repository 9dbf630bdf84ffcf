/* transform — parse, dispatch to the entity transform, stage, hash, commit.
 *
 * Owns the per-record arena, the staged rows and the lookup from (table,
 * kind, columns) to the sets of the rows message being filled. It never logs,
 * never touches sockets, and never keeps anything of a record after the next
 * one starts.
 *
 * content_hash: the first 128 bits (hex) of SHA-256 over the row's table,
 * kind, present-column mask and every value except raw and content_hash,
 * followed by its child rows. With SHA-NI this is well under a microsecond per
 * record; equal transformed values give equal hashes whatever the JSON key
 * order or spacing was.
 */
#include "transform.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "jscan.h"
#include "pjson.h"
#include "tx.h"
#include "util.h"
#include "value.h"

#define MAX_SETS 32
#define REJECT_RAW_MAX (1024u * 1024u)

struct set_key {
    const struct tds_table *tbl;
    enum tds_rowset_kind kind;
    uint64_t mask;
    size_t idx;
};

struct tds_transform {
    struct tx tx;
    EVP_MD_CTX *md;
    struct tds_msg_rows *r;
    struct set_key sets[MAX_SETS];
    size_t n_sets;
};

static void colmaps_build(void);

struct entity_ops {
    const char *name;
    int (*fn)(struct tx *t, const struct tds_pjson *rec);
    bool (*looks_detail)(const struct tds_pjson *rec);
};

static const struct entity_ops ops[] = {
    {"items", tx_items, tx_items_looks_detail},
    {"item_groups", tx_item_groups, tx_item_groups_looks_detail},
    {"warehouses", tx_warehouses, NULL},
    {"contacts", tx_contacts, tx_contacts_looks_detail},
    {"invoices", tx_invoices, tx_invoices_looks_detail},
    {"sales_orders", tx_sales_orders, tx_sales_orders_looks_detail},
};

static const struct entity_ops *ops_for(const struct tds_entity *e)
{
    for (size_t i = 0; i < TDS_ARRAY_SIZE(ops); i++)
        if (strcmp(ops[i].name, e->name) == 0)
            return &ops[i];
    return NULL;
}

int tds_transform_new(struct tds_transform **out)
{
    struct tds_transform *t = calloc(1, sizeof(*t));
    int rc = -ENOMEM;

    if (!t)
        return -ENOMEM;
    if ((rc = tds_pjson_arena_new(&t->tx.arena)) < 0)
        goto fail;
    rc = -ENOMEM;
    if (!(t->md = EVP_MD_CTX_new()))
        goto fail;
    colmaps_build();
    *out = t;
    return 0;
fail:
    tds_transform_free(t);
    return rc;
}

struct tds_transform *tds_transform_free(struct tds_transform *t)
{
    if (!t)
        return NULL;
    tds_pjson_arena_free(t->tx.arena);
    EVP_MD_CTX_free(t->md);
    free(t->tx.rows);
    free(t);
    return NULL;
}

void tds_transform_begin(struct tds_transform *t, struct tds_msg_rows *r)
{
    t->r = r;
    t->n_sets = 0;
}

void tds_transform_set_tz(struct tds_transform *t, const char *tz)
{
    t->tx.tz = tz;
}

/* ---- helpers for entity transforms (tx.h) ---- */

int tx_fail(struct tx *t, const char *cls, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(t->reason, sizeof(t->reason), fmt, ap);
    va_end(ap);
    /* a reason cut at the buffer's end must not end inside a character: it
     * is stored as text (tds.rejected.reason) */
    tds_utf8_trim(t->reason);
    t->reason_class = cls;
    return TX_REJECT;
}

char *tx_dup(struct tx *t, const char *p, size_t n)
{
    char *o = tds_pjson_alloc(t->arena, n + 1);
    if (!o)
        return NULL;
    memcpy(o, p, n);
    o[n] = '\0';
    return o;
}

/* The path is formatted only when a reason needs it: records are valid far
 * more often than not. */
void tx_path_set(struct tx *t, const char *array, size_t i)
{
    t->path_array = array;
    t->path_index = i;
    t->path_len = 1;
    t->path[0] = '\0';
}

void tx_path_key(struct tx *t, const char *key)
{
    t->path_array = key;
    t->path_index = SIZE_MAX;
    t->path_len = 1;
    t->path[0] = '\0';
}

void tx_path_clear(struct tx *t)
{
    t->path[0] = '\0';
    t->path_len = 0;
    t->path_array = NULL;
}

const char *tx_path(struct tx *t)
{
    if (!t->path_len)
        return "";
    if (t->path_index == SIZE_MAX)
        snprintf(t->path, sizeof(t->path), "%s.", t->path_array);
    else
        snprintf(t->path, sizeof(t->path), "%s[%zu].", t->path_array, t->path_index);
    return t->path;
}

/* "<prefix><key>" for reasons, in a caller buffer. */
static const char *field_name(struct tx *t, const char *key, char *buf, size_t len)
{
    if (!t->path_len)
        return key;
    snprintf(buf, len, "%s%s", tx_path(t), key);
    return buf;
}

/* Column name → index per table: open addressing over 128 slots, built once
 * (tables are static). Matching JSON keys to columns is the hot path of a
 * record, so it is one hash probe instead of a scan with strcmp. */
#define COLMAP_SLOTS 128
#define MAX_TABLES 32

struct colmap {
    const struct tds_table *tbl;
    signed char slot[COLMAP_SLOTS];
};

static struct colmap colmaps[MAX_TABLES];
static size_t n_colmaps;

/* Length and three sampled bytes: O(1) per key and enough to spread the few
 * dozen column names of a table over 128 slots. */
static uint32_t hash_key(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    return (uint32_t)n * 31u + (unsigned char)s[0] * 7u + (unsigned char)s[n - 1] * 13u +
           (unsigned char)s[n / 2] * 5u + (unsigned char)s[n * 3 / 4];
}

static void colmaps_build(void)
{
    if (n_colmaps)
        return;
    for (size_t t = 0; t < tds_table_count() && t < MAX_TABLES; t++) {
        struct colmap *m = &colmaps[t];
        m->tbl = tds_table_at(t);
        memset(m->slot, -1, sizeof(m->slot));
        for (size_t i = 0; i < m->tbl->n_cols; i++) {
            const char *name = m->tbl->cols[i].name;
            uint32_t h = hash_key(name, strlen(name)) & (COLMAP_SLOTS - 1);
            while (m->slot[h] >= 0)
                h = (h + 1) & (COLMAP_SLOTS - 1);
            m->slot[h] = (signed char)i;
        }
    }
    n_colmaps = tds_table_count() < MAX_TABLES ? tds_table_count() : MAX_TABLES;
}

static const struct colmap *colmap_of(const struct tds_table *tbl)
{
    for (size_t i = 0; i < n_colmaps; i++)
        if (colmaps[i].tbl == tbl)
            return &colmaps[i];
    return NULL;
}

static int colmap_find(const struct colmap *m, const char *key, size_t n)
{
    uint32_t h = hash_key(key, n) & (COLMAP_SLOTS - 1);
    while (m->slot[h] >= 0) {
        const char *name = m->tbl->cols[m->slot[h]].name;
        if (name[0] == key[0] && strncmp(name, key, n) == 0 && name[n] == '\0')
            return m->slot[h];
        h = (h + 1) & (COLMAP_SLOTS - 1);
    }
    return -1;
}

int tx_colidx(const struct tds_table *tbl, const char *col)
{
    const struct colmap *m = colmap_of(tbl);
    int i = m ? colmap_find(m, col, strlen(col)) : -1;
    assert(i >= 0 && "unknown column");
    return i;
}

static struct tx_row *new_row(struct tx *t, const char *table, enum tds_rowset_kind kind,
                              size_t lead, size_t *row)
{
    const struct tds_table *tbl = NULL;
    struct tx_row *r;

    /* the last table used is by far the likeliest */
    if (t->n_rows && strcmp(t->rows[t->n_rows - 1].tbl->name, table) == 0)
        tbl = t->rows[t->n_rows - 1].tbl;
    else
        tbl = tds_table_find(table);

    assert(tbl && tbl->n_cols <= TX_MAX_COLS);
    if (!tbl)
        return NULL;
    if (t->n_rows == t->cap_rows) {
        size_t cap = t->cap_rows ? t->cap_rows * 2 : 64;
        struct tx_row *n = realloc(t->rows, cap * sizeof(*n));
        if (!n)
            return NULL;
        t->rows = n;
        t->cap_rows = cap;
    }
    r = &t->rows[t->n_rows];
    r->tbl = tbl;
    r->kind = kind;
    r->present = 0;
    r->top = t->n_rows;
    r->v = tds_pjson_alloc(t->arena, (lead + tbl->n_cols) * sizeof(*r->v));
    if (!r->v)
        return NULL;
    memset(r->v, 0, (lead + tbl->n_cols) * sizeof(*r->v));
    *row = t->n_rows++;
    return r;
}

static size_t lead_of(const struct tx_row *r)
{
    return r->kind == TDS_ROWS_CHILD ? TX_CHILD_LEAD : TX_TOP_LEAD;
}

int tx_top(struct tx *t, const char *table, enum tds_rowset_kind kind,
           const struct tds_pjson *rec, const char *id_key, const char *mod_key, size_t *row)
{
    struct tds_value_err e = {t->reason, sizeof(t->reason)};
    struct tds_bytes id, mod = {0};
    char fb[224];
    int rc;

    if (rec->type != TDS_PJ_OBJECT)
        return tx_fail(t, "wrong_type", "%sexpected an object", tx_path(t));
    if ((rc = tds_value_id(tds_pjson_get(rec, id_key), &id, id_key, &e)) != 0) {
        if (rc > 0 && t->path_len)
            tds_value_id(tds_pjson_get(rec, id_key), &id, field_name(t, id_key, fb, sizeof(fb)), &e);
        t->reason_class = "invalid_id";
        return rc < 0 ? rc : TX_REJECT;
    }
    if (!id.p)
        return tx_fail(t, "missing_id", "missing %s%s", tx_path(t), id_key);
    if (!t->zoho_id.p)
        t->zoho_id = id;
    if (mod_key &&
        (rc = tds_value_timestamp(t->arena, tds_pjson_get(rec, mod_key), t->tz, &mod, mod_key,
                              &e)) != 0) {
        if (rc > 0 && t->path_len)
            tds_value_timestamp(t->arena, tds_pjson_get(rec, mod_key), t->tz, &mod,
                                field_name(t, mod_key, fb, sizeof(fb)), &e);
        t->reason_class = "invalid_timestamp";
        return rc < 0 ? rc : TX_REJECT;
    }
    struct tx_row *r = new_row(t, table, kind, TX_TOP_LEAD, row);
    if (!r)
        return -ENOMEM;
    r->v[0].p = (char *)t->org;
    r->v[0].n = strlen(t->org);
    r->v[1] = id;
    r->v[2] = mod;
    r->v[3].p = (char *)rec->raw;
    r->v[3].n = rec->raw_len;
    /* v[4] content_hash at commit */
    r->v[5].p = kind == TDS_ROWS_DETAIL ? "true" : "false";
    r->v[5].n = kind == TDS_ROWS_DETAIL ? 4 : 5;
    t->last_top = *row;
    return 0;
}

int tx_child(struct tx *t, const char *table, size_t top, size_t *row)
{
    /* children follow their top row, before the next top row opens
     * (content_hash() relies on it) */
    assert(top == t->last_top && t->rows[top].kind != TDS_ROWS_CHILD);
    struct tx_row *r = new_row(t, table, TDS_ROWS_CHILD, TX_CHILD_LEAD, row);
    if (!r)
        return -ENOMEM;
    r->top = top;
    r->v[0] = t->rows[top].v[0];
    r->v[1] = t->rows[top].v[1];
    return 0;
}

void tx_set(struct tx *t, size_t row, const char *col, const char *p, size_t n)
{
    struct tx_row *r = &t->rows[row];
    int i = tx_colidx(r->tbl, col);
    if (i < 0)
        return;
    r->v[lead_of(r) + (size_t)i].p = (char *)p;
    r->v[lead_of(r) + (size_t)i].n = p ? n : 0;
    r->present |= 1ull << i;
}

static bool is_ref(const char *col)
{
    size_t n = strlen(col);
    return n > 3 && strcmp(col + n - 3, "_id") == 0;
}

static int convert_as(struct tx *t, struct tx_row *r, int i, const struct tds_pjson *v,
                      const char *field);

/* Convert with the bare key as field name; only a failure (rare) pays for
 * formatting the full path ("line_items[3].rate") into the reason. */
static int convert(struct tx *t, struct tx_row *r, int i, const struct tds_pjson *v,
                   const char *key)
{
    char fb[224];
    int rc = convert_as(t, r, i, v, key);
    if (rc > 0 && t->path_len)
        convert_as(t, r, i, v, field_name(t, key, fb, sizeof(fb)));
    return rc;
}

static int convert_as(struct tx *t, struct tx_row *r, int i, const struct tds_pjson *v,
                      const char *field)
{
    struct tds_value_err e = {t->reason, sizeof(t->reason)};
    struct tds_bytes *out = &r->v[lead_of(r) + (size_t)i];
    const struct tds_column *c = &r->tbl->cols[i];
    int rc = 0;

    switch (c->type) {
    case TDS_T_TEXT:
        rc = tds_value_text(v, is_ref(c->name), out, field, &e);
        t->reason_class = rc == TDS_VALUE_E_ID ? "invalid_id" : "wrong_type";
        break;
    case TDS_T_NUMERIC:
        rc = tds_value_numeric(v, out, field, &e);
        t->reason_class = "invalid_number";
        break;
    case TDS_T_INT:
        rc = tds_value_int(v, out, field, &e);
        t->reason_class = "invalid_integer";
        break;
    case TDS_T_BOOL:
        rc = tds_value_bool(v, out, field, &e);
        t->reason_class = "invalid_boolean";
        break;
    case TDS_T_TIMESTAMPTZ:
        rc = tds_value_timestamp(t->arena, v, t->tz, out, field, &e);
        t->reason_class = "invalid_timestamp";
        break;
    case TDS_T_DATE:
        rc = tds_value_date(v, out, field, &e);
        t->reason_class = "invalid_date";
        break;
    case TDS_T_JSONB:
        /* jsonb columns are computed by entity code; a plain JSON value is
         * copied verbatim (it parsed, so it is valid jsonb: pjson refuses
         * what jsonb cannot hold, numbers out of numeric's range included). */
        if (!v || v->type == TDS_PJ_NULL) {
            out->p = NULL;
            out->n = 0;
        } else {
            out->p = (char *)v->raw;
            out->n = v->raw_len;
        }
        break;
    }
    if (rc < 0)
        return rc;
    return rc ? TX_REJECT : 0;
}

int tx_col_value(struct tx *t, size_t row, const char *col, const struct tds_pjson *v,
                 const char *field, bool present)
{
    struct tx_row *r = &t->rows[row];
    int i = tx_colidx(r->tbl, col);

    if (i < 0)
        return -EINVAL;
    if (present)
        r->present |= 1ull << i;
    return convert(t, r, i, v, field);
}

int tx_col(struct tx *t, size_t row, const char *col, const struct tds_pjson *obj,
           const char *key)
{
    const struct tds_pjson *v = tds_pjson_get(obj, key);
    return tx_col_value(t, row, col, v, key, v != NULL);
}

int tx_cols(struct tx *t, size_t row, const struct tds_pjson *obj, const char *const *skip)
{
    struct tx_row *r = &t->rows[row];
    const struct colmap *m = colmap_of(r->tbl);
    uint64_t skipped = 0, done = 0;
    int rc;

    if (!m || !obj || obj->type != TDS_PJ_OBJECT)
        return 0;
    for (const char *const *s = skip; s && *s; s++) {
        int i = colmap_find(m, *s, strlen(*s));
        if (i >= 0)
            skipped |= 1ull << i;
    }
    /* Walk the members backwards so the last of duplicate keys wins, as in
     * tds_pjson_get and jsonb; each column is converted once. */
    for (uint32_t k = obj->n; k-- > 0;) {
        const struct tds_pjson_member *mem = &obj->u.members[k];
        if (mem->klen == 0 || mem->klen > 64)
            continue;
        int i = colmap_find(m, mem->key, mem->klen);
        if (i < 0 || ((skipped | done) & (1ull << i)))
            continue;
        done |= 1ull << i;
        r->present |= 1ull << i;
        if ((rc = convert(t, r, i, &mem->v, r->tbl->cols[i].name)) != 0)
            return rc;
    }
    return 0;
}

int tx_child_id(struct tx *t, size_t row, const char *col, const struct tds_pjson *obj,
                const char *key)
{
    struct tds_value_err e = {t->reason, sizeof(t->reason)};
    struct tx_row *r = &t->rows[row];
    char fb[224];
    int i = tx_colidx(r->tbl, col);
    int rc;

    if (i < 0)
        return -EINVAL;
    struct tds_bytes *out = &r->v[lead_of(r) + (size_t)i];
    const struct tds_pjson *v = tds_pjson_get(obj, key);
    if ((rc = tds_value_id(v, out, key, &e)) != 0) {
        if (rc > 0 && t->path_len)
            tds_value_id(v, out, field_name(t, key, fb, sizeof(fb)), &e);
        t->reason_class = "invalid_id";
        return rc < 0 ? rc : TX_REJECT;
    }
    if (!out->p)
        return tx_fail(t, "missing_id", "missing %s", field_name(t, key, fb, sizeof(fb)));
    r->present |= 1ull << i;
    return 0;
}

/* A row's key for the duplicate checks; idx keeps row order among equals. */
struct ukey {
    const struct tds_table *tbl;
    size_t top, idx;
    const char *p;
    size_t n;
};

static int ukey_cmp(const void *x, const void *y)
{
    const struct ukey *a = x, *b = y;
    if (a->tbl != b->tbl)
        return (uintptr_t)a->tbl < (uintptr_t)b->tbl ? -1 : 1;
    if (a->top != b->top)
        return a->top < b->top ? -1 : 1;
    int c = tds_bytes_cmp(a->p, a->n, b->p, b->n);
    if (c != 0)
        return c;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static bool ukey_same(const struct ukey *a, const struct ukey *b)
{
    return a->tbl == b->tbl && a->top == b->top && a->n == b->n && memcmp(a->p, b->p, a->n) == 0;
}

static int unique_fail(struct tx *t, const char *col, const struct tds_bytes *v, const char *what)
{
    return tx_fail(t, "duplicate_key", "duplicate %s '%.*s' in %s", col,
                   (int)tds_utf8_prefix(v->p, v->n, 64), v->p, what);
}

/* Of the m keys k[] (in row order), the first one that a later key of the
 * same table and top row repeats, or NULL. Sorted, not pairwise: an invoice
 * may carry tens of thousands of lines and an item group tens of thousands
 * of variants, and the pairwise check took seconds for one such record. A
 * few keys (a few stock rows or persons) cost less compared in pairs. */
static const struct ukey *first_repeated(struct ukey *k, size_t m)
{
    size_t best = SIZE_MAX;

    if (m <= 16) {
        for (size_t i = 0; i < m; i++)
            for (size_t j = i + 1; j < m; j++)
                if (ukey_same(&k[i], &k[j]))
                    return &k[i];
        return NULL;
    }
    qsort(k, m, sizeof(*k), ukey_cmp);
    /* each run of equal keys starts with its first row; the run whose first
     * row comes first is the one the pairwise check finds */
    for (size_t i = 0; i + 1 < m;) {
        size_t j = i + 1;
        while (j < m && ukey_same(&k[i], &k[j]))
            j++;
        if (j > i + 1 && (best == SIZE_MAX || k[i].idx < k[best].idx))
            best = i;
        i = j;
    }
    return best == SIZE_MAX ? NULL : &k[best];
}

int tx_check_unique(struct tx *t, size_t first_row, const char *col, const char *what)
{
    size_t n = 0, m = 0;
    for (size_t i = first_row; i < t->n_rows; i++)
        n += t->rows[i].kind == TDS_ROWS_CHILD;
    if (n < 2)
        return 0;
    struct ukey *k = tds_pjson_alloc(t->arena, n * sizeof(*k));
    if (!k)
        return -ENOMEM;
    for (size_t i = first_row; i < t->n_rows; i++) {
        struct tx_row *a = &t->rows[i];
        if (a->kind != TDS_ROWS_CHILD)
            continue;
        const struct tds_bytes *va = &a->v[TX_CHILD_LEAD + (size_t)tx_colidx(a->tbl, col)];
        if (va->p)
            k[m++] = (struct ukey){a->tbl, a->top, i, va->p, va->n};
    }
    const struct ukey *d = first_repeated(k, m);
    return d ? unique_fail(t, col, &(struct tds_bytes){(char *)d->p, d->n}, what) : 0;
}

int tx_check_unique_ids(struct tx *t, size_t first_row, const char *what)
{
    size_t n = 0, m = 0;
    for (size_t i = first_row; i < t->n_rows; i++)
        n += t->rows[i].kind != TDS_ROWS_CHILD;
    if (n < 2)
        return 0;
    struct ukey *k = tds_pjson_alloc(t->arena, n * sizeof(*k));
    if (!k)
        return -ENOMEM;
    for (size_t i = first_row; i < t->n_rows; i++) {
        struct tx_row *a = &t->rows[i];
        if (a->kind != TDS_ROWS_CHILD)
            k[m++] = (struct ukey){a->tbl, 0, i, a->v[1].p, a->v[1].n};
    }
    const struct ukey *d = first_repeated(k, m);
    return d ? unique_fail(t, d->tbl->id_column, &(struct tds_bytes){(char *)d->p, d->n}, what)
             : 0;
}

/* A key a custom field may take, as decoded text (or a number's lexeme):
 * its label (rank 0), its api_name (1) or its customfield_id (2). */
struct cf_cand {
    const char *s;
    uint32_t n, field, rank;
};

#define CF_RANKS 3
#define CF_NONE UINT32_MAX

static int cf_cand_cmp(const void *x, const void *y)
{
    const struct cf_cand *a = x, *b = y;
    int c = tds_bytes_cmp(a->s, a->n, b->s, b->n);
    if (c != 0)
        return c;
    if (a->field != b->field)
        return a->field < b->field ? -1 : 1;
    return a->rank < b->rank ? -1 : a->rank > b->rank;
}

/* customfield_id as a key: a string that is not blank, or a JSON integer
 * (Zoho's examples print ids bare); written as a JSON string either way. */
static bool cf_id_usable(const struct tds_pjson *v)
{
    if (!v)
        return false;
    if (v->type == TDS_PJ_STRING) {
        for (uint32_t i = 0; i < v->n; i++)
            if (v->s[i] != ' ')
                return true;
        return false;
    }
    if (v->type != TDS_PJ_NUMBER || v->n == 0)
        return false;
    for (uint32_t i = 0; i < v->n; i++)
        if (v->s[i] < '0' || v->s[i] > '9')
            return false;
    return true;
}

/* The key of each custom field, unique as jsonb compares keys (decoded
 * text), so that no field hides another: jsonb keeps the last of two equal
 * keys, and the first field's value was lost without a trace.
 *   1. Each label is the key of the first field that has it (in field order).
 *   2. Every other field (a label an earlier field has, or no label) takes, in
 *      field order, the first of its api_name and its customfield_id that no
 *      label of step 1 and no earlier field of step 2 has taken.
 *   3. A field left without a key rejects the record (duplicate_key).
 * A field with neither a label nor an api_name rejects it too, as before.
 * keys[i] is the token to write, quote[i] whether it is a bare number to
 * quote. The candidates are sorted once to find equal texts: scanning the
 * earlier fields for each one took 11 s for the 32,110 fields a 1 MiB
 * record can hold. Returns 0, TX_REJECT or -ENOMEM. */
static int custom_keys(struct tx *t, const struct tds_pjson *cf, const struct tds_pjson ***out,
                       bool **quote_out)
{
    size_t nc = (size_t)cf->n * CF_RANKS;
    const struct tds_pjson **keys = tds_pjson_alloc(t->arena, cf->n * sizeof(*keys));
    const struct tds_pjson **cand_v = tds_pjson_alloc(t->arena, nc * sizeof(*cand_v));
    bool *quote = tds_pjson_alloc(t->arena, cf->n * sizeof(*quote));
    struct cf_cand *c = tds_pjson_alloc(t->arena, nc * sizeof(*c));
    uint32_t *group = tds_pjson_alloc(t->arena, nc * sizeof(*group)); /* by field * rank */
    bool *taken;
    uint32_t m = 0;

    if (!keys || !cand_v || !quote || !c || !group)
        return -ENOMEM;
    for (uint32_t i = 0; i < cf->n; i++) {
        const struct tds_pjson *f = &cf->u.items[i];
        const struct tds_pjson *v[CF_RANKS] = {tds_pjson_get(f, "label"),
                                               tds_pjson_get(f, "api_name"),
                                               tds_pjson_get(f, "customfield_id")};

        keys[i] = NULL;
        quote[i] = false;
        for (uint32_t r = 0; r < 2; r++)
            if (v[r] && v[r]->type != TDS_PJ_STRING)
                v[r] = NULL;
        if (!cf_id_usable(v[2]))
            v[2] = NULL;
        if (!v[0] && !v[1]) /* also when the field is no object */
            return tx_fail(t, "wrong_type", "invalid custom field in field "
                           "'%scustom_fields[%u]': expected an object with a label", tx_path(t), i);
        for (uint32_t r = 0; r < CF_RANKS; r++) {
            cand_v[(size_t)i * CF_RANKS + r] = v[r];
            group[(size_t)i * CF_RANKS + r] = CF_NONE;
            if (v[r])
                c[m++] = (struct cf_cand){v[r]->s, v[r]->n, i, r};
        }
    }
    /* group[]: for each candidate, the index of the first sorted candidate
     * of the same text, which stands for that text in taken[] */
    qsort(c, m, sizeof(*c), cf_cand_cmp);
    for (uint32_t a = 0, g = 0; a < m; a++) {
        if (a > 0 && tds_bytes_cmp(c[a - 1].s, c[a - 1].n, c[a].s, c[a].n) != 0)
            g = a;
        group[(size_t)c[a].field * CF_RANKS + c[a].rank] = g;
    }
    if (!(taken = tds_pjson_alloc(t->arena, m ? m : 1)))
        return -ENOMEM;
    memset(taken, 0, m);
    for (uint32_t i = 0; i < cf->n; i++) {
        uint32_t g = group[(size_t)i * CF_RANKS];
        if (g != CF_NONE && !taken[g]) {
            taken[g] = true;
            keys[i] = cand_v[(size_t)i * CF_RANKS];
        }
    }
    for (uint32_t i = 0; i < cf->n; i++) {
        for (uint32_t r = 1; r < CF_RANKS && !keys[i]; r++) {
            uint32_t g = group[(size_t)i * CF_RANKS + r];
            if (g != CF_NONE && !taken[g]) {
                taken[g] = true;
                keys[i] = cand_v[(size_t)i * CF_RANKS + r];
                quote[i] = keys[i]->type == TDS_PJ_NUMBER;
            }
        }
        if (!keys[i]) {
            const struct tds_pjson *k = cand_v[(size_t)i * CF_RANKS];
            if (!k)
                k = cand_v[(size_t)i * CF_RANKS + 1];
            return tx_fail(t, "duplicate_key", "duplicate custom field key '%.*s' in field "
                           "'%scustom_fields[%u]': no api_name or customfield_id that no other "
                           "field has", (int)tds_utf8_prefix(k->s, k->n, 64), k->s, tx_path(t), i);
        }
    }
    *out = keys;
    *quote_out = quote;
    return 0;
}

int tx_custom_fields(struct tx *t, size_t row, const struct tds_pjson *rec)
{
    const struct tds_pjson *cf = tds_pjson_get(rec, "custom_fields");
    const struct tds_pjson **keys = NULL;
    bool *quote = NULL;
    size_t len = 2;
    int rc;

    if (!cf)
        return 0;
    if (cf->type == TDS_PJ_NULL) {
        tx_set(t, row, "custom_fields", NULL, 0);
        return 0;
    }
    if (cf->type != TDS_PJ_ARRAY)
        return tx_fail(t, "wrong_type", "invalid custom fields in field '%scustom_fields': "
                       "expected an array", tx_path(t));
    if ((rc = custom_keys(t, cf, &keys, &quote)) != 0)
        return rc;
    /* An object keyed by label (custom_keys()). Keys and values are the
     * source's JSON tokens, so escaping is kept. */
    for (uint32_t i = 0; i < cf->n; i++) {
        const struct tds_pjson *v = tds_pjson_get(&cf->u.items[i], "value");

        len += keys[i]->raw_len + 2 * quote[i] + 2 + (v ? v->raw_len : 4);
    }
    char *o = tds_pjson_alloc(t->arena, len + 1);
    size_t k = 0;
    if (!o)
        return -ENOMEM;
    o[k++] = '{';
    for (uint32_t i = 0; i < cf->n; i++) {
        const struct tds_pjson *key = keys[i];
        const struct tds_pjson *v = tds_pjson_get(&cf->u.items[i], "value");
        if (i)
            o[k++] = ',';
        if (quote[i])
            o[k++] = '"';
        memcpy(o + k, key->raw, key->raw_len);
        k += key->raw_len;
        if (quote[i])
            o[k++] = '"';
        o[k++] = ':';
        if (v) {
            memcpy(o + k, v->raw, v->raw_len);
            k += v->raw_len;
        } else {
            memcpy(o + k, "null", 4);
            k += 4;
        }
    }
    o[k++] = '}';
    o[k] = '\0';
    tx_set(t, row, "custom_fields", o, k);
    return 0;
}

/* ---- commit ---- */

static void hash_bytes(EVP_MD_CTX *md, const struct tds_bytes *b)
{
    unsigned char len[5];
    if (!b->p) {
        len[0] = 0xff;
        EVP_DigestUpdate(md, len, 1);
        return;
    }
    len[0] = 0;
    len[1] = (unsigned char)(b->n >> 24);
    len[2] = (unsigned char)(b->n >> 16);
    len[3] = (unsigned char)(b->n >> 8);
    len[4] = (unsigned char)b->n;
    EVP_DigestUpdate(md, len, 5);
    EVP_DigestUpdate(md, b->p, b->n);
}

static void hash_row(EVP_MD_CTX *md, const struct tx_row *r)
{
    unsigned char hdr[9];
    size_t lead = lead_of(r);

    EVP_DigestUpdate(md, r->tbl->name, strlen(r->tbl->name) + 1);
    hdr[0] = (unsigned char)r->kind;
    for (int i = 0; i < 8; i++)
        hdr[1 + i] = (unsigned char)(r->present >> (8 * i));
    EVP_DigestUpdate(md, hdr, sizeof(hdr));
    for (size_t i = 1; i < lead + r->tbl->n_cols; i++) {
        /* not content_hash; nor raw, but for a row without a modified time
         * (a warehouse): the guard then writes it only when the hash
         * differs, and a change to a field held only in raw would never
         * be written */
        if (lead == TX_TOP_LEAD && (i == 4 || (i == 3 && r->v[2].p)))
            continue;
        if (r->kind == TDS_ROWS_LIST && i >= lead && !(r->present & (1ull << (i - lead))))
            continue;
        hash_bytes(md, &r->v[i]);
    }
}

static int content_hash(struct tds_transform *tf, size_t top)
{
    struct tx *t = &tf->tx;
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dn = 0;

    if (EVP_DigestInit_ex(tf->md, EVP_sha256(), NULL) != 1)
        return -ENOMEM;
    hash_row(tf->md, &t->rows[top]);
    /* its child rows are the ones right after it (tx_child): looking further
     * made a group of 58,869 variants quadratic */
    for (size_t j = top + 1; j < t->n_rows && t->rows[j].kind == TDS_ROWS_CHILD; j++)
        hash_row(tf->md, &t->rows[j]);
    if (EVP_DigestFinal_ex(tf->md, d, &dn) != 1 || dn < 16)
        return -ENOMEM;
    char *hex = tds_pjson_alloc(t->arena, 33);
    if (!hex)
        return -ENOMEM;
    tds_hex(d, 16, hex);
    t->rows[top].v[4].p = hex;
    t->rows[top].v[4].n = 32;
    return 0;
}

static struct tds_msg_rowset *set_for(struct tds_transform *tf, const struct tds_table *tbl,
                                      enum tds_rowset_kind kind, uint64_t mask)
{
    struct tds_msg_rows *r = tf->r;
    const char *cols[TX_TOP_LEAD + TX_MAX_COLS];
    size_t n;

    for (size_t i = 0; i < tf->n_sets; i++)
        if (tf->sets[i].tbl == tbl && tf->sets[i].kind == kind && tf->sets[i].mask == mask)
            return &r->sets[tf->sets[i].idx];
    /* the writer stages a new session's DETAIL and CHILD sets before any
     * arrive (apply.c, prewarm()), from the same list */
    n = tds_table_set_cols(tbl, kind == TDS_ROWS_DETAIL || kind == TDS_ROWS_LIST,
                           kind == TDS_ROWS_DELETE ? 0
                           : kind == TDS_ROWS_LIST ? mask
                                                   : UINT64_MAX,
                           cols);
    struct tds_msg_rowset *s = tds_msg_rows_add_set(r, tbl->name, kind, cols, n);
    if (!s)
        return NULL;
    if (tf->n_sets < MAX_SETS) {
        tf->sets[tf->n_sets].tbl = tbl;
        tf->sets[tf->n_sets].kind = kind;
        tf->sets[tf->n_sets].mask = mask;
        tf->sets[tf->n_sets].idx = (size_t)(s - r->sets);
        tf->n_sets++;
    }
    return s;
}

static int commit(struct tds_transform *tf, size_t *n_rows)
{
    struct tx *t = &tf->tx;
    struct tds_bytes packed[TX_TOP_LEAD + TX_MAX_COLS];
    int rc;

    for (size_t i = 0; i < t->n_rows; i++)
        if (t->rows[i].kind != TDS_ROWS_CHILD && (rc = content_hash(tf, i)) < 0)
            return rc;
    for (size_t i = 0; i < t->n_rows; i++) {
        struct tx_row *row = &t->rows[i];
        const struct tds_bytes *vals = row->v;
        uint64_t mask = row->kind == TDS_ROWS_LIST ? row->present : 0;
        struct tds_msg_rowset *s = set_for(tf, row->tbl, row->kind, mask);
        if (!s)
            return -ENOMEM;
        if (row->kind == TDS_ROWS_LIST) {
            size_t n = 0;
            for (size_t k = 0; k < TX_TOP_LEAD; k++)
                packed[n++] = row->v[k];
            for (size_t k = 0; k < row->tbl->n_cols; k++)
                if (mask & (1ull << k))
                    packed[n++] = row->v[TX_TOP_LEAD + k];
            vals = packed;
        }
        if ((rc = tds_msg_rowset_add_row(s, vals)) < 0)
            return rc;
    }
    *n_rows = t->n_rows;
    return 0;
}

/* ---- records ---- */

static void tx_reset(struct tx *t, const struct tds_entity *e, const char *org)
{
    tds_pjson_arena_reset(t->arena);
    t->entity = e;
    t->org = org ? org : "";
    t->n_rows = 0;
    t->last_top = SIZE_MAX;
    tx_path_clear(t);
    t->reason[0] = '\0';
    t->reason_class = NULL;
    t->zoho_id.p = NULL;
    t->zoho_id.n = 0;
}

/* The id of a record rejected before its id was read (it did not parse: a
 * byte that is not UTF-8, a lone surrogate escape, a number out of range),
 * read by structure alone (jscan), so that tds.rejected says which record it
 * was; at the top level or, for a webhook body, in its record's object. Only
 * a well-formed id (tds_zoho_id_valid); *id NULL when there is none. 0 or
 * -ENOMEM. */
static int reject_id(struct tx *t, const struct tds_entity *e, const char *raw, size_t len,
                     char **id)
{
    char buf[TDS_ZOHO_ID_MAX + 1];
    struct tds_span sp;
    int rc = tds_json_scalar(raw, len, e->id_field, buf, sizeof(buf));

    *id = NULL;
    if (rc != 0 && e->detail_key && tds_json_member_span(raw, len, e->detail_key, &sp) == 0)
        rc = tds_json_scalar(raw + sp.off, sp.len, e->id_field, buf, sizeof(buf));
    if (rc != 0 || !tds_zoho_id_valid(buf, strlen(buf)))
        return 0;
    return (*id = tx_dup(t, buf, strlen(buf))) ? 0 : -ENOMEM;
}

/* raw for tds.rejected is text: invalid UTF-8 and NUL bytes become U+FFFD,
 * and anything past 1 MiB is cut. */
static int add_reject(struct tds_transform *tf, const struct tds_entity *e, const char *raw,
                      size_t len)
{
    struct tx *t = &tf->tx;
    const char *out = raw;
    size_t n = len > REJECT_RAW_MAX ? REJECT_RAW_MAX : len;
    char *id = NULL;

    if (!tds_utf8_valid(raw, n) || memchr(raw, '\0', n)) {
        char *o = tds_pjson_alloc(t->arena, n * 3 + 1);
        size_t k = 0;
        if (!o)
            return -ENOMEM;
        for (size_t i = 0; i < n;) {
            size_t l = 1;
            unsigned char c = (unsigned char)raw[i];
            if (c >= 0xc0 && c < 0xe0)
                l = 2;
            else if (c >= 0xe0 && c < 0xf0)
                l = 3;
            else if (c >= 0xf0 && c < 0xf8)
                l = 4;
            if (c != 0 && i + l <= n && (c < 0x80 || (c >= 0xc0 && tds_utf8_valid(raw + i, l)))) {
                memcpy(o + k, raw + i, l);
                k += l;
                i += l;
            } else {
                memcpy(o + k, "\xef\xbf\xbd", 3);
                k += 3;
                i += 1;
            }
        }
        o[k] = '\0';
        out = o;
        n = k;
    } else if (n < len) {
        while (n > 0 && ((unsigned char)raw[n] & 0xc0) == 0x80)
            n--; /* cut on a character boundary */
    }
    if (t->zoho_id.p && !(id = tx_dup(t, t->zoho_id.p, t->zoho_id.n)))
        return -ENOMEM;
    if (!id && e && reject_id(t, e, raw, len, &id) != 0)
        return -ENOMEM;
    return tds_msg_rows_add_reject(tf->r, e ? e->name : "", id, t->reason, out, n);
}

static const char *parse_class(int rc)
{
    switch (rc) {
    case TDS_PJ_E_DEPTH: return "too_deep";
    case TDS_PJ_E_UTF8: return "invalid_utf8";
    case TDS_PJ_E_NUL: return "invalid_text";
    case TDS_PJ_E_TOO_LARGE: return "too_large";
    case TDS_PJ_E_RANGE: return "invalid_number";
    default: return "invalid_json";
    }
}

static int finish(struct tds_transform *tf, const struct tds_entity *e, int rc,
                  const char *raw, size_t raw_len, struct tds_transform_result *res)
{
    struct tx *t = &tf->tx;

    if (rc < 0)
        return rc;
    if (rc == 0) {
        size_t n = 0;
        if ((rc = commit(tf, &n)) < 0)
            return rc;
        res->rows = n;
        return 0;
    }
    res->rejected = true;
    res->reason_class = t->reason_class ? t->reason_class : "invalid";
    return add_reject(tf, e, raw, raw_len);
}

static int run(struct tds_transform *tf, const struct tds_entity *e, const struct tds_pjson *rec,
               enum tds_form form)
{
    struct tx *t = &tf->tx;
    const struct entity_ops *o = ops_for(e);

    if (!o)
        return tx_fail(t, "unknown_entity", "no transform for entity '%s'", e->name);
    if (rec->type != TDS_PJ_OBJECT)
        return tx_fail(t, "wrong_type", "record is not a JSON object");
    if (!e->detail_path)
        form = TDS_FORM_DETAIL; /* the list is the complete record */
    else if (form == TDS_FORM_AUTO)
        form = o->looks_detail && o->looks_detail(rec) ? TDS_FORM_DETAIL : TDS_FORM_LIST;
    t->detail = form == TDS_FORM_DETAIL;
    return o->fn(t, rec);
}

static int parse(struct tds_transform *tf, const char *json, size_t len, struct tds_pjson **root)
{
    struct tx *t = &tf->tx;
    int rc = tds_pjson_parse(t->arena, json, len, root, t->reason, sizeof(t->reason));
    if (rc > 0)
        t->reason_class = parse_class(rc);
    return rc;
}

int tds_transform_record(struct tds_transform *tf, struct tds_msg_rows *r,
                         const struct tds_entity *e, const char *org, const char *json,
                         size_t len, enum tds_form form, struct tds_transform_result *res)
{
    struct tds_pjson *root = NULL;
    int rc;

    memset(res, 0, sizeof(*res));
    tf->r = r;
    tx_reset(&tf->tx, e, org);
    rc = parse(tf, json, len, &root);
    if (rc == 0)
        rc = run(tf, e, root, form);
    return finish(tf, e, rc, json, len, res);
}

/* The record inside a webhook body, or NULL with the reason set. */
static const struct tds_pjson *unwrap(struct tx *t, const struct tds_entity *e,
                                      const struct tds_pjson *root)
{
    const struct tds_pjson *rec = tds_pjson_get(root, e->detail_key);

    if (rec && rec->type == TDS_PJ_OBJECT)
        return rec;
    if (root->type == TDS_PJ_OBJECT && tds_pjson_get(root, e->id_field))
        return root;
    tx_fail(t, "wrong_type", "webhook body has no '%s' object", e->detail_key);
    return NULL;
}

int tds_transform_event_body(struct tds_transform *tf, struct tds_msg_rows *r,
                             const struct tds_entity *e, const char *org, const char *body,
                             size_t len, struct tds_transform_result *res)
{
    struct tds_pjson *root = NULL;
    const struct tds_pjson *rec;
    int rc;

    memset(res, 0, sizeof(*res));
    tf->r = r;
    tx_reset(&tf->tx, e, org);
    rc = parse(tf, body, len, &root);
    if (rc == 0)
        rc = (rec = unwrap(&tf->tx, e, root)) ? run(tf, e, rec, TDS_FORM_AUTO) : TX_REJECT;
    return finish(tf, e, rc, body, len, res);
}

int tds_transform_delete(struct tds_transform *tf, struct tds_msg_rows *r,
                         const struct tds_entity *e, const char *org, const char *zoho_id,
                         const char *body, size_t body_len, struct tds_transform_result *res)
{
    struct tx *t = &tf->tx;
    struct tds_value_err ve = {t->reason, sizeof(t->reason)};
    struct tds_pjson *root = NULL;
    const struct tds_pjson *idv = NULL;
    struct tds_pjson tmp;
    struct tds_bytes id = {0};
    int rc;

    memset(res, 0, sizeof(*res));
    tf->r = r;
    tx_reset(t, e, org);
    if (zoho_id) {
        memset(&tmp, 0, sizeof(tmp));
        tmp.type = TDS_PJ_STRING;
        tmp.s = zoho_id;
        tmp.n = (uint32_t)strnlen(zoho_id, TDS_VALUE_MAX_ID + 1);
        idv = &tmp;
    } else {
        const struct tds_pjson *rec;
        if ((rc = parse(tf, body ? body : "", body ? body_len : 0, &root)) != 0)
            return finish(tf, e, rc, body ? body : "", body ? body_len : 0, res);
        if (!(rec = unwrap(t, e, root)))
            return finish(tf, e, TX_REJECT, body, body_len, res);
        idv = tds_pjson_get(rec, e->id_field);
    }
    rc = tds_value_id(idv, &id, e->id_field, &ve);
    if (rc > 0)
        t->reason_class = "invalid_id";
    else if (rc == 0 && !id.p)
        rc = tx_fail(t, "missing_id", "missing %s", e->id_field);
    if (rc != 0) {
        rc = rc < 0 ? rc : TX_REJECT;
        return finish(tf, e, rc, body ? body : (zoho_id ? zoho_id : ""),
                      body ? body_len : (zoho_id ? strlen(zoho_id) : 0), res);
    }
    const struct tds_table *tbl = tds_table_find(e->table);
    struct tds_msg_rowset *s = tbl ? set_for(tf, tbl, TDS_ROWS_DELETE, 0) : NULL;
    if (!s)
        return -ENOMEM;
    struct tds_bytes vals[2] = {{(char *)t->org, strlen(t->org)}, id};
    if ((rc = tds_msg_rowset_add_row(s, vals)) < 0)
        return rc;
    res->rows = 1;
    return 0;
}
