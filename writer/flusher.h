/* flusher — has PostgreSQL flush its WAL now, on a connection of its own.
 *
 * The writer's session commits without waiting for the WAL flush when it
 * may (apply.c, "commit_mode"): its rows are visible a flush sooner, and
 * their acks wait until the flushed position, read on that session, passes
 * each commit (writer.c). Left alone, PostgreSQL's WAL writer flushes such
 * commits every wal_writer_delay (200 ms by default), and every ack would
 * wait that long. The flusher commits a transaction of its own that waits
 * for its flush (synchronous_commit = local), which writes and syncs every
 * commit before it: the acks then wait about one fdatasync.
 *
 * Each flush also reads the position flushed after its COMMIT. An ack is
 * released by it only when this connection was open before the ack's
 * commit (writer.c, tds_writer_release_side()): a crash of the server in
 * between would have ended the connection, so a position it reads after a
 * crash can never pass for one before it. The writer's own session reads
 * the position too, as ever (every 10 ms while acks wait). Never blocks:
 * the connection is opened in steps (tds_flusher_advance), its socket
 * watched by the writer's loop, and acks go by the session's reads until it
 * is ready (a fresh backend's handshake took ~20 ms of the writer's loop
 * when it blocked, and a server slow to answer it up to libpq's 10 s).
 */
#ifndef TDS_FLUSHER_H
#define TDS_FLUSHER_H

#include <stdbool.h>
#include <stdint.h>

struct tds_flusher;

/* conninfo: libpq conninfo or URL (copied). Does not connect. */
int tds_flusher_new(struct tds_flusher **out, const char *conninfo);
struct tds_flusher *tds_flusher_free(struct tds_flusher *f);

/* The socket to watch: for output when *out says so (the handshake waits to
 * send), else for input (the handshake's answers, the server's start time,
 * a flush in flight); -1 when there is no usable connection (a failed one is
 * closed by the next try). */
int tds_flusher_socket(const struct tds_flusher *f, bool *out);

/* Open the connection, a step at a time, without waiting: begins it when
 * there is none (or a failed one's retry time has come), goes on with its
 * handshake and then asks the server's start time. 1 when it is ready, 0
 * while under way, -1 when there is none to be had now (logged, tried again
 * after a while). Called when its socket is ready and whenever a flush is
 * wanted; a try under way for FLUSHER_CONNECT_TIMEOUT_MS is given up. */
int tds_flusher_advance(struct tds_flusher *f);
bool tds_flusher_ready(const struct tds_flusher *f);

/* Send a flush once the connection is ready (advancing it first). True when
 * one is in flight (sent now or before); false while the connection is
 * under way or cannot be had. */
bool tds_flusher_start(struct tds_flusher *f);
bool tds_flusher_busy(const struct tds_flusher *f);

/* Read what arrived (its socket was ready): 1 when the flush in flight has
 * finished (the WAL is on disk up to where it was when the flush was sent,
 * and *flushed is the position on disk read after it, 0 if unknown), 2 when
 * the connection has just become ready, 0 when neither, -1 when it failed
 * (the connection is given up: a flush, the handshake, or an idle connection
 * the server ended). */
int tds_flusher_collect(struct tds_flusher *f, uint64_t *flushed);

/* The connection's number (one more at each connect), 0 without a ready
 * one; and the start time of the server it reached (empty without one). */
uint64_t tds_flusher_serial(const struct tds_flusher *f);
const char *tds_flusher_server(const struct tds_flusher *f);

/* Flushes finished since the start. */
uint64_t tds_flusher_count(const struct tds_flusher *f);

/* Close the connection (the writer's own session was lost or the writer
 * stops); the next start opens another. */
void tds_flusher_close(struct tds_flusher *f);

#endif
