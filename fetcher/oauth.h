/* oauth — one organization's Zoho access token.
 *
 * The token lives in tds.oauth_tokens so every replica and every restart
 * reuses it. A refresh happens a few minutes before expiry (or once after
 * the API refused the token), by one caller across all replicas
 * (pg_try_advisory_lock around it; the others re-read the row), and never
 * more than a fixed number of times per 10 minutes (Zoho allows 10). The
 * `error` key is checked under HTTP 200; "Access Denied" backs off for the
 * lockout period, for every organization of the refresh token's family,
 * twice as long (up to lockout_max_ms) when denied again right after one;
 * invalid_client / invalid_code pause the organization until the
 * credentials it would send differ from the ones refused.
 * The refresh call is asynchronous (tds_http); on_change fires when it ends.
 */
#ifndef TDS_FETCHER_OAUTH_H
#define TDS_FETCHER_OAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tds_oauth;
struct tds_org;
struct tds_store;
struct tds_http;
struct tds_events;
struct tds_metrics;

struct tds_oauth_cfg {
    int64_t timeout_ms;        /* token endpoint, whole transfer; default 15000 */
    int64_t lockout_ms;        /* after "Access Denied"; default 20 min */
    int64_t lockout_max_ms;    /* after denials in a row, doubling from lockout_ms;
                                * default 2 * lockout_ms */
    int64_t refresh_ahead_ms;  /* refresh this long before expiry; default 5 min */
    int64_t max_per_window;    /* refreshes per 10 minutes across replicas; default 5 */
};

typedef void (*tds_oauth_change_cb)(void *ud);

enum {
    TDS_OAUTH_READY = 0,   /* *token and *api_domain usable now */
    TDS_OAUTH_PENDING = 1, /* a refresh is running (here or elsewhere): retry after *wait_ms */
    TDS_OAUTH_LOCKED = 2,  /* lockout or refresh budget: retry after *wait_ms */
    TDS_OAUTH_PAUSED = 3,  /* invalid/revoked credentials: nothing to do until fixed
                            * (`auth exchange`, or other ones in TDS_CONFIG) */
};

int tds_oauth_new(struct tds_oauth **out, const struct tds_org *org, const struct tds_oauth_cfg *cfg,
                  struct tds_store *store, struct tds_http *http, struct tds_events *events,
                  struct tds_metrics *metrics, tds_oauth_change_cb cb, void *ud);
/* Cancels a refresh in flight (releasing its lock). */
struct tds_oauth *tds_oauth_free(struct tds_oauth *o);

/* The token to use at wall time now_ms. Pointers stay valid until the next
 * call into this module. May start a refresh. *api_domain is the one Zoho
 * last named for this organization's accounts server (kept when a refresh
 * answer leaves it out), else the data center's default. */
int tds_oauth_get(struct tds_oauth *o, int64_t now_ms, const char **token, const char **api_domain,
                  int64_t *wait_ms);
/* Drop `token` so the next get refreshes (the API refused it). A token
 * dropped is never adopted from the row again. Never for a transport
 * failure: a network outage says nothing about the token. */
void tds_oauth_invalidate(struct tds_oauth *o, const char *token);
/* A call sent with `token` could not connect to its api_domain. The token is
 * kept; at most once per 10 minutes a refresh asks the accounts server
 * whether the api_domain moved (if that server cannot be reached either, the
 * attempt is not counted in the refresh budget). */
void tds_oauth_unreachable(struct tds_oauth *o, const char *token, int64_t now_ms);

enum {
    TDS_OAUTH_REFUSAL_REPLACED = 0, /* not the token in use any more: send again */
    TDS_OAUTH_REFUSAL_DROPPED = 1,  /* dropped now: send again after the refresh */
    TDS_OAUTH_REFUSAL_KEPT = 2,     /* the token is good: the refusal is about the resource */
};
/* The API refused `token` (401, code 57 or 14) for a call sent at wall time
 * sent_ms. Zoho answers the same code 57 for a dead token and for a token
 * whose scope lacks the resource, so one resource refusing must not cost the
 * organization its token: the token is kept when it answered a call sent at
 * or after sent_ms, or when it was itself obtained because of a refusal less
 * than 10 minutes ago (a fresh token refused again). Otherwise it is dropped
 * (in the row too) and the next get refreshes. */
int tds_oauth_refused(struct tds_oauth *o, const char *token, int64_t sent_ms, int64_t now_ms);
/* A call sent with `token` at wall time sent_ms was answered (not refused). */
void tds_oauth_worked(struct tds_oauth *o, const char *token, int64_t sent_ms);
/* Whether the organization is paused for refused credentials at wall time
 * now_ms, looking at its token row again (at most every 10 s) in case an
 * operator fixed them. Starts no refresh. */
bool tds_oauth_paused(struct tds_oauth *o, int64_t now_ms);
/* Token state for /status: "ok", "refreshing", "locked", "paused", "none". */
const char *tds_oauth_state(const struct tds_oauth *o, int64_t now_ms);

/* `auth exchange`: trade a grant code for a refresh token (blocking, for the
 * CLI), with the credentials of orgs[0]; the token is stored for each of
 * orgs (one Zoho user's organizations of one client and data center, which
 * the caller checked), all or none. On success their rows hold the refresh
 * and access tokens. err gets one line. Returns 0, TDS_E_INVALID (Zoho
 * refused) or -EIO. */
int tds_oauth_exchange(const struct tds_org *const *orgs, size_t n_orgs, struct tds_store *store,
                       const char *code, int64_t timeout_ms, char *err, size_t errlen);

#endif
