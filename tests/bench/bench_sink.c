/* bench_sink — stand-in for the processor and writer behind a benched ingress.
 *
 * PULLs messages (events and fetches), decodes each one as a stage does, and
 * PUBlishes an ack of every message id to its origin every 10 ms or once 500
 * are pending, so the ingress releases its journal as in production. In C so
 * that the stand-in takes little of the cores the ingress is measured on:
 * the Python sink it replaces took ~8 us of CPU a message, a fifth of a core
 * at 25,000 webhooks/s. A message that does not decode is counted, not acked.
 * On SIGTERM or SIGINT prints "bench_sink received N undecodable M acked K".
 *
 * Usage: bench_sink PULL_BIND ACK_BIND   (tcp://127.0.0.1:5557 tcp://127.0.0.1:5559)
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "msg.h"
#include "util.h"

#define FLUSH_MS 10
#define FLUSH_AT 500

/* The ids pending for one origin (an ingress instance: usually one). */
struct origin {
    char *name;
    char **ids;
    size_t n, cap;
};

struct pending {
    struct origin *o;
    size_t n_o;
    size_t total;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* Take id (owned) for origin; -1 on ENOMEM (id freed). */
static int add(struct pending *p, const char *origin, char *id)
{
    struct origin *o = NULL;

    for (size_t i = 0; i < p->n_o; i++)
        if (strcmp(p->o[i].name, origin) == 0)
            o = &p->o[i];
    if (!o) {
        struct origin *n = realloc(p->o, (p->n_o + 1) * sizeof(*n));

        if (!n)
            goto oom;
        p->o = n;
        o = &p->o[p->n_o];
        memset(o, 0, sizeof(*o));
        if (!(o->name = strdup(origin)))
            goto oom;
        p->n_o++;
    }
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 256;
        char **n = realloc(o->ids, cap * sizeof(*n));

        if (!n)
            goto oom;
        o->ids = n;
        o->cap = cap;
    }
    o->ids[o->n++] = id;
    p->total++;
    return 0;
oom:
    free(id);
    return -1;
}

/* Publish one ack per origin; returns the ids acked. */
static uint64_t flush(struct pending *p, void *pub)
{
    uint64_t acked = 0;

    for (size_t i = 0; i < p->n_o; i++) {
        struct origin *o = &p->o[i];
        struct tds_msg m;
        char *out = NULL;
        size_t len = 0;

        if (!o->n)
            continue;
        memset(&m, 0, sizeof(m));
        m.type = TDS_MSG_ACK;
        m.v = TDS_MSG_VERSION;
        m.id = tds_uid("ack");
        m.u.ack.origin = o->name;
        m.u.ack.ids = o->ids;
        m.u.ack.n_ids = o->n;
        m.u.ack.rows_written = (int64_t)o->n;
        if (m.id && tds_msg_encode(&m, &out, &len) == 0 &&
            zmq_send(pub, o->name, strlen(o->name), ZMQ_SNDMORE) >= 0 &&
            zmq_send(pub, out, len, 0) >= 0)
            acked += o->n;
        else
            fprintf(stderr, "bench_sink: could not publish an ack to %s: %s\n", o->name,
                    zmq_strerror(errno));
        free(out);
        free(m.id);
        for (size_t k = 0; k < o->n; k++)
            free(o->ids[k]);
        o->n = 0;
    }
    p->total = 0;
    return acked;
}

int main(int argc, char **argv)
{
    void *ctx, *pull, *pub;
    int hwm = 100000, rc = 0;
    uint64_t received = 0, bad = 0, acked = 0;
    struct pending p = {0};
    int64_t last = tds_now_ms();
    zmq_msg_t frame;

    if (argc != 3) {
        fprintf(stderr, "usage: bench_sink PULL_BIND ACK_BIND\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    ctx = zmq_ctx_new();
    pull = zmq_socket(ctx, ZMQ_PULL);
    pub = zmq_socket(ctx, ZMQ_PUB);
    zmq_setsockopt(pull, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    if (zmq_bind(pull, argv[1]) || zmq_bind(pub, argv[2])) {
        fprintf(stderr, "bench_sink: bind %s / %s: %s\n", argv[1], argv[2],
                zmq_strerror(errno));
        return 1;
    }
    zmq_msg_init(&frame);
    while (!stop) {
        zmq_pollitem_t it = {pull, 0, ZMQ_POLLIN, 0};
        int64_t now;

        if (zmq_poll(&it, 1, p.total ? FLUSH_MS : 100) < 0 && errno != EINTR) {
            fprintf(stderr, "bench_sink: poll: %s\n", zmq_strerror(errno));
            rc = 1;
            break;
        }
        for (int k = 0; k < 1000 && p.total < FLUSH_AT; k++) {
            struct tds_msg m;
            const char *origin = NULL;

            if (zmq_msg_recv(&frame, pull, ZMQ_DONTWAIT) < 0)
                break;
            received++;
            if (tds_msg_decode(zmq_msg_data(&frame), zmq_msg_size(&frame), &m) != 0) {
                bad++;
                continue;
            }
            if (m.type == TDS_MSG_EVENT)
                origin = m.u.event.origin;
            else if (m.type == TDS_MSG_FETCH)
                origin = m.u.fetch.origin;
            if (origin && m.id) {
                if (add(&p, origin, m.id) == 0)
                    m.id = NULL; /* owned by p now */
            } else {
                bad++;
            }
            tds_msg_clear(&m);
        }
        now = tds_now_ms();
        if (p.total && (now - last >= FLUSH_MS || p.total >= FLUSH_AT)) {
            acked += flush(&p, pub);
            last = now;
        }
    }
    acked += flush(&p, pub);
    printf("bench_sink received %" PRIu64 " undecodable %" PRIu64 " acked %" PRIu64 "\n",
           received, bad, acked);
    fflush(stdout);
    zmq_msg_close(&frame);
    for (size_t i = 0; i < p.n_o; i++) {
        free(p.o[i].name);
        free(p.o[i].ids);
    }
    free(p.o);
    zmq_setsockopt(pub, ZMQ_LINGER, &(int){0}, sizeof(int));
    zmq_setsockopt(pull, ZMQ_LINGER, &(int){0}, sizeof(int));
    zmq_close(pub);
    zmq_close(pull);
    zmq_ctx_term(ctx);
    return rc;
}
