/* sim — the simulator's shared state and the operations on it.
 *
 * Owns the organizations, their limits and counters, the accounts server,
 * the webhook sender, the fault settings and the mutation stream thread.
 * Mutations go through zs_sim_mutate so that every change also becomes a
 * webhook. It never parses HTTP (server.c) or command lines (main.c).
 */
#ifndef ZS_SIM_H
#define ZS_SIM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "data.h"
#include "hook.h"
#include "jw.h"
#include "limits.h"

enum zs_ep { ZS_EP_LIST, ZS_EP_DETAIL, ZS_EP_KINDS };

struct zs_org_stats {
    atomic_uint_fast64_t requests;              /* admitted API requests */
    atomic_uint_fast64_t by_ep[ZS_ENT_COUNT][ZS_EP_KINDS];
    atomic_uint_fast64_t locations, itemdetails, other;
    atomic_uint_fast64_t r429_44, r429_45, r429_1070, r401, r404, r400;
    atomic_uint_fast64_t faults;
    atomic_uint_fast64_t denied;                /* refused by the deny fault (code 57) */
    atomic_uint_fast64_t mutations, stream_mutations;
};

struct zs_faults {
    double p500, p502, p503, p_slow, p_truncate, p_reset, p_expired_token_200;
    double p400;             /* 400 code 2 "Invalid value passed": a refusal no retry mends */
    unsigned deny_mask;      /* entities (1 << zs_ent) refused with code 57: a token whose
                              * scope lacks them (every token, every time) */
    int deny_status;         /* HTTP status of those refusals; 401 when 0 */
    unsigned ignore_filter_mask; /* entities (1 << zs_ent) whose lists ignore the
                              * last_modified_time filter (checked, then not applied) */
    unsigned repeat_mask;    /* entities whose list pages end with their first record again */
    int64_t slow_ms;
    int64_t token_hang_ms;   /* every token request waits this long */
    char refuse_id[160];     /* these records' own GETs are refused ("" none; ids separated by */
    int refuse_status;       /* commas): records Zoho cannot serve, under HTTP 400 (code 2),
                              * 500 (code 1000) or 200 (code 0, no record) */
    int64_t html404_itemdetails; /* the next N GET /itemdetails get a proxy's HTML 404 page */
    char nostock_id[160];    /* these items' own GET /items/{id} leave their stock sites out
                              * ("" none; ids separated by commas) */
};

struct zs_stream {
    bool on;
    double rate_per_s;
    int64_t start_ms, until_ms;
    uint64_t done;
    unsigned ent_mask;       /* entities to mutate; 0 = the default mix */
    bool updates_only;       /* no creates or deletes */
    uint64_t gen;            /* bumped by every start or stop */
};

struct zs_sim_cfg {
    uint64_t seed;
    int64_t epoch_s;
    int64_t rate_per_min, concurrency, daily;
    int64_t minute_ms, day_ms;
    bool retry_after;
    bool modified_ge;        /* last_modified_time filter as >= instead of > */
    bool modified_local;     /* the filter's time read as the organization's wall
                              * clock, its offset ignored */
    bool itemdetails_missing_error; /* GET /itemdetails with an unknown or deleted id
                                     * answers 404 code 1002 as a whole (default: skip it) */
    bool itemdetails_no_stock;      /* GET /itemdetails leaves the stock sites out */
    bool item_no_stock;             /* and so does GET /items/{id} (--itemdetails-stock never) */
};

struct zs_sim {
    struct zs_sim_cfg cfg;
    struct zs_org *orgs;
    size_t n_orgs;
    struct zs_limits *limits;          /* one per org */
    struct zs_org_stats *stats;        /* one per org */
    struct zs_auth *auth;
    struct zs_hooks *hooks;
    char api_domain[128];

    pthread_mutex_t faults_lock;
    struct zs_faults faults;
    atomic_uint_fast64_t fault_ctr;
    atomic_uint stamp_ctr;

    atomic_uint_fast64_t ctl_requests, unknown_requests;
    atomic_int stopping;

    pthread_mutex_t stream_lock;
    pthread_cond_t stream_cond;
    pthread_t stream_thread;
    bool stream_started, stream_stop;
    struct zs_stream *streams;         /* one per org */
};

/* Takes ownership of orgs (already generated). */
int zs_sim_new(struct zs_sim **out, const struct zs_sim_cfg *cfg, struct zs_org *orgs,
               size_t n_orgs, struct zs_auth *auth);
struct zs_sim *zs_sim_free(struct zs_sim *s);

struct zs_org *zs_sim_org(struct zs_sim *s, const char *id);

/* Applies n mutations of one kind (n distinct records when stamp is set)
 * and queues their webhooks; appends the affected ids (text) to the JSON
 * array being written in w (may be NULL). Fewer when the records run out.
 * Returns the number applied, or a negative errno. */
long zs_sim_mutate(struct zs_sim *s, struct zs_org *o, enum zs_ent e, enum zs_mut_op op, long n,
                   enum zs_invalid invalid, uint32_t stamp, struct zs_jw *w);
/* One POST /_sim/mutate: n[op] mutations of each kind of distinct records
 * of e, under one hold of the org's write lock. Writes the members
 * "updated", "created" and "deleted" (arrays of ids) into the object open in
 * w and, when moves_stock, "stock_moved": the updated and created documents
 * move the stock of the items on their lines (zs_org_move_stock), without
 * changing the items otherwise. Fewer when the records run out. Returns 0,
 * -EINVAL when moves_stock is set for an entity other than invoices and
 * sales orders (nothing done), -ENOMEM (nothing done, or, when moving the
 * stock ran out of memory, the documents changed without moving it). */
int zs_sim_mutate_request(struct zs_sim *s, struct zs_org *o, enum zs_ent e,
                          const long n[ZS_MUT_OPS], bool moves_stock, struct zs_jw *w);
/* A fresh stamp for one mutation request (see zs_org_mutate). */
uint32_t zs_sim_stamp(struct zs_sim *s);

/* A uniform number in [0,1) for fault decisions. */
double zs_sim_rand(struct zs_sim *s);
void zs_sim_get_faults(struct zs_sim *s, struct zs_faults *f);

int zs_sim_stream(struct zs_sim *s, struct zs_org *o, double rate_per_s, int64_t ms,
                  unsigned ent_mask, bool updates_only);

int64_t zs_now_ms(void);      /* monotonic */
int64_t zs_wall_s(void);      /* Zoho's wall clock, seconds: the host's plus the offset */
/* Zoho's clock set apart from the host's (--clock-offset): mutations and the
 * Date header of every answer use it. */
void zs_set_clock_offset(int64_t s);
int64_t zs_clock_offset(void);
/* Sleeps up to ms, returning early when the simulator is stopping. */
void zs_sim_sleep(struct zs_sim *s, int64_t ms);

#endif
