"""tds-writer against a real PostgreSQL: schema, guarded upserts, children,
deletes, rejects, acks after commit, PostgreSQL restarts, two writers, NOTIFY,
roles, cursors, pruning and the operator commands (issue 4 "Done when").

Rows are sent the way the processor sends them: msgpack `rows` messages on a
PUSH socket (tests/integration/writer_util.py mirrors common/msg.c); acks are
read from the writer's PUB socket.
"""
import datetime
import json
import os
import re
import select
import signal
import socket
import threading
import time

import psycopg2
import pytest

from conftest import Database, http_get, wait_until
from writer_util import (CHILD, DELETE, DETAIL, ITEM_COLS, LIST, STOCK_COLS, WriterHarness, item,
                         items_sets, rows_msg, rowset, ts)

ORG = "60012345678"


@pytest.fixture
def writer(procs, db):
    h = WriterHarness(procs, db)
    yield h
    h.close()


def items_table(db, cols="item_id, name, sku, rate::text, modified_time, is_detail, "
                         "deleted_at IS NOT NULL"):
    return {r[0]: r[1:] for r in db.query(f"SELECT {cols} FROM zoho.items ORDER BY item_id")}


def stock_of(db, item_id):
    return db.query("SELECT warehouse_id, stock_on_hand::text FROM zoho.item_stock "
                    "WHERE item_id = %s ORDER BY warehouse_id", item_id)


def duplicates(h):
    """Webhook messages the writer acked without applying (event already recorded)."""
    return h.proc.metric("tds_writer_webhook_duplicates_total")


# ------------------------------------------------------------- migrations

# (version, name) of every file in writer/migrations, in order: NNN_name.sql
MIGRATIONS = sorted(
    (int(f.split("_", 1)[0]), f.split("_", 1)[1][:-4])
    for f in os.listdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                     "writer", "migrations")) if f.endswith(".sql"))

def test_migrations_apply_once_and_reapply_as_noop(procs, db):
    env = {"TDS_DATABASE_URL": db.url}
    r = procs.run("tds-writer", ["migrate"], env=env)
    assert "up to date" in r.stdout
    applied = db.query("SELECT version, name, applied_at FROM tds.schema_migrations")
    assert [(v, n) for v, n, _ in applied] == MIGRATIONS
    procs.run("tds-writer", ["migrate"], env=env)
    assert db.query("SELECT version, name, applied_at FROM tds.schema_migrations") == applied
    assert "NOTICE" not in r.stderr
    # Every registry table exists, and every table and column has a comment.
    tables = {t for (t,) in db.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'zoho'")}
    assert tables == {"items", "item_groups", "warehouses", "item_stock", "contacts",
                      "contact_addresses", "contact_persons", "invoices", "invoice_lines",
                      "sales_orders", "sales_order_lines"}
    missing = db.query("""
        SELECT c.table_schema || '.' || c.table_name || '.' || c.column_name
        FROM information_schema.columns c
        JOIN pg_class k ON k.relname = c.table_name
        JOIN pg_namespace n ON n.oid = k.relnamespace AND n.nspname = c.table_schema
        WHERE c.table_schema IN ('zoho', 'tds')
          AND col_description(k.oid, c.ordinal_position::int) IS NULL""")
    assert missing == []
    assert db.query("SELECT count(*) FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace "
                    "WHERE n.nspname IN ('zoho', 'tds') AND k.relkind = 'r' "
                    "AND obj_description(k.oid, 'pg_class') IS NULL") == [(0,)]
    idx = {i for (i,) in db.query("SELECT indexname FROM pg_indexes WHERE schemaname = 'zoho'")}
    for want in ("items_sku_idx", "items_name_idx", "contacts_contact_name_idx",
                 "invoices_invoice_number_idx", "invoices_customer_id_idx", "invoices_date_idx",
                 "invoices_status_idx", "items_modified_time_idx"):
        assert want in idx
    # Writer start-up on a migrated database applies nothing and runs.
    h = WriterHarness(procs, db)
    assert db.query("SELECT count(*) FROM tds.schema_migrations") == [(len(MIGRATIONS),)]
    assert "applied" not in h.proc.stderr_text()
    h.close()


def test_a_database_from_a_later_release_is_said_not_refused(procs, db):
    """A migration this writer does not have (a later release set the
    database up, and was rolled back): the writer says so, on start-up and
    in `migrate`, and still runs, its tables checked as always."""
    env = {"TDS_DATABASE_URL": db.url}
    procs.run("tds-writer", ["migrate"], env=env)
    last = MIGRATIONS[-1][0]
    db.execute("INSERT INTO tds.schema_migrations (version, name) VALUES (%s, 'later_a'), "
               "(%s, 'later_b')", last + 1, last + 2)
    r = procs.run("tds-writer", ["migrate"], env=env)
    assert f"newer than this writer (it has {last + 2:03d}_later_b, this writer goes to " \
           f"version {last})" in r.stdout, r.stdout
    assert "2 migrations newer than this writer" in r.stderr, r.stderr
    h = WriterHarness(procs, db)
    try:
        assert f"the newest {last + 2:03d}_later_b, this writer's {last:03d}" in h.proc.stderr_text()
    finally:
        h.close()
    # the check of its tables still holds: a column it writes gone is refused
    db.execute("ALTER TABLE zoho.warehouses DROP COLUMN warehouse_name")
    r = procs.run("tds-writer", ["migrate"], env=env, check=False)
    assert r.returncode != 0 and "warehouse_name" in r.stderr, r.stderr


def _database_at(db, version):
    """db as `tds-writer migrate` left it when `version` was the newest
    migration: files 001..version applied in order, each recorded."""
    here = os.path.dirname(os.path.abspath(__file__))
    c = db.connect()
    try:
        cur = c.cursor()
        cur.execute("CREATE SCHEMA IF NOT EXISTS tds; "
                    "CREATE TABLE IF NOT EXISTS tds.schema_migrations (version integer "
                    "PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL "
                    "DEFAULT now())")
        for v, name in MIGRATIONS:
            if v > version:
                break
            path = os.path.join(here, "..", "..", "writer", "migrations", f"{v:03d}_{name}.sql")
            with open(path, encoding="utf-8") as fh:
                cur.execute(fh.read())
            cur.execute("INSERT INTO tds.schema_migrations (version, name) VALUES (%s, %s)",
                        (v, name))
    finally:
        c.close()


def test_migration_006_keys_webhook_events_by_organization(procs, db):
    """A database at migration 005 with events recorded: 006 keys
    tds.webhook_events by (org_id, event_id), keeps every row (one recorded
    without an organization gets '') and the received_at index; the writer
    then takes an event recorded before the upgrade as a duplicate for its
    own organization only."""
    _database_at(db, 5)
    db.execute("INSERT INTO tds.webhook_events (event_id, org_id, entity, zoho_id, received_at, "
               "applied_at) VALUES ('5675', %s, 'items', '91', now() - interval '1 hour', "
               "now() - interval '1 hour'), ('legacy', NULL, NULL, NULL, NULL, now())", ORG)
    procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": db.url})
    assert [(v, n) for v, n in db.query("SELECT version, name FROM tds.schema_migrations "
                                        "ORDER BY version")] == MIGRATIONS
    assert db.query("SELECT org_id, event_id, entity, zoho_id FROM tds.webhook_events "
                    "ORDER BY event_id") == [(ORG, "5675", "items", "91"), ("", "legacy", None, None)]
    assert db.query("""
        SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
          FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = 'tds.webhook_events'::regclass AND i.indisprimary""") == \
        [(["org_id", "event_id"],)]
    assert db.query("SELECT attnotnull FROM pg_attribute WHERE attrelid = "
                    "'tds.webhook_events'::regclass AND attname = 'org_id'") == [(True,)]
    assert db.query("SELECT indexdef FROM pg_indexes WHERE schemaname = 'tds' AND "
                    "indexname = 'webhook_events_received_at_idx'") == \
        [("CREATE INDEX webhook_events_received_at_idx ON tds.webhook_events USING btree "
          "(received_at)",)]
    h = WriterHarness(procs, db)
    other = "60099999999"
    srcs = []
    for org in (ORG, other):
        src, f = rows_msg(org, items_sets([item(org, "91", ts(1), f"again {org}")]),
                          src="ev-5675")
        h.send(f)
        h.acked.discard(src)
        h.wait_acked([src])
        srcs.append(src)
    assert db.query("SELECT org_id, name FROM zoho.items") == [(other, f"again {other}")]
    assert db.query("SELECT org_id FROM tds.webhook_events WHERE event_id = '5675' "
                    "ORDER BY org_id") == [(ORG,), (other,)]
    h.close()


def _id_collations(db):
    """{schema.table.column: collation} of every text column named *_id in
    zoho and tds."""
    return {k: v for k, v in db.query("""
        SELECT n.nspname || '.' || c.relname || '.' || a.attname, a.attcollation::regcollation::text
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('zoho', 'tds') AND c.relkind = 'r' AND a.attnum > 0
           AND NOT a.attisdropped AND a.atttypid = 'text'::regtype AND a.attname LIKE '%%\\_id'""")}


def test_migration_022_gives_ids_the_c_collation(procs, db):
    """022 makes every id column COLLATE "C" and keeps every row and
    constraint; a table with a user's view on an id is left as it was, named
    by `migrate` and the writer at start, and converted by
    tds.collate_ids() once the view is gone. Names keep the database's
    collation; a user's own text column still joins an id."""
    env = {"TDS_DATABASE_URL": db.url}
    _database_at(db, 21)
    db.execute("INSERT INTO zoho.items (org_id, item_id, is_detail, raw, name) "
               "SELECT %s, i::text, true, '{}', 'صنف ' || i FROM generate_series(1, 300) i", ORG)
    db.execute("INSERT INTO zoho.item_stock (org_id, item_id, warehouse_id, stock_on_hand) "
               "SELECT %s, i::text, w::text, i FROM generate_series(1, 300) i, "
               "generate_series(1, 2) w", ORG)
    db.execute("INSERT INTO tds.webhook_events (event_id, org_id, entity, zoho_id, applied_at) "
               "VALUES ('ev-1', %s, 'items', '7', now())", ORG)
    db.execute("CREATE VIEW public.my_items AS SELECT org_id, item_id, name FROM zoho.items")
    db.execute("CREATE TABLE public.my_picks (item_id text)")
    db.execute("INSERT INTO public.my_picks VALUES ('7'), ('250'), ('none')")
    before = _id_collations(db)
    assert before and set(before.values()) == {'"default"'}, before

    r = procs.run("tds-writer", ["migrate"], env=env)
    # every migration applied: the release's own count
    n = len([f for f in os.listdir(os.path.join(os.path.dirname(__file__), "..", "..", "writer",
                                                "migrations")) if re.match(r"\d{3}_.*\.sql$", f)])
    assert f"up to date (version {n})" in r.stdout, r.stdout
    assert "1 table (zoho.items) keeps the database's collation for its ids" in r.stderr, r.stderr
    after = _id_collations(db)
    # and the ids later migrations add (026: a document's location; 027: the stock queue's)
    assert set(after) - set(before) == {"zoho.invoices.location_id", "zoho.sales_orders.location_id",
                                        "tds.stock_refresh.org_id", "tds.stock_refresh.item_id"}
    assert set(before) <= set(after)
    held = {k for k in after if k.startswith("zoho.items.")}
    assert held and {after[k] for k in held} == {'"default"'}
    assert {v for k, v in after.items() if k not in held} == {'"C"'}, after
    assert db.query("SELECT count(*) FROM zoho.items") == [(300,)]
    assert db.query("SELECT count(*), sum(stock_on_hand) FROM zoho.item_stock") == [(600, 90300)]
    assert db.query("SELECT count(*) FROM pg_constraint WHERE conrelid = "
                    "'zoho.item_stock'::regclass AND contype = 'f'") == [(1,)]
    # a C id against a default-collation column: the explicit collation wins
    assert db.query("SELECT p.item_id, count(*) FROM public.my_picks p JOIN zoho.item_stock s "
                    "ON s.item_id = p.item_id GROUP BY 1 ORDER BY 1") == [("250", 2), ("7", 2)]
    assert db.query("SELECT attcollation::regcollation::text FROM pg_attribute WHERE attrelid = "
                    "'zoho.items'::regclass AND attname = 'name'") == [('"default"',)]

    # the writer says it at start too, and writes as before
    h = WriterHarness(procs, db)
    assert "1 table (zoho.items) keeps the database's collation" in h.proc.stderr_text()
    h.close()

    db.execute("DROP VIEW public.my_items")
    assert db.query("SELECT * FROM tds.collate_ids()") == []
    assert set(_id_collations(db).values()) == {'"C"'}
    assert db.query("SELECT count(*) FROM zoho.items i JOIN zoho.item_stock s "
                    "USING (org_id, item_id)") == [(600,)]
    r = procs.run("tds-writer", ["migrate"], env=env)
    assert "keeps the database's collation" not in r.stderr, r.stderr
    h = WriterHarness(procs, db)
    src, f = rows_msg(ORG, items_sets([item(ORG, "301", ts(1), "صنف جديد")]))
    h.send(f)
    h.wait_acked([src])
    assert "keeps the database's collation" not in h.proc.stderr_text()
    h.close()
    assert db.query("SELECT name FROM zoho.items WHERE item_id = '301'") == [("صنف جديد",)]


def test_list_only_sweep_reads_an_index_not_the_table(procs, db):
    """The fetcher's every-10-s look for rows stored only in list form must
    not scan an organization's rows: with 20,000 detail items it is an index
    probe on the partial list-only index (schema 004)."""
    procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": db.url})
    db.execute("INSERT INTO zoho.items (org_id, item_id, is_detail, raw, name) "
               "SELECT '60001', i::text, true, '{}', 'item ' || i FROM generate_series(1, 20000) i")
    db.execute("INSERT INTO zoho.items (org_id, item_id, is_detail, synced_at) "
               "VALUES ('60001', 'listed', false, now() - interval '1 hour')")
    db.execute("ANALYZE zoho.items")
    # the query fetcher/store.c runs (tds_store_list_only_ids)
    sql = ("SELECT item_id FROM zoho.items WHERE org_id = '60001' AND deleted_at IS NULL "
           "AND NOT is_detail AND synced_at < to_timestamp(%s::double precision / 1000) LIMIT 200")
    now_ms = int(time.time() * 1000)
    plan = "\n".join(r[0] for r in db.query("EXPLAIN " + sql, now_ms))
    assert "items_list_only_idx" in plan and "Seq Scan" not in plan, plan
    assert db.query(sql, now_ms) == [("listed",)]


def test_a_database_not_in_utf8_is_refused_before_anything_is_created(procs, pg):
    """Zoho's text (Arabic names) needs UTF8: on a LATIN1 or SQL_ASCII
    database `migrate` and the writer stop with what to do, and create
    nothing."""
    for enc in ("LATIN1", "SQL_ASCII"):
        name = f"latin_{enc.lower()}_{os.getpid()}"
        c = psycopg2.connect(pg.dsn())
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} ENCODING '{enc}' LC_COLLATE 'C' LC_CTYPE 'C' "
                        "TEMPLATE template0")
        try:
            r = procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": pg.url(name)},
                          check=False)
            assert r.returncode == 1, (r.stdout, r.stderr)
            assert f"database {name} is encoded in {enc}; Zoho's text needs UTF8" in r.stderr, \
                r.stderr
            w = procs.spawn("tds-writer", env={"TDS_DATABASE_URL": pg.url(name)}, ready=None)
            wait_until(lambda: w.p.poll() is not None, 20, "the writer refusing to run")
            assert w.p.returncode == 1 and "is encoded in" in w.stderr_text(), w.stderr_text()
            d = Database(pg, name)
            assert d.query("SELECT count(*) FROM pg_namespace WHERE nspname IN ('tds', 'zoho')") \
                == [(0,)]
        finally:
            with c.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            c.close()


def test_concurrent_writers_migrate_once(procs, db):
    hs = [WriterHarness(procs, db, label=f"w{i}", ready=None) for i in range(3)]
    for h in hs:
        h.proc.ready = "readyz"
        h.proc.wait_ready()
    assert db.query("SELECT count(*) FROM tds.schema_migrations") == [(len(MIGRATIONS),)]
    for h in hs:
        h.close()


def test_schema_mismatch_refuses_to_start(procs, db):
    procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": db.url})
    db.execute("ALTER TABLE zoho.items DROP COLUMN sku")
    r = procs.run("tds-writer", [], env={"TDS_DATABASE_URL": db.url,
                                         "TDS_ADMIN_LISTEN": "127.0.0.1:0",
                                         "TDS_WRITER_BIND": "tcp://127.0.0.1:0",
                                         "TDS_ACK_BIND": "tcp://127.0.0.1:0"},
                  check=False, timeout=30)
    assert r.returncode == 1
    assert "tds-writer: column zoho.items.sku is missing from the database" in r.stderr


def test_a_writer_whose_batches_keep_failing_says_so_on_readyz(procs, db):
    """A batch that fails with the database reachable (a schema or
    permission problem; data errors are split out and rejected) is retried
    for ever, and the writer answered /readyz 200 all the while: processors
    went on pushing to it and no alert named it. Past
    TDS_WRITER_UNREADY_AFTER_S it is not ready, with the error; once a
    batch commits it is ready again."""
    h = WriterHarness(procs, db, env={"TDS_WRITER_UNREADY_AFTER_S": "2"})
    try:
        src, frame = rows_msg(ORG, items_sets([item(ORG, "3100000000000000001", ts(1), "one")]))
        h.send(frame)
        h.wait_acked([src])
        db.execute("ALTER TABLE zoho.items RENAME COLUMN sku TO sku_away")
        src, frame = rows_msg(ORG, items_sets([item(ORG, "3100000000000000002", ts(2), "two")]))
        h.send(frame)

        def reason():
            st, body = http_get(h.proc.admin_url + "/readyz")
            return body if st == 503 and "batches failing for" in body else None
        body = wait_until(reason, 15, "readyz 503 naming the failing batches")
        assert "sku" in body, body
        assert src not in h.acked
        db.execute("ALTER TABLE zoho.items RENAME COLUMN sku_away TO sku")
        h.wait_acked([src])
        wait_until(h.ready, 10, "ready again once a batch commits")
        assert "batches commit again after" in h.proc.stderr_text()
    finally:
        h.close()


def test_many_column_lists_start_the_session_over_and_say_so(writer, db):
    """List pages carry whichever fields Zoho gave, and each column list
    gets a staging table of its own in the writer's session, each holding
    some of the backend's memory. Past 256 the writer reconnects to drop
    them: every row still lands, and the log says why it reconnected."""
    opt = ["unit", "description", "item_type", "product_type", "brand", "manufacturer",
           "tax_name", "upc", "ean"]
    base = ["org_id", "item_id", "modified_time", "raw", "content_hash", "is_detail"]
    ids = [str(3200000000000000000 + k) for k in range(64)]
    srcs = []
    # a group is staged when it updates 64 rows or more (smaller ones go as
    # arrays, new keys by COPY): 64 items, then 300 newer versions of them,
    # each page with another column list
    for i in range(301):
        cols = base + [c for b, c in enumerate(opt) if i >> b & 1]
        rows = [[ORG, iid, ts(1 + i // 60, i % 60), json.dumps({"item_id": iid, "v": i}),
                 f"{i:016x}{k:016x}", "false"] + [f"v{i}"] * (len(cols) - len(base))
                for k, iid in enumerate(ids)]
        src, frame = rows_msg(ORG, [rowset("items", LIST, cols, rows)], mode="full", run="run-l",
                              page=i + 1)
        srcs.append(src)
        writer.send(frame)
    writer.wait_acked(srcs, timeout=120)
    # the count is looked at when a batch starts: one more
    src, frame = rows_msg(ORG, items_sets([item(ORG, "3300000000000000001", ts(1), "after")]))
    writer.send(frame)
    writer.wait_acked([src])
    assert db.query("SELECT count(*), min(raw->>'v'), max(raw->>'v') FROM zoho.items "
                    "WHERE org_id = %s AND item_id LIKE '32%%'", ORG) == [(64, "300", "300")]
    assert "staging tables in this database session" in writer.proc.stderr_text()


def test_bad_config_is_one_line(procs):
    r = procs.run("tds-writer", [], env={"TDS_DATABASE_URL": "x",
                                         "TDS_WRITER_BATCH_MAX_ROWS": "abc"}, check=False)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        r.stderr.strip().splitlines()[0]] and "TDS_WRITER_BATCH_MAX_ROWS" in r.stderr
    env = dict(os.environ)
    env.pop("TDS_DATABASE_URL", None)
    r = procs.run("tds-writer", ["--print-config"], env={"TDS_DATABASE_URL": "postgresql://u:pw@h/d"})
    assert "TDS_DATABASE_URL=********" in r.stdout and "pw" not in r.stdout
    for args in (["status", "--help"], ["alerts", "--help"], ["alerts", "list", "-h"]):
        r = procs.run("tds-writer", args, check=False)   # was "unexpected argument", exit 2
        assert r.returncode == 0 and r.stdout.startswith("Usage: tds-writer"), (args, r)
    # the fetcher's subcommands print their usage without any setting (they
    # said "missing required setting TDS_DATABASE_URL" and exited 2)
    for args, want, rc in ((["auth", "--help"], "usage: tds-fetcher auth exchange", 0),
                           (["auth", "exchange", "--help"], "usage: tds-fetcher auth exchange", 0),
                           (["auth", "status", "-h"], "usage: tds-fetcher auth status", 0),
                           (["sync", "--help"], "usage: tds-fetcher sync", 0),
                           (["sync", "--org", "1", "-h"], "usage: tds-fetcher sync", 0),
                           (["auth"], "usage: tds-fetcher auth exchange", 2)):
        r = procs.run("tds-fetcher", args, env={"TDS_DATABASE_URL": "", "TDS_CONFIG": ""},
                      check=False)
        assert r.returncode == rc and r.stdout.startswith(want) and r.stderr == "", (args, r)
    # files that cannot be read: said as such ("(line -1)"; a folder was
    # "'[' or '{' expected near end of file")
    folder = os.path.dirname(os.path.abspath(__file__))
    for var, path, why in (("TDS_ALERT_RULES", "/nonexistent/rules.json",
                            "unable to open /nonexistent/rules.json: No such file or directory"),
                           ("TDS_ALERT_RULES", folder, "a folder, not a file"),
                           ("TDS_CONFIG", folder, "a folder, not a file")):
        r = procs.run("tds-writer", [], env={"TDS_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
                                             "TDS_ADMIN_LISTEN": "127.0.0.1:0", var: path},
                      check=False, timeout=30)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (var, path, r.stderr)
        assert f"invalid {var}" in r.stderr and why in r.stderr and "line -1" not in r.stderr, \
            (var, path, r.stderr)


def test_commands_say_what_is_wrong_with_the_database_in_one_line(procs, db, tmp_path):
    """A TDS_DATABASE_URL libpq cannot read let the writer and the fetcher
    start and retry it for ever (ready never, alive always); it now stops
    start-up, as any bad setting does. The commands that read the schema
    printed libpq's three lines ("relation ... does not exist", LINE 1, ^)
    on a database never migrated; they now say to run the migration."""
    cfg = tmp_path / "orgs.json"
    cfg.write_text(json.dumps({"organizations": [
        {"org_id": "60001", "client_id": "c", "client_secret": "s"}]}))
    for stage in ("tds-writer", "tds-fetcher"):
        for url, why in (("host=127.0.0.1 garbage=1", 'invalid connection option "garbage"'),
                         ("postgresql://u:s3cr%et@h/d", 'invalid percent-encoded token: "..."'),
                         ("host=h password=abc hunter2", 'missing "..." after "..."')):
            r = procs.run(stage, [], env={"TDS_DATABASE_URL": url, "TDS_CONFIG": str(cfg),
                                          "TDS_ADMIN_LISTEN": "127.0.0.1:0"},
                          check=False, timeout=30)
            assert r.returncode == 2, (stage, r.returncode, r.stderr[-1000:])
            assert r.stderr.count("\n") == 1 and f"{stage}: invalid TDS_DATABASE_URL: " \
                in r.stderr and why in r.stderr, (stage, r.stderr)
            assert "s3cr" not in r.stderr and "hunter2" not in r.stderr, r.stderr
    # a plain database name is one (libpq's PGHOST and the like say where)
    pgenv = {"PGHOST": "127.0.0.1", "PGPORT": str(db.cluster.port), "PGUSER": db.cluster.superuser}
    r = procs.run("tds-writer", ["status"], env=dict(pgenv, TDS_DATABASE_URL=db.name), check=False,
                  timeout=30)
    assert r.returncode == 1 and "run `tds-writer migrate` first" in r.stderr, r.stderr
    env = {"TDS_DATABASE_URL": db.dsn, "TDS_CONFIG": str(cfg)}
    for stage, args in (("tds-writer", ["status"]), ("tds-writer", ["alerts", "list"]),
                        ("tds-fetcher", ["auth", "status"]),
                        ("tds-fetcher", ["sync", "--org", "60001"])):
        r = procs.run(stage, args, env=env, check=False, timeout=30)
        assert r.returncode == 1, (stage, args, r.returncode, r.stdout, r.stderr)
        assert r.stderr == f"{stage}: the database has no tds schema yet: run `tds-writer " \
            "migrate` first (the writer also applies it at start)\n", (stage, args, r.stderr)
        assert r.stdout == "", (stage, args, r.stdout)
    r = procs.run("tds-fetcher", ["auth", "status", "--help"], env=env, check=False)
    assert r.returncode == 0 and r.stdout.startswith("usage: tds-fetcher auth status"), r
    r = procs.run("tds-fetcher", ["auth", "status", "now"], env=env, check=False)
    assert r.returncode == 2 and "unexpected argument 'now'" in r.stderr, r


def test_a_bad_organizations_file_does_not_print_its_secrets(procs, db, tmp_path):
    """The alert engine reads TDS_CONFIG for each organization's schedule; a
    syntax error inside an inline secret used to be reported with the
    secret's first characters (jansson's "near" token)."""
    bad = tmp_path / "orgs.json"
    bad.write_text('{"organizations": [{"org_id": "1", "client_id": "c", '
                   '"client_secret": "s3cr3tPART\\q-rest"}]}')
    r = procs.run("tds-writer", [], env={"TDS_DATABASE_URL": db.dsn, "TDS_CONFIG": str(bad),
                                         "TDS_ADMIN_LISTEN": "127.0.0.1:0"},
                  check=False, timeout=30)
    print(r.stderr.strip())
    assert r.returncode != 0
    assert "invalid TDS_CONFIG" in r.stderr and "invalid escape" in r.stderr
    assert "s3cr3t" not in r.stderr


# ------------------------------------------------------------- the stream

def test_stream_lands_exactly(writer, db):
    expected, srcs = {}, []
    for page in range(10):
        recs = []
        for i in range(50):
            n = page * 50 + i
            iid = str(2000000000000000000 + n)
            name = f"صنف {n}\ttab\\slash\nline" if n % 7 == 0 else f"Item {n}"
            rate = f"{n}.25"
            recs.append(item(ORG, iid, ts(n % 60), name, sku=f"SKU-{n}", rate=rate,
                             stock=[("w1", str(n)), ("w2", "1.5")]))
            expected[iid] = (name, f"SKU-{n}", rate)
        src, frame = rows_msg(ORG, items_sets(recs), mode="full", run="run-1", page=page + 1)
        srcs.append(src)
        writer.send(frame)
    writer.wait_acked(srcs)
    got = items_table(db, "item_id, name, sku, rate::text")
    assert got == expected
    assert db.query("SELECT count(*), count(DISTINCT item_id) FROM zoho.item_stock") == [(1000, 500)]
    assert db.query("SELECT count(*) FROM zoho.items WHERE raw->>'item_id' = item_id "
                    "AND is_detail AND deleted_at IS NULL") == [(500,)]
    run = db.query("SELECT status, pages_written, records_written, records_rejected "
                   "FROM tds.sync_runs WHERE run_id = 'run-1'")
    assert run == [("running", 10, 500, 0)]
    assert writer.proc.metric("tds_writer_rows_written_total", {"table": "items"}) == 500
    assert writer.proc.metric("tds_writer_acks_sent_total") >= 1
    assert writer.proc.metric("tds_writer_db_up") == 1


def test_out_of_order_versions_end_at_newest(writer, db):
    versions = [(ts(3), "v3"), (ts(1), "v1"), (ts(2), "v2")]
    srcs = []
    for mtime, name in versions:
        src, frame = rows_msg(ORG, items_sets([item(ORG, "1", mtime, name)]))
        srcs.append(src)
        writer.send(frame)
    # Several versions of one record inside one message and one batch.
    recs = [item(ORG, "2", ts(m), f"v{m}") for m in (5, 9, 2, 7)]
    src, frame = rows_msg(ORG, items_sets(recs))
    srcs.append(src)
    writer.send(frame)
    writer.wait_acked(srcs)
    got = items_table(db, "item_id, name, modified_time")
    assert got["1"][0] == "v3"
    assert got["2"][0] == "v9"
    # An older version afterwards changes nothing.
    xmin = db.query("SELECT xmin::text FROM zoho.items WHERE item_id = '1'")
    src, frame = rows_msg(ORG, items_sets([item(ORG, "1", ts(0), "v0")]))
    writer.send(frame)
    writer.wait_acked([src])
    assert db.query("SELECT xmin::text FROM zoho.items WHERE item_id = '1'") == xmin


def test_same_modified_time_the_later_observed_version_wins(writer, db):
    """Zoho keeps whole seconds: two changes in one second share modified_time.
    The version observed later (here pages, fetched) is the newer one,
    whatever order the writer gets them in; unknown times fall back to
    arrival order. (A webhook's version counts as observed at the latest at
    the end of its modified_time's second:
    test_a_late_webhook_neither_revives_nor_outlives_a_delete.)"""
    t = ts(4)

    def send(item_id, name, observed, stock=None):
        src, frame = rows_msg(ORG, items_sets([item(ORG, item_id, t, name, stock=stock)]),
                              mode="fetch", received_ms=observed)
        writer.send(frame)
        writer.wait_acked([src])

    def name_of(item_id):
        return db.query("SELECT name, observed_at IS NOT NULL FROM zoho.items "
                        "WHERE item_id = %s", item_id)[0]

    base = 1_790_000_000_000
    send("1", "newer", base + 2000, stock=[("w1", "5")])
    send("1", "older", base + 1000, stock=[("w1", "9")])  # a resent page from before
    assert name_of("1") == ("newer", True)
    assert stock_of(db, "1") == [("w1", "5")]
    send("1", "newest", base + 3000)
    assert name_of("1") == ("newest", True)
    assert db.query("SELECT observed_at = to_timestamp(%s / 1000.0) FROM zoho.items "
                    "WHERE item_id = '1'", base + 3000) == [(True,)]
    # both in one message: the later observed wins inside the batch too
    recs = [item(ORG, "2", t, "late"), item(ORG, "2", t, "early")]
    s1, f1 = rows_msg(ORG, items_sets([recs[1]]), mode="fetch", received_ms=base + 1000)
    s2, f2 = rows_msg(ORG, items_sets([recs[0]]), mode="fetch", received_ms=base + 2000)
    writer.send(f2)
    writer.send(f1)
    writer.wait_acked([s1, s2])
    assert name_of("2") == ("late", True)
    # a message that does not say when it was observed: arrival order, as before
    send("3", "first", 0)
    send("3", "second", 0)
    assert name_of("3") == ("second", False)
    # the fast path (a group of 64+ new and existing keys) keeps the same rule
    many = [item(ORG, str(500 + i), t, f"fresh{i}") for i in range(80)]
    src, frame = rows_msg(ORG, items_sets(many), mode="fetch", received_ms=base + 5000)
    writer.send(frame)
    writer.wait_acked([src])
    stale = [item(ORG, str(500 + i), t, f"stale{i}") for i in range(80)]
    src, frame = rows_msg(ORG, items_sets(stale), mode="fetch", received_ms=base + 4000)
    writer.send(frame)
    writer.wait_acked([src])
    assert db.query("SELECT count(*), count(observed_at) FROM zoho.items "
                    "WHERE name LIKE 'fresh%%'") == [(80, 80)]


def _stream(n_msgs=8, per=20, org=ORG):
    """Messages with many versions of 60 items, out of order. One (id, time)
    always has the same content, as in Zoho: which version wins is then
    decided by the guard alone, not by arrival order."""
    frames = []
    for m in range(n_msgs):
        recs = []
        for i in range(per):
            iid, minute = 5000 + (m * per + i) % 60, (m * 7 + i) % 60
            recs.append(item(org, str(iid), ts(minute), f"n{iid}-{minute}",
                             stock=[("w1", str(minute)), (f"w{minute % 3 + 2}", "2")]))
        frames.append(rows_msg(org, items_sets(recs)))
    return frames


def test_duplicate_stream_changes_nothing(writer, db):
    frames = _stream()
    for _, f in frames:
        writer.send(f)
    writer.wait_acked([s for s, _ in frames])
    before = db.query("SELECT item_id, xmin::text, synced_at, name FROM zoho.items ORDER BY 1")
    stock_before = db.query("SELECT item_id, warehouse_id, xmin::text FROM zoho.item_stock ORDER BY 1, 2")
    # The same rows again under new source ids (a replay after a lost ack).
    again = []
    for src, f in frames:
        import msgpack
        m = msgpack.unpackb(f, raw=False)
        m["src"] = src + "-again"
        again.append(m["src"])
        writer.send(msgpack.packb(m, use_bin_type=True))
    writer.wait_acked(again)
    assert db.query("SELECT item_id, xmin::text, synced_at, name FROM zoho.items ORDER BY 1") == before
    assert db.query("SELECT item_id, warehouse_id, xmin::text FROM zoho.item_stock "
                    "ORDER BY 1, 2") == stock_before


def test_deletes_set_deleted_at_and_newer_version_revives(writer, db):
    base = int(time.time() * 1000) - 60_000
    src1, f1 = rows_msg(ORG, items_sets([item(ORG, "7", ts(5), "seven", stock=[("w1", "1")]),
                                         item(ORG, "8", ts(5), "eight")]), received_ms=base)
    writer.send(f1)
    writer.wait_acked([src1])
    src2, f2 = rows_msg(ORG, [rowset("items", DELETE, ["org_id", "item_id"], [[ORG, "7"]]),
                              rowset("items", DELETE, ["org_id", "item_id", "modified_time"],
                                     [[ORG, "9", ts(6)]])], mode="webhook",
                        received_ms=base + 2000)
    writer.send(f2)
    writer.wait_acked([src2])
    got = items_table(db, "item_id, name, deleted_at IS NOT NULL")
    assert got["7"] == ("seven", True)      # kept, soft-deleted
    assert got["8"] == ("eight", False)
    assert got["9"] == (None, True)         # tombstone for a record never seen
    assert stock_of(db, "7") == [("w1", "1")]
    deleted_at = db.query("SELECT deleted_at FROM zoho.items WHERE item_id = '7'")
    # A repeated delete keeps the first deleted_at; a version older than the
    # tombstone stays out, though observed after the delete.
    src3, f3 = rows_msg(ORG, [rowset("items", DELETE, ["org_id", "item_id"], [[ORG, "7"]])],
                        received_ms=base + 2500)
    src4, f4 = rows_msg(ORG, items_sets([item(ORG, "9", ts(4), "nine-old")]),
                        received_ms=base + 3000)
    writer.send(f3)
    writer.send(f4)
    writer.wait_acked([src3, src4])
    assert db.query("SELECT deleted_at FROM zoho.items WHERE item_id = '7'") == deleted_at
    assert items_table(db, "item_id, name, deleted_at IS NOT NULL")["9"] == (None, True)
    # A newer version fetched after the delete undeletes.
    src5, f5 = rows_msg(ORG, items_sets([item(ORG, "7", ts(9), "seven again")]),
                        mode="fetch", received_ms=base + 4000)
    writer.send(f5)
    writer.wait_acked([src5])
    assert items_table(db, "item_id, name, deleted_at IS NOT NULL")["7"] == ("seven again", False)


def test_migration_007_clears_the_observed_at_of_rows_deleted_before_it(procs, db):
    """A row deleted before deletes were timed holds its last version's
    observed_at, earlier than the delete: 007 clears it, so a page fetched
    between the two and written late, at the same modified_time, does not
    revive the row (the rule the row was deleted under). Live rows keep
    theirs."""
    _database_at(db, 6)
    seen = "2026-01-05 10:00:00+00"
    for item_id, deleted in (("81", True), ("82", False)):
        db.execute("INSERT INTO zoho.items (org_id, item_id, modified_time, observed_at, "
                   "deleted_at, name) VALUES (%s, %s, %s, %s, "
                   + ("now()" if deleted else "NULL") + ", 'stored')",
                   ORG, item_id, ts(1), seen)
    procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": db.url})
    assert db.query("SELECT item_id, observed_at IS NULL FROM zoho.items ORDER BY 1") == \
        [("81", True), ("82", False)]
    h = WriterHarness(procs, db)
    late = 1767607200000 + 60_000  # a minute after the stored version was seen
    src, f = rows_msg(ORG, items_sets([item(ORG, "81", ts(1), "late page")]), received_ms=late)
    h.send(f)
    h.wait_acked([src])
    assert db.query("SELECT name, deleted_at IS NOT NULL FROM zoho.items WHERE item_id = '81'") \
        == [("stored", True)]
    h.close()


def test_migration_026_fills_the_new_columns_from_raw(procs, db):
    """026 adds columns for fields that were kept only in raw (percentage
    discounts, a document's location, a sales order line's delivered,
    cancelled, returned and backordered quantities, an item's totals, an
    address's codes). A record unchanged in Zoho is not written again, so
    the rows already stored get them from raw: headers from their own, lines
    and addresses from their parent's. A value that is no number stays NULL
    rather than stop the migration."""
    import json
    _database_at(db, 25)
    so = {"salesorder_id": "70", "discount": "12.5%", "location_id": "5001",
          "location_name": "الرياض",
          "line_items": [{"line_item_id": "L1", "discount": "10.00%", "quantity_delivered": 2,
                          "quantity_cancelled": "1", "quantity_returned": 0,
                          "quantity_backordered": "n/a"},
                         {"line_item_id": "L2", "discount": 5}]}
    db.execute("INSERT INTO zoho.sales_orders (org_id, salesorder_id, modified_time, raw, "
               "is_detail, discount) VALUES (%s, '70', %s, %s, true, NULL)",
               ORG, ts(1), json.dumps(so))
    for lid, pos in (("L1", 1), ("L2", 2)):
        db.execute("INSERT INTO zoho.sales_order_lines (org_id, salesorder_id, line_item_id, "
                   "position) VALUES (%s, '70', %s, %s)", ORG, lid, pos)
    inv = {"invoice_id": "80", "discount": 3, "line_items": "not a list"}
    db.execute("INSERT INTO zoho.invoices (org_id, invoice_id, modified_time, raw, is_detail) "
               "VALUES (%s, '80', %s, %s, true)", ORG, ts(1), json.dumps(inv))
    # a row with nothing to fill (a blank location, an amount) is not rewritten
    inv = {"invoice_id": "81", "discount": 3, "location_id": " "}
    db.execute("INSERT INTO zoho.invoices (org_id, invoice_id, modified_time, raw, is_detail) "
               "VALUES (%s, '81', %s, %s, true)", ORG, ts(1), json.dumps(inv))
    xmin = db.query("SELECT xmin::text FROM zoho.invoices WHERE invoice_id = '81'")
    it = {"item_id": "90", "committed_stock": 4, "actual_stock_on_hand": "7.50",
          "available_for_sale_stock": ""}
    db.execute("INSERT INTO zoho.items (org_id, item_id, modified_time, raw, is_detail) "
               "VALUES (%s, '90', %s, %s, true)", ORG, ts(1), json.dumps(it))
    ct = {"contact_id": "60", "billing_address": {"state_code": "RD", "country_code": "SA"},
          "shipping_address": {"city": "Jeddah"},
          "addresses": [{"address_id": "a1"}, {"state_code": "EP", "country_code": "SA"}]}
    db.execute("INSERT INTO zoho.contacts (org_id, contact_id, modified_time, raw, is_detail) "
               "VALUES (%s, '60', %s, %s, true)", ORG, ts(1), json.dumps(ct))
    for kind, pos in (("billing", 1), ("shipping", 1), ("other", 1), ("other", 2)):
        db.execute("INSERT INTO zoho.contact_addresses (org_id, contact_id, address_type, position) "
                   "VALUES (%s, '60', %s, %s)", ORG, kind, pos)
    procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": db.url})
    assert db.query("SELECT discount_percent::text, location_id, location_name "
                    "FROM zoho.sales_orders") == [("12.5", "5001", "الرياض")]
    assert db.query("SELECT line_item_id, discount_percent::text, quantity_delivered::text, "
                    "quantity_cancelled::text, quantity_returned::text, quantity_backordered "
                    "FROM zoho.sales_order_lines ORDER BY position") == \
        [("L1", "10.00", "2", "1", "0", None), ("L2", None, None, None, None, None)]
    assert db.query("SELECT invoice_id, discount_percent, location_id FROM zoho.invoices "
                    "ORDER BY 1") == [("80", None, None), ("81", None, None)]
    assert db.query("SELECT xmin::text FROM zoho.invoices WHERE invoice_id = '81'") == xmin
    assert db.query("SELECT committed_stock::text, actual_stock_on_hand::text, "
                    "available_for_sale_stock FROM zoho.items") == [("4", "7.50", None)]
    assert db.query("SELECT address_type, position, state_code, country_code "
                    "FROM zoho.contact_addresses ORDER BY 1, 2") == \
        [("billing", 1, "RD", "SA"), ("other", 1, None, None), ("other", 2, "EP", "SA"),
         ("shipping", 1, None, None)]


def test_documents_queue_the_stock_of_their_items(writer, db):
    """An invoice or sales order moves its items' stock without their own
    record changing: writing its lines queues those items in
    tds.stock_refresh (migration 027) for the fetcher to fetch again. Only
    items stored and live whose version was seen before the document's
    version (plus a minute); a document written again unchanged queues
    nothing; an item taken off a document is queued too, and a deleted
    document queues its items. Rows are only appended, so two writers
    naming one item do not wait for each other."""
    import hashlib
    now = int(time.time() * 1000)

    def send(sets, observed, entity="items"):
        src, frame = rows_msg(ORG, sets, mode="fetch", entity=entity, received_ms=observed)
        writer.send(frame)
        writer.wait_acked([src])

    def doc(table, id_col, lines_table, doc_id, mtime, items, version=""):
        raw = json.dumps({id_col: doc_id, "last_modified_time": mtime, "v": version,
                          "line_items": [{"item_id": i} for i in items]}, sort_keys=True)
        h = hashlib.sha256(raw.encode()).hexdigest()[:32]
        head = rowset(table, DETAIL, ["org_id", id_col, "modified_time", "raw", "content_hash",
                                      "is_detail"], [[ORG, doc_id, mtime, raw, h, "true"]])
        lines = rowset(lines_table, CHILD, ["org_id", id_col, "line_item_id", "position", "item_id"],
                       [[ORG, doc_id, f"{doc_id}-{k}", str(k + 1), i] for k, i in enumerate(items)])
        return [head, lines]

    def queued():
        return db.query("SELECT item_id, reason FROM tds.stock_refresh ORDER BY 1")

    # items seen 10 minutes ago; 7 is deleted; 8 is not stored at all
    stamp = lambda ms: datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S+0000")
    send(items_sets([item(ORG, i, stamp(now - 3_600_000), f"item {i}") for i in "1234567"]),
         now - 600_000)
    send([rowset("items", DELETE, ["org_id", "item_id"], [[ORG, "7"]])], now - 500_000)
    # an invoice changed now: its stored, live items are queued
    send(doc("invoices", "invoice_id", "invoice_lines", "100", stamp(now), ["1", "2", "7", "8"]),
         now, "invoices")
    assert queued() == [("1", "invoices 100"), ("2", "invoices 100")]
    db.execute("DELETE FROM tds.stock_refresh")
    # the same version again: not written, nothing queued
    send(doc("invoices", "invoice_id", "invoice_lines", "100", stamp(now), ["1", "2", "7", "8"]),
         now + 1000, "invoices")
    assert queued() == []
    # a document changed long before the items were seen: their versions count it
    send(doc("sales_orders", "salesorder_id", "sales_order_lines", "200",
             stamp(now - 900_000), ["3"]), now, "sales_orders")
    assert queued() == []
    # a new version without item 2 and with item 4: both moved
    send(doc("invoices", "invoice_id", "invoice_lines", "100", stamp(now + 2000), ["1", "4"],
             "v2"), now + 2000, "invoices")
    assert queued() == [("1", "invoices 100"), ("2", "invoices 100"), ("4", "invoices 100")]
    db.execute("DELETE FROM tds.stock_refresh")
    # a sales order deleted gives its stock back
    send([rowset("sales_orders", DELETE, ["org_id", "salesorder_id"], [[ORG, "200"]])],
         now + 3000, "sales_orders")
    assert queued() == [("3", "sales_orders 200")]
    # an item put off (Zoho refused it) gets a new row, due now, from the next document
    db.execute("UPDATE tds.stock_refresh SET queued_at = now() - interval '1 hour', "
               "attempts = 3, next_at = now() + interval '1 hour'")
    send(doc("invoices", "invoice_id", "invoice_lines", "100", stamp(now + 4000), ["3"], "v3"),
         now + 4000, "invoices")
    assert db.query("SELECT item_id, reason, queued_at > now() - interval '1 minute', attempts, "
                    "next_at IS NULL FROM tds.stock_refresh ORDER BY 1, 4") == \
        [("1", "invoices 100", True, 0, True), ("3", "invoices 100", True, 0, True),
         ("3", "sales_orders 200", False, 3, False), ("4", "invoices 100", True, 0, True)]

    # two writers' documents naming one item neither wait for nor block each other
    a, b = db.connect(), db.connect()
    try:
        a.autocommit = b.autocommit = False
        with a.cursor() as ca, b.cursor() as cb:
            cb.execute("SET lock_timeout = '2s'")
            for c, inv in ((ca, "300"), (cb, "301")):
                c.execute("INSERT INTO zoho.invoices (org_id, invoice_id, modified_time, raw, "
                          "is_detail) VALUES (%s, %s, now(), '{}', true)", (ORG, inv))
                c.execute("INSERT INTO zoho.invoice_lines (org_id, invoice_id, line_item_id, "
                          "position, item_id) VALUES (%s, %s, %s, 1, '5')", (ORG, inv, inv))
            b.commit()
            a.commit()
    finally:
        a.close()
        b.close()
    assert db.query("SELECT reason FROM tds.stock_refresh WHERE item_id = '5' ORDER BY 1") == \
        [("invoices 300",), ("invoices 301",)]


def test_a_fetcher_clock_ahead_of_zoho_widens_what_a_document_queues(writer, db):
    """The stock triggers compare an item's observed_at (the fetcher host's
    clock) with a document's modified_time (Zoho's), with a minute of slack.
    The owning fetcher records how far its clock runs ahead of Zoho's in
    tds.quota_use.clock_lead_s (migration 028) and the triggers add it: with
    the host 180 s ahead, a document changed 150 s (by Zoho's clock) before
    its items' version was seen by the host's is one the items may not count,
    and queues them. Before, nothing was queued and their stock stayed stale
    until the daily reconciliation. A lead below zero (the host behind) adds
    nothing."""
    import hashlib
    now = int(time.time() * 1000)
    stamp = lambda ms: datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S+0000")
    src, frame = rows_msg(ORG, items_sets([item(ORG, i, stamp(now - 3_600_000), f"item {i}")
                                           for i in ("41", "42")]),
                          mode="fetch", received_ms=now)
    writer.send(frame)
    writer.wait_acked([src])

    def invoice(doc_id, mtime_ms, items):
        raw = json.dumps({"invoice_id": doc_id, "last_modified_time": stamp(mtime_ms),
                          "line_items": [{"item_id": i} for i in items]}, sort_keys=True)
        h = hashlib.sha256(raw.encode()).hexdigest()[:32]
        sets = [rowset("invoices", DETAIL, ["org_id", "invoice_id", "modified_time", "raw",
                                            "content_hash", "is_detail"],
                       [[ORG, doc_id, stamp(mtime_ms), raw, h, "true"]]),
                rowset("invoice_lines", CHILD, ["org_id", "invoice_id", "line_item_id",
                                                "position", "item_id"],
                       [[ORG, doc_id, f"{doc_id}-{k}", str(k + 1), i]
                        for k, i in enumerate(items)])]
        src, frame = rows_msg(ORG, sets, mode="fetch", entity="invoices", received_ms=now)
        writer.send(frame)
        writer.wait_acked([src])

    def queued():
        got = db.query("SELECT item_id FROM tds.stock_refresh ORDER BY 1")
        db.execute("DELETE FROM tds.stock_refresh")
        return [r[0] for r in got]

    def lead(seconds):
        db.execute("INSERT INTO tds.quota_use (org_id, instance, saved_at, in_flight, done_at, "
                   "clock_lead_s) VALUES (%s, 'fetcher.t', now(), 0, '{}', %s) "
                   "ON CONFLICT (org_id) DO UPDATE SET clock_lead_s = EXCLUDED.clock_lead_s",
                   ORG, seconds)

    # no lead recorded: the minute alone, and 150 s is past it
    invoice("500", now - 150_000, ["41"])
    assert queued() == []
    lead(-30)
    invoice("501", now - 150_000, ["41"])
    assert queued() == []
    lead(180)
    invoice("502", now - 150_000, ["41", "42"])
    assert queued() == ["41", "42"]
    # a document older than the lead and the minute together: counted
    invoice("503", now - 300_000, ["42"])
    assert queued() == []


def test_a_delete_is_undone_only_by_a_version_observed_after_it(writer, db):
    """A delete carries no modified_time: when it was observed orders it
    against versions. A version observed before the delete (a page fetched
    while the delete webhook was on its way, or resent after an outage) stays
    out however new its modified_time; one observed after it brings the record
    back. Lone records (one round trip), two-record batches and the fast path
    (64+ stored keys) alike."""
    now = int(time.time() * 1000)

    def send(sets, observed):
        src, frame = rows_msg(ORG, sets, mode="fetch", received_ms=observed)  # pages
        writer.send(frame)
        writer.wait_acked([src])

    def delete(ids, observed):
        send([rowset("items", DELETE, ["org_id", "item_id"], [[ORG, i] for i in ids])],
             observed)

    def state(item_id):
        return db.query("SELECT name, deleted_at IS NOT NULL FROM zoho.items "
                        "WHERE item_id = %s", item_id)[0]

    # item 1 stored at T1, a delete received 3 s ago, then a page with T2 > T1
    # fetched 5 s ago (before the delete)
    send(items_sets([item(ORG, "1", ts(1), "one", stock=[("w1", "5"), ("w2", "6")])]),
         now - 20_000)
    delete(["1"], now - 3000)
    send(items_sets([item(ORG, "1", ts(2), "one-v2", stock=[("w1", "0")])]), now - 5000)
    assert state("1") == ("one", True)
    assert stock_of(db, "1") == [("w1", "5"), ("w2", "6")]
    assert db.query("SELECT observed_at = to_timestamp(%s / 1000.0) FROM zoho.items "
                    "WHERE item_id = '1'", now - 3000) == [(True,)]
    # a delete of an item never seen, then an older version of it
    delete(["2"], now - 3000)
    send(items_sets([item(ORG, "2", ts(1), "two")]), now - 5000)
    assert state("2") == (None, True)
    # both again in one message (two records: the two-trip way)
    send(items_sets([item(ORG, "1", ts(3), "one-v3"), item(ORG, "2", ts(3), "two-v3")]),
         now - 4000)
    assert state("1") == ("one", True) and state("2") == (None, True)
    # observed after the delete: back, even at the stored modified_time
    send(items_sets([item(ORG, "1", ts(1), "one-again", stock=[("w3", "7")])]), now - 1000)
    assert state("1") == ("one-again", False)
    assert stock_of(db, "1") == [("w3", "7")]
    send(items_sets([item(ORG, "2", ts(1), "two-again"), item(ORG, "3", ts(1), "three")]),
         now - 1000)
    assert state("2") == ("two-again", False)

    # the fast path's lookup asks the same guard
    ids = [str(600 + i) for i in range(80)]
    send(items_sets([item(ORG, i, ts(5), "stored") for i in ids]), now - 20_000)
    delete(ids, now - 3000)
    send(items_sets([item(ORG, i, ts(6), "before-delete") for i in ids]), now - 5000)
    assert db.query("SELECT count(*) FROM zoho.items WHERE item_id LIKE '6__' "
                    "AND name = 'stored' AND deleted_at IS NOT NULL") == [(80,)]
    send(items_sets([item(ORG, i, ts(5), "after-delete") for i in ids]), now - 1000)
    assert db.query("SELECT count(*) FROM zoho.items WHERE item_id LIKE '6__' "
                    "AND name = 'after-delete' AND deleted_at IS NULL") == [(80,)]

    # a delete that does not say when it was observed: a strictly newer
    # modified_time revives, as before deletes were timed
    delete(["3"], 0)
    assert db.query("SELECT observed_at FROM zoho.items WHERE item_id = '3'") == [(None,)]
    send(items_sets([item(ORG, "3", ts(1), "three-same")]), now)
    assert state("3") == ("three", True)
    send(items_sets([item(ORG, "3", ts(2), "three-newer")]), now - 10_000)
    assert state("3") == ("three-newer", False)


def test_a_delete_is_ordered_by_when_it_was_observed_in_both_directions(writer, db):
    """The rule of the test above, the other way: a delete observed before
    the stored version (resent late after an outage) leaves it live, and a
    second delete moves the deleted row's observed_at on, so a version
    observed between the two stays out. Inside one batch (versions run
    before deletes) the outcome is the one the two would have had in
    separate batches. Before, the delete won on every live row and a second
    delete changed nothing."""
    now = int(time.time() * 1000)

    def send(sets, observed):
        src, frame = rows_msg(ORG, sets, mode="fetch", received_ms=observed)  # pages
        writer.send(frame)
        writer.wait_acked([src])

    def delete_msg(ids, observed):
        return rows_msg(ORG, [rowset("items", DELETE, ["org_id", "item_id"],
                                     [[ORG, i] for i in ids])], received_ms=observed)

    def delete(ids, observed):
        src, frame = delete_msg(ids, observed)
        writer.send(frame)
        writer.wait_acked([src])

    def state(item_id):
        return db.query("SELECT name, deleted_at IS NOT NULL FROM zoho.items "
                        "WHERE item_id = %s", item_id)[0]

    def deletes_written():
        return writer.proc.metric("tds_writer_rows_written_total", {"table": "items"})

    # a delete observed before the stored version, arriving after it
    send(items_sets([item(ORG, "1", ts(2), "one", stock=[("w1", "5")])]), now - 1000)
    delete(["1"], now - 3000)
    assert state("1") == ("one", False)
    assert stock_of(db, "1") == [("w1", "5")]
    # observed after it, it deletes
    delete(["1"], now - 500)
    assert state("1") == ("one", True)

    # a second delete: the row stays deleted, its observed_at moves on, it is
    # not counted as written again; a version observed between the two stays out
    send(items_sets([item(ORG, "4", ts(1), "four")]), now - 20_000)
    delete(["4"], now - 10_000)
    before = deletes_written()
    deleted_at = db.query("SELECT deleted_at FROM zoho.items WHERE item_id = '4'")
    delete(["4"], now - 2000)
    assert deletes_written() == before
    assert db.query("SELECT deleted_at FROM zoho.items WHERE item_id = '4'") == deleted_at
    assert db.query("SELECT observed_at = to_timestamp(%s / 1000.0) FROM zoho.items "
                    "WHERE item_id = '4'", now - 2000) == [(True,)]
    send(items_sets([item(ORG, "4", ts(2), "four-between")]), now - 5000)
    assert state("4") == ("four", True)
    delete(["4"], now - 4000)   # an older second delete changes nothing
    assert db.query("SELECT observed_at = to_timestamp(%s / 1000.0) FROM zoho.items "
                    "WHERE item_id = '4'", now - 2000) == [(True,)]
    send(items_sets([item(ORG, "4", ts(2), "four-after")]), now - 1000)
    assert state("4") == ("four-after", False)

    # one batch: item 2's delete observed before its version, item 3's after
    t0 = now - 8000
    held = rows_msg(ORG, items_sets([item(ORG, "h", ts(1), "held")]))
    del2 = delete_msg(["2"], t0)
    new2 = rows_msg(ORG, items_sets([item(ORG, "2", ts(1), "two", stock=[("w2", "2")])]),
                    mode="fetch", received_ms=t0 + 1000)
    new3 = rows_msg(ORG, items_sets([item(ORG, "3", ts(1), "three")]), mode="fetch",
                    received_ms=t0)
    del3 = delete_msg(["3"], t0 + 1000)
    batches = writer.proc.metric("tds_writer_batches_total")
    writer.send_in_one_batch(db, held[1], [del2[1], new2[1], new3[1], del3[1]])
    writer.wait_acked([held[0], del2[0], new2[0], new3[0], del3[0]])
    assert writer.proc.metric("tds_writer_batches_total") == batches + 2
    print(f"item 2: {state('2')}, item 3: {state('3')}")
    assert state("2") == ("two", False)
    assert stock_of(db, "2") == [("w2", "2")]
    assert state("3") == ("three", True)


def test_a_late_webhook_neither_revives_nor_outlives_a_delete(writer, db):
    """A webhook's version shows only that Zoho had it in its modified
    time's second; its delivery may come late (Zoho's retry policies resend
    a failed one minutes after). It counted as observed when received, so an
    update retried after the delete brought the deleted record back, and a
    delete received after a version was made, but before that version's slow
    webhook, was undone by it. Now a webhook's version counts as observed at
    the end of its modified_time's second (when it arrived later); a page
    fetched after the delete still revives (Zoho had the record then). That
    second shows only that Zoho had the version at some moment of it: a
    delete observed inside it, in either order of writing, deleted the row
    only when observed after the version's own time (found by a longer run
    of test_chaos, a contact deleted in Zoho left live)."""
    t0 = (int(time.time()) - 120) * 1000

    def zt(ms):
        return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone(
            datetime.timedelta(hours=3))).strftime("%Y-%m-%dT%H:%M:%S+0300")

    def send(recs, observed, mode="webhook"):
        src, frame = rows_msg(ORG, items_sets(recs), mode=mode, received_ms=observed)
        writer.send(frame)
        writer.wait_acked([src])

    def delete(ids, observed):
        src, frame = rows_msg(ORG, [rowset("items", DELETE, ["org_id", "item_id"],
                                           [[ORG, i] for i in ids])], received_ms=observed)
        writer.send(frame)
        writer.wait_acked([src])

    def states(ids):
        return {r[0]: (r[1], r[2]) for r in db.query(
            "SELECT item_id, name, deleted_at IS NOT NULL FROM zoho.items "
            "WHERE item_id = ANY(%s)", list(ids))}

    for ids in (["1"], [str(700 + i) for i in range(80)]):  # a lone record, the fast path
        # v1 made at t0 (webhook at t0+1 s); v2 made at t0+2 s, its delivery
        # failed; the delete received at t0+3 s; v2's retry at t0+4 s
        send([item(ORG, i, zt(t0), "v1", stock=[("w1", "1")]) for i in ids], t0 + 1000)
        delete(ids, t0 + 3000)
        send([item(ORG, i, zt(t0 + 2000), "v2", stock=[("w1", "2")]) for i in ids], t0 + 4000)
        assert set(states(ids).values()) == {("v1", True)}, states(ids)   # it was ("v2", False)
        assert stock_of(db, ids[0]) == [("w1", "1")]
        # the same version in a page fetched after the delete: Zoho has it
        send([item(ORG, i, zt(t0 + 2000), "v2", stock=[("w1", "2")]) for i in ids], t0 + 5000,
             mode="fetch")
        assert set(states(ids).values()) == {("v2", False)}, states(ids)

    # v made at t0+20 s, its webhook slow (received t0+25 s); the delete was
    # received at t0+22 s but is written after v: the record is deleted
    send([item(ORG, "2", zt(t0 + 20_000), "two")], t0 + 25_000)
    delete(["2"], t0 + 22_000)
    assert states(["2"]) == {"2": ("two", True)}      # it stayed live
    # a change made after the delete was observed (the delete was wrong, or
    # Zoho has the record again): its webhook revives it
    send([item(ORG, "2", zt(t0 + 30_000), "two again")], t0 + 31_000)
    assert states(["2"]) == {"2": ("two again", False)}
    # v made at t0+50 s, its delivery failed; the delete received at
    # t0+50.5 s, in v's second; v's retry at t0+52 s. Counted as observed at
    # t0+50.999 s, v was "after" the delete and brought the record back; that
    # second shows only that Zoho had v at some moment of it
    for ids in (["4"], [str(900 + i) for i in range(80)]):
        send([item(ORG, i, zt(t0 + 45_000), "four") for i in ids], t0 + 45_200)
        delete(ids, t0 + 50_500)
        send([item(ORG, i, zt(t0 + 50_000), "four v2") for i in ids], t0 + 52_000)
        assert set(states(ids).values()) == {("four", True)}, states(ids)  # was ("four v2", False)
        # a page fetched after that second ended shows Zoho had it: it revives
        send([item(ORG, i, zt(t0 + 50_000), "four v2") for i in ids], t0 + 51_000, mode="fetch")
        assert set(states(ids).values()) == {("four v2", False)}, states(ids)
    # the other order: v made at t0+60 s and its webhook received at t0+60.3 s
    # is written first; the delete, observed at t0+60.2 s (its webhook came
    # first but is written late), was made after v for all that second
    # tells: it deletes (v, taken as observed at t0+60.3 s, kept the record)
    for ids in (["5"], [str(1000 + i) for i in range(80)]):
        send([item(ORG, i, zt(t0 + 60_000), "five") for i in ids], t0 + 60_300)
        delete(ids, t0 + 60_200)
        assert set(states(ids).values()) == {("five", True)}, states(ids)
    # but not one observed before v's second began (v is newer)
    send([item(ORG, "6", zt(t0 + 70_000), "six")], t0 + 70_300)
    delete(["6"], t0 + 69_900)
    assert states(["6"]) == {"6": ("six", False)}
    # a webhook received within its second keeps the receipt time
    send([item(ORG, "3", zt(t0 + 40_000), "three")], t0 + 40_300)
    assert db.query("SELECT observed_at = to_timestamp(%s / 1000.0) FROM zoho.items "
                    "WHERE item_id = '3'", t0 + 40_300) == [(True,)]


def test_a_full_notify_queue_does_not_reject_the_records(writer, db):
    """PostgreSQL refuses a COMMIT that carries a NOTIFY while its 8 GB
    notification queue is full (a LISTEN session that does not read):
    SQLSTATE 54000 at COMMIT. That is not the records' fault. They are
    written again at once without the notification, and tds_changes is left
    out for a while. Before, the writer took 54000 for bad data: every
    record went to tds.rejected, the message was acked and its page recorded
    as applied, and zoho.items stayed empty. The full queue is stood in for
    by a deferred trigger that raises PostgreSQL's error at the first
    COMMIT."""
    db.execute("CREATE SEQUENCE public.nq_commits")
    db.execute("""CREATE FUNCTION public.nq_full() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('public.nq_commits') = 1 THEN
                RAISE EXCEPTION 'too many notifications in the NOTIFY queue'
                    USING ERRCODE = '54000';
            END IF;
            RETURN NULL;
        END $$""")
    db.execute("CREATE CONSTRAINT TRIGGER nq_full AFTER INSERT ON zoho.items "
               "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.nq_full()")
    try:
        recs = [item(ORG, str(900 + i), ts(1), f"nq {i}", stock=[("w1", "1")]) for i in range(20)]
        src, frame = rows_msg(ORG, items_sets(recs), mode="full", run="r-nq", page=1,
                              records_in=20)
        writer.send(frame)
        writer.wait_acked([src])
        print(f"\n{writer.proc.stderr_text().count('NOTIFY queue is full')} warning line(s)")
        assert db.query("SELECT count(*) FROM zoho.items WHERE item_id LIKE '9__'") == [(20,)]
        assert db.query("SELECT count(*) FROM zoho.item_stock WHERE item_id LIKE '9__'") == [(20,)]
        assert db.query("SELECT count(*) FROM tds.rejected") == [(0,)]
        assert writer.proc.metric("tds_writer_notifies_dropped_total") >= 1
        assert "NOTIFY queue is full" in writer.proc.stderr_text()
        # while notifications are left out, a lone record counts as dropped
        # only when it is written: an older version the guard refuses is not
        dropped = writer.proc.metric("tds_writer_notifies_dropped_total")
        for mtime, counted in ((ts(0), 0), (ts(2), 1)):
            src, frame = rows_msg(ORG, items_sets([item(ORG, "900", mtime, "lone")]))
            writer.send(frame)
            writer.wait_acked([src])
            assert writer.proc.metric("tds_writer_notifies_dropped_total") == dropped + counted, \
                (mtime, writer.proc.metric("tds_writer_notifies_dropped_total"), dropped)
            dropped += counted
        assert "lone" in items_table(db, "item_id, name")["900"]
    finally:
        db.execute("DROP TRIGGER nq_full ON zoho.items")


def test_children_follow_their_parent(writer, db):
    def send(recs, detail=True):
        src, f = rows_msg(ORG, items_sets(recs, detail=detail))
        writer.send(f)
        writer.wait_acked([src])

    send([item(ORG, "1", ts(10), "a", stock=[("w1", "1"), ("w2", "2"), ("w3", "3")])])
    assert stock_of(db, "1") == [("w1", "1"), ("w2", "2"), ("w3", "3")]
    send([item(ORG, "1", ts(11), "b", stock=[("w2", "5"), ("w4", "6")])])
    assert stock_of(db, "1") == [("w2", "5"), ("w4", "6")]
    # Older detail: neither the parent nor its children change.
    send([item(ORG, "1", ts(9), "old", stock=[("w9", "9")])])
    assert stock_of(db, "1") == [("w2", "5"), ("w4", "6")]
    # Identical detail (same hash): nothing is rewritten.
    xmins = db.query("SELECT xmin::text FROM zoho.item_stock WHERE item_id = '1' ORDER BY 1")
    send([item(ORG, "1", ts(11), "b", stock=[("w2", "5"), ("w4", "6")])])
    assert db.query("SELECT xmin::text FROM zoho.item_stock WHERE item_id = '1' ORDER BY 1") == xmins
    # A LIST row at the same time never overrides the detail...
    send([item(ORG, "1", ts(11), "listed", detail=False)], detail=False)
    assert items_table(db, "item_id, name, is_detail")["1"] == ("b", True)
    # ...and a newer LIST row updates the listed fields, keeps children and merges raw.
    send([item(ORG, "1", ts(12), "listed-newer", detail=False,
               extra={"list_only": "x"})], detail=False)
    row = db.query("SELECT name, is_detail, raw FROM zoho.items WHERE item_id = '1'")[0]
    assert row[0] == "listed-newer" and row[1] is False
    assert row[2]["list_only"] == "x" and "warehouses" in row[2]
    assert stock_of(db, "1") == [("w2", "5"), ("w4", "6")]
    # A detail at the same time as that LIST completes the record.
    send([item(ORG, "1", ts(12), "detail-12", stock=[("w7", "7")])])
    assert items_table(db, "item_id, name, is_detail")["1"] == ("detail-12", True)
    assert stock_of(db, "1") == [("w7", "7")]
    # Detail with no stock at all empties the children.
    send([item(ORG, "1", ts(13), "detail-13", stock=[])])
    assert stock_of(db, "1") == []


@pytest.mark.parametrize("n", [1, 3, 4, 5, 9])
def test_children_replaced_for_each_written_parent(writer, db, n):
    """One message updating n stored parents replaces the children of each
    one it wrote: up to 4 by one scalar DELETE each, more by one over arrays
    (apply.c, WKEYS_ONE). A parent the guard refuses keeps its children."""
    def send(recs):
        src, f = rows_msg(ORG, items_sets(recs))
        writer.send(f)
        writer.wait_acked([src])

    ids = [str(500 + i) for i in range(n)]
    send([item(ORG, i, ts(10), "a", stock=[("w1", "1"), ("w2", "2")]) for i in ids + ["599"]])
    newer = [item(ORG, i, ts(11), "b", stock=[("w3", str(k))]) for k, i in enumerate(ids)]
    send(newer + [item(ORG, "599", ts(9), "older", stock=[("w9", "9")])])
    for k, i in enumerate(ids):
        assert stock_of(db, i) == [("w3", str(k))], i
    assert stock_of(db, "599") == [("w1", "1"), ("w2", "2")]
    assert items_table(db, "item_id, name")["599"] == ("a",)


@pytest.mark.parametrize("lone", [True, False])
def test_a_key_twice_in_a_records_child_rows_rejects_that_record(writer, db, lone):
    """Two stock rows of one warehouse in a stored item's new version: its
    child insert breaks the child table's key. That record is rejected,
    alone, and keeps its stored version and stock; the record beside it in
    the message is written. Lone, the record takes the one round trip."""
    def send(recs):
        src, f = rows_msg(ORG, items_sets(recs))
        writer.send(f)
        writer.wait_acked([src], timeout=15)
        return src

    send([item(ORG, "801", ts(10), "a", stock=[("w1", "1")]),
          item(ORG, "802", ts(10), "a", stock=[("w1", "1")])])
    bad = item(ORG, "801", ts(11), "b", stock=[("w1", "5"), ("w1", "6")])
    src = send([bad] if lone else [bad, item(ORG, "802", ts(11), "b", stock=[("w1", "7")])])
    assert items_table(db, "item_id, name") == {"801": ("a",), "802": ("a" if lone else "b",)}
    assert stock_of(db, "801") == [("w1", "1")]
    assert stock_of(db, "802") == [("w1", "1" if lone else "7")]
    rej = db.query("SELECT zoho_id, reason FROM tds.rejected WHERE source = %s", src)
    assert [z for z, _ in rej] == ["801"], rej
    assert "duplicate key value violates unique constraint" in rej[0][1], rej
    assert writer.proc.metric("tds_writer_rejects_total", {"stage": "writer"}) == 1


def test_bad_row_is_rejected_alone(writer, db):
    good1 = [item(ORG, str(100 + i), ts(1), f"g{i}", stock=[("w1", "1")]) for i in range(6)]
    bad = item(ORG, "200", ts(1), "bad", rate="12,50", stock=[("w1", "1")])
    recs = good1[:3] + [bad] + good1[3:]
    src1, f1 = rows_msg(ORG, items_sets(recs), mode="full", run="run-bad", page=1)
    other = [item(ORG, str(300 + i), ts(1), f"o{i}") for i in range(4)]
    src2, f2 = rows_msg(ORG, items_sets(other))
    writer.send(f1)
    writer.send(f2)
    writer.wait_acked([src1, src2])
    got = items_table(db, "item_id, name")
    assert "200" not in got
    assert set(got) == {str(100 + i) for i in range(6)} | {str(300 + i) for i in range(4)}
    assert stock_of(db, "200") == []
    rej = db.query("SELECT stage, org_id, entity, zoho_id, reason, raw, source FROM tds.rejected")
    assert len(rej) == 1
    stage, org, entity, zoho_id, reason, raw, source = rej[0]
    assert (stage, org, entity, zoho_id, source) == ("writer", ORG, "items", "200", src1)
    assert "invalid input syntax for type numeric" in reason and "12,50" in reason
    assert json.loads(raw)["item_id"] == "200"
    assert db.query("SELECT records_written, records_rejected FROM tds.sync_runs "
                    "WHERE run_id = 'run-bad'") == [(6, 1)]
    acks = [a for a in writer.acks if src1 in a["ids"]]
    assert acks and acks[0]["rows_rejected"] >= 1
    assert writer.proc.metric("tds_writer_rejects_total", {"stage": "writer"}) == 1


def test_a_lone_record_with_a_key_postgresql_refuses_is_a_reject(writer, db):
    """A webhook's lone record goes to PostgreSQL in one round trip, its
    NOTIFY payload built first. One whose org id is missing or whose id is
    not UTF-8 (only a foreign or faulty producer sends such) is a reject
    like any other, and the writer goes on with the next message."""
    bad_org, _ = item(ORG, "501", ts(1), "no org")
    bad_org[0] = None
    bad_id, _ = item(ORG, "502", ts(1), "bad id")
    bad_id[1] = b"50\xff2"
    src1, f1 = rows_msg(ORG, [rowset("items", DETAIL, ITEM_COLS, [bad_org])])
    src2, f2 = rows_msg(ORG, [rowset("items", DETAIL, ITEM_COLS, [bad_id])])
    src3, f3 = rows_msg(ORG, items_sets([item(ORG, "503", ts(1), "fine")]))
    for f in (f1, f2, f3):
        writer.send(f)
    writer.wait_acked([src1, src2, src3], timeout=15)
    assert set(items_table(db, "item_id, name")) == {"503"}
    rej = db.query("SELECT source FROM tds.rejected ORDER BY source")
    assert sorted(r[0] for r in rej) == sorted([src1, src2]), rej


def test_a_child_set_refused_on_arrival_rejects_its_parents(writer, db):
    """A newer processor (a rolling deploy) sends item_stock with a column this
    writer does not know: the set is refused on arrival, and its items with it.
    Written alone, the item would have lost its stock rows for good (the same
    version sent again is refused by the guard: same time, same hash)."""
    src, f = rows_msg(ORG, items_sets([item(ORG, "1", ts(1), "v1",
                                            stock=[("w1", "5"), ("w2", "6")])]))
    writer.send(f)
    writer.wait_acked([src])
    newer = [item(ORG, "1", ts(2), "v2", stock=[("w1", "7")]), item(ORG, "2", ts(2), "two")]
    sets = items_sets(newer)
    stock = sets[1]
    stock["cols"].append("bin_location")
    for r in stock["rows"]:
        r.append("A-1")
    src, f = rows_msg(ORG, sets, mode="full", run="run-new-cols", page=1)
    writer.send(f)
    writer.wait_acked([src])
    assert items_table(db, "item_id, name") == {"1": ("v1",)}
    assert stock_of(db, "1") == [("w1", "5"), ("w2", "6")]
    rej = db.query("SELECT entity, zoho_id, reason, raw FROM tds.rejected "
                   "WHERE source = %s ORDER BY zoho_id NULLS FIRST", src)
    # one row per record, each with its own raw JSON: no row for the set
    assert [(e, z, json.loads(raw)) for e, z, _, raw in rej] == \
        [("items", r[1], json.loads(r[3])) for r, _ in newer]
    for _, _, reason, _ in rej:
        assert reason.startswith("not written: the message's item_stock rows were refused "
                                 "(unknown column bin_location in item_stock rows)"), reason
    assert db.query("SELECT records_written, records_rejected FROM tds.sync_runs "
                    "WHERE run_id = 'run-new-cols'") == [(0, 2)]
    assert writer.proc.metric("tds_writer_rejects_total", {"stage": "writer"}) == 2
    # the same version with the columns this writer knows is applied in full
    src, f = rows_msg(ORG, items_sets(newer))
    writer.send(f)
    writer.wait_acked([src])
    assert items_table(db, "item_id, name") == {"1": ("v2",), "2": ("two",)}
    assert stock_of(db, "1") == [("w1", "7")]


def test_a_set_refused_on_arrival_rejects_each_of_its_records(writer, db):
    """A newer processor (a rolling deploy) adds a column to the items rows:
    the set is refused on arrival, and each of its records goes to
    tds.rejected on its own, with its zoho id, its raw Zoho JSON and a reason
    that names the column; the run, the ack and the metric count one reject
    per record. A set for a table this writer does not know goes the same
    way, record by record, and the message's other records are written.
    Before, the set was one row without id or raw, the items with stock rows
    came with those rows as their raw, the others not at all: 3 rows, and
    counts of 3, for 4 records."""
    recs = [item(ORG, f"I{i}", ts(1), f"n{i}", stock=[("w1", str(i))] if i < 2 else None)
            for i in range(4)]
    sets = items_sets(recs)
    assert [s["table"] for s in sets] == ["items", "item_stock"]
    sets[0]["cols"].append("brand_new_col")
    for r in sets[0]["rows"]:
        r.append("x")
    src, f = rows_msg(ORG, sets, mode="full", run="run-rolling", page=1, records_in=4)
    writer.send(f)
    writer.wait_acked([src])
    assert items_table(db) == {} and stock_of(db, "I0") == []
    rej = db.query("SELECT stage, org_id, entity, zoho_id, reason, raw FROM tds.rejected "
                   "WHERE source = %s ORDER BY zoho_id NULLS FIRST", src)
    assert [(st, o, e, z) for st, o, e, z, _, _ in rej] == \
        [("writer", ORG, "items", f"I{i}") for i in range(4)], rej
    for (_, _, _, _, reason, raw), (row, _) in zip(rej, recs):
        assert "unknown column brand_new_col in items rows" in reason, reason
        assert json.loads(raw) == json.loads(row[3])
    assert db.query("SELECT records_written, records_rejected FROM tds.sync_runs "
                    "WHERE run_id = 'run-rolling'") == [(0, 4)]
    assert [(a["rows_written"], a["rows_rejected"]) for a in writer.acks if src in a["ids"]] \
        == [(0, 4)]
    assert writer.proc.metric("tds_writer_rejects_total", {"stage": "writer"}) == 4
    assert "rejected on arrival" in writer.proc.stderr_text()

    # a table this writer does not know (a newer processor's new entity)
    raw_b = [json.dumps({"batch_id": f"B{i}", "name": f"b{i}"}) for i in range(2)]
    batches = rowset("item_batches", DETAIL,
                     ["org_id", "batch_id", "modified_time", "raw", "content_hash", "is_detail"],
                     [[ORG, f"B{i}", ts(1), raw_b[i], "h", "true"] for i in range(2)])
    src, f = rows_msg(ORG, [batches] + items_sets([item(ORG, "ok", ts(1), "fine")]),
                      mode="full", run="run-new-table", page=1)
    writer.send(f)
    writer.wait_acked([src])
    assert items_table(db, "item_id, name") == {"ok": ("fine",)}
    rej = db.query("SELECT entity, zoho_id, reason, raw FROM tds.rejected "
                   "WHERE source = %s ORDER BY zoho_id", src)
    assert [(e, z, json.loads(raw)) for e, z, _, raw in rej] == \
        [("item_batches", f"B{i}", json.loads(raw_b[i])) for i in range(2)], rej
    assert all("unknown table 'item_batches'" in r for _, _, r, _ in rej), rej
    assert db.query("SELECT records_written, records_rejected FROM tds.sync_runs "
                    "WHERE run_id = 'run-new-table'") == [(1, 2)]
    assert [(a["rows_written"], a["rows_rejected"]) for a in writer.acks if src in a["ids"]] \
        == [(1, 2)]


def test_refused_metadata_leaves_the_records_written(writer, db):
    """Every record passes, but the message's run update is refused (a CHECK
    on tds.sync_runs): the records are written without the message's
    run/webhook/cursor updates, and tds.rejected says so once. Records that
    fail only together (a unique index across them) still go to tds.rejected,
    without that note, and the message's metadata with them."""
    db.execute("ALTER TABLE tds.sync_runs ADD CONSTRAINT no_refused_run "
               "CHECK (run_id <> 'run-refused')")
    recs = [item(ORG, str(10 + i), ts(1), f"r{i}", stock=[("w1", "1")]) for i in range(3)]
    src, f = rows_msg(ORG, items_sets(recs), mode="full", run="run-refused", page=1)
    ok_src, ok_f = rows_msg(ORG, items_sets([item(ORG, "20", ts(1), "ok")]), mode="full",
                            run="run-ok", page=1)
    writer.send(f)
    writer.send(ok_f)
    writer.wait_acked([src, ok_src])
    assert items_table(db, "item_id, name") == {"10": ("r0",), "11": ("r1",), "12": ("r2",),
                                                "20": ("ok",)}
    assert stock_of(db, "11") == [("w1", "1")]
    rej = db.query("SELECT stage, entity, zoho_id, reason, raw FROM tds.rejected")
    assert len(rej) == 1, rej
    stage, entity, zoho_id, reason, raw = rej[0]
    assert (stage, entity, zoho_id) == ("writer", "items", None)
    assert reason.startswith("could not apply the message's run/webhook/cursor updates, its "
                             "records are written without them") and "no_refused_run" in reason
    assert json.loads(raw)["run"] == "run-refused"
    assert db.query("SELECT run_id, records_written FROM tds.sync_runs") == [("run-ok", 1)]
    # the note is no rejected record: not counted as one (before, 1 and 1)
    assert writer.proc.metric("tds_writer_rejects_total", {"stage": "writer"}) == 0
    assert [(a["rows_written"], a["rows_rejected"]) for a in writer.acks if src in a["ids"]] \
        == [(3, 0)]

    # two records that pass alone and fail together: rejected, no note
    db.execute("DELETE FROM tds.rejected")
    db.execute("CREATE UNIQUE INDEX items_sku_once ON zoho.items (sku)")
    pair = [item(ORG, "30", ts(1), "a", sku="SKU-1"), item(ORG, "31", ts(1), "b", sku="SKU-1")]
    src, f = rows_msg(ORG, items_sets(pair), mode="full", run="run-pair", page=1)
    writer.send(f)
    writer.wait_acked([src])
    assert "30" not in items_table(db) and "31" not in items_table(db)
    rej = db.query("SELECT zoho_id, reason FROM tds.rejected ORDER BY zoho_id")
    assert [z for z, _ in rej] == ["30", "31"], rej
    assert all("items_sku_once" in r for _, r in rej), rej
    # ... with the page's run counts and its record as applied (before, the
    # rejects were written without them: a page sent again added them twice)
    assert db.query("SELECT records_written, records_rejected FROM tds.sync_runs "
                    "WHERE run_id = 'run-pair'") == [(0, 2)]
    assert db.query("SELECT run_id FROM tds.applied_pages WHERE page_id = %s", src) == \
        [("run-pair",)]


def test_a_message_whose_rejects_cannot_be_stored_is_no_commit(writer, db):
    """Even tds.rejected refuses a message's rows (a CHECK on its source): the
    writer gives up on it, says so in the log and acks it, counting its
    records as rejected. Nothing was committed for it, so
    tds_writer_batches_total does not count it (before, it did, with a
    commit time of 0 in tds_writer_commit_seconds)."""
    db.execute("ALTER TABLE tds.rejected ADD CONSTRAINT no_doomed CHECK (source <> 'src-doomed')")
    src, f = rows_msg(ORG, items_sets([item(ORG, "1", ts(1), "ok")]))
    writer.send(f)
    writer.wait_acked([src])
    batches = writer.proc.metric("tds_writer_batches_total")
    commits = writer.proc.metric("tds_writer_commit_seconds_count")
    assert batches == 1 and commits == 1
    recs = [item(ORG, "200", ts(1), "bad", rate="12,50"), item(ORG, "201", ts(1), "good")]
    src, f = rows_msg(ORG, items_sets(recs), src="src-doomed", mode="full", run="run-doomed",
                      page=1)
    writer.send(f)
    writer.wait_acked([src])
    assert "could not record message src-doomed even as rejected" in writer.proc.stderr_text()
    assert [(a["rows_written"], a["rows_rejected"]) for a in writer.acks if src in a["ids"]] \
        == [(0, 2)]
    assert writer.proc.metric("tds_writer_batches_total") == batches
    assert writer.proc.metric("tds_writer_commit_seconds_count") == commits
    assert writer.proc.metric("tds_writer_rejects_total", {"stage": "writer"}) == 2
    assert db.query("SELECT count(*) FROM tds.rejected") == [(0,)]
    src, f = rows_msg(ORG, items_sets([item(ORG, "2", ts(1), "after")]))
    writer.send(f)
    writer.wait_acked([src])
    assert writer.proc.metric("tds_writer_batches_total") == batches + 1


def test_processor_rejects_and_unknown_tables_are_recorded(writer, db):
    src, f = rows_msg(ORG, [rowset("no_such_table", DETAIL, ["org_id", "x"], [[ORG, "1"]])]
                      + items_sets([item(ORG, "1", ts(1), "ok")]),
                      rejects=[("items", "77", "rate: 'abc' is not a number", '{"item_id":"77"}')])
    writer.send(f)
    writer.wait_acked([src])
    assert items_table(db, "item_id, name") == {"1": ("ok",)}
    rej = sorted(db.query("SELECT stage, zoho_id, reason FROM tds.rejected"))
    assert rej[0][0] == "processor" and rej[0][1] == "77"
    assert rej[1][0] == "writer" and "unknown table 'no_such_table'" in rej[1][2]


def test_acks_only_after_commit(writer, db):
    # Hold a lock that the writer's upsert needs: it cannot commit meanwhile.
    locker = db.connect()
    locker.autocommit = False
    cur = locker.cursor()
    cur.execute("LOCK TABLE zoho.items IN EXCLUSIVE MODE")
    src, f = rows_msg(ORG, items_sets([item(ORG, "42", ts(1), "locked")]))
    writer.send(f)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        writer.poll_acks(100)
        assert src not in writer.acked, "acked before commit"
    locker.rollback()
    locker.close()
    seen = {}

    def acked_and_visible():
        for _ in writer.poll_acks(50):
            # The row must already be visible when the ack arrives.
            seen["rows"] = db.query("SELECT name FROM zoho.items WHERE item_id = '42'")
        return src in writer.acked
    wait_until(acked_and_visible, 10, "ack after commit")
    assert seen["rows"] == [("locked",)]


def test_postgres_restart_mid_stream_loses_and_duplicates_nothing(pg, writer, db):
    frames = _stream(n_msgs=40, per=25)
    sent = []

    def feed():
        for i, (src, f) in enumerate(frames):
            writer.send(f)
            sent.append(src)
            time.sleep(0.02)
    t = threading.Thread(target=feed)
    t.start()
    time.sleep(0.2)
    pg.stop()
    wait_until(lambda: not writer.ready(), 10, "writer /readyz to report the database down")
    time.sleep(0.5)
    pg.start()
    t.join()
    # What the writer did not ack comes again, as the ingress and the fetcher
    # send it after their ack timeout: the acks of commits made just before
    # the stop, not yet seen on disk by then, went with the session.
    writer.wait_acked([s for s, _ in frames], timeout=40, resend=dict(frames))
    wait_until(writer.ready, 10, "writer ready again")
    # The result equals applying the same stream to a fresh database in one go.
    expected = _expected_after(frames)
    got = {r[0]: (r[1], r[2]) for r in db.query(
        "SELECT item_id, name, modified_time::text FROM zoho.items")}
    assert {k: v[0] for k, v in got.items()} == expected
    assert writer.proc.metric("tds_writer_reconnects_total") >= 1


# ------------------------------------------- acks and the WAL flush

def _items_visible(db, ids):
    return {r[0] for r in db.query("SELECT item_id FROM zoho.items WHERE item_id = ANY(%s)",
                                   list(ids))}


def _lazy_writer(procs, cluster):
    """A writer on a new database of cluster, whose WAL writer is then stopped
    (SIGSTOP; SIGCONT it when done), and everything so far flushed (what the
    migrations wrote): (database, writer, WAL writer's pid)."""
    db = cluster.create_database("lazy")
    h = WriterHarness(procs, db)
    walwriter = cluster.walwriter_pid()
    os.kill(walwriter, signal.SIGSTOP)
    db.flush_wal()
    return db, h, walwriter


def _send_unflushed(h, db, first, n, name):
    """n messages, items first..first+n-1, sent and committed (their rows
    visible) while nothing flushes the WAL: their (src, frame) pairs and ids."""
    msgs = [rows_msg(ORG, items_sets([item(ORG, str(first + i), ts(1), f"{name} {i}")]))
            for i in range(n)]
    for _, f in msgs:
        h.send(f)
    ids = {str(first + i) for i in range(n)}
    wait_until(lambda: _items_visible(db, ids) == ids, 10, "the rows committed")
    return msgs, ids


def _not_acked_while_unflushed(h, db, msgs):
    """Committed and visible, not on disk: no ack, however long."""
    assert db.wal_flushed_behind()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        h.poll_acks(100)
        assert not (h.acked & {s for s, _ in msgs}), "acked before the commit was on disk"
    assert h.proc.metric("tds_writer_acks_held") >= 1


def test_acks_wait_until_postgresql_has_the_commit_on_disk(procs, lazy_pg):
    db, h, walwriter = _lazy_writer(procs, lazy_pg)
    try:
        msgs, _ = _send_unflushed(h, db, 700, 3, "lazy")
        _not_acked_while_unflushed(h, db, msgs)
        db.flush_wal()
        h.wait_acked([s for s, _ in msgs], timeout=5)
        assert h.proc.metric("tds_writer_acks_held") == 0
        assert h.proc.metric("tds_writer_acks_held_dropped_total") == 0
        # SIGTERM with an ack held: waited for a while, then left to
        # upstream's resend, never sent.
        last, f = rows_msg(ORG, items_sets([item(ORG, "703", ts(1), "at exit")]))
        h.send(f)
        wait_until(lambda: _items_visible(db, {"703"}) == {"703"}, 10, "the last row")
        wait_until(lambda: h.proc.metric("tds_writer_acks_held") == 1, 5, "its ack held")
        t0 = time.monotonic()
        h.proc.stop(timeout=10)
        took = time.monotonic() - t0
        assert 1.0 <= took < 5, f"exit took {took:.1f} s"
        h.poll_acks(200)
        assert last not in h.acked
        assert "exiting with 1 acks not sent" in h.proc.stderr_text()
    finally:
        os.kill(walwriter, signal.SIGCONT)
        h.close()


def _unflushed_then_crash(h, db, cluster, first):
    """Four messages, items first..first+3, committed and visible while
    nothing flushes the WAL (the test stopped what would); then a crash of
    the cluster. Their (src, frame) pairs and the ids."""
    lost, ids = _send_unflushed(h, db, first, 4, "lost")
    h.poll_acks(300)
    cluster.crash()
    return lost, ids


def _restarted_without(h, db, cluster, lost, ids, kept):
    """Start the crashed cluster: the crash took the commits the WAL flush
    had not reached (the premise of these tests), none of them was acked,
    and the writer connects again."""
    cluster.start()
    assert _items_visible(db, ids | {kept}) == {kept}
    assert not (h.acked & {s for s, _ in lost}), "acked a commit the crash took"
    wait_until(h.ready, 20, "the writer connected again")


def test_a_commit_lost_in_a_database_crash_was_never_acked(procs, lazy_pg):
    db, h, walwriter = _lazy_writer(procs, lazy_pg)
    try:
        durable = rows_msg(ORG, items_sets([item(ORG, "800", ts(1), "flushed")]))
        h.send(durable[1])
        wait_until(lambda: _items_visible(db, {"800"}) == {"800"}, 10, "the first row")
        db.flush_wal()
        h.wait_acked([durable[0]], timeout=5)
        lost, ids = _unflushed_then_crash(h, db, lazy_pg, 801)
    except BaseException:
        os.kill(walwriter, signal.SIGCONT)
        h.close()
        raise
    try:
        _restarted_without(h, db, lazy_pg, lost, ids, "800")
        # Upstream sends again what was not acked (the ingress after its ack
        # timeout), and the writer, connected again, writes it.
        for _, f in lost:
            h.send(f)
        wait_until(lambda: _items_visible(db, ids) == ids, 20, "the rows written again")
        db.flush_wal()  # a new WAL writer flushes by itself; this one saves waiting for it
        h.wait_acked([s for s, _ in lost], timeout=10)
        assert h.proc.metric("tds_writer_acks_held_dropped_total") >= 1
        assert h.proc.metric("tds_writer_reconnects_total") >= 1
    finally:
        h.close()


def _async_writer(procs, cluster, env=None, setting="on", name="async"):
    """A writer on a new database of the lazy cluster whose own setting is
    synchronous_commit = setting (the cluster's is off): (database, writer,
    WAL writer's pid), the WAL writer not stopped yet."""
    db = cluster.create_database(name)
    db.execute(f'ALTER DATABASE "{db.name}" SET synchronous_commit = {setting}')
    h = WriterHarness(procs, db, env=env)
    return db, h, cluster.walwriter_pid()


def _flusher_pid(db):
    rows = db.query("SELECT pid FROM pg_stat_activity WHERE application_name = 'tds-writer-flush'")
    return rows[0][0] if rows else None


def test_commits_do_not_wait_for_the_flush_but_their_acks_do(procs, lazy_pg):
    """TDS_WRITER_ASYNC_COMMIT (the default): on a database whose commits
    wait for their flush, the writer's do not; their acks wait for the
    flush, which the writer's side connection has PostgreSQL do at once
    instead of at its WAL writer's next round."""
    db, h, walwriter = _async_writer(procs, lazy_pg)
    flusher = None
    try:
        first = rows_msg(ORG, items_sets([item(ORG, "600", ts(1), "first")]))
        h.send(first[1])
        h.wait_acked([first[0]], timeout=10)
        assert "commits do not wait for the WAL flush (the server's synchronous_commit is on)" \
            in h.proc.stderr_text()
        assert h.proc.metric("tds_writer_async_commit") == 1
        assert h.proc.metric("tds_writer_wal_flushes_total") >= 1
        flusher = _flusher_pid(db)
        assert flusher, "no flush connection"
        # With the WAL writer and the flusher both stopped, nothing flushes:
        # the rows are visible (the commit did not wait), their acks are not.
        os.kill(walwriter, signal.SIGSTOP)
        os.kill(flusher, signal.SIGSTOP)
        msgs, _ = _send_unflushed(h, db, 601, 3, "fast")
        _not_acked_while_unflushed(h, db, msgs)
        # The flusher alone (the WAL writer still stopped) brings the acks:
        # the flush it sent for the first held ack, run once its backend
        # goes on, commits after all three and covers them.
        flushes = h.proc.metric("tds_writer_wal_flushes_total")
        os.kill(flusher, signal.SIGCONT)
        h.wait_acked([s for s, _ in msgs], timeout=5)
        assert h.proc.metric("tds_writer_wal_flushes_total") - flushes <= 2
        assert h.proc.metric("tds_writer_acks_held") == 0
        assert h.proc.metric("tds_writer_acks_held_dropped_total") == 0
    finally:
        os.kill(walwriter, signal.SIGCONT)
        if flusher:
            try:
                os.kill(flusher, signal.SIGCONT)
            except ProcessLookupError:
                pass
        h.close()


def test_a_fast_commit_lost_in_a_database_crash_was_never_acked(procs, lazy_pg):
    """The same through a crash of PostgreSQL: commits that did not wait and
    were not flushed are gone after it, and none of them was acked; sent
    again, as upstream does, they are written and acked."""
    db, h, walwriter = _async_writer(procs, lazy_pg)
    try:
        first = rows_msg(ORG, items_sets([item(ORG, "610", ts(1), "flushed")]))
        h.send(first[1])
        h.wait_acked([first[0]], timeout=10)
        flusher = _flusher_pid(db)
        assert flusher
        os.kill(walwriter, signal.SIGSTOP)
        os.kill(flusher, signal.SIGSTOP)
        lost, ids = _unflushed_then_crash(h, db, lazy_pg, 611)
    except BaseException:
        os.kill(walwriter, signal.SIGCONT)
        h.close()
        raise
    try:
        _restarted_without(h, db, lazy_pg, lost, ids, "610")
        h.wait_acked([s for s, _ in lost], timeout=20, resend=dict(lost))
        assert _items_visible(db, ids) == ids
        assert h.proc.metric("tds_writer_acks_held_dropped_total") >= 1
    finally:
        h.close()


def test_a_slow_flush_connection_holds_no_batch_back(procs, lazy_pg):
    """The WAL flush connection is opened without waiting for it: while
    PostgreSQL has not answered its handshake, batches are written and acked
    all the same (by the session's own reads of the flushed position); once
    it answers, it flushes. Opened the blocking way, that handshake held the
    writer's loop, for up to libpq's connect timeout (10 s) on a server slow
    to take connections, and for ~20 ms after every start."""
    db = lazy_pg.create_database("slowflush")
    db.execute(f'ALTER DATABASE "{db.name}" SET synchronous_commit = on')
    relay = _HoldingRelay(lazy_pg.port, "tds-writer-flush", hold=8)
    url = db.url.replace(f":{lazy_pg.port}/", f":{relay.url_port}/")
    h = WriterHarness(procs, db, env={"TDS_DATABASE_URL": url})
    try:
        for k in range(4):
            t0 = time.monotonic()
            src, f = rows_msg(ORG, items_sets([item(ORG, f"63{k}", ts(1), f"held {k}")]))
            h.send(f)
            h.wait_acked([src], timeout=5)
            took = time.monotonic() - t0
            assert took < 3, f"batch {k} acked after {took:.1f} s"
        assert _items_visible(db, {"630", "631", "632", "633"}) == {"630", "631", "632", "633"}
        assert relay.count == 1 and relay.holding, "the flush connection not begun, or let go"
        assert h.proc.metric("tds_writer_wal_flushes_total") == 0
        assert "commits do not wait for the WAL flush" in h.proc.stderr_text()
        wait_until(lambda: _flusher_pid(db) is not None, 15, "the flush connection ready")
        src, f = rows_msg(ORG, items_sets([item(ORG, "634", ts(1), "flushed")]))
        h.send(f)
        h.wait_acked([src], timeout=5)
        wait_until(lambda: h.proc.metric("tds_writer_wal_flushes_total") >= 1, 5,
                   "a flush on the connection")
        assert h.proc.metric("tds_writer_acks_held_dropped_total") == 0
    finally:
        h.close()
        relay.close()


def _commits_wait(procs, cluster, item_id, why, **kw):
    """A writer whose commits wait as the server says (why: the reason it
    logs): its ack comes with nothing else flushing (the WAL writer
    stopped), without the flush connection."""
    db, h, walwriter = _async_writer(procs, cluster, **kw)
    try:
        os.kill(walwriter, signal.SIGSTOP)
        src, f = rows_msg(ORG, items_sets([item(ORG, item_id, ts(1), "waits")]))
        h.send(f)
        h.wait_acked([src], timeout=10)
        assert "commits wait for the WAL flush as the server says: " + why in h.proc.stderr_text()
        assert h.proc.metric("tds_writer_async_commit") == 0
        assert h.proc.metric("tds_writer_wal_flushes_total") == 0
        assert _flusher_pid(db) is None
    finally:
        os.kill(walwriter, signal.SIGCONT)
        h.proc.stop()
        h.close()
    return db


def test_async_commit_off_or_synchronous_standbys_keep_commits_waiting(procs, lazy_pg):
    """TDS_WRITER_ASYNC_COMMIT=false, or a server with synchronous standbys
    named: every COMMIT waits for its flush as the server says, and its ack
    goes at once."""
    db = _commits_wait(procs, lazy_pg, "620", "TDS_WRITER_ASYNC_COMMIT is false",
                       env={"TDS_WRITER_ASYNC_COMMIT": "false"})
    # Named standbys, none connected: a commit with synchronous_commit local
    # waits for the local flush only, which the writer keeps.
    db.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
    db.execute("SELECT pg_reload_conf()")
    _commits_wait(procs, lazy_pg, "621", "synchronous_standby_names is set", setting="local",
                  name="standbys")


def test_a_role_that_cannot_read_the_wal_position_is_told_and_acks_at_commit(procs, writer,
                                                                             db):
    """The fallback: a role refused pg_current_wal_flush_lsn() (REVOKE in this
    database) gets a warning and acks when COMMIT returns, which the default
    synchronous_commit makes durable."""
    role = f"lsnless_{db.name}"
    db.execute(f'CREATE ROLE "{role}" LOGIN IN ROLE tds_writer')
    db.execute("REVOKE EXECUTE ON FUNCTION pg_current_wal_flush_lsn() FROM PUBLIC")
    h = None
    try:
        url = db.url.replace(f"{db.cluster.superuser}@", f"{role}@")
        h = WriterHarness(procs, db, origin="test.o2", label="lsnless",
                          env={"TDS_DATABASE_URL": url})
        src, f = rows_msg(ORG, items_sets([item(ORG, "900", ts(1), "no lsn")]),
                          origin="test.o2")
        h.send(f)
        h.wait_acked([src], timeout=10)
        assert db.query("SELECT name FROM zoho.items WHERE item_id = '900'") == [("no lsn",)]
        assert "cannot read PostgreSQL's WAL position" in h.proc.stderr_text()
        assert h.proc.metric("tds_writer_acks_held") == 0
    finally:
        if h:
            h.proc.stop()
            h.close()
        db.execute("GRANT EXECUTE ON FUNCTION pg_current_wal_flush_lsn() TO PUBLIC")
        db.execute(f'DROP OWNED BY "{role}"')
        db.execute(f'DROP ROLE "{role}"')


def _expected_after(frames):
    """Newest version per item (by minute; later message wins equal times)."""
    import msgpack
    best = {}
    for _, f in frames:
        m = msgpack.unpackb(f, raw=False)
        for s in m["sets"]:
            if s["table"] != "items":
                continue
            for r in s["rows"]:
                key, mt, name = r[1], r[2], r[6]
                if key not in best or mt > best[key][0] or (mt == best[key][0]):
                    if key in best and mt == best[key][0] and r[4] == best[key][2]:
                        continue
                    best[key] = (mt, name, r[4])
    return {k: v[1] for k, v in best.items()}


def test_two_writers_on_one_stream_equal_one(procs, pg, db):
    frames = _stream(n_msgs=30, per=40)
    a = WriterHarness(procs, db, label="wa")
    b = WriterHarness(procs, db, label="wb")
    threads = [threading.Thread(target=lambda h=h, fr=fr: [h.send(f) for _, f in fr])
               for h, fr in ((a, frames), (b, list(reversed(frames))))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    a.wait_acked([s for s, _ in frames], timeout=40)
    b.wait_acked([s for s, _ in frames], timeout=40)
    # Every event reached both writers: each applied it once, whichever first.
    assert duplicates(a) + duplicates(b) == len(frames)
    assert db.query("SELECT count(*) FROM tds.webhook_events") == [(len(frames),)]
    two = db.query("SELECT item_id, name, modified_time, raw FROM zoho.items ORDER BY 1")
    stock_two = db.query("SELECT item_id, warehouse_id, stock_on_hand FROM zoho.item_stock ORDER BY 1, 2")
    for text in (a.proc.stderr_text(), b.proc.stderr_text()):
        assert "deadlock" not in text.lower() or "retry" in text.lower()
    a.close()
    b.close()
    # One writer, fresh database, same stream once.
    c = psycopg2.connect(pg.dsn())
    c.autocommit = True
    c.cursor().execute(f'CREATE DATABASE "{db.name}_one"')
    c.close()
    try:
        from conftest import Database
        one_db = Database(pg, f"{db.name}_one")
        one = WriterHarness(procs, one_db, label="wone")
        for _, f in frames:
            one.send(f)
        one.wait_acked([s for s, _ in frames], timeout=40)
        assert one_db.query("SELECT item_id, name, modified_time, raw FROM zoho.items ORDER BY 1") == two
        assert one_db.query("SELECT item_id, warehouse_id, stock_on_hand FROM zoho.item_stock "
                            "ORDER BY 1, 2") == stock_two
        one.close()
        one.proc.stop()
    finally:
        c = psycopg2.connect(pg.dsn())
        c.autocommit = True
        c.cursor().execute(f'DROP DATABASE IF EXISTS "{db.name}_one" WITH (FORCE)')
        c.close()


# ------------------------------------------------------------- NOTIFY, roles, runs

def _notified(conn, payloads):
    """Append the tds_changes payloads that arrived (waiting up to 0.2 s)."""
    if select.select([conn], [], [], 0.2)[0]:
        conn.poll()
        while conn.notifies:
            payloads.append(json.loads(conn.notifies.pop(0).payload))
    return payloads


def test_listen_receives_notify(writer, db):
    conn = db.connect()
    conn.cursor().execute("LISTEN tds_changes")
    src, f = rows_msg(ORG, items_sets([item(ORG, "11", ts(1), "a"), item(ORG, "12", ts(1), "b")]))
    writer.send(f)
    writer.wait_acked([src])
    payloads = []
    wait_until(lambda: _notified(conn, payloads), 10, "a NOTIFY on tds_changes")
    assert payloads[0] == {"org": ORG, "tables": {"items": ["11", "12"]}}
    # A big batch stays under the 8000-byte limit: counts instead of ids.
    recs = [item(ORG, str(10 ** 18 + i), ts(2), f"x{i}") for i in range(2000)]
    src, f = rows_msg(ORG, items_sets(recs))
    writer.send(f)
    writer.wait_acked([src])
    payloads.clear()
    wait_until(lambda: _notified(conn, payloads), 10, "a NOTIFY for the big batch")
    assert payloads[-1] == {"org": ORG, "tables": {"items": 2000}, "truncated": True}
    conn.close()


def test_a_lone_record_goes_in_one_round_trip(writer, db):
    """A message with one DETAIL record (a webhook's) is written in one round
    trip: BEGIN to COMMIT go out before any answer is read, and the child
    rows and NOTIFY ask the table whether this transaction wrote the record
    (apply.c, run_one_flight). What is stored and notified is the same as
    in two round trips, the guard included."""
    conn = db.connect()
    conn.cursor().execute("LISTEN tds_changes")
    payloads = []

    def send(rec):
        src, f = rows_msg(ORG, items_sets([rec]), mode="webhook")
        writer.send(f)
        writer.wait_acked([src])
        return [a for a in writer.acks if src in a["ids"]][0]

    def notified_now():
        payloads.clear()
        wait_until(lambda: _notified(conn, payloads), 10, "a NOTIFY on tds_changes")
        return payloads

    def flights():
        return writer.proc.metric("tds_writer_one_flight_batches_total")

    items_payload = {"org": ORG, "tables": {"items": ["31"]}}
    send(item(ORG, "31", ts(10), "a", stock=[("w1", "1"), ("w2", "2")]))
    assert stock_of(db, "31") == [("w1", "1"), ("w2", "2")]
    assert notified_now() == [items_payload]
    assert flights() == 1
    # Newer: the children are replaced, a NOTIFY goes out.
    send(item(ORG, "31", ts(11), "b", stock=[("w3", "3")]))
    assert stock_of(db, "31") == [("w3", "3")]
    assert notified_now() == [items_payload]
    # Older: the guard refuses it; its children are not written, no NOTIFY.
    send(item(ORG, "31", ts(9), "old", stock=[("w9", "9")]))
    # The same version again: nothing rewritten, no NOTIFY.
    xmins = db.query("SELECT xmin::text FROM zoho.item_stock WHERE item_id = '31'")
    send(item(ORG, "31", ts(11), "b", stock=[("w3", "3")]))
    assert db.query("SELECT xmin::text FROM zoho.item_stock WHERE item_id = '31'") == xmins
    assert items_table(db, "item_id, name")["31"] == ("b",)
    assert stock_of(db, "31") == [("w3", "3")]
    # The next NOTIFY is the next record's: the two refused ones sent none.
    send(item(ORG, "32", ts(1), "c"))
    assert notified_now() == [{"org": ORG, "tables": {"items": ["32"]}}]
    assert flights() == 5
    assert writer.proc.metric("tds_writer_rows_written_total", {"table": "items"}) == 3
    assert db.query("SELECT count(*) FROM tds.webhook_events") == [(5,)]
    conn.close()


def test_a_lone_record_is_stored_as_in_a_batch(writer, db):
    """A lone record's upsert takes its values as plain parameters (one row of
    scalars, apply.c build_row), a batch's as arrays. Every column must come
    out the same: Arabic text, quotes and backslashes, a NULL, a numeric, the
    raw JSON, the observed time (a webhook's, so the end of its modified
    time's second)."""
    name = 'مفتاح "ربط" \\ 10مم'
    extra = {"note": 'a "quoted" \\ back\u0000slash'.replace("\u0000", "")}

    def rec(i):
        return item(ORG, i, ts(20), name, sku=None, rate="12.3450", stock=[("w1", "4.5")],
                    extra=extra)

    received = int(time.time() * 1000) - 5000
    src, f = rows_msg(ORG, items_sets([rec("51")]), mode="webhook", received_ms=received)
    writer.send(f)
    writer.wait_acked([src])
    assert writer.proc.metric("tds_writer_one_flight_batches_total") == 1
    src, f = rows_msg(ORG, items_sets([rec("52"), rec("53")]), mode="webhook",
                      received_ms=received)
    writer.send(f)
    writer.wait_acked([src])
    assert writer.proc.metric("tds_writer_one_flight_batches_total") == 1  # not this one
    # raw and the content hash name the id: compared without it, and one by one
    cols = [c for c in ITEM_COLS if c not in ("item_id", "raw", "content_hash")] \
        + ["observed_at", "deleted_at"]
    got = {r[0]: r[1:] for r in db.query(
        f"SELECT item_id, raw - 'item_id', {', '.join(cols)} FROM zoho.items "
        "WHERE item_id IN ('51', '52', '53') ORDER BY item_id")}
    assert set(got) == {"51", "52", "53"}
    assert got["51"] == got["52"] == got["53"]
    assert got["51"][1 + cols.index("name")] == name
    assert got["51"][1 + cols.index("sku")] is None
    assert str(got["51"][1 + cols.index("rate")]) == "12.3450"
    assert got["51"][0]["note"] == extra["note"]
    assert db.query("SELECT item_id, content_hash FROM zoho.items WHERE item_id IN "
                    "('51', '52', '53') ORDER BY item_id") == \
        [(i, rec(i)[0][4]) for i in ("51", "52", "53")]
    # a webhook received months after its modified_time: observed at the end
    # of that second (apply.c observed_text)
    end = datetime.datetime.fromisoformat(ts(20)[:-2] + ":" + ts(20)[-2:]).timestamp() + 0.999
    assert got["51"][1 + cols.index("observed_at")].timestamp() == end


def test_large_values_are_compressed_as_configured(procs, db):
    """A record's raw JSON over ~2 KB is stored out of line, compressed: with
    lz4 by default (cheaper to write than PostgreSQL's pglz), with pglz when
    TDS_WRITER_TOAST_COMPRESSION says so, with the server's default for
    "server"; a value that names no method stops start-up."""
    notes = {"notes": "وصف المنتج: مفتاح ربط 10 مم، فولاذ. " * 200}  # ~14 KB, compressible

    def stored_with(env, item_id, label):
        h = WriterHarness(procs, db, env=env, label=label)
        try:
            src, f = rows_msg(ORG, items_sets([item(ORG, item_id, ts(20), "مفتاح", extra=notes)]))
            h.send(f)
            h.wait_acked([src])
        finally:
            h.close()
            h.proc.stop()
        (method, name, text), = db.query(
            "SELECT pg_column_compression(raw), name, raw->>'notes' FROM zoho.items "
            "WHERE org_id = %s AND item_id = %s", ORG, item_id)
        assert (name, text) == ("مفتاح", notes["notes"])
        return method

    server = db.query("SHOW default_toast_compression")[0][0]
    assert stored_with({}, "61", "wlz4") == "lz4"
    assert stored_with({"TDS_WRITER_TOAST_COMPRESSION": "pglz"}, "62", "wpglz") == "pglz"
    assert stored_with({"TDS_WRITER_TOAST_COMPRESSION": "server"}, "63", "wserver") == server
    r = procs.run("tds-writer", [], env={"TDS_DATABASE_URL": db.dsn,
                                         "TDS_WRITER_TOAST_COMPRESSION": "zstd"}, check=False)
    assert r.returncode == 2
    assert "invalid TDS_WRITER_TOAST_COMPRESSION 'zstd': lz4, pglz or server" in r.stderr


def test_notify_one_payload_per_org_in_one_batch(writer, db):
    """A batch of webhooks from many organizations: every organization gets
    its own payload (sent in one statement), with ids needing JSON escaping."""
    conn = db.connect()
    conn.cursor().execute("LISTEN tds_changes")
    orgs = [f"6009{i:04d}" for i in range(40)]
    srcs, frames = [], []
    for i, org in enumerate(orgs):
        src, f = rows_msg(org, items_sets([item(org, f'q"{i}\\x', ts(1), "a")]), mode="webhook")
        srcs.append(src)
        frames.append(f)
    for f in frames:
        writer.send(f)
    writer.wait_acked(srcs)
    payloads = []
    wait_until(lambda: {p["org"] for p in _notified(conn, payloads)} >= set(orgs), 10,
               "a NOTIFY for every organization")
    ids = {}
    for p in payloads:
        ids.setdefault(p["org"], []).extend(p["tables"]["items"])
    assert ids == {org: [f'q"{i}\\x'] for i, org in enumerate(orgs)}
    assert db.query("SELECT count(*) FROM tds.webhook_events") == [(40,)]
    conn.close()


def test_reader_role_reads_but_cannot_write(writer, db):
    src, f = rows_msg(ORG, items_sets([item(ORG, "1", ts(1), "a")]))
    writer.send(f)
    writer.wait_acked([src])
    c = db.connect()
    cur = c.cursor()
    cur.execute("SET ROLE tds_reader")
    cur.execute("SELECT name FROM zoho.items")
    assert cur.fetchall() == [("a",)]
    cur.execute("SELECT count(*) FROM tds.sync_state")
    for sql in ("INSERT INTO zoho.items (org_id, item_id) VALUES ('1', 'x')",
                "UPDATE zoho.items SET name = 'b'", "DELETE FROM zoho.items",
                "SELECT * FROM tds.oauth_tokens", "CREATE TABLE zoho.mine (x int)"):
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(sql)
    cur.execute("RESET ROLE")
    cur.execute("SET ROLE tds_writer")
    cur.execute("UPDATE zoho.items SET name = 'w' WHERE item_id = '1'")
    c.close()


def test_final_page_commits_cursor_and_completes_run(writer, db):
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, pages_fetched) "
               "VALUES ('r-9', %s, 'items', 'incremental', 2)", ORG)
    s1, f1 = rows_msg(ORG, items_sets([item(ORG, "1", ts(1), "a")]), mode="incremental",
                      run="r-9", page=1, src="page-1")
    s2, f2 = rows_msg(ORG, items_sets([item(ORG, "2", ts(2), "b")]), mode="incremental",
                      run="r-9", page=2, src="page-2")
    writer.send(f1)
    writer.send(f2)
    writer.wait_acked([s1, s2])
    assert db.query("SELECT count(*) FROM tds.sync_state") == [(0,)]
    s3, f3 = rows_msg(ORG, [], mode="incremental", run="r-9", page=3, final=True,
                      cursor="2026-01-05T10:02:00+0300", src="page-final")
    writer.send(f3)
    writer.wait_acked([s3])
    assert db.query("SELECT cursor, last_run_id, cursor_at IS NOT NULL, last_full_at "
                    "FROM tds.sync_state WHERE org_id = %s AND entity = 'items'", ORG) == \
        [("2026-01-05T10:02:00+0300", "r-9", True, None)]
    assert db.query("SELECT status, pages_written, records_written, finished_at IS NOT NULL "
                    "FROM tds.sync_runs WHERE run_id = 'r-9'") == [("completed", 2, 2, True)]
    # A full sync's final page without a cursor keeps the cursor.
    s4, f4 = rows_msg(ORG, [], mode="full", run="r-10", page=1, final=True, src="full-final")
    writer.send(f4)
    writer.wait_acked([s4])
    assert db.query("SELECT cursor, last_run_id, last_full_at IS NOT NULL FROM tds.sync_state") == \
        [("2026-01-05T10:02:00+0300", "r-10", True)]


def test_webhook_events_recorded_once(writer, db):
    src, f = rows_msg(ORG, items_sets([item(ORG, "5", ts(1), "a")]), mode="webhook",
                      src="ev-abc", received_ms=1767600000000)
    writer.send(f)
    writer.wait_acked([src])
    writer.send(f)
    time.sleep(0.3)
    writer.acked.discard(src)
    writer.wait_acked([src])
    assert db.query("SELECT event_id, org_id, entity, zoho_id, "
                    "extract(epoch FROM received_at)::bigint FROM tds.webhook_events") == \
        [("abc", ORG, "items", "5", 1767600000)]


def test_a_retried_webhook_does_not_undo_a_newer_version_of_the_same_second(writer, db):
    """Zoho retries version V1 of a record: its first delivery timed out at
    one ingress replica, which journaled and forwarded it anyway; the retry
    reaches another replica (each dedupes only its own deliveries) after V2
    was applied. V1 and V2 share modified_time (Zoho keeps whole seconds) and
    the retry was observed last, so the guard alone would put V1 back. Its
    event is in tds.webhook_events: its rows are skipped, and it is acked."""
    t, base = ts(30), 1_790_000_000_000

    def send(src, name, observed, stock):
        src, f = rows_msg(ORG, items_sets([item(ORG, "61", t, name, stock=stock)]), src=src,
                          received_ms=observed)
        writer.acked.discard(src)
        writer.send(f)
        writer.wait_acked([src])

    send("ev-5675", "v1", base + 1000, [("w1", "1")])
    send("ev-5676", "v2", base + 1500, [("w1", "2")])
    assert items_table(db, "item_id, name")["61"] == ("v2",)
    xmin = db.query("SELECT xmin::text FROM zoho.items WHERE item_id = '61'")
    send("ev-5675", "v1", base + 4000, [("w1", "1")])  # the retry, through the other replica
    assert items_table(db, "item_id, name")["61"] == ("v2",)
    assert stock_of(db, "61") == [("w1", "2")]
    assert db.query("SELECT xmin::text FROM zoho.items WHERE item_id = '61'") == xmin
    assert duplicates(writer) == 1
    assert db.query("SELECT event_id, (extract(epoch FROM received_at) * 1000)::bigint "
                    "FROM tds.webhook_events ORDER BY 1") == \
        [("5675", base + 1000), ("5676", base + 1500)]


def test_duplicate_webhooks_are_acked_and_counted(procs, db):
    """A webhook whose event is already recorded, by an earlier transaction or
    earlier in the same batch, is applied once: the others' rows are skipped
    (different content here, to tell which one was applied), each is acked
    after the commit and counted, and the batch is neither split nor
    retried."""
    h = WriterHarness(procs, db, env={"TDS_LOG_LEVEL": "debug"})

    def msg(src, item_id, name):
        return rows_msg(ORG, items_sets([item(ORG, item_id, ts(1), name)]), src=src)

    first = msg("ev-100", "71", "first")
    h.send(first[1])
    h.wait_acked([first[0]])
    # The messages make one batch together, after one held in its own.
    held = msg("ev-99", "70", "held")
    batch = [msg("ev-100", "71", "again"),           # recorded by an earlier transaction
             msg("ev-101", "72", "one"), msg("ev-101", "72", "two"),   # twice in the batch
             msg("ev-102", "73", "new")]
    h.acked.discard(first[0])
    h.send_in_one_batch(db, held[1], [f for _, f in batch])
    h.wait_acked([held[0]] + [s for s, _ in batch])
    assert items_table(db, "item_id, name") == \
        {"70": ("held",), "71": ("first",), "72": ("one",), "73": ("new",)}
    assert db.query("SELECT event_id FROM tds.webhook_events ORDER BY 1") == \
        [("100",), ("101",), ("102",), ("99",)]
    assert duplicates(h) == 2
    assert h.proc.metric("tds_writer_batches_total") == 3
    assert h.proc.metric("tds_writer_tx_retries_total") == 0
    err = h.proc.stderr_text()
    assert "splitting" not in err
    line = [json.loads(x) for x in err.splitlines() if "webhook event 100 " in x]
    assert [(x["level"], x["org"], x["msg"]) for x in line] == \
        [("debug", ORG, "webhook event 100 already applied, skipping")]
    h.close()


def test_a_list_page_does_not_get_ahead_of_a_detail_in_its_batch(procs, db):
    """A webhook's DETAIL for a new item and, in the same batch, a list page
    observed after it with the same item at the same modified_time (64 rows
    or more: new keys are COPYed straight in). The DETAIL goes first (step
    4) and the LIST row over it is refused by the guard, so the item keeps
    its detail and stock. Before, the fast path COPYed the LIST row ahead of
    it, the guard then refused the DETAIL (observed earlier), and the item
    stayed list-only, without stock, until the list-only detail refetch."""
    h = WriterHarness(procs, db)
    t0 = int(time.time() * 1000)
    held = rows_msg(ORG, items_sets([item(ORG, "1", ts(1), "held")]))
    hook = rows_msg(ORG, items_sets([item(ORG, "500", ts(5), "detail", stock=[("w1", "3")])]),
                    received_ms=t0)
    page = rows_msg(ORG, items_sets([item(ORG, str(500 + i), ts(5), f"list{i}", detail=False)
                                     for i in range(80)], detail=False),
                    mode="full", run="r-l", page=1, received_ms=t0 + 1000, records_in=80)
    h.send_in_one_batch(db, held[1], [hook[1], page[1]])
    h.wait_acked([held[0], hook[0], page[0]])
    got = items_table(db, "item_id, name, is_detail")
    print(f"item 500: {got['500']}, stock {stock_of(db, '500')}; items {len(got)}")
    assert got["500"] == ("detail", True)
    assert stock_of(db, "500") == [("w1", "3")]
    assert got["501"] == ("list1", False) and len(got) == 81   # the rest COPYed as new
    h.close()



@pytest.mark.parametrize("older_reduced,stored,many", [(False, False, False),
                                                       (True, True, False),
                                                       (False, True, True),
                                                       (True, False, True)])
def test_two_versions_in_sets_of_different_columns_keep_the_newer_ones_children(
        procs, db, older_reduced, stored, many):
    """Two versions of one item in one batch, in DETAIL sets of different
    columns (a rolling upgrade: an old processor's set lacks a column the
    new one sends), the older first, each with stock in another warehouse.
    Two groups, two upserts, and both write the item: only the stock of the
    version stored last may be inserted. Before, the child step took both
    versions' stock, and the item kept a warehouse it no longer has until
    its next detail. With the item stored before or new, and with five
    other written items beside it (their keys go as arrays) or alone."""
    h = WriterHarness(procs, db)
    t0 = int(time.time() * 1000)
    if stored:
        first = rows_msg(ORG, items_sets([item(ORG, "7", ts(5), "stored", stock=[("w0", "9")])]))
        h.send(first[1])
        h.wait_acked([first[0]])
    held = rows_msg(ORG, items_sets([item(ORG, "1", ts(1), "held")]))
    others = [item(ORG, str(20 + i), ts(10), f"other{i}", stock=[("w1", str(i))])
              for i in range(5 if many else 0)]
    old = item(ORG, "7", ts(10), "old", stock=[("w1", "1")])
    new = item(ORG, "7", ts(11), "new", stock=[("w2", "2")])

    def sets(recs, reduced):
        rows = [r for r, _ in recs]
        cols = ITEM_COLS
        if reduced:   # an older processor's set: without the last column
            rows, cols = [r[:-1] for r in rows], ITEM_COLS[:-1]
        return [rowset("items", DETAIL, cols, rows),
                rowset("item_stock", CHILD, STOCK_COLS, [c for _, ch in recs for c in ch])]
    m_old = rows_msg(ORG, sets([old] + others, older_reduced), received_ms=t0)
    m_new = rows_msg(ORG, sets([new], not older_reduced), received_ms=t0 + 1000)
    h.send_in_one_batch(db, held[1], [m_old[1], m_new[1]])
    h.wait_acked([held[0], m_old[0], m_new[0]])
    got = items_table(db, "item_id, name")
    print(f"item 7: {got['7']}, stock {stock_of(db, '7')}")
    assert got["7"] == ("new",)
    assert stock_of(db, "7") == [("w2", "2")]
    for i in range(5 if many else 0):
        assert stock_of(db, str(20 + i)) == [("w1", str(i))]
    h.close()

def test_two_runs_final_pages_in_one_batch_both_complete(procs, db):
    """An incremental run's final page (with its cursor) and the next run's
    (a reconcile the fetcher started before the first's ack: no cursor) in
    one batch: both runs complete, and tds.sync_state keeps the cursor and
    names the later run. Before, only the later page's run completed (the
    other stayed 'running' for good) and its NULL cursor was all the state
    saw, so the first run's cursor was lost."""
    h = WriterHarness(procs, db)
    db.execute("INSERT INTO tds.sync_state (org_id, entity, cursor) "
               "VALUES (%s, 'items', '2026-01-05T09:00:00+0300')", ORG)
    for run, mode in (("r-inc", "incremental"), ("r-rec", "reconcile")):
        db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode) "
                   "VALUES (%s, %s, 'items', %s)", run, ORG, mode)
    held = rows_msg(ORG, items_sets([item(ORG, "70", ts(1), "held")]))
    inc = rows_msg(ORG, items_sets([item(ORG, "71", ts(2), "a")]), mode="incremental",
                   run="r-inc", page=1, final=True, cursor="2026-01-05T10:02:00+0300")
    rec = rows_msg(ORG, [], mode="reconcile", run="r-rec", page=1, final=True)
    h.send_in_one_batch(db, held[1], [inc[1], rec[1]])
    h.wait_acked([held[0], inc[0], rec[0]])
    runs = db.query("SELECT run_id, status FROM tds.sync_runs ORDER BY 1")
    state = db.query("SELECT cursor, last_run_id FROM tds.sync_state WHERE org_id = %s", ORG)
    print(f"runs {runs}; state {state}")
    assert runs == [("r-inc", "completed"), ("r-rec", "completed")]
    assert state == [("2026-01-05T10:02:00+0300", "r-rec")]
    h.close()


def test_a_page_sent_again_is_acked_and_counted_once(procs, db):
    """A page the fetcher sends again (same message id: its ack was lost) is
    acked, counted in tds_writer_page_duplicates_total and not applied again:
    tds.sync_runs counts it once, tds.rejected holds its rejects once, and a
    final page sent again neither completes its run again nor moves the
    cursor. A page sent twice in one batch is applied the first time."""
    h = WriterHarness(procs, db, env={"TDS_LOG_LEVEL": "debug"})
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, pages_fetched) "
               "VALUES ('r-7', %s, 'items', 'full', 3)", ORG)

    def page(src, n, ids, final=False, cursor=None, rejects=()):
        return rows_msg(ORG, items_sets([item(ORG, i, ts(1), f"n{i}") for i in ids]),
                        mode="full", run="r-7", page=n, src=src, final=final, cursor=cursor,
                        rejects=rejects)

    p1 = page("pg-1", 1, ["81", "82"], rejects=[("items", "89", "rate: not a number", "{}")])
    h.send(p1[1])
    h.wait_acked([p1[0]])
    h.acked.clear()
    h.send(p1[1])                     # its ack was lost: sent again, alone
    h.wait_acked([p1[0]])
    # Twice in one batch.
    held = page("pg-0", 4, ["80"])
    p2 = page("pg-2", 2, ["83"])
    h.send_in_one_batch(db, held[1], [p2[1], p2[1]])
    h.wait_acked([held[0], p2[0]])
    final = page("pg-3", 3, [], final=True, cursor="2026-01-05T10:02:00+0300")
    h.send(final[1])
    h.wait_acked([final[0]])
    done = db.query("SELECT status, finished_at, pages_written, records_written, "
                    "records_rejected FROM tds.sync_runs WHERE run_id = 'r-7'")
    state = db.query("SELECT cursor, last_success_at FROM tds.sync_state")
    assert [(s, p, w, r) for s, _, p, w, r in done] == [("completed", 3, 4, 1)]
    h.acked.clear()
    h.send(final[1])                  # the final page again, after its run completed
    h.wait_acked([final[0]])
    assert db.query("SELECT status, finished_at, pages_written, records_written, "
                    "records_rejected FROM tds.sync_runs WHERE run_id = 'r-7'") == done
    assert db.query("SELECT cursor, last_success_at FROM tds.sync_state") == state
    assert db.query("SELECT zoho_id, reason FROM tds.rejected") == \
        [("89", "rate: not a number")]
    assert db.query("SELECT page_id, org_id, entity, run_id, mode FROM tds.applied_pages "
                    "ORDER BY 1") == [(f"pg-{i}", ORG, "items", "r-7", "full") for i in range(4)]
    assert sorted(items_table(db, "item_id, name")) == ["80", "81", "82", "83"]
    assert h.proc.metric("tds_writer_page_duplicates_total") == 3
    assert duplicates(h) == 0
    assert h.proc.metric("tds_writer_tx_retries_total") == 0
    err = h.proc.stderr_text()
    assert "splitting" not in err
    assert sum("page pg-1 already applied, skipping" in x for x in err.splitlines()) == 1
    assert sum("sync run completed" in x for x in err.splitlines()) == 1
    h.close()


def test_two_organizations_with_the_same_event_id_both_apply(writer, db):
    """Zoho's event ids are per organization (its documented example is
    "5675"): the same id from two organizations is two events, each applied
    and recorded, whether they come in one batch or two. The ingress names
    them ev-<org>:<event id>; the bare event id is what is recorded, as for
    the ev-<event id> of an older ingress journal."""
    orgs = ["60011111111", "60022222222"]
    for org in orgs:
        src, f = rows_msg(org, items_sets([item(org, "81", ts(1), f"one {org}")]),
                          src=f"ev-{org}:5675")
        writer.send(f)
        writer.acked.discard(src)
        writer.wait_acked([src])
    sent = [rows_msg(org, items_sets([item(org, "82", ts(1), f"two {org}")]), src="ev-5676")
            for org in orgs]
    for src, f in sent:
        writer.acked.discard(src)
        writer.send(f)
    writer.wait_acked([src for src, _ in sent])
    assert db.query("SELECT org_id, item_id, name FROM zoho.items ORDER BY 1, 2") == \
        [(org, i, f"{n} {org}") for org in orgs for i, n in (("81", "one"), ("82", "two"))]
    assert db.query("SELECT org_id, event_id, zoho_id FROM tds.webhook_events ORDER BY 1, 2") == \
        [(org, e, z) for org in orgs for e, z in (("5675", "81"), ("5676", "82"))]


@pytest.mark.parametrize("table,logged", [
    ("tds.webhook_events", "could not record webhook events"),
    ("zoho.item_stock", "could not write zoho.item_stock rows"),
])
def test_a_failure_inside_a_pipeline_rolls_back_the_batch(writer, db, table, logged):
    # Statements that need no answer before the next go out as one libpq
    # pipeline: a parent's child DELETEs and inserts, and the meta statements
    # with the staging DELETEs and COMMIT. One of them failing must undo the
    # whole batch, ack nothing, and leave the session fit for the retry.
    db.execute(f"""
        CREATE TABLE public.refuse (id int);
        INSERT INTO public.refuse VALUES (1);
        CREATE FUNCTION public.refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM public.refuse) THEN
                RAISE EXCEPTION 'row refused by the test';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON {table}
            FOR EACH ROW EXECUTE FUNCTION public.refuse_row();""")
    src, f = rows_msg(ORG, items_sets([item(ORG, "77", ts(1), "held",
                                            stock=[("w1", "3"), ("w2", "4")])]),
                      mode="webhook", src="ev-refused")
    writer.send(f)
    wait_until(lambda: "row refused by the test" in writer.proc.stderr_text(), 10,
               "the writer to log the refused batch")
    assert logged in writer.proc.stderr_text()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        writer.poll_acks(100)
    assert src not in writer.acked
    assert db.query("SELECT count(*) FROM zoho.items") == [(0,)]
    assert db.query("SELECT count(*) FROM zoho.item_stock") == [(0,)]
    assert db.query("SELECT count(*) FROM tds.webhook_events") == [(0,)]
    db.execute("DELETE FROM public.refuse")
    writer.wait_acked([src])
    assert db.query("SELECT name FROM zoho.items WHERE item_id = '77'") == [("held",)]
    assert stock_of(db, "77") == [("w1", "3"), ("w2", "4")]
    assert db.query("SELECT event_id FROM tds.webhook_events") == [("refused",)]
    # The same session carries on: no reconnect; a newer version replaces the
    # stock rows through the same pipeline.
    src2, f2 = rows_msg(ORG, items_sets([item(ORG, "77", ts(2), "next", stock=[("w2", "5")])]))
    writer.send(f2)
    writer.wait_acked([src2])
    assert stock_of(db, "77") == [("w2", "5")]
    assert writer.proc.metric("tds_writer_reconnects_total") == 0


# ------------------------------------------------------------- operations

def test_status_command(procs, writer, db):
    arabic = "سعر غير صالح في الحقل " * 5   # 110 characters, 200 bytes
    src, f = rows_msg(ORG, items_sets([item(ORG, "1", ts(1), "a", stock=[("w1", "2")])]),
                      rejects=[("items", "9", "bad rate", "{}"), ("contacts", "8", arabic, "{}")])
    writer.send(f)
    writer.wait_acked([src])
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode) VALUES "
               "('run-x', %s, 'contacts', 'full')", ORG)
    db.execute("INSERT INTO tds.sync_state (org_id, entity, cursor, cursor_at, last_success_at) "
               "VALUES (%s, 'items', '2026-01-05T10:00:00+0300', now(), now())", ORG)
    db.execute("INSERT INTO tds.alerts (rule, severity, summary) VALUES "
               "('token_revoked', 'critical', 'refresh token revoked')")
    r = procs.run("tds-writer", ["status"], env={"TDS_DATABASE_URL": db.url})
    out = r.stdout
    assert f"schema version {len(MIGRATIONS)}" in out
    assert ORG in out and "item_stock" in out
    assert "run-x" in out and "contacts" in out
    assert "2026-01-05T10:00:00+0300" in out
    assert "bad rate" in out
    assert "token_revoked" in out and "critical" in out
    # the latest failed run's error, not the alphabetically greatest
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at, "
               "error) VALUES ('f-old', %s, 'invoices', 'incremental', 'failed', "
               "now() - interval '3 hours', 'zoho: 500 internal error'), ('f-new', %s, "
               "'invoices', 'incremental', 'failed', now() - interval '1 hour', "
               "'HTTP 401 token expired')", ORG, ORG)
    out = procs.run("tds-writer", ["status"], env={"TDS_DATABASE_URL": db.url}).stdout
    assert "HTTP 401 token expired" in out and "zoho: 500 internal error" not in out, out
    # counted in characters, cut between two (procs.run decodes UTF-8 strictly)
    line = next(x for x in out.splitlines() if "سعر" in x)
    assert arabic[:60] in line and arabic[:61] not in line
    bad = next(x for x in out.splitlines() if "bad rate" in x)
    assert len(line) == len(bad), (line, bad)   # the columns line up
    # Text from Zoho reaches the terminal without its control characters: a
    # reject's reason with an escape sequence cleared the operator's screen.
    db.execute("INSERT INTO tds.rejected (stage, org_id, entity, reason) VALUES "
               "('processor', %s, 'items', %s)", ORG, "name \x1b[2J\x1b]0;owned\x07 \u009b31m end")
    db.execute("INSERT INTO tds.alerts (rule, severity, summary) VALUES "
               "('sync_failed', 'error', %s)", "run failed: \x1b[31mred\r\n")
    for args in (["status"], ["alerts", "list", "--all"]):
        out = procs.run("tds-writer", args, env={"TDS_DATABASE_URL": db.url}).stdout
        assert not any(c in out for c in "\x1b\x07\r\x9b"), (args, out)
    out = procs.run("tds-writer", ["status"], env={"TDS_DATABASE_URL": db.url}).stdout
    assert "name ?[2J?]0;owned? ?31m end" in out, out


def test_pruning_removes_old_rows_only(procs, db):
    procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": db.url})
    db.execute("INSERT INTO tds.webhook_events (org_id, event_id, received_at) "
               "SELECT '1', 'old' || g, now() - interval '8 days' FROM generate_series(1, 2500) g")
    db.execute("INSERT INTO tds.webhook_events (org_id, event_id, received_at) "
               "VALUES ('1', 'new', now())")
    db.execute("INSERT INTO tds.applied_pages (page_id, org_id, entity, mode, applied_at) "
               "VALUES ('old', '1', 'items', 'full', now() - interval '8 days'), "
               "('new', '1', 'items', 'full', now())")
    db.execute("INSERT INTO tds.rejected (stage, reason, created_at) VALUES "
               "('writer', 'old', now() - interval '31 days'), ('writer', 'new', now())")
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at) VALUES "
               "('old', '1', 'items', 'full', 'completed', now() - interval '91 days'), "
               "('running', '1', 'items', 'full', 'running', NULL)")
    db.execute("INSERT INTO tds.alerts (rule, severity, summary, state, resolved_at) VALUES "
               "('r', 'info', 's', 'resolved', now() - interval '91 days'), "
               "('r', 'info', 's', 'firing', NULL)")
    db.execute("INSERT INTO tds.sync_requests (org_id, entity, requested_by, done_at) VALUES "
               "('1', 'items', 'old', now() - interval '91 days'), "
               "('1', 'items', 'open', NULL), ('1', 'items', 'recent', now())")
    h = WriterHarness(procs, db, env={"TDS_WRITER_PRUNE_INTERVAL_S": "1"})
    wait_until(lambda: db.query("SELECT count(*) FROM tds.webhook_events") == [(1,)], 15,
               "old webhook events pruned")
    wait_until(lambda: db.query("SELECT reason FROM tds.rejected") == [("new",)], 10, "rejects")
    assert db.query("SELECT run_id FROM tds.sync_runs") == [("running",)]
    assert db.query("SELECT state FROM tds.alerts") == [("firing",)]
    assert db.query("SELECT page_id FROM tds.applied_pages") == [("new",)]
    wait_until(lambda: db.query("SELECT requested_by FROM tds.sync_requests ORDER BY id") ==
               [("open",), ("recent",)], 10, "finished sync requests pruned")
    # a webhook whose message does not say when it was received still gets a
    # time the retention can match
    src, frame = rows_msg(ORG, items_sets([item(ORG, "1", ts(1), "one")]), received_ms=0)
    h.send(frame)
    h.wait_acked([src])
    assert db.query("SELECT received_at IS NOT NULL FROM tds.webhook_events "
                    "WHERE event_id = %s", src.removeprefix("ev-")) == [(True,)]
    h.close()


def test_pruning_keeps_up_with_more_than_one_pass_takes(procs, db):
    """One pass deletes at most 20 batches of 1,000 rows a table; with more
    old rows than that it runs again a second later, not at its next
    interval (600 s by default), so it keeps up with a steady flow of
    webhooks. Before, it removed at most 20,000 rows a table an interval."""
    procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": db.url})
    db.execute("INSERT INTO tds.webhook_events (org_id, event_id, received_at) "
               "SELECT '1', 'old' || g, now() - interval '8 days' "
               "FROM generate_series(1, 70000) g")
    t0 = time.monotonic()
    h = WriterHarness(procs, db, env={"TDS_WRITER_PRUNE_INTERVAL_S": "8"})
    wait_until(lambda: db.query("SELECT count(*) FROM tds.webhook_events") == [(0,)], 40,
               "70,000 old webhook events pruned")
    took = time.monotonic() - t0
    print(f"\n70,000 old events pruned {took:.1f} s after the start (interval 8 s)")
    assert took < 8 * 3, took   # four passes at the interval would take 32 s
    h.close()


def test_waiting_for_another_migration_keeps_the_writer_healthy(procs, db):
    """Another process holds the migration lock (the migrate Job, another
    writer applying a long migration): the writer waits for it on a thread of
    its own, so /healthz stays 200 past TDS_HEALTH_STALL_MS while /readyz
    says not ready; once the lock goes it migrates and writes. SIGTERM while
    it waits ends it at once. Before, the wait stalled the event loop: /healthz
    503 after the stall time, and a liveness probe would kill the process."""
    procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": db.url})
    holder = db.connect()
    holder.cursor().execute("SELECT pg_advisory_lock(7310593858020348530)")
    try:
        h = WriterHarness(procs, db, env={"TDS_HEALTH_STALL_MS": "2000"}, ready="healthz")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4:
            assert http_get(h.proc.admin_url + "/healthz")[0] == 200
            assert http_get(h.proc.admin_url + "/readyz")[0] == 503
            time.sleep(0.25)
        holder.cursor().execute("SELECT pg_advisory_unlock(7310593858020348530)")
        wait_until(lambda: http_get(h.proc.admin_url + "/readyz")[0] == 200, 10, "ready")
        src, frame = rows_msg(ORG, items_sets([item(ORG, "1", ts(1), "one")]))
        h.send(frame)
        h.wait_acked([src])
        h.close()
        # SIGTERM while waiting for the lock: exits at once, its wait cancelled
        holder.cursor().execute("SELECT pg_advisory_lock(7310593858020348530)")
        h2 = WriterHarness(procs, db, env={"TDS_HEALTH_STALL_MS": "2000"}, ready="healthz",
                           label="w2")
        time.sleep(1)
        t1 = time.monotonic()
        assert h2.proc.stop() == 0
        assert time.monotonic() - t1 < 5
        h2.close()
    finally:
        holder.close()


def _rerun_migration_013(db, trigger_body):
    """A migrated database on which migration 013 is pending again, its
    UPDATE of tds.webhook_events (one row with received_at NULL) running
    trigger_body (PL/pgSQL) first; public.mig_attempts counts the runs (a
    sequence: not rolled back with the migration)."""
    db.execute("CREATE SEQUENCE public.mig_attempts")
    db.execute("CREATE FUNCTION public.mig_trigger() RETURNS trigger LANGUAGE plpgsql AS $$ "
               f"BEGIN PERFORM nextval('public.mig_attempts'); {trigger_body} RETURN NEW; END $$")
    db.execute("CREATE TRIGGER mig_trigger BEFORE UPDATE ON tds.webhook_events FOR EACH ROW "
               "EXECUTE FUNCTION public.mig_trigger()")
    db.execute("INSERT INTO tds.webhook_events (event_id, org_id, entity, zoho_id, received_at, "
               "applied_at) VALUES ('e1', %s, 'items', '1', NULL, now())", ORG)
    db.execute("DROP INDEX tds.sync_requests_done_idx")
    db.execute("DELETE FROM tds.schema_migrations WHERE version = 13")


def test_a_migration_refused_for_its_data_stops_the_writer(procs, db):
    """A migration PostgreSQL refuses for its data (SQLSTATE class 23: here a
    trigger's check violation) stops the writer after one attempt, as it stops
    `tds-writer migrate`: exit 1, and "refusing to run: migration
    013_prune_everything failed: <PostgreSQL's message>" on stderr and in the
    log. Before, the daemon took the data error's code (1) for "migration
    under way" and ran the migration again and again (~30 times in 6 s),
    never ready, logging nothing."""
    env = {"TDS_DATABASE_URL": db.url}
    procs.run("tds-writer", ["migrate"], env=env)
    _rerun_migration_013(db, "RAISE EXCEPTION 'webhook events are frozen' "
                             "USING ERRCODE = 'check_violation';")
    r = procs.run("tds-writer", ["migrate"], env=env, check=False)
    assert r.returncode == 1 and "migration 013_prune_everything failed" in r.stderr, r.stderr
    assert db.query("SELECT last_value FROM public.mig_attempts") == [(1,)]
    h = WriterHarness(procs, db, ready=None)
    try:
        wait_until(lambda: h.proc.p.poll() is not None, 20, "the writer refusing to run")
        err = h.proc.stderr_text()
        assert h.proc.p.returncode == 1, err
        assert "tds-writer: migration 013_prune_everything failed: ERROR:  webhook events are " \
            "frozen" in err, err
        logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert any(m["level"] == "error" and m["msg"].startswith(
            "refusing to run: migration 013_prune_everything failed: ERROR:  webhook events "
            "are frozen") for m in logged), err
        assert db.query("SELECT last_value FROM public.mig_attempts") == [(2,)]
        assert db.query("SELECT count(*) FROM tds.schema_migrations WHERE version = 13") == [(0,)]
    finally:
        h.close()


def test_a_migration_that_meets_a_deadlock_is_run_again(procs, db):
    """A deadlock (or a serialization failure) during a migration is nobody's
    fault: the writer says so, runs the migration again and starts. Before,
    it took it for "retrying cannot help" and exited 1."""
    procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": db.url})
    _rerun_migration_013(db, "IF currval('public.mig_attempts') = 1 THEN RAISE EXCEPTION "
                             "'deadlock detected (test)' USING ERRCODE = 'deadlock_detected'; "
                             "END IF;")
    h = WriterHarness(procs, db)
    try:
        assert db.query("SELECT last_value FROM public.mig_attempts") == [(2,)]
        assert db.query("SELECT count(*) FROM tds.schema_migrations WHERE version = 13") == [(1,)]
        assert db.query("SELECT received_at IS NOT NULL FROM tds.webhook_events") == [(True,)]
        err = h.proc.stderr_text()
        assert "migration 013_prune_everything failed: ERROR:  deadlock detected (test)" in err \
            and "retrying in" in err, err
        src, frame = rows_msg(ORG, items_sets([item(ORG, "1", ts(1), "one")]))
        h.send(frame)
        h.wait_acked([src])
    finally:
        h.close()


def test_migrate_command_runs_a_migration_again_after_a_deadlock(procs, db):
    """`tds-writer migrate` (a Kubernetes Job, deploy/local/up) meets a
    deadlock: it says so, runs the migration again and exits 0. Before, it
    exited 1 on the first, as for a migration that can never pass."""
    env = {"TDS_DATABASE_URL": db.url}
    procs.run("tds-writer", ["migrate"], env=env)
    _rerun_migration_013(db, "IF currval('public.mig_attempts') <= 2 THEN RAISE EXCEPTION "
                             "'deadlock detected (test)' USING ERRCODE = 'deadlock_detected'; "
                             "END IF;")
    r = procs.run("tds-writer", ["migrate"], env=env, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("running it again in") == 2 and "deadlock detected (test)" in r.stderr, \
        r.stderr
    assert "database schema is up to date" in r.stdout
    assert db.query("SELECT last_value FROM public.mig_attempts") == [(3,)]
    assert db.query("SELECT count(*) FROM tds.schema_migrations WHERE version = 13") == [(1,)]


def test_sigterm_finishes_current_batch(procs, db):
    h = WriterHarness(procs, db)
    recs = [item(ORG, str(10 ** 18 + i), ts(2), f"x{i}") for i in range(3000)]
    src, f = rows_msg(ORG, items_sets(recs))
    h.send(f)
    time.sleep(0.05)
    assert h.proc.stop() == 0
    # Either it committed (and acked) or upstream would resend: never half.
    n = db.query("SELECT count(*) FROM zoho.items")[0][0]
    assert n in (0, 3000)
    h.close()


# ------------------------------------------------------------- big batches (fast path)

def _big(n_items, minute, first=0, per=100, stock=True, bad=()):
    """Messages of `per` distinct new items each; item ids first..first+n_items."""
    frames = []
    for k in range(first, first + n_items, per):
        recs = []
        for i in range(k, min(k + per, first + n_items)):
            recs.append(item(ORG, str(7 * 10 ** 17 + i), ts(minute), f"big{i}-{minute}",
                             rate="9,99" if i in bad else "9.99",
                             stock=[("w1", str(i % 10)), ("w2", "1")] if stock else []))
        frames.append(rows_msg(ORG, items_sets(recs), mode="full", run="big", page=k // per + 1))
    return frames


def test_big_batches_new_and_existing_rows(procs, db):
    h = WriterHarness(procs, db, env={"TDS_WRITER_BATCH_MAX_ROWS": "50000"})
    first = _big(1000, 5)
    for _, f in first:
        h.send(f)
    h.wait_acked([s for s, _ in first])
    assert db.query("SELECT count(*), count(*) FILTER (WHERE name LIKE '%-5') FROM zoho.items") \
        == [(1000, 1000)]
    assert db.query("SELECT count(*) FROM zoho.item_stock") == [(2000,)]
    # The same stream again (new source ids) writes nothing and locks nothing.
    before = db.query("SELECT item_id, xmin::text, xmax::text FROM zoho.items ORDER BY 1")
    again = []
    for k, (src, f) in enumerate(_big(1000, 5)):
        again.append(src)
        h.send(f)
    h.wait_acked(again)
    assert db.query("SELECT item_id, xmin::text, xmax::text FROM zoho.items ORDER BY 1") == before
    # Half older (ignored), half newer (written), plus 500 new ones, in one stream.
    mixed = _big(500, 3) + _big(500, 8, first=500) + _big(500, 8, first=1000)
    for _, f in mixed:
        h.send(f)
    h.wait_acked([s for s, _ in mixed])
    got = dict(db.query("SELECT item_id, name FROM zoho.items"))
    assert len(got) == 1500
    for i in range(1500):
        want = f"big{i}-5" if i < 500 else f"big{i}-8"
        assert got[str(7 * 10 ** 17 + i)] == want
    assert db.query("SELECT count(*), count(DISTINCT item_id) FROM zoho.item_stock") == [(3000, 1500)]
    # A bad value in a big batch is still isolated to its record.
    bad = _big(300, 9, first=2000, bad={2150})
    for _, f in bad:
        h.send(f)
    h.wait_acked([s for s, _ in bad])
    assert db.query("SELECT count(*) FROM zoho.items WHERE item_id::numeric >= 7e17 + 2000") == [(299,)]
    assert db.query("SELECT zoho_id FROM tds.rejected") == [(str(7 * 10 ** 17 + 2150),)]
    h.close()


def test_big_batch_children_of_new_and_stored_parents(procs, db):
    """In one big batch, children of new parents are COPYed straight into
    zoho.item_stock while those of stored parents are replaced through
    staging; each record ends with exactly the stock of the version kept."""
    h = WriterHarness(procs, db, env={"TDS_WRITER_BATCH_MAX_ROWS": "50000"})
    base = 8 * 10 ** 17

    def send(recs_per_msg):
        frames = [rows_msg(ORG, items_sets(recs)) for recs in recs_per_msg]
        for _, f in frames:
            h.send(f)
        h.wait_acked([s for s, _ in frames], timeout=60)

    # 100 new items (one message each: a webhook burst), two stock rows each
    send([[item(ORG, str(base + i), ts(5), f"v5-{i}", stock=[("w1", str(i)), ("w2", "1")])]
          for i in range(100)])
    assert db.query("SELECT count(*), sum(stock_on_hand)::text FROM zoho.item_stock") \
        == [(200, str(sum(range(100)) + 100))]
    # One batch: 0-39 newer (stock replaced), 40-79 older (kept), 100-199 new
    # (150 lists one warehouse twice, which item_stock's key refuses: that
    # record alone is rejected).
    recs = [[item(ORG, str(base + i), ts(6), f"v6-{i}", stock=[("w3", "7")])] for i in range(40)]
    recs += [[item(ORG, str(base + i), ts(4), f"v4-{i}", stock=[("w9", "9")])]
             for i in range(40, 80)]
    recs += [[item(ORG, str(base + i), ts(5), f"v5-{i}",
                   stock=[("w5", str(i)), ("w5" if i == 150 else "w6", "2")])]
             for i in range(100, 200)]
    send(recs)
    for i in (0, 39):
        assert stock_of(db, str(base + i)) == [("w3", "7")]
    for i in (40, 79):
        assert stock_of(db, str(base + i)) == [("w1", str(i)), ("w2", "1")]
    for i in (80, 99):
        assert stock_of(db, str(base + i)) == [("w1", str(i)), ("w2", "1")]
    for i in (100, 149, 151, 199):
        assert stock_of(db, str(base + i)) == [("w5", str(i)), ("w6", "2")]
    assert stock_of(db, str(base + 150)) == []
    assert db.query("SELECT count(*) FROM zoho.items WHERE item_id = %s", str(base + 150)) == [(0,)]
    assert db.query("SELECT zoho_id FROM tds.rejected") == [(str(base + 150),)]
    assert db.query("SELECT count(*), count(DISTINCT item_id) FROM zoho.item_stock") \
        == [(40 + 40 * 2 + 20 * 2 + 99 * 2, 199)]
    names = dict(db.query("SELECT item_id, name FROM zoho.items"))
    assert len(names) == 199
    assert names[str(base + 0)] == "v6-0" and names[str(base + 40)] == "v5-40"
    h.close()


def test_growing_tables_are_analyzed_by_the_writer(procs, db):
    """A foreign-key check planned while zoho.items was empty can walk every
    item of the organization; the writer analyzes a table each time it has
    written as many rows as the table held, so the cached plans are redone."""
    h = WriterHarness(procs, db, env={"TDS_LOG_LEVEL": "debug"})
    # A table autovacuum holds is skipped, not waited for: with the lock an
    # ANALYZE needs taken elsewhere, 1,500 rows are still acked at once
    # (waiting would hold the batch for the writer's 8 s lock_timeout).
    lock = psycopg2.connect(db.url)
    try:
        lock.cursor().execute("LOCK TABLE zoho.items IN SHARE UPDATE EXCLUSIVE MODE")
        first = _big(1500, 4, first=10000)
        t0 = time.monotonic()
        for _, f in first:
            h.send(f)
        h.wait_acked([s for s, _ in first], timeout=30)
        assert time.monotonic() - t0 < 5
    finally:
        lock.rollback()
        lock.close()
    frames = _big(3000, 5)
    for _, f in frames:
        h.send(f)
    h.wait_acked([s for s, _ in frames], timeout=60)

    def analyzed():
        return dict(db.query("SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables "
                             "WHERE schemaname = 'zoho' AND relname IN ('items', 'item_stock')"))
    wait_until(lambda: analyzed() == {"items": True, "item_stock": True}, 10, "manual analyze")
    # the row count the planner sees is the table's, not an empty table's
    assert db.query("SELECT reltuples >= 1000 FROM pg_class WHERE oid = 'zoho.items'::regclass") \
        == [(True,)]
    assert "analyzed zoho.items after" in h.proc.stderr_text()
    h.close()


def test_key_checks_are_replanned_when_a_small_table_grows(procs, db):
    """The foreign-key check of item_stock rows gets a generic plan after a
    few runs. Made while zoho.items held a handful of rows, that plan can
    walk every item of the organization through an (org_id, ...) index. So
    a batch that doubles a small parent first analyzes its key columns (with
    no statistics, org_id = $1 looked as selective as the key) and discards
    the session's cached plans, and a big batch after single-item ones checks
    its keys through the primary key."""
    h = WriterHarness(procs, db, env={"TDS_LOG_LEVEL": "debug",
                                      "TDS_WRITER_BATCH_MAX_ROWS": "50000"})
    # single-item transactions: more than the five runs that precede a generic plan
    for i in range(6):
        src, f = _big(1, 3, first=90000 + i)[0]
        h.send(f)
        h.wait_acked([src])
    assert "cached plans discarded" not in h.proc.stderr_text()
    frames = _big(2000, 4, per=500)
    for _, f in frames:
        h.send(f)
    h.wait_acked([s for s, _ in frames], timeout=60)
    assert "zoho.items holds ~" in h.proc.stderr_text()
    assert "cached plans discarded before writing zoho.item_stock" in h.proc.stderr_text()
    assert db.query("SELECT count(*) FROM zoho.item_stock") == [(4012,)]

    def index_scans():
        return dict(db.query("SELECT indexrelname, idx_scan FROM pg_stat_user_indexes "
                             "WHERE relname = 'items'"))
    def seq_scans():
        return db.query("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'items'")[0][0]
    # A backend's statistics reach the view when it goes idle, but at most
    # once a second, and otherwise within PostgreSQL 15's idle interval
    # (10 s). Counted over every index: when a stale plan sent 1,000 checks
    # through items_modified_time_idx, waiting for 4,000 on the primary key
    # timed out instead of naming the index.
    wait_until(lambda: sum(index_scans().values()) >= 4000, 30, "index statistics")
    print(f"\nindex scans of zoho.items: {index_scans()}, sequential scans: {seq_scans()}")
    # Only checks made before the table reached PLAN_RESET_MIN_ROWS (2 per
    # item, at most 512) may have gone through another index; a stale plan
    # sends ~4,000 checks there, each reading a whole organization.
    assert sum(n for name, n in index_scans().items() if name != "items_pkey") < 600, index_scans()
    h.close()


def _timed_batch(h):
    """Seconds until 100 new items (ids from 5000) sent to h are all acked."""
    t0 = time.monotonic()
    more = _big(100, 4, first=5000)
    for _, f in more:
        h.send(f)
    h.wait_acked([s for s, _ in more], timeout=30)
    return time.monotonic() - t0


def _writer_with_an_analyze_that(procs, db, statement):
    """A writer sent 1,500 items, all acked, so that zoho.items is due for
    its ANALYZE, which runs `statement`: a partial index's predicate runs it
    in the writer's analyze connection only (ANALYZE evaluates it for every
    sampled row; the writer's own writes never run it)."""
    h = WriterHarness(procs, db, env={"TDS_LOG_LEVEL": "debug"})
    db.query("CREATE FUNCTION public.tds_test_analyze(text) RETURNS boolean IMMUTABLE "
             "LANGUAGE plpgsql AS $$ BEGIN "
             "IF current_setting('application_name') = 'tds-writer-analyze' THEN "
             f"{statement}; END IF; RETURN true; END $$")
    db.query("CREATE INDEX items_test_analyze_idx ON zoho.items (org_id) "
             "WHERE public.tds_test_analyze(item_id)")
    first = _big(1500, 4)
    for _, f in first:
        h.send(f)
    h.wait_acked([s for s, _ in first], timeout=30)
    return h


def test_an_analyze_does_not_hold_up_the_batches(procs, db):
    """The writer's own ANALYZE of a growing table runs on a side connection:
    batches keep committing while it runs. A partial index whose predicate
    sleeps only in that connection (ANALYZE evaluates it for every sampled
    row) makes this ANALYZE take ~6 s."""
    h = _writer_with_an_analyze_that(procs, db, "PERFORM pg_sleep(0.004)")

    def analyzing():
        return db.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                        "'tds-writer-analyze' AND state = 'active' AND query LIKE 'ANALYZE%'") \
            == [(1,)]
    wait_until(analyzing, 10, "the writer's ANALYZE of zoho.items")
    took = _timed_batch(h)
    assert analyzing(), "the ANALYZE ended before the batch: the test proves nothing"
    assert took < 2, f"a batch waited {took:.1f} s behind the ANALYZE"
    wait_until(lambda: "analyzed zoho.items after 1500 rows" in h.proc.stderr_text(), 30,
               "the ANALYZE's completion in the log")
    assert db.query("SELECT count(*) FROM zoho.items") == [(1600,)]
    h.close()


def test_a_failed_analyze_does_not_stop_the_next(procs, db):
    """An ANALYZE that fails on a connection that stays up (a statement
    timeout, a cancel; here a partial index whose predicate raises only in
    the writer's analyze connection) is read to its end: the next table due
    is still analyzed on the same connection."""
    h = _writer_with_an_analyze_that(procs, db, "RAISE EXCEPTION 'tds test: no analyze of items'")
    wait_until(lambda: "could not analyze zoho.items" in h.proc.stderr_text(), 10,
               "the failed ANALYZE of zoho.items")
    wait_until(lambda: "analyzed zoho.item_stock after" in h.proc.stderr_text(), 10,
               "the ANALYZE of zoho.item_stock")
    assert db.query("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables "
                    "WHERE relid = 'zoho.item_stock'::regclass") == [(True,)]
    assert "another command is already in progress" not in h.proc.stderr_text()
    h.close()


class _HoldingRelay:
    """A TCP relay to PostgreSQL that holds, for `hold` seconds, the startup
    packet of every connection whose application_name is `app`: a database
    that takes that long to open a session for it. With `refuse`, it then
    closes that connection instead."""

    def __init__(self, port, app, hold, refuse=False):
        self.port, self.app, self.hold, self.refuse = port, app.encode(), hold, refuse
        self.held = threading.Event()    # such a handshake was seen
        self.holding = False             # and is held right now
        self.count = 0                   # such handshakes seen
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.url_port = self.lsock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self._pipe, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, False), daemon=True).start()

    def _pipe(self, src, dst, upstream):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream and self.app in data:
                    self.count += 1
                    self.holding = True
                    self.held.set()
                    time.sleep(self.hold)
                    self.holding = False
                    if self.refuse:
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for x in (src, dst):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.lsock.close()


def _writer_until_analyze_due(procs, db, hold, refuse=False):
    """A writer reaching PostgreSQL through a _HoldingRelay, sent 1,500 items,
    all acked: zoho.items is then due for the writer's ANALYZE, whose
    connection the relay has begun to hold."""
    # autovacuum's own ANALYZE (default sample) would overwrite the writer's
    # statistics on a shared cluster: off for this table
    procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": db.url})
    db.execute("ALTER TABLE zoho.items SET (autovacuum_enabled = off)")
    relay = _HoldingRelay(db.cluster.port, "tds-writer-analyze", hold, refuse)
    url = db.url.replace(f":{db.cluster.port}/", f":{relay.url_port}/")
    h = WriterHarness(procs, db, env={"TDS_LOG_LEVEL": "debug", "TDS_DATABASE_URL": url})
    try:
        first = _big(1500, 4)
        for _, f in first:
            h.send(f)
        h.wait_acked([s for s, _ in first], timeout=30)
        assert relay.held.wait(10), "the writer never opened its analyze connection"
    except BaseException:
        h.close()
        relay.close()
        raise
    return relay, h


def test_batches_go_on_while_the_analyze_connection_opens(procs, db):
    """The side connection for ANALYZE is opened without waiting: a session
    that takes PostgreSQL seconds to open (here a relay holds its handshake
    for 4 s) does not hold up the batches behind it, and the ANALYZE runs
    once the connection is up."""
    relay, h = _writer_until_analyze_due(procs, db, 4.0)
    try:
        took = _timed_batch(h)
        assert took < 2, f"a batch waited {took:.1f} s behind the analyze connection"
        assert relay.holding, "the handshake ended before the batch: the test proves nothing"
        wait_until(lambda: "analyzed zoho.items after" in h.proc.stderr_text(), 30,
                   "the ANALYZE once the connection is up")
        assert db.query("SELECT count(*) FROM zoho.items") == [(1600,)]
        assert db.query("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables "
                        "WHERE relid = 'zoho.items'::regclass") == [(True,)]
        # the connection's options set the small sample: a histogram of at
        # most 11 bounds (statistics target 10), not 101
        assert db.query("SELECT array_length(histogram_bounds, 1) <= 11 FROM pg_stats "
                        "WHERE schemaname = 'zoho' AND tablename = 'items' "
                        "AND attname = 'item_id'") == [(True,)]
        assert "could not" not in h.proc.stderr_text()
    finally:
        h.close()
        relay.close()


def test_a_failed_analyze_connection_is_warned_and_tried_again(procs, db):
    """A side connection that fails during its handshake is a warning, the
    batches go on, and the tables come due again after as many rows."""
    relay, h = _writer_until_analyze_due(procs, db, 0.5, refuse=True)
    try:
        wait_until(lambda: "could not connect to analyze" in h.proc.stderr_text(), 10,
                   "the warning")
        # not tried again at once (the writer's maintenance tick is 1 s)
        time.sleep(2.5)
        assert relay.count == 1
        relay.held.clear()
        more = _big(1500, 4, first=5000)
        for _, f in more:
            h.send(f)
        h.wait_acked([s for s, _ in more], timeout=30)
        assert relay.held.wait(10), "the writer did not try again after as many rows"
        assert relay.count == 2
        assert db.query("SELECT count(*) FROM zoho.items") == [(3000,)]
        assert "analyzed zoho." not in h.proc.stderr_text()
        assert h.proc.alive()
    finally:
        h.close()
        relay.close()


def test_two_writers_racing_on_new_keys(procs, db):
    frames = _big(2000, 4)
    a = WriterHarness(procs, db, label="fa")
    b = WriterHarness(procs, db, label="fb")
    threads = [threading.Thread(target=lambda h=h: [h.send(f) for _, f in frames]) for h in (a, b)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    a.wait_acked([s for s, _ in frames], timeout=60)
    b.wait_acked([s for s, _ in frames], timeout=60)
    assert db.query("SELECT count(*), count(DISTINCT item_id), bool_and(name LIKE '%-4')::text "
                    "FROM zoho.items") == [(2000, 2000, "true")]
    assert db.query("SELECT count(*) FROM zoho.item_stock") == [(4000,)]
    assert db.query("SELECT count(*) FROM tds.rejected") == [(0,)]
    a.close()
    b.close()


def test_writer_runs_as_a_tds_writer_member_without_ddl_rights(procs, pg, db):
    procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": db.url})
    role = f"app_{db.name}"
    db.execute(f'CREATE ROLE "{role}" LOGIN IN ROLE tds_writer')
    try:
        url = f"postgresql://{role}@127.0.0.1:{pg.port}/{db.name}"

        class AsApp:
            pass
        app_db = AsApp()
        app_db.url = url
        h = WriterHarness(procs, app_db)
        src, f = rows_msg(ORG, items_sets([item(ORG, "1", ts(1), "a", stock=[("w1", "1")])]),
                          run="r-app", mode="incremental",
                          rejects=[("items", "2", "bad", "{}")])
        s2, f2 = rows_msg(ORG, [], run="r-app", mode="incremental", final=True, cursor="c1")
        h.send(f)
        h.send(f2)
        h.wait_acked([src, s2])
        assert db.query("SELECT name FROM zoho.items") == [("a",)]
        assert db.query("SELECT count(*) FROM tds.rejected") == [(1,)]
        assert db.query("SELECT cursor FROM tds.sync_state") == [("c1",)]
        h.close()
        h.proc.stop()
    finally:
        db.execute(f'DROP OWNED BY "{role}"')
        db.execute(f'DROP ROLE "{role}"')


CONTACT_COLS = ["org_id", "contact_id", "modified_time", "raw", "content_hash", "is_detail",
                "contact_name", "email", "credit_limit"]
ADDR_COLS = ["org_id", "contact_id", "address_type", "position", "city"]
PERSON_COLS = ["org_id", "contact_id", "contact_person_id", "first_name", "is_primary_contact"]
WH_COLS = ["org_id", "warehouse_id", "modified_time", "raw", "content_hash", "is_detail",
           "warehouse_name", "is_primary"]


def test_contacts_with_two_child_tables_and_warehouses_without_modified_time(writer, db):
    def contact(mtime, name, cities, persons):
        raw = json.dumps({"contact_id": "c1", "contact_name": name})
        return [rowset("contacts", DETAIL, CONTACT_COLS,
                       [[ORG, "c1", mtime, raw, name, "true", name, "a@b.c", "100.00"]]),
                rowset("contact_addresses", CHILD, ADDR_COLS,
                       [[ORG, "c1", t, str(i), c] for i, (t, c) in enumerate(cities)]),
                rowset("contact_persons", CHILD, PERSON_COLS,
                       [[ORG, "c1", p, p.upper(), "false"] for p in persons])]

    def send(sets):
        src, f = rows_msg(ORG, sets, entity="contacts")
        writer.send(f)
        writer.wait_acked([src])

    send(contact(ts(1), "Acme", [("billing", "Riyadh"), ("shipping", "Jeddah")], ["p1", "p2"]))
    assert db.query("SELECT address_type, city FROM zoho.contact_addresses ORDER BY 1") == \
        [("billing", "Riyadh"), ("shipping", "Jeddah")]
    assert db.query("SELECT contact_person_id FROM zoho.contact_persons ORDER BY 1") == \
        [("p1",), ("p2",)]
    send(contact(ts(2), "Acme 2", [("billing", "Dammam")], []))
    assert db.query("SELECT address_type, city FROM zoho.contact_addresses") == [("billing", "Dammam")]
    assert db.query("SELECT count(*) FROM zoho.contact_persons") == [(0,)]
    assert db.query("SELECT contact_name, credit_limit::text FROM zoho.contacts") == \
        [("Acme 2", "100.00")]

    # Warehouses have no modified time: the content hash alone decides.
    def wh(name, h):
        return [rowset("warehouses", DETAIL, WH_COLS, [[ORG, "w1", None, "{}", h, "true", name, "true"]])]
    send(wh("Main", "h1"))
    xmin = db.query("SELECT xmin::text FROM zoho.warehouses")
    send(wh("Main", "h1"))
    assert db.query("SELECT xmin::text FROM zoho.warehouses") == xmin
    send(wh("Main store", "h2"))
    assert db.query("SELECT warehouse_name, modified_time FROM zoho.warehouses") == \
        [("Main store", None)]


def test_list_rows_with_different_field_sets_in_one_batch(writer, db):
    cols_a = ["org_id", "item_id", "modified_time", "raw", "content_hash", "is_detail", "name"]
    cols_b = ["org_id", "item_id", "modified_time", "raw", "content_hash", "is_detail", "name", "sku"]
    s1, f1 = rows_msg(ORG, [rowset("items", 2, cols_a, [[ORG, "1", ts(1), '{"a":1}', "x", "false", "one"]])])
    s2, f2 = rows_msg(ORG, [rowset("items", 2, cols_b, [[ORG, "2", ts(1), '{"b":2}', "y", "false", "two", "S2"]]),
                            rowset("items", 2, cols_a, [[ORG, "1", ts(2), '{"c":3}', "z", "false", "one-b"]])])
    writer.send(f1)
    writer.wait_acked([s1])
    writer.send(f2)
    writer.wait_acked([s2])
    got = {r[0]: r[1:] for r in db.query("SELECT item_id, name, sku, raw, is_detail FROM zoho.items")}
    assert got == {"1": ("one-b", None, {"a": 1, "c": 3}, False), "2": ("two", "S2", {"b": 2}, False)}


def test_staging_by_copy_and_by_arrays_stores_the_same_values(writer, db):
    """A group of 64 rows or more goes into its staging table by COPY; a
    smaller one goes to its table as typed arrays of parameters (no staging),
    or, with a key twice, into the staging table by a prepared INSERT of
    arrays. All must store every value as sent: quotes, backslashes, braces
    and commas (array syntax), tabs and newlines (COPY syntax), Arabic, the
    text NULL against SQL NULL, numerics, and the child rows."""
    base = 8 * 10 ** 17
    ids = [str(base + i) for i in range(100)]
    tricky = 'q"uote \\back {a,b} NULL \t tab\nline عربي'

    def version(i, minute, tag):
        sku = None if i % 3 == 0 else ("NULL" if i % 3 == 1 else f"sku,{i}")
        return item(ORG, ids[i], ts(minute), f"{tag}{i} {tricky}", sku=sku,
                    rate=f"{i}.{minute:02d}",
                    stock=[("w1", f"{i}.5"), (f"m{minute}", str(-i))])

    def send(recs):
        src, frame = rows_msg(ORG, items_sets(recs))
        writer.send(frame)
        writer.wait_acked([src])

    def check(expected):
        got = db.query(
            "SELECT item_id, name, sku, rate::text, raw->>'name', raw->>'sku' "
            "FROM zoho.items WHERE org_id = %s AND item_id = ANY(%s) ORDER BY item_id",
            ORG, ids)
        want = [(r[1], r[6], r[7], r[9], r[6], r[7]) for r, _ in expected]
        assert got == want
        got = db.query(
            "SELECT item_id, warehouse_id, warehouse_name, stock_on_hand::text "
            "FROM zoho.item_stock WHERE org_id = %s AND item_id = ANY(%s) "
            "ORDER BY item_id, warehouse_id", ORG, ids)
        want = sorted((c[1], c[2], c[3], c[4]) for _, ch in expected for c in ch)
        assert got == want
        assert db.query("SELECT count(*) FROM tds.rejected") == [(0,)]

    current = [version(i, 1, "new") for i in range(100)]
    send(current)  # new keys: COPYed straight into the tables
    check(current)
    current = [version(i, 2, "big") for i in range(100)]
    send(current)  # 100 newer versions and 200 stock rows: staged by COPY
    check(current)
    for i in range(0, 100, 10):
        current[i] = version(i, 3, "small")
    send([current[i] for i in range(0, 100, 10)])  # 10 items, 20 stock rows: as arrays
    check(current)
    for i in range(5, 100, 10):
        current[i] = version(i, 4, "one")
        send([current[i]])  # one webhook's worth at a time
    check(current)
    # a key twice in a small LIST set: staged by arrays, the newer one kept
    def listed(i, minute, tag):
        return item(ORG, ids[i], ts(minute), f"{tag}{i} {tricky}", sku=f"sku,{i}",
                    rate=f"{i}.{minute:02d}", detail=False)

    newer, older, other = listed(1, 9, "twice-new"), listed(1, 8, "twice-old"), listed(2, 9, "l")
    src, frame = rows_msg(ORG, items_sets([newer, older, other], detail=False))
    writer.send(frame)
    writer.wait_acked([src])
    assert db.query("SELECT name, sku, rate::text FROM zoho.items WHERE org_id = %s "
                    "AND item_id = %s", ORG, ids[1]) == [(newer[0][6], newer[0][7], newer[0][9])]
    assert db.query("SELECT name FROM zoho.items WHERE org_id = %s AND item_id = %s",
                    ORG, ids[2]) == [(other[0][6],)]
    assert db.query("SELECT count(*) FROM tds.rejected") == [(0,)]


def test_staging_tables_are_emptied_and_kept_small(writer, db):
    """Each transaction empties the staging tables it filled just before its
    COMMIT, and a staging table is TRUNCATEd once 2,048 rows went through it:
    the dead rows of its DELETEs do not pile up. (ON COMMIT DELETE ROWS would
    truncate every staging table of the session at every commit, used or
    not, ~0.4 ms each.)"""
    base = 9 * 10 ** 17
    per = 65  # at least 64: staged by COPY, not sent as arrays

    def staging_sizes():
        return dict(db.query(
            "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname LIKE 'pg\\_temp\\_%' AND c.relname LIKE '\\_tds\\_%'"))

    def send(k, minute):
        recs = [item(ORG, str(base + k * per + i), ts(minute), f"s{k}-{i}-{minute}",
                     stock=[("w1", str(i)), ("w2", str(k))]) for i in range(per)]
        s, f = rows_msg(ORG, items_sets(recs))
        writer.send(f)
        writer.wait_acked([s])

    for k in range(40):
        send(k, 5)  # new keys
    # newer versions of keys that exist go through staging, with their stock
    for k in range(10):
        send(k, 6)
    # the session made one for each table's whole records at connect (apply.c,
    # prewarm()); these batches used two of them, the items' and the stock rows'
    after10 = {k: v for k, v in staging_sizes().items() if v > 0}
    assert len(after10) == 2, staging_sizes()
    for k in range(10, 40):
        send(k, 6)
    after40 = staging_sizes()
    # 2,600 items and 5,200 stock rows were staged; without the TRUNCATE
    # each table would hold four times the dead rows it held after 650
    for name, size in after10.items():
        assert after40[name] < size, (after10, after40)
    assert db.query("SELECT count(*) FROM zoho.items") == [(40 * per,)]
    assert db.query("SELECT count(*) FROM zoho.items WHERE name LIKE '%%-6'") == [(40 * per,)]
    assert db.query("SELECT count(*), count(DISTINCT item_id) FROM zoho.item_stock") \
        == [(80 * per, 40 * per)]
    # Stale staged rows would come back here: the same keys again, newer, in
    # new transactions, leave exactly the new versions and their stock.
    for k in (0, 39):
        send(k, 7)
    assert db.query("SELECT count(*) FROM zoho.items WHERE name LIKE '%%-7'") == [(2 * per,)]
    assert db.query("SELECT count(*), count(DISTINCT item_id) FROM zoho.item_stock") \
        == [(80 * per, 40 * per)]
    assert stock_of(db, str(base + 39 * per + 7)) == [("w1", "7"), ("w2", "39")]


def test_batch_byte_bound_ends_a_transaction(procs, db):
    """TDS_WRITER_BATCH_MAX_BYTES ends a transaction once its messages add up
    to that many bytes, well under the row bound: large records do not pile
    up in the writer's memory. Each ack lists the messages of one commit."""
    def burst(h, first):
        frames = [rows_msg(ORG, items_sets([
            item(ORG, str(9 * 10 ** 17 + first + k * 50 + i), ts(5), "x" * 1500 + str(i))
            for i in range(50)])) for k in range(30)]
        assert all(len(f) > 65536 for _, f in frames)
        for _, f in frames:
            h.send(f)
        h.wait_acked([s for s, _ in frames], timeout=60)
        return [len(a["ids"]) for a in h.acks]

    # Without the byte bound, messages sent meanwhile queue behind a commit
    # and go into the next transaction together.
    h = WriterHarness(procs, db, env={"TDS_WRITER_BATCH_MAX_BYTES": str(1 << 40)})
    assert max(burst(h, 0)) > 1
    h.close()
    h.proc.stop()
    # With it (at its minimum, 64 KiB, under one message), one message per transaction.
    h = WriterHarness(procs, db, env={"TDS_WRITER_BATCH_MAX_BYTES": "65536"}, label="w2")
    assert "or 65536 bytes per batch" in h.proc.stderr_text()
    sizes = burst(h, 10000)
    assert sizes == [1] * 30, sizes
    assert db.query("SELECT count(*) FROM zoho.items") == [(3000,)]
    h.close()


def test_no_frame_of_a_longer_message_passes_for_a_message(writer, db):
    """A rows message is one frame. The parts after the first are dropped,
    oversized ones included: a rows frame behind an oversized part is not
    written as a message of its own."""
    big = b"\x00" * (64 * 1024 * 1024 + 1)  # over the frame limit, under the wire limit

    def msg(src, item_id):
        return rows_msg(ORG, items_sets([item(ORG, item_id, ts(1), src)]), src=src)

    head, tail, lone, nxt = msg("m-head", "91"), msg("m-tail", "92"), msg("m-lone", "93"), \
        msg("m-next", "94")
    writer.push.send_multipart([head[1], big, tail[1]])
    writer.push.send_multipart([big, lone[1]])
    writer.send(nxt[1])
    writer.wait_acked(["m-head", "m-next"], timeout=60)
    time.sleep(0.3)
    writer.poll_acks()
    assert "m-tail" not in writer.acked and "m-lone" not in writer.acked
    assert sorted(r[0] for r in db.query("SELECT item_id FROM zoho.items")) == ["91", "94"]
    assert writer.proc.metric("tds_writer_oversize_frames_total") == 1
