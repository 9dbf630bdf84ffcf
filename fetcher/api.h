/* api — one organization's queue of Zoho API GETs.
 *
 * Each call waits for a token (oauth) and for the limiter's go, then runs on
 * tds_http. The answer is classified (zoho.c): 429s go back to the limiter
 * and the call is queued again; a refused token is refreshed once and the
 * call retried unless the token is known to be good (then the endpoint is
 * denied for want of a scope and its calls fail at once for a while); 5xx, timeouts, resets and truncated bodies are retried with
 * exponential backoff and jitter up to max_attempts, after which the caller
 * gets the failure. Waiting is always a loop timer, never a spin. Counts
 * every call in metrics and publishes tds.zoho.api.* events.
 */
#ifndef TDS_FETCHER_API_H
#define TDS_FETCHER_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zoho.h"

struct tds_api;
struct tds_loop;
struct tds_http;
struct tds_oauth;
struct tds_limiter;
struct tds_org;
struct tds_metrics;
struct tds_events;
struct tds_store;

struct tds_api_cfg {
    int64_t timeout_ms;       /* per request, whole transfer */
    int max_attempts;         /* transient failures before giving up; default 6 */
    int64_t backoff_base_ms;  /* default 500 */
    int64_t backoff_max_ms;   /* default 30000 */
};

struct tds_api_result {
    enum tds_zapi_class cls;  /* OK, NOTFOUND, or why it failed for good */
    int64_t code;             /* envelope code, -1 without one */
    long status;
    const char *body;         /* valid during the callback */
    size_t len;
    const char *error;        /* one line for logs when cls is not OK/NOTFOUND */
    int64_t sent_wall_ms;     /* wall clock when the answered attempt was sent (0: none):
                               * the record versions in body are from then or later */
    bool denied;              /* cls AUTH: Zoho does not let this token reach the endpoint
                               * (code 57 while the token works elsewhere: a missing
                               * scope); asking again soon will not help */
    bool paused;              /* cls FATAL without a call: the organization is paused for
                               * refused credentials. No answer from Zoho about the call:
                               * it succeeds once an operator fixes them */
    int64_t zoho_sent_s;      /* when the answered attempt was sent by Zoho's clock, at the
                               * earliest (the answer's Date less the call's time), seconds;
                               * -1 without a Date header */
};

typedef void (*tds_api_cb)(const struct tds_api_result *r, void *ud);

int tds_api_new(struct tds_api **out, struct tds_loop *loop, struct tds_http *http,
                struct tds_oauth *oauth, struct tds_limiter *limiter, const struct tds_org *org,
                struct tds_store *store, struct tds_metrics *metrics, struct tds_events *events,
                const struct tds_api_cfg *cfg);
/* Cancels everything (see tds_api_cancel_all). */
struct tds_api *tds_api_free(struct tds_api *a);

/* Queue GET {base}{path}?organization_id=…&{query}. endpoint labels metrics
 * ("items.list"). query may be NULL. Returns 0 or -ENOMEM. */
int tds_api_get(struct tds_api *a, const char *endpoint, const char *path, const char *query,
                tds_api_cb cb, void *ud);
/* The same, ahead of everything queued: a list page that feeds the queue
 * must not wait behind the detail calls of the previous page. */
int tds_api_get_first(struct tds_api *a, const char *endpoint, const char *path, const char *query,
                      tds_api_cb cb, void *ud);
/* As tds_api_get, but a 5xx or a transport failure is not tried again (rate
 * limits and token refreshes as usual): for a call whose failure is
 * expected and asked smaller after (the halves of a failed GET /itemdetails). */
int tds_api_get_once(struct tds_api *a, const char *endpoint, const char *path, const char *query,
                     tds_api_cb cb, void *ud);
/* Drop every queued and running call; each callback runs once with
 * TDS_ZAPI_FATAL and error "cancelled" (ownership lost, shutdown). */
void tds_api_cancel_all(struct tds_api *a);
/* Whether a call belongs to what is being withdrawn (arg); must not call
 * into this module. */
typedef bool (*tds_api_match_cb)(tds_api_cb cb, void *ud, void *arg);
/* Withdraw the calls match() picks: those not sent yet (queued, or waiting
 * out a backoff) are never sent, their callbacks never run, and dispose(cb,
 * ud, arg) runs once for each so its owner can free ud (it must not call into
 * this module either); those in flight finish, but are not tried again: any
 * answer but a success or a 1002 reaches their callback as a failure. Safe
 * from inside a callback of this module. Returns how many were not sent. */
size_t tds_api_withdraw(struct tds_api *a, tds_api_match_cb match, tds_api_match_cb dispose,
                        void *arg);
/* The i-th endpoint ("invoices.list") Zoho refuses to this organization's
 * token for want of a scope: false past the last. *error stays valid until
 * the next call into this module; *retry_in_ms is how long until it is asked
 * again (calls to it fail at once until then). */
bool tds_api_denial_at(const struct tds_api *a, size_t i, const char **endpoint, const char **error,
                       int64_t *retry_in_ms);
/* Something changed (token refreshed): try to send now. */
void tds_api_kick(struct tds_api *a);
size_t tds_api_queued(const struct tds_api *a);
size_t tds_api_running(const struct tds_api *a);
/* Calls sent to Zoho since start. */
int64_t tds_api_calls(const struct tds_api *a);
/* True while the organization is paused for bad credentials. */
int tds_api_paused(const struct tds_api *a);
/* How many seconds this host's clock runs ahead of Zoho's (negative:
 * behind), at most: of the 10 s windows of the last 10 minutes, the
 * greatest of the least bounds the answers' Date headers gave in each, a
 * second or two over the truth on a synced host. False before any answer
 * with a Date. */
bool tds_api_clock_lead(const struct tds_api *a, int64_t *lead_s);

#endif
