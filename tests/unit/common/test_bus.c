/* test_bus — bind/connect over inproc and tcp, frame limits (ours and
 * libzmq's), name resolution of connect lists, refresh (with a slow
 * resolver), HWM with DONTWAIT, and acks as [origin][map]. */
#include "assert.h"
#include "bus.h"
#include "msg.h"
#include "util.h"

#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <zmq.h>

/* getaddrinfo() of this program: a name under ".slow-test" answers after
 * slow_ms with 127.0.0.1, and 127.0.0.2 too when slow_two is set, as a
 * resolver in an outage answers late. Other names go to the C library. */
static atomic_int slow_ms, slow_two;

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    gai_fn real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    size_t n = node ? strlen(node) : 0;
    struct addrinfo h = hints ? *hints : (struct addrinfo){.ai_family = AF_UNSPEC};
    struct addrinfo *second = NULL, *last;
    int r;

    if (!real)
        return EAI_SYSTEM;
    if (n <= 10 || strcasecmp(node + n - 10, ".slow-test") != 0)
        return real(node, service, hints, res);
    if (atomic_load(&slow_ms) > 0)
        nanosleep(&(struct timespec){.tv_sec = atomic_load(&slow_ms) / 1000,
                                     .tv_nsec = (atomic_load(&slow_ms) % 1000) * 1000000L},
                  NULL);
    h.ai_flags |= AI_NUMERICHOST;
    if ((r = real("127.0.0.1", service, &h, res)) != 0 || !atomic_load(&slow_two))
        return r;
    if (real("127.0.0.2", service, &h, &second) == 0) {
        for (last = *res; last->ai_next; last = last->ai_next)
            ;
        last->ai_next = second; /* one freeaddrinfo() frees the chain (glibc) */
    }
    return 0;
}

static void set_rcvtimeo(struct tds_bus_sock *s, int ms)
{
    T_INT(zmq_setsockopt(tds_bus_sock_raw(s), ZMQ_RCVTIMEO, &ms, sizeof(ms)), ==, 0);
}

static void test_inproc(void)
{
    struct tds_bus *bus = NULL;
    struct tds_bus_sock *pull = NULL, *push = NULL;
    char *buf = NULL;
    size_t len = 0;
    int more = -1;

    T_INT(tds_bus_new(&bus), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PULL, NULL, &pull), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PUSH, &(struct tds_bus_opts){.hwm = 10}, &push), ==, 0);
    T_TRUE(tds_bus_sock_raw(pull) != NULL);
    T_INT(tds_bus_bind(pull, "inproc://bus-a, inproc://bus-b"), ==, 0);
    T_INT(tds_bus_connect(push, "inproc://bus-a"), ==, 0);
    T_INT(tds_bus_peer_count(push), ==, 1);
    set_rcvtimeo(pull, 2000);

    T_INT(tds_bus_send(push, "hello", 5, ZMQ_SNDMORE), ==, 0);
    T_INT(tds_bus_send(push, "world!", 6, 0), ==, 0);
    T_INT(tds_bus_recv(pull, &buf, &len, 100, 0, &more), ==, 0);
    T_INT(len, ==, 5);
    T_STR(buf, "hello");
    T_INT(more, ==, 1);
    free(buf);
    T_INT(tds_bus_recv(pull, &buf, &len, 100, 0, &more), ==, 0);
    T_STR(buf, "world!");
    T_INT(more, ==, 0);
    free(buf);

    /* Over the limit: reported, discarded, and the next frame still arrives. */
    T_INT(tds_bus_send(push, "0123456789", 10, 0), ==, 0);
    T_INT(tds_bus_send(push, "ok", 2, 0), ==, 0);
    T_INT(tds_bus_recv(pull, &buf, &len, 9, 0, &more), ==, TDS_E_TOO_LARGE);
    T_NULL(buf);
    T_INT(len, ==, 10);
    T_INT(tds_bus_recv(pull, &buf, &len, 9, 0, NULL), ==, 0);
    T_STR(buf, "ok");
    free(buf);
    /* Exactly at the limit is fine; empty frames too. */
    T_INT(tds_bus_send(push, "123456789", 9, 0), ==, 0);
    T_INT(tds_bus_recv(pull, &buf, &len, 9, 0, NULL), ==, 0);
    T_INT(len, ==, 9);
    free(buf);
    T_INT(tds_bus_send(push, "", 0, 0), ==, 0);
    T_INT(tds_bus_recv(pull, &buf, &len, 9, 0, NULL), ==, 0);
    T_INT(len, ==, 0);
    T_STR(buf, "");
    free(buf);

    /* Nothing ready with DONTWAIT. */
    T_INT(tds_bus_recv(pull, &buf, &len, 9, ZMQ_DONTWAIT, NULL), ==, -EAGAIN);

    /* A connect list with two entries connects both (and a repeat once). */
    struct tds_bus_sock *push2 = NULL;
    T_INT(tds_bus_sock_new(bus, ZMQ_PUSH, NULL, &push2), ==, 0);
    T_INT(tds_bus_connect(push2, "inproc://bus-a,inproc://bus-b, inproc://bus-a"), ==, 0);
    T_INT(tds_bus_peer_count(push2), ==, 2);
    T_INT(tds_bus_refresh(push2), ==, 2);
    T_INT(tds_bus_connect(push2, " , "), ==, -EINVAL);

    /* Errors come back as -errno. */
    T_INT(tds_bus_bind(pull, "inproc://bus-a"), ==, -EADDRINUSE);
    T_INT(tds_bus_bind(pull, "bogus://x"), <, 0);
    T_INT(tds_bus_subscribe(pull, "x"), ==, -EINVAL);

    /* refresh_all walks the bus's sockets: one freed in the middle of its
     * list has left it (ASan would see the freed one touched). */
    struct tds_bus_sock *push3 = NULL;
    T_INT(tds_bus_sock_new(bus, ZMQ_PUSH, NULL, &push3), ==, 0);
    T_INT(tds_bus_connect(push3, "inproc://bus-b"), ==, 0);
    tds_bus_sock_free(push2);
    tds_bus_refresh_all(bus);
    T_INT(tds_bus_peer_count(push3), ==, 1);
    tds_bus_sock_free(push3);
    tds_bus_refresh_all(bus);
    tds_bus_sock_free(push);
    tds_bus_sock_free(pull);
    T_NULL(tds_bus_free(bus));
}

static void test_tcp_names(void)
{
    struct tds_bus *bus = NULL;
    struct tds_bus_sock *pull = NULL, *push = NULL, *lost = NULL;
    char last[256], ep[300];
    size_t lastlen = sizeof(last);
    char *buf = NULL;
    size_t len = 0;
    const char *port;

    T_INT(tds_bus_new(&bus), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PULL, NULL, &pull), ==, 0);
    T_INT(tds_bus_bind(pull, "tcp://127.0.0.1:*"), ==, 0);
    T_INT(zmq_getsockopt(tds_bus_sock_raw(pull), ZMQ_LAST_ENDPOINT, last, &lastlen), ==, 0);
    port = strrchr(last, ':') + 1;
    snprintf(ep, sizeof(ep), "tcp://localhost:%s", port);

    T_INT(tds_bus_sock_new(bus, ZMQ_PUSH, NULL, &push), ==, 0);
    T_INT(tds_bus_connect(push, ep), ==, 0);
    /* localhost resolves to 127.0.0.1 (and ::1 where /etc/hosts says so). */
    T_INT(tds_bus_peer_count(push), >=, 1);
    T_INT(tds_bus_refresh(push), ==, (int)tds_bus_peer_count(push));
    set_rcvtimeo(pull, 5000);
    T_INT(tds_bus_send(push, "over tcp", 8, 0), ==, 0);
    T_INT(tds_bus_recv(pull, &buf, &len, 64, 0, NULL), ==, 0);
    T_STR(buf, "over tcp");
    free(buf);

    /* An IP literal passes through; an unknown name is not an error and is
     * retried on refresh. */
    T_INT(tds_bus_sock_new(bus, ZMQ_PUSH, NULL, &lost), ==, 0);
    T_INT(tds_bus_connect(lost, "tcp://no-such-host.invalid:5555"), ==, 0);
    T_INT(tds_bus_peer_count(lost), ==, 0);
    T_INT(tds_bus_refresh(lost), ==, 0);
    T_INT(tds_bus_connect(lost, "tcp://127.0.0.1:1"), ==, 0);
    T_INT(tds_bus_peer_count(lost), ==, 1);
    /* Nobody listens there: with ZMQ_IMMEDIATE nothing is queued. */
    T_INT(tds_bus_send(lost, "x", 1, ZMQ_DONTWAIT), ==, -EAGAIN);

    tds_bus_sock_free(lost);
    tds_bus_sock_free(push);
    tds_bus_sock_free(pull);
    tds_bus_free(bus);
}

static void test_hwm(void)
{
    struct tds_bus *bus = NULL;
    struct tds_bus_sock *pull = NULL, *push = NULL;
    int sent = 0;

    T_INT(tds_bus_new(&bus), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PULL, &(struct tds_bus_opts){.hwm = 5}, &pull), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PUSH, &(struct tds_bus_opts){.hwm = 5, .linger_ms = -1},
                           &push), ==, 0);
    T_INT(tds_bus_bind(pull, "inproc://hwm"), ==, 0);
    T_INT(tds_bus_connect(push, "inproc://hwm"), ==, 0);
    /* Nobody reads: the bounded queue fills and DONTWAIT says so. */
    for (int i = 0; i < 1000; i++) {
        int r = tds_bus_send(push, "m", 1, ZMQ_DONTWAIT);

        if (r == -EAGAIN)
            break;
        T_INT(r, ==, 0);
        sent++;
    }
    T_INT(sent, >=, 5);
    T_INT(sent, <, 1000);
    tds_bus_sock_free(push);
    tds_bus_sock_free(pull);
    tds_bus_free(bus);
}

static void test_ack(void)
{
    struct tds_bus *bus = NULL;
    struct tds_bus_sock *pub = NULL, *sub = NULL;
    char *ids[] = {"ev-1", "pg-2"};
    struct tds_msg m = {.type = TDS_MSG_ACK, .id = "ack-1"};
    struct tds_msg got;
    char *buf = NULL;
    size_t len = 0;
    int more = 0, r = -1;

    m.u.ack.origin = "fetcher.pod-1";
    m.u.ack.ids = ids;
    m.u.ack.n_ids = 2;
    m.u.ack.rows_written = 7;

    T_INT(tds_bus_new(&bus), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PUB, NULL, &pub), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_SUB, NULL, &sub), ==, 0);
    T_INT(tds_bus_bind(pub, "inproc://acks"), ==, 0);
    T_INT(tds_bus_connect(sub, "inproc://acks"), ==, 0);
    T_INT(tds_bus_subscribe(sub, "fetcher.pod-1"), ==, 0);
    set_rcvtimeo(sub, 50);
    /* The subscription reaches the PUB asynchronously: resend until it lands. */
    for (int i = 0; i < 100 && r != 0; i++) {
        T_INT(tds_bus_send_msg(pub, &m, 0), ==, 0);
        r = tds_bus_recv(sub, &buf, &len, 1024, 0, &more);
    }
    T_INT(r, ==, 0);
    T_STR(buf, "fetcher.pod-1");
    T_INT(more, ==, 1);
    free(buf);
    T_INT(tds_bus_recv(sub, &buf, &len, 1024, 0, &more), ==, 0);
    T_INT(more, ==, 0);
    T_INT(tds_msg_decode(buf, len, &got), ==, 0);
    T_INT(got.type, ==, TDS_MSG_ACK);
    T_STR(got.u.ack.origin, "fetcher.pod-1");
    T_INT(got.u.ack.n_ids, ==, 2);
    T_STR(got.u.ack.ids[1], "pg-2");
    T_INT(got.u.ack.rows_written, ==, 7);
    tds_msg_clear(&got);
    free(buf);

    /* A non-ack message is one frame; encoding errors come back unchanged. */
    struct tds_msg bad = {.type = TDS_MSG_ACK, .id = "a"};
    T_INT(tds_bus_send_msg(pub, &bad, 0), ==, TDS_MSG_E_MALFORMED);

    tds_bus_sock_free(sub);
    tds_bus_sock_free(pub);
    tds_bus_free(bus);
}

static void test_send_msg_single_frame(void)
{
    struct tds_bus *bus = NULL;
    struct tds_bus_sock *pull = NULL, *push = NULL;
    struct tds_msg m = {.type = TDS_MSG_FETCH, .id = "f-1"};
    struct tds_msg got;
    char *buf = NULL;
    size_t len = 0;
    int more = 1;

    m.u.fetch.org = "600";
    m.u.fetch.entity = "items";
    m.u.fetch.zoho_id = "42";
    m.u.fetch.origin = "ingress.a";
    T_INT(tds_bus_new(&bus), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PULL, NULL, &pull), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PUSH, NULL, &push), ==, 0);
    T_INT(tds_bus_bind(pull, "inproc://fetch"), ==, 0);
    T_INT(tds_bus_connect(push, "inproc://fetch"), ==, 0);
    set_rcvtimeo(pull, 2000);
    T_INT(tds_bus_send_msg(push, &m, 0), ==, 0);
    T_INT(tds_bus_recv(pull, &buf, &len, 1 << 20, 0, &more), ==, 0);
    T_INT(more, ==, 0);
    T_INT(tds_msg_decode(buf, len, &got), ==, 0);
    T_INT(got.type, ==, TDS_MSG_FETCH);
    T_STR(got.id, "f-1");
    T_STR(got.u.fetch.zoho_id, "42");
    tds_msg_clear(&got);
    free(buf);
    tds_bus_sock_free(push);
    tds_bus_sock_free(pull);
    tds_bus_free(bus);
}

/* The rest of a multi-part message is skipped, oversized parts included,
 * and the next message is read whole. */
static void test_skip_rest(void)
{
    struct tds_bus *bus = NULL;
    struct tds_bus_sock *pull = NULL, *push = NULL;
    char *buf = NULL;
    size_t len = 0;
    int more = 0;

    T_INT(tds_bus_new(&bus), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PULL, NULL, &pull), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PUSH, NULL, &push), ==, 0);
    T_INT(tds_bus_bind(pull, "inproc://bus-skip"), ==, 0);
    T_INT(tds_bus_connect(push, "inproc://bus-skip"), ==, 0);
    set_rcvtimeo(pull, 2000);
    T_INT(tds_bus_send(push, "far too long", 12, ZMQ_SNDMORE), ==, 0);
    T_INT(tds_bus_send(push, "also far too long", 17, ZMQ_SNDMORE), ==, 0);
    T_INT(tds_bus_send(push, "x", 1, 0), ==, 0);
    T_INT(tds_bus_send(push, "next", 4, 0), ==, 0);

    T_INT(tds_bus_recv(pull, &buf, &len, 8, 0, &more), ==, TDS_E_TOO_LARGE);
    T_INT(more, ==, 1);
    T_INT(tds_bus_skip_rest(pull), ==, 2);
    T_INT(tds_bus_skip_rest(pull), ==, 0); /* nothing left of that message */
    T_INT(tds_bus_recv(pull, &buf, &len, 8, 0, &more), ==, 0);
    T_STR(buf, "next");
    T_INT(more, ==, 0);
    free(buf);
    T_INT(tds_bus_skip_rest(pull), ==, 0);

    tds_bus_sock_free(push);
    tds_bus_sock_free(pull);
    T_NULL(tds_bus_free(bus));
}

/* A frame over the limit never reaches a PULL socket over tcp: libzmq drops
 * the peer before buffering it, and the next connection carries on. */
static void test_max_frame(void)
{
    struct tds_bus *bus = NULL;
    struct tds_bus_sock *pull = NULL, *sub = NULL, *push = NULL;
    char last[256];
    size_t lastlen = sizeof(last), optlen;
    int64_t max = 0;
    void *ctx, *raw;
    char *big, *buf = NULL;
    size_t big_len = (size_t)TDS_MSG_MAX_FRAME + 8192, len = 0;
    int rc = -EAGAIN, linger = 0;

    T_INT(tds_bus_new(&bus), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PULL, NULL, &pull), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_SUB, NULL, &sub), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PUSH, NULL, &push), ==, 0);
    optlen = sizeof(max);
    T_INT(zmq_getsockopt(tds_bus_sock_raw(sub), ZMQ_MAXMSGSIZE, &max, &optlen), ==, 0);
    T_INT(max, >=, (int64_t)TDS_MSG_MAX_FRAME);
    T_INT(max, <=, (int64_t)TDS_MSG_MAX_FRAME + 65536);
    optlen = sizeof(max);
    T_INT(zmq_getsockopt(tds_bus_sock_raw(push), ZMQ_MAXMSGSIZE, &max, &optlen), ==, 0);
    T_INT(max, ==, -1); /* a sending socket receives nothing to limit */

    T_INT(tds_bus_bind(pull, "tcp://127.0.0.1:*"), ==, 0);
    T_INT(zmq_getsockopt(tds_bus_sock_raw(pull), ZMQ_LAST_ENDPOINT, last, &lastlen), ==, 0);
    ctx = zmq_ctx_new();
    raw = zmq_socket(ctx, ZMQ_PUSH);
    T_INT(zmq_setsockopt(raw, ZMQ_LINGER, &linger, sizeof(linger)), ==, 0);
    T_INT(zmq_connect(raw, last), ==, 0);
    big = calloc(1, big_len);
    T_TRUE(big != NULL);
    T_INT(zmq_send(raw, big, big_len, 0), ==, (int)big_len);
    free(big);
    /* "after" goes once the peer is connected again; the big frame never comes */
    int64_t deadline = tds_now_ms() + 10000;
    while (rc == -EAGAIN && tds_now_ms() < deadline) {
        zmq_send(raw, "after", 5, ZMQ_DONTWAIT);
        zmq_pollitem_t pi = {tds_bus_sock_raw(pull), 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&pi, 1, 50) > 0)
            rc = tds_bus_recv(pull, &buf, &len, TDS_MSG_MAX_FRAME, ZMQ_DONTWAIT, NULL);
    }
    T_INT(rc, ==, 0);
    T_STR(buf, "after");
    free(buf);

    zmq_close(raw);
    zmq_ctx_term(ctx);
    tds_bus_sock_free(push);
    tds_bus_sock_free(sub);
    tds_bus_sock_free(pull);
    T_NULL(tds_bus_free(bus));
}

/* A refresh never waits for the resolver: the lookup runs on the bus's
 * thread, and a later refresh applies what it found. */
static void test_slow_resolver(void)
{
    struct tds_bus *bus = NULL;
    struct tds_bus_sock *push = NULL, *other = NULL;
    int64_t longest = 0, t_end;
    int count = 0;

    atomic_store(&slow_ms, 0);
    atomic_store(&slow_two, 0);
    T_INT(tds_bus_new(&bus), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PUSH, NULL, &push), ==, 0);
    T_INT(tds_bus_connect(push, "tcp://writer.slow-test:5999"), ==, 0);
    T_INT(tds_bus_peer_count(push), ==, 1);
    /* The resolver now takes 1.5 s, and its answer gains an address. */
    atomic_store(&slow_ms, 1500);
    atomic_store(&slow_two, 1);
    t_end = tds_now_ms() + 8000;
    while (count != 2 && tds_now_ms() < t_end) {
        int64_t t0 = tds_now_ms(), took;

        count = tds_bus_refresh(push);
        took = tds_now_ms() - t0;
        if (took > longest)
            longest = took;
        T_TRUE(count == 1 || count == 2);
        nanosleep(&(struct timespec){.tv_nsec = 50 * 1000000L}, NULL);
    }
    T_INT(count, ==, 2);
    T_INT(longest, <, 300);
    /* A socket freed, and then the bus, while a lookup of its name runs:
     * the bus waits for that lookup, and nothing leaks (ASan). */
    T_INT(tds_bus_sock_new(bus, ZMQ_PUSH, NULL, &other), ==, 0);
    T_INT(tds_bus_connect(other, "tcp://other.slow-test:5998"), ==, 0);
    tds_bus_refresh_all(bus);
    tds_bus_sock_free(other);
    tds_bus_refresh_all(bus);
    tds_bus_sock_free(push);
    T_NULL(tds_bus_free(bus));

    /* A lookup that takes longer than a second (a DNS outage: timeouts,
     * attempts, a search list) is not waited for: a stage's exit is due
     * within 10 s of SIGTERM. Its thread frees the bus once it ends.
     * Before, the free waited out the whole lookup (3 s here). */
    atomic_store(&slow_ms, 0);
    bus = NULL;
    T_INT(tds_bus_new(&bus), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PUSH, NULL, &push), ==, 0);
    T_INT(tds_bus_connect(push, "tcp://late.slow-test:5997"), ==, 0);
    atomic_store(&slow_ms, 3000);
    tds_bus_refresh_all(bus); /* asks the thread for a lookup: 3 s */
    nanosleep(&(struct timespec){.tv_nsec = 100 * 1000000L}, NULL);
    tds_bus_sock_free(push);
    int64_t t0 = tds_now_ms();
    T_NULL(tds_bus_free(bus));
    int64_t took = tds_now_ms() - t0;
    T_INT(took, >=, 900);
    T_INT(took, <, 1500);
    /* the thread ends its lookup and frees what is left (ASan: no leak, no
     * use after free) */
    nanosleep(&(struct timespec){.tv_sec = 2, .tv_nsec = 500 * 1000000L}, NULL);

    /* The lookup ends while the context waits for a socket's linger (a
     * message queued for a peer that never reads): the bus is not touched
     * after it is handed to the thread. It was (the keys wiped after the
     * hand-over): a use after free, ASan's heap-use-after-free in
     * keys_wipe. */
    void *pctx = zmq_ctx_new(), *pull = pctx ? zmq_socket(pctx, ZMQ_PULL) : NULL;
    int one = 1, zero = 0;
    char ep[64], bound[64];
    size_t bl = sizeof(bound);
    T_TRUE(pull != NULL);
    T_INT(zmq_setsockopt(pull, ZMQ_RCVHWM, &one, sizeof(one)), ==, 0);
    T_INT(zmq_setsockopt(pull, ZMQ_LINGER, &zero, sizeof(zero)), ==, 0);
    T_INT(zmq_bind(pull, "tcp://127.0.0.1:*"), ==, 0);
    T_INT(zmq_getsockopt(pull, ZMQ_LAST_ENDPOINT, bound, &bl), ==, 0);
    snprintf(ep, sizeof(ep), "tcp://linger.slow-test:%s", strrchr(bound, ':') + 1);
    atomic_store(&slow_ms, 0);
    bus = NULL;
    T_INT(tds_bus_new(&bus), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_PUSH, &(struct tds_bus_opts){.hwm = 1, .linger_ms = 2500},
                           &push), ==, 0);
    T_INT(tds_bus_connect(push, ep), ==, 0);
    /* megabyte messages until the peer, which never reads, takes no more:
     * the last ones wait in the socket for its linger */
    char *big = calloc(1, 1 << 20);
    int sent = 0, r = 0;
    T_TRUE(big != NULL);
    t_end = tds_now_ms() + 5000;
    int64_t refused_since = 0;
    while (tds_now_ms() < t_end) {
        r = tds_bus_send(push, big, 1 << 20, ZMQ_DONTWAIT);
        if (r == 0) {
            sent++;
            refused_since = 0;
        } else {
            if (!refused_since)
                refused_since = tds_now_ms();
            if (sent > 0 && tds_now_ms() - refused_since > 300)
                break; /* full for good: the kernel's buffers too */
            nanosleep(&(struct timespec){.tv_nsec = 10 * 1000000L}, NULL);
        }
    }
    free(big);
    T_TRUE(sent > 0 && r == -EAGAIN);
    atomic_store(&slow_ms, 1800);
    tds_bus_refresh_all(bus); /* a lookup of 1.8 s: past the second waited */
    nanosleep(&(struct timespec){.tv_nsec = 100 * 1000000L}, NULL);
    tds_bus_sock_free(push);
    t0 = tds_now_ms();
    T_NULL(tds_bus_free(bus)); /* a second, then the rest of the linger */
    took = tds_now_ms() - t0;
    T_INT(took, >=, 2000);
    zmq_close(pull);
    zmq_ctx_term(pctx);
    nanosleep(&(struct timespec){.tv_nsec = 300 * 1000000L}, NULL);
    atomic_store(&slow_ms, 0);
    atomic_store(&slow_two, 0);
}

int main(void)
{
    T_RUN(test_inproc);
    T_RUN(test_tcp_names);
    T_RUN(test_slow_resolver);
    T_RUN(test_hwm);
    T_RUN(test_ack);
    T_RUN(test_send_msg_single_frame);
    T_RUN(test_max_frame);
    T_RUN(test_skip_rest);
    return 0;
}
