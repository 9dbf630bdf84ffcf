/* prune — keeps the pipeline's own tables from growing without bound.
 *
 * Each DELETE takes at most cfg->batch rows picked by ctid from an indexed
 * predicate, in autocommit, so locks are short and vacuum keeps up; a call
 * stops after cfg->max_batches per table and says so (*more), and the caller
 * runs it again soon rather than at its next interval: a fixed number of
 * rows per interval would fall behind a steady flow of webhooks.
 */
#include "prune.h"

#include <stdio.h>
#include <stdlib.h>

#include "apply.h"

struct target {
    const char *name;
    const char *sql; /* $1 = days, $2 = batch */
};

static const struct target targets[] = {
    {"tds.webhook_events",
     "DELETE FROM tds.webhook_events WHERE ctid IN (SELECT ctid FROM tds.webhook_events "
     "WHERE received_at < now() - make_interval(days => $1::int) LIMIT $2::int)"},
    {"tds.applied_pages",
     "DELETE FROM tds.applied_pages WHERE ctid IN (SELECT ctid FROM tds.applied_pages "
     "WHERE applied_at < now() - make_interval(days => $1::int) LIMIT $2::int)"},
    {"tds.rejected",
     "DELETE FROM tds.rejected WHERE ctid IN (SELECT ctid FROM tds.rejected "
     "WHERE created_at < now() - make_interval(days => $1::int) LIMIT $2::int)"},
    {"tds.sync_runs",
     "DELETE FROM tds.sync_runs WHERE ctid IN (SELECT ctid FROM tds.sync_runs "
     "WHERE status <> 'running' AND finished_at < now() - make_interval(days => $1::int) "
     "LIMIT $2::int)"},
    {"tds.alerts",
     "DELETE FROM tds.alerts WHERE ctid IN (SELECT ctid FROM tds.alerts "
     "WHERE state = 'resolved' AND resolved_at < now() - make_interval(days => $1::int) "
     "LIMIT $2::int)"},
    /* finished requests go with the finished runs (migration 013's index) */
    {"tds.sync_requests",
     "DELETE FROM tds.sync_requests WHERE ctid IN (SELECT ctid FROM tds.sync_requests "
     "WHERE done_at IS NOT NULL AND done_at < now() - make_interval(days => $1::int) "
     "LIMIT $2::int)"},
};

int tds_prune_run(PGconn *c, const struct tds_prune_cfg *cfg, int64_t *deleted, bool *more,
                  char *err, size_t errlen)
{
    /* pages share the webhook events' dedupe horizon */
    const int64_t days[] = {cfg->webhook_events_days, cfg->webhook_events_days,
                            cfg->rejected_days, cfg->runs_days, cfg->alerts_days,
                            cfg->runs_days};
    char batch[24];

    _Static_assert(sizeof(days) / sizeof(days[0]) == sizeof(targets) / sizeof(targets[0]),
                   "a retention per target");
    *deleted = 0;
    *more = false;
    snprintf(batch, sizeof(batch), "%lld", (long long)cfg->batch);
    for (size_t t = 0; t < sizeof(targets) / sizeof(targets[0]); t++) {
        char d[24];
        const char *vals[2] = {d, batch};

        snprintf(d, sizeof(d), "%lld", (long long)days[t]);
        for (int64_t i = 0; i < cfg->max_batches; i++) {
            PGresult *r = PQexecParams(c, targets[t].sql, 2, NULL, vals, NULL, NULL, 0);
            long long n;
            int code;

            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                code = tds_apply_classify(c, r);
                snprintf(err, errlen, "could not prune %s: %s", targets[t].name,
                         PQresultErrorMessage(r));
                for (char *p = err; *p; p++)
                    if (*p == '\n')
                        *p = ' ';
                PQclear(r);
                return code;
            }
            n = strtoll(PQcmdTuples(r), NULL, 10);
            PQclear(r);
            *deleted += n;
            if (n < cfg->batch)
                break;
            if (i + 1 == cfg->max_batches)
                *more = true;
        }
    }
    return 0;
}
