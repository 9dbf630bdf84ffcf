/* entities — the static registry of Zoho entities and zoho.* tables.
 *
 * Column lists here must match writer/migrations; the writer checks them
 * against the database at start-up and refuses to run on a mismatch.
 */
#include "entities.h"

#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define T TDS_T_TEXT
#define NUM TDS_T_NUMERIC
#define I TDS_T_INT
#define B TDS_T_BOOL
#define TS TDS_T_TIMESTAMPTZ
#define D TDS_T_DATE
#define J TDS_T_JSONB

static const struct tds_column items_cols[] = {
    {"name", T}, {"sku", T}, {"status", T}, {"unit", T}, {"description", T},
    {"item_type", T}, {"product_type", T},
    {"rate", NUM}, {"purchase_rate", NUM},
    {"group_id", T}, {"group_name", T},
    {"attribute_name1", T}, {"attribute_option_name1", T},
    {"attribute_name2", T}, {"attribute_option_name2", T},
    {"attribute_name3", T}, {"attribute_option_name3", T},
    {"brand", T}, {"manufacturer", T}, {"reorder_level", NUM},
    {"tax_id", T}, {"tax_name", T}, {"tax_percentage", NUM}, {"is_taxable", B},
    {"upc", T}, {"ean", T}, {"isbn", T}, {"part_number", T},
    {"image_name", T}, {"image_type", T}, {"image_document_id", T},
    {"stock_on_hand", NUM}, {"available_stock", NUM},
    {"actual_available_stock", NUM},
    {"custom_fields", J}, {"created_time", TS},
    {"committed_stock", NUM}, {"available_for_sale_stock", NUM}, {"actual_stock_on_hand", NUM},
    {"actual_committed_stock", NUM}, {"actual_available_for_sale_stock", NUM},
};

static const struct tds_column item_groups_cols[] = {
    {"group_name", T}, {"status", T}, {"unit", T}, {"description", T},
    {"brand", T}, {"manufacturer", T},
    {"tax_id", T}, {"tax_name", T}, {"tax_percentage", NUM},
    {"attributes", J}, {"item_count", I},
    {"image_name", T}, {"image_type", T},
    {"custom_fields", J}, {"created_time", TS},
};

static const struct tds_column warehouses_cols[] = {
    {"warehouse_name", T}, {"status", T}, {"is_primary", B}, {"site_kind", T},
    {"attention", T}, {"address", T}, {"address1", T}, {"address2", T}, {"city", T},
    {"state", T}, {"zip", T}, {"country", T}, {"phone", T}, {"email", T},
};

static const char *const item_stock_key[] = {"warehouse_id", NULL};
static const struct tds_column item_stock_cols[] = {
    {"warehouse_id", T}, {"warehouse_name", T}, {"site_kind", T}, {"is_primary", B},
    {"stock_on_hand", NUM}, {"available_stock", NUM}, {"committed_stock", NUM},
    {"available_for_sale_stock", NUM},
    {"actual_stock_on_hand", NUM}, {"actual_available_stock", NUM},
    {"actual_committed_stock", NUM}, {"actual_available_for_sale_stock", NUM},
};

static const struct tds_column contacts_cols[] = {
    {"contact_name", T}, {"company_name", T}, {"contact_type", T},
    {"customer_sub_type", T}, {"status", T},
    {"first_name", T}, {"last_name", T}, {"email", T}, {"phone", T}, {"mobile", T},
    {"website", T}, {"language_code", T},
    {"currency_id", T}, {"currency_code", T},
    {"payment_terms", I}, {"payment_terms_label", T},
    {"credit_limit", NUM},
    {"outstanding_receivable_amount", NUM}, {"outstanding_payable_amount", NUM},
    {"unused_credits_receivable_amount", NUM}, {"unused_credits_payable_amount", NUM},
    {"custom_fields", J}, {"created_time", TS},
};

static const char *const contact_addresses_key[] = {"address_type", "position", NULL};
static const struct tds_column contact_addresses_cols[] = {
    {"address_type", T}, {"position", I}, {"address_id", T},
    {"attention", T}, {"address", T}, {"street2", T}, {"city", T}, {"state", T},
    {"zip", T}, {"country", T}, {"phone", T}, {"fax", T},
    {"state_code", T}, {"country_code", T},
};

static const char *const contact_persons_key[] = {"contact_person_id", NULL};
static const struct tds_column contact_persons_cols[] = {
    {"contact_person_id", T}, {"salutation", T}, {"first_name", T}, {"last_name", T},
    {"email", T}, {"phone", T}, {"mobile", T}, {"designation", T}, {"department", T},
    {"is_primary_contact", B},
};

#define SALES_HEADER_COMMON                                                          \
    {"reference_number", T}, {"status", T}, {"date", D},                             \
    {"customer_id", T}, {"customer_name", T}, {"salesperson_name", T},               \
    {"currency_code", T}, {"exchange_rate", NUM},                                    \
    {"discount", NUM}, {"shipping_charge", NUM}, {"adjustment", NUM},                \
    {"sub_total", NUM}, {"tax_total", NUM}, {"total", NUM},                          \
    {"custom_fields", J}, {"created_time", TS},                                      \
    {"discount_percent", NUM}, {"location_id", T}, {"location_name", T}

static const struct tds_column invoices_cols[] = {
    {"invoice_number", T}, SALES_HEADER_COMMON,
    {"due_date", D}, {"balance", NUM}, {"salesorder_id", T},
};

static const struct tds_column sales_orders_cols[] = {
    {"salesorder_number", T}, SALES_HEADER_COMMON,
    {"shipment_date", D}, {"order_status", T}, {"invoiced_status", T},
    {"paid_status", T}, {"shipped_status", T}, {"delivery_method", T},
};

#define LINE_COMMON                                                                  \
    {"line_item_id", T}, {"position", I}, {"item_id", T}, {"sku", T}, {"name", T},  \
    {"description", T}, {"unit", T}, {"quantity", NUM}, {"rate", NUM},               \
    {"discount", NUM}, {"tax_id", T}, {"tax_name", T}, {"tax_percentage", NUM},      \
    {"item_total", NUM}, {"warehouse_id", T}, {"discount_percent", NUM}

static const char *const line_key[] = {"line_item_id", NULL};
static const struct tds_column invoice_lines_cols[] = { LINE_COMMON };
static const struct tds_column sales_order_lines_cols[] = {
    LINE_COMMON, {"quantity_invoiced", NUM}, {"quantity_packed", NUM}, {"quantity_shipped", NUM},
    {"quantity_delivered", NUM}, {"quantity_cancelled", NUM}, {"quantity_returned", NUM},
    {"quantity_backordered", NUM},
};

static const struct tds_table tables[] = {
    {"items", NULL, "item_id", NULL, items_cols, N(items_cols)},
    {"item_stock", "items", "item_id", item_stock_key, item_stock_cols, N(item_stock_cols)},
    {"item_groups", NULL, "group_id", NULL, item_groups_cols, N(item_groups_cols)},
    {"warehouses", NULL, "warehouse_id", NULL, warehouses_cols, N(warehouses_cols)},
    {"contacts", NULL, "contact_id", NULL, contacts_cols, N(contacts_cols)},
    {"contact_addresses", "contacts", "contact_id", contact_addresses_key, contact_addresses_cols,
     N(contact_addresses_cols)},
    {"contact_persons", "contacts", "contact_id", contact_persons_key, contact_persons_cols,
     N(contact_persons_cols)},
    {"invoices", NULL, "invoice_id", NULL, invoices_cols, N(invoices_cols)},
    {"invoice_lines", "invoices", "invoice_id", line_key, invoice_lines_cols, N(invoice_lines_cols)},
    {"sales_orders", NULL, "salesorder_id", NULL, sales_orders_cols, N(sales_orders_cols)},
    {"sales_order_lines", "sales_orders", "salesorder_id", line_key, sales_order_lines_cols,
     N(sales_order_lines_cols)},
};

#define INV TDS_PRODUCT_INVENTORY
#define BOOKS TDS_PRODUCT_BOOKS

/* An item's stock totals, in its list form as in its detail: a purchase
 * receive, a bill, an adjustment or a transfer (none of them synced) moves
 * them and, as far as is known, leaves the item's last_modified_time. */
static const char *const item_list_figures[] = {
    "stock_on_hand", "available_stock", "committed_stock", "available_for_sale_stock",
    "actual_stock_on_hand", "actual_available_stock", "actual_committed_stock",
    "actual_available_for_sale_stock", NULL};

/* Warehouses come first: items reference them. Order here is the order of an
 * "all" sync. Paths are relative to {api}/inventory/v1 or {api}/books/v3. */
static const struct tds_entity entities[] = {
    {"warehouses", INV | BOOKS, "/settings/warehouses", NULL, "warehouses", "warehouse",
     "warehouse_id", NULL, false, "warehouses", {NULL}, NULL},
    {"item_groups", INV, "/itemgroups", "/itemgroups/", "itemgroups", "item_group",
     "group_id", "last_modified_time", true, "item_groups", {NULL}, NULL},
    {"items", INV | BOOKS, "/items", "/items/", "items", "item",
     "item_id", "last_modified_time", true, "items", {"item_stock", NULL}, item_list_figures},
    {"contacts", INV | BOOKS, "/contacts", "/contacts/", "contacts", "contact",
     "contact_id", "last_modified_time", true, "contacts",
     {"contact_addresses", "contact_persons", NULL}, NULL},
    {"sales_orders", INV | BOOKS, "/salesorders", "/salesorders/", "salesorders", "salesorder",
     "salesorder_id", "last_modified_time", true, "sales_orders", {"sales_order_lines", NULL}, NULL},
    {"invoices", INV | BOOKS, "/invoices", "/invoices/", "invoices", "invoice",
     "invoice_id", "last_modified_time", true, "invoices", {"invoice_lines", NULL}, NULL},
};

size_t tds_entity_count(void) { return N(entities); }

bool tds_zoho_id_valid(const char *s, size_t n)
{
    if (n == 0 || n > TDS_ZOHO_ID_MAX)
        return false;
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

const struct tds_entity *tds_entity_at(size_t i)
{
    return i < N(entities) ? &entities[i] : NULL;
}

const struct tds_entity *tds_entity_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < N(entities); i++)
        if (strcmp(entities[i].name, name) == 0)
            return &entities[i];
    return NULL;
}

const struct tds_entity *tds_entity_by_key(const char *key)
{
    if (!key)
        return NULL;
    for (size_t i = 0; i < N(entities); i++)
        if (strcmp(entities[i].detail_key, key) == 0)
            return &entities[i];
    return NULL;
}

size_t tds_table_count(void) { return N(tables); }

const struct tds_table *tds_table_at(size_t i)
{
    return i < N(tables) ? &tables[i] : NULL;
}

const struct tds_table *tds_table_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < N(tables); i++)
        if (strcmp(tables[i].name, name) == 0)
            return &tables[i];
    return NULL;
}

size_t tds_table_set_cols(const struct tds_table *t, bool managed, uint64_t own,
                          const char **cols)
{
    size_t n = 0;

    cols[n++] = "org_id";
    cols[n++] = t->id_column;
    if (managed) {
        cols[n++] = "modified_time";
        cols[n++] = "raw";
        cols[n++] = "content_hash";
        cols[n++] = "is_detail";
    }
    for (size_t i = 0; i < t->n_cols && i < 64; i++)
        if (own & (UINT64_C(1) << i))
            cols[n++] = t->cols[i].name;
    return n;
}

const char *tds_coltype_sql(enum tds_coltype t)
{
    switch (t) {
    case TDS_T_TEXT: return "text";
    case TDS_T_NUMERIC: return "numeric";
    case TDS_T_INT: return "integer";
    case TDS_T_BOOL: return "boolean";
    case TDS_T_TIMESTAMPTZ: return "timestamptz";
    case TDS_T_DATE: return "date";
    case TDS_T_JSONB: return "jsonb";
    }
    return "text";
}
