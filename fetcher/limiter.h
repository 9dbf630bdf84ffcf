/* limiter — one organization's share of Zoho's API limits, as pure state.
 *
 * Three limits at once: requests per minute (paced evenly, and never
 * more than N in flight or finished within the last window), concurrent requests (a cap that
 * a 1070 lowers for a while), and the daily budget (learned from the
 * X-Rate-Limit-* headers, minus a reserve left for other integrations). It
 * answers "may I send now, and if not, for how long should I wait"; it never
 * sleeps, never reads a clock (callers pass now_ms) and never does I/O.
 * See fetcher/DESIGN.md for the invariants.
 */
#ifndef TDS_FETCHER_LIMITER_H
#define TDS_FETCHER_LIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tds_limiter;

struct tds_limiter_cfg {
    int64_t rate_per_window;   /* N requests per window (Zoho: 100 a minute) */
    int64_t window_ms;         /* 60000 */
    int64_t max_concurrency;   /* 10 on paid plans, 5 on free */
    int64_t daily_limit;       /* 0 = unknown until the headers tell */
    int64_t daily_reserve;     /* requests of the daily quota we leave unused */
    int64_t margin_ms;         /* added to the window for clock granularity; default 5 */
    int64_t concurrency_cooldown_ms; /* how long a 1070 keeps the cap lowered; default 30000 */
    /* The stop after code 45, or at the reserve, when no reset was ever
     * announced (no X-Rate-Limit-Reset, no Retry-After); default 3600000.
     * It also bounds the doubling pauses of a code 45 saying Reset: 0. */
    int64_t daily_pause_ms;
    /* A 1070 that leaves none of our requests in flight (others hold every
     * slot; the cap cannot go lower) pauses for a jittered backoff: [d/2, d],
     * d = base doubling with each such 1070 in a row up to max; an answer
     * that is not a 429 starts it over. Defaults 1000 and 30000. */
    int64_t concurrency_backoff_base_ms;
    int64_t concurrency_backoff_max_ms;
    uint32_t seed;             /* of the jitter; 0 picks a fixed one */
    /* Grant only until the time tds_limiter_licence() last gave: an owner
     * calls only while it keeps a record of its use a successor can read. */
    bool needs_licence;
};

/* X-Rate-Limit-Reset counts whole seconds: the server's day may end up to
 * this much later than the reset worked out from it. */
#define TDS_LIMITER_RESET_GRAIN_MS 1000
/* X-Rate-Limit-Reset counts the seconds to the daily reset: more than a day
 * and an hour is no such count (an epoch time, say) and is taken as absent,
 * or a code 45 would stop the organization for decades. */
#define TDS_LIMITER_RESET_MAX_S (25 * 3600)

enum {
    TDS_LIMITER_GO = 0,      /* send now; *ticket identifies the request for release */
    TDS_LIMITER_WAIT = 1,    /* wait *wait_ms (> 0), or -1: until a request in flight ends */
    TDS_LIMITER_STOPPED = 2, /* daily budget spent: *wait_ms until the daily reset */
};

/* What a finished request tells the limiter. */
enum tds_limiter_event {
    TDS_LIMITER_DONE = 0,        /* any answer that was not a 429 (or a transport failure) */
    TDS_LIMITER_429_MINUTE,      /* code 44 */
    TDS_LIMITER_429_CONCURRENCY, /* code 1070 */
    TDS_LIMITER_429_DAILY,       /* code 45 */
};

struct tds_limiter_outcome {
    enum tds_limiter_event event;
    int64_t hdr_limit;        /* X-Rate-Limit-Limit, -1 when absent */
    int64_t hdr_remaining;    /* X-Rate-Limit-Remaining, -1 when absent */
    int64_t hdr_reset_s;      /* X-Rate-Limit-Reset (seconds to the daily reset), -1 */
    int64_t retry_after_s;    /* Retry-After, -1 when absent */
};

/* Returns 0, TDS_E_INVALID (rate, window or concurrency < 1) or -ENOMEM. */
int tds_limiter_new(struct tds_limiter **out, const struct tds_limiter_cfg *cfg);
struct tds_limiter *tds_limiter_free(struct tds_limiter *l);

/* Ask to send one request at now_ms. On TDS_LIMITER_GO the request counts as
 * in flight until tds_limiter_release(ticket). */
int tds_limiter_acquire(struct tds_limiter *l, int64_t now_ms, int64_t *wait_ms, int64_t *ticket);
/* The request of `ticket` finished at now_ms (answered, failed or cancelled). */
void tds_limiter_release(struct tds_limiter *l, int64_t now_ms, int64_t ticket,
                         const struct tds_limiter_outcome *o);
/* An outcome with every header absent. */
void tds_limiter_outcome_init(struct tds_limiter_outcome *o, enum tds_limiter_event ev);

int64_t tds_limiter_inflight(const struct tds_limiter *l);
int64_t tds_limiter_concurrency_cap(const struct tds_limiter *l);
/* Estimated requests left today (-1 when unknown). */
int64_t tds_limiter_remaining(const struct tds_limiter *l);
int64_t tds_limiter_daily_limit(const struct tds_limiter *l);
/* Requests granted since creation. */
int64_t tds_limiter_granted(const struct tds_limiter *l);
/* True while a code 45 / spent budget stops this organization. */
bool tds_limiter_stopped(const struct tds_limiter *l, int64_t now_ms);

/* What a successor needs to keep the per-minute limit when it takes an
 * organization over (a restart, another replica): the owner reads it every
 * tick and keeps it in tds.quota_use. Times in the caller's clock. */
struct tds_limiter_snapshot {
    int64_t at_ms;          /* when it was taken */
    int64_t next_ms;        /* pacing: earliest next grant; INT64_MIN / 2 before the first */
    int64_t pause_until_ms; /* a code 44's pause, 0 none */
    int64_t inflight;       /* requests granted and not finished */
    size_t n_done;          /* completions still within the window, oldest first */
    int64_t *done;          /* room for tds_limiter_rate() entries, the caller's */
};
int64_t tds_limiter_rate(const struct tds_limiter *l);
void tds_limiter_snapshot(struct tds_limiter *l, int64_t now_ms, struct tds_limiter_snapshot *s);
/* What the taking over may assume of the previous owner. */
struct tds_limiter_handover {
    int64_t skew_ms;    /* between the two owners' clocks */
    int64_t horizon_ms; /* how long after now it may still call (until it notices) */
    int64_t licence_ms; /* how long after its snapshot its licence lasted (0: no licence) */
    int64_t call_ms;    /* the longest one of its calls may take (its HTTP timeout) */
    bool stopped;       /* the snapshot is its last: no call of it started after it */
};
/* Take over from a previous owner's snapshot (converted to this clock),
 * merged with what this limiter knows itself: the snapshot's completions
 * within the window count as they were (as late as the skew allows), and
 * its calls in flight then, plus every call its pacing could have granted
 * from the snapshot until it stopped (the horizon, or the end of its
 * licence; with `stopped`, none), count as finished at the latest time
 * they could have been answered (made last, taking call_ms). Pacing starts again with no credit;
 * a code 44 pause carries over. A snapshot taken later than now (its clock
 * ahead by more than the skew) has all its times moved back to now.
 * Returns 0, or -ENOMEM: then the limiter only pauses until all of it can
 * have left the window (nothing is merged). */
int tds_limiter_seed(struct tds_limiter *l, int64_t now_ms, const struct tds_limiter_snapshot *s,
                     const struct tds_limiter_handover *h);
/* Forget the completions recorded at or before upto_ms: a stand-in seeded
 * when a previous owner's record could not be read (a full window at that
 * moment, tds_limiter_seed with inflight = rate), once the record has been
 * read after all. Completions after upto_ms, pacing, pauses and the calls in
 * flight stay as they are. */
void tds_limiter_forget(struct tds_limiter *l, int64_t upto_ms);
/* With cfg.needs_licence: grants are allowed until until_ms (never moved back). */
void tds_limiter_licence(struct tds_limiter *l, int64_t until_ms);
/* Exponential backoff with jitter for retry `attempt` (1-based): a value in
 * [d/2, d] where d = min(max_ms, base_ms * 2^(attempt-1)); rnd is any 32-bit
 * random value (callers pass one, tests pass fixed ones). */
int64_t tds_backoff_ms(int attempt, int64_t base_ms, int64_t max_ms, uint32_t rnd);

#endif
