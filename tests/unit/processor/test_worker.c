/* test_worker — page/event frames in, one rows frame out with the source's
 * envelope copied; dead letters for frames that are not usable. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include <stdio.h>
#include <string.h>

#include "assert.h"
#include "metrics.h"
#include "msg.h"
#include "util.h"
#include "worker.h"

static struct tds_worker *W;

/* Allocation failures on demand: this test is linked with --wrap for
 * malloc, calloc and realloc (meson.build), so the allocations of the
 * processor's and common's code come here. fail_in = k makes the k-th one
 * from now fail (and fail_in 0: it did); 0 fails none. */
static long fail_in;
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);

static bool fail_now(void)
{
    return fail_in > 0 && --fail_in == 0;
}

void *__wrap_malloc(size_t n)
{
    return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __real_realloc(p, n);
}

static void handle(const struct tds_msg *in, struct tds_msg *out)
{
    char *buf = NULL, *rows = NULL;
    size_t len = 0, rows_len = 0;
    T_INT(tds_msg_encode(in, &buf, &len), ==, 0);
    T_INT(tds_worker_handle(W, buf, len, &rows, &rows_len), ==, 0);
    T_TRUE(rows != NULL);
    T_INT(tds_msg_decode(rows, rows_len, out), ==, 0);
    T_INT(out->type, ==, TDS_MSG_ROWS);
    free(buf);
    free(rows);
}

/* in through a worker of its own with a metrics registry: its rows in out,
 * the worker's stats in st and the rendered metrics in *text (the caller
 * frees it). */
static void handle_counted(const struct tds_msg *in, struct tds_msg *out,
                           struct tds_worker_stats *st, char **text)
{
    struct tds_metrics *metrics = NULL;
    struct tds_worker *w = NULL;
    char *buf = NULL, *rows = NULL;
    size_t len = 0, rows_len = 0, text_len = 0;

    T_INT(tds_metrics_new(&metrics), ==, 0);
    T_INT(tds_worker_new(&w, metrics, "processor.test"), ==, 0);
    T_INT(tds_msg_encode(in, &buf, &len), ==, 0);
    T_INT(tds_worker_handle(w, buf, len, &rows, &rows_len), ==, 0);
    T_INT(tds_msg_decode(rows, rows_len, out), ==, 0);
    tds_worker_stats(w, st);
    T_INT(tds_metrics_render(metrics, text, &text_len), ==, 0);
    free(rows);
    free(buf);
    w = tds_worker_free(w);
    metrics = tds_metrics_free(metrics);
}

static void test_page(void)
{
    struct tds_msg in, out;
    struct tds_bytes recs[3] = {
        {"{\"item_id\":\"1\",\"name\":\"A\",\"last_modified_time\":\"2024-01-01T00:00:00+0000\"}", 0},
        {"{\"item_id\":\"2\",\"rate\":\"bad\"}", 0},
        {"{\"item_id\":\"3\",\"name\":\"C\",\"last_modified_time\":\"2024-01-01T00:00:00+0000\"}", 0},
    };
    char *deleted[] = {"4"};
    for (int i = 0; i < 3; i++)
        recs[i].n = strlen(recs[i].p);
    memset(&in, 0, sizeof(in));
    in.type = TDS_MSG_PAGE;
    in.v = TDS_MSG_VERSION;
    in.id = "pg-run1-3";
    in.u.page = (struct tds_msg_page){
        .org = "60001", .entity = "items", .run = "run1", .mode = "incremental",
        .origin = "fetcher.pod-1", .page = 3, .fetched_ms = 1700000000123, .detail = false,
        .final = false, .cursor = NULL, .deleted_ids = deleted, .n_deleted = 1,
        .records = recs, .n_records = 3};
    handle(&in, &out);
    const struct tds_msg_rows *r = &out.u.rows;
    T_STR(r->src, "pg-run1-3");
    T_STR(r->origin, "fetcher.pod-1");
    T_STR(r->org, "60001");
    T_STR(r->entity, "items");
    T_STR(r->run, "run1");
    T_STR(r->mode, "incremental");
    T_INT(r->page, ==, 3);
    T_INT(r->received_ms, ==, 1700000000123);
    T_INT(r->records_in, ==, 3);
    T_TRUE(!r->final);
    T_INT(r->n_rejects, ==, 1);
    T_STR(r->rejects[0].zoho_id, "2");
    T_INT(r->n_sets, ==, 2);
    T_STR(r->sets[0].table, "items");
    T_INT(r->sets[0].kind, ==, TDS_ROWS_LIST);
    T_INT(r->sets[0].n_rows, ==, 2);
    T_INT(r->sets[1].kind, ==, TDS_ROWS_DELETE);
    T_STR(r->sets[1].vals[1].p, "4");
    tds_msg_clear(&out);

    /* the final page: no records, the cursor travels on */
    in.id = "pg-run1-final";
    in.u.page.final = true;
    in.u.page.cursor = "2024-01-01T00:00:00+0000";
    in.u.page.n_records = 0;
    in.u.page.n_deleted = 0;
    handle(&in, &out);
    T_TRUE(out.u.rows.final);
    T_STR(out.u.rows.cursor, "2024-01-01T00:00:00+0000");
    T_INT(out.u.rows.n_sets, ==, 0);
    T_INT(out.u.rows.n_rejects, ==, 0);
    tds_msg_clear(&out);
}

/* An invoice "<prefix><i>" with `lines` line items; lines < 0: none, and a
 * total that is not a number (a reject of its own). The caller frees .p. */
static struct tds_bytes invoice(int prefix, int i, int lines)
{
    struct tds_buf b = {0};

    T_INT(tds_buf_addf(&b, "{\"invoice_id\":\"%d%d\",\"invoice_number\":\"INV-%d\","
                           "\"last_modified_time\":\"2024-01-01T00:00:00+0000\"", prefix, i, i),
          ==, 0);
    if (lines < 0) {
        T_INT(tds_buf_addf(&b, ",\"total\":\"abc\"}"), ==, 0);
    } else {
        T_INT(tds_buf_addf(&b, ",\"line_items\":["), ==, 0);
        for (int k = 0; k < lines; k++)
            T_INT(tds_buf_addf(&b, "%s{\"line_item_id\":\"%d%05d\"}", k ? "," : "", i + 1, k),
                  ==, 0);
        T_INT(tds_buf_add(&b, "]}", 2), ==, 0);
    }
    return (struct tds_bytes){b.p, b.len};
}

/* A page whose rows do not fit in one message (here: more line items than
 * TDS_MSG_MAX_ARRAY rows of one table) is not dropped: each record becomes a
 * reject saying why, with its id and the start of its JSON, and the page's
 * envelope goes on so that the writer acks it; its deletes still apply. */
static void test_oversize_page(void)
{
    enum { RECS = 3, LINES = 35000 };
    struct tds_bytes recs[RECS];
    char *deleted[] = {"95"};
    struct tds_msg in, out;

    for (int i = 0; i < RECS; i++) {
        recs[i] = invoice(90, i, LINES);
        T_TRUE(recs[i].n < 1024 * 1024); /* each record alone is fine */
    }
    memset(&in, 0, sizeof(in));
    in.type = TDS_MSG_PAGE;
    in.v = TDS_MSG_VERSION;
    in.id = "pg-run2-7";
    in.u.page = (struct tds_msg_page){
        .org = "60001", .entity = "invoices", .run = "run2", .mode = "full",
        .origin = "fetcher.pod-1", .page = 7, .fetched_ms = 1700000000123, .detail = true,
        .deleted_ids = deleted, .n_deleted = 1, .records = recs, .n_records = RECS};
    handle(&in, &out);
    const struct tds_msg_rows *r = &out.u.rows;
    T_STR(r->src, "pg-run2-7");
    T_STR(r->run, "run2");
    T_INT(r->page, ==, 7);
    T_INT(r->records_in, ==, RECS);
    T_INT(r->n_sets, ==, 1); /* the delete still applies */
    T_INT(r->sets[0].kind, ==, TDS_ROWS_DELETE);
    T_STR(r->sets[0].table, "invoices");
    T_STR(r->sets[0].vals[1].p, "95");
    T_INT(r->n_rejects, ==, RECS);
    for (int i = 0; i < RECS; i++) {
        char id[8];
        snprintf(id, sizeof(id), "90%d", i);
        T_STR(r->rejects[i].entity, "invoices");
        T_STR(r->rejects[i].zoho_id, id);
        T_TRUE(strncmp(r->rejects[i].reason, "page too large: the rows of its 3 records exceed "
                       "one message", 60) == 0);
        T_INT(r->rejects[i].raw.n, ==, 64 * 1024);
        T_TRUE(memcmp(r->rejects[i].raw.p, recs[i].p, 64 * 1024) == 0);
    }
    tds_msg_clear(&out);
    for (int i = 0; i < RECS; i++)
        free(recs[i].p);
}

/* A record rejected while the page was transformed is rejected again, as
 * part of the page too large: counted once, under the reason stored. */
static void test_oversize_page_counts_each_record_once(void)
{
    enum { RECS = 4, LINES = 35000 };
    struct tds_bytes recs[RECS];
    struct tds_worker_stats st;
    struct tds_msg in, out;
    char *text = NULL;

    for (int i = 0; i < RECS; i++)
        recs[i] = invoice(80, i, i == RECS - 1 ? -1 : LINES);
    memset(&in, 0, sizeof(in));
    in.type = TDS_MSG_PAGE;
    in.v = TDS_MSG_VERSION;
    in.id = "pg-run3-1";
    in.u.page = (struct tds_msg_page){
        .org = "60001", .entity = "invoices", .run = "run3", .mode = "full",
        .origin = "fetcher.pod-1", .page = 1, .detail = true, .records = recs, .n_records = RECS};
    handle_counted(&in, &out, &st, &text);
    T_INT(out.u.rows.n_rejects, ==, RECS);
    T_INT(st.rejects, ==, RECS);
    T_TRUE(strstr(text, "tds_processor_rejects_total{entity=\"invoices\",reason=\"page_too_large\"} 4\n")
           != NULL);
    T_NULL(strstr(text, "invalid_number"));
    free(text);
    tds_msg_clear(&out);
    for (int i = 0; i < RECS; i++)
        free(recs[i].p);
}

/* A webhook whose record makes more rows than one message holds (here a
 * contact with 120,000 addresses, over TDS_MSG_MAX_ARRAY rows of a table)
 * is rejected with the reason and the start of its body, not dropped: the
 * ingress would send it again forever, its journal held behind it. */
static void test_oversize_event(void)
{
    enum { ADDRS = 120000 };
    struct tds_buf b = {0};
    struct tds_msg in, out;

    /* a whole contact (processor/README.md), so a DETAIL with all its addresses */
    T_INT(tds_buf_addf(&b, "{\"contact\":{\"contact_id\":\"77\",\"contact_name\":\"\u0634\","
                           "\"contact_type\":\"customer\",\"status\":\"active\","
                           "\"last_modified_time\":\"2024-01-01T00:00:00+0000\","
                           "\"contact_persons\":[],\"billing_address\":{\"city\":\"\"},"
                           "\"shipping_address\":{\"city\":\"\"},\"addresses\":["), ==, 0);
    for (int k = 0; k < ADDRS; k++)
        T_INT(tds_buf_add(&b, k ? ",{}" : "{}", k ? 3 : 2), ==, 0);
    T_INT(tds_buf_add(&b, "]}}", 3), ==, 0);
    T_TRUE(b.len < 1024 * 1024); /* under the ingress's body limit */
    memset(&in, 0, sizeof(in));
    in.type = TDS_MSG_EVENT;
    in.v = TDS_MSG_VERSION;
    in.id = "ev-60001:big";
    in.u.event = (struct tds_msg_event){
        .org = "60001", .entity = "contacts", .op = "upsert", .origin = "ingress.pod-0",
        .event_id = "big", .zoho_id = "77", .received_ms = 42, .body = {b.p, b.len}};
    handle(&in, &out);
    const struct tds_msg_rows *r = &out.u.rows;
    T_STR(r->src, "ev-60001:big");
    T_STR(r->mode, "webhook");
    T_STR(r->origin, "ingress.pod-0");
    T_INT(r->records_in, ==, 1);
    T_INT(r->n_sets, ==, 0);
    T_INT(r->n_rejects, ==, 1);
    T_STR(r->rejects[0].entity, "contacts");
    T_STR(r->rejects[0].zoho_id, "77");
    T_TRUE(strncmp(r->rejects[0].reason, "record too large: its rows exceed one message (", 47) == 0);
    T_INT(r->rejects[0].raw.n, ==, 64 * 1024);
    T_TRUE(memcmp(r->rejects[0].raw.p, b.p, 64 * 1024) == 0);
    tds_msg_clear(&out);
    free(b.p);
}

static void test_event(void)
{
    struct tds_msg in, out;
    const char *body = "{\"invoice\":{\"invoice_id\":\"7\",\"invoice_number\":\"INV-7\","
                       "\"status\":\"sent\",\"customer_id\":\"5\",\"total\":\"10.00\","
                       "\"line_items\":[{\"line_item_id\":\"71\"}],"
                       "\"last_modified_time\":\"2024-01-01T00:00:00+0000\"}}";
    memset(&in, 0, sizeof(in));
    in.type = TDS_MSG_EVENT;
    in.v = TDS_MSG_VERSION;
    in.id = "ev-abc";
    in.u.event = (struct tds_msg_event){
        .org = "60001", .entity = "invoices", .op = "upsert", .origin = "ingress.pod-0",
        .event_id = "abc", .zoho_id = "7", .received_ms = 42,
        .body = {(char *)body, strlen(body)}};
    handle(&in, &out);
    T_STR(out.u.rows.src, "ev-abc");
    T_STR(out.u.rows.mode, "webhook");
    T_STR(out.u.rows.origin, "ingress.pod-0");
    T_NULL(out.u.rows.run);
    T_INT(out.u.rows.received_ms, ==, 42);
    T_INT(out.u.rows.records_in, ==, 1);
    T_INT(out.u.rows.n_sets, ==, 2);
    T_STR(out.u.rows.sets[0].table, "invoices");
    T_INT(out.u.rows.sets[0].kind, ==, TDS_ROWS_DETAIL);
    T_STR(out.u.rows.sets[1].table, "invoice_lines");
    tds_msg_clear(&out);

    in.u.event.op = "delete";
    in.u.event.body.n = 0;
    handle(&in, &out);
    T_INT(out.u.rows.n_sets, ==, 1);
    T_INT(out.u.rows.sets[0].kind, ==, TDS_ROWS_DELETE);
    T_STR(out.u.rows.sets[0].vals[1].p, "7");
    tds_msg_clear(&out);

    in.u.event.op = "upsert";
    in.u.event.entity = "widgets";
    in.u.event.body.n = strlen(body);
    handle(&in, &out);
    T_INT(out.u.rows.n_rejects, ==, 1);
    T_STR(out.u.rows.rejects[0].reason, "unknown entity 'widgets'");
    tds_msg_clear(&out);
}

static void dead(const void *frame, size_t len, const char *want_reason_prefix);

static const char *value_of(const struct tds_msg_rowset *set, const char *col)
{
    for (size_t c = 0; c < set->n_cols; c++)
        if (strcmp(set->cols[c], col) == 0)
            return set->vals[c].p;
    T_TRUE(!"no such column");
    return NULL;
}

/* Zoho's times are in the organization's time zone: a date-only one is
 * midnight there, as the message's tz says; a tz that is not an offset
 * makes the message a dead letter. */
static void test_date_only_times_are_the_organizations_midnight(void)
{
    struct tds_msg in, out;
    struct tds_bytes rec = {"{\"contact_id\":\"7\",\"contact_name\":\"X\","
                            "\"created_time\":\"2013-08-05\",\"last_modified_time\":\"2013-10-07\"}", 0};
    char *buf = NULL;
    size_t len = 0;

    rec.n = strlen(rec.p);
    memset(&in, 0, sizeof(in));
    in.type = TDS_MSG_PAGE;
    in.v = TDS_MSG_VERSION;
    in.id = "pg-tz-1";
    in.u.page = (struct tds_msg_page){
        .org = "60001", .entity = "contacts", .run = "run1", .mode = "full", .origin = "fetcher.pod-1",
        .page = 1, .records = &rec, .n_records = 1, .tz = "-0400"};
    handle(&in, &out);
    T_INT(out.u.rows.n_rejects, ==, 0);
    T_STR(value_of(&out.u.rows.sets[0], "created_time"), "2013-08-05 00:00:00-04:00");
    T_STR(value_of(&out.u.rows.sets[0], "modified_time"), "2013-10-07 00:00:00-04:00");
    tds_msg_clear(&out);

    in.u.page.tz = "+03:00";
    T_INT(tds_msg_encode(&in, &buf, &len), ==, 0);
    dead(buf, len, "dead letter: invalid tz '+03:00'");
    free(buf);
}

/* A page of an entity this build does not know: its records and its deleted
 * ids all become rejects, each counted in the metric and the stats, and the
 * deletes keep their id. */
static void test_unknown_entity_page(void)
{
    struct tds_worker_stats st;
    struct tds_msg in, out;
    struct tds_bytes recs[2] = {{"{\"widget_id\":\"1\"}", 0}, {"{\"widget_id\":\"2\"}", 0}};
    char *deleted[] = {"4600000000000000011", "4600000000000000012", "4600000000000000013"};
    char *text = NULL;

    for (int i = 0; i < 2; i++)
        recs[i].n = strlen(recs[i].p);
    memset(&in, 0, sizeof(in));
    in.type = TDS_MSG_PAGE;
    in.v = TDS_MSG_VERSION;
    in.id = "pg-widgets-1";
    in.u.page = (struct tds_msg_page){
        .org = "60001", .entity = "widgets", .run = "run1", .mode = "reconcile",
        .origin = "fetcher.pod-1", .page = 1, .deleted_ids = deleted, .n_deleted = 3,
        .records = recs, .n_records = 2};
    handle_counted(&in, &out, &st, &text);
    T_STR(out.u.rows.src, "pg-widgets-1");
    T_INT(out.u.rows.n_sets, ==, 0);
    T_INT(out.u.rows.n_rejects, ==, 5);
    for (int i = 0; i < 2; i++) {
        T_STR(out.u.rows.rejects[i].reason, "unknown entity 'widgets'");
        T_NULL(out.u.rows.rejects[i].zoho_id);
        T_TRUE(out.u.rows.rejects[i].raw.n == recs[i].n &&
               memcmp(out.u.rows.rejects[i].raw.p, recs[i].p, recs[i].n) == 0);
    }
    for (int i = 0; i < 3; i++) {
        const struct tds_msg_reject *rj = &out.u.rows.rejects[2 + i];
        T_STR(rj->entity, "widgets");
        T_STR(rj->zoho_id, deleted[i]);
        T_STR(rj->reason, "unknown entity 'widgets' (deleted in Zoho)");
    }
    T_INT(st.rejects, ==, 5);
    T_INT(st.records, ==, 0);
    T_TRUE(strstr(text, "tds_processor_rejects_total{entity=\"\",reason=\"unknown_entity\"} 5\n") !=
           NULL);
    free(text);
    tds_msg_clear(&out);
}

static void dead(const void *frame, size_t len, const char *want_reason_prefix)
{
    struct tds_msg out;
    char *rows = NULL;
    size_t rows_len = 0;
    T_INT(tds_worker_handle(W, frame, len, &rows, &rows_len), ==, 0);
    T_INT(tds_msg_decode(rows, rows_len, &out), ==, 0);
    T_STR(out.u.rows.org, "");
    T_STR(out.u.rows.mode, "deadletter");
    T_STR(out.u.rows.origin, "processor.test");
    T_INT(out.u.rows.n_rejects, ==, 1);
    T_TRUE(strncmp(out.u.rows.rejects[0].reason, want_reason_prefix, strlen(want_reason_prefix)) == 0);
    T_TRUE(out.u.rows.rejects[0].raw.n > 0);
    tds_msg_clear(&out);
    free(rows);
}

static void test_dead_letters(void)
{
    struct tds_msg in;
    char *buf = NULL;
    size_t len = 0;
    struct tds_worker_stats st;

    dead("\xc1garbage", 8, "dead letter: undecodable message");
    memset(&in, 0, sizeof(in));
    in.type = TDS_MSG_FETCH;
    in.v = TDS_MSG_VERSION;
    in.id = "f-1";
    in.u.fetch = (struct tds_msg_fetch){.org = "1", .entity = "items", .zoho_id = "2", .origin = "x"};
    T_INT(tds_msg_encode(&in, &buf, &len), ==, 0);
    dead(buf, len, "dead letter: unexpected message type 'fetch'");
    /* a newer schema version: patch "v":1 into "v":9 */
    char *v = memmem(buf, len, "\xa1v\x01", 3);
    T_TRUE(v != NULL);
    v[2] = 9;
    dead(buf, len, "dead letter: undecodable message");
    free(buf);
    tds_worker_stats(W, &st);
    T_INT(st.dead_letters, ==, 3);
}

/* Records of invoices that are rejected for eleven different reasons. */
static const char *const BAD_INVOICES[] = {
    "{",
    "{\"invoice_id\":\"1\",\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
    "{\"invoice_id\":\"1\",\"x\":\"\xff\"}",
    "{\"invoice_id\":\"1\",\"x\":\"\\u0000\"}",
    "{\"invoice_number\":\"x\"}",
    "{\"invoice_id\":\"1\",\"customer_id\":4.6e18}",
    "{\"invoice_id\":\"1\",\"total\":\"abc\"}",
    "{\"invoice_id\":\"1\",\"last_modified_time\":\"x\"}",
    "{\"invoice_id\":\"1\",\"date\":\"x\"}",
    "{\"invoice_id\":\"1\",\"line_items\":{}}",
    "{\"invoice_id\":\"1\",\"line_items\":[{\"line_item_id\":\"1\"},{\"line_item_id\":\"1\"}]}",
};
#define N_BAD (sizeof(BAD_INVOICES) / sizeof(BAD_INVOICES[0]))

/* The sum of the values of the metric lines that start with prefix. */
static double metric_sum(const char *text, const char *prefix)
{
    double sum = 0;
    size_t n = strlen(prefix);

    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, prefix, n) == 0) {
            const char *v = strchr(l + n, ' ');
            T_TRUE(v != NULL);
            sum += strtod(v + 1, NULL);
        }
    return sum;
}

/* A page with more reject reasons than the tally keeps inline, that then
 * turns out too large: every record counted once, as page_too_large. The
 * ninth and later reasons used to be counted at once, and so twice. */
static void test_many_reasons_then_too_large(void)
{
    enum { BIG = 3, LINES = 35000 };
    struct tds_bytes recs[N_BAD + BIG];
    struct tds_worker_stats st;
    struct tds_msg in, out;
    char *text = NULL;

    for (size_t i = 0; i < N_BAD; i++)
        recs[i] = (struct tds_bytes){(char *)BAD_INVOICES[i], strlen(BAD_INVOICES[i])};
    for (int i = 0; i < BIG; i++)
        recs[N_BAD + (size_t)i] = invoice(70, i, LINES);
    memset(&in, 0, sizeof(in));
    in.type = TDS_MSG_PAGE;
    in.v = TDS_MSG_VERSION;
    in.id = "pg-run4-1";
    in.u.page = (struct tds_msg_page){
        .org = "60001", .entity = "invoices", .run = "run4", .mode = "full",
        .origin = "fetcher.pod-1", .page = 1, .detail = true, .records = recs,
        .n_records = N_BAD + BIG};
    handle_counted(&in, &out, &st, &text);
    T_INT(out.u.rows.n_rejects, ==, N_BAD + BIG);
    T_INT(st.rejects, ==, N_BAD + BIG);
    T_INT(metric_sum(text, "tds_processor_rejects_total{"), ==, N_BAD + BIG);
    T_TRUE(strstr(text, "tds_processor_rejects_total{entity=\"invoices\",reason=\"page_too_large\"} 14\n")
           != NULL);
    free(text);
    tds_msg_clear(&out);
    for (int i = 0; i < BIG; i++)
        free(recs[N_BAD + (size_t)i].p);
}

/* Whichever allocation fails, a message that is dropped for it (its source
 * sends it again) has counted nothing, and one that goes out has counted
 * each of its records, rejects and dead letters once. The rejects of more
 * reasons than the tally keeps inline were counted before the message was
 * encoded, and a dead letter before it was built. */
static void test_counted_once_whatever_allocation_fails(void)
{
    struct tds_bytes recs[N_BAD + 1];
    struct tds_metrics *metrics = NULL;
    struct tds_worker *w = NULL;
    struct tds_worker_stats st0, st;
    struct tds_msg in;
    char *buf = NULL, *rows = NULL, *text = NULL;
    size_t len = 0, rows_len = 0, text_len = 0;
    long failures = 0;

    for (size_t i = 0; i < N_BAD; i++)
        recs[i] = (struct tds_bytes){(char *)BAD_INVOICES[i], strlen(BAD_INVOICES[i])};
    recs[N_BAD] = invoice(60, 1, 2);
    memset(&in, 0, sizeof(in));
    in.type = TDS_MSG_PAGE;
    in.v = TDS_MSG_VERSION;
    in.id = "pg-run5-1";
    in.u.page = (struct tds_msg_page){
        .org = "60001", .entity = "invoices", .run = "run5", .mode = "full",
        .origin = "fetcher.pod-1", .page = 1, .detail = true, .records = recs,
        .n_records = N_BAD + 1};
    T_INT(tds_msg_encode(&in, &buf, &len), ==, 0);
    T_INT(tds_metrics_new(&metrics), ==, 0);
    T_INT(tds_worker_new(&w, metrics, "processor.test"), ==, 0);

    for (int kind = 0; kind < 2; kind++) { /* the page, then a dead letter */
        const char *family = kind ? "tds_processor_dead_letters_total" : "tds_processor_rejects_total{";
        double per = kind ? 1 : N_BAD;
        /* once without failures: every series exists before they start */
        T_INT(kind ? tds_worker_dead_letter(w, "multi-frame message", "x", 1, &rows, &rows_len)
                   : tds_worker_handle(w, buf, len, &rows, &rows_len), ==, 0);
        free(rows);
        for (long k = 1;; k++) {
            double before, after;

            T_INT(tds_metrics_render(metrics, &text, &text_len), ==, 0);
            before = metric_sum(text, family);
            free(text);
            tds_worker_stats(w, &st0);
            rows = NULL;
            fail_in = k;
            int rc = kind ? tds_worker_dead_letter(w, "multi-frame message", "x", 1, &rows, &rows_len)
                          : tds_worker_handle(w, buf, len, &rows, &rows_len);
            bool failed = fail_in == 0;
            fail_in = 0;
            T_INT(tds_metrics_render(metrics, &text, &text_len), ==, 0);
            after = metric_sum(text, family);
            free(text);
            tds_worker_stats(w, &st);
            if (rc == -ENOMEM) {
                T_TRUE(rows == NULL);
                if (after != before)
                    T_FAIL("allocation %ld failed, the message was dropped, and %s counted "
                           "%.0f more", k, family, after - before);
                T_INT(st.rejects, ==, st0.rejects);
                T_INT(st.records, ==, st0.records);
                T_INT(st.dead_letters, ==, st0.dead_letters);
                failures++;
                continue;
            }
            T_INT(rc, ==, 0);
            free(rows);
            if (after != before + per)
                T_FAIL("allocation %ld failed, the message went out, and %s counted %.0f, not %.0f",
                       k, family, after - before, per);
            T_INT(st.rejects, ==, st0.rejects + (kind ? 0 : N_BAD));
            T_INT(st.records, ==, st0.records + (kind ? 0 : 1));
            T_INT(st.dead_letters, ==, st0.dead_letters + (kind ? 1 : 0));
            if (!failed)
                break; /* past the last allocation: every one has failed once */
        }
    }
    T_TRUE(failures > 10);
    fprintf(stderr, "  %ld allocation failures, each dropped the message uncounted\n", failures);
    free(buf);
    free(recs[N_BAD].p);
    w = tds_worker_free(w);
    metrics = tds_metrics_free(metrics);
}

int main(void)
{
    T_INT(tds_worker_new(&W, NULL, "processor.test"), ==, 0);
    T_RUN(test_page);
    T_RUN(test_oversize_page);
    T_RUN(test_oversize_page_counts_each_record_once);
    T_RUN(test_many_reasons_then_too_large);
    T_RUN(test_counted_once_whatever_allocation_fails);
    T_RUN(test_oversize_event);
    T_RUN(test_event);
    T_RUN(test_unknown_entity_page);
    T_RUN(test_dead_letters);
    T_RUN(test_date_only_times_are_the_organizations_midnight); /* a dead letter more: after */
    W = tds_worker_free(W);
    return 0;
}
