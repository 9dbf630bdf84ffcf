/* schedule — when runs start: the schedule and the request queue.
 *
 * Per owned organization and entity: an incremental run every
 * incremental_every_s and a reconciliation every reconcile_every_s, timed
 * from the last completed run in tds.sync_runs (so restarts do not reset
 * the clock). And tds.sync_requests rows for owned organizations, claimed
 * with FOR UPDATE SKIP LOCKED. It only decides; sync.c runs.
 */
#ifndef TDS_FETCHER_SCHEDULE_H
#define TDS_FETCHER_SCHEDULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tds_schedule;
struct tds_loop;
struct tds_store;
struct tds_sync;
struct tds_orgs;

/* schedule: false = only requests (tests, or an operator who drives syncs). */
int tds_schedule_new(struct tds_schedule **out, struct tds_loop *loop, struct tds_store *store,
                  struct tds_sync *sync, const struct tds_orgs *orgs, const char *instance,
                  bool schedule, int64_t every_ms);
struct tds_schedule *tds_schedule_free(struct tds_schedule *s);
/* Ownership changed: forget the organization's timing (re-read on next tick). */
void tds_schedule_owned(struct tds_schedule *s, const char *org, bool owned);
/* Stop starting anything (shutdown). */
void tds_schedule_stop(struct tds_schedule *s);

#endif
