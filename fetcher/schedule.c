/* schedule — the schedule and the sync_requests queue, on one loop timer.
 *
 * Due times are wall-clock: they come from finished_at in tds.sync_runs.
 * A run that is already queued or running for an entity covers its
 * scheduled one (no pile-up when a run takes longer than the interval).
 */
#include "schedule.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "entities.h"
#include "log.h"
#include "msg.h"
#include "loop.h"
#include "store.h"
#include "sync.h"
#include "util.h"

struct slot {
    bool known;
    int64_t next_inc_ms, next_rec_ms;
};

struct tds_schedule {
    struct tds_loop *loop;
    struct tds_store *store;
    struct tds_sync *sync;
    const struct tds_orgs *orgs;
    char *instance;
    bool schedule;
    bool stopped;
    int64_t timer_id;
    size_t n_ent;
    struct slot *slots; /* orgs->n * n_ent */
    int64_t *inc_ms;    /* orgs->n: the interval last used, 0 before the first */
    struct tds_log_limit db_log;
};

static void schedule_org(struct tds_schedule *s, size_t oi, int64_t now)
{
    const struct tds_org *org = &s->orgs->orgs[oi];
    int64_t inc_ms = tds_sync_incremental_ms(s->sync, org->org_id);
    if (inc_ms <= 0)
        return;
    if (inc_ms != s->inc_ms[oi]) {
        int64_t every_s = org->incremental_every_s > 0 ? org->incremental_every_s : 300;
        if (inc_ms > every_s * 1000)
            tds_log(TDS_LOG_INFO, NULL,
                    "organization %s: incremental syncs every %lld s, not %lld s, to keep them "
                    "within %lld%% of the daily budget (%lld calls, %lld kept in reserve)",
                    org->org_id, (long long)((inc_ms + 999) / 1000), (long long)every_s,
                    (long long)org->incremental_budget_pct,
                    (long long)tds_sync_daily_limit(s->sync, org->org_id),
                    (long long)org->daily_reserve);
        else if (s->inc_ms[oi] > 0)
            tds_log(TDS_LOG_INFO, NULL, "organization %s: incremental syncs every %lld s",
                    org->org_id, (long long)every_s);
        /* a slot due later than the new interval allows is moved up */
        for (size_t k = 0; s->inc_ms[oi] > inc_ms && k < s->n_ent; k++) {
            struct slot *sl = &s->slots[oi * s->n_ent + k];
            if (sl->known && sl->next_inc_ms > now + inc_ms)
                sl->next_inc_ms = now + inc_ms;
        }
        s->inc_ms[oi] = inc_ms;
    }
    int64_t rec_ms = (org->reconcile_every_s > 0 ? org->reconcile_every_s : 86400) * 1000;
    for (size_t k = 0; k < s->n_ent; k++) {
        const struct tds_entity *e = tds_entity_at(k);
        if (!tds_sync_org_syncs(org, e))
            continue;
        struct slot *sl = &s->slots[oi * s->n_ent + k];
        if (!sl->known) {
            int64_t inc = 0, full = 0, rec = 0;
            if (tds_store_last_run(s->store, org->org_id, e->name, "incremental", &inc) != 0 ||
                tds_store_last_run(s->store, org->org_id, e->name, "full", &full) != 0 ||
                tds_store_last_run(s->store, org->org_id, e->name, "reconcile", &rec) != 0) {
                tds_log_limited(&s->db_log, TDS_LOG_WARN, NULL, "could not read run history: %s",
                                tds_store_error(s->store));
                return;
            }
            int64_t last = inc > full ? inc : full;
            /* never synced: start now; otherwise one interval after the last */
            sl->next_inc_ms = last ? last + inc_ms : now;
            sl->next_rec_ms = (rec ? rec : (last ? last : now)) + rec_ms;
            sl->known = true;
        }
        /* Due times are wall-clock: one further off than an interval comes
         * from a clock that stepped back since, or from run history written
         * by a clock ahead of this one; it is moved up to one interval from
         * now, or no run would come until the clocks met again. */
        if (sl->next_inc_ms > now + inc_ms)
            sl->next_inc_ms = now + inc_ms;
        if (sl->next_rec_ms > now + rec_ms)
            sl->next_rec_ms = now + rec_ms;
        /* Due but the entity is busy: try again next tick rather than
         * skipping a whole interval (a day, for reconciliation). */
        /* and not before the hold of an entity whose list ignores the
         * modified filter (each incremental a whole walk) */
        if (now >= sl->next_inc_ms && now >= tds_sync_incremental_hold(s->sync, org->org_id, e)) {
            if (!tds_sync_pending(s->sync, org->org_id, e->name, "incremental") &&
                tds_sync_enqueue(s->sync, org->org_id, e->name, "incremental", 0) == 0)
                sl->next_inc_ms = now + inc_ms;
        }
        if (now >= sl->next_rec_ms) {
            if (!tds_sync_pending(s->sync, org->org_id, e->name, "reconcile") &&
                tds_sync_enqueue(s->sync, org->org_id, e->name, "reconcile", 0) == 0)
                sl->next_rec_ms = now + rec_ms;
        }
    }
}

static void take_fetch(void *ud, int64_t id, const char *org, const char *entity,
                       const char *zoho_id)
{
    struct tds_schedule *s = ud;
    struct tds_msg_fetch f = {.org = (char *)org, .entity = (char *)entity,
                              .zoho_id = (char *)zoho_id, .origin = NULL};
    tds_sync_on_fetch(s->sync, &f, NULL, id);
}

static void claim_requests(struct tds_schedule *s)
{
    const char **owned = calloc(s->orgs->n ? s->orgs->n : 1, sizeof(*owned));
    if (!owned)
        return;
    size_t n_owned = 0, n_fetching = 0;
    for (size_t i = 0; i < s->orgs->n; i++)
        if (tds_sync_owned(s->sync, s->orgs->orgs[i].org_id))
            owned[n_owned++] = s->orgs->orgs[i].org_id;
    /* Fetches by id that reached a replica not owning the organization, and
     * those kept while it was paused. Not of one paused now: each would be
     * claimed, refused without a call and claimed again after every lease,
     * for as long as the pause lasts (a row update each: with 150,000 kept
     * rows, 2,500 a second). Nor of one whose daily budget is spent: each
     * would wait for the reset in the call queue, claimed again after every
     * lease. */
    const char **fetching = calloc(n_owned ? n_owned : 1, sizeof(*fetching));
    if (!fetching) {
        free(owned);
        return;
    }
    for (size_t i = 0; i < n_owned; i++)
        if (!tds_sync_paused(s->sync, owned[i]) && !tds_sync_daily_stopped(s->sync, owned[i]))
            fetching[n_fetching++] = owned[i];
    for (int round = 0; n_fetching && round < 8; round++) {
        int64_t *held = NULL;
        size_t n_held = 0;
        char **refused = NULL;
        size_t n_refused = 0;
        /* nor those of an entity Zoho refuses to the token, for the same
         * reason, until the refusal's backoff ends (its next call asks) */
        int n = tds_sync_fetch_request_ids(s->sync, &held, &n_held);
        if (n == 0)
            n = tds_sync_refused_fetches(s->sync, &refused, &n_refused);
        if (n == 0)
            n = tds_store_request_take_fetches(s->store, s->instance, fetching, n_fetching, 500,
                                               tds_sync_fetch_lease_ms(s->sync), held, n_held,
                                               (const char *const *)refused, n_refused,
                                               take_fetch, s);
        free(held);
        for (size_t i = 0; i < n_refused; i++)
            free(refused[i]);
        free(refused);
        if (n < 0) {
            tds_log_limited(&s->db_log, TDS_LOG_WARN, NULL, "could not read fetch requests: %s",
                            n == -ENOMEM ? "out of memory" : tds_store_error(s->store));
            break;
        }
        if (n < 500)
            break;
    }
    for (int round = 0; n_owned && round < 16; round++) {
        /* every request held here, however many: one left out would be
         * claimed again and its jobs queued twice */
        int64_t *skip = NULL;
        size_t n_skip = 0;
        struct tds_request req;
        bool found = false;
        if (tds_sync_request_ids(s->sync, &skip, &n_skip) != 0) {
            tds_log_limited(&s->db_log, TDS_LOG_WARN, NULL,
                            "could not list the sync requests held here: out of memory");
            break;
        }
        int crc = tds_store_request_claim(s->store, s->instance, owned, n_owned, skip, n_skip, &req,
                                          &found);
        free(skip);
        if (crc != 0) {
            tds_log_limited(&s->db_log, TDS_LOG_WARN, NULL, "could not read sync requests: %s",
                            tds_store_error(s->store));
            break;
        }
        if (!found)
            break;
        struct tds_log_ctx c = {.org = req.org, .entity = req.entity};
        /* A request taken again (its owner stopped or died during it) runs
         * only the entities whose run for it did not complete: an "all"
         * request of a first import ran every entity again, thousands of
         * calls for each restart. */
        int rc = tds_sync_enqueue_rest(s->sync, req.org, req.entity, req.mode, req.id,
                                       req.completed);
        if (rc == TDS_SYNC_NOTHING_LEFT) {
            tds_log(TDS_LOG_INFO, &c, "sync request %lld (%s %s): every run it needs completed "
                    "before it was taken again, closing it",
                    (long long)req.id, req.entity, req.mode);
            tds_store_request_done(s->store, req.id);
            continue;
        }
        if (req.completed[0])
            tds_log(TDS_LOG_INFO, &c, "sync request %lld taken again: %s completed already, "
                    "not run again", (long long)req.id, req.completed);
        if (rc != 0) {
            tds_log(TDS_LOG_WARN, &c, "sync request %lld (%s %s) cannot run here: %s, closing it",
                    (long long)req.id, req.entity, req.mode,
                    rc == TDS_E_INVALID ? "unknown mode" : "unknown entity for this organization");
            tds_store_request_done(s->store, req.id);
            continue;
        }
        tds_log(TDS_LOG_INFO, &c, "took sync request %lld (%s)", (long long)req.id, req.mode);
    }
    free(fetching);
    free(owned);
}

static void tick(struct tds_loop *loop, void *ud)
{
    (void)loop;
    struct tds_schedule *s = ud;
    if (s->stopped)
        return;
    claim_requests(s);
    if (!s->schedule)
        return;
    int64_t now = tds_wall_ms();
    for (size_t i = 0; i < s->orgs->n; i++)
        if (tds_sync_owned(s->sync, s->orgs->orgs[i].org_id))
            schedule_org(s, i, now);
}

int tds_schedule_new(struct tds_schedule **out, struct tds_loop *loop, struct tds_store *store,
                  struct tds_sync *sync, const struct tds_orgs *orgs, const char *instance,
                  bool schedule, int64_t every_ms)
{
    struct tds_schedule *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    s->store = store;
    s->sync = sync;
    s->orgs = orgs;
    s->schedule = schedule;
    s->db_log.interval_ms = 30000;
    s->n_ent = tds_entity_count();
    s->instance = strdup(instance);
    s->slots = calloc((orgs->n ? orgs->n : 1) * s->n_ent, sizeof(*s->slots));
    s->inc_ms = calloc(orgs->n ? orgs->n : 1, sizeof(*s->inc_ms));
    if (!s->instance || !s->slots || !s->inc_ms) {
        tds_schedule_free(s);
        return -ENOMEM;
    }
    s->timer_id = tds_loop_timer_add(loop, every_ms, every_ms, tick, s);
    if (s->timer_id < 0) {
        tds_schedule_free(s);
        return -ENOMEM;
    }
    *out = s;
    return 0;
}

struct tds_schedule *tds_schedule_free(struct tds_schedule *s)
{
    if (!s)
        return NULL;
    if (s->timer_id > 0)
        tds_loop_timer_cancel(s->loop, s->timer_id);
    free(s->instance);
    free(s->slots);
    free(s->inc_ms);
    free(s);
    return NULL;
}

void tds_schedule_owned(struct tds_schedule *s, const char *org, bool owned)
{
    (void)owned;
    for (size_t i = 0; i < s->orgs->n; i++)
        if (strcmp(s->orgs->orgs[i].org_id, org) == 0)
            for (size_t k = 0; k < s->n_ent; k++)
                s->slots[i * s->n_ent + k].known = false;
}

void tds_schedule_stop(struct tds_schedule *s) { s->stopped = true; }
