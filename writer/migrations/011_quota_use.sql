-- Zoho allows an organization 100 calls a minute. The fetcher that owns an
-- organization paces its calls to that, but it knew only its own calls: one
-- taking the organization over (a restart, another replica) started with an
-- empty minute and a quarter minute of credit, and could send that on top of
-- the calls its predecessor had just made (code 44, the organization blocked
-- for a while). The owner now writes here, every second, what its limiter
-- holds; the next owner starts from it and counts as made every call the
-- predecessor could have made since (fetcher/DESIGN.md, "Limiter").
CREATE TABLE tds.quota_use (
    org_id text PRIMARY KEY,
    instance text NOT NULL,
    saved_at timestamptz NOT NULL,
    next_at timestamptz,
    paused_until timestamptz,
    in_flight integer NOT NULL,
    done_at timestamptz[] NOT NULL
);
COMMENT ON TABLE tds.quota_use IS 'What the fetcher owning an organization knows of its calls in the last minute, rewritten every second, so that the next owner (a restart, another replica) keeps Zoho''s per-minute limit from its first call.';
COMMENT ON COLUMN tds.quota_use.org_id IS 'Zoho organization id';
COMMENT ON COLUMN tds.quota_use.instance IS 'The fetcher that wrote the row: fetcher.<TDS_INSTANCE>';
COMMENT ON COLUMN tds.quota_use.saved_at IS 'When the owner read its limiter (its clock)';
COMMENT ON COLUMN tds.quota_use.next_at IS 'Earliest next call its pacing allowed; NULL before its first call';
COMMENT ON COLUMN tds.quota_use.paused_until IS 'End of a pause after Zoho''s code 44 (per-minute limit), if one was running';
COMMENT ON COLUMN tds.quota_use.in_flight IS 'Calls sent and not yet answered';
COMMENT ON COLUMN tds.quota_use.done_at IS 'When each call answered within the last minute finished, oldest first';
GRANT SELECT ON tds.quota_use TO tds_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON tds.quota_use TO tds_writer;
