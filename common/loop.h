/* loop — the one event loop of a stage: poll() over ZeroMQ sockets and plain
 * fds, timers, and signals through a signalfd.
 *
 * Shutdown is a state machine: RUNNING → (SIGTERM/SIGINT) DRAINING → DONE.
 * On the first signal the stage's drain callback runs; the stage stops taking
 * new work and calls tds_loop_stop() once what is in flight is finished or
 * handed back. If it has not by the drain deadline (default 10 s, minus a
 * margin), the loop stops anyway. A second signal stops the loop at once.
 * Callbacks run on the loop's thread; a callback may add or remove handlers
 * and timers (removal takes effect after the current iteration).
 *
 * One poll waits at most TDS_LOOP_MAX_WAIT_MS, so a loop with nothing to do
 * still completes an iteration that often and its heartbeat stays fresh: an
 * idle stage (a processor between syncs has no timer at all) is not taken
 * for a stalled one.
 */
#ifndef TDS_LOOP_H
#define TDS_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct tds_loop;

#define TDS_LOOP_MAX_WAIT_MS 1000

enum tds_loop_state { TDS_LOOP_RUNNING = 0, TDS_LOOP_DRAINING, TDS_LOOP_DONE };

typedef void (*tds_loop_io_cb)(struct tds_loop *loop, short revents, void *ud);
typedef void (*tds_loop_timer_cb)(struct tds_loop *loop, void *ud);
typedef void (*tds_loop_drain_cb)(struct tds_loop *loop, void *ud);

/* Blocks SIGTERM, SIGINT, SIGHUP (and ignores SIGPIPE and SIGXFSZ) for the calling thread
 * — call before starting other threads so they inherit the mask. */
int tds_loop_new(struct tds_loop **out);
struct tds_loop *tds_loop_free(struct tds_loop *loop);

/* events: ZMQ_POLLIN / ZMQ_POLLOUT. zsock is a raw zmq socket. */
int tds_loop_add_zsock(struct tds_loop *loop, void *zsock, short events, tds_loop_io_cb cb, void *ud);
int tds_loop_add_fd(struct tds_loop *loop, int fd, short events, tds_loop_io_cb cb, void *ud);
/* Change the events watched (e.g. drop POLLIN while downstream is full). */
int tds_loop_set_events(struct tds_loop *loop, void *zsock_or_null, int fd, short events);
/* Said by a callback that read zsock until it answered EAGAIN: libzmq then
 * processed every command the socket had, so it stays unreadable until its
 * ZMQ_FD fires, and the next wait does not ask its ZMQ_EVENTS first (for a
 * socket watched for ZMQ_POLLIN alone; one system call pair saved a wait). */
void tds_loop_zsock_drained(struct tds_loop *loop, void *zsock);
void tds_loop_remove_zsock(struct tds_loop *loop, void *zsock);
void tds_loop_remove_fd(struct tds_loop *loop, int fd);

/* Timer firing after after_ms, then every every_ms (0 = once). Returns an id
 * > 0, or a negative errno. */
int64_t tds_loop_timer_add(struct tds_loop *loop, int64_t after_ms, int64_t every_ms,
                           tds_loop_timer_cb cb, void *ud);
void tds_loop_timer_cancel(struct tds_loop *loop, int64_t id);

void tds_loop_on_drain(struct tds_loop *loop, tds_loop_drain_cb cb, void *ud);
void tds_loop_set_drain_deadline(struct tds_loop *loop, int64_t ms);

/* Run until stopped. Returns 0 after a clean stop, or -errno. */
int tds_loop_run(struct tds_loop *loop);
void tds_loop_stop(struct tds_loop *loop);
enum tds_loop_state tds_loop_state(const struct tds_loop *loop);
/* Monotonic time of the last completed iteration (for /healthz); never older
 * than TDS_LOOP_MAX_WAIT_MS plus the longest callback while the loop runs. */
int64_t tds_loop_heartbeat_ms(const struct tds_loop *loop);

#endif
