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
#include <stdint.h>

struct zs_limits {
    pthread_mutex_t lock;
    int64_t rate_per_min, concurrency, daily; /* 0 = off */
    int64_t minute_ms, day_ms;
    int64_t win_start_ms, win_count;
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
void zs_limits_reset_peak(struct zs_limits *l);
/* Changes the settings at run time (negative = keep). */
void zs_limits_set(struct zs_limits *l, int64_t rate_per_min, int64_t concurrency,
                   int64_t daily);

#endif
