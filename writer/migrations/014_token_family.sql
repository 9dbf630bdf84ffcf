-- Zoho counts token refreshes per refresh token (10 in 10 minutes, 30 live
-- access tokens), and one Zoho user's organizations share one refresh token.
-- Each organization refreshed on its own: eleven of them starting together
-- made eleven refreshes, and Zoho locked the token out. Rows now name their
-- token family, a hash of the accounts server, client id and refresh token;
-- the fetcher refreshes one organization of a family at a time, the others
-- take the token it stored, and the refresh budget is the family's
-- (fetcher/DESIGN.md, "Tokens").
ALTER TABLE tds.oauth_tokens ADD COLUMN family text;
COMMENT ON COLUMN tds.oauth_tokens.family IS 'SHA-256 (hex) of the accounts server, client id and refresh token that mint this row''s access token: organizations of one Zoho user share a family, its access token and its refresh budget';
CREATE INDEX oauth_tokens_family_idx ON tds.oauth_tokens (family) WHERE family IS NOT NULL;
