/* fuzz_pjson — fuzz target for common/pjson.c, the strict JSON reader of
 * every record the processor maps and every body the ingress accepts, with
 * jansson as the oracle.
 *
 * The input is the JSON text. Any input must parse or be refused with a
 * reason, without a crash, leak or sanitizer report. When jansson takes the
 * text too (strictly: no raw NUL byte, which jansson lets pass after a
 * number), pjson must take it unless it is nested past pjson's depth or
 * holds a number PostgreSQL's numeric cannot, and the two trees must agree:
 * the same types, strings decoded to the same bytes, numbers of the same
 * value, each object's members found by key with the last duplicate
 * winning, and every value's raw span reading back as that value. Whatever
 * pjson takes holds only well-formed UTF-8 strings without NUL.
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_depth.h"
#include "pjson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "fuzz_pjson: check failed: %s (line %d)\n", #c,   \
                    __LINE__);                                                 \
            abort();                                                           \
        }                                                                      \
    } while (0)

static struct tds_pjson_arena *arena;

/* Well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, at most
 * U+10FFFF) without NUL, checked byte by byte here, apart from pjson's code. */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t more;
        uint32_t cp, min;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            more = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            more = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            more = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i <= more)
            return false;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += more + 1;
    }
    return true;
}

/* What pjson took, alone: strings well formed, spans inside the source. */
static void check_tree(const struct tds_pjson *v, const char *src, size_t len)
{
    CHECK(v->raw >= src && v->raw_len > 0 && v->raw_len <= len &&
          (size_t)(v->raw - src) <= len - v->raw_len);
    switch (v->type) {
    case TDS_PJ_STRING:
        CHECK(utf8_ok((const unsigned char *)v->s, v->n));
        break;
    case TDS_PJ_NUMBER:
        CHECK(v->n > 0 && v->n == v->raw_len && memcmp(v->s, v->raw, v->n) == 0);
        break;
    case TDS_PJ_ARRAY:
        for (uint32_t i = 0; i < v->n; i++)
            check_tree(&v->u.items[i], src, len);
        break;
    case TDS_PJ_OBJECT:
        for (uint32_t i = 0; i < v->n; i++) {
            CHECK(utf8_ok((const unsigned char *)v->u.members[i].key, v->u.members[i].klen));
            check_tree(&v->u.members[i].v, src, len);
        }
        break;
    default:
        break;
    }
}

static void check_same(const struct tds_pjson *p, const json_t *j)
{
    /* the raw span reads back as the same value */
    json_error_t jerr;
    json_t *back = json_loadb(p->raw, p->raw_len, JSON_DECODE_ANY, &jerr);
    CHECK(back != NULL);
    CHECK(json_equal(back, (json_t *)j));
    json_decref(back);

    switch (json_typeof(j)) {
    case JSON_NULL: CHECK(p->type == TDS_PJ_NULL); break;
    case JSON_TRUE: CHECK(p->type == TDS_PJ_TRUE); break;
    case JSON_FALSE: CHECK(p->type == TDS_PJ_FALSE); break;
    case JSON_INTEGER: {
        CHECK(p->type == TDS_PJ_NUMBER);
        char buf[32];
        CHECK(p->n < sizeof(buf));
        memcpy(buf, p->s, p->n);
        buf[p->n] = '\0';
        CHECK(strtoll(buf, NULL, 10) == json_integer_value(j));
        break;
    }
    case JSON_REAL: {
        CHECK(p->type == TDS_PJ_NUMBER);
        char *buf = malloc(p->n + 1u);
        CHECK(buf != NULL);
        memcpy(buf, p->s, p->n);
        buf[p->n] = '\0';
        double d = strtod(buf, NULL);
        free(buf);
        CHECK(d == json_real_value(j) || (isnan(d) && isnan(json_real_value(j))));
        break;
    }
    case JSON_STRING:
        CHECK(p->type == TDS_PJ_STRING);
        CHECK(p->n == json_string_length(j));
        CHECK(memcmp(p->s, json_string_value(j), p->n) == 0);
        break;
    case JSON_ARRAY:
        CHECK(p->type == TDS_PJ_ARRAY);
        CHECK(p->n == json_array_size(j));
        for (uint32_t i = 0; i < p->n; i++)
            check_same(&p->u.items[i], json_array_get(j, i));
        break;
    case JSON_OBJECT: {
        CHECK(p->type == TDS_PJ_OBJECT);
        /* every pjson member is a jansson key (duplicates repeat it) ... */
        for (uint32_t i = 0; i < p->n; i++) {
            const struct tds_pjson_member *m = &p->u.members[i];
            CHECK(json_object_getn(j, m->key, m->klen) != NULL);
        }
        /* ... and the member found by each jansson key is its last value */
        const char *k;
        json_t *jv;
        json_object_foreach((json_t *)j, k, jv) {
            const struct tds_pjson *pv = tds_pjson_get(p, k);
            CHECK(pv != NULL);
            check_same(pv, jv);
        }
        CHECK(p->n >= json_object_size(j));
        break;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!arena && tds_pjson_arena_new(&arena) != 0)
        return 0;
    tds_pjson_arena_reset(arena);
    const char *src = (const char *)data;
    struct tds_pjson *root = NULL;
    char err[160] = "";
    int rc = tds_pjson_parse(arena, src, size, &root, err, sizeof(err));
    if (rc == -12 /* -ENOMEM */)
        return 0;
    CHECK(rc >= 0);
    if (rc == 0) {
        CHECK(root != NULL);
        check_tree(root, src, size);
    } else {
        CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
    }

    if (size == 0 || memchr(src, '\0', size))
        return 0;
    json_error_t jerr;
    json_t *j = json_loadb(src, size, JSON_DECODE_ANY, &jerr);
    if (j) {
        if (rc == TDS_PJ_E_DEPTH)
            CHECK(fuzz_json_depth(j) > TDS_PJSON_MAX_DEPTH - 1);
        else if (rc != TDS_PJ_E_RANGE) {
            if (rc != 0)
                fprintf(stderr, "fuzz_pjson: jansson took what pjson refused: %s\n", err);
            CHECK(rc == 0);
            check_same(root, j);
        }
    }
    json_decref(j);
    return 0;
}
