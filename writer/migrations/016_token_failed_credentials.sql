-- An organization Zoho refused (invalid_code: refresh token revoked or wrong;
-- invalid_client: wrong client id or secret) was paused until `tds-fetcher
-- auth exchange` set its row back to ok: an operator who fixed the refresh
-- token or the client secret in TDS_CONFIG and restarted found it still
-- paused, though the file's credentials win. The row now records which
-- credentials were refused, as a hash (never the secrets), and the fetcher
-- tries again when the configured ones differ (fetcher/DESIGN.md, "Tokens").
ALTER TABLE tds.oauth_tokens ADD COLUMN failed_credentials text;
COMMENT ON COLUMN tds.oauth_tokens.failed_credentials IS 'SHA-256 (hex) of the accounts server, client id, client secret and refresh token Zoho refused (status revoked or invalid); the fetcher tries again when the configured ones differ. NULL otherwise';
