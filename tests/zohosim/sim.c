/* sim — shared state, mutations with their webhooks, the mutation stream;
 * see sim.h. Webhook bodies are rendered under the org's write lock (they
 * must show the record as this mutation left it) and queued after it is
 * released, so stock that documents move is moved under the same hold:
 * a receiver that fetches the items a webhook names sees it moved. */
#include "sim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "render.h"

int64_t zs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static _Atomic int64_t clock_offset_s;

void zs_set_clock_offset(int64_t s)
{
    clock_offset_s = s;
}

int64_t zs_clock_offset(void)
{
    return clock_offset_s;
}

int64_t zs_wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec + clock_offset_s;
}

void zs_sim_sleep(struct zs_sim *s, int64_t ms)
{
    int64_t end = zs_now_ms() + ms;
    while (!atomic_load(&s->stopping)) {
        int64_t left = end - zs_now_ms();
        if (left <= 0)
            break;
        int64_t step = left < 50 ? left : 50;
        struct timespec ts = {step / 1000, (step % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
}

double zs_sim_rand(struct zs_sim *s)
{
    uint64_t x = zs_mix(atomic_fetch_add(&s->fault_ctr, 1) ^ (s->cfg.seed * 0x9e37));
    return (double)(x >> 11) / 9007199254740992.0;
}

void zs_sim_get_faults(struct zs_sim *s, struct zs_faults *f)
{
    pthread_mutex_lock(&s->faults_lock);
    *f = s->faults;
    pthread_mutex_unlock(&s->faults_lock);
}

struct zs_org *zs_sim_org(struct zs_sim *s, const char *id)
{
    for (size_t i = 0; id && i < s->n_orgs; i++)
        if (!strcmp(s->orgs[i].id, id))
            return &s->orgs[i];
    return NULL;
}

struct pending_hook {
    const char *event;
    char *body;
    size_t len;
};

static char *hook_body(struct zs_org *o, enum zs_ent e, size_t idx, bool deleted, size_t *len)
{
    struct zs_jw w;
    const struct zs_rec *r = &o->t[e].recs[idx];
    zs_jw_init(&w, deleted ? 96 : 4096);
    zs_jw_obj(&w);
    zs_jw_key(&w, zs_ent_detail_key(e));
    if (deleted) {
        char id[32];
        zs_render_id(id, r);
        zs_jw_obj(&w);
        zs_jw_kstr(&w, zs_ent_id_field(e), id);
        zs_jw_obj_end(&w);
    } else {
        zs_render(&w, o, e, r, true, false);
    }
    zs_jw_obj_end(&w);
    return zs_jw_take(&w, len);
}

static const char *event_name(enum zs_mut_op op)
{
    return op == ZS_MUT_CREATE ? "created" : op == ZS_MUT_UPDATE ? "updated" : "deleted";
}

/* What one hold of the write lock collected for after it: webhook bodies
 * (when the org has webhooks) and the documents whose lines move stock. */
struct batch {
    bool hooks;
    struct pending_hook *ph;
    size_t nph;
    size_t *docs;           /* NULL: no stock moves */
    size_t ndocs;
};

static int batch_init(struct batch *b, struct zs_sim *s, struct zs_org *o, size_t n,
                      size_t max_docs)
{
    memset(b, 0, sizeof(*b));
    b->hooks = zs_hooks_enabled(s->hooks, (size_t)o->org_index);
    size_t cap = b->hooks ? n * (ZS_MAX_VARIANTS + 2) : 0;
    b->ph = cap ? calloc(cap, sizeof(*b->ph)) : NULL;
    b->docs = max_docs ? malloc(max_docs * sizeof(*b->docs)) : NULL;
    if ((cap && !b->ph) || (max_docs && !b->docs)) {
        free(b->ph);
        free(b->docs);
        return -ENOMEM;
    }
    return 0;
}

/* After the lock is released: counts the mutations and queues the webhooks. */
static void batch_post(struct zs_sim *s, struct zs_org *o, struct batch *b, long done)
{
    size_t org = (size_t)o->org_index;
    atomic_fetch_add(&s->stats[org].mutations, (uint64_t)done);
    for (size_t i = 0; i < b->nph; i++)
        if (b->ph[i].body)
            zs_hooks_post(s->hooks, org, b->ph[i].event, b->ph[i].body, b->ph[i].len);
    free(b->ph);
    free(b->docs);
}

/* Applies up to n mutations of one kind under the write lock the caller
 * holds. Returns the number applied, or the error that stopped the first. */
static long apply(struct zs_org *o, enum zs_ent e, enum zs_mut_op op, long n,
                  enum zs_invalid invalid, uint32_t stamp, int64_t now_s, struct zs_jw *w,
                  struct batch *b)
{
    long done = 0;
    int rc = 0;
    for (long k = 0; k < n; k++) {
        size_t idx;
        struct zs_also also;
        rc = zs_org_mutate(o, e, op, now_s, invalid, stamp, &idx, &also);
        if (rc)
            break;
        done++;
        if (w) {
            char id[32];
            zs_render_id(id, &o->t[e].recs[idx]);
            zs_jw_str(w, id);
        }
        if (b->docs && op != ZS_MUT_DELETE)
            b->docs[b->ndocs++] = idx;
        if (!b->hooks)
            continue;
        /* Zoho Books has no item groups: no webhook for one */
        bool no_groups = o->products == ZS_BOOKS;
        struct pending_hook *ph = b->ph;
        if (!(no_groups && e == ZS_ITEM_GROUPS)) {
            ph[b->nph].event = event_name(op);
            ph[b->nph].body = hook_body(o, e, idx, op == ZS_MUT_DELETE, &ph[b->nph].len);
            b->nph++;
        }
        for (size_t a = 0; a < also.n; a++) {
            if (no_groups && also.ent == ZS_ITEM_GROUPS)
                continue;
            ph[b->nph].event = event_name(also.op);
            ph[b->nph].body =
                hook_body(o, also.ent, also.idx[a], also.op == ZS_MUT_DELETE, &ph[b->nph].len);
            b->nph++;
        }
    }
    return done == 0 && rc ? rc : done;
}

long zs_sim_mutate(struct zs_sim *s, struct zs_org *o, enum zs_ent e, enum zs_mut_op op, long n,
                   enum zs_invalid invalid, uint32_t stamp, struct zs_jw *w)
{
    struct batch b;
    int rc = batch_init(&b, s, o, (size_t)n, 0);
    if (rc)
        return rc;
    int64_t now_s = zs_wall_s();
    pthread_rwlock_wrlock(&o->lock);
    long done = apply(o, e, op, n, invalid, stamp, now_s, w, &b);
    pthread_rwlock_unlock(&o->lock);
    batch_post(s, o, &b, done > 0 ? done : 0);
    return done;
}

int zs_sim_mutate_request(struct zs_sim *s, struct zs_org *o, enum zs_ent e,
                          const long n[ZS_MUT_OPS], bool moves_stock, struct zs_jw *w)
{
    static const char *const keys[ZS_MUT_OPS] = {
        [ZS_MUT_UPDATE] = "updated", [ZS_MUT_CREATE] = "created", [ZS_MUT_DELETE] = "deleted"};
    if (moves_stock && e != ZS_INVOICES && e != ZS_SALESORDERS)
        return -EINVAL;
    size_t total = 0;
    for (int op = 0; op < ZS_MUT_OPS; op++)
        total += (size_t)n[op];
    size_t max_docs = moves_stock ? (size_t)(n[ZS_MUT_UPDATE] + n[ZS_MUT_CREATE]) : 0;
    size_t *items = max_docs ? malloc(max_docs * ZS_MAX_LINES * sizeof(*items)) : NULL;
    struct batch b;
    if ((max_docs && !items) || batch_init(&b, s, o, total, max_docs)) {
        free(items);
        return -ENOMEM;
    }
    /* one stamp for the request: the three sets are disjoint, each distinct */
    uint32_t stamp = zs_sim_stamp(s);
    int64_t now_s = zs_wall_s();
    long done = 0;
    int rc = 0;
    /* one hold for the whole request: readers see the documents and the
     * stock they move together, and their webhooks go out after both */
    pthread_rwlock_wrlock(&o->lock);
    for (int op = 0; op < ZS_MUT_OPS; op++) {
        zs_jw_key(w, keys[op]);
        zs_jw_arr(w);
        long m = n[op] > 0 ? apply(o, e, (enum zs_mut_op)op, n[op], ZS_VALID, stamp, now_s, w, &b)
                           : 0;
        done += m > 0 ? m : 0;
        zs_jw_arr_end(w);
    }
    if (moves_stock) {
        size_t n_items = 0;
        if (b.ndocs)
            rc = zs_org_move_stock(o, e, b.docs, b.ndocs, items, &n_items);
        zs_jw_key(w, "stock_moved");
        zs_jw_arr(w);
        for (size_t i = 0; i < n_items; i++) {
            char id[32];
            zs_render_id(id, &o->t[ZS_ITEMS].recs[items[i]]);
            zs_jw_str(w, id);
        }
        zs_jw_arr_end(w);
    }
    pthread_rwlock_unlock(&o->lock);
    batch_post(s, o, &b, done);
    free(items);
    return rc;
}

uint32_t zs_sim_stamp(struct zs_sim *s)
{
    uint32_t v = atomic_fetch_add(&s->stamp_ctr, 1) + 1;
    return v ? v : atomic_fetch_add(&s->stamp_ctr, 1) + 1; /* 0 means none */
}

/* ---- mutation stream ---- */

/* The default mix leans on items like a real shop: stock moves all day. */
static enum zs_ent pick_ent(uint64_t x, unsigned mask)
{
    static const enum zs_ent mix[] = {ZS_ITEMS, ZS_ITEMS, ZS_ITEMS, ZS_ITEMS, ZS_ITEMS,
                                      ZS_CONTACTS, ZS_CONTACTS, ZS_SALESORDERS, ZS_SALESORDERS,
                                      ZS_INVOICES};
    if (!mask)
        return mix[x % 10];
    unsigned n = 0;
    enum zs_ent list[ZS_ENT_COUNT];
    for (int e = 0; e < ZS_ENT_COUNT; e++)
        if (mask & (1u << e))
            list[n++] = (enum zs_ent)e;
    return list[x % n];
}

static void *stream_main(void *arg)
{
    struct zs_sim *s = arg;
    uint64_t rng = zs_mix(s->cfg.seed ^ 0x57a3);
    pthread_mutex_lock(&s->stream_lock);
    while (!s->stream_stop) {
        bool any = false;
        int64_t now = zs_now_ms();
        for (size_t i = 0; i < s->n_orgs; i++) {
            struct zs_stream *st = &s->streams[i];
            if (!st->on)
                continue;
            /* a late wake-up catches up, so a stream of r/s for t s makes
             * exactly floor(r*t) mutations */
            bool last = now >= st->until_ms;
            int64_t upto = last ? st->until_ms : now;
            any = true;
            uint64_t due = (uint64_t)((double)(upto - st->start_ms) * st->rate_per_s / 1000.0);
            /* a start or stop while the lock is let go below replaces the
             * stream (its count, ops and entities): this round is over */
            uint64_t gen = st->gen;
            while (st->gen == gen && st->done < due && !s->stream_stop) {
                rng = zs_mix(rng);
                enum zs_ent e = pick_ent(rng, st->ent_mask);
                unsigned r = (unsigned)(rng >> 32) % 100;
                enum zs_mut_op op = st->updates_only       ? ZS_MUT_UPDATE
                                    : r < 4 && e != ZS_WAREHOUSES ? ZS_MUT_CREATE
                                    : r < 6 && e != ZS_WAREHOUSES ? ZS_MUT_DELETE
                                                                  : ZS_MUT_UPDATE;
                st->done++;
                pthread_mutex_unlock(&s->stream_lock);
                long m = zs_sim_mutate(s, &s->orgs[i], e, op, 1, ZS_VALID, 0, NULL);
                if (m > 0)
                    atomic_fetch_add(&s->stats[i].stream_mutations, (uint64_t)m);
                pthread_mutex_lock(&s->stream_lock);
            }
            if (last && st->gen == gen)
                st->on = false;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        if (any) {
            ts.tv_nsec += 2000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&s->stream_cond, &s->stream_lock, &ts);
        } else {
            pthread_cond_wait(&s->stream_cond, &s->stream_lock);
        }
    }
    pthread_mutex_unlock(&s->stream_lock);
    return NULL;
}

int zs_sim_stream(struct zs_sim *s, struct zs_org *o, double rate_per_s, int64_t ms,
                  unsigned ent_mask, bool updates_only)
{
    pthread_mutex_lock(&s->stream_lock);
    struct zs_stream *st = &s->streams[o->org_index];
    st->on = rate_per_s > 0 && ms > 0;
    st->rate_per_s = rate_per_s;
    st->start_ms = zs_now_ms();
    st->until_ms = st->start_ms + ms;
    st->done = 0;
    st->ent_mask = ent_mask;
    st->updates_only = updates_only;
    st->gen++;
    pthread_cond_signal(&s->stream_cond);
    pthread_mutex_unlock(&s->stream_lock);
    return 0;
}

int zs_sim_new(struct zs_sim **out, const struct zs_sim_cfg *cfg, struct zs_org *orgs,
               size_t n_orgs, struct zs_auth *auth)
{
    struct zs_sim *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    s->orgs = orgs;
    s->n_orgs = n_orgs;
    s->auth = auth;
    pthread_mutex_init(&s->faults_lock, NULL);
    pthread_mutex_init(&s->stream_lock, NULL);
    pthread_cond_init(&s->stream_cond, NULL);
    s->limits = calloc(n_orgs, sizeof(*s->limits));
    s->stats = calloc(n_orgs, sizeof(*s->stats));
    s->streams = calloc(n_orgs, sizeof(*s->streams));
    int rc = -ENOMEM;
    if (!s->limits || !s->stats || !s->streams)
        goto fail;
    int64_t now = zs_now_ms();
    for (size_t i = 0; i < n_orgs; i++) {
        const struct zs_org_limits *l = &orgs[i].lim;
        zs_limits_init(&s->limits[i], l->rate_per_min >= 0 ? l->rate_per_min : cfg->rate_per_min,
                       l->concurrency >= 0 ? l->concurrency : cfg->concurrency,
                       l->daily >= 0 ? l->daily : cfg->daily, cfg->minute_ms, cfg->day_ms, now);
    }
    if ((rc = zs_hooks_new(&s->hooks, n_orgs)))
        goto fail;
    if ((rc = -pthread_create(&s->stream_thread, NULL, stream_main, s)))
        goto fail;
    s->stream_started = true;
    *out = s;
    return 0;
fail:
    zs_sim_free(s);
    return rc;
}

struct zs_sim *zs_sim_free(struct zs_sim *s)
{
    if (!s)
        return NULL;
    if (s->stream_started) {
        pthread_mutex_lock(&s->stream_lock);
        s->stream_stop = true;
        pthread_cond_signal(&s->stream_cond);
        pthread_mutex_unlock(&s->stream_lock);
        pthread_join(s->stream_thread, NULL);
    }
    s->hooks = zs_hooks_free(s->hooks);
    for (size_t i = 0; s->limits && i < s->n_orgs; i++)
        zs_limits_deinit(&s->limits[i]);
    for (size_t i = 0; i < s->n_orgs; i++)
        zs_org_deinit(&s->orgs[i]);
    free(s->orgs);
    free(s->limits);
    free(s->stats);
    free(s->streams);
    s->auth = zs_auth_free(s->auth);
    pthread_cond_destroy(&s->stream_cond);
    pthread_mutex_destroy(&s->stream_lock);
    pthread_mutex_destroy(&s->faults_lock);
    free(s);
    return NULL;
}
