/* bus — ZeroMQ sockets the way every stage uses them.
 *
 * One zmq context per process. Sockets get a bounded high-water mark (so a
 * slow downstream makes upstream wait instead of growing memory), ZMQ_IMMEDIATE
 * on connecting sockets (no queueing to peers that are not there), a bounded
 * linger and reconnect intervals. PULL and SUB sockets take no frame over
 * TDS_MSG_MAX_FRAME (msg.h): libzmq disconnects a peer that sends one instead
 * of buffering it.
 *
 * Endpoint lists are comma-separated. For a connecting socket, a
 * "tcp://name:port" whose name resolves to several addresses is connected to
 * each address; tds_bus_refresh() re-resolves and connects to new addresses,
 * disconnects from vanished ones (how an upstream reaches every replica of a
 * Kubernetes headless Service). A ZeroMQ socket belongs to one thread.
 *
 * Optional CURVE encryption: after tds_bus_set_curve() every socket made by
 * the bus is a CURVE server on tds_bus_bind (the pipeline's one server
 * keypair) and a CURVE client on tds_bus_connect (a keypair made for this
 * process, checked against the server public key). Off by default.
 */
#ifndef TDS_BUS_H
#define TDS_BUS_H

#include <stddef.h>
#include <stdint.h>

struct tds_bus;
struct tds_bus_sock;

struct tds_bus_opts {
    int hwm;            /* send and receive high-water mark, default 1000 */
    int linger_ms;      /* default 1000 */
    int reconnect_ms;   /* default 100 (max 5000 with backoff) */
};

int tds_bus_new(struct tds_bus **out);
struct tds_bus *tds_bus_free(struct tds_bus *bus);

/* Turn on CURVE for every later bind and connect. Keys are Z85 text, 40
 * characters each; the public key must belong to the secret key. Both NULL or
 * empty = off (returns 0). Returns 0, TDS_E_INVALID (a key is missing,
 * malformed, or the pair does not match), or -ENOTSUP when libzmq was built
 * without CURVE. Call before creating sockets that bind or connect. */
int tds_bus_set_curve(struct tds_bus *bus, const char *server_secret_z85,
                      const char *server_public_z85);

/* type: ZMQ_PUSH, ZMQ_PULL, ZMQ_PUB, ZMQ_SUB. opts may be NULL for defaults. */
int tds_bus_sock_new(struct tds_bus *bus, int type, const struct tds_bus_opts *opts,
                     struct tds_bus_sock **out);
struct tds_bus_sock *tds_bus_sock_free(struct tds_bus_sock *s);
/* The raw zmq socket, for zmq_poll and zmq_msg_recv. Owned by s. */
void *tds_bus_sock_raw(struct tds_bus_sock *s);

/* Bind to every endpoint in the list. Returns 0 or -errno (errno from zmq). */
int tds_bus_bind(struct tds_bus_sock *s, const char *endpoints);
/* Connect to every endpoint (each resolved name to all its addresses). The list
 * is remembered for tds_bus_refresh. Returns 0 or -errno. An unresolvable name
 * is not an error here: it is retried on refresh. */
int tds_bus_connect(struct tds_bus_sock *s, const char *endpoints);
/* Re-resolve the names given to tds_bus_connect; connect new, drop gone ones.
 * Returns the number of connected addresses. Blocks in getaddrinfo. */
int tds_bus_refresh(struct tds_bus_sock *s);
/* tds_bus_refresh on every socket of the bus that has a connect list; those
 * sockets must belong to the calling thread. Stages call it (or
 * tds_bus_refresh) every TDS_BUS_REFRESH_MS, so that an upstream finds
 * replicas that appear, and names that did not resolve at start-up. */
void tds_bus_refresh_all(struct tds_bus *bus);
#define TDS_BUS_REFRESH_MS 1000
size_t tds_bus_peer_count(const struct tds_bus_sock *s);

/* SUB only: subscribe to a topic prefix ("" = everything). */
int tds_bus_subscribe(struct tds_bus_sock *s, const char *topic);

/* Send one frame. flags as zmq_send (ZMQ_DONTWAIT, ZMQ_SNDMORE). Returns 0,
 * -EAGAIN when the HWM is reached with ZMQ_DONTWAIT, or -errno. */
int tds_bus_send(struct tds_bus_sock *s, const void *buf, size_t len, int flags);
/* The same, counting the frame's bytes from the send until ZeroMQ lets the
 * frame go (written to the peer, or dropped with its socket): what the send
 * queues hold, which their high-water marks bound in messages only.
 * tds_bus_queued() reads the sum over the bus's sockets. */
int tds_bus_send_counted(struct tds_bus_sock *s, const void *buf, size_t len, int flags);
size_t tds_bus_queued(struct tds_bus *bus);
/* Receive one frame into a new buffer (caller frees), at most max_len bytes
 * (longer frames are received, discarded and reported as TDS_E_TOO_LARGE so
 * the caller can count a dead letter). *more says whether more frames follow.
 * Returns 0, -EAGAIN (ZMQ_DONTWAIT and nothing ready), TDS_E_TOO_LARGE or -errno. */
int tds_bus_recv(struct tds_bus_sock *s, char **buf, size_t *len, size_t max_len, int flags,
                 int *more);

/* Discard the parts that remain of the message whose part was received last
 * (none when it was the last one), unread and uncopied, whatever their size.
 * Returns how many were discarded, or -errno. */
int tds_bus_skip_rest(struct tds_bus_sock *s);

/* Encode and send a tds_msg (msg.h) in one frame; acks go as [origin][map]. */
struct tds_msg;
int tds_bus_send_msg(struct tds_bus_sock *s, const struct tds_msg *m, int flags);

#endif
