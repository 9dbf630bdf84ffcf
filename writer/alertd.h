/* alertd — the alert engine of the writer: gathers observations from the
 * database and the stages' admin endpoints, runs the rules (alerts.h), keeps
 * history in tds.alerts and hands notices to the channels (channels.h).
 *
 * Exactly one writer replica evaluates at a time: the one whose own
 * connection holds pg_try_advisory_lock(hashtext('tds-alerts')). The others
 * retry every cycle, so when the leader dies (its session ends and the lock
 * goes with it) another one takes over within a cycle and reloads the firing
 * alerts from the table. Work runs on the engine's own thread, woken by
 * tds_alertd_tick from the loop's timer; database queries and scrapes never
 * block the loop. The admin thread reads a snapshot for /status.
 */
#ifndef TDS_ALERTD_H
#define TDS_ALERTD_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "channels.h"

struct tds_metrics;
struct tds_alert_rules;

struct tds_alertd_cfg {
    const char *database_url;
    const char *instance;        /* this writer, shown in notices */
    const char *scrape;          /* comma-separated http://host:port admin URLs, may be "" */
    const char *orgs_file;       /* optional organizations file: per-org sync intervals */
    int64_t sync_interval_s;     /* default sync interval for entity_stale */
    int64_t scrape_timeout_ms;   /* per request */
    struct tds_channels_cfg channels;
};

struct tds_alertd;

/* Takes ownership of *rules (set to NULL). `metrics` is the writer's
 * registry: engine metrics go there and its own histograms feed /status.
 * Returns 0, TDS_E_INVALID (message in err: bad orgs file, bad channel
 * settings) or -errno. */
int tds_alertd_new(struct tds_alertd **out, const struct tds_alertd_cfg *cfg,
                   struct tds_alert_rules **rules, struct tds_metrics *metrics, char *err,
                   size_t errlen);
/* Starts the engine thread. Returns 0 or -errno. */
int tds_alertd_start(struct tds_alertd *d);
/* Wake the engine for one cycle (safe from any thread; cheap). */
void tds_alertd_tick(struct tds_alertd *d);
/* Stops the thread, releases leadership (closes the connection). Takes NULL. */
struct tds_alertd *tds_alertd_free(struct tds_alertd *d);

/* True while this replica holds the evaluation lock. */
bool tds_alertd_is_leader(struct tds_alertd *d);
/* Cycles completed (any role), for tests and /status. */
uint64_t tds_alertd_cycles(struct tds_alertd *d);

/* Merge the engine's view (success rates and commit latency over 5 min and
 * 1 h, freshness per entity, open alerts, leadership) into `base`, a JSON
 * object text, and return a new string (caller frees), or NULL on error.
 * Thread-safe: reads the snapshot of the last cycle. */
char *tds_alertd_status_merge(struct tds_alertd *d, const char *base);

/* ---- operator commands (own connection, run from main) ---- */

/* Print firing alerts (all = also resolved, newest first, at most 200). */
int tds_alertd_cmd_list(PGconn *c, bool all, FILE *out, char *err, size_t errlen);
/* Acknowledge alert id by `by`. Returns 0, TDS_E_NOTFOUND (no such alert) or
 * TDS_E_INVALID (already acknowledged; err says by whom), -EIO on database
 * errors (message in err). */
int tds_alertd_cmd_ack(PGconn *c, int64_t id, const char *by, FILE *out, char *err, size_t errlen);
/* `tds-writer alerts list [--all]` and `tds-writer alerts ack ID --by NAME`:
 * argv holds the arguments after "alerts". Returns the exit code (0; 1 on a
 * database error or an unknown/already acknowledged alert; 2 on bad arguments). */
int tds_alertd_cli(const char *database_url, int argc, char **argv, FILE *out);

#endif
