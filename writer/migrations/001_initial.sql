-- 001_initial — schemas zoho and tds, the synced tables, the pipeline's own
-- tables, indexes, comments and the two roles.
--
-- The zoho.* tables must match common/entities.c column for column: tds-writer
-- checks them at start-up and refuses to run on a mismatch. Applied once by
-- `tds-writer migrate` (or writer start-up) inside one transaction; never edit
-- this file after release, add a new numbered migration instead.

CREATE SCHEMA IF NOT EXISTS zoho;
COMMENT ON SCHEMA zoho IS 'Zoho Inventory/Books data kept in step by tds-zoho-sync. Read-only for consumers (role tds_reader); written only by tds-writer.';
CREATE SCHEMA IF NOT EXISTS tds;
COMMENT ON SCHEMA tds IS 'State of the tds-zoho-sync pipeline: migrations, sync cursors and runs, requests, tokens, webhook dedupe, rejects, alerts.';

CREATE TABLE zoho.items (
    org_id text NOT NULL,
    item_id text NOT NULL,
    modified_time timestamptz,
    synced_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    raw jsonb,
    content_hash text,
    is_detail boolean NOT NULL DEFAULT false,
    name text,
    sku text,
    status text,
    unit text,
    description text,
    item_type text,
    product_type text,
    rate numeric,
    purchase_rate numeric,
    group_id text,
    group_name text,
    attribute_name1 text,
    attribute_option_name1 text,
    attribute_name2 text,
    attribute_option_name2 text,
    attribute_name3 text,
    attribute_option_name3 text,
    brand text,
    manufacturer text,
    reorder_level numeric,
    tax_id text,
    tax_name text,
    tax_percentage numeric,
    is_taxable boolean,
    upc text,
    ean text,
    isbn text,
    part_number text,
    image_name text,
    image_type text,
    image_document_id text,
    stock_on_hand numeric,
    available_stock numeric,
    actual_available_stock numeric,
    custom_fields jsonb,
    created_time timestamptz,
    PRIMARY KEY (org_id, item_id)
);
COMMENT ON TABLE zoho.items IS 'Zoho items (products and variants), one row per organization and item_id. Written only by tds-writer.';
COMMENT ON COLUMN zoho.items.org_id IS 'Zoho organization id';
COMMENT ON COLUMN zoho.items.item_id IS 'Zoho item id (18-19 digits, kept as text)';
COMMENT ON COLUMN zoho.items.modified_time IS 'Zoho last_modified_time of the version stored; guards every write (an older version never overwrites a newer one). NULL for entities without one';
COMMENT ON COLUMN zoho.items.synced_at IS 'When tds-writer last wrote this row';
COMMENT ON COLUMN zoho.items.deleted_at IS 'When the record was found deleted in Zoho (soft delete); NULL while it exists';
COMMENT ON COLUMN zoho.items.raw IS 'The fullest Zoho JSON seen for this record (detail record, list fields merged in)';
COMMENT ON COLUMN zoho.items.content_hash IS 'Hash of the record content as transformed; an identical record is not written again';
COMMENT ON COLUMN zoho.items.is_detail IS 'true when the stored version came from a detail record (complete), false from an abbreviated list record';
COMMENT ON COLUMN zoho.items.name IS 'Name as shown in Zoho';
COMMENT ON COLUMN zoho.items.sku IS 'Stock keeping unit';
COMMENT ON COLUMN zoho.items.status IS 'Zoho status (e.g. active, inactive, draft, sent, paid, void)';
COMMENT ON COLUMN zoho.items.unit IS 'Unit of measure';
COMMENT ON COLUMN zoho.items.description IS 'Free-text description';
COMMENT ON COLUMN zoho.items.item_type IS 'Zoho item_type (inventory, sales, purchases, sales_and_purchases)';
COMMENT ON COLUMN zoho.items.product_type IS 'Zoho product_type (goods, service, digital_service)';
COMMENT ON COLUMN zoho.items.rate IS 'Selling price per unit, in the organization currency unless stated';
COMMENT ON COLUMN zoho.items.purchase_rate IS 'Purchase price per unit';
COMMENT ON COLUMN zoho.items.group_id IS 'Item group this item belongs to (zoho.item_groups.group_id), NULL for a standalone item';
COMMENT ON COLUMN zoho.items.group_name IS 'Name of the item group';
COMMENT ON COLUMN zoho.items.attribute_name1 IS 'Name of variant attribute 1';
COMMENT ON COLUMN zoho.items.attribute_option_name1 IS 'Value of variant attribute 1';
COMMENT ON COLUMN zoho.items.attribute_name2 IS 'Name of variant attribute 2';
COMMENT ON COLUMN zoho.items.attribute_option_name2 IS 'Value of variant attribute 2';
COMMENT ON COLUMN zoho.items.attribute_name3 IS 'Name of variant attribute 3';
COMMENT ON COLUMN zoho.items.attribute_option_name3 IS 'Value of variant attribute 3';
COMMENT ON COLUMN zoho.items.brand IS 'Brand';
COMMENT ON COLUMN zoho.items.manufacturer IS 'Manufacturer';
COMMENT ON COLUMN zoho.items.reorder_level IS 'Stock level at which to reorder';
COMMENT ON COLUMN zoho.items.tax_id IS 'Zoho tax id';
COMMENT ON COLUMN zoho.items.tax_name IS 'Tax name';
COMMENT ON COLUMN zoho.items.tax_percentage IS 'Tax rate in percent';
COMMENT ON COLUMN zoho.items.is_taxable IS 'Whether the item is taxable';
COMMENT ON COLUMN zoho.items.upc IS 'UPC barcode';
COMMENT ON COLUMN zoho.items.ean IS 'EAN barcode';
COMMENT ON COLUMN zoho.items.isbn IS 'ISBN';
COMMENT ON COLUMN zoho.items.part_number IS 'Manufacturer part number';
COMMENT ON COLUMN zoho.items.image_name IS 'File name of the primary image';
COMMENT ON COLUMN zoho.items.image_type IS 'File type of the primary image';
COMMENT ON COLUMN zoho.items.image_document_id IS 'Zoho document id of the primary image';
COMMENT ON COLUMN zoho.items.stock_on_hand IS 'Accounting stock on hand';
COMMENT ON COLUMN zoho.items.available_stock IS 'Accounting stock available (on hand minus committed)';
COMMENT ON COLUMN zoho.items.actual_available_stock IS 'Physical stock available';
COMMENT ON COLUMN zoho.items.custom_fields IS 'Custom fields as Zoho sends them (JSON array)';
COMMENT ON COLUMN zoho.items.created_time IS 'When the record was created in Zoho';

CREATE TABLE zoho.item_stock (
    org_id text NOT NULL,
    item_id text NOT NULL,
    warehouse_id text NOT NULL,
    warehouse_name text,
    site_kind text,
    is_primary boolean,
    stock_on_hand numeric,
    available_stock numeric,
    committed_stock numeric,
    available_for_sale_stock numeric,
    actual_stock_on_hand numeric,
    actual_available_stock numeric,
    actual_committed_stock numeric,
    actual_available_for_sale_stock numeric,
    PRIMARY KEY (org_id, item_id, warehouse_id),
    FOREIGN KEY (org_id, item_id) REFERENCES zoho.items (org_id, item_id) ON DELETE CASCADE
);
COMMENT ON TABLE zoho.item_stock IS 'Stock of an item per warehouse/location, from the item detail record; replaced whenever the item detail is written. Accounting figures (stock_on_hand, ...) and physical figures (actual_*) side by side.';
COMMENT ON COLUMN zoho.item_stock.org_id IS 'Zoho organization id';
COMMENT ON COLUMN zoho.item_stock.item_id IS 'Parent item (zoho.items.item_id)';
COMMENT ON COLUMN zoho.item_stock.warehouse_id IS 'Zoho warehouse/location id (zoho.warehouses.warehouse_id)';
COMMENT ON COLUMN zoho.item_stock.warehouse_name IS 'Name of the warehouse or location';
COMMENT ON COLUMN zoho.item_stock.site_kind IS 'Where Zoho reported the site: ''warehouse'' (older organizations, warehouses[]) or ''location'' (newer ones, locations[])';
COMMENT ON COLUMN zoho.item_stock.is_primary IS 'Whether this is the primary warehouse/location';
COMMENT ON COLUMN zoho.item_stock.stock_on_hand IS 'Accounting stock on hand';
COMMENT ON COLUMN zoho.item_stock.available_stock IS 'Accounting stock available (on hand minus committed)';
COMMENT ON COLUMN zoho.item_stock.committed_stock IS 'Accounting stock committed to orders';
COMMENT ON COLUMN zoho.item_stock.available_for_sale_stock IS 'Accounting stock available for sale';
COMMENT ON COLUMN zoho.item_stock.actual_stock_on_hand IS 'Physical stock on hand';
COMMENT ON COLUMN zoho.item_stock.actual_available_stock IS 'Physical stock available';
COMMENT ON COLUMN zoho.item_stock.actual_committed_stock IS 'Physical stock committed to orders';
COMMENT ON COLUMN zoho.item_stock.actual_available_for_sale_stock IS 'Physical stock available for sale';

CREATE TABLE zoho.item_groups (
    org_id text NOT NULL,
    group_id text NOT NULL,
    modified_time timestamptz,
    synced_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    raw jsonb,
    content_hash text,
    is_detail boolean NOT NULL DEFAULT false,
    group_name text,
    status text,
    unit text,
    description text,
    brand text,
    manufacturer text,
    tax_id text,
    tax_name text,
    tax_percentage numeric,
    attributes jsonb,
    item_count integer,
    image_name text,
    image_type text,
    custom_fields jsonb,
    created_time timestamptz,
    PRIMARY KEY (org_id, group_id)
);
COMMENT ON TABLE zoho.item_groups IS 'Zoho item groups (a product with variants), one row per organization and group_id.';
COMMENT ON COLUMN zoho.item_groups.org_id IS 'Zoho organization id';
COMMENT ON COLUMN zoho.item_groups.group_id IS 'Zoho item group id (18-19 digits, kept as text)';
COMMENT ON COLUMN zoho.item_groups.modified_time IS 'Zoho last_modified_time of the version stored; guards every write (an older version never overwrites a newer one). NULL for entities without one';
COMMENT ON COLUMN zoho.item_groups.synced_at IS 'When tds-writer last wrote this row';
COMMENT ON COLUMN zoho.item_groups.deleted_at IS 'When the record was found deleted in Zoho (soft delete); NULL while it exists';
COMMENT ON COLUMN zoho.item_groups.raw IS 'The fullest Zoho JSON seen for this record (detail record, list fields merged in)';
COMMENT ON COLUMN zoho.item_groups.content_hash IS 'Hash of the record content as transformed; an identical record is not written again';
COMMENT ON COLUMN zoho.item_groups.is_detail IS 'true when the stored version came from a detail record (complete), false from an abbreviated list record';
COMMENT ON COLUMN zoho.item_groups.group_name IS 'Name of the item group';
COMMENT ON COLUMN zoho.item_groups.status IS 'Zoho status (e.g. active, inactive, draft, sent, paid, void)';
COMMENT ON COLUMN zoho.item_groups.unit IS 'Unit of measure';
COMMENT ON COLUMN zoho.item_groups.description IS 'Free-text description';
COMMENT ON COLUMN zoho.item_groups.brand IS 'Brand';
COMMENT ON COLUMN zoho.item_groups.manufacturer IS 'Manufacturer';
COMMENT ON COLUMN zoho.item_groups.tax_id IS 'Zoho tax id';
COMMENT ON COLUMN zoho.item_groups.tax_name IS 'Tax name';
COMMENT ON COLUMN zoho.item_groups.tax_percentage IS 'Tax rate in percent';
COMMENT ON COLUMN zoho.item_groups.attributes IS 'Variant attributes of the group (JSON array)';
COMMENT ON COLUMN zoho.item_groups.item_count IS 'Number of items (variants) in the group';
COMMENT ON COLUMN zoho.item_groups.image_name IS 'File name of the primary image';
COMMENT ON COLUMN zoho.item_groups.image_type IS 'File type of the primary image';
COMMENT ON COLUMN zoho.item_groups.custom_fields IS 'Custom fields as Zoho sends them (JSON array)';
COMMENT ON COLUMN zoho.item_groups.created_time IS 'When the record was created in Zoho';

CREATE TABLE zoho.warehouses (
    org_id text NOT NULL,
    warehouse_id text NOT NULL,
    modified_time timestamptz,
    synced_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    raw jsonb,
    content_hash text,
    is_detail boolean NOT NULL DEFAULT false,
    warehouse_name text,
    status text,
    is_primary boolean,
    site_kind text,
    attention text,
    address text,
    address1 text,
    address2 text,
    city text,
    state text,
    zip text,
    country text,
    phone text,
    email text,
    PRIMARY KEY (org_id, warehouse_id)
);
COMMENT ON TABLE zoho.warehouses IS 'Zoho warehouses or locations (stock sites), one row per organization and warehouse_id.';
COMMENT ON COLUMN zoho.warehouses.org_id IS 'Zoho organization id';
COMMENT ON COLUMN zoho.warehouses.warehouse_id IS 'Zoho warehouse id (18-19 digits, kept as text)';
COMMENT ON COLUMN zoho.warehouses.modified_time IS 'Zoho last_modified_time of the version stored; guards every write (an older version never overwrites a newer one). NULL for entities without one';
COMMENT ON COLUMN zoho.warehouses.synced_at IS 'When tds-writer last wrote this row';
COMMENT ON COLUMN zoho.warehouses.deleted_at IS 'When the record was found deleted in Zoho (soft delete); NULL while it exists';
COMMENT ON COLUMN zoho.warehouses.raw IS 'The fullest Zoho JSON seen for this record (detail record, list fields merged in)';
COMMENT ON COLUMN zoho.warehouses.content_hash IS 'Hash of the record content as transformed; an identical record is not written again';
COMMENT ON COLUMN zoho.warehouses.is_detail IS 'true when the stored version came from a detail record (complete), false from an abbreviated list record';
COMMENT ON COLUMN zoho.warehouses.warehouse_name IS 'Name of the warehouse or location';
COMMENT ON COLUMN zoho.warehouses.status IS 'Zoho status of the warehouse (active, inactive)';
COMMENT ON COLUMN zoho.warehouses.is_primary IS 'Whether this is the primary warehouse/location';
COMMENT ON COLUMN zoho.warehouses.site_kind IS 'Where Zoho reported the site: ''warehouse'' (older organizations, warehouses[]) or ''location'' (newer ones, locations[])';
COMMENT ON COLUMN zoho.warehouses.attention IS 'Attention line of the address';
COMMENT ON COLUMN zoho.warehouses.address IS 'Street address';
COMMENT ON COLUMN zoho.warehouses.address1 IS 'Address line 1';
COMMENT ON COLUMN zoho.warehouses.address2 IS 'Address line 2';
COMMENT ON COLUMN zoho.warehouses.city IS 'City';
COMMENT ON COLUMN zoho.warehouses.state IS 'State or region';
COMMENT ON COLUMN zoho.warehouses.zip IS 'Postal code';
COMMENT ON COLUMN zoho.warehouses.country IS 'Country';
COMMENT ON COLUMN zoho.warehouses.phone IS 'Phone number';
COMMENT ON COLUMN zoho.warehouses.email IS 'E-mail address';

CREATE TABLE zoho.contacts (
    org_id text NOT NULL,
    contact_id text NOT NULL,
    modified_time timestamptz,
    synced_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    raw jsonb,
    content_hash text,
    is_detail boolean NOT NULL DEFAULT false,
    contact_name text,
    company_name text,
    contact_type text,
    customer_sub_type text,
    status text,
    first_name text,
    last_name text,
    email text,
    phone text,
    mobile text,
    website text,
    language_code text,
    currency_id text,
    currency_code text,
    payment_terms integer,
    payment_terms_label text,
    credit_limit numeric,
    outstanding_receivable_amount numeric,
    outstanding_payable_amount numeric,
    unused_credits_receivable_amount numeric,
    unused_credits_payable_amount numeric,
    custom_fields jsonb,
    created_time timestamptz,
    PRIMARY KEY (org_id, contact_id)
);
COMMENT ON TABLE zoho.contacts IS 'Zoho contacts (customers and vendors), one row per organization and contact_id.';
COMMENT ON COLUMN zoho.contacts.org_id IS 'Zoho organization id';
COMMENT ON COLUMN zoho.contacts.contact_id IS 'Zoho contact id (18-19 digits, kept as text)';
COMMENT ON COLUMN zoho.contacts.modified_time IS 'Zoho last_modified_time of the version stored; guards every write (an older version never overwrites a newer one). NULL for entities without one';
COMMENT ON COLUMN zoho.contacts.synced_at IS 'When tds-writer last wrote this row';
COMMENT ON COLUMN zoho.contacts.deleted_at IS 'When the record was found deleted in Zoho (soft delete); NULL while it exists';
COMMENT ON COLUMN zoho.contacts.raw IS 'The fullest Zoho JSON seen for this record (detail record, list fields merged in)';
COMMENT ON COLUMN zoho.contacts.content_hash IS 'Hash of the record content as transformed; an identical record is not written again';
COMMENT ON COLUMN zoho.contacts.is_detail IS 'true when the stored version came from a detail record (complete), false from an abbreviated list record';
COMMENT ON COLUMN zoho.contacts.contact_name IS 'Display name of the contact';
COMMENT ON COLUMN zoho.contacts.company_name IS 'Company name';
COMMENT ON COLUMN zoho.contacts.contact_type IS 'customer or vendor';
COMMENT ON COLUMN zoho.contacts.customer_sub_type IS 'business or individual';
COMMENT ON COLUMN zoho.contacts.status IS 'Zoho status (e.g. active, inactive, draft, sent, paid, void)';
COMMENT ON COLUMN zoho.contacts.first_name IS 'First name';
COMMENT ON COLUMN zoho.contacts.last_name IS 'Last name';
COMMENT ON COLUMN zoho.contacts.email IS 'E-mail address';
COMMENT ON COLUMN zoho.contacts.phone IS 'Phone number';
COMMENT ON COLUMN zoho.contacts.mobile IS 'Mobile number';
COMMENT ON COLUMN zoho.contacts.website IS 'Website';
COMMENT ON COLUMN zoho.contacts.language_code IS 'Preferred language code';
COMMENT ON COLUMN zoho.contacts.currency_id IS 'Zoho currency id';
COMMENT ON COLUMN zoho.contacts.currency_code IS 'ISO currency code';
COMMENT ON COLUMN zoho.contacts.payment_terms IS 'Payment terms in days';
COMMENT ON COLUMN zoho.contacts.payment_terms_label IS 'Payment terms as labelled in Zoho';
COMMENT ON COLUMN zoho.contacts.credit_limit IS 'Credit limit';
COMMENT ON COLUMN zoho.contacts.outstanding_receivable_amount IS 'Amount the contact owes';
COMMENT ON COLUMN zoho.contacts.outstanding_payable_amount IS 'Amount owed to the contact';
COMMENT ON COLUMN zoho.contacts.unused_credits_receivable_amount IS 'Unused credits receivable';
COMMENT ON COLUMN zoho.contacts.unused_credits_payable_amount IS 'Unused credits payable';
COMMENT ON COLUMN zoho.contacts.custom_fields IS 'Custom fields as Zoho sends them (JSON array)';
COMMENT ON COLUMN zoho.contacts.created_time IS 'When the record was created in Zoho';

CREATE TABLE zoho.contact_addresses (
    org_id text NOT NULL,
    contact_id text NOT NULL,
    address_type text NOT NULL,
    position integer NOT NULL,
    address_id text,
    attention text,
    address text,
    street2 text,
    city text,
    state text,
    zip text,
    country text,
    phone text,
    fax text,
    PRIMARY KEY (org_id, contact_id, address_type, position),
    FOREIGN KEY (org_id, contact_id) REFERENCES zoho.contacts (org_id, contact_id) ON DELETE CASCADE
);
COMMENT ON TABLE zoho.contact_addresses IS 'Billing, shipping and additional addresses of a contact, from the contact detail record; replaced whenever the contact detail is written.';
COMMENT ON COLUMN zoho.contact_addresses.org_id IS 'Zoho organization id';
COMMENT ON COLUMN zoho.contact_addresses.contact_id IS 'Parent contact (zoho.contacts.contact_id)';
COMMENT ON COLUMN zoho.contact_addresses.address_type IS '''billing'', ''shipping'' or ''additional''';
COMMENT ON COLUMN zoho.contact_addresses.position IS '0-based position in the Zoho array (keeps Zoho''s order)';
COMMENT ON COLUMN zoho.contact_addresses.address_id IS 'Zoho address id, when Zoho gives one';
COMMENT ON COLUMN zoho.contact_addresses.attention IS 'Attention line of the address';
COMMENT ON COLUMN zoho.contact_addresses.address IS 'Street address';
COMMENT ON COLUMN zoho.contact_addresses.street2 IS 'Second street line';
COMMENT ON COLUMN zoho.contact_addresses.city IS 'City';
COMMENT ON COLUMN zoho.contact_addresses.state IS 'State or region';
COMMENT ON COLUMN zoho.contact_addresses.zip IS 'Postal code';
COMMENT ON COLUMN zoho.contact_addresses.country IS 'Country';
COMMENT ON COLUMN zoho.contact_addresses.phone IS 'Phone number';
COMMENT ON COLUMN zoho.contact_addresses.fax IS 'Fax number';

CREATE TABLE zoho.contact_persons (
    org_id text NOT NULL,
    contact_id text NOT NULL,
    contact_person_id text NOT NULL,
    salutation text,
    first_name text,
    last_name text,
    email text,
    phone text,
    mobile text,
    designation text,
    department text,
    is_primary_contact boolean,
    PRIMARY KEY (org_id, contact_id, contact_person_id),
    FOREIGN KEY (org_id, contact_id) REFERENCES zoho.contacts (org_id, contact_id) ON DELETE CASCADE
);
COMMENT ON TABLE zoho.contact_persons IS 'Contact persons of a contact, from the contact detail record; replaced whenever the contact detail is written.';
COMMENT ON COLUMN zoho.contact_persons.org_id IS 'Zoho organization id';
COMMENT ON COLUMN zoho.contact_persons.contact_id IS 'Parent contact (zoho.contacts.contact_id)';
COMMENT ON COLUMN zoho.contact_persons.contact_person_id IS 'Zoho contact person id';
COMMENT ON COLUMN zoho.contact_persons.salutation IS 'Salutation';
COMMENT ON COLUMN zoho.contact_persons.first_name IS 'First name';
COMMENT ON COLUMN zoho.contact_persons.last_name IS 'Last name';
COMMENT ON COLUMN zoho.contact_persons.email IS 'E-mail address';
COMMENT ON COLUMN zoho.contact_persons.phone IS 'Phone number';
COMMENT ON COLUMN zoho.contact_persons.mobile IS 'Mobile number';
COMMENT ON COLUMN zoho.contact_persons.designation IS 'Job title';
COMMENT ON COLUMN zoho.contact_persons.department IS 'Department';
COMMENT ON COLUMN zoho.contact_persons.is_primary_contact IS 'Whether this is the primary contact person';

CREATE TABLE zoho.invoices (
    org_id text NOT NULL,
    invoice_id text NOT NULL,
    modified_time timestamptz,
    synced_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    raw jsonb,
    content_hash text,
    is_detail boolean NOT NULL DEFAULT false,
    invoice_number text,
    reference_number text,
    status text,
    date date,
    customer_id text,
    customer_name text,
    salesperson_name text,
    currency_code text,
    exchange_rate numeric,
    discount numeric,
    shipping_charge numeric,
    adjustment numeric,
    sub_total numeric,
    tax_total numeric,
    total numeric,
    custom_fields jsonb,
    created_time timestamptz,
    due_date date,
    balance numeric,
    salesorder_id text,
    PRIMARY KEY (org_id, invoice_id)
);
COMMENT ON TABLE zoho.invoices IS 'Zoho invoices, one row per organization and invoice_id.';
COMMENT ON COLUMN zoho.invoices.org_id IS 'Zoho organization id';
COMMENT ON COLUMN zoho.invoices.invoice_id IS 'Zoho invoice id (18-19 digits, kept as text)';
COMMENT ON COLUMN zoho.invoices.modified_time IS 'Zoho last_modified_time of the version stored; guards every write (an older version never overwrites a newer one). NULL for entities without one';
COMMENT ON COLUMN zoho.invoices.synced_at IS 'When tds-writer last wrote this row';
COMMENT ON COLUMN zoho.invoices.deleted_at IS 'When the record was found deleted in Zoho (soft delete); NULL while it exists';
COMMENT ON COLUMN zoho.invoices.raw IS 'The fullest Zoho JSON seen for this record (detail record, list fields merged in)';
COMMENT ON COLUMN zoho.invoices.content_hash IS 'Hash of the record content as transformed; an identical record is not written again';
COMMENT ON COLUMN zoho.invoices.is_detail IS 'true when the stored version came from a detail record (complete), false from an abbreviated list record';
COMMENT ON COLUMN zoho.invoices.invoice_number IS 'Invoice number as shown to the customer';
COMMENT ON COLUMN zoho.invoices.reference_number IS 'Reference number';
COMMENT ON COLUMN zoho.invoices.status IS 'Zoho status (e.g. active, inactive, draft, sent, paid, void)';
COMMENT ON COLUMN zoho.invoices.date IS 'Document date';
COMMENT ON COLUMN zoho.invoices.customer_id IS 'Customer (zoho.contacts.contact_id)';
COMMENT ON COLUMN zoho.invoices.customer_name IS 'Customer name at the time of the document';
COMMENT ON COLUMN zoho.invoices.salesperson_name IS 'Salesperson';
COMMENT ON COLUMN zoho.invoices.currency_code IS 'ISO currency code';
COMMENT ON COLUMN zoho.invoices.exchange_rate IS 'Exchange rate to the base currency';
COMMENT ON COLUMN zoho.invoices.discount IS 'Discount (amount or percent as Zoho reports it)';
COMMENT ON COLUMN zoho.invoices.shipping_charge IS 'Shipping charge';
COMMENT ON COLUMN zoho.invoices.adjustment IS 'Adjustment amount';
COMMENT ON COLUMN zoho.invoices.sub_total IS 'Total before tax';
COMMENT ON COLUMN zoho.invoices.tax_total IS 'Total tax';
COMMENT ON COLUMN zoho.invoices.total IS 'Grand total';
COMMENT ON COLUMN zoho.invoices.custom_fields IS 'Custom fields as Zoho sends them (JSON array)';
COMMENT ON COLUMN zoho.invoices.created_time IS 'When the record was created in Zoho';
COMMENT ON COLUMN zoho.invoices.due_date IS 'Payment due date';
COMMENT ON COLUMN zoho.invoices.balance IS 'Amount still unpaid';
COMMENT ON COLUMN zoho.invoices.salesorder_id IS 'Sales order this invoice was created from (zoho.sales_orders.salesorder_id)';

CREATE TABLE zoho.invoice_lines (
    org_id text NOT NULL,
    invoice_id text NOT NULL,
    line_item_id text NOT NULL,
    position integer,
    item_id text,
    sku text,
    name text,
    description text,
    unit text,
    quantity numeric,
    rate numeric,
    discount numeric,
    tax_id text,
    tax_name text,
    tax_percentage numeric,
    item_total numeric,
    warehouse_id text,
    PRIMARY KEY (org_id, invoice_id, line_item_id),
    FOREIGN KEY (org_id, invoice_id) REFERENCES zoho.invoices (org_id, invoice_id) ON DELETE CASCADE
);
COMMENT ON TABLE zoho.invoice_lines IS 'Line items of an invoice, from the invoice detail record; replaced whenever the invoice detail is written.';
COMMENT ON COLUMN zoho.invoice_lines.org_id IS 'Zoho organization id';
COMMENT ON COLUMN zoho.invoice_lines.invoice_id IS 'Parent invoice (zoho.invoices.invoice_id)';
COMMENT ON COLUMN zoho.invoice_lines.line_item_id IS 'Zoho line item id';
COMMENT ON COLUMN zoho.invoice_lines.position IS '0-based position in the Zoho array (keeps Zoho''s order)';
COMMENT ON COLUMN zoho.invoice_lines.item_id IS 'Item (zoho.items.item_id)';
COMMENT ON COLUMN zoho.invoice_lines.sku IS 'Stock keeping unit';
COMMENT ON COLUMN zoho.invoice_lines.name IS 'Name as shown in Zoho';
COMMENT ON COLUMN zoho.invoice_lines.description IS 'Free-text description';
COMMENT ON COLUMN zoho.invoice_lines.unit IS 'Unit of measure';
COMMENT ON COLUMN zoho.invoice_lines.quantity IS 'Quantity';
COMMENT ON COLUMN zoho.invoice_lines.rate IS 'Selling price per unit, in the organization currency unless stated';
COMMENT ON COLUMN zoho.invoice_lines.discount IS 'Discount (amount or percent as Zoho reports it)';
COMMENT ON COLUMN zoho.invoice_lines.tax_id IS 'Zoho tax id';
COMMENT ON COLUMN zoho.invoice_lines.tax_name IS 'Tax name';
COMMENT ON COLUMN zoho.invoice_lines.tax_percentage IS 'Tax rate in percent';
COMMENT ON COLUMN zoho.invoice_lines.item_total IS 'Line total';
COMMENT ON COLUMN zoho.invoice_lines.warehouse_id IS 'Zoho warehouse/location id (zoho.warehouses.warehouse_id)';

CREATE TABLE zoho.sales_orders (
    org_id text NOT NULL,
    salesorder_id text NOT NULL,
    modified_time timestamptz,
    synced_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    raw jsonb,
    content_hash text,
    is_detail boolean NOT NULL DEFAULT false,
    salesorder_number text,
    reference_number text,
    status text,
    date date,
    customer_id text,
    customer_name text,
    salesperson_name text,
    currency_code text,
    exchange_rate numeric,
    discount numeric,
    shipping_charge numeric,
    adjustment numeric,
    sub_total numeric,
    tax_total numeric,
    total numeric,
    custom_fields jsonb,
    created_time timestamptz,
    shipment_date date,
    order_status text,
    invoiced_status text,
    paid_status text,
    shipped_status text,
    delivery_method text,
    PRIMARY KEY (org_id, salesorder_id)
);
COMMENT ON TABLE zoho.sales_orders IS 'Zoho sales orders, one row per organization and salesorder_id.';
COMMENT ON COLUMN zoho.sales_orders.org_id IS 'Zoho organization id';
COMMENT ON COLUMN zoho.sales_orders.salesorder_id IS 'Zoho sales order id (18-19 digits, kept as text)';
COMMENT ON COLUMN zoho.sales_orders.modified_time IS 'Zoho last_modified_time of the version stored; guards every write (an older version never overwrites a newer one). NULL for entities without one';
COMMENT ON COLUMN zoho.sales_orders.synced_at IS 'When tds-writer last wrote this row';
COMMENT ON COLUMN zoho.sales_orders.deleted_at IS 'When the record was found deleted in Zoho (soft delete); NULL while it exists';
COMMENT ON COLUMN zoho.sales_orders.raw IS 'The fullest Zoho JSON seen for this record (detail record, list fields merged in)';
COMMENT ON COLUMN zoho.sales_orders.content_hash IS 'Hash of the record content as transformed; an identical record is not written again';
COMMENT ON COLUMN zoho.sales_orders.is_detail IS 'true when the stored version came from a detail record (complete), false from an abbreviated list record';
COMMENT ON COLUMN zoho.sales_orders.salesorder_number IS 'Sales order number as shown to the customer';
COMMENT ON COLUMN zoho.sales_orders.reference_number IS 'Reference number';
COMMENT ON COLUMN zoho.sales_orders.status IS 'Zoho status (e.g. active, inactive, draft, sent, paid, void)';
COMMENT ON COLUMN zoho.sales_orders.date IS 'Document date';
COMMENT ON COLUMN zoho.sales_orders.customer_id IS 'Customer (zoho.contacts.contact_id)';
COMMENT ON COLUMN zoho.sales_orders.customer_name IS 'Customer name at the time of the document';
COMMENT ON COLUMN zoho.sales_orders.salesperson_name IS 'Salesperson';
COMMENT ON COLUMN zoho.sales_orders.currency_code IS 'ISO currency code';
COMMENT ON COLUMN zoho.sales_orders.exchange_rate IS 'Exchange rate to the base currency';
COMMENT ON COLUMN zoho.sales_orders.discount IS 'Discount (amount or percent as Zoho reports it)';
COMMENT ON COLUMN zoho.sales_orders.shipping_charge IS 'Shipping charge';
COMMENT ON COLUMN zoho.sales_orders.adjustment IS 'Adjustment amount';
COMMENT ON COLUMN zoho.sales_orders.sub_total IS 'Total before tax';
COMMENT ON COLUMN zoho.sales_orders.tax_total IS 'Total tax';
COMMENT ON COLUMN zoho.sales_orders.total IS 'Grand total';
COMMENT ON COLUMN zoho.sales_orders.custom_fields IS 'Custom fields as Zoho sends them (JSON array)';
COMMENT ON COLUMN zoho.sales_orders.created_time IS 'When the record was created in Zoho';
COMMENT ON COLUMN zoho.sales_orders.shipment_date IS 'Expected shipment date';
COMMENT ON COLUMN zoho.sales_orders.order_status IS 'Order status';
COMMENT ON COLUMN zoho.sales_orders.invoiced_status IS 'Invoicing status';
COMMENT ON COLUMN zoho.sales_orders.paid_status IS 'Payment status';
COMMENT ON COLUMN zoho.sales_orders.shipped_status IS 'Shipping status';
COMMENT ON COLUMN zoho.sales_orders.delivery_method IS 'Delivery method';

CREATE TABLE zoho.sales_order_lines (
    org_id text NOT NULL,
    salesorder_id text NOT NULL,
    line_item_id text NOT NULL,
    position integer,
    item_id text,
    sku text,
    name text,
    description text,
    unit text,
    quantity numeric,
    rate numeric,
    discount numeric,
    tax_id text,
    tax_name text,
    tax_percentage numeric,
    item_total numeric,
    warehouse_id text,
    quantity_invoiced numeric,
    quantity_packed numeric,
    quantity_shipped numeric,
    PRIMARY KEY (org_id, salesorder_id, line_item_id),
    FOREIGN KEY (org_id, salesorder_id) REFERENCES zoho.sales_orders (org_id, salesorder_id) ON DELETE CASCADE
);
COMMENT ON TABLE zoho.sales_order_lines IS 'Line items of a sales order, from the sales order detail record; replaced whenever the sales order detail is written.';
COMMENT ON COLUMN zoho.sales_order_lines.org_id IS 'Zoho organization id';
COMMENT ON COLUMN zoho.sales_order_lines.salesorder_id IS 'Parent sales order (zoho.sales_orders.salesorder_id)';
COMMENT ON COLUMN zoho.sales_order_lines.line_item_id IS 'Zoho line item id';
COMMENT ON COLUMN zoho.sales_order_lines.position IS '0-based position in the Zoho array (keeps Zoho''s order)';
COMMENT ON COLUMN zoho.sales_order_lines.item_id IS 'Item (zoho.items.item_id)';
COMMENT ON COLUMN zoho.sales_order_lines.sku IS 'Stock keeping unit';
COMMENT ON COLUMN zoho.sales_order_lines.name IS 'Name as shown in Zoho';
COMMENT ON COLUMN zoho.sales_order_lines.description IS 'Free-text description';
COMMENT ON COLUMN zoho.sales_order_lines.unit IS 'Unit of measure';
COMMENT ON COLUMN zoho.sales_order_lines.quantity IS 'Quantity';
COMMENT ON COLUMN zoho.sales_order_lines.rate IS 'Selling price per unit, in the organization currency unless stated';
COMMENT ON COLUMN zoho.sales_order_lines.discount IS 'Discount (amount or percent as Zoho reports it)';
COMMENT ON COLUMN zoho.sales_order_lines.tax_id IS 'Zoho tax id';
COMMENT ON COLUMN zoho.sales_order_lines.tax_name IS 'Tax name';
COMMENT ON COLUMN zoho.sales_order_lines.tax_percentage IS 'Tax rate in percent';
COMMENT ON COLUMN zoho.sales_order_lines.item_total IS 'Line total';
COMMENT ON COLUMN zoho.sales_order_lines.warehouse_id IS 'Zoho warehouse/location id (zoho.warehouses.warehouse_id)';
COMMENT ON COLUMN zoho.sales_order_lines.quantity_invoiced IS 'Quantity invoiced so far';
COMMENT ON COLUMN zoho.sales_order_lines.quantity_packed IS 'Quantity packed so far';
COMMENT ON COLUMN zoho.sales_order_lines.quantity_shipped IS 'Quantity shipped so far';

-- Indexes for what consumers query; every one leads with org_id because every
-- query is per organization.
CREATE INDEX items_sku_idx ON zoho.items (org_id, sku);
CREATE INDEX items_name_idx ON zoho.items (org_id, name);
CREATE INDEX items_group_id_idx ON zoho.items (org_id, group_id);
CREATE INDEX items_status_idx ON zoho.items (org_id, status);
CREATE INDEX items_modified_time_idx ON zoho.items (org_id, modified_time);
CREATE INDEX item_groups_group_name_idx ON zoho.item_groups (org_id, group_name);
CREATE INDEX item_groups_modified_time_idx ON zoho.item_groups (org_id, modified_time);
CREATE INDEX item_stock_warehouse_id_idx ON zoho.item_stock (org_id, warehouse_id);
CREATE INDEX contacts_contact_name_idx ON zoho.contacts (org_id, contact_name);
CREATE INDEX contacts_company_name_idx ON zoho.contacts (org_id, company_name);
CREATE INDEX contacts_email_idx ON zoho.contacts (org_id, email);
CREATE INDEX contacts_status_idx ON zoho.contacts (org_id, status);
CREATE INDEX contacts_modified_time_idx ON zoho.contacts (org_id, modified_time);
CREATE INDEX invoices_invoice_number_idx ON zoho.invoices (org_id, invoice_number);
CREATE INDEX invoices_customer_id_idx ON zoho.invoices (org_id, customer_id);
CREATE INDEX invoices_date_idx ON zoho.invoices (org_id, date);
CREATE INDEX invoices_status_idx ON zoho.invoices (org_id, status);
CREATE INDEX invoices_due_date_idx ON zoho.invoices (org_id, due_date);
CREATE INDEX invoices_modified_time_idx ON zoho.invoices (org_id, modified_time);
CREATE INDEX invoice_lines_item_id_idx ON zoho.invoice_lines (org_id, item_id);
CREATE INDEX sales_orders_salesorder_number_idx ON zoho.sales_orders (org_id, salesorder_number);
CREATE INDEX sales_orders_customer_id_idx ON zoho.sales_orders (org_id, customer_id);
CREATE INDEX sales_orders_date_idx ON zoho.sales_orders (org_id, date);
CREATE INDEX sales_orders_status_idx ON zoho.sales_orders (org_id, status);
CREATE INDEX sales_orders_modified_time_idx ON zoho.sales_orders (org_id, modified_time);
CREATE INDEX sales_order_lines_item_id_idx ON zoho.sales_order_lines (org_id, item_id);

-- ---------------------------------------------------------------- schema tds

-- tds-writer creates this table itself before the first migration (it must
-- exist to know what is applied); IF NOT EXISTS keeps this file complete.
CREATE TABLE IF NOT EXISTS tds.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tds.schema_migrations IS 'Migrations applied to this database (writer/migrations/NNN_name.sql), each exactly once.';
COMMENT ON COLUMN tds.schema_migrations.version IS 'Migration number (NNN of the file name)';
COMMENT ON COLUMN tds.schema_migrations.name IS 'Migration file name without number and extension';
COMMENT ON COLUMN tds.schema_migrations.applied_at IS 'When the migration was applied';

CREATE TABLE tds.sync_state (
    org_id text NOT NULL,
    entity text NOT NULL,
    cursor text,
    cursor_at timestamptz,
    last_run_id text,
    last_success_at timestamptz,
    last_full_at timestamptz,
    PRIMARY KEY (org_id, entity)
);
COMMENT ON TABLE tds.sync_state IS 'Incremental sync cursor per organization and entity. Advanced only in the transaction that commits the data the cursor covers.';
COMMENT ON COLUMN tds.sync_state.org_id IS 'Zoho organization id';
COMMENT ON COLUMN tds.sync_state.entity IS 'Entity name from the registry (items, contacts, ...)';
COMMENT ON COLUMN tds.sync_state.cursor IS 'Zoho last_modified_time text to resume incremental syncs from (an overlap window is re-read before it)';
COMMENT ON COLUMN tds.sync_state.cursor_at IS 'When the cursor was last advanced';
COMMENT ON COLUMN tds.sync_state.last_run_id IS 'Run (tds.sync_runs.run_id) that last completed for this entity';
COMMENT ON COLUMN tds.sync_state.last_success_at IS 'When a run last completed';
COMMENT ON COLUMN tds.sync_state.last_full_at IS 'When a full sync last completed';

CREATE TABLE tds.sync_runs (
    run_id text PRIMARY KEY,
    org_id text NOT NULL,
    entity text NOT NULL,
    mode text NOT NULL,
    status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    pages_fetched integer NOT NULL DEFAULT 0,
    records_fetched bigint NOT NULL DEFAULT 0,
    pages_written integer NOT NULL DEFAULT 0,
    records_written bigint NOT NULL DEFAULT 0,
    records_rejected bigint NOT NULL DEFAULT 0,
    api_calls integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    error text
);
COMMENT ON TABLE tds.sync_runs IS 'One row per sync run (full, incremental, fetch, reconcile). The fetcher inserts it and updates the fetched/api fields; the writer updates the written/rejected fields and completes it with the final page.';
COMMENT ON COLUMN tds.sync_runs.run_id IS 'Run id chosen by the fetcher';
COMMENT ON COLUMN tds.sync_runs.org_id IS 'Zoho organization id';
COMMENT ON COLUMN tds.sync_runs.entity IS 'Entity name from the registry';
COMMENT ON COLUMN tds.sync_runs.mode IS 'full, incremental, fetch or reconcile';
COMMENT ON COLUMN tds.sync_runs.status IS 'running, completed or failed';
COMMENT ON COLUMN tds.sync_runs.pages_fetched IS 'Pages fetched from Zoho so far';
COMMENT ON COLUMN tds.sync_runs.records_fetched IS 'Records fetched from Zoho so far';
COMMENT ON COLUMN tds.sync_runs.pages_written IS 'Pages committed by the writer so far';
COMMENT ON COLUMN tds.sync_runs.records_written IS 'Records of committed pages that the writer applied (whether or not they changed anything)';
COMMENT ON COLUMN tds.sync_runs.records_rejected IS 'Records rejected by the processor or the writer (see tds.rejected)';
COMMENT ON COLUMN tds.sync_runs.api_calls IS 'Zoho API calls made by the run';
COMMENT ON COLUMN tds.sync_runs.started_at IS 'When the run started';
COMMENT ON COLUMN tds.sync_runs.updated_at IS 'Last progress update';
COMMENT ON COLUMN tds.sync_runs.finished_at IS 'When the run completed or failed';
COMMENT ON COLUMN tds.sync_runs.error IS 'Why the run failed';
CREATE INDEX sync_runs_status_idx ON tds.sync_runs (status, finished_at);
CREATE INDEX sync_runs_org_entity_idx ON tds.sync_runs (org_id, entity, started_at);

CREATE TABLE tds.sync_requests (
    id bigserial PRIMARY KEY,
    org_id text NOT NULL,
    entity text NOT NULL,
    mode text NOT NULL DEFAULT 'incremental',
    requested_at timestamptz NOT NULL DEFAULT now(),
    requested_by text,
    claimed_by text,
    claimed_at timestamptz,
    run_id text,
    done_at timestamptz
);
COMMENT ON TABLE tds.sync_requests IS 'Queue of requested syncs; any fetcher replica takes one with FOR UPDATE SKIP LOCKED.';
COMMENT ON COLUMN tds.sync_requests.id IS 'Request number';
COMMENT ON COLUMN tds.sync_requests.org_id IS 'Zoho organization id';
COMMENT ON COLUMN tds.sync_requests.entity IS 'Entity name from the registry, or ''all''';
COMMENT ON COLUMN tds.sync_requests.mode IS 'full or incremental';
COMMENT ON COLUMN tds.sync_requests.requested_at IS 'When the request was made';
COMMENT ON COLUMN tds.sync_requests.requested_by IS 'Who or what asked (user, CLI, alert rule)';
COMMENT ON COLUMN tds.sync_requests.claimed_by IS 'Fetcher instance that took the request';
COMMENT ON COLUMN tds.sync_requests.claimed_at IS 'When it was taken';
COMMENT ON COLUMN tds.sync_requests.run_id IS 'Run started for it (tds.sync_runs.run_id)';
COMMENT ON COLUMN tds.sync_requests.done_at IS 'When the run for it finished';
CREATE INDEX sync_requests_open_idx ON tds.sync_requests (requested_at) WHERE done_at IS NULL;

CREATE TABLE tds.oauth_tokens (
    org_id text PRIMARY KEY,
    access_token text,
    api_domain text,
    expires_at timestamptz,
    refresh_token text,
    status text NOT NULL DEFAULT 'ok',
    locked_until timestamptz,
    refreshed_at timestamptz,
    refresh_window_start timestamptz,
    refresh_count integer NOT NULL DEFAULT 0,
    last_error text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tds.oauth_tokens IS 'Zoho OAuth access tokens shared by every fetcher replica (Zoho allows only 10 token refreshes per 10 minutes). Secret: not readable by tds_reader.';
COMMENT ON COLUMN tds.oauth_tokens.org_id IS 'Zoho organization id';
COMMENT ON COLUMN tds.oauth_tokens.access_token IS 'Current access token';
COMMENT ON COLUMN tds.oauth_tokens.api_domain IS 'api_domain from the token response';
COMMENT ON COLUMN tds.oauth_tokens.expires_at IS 'When the access token expires';
COMMENT ON COLUMN tds.oauth_tokens.refresh_token IS 'Refresh token, when stored in the database rather than in the configuration';
COMMENT ON COLUMN tds.oauth_tokens.status IS 'ok, locked (Zoho lockout), revoked or invalid';
COMMENT ON COLUMN tds.oauth_tokens.locked_until IS 'No refresh before this time (lockout or single-flight lease)';
COMMENT ON COLUMN tds.oauth_tokens.refreshed_at IS 'Last successful refresh';
COMMENT ON COLUMN tds.oauth_tokens.refresh_window_start IS 'Start of the current 10-minute refresh window';
COMMENT ON COLUMN tds.oauth_tokens.refresh_count IS 'Refreshes in the current window';
COMMENT ON COLUMN tds.oauth_tokens.last_error IS 'Last refresh error';
COMMENT ON COLUMN tds.oauth_tokens.updated_at IS 'Last change of this row';

CREATE TABLE tds.webhook_events (
    event_id text PRIMARY KEY,
    org_id text,
    entity text,
    zoho_id text,
    received_at timestamptz,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tds.webhook_events IS 'Webhook events applied, to recognise a replayed duplicate; pruned after the dedupe horizon (TDS_WRITER_RETAIN_WEBHOOK_EVENTS_DAYS).';
COMMENT ON COLUMN tds.webhook_events.event_id IS 'Event id (Zoho''s, or a content hash)';
COMMENT ON COLUMN tds.webhook_events.org_id IS 'Zoho organization id';
COMMENT ON COLUMN tds.webhook_events.entity IS 'Entity name from the registry';
COMMENT ON COLUMN tds.webhook_events.zoho_id IS 'Id of the record the event was about';
COMMENT ON COLUMN tds.webhook_events.received_at IS 'When ingress accepted the webhook';
COMMENT ON COLUMN tds.webhook_events.applied_at IS 'When the writer committed it';
CREATE INDEX webhook_events_received_at_idx ON tds.webhook_events (received_at);

CREATE TABLE tds.rejected (
    id bigserial PRIMARY KEY,
    stage text NOT NULL,
    org_id text,
    entity text,
    zoho_id text,
    reason text NOT NULL,
    raw text,
    source text,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tds.rejected IS 'Dead letters: records a stage could not apply, with the reason and the raw payload; pruned after TDS_WRITER_RETAIN_REJECTED_DAYS.';
COMMENT ON COLUMN tds.rejected.id IS 'Reject number';
COMMENT ON COLUMN tds.rejected.stage IS 'Stage that rejected it (processor, writer, ...)';
COMMENT ON COLUMN tds.rejected.org_id IS 'Zoho organization id';
COMMENT ON COLUMN tds.rejected.entity IS 'Entity name, or the table for writer rejects';
COMMENT ON COLUMN tds.rejected.zoho_id IS 'Record id, when known';
COMMENT ON COLUMN tds.rejected.reason IS 'Why, precisely (field and value, or the database error)';
COMMENT ON COLUMN tds.rejected.raw IS 'The record as received (Zoho JSON when available)';
COMMENT ON COLUMN tds.rejected.source IS 'Id of the source message (event or page)';
COMMENT ON COLUMN tds.rejected.created_at IS 'When it was rejected';
CREATE INDEX rejected_created_at_idx ON tds.rejected (created_at);

CREATE TABLE tds.alerts (
    id bigserial PRIMARY KEY,
    rule text NOT NULL,
    severity text NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    org_id text,
    entity text,
    summary text NOT NULL,
    details jsonb,
    state text NOT NULL DEFAULT 'firing' CHECK (state IN ('firing', 'resolved')),
    fired_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    notified_at timestamptz,
    acknowledged_by text,
    acknowledged_at timestamptz
);
COMMENT ON TABLE tds.alerts IS 'Alert history with acknowledgement; resolved alerts are pruned after TDS_WRITER_RETAIN_ALERTS_DAYS.';
COMMENT ON COLUMN tds.alerts.id IS 'Alert number';
COMMENT ON COLUMN tds.alerts.rule IS 'Rule that fired';
COMMENT ON COLUMN tds.alerts.severity IS 'info, warning, error or critical';
COMMENT ON COLUMN tds.alerts.org_id IS 'Zoho organization id, when the alert is about one';
COMMENT ON COLUMN tds.alerts.entity IS 'Entity name, when the alert is about one';
COMMENT ON COLUMN tds.alerts.summary IS 'One line for humans';
COMMENT ON COLUMN tds.alerts.details IS 'Rule-specific details';
COMMENT ON COLUMN tds.alerts.state IS 'firing or resolved';
COMMENT ON COLUMN tds.alerts.fired_at IS 'When it started firing';
COMMENT ON COLUMN tds.alerts.last_seen_at IS 'When the condition was last seen';
COMMENT ON COLUMN tds.alerts.resolved_at IS 'When it resolved';
COMMENT ON COLUMN tds.alerts.notified_at IS 'When notifications were last sent';
COMMENT ON COLUMN tds.alerts.acknowledged_by IS 'Who acknowledged it';
COMMENT ON COLUMN tds.alerts.acknowledged_at IS 'When it was acknowledged';
CREATE INDEX alerts_state_idx ON tds.alerts (state, resolved_at);
CREATE INDEX alerts_rule_idx ON tds.alerts (rule, org_id, entity);

-- ---------------------------------------------------------------- roles
-- Roles are cluster-wide and have no password: the deployment grants them to
-- login roles (GRANT tds_reader TO reporting_app) and sets credentials.

-- Two databases of one cluster may be migrated at once; the advisory lock is
-- per database, so a concurrent CREATE ROLE is tolerated here.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tds_reader') THEN
        BEGIN
            CREATE ROLE tds_reader NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tds_writer') THEN
        BEGIN
            CREATE ROLE tds_writer NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
END
$$;

-- Consumers: read zoho.*, and the pipeline state except the OAuth tokens.
GRANT USAGE ON SCHEMA zoho, tds TO tds_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA zoho TO tds_reader;
GRANT SELECT ON tds.schema_migrations, tds.sync_state, tds.sync_runs, tds.sync_requests,
    tds.webhook_events, tds.rejected, tds.alerts TO tds_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA zoho GRANT SELECT ON TABLES TO tds_reader;

-- The pipeline (writer, fetcher): read and write rows, never change the schema.
GRANT USAGE ON SCHEMA zoho, tds TO tds_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA zoho, tds TO tds_writer;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA tds TO tds_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA zoho, tds GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO tds_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA tds GRANT USAGE, SELECT ON SEQUENCES TO tds_writer;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO tds_reader, tds_writer', current_database());
END
$$;
