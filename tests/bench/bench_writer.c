/* bench_writer — rows/s through tds-writer, and the plain COPY ceiling.
 *
 * Generates item DETAIL rows (every column of zoho.items, about 1 KB of raw
 * JSON each), deterministic in (row number, version), and either
 *   copy    COPYs them with libpq into an empty table shaped like zoho.items
 *           (LIKE … INCLUDING ALL: same columns, same indexes), one
 *           transaction: the ceiling of this machine's PostgreSQL;
 *   new     empties zoho.items, then PUSHes rows messages to the writer and
 *           waits for every ack on its PUB (topic = our origin);
 *   update  the same rows with a newer modified_time and a new hash, so every
 *           row passes the writer's guard and is updated.
 * With --stock N each item carries N zoho.item_stock rows (every column, as
 * the processor sends them), warehouses w0 … w(N-1); an update changes the
 * stock of w0 only, as a sale does, and leaves the others as they were.
 * Prints one line "bench_writer MODE rows=N seconds=S rows_per_s=R" and, for
 * new/update, checks in the database that every row holds this version.
 * Never judges the figure; exits non-zero only when something did not work.
 *
 * Usage: bench_writer copy|new|update --dsn DSN [--push EP --ack EP]
 *                     [--rows N] [--per-msg N] [--org ORG] [--stock N]
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "entities.h"
#include "msg.h"

#define ORIGIN "bench.writer"
#define RAW_MAX 4096
#define VAL_MAX 160

struct gen {
    const struct tds_table *t;
    size_t n_cols;             /* org_id, item_id, 4 managed, own columns */
    const char **cols;
    char *raw;                 /* RAW_MAX */
    char (*vals)[VAL_MAX];     /* n_cols small values */
    struct tds_bytes *row;     /* n_cols */
    /* item_stock rows: org_id, item_id, then its registry columns */
    const struct tds_table *st;
    size_t n_scols;
    const char **scols;
    char (*svals)[VAL_MAX];
    struct tds_bytes *srow;
    long stock;                /* stock rows per item */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int gen_init(struct gen *g)
{
    static const char *const head[] = {"org_id", "item_id", "modified_time", "raw",
                                       "content_hash", "is_detail"};
    memset(g, 0, sizeof(*g));
    g->t = tds_table_find("items");
    if (!g->t)
        return -1;
    g->n_cols = 6 + g->t->n_cols;
    g->cols = calloc(g->n_cols, sizeof(*g->cols));
    g->raw = malloc(RAW_MAX);
    g->vals = calloc(g->n_cols, sizeof(*g->vals));
    g->row = calloc(g->n_cols, sizeof(*g->row));
    if (!g->cols || !g->raw || !g->vals || !g->row)
        return -1;
    for (size_t c = 0; c < 6; c++)
        g->cols[c] = head[c];
    for (size_t c = 0; c < g->t->n_cols; c++)
        g->cols[6 + c] = g->t->cols[c].name;
    g->st = tds_table_find("item_stock");
    if (!g->st)
        return -1;
    g->n_scols = 2 + g->st->n_cols;
    g->scols = calloc(g->n_scols, sizeof(*g->scols));
    g->svals = calloc(g->n_scols, sizeof(*g->svals));
    g->srow = calloc(g->n_scols, sizeof(*g->srow));
    if (!g->scols || !g->svals || !g->srow)
        return -1;
    g->scols[0] = "org_id";
    g->scols[1] = "item_id";
    for (size_t c = 0; c < g->st->n_cols; c++)
        g->scols[2 + c] = g->st->cols[c].name;
    return 0;
}

/* Fill g->srow with stock row w of item i at version v: w0's figures move
 * with the version, the other warehouses' do not. */
static void gen_stock(struct gen *g, const char *org, long i, long w, int v)
{
    snprintf(g->svals[0], VAL_MAX, "%s", org);
    snprintf(g->svals[1], VAL_MAX, "46%017ld", i);
    for (size_t c = 0; c < g->st->n_cols; c++) {
        const struct tds_column *col = &g->st->cols[c];
        char *b = g->svals[2 + c];

        if (strcmp(col->name, "warehouse_id") == 0)
            snprintf(b, VAL_MAX, "w%ld", w);
        else if (col->type == TDS_T_NUMERIC)
            snprintf(b, VAL_MAX, "%ld.00", (i + w) % 500 + (w == 0 ? v : 0));
        else if (col->type == TDS_T_BOOL)
            snprintf(b, VAL_MAX, "%s", w == 0 ? "true" : "false");
        else
            snprintf(b, VAL_MAX, "%s w%ld", col->name, w);
    }
    for (size_t c = 0; c < g->n_scols; c++)
        g->srow[c] = (struct tds_bytes){g->svals[c], strlen(g->svals[c])};
}

static void gen_free(struct gen *g)
{
    free(g->cols);
    free(g->raw);
    free(g->vals);
    free(g->row);
    free(g->scols);
    free(g->svals);
    free(g->srow);
}

static uint64_t fnv(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

/* Fill g->row with row i at version v (1 = new, 2 = updated). */
static void gen_row(struct gen *g, const char *org, long i, int v)
{
    char id[32], mt[40];
    int n;

    snprintf(id, sizeof(id), "46%017ld", i);
    snprintf(mt, sizeof(mt), "2026-0%d-05T10:%02ld:%02ld+0300", v, (i / 60) % 60, i % 60);
    n = snprintf(g->raw, RAW_MAX,
        "{\"item_id\":\"%s\",\"name\":\"Bench item %ld v%d \\u0639\\u0631\\u0628\\u064a\","
        "\"sku\":\"BN-%ld\",\"status\":\"active\",\"unit\":\"pcs\",\"item_type\":\"inventory\","
        "\"product_type\":\"goods\",\"rate\":%ld.%02d,\"purchase_rate\":\"7.50\","
        "\"brand\":\"Acme\",\"manufacturer\":\"Acme Textiles\",\"tax_id\":\"4815000000012001\","
        "\"tax_name\":\"VAT\",\"tax_percentage\":15,\"is_taxable\":true,\"upc\":\"012345678905\","
        "\"stock_on_hand\":%ld,\"available_stock\":%ld,\"actual_available_stock\":%ld,"
        "\"custom_fields\":[{\"customfield_id\":\"4815000000060001\",\"api_name\":\"cf_season\","
        "\"label\":\"Season\",\"value\":\"SS24\",\"index\":1,\"data_type\":\"string\"}],"
        "\"description\":\"Cotton tee, 180 gsm, \\\"quoted\\\", tab\\tand newline\\n. %0*d\","
        "\"created_time\":\"2024-01-15T10:20:30+0530\",\"last_modified_time\":\"%s\"}",
        id, i, v, i, 10 + i % 90, v, i % 50, i % 50, i % 50, 330, 0, mt);
    g->row[0] = (struct tds_bytes){(char *)org, strlen(org)};
    g->row[1] = (struct tds_bytes){NULL, 0};
    snprintf(g->vals[1], VAL_MAX, "%s", id);
    snprintf(g->vals[2], VAL_MAX, "%s", mt);
    g->row[3] = (struct tds_bytes){g->raw, (size_t)n};
    snprintf(g->vals[4], VAL_MAX, "%016" PRIx64, fnv(g->raw, (size_t)n));
    snprintf(g->vals[5], VAL_MAX, "true");
    for (size_t c = 0; c < g->t->n_cols; c++) {
        char *b = g->vals[6 + c];
        switch (g->t->cols[c].type) {
        case TDS_T_NUMERIC: snprintf(b, VAL_MAX, "%ld.%02d", 10 + i % 90, v); break;
        case TDS_T_INT: snprintf(b, VAL_MAX, "%ld", i % 1000); break;
        case TDS_T_BOOL: snprintf(b, VAL_MAX, "true"); break;
        case TDS_T_TIMESTAMPTZ: snprintf(b, VAL_MAX, "2024-01-15T10:20:30+0530"); break;
        case TDS_T_DATE: snprintf(b, VAL_MAX, "2024-01-15"); break;
        case TDS_T_JSONB: snprintf(b, VAL_MAX, "[{\"label\":\"Season\",\"value\":\"SS24\"}]"); break;
        default: snprintf(b, VAL_MAX, "%s %ld v%d", g->t->cols[c].name, i, v); break;
        }
    }
    for (size_t c = 1; c < g->n_cols; c++)
        if (c != 3)
            g->row[c] = (struct tds_bytes){g->vals[c], strlen(g->vals[c])};
}

static int exec_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "bench_writer: %s: %s", sql, PQerrorMessage(pg));
    PQclear(r);
    return ok ? 0 : -1;
}

/* Text COPY format: escape backslash, tab, newline, carriage return. */
static int copy_escape(char *dst, size_t cap, const struct tds_bytes *b)
{
    size_t o = 0;
    if (!b->p) {
        if (cap < 3)
            return -1;
        memcpy(dst, "\\N", 2);
        return 2;
    }
    for (size_t i = 0; i < b->n; i++) {
        char c = b->p[i], e = 0;
        if (c == '\\') e = '\\';
        else if (c == '\t') e = 't';
        else if (c == '\n') e = 'n';
        else if (c == '\r') e = 'r';
        if (o + 2 >= cap)
            return -1;
        if (e) {
            dst[o++] = '\\';
            dst[o++] = e;
        } else {
            dst[o++] = c;
        }
    }
    return (int)o;
}

static int run_copy(struct gen *g, PGconn *pg, const char *org, long rows)
{
    size_t cap = 1u << 20, len = 0, linecap = 2 * RAW_MAX + 64 * VAL_MAX;
    char *buf = malloc(cap), *sql = NULL, *line = malloc(linecap);
    size_t sqlcap = 64 * 1024, so = 0;
    int rc = -1;
    double t0, dt;
    PGresult *r;

    sql = malloc(sqlcap);
    if (!buf || !line || !sql)
        goto out;
    if (exec_ok(pg, "DROP TABLE IF EXISTS public.bench_copy") ||
        exec_ok(pg, "CREATE TABLE public.bench_copy (LIKE zoho.items INCLUDING ALL)"))
        goto out;
    so = (size_t)snprintf(sql, sqlcap, "COPY public.bench_copy (");
    for (size_t c = 0; c < g->n_cols && so < sqlcap; c++)
        so += (size_t)snprintf(sql + so, sqlcap - so, "%s%s", c ? "," : "", g->cols[c]);
    if (so >= sqlcap - 32)
        goto out;
    snprintf(sql + so, sqlcap - so, ") FROM STDIN");
    t0 = now_s();
    if (exec_ok(pg, "BEGIN"))
        goto out;
    r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        fprintf(stderr, "bench_writer: COPY: %s", PQerrorMessage(pg));
        PQclear(r);
        goto out;
    }
    PQclear(r);
    for (long i = 0; i < rows; i++) {
        size_t lo = 0;
        gen_row(g, org, i, 1);
        for (size_t c = 0; c < g->n_cols; c++) {
            int n = copy_escape(line + lo, linecap - lo - 2, &g->row[c]);
            if (n < 0)
                goto out;
            lo += (size_t)n;
            line[lo++] = c + 1 < g->n_cols ? '\t' : '\n';
        }
        if (len + lo > cap) {
            if (PQputCopyData(pg, buf, (int)len) != 1)
                goto out;
            len = 0;
        }
        memcpy(buf + len, line, lo);
        len += lo;
    }
    if ((len && PQputCopyData(pg, buf, (int)len) != 1) || PQputCopyEnd(pg, NULL) != 1)
        goto out;
    r = PQgetResult(pg);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench_writer: COPY: %s", PQerrorMessage(pg));
        PQclear(r);
        goto out;
    }
    PQclear(r);
    while ((r = PQgetResult(pg)))
        PQclear(r);
    if (exec_ok(pg, "COMMIT"))
        goto out;
    dt = now_s() - t0;
    printf("bench_writer copy rows=%ld seconds=%.3f rows_per_s=%.0f\n", rows, dt, rows / dt);
    rc = exec_ok(pg, "DROP TABLE public.bench_copy");
out:
    free(buf);
    free(line);
    free(sql);
    return rc;
}

/* A page id names one page's content: the writer acks a page id it has
 * applied before without applying it again (tds.applied_pages), so each run
 * of this driver names its pages afresh: bw-<run tag>-<version>-<n>. */
static long long run_tag;

static void run_tag_init(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    run_tag = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int send_msg(void *push, struct gen *g, const char *org, long first, long n, int v,
                    long k)
{
    struct tds_msg m;
    struct tds_msg_rows *rw = &m.u.rows;
    struct tds_msg_rowset *s;
    char id[64], *out = NULL;
    size_t len = 0;
    int rc = -1;

    memset(&m, 0, sizeof(m));
    snprintf(id, sizeof(id), "bw-%lld-%d-%ld", run_tag, v, k);
    m.type = TDS_MSG_ROWS;
    m.v = TDS_MSG_VERSION;
    /* all owned, so tds_msg_clear() frees the message as the decoder would */
    m.id = strdup(id);
    rw->org = strdup(org);
    rw->entity = strdup("items");
    rw->origin = strdup(ORIGIN);
    rw->src = strdup(id);
    rw->mode = strdup("full");
    if (!m.id || !rw->org || !rw->entity || !rw->origin || !rw->src || !rw->mode)
        goto out;
    rw->page = k + 1;
    rw->records_in = n;
    s = tds_msg_rows_add_set(rw, "items", TDS_ROWS_DETAIL, g->cols, g->n_cols);
    if (!s)
        goto out;
    for (long i = first; i < first + n; i++) {
        gen_row(g, org, i, v);
        if (tds_msg_rowset_add_row(s, g->row) != 0)
            goto out;
    }
    if (g->stock > 0) {
        s = tds_msg_rows_add_set(rw, "item_stock", TDS_ROWS_CHILD, g->scols, g->n_scols);
        if (!s)
            goto out;
        for (long i = first; i < first + n; i++)
            for (long w = 0; w < g->stock; w++) {
                gen_stock(g, org, i, w, v);
                if (tds_msg_rowset_add_row(s, g->srow) != 0)
                    goto out;
            }
    }
    if (tds_msg_encode(&m, &out, &len) != 0)
        goto out;
    rc = zmq_send(push, out, len, 0) == (int)len ? 0 : -1;
out:
    free(out);
    tds_msg_clear(&m);
    return rc;
}

/* Count acked ids of version v from one ack frame pair. */
static long read_acks(void *sub, int v)
{
    char topic[256];
    zmq_msg_t body;
    struct tds_msg m;
    long got = 0;
    char prefix[48];
    int n = zmq_recv(sub, topic, sizeof(topic) - 1, ZMQ_DONTWAIT);

    if (n < 0)
        return 0;
    zmq_msg_init(&body);
    if (zmq_msg_recv(&body, sub, 0) < 0) {
        zmq_msg_close(&body);
        return 0;
    }
    snprintf(prefix, sizeof(prefix), "bw-%lld-%d-", run_tag, v);
    if (tds_msg_decode(zmq_msg_data(&body), zmq_msg_size(&body), &m) == 0) {
        if (m.type == TDS_MSG_ACK && m.u.ack.origin && strcmp(m.u.ack.origin, ORIGIN) == 0)
            for (size_t i = 0; i < m.u.ack.n_ids; i++)
                got += strncmp(m.u.ack.ids[i], prefix, strlen(prefix)) == 0;
        tds_msg_clear(&m);
    }
    zmq_msg_close(&body);
    return got;
}

static int run_push(struct gen *g, PGconn *pg, const char *org, long rows, long per,
                    const char *push_ep, const char *ack_ep, int v)
{
    void *ctx = zmq_ctx_new(), *push = NULL, *sub = NULL;
    long msgs = (rows + per - 1) / per, sent = 0, acked = 0;
    int hwm = 100000, rc = -1;
    double t0, dt, deadline;
    char sql[256];
    PGresult *r;

    if (v == 1 && exec_ok(pg, "TRUNCATE zoho.items CASCADE"))
        goto out;
    push = zmq_socket(ctx, ZMQ_PUSH);
    sub = zmq_socket(ctx, ZMQ_SUB);
    zmq_setsockopt(sub, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    if (zmq_connect(push, push_ep) || zmq_connect(sub, ack_ep) ||
        zmq_setsockopt(sub, ZMQ_SUBSCRIBE, ORIGIN, strlen(ORIGIN)))
        goto out;
    /* a SUB misses what is published before its subscription arrives */
    {
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    t0 = now_s();
    deadline = t0 + 600;
    while (acked < msgs && now_s() < deadline) {
        zmq_pollitem_t it[2] = {{sub, 0, ZMQ_POLLIN, 0}, {push, 0, ZMQ_POLLOUT, 0}};
        int np = sent < msgs ? 2 : 1;
        if (zmq_poll(it, np, 1000) < 0 && errno != EINTR)
            goto out;
        if (it[0].revents & ZMQ_POLLIN)
            acked += read_acks(sub, v);
        if (np == 2 && (it[1].revents & ZMQ_POLLOUT)) {
            long first = sent * per, n = first + per > rows ? rows - first : per;
            if (send_msg(push, g, org, first, n, v, sent) != 0)
                goto out;
            sent++;
        }
    }
    dt = now_s() - t0;
    if (acked < msgs) {
        fprintf(stderr, "bench_writer: only %ld of %ld messages acked\n", acked, msgs);
        goto out;
    }
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM zoho.items WHERE org_id = '%s' AND modified_time >= "
             "'2026-0%d-05T00:00:00+0300' AND modified_time < '2026-0%d-06T00:00:00+0300'",
             org, v, v);
    r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || strtol(PQgetvalue(r, 0, 0), NULL, 10) != rows) {
        fprintf(stderr, "bench_writer: expected %ld rows at version %d, found %s%s\n", rows, v,
                PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "?",
                PQerrorMessage(pg));
        PQclear(r);
        goto out;
    }
    PQclear(r);
    /* every stock row there, w0 at this version's figure */
    snprintf(sql, sizeof(sql),
             "SELECT count(*), count(*) FILTER (WHERE warehouse_id = 'w0' AND "
             "stock_on_hand = (substr(item_id, 3)::bigint %% 500) + %d) FROM zoho.item_stock "
             "WHERE org_id = '%s'", v, org);
    r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK ||
        strtol(PQgetvalue(r, 0, 0), NULL, 10) != rows * g->stock ||
        strtol(PQgetvalue(r, 0, 1), NULL, 10) != (g->stock > 0 ? rows : 0)) {
        fprintf(stderr, "bench_writer: expected %ld stock rows, %ld of w0 at version %d, "
                        "found %s, %s%s\n", rows * g->stock, g->stock > 0 ? rows : 0L, v,
                PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "?",
                PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 1) : "?",
                PQerrorMessage(pg));
        PQclear(r);
        goto out;
    }
    PQclear(r);
    printf("bench_writer %s rows=%ld seconds=%.3f rows_per_s=%.0f\n", v == 1 ? "new" : "update",
           rows, dt, rows / dt);
    rc = 0;
out:
    if (push) {
        int zero = 0;
        zmq_setsockopt(push, ZMQ_LINGER, &zero, sizeof(zero));
        zmq_close(push);
    }
    if (sub)
        zmq_close(sub);
    zmq_ctx_term(ctx);
    return rc;
}

int main(int argc, char **argv)
{
    run_tag_init();
    static const struct option opts[] = {
        {"dsn", required_argument, NULL, 'd'},  {"push", required_argument, NULL, 'p'},
        {"ack", required_argument, NULL, 'a'},  {"rows", required_argument, NULL, 'n'},
        {"per-msg", required_argument, NULL, 'm'}, {"org", required_argument, NULL, 'o'},
        {"stock", required_argument, NULL, 's'}, {NULL, 0, NULL, 0}};
    const char *dsn = NULL, *push = NULL, *ack = NULL, *org = "60001", *mode;
    long rows = 100000, per = 200, stock = 0;
    struct gen g;
    PGconn *pg;
    int c, rc;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'd': dsn = optarg; break;
        case 'p': push = optarg; break;
        case 'a': ack = optarg; break;
        case 'o': org = optarg; break;
        case 'n':
        case 'm':
        case 's': {
            long x = strtol(optarg, &end, 10);
            if (!end || *end || x < (c == 's' ? 0 : 1) || x > (c == 's' ? 100 : 100000000)) {
                fprintf(stderr, "bench_writer: invalid number: '%s'\n", optarg);
                return 2;
            }
            if (c == 'n')
                rows = x;
            else if (c == 'm')
                per = x;
            else
                stock = x;
            break;
        }
        default: return 2;
        }
    }
    if (optind + 1 != argc || !dsn) {
        fprintf(stderr, "usage: bench_writer copy|new|update --dsn DSN [--push EP --ack EP] "
                        "[--rows N] [--per-msg N] [--org ORG] [--stock N]\n");
        return 2;
    }
    mode = argv[optind];
    if (gen_init(&g) != 0) {
        gen_free(&g);
        return 1;
    }
    g.stock = stock;
    pg = PQconnectdb(dsn);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "bench_writer: could not connect: %s", PQerrorMessage(pg));
        PQfinish(pg);
        gen_free(&g);
        return 1;
    }
    PQclear(PQexec(pg, "SET client_min_messages = warning"));
    if (strcmp(mode, "copy") == 0)
        rc = run_copy(&g, pg, org, rows);
    else if ((strcmp(mode, "new") == 0 || strcmp(mode, "update") == 0) && push && ack)
        rc = run_push(&g, pg, org, rows, per, push, ack, mode[0] == 'n' ? 1 : 2);
    else {
        fprintf(stderr, "bench_writer: invalid mode or missing --push/--ack: '%s'\n", mode);
        rc = -1;
    }
    PQfinish(pg);
    gen_free(&g);
    return rc == 0 ? 0 : 1;
}
