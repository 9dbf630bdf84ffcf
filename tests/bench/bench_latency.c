/* bench_latency — webhook to row latency, measured from outside the pipeline.
 *
 * Sends signed webhooks to tds-ingress at a steady rate over keep-alive
 * connections and LISTENs on tds_changes, the channel the writer notifies
 * after each commit with the ids it wrote. A webhook's latency runs from
 * just before its request is written to the socket to the moment the
 * notification naming its item id arrives. One thread, one poll() over the
 * connections and libpq's socket: the Python client it replaces ran 16
 * sender threads and a listener that took a sixth of the two cores under
 * measurement, and its threads' turns at the interpreter lock showed in the
 * figures. It never judges what it measures.
 *
 * Usage: bench_latency HOST PORT ORG RATE REQUESTS CONNINFO [LATENCIES]
 *   REQUESTS   one request a line: item id, path, signature, body (tabs
 *              between, the body compact JSON without a newline)
 *   LATENCIES  if given, one line per webhook answered 200: its index, the
 *              send time and the row time (µs on CLOCK_MONOTONIC; row time
 *              -1 when never seen)
 * Prints one line, "BENCH {json}": sent, ok (200s), seen, errors, the first
 * error, truncated (notifications with a count instead of ids), late (sends
 * over 1 ms behind their time), max_late_ms, conns, achieved (webhooks/s),
 * p50, p99, max (ms), cpu_s (its own CPU). Exit 1 when it could not start.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define MAX_CONNS 256       /* a new connection when none is free, up to this */
#define START_CONNS 16      /* opened before the first send */
#define RESP_MAX 8192       /* the ingress's answers are a few hundred bytes */
#define LATE_US 1000        /* a send this far behind its time counts as late */
#define DRAIN_US 30000000   /* after the last send: rows seen within 30 s count */
#define LINE_MAX_BYTES (4 << 20)
/* An idle connection is not used again after this long: the ingress drops
 * one silent for TDS_INGRESS_TIMEOUT_S (15 s by default), and a request
 * written as it closes would fail. Its socket is opened anew instead. */
#define IDLE_REUSE_US 5000000

struct req {
    char *id;       /* the item id the webhook carries */
    char *wire;     /* the whole HTTP request */
    size_t len;
    int64_t sent_us, seen_us; /* -1 until then */
    bool ok;        /* answered 200 */
};

struct conn {
    int fd;         /* -1 when closed */
    long busy;      /* index of the request awaiting its answer, -1 when idle */
    int64_t used_us; /* when its last request was written */
    char buf[RESP_MAX];
    size_t have;
};

struct bench {
    struct req *reqs;
    size_t n;
    size_t *by_id;  /* request indexes sorted by id, for the notifications */
    struct conn conns[MAX_CONNS];
    int n_conns;
    struct sockaddr_in addr;
    PGconn *pg;
    const char *org;
    bool lost;      /* the listening connection broke */
    uint64_t errors, truncated, late;
    int64_t max_late_us;
    char first_error[256];
};

static void error_once(struct bench *b, const char *fmt, const char *detail)
{
    b->errors++;
    if (!b->first_error[0])
        snprintf(b->first_error, sizeof(b->first_error), fmt, detail);
}

/* The requests whose ids the comparators read: qsort and bsearch take no
 * user data. One bench a process. */
static const struct req *sort_reqs;

static int cmp_index(const void *x, const void *y)
{
    return strcmp(sort_reqs[*(const size_t *)x].id, sort_reqs[*(const size_t *)y].id);
}

static int cmp_key(const void *key, const void *elem)
{
    return strcmp(key, sort_reqs[*(const size_t *)elem].id);
}

static struct req *find(struct bench *b, const char *id)
{
    size_t *at = bsearch(id, b->by_id, b->n, sizeof(*b->by_id), cmp_key);

    return at ? &b->reqs[*at] : NULL;
}

#define REQ_HEAD                                                                               \
    "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"             \
    "X-Zoho-Webhook-Signature: %s\r\nContent-Length: %zu\r\n\r\n"

static int load(struct bench *b, const char *path)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, alloc = 0;
    ssize_t got;
    int r = 0;

    if (!f) {
        fprintf(stderr, "bench_latency: could not open '%s': %s\n", path, strerror(errno));
        return -1;
    }
    while ((got = getline(&line, &cap, f)) > 0) {
        char *id = line, *p, *sig, *body;
        int head;
        struct req *q;

        if (line[got - 1] == '\n')
            line[--got] = '\0';
        if (!(p = strchr(id, '\t')) || !(sig = strchr(p + 1, '\t')) ||
            !(body = strchr(sig + 1, '\t')) || got > LINE_MAX_BYTES) {
            fprintf(stderr, "bench_latency: line %zu of '%s' is not id, path, signature, body\n",
                    b->n + 1, path);
            r = -1;
            break;
        }
        *p++ = '\0';
        *sig++ = '\0';
        *body++ = '\0';
        if (b->n == alloc) {
            size_t na = alloc ? 2 * alloc : 1024;
            struct req *nr = realloc(b->reqs, na * sizeof(*nr));

            if (!nr) {
                r = -1;
                break;
            }
            b->reqs = nr;
            alloc = na;
        }
        q = &b->reqs[b->n];
        *q = (struct req){.sent_us = -1, .seen_us = -1};
        head = snprintf(NULL, 0, REQ_HEAD, p, sig, strlen(body));
        q->len = (size_t)head + strlen(body);
        q->id = strdup(id);
        q->wire = malloc(q->len + 1);
        if (!q->id || !q->wire) {
            free(q->id);
            free(q->wire);
            r = -1;
            break;
        }
        snprintf(q->wire, (size_t)head + 1, REQ_HEAD, p, sig, strlen(body));
        memcpy(q->wire + head, body, strlen(body) + 1);
        b->n++;
    }
    free(line);
    fclose(f);
    if (r == 0 && b->n == 0) {
        fprintf(stderr, "bench_latency: '%s' holds no request\n", path);
        r = -1;
    }
    if (r == 0 && !(b->by_id = malloc(b->n * sizeof(*b->by_id))))
        r = -1;
    if (r == 0) {
        for (size_t i = 0; i < b->n; i++)
            b->by_id[i] = i;
        sort_reqs = b->reqs;
        qsort(b->by_id, b->n, sizeof(*b->by_id), cmp_index);
    }
    return r;
}

static int open_conn(struct bench *b, struct conn *c)
{
    int one = 1;

    c->have = 0;
    c->busy = -1;
    c->used_us = tds_now_us();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&b->addr, sizeof(b->addr)) < 0) {
        int e = errno;

        close(c->fd);
        c->fd = -1;
        return -e;
    }
    return 0;
}

static void close_conn(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->busy = -1;
    c->have = 0;
}

/* A connection to write the next request on: an idle one used lately, else
 * one opened anew. 0 and *out set; 1 when all MAX_CONNS await their answers;
 * a negative errno when a new connection could not be made. */
static int free_conn(struct bench *b, int64_t now, struct conn **out)
{
    int r;

    for (int k = 0; k < b->n_conns; k++) {
        struct conn *c = &b->conns[k];

        if (c->fd < 0 || c->busy >= 0)
            continue;
        if (now - c->used_us <= IDLE_REUSE_US) {
            *out = c;
            return 0;
        }
        close_conn(c);
    }
    for (int k = 0; k < b->n_conns; k++) {
        if (b->conns[k].fd < 0) {
            if ((r = open_conn(b, &b->conns[k])) == 0)
                *out = &b->conns[k];
            return r;
        }
    }
    if (b->n_conns == MAX_CONNS)
        return 1;
    if ((r = open_conn(b, &b->conns[b->n_conns])) == 0)
        *out = &b->conns[b->n_conns++];
    return r;
}

static void send_req(struct bench *b, struct conn *c, size_t i)
{
    struct req *q = &b->reqs[i];
    size_t off = 0;

    q->sent_us = c->used_us = tds_now_us();
    c->busy = (long)i;
    while (off < q->len) {
        ssize_t w = send(c->fd, q->wire + off, q->len - off, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            error_once(b, "send: %s", strerror(errno));
            close_conn(c);
            return;
        }
        off += (size_t)w;
    }
}

/* Whole answers in c's buffer: their status marks the request, the
 * connection is idle again (or closed when the server said so). */
static void on_readable(struct bench *b, struct conn *c)
{
    ssize_t got = recv(c->fd, c->buf + c->have, sizeof(c->buf) - 1 - c->have, MSG_DONTWAIT);

    if (got <= 0) {
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            return;
        if (c->busy >= 0)
            error_once(b, "%s", got ? strerror(errno) : "connection closed before the answer");
        close_conn(c);
        return;
    }
    c->have += (size_t)got;
    c->buf[c->have] = '\0';
    for (;;) {
        char *end = strstr(c->buf, "\r\n\r\n"), *h;
        size_t clen = 0, whole;
        bool close_after = false;
        int status;

        if (!end) {
            if (c->have >= sizeof(c->buf) - 1) {
                error_once(b, "%s", "answer headers too long");
                close_conn(c);
            }
            return;
        }
        if (sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1) {
            error_once(b, "%s", "not an HTTP answer");
            close_conn(c);
            return;
        }
        for (h = strstr(c->buf, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n")) {
            if (strncasecmp(h + 2, "Content-Length:", 15) == 0)
                clen = strtoul(h + 17, NULL, 10);
            else if (strncasecmp(h + 2, "Connection: close", 17) == 0)
                close_after = true;
        }
        whole = (size_t)(end + 4 - c->buf) + clen;
        if (whole >= sizeof(c->buf)) {
            error_once(b, "%s", "answer too long");
            close_conn(c);
            return;
        }
        if (c->have < whole)
            return;
        if (c->busy >= 0) {
            if (status == 200) {
                b->reqs[c->busy].ok = true;
            } else {
                char s[16];

                snprintf(s, sizeof(s), "%d", status);
                error_once(b, "HTTP %s", s);
            }
        }
        c->busy = -1;
        memmove(c->buf, c->buf + whole, c->have - whole + 1);
        c->have -= whole;
        if (close_after) {
            close_conn(c);
            return;
        }
    }
}

/* The ids of requests sent and not yet seen, as a text[] literal. */
static char *pending_literal(struct bench *b)
{
    size_t cap = 2, len = 0;
    char *s;

    for (size_t i = 0; i < b->n; i++)
        if (b->reqs[i].sent_us >= 0 && b->reqs[i].seen_us < 0)
            cap += strlen(b->reqs[i].id) + 3;
    if (!(s = malloc(cap + 1)))
        return NULL;
    s[len++] = '{';
    for (size_t i = 0; i < b->n; i++) {
        const struct req *q = &b->reqs[i];

        if (q->sent_us < 0 || q->seen_us >= 0)
            continue;
        if (len > 1)
            s[len++] = ',';
        len += (size_t)snprintf(s + len, cap + 1 - len, "\"%s\"", q->id);
    }
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

/* A notification too large for its ids carries a count: the rows are
 * committed, so the pending ids now in zoho.items were applied by then. */
static void look_up_pending(struct bench *b, int64_t now)
{
    char *lit = pending_literal(b);
    const char *params[2] = {b->org, lit};
    PGresult *res;

    if (!lit)
        return;
    res = PQexecParams(b->pg,
                       "SELECT item_id FROM zoho.items WHERE org_id = $1 "
                       "AND item_id = ANY($2::text[])",
                       2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        for (int r = 0; r < PQntuples(res); r++) {
            struct req *q = find(b, PQgetvalue(res, r, 0));

            if (q && q->seen_us < 0)
                q->seen_us = now;
        }
    } else {
        error_once(b, "look-up of a counted notification: %s", PQerrorMessage(b->pg));
    }
    PQclear(res);
    free(lit);
}

static void on_notifies(struct bench *b)
{
    int64_t now;
    PGnotify *nt;

    if (!PQconsumeInput(b->pg)) {
        /* no row can be seen any more: the run ends here */
        error_once(b, "listen connection: %s", PQerrorMessage(b->pg));
        b->lost = true;
        return;
    }
    now = tds_now_us();
    while ((nt = PQnotifies(b->pg))) {
        json_t *p = json_loads(nt->extra, 0, NULL);
        json_t *ids = json_object_get(json_object_get(p, "tables"), "items");

        if (json_is_array(ids)) {
            size_t k;
            json_t *v;

            json_array_foreach(ids, k, v) {
                struct req *q = json_is_string(v) ? find(b, json_string_value(v)) : NULL;

                if (q && q->seen_us < 0)
                    q->seen_us = now;
            }
        } else if (ids) {
            b->truncated++;
            look_up_pending(b, now);
        }
        json_decref(p);
        PQfreemem(nt);
    }
}

static int cmp_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;

    return (a > c) - (a < c);
}

static bool all_done(const struct bench *b, size_t next)
{
    if (next < b->n)
        return false;
    for (int k = 0; k < b->n_conns; k++)
        if (b->conns[k].busy >= 0)
            return false;
    for (size_t i = 0; i < b->n; i++)
        if (b->reqs[i].ok && b->reqs[i].seen_us < 0)
            return false;
    return true;
}

/* Read the answers that have come on busy connections, without waiting. */
static void reap(struct bench *b)
{
    for (int k = 0; k < b->n_conns; k++)
        if (b->conns[k].busy >= 0)
            on_readable(b, &b->conns[k]);
}

/* Send every request at its time and wait for the answers and the rows.
 * While sending, only the listening connection and the next send's time
 * wake the thread: answers are read at the next send (each wake-up costs
 * more CPU than the reads), so the client takes little of the cores the
 * pipeline runs on. Once every request is out, answers wake it too. */
static void run(struct bench *b, double rate)
{
    struct pollfd pfd[MAX_CONNS + 1];
    int64_t t0 = tds_now_us() + 100000, last_send = 0;
    size_t next = 0;

    for (;;) {
        int64_t now = tds_now_us(), due, wait_us;
        struct timespec ts;
        int n_pfd = 0, k;

        bool stalled = false;

        if (b->lost)
            return;
        if (next < b->n)
            reap(b);
        while (next < b->n && (due = t0 + (int64_t)((double)next * 1e6 / rate)) <= now) {
            struct conn *c = NULL;
            int r = free_conn(b, now, &c);

            if (r == 1) {
                stalled = true; /* every connection awaits its answer */
                break;
            }
            if (r < 0) {
                /* no connection to be had: this webhook is not sent */
                error_once(b, "connect: %s", strerror(-r));
                next++;
                continue;
            }
            if (now - due > LATE_US)
                b->late++;
            if (now - due > b->max_late_us)
                b->max_late_us = now - due;
            send_req(b, c, next++);
            last_send = now = tds_now_us();
        }
        if (all_done(b, next) || (next == b->n && now - last_send > DRAIN_US))
            return;
        if (stalled)
            wait_us = 10000;
        else if (next < b->n)
            wait_us = t0 + (int64_t)((double)next * 1e6 / rate) - now;
        else
            wait_us = 100000;
        if (wait_us < 0)
            wait_us = 0;
        pfd[n_pfd++] = (struct pollfd){.fd = PQsocket(b->pg), .events = POLLIN};
        for (k = 0; k < b->n_conns && (next == b->n || stalled); k++)
            if (b->conns[k].fd >= 0)
                pfd[n_pfd++] = (struct pollfd){.fd = b->conns[k].fd, .events = POLLIN};
        ts.tv_sec = wait_us / 1000000;
        ts.tv_nsec = (wait_us % 1000000) * 1000;
        if (ppoll(pfd, (nfds_t)n_pfd, &ts, NULL) < 0 && errno != EINTR) {
            error_once(b, "poll: %s", strerror(errno));
            return;
        }
        if (pfd[0].revents)
            on_notifies(b);
        for (int i = 1; i < n_pfd; i++) {
            if (!pfd[i].revents)
                continue;
            for (k = 0; k < b->n_conns; k++)
                if (b->conns[k].fd == pfd[i].fd) {
                    on_readable(b, &b->conns[k]);
                    break;
                }
        }
    }
}

static double cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int report(struct bench *b, const char *lat_path, double cpu)
{
    int64_t *lat = malloc((b->n ? b->n : 1) * sizeof(*lat)), first = -1, last = -1;
    size_t n_lat = 0, sent = 0, ok = 0;
    FILE *out = NULL;
    json_t *j;
    char *s;

    if (!lat)
        return -1;
    if (lat_path && !(out = fopen(lat_path, "w"))) {
        fprintf(stderr, "bench_latency: could not open '%s': %s\n", lat_path, strerror(errno));
        free(lat);
        return -1;
    }
    for (size_t i = 0; i < b->n; i++) {
        const struct req *q = &b->reqs[i];

        if (q->sent_us < 0)
            continue;
        sent++;
        if (first < 0)
            first = q->sent_us;
        last = q->sent_us;
        if (!q->ok)
            continue;
        ok++;
        if (out)
            fprintf(out, "%zu %" PRId64 " %" PRId64 "\n", i, q->sent_us, q->seen_us);
        if (q->seen_us >= 0)
            lat[n_lat++] = q->seen_us - q->sent_us;
    }
    if (out)
        fclose(out);
    qsort(lat, n_lat, sizeof(*lat), cmp_i64);
#define PCT(q) (n_lat ? (double)lat[(size_t)((q) * (double)n_lat) < n_lat                      \
                                        ? (size_t)((q) * (double)n_lat)                        \
                                        : n_lat - 1] / 1000.0                                  \
                      : 0.0)
    j = json_pack("{sI sI sI sI ss sI sI sf sI sf sf sf sf sf}", "sent", (json_int_t)sent, "ok",
                  (json_int_t)ok, "seen", (json_int_t)n_lat, "errors", (json_int_t)b->errors,
                  "error", b->first_error, "truncated", (json_int_t)b->truncated, "late",
                  (json_int_t)b->late, "max_late_ms", (double)b->max_late_us / 1000.0, "conns",
                  (json_int_t)b->n_conns, "achieved",
                  last > first ? (double)(sent - 1) * 1e6 / (double)(last - first) : 0.0,
                  "p50", PCT(0.5), "p99", PCT(0.99), "max",
                  n_lat ? (double)lat[n_lat - 1] / 1000.0 : 0.0, "cpu_s", cpu);
#undef PCT
    s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (s)
        printf("BENCH %s\n", s);
    free(s);
    json_decref(j);
    free(lat);
    return s ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct bench *b;
    PGresult *res;
    char *end;
    double rate;
    long port;
    int rc = 1;

    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: bench_latency HOST PORT ORG RATE REQUESTS CONNINFO [LATENCIES]\n");
        return 2;
    }
    errno = 0;
    port = strtol(argv[2], &end, 10);
    if (errno || *end || port <= 0 || port > 65535) {
        fprintf(stderr, "bench_latency: invalid port: '%s'\n", argv[2]);
        return 2;
    }
    rate = strtod(argv[4], &end);
    if (*end || !(rate > 0)) {
        fprintf(stderr, "bench_latency: invalid rate: '%s'\n", argv[4]);
        return 2;
    }
    if (!(b = calloc(1, sizeof(*b))))
        return 1;
    for (int k = 0; k < MAX_CONNS; k++)
        b->conns[k].fd = -1;
    b->org = argv[3];
    b->addr.sin_family = AF_INET;
    b->addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, argv[1], &b->addr.sin_addr) != 1) {
        fprintf(stderr, "bench_latency: invalid IPv4 address: '%s'\n", argv[1]);
        goto out;
    }
    if (load(b, argv[5]))
        goto out;
    b->pg = PQconnectdb(argv[6]);
    if (PQstatus(b->pg) != CONNECTION_OK) {
        fprintf(stderr, "bench_latency: could not connect to PostgreSQL: %s", PQerrorMessage(b->pg));
        goto out;
    }
    res = PQexec(b->pg, "LISTEN tds_changes");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench_latency: LISTEN failed: %s", PQerrorMessage(b->pg));
        PQclear(res);
        goto out;
    }
    PQclear(res);
    for (int k = 0; k < START_CONNS; k++) {
        int r = open_conn(b, &b->conns[k]);

        if (r) {
            fprintf(stderr, "bench_latency: could not connect to %s:%ld: %s\n", argv[1], port,
                    strerror(-r));
            goto out;
        }
        b->n_conns++;
    }
    run(b, rate);
    rc = report(b, argc == 8 ? argv[7] : NULL, cpu_s()) ? 1 : 0;
out:
    for (int k = 0; k < b->n_conns; k++)
        close_conn(&b->conns[k]);
    PQfinish(b->pg);
    for (size_t i = 0; i < b->n; i++) {
        free(b->reqs[i].id);
        free(b->reqs[i].wire);
    }
    free(b->reqs);
    free(b->by_id);
    free(b);
    return rc;
}
