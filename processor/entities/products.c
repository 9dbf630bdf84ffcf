/* products — items (with stock per site) and item groups (with variants).
 *
 * Maps Zoho item and item-group records onto zoho.items, zoho.item_stock and
 * zoho.item_groups. A detail item replaces its stock rows from `locations[]`
 * (newer organizations) or `warehouses[]` (older ones); a list item carries
 * only the columns present in the abbreviated record. An item group's detail
 * lists its variants, which become LIST rows of zoho.items so each variant's
 * link to its group exists even before the item itself is fetched.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tx.h"
#include "util.h"
#include "value.h"

#define TRY(x)                                                                       \
    do {                                                                             \
        int rc_ = (x);                                                               \
        if (rc_)                                                                     \
            return rc_;                                                              \
    } while (0)

/* A webhook's item (group) is a DETAIL, whose stock rows (variants) and
 * columns all replace the stored ones, only when it carries what Zoho's
 * detail always carries: the name, the status, the modified time (an item
 * its rate too; the list record has them, ZOHO.md §5.1) and the part its
 * child rows come from. A custom webhook body with less is written as LIST
 * (the columns it carries, nothing else) and the detail is fetched: as
 * DETAIL, {"item_id", "last_modified_time", "locations"} set name, sku and
 * rate to NULL. (customers.c says more.)
 * An empty list of stock sites is allowed: an item that tracks no stock (a
 * service, a non-inventory item) has none, and its whole record must stay a
 * DETAIL. The header fields are what tells it from a body with
 * `"locations": []` and little else, which as DETAIL deleted the stored
 * stock rows and NULLed every column it lacked. Likewise a group's `items`
 * may be empty (its variants are LIST rows of items, which a group's DETAIL
 * never deletes), but not its status. */
bool tx_items_looks_detail(const struct tds_pjson *rec)
{
    static const char *const always[] = {"name", "status", "rate", "last_modified_time", NULL};

    /* null is not there: taken for a list of stock sites, it would empty them */
    return tx_has_all(rec, always) && (tx_has(rec, "locations") || tx_has(rec, "warehouses"));
}

bool tx_item_groups_looks_detail(const struct tds_pjson *rec)
{
    static const char *const always[] = {"group_name", "status", "last_modified_time", NULL};
    const struct tds_pjson *items = tds_pjson_get(rec, "items");

    return tx_has_all(rec, always) && items && items->type == TDS_PJ_ARRAY;
}

/* Stock figures of one site entry: column ← "<prefix>_<column>", falling
 * back to the unprefixed name some shapes use. */
static const char *const stock_cols[] = {
    "stock_on_hand", "available_stock", "committed_stock", "available_for_sale_stock",
    "actual_stock_on_hand", "actual_available_stock", "actual_committed_stock",
    "actual_available_for_sale_stock",
};
static const char *const location_keys[] = {
    "location_stock_on_hand", "location_available_stock", "location_committed_stock",
    "location_available_for_sale_stock", "location_actual_stock_on_hand",
    "location_actual_available_stock", "location_actual_committed_stock",
    "location_actual_available_for_sale_stock",
};
static const char *const warehouse_keys[] = {
    "warehouse_stock_on_hand", "warehouse_available_stock", "warehouse_committed_stock",
    "warehouse_available_for_sale_stock", "warehouse_actual_stock_on_hand",
    "warehouse_actual_available_stock", "warehouse_actual_committed_stock",
    "warehouse_actual_available_for_sale_stock",
};

static int stock_rows(struct tx *t, size_t top, const struct tds_pjson *rec)
{
    const struct tds_pjson *locs = tds_pjson_get(rec, "locations");
    const struct tds_pjson *whs = tds_pjson_get(rec, "warehouses");
    const struct tds_pjson *arr = NULL;
    const char *pfx = NULL, *name = NULL, *id_key = NULL, *name_key = NULL;
    const char *const *keys = NULL;
    size_t first = t->n_rows;

    if (locs && locs->type != TDS_PJ_ARRAY && locs->type != TDS_PJ_NULL)
        return tx_fail(t, "wrong_type", "invalid stock sites in field 'locations': expected an array");
    if (whs && whs->type != TDS_PJ_ARRAY && whs->type != TDS_PJ_NULL)
        return tx_fail(t, "wrong_type", "invalid stock sites in field 'warehouses': expected an array");
    /* A migrated organization may send both; locations[] is the current one. */
    if (locs && locs->type == TDS_PJ_ARRAY && locs->n > 0) {
        arr = locs;
        pfx = "location";
        name = "locations";
        id_key = "location_id";
        name_key = "location_name";
        keys = location_keys;
    } else if (whs && whs->type == TDS_PJ_ARRAY) {
        arr = whs;
        pfx = "warehouse";
        name = "warehouses";
        id_key = "warehouse_id";
        name_key = "warehouse_name";
        keys = warehouse_keys;
    }
    if (!arr)
        return 0;
    for (uint32_t i = 0; i < arr->n; i++) {
        const struct tds_pjson *s = &arr->u.items[i];
        size_t c;
        tx_path_set(t, name, i);
        if (s->type != TDS_PJ_OBJECT)
            return tx_fail(t, "wrong_type", "invalid stock site in field '%s[%u]': expected an object",
                           name, i);
        TRY(tx_child(t, "item_stock", top, &c));
        TRY(tx_child_id(t, c, "warehouse_id", s, id_key));
        TRY(tx_col(t, c, "warehouse_name", s, name_key));
        tx_set(t, c, "site_kind", pfx, pfx[0] == 'l' ? 8 : 9);
        const struct tds_pjson *prim = tds_pjson_get(s, "is_primary");
        if (!prim)
            prim = tds_pjson_get(s, "is_primary_location");
        TRY(tx_col_value(t, c, "is_primary", prim, "is_primary", true));
        for (size_t k = 0; k < sizeof(stock_cols) / sizeof(stock_cols[0]); k++) {
            const struct tds_pjson *v = tds_pjson_get(s, keys[k]);
            const char *field = keys[k];
            if (!v && (v = tds_pjson_get(s, stock_cols[k])))
                field = stock_cols[k];
            TRY(tx_col_value(t, c, stock_cols[k], v, field, true));
        }
    }
    tx_path_clear(t);
    return tx_check_unique(t, first, "warehouse_id", name);
}

static const char *const item_skip[] = {"name", "custom_fields", NULL};

/* The columns of an item record (detail, list or a group's variant). */
static int item_cols(struct tx *t, size_t row, const struct tds_pjson *rec,
                     const char *const *skip)
{
    const struct tds_pjson *name = tds_pjson_get(rec, "name");

    TRY(tx_cols(t, row, rec, skip));
    if (!name)
        name = tds_pjson_get(rec, "item_name"); /* list records carry both */
    if (name)
        TRY(tx_col_value(t, row, "name", name, "name", true));
    return tx_custom_fields(t, row, rec);
}

int tx_items(struct tx *t, const struct tds_pjson *rec)
{
    size_t row;

    TRY(tx_top(t, "items", t->detail ? TDS_ROWS_DETAIL : TDS_ROWS_LIST, rec, "item_id",
               "last_modified_time", &row));
    TRY(item_cols(t, row, rec, item_skip));
    if (t->detail)
        TRY(stock_rows(t, row, rec));
    return 0;
}

/* ---- item groups ---- */

static bool nonblank_str(const struct tds_pjson *v)
{
    return v && v->type == TDS_PJ_STRING && !tds_value_blank(v->s, v->n);
}

/* An option of one variant (its decoded text) and the variant's index. */
struct opt {
    const char *s;
    uint32_t n, i;
};

static int opt_cmp(const void *x, const void *y)
{
    const struct opt *a = x, *b = y;
    int c = tds_bytes_cmp(a->s, a->n, b->s, b->n);
    if (c != 0)
        return c;
    return a->i < b->i ? -1 : a->i > b->i;
}

/* An option a variant has: a non-blank string, or a number (its text; the
 * variant's row stores it as text too, and attributes lists it as a string). */
static bool option(const struct tds_pjson *v)
{
    return nonblank_str(v) || (v && v->type == TDS_PJ_NUMBER);
}

/* first[i]: whether variant i's option `key` (option()) is the
 * first of its text among the variants. Sorted, not compared with every
 * earlier variant's: a 1 MiB group holds some 20,000 variants, and the
 * pairwise check took seconds. */
static int first_options(struct tx *t, const struct tds_pjson *items, const char *key,
                         bool *first)
{
    struct opt *o = tds_pjson_alloc(t->arena, items->n * sizeof(*o));
    uint32_t m = 0;

    if (!o)
        return -ENOMEM;
    memset(first, 0, items->n * sizeof(*first));
    for (uint32_t i = 0; i < items->n; i++) {
        const struct tds_pjson *v = tds_pjson_get(&items->u.items[i], key);
        if (option(v))
            o[m++] = (struct opt){v->s, v->n, i};
    }
    if (m <= 16) { /* in variant order; a few are compared in pairs */
        for (uint32_t a = 0; a < m; a++) {
            bool seen = false;
            for (uint32_t b = 0; b < a && !seen; b++)
                seen = o[a].n == o[b].n && memcmp(o[a].s, o[b].s, o[a].n) == 0;
            first[o[a].i] = !seen;
        }
        return 0;
    }
    qsort(o, m, sizeof(*o), opt_cmp);
    for (uint32_t a = 0; a < m; a++)
        first[o[a].i] = a == 0 || o[a].n != o[a - 1].n || memcmp(o[a].s, o[a - 1].s, o[a].n) != 0;
    return 0;
}

/* attributes jsonb: the group's own `attributes` array when it has one, else
 * [{"name": attribute_name<i>, "options": [distinct attribute_option_name<i>
 * of the variants, in order]}] for i = 1..3. */
static int attributes(struct tx *t, size_t row, const struct tds_pjson *rec,
                      const struct tds_pjson *items)
{
    const struct tds_pjson *own = tds_pjson_get(rec, "attributes");
    char key[32];
    size_t len = 2;
    bool any_key = false, *first = NULL;

    if (own && own->type == TDS_PJ_ARRAY)
        return tx_col_value(t, row, "attributes", own, "attributes", true);
    /* A list record names the attributes but has no variants to take their
     * options from: the column is left as it is (the detail's). */
    if (!items && !t->detail)
        return 0;
    for (int a = 1; a <= 3; a++) {
        snprintf(key, sizeof(key), "attribute_name%d", a);
        const struct tds_pjson *nm = tds_pjson_get(rec, key);
        any_key |= nm != NULL;
        if (!nonblank_str(nm))
            continue;
        len += nm->raw_len + 32;
        snprintf(key, sizeof(key), "attribute_option_name%d", a);
        for (uint32_t i = 0; items && i < items->n; i++) {
            const struct tds_pjson *o = tds_pjson_get(&items->u.items[i], key);
            if (o)
                len += o->raw_len + 3; /* a comma, and quotes around a number */
        }
    }
    /* No attribute names: a detail has none (NULL); a list record that does
     * not name them says nothing about them (a webhook's partial group with
     * its variants: the stored attributes stay). */
    if (len == 2) {
        if (any_key || (items && t->detail))
            tx_set(t, row, "attributes", NULL, 0);
        return 0;
    }
    char *out = tds_pjson_alloc(t->arena, len + 1);
    size_t k = 0;
    bool first_attr = true;
    if (!out || (items && !(first = tds_pjson_alloc(t->arena, items->n * sizeof(*first)))))
        return -ENOMEM;
    out[k++] = '[';
    for (int a = 1; a <= 3; a++) {
        snprintf(key, sizeof(key), "attribute_name%d", a);
        const struct tds_pjson *nm = tds_pjson_get(rec, key);
        if (!nonblank_str(nm))
            continue;
        if (!first_attr)
            out[k++] = ',';
        first_attr = false;
        memcpy(out + k, "{\"name\":", 8);
        k += 8;
        memcpy(out + k, nm->raw, nm->raw_len);
        k += nm->raw_len;
        memcpy(out + k, ",\"options\":[", 12);
        k += 12;
        snprintf(key, sizeof(key), "attribute_option_name%d", a);
        int rc = items ? first_options(t, items, key, first) : 0;
        if (rc < 0)
            return rc;
        bool first_opt = true;
        for (uint32_t i = 0; items && i < items->n; i++) {
            if (!first[i])
                continue;
            const struct tds_pjson *o = tds_pjson_get(&items->u.items[i], key);
            bool num = o->type == TDS_PJ_NUMBER;
            if (!first_opt)
                out[k++] = ',';
            first_opt = false;
            if (num)
                out[k++] = '"';
            memcpy(out + k, o->raw, o->raw_len);
            k += o->raw_len;
            if (num)
                out[k++] = '"';
        }
        out[k++] = ']';
        out[k++] = '}';
    }
    out[k++] = ']';
    out[k] = '\0';
    tx_set(t, row, "attributes", out, k);
    return 0;
}

static const char *const variant_skip[] = {
    "name", "custom_fields", "group_id", "group_name", "attribute_name1", "attribute_name2",
    "attribute_name3", NULL,
};

/* The group's fields that each variant's row takes, looked up once: a
 * group of tens of thousands of fields was scanned again for every one of
 * tens of thousands of variants. */
struct group_fields {
    const struct tds_pjson *name;    /* group_name */
    const struct tds_pjson *attr[3]; /* attribute_name1..3 */
};

static int variant(struct tx *t, size_t group_row, const struct group_fields *gf,
                   const struct tds_pjson *v, uint32_t i)
{
    const struct tx_row *g;
    size_t row;
    char key[32];

    tx_path_set(t, "items", i);
    TRY(tx_top(t, "items", TDS_ROWS_LIST, v, "item_id", "last_modified_time", &row));
    g = &t->rows[group_row];
    /* A variant without its own last_modified_time keeps modified_time NULL.
     * The group's time says when the group was edited, not the item: stamped
     * with it, this partial row would outrank the item's own, older, detail
     * in the writer's guard, which would then refuse that detail and its
     * stock rows. A NULL-time row never replaces a stored one with a time,
     * and gives way to any version that has one (writer/DESIGN.md). */
    TRY(item_cols(t, row, v, variant_skip));
    tx_set(t, row, "group_id", g->v[1].p, g->v[1].n);
    if (gf->name)
        TRY(tx_col_value(t, row, "group_name", gf->name, "group_name", true));
    for (int a = 1; a <= 3; a++) {
        snprintf(key, sizeof(key), "attribute_name%d", a);
        const struct tds_pjson *nm = gf->attr[a - 1];
        if (!nm)
            nm = tds_pjson_get(v, key);
        if (nm)
            TRY(tx_col_value(t, row, key, nm, key, true));
    }
    tx_path_clear(t);
    return 0;
}

static const char *const group_skip[] = {"attributes", "item_count", "custom_fields", NULL};

int tx_item_groups(struct tx *t, const struct tds_pjson *rec)
{
    const struct tds_pjson *items = tds_pjson_get(rec, "items");
    size_t row;

    if (items && items->type == TDS_PJ_NULL)
        items = NULL;
    if (items && items->type != TDS_PJ_ARRAY)
        return tx_fail(t, "wrong_type", "invalid variants in field 'items': expected an array");
    TRY(tx_top(t, "item_groups", t->detail ? TDS_ROWS_DETAIL : TDS_ROWS_LIST, rec, "group_id",
               "last_modified_time", &row));
    TRY(tx_cols(t, row, rec, group_skip));
    TRY(attributes(t, row, rec, items));
    if (items) {
        char *n = tds_pjson_alloc(t->arena, 16);
        if (!n)
            return -ENOMEM;
        int len = snprintf(n, 16, "%u", items->n);
        tx_set(t, row, "item_count", n, (size_t)len);
    } else if (tds_pjson_get(rec, "item_count")) {
        TRY(tx_col(t, row, "item_count", rec, "item_count"));
    }
    TRY(tx_custom_fields(t, row, rec));
    struct group_fields gf = {.name = tds_pjson_get(rec, "group_name")};
    for (int a = 1; a <= 3; a++) {
        char key[32];
        snprintf(key, sizeof(key), "attribute_name%d", a);
        gf.attr[a - 1] = tds_pjson_get(rec, key);
    }
    for (uint32_t i = 0; items && i < items->n; i++) {
        if (items->u.items[i].type != TDS_PJ_OBJECT)
            return tx_fail(t, "wrong_type", "invalid variant in field 'items[%u]': expected an object", i);
        TRY(variant(t, row, &gf, &items->u.items[i], i));
    }
    /* Two variants with one item_id would make the writer upsert a row twice. */
    return tx_check_unique_ids(t, row + 1, "items");
}
