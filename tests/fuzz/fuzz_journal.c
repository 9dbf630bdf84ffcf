/* fuzz_journal — fuzz target for the ingress journal's recovery at open:
 * segments as a crash or a bad disk leaves them.
 *
 * The input is a program: it writes one to three segment files of well-framed
 * records (entries with consecutive seqs and fuzzed payloads, acks of earlier
 * or unknown seqs, segment breaks, prefilled zero tails), then may flip one
 * or two bytes and cut one segment short. Opening must not crash, leak or report a
 * sanitizer error, and it must:
 *   - hand over entries in ascending seq order, each one framed with exactly
 *     that payload (never garbage);
 *   - keep every entry whose record the flips missed and the cut left whole,
 *     behind the damage in its segment too;
 *   - never call an entry acked that no ack names;
 *   - with no damage, keep every entry, acked exactly when an ack names it;
 *   - leave the folder so that the next open finds no torn record, the same
 *     damaged stretches, and the same entries in the same states, plus one
 *     appended after the first.
 * No payload byte is zero: an entry's payload holds a webhook, whose body
 * holds no NUL, and that is what keeps a record from hiding inside one (a
 * header has zero bytes at fixed places). journal.c relies on it when it
 * looks for the next whole record behind damage.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                 \
    do {                                                                         \
        if (!(c)) {                                                              \
            fprintf(stderr, "fuzz_journal: check failed: %s (line %d)\n", #c,   \
                    __LINE__);                                                   \
            abort();                                                             \
        }                                                                        \
    } while (0)

#define HDR 32u
#define MAX_SEGS 3
#define MAX_ENTRIES 256
#define SEG_CAP (64u * 1024)

struct entry {
    uint64_t seq;
    int seg;
    size_t start, end;   /* the record's offsets in its segment, end exclusive */
    uint8_t payload[64];
    size_t len;
    bool acked;          /* an ack record names it */
};

struct world {
    unsigned char seg[MAX_SEGS][SEG_CAP];
    size_t seg_len[MAX_SEGS];
    uint64_t seg_id[MAX_SEGS];
    int n_segs;
    struct entry e[MAX_ENTRIES];
    size_t n;
    uint64_t next_seq;
};

static struct world w;
static char dir[256];

struct seen {
    uint64_t seq[MAX_ENTRIES + 1];
    bool acked[MAX_ENTRIES + 1];
    size_t n;
    bool bad;
};

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

/* One record as journal.c frames it: magic, length, CRC32C of the payload
 * then header bytes 12..31, type, seq, wall time. */
static bool frame(int s, int type, uint64_t seq, const void *p, size_t len)
{
    if (w.seg_len[s] + HDR + len > SEG_CAP)
        return false;
    unsigned char *h = w.seg[s] + w.seg_len[s];
    memset(h, 0, HDR);
    put32(h, 0x314a4454u);
    put32(h + 4, (uint32_t)len);
    h[12] = (unsigned char)type;
    put64(h + 16, seq);
    put64(h + 24, (uint64_t)(1700000000000 + (int64_t)seq));
    memcpy(h + HDR, p, len);
    put32(h + 8, tds_crc32c(tds_crc32c(0, p, len), h + 12, HDR - 12));
    w.seg_len[s] += HDR + len;
    return true;
}

static void clear_dir(void)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
}

static void remove_dir(void)
{
    clear_dir();
    rmdir(dir);
}

static int collect(const struct tds_journal_rec *r, void *ud)
{
    struct seen *s = ud;
    if (s->n == MAX_ENTRIES + 1) {
        s->bad = true;
        return 0;
    }
    s->seq[s->n] = r->seq;
    s->acked[s->n] = r->acked;
    s->n++;
    /* the payload is the one framed under that seq */
    bool found = false;
    for (size_t i = 0; i < w.n; i++) {
        if (w.e[i].seq == r->seq) {
            found = r->len == w.e[i].len && memcmp(r->payload, w.e[i].payload, r->len) == 0;
            break;
        }
    }
    if (!found && r->seq != w.next_seq) /* w.next_seq: the one appended after */
        s->bad = true;
    return 0;
}

static struct tds_journal_opts opts(void)
{
    struct tds_journal_opts o = {0};
    o.dir = dir;
    o.max_bytes = 64u << 20;
    o.segment_bytes = 1u << 20;
    o.retention_ms = 0;
    o.sync_thread = false;
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(dir, sizeof(dir), "%s/fuzz-journal-XXXXXX", base);
        if (!mkdtemp(dir)) {
            dir[0] = '\0';
            return 0;
        }
        atexit(remove_dir);
    }
    if (size < 6)
        return 0;
    memset(w.seg_len, 0, sizeof(w.seg_len));
    w.n = 0;
    w.n_segs = 1;
    w.next_seq = 1 + data[0] % 4; /* a journal whose first segments are gone */
    w.seg_id[0] = w.next_seq;
    /* bit 0: flip a byte, bit 1: cut a segment, bit 2: flip another byte */
    int damage = data[1] % 8;
    size_t flip_at[2] = {(size_t)data[2] << 8 | data[3], (size_t)data[3] << 8 | data[4]};
    size_t cut_at = (size_t)data[4] << 8 | data[5];
    size_t i = 6;

    while (i < size) {
        uint8_t op = data[i++];
        int s = w.n_segs > 1 ? w.n_segs - 1 : 0;
        if (op == 0xff) {
            /* a new segment is named after the next seq: only once the one
             * before holds an entry (journal.c, rotate_locked) */
            if (w.n_segs < MAX_SEGS && w.next_seq > w.seg_id[s]) {
                w.seg_id[w.n_segs] = w.next_seq;
                w.n_segs++;
            }
        } else if (op == 0xfe) {
            /* the prefilled zeros at the end of the segment taking writes */
            size_t z = 1 + (i < size ? data[i++] : 0) * 8u;
            if (w.seg_len[s] + z <= SEG_CAP) {
                memset(w.seg[s] + w.seg_len[s], 0, z);
                w.seg_len[s] += z;
            }
            break;
        } else if (op & 1) {
            /* an ack of up to 4 seqs: earlier entries, or seqs never seen */
            unsigned char p[32];
            size_t k = (op >> 1) % 4 + 1, len = 0;
            int idx[4];
            for (size_t a = 0; a < k && i < size; a++) {
                uint8_t pick = data[i++];
                uint64_t seq;
                idx[a] = -1;
                if (w.n && pick < 0xf0) {
                    idx[a] = (int)(pick % w.n);
                    seq = w.e[idx[a]].seq;
                } else {
                    seq = w.next_seq + 1000 + pick;
                }
                put64(p + len, seq);
                len += 8;
            }
            if (!len || !frame(s, 2, 0, p, len))
                continue;
            for (size_t a = 0; a < len / 8; a++)
                if (idx[a] >= 0)
                    w.e[idx[a]].acked = true;
        } else if (w.n < MAX_ENTRIES) {
            struct entry *e = &w.e[w.n];
            e->len = (op >> 1) % 64;
            e->seq = w.next_seq;
            e->seg = s;
            e->acked = false;
            for (size_t b = 0; b < e->len; b++) {
                uint8_t v = i < size ? data[i++] : (uint8_t)b;
                e->payload[b] = v ? v : 1;
            }
            e->start = w.seg_len[s];
            if (!frame(s, 1, e->seq, e->payload, e->len))
                break;
            e->end = w.seg_len[s];
            w.n++;
            w.next_seq++;
        }
    }

    /* where the damage is: the flipped bytes' segments and offsets (-1,
     * SIZE_MAX: none); a cut shortens w.seg_len */
    int flip_seg[2] = {-1, -1};
    size_t flip_pos[2] = {SIZE_MAX, SIZE_MAX};
    bool damaged = false;
    for (int f = 0; f < 2; f++) {
        size_t total = 0;
        if (!(damage & (f ? 4 : 1)))
            continue;
        for (int s = 0; s < w.n_segs; s++)
            total += w.seg_len[s];
        if (!total)
            continue;
        size_t at = flip_at[f] % total;
        for (int s = 0; s < w.n_segs; s++) {
            if (at < w.seg_len[s]) {
                w.seg[s][at] ^= (unsigned char)(1u << (data[2 + f] % 8));
                flip_seg[f] = s;
                flip_pos[f] = at;
                damaged = true;
                break;
            }
            at -= w.seg_len[s];
        }
    }
    if (damage & 2) {
        int s = (int)(data[5] % w.n_segs);
        if (w.seg_len[s]) {
            w.seg_len[s] = cut_at % w.seg_len[s];
            damaged = true;
        }
    }

    /* an ack may be lost with the damage: acked states are compared only
     * without it */
    clear_dir();
    for (int s = 0; s < w.n_segs; s++) {
        char path[320];
        snprintf(path, sizeof(path), "%s/%020llu.seg", dir, (unsigned long long)w.seg_id[s]);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CHECK(fd >= 0);
        CHECK(write(fd, w.seg[s], w.seg_len[s]) == (ssize_t)w.seg_len[s]);
        close(fd);
    }

    struct tds_journal_opts o = opts();
    struct tds_journal *j = NULL;
    struct tds_journal_open_info info;
    static struct seen s1, s2;
    memset(&s1, 0, sizeof(s1));
    memset(&s2, 0, sizeof(s2));
    int rc = tds_journal_open(&j, &o, collect, &s1, &info);
    CHECK(rc == 0);
    CHECK(!s1.bad);
    for (size_t k = 1; k < s1.n; k++)
        CHECK(s1.seq[k] > s1.seq[k - 1]);
    /* every entry whose record the flips missed and the cut left whole is
     * kept, wherever the damage is */
    for (size_t k = 0; k < w.n; k++) {
        const struct entry *e = &w.e[k];
        bool must = e->end <= w.seg_len[e->seg];
        for (int f = 0; f < 2; f++)
            if (e->seg == flip_seg[f] && flip_pos[f] >= e->start && flip_pos[f] < e->end)
                must = false;
        bool kept = false, acked = false;
        for (size_t m = 0; m < s1.n; m++)
            if (s1.seq[m] == e->seq) {
                kept = true;
                acked = s1.acked[m];
            }
        if (must)
            CHECK(kept);
        CHECK(!acked || e->acked);
        if (!damaged)
            CHECK(acked == e->acked);
    }
    if (!damaged)
        CHECK(s1.n == w.n && info.torn == 0 && info.damaged == 0);
    uint64_t holes = info.damaged, hole_bytes = info.damaged_bytes;

    /* one more entry, then the next open sees the same, and no torn record */
    uint64_t seq = 0;
    struct tds_journal_loc loc;
    static const char more[] = "appended after recovery";
    /* collect() takes this payload under w.next_seq only */
    rc = tds_journal_append(j, more, sizeof(more) - 1, 1700000000000, &seq, &loc);
    CHECK(rc == 0);
    CHECK(tds_journal_sync(j) == 0);
    j = tds_journal_close(j);
    uint64_t appended = seq;
    uint64_t saved_next = w.next_seq;
    w.next_seq = appended;
    rc = tds_journal_open(&j, &o, collect, &s2, &info);
    w.next_seq = saved_next;
    CHECK(rc == 0);
    CHECK(!s2.bad);
    CHECK(info.torn == 0);
    CHECK(info.damaged == holes && info.damaged_bytes == hole_bytes);
    CHECK(s2.n == s1.n + 1);
    for (size_t k = 0; k < s1.n; k++)
        CHECK(s2.seq[k] == s1.seq[k] && s2.acked[k] == s1.acked[k]);
    CHECK(s2.seq[s1.n] == appended && !s2.acked[s1.n]);
    CHECK(appended > (s1.n ? s1.seq[s1.n - 1] : 0));
    tds_journal_close(j);
    clear_dir();
    return 0;
}
