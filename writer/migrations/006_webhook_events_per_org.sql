-- A webhook event is known by its organization and its id: Zoho's event ids
-- are per organization (its documented example is "5675"), so two
-- organizations may send the same one, and keyed by the id alone the second
-- organization's event was taken for the first's.
--
-- Rows recorded without an organization (a message that named none) keep
-- '' for it: no event that names one can match them, and they stay until
-- the dedupe horizon prunes them like the others.
UPDATE tds.webhook_events SET org_id = '' WHERE org_id IS NULL;
ALTER TABLE tds.webhook_events
    ALTER COLUMN org_id SET NOT NULL,
    DROP CONSTRAINT webhook_events_pkey,
    ADD CONSTRAINT webhook_events_pkey PRIMARY KEY (org_id, event_id);
COMMENT ON TABLE tds.webhook_events IS 'Webhook events applied, one row per organization and event id, to recognise a duplicate (a retry that reached another ingress replica, a replay); pruned after the dedupe horizon (TDS_WRITER_RETAIN_WEBHOOK_EVENTS_DAYS).';
COMMENT ON COLUMN tds.webhook_events.event_id IS 'Event id (Zoho''s, or a content hash), unique within its organization';
COMMENT ON COLUMN tds.webhook_events.org_id IS 'Zoho organization id ('''' for an event recorded before migration 006 without one)';
