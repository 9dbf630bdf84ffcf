/* test_batch — arrival checks, record grouping and rejecting records, as the
 * writer's batch splitting relies on them. Messages are built with common/msg's
 * builders and encoded, so the writer sees what a processor would send. */
#include "../../assert.h"
#include "batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* calloc failures on demand: this test is linked with --wrap=calloc
 * (meson.build). fail_in = k makes the k-th call from now fail. */
static long fail_in;
void *__real_calloc(size_t n, size_t size);

void *__wrap_calloc(size_t n, size_t size)
{
    return fail_in > 0 && --fail_in == 0 ? NULL : __real_calloc(n, size);
}

static const char *const item_cols[] = {"org_id", "item_id", "modified_time", "raw",
                                        "content_hash", "is_detail", "name"};
static const char *const stock_cols[] = {"org_id", "item_id", "warehouse_id", "stock_on_hand"};

static struct tds_bytes B(const char *s)
{
    return (struct tds_bytes){(char *)s, s ? strlen(s) : 0};
}

static void add_item(struct tds_msg_rowset *s, const char *id, const char *name)
{
    char raw[64];
    struct tds_bytes v[7];

    snprintf(raw, sizeof(raw), "{\"item_id\":\"%s\"}", id);
    v[0] = B("1"); v[1] = B(id); v[2] = B("2026-01-05T10:00:00+0300"); v[3] = B(raw);
    v[4] = B("h"); v[5] = B("true"); v[6] = B(name);
    T_INT(tds_msg_rowset_add_row(s, v), ==, 0);
}

static void add_stock(struct tds_msg_rowset *s, const char *id, const char *wh)
{
    struct tds_bytes v[4] = {B("1"), B(id), B(wh), B("3")};

    T_INT(tds_msg_rowset_add_row(s, v), ==, 0);
}

/* Encode m and take it as the writer does. */
static struct tds_bmsg *take(struct tds_msg *m)
{
    struct tds_bmsg *bm = NULL;
    char *buf;
    size_t len;

    T_INT(tds_msg_encode(m, &buf, &len), ==, 0);
    T_INT(tds_bmsg_new(&bm, buf, len), ==, 0);
    free(buf);
    tds_msg_clear(m);
    return bm;
}

static void init_rows(struct tds_msg *m)
{
    memset(m, 0, sizeof(*m));
    m->type = TDS_MSG_ROWS;
    m->v = 1;
    m->id = strdup("rows-1");
    m->u.rows.org = strdup("1");
    m->u.rows.entity = strdup("items");
    m->u.rows.origin = strdup("fetcher.a");
    m->u.rows.src = strdup("page-1");
    m->u.rows.mode = strdup("full");
}

static void test_records_group_parent_and_children(void)
{
    struct tds_msg m;
    struct tds_msg_rowset *items, *stock;
    struct tds_bmsg *bm;
    uint32_t *recs;
    size_t n;

    init_rows(&m);
    items = tds_msg_rows_add_set(&m.u.rows, "items", TDS_ROWS_DETAIL, item_cols, 7);
    add_item(items, "20", "b");
    add_item(items, "10", "a");
    add_item(items, "30", "c");
    stock = tds_msg_rows_add_set(&m.u.rows, "item_stock", TDS_ROWS_CHILD, stock_cols, 4);
    add_stock(stock, "10", "w1");
    add_stock(stock, "30", "w1");
    add_stock(stock, "10", "w2");
    bm = take(&m);
    T_INT(bm->n_rows, ==, 6);
    T_INT(bm->n_recs, ==, 3);
    T_INT(bm->n_rej, ==, 0);
    /* Item 10 and its two stock rows are one record. */
    T_INT(bm->rec_of[0][1], ==, bm->rec_of[1][0]);
    T_INT(bm->rec_of[0][1], ==, bm->rec_of[1][2]);
    T_INT(bm->rec_of[0][2], ==, bm->rec_of[1][1]);
    T_TRUE(bm->rec_of[0][0] != bm->rec_of[0][1]);
    T_INT(tds_bmsg_records_written(bm), ==, 3);

    /* Rejecting item 10 takes its stock rows with it, nothing else. */
    T_INT(tds_bmsg_reject_record(bm, bm->rec_of[0][1], "invalid input syntax"), ==, 0);
    T_TRUE(!tds_bmsg_row_live(bm, 0, 1));
    T_TRUE(!tds_bmsg_row_live(bm, 1, 0));
    T_TRUE(!tds_bmsg_row_live(bm, 1, 2));
    T_TRUE(tds_bmsg_row_live(bm, 0, 0));
    T_TRUE(tds_bmsg_row_live(bm, 1, 1));
    T_INT(bm->n_rej, ==, 1);
    T_STR(bm->rej[0].entity, "items");
    T_STR(bm->rej[0].zoho_id, "10");
    T_STR(bm->rej[0].reason, "invalid input syntax");
    T_STR(bm->rej[0].raw, "{\"item_id\":\"10\"}");
    T_INT(tds_bmsg_records_written(bm), ==, 2);
    T_INT(tds_bmsg_live_records(bm, &recs, &n), ==, 0);
    T_INT(n, ==, 2);
    free(recs);

    /* A probe limits the live rows to chosen records. */
    bm->probe_in = calloc(bm->n_recs, 1);
    bm->probe_in[bm->rec_of[0][2]] = 1;
    T_TRUE(!tds_bmsg_row_live(bm, 0, 0));
    T_TRUE(tds_bmsg_row_live(bm, 0, 2));
    T_TRUE(tds_bmsg_row_live(bm, 1, 1));
    free(bm->probe_in);
    bm->probe_in = NULL;

    /* Out of memory while listing the live records: -ENOMEM, nothing
     * rejected. Before, it freed the unset list pointer (ASan: "attempting
     * free on address which was not malloc()-ed"), found by clang's
     * analyzer. */
    fail_in = 1;
    T_INT(tds_bmsg_reject_all(bm, "whole message"), ==, -ENOMEM);
    T_INT(fail_in, ==, 0);
    T_INT(bm->n_rej, ==, 1);

    T_INT(tds_bmsg_reject_all(bm, "whole message"), ==, 0);
    T_INT(bm->n_rej, ==, 3);
    T_INT(tds_bmsg_records_written(bm), ==, 0);
    tds_bmsg_free(bm);
}

static void test_sets_checked_on_arrival(void)
{
    static const char *const bad_cols[] = {"org_id", "item_id", "colour"};
    static const char *const odd_cols[] = {"org_id", "x"};
    struct tds_msg m;
    struct tds_msg_rowset *s;
    struct tds_bmsg *bm;
    struct tds_bytes v[3] = {B("1"), B("5"), B("red")};

    init_rows(&m);
    s = tds_msg_rows_add_set(&m.u.rows, "items", TDS_ROWS_DELETE, bad_cols, 3);
    T_INT(tds_msg_rowset_add_row(s, v), ==, 0);
    s = tds_msg_rows_add_set(&m.u.rows, "gadgets", TDS_ROWS_DETAIL, odd_cols, 2);
    T_INT(tds_msg_rowset_add_row(s, v), ==, 0);
    s = tds_msg_rows_add_set(&m.u.rows, "items", TDS_ROWS_DETAIL, item_cols, 7);
    add_item(s, "1", "fine");
    bm = take(&m);
    T_TRUE(bm->tables[0] == NULL);
    T_TRUE(bm->tables[1] == NULL);
    T_TRUE(bm->tables[2] != NULL);
    /* one reject per record, none for a set: the refused sets' rows are
     * records too (items 5, gadgets 5), and the refused items set takes the
     * message's other items with it (item 1) */
    T_INT(bm->n_recs, ==, 3);
    T_INT(bm->n_rej, ==, 3);
    T_STR(bm->rej[0].entity, "items");
    T_STR(bm->rej[0].zoho_id, "5");
    T_TRUE(strstr(bm->rej[0].reason, "not written: the message's items rows were refused "
                                     "(delete rows of items") == bm->rej[0].reason);
    T_STR(bm->rej[0].raw, "[{\"table\":\"items\",\"org_id\":\"1\",\"item_id\":\"5\","
                          "\"colour\":\"red\"}]");
    T_STR(bm->rej[1].entity, "items");
    T_STR(bm->rej[1].zoho_id, "1");
    T_STR(bm->rej[1].reason, bm->rej[0].reason);
    T_STR(bm->rej[1].raw, "{\"item_id\":\"1\"}");
    T_STR(bm->rej[2].entity, "gadgets");
    T_STR(bm->rej[2].zoho_id, "5");
    T_STR(bm->rej[2].reason, "not written: the message's gadgets rows were refused (unknown "
                             "table 'gadgets')");
    T_STR(bm->rej[2].raw, "[{\"table\":\"gadgets\",\"org_id\":\"1\",\"x\":\"5\"}]");
    T_TRUE(!tds_bmsg_row_live(bm, 0, 0));
    T_TRUE(!tds_bmsg_row_live(bm, 1, 0));
    T_TRUE(!tds_bmsg_row_live(bm, 2, 0));
    T_INT(tds_bmsg_records_written(bm), ==, 0);
    tds_bmsg_free(bm);
}

/* A top-level set refused on arrival (a newer processor adds a column during
 * a rolling deploy): each of its records is rejected on its own, with its id
 * and raw JSON, its child rows with it. Rows of a set that has no org_id and
 * id to group them by are a record each. */
static void test_a_refused_parent_set_rejects_each_record(void)
{
    static const char *const new_item_cols[] = {"org_id", "item_id", "modified_time", "raw",
                                                "content_hash", "is_detail", "name",
                                                "brand_new_col"};
    static const char *const gizmo_cols[] = {"a", "b"};
    static const char *const ids[] = {"10", "20", "30"};
    struct tds_msg m;
    struct tds_msg_rowset *items, *stock, *gizmos;
    struct tds_bmsg *bm;
    const char *why = "not written: the message's items rows were refused (unknown column "
                      "brand_new_col in items rows)";

    init_rows(&m);
    items = tds_msg_rows_add_set(&m.u.rows, "items", TDS_ROWS_DETAIL, new_item_cols, 8);
    for (size_t i = 0; i < 3; i++) {
        char raw[64];
        struct tds_bytes v[8];

        snprintf(raw, sizeof(raw), "{\"item_id\":\"%s\"}", ids[i]);
        v[0] = B("1"); v[1] = B(ids[i]); v[2] = B("2026-01-05T10:00:00+0300"); v[3] = B(raw);
        v[4] = B("h"); v[5] = B("true"); v[6] = B("n"); v[7] = B("new");
        T_INT(tds_msg_rowset_add_row(items, v), ==, 0);
    }
    stock = tds_msg_rows_add_set(&m.u.rows, "item_stock", TDS_ROWS_CHILD, stock_cols, 4);
    add_stock(stock, "30", "w1");
    add_stock(stock, "10", "w1");
    add_stock(stock, "10", "w2");
    gizmos = tds_msg_rows_add_set(&m.u.rows, "gizmos", TDS_ROWS_CHILD, gizmo_cols, 2);
    {
        struct tds_bytes g[2] = {B("x"), B("y")};

        T_INT(tds_msg_rowset_add_row(gizmos, g), ==, 0);
        T_INT(tds_msg_rowset_add_row(gizmos, g), ==, 0);
    }
    bm = take(&m);
    T_TRUE(bm->tables[0] == NULL);
    T_TRUE(bm->tables[1] != NULL);
    T_TRUE(bm->tables[2] == NULL);
    T_INT(bm->n_recs, ==, 5);
    T_INT(bm->n_rej, ==, 5);
    for (size_t i = 0; i < 3; i++) {
        char raw[64];

        snprintf(raw, sizeof(raw), "{\"item_id\":\"%s\"}", ids[i]);
        T_STR(bm->rej[i].entity, "items");
        T_STR(bm->rej[i].zoho_id, ids[i]);
        T_STR(bm->rej[i].reason, why);
        T_STR(bm->rej[i].raw, raw);
    }
    /* item 10's stock rows are its record's */
    T_INT(bm->rec_of[1][1], ==, bm->rec_of[0][0]);
    T_INT(bm->rec_of[1][2], ==, bm->rec_of[0][0]);
    T_INT(bm->rec_of[1][0], ==, bm->rec_of[0][2]);
    for (size_t r = 0; r < 3; r++)
        T_TRUE(!tds_bmsg_row_live(bm, 1, r));
    T_TRUE(bm->rec_of[2][0] != bm->rec_of[2][1]);
    for (size_t i = 3; i < 5; i++) {
        T_STR(bm->rej[i].entity, "gizmos");
        T_TRUE(bm->rej[i].zoho_id == NULL);
        T_STR(bm->rej[i].raw, "[{\"table\":\"gizmos\",\"a\":\"x\",\"b\":\"y\"}]");
    }
    T_INT(tds_bmsg_records_written(bm), ==, 0);
    tds_bmsg_free(bm);
}

/* A child set refused on arrival (a column the registry does not know, as a
 * newer processor sends during a rolling deploy) rejects its parents too:
 * written alone, a parent would lose its stored children for good. Other
 * families in the message are written. */
static void test_a_refused_child_set_rejects_its_family(void)
{
    static const char *const new_stock_cols[] = {"org_id", "item_id", "warehouse_id",
                                                 "stock_on_hand", "bin_location"};
    static const char *const contact_del[] = {"org_id", "contact_id"};
    struct tds_msg m;
    struct tds_msg_rowset *items, *stock, *contacts;
    struct tds_bytes sv[5] = {B("1"), B("10"), B("w1"), B("3"), B("A-1")};
    struct tds_bytes cv[2] = {B("1"), B("77")};
    struct tds_bmsg *bm;

    init_rows(&m);
    items = tds_msg_rows_add_set(&m.u.rows, "items", TDS_ROWS_DETAIL, item_cols, 7);
    add_item(items, "10", "a");
    add_item(items, "20", "b"); /* no stock rows of its own: rejected all the same */
    stock = tds_msg_rows_add_set(&m.u.rows, "item_stock", TDS_ROWS_CHILD, new_stock_cols, 5);
    T_INT(tds_msg_rowset_add_row(stock, sv), ==, 0);
    contacts = tds_msg_rows_add_set(&m.u.rows, "contacts", TDS_ROWS_DELETE, contact_del, 2);
    T_INT(tds_msg_rowset_add_row(contacts, cv), ==, 0);
    bm = take(&m);
    T_TRUE(bm->tables[1] == NULL);
    /* one reject per record: item 10 (its stock row is part of it) and 20 */
    T_INT(bm->n_rej, ==, 2);
    T_STR(bm->rej[0].entity, "items");
    T_TRUE(!tds_bmsg_row_live(bm, 0, 0));
    T_TRUE(!tds_bmsg_row_live(bm, 0, 1));
    T_STR(bm->rej[0].zoho_id, "10");
    T_STR(bm->rej[1].zoho_id, "20");
    T_STR(bm->rej[0].raw, "{\"item_id\":\"10\"}");
    T_STR(bm->rej[1].raw, "{\"item_id\":\"20\"}");
    T_STR(bm->rej[0].reason, "not written: the message's item_stock rows were refused "
                             "(unknown column bin_location in item_stock rows)");
    T_STR(bm->rej[1].reason, bm->rej[0].reason);
    T_TRUE(tds_bmsg_row_live(bm, 2, 0));
    T_INT(tds_bmsg_records_written(bm), ==, 1);
    tds_bmsg_free(bm);
}

static void test_dead_letters(void)
{
    struct tds_bmsg *bm;
    struct tds_msg m;
    char *buf;
    size_t len;

    T_INT(tds_bmsg_new(&bm, "\xc1garbage", 8), ==, 0);
    T_INT(bm->msg.type, ==, 0);
    T_INT(bm->n_rej, ==, 1);
    T_TRUE(strstr(bm->rej[0].reason, "undecodable rows message") != NULL);
    T_STR(bm->rej[0].raw, "c167617262616765");
    tds_bmsg_free(bm);

    memset(&m, 0, sizeof(m));
    m.type = TDS_MSG_FETCH;
    m.v = 1;
    m.id = strdup("f-1");
    m.u.fetch.org = strdup("1");
    m.u.fetch.entity = strdup("items");
    m.u.fetch.origin = strdup("ingress.a");
    T_INT(tds_msg_encode(&m, &buf, &len), ==, 0);
    tds_msg_clear(&m);
    T_INT(tds_bmsg_new(&bm, buf, len), ==, 0);
    free(buf);
    T_INT(bm->n_rej, ==, 1);
    T_TRUE(strstr(bm->rej[0].reason, "'fetch' message") != NULL);
    tds_bmsg_free(bm);
}

int main(void)
{
    T_RUN(test_records_group_parent_and_children);
    T_RUN(test_sets_checked_on_arrival);
    T_RUN(test_a_refused_child_set_rejects_its_family);
    T_RUN(test_a_refused_parent_set_rejects_each_record);
    T_RUN(test_dead_letters);
    return 0;
}
