/* test_log — lines on stderr are valid JSON with the documented fields, the
 * level threshold holds, and rate-limited lines count what they suppressed. */
#include "assert.h"
#include "log.h"
#include "util.h"

#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cap_pipe[2] = {-1, -1};
static int saved_stderr = -1;

static void capture_start(void)
{
    T_INT(pipe(cap_pipe), ==, 0);
    saved_stderr = dup(STDERR_FILENO);
    T_TRUE(saved_stderr >= 0);
    T_INT(dup2(cap_pipe[1], STDERR_FILENO), ==, STDERR_FILENO);
    close(cap_pipe[1]);
}

/* Restore stderr and return everything written meanwhile (caller frees). */
static char *capture_end(void)
{
    struct tds_buf b = {0};
    char chunk[4096];
    ssize_t n;

    T_INT(dup2(saved_stderr, STDERR_FILENO), ==, STDERR_FILENO);
    close(saved_stderr);
    while ((n = read(cap_pipe[0], chunk, sizeof(chunk))) > 0)
        T_INT(tds_buf_add(&b, chunk, (size_t)n), ==, 0);
    close(cap_pipe[0]);
    T_INT(tds_buf_add(&b, "", 0), ==, 0);
    return b.p;
}

/* Split into lines; each must be a JSON object. Returns a JSON array. */
static json_t *parse_lines(char *text)
{
    json_t *arr = json_array();
    char *save = text;

    for (char *nl; (nl = strchr(save, '\n')) != NULL; save = nl + 1) {
        json_error_t e;
        json_t *o;

        *nl = '\0';
        o = json_loads(save, 0, &e);
        if (!o)
            T_FAIL("not JSON: %s (%s)", save, e.text);
        T_TRUE(json_is_object(o));
        json_array_append_new(arr, o);
    }
    T_STR(save, ""); /* every line ends with a newline */
    return arr;
}

static const char *field(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static void test_lines(void)
{
    struct tds_log_ctx ctx = {.org = "600123", .entity = "items", .run = "run-1"};
    json_t *lines;
    char *out;

    tds_log_init("teststage", TDS_LOG_INFO);
    T_INT(tds_log_get_level(), ==, TDS_LOG_INFO);
    capture_start();
    tds_debug("hidden %d", 1);
    tds_info("could not connect to database: %s, retrying in %d ms", "refused", 800);
    tds_log(TDS_LOG_WARN, &ctx, "quote \" backslash \\ newline \n tab \t ctl \x01 done");
    tds_log(TDS_LOG_ERROR, &(struct tds_log_ctx){.org = "o1"}, "only org");
    out = capture_end();
    lines = parse_lines(out);
    T_INT(json_array_size(lines), ==, 3);

    json_t *a = json_array_get(lines, 0);
    T_STR(field(a, "level"), "info");
    T_STR(field(a, "stage"), "teststage");
    T_STR(field(a, "msg"), "could not connect to database: refused, retrying in 800 ms");
    T_NULL(json_object_get(a, "org"));
    const char *ts = field(a, "ts");
    T_TRUE(ts != NULL);
    T_INT(strlen(ts), ==, 24); /* 2026-01-05T10:00:00.123Z */
    T_TRUE(ts[4] == '-' && ts[10] == 'T' && ts[19] == '.' && ts[23] == 'Z');

    json_t *b = json_array_get(lines, 1);
    T_STR(field(b, "level"), "warn");
    T_STR(field(b, "msg"), "quote \" backslash \\ newline \n tab \t ctl \x01 done");
    T_STR(field(b, "org"), "600123");
    T_STR(field(b, "entity"), "items");
    T_STR(field(b, "run"), "run-1");

    json_t *c = json_array_get(lines, 2);
    T_STR(field(c, "level"), "error");
    T_STR(field(c, "org"), "o1");
    T_NULL(json_object_get(c, "entity"));

    json_decref(lines);
    free(out);
}

static void test_levels(void)
{
    enum tds_log_level l = TDS_LOG_ERROR;
    json_t *lines;
    char *out;

    T_INT(tds_log_level_parse("debug", &l), ==, 0);
    T_INT(l, ==, TDS_LOG_DEBUG);
    T_INT(tds_log_level_parse("WARNING", &l), ==, 0);
    T_INT(l, ==, TDS_LOG_WARN);
    T_INT(tds_log_level_parse("warn", &l), ==, 0);
    T_INT(tds_log_level_parse("error", &l), ==, 0);
    T_INT(l, ==, TDS_LOG_ERROR);
    T_INT(tds_log_level_parse("verbose", &l), ==, TDS_E_INVALID);
    T_INT(l, ==, TDS_LOG_ERROR);

    tds_log_init("teststage", TDS_LOG_WARN);
    capture_start();
    tds_debug("no");
    tds_info("no");
    tds_warn("yes");
    out = capture_end();
    lines = parse_lines(out);
    T_INT(json_array_size(lines), ==, 1);
    T_STR(field(json_array_get(lines, 0), "msg"), "yes");
    json_decref(lines);
    free(out);
}

static void test_long_message(void)
{
    char *big = malloc(20001);
    json_t *lines;
    char *out;

    T_TRUE(big != NULL);
    memset(big, 'a', 20000);
    big[20000] = '\0';
    tds_log_init("teststage", TDS_LOG_INFO);
    capture_start();
    tds_info("%s", big);
    out = capture_end();
    lines = parse_lines(out);
    T_INT(json_array_size(lines), ==, 1);
    const char *msg = field(json_array_get(lines, 0), "msg");
    T_INT(strlen(msg), ==, 8192);
    T_STR(msg + 8189, "...");
    json_decref(lines);
    free(out);
    free(big);
}

/* Text that is not UTF-8 (a stray byte, a cut character) still makes a valid
 * JSON line: such bytes become U+FFFD; a long message or field is cut between
 * characters. */
static void test_not_utf8(void)
{
    char *big = malloc(20001);
    char field_val[400];
    json_t *lines;
    char *out;

    T_TRUE(big != NULL);
    big[0] = 'x'; /* a cut at 8189 bytes would fall inside a letter */
    big[1] = 'y';
    for (size_t i = 2; i + 1 < 20000; i += 2)
        memcpy(big + i, "\xd8\xa3", 2); /* أ */
    big[19999] = '\0';
    field_val[0] = 'o';
    for (size_t i = 1; i + 1 < sizeof(field_val); i += 2)
        memcpy(field_val + i, "\xd8\xa3", 2);
    field_val[sizeof(field_val) - 1] = '\0';

    tds_log_init("teststage", TDS_LOG_INFO);
    capture_start();
    tds_info("name '%s' then cut '\xd8' and stray '\x80\xff' end", "\xd8\xa3\xd8\xad\xd9\x85\xd8\xaf");
    tds_info("%s", big);
    tds_log(TDS_LOG_WARN, &(struct tds_log_ctx){.org = field_val, .entity = "it\xe2\x82"}, "fields");
    out = capture_end();
    lines = parse_lines(out); /* jansson refuses a line that is not UTF-8 */
    T_INT(json_array_size(lines), ==, 3);
    T_STR(field(json_array_get(lines, 0), "msg"),
          "name '\xd8\xa3\xd8\xad\xd9\x85\xd8\xaf' then cut '\xef\xbf\xbd' and stray "
          "'\xef\xbf\xbd\xef\xbf\xbd' end");

    const char *msg = field(json_array_get(lines, 1), "msg");
    size_t ml = strlen(msg);
    T_INT(ml, ==, 8191); /* "xy", 4093 letters, "..." */
    T_STR(msg + ml - 3, "...");
    T_TRUE(memcmp(msg + ml - 5, "\xd8\xa3", 2) == 0);

    json_t *w = json_array_get(lines, 2);
    T_INT(strlen(field(w, "org")), ==, 255); /* 'o' and 127 letters of 256 bytes */
    T_STR(field(w, "entity"), "it\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(lines);
    free(out);
    free(big);
}

/* C1 controls and bidirectional overrides in text from outside (a name in
 * Zoho's data) are written escaped, as C0 controls are: raw, they act on the
 * terminal that shows the log, or reorder what it shows. The line's JSON
 * still decodes to the same text. */
static void test_invisible_characters_escaped(void)
{
    char *out;
    json_t *lines;
    /* U+0085 (NEL), U+009B (CSI), U+202E (RLO), U+2067 (RLI), U+200F (RLM),
     * U+2028 (line separator); Arabic text passes */
    const char *name = "a\xc2\x85" "b\xc2\x9b" "c\xe2\x80\xae" "d\xe2\x81\xa7" "e\xe2\x80\x8f"
                       "f\xe2\x80\xa8" "\xd8\xa3";

    tds_log_init("teststage", TDS_LOG_INFO);
    capture_start();
    tds_info("name %s", name);
    out = capture_end();
    T_TRUE(strstr(out, "a\\u0085b\\u009bc\\u202ed\\u2067e\\u200ff\\u2028\xd8\xa3") != NULL);
    T_TRUE(strstr(out, "\xc2\x85") == NULL && strstr(out, "\xe2\x80\xae") == NULL);
    lines = parse_lines(out);
    T_INT(json_array_size(lines), ==, 1);
    char want[64];
    snprintf(want, sizeof(want), "name %s", name);
    T_STR(field(json_array_get(lines, 0), "msg"), want);
    json_decref(lines);
    free(out);
}

/* Lines of 8 KB from four threads into a pipe read slowly: a pipe takes at
 * most PIPE_BUF (4 KiB) bytes in one piece, so one write(2) a line let
 * another thread's bytes in between. Each line must be one thread's. */
enum { LT_THREADS = 4, LT_LINES = 40, LT_LEN = 8000 };

static void *log_thread(void *arg)
{
    char *msg = malloc(LT_LEN + 1);

    T_TRUE(msg != NULL);
    memset(msg, 'a' + (int)(intptr_t)arg, LT_LEN);
    msg[LT_LEN] = '\0';
    for (int i = 0; i < LT_LINES; i++)
        tds_log(TDS_LOG_INFO, NULL, "%s", msg);
    free(msg);
    return NULL;
}

static void *slow_reader(void *arg)
{
    struct tds_buf *b = arg;
    char chunk[512];
    ssize_t n;

    while ((n = read(cap_pipe[0], chunk, sizeof(chunk))) > 0) {
        T_INT(tds_buf_add(b, chunk, (size_t)n), ==, 0);
        usleep(200);
    }
    return NULL;
}

static void test_threads_never_interleave(void)
{
    pthread_t t[LT_THREADS], rd;
    struct tds_buf b = {0};
    json_t *lines;

    capture_start();
    T_INT(pthread_create(&rd, NULL, slow_reader, &b), ==, 0);
    for (intptr_t i = 0; i < LT_THREADS; i++)
        T_INT(pthread_create(&t[i], NULL, log_thread, (void *)i), ==, 0);
    for (int i = 0; i < LT_THREADS; i++)
        pthread_join(t[i], NULL);
    T_INT(dup2(saved_stderr, STDERR_FILENO), ==, STDERR_FILENO); /* the pipe's last writer */
    close(saved_stderr);
    pthread_join(rd, NULL);
    close(cap_pipe[0]);
    T_INT(tds_buf_add(&b, "", 0), ==, 0);
    lines = parse_lines(b.p);
    T_INT(json_array_size(lines), ==, LT_THREADS * LT_LINES);
    for (size_t i = 0; i < json_array_size(lines); i++) {
        const char *m = field(json_array_get(lines, i), "msg");

        T_TRUE(m && strlen(m) == LT_LEN);
        T_TRUE(strspn(m, (char[]){m[0], 0}) == LT_LEN);
    }
    json_decref(lines);
    free(b.p);
}

static void test_limited(void)
{
    struct tds_log_limit lim = {.interval_ms = 100};
    json_t *lines;
    char *out;

    tds_log_init("teststage", TDS_LOG_INFO);
    capture_start();
    for (int i = 0; i < 5; i++)
        tds_log_limited(&lim, TDS_LOG_ERROR, NULL, "repeated failure %d", i);
    T_INT(lim.suppressed, ==, 4);
    usleep(150 * 1000);
    tds_log_limited(&lim, TDS_LOG_ERROR, NULL, "repeated failure %d", 5);
    tds_log_limited(&lim, TDS_LOG_ERROR, NULL, "repeated failure %d", 6);
    out = capture_end();
    lines = parse_lines(out);
    T_INT(json_array_size(lines), ==, 2);
    json_t *a = json_array_get(lines, 0), *b = json_array_get(lines, 1);
    T_STR(field(a, "msg"), "repeated failure 0");
    T_NULL(json_object_get(a, "suppressed"));
    T_STR(field(b, "msg"), "repeated failure 5");
    T_INT(json_integer_value(json_object_get(b, "suppressed")), ==, 4);
    T_INT(lim.suppressed, ==, 1);
    json_decref(lines);
    free(out);

    /* interval 0 means 60 s. */
    struct tds_log_limit def = {0};
    capture_start();
    tds_log_limited(&def, TDS_LOG_WARN, NULL, "x");
    tds_log_limited(&def, TDS_LOG_WARN, NULL, "x");
    out = capture_end();
    lines = parse_lines(out);
    T_INT(json_array_size(lines), ==, 1);
    T_INT(def.suppressed, ==, 1);
    json_decref(lines);
    free(out);
}

int main(void)
{
    T_RUN(test_lines);
    T_RUN(test_levels);
    T_RUN(test_long_message);
    T_RUN(test_not_utf8);
    T_RUN(test_invisible_characters_escaped);
    T_RUN(test_limited);
    T_RUN(test_threads_never_interleave);
    return 0;
}
