/* pg — libpq helpers shared by the stages that touch PostgreSQL.
 *
 * Owns nothing beyond the connections it hands out (the caller PQfinish()es
 * them). It never builds SQL from data and never logs; error texts it copies
 * out come from the server or libpq. libpq quotes the text of a connection
 * string it cannot parse, which may hold the password: such a string is
 * checked first and reported without its quoted parts (conninfo_invalid).
 * A password that libpq splits differently from what was meant (an
 * unencoded '/', '@' or '?' in a URI's password) can still reach a message
 * as host, port or a part of either: every connect message has each piece
 * of the password, as written and as parsed, replaced by "..." (scrub).
 */
#include <stddef.h>

#include "pg.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Pieces of text a connect message must not show: the password's pieces
 * (split where URI and key=value parsing split, two bytes or longer, so
 * that a fragment libpq took for a host or port is caught), as written in
 * conninfo and as parsed (opts); what a host holds before an '@' and a port
 * that is not a number (both only come from a password split by mistake). */
struct secrets {
    char *text[16];
    size_t n;
};

static void secrets_add_pieces(struct secrets *sc, const char *v, size_t len)
{
    static const char delims[] = "/@:?#&=\"' \t,";
    size_t i = 0;

    while (i < len && sc->n < sizeof(sc->text) / sizeof(sc->text[0])) {
        size_t j = i;

        while (j < len && !strchr(delims, v[j]))
            j++;
        if (j - i >= 2) {
            char *t = strndup(v + i, j - i);

            if (t)
                sc->text[sc->n++] = t;
        }
        i = j + 1;
    }
}

static void secrets_from_opts(struct secrets *sc, const PQconninfoOption *opts)
{
    for (const PQconninfoOption *o = opts; o && o->keyword; o++) {
        const char *v = o->val, *at;
        bool digits = true;

        if (!v || !*v)
            continue;
        if (strcmp(o->keyword, "password") == 0) {
            secrets_add_pieces(sc, v, strlen(v));
        } else if (strcmp(o->keyword, "host") == 0 && (at = strrchr(v, '@'))) {
            secrets_add_pieces(sc, v, (size_t)(at - v));
        } else if (strcmp(o->keyword, "port") == 0) {
            for (const char *p = v; *p; p++)
                digits = digits && (isdigit((unsigned char)*p) || *p == ',');
            if (!digits)
                secrets_add_pieces(sc, v, strlen(v));
        }
    }
}

/* The password as written in a URI: after the first ':' of what comes
 * between "://" and the last '@' (a '@' of the query, as in ?user=a@b,
 * makes this take more, which only hides more). key=value strings: the
 * text after "password" and '='. */
static void secrets_from_text(struct secrets *sc, const char *conninfo)
{
    const char *s = NULL, *at, *colon, *p;

    if (!conninfo)
        return;
    if (strncmp(conninfo, "postgresql://", 13) == 0)
        s = conninfo + 13;
    else if (strncmp(conninfo, "postgres://", 11) == 0)
        s = conninfo + 11;
    if (s) {
        at = strrchr(s, '@');
        colon = at ? memchr(s, ':', (size_t)(at - s)) : NULL;
        if (colon)
            secrets_add_pieces(sc, colon + 1, (size_t)(at - colon - 1));
        return;
    }
    for (p = strstr(conninfo, "password"); p; p = strstr(p + 8, "password")) {
        const char *v = p + 8, *end;

        while (*v == ' ' || *v == '\t')
            v++;
        if (*v != '=')
            continue;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        end = v;
        while (*end && *end != ' ' && *end != '\t')
            end++;
        secrets_add_pieces(sc, v, (size_t)(end - v));
    }
}

static void secrets_free(struct secrets *sc)
{
    for (size_t i = 0; i < sc->n; i++)
        free(sc->text[i]);
    sc->n = 0;
}

/* err with every secret piece replaced by "...", longest pieces first. */
static void scrub(char *err, size_t errlen, struct secrets *sc)
{
    char *out;

    if (!err || errlen == 0 || sc->n == 0)
        return;
    for (size_t i = 1; i < sc->n; i++)
        for (size_t k = i; k > 0 && strlen(sc->text[k]) > strlen(sc->text[k - 1]); k--) {
            char *t = sc->text[k];

            sc->text[k] = sc->text[k - 1];
            sc->text[k - 1] = t;
        }
    out = malloc(errlen);
    if (!out) {
        snprintf(err, errlen, "could not connect to database (out of memory)");
        return;
    }
    for (size_t i = 0; i < sc->n; i++) {
        size_t tl = strlen(sc->text[i]), w = 0;
        const char *p = err, *hit;

        while ((hit = strstr(p, sc->text[i])) != NULL) {
            size_t pre = (size_t)(hit - p);

            if (w + pre + 3 >= errlen)
                break;
            memcpy(out + w, p, pre);
            memcpy(out + w + pre, "...", 3);
            w += pre + 3;
            p = hit + tl;
        }
        /* what is left (or, cut for room, the rest up to a hit, dropped) */
        hit = strstr(p, sc->text[i]);
        for (; *p && p != hit && w + 1 < errlen; p++)
            out[w++] = *p;
        out[w] = '\0';
        memcpy(err, out, w + 1);
    }
    free(out);
}

/* A connect message, one line, with the password's pieces hidden. */
static void connect_msg(char *err, size_t errlen, const char *prefix, const char *msg,
                        const char *conninfo, PGconn *c)
{
    struct secrets sc = {.n = 0};
    PQconninfoOption *opts = NULL;

    copy_msg(err, errlen, prefix, msg);
    secrets_from_text(&sc, conninfo);
    if (c)
        opts = PQconninfo(c);
    else if (conninfo)
        opts = PQconninfoParse(conninfo, NULL);
    secrets_from_opts(&sc, opts);
    PQconninfoFree(opts);
    scrub(err, errlen, &sc);
    secrets_free(&sc);
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
        if (*p == '"' && !keep && strchr(conninfo, '"')) {
            /* a '"' of the string's own puts the message's quotes out of
             * step with what they quote: nothing from the first on */
            memcpy(clean + w, "\"...", 4);
            w += 4;
            break;
        }
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
    connect_msg(err, errlen, "could not connect to database: invalid connection string: ", clean,
                conninfo, NULL);
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
        connect_msg(err, errlen, "could not connect to database: ", PQerrorMessage(c), conninfo, c);
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
            connect_msg(err, errlen, "could not connect to database: ", PQerrorMessage(c), NULL,
                        c);
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

int tds_pg_url_check(const char *url, char *err, size_t errlen)
{
    static const char cut[] = "invalid connection string: ";
    char msg[512];

    /* as the connect judges it: a plain database name is one, and the
     * message keeps no quoted part that may be the password */
    if (!conninfo_invalid(url, msg, sizeof(msg)))
        return 0;
    const char *p = strstr(msg, cut);
    snprintf(err, errlen, "%s", p ? p + sizeof(cut) - 1 : msg);
    return -1;
}

int tds_pg_schema_check(PGconn *c, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, "SELECT to_regclass('tds.schema_migrations') IS NOT NULL");
    int rc = 0;

    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        snprintf(err, errlen, "could not read the database: %s", PQerrorMessage(c));
        for (size_t n = strlen(err); n > 0 && err[n - 1] == '\n'; n--)
            err[n - 1] = '\0';
        rc = -1;
    } else if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
        snprintf(err, errlen, "the database has no tds schema yet: run `tds-writer migrate` first "
                              "(the writer also applies it at start)");
        rc = -1;
    }
    PQclear(r);
    return rc;
}
