/* Unit tests for ingress/forward.c with a real journal, loop and ZeroMQ: an
 * entry goes to the processor once the group commit holding it begins, not
 * before, and also when that commit began before the entry reached forward
 * (the HTTP thread lost the race to the sync thread). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "assert.h"
#include "bus.h"
#include "entry.h"
#include "events.h"
#include "forward.h"
#include "journal.h"
#include "loop.h"
#include "metrics.h"
#include "util.h"

static char dir[256];

struct fx {
    struct tds_loop *loop;
    struct tds_forward *f;
    struct tds_journal *j;
    void *pull;
    uint64_t seq[2];
    struct tds_journal_loc loc[2];
    char *buf[2];
    size_t len[2];
    int step;
    int failures;
};

/* Frames waiting on the processor side, read without waiting. */
static int received(struct fx *x, char *id, size_t idlen)
{
    int n = 0;
    char frame[512];
    int r;

    while ((r = zmq_recv(x->pull, frame, sizeof(frame), ZMQ_DONTWAIT)) >= 0) {
        snprintf(id, idlen, "%.*s", r < (int)sizeof(frame) ? r : (int)sizeof(frame), frame);
        n++;
    }
    return n;
}

static void check(struct fx *x, bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "step %d: %s\n", x->step - 1, what);
        x->failures++;
    }
}

/* Each step runs 100 ms after the last, on the loop thread, as the
 * journal's sync thread and the HTTP threads would call forward. */
static void step(struct tds_loop *loop, void *ud)
{
    struct fx *x = ud;
    char got[512] = "";

    switch (x->step++) {
    case 0: /* entry 1 appended and handed over, its commit not begun */
        check(x, tds_forward_submit(x->f, x->seq[0], &x->loc[0], &x->buf[0], x->len[0]) == 0,
              "submit 1");
        break;
    case 1:
        check(x, received(x, got, sizeof(got)) == 0, "entry 1 sent before its commit began");
        tds_forward_syncing(x->f, x->seq[0]);
        break;
    case 2:
        check(x, received(x, got, sizeof(got)) == 1 && strstr(got, "payload one"),
              "entry 1 not sent once its commit began");
        /* entry 2's commit begins, and the loop wakes, before it is submitted */
        tds_forward_syncing(x->f, x->seq[1]);
        break;
    case 3:
        check(x, received(x, got, sizeof(got)) == 0, "nothing to send yet");
        check(x, tds_forward_submit(x->f, x->seq[1], &x->loc[1], &x->buf[1], x->len[1]) == 0,
              "submit 2");
        break;
    case 4:
        check(x, received(x, got, sizeof(got)) == 1 && strstr(got, "payload two"),
              "entry 2 waits although its commit began before it was submitted");
        tds_loop_stop(loop);
        break;
    }
}

static void test_sent_when_its_commit_begins(void)
{
    struct fx x = {0};
    struct tds_metrics *m = NULL;
    struct tds_bus *bus = NULL;
    struct tds_events *ev = NULL;
    struct tds_journal_opts jo = {.max_bytes = 64 << 20, .segment_bytes = 1 << 20,
                                  .retention_ms = 3600 * 1000};
    void *ctx = zmq_ctx_new();
    char ep[128], push_ep[160], cmd[300];
    size_t eplen = sizeof(ep);
    const char *bodies[2] = {"payload one", "payload two"};

    snprintf(dir, sizeof(dir), "/tmp/tds-forward-test-%d", (int)getpid());
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    T_INT(system(cmd), ==, 0);
    jo.dir = dir;
    x.pull = zmq_socket(ctx, ZMQ_PULL);
    T_INT(zmq_bind(x.pull, "tcp://127.0.0.1:*"), ==, 0);
    T_INT(zmq_getsockopt(x.pull, ZMQ_LAST_ENDPOINT, ep, &eplen), ==, 0);
    snprintf(push_ep, sizeof(push_ep), "%s", ep);

    T_INT(tds_loop_new(&x.loop), ==, 0);
    T_INT(tds_metrics_new(&m), ==, 0);
    T_INT(tds_bus_new(&bus), ==, 0);
    T_INT(tds_events_new(&ev, bus, "ingress", ""), ==, 0);
    T_INT(tds_journal_open(&x.j, &jo, NULL, NULL, NULL), ==, 0);
    {
        /* a 10 s ack timeout: the resend timer first fires after 1 s, past the
         * test's end, so only the wake-ups under test can send anything */
        struct tds_forward_opts fo = {.origin = "ingress.test", .processor_connect = push_ep,
                                      .fetcher_connect = push_ep,
                                      .ack_connect = "tcp://127.0.0.1:1",
                                      .ack_timeout_ms = 10000, .max_buffered_bytes = 1 << 20,
                                      .hwm = 100, .fetch_acks = true};

        T_INT(tds_forward_new(&x.f, &fo, x.loop, bus, x.j, m, ev), ==, 0);
    }
    for (int i = 0; i < 2; i++) {
        struct tds_entry e = {.dest = TDS_ENTRY_PROCESSOR, .org = "600", .org_len = 3,
                              .entity = "item", .entity_len = 4, .msgid = "ev-1",
                              .msgid_len = 4, .msg = bodies[i], .msg_len = strlen(bodies[i])};

        e.msgid = i ? "ev-2" : "ev-1";
        T_INT(tds_entry_encode(&e, &x.buf[i], &x.len[i]), ==, 0);
        T_INT(tds_journal_append(x.j, x.buf[i], x.len[i], tds_wall_ms(), &x.seq[i], &x.loc[i]),
              ==, 0);
    }
    T_TRUE(tds_loop_timer_add(x.loop, 100, 100, step, &x) > 0);
    T_INT(tds_loop_run(x.loop), ==, 0);
    T_INT(x.failures, ==, 0);
    T_INT(x.step, ==, 5);

    x.f = tds_forward_free(x.f);
    tds_journal_close(x.j);
    tds_events_free(ev);
    tds_bus_free(bus);
    tds_metrics_free(m);
    tds_loop_free(x.loop);
    free(x.buf[0]);
    free(x.buf[1]);
    zmq_close(x.pull);
    zmq_ctx_term(ctx);
    T_INT(system(cmd), ==, 0);
}

int main(void)
{
    T_RUN(test_sent_when_its_commit_begins);
    return 0;
}
