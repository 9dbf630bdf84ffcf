/* test_msg — unit tests for common/msg: round trips of every message type,
 * truncated and hostile frames, wrong types per key, size limits, builders.
 *
 * Hostile frames are built with msgpack-c's packer directly, so they do not
 * depend on the encoder under test. `test_msg --write-corpus DIR` writes the
 * sample messages as the fuzz seed corpus (tests/fuzz/corpus/msg/).
 */
/* By path, not through test_inc: tests/ on the include path would shadow the
 * system <assert.h> that msgpack's headers need. */
#include "../../assert.h"
#include "msg.h"

#include <errno.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AR "\xd8\xb5\xd9\x86\xd9\x81 \xd8\xa3" /* "صنف أ" */

static const char body_bytes[] = "{\"item\":\"" AR "\",\"z\":\"\0\x01\xff\"}";
#define BODY_LEN (sizeof(body_bytes) - 1)

static bool bytes_eq(struct tds_bytes b, const char *p, size_t n)
{
    return b.p && b.n == n && memcmp(b.p, p, n) == 0 && b.p[n] == '\0';
}

/* Encode, decode, re-encode: the two encodings must be identical. */
static void round_trip(const struct tds_msg *in, struct tds_msg *out)
{
    char *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;
    T_INT(tds_msg_encode(in, &buf, &len), ==, 0);
    T_TRUE(buf && len > 0);
    T_INT(tds_msg_decode(buf, len, out), ==, 0);
    T_INT(out->type, ==, in->type);
    T_INT(out->v, ==, TDS_MSG_VERSION);
    T_STR(out->id, in->id);
    T_INT(tds_msg_encode(out, &buf2, &len2), ==, 0);
    T_INT(len2, ==, len);
    T_TRUE(memcmp(buf, buf2, len) == 0);
    free(buf);
    free(buf2);
}

/* ---- sample messages (static data; never passed to tds_msg_clear) ----- */

static char *ids3[] = { "ev-1", ("page-" AR), "x" };
static struct tds_bytes records2[] = {
    { (char *)body_bytes, BODY_LEN },
    { (char *)"", 0 },
};
static char *deleted2[] = { "460000000012345", "460000000012346" };

static struct tds_msg sample_event(void)
{
    struct tds_msg m = { .type = TDS_MSG_EVENT, .id = "ev-abc" };
    m.u.event = (struct tds_msg_event){
        .org = "60001", .entity = "items", .op = "upsert", .origin = "ingress.pod-0",
        .event_id = "abc", .zoho_id = "4600" AR, .received_ms = 1767600000123,
        .body = { (char *)body_bytes, BODY_LEN },
    };
    return m;
}

static struct tds_msg sample_fetch(void)
{
    struct tds_msg m = { .type = TDS_MSG_FETCH, .id = "fe-1" };
    m.u.fetch = (struct tds_msg_fetch){
        .org = "60001", .entity = "contacts", .zoho_id = "4600001", .origin = "ingress.pod-1",
    };
    return m;
}

static struct tds_msg sample_page(void)
{
    struct tds_msg m = { .type = TDS_MSG_PAGE, .id = "pg-run7-3" };
    m.u.page = (struct tds_msg_page){
        .org = "60001", .entity = "invoices", .run = "run7", .mode = "incremental",
        .origin = "fetcher.pod-1", .page = 3, .fetched_ms = -5, .detail = true,
        .final = false, .cursor = "2026-01-05T10:00:00+0300",
        .deleted_ids = deleted2, .n_deleted = 2, .records = records2, .n_records = 2,
    };
    return m;
}

static struct tds_msg sample_ack(void)
{
    struct tds_msg m = { .type = TDS_MSG_ACK, .id = "ack-1" };
    m.u.ack = (struct tds_msg_ack){
        .origin = "fetcher.pod-1", .ids = ids3, .n_ids = 3,
        .rows_written = 9000, .rows_rejected = INT64_MAX,
    };
    return m;
}

/* A rows message built with the builders; caller clears it. */
static void build_rows(struct tds_msg *m, size_t n_rows)
{
    memset(m, 0, sizeof(*m));
    m->type = TDS_MSG_ROWS;
    m->id = strdup("rows-1");
    struct tds_msg_rows *r = &m->u.rows;
    r->org = strdup("60001");
    r->entity = strdup("items");
    r->origin = strdup("fetcher.pod-1");
    r->src = strdup("pg-run7-3");
    r->run = strdup("run7");
    r->mode = strdup("full");
    r->page = 3;
    r->received_ms = 1767600000123;
    r->records_in = (int64_t)n_rows;
    r->final = true;
    r->cursor = NULL;
    T_TRUE(m->id && r->org && r->entity && r->origin && r->src && r->run && r->mode);

    static const char *const cols[] = { "org_id", "item_id", "name", "rate", "raw" };
    struct tds_msg_rowset *s = tds_msg_rows_add_set(r, "items", TDS_ROWS_DETAIL, cols, 5);
    T_TRUE(s != NULL);
    for (size_t i = 0; i < n_rows; i++) {
        char id[32], rate[32];
        snprintf(id, sizeof(id), "46%zu", i);
        snprintf(rate, sizeof(rate), "%zu.50", i);
        struct tds_bytes v[5] = {
            { "60001", 5 },
            { id, strlen(id) },
            { i % 3 == 0 ? NULL : (char *)AR, i % 3 == 0 ? 0 : strlen(AR) },
            { i % 2 ? rate : (char *)"", i % 2 ? strlen(rate) : 0 },
            { (char *)body_bytes, BODY_LEN },
        };
        T_INT(tds_msg_rowset_add_row(s, v), ==, 0);
    }
    static const char *const ccols[] = { "org_id", "item_id", "warehouse_id", "stock" };
    struct tds_msg_rowset *c = tds_msg_rows_add_set(r, "item_stock", TDS_ROWS_CHILD, ccols, 4);
    T_TRUE(c != NULL);
    struct tds_bytes nulls[4] = { { "60001", 5 }, { "460", 3 }, { NULL, 0 }, { NULL, 0 } };
    T_INT(tds_msg_rowset_add_row(c, nulls), ==, 0);
    struct tds_bytes allnull[4] = { { NULL, 0 }, { NULL, 0 }, { NULL, 0 }, { NULL, 0 } };
    T_INT(tds_msg_rowset_add_row(c, allnull), ==, 0);
    /* a set with no rows and one with no columns */
    static const char *const dcols[] = { "org_id", "item_id" };
    T_TRUE(tds_msg_rows_add_set(r, "items", TDS_ROWS_DELETE, dcols, 2) != NULL);
    struct tds_msg_rowset *z = tds_msg_rows_add_set(r, "empty", TDS_ROWS_LIST, NULL, 0);
    T_TRUE(z != NULL);
    T_INT(tds_msg_rowset_add_row(z, NULL), ==, 0);

    T_INT(tds_msg_rows_add_reject(r, "items", "4601", "rate: not a number: 'abc'", body_bytes,
                                  BODY_LEN), ==, 0);
    T_INT(tds_msg_rows_add_reject(r, "items", NULL, "item_id missing", NULL, 0), ==, 0);
}

static void check_rows(const struct tds_msg *m, size_t n_rows)
{
    const struct tds_msg_rows *r = &m->u.rows;
    T_STR(r->org, "60001");
    T_STR(r->src, "pg-run7-3");
    T_STR(r->mode, "full");
    T_INT(r->page, ==, 3);
    T_INT(r->received_ms, ==, 1767600000123);
    T_INT(r->records_in, ==, n_rows);
    T_TRUE(r->final);
    T_NULL(r->cursor);
    T_INT(r->n_sets, ==, 4);
    const struct tds_msg_rowset *s = &r->sets[0];
    T_STR(s->table, "items");
    T_INT(s->kind, ==, TDS_ROWS_DETAIL);
    T_INT(s->n_cols, ==, 5);
    T_STR(s->cols[4], "raw");
    T_INT(s->n_rows, ==, n_rows);
    for (size_t i = 0; i < n_rows; i++) {
        const struct tds_bytes *v = s->vals + i * 5;
        char id[32], rate[32];
        snprintf(id, sizeof(id), "46%zu", i);
        snprintf(rate, sizeof(rate), "%zu.50", i);
        T_TRUE(bytes_eq(v[0], "60001", 5));
        T_TRUE(bytes_eq(v[1], id, strlen(id)));
        if (i % 3 == 0)
            T_NULL(v[2].p);
        else
            T_TRUE(bytes_eq(v[2], AR, strlen(AR)));
        if (i % 2)
            T_TRUE(bytes_eq(v[3], rate, strlen(rate)));
        else
            T_TRUE(bytes_eq(v[3], "", 0)); /* empty text is not NULL */
        T_TRUE(bytes_eq(v[4], body_bytes, BODY_LEN));
    }
    const struct tds_msg_rowset *c = &r->sets[1];
    T_INT(c->kind, ==, TDS_ROWS_CHILD);
    T_INT(c->n_rows, ==, 2);
    T_TRUE(bytes_eq(c->vals[1], "460", 3));
    T_NULL(c->vals[2].p);
    for (int i = 4; i < 8; i++)
        T_NULL(c->vals[i].p);
    T_INT(r->sets[2].kind, ==, TDS_ROWS_DELETE);
    T_INT(r->sets[2].n_rows, ==, 0);
    T_INT(r->sets[3].n_cols, ==, 0);
    T_INT(r->sets[3].n_rows, ==, 1);
    T_INT(r->n_rejects, ==, 2);
    T_STR(r->rejects[0].zoho_id, "4601");
    T_TRUE(bytes_eq(r->rejects[0].raw, body_bytes, BODY_LEN));
    T_NULL(r->rejects[1].zoho_id);
    T_NULL(r->rejects[1].raw.p);
    T_STR(r->rejects[1].reason, "item_id missing");
}

/* ---- round trips ------------------------------------------------------- */

static void test_event(void)
{
    struct tds_msg in = sample_event(), out;
    round_trip(&in, &out);
    const struct tds_msg_event *e = &out.u.event;
    T_STR(e->org, "60001");
    T_STR(e->entity, "items");
    T_STR(e->op, "upsert");
    T_STR(e->origin, "ingress.pod-0");
    T_STR(e->event_id, "abc");
    T_STR(e->zoho_id, "4600" AR);
    T_INT(e->received_ms, ==, 1767600000123);
    T_TRUE(bytes_eq(e->body, body_bytes, BODY_LEN));
    tds_msg_clear(&out);
    T_NULL(out.id);
    T_INT(out.type, ==, 0);

    /* optional fields absent: NULL strings, nil body */
    in.u.event.op = NULL;
    in.u.event.event_id = NULL;
    in.u.event.zoho_id = NULL;
    in.u.event.body = (struct tds_bytes){ NULL, 0 };
    round_trip(&in, &out);
    T_NULL(out.u.event.zoho_id);
    T_NULL(out.u.event.body.p);
    T_INT(out.u.event.body.n, ==, 0);
    tds_msg_clear(&out);
}

static void test_fetch(void)
{
    struct tds_msg in = sample_fetch(), out;
    round_trip(&in, &out);
    T_STR(out.u.fetch.org, "60001");
    T_STR(out.u.fetch.entity, "contacts");
    T_STR(out.u.fetch.zoho_id, "4600001");
    T_STR(out.u.fetch.origin, "ingress.pod-1");
    tds_msg_clear(&out);
}

static void test_page(void)
{
    struct tds_msg in = sample_page(), out;
    round_trip(&in, &out);
    const struct tds_msg_page *p = &out.u.page;
    T_STR(p->run, "run7");
    T_STR(p->mode, "incremental");
    T_STR(p->origin, "fetcher.pod-1");
    T_INT(p->page, ==, 3);
    T_INT(p->fetched_ms, ==, -5);
    T_TRUE(p->detail);
    T_TRUE(!p->final);
    T_STR(p->cursor, "2026-01-05T10:00:00+0300");
    T_INT(p->n_deleted, ==, 2);
    T_STR(p->deleted_ids[1], "460000000012346");
    T_INT(p->n_records, ==, 2);
    T_TRUE(bytes_eq(p->records[0], body_bytes, BODY_LEN));
    T_TRUE(bytes_eq(p->records[1], "", 0));
    tds_msg_clear(&out);

    /* the final page of a run: no records, no deleted ids, nil cursor */
    in.u.page = (struct tds_msg_page){ .org = "o", .entity = "items", .run = "r",
                                       .mode = "full", .origin = "fetcher.x", .page = 9,
                                       .final = true };
    round_trip(&in, &out);
    T_TRUE(out.u.page.final);
    T_NULL(out.u.page.cursor);
    T_INT(out.u.page.n_records, ==, 0);
    T_NULL(out.u.page.records);
    T_INT(out.u.page.n_deleted, ==, 0);
    T_INT(out.u.page.n_acks, ==, 0);
    tds_msg_clear(&out);

    /* a fetch-by-id page answering two ingress messages: (origin, id) pairs */
    static char *acks4[] = { "ingress.a", "fe-1", "ingress.b", "fe-2" };
    in.u.page = (struct tds_msg_page){ .org = "o", .entity = "items", .mode = "fetch",
                                       .origin = "fetcher.x", .acks = acks4, .n_acks = 4 };
    round_trip(&in, &out);
    T_INT(out.u.page.n_acks, ==, 4);
    T_STR(out.u.page.acks[2], "ingress.b");
    T_STR(out.u.page.acks[3], "fe-2");
    tds_msg_clear(&out);
    /* an odd count is not a list of pairs: the reader refuses it, and the
     * writer does not send one (it did, and the reader refused its own) */
    char *buf = NULL;
    size_t len = 0;
    T_INT(tds_msg_encode(&in, &buf, &len), ==, 0);
    /* the four strings' array, made an array of the first three */
    static const char four[] = "\x94\xa9ingress.a\xa4" "fe-1\xa9ingress.b\xa4" "fe-2";
    char *at = memmem(buf, len, four, sizeof(four) - 1);
    T_TRUE(at != NULL);
    at[0] = (char)0x93;
    size_t tail = (size_t)(at + sizeof(four) - 1 - buf);
    memmove(at + sizeof(four) - 1 - 5, at + sizeof(four) - 1, len - tail);
    len -= 5;
    T_INT(tds_msg_decode(buf, len, &out), ==, TDS_MSG_E_MALFORMED);
    free(buf);
    in.u.page.n_acks = 3;
    buf = NULL;
    T_INT(tds_msg_encode(&in, &buf, &len), ==, TDS_MSG_E_MALFORMED);
    T_NULL(buf);
}

static void test_ack(void)
{
    struct tds_msg in = sample_ack(), out;
    round_trip(&in, &out);
    T_STR(out.u.ack.origin, "fetcher.pod-1");
    T_INT(out.u.ack.n_ids, ==, 3);
    T_STR(out.u.ack.ids[0], "ev-1");
    T_STR(out.u.ack.ids[1], "page-" AR);
    T_STR(out.u.ack.ids[2], "x");
    T_INT(out.u.ack.rows_written, ==, 9000);
    T_INT(out.u.ack.rows_rejected, ==, INT64_MAX);
    tds_msg_clear(&out);

    in.u.ack.n_ids = 0;
    in.u.ack.ids = NULL;
    in.u.ack.rows_rejected = INT64_MIN;
    round_trip(&in, &out);
    T_INT(out.u.ack.n_ids, ==, 0);
    T_INT(out.u.ack.rows_rejected, ==, INT64_MIN);
    tds_msg_clear(&out);
}

static void test_rows_builder(void)
{
    struct tds_msg in, out;
    build_rows(&in, 1000);
    check_rows(&in, 1000);
    T_TRUE(in.u.rows.sets[0].cap_rows >= 1000);
    round_trip(&in, &out);
    check_rows(&out, 1000);
    /* a decoded message can be extended by the builders */
    struct tds_bytes v[5] = { { "a", 1 }, { "b", 1 }, { NULL, 0 }, { "d", 1 }, { "e", 1 } };
    T_INT(tds_msg_rowset_add_row(&out.u.rows.sets[0], v), ==, 0);
    T_INT(out.u.rows.sets[0].n_rows, ==, 1001);
    T_TRUE(tds_msg_rows_add_set(&out.u.rows, "t", TDS_ROWS_LIST, NULL, 0) != NULL);
    T_INT(tds_msg_rows_add_reject(&out.u.rows, NULL, NULL, "r", "x", 1), ==, 0);
    tds_msg_clear(&out);
    tds_msg_clear(&in);

    /* no sets, no rejects */
    struct tds_msg e = { .type = TDS_MSG_ROWS, .id = "r" };
    e.u.rows = (struct tds_msg_rows){ .org = "o", .origin = "p.x", .src = "ev-1",
                                      .mode = "webhook" };
    round_trip(&e, &out);
    T_NULL(out.u.rows.run);
    T_INT(out.u.rows.n_sets, ==, 0);
    T_INT(out.u.rows.n_rejects, ==, 0);
    tds_msg_clear(&out);
}

/* ---- truncation and trailing bytes ------------------------------------ */

static void check_prefixes(const struct tds_msg *in)
{
    char *buf;
    size_t len;
    T_INT(tds_msg_encode(in, &buf, &len), ==, 0);
    for (size_t n = 0; n < len; n++) {
        /* a fresh copy of exactly n bytes, so ASan sees any over-read */
        char *p = malloc(n ? n : 1);
        T_TRUE(p != NULL);
        memcpy(p, buf, n);
        struct tds_msg m;
        int rc = tds_msg_decode(p, n, &m);
        if (rc != TDS_MSG_E_MALFORMED)
            T_FAIL("prefix %zu of %zu of %s: got %d", n, len, tds_msg_type_name(in->type), rc);
        T_NULL(m.id);
        free(p);
    }
    char *longer = malloc(len + 1);
    T_TRUE(longer != NULL);
    memcpy(longer, buf, len);
    longer[len] = '\xc0';
    struct tds_msg m;
    T_INT(tds_msg_decode(longer, len + 1, &m), ==, TDS_MSG_E_MALFORMED);
    T_INT(tds_msg_decode(longer, len, &m), ==, 0);
    tds_msg_clear(&m);
    free(longer);
    free(buf);
}

static void test_truncated(void)
{
    struct tds_msg m = sample_event();
    check_prefixes(&m);
    m = sample_fetch();
    check_prefixes(&m);
    m = sample_page();
    check_prefixes(&m);
    m = sample_ack();
    check_prefixes(&m);
    build_rows(&m, 7);
    check_prefixes(&m);
    tds_msg_clear(&m);
}

/* ---- hand-packed frames ------------------------------------------------ */

/* Heap bytes in use at the peak of one decode, under AddressSanitizer (its
 * malloc hooks see msgpack-c's allocations too); -1 without it. */
#if defined(__SANITIZE_ADDRESS__)
/* from the sanitizer runtime (GCC ships no header for them) */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
size_t __sanitizer_get_allocated_size(const volatile void *p);

static bool counting;
static long long live, peak;

static void on_malloc(const volatile void *p, size_t n)
{
    (void)p;
    if (counting && (live += (long long)n) > peak)
        peak = live;
}

static void on_free(const volatile void *p)
{
    if (counting && p)
        live -= (long long)__sanitizer_get_allocated_size(p);
}
#endif

static long long decode_peak(const void *buf, size_t len, int *rc)
{
    struct tds_msg m;
#if defined(__SANITIZE_ADDRESS__)
    static bool hooked;
    if (!hooked)
        T_TRUE(__sanitizer_install_malloc_and_free_hooks(on_malloc, on_free) != 0);
    hooked = true;
    live = peak = 0;
    counting = true;
    *rc = tds_msg_decode(buf, len, &m);
    counting = false;
    tds_msg_clear(&m);
    return peak;
#else
    *rc = tds_msg_decode(buf, len, &m);
    tds_msg_clear(&m);
    return -1;
#endif
}

enum kind { K_STR, K_BIN, K_I64, K_BOOL, K_STRS, K_BINS, K_SETS, K_REJECTS };

struct key {
    const char *name;
    enum kind kind;
    bool required;
};

static const struct key event_keys[] = {
    { "org", K_STR, true }, { "entity", K_STR, true }, { "op", K_STR, false },
    { "origin", K_STR, true }, { "event_id", K_STR, false }, { "zoho_id", K_STR, false },
    { "received_ms", K_I64, false }, { "body", K_BIN, false },
};
static const struct key fetch_keys[] = {
    { "org", K_STR, true }, { "entity", K_STR, true }, { "zoho_id", K_STR, false },
    { "origin", K_STR, true },
};
static const struct key page_keys[] = {
    { "org", K_STR, true }, { "entity", K_STR, true }, { "run", K_STR, false },
    { "mode", K_STR, false }, { "origin", K_STR, true }, { "page", K_I64, false },
    { "fetched_ms", K_I64, false }, { "detail", K_BOOL, false }, { "final", K_BOOL, false },
    { "cursor", K_STR, false }, { "deleted_ids", K_STRS, false }, { "records", K_BINS, false },
    { "acks", K_STRS, false },
};
static const struct key rows_keys[] = {
    { "org", K_STR, true }, { "entity", K_STR, false }, { "origin", K_STR, true },
    { "src", K_STR, true }, { "run", K_STR, false }, { "mode", K_STR, false },
    { "page", K_I64, false }, { "received_ms", K_I64, false }, { "records_in", K_I64, false },
    { "final", K_BOOL, false }, { "cursor", K_STR, false }, { "sets", K_SETS, false },
    { "rejects", K_REJECTS, false }, { "acks", K_STRS, false },
};
static const struct key ack_keys[] = {
    { "origin", K_STR, true }, { "ids", K_STRS, true }, { "rows_written", K_I64, false },
    { "rows_rejected", K_I64, false },
};

struct type_keys {
    const char *t;
    const struct key *keys;
    size_t n;
};

static const struct type_keys all_types[] = {
    { "event", event_keys, sizeof(event_keys) / sizeof(event_keys[0]) },
    { "fetch", fetch_keys, sizeof(fetch_keys) / sizeof(fetch_keys[0]) },
    { "page", page_keys, sizeof(page_keys) / sizeof(page_keys[0]) },
    { "rows", rows_keys, sizeof(rows_keys) / sizeof(rows_keys[0]) },
    { "ack", ack_keys, sizeof(ack_keys) / sizeof(ack_keys[0]) },
};

static void pk_str(msgpack_packer *pk, const char *s)
{
    T_INT(msgpack_pack_str_with_body(pk, s, strlen(s)), ==, 0);
}

/* Variations of one frame: which key to drop, to corrupt, or to add. */
struct variant {
    int v;                  /* value of "v" */
    const char *t;          /* value of "t" */
    const char *drop;       /* key left out */
    const char *wrong;      /* key given a value of the wrong type */
    const char *nil;        /* key given nil */
    bool extra;             /* add unknown keys (scalar and nested) */
    bool dup;               /* repeat the first type key */
    int set_bad;            /* 1..: a specific defect inside sets/rejects */
};

static void pack_set(msgpack_packer *pk, int bad)
{
    int n = 4 + (bad == 8);
    msgpack_pack_map(pk, (size_t)(bad == 1 ? 3 : n));
    if (bad != 1) {
        pk_str(pk, "table");
        if (bad == 2)
            msgpack_pack_int(pk, 5);
        else
            pk_str(pk, "items");
    }
    pk_str(pk, "kind");
    if (bad == 3)
        pk_str(pk, "detail");
    else
        msgpack_pack_int(pk, bad == 4 ? 9 : TDS_ROWS_LIST);
    /* rows before cols on purpose: the decoder must not depend on key order */
    pk_str(pk, "rows");
    msgpack_pack_array(pk, 2);
    for (int r = 0; r < 2; r++) {
        msgpack_pack_array(pk, bad == 5 && r == 1 ? 1 : 2);
        pk_str(pk, "60001");
        if (!(bad == 5 && r == 1)) {
            if (bad == 6)
                msgpack_pack_int(pk, 7);
            else if (r)
                msgpack_pack_nil(pk);
            else
                msgpack_pack_bin_with_body(pk, "a\0b", 3); /* bin accepted */
        }
    }
    pk_str(pk, "cols");
    msgpack_pack_array(pk, 2);
    pk_str(pk, "org_id");
    if (bad == 7)
        msgpack_pack_int(pk, 1);
    else
        pk_str(pk, "item_id");
    if (bad == 8) {
        pk_str(pk, "later");
        msgpack_pack_map(pk, 1);
        pk_str(pk, "x");
        msgpack_pack_array(pk, 0);
    }
}

static void pack_reject(msgpack_packer *pk, int bad)
{
    msgpack_pack_map(pk, bad == 11 ? 3 : 4);
    pk_str(pk, "entity");
    pk_str(pk, "items");
    pk_str(pk, "zoho_id");
    msgpack_pack_nil(pk);
    if (bad != 11) {
        pk_str(pk, "reason");
        pk_str(pk, "bad rate");
    }
    pk_str(pk, "raw");
    if (bad == 12)
        msgpack_pack_int(pk, 1);
    else
        pk_str(pk, "{}"); /* str accepted where bin is expected */
}

static void pack_value(msgpack_packer *pk, enum kind k, bool wrong, int set_bad)
{
    switch (k) {
    case K_STR:
        if (wrong)
            msgpack_pack_int(pk, 7);
        else
            msgpack_pack_bin_with_body(pk, "v", 1); /* bin accepted where str is expected */
        break;
    case K_BIN:
        if (wrong)
            msgpack_pack_true(pk);
        else
            msgpack_pack_bin_with_body(pk, "{\0}", 3);
        break;
    case K_I64:
        if (wrong)
            pk_str(pk, "7");
        else
            msgpack_pack_int64(pk, -7);
        break;
    case K_BOOL:
        if (wrong)
            msgpack_pack_int(pk, 1);
        else
            msgpack_pack_true(pk);
        break;
    case K_STRS:
        msgpack_pack_array(pk, 2);
        pk_str(pk, "a");
        if (wrong)
            msgpack_pack_map(pk, 0);
        else
            pk_str(pk, "b");
        break;
    case K_BINS:
        if (wrong) {
            pk_str(pk, "not an array");
            break;
        }
        msgpack_pack_array(pk, 1);
        msgpack_pack_bin_with_body(pk, "{}", 2);
        break;
    case K_SETS:
        if (wrong) {
            msgpack_pack_array(pk, 1);
            msgpack_pack_int(pk, 1);
            break;
        }
        msgpack_pack_array(pk, 2);
        pack_set(pk, 0);
        pack_set(pk, set_bad < 10 ? set_bad : 0);
        break;
    case K_REJECTS:
        if (wrong) {
            msgpack_pack_map(pk, 0);
            break;
        }
        msgpack_pack_array(pk, 1);
        pack_reject(pk, set_bad);
        break;
    }
}

static bool is(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static int decode_variant(const struct type_keys *tk, const struct variant *var)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);

    size_t n = 3 + tk->n;
    for (size_t i = 0; i < tk->n; i++)
        n -= is(tk->keys[i].name, var->drop);
    n -= is("v", var->drop) + is("t", var->drop) + is("id", var->drop);
    n += var->extra ? 2 : 0;
    n += var->dup;
    msgpack_pack_map(&pk, n);
    if (var->extra) {
        pk_str(&pk, "zz_future");
        msgpack_pack_double(&pk, 1.5);
    }
    if (!is("id", var->drop)) {
        pk_str(&pk, "id");
        if (is("id", var->wrong))
            msgpack_pack_int(&pk, 3);
        else if (is("id", var->nil))
            msgpack_pack_nil(&pk);
        else
            pk_str(&pk, "m-1");
    }
    for (size_t i = 0; i < tk->n; i++) {
        const struct key *k = &tk->keys[i];
        if (is(k->name, var->drop))
            continue;
        pk_str(&pk, k->name);
        if (is(k->name, var->nil))
            msgpack_pack_nil(&pk);
        else
            pack_value(&pk, k->kind, is(k->name, var->wrong), var->set_bad);
    }
    if (var->dup) {
        pk_str(&pk, tk->keys[0].name);
        pack_value(&pk, tk->keys[0].kind, false, 0);
    }
    /* v and t last: the decoder must find them wherever they are */
    if (!is("t", var->drop)) {
        pk_str(&pk, "t");
        if (is("t", var->wrong))
            msgpack_pack_int(&pk, 1);
        else
            pk_str(&pk, var->t ? var->t : tk->t);
    }
    if (!is("v", var->drop)) {
        pk_str(&pk, "v");
        if (is("v", var->wrong))
            pk_str(&pk, "1");
        else
            msgpack_pack_int(&pk, var->v ? var->v : 1);
    }
    if (var->extra) {
        pk_str(&pk, "zz_nested");
        msgpack_pack_array(&pk, 2);
        msgpack_pack_map(&pk, 1);
        msgpack_pack_int(&pk, 1); /* non-string key inside an unknown value: fine */
        msgpack_pack_nil(&pk);
        msgpack_pack_ext_with_body(&pk, "xyz", 3, 5);
    }

    struct tds_msg m;
    int rc = tds_msg_decode(sb.data, sb.size, &m);
    if (rc == 0) {
        /* whatever decodes must encode again */
        char *out;
        size_t len;
        T_INT(tds_msg_encode(&m, &out, &len), ==, 0);
        free(out);
    } else {
        T_NULL(m.id);
    }
    tds_msg_clear(&m);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void test_wrong_types(void)
{
    for (size_t t = 0; t < sizeof(all_types) / sizeof(all_types[0]); t++) {
        const struct type_keys *tk = &all_types[t];
        struct variant ok = { 0 };
        if (decode_variant(tk, &ok) != 0)
            T_FAIL("valid %s does not decode", tk->t);
        struct variant extra = { .extra = true };
        T_INT(decode_variant(tk, &extra), ==, 0);
        struct variant dup = { .dup = true };
        T_INT(decode_variant(tk, &dup), ==, TDS_MSG_E_MALFORMED);
        const char *head[] = { "v", "t", "id" };
        for (int h = 0; h < 3; h++) {
            struct variant d = { .drop = head[h] }, w = { .wrong = head[h] };
            T_INT(decode_variant(tk, &d), ==, TDS_MSG_E_MALFORMED);
            T_INT(decode_variant(tk, &w), ==, TDS_MSG_E_MALFORMED);
        }
        struct variant idnil = { .nil = "id" };
        T_INT(decode_variant(tk, &idnil), ==, TDS_MSG_E_MALFORMED);
        for (size_t i = 0; i < tk->n; i++) {
            const struct key *k = &tk->keys[i];
            struct variant w = { .wrong = k->name };
            int rc = decode_variant(tk, &w);
            if (rc != TDS_MSG_E_MALFORMED)
                T_FAIL("%s.%s of the wrong type: got %d", tk->t, k->name, rc);
            struct variant d = { .drop = k->name }, nl = { .nil = k->name };
            int want = k->required ? TDS_MSG_E_MALFORMED : 0;
            rc = decode_variant(tk, &d);
            if (rc != want)
                T_FAIL("%s without %s: got %d", tk->t, k->name, rc);
            rc = decode_variant(tk, &nl);
            if (rc != want)
                T_FAIL("%s with %s nil: got %d", tk->t, k->name, rc);
        }
    }
    /* defects inside a rowset or a reject */
    const struct type_keys *rows = &all_types[3];
    for (int bad = 1; bad <= 12; bad++) {
        if (bad == 9 || bad == 10)
            continue;
        struct variant v = { .set_bad = bad };
        int rc = decode_variant(rows, &v);
        int want = bad == 8 ? 0 : TDS_MSG_E_MALFORMED; /* 8: unknown nested key */
        if (rc != want)
            T_FAIL("rows with set/reject defect %d: got %d", bad, rc);
    }
}

static void test_version_and_type(void)
{
    struct variant v2 = { .v = 2 }, v0 = { .v = -1 }, t = { .t = "telegram" };
    struct variant both = { .v = 7, .t = "whatever" };
    for (size_t i = 0; i < sizeof(all_types) / sizeof(all_types[0]); i++) {
        T_INT(decode_variant(&all_types[i], &v2), ==, TDS_MSG_E_VERSION);
        T_INT(decode_variant(&all_types[i], &v0), ==, TDS_MSG_E_MALFORMED);
        T_INT(decode_variant(&all_types[i], &t), ==, TDS_MSG_E_TYPE);
        T_INT(decode_variant(&all_types[i], &both), ==, TDS_MSG_E_VERSION);
    }
    /* a type's keys under another type's name: required keys missing */
    struct type_keys fetch_as_ack = all_types[1];
    fetch_as_ack.t = "ack";
    struct variant ok = { 0 };
    T_INT(decode_variant(&fetch_as_ack, &ok), ==, TDS_MSG_E_MALFORMED);

    T_STR(tds_msg_type_name(TDS_MSG_ROWS), "rows");
    T_STR(tds_msg_type_name((enum tds_msg_type)99), "unknown");
    T_STR(tds_msg_strerror(TDS_MSG_E_VERSION), "message version newer than supported");
    T_TRUE(strlen(tds_msg_strerror(-ENOMEM)) > 0);
}

/* Pack the head of a fetch message, leaving room for one more key. */
static void pack_fetch_head(msgpack_packer *pk, size_t extra)
{
    msgpack_pack_map(pk, 6 + extra);
    pk_str(pk, "v");
    msgpack_pack_int(pk, 1);
    pk_str(pk, "t");
    pk_str(pk, "fetch");
    pk_str(pk, "id");
    pk_str(pk, "f-1");
    pk_str(pk, "org");
    pk_str(pk, "o");
    pk_str(pk, "entity");
    pk_str(pk, "items");
    pk_str(pk, "origin");
    pk_str(pk, "x.y");
}

static int decode_sb(msgpack_sbuffer *sb)
{
    struct tds_msg m;
    int rc = tds_msg_decode(sb->data, sb->size, &m);
    tds_msg_clear(&m);
    msgpack_sbuffer_clear(sb);
    return rc;
}

/* A fetch whose unknown key "pad" holds arrays of nils, so that the frame
 * declares `total` elements in all (the root map's 7 keys and values, the
 * arrays, the nils). */
static void pack_nils(msgpack_packer *pk, size_t total)
{
    size_t left = total - 14;
    size_t arrays = (left + TDS_MSG_MAX_ARRAY) / (TDS_MSG_MAX_ARRAY + 1);
    size_t nils = left - arrays;

    pack_fetch_head(pk, 1);
    pk_str(pk, "pad");
    msgpack_pack_array(pk, arrays);
    for (size_t a = 0; a < arrays; a++) {
        size_t n = nils < TDS_MSG_MAX_ARRAY ? nils : TDS_MSG_MAX_ARRAY;
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++)
            msgpack_pack_nil(pk);
        nils -= n;
    }
    T_INT(nils, ==, 0);
}

/* Each element becomes a 24-byte object, however short its encoding: a frame
 * of nils is refused by the scan, before msgpack-c builds anything. */
static void test_element_limit(void)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    long long cost;
    int rc;

    /* at the limit: decoded, and the measurement sees what that costs */
    pack_nils(&pk, TDS_MSG_MAX_ELEMENTS);
    cost = decode_peak(sb.data, sb.size, &rc);
    T_INT(rc, ==, 0);
    if (cost >= 0)
        T_INT(cost, >, 20 * (long long)TDS_MSG_MAX_ELEMENTS);
    fprintf(stderr, "  %u elements in %zu bytes: decoded, peak %lld bytes\n",
            TDS_MSG_MAX_ELEMENTS, sb.size, cost);
    msgpack_sbuffer_clear(&sb);

    /* one more, and 8 MiB of nils: refused, having allocated next to nothing */
    size_t hostile[] = { TDS_MSG_MAX_ELEMENTS + 1, 8u * 1024 * 1024 };
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        pack_nils(&pk, hostile[i]);
        cost = decode_peak(sb.data, sb.size, &rc);
        T_INT(rc, ==, TDS_MSG_E_TOO_LARGE);
        if (cost >= 0)
            T_INT(cost, <, 64 * 1024);
        fprintf(stderr, "  %zu elements in %zu bytes: refused, peak %lld bytes\n", hostile[i],
                sb.size, cost);
        msgpack_sbuffer_clear(&sb);
    }
    msgpack_sbuffer_destroy(&sb);

    /* The encoder refuses what a reader would: narrow rows, within the byte
     * and row limits, that add up to more elements. */
    static const char *const cols[] = { "a", "b", "c", "d", "e", "f", "g", "h", "i", "j" };
    struct tds_bytes nulls[10] = { { NULL, 0 } };
    for (size_t rows = 80000; rows <= 100000; rows += 20000) {
        struct tds_msg m;
        char *out = NULL;
        size_t len = 0;
        memset(&m, 0, sizeof(m));
        m.type = TDS_MSG_ROWS;
        m.id = strdup("rows-narrow");
        m.u.rows.org = strdup("1");
        m.u.rows.origin = strdup("p.1");
        m.u.rows.src = strdup("pg-1");
        T_TRUE(m.id && m.u.rows.org && m.u.rows.origin && m.u.rows.src);
        /* two tables, each under TDS_MSG_MAX_ARRAY rows */
        for (int t = 0; t < 2; t++) {
            struct tds_msg_rowset *s = tds_msg_rows_add_set(&m.u.rows, t ? "b" : "a",
                                                            TDS_ROWS_DETAIL, cols, 10);
            T_TRUE(s != NULL);
            for (size_t r = 0; r < rows / 2; r++)
                T_INT(tds_msg_rowset_add_row(s, nulls), ==, 0);
        }
        /* 11 elements a row: 880,000 fit, 1.1 million do not */
        rc = tds_msg_encode(&m, &out, &len);
        T_INT(rc, ==, rows * 11 > TDS_MSG_MAX_ELEMENTS ? TDS_MSG_E_TOO_LARGE : 0);
        if (rc == 0) {
            struct tds_msg back;
            T_INT(tds_msg_decode(out, len, &back), ==, 0);
            T_INT(back.u.rows.sets[1].n_rows, ==, rows / 2);
            tds_msg_clear(&back);
        }
        free(out);
        tds_msg_clear(&m);
    }
}

static void test_limits(void)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);

    /* an array just over the limit, every element present */
    for (unsigned n = TDS_MSG_MAX_ARRAY; n <= TDS_MSG_MAX_ARRAY + 1; n++) {
        msgpack_pack_map(&pk, 5);
        pk_str(&pk, "v");
        msgpack_pack_int(&pk, 1);
        pk_str(&pk, "t");
        pk_str(&pk, "ack");
        pk_str(&pk, "id");
        pk_str(&pk, "a-1");
        pk_str(&pk, "origin");
        pk_str(&pk, "w.1");
        pk_str(&pk, "ids");
        msgpack_pack_array(&pk, n);
        for (unsigned i = 0; i < n; i++)
            pk_str(&pk, "i");
        T_INT(decode_sb(&sb), ==, n > TDS_MSG_MAX_ARRAY ? TDS_MSG_E_TOO_LARGE : 0);
    }

    /* a string just over the limit, in a known and in an unknown key */
    size_t big = TDS_MSG_MAX_STR + 1;
    char *s = malloc(big);
    T_TRUE(s != NULL);
    memset(s, 'a', big);
    for (int known = 0; known < 2; known++) {
        for (size_t n = big - 1; n <= big; n++) {
            pack_fetch_head(&pk, 1);
            pk_str(&pk, known ? "zoho_id" : "unknown");
            msgpack_pack_str_with_body(&pk, s, n);
            T_INT(decode_sb(&sb), ==, n > TDS_MSG_MAX_STR ? TDS_MSG_E_TOO_LARGE : 0);
        }
    }
    pack_fetch_head(&pk, 1);
    pk_str(&pk, "unknown");
    msgpack_pack_bin_with_body(&pk, s, big);
    T_INT(decode_sb(&sb), ==, TDS_MSG_E_TOO_LARGE);

    /* a map over the limit */
    pack_fetch_head(&pk, TDS_MSG_MAX_MAP);
    for (unsigned i = 0; i < TDS_MSG_MAX_MAP; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%u", i);
        pk_str(&pk, k);
        msgpack_pack_nil(&pk);
    }
    T_INT(decode_sb(&sb), ==, TDS_MSG_E_TOO_LARGE);

    /* declared sizes far beyond the bytes present: refused before any allocation */
    static const unsigned char arr32[] = { 0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff };
    static const unsigned char arr_lie[] = { 0x81, 0xa1, 'x', 0xdd, 0x00, 0x01, 0x86, 0xa0, 0xc0 };
    static const unsigned char map32[] = { 0xdf, 0xff, 0xff, 0xff, 0xff };
    static const unsigned char str32[] = { 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a' };
    static const unsigned char bin_lie[] = { 0x81, 0xa1, 'x', 0xc6, 0x00, 0x00, 0x10, 0x00, 'a' };
    static const unsigned char never[] = { 0xc1 };
    struct tds_msg m;
    T_INT(tds_msg_decode(arr32, sizeof(arr32), &m), ==, TDS_MSG_E_TOO_LARGE);
    T_INT(tds_msg_decode(arr_lie, sizeof(arr_lie), &m), ==, TDS_MSG_E_MALFORMED);
    T_INT(tds_msg_decode(map32, sizeof(map32), &m), ==, TDS_MSG_E_TOO_LARGE);
    T_INT(tds_msg_decode(str32, sizeof(str32), &m), ==, TDS_MSG_E_TOO_LARGE);
    T_INT(tds_msg_decode(bin_lie, sizeof(bin_lie), &m), ==, TDS_MSG_E_MALFORMED);
    T_INT(tds_msg_decode(never, sizeof(never), &m), ==, TDS_MSG_E_MALFORMED);
    T_INT(tds_msg_decode(NULL, 0, &m), ==, TDS_MSG_E_MALFORMED);
    T_INT(tds_msg_decode("", 0, &m), ==, TDS_MSG_E_MALFORMED);
    T_INT(tds_msg_decode("\x93\x01\x02\x03", 4, &m), ==, TDS_MSG_E_MALFORMED); /* not a map */

    /* nesting: deep arrays in an unknown key */
    pack_fetch_head(&pk, 1);
    pk_str(&pk, "deep");
    for (int i = 0; i < 40; i++)
        msgpack_pack_array(&pk, 1);
    msgpack_pack_nil(&pk);
    T_INT(decode_sb(&sb), ==, TDS_MSG_E_MALFORMED);

    /* a frame over TDS_MSG_MAX_FRAME is refused on its length alone */
    char *huge = calloc(1, (size_t)TDS_MSG_MAX_FRAME + 1);
    T_TRUE(huge != NULL);
    T_INT(tds_msg_decode(huge, (size_t)TDS_MSG_MAX_FRAME + 1, &m), ==, TDS_MSG_E_TOO_LARGE);
    free(huge);

    /* integers: above INT64_MAX is refused, a float is not an integer */
    msgpack_pack_map(&pk, 5);
    pk_str(&pk, "v");
    msgpack_pack_int(&pk, 1);
    pk_str(&pk, "t");
    pk_str(&pk, "ack");
    pk_str(&pk, "id");
    pk_str(&pk, "a");
    pk_str(&pk, "origin");
    pk_str(&pk, "w");
    pk_str(&pk, "ids");
    msgpack_pack_array(&pk, 0);
    size_t base = sb.size;
    for (int i = 0; i < 3; i++) {
        sb.data[0] = (char)0x86;
        sb.size = base;
        pk_str(&pk, "rows_written");
        if (i == 0)
            msgpack_pack_uint64(&pk, (uint64_t)INT64_MAX + 1);
        else if (i == 1)
            msgpack_pack_double(&pk, 1.0);
        else
            msgpack_pack_uint64(&pk, (uint64_t)INT64_MAX);
        T_INT(tds_msg_decode(sb.data, sb.size, &m), ==, i == 2 ? 0 : TDS_MSG_E_MALFORMED);
        if (i == 2)
            T_INT(m.u.ack.rows_written, ==, INT64_MAX);
        tds_msg_clear(&m);
    }
    msgpack_sbuffer_clear(&sb);

    /* a NUL inside a text field that becomes a C string */
    pack_fetch_head(&pk, 1);
    pk_str(&pk, "zoho_id");
    msgpack_pack_str_with_body(&pk, "12\0" "34", 5);
    T_INT(decode_sb(&sb), ==, TDS_MSG_E_MALFORMED);

    msgpack_sbuffer_destroy(&sb);

    /* the encoder refuses what the decoder would refuse */
    char **many = calloc(TDS_MSG_MAX_ARRAY + 1, sizeof(*many));
    T_TRUE(many != NULL);
    for (size_t i = 0; i <= TDS_MSG_MAX_ARRAY; i++)
        many[i] = "i";
    struct tds_msg a = sample_ack();
    a.u.ack.ids = many;
    a.u.ack.n_ids = TDS_MSG_MAX_ARRAY + 1;
    char *out = (char *)1;
    size_t len = 1;
    T_INT(tds_msg_encode(&a, &out, &len), ==, TDS_MSG_E_TOO_LARGE);
    T_NULL(out);
    T_INT(len, ==, 0);
    a.u.ack.n_ids = TDS_MSG_MAX_ARRAY;
    T_INT(tds_msg_encode(&a, &out, &len), ==, 0);
    T_INT(tds_msg_decode(out, len, &m), ==, 0);
    T_INT(m.u.ack.n_ids, ==, TDS_MSG_MAX_ARRAY);
    tds_msg_clear(&m);
    free(out);
    free(many);

    struct tds_msg e = sample_event();
    e.u.event.body = (struct tds_bytes){ s, big };
    T_INT(tds_msg_encode(&e, &out, &len), ==, TDS_MSG_E_TOO_LARGE);
    /* four bodies of 16 MiB each fit the string limit but not the frame */
    struct tds_bytes recs[4] = { { s, big - 1 }, { s, big - 1 }, { s, big - 1 }, { s, big - 1 } };
    struct tds_msg p = sample_page();
    p.u.page.records = recs;
    p.u.page.n_records = 4;
    T_INT(tds_msg_encode(&p, &out, &len), ==, TDS_MSG_E_TOO_LARGE);
    p.u.page.n_records = 3;
    T_INT(tds_msg_encode(&p, &out, &len), ==, 0);
    T_INT(tds_msg_decode(out, len, &m), ==, 0);
    T_INT(m.u.page.records[2].n, ==, big - 1);
    tds_msg_clear(&m);
    free(out);
    free(s);

    /* missing required fields and bad kinds refuse to encode */
    e = sample_event();
    e.u.event.org = NULL;
    T_INT(tds_msg_encode(&e, &out, &len), ==, TDS_MSG_E_MALFORMED);
    e = sample_event();
    e.id = NULL;
    T_INT(tds_msg_encode(&e, &out, &len), ==, TDS_MSG_E_MALFORMED);
    e = sample_event();
    e.type = (enum tds_msg_type)0;
    T_INT(tds_msg_encode(&e, &out, &len), ==, TDS_MSG_E_MALFORMED);
    struct tds_msg r;
    build_rows(&r, 2);
    r.u.rows.sets[1].kind = (enum tds_rowset_kind)7;
    T_INT(tds_msg_encode(&r, &out, &len), ==, TDS_MSG_E_MALFORMED);
    r.u.rows.sets[1].kind = TDS_ROWS_CHILD;
    free(r.u.rows.rejects[0].reason);
    r.u.rows.rejects[0].reason = NULL;
    T_INT(tds_msg_encode(&r, &out, &len), ==, TDS_MSG_E_MALFORMED);
    tds_msg_clear(&r);
}

/* ---- timing (printed, never asserted) --------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void test_timing_200x45(void)
{
    enum { ROWS = 200, COLS = 45, ROUNDS = 200 };
    struct tds_msg m = { .type = TDS_MSG_ROWS };
    m.id = strdup("rows-bench");
    m.u.rows.org = strdup("60001");
    m.u.rows.origin = strdup("fetcher.pod-0");
    m.u.rows.src = strdup("pg-1");
    T_TRUE(m.id && m.u.rows.org && m.u.rows.origin && m.u.rows.src);
    const char *cols[COLS];
    char names[COLS][24];
    for (int c = 0; c < COLS; c++) {
        snprintf(names[c], sizeof(names[c]), "column_%d", c);
        cols[c] = names[c];
    }
    int64_t t0 = now_ns();
    struct tds_msg_rowset *s = NULL;
    for (int round = 0; round < ROUNDS; round++) {
        if (round) {
            tds_msg_clear(&m);
            /* rebuild only what the builders own */
            m.type = TDS_MSG_ROWS;
            m.id = strdup("rows-bench");
            m.u.rows.org = strdup("60001");
            m.u.rows.origin = strdup("fetcher.pod-0");
            m.u.rows.src = strdup("pg-1");
        }
        s = tds_msg_rows_add_set(&m.u.rows, "items", TDS_ROWS_DETAIL, cols, COLS);
        T_TRUE(s != NULL);
        struct tds_bytes v[COLS];
        char txt[COLS][32];
        for (int r = 0; r < ROWS; r++) {
            for (int c = 0; c < COLS; c++) {
                int n = snprintf(txt[c], sizeof(txt[c]), "value-%d-%d", r, c);
                v[c] = (c % 7 == 6) ? (struct tds_bytes){ NULL, 0 }
                                    : (struct tds_bytes){ txt[c], (size_t)n };
            }
            T_INT(tds_msg_rowset_add_row(s, v), ==, 0);
        }
    }
    int64_t t_build = (now_ns() - t0) / ROUNDS;

    char *buf = NULL;
    size_t len = 0;
    t0 = now_ns();
    for (int round = 0; round < ROUNDS; round++) {
        free(buf);
        T_INT(tds_msg_encode(&m, &buf, &len), ==, 0);
    }
    int64_t t_enc = (now_ns() - t0) / ROUNDS;
    struct tds_msg d;
    t0 = now_ns();
    for (int round = 0; round < ROUNDS; round++) {
        T_INT(tds_msg_decode(buf, len, &d), ==, 0);
        if (round < ROUNDS - 1)
            tds_msg_clear(&d);
    }
    int64_t t_dec = (now_ns() - t0) / ROUNDS;
    T_INT(d.u.rows.sets[0].n_rows, ==, ROWS);
    T_TRUE(bytes_eq(d.u.rows.sets[0].vals[199 * COLS + 44], "value-199-44", 12));
    T_NULL(d.u.rows.sets[0].vals[199 * COLS + 41].p);
    fprintf(stderr, "timing rows %dx%d (%zu bytes): build %.1f us, encode %.1f us, decode %.1f us\n",
            ROWS, COLS, len, t_build / 1e3, t_enc / 1e3, t_dec / 1e3);
    tds_msg_clear(&d);
    tds_msg_clear(&m);
    free(buf);
}

/* ---- seed corpus for the fuzzer --------------------------------------- */

static int write_file(const char *dir, const char *name, const struct tds_msg *m)
{
    char path[4096];
    char *buf;
    size_t len;
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
        return 1;
    T_INT(tds_msg_encode(m, &buf, &len), ==, 0);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        free(buf);
        return 1;
    }
    int bad = fwrite(buf, 1, len, f) != len;
    bad |= fclose(f) != 0;
    free(buf);
    return bad;
}

static int write_corpus(const char *dir)
{
    struct tds_msg m;
    int bad = 0;
    m = sample_event();
    bad |= write_file(dir, "event.mp", &m);
    m = sample_fetch();
    bad |= write_file(dir, "fetch.mp", &m);
    m = sample_page();
    bad |= write_file(dir, "page.mp", &m);
    m = sample_ack();
    bad |= write_file(dir, "ack.mp", &m);
    build_rows(&m, 3);
    bad |= write_file(dir, "rows.mp", &m);
    tds_msg_clear(&m);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
        return write_corpus(argv[2]);
    T_RUN(test_event);
    T_RUN(test_fetch);
    T_RUN(test_page);
    T_RUN(test_ack);
    T_RUN(test_rows_builder);
    T_RUN(test_truncated);
    T_RUN(test_wrong_types);
    T_RUN(test_version_and_type);
    T_RUN(test_limits);
    T_RUN(test_element_limit);
    T_RUN(test_timing_200x45);
    return 0;
}
