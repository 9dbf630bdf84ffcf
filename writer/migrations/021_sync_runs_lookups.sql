-- tds.sync_runs keeps 90 days of runs (TDS_WRITER_RETAIN_RUNS_DAYS): a few
-- hundred thousand rows per organization at the default intervals. Three
-- lookups had no index to take and read the whole table:
--   * the fetcher's run history when it takes an organization (the last
--     completed run of each entity and mode) and tds-fetcher sync's
--     estimate (has a full sync of the entity completed?);
--   * pruning, and tds-writer status, by finished_at of finished runs.
CREATE INDEX sync_runs_org_entity_mode_idx
    ON tds.sync_runs (org_id, entity, mode, status, finished_at);
CREATE INDEX sync_runs_finished_idx ON tds.sync_runs (finished_at) WHERE status <> 'running';
