-- Fetch-by-id handed to the owning fetcher replica through tds.sync_requests.
ALTER TABLE tds.sync_requests ADD COLUMN zoho_id text;
COMMENT ON COLUMN tds.sync_requests.zoho_id IS 'Record id for a by-id request (mode fetch): a fetch that reached a replica not owning the organization';
CREATE INDEX sync_requests_fetch_idx ON tds.sync_requests (org_id) WHERE done_at IS NULL AND zoho_id IS NOT NULL;

-- A cached token is only good with the accounts server that minted it.
ALTER TABLE tds.oauth_tokens ADD COLUMN accounts_url text;
COMMENT ON COLUMN tds.oauth_tokens.accounts_url IS 'Accounts server that minted the access token; a token from another one (data center change, moved server) is not used';
