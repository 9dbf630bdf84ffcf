/* server — the simulator's HTTP front: Zoho's accounts server, the
 * Inventory/Books APIs and the /_sim/ control API on one libmicrohttpd
 * daemon (a thread per connection, so slow and hanging replies only hold
 * their own connection). It routes and answers; the data, limits, tokens and
 * webhooks live in the modules under sim.h.
 */
#ifndef ZS_SERVER_H
#define ZS_SERVER_H

#include <stdint.h>

#include "sim.h"

struct zs_server;

/* Binds host:port (port 0 = any free port) and starts serving. */
int zs_server_new(struct zs_server **out, struct zs_sim *sim, const char *host, uint16_t port,
                  const char *api_domain);
uint16_t zs_server_port(const struct zs_server *s);
/* Stops accepting, waits for connection threads, frees. */
struct zs_server *zs_server_free(struct zs_server *s);

#endif
