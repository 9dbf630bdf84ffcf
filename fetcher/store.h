/* store — every SQL statement the fetcher runs, on one libpq connection.
 *
 * Tokens (tds.oauth_tokens), runs (tds.sync_runs), requests
 * (tds.sync_requests), cursors (tds.sync_state), alerts, and the lookups into
 * zoho.* that decide which records need a detail call. Statements are
 * parameterized; table and column names come only from the entity registry.
 * Calls are synchronous and short; a lost connection is re-opened on the
 * next call (one retry) and reported as -EIO. Never logs above debug.
 */
#ifndef TDS_FETCHER_STORE_H
#define TDS_FETCHER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tds_store;
struct tds_entity;

int tds_store_new(struct tds_store **out, const char *conninfo, const char *app_name);
struct tds_store *tds_store_free(struct tds_store *s);
/* Connect if needed; 0 or -EIO with the reason in tds_store_error. */
int tds_store_ensure(struct tds_store *s);
bool tds_store_ok(struct tds_store *s);
/* 1 when tds.oauth_tokens is migrated far enough to store a token, 0 when
 * not (run `tds-writer migrate`), < 0 on a database error (see
 * tds_store_error). */
int tds_store_tokens_ready(struct tds_store *s);
const char *tds_store_error(const struct tds_store *s);

/* ---- tokens ---- */
struct tds_token_row {
    bool exists;
    char *access_token, *api_domain, *refresh_token, *status, *last_error; /* malloc'd or NULL */
    char *accounts_url; /* who minted access_token; malloc'd or NULL (unknown) */
    /* Fingerprint of the credentials Zoho refused, with status revoked or
     * invalid (oauth.c); malloc'd or NULL (none recorded) */
    char *failed_credentials;
    int64_t expires_at_ms, locked_until_ms, window_start_ms, refreshed_at_ms; /* wall, 0 = NULL */
    int64_t refresh_count;
};
void tds_token_row_clear(struct tds_token_row *r);
int tds_store_token_get(struct tds_store *s, const char *org, struct tds_token_row *out);
/* pg_try_advisory_lock(hashtext('tds-oauth:'||org)); *got says whether held. */
int tds_store_token_lock(struct tds_store *s, const char *org, bool *got);
int tds_store_token_unlock(struct tds_store *s, const char *org);
/* Count one refresh attempt in the organization's 10-minute window
 * (window_ms; a new window starts when the old one is over), unless the
 * family's count is at budget already: the row's attempts in its window
 * plus those of the family's other rows (family NULL: none) in theirs.
 * Counted (*counted true): *count is the family's count with this attempt,
 * *window_start_ms the row's window, and the row is marked with family
 * (NULL keeps the one it has), so that the family's count sees the attempt
 * although no refresh of the organization has succeeded yet. Refused
 * (*counted false): nothing is written, *count is the family's count, and
 * *free_at_ms (wall) is when its oldest counted attempt leaves its window
 * (0: none counted). The caller holds the family's lock (and the row's). */
int tds_store_token_count_refresh(struct tds_store *s, const char *org, const char *family,
                                  int64_t window_ms, int64_t budget, bool *counted, int64_t *count,
                                  int64_t *window_start_ms, int64_t *free_at_ms);
/* Take back one attempt counted in the window that started at
 * window_start_ms (as returned above): it never reached Zoho. */
int tds_store_token_uncount_refresh(struct tds_store *s, const char *org, int64_t window_start_ms);
/* After a successful refresh at accounts_url; api_domain NULL/"" keeps the
 * stored one unless it came from another accounts server. Status ok, no
 * lockout, no failed credentials; family is written as given. */
int tds_store_token_save(struct tds_store *s, const char *org, const char *access_token,
                         const char *api_domain, int64_t expires_at_ms, const char *refresh_token,
                         const char *accounts_url, const char *family);
/* The same for several organizations of one Zoho user (auth exchange of one
 * grant code), in one statement: all or none. families[i] ("" for none)
 * belongs to orgs[i]. */
int tds_store_token_save_orgs(struct tds_store *s, const char *const *orgs,
                              const char *const *families, size_t n, const char *access_token,
                              const char *api_domain, int64_t expires_at_ms,
                              const char *refresh_token, const char *accounts_url);
/* A token family: the organizations whose tokens one refresh token mints
 * (one Zoho user's). The newest usable access token another organization of
 * the family stored, from accounts_url, expiring after min_expires_ms (wall):
 * *found false when none. Strings malloc'd into out (access_token,
 * api_domain; expires_at_ms). */
int tds_store_token_family_peek(struct tds_store *s, const char *family, const char *org,
                                const char *accounts_url, int64_t min_expires_ms,
                                struct tds_token_row *out, bool *found);
/* The latest lockout ("Access Denied", locked_until) still running on a row
 * of the family, wall ms into *until_ms; 0 when none. Zoho locks the refresh
 * token out, so every organization of the family. */
int tds_store_token_family_locked(struct tds_store *s, const char *family, int64_t *until_ms);
/* After a failed refresh: status ("ok", "locked", "revoked", "invalid"),
 * locked_until (0 = NULL), the error text, the family (NULL keeps the row's)
 * and, for revoked/invalid, the fingerprint of the credentials refused
 * (failed_credentials; NULL clears it). */
int tds_store_token_fail(struct tds_store *s, const char *org, const char *family,
                         const char *status, int64_t locked_until_ms, const char *error,
                         const char *failed_credentials);
/* The API refused this token: expire it unless someone replaced it already. */
int tds_store_token_expire(struct tds_store *s, const char *org, const char *access_token);

/* ---- runs ---- */
int tds_store_run_insert(struct tds_store *s, const char *run_id, const char *org,
                         const char *entity, const char *mode);
/* records: once per page a record came in (list, then detail); walked: the
 * records the run is done with, each once. */
int tds_store_run_progress(struct tds_store *s, const char *run_id, int64_t pages,
                           int64_t records, int64_t walked, int64_t api_calls);
int tds_store_run_fail(struct tds_store *s, const char *run_id, const char *error);
/* The run ends because its fetcher shuts down cleanly (status 'stopped'):
 * no failure, its request stays open and the next owner runs it again. */
int tds_store_run_stop(struct tds_store *s, const char *run_id, const char *why);
/* Runs left 'running' by an owner that is gone. Returns how many. */
int tds_store_runs_abandon(struct tds_store *s, const char *org, const char *why, int64_t *n);
/* Status of one run: "running", "completed", "failed" into a caller buffer. */
int tds_store_run_status(struct tds_store *s, const char *run_id, char *status, size_t cap);

/* ---- state ---- */
/* The entity's cursor (malloc'd, NULL when none) and when a run last
 * succeeded (wall ms, 0 = never). */
int tds_store_state_get(struct tds_store *s, const char *org, const char *entity, char **cursor,
                        int64_t *last_success_ms);
/* When a run of this mode last finished successfully (wall ms, 0 = never). */
int tds_store_last_run(struct tds_store *s, const char *org, const char *entity, const char *mode,
                       int64_t *finished_ms);

/* ---- zoho.* lookups ---- */
struct tds_known {
    char *id;               /* malloc'd */
    int64_t modified_s;     /* INT64_MIN when NULL */
    bool is_detail;
    bool deleted;
    /* The entity's list_figures as stored, in its order (NULL for SQL
     * NULL); NULL when the entity has none. malloc'd, as each string. */
    char **figures;
};
/* Rows of the entity's table among ids (n ids), with the stored values of
 * its list_figures. *out malloc'd array (tds_store_known_free). */
int tds_store_known(struct tds_store *s, const struct tds_entity *e, const char *org,
                    const char *const *ids, size_t n, struct tds_known **out, size_t *n_out);
void tds_store_known_free(struct tds_known *k, size_t n, const struct tds_entity *e);
/* Up to limit item ids of tds.stock_refresh due now, the one queued longest
 * first (an item queued again and again still comes), and the
 * database's time then (at, for tds_store_stock_done; "" when none). *ids
 * malloc'd array of strings. 0, -EIO (tds_store_error) or -ENOMEM. */
int tds_store_stock_due(struct tds_store *s, const char *org, int limit, char ***ids, size_t *n,
                        char *at, size_t at_len);
/* Deletes every row of org (it does not sync items). 0 or -EIO. */
int tds_store_stock_drop(struct tds_store *s, const char *org);
/* Whether tds.stock_refresh holds an item of org due now: 1, 0 or -EIO. */
int tds_store_stock_waiting(struct tds_store *s, const char *org);
/* The refetch of ids, asked for after at (tds_store_stock_due), ended:
 * their rows queued no later than at are deleted, or with refused (Zoho
 * would not serve them) put off, a minute doubling to a day. 0, -EIO or
 * -ENOMEM. */
int tds_store_stock_done(struct tds_store *s, const char *org, const char *const *ids, size_t n,
                         const char *at, bool refused);
/* Ids of non-deleted rows synced before before_wall_ms. *ids malloc'd array of strings. */
int tds_store_live_ids(struct tds_store *s, const struct tds_entity *e, const char *org,
                       int64_t before_wall_ms, char ***ids, size_t *n);

/* Up to limit ids of live rows stored in list form only (is_detail false),
 * last written before before_wall_ms and not asked for lately: their detail
 * is still owed. Each id returned is recorded in tds.detail_attempts as
 * asked for now; it is not returned again before backoff_ms, doubling with
 * each attempt up to backoff_max_ms, unless its row is written again
 * meanwhile. *ids malloc'd array of strings. 0, -EIO (tds_store_error) or
 * -ENOMEM. */
int tds_store_list_only_due(struct tds_store *s, const struct tds_entity *e, const char *org,
                            int64_t before_wall_ms, int limit, int64_t backoff_ms,
                            int64_t backoff_max_ms, char ***ids, size_t *n);
/* 1 when org's zoho.item_stock holds a stock row of a location (items
 * detailed with locations[]), 0 when none, -EIO on a database error. */
int tds_store_stock_by_location(struct tds_store *s, const char *org);
/* Deletes up to 1,000 of org's tds.detail_attempts rows a day past their
 * next_at. 0 or -EIO. */
int tds_store_detail_attempts_prune(struct tds_store *s, const char *org);

/* ---- quota use (tds.quota_use) ---- */
/* Writes every organization of `rows_json`, a JSON array of
 * {"org", "at", "next", "pause", "inflight", "done": [...], "every",
 * "stopped"} (epoch ms; next and pause may be null; every: the incremental
 * interval in use, in s, left out on a schema before migration 020;
 * stopped: the owner's last record, no call of it starts after "at", kept
 * as stopped_at), as written by `instance`, in one statement.
 * A row lands only where none was or where it holds `claim` (this process's
 * token, put there by tds_store_quota_claim); saved() is called with each
 * organization whose row landed. 0 or -EIO. */
int tds_store_quota_save(struct tds_store *s, const char *instance, const char *claim,
                         const char *rows_json, void (*saved)(void *ud, const char *org), void *ud);
/* Records in org's row, where it holds `claim`, how many seconds this
 * host's clock runs ahead of Zoho's (writer migration 028: the stock
 * triggers' slack). 0; -ENOENT when no row holds the claim; -EIO. */
int tds_store_clock_lead(struct tds_store *s, const char *org, const char *claim, int64_t lead_s);
/* Reads org's row and, in the same statement, claims it for `instance` and
 * `claim`: the previous owner's writes stop landing. *found false when there
 * is none; *stopped when it is its owner's last record (no call of it
 * started after it). Times in epoch ms; *next_ms is INT64_MIN / 2 when NULL, *pause_ms
 * 0 when NULL; at most cap completion times, the newest, into done[] (oldest
 * first), their number in *n_done. 0, -EIO or -ENOMEM. */
int tds_store_quota_claim(struct tds_store *s, const char *org, const char *instance,
                          const char *claim, bool *found, bool *stopped, int64_t *at_ms,
                          int64_t *next_ms, int64_t *pause_ms, int64_t *inflight, int64_t *done,
                          size_t cap, size_t *n_done);

/* ---- requests ---- */
struct tds_request {
    int64_t id;
    char org[128];
    char entity[64];
    char mode[32];
    /* entities whose run for this request completed, comma-separated: a
     * request taken again after its owner stopped or died */
    char completed[1024];
};
/* Claim the oldest open request of one of these orgs that is not in skip.
 * Returns 0 with *found set. */
int tds_store_request_claim(struct tds_store *s, const char *instance, const char *const *orgs,
                            size_t n_orgs, const int64_t *skip, size_t n_skip,
                            struct tds_request *out, bool *found);
/* Hand a fetch-by-id to the organization's owner: an open request with
 * mode 'fetch' and the record id. */
int tds_store_request_fetch(struct tds_store *s, const char *org, const char *entity,
                            const char *zoho_id, const char *instance);
/* Keep a fetch-by-id as an open request with mode 'fetch', unless one for
 * the same record is open already and not among `held` (the requests whose
 * call this fetcher made or is making: their answer may predate the change
 * this fetch is for); another open one is answered by a call made later.
 * Returns 0 once it is durable, either way. */
int tds_store_request_fetch_once(struct tds_store *s, const char *org, const char *entity,
                                 const char *zoho_id, const char *requested_by,
                                 const int64_t *held, size_t n_held);
/* Claim up to max open by-id requests of these orgs that nobody claimed
 * within lease_ms, other than the held ones (still being answered here) and
 * those whose "org/entity" is among `refused` (Zoho refuses the entity to the
 * token for now); calls fn for each. A request stays open until tds_store_request_done (the
 * page that answers it is committed), so one claimed by a replica that died
 * is claimed again after the lease. Returns how many were claimed, -EIO or
 * -ENOMEM. */
int tds_store_request_take_fetches(struct tds_store *s, const char *instance,
                                   const char *const *orgs, size_t n_orgs, int max,
                                   int64_t lease_ms, const int64_t *held, size_t n_held,
                                   const char *const *refused, size_t n_refused,
                                   void (*fn)(void *ud, int64_t id, const char *org,
                                              const char *entity, const char *zoho_id),
                                   void *ud);
/* Queue a reconciliation of one entity as a request, unless one that no
 * replica has claimed yet is already waiting: it survives a restart, unlike a
 * job in memory. */
int tds_store_request_reconcile(struct tds_store *s, const char *org, const char *entity,
                                const char *requested_by);
int tds_store_request_set_run(struct tds_store *s, int64_t id, const char *run_id);
int tds_store_request_done(struct tds_store *s, int64_t id);

/* ---- alerts ---- */
int tds_store_alert(struct tds_store *s, const char *rule, const char *severity, const char *org,
                    const char *entity, const char *summary);

#endif
