/* Unit tests for ingress/journal.c: append/sync/reopen with ack state, read
 * back, torn tails (truncated and garbage), damage inside a segment, segment release by acks and by
 * the byte bound, the full journal, group commit across threads, the
 * callback that announces a group commit before its writes, the wait of a
 * small group commit for company, the zero-filled tail of a segment, the bound
 * on unacked entries, acks read back across segments, what an open holds
 * in memory, acks within the byte bound, an ack call over what one record
 * may carry, no inode left for the next segment (a tmpfs the test mounts,
 * as root), a segment that holds only acks when the next entry comes, and
 * an ack call without memory for its record. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <dirent.h>

#include "assert.h"
#include "journal.h"
#include "util.h"

static char dir[256];

/* Allocation failures on demand: this test is linked with --wrap for malloc
 * (meson.build), so the journal's allocations come here. fail_in = k makes
 * the k-th one from now fail; 0 fails none. Only for tests without the sync
 * thread: the count is not shared safely between threads. */
static long fail_in;
void *__real_malloc(size_t n);

void *__wrap_malloc(size_t n)
{
    return fail_in > 0 && --fail_in == 0 ? NULL : __real_malloc(n);
}

/* Deletes that fail on demand (--wrap=unlinkat too): while unlink_errno is
 * set, every unlinkat fails with it. */
static int unlink_errno;
int __real_unlinkat(int dirfd, const char *path, int flags);

int __wrap_unlinkat(int dirfd, const char *path, int flags)
{
    if (unlink_errno) {
        errno = unlink_errno;
        return -1;
    }
    return __real_unlinkat(dirfd, path, flags);
}

static void fresh_dir(void)
{
    char cmd[300];

    snprintf(dir, sizeof(dir), "/tmp/tds-journal-test-%d", (int)getpid());
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    T_INT(system(cmd), ==, 0);
}

static struct tds_journal_opts opts(uint64_t max, uint64_t seg)
{
    return (struct tds_journal_opts){.dir = dir, .max_bytes = max, .segment_bytes = seg,
                                     .retention_ms = 3600 * 1000};
}

struct seen {
    uint64_t seqs[4096];
    bool acked[4096];
    char first[64];
    size_t n;
};

static int collect(const struct tds_journal_rec *r, void *ud)
{
    struct seen *s = ud;

    if (s->n == 0)
        snprintf(s->first, sizeof(s->first), "%.*s", (int)r->len, (const char *)r->payload);
    s->seqs[s->n] = r->seq;
    s->acked[s->n] = r->acked;
    s->n++;
    return 0;
}

static void append_n(struct tds_journal *j, int n, uint64_t *seqs, struct tds_journal_loc *locs)
{
    for (int i = 0; i < n; i++) {
        char p[64];
        int len = snprintf(p, sizeof(p), "payload-%d", i);
        uint64_t seq;
        struct tds_journal_loc loc;

        T_INT(tds_journal_append(j, p, (size_t)len, 1000 + i, &seq, &loc), ==, 0);
        if (seqs)
            seqs[i] = seq;
        if (locs)
            locs[i] = loc;
    }
}

static void test_append_reopen(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct tds_journal_loc locs[10];
    uint64_t seqs[10];
    struct seen s = {0};
    struct tds_journal_open_info info;
    void *buf;
    size_t len;

    fresh_dir();
    o = opts(1 << 20, 1 << 16);
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    append_n(j, 10, seqs, locs);
    T_INT(seqs[0], ==, 1);
    T_INT(tds_journal_state(j, seqs[9]), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    T_INT(tds_journal_state(j, seqs[9]), ==, 1);
    T_INT(tds_journal_wait(j, seqs[9], 10), ==, 0);
    T_INT(tds_journal_read(j, &locs[3], &buf, &len), ==, 0);
    T_INT(len, ==, 9);
    T_TRUE(memcmp(buf, "payload-3", 9) == 0);
    free(buf);
    T_INT(tds_journal_ack(j, (uint64_t[]){seqs[0], seqs[5]}, 2), ==, 0);
    T_INT(tds_journal_unacked(j), ==, 8);
    j = tds_journal_close(j);

    T_INT(tds_journal_open(&j, &o, collect, &s, &info), ==, 0);
    T_INT(s.n, ==, 10);
    T_INT(info.unacked, ==, 8);
    T_INT(info.torn, ==, 0);
    T_STR(s.first, "payload-0");
    T_TRUE(s.acked[0] && s.acked[5] && !s.acked[1] && !s.acked[9]);
    /* Seqs continue after a restart. */
    {
        uint64_t seq;
        struct tds_journal_loc loc;

        T_INT(tds_journal_append(j, "x", 1, 5000, &seq, &loc), ==, 0);
        T_INT(seq, ==, 11);
        T_INT(loc.seg, ==, 11);
    }
    tds_journal_close(j);
}

/* Newest segment file in dir. */
static void last_segment(char *path, size_t n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char best[300] = "";

    T_TRUE(d != NULL);
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".seg") && strcmp(e->d_name, best) > 0)
            snprintf(best, sizeof(best), "%s", e->d_name);
    closedir(d);
    snprintf(path, n, "%s/%s", dir, best);
}

static void test_torn_tail(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct tds_journal_open_info info;
    struct seen s = {0};
    struct stat st;
    char path[700];
    int fd;

    fresh_dir();
    o = opts(1 << 20, 1 << 20);
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    append_n(j, 5, NULL, NULL);
    T_INT(tds_journal_sync(j), ==, 0);
    j = tds_journal_close(j);

    /* Crash mid-write: the last record loses its last 3 bytes. */
    last_segment(path, sizeof(path));
    T_INT(stat(path, &st), ==, 0);
    T_INT(truncate(path, st.st_size - 3), ==, 0);
    T_INT(tds_journal_open(&j, &o, collect, &s, &info), ==, 0);
    T_INT(s.n, ==, 4);
    T_INT(info.torn, ==, 1);
    j = tds_journal_close(j);

    /* Garbage after the last good record of a segment: a flipped payload byte. */
    fresh_dir();
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    append_n(j, 3, NULL, NULL);
    j = tds_journal_close(j);
    last_segment(path, sizeof(path));
    T_INT(stat(path, &st), ==, 0);
    fd = open(path, O_WRONLY);
    T_TRUE(fd >= 0);
    T_INT(pwrite(fd, "Z", 1, st.st_size - 1), ==, 1);
    T_INT(pwrite(fd, "garbage-garbage-garbage-garbage-garbage", 39, st.st_size), ==, 39);
    close(fd);
    memset(&s, 0, sizeof(s));
    T_INT(tds_journal_open(&j, &o, collect, &s, &info), ==, 0);
    T_INT(s.n, ==, 2);
    T_INT(info.torn, ==, 1);
    tds_journal_close(j);
    /* The torn bytes were cut off, so the next open sees a clean segment. */
    memset(&s, 0, sizeof(s));
    T_INT(tds_journal_open(&j, &o, collect, &s, &info), ==, 0);
    T_INT(s.n, ==, 2);
    T_INT(info.torn, ==, 0);
    tds_journal_close(j);
}

/* Damage inside a segment, not at its end (a bad disk block): the records
 * behind it that check out are kept, the damaged stretch is skipped and
 * counted, and the file is left as it is, so every later open (and a
 * read-only one, as replay's) finds the same. Before, the open cut the
 * segment at the first bad record, with every entry after it. */
static void flip(const char *path, off_t at)
{
    unsigned char c;
    int fd = open(path, O_RDWR);

    T_TRUE(fd >= 0);
    T_INT(pread(fd, &c, 1, at), ==, 1);
    c ^= 0x20;
    T_INT(pwrite(fd, &c, 1, at), ==, 1);
    close(fd);
}

static void test_damage_inside_a_segment(void)
{
    const off_t rec = 32 + 9; /* "payload-N" */
    struct tds_journal *j = NULL;
    struct tds_journal_opts o, ro;
    struct tds_journal_open_info info;
    struct seen s = {0};
    uint64_t seqs[5], seq;
    struct tds_journal_loc loc;
    struct stat st;
    char first[700];

    fresh_dir();
    o = opts(1 << 20, 1 << 20);
    ro = o;
    ro.read_only = true;
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    append_n(j, 5, seqs, NULL);
    T_INT(tds_journal_ack(j, &seqs[3], 1), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    j = tds_journal_close(j);
    last_segment(first, sizeof(first));
    T_INT(stat(first, &st), ==, 0);
    T_INT(st.st_size, ==, 5 * rec + 32 + 8);

    /* a payload byte of the second entry */
    flip(first, rec + 32 + 3);
    T_INT(tds_journal_open(&j, &o, collect, &s, &info), ==, 0);
    T_INT(s.n, ==, 4);
    T_INT(s.seqs[0], ==, seqs[0]);
    T_INT(s.seqs[1], ==, seqs[2]);
    T_INT(s.seqs[2], ==, seqs[3]);
    T_INT(s.seqs[3], ==, seqs[4]);
    T_TRUE(!s.acked[0] && !s.acked[1] && s.acked[2] && !s.acked[3]);
    T_INT(info.torn, ==, 0);
    T_INT(info.damaged, ==, 1);
    T_INT(info.damaged_bytes, ==, rec);
    T_INT(info.unacked, ==, 3);
    /* a new entry goes to a new segment, after the last seq found */
    T_INT(tds_journal_append(j, "later", 5, 2000, &seq, &loc), ==, 0);
    T_INT(seq, ==, seqs[4] + 1);
    T_INT(tds_journal_sync(j), ==, 0);
    j = tds_journal_close(j);
    T_INT(stat(first, &st), ==, 0);
    T_INT(st.st_size, ==, 5 * rec + 32 + 8);

    /* the magic of the fifth entry's header too, with the ack record after
     * it torn: a tail with no whole record left, cut. A read-only open (as
     * replay's) sees the same and changes nothing. */
    flip(first, 4 * rec);
    T_INT(truncate(first, 5 * rec + 32 + 5), ==, 0);
    for (int k = 0; k < 3; k++) {
        struct tds_journal *r = NULL;

        memset(&s, 0, sizeof(s));
        T_INT(tds_journal_open(&r, k < 2 ? &ro : &o, collect, &s, &info), ==, 0);
        T_INT(s.n, ==, 4);
        T_INT(s.seqs[0], ==, seqs[0]);
        T_INT(s.seqs[1], ==, seqs[2]);
        T_INT(s.seqs[2], ==, seqs[3]);
        T_TRUE(!s.acked[2]); /* its ack was in the torn record */
        T_INT(s.seqs[3], ==, seq);
        T_INT(info.damaged, ==, 1);
        T_INT(info.damaged_bytes, ==, rec);
        T_INT(info.torn, ==, 1);
        tds_journal_close(r);
        T_INT(stat(first, &st), ==, 0);
        T_INT(st.st_size, ==, k < 2 ? 5 * rec + 32 + 5 : 4 * rec);
    }
    /* cut: no torn record left, the hole still skipped */
    memset(&s, 0, sizeof(s));
    T_INT(tds_journal_open(&j, &o, collect, &s, &info), ==, 0);
    T_INT(s.n, ==, 4);
    T_INT(info.damaged, ==, 1);
    T_INT(info.torn, ==, 0);
    tds_journal_close(j);
    fresh_dir();
}

static void test_segment_release(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    uint64_t seqs[100];
    size_t before;

    fresh_dir();
    /* ~41-byte records, 400-byte segments: about 10 records each. */
    o = opts(1 << 20, 400);
    o.retention_ms = 0;
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    append_n(j, 100, seqs, NULL);
    T_INT(tds_journal_sync(j), ==, 0);
    before = tds_journal_segments(j);
    T_INT(before, >=, 10);
    /* Nothing acked: nothing goes. */
    T_INT(tds_journal_gc(j, 1000000), ==, 0);
    /* Ack all but one in the middle: only segments before it go. */
    for (int i = 0; i < 100; i++)
        if (i != 50)
            T_INT(tds_journal_ack(j, &seqs[i], 1), ==, 0);
    T_INT(tds_journal_gc(j, 1000000), >, 0);
    T_INT(tds_journal_segments(j), <, before);
    T_INT(tds_journal_segments(j), >, 1);
    T_INT(tds_journal_unacked(j), ==, 1);
    T_INT(tds_journal_ack(j, &seqs[50], 1), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    T_INT(tds_journal_gc(j, 1000000), >, 0);
    T_INT(tds_journal_segments(j), ==, 1); /* only the active one */
    T_INT(tds_journal_unacked(j), ==, 0);
    tds_journal_close(j);
}

static void test_retention_keeps_acked(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    uint64_t seqs[40];

    fresh_dir();
    o = opts(1 << 20, 400);
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    append_n(j, 40, seqs, NULL);
    T_INT(tds_journal_ack(j, seqs, 40), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    /* Inside the retention (records at wall 1000..1039): kept for replay. */
    T_INT(tds_journal_gc(j, 2000), ==, 0);
    T_INT(tds_journal_gc(j, 1000 + 3600 * 1000 + 100), >, 0);
    tds_journal_close(j);
}

static void test_full(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct tds_journal_loc loc;
    uint64_t seqs[64], seq;
    char big[200];
    int n = 0, r;

    fresh_dir();
    o = opts(2000, 500);
    o.retention_ms = 0;
    memset(big, 'x', sizeof(big));
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    while ((r = tds_journal_append(j, big, sizeof(big), 1000, &seqs[n], &loc)) == 0)
        n++;
    T_INT(r, ==, TDS_JOURNAL_E_FULL);
    T_INT(n, ==, 7); /* 232 bytes each, and 40 kept for its ack (test_acks_within_the_bound) */
    T_INT(tds_journal_bytes(j), <=, 2000);
    T_INT(tds_journal_sync(j), ==, 0);
    /* Still full while unacked: the journal never drops unacked data. */
    T_INT(tds_journal_append(j, big, sizeof(big), 1000, &seq, &loc), ==, TDS_JOURNAL_E_FULL);
    /* Acks free whole segments; the next append makes room inline. */
    T_INT(tds_journal_ack(j, seqs, (size_t)n), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    T_INT(tds_journal_append(j, big, sizeof(big), 2000, &seq, &loc), ==, 0);
    T_INT(tds_journal_bytes(j), <=, 2000);
    T_INT(tds_journal_append(j, big, TDS_JOURNAL_MAX_PAYLOAD + 1u, 2000, &seq, &loc), ==,
          TDS_E_TOO_LARGE);
    tds_journal_close(j);
}

/* Ack records count against max_bytes like entries: each unacked entry keeps
 * room for its ack (8 bytes and, acked alone, a record header). Before, a
 * journal filled with unacked entries grew past its bound by the acks that
 * released them (424,008 bytes under a 409,600 bound). Here the worst case:
 * every entry acked in a call of its own. */
static void test_acks_within_the_bound(void)
{
    enum { MAX = 4000 };
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct tds_journal_loc loc;
    struct tds_journal_open_info info;
    uint64_t seqs[64];
    char p[100];
    int n = 0, r;

    fresh_dir();
    o = opts(MAX, 1000);
    memset(p, 'a', sizeof(p));
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    while ((r = tds_journal_append(j, p, sizeof(p), 1000, &seqs[n], &loc)) == 0)
        n++;
    T_INT(r, ==, TDS_JOURNAL_E_FULL);
    T_INT(n, >=, 20);
    T_INT(tds_journal_sync(j), ==, 0);
    for (int i = 0; i < n; i++) {
        T_INT(tds_journal_ack(j, &seqs[i], 1), ==, 0);
        T_INT(tds_journal_bytes(j), <=, MAX);
    }
    T_INT(tds_journal_sync(j), ==, 0);
    j = tds_journal_close(j);
    T_INT(tds_journal_open(&j, &o, NULL, NULL, &info), ==, 0);
    T_INT(info.unacked, ==, 0);
    T_INT(tds_journal_bytes(j), <=, MAX);
    tds_journal_close(j);
}

struct worker {
    struct tds_journal *j;
    int n;
    int failures;
};

static void *work(void *arg)
{
    struct worker *w = arg;

    for (int i = 0; i < w->n; i++) {
        uint64_t seq;
        struct tds_journal_loc loc;
        char p[1024];

        memset(p, 'a' + i % 26, sizeof(p));
        if (tds_journal_append(w->j, p, sizeof(p), 1000, &seq, &loc) ||
            tds_journal_wait(w->j, seq, 5000) || tds_journal_state(w->j, seq) != 1)
            w->failures++;
    }
    return NULL;
}

static uint64_t batches, entries;

static void on_stats(uint64_t batch, double s, void *ud)
{
    (void)s;
    (void)ud;
    batches++;
    entries += batch;
}

static void test_group_commit(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct worker w[16];
    pthread_t t[16];
    struct seen *s = calloc(1, sizeof(*s));

    fresh_dir();
    o = opts(64 << 20, 1 << 20);
    o.sync_thread = true;
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    tds_journal_on_stats(j, on_stats, NULL);
    for (int i = 0; i < 16; i++) {
        w[i] = (struct worker){j, 200, 0};
        T_INT(pthread_create(&t[i], NULL, work, &w[i]), ==, 0);
    }
    for (int i = 0; i < 16; i++) {
        pthread_join(t[i], NULL);
        T_INT(w[i].failures, ==, 0);
    }
    /* The sync thread reports a batch after waking its waiters: count once
     * it has stopped. */
    j = tds_journal_close(j);
    T_INT(entries, ==, 3200);
    /* 16 writers waiting on each sync: far fewer syncs than entries. */
    fprintf(stderr, "group commit: %llu entries in %llu syncs\n", (unsigned long long)entries,
            (unsigned long long)batches);
    T_INT(batches, <, 3200 / 2);
    o.sync_thread = false;
    T_INT(tds_journal_open(&j, &o, collect, s, NULL), ==, 0);
    T_INT(s->n, ==, 3200);
    for (size_t i = 0; i < s->n; i++)
        T_INT(s->seqs[i], ==, i + 1);
    tds_journal_close(j);
    free(s);
    fresh_dir();
}

static void copy_file(const char *from, const char *to)
{
    char cmd[1500];

    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
    T_INT(system(cmd), ==, 0);
}

/* The active segment is written ahead in zeros (its fdatasync then writes
 * data only); a crash leaves that zero tail, which the next open takes for
 * the segment's end and cuts, not for a torn record. A torn record in front
 * of the zeros is still one. A segment that stops taking writes is cut back
 * to its records. */
static void test_zero_tail(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct tds_journal_open_info info;
    struct seen s = {0};
    struct stat st;
    char path[700], saved[800];
    uint64_t logical;
    int fd;

    fresh_dir();
    o = opts(64 << 20, 4 << 20);
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    append_n(j, 3, NULL, NULL);
    T_INT(tds_journal_sync(j), ==, 0);
    logical = tds_journal_bytes(j);
    last_segment(path, sizeof(path));
    T_INT(stat(path, &st), ==, 0);
    T_INT(st.st_size, >=, (long long)logical + TDS_JOURNAL_PREFILL_BYTES);
    snprintf(saved, sizeof(saved), "%s.crash", dir);
    copy_file(path, saved); /* the file as a crash would leave it */
    j = tds_journal_close(j);
    T_INT(stat(path, &st), ==, 0);
    T_INT(st.st_size, ==, (long long)logical);

    copy_file(saved, path);
    T_INT(tds_journal_open(&j, &o, collect, &s, &info), ==, 0);
    T_INT(s.n, ==, 3);
    T_INT(info.torn, ==, 0);
    T_INT(stat(path, &st), ==, 0);
    T_INT(st.st_size, ==, (long long)logical);
    j = tds_journal_close(j);

    /* half a record written into the zeros when the crash came */
    fresh_dir();
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    append_n(j, 3, NULL, NULL);
    T_INT(tds_journal_sync(j), ==, 0);
    logical = tds_journal_bytes(j);
    last_segment(path, sizeof(path));
    copy_file(path, saved);
    j = tds_journal_close(j);
    copy_file(saved, path);
    fd = open(path, O_WRONLY);
    T_TRUE(fd >= 0);
    T_INT(pwrite(fd, "TDJ1\x40\0\0\0half", 12, (off_t)logical), ==, 12);
    close(fd);
    memset(&s, 0, sizeof(s));
    T_INT(tds_journal_open(&j, &o, collect, &s, &info), ==, 0);
    T_INT(s.n, ==, 3);
    T_INT(info.torn, ==, 1);
    tds_journal_close(j);
    unlink(saved);
    fresh_dir();
}

/* The syncing callback runs before the commit's writes (its entries are
 * still pending then), once per commit, with the commit's last seq; the
 * synced callback after. */
struct order {
    struct tds_journal *j;
    uint64_t upto[8], synced[8];
    int state_at_syncing[8];
    int n_syncing, n_synced;
};

static void on_syncing_rec(uint64_t upto, void *ud)
{
    struct order *o = ud;

    if (o->n_syncing < 8) {
        o->upto[o->n_syncing] = upto;
        o->state_at_syncing[o->n_syncing] = tds_journal_state(o->j, upto);
    }
    o->n_syncing++;
}

static void on_synced_rec(uint64_t synced, bool failed, void *ud)
{
    struct order *o = ud;

    (void)failed;
    if (o->n_synced < 8)
        o->synced[o->n_synced] = synced;
    o->n_synced++;
}

static void test_syncing_callback(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct order ord = {0};
    uint64_t seqs[3];

    fresh_dir();
    o = opts(64 << 20, 1 << 20);
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    ord.j = j;
    tds_journal_on_syncing(j, on_syncing_rec, &ord);
    tds_journal_on_synced(j, on_synced_rec, &ord);
    append_n(j, 2, seqs, NULL);
    T_INT(tds_journal_sync(j), ==, 0);
    append_n(j, 1, seqs + 2, NULL);
    T_INT(tds_journal_sync(j), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0); /* nothing pending: no callback */
    T_INT(ord.n_syncing, ==, 2);
    T_INT(ord.n_synced, ==, 2);
    T_INT(ord.upto[0], ==, seqs[1]);
    T_INT(ord.upto[1], ==, seqs[2]);
    T_INT(ord.state_at_syncing[0], ==, 0);
    T_INT(ord.state_at_syncing[1], ==, 0);
    T_INT(ord.synced[1], ==, seqs[2]);
    T_INT(tds_journal_state(j, seqs[2]), ==, 1);
    tds_journal_on_syncing(j, NULL, NULL);
    tds_journal_on_synced(j, NULL, NULL);
    tds_journal_close(j);
    fresh_dir();
}

/* A small group commit waits for company (sync_delay_us) while entries come
 * closer together than that. Entries appended meanwhile are announced at
 * once (forwarded) and share its fdatasync; the wait ends at
 * TDS_JOURNAL_LINGER_BATCH entries or at close; a lone entry after a quiet
 * spell does not wait at all. */
#define DELAY_US 2000000

static struct {
    pthread_mutex_t mu;
    uint64_t syncing;
    uint64_t sizes[256];
    size_t n;
} lg = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void on_lg_syncing(uint64_t upto, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&lg.mu);
    lg.syncing = upto;
    pthread_mutex_unlock(&lg.mu);
}

static void on_lg_stats(uint64_t batch, double s, void *ud)
{
    (void)ud;
    T_TRUE(s >= 0 && s < 1.0); /* the wait is not counted as sync time */
    pthread_mutex_lock(&lg.mu);
    if (lg.n < 256)
        lg.sizes[lg.n++] = batch;
    pthread_mutex_unlock(&lg.mu);
}

static uint64_t lg_get(uint64_t *n)
{
    uint64_t v;

    pthread_mutex_lock(&lg.mu);
    v = lg.syncing;
    if (n)
        *n = lg.n;
    pthread_mutex_unlock(&lg.mu);
    return v;
}

/* Poll until the entry is announced (taken into a group commit). */
static void until_announced(uint64_t seq)
{
    int64_t t0 = tds_now_ms();

    while (lg_get(NULL) < seq && tds_now_ms() - t0 < DELAY_US / 4000)
        usleep(1000);
    T_INT(lg_get(NULL), >=, seq);
}

/* The stats callback runs just after the waiters are woken: poll for it. */
static uint64_t until_stats(uint64_t n)
{
    int64_t t0 = tds_now_ms();
    uint64_t have;

    for (lg_get(&have); have < n && tds_now_ms() - t0 < 5000; lg_get(&have))
        usleep(1000);
    usleep(10000); /* and no further commit came */
    lg_get(&have);
    return have;
}

static uint64_t append_one(struct tds_journal *j)
{
    uint64_t seq;
    struct tds_journal_loc loc;

    T_INT(tds_journal_append(j, "x", 1, 1000, &seq, &loc), ==, 0);
    return seq;
}

static void test_sync_delay(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct seen *s = calloc(1, sizeof(*s));
    uint64_t a, b, c, d, last = 0, n0, n1;
    int64_t t0;

    fresh_dir();
    o = opts(64 << 20, 1 << 20);
    o.sync_thread = true;
    o.sync_delay_us = DELAY_US;
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    tds_journal_on_syncing(j, on_lg_syncing, NULL);
    tds_journal_on_stats(j, on_lg_stats, NULL);

    /* Alone, after a quiet spell: synced without waiting. */
    t0 = tds_now_ms();
    a = append_one(j);
    T_INT(tds_journal_wait(j, a, 10000), ==, 0);
    T_INT(tds_now_ms() - t0, <, DELAY_US / 2000);
    T_INT(until_stats(1), ==, 1);
    T_INT(lg.sizes[0], ==, 1);

    /* Entries close together: the average gap falls below the delay. */
    for (int i = 0; i < 16; i++)
        last = append_one(j);
    T_INT(tds_journal_wait(j, last, 10000), ==, 0);
    usleep(20000); /* its stats callback has run */

    /* A small commit waits; later entries join it, each announced at once,
     * none durable before the last. */
    lg_get(&n0);
    a = append_one(j);
    until_announced(a);
    usleep(20000);
    T_INT(tds_journal_state(j, a), ==, 0);
    b = append_one(j);
    until_announced(b);
    T_INT(tds_journal_state(j, a), ==, 0);
    T_INT(tds_journal_state(j, b), ==, 0);
    c = append_one(j);
    d = append_one(j);
    T_INT(tds_journal_wait(j, d, 10000), ==, 0);
    T_INT(tds_journal_state(j, c), ==, 1);
    n1 = until_stats(n0 + 1);
    T_INT(n1, ==, n0 + 1);
    T_INT(lg.sizes[n1 - 1], ==, 4);

    /* It stops waiting once it holds TDS_JOURNAL_LINGER_BATCH entries. */
    a = append_one(j);
    until_announced(a);
    t0 = tds_now_ms();
    for (int i = 1; i < TDS_JOURNAL_LINGER_BATCH; i++)
        last = append_one(j);
    T_INT(tds_journal_wait(j, last, 10000), ==, 0);
    T_INT(tds_now_ms() - t0, <, DELAY_US / 2000);

    /* Closing does not wait out the delay, and loses nothing. */
    a = append_one(j);
    until_announced(a);
    t0 = tds_now_ms();
    j = tds_journal_close(j);
    T_INT(tds_now_ms() - t0, <, DELAY_US / 2000);
    o.sync_thread = false;
    T_INT(tds_journal_open(&j, &o, collect, s, NULL), ==, 0);
    T_INT(s->n, ==, a);
    T_INT(s->seqs[s->n - 1], ==, a);
    tds_journal_close(j);
    free(s);
    fresh_dir();
}

/* At max_unacked entries waiting for their ack, appends are refused
 * (TDS_JOURNAL_E_BACKLOG) until acks bring the count under nine tenths of
 * it. An open that finds more than the bound (it was lowered) keeps every
 * one of them and refuses appends until acks make room. */
/* Records waiting for their sync are held in memory (and by the caller):
 * past max_pending_bytes appends are refused until a sync ends, and one
 * record alone always goes in, however large. */
static void test_pending_bound(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct tds_journal_loc loc;
    uint64_t seq;
    char big[5000];

    memset(big, 'b', sizeof(big));
    fresh_dir();
    o = opts(1 << 20, 1 << 16);
    o.max_pending_bytes = 4 * (32 + 1000); /* four 1,000-byte entries and their headers */
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    T_INT(tds_journal_pending_bytes(j), ==, 0);
    for (int i = 0; i < 4; i++)
        T_INT(tds_journal_append(j, big, 1000, 5000, &seq, &loc), ==, 0);
    T_INT(tds_journal_pending_bytes(j), ==, 4 * (32 + 1000));
    T_INT(tds_journal_append(j, big, 1, 5000, &seq, &loc), ==, TDS_JOURNAL_E_BUSY);
    T_INT(tds_journal_unacked(j), ==, 4);
    T_INT(tds_journal_sync(j), ==, 0);
    T_INT(tds_journal_pending_bytes(j), ==, 0);
    /* alone, a record over the bound goes in; the next waits for its sync */
    T_INT(tds_journal_append(j, big, sizeof(big), 5000, &seq, &loc), ==, 0);
    T_INT(tds_journal_append(j, big, 1, 5000, &seq, &loc), ==, TDS_JOURNAL_E_BUSY);
    T_INT(tds_journal_sync(j), ==, 0);
    T_INT(tds_journal_append(j, big, 1, 5000, &seq, &loc), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    T_INT(tds_journal_unacked(j), ==, 6);
    j = tds_journal_close(j);
}

static void test_unacked_bound(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct tds_journal_open_info info;
    struct tds_journal_loc loc;
    struct seen *s = calloc(1, sizeof(*s));
    uint64_t seqs[20], seq, acks[10];
    size_t n = 0;

    T_TRUE(s != NULL);
    fresh_dir();
    o = opts(1 << 20, 1 << 16);
    o.max_unacked = 20;
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    T_TRUE(!tds_journal_backlog_full(j));
    append_n(j, 20, seqs, NULL);
    T_TRUE(tds_journal_backlog_full(j));
    T_INT(tds_journal_append(j, "x", 1, 5000, &seq, &loc), ==, TDS_JOURNAL_E_BACKLOG);
    T_INT(tds_journal_unacked(j), ==, 20);
    T_INT(tds_journal_backlog_resume(j), ==, 18);
    T_INT(tds_journal_ack(j, seqs, 2), ==, 0);       /* 18 left: not under 18 yet */
    T_TRUE(tds_journal_backlog_full(j));
    T_INT(tds_journal_append(j, "x", 1, 5000, &seq, &loc), ==, TDS_JOURNAL_E_BACKLOG);
    T_INT(tds_journal_ack(j, &seqs[2], 1), ==, 0);   /* 17 */
    T_TRUE(!tds_journal_backlog_full(j));
    T_INT(tds_journal_append(j, "x", 1, 5000, &seq, &loc), ==, 0);
    T_INT(tds_journal_append(j, "y", 1, 5000, &seq, &loc), ==, 0);
    T_TRUE(!tds_journal_backlog_full(j));            /* 19 */
    T_INT(tds_journal_sync(j), ==, 0);
    j = tds_journal_close(j);

    /* The bound lowered under the count: nothing is dropped. */
    o.max_unacked = 10;
    T_INT(tds_journal_open(&j, &o, collect, s, &info), ==, 0);
    T_INT(s->n, ==, 22);
    T_INT(info.unacked, ==, 19);
    T_TRUE(tds_journal_backlog_full(j));
    T_INT(tds_journal_append(j, "z", 1, 5000, &seq, &loc), ==, TDS_JOURNAL_E_BACKLOG);
    for (size_t i = 0; i < s->n && n < 10; i++)
        if (!s->acked[i])
            acks[n++] = s->seqs[i];
    T_INT(tds_journal_ack(j, acks, 9), ==, 0);       /* 10 left: resume under 9 */
    T_TRUE(tds_journal_backlog_full(j));
    T_INT(tds_journal_ack(j, &acks[9], 1), ==, 0);   /* 9 */
    T_TRUE(tds_journal_backlog_full(j));
    T_INT(tds_journal_ack(j, &s->seqs[21], 1), ==, 0); /* 8 */
    T_TRUE(!tds_journal_backlog_full(j));
    T_INT(tds_journal_append(j, "z", 1, 5000, &seq, &loc), ==, 0);
    tds_journal_close(j);
    free(s);
    fresh_dir();
}

/* An entry is acked by an ack record in its own segment or a later one, and
 * an ack may name an entry whose segment was dropped since: the open sees
 * each entry's state right whichever way. */
static void test_acks_across_segments(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct tds_journal_open_info info;
    struct seen *s = calloc(1, sizeof(*s));
    uint64_t seqs[60];

    T_TRUE(s != NULL);
    fresh_dir();
    o = opts(1 << 20, 400); /* ~10 records a segment */
    o.retention_ms = 0;
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    append_n(j, 30, seqs, NULL);
    T_INT(tds_journal_ack(j, &seqs[25], 1), ==, 0);  /* in its own segment */
    append_n(j, 30, &seqs[30], NULL);
    for (int i = 0; i < 10; i++)                      /* the whole first segment */
        T_INT(tds_journal_ack(j, &seqs[i], 1), ==, 0);
    T_INT(tds_journal_ack(j, &seqs[12], 1), ==, 0);  /* far behind the ack record */
    T_INT(tds_journal_ack(j, &seqs[59], 1), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    T_INT(tds_journal_gc(j, 1000000), >, 0);          /* the first segment goes */
    j = tds_journal_close(j);

    T_INT(tds_journal_open(&j, &o, collect, s, &info), ==, 0);
    T_INT(info.unacked, ==, 47);
    T_INT(s->n, >=, 50);
    for (size_t i = 0; i < s->n; i++) {
        uint64_t q = s->seqs[i];
        bool want = q == seqs[12] || q == seqs[25] || q == seqs[59] || q <= seqs[9];

        if (s->acked[i] != want)
            T_FAIL("seq %llu read as %s", (unsigned long long)q,
                   s->acked[i] ? "acked" : "unacked");
    }
    T_INT(tds_journal_unacked(j), ==, 47);
    tds_journal_close(j);
    free(s);
    fresh_dir();
}

static int count_entries(const struct tds_journal_rec *r, void *ud)
{
    uint64_t *n = ud;

    n[r->acked ? 1 : 0]++;
    return 0;
}

/* The child's side of test_open_memory: open, count, close. */
static int open_only(const char *d)
{
    struct tds_journal_opts o = {.dir = d, .max_bytes = 1ull << 40, .segment_bytes = 1 << 26,
                                 .retention_ms = 3600 * 1000};
    struct tds_journal *j = NULL;
    uint64_t n[2] = {0, 0};

    char line[256];
    long hwm = -1;
    FILE *f;

    T_INT(tds_journal_open(&j, &o, count_entries, n, NULL), ==, 0);
    tds_journal_close(j);
    /* this process's peak since its exec (ru_maxrss would include the
     * parent's before it) */
    f = fopen("/proc/self/status", "r");
    T_TRUE(f != NULL);
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld", &hwm) == 1)
            break;
    fclose(f);
    printf("%llu %llu %ld\n", (unsigned long long)n[0], (unsigned long long)n[1], hwm);
    return 0;
}

/* Peak RSS (KiB) of a fresh process opening the journal in d, with the
 * entries it counted; freed memory is not held back (ASan's quarantine
 * off), so the peak is what the open keeps. */
static long open_peak_kib(const char *d, uint64_t *unacked, uint64_t *acked)
{
    char out[128] = "", opts_env[512];
    const char *a = getenv("ASAN_OPTIONS");
    int fds[2], status = 0;
    unsigned long long u = 0, k = 0;
    long hwm = -1;
    ssize_t got;
    pid_t pid;

    snprintf(opts_env, sizeof(opts_env), "%s%squarantine_size_mb=0", a ? a : "", a ? ":" : "");
    T_INT(pipe(fds), ==, 0);
    pid = fork();
    T_TRUE(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        setenv("ASAN_OPTIONS", opts_env, 1);
        execl("/proc/self/exe", "test_ingress_journal", "--open", d, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    got = read(fds[0], out, sizeof(out) - 1);
    close(fds[0]);
    T_TRUE(waitpid(pid, &status, 0) == pid);
    T_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    T_TRUE(got > 0 && sscanf(out, "%llu %llu %ld", &u, &k, &hwm) == 3);
    T_TRUE(hwm > 0);
    *unacked = u;
    *acked = k;
    return hwm;
}

/* What an open holds while it reads a journal does not grow with the
 * records kept, acked or not: a full journal of small acked records used
 * to cost 48 bytes each (their place and seq, the acked seqs) before the
 * first was handed over, ~170 MB for 1 GiB of 300-byte fetches. Here
 * 250,000 acked entries and 100 unacked ones. */
static void test_open_memory(void)
{
    enum { N = 250000, STEP = 25000 };
    char empty[300], cmd[700];
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    uint64_t seqs[STEP], u, k;
    long base, big;

    fresh_dir();
    snprintf(empty, sizeof(empty), "%s-empty", dir);
    o = opts(1ull << 40, 1 << 26);
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    for (int i = 0; i < N; i += STEP) {
        for (int x = 0; x < STEP; x++) {
            struct tds_journal_loc loc;

            T_INT(tds_journal_append(j, "payload!", 8, 1000, &seqs[x], &loc), ==, 0);
        }
        T_INT(tds_journal_ack(j, seqs, STEP), ==, 0);
        T_INT(tds_journal_sync(j), ==, 0);
    }
    append_n(j, 100, NULL, NULL);
    j = tds_journal_close(j);

    base = open_peak_kib(empty, &u, &k);
    T_INT(u + k, ==, 0);
    big = open_peak_kib(dir, &u, &k);
    T_INT(u, ==, 100);
    T_INT(k, ==, N);
    fprintf(stderr, "peak RSS opening an empty journal %ld KiB, one of %d acked entries %ld KiB\n",
            base, N, big);
    /* ASan build: 16 MiB more before, 3 MiB now (0.3 MiB in a release
     * build: the bits, and reading an ack record of 25,000 seqs) */
    T_INT(big - base, <, 8 * 1024);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", empty);
    T_INT(system(cmd), ==, 0);
    fresh_dir();
}

struct last_unacked {
    uint64_t unacked, seq;
    char payload[16];
};

static int note_unacked(const struct tds_journal_rec *r, void *ud)
{
    struct last_unacked *l = ud;

    if (!r->acked) {
        l->unacked++;
        l->seq = r->seq;
        snprintf(l->payload, sizeof(l->payload), "%.*s", (int)r->len, (const char *)r->payload);
    }
    return 0;
}

/* One ack call with more seqs than one record may carry (main.c acks every
 * dead letter found at start at once) is written as several records, each
 * one the open reads back. Before, it was one record over
 * TDS_JOURNAL_MAX_PAYLOAD, which the next open took for a torn tail: cut,
 * with every record after it (here a webhook answered 200, never acked). */
static void test_ack_over_one_record(void)
{
    const size_t n = TDS_JOURNAL_MAX_PAYLOAD / 8 + 1000;
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct tds_journal_loc loc;
    struct tds_journal_open_info info;
    struct last_unacked l = {0};
    uint64_t *seqs = malloc(n * sizeof(*seqs)), seq, before, ack_bytes;

    T_TRUE(seqs != NULL);
    fresh_dir();
    o = opts(1ull << 40, 1ull << 30);
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    for (size_t i = 0; i < n; i++)
        T_INT(tds_journal_append(j, "d", 1, 1000, &seqs[i], &loc), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    before = tds_journal_bytes(j);
    T_INT(tds_journal_ack(j, seqs, n), ==, 0);
    ack_bytes = tds_journal_bytes(j) - before;
    T_INT(tds_journal_append(j, "after", 5, 2000, &seq, &loc), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    j = tds_journal_close(j);
    free(seqs);

    T_INT(tds_journal_open(&j, &o, note_unacked, &l, &info), ==, 0);
    T_INT(info.torn, ==, 0);
    T_INT(info.entries, ==, n + 1);
    T_INT(info.unacked, ==, 1);
    T_INT(l.unacked, ==, 1);
    T_INT(l.seq, ==, seq);
    T_STR(l.payload, "after");
    /* two records: a full one and one of 1,000 seqs */
    T_INT(ack_bytes, ==, 2 * 32 + n * 8);
    tds_journal_close(j);
    fresh_dir();
}

/* Files in `in` named f0, f1, ... until the file system has no inode left.
 * Returns how many it made. */
static int take_every_inode(const char *in, int from)
{
    int k = from;

    for (;; k++) {
        char n[400];
        int fd;

        snprintf(n, sizeof(n), "%s/f%d", in, k);
        fd = open(n, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        if (fd < 0) {
            T_INT(errno, ==, ENOSPC);
            return k;
        }
        close(fd);
    }
}

static void give_inodes_back(const char *in, int from, int to)
{
    for (int k = from; k < to; k++) {
        char n[400];

        snprintf(n, sizeof(n), "%s/f%d", in, k);
        T_INT(unlink(n), ==, 0);
    }
}

/* The journal's file system has no inode left for the next segment while
 * fully acked segments are kept for replay (within the retention). The
 * journal deletes them, retention aside, as for a write without room, and
 * creates the segment: at run time (before, every webhook got 503 until the
 * retention ended) and at open (before, the open failed with ENOSPC, and
 * the ingress exited at every start). With nothing acked to delete, the open
 * still succeeds, in the no-space state: the entries found can be read back
 * (resent), appends are refused, acks are taken, and the segment is created
 * once an inode is free. A tmpfs of 48 inodes, as root (tests/run). */
static char inode_mnt[200];
static bool inode_mounted;

static void unmount_inode_mnt(void)
{
    if (inode_mounted && umount2(inode_mnt, MNT_DETACH) == 0)
        rmdir(inode_mnt);
}

static void test_no_inode_for_a_segment(void)
{
    char *mnt = inode_mnt, p[300];
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct tds_journal_loc loc, locs[10];
    struct tds_journal_open_info info;
    struct last_unacked l = {0};
    uint64_t seq, seqs[10];
    size_t before;
    int fill;
    void *buf;
    size_t len;

    snprintf(inode_mnt, sizeof(inode_mnt), "/tmp/tds-journal-inodes-%d", (int)getpid());
    T_INT(mkdir(mnt, 0750), ==, 0);
    if (mount("tds-test", mnt, "tmpfs", 0, "size=4m,nr_inodes=48") != 0) {
        if (geteuid() != 0) {
            fprintf(stderr, "skipped test_no_inode_for_a_segment: mounting a tmpfs needs "
                    "root (tests/run runs as root)\n");
            rmdir(mnt);
            return;
        }
        T_FAIL("cannot mount a small tmpfs at %s: %s", mnt, strerror(errno));
    }
    inode_mounted = true;
    atexit(unmount_inode_mnt); /* a failed check exits */
    snprintf(dir, sizeof(dir), "%s/j", mnt);
    memset(p, 'p', sizeof(p));
    o = opts(1 << 20, 1024);

    /* ~10 segments, every entry acked, kept for the hour of retention */
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    for (int i = 0; i < 30; i++) {
        T_INT(tds_journal_append(j, p, sizeof(p), 1000, &seq, &loc), ==, 0);
        T_INT(tds_journal_sync(j), ==, 0);
        T_INT(tds_journal_ack(j, &seq, 1), ==, 0);
    }
    T_INT(tds_journal_sync(j), ==, 0);
    before = tds_journal_segments(j);
    T_INT(before, >=, 8);
    fill = take_every_inode(mnt, 0);

    /* Run time: the next segment needs an inode; the acked ones give theirs. */
    for (int i = 0; i < 10; i++) {
        T_INT(tds_journal_append(j, p, sizeof(p), 2000, &seqs[i], &loc), ==, 0);
        T_INT(tds_journal_sync(j), ==, 0);
        T_TRUE(!tds_journal_no_space(j));
    }
    T_INT(tds_journal_segments(j), <, before);
    T_INT(tds_journal_ack(j, seqs, 10), ==, 0);
    j = tds_journal_close(j);

    /* Open: every inode taken again, acked segments to delete. */
    fill = take_every_inode(mnt, fill);
    T_INT(tds_journal_open(&j, &o, NULL, NULL, &info), ==, 0);
    T_TRUE(!tds_journal_no_space(j));
    T_INT(info.segments, >, 2);
    T_INT(tds_journal_segments(j), ==, 2);      /* the last one kept, and the new one */
    T_INT(tds_journal_append(j, p, sizeof(p), 3000, &seq, &loc), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    T_INT(tds_journal_ack(j, &seq, 1), ==, 0);

    /* Open with nothing acked to delete: the acked segments past their
     * retention gone, 10 unacked entries over several segments, then no
     * inode left. */
    give_inodes_back(mnt, 0, fill);
    T_INT(tds_journal_gc(j, INT64_MAX / 2), >, 0);
    for (int i = 0; i < 10; i++) {
        T_INT(tds_journal_append(j, p, sizeof(p), 4000 + i, &seqs[i], &locs[i]), ==, 0);
        T_INT(tds_journal_sync(j), ==, 0);
    }
    j = tds_journal_close(j);
    take_every_inode(mnt, 0);
    T_INT(tds_journal_open(&j, &o, note_unacked, &l, &info), ==, 0);
    T_INT(l.unacked, ==, 10);
    T_INT(info.unacked, ==, 10);
    T_TRUE(tds_journal_no_space(j));
    T_INT(tds_journal_read(j, &locs[0], &buf, &len), ==, 0);  /* resent */
    T_INT(len, ==, sizeof(p));
    free(buf);
    T_INT(tds_journal_append(j, p, sizeof(p), 5000, &seq, &loc), ==, TDS_JOURNAL_E_FULL);
    T_INT(tds_journal_ack(j, &seqs[9], 1), ==, 0);            /* in memory only */
    T_INT(tds_journal_unacked(j), ==, 9);
    T_INT(tds_journal_sync(j), ==, TDS_JOURNAL_E_NOSPACE);
    T_TRUE(tds_journal_no_space(j));
    /* An inode comes free: the segment is created, appends are taken. */
    give_inodes_back(mnt, 0, 1);
    T_INT(tds_journal_sync(j), ==, 0);
    T_TRUE(!tds_journal_no_space(j));
    T_INT(tds_journal_append(j, p, sizeof(p), 5000, &seq, &loc), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    T_INT(tds_journal_state(j, seq), ==, 1);
    j = tds_journal_close(j);

    /* Every entry answered is still there: 9 or 10 unacked (the ack taken
     * while no segment existed may be lost: a resend) and the last one. */
    memset(&l, 0, sizeof(l));
    T_INT(tds_journal_open(&j, &o, note_unacked, &l, &info), ==, 0);
    T_INT(info.torn, ==, 0);
    T_INT(l.unacked, >=, 10);
    T_INT(l.seq, ==, seq);
    tds_journal_close(j);
    T_INT(umount2(mnt, MNT_DETACH), ==, 0);
    T_INT(rmdir(mnt), ==, 0);
    inode_mounted = false;
    fresh_dir();
}

/* After a start the active segment is named after the next seq and holds
 * no entry. Acks of the entries found may fill it past its size before a
 * webhook comes; the next append must still find a segment (it used to try
 * to create one of the same name: EEXIST, and every webhook a 503 until the
 * next restart). */
static void test_a_segment_of_acks_only(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct seen s = {0};
    uint64_t seqs[40], seq;
    struct tds_journal_loc loc;

    fresh_dir();
    o = opts(1 << 20, 400);
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    append_n(j, 40, seqs, NULL);
    T_INT(tds_journal_sync(j), ==, 0);
    tds_journal_close(j);

    /* Restart: 40 entries to resend; each ack (40 bytes) in the new
     * segment, ten of them past its 400 bytes. */
    j = NULL;
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    T_INT(tds_journal_unacked(j), ==, 40);
    for (int i = 0; i < 40; i++)
        T_INT(tds_journal_ack(j, &seqs[i], 1), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    for (int i = 0; i < 3; i++) {
        T_INT(tds_journal_append(j, "after", 5, 5000 + i, &seq, &loc), ==, 0);
        T_INT(seq, ==, seqs[39] + 1 + (uint64_t)i);
    }
    T_INT(tds_journal_sync(j), ==, 0);
    T_INT(tds_journal_unacked(j), ==, 3);
    tds_journal_close(j);

    /* Read back: the 40 acked, the three new ones not. */
    j = NULL;
    T_INT(tds_journal_open(&j, &o, collect, &s, NULL), ==, 0);
    T_INT(tds_journal_unacked(j), ==, 3);
    T_INT(s.n, ==, 43);
    for (size_t i = 0; i < s.n; i++)
        T_INT(s.acked[i], ==, i < 40);
    tds_journal_close(j);
}

/* An ack call that cannot allocate its record still counts its entries
 * acked: the caller has let go of them, so nothing could ack them later.
 * Only the record is lost: a restart finds them unacked and resends them. */
static void test_ack_without_memory(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    struct seen s = {0};
    uint64_t seqs[30];

    fresh_dir();
    o = opts(1 << 20, 400);
    o.retention_ms = 0;
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    append_n(j, 30, seqs, NULL);
    T_INT(tds_journal_sync(j), ==, 0);
    T_INT(tds_journal_segments(j), >=, 3);
    fail_in = 1;
    T_INT(tds_journal_ack(j, seqs, 30), ==, -ENOMEM);
    T_INT(fail_in, ==, 0);
    T_INT(tds_journal_unacked(j), ==, 0);
    /* Their segments can go (before, they stayed, and the journal filled). */
    T_INT(tds_journal_gc(j, 1000000), >, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    tds_journal_close(j);

    /* No ack record: the entries of the segment kept are found unacked. */
    j = NULL;
    T_INT(tds_journal_open(&j, &o, collect, &s, NULL), ==, 0);
    T_INT(s.n, >, 0);
    for (size_t i = 0; i < s.n; i++)
        T_INT(s.acked[i], ==, false);
    T_INT(tds_journal_unacked(j), ==, s.n);
    tds_journal_close(j);
}

/* An acked segment whose file cannot be deleted stays: on the disk, in the
 * journal's byte count, and in its list, to be tried again at the next gc;
 * the failure is reported once. Before, it was forgotten while its file
 * stayed, the journal counting room it did not have. */
static void test_a_segment_that_cannot_be_deleted_stays_counted(void)
{
    struct tds_journal *j = NULL;
    struct tds_journal_opts o;
    uint64_t seqs[30], seg = 0, bytes;
    size_t before;

    fresh_dir();
    o = opts(1 << 20, 400);
    o.retention_ms = 0;
    T_INT(tds_journal_open(&j, &o, NULL, NULL, NULL), ==, 0);
    append_n(j, 30, seqs, NULL);
    T_INT(tds_journal_sync(j), ==, 0);
    T_INT(tds_journal_ack(j, seqs, 30), ==, 0);
    T_INT(tds_journal_sync(j), ==, 0);
    before = tds_journal_segments(j);
    bytes = tds_journal_bytes(j);
    T_INT(before, >=, 3);
    T_INT(tds_journal_drop_error(j, &seg), ==, 0);

    unlink_errno = EIO;
    T_INT(tds_journal_gc(j, 1000000), ==, 0);
    unlink_errno = 0;
    T_INT(tds_journal_segments(j), ==, before);
    T_INT(tds_journal_bytes(j), ==, bytes);
    T_INT(tds_journal_drop_error(j, &seg), ==, EIO);
    T_INT(seg, ==, seqs[0]); /* the front segment, named after its first seq */
    T_INT(tds_journal_drop_error(j, &seg), ==, 0); /* reported once */

    T_INT(tds_journal_gc(j, 1000000), ==, (long long)before - 1);
    T_INT(tds_journal_segments(j), ==, 1);
    T_INT(tds_journal_bytes(j), <, bytes);
    T_INT(tds_journal_drop_error(j, &seg), ==, 0);
    tds_journal_close(j);
}

static void test_crc(void)
{
    /* The CRC32C check value from RFC 3720's test vectors. */
    T_INT(tds_crc32c(0, "123456789", 9), ==, 0xe3069283u);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--open") == 0)
        return open_only(argv[2]);
    if (argc == 2 && strcmp(argv[1], "--ack-over-one-record") == 0) {
        /* its own meson test: 4.2 million entries, ~20 s under ASan */
        T_RUN(test_ack_over_one_record);
        return 0;
    }
    T_RUN(test_crc);
    T_RUN(test_append_reopen);
    T_RUN(test_torn_tail);
    T_RUN(test_damage_inside_a_segment);
    T_RUN(test_segment_release);
    T_RUN(test_retention_keeps_acked);
    T_RUN(test_full);
    T_RUN(test_acks_within_the_bound);
    T_RUN(test_group_commit);
    T_RUN(test_syncing_callback);
    T_RUN(test_sync_delay);
    T_RUN(test_zero_tail);
    T_RUN(test_unacked_bound);
    T_RUN(test_pending_bound);
    T_RUN(test_acks_across_segments);
    T_RUN(test_open_memory);
    T_RUN(test_no_inode_for_a_segment);
    T_RUN(test_a_segment_of_acks_only);
    T_RUN(test_ack_without_memory);
    T_RUN(test_a_segment_that_cannot_be_deleted_stays_counted);
    return 0;
}
