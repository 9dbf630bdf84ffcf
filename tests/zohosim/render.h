/* render — Zoho-shaped JSON for the simulator's records.
 *
 * Derives every field of a record from its id, version and organization
 * (names, amounts, stock per site, line items, custom fields) and writes the
 * list (abbreviated) or detail (complete) form the way Zoho Inventory/Books
 * name them. It never changes data and never takes locks: the caller holds
 * the organization's read lock while rendering.
 */
#ifndef ZS_RENDER_H
#define ZS_RENDER_H

#include "data.h"
#include "jw.h"

/* The record's display name (item name, group_name, contact_name,
 * warehouse_name, document number) into buf, truncated to len. */
void zs_rec_name(const struct zs_org *o, enum zs_ent e, const struct zs_rec *r, char *buf,
                 size_t len);

/* Writes one record as a JSON object. detail=false gives the list form.
 * as_location renders a warehouse as a /locations entry. */
void zs_render(struct zs_jw *w, const struct zs_org *o, enum zs_ent e, const struct zs_rec *r,
               bool detail, bool as_location);

/* An item's detail without its stock sites (neither warehouses[] nor
 * locations[]), as a Books item detail reads. */
void zs_render_item_without_stock(struct zs_jw *w, const struct zs_org *o, const struct zs_rec *r);

/* An item's stock at one site. */
struct zs_stock {
    int64_t soh, avail, committed, afs;
    int64_t a_soh, a_avail, a_committed, a_afs; /* the actual_* (physical) twins */
};

/* The stock the item's version gives at site (index in the warehouses
 * table), before anything documents moved. */
void zs_item_base_stock(const struct zs_org *o, const struct zs_rec *it, size_t site,
                        struct zs_stock *s);
/* The stock as every form renders it: the base plus the org's deltas
 * (zs_org_stock_delta), with nothing negative, committed at most on hand,
 * available = on hand and available for sale = on hand - committed. it must
 * point into the items table. */
void zs_item_site_stock(const struct zs_org *o, const struct zs_rec *it, size_t site,
                        struct zs_stock *s);

/* One line of an invoice or sales order: indexes of its item and its site
 * (warehouse or location), and its quantity. */
struct zs_line {
    size_t item, site;
    int64_t qty;
};

/* The lines of a document as its detail renders them now, into out;
 * returns how many (at most ZS_MAX_LINES). */
unsigned zs_doc_stock_lines(const struct zs_org *o, const struct zs_rec *doc,
                            struct zs_line out[ZS_MAX_LINES]);

/* The id as the record shows it (a broken one for ZS_BAD_ID records). */
void zs_render_id(char out[32], const struct zs_rec *r);

#endif
