-- A fetcher stopped gently (SIGTERM: a rolling deploy, a scale-down) wrote
-- no last record: its successor had to assume that it went on calling until
-- its licence ran out, and held up to a third of the minute's allowance for
-- the HTTP timeout and a window after the takeover. The owner's last record,
-- written after its calls were stopped and before its lock is released, now
-- says that it made no call after it (fetcher/DESIGN.md, "Limiter").
-- stopped_at counts only while it equals saved_at: a fetcher of a release
-- before this column rewrites saved_at and leaves stopped_at as it was.
ALTER TABLE tds.quota_use ADD COLUMN stopped_at timestamptz;
COMMENT ON COLUMN tds.quota_use.stopped_at IS 'Set by the owner''s last record when it stopped gently: no call of it started after this time. Valid only while equal to saved_at; NULL while the owner runs';
