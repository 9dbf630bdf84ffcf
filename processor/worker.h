/* worker — one input frame in, one rows frame out.
 *
 * Decodes an `event` or `page` message, transforms every record (and every
 * delete) through transform.c into exactly one `rows` message for the writer,
 * copying src/origin/run/mode/page/final/cursor/received_ms as DESIGN.md §4
 * asks. A frame that does not decode, carries a newer schema version, or is a
 * type the processor does not take is a dead letter: it is counted and
 * forwarded as a rows message with no tables and one reject (org "", mode
 * "deadletter", origin = this processor, raw = the frame as text or hex), so
 * it lands in tds.rejected instead of vanishing. Sockets and the loop are
 * main.c's; this module only counts in the metrics registry it is given.
 */
#ifndef TDS_WORKER_H
#define TDS_WORKER_H

#include <stddef.h>
#include <stdint.h>

struct tds_worker;
struct tds_metrics;

struct tds_worker_stats {
    uint64_t messages;     /* frames handled */
    uint64_t records;      /* records transformed into rows */
    uint64_t rejects;      /* records rejected */
    uint64_t dead_letters; /* frames that were not a usable event/page */
};

/* origin: this processor's own origin ("processor.<instance>"), used for dead
 * letters. metrics may be NULL (tests, benchmarks). */
int tds_worker_new(struct tds_worker **out, struct tds_metrics *metrics, const char *origin);
struct tds_worker *tds_worker_free(struct tds_worker *w);

/* Handle one frame. On 0, *out and *out_len are the encoded rows frame to send
 * (caller frees). Returns 0 or -ENOMEM (the frame should then be dropped
 * unacked; its source resends it). */
int tds_worker_handle(struct tds_worker *w, const void *frame, size_t len, char **out,
                      size_t *out_len);
/* A frame over the receive limit: only its size is known. Same contract. */
int tds_worker_dead_letter(struct tds_worker *w, const char *why, const void *frame, size_t len,
                           char **out, size_t *out_len);

void tds_worker_stats(const struct tds_worker *w, struct tds_worker_stats *out);

#endif
