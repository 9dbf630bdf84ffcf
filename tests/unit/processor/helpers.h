/* helpers — shared checks for the processor's unit tests: run records through
 * the transform into a rows message and look values up by table and column. */
#ifndef TDS_TEST_PROCESSOR_HELPERS_H
#define TDS_TEST_PROCESSOR_HELPERS_H

#include <string.h>
#include <time.h>

#include "assert.h"
#include "entities.h"
#include "msg.h"
#include "transform.h"

static struct tds_transform *h_tf;
static struct tds_msg_rows h_rows;
static struct tds_transform_result h_res;

static inline void h_reset(void)
{
    struct tds_msg m;
    memset(&m, 0, sizeof(m));
    m.type = TDS_MSG_ROWS;
    m.u.rows = h_rows;
    tds_msg_clear(&m);
    memset(&h_rows, 0, sizeof(h_rows));
    if (!h_tf)
        T_INT(tds_transform_new(&h_tf), ==, 0);
    tds_transform_begin(h_tf, &h_rows);
}

static inline void h_done(void)
{
    h_reset();
    h_tf = tds_transform_free(h_tf);
}

/* Transform one record (appending to h_rows); returns whether it was rejected. */
static inline bool h_record(const char *entity, const char *json, enum tds_form form)
{
    const struct tds_entity *e = tds_entity_find(entity);
    T_TRUE(e != NULL);
    T_INT(tds_transform_record(h_tf, &h_rows, e, "60001", json, strlen(json), form, &h_res), ==, 0);
    return h_res.rejected;
}

static inline bool h_event(const char *entity, const char *body)
{
    const struct tds_entity *e = tds_entity_find(entity);
    T_TRUE(e != NULL);
    T_INT(tds_transform_event_body(h_tf, &h_rows, e, "60001", body, strlen(body), &h_res), ==, 0);
    return h_res.rejected;
}

static inline const struct tds_msg_rowset *h_set(const char *table, enum tds_rowset_kind kind, size_t nth)
{
    for (size_t i = 0; i < h_rows.n_sets; i++)
        if (strcmp(h_rows.sets[i].table, table) == 0 && h_rows.sets[i].kind == kind)
            if (nth-- == 0)
                return &h_rows.sets[i];
    return NULL;
}

static inline size_t h_nsets(const char *table, enum tds_rowset_kind kind)
{
    size_t n = 0;
    for (size_t i = 0; i < h_rows.n_sets; i++)
        if (strcmp(h_rows.sets[i].table, table) == 0 && h_rows.sets[i].kind == kind)
            n++;
    return n;
}

static inline int h_col(const struct tds_msg_rowset *s, const char *col)
{
    for (size_t i = 0; i < s->n_cols; i++)
        if (strcmp(s->cols[i], col) == 0)
            return (int)i;
    return -1;
}

static inline const char *h_val_at(const struct tds_msg_rowset *s, size_t row, const char *col,
                            const char *file, int line)
{
    int c = h_col(s, col);
    if (c < 0) {
        fprintf(stderr, "%s:%d: column %s not in set %s\n", file, line, col, s->table);
        exit(1);
    }
    if (row >= s->n_rows) {
        fprintf(stderr, "%s:%d: row %zu not in set %s (%zu rows)\n", file, line, row, s->table,
                s->n_rows);
        exit(1);
    }
    return s->vals[row * s->n_cols + (size_t)c].p;
}

#define V(s, row, col) h_val_at((s), (row), (col), __FILE__, __LINE__)
#define T_V(s, row, col, want) T_STR(V(s, row, col), want)
#define T_VNULL(s, row, col) T_NULL(V(s, row, col))
#define T_NOCOL(s, col) T_INT(h_col((s), (col)), ==, -1)

/* Every own column of the table is in a DETAIL/CHILD set, in registry order. */
static inline void h_check_columns(const struct tds_msg_rowset *s)
{
    const struct tds_table *t = tds_table_find(s->table);
    size_t lead = (s->kind == TDS_ROWS_CHILD) ? 2 : 6;
    T_TRUE(t != NULL);
    T_STR(s->cols[0], "org_id");
    T_STR(s->cols[1], t->id_column);
    if (lead == 6) {
        T_STR(s->cols[2], "modified_time");
        T_STR(s->cols[3], "raw");
        T_STR(s->cols[4], "content_hash");
        T_STR(s->cols[5], "is_detail");
    }
    if (s->kind == TDS_ROWS_LIST)
        return;
    T_INT(s->n_cols, ==, lead + t->n_cols);
    for (size_t i = 0; i < t->n_cols; i++)
        T_STR(s->cols[lead + i], t->cols[i].name);
}

/* CPU seconds used by this process so far: a record's cost, measured on
 * cores that other jobs share, is its CPU time, not the wall clock's. */
static inline double h_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Records of up to 1 MiB (the parser's limit) are built to just under it. */
#define H_RECORD_MAX (1024u * 1024u - 64u)

static inline const char *h_reject_reason(size_t i)
{
    T_TRUE(i < h_rows.n_rejects);
    return h_rows.rejects[i].reason;
}

#endif
