/* forward — the loop-thread side of ingress: journaled entries out, acks in.
 *
 * Entries wait in `incoming` (locked, seq order) until the sync thread takes
 * them into a group commit, then become nodes: in a send queue per
 * destination until ZeroMQ takes them, then in flight until acked or timed
 * out back into the send queue. The wait for an ack doubles with each send
 * of an entry, from the ack timeout up to resend_max_ms: one in-flight list
 * per wait (each ordered by deadline, since every deadline in it is now + the
 * same wait). A hash table by message id finds
 * nodes for acks. Node payloads are dropped after the first send (and at
 * once past the memory budget); a resend reads the record back from the
 * journal. A record read back before it is durable (its commit has begun but
 * not reached the file, or its write waits for room on the disk) may not be
 * there yet: its node waits in `waiting`, out of the send queue, until the
 * sync passes it.
 */
#include "forward.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <zmq.h>

#include "bus.h"
#include "entry.h"
#include "events.h"
#include "journal.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "msg.h"
#include "util.h"

#define N_DEST 3 /* index by enum tds_entry_dest (1, 2) */
#define N_WAITS 24 /* in-flight lists: ack timeout × 2^0 … 2^23, at most resend_max_ms */
#define ACK_FRAME_MAX (4u * 1024 * 1024)
/* A group commit this long is held up by the disk (an fdatasync takes
 * 0.3–0.5 ms at p50 and ~2 ms at p99 on the bench VM; stalls of 5–15 ms come
 * a few times a minute): ingress/DESIGN.md, "Sending during the sync". */
#define HELD_UP_US 2000

enum { L_NONE = 0, L_SEND, L_FLIGHT, L_WAIT };

/* One per entry not yet acked: its memory is what TDS_INGRESS_MAX_UNACKED
 * bounds, so it is one allocation, its ids inline (~250 bytes in all with a
 * 64-character event id and its hash bucket: ingress/DESIGN.md). */
struct node {
    uint64_t seq;
    struct tds_journal_loc loc;
    char *buf;                 /* entry bytes, or NULL (read from the journal) */
    size_t len;
    const char *msgid, *org, *entity; /* in str[] */
    uint64_t hash;
    int64_t deadline_ms;
    struct node *prev, *next;
    struct node *hnext;
    unsigned attempts;
    unsigned char dest;        /* enum tds_entry_dest */
    unsigned char list;
    unsigned char wait;        /* its flight list while list == L_FLIGHT */
    char str[];                /* msgid, org, entity, each NUL-terminated */
};

struct list {
    struct node *head, *tail;
    size_t n;
};

/* An entry handed over by an HTTP thread, waiting in `incoming`. */
struct tds_forward_slot {
    uint64_t seq;
    struct tds_journal_loc loc;
    char *buf;
    size_t len;
    struct tds_forward_slot *next;
};

struct tds_forward {
    struct tds_forward_opts o;
    char *origin;
    struct tds_loop *loop;
    struct tds_journal *journal;
    struct tds_events *ev;
    struct tds_bus *bus;       /* counts the bytes in the push sockets' queues */

    struct tds_bus_sock *push[N_DEST];
    struct tds_bus_sock *sub;
    bool blocked[N_DEST];
    int efd;
    int tfd;                   /* fires HELD_UP_US into a group commit (held_up()) */
    int64_t timer;

    pthread_mutex_t mu;        /* incoming */
    struct tds_forward_slot *in_head, *in_tail;
    _Atomic uint64_t synced;
    _Atomic uint64_t syncing;  /* every seq up to it is being (or was) synced */
    _Atomic int64_t syncing_us; /* when the last group commit began (monotonic) */
    _Atomic uint64_t held_woken; /* the `syncing` a held-up sync last woke the loop for */
    atomic_bool failed;

    struct list sendq[N_DEST];
    struct list flight[N_WAITS]; /* by the wait for the ack */
    struct list waiting;       /* records not durable yet when read back */
    atomic_bool parked;        /* waiting holds nodes: a completed sync wakes the loop */
    struct node **buckets;
    size_t n_buckets, n_nodes;
    size_t buffered;

    struct tds_log_limit log_send, log_ack, log_read, log_bad_ack, log_drop, log_queued;
    struct tds_series *m_unacked, *m_bytes, *m_held, *m_resends, *m_sent[N_DEST], *m_acked, *m_dead;
    struct tds_series *m_queued;
    struct tds_series *m_bad_acks, *m_drop_errors;
};

static const char *const dest_name[N_DEST] = {NULL, "processor", "fetcher"};

/* ---- lists and the id table ---- */

static void list_push(struct list *l, struct node *n, int which)
{
    n->prev = l->tail;
    n->next = NULL;
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
    l->n++;
    n->list = (unsigned char)which;
}

static void list_remove(struct list *l, struct node *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
    n->list = L_NONE;
    l->n--;
}

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;

    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int table_grow(struct tds_forward *f)
{
    size_t nb = f->n_buckets ? f->n_buckets * 2 : 1024;
    struct node **b = calloc(nb, sizeof(*b));

    if (!b)
        return -ENOMEM;
    for (size_t i = 0; i < f->n_buckets; i++) {
        for (struct node *n = f->buckets[i], *next; n; n = next) {
            next = n->hnext;
            n->hnext = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
        }
    }
    free(f->buckets);
    f->buckets = b;
    f->n_buckets = nb;
    return 0;
}

static void node_free(struct tds_forward *f, struct node *n)
{
    if (n->buf)
        f->buffered -= n->len;
    free(n->buf);
    free(n);
}

static void detach(struct tds_forward *f, struct node *n)
{
    struct node **pp = &f->buckets[n->hash & (f->n_buckets - 1)];

    while (*pp && *pp != n)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = n->hnext;
    if (n->list == L_SEND)
        list_remove(&f->sendq[n->dest], n);
    else if (n->list == L_FLIGHT)
        list_remove(&f->flight[n->wait], n);
    else if (n->list == L_WAIT)
        list_remove(&f->waiting, n);
    f->n_nodes--;
}

static const char *put_str(char **at, const char *s, size_t n)
{
    char *p = *at;

    memcpy(p, s, n);
    p[n] = '\0';
    *at = p + n + 1;
    return p;
}

/* Build a node from an entry; takes *buf. Returns NULL on bad entry/ENOMEM. */
static struct node *node_new(struct tds_forward *f, uint64_t seq, const struct tds_journal_loc *loc,
                             char **buf, size_t len)
{
    struct tds_entry e;
    struct node *n;
    char *at;

    if (tds_entry_decode(*buf, len, &e))
        return NULL;
    if (f->n_nodes + 1 > f->n_buckets && table_grow(f))
        return NULL;
    n = calloc(1, sizeof(*n) + e.msgid_len + e.org_len + e.entity_len + 3);
    if (!n)
        return NULL;
    at = n->str;
    n->seq = seq;
    n->loc = *loc;
    n->dest = (unsigned char)e.dest;
    n->len = len;
    n->msgid = put_str(&at, e.msgid, e.msgid_len);
    n->org = put_str(&at, e.org, e.org_len);
    n->entity = put_str(&at, e.entity, e.entity_len);
    n->hash = fnv(n->msgid, e.msgid_len);
    if (f->buffered + len <= f->o.max_buffered_bytes) {
        n->buf = *buf;
        *buf = NULL;
        f->buffered += len;
    }
    n->hnext = f->buckets[n->hash & (f->n_buckets - 1)];
    f->buckets[n->hash & (f->n_buckets - 1)] = n;
    f->n_nodes++;
    list_push(&f->sendq[n->dest], n, L_SEND);
    return n;
}

/* "ev-<org>:<event id>" / "fe-…" → the event id (a journal written before
 * ids carried their organization has "ev-<event id>"). */
static const char *event_id_of(const struct node *n)
{
    const char *k = strlen(n->msgid) > 3 ? n->msgid + 3 : n->msgid;
    size_t ol = strlen(n->org);

    return strncmp(k, n->org, ol) == 0 && k[ol] == ':' ? k + ol + 1 : k;
}

/* ---- sending ---- */

/* Into flight, awaiting its ack: ack_timeout_ms after its first send, twice
 * that after its second, and so on up to resend_max_ms. A message that is
 * never acked (a stage down for long, or one that dies on it) then costs a
 * send a minute, not one every ack timeout, and a resent one queued behind
 * a slow writer does not bring a third copy of itself. A node whose read
 * back failed waits as long as after its last send. */
static void to_flight(struct tds_forward *f, struct node *n, int64_t now)
{
    int64_t wait = f->o.ack_timeout_ms;
    unsigned k = 0;

    while (k + 1 < n->attempts && k + 1 < N_WAITS && wait < f->o.resend_max_ms) {
        wait *= 2;
        k++;
    }
    if (wait > f->o.resend_max_ms)
        wait = f->o.resend_max_ms;
    n->wait = (unsigned char)k;
    n->deadline_ms = now + wait;
    list_push(&f->flight[k], n, L_FLIGHT);
}

static void watch_out(struct tds_forward *f, int d, bool on)
{
    if (f->blocked[d] == on)
        return;
    f->blocked[d] = on;
    tds_loop_set_events(f->loop, tds_bus_sock_raw(f->push[d]), -1, on ? ZMQ_POLLOUT : 0);
}

/* A record that cannot be read back yet waits out of the send queue, so that
 * the nodes behind it still go. */
static void park(struct tds_forward *f, struct node *n)
{
    list_remove(&f->sendq[n->dest], n);
    list_push(&f->waiting, n, L_WAIT);
    /* Before unpark() reads the journal's synced seq: a sync that completes
     * after that read sees the flag and wakes the loop (tds_forward_synced). */
    atomic_store(&f->parked, true);
}

/* Waiting nodes whose records are durable now, or never will be (the journal
 * failed), go back to their send queues. Returns whether any did. */
static bool unpark(struct tds_forward *f)
{
    struct node *n, *next;
    bool failed, moved = false;
    uint64_t synced;

    if (!f->waiting.head)
        return false;
    synced = tds_journal_synced_seq(f->journal, &failed);
    for (n = f->waiting.head; n; n = next) {
        next = n->next;
        if (n->seq <= synced || failed) {
            list_remove(&f->waiting, n);
            list_push(&f->sendq[n->dest], n, L_SEND);
            moved = true;
        }
    }
    if (!f->waiting.head)
        atomic_store(&f->parked, false);
    return moved;
}

static void journal_acks(struct tds_forward *f, const uint64_t *seqs, size_t n);

/* A durable entry that can never be sent: counted, and acked in the journal
 * so that its segment can be dropped (else the journal fills up behind it
 * and every webhook gets 503). */
static void dead_letter(struct tds_forward *f, struct node *n)
{
    uint64_t seq = n->seq;

    tds_series_inc(f->m_dead, 1);
    detach(f, n);
    node_free(f, n);
    journal_acks(f, &seq, 1);
}

static void flush(struct tds_forward *f, int d)
{
    int64_t now = tds_now_ms();
    struct node *n;

    while ((n = f->sendq[d].head)) {
        struct tds_entry e;
        char *buf = n->buf;
        size_t len = n->len;
        int r;

        if (!buf) {
            void *p = NULL;
            bool failed;
            /* Read before the record: if it was durable then, a failed read
             * is a damaged disk, not a write still under way. */
            uint64_t synced = tds_journal_synced_seq(f->journal, &failed);

            r = tds_journal_read(f->journal, &n->loc, &p, &len);
            if (r && n->seq > synced && !failed) {
                /* Sent as its commit began, the record may not be in the file
                 * yet: over the memory budget the node never had the bytes,
                 * and a write refused for lack of space is retried later.
                 * Read it again once the sync passes it. */
                park(f, n);
                continue;
            }
            if (r && n->seq > synced) {
                /* The journal failed before this record was durable: its
                 * request got 503, and a restart resends whatever did reach
                 * the disk. */
                tds_log_limited(&f->log_read, TDS_LOG_WARN, NULL,
                                "journal record %llu was never made durable (journal "
                                "failed), not resending",
                                (unsigned long long)n->seq);
                detach(f, n);
                node_free(f, n);
                continue;
            }
            if (r < 0) {
                /* Durable, and the read failed for a reason that passes
                 * (no file descriptor or memory to spare, an I/O error):
                 * tried again after the ack timeout, like an unacked one. */
                tds_log_limited(&f->log_read, TDS_LOG_WARN, NULL,
                                "could not read journal record %llu for resend: %s, trying "
                                "again after its resend wait (at least %lld ms)",
                                (unsigned long long)n->seq, strerror(-r),
                                (long long)f->o.ack_timeout_ms);
                list_remove(&f->sendq[d], n);
                to_flight(f, n, now);
                continue;
            }
            if (r) {
                /* Durable yet damaged or gone: it can never be sent. */
                tds_log_limited(&f->log_read, TDS_LOG_ERROR, NULL,
                                "journal record %llu cannot be read for resend (record damaged "
                                "or gone): released as a dead letter",
                                (unsigned long long)n->seq);
                dead_letter(f, n);
                continue;
            }
            buf = p;
        }
        if (tds_entry_decode(buf, len, &e)) {
            if (buf != n->buf)
                free(buf);
            tds_log_limited(&f->log_read, TDS_LOG_ERROR, NULL,
                            "journal record %llu is not an ingress entry: released as a dead "
                            "letter",
                            (unsigned long long)n->seq);
            dead_letter(f, n);
            continue;
        }
        size_t queued = tds_bus_queued(f->bus);
        if (f->o.max_queued_bytes && queued > 0 && queued + e.msg_len > f->o.max_queued_bytes) {
            /* The peer takes no more (a processor whose writer stalls):
             * the queue would keep a copy of every entry, resends too.
             * Its socket stays writable, so no watch: the timer, an ack or
             * a new entry flushes again. */
            if (buf != n->buf)
                free(buf);
            tds_log_limited(&f->log_queued, TDS_LOG_WARN, NULL,
                            "%zu bytes wait in the queues to the processor and fetcher; the %s "
                            "takes no more: holding the rest (half of TDS_INGRESS_BODY_MEMORY)",
                            queued, dest_name[d]);
            watch_out(f, d, false);
            return;
        }
        r = tds_bus_send_counted(f->push[d], e.msg, e.msg_len, ZMQ_DONTWAIT);
        if (buf != n->buf)
            free(buf);
        if (r == -EAGAIN) {
            watch_out(f, d, true);
            return;
        }
        if (r) {
            tds_log_limited(&f->log_send, TDS_LOG_WARN, NULL, "could not send to %s: %s, retrying",
                            dest_name[d], strerror(-r));
            watch_out(f, d, true);
            return;
        }
        tds_series_inc(f->m_sent[d], 1);
        if (n->attempts++)
            tds_series_inc(f->m_resends, 1);
        if (d == TDS_ENTRY_FETCHER && !f->o.fetch_acks) {
            /* Fetch acks off (a fetcher that does not pass them on): the
             * fetcher took it; the scheduled incremental sync covers one it
             * loses. */
            uint64_t seq = n->seq;

            detach(f, n);
            node_free(f, n);
            tds_series_inc(f->m_acked, 1);
            if (tds_journal_ack(f->journal, &seq, 1))
                tds_log_limited(&f->log_ack, TDS_LOG_WARN, NULL,
                                "could not journal ack: out of memory, entries will be resent");
            continue;
        }
        if (n->buf) {
            f->buffered -= n->len;
            free(n->buf);
            n->buf = NULL;
        }
        list_remove(&f->sendq[d], n);
        to_flight(f, n, now);
    }
    watch_out(f, d, false);
}

static void flush_all(struct tds_forward *f)
{
    /* A node parked while its sync completed goes on the second pass: a
     * node is parked only while it is not durable, and once it is, it is
     * never parked again. */
    do {
        flush(f, TDS_ENTRY_PROCESSOR);
        flush(f, TDS_ENTRY_FETCHER);
    } while (unpark(f));
    tds_series_set(f->m_unacked, (double)f->n_nodes);
    tds_series_set(f->m_queued, (double)tds_bus_queued(f->bus));
}

static void on_writable(struct tds_loop *loop, short revents, void *ud)
{
    (void)loop;
    (void)revents;
    flush_all(ud);
}

/* ---- entries on their way to disk arrive ----
 *
 * An entry is sent once the sync thread has taken it into a group commit, so
 * that it travels while the journal writes and syncs it: the webhook reaches
 * PostgreSQL about one fdatasync sooner (ingress/DESIGN.md has the figures).
 * While one commit is held up by the disk (held_up()), entries appended
 * behind it go without waiting for theirs: the first submit past HELD_UP_US
 * wakes the loop, and so does a timer armed as the commit began (on_held),
 * should nothing be submitted after. Each one's 200 still waits for its sync
 * (http.c). If that sync fails, the request gets 503 although the entry may
 * already be on its way; Zoho sends the webhook again and the writer's
 * tds.webhook_events and guard make the second copy change nothing. What
 * the loop has not taken when the journal fails is never sent. */

/* Whether the sync thread has been on one group commit for HELD_UP_US or
 * more: its fdatasync (or write) waits for a slow disk, and it announces no
 * new commit until that returns. Entries appended meanwhile then go without
 * waiting for their own commit to begin; their 200s still wait for it. */
static bool held_up(struct tds_forward *f)
{
    return atomic_load(&f->syncing) > atomic_load(&f->synced) &&
           tds_now_us() - atomic_load(&f->syncing_us) >= HELD_UP_US;
}

static void take_syncing(struct tds_forward *f)
{
    bool failed = atomic_load(&f->failed);
    uint64_t upto = failed       ? atomic_load(&f->synced)
                    : held_up(f) ? UINT64_MAX
                                 : atomic_load(&f->syncing);
    struct tds_forward_slot *list = NULL, **tail = &list, *last = NULL;

    pthread_mutex_lock(&f->mu);
    while (f->in_head && (f->in_head->seq <= upto || failed)) {
        struct tds_forward_slot *i = f->in_head;

        f->in_head = i->next;
        i->next = NULL;
        *tail = i;
        tail = &i->next;
        last = i;
    }
    if (!f->in_head)
        f->in_tail = NULL;
    pthread_mutex_unlock(&f->mu);

    while (list) {
        struct tds_forward_slot *i = list;

        /* Past a failed sync, entries above `synced` that had not gone yet
         * were never durable and their requests got 503: they stay here. */
        if (i->seq <= upto) {
            struct tds_entry e;
            struct node *n = NULL;

            if (tds_entry_decode(i->buf, i->len, &e) == 0 &&
                !(n = node_new(f, i->seq, &i->loc, &i->buf, i->len))) {
                /* Out of memory: this one and those after it wait at the
                 * head of the queue for the timer's next try (journaled,
                 * they must not be lost before a restart would find them). */
                tds_log_limited(&f->log_send, TDS_LOG_WARN, NULL,
                                "out of memory: journaled webhooks wait to be forwarded");
                pthread_mutex_lock(&f->mu);
                last->next = f->in_head;
                if (!f->in_head)
                    f->in_tail = last;
                f->in_head = list;
                pthread_mutex_unlock(&f->mu);
                return;
            }
            if (n) {
                tds_events_emit(f->ev, "tds.zoho.webhook.received", "org", n->org, "entity",
                                n->entity, "event_id", event_id_of(n), NULL);
            } else {
                tds_log_limited(&f->log_read, TDS_LOG_ERROR, NULL,
                                "journal record %llu is not an ingress entry: released as a "
                                "dead letter",
                                (unsigned long long)i->seq);
                tds_series_inc(f->m_dead, 1);
                journal_acks(f, &i->seq, 1);
            }
        }
        list = i->next;
        free(i->buf);
        free(i);
    }
}

/* The eventfd or the timerfd is readable: clear it, take what may go, send. */
static void take_on(struct tds_forward *f, int fd)
{
    uint64_t v;

    if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        return;
    take_syncing(f);
    flush_all(f);
}

static void on_efd(struct tds_loop *loop, short revents, void *ud)
{
    (void)loop;
    (void)revents;
    take_on(ud, ((struct tds_forward *)ud)->efd);
}

/* HELD_UP_US into a group commit that has not ended: whatever was appended
 * since it began goes now. */
static void on_held(struct tds_loop *loop, short revents, void *ud)
{
    (void)loop;
    (void)revents;
    take_on(ud, ((struct tds_forward *)ud)->tfd);
}

/* The timer of held_up(): at `at_us` on the monotonic clock, or never (0).
 * Called by the sync thread only. */
static void arm_held(struct tds_forward *f, int64_t at_us)
{
    struct itimerspec its = {0};

    its.it_value.tv_sec = at_us / 1000000;
    its.it_value.tv_nsec = (at_us % 1000000) * 1000;
    if (timerfd_settime(f->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
        /* only EINVAL, for values this code never makes: the submits'
         * wake-ups still send what a held-up commit holds back */
    }
}

static void wake(struct tds_forward *f)
{
    uint64_t one = 1;

    if (write(f->efd, &one, sizeof(one)) < 0) {
        /* eventfd only fails on counter overflow: the loop is awake anyway. */
    }
}

int tds_forward_slot_new(struct tds_forward_slot **out)
{
    struct tds_forward_slot *i = calloc(1, sizeof(*i));

    if (!i)
        return -ENOMEM;
    *out = i;
    return 0;
}

struct tds_forward_slot *tds_forward_slot_free(struct tds_forward_slot *i)
{
    if (i) {
        free(i->buf);
        free(i);
    }
    return NULL;
}

void tds_forward_submit(struct tds_forward *f, struct tds_forward_slot **slot, uint64_t seq,
                        const struct tds_journal_loc *loc, char **buf, size_t len)
{
    struct tds_forward_slot *i = *slot;
    uint64_t syncing;
    bool first;

    *slot = NULL;
    *i = (struct tds_forward_slot){seq, *loc, *buf, len, NULL};
    *buf = NULL;
    pthread_mutex_lock(&f->mu);
    first = !f->in_head;
    if (f->in_tail)
        f->in_tail->next = i;
    else
        f->in_head = i;
    f->in_tail = i;
    pthread_mutex_unlock(&f->mu);
    /* The sync thread may have taken this entry's chunk (and woken the loop)
     * before it got here: then wake the loop again, or the entry would wait
     * for the next commit. */
    syncing = atomic_load(&f->syncing);
    if (seq <= syncing) {
        wake(f);
        return;
    }
    /* A sync held up by the disk: the first entry after HELD_UP_US wakes
     * the loop, which takes every entry waiting; each one after that finds
     * the queue empty and wakes it again. Only held-up syncs pay a wake-up
     * per webhook; the others, one per group commit. */
    if (held_up(f) && (first || atomic_exchange(&f->held_woken, syncing) != syncing))
        wake(f);
}

void tds_forward_syncing(struct tds_forward *f, uint64_t upto)
{
    int64_t now = tds_now_us();

    atomic_store(&f->syncing_us, now);
    atomic_store(&f->syncing, upto);
    /* Should this commit be held up, the loop takes what was appended in
     * its first HELD_UP_US too, even if nothing is appended after. */
    arm_held(f, now + HELD_UP_US);
    wake(f);
}

void tds_forward_synced(struct tds_forward *f, uint64_t synced, bool failed)
{
    /* A sync that succeeded sends nothing new: its entries went when it
     * began (tds_forward_syncing). Only records read back too early wait
     * for it (park()). */
    arm_held(f, 0);
    if (failed) {
        atomic_store(&f->failed, true);
        wake(f);
    } else {
        atomic_store(&f->synced, synced);
        if (atomic_load(&f->parked))
            wake(f);
    }
}

void tds_forward_dead(struct tds_forward *f, size_t n) { tds_series_inc(f->m_dead, (double)n); }

int tds_forward_recover(struct tds_forward *f, uint64_t seq, const struct tds_journal_loc *loc,
                        const void *payload, size_t len)
{
    char *buf = malloc(len ? len : 1);
    struct node *n;

    if (!buf)
        return -ENOMEM;
    memcpy(buf, payload, len);
    n = node_new(f, seq, loc, &buf, len);
    free(buf);
    /* the caller decoded it: out of memory, and the start fails (a node
     * missing would hold its segment until the next start) */
    if (!n)
        return -ENOMEM;
    /* Sent before the restart (as its group commit began): the next send
     * is a resend, and tds_ingress_resends_total counts it. */
    n->attempts = 1;
    return 0;
}

/* ---- acks ---- */

static void journal_acks(struct tds_forward *f, const uint64_t *seqs, size_t n)
{
    if (n && tds_journal_ack(f->journal, seqs, n))
        tds_log_limited(&f->log_ack, TDS_LOG_WARN, NULL,
                        "could not journal ack: out of memory, entries will be resent");
}

static void handle_ack(struct tds_forward *f, const struct tds_msg_ack *a)
{
    uint64_t *seqs;
    size_t n = 0, cap;

    if (!a->n_ids)
        return;
    cap = a->n_ids * 2;
    seqs = malloc(cap * sizeof(*seqs));
    if (!seqs)
        return;
    for (size_t i = 0; i < a->n_ids; i++) {
        uint64_t h = fnv(a->ids[i], strlen(a->ids[i]));
        struct node *nd = f->buckets[h & (f->n_buckets - 1)], *next;

        /* The same id may be journaled more than once (deliveries outside
         * the dedupe window); one ack releases them all, and every seq it
         * releases is journaled as acked, or its segment outlives it. */
        for (; nd; nd = next) {
            next = nd->hnext;
            if (nd->hash != h || strcmp(nd->msgid, a->ids[i]) != 0)
                continue;
            if (n == cap) {
                journal_acks(f, seqs, n);
                n = 0;
            }
            seqs[n++] = nd->seq;
            tds_events_emit(f->ev, "tds.zoho.webhook.processed", "org", nd->org, "entity",
                            nd->entity, "event_id", event_id_of(nd), NULL);
            detach(f, nd);
            node_free(f, nd);
            tds_series_inc(f->m_acked, 1);
        }
    }
    journal_acks(f, seqs, n);
    free(seqs);
}

/* Something on the ack topic that is no ack: a writer of another version, or
 * a stray publisher. It names no entry, so nothing is lost (the entries it
 * might have acked are sent again after the ack timeout): counted apart from
 * the dead letters, which are webhooks that can never be sent. */
static void bad_ack(struct tds_forward *f, const char *what)
{
    tds_series_inc(f->m_bad_acks, 1);
    tds_log_limited(&f->log_bad_ack, TDS_LOG_WARN, NULL,
                    "dropped an undecodable ack (%s), skipping", what);
}

static void on_ack(struct tds_loop *loop, short revents, void *ud)
{
    struct tds_forward *f = ud;

    (void)revents;
    for (int k = 0; k < 1000; k++) {
        char *topic = NULL, *body = NULL;
        size_t tlen = 0, blen = 0;
        int more = 0, r;
        struct tds_msg m;

        r = tds_bus_recv(f->sub, &topic, &tlen, 256, ZMQ_DONTWAIT, &more);
        if (r == -EAGAIN) {
            tds_loop_zsock_drained(loop, tds_bus_sock_raw(f->sub));
            break;
        }
        if (r || !more) {
            free(topic);
            if (more) /* a topic over 256 bytes: its body is no topic */
                tds_bus_skip_rest(f->sub);
            bad_ack(f, "one frame, or a topic over 256 bytes");
            continue;
        }
        r = tds_bus_recv(f->sub, &body, &blen, ACK_FRAME_MAX, 0, &more);
        while (more) { /* an ack is exactly two frames: drain the rest, drop it */
            char *x = NULL;
            size_t xl;

            if (tds_bus_recv(f->sub, &x, &xl, ACK_FRAME_MAX, 0, &more) < 0)
                more = 0;
            free(x);
            r = 1;
        }
        if (r == 0 && tds_msg_decode(body, blen, &m) == 0) {
            /* Subscriptions match prefixes: "ingress.a" also hears "ingress.ab". */
            if (m.type == TDS_MSG_ACK && m.u.ack.origin && strcmp(m.u.ack.origin, f->origin) == 0)
                handle_ack(f, &m.u.ack);
            tds_msg_clear(&m);
        } else {
            bad_ack(f, "more than two frames, a body over 4 MiB, or one that does not decode");
        }
        free(topic);
        free(body);
    }
    tds_series_set(f->m_unacked, (double)f->n_nodes);
    flush_all(f);
}

/* ---- timers ---- */

static void on_timer(struct tds_loop *loop, void *ud)
{
    struct tds_forward *f = ud;
    int64_t now = tds_now_ms();
    struct node *n;

    (void)loop;
    take_syncing(f); /* in case an eventfd wake-up raced with the last read */
    for (int k = 0; k < N_WAITS; k++)
        while ((n = f->flight[k].head) && n->deadline_ms <= now) {
            list_remove(&f->flight[k], n);
            list_push(&f->sendq[n->dest], n, L_SEND);
        }
    flush_all(f);
}

void tds_forward_tick(struct tds_forward *f)
{
    uint64_t seg;
    int e;

    tds_journal_gc(f->journal, tds_wall_ms());
    if ((e = tds_journal_drop_error(f->journal, &seg))) {
        tds_series_inc(f->m_drop_errors, 1);
        tds_log_limited(&f->log_drop, TDS_LOG_ERROR, NULL,
                        "could not delete acked journal segment %020llu.seg: %s; it stays, "
                        "counted against TDS_INGRESS_JOURNAL_MAX_BYTES, and is tried again each "
                        "second",
                        (unsigned long long)seg, strerror(e));
    }
    tds_series_set(f->m_bytes, (double)tds_journal_bytes(f->journal));
    tds_series_set(f->m_held, tds_journal_held_ratio(f->journal));
    tds_series_set(f->m_unacked, (double)f->n_nodes);
    tds_series_set(f->m_queued, (double)tds_bus_queued(f->bus));
}

size_t tds_forward_unacked(struct tds_forward *f) { return f->n_nodes; }

/* ---- lifecycle ---- */

int tds_forward_new(struct tds_forward **out, const struct tds_forward_opts *o,
                    struct tds_loop *loop, struct tds_bus *bus, struct tds_journal *j,
                    struct tds_metrics *m, struct tds_events *ev)
{
    struct tds_bus_opts bo = {.hwm = o->hwm, .linger_ms = 0, .reconnect_ms = 100};
    struct tds_forward *f;
    int64_t every;
    int r;

    f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->o = *o;
    if (f->o.resend_max_ms < f->o.ack_timeout_ms)
        f->o.resend_max_ms = f->o.ack_timeout_ms;
    f->efd = -1;
    f->tfd = -1;
    f->loop = loop;
    f->journal = j;
    f->ev = ev;
    f->bus = bus;
    f->log_send.interval_ms = f->log_ack.interval_ms = f->log_read.interval_ms = 10000;
    f->log_bad_ack.interval_ms = f->log_drop.interval_ms = 10000;
    pthread_mutex_init(&f->mu, NULL);
    f->origin = strdup(o->origin);
    if (!f->origin || table_grow(f)) {
        r = -ENOMEM;
        goto fail;
    }
    f->m_unacked = tds_metrics_get(m, TDS_GAUGE, "tds_ingress_unacked",
                                   "journaled webhooks not yet acknowledged by the writer", "",
                                   NULL, 0);
    f->m_bytes = tds_metrics_get(m, TDS_GAUGE, "tds_ingress_journal_bytes",
                                 "bytes in journal segments on disk", "", NULL, 0);
    f->m_held = tds_metrics_get(m, TDS_GAUGE, "tds_ingress_journal_held_ratio",
                                "share of TDS_INGRESS_JOURNAL_MAX_BYTES taken by segments that "
                                "cannot be freed (from the first one holding an unacked entry "
                                "on); at 1 webhooks get 503", "", NULL, 0);
    f->m_queued = tds_metrics_get(m, TDS_GAUGE, "tds_ingress_send_queue_bytes",
                                  "bytes of messages in the send queues to the processor and "
                                  "fetcher (at most half of TDS_INGRESS_BODY_MEMORY)", "", NULL, 0);
    f->m_resends = tds_metrics_get(m, TDS_COUNTER, "tds_ingress_resends_total",
                                   "messages sent again after the ack timeout or a restart", "",
                                   NULL, 0);
    f->m_acked = tds_metrics_get(m, TDS_COUNTER, "tds_ingress_acked_total",
                                 "journal entries released by a writer ack", "", NULL, 0);
    f->m_dead = tds_metrics_get(m, TDS_COUNTER, "tds_ingress_dead_letters_total",
                                "journaled webhooks that can never be sent (record damaged, gone, "
                                "or not an entry this version reads), released",
                                "", NULL, 0);
    f->m_bad_acks = tds_metrics_get(m, TDS_COUNTER, "tds_ingress_bad_acks_total",
                                    "messages on the ack topic that are no ack (undecodable, or "
                                    "not two frames), dropped",
                                    "", NULL, 0);
    f->m_drop_errors = tds_metrics_get(m, TDS_COUNTER, "tds_ingress_journal_delete_errors_total",
                                       "failed deletes of acked journal segments (kept and tried "
                                       "again)",
                                       "", NULL, 0);
    for (int d = 1; d < N_DEST; d++)
        f->m_sent[d] = tds_metrics_getf(m, TDS_COUNTER, "tds_ingress_forwarded_total",
                                        "messages sent downstream, by destination",
                                        "dest=\"%s\"", dest_name[d]);
    if (!f->m_unacked || !f->m_bytes || !f->m_held || !f->m_resends || !f->m_acked || !f->m_dead ||
        !f->m_bad_acks || !f->m_drop_errors || !f->m_sent[1] || !f->m_sent[2]) {
        r = -ENOMEM;
        goto fail;
    }

    for (int d = 1; d < N_DEST; d++) {
        r = tds_bus_sock_new(bus, ZMQ_PUSH, &bo, &f->push[d]);
        if (r)
            goto fail;
        r = tds_bus_connect(f->push[d], d == TDS_ENTRY_PROCESSOR ? o->processor_connect
                                                                 : o->fetcher_connect);
        if (r)
            goto fail;
        r = tds_loop_add_zsock(loop, tds_bus_sock_raw(f->push[d]), 0, on_writable, f);
        if (r)
            goto fail;
    }
    r = tds_bus_sock_new(bus, ZMQ_SUB, NULL, &f->sub);
    if (r)
        goto fail;
    if ((r = tds_bus_subscribe(f->sub, f->origin)) || (r = tds_bus_connect(f->sub, o->ack_connect)))
        goto fail;
    r = tds_loop_add_zsock(loop, tds_bus_sock_raw(f->sub), ZMQ_POLLIN, on_ack, f);
    if (r)
        goto fail;
    f->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (f->efd < 0) {
        r = -errno;
        goto fail;
    }
    r = tds_loop_add_fd(loop, f->efd, ZMQ_POLLIN, on_efd, f);
    if (r)
        goto fail;
    f->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (f->tfd < 0) {
        r = -errno;
        goto fail;
    }
    r = tds_loop_add_fd(loop, f->tfd, ZMQ_POLLIN, on_held, f);
    if (r)
        goto fail;
    every = o->ack_timeout_ms / 4;
    every = every < 20 ? 20 : every > 1000 ? 1000 : every;
    f->timer = tds_loop_timer_add(loop, every, every, on_timer, f);
    if (f->timer < 0) {
        r = (int)f->timer;
        goto fail;
    }
    *out = f;
    return 0;
fail:
    tds_forward_free(f);
    return r;
}

void tds_forward_set_journal(struct tds_forward *f, struct tds_journal *j) { f->journal = j; }

struct tds_forward *tds_forward_free(struct tds_forward *f)
{
    if (!f)
        return NULL;
    if (f->loop) {
        for (int d = 1; d < N_DEST; d++)
            if (f->push[d])
                tds_loop_remove_zsock(f->loop, tds_bus_sock_raw(f->push[d]));
        if (f->sub)
            tds_loop_remove_zsock(f->loop, tds_bus_sock_raw(f->sub));
        if (f->efd >= 0)
            tds_loop_remove_fd(f->loop, f->efd);
        if (f->tfd >= 0)
            tds_loop_remove_fd(f->loop, f->tfd);
        if (f->timer > 0)
            tds_loop_timer_cancel(f->loop, f->timer);
    }
    for (size_t i = 0; i < f->n_buckets; i++) {
        for (struct node *n = f->buckets[i], *next; n; n = next) {
            next = n->hnext;
            node_free(f, n);
        }
    }
    free(f->buckets);
    while (f->in_head) {
        struct tds_forward_slot *i = f->in_head;

        f->in_head = i->next;
        free(i->buf);
        free(i);
    }
    for (int d = 1; d < N_DEST; d++)
        tds_bus_sock_free(f->push[d]);
    tds_bus_sock_free(f->sub);
    if (f->efd >= 0)
        close(f->efd);
    if (f->tfd >= 0)
        close(f->tfd);
    pthread_mutex_destroy(&f->mu);
    free(f->origin);
    free(f);
    return NULL;
}
