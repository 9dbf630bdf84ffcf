/* test_inventory — warehouses and locations into zoho.warehouses. */
#include "helpers.h"

static void test_warehouse(void)
{
    const struct tds_msg_rowset *s;
    const char *w = "{\"warehouse_id\":\"4815000000000100\",\"warehouse_name\":\"المستودع الرئيسي\","
                    "\"status\":\"active\",\"is_primary\":true,\"attention\":\"أحمد\","
                    "\"address\":\"King Fahd Rd\",\"address1\":\"Bldg 7\",\"address2\":\"\","
                    "\"city\":\"Riyadh\",\"state\":\"Riyadh\",\"zip\":12271,\"country\":\"Saudi Arabia\","
                    "\"phone\":\"+966 11 000 0000\",\"email\":\"wh@example.com\"}";

    h_reset();
    /* page.detail=false still gives DETAIL: the site list is complete */
    T_TRUE(!h_record("warehouses", w, TDS_FORM_LIST));
    T_TRUE((s = h_set("warehouses", TDS_ROWS_DETAIL, 0)) != NULL);
    h_check_columns(s);
    T_V(s, 0, "org_id", "60001");
    T_V(s, 0, "warehouse_id", "4815000000000100");
    T_VNULL(s, 0, "modified_time");
    T_V(s, 0, "is_detail", "true");
    T_V(s, 0, "warehouse_name", "المستودع الرئيسي");
    T_V(s, 0, "status", "active");
    T_V(s, 0, "is_primary", "true");
    T_V(s, 0, "site_kind", "warehouse");
    T_V(s, 0, "attention", "أحمد");
    T_V(s, 0, "address", "King Fahd Rd");
    T_V(s, 0, "address1", "Bldg 7");
    T_V(s, 0, "address2", "");
    T_V(s, 0, "city", "Riyadh");
    T_V(s, 0, "state", "Riyadh");
    T_V(s, 0, "zip", "12271"); /* a number in the JSON, text in the table */
    T_V(s, 0, "country", "Saudi Arabia");
    T_V(s, 0, "phone", "+966 11 000 0000");
    T_V(s, 0, "email", "wh@example.com");
}

static void test_location(void)
{
    const struct tds_msg_rowset *s;
    const char *l = "{\"location_id\":\"4815000000000331\",\"location_name\":\"Main WH\","
                    "\"status\":\"inactive\",\"is_primary_location\":\"false\",\"type\":\"general\","
                    "\"address\":{\"attention\":\"Ops\",\"street_address1\":\"1 Dock St\","
                    "\"street_address2\":\"Unit 4\",\"city\":\"Dubai\",\"state\":\"Dubai\","
                    "\"zip\":\"00000\",\"country\":\"UAE\",\"phone\":\"\"},\"email\":\"\"}";

    h_reset();
    T_TRUE(!h_record("warehouses", l, TDS_FORM_DETAIL));
    T_TRUE((s = h_set("warehouses", TDS_ROWS_DETAIL, 0)) != NULL);
    T_V(s, 0, "warehouse_id", "4815000000000331");
    T_V(s, 0, "warehouse_name", "Main WH");
    T_V(s, 0, "status", "inactive");
    T_V(s, 0, "is_primary", "false");
    T_V(s, 0, "site_kind", "location");
    T_V(s, 0, "attention", "Ops");
    T_VNULL(s, 0, "address");
    T_V(s, 0, "address1", "1 Dock St");
    T_V(s, 0, "address2", "Unit 4");
    T_V(s, 0, "city", "Dubai");
    T_V(s, 0, "state", "Dubai");
    T_V(s, 0, "zip", "00000");
    T_V(s, 0, "country", "UAE");
    T_V(s, 0, "phone", "");
    T_V(s, 0, "email", "");
}

/* A location with a warehouse_id beside it (null, blank, or a legacy id)
 * is still a location, keyed by location_id as its stock rows are. */
static void test_location_with_a_warehouse_id(void)
{
    const struct tds_msg_rowset *s;
    static const char *const wid[] = {"null", "\"\"", "\"460000000000111\""};
    char rec[512];

    for (size_t i = 0; i < sizeof(wid) / sizeof(*wid); i++) {
        h_reset();
        snprintf(rec, sizeof(rec),
                 "{\"location_id\":\"460000000038080\",\"location_name\":\"جدة\","
                 "\"warehouse_id\":%s,\"is_primary_location\":true}",
                 wid[i]);
        T_TRUE(!h_record("warehouses", rec, TDS_FORM_DETAIL));
        T_TRUE((s = h_set("warehouses", TDS_ROWS_DETAIL, 0)) != NULL);
        T_V(s, 0, "warehouse_id", "460000000038080");
        T_V(s, 0, "site_kind", "location");
        T_V(s, 0, "warehouse_name", "جدة");
        T_V(s, 0, "is_primary", "true");
    }
    /* a blank location_id beside a warehouse_id: a warehouse */
    h_reset();
    T_TRUE(!h_record("warehouses",
                     "{\"location_id\":\" \",\"warehouse_id\":\"7\",\"warehouse_name\":\"W\"}",
                     TDS_FORM_DETAIL));
    T_TRUE((s = h_set("warehouses", TDS_ROWS_DETAIL, 0)) != NULL);
    T_V(s, 0, "warehouse_id", "7");
    T_V(s, 0, "site_kind", "warehouse");
}

static void test_rejects(void)
{
    h_reset();
    T_TRUE(h_record("warehouses", "{\"warehouse_name\":\"X\"}", TDS_FORM_DETAIL));
    T_STR(h_reject_reason(0), "missing warehouse_id");
    T_TRUE(h_record("warehouses", "{\"warehouse_id\":\"1\",\"is_primary\":\"yes\"}", TDS_FORM_DETAIL));
    T_STR(h_reject_reason(1), "invalid boolean in field 'is_primary': 'yes'");
    T_STR(h_res.reason_class, "invalid_boolean");
    T_INT(h_rows.n_sets, ==, 0);
}

/* A warehouse has no modified time: the writer takes a new version only
 * when its content hash differs, so a field held only in raw is hashed too,
 * or a change to it would never be written. */
static void test_warehouse_raw_change_changes_the_hash(void)
{
    const char *a = "{\"location_id\":\"9\",\"location_name\":\"L\",\"type\":\"business\","
                    "\"parent_location_id\":\"\"}";
    const char *b = "{\"location_id\":\"9\",\"location_name\":\"L\",\"type\":\"warehouse\","
                    "\"parent_location_id\":\"9\"}";
    char ha[64];

    h_reset();
    T_TRUE(!h_record("warehouses", a, TDS_FORM_LIST));
    snprintf(ha, sizeof(ha), "%s", V(h_set("warehouses", TDS_ROWS_DETAIL, 0), 0, "content_hash"));
    h_reset();
    T_TRUE(!h_record("warehouses", b, TDS_FORM_LIST));
    T_TRUE(strcmp(ha, V(h_set("warehouses", TDS_ROWS_DETAIL, 0), 0, "content_hash")) != 0);
    /* the same version twice: the same hash */
    h_reset();
    T_TRUE(!h_record("warehouses", a, TDS_FORM_LIST));
    T_STR(V(h_set("warehouses", TDS_ROWS_DETAIL, 0), 0, "content_hash"), ha);
}

int main(void)
{
    T_RUN(test_warehouse);
    T_RUN(test_location);
    T_RUN(test_location_with_a_warehouse_id);
    T_RUN(test_rejects);
    T_RUN(test_warehouse_raw_change_changes_the_hash);
    h_done();
    return 0;
}
