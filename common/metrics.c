/* metrics — counters, gauges and histograms with labels, rendered in the
 * Prometheus text exposition format (version 0.0.4).
 *
 * Owns every family and series it creates; series pointers stay valid until
 * tds_metrics_free. The registry mutex guards the family/series lists (lookup,
 * creation, rendering); values are atomics so the loop updates them without
 * locking while the admin thread renders. Doubles are stored as their bit
 * patterns in 64-bit atomics and added with a compare-and-swap loop, which C11
 * guarantees for integers but not for floating types.
 *
 * Histograms keep one count per bucket (not cumulative) plus +Inf; rendering
 * sums them, so _count always equals the +Inf bucket in one scrape.
 */
#include "metrics.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BUCKETS 32

static const double default_buckets[] = {.0005, .001, .0025, .005, .01, .025, .05,
                                         .1,    .25,  .5,    1,    2.5, 5,   10};

struct tds_series {
    struct family *fam;
    char *labels;
    _Atomic uint64_t value;                       /* double bits: counter/gauge; histogram sum */
    _Atomic uint64_t counts[MAX_BUCKETS + 1];     /* histogram: per bucket, last is +Inf */
    struct tds_series *next;
};

struct family {
    char *name;
    char *help;
    enum tds_metric_kind kind;
    double buckets[MAX_BUCKETS];
    size_t n_buckets;
    struct tds_series *first, *last;
    struct family *next;
};

struct tds_metrics {
    pthread_mutex_t lock;
    struct family *first, *last;
};

static uint64_t d2u(double d)
{
    uint64_t u;

    memcpy(&u, &d, sizeof(u));
    return u;
}

static double u2d(uint64_t u)
{
    double d;

    memcpy(&d, &u, sizeof(d));
    return d;
}

int tds_metrics_new(struct tds_metrics **out)
{
    struct tds_metrics *m = calloc(1, sizeof(*m));
    int r;

    if (!m)
        return -ENOMEM;
    r = pthread_mutex_init(&m->lock, NULL);
    if (r) {
        free(m);
        return -r;
    }
    *out = m;
    return 0;
}

static void series_free(struct tds_series *s)
{
    free(s->labels);
    free(s);
}

static void family_free(struct family *f)
{
    struct tds_series *s = f->first;

    while (s) {
        struct tds_series *next = s->next;

        series_free(s);
        s = next;
    }
    free(f->name);
    free(f->help);
    free(f);
}

struct tds_metrics *tds_metrics_free(struct tds_metrics *m)
{
    struct family *f;

    if (!m)
        return NULL;
    f = m->first;
    while (f) {
        struct family *next = f->next;

        family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
    return NULL;
}

static bool name_ok(const char *s)
{
    if (!s || !*s)
        return false;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';

        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static struct family *family_new(enum tds_metric_kind kind, const char *name, const char *help,
                                 const double *buckets, size_t n_buckets)
{
    struct family *f = calloc(1, sizeof(*f));

    if (!f)
        return NULL;
    f->kind = kind;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    if (!f->name || !f->help) {
        family_free(f);
        return NULL;
    }
    if (kind == TDS_HISTOGRAM) {
        if (!buckets) {
            buckets = default_buckets;
            n_buckets = TDS_ARRAY_SIZE(default_buckets);
        }
        memcpy(f->buckets, buckets, n_buckets * sizeof(*buckets));
        f->n_buckets = n_buckets;
    }
    return f;
}

static bool buckets_ok(const double *b, size_t n)
{
    if (!b)
        return true;
    if (n == 0 || n > MAX_BUCKETS)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(b[i]) || (i > 0 && !(b[i] > b[i - 1])))
            return false;
    }
    return true;
}

struct tds_series *tds_metrics_get(struct tds_metrics *m, enum tds_metric_kind kind,
                                   const char *name, const char *help, const char *labels,
                                   const double *buckets, size_t n_buckets)
{
    struct tds_series *s = NULL;
    struct family *f;

    if (!labels)
        labels = "";
    if (kind < TDS_COUNTER || kind > TDS_HISTOGRAM || !name_ok(name))
        return NULL;
    if (kind == TDS_HISTOGRAM && !buckets_ok(buckets, n_buckets))
        return NULL;

    pthread_mutex_lock(&m->lock);
    for (f = m->first; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            break;
    if (f && f->kind != kind)
        goto out;
    if (!f) {
        f = family_new(kind, name, help, buckets, n_buckets);
        if (!f)
            goto out;
        if (m->last)
            m->last->next = f;
        else
            m->first = f;
        m->last = f;
    }
    for (s = f->first; s; s = s->next)
        if (strcmp(s->labels, labels) == 0)
            goto out;
    s = calloc(1, sizeof(*s));
    if (!s)
        goto out;
    s->fam = f;
    s->labels = strdup(labels);
    if (!s->labels) {
        series_free(s);
        s = NULL;
        goto out;
    }
    atomic_store(&s->value, d2u(0.0));
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
out:
    pthread_mutex_unlock(&m->lock);
    return s;
}

struct tds_series *tds_metrics_getf(struct tds_metrics *m, enum tds_metric_kind kind,
                                    const char *name, const char *help, const char *fmt, ...)
{
    struct tds_series *s;
    char *labels;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    labels = malloc((size_t)n + 1);
    if (!labels)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(labels, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s = tds_metrics_get(m, kind, name, help, labels, NULL, 0);
    free(labels);
    return s;
}

static void atomic_add_double(_Atomic uint64_t *p, double by)
{
    uint64_t old = atomic_load(p);

    while (!atomic_compare_exchange_weak(p, &old, d2u(u2d(old) + by)))
        ;
}

void tds_series_inc(struct tds_series *s, double by)
{
    if (!s || s->fam->kind == TDS_HISTOGRAM)
        return;
    atomic_add_double(&s->value, by);
}

void tds_series_set(struct tds_series *s, double v)
{
    if (!s || s->fam->kind == TDS_HISTOGRAM)
        return;
    atomic_store(&s->value, d2u(v));
}

void tds_series_observe(struct tds_series *s, double v)
{
    size_t i;

    if (!s || s->fam->kind != TDS_HISTOGRAM)
        return;
    /* A NaN or an infinity (a time computed from one that is missing, say)
     * would make _sum NaN or infinite for the rest of the process. */
    if (!isfinite(v))
        return;
    /* le is inclusive: a value equal to a bound belongs to that bucket. */
    for (i = 0; i < s->fam->n_buckets; i++)
        if (v <= s->fam->buckets[i])
            break;
    atomic_fetch_add(&s->counts[i], 1);
    atomic_add_double(&s->value, v);
}

double tds_series_value(const struct tds_series *s)
{
    struct tds_series *w = (struct tds_series *)(uintptr_t)s; /* atomics only read */
    uint64_t total = 0;

    if (!s)
        return 0;
    if (s->fam->kind != TDS_HISTOGRAM)
        return u2d(atomic_load(&w->value));
    for (size_t i = 0; i <= s->fam->n_buckets; i++)
        total += atomic_load(&w->counts[i]);
    return (double)total;
}

/* Shortest text that reads back as the same double; Prometheus spellings for
 * the special values. */
static void fmt_double(char *out, size_t n, double v)
{
    if (isnan(v)) {
        snprintf(out, n, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, n, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    /* Whole numbers (every counter) print without an exponent: 10, not 1e+01. */
    if (v == trunc(v) && fabs(v) < 1e15) {
        snprintf(out, n, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static int add_escaped_help(struct tds_buf *b, const char *help)
{
    int r = 0;

    for (const char *p = help; *p && !r; p++) {
        if (*p == '\\')
            r = tds_buf_add(b, "\\\\", 2);
        else if (*p == '\n')
            r = tds_buf_add(b, "\\n", 2);
        else
            r = tds_buf_add(b, p, 1);
    }
    return r;
}

static int render_series(struct tds_buf *b, const struct family *f, struct tds_series *s)
{
    const char *sep = s->labels[0] ? "," : "";
    char num[40];
    int r = 0;

    if (f->kind != TDS_HISTOGRAM) {
        fmt_double(num, sizeof(num), u2d(atomic_load(&s->value)));
        if (s->labels[0])
            return tds_buf_addf(b, "%s{%s} %s\n", f->name, s->labels, num);
        return tds_buf_addf(b, "%s %s\n", f->name, num);
    }

    uint64_t cum = 0;
    for (size_t i = 0; i <= f->n_buckets && !r; i++) {
        cum += atomic_load(&s->counts[i]);
        if (i < f->n_buckets)
            fmt_double(num, sizeof(num), f->buckets[i]);
        else
            snprintf(num, sizeof(num), "+Inf");
        r = tds_buf_addf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", f->name, s->labels, sep, num,
                         (unsigned long long)cum);
    }
    if (r)
        return r;
    fmt_double(num, sizeof(num), u2d(atomic_load(&s->value)));
    if (s->labels[0])
        r = tds_buf_addf(b, "%s_sum{%s} %s\n%s_count{%s} %llu\n", f->name, s->labels, num,
                         f->name, s->labels, (unsigned long long)cum);
    else
        r = tds_buf_addf(b, "%s_sum %s\n%s_count %llu\n", f->name, num, f->name,
                         (unsigned long long)cum);
    return r;
}

int tds_metrics_render(struct tds_metrics *m, char **out, size_t *len)
{
    static const char *const kinds[] = {"", "counter", "gauge", "histogram"};
    struct tds_buf b = {0};
    int r = 0;

    pthread_mutex_lock(&m->lock);
    for (struct family *f = m->first; f && !r; f = f->next) {
        if (!f->first)
            continue;
        r = tds_buf_addf(&b, "# HELP %s ", f->name);
        if (!r)
            r = add_escaped_help(&b, f->help);
        if (!r)
            r = tds_buf_addf(&b, "\n# TYPE %s %s\n", f->name, kinds[f->kind]);
        for (struct tds_series *s = f->first; s && !r; s = s->next)
            r = render_series(&b, f, s);
    }
    pthread_mutex_unlock(&m->lock);
    if (!r)
        r = tds_buf_add(&b, "", 0); /* a NUL-terminated string even when empty */
    if (r) {
        tds_buf_deinit(&b);
        return r;
    }
    *out = b.p;
    if (len)
        *len = b.len;
    return 0;
}

char *tds_metrics_escape_n(const char *value, size_t max)
{
    struct tds_buf b = {0};
    size_t n;

    if (!value)
        value = "";
    n = strlen(value);
    if (n > max)
        n = tds_utf8_prefix(value, n, max);
    for (const char *p = value, *end = value + n; p < end;) {
        size_t cl = tds_utf8_char(p, (size_t)(end - p));
        int r;

        if (*p == '\\')
            r = tds_buf_add(&b, "\\\\", 2);
        else if (*p == '"')
            r = tds_buf_add(&b, "\\\"", 2);
        else if (*p == '\n')
            r = tds_buf_add(&b, "\\n", 2);
        else if (cl == 0) /* not UTF-8: Prometheus refuses the whole scrape */
            r = tds_buf_add(&b, "\xef\xbf\xbd", 3);
        else
            r = tds_buf_add(&b, p, cl);
        p += cl ? cl : 1;
        if (r) {
            tds_buf_deinit(&b);
            return NULL;
        }
    }
    if (tds_buf_add(&b, "", 0)) {
        tds_buf_deinit(&b);
        return NULL;
    }
    return b.p;
}

char *tds_metrics_escape(const char *value)
{
    return tds_metrics_escape_n(value, SIZE_MAX);
}
