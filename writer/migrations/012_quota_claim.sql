-- An owner that lost its organization's lock but lived on (its lock session
-- ended, its other connections still up) went on writing its quota record
-- until it noticed, overwriting the new owner's, and each write renewed its
-- licence to call: calls the new owner never counted. Now each fetcher
-- process claims the row with a token of its own: its writes land only while
-- the row holds that token, and a new owner reads the row and puts its own
-- token in one statement (fetcher/DESIGN.md, "Limiter").
ALTER TABLE tds.quota_use ADD COLUMN claim text;
COMMENT ON COLUMN tds.quota_use.claim IS 'Token of the fetcher process that owns the row: drawn at its start, set when it takes the organization over; only writes carrying it land';
