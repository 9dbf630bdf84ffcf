/* test_notify — NOTIFY payloads: ids per org and table, counts when too big. */
#include "../../assert.h"
#include "notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_small_payloads(void)
{
    struct tds_notify *n;
    char **p;
    size_t np;

    T_INT(tds_notify_new(&n), ==, 0);
    T_INT(tds_notify_add(n, "1", "items", "10"), ==, 0);
    T_INT(tds_notify_add(n, "1", "items", "11"), ==, 0);
    T_INT(tds_notify_add(n, "1", "contacts", "5\"q"), ==, 0);
    T_INT(tds_notify_add(n, "2", "items", "99"), ==, 0);
    T_INT(tds_notify_payloads(n, &p, &np), ==, 0);
    T_INT(np, ==, 2);
    T_STR(p[0], "{\"org\":\"1\",\"tables\":{\"items\":[\"10\",\"11\"],\"contacts\":[\"5\\\"q\"]}}");
    T_STR(p[1], "{\"org\":\"2\",\"tables\":{\"items\":[\"99\"]}}");
    tds_notify_payloads_free(p, np);
    tds_notify_reset(n);
    T_INT(tds_notify_payloads(n, &p, &np), ==, 0);
    T_INT(np, ==, 0);
    tds_notify_payloads_free(p, np);
    tds_notify_free(n);
}

static void test_truncated_to_counts(void)
{
    struct tds_notify *n;
    char **p, id[32];
    size_t np;

    T_INT(tds_notify_new(&n), ==, 0);
    /* 400 ids of 19 digits: about 8800 bytes of ids, over the limit. */
    for (int i = 0; i < 400; i++) {
        snprintf(id, sizeof(id), "%019d", i);
        T_INT(tds_notify_add(n, "1", "items", id), ==, 0);
    }
    T_INT(tds_notify_add(n, "1", "contacts", "7"), ==, 0);
    T_INT(tds_notify_payloads(n, &p, &np), ==, 0);
    T_INT(np, ==, 1);
    T_STR(p[0], "{\"org\":\"1\",\"tables\":{\"items\":400,\"contacts\":1},\"truncated\":true}");
    T_INT(strlen(p[0]), <, TDS_NOTIFY_MAX);
    tds_notify_payloads_free(p, np);
    tds_notify_free(n);
}

int main(void)
{
    T_RUN(test_small_payloads);
    T_RUN(test_truncated_to_counts);
    return 0;
}
