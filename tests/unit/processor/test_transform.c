/* test_transform — every rejection reason, a page where one record is bad and
 * the rest go through, deletes, webhook bodies, and the reject's raw text. */
#include <stdlib.h>

#include "helpers.h"
#include "util.h"

static void expect_reject(const char *entity, const char *json, const char *cls,
                          const char *reason)
{
    size_t before = h_rows.n_rejects;
    T_TRUE(h_record(entity, json, TDS_FORM_DETAIL));
    T_INT(h_rows.n_rejects, ==, before + 1);
    T_STR(h_res.reason_class, cls);
    T_STR(h_rows.rejects[before].reason, reason);
}

static void test_reasons(void)
{
    h_reset();
    expect_reject("items", "{\"name\":\"x\"}", "missing_id", "missing item_id");
    expect_reject("items", "{\"item_id\":\"\"}", "missing_id", "missing item_id");
    expect_reject("items", "{\"item_id\":1.5}", "invalid_id", "invalid id in field 'item_id': 1.5");
    expect_reject("items", "{\"item_id\":false}", "invalid_id",
                  "invalid id in field 'item_id': false");
    expect_reject("items", "{\"item_id\":{\"a\":1}}", "invalid_id",
                  "invalid id in field 'item_id': an object");
    expect_reject("items", "{\"item_id\":\"1\",\"rate\":\"abc\"}", "invalid_number",
                  "invalid number in field 'rate': 'abc'");
    /* a reference id as a JSON number that went through a double upstream */
    expect_reject("invoices", "{\"invoice_id\":\"9\",\"customer_id\":4.6e18}", "invalid_id",
                  "invalid id in field 'customer_id': 4.6e18");
    expect_reject("invoices", "{\"invoice_id\":\"9\",\"salesorder_id\":-1}", "invalid_id",
                  "invalid id in field 'salesorder_id': -1");
    expect_reject("sales_orders",
                  "{\"salesorder_id\":\"9\",\"line_items\":[{\"line_item_id\":\"2\",\"item_id\":1.5}]}",
                  "invalid_id", "invalid id in field 'line_items[0].item_id': 1.5");
    expect_reject("items", "{\"item_id\":\"1\",\"name\":{\"ar\":\"x\"}}", "wrong_type",
                  "invalid text in field 'name': an object");
    expect_reject("items", "{\"item_id\":\"1\",\"is_taxable\":\"maybe\"}", "invalid_boolean",
                  "invalid boolean in field 'is_taxable': 'maybe'");
    expect_reject("items", "{\"item_id\":\"1\",\"last_modified_time\":\"2024-02-01 08:00\"}",
                  "invalid_timestamp",
                  "invalid timestamp in field 'last_modified_time': '2024-02-01 08:00'");
    expect_reject("items", "{\"item_id\":\"1\",\"created_time\":\"31-12-2024\"}",
                  "invalid_timestamp", "invalid timestamp in field 'created_time': '31-12-2024'");
    expect_reject("items", "{\"item_id\":\"1\",\"name\":\"caf\xe9\"}", "invalid_utf8",
                  "invalid UTF-8 in field 'name'");
    expect_reject("items", "{\"item_id\":\"1\",\"name\":\"a\\u0000\"}", "invalid_text",
                  "NUL character (\\u0000) in field 'name'");
    expect_reject("items", "{\"item_id\":\"1\",\"n\\u0000\":\"a\"}", "invalid_text",
                  "NUL character (\\u0000) in a key");
    /* numbers jsonb cannot hold, in a field no column maps (kept in raw) and
     * in a custom field's value (kept in custom_fields jsonb) */
    expect_reject("items", "{\"item_id\":\"1\",\"package_weight\":1e999999}", "invalid_number",
                  "number out of range in field 'package_weight'");
    expect_reject("items",
                  "{\"item_id\":\"1\",\"custom_fields\":[{\"label\":\"Grams\",\"value\":1e-20000}]}",
                  "invalid_number", "number out of range in field 'value'");
    expect_reject("invoices", "{\"invoice_id\":\"1\",\"line_items\":[{\"line_item_id\":\"2\","
                  "\"rate\":\"1\",\"tax\":0.1e131073}]}",
                  "invalid_number", "number out of range in field 'tax'");
    expect_reject("items", "{\"item_id\":\"1\",", "invalid_json",
                  "invalid JSON at byte 15: expected a string key");
    expect_reject("items", "[1,2]", "wrong_type", "record is not a JSON object");
    expect_reject("items", "{\"item_id\":\"1\",\"locations\":{}}", "wrong_type",
                  "invalid stock sites in field 'locations': expected an array");
    expect_reject("items",
                  "{\"item_id\":\"1\",\"locations\":[{\"location_id\":\"5\",\"location_stock_on_hand\":\"x\"}]}",
                  "invalid_number",
                  "invalid number in field 'locations[0].location_stock_on_hand': 'x'");
    expect_reject("items", "{\"item_id\":\"1\",\"locations\":[{\"location_name\":\"W\"}]}",
                  "missing_id", "missing locations[0].location_id");
    expect_reject("items",
                  "{\"item_id\":\"1\",\"warehouses\":[{\"warehouse_id\":\"5\"},{\"warehouse_id\":5}]}",
                  "duplicate_key", "duplicate warehouse_id '5' in warehouses");
    expect_reject("items", "{\"item_id\":\"1\",\"custom_fields\":{\"a\":1}}", "wrong_type",
                  "invalid custom fields in field 'custom_fields': expected an array");
    expect_reject("item_groups",
                  "{\"group_id\":\"1\",\"items\":[{\"item_id\":\"2\"},{\"name\":\"v\"}]}",
                  "missing_id", "missing items[1].item_id");
    expect_reject("item_groups",
                  "{\"group_id\":\"1\",\"items\":[{\"item_id\":\"2\"},{\"item_id\":\"2\"}]}",
                  "duplicate_key", "duplicate item_id '2' in items");

    /* depth: 33 nested arrays inside the record */
    char deep[200];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof(deep), "{\"item_id\":\"1\",\"x\":");
    for (int i = 0; i < 32; i++)
        deep[n++] = '[';
    for (int i = 0; i < 32; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    expect_reject("items", deep, "too_deep", "JSON nested deeper than 32 levels");

    /* size: a record over 1 MiB; its raw is cut to 1 MiB in the reject */
    size_t big = 1024 * 1024 + 100;
    char *s = malloc(big + 1);
    T_TRUE(s != NULL);
    n = (size_t)snprintf(s, big, "{\"item_id\":\"1\",\"description\":\"");
    memset(s + n, 'a', big - n - 2);
    s[big - 2] = '"';
    s[big - 1] = '}';
    s[big] = '\0';
    expect_reject("items", s, "too_large", "record of 1048676 bytes is over the 1048576 byte limit");
    T_INT(h_rows.rejects[h_rows.n_rejects - 1].raw.n, ==, 1024 * 1024);
    free(s);

    T_INT(h_rows.n_sets, ==, 0); /* nothing of any rejected record was appended */
}

/* The reject keeps the record's id when it is known and its raw text; raw
 * with invalid UTF-8 is made valid text. */
static void test_reject_fields(void)
{
    h_reset();
    T_TRUE(h_record("items", "{\"item_id\":\"77\",\"rate\":\"x\"}", TDS_FORM_LIST));
    T_STR(h_rows.rejects[0].zoho_id, "77");
    T_STR(h_rows.rejects[0].entity, "items");
    T_STR(h_rows.rejects[0].raw.p, "{\"item_id\":\"77\",\"rate\":\"x\"}");
    T_TRUE(h_record("items", "{\"item_id\":\"78\",\"name\":\"a\xff\"}", TDS_FORM_LIST));
    T_NULL(h_rows.rejects[1].zoho_id); /* the parse failed before the id was read */
    T_STR(h_rows.rejects[1].raw.p, "{\"item_id\":\"78\",\"name\":\"a\xef\xbf\xbd\"}");
}

static void test_page_one_bad(void)
{
    const char *recs[] = {
        "{\"item_id\":\"1\",\"name\":\"A\",\"rate\":1,\"locations\":[{\"location_id\":\"9\",\"location_stock_on_hand\":1}],\"last_modified_time\":\"2024-01-01T00:00:00+0000\"}",
        "{\"item_id\":\"2\",\"name\":\"B\",\"rate\":\"1,5\",\"locations\":[{\"location_id\":\"9\"}],\"last_modified_time\":\"2024-01-01T00:00:00+0000\"}",
        "{\"item_id\":\"3\",\"name\":\"C\",\"rate\":3,\"locations\":[{\"location_id\":\"9\"},{\"location_id\":\"8\"}],\"last_modified_time\":\"2024-01-01T00:00:00+0000\"}",
    };
    const struct tds_msg_rowset *s, *st;

    h_reset();
    for (size_t i = 0; i < 3; i++)
        h_record("items", recs[i], TDS_FORM_DETAIL);
    T_INT(h_rows.n_rejects, ==, 1);
    T_STR(h_rows.rejects[0].zoho_id, "2");
    T_STR(h_rows.rejects[0].reason, "invalid number in field 'rate': '1,5'");
    T_TRUE((s = h_set("items", TDS_ROWS_DETAIL, 0)) != NULL);
    T_INT(s->n_rows, ==, 2);
    T_V(s, 0, "item_id", "1");
    T_V(s, 1, "item_id", "3");
    T_TRUE((st = h_set("item_stock", TDS_ROWS_CHILD, 0)) != NULL);
    T_INT(st->n_rows, ==, 3); /* item 2's stock row did not leak */
    T_V(st, 0, "item_id", "1");
    T_V(st, 1, "item_id", "3");
    T_V(st, 2, "item_id", "3");
    T_INT(h_rows.n_sets, ==, 2);
}

static void test_deletes_and_events(void)
{
    const struct tds_entity *items = tds_entity_find("items");
    const struct tds_entity *contacts = tds_entity_find("contacts");
    const struct tds_msg_rowset *d;
    const char *body = "{\"contact\":{\"contact_id\":\"555\"}}";

    h_reset();
    T_INT(tds_transform_delete(h_tf, &h_rows, items, "60001", "4815000000044208", NULL, 0, &h_res), ==, 0);
    T_INT(tds_transform_delete(h_tf, &h_rows, items, "60001", "4815000000044209", NULL, 0, &h_res), ==, 0);
    T_INT(tds_transform_delete(h_tf, &h_rows, contacts, "60001", NULL, body, strlen(body), &h_res), ==, 0);
    T_TRUE(!h_res.rejected);
    T_INT(tds_transform_delete(h_tf, &h_rows, items, "60001", "bad id!", NULL, 0, &h_res), ==, 0);
    T_TRUE(h_res.rejected);
    T_STR(h_rows.rejects[0].reason, "invalid id in field 'item_id': 'bad id!'");
    T_TRUE((d = h_set("items", TDS_ROWS_DELETE, 0)) != NULL);
    T_INT(d->n_cols, ==, 2);
    T_STR(d->cols[0], "org_id");
    T_STR(d->cols[1], "item_id");
    T_INT(d->n_rows, ==, 2);
    T_V(d, 1, "item_id", "4815000000044209");
    T_TRUE((d = h_set("contacts", TDS_ROWS_DELETE, 0)) != NULL);
    T_V(d, 0, "contact_id", "555");

    /* webhook bodies: wrapped, bare, or wrong */
    T_TRUE(!h_event("contacts", "{\"contact_id\":\"9\",\"contact_name\":\"Bare\"}"));
    T_TRUE((d = h_set("contacts", TDS_ROWS_LIST, 0)) != NULL); /* no persons/addresses: list */
    T_V(d, 0, "contact_name", "Bare");
    T_TRUE(h_event("contacts", "{\"invoice\":{\"invoice_id\":\"1\"}}"));
    T_STR(h_rows.rejects[1].reason, "webhook body has no 'contact' object");
    T_TRUE(h_event("contacts", "not json"));
    T_STR(h_res.reason_class, "invalid_json");
}

/* custom_fields[] of a 1 MiB record, each field labelled differently: the
 * key of each (its label, or its api_name when an earlier field has the same
 * label) is found by sorting the labels once, not by scanning the earlier
 * ones for each field, twice (32,110 fields took 11 s that way). */
static void test_many_custom_fields_are_fast(void)
{
    struct tds_buf b = {0};
    const struct tds_msg_rowset *s;
    double t0;
    size_t n;

    T_INT(tds_buf_addf(&b, "{\"item_id\":\"1\",\"custom_fields\":["), ==, 0);
    for (n = 0; b.len < H_RECORD_MAX - 48; n++)
        T_INT(tds_buf_addf(&b, "%s{\"label\":\"%zu\",\"api_name\":\"a\"}", n ? "," : "", n),
              ==, 0);
    T_INT(tds_buf_add(&b, "]}", 2), ==, 0);
    h_reset();
    t0 = h_cpu_s();
    T_TRUE(!h_record("items", b.p, TDS_FORM_LIST));
    t0 = h_cpu_s() - t0;
    fprintf(stderr, "  %zu custom fields, %zu bytes: %.3f s CPU\n", n, b.len, t0);
    T_TRUE(t0 < 1.0);
    T_TRUE((s = h_set("items", TDS_ROWS_LIST, 0)) != NULL);
    T_TRUE(strncmp(V(s, 0, "custom_fields"), "{\"0\":null,\"1\":null,", 19) == 0);
    tds_buf_deinit(&b);
}

/* The same keys as before the labels were sorted: a label, the api_name of
 * a later field labelled alike (the label compared as decoded text), the
 * label when the field has no api_name (or one that is no string), the
 * api_name when the label is no string; and a field with neither rejects the
 * record, naming the first such field. Once with few fields, once with over
 * 16 (the sorted path). */
static void test_custom_field_keys(void)
{
    struct tds_buf b = {0}, want = {0};
    const struct tds_msg_rowset *s;

    for (int reps = 1; reps <= 5; reps += 4) {
        tds_buf_reset(&b);
        tds_buf_reset(&want);
        T_INT(tds_buf_addf(&b, "{\"item_id\":\"1\",\"custom_fields\":["), ==, 0);
        for (int r = 0; r < reps; r++) {
            T_INT(tds_buf_addf(&b,
                "%s{\"label\":\"L%d\",\"api_name\":\"a%d\",\"value\":1},"
                "{\"label\":\"B\",\"api_name\":\"b%d\",\"value\":2},"
                "{\"label\":\"L%d\",\"api_name\":\"c%d\",\"value\":3},"
                "{\"label\":\"L%d\",\"value\":4},"
                "{\"label\":\"L%d\",\"api_name\":7,\"value\":5},"
                "{\"label\":7,\"api_name\":\"d%d\",\"value\":6},"
                "{\"label\":\"\\u004c%d\",\"api_name\":\"e%d\"}",
                r ? "," : "", r, r, r, r, r, r, r, r, r, r), ==, 0);
            T_INT(tds_buf_addf(&want, "%s\"L%d\":1,", r ? "," : "{", r), ==, 0);
            if (r)
                T_INT(tds_buf_addf(&want, "\"b%d\":2,", r), ==, 0);
            else
                T_INT(tds_buf_addf(&want, "\"B\":2,"), ==, 0);
            T_INT(tds_buf_addf(&want, "\"c%d\":3,\"L%d\":4,\"L%d\":5,\"d%d\":6,\"e%d\":null", r, r,
                               r, r, r), ==, 0);
        }
        T_INT(tds_buf_add(&b, "]}", 2), ==, 0);
        T_INT(tds_buf_add(&want, "}", 1), ==, 0);
        h_reset();
        T_TRUE(!h_record("items", b.p, TDS_FORM_LIST));
        T_TRUE((s = h_set("items", TDS_ROWS_LIST, 0)) != NULL);
        T_V(s, 0, "custom_fields", want.p);
    }

    /* neither label nor api_name: the first such field is named */
    tds_buf_reset(&b);
    T_INT(tds_buf_addf(&b, "{\"item_id\":\"1\",\"custom_fields\":["), ==, 0);
    for (int k = 0; k < 18; k++)
        T_INT(tds_buf_addf(&b, "{\"label\":\"x\",\"api_name\":\"y%d\"},", k), ==, 0);
    T_INT(tds_buf_addf(&b, "{\"value\":1},2,{\"label\":null}]}"), ==, 0);
    h_reset();
    T_TRUE(h_record("items", b.p, TDS_FORM_LIST));
    T_STR(h_reject_reason(0),
          "invalid custom field in field 'custom_fields[18]': expected an object with a label");
    T_TRUE(h_record("items", "{\"item_id\":\"1\",\"custom_fields\":[{\"label\":\"x\"},3]}",
                    TDS_FORM_LIST));
    T_STR(h_reject_reason(1),
          "invalid custom field in field 'custom_fields[1]': expected an object with a label");
    tds_buf_deinit(&b);
    tds_buf_deinit(&want);
}

/* A webhook body is a DETAIL (its child rows and every column replace the
 * stored ones) only when it carries what Zoho's detail of the entity always
 * carries: the name field, the modified time and the parts the child rows
 * come from. Without any one of them it is a LIST of the columns it carries
 * (the writer leaves the others, and every child row, alone; the fetcher
 * fetches the detail). Before, a body with the child parts alone was a
 * DETAIL: its absent columns became NULL, its absent child rows (a contact's
 * shipping address) were deleted, and the row, a current detail, was never
 * fetched again. */
static void test_webhook_detail_needs_the_whole_record(void)
{
    static const struct {
        const char *entity, *wrap, *table, *child;
        const char *part[6]; /* part[0]: the id, kept; the others are needed */
    } cases[] = {
        {"contacts", "contact", "contacts", "contact_addresses",
         {"\"contact_id\":\"7\"", "\"contact_name\":\"A\"",
          "\"last_modified_time\":\"2024-01-15T10:30:00+0300\"",
          "\"contact_persons\":[{\"contact_person_id\":\"9\"}]",
          "\"billing_address\":{\"city\":\"Riyadh\"}", "\"shipping_address\":{\"city\":\"Jeddah\"}"}},
        {"items", "item", "items", "item_stock",
         {"\"item_id\":\"7\"", "\"name\":\"Mug\"",
          "\"last_modified_time\":\"2024-01-15T10:30:00+0300\"",
          "\"locations\":[{\"location_id\":\"5\",\"location_stock_on_hand\":3}]"}},
        {"items", "item", "items", "item_stock",
         {"\"item_id\":\"7\"", "\"name\":\"Mug\"",
          "\"last_modified_time\":\"2024-01-15T10:30:00+0300\"",
          "\"warehouses\":[{\"warehouse_id\":\"5\"}]"}},
        {"item_groups", "item_group", "item_groups", NULL,
         {"\"group_id\":\"7\"", "\"group_name\":\"Tee\"",
          "\"last_modified_time\":\"2024-01-15T10:30:00+0300\"", "\"items\":[{\"item_id\":\"8\"}]"}},
        {"invoices", "invoice", "invoices", "invoice_lines",
         {"\"invoice_id\":\"7\"", "\"invoice_number\":\"INV-7\"",
          "\"last_modified_time\":\"2024-01-15T10:30:00+0300\"",
          "\"line_items\":[{\"line_item_id\":\"3\"}]"}},
        {"sales_orders", "salesorder", "sales_orders", "sales_order_lines",
         {"\"salesorder_id\":\"7\"", "\"salesorder_number\":\"SO-7\"",
          "\"last_modified_time\":\"2024-01-15T10:30:00+0300\"",
          "\"line_items\":[{\"line_item_id\":\"3\"}]"}},
    };
    char body[1024];

    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        size_t n = 1;
        while (n < 6 && cases[c].part[n])
            n++;
        /* skip == 0: all of it; else without part[skip] */
        for (size_t skip = 0; skip < n; skip++) {
            size_t k = (size_t)snprintf(body, sizeof(body), "{\"%s\":{", cases[c].wrap);
            for (size_t p = 0; p < n; p++)
                if (p != skip || skip == 0)
                    k += (size_t)snprintf(body + k, sizeof(body) - k, "%s%s",
                                          body[k - 1] == '{' ? "" : ",", cases[c].part[p]);
            snprintf(body + k, sizeof(body) - k, "}}");
            h_reset();
            T_TRUE(!h_event(cases[c].entity, body));
            if (skip == 0) {
                T_TRUE(h_set(cases[c].table, TDS_ROWS_DETAIL, 0) != NULL);
                T_INT(h_nsets(cases[c].table, TDS_ROWS_LIST), ==, 0);
                if (cases[c].child)
                    T_INT(h_nsets(cases[c].child, TDS_ROWS_CHILD), ==, 1);
                continue;
            }
            const struct tds_msg_rowset *s = h_set(cases[c].table, TDS_ROWS_LIST, 0);
            if (!s)
                T_FAIL("%s without %s: expected a LIST", cases[c].entity, cases[c].part[skip]);
            T_INT(h_nsets(cases[c].table, TDS_ROWS_DETAIL), ==, 0);
            T_INT(h_rows.n_sets, ==, strcmp(cases[c].entity, "item_groups") == 0 &&
                                         !strstr(cases[c].part[skip], "items") ? 2 : 1);
            T_V(s, 0, "is_detail", "false");
            /* only the columns it carried, beside the lead ones */
            for (size_t i = 6; i < s->n_cols; i++) {
                char key[80];
                snprintf(key, sizeof(key), "\"%s\":", s->cols[i]);
                bool carried = strstr(body, key) != NULL ||
                               (strcmp(s->cols[i], "item_count") == 0 && strstr(body, "\"items\":"));
                if (!carried)
                    T_FAIL("%s: column %s it did not carry", body, s->cols[i]);
            }
        }
    }

    /* the review's two: child parts alone are no detail */
    h_reset();
    T_TRUE(!h_event("contacts",
                    "{\"contact\":{\"contact_id\":\"7\",\"last_modified_time\":"
                    "\"2024-01-15T10:30:00+0300\",\"contact_name\":\"A\",\"contact_persons\":"
                    "[{\"contact_person_id\":\"9\"}],\"billing_address\":{\"city\":\"Riyadh\"}}}"));
    const struct tds_msg_rowset *s = h_set("contacts", TDS_ROWS_LIST, 0);
    T_TRUE(s != NULL);
    T_INT(h_rows.n_sets, ==, 1);
    T_V(s, 0, "contact_name", "A");
    T_NOCOL(s, "email");
    T_NOCOL(s, "company_name");
    h_reset();
    T_TRUE(!h_event("items", "{\"item\":{\"item_id\":\"7\",\"last_modified_time\":"
                             "\"2024-01-15T10:30:00+0300\",\"locations\":[{\"location_id\":\"5\"}]}}"));
    T_TRUE((s = h_set("items", TDS_ROWS_LIST, 0)) != NULL);
    T_INT(h_rows.n_sets, ==, 1);
    T_NOCOL(s, "name");
    T_NOCOL(s, "sku");
    T_NOCOL(s, "rate");
}

int main(void)
{
    T_RUN(test_reasons);
    T_RUN(test_reject_fields);
    T_RUN(test_page_one_bad);
    T_RUN(test_deletes_and_events);
    T_RUN(test_webhook_detail_needs_the_whole_record);
    T_RUN(test_custom_field_keys);
    T_RUN(test_many_custom_fields_are_fast);
    h_done();
    return 0;
}
