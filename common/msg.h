/* msg — the msgpack schema every stage speaks (DESIGN.md §4).
 *
 * One ZeroMQ frame per message: a msgpack map with "v" (schema version),
 * "t" (type), "id" (unique message id) and the type's keys. The one exception
 * is `ack`, sent on a PUB socket as two frames: the origin as topic, then the
 * map. Unknown keys are ignored. Anything else that does not fit — truncated
 * data, wrong types, sizes over the TDS_MSG_MAX_* limits, a newer "v" — is a
 * positive error code, never a crash or an abort.
 *
 * Decoded messages own copies of all their strings (NUL-terminated, with
 * lengths where the bytes may contain NUL); tds_msg_clear() frees them.
 *
 * `rows` carries values as text exactly as PostgreSQL's input functions accept
 * them (numeric "12.50", timestamptz "2026-01-05T10:00:00+0300", boolean
 * "true", jsonb as JSON text) or nil for SQL NULL, so the writer can COPY them
 * without reinterpreting anything.
 */
#ifndef TDS_MSG_H
#define TDS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TDS_MSG_VERSION 1

#define TDS_MSG_MAX_FRAME (64u * 1024 * 1024) /* bytes in one encoded message */
#define TDS_MSG_MAX_ARRAY 100000u             /* elements in any array */
#define TDS_MSG_MAX_MAP 256u                  /* keys in any map */
#define TDS_MSG_MAX_STR (16u * 1024 * 1024)   /* bytes in one string or bin */
/* Array elements plus map keys and values in one message, nested ones
 * included. Decoding costs ~42 bytes of msgpack-c objects per element however
 * short its encoding (a nil is one byte), so this bounds the decode of any
 * frame to ~42 MiB, less than TDS_MSG_MAX_FRAME lets its bytes take. Real
 * messages need far fewer: the rows of a detail page of invoices are ~0.04
 * values per byte of record JSON, ~0.3 million for the fetcher's default
 * 8 MiB page and ~0.65 million for its 16 MiB maximum. */
#define TDS_MSG_MAX_ELEMENTS 1000000u

enum {
    TDS_MSG_E_MALFORMED = 1, /* not msgpack, truncated, wrong types, missing keys */
    TDS_MSG_E_VERSION = 2,   /* "v" newer than TDS_MSG_VERSION */
    TDS_MSG_E_TOO_LARGE = 3, /* over one of the TDS_MSG_MAX_* limits */
    TDS_MSG_E_TYPE = 4,      /* "t" is not one this build knows */
};

enum tds_msg_type {
    TDS_MSG_EVENT = 1,
    TDS_MSG_FETCH,
    TDS_MSG_PAGE,
    TDS_MSG_ROWS,
    TDS_MSG_ACK,
};

/* A byte string; p is NUL-terminated after n bytes when owned by a message. */
struct tds_bytes {
    char *p;
    size_t n;
};

/* ingress → processor: a verified webhook with its full JSON body. */
struct tds_msg_event {
    char *org;
    char *entity;       /* registry name: "items", "contacts", ... */
    char *op;           /* "upsert" | "delete" */
    char *origin;       /* ack topic of the sending instance, e.g. "ingress.pod-0" */
    char *event_id;     /* dedupe key (Zoho's or a content hash) */
    char *zoho_id;      /* record id when known, else NULL */
    int64_t received_ms;
    struct tds_bytes body; /* raw JSON as received */
    char *tz;           /* the organization's UTC offset ("+0300"), or NULL (UTC): Zoho's
                         * date-only times are midnight there */
};

/* ingress/CLI → fetcher: fetch one record by id. */
struct tds_msg_fetch {
    char *org;
    char *entity;
    char *zoho_id;
    char *origin;
};

/* fetcher → processor: one page of records (list or detail form). A page with
 * final=true and no records closes a run: it carries the cursor to commit. */
struct tds_msg_page {
    char *org;
    char *entity;
    char *run;          /* sync run id (text) */
    char *mode;         /* "full" | "incremental" | "fetch" | "reconcile" | "stock" */
    char *origin;
    int64_t page;       /* 1-based page number within the run */
    int64_t fetched_ms; /* wall ms when its records were asked for (earliest request) */
    bool detail;        /* records are detail records (complete) */
    bool final;         /* last message of the run */
    char *cursor;       /* with final: new incremental cursor (Zoho time text), or NULL */
    char **deleted_ids; /* ids known deleted (1002 on fetch-by-id, reconciliation) */
    size_t n_deleted;
    struct tds_bytes *records; /* each one JSON object */
    size_t n_records;
    /* (origin, id) pairs, flattened: messages this page answers (fetch-by-id
     * from an ingress), acked to their origins with the page's own ack. */
    char **acks;
    size_t n_acks;
    char *tz;           /* the organization's UTC offset ("+0300"), or NULL: as an event's */
};

/* How the writer applies a set of rows. */
enum tds_rowset_kind {
    TDS_ROWS_DETAIL = 1, /* full record: all columns, children follow */
    TDS_ROWS_LIST = 2,   /* abbreviated record: only the listed columns, raw merged */
    TDS_ROWS_DELETE = 3, /* columns: org_id, <id>, [modified_time]: sets deleted_at */
    TDS_ROWS_CHILD = 4,  /* child rows, replaced for parents written in the same batch */
};

/* Rows for one table with one column list. vals has n_rows * n_cols entries,
 * row-major; a value with p == NULL is SQL NULL. */
struct tds_msg_rowset {
    char *table;        /* "items", "item_stock", ... (schema zoho) */
    enum tds_rowset_kind kind;
    char **cols;
    size_t n_cols;
    struct tds_bytes *vals;
    size_t n_rows;
    size_t cap_rows;    /* builder bookkeeping */
    bool cols_block;    /* builder: cols and their strings are one allocation */
};

/* A record the processor refused, kept in tds.rejected. */
struct tds_msg_reject {
    char *entity;
    char *zoho_id;      /* NULL when the id itself was the problem */
    char *reason;       /* precise: field and value */
    struct tds_bytes raw;
};

/* processor → writer. `src` is the id of the event/page it came from: the
 * writer acks src to origin after COMMIT. */
struct tds_msg_rows {
    char *org;
    char *entity;
    char *origin;
    char *src;
    char *run;          /* NULL for webhook events */
    char *mode;
    int64_t page;
    int64_t received_ms; /* when the source entered the pipeline (latency) */
    int64_t records_in;  /* records in the source message */
    bool final;
    char *cursor;
    struct tds_msg_rowset *sets;
    size_t n_sets;
    struct tds_msg_reject *rejects;
    size_t n_rejects;
    char **acks;        /* the page's acks, passed on: (origin, id) pairs, flattened */
    size_t n_acks;
    size_t cap_sets, cap_rejects; /* builder bookkeeping */
};

/* writer → origin (PUB, topic = origin). */
struct tds_msg_ack {
    char *origin;
    char **ids;         /* source message ids now committed */
    size_t n_ids;
    int64_t rows_written;
    int64_t rows_rejected;
};

struct tds_msg {
    enum tds_msg_type type;
    int64_t v;
    char *id;
    union {
        struct tds_msg_event event;
        struct tds_msg_fetch fetch;
        struct tds_msg_page page;
        struct tds_msg_rows rows;
        struct tds_msg_ack ack;
    } u;
};

/* Encode m into a new buffer (*out, *len; caller frees *out). Returns 0,
 * TDS_MSG_E_TOO_LARGE, TDS_MSG_E_MALFORMED (missing required field), -ENOMEM. */
int tds_msg_encode(const struct tds_msg *m, char **out, size_t *len);
/* Decode one frame into *m (zeroed first). On error *m is left empty. */
int tds_msg_decode(const void *buf, size_t len, struct tds_msg *m);
/* Free everything m owns and zero it. Safe on a zeroed or half-decoded message. */
void tds_msg_clear(struct tds_msg *m);
const char *tds_msg_type_name(enum tds_msg_type t);
const char *tds_msg_strerror(int code);

/* Builders for the processor: append to a rows message without quadratic
 * growth. tds_msg_rows_add_set returns the new set (cols copied) or NULL on
 * ENOMEM; tds_msg_rowset_add_row copies n_cols values (p NULL = SQL NULL). */
struct tds_msg_rowset *tds_msg_rows_add_set(struct tds_msg_rows *r, const char *table,
                                            enum tds_rowset_kind kind,
                                            const char *const *cols, size_t n_cols);
int tds_msg_rowset_add_row(struct tds_msg_rowset *s, const struct tds_bytes *vals);
int tds_msg_rows_add_reject(struct tds_msg_rows *r, const char *entity, const char *zoho_id,
                            const char *reason, const char *raw, size_t raw_len);

#endif
