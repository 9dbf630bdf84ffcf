/* test_admin — the admin server on a free port, fetched with a plain socket
 * HTTP/1.0 client: /healthz, /readyz flipping to 503 with its reason,
 * /metrics, /status, 404, 405, and host:port parsing. */
#include <stddef.h> /* admin.h uses size_t without including it */
#include "admin.h"
#include "assert.h"
#include "loop.h"
#include "metrics.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

struct resp {
    int status;
    char *body; /* after the blank line */
    char *all;
};

/* One request over a fresh connection; reads until the server closes, each
 * read waiting at most timeout_s (0: for ever). */
static struct resp fetch_within(uint16_t port, const char *method, const char *path, int timeout_s)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct tds_buf b = {.max = 1 << 20};
    struct resp r = {0};
    char req[256], chunk[4096];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ssize_t n;

    T_TRUE(fd >= 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    T_INT(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), ==, 0);
    if (timeout_s > 0) {
        struct timeval tv = {.tv_sec = timeout_s};
        T_INT(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), ==, 0);
    }
    n = snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: localhost\r\n\r\n", method, path);
    T_INT(write(fd, req, (size_t)n), ==, n);
    while ((n = read(fd, chunk, sizeof(chunk))) > 0)
        T_INT(tds_buf_add(&b, chunk, (size_t)n), ==, 0);
    close(fd);
    T_INT(tds_buf_add(&b, "", 0), ==, 0);
    T_TRUE(strncmp(b.p, "HTTP/1.", 7) == 0);
    r.status = atoi(b.p + 9);
    r.all = b.p;
    r.body = strstr(b.p, "\r\n\r\n");
    T_TRUE(r.body != NULL);
    r.body += 4;
    return r;
}

static struct resp fetch(uint16_t port, const char *method, const char *path)
{
    return fetch_within(port, method, path, 0);
}

static char *status_json(void *ud)
{
    int *calls = ud;

    (*calls)++;
    return *calls == 1 ? strdup("{\"stage\":\"test\",\"inflight\":3}") : NULL;
}

static void test_endpoints(void)
{
    struct tds_metrics *m = NULL;
    struct tds_admin *a = NULL;
    struct tds_loop *loop = NULL;
    struct resp r;
    int calls = 0;

    T_INT(tds_metrics_new(&m), ==, 0);
    tds_series_inc(tds_metrics_get(m, TDS_COUNTER, "t_requests_total", "Requests.", "", NULL, 0), 2);
    T_INT(tds_loop_new(&loop), ==, 0);
    T_INT(tds_admin_new(&a, "127.0.0.1:0", m, loop), ==, 0);
    T_INT(tds_admin_port(a), ==, 0);
    T_INT(tds_admin_start(a), ==, 0);
    uint16_t port = tds_admin_port(a);
    T_INT(port, >, 0);

    /* The heartbeat was set when the loop was made: fresh. */
    r = fetch(port, "GET", "/healthz");
    T_INT(r.status, ==, 200);
    T_STR(r.body, "ok\n");
    free(r.all);

    r = fetch(port, "GET", "/readyz");
    T_INT(r.status, ==, 503);
    T_STR(r.body, "not ready: starting\n");
    free(r.all);
    tds_admin_set_ready(a, true, NULL);
    r = fetch(port, "GET", "/readyz");
    T_INT(r.status, ==, 200);
    T_STR(r.body, "ready\n");
    free(r.all);
    tds_admin_set_ready(a, false, "database unreachable");
    r = fetch(port, "GET", "/readyz");
    T_INT(r.status, ==, 503);
    T_STR(r.body, "not ready: database unreachable\n");
    free(r.all);
    r = fetch(port, "GET", "/healthz"); /* not ready is still alive */
    T_INT(r.status, ==, 200);
    free(r.all);

    r = fetch(port, "GET", "/metrics");
    T_INT(r.status, ==, 200);
    T_TRUE(strstr(r.all, "Content-Type: text/plain; version=0.0.4") != NULL);
    T_STR(r.body, "# HELP t_requests_total Requests.\n"
                  "# TYPE t_requests_total counter\n"
                  "t_requests_total 2\n");
    free(r.all);

    r = fetch(port, "GET", "/status");
    T_INT(r.status, ==, 200);
    T_STR(r.body, "{}");
    free(r.all);
    tds_admin_set_status_cb(a, status_json, &calls);
    r = fetch(port, "GET", "/status");
    T_INT(r.status, ==, 200);
    T_TRUE(strstr(r.all, "Content-Type: application/json") != NULL);
    T_STR(r.body, "{\"stage\":\"test\",\"inflight\":3}");
    free(r.all);
    r = fetch(port, "GET", "/status"); /* callback returns NULL → 500 */
    T_INT(r.status, ==, 500);
    free(r.all);

    r = fetch(port, "GET", "/nothing");
    T_INT(r.status, ==, 404);
    free(r.all);
    r = fetch(port, "POST", "/healthz");
    T_INT(r.status, ==, 405);
    free(r.all);
    r = fetch(port, "HEAD", "/healthz");
    T_INT(r.status, ==, 200);
    T_STR(r.body, "");
    free(r.all);

    /* A loop that has not turned over within the stall threshold is stalled;
     * this one never runs, so its heartbeat only ages. */
    tds_admin_set_stall_ms(a, 100);
    usleep(150 * 1000);
    r = fetch(port, "GET", "/healthz");
    T_INT(r.status, ==, 503);
    T_TRUE(strncmp(r.body, "event loop stalled for ", 23) == 0);
    free(r.all);
    tds_admin_set_stall_ms(a, 0); /* back to the default */
    r = fetch(port, "GET", "/healthz");
    T_INT(r.status, ==, 200);
    free(r.all);

    /* A failure the process cannot recover from: not alive any more, and
     * not ready either, though the caller said ready before. */
    tds_admin_set_ready(a, true, NULL);
    tds_admin_set_failed(a, "journal failed");
    r = fetch(port, "GET", "/healthz");
    T_INT(r.status, ==, 503);
    T_STR(r.body, "failed: journal failed\n");
    free(r.all);
    r = fetch(port, "GET", "/readyz");
    T_INT(r.status, ==, 503);
    T_STR(r.body, "not ready: failed: journal failed\n");
    free(r.all);

    tds_admin_free(a);
    tds_loop_free(loop);
    tds_metrics_free(m);
}

/* [::] serves IPv4 clients too: a dual-stack cluster's kubelet probes the
 * pod's IPv4 address. (Skipped where the machine has no IPv6.) */
static void test_any_ipv6_takes_ipv4(void)
{
    struct tds_admin *a = NULL;
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct resp r;

    if (probe < 0) {
        fprintf(stderr, "  no IPv6 here: skipped\n");
        return;
    }
    close(probe);
    T_INT(tds_admin_new(&a, "[::]:0", NULL, NULL), ==, 0);
    T_INT(tds_admin_start(a), ==, 0);
    r = fetch(tds_admin_port(a), "GET", "/healthz"); /* over IPv4, 127.0.0.1 */
    T_INT(r.status, ==, 200);
    free(r.all);
    tds_admin_free(a);
}

static void test_no_loop_no_metrics(void)
{
    struct tds_admin *a = NULL;
    struct resp r;

    T_INT(tds_admin_new(&a, ":0", NULL, NULL), ==, 0);
    T_INT(tds_admin_start(a), ==, 0);
    r = fetch(tds_admin_port(a), "GET", "/healthz");
    T_INT(r.status, ==, 200);
    free(r.all);
    r = fetch(tds_admin_port(a), "GET", "/metrics");
    T_INT(r.status, ==, 200);
    T_STR(r.body, "");
    free(r.all);

    /* The same port cannot be bound twice. */
    struct tds_admin *b = NULL;
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", (unsigned)tds_admin_port(a));
    T_INT(tds_admin_new(&b, listen, NULL, NULL), ==, 0);
    T_INT(tds_admin_start(b), <, 0);
    tds_admin_free(b);
    tds_admin_free(a);
    T_NULL(tds_admin_free(NULL));
}

static void test_hostport(void)
{
    char host[64];
    uint16_t port = 1;

    T_INT(tds_parse_hostport("127.0.0.1:9104", host, sizeof(host), &port), ==, 0);
    T_STR(host, "127.0.0.1");
    T_INT(port, ==, 9104);
    T_INT(tds_parse_hostport(":9101", host, sizeof(host), &port), ==, 0);
    T_STR(host, "");
    T_INT(port, ==, 9101);
    T_INT(tds_parse_hostport("0.0.0.0:0", host, sizeof(host), &port), ==, 0);
    T_INT(port, ==, 0);
    T_INT(tds_parse_hostport("[::1]:80", host, sizeof(host), &port), ==, 0);
    T_STR(host, "::1");
    T_INT(port, ==, 80);
    T_INT(tds_parse_hostport("localhost", host, sizeof(host), &port), ==, TDS_E_INVALID);
    T_INT(tds_parse_hostport("h:65536", host, sizeof(host), &port), ==, TDS_E_INVALID);
    T_INT(tds_parse_hostport("h:-1", host, sizeof(host), &port), ==, TDS_E_INVALID);
    T_INT(tds_parse_hostport("h:", host, sizeof(host), &port), ==, TDS_E_INVALID);
    T_INT(tds_parse_hostport("h:80x", host, sizeof(host), &port), ==, TDS_E_INVALID);
    T_INT(tds_parse_hostport("::1:80", host, sizeof(host), &port), ==, TDS_E_INVALID);
    T_INT(tds_parse_hostport("[::1]80", host, sizeof(host), &port), ==, TDS_E_INVALID);
    T_INT(tds_parse_hostport("averyveryverylonghostname:1", host, 8, &port), ==, TDS_E_INVALID);

    struct tds_admin *a = NULL;
    T_INT(tds_admin_new(&a, "nonsense", NULL, NULL), ==, TDS_E_INVALID);
    T_NULL(a);
}

/* A connection from source address src that sends the start of a request
 * and no more. */
static int half_request(uint16_t port, const char *src)
{
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct sockaddr_in from = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    T_TRUE(fd >= 0);
    T_INT(inet_pton(AF_INET, src, &from.sin_addr), ==, 1);
    T_INT(bind(fd, (struct sockaddr *)&from, sizeof(from)), ==, 0);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    T_INT(connect(fd, (struct sockaddr *)&to, sizeof(to)), ==, 0);
    T_INT(write(fd, "GET /healthz HTTP/1.1\r\nX: ", 27), ==, 27);
    return fd;
}

/* One address holding connections open with unfinished headers took all 64
 * slots, and /healthz went unanswered for as long as it kept them: the
 * kubelet's liveness probe failed and the pod was restarted, again and again.
 * Each address now has its share. */
static void test_one_address_cannot_take_every_connection(void)
{
    struct tds_admin *a = NULL;
    int fds[TDS_ADMIN_CONN_LIMIT];
    struct resp r;

    T_INT(tds_admin_new(&a, "127.0.0.1:0", NULL, NULL), ==, 0);
    T_INT(tds_admin_start(a), ==, 0);
    for (size_t i = 0; i < TDS_ADMIN_CONN_LIMIT; i++)
        fds[i] = half_request(tds_admin_port(a), "127.0.0.2");
    sleep(1);
    r = fetch_within(tds_admin_port(a), "GET", "/healthz", 3);
    T_INT(r.status, ==, 200);
    free(r.all);
    for (size_t i = 0; i < TDS_ADMIN_CONN_LIMIT; i++)
        close(fds[i]);
    tds_admin_free(a);
}

int main(void)
{
    T_RUN(test_endpoints);
    T_RUN(test_no_loop_no_metrics);
    T_RUN(test_hostport);
    T_RUN(test_any_ipv6_takes_ipv4);
    T_RUN(test_one_address_cannot_take_every_connection);
    return 0;
}
