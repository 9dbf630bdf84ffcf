/* value — JSON value → PostgreSQL input text, with Zoho's leniencies.
 *
 * Zoho sends numbers as JSON numbers or as strings ("12.50", "" or " "), ids
 * quoted or bare, and times with ±hhmm offsets. These functions accept exactly
 * those forms and say precisely why anything else is refused. Outputs point
 * into the source record or the arena; nothing here frees or logs.
 */
#include "value.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "entities.h"
#include "util.h"

bool tds_value_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return false;
    return true;
}

static void set_null(struct tds_bytes *out)
{
    out->p = NULL;
    out->n = 0;
}

static void set(struct tds_bytes *out, const char *p, size_t n)
{
    out->p = (char *)p;
    out->n = n;
}

void tds_value_describe(const struct tds_pjson *v, char *buf, size_t len)
{
    if (!v) {
        snprintf(buf, len, "(absent)");
        return;
    }
    switch (v->type) {
    case TDS_PJ_STRING: {
        size_t n = v->n;
        const char *more = "";
        if (n > 60) {
            n = tds_utf8_prefix(v->s, n, 60); /* the reason stays valid text */
            more = "…";
        }
        snprintf(buf, len, "'%.*s'%s", (int)n, v->s, more);
        break;
    }
    case TDS_PJ_NUMBER:
        snprintf(buf, len, "%.*s%s", (int)(v->n > 60 ? 60 : v->n), v->s, v->n > 60 ? "…" : "");
        break;
    case TDS_PJ_TRUE: snprintf(buf, len, "true"); break;
    case TDS_PJ_FALSE: snprintf(buf, len, "false"); break;
    case TDS_PJ_NULL: snprintf(buf, len, "null"); break;
    case TDS_PJ_OBJECT: snprintf(buf, len, "an object"); break;
    case TDS_PJ_ARRAY: snprintf(buf, len, "an array"); break;
    }
}

static int err(struct tds_value_err *e, int code, const char *what, const char *field,
               const struct tds_pjson *v)
{
    char d[96];
    tds_value_describe(v, d, sizeof(d));
    snprintf(e->buf, e->len, "invalid %s in field '%s': %s", what, field, d);
    return code;
}

/* A JSON number that is an id: digits only, at most TDS_VALUE_MAX_ID. A sign,
 * point or exponent (4.6e18, -1, 1.5) is a number that went through a double
 * or a placeholder upstream, not an id. */
static bool id_number_ok(const struct tds_pjson *v)
{
    if (v->n > TDS_VALUE_MAX_ID)
        return false;
    for (uint32_t i = 0; i < v->n; i++)
        if (v->s[i] < '0' || v->s[i] > '9')
            return false;
    return true;
}

int tds_value_text(const struct tds_pjson *v, bool is_id_ref, struct tds_bytes *out,
                   const char *field, struct tds_value_err *e)
{
    if (!v || v->type == TDS_PJ_NULL) {
        set_null(out);
        return 0;
    }
    if (v->type == TDS_PJ_STRING) {
        if (is_id_ref && tds_value_blank(v->s, v->n))
            set_null(out);
        else
            set(out, v->s, v->n);
        return 0;
    }
    if (v->type == TDS_PJ_NUMBER) { /* zip codes, bare ids: keep as written */
        if (is_id_ref && !id_number_ok(v))
            return err(e, TDS_VALUE_E_ID, "id", field, v);
        set(out, v->s, v->n);
        return 0;
    }
    return err(e, TDS_VALUE_E_TYPE, "text", field, v);
}

/* Decimal syntax PostgreSQL's numeric accepts, minus NaN/Infinity. */
static bool decimal_ok(const char *s, size_t n)
{
    size_t i = 0, digits = 0;

    if (n == 0 || n > TDS_VALUE_MAX_NUMBER)
        return false;
    if (s[i] == '+' || s[i] == '-')
        i++;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, digits++;
    }
    if (digits == 0)
        return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t ed = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, ed++;
        if (ed == 0 || ed > 4)
            return false;
    }
    return i == n;
}

static void trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t' || **s == '\n' || **s == '\r'))
        (*s)++, (*n)--;
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t' || (*s)[*n - 1] == '\n' ||
                  (*s)[*n - 1] == '\r'))
        (*n)--;
}

int tds_value_numeric(const struct tds_pjson *v, struct tds_bytes *out, const char *field,
                      struct tds_value_err *e)
{
    if (!v || v->type == TDS_PJ_NULL) {
        set_null(out);
        return 0;
    }
    if (v->type == TDS_PJ_NUMBER) {
        /* JSON's grammar is a subset of numeric's; only the length and the
         * exponent size need checking (PostgreSQL caps exponents). */
        if (!decimal_ok(v->s, v->n))
            return err(e, TDS_VALUE_E_NUMBER, "number", field, v);
        set(out, v->s, v->n);
        return 0;
    }
    if (v->type == TDS_PJ_STRING) {
        const char *s = v->s;
        size_t n = v->n;
        trim(&s, &n);
        if (n == 0) {
            set_null(out);
            return 0;
        }
        if (!decimal_ok(s, n))
            return err(e, TDS_VALUE_E_NUMBER, "number", field, v);
        set(out, s, n);
        return 0;
    }
    return err(e, TDS_VALUE_E_NUMBER, "number", field, v);
}

int tds_value_int(const struct tds_pjson *v, struct tds_bytes *out, const char *field,
                  struct tds_value_err *e)
{
    const char *s;
    size_t n;

    if (!v || v->type == TDS_PJ_NULL) {
        set_null(out);
        return 0;
    }
    if (v->type != TDS_PJ_NUMBER && v->type != TDS_PJ_STRING)
        return err(e, TDS_VALUE_E_INTEGER, "integer", field, v);
    s = v->s;
    n = v->n;
    if (v->type == TDS_PJ_STRING) {
        trim(&s, &n);
        if (n == 0) {
            set_null(out);
            return 0;
        }
    }
    size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (i == n || n - i > 10)
        return err(e, TDS_VALUE_E_INTEGER, "integer", field, v);
    long long x = 0;
    for (size_t k = i; k < n; k++) {
        if (s[k] < '0' || s[k] > '9')
            return err(e, TDS_VALUE_E_INTEGER, "integer", field, v);
        x = x * 10 + (s[k] - '0');
    }
    if (s[0] == '-')
        x = -x;
    if (x < -2147483648LL || x > 2147483647LL)
        return err(e, TDS_VALUE_E_INTEGER, "integer", field, v);
    set(out, s, n);
    return 0;
}

static bool ieq(const char *s, size_t n, const char *w)
{
    size_t wl = strlen(w);
    if (n != wl)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != w[i])
            return false;
    }
    return true;
}

int tds_value_bool(const struct tds_pjson *v, struct tds_bytes *out, const char *field,
                   struct tds_value_err *e)
{
    if (!v || v->type == TDS_PJ_NULL) {
        set_null(out);
        return 0;
    }
    if (v->type == TDS_PJ_TRUE) {
        set(out, "true", 4);
        return 0;
    }
    if (v->type == TDS_PJ_FALSE) {
        set(out, "false", 5);
        return 0;
    }
    if (v->type == TDS_PJ_STRING) {
        const char *s = v->s;
        size_t n = v->n;
        trim(&s, &n);
        if (n == 0) {
            set_null(out);
            return 0;
        }
        if (ieq(s, n, "true")) {
            set(out, "true", 4);
            return 0;
        }
        if (ieq(s, n, "false")) {
            set(out, "false", 5);
            return 0;
        }
    }
    return err(e, TDS_VALUE_E_BOOL, "boolean", field, v);
}

static bool digits(const char *s, size_t n, int *out)
{
    int x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        x = x * 10 + (s[i] - '0');
    }
    *out = x;
    return true;
}

/* "yyyy-mm-dd" with a real calendar day. */
static bool date_ok(const char *s, size_t n)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, m, d;

    if (n != 10 || s[4] != '-' || s[7] != '-')
        return false;
    if (!digits(s, 4, &y) || !digits(s + 5, 2, &m) || !digits(s + 8, 2, &d))
        return false;
    if (y < 1 || m < 1 || m > 12 || d < 1)
        return false;
    int max = mdays[m - 1];
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        max = 29;
    return d <= max;
}

int tds_value_date(const struct tds_pjson *v, struct tds_bytes *out, const char *field,
                   struct tds_value_err *e)
{
    if (!v || v->type == TDS_PJ_NULL) {
        set_null(out);
        return 0;
    }
    if (v->type == TDS_PJ_STRING) {
        const char *s = v->s;
        size_t n = v->n;
        trim(&s, &n);
        if (n == 0) {
            set_null(out);
            return 0;
        }
        if (date_ok(s, n)) {
            set(out, s, n);
            return 0;
        }
    }
    return err(e, TDS_VALUE_E_DATE, "date", field, v);
}

bool tds_value_tz_ok(const char *tz)
{
    int hh, mm;

    return tz && strlen(tz) == 5 && (tz[0] == '+' || tz[0] == '-') && digits(tz + 1, 2, &hh) &&
           digits(tz + 3, 2, &mm) && hh <= 14 && mm <= 59;
}

int tds_value_timestamp(struct tds_pjson_arena *a, const struct tds_pjson *v, const char *tz,
                        struct tds_bytes *out, const char *field, struct tds_value_err *e)
{
    const char *s;
    size_t n;
    int hh, mi, ss, oh = 0, om = 0;
    char sign = '+';

    if (!v || v->type == TDS_PJ_NULL) {
        set_null(out);
        return 0;
    }
    if (v->type != TDS_PJ_STRING)
        return err(e, TDS_VALUE_E_TIMESTAMP, "timestamp", field, v);
    s = v->s;
    n = v->n;
    trim(&s, &n);
    if (n == 0) {
        set_null(out);
        return 0;
    }
    /* Zoho documents date-only values in some examples: midnight where
     * the organization is. */
    if (n == 10) {
        if (!date_ok(s, n))
            return err(e, TDS_VALUE_E_TIMESTAMP, "timestamp", field, v);
        char *o = tds_pjson_alloc(a, 26);
        if (!o)
            return -ENOMEM;
        memcpy(o, s, 10);
        memcpy(o + 10, " 00:00:00+00:00", 15);
        if (tds_value_tz_ok(tz)) {
            o[19] = tz[0];
            memcpy(o + 20, tz + 1, 2);
            memcpy(o + 23, tz + 3, 2);
        }
        set(out, o, 25);
        return 0;
    }
    if (n < 19 || !date_ok(s, 10) || (s[10] != 'T' && s[10] != ' ') || s[13] != ':' ||
        s[16] != ':' || !digits(s + 11, 2, &hh) || !digits(s + 14, 2, &mi) ||
        !digits(s + 17, 2, &ss) || hh > 23 || mi > 59 || ss > 59)
        return err(e, TDS_VALUE_E_TIMESTAMP, "timestamp", field, v);
    size_t i = 19, frac_start = 19, frac_len = 0;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        frac_len = i - frac_start;
        if (frac_len < 2 || frac_len > 7) /* "." plus 1..6 digits */
            return err(e, TDS_VALUE_E_TIMESTAMP, "timestamp", field, v);
    }
    size_t rest = n - i;
    if (rest == 1 && s[i] == 'Z') {
        /* UTC */
    } else if (rest >= 3 && (s[i] == '+' || s[i] == '-')) {
        sign = s[i];
        const char *o = s + i + 1;
        if (!digits(o, 2, &oh))
            return err(e, TDS_VALUE_E_TIMESTAMP, "timestamp", field, v);
        if (rest == 3) {
            om = 0;
        } else if (rest == 5 && digits(o + 2, 2, &om)) {
        } else if (rest == 6 && o[2] == ':' && digits(o + 3, 2, &om)) {
        } else {
            return err(e, TDS_VALUE_E_TIMESTAMP, "timestamp", field, v);
        }
        if (oh > 15 || om > 59)
            return err(e, TDS_VALUE_E_TIMESTAMP, "timestamp", field, v);
    } else {
        return err(e, TDS_VALUE_E_TIMESTAMP, "timestamp", field, v);
    }
    /* "yyyy-mm-dd hh:mm:ss" + fraction + "±hh:mm" */
    size_t len = 19 + frac_len + 6;
    char *o = tds_pjson_alloc(a, len + 1);
    if (!o)
        return -ENOMEM;
    memcpy(o, s, 19);
    o[10] = ' ';
    memcpy(o + 19, s + frac_start, frac_len);
    snprintf(o + 19 + frac_len, 7, "%c%02d:%02d", sign, oh, om);
    set(out, o, len);
    return 0;
}

int tds_value_id(const struct tds_pjson *v, struct tds_bytes *out, const char *field,
                 struct tds_value_err *e)
{
    if (!v || v->type == TDS_PJ_NULL) {
        set_null(out);
        return 0;
    }
    if (v->type == TDS_PJ_NUMBER) {
        if (!id_number_ok(v))
            return err(e, TDS_VALUE_E_ID, "id", field, v);
        set(out, v->s, v->n);
        return 0;
    }
    if (v->type != TDS_PJ_STRING)
        return err(e, TDS_VALUE_E_ID, "id", field, v);
    if (tds_value_blank(v->s, v->n)) {
        set_null(out);
        return 0;
    }
    if (!tds_zoho_id_valid(v->s, v->n))
        return err(e, TDS_VALUE_E_ID, "id", field, v);
    set(out, v->s, v->n);
    return 0;
}
