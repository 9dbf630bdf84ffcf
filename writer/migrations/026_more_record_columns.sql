-- Fields of Zoho's records that were kept only in raw, now in columns of
-- their own: a percentage discount (headers and lines), a document's
-- location, a sales order line's delivered, cancelled, returned and
-- backordered quantities, an item's totals over its stock sites, and an
-- address's state and country codes. The columns are nullable, so adding
-- them rewrites no table. The tables stay locked while the rows are filled
-- (one transaction, like every migration): on millions of rows, minutes;
-- migrate in a quiet hour. Rows already stored get them from their raw (a
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

-- Each UPDATE touches only the rows that get a value: a row whose new
-- columns all stay NULL is not rewritten.
UPDATE zoho.invoices p
   SET discount_percent = v.pct, location_id = v.loc, location_name = v.loc_name
  FROM (SELECT org_id, invoice_id,
               coalesce(pg_temp.num(raw ->> 'discount_percent'), pg_temp.pct(raw ->> 'discount')) AS pct,
               pg_temp.ref(raw ->> 'location_id') AS loc, raw ->> 'location_name' AS loc_name
          FROM zoho.invoices
         WHERE raw ?| ARRAY['discount_percent', 'location_id', 'location_name']
            OR raw ->> 'discount' LIKE '%\%%') v
 WHERE p.org_id = v.org_id AND p.invoice_id = v.invoice_id
   AND (v.pct IS NOT NULL OR v.loc IS NOT NULL OR v.loc_name IS NOT NULL);
UPDATE zoho.sales_orders p
   SET discount_percent = v.pct, location_id = v.loc, location_name = v.loc_name
  FROM (SELECT org_id, salesorder_id,
               coalesce(pg_temp.num(raw ->> 'discount_percent'), pg_temp.pct(raw ->> 'discount')) AS pct,
               pg_temp.ref(raw ->> 'location_id') AS loc, raw ->> 'location_name' AS loc_name
          FROM zoho.sales_orders
         WHERE raw ?| ARRAY['discount_percent', 'location_id', 'location_name']
            OR raw ->> 'discount' LIKE '%\%%') v
 WHERE p.org_id = v.org_id AND p.salesorder_id = v.salesorder_id
   AND (v.pct IS NOT NULL OR v.loc IS NOT NULL OR v.loc_name IS NOT NULL);

UPDATE zoho.invoice_lines l
   SET discount_percent = v.pct
  FROM (SELECT p.org_id, p.invoice_id, e ->> 'line_item_id' AS line_item_id,
               coalesce(pg_temp.num(e ->> 'discount_percent'), pg_temp.pct(e ->> 'discount')) AS pct
          FROM zoho.invoices p, jsonb_array_elements(pg_temp.lines(p.raw)) e
         WHERE p.is_detail AND jsonb_typeof(e) = 'object'
           AND (e ? 'discount_percent' OR e ->> 'discount' LIKE '%\%%')) v
 WHERE l.org_id = v.org_id AND l.invoice_id = v.invoice_id AND l.line_item_id = v.line_item_id
   AND v.pct IS NOT NULL;
UPDATE zoho.sales_order_lines l
   SET discount_percent = v.pct, quantity_delivered = v.delivered,
       quantity_cancelled = v.cancelled, quantity_returned = v.returned,
       quantity_backordered = v.backordered
  FROM (SELECT p.org_id, p.salesorder_id, e ->> 'line_item_id' AS line_item_id,
               coalesce(pg_temp.num(e ->> 'discount_percent'), pg_temp.pct(e ->> 'discount')) AS pct,
               pg_temp.num(e ->> 'quantity_delivered') AS delivered,
               pg_temp.num(e ->> 'quantity_cancelled') AS cancelled,
               pg_temp.num(e ->> 'quantity_returned') AS returned,
               pg_temp.num(e ->> 'quantity_backordered') AS backordered
          FROM zoho.sales_orders p, jsonb_array_elements(pg_temp.lines(p.raw)) e
         WHERE p.is_detail AND jsonb_typeof(e) = 'object'
           AND (e ?| ARRAY['discount_percent', 'quantity_delivered', 'quantity_cancelled',
                           'quantity_returned', 'quantity_backordered']
                OR e ->> 'discount' LIKE '%\%%')) v
 WHERE l.org_id = v.org_id AND l.salesorder_id = v.salesorder_id
   AND l.line_item_id = v.line_item_id
   AND (v.pct IS NOT NULL OR v.delivered IS NOT NULL OR v.cancelled IS NOT NULL
        OR v.returned IS NOT NULL OR v.backordered IS NOT NULL);

UPDATE zoho.items i
   SET committed_stock = v.committed, available_for_sale_stock = v.for_sale,
       actual_stock_on_hand = v.a_on_hand, actual_committed_stock = v.a_committed,
       actual_available_for_sale_stock = v.a_for_sale
  FROM (SELECT org_id, item_id,
               pg_temp.num(raw ->> 'committed_stock') AS committed,
               pg_temp.num(raw ->> 'available_for_sale_stock') AS for_sale,
               pg_temp.num(raw ->> 'actual_stock_on_hand') AS a_on_hand,
               pg_temp.num(raw ->> 'actual_committed_stock') AS a_committed,
               pg_temp.num(raw ->> 'actual_available_for_sale_stock') AS a_for_sale
          FROM zoho.items
         WHERE raw ?| ARRAY['committed_stock', 'available_for_sale_stock', 'actual_stock_on_hand',
                            'actual_committed_stock', 'actual_available_for_sale_stock']) v
 WHERE i.org_id = v.org_id AND i.item_id = v.item_id
   AND (v.committed IS NOT NULL OR v.for_sale IS NOT NULL OR v.a_on_hand IS NOT NULL
        OR v.a_committed IS NOT NULL OR v.a_for_sale IS NOT NULL);

-- billing and shipping from their own objects; the others by their place
-- (position from 1) in addresses[]
UPDATE zoho.contact_addresses a
   SET state_code = s.src ->> 'state_code', country_code = s.src ->> 'country_code'
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
 WHERE jsonb_typeof(s.src) = 'object'
   AND (s.src ->> 'state_code' IS NOT NULL OR s.src ->> 'country_code' IS NOT NULL)
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
