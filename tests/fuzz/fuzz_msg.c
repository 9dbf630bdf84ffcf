/* fuzz_msg — fuzz target for common/msg decoding.
 *
 * Any input must decode to 0 or a positive TDS_MSG_E_* code without a crash,
 * leak or sanitizer report, leaving the message empty on error. Whatever
 * decodes must encode again, and encoding is a fixed point after one round:
 * encode(decode(encode(decode(x)))) == encode(decode(x)). The builders are
 * exercised on decoded rows messages, since that is how the processor and
 * writer use them. Built with libFuzzer under clang, with tests/fuzz/replay.c
 * otherwise.
 */
#include "msg.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                            \
    do {                                                                    \
        if (!(c)) {                                                         \
            fprintf(stderr, "fuzz_msg: check failed: %s (line %d)\n", #c, \
                    __LINE__);                                              \
            abort();                                                        \
        }                                                                   \
    } while (0)

static void exercise_builders(struct tds_msg *m)
{
    struct tds_msg_rows *r = &m->u.rows;
    if (r->n_sets > 0 && r->sets[0].n_rows > 0) {
        struct tds_msg_rowset *s = &r->sets[0];
        /* re-add the first row: the values must be copied, not aliased,
         * because the growth may move s->vals */
        size_t n = s->n_cols;
        struct tds_bytes *copy = n ? malloc(n * sizeof(*copy)) : NULL;
        if (n && !copy)
            return;
        if (n)
            memcpy(copy, s->vals, n * sizeof(*copy));
        size_t before = s->n_rows;
        if (tds_msg_rowset_add_row(s, copy) == 0) {
            CHECK(s->n_rows == before + 1);
            for (size_t c = 0; c < n; c++) {
                const struct tds_bytes *a = &s->vals[c], *b = &s->vals[before * n + c];
                CHECK((a->p == NULL) == (b->p == NULL));
                CHECK(a->n == b->n);
                CHECK(!a->p || memcmp(a->p, b->p, a->n) == 0);
            }
        }
        free(copy);
    }
    const char *cols[] = { "org_id", "x" };
    struct tds_msg_rowset *s = tds_msg_rows_add_set(r, "t", TDS_ROWS_DELETE, cols, 2);
    if (s) {
        struct tds_bytes v[2] = { { "o", 1 }, { NULL, 0 } };
        (void)tds_msg_rowset_add_row(s, v);
    }
    (void)tds_msg_rows_add_reject(r, NULL, NULL, "fuzz", "\0", 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tds_msg m;
    int rc = tds_msg_decode(data, size, &m);
    CHECK(rc == 0 || rc == -ENOMEM || (rc >= TDS_MSG_E_MALFORMED && rc <= TDS_MSG_E_TYPE));
    CHECK(tds_msg_strerror(rc) != NULL);
    if (rc != 0) {
        CHECK(m.id == NULL && m.type == 0);
        return 0;
    }
    CHECK(m.id != NULL && m.v == TDS_MSG_VERSION);
    CHECK(strcmp(tds_msg_type_name(m.type), "unknown") != 0);

    char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    rc = tds_msg_encode(&m, &a, &alen);
    /* absent optional keys come back as nil, so a frame near the limit may
     * grow past it; anything else that decoded must encode */
    CHECK(rc == 0 || rc == -ENOMEM || rc == TDS_MSG_E_TOO_LARGE);
    if (rc == 0) {
        struct tds_msg m2;
        rc = tds_msg_decode(a, alen, &m2);
        CHECK(rc == 0 || rc == -ENOMEM);
        if (rc == 0) {
            CHECK(m2.type == m.type);
            rc = tds_msg_encode(&m2, &b, &blen);
            CHECK(rc == 0 || rc == -ENOMEM);
            if (rc == 0)
                CHECK(alen == blen && memcmp(a, b, alen) == 0);
            if (m2.type == TDS_MSG_ROWS)
                exercise_builders(&m2);
            tds_msg_clear(&m2);
        }
    }
    free(a);
    free(b);
    tds_msg_clear(&m);
    return 0;
}
