/* sqlgen — the writer's SQL, generated from the entity registry.
 *
 * Owns every statement text the writer runs against zoho.* tables: the
 * session's staging tables, COPY, in-batch duplicate collapsing, the guarded
 * upserts (DESIGN.md §5 and BRIEF "writer guard"), soft deletes and the child
 * replacement. Identifiers come only from common/entities.c after a column
 * list has been checked against it; data never enters SQL text (it travels
 * by COPY or as parameters). Pure functions: no I/O, no PostgreSQL.
 */
#ifndef TDS_SQLGEN_H
#define TDS_SQLGEN_H

#include <stdbool.h>
#include <stddef.h>

#include "entities.h"
#include "msg.h"
#include "util.h"

/* Column type of `col` in table t: managed or own column. Returns 0 or
 * TDS_E_NOTFOUND. */
int tds_sqlgen_coltype(const struct tds_table *t, const char *col, enum tds_coltype *out);

/* Check a row set's column list against the registry and the rowset kind
 * (msg.h: DETAIL/LIST start org_id, <id>, modified_time, raw, content_hash,
 * is_detail; DELETE is org_id, <id> [, modified_time]; CHILD is org_id,
 * <parent id>, then child columns including the key). Returns 0, or
 * TDS_E_INVALID with one line in err. */
int tds_sqlgen_check(const struct tds_table *t, enum tds_rowset_kind kind, char *const *cols,
                     size_t n_cols, char *err, size_t errlen);

/* The statements. `stg` is the staging table's name. Each appends one
 * statement (no trailing semicolon) to b; 0 or -ENOMEM. */

/* CREATE TEMP TABLE stg (_m int, _r int, _o timestamptz, <cols typed>):
 * message and row index, and when the message's records were observed
 * (rows.received_ms; NULL when unknown). Not ON COMMIT DELETE ROWS: every
 * commit that touched a temporary table would truncate every such table of
 * the session, used or not (~0.4 ms each on PostgreSQL 15, mostly
 * rebuilding the empty TOAST index); the writer empties the ones it used
 * (apply.c). */
int tds_sqlgen_staging(struct tds_buf *b, const char *stg, const struct tds_table *t,
                       char *const *cols, size_t n_cols);
int tds_sqlgen_copy(struct tds_buf *b, const char *stg);
/* Rows as parameters: unnest($1::integer[], $2::integer[],
 * $3::timestamptz[], then one typed array per column) AS s(_m, _r, _o,
 * <cols>), a FROM item. */
int tds_sqlgen_unnest_rows(struct tds_buf *b, const struct tds_table *t, char *const *cols,
                           size_t n_cols);
/* One row as scalar parameters, the same columns as tds_sqlgen_unnest_rows:
 * SELECT $1::integer AS _m, $2 … AS _r, $3 … AS _o, then cols from $4, each
 * cast to its column's type. */
int tds_sqlgen_one_row(struct tds_buf *b, const struct tds_table *t, char *const *cols,
                       size_t n_cols);
/* The same rows into the staging table: INSERT INTO stg SELECT * FROM
 * <tds_sqlgen_unnest_rows>, for a small group that must be staged (a key
 * twice). Unlike COPY, it can share a libpq pipeline with the statements
 * after it. */
int tds_sqlgen_stage_insert(struct tds_buf *b, const char *stg, const struct tds_table *t,
                            char *const *cols, size_t n_cols);
/* Keep one row per key in stg: the one that wins the guard order (newest
 * modified_time, then the latest observed, then the latest arrival). */
int tds_sqlgen_collapse(struct tds_buf *b, const char *stg, const struct tds_table *t,
                        enum tds_rowset_kind kind, bool has_mtime);
/* The guarded upsert of a DETAIL, LIST or DELETE staging table into t,
 * returning (org_id, id) of every row it actually wrote; with_m (DETAIL of a
 * table with children) also returns each written row's message index _m,
 * which picks the child rows of that version (tds_sqlgen_child_insert).
 * src: where the rows come from (stg is used only for TDS_SRC_STAGING). */
enum tds_sqlgen_src {
    TDS_SRC_STAGING, /* the staging table stg */
    TDS_SRC_ARRAYS,  /* the parameters of tds_sqlgen_unnest_rows (a small group
                        without a key twice: no staging at all) */
    TDS_SRC_ROW,     /* one row, the scalar parameters of tds_sqlgen_one_row (a
                        lone record: no array to escape, parse and unnest) */
};
int tds_sqlgen_upsert(struct tds_buf *b, const char *stg, const struct tds_table *t,
                      enum tds_rowset_kind kind, char *const *cols, size_t n_cols,
                      bool with_m, enum tds_sqlgen_src src);
/* The fast path's lookup (apply.c): for each incoming row ($1 org ids, $2
 * ids, $3 modified times, $4 content hashes, $5 detail flags, $6 observed
 * times: arrays) whose key exists in t, its position in the arrays (from 1)
 * and whether the upsert's guard would let it through. */
int tds_sqlgen_lookup(struct tds_buf *b, const struct tds_table *t);
/* Delete the child rows of the parents ($1 org ids, $2 parent ids: text
 * arrays). Arrays, not a join with a temp table of written parents: the
 * planner has no statistics for a temp table, guesses ~850 rows and hashes
 * the whole child table (8 ms at 40k stock rows, growing), where an array
 * gets an index probe per parent.
 * one: the child rows of one parent ($1 org id, $2 parent id: scalars), the
 * case of a lone webhook. PostgreSQL keeps a generic plan for it (an index
 * probe), where the array form is planned again at every call once the
 * child table is analyzed (a custom plan for a one-element array looks
 * cheaper than a generic one for the assumed ten), and its generic plan,
 * made while the table was small, scans the whole table. */
int tds_sqlgen_child_delete(struct tds_buf *b, const struct tds_table *child, bool one);
/* Insert the staged child rows that belong to the written version of their
 * parent: $1 org ids, $2 parent ids, $3 message indexes (text, text, int
 * arrays from the parent upsert's RETURNING). direct: the child rows are the
 * parameters of tds_sqlgen_unnest_rows and the parents' arrays follow them. */
int tds_sqlgen_child_insert(struct tds_buf *b, const char *stg, const struct tds_table *child,
                            char *const *cols, size_t n_cols, bool direct);

/* A lone record in one round trip (apply.c, "one flight"): the statements
 * after its upsert are queued before the upsert's RETURNING is read, so they
 * ask the table whether this transaction wrote the record: its stored row's
 * xmin is this transaction's id and its content_hash the one sent. The
 * hash (over the record and its children) covers a frozen row whose raw
 * xmin recurs after 2^32 transactions: that row would hold this very
 * content, children included. The writer runs no subtransactions, whose
 * rows would carry another xmin.
 * Delete the child rows of parent ($1 org id, $2 id, $3 content hash) if
 * this transaction wrote it. */
int tds_sqlgen_child_delete_if_written(struct tds_buf *b, const struct tds_table *child,
                                       const struct tds_table *parent);
/* Insert the child rows given as tds_sqlgen_unnest_rows parameters whose
 * parent is $k org id, $k+1 id, $k+2 message index (k = n_cols + 4), if this
 * transaction wrote that parent with content hash $k+3. */
int tds_sqlgen_child_insert_if_written(struct tds_buf *b, const struct tds_table *child,
                                       const struct tds_table *parent, char *const *cols,
                                       size_t n_cols);
/* NOTIFY tds_changes with payload $1 if this transaction wrote the row of t
 * ($2 org id, $3 id, $4 content hash). */
int tds_sqlgen_notify_if_written(struct tds_buf *b, const struct tds_table *t);

#endif
