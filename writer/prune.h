/* prune — keeps the pipeline's own tables from growing without bound.
 *
 * Deletes, in small batches with a commit between each, tds.webhook_events
 * and tds.applied_pages past the dedupe horizon, old tds.rejected rows,
 * finished tds.sync_runs and tds.sync_requests, and resolved tds.alerts. Never touches zoho.* tables, running runs or firing
 * alerts. Safe with several writers pruning at once.
 */
#ifndef TDS_PRUNE_H
#define TDS_PRUNE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tds_prune_cfg {
    int64_t webhook_events_days;
    int64_t rejected_days;
    int64_t runs_days;
    int64_t alerts_days;
    int64_t batch;          /* rows per DELETE */
    int64_t max_batches;    /* DELETEs per table per call, so one call stays short */
};

/* Run one pruning pass. *deleted = rows deleted; *more = a table had more
 * old rows than max_batches DELETEs take (run again soon). Returns 0 or a
 * TDS_APPLY_E_* code with one line in err. */
int tds_prune_run(PGconn *c, const struct tds_prune_cfg *cfg, int64_t *deleted, bool *more,
                  char *err, size_t errlen);

#endif
