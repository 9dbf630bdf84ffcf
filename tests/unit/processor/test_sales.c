/* test_sales — invoices and sales orders with line items. */
#include "helpers.h"
#include "util.h"

static const char *INVOICE =
    "{\"invoice_id\":\"982000000567114\",\"invoice_number\":\"INV-00003\",\"status\":\"sent\","
    "\"date\":\"2024-02-29\",\"due_date\":\"2024-03-30\",\"reference_number\":\"PO-77\","
    "\"customer_id\":\"982000000567001\",\"customer_name\":\"شركة الأمل\","
    "\"salesperson_name\":\"\",\"salesperson_id\":\" \",\"currency_code\":\"SAR\","
    "\"exchange_rate\":1.0,\"discount\":\"10.00%\",\"discount_amount\":15.5,"
    "\"shipping_charge\":\"0.00\",\"adjustment\":-0.01,\"sub_total\":155,\"tax_total\":23.25,"
    "\"total\":162.74,\"balance\":\"162.74\",\"salesorder_id\":\"\","
    "\"location_id\":\"982000000000331\",\"location_name\":\"الرياض\","
    "\"custom_fields\":[{\"label\":\"Branch\",\"value\":\"جدة\"}],"
    "\"line_items\":["
    "{\"line_item_id\":\"982000000567021\",\"item_id\":\"982000000030049\",\"sku\":\"SKU-1\","
    "\"name\":\"Hard Drive\",\"description\":\"500GB\",\"item_order\":1,\"unit\":\"pcs\","
    "\"quantity\":2,\"rate\":\"77.50\",\"discount\":0,\"tax_id\":\"982000000557028\","
    "\"tax_name\":\"VAT\",\"tax_percentage\":15,\"item_total\":155.00,"
    "\"warehouse_id\":\"982000000000100\"},"
    "{\"line_item_id\":\"982000000567022\",\"item_id\":\"\",\"name\":\"Service\","
    "\"quantity\":\"1.000\",\"rate\":0,\"discount\":\"5%\",\"tax_id\":\"\",\"item_total\":0,"
    "\"location_id\":\"982000000000331\"}],"
    "\"created_time\":\"2024-02-29T10:00:00+0300\",\"last_modified_time\":\"2024-03-01T11:30:00+0300\"}";

static void test_invoice_detail(void)
{
    const struct tds_msg_rowset *s, *l;

    h_reset();
    T_TRUE(!h_record("invoices", INVOICE, TDS_FORM_DETAIL));
    T_TRUE((s = h_set("invoices", TDS_ROWS_DETAIL, 0)) != NULL);
    h_check_columns(s);
    T_V(s, 0, "invoice_id", "982000000567114");
    T_V(s, 0, "modified_time", "2024-03-01 11:30:00+03:00");
    T_V(s, 0, "invoice_number", "INV-00003");
    T_V(s, 0, "reference_number", "PO-77");
    T_V(s, 0, "status", "sent");
    T_V(s, 0, "date", "2024-02-29");
    T_V(s, 0, "customer_id", "982000000567001");
    T_V(s, 0, "customer_name", "شركة الأمل");
    T_V(s, 0, "salesperson_name", "");
    T_V(s, 0, "currency_code", "SAR");
    T_V(s, 0, "exchange_rate", "1.0");
    T_V(s, 0, "discount", "15.5"); /* a percentage: the amount instead */
    T_V(s, 0, "discount_percent", "10.00");
    T_V(s, 0, "location_id", "982000000000331");
    T_V(s, 0, "location_name", "الرياض");
    T_V(s, 0, "shipping_charge", "0.00");
    T_V(s, 0, "adjustment", "-0.01");
    T_V(s, 0, "sub_total", "155");
    T_V(s, 0, "tax_total", "23.25");
    T_V(s, 0, "total", "162.74");
    T_V(s, 0, "custom_fields", "{\"Branch\":\"جدة\"}");
    T_V(s, 0, "created_time", "2024-02-29 10:00:00+03:00");
    T_V(s, 0, "due_date", "2024-03-30");
    T_V(s, 0, "balance", "162.74");
    T_VNULL(s, 0, "salesorder_id");

    T_TRUE((l = h_set("invoice_lines", TDS_ROWS_CHILD, 0)) != NULL);
    h_check_columns(l);
    T_INT(l->n_rows, ==, 2);
    T_V(l, 0, "invoice_id", "982000000567114");
    T_V(l, 0, "line_item_id", "982000000567021");
    T_V(l, 0, "position", "1");
    T_V(l, 0, "item_id", "982000000030049");
    T_V(l, 0, "sku", "SKU-1");
    T_V(l, 0, "name", "Hard Drive");
    T_V(l, 0, "description", "500GB");
    T_V(l, 0, "unit", "pcs");
    T_V(l, 0, "quantity", "2");
    T_V(l, 0, "rate", "77.50");
    T_V(l, 0, "discount", "0");
    T_VNULL(l, 0, "discount_percent"); /* an amount */
    T_V(l, 0, "tax_id", "982000000557028");
    T_V(l, 0, "tax_name", "VAT");
    T_V(l, 0, "tax_percentage", "15");
    T_V(l, 0, "item_total", "155.00");
    T_V(l, 0, "warehouse_id", "982000000000100");
    T_V(l, 1, "position", "2");
    T_VNULL(l, 1, "item_id");
    T_V(l, 1, "quantity", "1.000");
    T_VNULL(l, 1, "discount");
    T_V(l, 1, "discount_percent", "5");
    T_VNULL(l, 1, "tax_id");
    T_VNULL(l, 1, "sku");
    T_V(l, 1, "warehouse_id", "982000000000331");

    /* a record's own discount_percent wins; null is as if not there */
    h_reset();
    T_TRUE(!h_record("invoices",
                     "{\"invoice_id\":\"9\",\"discount\":\"10%\",\"discount_percent\":null,"
                     "\"line_items\":[{\"line_item_id\":\"a\",\"discount\":\"10%\",\"discount_percent\":null},"
                     "{\"line_item_id\":\"b\",\"discount\":\"10%\",\"discount_percent\":12.5}]}",
                     TDS_FORM_DETAIL));
    T_TRUE((s = h_set("invoices", TDS_ROWS_DETAIL, 0)) != NULL);
    T_V(s, 0, "discount_percent", "10");
    T_TRUE((l = h_set("invoice_lines", TDS_ROWS_CHILD, 0)) != NULL);
    T_V(l, 0, "discount_percent", "10");
    T_V(l, 1, "discount_percent", "12.5");
}

static void test_sales_order(void)
{
    const struct tds_msg_rowset *s, *l;
    const char *so =
        "{\"salesorder\":{\"salesorder_id\":\"4815000000100001\",\"salesorder_number\":\"SO-00012\","
        "\"date\":\"2024-05-01\",\"shipment_date\":\"\",\"status\":\"confirmed\","
        "\"order_status\":\"confirmed\",\"invoiced_status\":\"not_invoiced\",\"paid_status\":\"unpaid\","
        "\"shipped_status\":\"pending\",\"delivery_method\":\"Courier\",\"customer_id\":4815000000000777,"
        "\"customer_name\":\"Acme\",\"currency_code\":\"USD\",\"exchange_rate\":\"3.75\",\"total\":100,"
        "\"line_items\":[{\"line_item_id\":\"4815000000100101\",\"item_id\":\"4815000000044208\","
        "\"quantity\":4,\"quantity_invoiced\":0,\"quantity_packed\":\"2\",\"quantity_shipped\":\"\","
        "\"quantity_delivered\":1,\"quantity_cancelled\":\"0.5\",\"quantity_returned\":0,"
        "\"quantity_backordered\":\"1\",\"discount\":\" 12.5 % \","
        "\"rate\":25,\"item_total\":100,\"line_warehouse_id\":\"4815000000000331\"}],"
        "\"last_modified_time\":\"2024-05-01T09:00:00+0000\"}}";

    h_reset();
    T_TRUE(!h_event("sales_orders", so)); /* line_items → detail */
    T_TRUE((s = h_set("sales_orders", TDS_ROWS_DETAIL, 0)) != NULL);
    h_check_columns(s);
    T_V(s, 0, "salesorder_id", "4815000000100001");
    T_V(s, 0, "salesorder_number", "SO-00012");
    T_V(s, 0, "date", "2024-05-01");
    T_VNULL(s, 0, "shipment_date");
    T_V(s, 0, "status", "confirmed");
    T_V(s, 0, "order_status", "confirmed");
    T_V(s, 0, "invoiced_status", "not_invoiced");
    T_V(s, 0, "paid_status", "unpaid");
    T_V(s, 0, "shipped_status", "pending");
    T_V(s, 0, "delivery_method", "Courier");
    T_V(s, 0, "customer_id", "4815000000000777");
    T_V(s, 0, "exchange_rate", "3.75");
    T_V(s, 0, "total", "100");
    T_VNULL(s, 0, "discount");
    T_VNULL(s, 0, "custom_fields");
    T_TRUE((l = h_set("sales_order_lines", TDS_ROWS_CHILD, 0)) != NULL);
    h_check_columns(l);
    T_V(l, 0, "salesorder_id", "4815000000100001");
    T_V(l, 0, "quantity", "4");
    T_V(l, 0, "quantity_invoiced", "0");
    T_V(l, 0, "quantity_packed", "2");
    T_VNULL(l, 0, "quantity_shipped");
    T_V(l, 0, "quantity_delivered", "1");
    T_V(l, 0, "quantity_cancelled", "0.5");
    T_V(l, 0, "quantity_returned", "0");
    T_V(l, 0, "quantity_backordered", "1");
    T_V(l, 0, "discount_percent", "12.5");
    T_VNULL(l, 0, "discount");
    T_V(l, 0, "warehouse_id", "4815000000000331");
}

/* A line's site: the first key holding an id, location_id first (as the
 * item's stock rows use it); a null or blank key is passed over. */
static void test_line_site(void)
{
    const struct tds_msg_rowset *l;
    const char *inv =
        "{\"invoice_id\":\"3\",\"last_modified_time\":\"2024-02-01T08:00:00+0530\","
        "\"line_items\":[{\"line_item_id\":\"31\",\"warehouse_id\":\"W1\",\"location_id\":\"L1\"},"
        "{\"line_item_id\":\"32\",\"warehouse_id\":null,\"location_id\":\"L1\"},"
        "{\"line_item_id\":\"33\",\"warehouse_id\":\"\",\"line_warehouse_id\":\"L2\"},"
        "{\"line_item_id\":\"34\",\"warehouse_id\":\"W3\"},"
        "{\"line_item_id\":\"35\",\"location_id\":null,\"warehouse_id\":\" \"},"
        /* a tab or a line break is blank too (it was taken as the site) */
        "{\"line_item_id\":\"36\",\"location_id\":\"\\t\",\"warehouse_id\":\"W6\"},"
        "{\"line_item_id\":\"37\",\"location_id\":\" \\r\\n\",\"line_warehouse_id\":\"W7\"}]}";

    h_reset();
    T_TRUE(!h_record("invoices", inv, TDS_FORM_DETAIL));
    T_TRUE((l = h_set("invoice_lines", TDS_ROWS_CHILD, 0)) != NULL);
    T_INT(l->n_rows, ==, 7);
    T_V(l, 0, "warehouse_id", "L1");
    T_V(l, 1, "warehouse_id", "L1");
    T_V(l, 2, "warehouse_id", "L2");
    T_V(l, 3, "warehouse_id", "W3");
    T_VNULL(l, 4, "warehouse_id");
    T_V(l, 5, "warehouse_id", "W6");
    T_V(l, 6, "warehouse_id", "W7");
}

static void test_invoice_list_and_rejects(void)
{
    const struct tds_msg_rowset *s;
    h_reset();
    T_TRUE(!h_record("invoices",
                     "{\"invoice_id\":\"1\",\"invoice_number\":\"INV-1\",\"status\":\"paid\","
                     "\"date\":\"2024-01-31\",\"due_date\":\"\",\"total\":10,\"balance\":0,"
                     "\"last_modified_time\":\"2024-02-01T00:00:00+0000\"}", TDS_FORM_LIST));
    T_TRUE((s = h_set("invoices", TDS_ROWS_LIST, 0)) != NULL);
    T_INT(s->n_cols, ==, 6 + 6);
    T_VNULL(s, 0, "due_date");
    T_INT(h_nsets("invoice_lines", TDS_ROWS_CHILD), ==, 0);

    T_TRUE(h_record("invoices", "{\"invoice_id\":\"2\",\"date\":\"2024-02-30\"}", TDS_FORM_LIST));
    T_STR(h_reject_reason(0), "invalid date in field 'date': '2024-02-30'");
    T_STR(h_res.reason_class, "invalid_date");
    T_TRUE(h_record("invoices",
                    "{\"invoice_id\":\"3\",\"line_items\":[{\"line_item_id\":\"9\",\"rate\":\"abc\"}]}",
                    TDS_FORM_DETAIL));
    T_STR(h_reject_reason(1), "invalid number in field 'line_items[0].rate': 'abc'");
    T_TRUE(h_record("invoices",
                    "{\"invoice_id\":\"4\",\"line_items\":[{\"line_item_id\":\"9\"},{\"line_item_id\":\"9\"}]}",
                    TDS_FORM_DETAIL));
    T_STR(h_reject_reason(2), "duplicate line_item_id '9' in line_items");
    T_TRUE(h_record("invoices",
                    "{\"invoice_id\":\"5\",\"last_modified_time\":\"2024-13-01T00:00:00+0000\"}",
                    TDS_FORM_DETAIL));
    T_STR(h_reject_reason(3), "invalid timestamp in field 'last_modified_time': '2024-13-01T00:00:00+0000'");
    /* a percentage with text after its sign, or not a number before it */
    T_TRUE(h_record("invoices",
                    "{\"invoice_id\":\"6\",\"line_items\":[{\"line_item_id\":\"9\",\"discount\":\"10% off\"}]}",
                    TDS_FORM_DETAIL));
    T_STR(h_reject_reason(4), "invalid number in field 'line_items[0].discount': '10% off'");
    T_TRUE(h_record("invoices", "{\"invoice_id\":\"7\",\"discount\":\"ten%\"}", TDS_FORM_LIST));
    T_STR(h_reject_reason(5), "invalid number in field 'discount': 'ten'");
    /* nothing of the rejected invoices leaked into sets */
    T_INT(h_rows.n_sets, ==, 1);
    T_INT(h_set("invoices", TDS_ROWS_LIST, 0)->n_rows, ==, 1);
}

/* Many lines: the duplicate check sorts instead of comparing pairs, and still
 * names the key whose first line comes first; 20,000 distinct lines pass. */
static void test_many_lines(void)
{
    struct tds_buf b = {0};
    const struct tds_msg_rowset *s;

    h_reset();
    /* 40 lines: '20' again at 38, '9' again at 35; '9' (line 9) comes first,
     * though '20' sorts first */
    T_INT(tds_buf_addf(&b, "{\"invoice_id\":\"7\",\"line_items\":["), ==, 0);
    for (int k = 0; k < 40; k++)
        T_INT(tds_buf_addf(&b, "%s{\"line_item_id\":\"%d\"}", k ? "," : "",
                           k == 38 ? 20 : k == 35 ? 9 : k), ==, 0);
    T_INT(tds_buf_addf(&b, "]}"), ==, 0);
    T_TRUE(h_record("invoices", b.p, TDS_FORM_DETAIL));
    T_STR(h_reject_reason(0), "duplicate line_item_id '9' in line_items");
    tds_buf_deinit(&b);

    /* keys that differ only in length are different */
    T_INT(tds_buf_addf(&b, "{\"invoice_id\":\"8\",\"line_items\":["), ==, 0);
    for (int k = 0; k < 20000; k++)
        T_INT(tds_buf_addf(&b, "%s{\"line_item_id\":\"%d\"}", k ? "," : "", k), ==, 0);
    T_INT(tds_buf_addf(&b, "]}"), ==, 0);
    T_TRUE(!h_record("invoices", b.p, TDS_FORM_DETAIL));
    T_TRUE((s = h_set("invoice_lines", TDS_ROWS_CHILD, 0)) != NULL);
    T_INT(s->n_rows, ==, 20000);
    tds_buf_deinit(&b);
}

/* A webhook whose child list is null is no DETAIL: as one, its (no) child
 * rows would replace every stored line, stock row or contact person. */
static void test_null_child_lists_are_not_details(void)
{
    static const struct {
        const char *entity, *table, *child, *body;
    } cases[] = {
        {"invoices", "invoices", "invoice_lines",
         "{\"invoice\":{\"invoice_id\":\"1\",\"last_modified_time\":\"2024-01-15T10:20:30+0530\","
         "\"line_items\":null}}"},
        {"items", "items", "item_stock",
         "{\"item\":{\"item_id\":\"2\",\"name\":\"x\",\"last_modified_time\":"
         "\"2024-01-15T10:20:30+0530\",\"locations\":null,\"warehouses\":null}}"},
        {"contacts", "contacts", "contact_persons",
         "{\"contact\":{\"contact_id\":\"3\",\"contact_name\":\"x\",\"last_modified_time\":"
         "\"2024-01-15T10:20:30+0530\",\"contact_persons\":null,\"billing_address\":{}}}"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        h_reset();
        T_TRUE(!h_event(cases[i].entity, cases[i].body));
        T_INT(h_nsets(cases[i].table, TDS_ROWS_DETAIL), ==, 0);
        T_TRUE(h_set(cases[i].table, TDS_ROWS_LIST, 0) != NULL);
        T_INT(h_nsets(cases[i].child, TDS_ROWS_CHILD), ==, 0);
    }
}

int main(void)
{
    T_RUN(test_invoice_detail);
    T_RUN(test_sales_order);
    T_RUN(test_line_site);
    T_RUN(test_invoice_list_and_rejects);
    T_RUN(test_many_lines);
    T_RUN(test_null_child_lists_are_not_details);
    h_done();
    return 0;
}
