/* pg — libpq helpers shared by the stages that touch PostgreSQL.
 *
 * Owns nothing beyond the connections it hands out (the caller PQfinish()es
 * them). It never builds SQL from data and never logs; error texts it copies
 * out come from the server or libpq. libpq quotes the text of a connection
 * string it cannot parse, which may hold the password: such a string is
 * checked first and reported without its quoted parts (conninfo_invalid).
 */
#include <stddef.h>

#include "pg.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#define CONNECT_TIMEOUT_S "10"

/* TCP keepalive and user timeout of every connection, unless the conninfo
 * sets its own: a server that vanishes without a FIN or RST (its node died,
 * a partition) is noticed in about a minute, not after the kernel's two
 * hours, and a statement waiting on it fails instead of hanging. */
static const char *const KEEPALIVE_KEYS[] = {"keepalives", "keepalives_idle",
                                             "keepalives_interval", "keepalives_count",
                                             "tcp_user_timeout"};
static const char *const KEEPALIVE_VALS[] = {"1", TDS_PG_KEEPALIVE_IDLE_S,
                                             TDS_PG_KEEPALIVE_INTERVAL_S,
                                             TDS_PG_KEEPALIVE_COUNT, "60000"};
#define N_KEEPALIVE (sizeof(KEEPALIVE_KEYS) / sizeof(KEEPALIVE_KEYS[0]))

/* Copy a libpq message (often multi-line, ending in '\n') as one line. */
static void copy_msg(char *err, size_t errlen, const char *prefix, const char *msg)
{
    size_t w;

    if (!err || errlen == 0)
        return;
    w = (size_t)snprintf(err, errlen, "%s", prefix);
    if (w >= errlen)
        return;
    for (const char *p = msg ? msg : ""; *p && w + 1 < errlen; p++) {
        if (*p == '\n') {
            if (p[1] == '\0')
                break;
            if (w + 2 >= errlen)
                break;
            err[w++] = ';';
            err[w++] = ' ';
        } else {
            err[w++] = *p;
        }
    }
    err[w] = '\0';
}

/* Whether conninfo is a connection string (a URI or key=value pairs, as
 * libpq's expand_dbname tells them from a plain database name) that libpq
 * cannot parse. Its message then quotes the text it stopped at, which may
 * be the password: only the message's words are kept, each quoted part
 * replaced by "..." (but for an unknown keyword's name). */
static bool conninfo_invalid(const char *conninfo, char *err, size_t errlen)
{
    PQconninfoOption *opts;
    char *msg = NULL, clean[256];
    size_t w = 0;
    bool quoted = false;

    if (!conninfo || (!strchr(conninfo, '=') && strncmp(conninfo, "postgresql://", 13) != 0 &&
                      strncmp(conninfo, "postgres://", 11) != 0))
        return false;
    opts = PQconninfoParse(conninfo, &msg);
    if (opts) {
        PQconninfoFree(opts);
        return false;
    }
    /* an unknown keyword is a name, not a value: kept */
    bool keep = msg && strncmp(msg, "invalid connection option", 25) == 0;

    for (const char *p = msg ? msg : "out of memory"; *p && w + 4 < sizeof(clean); p++) {
        if (*p == '"' && !keep) {
            quoted = !quoted;
            if (quoted) {
                memcpy(clean + w, "\"...", 4);
                w += 4;
            } else {
                clean[w++] = '"';
            }
        } else if (!quoted) {
            clean[w++] = *p;
        }
    }
    clean[w] = '\0';
    PQfreemem(msg);
    copy_msg(err, errlen, "could not connect to database: invalid connection string: ", clean);
    return true;
}

/* PQconnectdbParams or PQconnectStartParams. connect_timeout, the
 * keepalives and options come before conninfo, so values there override
 * them (a pooler may need its own options to route the session); the
 * application name and encoding come after, so ours win. */
static PGconn *open_conn(PGconn *(*begin)(const char *const *, const char *const *, int),
                         const char *conninfo, const char *app_name, const char *options,
                         char *err, size_t errlen)
{
    const char *keys[6 + N_KEEPALIVE], *vals[6 + N_KEEPALIVE];
    size_t n = 0;
    PGconn *c;

    keys[n] = "connect_timeout";
    vals[n++] = CONNECT_TIMEOUT_S;
    for (size_t i = 0; i < N_KEEPALIVE; i++) {
        keys[n] = KEEPALIVE_KEYS[i];
        vals[n++] = KEEPALIVE_VALS[i];
    }
    if (options) {
        keys[n] = "options";
        vals[n++] = options;
    }
    keys[n] = "dbname";
    vals[n++] = conninfo ? conninfo : "";
    keys[n] = "application_name";
    vals[n++] = app_name ? app_name : "tds";
    keys[n] = "client_encoding";
    vals[n++] = "UTF8";
    keys[n] = vals[n] = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (conninfo_invalid(conninfo, err, errlen))
        return NULL;
    c = begin(keys, vals, 1);
    if (!c) {
        copy_msg(err, errlen, "could not connect to database: ", "out of memory");
        return NULL;
    }
    if (PQstatus(c) == CONNECTION_BAD) {
        copy_msg(err, errlen, "could not connect to database: ", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

PGconn *tds_pg_connect(const char *conninfo, const char *app_name, char *err, size_t errlen)
{
    return open_conn(PQconnectdbParams, conninfo, app_name, NULL, err, errlen);
}

PGconn *tds_pg_connect_start(const char *conninfo, const char *app_name, const char *options,
                             char *err, size_t errlen)
{
    return open_conn(PQconnectStartParams, conninfo, app_name, options, err, errlen);
}

int tds_pg_server_keepalive(PGconn *c, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, "SET tcp_keepalives_idle = " TDS_PG_KEEPALIVE_IDLE_S
                            "; SET tcp_keepalives_interval = " TDS_PG_KEEPALIVE_INTERVAL_S
                            "; SET tcp_keepalives_count = " TDS_PG_KEEPALIVE_COUNT);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : -1;

    if (rc != 0)
        copy_msg(err, errlen, "could not set the session's keepalive: ", PQerrorMessage(c));
    PQclear(r);
    return rc;
}

int tds_pg_connect_poll(PGconn *c, PostgresPollingStatusType *want, char *err, size_t errlen)
{
    /* libpq asks to be called again only once the socket is ready for what
     * its last answer named; until then it is not called at all. */
    for (;;) {
        struct pollfd p = {.fd = PQsocket(c), .events = 0};
        int n;

        if (*want == PGRES_POLLING_OK)
            return 1;
        if (*want == PGRES_POLLING_FAILED || p.fd < 0) {
            copy_msg(err, errlen, "could not connect to database: ", PQerrorMessage(c));
            return -1;
        }
        p.events = *want == PGRES_POLLING_READING ? POLLIN : POLLOUT;
        n = poll(&p, 1, 0);
        if (n == 0 || (n < 0 && errno == EINTR))
            return 0;
        *want = PQconnectPoll(c);
    }
}

bool tds_pg_ok(PGconn *c)
{
    PGTransactionStatusType t;

    if (!c || PQstatus(c) != CONNECTION_OK)
        return false;
    t = PQtransactionStatus(c);
    return t != PQTRANS_INERROR && t != PQTRANS_UNKNOWN;
}

int tds_pg_exec(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r;
    ExecStatusType st;

    if (err && errlen)
        err[0] = '\0';
    r = PQexec(c, sql);
    if (!r) {
        copy_msg(err, errlen, "", PQerrorMessage(c));
        return -EIO;
    }
    st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
        PQclear(r);
        return 0;
    }
    copy_msg(err, errlen, "", PQresultErrorMessage(r));
    PQclear(r);
    return -EIO;
}

const char *tds_pg_sqlstate(const PGresult *r)
{
    return r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
}

bool tds_pg_retryable(const PGresult *r, PGconn *c)
{
    static const char *const states[] = {
        "57P01", /* admin_shutdown */
        "57P02", /* crash_shutdown */
        "57P03", /* cannot_connect_now */
        "40001", /* serialization_failure */
        "40P01", /* deadlock_detected */
        "53300", /* too_many_connections */
    };
    const char *st;

    /* A lost connection is worth a new one whatever the result says. */
    if (c && PQstatus(c) != CONNECTION_OK)
        return true;
    if (!r)
        return c == NULL || PQstatus(c) != CONNECTION_OK;
    st = tds_pg_sqlstate(r);
    if (!st)
        return false;
    if (strncmp(st, "08", 2) == 0) /* connection_exception class */
        return true;
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
        if (strcmp(st, states[i]) == 0)
            return true;
    return false;
}
