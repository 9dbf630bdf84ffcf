-- An organization migrated to Zoho's Locations lists its stock sites at GET
-- /locations; with "stock_sites": "locations" in its TDS_CONFIG entry the
-- fetcher lists them there, each location_id kept in warehouse_id. The
-- comments say where the rows come from.
COMMENT ON TABLE zoho.warehouses IS 'Zoho warehouses or locations (stock sites), one row per organization and warehouse_id: listed from GET /settings/warehouses, or from GET /locations for an organization configured with "stock_sites": "locations".';
COMMENT ON COLUMN zoho.warehouses.warehouse_id IS 'Zoho warehouse id, or location id (from GET /locations); 18-19 digits, kept as text';
