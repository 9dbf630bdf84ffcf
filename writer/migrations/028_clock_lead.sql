-- The stock triggers of migration 027 compare two clocks: an item's
-- observed_at is the fetcher host's (when its page was fetched), a
-- document's modified_time is Zoho's. With the host more than their minute
-- of slack ahead of Zoho, a document changed within that lead after its
-- items were last fetched queued none of them, and their stock stayed stale
-- until the items' next change or the daily reconciliation. The owning
-- fetcher now records its lead here (the Date of Zoho's answers bounds it),
-- and the triggers add it to their slack.
ALTER TABLE tds.quota_use ADD COLUMN clock_lead_s integer;
ALTER TABLE tds.quota_use ADD COLUMN clock_lead_at timestamptz;
COMMENT ON COLUMN tds.quota_use.clock_lead_s IS 'How many seconds the owner''s clock runs ahead of Zoho''s, at most (negative: behind), as the Date of Zoho''s answers bounds it; the stock triggers add it to their slack. NULL before the owner measured it';
COMMENT ON COLUMN tds.quota_use.clock_lead_at IS 'When clock_lead_s was written (again when it moves by 3 s or more, and every minute)';

-- As in migration 027, with the organization's recorded lead (never less
-- than 0) added to the minute: an item counts a document when its version
-- was seen, by the fetcher's clock, before the document's modified time,
-- by Zoho's, plus the minute and the lead.
CREATE OR REPLACE FUNCTION tds.queue_stock_of_lines() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_TABLE_NAME = 'invoice_lines' THEN
        INSERT INTO tds.stock_refresh (org_id, item_id, reason)
        SELECT DISTINCT ON (m.org_id, m.item_id) m.org_id, m.item_id, 'invoices ' || m.invoice_id
          FROM moved m
          JOIN zoho.invoices d ON d.org_id = m.org_id AND d.invoice_id = m.invoice_id
          JOIN zoho.items i ON i.org_id = m.org_id AND i.item_id = m.item_id
          LEFT JOIN tds.quota_use u ON u.org_id = m.org_id
         WHERE m.item_id IS NOT NULL AND d.deleted_at IS NULL AND i.deleted_at IS NULL
           AND (i.observed_at IS NULL OR d.modified_time IS NULL
                OR i.observed_at < d.modified_time + interval '1 minute'
                                   + make_interval(secs => greatest(coalesce(u.clock_lead_s, 0), 0)))
           AND NOT EXISTS (SELECT 1 FROM tds.stock_refresh q WHERE q.org_id = m.org_id
                           AND q.item_id = m.item_id AND q.queued_at = now())
         ORDER BY m.org_id, m.item_id;
    ELSE
        INSERT INTO tds.stock_refresh (org_id, item_id, reason)
        SELECT DISTINCT ON (m.org_id, m.item_id) m.org_id, m.item_id, 'sales_orders ' || m.salesorder_id
          FROM moved m
          JOIN zoho.sales_orders d ON d.org_id = m.org_id AND d.salesorder_id = m.salesorder_id
          JOIN zoho.items i ON i.org_id = m.org_id AND i.item_id = m.item_id
          LEFT JOIN tds.quota_use u ON u.org_id = m.org_id
         WHERE m.item_id IS NOT NULL AND d.deleted_at IS NULL AND i.deleted_at IS NULL
           AND (i.observed_at IS NULL OR d.modified_time IS NULL
                OR i.observed_at < d.modified_time + interval '1 minute'
                                   + make_interval(secs => greatest(coalesce(u.clock_lead_s, 0), 0)))
           AND NOT EXISTS (SELECT 1 FROM tds.stock_refresh q WHERE q.org_id = m.org_id
                           AND q.item_id = m.item_id AND q.queued_at = now())
         ORDER BY m.org_id, m.item_id;
    END IF;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION tds.queue_stock_of_lines() IS 'Trigger: queues in tds.stock_refresh the items of the document lines a statement wrote or deleted (migrations 027, 028)';
