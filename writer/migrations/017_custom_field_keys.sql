-- custom_fields keys: a field whose label an earlier one has, and whose
-- api_name another field has too (or that has none), was keyed by that
-- api_name or label again, and jsonb kept only the last value of the two.
-- The processor now keys it by its customfield_id when its api_name is
-- taken, and rejects the record when neither is free (processor/README.md).
-- Comments only; no data changes.
COMMENT ON COLUMN zoho.items.custom_fields IS 'Custom fields as an object, label → value (Zoho''s array, with ids and types, stays in raw); a field whose label an earlier one has is keyed by its api_name, else by its customfield_id; a record with no free key for a field is rejected';
COMMENT ON COLUMN zoho.item_groups.custom_fields IS 'Custom fields as an object, label → value (Zoho''s array, with ids and types, stays in raw); a field whose label an earlier one has is keyed by its api_name, else by its customfield_id; a record with no free key for a field is rejected';
COMMENT ON COLUMN zoho.contacts.custom_fields IS 'Custom fields as an object, label → value (Zoho''s array, with ids and types, stays in raw); a field whose label an earlier one has is keyed by its api_name, else by its customfield_id; a record with no free key for a field is rejected';
COMMENT ON COLUMN zoho.invoices.custom_fields IS 'Custom fields as an object, label → value (Zoho''s array, with ids and types, stays in raw); a field whose label an earlier one has is keyed by its api_name, else by its customfield_id; a record with no free key for a field is rejected';
COMMENT ON COLUMN zoho.sales_orders.custom_fields IS 'Custom fields as an object, label → value (Zoho''s array, with ids and types, stays in raw); a field whose label an earlier one has is keyed by its api_name, else by its customfield_id; a record with no free key for a field is rejected';
