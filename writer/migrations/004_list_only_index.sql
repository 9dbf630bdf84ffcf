-- The fetcher looks for rows stored only in list form (not detail, not
-- deleted) every 10 s per organization and entity, to fetch their detail.
-- Without an index that query read every row of the organization each time
-- (a sequential scan of the whole table when, as usual, no row matches);
-- these partial indexes hold only such rows, so the query costs next to
-- nothing and writes of detail rows never touch them.
CREATE INDEX items_list_only_idx ON zoho.items (org_id, synced_at)
    WHERE NOT is_detail AND deleted_at IS NULL;
CREATE INDEX item_groups_list_only_idx ON zoho.item_groups (org_id, synced_at)
    WHERE NOT is_detail AND deleted_at IS NULL;
CREATE INDEX contacts_list_only_idx ON zoho.contacts (org_id, synced_at)
    WHERE NOT is_detail AND deleted_at IS NULL;
CREATE INDEX invoices_list_only_idx ON zoho.invoices (org_id, synced_at)
    WHERE NOT is_detail AND deleted_at IS NULL;
CREATE INDEX sales_orders_list_only_idx ON zoho.sales_orders (org_id, synced_at)
    WHERE NOT is_detail AND deleted_at IS NULL;

-- A fetch by id handed to the owning replica stays open until the page that
-- answers it is committed; a claim older than the fetcher's lease is taken again.
COMMENT ON COLUMN tds.sync_requests.claimed_at IS 'When it was taken; a mode fetch request still open long after this is taken again (its claimer died)';
COMMENT ON COLUMN tds.sync_requests.done_at IS 'When the run for it finished (mode fetch: when the page answering it was committed)';
