/* data — the simulated organizations and their records.
 *
 * Owns every organization's records as compact structs (id, times, version,
 * links, flags): text and numbers are derived on demand from a hash of the
 * record's id and version (render.c), so memory stays proportional to the
 * record count (40 bytes a record) and a seed reproduces the same data.
 * Also owns the sorted views used for paging and the mutations. It never
 * does HTTP and never takes the org lock itself: callers hold org->lock
 * (read for lookups and listing, write for mutations).
 */
#ifndef ZS_DATA_H
#define ZS_DATA_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum zs_ent { ZS_WAREHOUSES, ZS_ITEM_GROUPS, ZS_ITEMS, ZS_CONTACTS, ZS_SALESORDERS, ZS_INVOICES,
              ZS_ENT_COUNT };

enum zs_product { ZS_INVENTORY = 1u << 0, ZS_BOOKS = 1u << 1 };

/* Kinds of deliberately broken records (/_sim/invalid). */
/* ZS_BAD_UTF8_ID: the record's id carries bytes that are not UTF-8 in what
 * the API serves (the control endpoints show the plain id); not part of
 * "mixed", which cycles through the kinds before it. */
enum zs_invalid { ZS_VALID = 0, ZS_BAD_ID, ZS_BAD_NUMBER, ZS_BAD_DATE, ZS_BAD_MODIFIED,
                  ZS_BAD_UTF8_ID, ZS_INVALID_KINDS };

enum zs_sort { ZS_SORT_CREATED, ZS_SORT_MODIFIED, ZS_SORT_NAME, ZS_SORT_COUNT };

struct zs_rec { /* 40 bytes: keep it that way, a million items is the target */
    uint64_t id;
    int64_t created_s, modified_s;
    uint32_t version;  /* bumped by every update; derived fields follow it */
    int32_t link;      /* items: group record index or -1; groups: first item index;
                          documents: customer contact index; warehouses: -1 */
    uint16_t count;    /* groups: number of variants; items: variant number */
    uint8_t deleted;
    uint8_t invalid;   /* enum zs_invalid */
    uint32_t stamp;    /* the last mutation request that chose it (fits the padding) */
};

struct zs_view {            /* a sorted index over live records, rebuilt lazily */
    uint32_t *idx;
    size_t n;
    uint64_t gen;           /* table generation it was built for; 0 = never */
};

struct zs_table {
    struct zs_rec *recs;
    size_t n, cap;
    uint64_t gen;           /* bumped on every change (under the write lock) */
    pthread_mutex_t view_lock;
    struct zs_view views[ZS_SORT_COUNT];
};

/* Stock that invoices and sales orders moved (POST /_sim/mutate with
 * moves_stock), per item and site, as deltas over what the item's version
 * renders: real Zoho moves an item's stock without touching the item, so
 * this lives beside the records, not in them. Sparse (only the pairs a
 * document moved) in an open-addressing table at most half full; it never
 * shrinks and is freed with the org. */
#define ZS_MAX_SITES 64     /* warehouses per org: keys are item * 64 + site */

struct zs_stock_delta {
    int64_t soh, committed, a_soh, a_committed;
};

struct zs_stock_slot {
    uint64_t key;           /* item * ZS_MAX_SITES + site + 1; 0 = empty */
    struct zs_stock_delta d;
};

struct zs_stock_map {
    struct zs_stock_slot *slots;
    size_t n, cap;          /* cap is 0 or a power of two */
};

struct zs_org_limits {
    int64_t rate_per_min;   /* 0 = off */
    int64_t concurrency;    /* 0 = off */
    int64_t daily;          /* 0 = off */
};

struct zs_org {
    char id[32];
    char name[64];
    int org_index;          /* position in the simulator's org list */
    int tz_min;             /* offset of the org's time zone, minutes east of UTC */
    bool locations;         /* stock per site in locations[] instead of warehouses[] */
    bool bare_ids;          /* ids as JSON numbers instead of strings (ids=bare) */
    bool no_itemdetails;    /* GET /itemdetails answers 404 code 5 (itemdetails=no) */
    unsigned products;      /* enum zs_product bits */
    uint64_t seed;
    size_t want[ZS_ENT_COUNT];
    size_t gen_n[ZS_ENT_COUNT]; /* records generated at start: line items and
                                   references pick among these only, so a
                                   record renders the same whatever is created
                                   later */
    char refresh_token[128]; /* "" = only the global refresh tokens */
    struct zs_org_limits lim; /* -1 fields = use the global setting */
    pthread_rwlock_t lock;
    struct zs_table t[ZS_ENT_COUNT];
    uint64_t mut_rng;       /* chooses records to mutate; under the write lock */
    struct zs_stock_map stock; /* changed under the write lock, read under the read lock */
};

const char *zs_ent_name(enum zs_ent e);       /* "items" (the registry name) */
const char *zs_ent_list_key(enum zs_ent e);   /* "items", "itemgroups", "salesorders" */
const char *zs_ent_detail_key(enum zs_ent e); /* "item", "item_group", "salesorder" */
const char *zs_ent_id_field(enum zs_ent e);   /* "item_id", "group_id" */
const char *zs_ent_report_name(enum zs_ent e);
/* Accepts the registry name, the list key or the detail key; -1 if unknown. */
int zs_ent_parse(const char *s);

/* Parses an org spec "id=60001,tz=+0300,stock=warehouses,items=2000,...".
 * Returns 0, or -EINVAL with a message in err. */
int zs_org_parse(struct zs_org *o, const char *spec, char *err, size_t errlen);
void zs_org_defaults(struct zs_org *o, int index);
/* Generates the records from o->seed and o->want; epoch_s is the time the
 * generated history ends at. Returns 0 or -ENOMEM. */
int zs_org_generate(struct zs_org *o, int64_t epoch_s);
void zs_org_deinit(struct zs_org *o);

/* Record lookup by id (text); NULL if unknown, deleted or malformed. */
struct zs_rec *zs_org_find(struct zs_org *o, enum zs_ent e, const char *id);
struct zs_rec *zs_org_find_id(struct zs_org *o, enum zs_ent e, uint64_t id);
/* Index of a record in its table. */
static inline size_t zs_rec_index(const struct zs_table *t, const struct zs_rec *r)
{
    return (size_t)(r - t->recs);
}

struct zs_page_req {
    enum zs_sort sort;
    bool desc;
    bool has_after;
    int64_t after_s;        /* last_modified_time filter: modified_s > after_s */
    size_t page;            /* from 1 */
    size_t per_page;
};

/* Fills out[0..*n_out) with record indexes of the requested page and sets
 * *more when records follow it. out must have room for per_page entries.
 * Caller holds the read lock. Returns 0 or -ENOMEM. */
int zs_org_page(struct zs_org *o, enum zs_ent e, const struct zs_page_req *q, uint32_t *out,
                size_t *n_out, bool *more);

enum zs_mut_op { ZS_MUT_UPDATE, ZS_MUT_CREATE, ZS_MUT_DELETE, ZS_MUT_OPS };

#define ZS_MAX_VARIANTS 6
#define ZS_MAX_LINES 5      /* line items of an invoice or sales order */

/* Records of another entity that a mutation changed too (a variant's group,
 * a deleted group's variants). */
struct zs_also {
    enum zs_ent ent;
    enum zs_mut_op op;
    size_t n;
    size_t idx[ZS_MAX_VARIANTS + 1];
};

/* Applies one mutation to one record chosen by the org's mutation stream
 * (update/delete: a random live record; create: a new one) and returns its
 * index in *idx. Changing a variant also bumps its group and deleting a group
 * deletes its variants: those are listed in *also. A non-zero stamp marks the
 * chosen record and excludes records already marked with it, so one request
 * never picks the same record twice. Caller holds the write lock. Returns 0, -ENOENT when
 * there is no live record to update or delete, -ENOTSUP for deleting or
 * creating warehouses, -ENOMEM. */
int zs_org_mutate(struct zs_org *o, enum zs_ent e, enum zs_mut_op op, int64_t now_s,
                  enum zs_invalid invalid, uint32_t stamp, size_t *idx, struct zs_also *also);

/* What documents moved of one item's stock at one site (index in the
 * warehouses table), or NULL when nothing did. Caller holds the read lock. */
const struct zs_stock_delta *zs_org_stock_delta(const struct zs_org *o, size_t item,
                                                size_t site);

/* Moves the stock of the items on the lines of documents docs[0..n_docs) of
 * e (ZS_INVOICES or ZS_SALESORDERS), as they render now, in one batch: the
 * quantities of all lines naming one item at one site add up, so each item
 * moves once and visibly. Invoices take the quantities out of accounting
 * stock (stock_on_hand) at the lines' sites, or, when a site has less than
 * that, put them back at those sites instead (a return): one direction for
 * the item, so its totals move too. Sales orders commit them
 * (committed and actual committed), raising stock on hand where it would
 * fall short. Nothing goes negative and committed never exceeds on hand.
 * Deleted items are left alone. Fills items (room for n_docs * ZS_MAX_LINES)
 * with the moved items' indexes in increasing order and *n_items with their
 * number. Caller holds the write lock. Returns 0 or -ENOMEM (nothing moved). */
int zs_org_move_stock(struct zs_org *o, enum zs_ent e, const size_t *docs, size_t n_docs,
                      size_t *items, size_t *n_items);

/* Hash helpers shared with render.c. */
static inline uint64_t zs_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline uint64_t zs_h(uint64_t a, uint64_t b, uint64_t salt)
{
    return zs_mix(a ^ zs_mix(b * 0x100000001b3ULL + salt));
}

/* Formats epoch seconds in the org's offset: "2025-01-31T12:00:00+0300". */
void zs_fmt_time(char out[32], int64_t s, int tz_min);
void zs_fmt_date(char out[16], int64_t s, int tz_min);
/* Parses "yyyy-MM-ddTHH:mm:ss±hhmm" (also ±hh:mm, Z, or a plain date).
 * Returns 0 and epoch seconds, or -EINVAL. */
int zs_parse_time(const char *s, int64_t *out);

#endif
