-- Ids (org_id and every other text column named *_id in zoho and tds) are
-- compared byte by byte: COLLATE "C". They are Zoho's numbers, our hashes
-- and names of runs and pages; no language orders them. Under a database
-- locale such as en_US.UTF-8, every key comparison of a primary key, a
-- foreign-key check, the writer's guard and each index that leads with
-- org_id went through the locale's strcoll(), and sorts got no abbreviated
-- keys; with "C" they are memcmp(). Names, SKUs and the other text keep the
-- database's collation, so ORDER BY name still sorts as the locale does.
--
-- Ids of digits, or of lower-case hex, sort the same either way. A join or
-- comparison of an id with a column of the database's collation takes "C"
-- (an explicit collation wins over the default).
--
-- ALTER COLUMN ... TYPE with the same type rewrites no table, but rebuilds
-- every index on the column and checks every foreign key again, with the
-- table locked: 17 s for a million items with two million stock rows on
-- the development machine (README, "The database").
--
-- A table with a view, rule or policy on one of its ids cannot have the
-- column changed (PostgreSQL refuses); such a table keeps the database's
-- collation, works as before, and is named in a warning, by the writer at
-- every start (writer/migrate.c) and by this function's result. After
-- dropping what depends on it, SELECT * FROM tds.collate_ids(); converts
-- it, and the view can be made again.
CREATE FUNCTION tds.collate_ids() RETURNS SETOF text
    LANGUAGE plpgsql AS $fn$
DECLARE
    t record;
    msg text;
    det text;
BEGIN
    FOR t IN
        SELECT n.nspname, c.relname,
               string_agg(format('ALTER COLUMN %I TYPE text COLLATE "C"', a.attname), ', '
                          ORDER BY a.attnum) AS alters
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE n.nspname IN ('zoho', 'tds') AND c.relkind IN ('r', 'p')
           AND a.attnum > 0 AND NOT a.attisdropped
           AND a.atttypid = 'text'::regtype AND a.attname LIKE '%\_id'
           AND a.attcollation <> 'pg_catalog."C"'::regcollation
         GROUP BY n.nspname, c.relname
         ORDER BY n.nspname, c.relname
    LOOP
        BEGIN
            EXECUTE format('ALTER TABLE %I.%I %s', t.nspname, t.relname, t.alters);
        EXCEPTION WHEN feature_not_supported THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
            RAISE WARNING '%.% keeps the database''s collation for its ids: % (%)',
                t.nspname, t.relname, msg, det;
            RETURN NEXT format('%I.%I: %s (%s)', t.nspname, t.relname, msg, det);
        END;
    END LOOP;
END
$fn$;

COMMENT ON FUNCTION tds.collate_ids() IS
    'Gives the id columns (*_id) of zoho and tds tables COLLATE "C" (migration 022); returns '
    'the tables it could not change and why (a view, rule or policy on an id column).';

SELECT count(*) FROM tds.collate_ids();
