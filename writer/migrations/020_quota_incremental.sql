-- The fetcher stretches an organization's incremental interval until its
-- list calls fit the daily API budget (fetcher/DESIGN.md, "Schedule and the
-- daily budget": 69 minutes at 1,000 calls a day), while the writer's
-- entity_stale rule judged tds.sync_state against the configured
-- incremental_every_s: on a small plan every healthy entity went stale
-- between two runs. The owner now writes the interval it uses with its quota
-- record, every second; the rule uses it while the record is recent
-- (writer/ALERTS.md).
ALTER TABLE tds.quota_use ADD COLUMN incremental_every_s integer;
COMMENT ON COLUMN tds.quota_use.incremental_every_s IS 'Seconds between the owner''s scheduled incremental runs now: the configured incremental_every_s, stretched to fit the daily API budget; NULL from a fetcher that does not write it';
