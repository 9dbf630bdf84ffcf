/* Unit tests for ingress/webhook.c: content types, entity by key or ?entity=,
 * full record vs id-only, deletes (the exact names, the envelope's only),
 * event ids (an id-only change is never a duplicate), form JSONString, bad
 * bodies, the memory a large body leaves behind, and a delete's signed
 * parameters split anew. */
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
/* ASan's runtime (sanitizer/allocator_interface.h, which gcc does not
 * install): bytes the program holds, freed memory in its quarantine not
 * counted. */
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_bytes(void) { return __sanitizer_get_current_allocated_bytes(); }
#else
#include <malloc.h>
static size_t heap_bytes(void)
{
    struct mallinfo2 m = mallinfo2();

    return m.uordblks + m.hblkhd;
}
#endif

#include "assert.h"
#include "entities.h"
#include "webhook.h"

static int parse(struct tds_webhook *w, enum tds_webhook_kind k, const char *body,
                 const char *entity, const char *event)
{
    return tds_webhook_parse(w, k, body, strlen(body), entity, event);
}

static void test_kinds(void)
{
    T_INT(tds_webhook_kind("application/json"), ==, TDS_WEBHOOK_JSON);
    T_INT(tds_webhook_kind("application/json; charset=UTF-8"), ==, TDS_WEBHOOK_JSON);
    T_INT(tds_webhook_kind("Application/JSON"), ==, TDS_WEBHOOK_JSON);
    T_INT(tds_webhook_kind("application/x-www-form-urlencoded;charset=UTF-8"), ==,
          TDS_WEBHOOK_FORM);
    T_INT(tds_webhook_kind("text/plain"), ==, TDS_WEBHOOK_UNSUPPORTED);
    T_INT(tds_webhook_kind("application/jsonx"), ==, TDS_WEBHOOK_UNSUPPORTED);
    T_INT(tds_webhook_kind(NULL), ==, TDS_WEBHOOK_UNSUPPORTED);
    /* a form whose body is a JSON object is JSON; form encoding writes { as %7B */
    T_INT(tds_webhook_body_kind(TDS_WEBHOOK_FORM, "{\"item\":{}}", 11), ==, TDS_WEBHOOK_JSON);
    T_INT(tds_webhook_body_kind(TDS_WEBHOOK_FORM, " \r\n{\"a\":1}", 10), ==, TDS_WEBHOOK_JSON);
    T_INT(tds_webhook_body_kind(TDS_WEBHOOK_FORM, "JSONString=%7B%7D", 17), ==, TDS_WEBHOOK_FORM);
    T_INT(tds_webhook_body_kind(TDS_WEBHOOK_FORM, "%7B%22a%22%3A1%7D=", 18), ==, TDS_WEBHOOK_FORM);
    T_INT(tds_webhook_body_kind(TDS_WEBHOOK_FORM, "  ", 2), ==, TDS_WEBHOOK_FORM);
    T_INT(tds_webhook_body_kind(TDS_WEBHOOK_FORM, NULL, 0), ==, TDS_WEBHOOK_FORM);
    T_INT(tds_webhook_body_kind(TDS_WEBHOOK_JSON, "x=1", 3), ==, TDS_WEBHOOK_JSON);
    T_INT(tds_webhook_body_kind(TDS_WEBHOOK_UNSUPPORTED, "{}", 2), ==, TDS_WEBHOOK_UNSUPPORTED);
}

static void test_full_record(void)
{
    struct tds_webhook w, w2;
    const char *b = "{\"item\":{\"item_id\":\"4600000000000012345\",\"name\":\"\xd8\xb9\","
                    "\"last_modified_time\":\"2026-01-05T10:00:00+0300\"}}";

    T_INT(parse(&w, TDS_WEBHOOK_JSON, b, NULL, NULL), ==, 0);
    T_STR(w.entity->name, "items");
    T_STR(w.zoho_id, "4600000000000012345");
    T_TRUE(w.has_record && !w.is_delete);
    T_INT(strlen(w.event_id), ==, 64);
    T_TRUE(w.json == b);
    /* Same delivery → same event id. */
    T_INT(parse(&w2, TDS_WEBHOOK_JSON, b, NULL, NULL), ==, 0);
    T_STR(w.event_id, w2.event_id);
    tds_webhook_clear(&w);
    tds_webhook_clear(&w2);
}

static void test_id_only_and_entity_param(void)
{
    struct tds_webhook w;

    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"item_id\":460000000026049}", "items", NULL), ==, 0);
    T_STR(w.entity->name, "items");
    T_STR(w.zoho_id, "460000000026049");
    T_TRUE(!w.has_record);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"salesorder\":{\"salesorder_id\":\"9\"}}", NULL, NULL),
          ==, 0);
    T_STR(w.entity->name, "sales_orders");
    T_TRUE(!w.has_record);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"x\":1}", "nope", NULL), ==, TDS_WEBHOOK_E_ENTITY);
    tds_webhook_clear(&w);
}

static void test_delete_and_event_id(void)
{
    struct tds_webhook w;
    const char *b = "{\"item\":{\"item_id\":\"1\",\"last_modified_time\":\"t\"}}";

    T_INT(parse(&w, TDS_WEBHOOK_JSON, b, NULL, "deleted"), ==, 0);
    T_TRUE(w.is_delete);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_JSON,
                "{\"event_type\":\"item_deleted\",\"event_id\":\"5675\",\"item\":{\"item_id\":\"1\"}}",
                NULL, NULL), ==, 0);
    T_TRUE(w.is_delete);
    T_STR(w.event_id, "5675");
    tds_webhook_clear(&w);
}

/* Only the names that mean a delete, whole: a suffix match took "undelete"
 * and "item_not_deleted" for deletes. And only the envelope says so: a flat
 * payload's fields (?entity=) are the record's own, whatever their names. */
static void test_delete_names_are_exact(void)
{
    static const char *const yes[] = {"deleted", "delete", "DELETED", "Item_Deleted",
                                      "item.deleted", "item_delete", "items_deleted",
                                      "item.Delete"};
    static const char *const no[] = {"undelete", "undeleted", "item_not_deleted", "not deleted",
                                     "deleted_items", "contact_deleted", "itemdeleted",
                                     "_deleted", "item__deleted", ""};
    const char *b = "{\"item\":{\"item_id\":\"1\",\"last_modified_time\":\"t\"}}";
    struct tds_webhook w;
    char body[256];

    for (size_t i = 0; i < sizeof(yes) / sizeof(*yes); i++) {
        T_INT(parse(&w, TDS_WEBHOOK_JSON, b, NULL, yes[i]), ==, 0);
        if (!w.is_delete)
            T_FAIL("?event=%s is a delete", yes[i]);
        tds_webhook_clear(&w);
        snprintf(body, sizeof(body), "{\"action\":\"%s\",\"item\":{\"item_id\":\"1\"}}",
                 yes[i]);
        T_INT(parse(&w, TDS_WEBHOOK_JSON, body, NULL, NULL), ==, 0);
        if (!w.is_delete)
            T_FAIL("an envelope's action %s is a delete", yes[i]);
        tds_webhook_clear(&w);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(*no); i++) {
        T_INT(parse(&w, TDS_WEBHOOK_JSON, b, NULL, no[i]), ==, 0);
        if (w.is_delete)
            T_FAIL("?event=%s is no delete", no[i]);
        tds_webhook_clear(&w);
        snprintf(body, sizeof(body), "{\"event_type\":\"%s\",\"item\":{\"item_id\":\"1\"}}",
                 no[i]);
        T_INT(parse(&w, TDS_WEBHOOK_JSON, body, NULL, NULL), ==, 0);
        if (w.is_delete)
            T_FAIL("an envelope's event_type %s is no delete", no[i]);
        tds_webhook_clear(&w);
    }
    /* the sales order's names: its key, its name, the name's singular */
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"salesorder\":{\"salesorder_id\":\"9\"}}", NULL,
                "sales_order_deleted"), ==, 0);
    T_TRUE(w.is_delete);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"salesorder\":{\"salesorder_id\":\"9\"}}", NULL,
                "salesorder.deleted"), ==, 0);
    T_TRUE(w.is_delete);
    tds_webhook_clear(&w);
    /* a flat payload: its "action" and "event" are the record's fields */
    T_INT(parse(&w, TDS_WEBHOOK_JSON,
                "{\"item_id\":\"1\",\"action\":\"deleted\",\"event\":\"item_deleted\","
                "\"last_modified_time\":\"t\"}",
                "items", NULL), ==, 0);
    T_TRUE(!w.is_delete && w.has_record);
    tds_webhook_clear(&w);
    /* ... and ?event= still says it for such a payload */
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"item_id\":\"1\"}", "items", "item_deleted"), ==, 0);
    T_TRUE(w.is_delete);
    tds_webhook_clear(&w);
    /* with ?entity= and the record under its key, the top level is the envelope */
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"operation\":\"delete\",\"item\":{\"item_id\":\"1\"}}",
                "items", NULL), ==, 0);
    T_TRUE(w.is_delete);
    tds_webhook_clear(&w);
}

/* A 1 MiB body of a long array grew the thread's reader to ~23 MiB (its
 * scratch stack of values, and 4 MiB of chunks), kept after the parse for
 * as long as the thread lived. */
static void test_a_large_body_leaves_no_memory_held(void)
{
    size_t n = 1000 * 1000, before, after;
    char *big = malloc(n + 1);
    struct tds_webhook w;
    size_t off;

    T_TRUE(big != NULL);
    off = (size_t)snprintf(big, n, "{\"item\":{\"item_id\":\"1\",\"last_modified_time\":\"t\","
                                   "\"a\":[0");
    while (off + 6 < n) {
        memcpy(big + off, ",0", 2);
        off += 2;
    }
    memcpy(big + off, "]}}", 4);
    off += 3;
    /* the thread's reader exists before counting */
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"item\":{\"item_id\":\"1\"}}", NULL, NULL), ==, 0);
    tds_webhook_clear(&w);
    before = heap_bytes();
    T_INT(tds_webhook_parse(&w, TDS_WEBHOOK_JSON, big, off, NULL, NULL), ==, 0);
    T_TRUE(w.has_record);
    tds_webhook_clear(&w);
    after = heap_bytes();
    fprintf(stderr, "heap after a 1 MB array body: %+lld bytes\n",
            (long long)after - (long long)before);
    T_INT(after, <, before + 512 * 1024);
    free(big);
}

/* An id-only payload to fetch, with no Zoho event id and no modified time:
 * each delivery may be a new change of the record, so none is a duplicate of
 * another. A delete, a full record and Zoho's own event id stay stable. */
static void test_id_only_changes_are_not_duplicates(void)
{
    const char *id_only = "{\"item\":{\"item_id\":\"9002\"}}";
    struct tds_webhook a, b;

    T_INT(parse(&a, TDS_WEBHOOK_JSON, id_only, NULL, NULL), ==, 0);
    T_INT(parse(&b, TDS_WEBHOOK_JSON, id_only, NULL, NULL), ==, 0);
    T_TRUE(!a.has_record && !a.is_delete);
    T_INT(strlen(a.event_id), ==, 64);
    T_TRUE(strcmp(a.event_id, b.event_id) != 0);
    tds_webhook_clear(&a);
    tds_webhook_clear(&b);

    T_INT(parse(&a, TDS_WEBHOOK_JSON, "{\"item_id\":\"9002\"}", "items", NULL), ==, 0);
    T_INT(parse(&b, TDS_WEBHOOK_JSON, "{\"item_id\":\"9002\"}", "items", NULL), ==, 0);
    T_TRUE(strcmp(a.event_id, b.event_id) != 0);
    tds_webhook_clear(&a);
    tds_webhook_clear(&b);

    T_INT(parse(&a, TDS_WEBHOOK_JSON, id_only, NULL, "deleted"), ==, 0);
    T_INT(parse(&b, TDS_WEBHOOK_JSON, id_only, NULL, "deleted"), ==, 0);
    T_TRUE(a.is_delete);
    T_STR(a.event_id, b.event_id);
    tds_webhook_clear(&a);
    tds_webhook_clear(&b);

    T_INT(parse(&a, TDS_WEBHOOK_JSON, "{\"event_id\":\"77\",\"item\":{\"item_id\":\"9002\"}}",
                NULL, NULL), ==, 0);
    T_TRUE(!a.has_record);
    T_STR(a.event_id, "77");
    tds_webhook_clear(&a);
}

/* What makes a webhook mean something else is in its event id: the same full
 * record sent as an update and then by the delete workflow (?event=…deleted,
 * the modified time unchanged by the delete) are two events, not a retry; so
 * are the same top-level fields named as two entities by ?entity=. */
static void test_meaning_is_in_the_event_id(void)
{
    const char *full = "{\"item\":{\"item_id\":\"9003\",\"name\":\"W\","
                       "\"last_modified_time\":\"2026-01-05T10:00:00+0300\"}}";
    const char *flat = "{\"item_id\":\"9\",\"contact_id\":\"9\",\"last_modified_time\":\"t\"}";
    struct tds_webhook u, d, d2;

    T_INT(parse(&u, TDS_WEBHOOK_JSON, full, NULL, NULL), ==, 0);
    T_INT(parse(&d, TDS_WEBHOOK_JSON, full, NULL, "item_deleted"), ==, 0);
    T_INT(parse(&d2, TDS_WEBHOOK_JSON, full, NULL, "item_deleted"), ==, 0);
    T_TRUE(!u.is_delete && d.is_delete && u.has_record);
    T_TRUE(strcmp(u.event_id, d.event_id) != 0);
    T_STR(d.event_id, d2.event_id); /* a delete retried is still one */
    tds_webhook_clear(&u);
    tds_webhook_clear(&d);
    tds_webhook_clear(&d2);

    T_INT(parse(&u, TDS_WEBHOOK_JSON, flat, "items", NULL), ==, 0);
    T_INT(parse(&d, TDS_WEBHOOK_JSON, flat, "contacts", NULL), ==, 0);
    T_STR(u.entity->name, "items");
    T_STR(d.entity->name, "contacts");
    T_TRUE(strcmp(u.event_id, d.event_id) != 0);
    tds_webhook_clear(&u);
    tds_webhook_clear(&d);
}

static void test_form(void)
{
    struct tds_webhook w;
    const char *b = "a=b&JSONString=%7B%22contact%22%3A%7B%22contact_id%22%3A%227%22%2C"
                    "%22last_modified_time%22%3A%22x+y%22%7D%7D";

    T_INT(parse(&w, TDS_WEBHOOK_FORM, b, NULL, NULL), ==, 0);
    T_STR(w.entity->name, "contacts");
    T_STR(w.json, "{\"contact\":{\"contact_id\":\"7\",\"last_modified_time\":\"x y\"}}");
    T_TRUE(w.has_record);
    tds_webhook_clear(&w);
    /* No JSONString: the form's fields, as a custom payload's would be. The
     * entity comes from ?entity=; a few fields are no whole record (the
     * processor's LIST), an id alone a notice to fetch. */
    T_INT(parse(&w, TDS_WEBHOOK_FORM, "a=b", NULL, NULL), ==, TDS_WEBHOOK_E_ENTITY);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_FORM,
                "item_id=4600000000000000123&name=%D9%85%D9%86%D8%AA%D8%AC+%22x%22&rate=12.5"
                "&last_modified_time=2026-01-05T10%3A00%3A00%2B0300&name=second",
                "items", NULL), ==, 0);
    T_STR(w.entity->name, "items");
    T_STR(w.zoho_id, "4600000000000000123");
    T_STR(w.json, "{\"item_id\":\"4600000000000000123\",\"name\":\"second\",\"rate\":\"12.5\","
                  "\"last_modified_time\":\"2026-01-05T10:00:00+0300\"}");
    T_TRUE(w.has_record);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_FORM, "item_id=4600000000000000123", "items", NULL), ==, 0);
    T_STR(w.json, "{\"item_id\":\"4600000000000000123\"}");
    T_TRUE(!w.has_record);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_FORM, "item_id=1&name=%D9%85%FF", "items", NULL), ==,
          TDS_WEBHOOK_E_UTF8);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_FORM, "item_id=1&na%FFme=x", "items", NULL), ==,
          TDS_WEBHOOK_E_UTF8);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_FORM, "item_id=1&name=a%00b", "items", NULL), ==,
          TDS_WEBHOOK_E_JSON);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_FORM, "", "items", NULL), ==, TDS_WEBHOOK_E_FORM);
    tds_webhook_clear(&w);
    T_STR(tds_webhook_strerror(TDS_WEBHOOK_E_FORM),
          "no body and no query parameters, or over 64 fields");
}

/* No body: the query parameters are the payload. */
static void test_query_fields(void)
{
    struct tds_webhook w;
    const struct tds_verify_kv kv[] = {
        {"entity", 6, "contacts", 8}, {"contact_id", 10, "460000000099", 12},
        {"event", 5, "contact_deleted", 15},
    };

    T_INT(tds_webhook_parse_fields(&w, kv, 2, "contacts", NULL), ==, 0);
    T_STR(w.entity->name, "contacts");
    T_STR(w.zoho_id, "460000000099");
    T_STR(w.json, "{\"entity\":\"contacts\",\"contact_id\":\"460000000099\"}");
    T_TRUE(!w.has_record && !w.is_delete);
    tds_webhook_clear(&w);
    T_INT(tds_webhook_parse_fields(&w, kv, 3, "contacts", "contact_deleted"), ==, 0);
    T_TRUE(w.is_delete);
    tds_webhook_clear(&w);
    T_INT(tds_webhook_parse_fields(&w, kv, 1, "contacts", NULL), ==, TDS_WEBHOOK_E_ID);
    tds_webhook_clear(&w);
    T_INT(tds_webhook_parse_fields(&w, kv + 1, 1, NULL, NULL), ==, TDS_WEBHOOK_E_ENTITY);
    tds_webhook_clear(&w);
    T_INT(tds_webhook_parse_fields(&w, kv, 0, NULL, NULL), ==, TDS_WEBHOOK_E_FORM);
    tds_webhook_clear(&w);
    T_INT(tds_webhook_parse_fields(&w, kv, TDS_VERIFY_MAX_PARAMS + 1, "contacts", NULL), ==,
          TDS_WEBHOOK_E_FORM);
    tds_webhook_clear(&w);
}

static void test_bad(void)
{
    struct tds_webhook w;

    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"item\":", NULL, NULL), ==, TDS_WEBHOOK_E_JSON);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "[1]", NULL, NULL), ==, TDS_WEBHOOK_E_JSON);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"item\":{\"name\":\"\xff\"}}", NULL, NULL), ==,
          TDS_WEBHOOK_E_UTF8);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"foo\":{}}", NULL, NULL), ==, TDS_WEBHOOK_E_ENTITY);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"item\":{\"item_id\":\"1\"},\"contact\":{}}", NULL, NULL),
          ==, TDS_WEBHOOK_E_ENTITY);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"item\":{\"name\":\"n\"}}", NULL, NULL), ==,
          TDS_WEBHOOK_E_ID);
    tds_webhook_clear(&w);
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"item\":{\"item_id\":1.5}}", NULL, NULL), ==,
          TDS_WEBHOOK_E_ID);
    tds_webhook_clear(&w);
}

static void test_reader_limits(void)
{
    struct tds_webhook w;
    size_t n = 1024 * 1024 + 64;
    char *big = malloc(n + 1);
    char deep[200] = "";

    /* a 20-digit id does not fit an int64 and is kept as written */
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"item_id\":46000000000000000001}", "items", NULL), ==, 0);
    T_STR(w.zoho_id, "46000000000000000001");
    tds_webhook_clear(&w);
    /* the same entity key twice is ambiguous */
    T_INT(parse(&w, TDS_WEBHOOK_JSON,
                "{\"item\":{\"item_id\":\"1\"},\"item\":{\"item_id\":\"2\"}}", NULL, NULL),
          ==, TDS_WEBHOOK_E_ENTITY);
    tds_webhook_clear(&w);
    /* \u0000 cannot reach PostgreSQL text: refused here already */
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"item\":{\"item_id\":\"1\",\"name\":\"a\\u0000\"}}",
                NULL, NULL), ==, TDS_WEBHOOK_E_JSON);
    tds_webhook_clear(&w);
    /* a number PostgreSQL's numeric (jsonb) cannot hold: the processor
     * would reject the record, and the reason says what it is */
    T_INT(parse(&w, TDS_WEBHOOK_JSON, "{\"item\":{\"item_id\":\"1\",\"rate\":1e-20000}}",
                NULL, NULL), ==, TDS_WEBHOOK_E_NUMBER);
    T_STR(tds_webhook_strerror(TDS_WEBHOOK_E_NUMBER), "a number out of PostgreSQL's numeric range");
    tds_webhook_clear(&w);
    /* nesting deeper than the processor reads */
    for (int i = 0; i < 40; i++)
        strcat(deep, "[");
    T_INT(parse(&w, TDS_WEBHOOK_JSON, deep, NULL, NULL), ==, TDS_WEBHOOK_E_JSON);
    tds_webhook_clear(&w);
    /* over the reader's 1 MiB: 413, not 400 */
    T_TRUE(big != NULL);
    memset(big, ' ', n);
    memcpy(big, "{\"item\":{\"item_id\":\"1\"}}", 24);
    big[n] = '\0';
    T_INT(tds_webhook_parse(&w, TDS_WEBHOOK_JSON, big, n, NULL, NULL), ==, TDS_WEBHOOK_E_TOO_LARGE);
    tds_webhook_clear(&w);
    free(big);
}

/* Fields from "k=v&k=v" (no decoding), for tds_webhook_hides_delete. */
static size_t kvs(const char *spec, char *buf, struct tds_verify_kv *kv)
{
    size_t n = 0;

    strcpy(buf, spec);
    for (char *save = NULL, *f = strtok_r(buf, "&", &save); f; f = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(f, '=');

        kv[n].k = f;
        kv[n].klen = eq ? (size_t)(eq - f) : strlen(f);
        kv[n].v = eq ? eq + 1 : "";
        kv[n].vlen = eq ? strlen(eq + 1) : 0;
        n++;
    }
    return n;
}

/* Zoho signs names and values with no separator: a captured delete's
 * parameters split anew sign the same bytes. Every such split is caught;
 * parameters whose bytes no delete could have been split from are not. */
static void test_a_delete_split_anew(void)
{
    static const char *const hiding[] = {
        "entity=items&eventdeleted",           /* the name took the value */
        "entity=items&even=tdeleted",          /* the boundary moved */
        "entity=items&ev=entdeleted",
        "entity=items&event=deleteditem_id77", /* the value took the next field */
        "entity=items&event=item_deletedsource=books",
        "entity=itemseventdeleted",            /* (an unknown entity anyway) */
        "JSONString={}&eventdeleted",          /* a form's fields */
        "a=xevent&deleted=",                   /* across names */
    };
    static const char *const clean[] = {
        "entity=items&event=updated",
        "entity=items",
        "event=Deleted_Items", /* "_Items" sorts before "event": no such split */
        "event=deletedAfter",  /* "After" sorts before "event" */
        "event=undeleted",
        "JSONString={\"event\":\"deleted\"}", /* inside the JSON, which must stay whole */
        "note=the eventual deletion",
        "",
    };
    const struct tds_entity *items = tds_entity_find("items");
    struct tds_verify_kv kv[16];
    char buf[128];

    for (size_t i = 0; i < sizeof(hiding) / sizeof(*hiding); i++) {
        size_t n = kvs(hiding[i], buf, kv);

        if (!tds_webhook_hides_delete(kv, n, items))
            T_FAIL("%s hides a delete", hiding[i]);
    }
    for (size_t i = 0; i < sizeof(clean) / sizeof(*clean); i++) {
        size_t n = kvs(clean[i], buf, kv);

        if (tds_webhook_hides_delete(kv, n, items))
            T_FAIL("%s hides no delete", clean[i]);
    }
}

int main(void)
{
    T_RUN(test_kinds);
    T_RUN(test_full_record);
    T_RUN(test_id_only_and_entity_param);
    T_RUN(test_delete_and_event_id);
    T_RUN(test_delete_names_are_exact);
    T_RUN(test_a_large_body_leaves_no_memory_held);
    T_RUN(test_id_only_changes_are_not_duplicates);
    T_RUN(test_meaning_is_in_the_event_id);
    T_RUN(test_form);
    T_RUN(test_query_fields);
    T_RUN(test_bad);
    T_RUN(test_reader_limits);
    T_RUN(test_a_delete_split_anew);
    return 0;
}
