/* entities — the registry of Zoho entities and of the zoho.* tables they fill.
 *
 * This is the single description that the fetcher (paths, JSON keys, id and
 * modified-time fields), the processor (which tables and columns to produce)
 * and the writer (how to stage and upsert each table) all read. Adding an
 * entity is one entry here, its tables in a writer migration, and its
 * transform in processor/entities/.
 *
 * Every top-level table has the managed columns org_id, <id_column>,
 * modified_time, synced_at, deleted_at, raw, content_hash and is_detail
 * (see TDS_TOP_MANAGED); they are not repeated in `cols`. Child tables have
 * org_id and the parent's id column first, then their own columns.
 */
#ifndef TDS_ENTITIES_H
#define TDS_ENTITIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tds_product { TDS_PRODUCT_INVENTORY = 1u << 0, TDS_PRODUCT_BOOKS = 1u << 1 };

/* SQL types used by the zoho schema. */
enum tds_coltype { TDS_T_TEXT = 1, TDS_T_NUMERIC, TDS_T_INT, TDS_T_BOOL, TDS_T_TIMESTAMPTZ,
                   TDS_T_DATE, TDS_T_JSONB };

struct tds_column {
    const char *name;
    enum tds_coltype type;
};

struct tds_table {
    const char *name;            /* in schema zoho */
    const char *parent;          /* NULL for a top-level table */
    const char *id_column;       /* top: Zoho id column; child: parent's id column */
    const char *const *key;      /* child: columns after org_id + id_column that make the key */
    const struct tds_column *cols; /* own columns (not the managed ones) */
    size_t n_cols;
};

struct tds_entity {
    const char *name;            /* "items": used in messages, config, CLI */
    unsigned products;           /* TDS_PRODUCT_* that have it */
    const char *list_path;       /* "/items" relative to the product base */
    const char *detail_path;     /* "/items/" + id, or NULL when the list is complete */
    const char *list_key;        /* "items" in the list response */
    const char *detail_key;      /* "item" in detail responses and webhooks */
    const char *id_field;        /* "item_id" */
    const char *modified_field;  /* "last_modified_time", NULL if Zoho has none */
    bool supports_modified_filter; /* list accepts last_modified_time=... */
    const char *table;           /* top-level table */
    const char *children[4];     /* child tables, NULL-terminated */
    /* Figures the list gives that change without the modified time (an
     * item's stock totals move with documents that do not touch the item),
     * NULL-terminated, each also a column of the table; NULL for none. A
     * walk that lists one unlike the stored row's fetches the detail again. */
    const char *const *list_figures;
};

size_t tds_entity_count(void);

/* Whether the n bytes at s are a record id every stage accepts: 1 to
 * TDS_ZOHO_ID_MAX bytes of [0-9A-Za-z_.-] (Zoho's are 18-19 digits), and not
 * "." or "..", which a URL path would take as a dot segment (GET
 * /items/.. is the API's root). Anything else (bytes that are not UTF-8,
 * control characters, a 4 KB string) must not reach SQL or a URL path. */
#define TDS_ZOHO_ID_MAX 64
bool tds_zoho_id_valid(const char *s, size_t n);
const struct tds_entity *tds_entity_at(size_t i);
const struct tds_entity *tds_entity_find(const char *name);
/* By the JSON key of a webhook or detail payload ("item", "salesorder"). */
const struct tds_entity *tds_entity_by_key(const char *key);

size_t tds_table_count(void);
const struct tds_table *tds_table_at(size_t i);
const struct tds_table *tds_table_find(const char *name);
const char *tds_coltype_sql(enum tds_coltype t);

/* The column list of a set of rows of t, as the processor sends it and the
 * writer stages it: org_id and id_column; then, for a record (managed), the
 * managed columns the processor fills (modified_time, raw, content_hash,
 * is_detail); then t's own columns whose bit is set in own (UINT64_MAX: all,
 * 0: none, as for a delete). cols must have room for 6 + t->n_cols (a
 * table has at most 64 own columns); returns how many were written. */
size_t tds_table_set_cols(const struct tds_table *t, bool managed, uint64_t own,
                          const char **cols);

/* Managed columns of every top-level table, in this order after the id. */
#define TDS_TOP_MANAGED "modified_time", "synced_at", "deleted_at", "raw", "content_hash", "is_detail"

#endif
