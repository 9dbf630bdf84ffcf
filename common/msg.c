/* msg — encoding and decoding of the msgpack schema (see msg.h, DESIGN.md §4).
 *
 * Owns the wire format of every message type and the memory of decoded and
 * built messages. It never does I/O, never logs, and never trusts a frame: a
 * frame is first scanned byte by byte (sizes against TDS_MSG_MAX_*, every
 * declared length against the bytes that remain, nesting depth, the elements
 * of all containers together) before msgpack-c builds an object tree from it,
 * because msgpack-c allocates a declared array length up front and a 5-byte
 * frame could otherwise ask for 100 GB, and makes an object of every element,
 * so 8 MiB of nils would otherwise take 200 MiB. The encoder scans
 * what it made the same way: nothing it sends is refused by the reader. The tree is then walked against one field table per type; the same
 * tables drive the encoder, so the two directions cannot drift apart.
 *
 * Memory: every char * and every tds_bytes outside a rowset is its own
 * allocation. Rowset values are the exception, for speed (a rows message has
 * thousands of them): the non-NULL values of one row live in one allocation,
 * in column order, so the first non-NULL value of a row points at the block
 * that owns the whole row. Decoder and builder both lay rows out this way and
 * tds_msg_clear() relies on it; code that fills vals by hand must not pass
 * the message to tds_msg_clear().
 */
#include "msg.h"

#include <errno.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The schema nests five deep (rows → sets → set → rows → row); msgpack-c
 * refuses more than 32 with an error indistinguishable from ENOMEM. */
#define MAX_DEPTH 16

/* ---- field tables ---------------------------------------------------- */

enum ftype {
    F_STR,     /* char *: str (bin accepted), no NUL inside; nil = NULL */
    F_BYTES,   /* struct tds_bytes: bin (str accepted); nil = {NULL, 0} */
    F_I64,     /* int64_t */
    F_BOOL,    /* bool */
    F_STRS,    /* char ** + size_t count: array of str */
    F_COLS,    /* F_STRS of a rowset's cols: decoded into one block (cols_block) */
    F_RECORDS, /* struct tds_bytes * + size_t count: array of bin */
    F_KIND,    /* enum tds_rowset_kind as an integer */
    F_ROWS,    /* rowset values: array of arrays of str|nil, n_cols wide */
    F_SETS,    /* struct tds_msg_rowset * + n_sets */
    F_REJECTS, /* struct tds_msg_reject * + n_rejects */
};

struct field {
    const char *name;
    unsigned char len;
    unsigned char type;
    bool required;
    size_t off;
    size_t count_off; /* arrays only */
};

#define FLD(st, name, type, req) \
    { #name, sizeof(#name) - 1, type, req, offsetof(st, name), 0 }
#define ARR(st, name, count, type, req) \
    { #name, sizeof(#name) - 1, type, req, offsetof(st, name), offsetof(st, count) }
#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

static const struct field event_fields[] = {
    FLD(struct tds_msg_event, org, F_STR, true),
    FLD(struct tds_msg_event, entity, F_STR, true),
    FLD(struct tds_msg_event, op, F_STR, false),
    FLD(struct tds_msg_event, origin, F_STR, true),
    FLD(struct tds_msg_event, event_id, F_STR, false),
    FLD(struct tds_msg_event, zoho_id, F_STR, false),
    FLD(struct tds_msg_event, received_ms, F_I64, false),
    FLD(struct tds_msg_event, body, F_BYTES, false),
    FLD(struct tds_msg_event, tz, F_STR, false),
};

static const struct field fetch_fields[] = {
    FLD(struct tds_msg_fetch, org, F_STR, true),
    FLD(struct tds_msg_fetch, entity, F_STR, true),
    FLD(struct tds_msg_fetch, zoho_id, F_STR, false),
    FLD(struct tds_msg_fetch, origin, F_STR, true),
};

static const struct field page_fields[] = {
    FLD(struct tds_msg_page, org, F_STR, true),
    FLD(struct tds_msg_page, entity, F_STR, true),
    FLD(struct tds_msg_page, run, F_STR, false),
    FLD(struct tds_msg_page, mode, F_STR, false),
    FLD(struct tds_msg_page, origin, F_STR, true),
    FLD(struct tds_msg_page, page, F_I64, false),
    FLD(struct tds_msg_page, fetched_ms, F_I64, false),
    FLD(struct tds_msg_page, detail, F_BOOL, false),
    FLD(struct tds_msg_page, final, F_BOOL, false),
    FLD(struct tds_msg_page, cursor, F_STR, false),
    ARR(struct tds_msg_page, deleted_ids, n_deleted, F_STRS, false),
    ARR(struct tds_msg_page, records, n_records, F_RECORDS, false),
    ARR(struct tds_msg_page, acks, n_acks, F_STRS, false),
    FLD(struct tds_msg_page, tz, F_STR, false),
};

/* cols before rows: decoding rows needs n_cols. */
static const struct field rowset_fields[] = {
    FLD(struct tds_msg_rowset, table, F_STR, true),
    FLD(struct tds_msg_rowset, kind, F_KIND, true),
    ARR(struct tds_msg_rowset, cols, n_cols, F_COLS, true),
    { "rows", 4, F_ROWS, true, offsetof(struct tds_msg_rowset, vals),
      offsetof(struct tds_msg_rowset, n_rows) },
};

static const struct field reject_fields[] = {
    FLD(struct tds_msg_reject, entity, F_STR, false),
    FLD(struct tds_msg_reject, zoho_id, F_STR, false),
    FLD(struct tds_msg_reject, reason, F_STR, true),
    FLD(struct tds_msg_reject, raw, F_BYTES, false),
};

static const struct field rows_fields[] = {
    FLD(struct tds_msg_rows, org, F_STR, true),
    FLD(struct tds_msg_rows, entity, F_STR, false),
    FLD(struct tds_msg_rows, origin, F_STR, true),
    FLD(struct tds_msg_rows, src, F_STR, true),
    FLD(struct tds_msg_rows, run, F_STR, false),
    FLD(struct tds_msg_rows, mode, F_STR, false),
    FLD(struct tds_msg_rows, page, F_I64, false),
    FLD(struct tds_msg_rows, received_ms, F_I64, false),
    FLD(struct tds_msg_rows, records_in, F_I64, false),
    FLD(struct tds_msg_rows, final, F_BOOL, false),
    FLD(struct tds_msg_rows, cursor, F_STR, false),
    ARR(struct tds_msg_rows, sets, n_sets, F_SETS, false),
    ARR(struct tds_msg_rows, rejects, n_rejects, F_REJECTS, false),
    ARR(struct tds_msg_rows, acks, n_acks, F_STRS, false),
};

static const struct field ack_fields[] = {
    FLD(struct tds_msg_ack, origin, F_STR, true),
    ARR(struct tds_msg_ack, ids, n_ids, F_STRS, true),
    FLD(struct tds_msg_ack, rows_written, F_I64, false),
    FLD(struct tds_msg_ack, rows_rejected, F_I64, false),
};

struct type_desc {
    const char *name;
    const struct field *fields;
    size_t n_fields;
};

static const struct type_desc types[] = {
    [TDS_MSG_EVENT] = { "event", event_fields, NFIELDS(event_fields) },
    [TDS_MSG_FETCH] = { "fetch", fetch_fields, NFIELDS(fetch_fields) },
    [TDS_MSG_PAGE] = { "page", page_fields, NFIELDS(page_fields) },
    [TDS_MSG_ROWS] = { "rows", rows_fields, NFIELDS(rows_fields) },
    [TDS_MSG_ACK] = { "ack", ack_fields, NFIELDS(ack_fields) },
};

static const struct type_desc *type_desc(enum tds_msg_type t)
{
    if ((int)t < TDS_MSG_EVENT || (int)t > TDS_MSG_ACK)
        return NULL;
    return &types[t];
}

/* The union member that a type's field offsets are relative to. */
static void *body_of(struct tds_msg *m)
{
    switch (m->type) {
    case TDS_MSG_EVENT: return &m->u.event;
    case TDS_MSG_FETCH: return &m->u.fetch;
    case TDS_MSG_PAGE: return &m->u.page;
    case TDS_MSG_ROWS: return &m->u.rows;
    case TDS_MSG_ACK: return &m->u.ack;
    }
    return NULL;
}

#define AT(base, off, T) ((T *)(void *)((char *)(base) + (off)))
#define CAT(base, off, T) ((T const *)(const void *)((const char *)(base) + (off)))

/* ---- freeing ----------------------------------------------------------- */

static void free_strs(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_rowset_vals(struct tds_msg_rowset *s)
{
    if (!s->vals)
        return;
    /* One block per row, pointed at by the row's first non-NULL value. */
    for (size_t r = 0; r < s->n_rows; r++) {
        struct tds_bytes *row = s->vals + r * s->n_cols;
        for (size_t c = 0; c < s->n_cols; c++) {
            if (row[c].p) {
                free(row[c].p);
                break;
            }
        }
    }
    free(s->vals);
}

static void free_fields(const struct field *f, size_t n, void *base);

static void free_field(const struct field *f, void *base)
{
    switch (f->type) {
    case F_STR:
        free(*AT(base, f->off, char *));
        break;
    case F_BYTES:
        free(AT(base, f->off, struct tds_bytes)->p);
        break;
    case F_I64:
    case F_BOOL:
    case F_KIND:
        break;
    case F_STRS:
        free_strs(*AT(base, f->off, char **), *AT(base, f->count_off, size_t));
        break;
    case F_COLS: {
        struct tds_msg_rowset *s = base;

        if (s->cols_block)
            free(s->cols); /* the names live in the array's block */
        else
            free_strs(s->cols, s->n_cols);
        s->cols = NULL;
        break;
    }
    case F_RECORDS: {
        struct tds_bytes *v = *AT(base, f->off, struct tds_bytes *);
        size_t cnt = *AT(base, f->count_off, size_t);
        for (size_t i = 0; v && i < cnt; i++)
            free(v[i].p);
        free(v);
        break;
    }
    case F_ROWS:
        free_rowset_vals(base);
        break;
    case F_SETS: {
        struct tds_msg_rows *r = base;
        for (size_t i = 0; r->sets && i < r->n_sets; i++)
            free_fields(rowset_fields, NFIELDS(rowset_fields), &r->sets[i]);
        free(r->sets);
        break;
    }
    case F_REJECTS: {
        struct tds_msg_rows *r = base;
        for (size_t i = 0; r->rejects && i < r->n_rejects; i++)
            free_fields(reject_fields, NFIELDS(reject_fields), &r->rejects[i]);
        free(r->rejects);
        break;
    }
    }
}

static void free_fields(const struct field *f, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++)
        free_field(&f[i], base);
}

void tds_msg_clear(struct tds_msg *m)
{
    if (!m)
        return;
    const struct type_desc *td = type_desc(m->type);
    if (td)
        free_fields(td->fields, td->n_fields, body_of(m));
    free(m->id);
    memset(m, 0, sizeof(*m));
}

/* ---- frame scan -------------------------------------------------------- */

static uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Check that buf is exactly one well-formed msgpack object within our limits,
 * so that msgpack_unpack_next() cannot be made to over-allocate: every
 * container element takes at least one byte, so a declared count above the
 * bytes left is a lie, and the declared counts together may not pass
 * TDS_MSG_MAX_ELEMENTS. Returns 0, TDS_MSG_E_MALFORMED or TDS_MSG_E_TOO_LARGE. */
static int scan_frame(const uint8_t *p, size_t len)
{
    size_t stack[MAX_DEPTH];
    size_t depth = 0, unread = 1, pos = 0; /* unread: objects still due at this depth */
    uint64_t elements = 0;

    for (;;) {
        while (unread == 0) {
            if (depth == 0)
                return pos == len ? 0 : TDS_MSG_E_MALFORMED;
            unread = stack[--depth];
        }
        unread--;
        if (pos >= len)
            return TDS_MSG_E_MALFORMED;
        uint8_t b = p[pos++];
        size_t left = len - pos;
        uint64_t n = 0;        /* payload bytes, or container count */
        int kind = 0;          /* 0 scalar payload, 1 array, 2 map, 3 str/bin, 4 ext */
        size_t hdr = 0;        /* length bytes following the marker */

        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            continue;
        } else if (b <= 0x8f) {
            kind = 2, n = b & 0x0f;
        } else if (b <= 0x9f) {
            kind = 1, n = b & 0x0f;
        } else if (b <= 0xbf) {
            kind = 3, n = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4: case 0xd9: kind = 3, hdr = 1; break;
            case 0xc5: case 0xda: kind = 3, hdr = 2; break;
            case 0xc6: case 0xdb: kind = 3, hdr = 4; break;
            case 0xc7: kind = 4, hdr = 1; break;
            case 0xc8: kind = 4, hdr = 2; break;
            case 0xc9: kind = 4, hdr = 4; break;
            case 0xca: n = 4; break;
            case 0xcb: n = 8; break;
            case 0xcc: case 0xd0: n = 1; break;
            case 0xcd: case 0xd1: n = 2; break;
            case 0xce: case 0xd2: n = 4; break;
            case 0xcf: case 0xd3: n = 8; break;
            case 0xd4: n = 2; break; /* fixext: type byte + data */
            case 0xd5: n = 3; break;
            case 0xd6: n = 5; break;
            case 0xd7: n = 9; break;
            case 0xd8: n = 17; break;
            case 0xdc: kind = 1, hdr = 2; break;
            case 0xdd: kind = 1, hdr = 4; break;
            case 0xde: kind = 2, hdr = 2; break;
            case 0xdf: kind = 2, hdr = 4; break;
            default: return TDS_MSG_E_MALFORMED; /* 0xc1: never used */
            }
        }
        if (hdr) {
            if (left < hdr)
                return TDS_MSG_E_MALFORMED;
            n = hdr == 1 ? p[pos] : hdr == 2 ? be16(p + pos) : be32(p + pos);
            pos += hdr;
            left -= hdr;
        }
        switch (kind) {
        case 0: /* fixed-size scalar */
            if (left < n)
                return TDS_MSG_E_MALFORMED;
            pos += n;
            break;
        case 3:
        case 4:
            if (n > TDS_MSG_MAX_STR)
                return TDS_MSG_E_TOO_LARGE;
            n += kind == 4; /* ext type byte */
            if (left < n)
                return TDS_MSG_E_MALFORMED;
            pos += n;
            break;
        case 1:
        case 2:
            if (n > (kind == 1 ? TDS_MSG_MAX_ARRAY : TDS_MSG_MAX_MAP))
                return TDS_MSG_E_TOO_LARGE;
            n *= (uint64_t)kind;
            if (n > left)
                return TDS_MSG_E_MALFORMED;
            elements += n;
            if (elements > TDS_MSG_MAX_ELEMENTS)
                return TDS_MSG_E_TOO_LARGE;
            if (n > 0) {
                if (depth == MAX_DEPTH)
                    return TDS_MSG_E_MALFORMED;
                stack[depth++] = unread;
                unread = n;
            }
            break;
        }
    }
}

/* ---- decoding ---------------------------------------------------------- */

static bool is_text(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BIN;
}

/* str and bin share layout in msgpack_object; read either. */
static void text_of(const msgpack_object *o, const char **p, size_t *n)
{
    if (o->type == MSGPACK_OBJECT_STR) {
        *p = o->via.str.ptr;
        *n = o->via.str.size;
    } else {
        *p = o->via.bin.ptr;
        *n = o->via.bin.size;
    }
}

static char *dup_n(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    if (n)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* A char * field: text without NUL bytes (a NUL would silently cut an id). */
/* A str (or bin) with no NUL inside, as the F_STR fields take. */
static int str_of(const msgpack_object *o, const char **p, size_t *n)
{
    if (!is_text(o))
        return TDS_MSG_E_MALFORMED;
    text_of(o, p, n);
    if (*n && memchr(*p, '\0', *n))
        return TDS_MSG_E_MALFORMED;
    return 0;
}

static int get_str(const msgpack_object *o, char **out)
{
    const char *p;
    size_t n;
    if (str_of(o, &p, &n))
        return TDS_MSG_E_MALFORMED;
    if (!(*out = dup_n(p, n)))
        return -ENOMEM;
    return 0;
}

static int get_bytes(const msgpack_object *o, struct tds_bytes *out)
{
    const char *p;
    size_t n;
    if (!is_text(o))
        return TDS_MSG_E_MALFORMED;
    text_of(o, &p, &n);
    if (!(out->p = dup_n(p, n)))
        return -ENOMEM;
    out->n = n;
    return 0;
}

static int get_i64(const msgpack_object *o, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > INT64_MAX)
            return TDS_MSG_E_MALFORMED;
        *out = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return 0;
    }
    return TDS_MSG_E_MALFORMED;
}

static int decode_fields(const struct field *f, size_t nf, const msgpack_object *map, void *base);

static int get_strs(const msgpack_object *o, char ***out, size_t *count)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return TDS_MSG_E_MALFORMED;
    uint32_t n = o->via.array.size;
    if (n == 0)
        return 0;
    char **v = calloc(n, sizeof(*v));
    if (!v)
        return -ENOMEM;
    *out = v;
    for (uint32_t i = 0; i < n; i++) {
        int rc = get_str(&o->via.array.ptr[i], &v[i]);
        if (rc)
            return rc; /* the caller frees the first *count (all) entries */
        *count = i + 1;
    }
    return 0;
}

/* A rowset's column names: the pointer array and the names in one block, as
 * tds_msg_rows_add_set builds them (a rows message of items carries ~55). */
static int get_cols(const msgpack_object *o, struct tds_msg_rowset *s)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return TDS_MSG_E_MALFORMED;
    uint32_t n = o->via.array.size;
    size_t total = (size_t)n * sizeof(*s->cols);
    if (n == 0)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *p;
        size_t len;
        if (str_of(&o->via.array.ptr[i], &p, &len))
            return TDS_MSG_E_MALFORMED;
        total += len + 1; /* bounded by the frame, itself at most TDS_MSG_MAX_FRAME */
    }
    char **v = malloc(total);
    if (!v)
        return -ENOMEM;
    char *q = (char *)(v + n);
    for (uint32_t i = 0; i < n; i++) {
        const char *p;
        size_t len;
        text_of(&o->via.array.ptr[i], &p, &len);
        if (len)
            memcpy(q, p, len);
        q[len] = '\0';
        v[i] = q;
        q += len + 1;
    }
    s->cols = v;
    s->n_cols = n;
    s->cols_block = true;
    return 0;
}

static int get_records(const msgpack_object *o, struct tds_bytes **out, size_t *count)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return TDS_MSG_E_MALFORMED;
    uint32_t n = o->via.array.size;
    if (n == 0)
        return 0;
    struct tds_bytes *v = calloc(n, sizeof(*v));
    if (!v)
        return -ENOMEM;
    *out = v;
    for (uint32_t i = 0; i < n; i++) {
        int rc = get_bytes(&o->via.array.ptr[i], &v[i]);
        if (rc)
            return rc;
        *count = i + 1;
    }
    return 0;
}

/* Copy one row's values into one block (see the file comment). */
static int fill_row(struct tds_bytes *dst, const msgpack_object *src, size_t n_cols)
{
    size_t total = 0;
    for (size_t c = 0; c < n_cols; c++) {
        const msgpack_object *o = &src[c];
        if (o->type == MSGPACK_OBJECT_NIL)
            continue;
        if (!is_text(o))
            return TDS_MSG_E_MALFORMED;
        total += (o->type == MSGPACK_OBJECT_STR ? o->via.str.size : o->via.bin.size) + 1;
    }
    if (total == 0)
        return 0;
    char *block = malloc(total);
    if (!block)
        return -ENOMEM;
    for (size_t c = 0; c < n_cols; c++) {
        const msgpack_object *o = &src[c];
        if (o->type == MSGPACK_OBJECT_NIL)
            continue;
        const char *p;
        size_t n;
        text_of(o, &p, &n);
        if (n)
            memcpy(block, p, n);
        block[n] = '\0';
        dst[c].p = block;
        dst[c].n = n;
        block += n + 1;
    }
    return 0;
}

static int get_rows(const msgpack_object *o, struct tds_msg_rowset *s)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return TDS_MSG_E_MALFORMED;
    uint32_t n = o->via.array.size;
    for (uint32_t r = 0; r < n; r++) {
        const msgpack_object *row = &o->via.array.ptr[r];
        if (row->type != MSGPACK_OBJECT_ARRAY || row->via.array.size != s->n_cols)
            return TDS_MSG_E_MALFORMED;
    }
    /* n * n_cols values were all present in the frame, so this is bounded. */
    size_t total = (size_t)n * s->n_cols;
    if (total) {
        s->vals = calloc(total, sizeof(*s->vals));
        if (!s->vals)
            return -ENOMEM;
    }
    s->cap_rows = n;
    for (uint32_t r = 0; r < n; r++) {
        int rc = 0;
        if (s->n_cols)
            rc = fill_row(s->vals + (size_t)r * s->n_cols, o->via.array.ptr[r].via.array.ptr,
                          s->n_cols);
        s->n_rows = r + 1; /* a failed row owns nothing, so counting it is harmless */
        if (rc)
            return rc;
    }
    return 0;
}

static int get_sets(const msgpack_object *o, struct tds_msg_rows *r)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return TDS_MSG_E_MALFORMED;
    uint32_t n = o->via.array.size;
    if (n == 0)
        return 0;
    if (!(r->sets = calloc(n, sizeof(*r->sets))))
        return -ENOMEM;
    r->cap_sets = n;
    for (uint32_t i = 0; i < n; i++) {
        r->n_sets = i + 1; /* zeroed elements are safe to free half-filled */
        int rc = decode_fields(rowset_fields, NFIELDS(rowset_fields), &o->via.array.ptr[i],
                               &r->sets[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static int get_rejects(const msgpack_object *o, struct tds_msg_rows *r)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return TDS_MSG_E_MALFORMED;
    uint32_t n = o->via.array.size;
    if (n == 0)
        return 0;
    if (!(r->rejects = calloc(n, sizeof(*r->rejects))))
        return -ENOMEM;
    r->cap_rejects = n;
    for (uint32_t i = 0; i < n; i++) {
        r->n_rejects = i + 1;
        int rc = decode_fields(reject_fields, NFIELDS(reject_fields), &o->via.array.ptr[i],
                               &r->rejects[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static int decode_field(const struct field *f, const msgpack_object *o, void *base)
{
    /* nil is an absent value: the empty state for an optional key */
    if (o->type == MSGPACK_OBJECT_NIL)
        return f->required ? TDS_MSG_E_MALFORMED : 0;

    switch (f->type) {
    case F_STR:
        return get_str(o, AT(base, f->off, char *));
    case F_BYTES:
        return get_bytes(o, AT(base, f->off, struct tds_bytes));
    case F_I64:
        return get_i64(o, AT(base, f->off, int64_t));
    case F_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN)
            return TDS_MSG_E_MALFORMED;
        *AT(base, f->off, bool) = o->via.boolean;
        return 0;
    case F_KIND: {
        int64_t k;
        if (get_i64(o, &k) || k < TDS_ROWS_DETAIL || k > TDS_ROWS_CHILD)
            return TDS_MSG_E_MALFORMED;
        *AT(base, f->off, enum tds_rowset_kind) = (enum tds_rowset_kind)k;
        return 0;
    }
    case F_STRS:
        return get_strs(o, AT(base, f->off, char **), AT(base, f->count_off, size_t));
    case F_COLS:
        return get_cols(o, base);
    case F_RECORDS:
        return get_records(o, AT(base, f->off, struct tds_bytes *), AT(base, f->count_off, size_t));
    case F_ROWS:
        return get_rows(o, base);
    case F_SETS:
        return get_sets(o, base);
    case F_REJECTS:
        return get_rejects(o, base);
    }
    return TDS_MSG_E_MALFORMED;
}

static bool key_is(const msgpack_object *k, const char *name, size_t len)
{
    const char *p;
    size_t n;
    text_of(k, &p, &n);
    return n == len && memcmp(p, name, len) == 0;
}

/* Map every key of map to its entry in f (found[i]); unknown keys are
 * skipped, a known key twice is malformed. */
static int match_keys(const struct field *f, size_t nf, const msgpack_object *map,
                      const msgpack_object **found)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return TDS_MSG_E_MALFORMED;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (!is_text(&kv->key))
            return TDS_MSG_E_MALFORMED;
        for (size_t j = 0; j < nf; j++) {
            if (key_is(&kv->key, f[j].name, f[j].len)) {
                if (found[j])
                    return TDS_MSG_E_MALFORMED;
                found[j] = &kv->val;
                break;
            }
        }
    }
    return 0;
}

/* The largest field table; found[] arrays are sized by it. */
#define MAX_FIELDS 16
_Static_assert(NFIELDS(rows_fields) <= MAX_FIELDS && NFIELDS(page_fields) <= MAX_FIELDS,
               "field table larger than MAX_FIELDS");

static int decode_fields(const struct field *f, size_t nf, const msgpack_object *map, void *base)
{
    const msgpack_object *found[MAX_FIELDS] = { 0 };
    int rc = match_keys(f, nf, map, found);
    if (rc)
        return rc;
    /* Table order, not key order: rowset rows need cols first. */
    for (size_t i = 0; i < nf; i++) {
        if (!found[i]) {
            if (f[i].required)
                return TDS_MSG_E_MALFORMED;
            continue;
        }
        rc = decode_field(&f[i], found[i], base);
        if (rc)
            return rc;
    }
    return 0;
}

static const struct field head_fields[] = {
    { "v", 1, F_I64, true, 0, 0 },
    { "t", 1, F_STR, true, 0, 0 },
    { "id", 2, F_STR, true, 0, 0 },
};

static int decode_root(const msgpack_object *root, struct tds_msg *m)
{
    const msgpack_object *found[3] = { 0 };
    int rc = match_keys(head_fields, 3, root, found);
    if (rc)
        return rc;
    /* Version first: a newer writer may have changed anything else. */
    if (!found[0] || get_i64(found[0], &m->v) || m->v < 1)
        return TDS_MSG_E_MALFORMED;
    if (m->v > TDS_MSG_VERSION)
        return TDS_MSG_E_VERSION;
    if (!found[1] || !is_text(found[1]))
        return TDS_MSG_E_MALFORMED;
    for (int t = TDS_MSG_EVENT; t <= TDS_MSG_ACK; t++) {
        if (key_is(found[1], types[t].name, strlen(types[t].name))) {
            m->type = (enum tds_msg_type)t;
            break;
        }
    }
    if (!m->type)
        return TDS_MSG_E_TYPE;
    if (!found[2] || found[2]->type == MSGPACK_OBJECT_NIL)
        return TDS_MSG_E_MALFORMED;
    if ((rc = get_str(found[2], &m->id)))
        return rc;
    const struct type_desc *td = &types[m->type];
    if ((rc = decode_fields(td->fields, td->n_fields, root, body_of(m))))
        return rc;
    /* acks are (origin, id) pairs */
    if ((m->type == TDS_MSG_PAGE && m->u.page.n_acks % 2) ||
        (m->type == TDS_MSG_ROWS && m->u.rows.n_acks % 2))
        return TDS_MSG_E_MALFORMED;
    return 0;
}

int tds_msg_decode(const void *buf, size_t len, struct tds_msg *m)
{
    memset(m, 0, sizeof(*m));
    if (!buf || len == 0)
        return TDS_MSG_E_MALFORMED;
    if (len > TDS_MSG_MAX_FRAME)
        return TDS_MSG_E_TOO_LARGE;
    int rc = scan_frame(buf, len);
    if (rc)
        return rc;

    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&up, buf, len, &off);
    if (ur == MSGPACK_UNPACK_SUCCESS && off == len)
        rc = decode_root(&up.data, m);
    else if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        rc = -ENOMEM; /* the scan ruled out depth, the other cause */
    else
        rc = TDS_MSG_E_MALFORMED;
    msgpack_unpacked_destroy(&up);
    if (rc)
        tds_msg_clear(m);
    return rc;
}

/* ---- encoding ---------------------------------------------------------- */

/* Check a field and add an upper bound of its encoded size to *size; the
 * encoder then allocates once and the frame limit is enforced before any
 * packing. */
static int measure_fields(const struct field *f, size_t nf, const void *base, size_t *size);

static int measure_text(size_t n, size_t *size)
{
    if (n > TDS_MSG_MAX_STR)
        return TDS_MSG_E_TOO_LARGE;
    *size += n + 5;
    return 0;
}

static int measure_array(size_t n, size_t *size)
{
    if (n > TDS_MSG_MAX_ARRAY)
        return TDS_MSG_E_TOO_LARGE;
    *size += 5;
    return 0;
}

static int measure_field(const struct field *f, const void *base, size_t *size)
{
    int rc;
    *size += f->len + 1u;
    switch (f->type) {
    case F_STR: {
        const char *s = *CAT(base, f->off, char *);
        if (!s)
            return f->required ? TDS_MSG_E_MALFORMED : (*size += 1, 0);
        return measure_text(strlen(s), size);
    }
    case F_BYTES: {
        const struct tds_bytes *b = CAT(base, f->off, struct tds_bytes);
        if (!b->p)
            return b->n ? TDS_MSG_E_MALFORMED : (*size += 1, 0);
        return measure_text(b->n, size);
    }
    case F_I64:
    case F_BOOL:
    case F_KIND:
        *size += 9;
        if (f->type == F_KIND) {
            enum tds_rowset_kind k = *CAT(base, f->off, enum tds_rowset_kind);
            if (k < TDS_ROWS_DETAIL || k > TDS_ROWS_CHILD)
                return TDS_MSG_E_MALFORMED;
        }
        return 0;
    case F_STRS:
    case F_COLS: {
        char *const *v = *CAT(base, f->off, char **);
        size_t n = *CAT(base, f->count_off, size_t);
        if ((rc = measure_array(n, size)))
            return rc;
        if (n && !v)
            return TDS_MSG_E_MALFORMED;
        for (size_t i = 0; i < n; i++) {
            if (!v[i])
                return TDS_MSG_E_MALFORMED;
            if ((rc = measure_text(strlen(v[i]), size)))
                return rc;
        }
        return 0;
    }
    case F_RECORDS: {
        const struct tds_bytes *v = *CAT(base, f->off, struct tds_bytes *);
        size_t n = *CAT(base, f->count_off, size_t);
        if ((rc = measure_array(n, size)))
            return rc;
        if (n && !v)
            return TDS_MSG_E_MALFORMED;
        for (size_t i = 0; i < n; i++) {
            if (!v[i].p)
                return TDS_MSG_E_MALFORMED;
            if ((rc = measure_text(v[i].n, size)))
                return rc;
        }
        return 0;
    }
    case F_ROWS: {
        const struct tds_msg_rowset *s = base;
        if ((rc = measure_array(s->n_rows, size)))
            return rc;
        if (s->n_rows && s->n_cols && !s->vals)
            return TDS_MSG_E_MALFORMED;
        size_t nv = s->n_rows * s->n_cols; /* both ≤ TDS_MSG_MAX_ARRAY */
        *size += s->n_rows * 5;
        for (size_t i = 0; i < nv; i++) {
            if (!s->vals[i].p)
                *size += 1;
            else if ((rc = measure_text(s->vals[i].n, size)))
                return rc;
        }
        return 0;
    }
    case F_SETS: {
        const struct tds_msg_rows *r = base;
        if ((rc = measure_array(r->n_sets, size)))
            return rc;
        if (r->n_sets && !r->sets)
            return TDS_MSG_E_MALFORMED;
        for (size_t i = 0; i < r->n_sets; i++) {
            *size += 5;
            if ((rc = measure_fields(rowset_fields, NFIELDS(rowset_fields), &r->sets[i], size)))
                return rc;
        }
        return 0;
    }
    case F_REJECTS: {
        const struct tds_msg_rows *r = base;
        if ((rc = measure_array(r->n_rejects, size)))
            return rc;
        if (r->n_rejects && !r->rejects)
            return TDS_MSG_E_MALFORMED;
        for (size_t i = 0; i < r->n_rejects; i++) {
            *size += 5;
            if ((rc = measure_fields(reject_fields, NFIELDS(reject_fields), &r->rejects[i],
                                     size)))
                return rc;
        }
        return 0;
    }
    }
    return TDS_MSG_E_MALFORMED;
}

static int measure_fields(const struct field *f, size_t nf, const void *base, size_t *size)
{
    for (size_t i = 0; i < nf; i++) {
        int rc = measure_field(&f[i], base, size);
        if (rc)
            return rc;
        /* Stop counting long before size_t could wrap. */
        if (*size > 2 * (size_t)TDS_MSG_MAX_FRAME + 64)
            return TDS_MSG_E_TOO_LARGE;
    }
    return 0;
}

/* Every msgpack_pack_* call can fail only on ENOMEM from the sbuffer. */
#define PK(call)                   \
    do {                           \
        if ((call) != 0)           \
            return -ENOMEM;        \
    } while (0)

static int pack_text(msgpack_packer *pk, const char *p, size_t n)
{
    PK(msgpack_pack_str(pk, n));
    PK(msgpack_pack_str_body(pk, p, n));
    return 0;
}

static int pack_bin(msgpack_packer *pk, const char *p, size_t n)
{
    PK(msgpack_pack_bin(pk, n));
    PK(msgpack_pack_bin_body(pk, p, n));
    return 0;
}

static int pack_fields(msgpack_packer *pk, const struct field *f, size_t nf, const void *base);

static int pack_field(msgpack_packer *pk, const struct field *f, const void *base)
{
    int rc;
    PK(pack_text(pk, f->name, f->len));
    switch (f->type) {
    case F_STR: {
        const char *s = *CAT(base, f->off, char *);
        if (!s)
            PK(msgpack_pack_nil(pk));
        else
            PK(pack_text(pk, s, strlen(s)));
        return 0;
    }
    case F_BYTES: {
        const struct tds_bytes *b = CAT(base, f->off, struct tds_bytes);
        if (!b->p)
            PK(msgpack_pack_nil(pk));
        else
            PK(pack_bin(pk, b->p, b->n));
        return 0;
    }
    case F_I64:
        PK(msgpack_pack_int64(pk, *CAT(base, f->off, int64_t)));
        return 0;
    case F_BOOL:
        PK(*CAT(base, f->off, bool) ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
        return 0;
    case F_KIND:
        PK(msgpack_pack_int(pk, (int)*CAT(base, f->off, enum tds_rowset_kind)));
        return 0;
    case F_STRS:
    case F_COLS: {
        char *const *v = *CAT(base, f->off, char **);
        size_t n = *CAT(base, f->count_off, size_t);
        PK(msgpack_pack_array(pk, n));
        for (size_t i = 0; i < n; i++)
            PK(pack_text(pk, v[i], strlen(v[i])));
        return 0;
    }
    case F_RECORDS: {
        const struct tds_bytes *v = *CAT(base, f->off, struct tds_bytes *);
        size_t n = *CAT(base, f->count_off, size_t);
        PK(msgpack_pack_array(pk, n));
        for (size_t i = 0; i < n; i++)
            PK(pack_bin(pk, v[i].p, v[i].n));
        return 0;
    }
    case F_ROWS: {
        const struct tds_msg_rowset *s = base;
        PK(msgpack_pack_array(pk, s->n_rows));
        for (size_t r = 0; r < s->n_rows; r++) {
            PK(msgpack_pack_array(pk, s->n_cols));
            if (!s->n_cols)
                continue;
            const struct tds_bytes *row = s->vals + r * s->n_cols;
            for (size_t c = 0; c < s->n_cols; c++) {
                if (row[c].p)
                    PK(pack_text(pk, row[c].p, row[c].n));
                else
                    PK(msgpack_pack_nil(pk));
            }
        }
        return 0;
    }
    case F_SETS: {
        const struct tds_msg_rows *r = base;
        PK(msgpack_pack_array(pk, r->n_sets));
        for (size_t i = 0; i < r->n_sets; i++) {
            if ((rc = pack_fields(pk, rowset_fields, NFIELDS(rowset_fields), &r->sets[i])))
                return rc;
        }
        return 0;
    }
    case F_REJECTS: {
        const struct tds_msg_rows *r = base;
        PK(msgpack_pack_array(pk, r->n_rejects));
        for (size_t i = 0; i < r->n_rejects; i++) {
            if ((rc = pack_fields(pk, reject_fields, NFIELDS(reject_fields), &r->rejects[i])))
                return rc;
        }
        return 0;
    }
    }
    return TDS_MSG_E_MALFORMED;
}

static int pack_fields(msgpack_packer *pk, const struct field *f, size_t nf, const void *base)
{
    PK(msgpack_pack_map(pk, nf));
    for (size_t i = 0; i < nf; i++) {
        int rc = pack_field(pk, &f[i], base);
        if (rc)
            return rc;
    }
    return 0;
}

int tds_msg_encode(const struct tds_msg *m, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    const struct type_desc *td = type_desc(m->type);
    if (!td || !m->id)
        return TDS_MSG_E_MALFORMED;
    /* acks are (origin, id) pairs: the reader refuses an odd count */
    if ((m->type == TDS_MSG_PAGE && m->u.page.n_acks % 2) ||
        (m->type == TDS_MSG_ROWS && m->u.rows.n_acks % 2))
        return TDS_MSG_E_MALFORMED;
    const void *base = body_of((struct tds_msg *)m);

    size_t est = 32, idlen = strlen(m->id);
    int rc = measure_text(idlen, &est);
    if (!rc)
        rc = measure_fields(td->fields, td->n_fields, base, &est);
    if (rc)
        return rc;
    /* est is an upper bound; only an actual size over the limit is refused. */
    if (est > 2 * (size_t)TDS_MSG_MAX_FRAME)
        return TDS_MSG_E_TOO_LARGE;

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    sb.data = malloc(est);
    if (!sb.data)
        return -ENOMEM;
    sb.alloc = est;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);

    rc = -ENOMEM;
    if (msgpack_pack_map(&pk, 3 + td->n_fields) || pack_text(&pk, "v", 1) ||
        msgpack_pack_int64(&pk, TDS_MSG_VERSION) || pack_text(&pk, "t", 1) ||
        pack_text(&pk, td->name, strlen(td->name)) || pack_text(&pk, "id", 2) ||
        pack_text(&pk, m->id, idlen))
        goto fail;
    /* The header map above already counts the type's fields. */
    for (size_t i = 0; i < td->n_fields; i++) {
        if ((rc = pack_field(&pk, &td->fields[i], base)))
            goto fail;
    }
    if (sb.size > TDS_MSG_MAX_FRAME) {
        rc = TDS_MSG_E_TOO_LARGE;
        goto fail;
    }
    /* Within the byte limits, a rows message of many narrow values can still
     * hold more elements than a reader takes (cheap: strings are skipped). */
    if ((rc = scan_frame((const uint8_t *)sb.data, sb.size)))
        goto fail;
    *len = sb.size;
    *out = msgpack_sbuffer_release(&sb);
    return 0;
fail:
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* ---- names ------------------------------------------------------------- */

const char *tds_msg_type_name(enum tds_msg_type t)
{
    const struct type_desc *td = type_desc(t);
    return td ? td->name : "unknown";
}

const char *tds_msg_strerror(int code)
{
    switch (code) {
    case 0: return "success";
    case TDS_MSG_E_MALFORMED: return "malformed message";
    case TDS_MSG_E_VERSION: return "message version newer than supported";
    case TDS_MSG_E_TOO_LARGE: return "message over size limit";
    case TDS_MSG_E_TYPE: return "unknown message type";
    }
    if (code < 0)
        return strerror(-code);
    return "unknown error";
}

/* ---- builders ---------------------------------------------------------- */

/* Grow *v (elements of es bytes) so that it holds need; geometric. */
static int grow(void **v, size_t *cap, size_t need, size_t es, size_t min)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : min;
    while (nc < need) {
        if (nc > SIZE_MAX / 2)
            return -ENOMEM;
        nc *= 2;
    }
    if (nc > SIZE_MAX / es)
        return -ENOMEM;
    void *p = realloc(*v, nc * es);
    if (!p)
        return -ENOMEM;
    *v = p;
    *cap = nc;
    return 0;
}

struct tds_msg_rowset *tds_msg_rows_add_set(struct tds_msg_rows *r, const char *table,
                                            enum tds_rowset_kind kind,
                                            const char *const *cols, size_t n_cols)
{
    if (!r || !table || (n_cols && !cols))
        return NULL;
    void *sets = r->sets;
    if (grow(&sets, &r->cap_sets, r->n_sets + 1, sizeof(*r->sets), 4))
        return NULL;
    r->sets = sets;

    struct tds_msg_rowset s = { .kind = kind };
    s.table = dup_n(table, strlen(table));
    if (!s.table)
        goto fail;
    if (n_cols) {
        /* The pointer array and the names in one allocation: the processor
         * adds a set of ~40 columns per record, and a malloc per name was
         * most of its allocations. */
        size_t total;
        char *p;

        if (n_cols > SIZE_MAX / sizeof(*s.cols))
            goto fail;
        total = n_cols * sizeof(*s.cols);
        for (size_t i = 0; i < n_cols; i++) {
            size_t l;

            if (!cols[i])
                goto fail;
            l = strlen(cols[i]) + 1;
            if (l > SIZE_MAX - total)
                goto fail;
            total += l;
        }
        s.cols = malloc(total);
        if (!s.cols)
            goto fail;
        s.cols_block = true;
        p = (char *)(s.cols + n_cols);
        for (size_t i = 0; i < n_cols; i++) {
            size_t l = strlen(cols[i]) + 1;

            memcpy(p, cols[i], l);
            s.cols[i] = p;
            p += l;
        }
        s.n_cols = n_cols;
    }
    r->sets[r->n_sets] = s;
    return &r->sets[r->n_sets++];
fail:
    free(s.table);
    return NULL;
}

int tds_msg_rowset_add_row(struct tds_msg_rowset *s, const struct tds_bytes *vals)
{
    if (s->n_cols == 0) {
        s->n_rows++;
        return 0;
    }
    if (s->n_rows == s->cap_rows) {
        void *v = s->vals;
        size_t cap = s->cap_rows;
        if (s->n_cols > SIZE_MAX / sizeof(*s->vals))
            return -ENOMEM;
        if (grow(&v, &cap, s->n_rows + 1, s->n_cols * sizeof(*s->vals), 16))
            return -ENOMEM;
        s->vals = v;
        s->cap_rows = cap;
    }
    struct tds_bytes *row = s->vals + s->n_rows * s->n_cols;
    size_t total = 0;
    for (size_t c = 0; c < s->n_cols; c++) {
        if (vals[c].p) {
            if (vals[c].n > SIZE_MAX - total - 1)
                return -ENOMEM;
            total += vals[c].n + 1;
        }
    }
    char *block = NULL;
    if (total && !(block = malloc(total)))
        return -ENOMEM;
    for (size_t c = 0; c < s->n_cols; c++) {
        if (!vals[c].p) {
            row[c].p = NULL;
            row[c].n = 0;
            continue;
        }
        if (vals[c].n)
            memcpy(block, vals[c].p, vals[c].n);
        block[vals[c].n] = '\0';
        row[c].p = block;
        row[c].n = vals[c].n;
        block += vals[c].n + 1;
    }
    s->n_rows++;
    return 0;
}

int tds_msg_rows_add_reject(struct tds_msg_rows *r, const char *entity, const char *zoho_id,
                            const char *reason, const char *raw, size_t raw_len)
{
    void *v = r->rejects;
    if (grow(&v, &r->cap_rejects, r->n_rejects + 1, sizeof(*r->rejects), 4))
        return -ENOMEM;
    r->rejects = v;

    struct tds_msg_reject j = { 0 };
    if ((entity && !(j.entity = dup_n(entity, strlen(entity)))) ||
        (zoho_id && !(j.zoho_id = dup_n(zoho_id, strlen(zoho_id)))) ||
        (reason && !(j.reason = dup_n(reason, strlen(reason)))) ||
        (raw && !(j.raw.p = dup_n(raw, raw_len)))) {
        free(j.entity);
        free(j.zoho_id);
        free(j.reason);
        return -ENOMEM;
    }
    if (raw)
        j.raw.n = raw_len;
    r->rejects[r->n_rejects++] = j;
    return 0;
}
