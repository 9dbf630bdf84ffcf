/* pjson — strict RFC 8259 JSON reader with exact number lexemes (processor
 * records, ingress webhook bodies).
 *
 * Parses one JSON text into a read-only tree held in an arena that the caller
 * resets per record. Numbers keep their lexeme (never converted to double, so
 * money and 19-digit ids stay exact); every value remembers its byte span in
 * the source (so `raw` and jsonb fragments are copied verbatim). Strings are
 * checked to be well-formed UTF-8 and are decoded; \u0000 and lone surrogates
 * are refused because PostgreSQL text and jsonb cannot hold them, and so are
 * numbers outside PostgreSQL's numeric range (1e999999, 1e-20000). Depth and
 * size are capped. Duplicate keys are allowed and the last one wins, as in
 * jsonb. It never logs and never allocates outside its arena.
 */
#ifndef TDS_PJSON_H
#define TDS_PJSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tds_pjson_type {
    TDS_PJ_NULL = 0,
    TDS_PJ_FALSE,
    TDS_PJ_TRUE,
    TDS_PJ_NUMBER, /* s/n = lexeme as written in the source */
    TDS_PJ_STRING, /* s/n = decoded UTF-8 bytes (no NUL inside) */
    TDS_PJ_ARRAY,  /* items/n */
    TDS_PJ_OBJECT, /* members/n */
};

struct tds_pjson_member;

struct tds_pjson {
    enum tds_pjson_type type;
    uint32_t n;
    const char *s;
    const char *raw;  /* the value's bytes in the source */
    size_t raw_len;
    union {
        struct tds_pjson *items;
        struct tds_pjson_member *members;
    } u;
};

struct tds_pjson_member {
    const char *key; /* decoded */
    uint32_t klen;
    struct tds_pjson v;
};

/* Parse errors (positive): the message in tds_pjson_error names the field. */
enum {
    TDS_PJ_E_SYNTAX = 1,
    TDS_PJ_E_DEPTH = 2,
    TDS_PJ_E_UTF8 = 3,
    TDS_PJ_E_NUL = 4,     /* \u0000 or a lone surrogate escape */
    TDS_PJ_E_TOO_LARGE = 5,
    TDS_PJ_E_RANGE = 6,   /* a number PostgreSQL's numeric (jsonb) cannot hold */
};

/* PostgreSQL's numeric limits (numeric.c): digits before the decimal point,
 * digits after it, and the exponent it refuses outright (INT_MAX / 2). */
#define TDS_PJSON_NUMERIC_MAX_DIGITS 131072
#define TDS_PJSON_NUMERIC_MAX_SCALE 16383
#define TDS_PJSON_NUMERIC_MAX_EXP 1073741823LL

#define TDS_PJSON_MAX_DEPTH 32
#define TDS_PJSON_MAX_BYTES (1024u * 1024u)

/* Per-record arena; reused across records (reset keeps its memory up to a bound:
 * 4 MiB of values, 1 MiB of each scratch stack). */
struct tds_pjson_arena;
int tds_pjson_arena_new(struct tds_pjson_arena **out);
struct tds_pjson_arena *tds_pjson_arena_free(struct tds_pjson_arena *a);
void tds_pjson_arena_reset(struct tds_pjson_arena *a);
/* Reset, keeping at most `keep` bytes of values and of each scratch stack:
 * for an arena that waits long between records (the ingress's, one per
 * HTTP thread), so that one large record does not leave its memory held. */
void tds_pjson_arena_trim(struct tds_pjson_arena *a, size_t keep);
/* Bump allocation (8-byte aligned) from the arena; NULL on ENOMEM. Valid until reset. */
void *tds_pjson_alloc(struct tds_pjson_arena *a, size_t n);

/* Parse src[0..len) (one JSON value, surrounding whitespace allowed). The tree
 * points into src and the arena: both must outlive it. Returns 0, a
 * TDS_PJ_E_* code with a one-line reason in err ("invalid UTF-8 in field
 * 'name'", "JSON nested deeper than 32 levels", "invalid JSON at byte 17:
 * expected ':'"), or -ENOMEM. */
int tds_pjson_parse(struct tds_pjson_arena *a, const char *src, size_t len,
                    struct tds_pjson **out, char *err, size_t errlen);

/* Member of an object by key (last duplicate wins); NULL when absent or when
 * v is not an object. */
const struct tds_pjson *tds_pjson_get(const struct tds_pjson *v, const char *key);
/* True when v is a string equal to s. */
bool tds_pjson_str_eq(const struct tds_pjson *v, const char *s);

#endif
