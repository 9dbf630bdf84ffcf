"""The whole pipeline for tests: simulator + every stage, wired as in Kubernetes.

`Pipeline` starts N writers, processors, fetchers and ingresses on free
loopback ports; each upstream connects to every downstream replica (the way a
headless Service resolves to all pods). `compare()` checks the database
against the simulator's truth, entity by entity and row by row.
"""

import datetime as dt
import json
import os
from decimal import Decimal

from conftest import free_port, spawn_binding, wait_until

SECRET = "e2e-webhook-secret"

# entity -> (table, id column, [(truth field, column, kind)], children)
# children: (table, truth array field(s), count only)
CHECKS = {
    "warehouses": ("warehouses", "warehouse_id",
                   [("warehouse_name", "warehouse_name", "text")], []),
    "item_groups": ("item_groups", "group_id", [("group_name", "group_name", "text")], []),
    "items": ("items", "item_id",
              [("name", "name", "text"), ("sku", "sku", "text"), ("rate", "rate", "num"),
               ("purchase_rate", "purchase_rate", "num"), ("status", "status", "text"),
               ("stock_on_hand", "stock_on_hand", "num")],
              [("item_stock", ("warehouses", "locations"))]),
    "contacts": ("contacts", "contact_id",
                 [("contact_name", "contact_name", "text"), ("email", "email", "text"),
                  ("outstanding_receivable_amount", "outstanding_receivable_amount", "num")],
                 [("contact_persons", ("contact_persons",))]),
    "sales_orders": ("sales_orders", "salesorder_id",
                     [("salesorder_number", "salesorder_number", "text"),
                      ("total", "total", "num"), ("customer_id", "customer_id", "text")],
                     [("sales_order_lines", ("line_items",))]),
    "invoices": ("invoices", "invoice_id",
                 [("invoice_number", "invoice_number", "text"), ("total", "total", "num"),
                  ("balance", "balance", "num"), ("customer_id", "customer_id", "text")],
                 [("invoice_lines", ("line_items",))]),
}


def zoho_time(s):
    """Zoho's yyyy-MM-ddTHH:mm:ss±hhmm → aware datetime."""
    if s is None or s == "":
        return None
    if len(s) >= 5 and s[-5] in "+-" and ":" not in s[-5:]:
        s = s[:-2] + ":" + s[-2:]
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def num(v):
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return None
    return Decimal(str(v))


class Pipeline:
    def __init__(self, procs, db, sim, tmp_path, writers=1, processors=1, fetchers=1,
                 ingresses=1, extra_env=None, org_overrides=None):
        self.procs = procs
        self.db = db
        self.sim = sim
        self.tmp = str(tmp_path)
        self.extra_env = dict(extra_env or {})
        self.w_ports = [(free_port(), free_port()) for _ in range(writers)]
        self.p_ports = [free_port() for _ in range(processors)]
        self.f_ports = [free_port() for _ in range(fetchers)]
        self.h_ports = [free_port() for _ in range(ingresses)]
        self.orgs_file = os.path.join(self.tmp, "orgs.json")
        self._write_orgs(org_overrides or {})
        self.writers, self.processors, self.fetchers, self.ingresses = [], [], [], []

    # ---- wiring

    def _write_orgs(self, overrides):
        info = self.sim.ctl("GET", "orgs")
        orgs = []
        for o in info["orgs"]:
            tz = int(o.get("tz_min", 0))
            tzs = "%s%02d%02d" % ("-" if tz < 0 else "+", abs(tz) // 60, abs(tz) % 60)
            entry = {
                "org_id": o["id"], "name": o.get("name", o["id"]),
                "product": "books" if o.get("product") == "books" else "inventory",
                "data_center": "com",
                "accounts_url": self.sim.url, "api_url": None,
                "client_id": "1000.SIMCLIENT", "client_secret": "simsecret",
                "refresh_token": "1000.simrefresh", "webhook_secrets": [SECRET],
                "timezone_offset": tzs,
                "incremental_every_s": 3600, "reconcile_every_s": 86400,
                "daily_reserve": 0,
            }
            entry.update(overrides.get(o["id"], {}))
            entry.update(overrides.get("*", {}))
            orgs.append(entry)
        self.org_ids = [o["org_id"] for o in orgs]
        with open(self.orgs_file, "w") as f:
            json.dump({"organizations": orgs}, f)

    def env(self):
        e = {
            "TDS_DATABASE_URL": self.db.url,
            "TDS_CONFIG": self.orgs_file,
            "TDS_WRITER_CONNECT": ",".join(f"tcp://127.0.0.1:{w}" for w, _ in self.w_ports),
            "TDS_ACK_CONNECT": ",".join(f"tcp://127.0.0.1:{a}" for _, a in self.w_ports),
            "TDS_PROCESSOR_CONNECT": ",".join(f"tcp://127.0.0.1:{p}" for p in self.p_ports),
            "TDS_FETCHER_CONNECT": ",".join(f"tcp://127.0.0.1:{p}" for p in self.f_ports),
        }
        e.update(self.extra_env)
        return e

    def _spawn(self, name, label, env_of, repick):
        return spawn_binding(self.procs, name, label, env_of, repick)

    def start(self):
        for i in range(len(self.w_ports)):
            self.writers.append(self._spawn(
                "tds-writer", f"writer-{i}",
                lambda: dict(self.env(), TDS_INSTANCE=f"writer-{i}",
                             TDS_WRITER_BIND=f"tcp://127.0.0.1:{self.w_ports[i][0]}",
                             TDS_ACK_BIND=f"tcp://127.0.0.1:{self.w_ports[i][1]}"),
                lambda: self.w_ports.__setitem__(i, (free_port(), free_port()))))
        for i in range(len(self.p_ports)):
            self.processors.append(self._spawn(
                "tds-processor", f"processor-{i}",
                lambda: dict(self.env(), TDS_INSTANCE=f"processor-{i}",
                             TDS_PROCESSOR_BIND=f"tcp://127.0.0.1:{self.p_ports[i]}"),
                lambda: self.p_ports.__setitem__(i, free_port())))
        for i in range(len(self.f_ports)):
            self.fetchers.append(self._spawn(
                "tds-fetcher", f"fetcher-{i}",
                lambda: dict(self.env(), TDS_INSTANCE=f"fetcher-{i}",
                             TDS_FETCHER_BIND=f"tcp://127.0.0.1:{self.f_ports[i]}"),
                lambda: self.f_ports.__setitem__(i, free_port())))
        for i in range(len(self.h_ports)):
            jdir = os.path.join(self.tmp, f"journal-{i}")
            self.ingresses.append(self._spawn(
                "tds-ingress", f"ingress-{i}",
                lambda: dict(self.env(), TDS_INSTANCE=f"ingress-{i}",
                             TDS_INGRESS_LISTEN=f"127.0.0.1:{self.h_ports[i]}",
                             TDS_INGRESS_JOURNAL_DIR=jdir),
                lambda: self.h_ports.__setitem__(i, free_port())))
        return self

    def stages(self):
        return self.ingresses + self.fetchers + self.processors + self.writers

    def webhook_url(self, org, i=0):
        return f"http://127.0.0.1:{self.h_ports[i]}/webhooks/zoho/{org}"

    def hook_up_webhooks(self, i=0):
        for org in self.org_ids:
            self.sim.webhooks(org, self.webhook_url(org, i), secret=SECRET, retries=10,
                              retry_delay_ms=200)

    # ---- syncs

    def sync(self, org, mode="full", entity="all", timeout=300):
        return self.procs.run("tds-fetcher", ["sync", "--org", org, "--entity", entity,
                                              "--mode", mode], env=self.env(), timeout=timeout)

    def request_sync(self, org, mode="full", entity="all"):
        """Queue a sync without following it (any fetcher replica takes it)."""
        return self.procs.run("tds-fetcher", ["sync", "--org", org, "--entity", entity,
                                              "--mode", mode, "--detach"], env=self.env())

    def runs_settled(self):
        rows = self.db.query("SELECT count(*) FROM tds.sync_runs WHERE status = 'running'")
        return rows[0][0] == 0

    # ---- comparison

    def diff(self, org, entities=None):
        """Differences between the database and the simulator's truth, as text lines."""
        out = []
        for ent in entities or CHECKS:
            table, idcol, fields, children = CHECKS[ent]
            truth = self.sim.truth(org, ent)
            invalid = {r["id"] for r in truth.get("invalid", [])}
            live = {r[truth["id_field"]]: r for r in truth["records"]
                    if r[truth["id_field"]] not in invalid}
            deleted = {d["id"] for d in truth.get("deleted", [])} - invalid
            cols = ", ".join(c for _, c, _ in fields)
            rows = self.db.query(
                f"SELECT {idcol}, deleted_at IS NOT NULL, modified_time, {cols} "
                f"FROM zoho.{table} WHERE org_id = %s", org)
            got = {r[0]: r for r in rows}
            for zid, rec in live.items():
                r = got.get(zid)
                if r is None:
                    out.append(f"{org} {ent} {zid}: missing")
                    continue
                if r[1]:
                    out.append(f"{org} {ent} {zid}: marked deleted but live in Zoho")
                mt = zoho_time(rec.get("last_modified_time"))
                if mt is not None and r[2] != mt:
                    out.append(f"{org} {ent} {zid}: modified_time {r[2]} != {mt}")
                for k, (field, col, kind) in enumerate(fields):
                    want = rec.get(field)
                    have = r[3 + k]
                    if kind == "num":
                        want = num(want)
                        have = None if have is None else Decimal(have)
                    elif want == "":
                        want = None
                    if want != have:
                        out.append(f"{org} {ent} {zid}: {col} {have!r} != {want!r}")
            for zid, r in got.items():
                if zid in live:
                    continue
                if zid in deleted:
                    if not r[1]:
                        # what ordered the delete and the version kept: the
                        # row's times and the webhooks received for the id
                        seen = self.db.query(
                            f"SELECT observed_at FROM zoho.{table} "
                            f"WHERE org_id = %s AND {idcol} = %s", org, zid)
                        hooks = self.db.query(
                            "SELECT received_at FROM tds.webhook_events "
                            "WHERE org_id = %s AND zoho_id = %s ORDER BY received_at", org, zid)
                        out.append(f"{org} {ent} {zid}: deleted in Zoho, not marked "
                                   f"(modified_time {r[2]}, observed_at {seen[0][0]}, "
                                   f"webhooks received {[h[0] for h in hooks]})")
                elif zid not in invalid:
                    out.append(f"{org} {ent} {zid}: not in Zoho")
            for child, keys in children:
                ctable = child
                counts = dict(self.db.query(
                    f"SELECT {idcol}, count(*) FROM zoho.{ctable} WHERE org_id = %s "
                    f"GROUP BY 1", org))
                for zid, rec in live.items():
                    want = sum(len(rec.get(k) or []) for k in keys)
                    if counts.get(zid, 0) != want:
                        why = self.db.query(
                            f"SELECT is_detail, modified_time, synced_at, "
                            f"left(raw::text, 120) FROM zoho.{table} "
                            f"WHERE org_id = %s AND {idcol} = %s", org, zid)
                        out.append(f"{org} {ctable} of {zid}: {counts.get(zid, 0)} rows != "
                                   f"{want} (parent row: {why})")
        return out

    def assert_equal_truth(self, org, entities=None):
        d = self.diff(org, entities)
        assert not d, f"{len(d)} differences, first ones:\n" + "\n".join(d[:30])

    def wait_equal_truth(self, org, timeout=60, entities=None):
        last = []

        def ok():
            last[:] = self.diff(org, entities)
            return not last
        try:
            wait_until(ok, timeout, f"database of org {org} to equal the simulator", interval=0.5)
        except AssertionError:
            raise AssertionError(f"{len(last)} differences remain, first ones:\n"
                                 + "\n".join(last[:30]))
