/* test_units — unit tests of the simulator's modules that need no HTTP:
 * the JSON writer, time format and parse, org specs, ids and lookups, paging
 * with the last_modified_time filter, sorted views kept across mutations,
 * the webhook signature (Zoho's documented string-to-sign example), the
 * admitted counts kept per finished minute, and the stock that invoices and
 * sales orders move without changing their items. */
#include <curl/curl.h>
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
#include "sim.h"

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

static json_t *render_json(struct zs_org *o, enum zs_ent e, size_t i, bool detail)
{
    struct zs_jw w;
    zs_jw_init(&w, 4096);
    zs_render(&w, o, e, &o->t[e].recs[i], detail, false);
    size_t len;
    char *s = zs_jw_take(&w, &len);
    T_TRUE(s != NULL);
    json_error_t err;
    json_t *j = json_loadb(s, len, 0, &err);
    if (!j)
        T_FAIL("invalid JSON: %s", err.text);
    free(s);
    return j;
}

/* The record without its stock fields: what must stay as it was. */
static void strip_stock(json_t *j)
{
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
            strip_stock(v);
        return;
    }
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(j, tmp, k, v) {
        if (strstr(k, "stock"))
            json_object_del(j, k);
        else
            strip_stock(v);
    }
}

static int64_t jget(json_t *o, const char *prefix, const char *k)
{
    char key[96];
    snprintf(key, sizeof(key), "%s%s", prefix, k);
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        T_FAIL("%s is not an integer", key);
    return json_integer_value(v);
}

/* The rendered item's sites and totals agree with zs_item_site_stock and
 * keep the invariants; returns the sites' stock. */
static void check_item_stock(struct zs_org *o, size_t i, json_t *item, struct zs_stock *sites)
{
    const char *p = o->locations ? "location_" : "warehouse_";
    json_t *arr = json_object_get(item, o->locations ? "locations" : "warehouses");
    T_INT(json_array_size(arr), ==, o->t[ZS_WAREHOUSES].n);
    struct zs_stock t = {0};
    for (size_t k = 0; k < json_array_size(arr); k++) {
        json_t *row = json_array_get(arr, k);
        struct zs_stock *s = &sites[k];
        zs_item_site_stock(o, &o->t[ZS_ITEMS].recs[i], k, s);
        T_INT(jget(row, p, "stock_on_hand"), ==, s->soh);
        T_INT(jget(row, p, "available_stock"), ==, s->avail);
        T_INT(jget(row, p, "committed_stock"), ==, s->committed);
        T_INT(jget(row, p, "available_for_sale_stock"), ==, s->afs);
        T_INT(jget(row, p, "actual_stock_on_hand"), ==, s->a_soh);
        T_INT(jget(row, p, "actual_committed_stock"), ==, s->a_committed);
        T_INT(jget(row, p, "actual_available_for_sale_stock"), ==, s->a_afs);
        T_TRUE(s->committed >= 0 && s->committed <= s->soh && s->afs == s->soh - s->committed);
        T_TRUE(s->a_committed >= 0 && s->a_committed <= s->a_soh &&
               s->a_afs == s->a_soh - s->a_committed);
        T_TRUE(s->avail == s->soh && s->a_avail == s->a_soh);
        t.soh += s->soh;
        t.committed += s->committed;
        t.afs += s->afs;
        t.a_soh += s->a_soh;
        t.a_committed += s->a_committed;
    }
    T_INT(jget(item, "", "stock_on_hand"), ==, t.soh);
    T_INT(jget(item, "", "available_stock"), ==, t.soh);
    T_INT(jget(item, "", "committed_stock"), ==, t.committed);
    T_INT(jget(item, "", "available_for_sale_stock"), ==, t.afs);
    T_INT(jget(item, "", "actual_available_stock"), ==, t.a_soh);
    T_INT(jget(item, "", "actual_committed_stock"), ==, t.a_committed);
}

/* One moves_stock request on e; checks every item of the org against its
 * state before, then returns. */
static void check_moves(struct zs_sim *sim, struct zs_org *o, enum zs_ent e)
{
    size_t ni = o->t[ZS_ITEMS].n, nw = o->t[ZS_WAREHOUSES].n;
    json_t **before = calloc(ni, sizeof(*before));
    struct zs_stock *sb = calloc(ni * nw, sizeof(*sb)), *sa = calloc(ni * nw, sizeof(*sa));
    struct zs_rec *recs = malloc(ni * sizeof(*recs));
    T_TRUE(before && sb && sa && recs);
    memcpy(recs, o->t[ZS_ITEMS].recs, ni * sizeof(*recs));
    for (size_t i = 0; i < ni; i++) {
        before[i] = render_json(o, ZS_ITEMS, i, true);
        check_item_stock(o, i, before[i], sb + i * nw);
    }

    struct zs_jw w;
    zs_jw_init(&w, 256);
    zs_jw_obj(&w);
    const long n[ZS_MUT_OPS] = {[ZS_MUT_UPDATE] = 6, [ZS_MUT_CREATE] = 3, [ZS_MUT_DELETE] = 1};
    T_INT(zs_sim_mutate_request(sim, o, e, n, true, &w), ==, 0);
    zs_jw_obj_end(&w);
    size_t len;
    char *txt = zs_jw_take(&w, &len);
    json_error_t err;
    json_t *reply = json_loadb(txt, len, 0, &err);
    T_TRUE(reply != NULL);
    free(txt);

    /* what the lines of the updated and created documents ask for, per item
     * and site, and the items they name */
    int64_t *want = calloc(ni * nw, sizeof(*want));
    bool *named = calloc(ni, sizeof(*named));
    T_TRUE(want && named);
    const char *sets[] = {"updated", "created"};
    for (int k = 0; k < 2; k++) {
        json_t *arr = json_object_get(reply, sets[k]);
        T_INT(json_array_size(arr), ==, n[k]);
        for (size_t d = 0; d < json_array_size(arr); d++) {
            const struct zs_rec *doc =
                zs_org_find(o, e, json_string_value(json_array_get(arr, d)));
            T_TRUE(doc != NULL);
            struct zs_line l[ZS_MAX_LINES];
            unsigned nl = zs_doc_stock_lines(o, doc, l);
            T_TRUE(nl >= 1);
            for (unsigned x = 0; x < nl; x++) {
                want[l[x].item * nw + l[x].site] += l[x].qty;
                named[l[x].item] = true;
            }
        }
    }
    json_t *moved = json_object_get(reply, "stock_moved");
    size_t n_named = 0;
    for (size_t i = 0; i < ni; i++)
        n_named += named[i];
    T_INT(json_array_size(moved), ==, n_named);
    T_TRUE(n_named > 0);
    for (size_t k = 0; k < json_array_size(moved); k++) {
        const struct zs_rec *it =
            zs_org_find(o, ZS_ITEMS, json_string_value(json_array_get(moved, k)));
        T_TRUE(it != NULL && named[zs_rec_index(&o->t[ZS_ITEMS], it)]);
    }

    for (size_t i = 0; i < ni; i++) {
        const struct zs_rec *r = &o->t[ZS_ITEMS].recs[i];
        T_TRUE(memcmp(r, &recs[i], sizeof(*r)) == 0); /* version, times, all of it */
        json_t *after = render_json(o, ZS_ITEMS, i, true);
        check_item_stock(o, i, after, sa + i * nw);
        T_STR(json_string_value(json_object_get(after, "last_modified_time")),
              json_string_value(json_object_get(before[i], "last_modified_time")));
        if (!named[i]) {
            T_TRUE(json_equal(after, before[i]));
            json_decref(after);
            continue;
        }
        /* each site a line names moved by its quantity, all one way for
         * invoices; sales orders commit it */
        int64_t dir = 0, dsoh = 0, dcom = 0;
        for (size_t k = 0; k < nw; k++) {
            const struct zs_stock *b = &sb[i * nw + k], *a = &sa[i * nw + k];
            int64_t q = want[i * nw + k];
            dsoh += a->soh - b->soh;
            dcom += a->committed - b->committed;
            if (!q) {
                T_TRUE(memcmp(a, b, sizeof(*a)) == 0);
            } else if (e == ZS_INVOICES) {
                int64_t d = a->soh - b->soh;
                T_TRUE(d == q || d == -q);
                T_TRUE(!dir || dir == d / q);
                dir = d / q;
                T_INT(a->a_soh, ==, b->a_soh);
            } else {
                T_INT(a->committed - b->committed, ==, q);
                T_INT(a->a_committed - b->a_committed, ==, q);
            }
        }
        T_TRUE(e == ZS_INVOICES ? dsoh != 0 : dcom > 0);
        /* and nothing but the stock changed */
        strip_stock(after);
        strip_stock(before[i]);
        T_TRUE(json_equal(after, before[i]));
        json_decref(after);
    }
    /* the list form and the group detail's variants show the detail's totals */
    for (size_t g = 0; g < o->t[ZS_ITEM_GROUPS].n; g++) {
        if (o->t[ZS_ITEM_GROUPS].recs[g].deleted)
            continue;
        json_t *gj = render_json(o, ZS_ITEM_GROUPS, g, true);
        json_t *vs = json_object_get(gj, "items");
        for (size_t k = 0; k < json_array_size(vs); k++) {
            json_t *v = json_array_get(vs, k);
            const struct zs_rec *it =
                zs_org_find(o, ZS_ITEMS, json_string_value(json_object_get(v, "item_id")));
            T_TRUE(it != NULL);
            size_t i = zs_rec_index(&o->t[ZS_ITEMS], it);
            json_t *list = render_json(o, ZS_ITEMS, i, false);
            json_t *detail = render_json(o, ZS_ITEMS, i, true);
            static const char *const totals[] = {
                "stock_on_hand", "available_stock", "committed_stock",
                "available_for_sale_stock", "actual_available_stock", "actual_committed_stock",
                "actual_available_for_sale_stock"};
            for (size_t x = 0; x < sizeof(totals) / sizeof(totals[0]); x++) {
                T_INT(jget(list, "", totals[x]), ==, jget(detail, "", totals[x]));
                T_INT(jget(v, "", totals[x]), ==, jget(detail, "", totals[x]));
            }
            json_decref(list);
            json_decref(detail);
        }
        json_decref(gj);
    }
    for (size_t i = 0; i < ni; i++)
        json_decref(before[i]);
    json_decref(reply);
    free(before);
    free(sb);
    free(sa);
    free(recs);
    free(want);
    free(named);
}

static void test_documents_move_stock_not_items(void)
{
    struct zs_org *orgs = calloc(2, sizeof(*orgs));
    T_TRUE(orgs != NULL);
    char err[64];
    for (int k = 0; k < 2; k++) { /* warehouses[], then locations[] */
        zs_org_defaults(&orgs[k], k);
        orgs[k].seed = 5;
        T_INT(zs_org_parse(&orgs[k], "items=60,groups=8,invoices=40,salesorders=40,warehouses=3",
                           err, sizeof(err)),
              ==, 0);
        T_INT(zs_org_generate(&orgs[k], 1735689600), ==, 0);
    }
    struct zs_auth_cfg ac = {.client_id = "c", .client_secret = "s", .token_ttl_s = 60};
    struct zs_auth *auth;
    T_INT(zs_auth_new(&auth, &ac), ==, 0);
    struct zs_sim_cfg sc = {.seed = 1, .epoch_s = 1735689600, .minute_ms = 60000,
                            .day_ms = 86400000};
    struct zs_sim *sim;
    T_INT(zs_sim_new(&sim, &sc, orgs, 2, auth), ==, 0);
    for (size_t k = 0; k < 2; k++) {
        /* twice each: the second moves stock that is already moved */
        check_moves(sim, &sim->orgs[k], ZS_INVOICES);
        check_moves(sim, &sim->orgs[k], ZS_SALESORDERS);
        check_moves(sim, &sim->orgs[k], ZS_INVOICES);
        check_moves(sim, &sim->orgs[k], ZS_SALESORDERS);
        T_TRUE(sim->orgs[k].stock.n > 0);
    }
    const long n[ZS_MUT_OPS] = {[ZS_MUT_UPDATE] = 1};
    struct zs_jw w;
    zs_jw_init(&w, 64);
    T_INT(zs_sim_mutate_request(sim, &sim->orgs[0], ZS_ITEMS, n, true, &w), ==, -EINVAL);
    zs_jw_deinit(&w);
    sim = zs_sim_free(sim);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    T_RUN(test_jw_escapes_and_numbers);
    T_RUN(test_time_format_and_parse);
    T_RUN(test_org_spec);
    T_RUN(test_ids_and_lookup);
    T_RUN(test_paging_filter_and_views);
    T_RUN(test_distinct_picks_with_a_stamp);
    T_RUN(test_render_is_deterministic_and_valid_json);
    T_RUN(test_signature_matches_zoho_example);
    T_RUN(test_finished_minutes_are_counted);
    T_RUN(test_documents_move_stock_not_items);
    curl_global_cleanup();
    return 0;
}
