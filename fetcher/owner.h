/* owner — which organizations this replica fetches.
 *
 * One PostgreSQL session-level advisory lock per organization,
 * pg_try_advisory_lock(hashtext('tds-org:' || org_id)), held on a dedicated
 * connection that does nothing else. Locks not held are tried again every
 * few seconds, so when a replica dies (its connection, and so its locks, go
 * away) another one takes its organizations within seconds. When our own
 * connection breaks, every organization is reported lost at once: without
 * the lock we must not fetch. Never logs secrets; logs ownership changes.
 *
 * No lock is tried while the database's schema (tds.schema_migrations) is
 * older than this release's, TDS_SCHEMA_VERSION: the fetcher's statements
 * would fail on it, or do nothing and say little. It says so every minute
 * until `tds-writer migrate` (or a writer of this release starting) has
 * brought the schema up; during a rolling update the old replicas keep the
 * organizations meanwhile.
 */
#ifndef TDS_FETCHER_OWNER_H
#define TDS_FETCHER_OWNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tds_owner;
struct tds_loop;
struct tds_orgs;

typedef void (*tds_owner_cb)(const char *org, bool owned, void *ud);

/* Starts trying at once and then every every_ms. */
int tds_owner_new(struct tds_owner **out, struct tds_loop *loop, const char *conninfo,
                  const struct tds_orgs *orgs, int64_t every_ms, tds_owner_cb cb, void *ud);
/* Closes the connection: every lock is released. No callbacks. */
struct tds_owner *tds_owner_free(struct tds_owner *w);
/* Stop trying and release every lock now (shutdown). No callbacks. */
void tds_owner_release(struct tds_owner *w);
bool tds_owner_connected(const struct tds_owner *w);
/* Whether the schema is this release's (or newer). When not, *version gets
 * what the database has (0: no tds.schema_migrations; -1: not read yet). */
bool tds_owner_schema_ok(const struct tds_owner *w, int *version);
size_t tds_owner_count(const struct tds_owner *w);

#endif
