/* batch — the rows messages the writer holds until they are committed.
 *
 * A tds_bmsg is one decoded `rows` message (or an undecodable frame kept as a
 * dead letter) plus what the writer decided about its rows: rows checked
 * against the registry on arrival, records it rejected (with the reason, for
 * tds.rejected) and whether it is committed. Rows are grouped into records —
 * a top-level row with the child rows of the same parent id — so a bad row
 * takes only its own record with it. Pure: no PostgreSQL, no sockets.
 */
#ifndef TDS_BATCH_H
#define TDS_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "entities.h"
#include "msg.h"

/* A record the writer refused; all strings owned. */
struct tds_wreject {
    char *entity;    /* table family ("items" for item_stock rows too) */
    char *zoho_id;   /* may be NULL */
    char *reason;
    char *raw;       /* the record's raw JSON, or the rows as JSON; may be NULL */
    bool note;       /* about the message, not a record (tds_bmsg_note): no record counted */
};

struct tds_bmsg {
    struct tds_msg msg;          /* type TDS_MSG_ROWS, or 0 for a dead letter */
    const struct tds_table **tables; /* per set: registry table, NULL = set not written */
    uint8_t **skip;              /* per set: NULL or one flag per row (1 = not written) */
    uint32_t **rec_of;           /* per set: record index of each row */
    size_t n_recs;
    uint8_t *probe_in;           /* when probing: per record, 1 = take part */
    struct tds_wreject *rej;
    size_t n_rej, cap_rej;
    size_t n_rows;               /* rows in all sets (batch sizing) */
    size_t frame_len;            /* bytes of the frame it came in (batch sizing) */
    bool meta_off;               /* its run/webhook/cursor updates failed: write rows and rejects only */
    bool duplicate;              /* its event or page was applied already: acked, nothing written */
    bool committed;
};

/* Take one frame: decode it and check every set and value. A frame that does
 * not decode, or is not `rows`, becomes a dead letter with one reject (raw =
 * hex of its first bytes). Returns 0 or -ENOMEM. */
int tds_bmsg_new(struct tds_bmsg **out, const void *frame, size_t len);
struct tds_bmsg *tds_bmsg_free(struct tds_bmsg *m);

/* Whether row r of set s is written in the current attempt. */
static inline bool tds_bmsg_row_live(const struct tds_bmsg *m, size_t s, size_t r)
{
    if (!m->tables[s] || (m->skip[s] && m->skip[s][r]))
        return false;
    return !m->probe_in || m->probe_in[m->rec_of[s][r]];
}

/* Reject record `rec`: its rows are not written and a tds_wreject with reason
 * is added. 0 or -ENOMEM. */
int tds_bmsg_reject_record(struct tds_bmsg *m, uint32_t rec, const char *reason);
/* Reject every record still live (the whole message failed for a data reason
 * that could not be pinned on a record); with none live, a note says so.
 * 0 or -ENOMEM. */
int tds_bmsg_reject_all(struct tds_bmsg *m, const char *reason);
/* Record in tds.rejected something about the message as a whole (no zoho id,
 * no row skipped), with its run, mode, page and cursor as the raw JSON: that
 * its run/webhook/cursor updates were left out, say. 0 or -ENOMEM. */
int tds_bmsg_note(struct tds_bmsg *m, const char *reason);
/* Rejects that stand for records (dead letters included), notes left out:
 * what the ack's rows_rejected and tds_writer_rejects_total count. */
size_t tds_bmsg_records_rejected(const struct tds_bmsg *m);
/* Forget the rejects after the first `keep`. Only for notes added after
 * them (tds_bmsg_note), which skip no rows. */
void tds_bmsg_drop_rejects(struct tds_bmsg *m, size_t keep);
/* Records that are still live (not rejected), in order, into a new array. */
int tds_bmsg_live_records(const struct tds_bmsg *m, uint32_t **out, size_t *n);
/* Top-level rows (DETAIL/LIST/DELETE) that are live: "records written" of a run. */
int64_t tds_bmsg_records_written(const struct tds_bmsg *m);
/* Table family name of a set ("items" for item_stock): entity of rejects. */
const char *tds_bmsg_family(const struct tds_table *t);

#endif
