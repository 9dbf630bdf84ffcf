-- The writer no longer deletes and inserts again every child row of a
-- record it writes: a new version's child rows update the stored ones only
-- where a value differs, and only the rows whose key is gone are deleted
-- (writer/DESIGN.md, "One transaction", step 4). Migration 027 queued a
-- document's items from its lines as they were deleted and inserted, so a
-- new version of an invoice whose lines stayed as they were (its status
-- changed, a draft sent) would queue nothing, although the document may have
-- moved those items' stock. So a document's detail version written now
-- queues the items of the lines stored before it (statement trigger on the
-- document table, which the writer upserts before its lines: a row whose
-- content hash changed, or a deleted document written live again; an
-- UPDATE that leaves the version as it was, by an operator or a later
-- migration, queues nothing), and a line
-- updated in place queues its new item (a line whose item changed). Lines
-- inserted and deleted queue theirs as before. Together that is every item
-- a document names, before and after, each once per transaction, as when
-- every line was deleted and inserted again.
CREATE FUNCTION tds.queue_stock_of_documents() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_TABLE_NAME = 'invoices' THEN
        INSERT INTO tds.stock_refresh (org_id, item_id, reason)
        SELECT DISTINCT ON (l.org_id, l.item_id) l.org_id, l.item_id, 'invoices ' || l.invoice_id
          FROM written d
          JOIN before o ON o.org_id = d.org_id AND o.invoice_id = d.invoice_id
          JOIN zoho.invoice_lines l ON l.org_id = d.org_id AND l.invoice_id = d.invoice_id
          JOIN zoho.items i ON i.org_id = l.org_id AND i.item_id = l.item_id
          LEFT JOIN tds.quota_use u ON u.org_id = l.org_id
         WHERE d.is_detail AND d.deleted_at IS NULL AND l.item_id IS NOT NULL
           AND (o.content_hash IS DISTINCT FROM d.content_hash OR o.deleted_at IS NOT NULL)
           AND i.deleted_at IS NULL
           AND (i.observed_at IS NULL OR d.modified_time IS NULL
                OR i.observed_at < d.modified_time + interval '1 minute'
                                   + make_interval(secs => greatest(coalesce(u.clock_lead_s, 0), 0)))
           AND NOT EXISTS (SELECT 1 FROM tds.stock_refresh q WHERE q.org_id = l.org_id
                           AND q.item_id = l.item_id AND q.queued_at = now())
         ORDER BY l.org_id, l.item_id;
    ELSE
        INSERT INTO tds.stock_refresh (org_id, item_id, reason)
        SELECT DISTINCT ON (l.org_id, l.item_id) l.org_id, l.item_id, 'sales_orders ' || l.salesorder_id
          FROM written d
          JOIN before o ON o.org_id = d.org_id AND o.salesorder_id = d.salesorder_id
          JOIN zoho.sales_order_lines l ON l.org_id = d.org_id AND l.salesorder_id = d.salesorder_id
          JOIN zoho.items i ON i.org_id = l.org_id AND i.item_id = l.item_id
          LEFT JOIN tds.quota_use u ON u.org_id = l.org_id
         WHERE d.is_detail AND d.deleted_at IS NULL AND l.item_id IS NOT NULL
           AND (o.content_hash IS DISTINCT FROM d.content_hash OR o.deleted_at IS NOT NULL)
           AND i.deleted_at IS NULL
           AND (i.observed_at IS NULL OR d.modified_time IS NULL
                OR i.observed_at < d.modified_time + interval '1 minute'
                                   + make_interval(secs => greatest(coalesce(u.clock_lead_s, 0), 0)))
           AND NOT EXISTS (SELECT 1 FROM tds.stock_refresh q WHERE q.org_id = l.org_id
                           AND q.item_id = l.item_id AND q.queued_at = now())
         ORDER BY l.org_id, l.item_id;
    END IF;
    RETURN NULL;
END
$fn$;

-- A document's upsert (INSERT ... ON CONFLICT DO UPDATE) fires the UPDATE
-- statement triggers with the rows it updated; a new document has no lines
-- stored yet, so inserts need none.
CREATE TRIGGER invoices_written AFTER UPDATE ON zoho.invoices
    REFERENCING OLD TABLE AS before NEW TABLE AS written FOR EACH STATEMENT
    EXECUTE FUNCTION tds.queue_stock_of_documents();
CREATE TRIGGER sales_orders_written AFTER UPDATE ON zoho.sales_orders
    REFERENCING OLD TABLE AS before NEW TABLE AS written FOR EACH STATEMENT
    EXECUTE FUNCTION tds.queue_stock_of_documents();
CREATE TRIGGER invoice_lines_changed AFTER UPDATE ON zoho.invoice_lines
    REFERENCING NEW TABLE AS moved FOR EACH STATEMENT
    EXECUTE FUNCTION tds.queue_stock_of_lines();
CREATE TRIGGER sales_order_lines_changed AFTER UPDATE ON zoho.sales_order_lines
    REFERENCING NEW TABLE AS moved FOR EACH STATEMENT
    EXECUTE FUNCTION tds.queue_stock_of_lines();

COMMENT ON TABLE tds.stock_refresh IS 'Items whose stock a document changed since their stored version was seen (a new version of their invoice or sales order written, the document deleted), a row per document write: the fetcher that owns the organization fetches their detail again, oldest first, and deletes the rows queued before it asked.';
