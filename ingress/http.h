/* http — the webhook endpoint: POST /webhooks/zoho/{org_id} (libmicrohttpd).
 *
 * Owns the MHD daemon and the requests in flight. For each request it checks
 * limits, verifies the signature over the raw bytes, parses the body, asks
 * the dedupe window, appends to the journal, hands the entry to forward, and
 * answers 200 only once the journal says the entry is durable. While it waits
 * the connection is suspended (thread-pool mode) or its thread blocks
 * (thread-per-connection mode); the journal's sync thread wakes it through
 * tds_http_synced(). It never talks to ZeroMQ.
 */
#ifndef TDS_INGRESS_HTTP_H
#define TDS_INGRESS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tds_http;
struct tds_orgs;
struct tds_journal;
struct tds_dedupe;
struct tds_forward;
struct tds_metrics;

struct tds_http_opts {
    const char *listen;          /* "host:port" or ":port"; port 0 = any free port */
    unsigned threads;            /* MHD thread pool size (suspend/resume mode) */
    bool thread_per_connection;  /* block in the handler instead of suspending */
    int64_t sync_wait_ms;        /* thread per connection: longest block for a sync, then 503 */
    bool use_poll;               /* pool threads poll() their connections, not epoll */
    unsigned conn_limit;         /* connections overall */
    unsigned per_ip_limit;       /* connections per client address */
    unsigned timeout_s;          /* idle connection timeout (headers, body, between requests) */
    unsigned body_deadline_s;    /* a body not complete this long after its headers: cut */
    unsigned header_deadline_s;  /* headers not complete this long after their first byte:
                                  * the connection is closed (by tds_http_tick) */
    size_t max_body;             /* bytes; more → 413 */
    size_t body_memory;          /* body bytes held at once, all requests, booked as they
                                  * arrive; more → 503 */
    int64_t sig_max_age_ms;      /* t= signatures older than this → 401 */
    int64_t dedupe_window_ms;
};

struct tds_http_deps {
    const struct tds_orgs *orgs;
    struct tds_journal *journal;
    struct tds_dedupe *dedupe;
    struct tds_forward *forward;
    struct tds_metrics *metrics;
    const char *origin;          /* "ingress.<instance>" */
};

int tds_http_new(struct tds_http **out, const struct tds_http_opts *o, const struct tds_http_deps *d);
/* Resumes every waiter, stops the daemon; takes NULL, returns NULL. */
struct tds_http *tds_http_free(struct tds_http *h);
int tds_http_start(struct tds_http *h);
uint16_t tds_http_port(const struct tds_http *h);
/* How the started daemon runs, from its own flags: "a thread per
 * connection", "epoll", "poll" or "select". */
const char *tds_http_model(const struct tds_http *h);
/* Stop accepting connections; requests in flight continue. */
void tds_http_quiesce(struct tds_http *h);
/* Requests started and not yet answered. */
size_t tds_http_inflight(struct tds_http *h);
/* Close the connections whose request headers are past their deadline
 * (header_deadline_s after the request's first byte); counted and logged.
 * Call about once a second, from any one thread (the loop's tick). */
void tds_http_tick(struct tds_http *h);
/* The journal's synced callback: wake requests waiting for seq ≤ synced. */
void tds_http_synced(struct tds_http *h, uint64_t synced, bool failed);

#endif
