/* inventory — warehouses and locations (zoho.warehouses).
 *
 * Older organizations list stock sites as warehouses (warehouse_id,
 * warehouse_name), newer ones as locations (location_id, location_name,
 * is_primary_location, sometimes a nested address object). Both land in
 * zoho.warehouses with site_kind saying which. The site list is complete, so
 * every record is a DETAIL row. Per-item stock (zoho.item_stock) is built by
 * products.c from the item detail.
 */
#include <string.h>

#include "tx.h"
#include "value.h"

#define TRY(x)                                                                       \
    do {                                                                             \
        int rc_ = (x);                                                               \
        if (rc_)                                                                     \
            return rc_;                                                              \
    } while (0)

static const char *const site_skip[] = {
    "warehouse_name", "is_primary", "site_kind", "address", "address1", "address2", NULL,
};

/* Address columns from a nested `address` object (location shape). */
static int nested_address(struct tx *t, size_t row, const struct tds_pjson *a)
{
    static const char *const direct[] = {"attention", "city", "state", "zip", "country",
                                         "phone", "email"};
    const struct tds_pjson *v;

    for (size_t i = 0; i < sizeof(direct) / sizeof(direct[0]); i++)
        if (tds_pjson_get(a, direct[i]))
            TRY(tx_col(t, row, direct[i], a, direct[i]));
    v = tds_pjson_get(a, "street_address1");
    TRY(tx_col_value(t, row, "address1", v ? v : tds_pjson_get(a, "address1"), "address.address1",
                     true));
    v = tds_pjson_get(a, "street_address2");
    TRY(tx_col_value(t, row, "address2", v ? v : tds_pjson_get(a, "address2"), "address.address2",
                     true));
    tx_set(t, row, "address", NULL, 0);
    return 0;
}

/* Whether rec[key] holds a value: not absent, null or a blank string. */
static bool holds(const struct tds_pjson *rec, const char *key)
{
    const struct tds_pjson *v = tds_pjson_get(rec, key);

    return v && v->type != TDS_PJ_NULL &&
           (v->type != TDS_PJ_STRING || !tds_value_blank(v->s, v->n));
}

/* A record with a location_id is a location, whatever else it carries: an
 * item's stock is keyed by location_id when it lists locations[]
 * (products.c), so its site row must be too. A location with a legacy or
 * null warehouse_id beside it used to be taken for a warehouse: rejected
 * ("missing warehouse_id") or stored under the other id, its name and
 * primary flag unread, joining none of its stock rows. */
int tx_warehouses(struct tx *t, const struct tds_pjson *rec)
{
    bool loc = holds(rec, "location_id");
    const char *kind = loc ? "location" : "warehouse";
    const struct tds_pjson *v, *addr;
    size_t row;

    TRY(tx_top(t, "warehouses", TDS_ROWS_DETAIL, rec, loc ? "location_id" : "warehouse_id",
               t->entity && t->entity->modified_field ? t->entity->modified_field : NULL, &row));
    TRY(tx_col(t, row, "warehouse_name", rec, loc ? "location_name" : "warehouse_name"));
    tx_set(t, row, "site_kind", kind, strlen(kind));
    v = tds_pjson_get(rec, "is_primary");
    if (!v)
        v = tds_pjson_get(rec, loc ? "is_primary_location" : "primary");
    TRY(tx_col_value(t, row, "is_primary", v, "is_primary", true));
    TRY(tx_cols(t, row, rec, site_skip));
    addr = tds_pjson_get(rec, "address");
    if (addr && addr->type == TDS_PJ_OBJECT)
        return nested_address(t, row, addr);
    TRY(tx_col(t, row, "address", rec, "address"));
    TRY(tx_col(t, row, "address1", rec, "address1"));
    return tx_col(t, row, "address2", rec, "address2");
}
