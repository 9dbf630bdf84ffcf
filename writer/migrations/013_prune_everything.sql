-- Pruning (writer/prune.c) keeps the pipeline's own tables bounded. Two of
-- their rows were out of its reach:
-- - webhook events of a message that did not say when the webhook was
--   received (received_at NULL) never matched the retention's predicate;
--   they now take the time the writer applied them, as new ones do;
-- - finished sync requests (one per full or incremental request, and one per
--   fetch by id handed to another fetcher replica) were never deleted; they
--   now go with the finished runs' retention, found by this index.
UPDATE tds.webhook_events SET received_at = applied_at WHERE received_at IS NULL;
COMMENT ON COLUMN tds.webhook_events.received_at IS 'When ingress accepted the webhook (when the writer committed it, if its message did not say)';
CREATE INDEX sync_requests_done_idx ON tds.sync_requests (done_at) WHERE done_at IS NOT NULL;
COMMENT ON TABLE tds.sync_requests IS 'Queue of requested syncs; any fetcher replica takes one with FOR UPDATE SKIP LOCKED. Finished ones are pruned after TDS_WRITER_RETAIN_RUNS_DAYS.';
