/* http — libcurl multi on the stage loop (the multi_socket API).
 *
 * curl tells us which sockets to watch (socket callback → loop fds) and
 * when to wake it (timer callback → one loop timer); the loop hands socket
 * readiness back through curl_multi_socket_action. Finished transfers are
 * collected right after each action and their callbacks run there, outside
 * any curl callback, so a callback may start new requests.
 */
#include "http.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zmq.h>

#include "loop.h"
#include "util.h"

struct tds_http_call {
    struct tds_http *h;
    CURL *easy;
    struct curl_slist *hdrs;
    char *form;
    struct tds_buf body;
    tds_http_cb cb;
    void *ud;
    int64_t rl_limit, rl_remaining, rl_reset_s, retry_after_s, date_s;
    char errbuf[CURL_ERROR_SIZE];
    struct tds_http_call *next, *prev;
};

struct sockctx {
    struct tds_http *h;
    curl_socket_t fd;
    bool added;
};

struct tds_http {
    struct tds_loop *loop;
    CURLM *multi;
    struct tds_http_cfg cfg;
    int64_t timer_id;
    struct tds_http_call *calls; /* running */
    size_t n_running;
};

static void check_done(struct tds_http *h);

static void call_free(struct tds_http_call *c)
{
    if (!c)
        return;
    if (c->easy)
        curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->hdrs);
    free(c->form);
    tds_buf_deinit(&c->body);
    free(c);
}

static void unlink_call(struct tds_http *h, struct tds_http_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        h->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    h->n_running--;
}

static void on_sock(struct tds_loop *loop, short revents, void *ud)
{
    (void)loop;
    struct sockctx *sc = ud;
    struct tds_http *h = sc->h;
    int flags = 0;
    if (revents & ZMQ_POLLIN)
        flags |= CURL_CSELECT_IN;
    if (revents & ZMQ_POLLOUT)
        flags |= CURL_CSELECT_OUT;
    if (revents & ZMQ_POLLERR)
        flags |= CURL_CSELECT_ERR;
    int running;
    /* sc may be freed inside this call (socket removed): do not touch it after. */
    curl_multi_socket_action(h->multi, sc->fd, flags, &running);
    check_done(h);
}

static int sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    struct tds_http *h = userp;
    struct sockctx *sc = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            if (sc->added)
                tds_loop_remove_fd(h->loop, sc->fd);
            curl_multi_assign(h->multi, s, NULL);
            free(sc);
        }
        return 0;
    }
    short ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= ZMQ_POLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= ZMQ_POLLOUT;
    if (!sc) {
        sc = calloc(1, sizeof(*sc));
        if (!sc)
            return -1;
        sc->h = h;
        sc->fd = s;
        if (tds_loop_add_fd(h->loop, s, ev, on_sock, sc) != 0) {
            free(sc);
            return -1;
        }
        sc->added = true;
        curl_multi_assign(h->multi, s, sc);
    } else {
        tds_loop_set_events(h->loop, NULL, s, ev);
    }
    return 0;
}

static void on_timer(struct tds_loop *loop, void *ud)
{
    (void)loop;
    struct tds_http *h = ud;
    h->timer_id = 0;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct tds_http *h = userp;
    if (h->timer_id > 0) {
        tds_loop_timer_cancel(h->loop, h->timer_id);
        h->timer_id = 0;
    }
    if (timeout_ms >= 0) {
        int64_t id = tds_loop_timer_add(h->loop, timeout_ms, 0, on_timer, h);
        if (id < 0)
            return -1;
        h->timer_id = id;
    }
    return 0;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct tds_http_call *c = ud;
    size_t n = size * nmemb;
    if (tds_buf_add(&c->body, ptr, n) != 0)
        return 0; /* over the limit or ENOMEM: curl fails the transfer */
    return n;
}

/* A header's value without the blanks around it, as a string in tmp;
 * -1 when empty or longer than tmp. */
static int header_value(const char *v, size_t n, char *tmp, size_t size)
{
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= size)
        return -1;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    return 0;
}

static int64_t header_int(const char *v, size_t n)
{
    char tmp[32];
    int64_t out;
    if (header_value(v, n, tmp, sizeof(tmp)) != 0 || tds_parse_i64(tmp, 0, INT64_MAX / 4096, &out) != 0)
        return -1;
    return out;
}

/* An HTTP date (RFC 9110 §5.6.7), as curl reads them; -1 when unreadable. */
static int64_t header_date(const char *v, size_t n)
{
    char tmp[64];
    if (header_value(v, n, tmp, sizeof(tmp)) != 0)
        return -1;
    time_t t = curl_getdate(tmp, NULL);
    return t > 0 ? (int64_t)t : -1;
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    struct tds_http_call *c = ud;
    size_t n = size * nitems;
    static const struct {
        const char *name;
        size_t off;
    } known[] = {
        {"x-rate-limit-limit:", offsetof(struct tds_http_call, rl_limit)},
        {"x-rate-limit-remaining:", offsetof(struct tds_http_call, rl_remaining)},
        {"x-rate-limit-reset:", offsetof(struct tds_http_call, rl_reset_s)},
        {"retry-after:", offsetof(struct tds_http_call, retry_after_s)},
    };
    for (size_t i = 0; i < TDS_ARRAY_SIZE(known); i++) {
        size_t kl = strlen(known[i].name);
        if (n > kl && strncasecmp(buf, known[i].name, kl) == 0) {
            int64_t *dst = (int64_t *)((char *)c + known[i].off);
            *dst = header_int(buf + kl, n - kl);
        }
    }
    if (n > 5 && strncasecmp(buf, "date:", 5) == 0)
        c->date_s = header_date(buf + 5, n - 5);
    return n;
}

int tds_http_new(struct tds_http **out, struct tds_loop *loop, const struct tds_http_cfg *cfg)
{
    struct tds_http *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->loop = loop;
    h->cfg.connect_timeout_ms = cfg && cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 5000;
    h->cfg.max_body = cfg && cfg->max_body > 0 ? cfg->max_body : 64u * 1024 * 1024;
    h->multi = curl_multi_init();
    if (!h->multi) {
        free(h);
        return -ENOMEM;
    }
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, 64L);
    *out = h;
    return 0;
}

struct tds_http *tds_http_free(struct tds_http *h)
{
    if (!h)
        return NULL;
    while (h->calls) {
        struct tds_http_call *c = h->calls;
        unlink_call(h, c);
        curl_multi_remove_handle(h->multi, c->easy);
        call_free(c);
    }
    if (h->timer_id > 0)
        tds_loop_timer_cancel(h->loop, h->timer_id);
    h->timer_id = 0;
    /* cleanup closes cached connections through the socket callback */
    curl_multi_cleanup(h->multi);
    free(h);
    return NULL;
}

int tds_http_request(struct tds_http *h, const char *url, const char *const *headers,
                     const char *form, int64_t timeout_ms, tds_http_cb cb, void *ud,
                     struct tds_http_call **call)
{
    struct tds_http_call *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->h = h;
    c->cb = cb;
    c->ud = ud;
    c->body.max = h->cfg.max_body;
    c->rl_limit = c->rl_remaining = c->rl_reset_s = c->retry_after_s = c->date_s = -1;
    c->easy = curl_easy_init();
    if (!c->easy)
        goto nomem;
    for (size_t i = 0; headers && headers[i]; i++) {
        struct curl_slist *nl = curl_slist_append(c->hdrs, headers[i]);
        if (!nl)
            goto nomem;
        c->hdrs = nl;
    }
    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)h->cfg.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "tds-fetcher/" TDS_VERSION);
    if (form) {
        c->form = strdup(form);
        if (!c->form)
            goto nomem;
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->form);
    }
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        call_free(c);
        return -EIO;
    }
    c->next = h->calls;
    if (h->calls)
        h->calls->prev = c;
    h->calls = c;
    h->n_running++;
    if (call)
        *call = c;
    return 0;
nomem:
    call_free(c);
    return -ENOMEM;
}

void tds_http_cancel(struct tds_http *h, struct tds_http_call *c)
{
    if (!c)
        return;
    unlink_call(h, c);
    curl_multi_remove_handle(h->multi, c->easy);
    call_free(c);
}

size_t tds_http_running(const struct tds_http *h) { return h->n_running; }

static void check_done(struct tds_http *h)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct tds_http_call *c = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        if (!c)
            continue;
        CURLcode res = m->data.result;
        struct tds_http_resp r;
        memset(&r, 0, sizeof(r));
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &r.status);
        curl_easy_getinfo(c->easy, CURLINFO_TOTAL_TIME, &r.seconds);
        r.transport_ok = res == CURLE_OK;
        r.no_connect = res == CURLE_COULDNT_CONNECT || res == CURLE_COULDNT_RESOLVE_HOST;
        if (!r.transport_ok) {
            const char *why = c->errbuf[0] ? c->errbuf : curl_easy_strerror(res);
            if (res == CURLE_WRITE_ERROR)
                why = "response body over the size limit";
            snprintf(r.error, sizeof(r.error), "%s", why);
        }
        /* an empty body still gets a valid pointer */
        if (tds_buf_add(&c->body, "", 1) == 0)
            c->body.len--;
        r.body = c->body.p ? c->body.p : "";
        r.len = c->body.len;
        r.rl_limit = c->rl_limit;
        r.rl_remaining = c->rl_remaining;
        r.rl_reset_s = c->rl_reset_s;
        r.retry_after_s = c->retry_after_s;
        r.date_s = c->date_s;
        unlink_call(h, c);
        curl_multi_remove_handle(h->multi, c->easy);
        if (c->cb)
            c->cb(&r, c->ud);
        call_free(c);
    }
}

char *tds_http_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    if (!e)
        return NULL;
    char *out = strdup(e);
    curl_free(e);
    return out;
}
