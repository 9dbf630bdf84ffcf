/* jscan — byte spans of a JSON text without building a tree: a top-level
 * member's value, the elements of a top-level array member, one scalar as
 * text. Structure only (strings are skipped, not decoded or checked as
 * UTF-8), so it reads what a strict parser refuses: the fetcher walks list
 * pages with it, and the processor finds the id of a record it rejects.
 */
#ifndef TDS_JSCAN_H
#define TDS_JSCAN_H

#include <stdbool.h>
#include <stddef.h>

struct tds_span {
    size_t off;
    size_t len;
};

/* Find the top-level member `key` of the JSON object in body and, when its
 * value is an array, store the byte span of each element in a new array
 * (*spans, caller frees; NULL when empty). Returns 0, TDS_E_NOTFOUND (no such
 * member or not an array) or TDS_E_INVALID (not a well-formed object). */
int tds_json_array_spans(const char *body, size_t len, const char *key, struct tds_span **spans,
                         size_t *n);
/* Span of the top-level member `key`'s value (any JSON value). */
int tds_json_member_span(const char *body, size_t len, const char *key, struct tds_span *out);

/* True when body is exactly one well-formed JSON value (structure only:
 * brackets, strings, separators), e.g. not cut short. */
bool tds_json_complete(const char *body, size_t len);
/* The scalar value of the top-level member `key` of the object in body, as
 * text: a string without its quotes (strings with escapes are refused), or a
 * number/true/false as written. Returns 0, TDS_E_NOTFOUND (absent or null),
 * TDS_E_INVALID (not a scalar, escaped, malformed) or TDS_E_TOO_LARGE. */
int tds_json_scalar(const char *body, size_t len, const char *key, char *out, size_t cap);

#endif
