/* limits — Zoho's per-organization API limits.
 *
 * Owns, for one organization, the requests-per-"minute" window (code 44), the
 * in-flight count (code 1070) and the daily quota (code 45), plus the figures
 * for the X-Rate-Limit-* headers. A "minute" lasts minute_ms and a "day"
 * day_ms, so tests can run at the same ratios in less time. Windows are fixed
 * and start when the simulator starts. Thread-safe. It never does HTTP.
 */
#ifndef ZS_LIMITS_H
#define ZS_LIMITS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Admitted requests of the last ZS_WINDOWS_KEPT finished minutes, for
 * measuring how much of the allowance a client used. */
#define ZS_WINDOWS_KEPT 64

struct zs_limits {
    pthread_mutex_t lock;
    int64_t rate_per_min, concurrency, daily; /* 0 = off */
    int64_t minute_ms, day_ms;
    int64_t win_start_ms, win_count;
    int64_t done[ZS_WINDOWS_KEPT]; /* ring of finished minutes' counts */
    int64_t n_done;                /* minutes finished since start, empty ones included */
    int64_t day_start_ms, day_count;
    int64_t inflight, peak;
};

struct zs_limit_hdr {
    int64_t limit, remaining, reset_s; /* X-Rate-Limit-* */
    int64_t retry_after_s;             /* for a 429 */
};

void zs_limits_init(struct zs_limits *l, int64_t rate_per_min, int64_t concurrency,
                    int64_t daily, int64_t minute_ms, int64_t day_ms, int64_t now_ms);
void zs_limits_deinit(struct zs_limits *l);
/* Admits one request: returns 0 (call zs_limits_leave when done) or the Zoho
 * code of the refusal (45, 44, 1070). Fills *h either way. */
int zs_limits_enter(struct zs_limits *l, int64_t now_ms, struct zs_limit_hdr *h);
void zs_limits_leave(struct zs_limits *l);
int64_t zs_limits_peak(struct zs_limits *l);
/* The admitted counts of the finished minutes, oldest first, as of now_ms:
 * at most max and at most ZS_WINDOWS_KEPT of the latest. Returns how many
 * were written; *seq is the number of minutes finished since start (so a
 * caller can tell which minutes are new since an earlier call). */
size_t zs_limits_windows(struct zs_limits *l, int64_t now_ms, int64_t *out, size_t max,
                         int64_t *seq);
void zs_limits_reset_peak(struct zs_limits *l);
/* Changes the settings at run time (negative = keep). */
void zs_limits_set(struct zs_limits *l, int64_t rate_per_min, int64_t concurrency,
                   int64_t daily);

#endif
