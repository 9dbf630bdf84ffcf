-- Order of two versions with the same Zoho modified_time (Zoho keeps whole seconds):
-- the one observed later (fetched from the API or received as a webhook) is the newer.
-- Rows written before this migration have none; the guard then falls back to the
-- arrival order, as before.
ALTER TABLE zoho.items ADD COLUMN observed_at timestamptz;
COMMENT ON COLUMN zoho.items.observed_at IS 'When the stored version was seen: the time its page was fetched or its webhook received; orders two versions with the same modified_time';
ALTER TABLE zoho.item_groups ADD COLUMN observed_at timestamptz;
COMMENT ON COLUMN zoho.item_groups.observed_at IS 'When the stored version was seen: the time its page was fetched or its webhook received; orders two versions with the same modified_time';
ALTER TABLE zoho.warehouses ADD COLUMN observed_at timestamptz;
COMMENT ON COLUMN zoho.warehouses.observed_at IS 'When the stored version was seen: the time its page was fetched or its webhook received; orders two versions with the same modified_time';
ALTER TABLE zoho.contacts ADD COLUMN observed_at timestamptz;
COMMENT ON COLUMN zoho.contacts.observed_at IS 'When the stored version was seen: the time its page was fetched or its webhook received; orders two versions with the same modified_time';
ALTER TABLE zoho.invoices ADD COLUMN observed_at timestamptz;
COMMENT ON COLUMN zoho.invoices.observed_at IS 'When the stored version was seen: the time its page was fetched or its webhook received; orders two versions with the same modified_time';
ALTER TABLE zoho.sales_orders ADD COLUMN observed_at timestamptz;
COMMENT ON COLUMN zoho.sales_orders.observed_at IS 'When the stored version was seen: the time its page was fetched or its webhook received; orders two versions with the same modified_time';
