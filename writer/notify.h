/* notify — the payloads of NOTIFY tds_changes.
 *
 * Collects the (organization, table, id) of every top-level row a transaction
 * wrote and renders one compact JSON payload per organization:
 *   {"org":"600…","tables":{"items":["1","2"],"contacts":["9"]}}
 * PostgreSQL limits a payload to 8000 bytes; when the ids do not fit, the
 * lists become counts and "truncated":true is added:
 *   {"org":"600…","tables":{"items":20000},"truncated":true}
 * Pure: never talks to PostgreSQL.
 */
#ifndef TDS_NOTIFY_H
#define TDS_NOTIFY_H

#include <stddef.h>

/* Payloads stay strictly below PostgreSQL's 8000-byte limit. */
#define TDS_NOTIFY_MAX 7900

struct tds_notify;

int tds_notify_new(struct tds_notify **out);
struct tds_notify *tds_notify_free(struct tds_notify *n);
/* Forget everything collected (start of a transaction). */
void tds_notify_reset(struct tds_notify *n);
/* Record one written row. Strings are copied. 0 or -ENOMEM. */
int tds_notify_add(struct tds_notify *n, const char *org, const char *table, const char *id);
/* Render the payloads: *out is a new array of *n_out new strings (caller frees
 * each and the array with tds_notify_payloads_free). 0 or -ENOMEM. */
int tds_notify_payloads(const struct tds_notify *n, char ***out, size_t *n_out);
void tds_notify_payloads_free(char **p, size_t n);

#endif
