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
    /* A record that does not parse still names its id when its structure
     * holds one (read by jscan): before, the reject had none, and an
     * operator could not tell which record it was without reading raw. */
    T_TRUE(h_record("items", "{\"item_id\":\"78\",\"name\":\"a\xff\"}", TDS_FORM_LIST));
    T_STR(h_rows.rejects[1].zoho_id, "78");
    T_STR(h_rows.rejects[1].raw.p, "{\"item_id\":\"78\",\"name\":\"a\xef\xbf\xbd\"}");
    T_TRUE(h_record("items", "{\"name\":\"\\ud83d\",\"item_id\":79}", TDS_FORM_LIST));
    T_STR(h_rows.rejects[2].zoho_id, "79");
    /* a webhook body: the id in its record's object */
    T_TRUE(h_event("invoices", "{\"invoice\":{\"invoice_id\":\"80\",\"notes\":\"a\xff\"}}"));
    T_STR(h_rows.rejects[3].zoho_id, "80");
    /* a record cut short names the id it got to */
    T_TRUE(h_record("items", "{\"item_id\":\"81\",", TDS_FORM_LIST));
    T_STR(h_rows.rejects[4].zoho_id, "81");
    /* no id, one that is not an id, or no structure to find it in */
    T_TRUE(h_record("items", "{\"item_id\":\"..\",\"name\":\"a\xff\"}", TDS_FORM_LIST));
    T_NULL(h_rows.rejects[5].zoho_id);
    T_TRUE(h_record("items", "{\"name\":\"a\xff\"}", TDS_FORM_LIST));
    T_NULL(h_rows.rejects[6].zoho_id);
    T_TRUE(h_record("items", "not json \"item_id\":\"82\"", TDS_FORM_LIST));
    T_NULL(h_rows.rejects[7].zoho_id);
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
    /* the column lists the writer stages at connect (writer/apply.c,
     * prewarm()) are these, name for name */
    {
        const struct tds_msg_rowset *sets[] = {s, st};

        for (size_t k = 0; k < 2; k++) {
            const struct tds_table *t = tds_table_find(sets[k]->table);
            const char *cols[6 + 64];
            size_t n = tds_table_set_cols(t, k == 0, UINT64_MAX, cols);

            T_INT(sets[k]->n_cols, ==, n);
            T_INT(n, ==, (k == 0 ? 6 : 2) + t->n_cols);
            for (size_t c = 0; c < n; c++)
                T_STR(sets[k]->cols[c], cols[c]);
        }
    }
}

static void test_deletes_and_events(void)
{
    const struct tds_entity *items = tds_entity_find("items");
    const struct tds_entity *contacts = tds_entity_find("contacts");
    const struct tds_msg_rowset *d;
    const char *cols[6 + 64];
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
    T_INT(tds_table_set_cols(tds_table_find("items"), false, 0, cols), ==, 2); /* the same */
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

/* custom_fields[] of a 1 MiB record, each field labelled differently, then
 * each labelled alike (every field but the first keyed by its api_name):
 * the keys are found by sorting the fields' labels, api_names and ids
 * once, not by scanning the earlier fields for each one (32,110 fields took
 * 11 s that way). */
static void test_many_custom_fields_are_fast(void)
{
    struct tds_buf b = {0};
    const struct tds_msg_rowset *s;
    double t0;
    size_t n;

    for (int alike = 0; alike < 2; alike++) {
        tds_buf_reset(&b);
        T_INT(tds_buf_addf(&b, "{\"item_id\":\"1\",\"custom_fields\":["), ==, 0);
        for (n = 0; b.len < H_RECORD_MAX - 48; n++)
            T_INT(alike ? tds_buf_addf(&b, "%s{\"label\":\"L\",\"api_name\":\"%zu\"}", n ? "," : "", n)
                        : tds_buf_addf(&b, "%s{\"label\":\"%zu\",\"api_name\":\"a\"}", n ? "," : "", n),
                  ==, 0);
        T_INT(tds_buf_add(&b, "]}", 2), ==, 0);
        h_reset();
        t0 = h_cpu_s();
        T_TRUE(!h_record("items", b.p, TDS_FORM_LIST));
        t0 = h_cpu_s() - t0;
        fprintf(stderr, "  %zu custom fields (%s), %zu bytes: %.3f s CPU\n", n,
                alike ? "one label" : "distinct labels", b.len, t0);
        T_TRUE(t0 < 1.0);
        T_TRUE((s = h_set("items", TDS_ROWS_LIST, 0)) != NULL);
        T_TRUE(strncmp(V(s, 0, "custom_fields"),
                       alike ? "{\"L\":null,\"1\":null,\"2\":null," : "{\"0\":null,\"1\":null,",
                       alike ? 27 : 19) == 0);
    }
    tds_buf_deinit(&b);
}

/* The keys of custom_fields[], all distinct as jsonb compares keys (decoded
 * text): a label; for a later field labelled alike (compared as decoded
 * text) its api_name, else (none, or no string, or taken) its
 * customfield_id, a string or a bare integer written as a string; the
 * api_name when the label is no string. A label is the key of its first
 * field before any field falls back, so an api_name that is another
 * field's label is passed over (M/h), and so is one an earlier fallback
 * took (N/d). Once with few fields, once with over 16. Before, a field
 * labelled alike without an api_name kept the label, and jsonb kept only
 * the last of the two: "L0":4,"L0":5 lost the first field's value 1. */
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
                "{\"label\":\"L%d\",\"customfield_id\":\"f%d\",\"value\":4},"
                "{\"label\":\"L%d\",\"api_name\":7,\"customfield_id\":9%d,\"value\":5},"
                "{\"label\":7,\"api_name\":\"d%d\",\"value\":6},"
                "{\"label\":\"\\u004c%d\",\"api_name\":\"e%d\"},",
                r ? "," : "", r, r, r, r, r, r, r, r, r, r, r, r), ==, 0);
            T_INT(tds_buf_addf(&b,
                "{\"label\":\"M%d\",\"api_name\":\"g%d\",\"value\":8},"
                "{\"label\":\"M%d\",\"api_name\":\"h%d\",\"customfield_id\":\"i%d\",\"value\":9},"
                "{\"label\":\"h%d\",\"value\":10},"
                "{\"label\":\"N%d\",\"api_name\":\"x%d\",\"value\":11},"
                "{\"label\":\"N%d\",\"api_name\":\"d%d\",\"customfield_id\":\"j%d\",\"value\":12}",
                r, r, r, r, r, r, r, r, r, r, r), ==, 0);
            T_INT(tds_buf_addf(&want, "%s\"L%d\":1,", r ? "," : "{", r), ==, 0);
            if (r)
                T_INT(tds_buf_addf(&want, "\"b%d\":2,", r), ==, 0);
            else
                T_INT(tds_buf_addf(&want, "\"B\":2,"), ==, 0);
            T_INT(tds_buf_addf(&want, "\"c%d\":3,\"f%d\":4,\"9%d\":5,\"d%d\":6,\"e%d\":null,", r, r,
                               r, r, r), ==, 0);
            T_INT(tds_buf_addf(&want, "\"M%d\":8,\"i%d\":9,\"h%d\":10,\"N%d\":11,\"j%d\":12", r, r,
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

    /* a repeated key with no free api_name or customfield_id: the record is
     * rejected (duplicate_key), naming the field, not stored with a value
     * lost; once past 16 fields too */
    static const struct {
        const char *cf, *reason;
    } dup[] = {
        {"[{\"label\":\"Seg\",\"value\":1.50,\"api_name\":\"cf_a\"},{\"label\":\"Seg\",\"value\":\"x\"}]",
         "duplicate custom field key 'Seg' in field 'custom_fields[1]': no api_name or "
         "customfield_id that no other field has"},
        /* an api_name (no label) that is another field's label */
        {"[{\"label\":\"cf_a\",\"value\":1},{\"api_name\":\"cf_a\",\"value\":2}]",
         "duplicate custom field key 'cf_a' in field 'custom_fields[1]': no api_name or "
         "customfield_id that no other field has"},
        /* its api_name and customfield_id taken: by a label, by an earlier fallback */
        {"[{\"label\":\"S\",\"value\":1},{\"label\":\"S\",\"api_name\":\"k\",\"value\":2},"
         "{\"label\":\"S\",\"api_name\":\"S\",\"customfield_id\":\"k\",\"value\":3}]",
         "duplicate custom field key 'S' in field 'custom_fields[2]': no api_name or "
         "customfield_id that no other field has"},
        /* blank customfield_id, non-integer ones: none of them a key */
        {"[{\"label\":\"S\",\"value\":1},{\"label\":\"S\",\"customfield_id\":\" \"},"
         "{\"label\":\"S\",\"customfield_id\":1.5},{\"label\":\"S\",\"customfield_id\":true}]",
         "duplicate custom field key 'S' in field 'custom_fields[1]': no api_name or "
         "customfield_id that no other field has"},
    };
    for (size_t d = 0; d < sizeof(dup) / sizeof(dup[0]); d++) {
        h_reset();
        tds_buf_reset(&b);
        T_INT(tds_buf_addf(&b, "{\"item_id\":\"1\",\"custom_fields\":%s}", dup[d].cf), ==, 0);
        T_TRUE(h_record("items", b.p, TDS_FORM_LIST));
        T_STR(h_res.reason_class, "duplicate_key");
        T_STR(h_reject_reason(0), dup[d].reason);
        T_INT(h_rows.n_sets, ==, 0);
    }
    h_reset();
    tds_buf_reset(&b);
    T_INT(tds_buf_addf(&b, "{\"item_id\":\"1\",\"custom_fields\":["), ==, 0);
    for (int k = 0; k < 18; k++)
        T_INT(tds_buf_addf(&b, "{\"label\":\"x%d\",\"api_name\":\"y%d\"},", k, k), ==, 0);
    T_INT(tds_buf_addf(&b, "{\"label\":\"x3\",\"customfield_id\":\"x4\"}]}"), ==, 0);
    T_TRUE(h_record("items", b.p, TDS_FORM_LIST));
    T_STR(h_reject_reason(0), "duplicate custom field key 'x3' in field 'custom_fields[18]': "
                              "no api_name or customfield_id that no other field has");
    tds_buf_deinit(&b);
    tds_buf_deinit(&want);
}

/* A webhook body is a DETAIL (its child rows and every column replace the
 * stored ones) only when it carries what Zoho's detail of the entity always
 * carries: the name field, the modified time, a few header fields (status,
 * an item's rate, a contact's type, a document's customer and total) and
 * the parts the child rows come from. Without any one of them it is a LIST of the columns it carries
 * (the writer leaves the others, and every child row, alone; the fetcher
 * fetches the detail). Before, a body with the child parts alone was a
 * DETAIL: its absent columns became NULL, its absent child rows (a contact's
 * shipping address) were deleted, and the row, a current detail, was never
 * fetched again. */
static void test_webhook_detail_needs_the_whole_record(void)
{
    static const struct {
        const char *entity, *wrap, *table, *child;
        const char *part[9]; /* part[0]: the id, kept; the others are needed */
    } cases[] = {
        {"contacts", "contact", "contacts", "contact_addresses",
         {"\"contact_id\":\"7\"", "\"contact_name\":\"A\"", "\"contact_type\":\"customer\"",
          "\"status\":\"active\"", "\"last_modified_time\":\"2024-01-15T10:30:00+0300\"",
          "\"contact_persons\":[{\"contact_person_id\":\"9\"}]",
          "\"billing_address\":{\"city\":\"Riyadh\"}", "\"shipping_address\":{\"city\":\"Jeddah\"}"}},
        {"items", "item", "items", "item_stock",
         {"\"item_id\":\"7\"", "\"name\":\"Mug\"", "\"status\":\"active\"", "\"rate\":4.5",
          "\"last_modified_time\":\"2024-01-15T10:30:00+0300\"",
          "\"locations\":[{\"location_id\":\"5\",\"location_stock_on_hand\":3}]"}},
        {"items", "item", "items", "item_stock",
         {"\"item_id\":\"7\"", "\"name\":\"Mug\"", "\"status\":\"active\"", "\"rate\":4.5",
          "\"last_modified_time\":\"2024-01-15T10:30:00+0300\"",
          "\"warehouses\":[{\"warehouse_id\":\"5\"}]"}},
        {"item_groups", "item_group", "item_groups", NULL,
         {"\"group_id\":\"7\"", "\"group_name\":\"Tee\"", "\"status\":\"active\"",
          "\"last_modified_time\":\"2024-01-15T10:30:00+0300\"", "\"items\":[{\"item_id\":\"8\"}]"}},
        {"invoices", "invoice", "invoices", "invoice_lines",
         {"\"invoice_id\":\"7\"", "\"invoice_number\":\"INV-7\"", "\"status\":\"sent\"",
          "\"customer_id\":\"5\"", "\"total\":10",
          "\"last_modified_time\":\"2024-01-15T10:30:00+0300\"",
          "\"line_items\":[{\"line_item_id\":\"3\"}]"}},
        {"sales_orders", "salesorder", "sales_orders", "sales_order_lines",
         {"\"salesorder_id\":\"7\"", "\"salesorder_number\":\"SO-7\"", "\"status\":\"draft\"",
          "\"customer_id\":\"5\"", "\"total\":10",
          "\"last_modified_time\":\"2024-01-15T10:30:00+0300\"",
          "\"line_items\":[{\"line_item_id\":\"3\"}]"}},
    };
    char body[1024];

    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        size_t n = 1;
        while (n < 9 && cases[c].part[n])
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

/* An empty list of child rows is no detail's by itself. Before, each of
 * the review's bodies was a DETAIL: a full invoice row with status, total,
 * customer_id and every other absent column NULL, its stored lines replaced
 * by none, and never fetched again; the same for a contact with
 * `"contact_persons": []` and two `{}` addresses, and an item with
 * `"locations": []`. Now each is a LIST of the columns it carries: no child
 * rows, the stored ones left alone, the detail fetched. A whole record keeps
 * being a DETAIL where Zoho's own may have no such child rows (a contact
 * without persons, an item that tracks no stock, a group whose variants are
 * gone); a document is never one without a line (Zoho saves none). */
static void test_webhook_empty_child_lists_are_no_detail(void)
{
    static const struct {
        const char *entity, *table, *body;
        bool detail;
    } cases[] = {
        /* the review's three */
        {"invoices", "invoices",
         "{\"invoice\":{\"invoice_id\":\"6\",\"invoice_number\":\"INV-1\","
         "\"last_modified_time\":\"2024-01-15T10:30:00+0300\",\"line_items\":[]}}", false},
        {"contacts", "contacts",
         "{\"contact\":{\"contact_id\":\"6\",\"contact_name\":\"A\","
         "\"last_modified_time\":\"2024-01-15T10:30:00+0300\",\"contact_persons\":[],"
         "\"billing_address\":{},\"shipping_address\":{}}}", false},
        {"items", "items",
         "{\"item\":{\"item_id\":\"6\",\"name\":\"Mug\","
         "\"last_modified_time\":\"2024-01-15T10:30:00+0300\",\"locations\":[]}}", false},
        /* every header field, still no line: no document of Zoho's */
        {"invoices", "invoices",
         "{\"invoice\":{\"invoice_id\":\"6\",\"invoice_number\":\"INV-1\",\"status\":\"sent\","
         "\"customer_id\":\"5\",\"total\":0,\"last_modified_time\":\"2024-01-15T10:30:00+0300\","
         "\"line_items\":[]}}", false},
        {"sales_orders", "sales_orders",
         "{\"salesorder\":{\"salesorder_id\":\"6\",\"salesorder_number\":\"SO-1\","
         "\"status\":\"draft\",\"customer_id\":\"5\",\"total\":0,"
         "\"last_modified_time\":\"2024-01-15T10:30:00+0300\",\"line_items\":[]}}", false},
        /* a whole contact, but for its empty addresses */
        {"contacts", "contacts",
         "{\"contact\":{\"contact_id\":\"6\",\"contact_name\":\"A\",\"contact_type\":\"customer\","
         "\"status\":\"active\",\"last_modified_time\":\"2024-01-15T10:30:00+0300\","
         "\"contact_persons\":[],\"billing_address\":{},\"shipping_address\":{\"city\":\"\"}}}",
         false},
        /* whole records with no child rows of that kind: DETAIL */
        {"contacts", "contacts",
         "{\"contact\":{\"contact_id\":\"6\",\"contact_name\":\"A\",\"contact_type\":\"customer\","
         "\"status\":\"active\",\"last_modified_time\":\"2024-01-15T10:30:00+0300\","
         "\"contact_persons\":[],\"billing_address\":{\"city\":\"\"},"
         "\"shipping_address\":{\"city\":\"\"}}}", true},
        {"items", "items",
         "{\"item\":{\"item_id\":\"6\",\"name\":\"Setup\",\"status\":\"active\",\"rate\":50,"
         "\"item_type\":\"sales\",\"product_type\":\"service\","
         "\"last_modified_time\":\"2024-01-15T10:30:00+0300\",\"locations\":[]}}", true},
        {"item_groups", "item_groups",
         "{\"item_group\":{\"group_id\":\"6\",\"group_name\":\"Tee\",\"status\":\"active\","
         "\"last_modified_time\":\"2024-01-15T10:30:00+0300\",\"items\":[]}}", true},
        {"item_groups", "item_groups",
         "{\"item_group\":{\"group_id\":\"6\",\"group_name\":\"Tee\","
         "\"last_modified_time\":\"2024-01-15T10:30:00+0300\",\"items\":[]}}", false},
    };

    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const struct tds_msg_rowset *s;

        h_reset();
        T_TRUE(!h_event(cases[c].entity, cases[c].body));
        if (cases[c].detail) {
            if (!(s = h_set(cases[c].table, TDS_ROWS_DETAIL, 0)))
                T_FAIL("%s: expected a DETAIL", cases[c].body);
            T_V(s, 0, "is_detail", "true");
            /* beside it, a contact's two addresses; no persons, no stock */
            T_INT(h_rows.n_sets, ==, strcmp(cases[c].entity, "contacts") == 0 ? 2 : 1);
            continue;
        }
        if (!(s = h_set(cases[c].table, TDS_ROWS_LIST, 0)))
            T_FAIL("%s: expected a LIST", cases[c].body);
        /* the top row's set alone: no child rows, the stored ones stay */
        T_INT(h_rows.n_sets, ==, 1);
        T_V(s, 0, "is_detail", "false");
        T_NOCOL(s, "customer_name");
        T_NOCOL(s, "sku");
        T_NOCOL(s, "email");
    }
}

int main(void)
{
    T_RUN(test_reasons);
    T_RUN(test_reject_fields);
    T_RUN(test_page_one_bad);
    T_RUN(test_deletes_and_events);
    T_RUN(test_webhook_detail_needs_the_whole_record);
    T_RUN(test_webhook_empty_child_lists_are_no_detail);
    T_RUN(test_custom_field_keys);
    T_RUN(test_many_custom_fields_are_fast);
    h_done();
    return 0;
}
