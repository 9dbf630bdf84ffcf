/* scrape — Prometheus text format parser and sums (see scrape.h).
 *
 * The parse owns one copy of the input; names and label values are cut out
 * of it in place (unescaping only ever shortens a value), so a parse is three
 * allocations however many samples it has. Never does I/O.
 */
#include "scrape.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct tds_scrape {
    char *text;
    struct tds_scrape_sample *samples;
    size_t n, cap;
    struct tds_scrape_label *labels;
    size_t n_labels, cap_labels;
};

static bool name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static bool name_char(char c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

static char *skip_blank(char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

static int grow(void **arr, size_t *cap, size_t need, size_t size)
{
    size_t nc;
    void *p;

    if (need <= *cap)
        return 0;
    nc = *cap ? *cap * 2 : 64;
    while (nc < need)
        nc *= 2;
    p = realloc(*arr, nc * size);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = nc;
    return 0;
}

/* Parse `{a="x",b="y"}` at *pp (pointing at '{'); labels are appended by
 * index (pointers are fixed once all reallocations are over). */
static int parse_labels(struct tds_scrape *s, char **pp, size_t *n_out)
{
    char *p = *pp + 1;
    size_t n = 0;

    for (;;) {
        char *name, *val, *w;

        p = skip_blank(p);
        if (*p == '}') {
            p++;
            break;
        }
        if (!name_start(*p))
            return TDS_SCRAPE_E_SYNTAX;
        name = p;
        while (name_char(*p))
            p++;
        w = p;
        p = skip_blank(p);
        if (*p != '=')
            return TDS_SCRAPE_E_SYNTAX;
        *w = '\0';
        p = skip_blank(p + 1);
        if (*p != '"')
            return TDS_SCRAPE_E_SYNTAX;
        val = w = ++p;
        for (;;) {
            if (*p == '\0' || *p == '\n')
                return TDS_SCRAPE_E_SYNTAX;
            if (*p == '"')
                break;
            if (*p == '\\') {
                p++;
                if (*p == 'n')
                    *w++ = '\n';
                else if (*p == '\\' || *p == '"')
                    *w++ = *p;
                else
                    return TDS_SCRAPE_E_SYNTAX;
                p++;
                continue;
            }
            *w++ = *p++;
        }
        *w = '\0';
        p++;
        if (++n > TDS_SCRAPE_MAX_LABELS)
            return TDS_E_TOO_LARGE;
        if (grow((void **)&s->labels, &s->cap_labels, s->n_labels + 1, sizeof(*s->labels)) != 0)
            return -ENOMEM;
        s->labels[s->n_labels].name = name;
        s->labels[s->n_labels].value = val;
        s->n_labels++;
        p = skip_blank(p);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '}') {
            p++;
            break;
        }
        return TDS_SCRAPE_E_SYNTAX;
    }
    *pp = p;
    *n_out = n;
    return 0;
}

static int parse_value(char *p, double *out)
{
    char *end, *tok = p;

    while (*p && *p != ' ' && *p != '\t')
        p++;
    if (p == tok)
        return TDS_SCRAPE_E_SYNTAX;
    if (*p) {
        *p++ = '\0';
        p = skip_blank(p);
        /* optional timestamp: an integer, ignored */
        if (*p) {
            char *t = p;

            if (*t == '-')
                t++;
            if (!*t)
                return TDS_SCRAPE_E_SYNTAX;
            for (; *t; t++)
                if (*t < '0' || *t > '9')
                    return TDS_SCRAPE_E_SYNTAX;
        }
    }
    errno = 0;
    *out = strtod(tok, &end);
    if (end == tok || *end != '\0' || (errno == ERANGE && !isinf(*out) && *out != 0))
        return TDS_SCRAPE_E_SYNTAX;
    return 0;
}

static int parse_line(struct tds_scrape *s, char *line)
{
    struct tds_scrape_sample *smp;
    size_t first = s->n_labels, nl = 0;
    char *p = skip_blank(line), *name, *w;
    int rc;

    if (*p == '\0' || *p == '#')
        return 0;
    if (!name_start(*p))
        return TDS_SCRAPE_E_SYNTAX;
    name = p;
    while (name_char(*p))
        p++;
    w = p;
    p = skip_blank(p);
    if (*p == '{') {
        *w = '\0';
        if ((rc = parse_labels(s, &p, &nl)) != 0)
            return rc;
        p = skip_blank(p);
    } else {
        if (p == w)
            return TDS_SCRAPE_E_SYNTAX;
        *w = '\0';
    }
    if (s->n >= TDS_SCRAPE_MAX_SAMPLES)
        return TDS_E_TOO_LARGE;
    if (grow((void **)&s->samples, &s->cap, s->n + 1, sizeof(*s->samples)) != 0)
        return -ENOMEM;
    smp = &s->samples[s->n];
    smp->name = name;
    /* index now, pointer after parsing (labels may still move) */
    smp->labels = (const struct tds_scrape_label *)(uintptr_t)first;
    smp->n_labels = nl;
    if ((rc = parse_value(p, &smp->value)) != 0)
        return rc;
    s->n++;
    return 0;
}

int tds_scrape_parse(const char *text, size_t len, struct tds_scrape **out, size_t *bad_line)
{
    struct tds_scrape *s;
    size_t line_no = 0;
    char *p;
    int rc = 0;

    *out = NULL;
    if (bad_line)
        *bad_line = 0;
    if (len > TDS_SCRAPE_MAX_BYTES)
        return TDS_E_TOO_LARGE;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->text = malloc(len + 1);
    if (!s->text) {
        rc = -ENOMEM;
        goto fail;
    }
    memcpy(s->text, text, len);
    s->text[len] = '\0';
    if (memchr(s->text, '\0', len)) {
        rc = TDS_SCRAPE_E_SYNTAX;
        goto fail;
    }
    p = s->text;
    while (*p) {
        char *nl = strchr(p, '\n'), *next;

        line_no++;
        if (nl) {
            *nl = '\0';
            next = nl + 1;
        } else {
            next = p + strlen(p);
        }
        if (nl > p && nl[-1] == '\r')
            nl[-1] = '\0';
        if ((rc = parse_line(s, p)) != 0) {
            if (bad_line)
                *bad_line = line_no;
            goto fail;
        }
        p = next;
    }
    for (size_t i = 0; i < s->n; i++)
        s->samples[i].labels = s->labels + (uintptr_t)s->samples[i].labels;
    *out = s;
    return 0;
fail:
    tds_scrape_free(s);
    return rc;
}

struct tds_scrape *tds_scrape_free(struct tds_scrape *s)
{
    if (!s)
        return NULL;
    free(s->text);
    free(s->samples);
    free(s->labels);
    free(s);
    return NULL;
}

size_t tds_scrape_count(const struct tds_scrape *s)
{
    return s ? s->n : 0;
}

const struct tds_scrape_sample *tds_scrape_at(const struct tds_scrape *s, size_t i)
{
    return s && i < s->n ? &s->samples[i] : NULL;
}

const char *tds_scrape_label(const struct tds_scrape_sample *smp, const char *name)
{
    for (size_t i = 0; i < smp->n_labels; i++)
        if (strcmp(smp->labels[i].name, name) == 0)
            return smp->labels[i].value;
    return NULL;
}

bool tds_scrape_has(const struct tds_scrape *s, const char *name, const char *prefix)
{
    size_t pl = prefix ? strlen(prefix) : 0;

    for (size_t i = 0; s && i < s->n; i++) {
        if (name && strcmp(s->samples[i].name, name) == 0)
            return true;
        if (prefix && strncmp(s->samples[i].name, prefix, pl) == 0)
            return true;
    }
    return false;
}

double tds_scrape_sum(const struct tds_scrape *s, const char *name, const char *label,
                      const char *value, size_t *n)
{
    double sum = 0;
    size_t k = 0;

    for (size_t i = 0; s && i < s->n; i++) {
        const struct tds_scrape_sample *smp = &s->samples[i];
        const char *v;

        if (strcmp(smp->name, name) != 0)
            continue;
        if (label) {
            v = tds_scrape_label(smp, label);
            if (!v || strcmp(v, value ? value : "") != 0)
                continue;
        }
        sum += smp->value;
        k++;
    }
    if (n)
        *n = k;
    return sum;
}

double tds_scrape_quantile(const double *le, const double *cum, size_t n, double q)
{
    double total, rank, lo_bound = 0, lo_count = 0;

    if (n == 0 || !(cum[n - 1] > 0))
        return NAN;
    total = cum[n - 1];
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    rank = q * total;
    for (size_t i = 0; i < n; i++) {
        if (cum[i] >= rank) {
            /* the +Inf bucket has no upper bound: answer the last finite one */
            if (isinf(le[i]))
                return i > 0 ? le[i - 1] : 0;
            if (cum[i] - lo_count <= 0)
                return le[i];
            return lo_bound + (le[i] - lo_bound) * (rank - lo_count) / (cum[i] - lo_count);
        }
        lo_bound = le[i];
        lo_count = cum[i];
    }
    return le[n - 1];
}
