/* batch — the rows messages the writer holds until they are committed.
 *
 * Checks happen once, on arrival: a set whose table or columns do not match
 * the registry is not written at all (the processor and the registry
 * disagree; nothing in it can be written): each of its records is rejected,
 * with its id and raw JSON read from the set by column name, and takes the
 * other records of its table family in the message with it. A record with a
 * value that PostgreSQL text cannot hold (a NUL byte) is rejected before any
 * SQL runs. Everything else is left to PostgreSQL's input functions; a value
 * they refuse is found later by the writer's bisection.
 */
#include "batch.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copytext.h"
#include "sqlgen.h"
#include "util.h"

/* Dead letters keep this much of an undecodable frame, hex-encoded. */
#define DEAD_LETTER_BYTES 4096
#define REASON_MAX 2000

const char *tds_bmsg_family(const struct tds_table *t)
{
    return t->parent ? t->parent : t->name;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int add_reject(struct tds_bmsg *m, const char *entity, const char *zoho_id,
                      const char *reason, char *raw_owned)
{
    struct tds_wreject *r;

    if (m->n_rej == m->cap_rej) {
        size_t cap = m->cap_rej ? m->cap_rej * 2 : 4;
        struct tds_wreject *p = realloc(m->rej, cap * sizeof(*p));

        if (!p) {
            free(raw_owned);
            return -ENOMEM;
        }
        m->rej = p;
        m->cap_rej = cap;
    }
    r = &m->rej[m->n_rej];
    r->entity = dup_or_null(entity);
    r->zoho_id = dup_or_null(zoho_id);
    r->reason = tds_copytext_sanitize(reason, strlen(reason), REASON_MAX);
    r->raw = raw_owned;
    r->note = false;
    if ((entity && !r->entity) || (zoho_id && !r->zoho_id) || !r->reason) {
        free(r->entity);
        free(r->zoho_id);
        free(r->reason);
        free(r->raw);
        return -ENOMEM;
    }
    m->n_rej++;
    return 0;
}

static int dead_letter(struct tds_bmsg *m, const void *frame, size_t len, const char *why)
{
    size_t n = len < DEAD_LETTER_BYTES ? len : DEAD_LETTER_BYTES;
    char *hex = malloc(2 * n + 1);

    if (!hex)
        return -ENOMEM;
    tds_hex(frame, n, hex);
    return add_reject(m, NULL, NULL, why, hex);
}

/* Where a set keeps what records are made of. A set the writer writes has
 * the registry's layout (org_id, id, then for DETAIL/LIST modified_time and
 * raw); a refused one is read by column name, so that its records can still
 * be rejected one by one with their ids and raw JSON. */
struct setkeys {
    const char *family; /* table family; a table not in the registry is its own */
    long org, id, raw;  /* column indexes, -1 = none */
};

static long col_index(const struct tds_msg_rowset *set, const char *name)
{
    for (size_t c = 0; name && c < set->n_cols; c++)
        if (strcmp(set->cols[c], name) == 0)
            return (long)c;
    return -1;
}

static void set_keys(const struct tds_bmsg *m, size_t s, struct setkeys *k)
{
    const struct tds_msg_rowset *set = &m->msg.u.rows.sets[s];
    const struct tds_table *t = m->tables[s];
    bool top = set->kind == TDS_ROWS_DETAIL || set->kind == TDS_ROWS_LIST;

    if (t) {
        *k = (struct setkeys){tds_bmsg_family(t), 0, 1, top ? 3 : -1};
        return;
    }
    t = tds_table_find(set->table);
    k->family = t ? tds_bmsg_family(t) : set->table;
    k->org = col_index(set, "org_id");
    /* a table the registry does not know: its id column by the convention
     * every set follows (org_id, then the id) */
    k->id = t ? col_index(set, t->id_column) : k->org == 0 && set->n_cols > 1 ? 1 : -1;
    k->raw = top ? col_index(set, "raw") : -1;
    if (k->org < 0 || k->id < 0)
        k->org = k->id = -1;
}

struct rowref {
    const struct tds_bytes *org, *id; /* NULL: a record of its own */
    const char *family;
    size_t s, r;
};

static int cmp_bytes(const struct tds_bytes *a, const struct tds_bytes *b)
{
    if (!a->p || !b->p)
        return (a->p != NULL) - (b->p != NULL);
    return tds_bytes_cmp(a->p, a->n, b->p, b->n);
}

/* Same family, org_id and id: rows of one record. */
static int cmp_key(const struct rowref *a, const struct rowref *b)
{
    int c = strcmp(a->family, b->family);

    if (c == 0)
        c = (a->id == NULL) - (b->id == NULL);
    if (c == 0 && a->id)
        c = cmp_bytes(a->org, b->org);
    if (c == 0 && a->id)
        c = cmp_bytes(a->id, b->id);
    return c;
}

static int cmp_ref(const void *pa, const void *pb)
{
    const struct rowref *a = pa, *b = pb;
    int c = cmp_key(a, b);

    if (c == 0)
        c = (a->s > b->s) - (a->s < b->s);
    if (c == 0)
        c = (a->r > b->r) - (a->r < b->r);
    return c;
}

/* Group rows into records by (family, org_id, id): the rows of the sets to
 * write and those of refused sets (rec_of allocated), so that a refused set's
 * records can be rejected with their other rows. A row whose set has no
 * org_id or id column is a record of its own. */
static int assign_records(struct tds_bmsg *m)
{
    const struct tds_msg_rows *rows = &m->msg.u.rows;
    struct rowref *refs;
    size_t n = 0, k = 0;

    for (size_t s = 0; s < rows->n_sets; s++)
        if (m->rec_of[s])
            n += rows->sets[s].n_rows;
    refs = malloc((n ? n : 1) * sizeof(*refs));
    if (!refs)
        return -ENOMEM;
    for (size_t s = 0; s < rows->n_sets; s++) {
        const struct tds_msg_rowset *set = &rows->sets[s];
        struct setkeys sk;

        if (!m->rec_of[s])
            continue;
        set_keys(m, s, &sk);
        for (size_t r = 0; r < set->n_rows; r++) {
            const struct tds_bytes *v = &set->vals[r * set->n_cols];

            refs[k++] = (struct rowref){sk.id >= 0 ? &v[sk.org] : NULL,
                                        sk.id >= 0 ? &v[sk.id] : NULL, sk.family, s, r};
        }
    }
    qsort(refs, n, sizeof(*refs), cmp_ref);
    m->n_recs = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && (!refs[i].id || cmp_key(&refs[i - 1], &refs[i]) != 0))
            m->n_recs++;
        m->rec_of[refs[i].s][refs[i].r] = (uint32_t)m->n_recs;
    }
    if (n > 0)
        m->n_recs++;
    free(refs);
    return 0;
}

/* Why set s is refused on arrival (err filled), or 0 when it is written. */
static int set_refused(const struct tds_msg_rowset *set, const struct tds_table *t, char *err,
                       size_t errlen)
{
    if (!t) {
        snprintf(err, errlen, "unknown table '%s'", set->table);
        return TDS_E_INVALID;
    }
    return tds_sqlgen_check(t, set->kind, set->cols, set->n_cols, err, errlen) != 0
               ? TDS_E_INVALID
               : 0;
}

/* A set refused on arrival: each of its records is rejected, with its own
 * id and raw JSON (counted one per record, as the run and the ack count
 * them), and it takes the records of its table family in the message with
 * it. A DETAIL parent written without its child rows would lose the stored
 * ones for good: the writer replaces a written parent's children, and the
 * same version sent again with the right columns is refused by the guard
 * (same time, same hash) until the record changes in Zoho. So nothing of the
 * family is half-applied. A table the registry does not know is a family of
 * its own. */
static int reject_refused(struct tds_bmsg *m)
{
    const struct tds_msg_rows *rows = &m->msg.u.rows;
    uint8_t *bad = NULL;
    char err[256], reason[400];
    int rc = 0;

    for (size_t s = 0; s < rows->n_sets && rc == 0; s++) {
        const struct tds_msg_rowset *set = &rows->sets[s];
        struct setkeys sk;

        if (m->tables[s])
            continue;
        set_refused(set, tds_table_find(set->table), err, sizeof(err));
        set_keys(m, s, &sk);
        if (!bad && !(bad = calloc(m->n_recs ? m->n_recs : 1, 1)))
            return -ENOMEM;
        snprintf(reason, sizeof(reason), "not written: the message's %s rows were refused (%s)",
                 set->table, err);
        for (size_t s2 = 0; s2 < rows->n_sets && rc == 0; s2++) {
            struct setkeys sk2;

            set_keys(m, s2, &sk2);
            if (s2 != s && strcmp(sk2.family, sk.family) != 0)
                continue;
            for (size_t r = 0; r < rows->sets[s2].n_rows && rc == 0; r++) {
                uint32_t rec = m->rec_of[s2][r];

                if (bad[rec])
                    continue;
                bad[rec] = 1;
                rc = tds_bmsg_reject_record(m, rec, reason);
            }
        }
    }
    free(bad);
    return rc;
}

static int check_sets(struct tds_bmsg *m)
{
    struct tds_msg_rows *rows = &m->msg.u.rows;
    char err[256];
    int rc;

    m->tables = calloc(rows->n_sets ? rows->n_sets : 1, sizeof(*m->tables));
    m->skip = calloc(rows->n_sets ? rows->n_sets : 1, sizeof(*m->skip));
    m->rec_of = calloc(rows->n_sets ? rows->n_sets : 1, sizeof(*m->rec_of));
    if (!m->tables || !m->skip || !m->rec_of)
        return -ENOMEM;
    for (size_t s = 0; s < rows->n_sets; s++) {
        struct tds_msg_rowset *set = &rows->sets[s];
        const struct tds_table *t = tds_table_find(set->table);

        m->n_rows += set->n_rows;
        /* Refused sets get records too (tables[s] stays NULL: not written). */
        m->rec_of[s] = calloc(set->n_rows ? set->n_rows : 1, sizeof(**m->rec_of));
        if (!m->rec_of[s])
            return -ENOMEM;
        if (set_refused(set, t, err, sizeof(err)) == 0)
            m->tables[s] = t;
    }
    if ((rc = assign_records(m)) != 0)
        return rc;
    if ((rc = reject_refused(m)) != 0)
        return rc;
    /* Values PostgreSQL text cannot hold. */
    for (size_t s = 0; s < rows->n_sets; s++) {
        struct tds_msg_rowset *set = &rows->sets[s];

        if (!m->tables[s])
            continue;
        for (size_t r = 0; r < set->n_rows; r++) {
            for (size_t c = 0; c < set->n_cols; c++) {
                const struct tds_bytes *v = &set->vals[r * set->n_cols + c];

                if (tds_bmsg_row_live(m, s, r) && !tds_copytext_storable(v->p, v->n)) {
                    snprintf(err, sizeof(err), "value of %s.%s contains a NUL byte", set->table,
                             set->cols[c]);
                    if ((rc = tds_bmsg_reject_record(m, m->rec_of[s][r], err)) != 0)
                        return rc;
                }
            }
        }
    }
    return 0;
}

int tds_bmsg_new(struct tds_bmsg **out, const void *frame, size_t len)
{
    struct tds_bmsg *m = calloc(1, sizeof(*m));
    int rc;

    if (!m)
        return -ENOMEM;
    m->frame_len = len;
    rc = tds_msg_decode(frame, len, &m->msg);
    if (rc == 0 && m->msg.type != TDS_MSG_ROWS) {
        char why[128];

        snprintf(why, sizeof(why), "writer received a '%s' message, expected 'rows'",
                 tds_msg_type_name(m->msg.type));
        tds_msg_clear(&m->msg);
        rc = dead_letter(m, frame, len, why);
    } else if (rc > 0) {
        char why[160];

        snprintf(why, sizeof(why), "undecodable rows message: %s", tds_msg_strerror(rc));
        rc = dead_letter(m, frame, len, why);
    } else if (rc == 0) {
        rc = check_sets(m);
    }
    if (rc < 0) {
        tds_bmsg_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

struct tds_bmsg *tds_bmsg_free(struct tds_bmsg *m)
{
    if (!m)
        return NULL;
    for (size_t s = 0; s < m->msg.u.rows.n_sets && m->msg.type == TDS_MSG_ROWS; s++) {
        if (m->skip)
            free(m->skip[s]);
        if (m->rec_of)
            free(m->rec_of[s]);
    }
    free(m->skip);
    free(m->rec_of);
    free(m->tables);
    free(m->probe_in);
    for (size_t i = 0; i < m->n_rej; i++) {
        free(m->rej[i].entity);
        free(m->rej[i].zoho_id);
        free(m->rej[i].reason);
        free(m->rej[i].raw);
    }
    free(m->rej);
    tds_msg_clear(&m->msg);
    free(m);
    return NULL;
}

/* A JSON string, or null for NULL or text that is not UTF-8. */
static json_t *json_text(const char *s)
{
    json_t *j = s ? json_string(s) : NULL;

    return j ? j : json_null();
}

/* The record's raw Zoho JSON (from its DETAIL/LIST row) or its rows as JSON;
 * the rows of refused sets count, read by column name. */
static char *record_raw(const struct tds_bmsg *m, uint32_t rec, const char **zoho_id,
                        const char **family)
{
    const struct tds_msg_rows *rows = &m->msg.u.rows;
    json_t *doc = NULL;
    char *out = NULL;

    for (size_t s = 0; s < rows->n_sets; s++) {
        const struct tds_msg_rowset *set = &rows->sets[s];
        struct setkeys sk;
        bool keys = false;

        if (!m->rec_of[s])
            continue;
        for (size_t r = 0; r < set->n_rows; r++) {
            const struct tds_bytes *v = &set->vals[r * set->n_cols];
            json_t *row;

            if (m->rec_of[s][r] != rec)
                continue;
            if (!keys) {
                set_keys(m, s, &sk);
                keys = true;
            }
            *family = sk.family;
            *zoho_id = sk.id >= 0 ? v[sk.id].p : NULL;
            if (sk.raw >= 0 && v[sk.raw].p && !out) {
                out = tds_copytext_sanitize(v[sk.raw].p, v[sk.raw].n, 0);
                continue;
            }
            if (!doc)
                doc = json_array();
            row = json_object();
            if (!doc || !row) {
                json_decref(row);
                continue;
            }
            json_object_set_new(row, "table", json_text(set->table));
            for (size_t c = 0; c < set->n_cols; c++) {
                char *txt = v[c].p ? tds_copytext_sanitize(v[c].p, v[c].n, 0) : NULL;

                json_object_set_new(row, set->cols[c], txt ? json_string(txt) : json_null());
                free(txt);
            }
            json_array_append_new(doc, row);
        }
    }
    if (!out && doc)
        out = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    return out;
}

int tds_bmsg_reject_record(struct tds_bmsg *m, uint32_t rec, const char *reason)
{
    const struct tds_msg_rows *rows = &m->msg.u.rows;
    const char *zoho_id = NULL, *family = NULL;
    char *raw = record_raw(m, rec, &zoho_id, &family);

    for (size_t s = 0; s < rows->n_sets; s++) {
        if (!m->tables[s])
            continue;
        for (size_t r = 0; r < rows->sets[s].n_rows; r++) {
            if (m->rec_of[s][r] != rec)
                continue;
            if (!m->skip[s]) {
                m->skip[s] = calloc(rows->sets[s].n_rows, 1);
                if (!m->skip[s]) {
                    free(raw);
                    return -ENOMEM;
                }
            }
            m->skip[s][r] = 1;
        }
    }
    return add_reject(m, family, zoho_id, reason, raw);
}

int tds_bmsg_note(struct tds_bmsg *m, const char *reason)
{
    const struct tds_msg_rows *rw = &m->msg.u.rows;
    json_t *doc = json_object();
    char *raw = NULL;
    int rc;

    if (!doc)
        return -ENOMEM;
    if (json_object_set_new(doc, "run", json_text(rw->run)) != 0 ||
        json_object_set_new(doc, "mode", json_text(rw->mode)) != 0 ||
        json_object_set_new(doc, "page", json_integer((json_int_t)rw->page)) != 0 ||
        json_object_set_new(doc, "final", json_boolean(rw->final)) != 0 ||
        json_object_set_new(doc, "cursor", json_text(rw->cursor)) != 0 ||
        !(raw = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER))) {
        json_decref(doc);
        return -ENOMEM;
    }
    json_decref(doc);
    if ((rc = add_reject(m, rw->entity, NULL, reason, raw)) == 0)
        m->rej[m->n_rej - 1].note = true;
    return rc;
}

size_t tds_bmsg_records_rejected(const struct tds_bmsg *m)
{
    size_t n = 0;

    for (size_t i = 0; i < m->n_rej; i++)
        n += !m->rej[i].note;
    return n;
}

void tds_bmsg_drop_rejects(struct tds_bmsg *m, size_t keep)
{
    for (; m->n_rej > keep; m->n_rej--) {
        struct tds_wreject *r = &m->rej[m->n_rej - 1];

        free(r->entity);
        free(r->zoho_id);
        free(r->reason);
        free(r->raw);
    }
}

int tds_bmsg_live_records(const struct tds_bmsg *m, uint32_t **out, size_t *n)
{
    const struct tds_msg_rows *rows = &m->msg.u.rows;
    uint8_t *live = calloc(m->n_recs ? m->n_recs : 1, 1);
    uint32_t *list;
    size_t k = 0;

    *out = NULL; /* on failure too: callers free it */
    *n = 0;
    if (!live)
        return -ENOMEM;
    for (size_t s = 0; s < rows->n_sets; s++)
        for (size_t r = 0; m->tables[s] && r < rows->sets[s].n_rows; r++)
            if (!m->skip[s] || !m->skip[s][r])
                live[m->rec_of[s][r]] = 1;
    list = malloc((m->n_recs ? m->n_recs : 1) * sizeof(*list));
    if (!list) {
        free(live);
        return -ENOMEM;
    }
    for (size_t i = 0; i < m->n_recs; i++)
        if (live[i])
            list[k++] = (uint32_t)i;
    free(live);
    *out = list;
    *n = k;
    return 0;
}

int tds_bmsg_reject_all(struct tds_bmsg *m, const char *reason)
{
    uint32_t *recs;
    size_t n;
    int rc = tds_bmsg_live_records(m, &recs, &n);

    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = tds_bmsg_reject_record(m, recs[i], reason);
    /* No record left to reject (a page without rows, say): a note, so that
     * tds.rejected still says why the message was not written. */
    if (rc == 0 && n == 0 && m->msg.type == TDS_MSG_ROWS &&
        (rc = add_reject(m, m->msg.u.rows.entity, NULL, reason, NULL)) == 0)
        m->rej[m->n_rej - 1].note = true;
    free(recs);
    return rc;
}

int64_t tds_bmsg_records_written(const struct tds_bmsg *m)
{
    const struct tds_msg_rows *rows = &m->msg.u.rows;
    int64_t n = 0;

    if (m->msg.type != TDS_MSG_ROWS)
        return 0;
    for (size_t s = 0; s < rows->n_sets; s++) {
        if (!m->tables[s] || rows->sets[s].kind == TDS_ROWS_CHILD)
            continue;
        for (size_t r = 0; r < rows->sets[s].n_rows; r++)
            n += (!m->skip[s] || !m->skip[s][r]);
    }
    return n;
}
