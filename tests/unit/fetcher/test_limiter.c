/* test_limiter — the per-organization limiter against a simulated clock:
 * never more than N requests in any window at the server, ≥ 99% of N used,
 * the three 429 codes, the daily reserve and backoff bounds. */
#include <stdlib.h>

#include "assert.h"
#include "limiter.h"
#include "util.h"

#define MAXREQ 20000

struct sim {
    int64_t arrive[MAXREQ]; /* when the server saw each request */
    int64_t done_at[MAXREQ];
    int64_t ticket[MAXREQ];
    struct tds_limiter *who[MAXREQ]; /* the limiter that granted it */
    int n;
};

static uint32_t rng = 12345;
static uint32_t rnd(void)
{
    rng = rng * 1103515245u + 12345u;
    return rng >> 8;
}

/* Drive the limiter for duration_ms with requests always waiting; latency is
 * random in [lat_min, lat_max]. Returns the number of requests sent. */
static int spike_per_mille = 0; /* answers that take spike_ms instead */
static int spike_ms = 0;

/* Release l's requests answered by now, at the time each was answered. */
static void release_answered(struct tds_limiter *l, struct sim *s, int64_t now)
{
    for (int i = 0; i < s->n; i++) {
        if (s->ticket[i] >= 0 && s->who[i] == l && s->done_at[i] <= now) {
            struct tds_limiter_outcome o;
            tds_limiter_outcome_init(&o, TDS_LIMITER_DONE);
            tds_limiter_release(l, s->done_at[i], s->ticket[i], &o);
            s->ticket[i] = -1;
        }
    }
}

/* Drive l from `from` until `to` (appending to s; requests of l still in
 * flight from an earlier span are released as they finish); returns the
 * time it stopped at. */
static int64_t drive_span(struct tds_limiter *l, struct sim *s, int64_t from, int64_t to,
                          int lat_min, int lat_max)
{
    int64_t now = from;
    release_answered(l, s, now); /* answers that came while nobody drove it */
    while (now < to && s->n < MAXREQ) {
        int64_t wait, ticket;
        int rc = tds_limiter_acquire(l, now, &wait, &ticket);
        if (rc == TDS_LIMITER_GO) {
            int lat = lat_min + (int)(rnd() % (uint32_t)(lat_max - lat_min + 1));
            if (spike_per_mille && (int)(rnd() % 1000) < spike_per_mille)
                lat = spike_ms;
            /* the server sees it somewhere inside the latency */
            s->arrive[s->n] = now + (lat ? (int64_t)(rnd() % (uint32_t)lat) : 0);
            s->done_at[s->n] = now + lat;
            s->ticket[s->n] = ticket;
            s->who[s->n] = l;
            s->n++;
            continue;
        }
        T_TRUE(rc == TDS_LIMITER_WAIT);
        /* next event: earliest completion still pending, or the wait */
        int64_t next = wait > 0 ? now + wait : INT64_MAX;
        for (int i = 0; i < s->n; i++)
            if (s->ticket[i] >= 0 && s->who[i] == l && s->done_at[i] < next)
                next = s->done_at[i];
        T_TRUE(next != INT64_MAX); /* never told to wait forever */
        T_TRUE(next >= now);
        now = next;
        release_answered(l, s, now);
    }
    return now;
}

static int drive(struct tds_limiter *l, struct sim *s, int64_t duration_ms, int lat_min, int lat_max)
{
    s->n = 0;
    drive_span(l, s, 0, duration_ms, lat_min, lat_max);
    return s->n;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static struct sim S;

static void check_window(int64_t window, int64_t n_max)
{
    int64_t *a = malloc(sizeof(int64_t) * (size_t)S.n);
    T_TRUE(a != NULL);
    for (int i = 0; i < S.n; i++)
        a[i] = S.arrive[i];
    qsort(a, (size_t)S.n, sizeof(int64_t), cmp64);
    /* sliding window: any n_max+1 consecutive arrivals span ≥ window */
    for (int i = 0; i + n_max < S.n; i++)
        T_INT(a[i + n_max] - a[i], >=, window);
    free(a);
}

static void test_minute_exact(void)
{
    struct tds_limiter_cfg cfg = {.rate_per_window = 100, .window_ms = 60000, .max_concurrency = 10,
                                  .margin_ms = 5};
    struct tds_limiter *l;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    int n = drive(l, &S, 10 * 60000, 5, 300);
    check_window(60000, 100);
    /* every fixed minute uses at least 99% of the allowance */
    for (int m = 0; m < 10; m++) {
        int cnt = 0;
        for (int i = 0; i < n; i++)
            if (S.arrive[i] >= m * 60000 && S.arrive[i] < (m + 1) * 60000)
                cnt++;
        T_INT(cnt, >=, 99);
        T_INT(cnt, <=, 100);
    }
    tds_limiter_free(l);
}

static void test_fast_window(void)
{
    /* a simulator with a 1-second "minute" and slow, jittery answers */
    struct tds_limiter_cfg cfg = {.rate_per_window = 50, .window_ms = 1000, .max_concurrency = 5,
                                  .margin_ms = 1};
    struct tds_limiter *l;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    drive(l, &S, 20000, 0, 40);
    check_window(1000, 50);
    T_INT(S.n, >=, 20 * 50 * 9 / 10);
    tds_limiter_free(l);
}

static void test_slow_answers(void)
{
    /* 2% of answers take 3 s: still never over N, still ≥ 99% of N per minute */
    struct tds_limiter_cfg cfg = {.rate_per_window = 100, .window_ms = 60000, .max_concurrency = 10,
                                  .margin_ms = 5};
    struct tds_limiter *l;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    spike_per_mille = 20;
    spike_ms = 3000;
    int n = drive(l, &S, 10 * 60000, 20, 400);
    spike_per_mille = 0;
    check_window(60000, 100);
    for (int m = 1; m < 10; m++) {
        int cnt = 0;
        for (int i = 0; i < n; i++)
            if (S.arrive[i] >= m * 60000 && S.arrive[i] < (m + 1) * 60000)
                cnt++;
        T_INT(cnt, >=, 99);
        T_INT(cnt, <=, 100);
    }
    tds_limiter_free(l);
}

static void test_concurrency(void)
{
    struct tds_limiter_cfg cfg = {.rate_per_window = 1000, .window_ms = 1000, .max_concurrency = 3,
                                  .concurrency_cooldown_ms = 1000};
    struct tds_limiter *l;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    int64_t w, t[5];
    int64_t now = 0;
    for (int i = 0; i < 3; i++) {
        T_INT(tds_limiter_acquire(l, now, &w, &t[i]), ==, TDS_LIMITER_GO);
        now += 1;
    }
    T_INT(tds_limiter_acquire(l, now, &w, &t[3]), ==, TDS_LIMITER_WAIT);
    T_INT(w, ==, -1);
    /* a 1070: the cap drops below what we had in flight */
    struct tds_limiter_outcome o;
    tds_limiter_outcome_init(&o, TDS_LIMITER_429_CONCURRENCY);
    tds_limiter_release(l, now, t[0], &o);
    T_INT(tds_limiter_concurrency_cap(l), ==, 2);
    T_INT(tds_limiter_acquire(l, now, &w, &t[3]), ==, TDS_LIMITER_WAIT);
    tds_limiter_outcome_init(&o, TDS_LIMITER_DONE);
    tds_limiter_release(l, now, t[1], &o);
    now += 5;
    T_INT(tds_limiter_acquire(l, now, &w, &t[3]), ==, TDS_LIMITER_GO);
    /* after the cooldown the cap rises again, one step */
    now += 1000;
    T_INT(tds_limiter_acquire(l, now, &w, &t[4]), ==, TDS_LIMITER_GO);
    T_INT(tds_limiter_concurrency_cap(l), ==, 3);
    tds_limiter_free(l);
}

/* Another client holds every concurrency slot: each call of ours gets a
 * 1070. The cap cannot go below 1, so the pause has to do it: growing,
 * jittered, started over by an answer that is not a 429. */
static void test_concurrency_held_elsewhere(void)
{
    struct tds_limiter_cfg cfg = {.rate_per_window = 100, .window_ms = 60000, .max_concurrency = 10,
                                  .seed = 42};
    struct tds_limiter *l;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    struct tds_limiter_outcome o;
    int64_t now = 0, w, t, last_send = -1, prev_gap = 0;
    int sends = 0, jittered = 0;
    while (now < 300000) {
        int rc = tds_limiter_acquire(l, now, &w, &t);
        if (rc != TDS_LIMITER_GO) {
            T_INT(rc, ==, TDS_LIMITER_WAIT);
            T_INT(w, >, 0); /* a time, never "until a release": nothing is in flight */
            now += w;
            continue;
        }
        if (last_send >= 0) {
            int64_t gap = now - last_send - 50;
            /* [d/2, d] with d = 1 s doubling to 30 s after the first */
            int64_t d = 1000;
            for (int i = 1; i < sends && d < 30000; i++)
                d *= 2;
            if (d > 30000)
                d = 30000;
            T_INT(gap, >=, d / 2);
            T_INT(gap, <=, d + 1);
            if (gap != prev_gap && gap != d)
                jittered++;
            prev_gap = gap;
        }
        last_send = now;
        sends++;
        now += 50;
        tds_limiter_outcome_init(&o, TDS_LIMITER_429_CONCURRENCY);
        tds_limiter_release(l, now, t, &o);
        T_INT(tds_limiter_concurrency_cap(l), ==, 1);
    }
    /* a call every 600 ms (the pacing) would be 500 in five minutes */
    T_INT(sends, <=, 25);
    T_INT(sends, >=, 12);
    T_INT(jittered, >=, 3);
    /* an answer that is not a 429 starts the backoff over */
    while (tds_limiter_acquire(l, now, &w, &t) != TDS_LIMITER_GO)
        now += w;
    tds_limiter_outcome_init(&o, TDS_LIMITER_DONE);
    tds_limiter_release(l, now, t, &o);
    now += 600;
    T_INT(tds_limiter_acquire(l, now, &w, &t), ==, TDS_LIMITER_GO);
    tds_limiter_outcome_init(&o, TDS_LIMITER_429_CONCURRENCY);
    tds_limiter_release(l, now, t, &o);
    T_INT(tds_limiter_acquire(l, now, &w, &t), ==, TDS_LIMITER_WAIT);
    T_INT(w, >=, 500);
    T_INT(w, <=, 1000);
    tds_limiter_free(l);
}

static void test_429_minute(void)
{
    struct tds_limiter_cfg cfg = {.rate_per_window = 100, .window_ms = 60000, .max_concurrency = 5};
    struct tds_limiter *l;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    int64_t w, t;
    T_INT(tds_limiter_acquire(l, 0, &w, &t), ==, TDS_LIMITER_GO);
    struct tds_limiter_outcome o;
    tds_limiter_outcome_init(&o, TDS_LIMITER_429_MINUTE);
    tds_limiter_release(l, 10, t, &o);
    T_INT(tds_limiter_acquire(l, 1000, &w, &t), ==, TDS_LIMITER_WAIT);
    T_INT(w, ==, 60010 - 1000);
    T_INT(tds_limiter_acquire(l, 60010, &w, &t), ==, TDS_LIMITER_GO);
    /* Retry-After wins when present */
    tds_limiter_outcome_init(&o, TDS_LIMITER_429_MINUTE);
    o.retry_after_s = 7;
    tds_limiter_release(l, 60020, t, &o);
    T_INT(tds_limiter_acquire(l, 60020, &w, &t), ==, TDS_LIMITER_WAIT);
    T_INT(w, ==, 7000);
    /* Retry-After: 0 is no pause beside a refusal: one window, as absent
     * (it sent the call straight back) */
    T_INT(tds_limiter_acquire(l, 67020, &w, &t), ==, TDS_LIMITER_GO);
    tds_limiter_outcome_init(&o, TDS_LIMITER_429_MINUTE);
    o.retry_after_s = 0;
    tds_limiter_release(l, 67030, t, &o);
    T_INT(tds_limiter_acquire(l, 67030, &w, &t), ==, TDS_LIMITER_WAIT);
    T_INT(w, ==, 60000);
    tds_limiter_free(l);
}

/* X-Rate-Limit-Reset as an epoch time, not a countdown: taken as absent, so
 * a code 45 stops the organization for the configured pause, not for
 * fifty-odd years, and no reset is announced from it. */
static void test_reset_header_out_of_range(void)
{
    struct tds_limiter_cfg cfg = {.rate_per_window = 1000, .window_ms = 1000, .max_concurrency = 5,
                                  .daily_pause_ms = 3600000};
    struct tds_limiter *l;
    struct tds_limiter_outcome o;
    int64_t w, t;

    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    T_INT(tds_limiter_acquire(l, 0, &w, &t), ==, TDS_LIMITER_GO);
    tds_limiter_outcome_init(&o, TDS_LIMITER_429_DAILY);
    o.hdr_reset_s = 1767600000;
    tds_limiter_release(l, 10, t, &o);
    T_INT(tds_limiter_acquire(l, 20, &w, &t), ==, TDS_LIMITER_STOPPED);
    T_INT(w, ==, 3600000 - 10);
    /* a day's countdown is still taken */
    T_INT(tds_limiter_acquire(l, 3600010, &w, &t), ==, TDS_LIMITER_GO);
    tds_limiter_outcome_init(&o, TDS_LIMITER_429_DAILY);
    o.hdr_reset_s = 86400;
    tds_limiter_release(l, 3600020, t, &o);
    T_INT(tds_limiter_acquire(l, 3600030, &w, &t), ==, TDS_LIMITER_STOPPED);
    T_INT(w, ==, 86400000 - 10);
    tds_limiter_free(l);
}

/* An answer at `at` to the request of `ticket`, with Zoho's quota headers. */
static void answer(struct tds_limiter *l, int64_t at, int64_t ticket, int64_t limit,
                   int64_t remaining, int64_t reset_s)
{
    struct tds_limiter_outcome o;
    tds_limiter_outcome_init(&o, TDS_LIMITER_DONE);
    o.hdr_limit = limit;
    o.hdr_remaining = remaining;
    o.hdr_reset_s = reset_s;
    tds_limiter_release(l, at, ticket, &o);
}

static void test_daily(void)
{
    struct tds_limiter_cfg cfg = {.rate_per_window = 1000, .window_ms = 1000, .max_concurrency = 5,
                                  .daily_reserve = 10};
    struct tds_limiter *l;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    int64_t w, t;
    T_INT(tds_limiter_remaining(l), ==, -1);
    T_INT(tds_limiter_acquire(l, 0, &w, &t), ==, TDS_LIMITER_GO);
    answer(l, 5, t, 1000, 12, 3600);
    T_INT(tds_limiter_daily_limit(l), ==, 1000);
    T_INT(tds_limiter_remaining(l), ==, 12);
    int64_t now = 10;
    T_INT(tds_limiter_acquire(l, now, &w, &t), ==, TDS_LIMITER_GO);
    T_INT(tds_limiter_acquire(l, now + 2, &w, &t), ==, TDS_LIMITER_GO);
    /* 10 left = the reserve: stop until the reset the headers announced */
    T_INT(tds_limiter_acquire(l, now + 4, &w, &t), ==, TDS_LIMITER_STOPPED);
    T_INT(w, ==, 5 + 3600000 - (now + 4));
    T_TRUE(tds_limiter_stopped(l, now + 4));
    T_INT(tds_limiter_acquire(l, 5 + 3600000, &w, &t), ==, TDS_LIMITER_GO);
    T_INT(tds_limiter_remaining(l), ==, 999);
    /* code 45: stop until X-Rate-Limit-Reset */
    struct tds_limiter_outcome o;
    tds_limiter_outcome_init(&o, TDS_LIMITER_429_DAILY);
    o.hdr_reset_s = 100;
    tds_limiter_release(l, 4000000, t, &o);
    T_INT(tds_limiter_acquire(l, 4000001, &w, &t), ==, TDS_LIMITER_STOPPED);
    T_INT(w, ==, 99999);
    tds_limiter_free(l);

    /* Spent again right after a reset, before any answer of the new day:
     * the reset known is past, so wait for the call out, whose headers say
     * when the next one is, instead of the hour kept for "no reset known". */
    cfg.daily_reserve = 0;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    T_INT(tds_limiter_acquire(l, 0, &w, &t), ==, TDS_LIMITER_GO);
    answer(l, 10, t, 2, 0, 4);
    T_INT(tds_limiter_acquire(l, 20, &w, &t), ==, TDS_LIMITER_STOPPED);
    T_INT(w, ==, 10 + 4000 - 20);
    /* the day is over: the quota refilled (2), both calls go out */
    T_INT(tds_limiter_acquire(l, 4010, &w, &t), ==, TDS_LIMITER_GO);
    int64_t t2;
    T_INT(tds_limiter_acquire(l, 4011, &w, &t2), ==, TDS_LIMITER_GO);
    T_INT(tds_limiter_acquire(l, 4012, &w, &t), ==, TDS_LIMITER_WAIT);
    T_INT(w, ==, -1);
    T_TRUE(!tds_limiter_stopped(l, 4012));
    /* an answer of the new day tells the next reset */
    answer(l, 4100, t2, 2, 0, 4);
    T_INT(tds_limiter_acquire(l, 4101, &w, &t), ==, TDS_LIMITER_STOPPED);
    T_INT(w, ==, 4100 + 4000 - 4101);
    tds_limiter_free(l);
}

/* The last answer left the reserve and nothing is out; the next call comes
 * after the reset that answer announced. The figures were the old day's:
 * one call goes to learn the new day's (the others wait for it), where the
 * limiter used to stop the organization for the hour kept for "no reset
 * known". A code 45 saying the reset is now pauses about a second, doubling
 * while it repeats, never past that hour. */
static void test_daily_after_reset(void)
{
    struct tds_limiter_cfg cfg = {.rate_per_window = 1000, .window_ms = 1000, .max_concurrency = 5,
                                  .daily_reserve = 10};
    struct tds_limiter *l;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    int64_t w, t, t2;
    T_INT(tds_limiter_acquire(l, 0, &w, &t), ==, TDS_LIMITER_GO);
    answer(l, 10, t, 1000, 8, 60); /* 8 left, the day ends at 60010 */
    /* before the reset: stopped until it */
    T_INT(tds_limiter_acquire(l, 20, &w, &t), ==, TDS_LIMITER_STOPPED);
    T_INT(w, ==, 60010 - 20);
    tds_limiter_free(l);

    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    T_INT(tds_limiter_acquire(l, 0, &w, &t), ==, TDS_LIMITER_GO);
    answer(l, 10, t, 1000, 8, 60);
    /* the first call after the reset goes, one at a time */
    T_INT(tds_limiter_acquire(l, 70000, &w, &t), ==, TDS_LIMITER_GO);
    T_TRUE(!tds_limiter_stopped(l, 70000));
    T_INT(tds_limiter_acquire(l, 70001, &w, &t2), ==, TDS_LIMITER_WAIT);
    T_INT(w, ==, -1);
    /* its answer is the new day's: everything goes again */
    answer(l, 70100, t, 1000, 999, 86400);
    T_INT(tds_limiter_acquire(l, 70101, &w, &t), ==, TDS_LIMITER_GO);
    T_INT(tds_limiter_acquire(l, 70102, &w, &t2), ==, TDS_LIMITER_GO);
    tds_limiter_free(l);

    /* "X-Rate-Limit-Reset: 0" with the reserve reached: a second, not an hour */
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    T_INT(tds_limiter_acquire(l, 0, &w, &t), ==, TDS_LIMITER_GO);
    answer(l, 10, t, 1000, 3, 0);
    T_INT(tds_limiter_acquire(l, 20, &w, &t), ==, TDS_LIMITER_STOPPED);
    T_INT(w, ==, 10 + TDS_LIMITER_RESET_GRAIN_MS - 20);
    T_INT(tds_limiter_acquire(l, 10 + TDS_LIMITER_RESET_GRAIN_MS, &w, &t), ==, TDS_LIMITER_GO);
    tds_limiter_free(l);

    /* code 45 with Reset: 0: a second, then two, ...; an answer starts over */
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    struct tds_limiter_outcome o;
    int64_t now = 0;
    for (int64_t expect = 1000; expect <= 4000; expect *= 2) {
        T_INT(tds_limiter_acquire(l, now, &w, &t), ==, TDS_LIMITER_GO);
        tds_limiter_outcome_init(&o, TDS_LIMITER_429_DAILY);
        o.hdr_reset_s = 0;
        tds_limiter_release(l, now + 5, t, &o);
        T_INT(tds_limiter_acquire(l, now + 5, &w, &t2), ==, TDS_LIMITER_STOPPED);
        T_INT(w, ==, expect);
        now += 5 + expect;
    }
    /* code 45 with no reset information at all: the configured hour */
    T_INT(tds_limiter_acquire(l, now, &w, &t), ==, TDS_LIMITER_GO);
    tds_limiter_outcome_init(&o, TDS_LIMITER_429_DAILY);
    tds_limiter_release(l, now + 5, t, &o);
    T_INT(tds_limiter_acquire(l, now + 5, &w, &t2), ==, TDS_LIMITER_STOPPED);
    T_INT(w, ==, 3600000);
    tds_limiter_free(l);
}

/* A snapshot as another machine's clock reads it: apart by up to skew. */
static void skew_snapshot(struct tds_limiter_snapshot *snap, int64_t skew)
{
    int64_t off = skew ? (int64_t)(rnd() % (uint32_t)(2 * skew + 1)) - skew : 0;
    snap->at_ms += off;
    if (snap->next_ms > INT64_MIN / 4)
        snap->next_ms += off;
    for (size_t i = 0; i < snap->n_done; i++)
        snap->done[i] += off;
}

/* An organization changes hands. The first owner A runs at full pace (or
 * idles with its credit banked), is snapshotted (its last record), runs on
 * — past the takeover by up to the horizon, but never past its licence —
 * and dies with calls in flight; B starts from the snapshot, its clock up
 * to the skew apart. The server never sees more than N in a window, and B
 * uses three windows but for what it could not know. Without the seed, B's
 * banked quarter window went out on top of A's minute. */
static void test_handover(void)
{
    static int64_t done[1000];
    const int64_t licence = 5000;
    for (int trial = 0; trial < 400; trial++) {
        int64_t n = trial % 3 == 0 ? 50 : 100;
        int64_t w = trial % 2 ? 60000 : 2000;
        /* 0 stale row, 1 A idle then a burst, 2 a row just gone stale (A's
         * last calls, made before B's window, may reach Zoho inside it), else busy */
        int kind = trial % 6;
        int64_t skew = trial % 4 == 0 ? 300 : 0;
        int64_t horizon = 1000 + (int64_t)(rnd() % 2000);
        struct tds_limiter_cfg cfg = {.rate_per_window = n, .window_ms = w, .max_concurrency = 10,
                                      .margin_ms = 2, .needs_licence = true};
        struct tds_limiter *a, *b;
        T_INT(tds_limiter_new(&a, &cfg), ==, 0);
        T_INT(tds_limiter_new(&b, &cfg), ==, 0);
        int lat_max = 1 + (int)(rnd() % (uint32_t)(w / 20));
        int64_t u = w + (int64_t)(rnd() % (uint32_t)(3 * w));   /* A's last record */
        int64_t gap = kind == 0   ? licence + lat_max + w + 2 * skew + 3 + (int64_t)(rnd() % 3000)
                      : kind == 2 ? licence + w + 2 * skew + (int64_t)(rnd() % (uint32_t)(lat_max + 1))
                                  : (int64_t)(rnd() % 2500); /* to the takeover */
        int64_t start = u + gap;
        /* A dies somewhere up to the horizon past the takeover */
        int64_t d = u + (int64_t)(rnd() % (uint32_t)(gap + horizon + 1));
        tds_limiter_licence(a, u + licence); /* its records worked until u */
        S.n = 0;
        int64_t t = drive_span(a, &S, 0, kind == 1 ? u - w / 2 : u, 0, lat_max);
        if (kind == 1 && t < u)
            t = u; /* idle since u - w/2: its credit banked */
        struct tds_limiter_snapshot snap = {.done = done};
        tds_limiter_snapshot(a, t, &snap);
        T_INT((int64_t)snap.n_done + snap.inflight, <=, n);
        drive_span(a, &S, t, d, 0, lat_max);
        for (int i = 0; i < S.n; i++)
            if (S.who[i] == a)
                S.ticket[i] = -1; /* died: never answered */
        /* the clocks may differ by up to the skew the seed allows for */
        skew_snapshot(&snap, skew);
        struct tds_limiter_handover h = {.skew_ms = skew, .horizon_ms = horizon,
                                         .licence_ms = licence, .call_ms = lat_max};
        T_INT(tds_limiter_seed(b, start, &snap, &h), ==, 0);
        tds_limiter_licence(b, INT64_MAX / 4);
        int before = S.n;
        drive_span(b, &S, start, start + 3 * w, 0, lat_max);
        check_window(w, n);
        T_TRUE(S.n > before);
        if (kind == 0) {
            /* nothing of A's can be in B's first window: B starts at once */
            int64_t first = INT64_MAX;
            for (int i = before; i < S.n; i++)
                if (S.arrive[i] < first)
                    first = S.arrive[i];
            T_INT(first, <=, start + lat_max);
        }
        /* The cost is what cannot be known: what A's pacing allowed from the
         * snapshot until it stopped (and the skew), with its banked credit,
         * plus what it had in flight, held until it may have stopped; 90%
         * of the rest of three windows is used. */
        int64_t hi = start + horizon < u + licence + 2 * skew ? start + horizon : u + licence + 2 * skew;
        int64_t lo = u - skew > start - w - lat_max ? u - skew : start - w - lat_max;
        int64_t unknown = hi > lo ? (hi - lo) * n / w + n / 4 + snap.inflight + 2 : 0;
        if (unknown > n)
            unknown = n;
        /* counted as finished as late as A could have called: up to the
         * horizon past the takeover, holding their slots that much longer */
        if (unknown && hi + lat_max > start)
            unknown += (hi + lat_max - start) * n / w;
        T_INT(S.n - before, >=, 3 * n * 9 / 10 - unknown);
        tds_limiter_free(a);
        tds_limiter_free(b);
    }
}

/* A gentle stop: A's last record is taken when it stops granting (its calls
 * in flight then are never answered: cancelled, they may still reach the
 * server). B seeded from it as such (`stopped`) keeps the limit and assumes
 * none of the calls A's pacing could have made after it: over three windows
 * it loses only A's calls in flight, where C, seeded from the same record
 * as from a crash, holds the calls A could have made until its licence
 * ran out. */
static void test_handover_stopped(void)
{
    static int64_t done[1000];
    const int64_t licence = 5000;
    int64_t sum_b = 0, sum_c = 0;
    for (int trial = 0; trial < 200; trial++) {
        int64_t n = trial % 3 == 0 ? 50 : 100;
        int64_t w = trial % 2 ? 60000 : 2000;
        int64_t skew = trial % 4 == 0 ? 300 : 0;
        int64_t horizon = 1000 + (int64_t)(rnd() % 2000);
        struct tds_limiter_cfg cfg = {.rate_per_window = n, .window_ms = w, .max_concurrency = 10,
                                      .margin_ms = 2, .needs_licence = true};
        struct tds_limiter *a, *b, *c;
        T_INT(tds_limiter_new(&a, &cfg), ==, 0);
        T_INT(tds_limiter_new(&b, &cfg), ==, 0);
        T_INT(tds_limiter_new(&c, &cfg), ==, 0);
        int lat_max = 1 + (int)(rnd() % (uint32_t)(w / 20));
        int64_t stop = w + (int64_t)(rnd() % (uint32_t)(3 * w));
        tds_limiter_licence(a, stop + licence);
        S.n = 0;
        int64_t t = drive_span(a, &S, 0, stop, 0, lat_max); /* its last grant is before t */
        int64_t start = t + (int64_t)(rnd() % 2500);        /* the takeover */
        struct tds_limiter_snapshot snap = {.done = done};
        tds_limiter_snapshot(a, t, &snap);
        for (int i = 0; i < S.n; i++)
            if (S.ticket[i] >= 0)
                S.ticket[i] = -1; /* cancelled: never answered, may still arrive */
        skew_snapshot(&snap, skew);
        struct tds_limiter_handover h = {.skew_ms = skew, .horizon_ms = horizon,
                                         .licence_ms = licence, .call_ms = lat_max,
                                         .stopped = true};
        int before = S.n;
        T_INT(tds_limiter_seed(b, start, &snap, &h), ==, 0);
        tds_limiter_licence(b, INT64_MAX / 4);
        drive_span(b, &S, start, start + 3 * w, 0, lat_max);
        check_window(w, n);
        int64_t got_b = S.n - before;
        T_INT(got_b, >=, 3 * n * 9 / 10 - snap.inflight - 2);
        /* the same record read as a crash's, from the same point */
        S.n = before;
        h.stopped = false;
        T_INT(tds_limiter_seed(c, start, &snap, &h), ==, 0);
        tds_limiter_licence(c, INT64_MAX / 4);
        drive_span(c, &S, start, start + 3 * w, 0, lat_max);
        check_window(w, n);
        sum_b += got_b;
        sum_c += S.n - before;
        tds_limiter_free(a);
        tds_limiter_free(b);
        tds_limiter_free(c);
    }
    /* a crash costs what A could have made after its record; a stop not */
    T_INT(sum_b, >, sum_c + sum_c / 20);
}

/* Licensed, a limiter grants only until its licence ends, and a seed that
 * cannot be read (a full window) holds the first call for a window. */
static void test_licence(void)
{
    struct tds_limiter_cfg cfg = {.rate_per_window = 10, .window_ms = 1000, .max_concurrency = 5,
                                  .needs_licence = true};
    struct tds_limiter *l;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    int64_t wait, ticket;
    T_INT(tds_limiter_acquire(l, 100, &wait, &ticket), ==, TDS_LIMITER_WAIT); /* none yet */
    T_INT(wait, >, 0);
    tds_limiter_licence(l, 1000);
    T_INT(tds_limiter_acquire(l, 100, &wait, &ticket), ==, TDS_LIMITER_GO);
    tds_limiter_release(l, 150, ticket, NULL);
    tds_limiter_licence(l, 500); /* never moved back */
    T_INT(tds_limiter_acquire(l, 999, &wait, &ticket), ==, TDS_LIMITER_GO);
    tds_limiter_release(l, 999, ticket, NULL);
    T_INT(tds_limiter_acquire(l, 1000, &wait, &ticket), ==, TDS_LIMITER_WAIT);
    tds_limiter_licence(l, 100000);
    struct tds_limiter_snapshot full = {.at_ms = 2000, .next_ms = INT64_MIN / 2, .inflight = 10};
    struct tds_limiter_handover none = {0};
    T_INT(tds_limiter_seed(l, 2000, &full, &none), ==, 0);
    T_INT(tds_limiter_acquire(l, 2000, &wait, &ticket), ==, TDS_LIMITER_WAIT);
    T_INT(wait, >=, 1000);
    T_INT(tds_limiter_acquire(l, 3000, &wait, &ticket), ==, TDS_LIMITER_GO);
    tds_limiter_free(l);
}

/* The stand-in full window of a record that could not be read goes once it
 * has been read (tds_limiter_forget): the record's calls then hold their
 * slots, the stand-in none, and a completion after it stays. */
static void test_stand_in_forgotten(void)
{
    struct tds_limiter_cfg cfg = {.rate_per_window = 10, .window_ms = 1000, .max_concurrency = 5};
    struct tds_limiter *l;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    int64_t wait, ticket, mine;
    T_INT(tds_limiter_acquire(l, 1900, &wait, &ticket), ==, TDS_LIMITER_GO);
    mine = ticket; /* in flight across the stand-in */
    struct tds_limiter_snapshot full = {.at_ms = 2000, .next_ms = INT64_MIN / 2, .inflight = 10};
    struct tds_limiter_handover none = {0};
    T_INT(tds_limiter_seed(l, 2000, &full, &none), ==, 0);
    T_INT(tds_limiter_acquire(l, 2100, &wait, &ticket), ==, TDS_LIMITER_WAIT);
    T_INT(wait, >=, 900);
    tds_limiter_release(l, 2150, mine, NULL);
    /* the record, read at 2200: 4 calls answered at 1900 */
    tds_limiter_forget(l, 2000);
    struct tds_limiter_snapshot rec = {.at_ms = 2200, .next_ms = INT64_MIN / 2,
                                       .n_done = 4, .done = (int64_t[]){1900, 1900, 1900, 1900}};
    T_INT(tds_limiter_seed(l, 2200, &rec, &none), ==, 0);
    int64_t got[10];
    struct tds_limiter_snapshot sn = {.done = got};
    tds_limiter_snapshot(l, 2200, &sn);
    T_INT((int64_t)sn.n_done, ==, 5); /* the record's 4 and the call answered at 2150 */
    T_INT(got[4], ==, 2150);
    int granted = 0;
    for (int64_t t = 2200; t < 2800; t += 10) /* paced: one each 100 ms */
        if (tds_limiter_acquire(l, t, &wait, &ticket) == TDS_LIMITER_GO) {
            tds_limiter_release(l, t, ticket, NULL);
            granted++;
        }
    T_INT(granted, ==, 5); /* 10 a window, 5 taken: kept, the stand-in allowed none before 3000 */
    T_INT(tds_limiter_acquire(l, 2800, &wait, &ticket), ==, TDS_LIMITER_WAIT);
    T_INT(2800 + wait, ==, 1900 + 1000); /* the record's calls leave the window first */
    tds_limiter_free(l);
}

/* Calls of a previous owner counted as finished in the future (answered, at
 * the latest, an HTTP timeout after it stopped) hold their slots until then,
 * and only their slots: the new owner's own calls come and go meanwhile. */
static void test_held_slots(void)
{
    struct tds_limiter_cfg cfg = {.rate_per_window = 10, .window_ms = 1000, .max_concurrency = 5};
    struct tds_limiter *l;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    struct tds_limiter_snapshot old = {.at_ms = 10000, .next_ms = INT64_MIN / 2, .inflight = 3};
    struct tds_limiter_handover h = {.call_ms = 5000};
    T_INT(tds_limiter_seed(l, 10000, &old, &h), ==, 0);
    S.n = 0;
    int64_t t = drive_span(l, &S, 10000, 15500, 0, 20);
    T_INT(t, <, 16000);
    struct tds_limiter_snapshot sn = {.done = (int64_t[10]){0}};
    tds_limiter_snapshot(l, t, &sn);
    int late = 0;
    for (size_t i = 0; i < sn.n_done; i++)
        late += sn.done[i] == 15000;
    T_INT(late, ==, 3); /* a successor learns of them too */
    drive_span(l, &S, t, 16000, 0, 20);
    check_window(1000, 10);
    /* 7 a window while the 3 are held (until 16,000), not 7 and then none */
    T_INT(S.n, >=, 6 * 7 - 2);
    T_INT(S.n, <=, 6 * 7 + 1);
    tds_limiter_free(l);
}

/* A record gone stale a little more than a window ago: the previous owner's
 * calls were all made before this window, but one made near the end of its
 * licence can reach Zoho (and finish) up to an HTTP timeout later, inside
 * it, so they count: a quarter window of banked credit and the pacing's. */
static void test_calls_made_before_the_window(void)
{
    struct tds_limiter_cfg cfg = {.rate_per_window = 100, .window_ms = 60000, .max_concurrency = 10};
    struct tds_limiter *l;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    const int64_t at = 100000, now = at + 5000 + 60000 + 10000;
    struct tds_limiter_snapshot old = {.at_ms = at, .next_ms = at - 60000}; /* idle */
    struct tds_limiter_handover h = {.horizon_ms = 1000, .licence_ms = 5000, .call_ms = 30000};
    T_INT(tds_limiter_seed(l, now, &old, &h), ==, 0);
    int64_t held[100];
    struct tds_limiter_snapshot sn = {.done = held};
    tds_limiter_snapshot(l, now, &sn);
    /* its calls until its licence ended (at + 5000) from a quarter window of
     * credit, answered by at + 35000 at the latest: held until a window later */
    T_INT((int64_t)sn.n_done, >=, 25 + 5000 / 600);
    for (size_t i = 0; i < sn.n_done; i++)
        T_INT(held[i], ==, at + 5000 + 30000);
    S.n = 0;
    drive_span(l, &S, now, at + 35000 + 60000, 0, 20);
    T_INT(S.n, <=, 100 - 25 - 5000 / 600);
    tds_limiter_free(l);
}

/* A record from a clock an hour ahead (beyond the skew allowed for): its
 * times move back with it, so its calls hold their slots for a window, not
 * for an hour; a code 44 pause in it moves back too. */
static void test_clock_ahead(void)
{
    struct tds_limiter_cfg cfg = {.rate_per_window = 10, .window_ms = 1000, .max_concurrency = 5};
    struct tds_limiter *l;
    T_INT(tds_limiter_new(&l, &cfg), ==, 0);
    const int64_t ahead = 3600000, now = 50000;
    int64_t done[10];
    for (int i = 0; i < 10; i++)
        done[i] = now + ahead - 900 + i * 10; /* a full window of calls, by its clock */
    struct tds_limiter_snapshot old = {.at_ms = now + ahead, .next_ms = now + ahead + 100,
                                       .pause_until_ms = now + ahead + 300, .n_done = 10,
                                       .done = done};
    struct tds_limiter_handover h = {.skew_ms = 100, .horizon_ms = 500, .licence_ms = 5000,
                                     .call_ms = 200};
    T_INT(tds_limiter_seed(l, now, &old, &h), ==, 0);
    int64_t wait, ticket;
    T_INT(tds_limiter_acquire(l, now, &wait, &ticket), ==, TDS_LIMITER_WAIT);
    /* its window of calls (as late as the skew allows), its calls until the
     * horizon and their answers: a few windows at most, not an hour */
    S.n = 0;
    int64_t t = drive_span(l, &S, now, now + 6000, 0, 20);
    T_INT(t, <, now + 6100);
    T_INT(S.n, >=, 10);
    int64_t first = INT64_MAX;
    for (int i = 0; i < S.n; i++)
        if (S.arrive[i] < first)
            first = S.arrive[i];
    T_INT(first, <, now + 4000);
    tds_limiter_free(l);
}

static void test_backoff(void)
{
    for (int a = 1; a <= 12; a++) {
        for (uint32_t r = 0; r < 2000; r += 7) {
            int64_t d = tds_backoff_ms(a, 500, 30000, r * 2654435761u);
            int64_t full = 500;
            for (int i = 1; i < a; i++)
                full = full * 2 > 30000 ? 30000 : full * 2;
            T_INT(d, >=, full / 2);
            T_INT(d, <=, full);
        }
    }
    T_INT(tds_backoff_ms(1, 500, 30000, 0), ==, 250);
    T_INT(tds_backoff_ms(30, 500, 30000, 0), ==, 15000);
}

static void test_invalid(void)
{
    struct tds_limiter_cfg cfg = {.rate_per_window = 0, .window_ms = 1000, .max_concurrency = 5};
    struct tds_limiter *l = NULL;
    T_INT(tds_limiter_new(&l, &cfg), ==, TDS_E_INVALID);
    T_NULL(tds_limiter_free(NULL));
}

int main(void)
{
    T_RUN(test_minute_exact);
    T_RUN(test_fast_window);
    T_RUN(test_slow_answers);
    T_RUN(test_concurrency);
    T_RUN(test_concurrency_held_elsewhere);
    T_RUN(test_429_minute);
    T_RUN(test_reset_header_out_of_range);
    T_RUN(test_daily);
    T_RUN(test_daily_after_reset);
    T_RUN(test_handover);
    T_RUN(test_handover_stopped);
    T_RUN(test_licence);
    T_RUN(test_stand_in_forgotten);
    T_RUN(test_held_slots);
    T_RUN(test_clock_ahead);
    T_RUN(test_calls_made_before_the_window);
    T_RUN(test_backoff);
    T_RUN(test_invalid);
    return 0;
}
