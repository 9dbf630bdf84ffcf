/* jw — append-only JSON writer; see jw.h. Escapes per RFC 8259 and leaves
 * non-ASCII UTF-8 bytes as they are (Zoho sends Arabic text unescaped). */
#include "jw.h"

#include <stdlib.h>
#include <string.h>

void zs_jw_init(struct zs_jw *w, size_t cap_hint)
{
    memset(w, 0, sizeof(*w));
    w->cap = cap_hint < 64 ? 64 : cap_hint;
    w->buf = malloc(w->cap);
    if (!w->buf)
        w->failed = true;
    else
        w->buf[0] = '\0';
    w->first[0] = true;
}

void zs_jw_deinit(struct zs_jw *w)
{
    free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
}

char *zs_jw_take(struct zs_jw *w, size_t *len_out)
{
    char *b = w->failed ? NULL : w->buf;
    if (w->failed)
        free(w->buf);
    if (len_out)
        *len_out = b ? w->len : 0;
    w->buf = NULL;
    w->len = w->cap = 0;
    w->failed = true;
    return b;
}

static bool grow(struct zs_jw *w, size_t need)
{
    if (w->failed)
        return false;
    if (w->len + need + 1 <= w->cap)
        return true;
    size_t cap = w->cap;
    while (w->len + need + 1 > cap)
        cap *= 2;
    char *nb = realloc(w->buf, cap);
    if (!nb) {
        w->failed = true;
        return false;
    }
    w->buf = nb;
    w->cap = cap;
    return true;
}

static void put(struct zs_jw *w, const char *s, size_t n)
{
    if (!grow(w, n))
        return;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void putc1(struct zs_jw *w, char c)
{
    if (!grow(w, 1))
        return;
    w->buf[w->len++] = c;
    w->buf[w->len] = '\0';
}

/* Writes the separator a new value needs at the current level. */
static void sep(struct zs_jw *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (!w->first[w->depth])
        putc1(w, ',');
    w->first[w->depth] = false;
}

static void open_(struct zs_jw *w, char c)
{
    sep(w);
    putc1(w, c);
    if (w->depth + 1 >= ZS_JW_MAX_DEPTH) {
        w->failed = true;
        return;
    }
    w->depth++;
    w->first[w->depth] = true;
}

static void close_(struct zs_jw *w, char c)
{
    putc1(w, c);
    if (w->depth > 0)
        w->depth--;
}

void zs_jw_obj(struct zs_jw *w) { open_(w, '{'); }
void zs_jw_obj_end(struct zs_jw *w) { close_(w, '}'); }
void zs_jw_arr(struct zs_jw *w) { open_(w, '['); }
void zs_jw_arr_end(struct zs_jw *w) { close_(w, ']'); }

/* Bytes that need escaping in a JSON string: controls, '"' and '\\'. */
static const unsigned char needs_esc[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
};

static void escaped(struct zs_jw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* worst case: every byte becomes \u00XX; grow once, then write directly */
    if (!grow(w, n * 6 + 2))
        return;
    char *o = w->buf + w->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!needs_esc[c]) {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    *o = '\0';
    w->len = (size_t)(o - w->buf);
}

void zs_jw_key(struct zs_jw *w, const char *k)
{
    /* keys are the renderers' own ASCII names: no escaping needed */
    size_t n = strlen(k);
    sep(w);
    if (!grow(w, n + 3))
        return;
    char *o = w->buf + w->len;
    *o++ = '"';
    memcpy(o, k, n);
    o += n;
    *o++ = '"';
    *o++ = ':';
    *o = '\0';
    w->len = (size_t)(o - w->buf);
    w->after_key = true;
}

void zs_jw_strn(struct zs_jw *w, const char *s, size_t n)
{
    sep(w);
    escaped(w, s, n);
}

void zs_jw_str(struct zs_jw *w, const char *s)
{
    if (!s) {
        zs_jw_null(w);
        return;
    }
    zs_jw_strn(w, s, strlen(s));
}

/* Digits of v into the end of tmp; returns the start. */
static char *udigits(char *end, uint64_t v)
{
    char *p = end;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return p;
}

void zs_jw_uint(struct zs_jw *w, uint64_t v)
{
    char tmp[24];
    char *p = udigits(tmp + sizeof(tmp), v);
    sep(w);
    put(w, p, (size_t)(tmp + sizeof(tmp) - p));
}

void zs_jw_int(struct zs_jw *w, int64_t v)
{
    char tmp[24];
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char *p = udigits(tmp + sizeof(tmp), u);
    if (v < 0)
        *--p = '-';
    sep(w);
    put(w, p, (size_t)(tmp + sizeof(tmp) - p));
}

void zs_jw_uint_str(struct zs_jw *w, uint64_t v)
{
    char tmp[24];
    char *p = udigits(tmp + sizeof(tmp) - 1, v);
    tmp[sizeof(tmp) - 1] = '"';
    *--p = '"';
    sep(w);
    put(w, p, (size_t)(tmp + sizeof(tmp) - p));
}

void zs_jw_dec(struct zs_jw *w, int64_t v, int places)
{
    char tmp[40];
    char *end = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    uint64_t scale = 1;
    for (int i = 0; i < places; i++)
        scale *= 10;
    uint64_t ip = u / scale, fp = u % scale;
    char *p = end;
    if (places > 0 && fp) {
        /* trailing zeros dropped: 12.50 prints as 12.5 like Zoho's doubles */
        int pl = places;
        while (fp % 10 == 0) {
            fp /= 10;
            pl--;
        }
        for (int i = 0; i < pl; i++) {
            *--p = (char)('0' + fp % 10);
            fp /= 10;
        }
        *--p = '.';
    }
    p = udigits(p, ip);
    if (v < 0)
        *--p = '-';
    sep(w);
    put(w, p, (size_t)(end - p));
}

void zs_jw_bool(struct zs_jw *w, bool v)
{
    sep(w);
    if (v)
        put(w, "true", 4);
    else
        put(w, "false", 5);
}

void zs_jw_null(struct zs_jw *w)
{
    sep(w);
    put(w, "null", 4);
}

void zs_jw_raw(struct zs_jw *w, const char *s, size_t n)
{
    sep(w);
    put(w, s, n);
}

void zs_jw_kstr(struct zs_jw *w, const char *k, const char *s)
{
    zs_jw_key(w, k);
    zs_jw_str(w, s);
}

void zs_jw_kint(struct zs_jw *w, const char *k, int64_t v)
{
    zs_jw_key(w, k);
    zs_jw_int(w, v);
}

void zs_jw_kid(struct zs_jw *w, const char *k, uint64_t id)
{
    zs_jw_key(w, k);
    if (id)
        zs_jw_uint_str(w, id);
    else
        zs_jw_strn(w, "", 0);
}

void zs_jw_kdec(struct zs_jw *w, const char *k, int64_t v, int places)
{
    zs_jw_key(w, k);
    zs_jw_dec(w, v, places);
}

void zs_jw_kprefnum(struct zs_jw *w, const char *k, const char *prefix, uint64_t v, int width)
{
    char tmp[64];
    char *end = tmp + sizeof(tmp), *p = end;
    int d = 0;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
        d++;
    } while (v);
    while (d < width && d < 30) {
        *--p = '0';
        d++;
    }
    size_t pl = strlen(prefix);
    if (pl > (size_t)(p - tmp))
        pl = (size_t)(p - tmp);
    p -= pl;
    memcpy(p, prefix, pl);
    zs_jw_key(w, k);
    zs_jw_strn(w, p, (size_t)(end - p));
}

void zs_jw_kbool(struct zs_jw *w, const char *k, bool v)
{
    zs_jw_key(w, k);
    zs_jw_bool(w, v);
}
