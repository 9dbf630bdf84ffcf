/* test_util — strict integer parsing, secret references, UTF-8 validation,
 * constant-time comparison and the bounded buffer. */
#include "assert.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_parse_i64(void)
{
    int64_t v = 42;

    T_INT(tds_parse_i64("0", 0, 10, &v), ==, 0);
    T_INT(v, ==, 0);
    T_INT(tds_parse_i64("-17", -100, 100, &v), ==, 0);
    T_INT(v, ==, -17);
    T_INT(tds_parse_i64("+5", 0, 10, &v), ==, 0);
    T_INT(v, ==, 5);
    T_INT(tds_parse_i64("9223372036854775807", INT64_MIN, INT64_MAX, &v), ==, 0);
    T_INT(v, ==, INT64_MAX);
    T_INT(tds_parse_i64("-9223372036854775808", INT64_MIN, INT64_MAX, &v), ==, 0);
    T_INT(v, ==, INT64_MIN);

    v = 42;
    T_INT(tds_parse_i64("9223372036854775808", INT64_MIN, INT64_MAX, &v), ==, TDS_E_INVALID);
    T_INT(tds_parse_i64("-9223372036854775809", INT64_MIN, INT64_MAX, &v), ==, TDS_E_INVALID);
    T_INT(tds_parse_i64("99999999999999999999999", INT64_MIN, INT64_MAX, &v), ==, TDS_E_INVALID);
    T_INT(tds_parse_i64("", 0, 10, &v), ==, TDS_E_INVALID);
    T_INT(tds_parse_i64("-", 0, 10, &v), ==, TDS_E_INVALID);
    T_INT(tds_parse_i64("abc", 0, 10, &v), ==, TDS_E_INVALID);
    T_INT(tds_parse_i64("12abc", 0, 100, &v), ==, TDS_E_INVALID);
    T_INT(tds_parse_i64(" 12", 0, 100, &v), ==, TDS_E_INVALID);
    T_INT(tds_parse_i64("12 ", 0, 100, &v), ==, TDS_E_INVALID);
    T_INT(tds_parse_i64("0x10", 0, 100, &v), ==, TDS_E_INVALID);
    T_INT(tds_parse_i64("1.5", 0, 100, &v), ==, TDS_E_INVALID);
    T_INT(tds_parse_i64("11", 0, 10, &v), ==, TDS_E_INVALID);
    T_INT(tds_parse_i64("-1", 0, 10, &v), ==, TDS_E_INVALID);
    T_INT(tds_parse_i64(NULL, 0, 10, &v), ==, TDS_E_INVALID);
    T_INT(v, ==, 42); /* untouched on every failure */
}

static void test_parse_bool(void)
{
    bool b = false;

    T_INT(tds_parse_bool("TRUE", &b), ==, 0);
    T_TRUE(b);
    T_INT(tds_parse_bool("off", &b), ==, 0);
    T_TRUE(!b);
    T_INT(tds_parse_bool("Yes", &b), ==, 0);
    T_TRUE(b);
    T_INT(tds_parse_bool("0", &b), ==, 0);
    T_TRUE(!b);
    T_INT(tds_parse_bool("maybe", &b), ==, TDS_E_INVALID);
    T_INT(tds_parse_bool("", &b), ==, TDS_E_INVALID);
    T_INT(tds_parse_bool("truex", &b), ==, TDS_E_INVALID);
}

static void write_file(const char *path, const char *data, size_t n)
{
    FILE *f = fopen(path, "wb");

    T_TRUE(f != NULL);
    T_INT(fwrite(data, 1, n, f), ==, n);
    T_INT(fclose(f), ==, 0);
}

static void test_secrets(void)
{
    char dir[] = "/tmp/tds-test-util-XXXXXX";
    char path[256], spec[300];
    char *s = NULL;

    T_TRUE(mkdtemp(dir) != NULL);

    T_INT(tds_secret_resolve("plain-value", &s), ==, 0);
    T_STR(s, "plain-value");
    free(s);

    setenv("TDS_TEST_SECRET", "from-env", 1);
    T_INT(tds_secret_resolve("env:TDS_TEST_SECRET", &s), ==, 0);
    T_STR(s, "from-env");
    free(s);
    /* one trailing line ending, as a file's (a Secret made with echo) */
    setenv("TDS_TEST_SECRET", "from-env\r\n", 1);
    T_INT(tds_secret_resolve("env:TDS_TEST_SECRET", &s), ==, 0);
    T_STR(s, "from-env");
    free(s);
    setenv("TDS_TEST_SECRET", "two\n\n", 1);
    T_INT(tds_secret_resolve("env:TDS_TEST_SECRET", &s), ==, 0);
    T_STR(s, "two\n");
    free(s);
    s = NULL;
    unsetenv("TDS_TEST_SECRET");
    T_INT(tds_secret_resolve("env:TDS_TEST_SECRET", &s), ==, TDS_E_NOTFOUND);
    T_NULL(s);

    snprintf(path, sizeof(path), "%s/secret", dir);
    write_file(path, "s3cret\n\n", 8); /* only one newline is stripped */
    snprintf(spec, sizeof(spec), "file:%s", path);
    T_INT(tds_secret_resolve(spec, &s), ==, 0);
    T_STR(s, "s3cret\n");
    free(s);
    write_file(path, "nonewline", 9);
    T_INT(tds_secret_resolve(spec, &s), ==, 0);
    T_STR(s, "nonewline");
    free(s);
    s = NULL;

    /* Exactly 64 KiB is allowed, one byte more is not. */
    char *big = malloc(64 * 1024 + 1);
    T_TRUE(big != NULL);
    memset(big, 'x', 64 * 1024 + 1);
    write_file(path, big, 64 * 1024);
    T_INT(tds_secret_resolve(spec, &s), ==, 0);
    T_INT(strlen(s), ==, 64 * 1024);
    free(s);
    s = NULL;
    write_file(path, big, 64 * 1024 + 1);
    T_INT(tds_secret_resolve(spec, &s), ==, TDS_E_TOO_LARGE);
    T_NULL(s);
    free(big);

    unlink(path);
    T_INT(tds_secret_resolve(spec, &s), ==, TDS_E_NOTFOUND);
    snprintf(spec, sizeof(spec), "file:%s", dir); /* a directory cannot be read */
    T_INT(tds_secret_resolve(spec, &s), ==, -EISDIR);
    T_NULL(s);
    rmdir(dir);
}

static void test_utf8(void)
{
    T_TRUE(tds_utf8_valid("", 0));
    T_TRUE(tds_utf8_valid("plain ascii", 11));
    T_TRUE(tds_utf8_valid("caf\xc3\xa9", 5));                 /* é */
    T_TRUE(tds_utf8_valid("\xe2\x82\xac", 3));                /* € */
    T_TRUE(tds_utf8_valid("\xf0\x9f\x98\x80", 4));            /* U+1F600 */
    T_TRUE(tds_utf8_valid("\xf4\x8f\xbf\xbf", 4));            /* U+10FFFF */
    T_TRUE(tds_utf8_valid("a\0b", 3));                        /* NUL is valid UTF-8 */
    T_TRUE(!tds_utf8_valid("\xc0\x80", 2));                   /* overlong NUL */
    T_TRUE(!tds_utf8_valid("\xc1\xbf", 2));                   /* overlong 2-byte */
    T_TRUE(!tds_utf8_valid("\xe0\x80\xaf", 3));               /* overlong '/' */
    T_TRUE(!tds_utf8_valid("\xf0\x8f\xbf\xbf", 4));           /* overlong 4-byte */
    T_TRUE(!tds_utf8_valid("\xed\xa0\x80", 3));               /* surrogate D800 */
    T_TRUE(!tds_utf8_valid("\xed\xbf\xbf", 3));               /* surrogate DFFF */
    T_TRUE(!tds_utf8_valid("\xf4\x90\x80\x80", 4));           /* > U+10FFFF */
    T_TRUE(!tds_utf8_valid("\xc3", 1));                       /* truncated */
    T_TRUE(!tds_utf8_valid("\xe2\x82", 2));                   /* truncated */
    T_TRUE(!tds_utf8_valid("\x80", 1));                       /* lone continuation */
    T_TRUE(!tds_utf8_valid("\xc3\x28", 2));                   /* bad continuation */
    T_TRUE(!tds_utf8_valid("\xff", 1));
    T_TRUE(!tds_utf8_valid("\xf8\x88\x80\x80\x80", 5));       /* 5-byte form */
    /* The length bounds the check: a valid prefix of an invalid string. */
    T_TRUE(tds_utf8_valid("ab\xff", 2));
}

/* Text for a terminal: control characters become '?', nothing else changes. */
static void test_term_text(void)
{
    char out[64];
    const char *in = "a\x1b[2Jb\x07" "c\x7f\r\n\xc2\x9b" "31m \xd8\xb3\xd8\xb9\xd8\xb1 \xc2\xa0|";

    T_STR(tds_term_text(in, strlen(in), out, sizeof(out)),
          "a?[2Jb?c????31m \xd8\xb3\xd8\xb9\xd8\xb1 \xc2\xa0|"); /* Arabic and NBSP kept */
    T_STR(tds_term_text("abc", 2, out, sizeof(out)), "ab");
    T_STR(tds_term_text("\xd8\xb3\xd8\xb9", 4, out, 4), "\xd8\xb3"); /* cut at a character */
    T_STR(tds_term_text("x\xc2", 2, out, sizeof(out)), "x");  /* a cut-off lead byte goes */
}

/* Cutting text for a message never splits a character. */
static void test_utf8_cut(void)
{
    const char *ar = "\xd8\xa3\xd8\xad\xd9\x85\xd8\xaf"; /* أحمد, 2 bytes each */
    const char *emoji = "ab\xf0\x9f\x98\x80" "c";            /* a b U+1F600 c */
    char buf[16];

    T_INT(tds_utf8_prefix(ar, 8, 8), ==, 8);
    T_INT(tds_utf8_prefix(ar, 8, 20), ==, 8);
    T_INT(tds_utf8_prefix(ar, 8, 5), ==, 4);
    T_INT(tds_utf8_prefix(ar, 8, 4), ==, 4);
    T_INT(tds_utf8_prefix(emoji, 7, 3), ==, 2);
    T_INT(tds_utf8_prefix(emoji, 7, 5), ==, 2);
    T_INT(tds_utf8_prefix(emoji, 7, 6), ==, 6);
    T_INT(tds_utf8_prefix("abc", 3, 0), ==, 0);
    for (size_t max = 0; max <= 8; max++)
        T_TRUE(tds_utf8_valid(ar, tds_utf8_prefix(ar, 8, max)));

    /* what snprintf leaves at every buffer size (its first size - 1 bytes),
     * trimmed, is valid text */
    for (size_t size = 1; size <= 9; size++) {
        buf[0] = 'x';
        memcpy(buf + 1, ar, size - 1);
        buf[size - 1] = '\0';
        tds_utf8_trim(buf);
        T_TRUE(tds_utf8_valid(buf, strlen(buf)));
        T_INT(strlen(buf), ==, size <= 1 ? 0 : 1 + (size - 2) / 2 * 2);
    }
    for (size_t size = 1; size <= 8; size++) {
        memcpy(buf, emoji, size - 1);
        buf[size - 1] = '\0';
        tds_utf8_trim(buf);
        T_TRUE(tds_utf8_valid(buf, strlen(buf)));
        T_INT(strlen(buf), ==, size - 1 <= 2 ? size - 1 : size - 1 < 6 ? 2 : size - 1);
    }
    strcpy(buf, "done \xe2\x82\xac");
    tds_utf8_trim(buf); /* a complete sequence stays */
    T_INT(strlen(buf), ==, 8);
    strcpy(buf, "\x80\x80");
    tds_utf8_trim(buf); /* not UTF-8 to begin with: left as it is */
    T_INT(strlen(buf), ==, 2);

    /* one character at a time */
    T_INT(tds_utf8_char("a", 1), ==, 1);
    T_INT(tds_utf8_char(ar, 8), ==, 2);
    T_INT(tds_utf8_char(ar, 1), ==, 0);           /* cut */
    T_INT(tds_utf8_char(emoji + 2, 5), ==, 4);
    T_INT(tds_utf8_char(emoji + 2, 3), ==, 0);    /* cut */
    T_INT(tds_utf8_char("\xe2\x82\xac", 3), ==, 3);
    T_INT(tds_utf8_char("\x80", 1), ==, 0);        /* a continuation byte alone */
    T_INT(tds_utf8_char("\xc0\xaf", 2), ==, 0);    /* overlong '/' */
    T_INT(tds_utf8_char("\xed\xa0\x80", 3), ==, 0); /* a surrogate */
    T_INT(tds_utf8_char("\xf4\x90\x80\x80", 4), ==, 0); /* past U+10FFFF */
    T_INT(tds_utf8_char("\xff", 1), ==, 0);
    T_INT(tds_utf8_char("\xd8x", 2), ==, 0);       /* lead without its continuation */
}

static void test_ct_equal(void)
{
    T_TRUE(tds_ct_equal("abc", 3, "abc", 3));
    T_TRUE(!tds_ct_equal("abc", 3, "abd", 3));
    T_TRUE(!tds_ct_equal("abc", 3, "abcd", 4));
    /* ordered bytes, the shorter first on a common prefix */
    T_INT(tds_bytes_cmp("abc", 3, "abc", 3), ==, 0);
    T_INT(tds_bytes_cmp("abc", 3, "abd", 3), <, 0);
    T_INT(tds_bytes_cmp("abc", 3, "ab", 2), >, 0);
    T_INT(tds_bytes_cmp("", 0, "a", 1), <, 0);
    T_INT(tds_bytes_cmp("\xd8\xb3", 2, "z", 1), >, 0);
    T_TRUE(!tds_ct_equal("abc", 3, "ab", 2));
    T_TRUE(tds_ct_equal("", 0, "", 0));
    T_TRUE(!tds_ct_equal("\x00\x01", 2, "\x00\x02", 2));
}

static void test_hex_uid(void)
{
    char out[9];
    char *a, *b;

    tds_hex((const unsigned char *)"\x00\xab\x10\xff", 4, out);
    T_STR(out, "00ab10ff");

    a = tds_uid("run");
    b = tds_uid("run");
    T_TRUE(a && b);
    T_INT(strlen(a), ==, 4 + 16);
    T_TRUE(strncmp(a, "run-", 4) == 0);
    T_INT(strspn(a + 4, "0123456789abcdef"), ==, 16);
    T_TRUE(strcmp(a, b) != 0);
    free(a);
    free(b);
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Ids come from a per-thread pool of random bytes: many in a row (across
 * several refills) are all different, and a forked child does not repeat the
 * ids its parent goes on to make. */
static void test_uid_pool(void)
{
    enum { N = 1000 };
    char *ids[N];
    int fds[2];
    char child[64] = "";
    char *parent;
    pid_t pid;

    for (int i = 0; i < N; i++) {
        ids[i] = tds_uid("m");
        T_TRUE(ids[i] != NULL);
    }
    qsort(ids, N, sizeof(ids[0]), cmp_str);
    for (int i = 1; i < N; i++)
        T_TRUE(strcmp(ids[i - 1], ids[i]) != 0);
    for (int i = 0; i < N; i++)
        free(ids[i]);

    T_INT(pipe(fds), ==, 0);
    fflush(NULL);
    pid = fork();
    T_TRUE(pid >= 0);
    if (pid == 0) {
        char *c = tds_uid("m");
        ssize_t w = c ? write(fds[1], c, strlen(c)) : -1;

        _exit(w > 0 ? 0 : 1);
    }
    close(fds[1]);
    parent = tds_uid("m");
    T_TRUE(read(fds[0], child, sizeof(child) - 1) > 0);
    close(fds[0]);
    T_INT(waitpid(pid, NULL, 0), ==, pid);
    T_TRUE(parent != NULL);
    T_TRUE(strcmp(parent, child) != 0);
    free(parent);
}

static void test_buf(void)
{
    struct tds_buf b = {.max = 10};

    T_INT(tds_buf_add(&b, "hello", 5), ==, 0);
    T_INT(tds_buf_addf(&b, "%d%s", 12, "ab"), ==, 0);
    T_INT(b.len, ==, 9);
    T_STR(b.p, "hello12ab");
    T_INT(tds_buf_add(&b, "xy", 2), ==, TDS_E_TOO_LARGE);
    T_INT(tds_buf_addf(&b, "%s", "xy"), ==, TDS_E_TOO_LARGE);
    T_INT(b.len, ==, 9); /* unchanged on refusal */
    T_STR(b.p, "hello12ab");
    T_INT(tds_buf_add(&b, "z", 1), ==, 0);
    T_INT(b.len, ==, 10);
    tds_buf_reset(&b);
    T_INT(b.len, ==, 0);
    T_STR(b.p, "");
    tds_buf_deinit(&b);
    T_NULL(b.p);
    T_INT(b.cap, ==, 0);

    struct tds_buf u = {0}; /* unlimited grows across many reallocations */
    for (int i = 0; i < 10000; i++)
        T_INT(tds_buf_addf(&u, "%04d", i % 10000), ==, 0);
    T_INT(u.len, ==, 40000);
    T_TRUE(memcmp(u.p + 39996, "9999", 4) == 0);
    tds_buf_deinit(&u);
}

static void test_clocks(void)
{
    int64_t a = tds_now_ms(), u = tds_now_us(), b = tds_now_ms(), w = tds_wall_ms();

    T_TRUE(a > 0);
    T_TRUE(w > 1700000000000LL); /* after 2023 */
    /* one clock: the microseconds read between two milliseconds fall between them */
    T_INT(u / 1000, >=, a);
    T_INT(u / 1000, <=, b);
    usleep(20000);
    T_INT(tds_now_ms() - a, >=, 19);
    T_INT(tds_now_us() - u, >=, 20000);
}

int main(void)
{
    T_RUN(test_parse_i64);
    T_RUN(test_parse_bool);
    T_RUN(test_secrets);
    T_RUN(test_utf8);
    T_RUN(test_utf8_cut);
    T_RUN(test_term_text);
    T_RUN(test_ct_equal);
    T_RUN(test_hex_uid);
    T_RUN(test_uid_pool);
    T_RUN(test_buf);
    T_RUN(test_clocks);
    return 0;
}
