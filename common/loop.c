/* loop — the one event loop of a stage: poll() over ZeroMQ sockets and plain
 * fds, timers, and SIGTERM/SIGINT/SIGHUP through a signalfd.
 *
 * Owns its handler table, its timers and the signalfd; never the sockets or
 * fds it watches. Handlers live in an array that is rebuilt into a pollfd
 * array each iteration; a removed handler is only marked and dropped after the
 * iteration, so a callback may remove any handler (itself included) safely.
 *
 * A ZeroMQ socket is polled the way zmq_poll does it, with fewer system
 * calls: its ZMQ_EVENTS are read once before the wait (a socket already
 * ready makes the wait a zero-timeout poll), and again only when its ZMQ_FD
 * fired during the wait. ZMQ_FD signals every command the socket receives,
 * and only commands change its readiness, so a socket whose fd stayed quiet
 * is as ready as it was before the wait. A socket that watches no events is
 * not polled at all, and one its callback read until EAGAIN (and said so,
 * tds_loop_zsock_drained) is not asked before the wait: that EAGAIN already
 * processed its commands. Each ZMQ_EVENTS read costs libzmq a poll() and a
 * getpid(); zmq_poll reads every socket's twice in a wait that finds
 * nothing ready at once, watched or not.
 *
 * Timers sit in a binary min-heap ordered by (due, id): equal due times fire
 * in the order they were added. Timers that are due are taken off the heap
 * before any of them runs, so a callback that adds a zero-delay timer cannot
 * starve the poll.
 *
 * A poll never waits longer than TDS_LOOP_MAX_WAIT_MS, timers or not: the
 * heartbeat that /healthz reads moves only when an iteration completes.
 *
 * Shutdown: RUNNING --SIGTERM/SIGINT--> DRAINING (drain callback runs, deadline
 * armed) --tds_loop_stop() or deadline or second signal--> DONE. With no drain
 * callback the first signal stops at once. SIGHUP is read and ignored. The
 * signal mask is left blocked at free: unblocking could deliver a pending
 * SIGTERM to the default handler and kill the process.
 */
#include "loop.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zmq.h>

#define DEFAULT_DRAIN_MS 9000

struct handler {
    void *zsock;
    int fd; /* a socket's ZMQ_FD */
    short events;
    tds_loop_io_cb cb;
    void *ud;
    bool removed;
    bool drained; /* read to EAGAIN since the last wait */
};

struct timer {
    int64_t id;
    int64_t due_ms;
    int64_t every_ms;
    tds_loop_timer_cb cb;
    void *ud;
    bool cancelled; /* cancelled while off the heap, between firing and re-arming */
};

struct tds_loop {
    int sigfd;
    struct handler *h;
    size_t n_h, cap_h;
    bool h_dirty;
    struct pollfd *pfd;  /* [0] the signalfd, then one per handler polled */
    size_t *pfd_h;       /* the handler of each pfd */
    short *rev;          /* each handler's ZMQ_POLL* events this iteration */
    size_t cap_pfd;

    struct timer **heap;
    size_t n_heap, cap_heap;
    struct timer **firing; /* timers taken off the heap this iteration */
    size_t n_firing, cap_firing;
    int64_t next_timer_id;

    enum tds_loop_state state;
    int64_t drain_ms;
    int64_t drain_deadline_ms;
    tds_loop_drain_cb drain_cb;
    void *drain_ud;
    _Atomic int64_t heartbeat_ms;
};

int tds_loop_new(struct tds_loop **out)
{
    struct tds_loop *loop;
    struct sigaction sa;
    sigset_t mask;
    int r;

    loop = calloc(1, sizeof(*loop));
    if (!loop)
        return -ENOMEM;
    loop->sigfd = -1;
    loop->next_timer_id = 1;
    loop->state = TDS_LOOP_RUNNING;
    loop->drain_ms = DEFAULT_DRAIN_MS;
    atomic_store(&loop->heartbeat_ms, tds_now_ms());

    /* A peer that goes away mid-write must be an EPIPE, not a dead process;
     * a write past the file size limit an EFBIG the writer reports. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) < 0 || sigaction(SIGXFSZ, &sa, NULL) < 0) {
        r = -errno;
        goto fail;
    }
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    r = -pthread_sigmask(SIG_BLOCK, &mask, NULL);
    if (r)
        goto fail;
    loop->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (loop->sigfd < 0) {
        r = -errno;
        goto fail;
    }
    *out = loop;
    return 0;
fail:
    tds_loop_free(loop);
    return r;
}

struct tds_loop *tds_loop_free(struct tds_loop *loop)
{
    if (!loop)
        return NULL;
    if (loop->sigfd >= 0)
        close(loop->sigfd);
    for (size_t i = 0; i < loop->n_heap; i++)
        free(loop->heap[i]);
    for (size_t i = 0; i < loop->n_firing; i++)
        free(loop->firing[i]);
    free(loop->heap);
    free(loop->firing);
    free(loop->h);
    free(loop->pfd);
    free(loop->pfd_h);
    free(loop->rev);
    free(loop);
    return NULL;
}

/* ---- handlers ---- */

static struct handler *find_handler(struct tds_loop *loop, void *zsock, int fd)
{
    for (size_t i = 0; i < loop->n_h; i++) {
        struct handler *h = &loop->h[i];

        if (h->removed)
            continue;
        if (zsock ? h->zsock == zsock : (!h->zsock && h->fd == fd))
            return h;
    }
    return NULL;
}

static int add_handler(struct tds_loop *loop, void *zsock, int fd, short events,
                       tds_loop_io_cb cb, void *ud)
{
    struct handler *h;
    size_t len = sizeof(fd);

    if (!cb || (!zsock && fd < 0))
        return -EINVAL;
    if (find_handler(loop, zsock, fd))
        return -EEXIST;
    if (zsock && zmq_getsockopt(zsock, ZMQ_FD, &fd, &len) < 0)
        return -errno;
    if (loop->n_h == loop->cap_h) {
        size_t cap = loop->cap_h ? loop->cap_h * 2 : 8;
        struct handler *p = realloc(loop->h, cap * sizeof(*p));

        if (!p)
            return -ENOMEM;
        loop->h = p;
        loop->cap_h = cap;
    }
    h = &loop->h[loop->n_h++];
    *h = (struct handler){.zsock = zsock, .fd = fd, .events = events, .cb = cb, .ud = ud};
    return 0;
}

int tds_loop_add_zsock(struct tds_loop *loop, void *zsock, short events, tds_loop_io_cb cb, void *ud)
{
    if (!zsock)
        return -EINVAL;
    return add_handler(loop, zsock, -1, events, cb, ud);
}

int tds_loop_add_fd(struct tds_loop *loop, int fd, short events, tds_loop_io_cb cb, void *ud)
{
    return add_handler(loop, NULL, fd, events, cb, ud);
}

int tds_loop_set_events(struct tds_loop *loop, void *zsock_or_null, int fd, short events)
{
    struct handler *h = find_handler(loop, zsock_or_null, fd);

    if (!h)
        return -ENOENT;
    h->events = events;
    return 0;
}

void tds_loop_zsock_drained(struct tds_loop *loop, void *zsock)
{
    struct handler *h = zsock ? find_handler(loop, zsock, -1) : NULL;

    if (h)
        h->drained = true;
}

void tds_loop_remove_zsock(struct tds_loop *loop, void *zsock)
{
    struct handler *h = zsock ? find_handler(loop, zsock, -1) : NULL;

    if (h) {
        h->removed = true;
        loop->h_dirty = true;
    }
}

void tds_loop_remove_fd(struct tds_loop *loop, int fd)
{
    struct handler *h = find_handler(loop, NULL, fd);

    if (h) {
        h->removed = true;
        loop->h_dirty = true;
    }
}

static void compact_handlers(struct tds_loop *loop)
{
    size_t w = 0;

    if (!loop->h_dirty)
        return;
    for (size_t i = 0; i < loop->n_h; i++)
        if (!loop->h[i].removed)
            loop->h[w++] = loop->h[i];
    loop->n_h = w;
    loop->h_dirty = false;
}

/* ---- timers: binary min-heap on (due_ms, id) ---- */

static bool timer_before(const struct timer *a, const struct timer *b)
{
    return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->id < b->id);
}

static void heap_swap(struct tds_loop *loop, size_t i, size_t j)
{
    struct timer *t = loop->heap[i];

    loop->heap[i] = loop->heap[j];
    loop->heap[j] = t;
}

static void sift_up(struct tds_loop *loop, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!timer_before(loop->heap[i], loop->heap[parent]))
            break;
        heap_swap(loop, i, parent);
        i = parent;
    }
}

static void sift_down(struct tds_loop *loop, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < loop->n_heap && timer_before(loop->heap[l], loop->heap[m]))
            m = l;
        if (r < loop->n_heap && timer_before(loop->heap[r], loop->heap[m]))
            m = r;
        if (m == i)
            return;
        heap_swap(loop, i, m);
        i = m;
    }
}

/* Both the heap and the firing list get room for every timer that exists, so
 * taking timers off the heap and re-arming them after their callbacks never
 * allocates and never fails. */
static int reserve_timers(struct tds_loop *loop, size_t total)
{
    size_t cap;

    if (loop->cap_heap >= total && loop->cap_firing >= total)
        return 0;
    cap = total < 16 ? 16 : total * 2;
    if (loop->cap_heap < total) {
        struct timer **p = realloc(loop->heap, cap * sizeof(*p));

        if (!p)
            return -ENOMEM;
        loop->heap = p;
        loop->cap_heap = cap;
    }
    if (loop->cap_firing < total) {
        struct timer **p = realloc(loop->firing, cap * sizeof(*p));

        if (!p)
            return -ENOMEM;
        loop->firing = p;
        loop->cap_firing = cap;
    }
    return 0;
}

static void heap_push(struct tds_loop *loop, struct timer *t)
{
    loop->heap[loop->n_heap++] = t;
    sift_up(loop, loop->n_heap - 1);
}

static struct timer *heap_remove(struct tds_loop *loop, size_t i)
{
    struct timer *t = loop->heap[i];

    loop->n_heap--;
    if (i != loop->n_heap) {
        loop->heap[i] = loop->heap[loop->n_heap];
        sift_down(loop, i);
        sift_up(loop, i);
    }
    return t;
}

int64_t tds_loop_timer_add(struct tds_loop *loop, int64_t after_ms, int64_t every_ms,
                           tds_loop_timer_cb cb, void *ud)
{
    struct timer *t;
    int r;

    if (!cb || after_ms < 0 || every_ms < 0)
        return -EINVAL;
    r = reserve_timers(loop, loop->n_heap + loop->n_firing + 1);
    if (r)
        return r;
    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->id = loop->next_timer_id++;
    t->due_ms = tds_now_ms() + after_ms;
    t->every_ms = every_ms;
    t->cb = cb;
    t->ud = ud;
    heap_push(loop, t); /* cannot fail: room reserved above */
    return t->id;
}

void tds_loop_timer_cancel(struct tds_loop *loop, int64_t id)
{
    for (size_t i = 0; i < loop->n_heap; i++) {
        if (loop->heap[i]->id == id) {
            free(heap_remove(loop, i));
            return;
        }
    }
    for (size_t i = 0; i < loop->n_firing; i++) {
        if (loop->firing[i] && loop->firing[i]->id == id) {
            loop->firing[i]->cancelled = true;
            return;
        }
    }
}

static void read_signals(struct tds_loop *loop);

/* Signals are looked at again after this long of timer callbacks in one
 * round: hundreds of due timers, each a little slow (a database that refuses
 * connections), would otherwise keep a SIGTERM waiting for all of them. */
#define SIGNAL_CHECK_MS 20

static void run_timers(struct tds_loop *loop, int64_t now)
{
    int64_t checked = now;

    /* Take every due timer off the heap first. */
    loop->n_firing = 0;
    while (loop->n_heap > 0 && loop->heap[0]->due_ms <= now)
        loop->firing[loop->n_firing++] = heap_remove(loop, 0);

    for (size_t i = 0; i < loop->n_firing; i++) {
        struct timer *t = loop->firing[i];
        int64_t after;

        if (t->cancelled || loop->state == TDS_LOOP_DONE)
            continue;
        t->cb(loop, t->ud);
        after = tds_now_ms();
        if (after - checked >= SIGNAL_CHECK_MS) {
            checked = after;
            read_signals(loop); /* non-blocking: nothing to read, nothing done */
        }
    }
    for (size_t i = 0; i < loop->n_firing; i++) {
        struct timer *t = loop->firing[i];

        if (t->every_ms > 0 && !t->cancelled) {
            /* Skip missed periods rather than firing a burst to catch up. */
            t->due_ms += t->every_ms;
            if (t->due_ms <= now)
                t->due_ms = now + t->every_ms;
            heap_push(loop, t);
            continue;
        }
        free(t);
    }
    loop->n_firing = 0;
}

/* ---- signals and shutdown ---- */

void tds_loop_on_drain(struct tds_loop *loop, tds_loop_drain_cb cb, void *ud)
{
    loop->drain_cb = cb;
    loop->drain_ud = ud;
}

void tds_loop_set_drain_deadline(struct tds_loop *loop, int64_t ms)
{
    loop->drain_ms = ms > 0 ? ms : DEFAULT_DRAIN_MS;
}

void tds_loop_stop(struct tds_loop *loop) { loop->state = TDS_LOOP_DONE; }

enum tds_loop_state tds_loop_state(const struct tds_loop *loop) { return loop->state; }

int64_t tds_loop_heartbeat_ms(const struct tds_loop *loop)
{
    return atomic_load(&((struct tds_loop *)(uintptr_t)loop)->heartbeat_ms);
}

static void read_signals(struct tds_loop *loop)
{
    struct signalfd_siginfo si;

    while (read(loop->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo != SIGTERM && si.ssi_signo != SIGINT)
            continue; /* SIGHUP: nothing to reload */
        if (loop->state == TDS_LOOP_RUNNING && loop->drain_cb) {
            loop->state = TDS_LOOP_DRAINING;
            loop->drain_deadline_ms = tds_now_ms() + loop->drain_ms;
            loop->drain_cb(loop, loop->drain_ud);
        } else {
            loop->state = TDS_LOOP_DONE;
        }
    }
}

/* ---- run ---- */

static int64_t poll_timeout(struct tds_loop *loop, int64_t now)
{
    int64_t t = TDS_LOOP_MAX_WAIT_MS;

    if (loop->n_heap > 0) {
        int64_t d = loop->heap[0]->due_ms > now ? loop->heap[0]->due_ms - now : 0;

        if (d < t)
            t = d;
    }
    if (loop->state == TDS_LOOP_DRAINING) {
        int64_t d = loop->drain_deadline_ms > now ? loop->drain_deadline_ms - now : 0;

        if (d < t)
            t = d;
    }
    return t;
}

static int reserve_pfd(struct tds_loop *loop, size_t n)
{
    size_t cap = n * 2;
    struct pollfd *p;
    size_t *m;
    short *r;

    if (loop->cap_pfd >= n)
        return 0;
    if (!(p = realloc(loop->pfd, cap * sizeof(*p))))
        return -ENOMEM;
    loop->pfd = p;
    if (!(m = realloc(loop->pfd_h, cap * sizeof(*m))))
        return -ENOMEM;
    loop->pfd_h = m;
    if (!(r = realloc(loop->rev, cap * sizeof(*r))))
        return -ENOMEM;
    loop->rev = r;
    loop->cap_pfd = cap;
    return 0;
}

/* What of want (ZMQ_POLLIN / ZMQ_POLLOUT) the socket is ready for, or -errno. */
static int zsock_ready(void *zsock, short want)
{
    uint32_t ev;
    size_t len = sizeof(ev);

    if (zmq_getsockopt(zsock, ZMQ_EVENTS, &ev, &len) < 0)
        return -errno;
    return (int)(ev & (uint32_t)want & (ZMQ_POLLIN | ZMQ_POLLOUT));
}

/* One wait: fills loop->rev[0..n) for the first n handlers. */
static int wait_events(struct tds_loop *loop, size_t n, int64_t timeout_ms, bool *sig)
{
    size_t np = 1;
    bool ready = false;
    int rc;

    loop->pfd[0] = (struct pollfd){.fd = loop->sigfd, .events = POLLIN};
    for (size_t i = 0; i < n; i++) {
        struct handler *h = &loop->h[i];
        bool drained = h->drained;

        h->drained = false;
        loop->rev[i] = 0;
        if (h->removed || (h->zsock && h->events == 0))
            continue;
        if (h->zsock) {
            if (drained && h->events == ZMQ_POLLIN)
                rc = 0; /* unreadable until its fd fires (tds_loop_zsock_drained) */
            else if ((rc = zsock_ready(h->zsock, h->events)) < 0)
                return rc;
            loop->rev[i] = (short)rc;
            ready = ready || rc != 0;
            loop->pfd[np] = (struct pollfd){.fd = h->fd, .events = POLLIN};
        } else {
            loop->pfd[np] = (struct pollfd){
                .fd = h->fd,
                .events = (short)(((h->events & ZMQ_POLLIN) ? POLLIN : 0) |
                                  ((h->events & ZMQ_POLLOUT) ? POLLOUT : 0) |
                                  ((h->events & ZMQ_POLLPRI) ? POLLPRI : 0))};
        }
        loop->pfd_h[np++] = i;
    }
    rc = poll(loop->pfd, (nfds_t)np, ready ? 0 : (int)timeout_ms);
    if (rc < 0)
        return -errno;
    *sig = (loop->pfd[0].revents & POLLIN) != 0;
    for (size_t k = 1; k < np; k++) {
        const struct handler *h = &loop->h[loop->pfd_h[k]];
        short pr = loop->pfd[k].revents;
        short *rev = &loop->rev[loop->pfd_h[k]];

        if (h->zsock) {
            if (pr && !*rev) {
                if ((rc = zsock_ready(h->zsock, h->events)) < 0)
                    return rc;
                *rev = (short)rc;
            }
        } else {
            *rev = (short)(((pr & POLLIN) ? ZMQ_POLLIN : 0) | ((pr & POLLOUT) ? ZMQ_POLLOUT : 0) |
                           ((pr & POLLPRI) ? ZMQ_POLLPRI : 0) |
                           ((pr & ~(POLLIN | POLLOUT | POLLPRI)) ? ZMQ_POLLERR : 0));
        }
    }
    return 0;
}

int tds_loop_run(struct tds_loop *loop)
{
    while (loop->state != TDS_LOOP_DONE) {
        size_t n = loop->n_h;
        int64_t now = tds_now_ms();
        bool sig = false;
        int rc;

        if (reserve_pfd(loop, n + 1) != 0)
            return -ENOMEM;
        rc = wait_events(loop, n, poll_timeout(loop, now), &sig);
        if (rc == -EINTR)
            continue;
        if (rc < 0)
            return rc;
        if (sig)
            read_signals(loop);
        /* Handlers added by callbacks sit past n and wait for the next round. */
        for (size_t i = 0; i < n && loop->state != TDS_LOOP_DONE; i++) {
            struct handler *h = &loop->h[i];
            short rev = loop->rev[i];

            if (rev && !h->removed)
                h->cb(loop, rev, h->ud);
        }
        now = tds_now_ms();
        if (loop->state != TDS_LOOP_DONE)
            run_timers(loop, now);
        if (loop->state == TDS_LOOP_DRAINING && tds_now_ms() >= loop->drain_deadline_ms)
            loop->state = TDS_LOOP_DONE;
        compact_handlers(loop);
        atomic_store(&loop->heartbeat_ms, tds_now_ms());
    }
    return 0;
}
