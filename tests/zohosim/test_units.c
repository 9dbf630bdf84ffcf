/* test_units — unit tests of the simulator's modules that need no HTTP:
 * the JSON writer, time format and parse, org specs, ids and lookups, paging
 * with the last_modified_time filter, sorted views kept across mutations,
 * the webhook signature (Zoho's documented string-to-sign example), and the
 * admitted counts kept per finished minute. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "assert.h"
#include "data.h"
#include "hook.h"
#include "jw.h"
#include "limits.h"
#include "render.h"

static void test_jw_escapes_and_numbers(void)
{
    struct zs_jw w;
    zs_jw_init(&w, 8);
    zs_jw_obj(&w);
    zs_jw_kstr(&w, "s", "a\"b\\c\nd\te\x01 قميص 🚀");
    zs_jw_kdec(&w, "d1", 1250, 2);
    zs_jw_kdec(&w, "d2", -5, 2);
    zs_jw_kdec(&w, "d3", 700, 2);
    zs_jw_kid(&w, "id", 1030000000000001880ULL);
    zs_jw_kid(&w, "none", 0);
    zs_jw_kprefnum(&w, "sku", "SKU-", 42, 6);
    zs_jw_key(&w, "a");
    zs_jw_arr(&w);
    zs_jw_int(&w, INT64_MIN);
    zs_jw_uint(&w, 9223372036854775807ULL);
    zs_jw_null(&w);
    zs_jw_arr_end(&w);
    zs_jw_obj_end(&w);
    size_t len;
    char *s = zs_jw_take(&w, &len);
    T_TRUE(s != NULL);
    T_STR(s, "{\"s\":\"a\\\"b\\\\c\\nd\\te\\u0001 قميص 🚀\",\"d1\":12.5,\"d2\":-0.05,\"d3\":7,"
             "\"id\":\"1030000000000001880\",\"none\":\"\",\"sku\":\"SKU-000042\","
             "\"a\":[-9223372036854775808,9223372036854775807,null]}");
    json_error_t e;
    json_t *j = json_loadb(s, len, 0, &e);
    T_TRUE(j != NULL);
    json_decref(j);
    free(s);
}

static void test_time_format_and_parse(void)
{
    char t[32], d[16];
    zs_fmt_time(t, 1735689600, 180);
    T_STR(t, "2025-01-01T03:00:00+0300");
    zs_fmt_time(t, 1735689600, -270);
    T_STR(t, "2024-12-31T19:30:00-0430");
    zs_fmt_date(d, 1735689600 - 1, 0);
    T_STR(d, "2024-12-31");
    int64_t s;
    T_INT(zs_parse_time("2025-01-01T03:00:00+0300", &s), ==, 0);
    T_INT(s, ==, 1735689600);
    T_INT(zs_parse_time("2025-01-01T05:30:00+05:30", &s), ==, 0);
    T_INT(s, ==, 1735689600);
    T_INT(zs_parse_time("2025-01-01T00:00:00Z", &s), ==, 0);
    T_INT(s, ==, 1735689600);
    T_INT(zs_parse_time("2025-01-01", &s), ==, 0);
    T_INT(s, ==, 1735689600);
    T_INT(zs_parse_time("2025-13-01T00:00:00+0000", &s), ==, -EINVAL);
    T_INT(zs_parse_time("yesterday", &s), ==, -EINVAL);
    T_INT(zs_parse_time("2025-01-01T00:00:00+03", &s), ==, -EINVAL);
    /* format → parse is the identity across offsets and leap years */
    for (int64_t x = 946684800; x < 4102444800LL; x += 86400 * 37 + 3601) {
        zs_fmt_time(t, x, 330);
        T_INT(zs_parse_time(t, &s), ==, 0);
        T_INT(s, ==, x);
    }
}

static void test_org_spec(void)
{
    struct zs_org o;
    char err[128];
    zs_org_defaults(&o, 1);
    T_STR(o.id, "60002");
    T_TRUE(o.locations);
    T_INT(zs_org_parse(&o, "id=7,tz=-04:30,stock=warehouses,product=books,items=5,groups=1,"
                           "ids=bare,rate=3",
                       err, sizeof(err)),
          ==, 0);
    T_STR(o.id, "7");
    T_INT(o.tz_min, ==, -270);
    T_TRUE(!o.locations && o.bare_ids && o.products == ZS_BOOKS);
    T_INT(o.want[ZS_ITEMS], ==, 5);
    T_INT(o.lim.rate_per_min, ==, 3);
    T_INT(zs_org_parse(&o, "items=x", err, sizeof(err)), ==, -EINVAL);
    T_INT(zs_org_parse(&o, "bogus=1", err, sizeof(err)), ==, -EINVAL);
    T_INT(zs_org_parse(&o, "warehouses=0", err, sizeof(err)), ==, -EINVAL);
    T_INT(zs_org_parse(&o, "tz=+9999", err, sizeof(err)), ==, -EINVAL);
}

static void make_org(struct zs_org *o, size_t items)
{
    char err[64];
    zs_org_defaults(o, 0);
    o->seed = 99;
    o->want[ZS_ITEMS] = items;
    T_INT(zs_org_parse(o, "groups=10,contacts=20,invoices=30,salesorders=30", err, sizeof(err)),
          ==, 0);
    T_INT(zs_org_generate(o, 1735689600), ==, 0);
}

static void test_ids_and_lookup(void)
{
    struct zs_org o;
    make_org(&o, 100);
    char id[32];
    for (size_t i = 0; i < o.t[ZS_ITEMS].n; i++) {
        struct zs_rec *r = &o.t[ZS_ITEMS].recs[i];
        zs_render_id(id, r);
        T_INT(strlen(id), ==, 19);
        T_TRUE(zs_org_find(&o, ZS_ITEMS, id) == r);
        T_TRUE(zs_org_find(&o, ZS_CONTACTS, id) == NULL); /* the entity is in the id */
    }
    T_TRUE(zs_org_find(&o, ZS_ITEMS, "12x") == NULL);
    T_TRUE(zs_org_find(&o, ZS_ITEMS, "99999999999999999999") == NULL);
    zs_org_deinit(&o);
}

/* Walks every page and checks the order and the filter against a scan. */
static void check_walk(struct zs_org *o, enum zs_sort sort, bool desc, bool has_after,
                       int64_t after)
{
    struct zs_table *t = &o->t[ZS_ITEMS];
    size_t want = 0;
    for (size_t i = 0; i < t->n; i++)
        want += !t->recs[i].deleted && (!has_after || t->recs[i].modified_s > after);
    uint32_t page[7];
    size_t got = 0;
    const struct zs_rec *prev = NULL;
    for (size_t p = 1;; p++) {
        struct zs_page_req q = {sort, desc, has_after, after, p, 7};
        size_t n;
        bool more;
        T_INT(zs_org_page(o, ZS_ITEMS, &q, page, &n, &more), ==, 0);
        for (size_t k = 0; k < n; k++) {
            const struct zs_rec *r = &t->recs[page[k]];
            T_TRUE(!r->deleted);
            T_TRUE(!has_after || r->modified_s > after);
            if (prev && sort == ZS_SORT_MODIFIED) {
                int64_t a = desc ? r->modified_s : prev->modified_s;
                int64_t b = desc ? prev->modified_s : r->modified_s;
                T_TRUE(a < b || (a == b && (desc ? r->id < prev->id : prev->id < r->id)));
            }
            prev = r;
            got++;
        }
        if (!more)
            break;
        T_INT(n, ==, 7);
    }
    T_INT(got, ==, want);
}

static void test_paging_filter_and_views(void)
{
    struct zs_org o;
    make_org(&o, 300);
    int64_t mid = o.t[ZS_ITEMS].recs[150].modified_s;
    for (int round = 0; round < 4; round++) {
        for (int s = 0; s < ZS_SORT_COUNT; s++) {
            check_walk(&o, (enum zs_sort)s, false, false, 0);
            check_walk(&o, (enum zs_sort)s, true, false, 0);
            check_walk(&o, (enum zs_sort)s, false, true, mid);
        }
        /* views are current now; mutations must keep them exact */
        for (int k = 0; k < 40; k++) {
            size_t idx;
            struct zs_also also;
            enum zs_mut_op op = k % 10 == 0 ? ZS_MUT_CREATE : k % 10 == 1 ? ZS_MUT_DELETE
                                                                          : ZS_MUT_UPDATE;
            T_INT(zs_org_mutate(&o, ZS_ITEMS, op, 1800000000 + round, ZS_VALID, 0, &idx, &also),
                  ==, 0);
        }
    }
    /* the modified view kept in step equals a fresh sort */
    struct zs_view *v = &o.t[ZS_ITEMS].views[ZS_SORT_MODIFIED];
    T_INT(v->gen, ==, o.t[ZS_ITEMS].gen);
    uint32_t *copy = malloc(v->n * sizeof(*copy));
    T_TRUE(copy != NULL);
    memcpy(copy, v->idx, v->n * sizeof(*copy));
    size_t n = v->n;
    v->gen = 0; /* force a rebuild */
    struct zs_page_req q = {ZS_SORT_MODIFIED, false, false, 0, 1, 1};
    size_t got;
    bool more;
    uint32_t one;
    T_INT(zs_org_page(&o, ZS_ITEMS, &q, &one, &got, &more), ==, 0);
    T_INT(v->n, ==, n);
    T_TRUE(memcmp(copy, v->idx, n * sizeof(*copy)) == 0);
    free(copy);
    zs_org_deinit(&o);
}

static void test_distinct_picks_with_a_stamp(void)
{
    struct zs_org o;
    make_org(&o, 10);
    size_t seen[10] = {0};
    for (int k = 0; k < 10; k++) {
        size_t idx;
        struct zs_also also;
        T_INT(zs_org_mutate(&o, ZS_ITEMS, ZS_MUT_UPDATE, 1800000000, ZS_VALID, 7, &idx, &also),
              ==, 0);
        T_INT(seen[idx]++, ==, 0);
    }
    size_t idx;
    struct zs_also also;
    T_INT(zs_org_mutate(&o, ZS_ITEMS, ZS_MUT_UPDATE, 1800000000, ZS_VALID, 7, &idx, &also), ==,
          -ENOENT);
    T_INT(zs_org_mutate(&o, ZS_WAREHOUSES, ZS_MUT_DELETE, 1800000000, ZS_VALID, 0, &idx, &also),
          ==, -ENOTSUP);
    zs_org_deinit(&o);
}

static void test_render_is_deterministic_and_valid_json(void)
{
    struct zs_org a, b;
    make_org(&a, 50);
    make_org(&b, 50);
    for (int e = 0; e < ZS_ENT_COUNT; e++) {
        for (size_t i = 0; i < a.t[e].n; i++) {
            struct zs_jw wa, wb;
            zs_jw_init(&wa, 64);
            zs_jw_init(&wb, 64);
            zs_render(&wa, &a, (enum zs_ent)e, &a.t[e].recs[i], true, false);
            zs_render(&wb, &b, (enum zs_ent)e, &b.t[e].recs[i], true, false);
            size_t la, lb;
            char *sa = zs_jw_take(&wa, &la), *sb = zs_jw_take(&wb, &lb);
            T_TRUE(sa && sb);
            T_STR(sa, sb);
            json_error_t err;
            json_t *j = json_loadb(sa, la, 0, &err);
            if (!j)
                T_FAIL("invalid JSON for entity %d record %zu: %s", e, i, err.text);
            json_decref(j);
            free(sa);
            free(sb);
        }
    }
    zs_org_deinit(&a);
    zs_org_deinit(&b);
}

static void test_signature_matches_zoho_example(void)
{
    /* Zoho Billing's worked example: query subscription_id=90343 and
     * name=basic, JSON body appended; digest computed with Python's hmac. */
    const char *names[] = {"subscription_id", "name"}, *values[] = {"90343", "basic"};
    const char *body = "{\"created_date\":\"2019-03-06\",\"event_id\":\"5675\"}";
    char sig[65];
    zs_hook_sign("key12345678901", names, values, 2, body, strlen(body), sig);
    T_STR(sig, "b3d2b5dc4cb11237e418dfc654abb7d46e0a8dcc6762ed091091c58c29a78f89");
}

static void test_finished_minutes_are_counted(void)
{
    struct zs_limits l;
    struct zs_limit_hdr h;
    int64_t w[ZS_WINDOWS_KEPT + 8], seq = -1;

    zs_limits_init(&l, 3, 0, 0, 100, 0, 1000);
    T_INT(zs_limits_windows(&l, 1000, w, 8, &seq), ==, 0);
    T_INT(seq, ==, 0);
    for (int i = 0; i < 4; i++) /* three admitted, the fourth refused (44) */
        T_INT(zs_limits_enter(&l, 1010 + i, &h), ==, i < 3 ? 0 : 44);
    T_INT(zs_limits_enter(&l, 1150, &h), ==, 0); /* the next minute */
    /* nothing in the minutes from 1200 and 1300; now in the one from 1400 */
    T_INT(zs_limits_windows(&l, 1450, w, 8, &seq), ==, 4);
    T_INT(seq, ==, 4);
    T_INT(w[0], ==, 3);
    T_INT(w[1], ==, 1);
    T_INT(w[2], ==, 0);
    T_INT(w[3], ==, 0);
    /* max caps the answer at the latest ones */
    T_INT(zs_limits_windows(&l, 1450, w, 2, &seq), ==, 2);
    T_INT(w[0], ==, 0);
    /* a silence longer than the ring: only empty minutes are kept */
    T_INT(zs_limits_enter(&l, 1460, &h), ==, 0);
    T_INT(zs_limits_windows(&l, 1400 + 100 * (ZS_WINDOWS_KEPT + 1) + 5, w,
                            ZS_WINDOWS_KEPT + 8, &seq), ==, ZS_WINDOWS_KEPT);
    T_INT(seq, ==, 4 + ZS_WINDOWS_KEPT + 1);
    for (int i = 0; i < ZS_WINDOWS_KEPT; i++)
        T_INT(w[i], ==, 0);
    /* one fewer: the minute with the request is the oldest kept */
    zs_limits_deinit(&l);
    zs_limits_init(&l, 3, 0, 0, 100, 0, 0);
    T_INT(zs_limits_enter(&l, 10, &h), ==, 0);
    T_INT(zs_limits_windows(&l, 100 * ZS_WINDOWS_KEPT + 5, w, ZS_WINDOWS_KEPT, &seq), ==,
          ZS_WINDOWS_KEPT);
    T_INT(w[0], ==, 1);
    T_INT(w[1], ==, 0);
    zs_limits_deinit(&l);
}

int main(void)
{
    T_RUN(test_jw_escapes_and_numbers);
    T_RUN(test_time_format_and_parse);
    T_RUN(test_org_spec);
    T_RUN(test_ids_and_lookup);
    T_RUN(test_paging_filter_and_views);
    T_RUN(test_distinct_picks_with_a_stamp);
    T_RUN(test_render_is_deterministic_and_valid_json);
    T_RUN(test_signature_matches_zoho_example);
    T_RUN(test_finished_minutes_are_counted);
    return 0;
}
