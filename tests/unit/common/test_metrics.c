/* test_metrics — exact Prometheus text for counters, gauges and histograms
 * with and without labels, label escaping, kind mismatches and concurrent
 * updates. */
#include "assert.h"
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void test_render_exact(void)
{
    struct tds_metrics *m = NULL;
    struct tds_series *c1, *c2, *g, *h, *h2;
    static const double b[] = {0.1, 1, 2.5};
    char *text = NULL;
    size_t len = 0;

    T_INT(tds_metrics_new(&m), ==, 0);
    c1 = tds_metrics_get(m, TDS_COUNTER, "tds_rows_written_total", "Rows written.",
                         "org=\"1\",table=\"items\"", NULL, 0);
    c2 = tds_metrics_getf(m, TDS_COUNTER, "tds_rows_written_total", "ignored: first help wins",
                          "org=\"%d\",table=\"%s\"", 2, "contacts");
    g = tds_metrics_get(m, TDS_GAUGE, "tds_inflight", "In-flight messages\\with a\nnewline.", "",
                        NULL, 0);
    h = tds_metrics_get(m, TDS_HISTOGRAM, "tds_latency_seconds", "Latency.", "stage=\"w\"", b, 3);
    h2 = tds_metrics_get(m, TDS_HISTOGRAM, "tds_plain_seconds", "Plain.", "", b, 3);
    T_TRUE(c1 && c2 && g && h && h2);
    /* Same name and labels → same series. */
    T_TRUE(tds_metrics_get(m, TDS_COUNTER, "tds_rows_written_total", "x",
                           "org=\"1\",table=\"items\"", NULL, 0) == c1);

    tds_series_inc(c1, 3);
    tds_series_inc(c1, 1);
    tds_series_inc(c2, 0.5);
    tds_series_set(g, -2);
    tds_series_inc(g, 1.25);
    tds_series_observe(h, 0.05);
    tds_series_observe(h, 0.1); /* le is inclusive */
    tds_series_observe(h, 2);
    tds_series_observe(h, 7);
    /* neither counted nor summed: _sum would stay NaN or infinite */
    tds_series_observe(h, NAN);
    tds_series_observe(h, INFINITY);
    tds_series_observe(h2, 1);
    T_TRUE(tds_series_value(c1) == 4);
    T_TRUE(tds_series_value(g) == -0.75);
    T_TRUE(tds_series_value(h) == 4);

    T_INT(tds_metrics_render(m, &text, &len), ==, 0);
    T_INT(len, ==, strlen(text));
    T_STR(text,
          "# HELP tds_rows_written_total Rows written.\n"
          "# TYPE tds_rows_written_total counter\n"
          "tds_rows_written_total{org=\"1\",table=\"items\"} 4\n"
          "tds_rows_written_total{org=\"2\",table=\"contacts\"} 0.5\n"
          "# HELP tds_inflight In-flight messages\\\\with a\\nnewline.\n"
          "# TYPE tds_inflight gauge\n"
          "tds_inflight -0.75\n"
          "# HELP tds_latency_seconds Latency.\n"
          "# TYPE tds_latency_seconds histogram\n"
          "tds_latency_seconds_bucket{stage=\"w\",le=\"0.1\"} 2\n"
          "tds_latency_seconds_bucket{stage=\"w\",le=\"1\"} 2\n"
          "tds_latency_seconds_bucket{stage=\"w\",le=\"2.5\"} 3\n"
          "tds_latency_seconds_bucket{stage=\"w\",le=\"+Inf\"} 4\n"
          "tds_latency_seconds_sum{stage=\"w\"} 9.15\n"
          "tds_latency_seconds_count{stage=\"w\"} 4\n"
          "# HELP tds_plain_seconds Plain.\n"
          "# TYPE tds_plain_seconds histogram\n"
          "tds_plain_seconds_bucket{le=\"0.1\"} 0\n"
          "tds_plain_seconds_bucket{le=\"1\"} 1\n"
          "tds_plain_seconds_bucket{le=\"2.5\"} 1\n"
          "tds_plain_seconds_bucket{le=\"+Inf\"} 1\n"
          "tds_plain_seconds_sum 1\n"
          "tds_plain_seconds_count 1\n");
    free(text);
    tds_metrics_free(m);
}

static void test_default_buckets(void)
{
    struct tds_metrics *m = NULL;
    char *text = NULL;

    T_INT(tds_metrics_new(&m), ==, 0);
    struct tds_series *h = tds_metrics_get(m, TDS_HISTOGRAM, "d_seconds", "D.", "", NULL, 0);
    T_TRUE(h != NULL);
    tds_series_observe(h, 0.003);
    T_INT(tds_metrics_render(m, &text, NULL), ==, 0);
    T_TRUE(strstr(text, "d_seconds_bucket{le=\"0.0005\"} 0\n"
                        "d_seconds_bucket{le=\"0.001\"} 0\n"
                        "d_seconds_bucket{le=\"0.0025\"} 0\n"
                        "d_seconds_bucket{le=\"0.005\"} 1\n"
                        "d_seconds_bucket{le=\"0.01\"} 1\n"
                        "d_seconds_bucket{le=\"0.025\"} 1\n"
                        "d_seconds_bucket{le=\"0.05\"} 1\n"
                        "d_seconds_bucket{le=\"0.1\"} 1\n"
                        "d_seconds_bucket{le=\"0.25\"} 1\n"
                        "d_seconds_bucket{le=\"0.5\"} 1\n"
                        "d_seconds_bucket{le=\"1\"} 1\n"
                        "d_seconds_bucket{le=\"2.5\"} 1\n"
                        "d_seconds_bucket{le=\"5\"} 1\n"
                        "d_seconds_bucket{le=\"10\"} 1\n"
                        "d_seconds_bucket{le=\"+Inf\"} 1\n"
                        "d_seconds_sum 0.003\n"
                        "d_seconds_count 1\n") != NULL);
    free(text);
    tds_metrics_free(m);
}

static void test_errors_and_empty(void)
{
    struct tds_metrics *m = NULL;
    char *text = NULL;
    size_t len = 99;
    static const double bad[] = {1, 0.5};

    T_INT(tds_metrics_new(&m), ==, 0);
    T_INT(tds_metrics_render(m, &text, &len), ==, 0);
    T_STR(text, "");
    T_INT(len, ==, 0);
    free(text);

    T_TRUE(tds_metrics_get(m, TDS_COUNTER, "a_total", "A.", "", NULL, 0) != NULL);
    T_NULL(tds_metrics_get(m, TDS_GAUGE, "a_total", "A.", "", NULL, 0)); /* kind mismatch */
    T_NULL(tds_metrics_get(m, TDS_COUNTER, "bad name", "B.", "", NULL, 0));
    T_NULL(tds_metrics_get(m, TDS_COUNTER, "9lives", "B.", "", NULL, 0));
    T_NULL(tds_metrics_get(m, TDS_HISTOGRAM, "h", "H.", "", bad, 2)); /* not ascending */
    double many[33];
    for (int i = 0; i < 33; i++)
        many[i] = i;
    T_NULL(tds_metrics_get(m, TDS_HISTOGRAM, "h", "H.", "", many, 33));
    T_TRUE(tds_metrics_get(m, TDS_HISTOGRAM, "h", "H.", "", many, 32) != NULL);
    tds_metrics_free(m);
    T_NULL(tds_metrics_free(NULL));
}

static void test_escape(void)
{
    char *e = tds_metrics_escape("a\\b\"c\nd");

    T_STR(e, "a\\\\b\\\"c\\nd");
    free(e);
    e = tds_metrics_escape("");
    T_STR(e, "");
    free(e);
    e = tds_metrics_escape("plain");
    T_STR(e, "plain");
    free(e);
    /* Bytes that are not UTF-8 would make Prometheus refuse the scrape
     * ("invalid label value"), for good: each becomes U+FFFD. */
    e = tds_metrics_escape("a\xff\xc3(\xd8\xb3");
    T_STR(e, "a\xef\xbf\xbd\xef\xbf\xbd(\xd8\xb3");
    free(e);
    /* A cut is made in the value, between characters, never inside an
     * escape (which would leave a lone backslash before the closing quote) */
    e = tds_metrics_escape_n("ab\\cd", 3);
    T_STR(e, "ab\\\\");
    free(e);
    e = tds_metrics_escape_n("a\xd8\xb3", 2);
    T_STR(e, "a");
    free(e);
}

static void *hammer(void *arg)
{
    struct tds_series *s = arg;

    for (int i = 0; i < 100000; i++)
        tds_series_inc(s, 1);
    return NULL;
}

static void test_concurrent(void)
{
    struct tds_metrics *m = NULL;
    pthread_t t[4];

    T_INT(tds_metrics_new(&m), ==, 0);
    struct tds_series *s = tds_metrics_get(m, TDS_COUNTER, "c_total", "C.", "", NULL, 0);
    for (int i = 0; i < 4; i++)
        T_INT(pthread_create(&t[i], NULL, hammer, s), ==, 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    T_TRUE(tds_series_value(s) == 400000);
    tds_metrics_free(m);
}

int main(void)
{
    T_RUN(test_render_exact);
    T_RUN(test_default_buckets);
    T_RUN(test_errors_and_empty);
    T_RUN(test_escape);
    T_RUN(test_concurrent);
    return 0;
}
