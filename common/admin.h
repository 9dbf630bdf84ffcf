/* admin — the admin HTTP server of every stage (libmicrohttpd, own thread).
 *
 * Serves GET /healthz (200 while the loop heartbeat is fresh: the loop
 * completed an iteration within the stall threshold), /readyz (200
 * when the stage said it is ready, 503 with the reason otherwise), /metrics
 * (Prometheus text) and /status (JSON from the stage's status callback).
 * Extra handlers can be registered before start. It only reads shared state
 * through atomics and callbacks that the stage makes thread-safe.
 */
#ifndef TDS_ADMIN_H
#define TDS_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Default stall threshold of /healthz: well above TDS_LOOP_MAX_WAIT_MS, the
 * longest an idle loop goes without completing an iteration. */
#define TDS_ADMIN_STALL_MS 30000

struct tds_admin;
struct tds_metrics;
struct tds_loop;

/* Returns a malloc'd JSON document (caller = admin frees) or NULL for 500. */
typedef char *(*tds_admin_status_cb)(void *ud);

/* listen: "host:port" or ":port" ("127.0.0.1:9104"). Port 0 picks a free port
 * (see tds_admin_port). */
int tds_admin_new(struct tds_admin **out, const char *listen, struct tds_metrics *metrics,
                  const struct tds_loop *loop);
struct tds_admin *tds_admin_free(struct tds_admin *a);
/* Connections the admin server holds at most, and from one client address:
 * a client holding connections open (a byte of its headers now and then,
 * each under the 10 s idle timeout) takes its address's share, not every
 * slot, so the kubelet's probes and Prometheus are still answered. The share
 * is the load generator's 64 connections of tests/bench. */
#define TDS_ADMIN_CONN_LIMIT 256
#define TDS_ADMIN_PER_IP_LIMIT 64
int tds_admin_start(struct tds_admin *a);
uint16_t tds_admin_port(const struct tds_admin *a);

/* Readiness as the stage decides it; reason is copied ("database unreachable"). */
void tds_admin_set_ready(struct tds_admin *a, bool ready, const char *reason);
/* The process cannot recover by itself (a journal that failed): /healthz
 * answers 503 with reason from now on, so that a liveness probe restarts it. */
void tds_admin_set_failed(struct tds_admin *a, const char *reason);
void tds_admin_set_status_cb(struct tds_admin *a, tds_admin_status_cb cb, void *ud);
/* /healthz answers 503 "event loop stalled" once the loop's heartbeat is
 * older than ms (default TDS_ADMIN_STALL_MS; ms <= 0 restores it). */
void tds_admin_set_stall_ms(struct tds_admin *a, int64_t ms);

/* Parse "host:port" / ":port" into host (may be empty → any) and port. */
int tds_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port);

#endif
