/* pg — libpq helpers shared by the stages that touch PostgreSQL (writer, fetcher).
 *
 * Connections are opened with a connect timeout, application_name set to the
 * stage, and client_encoding UTF8. Queries are always parameterized
 * (PQexecParams); this module never builds SQL from data.
 */
#ifndef TDS_PG_H
#define TDS_PG_H

#include <libpq-fe.h>
#include <stdbool.h>

/* Keepalive of every connection (client side, unless the conninfo sets its
 * own) and, by tds_pg_server_keepalive, of the server's end of a session:
 * idle seconds before the first probe, seconds between probes, probes. */
#define TDS_PG_KEEPALIVE_IDLE_S "30"
#define TDS_PG_KEEPALIVE_INTERVAL_S "10"
#define TDS_PG_KEEPALIVE_COUNT "3"

/* The server's end of the session probes the client likewise, so that a
 * session whose client vanished (a node died, a partition) ends, with the
 * locks it holds, in about a minute instead of the kernel's two hours.
 * 0, or -1 with the server's message in err. */
int tds_pg_server_keepalive(PGconn *c, char *err, size_t errlen);

/* Connect; returns NULL on failure with a message in err (no password in it). */
PGconn *tds_pg_connect(const char *conninfo, const char *app_name, char *err, size_t errlen);
/* Begin the same connection without waiting for it (PQconnectStartParams),
 * with the session settings in options ("-c name=value ..."; NULL for none;
 * options in conninfo take their place); NULL with a message in err when it
 * cannot even start. Drive it with tds_pg_connect_poll(), starting with
 * *want = PGRES_POLLING_WRITING. */
PGconn *tds_pg_connect_start(const char *conninfo, const char *app_name, const char *options,
                             char *err, size_t errlen);
/* Advance a connection begun by tds_pg_connect_start() without blocking: 1 when
 * it is ready, 0 while it is still under way (*want says what it waits for),
 * -1 when it failed (err says why; the caller PQfinish()es it). The caller
 * enforces its own deadline: libpq's connect_timeout applies only to the
 * blocking connect. */
int tds_pg_connect_poll(PGconn *c, PostgresPollingStatusType *want, char *err, size_t errlen);
/* True when the connection is usable (CONNECTION_OK and not in a failed state). */
bool tds_pg_ok(PGconn *c);
/* 0 when libpq can read url (a URI or key=value string with known keys, or
 * a plain database name), else -1 with libpq's reason in err, its quoted
 * parts hidden (they may be the password). Values (sslmode=bogus) are judged
 * only at connect. */
int tds_pg_url_check(const char *url, char *err, size_t errlen);
/* 0 when the database holds the pipeline's schema (tds.schema_migrations),
 * else -1 with one line in err: what to run, or the query's failure. For the
 * commands that read it, which otherwise print libpq's three-line
 * "relation ... does not exist". */
int tds_pg_schema_check(PGconn *c, char *err, size_t errlen);
/* Run a statement without parameters that returns no rows; 0 or -EIO with err. */
int tds_pg_exec(PGconn *c, const char *sql, char *err, size_t errlen);
/* SQLSTATE of a result or NULL. */
const char *tds_pg_sqlstate(const PGresult *r);
/* True for errors worth retrying on a new connection (connection lost, admin
 * shutdown, serialization failure, deadlock). */
bool tds_pg_retryable(const PGresult *r, PGconn *c);

#endif
