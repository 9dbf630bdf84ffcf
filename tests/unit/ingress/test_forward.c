/* Unit tests for ingress/forward.c with a real journal, loop and ZeroMQ: an
 * entry goes to the processor once the group commit holding it begins, not
 * before, and also when that commit began before the entry reached forward
 * (the HTTP thread lost the race to the sync thread). A record read back
 * before it is durable waits for its sync instead of being dropped: a node
 * over the memory budget sent as its commit begins, before the write, and a
 * resend while the write waits for room on the disk (a 256 KiB tmpfs of the
 * test's own, so this test runs as root, as tests/run does). One ack releases
 * every node of its message id and journals each of their seqs as acked. */
#include <errno.h>
#include <fcntl.h>
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
#include "msg.h"
#include "util.h"

#define N_ENTRIES 4

/* A forward and its journal on a loop, the processor side a PULL socket, the
 * writer's acks a PUB socket. */
struct rig {
    char dir[64];
    char jdir[80];
    bool mounted;
    void *ctx, *pull, *pub;
    struct tds_loop *loop;
    struct tds_metrics *m;
    struct tds_bus *bus;
    struct tds_events *ev;
    struct tds_journal *j;
    struct tds_forward *f;
    struct tds_series *dead;
    uint64_t seq[N_ENTRIES];
    struct tds_journal_loc loc[N_ENTRIES];
    char *buf[N_ENTRIES];
    size_t len[N_ENTRIES];
    int step;
    int failures;
    int waits;      /* ticks a step waited for what it checks (step_over_budget) */
};

static void on_syncing(uint64_t upto, void *ud)
{
    tds_forward_syncing(((struct rig *)ud)->f, upto);
}

static void on_synced(uint64_t synced, bool failed, void *ud)
{
    tds_forward_synced(((struct rig *)ud)->f, synced, failed);
}

/* A tmpfs still mounted when a check fails (exit) is taken away all the same. */
static char mounted[64];

static void unmount_at_exit(void)
{
    char cmd[200];

    if (!mounted[0])
        return;
    snprintf(cmd, sizeof(cmd), "umount -l %s && rm -rf %s", mounted, mounted);
    if (system(cmd) != 0)
        fprintf(stderr, "could not unmount %s\n", mounted);
    mounted[0] = '\0';
}

/* tmpfs_kb > 0: the journal lives on a tmpfs of that size, so that it can
 * really fill up. wired: the journal's callbacks reach forward, as in
 * main.c; otherwise the test calls tds_forward_syncing itself. */
static void rig_open(struct rig *x, size_t max_buffered, int64_t ack_timeout_ms, int tmpfs_kb,
                     bool wired)
{
    struct tds_journal_opts jo = {.max_bytes = 64 << 20, .segment_bytes = 1 << 20,
                                  .retention_ms = 3600 * 1000};
    char ep[128], ack_ep[128];
    size_t eplen = sizeof(ep);

    snprintf(x->dir, sizeof(x->dir), "/tmp/tds-forward-test-XXXXXX");
    T_TRUE(mkdtemp(x->dir) != NULL);
    if (tmpfs_kb > 0) {
        char cmd[200];

        snprintf(cmd, sizeof(cmd), "mount -t tmpfs -o size=%dk tds-test %s", tmpfs_kb, x->dir);
        if (system(cmd) != 0)
            T_FAIL("cannot mount a %d KiB tmpfs on %s (a full disk needs root)", tmpfs_kb,
                   x->dir);
        x->mounted = true;
        snprintf(mounted, sizeof(mounted), "%s", x->dir);
        atexit(unmount_at_exit);
    }
    snprintf(x->jdir, sizeof(x->jdir), "%s/journal", x->dir);
    jo.dir = x->jdir;
    x->ctx = zmq_ctx_new();
    x->pull = zmq_socket(x->ctx, ZMQ_PULL);
    T_INT(zmq_bind(x->pull, "tcp://127.0.0.1:*"), ==, 0);
    T_INT(zmq_getsockopt(x->pull, ZMQ_LAST_ENDPOINT, ep, &eplen), ==, 0);
    x->pub = zmq_socket(x->ctx, ZMQ_PUB);
    T_INT(zmq_bind(x->pub, "tcp://127.0.0.1:*"), ==, 0);
    eplen = sizeof(ack_ep);
    T_INT(zmq_getsockopt(x->pub, ZMQ_LAST_ENDPOINT, ack_ep, &eplen), ==, 0);

    T_INT(tds_loop_new(&x->loop), ==, 0);
    T_INT(tds_metrics_new(&x->m), ==, 0);
    T_INT(tds_bus_new(&x->bus), ==, 0);
    T_INT(tds_events_new(&x->ev, x->bus, "ingress", ""), ==, 0);
    T_INT(tds_journal_open(&x->j, &jo, NULL, NULL, NULL), ==, 0);
    {
        struct tds_forward_opts fo = {.origin = "ingress.test", .processor_connect = ep,
                                      .fetcher_connect = ep,
                                      .ack_connect = ack_ep,
                                      .ack_timeout_ms = ack_timeout_ms,
                                      .max_buffered_bytes = max_buffered,
                                      .hwm = 100, .fetch_acks = true};

        T_INT(tds_forward_new(&x->f, &fo, x->loop, x->bus, x->j, x->m, x->ev), ==, 0);
    }
    x->dead = tds_metrics_get(x->m, TDS_COUNTER, "tds_ingress_dead_letters_total", "", "", NULL,
                              0);
    T_TRUE(x->dead != NULL);
    if (wired) {
        tds_journal_on_syncing(x->j, on_syncing, x);
        tds_journal_on_synced(x->j, on_synced, x);
    }
}

/* Entry i: appended to the journal (not written yet), its bytes in buf[i]. */
static void rig_append(struct rig *x, int i, const char *msgid, const char *body)
{
    struct tds_entry e = {.dest = TDS_ENTRY_PROCESSOR, .org = "600", .org_len = 3,
                          .entity = "item", .entity_len = 4, .msgid = msgid,
                          .msgid_len = strlen(msgid), .msg = body, .msg_len = strlen(body)};

    T_INT(tds_entry_encode(&e, &x->buf[i], &x->len[i]), ==, 0);
    T_INT(tds_journal_append(x->j, x->buf[i], x->len[i], tds_wall_ms(), &x->seq[i], &x->loc[i]),
          ==, 0);
}

static void rig_close(struct rig *x)
{
    char cmd[200];

    tds_journal_on_syncing(x->j, NULL, NULL);
    tds_journal_on_synced(x->j, NULL, NULL);
    x->f = tds_forward_free(x->f);
    x->j = tds_journal_close(x->j);
    tds_events_free(x->ev);
    tds_bus_free(x->bus);
    tds_metrics_free(x->m);
    tds_loop_free(x->loop);
    for (int i = 0; i < N_ENTRIES; i++)
        free(x->buf[i]);
    zmq_close(x->pull);
    zmq_close(x->pub);
    zmq_ctx_term(x->ctx);
    if (x->mounted) {
        snprintf(cmd, sizeof(cmd), "umount -l %s", x->dir);
        T_INT(system(cmd), ==, 0);
        mounted[0] = '\0';
    }
    snprintf(cmd, sizeof(cmd), "rm -rf %s", x->dir);
    T_INT(system(cmd), ==, 0);
}

/* Frames waiting on the processor side, read without waiting; the last one
 * into got. */
static int received(struct rig *x, char *got, size_t n)
{
    char frame[512];
    int k = 0, r;

    while ((r = zmq_recv(x->pull, frame, sizeof(frame), ZMQ_DONTWAIT)) >= 0) {
        snprintf(got, n, "%.*s", r < (int)sizeof(frame) ? r : (int)sizeof(frame), frame);
        k++;
    }
    return k;
}

/* Entry i handed to forward, as an HTTP thread does after its append. */
static void submit(struct rig *x, int i)
{
    struct tds_forward_slot *slot = NULL;

    T_INT(tds_forward_slot_new(&slot), ==, 0);
    tds_forward_submit(x->f, &slot, x->seq[i], &x->loc[i], &x->buf[i], x->len[i]);
    T_NULL(slot);
    T_NULL(x->buf[i]);
}

static void check(struct rig *x, bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "step %d: %s\n", x->step - 1, what);
        x->failures++;
    }
}

/* Each step runs 100 ms after the last, on the loop thread, as the
 * journal's sync thread and the HTTP threads would call forward. */
static void run_steps(struct rig *x, void (*step)(struct tds_loop *, void *), int n_steps)
{
    T_TRUE(tds_loop_timer_add(x->loop, 100, 100, step, x) > 0);
    T_INT(tds_loop_run(x->loop), ==, 0);
    T_INT(x->failures, ==, 0);
    T_INT(x->step, ==, n_steps);
}

static void step_commit_begins(struct tds_loop *loop, void *ud)
{
    struct rig *x = ud;
    char got[512] = "";

    switch (x->step++) {
    case 0: /* entry 1 appended and handed over, its commit not begun */
        submit(x, 0);
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
        submit(x, 1);
        break;
    case 4:
        check(x, received(x, got, sizeof(got)) == 1 && strstr(got, "payload two"),
              "entry 2 waits although its commit began before it was submitted");
        tds_loop_stop(loop);
        break;
    }
}

/* n_entries entries journaled ("payload one", "payload two", "payload
 * three"), then the steps. */
static void run_with_entries(int n_entries, void (*step)(struct tds_loop *, void *), int n_steps)
{
    static const char *const ids[] = {"ev-1", "ev-2", "ev-3"};
    static const char *const payloads[] = {"payload one", "payload two", "payload three"};
    struct rig x = {0};

    T_TRUE(n_entries <= 3);
    /* a 10 s ack timeout: the resend timer first fires after 1 s, past the
     * test's end, so only the wake-ups under test can send anything */
    rig_open(&x, 1 << 20, 10000, 0, false);
    for (int i = 0; i < n_entries; i++)
        rig_append(&x, i, ids[i], payloads[i]);
    run_steps(&x, step, n_steps);
    rig_close(&x);
}

static void test_sent_when_its_commit_begins(void) { run_with_entries(2, step_commit_begins, 5); }

static void step_held_up(struct tds_loop *loop, void *ud)
{
    struct rig *x = ud;
    char got[512] = "";

    switch (x->step++) {
    case 0: /* entry 1's commit begins, and its sync does not return */
        submit(x, 0);
        tds_forward_syncing(x->f, x->seq[0]);
        break;
    case 1:
        check(x, received(x, got, sizeof(got)) == 1 && strstr(got, "payload one"),
              "entry 1 not sent once its commit began");
        /* 100 ms into that sync: entry 2 cannot join a commit before it ends */
        submit(x, 1);
        break;
    case 2:
        check(x, received(x, got, sizeof(got)) == 1 && strstr(got, "payload two"),
              "entry 2 waits for a sync held up by the disk");
        /* the sync returns; entry 3 waits for its own commit again */
        tds_forward_synced(x->f, x->seq[0], false);
        submit(x, 2);
        break;
    case 3:
        check(x, received(x, got, sizeof(got)) == 0,
              "entry 3 sent before its commit began, with no sync held up");
        tds_forward_syncing(x->f, x->seq[2]);
        break;
    case 4:
        check(x, received(x, got, sizeof(got)) == 1 && strstr(got, "payload three"),
              "entry 3 not sent once its commit began");
        tds_loop_stop(loop);
        break;
    }
}

/* A group commit whose fdatasync waits for a slow disk announces no other
 * until it returns: entries appended meanwhile go after HELD_UP_US without
 * waiting for their own commit (ingress/DESIGN.md, "Sending during the
 * sync"). */
static void test_sent_while_the_sync_before_it_is_held_up(void)
{
    run_with_entries(3, step_held_up, 5);
}

static void step_held_up_from_its_start(struct tds_loop *loop, void *ud)
{
    struct rig *x = ud;
    char got[512] = "";

    switch (x->step++) {
    case 0:
        /* entry 1's commit begins and its sync does not return; entry 2 is
         * appended at once, well inside the first HELD_UP_US, and no other
         * webhook comes after it to wake the loop */
        submit(x, 0);
        tds_forward_syncing(x->f, x->seq[0]);
        submit(x, 1);
        break;
    case 1:
        check(x, received(x, got, sizeof(got)) == 2 && strstr(got, "payload two"),
              "entry 2 waits out a sync held up by the disk, having come in its first 2 ms");
        tds_forward_synced(x->f, x->seq[0], false);
        tds_loop_stop(loop);
        break;
    }
}

/* The same, when nothing is appended once the commit is held up: the loop's
 * own timer (the timerfd armed as the commit begins) takes entry 2. */
static void test_sent_while_held_up_with_nothing_after_it(void)
{
    run_with_entries(2, step_held_up_from_its_start, 2);
}

static void step_over_budget(struct tds_loop *loop, void *ud)
{
    struct rig *x = ud;
    char got[512] = "";

    switch (x->step++) {
    case 0:
        submit(x, 0);
        /* the sync thread announces the commit, then writes it */
        tds_forward_syncing(x->f, x->seq[0]);
        break;
    case 1:
        check(x, received(x, got, sizeof(got)) == 0, "sent a record not written yet");
        check(x, tds_series_value(x->dead) == 0, "a record not written yet is a dead letter");
        check(x, tds_journal_sync(x->j) == 0, "sync");
        break;
    case 2: {
        int k = received(x, got, sizeof(got));

        /* The sync above ran on this thread: on a loaded machine the next
         * tick can be due before the loop has taken the wake-up that sends.
         * Nothing yet: look again at the next tick, for up to 3 s. */
        if (k == 0 && ++x->waits < 30) {
            x->step--;
            break;
        }
        check(x, k == 1 && strstr(got, "payload one"), "not sent once its record was durable");
        check(x, tds_series_value(x->dead) == 0, "dead letter");
        check(x, tds_forward_unacked(x->f) == 1, "not kept until acked");
        tds_loop_stop(loop);
        break;
    }
    }
}

/* Over the memory budget a node never holds its bytes: created as its commit
 * begins, it reads the record back before the sync thread wrote it. */
static void test_over_budget_waits_for_its_write(void)
{
    struct rig x = {0};

    rig_open(&x, 0, 10000, 0, true);
    rig_append(&x, 0, "ev-1", "payload one");
    run_steps(&x, step_over_budget, 3);
    rig_close(&x);
}

static void fill(const char *dir)
{
    static const char block[4096];
    char path[128];
    int fd;

    snprintf(path, sizeof(path), "%s/filler", dir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    T_TRUE(fd >= 0);
    while (write(fd, block, sizeof(block)) > 0)
        ;
    T_INT(errno, ==, ENOSPC);
    close(fd);
}

static void step_disk_full(struct tds_loop *loop, void *ud)
{
    struct rig *x = ud;
    char got[512] = "", path[128];

    switch (x->step++) {
    case 0:
        submit(x, 0);
        /* announced (the loop sends it), then its write finds no room */
        check(x, tds_journal_sync(x->j) == TDS_JOURNAL_E_NOSPACE, "write refused for space");
        break;
    case 1:
        check(x, received(x, got, sizeof(got)) == 1 && strstr(got, "payload one"),
              "not sent as its commit began");
        break;
    case 2:
    case 3: /* the ack timeout (200 ms) passes while the disk is full */
        break;
    case 4:
        check(x, received(x, got, sizeof(got)) == 0, "resent a record never written");
        check(x, tds_series_value(x->dead) == 0, "a record waiting for room is a dead letter");
        check(x, tds_forward_unacked(x->f) == 1, "dropped while its write waits for room");
        snprintf(path, sizeof(path), "%s/filler", x->dir);
        check(x, unlink(path) == 0, "unlink filler");
        check(x, tds_journal_sync(x->j) == 0, "the retried write fits");
        break;
    case 5:
        check(x, received(x, got, sizeof(got)) == 1 && strstr(got, "payload one"),
              "not resent once its record was durable");
        check(x, tds_series_value(x->dead) == 0, "dead letter");
        tds_loop_stop(loop);
        break;
    }
}

/* An entry sent as its commit began, whose write then finds the disk full:
 * the ack timeout passes while it is still full, and the record is only
 * written later (its request got 503; Zoho's retry will be a duplicate). */
static void test_resend_waits_for_room_on_the_disk(void)
{
    struct rig x = {0};

    rig_open(&x, 1 << 20, 200, 256, true);
    fill(x.dir);
    rig_append(&x, 0, "ev-1", "payload one");
    run_steps(&x, step_disk_full, 6);
    rig_close(&x);
}

/* The writer's ack of one message id, as it publishes it. */
static void publish_ack(struct rig *x, const char *id)
{
    char *ids[1] = {(char *)id}, *buf = NULL;
    size_t len = 0;
    struct tds_msg m = {.type = TDS_MSG_ACK, .v = TDS_MSG_VERSION, .id = "ack-1"};

    m.u.ack.origin = "ingress.test";
    m.u.ack.ids = ids;
    m.u.ack.n_ids = 1;
    T_INT(tds_msg_encode(&m, &buf, &len), ==, 0);
    T_INT(zmq_send(x->pub, "ingress.test", 12, ZMQ_SNDMORE), ==, 12);
    T_INT(zmq_send(x->pub, buf, len, 0), ==, (int)len);
    free(buf);
}

static void step_ack_all(struct tds_loop *loop, void *ud)
{
    struct rig *x = ud;
    char got[512] = "";

    switch (x->step++) {
    case 0:
        for (int i = 0; i < 3; i++)
            submit(x, i);
        check(x, tds_journal_sync(x->j) == 0, "sync");
        break;
    case 1:
        check(x, received(x, got, sizeof(got)) == 3, "the three not sent");
        check(x, tds_forward_unacked(x->f) == 3, "three unacked nodes");
        break;
    default:
        if (tds_forward_unacked(x->f) > 0 && x->step < 50) {
            publish_ack(x, "ev-7"); /* again until the subscription has joined */
            break;
        }
        check(x, tds_forward_unacked(x->f) == 0, "one ack did not release every node");
        check(x, tds_journal_unacked(x->j) == 0, "a released seq not journaled as acked");
        tds_loop_stop(loop);
        break;
    }
}

/* The same message id journaled three times (deliveries outside the dedupe
 * window): one ack releases all three, and all three seqs are acked in the
 * journal, so their segment can go. */
static void test_one_ack_acks_every_seq_of_its_id(void)
{
    struct rig x = {0};

    rig_open(&x, 1 << 20, 10000, 0, true);
    for (int i = 0; i < 3; i++)
        rig_append(&x, i, "ev-7", "payload seven");
    T_TRUE(tds_loop_timer_add(x.loop, 100, 100, step_ack_all, &x) > 0);
    T_INT(tds_loop_run(x.loop), ==, 0);
    T_INT(x.failures, ==, 0);
    rig_close(&x);
}

/* Entry 1's record damaged on disk (a bad block) after its first send. */
static void damage(struct rig *x)
{
    char path[160];
    int fd;

    snprintf(path, sizeof(path), "%s/%020llu.seg", x->jdir, (unsigned long long)x->loc[0].seg);
    fd = open(path, O_WRONLY);
    T_TRUE(fd >= 0);
    T_INT(pwrite(fd, "XXXX", 4, (off_t)(x->loc[0].off + 32)), ==, 4);
    close(fd);
}

static void step_damaged(struct tds_loop *loop, void *ud)
{
    struct rig *x = ud;
    char got[512] = "";

    switch (x->step++) {
    case 0:
        submit(x, 0);
        check(x, tds_journal_sync(x->j) == 0, "sync");
        break;
    case 1:
        check(x, received(x, got, sizeof(got)) == 1, "entry 1 not sent");
        damage(x);
        break;
    default:
        /* its resend (the ack timeout is 300 ms, the resend timer 1 s) */
        if (tds_series_value(x->dead) == 0 && x->step < 40)
            break;
        check(x, tds_series_value(x->dead) == 1, "a damaged record is not a dead letter");
        check(x, received(x, got, sizeof(got)) == 0, "a damaged record was sent");
        check(x, tds_forward_unacked(x->f) == 0, "the dead letter still waits for an ack");
        check(x, tds_journal_unacked(x->j) == 0,
              "the dead letter not acked in the journal: its segment could never go");
        tds_loop_stop(loop);
        break;
    }
}

/* A durable record that cannot be read back whole for its resend (damaged,
 * or gone) can never be sent: it is a dead letter, counted, and acked in
 * the journal so that its segment, and every one after it, can be dropped. */
static void test_a_damaged_record_is_released_as_a_dead_letter(void)
{
    struct rig x = {0};

    rig_open(&x, 1 << 20, 300, 0, true);
    rig_append(&x, 0, "ev-1", "payload one");
    T_TRUE(tds_loop_timer_add(x.loop, 100, 100, step_damaged, &x) > 0);
    T_INT(tds_loop_run(x.loop), ==, 0);
    T_INT(x.failures, ==, 0);
    rig_close(&x);
}

int main(void)
{
    T_RUN(test_sent_when_its_commit_begins);
    T_RUN(test_sent_while_the_sync_before_it_is_held_up);
    T_RUN(test_sent_while_held_up_with_nothing_after_it);
    T_RUN(test_over_budget_waits_for_its_write);
    T_RUN(test_resend_waits_for_room_on_the_disk);
    T_RUN(test_one_ack_acks_every_seq_of_its_id);
    T_RUN(test_a_damaged_record_is_released_as_a_dead_letter);
    return 0;
}
