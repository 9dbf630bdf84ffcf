/* status — `tds-writer status`: a readable summary of the database for operators.
 *
 * Prints rows per table and organization, the last sync per entity with its
 * cursor and age, runs in progress with their progress, rejects of the last
 * 24 hours and open alerts. Read-only: runs in one READ ONLY transaction.
 */
#ifndef TDS_STATUS_H
#define TDS_STATUS_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdio.h>

/* Returns 0, or a TDS_APPLY_E_* code with one line in err. */
int tds_status_print(PGconn *c, FILE *out, char *err, size_t errlen);

#endif
