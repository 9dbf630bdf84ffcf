/* scrape — a parser for the Prometheus text exposition format (0.0.4), and
 * the few sums the alert rules need over what it parsed.
 *
 * Pure: no I/O, no clock, no logging. It reads what the stages' /metrics
 * serve (ours and anyone's that follows the format): comment and HELP/TYPE
 * lines are skipped, each sample line becomes name, labels and value; the
 * optional timestamp is ignored. Input size, sample count and labels per
 * sample are bounded, so a misbehaving endpoint cannot make the writer grow.
 */
#ifndef TDS_SCRAPE_H
#define TDS_SCRAPE_H

#include <stdbool.h>
#include <stddef.h>

#define TDS_SCRAPE_MAX_BYTES (8u << 20)
#define TDS_SCRAPE_MAX_SAMPLES 200000
#define TDS_SCRAPE_MAX_LABELS 32

enum {
    TDS_SCRAPE_E_SYNTAX = 10, /* a line does not follow the format */
};

struct tds_scrape;

struct tds_scrape_label {
    const char *name;
    const char *value; /* unescaped */
};

struct tds_scrape_sample {
    const char *name;
    const struct tds_scrape_label *labels;
    size_t n_labels;
    double value;
};

/* Parse `len` bytes of exposition text. On success *out is a new parse owned
 * by the caller (free with tds_scrape_free). Returns 0, TDS_SCRAPE_E_SYNTAX
 * (with *bad_line = 1-based line number when bad_line is not NULL),
 * TDS_E_TOO_LARGE (over a limit above) or -ENOMEM. */
int tds_scrape_parse(const char *text, size_t len, struct tds_scrape **out, size_t *bad_line);
struct tds_scrape *tds_scrape_free(struct tds_scrape *s);

size_t tds_scrape_count(const struct tds_scrape *s);
/* Sample i (< count); valid until the parse is freed. */
const struct tds_scrape_sample *tds_scrape_at(const struct tds_scrape *s, size_t i);
/* Value of label `name` of a sample, or NULL when it has none. */
const char *tds_scrape_label(const struct tds_scrape_sample *smp, const char *name);
/* True when some sample's name is `name` or starts with `prefix` (prefix may be NULL). */
bool tds_scrape_has(const struct tds_scrape *s, const char *name, const char *prefix);

/* Sum of the samples named `name` whose label `label` equals `value` (label
 * NULL = every sample of the name). *n (may be NULL) = how many matched. */
double tds_scrape_sum(const struct tds_scrape *s, const char *name, const char *label,
                      const char *value, size_t *n);

/* The q-quantile (0..1) of a cumulative histogram given as n ascending upper
 * bounds `le` (the last may be +Inf) and their cumulative counts, with
 * linear interpolation inside the bucket as Prometheus' histogram_quantile
 * does. Returns NAN when the total count is 0. */
double tds_scrape_quantile(const double *le, const double *cum, size_t n, double q);

#endif
