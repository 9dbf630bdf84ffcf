/* copytext — values in PostgreSQL's COPY text format, and array literals.
 *
 * Owns the escaping rules only: a value becomes one field of a COPY line
 * (backslash, tab, newline and carriage return escaped, NULL as \N), or one
 * element of a text[] literal for the unnest() parameters of the meta
 * statements. Never talks to PostgreSQL and never validates what a value
 * means; the server's input functions do that.
 */
#ifndef TDS_COPYTEXT_H
#define TDS_COPYTEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

/* Append one COPY text field (no delimiter). p == NULL appends \N (SQL NULL).
 * Returns 0, -ENOMEM or TDS_E_TOO_LARGE (the buffer's max). */
int tds_copytext_add(struct tds_buf *b, const char *p, size_t n);

/* True when a value can travel as text at all: no NUL byte inside. PostgreSQL
 * text cannot hold NUL, so such a value is rejected before any SQL runs. */
bool tds_copytext_storable(const char *p, size_t n);

/* Array literals: tds_copytext_array_begin appends "{", _elem appends one
 * element ("..." with " and \ escaped, or NULL) with the comma as needed,
 * _end appends "}". first must be true for the first element. */
int tds_copytext_array_begin(struct tds_buf *b);
int tds_copytext_array_elem(struct tds_buf *b, bool first, const char *p, size_t n);
int tds_copytext_array_end(struct tds_buf *b);

/* Copy s[0..n) into a new NUL-terminated string that is valid UTF-8 without
 * NUL bytes (each bad byte becomes '?'), at most max bytes (0 = no limit, cut
 * on a character boundary). For tds.rejected, whose rows must never fail to
 * insert. Returns NULL on ENOMEM. */
char *tds_copytext_sanitize(const char *s, size_t n, size_t max);

#endif
