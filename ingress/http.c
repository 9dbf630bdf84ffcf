/* http — libmicrohttpd request handling for Zoho webhooks.
 *
 * One request goes: headers (method, path, organization, Content-Length,
 * Content-Type: rejected before the body is read) → body into a buffer capped
 * at max_body → signature over the raw bytes → body parsing → dedupe window
 * → journal append → wait for the group commit → 200. A duplicate is answered
 * 200 once the original's journal record is durable, so a 200 never stands
 * for something that could still be lost. Responses carry no detail of why a
 * signature failed; the reason goes to a metric and a rate-limited log line.
 * Every other refusal is counted by status and logged the same way, those
 * libmicrohttpd answers itself (headers over the memory limit) included: its
 * messages come through mhd_log() as this stage's JSON lines.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received (glibc's lacks it) */
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "config.h"
#include "dedupe.h"
#include "entities.h"
#include "entry.h"
#include "forward.h"
#include "journal.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"
#include "util.h"
#include "verify.h"
#include "webhook.h"

#define PATH_PREFIX "/webhooks/zoho/"

enum req_state { REQ_BODY = 0, REQ_WAITING, REQ_DONE };

struct req {
    enum req_state state;
    struct MHD_Connection *conn;
    const struct tds_org *org;
    struct tds_buf body;
    size_t reserved;         /* its share of body_memory: the body's buffer, until freed */
    size_t received;         /* body bytes received, kept or not */
    bool over_budget;        /* the body could not grow: read to its end unkept, then 503 */
    bool duplicate;
    bool by_delete;          /* sent with DELETE: a notice to fetch its record */
    uint64_t seq;            /* journal seq this request waits for */
    struct timespec t0;      /* headers received */
    struct req *wprev, *wnext;
    bool in_waiters;
};

struct status_metric {
    unsigned code;
    struct tds_series *s;
};

/* One per TCP connection (MHD_OPTION_NOTIFY_CONNECTION), for the header
 * deadline: the MHD threads say when a request's headers are complete
 * (busy) and when it ends (gen); the loop's tick (tds_http_tick) watches
 * the rest, with no system call on the request's path. */
struct hconn {
    struct hconn *prev, *next;   /* h->conns, under conns_mu */
    int fd;                      /* valid while listed: MHD closes it only after CLOSED */
    atomic_bool busy;            /* headers complete, the request not ended */
    atomic_uint gen;             /* requests ended on this connection */
    uint64_t mark;               /* the tick's: bytes received when it saw the last one end */
    _Atomic int64_t wait_ms;     /* when it began to wait for a request (no byte counter) */
    /* the tick's own, under conns_mu */
    unsigned seen_gen;
    int64_t first_ms;            /* when the tick first saw bytes past mark; 0: none yet */
    bool cut;
    struct sockaddr_storage addr;
};

struct tds_http {
    struct tds_http_opts o;
    struct tds_http_deps d;
    struct MHD_Daemon *daemon;
    struct sockaddr_storage addr;
    uint16_t port;

    pthread_mutex_t intake_mu;   /* dedupe lookup + append + insert, atomically */
    pthread_mutex_t wait_mu;     /* the waiters list and stopping */
    struct req *waiters;
    atomic_size_t inflight;
    atomic_size_t body_bytes;    /* body_memory held by request bodies */
    bool stopping;               /* no more suspending: answer what is left */
    bool quiesced;               /* the listening socket is closed (tds_http_quiesce) */

    pthread_mutex_t conns_mu;    /* the connections list */
    struct hconn *conns;

    pthread_mutex_t log_mu;
    struct tds_log_limit log_sig, log_bad, log_full, log_mhd, log_hdr, log_jerr;
    struct tds_log_limit log_refused[16]; /* by index in codes[] */

    struct MHD_Response *resp[16];
    struct MHD_Response *resp_503_close; /* a body refused midway: 503, then close */
    struct status_metric status[16];
    size_t n_status;
    struct tds_series *sig_fail[8];
    struct tds_series *sig_unsigned;
    struct tds_series *dups;
    struct tds_series *accept_s;
    struct tds_series *body_gauge;
    struct tds_series *cut;
    struct tds_series *hdr_cut;
    struct tds_series *journal_errors;
};

static const unsigned codes[] = {200, 400, 401, 404, 405, 413, 415, 500, 503};

static const char *body_for(unsigned code)
{
    switch (code) {
    case 200: return "{\"status\":\"accepted\"}\n";
    case 400: return "{\"error\":\"bad request\"}\n";
    case 401: return "{\"error\":\"unauthorized\"}\n";
    case 404: return "{\"error\":\"not found\"}\n";
    case 405: return "{\"error\":\"method not allowed\"}\n";
    case 413: return "{\"error\":\"payload too large\"}\n";
    case 415: return "{\"error\":\"unsupported media type\"}\n";
    case 503: return "{\"error\":\"temporarily unavailable\"}\n";
    default: return "{\"error\":\"internal error\"}\n";
    }
}

static size_t code_index(unsigned code)
{
    for (size_t i = 0; i < TDS_ARRAY_SIZE(codes); i++)
        if (codes[i] == code)
            return i;
    return 7; /* 500 */
}

static enum MHD_Result respond_with(struct tds_http *h, struct req *r, unsigned code,
                                    struct MHD_Response *resp)
{
    size_t i = code_index(code);

    r->state = REQ_DONE;
    tds_series_inc(h->status[i].s, 1);
    if (code == 200) {
        struct timespec t1;

        clock_gettime(CLOCK_MONOTONIC, &t1);
        tds_series_observe(h->accept_s, (double)(t1.tv_sec - r->t0.tv_sec) +
                                            (double)(t1.tv_nsec - r->t0.tv_nsec) / 1e9);
    }
    return MHD_queue_response(r->conn, code, resp);
}

static enum MHD_Result respond(struct tds_http *h, struct req *r, unsigned code)
{
    return respond_with(h, r, code, h->resp[code_index(code)]);
}

static enum MHD_Result respond_conn(struct tds_http *h, struct MHD_Connection *c, unsigned code)
{
    size_t i = code_index(code);

    tds_series_inc(h->status[i].s, 1);
    return MHD_queue_response(c, code, h->resp[i]);
}

/* ---- body memory: one budget for the bodies of every request ----
 *
 * A body is read whole before its signature can be checked, so without a
 * bound on all of them together, anyone who knows an organization id could
 * hold TDS_INGRESS_CONN_LIMIT bodies of TDS_INGRESS_MAX_BODY each in memory
 * (2,048 × 1 MiB by default) by sending all but their last byte. A body is
 * booked as it arrives: each time its buffer grows, the buffer's new size
 * (at most twice what arrived, never past its Content-Length or the cap).
 * Booking what was announced instead let connections that announce 1 MiB
 * and send nothing take the whole budget, every real webhook answered 503
 * for as long as they held. A body that cannot grow is read to its end
 * without being kept and answered 503 (a response cannot be queued in the
 * middle of a body). The booking is given back when the body is freed:
 * once the request is journaled (before it waits for the sync), or when it
 * ends. */
static bool body_book(struct tds_http *h, struct req *r, size_t n)
{
    size_t cur = atomic_load(&h->body_bytes);

    do {
        if (n > h->o.body_memory || cur > h->o.body_memory - n)
            return false;
    } while (!atomic_compare_exchange_weak(&h->body_bytes, &cur, cur + n));
    r->reserved += n;
    tds_series_inc(h->body_gauge, (double)n);
    return true;
}

enum { BODY_OVER_BUDGET = 100 };

/* Make room in r->body for n more bytes, booking the buffer's growth first.
 * Returns 0, TDS_E_TOO_LARGE (over the body's cap), BODY_OVER_BUDGET (the
 * budget has no room; nothing changed) or -ENOMEM. */
static int body_grow(struct tds_http *h, struct req *r, size_t n)
{
    struct tds_buf *b = &r->body;
    size_t want, cap;
    char *p;

    if (n > b->max - b->len)
        return TDS_E_TOO_LARGE;
    want = b->len + n + 1; /* tds_buf keeps a NUL after the bytes */
    if (want <= b->cap)
        return 0;
    cap = b->cap > b->max / 2 ? b->max + 1 : b->cap * 2;
    if (cap < want)
        cap = want;
    if (cap > b->max + 1)
        cap = b->max + 1;
    /* What the buffer holds, its NUL aside: so a body of exactly the
     * budget's size still fits. */
    if (cap - 1 > r->reserved && !body_book(h, r, cap - 1 - r->reserved))
        return BODY_OVER_BUDGET;
    p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM; /* the booking goes back with the body */
    b->p = p;
    b->cap = cap;
    return 0;
}

static void body_release(struct tds_http *h, struct req *r)
{
    tds_buf_deinit(&r->body);
    if (r->reserved) {
        atomic_fetch_sub(&h->body_bytes, r->reserved);
        tds_series_inc(h->body_gauge, -(double)r->reserved);
        r->reserved = 0;
    }
}

/* Text from outside for a log line: at most max bytes of s (then "..."),
 * anything outside printable ASCII as '?' (a path is URL-decoded: it may
 * hold any byte). out has room for max + 4. */
static void log_text(char *out, size_t max, const char *s)
{
    size_t n = 0;

    for (; s && *s && n < max; s++)
        out[n++] = *s >= 0x20 && *s < 0x7f ? *s : '?';
    if (s && *s)
        out[n++] = '.', out[n++] = '.', out[n++] = '.';
    out[n] = '\0';
}

/* A request refused before its body is read (unknown path or organization,
 * method, announced length, content type): answered and counted by
 * respond_conn(), logged here at most once per 10 s for each status, with
 * the count of those left out since. */
static enum MHD_Result refuse(struct tds_http *h, struct MHD_Connection *c, unsigned code,
                              const struct tds_org *org, const char *why, const char *what)
{
    struct tds_log_ctx ctx = {.org = org ? org->org_id : NULL};
    char text[72];

    log_text(text, 64, what);
    pthread_mutex_lock(&h->log_mu);
    tds_log_limited(&h->log_refused[code_index(code)], TDS_LOG_INFO, &ctx,
                    "webhook refused (%u): %s%s%s", code, why, what ? " " : "",
                    what ? text : "");
    pthread_mutex_unlock(&h->log_mu);
    return respond_conn(h, c, code);
}

/* libmicrohttpd's own messages: a request it refuses itself (431, headers
 * over the connection's memory), a socket error. Rate limited like the
 * refusals above, instead of free text on stderr between the JSON lines. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct tds_http *h = cls;
    char msg[512], text[sizeof(msg) + 4];
    size_t n;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    log_text(text, sizeof(msg), msg);
    pthread_mutex_lock(&h->log_mu);
    tds_log_limited(&h->log_mhd, TDS_LOG_INFO, NULL, "HTTP server: %s", text);
    pthread_mutex_unlock(&h->log_mu);
}

static void log_limited(struct tds_http *h, struct tds_log_limit *lim, enum tds_log_level lvl,
                        const char *org, const char *fmt, const char *a)
{
    struct tds_log_ctx ctx = {.org = org};

    pthread_mutex_lock(&h->log_mu);
    tds_log_limited(lim, lvl, &ctx, fmt, a);
    pthread_mutex_unlock(&h->log_mu);
}

/* ---- header deadline: each request's headers complete in time ----
 *
 * libmicrohttpd calls the handler only once a request's headers are
 * complete, and its only clock before that is the idle timeout: a client
 * sending one header byte every 14 s held its connection for hours, and a
 * few addresses × TDS_INGRESS_PER_IP_LIMIT filled TDS_INGRESS_CONN_LIMIT.
 * So each connection is listed here, and the loop's tick (tds_http_tick)
 * shuts down one whose request headers are not complete
 * TDS_INGRESS_HEADER_DEADLINE_S after the request's first byte.
 *
 * The first byte is the kernel's: TCP_INFO's count of bytes received
 * (tcpi_bytes_received, Linux 4.1+) passing the mark the tick took when it
 * saw the connection's last request end (0 for its first), as the tick sees
 * it (so up to a second late). A keep-alive connection idle between
 * requests has no byte past its mark and is left to the idle timeout
 * (TDS_INGRESS_TIMEOUT_S), as a connection opened and never written to is.
 * Bytes of the next request that came before the tick saw the last one end
 * are in its mark: that request's clock starts at its next byte, at most an
 * idle timeout later. The mark is the tick's so that a request pays no
 * system call for it (one getsockopt a request cost ~1 of ~9 per webhook). Without
 * the counter (an older kernel, gVisor) the clock starts when the
 * connection begins to wait for a request and runs deadline + idle timeout,
 * so that an idle keep-alive connection is still the idle timeout's. */

static struct hconn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci ? ci->socket_context : NULL;
}

/* Bytes received on fd so far; false when the kernel does not say. */
static bool bytes_received(int fd, uint64_t *out)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received))
        return false;
    *out = ti.tcpi_bytes_received;
    return true;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct tds_http *h = cls;
    struct hconn *k = *socket_context;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ad =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

        /* Without its entry a connection has only the idle timeout: no
         * memory for 100 bytes is not a reason to refuse it. */
        if (!fd || !(k = calloc(1, sizeof(*k))))
            return;
        k->fd = fd->connect_fd;
        atomic_init(&k->busy, false);
        atomic_init(&k->gen, 0);
        k->mark = 0;
        atomic_init(&k->wait_ms, tds_now_ms());
        if (ad && ad->client_addr)
            memcpy(&k->addr, ad->client_addr,
                   ad->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                          : sizeof(struct sockaddr_in));
        pthread_mutex_lock(&h->conns_mu);
        k->next = h->conns;
        if (h->conns)
            h->conns->prev = k;
        h->conns = k;
        pthread_mutex_unlock(&h->conns_mu);
        *socket_context = k;
        return;
    }
    if (!k)
        return;
    /* Before libmicrohttpd closes the fd: once unlisted, the tick cannot
     * shut down a number the kernel may give to another socket. */
    pthread_mutex_lock(&h->conns_mu);
    if (k->prev)
        k->prev->next = k->next;
    else
        h->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    pthread_mutex_unlock(&h->conns_mu);
    free(k);
    *socket_context = NULL;
}

/* A request's headers are complete: the deadline is done with it. */
static void conn_headers_done(struct MHD_Connection *c)
{
    struct hconn *k = conn_of(c);

    if (k)
        atomic_store(&k->busy, true);
}

/* A request ended: the connection waits for the next. The tick takes the
 * bytes received so far as the next request's mark when it sees gen move:
 * a system call there, once a second, not one per request here. */
static void conn_request_ended(struct MHD_Connection *c)
{
    struct hconn *k = conn_of(c);

    if (!k)
        return;
    atomic_store(&k->wait_ms, tds_now_ms());
    atomic_fetch_add(&k->gen, 1);
    atomic_store(&k->busy, false);
}

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    const void *a = ss->ss_family == AF_INET6
                        ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                        : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;

    if ((ss->ss_family != AF_INET && ss->ss_family != AF_INET6) ||
        !inet_ntop(ss->ss_family, a, out, (socklen_t)cap))
        snprintf(out, cap, "?");
}

void tds_http_tick(struct tds_http *h)
{
    int64_t now = tds_now_ms(), deadline_ms = (int64_t)h->o.header_deadline_s * 1000;
    int64_t fallback_ms = deadline_ms + (int64_t)h->o.timeout_s * 1000;
    size_t n_cut = 0;
    char who[INET6_ADDRSTRLEN + 1] = "";

    if (!h->daemon || deadline_ms <= 0)
        return;
    pthread_mutex_lock(&h->conns_mu);
    for (struct hconn *k = h->conns; k; k = k->next) {
        unsigned gen = atomic_load(&k->gen);
        uint64_t got;
        bool late;

        if (k->cut || atomic_load(&k->busy)) {
            k->first_ms = 0;
            continue;
        }
        if (gen != k->seen_gen) {
            /* a request ended since: its bytes so far are the next one's
             * mark, and its clock starts at a byte past them */
            k->seen_gen = gen;
            k->first_ms = 0;
            if (bytes_received(k->fd, &got))
                k->mark = got;
            continue;
        }
        if (bytes_received(k->fd, &got)) {
            if (got <= k->mark)
                continue; /* idle: the idle timeout's */
            if (!k->first_ms)
                k->first_ms = now;
            late = now - k->first_ms >= deadline_ms;
        } else {
            late = now - atomic_load(&k->wait_ms) >= fallback_ms;
        }
        if (!late)
            continue;
        /* libmicrohttpd reads the end of the stream and closes the
         * connection itself; the fd stays valid until then (listed). */
        shutdown(k->fd, SHUT_RDWR);
        k->cut = true;
        if (!n_cut++)
            addr_text(&k->addr, who, sizeof(who));
    }
    pthread_mutex_unlock(&h->conns_mu);
    if (n_cut) {
        char what[INET6_ADDRSTRLEN + 160];

        tds_series_inc(h->hdr_cut, (double)n_cut);
        snprintf(what, sizeof(what),
                 "closed %zu connection%s (from %s%s): request headers not complete %u s after "
                 "their first byte (TDS_INGRESS_HEADER_DEADLINE_S)",
                 n_cut, n_cut > 1 ? "s" : "", who, n_cut > 1 ? " and others" : "",
                 h->o.header_deadline_s);
        log_limited(h, &h->log_hdr, TDS_LOG_INFO, NULL, "%s", what);
    }
}

/* ---- waiters: requests whose journal record is not yet durable ---- */

static void waiter_remove_locked(struct tds_http *h, struct req *r)
{
    if (!r->in_waiters)
        return;
    if (r->wprev)
        r->wprev->wnext = r->wnext;
    else
        h->waiters = r->wnext;
    if (r->wnext)
        r->wnext->wprev = r->wprev;
    r->wprev = r->wnext = NULL;
    r->in_waiters = false;
}

void tds_http_synced(struct tds_http *h, uint64_t synced, bool failed)
{
    pthread_mutex_lock(&h->wait_mu);
    for (struct req *r = h->waiters, *next; r; r = next) {
        next = r->wnext;
        if (r->seq <= synced || failed) {
            waiter_remove_locked(h, r);
            MHD_resume_connection(r->conn);
        }
    }
    pthread_mutex_unlock(&h->wait_mu);
}

static enum MHD_Result answer(struct tds_http *h, struct req *r, int st)
{
    if (st == 1) {
        if (r->duplicate)
            tds_series_inc(h->dups, 1);
        return respond(h, r, 200);
    }
    return respond(h, r, 503);
}

/* Answer now if seq is settled, else park the request until the sync. */
static enum MHD_Result finish_or_wait(struct tds_http *h, struct req *r)
{
    int st;

    body_release(h, r); /* journaled (or a duplicate): the body is done with */
    st = tds_journal_state(h->d.journal, r->seq);

    if (h->o.thread_per_connection) {
        /* This daemon cannot suspend a connection: its thread blocks, and a
         * sync that outlasts the wait is still not durable, so 503 (Zoho
         * sends the webhook again; its duplicate gets 200 once synced). */
        if (st == 0) {
            tds_journal_wait(h->d.journal, r->seq, h->o.sync_wait_ms);
            st = tds_journal_state(h->d.journal, r->seq);
        }
        return answer(h, r, st);
    }
    if (st == 0) {
        pthread_mutex_lock(&h->wait_mu);
        /* Checked again under the lock: the sync thread resumes under it too,
         * so it cannot miss a request that is being suspended. stopping is
         * set under it as well: once tds_http_free has resumed the waiters,
         * no request suspends (MHD_stop_daemon panics on one). */
        st = tds_journal_state(h->d.journal, r->seq);
        if (st == 0 && !h->stopping) {
            r->state = REQ_WAITING;
            r->in_waiters = true;
            r->wprev = NULL;
            r->wnext = h->waiters;
            if (h->waiters)
                h->waiters->wprev = r;
            h->waiters = r;
            MHD_suspend_connection(r->conn);
            pthread_mutex_unlock(&h->wait_mu);
            return MHD_YES;
        }
        pthread_mutex_unlock(&h->wait_mu);
    }
    return answer(h, r, st);
}

/* ---- intake ---- */

struct qp {
    struct tds_verify_kv kv[TDS_VERIFY_MAX_PARAMS];
    size_t n;
    bool overflow;
    const char *entity, *event;
};

/* libmicrohttpd decodes the path and the query parameters in place, and a
 * %00 would end the C string there: /webhooks/zoho/60001%00x would read as
 * organization 60001, entity=item%00x as item. A part with a %00 is left as
 * sent instead: no organization or entity has such a name (404, 400), and
 * a signature made over the decoded text does not match (401). */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    for (const char *p = s; (p = strchr(p, '%')) != NULL; p++)
        if (p[1] == '0' && p[2] == '0')
            return strlen(s);
    return MHD_http_unescape(s);
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct qp *q = cls;

    (void)kind;
    if (q->n == TDS_VERIFY_MAX_PARAMS) {
        q->overflow = true;
        return MHD_NO;
    }
    if (!value)
        value = "";
    q->kv[q->n++] = (struct tds_verify_kv){key, strlen(key), value, strlen(value)};
    if (strcmp(key, "entity") == 0)
        q->entity = value;
    else if (strcmp(key, "event") == 0)
        q->event = value;
    return MHD_YES;
}

/* A webhook's key, for dedupe and in its message id: "<org>:<event id>".
 * Event ids are unique within an organization only (Zoho's may be small
 * numbers), so one organization's event never passes for another's
 * duplicate, and an ack never releases another organization's entry. */
#define KEY_MAX (TDS_ORG_ID_MAX + 1 + TDS_WEBHOOK_MAX_ID + sizeof(":DELETE"))

/* Encode the message and the journal entry it travels in. */
static int build_entry(struct tds_http *h, const struct req *r, const struct tds_webhook *w,
                       bool authenticated, const char *key, int64_t now_ms, char **out,
                       size_t *out_len)
{
    struct tds_msg m = {0};
    struct tds_entry e = {0};
    char msgid[3 + KEY_MAX];
    char *buf = NULL;
    size_t len = 0;
    int rc;
    /* A webhook without the record is a notice to fetch it by id; so is any
     * webhook taken without a signature or token (an organization that takes
     * them unsigned): anyone may post there, and a forged record (a modified
     * time in 2099, a delete) would otherwise be written as Zoho's. So is
     * one sent with DELETE that names no delete: the method may mean the
     * record is gone, or nothing, and Zoho's answer to the fetch says which
     * (a 1002 marks it deleted). Not of an entity Zoho lists complete
     * (warehouses), which has no call by id: the next full walk would be its
     * answer, so its record is taken as POST's would be. */
    bool fetch = (!w->has_record && !w->is_delete) || !authenticated ||
                 (r->by_delete && !w->is_delete && w->entity->detail_path);

    snprintf(msgid, sizeof(msgid), "%s%s", fetch ? "fe-" : "ev-", key);
    m.v = TDS_MSG_VERSION;
    m.id = msgid;
    if (fetch) {
        m.type = TDS_MSG_FETCH;
        m.u.fetch.org = r->org->org_id;
        m.u.fetch.entity = (char *)w->entity->name;
        m.u.fetch.zoho_id = (char *)w->zoho_id;
        m.u.fetch.origin = (char *)h->d.origin;
    } else {
        m.type = TDS_MSG_EVENT;
        m.u.event.org = r->org->org_id;
        m.u.event.entity = (char *)w->entity->name;
        m.u.event.op = w->is_delete ? "delete" : "upsert";
        m.u.event.origin = (char *)h->d.origin;
        m.u.event.event_id = (char *)w->event_id;
        m.u.event.zoho_id = (char *)w->zoho_id;
        m.u.event.received_ms = now_ms;
        m.u.event.body.p = (char *)w->json;
        m.u.event.body.n = w->json_len;
        m.u.event.tz = r->org->timezone_offset; /* date-only times are midnight there */
    }
    rc = tds_msg_encode(&m, &buf, &len);
    if (rc)
        return rc;
    e.dest = fetch ? TDS_ENTRY_FETCHER : TDS_ENTRY_PROCESSOR;
    e.org = r->org->org_id;
    e.org_len = strlen(r->org->org_id);
    e.entity = w->entity->name;
    e.entity_len = strlen(w->entity->name);
    e.msgid = msgid;
    e.msgid_len = strlen(msgid);
    e.msg = buf;
    e.msg_len = len;
    rc = tds_entry_encode(&e, out, out_len);
    free(buf);
    return rc;
}

/* A form body's fields, decoded, after the query parameters: what Zoho's
 * form scheme signs (sorted, no body after them), and where a form's
 * "entity" and "event" are read when the query has none. */
struct form {
    struct tds_verify_kv kv[TDS_VERIFY_MAX_PARAMS];
    size_t n;       /* query parameters and fields */
    bool ok;        /* decoded, within TDS_VERIFY_MAX_PARAMS */
    char *scratch;  /* the decoded bytes */
    char *entity, *event; /* copies of the fields, or NULL */
};

static char *field_copy(const struct tds_verify_kv *f)
{
    char *c = malloc(f->vlen + 1);

    if (c) {
        memcpy(c, f->v, f->vlen);
        c[f->vlen] = '\0';
    }
    return c;
}

static int form_read(struct form *f, const struct req *r, const struct qp *q)
{
    size_t first = q->n;

    memset(f, 0, sizeof(*f));
    f->scratch = malloc(r->body.len + 1);
    if (!f->scratch)
        return -ENOMEM;
    memcpy(f->kv, q->kv, q->n * sizeof(*f->kv));
    f->n = q->n;
    f->ok = !q->overflow && tds_webhook_form_fields(r->body.p ? r->body.p : "", r->body.len,
                                                    f->scratch, f->kv, TDS_VERIFY_MAX_PARAMS,
                                                    &f->n) == 0;
    for (size_t i = first; f->ok && i < f->n; i++) {
        const struct tds_verify_kv *k = &f->kv[i];
        char **to = k->klen == 6 && memcmp(k->k, "entity", 6) == 0  ? &f->entity
                    : k->klen == 5 && memcmp(k->k, "event", 5) == 0 ? &f->event
                                                                     : NULL;

        if (to && !*to && !(*to = field_copy(k)))
            return -ENOMEM;
    }
    return 0;
}

static void form_free(struct form *f)
{
    free(f->scratch);
    free(f->entity);
    free(f->event);
}

/* A form-encoded body may be signed the way Zoho documents for forms: its
 * fields, decoded, sorted in with the query parameters and no body after
 * them. Tried only after the raw-body signature did not match. */
static int verify_form(const struct tds_http *h, const struct req *r, const struct form *f,
                       const char *sig, int64_t now)
{
    if (!f->ok)
        return TDS_VERIFY_E_MISMATCH;
    return tds_verify_check((const char *const *)r->org->webhook_secrets,
                            r->org->n_webhook_secrets, sig, f->kv, f->n, "", 0, now,
                            h->o.sig_max_age_ms);
}

static enum MHD_Result process_webhook(struct tds_http *h, struct req *r, const struct qp *q,
                                       const struct form *form, enum tds_webhook_kind kind)
{
    struct tds_webhook w;
    char key[KEY_MAX];
    const char *sig, *tok;
    const char *entity = q->entity ? q->entity : form->entity;
    const char *event = q->event ? q->event : form->event;
    bool presented, authenticated = false;
    const struct tds_verify_kv *signed_kv = NULL; /* what the matched signature covers */
    size_t n_signed = 0;
    int64_t now = tds_wall_ms();
    char *entry = NULL;
    size_t entry_len = 0;
    struct tds_forward_slot *slot = NULL;
    struct tds_journal_loc loc;
    uint64_t seq;
    int rc;

    sig = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Zoho-Webhook-Signature");
    if (!sig) /* Zoho's Payments pages spell it so too */
        sig = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-ZohoWebhook-Signature");
    tok = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Webhook-Token");
    presented = (sig && *sig) || (tok && *tok);
    if ((r->org->n_webhook_secrets > 0 || r->org->n_webhook_tokens > 0) &&
        (presented || !r->org->webhooks_unsigned)) {
        /* A signature is checked when the organization has secrets and the
         * request is signed (or carries no token either); otherwise its token.
         * A request with neither, where the organization also takes unsigned
         * webhooks, is such a webhook: a notice (below). */
        if (r->org->n_webhook_secrets > 0 &&
            ((sig && *sig) || !(tok && *tok) || r->org->n_webhook_tokens == 0)) {
            rc = q->overflow ? TDS_VERIFY_E_PARAMS
                            : tds_verify_check((const char *const *)r->org->webhook_secrets,
                                               r->org->n_webhook_secrets, sig, q->kv, q->n,
                                               r->body.p, r->body.len, now, h->o.sig_max_age_ms);
            signed_kv = q->kv;
            n_signed = q->n;
            if (rc == TDS_VERIFY_E_MISMATCH && kind == TDS_WEBHOOK_FORM) {
                rc = verify_form(h, r, form, sig, now);
                signed_kv = form->kv;
                n_signed = form->n;
            }
        } else {
            rc = tds_verify_token((const char *const *)r->org->webhook_tokens,
                                  r->org->n_webhook_tokens, tok);
            signed_kv = NULL; /* a token covers no bytes */
        }
        if (rc < 0)
            return respond(h, r, 500);
        if (rc) {
            tds_series_inc(h->sig_fail[rc], 1);
            log_limited(h, &h->log_sig, TDS_LOG_WARN, r->org->org_id,
                        "webhook signature rejected: %s", tds_verify_reason(rc));
            return respond(h, r, 401);
        }
        authenticated = true;
    } else if (!r->org->webhooks_unsigned) {
        tds_series_inc(h->sig_unsigned, 1);
        log_limited(h, &h->log_sig, TDS_LOG_WARN, r->org->org_id,
                    "webhook rejected: %s", "organization has no webhook secret or token");
        return respond(h, r, 401);
    }

    /* Without a body, the URL's query parameters are the payload (a webhook
     * whose author put the record's id in its URL and sent no body). */
    rc = r->body.len == 0
             ? tds_webhook_parse_fields(&w, q->kv, q->overflow ? TDS_VERIFY_MAX_PARAMS + 1 : q->n,
                                        entity, event)
             : tds_webhook_parse(&w, kind, r->body.p, r->body.len, entity, event);
    if (rc) {
        tds_webhook_clear(&w);
        if (rc < 0)
            return respond(h, r, 500);
        log_limited(h, &h->log_bad, TDS_LOG_INFO, r->org->org_id, "webhook rejected: %s",
                    tds_webhook_strerror(rc));
        return respond(h, r, rc == TDS_WEBHOOK_E_TOO_LARGE ? 413 : 400);
    }
    /* An entity the organization does not sync: stored, its rows would
     * never be brought up to date or reconciled (an id-only one cost a call
     * to an endpoint that may not exist, as item groups in Zoho Books). */
    if (!tds_org_syncs(r->org, w.entity)) {
        bool books = tds_org_books(r->org);
        char why[200];
        if (!tds_org_product_has(r->org, w.entity))
            snprintf(why, sizeof(why), "%s do not exist in Zoho %s; remove that webhook in Zoho",
                     w.entity->name, books ? "Books" : "Inventory");
        else
            snprintf(why, sizeof(why),
                     "the organization does not sync %s (its 'entities' in TDS_CONFIG leave "
                     "them out); remove that webhook in Zoho or add them",
                     w.entity->name);
        log_limited(h, &h->log_bad, TDS_LOG_WARN, r->org->org_id, "webhook rejected: %s", why);
        tds_webhook_clear(&w);
        return respond(h, r, 400);
    }
    /* The signed bytes of an update that also sign a delete: a captured
     * delete split anew (tds_webhook_hides_delete). Refused like the
     * timestamp moved into the query, after the digest matched. */
    if (signed_kv && !w.is_delete && tds_webhook_hides_delete(signed_kv, n_signed, w.entity)) {
        tds_webhook_clear(&w);
        tds_series_inc(h->sig_fail[TDS_VERIFY_E_AMBIGUOUS], 1);
        log_limited(h, &h->log_sig, TDS_LOG_WARN, r->org->org_id,
                    "webhook signature rejected: %s (its parameters also sign a delete)",
                    tds_verify_reason(TDS_VERIFY_E_AMBIGUOUS));
        return respond(h, r, 401);
    }

    /* A DELETE of the body an update was sent with is another webhook */
    if ((size_t)snprintf(key, sizeof(key), "%s:%s%s", r->org->org_id, w.event_id,
                         r->by_delete ? ":DELETE" : "") >= sizeof(key)) {
        tds_webhook_clear(&w);
        return respond(h, r, 500); /* org ids are checked at start-up: cannot happen */
    }
    rc = build_entry(h, r, &w, authenticated, key, now, &entry, &entry_len);
    if (rc) {
        tds_webhook_clear(&w);
        return respond(h, r, rc == TDS_MSG_E_TOO_LARGE || rc == TDS_E_TOO_LARGE ? 413 : 500);
    }
    /* Before the append: once journaled, the entry must reach forward. */
    if (tds_forward_slot_new(&slot)) {
        free(entry);
        tds_webhook_clear(&w);
        return respond(h, r, 500);
    }

    pthread_mutex_lock(&h->intake_mu);
    if (tds_dedupe_seen(h->d.dedupe, key, strlen(key), now, &seq)) {
        pthread_mutex_unlock(&h->intake_mu);
        tds_forward_slot_free(slot);
        free(entry);
        tds_webhook_clear(&w);
        r->duplicate = true;
        r->seq = seq;
        return finish_or_wait(h, r);
    }
    rc = tds_journal_append(h->d.journal, entry, entry_len, now, &seq, &loc);
    if (rc == 0) {
        tds_dedupe_insert(h->d.dedupe, key, strlen(key), now, seq);
        /* Forward takes the bytes now, sends them once their commit begins. */
        tds_forward_submit(h->d.forward, &slot, seq, &loc, &entry, entry_len);
    }
    pthread_mutex_unlock(&h->intake_mu);
    tds_forward_slot_free(slot);
    free(entry);
    tds_webhook_clear(&w);
    if (rc == TDS_JOURNAL_E_FULL || rc == TDS_JOURNAL_E_FAILED) {
        log_limited(h, &h->log_full, TDS_LOG_ERROR, r->org->org_id,
                    "could not journal webhook: %s, answering 503",
                    rc == TDS_JOURNAL_E_FAILED        ? "journal has failed"
                    : tds_journal_no_space(h->d.journal) ? "no space left on the journal's disk"
                                                         : "journal is full");
        return respond(h, r, 503);
    }
    if (rc == TDS_JOURNAL_E_BACKLOG) {
        /* Each entry waiting for its ack holds memory (forward.c's node):
         * refused like a full disk, never taken without being kept. */
        char n[32];

        snprintf(n, sizeof(n), "%llu", (unsigned long long)tds_journal_unacked(h->d.journal));
        log_limited(h, &h->log_full, TDS_LOG_ERROR, r->org->org_id,
                    "could not journal webhook: %s webhooks wait for the writer's ack "
                    "(TDS_INGRESS_MAX_UNACKED), answering 503",
                    n);
        return respond(h, r, 503);
    }
    if (rc == TDS_JOURNAL_E_BUSY) {
        /* The disk's syncs are slow: what waits for them is held in memory
         * (the journal's chunk, forward's slot), so it is bounded. */
        char n[32];

        snprintf(n, sizeof(n), "%llu",
                 (unsigned long long)tds_journal_pending_bytes(h->d.journal));
        log_limited(h, &h->log_full, TDS_LOG_ERROR, r->org->org_id,
                    "could not journal webhook: %s bytes of webhooks wait for the journal's "
                    "sync (a slow disk; at most half of TDS_INGRESS_BODY_MEMORY), answering 503",
                    n);
        return respond(h, r, 503);
    }
    if (rc == TDS_E_TOO_LARGE)
        return respond(h, r, 413); /* over the journal's record limit: cannot happen */
    if (rc) {
        /* Anything else the journal could not do: a new segment it could not
         * create (too many open files, EIO, EACCES), no memory for the
         * record. Not stored, so never a 200; 503, as Zoho sends it again,
         * and the cause in the log, not only in the status count. */
        char why[128];

        tds_series_inc(h->journal_errors, 1);
        snprintf(why, sizeof(why), "%s", rc < 0 ? strerror(-rc) : "unexpected journal error");
        log_limited(h, &h->log_jerr, TDS_LOG_ERROR, r->org->org_id,
                    "could not journal webhook: %s, answering 503", why);
        return respond(h, r, 503);
    }
    r->seq = seq;
    return finish_or_wait(h, r);
}

static enum MHD_Result process_body(struct tds_http *h, struct req *r)
{
    struct qp q = {0};
    struct form form = {0};
    enum tds_webhook_kind kind;
    enum MHD_Result ret;

    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, collect_arg, &q);
    kind = tds_webhook_body_kind(
        tds_webhook_kind(
            MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE)),
        r->body.p, r->body.len);
    if (kind == TDS_WEBHOOK_FORM && form_read(&form, r, &q) < 0)
        ret = respond(h, r, 500);
    else
        ret = process_webhook(h, r, &q, &form, kind);
    form_free(&form);
    return ret;
}

/* The whole body is in: verify, parse, journal; its memory goes back to the
 * budget whatever the answer. */
static enum MHD_Result process(struct tds_http *h, struct req *r)
{
    enum MHD_Result ret = process_body(h, r);

    body_release(h, r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct tds_http *h = cls;
    struct req *r = *con_cls;

    (void)version;
    if (!r) {
        const char *org_id, *cl, *ct;
        const struct tds_org *org;
        int64_t clen;

        conn_headers_done(c);
        if (strncmp(url, PATH_PREFIX, strlen(PATH_PREFIX)) != 0)
            return refuse(h, c, 404, NULL, "no such path", url);
        org_id = url + strlen(PATH_PREFIX);
        if (!*org_id || strchr(org_id, '/'))
            return refuse(h, c, 404, NULL, "no such path", url);
        /* Zoho's webhook form offers POST (its default), PUT and DELETE
         * (ZOHO.md §6.1): POST and PUT are the same delivery, DELETE a
         * notice to fetch the record (build_entry). */
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0 && strcmp(method, MHD_HTTP_METHOD_PUT) != 0 &&
            strcmp(method, MHD_HTTP_METHOD_DELETE) != 0)
            return refuse(h, c, 405, NULL, "method", method);
        org = tds_orgs_find(h->d.orgs, org_id);
        if (!org)
            return refuse(h, c, 404, NULL, "unknown organization", org_id);
        cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && tds_parse_i64(cl, 0, INT64_MAX, &clen) == 0 && (uint64_t)clen > h->o.max_body)
            return refuse(h, c, 413, org, "Content-Length over TDS_INGRESS_MAX_BODY:", cl);
        ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        /* A request without a body (its data in the URL) has no content to
         * have a type: Content-Length 0, or neither a Content-Length nor a
         * Transfer-Encoding (RFC 9112 §6.3: no body). Not one with a
         * Transfer-Encoding: libmicrohttpd reads its body chunked, whatever
         * the length says, and a body without a type would have been taken
         * as JSON. */
        if (tds_webhook_kind(ct) == TDS_WEBHOOK_UNSUPPORTED &&
            !((!cl || (tds_parse_i64(cl, 0, INT64_MAX, &clen) == 0 && clen == 0)) &&
              !MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING)))
            return refuse(h, c, 415, org, "content type", ct ? ct : "(none)");
        /* No (usable) Content-Length: chunked, as much as the cap allows.
         * Nor with a Transfer-Encoding beside it: libmicrohttpd then reads
         * the body chunked and ignores the Content-Length, which would cap
         * the body at a length it does not keep to. */
        if (!cl || tds_parse_i64(cl, 0, INT64_MAX, &clen) != 0 ||
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
            clen = -1;
        /* Nothing is booked yet (the body is, as it arrives), but a body
         * announced larger than what is free now would only be refused
         * midway: 503 before a byte of it is read. */
        if (clen > 0 && (size_t)clen > h->o.body_memory - atomic_load(&h->body_bytes))
            return refuse(h, c, 503, org,
                          "request bodies in memory at TDS_INGRESS_BODY_MEMORY; body of", cl);
        r = calloc(1, sizeof(*r));
        if (!r)
            return respond_conn(h, c, 500);
        clock_gettime(CLOCK_MONOTONIC, &r->t0);
        r->conn = c;
        r->org = org;
        r->by_delete = strcmp(method, MHD_HTTP_METHOD_DELETE) == 0;
        /* never past its Content-Length (0: 1 byte, since a max of 0 means
         * no cap; one byte over is cut) */
        r->body.max = clen > 0 ? (size_t)clen : clen == 0 ? 1 : h->o.max_body;
        *con_cls = r;
        atomic_fetch_add(&h->inflight, 1);
        return MHD_YES;
    }
    if (r->state == REQ_BODY && *upload_data_size) {
        size_t n = *upload_data_size;
        struct timespec now;
        char num[32];
        int rc;

        *upload_data_size = 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (h->o.body_deadline_s > 0 && now.tv_sec - r->t0.tv_sec > (time_t)h->o.body_deadline_s) {
            /* Bytes trickling in under the idle timeout: the connection and
             * the memory its body holds would be held for ever. Cut like a
             * body over the cap (no response can be queued mid-body). */
            snprintf(num, sizeof(num), "%u", h->o.body_deadline_s);
            log_limited(h, &h->log_bad, TDS_LOG_INFO, r->org->org_id,
                        "webhook rejected: body not complete %s s after its headers "
                        "(TDS_INGRESS_BODY_DEADLINE_S), closing the connection",
                        num);
            /* the log, the count, then the memory: whoever sees one of the
             * latter finds what comes before it done */
            tds_series_inc(h->cut, 1);
            body_release(h, r);
            return MHD_NO;
        }
        /* Chunked bodies have no Content-Length: the cap is enforced here,
         * as soon as a chunk passes it, not after reading the rest. The
         * 413 cannot be sent: libmicrohttpd (0.9.75) queues a response only
         * before the body or after all of it, so the connection is closed
         * at once instead, logged and counted. */
        rc = n > r->body.max - r->received ? TDS_E_TOO_LARGE
             : r->over_budget              ? 0
                                           : body_grow(h, r, n);
        if (rc == BODY_OVER_BUDGET) {
            /* The budget is taken by bodies that did arrive. This one is
             * read to its end without being kept (still within the cap and
             * the body deadline) and answered 503 then: a response cannot
             * be queued in the middle of a body. */
            body_release(h, r);
            r->over_budget = true;
            snprintf(num, sizeof(num), "%zu", r->received + n);
            pthread_mutex_lock(&h->log_mu);
            tds_log_limited(&h->log_refused[code_index(503)], TDS_LOG_INFO,
                            &(struct tds_log_ctx){.org = r->org->org_id},
                            "webhook refused (503): request bodies in memory at "
                            "TDS_INGRESS_BODY_MEMORY; body of %s bytes so far could not grow, "
                            "read to its end without keeping it",
                            num);
            pthread_mutex_unlock(&h->log_mu);
            rc = 0;
        } else if (rc == 0 && !r->over_budget) {
            rc = tds_buf_add(&r->body, upload_data, n);
        }
        if (rc == 0) {
            r->received += n;
            return MHD_YES;
        }
        snprintf(num, sizeof(num), "%zu", h->o.max_body);
        log_limited(h, &h->log_bad, TDS_LOG_INFO, r->org->org_id,
                    rc == TDS_E_TOO_LARGE
                        ? "webhook rejected: chunked body over TDS_INGRESS_MAX_BODY (%s bytes), "
                          "closing the connection"
                        : "webhook rejected: out of memory for its body (%s bytes at most), "
                          "closing the connection",
                    num);
        tds_series_inc(h->cut, 1);
        body_release(h, r);
        return MHD_NO;
    }
    if (r->state == REQ_BODY && r->over_budget)
        return respond_with(h, r, 503, h->resp_503_close);
    if (r->state == REQ_BODY)
        return process(h, r);
    if (r->state == REQ_WAITING)
        return finish_or_wait(h, r);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct tds_http *h = cls;
    struct req *r = *con_cls;

    (void)toe;
    conn_request_ended(c);
    if (!r)
        return;
    pthread_mutex_lock(&h->wait_mu);
    waiter_remove_locked(h, r);
    pthread_mutex_unlock(&h->wait_mu);
    body_release(h, r);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&h->inflight, 1);
}

static int resolve(const char *listen, struct sockaddr_storage *ss, uint16_t *port)
{
    char host[256];
    struct addrinfo hints = {0}, *ai = NULL;
    int r;

    if (tds_parse_hostport(listen, host, sizeof(host), port))
        return TDS_E_INVALID;
    memset(ss, 0, sizeof(*ss));
    if (!host[0] || strcmp(host, "*") == 0) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;

        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons(*port);
        return 0;
    }
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    r = getaddrinfo(host, NULL, &hints, &ai);
    if (r || !ai)
        return TDS_E_INVALID;
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(*port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(*port);
    freeaddrinfo(ai);
    return 0;
}

int tds_http_new(struct tds_http **out, const struct tds_http_opts *o, const struct tds_http_deps *d)
{
    static const char *const reasons[] = {NULL,     "missing",   "malformed", "mismatch",
                                          "stale",  "params",    "ambiguous", "token"};
    static const double accept_buckets[] = {.0005, .001, .002, .003, .005, .0075, .01,
                                            .015,  .025, .05,  .1,   .25,  1,     2.5};
    struct tds_http *h;
    int r;

    h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->o = *o;
    h->d = *d;
    pthread_mutex_init(&h->intake_mu, NULL);
    pthread_mutex_init(&h->wait_mu, NULL);
    pthread_mutex_init(&h->log_mu, NULL);
    pthread_mutex_init(&h->conns_mu, NULL);
    h->log_hdr.interval_ms = 10000;
    h->log_jerr.interval_ms = 10000;
    h->log_sig.interval_ms = 10000;
    h->log_bad.interval_ms = 10000;
    h->log_full.interval_ms = 10000;
    h->log_mhd.interval_ms = 10000;
    for (size_t i = 0; i < TDS_ARRAY_SIZE(h->log_refused); i++)
        h->log_refused[i].interval_ms = 10000;
    r = resolve(o->listen, &h->addr, &h->port);
    if (r)
        goto fail;
    for (size_t i = 0; i < TDS_ARRAY_SIZE(codes); i++) {
        const char *b = body_for(codes[i]);

        h->resp[i] = MHD_create_response_from_buffer(strlen(b), (void *)b, MHD_RESPMEM_PERSISTENT);
        if (!h->resp[i] ||
            MHD_add_response_header(h->resp[i], MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") ==
                MHD_NO) {
            r = -ENOMEM;
            goto fail;
        }
        if (codes[i] == 503)
            MHD_add_response_header(h->resp[i], MHD_HTTP_HEADER_RETRY_AFTER, "1");
        if (codes[i] == 503) {
            h->resp_503_close =
                MHD_create_response_from_buffer(strlen(b), (void *)b, MHD_RESPMEM_PERSISTENT);
            if (!h->resp_503_close ||
                MHD_add_response_header(h->resp_503_close, MHD_HTTP_HEADER_CONTENT_TYPE,
                                        "application/json") == MHD_NO ||
                MHD_add_response_header(h->resp_503_close, MHD_HTTP_HEADER_RETRY_AFTER, "1") ==
                    MHD_NO ||
                MHD_add_response_header(h->resp_503_close, MHD_HTTP_HEADER_CONNECTION, "close") ==
                    MHD_NO) {
                r = -ENOMEM;
                goto fail;
            }
        }
        h->status[i].code = codes[i];
        h->status[i].s = tds_metrics_getf(d->metrics, TDS_COUNTER, "tds_ingress_requests_total",
                                          "webhook requests answered, by HTTP status",
                                          "status=\"%u\"", codes[i]);
        if (!h->status[i].s) {
            r = -ENOMEM;
            goto fail;
        }
    }
    for (size_t i = 1; i < TDS_ARRAY_SIZE(reasons); i++) {
        h->sig_fail[i] = tds_metrics_getf(d->metrics, TDS_COUNTER,
                                          "tds_ingress_signature_failures_total",
                                          "webhooks rejected by the signature check, by reason",
                                          "reason=\"%s\"", reasons[i]);
        if (!h->sig_fail[i]) {
            r = -ENOMEM;
            goto fail;
        }
    }
    h->sig_unsigned = tds_metrics_get(d->metrics, TDS_COUNTER,
                                      "tds_ingress_signature_failures_total",
                                      "webhooks rejected by the signature check, by reason",
                                      "reason=\"no_secret\"", NULL, 0);
    h->dups = tds_metrics_get(d->metrics, TDS_COUNTER, "tds_ingress_duplicates_total",
                              "webhooks answered 200 as duplicates within the dedupe window", "",
                              NULL, 0);
    h->accept_s = tds_metrics_get(d->metrics, TDS_HISTOGRAM, "tds_ingress_accept_seconds",
                                  "time from a webhook's request headers to its 200 (body read, "
                                  "verified, journaled and synced)",
                                  "", accept_buckets, TDS_ARRAY_SIZE(accept_buckets));
    h->body_gauge = tds_metrics_get(d->metrics, TDS_GAUGE, "tds_ingress_body_bytes",
                                    "bytes of TDS_INGRESS_BODY_MEMORY held by request bodies "
                                    "being read or checked",
                                    "", NULL, 0);
    h->cut = tds_metrics_get(d->metrics, TDS_COUNTER, "tds_ingress_bodies_cut_total",
                             "webhook bodies cut and their connection closed: chunked over "
                             "TDS_INGRESS_MAX_BODY, out of memory, or not complete within "
                             "TDS_INGRESS_BODY_DEADLINE_S",
                             "", NULL, 0);
    h->hdr_cut = tds_metrics_get(d->metrics, TDS_COUNTER, "tds_ingress_headers_cut_total",
                                 "connections closed because a request's headers were not "
                                 "complete TDS_INGRESS_HEADER_DEADLINE_S after its first byte",
                                 "", NULL, 0);
    h->journal_errors = tds_metrics_get(d->metrics, TDS_COUNTER, "tds_ingress_journal_errors_total",
                                        "webhooks answered 503 because the journal could not take "
                                        "them for another reason than a full disk or the unacked "
                                        "bound (a segment it could not create, no memory)",
                                        "", NULL, 0);
    if (!h->sig_unsigned || !h->dups || !h->accept_s || !h->body_gauge || !h->cut ||
        !h->hdr_cut || !h->journal_errors) {
        r = -ENOMEM;
        goto fail;
    }
    *out = h;
    return 0;
fail:
    tds_http_free(h);
    return r;
}

int tds_http_start(struct tds_http *h)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    const union MHD_DaemonInfo *info;

    if (h->o.thread_per_connection)
        flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL | MHD_USE_ITC;
    else
        flags |= (h->o.use_poll ? MHD_USE_POLL : MHD_USE_EPOLL) | MHD_ALLOW_SUSPEND_RESUME;
    if (h->addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* A thread per connection has no pool: the option is left out, not 0
     * (which libmicrohttpd warns about). */
    struct MHD_OptionItem pool[] = {
        {h->o.thread_per_connection ? MHD_OPTION_END : MHD_OPTION_THREAD_POOL_SIZE,
         (intptr_t)h->o.threads, NULL},
        {MHD_OPTION_END, 0, NULL}};

    errno = 0;
    h->daemon = MHD_start_daemon(
        flags, h->port, NULL, NULL, on_request, h,
        /* first, so that the other options' warnings come through it too */
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&h->addr,
        MHD_OPTION_ARRAY, pool,
        MHD_OPTION_CONNECTION_LIMIT, h->o.conn_limit,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, h->o.per_ip_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, h->o.timeout_s,
        /* Headers live in the per-connection pool: 16 KiB bounds them (MHD
         * clears the pool between requests, so smaller is also cheaper). */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16 * 1024,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
        MHD_OPTION_END);
    if (!h->daemon)
        return errno ? -errno : -EADDRINUSE;
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info && info->port)
        h->port = info->port;
    return 0;
}

uint16_t tds_http_port(const struct tds_http *h) { return h->port; }

const char *tds_http_model(const struct tds_http *h)
{
    const union MHD_DaemonInfo *info =
        h->daemon ? MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_FLAGS) : NULL;
    if (!info)
        return "not started";
    if (info->flags & MHD_USE_THREAD_PER_CONNECTION)
        return "a thread per connection";
    if (info->flags & MHD_USE_EPOLL)
        return "epoll";
    return (info->flags & MHD_USE_POLL) ? "poll" : "select";
}

void tds_http_quiesce(struct tds_http *h)
{
    MHD_socket fd;

    if (!h->daemon || h->quiesced)
        return;
    h->quiesced = true;
    /* libmicrohttpd stops accepting and hands the listening socket back.
     * Left open, the kernel would still complete connections into its
     * backlog, and their clients would send a webhook only to be reset when
     * the process exits. Closed, a new connection is refused at once, and
     * the client (a load balancer, Zoho's retry) goes elsewhere or later.
     * shutdown() first: a worker thread may still be inside poll() with the
     * socket in its set, and that holds the socket open past close() until
     * the thread wakes; shutdown stops the listening at once regardless. */
    fd = MHD_quiesce_daemon(h->daemon);
    if (fd != MHD_INVALID_SOCKET) {
        shutdown(fd, SHUT_RDWR);
        close(fd);
    }
    else
        tds_warn("could not stop listening for webhooks before the drain; new connections "
                 "wait in the backlog until exit");
}

size_t tds_http_inflight(struct tds_http *h) { return atomic_load(&h->inflight); }

struct tds_http *tds_http_free(struct tds_http *h)
{
    if (!h)
        return NULL;
    if (h->daemon) {
        /* Suspended connections must be resumed before MHD can stop; they
         * get their final answer from the journal's state. A request between
         * its journal check and its suspension holds wait_mu, so it either
         * suspends before this resumes everyone or sees stopping. */
        pthread_mutex_lock(&h->wait_mu);
        h->stopping = true;
        pthread_mutex_unlock(&h->wait_mu);
        tds_http_synced(h, UINT64_MAX, true);
        MHD_stop_daemon(h->daemon);
    }
    for (size_t i = 0; i < TDS_ARRAY_SIZE(h->resp); i++)
        if (h->resp[i])
            MHD_destroy_response(h->resp[i]);
    if (h->resp_503_close)
        MHD_destroy_response(h->resp_503_close);
    /* The daemon stopped: every connection was closed and unlisted. */
    while (h->conns) {
        struct hconn *k = h->conns;

        h->conns = k->next;
        free(k);
    }
    pthread_mutex_destroy(&h->conns_mu);
    pthread_mutex_destroy(&h->intake_mu);
    pthread_mutex_destroy(&h->wait_mu);
    pthread_mutex_destroy(&h->log_mu);
    free(h);
    return NULL;
}
