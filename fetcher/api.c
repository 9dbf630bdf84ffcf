/* api — token + limiter + HTTP + retries for one organization's GETs.
 *
 * Queue discipline: FIFO, except that a call waiting out its backoff lets
 * later calls pass. pump() sends while the token, the limiter and the queue
 * allow, then arms one timer for the earliest moment something may change;
 * completions and token refreshes call pump() again.
 */
#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "events.h"
#include "http.h"
#include "limiter.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "oauth.h"
#include "store.h"
#include "util.h"

struct call {
    struct tds_api *a;
    char *endpoint;
    char *path;
    char *query;
    tds_api_cb cb;
    void *ud;
    int attempts;       /* transient failures so far */
    int auth_refreshes; /* forced refreshes for this call */
    int auth_same_token; /* code 57 under 200 retried without a refresh */
    bool denied;        /* finished because the endpoint is refused to the token */
    bool paused;        /* finished unsent: the organization is paused */
    bool last_try;      /* withdrawn while in flight: its answer is final */
    int max_attempts;   /* tries on a 5xx or transport failure; 0: the configured ones */
    int64_t not_before_ms;
    int64_t ticket;
    int64_t sent_ms;
    int64_t sent_wall_ms; /* the same moment on the wall clock (pages' observed time) */
    int64_t zoho_sent_s; /* the answered attempt's sending on Zoho's clock, at the
                          * earliest (its Date less the call's time); -1: no Date */
    char *token;        /* the token it was sent with */
    struct tds_http_call *http;
    struct call *next, *prev;
};

/* The clock lead's windows: 10 s each, 60 kept (10 minutes). */
#define LEAD_WINDOW_MS (10 * 1000)
#define LEAD_WINDOWS 60

struct tds_api {
    struct tds_loop *loop;
    struct tds_http *http;
    struct tds_oauth *oauth;
    struct tds_limiter *lim;
    const struct tds_org *org;
    struct tds_store *store;
    struct tds_metrics *metrics;
    struct tds_events *events;
    struct tds_api_cfg cfg;
    struct tds_log_ctx lctx;
    char *org_label;
    const char *base_path;

    struct call *qhead, *qtail; /* waiting */
    struct call *running;       /* sent */
    size_t n_queued, n_running;
    int64_t timer_id, timer_at;
    int64_t calls;
    bool daily_alerted;
    int paused;
    bool pumping;
    struct tds_log_limit wait_log;
    struct tds_log_limit domain_log;

    struct tds_series *m_quota, *m_seconds;

    /* How far this host's clock runs ahead of Zoho's, in seconds: each
     * answer with a Date bounds it from above (tds_api_clock_lead). A ring
     * of windows, each with the least bound its answers gave. */
    struct {
        int64_t start_ms; /* monotonic, 0: unused */
        int64_t min;
    } lead_win[LEAD_WINDOWS];
    size_t lead_cur;

    /* Endpoints refused to a token that works (a missing scope): their calls
     * fail at once until retry_ms, then one is sent to ask again. */
    struct denial *denials;
    size_t n_denials;
};

/* Code 57 comes for a dead token and for a token whose scope lacks the
 * module alike. Once the token is known to be good (it answers other calls,
 * or a fresh one is refused too), a refused endpoint is a missing scope: no
 * retry or refresh mends it, so it is not asked again for a long while. */
#define DENY_BACKOFF_MS (15 * 60 * 1000)
#define DENY_BACKOFF_MAX_MS (60 * 60 * 1000)

struct denial {
    char *endpoint;
    char *error;
    int64_t backoff_ms;
    int64_t retry_ms; /* monotonic */
};

static void pump(struct tds_api *a);

/* bound: this host's clock when a call went out, rounded up, less Zoho's
 * at the earliest then (its Date less the call's time): the lead is at most
 * that. A slow call loosens the bound, never lowers it below the truth, so
 * the least of a window's is the closest. floor: the lead is at least that
 * (this host's clock then, less Zoho's at the latest, its Date and a
 * second); one above the window's least bound means the lead grew (a clock
 * stepped), and a new window starts with it at once. */
static void clock_lead_add(struct tds_api *a, int64_t now, int64_t floor, int64_t bound)
{
    if (!now)
        now = 1;
    int64_t start = a->lead_win[a->lead_cur].start_ms;
    if (start && now - start < LEAD_WINDOW_MS && floor <= a->lead_win[a->lead_cur].min) {
        if (bound < a->lead_win[a->lead_cur].min)
            a->lead_win[a->lead_cur].min = bound;
        return;
    }
    if (start)
        a->lead_cur = (a->lead_cur + 1) % LEAD_WINDOWS;
    a->lead_win[a->lead_cur].start_ms = now;
    a->lead_win[a->lead_cur].min = bound;
}

/* The greatest of the windows' least bounds within LEAD_WINDOWS windows of
 * time, erring high: a lead that grows shows within a window, one that
 * shrinks only once the windows of the larger one have aged out (items
 * fetched then carry it). Without a window that recent, the newest one. */
bool tds_api_clock_lead(const struct tds_api *a, int64_t *lead_s)
{
    const int64_t now = tds_now_ms();
    if (!a->lead_win[a->lead_cur].start_ms)
        return false;
    *lead_s = a->lead_win[a->lead_cur].min;
    for (size_t i = 0; i < LEAD_WINDOWS; i++)
        if (a->lead_win[i].start_ms && now - a->lead_win[i].start_ms < LEAD_WINDOWS * LEAD_WINDOW_MS &&
            a->lead_win[i].min > *lead_s)
            *lead_s = a->lead_win[i].min;
    return true;
}

static void call_free(struct call *c)
{
    if (!c)
        return;
    free(c->endpoint);
    free(c->path);
    free(c->query);
    free(c->token);
    free(c);
}

static void q_remove(struct tds_api *a, struct call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        a->qhead = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        a->qtail = c->prev;
    c->next = c->prev = NULL;
    a->n_queued--;
}

static void q_push(struct tds_api *a, struct call *c, bool front)
{
    if (front) {
        c->prev = NULL;
        c->next = a->qhead;
        if (a->qhead)
            a->qhead->prev = c;
        else
            a->qtail = c;
        a->qhead = c;
    } else {
        c->next = NULL;
        c->prev = a->qtail;
        if (a->qtail)
            a->qtail->next = c;
        else
            a->qhead = c;
        a->qtail = c;
    }
    a->n_queued++;
}

static void r_add(struct tds_api *a, struct call *c)
{
    c->prev = NULL;
    c->next = a->running;
    if (a->running)
        a->running->prev = c;
    a->running = c;
    a->n_running++;
}

static void r_remove(struct tds_api *a, struct call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        a->running = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    a->n_running--;
}

int tds_api_new(struct tds_api **out, struct tds_loop *loop, struct tds_http *http,
                struct tds_oauth *oauth, struct tds_limiter *limiter, const struct tds_org *org,
                struct tds_store *store, struct tds_metrics *metrics, struct tds_events *events,
                const struct tds_api_cfg *cfg)
{
    struct tds_api *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->loop = loop;
    a->http = http;
    a->oauth = oauth;
    a->lim = limiter;
    a->org = org;
    a->store = store;
    a->metrics = metrics;
    a->events = events;
    a->cfg = *cfg;
    if (a->cfg.timeout_ms <= 0)
        a->cfg.timeout_ms = 30000;
    if (a->cfg.max_attempts <= 0)
        a->cfg.max_attempts = 6;
    if (a->cfg.backoff_base_ms <= 0)
        a->cfg.backoff_base_ms = 500;
    if (a->cfg.backoff_max_ms <= 0)
        a->cfg.backoff_max_ms = 30000;
    a->lctx.org = org->org_id;
    a->wait_log.interval_ms = 60000;
    a->domain_log.interval_ms = 60000;
    a->base_path = tds_org_books(org) ? "/books/v3" : "/inventory/v1";
    a->org_label = tds_metrics_escape(org->org_id);
    if (!a->org_label) {
        free(a);
        return -ENOMEM;
    }
    /* tds_fetcher_quota_remaining{org} is made at the first figure Zoho
     * gives (quota_seen): made here it read 0 until then, which the alert
     * rules took for a day's quota spent (an org paused by a refused token
     * never calls). */
    if (metrics)
        a->m_seconds = tds_metrics_get(metrics, TDS_HISTOGRAM, "tds_fetcher_api_seconds",
                                       "Zoho API call latency", "", NULL, 0);
    *out = a;
    return 0;
}

void tds_api_cancel_all(struct tds_api *a)
{
    /* Callbacks run with a failure so their owners can free what they hold;
     * owners that are shutting down know to do only that. */
    struct tds_api_result r = {TDS_ZAPI_FATAL, -1, 0, "", 0, "cancelled", 0, false, false, -1};
    while (a->qhead) {
        struct call *c = a->qhead;
        q_remove(a, c);
        tds_api_cb cb = c->cb;
        void *ud = c->ud;
        call_free(c);
        if (cb)
            cb(&r, ud);
    }
    while (a->running) {
        struct call *c = a->running;
        r_remove(a, c);
        if (c->http)
            tds_http_cancel(a->http, c->http);
        struct tds_limiter_outcome o;
        tds_limiter_outcome_init(&o, TDS_LIMITER_DONE);
        tds_limiter_release(a->lim, tds_now_ms(), c->ticket, &o);
        tds_api_cb cb = c->cb;
        void *ud = c->ud;
        call_free(c);
        if (cb)
            cb(&r, ud);
    }
    if (a->timer_id > 0)
        tds_loop_timer_cancel(a->loop, a->timer_id);
    a->timer_id = 0;
}

size_t tds_api_withdraw(struct tds_api *a, tds_api_match_cb match, tds_api_match_cb dispose,
                        void *arg)
{
    size_t n = 0;
    for (struct call *c = a->qhead, *next; c; c = next) {
        next = c->next;
        if (!match(c->cb, c->ud, arg))
            continue;
        q_remove(a, c);
        dispose(c->cb, c->ud, arg);
        call_free(c);
        n++;
    }
    for (struct call *c = a->running; c; c = c->next)
        if (match(c->cb, c->ud, arg))
            c->last_try = true;
    return n;
}

static struct denial *denial_find(struct tds_api *a, const char *endpoint)
{
    for (size_t i = 0; i < a->n_denials; i++)
        if (strcmp(a->denials[i].endpoint, endpoint) == 0)
            return &a->denials[i];
    return NULL;
}

static void denial_drop(struct tds_api *a, struct denial *d)
{
    free(d->endpoint);
    free(d->error);
    *d = a->denials[--a->n_denials];
}

bool tds_api_denial_at(const struct tds_api *a, size_t i, const char **endpoint, const char **error,
                       int64_t *retry_in_ms)
{
    if (i >= a->n_denials)
        return false;
    const struct denial *d = &a->denials[i];
    *endpoint = d->endpoint;
    *error = d->error;
    int64_t left = d->retry_ms - tds_now_ms();
    *retry_in_ms = left > 0 ? left : 0;
    return true;
}

/* The OAuth scope a path needs, as Zoho names it ("ZohoInventory.invoices.READ"):
 * the first path segment, except that settings pages and locations need
 * settings, and item groups and the batch item call need items. Zoho Books
 * has no items scope: its items come under settings (its API reference
 * gives ZohoBooks.settings.* for every items call). */
static void scope_of(const struct tds_api *a, const char *path, char *out, size_t cap)
{
    const char *p = path[0] == '/' ? path + 1 : path;
    size_t l = strcspn(p, "/?");
    const char *mod = p;
    bool books = strcmp(a->base_path, "/books/v3") == 0;
    if ((l == 8 && strncmp(p, "settings", 8) == 0) || (l == 9 && strncmp(p, "locations", 9) == 0))
        mod = "settings", l = 8;
    else if (l > 4 && strncmp(p, "item", 4) == 0)
        mod = books ? "settings" : "items", l = books ? 8 : 5;
    snprintf(out, cap, "%s.%.*s.READ", books ? "ZohoBooks" : "ZohoInventory",
             (int)(l > 64 ? 64 : l), mod);
}

/* Record (or extend) that the endpoint of c is refused to a working token.
 * Returns the denial, NULL when out of memory (the call then fails with the
 * same words, only the backoff is lost). */
static struct denial *deny(struct tds_api *a, struct call *c, int64_t code, int64_t now)
{
    struct denial *d = denial_find(a, c->endpoint);
    if (!d) {
        struct denial *nd = realloc(a->denials, (a->n_denials + 1) * sizeof(*nd));
        if (!nd)
            return NULL;
        a->denials = nd;
        d = &nd[a->n_denials];
        memset(d, 0, sizeof(*d));
        if (!(d->endpoint = strdup(c->endpoint)))
            return NULL;
        a->n_denials++;
    }
    d->backoff_ms = d->backoff_ms ? d->backoff_ms * 2 : DENY_BACKOFF_MS;
    if (d->backoff_ms > DENY_BACKOFF_MAX_MS)
        d->backoff_ms = DENY_BACKOFF_MAX_MS;
    d->retry_ms = now + d->backoff_ms;
    char scope[96];
    scope_of(a, c->path, scope, sizeof(scope));
    struct tds_buf e = {0};
    if (tds_buf_addf(&e,
                     "zoho refuses %s to this token (code %lld, not authorized) while the token "
                     "is good: its scope probably lacks %s; grant it and run 'tds-fetcher auth "
                     "exchange'; asked again in %lld min",
                     c->endpoint, (long long)code, scope, (long long)(d->backoff_ms / 60000)) == 0) {
        free(d->error);
        d->error = e.p;
    } else {
        tds_buf_deinit(&e);
    }
    tds_log(TDS_LOG_ERROR, &a->lctx, "%s", d->error ? d->error : c->endpoint);
    tds_events_emit(a->events, "tds.zoho.api.denied", "org", a->org->org_id, "endpoint", c->endpoint,
                    "scope", scope, NULL);
    return d;
}

static void count_denied(struct tds_api *a, struct call *c)
{
    if (!a->metrics)
        return;
    char *ep = tds_metrics_escape(c->endpoint);
    if (!ep)
        return;
    struct tds_series *s = tds_metrics_getf(
        a->metrics, TDS_COUNTER, "tds_fetcher_api_denied_total",
        "Zoho API calls failed because the token may not reach the endpoint (code 57, missing scope)",
        "org=\"%s\",endpoint=\"%s\"", a->org_label, ep);
    free(ep);
    if (s)
        tds_series_inc(s, 1);
}

struct tds_api *tds_api_free(struct tds_api *a)
{
    if (!a)
        return NULL;
    tds_api_cancel_all(a);
    while (a->n_denials)
        denial_drop(a, &a->denials[0]);
    free(a->denials);
    free(a->org_label);
    free(a);
    return NULL;
}

static int api_get(struct tds_api *a, const char *endpoint, const char *path, const char *query,
                   tds_api_cb cb, void *ud, bool front, int max_attempts)
{
    struct call *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->a = a;
    c->max_attempts = max_attempts;
    c->cb = cb;
    c->ud = ud;
    c->ticket = -1;
    c->zoho_sent_s = -1;
    c->endpoint = strdup(endpoint);
    c->path = strdup(path);
    c->query = query ? strdup(query) : NULL;
    if (!c->endpoint || !c->path || (query && !c->query)) {
        call_free(c);
        return -ENOMEM;
    }
    q_push(a, c, front);
    pump(a);
    return 0;
}

int tds_api_get(struct tds_api *a, const char *endpoint, const char *path, const char *query,
                tds_api_cb cb, void *ud)
{
    return api_get(a, endpoint, path, query, cb, ud, false, 0);
}

int tds_api_get_first(struct tds_api *a, const char *endpoint, const char *path, const char *query,
                      tds_api_cb cb, void *ud)
{
    return api_get(a, endpoint, path, query, cb, ud, true, 0);
}

int tds_api_get_once(struct tds_api *a, const char *endpoint, const char *path, const char *query,
                     tds_api_cb cb, void *ud)
{
    return api_get(a, endpoint, path, query, cb, ud, false, 1);
}

static void on_timer(struct tds_loop *loop, void *ud)
{
    (void)loop;
    struct tds_api *a = ud;
    a->timer_id = 0;
    pump(a);
}

static void arm(struct tds_api *a, int64_t now, int64_t wait_ms)
{
    if (wait_ms < 1)
        wait_ms = 1;
    int64_t at = now + wait_ms;
    if (a->timer_id > 0) {
        if (a->timer_at <= at)
            return;
        tds_loop_timer_cancel(a->loop, a->timer_id);
        a->timer_id = 0;
    }
    int64_t id = tds_loop_timer_add(a->loop, wait_ms, 0, on_timer, a);
    if (id > 0) {
        a->timer_id = id;
        a->timer_at = at;
    }
}

static void finish(struct tds_api *a, struct call *c, enum tds_zapi_class cls, int64_t code, long status,
                   const char *body, size_t len, const char *error)
{
    struct tds_api_result r = {cls, code, status, body ? body : "", body ? len : 0, error,
                               c->sent_wall_ms, c->denied, c->paused, c->zoho_sent_s};
    if (cls != TDS_ZAPI_OK && cls != TDS_ZAPI_NOTFOUND) {
        char st[16];
        snprintf(st, sizeof(st), "%ld", status);
        tds_events_emit(a->events, "tds.zoho.api.failed", "org", a->org->org_id, "endpoint",
                        c->endpoint, "status", st, "error", error, NULL);
    }
    tds_api_cb cb = c->cb;
    void *ud = c->ud;
    call_free(c);
    if (cb)
        cb(&r, ud);
}

static void on_done(const struct tds_http_resp *resp, void *ud);

static void send_call(struct tds_api *a, struct call *c, const char *token, const char *api_domain,
                      int64_t now)
{
    const char *base = a->org->api_url && *a->org->api_url ? a->org->api_url : api_domain;
    struct tds_buf url = {.max = 8192};
    char *oid = tds_http_escape(a->org->org_id);
    int rc = oid ? tds_buf_addf(&url, "%s%s%s?organization_id=%s%s%s", base ? base : "", a->base_path,
                                c->path, oid, c->query ? "&" : "", c->query ? c->query : "")
                 : -ENOMEM;
    free(oid);
    struct tds_buf auth = {0};
    if (rc == 0)
        rc = tds_buf_addf(&auth, "Authorization: Zoho-oauthtoken %s", token);
    free(c->token);
    c->token = strdup(token);
    const char *hdrs[] = {auth.p, "Accept: application/json", NULL};
    if (rc == 0 && c->token)
        rc = tds_http_request(a->http, url.p, hdrs, NULL, a->cfg.timeout_ms, on_done, c, &c->http);
    else if (rc == 0)
        rc = -ENOMEM;
    tds_buf_deinit(&url);
    tds_buf_deinit(&auth);
    if (rc != 0) {
        struct tds_limiter_outcome o;
        tds_limiter_outcome_init(&o, TDS_LIMITER_DONE);
        tds_limiter_release(a->lim, now, c->ticket, &o);
        c->ticket = -1;
        c->attempts++;
        c->not_before_ms = now + 1000;
        q_push(a, c, true);
        return;
    }
    c->sent_ms = now;
    c->sent_wall_ms = tds_wall_ms();
    a->calls++;
    r_add(a, c);
}

static void pump(struct tds_api *a)
{
    if (a->pumping)
        return; /* a callback re-entered: the outer loop carries on */
    a->pumping = true;
    while (a->qhead) {
        int64_t now = tds_now_ms();
        /* the first call whose backoff is over */
        struct call *c = a->qhead;
        int64_t earliest = INT64_MAX;
        while (c && c->not_before_ms > now) {
            if (c->not_before_ms < earliest)
                earliest = c->not_before_ms;
            c = c->next;
        }
        if (!c) {
            arm(a, now, earliest - now);
            break;
        }
        struct denial *den = denial_find(a, c->endpoint);
        if (den && now < den->retry_ms) {
            /* refused for want of a scope: not asked again before retry_ms */
            q_remove(a, c);
            count_denied(a, c);
            c->denied = true;
            finish(a, c, TDS_ZAPI_AUTH, 57, 0, NULL, 0, den->error ? den->error : "not authorized");
            continue;
        }
        const char *token, *domain;
        int64_t wait;
        int orc = tds_oauth_get(a->oauth, tds_wall_ms(), &token, &domain, &wait);
        a->paused = orc == TDS_OAUTH_PAUSED;
        if (orc == TDS_OAUTH_PAUSED) {
            /* Credentials are bad: the queued calls cannot succeed until
             * an operator fixes them. Marked paused: Zoho never saw them,
             * so an owner that would give a fatal answer up asks again. */
            while (a->qhead) {
                struct call *d = a->qhead;
                q_remove(a, d);
                d->paused = true;
                finish(a, d, TDS_ZAPI_FATAL, -1, 0, NULL, 0, "organization paused: invalid credentials");
            }
            break;
        }
        if (orc != TDS_OAUTH_READY) {
            arm(a, now, wait > 0 ? wait : 500);
            break;
        }
        if (!domain && !(a->org->api_url && *a->org->api_url)) {
            /* No api_domain, not even a data center's default (oauth gives
             * one whenever data_center is known). The token is good: keep
             * it, and wait rather than refresh it away. */
            tds_log_limited(&a->domain_log, TDS_LOG_ERROR, &a->lctx,
                            "no API domain for the token and no api_url configured, waiting");
            arm(a, now, 60000);
            break;
        }
        int64_t ticket;
        int lrc = tds_limiter_acquire(a->lim, now, &wait, &ticket);
        if (lrc == TDS_LIMITER_STOPPED) {
            if (!a->daily_alerted) {
                a->daily_alerted = true;
                tds_log(TDS_LOG_WARN, &a->lctx,
                        "daily API budget spent (reserve %lld kept), pausing for %lld s",
                        (long long)a->org->daily_reserve, (long long)(wait / 1000));
                tds_events_emit(a->events, "tds.zoho.api.failed", "org", a->org->org_id, "reason",
                                "daily_limit", NULL);
                tds_store_alert(a->store, "zoho_daily_limit", "warning", a->org->org_id, NULL,
                                "Zoho daily API budget spent; fetching paused until the daily reset");
            }
            arm(a, now, wait > 60000 ? 60000 : wait);
            break;
        }
        a->daily_alerted = false;
        if (lrc == TDS_LIMITER_WAIT) {
            if (wait > 0)
                arm(a, now, wait);
            /* wait < 0: a completion will pump */
            break;
        }
        q_remove(a, c);
        c->ticket = ticket;
        send_call(a, c, token, domain, now);
    }
    a->pumping = false;
}

static void count(struct tds_api *a, struct call *c, const char *status)
{
    if (!a->metrics)
        return;
    char *ep = tds_metrics_escape(c->endpoint);
    if (!ep)
        return;
    struct tds_series *s = tds_metrics_getf(a->metrics, TDS_COUNTER, "tds_fetcher_api_calls_total",
                                            "Zoho API calls by organization, endpoint and status",
                                            "org=\"%s\",endpoint=\"%s\",status=\"%s\"", a->org_label,
                                            ep, status);
    free(ep);
    if (s)
        tds_series_inc(s, 1);
}

static void count_429(struct tds_api *a, int64_t code)
{
    if (!a->metrics)
        return;
    struct tds_series *s = tds_metrics_getf(a->metrics, TDS_COUNTER, "tds_fetcher_429_total",
                                            "Zoho 429 answers by organization and code",
                                            "org=\"%s\",code=\"%lld\"", a->org_label,
                                            (long long)(code < 0 ? 44 : code));
    if (s)
        tds_series_inc(s, 1);
}

static void on_done(const struct tds_http_resp *resp, void *ud)
{
    struct call *c = ud;
    struct tds_api *a = c->a;
    c->http = NULL;
    r_remove(a, c);
    int64_t now = tds_now_ms();
    int64_t code;
    enum tds_zapi_class cls = tds_zoho_classify(resp->transport_ok, resp->status, resp->body,
                                                resp->len, &code);
    /* Zoho's clock when the call went out, at the earliest; a Date more
     * than a day from this host's (an intermediary's, or bogus) is none */
    c->zoho_sent_s = resp->date_s >= 0 && llabs(resp->date_s - tds_wall_ms() / 1000) <= 86400
                         ? resp->date_s - (int64_t)resp->seconds - 1
                         : -1;
    if (c->zoho_sent_s >= 0 && c->sent_wall_ms > 0)
        clock_lead_add(a, now, c->sent_wall_ms / 1000 - (resp->date_s + 1),
                       (c->sent_wall_ms + 999) / 1000 - c->zoho_sent_s);
    struct tds_limiter_outcome o;
    tds_limiter_outcome_init(&o, TDS_LIMITER_DONE);
    if (cls == TDS_ZAPI_RATE_MINUTE)
        o.event = TDS_LIMITER_429_MINUTE;
    else if (cls == TDS_ZAPI_RATE_CONCURRENCY)
        o.event = TDS_LIMITER_429_CONCURRENCY;
    else if (cls == TDS_ZAPI_RATE_DAILY)
        o.event = TDS_LIMITER_429_DAILY;
    o.hdr_limit = resp->rl_limit;
    o.hdr_remaining = resp->rl_remaining;
    o.hdr_reset_s = resp->rl_reset_s;
    o.retry_after_s = resp->retry_after_s;
    tds_limiter_release(a->lim, now, c->ticket, &o);
    c->ticket = -1;
    if (a->metrics && !a->m_quota && tds_limiter_remaining(a->lim) >= 0)
        a->m_quota = tds_metrics_getf(a->metrics, TDS_GAUGE, "tds_fetcher_quota_remaining",
                                      "Zoho API calls left today (from X-Rate-Limit-Remaining)",
                                      "org=\"%s\"", a->org_label);
    if (a->m_quota && tds_limiter_remaining(a->lim) >= 0)
        tds_series_set(a->m_quota, (double)tds_limiter_remaining(a->lim));
    if (a->m_seconds)
        tds_series_observe(a->m_seconds, resp->seconds);
    char st[16];
    if (resp->transport_ok)
        snprintf(st, sizeof(st), "%ld", resp->status);
    else
        snprintf(st, sizeof(st), "error");
    count(a, c, st);

    if (c->last_try && cls != TDS_ZAPI_OK && cls != TDS_ZAPI_NOTFOUND) {
        /* withdrawn in flight (its owner gave up): no retry, no refresh */
        char err[TDS_HTTP_ERR_MAX + 96];
        snprintf(err, sizeof(err), "%s failed (%s), not tried again: withdrawn", c->endpoint,
                 resp->transport_ok ? tds_zapi_class_name(cls) : resp->error);
        finish(a, c, cls, code, resp->status, resp->body, resp->len, err);
        pump(a);
        return;
    }
    switch (cls) {
    case TDS_ZAPI_OK:
    case TDS_ZAPI_NOTFOUND: {
        tds_oauth_worked(a->oauth, c->token, c->sent_wall_ms);
        struct denial *d = denial_find(a, c->endpoint);
        if (d) {
            tds_log(TDS_LOG_INFO, &a->lctx, "zoho answers %s again: no longer refused", c->endpoint);
            denial_drop(a, d);
        }
        tds_events_emit(a->events, "tds.zoho.api.success", "org", a->org->org_id, "endpoint",
                        c->endpoint, NULL);
        finish(a, c, cls, code, resp->status, resp->body, resp->len, NULL);
        break;
    }
    case TDS_ZAPI_RATE_MINUTE:
    case TDS_ZAPI_RATE_CONCURRENCY:
    case TDS_ZAPI_RATE_DAILY:
        count_429(a, code);
        tds_log_limited(&a->wait_log, TDS_LOG_WARN, &a->lctx,
                        "zoho answered 429 code %lld on %s, backing off", (long long)code, c->endpoint);
        q_push(a, c, true);
        break;
    case TDS_ZAPI_AUTH: {
        /* Zoho answers code 57 both to a dead token and to a token whose
         * scope lacks this module. A refusal drops the token only while
         * nothing says it is good (tds_oauth_refused): one refused module
         * must not cost every other call its token and the organization its
         * few refreshes. */
        struct denial *d = denial_find(a, c->endpoint);
        int verdict = TDS_OAUTH_REFUSAL_KEPT;
        if (!d && resp->status == 200 && c->auth_same_token < 1) {
            /* Code 57 under HTTP 200 has been seen with tokens that were
             * fine: ask once more before spending one of the few refreshes. */
            c->auth_same_token++;
            c->not_before_ms = now + 200;
            q_push(a, c, true);
            break;
        }
        if (!d && c->auth_refreshes < 1)
            verdict = tds_oauth_refused(a->oauth, c->token, c->sent_wall_ms, tds_wall_ms());
        if (verdict != TDS_OAUTH_REFUSAL_KEPT) {
            c->auth_refreshes++;
            if (verdict == TDS_OAUTH_REFUSAL_DROPPED)
                tds_log(TDS_LOG_INFO, &a->lctx,
                        "zoho refused the access token (code %lld on %s), refreshing once",
                        (long long)code, c->endpoint);
            q_push(a, c, true);
        } else if (!d && ++c->attempts < a->cfg.max_attempts) {
            /* The token is good: a transient refusal mends on a retry, a
             * missing scope does not. Back off like any other failure. */
            int64_t dl = tds_backoff_ms(c->attempts, a->cfg.backoff_base_ms, a->cfg.backoff_max_ms,
                                        (uint32_t)rand());
            tds_log(TDS_LOG_WARN, &a->lctx,
                    "%s refused (code %lld) to a token that is good, retrying in %lld ms",
                    c->endpoint, (long long)code, (long long)dl);
            c->not_before_ms = now + dl;
            q_push(a, c, false);
        } else {
            d = deny(a, c, code, now);
            count_denied(a, c);
            c->denied = true;
            finish(a, c, cls, code, resp->status, resp->body, resp->len,
                   d && d->error ? d->error : "zoho refused the call to a good token (code 57: missing scope?)");
        }
        break;
    }
    case TDS_ZAPI_RETRY:
        /* A transport failure (no connection, a timeout) says nothing about
         * the token: it is kept and the call backs off like a 5xx. Before, a
         * network outage dropped a token with an hour to live and its
         * refresh retries spent the refresh budget. The api_domain may have
         * moved, though: oauth asks the accounts server at most once per 10
         * minutes, keeping the token meanwhile. */
        if (resp->no_connect && !(a->org->api_url && *a->org->api_url) && c->token)
            tds_oauth_unreachable(a->oauth, c->token, tds_wall_ms());
        c->attempts++;
        if (c->attempts >= (c->max_attempts > 0 ? c->max_attempts : a->cfg.max_attempts)) {
            char err[TDS_HTTP_ERR_MAX + 96];
            snprintf(err, sizeof(err), "%s failed %d times, last: %s", c->endpoint, c->attempts,
                     resp->transport_ok ? "server error or truncated body" : resp->error);
            if (resp->transport_ok)
                snprintf(err, sizeof(err), "%s failed %d times, last: HTTP %ld (%s)", c->endpoint,
                         c->attempts, resp->status,
                         resp->status >= 500 ? "server error" : "truncated or invalid body");
            finish(a, c, cls, code, resp->status, resp->body, resp->len, err);
        } else {
            int64_t d = tds_backoff_ms(c->attempts, a->cfg.backoff_base_ms, a->cfg.backoff_max_ms,
                                       (uint32_t)rand());
            tds_log(TDS_LOG_WARN, &a->lctx, "%s failed: %s, retrying in %lld ms", c->endpoint,
                    resp->transport_ok ? (resp->status >= 500 ? "server error" : "invalid body")
                                       : resp->error,
                    (long long)d);
            c->not_before_ms = now + d;
            q_push(a, c, false);
        }
        break;
    case TDS_ZAPI_FATAL: {
        char err[256];
        snprintf(err, sizeof(err), "%s: HTTP %ld code %lld", c->endpoint, resp->status, (long long)code);
        finish(a, c, cls, code, resp->status, resp->body, resp->len, err);
        break;
    }
    }
    pump(a);
}

void tds_api_kick(struct tds_api *a) { pump(a); }
size_t tds_api_queued(const struct tds_api *a) { return a->n_queued; }
size_t tds_api_running(const struct tds_api *a) { return a->n_running; }
int64_t tds_api_calls(const struct tds_api *a) { return a->calls; }
int tds_api_paused(const struct tds_api *a) { return a->paused; }
