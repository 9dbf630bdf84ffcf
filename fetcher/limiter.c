/* limiter — per-organization pacing, concurrency cap and daily budget.
 *
 * The per-minute limit is kept two ways at once. Pacing spaces grants
 * window/N apart, so every minute-long interval — however the server counts
 * its windows — holds about N requests. The bound itself: a request is sent
 * only while (requests in flight) + (requests that finished within the last
 * window) < N. A request reaches the server before it finishes, so no
 * server window ever sees N+1, whatever the latency jitter. Never sleeps;
 * callers pass the time and park on a timer.
 */
#include "limiter.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct tds_limiter {
    struct tds_limiter_cfg cfg;
    int64_t *done;          /* FIFO of completion times within the last window */
    size_t done_head, done_n;
    int64_t seq;            /* grants so far (tickets) */
    int64_t next_us;        /* pacing: earliest next grant, microseconds */
    int64_t spacing_us;     /* window / N */
    int64_t bank_us;        /* pacing credit a late grant may use */
    int64_t inflight;
    int64_t cap;            /* current concurrency cap */
    int64_t cap_until_ms;   /* when the lowered cap may rise again */
    int64_t pause_until_ms; /* code 44 */
    int64_t stop_until_ms;  /* code 45 or budget spent */
    int64_t daily_limit;
    int64_t remaining;      /* estimate, -1 unknown */
    int64_t reset_at_ms;    /* daily reset, when reset_known */
    bool reset_known;       /* an X-Rate-Limit-Reset came */
    int daily_busy;         /* code 45s in a row that said the reset is now */
    int conc_busy;          /* 1070s in a row with nothing of ours in flight */
    uint32_t rnd;           /* xorshift32 state for the jitter */
    int64_t licence_until_ms; /* with cfg.needs_licence: no grant from then on */
    /* Slots a previous owner's calls may hold until held_until_ms (they
     * finished, as far as is known, later than now: kept out of the FIFO,
     * where our own completions would queue behind them). */
    int64_t held_n, held_until_ms;
};

int tds_limiter_new(struct tds_limiter **out, const struct tds_limiter_cfg *cfg)
{
    if (cfg->rate_per_window < 1 || cfg->window_ms < 1 || cfg->max_concurrency < 1 ||
        cfg->rate_per_window > 1000000)
        return TDS_E_INVALID;
    struct tds_limiter *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->cfg = *cfg;
    if (l->cfg.margin_ms < 0)
        l->cfg.margin_ms = 0;
    if (l->cfg.concurrency_cooldown_ms <= 0)
        l->cfg.concurrency_cooldown_ms = 30000;
    if (l->cfg.daily_pause_ms <= 0)
        l->cfg.daily_pause_ms = 3600000;
    if (l->cfg.concurrency_backoff_base_ms <= 0)
        l->cfg.concurrency_backoff_base_ms = 1000;
    if (l->cfg.concurrency_backoff_max_ms < l->cfg.concurrency_backoff_base_ms)
        l->cfg.concurrency_backoff_max_ms = l->cfg.concurrency_backoff_base_ms > 30000
                                                ? l->cfg.concurrency_backoff_base_ms
                                                : 30000;
    l->rnd = cfg->seed ? cfg->seed : 0x9e3779b9u;
    l->done = malloc((size_t)cfg->rate_per_window * sizeof(*l->done));
    if (!l->done) {
        tds_limiter_free(l);
        return -ENOMEM;
    }
    l->spacing_us = (cfg->window_ms * 1000 + cfg->rate_per_window - 1) / cfg->rate_per_window;
    /* A quarter window of credit: enough to make up for a stalled loop or
     * a slow answer, small enough that a fixed server window never starts
     * with a burst worth more than a quarter of its allowance. */
    int64_t bank = cfg->rate_per_window / 4;
    if (bank < 1)
        bank = 1;
    l->bank_us = bank * l->spacing_us;
    l->next_us = INT64_MIN / 2;
    l->cap = cfg->max_concurrency;
    l->daily_limit = cfg->daily_limit > 0 ? cfg->daily_limit : 0;
    l->remaining = -1;
    *out = l;
    return 0;
}

struct tds_limiter *tds_limiter_free(struct tds_limiter *l)
{
    if (!l)
        return NULL;
    free(l->done);
    free(l);
    return NULL;
}

/* Forget completions older than a window (plus margin). */
static void expire(struct tds_limiter *l, int64_t now_ms)
{
    size_t n = (size_t)l->cfg.rate_per_window;
    if (l->held_n && l->held_until_ms <= now_ms)
        l->held_n = 0;
    while (l->done_n && l->done[l->done_head] + l->cfg.window_ms + l->cfg.margin_ms <= now_ms) {
        l->done_head = (l->done_head + 1) % n;
        l->done_n--;
    }
}

static void maybe_restore_cap(struct tds_limiter *l, int64_t now_ms)
{
    /* Raise a lowered cap one step per cooldown: another client may still be
     * using the slots that made Zoho say 1070. */
    while (l->cap < l->cfg.max_concurrency && now_ms >= l->cap_until_ms) {
        l->cap++;
        l->cap_until_ms += l->cfg.concurrency_cooldown_ms;
    }
}

static void maybe_daily_reset(struct tds_limiter *l, int64_t now_ms)
{
    if (l->stop_until_ms && now_ms >= l->stop_until_ms) {
        l->stop_until_ms = 0;
        /* The quota refilled, as far as we know; the next headers will say. */
        if (l->daily_limit > 0)
            l->remaining = l->daily_limit;
        else
            l->remaining = -1;
    }
}

/* The daily budget's answer: TDS_LIMITER_GO when it lets a call go,
 * else WAIT or STOPPED with *wait_ms set. */
static int daily_check(struct tds_limiter *l, int64_t now_ms, int64_t *wait_ms)
{
    if (l->remaining < 0 || l->remaining > l->cfg.daily_reserve)
        return TDS_LIMITER_GO;
    /* Spent down to the reserve: the rest belongs to other integrations,
     * until the reset the headers announced. */
    int64_t until;
    if (l->reset_known && l->reset_at_ms > now_ms) {
        until = l->reset_at_ms;
    } else if (l->inflight > 0) {
        /* A reset already past (or none known) is no answer to "until
         * when": the requests still out bring the new figures, so wait
         * for them, not an hour. */
        *wait_ms = -1;
        return TDS_LIMITER_WAIT;
    } else if (l->reset_known && now_ms < l->reset_at_ms + TDS_LIMITER_RESET_GRAIN_MS) {
        /* The header counts whole seconds: the server's day may end up
         * to one later than the reset we worked out. */
        until = l->reset_at_ms + TDS_LIMITER_RESET_GRAIN_MS;
    } else if (l->reset_known) {
        /* The day those figures counted is over, and nothing out can
         * report it any more: how much of the new day is left is not
         * known. One call finds out (its headers say); the others wait
         * for it, since the estimate still reads "spent" until then. */
        return TDS_LIMITER_GO;
    } else {
        /* Spent, and no reset ever announced: a bounded pause, after
         * which the quota counts as refilled and the headers correct it. */
        until = now_ms + l->cfg.daily_pause_ms;
    }
    l->stop_until_ms = until;
    *wait_ms = until - now_ms;
    return TDS_LIMITER_STOPPED;
}

int tds_limiter_acquire(struct tds_limiter *l, int64_t now_ms, int64_t *wait_ms, int64_t *ticket)
{
    *wait_ms = 0;
    *ticket = -1;
    maybe_daily_reset(l, now_ms);
    maybe_restore_cap(l, now_ms);
    if (l->stop_until_ms) {
        *wait_ms = l->stop_until_ms - now_ms;
        return TDS_LIMITER_STOPPED;
    }
    int rc = daily_check(l, now_ms, wait_ms);
    if (rc != TDS_LIMITER_GO)
        return rc;
    if (now_ms < l->pause_until_ms) {
        *wait_ms = l->pause_until_ms - now_ms;
        return TDS_LIMITER_WAIT;
    }
    if (l->cfg.needs_licence && now_ms >= l->licence_until_ms) {
        *wait_ms = 250; /* until the owner's next record of its use */
        return TDS_LIMITER_WAIT;
    }
    if (l->inflight >= l->cap) {
        *wait_ms = -1;
        return TDS_LIMITER_WAIT;
    }
    int64_t now_us = now_ms * 1000;
    if (now_us < l->next_us) {
        int64_t w = (l->next_us - now_us + 999) / 1000;
        *wait_ms = w > 0 ? w : 1;
        return TDS_LIMITER_WAIT;
    }
    /* The bound itself: requests in flight plus requests that finished
     * within the last window. A request reaches the server before it
     * finishes, so every server window holds at most N of them. */
    expire(l, now_ms);
    if (l->inflight + (int64_t)l->done_n + l->held_n >= l->cfg.rate_per_window) {
        int64_t ready = INT64_MAX;
        if (l->done_n)
            ready = l->done[l->done_head] + l->cfg.window_ms + l->cfg.margin_ms;
        if (l->held_n && l->held_until_ms < ready)
            ready = l->held_until_ms;
        if (ready == INT64_MAX) {
            *wait_ms = -1; /* all N in flight: a release will wake us */
            return TDS_LIMITER_WAIT;
        }
        *wait_ms = ready > now_ms ? ready - now_ms : 1;
        return TDS_LIMITER_WAIT;
    }
    *ticket = l->seq;
    l->seq++;
    /* Pacing banks a few spacings, no more: a timer that fires late is made
     * up for, but an idle minute does not turn into a burst. */
    int64_t floor_us = now_us - l->bank_us;
    l->next_us = (l->next_us > floor_us ? l->next_us : floor_us) + l->spacing_us;
    l->inflight++;
    if (l->remaining > 0)
        l->remaining--;
    return TDS_LIMITER_GO;
}

void tds_limiter_outcome_init(struct tds_limiter_outcome *o, enum tds_limiter_event ev)
{
    o->event = ev;
    o->hdr_limit = -1;
    o->hdr_remaining = -1;
    o->hdr_reset_s = -1;
    o->retry_after_s = -1;
}

static uint32_t next_rnd(struct tds_limiter *l)
{
    uint32_t x = l->rnd;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    l->rnd = x;
    return x;
}

void tds_limiter_release(struct tds_limiter *l, int64_t now_ms, int64_t ticket,
                         const struct tds_limiter_outcome *o)
{
    int64_t reset_s;

    if (ticket >= 0) {
        /* Counted as finished now: conservative for a call cancelled
         * after it may have reached the server. */
        expire(l, now_ms);
        size_t n = (size_t)l->cfg.rate_per_window;
        if (l->done_n < n) {
            l->done[(l->done_head + l->done_n) % n] = now_ms;
            l->done_n++;
        } else {
            l->done[l->done_head] = now_ms; /* cannot happen: in flight + done <= N */
            l->done_head = (l->done_head + 1) % n;
        }
        if (l->inflight > 0)
            l->inflight--;
    }
    if (!o)
        return;
    reset_s = o->hdr_reset_s <= TDS_LIMITER_RESET_MAX_S ? o->hdr_reset_s : -1;
    if (o->hdr_limit > 0)
        l->daily_limit = o->hdr_limit;
    if (reset_s >= 0) {
        l->reset_at_ms = now_ms + reset_s * 1000;
        l->reset_known = true;
    }
    if (o->hdr_remaining >= 0) {
        /* Requests still in flight were granted after the server counted
         * this one, or before: assume after, so we never overspend. */
        int64_t est = o->hdr_remaining - l->inflight;
        l->remaining = est < 0 ? 0 : est;
    }
    switch (o->event) {
    case TDS_LIMITER_DONE:
        l->conc_busy = 0;
        l->daily_busy = 0;
        break;
    case TDS_LIMITER_429_MINUTE: {
        /* Retry-After: 0 beside a refusal would send the call straight
         * back into it: taken as absent, one window. */
        int64_t wait = o->retry_after_s > 0 ? o->retry_after_s * 1000 : l->cfg.window_ms;
        if (now_ms + wait > l->pause_until_ms)
            l->pause_until_ms = now_ms + wait;
        break;
    }
    case TDS_LIMITER_429_CONCURRENCY: {
        /* Someone else holds slots too: go below what we had in flight. */
        int64_t c = l->inflight; /* this request already left */
        if (c >= l->cap)
            c = l->cap - 1;
        if (c < 1)
            c = 1;
        l->cap = c;
        l->cap_until_ms = now_ms + l->cfg.concurrency_cooldown_ms;
        /* Nothing of ours in flight: another client holds every slot, and
         * a lower cap changes nothing. Without a pause the call would go
         * out again one pacing step later, and again, for as long as they
         * hold them; back off instead, with jitter so that we do not keep
         * in step with whoever holds them. */
        if (l->inflight == 0) {
            if (l->conc_busy < 30)
                l->conc_busy++;
            int64_t d = tds_backoff_ms(l->conc_busy, l->cfg.concurrency_backoff_base_ms,
                                       l->cfg.concurrency_backoff_max_ms, next_rnd(l));
            if (now_ms + d > l->pause_until_ms)
                l->pause_until_ms = now_ms + d;
        }
        break;
    }
    case TDS_LIMITER_429_DAILY: {
        int64_t wait;
        if (reset_s == 0) {
            /* "Resets within the second": a pause of about that, doubled
             * while the server keeps saying so, never over the hour. */
            if (l->daily_busy < 30)
                l->daily_busy++;
            wait = TDS_LIMITER_RESET_GRAIN_MS;
            for (int i = 1; i < l->daily_busy && wait < l->cfg.daily_pause_ms; i++)
                wait *= 2;
            if (wait > l->cfg.daily_pause_ms)
                wait = l->cfg.daily_pause_ms;
        } else if (reset_s > 0)
            wait = reset_s * 1000;
        else if (o->retry_after_s > 0)
            wait = o->retry_after_s * 1000;
        else if (l->reset_known && l->reset_at_ms > now_ms)
            wait = l->reset_at_ms - now_ms;
        else
            wait = l->cfg.daily_pause_ms;
        l->stop_until_ms = now_ms + wait;
        l->remaining = 0;
        break;
    }
    }
}

int64_t tds_limiter_rate(const struct tds_limiter *l) { return l->cfg.rate_per_window; }

void tds_limiter_snapshot(struct tds_limiter *l, int64_t now_ms, struct tds_limiter_snapshot *s)
{
    expire(l, now_ms);
    size_t n = (size_t)l->cfg.rate_per_window;
    s->at_ms = now_ms;
    s->next_ms = l->next_us <= INT64_MIN / 4 ? INT64_MIN / 2 : l->next_us / 1000;
    s->pause_until_ms = l->pause_until_ms > now_ms ? l->pause_until_ms : 0;
    s->inflight = l->inflight;
    s->n_done = l->done_n;
    for (size_t i = 0; i < l->done_n; i++)
        s->done[i] = l->done[(l->done_head + i) % n];
    /* held slots as completions that expire when they do (after the FIFO's:
     * inflight + done + held never pass n, so they fit) */
    int64_t at_held = l->held_until_ms - l->cfg.window_ms - l->cfg.margin_ms;
    for (int64_t i = 0; i < l->held_n && s->n_done < n; i++)
        s->done[s->n_done++] = at_held;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int tds_limiter_seed(struct tds_limiter *l, int64_t now_ms, const struct tds_limiter_snapshot *s,
                     const struct tds_limiter_handover *h)
{
    size_t n = (size_t)l->cfg.rate_per_window;
    int64_t w = l->cfg.window_ms + l->cfg.margin_ms;
    int64_t skew = h->skew_ms > 0 ? h->skew_ms : 0;
    /* The previous owner's calls after the snapshot: it may go on until it
     * notices it lost the organization (horizon_ms from now at most), and
     * only while its licence lasts (licence_ms after the snapshot, the last
     * record it wrote). Its clock is taken as early as the skew allows. */
    int64_t at = s->at_ms - skew;
    /* A record from the future: its clock is ahead by more than the skew
     * (it was written before now). Its times are then bounded by when its
     * calls can end at the latest, and its pacing is not trusted, or a clock
     * an hour fast would hold the slots for an hour. */
    int64_t ahead = at > now_ms ? at - now_ms : 0;
    if (ahead)
        at = now_ms;
    int64_t horizon = h->horizon_ms > 0 ? h->horizon_ms : 0;
    int64_t call_ms = h->call_ms > 0 ? h->call_ms : 0;
    int64_t latest = now_ms + horizon + call_ms + skew;
    int64_t hi = now_ms + horizon;
    if (h->licence_ms > 0 && at + h->licence_ms + 2 * skew < hi)
        hi = at + h->licence_ms + 2 * skew;
    /* Its last record (a gentle stop): nothing of it started after it, which
     * may be as late as 2 * skew after `at` on this clock (its calls in
     * flight then end no later than that and call_ms). */
    if (h->stopped && at + 2 * skew < hi)
        hi = at + 2 * skew;
    /* Pacing lets the k-th of them go no earlier than b + (k-1) * spacing:
     * b is its next grant or, with the credit it may bank, a quarter window
     * before the part of (at, hi] that can still be in a window. */
    int64_t lo = at > now_ms - w - call_ms ? at : now_ms - w - call_ms;
    int64_t after = 0;
    if (hi > lo && !h->stopped) {
        int64_t b_us = lo * 1000 - l->bank_us;
        if (!ahead && s->next_ms > INT64_MIN / 4 && (s->next_ms - skew) * 1000 > b_us)
            b_us = (s->next_ms - skew) * 1000;
        if (hi * 1000 >= b_us)
            after = (hi * 1000 - b_us) / l->spacing_us + 1;
    }
    /* Those and its calls in flight at the snapshot count as finished when
     * they would have been at the latest (made at the last moment, answered
     * after the longest a call may take), when that is still in a window:
     * a call reaches the server before it finishes. */
    int64_t t_extra = (hi > at ? hi : at) + call_ms;
    int64_t extra = t_extra + w > now_ms ? s->inflight + after : 0;
    if (extra < 0 || extra > (int64_t)n)
        extra = (int64_t)n;
    /* Merge with what this limiter knows itself (an organization it owned
     * before): completions within the window, the recorded ones as late as
     * the skew allows, then the newest n of them all. */
    expire(l, now_ms);
    size_t total = l->done_n + (size_t)l->held_n + s->n_done + (size_t)extra, k = 0;
    int64_t *all = malloc((total ? total : 1) * sizeof(*all));
    if (!all) {
        /* Without room to merge: no grant until all of it is out of the
         * window (later than any of it could end), which needs no memory. */
        int64_t until = (t_extra > latest ? t_extra : latest) + w;
        if (l->held_n && l->held_until_ms > until)
            until = l->held_until_ms;
        if (s->pause_until_ms - ahead > until)
            until = s->pause_until_ms - ahead;
        if (until > l->pause_until_ms)
            l->pause_until_ms = until;
        return -ENOMEM;
    }
    for (size_t i = 0; i < l->done_n; i++)
        all[k++] = l->done[(l->done_head + i) % n];
    for (int64_t i = 0; i < l->held_n; i++)
        all[k++] = l->held_until_ms - w;
    for (size_t i = 0; i < s->n_done; i++) {
        int64_t d = s->done[i] + skew < latest ? s->done[i] + skew : latest;
        if (d + w > now_ms)
            all[k++] = d;
    }
    for (int64_t i = 0; i < extra; i++)
        all[k++] = t_extra;
    qsort(all, k, sizeof(*all), cmp_i64);
    /* The newest n: those finished by now go to the FIFO, the later ones
     * (which our own completions must not queue behind) are held until the
     * last of them expires. */
    size_t first = k > n ? k - n : 0;
    l->done_head = 0;
    l->done_n = 0;
    l->held_n = 0;
    for (size_t i = first; i < k; i++) {
        if (all[i] <= now_ms) {
            l->done[l->done_n++] = all[i];
        } else {
            l->held_n++;
            l->held_until_ms = all[i] + w;
        }
    }
    free(all);
    /* No credit: the first grant now at the earliest, the next a spacing later. */
    if (l->next_us < now_ms * 1000)
        l->next_us = now_ms * 1000;
    /* a pause from a clock ahead keeps what was left of it then */
    int64_t pause = s->pause_until_ms - ahead;
    if (s->pause_until_ms && pause > l->pause_until_ms)
        l->pause_until_ms = pause;
    return 0;
}

void tds_limiter_forget(struct tds_limiter *l, int64_t upto_ms)
{
    /* The FIFO is in time order: releases append the time they happen, and
     * a seed keeps only completions up to its now, sorted. */
    size_t n = (size_t)l->cfg.rate_per_window;
    while (l->done_n && l->done[l->done_head] <= upto_ms) {
        l->done_head = (l->done_head + 1) % n;
        l->done_n--;
    }
}

void tds_limiter_licence(struct tds_limiter *l, int64_t until_ms)
{
    if (until_ms > l->licence_until_ms)
        l->licence_until_ms = until_ms;
}

int64_t tds_limiter_inflight(const struct tds_limiter *l) { return l->inflight; }
int64_t tds_limiter_concurrency_cap(const struct tds_limiter *l) { return l->cap; }
int64_t tds_limiter_remaining(const struct tds_limiter *l) { return l->remaining; }
int64_t tds_limiter_daily_limit(const struct tds_limiter *l) { return l->daily_limit; }
int64_t tds_limiter_granted(const struct tds_limiter *l) { return l->seq; }

bool tds_limiter_stopped(const struct tds_limiter *l, int64_t now_ms)
{
    return l->stop_until_ms != 0 && now_ms < l->stop_until_ms;
}

int64_t tds_backoff_ms(int attempt, int64_t base_ms, int64_t max_ms, uint32_t rnd)
{
    if (attempt < 1)
        attempt = 1;
    int64_t d = base_ms;
    for (int i = 1; i < attempt && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    int64_t half = d / 2;
    return half + (int64_t)(rnd % (uint64_t)(d - half + 1));
}
