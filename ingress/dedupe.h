/* dedupe — a bounded window of recently accepted webhook event ids.
 *
 * Remembers each id (as a 128-bit SHA-256 prefix) with the time it was seen
 * and the journal seq that holds it, for window_ms or until max_entries newer
 * ids push it out, whichever comes first: memory is fixed at creation. Losing
 * an old id early only means a duplicate travels on to the writer, which
 * drops it (tds.webhook_events and the guarded upsert). Thread-safe.
 */
#ifndef TDS_INGRESS_DEDUPE_H
#define TDS_INGRESS_DEDUPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tds_dedupe;

int tds_dedupe_new(struct tds_dedupe **out, size_t max_entries, int64_t window_ms);
struct tds_dedupe *tds_dedupe_free(struct tds_dedupe *d);

/* Was key seen within the window before now_ms? If so, *seq is the seq given
 * when it was inserted. */
bool tds_dedupe_seen(struct tds_dedupe *d, const void *key, size_t len, int64_t now_ms,
                     uint64_t *seq);
/* Remember key as seen at at_ms with seq (evicting the oldest entry when
 * full). Inserting a key that is present refreshes it. */
void tds_dedupe_insert(struct tds_dedupe *d, const void *key, size_t len, int64_t at_ms,
                       uint64_t seq);
size_t tds_dedupe_size(struct tds_dedupe *d);
/* Entries pushed out by the bound while still inside the window. */
uint64_t tds_dedupe_evicted_early(struct tds_dedupe *d);

#endif
