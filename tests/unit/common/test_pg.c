/* test_pg — the parts of pg that need no server: connection failures give a
 * one-line message without the password, and the SQLSTATE classification. */
#include "assert.h"
#include "pg.h"

#include <string.h>

static void test_connect_refused(void)
{
    char err[512];
    PGconn *c;

    c = tds_pg_connect("postgresql://tds:hunter2@127.0.0.1:1/db?connect_timeout=2", "test", err,
                       sizeof(err));
    T_NULL(c);
    T_TRUE(strncmp(err, "could not connect to database: ", 31) == 0);
    T_TRUE(strstr(err, "hunter2") == NULL);
    T_TRUE(strchr(err, '\n') == NULL);
    T_TRUE(strstr(err, "127.0.0.1") != NULL);

    c = tds_pg_connect("host=127.0.0.1 port=1 password=hunter2", "test", err, sizeof(err));
    T_NULL(c);
    T_TRUE(strstr(err, "hunter2") == NULL);

    c = tds_pg_connect("nonsense_keyword=1", "test", err, sizeof(err));
    T_NULL(c);
    T_TRUE(strstr(err, "nonsense_keyword") != NULL);

    /* A tiny buffer is cut, never overrun. */
    char small[16];
    T_NULL(tds_pg_connect("host=127.0.0.1 port=1", "test", small, sizeof(small)));
    T_INT(strlen(small), ==, 15);
}

static void test_classify(void)
{
    PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_FATAL_ERROR);

    T_NULL(tds_pg_sqlstate(NULL));
    T_TRUE(r != NULL);
    T_NULL(tds_pg_sqlstate(r)); /* no SQLSTATE on a client-made result */
    T_TRUE(!tds_pg_retryable(r, NULL));
    T_TRUE(tds_pg_retryable(NULL, NULL));
    PQclear(r);
    T_TRUE(!tds_pg_ok(NULL));
}

int main(void)
{
    T_RUN(test_connect_refused);
    T_RUN(test_classify);
    return 0;
}
