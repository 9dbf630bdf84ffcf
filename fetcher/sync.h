/* sync — runs (full, incremental, reconcile), fetches by id, and the
 * delivery of their pages to the processor.
 *
 * Holds, per configured organization, the token (oauth), the limiter and
 * the API queue, a queue of runs executed one at a time, and a coalescing
 * queue of fetch-by-id requests. Work happens only for organizations this
 * replica owns (owner.c says which). Every page sent is kept until the
 * writer acks it and sent again after the ack timeout; at most max_inflight
 * pages are unacked, and no new list page is asked for while those hold
 * max_inflight_bytes or more (credits). A run ends with a final page carrying the
 * cursor once all its earlier pages are acked. See fetcher/DESIGN.md.
 */
#ifndef TDS_FETCHER_SYNC_H
#define TDS_FETCHER_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tds_sync;
struct tds_loop;
struct tds_bus_sock;
struct tds_store;
struct tds_http;
struct tds_metrics;
struct tds_events;
struct tds_orgs;
struct tds_org;
struct tds_entity;
struct tds_msg_ack;
struct tds_msg_fetch;

struct tds_sync_cfg {
    const char *origin;          /* "fetcher.<instance>" */
    int64_t max_inflight;        /* pages unacked, default 32 */
    int64_t max_inflight_bytes;  /* their encoded bytes, default 4 MiB (0: no byte bound) */
    int64_t page_max_bytes;      /* record JSON in one detail page, default 8 MiB (0: no bound) */
    int64_t ack_timeout_ms;      /* resend after, default 30000 */
    int64_t per_page;            /* 200 */
    int64_t overlap_s;           /* incremental overlap, default 120 */
    int64_t http_timeout_ms;     /* API calls */
    int64_t token_timeout_ms;    /* token endpoint */
    int64_t lockout_ms;          /* after "Access Denied" */
    int64_t minute_ms;           /* Zoho's rate window (60000; shorter against the simulator) */
    int64_t max_attempts;        /* transient failures per call before the run fails */
    int64_t fetch_queue_max;     /* queued fetch-by-id requests per organization */
    int64_t run_retry_ms;        /* a failed run's first retry waits this, doubling; 2000 */
    int64_t sweep_every_ms;      /* look for rows in list form, default 10000 */
    int64_t sweep_backoff_ms;    /* a row asked for waits this long, default 600000 ... */
    int64_t sweep_backoff_max_ms; /* ... doubling up to this, default 86400000 */
    int64_t stock_every_ms;      /* look for items in tds.stock_refresh, default 10000 */
    int64_t owner_check_ms;      /* how soon a replica notices it lost an organization */
};

int tds_sync_new(struct tds_sync **out, struct tds_loop *loop, struct tds_bus_sock *push,
                 struct tds_store *store, struct tds_http *http, struct tds_metrics *metrics,
                 struct tds_events *events, const struct tds_orgs *orgs,
                 const struct tds_sync_cfg *cfg);
struct tds_sync *tds_sync_free(struct tds_sync *s);

/* Ownership changed (owner.c). Losing an organization drops its work at once. */
void tds_sync_set_owned(struct tds_sync *s, const char *org, bool owned);
bool tds_sync_owned(const struct tds_sync *s, const char *org);
/* Whether the organization is paused for refused credentials (its token row
 * read again at most every 10 s: an operator may have fixed them). */
bool tds_sync_paused(struct tds_sync *s, const char *org);
/* Whether org's daily API budget is spent until Zoho's daily reset. */
bool tds_sync_daily_stopped(struct tds_sync *s, const char *org);

/* Whether a request for "all" syncs entity e of org: its product has the
 * entity and the org's entity list (if any) names it. */
bool tds_sync_org_syncs(const struct tds_org *org, const struct tds_entity *e);

/* How often scheduled incremental runs of org start: incremental_every_s,
 * stretched so that one list call per entity and run stays within
 * incremental_budget_pct of the daily budget once Zoho has told it (the
 * limit minus daily_reserve). 0 for an unknown org. */
int64_t tds_sync_incremental_ms(const struct tds_sync *s, const char *org);
/* The daily limit Zoho reported for org (X-Rate-Limit-Limit), -1 unknown. */
int64_t tds_sync_daily_limit(const struct tds_sync *s, const char *org);

/* Queue a run. entity "all" expands to the organization's entities. mode:
 * "full", "incremental" or "reconcile". request_id 0 when scheduled.
 * Returns 0, TDS_E_NOTFOUND (unknown org/entity, not owned) or -ENOMEM. */
int tds_sync_enqueue(struct tds_sync *s, const char *org, const char *entity, const char *mode,
                     int64_t request_id);
/* The same for a request taken again, leaving out the entities named in
 * completed (comma-separated, NULL for none): their runs for it completed.
 * Returns TDS_SYNC_NOTHING_LEFT when that leaves nothing to run. */
#define TDS_SYNC_NOTHING_LEFT 1
int tds_sync_enqueue_rest(struct tds_sync *s, const char *org, const char *entity,
                          const char *mode, int64_t request_id, const char *completed);
/* True when a run of this org/entity/mode is queued or running. */
bool tds_sync_pending(const struct tds_sync *s, const char *org, const char *entity, const char *mode);
/* Request ids queued or running here, each once, sorted (for the claim
 * query, which skips them): a new array in *ids (caller frees; NULL when
 * none), its length in *n. 0 or -ENOMEM. */
int tds_sync_request_ids(const struct tds_sync *s, int64_t **ids, size_t *n);

void tds_sync_on_ack(struct tds_sync *s, const struct tds_msg_ack *ack);
/* A fetch by id. msg_id: the ingress message that asked (acked through the
 * writer with the page that answers it), or NULL; request_id: the
 * tds.sync_requests row it came from (closed once that page is acked), or 0. */
void tds_sync_on_fetch(struct tds_sync *s, const struct tds_msg_fetch *f, const char *msg_id,
                       int64_t request_id);
/* How long a claimed by-id request (request_id above) may stay open before
 * another claim: twice the ack timeout, so a page resent once still counts. */
int64_t tds_sync_fetch_lease_ms(const struct tds_sync *s);
/* The by-id request ids this replica still holds: queued, asked of Zoho, or
 * answered by a page not yet acked. Their lease may run out while a slow
 * writer or Zoho keeps them here; the claim skips them rather than ask Zoho
 * a second time. *ids malloc'd (NULL when none); 0 or -ENOMEM. */
int tds_sync_fetch_request_ids(const struct tds_sync *s, int64_t **ids, size_t *n);
/* No scheduled incremental of that entity before this wall time (ms), 0
 * for none: its last incremental walked pages Zoho's last_modified_time
 * filter should have left out, calls the daily budget must make room for. */
int64_t tds_sync_incremental_hold(const struct tds_sync *s, const char *org,
                                  const struct tds_entity *e);
/* "org/entity" for each owned organization's entity whose fetch by id Zoho
 * refuses to the token (a missing scope) until its backoff ends: its kept
 * requests are not claimed meanwhile, each would be refused without a call.
 * *keys malloc'd, each key too (NULL when none); 0 or -ENOMEM. */
int tds_sync_refused_fetches(const struct tds_sync *s, char ***keys, size_t *n);

/* Shut down: mark running runs failed, drop everything. */
void tds_sync_stop(struct tds_sync *s, const char *why);
/* Nothing queued, running or unacked. */
bool tds_sync_idle(const struct tds_sync *s);
size_t tds_sync_inflight(const struct tds_sync *s);
/* JSON for /status (caller frees). */
char *tds_sync_status_json(struct tds_sync *s);

#endif
