/* transform_fuzz — the body shared by the processor's transform fuzz targets
 * (fuzz_products.c, fuzz_inventory.c, fuzz_customers.c, fuzz_sales.c).
 *
 * Input: one selector byte (entity, and form: list, detail, webhook body or
 * webhook delete) followed by the record's JSON. Any input must give exactly
 * one of: rows (at least the record's own row) or one reject — never a crash,
 * leak or sanitizer report. Every value handed to the writer must be valid
 * UTF-8 without NUL, every jsonb value (raw, custom_fields, attributes) must
 * parse as JSON, and the rows message must encode and decode again.
 *
 * Included once by each target after it defines TRANSFORM_FUZZ_NAME (its
 * name, for failure lines) and `static const char *const entities[]` (the
 * entities the selector byte picks from); it defines LLVMFuzzerTestOneInput.
 */
#ifndef TRANSFORM_FUZZ_H
#define TRANSFORM_FUZZ_H

#ifndef TRANSFORM_FUZZ_NAME
#error "define TRANSFORM_FUZZ_NAME and entities[] before including transform_fuzz.h"
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entities.h"
#include "msg.h"
#include "pjson.h"
#include "transform.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                     \
    do {                                                                             \
        if (!(c)) {                                                                  \
            fprintf(stderr, TRANSFORM_FUZZ_NAME ": check failed: %s (line %d)\n", #c, __LINE__); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

static struct tds_transform *tf;
static struct tds_pjson_arena *arena;

static void check_text(const struct tds_bytes *b)
{
    if (!b->p)
        return;
    CHECK(tds_utf8_valid(b->p, b->n));
    CHECK(memchr(b->p, '\0', b->n) == NULL);
}

static void check_json(const struct tds_bytes *b)
{
    struct tds_pjson *root;
    char err[256];
    if (!b->p)
        return;
    tds_pjson_arena_reset(arena);
    CHECK(tds_pjson_parse(arena, b->p, b->n, &root, err, sizeof(err)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tds_msg m;
    struct tds_transform_result res;
    const struct tds_entity *e;
    char *buf = NULL;
    size_t len = 0;
    int rc;

    if (size < 1)
        return 0;
    if (!tf && (tds_transform_new(&tf) != 0 || tds_pjson_arena_new(&arena) != 0))
        abort();
    e = tds_entity_find(entities[data[0] % (sizeof(entities) / sizeof(entities[0]))]);
    CHECK(e != NULL);
    memset(&m, 0, sizeof(m));
    m.type = TDS_MSG_ROWS;
    m.v = TDS_MSG_VERSION;
    m.id = strdup("rows-fuzz");
    m.u.rows.org = strdup("60001");
    m.u.rows.origin = strdup("fuzz.o");
    m.u.rows.src = strdup("pg-fuzz");
    CHECK(m.id && m.u.rows.org && m.u.rows.origin && m.u.rows.src);
    tds_transform_begin(tf, &m.u.rows);
    const char *json = (const char *)data + 1;
    size_t n = size - 1;
    switch ((data[0] >> 4) & 3) {
    case 0:
        rc = tds_transform_record(tf, &m.u.rows, e, "60001", json, n, TDS_FORM_LIST, &res);
        break;
    case 1:
        rc = tds_transform_record(tf, &m.u.rows, e, "60001", json, n, TDS_FORM_DETAIL, &res);
        break;
    case 2:
        rc = tds_transform_event_body(tf, &m.u.rows, e, "60001", json, n, &res);
        break;
    default:
        rc = tds_transform_delete(tf, &m.u.rows, e, "60001", NULL, json, n, &res);
        break;
    }
    CHECK(rc == 0);
    const struct tds_msg_rows *r = &m.u.rows;
    if (res.rejected) {
        CHECK(r->n_rejects == 1 && r->n_sets == 0 && res.reason_class != NULL);
        CHECK(r->rejects[0].reason && r->rejects[0].reason[0]);
        CHECK(tds_utf8_valid(r->rejects[0].reason, strlen(r->rejects[0].reason)));
        check_text(&r->rejects[0].raw);
    } else {
        CHECK(r->n_rejects == 0 && r->n_sets >= 1 && res.rows >= 1);
    }
    size_t rows = 0;
    for (size_t i = 0; i < r->n_sets; i++) {
        const struct tds_msg_rowset *s = &r->sets[i];
        const struct tds_table *t = tds_table_find(s->table);
        CHECK(t != NULL);
        rows += s->n_rows;
        for (size_t row = 0; row < s->n_rows; row++)
            for (size_t c = 0; c < s->n_cols; c++) {
                const struct tds_bytes *b = &s->vals[row * s->n_cols + c];
                check_text(b);
                if (strcmp(s->cols[c], "raw") == 0 || strcmp(s->cols[c], "custom_fields") == 0 ||
                    strcmp(s->cols[c], "attributes") == 0)
                    check_json(b);
                if (c < 2)
                    CHECK(b->p != NULL); /* org_id and the id are never NULL */
            }
    }
    CHECK(rows == res.rows);
    CHECK(tds_msg_encode(&m, &buf, &len) == 0);
    struct tds_msg back;
    CHECK(tds_msg_decode(buf, len, &back) == 0);
    CHECK(back.u.rows.n_sets == r->n_sets && back.u.rows.n_rejects == r->n_rejects);
    tds_msg_clear(&back);
    free(buf);
    tds_msg_clear(&m);
    return 0;
}

#endif
