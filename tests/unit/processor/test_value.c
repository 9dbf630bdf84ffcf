/* test_value — each value rule: numbers exact, blanks NULL, times, dates, ids. */
#include "assert.h"
#include "pjson.h"
#include "value.h"

static struct tds_pjson_arena *A;
static char reason[256];
static struct tds_value_err E = {reason, sizeof(reason)};

/* Parse "{"f": <json>}" and return the value of f. */
static const struct tds_pjson *val(const char *json)
{
    static char buf[512];
    struct tds_pjson *root;
    char err[128];
    snprintf(buf, sizeof(buf), "{\"f\":%s}", json);
    tds_pjson_arena_reset(A);
    T_INT(tds_pjson_parse(A, buf, strlen(buf), &root, err, sizeof(err)), ==, 0);
    return tds_pjson_get(root, "f");
}

static char out_s[256];
static const char *txt(const struct tds_bytes *b)
{
    if (!b->p)
        return NULL;
    snprintf(out_s, sizeof(out_s), "%.*s", (int)b->n, b->p);
    return out_s;
}

#define NUM_OK(json, want)                                                           \
    do {                                                                             \
        struct tds_bytes b;                                                          \
        T_INT(tds_value_numeric(val(json), &b, "f", &E), ==, 0);                     \
        T_STR(txt(&b), want);                                                        \
    } while (0)
#define NUM_NULL(json)                                                               \
    do {                                                                             \
        struct tds_bytes b;                                                          \
        T_INT(tds_value_numeric(val(json), &b, "f", &E), ==, 0);                     \
        T_NULL(b.p);                                                                 \
    } while (0)
#define NUM_BAD(json, why)                                                           \
    do {                                                                             \
        struct tds_bytes b;                                                          \
        T_INT(tds_value_numeric(val(json), &b, "f", &E), ==, TDS_VALUE_E_NUMBER);    \
        T_STR(reason, why);                                                          \
    } while (0)

static void test_numeric(void)
{
    struct tds_bytes b;
    NUM_OK("12.50", "12.50");
    NUM_OK("0.1", "0.1"); /* not 0.1000000000000000055511151231257827 */
    NUM_OK("123456789012345678901234567890.123456789", "123456789012345678901234567890.123456789");
    NUM_OK("-1E+3", "-1E+3");
    NUM_OK("\" 7.5 \"", "7.5");
    NUM_OK("\"+3\"", "+3");
    NUM_OK("\".5\"", ".5");
    NUM_NULL("\"\"");
    NUM_NULL("\" \"");
    NUM_NULL("null");
    T_INT(tds_value_numeric(NULL, &b, "f", &E), ==, 0);
    T_NULL(b.p);
    NUM_BAD("\"abc\"", "invalid number in field 'f': 'abc'");
    NUM_BAD("\"1,234.00\"", "invalid number in field 'f': '1,234.00'");
    NUM_BAD("\"NaN\"", "invalid number in field 'f': 'NaN'");
    NUM_BAD("\"1e99999\"", "invalid number in field 'f': '1e99999'");
    NUM_BAD("true", "invalid number in field 'f': true");
    NUM_BAD("{\"a\":1}", "invalid number in field 'f': an object");
    NUM_BAD("[1]", "invalid number in field 'f': an array");
}

static void test_int_bool(void)
{
    struct tds_bytes b;
    T_INT(tds_value_int(val("30"), &b, "f", &E), ==, 0);
    T_STR(txt(&b), "30");
    T_INT(tds_value_int(val("\"-15\""), &b, "f", &E), ==, 0);
    T_STR(txt(&b), "-15");
    T_INT(tds_value_int(val("\"\""), &b, "f", &E), ==, 0);
    T_NULL(b.p);
    T_INT(tds_value_int(val("2147483648"), &b, "f", &E), ==, TDS_VALUE_E_INTEGER);
    T_STR(reason, "invalid integer in field 'f': 2147483648");
    T_INT(tds_value_int(val("1.0"), &b, "f", &E), ==, TDS_VALUE_E_INTEGER);
    T_INT(tds_value_bool(val("true"), &b, "f", &E), ==, 0);
    T_STR(txt(&b), "true");
    T_INT(tds_value_bool(val("\"FALSE\""), &b, "f", &E), ==, 0);
    T_STR(txt(&b), "false");
    T_INT(tds_value_bool(val("\" \""), &b, "f", &E), ==, 0);
    T_NULL(b.p);
    T_INT(tds_value_bool(val("1"), &b, "f", &E), ==, TDS_VALUE_E_BOOL);
    T_STR(reason, "invalid boolean in field 'f': 1");
}

#define TS_OK(json, want)                                                            \
    do {                                                                             \
        struct tds_bytes b;                                                          \
        T_INT(tds_value_timestamp(A, val(json), NULL, &b, "f", &E), ==, 0);                \
        T_STR(txt(&b), want);                                                        \
    } while (0)
#define TS_BAD(json)                                                                 \
    do {                                                                             \
        struct tds_bytes b;                                                          \
        T_INT(tds_value_timestamp(A, val(json), NULL, &b, "f", &E), ==, TDS_VALUE_E_TIMESTAMP); \
    } while (0)

static void test_time_date(void)
{
    struct tds_bytes b;
    TS_OK("\"2024-01-15T10:20:30+0530\"", "2024-01-15 10:20:30+05:30");
    TS_OK("\"2026-06-09T09:45:21-0400\"", "2026-06-09 09:45:21-04:00");
    TS_OK("\"2024-01-15T10:20:30+05:30\"", "2024-01-15 10:20:30+05:30");
    TS_OK("\"2024-01-15T10:20:30Z\"", "2024-01-15 10:20:30+00:00");
    TS_OK("\"2024-01-15T10:20:30.123+03\"", "2024-01-15 10:20:30.123+03:00");
    TS_OK("\"2013-08-05\"", "2013-08-05 00:00:00+00:00");
    /* a bare date is midnight where the organization is */
    T_INT(tds_value_timestamp(A, val("\"2013-08-05\""), "-0400", &b, "f", &E), ==, 0);
    T_STR(txt(&b), "2013-08-05 00:00:00-04:00");
    T_INT(tds_value_timestamp(A, val("\"2013-08-05\""), "+0530", &b, "f", &E), ==, 0);
    T_STR(txt(&b), "2013-08-05 00:00:00+05:30");
    /* a full time keeps its own offset */
    T_INT(tds_value_timestamp(A, val("\"2024-01-15T10:20:30+0530\""), "-0400", &b, "f", &E), ==, 0);
    T_STR(txt(&b), "2024-01-15 10:20:30+05:30");
    T_TRUE(tds_value_tz_ok("+0300") && tds_value_tz_ok("-1200") && tds_value_tz_ok("+1400"));
    T_TRUE(!tds_value_tz_ok("+03:00") && !tds_value_tz_ok("0300") && !tds_value_tz_ok("+1500") &&
           !tds_value_tz_ok("+0360") && !tds_value_tz_ok("+03000") && !tds_value_tz_ok(NULL));
    TS_OK("\"2024-02-29T23:59:59+1400\"", "2024-02-29 23:59:59+14:00");
    TS_BAD("\"2023-02-29T00:00:00+0000\"");
    TS_BAD("\"2024-01-15T24:00:00+0000\"");
    TS_BAD("\"2024-01-15T10:20:30\""); /* no offset: ambiguous */
    TS_BAD("\"2024-01-15T10:20:30+05:3\"");
    TS_BAD("\"2024-01-15 10:20\"");
    TS_BAD("\"yesterday\"");
    TS_BAD("1705312230");
    T_STR(reason, "invalid timestamp in field 'f': 1705312230");
    T_INT(tds_value_timestamp(A, val("\"\""), NULL, &b, "f", &E), ==, 0);
    T_NULL(b.p);
    T_INT(tds_value_date(val("\"2024-02-29\""), &b, "f", &E), ==, 0);
    T_STR(txt(&b), "2024-02-29");
    T_INT(tds_value_date(val("\" \""), &b, "f", &E), ==, 0);
    T_NULL(b.p);
    T_INT(tds_value_date(val("\"2100-02-29\""), &b, "f", &E), ==, TDS_VALUE_E_DATE);
    T_INT(tds_value_date(val("\"29/02/2024\""), &b, "f", &E), ==, TDS_VALUE_E_DATE);
    T_STR(reason, "invalid date in field 'f': '29/02/2024'");
}

static void test_id_text(void)
{
    struct tds_bytes b;
    T_INT(tds_value_id(val("\"4815000000044208\""), &b, "item_id", &E), ==, 0);
    T_STR(txt(&b), "4815000000044208");
    T_INT(tds_value_id(val("4815000000044208123"), &b, "item_id", &E), ==, 0);
    T_STR(txt(&b), "4815000000044208123"); /* 19 digits, exact */
    T_INT(tds_value_id(val("\" \""), &b, "item_id", &E), ==, 0);
    T_NULL(b.p);
    T_INT(tds_value_id(val("12.5"), &b, "item_id", &E), ==, TDS_VALUE_E_ID);
    T_STR(reason, "invalid id in field 'item_id': 12.5");
    T_INT(tds_value_id(val("-3"), &b, "item_id", &E), ==, TDS_VALUE_E_ID);
    T_INT(tds_value_id(val("true"), &b, "item_id", &E), ==, TDS_VALUE_E_ID);
    T_STR(reason, "invalid id in field 'item_id': true");
    T_INT(tds_value_id(val("{}"), &b, "item_id", &E), ==, TDS_VALUE_E_ID);
    T_INT(tds_value_id(val("\"12 34\""), &b, "item_id", &E), ==, TDS_VALUE_E_ID);
    T_INT(tds_value_text(val("\"\""), false, &b, "f", &E), ==, 0);
    T_STR(txt(&b), "");
    T_INT(tds_value_text(val("\"\""), true, &b, "f", &E), ==, 0);
    T_NULL(b.p);
    T_INT(tds_value_text(val("94588"), false, &b, "f", &E), ==, 0);
    T_STR(txt(&b), "94588");
    T_INT(tds_value_text(val("-1.5e3"), false, &b, "f", &E), ==, 0); /* not an id: as written */
    T_STR(txt(&b), "-1.5e3");
    /* a reference id given as a JSON number: an integer id or a reject */
    T_INT(tds_value_text(val("260815000000098001"), true, &b, "customer_id", &E), ==, 0);
    T_STR(txt(&b), "260815000000098001");
    T_INT(tds_value_text(val("0"), true, &b, "customer_id", &E), ==, 0);
    T_STR(txt(&b), "0");
    T_INT(tds_value_text(val("4.6e18"), true, &b, "customer_id", &E), ==, TDS_VALUE_E_ID);
    T_STR(reason, "invalid id in field 'customer_id': 4.6e18");
    T_INT(tds_value_text(val("-1"), true, &b, "salesorder_id", &E), ==, TDS_VALUE_E_ID);
    T_STR(reason, "invalid id in field 'salesorder_id': -1");
    T_INT(tds_value_text(val("1.5"), true, &b, "tax_id", &E), ==, TDS_VALUE_E_ID);
    T_STR(reason, "invalid id in field 'tax_id': 1.5");
    T_INT(tds_value_text(val("1E3"), true, &b, "tax_id", &E), ==, TDS_VALUE_E_ID);
    T_INT(tds_value_text(val("12345678901234567890123456789012345678901234567890123456789012345"),
                         true, &b, "tax_id", &E), ==, TDS_VALUE_E_ID); /* 65 digits */
    /* strings keep their rules: any text, blanks NULL */
    T_INT(tds_value_text(val("\"4.6e18\""), true, &b, "customer_id", &E), ==, 0);
    T_STR(txt(&b), "4.6e18");
    T_INT(tds_value_text(val("[\"a\"]"), false, &b, "f", &E), ==, TDS_VALUE_E_TYPE);
    T_STR(reason, "invalid text in field 'f': an array");
    /* long values are cut on a character boundary in reasons */
    char longv[400];
    size_t k = 0;
    longv[k++] = '"';
    for (int i = 0; i < 40; i++) {
        longv[k++] = '\xd8'; /* ع */
        longv[k++] = '\xb9';
    }
    longv[k++] = '"';
    longv[k] = '\0';
    T_INT(tds_value_numeric(val(longv), &b, "f", &E), ==, TDS_VALUE_E_NUMBER);
    T_TRUE(strstr(reason, "…") != NULL);
}

int main(void)
{
    T_INT(tds_pjson_arena_new(&A), ==, 0);
    T_RUN(test_numeric);
    T_RUN(test_int_bool);
    T_RUN(test_time_date);
    T_RUN(test_id_text);
    A = tds_pjson_arena_free(A);
    return 0;
}
