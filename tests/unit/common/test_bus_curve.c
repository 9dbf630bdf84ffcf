/* test_bus_curve — CURVE on the bus: an encrypted PUSH/PULL pair over tcp
 * delivers; a client holding another server key, or no keys at all, delivers
 * nothing; malformed or mismatched keys are refused; no keys = off. */
#include "assert.h"
#include "bus.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static char srv_pub[41], srv_sec[41], other_pub[41], other_sec[41];

static void set_timeo(struct tds_bus_sock *s, int opt, int ms)
{
    T_INT(zmq_setsockopt(tds_bus_sock_raw(s), opt, &ms, sizeof(ms)), ==, 0);
}

/* A CURVE PULL server bound on 127.0.0.1 at an ephemeral port; ep gets the
 * endpoint to connect to. */
static void server(struct tds_bus **bus, struct tds_bus_sock **pull, char *ep, size_t n)
{
    T_INT(tds_bus_new(bus), ==, 0);
    T_INT(tds_bus_set_curve(*bus, srv_sec, srv_pub), ==, 0);
    T_INT(tds_bus_sock_new(*bus, ZMQ_PULL, &(struct tds_bus_opts){.linger_ms = -1}, pull), ==, 0);
    T_INT(tds_bus_bind(*pull, "tcp://127.0.0.1:*"), ==, 0);
    T_INT(zmq_getsockopt(tds_bus_sock_raw(*pull), ZMQ_LAST_ENDPOINT, ep, &n), ==, 0);
    set_timeo(*pull, ZMQ_RCVTIMEO, 3000);
}

/* Sends one frame from a client bus keyed with (sec, pub) — or unkeyed when
 * sec is NULL — and returns whether the server received it. */
static int delivers(const char *sec, const char *pub)
{
    struct tds_bus *sb = NULL, *cb = NULL;
    struct tds_bus_sock *pull = NULL, *push = NULL;
    char ep[128];
    char *buf = NULL;
    size_t len = 0;
    int r, got;

    server(&sb, &pull, ep, sizeof(ep));
    T_INT(tds_bus_new(&cb), ==, 0);
    if (sec)
        T_INT(tds_bus_set_curve(cb, sec, pub), ==, 0);
    T_INT(tds_bus_sock_new(cb, ZMQ_PUSH, &(struct tds_bus_opts){.linger_ms = -1}, &push), ==, 0);
    T_INT(tds_bus_connect(push, ep), ==, 0);
    /* ZMQ_IMMEDIATE: the send only goes once a handshake has completed; a
     * failed handshake leaves it waiting, so bound the wait. */
    set_timeo(push, ZMQ_SNDTIMEO, 1500);
    r = tds_bus_send(push, "secret rows", 11, 0);
    T_TRUE(r == 0 || r == -EAGAIN);
    r = tds_bus_recv(pull, &buf, &len, 100, 0, NULL);
    got = r == 0;
    if (got) {
        T_INT(len, ==, 11);
        T_STR(buf, "secret rows");
    } else {
        T_INT(r, ==, -EAGAIN);
    }
    free(buf);
    tds_bus_sock_free(push);
    tds_bus_sock_free(pull);
    tds_bus_free(cb);
    tds_bus_free(sb);
    return got;
}

static void test_delivers(void)
{
    /* Every stage holds the same server pair; clients make their own. */
    T_INT(delivers(srv_sec, srv_pub), ==, 1);
}

static void test_wrong_key(void)
{
    T_INT(delivers(other_sec, other_pub), ==, 0);
    T_INT(delivers(NULL, NULL), ==, 0);
}

static void test_bad_keys(void)
{
    struct tds_bus *bus = NULL;
    char bad[41];

    T_INT(tds_bus_new(&bus), ==, 0);
    T_INT(tds_bus_set_curve(bus, NULL, NULL), ==, 0);
    T_INT(tds_bus_set_curve(bus, "", ""), ==, 0);
    T_INT(tds_bus_set_curve(bus, srv_sec, ""), ==, TDS_E_INVALID);
    T_INT(tds_bus_set_curve(bus, NULL, srv_pub), ==, TDS_E_INVALID);
    T_INT(tds_bus_set_curve(bus, "short", srv_pub), ==, TDS_E_INVALID);
    memcpy(bad, srv_sec, sizeof(bad));
    bad[5] = '"'; /* not in the Z85 alphabet */
    T_INT(tds_bus_set_curve(bus, bad, srv_pub), ==, TDS_E_INVALID);
    /* A public key of another pair. */
    T_INT(tds_bus_set_curve(bus, srv_sec, other_pub), ==, TDS_E_INVALID);
    T_INT(tds_bus_set_curve(bus, srv_sec, srv_pub), ==, 0);
    tds_bus_free(bus);
}

int main(void)
{
    if (!zmq_has("curve")) {
        struct tds_bus *bus = NULL;

        /* libzmq without CURVE: the bus must say so instead of running in clear. */
        T_INT(zmq_curve_keypair(srv_pub, srv_sec), ==, -1);
        T_INT(tds_bus_new(&bus), ==, 0);
        T_INT(tds_bus_set_curve(bus, "0000000000000000000000000000000000000000",
                                "0000000000000000000000000000000000000000"), ==, -ENOTSUP);
        tds_bus_free(bus);
        return 0;
    }
    T_INT(zmq_curve_keypair(srv_pub, srv_sec), ==, 0);
    T_INT(zmq_curve_keypair(other_pub, other_sec), ==, 0);
    T_RUN(test_bad_keys);
    T_RUN(test_delivers);
    T_RUN(test_wrong_key);
    return 0;
}
