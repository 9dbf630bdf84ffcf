/* pjson — strict JSON reader with exact number lexemes and byte spans.
 *
 * A recursive-descent parser over a bounded input (1 MiB, depth 32). Children
 * of arrays and objects are gathered on two scratch stacks and copied into the
 * arena when their container closes, so a record costs a handful of bump
 * allocations and no per-value malloc. It never logs.
 */
#include "pjson.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define CHUNK_SIZE (64u * 1024u)
#define KEEP_BYTES (4u * 1024u * 1024u) /* arena memory kept across resets */
/* Scratch stack bytes kept across resets, each stack: ~26,000 values open at
 * once, far more than a record has, so records never regrow them; one that
 * grew past it (a 1 MiB array of small values takes 20 MiB) is freed. */
#define KEEP_SCRATCH (1024u * 1024u)

struct chunk {
    struct chunk *next;
    size_t size, used;
    max_align_t data[];
};

struct tds_pjson_arena {
    struct chunk *head;   /* current chunk first */
    size_t total;
    /* scratch stacks for children of open containers */
    struct tds_pjson *vals;
    size_t n_vals, cap_vals;
    struct tds_pjson_member *mems;
    size_t n_mems, cap_mems;
};

int tds_pjson_arena_new(struct tds_pjson_arena **out)
{
    struct tds_pjson_arena *a = calloc(1, sizeof(*a));

    if (!a)
        return -ENOMEM;
    *out = a;
    return 0;
}

static void free_chunks(struct chunk *c)
{
    while (c) {
        struct chunk *next = c->next;
        free(c);
        c = next;
    }
}

struct tds_pjson_arena *tds_pjson_arena_free(struct tds_pjson_arena *a)
{
    if (!a)
        return NULL;
    free_chunks(a->head);
    free(a->vals);
    free(a->mems);
    free(a);
    return NULL;
}

static void arena_trim(struct tds_pjson_arena *a, size_t keep_chunks, size_t keep_scratch)
{
    size_t kept = 0;
    struct chunk **pp = &a->head;

    /* Keep chunks up to keep_chunks so steady-state records allocate nothing;
     * one giant record does not pin its memory forever. */
    while (*pp) {
        struct chunk *c = *pp;
        if (kept + c->size > keep_chunks) {
            *pp = c->next;
            a->total -= c->size;
            free(c);
            continue;
        }
        kept += c->size;
        c->used = 0;
        pp = &c->next;
    }
    if (a->cap_vals > keep_scratch / sizeof(*a->vals)) {
        free(a->vals);
        a->vals = NULL;
        a->cap_vals = 0;
    }
    if (a->cap_mems > keep_scratch / sizeof(*a->mems)) {
        free(a->mems);
        a->mems = NULL;
        a->cap_mems = 0;
    }
    a->n_vals = 0;
    a->n_mems = 0;
}

void tds_pjson_arena_reset(struct tds_pjson_arena *a)
{
    arena_trim(a, KEEP_BYTES, KEEP_SCRATCH);
}

void tds_pjson_arena_trim(struct tds_pjson_arena *a, size_t keep)
{
    arena_trim(a, keep, keep);
}

void *tds_pjson_alloc(struct tds_pjson_arena *a, size_t n)
{
    struct chunk *c;

    n = (n + 15u) & ~(size_t)15u;
    if (n == 0)
        n = 16;
    /* Find a chunk with room among the kept ones (few of them). */
    for (c = a->head; c; c = c->next)
        if (c->size - c->used >= n)
            break;
    if (!c) {
        size_t size = n > CHUNK_SIZE ? n : CHUNK_SIZE;
        c = malloc(sizeof(*c) + size);
        if (!c)
            return NULL;
        c->size = size;
        c->used = 0;
        c->next = a->head;
        a->head = c;
        a->total += size;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

/* ---- parser ---- */

struct parser {
    struct tds_pjson_arena *a;
    const char *src, *p, *end;
    const char *key;     /* innermost member key, for error messages */
    uint32_t klen;
    char *err;
    size_t errlen;
    int code;
};

static int fail(struct parser *ps, int code, const char *what)
{
    if (ps->code)
        return ps->code;
    ps->code = code;
    if (code == TDS_PJ_E_SYNTAX)
        snprintf(ps->err, ps->errlen, "invalid JSON at byte %zu: %s", (size_t)(ps->p - ps->src),
                 what);
    else if (ps->key)
        snprintf(ps->err, ps->errlen, "%s in field '%.*s'", what,
                 (int)tds_utf8_prefix(ps->key, ps->klen, 64), ps->key);
    else
        snprintf(ps->err, ps->errlen, "%s", what);
    return code;
}

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
        ps->p++;
}

static int hex4(const char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string's content error: in a value it names the value's key; in a key it
 * says "in a key" (ps->key is then the previous member's, the wrong one). */
static int fail_text(struct parser *ps, int code, const char *what, bool is_key)
{
    char buf[80];

    if (!is_key)
        return fail(ps, code, what);
    ps->key = NULL;
    snprintf(buf, sizeof(buf), "%s in a key", what);
    return fail(ps, code, buf);
}

/* Parse a string at ps->p (the opening quote). is_key: errors say "in a key". */
static int parse_string(struct parser *ps, const char **s, uint32_t *n, bool is_key)
{
    const char *start = ++ps->p;
    const char *q = start;
    bool esc = false, high = false;

    while (q < ps->end) {
        unsigned char c = (unsigned char)*q;
        /* fast path: printable ASCII other than quote and backslash */
        if ((unsigned)(c - 0x20u) < 0x60u && c != '"' && c != '\\') {
            q++;
            continue;
        }
        if (c == '"')
            break;
        if (c == '\\') {
            esc = true;
            q += 2;
            continue;
        }
        if (c < 0x20) {
            ps->p = q;
            return fail(ps, TDS_PJ_E_SYNTAX, "control character in string");
        }
        if (c >= 0x80)
            high = true;
        q++;
    }
    if (q >= ps->end) {
        ps->p = ps->end;
        return fail(ps, TDS_PJ_E_SYNTAX, "unterminated string");
    }
    size_t len = (size_t)(q - start);
    if (len > UINT32_MAX)
        return fail(ps, TDS_PJ_E_TOO_LARGE, "string too long");
    if (high && !tds_utf8_valid(start, len)) {
        ps->p = start;
        return fail_text(ps, TDS_PJ_E_UTF8, "invalid UTF-8", is_key);
    }
    ps->p = q + 1;
    if (!esc) {
        *s = start;
        *n = (uint32_t)len;
        return 0;
    }
    /* Decoded text is never longer than its escaped form. */
    char *o = tds_pjson_alloc(ps->a, len + 1);
    if (!o)
        return -ENOMEM;
    size_t k = 0;
    for (const char *r = start; r < q;) {
        if (*r != '\\') {
            o[k++] = *r++;
            continue;
        }
        r++;
        switch (*r) {
        case '"': o[k++] = '"'; r++; break;
        case '\\': o[k++] = '\\'; r++; break;
        case '/': o[k++] = '/'; r++; break;
        case 'b': o[k++] = '\b'; r++; break;
        case 'f': o[k++] = '\f'; r++; break;
        case 'n': o[k++] = '\n'; r++; break;
        case 'r': o[k++] = '\r'; r++; break;
        case 't': o[k++] = '\t'; r++; break;
        case 'u': {
            uint32_t cp, lo;
            if (q - r < 5 || hex4(r + 1, &cp) < 0) {
                ps->p = r;
                return fail(ps, TDS_PJ_E_SYNTAX, "invalid \\u escape");
            }
            r += 5;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (q - r < 6 || r[0] != '\\' || r[1] != 'u' || hex4(r + 2, &lo) < 0 ||
                    lo < 0xdc00 || lo > 0xdfff) {
                    ps->p = r;
                    return fail_text(ps, TDS_PJ_E_NUL, "unpaired surrogate escape", is_key);
                }
                r += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                ps->p = r;
                return fail_text(ps, TDS_PJ_E_NUL, "unpaired surrogate escape", is_key);
            } else if (cp == 0) {
                ps->p = r;
                return fail_text(ps, TDS_PJ_E_NUL, "NUL character (\\u0000)", is_key);
            }
            k += put_utf8(o + k, cp);
            break;
        }
        default:
            ps->p = r;
            return fail(ps, TDS_PJ_E_SYNTAX, "invalid escape in string");
        }
    }
    o[k] = '\0';
    *s = o;
    *n = (uint32_t)k;
    return 0;
}

/* Whether PostgreSQL's numeric, and so jsonb, can hold a JSON number with
 * integer digits int_d[0..n_int), fraction digits frac_d[0..n_frac) and
 * exponent expo (saturated). numeric_in refuses an exponent of INT_MAX / 2
 * or more in size whatever the digits; its storage keeps the display scale
 * (fraction digits written, less the exponent) in 14 bits and the weight of
 * the first nonzero digit, in base-10000 digits, in an int16. */
static bool numeric_fits(const char *int_d, size_t n_int, const char *frac_d, size_t n_frac,
                         long long expo)
{
    long long scale, dweight;

    if (expo >= TDS_PJSON_NUMERIC_MAX_EXP || expo <= -TDS_PJSON_NUMERIC_MAX_EXP)
        return false;
    scale = (long long)n_frac - expo;
    if (scale > TDS_PJSON_NUMERIC_MAX_SCALE)
        return false;
    if (int_d[0] != '0') {
        dweight = (long long)n_int - 1 + expo;
    } else { /* JSON's integer part is "0" or has no leading zero */
        size_t k = 0;
        while (k < n_frac && frac_d[k] == '0')
            k++;
        if (k == n_frac)
            return true; /* zero: weight 0 */
        dweight = expo - (long long)k - 1;
    }
    /* floor(dweight / 4) within int16 */
    return dweight < TDS_PJSON_NUMERIC_MAX_DIGITS && dweight >= -TDS_PJSON_NUMERIC_MAX_DIGITS;
}

static int parse_number(struct parser *ps, struct tds_pjson *v)
{
    const char *p = ps->p, *e = ps->end, *int_d, *frac_d = NULL;
    size_t n_int, n_frac = 0;
    long long expo = 0;
    bool has_exp = false;

    if (p < e && *p == '-')
        p++;
    if (p >= e)
        return fail(ps, TDS_PJ_E_SYNTAX, "invalid number");
    int_d = p;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    } else {
        return fail(ps, TDS_PJ_E_SYNTAX, "invalid number");
    }
    n_int = (size_t)(p - int_d);
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9')
            return fail(ps, TDS_PJ_E_SYNTAX, "invalid number");
        frac_d = p;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
        n_frac = (size_t)(p - frac_d);
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        bool neg = false;
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            neg = *p++ == '-';
        if (p >= e || *p < '0' || *p > '9')
            return fail(ps, TDS_PJ_E_SYNTAX, "invalid number");
        while (p < e && *p >= '0' && *p <= '9') {
            if (expo < TDS_PJSON_NUMERIC_MAX_EXP) /* saturate: the value is refused anyway */
                expo = expo * 10 + (*p - '0');
            p++;
        }
        expo = neg ? -expo : expo;
        has_exp = true;
    }
    /* Without an exponent only the digit counts can be out of range. */
    if (has_exp ? !numeric_fits(int_d, n_int, frac_d, n_frac, expo)
                : n_int > TDS_PJSON_NUMERIC_MAX_DIGITS || n_frac > TDS_PJSON_NUMERIC_MAX_SCALE)
        return fail(ps, TDS_PJ_E_RANGE, "number out of range");
    v->type = TDS_PJ_NUMBER;
    v->s = ps->p;
    v->n = (uint32_t)(p - ps->p);
    ps->p = p;
    return 0;
}

static int literal(struct parser *ps, const char *word, size_t n)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return fail(ps, TDS_PJ_E_SYNTAX, "unexpected character");
    ps->p += n;
    return 0;
}

static int push_val(struct tds_pjson_arena *a, const struct tds_pjson *v)
{
    if (a->n_vals == a->cap_vals) {
        size_t cap = a->cap_vals ? a->cap_vals * 2 : 256;
        struct tds_pjson *n = realloc(a->vals, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        a->vals = n;
        a->cap_vals = cap;
    }
    a->vals[a->n_vals++] = *v;
    return 0;
}

static int push_mem(struct tds_pjson_arena *a, const struct tds_pjson_member *m)
{
    if (a->n_mems == a->cap_mems) {
        size_t cap = a->cap_mems ? a->cap_mems * 2 : 256;
        struct tds_pjson_member *n = realloc(a->mems, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        a->mems = n;
        a->cap_mems = cap;
    }
    a->mems[a->n_mems++] = *m;
    return 0;
}

static int parse_value(struct parser *ps, struct tds_pjson *v, int depth);

static int parse_array(struct parser *ps, struct tds_pjson *v, int depth)
{
    size_t base = ps->a->n_vals;
    int rc;

    ps->p++; /* [ */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
    } else {
        for (;;) {
            struct tds_pjson item;
            if ((rc = parse_value(ps, &item, depth + 1)) != 0)
                return rc;
            if ((rc = push_val(ps->a, &item)) < 0)
                return rc;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == ']') {
                ps->p++;
                break;
            }
            return fail(ps, TDS_PJ_E_SYNTAX, "expected ',' or ']'");
        }
    }
    size_t n = ps->a->n_vals - base;
    v->type = TDS_PJ_ARRAY;
    v->n = (uint32_t)n;
    v->u.items = NULL;
    if (n) {
        v->u.items = tds_pjson_alloc(ps->a, n * sizeof(*v->u.items));
        if (!v->u.items)
            return -ENOMEM;
        memcpy(v->u.items, ps->a->vals + base, n * sizeof(*v->u.items));
    }
    ps->a->n_vals = base;
    return 0;
}

static int parse_object(struct parser *ps, struct tds_pjson *v, int depth)
{
    size_t base = ps->a->n_mems;
    const char *outer_key = ps->key;
    uint32_t outer_klen = ps->klen;
    int rc;

    ps->p++; /* { */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
    } else {
        for (;;) {
            struct tds_pjson_member m;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != '"')
                return fail(ps, TDS_PJ_E_SYNTAX, "expected a string key");
            if ((rc = parse_string(ps, &m.key, &m.klen, true)) != 0)
                return rc;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return fail(ps, TDS_PJ_E_SYNTAX, "expected ':'");
            ps->p++;
            ps->key = m.key;
            ps->klen = m.klen;
            if ((rc = parse_value(ps, &m.v, depth + 1)) != 0)
                return rc;
            if ((rc = push_mem(ps->a, &m)) < 0)
                return rc;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == '}') {
                ps->p++;
                break;
            }
            return fail(ps, TDS_PJ_E_SYNTAX, "expected ',' or '}'");
        }
    }
    ps->key = outer_key;
    ps->klen = outer_klen;
    size_t n = ps->a->n_mems - base;
    v->type = TDS_PJ_OBJECT;
    v->n = (uint32_t)n;
    v->u.members = NULL;
    if (n) {
        v->u.members = tds_pjson_alloc(ps->a, n * sizeof(*v->u.members));
        if (!v->u.members)
            return -ENOMEM;
        memcpy(v->u.members, ps->a->mems + base, n * sizeof(*v->u.members));
    }
    ps->a->n_mems = base;
    return 0;
}

static int parse_value(struct parser *ps, struct tds_pjson *v, int depth)
{
    int rc = 0;

    memset(v, 0, sizeof(*v));
    skip_ws(ps);
    if (ps->p >= ps->end)
        return fail(ps, TDS_PJ_E_SYNTAX, "unexpected end of input");
    const char *start = ps->p;
    switch (*ps->p) {
    case '{':
    case '[':
        if (depth >= TDS_PJSON_MAX_DEPTH) {
            ps->code = TDS_PJ_E_DEPTH;
            snprintf(ps->err, ps->errlen, "JSON nested deeper than %d levels",
                     TDS_PJSON_MAX_DEPTH);
            return TDS_PJ_E_DEPTH;
        }
        rc = *ps->p == '{' ? parse_object(ps, v, depth) : parse_array(ps, v, depth);
        break;
    case '"':
        v->type = TDS_PJ_STRING;
        rc = parse_string(ps, &v->s, &v->n, false);
        break;
    case 't':
        v->type = TDS_PJ_TRUE;
        rc = literal(ps, "true", 4);
        break;
    case 'f':
        v->type = TDS_PJ_FALSE;
        rc = literal(ps, "false", 5);
        break;
    case 'n':
        v->type = TDS_PJ_NULL;
        rc = literal(ps, "null", 4);
        break;
    default:
        rc = parse_number(ps, v);
        break;
    }
    v->raw = start;
    v->raw_len = (size_t)(ps->p - start);
    return rc;
}

int tds_pjson_parse(struct tds_pjson_arena *a, const char *src, size_t len,
                    struct tds_pjson **out, char *err, size_t errlen)
{
    struct parser ps = {.a = a, .src = src, .p = src, .end = src + len, .err = err,
                        .errlen = errlen};
    int rc;

    if (errlen)
        err[0] = '\0';
    if (len > TDS_PJSON_MAX_BYTES) {
        snprintf(err, errlen, "record of %zu bytes is over the %u byte limit", len,
                 TDS_PJSON_MAX_BYTES);
        return TDS_PJ_E_TOO_LARGE;
    }
    struct tds_pjson *root = tds_pjson_alloc(a, sizeof(*root));
    if (!root)
        return -ENOMEM;
    rc = parse_value(&ps, root, 0);
    if (rc == 0) {
        skip_ws(&ps);
        if (ps.p != ps.end)
            rc = fail(&ps, TDS_PJ_E_SYNTAX, "trailing characters after the value");
    }
    a->n_vals = 0;
    a->n_mems = 0;
    if (rc != 0)
        return rc;
    *out = root;
    return 0;
}

const struct tds_pjson *tds_pjson_get(const struct tds_pjson *v, const char *key)
{
    if (!v || v->type != TDS_PJ_OBJECT)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = v->n; i-- > 0;) {
        const struct tds_pjson_member *m = &v->u.members[i];
        if (m->klen == kl && (kl == 0 || m->key[0] == key[0]) && memcmp(m->key, key, kl) == 0)
            return &m->v;
    }
    return NULL;
}

bool tds_pjson_str_eq(const struct tds_pjson *v, const char *s)
{
    size_t n = strlen(s);
    return v && v->type == TDS_PJ_STRING && v->n == n && memcmp(v->s, s, n) == 0;
}
