/* admin — the admin HTTP server of every stage: /healthz, /readyz, /metrics,
 * /status, on libmicrohttpd's own thread.
 *
 * Owns the daemon and a copy of the readiness reason. It never touches the
 * loop's state beyond the atomic heartbeat, and reads the metrics registry
 * through its own lock; the status callback runs on the admin thread, so the
 * stage must make it thread-safe. libmicrohttpd's error log stays off:
 * common/ does not write to stderr.
 */
#include <stddef.h> /* admin.h uses size_t without including it */
#include "admin.h"
#include "loop.h"
#include "metrics.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define REASON_MAX 256

struct tds_admin {
    struct MHD_Daemon *daemon;
    struct sockaddr_storage addr;
    bool ipv6;
    uint16_t port;
    struct tds_metrics *metrics;
    const struct tds_loop *loop;

    pthread_mutex_t lock; /* guards reason and the status callback */
    _Atomic bool ready;
    _Atomic bool failed;
    _Atomic int64_t stall_ms;
    char reason[REASON_MAX];
    char failure[REASON_MAX];
    tds_admin_status_cb status_cb;
    void *status_ud;
};

int tds_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon, *h = s;
    size_t hlen;
    int64_t p;

    if (!s || hostlen == 0)
        return TDS_E_INVALID;
    if (s[0] == '[') {
        /* "[::1]:9101" */
        const char *close = strchr(s, ']');

        if (!close || close[1] != ':')
            return TDS_E_INVALID;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return TDS_E_INVALID;
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen))
            return TDS_E_INVALID; /* bare IPv6 needs brackets */
    }
    if (hlen >= hostlen)
        return TDS_E_INVALID;
    if (tds_parse_i64(colon + 1, 0, 65535, &p))
        return TDS_E_INVALID;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (uint16_t)p;
    return 0;
}

int tds_admin_new(struct tds_admin **out, const char *listen, struct tds_metrics *metrics,
                  const struct tds_loop *loop)
{
    struct tds_admin *a;
    char host[256];
    uint16_t port;
    int r;

    if (tds_parse_hostport(listen, host, sizeof(host), &port))
        return TDS_E_INVALID;
    a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    r = pthread_mutex_init(&a->lock, NULL);
    if (r) {
        free(a);
        return -r;
    }
    a->metrics = metrics;
    a->loop = loop;
    a->port = port;
    atomic_store(&a->stall_ms, TDS_ADMIN_STALL_MS);
    snprintf(a->reason, sizeof(a->reason), "starting");

    if (host[0] == '\0') {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a->addr;

        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons(port);
    } else {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_PASSIVE};
        struct addrinfo *res = NULL;

        if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) {
            if (res)
                freeaddrinfo(res);
            tds_admin_free(a);
            return TDS_E_INVALID;
        }
        memcpy(&a->addr, res->ai_addr, res->ai_addrlen);
        a->ipv6 = res->ai_family == AF_INET6;
        if (a->ipv6)
            ((struct sockaddr_in6 *)&a->addr)->sin6_port = htons(port);
        else
            ((struct sockaddr_in *)&a->addr)->sin_port = htons(port);
        freeaddrinfo(res);
    }
    *out = a;
    return 0;
}

struct tds_admin *tds_admin_free(struct tds_admin *a)
{
    if (!a)
        return NULL;
    if (a->daemon)
        MHD_stop_daemon(a->daemon);
    pthread_mutex_destroy(&a->lock);
    free(a);
    return NULL;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                             char *body, size_t len)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    /* body is malloc'd and handed over; NULL means an allocation failed. */
    if (!body)
        return MHD_NO;
    resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *fmt,
                                  ...) __attribute__((format(printf, 3, 4)));

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
    va_list ap;
    char *text;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return MHD_NO;
    text = malloc((size_t)n + 1);
    if (!text)
        return MHD_NO;
    va_start(ap, fmt);
    vsnprintf(text, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return reply(c, status, "text/plain; charset=utf-8", text, (size_t)n);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_size, void **con_cls)
{
    struct tds_admin *a = cls;

    (void)version;
    (void)upload_data;
    /* The first call only announces the request; answer on the second so a
     * body (there should be none) is consumed first. */
    if (*con_cls == NULL) {
        *con_cls = a;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0; /* ignore any body */
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");

    if (strcmp(url, "/healthz") == 0) {
        int64_t age;

        if (atomic_load(&a->failed)) {
            char reason[REASON_MAX];

            pthread_mutex_lock(&a->lock);
            memcpy(reason, a->failure, sizeof(reason));
            pthread_mutex_unlock(&a->lock);
            return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "failed: %s\n", reason);
        }
        if (!a->loop)
            return reply_text(c, MHD_HTTP_OK, "ok\n");
        age = tds_now_ms() - tds_loop_heartbeat_ms(a->loop);
        if (age <= atomic_load(&a->stall_ms))
            return reply_text(c, MHD_HTTP_OK, "ok\n");
        return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "event loop stalled for %lld ms\n",
                          (long long)age);
    }
    if (strcmp(url, "/readyz") == 0) {
        char reason[REASON_MAX];

        if (atomic_load(&a->failed)) {
            /* not alive is not ready either, whatever the caller last said */
            pthread_mutex_lock(&a->lock);
            memcpy(reason, a->failure, sizeof(reason));
            pthread_mutex_unlock(&a->lock);
            return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready: failed: %s\n", reason);
        }
        if (atomic_load(&a->ready))
            return reply_text(c, MHD_HTTP_OK, "ready\n");
        pthread_mutex_lock(&a->lock);
        memcpy(reason, a->reason, sizeof(reason));
        pthread_mutex_unlock(&a->lock);
        return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready: %s\n", reason);
    }
    if (strcmp(url, "/metrics") == 0) {
        char *text = NULL;
        size_t len = 0;

        if (!a->metrics) {
            text = strdup("");
        } else if (tds_metrics_render(a->metrics, &text, &len) != 0) {
            return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "could not render metrics\n");
        }
        return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len);
    }
    if (strcmp(url, "/status") == 0) {
        tds_admin_status_cb cb;
        void *ud;
        char *json;

        pthread_mutex_lock(&a->lock);
        cb = a->status_cb;
        ud = a->status_ud;
        pthread_mutex_unlock(&a->lock);
        json = cb ? cb(ud) : strdup("{}");
        if (!json)
            return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "status unavailable\n");
        return reply(c, MHD_HTTP_OK, "application/json", json, strlen(json));
    }
    return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
}

int tds_admin_start(struct tds_admin *a)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    const union MHD_DaemonInfo *info;

    if (a->daemon)
        return -EALREADY;
    /* [::] takes IPv4 too (a kubelet probing the pod's IPv4 address in a
     * dual-stack cluster); MHD_USE_IPv6 alone sets IPV6_V6ONLY. */
    if (a->ipv6)
        flags |= IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&a->addr)->sin6_addr)
                     ? MHD_USE_DUAL_STACK
                     : MHD_USE_IPv6;
    errno = 0;
    a->daemon = MHD_start_daemon(flags, a->port, NULL, NULL, handle, a,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a->addr,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)TDS_ADMIN_CONN_LIMIT,
                                 MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                 (unsigned)TDS_ADMIN_PER_IP_LIMIT, MHD_OPTION_END);
    if (!a->daemon)
        return errno ? -errno : -EADDRINUSE;
    info = MHD_get_daemon_info(a->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info && info->port)
        a->port = info->port;
    return 0;
}

uint16_t tds_admin_port(const struct tds_admin *a) { return a->port; }

void tds_admin_set_ready(struct tds_admin *a, bool ready, const char *reason)
{
    pthread_mutex_lock(&a->lock);
    snprintf(a->reason, sizeof(a->reason), "%s", reason ? reason : (ready ? "" : "not ready"));
    pthread_mutex_unlock(&a->lock);
    atomic_store(&a->ready, ready);
}

void tds_admin_set_failed(struct tds_admin *a, const char *reason)
{
    pthread_mutex_lock(&a->lock);
    snprintf(a->failure, sizeof(a->failure), "%s", reason ? reason : "failed");
    pthread_mutex_unlock(&a->lock);
    atomic_store(&a->failed, true);
}

void tds_admin_set_status_cb(struct tds_admin *a, tds_admin_status_cb cb, void *ud)
{
    pthread_mutex_lock(&a->lock);
    a->status_cb = cb;
    a->status_ud = ud;
    pthread_mutex_unlock(&a->lock);
}

void tds_admin_set_stall_ms(struct tds_admin *a, int64_t ms)
{
    atomic_store(&a->stall_ms, ms > 0 ? ms : TDS_ADMIN_STALL_MS);
}
