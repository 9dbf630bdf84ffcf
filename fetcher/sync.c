/* sync — runs, fetches by id, pages in flight and acks.
 *
 * Lifetimes: a run is freed only when no API call of it is outstanding (its
 * callbacks hold the run pointer); a page in flight names its run by
 * pointer, cleared when the run goes away. Ownership loss cancels the
 * organization's API calls without callbacks, so its runs can be freed
 * right away. Records travel as byte slices of Zoho's response, never
 * re-serialized.
 */
#include "sync.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <zmq.h>

#include "api.h"
#include "bus.h"
#include "config.h"
#include "entities.h"
#include "events.h"
#include "http.h"
#include "limiter.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "msg.h"
#include "oauth.h"
#include "store.h"
#include "util.h"
#include "zoho.h"

#define RUN_ID_MAX 128
#define FETCH_CONCURRENCY 4
#define DELETE_CHUNK 200
/* A failed run is run again (same request) this many times: records it
 * listed may have landed as LIST rows whose detail it never fetched. */
#define RUN_RETRIES 5
/* ... after cfg.run_retry_ms (this by default), doubling, at most this many
 * times it */
#define RUN_RETRY_MS 2000
#define RUN_RETRY_MAX_FACTOR 15
/* A detail batch sends what it has every second, not only at its end. */
#define BATCH_FLUSH_MS 1000
/* Rows left in list form (a webhook's abbreviated record, a variant from its
 * group, a run or fetch lost to a crash) get their detail fetched by id. */
#define SWEEP_EVERY_MS 10000
#define SWEEP_AGE_MS 30000
/* A row the sweep asked for is not asked for again before this, doubling
 * with each attempt (tds.detail_attempts): a detail the processor rejects,
 * or an answer without the record, leaves the row in list form for good. */
#define SWEEP_BACKOFF_MS 600000
#define SWEEP_BACKOFF_MAX_MS 86400000
#define SWEEP_MAX 200
/* Items of tds.stock_refresh refetched by one stock run: one GET /itemdetails. */
#define STOCK_MAX 100
/* Longest wait for the next look after stock runs failed in a row. */
#define STOCK_BACKOFF_MAX_MS 3600000
/* Ingress messages whose answering page was committed, remembered so that a
 * resend (its ack was late) is acked at once instead of fetched again. */
#define ANSWERED_MAX 4096

/* ---- a small string set (ids seen, fetch coalescing) ---- */

struct idset {
    char **slots;
    size_t cap, n;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int idset_grow(struct idset *s)
{
    size_t ncap = s->cap ? s->cap * 2 : 256;
    char **ns = calloc(ncap, sizeof(*ns));
    if (!ns)
        return -ENOMEM;
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->slots[i])
            continue;
        size_t j = hash_str(s->slots[i]) & (ncap - 1);
        while (ns[j])
            j = (j + 1) & (ncap - 1);
        ns[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = ns;
    s->cap = ncap;
    return 0;
}

static bool idset_has(const struct idset *s, const char *id)
{
    if (!s->cap)
        return false;
    size_t j = hash_str(id) & (s->cap - 1);
    while (s->slots[j]) {
        if (strcmp(s->slots[j], id) == 0)
            return true;
        j = (j + 1) & (s->cap - 1);
    }
    return false;
}

/* 1 added, 0 present, -ENOMEM */
static int idset_add(struct idset *s, const char *id)
{
    if (idset_has(s, id))
        return 0;
    if ((s->n + 1) * 2 > s->cap && idset_grow(s) != 0)
        return -ENOMEM;
    char *d = strdup(id);
    if (!d)
        return -ENOMEM;
    size_t j = hash_str(id) & (s->cap - 1);
    while (s->slots[j])
        j = (j + 1) & (s->cap - 1);
    s->slots[j] = d;
    s->n++;
    return 1;
}

static void idset_del(struct idset *s, const char *id)
{
    if (!s->cap)
        return;
    size_t j = hash_str(id) & (s->cap - 1);
    while (s->slots[j]) {
        if (strcmp(s->slots[j], id) == 0) {
            free(s->slots[j]);
            s->slots[j] = NULL;
            s->n--;
            /* re-insert the rest of the cluster */
            size_t k = (j + 1) & (s->cap - 1);
            while (s->slots[k]) {
                char *v = s->slots[k];
                s->slots[k] = NULL;
                size_t h = hash_str(v) & (s->cap - 1);
                while (s->slots[h])
                    h = (h + 1) & (s->cap - 1);
                s->slots[h] = v;
                k = (k + 1) & (s->cap - 1);
            }
            return;
        }
        j = (j + 1) & (s->cap - 1);
    }
}

static void idset_clear(struct idset *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->slots[i]);
    free(s->slots);
    memset(s, 0, sizeof(*s));
}

/* ---- structures ---- */

struct job {
    const struct tds_entity *e;
    char mode[16];
    int64_t request_id;
    int attempt;            /* 0 the first time; retries after a failure count up */
    int64_t not_before_ms;  /* monotonic; a retried job waits out its backoff */
    struct job *next;
};

struct run;

struct batch {
    struct run *r;
    size_t want, got;
    struct tds_bytes *recs;
    size_t n_recs;
    int64_t observed_ms;    /* earliest send time of the requests its records came from */
    char **deleted;
    size_t n_deleted;
    /* Records whose own detail call was refused (a 4xx), or failed past its
     * tries on the run's last attempt, while the organization is served:
     * left in list form when the batch got other records, or on the run's
     * last attempt (batch_done); the first failure's words for the run's
     * error else. */
    char **refused;
    size_t n_refused;
    char *refused_error;
    size_t n_served;        /* records and deletes Zoho answered, sent on or not */
    int64_t flushed_ms;     /* monotonic: when records last went on (or the batch began) */
    /* A walk's batch: the list forms of its records, slices of one copy,
     * held back while their detail is asked for (held_send). A record
     * written in list form and then again in detail form was two writes
     * of the row where one does; the list form goes on only for a record
     * Zoho would not serve, or for all when the run fails. */
    char *list_buf;
    struct tds_bytes *lists;
    size_t n_lists;
    int64_t list_observed_ms; /* when their list page was asked for */
    struct batch *next;
};

struct run {
    struct org_rt *o;
    const struct tds_entity *e;
    char id[RUN_ID_MAX];
    char mode[16];
    int64_t request_id;
    int attempt;
    char job_mode[16];  /* the mode asked for (an incremental without cursor runs as full) */
    int64_t start_wall_ms;
    /* The run's start on Zoho's clock, at the latest: when its first list
     * call was sent, from the answer's Date (-1 while no answer had one).
     * The cursor is capped with it too, so a clock here that runs ahead of
     * Zoho's does not put the cursor past changes made during the walk. */
    int64_t zoho_start_s;
    int64_t next_page;
    bool list_done, list_busy;
    bool has_since;
    int64_t since_s;
    /* The offsets the filter and the cursor are written in: Zoho's own, as
     * it wrote the newest record's time, so that the filter reads the same
     * whether Zoho honours its offset or takes it as the organization's
     * wall clock (the configured timezone_offset goes stale at a DST change).
     * The configured one only where Zoho wrote none. */
    int since_off;
    char *old_cursor;
    bool have_max;
    int64_t max_mod_s;
    int max_mod_off;
    int64_t page_no;
    int64_t pages_fetched, records_fetched, api_calls;
    /* records done with, each once: at its list page, or when its detail
     * call ends if it needs one (records_fetched counts both pages) */
    int64_t records_walked;
    int64_t progress_ms; /* when progress was last stored */
    int64_t unacked;
    int outstanding;
    struct batch *batches;
    int n_batches;
    bool failed, final_sent, reconciled;
    /* A reconciliation's ids the database holds and the walk did not list,
     * once it has listed them all (reconciled): confirmed (or, without a
     * detail call, sent as deleted) DELETE_CHUNK at a time from
     * confirm_at on, as run_step finds room. */
    char **confirm;
    size_t n_confirm, confirm_at;
    bool denied;        /* failed because Zoho refuses the entity to the token (scope) */
    int64_t older;      /* listed records modified before since_s (a filter ignored) */
    int64_t moved;      /* stored at the listed version, with other list_figures */
    /* A stock run's items (tds.stock_refresh, taken at the database's time
     * stock_at); the ones Zoho refused are also in seen. */
    char **stock_ids;
    size_t n_stock;
    char stock_at[64];
    char error[512];
    struct idset seen;
    struct tds_log_ctx lctx;
    struct tds_series *m_records;
};

/* The ingress messages a fetch answers: (origin, id) pairs, flattened, as a
 * page's `acks`. The writer acks them once the page is committed; until then
 * the ingress keeps them in its journal and sends them again after its ack
 * timeout, so a fetch lost here (crash, failed call, full queue) is asked
 * for again. */
struct acks {
    char **v;
    size_t n;
    /* tds.sync_requests rows (fetches handed over by another replica) the
     * fetch answers: closed once its page is acked; one lost here stays open
     * and is claimed again after tds_sync_fetch_lease_ms */
    int64_t *reqs;
    size_t n_reqs;
};

struct fetch_item {
    const struct tds_entity *e;
    char *id;
    struct acks acks;
    struct fetch_item *next;
};

struct fetch_call {
    struct org_rt *o;
    const struct tds_entity *e;
    char *id;
    struct acks acks;
    struct fetch_call *prev, *next; /* org_rt.calls */
};

struct org_rt {
    struct tds_sync *s;
    const struct tds_org *org;
    struct tds_oauth *oauth;
    struct tds_limiter *lim;
    struct tds_api *api;
    bool owned;
    bool quota_claimed;  /* its tds.quota_use row holds s->claim (since it was owned) */
    bool quota_seeded;   /* its limiter started from a full window (the claim failed) */
    bool quota_standin;  /* that full window is still in its limiter, from quota_standin_ms */
    int64_t quota_standin_ms;
    bool quota_lost;     /* another fetcher claimed the row: logged once */
    int64_t quota_claim_ms; /* last attempt to claim it */
    bool dropping;       /* cancelled API callbacks only clean up */
    bool no_bulk;        /* GET /itemdetails refused as unknown, or without stock
                          * sites (no_bulk_sites): item by item */
    bool no_bulk_sites;  /* no_bulk for want of stock sites in GET /itemdetails */
    int sites_none;      /* since: GET /items/{id} answers of inventory items
                          * without stock sites, while none had them */
    bool sites_seen;     /* since: one GET /items/{id} answer had them */
    bool sites_absent;   /* SITES_NONE_ENOUGH such answers and none with
                          * them: GET /itemdetails taken as it is */
    bool sites_hinted;   /* the stock_sites hint was logged */
    int64_t sites_check_ms; /* next look for item stock by location (monotonic) */
    int64_t next_stock_ms;  /* next look at tds.stock_refresh (monotonic) */
    int stock_failures;     /* stock runs failed in a row: the next look backs off */
    /* per entity (tds_entity_at order): no scheduled incremental before this
     * monotonic time, its last one having walked pages Zoho should have
     * filtered out (incremental_cost); 0 when its filter works */
    int64_t *inc_hold_ms;
    int offset_min;
    struct job *jobs, *jobs_tail;
    struct run *run;
    struct run **dying;  /* failed/lost runs waiting for their calls */
    size_t n_dying, cap_dying;
    struct fetch_item *fq, *fq_tail;
    size_t n_fq;
    struct idset fq_keys;  /* queued, not started: a duplicate joins it */
    struct idset fl_keys;  /* running: a resend or a sweep joins it; a new message
                            * waits for it, then runs once */
    int fetch_running;
    struct fetch_call *calls; /* asked of Zoho, not answered yet */
    struct tds_series *m_owned; /* tds_fetcher_org_owned{org}: 1 while o->owned */
    struct tds_series *m_every; /* tds_fetcher_incremental_interval_seconds{org} */
    struct tds_series *m_lead;  /* tds_fetcher_clock_lead_seconds{org} */
    bool lead_saved;            /* lead_saved_s is in its tds.quota_use row (since it was owned) */
    int64_t lead_saved_s;
    int64_t lead_saved_ms;      /* when (monotonic) */
    struct tds_log_limit held_log; /* fetches refused while it is paused or the entity refused */
    struct tds_log_ctx lctx;
};

struct inflight {
    char *id;
    char *buf;
    size_t len;
    int64_t *reqs;       /* sync_requests to close when acked */
    size_t n_reqs;
    struct acks pass;    /* the ingress messages this page answers (in its acks) */
    struct acks late;    /* resends of those that came while it was in flight */
    const char *entity;  /* registry name, for an ack-only page */
    struct run *run;     /* NULL: a fetch page or an orphaned run's page */
    struct org_rt *o;
    bool final;
    bool sent;
    int64_t sent_ms;
};

struct tds_sync {
    struct tds_loop *loop;
    struct tds_bus_sock *push;
    struct tds_store *store;
    struct tds_http *http;
    struct tds_metrics *metrics;
    struct tds_events *events;
    const struct tds_orgs *orgs;
    struct tds_sync_cfg cfg;
    char *origin;
    char *claim;                    /* this process's token in tds.quota_use */
    struct org_rt *o;
    size_t n_o;
    struct inflight *inf;
    size_t n_inf, cap_inf;
    size_t inf_bytes;               /* sum of inf[].len */
    int64_t tick_id;
    int64_t next_sweep_ms;
    bool stopping;
    struct tds_series *m_inflight, *m_inflight_bytes, *m_dropped, *m_no_record, *m_held, *m_kept;
    struct tds_series *m_refused;
    struct tds_log_limit refused_log; /* a record's detail refused, left in list form */
    struct idset answered;          /* origin \x1f id of committed answers */
    char **answered_ring;           /* ANSWERED_MAX, oldest evicted first */
    size_t answered_pos;
    struct tds_log_limit send_log;
    struct tds_log_limit resend_log;
    struct tds_log_limit no_record_log;
    struct tds_log_limit quota_log;  /* tds.quota_use writes that failed */
    int64_t quota_saved_ms;          /* last write of tds.quota_use */
    bool quota_last_saved;           /* the stop's last records are written: no more */
    struct tds_series *m_bad_id;
    struct tds_log_limit bad_id_log;
    struct tds_log_limit bulk_gone_log; /* GET /itemdetails answered code 1002 */
    struct tds_log_limit clock_log;  /* this host's clock ahead of Zoho's */
};

static void run_step(struct run *r);
static void org_next(struct org_rt *o);

static void acks_free(struct acks *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    free(a->reqs);
    *a = (struct acks){0};
}

static int acks_add_request(struct acks *a, int64_t id)
{
    int64_t *v = realloc(a->reqs, (a->n_reqs + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    a->reqs = v;
    v[a->n_reqs++] = id;
    return 0;
}

static int acks_add(struct acks *a, const char *origin, const char *id)
{
    char **v = realloc(a->v, (a->n + 2) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    a->v = v;
    if (!(v[a->n] = strdup(origin)))
        return -ENOMEM;
    if (!(v[a->n + 1] = strdup(id))) {
        free(v[a->n]);
        return -ENOMEM;
    }
    a->n += 2;
    return 0;
}

/* base (n elements of size) grown by src's sn elements: the new block, or
 * NULL (base untouched) when out of memory. */
static void *append(void *base, size_t n, const void *src, size_t sn, size_t size)
{
    char *v = realloc(base, (n + sn) * size);
    if (v && sn)
        memcpy(v + n * size, src, sn * size);
    return v;
}

static bool acks_has(const struct acks *a, const char *origin, const char *id)
{
    for (size_t k = 0; k + 1 < a->n; k += 2)
        if (strcmp(a->v[k + 1], id) == 0 && strcmp(a->v[k], origin) == 0)
            return true;
    return false;
}

static bool acks_has_request(const struct acks *a, int64_t id)
{
    for (size_t k = 0; k < a->n_reqs; k++)
        if (a->reqs[k] == id)
            return true;
    return false;
}

/* Every pair and request of a is in dst already (true when a is empty). */
static bool acks_covered(const struct acks *dst, const struct acks *a)
{
    for (size_t k = 0; k + 1 < a->n; k += 2)
        if (!acks_has(dst, a->v[k], a->v[k + 1]))
            return false;
    for (size_t k = 0; k < a->n_reqs; k++)
        if (!acks_has_request(dst, a->reqs[k]))
            return false;
    return true;
}

/* Move src's pairs and requests to dst, each only if dst does not hold it
 * yet; src ends empty either way. The ingress sends a message again at each
 * of its ack timeouts until the answer is committed (every 10 s through an
 * outage of the processor or the writer): appended each time, the copies
 * grew without bound and the page acking them carried them all. Held once,
 * a list is as long as the distinct messages one fetch answers, so the
 * linear look costs little. */
static int acks_take(struct acks *dst, struct acks *src)
{
    int rc = 0;
    if (src->n) {
        char **v = realloc(dst->v, (dst->n + src->n) * sizeof(*v));
        if (!v) {
            rc = -ENOMEM;
            goto out;
        }
        dst->v = v;
        for (size_t k = 0; k + 1 < src->n; k += 2) {
            if (acks_has(dst, src->v[k], src->v[k + 1]))
                continue; /* freed with src */
            dst->v[dst->n++] = src->v[k];
            dst->v[dst->n++] = src->v[k + 1];
            src->v[k] = src->v[k + 1] = NULL; /* dst's now */
        }
    }
    if (src->n_reqs) {
        int64_t *r = realloc(dst->reqs, (dst->n_reqs + src->n_reqs) * sizeof(*r));
        if (!r) {
            rc = -ENOMEM;
            goto out;
        }
        dst->reqs = r;
        for (size_t k = 0; k < src->n_reqs; k++)
            if (!acks_has_request(dst, src->reqs[k]))
                dst->reqs[dst->n_reqs++] = src->reqs[k];
    }
out:
    acks_free(src);
    return rc;
}

/* Close the sync_requests a fetch answered (or made moot). */
static void close_requests(struct tds_sync *s, const int64_t *reqs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tds_store_request_done(s->store, reqs[i]) != 0)
            tds_log_limited(&s->send_log, TDS_LOG_WARN, NULL,
                            "could not close fetch request %lld: %s (it is fetched again later)",
                            (long long)reqs[i], tds_store_error(s->store));
}
static void fetch_pump(struct org_rt *o);

static void on_token_change(void *ud)
{
    struct org_rt *o = ud;
    if (o->api)
        tds_api_kick(o->api);
}

/* ---- pages in flight ---- */

static void update_inflight_gauge(struct tds_sync *s)
{
    if (s->m_inflight)
        tds_series_set(s->m_inflight, (double)s->n_inf);
    if (s->m_inflight_bytes)
        tds_series_set(s->m_inflight_bytes, (double)s->inf_bytes);
}

static void send_one(struct tds_sync *s, struct inflight *f)
{
    int rc = tds_bus_send(s->push, f->buf, f->len, ZMQ_DONTWAIT);
    f->sent_ms = tds_now_ms();
    f->sent = rc == 0;
    if (rc != 0)
        tds_log_limited(&s->send_log, TDS_LOG_WARN, NULL,
                        "could not send page to the processor: %s, retrying",
                        rc == -EAGAIN ? "queue full or no processor connected" : strerror(-rc));
}

/* Encode and send a page; it stays in flight until acked. */
static int deliver(struct tds_sync *s, struct org_rt *o, struct run *r, struct tds_msg *m)
{
    char *buf = NULL;
    size_t len = 0;
    m->type = TDS_MSG_PAGE;
    m->v = TDS_MSG_VERSION;
    m->u.page.origin = s->origin;
    /* the processor makes a date-only time midnight in this offset */
    if (o && o->org)
        m->u.page.tz = o->org->timezone_offset;
    /* set by the caller to when its records were asked for; else now */
    if (m->u.page.fetched_ms <= 0)
        m->u.page.fetched_ms = tds_wall_ms();
    int rc = tds_msg_encode(m, &buf, &len);
    if (rc != 0)
        return rc > 0 ? -EINVAL : rc;
    if (s->n_inf == s->cap_inf) {
        size_t nc = s->cap_inf ? s->cap_inf * 2 : 64;
        struct inflight *ni = realloc(s->inf, nc * sizeof(*ni));
        if (!ni) {
            free(buf);
            return -ENOMEM;
        }
        s->inf = ni;
        s->cap_inf = nc;
    }
    struct inflight *f = &s->inf[s->n_inf];
    memset(f, 0, sizeof(*f));
    f->id = strdup(m->id);
    if (!f->id) {
        free(buf);
        return -ENOMEM;
    }
    f->buf = buf;
    f->len = len;
    f->run = r;
    f->o = o;
    f->final = m->u.page.final;
    s->n_inf++;
    s->inf_bytes += len;
    if (r)
        r->unacked++;
    send_one(s, f);
    update_inflight_gauge(s);
    return 0;
}

static void inflight_clear(struct inflight *f)
{
    free(f->id);
    free(f->buf);
    free(f->reqs);
    acks_free(&f->pass);
    acks_free(&f->late);
}

static void inflight_remove(struct tds_sync *s, size_t i)
{
    s->inf_bytes -= s->inf[i].len;
    inflight_clear(&s->inf[i]);
    s->inf[i] = s->inf[s->n_inf - 1];
    s->n_inf--;
    update_inflight_gauge(s);
}

/* Forget pages of a run (it is being freed) or of an organization. */
static void inflight_forget(struct tds_sync *s, struct run *r, struct org_rt *o)
{
    for (size_t i = 0; i < s->n_inf;) {
        if ((r && s->inf[i].run == r) || (o && s->inf[i].o == o)) {
            if (o) {
                inflight_remove(s, i);
                continue;
            }
            s->inf[i].run = NULL;
        }
        i++;
    }
}

/* Room for `need` more pages: the page count bounds how far we run ahead of
 * the writer, the byte bound what the unacked pages hold here, in ZeroMQ's
 * queues and in the writer's batch (a detail page of 200 large invoices can
 * be megabytes). Whatever the bound, one page always fits. */
static bool credits(struct tds_sync *s, int64_t need)
{
    if (s->cfg.max_inflight_bytes > 0 && s->inf_bytes >= (size_t)s->cfg.max_inflight_bytes)
        return false;
    return (int64_t)s->n_inf + need <= s->cfg.max_inflight;
}

/* ---- runs ---- */

static void batch_free(struct batch *b)
{
    for (size_t i = 0; i < b->n_recs; i++)
        free(b->recs[i].p);
    free(b->recs);
    for (size_t i = 0; i < b->n_deleted; i++)
        free(b->deleted[i]);
    free(b->deleted);
    for (size_t i = 0; i < b->n_refused; i++)
        free(b->refused[i]);
    free(b->refused);
    free(b->refused_error);
    free(b->list_buf);
    free(b->lists);
    free(b);
}

static void run_free(struct run *r)
{
    if (!r)
        return;
    inflight_forget(r->o->s, r, NULL);
    while (r->batches) {
        struct batch *b = r->batches;
        r->batches = b->next;
        batch_free(b);
    }
    idset_clear(&r->seen);
    for (size_t i = 0; i < r->n_confirm; i++)
        free(r->confirm[i]);
    free(r->confirm);
    for (size_t i = 0; i < r->n_stock; i++)
        free(r->stock_ids[i]);
    free(r->stock_ids);
    free(r->old_cursor);
    free(r);
}

static void reap(struct org_rt *o)
{
    for (size_t i = 0; i < o->n_dying;) {
        if (o->dying[i]->outstanding == 0) {
            run_free(o->dying[i]);
            o->dying[i] = o->dying[--o->n_dying];
            continue;
        }
        i++;
    }
}

/* Detach the current run (done or failed) and start the next job. */
static void run_retire(struct org_rt *o, struct run *r)
{
    if (o->run == r)
        o->run = NULL;
    /* Freed later by reap(), never here: callers up the stack still hold r. */
    {
        if (o->n_dying == o->cap_dying) {
            size_t nc = o->cap_dying ? o->cap_dying * 2 : 4;
            struct run **nd = realloc(o->dying, nc * sizeof(*nd));
            if (!nd) {
                /* cannot track it: leak rather than risk a dangling callback */
                tds_log(TDS_LOG_ERROR, &o->lctx, "out of memory retiring run %s", r->id);
                return;
            }
            o->dying = nd;
            o->cap_dying = nc;
        }
        o->dying[o->n_dying++] = r;
    }
}

/* Put a job back at the head of the queue, to run after a backoff. false
 * when it is not retried (stopping, not owned, retries used up, no memory). */
static bool job_retry(struct org_rt *o, const struct tds_entity *e, const char *mode,
                      int64_t request_id, int attempt)
{
    if (o->s->stopping || !o->owned || attempt >= RUN_RETRIES)
        return false;
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        return false;
    j->e = e;
    snprintf(j->mode, sizeof(j->mode), "%s", mode);
    j->request_id = request_id;
    j->attempt = attempt + 1;
    int64_t base = o->s->cfg.run_retry_ms;
    int64_t d = base << (attempt < 4 ? attempt : 4);
    if (d > base * RUN_RETRY_MAX_FACTOR)
        d = base * RUN_RETRY_MAX_FACTOR;
    j->not_before_ms = tds_now_ms() + d;
    j->next = o->jobs;
    o->jobs = j;
    if (!o->jobs_tail)
        o->jobs_tail = j;
    tds_log(TDS_LOG_INFO, &o->lctx, "%s %s run will be retried in %lld ms (attempt %d of %d)", e->name,
            mode, (long long)d, j->attempt + 1, RUN_RETRIES + 1);
    return true;
}

/* A request is done when none of its jobs is left: queued, a failed run's
 * retry waiting out its backoff, or running (other than `ending`, the run
 * that ends now; NULL when none does). Closing it when its last entity's run
 * ended, while an earlier entity's retry still waited, made `tds-fetcher
 * sync --entity all` see that entity failed and exit 1, and a fetcher
 * stopped before the retry ran lost it for good. */
static void request_finished(struct org_rt *o, int64_t request_id, const struct run *ending)
{
    if (request_id <= 0)
        return;
    if (o->run && o->run != ending && o->run->request_id == request_id)
        return;
    for (const struct job *j = o->jobs; j; j = j->next)
        if (j->request_id == request_id)
            return;
    tds_store_request_done(o->s->store, request_id);
}

static void set_last_success(struct org_rt *o, const char *entity, int64_t wall_ms)
{
    struct tds_metrics *m = o->s->metrics;
    char *oe = m ? tds_metrics_escape(o->org->org_id) : NULL;
    if (!oe)
        return;
    struct tds_series *g = tds_metrics_getf(
        m, TDS_GAUGE, "tds_fetcher_last_success_timestamp_seconds",
        "When a run of this organization and entity last completed (Unix time)",
        "org=\"%s\",entity=\"%s\"", oe, entity);
    if (g)
        tds_series_set(g, (double)wall_ms / 1000.0);
    free(oe);
}

/* The last success of each entity from the database, when this fetcher
 * takes an organization: a new owner (a restarted or moved fetcher) has no
 * run of its own yet, and without the gauge an alert on it had nothing to
 * compare while the runs hung. An entity that never synced stays without a
 * gauge (the writer's entity_stale rule reads the database): counted from
 * the takeover, a fetcher restarting over and over would keep it fresh. */
static void seed_last_success(struct org_rt *o)
{
    for (size_t k = 0; o->s->metrics && k < tds_entity_count(); k++) {
        const struct tds_entity *e = tds_entity_at(k);
        if (!tds_sync_org_syncs(o->org, e))
            continue;
        char *cursor = NULL;
        int64_t last = 0;
        if (tds_store_state_get(o->s->store, o->org->org_id, e->name, &cursor, &last) != 0) {
            tds_log(TDS_LOG_WARN, &o->lctx,
                    "could not read when its entities last synced: %s (the gauge "
                    "tds_fetcher_last_success_timestamp_seconds waits for a run)",
                    tds_store_error(o->s->store));
            return;
        }
        free(cursor);
        if (last > 0)
            set_last_success(o, e->name, last);
    }
}

static void count_run(struct run *r, const char *status)
{
    struct tds_metrics *m = r->o->s->metrics;
    if (!m)
        return;
    char *oe = tds_metrics_escape(r->o->org->org_id);
    if (!oe)
        return;
    struct tds_series *c = tds_metrics_getf(m, TDS_COUNTER, "tds_fetcher_runs_total",
                                            "Sync runs finished, by organization, entity and status",
                                            "org=\"%s\",entity=\"%s\",status=\"%s\"", oe,
                                            r->e->name, status);
    if (c)
        tds_series_inc(c, 1);
    free(oe);
    if (strcmp(status, "completed") == 0 && strcmp(r->mode, "stock") != 0)
        set_last_success(r->o, r->e->name, tds_wall_ms()); /* a walk, not a few items */
}

static bool run_call(tds_api_cb cb, void *ud, void *arg);
static bool run_call_dispose(tds_api_cb cb, void *ud, void *arg);

static void run_fail(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_fail(struct run *r, const char *fmt, ...)
{
    if (r->failed)
        return;
    struct tds_sync *s = r->o->s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof(r->error), fmt, ap);
    tds_utf8_trim(r->error); /* stored as text (tds.sync_runs.error) */
    va_end(ap);
    r->failed = true;
    /* Its calls not sent yet would only have their answers thrown away (the
     * retried run asks again): up to two batches of detail calls, each with
     * its own retries, against a daily quota. Calls in flight finish, with
     * no further tries. */
    size_t withdrawn = tds_api_withdraw(r->o->api, run_call, run_call_dispose, r);
    count_run(r, "failed");
    if (withdrawn)
        tds_log(TDS_LOG_ERROR, &r->lctx, "sync run failed: %s (%zu calls not sent yet withdrawn)",
                r->error, withdrawn);
    else
        tds_log(TDS_LOG_ERROR, &r->lctx, "sync run failed: %s", r->error);
    tds_store_run_progress(s->store, r->id, r->pages_fetched, r->records_fetched, r->records_walked,
                           r->api_calls);
    tds_store_run_fail(s->store, r->id, r->error);
    tds_events_emit(s->events, "tds.zoho.sync.failed", "org", r->o->org->org_id, "entity", r->e->name,
                    "run", r->id, "mode", r->mode, "error", r->error, NULL);
    tds_store_alert(s->store, "zoho_sync_failed", "error", r->o->org->org_id, r->e->name, r->error);
    struct org_rt *o = r->o;
    /* Run it again rather than leave listed records without their detail;
     * the request stays open meanwhile. */
    /* A paused organization (credentials revoked or invalid) waits for an
     * operator: running again would only fail again. */
    bool paused = strcmp(tds_oauth_state(o->oauth, tds_now_ms()), "paused") == 0;
    /* Nor is one Zoho refuses for want of a scope: the API layer fails its
     * calls at once until it asks Zoho again, much later; the schedule runs
     * the entity again meanwhile, and each run records the error. */
    if (r->denied)
        tds_log(TDS_LOG_WARN, &r->lctx, "%s %s run not retried: the token may not read %s",
                r->e->name, r->mode, r->e->name);
    /* A stock run is not retried: the next look is its retry, after a wait
     * that doubles with each failure in a row (10 s to an hour at the
     * default interval), as Zoho failing it now most likely fails it then. */
    bool stock = strcmp(r->mode, "stock") == 0;
    if (stock) {
        int64_t wait = s->cfg.stock_every_ms << (o->stock_failures < 8 ? o->stock_failures : 8);
        if (wait > STOCK_BACKOFF_MAX_MS)
            wait = STOCK_BACKOFF_MAX_MS;
        o->stock_failures++;
        if (o->next_stock_ms < tds_now_ms() + wait)
            o->next_stock_ms = tds_now_ms() + wait;
    }
    if (paused || r->denied || stock ||
        !job_retry(o, r->e, r->job_mode, r->request_id, r->attempt))
        request_finished(o, r->request_id, r);
    run_retire(o, r);
    org_next(o);
}

static int64_t org_budget(const struct org_rt *o);
static int64_t org_slots(const struct org_rt *o);
static int64_t org_incremental_ms(const struct org_rt *o);
static struct org_rt *find_org(const struct tds_sync *s, const char *org);

/* A stock run ended: the rows of the items it fetched go, those Zoho
 * refused wait out a backoff, and the next look waits until its calls fit
 * the organization's share of the daily budget for incrementals. */
static void stock_finished(struct run *r)
{
    struct org_rt *o = r->o;
    const char **done = calloc(r->n_stock ? r->n_stock : 1, sizeof(*done));
    const char **refused = calloc(r->n_stock ? r->n_stock : 1, sizeof(*refused));
    size_t n_done = 0, n_refused = 0;
    for (size_t i = 0; done && refused && i < r->n_stock; i++) {
        if (idset_has(&r->seen, r->stock_ids[i]))
            refused[n_refused++] = r->stock_ids[i];
        else
            done[n_done++] = r->stock_ids[i];
    }
    if (!done || !refused ||
        tds_store_stock_done(o->s->store, o->org->org_id, done, n_done, r->stock_at, false) != 0 ||
        tds_store_stock_done(o->s->store, o->org->org_id, refused, n_refused, r->stock_at, true) != 0)
        tds_log(TDS_LOG_WARN, &r->lctx,
                "could not clear the items refetched from tds.stock_refresh: %s (they are "
                "fetched again)", done && refused ? tds_store_error(o->s->store) : "out of memory");
    free(done);
    free(refused);
    o->stock_failures = 0;
    int64_t budget = org_budget(o);
    if (budget > 0) {
        /* one of the share's slots (org_slots): its calls spread over the day */
        int64_t calls = r->api_calls > 1 ? r->api_calls : 1;
        int64_t next = tds_now_ms() + 86400000 * org_slots(o) / budget * calls;
        if (o->next_stock_ms < next)
            o->next_stock_ms = next;
    }
}

static size_t entity_index(const struct tds_entity *e)
{
    for (size_t k = 0; k < tds_entity_count(); k++)
        if (tds_entity_at(k) == e)
            return k;
    return SIZE_MAX;
}

/* A figure of e's list_figures that rec (a list record) and the stored row
 * (stored, in the same order) both give as a number, and give differently.
 * Stock that a purchase receive, a bill, an adjustment or a transfer moved
 * (documents not synced, which queue nothing in tds.stock_refresh) shows in
 * an item's list totals while its last_modified_time stays: any walk of the
 * list (the daily reconciliation, a full sync) then fetches the detail again,
 * in the batch of those that changed. A figure missing or not a number on
 * either side (NaN included) decides nothing. Compared as doubles: stock counts, "12" and
 * "12.00" alike. */
static bool figures_moved(const struct tds_entity *e, char *const *stored, const char *rec,
                          size_t len)
{
    for (size_t f = 0; stored && e->list_figures && e->list_figures[f]; f++) {
        char buf[64], *end;
        if (!stored[f] || tds_json_scalar(rec, len, e->list_figures[f], buf, sizeof(buf)) != 0)
            continue;
        errno = 0;
        double listed = strtod(buf, &end);
        if (end == buf || *end || errno)
            continue;
        double kept = strtod(stored[f], &end);
        if (end == stored[f] || *end || errno || !isfinite(listed) || !isfinite(kept))
            continue;
        if (listed != kept)
            return true;
    }
    return false;
}

/* An incremental run whose list held records modified before its `since`
 * was given pages that Zoho's last_modified_time filter should have left
 * out: the endpoint ignores the filter (ZOHO.md reports one that does), and
 * each incremental of the entity walks its whole list, a call a page, where
 * the budget counts one a run. With 20,000 items, every 300 s, that is
 * 28,800 calls a day, over a whole plan's quota: the organization would
 * reach its reserve and stop for the rest of each day. So the next
 * scheduled incremental of that entity waits until the calls this one made
 * fit in its slot of the budget (schedule.c asks tds_sync_incremental_hold);
 * once a walk lists no older record, the hold ends. */
static void incremental_cost(struct run *r)
{
    struct org_rt *o = r->o;
    size_t k = entity_index(r->e);
    if (!o->inc_hold_ms || k == SIZE_MAX)
        return;
    int64_t budget = org_budget(o);
    bool held = o->inc_hold_ms[k] != 0;
    if (!r->older || r->pages_fetched <= 1 || budget <= 0) {
        if (held && !r->older)
            tds_log(TDS_LOG_INFO, &r->lctx,
                    "zoho filtered this incremental's list by last_modified_time again: "
                    "incrementals of %s back to every %lld s",
                    r->e->name, (long long)((org_incremental_ms(o) + 999) / 1000));
        o->inc_hold_ms[k] = 0;
        return;
    }
    int64_t wait = 86400000 * org_slots(o) / budget * r->pages_fetched;
    if (wait <= org_incremental_ms(o)) {
        o->inc_hold_ms[k] = 0;
        return;
    }
    o->inc_hold_ms[k] = tds_now_ms() + wait;
    tds_log(held ? TDS_LOG_INFO : TDS_LOG_WARN, &r->lctx,
            "zoho listed %lld %s modified before this incremental's start: the endpoint ignores "
            "the last_modified_time filter, and each incremental walks the whole list (%lld "
            "calls); the next waits %lld s, to keep within %lld%% of the daily budget",
            (long long)r->older, r->e->name, (long long)r->pages_fetched,
            (long long)((wait + 999) / 1000),
            (long long)(o->org->incremental_budget_pct > 0 ? o->org->incremental_budget_pct : 25));
}

int64_t tds_sync_incremental_hold(const struct tds_sync *s, const char *org,
                                  const struct tds_entity *e)
{
    const struct org_rt *o = find_org(s, org);
    size_t k = entity_index(e);
    if (!o || !o->inc_hold_ms || k == SIZE_MAX || !o->inc_hold_ms[k])
        return 0;
    /* kept in monotonic time: a wall clock stepped back must not stretch it */
    return tds_wall_ms() + (o->inc_hold_ms[k] - tds_now_ms());
}

static void run_completed(struct run *r)
{
    struct tds_sync *s = r->o->s;
    count_run(r, "completed");
    tds_log(TDS_LOG_INFO, &r->lctx, "sync run completed: %lld pages, %lld records, %lld api calls",
            (long long)r->pages_fetched, (long long)r->records_fetched, (long long)r->api_calls);
    if (r->moved)
        tds_log(TDS_LOG_INFO, &r->lctx,
                "%lld %s listed at their stored version with figures unlike the stored ones "
                "(%s and the like): their details fetched again",
                (long long)r->moved, r->e->name, r->e->list_figures[0]);
    char recs[32];
    snprintf(recs, sizeof(recs), "%lld", (long long)r->records_fetched);
    tds_events_emit(s->events, "tds.zoho.sync.completed", "org", r->o->org->org_id, "entity",
                    r->e->name, "run", r->id, "mode", r->mode, "records", recs, NULL);
    struct org_rt *o = r->o;
    const struct tds_entity *e = r->e;
    /* Offset paging skips a record whenever one the walk already passed is
     * deleted (the unread pages shift by one): a reconciliation right after
     * lists the ids again and fetches what the walk missed. It is queued as a
     * request before this one is closed, so a replica killed in between
     * leaves work that the next owner takes, not a job lost with its memory. */
    bool from_memory = false;
    if (strcmp(r->mode, "full") == 0) {
        char by[160];
        snprintf(by, sizeof(by), "%s: after a full sync", s->cfg.origin);
        if (tds_store_request_reconcile(s->store, o->org->org_id, e->name, by) != 0) {
            tds_log(TDS_LOG_WARN, &r->lctx,
                    "could not queue the reconciliation after a full sync as a request (%s); "
                    "running it from memory",
                    tds_store_error(s->store));
            from_memory = true;
        }
    }
    if (strcmp(r->mode, "stock") == 0)
        stock_finished(r);
    else if (strcmp(r->mode, "incremental") == 0)
        incremental_cost(r);
    request_finished(o, r->request_id, r);
    run_retire(o, r);
    /* after the retire: this run itself would count as one pending */
    if (from_memory && !tds_sync_pending(s, o->org->org_id, e->name, "reconcile") &&
        tds_sync_enqueue(s, o->org->org_id, e->name, "reconcile", 0) != 0)
        tds_log(TDS_LOG_WARN, &o->lctx, "could not queue the reconciliation after a full sync");
    org_next(o);
}

static void progress(struct run *r)
{
    r->progress_ms = tds_now_ms();
    tds_store_run_progress(r->o->s->store, r->id, r->pages_fetched, r->records_fetched, r->records_walked,
                           r->api_calls);
    if (r->m_records)
        tds_series_set(r->m_records, (double)r->records_fetched);
}

static void batch_done(struct batch *b);
static int batch_flush(struct batch *b);

/* A batch sends what it has every BATCH_FLUSH_MS, not only at its end: a
 * batch of 200 calls takes two minutes at 100 calls a minute, and a stop or
 * a crash used to lose every answer of the batches open (up to 400 calls).
 * Only while the pages in flight leave room for this one and for the last
 * page of every batch open (the room start_batch counted on): with the
 * writer away, records wait in the batch as before. */
static bool batch_flush_due(const struct batch *b)
{
    const struct run *r = b->r;
    return !r->failed && (b->n_recs || b->n_deleted) &&
           tds_now_ms() - b->flushed_ms >= BATCH_FLUSH_MS &&
           credits(r->o->s, 1 + r->n_batches);
}

/* A page's observed time is the earliest send among its requests: no record
 * in it is older than that moment (the writer orders two versions with the
 * same modified_time by it). */
static void batch_observed(struct batch *b, const struct tds_api_result *res)
{
    if (res->sent_wall_ms > 0 && (b->observed_ms == 0 || res->sent_wall_ms < b->observed_ms))
        b->observed_ms = res->sent_wall_ms;
}

/* Where the run's entity is listed. An organization migrated to Locations
 * ("stock_sites": "locations") lists its stock sites at GET /locations, each
 * with a location_id; the processor writes either shape to zoho.warehouses. */
struct list_call {
    const char *path, *key, *id_field;
};

static struct list_call list_call(const struct run *r)
{
    if (r->o->org->stock_locations && strcmp(r->e->name, "warehouses") == 0)
        return (struct list_call){"/locations", "locations", "location_id"};
    return (struct list_call){r->e->list_path, r->e->list_key, r->e->id_field};
}

struct dcall {
    struct batch *b;
    char *id;
};

/* Zoho would not serve id (taken; freed on failure): batch_done decides
 * what becomes of it. why: the failure's words. 0 or -ENOMEM. */
static int batch_refuse(struct batch *b, char *id, const char *why)
{
    struct run *r = b->r;
    char **g = realloc(b->refused, (b->n_refused + 1) * sizeof(*g));
    if (!g) {
        free(id);
        return -ENOMEM;
    }
    b->refused = g;
    b->refused[b->n_refused++] = id;
    if (!b->refused_error &&
        asprintf(&b->refused_error, "detail of %s %s failed: %s", r->e->name, id, why) < 0)
        b->refused_error = NULL;
    return 0;
}

static int stock_sites(const char *rec, size_t len);

/* GET /items/{id} answers of inventory items without stock sites, and none
 * with them, that tell an organization keeps no stock per site: one odd
 * item does not (its batch answers, taken as they are, would delete the
 * stock rows of every item). */
#define SITES_NONE_ENOUGH 10

static void on_detail(const struct tds_api_result *res, void *ud)
{
    struct dcall *dc = ud;
    struct batch *b = dc->b;
    struct run *r = b->r;
    r->outstanding--;
    if (r->o->dropping) {
        free(dc->id);
        free(dc);
        return;
    }
    r->api_calls++;
    b->got++;
    r->records_walked++;
    if (!r->failed) {
        if (res->cls == TDS_ZAPI_OK) {
            struct tds_span sp;
            if (tds_json_member_span(res->body, res->len, r->e->detail_key, &sp) == 0) {
                char *copy = malloc(sp.len + 1);
                if (copy) {
                    memcpy(copy, res->body + sp.off, sp.len);
                    copy[sp.len] = '\0';
                    int sites = r->o->no_bulk_sites && !r->o->sites_seen &&
                                        strcmp(r->e->name, "items") == 0
                                    ? stock_sites(copy, sp.len)
                                    : -1;
                    if (sites == 1)
                        r->o->sites_seen = true; /* item by item, for good */
                    if (sites == 0 && ++r->o->sites_none >= SITES_NONE_ENOUGH) {
                        /* The items' own details have no stock site either:
                         * so the organization keeps none per site, and its
                         * batch answers are whole after all. */
                        tds_log(TDS_LOG_WARN, &r->o->lctx,
                                "GET /items/{id} of %d items has no stock per site either: back "
                                "to GET /itemdetails, its answers taken as they are",
                                r->o->sites_none);
                        r->o->no_bulk = r->o->no_bulk_sites = false;
                        r->o->sites_absent = true;
                    }
                    b->recs[b->n_recs].p = copy;
                    b->recs[b->n_recs].n = sp.len;
                    b->n_recs++;
                    b->n_served++;
                    batch_observed(b, res);
                } else {
                    run_fail(r, "out of memory");
                }
            } else {
                /* Success without the record (another key, or none): asking
                 * again will not help, as for a 4xx. It failed every run of
                 * the entity, for good, the cursor never moving. */
                char why[96], *id = dc->id;
                snprintf(why, sizeof(why), "code 0 without a '%s' object", r->e->detail_key);
                dc->id = NULL;
                if (batch_refuse(b, id, why) != 0)
                    run_fail(r, "out of memory");
            }
        } else if (res->cls == TDS_ZAPI_NOTFOUND) {
            b->deleted[b->n_deleted++] = dc->id;
            b->n_served++;
            dc->id = NULL;
        } else if ((res->cls == TDS_ZAPI_FATAL ||
                    (res->cls == TDS_ZAPI_RETRY &&
                     (r->attempt >= RUN_RETRIES || strcmp(r->mode, "stock") == 0))) &&
                   !res->paused && !res->denied) {
            /* This record's call was refused (a 4xx: asking again will not
             * help), or failed past its tries on the run's last attempt,
             * while the organization's access works: batch_done decides
             * (one such record used to fail every run of its entity, for
             * good, the cursor never moving). A stock run, never tried
             * again, puts such an item off, or one item Zoho cannot serve
             * would hold the queue behind it. A 5xx on an earlier attempt
             * fails the run at once, as Zoho failing is most often Zoho
             * down: its calls not sent yet are withdrawn, and the run is
             * tried again after a backoff. */
            char *id = dc->id;
            dc->id = NULL;
            if (batch_refuse(b, id, res->error ? res->error : tds_zapi_class_name(res->cls)) != 0)
                run_fail(r, "out of memory");
        } else {
            r->denied = res->denied;
            run_fail(r, "detail of %s %s failed: %s", r->e->name, dc->id,
                     res->error ? res->error : tds_zapi_class_name(res->cls));
        }
    }
    free(dc->id);
    free(dc);
    if (b->got == b->want) {
        batch_done(b);
        return;
    }
    if (batch_flush_due(b) && batch_flush(b) != 0)
        return;
    if (!r->failed && tds_now_ms() - r->progress_ms >= 1000)
        progress(r); /* one call a record can take minutes a page */
}

static void batch_unlink(struct run *r, struct batch *b)
{
    for (struct batch **p = &r->batches; *p; p = &(*p)->next) {
        if (*p == b) {
            *p = b->next;
            break;
        }
    }
    r->n_batches--;
    batch_free(b);
}

/* A page of run r with its header filled and the next page number taken; the
 * caller adds what it carries, sends it with deliver() and frees m->id (NULL
 * when out of memory: deliver() is then not called). */
static void run_page(struct run *r, struct tds_msg *m)
{
    memset(m, 0, sizeof(*m));
    m->id = tds_uid("pg");
    m->u.page.org = r->o->org->org_id;
    m->u.page.entity = (char *)r->e->name;
    m->u.page.run = r->id;
    m->u.page.mode = r->mode;
    m->u.page.page = ++r->page_no;
}

/* A detail batch goes out in pages of at most page_max_bytes of record JSON,
 * at least one record each: the processor's rows for a page must fit in one
 * message (TDS_MSG_MAX_FRAME), and 200 invoices of a few hundred lines each
 * would not. Ids found deleted ride with the first page. */
/* Send the records and deletes the batch holds as pages, and let go of
 * them. Returns 0, or an error after failing the run. */
static int batch_flush(struct batch *b)
{
    struct run *r = b->r;
    struct org_rt *o = r->o;
    size_t max = (size_t)o->s->cfg.page_max_bytes;
    bool any = b->n_recs || b->n_deleted;
    int rc = 0;
    size_t i = 0;
    for (size_t first = 1; rc == 0 && (first ? any : i < b->n_recs); first = 0) {
        size_t j = i, bytes = 0;
        while (j < b->n_recs && (j == i || max == 0 || bytes + b->recs[j].n <= max))
            bytes += b->recs[j++].n;
        struct tds_msg m;
        run_page(r, &m);
        m.u.page.detail = true;
        m.u.page.records = b->recs + i;
        m.u.page.n_records = j - i;
        m.u.page.fetched_ms = b->observed_ms;
        if (first) {
            m.u.page.deleted_ids = b->deleted;
            m.u.page.n_deleted = b->n_deleted;
        }
        rc = m.id ? deliver(o->s, o, r, &m) : -ENOMEM;
        free(m.id);
        r->pages_fetched++;
        r->records_fetched += (int64_t)(j - i);
        i = j;
    }
    for (size_t k = 0; k < b->n_recs; k++)
        free(b->recs[k].p);
    b->n_recs = 0;
    for (size_t k = 0; k < b->n_deleted; k++)
        free(b->deleted[k]);
    b->n_deleted = 0;
    b->observed_ms = 0;
    b->flushed_ms = tds_now_ms();
    if (rc != 0) {
        run_fail(r, "could not encode detail page: %d", rc);
        return rc;
    }
    if (any)
        progress(r);
    return 0;
}

/* Send, as a list page, the held list forms of the batch's records: those
 * whose id is one of only[0..n_only), or all when only is NULL. They are
 * what is owed (the sweep fetches their detail later): a record whose
 * detail did land is not touched by its older list form (the writer's
 * guard keeps a detail row over a list row of the same version). Errors
 * are logged: the run has failed already, or is left to the sweep. */
static void held_send(struct batch *b, char *const *only, size_t n_only)
{
    struct run *r = b->r;
    struct org_rt *o = r->o;
    if (!b->n_lists || o->dropping)
        return;
    struct tds_bytes *recs = b->lists;
    size_t n = b->n_lists;
    if (only) {
        recs = calloc(n_only ? n_only : 1, sizeof(*recs));
        if (!recs) {
            tds_log(TDS_LOG_ERROR, &r->lctx, "out of memory: %zu %s left out of the database "
                    "until the next walk", n_only, r->e->name);
            return;
        }
        n = 0;
        struct list_call lc = list_call(r);
        for (size_t i = 0; i < b->n_lists && n < n_only; i++) {
            char id[128];
            if (tds_json_scalar(b->lists[i].p, b->lists[i].n, lc.id_field, id, sizeof(id)) != 0)
                continue;
            for (size_t k = 0; k < n_only; k++)
                if (only[k] && strcmp(only[k], id) == 0) {
                    recs[n++] = b->lists[i];
                    break;
                }
        }
    }
    int rc = 0;
    if (n) {
        struct tds_msg m;
        run_page(r, &m);
        m.u.page.detail = false;
        m.u.page.records = recs;
        m.u.page.n_records = n;
        m.u.page.fetched_ms = b->list_observed_ms;
        rc = m.id ? deliver(o->s, o, r, &m) : -ENOMEM;
        free(m.id);
    }
    if (only)
        free(recs);
    if (rc != 0)
        tds_log(TDS_LOG_ERROR, &r->lctx, "could not send %zu %s in list form (%d): left out of "
                "the database until the next walk", n, r->e->name, rc);
}

static void batch_done(struct batch *b)
{
    struct run *r = b->r;
    struct org_rt *o = r->o;
    if (r->failed) {
        /* written in list form, as they would have been without the
         * batch: a run that fails for good leaves them owed, not absent */
        held_send(b, NULL, 0);
        batch_unlink(r, b);
        return;
    }
    if (b->n_refused) {
        /* Records Zoho would not serve. When it served the others of the
         * batch, or on the run's last attempt, they stay in list form (their
         * list page is written; the sweep asks for them with its backoff)
         * and the run goes on. Else the whole batch failed: Zoho, not one
         * record, is the trouble, and the run fails to be tried again. */
        bool stock = strcmp(r->mode, "stock") == 0;
        if (!b->n_served && r->attempt < RUN_RETRIES && !stock) {
            run_fail(r, "%s", b->refused_error ? b->refused_error : "detail calls failed");
            held_send(b, NULL, 0);
            batch_unlink(r, b);
            return;
        }
        if (o->s->m_refused)
            tds_series_inc(o->s->m_refused, (double)b->n_refused);
        if (stock) {
            /* refused one by one (a 4xx, or a 5xx past the call's tries: a
             * stock run is not tried again), not the whole batch failing:
             * their rows stay in tds.stock_refresh, put off (stock_finished) */
            for (size_t i = 0; i < b->n_refused; i++)
                if (idset_add(&r->seen, b->refused[i]) < 0) {
                    run_fail(r, "out of memory");
                    batch_unlink(r, b);
                    return;
                }
            tds_log_limited(&o->s->refused_log, TDS_LOG_WARN, &r->lctx,
                            "%zu of %zu items whose stock moved not fetched again, their detail "
                            "refused (%s); asked for again after a backoff",
                            b->n_refused, b->want,
                            b->refused_error ? b->refused_error : "detail calls failed");
        } else {
            held_send(b, b->refused, b->n_refused);
            tds_log_limited(&o->s->refused_log, TDS_LOG_WARN, &r->lctx,
                            "left %zu of %zu %s in list form, their detail refused (%s); the "
                            "sweep asks for them again later",
                            b->n_refused, b->want, r->e->name,
                            b->refused_error ? b->refused_error : "detail calls failed");
        }
    }
    if (batch_flush(b) != 0) {
        batch_unlink(r, b);
        return;
    }
    batch_unlink(r, b);
    run_step(r);
}

/* One GET /{entity}/{id}; the batch counts it answered in on_detail. */
static int queue_detail(struct batch *b, const char *id)
{
    struct run *r = b->r;
    char endpoint[96];
    snprintf(endpoint, sizeof(endpoint), "%s.detail", r->e->name);
    struct dcall *dc = calloc(1, sizeof(*dc));
    char *esc = tds_http_escape(id);
    struct tds_buf path = {0};
    int rc = (dc && esc) ? tds_buf_addf(&path, "%s%s", r->e->detail_path, esc) : -ENOMEM;
    free(esc);
    if (rc == 0) {
        dc->b = b;
        dc->id = strdup(id);
        rc = dc->id ? tds_api_get(r->o->api, endpoint, path.p, NULL, on_detail, dc) : -ENOMEM;
    }
    tds_buf_deinit(&path);
    if (rc != 0) {
        if (dc)
            free(dc->id);
        free(dc);
        return rc;
    }
    r->outstanding++;
    return 0;
}

/* Inventory and Books answer up to 100 items' details in one call
 * (GET /itemdetails?item_ids=a,b,…). */
#define BULK_MAX 100

struct bsplit;

struct bcall {
    struct batch *b;
    char **ids;
    size_t n;
    struct bsplit *sp; /* the split this call is a part of, or NULL */
};

/* The parts of a GET /itemdetails that failed past its tries on the run's
 * last attempt or in a stock run. Zoho answers every item of a call or
 * none, so one item it cannot serve (its own GET fails too) failed the call
 * of the 99 others, on every attempt: the run failed for good, its cursor
 * never moving, and in a stock run the item, queued longest, came first in
 * every run. So the call is asked again in parts, each tried once
 * (tds_api_get_once: the whole call had its tries): four at the first
 * level, two below. A part that fails is split again, down to the one item,
 * which is refused (batch_done: left in list form, or put off). Parts that
 * all fail fail the run, as the whole call did, since Zoho failing is most
 * often Zoho down, unless a part of the split they come from was served:
 * then each holds such an item, and each is halved (its halves failing both
 * again fail the run). Four parts at the first level, not two: with
 * halves, two items parted by the first halving failed the run on every
 * attempt, as an outage would. Now two such items in a call of three or
 * more are always found: the first level leaves a part served, and once a
 * halving parts the two, each half holds one. Three or more can still fail
 * the run, as an outage would: four in four parts, or three in one part
 * when two halvings in a row each leave such items in both halves. One
 * such item among 100 costs the whole call's tries and up to 14 requests
 * more, 6 of them failing; an outage, four requests more (four below a
 * level where both halves failed). */
#define SPLIT_FIRST 4
struct bsplit {
    int pending;                       /* parts not answered yet, and the one queueing */
    struct bcall *failed[SPLIT_FIRST]; /* parts that failed, kept */
    size_t n_parts, n_failed;
    bool served;                       /* a part of the split this one splits was served */
    char *error;                       /* the first failure's words */
};

static void bcall_free(struct bcall *bc);

static void bsplit_free(struct bsplit *sp)
{
    for (size_t i = 0; i < sp->n_failed; i++) {
        sp->failed[i]->sp = NULL;
        bcall_free(sp->failed[i]);
    }
    free(sp->error);
    free(sp);
}

/* A call withdrawn or dropped, or answered: one part less to wait for. */
static void bsplit_unref(struct bsplit *sp)
{
    if (--sp->pending == 0)
        bsplit_free(sp);
}

static void bcall_free(struct bcall *bc)
{
    struct bsplit *sp = bc->sp;
    for (size_t i = 0; i < bc->n; i++)
        free(bc->ids[i]);
    free(bc->ids);
    free(bc);
    if (sp)
        bsplit_unref(sp);
}

/* Queue a single detail call for each id of bc not answered yet; returns how
 * many were queued (on_detail counts those). */
static size_t hand_to_detail(struct batch *b, struct bcall *bc)
{
    size_t handed = 0;
    for (size_t i = 0; i < bc->n && !b->r->failed; i++) {
        if (!bc->ids[i])
            continue;
        if (queue_detail(b, bc->ids[i]) != 0)
            run_fail(b->r, "out of memory queueing detail calls");
        else
            handed++;
    }
    return handed;
}

/* An item that keeps stock whose detail shows no stock site: a
 * `warehouses` or `locations` array, empty or not, is there in every
 * detail of Zoho Inventory's GET /items/{id}, and Books documents them in
 * its item too. Whether GET /itemdetails has them, in either product, is
 * not confirmed (ZOHO.md). Written as the complete record it stands for,
 * such a detail deletes every stock row of its item. Only an item whose
 * item_type says "inventory" is taken to keep stock: a record that does
 * not say so never switches an organization to a call per item. */
/* -1: not an item that keeps stock (says nothing), 0: one without a stock
 * site array, 1: one with (empty or not). */
static int stock_sites(const char *rec, size_t len)
{
    static const char *const keys[] = {"locations", "warehouses"};
    struct tds_span sp;
    char type[32];

    if (tds_json_scalar(rec, len, "item_type", type, sizeof(type)) != 0 ||
        strcmp(type, "inventory") != 0)
        return -1;
    for (size_t i = 0; i < TDS_ARRAY_SIZE(keys); i++)
        if (tds_json_member_span(rec, len, keys[i], &sp) == 0 && sp.len > 0 && rec[sp.off] == '[')
            return 1;
    return 0;
}

static bool lacks_stock(const char *rec, size_t len)
{
    return stock_sites(rec, len) == 0;
}

static int queue_bulk(struct batch *b, char **ids, size_t n, struct bsplit *sp);
static void bsplit_done(struct batch *b, struct bsplit *sp);

/* Ask for ids (n > 1) again in parts of one new split: SPLIT_FIRST (or n)
 * at the first level, two below (served: a part of the split ids come from
 * was served); returns how many were queued (the rest count answered: the
 * run failed). Its caller holds b->want up. */
static size_t split_bulk(struct batch *b, char **ids, size_t n, bool first, bool served)
{
    struct bsplit *sp = calloc(1, sizeof(*sp));
    if (!sp) {
        run_fail(b->r, "out of memory");
        return 0;
    }
    sp->served = served;
    sp->n_parts = first ? (n < SPLIT_FIRST ? n : SPLIT_FIRST) : 2;
    sp->pending = 1; /* while queueing: a part may be answered at once */
    size_t queued = 0;
    for (size_t k = 0; k < sp->n_parts; k++) {
        size_t from = n * k / sp->n_parts, to = n * (k + 1) / sp->n_parts;
        if (queue_bulk(b, ids + from, to - from, sp) != 0)
            break;
        queued = to;
    }
    if (queued < n)
        run_fail(b->r, "out of memory queueing detail calls");
    bsplit_done(b, sp);
    return queued;
}

/* One of sp's parts answered (or its queueing ended). Once none is left,
 * each part that failed is split again, or its one item refused; unless
 * all failed and no part of the split before was served either (the first
 * level, or two halvings in a row that both failed): Zoho is down, and the
 * run fails. */
static void bsplit_done(struct batch *b, struct bsplit *sp)
{
    if (--sp->pending > 0)
        return;
    struct run *r = b->r;
    if (!r->failed && sp->n_failed == sp->n_parts && !sp->served) {
        run_fail(r, "itemdetails failed: %s", sp->error ? sp->error : "failed");
    } else {
        for (size_t i = 0; i < sp->n_failed && !r->failed; i++) {
            struct bcall *h = sp->failed[i];
            if (h->n > 1) {
                b->want += h->n; /* counted answered when it failed: owed again */
                r->records_walked -= (int64_t)h->n;
                size_t queued = split_bulk(b, h->ids, h->n, false, sp->n_failed < sp->n_parts);
                b->want -= h->n - queued;
                r->records_walked += (int64_t)(h->n - queued);
            } else {
                char *id = h->ids[0];
                h->ids[0] = NULL;
                if (batch_refuse(b, id, sp->error ? sp->error : "failed") != 0)
                    run_fail(r, "out of memory");
            }
        }
    }
    bsplit_free(sp);
}

static void on_bulk(const struct tds_api_result *res, void *ud)
{
    struct bcall *bc = ud;
    struct batch *b = bc->b;
    struct run *r = b->r;
    r->outstanding--;
    if (r->o->dropping) {
        bcall_free(bc);
        return;
    }
    r->api_calls++;
    size_t handed = 0; /* ids passed on to single detail calls, or to halves */
    bool kept = false; /* bc held by its split (bsplit) */
    /* held up while answers given at once inside tds_api_get come back:
     * the batch must not be completed and freed under this call */
    b->want++;
    if (!r->failed && res->cls == TDS_ZAPI_OK) {
        struct tds_span *spans = NULL;
        size_t n = 0;
        bool no_stock = false;
        if (tds_json_array_spans(res->body, res->len, r->e->list_key, &spans, &n) != 0) {
            run_fail(r, "itemdetails answer has no '%s' array", r->e->list_key);
        } else {
            for (size_t k = 0; k < n && !r->o->sites_absent && !no_stock; k++)
                no_stock = lacks_stock(res->body + spans[k].off, spans[k].len);
        }
        if (no_stock) {
            /* Each item from its own GET /items/{id}, for good (another
             * batch would be the same), unless the first such answer has
             * no stock site either (on_detail). */
            if (!r->o->no_bulk)
                tds_log(TDS_LOG_WARN, &r->o->lctx,
                        "GET /itemdetails answers items without their stock per site: asking "
                        "for items one by one from now on");
            r->o->no_bulk = r->o->no_bulk_sites = true;
            free(spans);
            b->want++;
            handed = hand_to_detail(b, bc);
            b->want--;
        } else if (!r->failed) {
            for (size_t k = 0; k < n; k++) {
                const char *rec = res->body + spans[k].off;
                char idbuf[128];
                if (tds_json_scalar(rec, spans[k].len, r->e->id_field, idbuf, sizeof(idbuf)) != 0)
                    continue;
                for (size_t i = 0; i < bc->n; i++) {
                    if (!bc->ids[i] || strcmp(bc->ids[i], idbuf) != 0)
                        continue;
                    char *copy = malloc(spans[k].len + 1);
                    if (!copy)
                        break;
                    memcpy(copy, rec, spans[k].len);
                    copy[spans[k].len] = '\0';
                    b->recs[b->n_recs].p = copy;
                    b->recs[b->n_recs].n = spans[k].len;
                    b->n_recs++;
                    b->n_served++;
                    batch_observed(b, res);
                    free(bc->ids[i]);
                    bc->ids[i] = NULL;
                    break;
                }
            }
            free(spans);
            /* Not in the answer: ask one by one (code 1002 there means deleted). */
            b->want++; /* held while they are queued, as in start_batch */
            handed = hand_to_detail(b, bc);
            b->want--;
        }
    } else if (!r->failed && res->cls == TDS_ZAPI_FATAL && !res->paused) {
        /* Refused as a whole: the same ids one by one still answer. An
         * organization whose Zoho says it does not know the path (a JSON
         * answer: code 5, or a 404 with Zoho's envelope) keeps asking that
         * way. A 404 without Zoho's JSON (a proxy's HTML page) says nothing
         * about the path: only this call's ids go one by one. It used to
         * switch the organization to a call per item for the life of the
         * process, up to 100 times the detail calls of its daily quota. */
        bool unknown = res->code == 5 || (res->status == 404 && res->code >= 0);
        if (unknown && !r->o->no_bulk)
            tds_log(TDS_LOG_WARN, &r->o->lctx,
                    "GET /itemdetails refused (%s): asking for items one by one from now on",
                    res->error ? res->error : tds_zapi_class_name(res->cls));
        else if (!unknown)
            tds_log(TDS_LOG_WARN, &r->o->lctx,
                    "GET /itemdetails refused (%s): asking for these %zu items one by one",
                    res->error ? res->error : tds_zapi_class_name(res->cls), bc->n);
        if (unknown)
            r->o->no_bulk = true;
        b->want++;
        handed = hand_to_detail(b, bc);
        b->want--;
    } else if (!r->failed && res->cls == TDS_ZAPI_NOTFOUND) {
        /* Code 1002 ("does not exist") for the call as a whole: Zoho may
         * answer a batch holding one deleted id that way (not confirmed),
         * and a reconciliation sends exactly those. Asked one by one, the
         * deleted ones get a 1002 each and are marked deleted (on_detail),
         * the others their records. The path is known: later batches still
         * use it. It used to fail the run, every time, so such items were
         * never marked deleted. */
        tds_log_limited(&r->o->s->bulk_gone_log, TDS_LOG_INFO, &r->o->lctx,
                        "GET /itemdetails answered code %lld (does not exist) for %zu items, "
                        "asking for them one by one",
                        (long long)res->code, bc->n);
        b->want++;
        handed = hand_to_detail(b, bc);
        b->want--;
    } else if (!r->failed && res->cls == TDS_ZAPI_RETRY && !res->paused && !res->denied &&
               (r->attempt >= RUN_RETRIES || strcmp(r->mode, "stock") == 0)) {
        /* Past its tries, where a failure no longer fails the run (as for
         * a single record's call, on_detail): find the item it stumbles on. */
        const char *why = res->error ? res->error : tds_zapi_class_name(res->cls);
        if (bc->sp) {
            struct bsplit *sp = bc->sp;
            sp->failed[sp->n_failed++] = bc; /* its split decides, its ids counted answered */
            if (!sp->error)
                sp->error = strdup(why);
            kept = true;
        } else if (bc->n == 1) {
            char *id = bc->ids[0];
            bc->ids[0] = NULL;
            if (batch_refuse(b, id, why) != 0)
                run_fail(r, "out of memory");
        } else {
            tds_log_limited(&r->o->s->refused_log, TDS_LOG_WARN, &r->lctx,
                            "GET /itemdetails of %zu items failed past its tries (%s): asking for "
                            "them in parts, to find any item zoho cannot serve",
                            bc->n, why);
            handed = split_bulk(b, bc->ids, bc->n, true, false);
        }
    } else if (!r->failed) {
        r->denied = res->denied;
        run_fail(r, "itemdetails failed: %s", res->error ? res->error : tds_zapi_class_name(res->cls));
    }
    b->got += bc->n - handed;
    r->records_walked += (int64_t)(bc->n - handed);
    struct bsplit *sp = bc->sp;
    if (!kept) {
        bc->sp = NULL;
        bcall_free(bc);
    }
    if (sp)
        bsplit_done(b, sp);
    if (--b->want == b->got)
        batch_done(b);
    else if (batch_flush_due(b))
        batch_flush(b);
}

static void on_list(const struct tds_api_result *res, void *ud);

/* tds_api_withdraw: the calls of run arg (a failed one). */
static bool run_call(tds_api_cb cb, void *ud, void *arg)
{
    if (cb == on_detail)
        return ((struct dcall *)ud)->b->r == arg;
    if (cb == on_bulk)
        return ((struct bcall *)ud)->b->r == arg;
    return cb == on_list && ud == arg;
}

/* A withdrawn call counts as answered, without an answer. Its batch is not
 * completed here (the callback chain that failed the run may hold it): a
 * failed run's batches are freed with the run, or by batch_done when its
 * last call in flight ends. */
static bool run_call_dispose(tds_api_cb cb, void *ud, void *arg)
{
    struct run *r = arg;
    if (cb == on_detail) {
        struct dcall *dc = ud;
        dc->b->got++;
        free(dc->id);
        free(dc);
    } else if (cb == on_bulk) {
        struct bcall *bc = ud;
        bc->b->got += bc->n;
        bcall_free(bc);
    } else {
        r->list_busy = false;
    }
    r->outstanding--;
    return true;
}

static int queue_bulk(struct batch *b, char **ids, size_t n, struct bsplit *sp)
{
    struct run *r = b->r;
    struct bcall *bc = calloc(1, sizeof(*bc));
    struct tds_buf q = {0};
    int rc = bc && (bc->ids = calloc(n, sizeof(*bc->ids))) ? 0 : -ENOMEM;
    if (rc == 0) {
        bc->b = b;
        rc = tds_buf_add(&q, "item_ids=", 9);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char *esc = tds_http_escape(ids[i]);
        bc->ids[i] = strdup(ids[i]);
        bc->n = i + 1;
        rc = esc && bc->ids[i] ? tds_buf_addf(&q, "%s%s", i ? "%2C" : "", esc) : -ENOMEM;
        free(esc);
    }
    if (rc == 0 && sp) {
        bc->sp = sp; /* one part more to wait for, released by bcall_free if not sent */
        sp->pending++;
    }
    if (rc == 0)
        rc = sp ? tds_api_get_once(r->o->api, "items.itemdetails", "/itemdetails", q.p, on_bulk, bc)
                : tds_api_get(r->o->api, "items.itemdetails", "/itemdetails", q.p, on_bulk, bc);
    tds_buf_deinit(&q);
    if (rc != 0) {
        if (bc)
            bcall_free(bc);
        return rc;
    }
    r->outstanding++;
    return 0;
}

static bool use_bulk(const struct run *r)
{
    return strcmp(r->e->name, "items") == 0 && !r->o->no_bulk;
}

/* Keep a copy of the list forms lists[0..n) in b, asked for at observed_ms. */
static int batch_hold(struct batch *b, const struct tds_bytes *lists, size_t n,
                      int64_t observed_ms)
{
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += lists[i].n;
    b->list_buf = malloc(bytes ? bytes : 1);
    b->lists = calloc(n ? n : 1, sizeof(*b->lists));
    if (!b->list_buf || !b->lists)
        return -ENOMEM;
    char *p = b->list_buf;
    for (size_t i = 0; i < n; i++) {
        memcpy(p, lists[i].p, lists[i].n);
        b->lists[i] = (struct tds_bytes){p, lists[i].n};
        p += lists[i].n;
    }
    b->n_lists = n;
    b->list_observed_ms = observed_ms;
    return 0;
}

/* Queue detail calls for ids; one detail page is sent when all answered.
 * lists (or NULL): their list forms, held until then (struct batch). */
static int start_batch(struct run *r, char **ids, size_t n, const struct tds_bytes *lists,
                       int64_t list_observed_ms)
{
    struct batch *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    if (lists && batch_hold(b, lists, n, list_observed_ms) != 0) {
        batch_free(b);
        return -ENOMEM;
    }
    b->r = r;
    b->flushed_ms = tds_now_ms();
    /* One more than the calls: an answer given at once, inside
     * tds_api_get (a refused endpoint, a paused organization), must not
     * complete and free the batch while it is still being queued. */
    b->want = n + 1;
    b->recs = calloc(n, sizeof(*b->recs));
    b->deleted = calloc(n, sizeof(*b->deleted));
    if (!b->recs || !b->deleted) {
        batch_free(b); /* counts are 0: only the arrays go */
        return -ENOMEM;
    }
    b->next = r->batches;
    r->batches = b;
    r->n_batches++;
    if (use_bulk(r)) {
        for (size_t i = 0; i < n; i += BULK_MAX) {
            size_t k = n - i < BULK_MAX ? n - i : BULK_MAX;
            if (r->failed) {
                b->want -= k; /* not asked for a failed run */
                continue;
            }
            if (queue_bulk(b, ids + i, k, NULL) != 0) {
                b->want -= k; /* never asked: count them answered */
                run_fail(r, "out of memory queueing detail calls");
            }
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            if (r->failed) {
                b->want--; /* not asked for a failed run */
                continue;
            }
            if (queue_detail(b, ids[i]) != 0) {
                b->want--;
                run_fail(r, "out of memory queueing detail calls");
            }
        }
    }
    if (--b->want == b->got)
        batch_done(b);
    return 0;
}

/* The kept records of a list page, but those held (held[i], when held is
 * not NULL) for their detail. */
static void send_list_page(struct run *r, const char *body, struct tds_span *spans, size_t *keep,
                           size_t n_keep, const bool *held, int64_t observed_ms)
{
    struct org_rt *o = r->o;
    struct tds_bytes *recs = calloc(n_keep ? n_keep : 1, sizeof(*recs));
    if (!recs) {
        run_fail(r, "out of memory building a page");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < n_keep; i++) {
        if (held && held[i])
            continue;
        recs[n].p = (char *)body + spans[keep[i]].off;
        recs[n].n = spans[keep[i]].len;
        n++;
    }
    if (!n) {
        free(recs);
        return;
    }
    struct tds_msg m;
    run_page(r, &m);
    /* An entity without a detail call is complete in its list form. */
    m.u.page.detail = r->e->detail_path == NULL;
    m.u.page.records = recs;
    m.u.page.n_records = n;
    m.u.page.fetched_ms = observed_ms;
    int rc = m.id ? deliver(o->s, o, r, &m) : -ENOMEM;
    free(m.id);
    free(recs);
    if (rc != 0)
        run_fail(r, "could not encode list page: %d", rc);
}

/* A list record whose id is not one (tds_zoho_id_ok) or cannot be read
 * (id NULL): counted and logged; its detail is not asked for. */
static void bad_list_id(struct run *r, size_t i, const char *id)
{
    struct tds_sync *s = r->o->s;
    char shown[48];
    size_t n = 0;
    /* a printable sketch of it: what is not an id character shows as '?' */
    for (; id && id[n] && n < 32; n++) {
        char c = id[n];
        shown[n] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                           c == '_' || c == '-' || c == '.'
                       ? c
                       : '?';
    }
    shown[n] = '\0';
    if (s->m_bad_id)
        tds_series_inc(s->m_bad_id, 1);
    tds_log_limited(&s->bad_id_log, TDS_LOG_WARN, &r->lctx,
                    "list page %lld of %s: record %zu has %s '%s%s' (%zu bytes), not fetching its "
                    "detail (the processor rejects it)",
                    (long long)r->next_page, r->e->name, i + 1,
                    id ? "an invalid id" : "an unreadable id", shown,
                    id && strlen(id) > n ? "..." : "", id ? strlen(id) : (size_t)0);
}

static void on_list(const struct tds_api_result *res, void *ud)
{
    struct run *r = ud;
    struct org_rt *o = r->o;
    int64_t t_start = tds_now_ms();
    r->outstanding--;
    if (o->dropping)
        return;
    r->api_calls++;
    r->list_busy = false;
    if (r->failed)
        return;
    if (res->cls != TDS_ZAPI_OK) {
        r->denied = res->denied;
        run_fail(r, "list page %lld of %s failed: %s", (long long)r->next_page, r->e->name,
                 res->error ? res->error : tds_zapi_class_name(res->cls));
        return;
    }
    if (res->zoho_sent_s >= 0 && (r->zoho_start_s < 0 || res->zoho_sent_s < r->zoho_start_s))
        r->zoho_start_s = res->zoho_sent_s;
    /* Slices and scalars only, no tree: this runs on the loop for every
     * page, and a stalled loop is quota not used. */
    struct tds_span *spans = NULL;
    size_t n = 0;
    struct list_call lc = list_call(r);
    if (tds_json_array_spans(res->body, res->len, lc.key, &spans, &n) != 0) {
        free(spans);
        run_fail(r, "list page %lld of %s has no '%s' array", (long long)r->next_page, r->e->name,
                 lc.key);
        return;
    }
    bool more = false;
    struct tds_span pcs;
    if (tds_json_member_span(res->body, res->len, "page_context", &pcs) == 0) {
        char hm[8];
        more = tds_json_scalar(res->body + pcs.off, pcs.len, "has_more_page", hm, sizeof(hm)) == 0 &&
               strcmp(hm, "true") == 0;
    }
    size_t *keep = calloc(n ? n : 1, sizeof(*keep));
    char **ids = calloc(n ? n : 1, sizeof(*ids));
    int64_t *mods = calloc(n ? n : 1, sizeof(*mods));
    size_t *kpos = calloc(n ? n : 1, sizeof(*kpos)); /* an id's place in keep */
    size_t n_keep = 0, n_ids = 0;
    if (!keep || !ids || !mods || !kpos) {
        free(keep);
        free(ids);
        free(mods);
        free(kpos);
        free(spans);
        run_fail(r, "out of memory reading a list page");
        return;
    }
    bool reconcile = strcmp(r->mode, "reconcile") == 0;
    struct idset page_ids = {0};
    for (size_t i = 0; i < n; i++) {
        const char *rec = res->body + spans[i].off;
        char idbuf[128], tbuf[64];
        /* A record without a readable id still goes to the processor, which
         * rejects it visibly (tds.rejected); we just cannot fetch its detail. */
        char *id = NULL;
        int irc = tds_json_scalar(rec, spans[i].len, lc.id_field, idbuf, sizeof(idbuf));
        if (irc == 0 && !tds_zoho_id_ok(idbuf)) {
            /* Bytes that are not UTF-8 made PostgreSQL refuse the whole
             * id array, failing the run on every retry: the entity never
             * synced again. Its record still goes on, to be rejected. */
            bad_list_id(r, i, idbuf);
            irc = TDS_E_INVALID;
        } else if (irc != 0 && irc != TDS_E_NOTFOUND) {
            bad_list_id(r, i, NULL);
        }
        if (irc == 0 && !(id = strdup(idbuf))) {
            run_fail(r, "out of memory reading a list page");
            break;
        }
        int64_t mod = INT64_MIN;
        int mod_off = TDS_ZTIME_NO_OFFSET;
        if (r->e->modified_field) {
            int64_t t;
            if (tds_json_scalar(rec, spans[i].len, r->e->modified_field, tbuf, sizeof(tbuf)) == 0 &&
                tds_ztime_parse_at(tbuf, &t, &mod_off) == 0)
                mod = t;
        }
        /* Zoho's filter is a hint: the overlap and our own check decide. */
        if (r->has_since && mod != INT64_MIN && mod < r->since_s) {
            r->older++;
            free(id);
            continue;
        }
        /* A record listed twice on one page went on twice: in one rows
         * message the writer cannot tell two copies' child rows apart, so
         * an identical copy failed its record on the child table's key
         * (rejected, the record not stored) and an older one left its child
         * rows beside the newer's. One copy goes on: the newest, else the
         * first. */
        int dup = id ? idset_add(&page_ids, id) : 1;
        if (dup <= 0) {
            if (dup < 0) {
                free(id);
                run_fail(r, "out of memory reading a list page");
                break;
            }
            tds_log_limited(&o->s->bad_id_log, TDS_LOG_WARN, &r->lctx,
                            "list page %lld of %s lists %s %s more than once: one copy taken",
                            (long long)r->next_page, r->e->name, r->e->id_field, idbuf);
            for (size_t j = 0; j < n_ids; j++)
                if (strcmp(ids[j], id) == 0) {
                    if (mod != INT64_MIN && (mods[j] == INT64_MIN || mod > mods[j])) {
                        keep[kpos[j]] = i;
                        mods[j] = mod;
                        if (!r->have_max || mod > r->max_mod_s) {
                            r->max_mod_s = mod;
                            r->max_mod_off = mod_off;
                            r->have_max = true;
                        }
                    }
                    break;
                }
            free(id);
            continue;
        }
        if (reconcile && id)
            idset_add(&r->seen, id);
        if (mod != INT64_MIN && (!r->have_max || mod > r->max_mod_s)) {
            r->max_mod_s = mod;
            r->max_mod_off = mod_off;
            r->have_max = true;
        }
        if (id) {
            ids[n_ids] = id;
            mods[n_ids] = mod;
            kpos[n_ids] = n_keep;
            n_ids++;
        }
        keep[n_keep++] = i;
    }
    idset_clear(&page_ids);
    r->pages_fetched++;
    r->records_fetched += (int64_t)n_keep;
    /* which records need their detail: new, changed or only in list form
     * compared with the database. In a reconciliation too: a delete during a
     * walk shifts the pages it has not read, so a full walk can leave a
     * record out and an incremental one a change (the cursor then passes it).
     * Their list forms wait in the batch (struct batch); the page takes the
     * others, and takes them all when the database could not say. */
    size_t n_detail = 0; /* of the kept records, those whose detail is asked */
    char **need = NULL;
    size_t n_need = 0;
    bool *held = NULL;
    struct tds_bytes *need_lists = NULL;
    if (!r->failed && r->e->detail_path && n_ids) {
        struct tds_known *known = NULL;
        size_t n_known = 0;
        if (tds_store_known(o->s->store, r->e, o->org->org_id, (const char *const *)ids, n_ids, &known,
                            &n_known) != 0) {
            run_fail(r, "could not read %s from the database: %s", r->e->table,
                     tds_store_error(o->s->store));
        } else {
            struct idset fresh = {0};
            for (size_t k = 0; k < n_known; k++) {
                if (known[k].deleted || !known[k].is_detail)
                    continue;
                /* find this id's list modified time */
                for (size_t i = 0; i < n_ids; i++) {
                    if (strcmp(ids[i], known[k].id) == 0) {
                        if (known[k].modified_s != INT64_MIN &&
                            (mods[i] == INT64_MIN || mods[i] <= known[k].modified_s)) {
                            const struct tds_span *sp = &spans[keep[kpos[i]]];
                            if (figures_moved(r->e, known[k].figures, res->body + sp->off, sp->len))
                                r->moved++;
                            else
                                idset_add(&fresh, ids[i]);
                        }
                        break;
                    }
                }
            }
            need = calloc(n_ids, sizeof(*need));
            held = calloc(n_keep, sizeof(*held));
            need_lists = calloc(n_ids, sizeof(*need_lists));
            for (size_t i = 0; need && held && need_lists && i < n_ids; i++)
                if (!idset_has(&fresh, ids[i])) {
                    const struct tds_span *sp = &spans[keep[kpos[i]]];
                    need_lists[n_need] = (struct tds_bytes){(char *)res->body + sp->off, sp->len};
                    need[n_need++] = ids[i];
                    held[kpos[i]] = !reconcile;
                }
            idset_clear(&fresh);
            tds_store_known_free(known, n_known, r->e);
            if (!need || !held || !need_lists) {
                free(held);
                held = NULL;
                run_fail(r, "out of memory choosing detail calls");
            }
        }
    }
    /* the batch first: once it holds them (a run failing from now on sends
     * them itself), the page goes without them; else with them */
    bool batched = false;
    if (!r->failed && n_need) {
        if (start_batch(r, need, n_need, reconcile ? NULL : need_lists, res->sent_wall_ms) != 0)
            run_fail(r, "out of memory queueing detail calls");
        else
            batched = true;
        n_detail = batched ? n_need : 0; /* walked as their calls end */
    }
    if (!reconcile && n_keep)
        send_list_page(r, res->body, spans, keep, n_keep, batched ? held : NULL,
                       res->sent_wall_ms);
    free(need);
    free(held);
    free(need_lists);
    r->records_walked += (int64_t)(n_keep - n_detail);
    if (!r->failed)
        progress(r);
    for (size_t i = 0; i < n_ids; i++)
        free(ids[i]);
    free(ids);
    free(mods);
    free(kpos);
    free(keep);
    free(spans);
    if (r->failed)
        return;
    if (more && n > 0)
        r->next_page++;
    else
        r->list_done = true;
    tds_log(TDS_LOG_DEBUG, &r->lctx, "list page of %zu records handled in %lld ms", n,
            (long long)(tds_now_ms() - t_start));
    run_step(r);
}

static void fetch_list(struct run *r)
{
    struct org_rt *o = r->o;
    struct tds_sync *s = o->s;
    struct tds_buf q = {0};
    int rc = tds_buf_addf(&q, "page=%lld&per_page=%lld", (long long)r->next_page,
                          (long long)s->cfg.per_page);
    /* Every walk goes in created order, which an update does not disturb: in
     * modified order each update of a record already passed moves it to the
     * end and shifts an unread record onto a page read before. Filtered on
     * the modified time (incremental), the set only grows while we walk: a
     * record that enters it lands at its created place (read twice at worst),
     * none leaves it but by a delete. */
    if (rc == 0 && r->e->modified_field)
        rc = tds_buf_addf(&q, "&sort_column=created_time&sort_order=A");
    if (rc == 0 && r->has_since && r->e->supports_modified_filter) {
        char t[TDS_ZTIME_LEN];
        tds_ztime_format(r->since_s, r->since_off, t);
        char *esc = tds_http_escape(t);
        rc = esc ? tds_buf_addf(&q, "&%s=%s", r->e->modified_field, esc) : -ENOMEM;
        free(esc);
    }
    char endpoint[96];
    snprintf(endpoint, sizeof(endpoint), "%s.list", r->e->name);
    if (rc == 0)
        rc = tds_api_get_first(o->api, endpoint, list_call(r).path, q.p, on_list, r);
    tds_buf_deinit(&q);
    if (rc != 0) {
        run_fail(r, "out of memory queueing a list call");
        return;
    }
    r->list_busy = true;
    r->outstanding++;
}

/* Reconciliation: the database ids that the listing did not show, kept on
 * the run for confirm_next(). */
static void reconcile_finish(struct run *r)
{
    struct org_rt *o = r->o;
    r->reconciled = true;
    char **live = NULL;
    size_t n_live = 0;
    if (tds_store_live_ids(o->s->store, r->e, o->org->org_id, r->start_wall_ms, &live, &n_live) != 0) {
        run_fail(r, "could not read ids of %s: %s", r->e->table, tds_store_error(o->s->store));
        return;
    }
    r->confirm = calloc(n_live ? n_live : 1, sizeof(*r->confirm));
    for (size_t i = 0; r->confirm && i < n_live; i++) {
        if (idset_has(&r->seen, live[i]))
            continue;
        r->confirm[r->n_confirm++] = live[i]; /* the run's now */
        live[i] = NULL;
    }
    for (size_t i = 0; i < n_live; i++)
        free(live[i]);
    free(live);
    if (!r->confirm) {
        run_fail(r, "out of memory reconciling");
        return;
    }
    if (r->n_confirm)
        tds_log(TDS_LOG_INFO, &r->lctx, "reconciliation: %zu ids missing from zoho%s", r->n_confirm,
                r->e->detail_path ? ", confirming by id" : "");
}

/* The next chunks of missing ids, paced like a walk's detail batches: at
 * most two open, and one only while the pages in flight leave room for its
 * page. Started all at once when the walk ended, 10,000 missing ids were 50
 * batches and 10,000 calls queued together: the pages in flight and their
 * memory went past TDS_FETCHER_MAX_INFLIGHT(_BYTES) while the writer lagged,
 * and the run held the organization for as long as the daily quota took. */
static void confirm_next(struct run *r)
{
    struct org_rt *o = r->o;
    while (!r->failed && r->confirm_at < r->n_confirm && r->n_batches < 2 &&
           credits(o->s, 1 + r->n_batches)) {
        char **ids = r->confirm + r->confirm_at;
        size_t k = r->n_confirm - r->confirm_at;
        if (k > DELETE_CHUNK)
            k = DELETE_CHUNK;
        /* taken before the batch starts: it may end (and step) inside */
        r->confirm_at += k;
        if (r->e->detail_path) {
            /* A listing can skip records that moved while we paged: ask
             * for each one; only code 1002 makes it a delete. */
            if (start_batch(r, ids, k, NULL, 0) != 0)
                run_fail(r, "out of memory queueing confirmations");
            continue;
        }
        struct tds_msg m;
        run_page(r, &m);
        m.u.page.deleted_ids = ids;
        m.u.page.n_deleted = k;
        int rc = m.id ? deliver(o->s, o, r, &m) : -ENOMEM;
        free(m.id);
        if (rc != 0)
            run_fail(r, "could not encode a delete page: %d", rc);
    }
}

/* A clock this far ahead of Zoho's is worth a warning (the cursors are
 * right either way). */
#define CLOCK_AHEAD_WARN_S 60

/* The run's start for its cursor: the earlier of this host's clock and
 * Zoho's (the Date of its first list answer), so that neither clock running
 * ahead moves the cursor past a change made during the walk. */
static int64_t run_start_s(struct run *r)
{
    int64_t start_s = r->start_wall_ms / 1000;
    if (r->zoho_start_s < 0)
        return start_s;
    int64_t ahead = start_s - r->zoho_start_s;
    if (ahead > CLOCK_AHEAD_WARN_S)
        tds_log_limited(&r->o->s->clock_log, TDS_LOG_WARN, &r->lctx,
                        "this host's clock is about %lld s ahead of Zoho's: cursors follow "
                        "Zoho's (check NTP)", (long long)ahead);
    return r->zoho_start_s < start_s ? r->zoho_start_s : start_s;
}

static void send_final(struct run *r)
{
    struct org_rt *o = r->o;
    char cursor[TDS_ZTIME_LEN];
    const char *cur = NULL;
    if (strcmp(r->mode, "reconcile") != 0 && strcmp(r->mode, "stock") != 0 &&
        r->e->modified_field) {
        if (r->have_max) {
            /* Never past the run's start: a record changed during the walk
             * may have moved behind us; the next run starts from here. */
            int64_t c = r->max_mod_s;
            int64_t start_s = run_start_s(r);
            if (c > start_s)
                c = start_s;
            /* only overlap records seen: do not move the cursor back */
            int64_t old;
            if (r->old_cursor && tds_ztime_parse(r->old_cursor, &old) == 0 && old > c) {
                cur = r->old_cursor;
            } else {
                tds_ztime_format(c, r->max_mod_off != TDS_ZTIME_NO_OFFSET ? r->max_mod_off
                                                                           : o->offset_min,
                                 cursor);
                cur = cursor;
            }
        } else if (!r->old_cursor && strcmp(r->mode, "full") == 0) {
            /* A full walk of an empty entity (an organization that has no
             * invoices yet): the run's start, as for records seen after it.
             * With no cursor every scheduled incremental was a full walk
             * again, and every full walk queued a reconciliation: two list
             * calls an interval instead of one, for good. */
            tds_ztime_format(run_start_s(r), o->offset_min, cursor);
            cur = cursor;
        } else {
            cur = r->old_cursor; /* nothing changed: keep where we were */
        }
    }
    struct tds_msg m;
    run_page(r, &m);
    m.u.page.final = true;
    m.u.page.cursor = (char *)cur;
    progress(r);
    int rc = m.id ? deliver(o->s, o, r, &m) : -ENOMEM;
    free(m.id);
    if (rc != 0) {
        run_fail(r, "could not encode the final page: %d", rc);
        return;
    }
    r->final_sent = true;
    tds_log(TDS_LOG_DEBUG, &r->lctx, "final page sent, cursor %s", cur ? cur : "(none)");
}

static void run_step(struct run *r)
{
    if (r->failed || r->final_sent)
        return;
    struct tds_sync *s = r->o->s;
    if (s->stopping)
        return;
    if (!r->list_done) {
        /* Credits: a list page may bring a detail page; do not run further
         * ahead of the writer than max_inflight, nor of our detail calls. */
        if (!r->list_busy && r->n_batches < 2 && credits(s, 2 + r->n_batches))
            fetch_list(r);
        return;
    }
    if (r->list_busy)
        return;
    if (strcmp(r->mode, "reconcile") == 0) {
        if (!r->reconciled)
            reconcile_finish(r);
        confirm_next(r);
        if (r->failed || r->confirm_at < r->n_confirm)
            return;
    }
    if (r->n_batches > 0 || r->unacked > 0)
        return;
    send_final(r);
}

static struct run *run_new(struct org_rt *o, struct job *j)
{
    struct tds_sync *s = o->s;
    struct run *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->o = o;
    r->e = j->e;
    snprintf(r->mode, sizeof(r->mode), "%s", j->mode);
    r->request_id = j->request_id;
    r->attempt = j->attempt;
    snprintf(r->job_mode, sizeof(r->job_mode), "%s", j->mode);
    r->start_wall_ms = tds_wall_ms();
    r->zoho_start_s = -1;
    r->next_page = 1;
    char *u = tds_uid("r");
    if (!u) {
        free(r);
        return NULL;
    }
    if (j->request_id > 0)
        snprintf(r->id, sizeof(r->id), "rq%lld.%s.%s", (long long)j->request_id, j->e->name, u + 2);
    else
        snprintf(r->id, sizeof(r->id), "%s.%s.%s", r->mode, j->e->name, u + 2);
    free(u);
    r->lctx.org = o->org->org_id;
    r->lctx.entity = r->e->name;
    r->lctx.run = r->id;
    if (s->metrics) {
        char *oe = tds_metrics_escape(o->org->org_id);
        if (oe) {
            r->m_records = tds_metrics_getf(s->metrics, TDS_GAUGE, "tds_fetcher_run_records",
                                            "Records fetched by the current run",
                                            "org=\"%s\",entity=\"%s\"", oe, r->e->name);
            free(oe);
        }
    }
    return r;
}

static void run_start(struct org_rt *o, struct job *j)
{
    struct tds_sync *s = o->s;
    struct run *r = run_new(o, j);
    if (!r) {
        tds_log(TDS_LOG_ERROR, &o->lctx, "out of memory starting a run");
        return;
    }
    if (strcmp(r->mode, "incremental") == 0 && r->e->modified_field) {
        char *cursor = NULL;
        int64_t last = 0;
        if (tds_store_state_get(s->store, o->org->org_id, r->e->name, &cursor, &last) != 0) {
            /* a request stays open and is taken again; the schedule retries */
            tds_log(TDS_LOG_WARN, &r->lctx, "could not read the cursor: %s",
                    tds_store_error(s->store));
            if (!job_retry(o, j->e, j->mode, j->request_id, j->attempt))
                request_finished(o, j->request_id, NULL);
            run_free(r);
            return;
        }
        int64_t t;
        int off;
        if (cursor && tds_ztime_parse_at(cursor, &t, &off) == 0) {
            r->has_since = true;
            r->since_s = t - s->cfg.overlap_s;
            r->since_off = off != TDS_ZTIME_NO_OFFSET ? off : o->offset_min;
            r->old_cursor = cursor;
        } else {
            /* no cursor yet: the first incremental is a full walk */
            free(cursor);
            snprintf(r->mode, sizeof(r->mode), "full");
        }
    }
    if (strcmp(r->mode, "stock") == 0) {
        if (tds_store_stock_due(s->store, o->org->org_id, STOCK_MAX, &r->stock_ids, &r->n_stock,
                                r->stock_at, sizeof(r->stock_at)) != 0) {
            tds_log_limited(&s->send_log, TDS_LOG_WARN, &r->lctx,
                            "could not read tds.stock_refresh: %s", tds_store_error(s->store));
            r->n_stock = 0;
        }
        if (r->n_stock == 0) {
            run_free(r); /* nothing due (taken by an earlier run): the next look */
            return;
        }
    }
    if (tds_store_run_insert(s->store, r->id, o->org->org_id, r->e->name, r->mode) != 0) {
        tds_log(TDS_LOG_WARN, &r->lctx, "could not record the run: %s",
                tds_store_error(s->store));
        if (!job_retry(o, j->e, j->mode, j->request_id, j->attempt))
            request_finished(o, j->request_id, NULL);
        run_free(r);
        return;
    }
    if (r->request_id > 0)
        tds_store_request_set_run(s->store, r->request_id, r->id);
    if (!o->org->stock_locations && !o->sites_hinted && strcmp(r->e->name, "warehouses") == 0 &&
        tds_now_ms() >= o->sites_check_ms) {
        /* The items say Locations while the site list is asked of
         * /settings/warehouses: said once. Looked for at most hourly (the
         * look reads the organization's stock rows). */
        o->sites_check_ms = tds_now_ms() + 3600 * 1000;
        if (tds_store_stock_by_location(s->store, o->org->org_id) > 0) {
            o->sites_hinted = true;
            tds_log(TDS_LOG_WARN, &r->lctx,
                    "the organization's items give their stock by location, but its stock sites "
                    "are listed from /settings/warehouses: set \"stock_sites\": \"locations\" "
                    "for it in TDS_CONFIG so that zoho.warehouses holds its locations");
        }
    }
    o->run = r;
    tds_log(TDS_LOG_INFO, &r->lctx, "sync run started (%s%s)", r->mode,
            r->has_since ? ", from cursor" : "");
    tds_events_emit(s->events, "tds.zoho.sync.started", "org", o->org->org_id, "entity", r->e->name,
                    "run", r->id, "mode", r->mode, NULL);
    if (r->n_stock) {
        /* no walk: the items' details straight away */
        tds_log(TDS_LOG_INFO, &r->lctx, "%zu items whose stock documents moved, fetching them again",
                r->n_stock);
        r->list_done = true;
        if (start_batch(r, r->stock_ids, r->n_stock, NULL, 0) != 0)
            run_fail(r, "out of memory queueing detail calls");
    }
    run_step(r);
}

static void org_next(struct org_rt *o)
{
    if (o->s->stopping || !o->owned)
        return;
    while (!o->run && o->jobs) {
        /* The first job not backing off (a retry waits; the tick tries again). */
        int64_t now = tds_now_ms();
        struct job *prev = NULL, *j = o->jobs;
        while (j && j->not_before_ms && now < j->not_before_ms) {
            prev = j;
            j = j->next;
        }
        if (!j)
            return;
        if (prev)
            prev->next = j->next;
        else
            o->jobs = j->next;
        if (o->jobs_tail == j)
            o->jobs_tail = prev;
        run_start(o, j);
        free(j);
    }
}

/* ---- fetch by id ---- */

static void fetch_key(const struct tds_entity *e, const char *id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", e->name, id);
}

/* A page with no records that the writer commits only to ack what it
 * answers: a fetch handed on durably or not needed. Kept in flight and sent
 * again like any page until the writer acks it. */
static void ack_only(struct tds_sync *s, struct org_rt *o, const char *org, const char *entity,
                     struct acks *a)
{
    if (!a->n) {
        acks_free(a);
        return;
    }
    struct tds_msg m;
    memset(&m, 0, sizeof(m));
    char *id = tds_uid("pg");
    m.id = id;
    m.u.page.org = (char *)org;
    m.u.page.entity = (char *)entity;
    m.u.page.mode = (char *)"fetch";
    m.u.page.acks = a->v;
    m.u.page.n_acks = a->n;
    int rc = id ? deliver(s, o, NULL, &m) : -ENOMEM;
    free(id);
    if (rc != 0) {
        tds_log(TDS_LOG_ERROR, o ? &o->lctx : NULL,
                "could not send the ack of a fetch: %d (the ingress asks again)", rc);
    } else {
        /* like an answer: a resend meanwhile joins it (answering()) */
        struct inflight *f = &s->inf[s->n_inf - 1];
        f->pass.v = a->v;
        f->pass.n = a->n;
        a->v = NULL;
        a->n = 0;
    }
    acks_free(a);
}

static void call_link(struct fetch_call *fc)
{
    struct org_rt *o = fc->o;
    fc->prev = NULL;
    fc->next = o->calls;
    if (o->calls)
        o->calls->prev = fc;
    o->calls = fc;
}

static void call_unlink(struct fetch_call *fc)
{
    if (fc->prev)
        fc->prev->next = fc->next;
    else if (fc->o->calls == fc)
        fc->o->calls = fc->next;
    if (fc->next)
        fc->next->prev = fc->prev;
    fc->prev = fc->next = NULL;
}

static void dropped(struct tds_sync *s)
{
    if (s->m_dropped)
        tds_series_inc(s->m_dropped, 1);
}

/* A webhook's fetch refused without a call, because the organization is
 * paused or because Zoho refuses the entity to the token (a missing scope),
 * waits for an operator, maybe for days. Unacked, its ingress journal entry
 * held that segment and every later one on disk, and counted toward the
 * unacked bound: both are shared by every organization, which got 503s once
 * they filled. So it is kept here as an open tds.sync_requests row, one per
 * record (its call, made once the credentials or the scope are fixed,
 * answers every change before it), and the ingress is acked. A fetch handed
 * over has its row already. `while_`: what the row waits for, in its
 * requested_by. Returns whether it was kept. */
static bool keep_held(struct tds_sync *s, struct org_rt *o, struct fetch_call *fc,
                      const char *while_)
{
    if (!fc->acks.n_reqs) {
        char by[256];
        int64_t *held = NULL;
        size_t n_held = 0;
        snprintf(by, sizeof(by), "%s: fetch held while %s", s->origin, while_);
        /* An open row whose call was made here (its page waits for the
         * writer) answers the record as it was then, maybe before this
         * change: it does not stand in for this fetch. */
        int rc = tds_sync_fetch_request_ids(s, &held, &n_held);
        if (rc == 0)
            rc = tds_store_request_fetch_once(s->store, o->org->org_id, fc->e->name, fc->id, by,
                                              held, n_held);
        free(held);
        if (rc != 0) {
            tds_log_limited(&s->send_log, TDS_LOG_WARN, &o->lctx,
                            "could not keep the fetch of %s %s for when %s ends: "
                            "%s (the ingress sends it again)",
                            fc->e->name, fc->id, while_,
                            rc == -ENOMEM ? "out of memory" : tds_store_error(s->store));
            return false;
        }
    }
    struct acks pairs = {.v = fc->acks.v, .n = fc->acks.n};
    fc->acks.v = NULL;
    fc->acks.n = 0;
    if (s->m_kept)
        tds_series_inc(s->m_kept, 1);
    ack_only(s, o, o->org->org_id, fc->e->name, &pairs);
    return true;
}

static void on_fetch(const struct tds_api_result *res, void *ud)
{
    struct fetch_call *fc = ud;
    struct org_rt *o = fc->o;
    struct tds_sync *s = o->s;
    o->fetch_running--;
    call_unlink(fc);
    char fkey[512];
    fetch_key(fc->e, fc->id, fkey, sizeof(fkey));
    idset_del(&o->fl_keys, fkey);
    if (o->dropping) {
        free(fc->id);
        acks_free(&fc->acks);
        free(fc);
        return;
    }
    struct tds_msg m;
    memset(&m, 0, sizeof(m));
    struct tds_bytes rec;
    char *del[1] = {fc->id};
    bool send = false;
    if (res->cls == TDS_ZAPI_OK) {
        struct tds_span sp;
        if (tds_json_member_span(res->body, res->len, fc->e->detail_key, &sp) == 0) {
            rec.p = (char *)res->body + sp.off;
            rec.n = sp.len;
            m.u.page.records = &rec;
            m.u.page.n_records = 1;
            send = true;
        } else {
            /* Asking again gets the same answer: count it, log it, and
             * release whoever asked, like a fatal answer. */
            if (s->m_no_record)
                tds_series_inc(s->m_no_record, 1);
            tds_log_limited(&s->no_record_log, TDS_LOG_WARN, &o->lctx,
                            "fetch of %s %s answered code 0 without '%s', skipping", fc->e->name,
                            fc->id, fc->e->detail_key);
            close_requests(s, fc->acks.reqs, fc->acks.n_reqs);
            ack_only(s, o, o->org->org_id, fc->e->name, &fc->acks);
        }
    } else if (res->cls == TDS_ZAPI_NOTFOUND) {
        m.u.page.deleted_ids = del;
        m.u.page.n_deleted = 1;
        send = true;
    } else {
        /* Retrying will not help a fatal answer: release whoever asked (a
         * request that could never be answered would come back forever).
         * Anything else (transport, rate limits) is asked for again later,
         * and so is a call refused because the organization is paused or
         * because Zoho refuses the entity to the token: no answer from Zoho,
         * and one once the credentials or the scope are fixed. The paused
         * case used to count as fatal, so the fetch of a record deleted in
         * Zoho was acked and its 1002 lost until the next reconciliation;
         * the refused entity's was neither acked nor kept, and its journal
         * entry, sent again at every ack timeout, held the ingress's disk. */
        bool fatal = res->cls == TDS_ZAPI_FATAL && !res->paused;
        const char *why = res->error ? res->error : tds_zapi_class_name(res->cls);
        const char *later = fatal || !(fc->acks.n || fc->acks.n_reqs) ? "" : " (asked for again later)";
        if (res->paused || res->denied) {
            /* The ingress sends each unacked fetch again at every ack
             * timeout, and a paused organization or a refused entity refuses
             * them all until an operator acts: a line for each would bury
             * the log; the counter has them all. */
            char while_[128];
            if (res->paused)
                snprintf(while_, sizeof(while_), "the organization is paused");
            else
                snprintf(while_, sizeof(while_), "zoho refuses %s.detail to the token", fc->e->name);
            if (s->m_held)
                tds_series_inc(s->m_held, 1);
            if (fc->acks.n && keep_held(s, o, fc, while_))
                later = res->paused ? " (kept in tds.sync_requests until it resumes)"
                                    : " (kept in tds.sync_requests until zoho answers it)";
            tds_log_limited(&o->held_log, TDS_LOG_WARN, &o->lctx, "fetch of %s %s failed: %s, skipping%s",
                            fc->e->name, fc->id, why, later);
        } else {
            tds_log(TDS_LOG_WARN, &o->lctx, "fetch of %s %s failed: %s, skipping%s", fc->e->name, fc->id,
                    why, later);
        }
        if (fatal) {
            dropped(s);
            close_requests(s, fc->acks.reqs, fc->acks.n_reqs);
            ack_only(s, o, o->org->org_id, fc->e->name, &fc->acks);
        }
    }
    if (send) {
        m.u.page.acks = fc->acks.v;
        m.u.page.n_acks = fc->acks.n;
        char *id = tds_uid("pg");
        m.id = id;
        m.u.page.org = o->org->org_id;
        m.u.page.entity = (char *)fc->e->name;
        m.u.page.mode = (char *)"fetch";
        m.u.page.detail = true;
        m.u.page.fetched_ms = res->sent_wall_ms;
        int rc = id ? deliver(s, o, NULL, &m) : -ENOMEM;
        free(id);
        if (rc == 0) {
            /* the page just put in flight closes the requests when acked,
             * and knows whom it answers (a resend joins it) */
            struct inflight *f = &s->inf[s->n_inf - 1];
            f->reqs = fc->acks.reqs;
            f->n_reqs = fc->acks.n_reqs;
            f->pass.v = fc->acks.v;
            f->pass.n = fc->acks.n;
            f->entity = fc->e->name;
            fc->acks = (struct acks){0};
        }
        if (rc != 0)
            tds_log(TDS_LOG_ERROR, &o->lctx, "could not encode fetch page for %s %s: %d", fc->e->name,
                    fc->id, rc);
    }
    free(fc->id);
    acks_free(&fc->acks);
    free(fc);
    fetch_pump(o);
}

/* A fetch that answers a webhook: an ingress waits for its acks (or, handed
 * over, a tds.sync_requests row for its close). It goes ahead of the
 * sweep's, which nobody waits for, and ahead of the run's calls. */
static bool fetch_urgent(const struct acks *a) { return a->n || a->n_reqs; }

/* Queue it behind the webhooks' fetches already queued (after the last one)
 * and ahead of the sweep's: a sweep of SWEEP_MAX rows per entity must not
 * make a webhook's record minutes late. Order within each kind is kept. */
static void fq_insert(struct org_rt *o, struct fetch_item *it)
{
    struct fetch_item *after = NULL;
    if (fetch_urgent(&it->acks)) {
        for (struct fetch_item *q = o->fq; q && fetch_urgent(&q->acks); q = q->next)
            after = q;
    } else {
        after = o->fq_tail;
    }
    if (after) {
        it->next = after->next;
        after->next = it;
    } else {
        it->next = o->fq;
        o->fq = it;
    }
    if (o->fq_tail == after)
        o->fq_tail = it;
}

/* Whether o may make no call until Zoho's daily reset: its budget is spent
 * (code 45, or no more than daily_reserve left). */
static bool daily_stopped(const struct org_rt *o)
{
    return o->lim && tds_limiter_stopped(o->lim, tds_now_ms());
}

#define DAILY_HELD "zoho's daily API budget is spent"

/* A webhook's fetch while o's daily budget is spent would wait for the
 * reset, up to a day, unacked: its ingress journal entry held that segment
 * and every later one, and counted toward the unacked bound, both shared
 * by every organization (an organization that takes webhooks unsigned
 * fetches every one). So it is kept as a paused organization's is
 * (keep_held), claimed again once the reset has come. fc is linked, its
 * key in fl_keys. Returns whether it was kept (fc then freed). */
/* fc, linked and its key in fl_keys, given up: unlinked and freed. */
static void fetch_call_drop(struct org_rt *o, struct fetch_call *fc)
{
    char key[512];
    fetch_key(fc->e, fc->id, key, sizeof(key));
    idset_del(&o->fl_keys, key);
    call_unlink(fc);
    free(fc->id);
    acks_free(&fc->acks);
    free(fc);
}

static bool keep_while_stopped(struct org_rt *o, struct fetch_call *fc)
{
    if (!fc->acks.n || !keep_held(o->s, o, fc, DAILY_HELD))
        return false;
    tds_log_limited(&o->held_log, TDS_LOG_INFO, &o->lctx,
                    "fetch of %s %s kept in tds.sync_requests until zoho's daily reset",
                    fc->e->name, fc->id);
    fetch_call_drop(o, fc);
    return true;
}

static bool fetch_acked_by_ingress(tds_api_cb cb, void *ud, void *arg)
{
    return cb == on_fetch && ((struct fetch_call *)ud)->o == arg &&
           ((struct fetch_call *)ud)->acks.n > 0;
}

/* tds_api_withdraw: a webhook's fetch queued before the stop was known. */
static bool fetch_keep_withdrawn(tds_api_cb cb, void *ud, void *arg)
{
    (void)cb;
    struct fetch_call *fc = ud;
    struct org_rt *o = arg;
    o->fetch_running--;
    if (!keep_while_stopped(o, fc))
        fetch_call_drop(o, fc); /* not kept (the database away): the ingress sends it again */
    return true;
}

/* Every tick: the webhooks' fetches of an organization whose daily budget
 * is spent, kept rather than left waiting in its call queue. */
static void hold_stopped_fetches(struct tds_sync *s)
{
    for (size_t i = 0; i < s->n_o; i++) {
        struct org_rt *o = &s->o[i];
        if (o->owned && o->api && o->fetch_running > 0 && daily_stopped(o))
            tds_api_withdraw(o->api, fetch_acked_by_ingress, fetch_keep_withdrawn, o);
    }
}

static void fetch_pump(struct org_rt *o)
{
    struct tds_sync *s = o->s;
    while (o->owned && !s->stopping && o->fq && o->fetch_running < FETCH_CONCURRENCY &&
           credits(s, 1 + o->fetch_running)) {
        /* the oldest request whose record is not being fetched right now */
        struct fetch_item *it = o->fq, *prev = NULL;
        char key[512];
        for (; it; prev = it, it = it->next) {
            fetch_key(it->e, it->id, key, sizeof(key));
            if (!idset_has(&o->fl_keys, key))
                break;
        }
        if (!it)
            break;
        if (prev)
            prev->next = it->next;
        else
            o->fq = it->next;
        if (o->fq_tail == it)
            o->fq_tail = prev;
        o->n_fq--;
        idset_del(&o->fq_keys, key);
        struct fetch_call *fc = calloc(1, sizeof(*fc));
        char *esc = tds_http_escape(it->id);
        struct tds_buf path = {0};
        int rc = (fc && esc) ? tds_buf_addf(&path, "%s%s", it->e->detail_path, esc) : -ENOMEM;
        free(esc);
        char endpoint[96];
        snprintf(endpoint, sizeof(endpoint), "%s.detail", it->e->name);
        if (rc == 0 && idset_add(&o->fl_keys, key) < 0)
            rc = -ENOMEM;
        if (rc == 0) {
            fc->o = o;
            fc->e = it->e;
            fc->id = it->id;
            it->id = NULL;
            fc->acks = it->acks;
            it->acks = (struct acks){0};
            call_link(fc);
            if (daily_stopped(o) && keep_while_stopped(o, fc)) {
                tds_buf_deinit(&path);
                free(it);
                continue;
            }
            /* a webhook's ahead of the run's detail batches (like a list
             * page); FETCH_CONCURRENCY still bounds how many */
            if (fetch_urgent(&fc->acks))
                rc = tds_api_get_first(o->api, endpoint, path.p, NULL, on_fetch, fc);
            else
                rc = tds_api_get(o->api, endpoint, path.p, NULL, on_fetch, fc);
            if (rc != 0) {
                call_unlink(fc);
                idset_del(&o->fl_keys, key);
                free(fc->id);
                acks_free(&fc->acks);
            }
        }
        tds_buf_deinit(&path);
        free(it->id);
        acks_free(&it->acks);
        free(it);
        if (rc != 0) {
            free(fc);
            tds_log(TDS_LOG_ERROR, &o->lctx, "out of memory queueing a fetch, skipping");
            continue;
        }
        o->fetch_running++;
    }
}

static void fetch_queue_clear(struct org_rt *o)
{
    while (o->fq) {
        struct fetch_item *it = o->fq;
        o->fq = it->next;
        free(it->id);
        acks_free(&it->acks);
        free(it);
    }
    o->fq_tail = NULL;
    o->n_fq = 0;
    idset_clear(&o->fq_keys);
    idset_clear(&o->fl_keys);
}

static int64_t org_incremental_ms(const struct org_rt *o);

static struct org_rt *find_org(const struct tds_sync *s, const char *org)
{
    for (size_t i = 0; org && i < s->n_o; i++)
        if (strcmp(s->o[i].org->org_id, org) == 0)
            return &s->o[i];
    return NULL;
}

int64_t tds_sync_fetch_lease_ms(const struct tds_sync *s) { return 2 * s->cfg.ack_timeout_ms; }

static char *pass_key(const char *origin, const char *id)
{
    size_t no = strlen(origin), ni = strlen(id);
    char *k = malloc(no + ni + 2);
    if (k) {
        memcpy(k, origin, no);
        k[no] = '\x1f';
        memcpy(k + no + 1, id, ni + 1);
    }
    return k;
}

/* The page in flight that answers this ingress message, or NULL. */
static struct inflight *answering(struct tds_sync *s, const char *origin, const char *id)
{
    for (size_t i = 0; i < s->n_inf; i++)
        for (size_t k = 0; k + 1 < s->inf[i].pass.n; k += 2)
            if (strcmp(s->inf[i].pass.v[k + 1], id) == 0 &&
                strcmp(s->inf[i].pass.v[k], origin) == 0)
                return &s->inf[i];
    return NULL;
}

static void remember_answered(struct tds_sync *s, const struct acks *pass)
{
    if (!s->answered_ring && !(s->answered_ring = calloc(ANSWERED_MAX, sizeof(char *))))
        return;
    for (size_t k = 0; k + 1 < pass->n; k += 2) {
        char *key = pass_key(pass->v[k], pass->v[k + 1]);
        if (!key || idset_add(&s->answered, key) != 1) {
            free(key);
            continue;
        }
        char **slot = &s->answered_ring[s->answered_pos];
        if (*slot) {
            idset_del(&s->answered, *slot);
            free(*slot);
        }
        *slot = key;
        s->answered_pos = (s->answered_pos + 1) % ANSWERED_MAX;
    }
}

void tds_sync_on_fetch(struct tds_sync *s, const struct tds_msg_fetch *f, const char *msg_id,
                       int64_t request_id)
{
    struct org_rt *o = find_org(s, f->org);
    const struct tds_entity *e = tds_entity_find(f->entity);
    struct acks a = {0};
    /* An ingress's message is acked once the fetch is done or handed on, a
     * handed-over request closed once its page is acked; the schedule's own
     * fetches need neither. */
    if ((msg_id && f->origin && *f->origin && acks_add(&a, f->origin, msg_id) < 0) ||
        (request_id > 0 && acks_add_request(&a, request_id) < 0)) {
        acks_free(&a);
        tds_log(TDS_LOG_ERROR, NULL, "out of memory taking a fetch, skipping (asked for again later)");
        return;
    }
    if (a.n) {
        /* The ingress sends a message again when its ack is late. Answered
         * and committed: ack it now; answered by a page still in flight:
         * ack it with that page. Either way no second call to Zoho. */
        char *key = pass_key(f->origin, msg_id);
        bool done = key && idset_has(&s->answered, key);
        free(key);
        if (done) {
            close_requests(s, a.reqs, a.n_reqs);
            ack_only(s, o, f->org ? f->org : "", f->entity ? f->entity : "", &a);
            return;
        }
        struct inflight *p = answering(s, f->origin, msg_id);
        if (p) {
            if (acks_take(&p->late, &a) < 0)
                tds_log(TDS_LOG_ERROR, NULL, "out of memory joining a fetch (asked for again later)");
            return;
        }
    }
    if (!o || !e || !f->zoho_id || !*f->zoho_id) {
        dropped(s);
        tds_log(TDS_LOG_WARN, NULL, "fetch for unknown organization or entity '%s/%s', skipping",
                f->org ? f->org : "", f->entity ? f->entity : "");
        close_requests(s, a.reqs, a.n_reqs);
        ack_only(s, o, f->org ? f->org : "", f->entity ? f->entity : "", &a);
        return;
    }
    if (!tds_org_syncs(o->org, e)) {
        /* Its rows would never be kept up to date, and the call may ask an
         * endpoint the product lacks (item groups in Zoho Books). The
         * ingress refuses such webhooks; one journaled before it did, or a
         * configuration changed since, ends here. */
        dropped(s);
        tds_log_limited(&s->send_log, TDS_LOG_WARN, &o->lctx,
                        "fetch of %s %s skipped: the organization does not sync %s", e->name,
                        f->zoho_id, e->name);
        close_requests(s, a.reqs, a.n_reqs);
        ack_only(s, o, f->org, e->name, &a);
        return;
    }
    if (!o->owned && a.n_reqs) {
        /* taken just as the organization moved: the request stays open and
         * its new owner claims it after the lease */
        acks_free(&a);
        return;
    }
    if (!o->owned) {
        /* Another replica owns this organization and its quota: hand the
         * fetch to it through tds.sync_requests (it takes them every tick). */
        if (tds_store_request_fetch(s->store, f->org, f->entity, f->zoho_id, s->origin) == 0) {
            tds_log(TDS_LOG_DEBUG, &o->lctx, "fetch of %s %s handed to the owner", e->name, f->zoho_id);
            ack_only(s, o, f->org, e->name, &a);
            return;
        }
        dropped(s);
        tds_log_limited(&s->send_log, TDS_LOG_WARN, &o->lctx,
                        "could not hand a fetch to the owner: %s, skipping %s %s",
                        tds_store_error(s->store), e->name, f->zoho_id);
        acks_free(&a);
        return;
    }
    if (!e->detail_path) {
        /* complete in lists: the next incremental carries it */
        close_requests(s, a.reqs, a.n_reqs);
        ack_only(s, o, f->org, e->name, &a);
        return;
    }
    char key[512];
    fetch_key(e, f->zoho_id, key, sizeof(key));
    if (idset_has(&o->fl_keys, key)) {
        /* Asked of Zoho, not answered yet. A resend of a message the call
         * answers already (the ingress's ack was late), or a fetch nobody
         * waits for (the sweep), is answered by that call: queued, it cost
         * a second detail call once the first was answered. Another
         * message still waits for the call and then runs once (below): it
         * may tell of a change made after the call was sent. */
        const struct fetch_call *fc = o->calls;
        while (fc && !(fc->e == e && strcmp(fc->id, f->zoho_id) == 0))
            fc = fc->next;
        if (fc && acks_covered(&fc->acks, &a)) {
            acks_free(&a);
            return;
        }
    }
    if (idset_has(&o->fq_keys, key)) {
        /* still queued: one fetch answers both */
        struct fetch_item *it = o->fq, *prev = NULL;
        while (it && !(it->e == e && strcmp(it->id, f->zoho_id) == 0)) {
            prev = it;
            it = it->next;
        }
        bool was_urgent = it && fetch_urgent(&it->acks);
        if (it && acks_take(&it->acks, &a) < 0)
            tds_log(TDS_LOG_ERROR, &o->lctx, "out of memory joining a fetch (the ingress asks again)");
        if (it && !was_urgent && fetch_urgent(&it->acks)) {
            /* a sweep's fetch a webhook now waits for: move it ahead */
            if (prev)
                prev->next = it->next;
            else
                o->fq = it->next;
            if (o->fq_tail == it)
                o->fq_tail = prev;
            it->next = NULL;
            fq_insert(o, it);
        }
        acks_free(&a);
        return;
    }
    if ((int64_t)o->n_fq >= s->cfg.fetch_queue_max) {
        dropped(s);
        tds_log(TDS_LOG_WARN, &o->lctx, "fetch queue full (%zu), skipping %s %s%s", o->n_fq, e->name,
                f->zoho_id, a.n || a.n_reqs ? " (asked for again later)" : "");
        acks_free(&a);
        return;
    }
    struct fetch_item *it = calloc(1, sizeof(*it));
    if (!it || !(it->id = strdup(f->zoho_id)) || idset_add(&o->fq_keys, key) < 0) {
        if (it)
            free(it->id);
        free(it);
        acks_free(&a);
        return;
    }
    it->e = e;
    it->acks = a;
    fq_insert(o, it);
    o->n_fq++;
    fetch_pump(o);
}

/* ---- acks ---- */

static void pump_all(struct tds_sync *s)
{
    for (size_t i = 0; i < s->n_o; i++) {
        struct org_rt *o = &s->o[i];
        if (!o->owned)
            continue;
        if (o->run)
            run_step(o->run);
        fetch_pump(o);
    }
}

void tds_sync_on_ack(struct tds_sync *s, const struct tds_msg_ack *ack)
{
    if (!ack->origin || strcmp(ack->origin, s->origin) != 0)
        return;
    for (size_t k = 0; k < ack->n_ids; k++) {
        for (size_t i = 0; i < s->n_inf; i++) {
            if (strcmp(s->inf[i].id, ack->ids[k]) != 0)
                continue;
            struct run *r = s->inf[i].run;
            bool final = s->inf[i].final;
            struct org_rt *po = s->inf[i].o;
            const char *pe = s->inf[i].entity;
            struct acks late = s->inf[i].late;
            s->inf[i].late = (struct acks){0};
            close_requests(s, s->inf[i].reqs, s->inf[i].n_reqs);
            remember_answered(s, &s->inf[i].pass);
            inflight_remove(s, i);
            if (late.n)
                ack_only(s, po, po ? po->org->org_id : "", pe ? pe : "", &late);
            acks_free(&late);
            if (r) {
                r->unacked--;
                if (final && r->unacked == 0 && !r->failed)
                    run_completed(r);
                else
                    run_step(r);
            }
            break;
        }
    }
    pump_all(s);
}


/* Whether a run of e is running, or one that lists all of e (full or
 * reconcile) is queued, for o: a run fetches the detail of what it lists
 * that is only in list form (items in batches of 100, where the sweep's
 * GET /items/{id} costs a call a row), so the sweep leaves e to it. A
 * queued incremental lists only what changed: it does not count, or the
 * schedule's incrementals could keep the sweep out for good. */
static bool entity_run_due(const struct org_rt *o, const struct tds_entity *e)
{
    if (o->run && o->run->e == e)
        return true;
    for (const struct job *j = o->jobs; j; j = j->next)
        if (j->e == e && strcmp(j->mode, "incremental") != 0)
            return true;
    return false;
}

/* Fetch the detail of rows stored only in list form for a while: whatever
 * path lost their detail (a fetch-by-id in a killed replica, a failed run),
 * the database says what is owed. */
static void sweep_list_only(struct tds_sync *s)
{
    int64_t now = tds_now_ms();
    if (now < s->next_sweep_ms)
        return;
    s->next_sweep_ms = now + s->cfg.sweep_every_ms;
    int64_t before = tds_wall_ms() - SWEEP_AGE_MS;
    for (size_t i = 0; i < s->n_o; i++) {
        struct org_rt *o = &s->o[i];
        if (!o->owned || o->n_fq > 0)
            continue;
        if (tds_store_detail_attempts_prune(s->store, o->org->org_id) != 0)
            tds_log_limited(&s->send_log, TDS_LOG_WARN, &o->lctx,
                            "could not prune tds.detail_attempts: %s", tds_store_error(s->store));
        for (size_t k = 0; k < tds_entity_count(); k++) {
            const struct tds_entity *e = tds_entity_at(k);
            if (!e->detail_path || !tds_sync_org_syncs(o->org, e))
                continue;
            if (entity_run_due(o, e))
                continue; /* the run fetches the detail of what it lists */
            char **ids = NULL;
            size_t n = 0;
            if (tds_store_list_only_due(s->store, e, o->org->org_id, before, SWEEP_MAX,
                                        s->cfg.sweep_backoff_ms, s->cfg.sweep_backoff_max_ms, &ids,
                                        &n) != 0) {
                tds_log_limited(&s->send_log, TDS_LOG_WARN, &o->lctx,
                                "could not read rows in list form: %s", tds_store_error(s->store));
                return;
            }
            if (n)
                tds_log(TDS_LOG_INFO, &o->lctx, "%zu %s rows only in list form, fetching their detail", n,
                        e->name);
            for (size_t j = 0; j < n; j++) {
                struct tds_msg_fetch f = {.org = (char *)o->org->org_id, .entity = (char *)e->name,
                                          .zoho_id = ids[j]};
                tds_sync_on_fetch(s, &f, NULL, 0);
                free(ids[j]);
            }
            free(ids);
            if (!o->owned)
                break;
        }
    }
}

/* Queue a stock run for each organization whose documents moved the stock
 * of stored items (tds.stock_refresh), every stock_every_ms at most, no
 * closer than its last one's calls allow (stock_finished) and backing off
 * after failures (run_fail). Not while a stock run is queued or any run of
 * items is running; queued behind the organization's other jobs. */
static void stock_look(struct tds_sync *s)
{
    int64_t now = tds_now_ms();
    const struct tds_entity *items = tds_entity_find("items");
    for (size_t i = 0; items && i < s->n_o; i++) {
        struct org_rt *o = &s->o[i];
        if (!o->owned || now < o->next_stock_ms)
            continue;
        if (!tds_sync_org_syncs(o->org, items)) {
            /* variants written from their groups are items too: their rows
             * would wait for ever */
            o->next_stock_ms = now + 3600 * 1000;
            if (tds_store_stock_drop(s->store, o->org->org_id) != 0)
                tds_log_limited(&s->send_log, TDS_LOG_WARN, &o->lctx,
                                "could not empty tds.stock_refresh: %s", tds_store_error(s->store));
            continue;
        }
        if (tds_sync_pending(s, o->org->org_id, "items", "stock") ||
            tds_sync_paused(s, o->org->org_id))
            continue;
        o->next_stock_ms = now + s->cfg.stock_every_ms;
        int due = tds_store_stock_waiting(s->store, o->org->org_id);
        if (due < 0)
            tds_log_limited(&s->send_log, TDS_LOG_WARN, &o->lctx,
                            "could not read tds.stock_refresh: %s", tds_store_error(s->store));
        else if (due && tds_sync_enqueue(s, o->org->org_id, "items", "stock", 0) != 0)
            tds_log(TDS_LOG_WARN, &o->lctx, "could not queue a stock run");
    }
}

/* ---- quota use across owners ---- */

/* How far two fetchers' clocks may differ (NTP keeps them within a few
 * milliseconds); the next owner counts that much more of its predecessor's
 * calls as possibly inside the window. */
#define QUOTA_SKEW_MS 500
/* How often the owner writes what its limiters hold, and how long each
 * write licenses it to call: an owner whose writes fail stops calling
 * QUOTA_LICENCE_MS after the last one that worked, so a successor reading
 * that record knows when it stopped. */
#define QUOTA_SAVE_MS 1000
#define QUOTA_LICENCE_MS 5000

struct quota_landed {
    struct tds_sync *s;
    int64_t until_ms;
    bool *landed; /* per s->o[], NULL when it could not be allocated */
};

/* A row of tds_store_quota_save that landed: that organization may call
 * until until_ms. */
static void quota_landed(void *ud, const char *org)
{
    struct quota_landed *q = ud;
    struct org_rt *o = find_org(q->s, org);
    if (!o || !o->owned)
        return;
    tds_limiter_licence(o->lim, q->until_ms);
    if (q->landed)
        q->landed[o - q->s->o] = true;
}

/* Every second: what each owned organization's limiter holds, in one
 * statement, so that whoever owns it next (this process restarted, another
 * replica) starts from it; a write that worked licenses the organization's
 * calls for QUOTA_LICENCE_MS more. A failed one is logged. `only`: that
 * organization alone, at once (a takeover, before its first call). `last`:
 * the records at a gentle stop, marked so (stopped_at): no call starts after
 * them, and no other record follows. */
static void quota_save(struct tds_sync *s, struct org_rt *only, bool last)
{
    int64_t now = tds_now_ms(), off = tds_wall_ms() - now;
    if (s->quota_last_saved || (s->stopping && !last))
        return;
    if (!only && !last && s->quota_saved_ms && now - s->quota_saved_ms < QUOTA_SAVE_MS * 9 / 10)
        return;
    if (!only)
        s->quota_saved_ms = now;
    json_t *rows = json_array();
    int64_t *done = NULL;
    size_t cap = 0;
    bool ok = rows != NULL;
    for (size_t i = 0; ok && i < s->n_o; i++) {
        struct org_rt *o = &s->o[i];
        /* Not before its record has been read and claimed: until then its
         * limiter may hold the full window that stands in for the record,
         * which would be saved as calls made, and no licence lets it call. */
        if (!o->owned || !o->quota_claimed || (only && o != only))
            continue;
        size_t need = (size_t)tds_limiter_rate(o->lim);
        if (need > cap) {
            int64_t *d = realloc(done, need * sizeof(*d));
            if (!d) {
                ok = false;
                break;
            }
            done = d;
            cap = need;
        }
        struct tds_limiter_snapshot sn = {.done = done};
        tds_limiter_snapshot(o->lim, now, &sn);
        json_t *jd = json_array();
        for (size_t k = 0; jd && k < sn.n_done; k++)
            if (json_array_append_new(jd, json_integer(sn.done[k] + off)) != 0)
                ok = false;
        int64_t every_s = (org_incremental_ms(o) + 999) / 1000;
        if (o->m_every)
            tds_series_set(o->m_every, (double)every_s);
        json_t *row = jd ? json_pack("{s:s, s:I, s:o, s:o, s:I, s:o, s:I, s:b}", "org",
                                     o->org->org_id,
                                     "at", (json_int_t)(sn.at_ms + off), "next",
                                     sn.next_ms > INT64_MIN / 4 ? json_integer(sn.next_ms + off)
                                                                : json_null(),
                                     "pause",
                                     sn.pause_until_ms ? json_integer(sn.pause_until_ms + off)
                                                       : json_null(),
                                     "inflight", (json_int_t)sn.inflight, "done", jd, "every",
                                     (json_int_t)every_s, "stopped", last)
                         : NULL;
        if (!row || json_array_append_new(rows, row) != 0)
            ok = false;
    }
    free(done);
    char *text = ok && json_array_size(rows) ? json_dumps(rows, JSON_COMPACT) : NULL;
    json_decref(rows);
    if (!ok) {
        tds_log_limited(&s->quota_log, TDS_LOG_WARN, NULL,
                        "could not record the organizations' quota use: out of memory");
        return;
    }
    if (!text)
        return;
    /* the last records license nothing: no call follows them */
    struct quota_landed q = {.s = s, .until_ms = last ? 0 : now + QUOTA_LICENCE_MS,
                             .landed = calloc(s->n_o, sizeof(bool))};
    int rc = tds_store_quota_save(s->store, s->origin, s->claim, text, quota_landed, &q);
    if (last) {
        size_t n_landed = 0;
        for (size_t i = 0; q.landed && i < s->n_o; i++)
            n_landed += q.landed[i];
        s->quota_last_saved = true;
        if (rc == 0)
            tds_log(TDS_LOG_INFO, NULL,
                    "recorded the last quota use of %zu organizations (stopped_at): whoever "
                    "takes them over counts no call of this fetcher after it",
                    n_landed);
        else
            tds_log(TDS_LOG_WARN, NULL,
                    "could not record the last quota use at the stop: whoever takes the "
                    "organizations over assumes calls until the last licence ran out: %s",
                    tds_store_error(s->store));
        free(q.landed);
        free(text);
        return;
    }
    if (rc != 0) {
        tds_log_limited(&s->quota_log, TDS_LOG_WARN, NULL,
                        "could not record the organizations' quota use in tds.quota_use (their "
                        "calls stop %d s after the last record that worked): %s",
                        QUOTA_LICENCE_MS / 1000, tds_store_error(s->store));
    } else {
        /* A row that did not land holds another fetcher's claim: it took the
         * organization over, and this one has not noticed the loss of its
         * lock yet. No licence: its calls stop when the last one ends, as
         * the new owner assumed when it read the row. */
        for (size_t i = 0; q.landed && i < s->n_o; i++) {
            struct org_rt *o = &s->o[i];
            if (!o->owned || (only && o != only) || !o->quota_claimed || q.landed[i])
                continue;
            if (!o->quota_lost)
                tds_log(TDS_LOG_WARN, &o->lctx,
                        "another fetcher has claimed this organization's quota record: no calls "
                        "from here once the last licence ends (%d s), until this fetcher owns it "
                        "again",
                        QUOTA_LICENCE_MS / 1000);
            o->quota_lost = true;
        }
    }
    free(q.landed);
    free(text);
}

/* A change of the clock lead this small is not written at once: the bound
 * moves by a second or two with the calls' own times. It is written again
 * every LEAD_REWRITE_MS all the same, so a row made anew (restored, deleted
 * by hand, written again by quota_save without it) has it within a minute. */
#define LEAD_SAVE_STEP_S 3
#define LEAD_REWRITE_MS (60 * 1000)

/* The stock triggers (writer migration 028) compare an item's observed_at,
 * this host's clock, with a document's modified_time, Zoho's: they add the
 * lead recorded in the organization's tds.quota_use row to their slack, so a
 * clock running ahead does not leave stock stale. Written when it moves, by
 * the owner (its claim). */
static void clock_lead_save(struct tds_sync *s)
{
    int64_t now = tds_now_ms();
    for (size_t i = 0; i < s->n_o; i++) {
        struct org_rt *o = &s->o[i];
        int64_t lead;
        if (!o->owned || !o->quota_claimed || !o->api || !tds_api_clock_lead(o->api, &lead))
            continue;
        /* registered at the first measurement: a 0 before it would read as a
         * synced clock */
        if (!o->m_lead && s->metrics) {
            char *oe = tds_metrics_escape(o->org->org_id);
            o->m_lead = oe ? tds_metrics_getf(s->metrics, TDS_GAUGE, "tds_fetcher_clock_lead_seconds",
                                              "How far this host's clock runs ahead of Zoho's, at "
                                              "most (the Date of Zoho's answers; negative: behind); "
                                              "set while this fetcher owns the organization",
                                              "org=\"%s\"", oe)
                           : NULL;
            free(oe);
        }
        if (o->m_lead)
            tds_series_set(o->m_lead, (double)lead);
        if (o->lead_saved && llabs(lead - o->lead_saved_s) < LEAD_SAVE_STEP_S &&
            now - o->lead_saved_ms < LEAD_REWRITE_MS)
            continue;
        int rc = tds_store_clock_lead(s->store, o->org->org_id, s->claim, lead);
        if (rc == -EIO)
            tds_log_limited(&s->quota_log, TDS_LOG_WARN, &o->lctx,
                            "could not record this host's clock lead in tds.quota_use: %s",
                            tds_store_error(s->store));
        if (rc != 0) /* -ENOENT: the row is not written yet, or another's now */
            continue;
        o->lead_saved = true;
        o->lead_saved_s = lead;
        o->lead_saved_ms = now;
    }
}

/* Taking an organization over: read what the previous owner recorded and
 * claim its row in one statement (its later writes no longer land, so it
 * cannot renew its licence), start the limiter from it, then record this
 * owner's own use before its first call. Nothing recorded means nobody
 * owned it before. A row that cannot be read counts as a full window: wait
 * one rather than risk Zoho's code 44; the claim is tried again each tick. */
static void quota_take_over(struct org_rt *o)
{
    struct tds_sync *s = o->s;
    size_t cap = (size_t)tds_limiter_rate(o->lim);
    int64_t *done = malloc(cap * sizeof(*done));
    bool found = false, stopped = false;
    int64_t at = 0, next = INT64_MIN / 2, pause = 0, inflight = 0;
    size_t n_done = 0;
    int rc = done ? tds_store_quota_claim(s->store, o->org->org_id, s->origin, s->claim, &found,
                                          &stopped, &at, &next, &pause, &inflight, done, cap,
                                          &n_done)
                  : -ENOMEM;
    bool claimed = rc == 0;
    int64_t now = tds_now_ms(), off = tds_wall_ms() - now;
    o->quota_claim_ms = now;
    struct tds_limiter_snapshot sn = {.done = done};
    struct tds_limiter_handover h = {.skew_ms = QUOTA_SKEW_MS,
                                     .horizon_ms = s->cfg.owner_check_ms + 1000,
                                     .licence_ms = QUOTA_LICENCE_MS,
                                     .call_ms = s->cfg.http_timeout_ms};
    /* The record has been read: the full window that stood in for it goes.
     * Kept, it held every slot for a window after the record was read, and
     * the next save handed it on as calls made, so that a successor waited
     * out the same window (after a database restart, the next fetcher to
     * take over made no call for up to a minute, a chain of takeovers for
     * longer). The record counts the previous owner's calls, those made
     * after it until its licence ran out included, so nothing is lost. */
    if (claimed && o->quota_standin) {
        tds_limiter_forget(o->lim, o->quota_standin_ms);
        o->quota_standin = false;
    }
    if (rc == 0 && found) {
        sn.at_ms = at - off;
        sn.next_ms = next > INT64_MIN / 4 ? next - off : INT64_MIN / 2;
        sn.pause_until_ms = pause ? pause - off : 0;
        sn.inflight = inflight;
        sn.n_done = n_done;
        for (size_t i = 0; i < n_done; i++)
            done[i] -= off;
        /* its last record (a gentle stop): no call of it after it to assume */
        h.stopped = stopped;
        rc = tds_limiter_seed(o->lim, now, &sn, &h);
        if (rc == 0)
            tds_log(TDS_LOG_INFO, &o->lctx,
                    "started from the previous owner's quota use: %zu calls answered within the "
                    "window, %lld in flight, recorded %lld ms ago%s",
                    n_done, (long long)inflight, (long long)(now - sn.at_ms),
                    stopped ? ", its last record (it stopped: no call after it)" : "");
    }
    if (rc != 0 && !o->quota_seeded) {
        tds_log(TDS_LOG_WARN, &o->lctx,
                "could not read the previous owner's quota use (%s): waiting a full window before "
                "the first call",
                rc == -ENOMEM ? "out of memory" : tds_store_error(s->store));
        struct tds_limiter_snapshot full = {.at_ms = now, .next_ms = INT64_MIN / 2,
                                            .inflight = (int64_t)cap, .done = NULL};
        struct tds_limiter_handover none = {0};
        /* out of memory even here: the limiter pauses for the window instead */
        tds_limiter_seed(o->lim, now, &full, &none);
        o->quota_seeded = true;
        o->quota_standin = true;
        o->quota_standin_ms = now;
    } else if (rc != 0) {
        tds_log_limited(&s->quota_log, TDS_LOG_WARN, &o->lctx,
                        "could not claim the organization's quota record yet: %s",
                        rc == -ENOMEM ? "out of memory" : tds_store_error(s->store));
    }
    o->quota_claimed = claimed;
    if (claimed) {
        o->quota_seeded = false;
        o->quota_lost = false;
    }
    free(done);
    quota_save(s, o, false);
}

static void on_tick(struct tds_loop *loop, void *ud)
{
    (void)loop;
    struct tds_sync *s = ud;
    int64_t now = tds_now_ms();
    for (size_t i = 0; i < s->n_o; i++) {
        reap(&s->o[i]);
        org_next(&s->o[i]);
    }
    for (size_t i = 0; i < s->n_inf; i++) {
        struct inflight *f = &s->inf[i];
        if (!f->sent || now - f->sent_ms >= s->cfg.ack_timeout_ms) {
            if (f->sent)
                tds_log_limited(&s->resend_log, TDS_LOG_INFO, NULL,
                                "page %s not acked within %lld ms, sending again", f->id,
                                (long long)s->cfg.ack_timeout_ms);
            send_one(s, f);
        }
    }
    if (!s->stopping) {
        sweep_list_only(s);
        stock_look(s);
        hold_stopped_fetches(s);
    }
    pump_all(s);
    for (size_t i = 0; !s->stopping && i < s->n_o; i++)
        if (s->o[i].owned && !s->o[i].quota_claimed &&
            now - s->o[i].quota_claim_ms >= QUOTA_SAVE_MS)
            quota_take_over(&s->o[i]);
    quota_save(s, NULL, false);
    if (!s->stopping)
        clock_lead_save(s);
}

/* ---- lifecycle ---- */

/* Seed of a limiter's jitter: replicas and restarts must not draw the
 * same sequence (jitter is there to fall out of step). */
static uint32_t jitter_seed(void)
{
    uint32_t v = 0;
    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
        v = (uint32_t)rand() ^ (uint32_t)tds_now_ms();
    return v ? v : 1u;
}

int tds_sync_new(struct tds_sync **out, struct tds_loop *loop, struct tds_bus_sock *push,
                 struct tds_store *store, struct tds_http *http, struct tds_metrics *metrics,
                 struct tds_events *events, const struct tds_orgs *orgs,
                 const struct tds_sync_cfg *cfg)
{
    struct tds_sync *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    s->push = push;
    s->store = store;
    s->http = http;
    s->metrics = metrics;
    s->events = events;
    s->orgs = orgs;
    s->cfg = *cfg;
    s->send_log.interval_ms = 30000;
    s->resend_log.interval_ms = 10000;
    if (s->cfg.max_inflight < 2)
        s->cfg.max_inflight = 2;
    if (s->cfg.fetch_queue_max <= 0)
        s->cfg.fetch_queue_max = 100000;
    if (s->cfg.run_retry_ms <= 0)
        s->cfg.run_retry_ms = RUN_RETRY_MS;
    if (s->cfg.sweep_every_ms <= 0)
        s->cfg.sweep_every_ms = SWEEP_EVERY_MS;
    if (s->cfg.stock_every_ms <= 0)
        s->cfg.stock_every_ms = SWEEP_EVERY_MS;
    if (s->cfg.sweep_backoff_ms <= 0)
        s->cfg.sweep_backoff_ms = SWEEP_BACKOFF_MS;
    if (s->cfg.sweep_backoff_max_ms < s->cfg.sweep_backoff_ms)
        s->cfg.sweep_backoff_max_ms = s->cfg.sweep_backoff_ms > SWEEP_BACKOFF_MAX_MS
                                          ? s->cfg.sweep_backoff_ms
                                          : SWEEP_BACKOFF_MAX_MS;
    s->no_record_log.interval_ms = 60000;
    s->quota_log.interval_ms = 60000;
    s->bad_id_log.interval_ms = 60000;
    s->bulk_gone_log.interval_ms = 60000;
    s->clock_log.interval_ms = 3600 * 1000;
    s->refused_log.interval_ms = 60000;
    s->origin = strdup(cfg->origin);
    s->claim = tds_uid("quota");
    s->o = calloc(orgs->n ? orgs->n : 1, sizeof(*s->o));
    if (!s->origin || !s->claim || !s->o)
        goto nomem;
    if (metrics) {
        s->m_inflight = tds_metrics_get(metrics, TDS_GAUGE, "tds_fetcher_pages_inflight",
                                        "Pages sent and not yet acked by the writer", "", NULL, 0);
        s->m_inflight_bytes = tds_metrics_get(metrics, TDS_GAUGE, "tds_fetcher_inflight_bytes",
                                              "Encoded bytes of the pages in flight", "", NULL, 0);
        s->m_dropped = tds_metrics_get(metrics, TDS_COUNTER, "tds_fetcher_fetches_dropped_total",
                                       "Fetch-by-id requests not served here (queue full, unknown organization or entity, or could not hand to the owner)",
                                       "", NULL, 0);
        s->m_bad_id = tds_metrics_get(metrics, TDS_COUNTER, "tds_fetcher_list_bad_ids_total",
                                      "List records whose id is not a valid Zoho id (not UTF-8, not [0-9A-Za-z_.-], over 64 bytes) or unreadable: passed on to be rejected, detail not fetched",
                                      "", NULL, 0);
        s->m_held = tds_metrics_get(metrics, TDS_COUNTER, "tds_fetcher_fetches_held_total",
                                    "Fetch-by-id requests refused without a call because the organization is paused (invalid credentials) or Zoho refuses the entity to the token (a missing scope): a webhook's is kept in tds.sync_requests, a request's stays open; asked for again once it resumes or the refusal's backoff ends",
                                    "", NULL, 0);
        s->m_kept = tds_metrics_get(metrics, TDS_COUNTER, "tds_fetcher_fetches_kept_total",
                                    "Webhooks' fetches refused because the organization is paused or the entity is refused to the token, kept in tds.sync_requests (an open mode fetch row per record) and acked, so that the ingress journal does not hold them",
                                    "", NULL, 0);
        s->m_no_record = tds_metrics_get(metrics, TDS_COUNTER, "tds_fetcher_detail_without_record_total",
                                         "Fetches by id answered with code 0 but without the record's key (not sent on; the sweep asks again with its backoff)",
                                         "", NULL, 0);
        s->m_refused = tds_metrics_get(metrics, TDS_COUNTER, "tds_fetcher_details_refused_total",
                                       "Records whose detail call failed for good while the rest of their run's batch was served, left in list form (the sweep asks again with its backoff)",
                                       "", NULL, 0);
    }
    for (size_t i = 0; i < orgs->n; i++) {
        struct org_rt *o = &s->o[i];
        const struct tds_org *org = &orgs->orgs[i];
        o->s = s;
        o->org = org;
        o->lctx.org = org->org_id;
        o->held_log.interval_ms = 10000;
        s->n_o = i + 1;
        if (!(o->inc_hold_ms = calloc(tds_entity_count(), sizeof(*o->inc_hold_ms))))
            goto nomem;
        if (tds_ztime_parse_offset(org->timezone_offset ? org->timezone_offset : "+0000",
                                   &o->offset_min) != 0)
            o->offset_min = 0;
        struct tds_oauth_cfg oc = {.timeout_ms = cfg->token_timeout_ms, .lockout_ms = cfg->lockout_ms};
        struct tds_limiter_cfg lc = {
            .rate_per_window = org->rate_per_min > 0 ? org->rate_per_min : 100,
            .window_ms = cfg->minute_ms > 0 ? cfg->minute_ms : 60000,
            .max_concurrency = org->max_concurrency > 0 ? org->max_concurrency : 10,
            .daily_limit = org->daily_limit,
            .daily_reserve = org->daily_reserve,
            .margin_ms = 2,
            .concurrency_cooldown_ms = cfg->minute_ms > 0 && cfg->minute_ms < 60000 ? cfg->minute_ms / 2 : 30000,
            .seed = jitter_seed(),
            .needs_licence = true,
        };
        struct tds_api_cfg ac = {.timeout_ms = cfg->http_timeout_ms, .max_attempts = (int)cfg->max_attempts};
        if (tds_oauth_new(&o->oauth, org, &oc, store, http, events, metrics, on_token_change, o) != 0 ||
            tds_limiter_new(&o->lim, &lc) != 0 ||
            tds_api_new(&o->api, loop, http, o->oauth, o->lim, org, store, metrics, events, &ac) != 0)
            goto nomem;
        /* Every replica exports tds_fetcher_quota_remaining for every
         * organization once Zoho gave it a figure, but only the owner's is
         * current: the others' is absent until then, or stays at what it was
         * when they lost the organization. This gauge
         * tells the alert rules (deploy/prometheus/alerts.yml, the writer's
         * quota_low) which replica's quota to believe. */
        if (metrics) {
            char *oe = tds_metrics_escape(org->org_id);
            if (!oe)
                goto nomem;
            o->m_owned = tds_metrics_getf(metrics, TDS_GAUGE, "tds_fetcher_org_owned",
                                          "1 when this fetcher owns the organization (fetches for it "
                                          "and its quota figure is current), else 0",
                                          "org=\"%s\"", oe);
            o->m_every = tds_metrics_getf(
                metrics, TDS_GAUGE, "tds_fetcher_incremental_interval_seconds",
                "The organization's incremental interval in use: the configured one, stretched "
                "to fit the daily API budget (set while this fetcher owns it)",
                "org=\"%s\"", oe);
            free(oe);
            if (!o->m_owned || !o->m_every)
                goto nomem;
        }
    }
    int64_t tick = s->cfg.ack_timeout_ms / 4;
    if (tick > 1000)
        tick = 1000;
    if (tick < 50)
        tick = 50;
    s->tick_id = tds_loop_timer_add(loop, tick, tick, on_tick, s);
    if (s->tick_id < 0)
        goto nomem;
    *out = s;
    return 0;
nomem:
    tds_sync_free(s);
    return -ENOMEM;
}

static void org_drop_work(struct org_rt *o)
{
    struct tds_sync *s = o->s;
    o->dropping = true;
    if (o->api)
        tds_api_cancel_all(o->api); /* callbacks only clean up now */
    o->dropping = false;
    o->fetch_running = 0;
    if (o->run) {
        o->run->outstanding = 0;
        run_free(o->run);
        o->run = NULL;
    }
    for (size_t i = 0; i < o->n_dying; i++) {
        o->dying[i]->outstanding = 0;
        run_free(o->dying[i]);
    }
    o->n_dying = 0;
    while (o->jobs) {
        struct job *j = o->jobs;
        o->jobs = j->next;
        free(j);
    }
    o->jobs_tail = NULL;
    fetch_queue_clear(o);
    inflight_forget(s, NULL, o);
}

struct tds_sync *tds_sync_free(struct tds_sync *s)
{
    if (!s)
        return NULL;
    if (s->tick_id > 0)
        tds_loop_timer_cancel(s->loop, s->tick_id);
    for (size_t i = 0; i < s->n_o; i++) {
        struct org_rt *o = &s->o[i];
        org_drop_work(o);
        free(o->dying);
        free(o->inc_hold_ms);
        o->api = tds_api_free(o->api);
        o->oauth = tds_oauth_free(o->oauth);
        o->lim = tds_limiter_free(o->lim);
    }
    for (size_t i = 0; i < s->n_inf; i++)
        inflight_clear(&s->inf[i]);
    free(s->inf);
    idset_clear(&s->answered);
    for (size_t i = 0; s->answered_ring && i < ANSWERED_MAX; i++)
        free(s->answered_ring[i]);
    free(s->answered_ring);
    free(s->o);
    free(s->origin);
    free(s->claim);
    free(s);
    return NULL;
}

void tds_sync_set_owned(struct tds_sync *s, const char *org, bool owned)
{
    struct org_rt *o = find_org(s, org);
    if (!o || o->owned == owned)
        return;
    o->owned = owned;
    o->quota_claimed = o->quota_seeded = o->quota_lost = false;
    o->lead_saved = false;
    if (o->m_owned)
        tds_series_set(o->m_owned, owned ? 1 : 0);
    if (!owned) {
        tds_log(TDS_LOG_WARN, &o->lctx, "lost ownership of organization, dropping its work");
        org_drop_work(o);
        return;
    }
    int64_t n = 0;
    if (tds_store_runs_abandon(s->store, org, "abandoned: the fetcher that ran it stopped", &n) == 0 && n)
        tds_log(TDS_LOG_INFO, &o->lctx, "marked %lld runs of a previous owner failed", (long long)n);
    quota_take_over(o);
    seed_last_success(o);
    tds_log(TDS_LOG_INFO, &o->lctx, "now fetching this organization");
    org_next(o);
}

bool tds_sync_owned(const struct tds_sync *s, const char *org)
{
    const struct org_rt *o = find_org(s, org);
    return o && o->owned;
}

bool tds_sync_daily_stopped(struct tds_sync *s, const char *org)
{
    const struct org_rt *o = find_org(s, org);
    return o && daily_stopped(o);
}

bool tds_sync_paused(struct tds_sync *s, const char *org)
{
    struct org_rt *o = find_org(s, org);
    return o && o->oauth && tds_oauth_paused(o->oauth, tds_wall_ms());
}

bool tds_sync_org_syncs(const struct tds_org *org, const struct tds_entity *e)
{
    return tds_org_syncs(org, e);
}

int64_t tds_sync_daily_limit(const struct tds_sync *s, const char *org)
{
    const struct org_rt *o = find_org(s, org);
    return o ? tds_limiter_daily_limit(o->lim) : -1;
}

/* Calls a day for incrementals (incremental_budget_pct of the daily limit
 * less the reserve), at least 1; 0 while the limit is not known. */
static int64_t org_budget(const struct org_rt *o)
{
    const struct tds_org *g = o->org;
    int64_t limit = tds_limiter_daily_limit(o->lim);
    int64_t pct = g->incremental_budget_pct > 0 ? g->incremental_budget_pct : 25;
    if (limit <= 0)
        return 0;
    int64_t budget = (limit - g->daily_reserve) * pct / 100;
    return budget < 1 ? 1 : budget;
}

/* How the incremental share of the budget is split: one slot for each
 * entity synced, and one for stock runs where items and documents that move
 * their stock are both synced. */
static int64_t org_slots(const struct org_rt *o)
{
    const struct tds_org *g = o->org;
    int64_t n = 0;
    bool items = false, docs = false;
    for (size_t k = 0; k < tds_entity_count(); k++) {
        const struct tds_entity *e = tds_entity_at(k);
        if (!tds_sync_org_syncs(g, e))
            continue;
        n++;
        items = items || strcmp(e->name, "items") == 0;
        docs = docs || strcmp(e->name, "invoices") == 0 || strcmp(e->name, "sales_orders") == 0;
    }
    return n + (items && docs);
}

static int64_t org_incremental_ms(const struct org_rt *o)
{
    const struct tds_org *g = o->org;
    int64_t every = (g->incremental_every_s > 0 ? g->incremental_every_s : 300) * 1000;
    int64_t budget = org_budget(o);
    int64_t n = org_slots(o);
    if (budget == 0 || n == 0)
        return every;
    /* runs of one call each per interval, a slot each, budget calls per day */
    int64_t floor_ms = (86400000 * n + budget - 1) / budget;
    return floor_ms > every ? floor_ms : every;
}

int64_t tds_sync_incremental_ms(const struct tds_sync *s, const char *org)
{
    const struct org_rt *o = find_org(s, org);
    return o ? org_incremental_ms(o) : 0;
}

/* True when list, a comma-separated list of names, holds name. */
static bool csv_has(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, name, n) == 0)
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

int tds_sync_enqueue(struct tds_sync *s, const char *org, const char *entity, const char *mode,
                     int64_t request_id)
{
    return tds_sync_enqueue_rest(s, org, entity, mode, request_id, NULL);
}

int tds_sync_enqueue_rest(struct tds_sync *s, const char *org, const char *entity,
                          const char *mode, int64_t request_id, const char *completed)
{
    struct org_rt *o = find_org(s, org);
    if (!o || !o->owned)
        return TDS_E_NOTFOUND;
    if (strcmp(mode, "full") != 0 && strcmp(mode, "incremental") != 0 &&
        strcmp(mode, "reconcile") != 0 && strcmp(mode, "stock") != 0)
        return TDS_E_INVALID;
    if (strcmp(mode, "stock") == 0 && (strcmp(entity, "items") != 0 || request_id > 0))
        return TDS_E_INVALID; /* queued by stock_look only, never a request */
    bool all = strcmp(entity, "all") == 0;
    const struct tds_entity *one = all ? NULL : tds_entity_find(entity);
    if (!all && (!one || !tds_org_syncs(o->org, one)))
        return TDS_E_NOTFOUND;
    struct job *first = NULL, *last = NULL;
    size_t n_done = 0;
    for (size_t i = 0; i < tds_entity_count(); i++) {
        const struct tds_entity *e = tds_entity_at(i);
        if ((!all && e != one) || !tds_sync_org_syncs(o->org, e))
            continue;
        if (completed && csv_has(completed, e->name)) {
            n_done++;
            continue;
        }
        struct job *j = calloc(1, sizeof(*j));
        if (!j) {
            while (first) {
                struct job *n = first->next;
                free(first);
                first = n;
            }
            return -ENOMEM;
        }
        j->e = e;
        snprintf(j->mode, sizeof(j->mode), "%s", mode);
        j->request_id = request_id;
        if (last)
            last->next = j;
        else
            first = j;
        last = j;
    }
    if (!first)
        return n_done ? TDS_SYNC_NOTHING_LEFT : TDS_E_NOTFOUND;
    /* A request goes ahead of scheduled runs: someone is waiting for it. */
    struct job *after = NULL;
    if (request_id > 0)
        for (struct job *k = o->jobs; k && k->request_id > 0; k = k->next)
            after = k;
    else
        after = o->jobs_tail;
    if (after) {
        last->next = after->next;
        after->next = first;
    } else {
        last->next = o->jobs;
        o->jobs = first;
    }
    if (!last->next)
        o->jobs_tail = last;
    org_next(o);
    return 0;
}

bool tds_sync_pending(const struct tds_sync *s, const char *org, const char *entity, const char *mode)
{
    const struct org_rt *o = find_org(s, org);
    if (!o)
        return false;
    if (o->run && strcmp(o->run->e->name, entity) == 0)
        return true; /* any run of the entity covers a scheduled one */
    for (const struct job *j = o->jobs; j; j = j->next)
        if (strcmp(j->e->name, entity) == 0 && strcmp(j->mode, mode) == 0)
            return true;
    return false;
}

static int cmp_req(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int tds_sync_request_ids(const struct tds_sync *s, int64_t **ids, size_t *n)
{
    size_t cap = 0, k = 0;
    *ids = NULL;
    *n = 0;
    for (size_t i = 0; i < s->n_o; i++) {
        const struct org_rt *o = &s->o[i];
        cap += o->run != NULL;
        for (const struct job *j = o->jobs; j; j = j->next)
            cap++;
    }
    if (cap == 0)
        return 0;
    int64_t *v = malloc(cap * sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < s->n_o; i++) {
        const struct org_rt *o = &s->o[i];
        if (o->run && o->run->request_id > 0)
            v[k++] = o->run->request_id;
        for (const struct job *j = o->jobs; j; j = j->next)
            if (j->request_id > 0)
                v[k++] = j->request_id;
    }
    /* one id each: a request for every entity is one id in up to six jobs */
    qsort(v, k, sizeof(*v), cmp_req);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || v[u - 1] != v[i])
            v[u++] = v[i];
    *ids = v;
    *n = u;
    return 0;
}

static int add_reqs(int64_t **ids, size_t *n, const int64_t *reqs, size_t k)
{
    if (!k)
        return 0;
    int64_t *v = append(*ids, *n, reqs, k, sizeof(*v));
    if (!v)
        return -ENOMEM;
    *ids = v;
    *n += k;
    return 0;
}

int tds_sync_fetch_request_ids(const struct tds_sync *s, int64_t **ids, size_t *n)
{
    int rc = 0;
    *ids = NULL;
    *n = 0;
    for (size_t i = 0; rc == 0 && i < s->n_o; i++) {
        const struct org_rt *o = &s->o[i];
        for (const struct fetch_item *it = o->fq; rc == 0 && it; it = it->next)
            rc = add_reqs(ids, n, it->acks.reqs, it->acks.n_reqs);
        for (const struct fetch_call *c = o->calls; rc == 0 && c; c = c->next)
            rc = add_reqs(ids, n, c->acks.reqs, c->acks.n_reqs);
    }
    for (size_t i = 0; rc == 0 && i < s->n_inf; i++) {
        rc = add_reqs(ids, n, s->inf[i].reqs, s->inf[i].n_reqs);
        if (rc == 0)
            rc = add_reqs(ids, n, s->inf[i].late.reqs, s->inf[i].late.n_reqs);
    }
    if (rc != 0) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return rc;
}

int tds_sync_refused_fetches(const struct tds_sync *s, char ***keys, size_t *n)
{
    *keys = NULL;
    *n = 0;
    static const char suffix[] = ".detail";
    for (size_t i = 0; i < s->n_o; i++) {
        const struct org_rt *o = &s->o[i];
        const char *ep, *err;
        int64_t left;
        for (size_t k = 0; o->owned && o->api && tds_api_denial_at(o->api, k, &ep, &err, &left); k++) {
            size_t l = strlen(ep);
            if (left <= 0 || l <= sizeof(suffix) - 1 ||
                strcmp(ep + l - (sizeof(suffix) - 1), suffix) != 0)
                continue;
            char **g = realloc(*keys, (*n + 1) * sizeof(*g));
            char *key = NULL;
            if (g)
                *keys = g;
            if (!g || asprintf(&key, "%s/%.*s", o->org->org_id,
                               (int)(l - (sizeof(suffix) - 1)), ep) < 0) {
                for (size_t j = 0; j < *n; j++)
                    free((*keys)[j]);
                free(*keys);
                *keys = NULL;
                *n = 0;
                return -ENOMEM;
            }
            (*keys)[(*n)++] = key;
        }
    }
    return 0;
}

void tds_sync_stop(struct tds_sync *s, const char *why)
{
    s->stopping = true;
    /* The last quota records, before the calls in flight are cancelled
     * (they stay counted as in flight: a cancelled call may still reach
     * Zoho) and before the locks go: the next owner reads that nothing of
     * this fetcher's started after them. */
    quota_save(s, NULL, true);
    for (size_t i = 0; i < s->n_o; i++) {
        struct org_rt *o = &s->o[i];
        if (o->run && !o->run->failed) {
            /* the request stays open: the next owner runs it again. Not a
             * failure: as one, every rolling restart raised sync_failed */
            tds_store_run_stop(s->store, o->run->id, why);
        }
        org_drop_work(o);
    }
}

bool tds_sync_idle(const struct tds_sync *s)
{
    if (s->n_inf)
        return false;
    for (size_t i = 0; i < s->n_o; i++)
        if (s->o[i].run || s->o[i].jobs || s->o[i].fq || s->o[i].fetch_running)
            return false;
    return true;
}

size_t tds_sync_inflight(const struct tds_sync *s) { return s->n_inf; }

char *tds_sync_status_json(struct tds_sync *s)
{
    json_t *root = json_object();
    json_t *orgs = json_array();
    int64_t now = tds_now_ms();
    int64_t wall = tds_wall_ms();
    for (size_t i = 0; i < s->n_o; i++) {
        struct org_rt *o = &s->o[i];
        json_t *jo = json_object();
        json_object_set_new(jo, "org", json_string(o->org->org_id));
        json_object_set_new(jo, "owned", json_boolean(o->owned));
        json_object_set_new(jo, "token", json_string(tds_oauth_state(o->oauth, wall)));
        json_object_set_new(jo, "quota_remaining", json_integer(tds_limiter_remaining(o->lim)));
        json_object_set_new(jo, "daily_limit", json_integer(tds_limiter_daily_limit(o->lim)));
        json_object_set_new(jo, "daily_stopped", json_boolean(tds_limiter_stopped(o->lim, now)));
        json_object_set_new(jo, "incremental_every_s",
                            json_integer((tds_sync_incremental_ms(s, o->org->org_id) + 999) / 1000));
        json_object_set_new(jo, "concurrency_cap", json_integer(tds_limiter_concurrency_cap(o->lim)));
        json_object_set_new(jo, "api_calls", json_integer(tds_api_calls(o->api)));
        json_object_set_new(jo, "api_queued", json_integer((json_int_t)tds_api_queued(o->api)));
        json_object_set_new(jo, "fetch_queued", json_integer((json_int_t)o->n_fq));
        /* endpoints Zoho refuses to the token (a missing scope) */
        json_t *jd = json_array();
        const char *dep, *derr;
        int64_t dleft;
        for (size_t k = 0; jd && tds_api_denial_at(o->api, k, &dep, &derr, &dleft); k++) {
            json_t *x = json_object();
            json_object_set_new(x, "endpoint", json_string(dep));
            json_object_set_new(x, "error", json_string(derr ? derr : ""));
            json_object_set_new(x, "retry_in_s", json_integer((dleft + 999) / 1000));
            json_array_append_new(jd, x);
        }
        json_object_set_new(jo, "denied", jd);
        /* entities whose list ignores the modified filter: incrementals held */
        json_t *jh = json_array();
        for (size_t k = 0; jh && o->inc_hold_ms && k < tds_entity_count(); k++)
            if (o->inc_hold_ms[k]) {
                json_t *x = json_object();
                int64_t left = o->inc_hold_ms[k] - tds_now_ms();
                json_object_set_new(x, "entity", json_string(tds_entity_at(k)->name));
                json_object_set_new(x, "next_in_s", json_integer(left > 0 ? (left + 999) / 1000 : 0));
                json_array_append_new(jh, x);
            }
        json_object_set_new(jo, "filter_ignored", jh);
        if (o->run) {
            json_t *jr = json_object();
            json_object_set_new(jr, "run", json_string(o->run->id));
            json_object_set_new(jr, "entity", json_string(o->run->e->name));
            json_object_set_new(jr, "mode", json_string(o->run->mode));
            json_object_set_new(jr, "pages", json_integer(o->run->pages_fetched));
            json_object_set_new(jr, "records", json_integer(o->run->records_fetched));
            json_object_set_new(jr, "walked", json_integer(o->run->records_walked));
            json_object_set_new(jr, "unacked", json_integer(o->run->unacked));
            json_object_set_new(jo, "run", jr);
        }
        json_array_append_new(orgs, jo);
    }
    json_object_set_new(root, "origin", json_string(s->origin));
    json_object_set_new(root, "pages_inflight", json_integer((json_int_t)s->n_inf));
    json_object_set_new(root, "bytes_inflight", json_integer((json_int_t)s->inf_bytes));
    json_object_set_new(root, "organizations", orgs);
    char *out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return out;
}
