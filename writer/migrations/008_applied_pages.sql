-- A page the fetcher sends again because the writer's ack did not reach it
-- (the writer died after COMMIT, an ack came after the timeout) was applied
-- twice: its rows are guarded, but its counts were added to tds.sync_runs
-- again and its rejects inserted into tds.rejected again. The writer now
-- records each page it applies by its message id, which the fetcher keeps
-- when it sends the page again, and acks a page recorded here without
-- writing it again.
CREATE TABLE tds.applied_pages (
    page_id text PRIMARY KEY,
    org_id text NOT NULL,
    entity text NOT NULL,
    run_id text,
    mode text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tds.applied_pages IS 'Pages applied (a sync run''s, a fetch''s), one row per page message id, to recognise a page sent again after its ack was lost; pruned after the dedupe horizon (TDS_WRITER_RETAIN_WEBHOOK_EVENTS_DAYS).';
COMMENT ON COLUMN tds.applied_pages.page_id IS 'Id of the fetcher''s page message (the same when it is sent again)';
COMMENT ON COLUMN tds.applied_pages.org_id IS 'Zoho organization id';
COMMENT ON COLUMN tds.applied_pages.entity IS 'Entity name from the registry';
COMMENT ON COLUMN tds.applied_pages.run_id IS 'Sync run (tds.sync_runs.run_id); NULL for a fetch by id';
COMMENT ON COLUMN tds.applied_pages.mode IS 'full, incremental, fetch or reconcile';
COMMENT ON COLUMN tds.applied_pages.applied_at IS 'When the writer committed it';
CREATE INDEX applied_pages_applied_at_idx ON tds.applied_pages (applied_at);
GRANT SELECT ON tds.applied_pages TO tds_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON tds.applied_pages TO tds_writer;
