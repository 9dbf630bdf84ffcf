/* limits — per-organization request limits; see limits.h.
 *
 * Only admitted requests count against the minute and the day: a client
 * that keeps hammering stays refused until the window turns, but refusals
 * do not push the window further. Order of checks: daily, minute,
 * concurrency, the same order the codes are usually reported in.
 */
#include "limits.h"

#include <string.h>

#define OFF_DAILY 1000000000LL /* what the headers show when the quota is off */

void zs_limits_init(struct zs_limits *l, int64_t rate_per_min, int64_t concurrency,
                    int64_t daily, int64_t minute_ms, int64_t day_ms, int64_t now_ms)
{
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->lock, NULL);
    l->rate_per_min = rate_per_min;
    l->concurrency = concurrency;
    l->daily = daily;
    l->minute_ms = minute_ms > 0 ? minute_ms : 60000;
    l->day_ms = day_ms > 0 ? day_ms : l->minute_ms * 1440;
    l->win_start_ms = now_ms;
    l->day_start_ms = now_ms;
}

void zs_limits_deinit(struct zs_limits *l) { pthread_mutex_destroy(&l->lock); }

static int64_t ceil_s(int64_t ms) { return ms <= 0 ? 0 : (ms + 999) / 1000; }

/* Start the minute now_ms falls in, keeping the finished ones' counts (the
 * minutes nobody asked in count 0). */
static void roll_locked(struct zs_limits *l, int64_t now_ms)
{
    int64_t k;

    if (now_ms - l->win_start_ms < l->minute_ms)
        return;
    k = (now_ms - l->win_start_ms) / l->minute_ms;
    /* the finished minute, then k - 1 empty ones; a ring slot is written
     * once per turn, so only the latest ZS_WINDOWS_KEPT of them matter */
    for (int64_t i = k > ZS_WINDOWS_KEPT ? k - ZS_WINDOWS_KEPT : 0; i < k; i++)
        l->done[(l->n_done + i) % ZS_WINDOWS_KEPT] = i == 0 ? l->win_count : 0;
    l->n_done += k;
    l->win_start_ms += k * l->minute_ms;
    l->win_count = 0;
}

int zs_limits_enter(struct zs_limits *l, int64_t now_ms, struct zs_limit_hdr *h)
{
    int code = 0;
    pthread_mutex_lock(&l->lock);
    roll_locked(l, now_ms);
    if (now_ms - l->day_start_ms >= l->day_ms) {
        l->day_start_ms += (now_ms - l->day_start_ms) / l->day_ms * l->day_ms;
        l->day_count = 0;
    }
    int64_t daily = l->daily > 0 ? l->daily : OFF_DAILY;
    int64_t day_left_ms = l->day_start_ms + l->day_ms - now_ms;
    if (l->daily > 0 && l->day_count >= l->daily) {
        code = 45;
        h->retry_after_s = ceil_s(day_left_ms);
    } else if (l->rate_per_min > 0 && l->win_count >= l->rate_per_min) {
        code = 44;
        h->retry_after_s = ceil_s(l->win_start_ms + l->minute_ms - now_ms);
    } else if (l->concurrency > 0 && l->inflight >= l->concurrency) {
        code = 1070;
        h->retry_after_s = 1;
    } else {
        l->win_count++;
        l->day_count++;
        l->inflight++;
        if (l->inflight > l->peak)
            l->peak = l->inflight;
        h->retry_after_s = 0;
    }
    h->limit = daily;
    h->remaining = daily - l->day_count < 0 ? 0 : daily - l->day_count;
    h->reset_s = ceil_s(day_left_ms);
    pthread_mutex_unlock(&l->lock);
    return code;
}

void zs_limits_leave(struct zs_limits *l)
{
    pthread_mutex_lock(&l->lock);
    if (l->inflight > 0)
        l->inflight--;
    pthread_mutex_unlock(&l->lock);
}

int64_t zs_limits_peak(struct zs_limits *l)
{
    pthread_mutex_lock(&l->lock);
    int64_t p = l->peak;
    pthread_mutex_unlock(&l->lock);
    return p;
}

size_t zs_limits_windows(struct zs_limits *l, int64_t now_ms, int64_t *out, size_t max,
                         int64_t *seq)
{
    size_t n;

    pthread_mutex_lock(&l->lock);
    roll_locked(l, now_ms);
    n = (size_t)(l->n_done < ZS_WINDOWS_KEPT ? l->n_done : ZS_WINDOWS_KEPT);
    if (n > max)
        n = max;
    for (size_t i = 0; i < n; i++)
        out[i] = l->done[(size_t)(l->n_done - (int64_t)n + (int64_t)i) % ZS_WINDOWS_KEPT];
    *seq = l->n_done;
    pthread_mutex_unlock(&l->lock);
    return n;
}

void zs_limits_reset_peak(struct zs_limits *l)
{
    pthread_mutex_lock(&l->lock);
    l->peak = l->inflight;
    pthread_mutex_unlock(&l->lock);
}

void zs_limits_set(struct zs_limits *l, int64_t rate_per_min, int64_t concurrency, int64_t daily)
{
    pthread_mutex_lock(&l->lock);
    if (rate_per_min >= 0)
        l->rate_per_min = rate_per_min;
    if (concurrency >= 0)
        l->concurrency = concurrency;
    if (daily >= 0)
        l->daily = daily;
    pthread_mutex_unlock(&l->lock);
}
