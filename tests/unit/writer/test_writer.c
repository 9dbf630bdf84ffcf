/* test_writer — batch splitting and acks, with a fake database.
 *
 * The fake runner refuses (as a data error) any transaction that contains a
 * live row whose value is "BAD", fails as unreachable when told to, and
 * otherwise "commits" and records which messages it committed. This checks
 * that a bad record is isolated alone, everything else commits exactly once,
 * acks follow commits only, and an unreachable database keeps the batch.
 * A "lazy" fake commits without waiting for its WAL flush and says where the
 * commit is in the WAL: its acks must wait for the flushed position.
 */
#include "../../assert.h"
#include "apply.h"
#include "batch.h"
#include "writer.h"

#include <stdlib.h>
#include <string.h>

struct fake {
    int commits, probes, data_errors;
    int down_after;            /* fail as unreachable after this many runs (-1 = never) */
    int runs;
    char committed[64][32];    /* src ids in commit order */
    int n_committed;
    int per_src[64];
    int meta_bad;              /* src-<k> whose run/webhook/cursor updates are refused (-1 = none) */
    int notes;                 /* message-level rejects committed (no zoho id) */
    int rej_bad;               /* src-<k> whose rejects tds.rejected refuses (0 = none) */
    /* lazy: commits do not wait for their flush; each moves the WAL by 100 */
    bool lazy, durable;
    uint64_t lsn, flushed, session;
    int flushed_rc, flushed_reads;
};

static int fake_flushed(void *db, uint64_t *flushed, uint64_t *session)
{
    struct fake *f = db;

    f->flushed_reads++;
    *flushed = f->flushed;
    *session = f->session;
    return f->flushed_rc;
}

static int fake_run(void *db, struct tds_bmsg *const *msgs, size_t n, bool probe,
                    struct tds_apply_result *res)
{
    struct fake *f = db;

    memset(res, 0, sizeof(*res));
    f->runs++;
    if (f->down_after >= 0 && f->runs > f->down_after) {
        snprintf(res->error, sizeof(res->error), "no connection");
        return TDS_APPLY_E_CONN;
    }
    for (size_t i = 0; i < n; i++) {
        const struct tds_msg_rows *rw = &msgs[i]->msg.u.rows;

        for (size_t s = 0; s < rw->n_sets; s++)
            for (size_t r = 0; r < rw->sets[s].n_rows; r++) {
                const struct tds_bytes *v = &rw->sets[s].vals[r * rw->sets[s].n_cols];

                if (!tds_bmsg_row_live(msgs[i], s, r))
                    continue;
                for (size_t c = 0; c < rw->sets[s].n_cols; c++)
                    if (v[c].p && strcmp(v[c].p, "BAD") == 0) {
                        f->data_errors++;
                        snprintf(res->error, sizeof(res->error),
                                 "invalid input syntax for type numeric: \"BAD\"");
                        return TDS_APPLY_E_DATA;
                    }
            }
    }
    if (probe) {
        f->probes++;
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if (f->rej_bad > 0 && msgs[i]->n_rej > 0 &&
            atoi(msgs[i]->msg.u.rows.src + 4) == f->rej_bad) {
            f->data_errors++;
            snprintf(res->error, sizeof(res->error), "could not record rejects: new row for "
                     "relation \"rejected\" violates check constraint");
            return TDS_APPLY_E_DATA;
        }
    /* probes run no metadata; a commit does, unless the message is meta_off */
    for (size_t i = 0; i < n; i++)
        if (f->meta_bad >= 0 && !msgs[i]->meta_off &&
            atoi(msgs[i]->msg.u.rows.src + 4) == f->meta_bad) {
            f->data_errors++;
            snprintf(res->error, sizeof(res->error), "could not update sync runs: new row for "
                     "relation \"sync_runs\" violates check constraint");
            return TDS_APPLY_E_DATA;
        }
    f->commits++;
    if (f->lazy) {
        f->lsn += 100;
        res->lsn_known = true;
        res->durable = f->durable;
        res->commit_lsn = f->lsn;
        res->flushed_lsn = f->flushed;
        res->session = f->session;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < msgs[i]->n_rej; j++)
            f->notes += !msgs[i]->rej[j].zoho_id;
    for (size_t i = 0; i < n; i++) {
        snprintf(f->committed[f->n_committed++], 32, "%s", msgs[i]->msg.u.rows.src);
        f->per_src[atoi(msgs[i]->msg.u.rows.src + 4)]++;
    }
    return 0;
}

struct acks {
    int calls;
    size_t ids;
    int64_t rejected;
    char origin[32];
};

static void on_ack(void *ud, const char *origin, char *const *ids, size_t n, int64_t written,
                   int64_t rejected)
{
    struct acks *a = ud;

    (void)ids;
    (void)written;
    a->calls++;
    a->ids += n;
    a->rejected += rejected;
    snprintf(a->origin, sizeof(a->origin), "%s", origin);
}

static const char *const cols[] = {"org_id", "item_id", "modified_time", "raw", "content_hash",
                                   "is_detail", "rate"};

/* A rows message "src-<k>" with `n` items; item `bad` (if >= 0) has rate BAD. */
static void take(struct tds_writer *w, int k, int n, int bad)
{
    struct tds_msg m;
    struct tds_msg_rowset *s;
    char src[32], id[32];
    char *buf;
    size_t len;

    memset(&m, 0, sizeof(m));
    m.type = TDS_MSG_ROWS;
    m.v = 1;
    m.id = strdup("rows");
    snprintf(src, sizeof(src), "src-%d", k);
    m.u.rows.org = strdup("1");
    m.u.rows.origin = strdup("fetcher.x");
    m.u.rows.src = strdup(src);
    s = tds_msg_rows_add_set(&m.u.rows, "items", TDS_ROWS_DETAIL, cols, 7);
    for (int i = 0; i < n; i++) {
        struct tds_bytes v[7];

        snprintf(id, sizeof(id), "%d", k * 1000 + i);
        v[0] = (struct tds_bytes){"1", 1};
        v[1] = (struct tds_bytes){id, strlen(id)};
        v[2] = (struct tds_bytes){"2026-01-05T10:00:00Z", 20};
        v[3] = (struct tds_bytes){"{}", 2};
        v[4] = (struct tds_bytes){"h", 1};
        v[5] = (struct tds_bytes){"true", 4};
        v[6] = i == bad ? (struct tds_bytes){"BAD", 3} : (struct tds_bytes){"1.5", 3};
        T_INT(tds_msg_rowset_add_row(s, v), ==, 0);
    }
    T_INT(tds_msg_encode(&m, &buf, &len), ==, 0);
    tds_msg_clear(&m);
    T_INT(tds_writer_take(w, buf, len), ==, 0);
    free(buf);
}

static void test_clean_batch_is_one_transaction(void)
{
    struct fake f = {.down_after = -1, .meta_bad = -1};
    struct acks a = {0};
    struct tds_writer *w;

    T_INT(tds_writer_new(&w, NULL, NULL, NULL, 1000, on_ack, &a), ==, 0);
    tds_writer_set_runner(w, fake_run, &f);
    for (int k = 0; k < 8; k++)
        take(w, k, 10, -1);
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(f.commits, ==, 1);
    T_INT(f.n_committed, ==, 8);
    T_INT(a.calls, ==, 1); /* one ack per origin */
    T_INT(a.ids, ==, 8);
    T_STR(a.origin, "fetcher.x");
    T_INT(tds_writer_pending(w), ==, 0);
    tds_writer_free(w);
}

static void test_bad_record_isolated(void)
{
    struct fake f = {.down_after = -1, .meta_bad = -1};
    struct acks a = {0};
    struct tds_writer *w;

    T_INT(tds_writer_new(&w, NULL, NULL, NULL, 1000, on_ack, &a), ==, 0);
    tds_writer_set_runner(w, fake_run, &f);
    for (int k = 0; k < 8; k++)
        take(w, k, 16, k == 5 ? 11 : -1);
    T_INT(tds_writer_flush(w), ==, 0);
    /* Every message committed exactly once, the bad one too (without its bad record). */
    T_INT(f.n_committed, ==, 8);
    for (int k = 0; k < 8; k++)
        T_INT(f.per_src[k], ==, 1);
    T_INT(a.ids, ==, 8);
    T_INT(a.rejected, ==, 1);
    /* Splitting by message then bisecting records stays logarithmic. */
    T_TRUE(f.runs <= 20);
    T_INT(tds_writer_pending(w), ==, 0);
    tds_writer_free(w);
}

static void test_two_bad_records_in_one_message(void)
{
    struct fake f = {.down_after = -1, .meta_bad = -1};
    struct acks a = {0};
    struct tds_writer *w;

    T_INT(tds_writer_new(&w, NULL, NULL, NULL, 1000, on_ack, &a), ==, 0);
    tds_writer_set_runner(w, fake_run, &f);
    take(w, 1, 40, 3);
    take(w, 2, 40, 39);
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(f.n_committed, ==, 2);
    T_INT(a.rejected, ==, 2);
    tds_writer_free(w);
}

/* Every record passes alone but the message's metadata is refused: the
 * records are written without it, and that fact is the one reject. */
static void test_refused_metadata_is_left_out(void)
{
    struct fake f = {.down_after = -1, .meta_bad = 2};
    struct acks a = {0};
    struct tds_writer *w;

    T_INT(tds_writer_new(&w, NULL, NULL, NULL, 1000, on_ack, &a), ==, 0);
    tds_writer_set_runner(w, fake_run, &f);
    for (int k = 0; k < 4; k++)
        take(w, k, 6, -1);
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(f.n_committed, ==, 4);
    for (int k = 0; k < 4; k++)
        T_INT(f.per_src[k], ==, 1);
    T_INT(f.notes, ==, 1);
    T_INT(a.ids, ==, 4);
    T_INT(a.rejected, ==, 0); /* the note is no rejected record */
    T_INT(tds_writer_pending(w), ==, 0);
    tds_writer_free(w);
}

/* Not even tds.rejected takes a message's rejects: it is given up on and
 * acked, its records counted as rejected; no transaction is counted for it,
 * since none committed. */
static void test_a_message_given_up_on_is_no_commit(void)
{
    struct fake f = {.down_after = -1, .meta_bad = -1, .rej_bad = 1};
    struct acks a = {0};
    struct tds_writer *w;
    struct tds_writer_stats st;

    T_INT(tds_writer_new(&w, NULL, NULL, NULL, 1000, on_ack, &a), ==, 0);
    tds_writer_set_runner(w, fake_run, &f);
    take(w, 0, 4, -1);
    take(w, 1, 4, 2);
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(f.commits, ==, 1);          /* src-0 */
    T_INT(f.per_src[1], ==, 0);
    tds_writer_stats(w, &st);
    T_INT(st.batches, ==, 1);
    T_INT(st.rejects, ==, 4);         /* the bad record and the three others with it */
    T_INT(a.ids, ==, 2);              /* both acked */
    T_INT(a.rejected, ==, 4);
    T_INT(tds_writer_pending(w), ==, 0);
    tds_writer_free(w);
}

static void test_unreachable_keeps_the_batch(void)
{
    struct fake f = {.down_after = 0, .meta_bad = -1};
    struct acks a = {0};
    struct tds_writer *w;

    T_INT(tds_writer_new(&w, NULL, NULL, NULL, 1000, on_ack, &a), ==, 0);
    tds_writer_set_runner(w, fake_run, &f);
    for (int k = 0; k < 4; k++)
        take(w, k, 5, -1);
    T_INT(tds_writer_flush(w), ==, TDS_WRITER_E_DB);
    T_INT(tds_writer_pending(w), ==, 4);
    T_INT(a.calls, ==, 0);
    T_STR(tds_writer_last_error(w), "no connection");
    f.down_after = -1;
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(a.ids, ==, 4);
    T_INT(tds_writer_pending(w), ==, 0);
    tds_writer_free(w);
}

static void test_lost_connection_during_split(void)
{
    struct fake f = {.down_after = 2, .meta_bad = -1};
    struct acks a = {0};
    struct tds_writer *w;

    T_INT(tds_writer_new(&w, NULL, NULL, NULL, 1000, on_ack, &a), ==, 0);
    tds_writer_set_runner(w, fake_run, &f);
    for (int k = 0; k < 8; k++)
        take(w, k, 4, k == 7 ? 0 : -1);
    /* run 1: all 8 fail (data); run 2: first half commits; run 3: down. */
    T_INT(tds_writer_flush(w), ==, TDS_WRITER_E_DB);
    T_INT(f.n_committed, ==, 4);
    T_INT(a.ids, ==, 4);
    T_INT(tds_writer_pending(w), ==, 4); /* only what did not commit is kept */
    f.down_after = -1;
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(f.n_committed, ==, 8);
    for (int k = 0; k < 8; k++)
        T_INT(f.per_src[k], ==, 1);
    tds_writer_free(w);
}

static void test_batch_fills_at_max_rows(void)
{
    struct fake f = {.down_after = -1, .meta_bad = -1};
    struct acks a = {0};
    struct tds_writer *w;

    T_INT(tds_writer_new(&w, NULL, NULL, NULL, 25, on_ack, &a), ==, 0);
    tds_writer_set_runner(w, fake_run, &f);
    take(w, 0, 10, -1);
    take(w, 1, 10, -1);
    T_TRUE(!tds_writer_full(w));
    take(w, 2, 10, -1);
    T_TRUE(tds_writer_full(w));
    T_INT(tds_writer_flush(w), ==, 0);
    T_TRUE(!tds_writer_full(w));
    tds_writer_free(w);
}

/* A byte bound ends a batch of few but large messages; a batch is never
 * empty, so one frame over the bound still goes through alone. */
static void test_batch_fills_at_max_bytes(void)
{
    struct fake f = {.down_after = -1, .meta_bad = -1};
    struct acks a = {0};
    struct tds_writer *w;

    T_INT(tds_writer_new(&w, NULL, NULL, NULL, 1000, on_ack, &a), ==, 0);
    tds_writer_set_runner(w, fake_run, &f);
    take(w, 0, 10, -1);
    size_t one = tds_writer_pending_bytes(w);
    T_TRUE(one > 0);
    tds_writer_set_max_bytes(w, 3 * one - 1); /* later frames are a little larger */
    T_TRUE(!tds_writer_full(w));
    take(w, 1, 10, -1);
    T_TRUE(!tds_writer_full(w));
    take(w, 2, 10, -1);
    T_TRUE(tds_writer_full(w)); /* 30 rows of 1000, but three frames */
    T_INT(tds_writer_flush(w), ==, 0);
    T_TRUE(!tds_writer_full(w));
    T_INT(tds_writer_pending_bytes(w), ==, 0);
    tds_writer_set_max_bytes(w, 1);
    take(w, 3, 10, -1);
    T_TRUE(tds_writer_full(w));
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(tds_writer_pending(w), ==, 0);
    tds_writer_free(w);
}

/* A writer on the fake whose commits do not wait for their flush. */
static struct tds_writer *lazy_writer(struct fake *f, struct acks *a)
{
    struct tds_writer *w = NULL;

    *f = (struct fake){.down_after = -1, .meta_bad = -1, .lazy = true, .session = 1};
    T_INT(tds_writer_new(&w, NULL, NULL, NULL, 1000, on_ack, a), ==, 0);
    tds_writer_set_runner(w, fake_run, f);
    tds_writer_set_flushed(w, fake_flushed);
    return w;
}

static void test_acks_wait_for_the_wal_flush(void)
{
    struct fake f;
    struct acks a = {0};
    struct tds_writer *w = lazy_writer(&f, &a);

    /* committed at 100, flushed 0: held */
    take(w, 1, 2, -1);
    take(w, 2, 2, -1);
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(f.commits, ==, 1);
    T_INT(a.calls, ==, 0);
    T_INT(tds_writer_held(w), ==, 1);
    /* flushed short of it: still held */
    f.flushed = 99;
    T_INT(tds_writer_poll_flushed(w), ==, 0);
    T_INT(a.calls, ==, 0);
    T_INT(tds_writer_held(w), ==, 1);
    /* flushed past it: both messages acked, once */
    f.flushed = 100;
    T_INT(tds_writer_poll_flushed(w), ==, 0);
    T_INT(a.calls, ==, 1);
    T_INT(a.ids, ==, 2);
    T_INT(tds_writer_held(w), ==, 0);
    /* nothing held: nothing read */
    f.flushed_reads = 0;
    T_INT(tds_writer_poll_flushed(w), ==, 0);
    T_INT(f.flushed_reads, ==, 0);
    /* flushed past it by the time it was read after COMMIT: acked at once */
    f.flushed = 1000;
    take(w, 3, 1, -1);
    T_INT(tds_writer_flush(w), ==, 0); /* at 200 */
    T_INT(a.calls, ==, 2);
    T_INT(tds_writer_held(w), ==, 0);
    /* a commit that waited for its flush: acked at once */
    f.durable = true;
    f.flushed = 0;
    take(w, 4, 1, -1);
    T_INT(tds_writer_flush(w), ==, 0); /* at 300 */
    T_INT(a.calls, ==, 3);
    f.durable = false;
    /* held at 400; the next commit (500) read 450 flushed: the first goes */
    take(w, 5, 1, -1);
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(a.calls, ==, 3);
    f.flushed = 450;
    take(w, 6, 1, -1);
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(a.calls, ==, 4);
    T_INT(tds_writer_held(w), ==, 1);
    /* a new session knows nothing of the old one's WAL: dropped, never acked */
    f.session = 2;
    f.flushed = 100000;
    T_INT(tds_writer_poll_flushed(w), ==, 0);
    T_INT(a.calls, ==, 4);
    T_INT(tds_writer_held(w), ==, 0);
    /* a read that finds the connection gone drops them too */
    f.flushed = 0;
    take(w, 7, 1, -1);
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(tds_writer_held(w), ==, 1);
    f.flushed_rc = TDS_APPLY_E_CONN;
    T_INT(tds_writer_poll_flushed(w), ==, TDS_WRITER_E_DB);
    T_INT(tds_writer_held(w), ==, 0);
    /* a read that fails otherwise keeps them */
    f.flushed_rc = 0;
    take(w, 8, 1, -1);
    T_INT(tds_writer_flush(w), ==, 0);
    f.flushed_rc = TDS_APPLY_E_DB;
    T_INT(tds_writer_poll_flushed(w), ==, TDS_WRITER_E_DB);
    T_INT(tds_writer_held(w), ==, 1);
    /* at exit: forgotten (upstream resends) */
    T_INT(tds_writer_drop_held(w), ==, 1);
    T_INT(a.calls, ==, 4);
    /* one held at exit is freed with the writer */
    f.flushed_rc = 0;
    take(w, 9, 1, -1);
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(tds_writer_held(w), ==, 1);
    tds_writer_free(w);
}

/* Acks released by the flushes of the side connection (flusher.c): only
 * those stamped with that connection, from the first held, up to the
 * position it read. */
static void test_side_flushes_release_acks_in_order(void)
{
    struct fake f;
    struct acks a = {0};
    struct tds_writer *w = lazy_writer(&f, &a);

    /* held at 100 with no side connection open: only the session's read */
    take(w, 1, 1, -1);
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(tds_writer_held(w), ==, 1);
    T_INT(tds_writer_release_side(w, 0, 1000), ==, 0);
    T_INT(tds_writer_release_side(w, 7, 1000), ==, 0);
    T_INT(a.calls, ==, 0);
    f.flushed = 100;
    T_INT(tds_writer_poll_flushed(w), ==, 0);
    T_INT(a.calls, ==, 1);
    /* connection 7 open: held at 200 and 300 */
    tds_writer_set_side(w, 7);
    take(w, 2, 1, -1);
    T_INT(tds_writer_flush(w), ==, 0);
    take(w, 3, 1, -1);
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(tds_writer_held(w), ==, 2);
    /* another connection's flush releases none of them */
    T_INT(tds_writer_release_side(w, 8, 1000), ==, 0);
    /* 7's flush read 250: the first goes */
    T_INT(tds_writer_release_side(w, 7, 250), ==, 1);
    T_INT(a.calls, ==, 2);
    T_INT(tds_writer_held(w), ==, 1);
    /* connection 8 from now: held at 400 behind the one of 7, which keeps
     * it (acks go in the order held) until 7's flush or the session's read */
    tds_writer_set_side(w, 8);
    take(w, 4, 1, -1);
    T_INT(tds_writer_flush(w), ==, 0);
    T_INT(tds_writer_release_side(w, 8, 1000), ==, 0);
    T_INT(a.calls, ==, 2);
    T_INT(tds_writer_release_side(w, 7, 1000), ==, 1);
    T_INT(tds_writer_release_side(w, 8, 399), ==, 0);
    T_INT(tds_writer_release_side(w, 8, 400), ==, 1);
    T_INT(a.calls, ==, 4);
    T_INT(tds_writer_held(w), ==, 0);
    tds_writer_free(w);
}

int main(void)
{
    T_RUN(test_clean_batch_is_one_transaction);
    T_RUN(test_bad_record_isolated);
    T_RUN(test_two_bad_records_in_one_message);
    T_RUN(test_refused_metadata_is_left_out);
    T_RUN(test_a_message_given_up_on_is_no_commit);
    T_RUN(test_unreachable_keeps_the_batch);
    T_RUN(test_lost_connection_during_split);
    T_RUN(test_batch_fills_at_max_rows);
    T_RUN(test_batch_fills_at_max_bytes);
    T_RUN(test_acks_wait_for_the_wal_flush);
    T_RUN(test_side_flushes_release_acks_in_order);
    return 0;
}
