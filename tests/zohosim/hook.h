/* hook — the webhook sender: delivers mutations to a receiver like Zoho.
 *
 * Owns, per organization, the webhook target (URL, secret, query parameters,
 * retry policy) and one queue of pending deliveries, drained by one sender
 * thread with libcurl so the HTTP server never waits on a receiver. Each POST
 * carries X-Zoho-Webhook-Signature = hex HMAC-SHA256(secret, query parameters
 * sorted by name as name+value, then the raw body), or the same digest in
 * base64 when the target asks for it. It never renders records:
 * callers pass finished bodies.
 */
#ifndef ZS_HOOK_H
#define ZS_HOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZS_HOOK_MAX_PARAMS 16
#define ZS_HOOK_MAX_PENDING 200000

struct zs_hooks;

struct zs_hook_cfg {
    const char *url;           /* may carry a query string; its parameters are signed */
    const char *secret;        /* "" = unsigned */
    bool base64;               /* the signature's digest in base64, not hex */
    int retries;               /* further attempts after a failure */
    int64_t retry_delay_ms;    /* first retry delay; doubles each attempt */
    int64_t timeout_ms;
    size_t n_params;           /* extra query parameters */
    const char *param_names[ZS_HOOK_MAX_PARAMS];
    const char *param_values[ZS_HOOK_MAX_PARAMS];
};

struct zs_hook_stats {
    uint64_t queued, delivered, attempts, failed_attempts, given_up, dropped, pending;
};

int zs_hooks_new(struct zs_hooks **out, size_t n_orgs);
/* Stops the thread; undelivered bodies are dropped. */
struct zs_hooks *zs_hooks_free(struct zs_hooks *h);
/* cfg NULL (or an empty url) turns the org's webhooks off. Returns 0,
 * -EINVAL for a bad url or too many parameters, -ENOMEM. */
int zs_hooks_configure(struct zs_hooks *h, size_t org, const struct zs_hook_cfg *cfg);
bool zs_hooks_enabled(struct zs_hooks *h, size_t org);
/* Queues one delivery; takes ownership of body (malloc'd). event becomes the
 * `event` query parameter (created, updated, deleted). */
int zs_hooks_post(struct zs_hooks *h, size_t org, const char *event, char *body, size_t len);
void zs_hooks_stats(struct zs_hooks *h, size_t org, struct zs_hook_stats *s);
void zs_hooks_reset_stats(struct zs_hooks *h);

/* hex HMAC-SHA256 of the Zoho string to sign; out gets 64 chars + NUL. */
void zs_hook_sign(const char *secret, const char *const *names, const char *const *values,
                  size_t n, const char *body, size_t len, char out[65]);

#endif
