/* jw — a small append-only JSON writer for the simulator's responses.
 *
 * Owns one growable output buffer and the comma bookkeeping of nested
 * objects and arrays, so renderers only say what they emit. It never parses
 * (control requests are parsed with jansson) and never validates structure
 * beyond nesting depth. An allocation failure sticks: every later call is a
 * no-op and zs_jw_take() returns NULL.
 */
#ifndef ZS_JW_H
#define ZS_JW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZS_JW_MAX_DEPTH 32

struct zs_jw {
    char *buf;
    size_t len, cap;
    bool failed;
    int depth;
    bool first[ZS_JW_MAX_DEPTH]; /* no element written yet at this level */
    bool after_key;              /* a key was just written: no comma */
};

void zs_jw_init(struct zs_jw *w, size_t cap_hint);
void zs_jw_deinit(struct zs_jw *w);
/* Hands the buffer (NUL-terminated) to the caller, who frees it; *len_out
 * gets its length. NULL after an allocation failure. Resets the writer. */
char *zs_jw_take(struct zs_jw *w, size_t *len_out);

void zs_jw_obj(struct zs_jw *w);
void zs_jw_obj_end(struct zs_jw *w);
void zs_jw_arr(struct zs_jw *w);
void zs_jw_arr_end(struct zs_jw *w);
/* k must be plain ASCII without quotes or backslashes: it is not escaped. */
void zs_jw_key(struct zs_jw *w, const char *k);
void zs_jw_str(struct zs_jw *w, const char *s);
void zs_jw_strn(struct zs_jw *w, const char *s, size_t n);
void zs_jw_int(struct zs_jw *w, int64_t v);
void zs_jw_uint(struct zs_jw *w, uint64_t v);
void zs_jw_uint_str(struct zs_jw *w, uint64_t v); /* a number written as a JSON string */
/* A decimal with `places` fraction digits: v is the value times 10^places. */
void zs_jw_dec(struct zs_jw *w, int64_t v, int places);
void zs_jw_bool(struct zs_jw *w, bool v);
void zs_jw_null(struct zs_jw *w);
/* Appends pre-rendered JSON text as one value. */
void zs_jw_raw(struct zs_jw *w, const char *s, size_t n);

/* key + value shorthands */
void zs_jw_kstr(struct zs_jw *w, const char *k, const char *s);
void zs_jw_kint(struct zs_jw *w, const char *k, int64_t v);
void zs_jw_kid(struct zs_jw *w, const char *k, uint64_t id); /* "" when id is 0 */
void zs_jw_kdec(struct zs_jw *w, const char *k, int64_t v, int places);
void zs_jw_kbool(struct zs_jw *w, const char *k, bool v);
/* "prefix" + v zero-padded to width digits, as a string ("SKU-000042"). */
void zs_jw_kprefnum(struct zs_jw *w, const char *k, const char *prefix, uint64_t v, int width);

#endif
