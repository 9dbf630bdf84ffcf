-- Column comments that described values the processor does not write:
-- custom_fields is an object keyed by label (Zoho's array stays in raw),
-- line and address positions count from 1, extra addresses are 'other', and
-- a percentage discount is not stored as such; a list record of an item
-- group no longer empties its attributes. No data changes.
COMMENT ON COLUMN zoho.items.custom_fields IS 'Custom fields as an object, label → value (Zoho''s array, with ids and types, stays in raw); a field whose label an earlier one has is keyed by its api_name';
COMMENT ON COLUMN zoho.item_groups.custom_fields IS 'Custom fields as an object, label → value (Zoho''s array, with ids and types, stays in raw); a field whose label an earlier one has is keyed by its api_name';
COMMENT ON COLUMN zoho.contacts.custom_fields IS 'Custom fields as an object, label → value (Zoho''s array, with ids and types, stays in raw); a field whose label an earlier one has is keyed by its api_name';
COMMENT ON COLUMN zoho.invoices.custom_fields IS 'Custom fields as an object, label → value (Zoho''s array, with ids and types, stays in raw); a field whose label an earlier one has is keyed by its api_name';
COMMENT ON COLUMN zoho.sales_orders.custom_fields IS 'Custom fields as an object, label → value (Zoho''s array, with ids and types, stays in raw); a field whose label an earlier one has is keyed by its api_name';
COMMENT ON COLUMN zoho.contact_addresses.address_type IS '''billing'', ''shipping'' or ''other'' (one of Zoho''s additional addresses)';
COMMENT ON COLUMN zoho.contact_addresses.position IS 'Position from 1: 1 for the billing and the shipping address, the place in Zoho''s addresses array for the others';
COMMENT ON COLUMN zoho.invoice_lines.position IS 'Position from 1 in Zoho''s line_items array (keeps Zoho''s order)';
COMMENT ON COLUMN zoho.sales_order_lines.position IS 'Position from 1 in Zoho''s line_items array (keeps Zoho''s order)';
COMMENT ON COLUMN zoho.invoices.discount IS 'Discount amount; for a percentage ("10.00%") Zoho''s discount_amount when it sends one, else NULL (the percentage stays in raw)';
COMMENT ON COLUMN zoho.invoice_lines.discount IS 'Discount amount; for a percentage ("10.00%") Zoho''s discount_amount when it sends one, else NULL (the percentage stays in raw)';
COMMENT ON COLUMN zoho.sales_orders.discount IS 'Discount amount; for a percentage ("10.00%") Zoho''s discount_amount when it sends one, else NULL (the percentage stays in raw)';
COMMENT ON COLUMN zoho.sales_order_lines.discount IS 'Discount amount; for a percentage ("10.00%") Zoho''s discount_amount when it sends one, else NULL (the percentage stays in raw)';
COMMENT ON COLUMN zoho.invoice_lines.warehouse_id IS 'Zoho warehouse/location id (zoho.warehouses.warehouse_id): the line''s location_id, else warehouse_id, else line_warehouse_id';
COMMENT ON COLUMN zoho.sales_order_lines.warehouse_id IS 'Zoho warehouse/location id (zoho.warehouses.warehouse_id): the line''s location_id, else warehouse_id, else line_warehouse_id';
COMMENT ON COLUMN zoho.item_groups.attributes IS 'Variant attributes (JSON array): Zoho''s attributes array when the record has one, else built from the variants as [{"name", "options": [...]}]; a list record, without variants, leaves it as the detail set it';
