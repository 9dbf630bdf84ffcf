/* test_pjson — the strict JSON reader: shapes, exact lexemes, spans, limits. */
#include <stdlib.h>

#include "assert.h"
#include "pjson.h"

static struct tds_pjson_arena *A;
static char err[256];

static int parse(const char *s, struct tds_pjson **out)
{
    tds_pjson_arena_reset(A);
    return tds_pjson_parse(A, s, strlen(s), out, err, sizeof(err));
}

static void test_shapes(void)
{
    struct tds_pjson *v;
    const char *src = " {\"a\":[1,-2.50e+3,true,false,null],\"b\":{\"c\":\"x\\\"y\\u00e9\\ud83d\\ude00\"},"
                      "\"id\":4815000000044208123, \"a\":\"last\"} ";
    T_INT(parse(src, &v), ==, 0);
    T_INT(v->type, ==, TDS_PJ_OBJECT);
    T_INT(v->n, ==, 4);
    const struct tds_pjson *a = &v->u.members[0].v;
    T_INT(a->type, ==, TDS_PJ_ARRAY);
    T_INT(a->n, ==, 5);
    T_INT(a->u.items[1].type, ==, TDS_PJ_NUMBER);
    T_TRUE(a->u.items[1].n == 8 && memcmp(a->u.items[1].s, "-2.50e+3", 8) == 0);
    T_INT(a->u.items[2].type, ==, TDS_PJ_TRUE);
    T_INT(a->u.items[3].type, ==, TDS_PJ_FALSE);
    T_INT(a->u.items[4].type, ==, TDS_PJ_NULL);
    /* last duplicate wins, as in jsonb */
    T_TRUE(tds_pjson_str_eq(tds_pjson_get(v, "a"), "last"));
    const struct tds_pjson *c = tds_pjson_get(tds_pjson_get(v, "b"), "c");
    T_TRUE(tds_pjson_str_eq(c, "x\"y\xc3\xa9\xf0\x9f\x98\x80"));
    T_TRUE(c->raw_len == strlen("\"x\\\"y\\u00e9\\ud83d\\ude00\""));
    const struct tds_pjson *id = tds_pjson_get(v, "id");
    T_TRUE(id->n == 19 && memcmp(id->s, "4815000000044208123", 19) == 0);
    T_TRUE(v->raw == src + 1);
    T_NULL(tds_pjson_get(v, "missing"));
    T_NULL(tds_pjson_get(a, "x"));
}

static void test_errors(void)
{
    struct tds_pjson *v;
    T_INT(parse("{\"a\":1,}", &v), ==, TDS_PJ_E_SYNTAX);
    T_STR(err, "invalid JSON at byte 7: expected a string key");
    T_INT(parse("{\"a\":01}", &v), ==, TDS_PJ_E_SYNTAX);
    T_INT(parse("[1.]", &v), ==, TDS_PJ_E_SYNTAX);
    T_INT(parse("\"abc", &v), ==, TDS_PJ_E_SYNTAX);
    T_INT(parse("{} x", &v), ==, TDS_PJ_E_SYNTAX);
    T_INT(parse("", &v), ==, TDS_PJ_E_SYNTAX);
    T_INT(parse("{\"a\":\"\t\"}", &v), ==, TDS_PJ_E_SYNTAX);
    T_INT(parse("{\"a\":\"\\x\"}", &v), ==, TDS_PJ_E_SYNTAX);
    T_INT(parse("{\"a\":NaN}", &v), ==, TDS_PJ_E_SYNTAX);
    T_INT(parse("{\"name\":\"ok\",\"desc\":\"bad \xff byte\"}", &v), ==, TDS_PJ_E_UTF8);
    T_STR(err, "invalid UTF-8 in field 'desc'");
    T_INT(parse("{\"\xc3\x28\":1}", &v), ==, TDS_PJ_E_UTF8);
    T_STR(err, "invalid UTF-8 in a key");
    T_INT(parse("{\"s\":\"\xed\xa0\x80\"}", &v), ==, TDS_PJ_E_UTF8); /* encoded surrogate */
    T_INT(parse("{\"note\":\"a\\u0000b\"}", &v), ==, TDS_PJ_E_NUL);
    T_STR(err, "NUL character (\\u0000) in field 'note'");
    T_INT(parse("{\"s\":\"\\ud800x\"}", &v), ==, TDS_PJ_E_NUL);
    T_INT(parse("{\"s\":\"\\udc00\"}", &v), ==, TDS_PJ_E_NUL);
    /* in a key: not blamed on the previous key, nor on the enclosing one */
    T_INT(parse("{\"item_id\":\"1\",\"a\\u0000b\":2}", &v), ==, TDS_PJ_E_NUL);
    T_STR(err, "NUL character (\\u0000) in a key");
    T_INT(parse("{\"item_id\":\"1\",\"x\":{\"\\ud800\":2}}", &v), ==, TDS_PJ_E_NUL);
    T_STR(err, "unpaired surrogate escape in a key");
    T_INT(parse("{\"item_id\":\"1\",\"\\udc00\":2}", &v), ==, TDS_PJ_E_NUL);
    T_STR(err, "unpaired surrogate escape in a key");
}

static void test_limits(void)
{
    struct tds_pjson *v;
    char deep[100];
    size_t n = 0;
    for (int i = 0; i < 32; i++)
        deep[n++] = '[';
    for (int i = 0; i < 32; i++)
        deep[n++] = ']';
    deep[n] = '\0';
    T_INT(parse(deep, &v), ==, 0); /* 32 levels: allowed */
    n = 0;
    for (int i = 0; i < 33; i++)
        deep[n++] = '[';
    for (int i = 0; i < 33; i++)
        deep[n++] = ']';
    deep[n] = '\0';
    T_INT(parse(deep, &v), ==, TDS_PJ_E_DEPTH);
    T_STR(err, "JSON nested deeper than 32 levels");

    size_t big = TDS_PJSON_MAX_BYTES + 1;
    char *s = malloc(big + 1);
    T_TRUE(s != NULL);
    s[0] = '"';
    memset(s + 1, 'a', big - 2);
    s[big - 1] = '"';
    s[big] = '\0';
    T_INT(parse(s, &v), ==, TDS_PJ_E_TOO_LARGE);
    T_STR(err, "record of 1048577 bytes is over the 1048576 byte limit");
    /* exactly at the limit is fine, and the arena copes with a large record */
    s[big - 2] = '"';
    s[big - 1] = '\0';
    T_INT(parse(s, &v), ==, 0);
    T_INT(v->n, ==, big - 3);
    free(s);
}

/* "{"x":<digits of the pattern, n times><tail>}" in a malloc'd string. */
static char *long_number(const char *head, char digit, size_t n, const char *tail)
{
    size_t h = strlen(head), t = strlen(tail);
    char *s = malloc(6 + h + n + t + 1);
    T_TRUE(s != NULL);
    memcpy(s, "{\"x\":", 5);
    memcpy(s + 5, head, h);
    memset(s + 5 + h, digit, n);
    memcpy(s + 5 + h + n, tail, t);
    memcpy(s + 5 + h + n + t, "}", 2);
    return s;
}

static int parse_long(const char *head, char digit, size_t n, const char *tail)
{
    struct tds_pjson *v;
    char *s = long_number(head, digit, n, tail);
    int rc = parse(s, &v);
    free(s);
    return rc;
}

/* PostgreSQL's numeric (and jsonb) limits: 131072 digits before the point,
 * 16383 after it, exponents below INT_MAX / 2; each bound checked against
 * PostgreSQL 15 ('[…]'::jsonb). */
static void test_number_range(void)
{
    static const char *const fits[] = {
        "1e131071", "9.9e131071", "0.1e131072", "0.01e131073", "5E+131071", "1e-16383",
        "12345e-16383", "1.5e-16382", "0.0001e-16379", "0e-16383", "-0.0e-16382",
        "0e1073741822", "0e0000000000000000000000005", "1e-0000000000016383", "0.0e131075",
        "123.456e-16380", "-2.50e+3",
    };
    static const char *const refused[] = {
        "1e131072", "10e131071", "0.5e131073", "0.00001e131077", "1e-16384", "1e-20000",
        "1e999999", "-1e999999", "0e-16384", "-0.0e-16383", "1.5e-16383", "123.456e-16381",
        "0e1073741823", "1e-1073741823", "1e99999999999999999999",
    };
    struct tds_pjson *v;
    char buf[96];

    for (size_t i = 0; i < sizeof(fits) / sizeof(fits[0]); i++) {
        snprintf(buf, sizeof(buf), "{\"x\":%s}", fits[i]);
        T_INT(parse(buf, &v), ==, 0);
        T_STR(err, "");
    }
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        snprintf(buf, sizeof(buf), "{\"x\":%s}", refused[i]);
        T_INT(parse(buf, &v), ==, TDS_PJ_E_RANGE);
        T_STR(err, "number out of range in field 'x'");
    }
    T_INT(parse("[1,{\"a\":[2,1e-99999]}]", &v), ==, TDS_PJ_E_RANGE);
    T_STR(err, "number out of range in field 'a'");
    T_INT(parse("1e999999", &v), ==, TDS_PJ_E_RANGE);
    T_STR(err, "number out of range");
    /* digit counts without an exponent */
    T_INT(parse_long("", '7', 131072, ""), ==, 0);
    T_INT(parse_long("-", '7', 131073, ""), ==, TDS_PJ_E_RANGE);
    T_INT(parse_long("1.", '5', 16383, ""), ==, 0);
    T_INT(parse_long("1.", '0', 16384, ""), ==, TDS_PJ_E_RANGE);
    T_INT(parse_long("0.", '0', 16383, "1e2"), ==, 0); /* scale 16382 */
    T_INT(parse_long("", '1', 131073, "e-1"), ==, 0); /* 131072 digits before the point */
    T_INT(parse_long("", '1', 131072, ".0e1"), ==, TDS_PJ_E_RANGE);
}

int main(void)
{
    T_INT(tds_pjson_arena_new(&A), ==, 0);
    T_RUN(test_shapes);
    T_RUN(test_errors);
    T_RUN(test_limits);
    T_RUN(test_number_range);
    A = tds_pjson_arena_free(A);
    return 0;
}
