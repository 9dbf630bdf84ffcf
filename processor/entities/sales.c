/* sales — invoices and sales orders with their line items.
 *
 * Header columns come straight from the record (number, dates, status,
 * customer, currency, exchange rate, totals, balance); a detail document also
 * replaces its lines, each keeping its 1-based position in line_items[].
 * A line's site is the first of location_id, warehouse_id and
 * line_warehouse_id that holds an id (null or blank ones are passed over),
 * location first as for stock, so that a line joins its item_stock rows.
 * A discount written as a percentage ("10.00%") is not an amount: the
 * discount column then takes discount_amount when Zoho sends it, else NULL,
 * and discount_percent takes the percentage (10.00).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tx.h"
#include "value.h"

#define TRY(x)                                                                       \
    do {                                                                             \
        int rc_ = (x);                                                               \
        if (rc_)                                                                     \
            return rc_;                                                              \
    } while (0)

/* A webhook's document is a DETAIL, whose lines and columns all replace the
 * stored ones, only when it carries what Zoho's detail always carries: its
 * number, modified time, status, customer and total (the list record has
 * them too, ZOHO.md §5.5-5.6) and at least one line. A custom webhook body
 * with less is written as LIST (the columns it carries, nothing else) and
 * the detail is fetched. (customers.c says more.)
 * One line at least, not the key alone: Zoho saves no invoice or sales order
 * without a line (its API requires line_items to create one, and its detail
 * is where the lines come from), so `"line_items": []` is no detail's. Taken
 * for one, {"invoice_id", "invoice_number", "last_modified_time",
 * "line_items": []} deleted every stored line, set status, total,
 * customer_id and the rest to NULL and, a current detail, was never
 * fetched again. The header fields are needed for the same reason when the
 * lines are there: a custom body may carry lines and little else. */
static bool looks_detail(const struct tds_pjson *rec, const char *number_key)
{
    static const char *const always[] = {"last_modified_time", "status", "customer_id", "total",
                                         NULL};

    /* null is not there, nor is an empty list of lines */
    return tx_has(rec, number_key) && tx_has_all(rec, always) && tx_has_some(rec, "line_items");
}

bool tx_invoices_looks_detail(const struct tds_pjson *rec)
{
    return looks_detail(rec, "invoice_number");
}

bool tx_sales_orders_looks_detail(const struct tds_pjson *rec)
{
    return looks_detail(rec, "salesorder_number");
}

/* Whether v holds something: not null, not a blank string. */
static bool has_value(const struct tds_pjson *v)
{
    if (!v || v->type == TDS_PJ_NULL)
        return false;
    return v->type != TDS_PJ_STRING || !tds_value_blank(v->s, v->n);
}

/* Zoho writes a discount as an amount (190) or a percentage ("12.5%").
 * discount takes the amount: the number, or for a percentage Zoho's
 * discount_amount when it sends one (else NULL); discount_percent takes the
 * percentage's number, NULL for an amount. A record's own discount_percent
 * field, where it has one that is not null, is the column's. */
static int discount(struct tx *t, size_t row, const struct tds_pjson *obj)
{
    const struct tds_pjson *v = tds_pjson_get(obj, "discount");
    const struct tds_pjson *own_v = tds_pjson_get(obj, "discount_percent");
    bool own = own_v && own_v->type != TDS_PJ_NULL; /* null: as if not there */
    const char *pct;

    if (own)
        TRY(tx_col_value(t, row, "discount_percent", own_v, "discount_percent", true));
    if (!v)
        return 0;
    if (v->type == TDS_PJ_STRING && v->n > 0 && (pct = memchr(v->s, '%', v->n))) {
        const struct tds_pjson *amt = tds_pjson_get(obj, "discount_amount");
        TRY(tx_col_value(t, row, "discount", amt, amt ? "discount_amount" : "discount", true));
        if (own)
            return 0;
        /* the text before the sign, which must end the value (else the
         * whole text is the number, refused with the field's path) */
        struct tds_pjson num = *v;
        if (tds_value_blank(pct + 1, (size_t)(v->s + v->n - pct - 1)))
            num.n = (uint32_t)(pct - v->s);
        return tx_col_value(t, row, "discount_percent", &num, "discount", true);
    }
    TRY(tx_col_value(t, row, "discount", v, "discount", true));
    /* an amount: no percentage, whatever an earlier version had */
    return own ? 0 : tx_col_value(t, row, "discount_percent", NULL, "discount", true);
}

static const char *const line_skip[] = {"line_item_id", "position", "warehouse_id", "discount",
                                        "discount_percent", NULL};

static int lines(struct tx *t, size_t top, const struct tds_pjson *arr, const char *table)
{
    size_t first = t->n_rows;
    /* location_id first, as for stock (products.c: locations[] is the
     * current one), so a line joins its item's item_stock rows. */
    static const char *const site_keys[] = {"location_id", "warehouse_id", "line_warehouse_id"};

    if (!arr || arr->type == TDS_PJ_NULL)
        return 0;
    if (arr->type != TDS_PJ_ARRAY)
        return tx_fail(t, "wrong_type", "invalid line items in field 'line_items': expected an array");
    for (uint32_t i = 0; i < arr->n; i++) {
        const struct tds_pjson *l = &arr->u.items[i];
        const struct tds_pjson *site = NULL;
        const char *site_key = "warehouse_id";
        size_t row;
        char pos[16];

        tx_path_set(t, "line_items", i);
        if (l->type != TDS_PJ_OBJECT)
            return tx_fail(t, "wrong_type",
                           "invalid line item in field 'line_items[%u]': expected an object", i);
        TRY(tx_child(t, table, top, &row));
        TRY(tx_child_id(t, row, "line_item_id", l, "line_item_id"));
        int n = snprintf(pos, sizeof(pos), "%u", i + 1);
        char *p = tx_dup(t, pos, (size_t)n);
        if (!p)
            return -ENOMEM;
        tx_set(t, row, "position", p, (size_t)n);
        /* the first key with a value; else the first present (NULL) */
        for (size_t k = 0; k < 3 && !(site && has_value(site)); k++) {
            const struct tds_pjson *v = tds_pjson_get(l, site_keys[k]);

            if (v && (!site || has_value(v))) {
                site = v;
                site_key = site_keys[k];
            }
        }
        TRY(tx_col_value(t, row, "warehouse_id", site, site_key, true));
        TRY(discount(t, row, l));
        TRY(tx_cols(t, row, l, line_skip));
    }
    tx_path_clear(t);
    return tx_check_unique(t, first, "line_item_id", "line_items");
}

static const char *const header_skip[] = {"discount", "discount_percent", "custom_fields", NULL};

static int document(struct tx *t, const struct tds_pjson *rec, const char *table,
                    const char *id_key, const char *lines_table)
{
    size_t row;

    TRY(tx_top(t, table, t->detail ? TDS_ROWS_DETAIL : TDS_ROWS_LIST, rec, id_key,
               "last_modified_time", &row));
    TRY(tx_cols(t, row, rec, header_skip));
    TRY(discount(t, row, rec));
    TRY(tx_custom_fields(t, row, rec));
    if (!t->detail)
        return 0;
    return lines(t, row, tds_pjson_get(rec, "line_items"), lines_table);
}

int tx_invoices(struct tx *t, const struct tds_pjson *rec)
{
    return document(t, rec, "invoices", "invoice_id", "invoice_lines");
}

int tx_sales_orders(struct tx *t, const struct tds_pjson *rec)
{
    return document(t, rec, "sales_orders", "salesorder_id", "sales_order_lines");
}
