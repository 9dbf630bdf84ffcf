/* flusher — has PostgreSQL flush its WAL now (flusher.h says why). */
#include "flusher.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "log.h"
#include "pg.h"
#include "util.h"

/* After a failed connection or flush, the next try waits this long; acks
 * meanwhile wait for the WAL writer, which is slower but as safe. */
#define FLUSHER_RETRY_MS 5000
/* How long the connection's handshake and its first query may take before
 * it is given up (and tried again after FLUSHER_RETRY_MS). */
#define FLUSHER_CONNECT_TIMEOUT_MS 10000

/* A transaction that wrote WAL commits with a record of its own, and
 * synchronous_commit local makes that COMMIT wait until the WAL is on disk
 * up to it: every commit before it included. One that wrote none (say, only
 * took a transaction id) does not wait, whatever the setting: so setval(),
 * which always writes a record (migration 029). local, not on: the acks
 * compare the local flushed position (under synchronous standbys the
 * writer's commits wait as the server says; apply.c). */
static const char *const SQL_FLUSH =
    "BEGIN; SET LOCAL synchronous_commit = local; SELECT setval('tds.wal_flush', 1, false); "
    "COMMIT; SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::text AS flushed, "
    "pg_backend_pid() AS pid";

/* Which server a connection reached: two connections of one writer compare
 * WAL positions only when their servers started at the same instant. And
 * which backend serves it: a position counts only from the backend that
 * was there before the commits it releases (a pooler could hand the
 * connection a new one, even after a crash of the server). */
static const char *const SQL_SERVER = "SELECT pg_postmaster_start_time()::text, pg_backend_pid()";

/* A connection goes CONNECTING (the handshake, PQconnectPoll) → SERVER (the
 * server's start time asked) → READY; none of it blocks the writer's loop. */
enum conn_state { NONE, CONNECTING, SERVER, READY };

struct tds_flusher {
    char *conninfo;
    PGconn *conn;
    enum conn_state state;
    PostgresPollingStatusType want; /* CONNECTING: what the handshake waits for */
    int64_t conn_t0_ms;             /* when the connect began */
    bool busy;   /* a flush was sent and its answers are not all read */
    bool bad;    /* one of those answers was an error (why) */
    char why[256];
    bool failed; /* conn is kept only until the next start or close */
    uint64_t serial, next_serial; /* of conn (0: none), one more at each connect */
    uint64_t flushed;             /* the last answer's position, read after its COMMIT */
    char server[64];              /* pg_postmaster_start_time() of conn */
    long pid;                     /* its backend's pid */
    int64_t retry_at_ms;
    uint64_t count;
    struct tds_log_limit limit;
};

int tds_flusher_new(struct tds_flusher **out, const char *conninfo)
{
    struct tds_flusher *f = calloc(1, sizeof(*f));

    if (!f)
        return -ENOMEM;
    f->conninfo = strdup(conninfo);
    if (!f->conninfo) {
        free(f);
        return -ENOMEM;
    }
    *out = f;
    return 0;
}

void tds_flusher_close(struct tds_flusher *f)
{
    if (f->conn)
        PQfinish(f->conn);
    f->conn = NULL;
    f->state = NONE;
    f->serial = 0;
    f->server[0] = 0;
    f->busy = false;
    f->failed = false;
}

struct tds_flusher *tds_flusher_free(struct tds_flusher *f)
{
    if (!f)
        return NULL;
    tds_flusher_close(f);
    free(f->conninfo);
    free(f);
    return NULL;
}

int tds_flusher_socket(const struct tds_flusher *f, bool *out)
{
    *out = f->state == CONNECTING && f->want == PGRES_POLLING_WRITING;
    return f->conn && !f->failed ? PQsocket(f->conn) : -1;
}

bool tds_flusher_ready(const struct tds_flusher *f)
{
    return f->state == READY && !f->failed;
}

bool tds_flusher_busy(const struct tds_flusher *f) { return f->busy; }

uint64_t tds_flusher_count(const struct tds_flusher *f) { return f->count; }

uint64_t tds_flusher_serial(const struct tds_flusher *f)
{
    return tds_flusher_ready(f) ? f->serial : 0;
}

const char *tds_flusher_server(const struct tds_flusher *f) { return f->server; }

static void give_up(struct tds_flusher *f, const char *what, const char *why)
{
    char msg[256];

    snprintf(msg, sizeof(msg), "%s", why ? why : "");
    for (char *p = msg; *p; p++)
        if (*p == '\n')
            *p = ' ';
    tds_log_limited(&f->limit, TDS_LOG_WARN, NULL,
                    "%s: %s; acks wait for PostgreSQL's WAL writer meanwhile (wal_writer_delay)",
                    what, msg);
    f->failed = true;
    f->busy = false;
    f->retry_at_ms = tds_now_ms() + FLUSHER_RETRY_MS;
}

/* The answer to SQL_SERVER, once whole (it may come in pieces: the row is
 * kept in server and pid meanwhile): 1 read (READY), 0 not yet, -1 failed
 * (given up). */
static int read_server(struct tds_flusher *f)
{
    PGresult *r;

    if (PQconsumeInput(f->conn) != 1) {
        give_up(f, "lost the connection that flushes the WAL", PQerrorMessage(f->conn));
        return -1;
    }
    while (!PQisBusy(f->conn) && (r = PQgetResult(f->conn)) != NULL) {
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQnfields(r) == 2) {
            snprintf(f->server, sizeof(f->server), "%s", PQgetvalue(r, 0, 0));
            f->pid = strtol(PQgetvalue(r, 0, 1), NULL, 10);
        } else if (!f->bad) {
            snprintf(f->why, sizeof(f->why), "%s", PQresultErrorMessage(r));
            f->bad = true;
        }
        PQclear(r);
    }
    if (PQisBusy(f->conn))
        return 0;
    if (f->bad || !f->server[0]) {
        f->bad = false;
        f->server[0] = '\0';
        give_up(f, "could not read the server's start time", f->why[0] ? f->why : "no answer");
        return -1;
    }
    f->serial = ++f->next_serial;
    f->state = READY;
    return 1;
}

int tds_flusher_advance(struct tds_flusher *f)
{
    char err[256];
    int rc;

    if (f->failed) {
        if (tds_now_ms() < f->retry_at_ms)
            return -1;
        tds_flusher_close(f);
    }
    if (f->state == READY)
        return 1;
    if (f->state == NONE) {
        f->conn = tds_pg_connect_start(f->conninfo, "tds-writer-flush", NULL, err, sizeof(err));
        if (!f->conn) {
            give_up(f, "could not connect to flush the WAL", err);
            return -1;
        }
        tds_apply_quiet(f->conn);
        f->state = CONNECTING;
        f->want = PGRES_POLLING_WRITING;
        f->conn_t0_ms = tds_now_ms();
        /* on: the socket is often ready for the startup packet at once */
    }
    if (f->state == CONNECTING) {
        rc = tds_pg_connect_poll(f->conn, &f->want, err, sizeof(err));
        if (rc < 0) {
            give_up(f, "could not connect to flush the WAL", err);
            return -1;
        }
        if (rc == 1) {
            if (!PQsendQuery(f->conn, SQL_SERVER)) {
                give_up(f, "could not read the server's start time", PQerrorMessage(f->conn));
                return -1;
            }
            f->state = SERVER;
            f->server[0] = '\0';
            f->bad = false;
            f->why[0] = '\0';
        }
    }
    if (f->state == SERVER && (rc = read_server(f)) != 0)
        return rc;
    if (tds_now_ms() - f->conn_t0_ms > FLUSHER_CONNECT_TIMEOUT_MS) {
        give_up(f, "could not connect to flush the WAL", "timed out");
        return -1;
    }
    return 0;
}

bool tds_flusher_start(struct tds_flusher *f)
{
    if (f->busy)
        return true;
    if (tds_flusher_advance(f) != 1)
        return false;
    if (!PQsendQuery(f->conn, SQL_FLUSH)) {
        give_up(f, "could not ask PostgreSQL to flush its WAL", PQerrorMessage(f->conn));
        return false;
    }
    f->busy = true;
    f->bad = false;
    f->why[0] = 0;
    f->flushed = 0;
    return true;
}

int tds_flusher_collect(struct tds_flusher *f, uint64_t *flushed)
{
    PGresult *r;

    if (f->failed || !f->conn)
        return 0;
    if (f->state != READY) {
        int rc = tds_flusher_advance(f);

        return rc == 1 ? 2 : rc;
    }
    if (PQconsumeInput(f->conn) != 1) {
        give_up(f, "lost the connection that flushes the WAL", PQerrorMessage(f->conn));
        return -1;
    }
    if (!f->busy) {
        /* Input on an idle connection: the server ended it (a restart, an
         * idle_session_timeout) or sent a notice. Watched for input, an
         * ended one would wake the loop for ever. */
        if (PQstatus(f->conn) != CONNECTION_OK) {
            give_up(f, "lost the connection that flushes the WAL", PQerrorMessage(f->conn));
            return -1;
        }
        return 0;
    }
    /* Five answers, BEGIN to the position, each read once it is whole
     * (never waiting for the next), to the end even past an error. */
    for (;;) {
        ExecStatusType st;

        if (PQisBusy(f->conn))
            return 0;
        r = PQgetResult(f->conn);
        if (!r)
            break;
        st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !f->bad) {
            snprintf(f->why, sizeof(f->why), "%s", PQresultErrorMessage(r));
            f->bad = true;
        } else if (st == PGRES_TUPLES_OK && PQnfields(r) == 2 && PQntuples(r) == 1 &&
                   strcmp(PQfname(r, 0), "flushed") == 0) {
            if (tds_apply_parse_lsn(PQgetvalue(r, 0, 0), &f->flushed) != 0)
                f->flushed = 0;
            if (strtol(PQgetvalue(r, 0, 1), NULL, 10) != f->pid && !f->bad) {
                snprintf(f->why, sizeof(f->why),
                         "another backend answered (a pooler between the writer and "
                         "PostgreSQL?): its WAL positions are not used");
                f->bad = true;
            }
        }
        PQclear(r);
    }
    f->busy = false;
    if (f->bad || PQstatus(f->conn) != CONNECTION_OK) {
        f->bad = false;
        give_up(f, "PostgreSQL refused the WAL flush", f->why);
        return -1;
    }
    f->count++;
    *flushed = f->flushed;
    return 1;
}
