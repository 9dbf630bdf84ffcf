"""deploy/local/up and deploy/local/down, the newcomer's command, as the README
gives it: installs what is missing (nothing, here), starts PostgreSQL, the
simulator and the four stages, syncs every entity with its progress shown,
and says how to look at the data. Runs the build under test (--build-dir) on
a port block of its own; afterwards every table holds the simulator's
records, signed webhooks to the ingress it started are applied, and the
stages' logs hold no sanitizer report."""
import json
import os
import random
import re
import subprocess

import psycopg2
import pytest

from conftest import check_sanitizers, http_get, wait_until
from pipeline import CHECKS
from sim_fixture import Sim, sim  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _live_ids(sim, cur, org, ent):
    table, idcol = CHECKS[ent][0], CHECKS[ent][1]
    truth = sim.truth(org, ent)
    invalid = {r["id"] for r in truth.get("invalid", [])}
    want = {str(r[truth["id_field"]]) for r in truth["records"]} - invalid
    cur.execute(f"SELECT {idcol} FROM zoho.{table} WHERE org_id = %s AND deleted_at IS NULL", (org,))
    return want, {r[0] for r in cur.fetchall()}


def _equal(sim, cur, org):
    for ent in CHECKS:
        want, got = _live_ids(sim, cur, org, ent)
        if want != got:
            return f"{ent}: {len(want - got)} missing, {len(got - want)} extra"
    return None


def test_up_syncs_shows_progress_and_down_stops(tmp_path):
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TDS_")}
    build = os.environ["TDS_BUILD_DIR"]
    out = None
    for _ in range(3):  # a block of ~40 ports, below the ephemeral range
        base = random.randrange(20000, 31000, 100)
        out = subprocess.run([os.path.join(ROOT, "deploy/local/up"), "--detach", "--clean",
                              "--build-dir", build, "--state", str(state), "--port-base", str(base),
                              "--items", "400", "--orgs", "1", "--processors", "2",
                              "--trickle", "0"],
                             env=env, capture_output=True, text=True, timeout=600)
        if "ports in use" not in out.stderr:
            break
    try:
        print(out.stdout[:8000])
        assert out.returncode == 0, out.stderr[-3000:]
        text = out.stdout
        assert "all stages ready" in text
        # (not always request 1: the fetcher's own first sync may have queued
        # a reconciliation before `up` queued its request)
        assert re.search(r"^following sync request \d+: full all for organization 60001$", text, re.M)
        assert re.search(r"^sync request \d+ done:$", text, re.M), text
        # one line a run, each record once; items came in list and detail pages
        done = dict(re.findall(r"^  (\w+) +full +completed (\d+) records, \d+ fetched", text, re.M))
        assert set(done) == {"warehouses", "item_groups", "items", "contacts", "sales_orders",
                             "invoices"}, text
        assert done["items"] == "400" and done["contacts"] == "100", done
        assert "Look at the data:" in text and f"postgresql://postgres@127.0.0.1:{base}/tds" in text
        # every replica asked for is up, each on ports of its own
        admins = {f.name[:-6]: int(f.read_text()) for f in (state / "run").glob("*.admin")}
        assert set(admins) == {"writer-0", "processor-0", "processor-1", "fetcher-0",
                               "ingress-0"}, admins
        for name, port in admins.items():
            assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, name

        sim = Sim(None, base + 1)
        conn = psycopg2.connect(f"postgresql://postgres@127.0.0.1:{base}/tds")
        conn.autocommit = True
        cur = conn.cursor()
        assert _equal(sim, cur, "60001") is None, _equal(sim, cur, "60001")
        cur.execute("SELECT count(*) FROM zoho.item_stock WHERE org_id = '60001'")
        assert cur.fetchone()[0] >= 400

        # signed webhooks to the ingress `up` started, as its trickle sends them
        sim.webhooks("60001", f"http://127.0.0.1:{base + 2}/webhooks/zoho/60001",
                     secret="demo-webhook-secret")
        sim.stream("60001", rate_per_s=20, seconds=2)
        wait_until(lambda: (cur.execute("SELECT count(*) FROM tds.webhook_events"),
                            cur.fetchone()[0])[1] >= 20, 30, "webhooks applied")
        wait_until(lambda: _equal(sim, cur, "60001") is None, 60, "the tables equal to the truth again")
        cur.execute("SELECT count(*) FROM tds.rejected")
        assert cur.fetchone()[0] == 0
        conn.close()
    finally:
        down = subprocess.run([os.path.join(ROOT, "deploy/local/down"), "--state", str(state)],
                              env=env, capture_output=True, text=True, timeout=120)
        left = list((state / "run").glob("*.pid"))
        logs = {p.name: p.read_text(errors="replace") for p in sorted((state / "logs").glob("*"))
                if p.is_file()}
        # the cluster may live outside the state folder (pytest's folders are
        # root's alone, as /root is): --clean removes it wherever it is
        pg = os.path.realpath(state / "pg")
        clean = subprocess.run([os.path.join(ROOT, "deploy/local/down"), "--state", str(state),
                                "--clean"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not left, f"down left processes behind: {left}"
    for name, text in logs.items():
        check_sanitizers(name, text)
    assert clean.returncode == 0 and not state.exists() and not os.path.exists(pg), clean.stdout


def test_up_with_a_real_organizations_file_asks_for_a_code_then_syncs(tmp_path, sim):
    """TDS_CONFIG names the organizations (here the simulator stands in for
    Zoho, at its own address): an organization without a refresh token stops
    `up` at once with what to do; --auth-code turns a console code into one,
    kept in tds.oauth_tokens, and the sync runs."""
    s = sim(orgs=["id=60001,tz=+0300,stock=warehouses,product=inventory,items=60,groups=5,"
                  "contacts=10,invoices=10,salesorders=10,warehouses=2"],
            extra_args=["--grant-code", "1000.consolecode", "--limits-off"])
    orgs = tmp_path / "orgs.json"
    orgs.write_text(json.dumps({"organizations": [{
        "org_id": "60001", "product": "inventory", "data_center": "com", "accounts_url": s.url,
        "client_id": "1000.SIMCLIENT", "client_secret": "simsecret",
        "webhook_secrets": ["a-secret"], "timezone_offset": "+0300", "daily_reserve": 0}]}))
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TDS_")}
    env["TDS_CONFIG"] = str(orgs)
    build = os.environ["TDS_BUILD_DIR"]

    def up(*extra):
        for _ in range(3):
            base = random.randrange(20000, 31000, 100)
            out = subprocess.run([os.path.join(ROOT, "deploy/local/up"), "--detach",
                                  "--build-dir", build, "--state", str(state),
                                  "--port-base", str(base), "--processors", "1", *extra],
                                 env=env, capture_output=True, text=True, timeout=600)
            if "ports in use" not in out.stderr:
                return base, out
        return base, out

    try:
        _, out = up()
        assert out.returncode == 1, (out.stdout[-2000:], out.stderr[-2000:])
        assert "organization 60001 has no refresh token" in out.stderr and \
            "--auth-code 60001=CODE" in out.stderr, out.stderr
        assert not list((state / "run").glob("*.pid")), "up left processes behind"
        assert "using the real organizations" in out.stdout and "simulator" not in \
            out.stdout.replace("(no simulator)", ""), out.stdout

        base, out = up("--auth-code", "60001=1000.consolecode")
        print(out.stdout[-4000:])
        assert out.returncode == 0, out.stderr[-3000:]
        assert "refresh token stored for organization 60001" in out.stdout
        assert re.search(r"^sync request \d+ done:$", out.stdout, re.M), out.stdout
        conn = psycopg2.connect(f"postgresql://postgres@127.0.0.1:{base}/tds")
        conn.autocommit = True
        cur = conn.cursor()
        assert _equal(s, cur, "60001") is None, _equal(s, cur, "60001")
        cur.execute("SELECT refresh_token IS NOT NULL FROM tds.oauth_tokens WHERE org_id = '60001'")
        assert cur.fetchone() == (True,)
        conn.close()
        assert s.stats()["token"]["code_grants"] == 1, s.stats()["token"]
    finally:
        clean = subprocess.run([os.path.join(ROOT, "deploy/local/down"), "--state", str(state),
                                "--clean"], env=env, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0 and not state.exists(), clean.stdout
