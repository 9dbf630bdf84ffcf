/* test_copytext — COPY text escaping, array literals and sanitizing. */
#include "../../assert.h"
#include "copytext.h"

#include <stdlib.h>
#include <string.h>

static char *field(const char *p, size_t n)
{
    static struct tds_buf b;

    tds_buf_reset(&b);
    T_INT(tds_copytext_add(&b, p, n), ==, 0);
    T_INT(tds_buf_add(&b, "", 1), ==, 0);
    return b.p;
}

static void test_copy_escaping(void)
{
    T_STR(field("plain", 5), "plain");
    T_STR(field(NULL, 0), "\\N");
    T_STR(field("", 0), "");
    T_STR(field("a\tb", 3), "a\\tb");
    T_STR(field("a\nb\r\n", 5), "a\\nb\\r\\n");
    T_STR(field("c:\\dir\\", 7), "c:\\\\dir\\\\");
    /* The text "\N" is data, not NULL. */
    T_STR(field("\\N", 2), "\\\\N");
    /* UTF-8 passes byte for byte. */
    T_STR(field("\xd8\xb5\xd9\x86\xd9\x81", 6), "\xd8\xb5\xd9\x86\xd9\x81");
    /* Only n bytes are taken. */
    T_STR(field("abcdef", 3), "abc");
}

static void test_copy_limit(void)
{
    struct tds_buf b = {.max = 4};

    T_INT(tds_copytext_add(&b, "ab", 2), ==, 0);
    T_INT(tds_copytext_add(&b, "\t\t", 2), ==, TDS_E_TOO_LARGE);
    tds_buf_deinit(&b);
}

static void test_storable(void)
{
    T_TRUE(tds_copytext_storable("abc", 3));
    T_TRUE(tds_copytext_storable(NULL, 0));
    T_TRUE(!tds_copytext_storable("a\0b", 3));
}

static void test_array_literal(void)
{
    struct tds_buf b = {0};

    tds_copytext_array_begin(&b);
    T_INT(tds_copytext_array_elem(&b, true, "a", 1), ==, 0);
    T_INT(tds_copytext_array_elem(&b, false, NULL, 0), ==, 0);
    T_INT(tds_copytext_array_elem(&b, false, "say \"hi\"", 8), ==, 0);
    T_INT(tds_copytext_array_elem(&b, false, "back\\slash", 10), ==, 0);
    T_INT(tds_copytext_array_elem(&b, false, "NULL", 4), ==, 0);
    T_INT(tds_copytext_array_elem(&b, false, "", 0), ==, 0);
    tds_copytext_array_end(&b);
    tds_buf_add(&b, "", 1);
    T_STR(b.p, "{\"a\",NULL,\"say \\\"hi\\\"\",\"back\\\\slash\",\"NULL\",\"\"}");
    tds_buf_deinit(&b);
}

static void test_sanitize(void)
{
    char *s = tds_copytext_sanitize("ok\xff\0x\xd8\xb5", 7, 0);

    T_STR(s, "ok??x\xd8\xb5");
    free(s);
    /* Cut at max, never inside a character. */
    s = tds_copytext_sanitize("a\xd8\xb5", 3, 2);
    T_STR(s, "a");
    free(s);
    s = tds_copytext_sanitize("", 0, 0);
    T_STR(s, "");
    free(s);
}

int main(void)
{
    T_RUN(test_copy_escaping);
    T_RUN(test_copy_limit);
    T_RUN(test_storable);
    T_RUN(test_array_literal);
    T_RUN(test_sanitize);
    return 0;
}
