/* tds-processor — PULL events and pages, PUSH rows to the writer.
 *
 * Wires config, bus, loop, admin and metrics around worker.c. It holds at
 * most one encoded rows frame that the writer could not take yet: while that
 * frame is parked the input socket is not read, so a slow writer slows the
 * fetcher and ingress (their HWMs fill) instead of growing this process.
 * SIGTERM: stop reading, hand the parked frame to the socket, exit 0 (the
 * PUSH socket's linger flushes what is queued). Nothing is kept across
 * restarts: unacked sources are resent by their origin.
 *
 * TDS_WRITER_CONNECT is resolved again every TDS_BUS_REFRESH_MS: writer
 * replicas come and go (a headless Service has no address until one is
 * ready). While it resolves to no address at all, /readyz says so.
 */
#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "admin.h"
#include "bus.h"
#include "config.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "msg.h"
#include "stage.h"
#include "util.h"
#include "worker.h"

#define RECV_BATCH 64 /* frames per wake-up before other handlers get a turn */
#define DRAIN_MS 4000  /* SIGTERM: how long the parked rows message may wait for the writer */
#define LINGER_MS 4000 /* then how long the queue to the writer may take to flush */

struct settings {
    char *bind;
    char *writer;
    char *admin;
    char *log_level;
    char *instance;
    char *events;
    char *curve_secret;
    char *curve_public;
    int64_t hwm;
    int64_t health_stall_ms;
};

static const struct tds_config_entry config_table[] = {
    {"TDS_PROCESSOR_BIND", TDS_CFG_STR, "tcp://127.0.0.1:5557", 0, 0, 0,
     offsetof(struct settings, bind), "PULL endpoint(s) for event and page messages; loopback by default: the socket takes unauthenticated messages, so a deployment names its interface (tcp://*:PORT)"},
    {"TDS_WRITER_CONNECT", TDS_CFG_STR, "tcp://127.0.0.1:5558", 0, 0, 0,
     offsetof(struct settings, writer), "writer endpoint(s) to PUSH rows to (comma-separated)"},
    {"TDS_ADMIN_LISTEN", TDS_CFG_STR, "0.0.0.0:9103", 0, 0, 0,
     offsetof(struct settings, admin), "admin HTTP host:port (/healthz /readyz /metrics /status)"},
    {"TDS_HEALTH_STALL_MS", TDS_CFG_INT, "30000", 0, 2000, 3600000,
     offsetof(struct settings, health_stall_ms), "/healthz answers 503 when the event loop has not completed an iteration for this long "
     "(an idle loop completes one every second)"},
    {"TDS_LOG_LEVEL", TDS_CFG_STR, "info", 0, 0, 0, offsetof(struct settings, log_level),
     "debug, info, warn or error"},
    {"TDS_INSTANCE", TDS_CFG_STR, "", 0, 0, 0, offsetof(struct settings, instance),
     "instance name used in this stage's origin (default: hostname)"},
    {"TDS_EVENTS_BIND", TDS_CFG_STR, "", 0, 0, 0, offsetof(struct settings, events),
     "PUB endpoint for tds.zoho.* events (the processor publishes none; accepted for uniformity)"},
    {"TDS_PROCESSOR_HWM", TDS_CFG_INT, "100", 0, 1, 100000, offsetof(struct settings, hwm),
     "high-water mark (messages) of the input and output sockets"},
    {"TDS_CURVE_SECRET_KEY", TDS_CFG_STR, "", TDS_CFG_SECRET, 0, 0,
     offsetof(struct settings, curve_secret),
     "pipeline CURVE server secret key (Z85), with TDS_CURVE_PUBLIC_KEY turns on encryption of "
     "every ZeroMQ link; empty = off"},
    {"TDS_CURVE_PUBLIC_KEY", TDS_CFG_STR, "", 0, 0, 0, offsetof(struct settings, curve_public),
     "pipeline CURVE server public key (Z85) matching TDS_CURVE_SECRET_KEY; empty = off"},
};
#define N_CONFIG (sizeof(config_table) / sizeof(config_table[0]))

struct app {
    struct tds_loop *loop;
    struct tds_bus *bus;
    struct tds_bus_sock *in, *out;
    void *zin, *zout;
    struct tds_worker *worker;
    struct tds_metrics *metrics;
    struct tds_admin *admin;
    char *parked;          /* encoded rows frame waiting for the writer */
    size_t parked_len;
    bool draining;
    struct tds_log_limit send_log, recv_log, drop_log; /* one limit per cause */
    _Atomic uint64_t messages, records, rejects, dead_letters;
    _Atomic bool blocked;
};

static void publish_stats(struct app *a)
{
    struct tds_worker_stats st;
    tds_worker_stats(a->worker, &st);
    atomic_store(&a->messages, st.messages);
    atomic_store(&a->records, st.records);
    atomic_store(&a->rejects, st.rejects);
    atomic_store(&a->dead_letters, st.dead_letters);
}

static char *status_json(void *ud)
{
    struct app *a = ud;
    char *s = malloc(256);
    if (!s)
        return NULL;
    snprintf(s, 256,
             "{\"stage\":\"processor\",\"messages\":%llu,\"records\":%llu,\"rejects\":%llu,"
             "\"dead_letters\":%llu,\"waiting_for_writer\":%s}",
             (unsigned long long)atomic_load(&a->messages),
             (unsigned long long)atomic_load(&a->records),
             (unsigned long long)atomic_load(&a->rejects),
             (unsigned long long)atomic_load(&a->dead_letters),
             atomic_load(&a->blocked) ? "true" : "false");
    return s;
}

/* Send or park one encoded frame (takes ownership of buf). */
static void deliver(struct app *a, char *buf, size_t len)
{
    int rc = tds_bus_send(a->out, buf, len, ZMQ_DONTWAIT);

    if (rc == -EAGAIN) {
        /* Writer's queue is full: stop reading until this frame goes. */
        a->parked = buf;
        a->parked_len = len;
        atomic_store(&a->blocked, true);
        tds_loop_set_events(a->loop, a->zin, -1, 0);
        tds_loop_set_events(a->loop, a->zout, -1, ZMQ_POLLOUT);
        return;
    }
    if (rc < 0)
        tds_log_limited(&a->send_log, TDS_LOG_ERROR, NULL,
                        "could not send rows to the writer: %s, dropping (the source resends)",
                        zmq_strerror(-rc));
    free(buf);
}

static void on_out(struct tds_loop *loop, short revents, void *ud)
{
    struct app *a = ud;
    (void)revents;

    if (!a->parked) {
        tds_loop_set_events(loop, a->zout, -1, 0);
        return;
    }
    int rc = tds_bus_send(a->out, a->parked, a->parked_len, ZMQ_DONTWAIT);
    if (rc == -EAGAIN)
        return;
    if (rc < 0)
        tds_log_limited(&a->send_log, TDS_LOG_ERROR, NULL,
                        "could not send rows to the writer: %s, dropping (the source resends)",
                        zmq_strerror(-rc));
    free(a->parked);
    a->parked = NULL;
    atomic_store(&a->blocked, false);
    tds_loop_set_events(loop, a->zout, -1, 0);
    if (a->draining)
        tds_loop_stop(loop);
    else
        tds_loop_set_events(loop, a->zin, -1, ZMQ_POLLIN);
}

static void on_in(struct tds_loop *loop, short revents, void *ud)
{
    struct app *a = ud;
    (void)revents;

    for (int i = 0; i < RECV_BATCH && !a->parked && !a->draining; i++) {
        char *frame = NULL, *out = NULL;
        size_t len = 0, out_len = 0;
        int more = 0;
        int rc = tds_bus_recv(a->in, &frame, &len, TDS_MSG_MAX_FRAME, ZMQ_DONTWAIT, &more);

        if (rc == -EAGAIN) {
            tds_loop_zsock_drained(loop, a->zin);
            break;
        }
        if (rc < 0) {
            tds_log_limited(&a->recv_log, TDS_LOG_ERROR, NULL, "could not receive: %s",
                            zmq_strerror(-rc));
            break;
        }
        /* Our peers send one frame per message: the rest of a longer one,
         * oversized parts included, goes with its first frame's dead letter
         * instead of passing for messages of their own. */
        if (more)
            tds_bus_skip_rest(a->in);
        if (rc == TDS_E_TOO_LARGE) {
            rc = tds_worker_dead_letter(a->worker, "frame over the size limit", NULL, len, &out,
                                        &out_len);
        } else if (more) {
            rc = tds_worker_dead_letter(a->worker, "multi-frame message", frame, len, &out,
                                        &out_len);
        } else {
            rc = tds_worker_handle(a->worker, frame, len, &out, &out_len);
        }
        free(frame);
        if (rc < 0) {
            tds_log_limited(&a->drop_log, TDS_LOG_ERROR, NULL,
                            "could not transform message: %s, dropping (the source resends)",
                            strerror(-rc));
            free(out);
            continue;
        }
        if (out)
            deliver(a, out, out_len);
    }
    publish_stats(a);
}

static void on_refresh(struct tds_loop *loop, void *ud)
{
    struct app *a = ud;
    (void)loop;

    if (a->draining)
        return;
    if (tds_bus_refresh(a->out) > 0)
        tds_admin_set_ready(a->admin, true, NULL);
    else
        tds_admin_set_ready(a->admin, false, "no writer to send rows to (TDS_WRITER_CONNECT "
                                             "resolves to no address)");
}

static void on_drain(struct tds_loop *loop, void *ud)
{
    struct app *a = ud;

    a->draining = true;
    tds_loop_set_events(loop, a->zin, -1, 0);
    tds_info("stopping: no longer reading input%s",
             a->parked ? ", handing the last rows to the writer" : "");
    if (!a->parked)
        tds_loop_stop(loop);
}

static const struct tds_stage stage = {
    .name = "processor",
    .usage = "usage: tds-processor [--help] [--version] [--print-config]\n"
             "\n"
             "Receives event and page messages (PULL), validates and transforms each Zoho\n"
             "record into rows for the zoho.* tables, and sends one rows message per input\n"
             "message to the writer (PUSH). Stateless: run as many replicas as needed.\n"
             "\n",
    .table = config_table,
    .n = N_CONFIG,
};

int main(int argc, char **argv)
{
    struct tds_stage_cmdline cl;
    struct settings cfg;
    struct app a;
    char origin[320], host[256];
    int rc, status = 1;
    enum tds_log_level level;

    memset(&cfg, 0, sizeof(cfg));
    memset(&a, 0, sizeof(a));
    /* A page's rows message is about a megabyte: keep freed buffers in the
     * heap for the next one instead of mmap/munmap and page faults on every
     * message (measured: 17k → 28k items/s in tests/unit/processor's bench). */
    mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    if ((rc = tds_stage_args(&stage, argc, argv, 0, &cl)) != TDS_STAGE_CONTINUE)
        return rc;
    if (tds_stage_config(&stage, &cfg, &level) != 0)
        return 2;
    if (cl.print_config) {
        tds_config_print(config_table, N_CONFIG, &cfg, stdout);
        tds_config_free(config_table, N_CONFIG, &cfg);
        return 0;
    }
    {
        char h[256];
        uint16_t port;
        if (tds_parse_hostport(cfg.admin, h, sizeof(h), &port) != 0) {
            fprintf(stderr, "tds-processor: invalid TDS_ADMIN_LISTEN: '%s'\n", cfg.admin);
            tds_config_free(config_table, N_CONFIG, &cfg);
            return 2;
        }
    }
    tds_stage_instance(cfg.instance, host, sizeof(host));
    snprintf(origin, sizeof(origin), "processor.%s", host);
    a.send_log.interval_ms = a.recv_log.interval_ms = a.drop_log.interval_ms = 10000;

    /* SIGTERM: up to DRAIN_MS for the parked rows message, then up to
     * LINGER_MS for the queue to the writer to flush; together under the
     * 10 s a stage has to exit (whatever is left, its source resends). */
    struct tds_bus_opts bopts = {.hwm = (int)cfg.hwm, .linger_ms = LINGER_MS, .reconnect_ms = 100};
    if ((rc = tds_loop_new(&a.loop)) < 0 || (rc = tds_metrics_new(&a.metrics)) < 0 ||
        (rc = tds_bus_new(&a.bus)) < 0 ||
        (rc = tds_bus_sock_new(a.bus, ZMQ_PULL, &bopts, &a.in)) < 0 ||
        (rc = tds_bus_sock_new(a.bus, ZMQ_PUSH, &bopts, &a.out)) < 0 ||
        (rc = tds_worker_new(&a.worker, a.metrics, origin)) < 0) {
        tds_error("could not start: %s", strerror(-rc));
        goto out;
    }
    if ((rc = tds_bus_set_curve(a.bus, cfg.curve_secret, cfg.curve_public)) != 0) {
        if (rc > 0)
            fprintf(stderr, "tds-processor: invalid %s (TDS_CURVE_SECRET_KEY and TDS_CURVE_PUBLIC_KEY: "
                    "both set, 40-character Z85, one keypair)\n",
                    cfg.curve_secret && strlen(cfg.curve_secret) == 40 ? "TDS_CURVE_PUBLIC_KEY"
                                                                       : "TDS_CURVE_SECRET_KEY");
        else
            fprintf(stderr, "tds-processor: invalid TDS_CURVE_SECRET_KEY: libzmq has no CURVE support\n");
        status = 2;
        goto out;
    }
    if ((rc = tds_bus_bind(a.in, cfg.bind)) < 0) {
        tds_error("could not bind TDS_PROCESSOR_BIND '%s': %s", cfg.bind, zmq_strerror(-rc));
        goto out;
    }
    if ((rc = tds_bus_connect(a.out, cfg.writer)) < 0) {
        tds_error("could not connect to TDS_WRITER_CONNECT '%s': %s", cfg.writer,
                  zmq_strerror(-rc));
        goto out;
    }
    a.zin = tds_bus_sock_raw(a.in);
    a.zout = tds_bus_sock_raw(a.out);
    if ((rc = tds_loop_add_zsock(a.loop, a.zin, ZMQ_POLLIN, on_in, &a)) < 0 ||
        (rc = tds_loop_add_zsock(a.loop, a.zout, 0, on_out, &a)) < 0) {
        tds_error("could not start: %s", strerror(-rc));
        goto out;
    }
    tds_loop_on_drain(a.loop, on_drain, &a);
    tds_loop_set_drain_deadline(a.loop, DRAIN_MS);
    if ((rc = tds_admin_new(&a.admin, cfg.admin, a.metrics, a.loop)) < 0 ||
        (tds_admin_set_status_cb(a.admin, status_json, &a), (rc = tds_admin_start(a.admin)) < 0)) {
        tds_error("could not start the admin server on '%s': %s", cfg.admin,
                  rc < 0 ? strerror(-rc) : "error");
        goto out;
    }
    tds_admin_set_stall_ms(a.admin, cfg.health_stall_ms);
    if (tds_loop_timer_add(a.loop, 0, TDS_BUS_REFRESH_MS, on_refresh, &a) < 0) {
        tds_error("could not start: timer");
        goto out;
    }
    tds_info("started: pulling on %s, pushing rows to %s, origin %s", cfg.bind, cfg.writer,
             origin);
    rc = tds_loop_run(a.loop);
    if (rc < 0) {
        tds_error("event loop failed: %s", strerror(-rc));
        goto out;
    }
    if (a.parked)
        tds_warn("stopped with one rows message not handed to the writer (its source resends it)");
    tds_info("stopped");
    status = 0;
out:
    if (a.admin)
        tds_admin_set_ready(a.admin, false, "stopping");
    a.admin = tds_admin_free(a.admin);
    free(a.parked);
    a.worker = tds_worker_free(a.worker);
    a.in = tds_bus_sock_free(a.in);
    a.out = tds_bus_sock_free(a.out);
    a.bus = tds_bus_free(a.bus);
    a.loop = tds_loop_free(a.loop);
    a.metrics = tds_metrics_free(a.metrics);
    tds_config_free(config_table, N_CONFIG, &cfg);
    return status;
}
