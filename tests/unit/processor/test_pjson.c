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

int main(void)
{
    T_INT(tds_pjson_arena_new(&A), ==, 0);
    T_RUN(test_shapes);
    T_RUN(test_errors);
    T_RUN(test_limits);
    A = tds_pjson_arena_free(A);
    return 0;
}
