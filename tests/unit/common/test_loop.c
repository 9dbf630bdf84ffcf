/* test_loop — timer order, once vs repeating, cancel, fd and ZeroMQ readiness,
 * a socket that stays ready with no new signal, one read to EAGAIN, a full
 * socket watched for POLLOUT, handler removal from a callback, the SIGTERM
 * drain state machine, and the heartbeat of a loop with nothing to do. */
#include "assert.h"
#include "loop.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_EVENTS 64

struct rec {
    char log[MAX_EVENTS];
    int n;
    int count;
    int64_t other_id;
    struct tds_loop *loop;
};

static void note(struct rec *r, char c)
{
    if (r->n < MAX_EVENTS - 1)
        r->log[r->n++] = c;
}

static struct rec rec;

static void t_a(struct tds_loop *l, void *ud) { (void)l; (void)ud; note(&rec, 'a'); }
static void t_b(struct tds_loop *l, void *ud) { (void)l; (void)ud; note(&rec, 'b'); }
static void t_c(struct tds_loop *l, void *ud) { (void)l; (void)ud; note(&rec, 'c'); }
static void t_x(struct tds_loop *l, void *ud) { (void)l; (void)ud; note(&rec, 'x'); }
static void t_stop(struct tds_loop *l, void *ud) { (void)ud; tds_loop_stop(l); }

static void t_rep(struct tds_loop *l, void *ud)
{
    int64_t *id = ud;

    note(&rec, 'r');
    if (++rec.count == 3)
        tds_loop_timer_cancel(l, *id); /* cancel itself from its own callback */
}

static void t_cancel_other(struct tds_loop *l, void *ud)
{
    (void)ud;
    note(&rec, 'k');
    tds_loop_timer_cancel(l, rec.other_id);
}

static void test_timers(void)
{
    struct tds_loop *l = NULL;
    static int64_t rep_id;
    int64_t t0;

    memset(&rec, 0, sizeof(rec));
    T_INT(tds_loop_new(&l), ==, 0);
    /* Added out of order; equal due times fire in the order added. Gaps are
     * wide so that a preempted test thread cannot reorder them. */
    T_INT(tds_loop_timer_add(l, 120, 0, t_c, NULL), >, 0);
    T_INT(tds_loop_timer_add(l, 40, 0, t_a, NULL), >, 0);
    T_INT(tds_loop_timer_add(l, 80, 0, t_b, NULL), >, 0);
    T_INT(tds_loop_timer_add(l, 80, 0, t_c, NULL), >, 0);
    rep_id = tds_loop_timer_add(l, 5, 75, t_rep, &rep_id);
    T_INT(rep_id, >, 0);
    int64_t x = tds_loop_timer_add(l, 100, 0, t_x, NULL);
    tds_loop_timer_cancel(l, x); /* cancelled before it fires */
    tds_loop_timer_cancel(l, 99999); /* unknown id: no effect */
    /* Both due at 190 ms: the first cancels the second, which must not run. */
    T_INT(tds_loop_timer_add(l, 190, 0, t_cancel_other, NULL), >, 0);
    rec.other_id = tds_loop_timer_add(l, 190, 0, t_x, NULL);
    T_INT(tds_loop_timer_add(l, 300, 0, t_stop, NULL), >, 0);
    T_INT(tds_loop_timer_add(l, -1, 0, t_a, NULL), ==, -22);

    t0 = tds_now_ms();
    T_INT(tds_loop_run(l), ==, 0);
    T_INT(tds_now_ms() - t0, >=, 299);
    T_INT(tds_loop_state(l), ==, TDS_LOOP_DONE);
    rec.log[rec.n] = '\0';
    /* r@5 a@40 b,c@80 r@80 c@120 r@155 (then cancelled) k@190 */
    T_STR(rec.log, "rabcrcrk");
    T_INT(rec.count, ==, 3);
    T_TRUE(tds_loop_heartbeat_ms(l) >= t0);
    tds_loop_free(l);
}

static void on_pipe(struct tds_loop *l, short revents, void *ud)
{
    int *fds = ud;
    char buf[16];

    T_TRUE(revents & ZMQ_POLLIN);
    T_INT(read(fds[0], buf, sizeof(buf)), ==, 3);
    T_TRUE(memcmp(buf, "abc", 3) == 0);
    note(&rec, 'p');
    tds_loop_remove_fd(l, fds[0]); /* removing itself */
    tds_loop_timer_add(l, 20, 0, t_stop, NULL);
}

static void write_pipe(struct tds_loop *l, void *ud)
{
    int *fds = ud;

    (void)l;
    T_INT(write(fds[1], "abc", 3), ==, 3);
}

static void test_fd(void)
{
    struct tds_loop *l = NULL;
    int fds[2];

    memset(&rec, 0, sizeof(rec));
    T_INT(pipe(fds), ==, 0);
    T_INT(tds_loop_new(&l), ==, 0);
    T_INT(tds_loop_add_fd(l, fds[0], ZMQ_POLLIN, on_pipe, fds), ==, 0);
    T_INT(tds_loop_add_fd(l, fds[0], ZMQ_POLLIN, on_pipe, fds), ==, -17); /* EEXIST */
    T_INT(tds_loop_set_events(l, NULL, 12345, ZMQ_POLLIN), ==, -2);       /* ENOENT */
    tds_loop_timer_add(l, 10, 0, write_pipe, fds);
    tds_loop_timer_add(l, 2000, 0, t_stop, NULL); /* safety net */
    T_INT(tds_loop_run(l), ==, 0);
    /* After removal, a second write is not dispatched (the stop comes first). */
    rec.log[rec.n] = '\0';
    T_STR(rec.log, "p");
    tds_loop_free(l);
    close(fds[0]);
    close(fds[1]);
}

struct zctx {
    void *push, *pull;
    int got, want;
};

static void on_pull(struct tds_loop *l, short revents, void *ud)
{
    struct zctx *z = ud;
    char buf[16];

    T_TRUE(revents & ZMQ_POLLIN);
    /* Drain everything that is ready: zmq readiness is per socket, not per message. */
    while (zmq_recv(z->pull, buf, sizeof(buf), ZMQ_DONTWAIT) >= 0)
        z->got++;
    if (z->got == 5)
        tds_loop_stop(l);
}

static void send_five(struct tds_loop *l, void *ud)
{
    struct zctx *z = ud;

    (void)l;
    for (int i = 0; i < 5; i++)
        T_INT(zmq_send(z->push, "m", 1, 0), ==, 1);
}

static void on_pull_paused(struct tds_loop *l, short revents, void *ud)
{
    (void)l;
    (void)revents;
    (void)ud;
    T_FAIL("handler with events 0 must not be called");
}

static void test_zsock(void)
{
    struct tds_loop *l = NULL;
    void *ctx = zmq_ctx_new();
    struct zctx z = {0};
    int linger = 0;

    T_TRUE(ctx != NULL);
    z.pull = zmq_socket(ctx, ZMQ_PULL);
    z.push = zmq_socket(ctx, ZMQ_PUSH);
    zmq_setsockopt(z.push, ZMQ_LINGER, &linger, sizeof(linger));
    T_INT(zmq_bind(z.pull, "inproc://test-loop"), ==, 0);
    T_INT(zmq_connect(z.push, "inproc://test-loop"), ==, 0);

    T_INT(tds_loop_new(&l), ==, 0);
    /* Paused (events 0) while a message waits: not dispatched. */
    T_INT(tds_loop_add_zsock(l, z.pull, 0, on_pull_paused, &z), ==, 0);
    T_INT(zmq_send(z.push, "m", 1, 0), ==, 1);
    tds_loop_timer_add(l, 30, 0, t_stop, NULL);
    T_INT(tds_loop_run(l), ==, 0);
    tds_loop_remove_zsock(l, z.pull);
    tds_loop_free(l);

    T_INT(tds_loop_new(&l), ==, 0);
    T_INT(tds_loop_add_zsock(l, z.pull, ZMQ_POLLIN, on_pull, &z), ==, 0);
    z.got = -1; /* the message left from the paused round */
    tds_loop_timer_add(l, 10, 0, send_five, &z);
    tds_loop_timer_add(l, 2000, 0, t_stop, NULL);
    T_INT(tds_loop_run(l), ==, 0);
    T_INT(z.got, ==, 5);
    tds_loop_free(l);

    zmq_close(z.push);
    zmq_close(z.pull);
    zmq_ctx_term(ctx);
}

/* One message per call: the socket stays ready with no new signal on its
 * ZMQ_FD, and the loop must see that before it waits, not after its 1 s cap. */
static void on_pull_one(struct tds_loop *l, short revents, void *ud)
{
    struct zctx *z = ud;
    char buf[16];

    T_TRUE(revents & ZMQ_POLLIN);
    if (zmq_recv(z->pull, buf, sizeof(buf), ZMQ_DONTWAIT) >= 0 && ++z->got == z->want)
        tds_loop_stop(l);
}

/* A PULL socket watched by cb, bursts of five messages sent 50 ms apart: cb
 * must have taken every one well before the loop's 1 s waits would add up. */
static void pull_bursts(const char *ep, tds_loop_io_cb cb, int bursts)
{
    struct tds_loop *l = NULL;
    void *ctx = zmq_ctx_new();
    struct zctx z = {.want = 5 * bursts};
    int linger = 0;
    int64_t t0;

    T_TRUE(ctx != NULL);
    z.pull = zmq_socket(ctx, ZMQ_PULL);
    z.push = zmq_socket(ctx, ZMQ_PUSH);
    zmq_setsockopt(z.push, ZMQ_LINGER, &linger, sizeof(linger));
    T_INT(zmq_bind(z.pull, ep), ==, 0);
    T_INT(zmq_connect(z.push, ep), ==, 0);
    T_INT(tds_loop_new(&l), ==, 0);
    T_INT(tds_loop_add_zsock(l, z.pull, ZMQ_POLLIN, cb, &z), ==, 0);
    for (int i = 0; i < bursts; i++)
        tds_loop_timer_add(l, 10 + 50 * i, 0, send_five, &z);
    tds_loop_timer_add(l, 5000, 0, t_stop, NULL);
    t0 = tds_now_ms();
    T_INT(tds_loop_run(l), ==, 0);
    T_INT(z.got, ==, z.want);
    T_TRUE(tds_now_ms() - t0 < 500);
    tds_loop_free(l);
    zmq_close(z.push);
    zmq_close(z.pull);
    zmq_ctx_term(ctx);
}

static void test_zsock_ready_without_a_new_signal(void)
{
    pull_bursts("inproc://test-loop-one", on_pull_one, 1);
}

/* A callback that reads to EAGAIN and says so: the next wait skips asking
 * the socket first, and still wakes for what comes after. */
static void on_pull_drain(struct tds_loop *l, short revents, void *ud)
{
    struct zctx *z = ud;
    char buf[16];

    T_TRUE(revents & ZMQ_POLLIN);
    while (zmq_recv(z->pull, buf, sizeof(buf), ZMQ_DONTWAIT) >= 0)
        z->got++;
    T_INT(errno, ==, EAGAIN);
    tds_loop_zsock_drained(l, z->pull);
    if (z->got == z->want)
        tds_loop_stop(l);
}

static void test_zsock_drained(void)
{
    pull_bursts("inproc://test-loop-drained", on_pull_drain, 2);
}

/* A PUSH socket at its high-water mark, watched for POLLOUT only then (as the
 * processor does with its output): the loop calls it once the peer reads. */
struct full {
    void *push, *pull;
    int sent, read, writable;
};

static void on_push_writable(struct tds_loop *l, short revents, void *ud)
{
    struct full *f = ud;

    T_TRUE(revents & ZMQ_POLLOUT);
    f->writable++;
    T_INT(zmq_send(f->push, "m", 1, ZMQ_DONTWAIT), ==, 1);
    tds_loop_stop(l);
}

static void read_all(struct tds_loop *l, void *ud)
{
    struct full *f = ud;
    char buf[16];

    (void)l;
    while (zmq_recv(f->pull, buf, sizeof(buf), ZMQ_DONTWAIT) >= 0)
        f->read++;
}

static void test_zsock_writable_again(void)
{
    struct tds_loop *l = NULL;
    void *ctx = zmq_ctx_new();
    struct full f = {0};
    int hwm = 4, linger = 0;

    T_TRUE(ctx != NULL);
    f.pull = zmq_socket(ctx, ZMQ_PULL);
    f.push = zmq_socket(ctx, ZMQ_PUSH);
    zmq_setsockopt(f.push, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(f.pull, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(f.push, ZMQ_LINGER, &linger, sizeof(linger));
    T_INT(zmq_bind(f.pull, "inproc://test-loop-full"), ==, 0);
    T_INT(zmq_connect(f.push, "inproc://test-loop-full"), ==, 0);
    while (zmq_send(f.push, "m", 1, ZMQ_DONTWAIT) == 1)
        f.sent++;
    T_TRUE(f.sent >= hwm);
    T_INT(tds_loop_new(&l), ==, 0);
    /* Watched for nothing while the test fills it: never called. */
    T_INT(tds_loop_add_zsock(l, f.push, 0, on_push_writable, &f), ==, 0);
    tds_loop_timer_add(l, 50, 0, t_stop, NULL);
    T_INT(tds_loop_run(l), ==, 0);
    T_INT(f.writable, ==, 0);
    tds_loop_free(l); /* a stopped loop stays stopped */
    /* Watched for POLLOUT: called once the peer has read. */
    T_INT(tds_loop_new(&l), ==, 0);
    T_INT(tds_loop_add_zsock(l, f.push, 0, on_push_writable, &f), ==, 0);
    T_INT(tds_loop_set_events(l, f.push, -1, ZMQ_POLLOUT), ==, 0);
    tds_loop_timer_add(l, 100, 0, read_all, &f);
    tds_loop_timer_add(l, 5000, 0, t_stop, NULL);
    T_INT(tds_loop_run(l), ==, 0);
    T_INT(f.writable, ==, 1);
    T_INT(f.read, ==, f.sent);
    tds_loop_free(l);
    zmq_close(f.push);
    zmq_close(f.pull);
    zmq_ctx_term(ctx);
}

/* ---- signals ---- */

static int drain_calls;

static void send_term(struct tds_loop *l, void *ud)
{
    (void)l;
    (void)ud;
    T_INT(kill(getpid(), SIGTERM), ==, 0);
}

static void drain_then_stop(struct tds_loop *l, void *ud)
{
    (void)ud;
    drain_calls++;
    T_INT(tds_loop_state(l), ==, TDS_LOOP_DRAINING);
    /* In-flight work takes 30 ms more, then the stage stops the loop. */
    tds_loop_timer_add(l, 30, 0, t_stop, NULL);
}

static void drain_and_hang(struct tds_loop *l, void *ud)
{
    (void)ud;
    drain_calls++;
    /* A second signal arrives while draining. */
    tds_loop_timer_add(l, 20, 0, send_term, NULL);
}

static void drain_never_finishes(struct tds_loop *l, void *ud)
{
    (void)l;
    (void)ud;
    drain_calls++;
}

static int slow_fired;

static void slow_timer(struct tds_loop *l, void *ud)
{
    (void)l;
    (void)ud;
    slow_fired++;
    usleep(5000);
}

static void stop_at_drain(struct tds_loop *l, void *ud)
{
    (void)ud;
    drain_calls++;
    tds_loop_stop(l);
}

/* A SIGTERM during a long round of due timers is seen within that round,
 * not after all of them: 400 timers of 5 ms each would make it wait 2 s. */
static void test_sigterm_during_many_timers(void)
{
    struct tds_loop *l = NULL;
    int64_t t0;

    drain_calls = 0;
    slow_fired = 0;
    T_INT(tds_loop_new(&l), ==, 0);
    tds_loop_on_drain(l, stop_at_drain, NULL);
    tds_loop_timer_add(l, 10, 0, send_term, NULL);
    for (int i = 0; i < 400; i++)
        tds_loop_timer_add(l, 10, 0, slow_timer, NULL);
    tds_loop_timer_add(l, 5000, 0, t_stop, NULL);
    t0 = tds_now_ms();
    T_INT(tds_loop_run(l), ==, 0);
    T_INT(drain_calls, ==, 1);
    T_INT(slow_fired, <, 50);
    T_INT(tds_now_ms() - t0, <, 500);
    tds_loop_free(l);
}

static void test_sigterm(void)
{
    struct tds_loop *l = NULL;
    int64_t t0;

    /* SIGTERM → drain callback → stage calls stop. */
    drain_calls = 0;
    T_INT(tds_loop_new(&l), ==, 0);
    tds_loop_on_drain(l, drain_then_stop, NULL);
    T_INT(tds_loop_state(l), ==, TDS_LOOP_RUNNING);
    tds_loop_timer_add(l, 10, 0, send_term, NULL);
    tds_loop_timer_add(l, 5000, 0, t_stop, NULL); /* safety net */
    t0 = tds_now_ms();
    T_INT(tds_loop_run(l), ==, 0);
    T_INT(drain_calls, ==, 1);
    T_INT(tds_now_ms() - t0, <, 1000);
    T_INT(tds_now_ms() - t0, >=, 39);
    T_INT(tds_loop_state(l), ==, TDS_LOOP_DONE);
    tds_loop_free(l);

    /* A second signal while draining stops at once. */
    drain_calls = 0;
    T_INT(tds_loop_new(&l), ==, 0);
    tds_loop_on_drain(l, drain_and_hang, NULL);
    tds_loop_timer_add(l, 10, 0, send_term, NULL);
    tds_loop_timer_add(l, 5000, 0, t_stop, NULL);
    t0 = tds_now_ms();
    T_INT(tds_loop_run(l), ==, 0);
    T_INT(drain_calls, ==, 1);
    T_INT(tds_now_ms() - t0, <, 1000);
    tds_loop_free(l);

    /* The drain deadline stops a loop whose stage never finishes. */
    drain_calls = 0;
    T_INT(tds_loop_new(&l), ==, 0);
    tds_loop_on_drain(l, drain_never_finishes, NULL);
    tds_loop_set_drain_deadline(l, 100);
    tds_loop_timer_add(l, 10, 0, send_term, NULL);
    tds_loop_timer_add(l, 5000, 0, t_stop, NULL);
    t0 = tds_now_ms();
    T_INT(tds_loop_run(l), ==, 0);
    T_INT(drain_calls, ==, 1);
    T_INT(tds_now_ms() - t0, >=, 109);
    T_INT(tds_now_ms() - t0, <, 1000);
    tds_loop_free(l);

    /* Without a drain callback the first signal stops at once; SIGHUP is ignored. */
    T_INT(tds_loop_new(&l), ==, 0);
    T_INT(kill(getpid(), SIGHUP), ==, 0);
    tds_loop_timer_add(l, 10, 0, send_term, NULL);
    tds_loop_timer_add(l, 5000, 0, t_stop, NULL);
    t0 = tds_now_ms();
    T_INT(tds_loop_run(l), ==, 0);
    T_INT(tds_now_ms() - t0, <, 1000);
    tds_loop_free(l);
}

static int64_t idle_age_ms = -1;

static void t_heartbeat_age(struct tds_loop *l, void *ud)
{
    (void)ud;
    idle_age_ms = tds_now_ms() - tds_loop_heartbeat_ms(l);
    tds_loop_stop(l);
}

/* Nothing happens for 2.5 s: the loop still completes an iteration every
 * TDS_LOOP_MAX_WAIT_MS, so its heartbeat (what /healthz reads) stays fresh. */
static void test_idle_heartbeat(void)
{
    struct tds_loop *l = NULL;
    int fds[2];

    T_INT(pipe(fds), ==, 0);
    T_INT(tds_loop_new(&l), ==, 0);
    T_INT(tds_loop_add_fd(l, fds[0], ZMQ_POLLIN, on_pipe, fds), ==, 0); /* never readable */
    T_TRUE(tds_loop_timer_add(l, 2500, 0, t_heartbeat_age, NULL) > 0);
    T_INT(tds_loop_run(l), ==, 0);
    T_INT(idle_age_ms, >=, 0);
    T_INT(idle_age_ms, <=, TDS_LOOP_MAX_WAIT_MS + 250);
    tds_loop_free(l);
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    T_RUN(test_timers);
    T_RUN(test_fd);
    T_RUN(test_zsock);
    T_RUN(test_zsock_ready_without_a_new_signal);
    T_RUN(test_zsock_writable_again);
    T_RUN(test_zsock_drained);
    T_RUN(test_sigterm);
    T_RUN(test_sigterm_during_many_timers);
    T_RUN(test_idle_heartbeat);
    return 0;
}
