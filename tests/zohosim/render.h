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

/* The id as the record shows it (a broken one for ZS_BAD_ID records). */
void zs_render_id(char out[32], const struct zs_rec *r);

#endif
