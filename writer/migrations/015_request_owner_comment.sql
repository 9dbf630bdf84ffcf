-- The queue's comment said any fetcher replica takes a request; only the
-- replica that owns the request's organization does (fetcher/store.c,
-- fetcher/DESIGN.md "Ownership"), whichever replica queued it.
COMMENT ON TABLE tds.sync_requests IS 'Queue of requested syncs; the fetcher replica that owns the organization takes each one (FOR UPDATE SKIP LOCKED), whichever replica queued it. Finished ones are pruned after TDS_WRITER_RETAIN_RUNS_DAYS.';
