/* journal — segment files, group commit and ack bookkeeping for accepted webhooks.
 *
 * Appenders frame a record into an in-memory chunk under the lock; the sync
 * thread takes every pending chunk at once, pwrites them and fdatasyncs once,
 * so all requests that arrived during the previous sync share the next one.
 * A small group may first wait o.sync_delay_us for more (linger()), taking
 * and announcing each arrival at once, while entries come closer together
 * than that: fewer flushes for a disk PostgreSQL may share.
 * A failed fdatasync, or a write that fails for another reason than space, is
 * final (the page cache state is unknown after a failed fsync, the lesson
 * PostgreSQL learned): the journal refuses further appends and the stage
 * answers 503 until restarted. A write refused for lack of space (ENOSPC,
 * EDQUOT) is not: the batch stays queued in memory, in order, and is written
 * again every TDS_JOURNAL_RETRY_MS until it fits; meanwhile appends are
 * refused (E_FULL) and the queued entries count as not durable (state -1), so
 * their requests get 503 and memory does not grow. A new segment that cannot
 * be created for lack of space (no inode or directory block left) is the
 * same case, after the fully acked segments at the front were deleted to make
 * room (retention aside) and the creation tried once more: appends are refused
 * and the sync thread tries again every TDS_JOURNAL_RETRY_MS, with no request
 * needed to drive it, until it can. An open that finds no room for its fresh
 * segment starts with none that way (what it found can still be read back and
 * resent). Writing the same bytes at
 * the same offsets again is harmless, and nothing after them reaches the file
 * before they do, so a scan never finds a gap followed by records. It never
 * logs; callers do.
 *
 * A segment file grows ahead of its records in zero-filled steps of
 * TDS_JOURNAL_PREFILL_BYTES, written by the commit that first needs them.
 * Every other commit then overwrites blocks that exist, and its fdatasync
 * writes the data alone, not the inode's new size as well: on this project's
 * bench machine 0.16-0.18 ms and 53-68 us of CPU a sync instead of 0.23-0.25
 * ms and 91-113 us (ingress/DESIGN.md). A scan treats a tail of zeros as the
 * end of the segment, not as a torn record, and a segment is cut back to its
 * records when it stops taking writes.
 */
#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define REC_MAGIC 0x314a4454u /* "TDJ1" */
#define HDR_SIZE 32u
#define REC_ENTRY 1
#define REC_ACK 2
#define SEG_NAME_LEN 24       /* 20 digits + ".seg" */
#define CHUNK_MIN (64u * 1024)
/* Room kept under max_bytes for the ack of each unacked entry: its 8 bytes
 * and, at worst (an ack of one seq), a record header. An ack record of k seqs
 * takes at most k times this, so acks never carry the journal past its bound
 * (invariant 7 in DESIGN.md). */
#define ACK_BYTES_PER_ENTRY (8u + HDR_SIZE)

static const char zeros[64 * 1024];

/* Header, little-endian:
 *   0 u32 magic   4 u32 payload length   8 u32 crc32c
 *  12 u8 type, 3 zero bytes   16 u64 seq   24 i64 wall_ms
 * The CRC covers the payload, then header bytes 12..31, so appenders can
 * checksum the payload before they know their seq (outside the lock). */

struct seg {
    uint64_t id;            /* first seq it may hold; names the file */
    int fd;                 /* open while it takes writes, else -1 */
    uint64_t size;          /* bytes appended, pending ones included */
    uint64_t filled;        /* bytes of the file written: records, then zeros */
    uint64_t n_entries;
    uint64_t n_unacked;
    int64_t last_wall_ms;
    unsigned chunks_pending;
    bool undeletable;       /* its last delete failed: gc stops at it until one works */
};

struct chunk {
    struct seg *seg;
    int fd;
    uint64_t base;          /* file offset of buf[0] */
    char *buf;
    size_t len, cap;
    struct chunk *next;
};

struct tds_journal {
    char *dir;
    int dirfd;
    struct tds_journal_opts o;

    pthread_mutex_t mu;
    pthread_cond_t work;      /* chunks are waiting for the sync thread */
    pthread_cond_t synced_cv; /* synced_seq moved, or the journal failed */
    pthread_mutex_t sync_mu;  /* one syncer at a time */

    struct seg **segs;        /* ascending id; the last one is active */
    size_t n_segs, cap_segs;
    struct seg *active;

    struct chunk *head, *tail;
    struct chunk *spare;      /* one recycled chunk to avoid malloc per batch */

    uint64_t next_seq;
    uint64_t appended_seq;    /* highest entry seq in a chunk */
    _Atomic uint64_t synced_seq; /* written under mu, read lock-free by state() */
    uint64_t total_bytes;
    uint64_t pending_bytes; /* in chunks until their sync ends */
    uint64_t unacked;
    int drop_errno;           /* the last failed delete of an acked segment, until taken */
    uint64_t drop_failed_id;  /* and that segment's id */
    _Atomic int failed;       /* errno of the failure, 0 while healthy */
    _Atomic bool no_space;    /* a write found no room: retrying, appends refused */
    _Atomic bool backlog_full; /* o.max_unacked reached: appends refused until acks */
    int64_t retry_at_ms;      /* monotonic time of the next retry while no_space */
    bool rotate_due;          /* no_space because the next segment could not be created */
    bool dir_dirty;           /* a segment was created: fsync the directory */
    int64_t last_append_us;   /* monotonic time of the last append */
    int64_t gap_us;           /* moving average of the time between appends */
    bool stop;
    bool has_thread;
    pthread_t thread;

    tds_journal_synced_cb synced_cb;
    void *synced_ud;
    tds_journal_stats_cb stats_cb;
    void *stats_ud;
    tds_journal_syncing_cb syncing_cb;
    void *syncing_ud;
    tds_journal_stalled_cb stalled_cb;
    void *stalled_ud;
};

/* ---- CRC32C, slice-by-8 ---- */

static uint32_t crc_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

uint32_t tds_crc32c(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;

    pthread_once(&crc_once, crc_init);
    crc = ~crc;
    while (len >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        crc = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^
              crc_tab[5][(lo >> 16) & 0xff] ^ crc_tab[4][lo >> 24] ^ crc_tab[3][p[4]] ^
              crc_tab[2][p[5]] ^ crc_tab[1][p[6]] ^ crc_tab[0][p[7]];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

/* ---- little helpers ---- */

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;

    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void fill_header(unsigned char *h, int type, uint32_t len, uint64_t seq, int64_t wall_ms,
                        uint32_t payload_crc)
{
    put32(h, REC_MAGIC);
    put32(h + 4, len);
    h[12] = (unsigned char)type;
    h[13] = h[14] = h[15] = 0;
    put64(h + 16, seq);
    put64(h + 24, (uint64_t)wall_ms);
    put32(h + 8, tds_crc32c(payload_crc, h + 12, HDR_SIZE - 12));
}

static void seg_name(uint64_t id, char *out, size_t n)
{
    snprintf(out, n, "%020llu.seg", (unsigned long long)id);
}

static int pwrite_all(int fd, const char *buf, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, buf, len, (off_t)off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Zeros from s->filled on, so that [0, end) and TDS_JOURNAL_PREFILL_BYTES
 * past it exist in the file. Only the sync thread writes a segment's file. */
static int prefill(struct seg *s, int fd, uint64_t end)
{
    uint64_t to = (end + TDS_JOURNAL_PREFILL_BYTES + 4095) & ~(uint64_t)4095;

    while (s->filled < to) {
        size_t n = to - s->filled < sizeof(zeros) ? (size_t)(to - s->filled) : sizeof(zeros);
        int r = pwrite_all(fd, zeros, n, s->filled);

        if (r)
            return r;
        s->filled += n;
    }
    return 0;
}

/* A segment stops taking writes: cut its zero tail, close it. A failed cut
 * leaves zeros, which a scan takes for the segment's end. */
static void seg_close_fd(struct seg *s)
{
    if (s->fd < 0)
        return;
    if (s->filled > s->size && ftruncate(s->fd, (off_t)s->size) == 0)
        s->filled = s->size;
    close(s->fd);
    s->fd = -1;
}

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;

    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return TDS_JOURNAL_E_CORRUPT; /* short file: torn */
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int mkdir_p(const char *path)
{
    char *tmp = strdup(path);
    int r = 0;

    if (!tmp)
        return -ENOMEM;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0750) < 0 && errno != EEXIST) {
            r = -errno;
            goto out;
        }
        *p = '/';
    }
    if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
        r = -errno;
out:
    free(tmp);
    return r;
}

/* ---- segments ---- */

static int segs_push(struct tds_journal *j, struct seg *s)
{
    if (j->n_segs == j->cap_segs) {
        size_t cap = j->cap_segs ? j->cap_segs * 2 : 16;
        struct seg **n = realloc(j->segs, cap * sizeof(*n));

        if (!n)
            return -ENOMEM;
        j->segs = n;
        j->cap_segs = cap;
    }
    j->segs[j->n_segs++] = s;
    return 0;
}

/* The segment holding seq: the last one whose id ≤ seq. */
static struct seg *seg_for_seq(struct tds_journal *j, uint64_t seq)
{
    size_t lo = 0, hi = j->n_segs;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (j->segs[mid]->id <= seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? j->segs[lo - 1] : NULL;
}

static struct seg *seg_by_id(struct tds_journal *j, uint64_t id)
{
    struct seg *s = seg_for_seq(j, id);

    return s && s->id == id ? s : NULL;
}

/* Start a new active segment named after next_seq. Called with mu held.
 *
 * An active segment that holds no entry is already named after next_seq
 * (only entries move it on): the one opened at start, while the entries
 * found there are acked, may fill with ack records past segment_bytes
 * before a webhook comes. It stays active and takes the next entry, over
 * its size, since a new segment of the same name cannot be made (EEXIST),
 * and one named after a later seq would not hold next_seq (an entry is in
 * the last segment whose name is not past its seq). */
static int rotate_locked(struct tds_journal *j)
{
    char name[SEG_NAME_LEN + 8];
    struct seg *s;
    int fd, r;

    if (j->active && j->active->id == j->next_seq)
        return 0;
    seg_name(j->next_seq, name, sizeof(name));
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    fd = openat(j->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        r = -errno;
        free(s);
        return r;
    }
    s->id = j->next_seq;
    s->fd = fd;
    r = segs_push(j, s);
    if (r) {
        close(fd);
        unlinkat(j->dirfd, name, 0);
        free(s);
        return r;
    }
    /* The previous active segment keeps its fd until its last chunk is synced. */
    if (j->active && j->active->fd >= 0 && j->active->chunks_pending == 0)
        seg_close_fd(j->active);
    j->active = s;
    j->dir_dirty = true;
    return 0;
}

/* Delete the front segment. A file that cannot be deleted (EIO, EROFS,
 * EACCES) stays on the disk: it is kept here too, its bytes counted against
 * the bound, the failure noted for tds_journal_drop_error and tried again at
 * the next gc. Forgotten, it would have filled the disk unseen, the journal
 * thinking it had room, and its entries come back at the next start with
 * their ack records gone. Returns 0 or -errno. */
static int seg_drop_front(struct tds_journal *j)
{
    struct seg *s = j->segs[0];
    char name[SEG_NAME_LEN + 8];

    seg_name(s->id, name, sizeof(name));
    if (unlinkat(j->dirfd, name, 0) < 0 && errno != ENOENT) {
        j->drop_errno = errno;
        j->drop_failed_id = s->id;
        s->undeletable = true;
        return -j->drop_errno;
    }
    if (s->fd >= 0)
        close(s->fd);
    j->total_bytes -= s->size;
    memmove(j->segs, j->segs + 1, (j->n_segs - 1) * sizeof(*j->segs));
    j->n_segs--;
    free(s);
    return 0;
}

/* Delete oldest fully-acked segments while they are past retention or the
 * journal needs `need` more bytes under `limit`. Only from the front: an
 * entry's segment then always goes before the later segment holding its ack
 * record, so a restart never resurrects an acked entry. Called with mu held. */
static int gc_locked(struct tds_journal *j, int64_t now_ms, uint64_t need, uint64_t limit)
{
    int n = 0;

    while (j->n_segs > 1) {
        struct seg *s = j->segs[0];
        bool expired = s->n_entries == 0 || now_ms - s->last_wall_ms > j->o.retention_ms;
        bool over = j->total_bytes + need > limit;

        if (s == j->active || s->n_unacked || s->chunks_pending)
            break;
        if (!expired && !over)
            break;
        if (seg_drop_front(j))
            break;
        n++;
    }
    return n;
}

/* rotate_locked(), and when the disk has no room for the new file (no inode
 * or directory block left: ENOSPC, EDQUOT), delete every fully acked segment
 * at the front, retention aside, as stall() does for a write, and try once
 * more. Without that, acked segments kept for replay would hold their inodes,
 * and every webhook would get 503, until their retention ended. Called with
 * mu held (or before the sync thread exists). */
static int rotate_or_make_room_locked(struct tds_journal *j)
{
    int r = rotate_locked(j);

    if ((r == -ENOSPC || r == -EDQUOT) && gc_locked(j, tds_wall_ms(), UINT64_MAX / 2, 0) > 0)
        r = rotate_locked(j);
    return r;
}

/* No segment could be created for lack of space: appends are refused
 * (E_FULL) and the sync thread tries again every TDS_JOURNAL_RETRY_MS, with
 * no append needed to drive it. Called with mu held (or before the sync
 * thread exists). */
static void rotate_later_locked(struct tds_journal *j)
{
    atomic_store(&j->no_space, true);
    j->rotate_due = true;
    j->retry_at_ms = tds_now_ms() + TDS_JOURNAL_RETRY_MS;
    pthread_cond_signal(&j->work);
}

/* Append a framed record to the pending chunk of the active segment. */
static int add_record_locked(struct tds_journal *j, int type, const void *payload, uint32_t len,
                             uint32_t payload_crc, uint64_t seq, int64_t wall_ms)
{
    struct chunk *c = j->tail;
    size_t rec = HDR_SIZE + len;

    if (!c || c->seg != j->active) {
        c = j->spare;
        j->spare = NULL;
        if (!c) {
            c = calloc(1, sizeof(*c));
            if (!c)
                return -ENOMEM;
        }
        c->seg = j->active;
        c->fd = j->active->fd;
        c->base = j->active->size;
        c->len = 0;
        c->next = NULL;
        if (j->tail)
            j->tail->next = c;
        else
            j->head = c;
        j->tail = c;
        j->active->chunks_pending++;
    }
    if (c->len + rec > c->cap) {
        size_t cap = c->cap ? c->cap : CHUNK_MIN;
        char *n;

        while (cap < c->len + rec)
            cap *= 2;
        n = realloc(c->buf, cap);
        if (!n)
            return -ENOMEM; /* the empty chunk stays queued; harmless */
        c->buf = n;
        c->cap = cap;
    }
    fill_header((unsigned char *)c->buf + c->len, type, len, seq, wall_ms, payload_crc);
    if (len)
        memcpy(c->buf + c->len + HDR_SIZE, payload, len);
    c->len += rec;
    j->active->size += rec;
    j->total_bytes += rec;
    j->pending_bytes += rec;
    pthread_cond_signal(&j->work);
    return 0;
}

/* ---- group commit ---- */

/* A write of this batch found no room. Put the batch back in front of what was
 * appended meanwhile (same chunks, same offsets), give back the space of
 * acked segments at the front, and settle the waiters: until a retry fits,
 * entries above synced_seq read as not durable. Called with sync_mu held. */
static void stall(struct tds_journal *j, struct chunk *list, bool dir_dirty)
{
    struct chunk *last = list;

    pthread_mutex_lock(&j->mu);
    if (list) {
        while (last->next)
            last = last->next;
        last->next = j->head;
        j->head = list;
        if (!j->tail)
            j->tail = last;
    }
    j->dir_dirty = j->dir_dirty || dir_dirty;
    atomic_store(&j->no_space, true);
    j->retry_at_ms = tds_now_ms() + TDS_JOURNAL_RETRY_MS;
    gc_locked(j, tds_wall_ms(), UINT64_MAX / 2, 0);
    pthread_cond_broadcast(&j->synced_cv);
    pthread_mutex_unlock(&j->mu);
    if (j->stalled_cb)
        j->stalled_cb(atomic_load(&j->synced_seq), j->stalled_ud);
}

static void chunk_recycle(struct tds_journal *j, struct chunk *c)
{
    if (!j->spare && c->cap <= 16 * CHUNK_MIN) {
        c->len = 0;
        j->spare = c;
        return;
    }
    free(c->buf);
    free(c);
}

/* Take what is queued: the chunks, the seq they end at and the directory's
 * dirty flag. Called with mu held. */
static struct chunk *take_locked(struct tds_journal *j, uint64_t *target, bool *dir_dirty)
{
    struct chunk *list = j->head;

    j->head = j->tail = NULL;
    *target = j->appended_seq;
    *dir_dirty = *dir_dirty || j->dir_dirty;
    j->dir_dirty = false;
    return list;
}

/* Prefill and write the chunks from c on, no sync. */
static int write_chunks(struct chunk *c)
{
    int err = 0;

    for (; c && !err; c = c->next) {
        if (c->base + c->len > c->seg->filled)
            err = prefill(c->seg, c->fd, c->base + c->len);
        if (!err)
            err = pwrite_all(c->fd, c->buf, c->len, c->base);
    }
    return err;
}

/* CLOCK_MONOTONIC time us microseconds from now, for the condition variables. */
static void deadline_in_us(int64_t us, struct timespec *dl)
{
    clock_gettime(CLOCK_MONOTONIC, dl);
    dl->tv_sec += us / 1000000;
    dl->tv_nsec += (us % 1000000) * 1000;
    if (dl->tv_nsec >= 1000000000) {
        dl->tv_sec++;
        dl->tv_nsec -= 1000000000;
    }
}

/* Whether a group commit of `batch` entries waits for more: it is small, and
 * webhooks have lately come closer together than the delay, so another one
 * is likely to share the fdatasync. A lone webhook after a quiet spell and
 * the large groups of a busy ingress do not wait. */
static bool lingers(struct tds_journal *j, uint64_t batch)
{
    bool r;

    if (j->o.sync_delay_us <= 0 || batch >= TDS_JOURNAL_LINGER_BATCH)
        return false;
    pthread_mutex_lock(&j->mu);
    r = j->gap_us < j->o.sync_delay_us && !j->stop;
    pthread_mutex_unlock(&j->mu);
    return r;
}

/* Wait up to o.sync_delay_us for more entries to join this group commit,
 * until it holds TDS_JOURNAL_LINGER_BATCH. Each arrival is taken, announced
 * (so it is forwarded at once: only its 200 waits) and written; the caller
 * then syncs them all at once. *waited gets the time spent waiting. */
static int linger(struct tds_journal *j, struct chunk **list, uint64_t *target, bool *dir_dirty,
                  uint64_t first, int64_t *waited)
{
    struct chunk *last = *list;
    int64_t t0 = tds_now_us(), until = t0 + j->o.sync_delay_us;
    int err = 0;

    while (last && last->next)
        last = last->next;
    while (!err && *target - first < TDS_JOURNAL_LINGER_BATCH) {
        struct chunk *more;
        int64_t now = tds_now_us();

        if (now >= until)
            break;
        pthread_mutex_lock(&j->mu);
        if (!j->head && !j->stop) {
            struct timespec dl;

            deadline_in_us(until - now, &dl);
            pthread_cond_timedwait(&j->work, &j->mu, &dl);
        }
        if (j->stop) {
            pthread_mutex_unlock(&j->mu);
            break;
        }
        more = take_locked(j, target, dir_dirty);
        pthread_mutex_unlock(&j->mu);
        if (!more)
            continue;
        if (j->syncing_cb)
            j->syncing_cb(*target, j->syncing_ud);
        if (last)
            last->next = more;
        else
            *list = more;
        err = write_chunks(more);
        for (last = more; last->next; last = last->next)
            ;
    }
    *waited = tds_now_us() - t0;
    return err;
}

int tds_journal_sync(struct tds_journal *j)
{
    struct chunk *list, *c;
    uint64_t target, batch, first;
    bool dir_dirty = false, write_err = false;
    int64_t waited = 0;
    int err = 0, rot_err = 0;
    struct timespec a, b;

    pthread_mutex_lock(&j->sync_mu);
    pthread_mutex_lock(&j->mu);
    if (j->failed) {
        pthread_mutex_unlock(&j->mu);
        pthread_mutex_unlock(&j->sync_mu);
        return TDS_JOURNAL_E_FAILED;
    }
    /* The segment an append could not create: again. The entries queued
     * before it, in the old segment, are written either way. */
    if (j->rotate_due && (rot_err = rotate_or_make_room_locked(j)) != 0)
        j->retry_at_ms = tds_now_ms() + TDS_JOURNAL_RETRY_MS;
    else
        j->rotate_due = false; /* no_space ends once this sync has written */
    first = j->synced_seq;
    list = take_locked(j, &target, &dir_dirty);
    pthread_mutex_unlock(&j->mu);

    if (!list && !dir_dirty) {
        pthread_mutex_unlock(&j->sync_mu);
        return rot_err ? TDS_JOURNAL_E_NOSPACE : 0;
    }
    if (list && j->syncing_cb)
        j->syncing_cb(target, j->syncing_ud);
    clock_gettime(CLOCK_MONOTONIC, &a);
    err = write_chunks(list);
    if (!err && lingers(j, target - first))
        err = linger(j, &list, &target, &dir_dirty, first, &waited);
    write_err = err != 0;
    /* One fdatasync per file, after its last chunk of this batch. */
    for (c = list; c && !err; c = c->next)
        if ((!c->next || c->next->fd != c->fd) && fdatasync(c->fd) < 0)
            err = -errno;
    if (!err && dir_dirty && fsync(j->dirfd) < 0)
        err = -errno;
    clock_gettime(CLOCK_MONOTONIC, &b);
    batch = target - first;
    if (write_err && (err == -ENOSPC || err == -EDQUOT)) {
        stall(j, list, dir_dirty);
        pthread_mutex_unlock(&j->sync_mu);
        return TDS_JOURNAL_E_NOSPACE;
    }
    pthread_mutex_lock(&j->mu);
    if (!j->rotate_due)
        atomic_store(&j->no_space, false);
    while (list) {
        c = list;
        list = c->next;
        c->seg->chunks_pending--;
        if (c->seg != j->active && c->seg->chunks_pending == 0 && c->seg->fd >= 0)
            seg_close_fd(c->seg);
        j->pending_bytes -= c->len;
        chunk_recycle(j, c);
    }
    if (err)
        j->failed = -err;
    else
        j->synced_seq = target;
    pthread_cond_broadcast(&j->synced_cv);
    pthread_mutex_unlock(&j->mu);
    if (j->stats_cb && !err)
        j->stats_cb(batch,
                    (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9 -
                        (double)waited / 1e6,
                    j->stats_ud);
    if (j->synced_cb)
        j->synced_cb(target, err != 0, j->synced_ud);
    pthread_mutex_unlock(&j->sync_mu);
    return err ? TDS_JOURNAL_E_FAILED : rot_err ? TDS_JOURNAL_E_NOSPACE : 0;
}

static void *sync_main(void *arg)
{
    struct tds_journal *j = arg;

    pthread_mutex_lock(&j->mu);
    while (!j->stop) {
        if ((!j->head && !j->dir_dirty && !j->rotate_due) || j->failed) {
            pthread_cond_wait(&j->work, &j->mu);
            continue;
        }
        if (j->no_space) {
            int64_t wait_ms = j->retry_at_ms - tds_now_ms();

            if (wait_ms > 0) {
                struct timespec dl;

                deadline_in_us(wait_ms * 1000, &dl);
                pthread_cond_timedwait(&j->work, &j->mu, &dl);
                continue;
            }
        }
        pthread_mutex_unlock(&j->mu);
        tds_journal_sync(j);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* ---- public API ---- */

int tds_journal_append(struct tds_journal *j, const void *payload, size_t len, int64_t wall_ms,
                       uint64_t *seq, struct tds_journal_loc *loc)
{
    uint32_t pcrc;
    uint64_t rec = HDR_SIZE + (uint64_t)len, need, s;
    int r;

    if (len > TDS_JOURNAL_MAX_PAYLOAD)
        return TDS_E_TOO_LARGE;
    if (j->o.read_only)
        return -EROFS;
    pcrc = tds_crc32c(0, payload, len);
    pthread_mutex_lock(&j->mu);
    if (j->failed) {
        r = TDS_JOURNAL_E_FAILED;
        goto out;
    }
    if (j->no_space) {
        r = TDS_JOURNAL_E_FULL;
        goto out;
    }
    if (j->backlog_full) {
        r = TDS_JOURNAL_E_BACKLOG;
        goto out;
    }
    if (j->o.max_pending_bytes && j->pending_bytes > 0 &&
        j->pending_bytes + rec > j->o.max_pending_bytes) {
        r = TDS_JOURNAL_E_BUSY;
        goto out;
    }
    /* The bound holds the acks to come as well: each unacked entry, this
     * one included, keeps room for its ack record (ACK_BYTES_PER_ENTRY). */
    need = rec + ACK_BYTES_PER_ENTRY * (j->unacked + 1);
    if (j->total_bytes + need > j->o.max_bytes) {
        gc_locked(j, wall_ms, need, j->o.max_bytes);
        if (j->total_bytes + need > j->o.max_bytes) {
            r = TDS_JOURNAL_E_FULL;
            goto out;
        }
    }
    if (j->active->size > 0 && j->active->size + rec > j->o.segment_bytes) {
        r = rotate_or_make_room_locked(j);
        if (r == -ENOSPC || r == -EDQUOT) {
            /* refused like a write without room, and retried by the sync
             * thread (or the next tds_journal_sync) until it fits */
            rotate_later_locked(j);
            r = TDS_JOURNAL_E_FULL;
        }
        if (r)
            goto out;
    }
    s = j->next_seq;
    loc->seg = j->active->id;
    loc->off = j->active->size;
    loc->len = (uint32_t)len;
    r = add_record_locked(j, REC_ENTRY, payload, (uint32_t)len, pcrc, s, wall_ms);
    if (r)
        goto out;
    j->next_seq++;
    j->appended_seq = s;
    if (j->o.sync_delay_us > 0) {
        /* The average gap, each sample capped so that a quiet spell is
         * forgotten within a few webhooks. */
        int64_t now = tds_now_us(), cap = 4 * j->o.sync_delay_us, gap = now - j->last_append_us;

        j->gap_us += ((gap < cap ? gap : cap) - j->gap_us) / 8;
        j->last_append_us = now;
    }
    j->active->n_entries++;
    j->active->n_unacked++;
    if (wall_ms > j->active->last_wall_ms)
        j->active->last_wall_ms = wall_ms;
    j->unacked++;
    if (j->o.max_unacked && j->unacked >= j->o.max_unacked)
        atomic_store(&j->backlog_full, true);
    *seq = s;
out:
    pthread_mutex_unlock(&j->mu);
    return r;
}

int tds_journal_state(struct tds_journal *j, uint64_t seq)
{
    /* Lock-free: every request asks this two or three times. failed is read
     * after synced, and both only move forward, so a stale read errs towards
     * "pending" and the caller waits for the next wake-up. */
    if (seq <= atomic_load(&j->synced_seq))
        return 1;
    return atomic_load(&j->failed) || atomic_load(&j->no_space) ? -1 : 0;
}

uint64_t tds_journal_synced_seq(struct tds_journal *j, bool *failed)
{
    uint64_t v;

    /* Under the lock: synced_seq is final once failed reads as set. */
    pthread_mutex_lock(&j->mu);
    v = j->synced_seq;
    *failed = j->failed != 0;
    pthread_mutex_unlock(&j->mu);
    return v;
}

int tds_journal_wait(struct tds_journal *j, uint64_t seq, int64_t timeout_ms)
{
    struct timespec dl;
    int r = 0;

    deadline_in_us(timeout_ms * 1000, &dl);
    pthread_mutex_lock(&j->mu);
    while (seq > j->synced_seq) {
        if (j->failed || j->no_space) {
            r = j->failed ? TDS_JOURNAL_E_FAILED : TDS_JOURNAL_E_NOSPACE;
            break;
        }
        if (pthread_cond_timedwait(&j->synced_cv, &j->mu, &dl) == ETIMEDOUT &&
            seq > j->synced_seq) {
            r = j->failed ? TDS_JOURNAL_E_FAILED : TDS_JOURNAL_E_TIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&j->mu);
    return r;
}

/* Seqs one ack record carries at most: the open takes a longer record for a
 * torn one, and cuts it with every record after it. */
#define ACK_SEQS_PER_RECORD (TDS_JOURNAL_MAX_PAYLOAD / 8)

int tds_journal_ack(struct tds_journal *j, const uint64_t *seqs, size_t n)
{
    unsigned char *buf;
    size_t done = 0;
    int r = 0;

    if (!n)
        return 0;
    /* Without memory for the record the counts still come down: the caller
     * has let go of these entries, and nothing could ack them later, so
     * their segments would be kept for good. Only the record is lost, which
     * means a resend after a restart (rule 5). */
    buf = malloc(n * 8);
    pthread_mutex_lock(&j->mu);
    for (size_t i = 0; i < n; i++) {
        struct seg *s = seg_for_seq(j, seqs[i]);

        if (!s || !s->n_unacked || seqs[i] > j->appended_seq)
            continue;
        s->n_unacked--;
        j->unacked--;
        if (buf)
            put64(buf + 8 * done, seqs[i]);
        done++;
    }
    if (j->backlog_full && j->unacked < tds_journal_backlog_resume(j))
        atomic_store(&j->backlog_full, false);
    /* With no segment taking writes (opened with no room for one) the acks
     * stay in memory only: losing an ack means a resend (rule 5). */
    if (buf && done && !j->failed && !j->o.read_only && j->active) {
        int64_t now = tds_wall_ms();

        for (size_t at = 0; at < done && !r; at += ACK_SEQS_PER_RECORD) {
            size_t k = done - at < ACK_SEQS_PER_RECORD ? done - at : ACK_SEQS_PER_RECORD;
            uint32_t len = (uint32_t)(k * 8);
            const unsigned char *p = buf + 8 * at;

            r = add_record_locked(j, REC_ACK, p, len, tds_crc32c(0, p, len), 0, now);
        }
    }
    pthread_mutex_unlock(&j->mu);
    if (!buf)
        return -ENOMEM;
    free(buf);
    return r;
}

int tds_journal_gc(struct tds_journal *j, int64_t now_wall_ms)
{
    int n;

    if (j->o.read_only)
        return 0;
    pthread_mutex_lock(&j->mu);
    /* Keep a quarter of the budget free so appends rarely delete inline. */
    n = gc_locked(j, now_wall_ms, 0, j->o.max_bytes - j->o.max_bytes / 4);
    pthread_mutex_unlock(&j->mu);
    return n;
}

static int read_record(int fd, uint64_t off, uint64_t file_size, unsigned char *hdr, void **payload,
                       uint32_t *len)
{
    uint32_t l, crc;
    void *p;
    int r;

    if (off + HDR_SIZE > file_size)
        return TDS_JOURNAL_E_CORRUPT;
    r = pread_all(fd, hdr, HDR_SIZE, off);
    if (r)
        return r;
    l = get32(hdr + 4);
    if (get32(hdr) != REC_MAGIC || l > TDS_JOURNAL_MAX_PAYLOAD || off + HDR_SIZE + l > file_size ||
        (hdr[12] != REC_ENTRY && hdr[12] != REC_ACK))
        return TDS_JOURNAL_E_CORRUPT;
    p = malloc(l ? l : 1);
    if (!p)
        return -ENOMEM;
    r = pread_all(fd, p, l, off + HDR_SIZE);
    if (r) {
        free(p);
        return r;
    }
    crc = tds_crc32c(tds_crc32c(0, p, l), hdr + 12, HDR_SIZE - 12);
    if (crc != get32(hdr + 8)) {
        free(p);
        return TDS_JOURNAL_E_CORRUPT;
    }
    *payload = p;
    *len = l;
    return 0;
}

int tds_journal_read(struct tds_journal *j, const struct tds_journal_loc *loc, void **buf,
                     size_t *len)
{
    char name[SEG_NAME_LEN + 8];
    unsigned char hdr[HDR_SIZE];
    struct stat st;
    uint32_t l;
    int fd, r;

    pthread_mutex_lock(&j->mu);
    r = seg_by_id(j, loc->seg) ? 0 : TDS_E_NOTFOUND;
    pthread_mutex_unlock(&j->mu);
    if (r)
        return r;
    seg_name(loc->seg, name, sizeof(name));
    fd = openat(j->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? TDS_E_NOTFOUND : -errno;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    r = read_record(fd, loc->off, (uint64_t)st.st_size, hdr, buf, &l);
    close(fd);
    if (r)
        return r;
    if (hdr[12] != REC_ENTRY || l != loc->len) {
        free(*buf);
        *buf = NULL;
        return TDS_JOURNAL_E_CORRUPT;
    }
    *len = l;
    return 0;
}

/* ---- open ----
 *
 * Two passes over the segments, in order. The first checks every record,
 * cuts a torn tail and notes which entries are acked, in one bit per record
 * the segment could hold (its size / HDR_SIZE: 4 MiB for a journal of 1 GiB).
 * The second reads the entries again, one file at a time, and hands each to
 * the caller with its acked state. So what the scan holds does not grow with
 * the records kept, acked or not: it used to hold 40 bytes for every entry
 * and 8 for every acked seq (170 MB for a full 1 GiB journal of 300-byte
 * fetches) before the caller saw the first one. An entry's ack always comes
 * after it in this order: it is appended later, to the same segment or to a
 * later one (the one taking writes). */

struct acked_bits {
    uint64_t id;              /* the segment's first seq */
    uint64_t n;               /* bits: seqs id .. id + n - 1 */
    unsigned char *b;
    uint64_t *holes;          /* damaged stretches the first pass skipped: (from, to) pairs */
    size_t n_holes;
};

struct scan {
    struct acked_bits *sb;    /* one per segment kept, as j->segs */
    size_t n;
};

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_seg_name(const char *n, uint64_t *id)
{
    uint64_t v = 0;

    if (strlen(n) != SEG_NAME_LEN || strcmp(n + 20, ".seg") != 0)
        return false;
    for (int i = 0; i < 20; i++) {
        if (n[i] < '0' || n[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(n[i] - '0');
    }
    *id = v;
    return true;
}

/* Whether bytes [off, size) of fd are all zero. A file that ends before
 * size ends in zeros too: a read-only scan (replay) beside the running
 * ingress sees it cut a full segment's prefilled zero tail after the scan
 * took the size. */
static int all_zero(int fd, uint64_t off, uint64_t size, bool *out)
{
    char buf[4096];

    *out = false;
    while (off < size) {
        size_t n = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
        int r = pread_all(fd, buf, n, off);

        if (r == TDS_JOURNAL_E_CORRUPT)
            break; /* shorter now: cut */
        if (r)
            return r;
        if (memcmp(buf, zeros, n) != 0)
            return 0;
        off += n;
    }
    *out = true;
    return 0;
}

/* The bits of the segment that holds seq: the last one whose id ≤ seq. */
static struct acked_bits *bits_for(struct scan *sc, uint64_t seq)
{
    size_t lo = 0, hi = sc->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (sc->sb[mid].id <= seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? &sc->sb[lo - 1] : NULL;
}

static void mark_acked(struct scan *sc, uint64_t seq)
{
    struct acked_bits *a = bits_for(sc, seq);

    /* out of range: an ack of an entry in a segment dropped since */
    if (a && seq - a->id < a->n)
        a->b[(seq - a->id) / 8] |= (unsigned char)(1u << ((seq - a->id) % 8));
}

static bool is_acked(const struct acked_bits *a, uint64_t seq)
{
    return seq >= a->id && seq - a->id < a->n &&
           (a->b[(seq - a->id) / 8] >> ((seq - a->id) % 8) & 1);
}

/* After a record that does not check out at off, with more than zeros
 * behind it: the offset of the next record that does (*next), or size when
 * none does. Such a record must also be in its place: an entry's seq above
 * every entry before it in the segment (lo) and below the next segment's
 * first (hi). A record cannot hide in a webhook's bytes: its header holds
 * zero bytes at fixed places (the length's top byte, the type's padding, the
 * seq's top bytes), and a body the ingress takes holds no NUL. */
static int resync(int fd, uint64_t off, uint64_t size, uint64_t lo, uint64_t hi, uint64_t *next)
{
    const size_t chunk = 64u * 1024;
    unsigned char magic[4], *buf = malloc(chunk);
    uint64_t at = off + 1;
    int r = 0;

    if (!buf)
        return -ENOMEM;
    put32(magic, REC_MAGIC);
    *next = size;
    while (at + HDR_SIZE <= size) {
        size_t n = size - at < chunk ? (size_t)(size - at) : chunk;
        unsigned char *p = buf;

        r = pread_all(fd, buf, n, at);
        if (r == TDS_JOURNAL_E_CORRUPT) { /* shorter now (replay beside the ingress) */
            r = 0;
            break;
        }
        if (r)
            break;
        while ((p = memmem(p, n - (size_t)(p - buf), magic, sizeof(magic)))) {
            unsigned char hdr[HDR_SIZE];
            uint64_t cand = at + (uint64_t)(p - buf), seq;
            void *payload = NULL;
            uint32_t l;

            r = read_record(fd, cand, size, hdr, &payload, &l);
            free(payload);
            if (r == 0) {
                seq = get64(hdr + 16);
                if (hdr[12] != REC_ENTRY || (seq >= lo && seq < hi)) {
                    *next = cand;
                    goto out;
                }
            } else if (r != TDS_JOURNAL_E_CORRUPT) {
                goto out;
            }
            r = 0;
            p++;
        }
        if (at + n >= size)
            break;
        at += n - (sizeof(magic) - 1); /* a magic across two reads is found whole */
    }
out:
    free(buf);
    return r;
}

/* First pass over one segment. A record that does not check out is torn or
 * damaged: when a whole record follows it (a bad disk block, not a crash
 * mid-write), the scan skips to that record and notes the stretch in a->holes
 * for the second pass; otherwise it ends the segment, cut there (torn tail). */
static int scan_seg(struct tds_journal *j, struct seg *s, int fd, uint64_t size, uint64_t next_id,
                    struct scan *sc, struct acked_bits *a, uint64_t *max_seq,
                    struct tds_journal_open_info *info)
{
    uint64_t off = 0, last_seq = 0;
    int r;

    while (off < size) {
        unsigned char hdr[HDR_SIZE];
        void *p = NULL;
        uint32_t l;

        r = read_record(fd, off, size, hdr, &p, &l);
        if (r == TDS_JOURNAL_E_CORRUPT) {
            bool clean = false;
            uint64_t next = size, *h;

            /* zeros to the end: the prefilled tail, not a torn record */
            if ((r = all_zero(fd, off, size, &clean)) != 0)
                return r;
            if (!clean &&
                (r = resync(fd, off, size, last_seq ? last_seq + 1 : s->id, next_id, &next)) != 0)
                return r;
            if (next < size) {
                if (!(h = realloc(a->holes, (a->n_holes + 1) * 2 * sizeof(*h))))
                    return -ENOMEM;
                a->holes = h;
                h[2 * a->n_holes] = off;
                h[2 * a->n_holes + 1] = next;
                a->n_holes++;
                info->damaged++;
                info->damaged_bytes += next - off;
                off = next;
                continue;
            }
            if (!clean)
                info->torn++;
            if (!j->o.read_only && ftruncate(fd, (off_t)off) < 0)
                return -errno;
            break;
        }
        if (r)
            return r;
        if (hdr[12] == REC_ENTRY) {
            uint64_t seq = get64(hdr + 16);

            if (seq > *max_seq)
                *max_seq = seq;
            last_seq = seq;
            s->n_entries++;
            if ((int64_t)get64(hdr + 24) > s->last_wall_ms)
                s->last_wall_ms = (int64_t)get64(hdr + 24);
        } else {
            for (size_t i = 0; i < l / 8; i++)
                mark_acked(sc, get64((unsigned char *)p + 8 * i));
        }
        free(p);
        off += HDR_SIZE + l;
    }
    s->size = off;
    return 0;
}

/* Second pass over one segment: each entry to cb, with its acked state. */
static int replay_seg(struct tds_journal *j, struct seg *s, const struct acked_bits *a,
                      tds_journal_scan_cb cb, void *ud, struct tds_journal_open_info *info)
{
    char name[SEG_NAME_LEN + 8];
    uint64_t off = 0;
    size_t hole = 0;
    int fd, r = 0;

    seg_name(s->id, name, sizeof(name));
    fd = openat(j->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && j->o.read_only)
        return 0; /* dropped since the first pass (replay): its entries were acked */
    if (fd < 0)
        return -errno;
    while (off < s->size) {
        unsigned char hdr[HDR_SIZE];
        void *p = NULL;
        uint32_t l;

        /* A read-only open (replay) beside the running ingress may find
         * whole now a record that was being written at the first pass. */
        while (hole < a->n_holes && a->holes[2 * hole] < off)
            hole++;
        r = read_record(fd, off, s->size, hdr, &p, &l);
        if (r == TDS_JOURNAL_E_CORRUPT && hole < a->n_holes && a->holes[2 * hole] == off) {
            off = a->holes[2 * hole + 1];
            hole++;
            continue;
        }
        if (r)
            break;
        if (hdr[12] == REC_ENTRY) {
            uint64_t seq = get64(hdr + 16);
            bool acked = is_acked(a, seq);

            if (!acked) {
                s->n_unacked++;
                j->unacked++;
            }
            info->entries++;
            if (cb) {
                struct tds_journal_rec rec = {seq, (int64_t)get64(hdr + 24), acked,
                                              {s->id, off, l}, p, l};

                r = cb(&rec, ud);
            }
        }
        free(p);
        if (r)
            break;
        off += HDR_SIZE + l;
    }
    close(fd);
    return r;
}

static int open_scan(struct tds_journal *j, tds_journal_scan_cb cb, void *ud,
                     struct tds_journal_open_info *info)
{
    struct scan sc = {0};
    char **names = NULL;
    size_t n_names = 0, cap_names = 0;
    uint64_t max_seq = 0;
    DIR *d = NULL;
    struct dirent *e;
    int dfd, r = 0;

    dfd = dup(j->dirfd);
    if (dfd < 0)
        return -errno;
    d = fdopendir(dfd);
    if (!d) {
        r = -errno;
        close(dfd);
        return r;
    }
    while ((e = readdir(d))) {
        uint64_t id;

        if (!is_seg_name(e->d_name, &id))
            continue;
        if (n_names == cap_names) {
            size_t cap = cap_names ? cap_names * 2 : 16;
            char **nn = realloc(names, cap * sizeof(*nn));

            if (!nn) {
                r = -ENOMEM;
                goto out;
            }
            names = nn;
            cap_names = cap;
        }
        names[n_names] = strdup(e->d_name);
        if (!names[n_names]) {
            r = -ENOMEM;
            goto out;
        }
        n_names++;
    }
    if (n_names)
        qsort(names, n_names, sizeof(*names), cmp_name);
    sc.sb = calloc(n_names ? n_names : 1, sizeof(*sc.sb));
    if (!sc.sb) {
        r = -ENOMEM;
        goto out;
    }

    for (size_t i = 0; i < n_names; i++) {
        struct seg *s = calloc(1, sizeof(*s));
        struct acked_bits *a = &sc.sb[sc.n];
        struct stat st;
        uint64_t next_id = UINT64_MAX;
        int fd;

        if (!s) {
            r = -ENOMEM;
            goto out;
        }
        is_seg_name(names[i], &s->id);
        s->fd = -1;
        fd = openat(j->dirfd, names[i], (j->o.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && j->o.read_only) {
            /* dropped by the running ingress since the listing (replay) */
            free(s);
            continue;
        }
        if (fd < 0 || fstat(fd, &st) < 0) {
            r = -errno;
            if (fd >= 0)
                close(fd);
            free(s);
            goto out;
        }
        /* Room for every entry the file could hold, so that the acks in it
         * and in later segments find their bit. */
        a->id = s->id;
        a->n = (uint64_t)st.st_size / HDR_SIZE;
        a->b = calloc(a->n / 8 + 1, 1);
        if (!a->b) {
            close(fd);
            free(s);
            r = -ENOMEM;
            goto out;
        }
        sc.n++;
        if (i + 1 < n_names)
            is_seg_name(names[i + 1], &next_id);
        r = scan_seg(j, s, fd, (uint64_t)st.st_size, next_id, &sc, a, &max_seq, info);
        /* What the scan read counts as durable from now on (synced_seq
         * below): a record written but not yet synced when the last
         * process died is in the page cache, whole, while the machine
         * lives, and its retry would be answered 200 as a duplicate. So it
         * is synced first, with a torn tail's truncation. */
        if (r == 0 && s->size > 0 && !j->o.read_only && fdatasync(fd) < 0)
            r = -errno;
        close(fd);
        if (r == 0 && s->size == 0 && !j->o.read_only) {
            /* Created but never written (a crash right after rotation). */
            unlinkat(j->dirfd, names[i], 0);
            free(s);
            sc.n--;
            free(a->b);
            free(a->holes);
            memset(a, 0, sizeof(*a));
            continue;
        }
        if (r == 0)
            r = segs_push(j, s);
        if (r) {
            free(s);
            goto out;
        }
        j->total_bytes += s->size;
        if (s->id > max_seq)
            max_seq = s->id;
    }

    /* the segments' names (and the removal of empty ones) too */
    if (n_names && !j->o.read_only && fsync(j->dirfd) < 0) {
        r = -errno;
        goto out;
    }
    for (size_t i = 0; i < j->n_segs && r == 0; i++)
        r = replay_seg(j, j->segs[i], &sc.sb[i], cb, ud, info);
    if (r)
        goto out;
    info->segments = j->n_segs;
    info->unacked = j->unacked;
    /* More than the bound (it was lowered, or the journal predates it):
     * every entry is kept, and appends wait for acks to make room. */
    if (j->o.max_unacked && j->unacked >= j->o.max_unacked)
        atomic_store(&j->backlog_full, true);
    j->next_seq = max_seq + 1;
    j->appended_seq = max_seq;
    j->synced_seq = max_seq;
out:
    for (size_t i = 0; i < n_names; i++)
        free(names[i]);
    free(names);
    for (size_t i = 0; i < sc.n; i++) {
        free(sc.sb[i].b);
        free(sc.sb[i].holes);
    }
    free(sc.sb);
    closedir(d);
    return r;
}

int tds_journal_open(struct tds_journal **out, const struct tds_journal_opts *o,
                     tds_journal_scan_cb cb, void *ud, struct tds_journal_open_info *info)
{
    struct tds_journal_open_info dummy;
    struct tds_journal *j;
    pthread_condattr_t ca;
    int r;

    if (!info)
        info = &dummy;
    memset(info, 0, sizeof(*info));
    j = calloc(1, sizeof(*j));
    if (!j)
        return -ENOMEM;
    j->dirfd = -1;
    j->o = *o;
    j->o.dir = NULL;
    if (j->o.segment_bytes == 0)
        j->o.segment_bytes = 64u * 1024 * 1024;
    if (j->o.sync_delay_us < 0)
        j->o.sync_delay_us = 0;
    j->gap_us = 4 * j->o.sync_delay_us; /* no history yet: as after a quiet spell */
    pthread_mutex_init(&j->mu, NULL);
    pthread_mutex_init(&j->sync_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->work, &ca);
    pthread_cond_init(&j->synced_cv, &ca);
    pthread_condattr_destroy(&ca);

    j->dir = strdup(o->dir);
    if (!j->dir) {
        r = -ENOMEM;
        goto fail;
    }
    if (!o->read_only) {
        r = mkdir_p(o->dir);
        if (r)
            goto fail;
    }
    j->dirfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (j->dirfd < 0) {
        r = -errno;
        goto fail;
    }
    /* One writer a folder, held while the journal is open: a second one's
     * scan deleted the first's empty active segment, or cut a record it was
     * writing as a torn tail, entries it had answered 200 for. A reader
     * (replay) takes no lock and changes nothing. */
    if (!o->read_only && flock(j->dirfd, LOCK_EX | LOCK_NB) != 0) {
        r = errno == EWOULDBLOCK ? TDS_JOURNAL_E_LOCKED : -errno;
        goto fail;
    }
    r = open_scan(j, cb, ud, info);
    if (r)
        goto fail;
    if (!o->read_only) {
        /* Always a fresh segment: never append after a possibly torn tail.
         * With no room for it even after deleting acked segments, the
         * journal opens with none (active NULL): appends are refused and the
         * sync thread creates it once there is room, while the entries found
         * are resent. Exiting instead would not make room: the next start
         * would find the same disk. */
        r = rotate_or_make_room_locked(j);
        if (r == -ENOSPC || r == -EDQUOT) {
            rotate_later_locked(j);
            r = 0;
        }
        if (r)
            goto fail;
        if (o->sync_thread) {
            r = -pthread_create(&j->thread, NULL, sync_main, j);
            if (r)
                goto fail;
            j->has_thread = true;
        }
    }
    *out = j;
    return 0;
fail:
    tds_journal_close(j);
    return r;
}

struct tds_journal *tds_journal_close(struct tds_journal *j)
{
    if (!j)
        return NULL;
    if (j->has_thread) {
        pthread_mutex_lock(&j->mu);
        j->stop = true;
        pthread_cond_broadcast(&j->work);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->thread, NULL);
    }
    if (!j->o.read_only && j->dirfd >= 0)
        tds_journal_sync(j);
    while (j->head) {
        struct chunk *c = j->head;

        j->head = c->next;
        free(c->buf);
        free(c);
    }
    if (j->spare) {
        free(j->spare->buf);
        free(j->spare);
    }
    for (size_t i = 0; i < j->n_segs; i++) {
        seg_close_fd(j->segs[i]);
        free(j->segs[i]);
    }
    free(j->segs);
    if (j->dirfd >= 0)
        close(j->dirfd);
    free(j->dir);
    pthread_cond_destroy(&j->work);
    pthread_cond_destroy(&j->synced_cv);
    pthread_mutex_destroy(&j->mu);
    pthread_mutex_destroy(&j->sync_mu);
    free(j);
    return NULL;
}

/* Callbacks run under sync_mu: once these return, the old one is not running. */
void tds_journal_on_synced(struct tds_journal *j, tds_journal_synced_cb cb, void *ud)
{
    pthread_mutex_lock(&j->sync_mu);
    j->synced_cb = cb;
    j->synced_ud = ud;
    pthread_mutex_unlock(&j->sync_mu);
}

void tds_journal_on_stats(struct tds_journal *j, tds_journal_stats_cb cb, void *ud)
{
    pthread_mutex_lock(&j->sync_mu);
    j->stats_cb = cb;
    j->stats_ud = ud;
    pthread_mutex_unlock(&j->sync_mu);
}

void tds_journal_on_syncing(struct tds_journal *j, tds_journal_syncing_cb cb, void *ud)
{
    pthread_mutex_lock(&j->sync_mu);
    j->syncing_cb = cb;
    j->syncing_ud = ud;
    pthread_mutex_unlock(&j->sync_mu);
}

void tds_journal_on_stalled(struct tds_journal *j, tds_journal_stalled_cb cb, void *ud)
{
    pthread_mutex_lock(&j->sync_mu);
    j->stalled_cb = cb;
    j->stalled_ud = ud;
    pthread_mutex_unlock(&j->sync_mu);
}

int tds_journal_drop_error(struct tds_journal *j, uint64_t *seg_id)
{
    int e;

    pthread_mutex_lock(&j->mu);
    e = j->drop_errno;
    *seg_id = j->drop_failed_id;
    j->drop_errno = 0;
    pthread_mutex_unlock(&j->mu);
    return e;
}

double tds_journal_held_ratio(struct tds_journal *j)
{
    uint64_t held;
    size_t i = 0;

    pthread_mutex_lock(&j->mu);
    held = j->total_bytes;
    /* gc_locked's test, from the front */
    for (; i < j->n_segs; i++) {
        struct seg *s = j->segs[i];

        if (s == j->active || s->n_unacked || s->chunks_pending || s->undeletable)
            break;
        held -= s->size;
    }
    pthread_mutex_unlock(&j->mu);
    return j->o.max_bytes ? (double)held / (double)j->o.max_bytes : 0;
}

uint64_t tds_journal_bytes(struct tds_journal *j)
{
    uint64_t v;

    pthread_mutex_lock(&j->mu);
    v = j->total_bytes;
    pthread_mutex_unlock(&j->mu);
    return v;
}

uint64_t tds_journal_pending_bytes(struct tds_journal *j)
{
    uint64_t v;

    pthread_mutex_lock(&j->mu);
    v = j->pending_bytes;
    pthread_mutex_unlock(&j->mu);
    return v;
}

uint64_t tds_journal_unacked(struct tds_journal *j)
{
    uint64_t v;

    pthread_mutex_lock(&j->mu);
    v = j->unacked;
    pthread_mutex_unlock(&j->mu);
    return v;
}

size_t tds_journal_segments(struct tds_journal *j)
{
    size_t v;

    pthread_mutex_lock(&j->mu);
    v = j->n_segs;
    pthread_mutex_unlock(&j->mu);
    return v;
}

bool tds_journal_failed(struct tds_journal *j)
{
    bool v;

    pthread_mutex_lock(&j->mu);
    v = j->failed != 0;
    pthread_mutex_unlock(&j->mu);
    return v;
}

bool tds_journal_no_space(struct tds_journal *j)
{
    return atomic_load(&j->no_space);
}

bool tds_journal_backlog_full(struct tds_journal *j)
{
    return atomic_load(&j->backlog_full);
}

uint64_t tds_journal_backlog_resume(struct tds_journal *j)
{
    return j->o.max_unacked - j->o.max_unacked / 10;
}
