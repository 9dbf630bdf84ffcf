"""Helpers for test_fetcher.py and test_fetcher_records.py: the whole pipeline (simulator → tds-fetcher →
tds-processor → tds-writer → PostgreSQL) on free ports, sync requests through
tds.sync_requests, and a row-by-row comparison of zoho.* with the simulator's
truth (/_sim/truth).
"""
import json
import time

from conftest import free_port, spawn_binding, wait_until
from sim_fixture import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN

# registry entity → (table, id column, simulator entity)
ENTITIES = {
    "warehouses": ("warehouses", "warehouse_id"),
    "item_groups": ("item_groups", "group_id"),
    "items": ("items", "item_id"),
    "contacts": ("contacts", "contact_id"),
    "sales_orders": ("sales_orders", "salesorder_id"),
    "invoices": ("invoices", "invoice_id"),
}
CHILDREN = {
    "items": ("item_stock", "item_id"),
    "contacts": ("contact_persons", "contact_id"),
    "sales_orders": ("sales_order_lines", "salesorder_id"),
    "invoices": ("invoice_lines", "invoice_id"),
}


def zoho_time_to_epoch(s):
    """'2025-01-01T03:00:00+0300' → epoch seconds."""
    import datetime
    return int(datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S%z").timestamp())


class Pipeline:
    """Writer + processor + fetcher(s) against a running simulator."""

    def __init__(self, procs, db, sim, tmp_path, orgs=None, fetcher_env=None):
        self.procs, self.db, self.sim, self.tmp = procs, db, sim, tmp_path
        self.rows_port = free_port()
        self.ack_port = free_port()
        self.proc_port = free_port()
        self.fetch_port = free_port()
        self.fetchers = []
        self.fetcher_env = dict(fetcher_env or {})
        self.orgs = orgs or [org_spec("60001")]
        self.config = tmp_path / "orgs.json"
        self.write_config()
        # (each started after those it connects to: a port taken before a
        # stage bound it is picked again, spawn_binding)
        self.writer = spawn_binding(procs, "tds-writer", "writer", lambda: {
            "TDS_DATABASE_URL": db.url,
            "TDS_WRITER_BIND": f"tcp://127.0.0.1:{self.rows_port}",
            "TDS_ACK_BIND": f"tcp://127.0.0.1:{self.ack_port}",
            "TDS_INSTANCE": "w1",
        }, self._repick_writer)
        self.processor = spawn_binding(procs, "tds-processor", "processor", lambda: {
            "TDS_PROCESSOR_BIND": f"tcp://127.0.0.1:{self.proc_port}",
            "TDS_WRITER_CONNECT": f"tcp://127.0.0.1:{self.rows_port}",
            "TDS_INSTANCE": "p1",
        }, self._repick_processor)

    def _repick_writer(self):
        self.rows_port, self.ack_port = free_port(), free_port()

    def _repick_processor(self):
        self.proc_port = free_port()

    def _repick_fetcher(self):
        self.fetch_port = free_port()

    def write_config(self):
        orgs = []
        for o in self.orgs:
            o = dict(o)
            o.setdefault("accounts_url", self.sim.url)
            orgs.append(o)
        self.config.write_text(json.dumps({"organizations": orgs}))

    def start_fetcher(self, label="f1", env=None, fetch_port=None, ready=True):
        """A fetcher on the pipeline's fetch port (a new one if it was taken
        before the first fetcher bound it), or on fetch_port, or on the
        TDS_FETCHER_BIND env gives (those two are the test's to keep)."""
        def env_of():
            e = {
                "TDS_DATABASE_URL": self.db.url,
                "TDS_CONFIG": str(self.config),
                "TDS_FETCHER_BIND": f"tcp://127.0.0.1:{fetch_port or self.fetch_port}",
                "TDS_PROCESSOR_CONNECT": f"tcp://127.0.0.1:{self.proc_port}",
                "TDS_ACK_CONNECT": f"tcp://127.0.0.1:{self.ack_port}",
                "TDS_INSTANCE": label,
                "TDS_FETCHER_SCHEDULE": "false",
                "TDS_FETCHER_OWNER_CHECK_MS": "300",
            }
            e.update(self.fetcher_env)
            e.update(env or {})
            return e
        # the pipeline's own port only while no fetcher was given it
        mine = not fetch_port and not self.fetchers and "TDS_FETCHER_BIND" not in (env or {}) \
            and "TDS_FETCHER_BIND" not in self.fetcher_env
        p = spawn_binding(self.procs, "tds-fetcher", label, env_of,
                          self._repick_fetcher if mine else None,
                          ready="readyz" if ready else None)
        self.fetchers.append(p)
        return p

    # ---- requests and runs

    def request(self, org, entity, mode):
        rows = self.db.query(
            "INSERT INTO tds.sync_requests (org_id, entity, mode, requested_by) "
            "VALUES (%s, %s, %s, 'test') RETURNING id", org, entity, mode)
        return rows[0][0]

    def wait_request(self, rid, timeout=120.0):
        wait_until(lambda: self.db.query(
            "SELECT done_at IS NOT NULL FROM tds.sync_requests WHERE id = %s", rid)[0][0],
            timeout=timeout, what=f"sync request {rid} done")
        return self.runs(rid)

    def runs(self, rid):
        cols = ["run_id", "entity", "mode", "status", "pages_fetched", "records_fetched",
                "records_walked", "pages_written", "records_written", "records_rejected",
                "api_calls", "error"]
        rows = self.db.query(
            "SELECT " + ", ".join(cols) + " FROM tds.sync_runs WHERE run_id LIKE %s "
            "ORDER BY started_at", f"rq{rid}.%")
        return [dict(zip(cols, r)) for r in rows]

    def sync(self, org, entity, mode, timeout=120.0, settle=True):
        """Run a sync request to its end; after a full one (settle), also the
        reconciliations it queued, so that they do not see what a test
        changes next."""
        runs = self.wait_request(self.request(org, entity, mode), timeout=timeout)
        assert runs, "no run was started"
        for r in runs:
            assert r["status"] == "completed", runs
        if settle and mode == "full":
            self.settle(org, timeout)
        return runs

    def settle(self, org, timeout=120.0):
        """No request of org open and no run of it running."""
        wait_until(lambda: self.db.query(
            "SELECT (SELECT count(*) FROM tds.sync_requests WHERE done_at IS NULL AND org_id = %s "
            "AND mode <> 'fetch') + (SELECT count(*) FROM tds.sync_runs WHERE org_id = %s "
            "AND status = 'running')", org, org)[0][0] == 0,
            timeout=timeout, what=f"the requests and runs of {org} to end", interval=0.05)

    # ---- comparison with the simulator's truth

    def db_rows(self, org, entity):
        table, idc = ENTITIES[entity]
        rows = self.db.query(
            f"SELECT {idc}, extract(epoch from modified_time)::bigint, deleted_at IS NOT NULL, "
            f"is_detail, raw::text FROM zoho.{table} WHERE org_id = %s", org)
        return {r[0]: {"modified": r[1], "deleted": r[2], "is_detail": r[3],
                       "raw": json.loads(r[4]) if r[4] else None} for r in rows}

    def compare(self, org, entity, detail=True, pending_deletes=False):
        """Live rows equal the truth (ids, modified times, is_detail, the
        detail-only fields), deleted ones are marked deleted."""
        truth = self.sim.truth(org, entity)
        idf = truth["id_field"]
        rows = self.db_rows(org, entity)
        live = {k: v for k, v in rows.items() if not v["deleted"]}
        want = {r[idf]: r for r in truth["records"]}
        missing = sorted(set(want) - set(live))
        extra = sorted(set(live) - set(want))
        if pending_deletes:  # deleted in Zoho, not yet reconciled here
            gone = {d["id"] for d in truth.get("deleted", [])}
            extra = [x for x in extra if x not in gone]
        assert not missing and not extra, \
            f"{entity}: missing {missing[:5]} ({len(missing)}), extra {extra[:5]} ({len(extra)})"
        for rid, rec in want.items():
            row = live[rid]
            mt = rec.get("last_modified_time")
            if mt:
                assert row["modified"] == zoho_time_to_epoch(mt), (entity, rid, row["modified"], mt)
            if detail and entity in CHILDREN:
                assert row["is_detail"], (entity, rid)
            # every field Zoho sent is in raw with the same value
            for k, v in rec.items():
                assert row["raw"].get(k) == v, (entity, rid, k, row["raw"].get(k), v)
        if entity in CHILDREN and detail:
            ctable, cid = CHILDREN[entity]
            n_children = self.db.query(
                f"SELECT count(*) FROM zoho.{ctable} WHERE org_id = %s", org)[0][0]
            assert n_children > 0, f"{ctable} is empty"
        for d in [] if pending_deletes else truth.get("deleted", []):
            if d["id"] in rows:
                assert rows[d["id"]]["deleted"], (entity, d["id"], "not marked deleted")
        return len(want)


def org_spec(org_id, tz="+0300", product="inventory", **kw):
    o = {
        "org_id": org_id,
        "name": f"org {org_id}",
        "product": product,
        "data_center": "com",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
        "timezone_offset": tz,
        "incremental_every_s": 3600,
        "reconcile_every_s": 86400,
        "daily_reserve": 0,
    }
    o.update(kw)
    return o


class RateWatch:
    """Samples the simulator's per-org request counter to measure requests per
    "minute" while a sync runs."""

    def __init__(self, sim, org):
        self.sim, self.org = sim, org
        self.samples = []

    def sample(self):
        t = time.monotonic()
        st = self.sim.stats()["orgs"][self.org]
        t = (t + time.monotonic()) / 2
        self.samples.append((t, st["requests"], st["429"]))
        return self.samples[-1]

    def wait_for(self, count, timeout=120.0, interval=0.01):
        """Poll until the request counter reaches count; the sample then."""
        deadline = time.monotonic() + timeout
        while True:
            t, r, e = self.sample()
            if r >= count:
                return t, r, e
            if time.monotonic() > deadline:
                raise AssertionError(f"only {r} of {count} requests")
            time.sleep(interval)


def small_org(org_id="60001", **kw):
    """A simulator organization spec: 60 items in 5 groups, 30 of each
    document, 3 warehouses; kw adds or overrides fields."""
    return (f"id={org_id},tz=+0300,stock=warehouses,product=inventory,items=60,groups=5,"
            f"contacts=30,invoices=30,salesorders=30,warehouses=3" + "".join(
                f",{k}={v}" for k, v in kw.items()))


def push_fetches(port, msgs):
    import msgpack
    import zmq
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.2)
    for i, (org, entity, zid) in enumerate(msgs):
        sock.send(msgpack.packb({"v": 1, "t": "fetch", "id": f"f-{i}-{time.time()}", "org": org,
                                 "entity": entity, "zoho_id": zid, "origin": "ingress.test"}))
    sock.close()


def calls_a_second(procs, db, sim, tmp_path, rate, org, fetcher_env=None):
    """A simulator and a pipeline where "a minute" is one second and the
    organization may make `rate` calls in it (no daily limit)."""
    s = sim(orgs=[org], extra_args=["--minute-ms", "1000", "--rate-per-min", str(rate),
                                    "--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path,
                 fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000", **(fetcher_env or {})},
                 orgs=[org_spec("60001", rate_per_min=rate)])
    return s, p
