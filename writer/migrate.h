/* migrate — the numbered SQL migrations in writer/migrations/, embedded in
 * the binary at build time, and the check of the database against the entity
 * registry.
 *
 * Owns tds.schema_migrations. Each pending migration runs in its own
 * transaction under a session advisory lock, so several writers starting at
 * once apply each migration exactly once. Never changes zoho.* data.
 */
#ifndef TDS_MIGRATE_H
#define TDS_MIGRATE_H

#include <libpq-fe.h>
#include <stddef.h>

struct tds_migration {
    int version;
    const char *name;
    const char *sql;
};

extern const struct tds_migration tds_migrations[];
extern const size_t tds_migrations_count;

/* Apply pending migrations. *applied = how many ran now (0 when up to date).
 * Returns 0, or a TDS_APPLY_E_* code with one line in err. */
int tds_migrate_run(PGconn *c, int *applied, char *err, size_t errlen);

/* Migrations recorded in tds.schema_migrations that this binary does not
 * have: the database was set up by a later release. *n = how many, and the
 * newest one's "NNN_name" in newest. Returns 0 or TDS_APPLY_E_* with err. */
int tds_migrate_newer(PGconn *c, int *n, char *newest, size_t newestlen, char *err,
                      size_t errlen);

/* Check that every registry table and column exists with the right type.
 * Returns 0, or TDS_E_INVALID (mismatch) / TDS_APPLY_E_* with one line in err. */
int tds_migrate_verify(PGconn *c, char *err, size_t errlen);

/* Tables of zoho and tds with an id column (text, named *_id) not yet of
 * COLLATE "C" (migration 022 could not change them: a view, rule or policy
 * depends on the column). *n = how many, and the first one's "schema.table"
 * in first. Returns 0 or TDS_APPLY_E_* with err. */
int tds_migrate_uncollated(PGconn *c, int *n, char *first, size_t firstlen, char *err,
                           size_t errlen);

#endif
