/* tx — what an entity transform (processor/entities/) works with.
 *
 * Internal to the processor. A `struct tx` is one record being transformed:
 * its arena, its staged rows and, on failure, the reject reason. Entity code
 * opens rows with tx_top()/tx_child(), fills columns with tx_col*() (the SQL
 * type comes from the registry in common/entities.c) and returns 0, TX_REJECT
 * (reason already set) or a negative errno. transform.c commits the staged
 * rows only when the whole record succeeded.
 */
#ifndef TDS_TX_H
#define TDS_TX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "entities.h"
#include "msg.h"
#include "pjson.h"

#define TX_REJECT 1

/* Leading columns of a top-level row: org_id, <id>, modified_time, raw,
 * content_hash, is_detail. Child rows: org_id, <parent id>. */
#define TX_TOP_LEAD 6
#define TX_CHILD_LEAD 2
#define TX_MAX_COLS 64

struct tx_row {
    const struct tds_table *tbl;
    enum tds_rowset_kind kind;
    uint64_t present;        /* own columns the source carried (LIST sets) */
    struct tds_bytes *v;     /* lead + tbl->n_cols values */
    size_t top;              /* child: index of its top row */
};

struct tx {
    struct tds_pjson_arena *arena;
    const struct tds_entity *entity;
    const char *org;
    const char *tz;           /* the organization's offset ("+0300") for date-only times; NULL: UTC */
    bool detail;              /* the record is complete (detail form) */
    struct tx_row *rows;
    size_t n_rows, cap_rows;
    size_t last_top;          /* the latest top row: tx_child() opens rows under it only */
    const char *path_array;   /* field path for reasons: "<array>[<index>]." or "<key>." */
    size_t path_index;        /* SIZE_MAX: a nested object, not an array element */
    size_t path_len;          /* non-zero while a path is set */
    char path[160];           /* formatted on demand by tx_path() */
    char reason[512];
    const char *reason_class;
    struct tds_bytes zoho_id; /* the record's id once known (for rejects) */
};

/* Reject the record: class is a static metric label ("invalid_number"). */
int tx_fail(struct tx *t, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Open a top-level row of table `table` from object rec: reads the id from
 * id_key (missing/blank → "missing <id_key>"), the modified time from
 * mod_key (NULL = none), raw = rec's bytes. *row receives the row index. */
int tx_top(struct tx *t, const char *table, enum tds_rowset_kind kind,
           const struct tds_pjson *rec, const char *id_key, const char *mod_key, size_t *row);
/* Open a child row of `table` under top row `top`, which must be the latest
 * top row opened: a top row's children follow it (content_hash relies on
 * it). */
int tx_child(struct tx *t, const char *table, size_t top, size_t *row);

/* Column index in the row's table, or -1 (a programming error: asserted). */
int tx_colidx(const struct tds_table *tbl, const char *col);

/* Convert obj[key] by the column's SQL type into column col. A key present
 * in obj marks the column present (for LIST sets), even when null. */
int tx_col(struct tx *t, size_t row, const char *col, const struct tds_pjson *obj,
           const char *key);
/* tx_col for every own column named like its JSON key, except those listed
 * in skip (NULL-terminated, may be NULL). */
int tx_cols(struct tx *t, size_t row, const struct tds_pjson *obj, const char *const *skip);
/* Set a computed value (p NULL = SQL NULL) and mark it present. */
void tx_set(struct tx *t, size_t row, const char *col, const char *p, size_t n);
/* Convert an already-looked-up value v by the column's type; present says
 * whether to mark the column present. */
int tx_col_value(struct tx *t, size_t row, const char *col, const struct tds_pjson *v,
                 const char *field, bool present);
/* Required child key (warehouse_id, line_item_id, ...): like an id; missing →
 * reject "missing <field>". */
int tx_child_id(struct tx *t, size_t row, const char *col, const struct tds_pjson *obj,
                const char *key);
/* Reject when two child rows of the same top row share their key column. */
int tx_check_unique(struct tx *t, size_t first_row, const char *col, const char *what);
/* Reject when two top rows from first_row on, of one table, share their id
 * ("duplicate item_id '7' in <what>"). Both sort: O(n log n) in the rows. */
int tx_check_unique_ids(struct tx *t, size_t first_row, const char *what);

/* custom_fields[] → {"<label>": <value>, ...} into column "custom_fields"
 * (present only when the record has the array). Keys are unique: a field
 * whose label an earlier field has (or that has no label) is keyed by its
 * api_name, else by its customfield_id, whichever no other field has; with
 * neither free the record is rejected (duplicate_key), never a value lost. */
int tx_custom_fields(struct tx *t, size_t row, const struct tds_pjson *rec);

/* Field-path prefix for reasons inside arrays: tx_path_set(t, "line_items", 3)
 * → "line_items[3]."; tx_path_clear() drops it. */
void tx_path_set(struct tx *t, const char *array, size_t i);
void tx_path_clear(struct tx *t);
/* The current prefix formatted ("" when none); valid until the path changes. */
const char *tx_path(struct tx *t);
/* "<key>." for fields of a nested object ("billing_address.zip"). */
void tx_path_key(struct tx *t, const char *key);

/* Whether rec has key with a value other than null: a null list of child
 * rows is no list of them (the looks_detail checks). An empty list or
 * object is there: tx_has_some() tells them apart. */
static inline bool tx_has(const struct tds_pjson *rec, const char *key)
{
    const struct tds_pjson *v = tds_pjson_get(rec, key);

    return v && v->type != TDS_PJ_NULL;
}

/* Whether rec has every key of the NULL-terminated keys[] (tx_has()). */
static inline bool tx_has_all(const struct tds_pjson *rec, const char *const *keys)
{
    for (; *keys; keys++)
        if (!tx_has(rec, *keys))
            return false;
    return true;
}

/* Whether rec[key] is an array with an element or an object with a member:
 * `"line_items": []` or `"billing_address": {}` holds nothing. */
static inline bool tx_has_some(const struct tds_pjson *rec, const char *key)
{
    const struct tds_pjson *v = tds_pjson_get(rec, key);

    return v && (v->type == TDS_PJ_ARRAY || v->type == TDS_PJ_OBJECT) && v->n > 0;
}

/* Arena copy of n bytes (NULL on ENOMEM). */
char *tx_dup(struct tx *t, const char *p, size_t n);

/* Entity families (processor/entities/). Each returns 0, TX_REJECT or -errno. */
int tx_items(struct tx *t, const struct tds_pjson *rec);
int tx_item_groups(struct tx *t, const struct tds_pjson *rec);
int tx_warehouses(struct tx *t, const struct tds_pjson *rec);
int tx_contacts(struct tx *t, const struct tds_pjson *rec);
int tx_invoices(struct tx *t, const struct tds_pjson *rec);
int tx_sales_orders(struct tx *t, const struct tds_pjson *rec);

/* Webhook bodies: does the record carry all that Zoho's detail of the
 * entity always carries (its name field, its modified time, a few header
 * fields such as status, and the parts its child rows come from, not merely
 * an empty list of them where Zoho's detail always has one)? Only then is
 * it a DETAIL; else a LIST. processor/README.md lists them. */
bool tx_items_looks_detail(const struct tds_pjson *rec);
bool tx_item_groups_looks_detail(const struct tds_pjson *rec);
bool tx_contacts_looks_detail(const struct tds_pjson *rec);
bool tx_invoices_looks_detail(const struct tds_pjson *rec);
bool tx_sales_orders_looks_detail(const struct tds_pjson *rec);

#endif
