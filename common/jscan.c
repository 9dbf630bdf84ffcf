/* jscan — see jscan.h. */
#include "jscan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define SCAN_MAX_DEPTH 128

struct scan {
    const char *p;
    size_t len;
    size_t i;
};

static void ws(struct scan *s)
{
    while (s->i < s->len &&
           (s->p[s->i] == ' ' || s->p[s->i] == '\t' || s->p[s->i] == '\n' || s->p[s->i] == '\r'))
        s->i++;
}

static int skip_string(struct scan *s)
{
    if (s->i >= s->len || s->p[s->i] != '"')
        return TDS_E_INVALID;
    s->i++;
    while (s->i < s->len) {
        char c = s->p[s->i++];
        if (c == '\\') {
            if (s->i >= s->len)
                return TDS_E_INVALID;
            s->i++;
        } else if (c == '"') {
            return 0;
        }
    }
    return TDS_E_INVALID;
}

/* After a member or an element: -1 at a ',' (taken: another follows), 1 at
 * `close` (left for the caller), 0 for anything else (malformed). */
static int next_or_close(struct scan *s, char close)
{
    ws(s);
    if (s->i >= s->len)
        return 0;
    if (s->p[s->i] == ',') {
        s->i++;
        return -1;
    }
    return s->p[s->i] == close ? 1 : 0;
}

static int skip_value(struct scan *s, int depth)
{
    if (depth > SCAN_MAX_DEPTH)
        return TDS_E_INVALID;
    ws(s);
    if (s->i >= s->len)
        return TDS_E_INVALID;
    char c = s->p[s->i];
    if (c == '"')
        return skip_string(s);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        s->i++;
        ws(s);
        if (s->i < s->len && s->p[s->i] == close) {
            s->i++;
            return 0;
        }
        for (;;) {
            if (c == '{') {
                ws(s);
                if (skip_string(s))
                    return TDS_E_INVALID;
                ws(s);
                if (s->i >= s->len || s->p[s->i] != ':')
                    return TDS_E_INVALID;
                s->i++;
            }
            if (skip_value(s, depth + 1))
                return TDS_E_INVALID;
            int next = next_or_close(s, close);
            if (next < 0)
                continue;
            if (next == 0)
                return TDS_E_INVALID;
            s->i++;
            return 0;
        }
    }
    /* number or literal: a run of their characters */
    size_t start = s->i;
    while (s->i < s->len) {
        c = s->p[s->i];
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-' || c == '+' || c == '.' ||
            c == 'E')
            s->i++;
        else
            break;
    }
    return s->i > start ? 0 : TDS_E_INVALID;
}

/* Position s at the value of top-level member key. */
static int find_member(struct scan *s, const char *key)
{
    size_t klen = strlen(key);
    ws(s);
    if (s->i >= s->len || s->p[s->i] != '{')
        return TDS_E_INVALID;
    s->i++;
    ws(s);
    if (s->i < s->len && s->p[s->i] == '}')
        return TDS_E_NOTFOUND;
    for (;;) {
        ws(s);
        size_t ks = s->i + 1;
        if (skip_string(s))
            return TDS_E_INVALID;
        bool match = s->i - 1 - ks == klen && memcmp(s->p + ks, key, klen) == 0;
        ws(s);
        if (s->i >= s->len || s->p[s->i] != ':')
            return TDS_E_INVALID;
        s->i++;
        ws(s);
        if (match)
            return 0;
        if (skip_value(s, 1))
            return TDS_E_INVALID;
        int next = next_or_close(s, '}');
        if (next < 0)
            continue;
        return next ? TDS_E_NOTFOUND : TDS_E_INVALID;
    }
}

int tds_json_member_span(const char *body, size_t len, const char *key, struct tds_span *out)
{
    struct scan s = {body, len, 0};
    int rc = find_member(&s, key);
    if (rc)
        return rc;
    size_t start = s.i;
    if (skip_value(&s, 1))
        return TDS_E_INVALID;
    out->off = start;
    out->len = s.i - start;
    return 0;
}

int tds_json_array_spans(const char *body, size_t len, const char *key, struct tds_span **spans,
                         size_t *n)
{
    *spans = NULL;
    *n = 0;
    struct scan s = {body, len, 0};
    int rc = find_member(&s, key);
    if (rc)
        return rc;
    if (s.i >= s.len || s.p[s.i] != '[')
        return TDS_E_NOTFOUND;
    s.i++;
    struct tds_span *arr = NULL;
    size_t cnt = 0, cap = 0;
    ws(&s);
    if (s.i < s.len && s.p[s.i] == ']')
        goto done;
    for (;;) {
        ws(&s);
        size_t start = s.i;
        if (skip_value(&s, 2))
            goto bad;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 64;
            struct tds_span *na = realloc(arr, nc * sizeof(*na));
            if (!na) {
                free(arr);
                return -ENOMEM;
            }
            arr = na;
            cap = nc;
        }
        arr[cnt].off = start;
        arr[cnt].len = s.i - start;
        cnt++;
        int next = next_or_close(&s, ']');
        if (next < 0)
            continue;
        if (next == 0)
            goto bad;
        break;
    }
done:
    *spans = arr;
    *n = cnt;
    return 0;
bad:
    free(arr);
    return TDS_E_INVALID;
}

bool tds_json_complete(const char *body, size_t len)
{
    struct scan s = {body, len, 0};
    if (skip_value(&s, 1))
        return false;
    ws(&s);
    return s.i == s.len;
}

int tds_json_scalar(const char *body, size_t len, const char *key, char *out, size_t cap)
{
    struct tds_span sp;
    int rc = tds_json_member_span(body, len, key, &sp);
    if (rc)
        return rc;
    const char *v = body + sp.off;
    size_t n = sp.len;
    if (n == 4 && memcmp(v, "null", 4) == 0)
        return TDS_E_NOTFOUND;
    if (v[0] == '{' || v[0] == '[')
        return TDS_E_INVALID;
    if (v[0] == '"') {
        if (n < 2 || memchr(v, '\\', n))
            return TDS_E_INVALID;
        v++;
        n -= 2;
    }
    if (n >= cap)
        return TDS_E_TOO_LARGE;
    memcpy(out, v, n);
    out[n] = '\0';
    return 0;
}

