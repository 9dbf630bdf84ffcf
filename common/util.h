/* util — clocks, strict number parsing, secret references, small string helpers.
 *
 * Owns nothing global. Never logs. Every function is safe to call from any thread.
 */
#ifndef TDS_UTIL_H
#define TDS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Positive result codes shared by common/ modules for expected outcomes. */
enum {
    TDS_E_INVALID = 1,   /* input does not parse or is out of range */
    TDS_E_NOTFOUND = 2,  /* a named thing (env var, file, key) does not exist */
    TDS_E_TOO_LARGE = 3, /* input is over a fixed limit */
};

#define TDS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Monotonic clock in milliseconds: for timeouts and intervals only. */
int64_t tds_now_ms(void);
/* The same clock in microseconds, for waits shorter than a few milliseconds. */
int64_t tds_now_us(void);
/* Wall clock in milliseconds since the epoch: for data and logs only. */
int64_t tds_wall_ms(void);

/* Parse a whole decimal integer in [min, max]. Leading/trailing junk, empty
 * input and overflow give TDS_E_INVALID; *out is set only on success. */
int tds_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* "true/false/1/0/yes/no/on/off" (case-insensitive) → 0, else TDS_E_INVALID. */
int tds_parse_bool(const char *s, bool *out);

/* Resolve a secret reference: "env:NAME" reads the environment, "file:/path"
 * reads the file (one trailing newline stripped, at most 64 KiB), anything
 * else is the value itself. On success *out is a new string owned by the
 * caller. Returns 0, TDS_E_NOTFOUND (variable unset, file missing),
 * TDS_E_TOO_LARGE, or -errno. */
int tds_secret_resolve(const char *spec, char **out);

/* strdup that aborts on out-of-memory is NOT provided on purpose: callers check NULL. */

/* A unique id for messages: "<prefix>-<hex random 16>". Caller frees. */
char *tds_uid(const char *prefix);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void tds_hex(const unsigned char *in, size_t n, char *out);

/* Constant-time comparison of two byte strings; different lengths → false. */
bool tds_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Byte strings in order (memcmp, then the shorter first), for qsort
 * comparators of (pointer, length) keys: <0, 0 or >0. */
int tds_bytes_cmp(const void *a, size_t alen, const void *b, size_t blen);

/* True if s[0..n) is well-formed UTF-8 (no overlongs, no surrogates). */
bool tds_utf8_valid(const char *s, size_t n);

/* The length (1-4) of the well-formed UTF-8 character at the start of
 * s[0..n), n > 0; 0 if it is not one (a stray or cut sequence). */
size_t tds_utf8_char(const char *s, size_t n);

/* The length of the longest prefix of s[0..n) of at most max bytes that does
 * not end inside a UTF-8 sequence: for "%.*s" of text that may be cut. */
size_t tds_utf8_prefix(const char *s, size_t n, size_t max);

/* Drops an incomplete UTF-8 sequence from the end of s, as snprintf leaves
 * one when it truncates text at its buffer's size. */
void tds_utf8_trim(char *s);

/* The first n bytes of s, for a terminal: every control character (C0,
 * DEL, and C1 as UTF-8, U+0080..U+009F) becomes '?', so text from Zoho or
 * the database (a reject's reason, a run's error) cannot move the cursor,
 * clear the screen or retitle the window of whoever reads it. Copied into
 * out (at most cap - 1 bytes, cut at a character's end); returns out. */
const char *tds_term_text(const char *s, size_t n, char *out, size_t cap);

/* Growable byte buffer with a hard maximum (0 = unlimited). */
struct tds_buf {
    char *p;
    size_t len;
    size_t cap;
    size_t max;
};
/* Append n bytes; returns 0, TDS_E_TOO_LARGE (over max, buffer unchanged) or -ENOMEM. */
int tds_buf_add(struct tds_buf *b, const void *data, size_t n);
int tds_buf_addf(struct tds_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tds_buf_reset(struct tds_buf *b);   /* len = 0, keeps memory */
void tds_buf_deinit(struct tds_buf *b);  /* frees memory, zeroes */

#endif
