/* metrics — counters, gauges and histograms with labels, rendered in the
 * Prometheus text exposition format.
 *
 * A registry holds metric families by name; a family holds one series per
 * label set. Lookups take the registry's mutex; updates on a series pointer are
 * lock-free atomics, so stages look a series up once and keep the pointer.
 * Series live until the registry is freed. Rendering may run on the admin
 * server's thread while the loop updates.
 */
#ifndef TDS_METRICS_H
#define TDS_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct tds_metrics;
struct tds_series;

enum tds_metric_kind { TDS_COUNTER = 1, TDS_GAUGE, TDS_HISTOGRAM };

int tds_metrics_new(struct tds_metrics **out);
struct tds_metrics *tds_metrics_free(struct tds_metrics *m);

/* Find or create the series of family `name` (e.g. "tds_rows_written_total")
 * with `labels` in Prometheus form without braces ('org="1",table="items"',
 * or "" for none; label values must already be escaped with
 * tds_metrics_escape). Histograms use `buckets` (ascending, n_buckets ≤ 32;
 * NULL = default latency buckets in seconds). The kind and help of the first
 * call win. Returns NULL on ENOMEM or a kind mismatch. */
struct tds_series *tds_metrics_get(struct tds_metrics *m, enum tds_metric_kind kind,
                                   const char *name, const char *help, const char *labels,
                                   const double *buckets, size_t n_buckets);
/* Formatting convenience: labels built with printf. */
struct tds_series *tds_metrics_getf(struct tds_metrics *m, enum tds_metric_kind kind,
                                    const char *name, const char *help, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

void tds_series_inc(struct tds_series *s, double by);   /* counter, gauge */
void tds_series_set(struct tds_series *s, double v);    /* gauge */
void tds_series_observe(struct tds_series *s, double v); /* histogram */
double tds_series_value(const struct tds_series *s);    /* counter/gauge value, histogram count */

/* Render all families. *out is a new NUL-terminated string owned by the caller. */
int tds_metrics_render(struct tds_metrics *m, char **out, size_t *len);

/* Escape a label value (backslash, quote, newline) into a new string. */
char *tds_metrics_escape(const char *value);
/* The same for at most max bytes of value, cut between characters (not
 * inside an escape, as cutting the escaped text could). Bytes that are not
 * UTF-8 become U+FFFD in both. */
char *tds_metrics_escape_n(const char *value, size_t max);

#endif
