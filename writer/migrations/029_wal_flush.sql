-- The writer's commits need not wait for their WAL flush: their acks do
-- (TDS_WRITER_ASYNC_COMMIT, writer/flusher.h). To have PostgreSQL flush at
-- once rather than at its WAL writer's next round, the writer commits a
-- transaction of its own that waits for its flush; such a transaction must
-- write WAL, or its COMMIT does not wait. setval() on this sequence always
-- writes a WAL record (and takes a transaction id, so the COMMIT is
-- recorded): a record of a few dozen bytes, no table row, nothing for
-- logical replication, which does not decode sequences.
CREATE SEQUENCE tds.wal_flush;
COMMENT ON SEQUENCE tds.wal_flush IS 'Set by tds-writer to have PostgreSQL flush its WAL for the acks that wait for it; holds nothing';
GRANT USAGE, SELECT, UPDATE ON SEQUENCE tds.wal_flush TO tds_writer;
