/* http — HTTP requests through libcurl's multi interface, driven by the
 * stage's loop (curl's sockets are loop fds, curl's timeout is a loop timer).
 *
 * Keeps connections alive across requests (the multi handle's connection
 * cache), accepts compressed answers, bounds the body size and applies a
 * connect timeout and a whole-transfer timeout to every request. Knows
 * nothing about Zoho beyond collecting the X-Rate-Limit-*, Retry-After and
 * Date headers. Never blocks and never logs above debug.
 */
#ifndef TDS_FETCHER_HTTP_H
#define TDS_FETCHER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tds_http;
struct tds_http_call;
struct tds_loop;

#define TDS_HTTP_ERR_MAX 256

struct tds_http_resp {
    bool transport_ok;          /* false: timeout, reset, short body, too large */
    long status;                /* HTTP status, 0 without an answer */
    const char *body;           /* NUL-terminated; valid during the callback only */
    size_t len;
    char error[TDS_HTTP_ERR_MAX]; /* curl's explanation when !transport_ok */
    bool no_connect;            /* the host could not be resolved or connected to */
    int64_t rl_limit, rl_remaining, rl_reset_s, retry_after_s; /* -1 when absent */
    int64_t date_s;             /* the Date header (the server's clock), -1 when absent */
    double seconds;             /* total time of the transfer */
};

typedef void (*tds_http_cb)(const struct tds_http_resp *r, void *ud);

struct tds_http_cfg {
    int64_t connect_timeout_ms; /* default 5000 */
    size_t max_body;            /* default 64 MiB */
};

int tds_http_new(struct tds_http **out, struct tds_loop *loop, const struct tds_http_cfg *cfg);
/* Abandons requests still running (their callbacks are not called). */
struct tds_http *tds_http_free(struct tds_http *h);

/* Start a request. headers: NULL-terminated "Name: value" list (copied).
 * form: application/x-www-form-urlencoded body for a POST, NULL for GET.
 * cb runs once from the loop when the request ends, unless cancelled.
 * *call (may be NULL) identifies it for tds_http_cancel; it is valid until
 * the callback starts. Returns 0 or -ENOMEM / -EIO. */
int tds_http_request(struct tds_http *h, const char *url, const char *const *headers,
                     const char *form, int64_t timeout_ms, tds_http_cb cb, void *ud,
                     struct tds_http_call **call);
/* Stop a running request; its callback will not run. */
void tds_http_cancel(struct tds_http *h, struct tds_http_call *call);
size_t tds_http_running(const struct tds_http *h);

/* URL-encode s into a new string (caller frees), NULL on ENOMEM. */
char *tds_http_escape(const char *s);

#endif
