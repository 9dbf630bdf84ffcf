/* Unit tests for ingress/dedupe.c: the time window, the memory bound (oldest
 * evicted first), refresh of a present key, and index consistency under churn. */
#include <stdio.h>
#include <string.h>

#include "assert.h"
#include "dedupe.h"

static void test_window(void)
{
    struct tds_dedupe *d = NULL;
    uint64_t seq = 0;

    T_INT(tds_dedupe_new(&d, 100, 600000), ==, 0);
    T_TRUE(!tds_dedupe_seen(d, "ev1", 3, 1000, &seq));
    tds_dedupe_insert(d, "ev1", 3, 1000, 7);
    T_TRUE(tds_dedupe_seen(d, "ev1", 3, 2000, &seq));
    T_INT(seq, ==, 7);
    T_TRUE(tds_dedupe_seen(d, "ev1", 3, 601000, NULL));
    T_TRUE(!tds_dedupe_seen(d, "ev1", 3, 601001, NULL));
    T_TRUE(!tds_dedupe_seen(d, "ev2", 3, 2000, NULL));
    /* Expired entries are dropped on the next insert. */
    tds_dedupe_insert(d, "ev2", 3, 700000, 8);
    T_INT(tds_dedupe_size(d), ==, 1);
    d = tds_dedupe_free(d);
    T_NULL(d);
}

static void test_bound(void)
{
    struct tds_dedupe *d = NULL;
    char k[32];

    T_INT(tds_dedupe_new(&d, 1000, 600000), ==, 0);
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        tds_dedupe_insert(d, k, strlen(k), 1000 + i, (uint64_t)i);
    }
    T_INT(tds_dedupe_size(d), ==, 1000);
    T_INT(tds_dedupe_evicted_early(d), ==, 4000);
    for (int i = 0; i < 5000; i++) {
        uint64_t seq = 0;
        bool seen;

        snprintf(k, sizeof(k), "key-%d", i);
        seen = tds_dedupe_seen(d, k, strlen(k), 7000, &seq);
        T_INT(seen, ==, i >= 4000);
        if (seen)
            T_INT(seq, ==, i);
    }
    tds_dedupe_free(d);
}

static void test_refresh(void)
{
    struct tds_dedupe *d = NULL;
    uint64_t seq = 0;

    T_INT(tds_dedupe_new(&d, 4, 1000), ==, 0);
    tds_dedupe_insert(d, "a", 1, 0, 1);
    tds_dedupe_insert(d, "b", 1, 10, 2);
    tds_dedupe_insert(d, "a", 1, 900, 3);
    /* The old copy of "a" expires at 1001, the refreshed one lives on. */
    tds_dedupe_insert(d, "c", 1, 1500, 4);
    T_TRUE(tds_dedupe_seen(d, "a", 1, 1500, &seq));
    T_INT(seq, ==, 3);
    T_TRUE(!tds_dedupe_seen(d, "b", 1, 1500, NULL));
    tds_dedupe_free(d);
}

static void test_churn(void)
{
    struct tds_dedupe *d = NULL;
    char k[32];

    /* Small table, many wraps: backward-shift deletion must keep every live
     * key findable. */
    T_INT(tds_dedupe_new(&d, 37, 1000000), ==, 0);
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof(k), "c%d", i);
        tds_dedupe_insert(d, k, strlen(k), i, (uint64_t)i);
        if (i >= 37) {
            for (int b = i - 36; b <= i; b += 7) {
                snprintf(k, sizeof(k), "c%d", b);
                T_TRUE(tds_dedupe_seen(d, k, strlen(k), i, NULL));
            }
            snprintf(k, sizeof(k), "c%d", i - 37);
            T_TRUE(!tds_dedupe_seen(d, k, strlen(k), i, NULL));
        }
    }
    tds_dedupe_free(d);
}

int main(void)
{
    T_RUN(test_window);
    T_RUN(test_bound);
    T_RUN(test_refresh);
    T_RUN(test_churn);
    return 0;
}
