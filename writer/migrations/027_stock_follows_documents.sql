-- An invoice or a sales order moves the stock of the items on its lines, and
-- Zoho sends no item webhook for it; whether the item's last_modified_time
-- moves is not confirmed (ZOHO.md), so an incremental may never list it, and
-- zoho.item_stock would stay as it was until the daily reconciliation. So
-- whenever a document's lines are written (they are replaced whenever the
-- document is), or a document is deleted, the items on its lines whose
-- stored version was seen before the document changed are queued here; the
-- fetcher that owns the organization refetches them (GET /itemdetails, 100
-- a call) and deletes the rows queued before it asked. The queue lives in
-- the database, written in the same transaction as the lines, so neither a
-- crash nor a fetcher taking over loses it. Rows are only ever appended by
-- the writers (no key to conflict on): two writers writing documents of the
-- same items neither wait for nor deadlock with each other, nor with the
-- fetcher's deletes.
CREATE TABLE tds.stock_refresh (
    org_id text COLLATE "C" NOT NULL,
    item_id text COLLATE "C" NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now(),
    reason text,
    attempts integer NOT NULL DEFAULT 0,
    next_at timestamptz
);
COMMENT ON TABLE tds.stock_refresh IS 'Items whose stock a document changed since their stored version was seen (their invoice or sales order lines written, the document deleted), a row per document write: the fetcher that owns the organization fetches their detail again, oldest first, and deletes the rows queued before it asked.';
COMMENT ON COLUMN tds.stock_refresh.org_id IS 'Zoho organization id';
COMMENT ON COLUMN tds.stock_refresh.item_id IS 'Zoho item id (zoho.items.item_id)';
COMMENT ON COLUMN tds.stock_refresh.queued_at IS 'When a document queued it (the writing transaction''s start); a refetch asked for before this does not clear it';
COMMENT ON COLUMN tds.stock_refresh.reason IS 'The document that queued it, as entity and id (invoices 4600000000123)';
COMMENT ON COLUMN tds.stock_refresh.attempts IS 'Refetches Zoho refused since it was queued';
COMMENT ON COLUMN tds.stock_refresh.next_at IS 'After a refused refetch: not asked for again before this (NULL: due now)';
CREATE INDEX stock_refresh_item_idx ON tds.stock_refresh (org_id, item_id, queued_at);
GRANT SELECT ON tds.stock_refresh TO tds_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON tds.stock_refresh TO tds_writer;

-- Queues the items of the document lines in the transition table "moved"
-- (the lines written or deleted by the statement) of a live document (lines
-- pruned with their deleted document move nothing). An item is queued when
-- it is stored, live, and its stored version was first seen before the
-- document's version plus a minute (clocks and Zoho's whole seconds): a
-- version seen after that already counts the document. A full sync rewrites
-- no unchanged document, so it queues only what changed. An item this
-- transaction queued already is not queued again (a document's lines are
-- deleted and inserted again: the same items twice). Static statements, one
-- per table, so that PL/pgSQL keeps their plans (an EXECUTE is planned anew
-- at every call).
CREATE FUNCTION tds.queue_stock_of_lines() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_TABLE_NAME = 'invoice_lines' THEN
        INSERT INTO tds.stock_refresh (org_id, item_id, reason)
        SELECT DISTINCT ON (m.org_id, m.item_id) m.org_id, m.item_id, 'invoices ' || m.invoice_id
          FROM moved m
          JOIN zoho.invoices d ON d.org_id = m.org_id AND d.invoice_id = m.invoice_id
          JOIN zoho.items i ON i.org_id = m.org_id AND i.item_id = m.item_id
         WHERE m.item_id IS NOT NULL AND d.deleted_at IS NULL AND i.deleted_at IS NULL
           AND (i.observed_at IS NULL OR d.modified_time IS NULL
                OR i.observed_at < d.modified_time + interval '1 minute')
           AND NOT EXISTS (SELECT 1 FROM tds.stock_refresh q WHERE q.org_id = m.org_id
                           AND q.item_id = m.item_id AND q.queued_at = now())
         ORDER BY m.org_id, m.item_id;
    ELSE
        INSERT INTO tds.stock_refresh (org_id, item_id, reason)
        SELECT DISTINCT ON (m.org_id, m.item_id) m.org_id, m.item_id, 'sales_orders ' || m.salesorder_id
          FROM moved m
          JOIN zoho.sales_orders d ON d.org_id = m.org_id AND d.salesorder_id = m.salesorder_id
          JOIN zoho.items i ON i.org_id = m.org_id AND i.item_id = m.item_id
         WHERE m.item_id IS NOT NULL AND d.deleted_at IS NULL AND i.deleted_at IS NULL
           AND (i.observed_at IS NULL OR d.modified_time IS NULL
                OR i.observed_at < d.modified_time + interval '1 minute')
           AND NOT EXISTS (SELECT 1 FROM tds.stock_refresh q WHERE q.org_id = m.org_id
                           AND q.item_id = m.item_id AND q.queued_at = now())
         ORDER BY m.org_id, m.item_id;
    END IF;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION tds.queue_stock_of_lines() IS 'Trigger: queues in tds.stock_refresh the items of the document lines a statement wrote or deleted (migration 027)';

-- A deleted document gives its stock back; its lines stay (soft delete).
CREATE FUNCTION tds.queue_stock_of_deleted() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format(
        'INSERT INTO tds.stock_refresh (org_id, item_id, reason) '
        'SELECT DISTINCT l.org_id, l.item_id, %1$L || '' '' || $2 FROM zoho.%3$I l '
        'JOIN zoho.items i ON i.org_id = l.org_id AND i.item_id = l.item_id '
        'WHERE l.org_id = $1 AND l.%2$I = $2 AND l.item_id IS NOT NULL AND i.deleted_at IS NULL',
        TG_TABLE_NAME, TG_ARGV[0], TG_ARGV[1])
    USING NEW.org_id, (to_jsonb(NEW) ->> TG_ARGV[0]);
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION tds.queue_stock_of_deleted() IS 'Trigger: queues in tds.stock_refresh the items on the lines of a document just deleted (migration 027)';

CREATE TRIGGER invoice_lines_written AFTER INSERT ON zoho.invoice_lines
    REFERENCING NEW TABLE AS moved FOR EACH STATEMENT
    EXECUTE FUNCTION tds.queue_stock_of_lines();
CREATE TRIGGER invoice_lines_removed AFTER DELETE ON zoho.invoice_lines
    REFERENCING OLD TABLE AS moved FOR EACH STATEMENT
    EXECUTE FUNCTION tds.queue_stock_of_lines();
CREATE TRIGGER sales_order_lines_written AFTER INSERT ON zoho.sales_order_lines
    REFERENCING NEW TABLE AS moved FOR EACH STATEMENT
    EXECUTE FUNCTION tds.queue_stock_of_lines();
CREATE TRIGGER sales_order_lines_removed AFTER DELETE ON zoho.sales_order_lines
    REFERENCING OLD TABLE AS moved FOR EACH STATEMENT
    EXECUTE FUNCTION tds.queue_stock_of_lines();
CREATE TRIGGER invoices_deleted AFTER UPDATE OF deleted_at ON zoho.invoices
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION tds.queue_stock_of_deleted('invoice_id', 'invoice_lines');
CREATE TRIGGER sales_orders_deleted AFTER UPDATE OF deleted_at ON zoho.sales_orders
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION tds.queue_stock_of_deleted('salesorder_id', 'sales_order_lines');

COMMENT ON COLUMN tds.sync_runs.mode IS 'full, incremental, fetch, reconcile or stock (items refetched for tds.stock_refresh)';
COMMENT ON TABLE tds.sync_runs IS 'One row per sync run (full, incremental, fetch, reconcile, stock). The fetcher inserts it and updates the fetched/api fields; the writer updates the written/rejected fields and completes it with the final page.';
