/* test_scrape — the Prometheus text parser: samples, labels and escapes,
 * comments, special values, bad lines, limits, sums and quantiles. */
#include <math.h>
#include <string.h>

#include "assert.h"
#include "scrape.h"
#include "util.h"

static struct tds_scrape *parse(const char *text)
{
    struct tds_scrape *s = NULL;
    size_t bad = 0;
    int rc = tds_scrape_parse(text, strlen(text), &s, &bad);

    if (rc != 0)
        T_FAIL("parse failed rc=%d at line %zu", rc, bad);
    return s;
}

static void test_samples(void)
{
    struct tds_scrape *s = parse(
        "# HELP tds_fetcher_api_calls_total Zoho API calls\n"
        "# TYPE tds_fetcher_api_calls_total counter\n"
        "tds_fetcher_api_calls_total{org=\"600\",endpoint=\"/items\",status=\"200\"} 41\n"
        "tds_fetcher_api_calls_total{org=\"600\",endpoint=\"/items\",status=\"500\"} 9\n"
        "tds_fetcher_api_calls_total{org=\"700\",endpoint=\"/items\",status=\"200\"} 5\n"
        "\n"
        "tds_ingress_unacked 12.5\n"
        "up{job=\"x\",} 1 1700000000000\r\n"
        "weird{path=\"a\\\\b\",q=\"say \\\"hi\\\"\",nl=\"x\\ny\"} -3e2\n");
    const struct tds_scrape_sample *smp;

    T_INT(tds_scrape_count(s), ==, 6);
    smp = tds_scrape_at(s, 0);
    T_STR(smp->name, "tds_fetcher_api_calls_total");
    T_INT(smp->n_labels, ==, 3);
    T_STR(tds_scrape_label(smp, "status"), "200");
    T_NULL(tds_scrape_label(smp, "nope"));
    T_TRUE(smp->value == 41);
    smp = tds_scrape_at(s, 3);
    T_STR(smp->name, "tds_ingress_unacked");
    T_INT(smp->n_labels, ==, 0);
    T_TRUE(smp->value == 12.5);
    smp = tds_scrape_at(s, 4);
    T_STR(tds_scrape_label(smp, "job"), "x");
    T_TRUE(smp->value == 1);
    smp = tds_scrape_at(s, 5);
    T_STR(tds_scrape_label(smp, "path"), "a\\b");
    T_STR(tds_scrape_label(smp, "q"), "say \"hi\"");
    T_STR(tds_scrape_label(smp, "nl"), "x\ny");
    T_TRUE(smp->value == -300);

    T_TRUE(tds_scrape_sum(s, "tds_fetcher_api_calls_total", NULL, NULL, NULL) == 55);
    size_t n = 0;
    T_TRUE(tds_scrape_sum(s, "tds_fetcher_api_calls_total", "org", "600", &n) == 50);
    T_INT(n, ==, 2);
    T_TRUE(tds_scrape_sum(s, "missing", NULL, NULL, &n) == 0);
    T_INT(n, ==, 0);
    T_TRUE(tds_scrape_has(s, NULL, "tds_ingress_"));
    T_TRUE(tds_scrape_has(s, "up", NULL));
    T_TRUE(!tds_scrape_has(s, NULL, "tds_writer_"));
    tds_scrape_free(s);
}

static void test_special_values(void)
{
    struct tds_scrape *s = parse("a +Inf\nb -Inf\nc NaN\nd 1e-3\n");

    T_TRUE(isinf(tds_scrape_at(s, 0)->value) && tds_scrape_at(s, 0)->value > 0);
    T_TRUE(isinf(tds_scrape_at(s, 1)->value) && tds_scrape_at(s, 1)->value < 0);
    T_TRUE(isnan(tds_scrape_at(s, 2)->value));
    T_TRUE(fabs(tds_scrape_at(s, 3)->value - 0.001) < 1e-12);
    tds_scrape_free(s);
}

static void test_bad(void)
{
    static const char *const bad[] = {
        "9name 1\n",
        "name\n",
        "name{a=\"1\" 2\n",
        "name{a=1} 2\n",
        "name{a=\"1\"} x\n",
        "name{a=\"1\"} 1 notatime\n",
        "name{a=\"\\q\"} 1\n",
        "name{=\"1\"} 1\n",
        "ok 1\nname{a=\"unterminated} 1\n",
    };

    for (size_t i = 0; i < TDS_ARRAY_SIZE(bad); i++) {
        struct tds_scrape *s = NULL;
        size_t line = 0;
        int rc = tds_scrape_parse(bad[i], strlen(bad[i]), &s, &line);

        if (rc != TDS_SCRAPE_E_SYNTAX)
            T_FAIL("case %zu: expected a syntax error, got %d", i, rc);
        T_NULL(s);
        T_INT(line, ==, i == 8 ? 2 : 1);
    }
}

static void test_limits(void)
{
    struct tds_buf b = {0};
    struct tds_scrape *s = NULL;

    /* labels per sample */
    T_INT(tds_buf_addf(&b, "x{"), ==, 0);
    for (int i = 0; i <= TDS_SCRAPE_MAX_LABELS; i++)
        T_INT(tds_buf_addf(&b, "l%d=\"v\",", i), ==, 0);
    T_INT(tds_buf_addf(&b, "} 1\n"), ==, 0);
    T_INT(tds_scrape_parse(b.p, b.len, &s, NULL), ==, TDS_E_TOO_LARGE);
    T_NULL(s);
    tds_buf_deinit(&b);
    /* total size */
    T_INT(tds_scrape_parse("", (size_t)TDS_SCRAPE_MAX_BYTES + 1, &s, NULL), ==, TDS_E_TOO_LARGE);
    /* embedded NUL */
    T_INT(tds_scrape_parse("a 1\0b 2\n", 8, &s, NULL), ==, TDS_SCRAPE_E_SYNTAX);
    /* empty input is fine */
    T_INT(tds_scrape_parse("", 0, &s, NULL), ==, 0);
    T_INT(tds_scrape_count(s), ==, 0);
    tds_scrape_free(s);
}

static void test_quantile(void)
{
    double le[] = {0.01, 0.1, 1, INFINITY};
    double cum[] = {50, 90, 100, 100};
    double none[] = {0, 0, 0, 0};
    double inf_only[] = {0, 0, 0, 10};

    /* median inside the first bucket: 0 + 0.01 * 50/50 */
    T_TRUE(fabs(tds_scrape_quantile(le, cum, 4, 0.5) - 0.01) < 1e-9);
    /* p95: rank 95 in (0.1, 1] holding 10 → 0.1 + 0.9 * 5/10 */
    T_TRUE(fabs(tds_scrape_quantile(le, cum, 4, 0.95) - 0.55) < 1e-9);
    T_TRUE(isnan(tds_scrape_quantile(le, none, 4, 0.99)));
    /* all in +Inf: the last finite bound */
    T_TRUE(tds_scrape_quantile(le, inf_only, 4, 0.99) == 1);
}

int main(void)
{
    T_RUN(test_samples);
    T_RUN(test_special_values);
    T_RUN(test_bad);
    T_RUN(test_limits);
    T_RUN(test_quantile);
    return 0;
}
