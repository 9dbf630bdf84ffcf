-- While an organization is paused for refused credentials (until an
-- operator comes, maybe days), the fetcher keeps each id-only webhook's
-- fetch as an open mode 'fetch' row, one per record, checked with NOT EXISTS
-- before each insert. sync_requests_fetch_idx (org_id alone) made that check
-- read every open row of the organization, and the claim of a run request
-- (mode <> 'fetch', ORDER BY id) read them too: with 150,000 open rows,
-- 44 ms an insert and 70 ms a claim, on the fetcher's one store connection.
CREATE INDEX sync_requests_fetch_open_idx ON tds.sync_requests (org_id, entity, zoho_id)
    WHERE done_at IS NULL AND mode = 'fetch';
CREATE INDEX sync_requests_run_open_idx ON tds.sync_requests (id)
    WHERE done_at IS NULL AND mode <> 'fetch';
COMMENT ON COLUMN tds.sync_requests.mode IS 'full, incremental or reconcile: a run of the entity (entity all: of each); fetch: one record by id (zoho_id), a webhook''s fetch handed to the owner or held while its organization is paused';
