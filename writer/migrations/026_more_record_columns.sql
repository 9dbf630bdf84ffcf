-- Fields of Zoho's records that were kept only in raw, now in columns of
-- their own: a percentage discount (headers and lines), a document's
-- location, a sales order line's delivered, cancelled, returned and
-- backordered quantities, an item's totals over its stock sites, and an
-- address's state and country codes. The columns are nullable, so adding
-- them rewrites no table. Rows already stored get them from their raw (a
-- record unchanged in Zoho is not written again, so nothing else would fill
-- them): the headers from their own raw, the lines and addresses from their
-- parent's. Only values that read as numbers are taken into numeric columns,
-- as the processor does; whatever does not stays NULL (it stays in raw).

ALTER TABLE zoho.invoices
    ADD COLUMN discount_percent numeric,
    ADD COLUMN location_id text COLLATE "C",
    ADD COLUMN location_name text;
ALTER TABLE zoho.sales_orders
    ADD COLUMN discount_percent numeric,
    ADD COLUMN location_id text COLLATE "C",
    ADD COLUMN location_name text;
ALTER TABLE zoho.invoice_lines ADD COLUMN discount_percent numeric;
ALTER TABLE zoho.sales_order_lines
    ADD COLUMN discount_percent numeric,
    ADD COLUMN quantity_delivered numeric,
    ADD COLUMN quantity_cancelled numeric,
    ADD COLUMN quantity_returned numeric,
    ADD COLUMN quantity_backordered numeric;
ALTER TABLE zoho.items
    ADD COLUMN committed_stock numeric,
    ADD COLUMN available_for_sale_stock numeric,
    ADD COLUMN actual_stock_on_hand numeric,
    ADD COLUMN actual_committed_stock numeric,
    ADD COLUMN actual_available_for_sale_stock numeric;
ALTER TABLE zoho.contact_addresses
    ADD COLUMN state_code text,
    ADD COLUMN country_code text;

-- A number as the processor takes one (a JSON number, or a string holding
-- one); anything else NULL. The percentage: the number before a final '%'.
CREATE FUNCTION pg_temp.num(v text) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v ~ '^\s*[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]{1,3})?\s*$'
                THEN v::numeric END
$$;
CREATE FUNCTION pg_temp.pct(v text) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v ~ '%\s*$' THEN pg_temp.num(substring(v FROM '^(.*)%\s*$')) END
$$;
-- An id as the processor stores one: blank is NULL.
CREATE FUNCTION pg_temp.ref(v text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT nullif(btrim(v), '')
$$;
-- A record's line items, [] when it has none.
CREATE FUNCTION pg_temp.lines(raw jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(raw -> 'line_items') = 'array' THEN raw -> 'line_items'
                ELSE '[]'::jsonb END
$$;

UPDATE zoho.invoices
   SET discount_percent = coalesce(pg_temp.num(raw ->> 'discount_percent'),
                                   pg_temp.pct(raw ->> 'discount')),
       location_id = pg_temp.ref(raw ->> 'location_id'),
       location_name = raw ->> 'location_name'
 WHERE raw ?| ARRAY['discount_percent', 'location_id', 'location_name']
    OR raw ->> 'discount' LIKE '%\%%';
UPDATE zoho.sales_orders
   SET discount_percent = coalesce(pg_temp.num(raw ->> 'discount_percent'),
                                   pg_temp.pct(raw ->> 'discount')),
       location_id = pg_temp.ref(raw ->> 'location_id'),
       location_name = raw ->> 'location_name'
 WHERE raw ?| ARRAY['discount_percent', 'location_id', 'location_name']
    OR raw ->> 'discount' LIKE '%\%%';

UPDATE zoho.invoice_lines l
   SET discount_percent = coalesce(pg_temp.num(e ->> 'discount_percent'),
                                   pg_temp.pct(e ->> 'discount'))
  FROM zoho.invoices p, jsonb_array_elements(pg_temp.lines(p.raw)) e
 WHERE p.is_detail AND l.org_id = p.org_id AND l.invoice_id = p.invoice_id
   AND l.line_item_id = e ->> 'line_item_id'
   AND (e ? 'discount_percent' OR e ->> 'discount' LIKE '%\%%');
UPDATE zoho.sales_order_lines l
   SET discount_percent = coalesce(pg_temp.num(e ->> 'discount_percent'),
                                   pg_temp.pct(e ->> 'discount')),
       quantity_delivered = pg_temp.num(e ->> 'quantity_delivered'),
       quantity_cancelled = pg_temp.num(e ->> 'quantity_cancelled'),
       quantity_returned = pg_temp.num(e ->> 'quantity_returned'),
       quantity_backordered = pg_temp.num(e ->> 'quantity_backordered')
  FROM zoho.sales_orders p, jsonb_array_elements(pg_temp.lines(p.raw)) e
 WHERE p.is_detail AND l.org_id = p.org_id AND l.salesorder_id = p.salesorder_id
   AND l.line_item_id = e ->> 'line_item_id'
   AND (e ?| ARRAY['discount_percent', 'quantity_delivered', 'quantity_cancelled',
                   'quantity_returned', 'quantity_backordered']
        OR e ->> 'discount' LIKE '%\%%');

UPDATE zoho.items
   SET committed_stock = pg_temp.num(raw ->> 'committed_stock'),
       available_for_sale_stock = pg_temp.num(raw ->> 'available_for_sale_stock'),
       actual_stock_on_hand = pg_temp.num(raw ->> 'actual_stock_on_hand'),
       actual_committed_stock = pg_temp.num(raw ->> 'actual_committed_stock'),
       actual_available_for_sale_stock = pg_temp.num(raw ->> 'actual_available_for_sale_stock')
 WHERE raw ?| ARRAY['committed_stock', 'available_for_sale_stock', 'actual_stock_on_hand',
                    'actual_committed_stock', 'actual_available_for_sale_stock'];

-- billing and shipping from their own objects; the others by their place
-- (position from 1) in addresses[]
UPDATE zoho.contact_addresses a
   SET state_code = src ->> 'state_code', country_code = src ->> 'country_code'
  FROM (SELECT c.org_id, c.contact_id, t.address_type, t.position, t.src
          FROM zoho.contacts c,
               LATERAL (VALUES ('billing', 1, c.raw -> 'billing_address'),
                               ('shipping', 1, c.raw -> 'shipping_address')) AS t(address_type, position, src)
         WHERE c.is_detail
        UNION ALL
        SELECT c.org_id, c.contact_id, 'other', e.n::int, e.src
          FROM zoho.contacts c,
               jsonb_array_elements(CASE WHEN jsonb_typeof(c.raw -> 'addresses') = 'array'
                                         THEN c.raw -> 'addresses' ELSE '[]'::jsonb END)
                   WITH ORDINALITY AS e(src, n)
         WHERE c.is_detail) s
 WHERE jsonb_typeof(s.src) = 'object' AND s.src ?| ARRAY['state_code', 'country_code']
   AND a.org_id = s.org_id AND a.contact_id = s.contact_id
   AND a.address_type = s.address_type AND a.position = s.position;

COMMENT ON COLUMN zoho.invoices.discount_percent IS 'The discount as a percentage when Zoho writes it as one ("10.00%" → 10.00), or Zoho''s discount_percent; NULL for a discount given as an amount';
COMMENT ON COLUMN zoho.sales_orders.discount_percent IS 'The discount as a percentage when Zoho writes it as one ("10.00%" → 10.00), or Zoho''s discount_percent; NULL for a discount given as an amount';
COMMENT ON COLUMN zoho.invoice_lines.discount_percent IS 'The line''s discount as a percentage when Zoho writes it as one ("10.00%" → 10.00); NULL for a discount given as an amount';
COMMENT ON COLUMN zoho.sales_order_lines.discount_percent IS 'The line''s discount as a percentage when Zoho writes it as one ("10.00%" → 10.00); NULL for a discount given as an amount';
COMMENT ON COLUMN zoho.invoices.discount IS 'Discount amount; for a percentage ("10.00%") Zoho''s discount_amount when it sends one, else NULL (the percentage is in discount_percent)';
COMMENT ON COLUMN zoho.invoice_lines.discount IS 'Discount amount; for a percentage ("10.00%") Zoho''s discount_amount when it sends one, else NULL (the percentage is in discount_percent)';
COMMENT ON COLUMN zoho.sales_orders.discount IS 'Discount amount; for a percentage ("10.00%") Zoho''s discount_amount when it sends one, else NULL (the percentage is in discount_percent)';
COMMENT ON COLUMN zoho.sales_order_lines.discount IS 'Discount amount; for a percentage ("10.00%") Zoho''s discount_amount when it sends one, else NULL (the percentage is in discount_percent)';
COMMENT ON COLUMN zoho.invoices.location_id IS 'The document''s location (zoho.warehouses.warehouse_id); a line''s own site is its warehouse_id';
COMMENT ON COLUMN zoho.sales_orders.location_id IS 'The document''s location (zoho.warehouses.warehouse_id); a line''s own site is its warehouse_id';
COMMENT ON COLUMN zoho.invoices.location_name IS 'The document''s location name';
COMMENT ON COLUMN zoho.sales_orders.location_name IS 'The document''s location name';
COMMENT ON COLUMN zoho.sales_order_lines.quantity_delivered IS 'Quantity delivered so far';
COMMENT ON COLUMN zoho.sales_order_lines.quantity_cancelled IS 'Quantity cancelled';
COMMENT ON COLUMN zoho.sales_order_lines.quantity_returned IS 'Quantity returned';
COMMENT ON COLUMN zoho.sales_order_lines.quantity_backordered IS 'Quantity on backorder';
COMMENT ON COLUMN zoho.items.committed_stock IS 'Accounting stock committed to orders, over all stock sites';
COMMENT ON COLUMN zoho.items.available_for_sale_stock IS 'Accounting stock available for sale, over all stock sites';
COMMENT ON COLUMN zoho.items.actual_stock_on_hand IS 'Physical stock on hand, over all stock sites';
COMMENT ON COLUMN zoho.items.actual_committed_stock IS 'Physical stock committed to orders, over all stock sites';
COMMENT ON COLUMN zoho.items.actual_available_for_sale_stock IS 'Physical stock available for sale, over all stock sites';
COMMENT ON COLUMN zoho.contact_addresses.state_code IS 'State or region code, as Zoho gives it';
COMMENT ON COLUMN zoho.contact_addresses.country_code IS 'Country code, as Zoho gives it';
