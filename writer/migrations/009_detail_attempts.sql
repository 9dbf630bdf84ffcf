-- The fetcher looks for rows stored only in list form every 10 s and asks
-- Zoho for their detail. A row whose detail never lands (the processor
-- rejects it, Zoho answers without the record) stayed in list form and was
-- asked for again at every look: one API call per such row every 10 s, all
-- day. Each look now records what it asked for here, and a row is not asked
-- for again until next_at, 10 minutes after the first attempt, doubling to a
-- day. An attempt counts only for the row as it was written (row_synced_at):
-- a row written again since is due at once. The table lives in the database,
-- not in a fetcher's memory, so a restart or another replica taking the
-- organization over keeps the backoff.
CREATE TABLE tds.detail_attempts (
    org_id text NOT NULL,
    entity text NOT NULL,
    zoho_id text NOT NULL,
    row_synced_at timestamptz NOT NULL,
    attempts integer NOT NULL,
    asked_at timestamptz NOT NULL,
    next_at timestamptz NOT NULL,
    PRIMARY KEY (org_id, entity, zoho_id)
);
COMMENT ON TABLE tds.detail_attempts IS 'Detail calls the fetcher made for rows stored only in list form, so that a row whose detail never lands is asked for with a backoff, not at every look; the fetcher deletes rows a day past their next_at.';
COMMENT ON COLUMN tds.detail_attempts.org_id IS 'Zoho organization id';
COMMENT ON COLUMN tds.detail_attempts.entity IS 'Entity name from the registry';
COMMENT ON COLUMN tds.detail_attempts.zoho_id IS 'Zoho id of the row in list form';
COMMENT ON COLUMN tds.detail_attempts.row_synced_at IS 'synced_at of the row when its detail was asked for; a row written since is asked for again at once';
COMMENT ON COLUMN tds.detail_attempts.attempts IS 'Detail calls made for the row as written at row_synced_at';
COMMENT ON COLUMN tds.detail_attempts.asked_at IS 'When the last detail call was queued';
COMMENT ON COLUMN tds.detail_attempts.next_at IS 'Not asked for again before this';
CREATE INDEX detail_attempts_next_at_idx ON tds.detail_attempts (org_id, next_at);
GRANT SELECT ON tds.detail_attempts TO tds_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON tds.detail_attempts TO tds_writer;
