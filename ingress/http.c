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
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
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
    size_t reserved;         /* its share of body_memory, until the body is freed */
    bool duplicate;
    uint64_t seq;            /* journal seq this request waits for */
    struct timespec t0;      /* headers received */
    struct req *wprev, *wnext;
    bool in_waiters;
};

struct status_metric {
    unsigned code;
    struct tds_series *s;
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
    atomic_size_t body_bytes;    /* shares of body_memory held by requests */
    bool stopping;               /* no more suspending: answer what is left */
    bool quiesced;               /* the listening socket is closed (tds_http_quiesce) */

    pthread_mutex_t log_mu;
    struct tds_log_limit log_sig, log_bad, log_full, log_mhd;
    struct tds_log_limit log_refused[16]; /* by index in codes[] */

    struct MHD_Response *resp[16];
    struct status_metric status[16];
    size_t n_status;
    struct tds_series *sig_fail[8];
    struct tds_series *sig_unsigned;
    struct tds_series *dups;
    struct tds_series *accept_s;
    struct tds_series *body_gauge;
    struct tds_series *cut;
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

static enum MHD_Result respond(struct tds_http *h, struct req *r, unsigned code)
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
    return MHD_queue_response(r->conn, code, h->resp[i]);
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
 * (2,048 × 1 MiB by default) by sending all but their last byte. A request
 * takes its share when its headers arrive: its Content-Length, or the most
 * a chunked body may be. What does not fit is answered 503 there, before a
 * byte of its body is read, so what is admitted can always complete. The
 * share is given back when the body is freed: once the request is
 * journaled (before it waits for the sync), or when it ends. */
static bool body_reserve(struct tds_http *h, struct req *r, size_t n)
{
    size_t cur = atomic_load(&h->body_bytes);

    do {
        if (n > h->o.body_memory || cur > h->o.body_memory - n)
            return false;
    } while (!atomic_compare_exchange_weak(&h->body_bytes, &cur, cur + n));
    r->reserved = n;
    tds_series_inc(h->body_gauge, (double)n);
    return true;
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

static void log_limited(struct tds_http *h, struct tds_log_limit *lim, enum tds_log_level lvl,
                        const char *org, const char *fmt, const char *a)
{
    struct tds_log_ctx ctx = {.org = org};

    pthread_mutex_lock(&h->log_mu);
    tds_log_limited(lim, lvl, &ctx, fmt, a);
    pthread_mutex_unlock(&h->log_mu);
}

/* A webhook's key, for dedupe and in its message id: "<org>:<event id>".
 * Event ids are unique within an organization only (Zoho's may be small
 * numbers), so one organization's event never passes for another's
 * duplicate, and an ack never releases another organization's entry. */
#define KEY_MAX (TDS_ORG_ID_MAX + 1 + TDS_WEBHOOK_MAX_ID + 1)

/* Encode the message and the journal entry it travels in. */
static int build_entry(struct tds_http *h, const struct req *r, const struct tds_webhook *w,
                       const char *key, int64_t now_ms, char **out, size_t *out_len)
{
    struct tds_msg m = {0};
    struct tds_entry e = {0};
    char msgid[3 + KEY_MAX];
    char *buf = NULL;
    size_t len = 0;
    int rc;
    /* A webhook without the record is a notice to fetch it by id; so is any
     * webhook of an organization that takes them unsigned: anyone may post
     * there, and a forged record (a modified time in 2099, a delete) would
     * otherwise be written as Zoho's. */
    bool fetch = (!w->has_record && !w->is_delete) || r->org->webhooks_unsigned;

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

/* A form-encoded body may be signed the way Zoho documents for forms: its
 * fields, decoded, sorted in with the query parameters and no body after
 * them. Tried only after the raw-body signature did not match. */
static int verify_form(const struct tds_http *h, const struct req *r, const struct qp *q,
                       const char *sig, int64_t now)
{
    struct tds_verify_kv kv[TDS_VERIFY_MAX_PARAMS];
    size_t n = q->n;
    char *scratch = malloc(r->body.len + 1);
    int rc;

    if (!scratch)
        return -ENOMEM;
    memcpy(kv, q->kv, n * sizeof(*kv));
    rc = tds_webhook_form_fields(r->body.p ? r->body.p : "", r->body.len, scratch, kv,
                                 TDS_VERIFY_MAX_PARAMS, &n);
    if (rc == 0)
        rc = tds_verify_check((const char *const *)r->org->webhook_secrets,
                              r->org->n_webhook_secrets, sig, kv, n, "", 0, now,
                              h->o.sig_max_age_ms);
    free(scratch);
    return rc == TDS_VERIFY_E_PARAMS ? TDS_VERIFY_E_MISMATCH : rc;
}

static enum MHD_Result process_body(struct tds_http *h, struct req *r)
{
    struct qp q = {0};
    struct tds_webhook w;
    char key[KEY_MAX];
    const char *sig, *ct;
    enum tds_webhook_kind kind;
    int64_t now = tds_wall_ms();
    char *entry = NULL;
    size_t entry_len = 0;
    struct tds_forward_slot *slot = NULL;
    struct tds_journal_loc loc;
    uint64_t seq;
    int rc;

    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, collect_arg, &q);
    sig = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Zoho-Webhook-Signature");
    ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    kind = tds_webhook_kind(ct);
    if (r->org->n_webhook_secrets > 0) {
        rc = q.overflow ? TDS_VERIFY_E_PARAMS
                        : tds_verify_check((const char *const *)r->org->webhook_secrets,
                                           r->org->n_webhook_secrets, sig, q.kv, q.n, r->body.p,
                                           r->body.len, now, h->o.sig_max_age_ms);
        if (rc == TDS_VERIFY_E_MISMATCH && kind == TDS_WEBHOOK_FORM)
            rc = verify_form(h, r, &q, sig, now);
        if (rc < 0)
            return respond(h, r, 500);
        if (rc) {
            tds_series_inc(h->sig_fail[rc], 1);
            log_limited(h, &h->log_sig, TDS_LOG_WARN, r->org->org_id,
                        "webhook signature rejected: %s", tds_verify_reason(rc));
            return respond(h, r, 401);
        }
    } else if (!r->org->webhooks_unsigned) {
        tds_series_inc(h->sig_unsigned, 1);
        log_limited(h, &h->log_sig, TDS_LOG_WARN, r->org->org_id,
                    "webhook rejected: %s", "organization has no webhook secret");
        return respond(h, r, 401);
    }

    rc = tds_webhook_parse(&w, kind, r->body.p ? r->body.p : "", r->body.len, q.entity, q.event);
    if (rc) {
        tds_webhook_clear(&w);
        if (rc < 0)
            return respond(h, r, 500);
        log_limited(h, &h->log_bad, TDS_LOG_INFO, r->org->org_id, "webhook rejected: %s",
                    tds_webhook_strerror(rc));
        return respond(h, r, rc == TDS_WEBHOOK_E_TOO_LARGE ? 413 : 400);
    }

    if ((size_t)snprintf(key, sizeof(key), "%s:%s", r->org->org_id, w.event_id) >= sizeof(key)) {
        tds_webhook_clear(&w);
        return respond(h, r, 500); /* org ids are checked at start-up: cannot happen */
    }
    rc = build_entry(h, r, &w, key, now, &entry, &entry_len);
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
    if (rc)
        return respond(h, r, 500);
    r->seq = seq;
    return finish_or_wait(h, r);
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

        if (strncmp(url, PATH_PREFIX, strlen(PATH_PREFIX)) != 0)
            return refuse(h, c, 404, NULL, "no such path", url);
        org_id = url + strlen(PATH_PREFIX);
        if (!*org_id || strchr(org_id, '/'))
            return refuse(h, c, 404, NULL, "no such path", url);
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
            return refuse(h, c, 405, NULL, "method", method);
        org = tds_orgs_find(h->d.orgs, org_id);
        if (!org)
            return refuse(h, c, 404, NULL, "unknown organization", org_id);
        cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && tds_parse_i64(cl, 0, INT64_MAX, &clen) == 0 && (uint64_t)clen > h->o.max_body)
            return refuse(h, c, 413, org, "Content-Length over TDS_INGRESS_MAX_BODY:", cl);
        ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (tds_webhook_kind(ct) == TDS_WEBHOOK_UNSUPPORTED)
            return refuse(h, c, 415, org, "content type", ct ? ct : "(none)");
        /* No (usable) Content-Length: chunked, as much as the cap allows.
         * Nor with a Transfer-Encoding beside it: libmicrohttpd then reads
         * the body chunked and ignores the Content-Length, which would book
         * a 0-byte share for up to TDS_INGRESS_MAX_BODY. */
        if (!cl || tds_parse_i64(cl, 0, INT64_MAX, &clen) != 0 ||
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
            clen = -1;
        r = calloc(1, sizeof(*r));
        if (!r)
            return respond_conn(h, c, 500);
        if (!body_reserve(h, r, clen >= 0 ? (size_t)clen : h->o.max_body)) {
            free(r);
            return refuse(h, c, 503, org,
                          "request bodies in memory at TDS_INGRESS_BODY_MEMORY; body of",
                          clen >= 0 ? cl : "(chunked, counted at TDS_INGRESS_MAX_BODY)");
        }
        clock_gettime(CLOCK_MONOTONIC, &r->t0);
        r->conn = c;
        r->org = org;
        /* never more than the share booked for it (a 0-byte share: 1 byte,
         * since a max of 0 means no cap; one byte over is cut) */
        r->body.max = clen > 0 ? (size_t)clen : clen == 0 ? 1 : h->o.max_body;
        /* One allocation for the usual case: the body's announced size,
         * which its share of the budget already covers. */
        if (clen > 0 && tds_buf_add(&r->body, "", 0) == 0) {
            char *p = realloc(r->body.p, (size_t)clen + 1);

            if (p) {
                r->body.p = p;
                r->body.cap = (size_t)clen + 1;
            }
        }
        *con_cls = r;
        atomic_fetch_add(&h->inflight, 1);
        return MHD_YES;
    }
    if (r->state == REQ_BODY && *upload_data_size) {
        /* Chunked bodies have no Content-Length: the cap is enforced here,
         * as soon as a chunk passes it, not after reading the rest. The
         * 413 cannot be sent: libmicrohttpd (0.9.75) queues a response only
         * before the body or after all of it, so the connection is closed
         * at once instead, logged and counted. */
        int rc = tds_buf_add(&r->body, upload_data, *upload_data_size);
        char cap[32];
        struct timespec now;

        *upload_data_size = 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (rc == 0 && h->o.body_deadline_s > 0 &&
            now.tv_sec - r->t0.tv_sec > (time_t)h->o.body_deadline_s) {
            /* Bytes trickling in under the idle timeout: the connection and
             * its share of the body budget would be held for ever. Cut like
             * a body over the cap (no response can be queued mid-body). */
            char secs[16];

            body_release(h, r);
            tds_series_inc(h->cut, 1);
            snprintf(secs, sizeof(secs), "%u", h->o.body_deadline_s);
            log_limited(h, &h->log_bad, TDS_LOG_INFO, r->org->org_id,
                        "webhook rejected: body not complete %s s after its headers "
                        "(TDS_INGRESS_BODY_DEADLINE_S), closing the connection",
                        secs);
            return MHD_NO;
        }
        if (rc == 0)
            return MHD_YES;
        body_release(h, r);
        tds_series_inc(h->cut, 1);
        snprintf(cap, sizeof(cap), "%zu", h->o.max_body);
        log_limited(h, &h->log_bad, TDS_LOG_INFO, r->org->org_id,
                    rc == TDS_E_TOO_LARGE
                        ? "webhook rejected: chunked body over TDS_INGRESS_MAX_BODY (%s bytes), "
                          "closing the connection"
                        : "webhook rejected: out of memory for its body (%s bytes at most), "
                          "closing the connection",
                    cap);
        return MHD_NO;
    }
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

    (void)c;
    (void)toe;
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
    static const char *const reasons[] = {NULL,    "missing", "malformed", "mismatch",
                                          "stale", "params",  "ambiguous"};
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
    if (!h->sig_unsigned || !h->dups || !h->accept_s || !h->body_gauge || !h->cut) {
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
    pthread_mutex_destroy(&h->intake_mu);
    pthread_mutex_destroy(&h->wait_mu);
    pthread_mutex_destroy(&h->log_mu);
    free(h);
    return NULL;
}
