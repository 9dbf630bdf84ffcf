/* evtail — print pipeline events live (see evtail.h).
 *
 * Names in --connect are resolved to every address (common/bus.h) and
 * re-resolved every 5 s, so a Kubernetes headless Service shows the events
 * of every replica, including ones that start later. Stops on SIGINT or
 * SIGTERM, or after --count events.
 */
#include "evtail.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bus.h"
#include "util.h"

#define EVENT_MAX 65536
#define REFRESH_MS 5000

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: tds-writer events tail --connect tcp://HOST:PORT[,...] [--topic PREFIX] "
               "[--count N]\n"
               "Print tds.zoho.* events from the stages' TDS_EVENTS_BIND sockets, one JSON object "
               "per line.\nWith TDS_CURVE_SECRET_KEY and TDS_CURVE_PUBLIC_KEY set (the "
               "pipeline's keys), it connects over CURVE as the stages do.\n");
}

int tds_evtail_main(int argc, char **argv, FILE *out)
{
    const char *connect = NULL, *topic = "";
    int64_t count = 0, seen = 0, last_refresh;
    struct tds_bus *bus = NULL;
    struct tds_bus_sock *sub = NULL;
    struct sigaction sa;
    int rc = 1, i;

    if (argc < 1 || strcmp(argv[0], "tail") != 0) {
        if (argc >= 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
            usage(out);
            return 0;
        }
        fprintf(stderr, "tds-writer: unknown events command '%s' (expected tail)\n",
                argc >= 1 ? argv[0] : "");
        return 2;
    }
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(out);
            return 0;
        } else if (strcmp(argv[i], "--connect") == 0 && i + 1 < argc) {
            connect = argv[++i];
        } else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc) {
            topic = argv[++i];
        } else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
            if (tds_parse_i64(argv[++i], 1, INT64_MAX, &count) != 0) {
                fprintf(stderr, "tds-writer: invalid --count: '%s'\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "tds-writer: unexpected argument '%s' for events tail\n", argv[i]);
            return 2;
        }
    }
    if (!connect || !connect[0]) {
        fprintf(stderr, "tds-writer: events tail needs --connect tcp://HOST:PORT[,...]\n");
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (tds_bus_new(&bus) != 0) {
        fprintf(stderr, "tds-writer: could not create the subscriber socket\n");
        goto out;
    }
    /* The stages' event sockets are CURVE servers when the pipeline's keys
     * are set (TDS_CURVE_SECRET_KEY, TDS_CURVE_PUBLIC_KEY, as in the
     * writer's own environment): a plain subscriber's handshake fails
     * without a word, and the tail printed nothing for ever. */
    {
        /* the secret key may be a reference, as for the stages (file:, env:) */
        const char *spec = getenv("TDS_CURVE_SECRET_KEY"), *pk = getenv("TDS_CURVE_PUBLIC_KEY");
        char *sk = NULL;
        int r = 0;

        if (spec && spec[0] && (r = tds_secret_resolve(spec, &sk)) != 0) {
            fprintf(stderr, "tds-writer: could not read TDS_CURVE_SECRET_KEY (%s): %s\n", spec,
                    r == TDS_E_NOTFOUND ? "not found" : "unreadable or too large");
            rc = 2;
            goto out;
        }
        r = tds_bus_set_curve(bus, sk, pk);
        free(sk);
        if (r != 0) {
            fprintf(stderr, "tds-writer: invalid TDS_CURVE_SECRET_KEY or TDS_CURVE_PUBLIC_KEY: %s\n",
                    r < 0 ? "libzmq has no CURVE support"
                          : "both set, 40-character Z85, one keypair");
            rc = 2;
            goto out;
        }
    }
    if (tds_bus_sock_new(bus, ZMQ_SUB, NULL, &sub) != 0 ||
        tds_bus_subscribe(sub, topic) != 0) {
        fprintf(stderr, "tds-writer: could not create the subscriber socket\n");
        goto out;
    }
    if (tds_bus_connect(sub, connect) != 0) {
        fprintf(stderr, "tds-writer: invalid --connect: '%s'\n", connect);
        rc = 2;
        goto out;
    }
    last_refresh = tds_now_ms();
    while (!stop_flag && (count == 0 || seen < count)) {
        zmq_pollitem_t it = {tds_bus_sock_raw(sub), 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, 200);

        if (n < 0) {
            if (zmq_errno() == EINTR)
                continue;
            fprintf(stderr, "tds-writer: could not poll: %s\n", zmq_strerror(zmq_errno()));
            goto out;
        }
        if (tds_now_ms() - last_refresh >= REFRESH_MS) {
            tds_bus_refresh(sub);
            last_refresh = tds_now_ms();
        }
        while (n > 0 && (count == 0 || seen < count)) {
            char *name = NULL, *body = NULL;
            size_t nlen = 0, blen = 0;
            int more = 0, r = tds_bus_recv(sub, &name, &nlen, 256, ZMQ_DONTWAIT, &more);

            if (r == -EAGAIN)
                break;
            if (r == 0 && more)
                r = tds_bus_recv(sub, &body, &blen, EVENT_MAX, ZMQ_DONTWAIT, &more);
            /* drain any unexpected extra parts */
            while (more) {
                char *x = NULL;
                size_t xl = 0;

                if (tds_bus_recv(sub, &x, &xl, EVENT_MAX, ZMQ_DONTWAIT, &more) != 0)
                    more = 0;
                free(x);
            }
            if (r == 0 && body) {
                fprintf(out, "%.*s\n", (int)blen, body);
                fflush(out);
                seen++;
            }
            free(name);
            free(body);
        }
    }
    rc = 0;
out:
    tds_bus_sock_free(sub);
    tds_bus_free(bus);
    return rc;
}
