-- A run ended by a fetcher's clean shutdown (SIGTERM: a rolling deploy, a
-- node drained, `deploy/local/up` run again) was recorded as failed, so each
-- restart raised sync_failed for every run it interrupted, though nothing
-- failed: the run's request stays open and the next owner runs it again.
-- Such a run is now 'stopped', which sync_failed does not count. Existing
-- rows keep their status.
ALTER TABLE tds.sync_runs DROP CONSTRAINT sync_runs_status_check;
ALTER TABLE tds.sync_runs ADD CONSTRAINT sync_runs_status_check
    CHECK (status IN ('running', 'completed', 'failed', 'stopped'));
COMMENT ON COLUMN tds.sync_runs.status IS 'running, completed, failed, or stopped (its fetcher shut down cleanly before it finished; the request stays open and is run again)';
