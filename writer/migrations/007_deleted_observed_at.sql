-- A delete now records when it was observed in observed_at, and a deleted row
-- comes back only for a version observed after that. A row deleted before
-- this migration still holds the observed_at of its last version, which is
-- earlier than the delete: a page fetched between the two and written late
-- would revive it. Their observed_at is cleared, so the guard keeps the rule
-- they were deleted under: only a strictly newer modified_time revives them.
UPDATE zoho.items SET observed_at = NULL WHERE deleted_at IS NOT NULL AND observed_at IS NOT NULL;
UPDATE zoho.item_groups SET observed_at = NULL WHERE deleted_at IS NOT NULL AND observed_at IS NOT NULL;
UPDATE zoho.warehouses SET observed_at = NULL WHERE deleted_at IS NOT NULL AND observed_at IS NOT NULL;
UPDATE zoho.contacts SET observed_at = NULL WHERE deleted_at IS NOT NULL AND observed_at IS NOT NULL;
UPDATE zoho.invoices SET observed_at = NULL WHERE deleted_at IS NOT NULL AND observed_at IS NOT NULL;
UPDATE zoho.sales_orders SET observed_at = NULL WHERE deleted_at IS NOT NULL AND observed_at IS NOT NULL;
COMMENT ON COLUMN zoho.items.observed_at IS 'When the stored version was seen: the time its page was fetched or its webhook received; orders two versions with the same modified_time. On a deleted row, when the delete was seen: only a version seen later revives it (NULL on rows deleted before migration 007: only a newer modified_time does)';
COMMENT ON COLUMN zoho.item_groups.observed_at IS 'When the stored version was seen: the time its page was fetched or its webhook received; orders two versions with the same modified_time. On a deleted row, when the delete was seen: only a version seen later revives it (NULL on rows deleted before migration 007: only a newer modified_time does)';
COMMENT ON COLUMN zoho.warehouses.observed_at IS 'When the stored version was seen: the time its page was fetched or its webhook received; orders two versions with the same modified_time. On a deleted row, when the delete was seen: only a version seen later revives it (NULL on rows deleted before migration 007: only a newer modified_time does)';
COMMENT ON COLUMN zoho.contacts.observed_at IS 'When the stored version was seen: the time its page was fetched or its webhook received; orders two versions with the same modified_time. On a deleted row, when the delete was seen: only a version seen later revives it (NULL on rows deleted before migration 007: only a newer modified_time does)';
COMMENT ON COLUMN zoho.invoices.observed_at IS 'When the stored version was seen: the time its page was fetched or its webhook received; orders two versions with the same modified_time. On a deleted row, when the delete was seen: only a version seen later revives it (NULL on rows deleted before migration 007: only a newer modified_time does)';
COMMENT ON COLUMN zoho.sales_orders.observed_at IS 'When the stored version was seen: the time its page was fetched or its webhook received; orders two versions with the same modified_time. On a deleted row, when the delete was seen: only a version seen later revives it (NULL on rows deleted before migration 007: only a newer modified_time does)';
