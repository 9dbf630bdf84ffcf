/* events — the named pipeline events operators know (DESIGN.md §10):
 * tds.zoho.sync.started|completed|failed, tds.zoho.entity.synced,
 * tds.zoho.webhook.received|processed, tds.zoho.api.success|failed,
 * tds.zoho.token.refreshed|refresh_failed|revoked.
 *
 * Published on the stage's event socket (PUB, TDS_EVENTS_BIND) as two frames:
 * the event name (topic) and a JSON object {"ts","stage","event",...fields}.
 * Publishing never blocks: when no one listens or the HWM is reached, the
 * event is dropped (and counted). With no socket configured it is a no-op.
 */
#ifndef TDS_EVENTS_H
#define TDS_EVENTS_H

struct tds_events;
struct tds_bus;

/* bind may be NULL or "" (no socket). */
int tds_events_new(struct tds_events **out, struct tds_bus *bus, const char *stage, const char *bind);
struct tds_events *tds_events_free(struct tds_events *ev);
/* fields: pairs of const char * key, value (value NULL = JSON null), ending
 * with NULL. Example: tds_events_emit(ev, "tds.zoho.sync.started", "org", org,
 * "entity", "items", NULL). */
void tds_events_emit(struct tds_events *ev, const char *name, ...);

#endif
