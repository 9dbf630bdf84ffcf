-- records_fetched counts a record once per page it arrives in: a record
-- listed and then fetched in detail counts twice, so it cannot say how far a
-- run has gone. records_walked counts each record once, when the run is done
-- with it; `tds-fetcher sync` sets it against the rows the table held before
-- the run to show a full sync's progress.
ALTER TABLE tds.sync_runs ADD COLUMN records_walked bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN tds.sync_runs.records_walked IS 'Records the run is done with so far, each once: when its list page arrived, or when its detail call ended if it needed its detail (a fetch by id: each id asked)';
COMMENT ON COLUMN tds.sync_runs.records_fetched IS 'Records fetched from Zoho so far, once per page they came in: a record listed and then fetched in detail counts twice';
