/* test_pg — connection failures give a one-line message without the
 * password; against a throwaway PostgreSQL 15 cluster (initdb into a temp dir,
 * as the 'postgres' account when run as root): connection settings, exec
 * errors, SQLSTATE, the failed-transaction state and a terminated backend
 * classified as retryable. Without the server binaries those parts are
 * skipped with a note. */
#include "assert.h"
#include "pg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PG_BIN "/usr/lib/postgresql/15/bin"

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

    /* A string libpq cannot parse: its message quotes the text it stopped
     * at, a password here; the error keeps the words, not the text. */
    static const struct {
        const char *conninfo, *secret, *words;
    } bad[] = {
        {"postgresql://tds:s3cr%et@127.0.0.1:1/db", "s3cr", "invalid percent-encoded token"},
        {"host=127.0.0.1 password=abc hunter2", "hunter2", "missing \"...\" after \"...\""},
        {"postgresql://tds:hunter2@[::1/db", "hunter2", "in IPv6 host address in URI: \"...\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        T_NULL(tds_pg_connect(bad[i].conninfo, "test", err, sizeof(err)));
        T_TRUE(strncmp(err, "could not connect to database: invalid connection string: ", 58) ==
               0);
        T_TRUE(strstr(err, bad[i].secret) == NULL);
        T_TRUE(strstr(err, bad[i].words) != NULL);
    }
    /* A password with an unencoded '/', '@' or '"': libpq splits it
     * elsewhere and quotes a piece of it as a port or host, or its quotes
     * come out of step. No piece of the password is shown. */
    static const struct {
        const char *conninfo, *pieces[2];
    } split[] = {
        {"postgresql://tds:Xp/ss9Q@127.0.0.1:1/db", {"Xp", "ss9Q"}},
        {"postgresql://tds:Xp@ss9Q@127.0.0.1:1/db?connect_timeout=2", {"Xp", "ss9Q"}},
        {"postgresql://tds:pa\"ss9Q@[::1/db", {"pa", "ss9Q"}},
        {"host=127.0.0.1 port=1 password=a\"b c\"dSECRET", {"dSECRET", "dSECRET"}},
        {"postgresql://tds:Xp/ss9Q==@127.0.0.1:1/db", {"Xp", "ss9Q"}},
    };
    for (size_t i = 0; i < sizeof(split) / sizeof(split[0]); i++) {
        T_NULL(tds_pg_connect(split[i].conninfo, "test", err, sizeof(err)));
        printf("  %s -> %s\n", split[i].conninfo, err);
        T_TRUE(strncmp(err, "could not connect to database: ", 31) == 0);
        T_TRUE(strstr(err, split[i].pieces[0]) == NULL);
        T_TRUE(strstr(err, split[i].pieces[1]) == NULL);
    }
    /* the user name is not hidden: a failed login names it */
    T_NULL(tds_pg_connect("postgresql://tds_user:Xp/ss9Q@127.0.0.1:1/db", "test", err,
                          sizeof(err)));
    T_TRUE(strstr(err, "Xp") == NULL);

    /* a plain database name is not parsed as a connection string */
    T_NULL(tds_pg_connect("no_such_db_here", "test", err, sizeof(err)));
    T_TRUE(strstr(err, "invalid connection string") == NULL);

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

/* ---- against a real server ---- */

static char pg_dir[] = "/tmp/tds-test-pg-XXXXXX";
static char pg_as[64]; /* "runuser -u postgres -- " when root */
static int pg_port;
static char dsn[256];

static int free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    T_TRUE(fd >= 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    T_INT(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), ==, 0);
    T_INT(getsockname(fd, (struct sockaddr *)&sin, &len), ==, 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static void run(const char *cmd)
{
    int rc = system(cmd);

    if (rc != 0)
        T_FAIL("command failed (%d): %s", rc, cmd);
}

static void cluster_stop(void);

static bool cluster_start(void)
{
    char cmd[1024];

    if (access(PG_BIN "/initdb", X_OK) != 0)
        return false;
    T_TRUE(mkdtemp(pg_dir) != NULL);
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");

        if (!pw)
            return false;
        T_INT(chown(pg_dir, pw->pw_uid, pw->pw_gid), ==, 0);
        snprintf(pg_as, sizeof(pg_as), "runuser -u postgres -- ");
    }
    pg_port = free_port();
    snprintf(cmd, sizeof(cmd),
             "%s" PG_BIN "/initdb -D %s/data -U postgres -A trust -E UTF8 --locale=C.UTF-8 "
             "--no-sync >%s/initdb.log 2>&1",
             pg_as, pg_dir, pg_dir);
    run(cmd);
    snprintf(cmd, sizeof(cmd),
             "%s" PG_BIN "/pg_ctl -D %s/data -l %s/pg.log -w -t 30 -o \"-p %d -k %s "
             "-c listen_addresses=127.0.0.1 -c fsync=off\" start >/dev/null 2>&1",
             pg_as, pg_dir, pg_dir, pg_port, pg_dir);
    atexit(cluster_stop);
    run(cmd);
    snprintf(dsn, sizeof(dsn), "host=127.0.0.1 port=%d user=postgres dbname=postgres", pg_port);
    return true;
}

/* Registered with atexit so a failed assertion does not leave a server running. */
static void cluster_stop(void)
{
    char cmd[1024];

    snprintf(cmd, sizeof(cmd), "%s" PG_BIN "/pg_ctl -D %s/data -m immediate -w stop >/dev/null 2>&1",
             pg_as, pg_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not stop the test cluster in %s\n", pg_dir);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", pg_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", pg_dir);
}

static char *one_value(PGconn *c, const char *sql)
{
    PGresult *r = PQexecParams(c, sql, 0, NULL, NULL, NULL, NULL, 0);
    char *v;

    T_INT(PQresultStatus(r), ==, PGRES_TUPLES_OK);
    v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static void test_server(void)
{
    char err[512];
    PGconn *c, *killer;
    PGresult *r;
    char *v;

    c = tds_pg_connect(dsn, "tds-test", err, sizeof(err));
    if (!c)
        T_FAIL("connect: %s", err);
    T_STR(err, "");
    T_TRUE(tds_pg_ok(c));
    v = one_value(c, "SELECT current_setting('application_name')");
    T_STR(v, "tds-test");
    free(v);
    v = one_value(c, "SELECT current_setting('client_encoding')");
    T_STR(v, "UTF8");
    free(v);

    T_INT(tds_pg_exec(c, "CREATE TABLE t (i int PRIMARY KEY); INSERT INTO t VALUES (1)", err,
                      sizeof(err)), ==, 0);
    T_INT(tds_pg_exec(c, "SELEC 1", err, sizeof(err)), ==, -EIO);
    T_TRUE(strstr(err, "syntax error") != NULL);
    T_TRUE(strchr(err, '\n') == NULL);

    /* A constraint violation is not worth a retry. */
    r = PQexec(c, "INSERT INTO t VALUES (1)");
    T_STR(tds_pg_sqlstate(r), "23505");
    T_TRUE(!tds_pg_retryable(r, c));
    PQclear(r);

    /* Inside a failed transaction the connection is not usable until rollback. */
    T_INT(tds_pg_exec(c, "BEGIN", err, sizeof(err)), ==, 0);
    T_INT(tds_pg_exec(c, "SELECT 1/0", err, sizeof(err)), ==, -EIO);
    T_TRUE(!tds_pg_ok(c));
    T_INT(tds_pg_exec(c, "ROLLBACK", err, sizeof(err)), ==, 0);
    T_TRUE(tds_pg_ok(c));

    /* An administrator terminating the backend: retry on a new connection. */
    killer = tds_pg_connect(dsn, "tds-test-killer", err, sizeof(err));
    T_TRUE(killer != NULL);
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", PQbackendPID(c));
    T_INT(tds_pg_exec(killer, sql, err, sizeof(err)), ==, 0);
    usleep(100 * 1000);
    r = PQexec(c, "SELECT 1");
    T_TRUE(r == NULL || PQresultStatus(r) == PGRES_FATAL_ERROR);
    T_TRUE(tds_pg_retryable(r, c));
    T_TRUE(!tds_pg_ok(c));
    PQclear(r);
    PQfinish(c);
    PQfinish(killer);
}

int main(void)
{
    T_RUN(test_connect_refused);
    T_RUN(test_classify);
    if (cluster_start()) {
        T_RUN(test_server);
    } else {
        fprintf(stderr, "skip test_server: no PostgreSQL 15 server binaries or postgres account\n");
    }
    return 0;
}
