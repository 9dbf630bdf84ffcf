"""tds-fetcher against the Zoho simulator, with the real processor and writer:
full and incremental syncs equal the simulator's truth, limits are never
exceeded and every 429 code is survived, tokens are refreshed once and never
past Zoho's budget, faults are survived, ownership moves when a fetcher dies,
and the progress command follows a run to completion. Records one by one
(fetches by id, details, items and stock) are in test_fetcher_records.py.
"""
import hashlib
import json
import os
import re
import subprocess
import time

import pytest

from conftest import check_sanitizers, free_port, http_get, relay, wait_until
from fetcher_util import (ENTITIES, Pipeline, RateWatch, calls_a_second, org_spec, push_fetches,
                          small_org, zoho_time_to_epoch)
from sim_fixture import CLIENT_ID, REFRESH_TOKEN, sim  # noqa: F401  (fixture)

ALL = list(ENTITIES)


def _wait_for_token_columns(db):
    """Until the writer's migrations have made the last column the token
    statements use (016's failed_credentials), as `auth exchange` checks."""
    wait_until(lambda: db.query("SELECT count(*) FROM information_schema.columns WHERE "
                                "table_schema = 'tds' AND table_name = 'oauth_tokens' AND "
                                "column_name = 'failed_credentials'") == [(1,)], 30,
               "the writer's migrations")


def _cli(bins, env, *args):
    """tds-fetcher ARGS... with env; the finished process (stdout, stderr as text)."""
    return subprocess.run([bins.path("tds-fetcher"), *args], env=env, capture_output=True,
                          text=True, timeout=30)


def test_full_sync_of_every_entity_equals_truth(procs, db, sim, tmp_path):
    s = sim(orgs=[small_org()], extra_args=["--minute-ms", "1000", "--rate-per-min", "400"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000"},
                 orgs=[org_spec("60001", rate_per_min=400)])
    t0 = time.time()
    f = p.start_fetcher()
    runs = p.sync("60001", "all", "full", timeout=180)
    assert sorted(r["entity"] for r in runs) == sorted(ALL)
    # each full run is followed by a reconciliation (what the walk skipped)
    wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_runs WHERE mode = 'reconcile' "
                                "AND status = 'completed'")[0][0] == len(ALL),
               timeout=60, what="the reconciliations after the full runs")
    for ent in ALL:
        p.compare("60001", ent)
    # every version stored says when it was asked for: after the start, before its write
    for table in ("items", "item_groups", "warehouses", "contacts", "invoices", "sales_orders"):
        assert db.query(f"SELECT count(*) FROM zoho.{table} WHERE observed_at IS NULL "
                        "OR observed_at > synced_at OR observed_at < to_timestamp(%s)",
                        t0 - 1) == [(0,)], table
    st = s.stats()["orgs"]["60001"]
    assert st["429"] == {"44": 0, "45": 0, "1070": 0}, st
    # each record's detail fetched once (items 100 a call), lists paged at 200
    assert st["endpoints"]["items.detail"] == 0 and st["endpoints"]["itemdetails"] == 1, st
    assert st["endpoints"]["contacts.detail"] == 30, st
    assert f.metric("tds_fetcher_api_calls_total") == st["requests"]
    assert f.metric("tds_fetcher_api_calls_total",
                    {"endpoint": "items.itemdetails", "status": "200"}) == 1
    assert f.metric("tds_fetcher_api_calls_total", {"endpoint": "contacts.detail", "status": "200"}) == 30
    text = f.metrics()
    for name in ("tds_fetcher_api_seconds_bucket", "tds_fetcher_quota_remaining",
                 "tds_fetcher_tokens_refreshed_total", "tds_fetcher_pages_inflight",
                 "tds_fetcher_run_records"):
        assert name in text, name
    assert f.metric("tds_fetcher_pages_inflight") == 0
    assert f.metric("tds_fetcher_inflight_bytes") == 0   # every page acked
    assert f.metric("tds_fetcher_runs_total", {"status": "completed"}) == 2 * len(ALL)
    assert f.metric("tds_fetcher_last_success_timestamp_seconds", {"entity": "items"}) > time.time() - 120
    status = json.loads(http_get(f.admin_url + "/status")[1])
    org = status["organizations"][0]
    assert org["owned"] and org["token"] == "ok" and org["quota_remaining"] > 0, status


def test_the_fetcher_never_reads_the_webhook_credentials(procs, db, sim, tmp_path, bins):
    """The fetcher takes no webhooks: it resolved every organization's
    webhook secrets too, so their files had to be mounted in its pod. Now
    their sources need not exist; their shape is still checked."""
    s = sim(orgs=[small_org(contacts=20)], extra_args=["--limits-off"])
    hooks = {"webhook_secrets": ["file:/nonexistent/zoho-webhook-secret"],
             "webhook_tokens": ["env:TDS_T_NOT_SET_ANYWHERE"]}
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=6000, **hooks)])
    p.start_fetcher()
    p.sync("60001", "contacts", "full")
    truth = {c["contact_id"] for c in s.truth("60001", "contacts")["records"]}
    assert {r[0] for r in db.query("SELECT contact_id FROM zoho.contacts")} == truth
    p.orgs = [org_spec("60001", webhook_tokens="env:TDS_T_NOT_SET_ANYWHERE")]
    p.write_config()
    out = _cli(bins, dict(os.environ, TDS_DATABASE_URL=db.url, TDS_CONFIG=str(p.config)),
               "auth", "status")
    assert out.returncode == 2, out
    assert "field 'webhook_tokens' must be an array, not a string" in out.stderr, out.stderr


def test_quota_used_fully_without_429(procs, db, sim, tmp_path):
    """A long full sync against N requests per "minute": at least 99% of N
    each minute, no 429, never over N."""
    n, minute = 100, 10000
    s = sim(orgs=[small_org(items=5, contacts=900, invoices=5, salesorders=5, groups=2)],
            extra_args=["--minute-ms", str(minute), "--rate-per-min", str(n)])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": str(minute)},
                 orgs=[org_spec("60001", rate_per_min=n, max_concurrency=10)])
    f = p.start_fetcher()
    rid = p.request("60001", "contacts", "full")   # a detail call per contact
    w = RateWatch(s, "60001")
    # The time the simulator takes to admit k*N requests, measured between
    # two request counts (not two clock readings, which would depend on where
    # in a window they fall).
    k = 4
    t0, r0, _ = w.wait_for(n)
    t1, r1, e1 = w.wait_for(r0 + k * n)
    windows = (t1 - t0) * 1000.0 / minute
    util = (r1 - r0) / (windows * n)
    print(f"quota utilization {util:.4f} ({r1 - r0} requests in {windows:.3f} windows of {n})")
    last = None
    for t, r, _ in w.samples:
        if last is None or r - last[1] >= 25:
            print(f"   t={t - t0:7.3f} r={r - r0}")
            last = (t, r)
    assert e1 == {"44": 0, "45": 0, "1070": 0}, e1
    assert s.stats()["orgs"]["60001"]["429"] == {"44": 0, "45": 0, "1070": 0}
    assert util >= 0.99, util
    assert util <= 1.0 + 1.0 / k, util
    assert db.query("SELECT status FROM tds.sync_runs WHERE run_id LIKE %s", f"rq{rid}.%")[0][0] \
        == "running"


def test_each_429_code_is_survived(procs, db, sim, tmp_path):
    """The simulator allows less than the fetcher is configured for: 44
    (minute), 1070 (concurrency, with slow answers) and 45 (daily, lowered
    mid-run) are all answered, and the sync still ends equal to the truth."""
    minute = 1000
    s = sim(orgs=[small_org(items=5, contacts=150, invoices=5, salesorders=5, groups=2)],
            extra_args=["--minute-ms", str(minute), "--rate-per-min", "30", "--concurrency", "2",
                        "--day-ms", "8000"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": str(minute)},
                 orgs=[org_spec("60001", rate_per_min=60, max_concurrency=6)])
    s.faults(p_slow=0.3, slow_ms=150)
    f = p.start_fetcher()
    rid = p.request("60001", "contacts", "full")   # a detail call per contact
    wait_until(lambda: s.stats()["orgs"]["60001"]["requests"] >= 40, timeout=30, what="requests")
    # well into a simulated day: lowered below what it used, the next call gets code 45
    wait_until(lambda: s.stats()["orgs"]["60001"]["daily_used"] >= 10, timeout=30, what="a day used")
    s.limits(org="60001", daily=1)
    wait_until(lambda: s.stats()["orgs"]["60001"]["429"]["45"] >= 1, timeout=20, what="a 45")
    s.limits(org="60001", daily=0)
    s.faults(clear=True)
    runs = p.wait_request(rid, timeout=180)
    assert runs[0]["status"] == "completed", runs
    st = s.stats()["orgs"]["60001"]["429"]
    print("429s", st, "fetcher", f.metric("tds_fetcher_429_total"))
    assert st["44"] >= 1 and st["1070"] >= 1 and st["45"] >= 1, st
    assert f.metric("tds_fetcher_429_total", {"code": "44"}) == st["44"]
    assert f.metric("tds_fetcher_429_total", {"code": "1070"}) == st["1070"]
    assert f.metric("tds_fetcher_429_total", {"code": "45"}) == st["45"]
    # code 45 stops the organization until the reset: a handful, not a storm
    # (the calls already in flight when the first 45 came back: at most the
    # organization's max_concurrency, 6)
    assert st["45"] <= 6, st
    p.compare("60001", "contacts")


def test_token_expiry_mid_sync_refreshed_once(procs, db, sim, tmp_path):
    s = sim(orgs=[small_org(items=5, contacts=300, invoices=5, salesorders=5, groups=2)],
            extra_args=["--minute-ms", "1000", "--rate-per-min", "100"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000"},
                 orgs=[org_spec("60001", rate_per_min=100)])
    f = p.start_fetcher()
    rid = p.request("60001", "contacts", "full")   # a detail call per contact
    wait_until(lambda: s.stats()["orgs"]["60001"]["requests"] >= 50, timeout=30, what="requests")
    before = s.stats()["token"]["refreshes"]
    s.expire_tokens()
    runs = p.wait_request(rid, timeout=120)
    assert runs[0]["status"] == "completed", runs
    st = s.stats()
    assert st["token"]["refreshes"] == before + 1, st["token"]
    assert st["token"]["access_denied"] == 0
    assert st["orgs"]["60001"]["401"] >= 1
    assert f.metric("tds_fetcher_tokens_refreshed_total") == 2  # start + after expiry
    p.compare("60001", "contacts")


def test_refresh_budget_kept_with_two_fetchers_and_restarts(procs, db, sim, tmp_path):
    """Tokens live in tds.oauth_tokens: two fetchers restarted again and
    again refresh once in total, and never reach Zoho's limit."""
    s = sim(orgs=[small_org("60001", items=30), small_org("60002", items=30)],
            extra_args=["--refresh-limit", "10"])
    p = Pipeline(procs, db, s, tmp_path,
                 orgs=[org_spec("60001"), org_spec("60002")])
    f1 = p.start_fetcher("f1")
    f2 = p.start_fetcher("f2", env={"TDS_FETCHER_BIND": f"tcp://127.0.0.1:{free_port()}"})
    for org in ("60001", "60002"):
        p.sync(org, "items", "full")
    for _ in range(4):
        f1.stop()
        f2.stop()
        f1.start()
        f2.start()
        p.sync("60001", "warehouses", "full")
    st = s.stats()["token"]
    assert st["access_denied"] == 0, st
    assert st["refreshes"] <= 2, st   # one per organization: the token is shared
    rows = db.query("SELECT org_id, refresh_count, status FROM tds.oauth_tokens ORDER BY org_id")
    assert [r[2] for r in rows] == ["ok", "ok"], rows


def test_a_plain_http_api_domain_gets_no_token(procs, db, sim, tmp_path):
    """The access token goes to the api_domain Zoho names. One that is plain
    http:// to another machine (Zoho's are https) would carry it across the
    network in the clear: it is not used, and the log says so."""
    import socket
    import threading
    addrs = [a for a in subprocess.run(["hostname", "-I"], capture_output=True,
                                       text=True).stdout.split() if "." in a]
    if not addrs:
        pytest.skip("this machine has no IPv4 address but loopback")
    got = []
    srv = socket.socket()
    srv.bind((addrs[0], 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            got.append(c.recv(4096))
            c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        s = sim(orgs=[small_org(items=10)])
        p = Pipeline(procs, db, s, tmp_path)
        f = p.start_fetcher()
        p.sync("60001", "warehouses", "full")
        f.stop()
        db.query("UPDATE tds.oauth_tokens SET api_domain = %s, "
                 "expires_at = now() + interval '50 minutes' RETURNING 1",
                 f"http://{addrs[0]}:{srv.getsockname()[1]}")
        f.start()
        p.request("60001", "warehouses", "full")
        refused = "plain http:// to another machine: not used"
        wait_until(lambda: got or refused in f.stderr_text(), 20, "a call or the refusal")
        time.sleep(2)
        assert got == [], got   # before: the token, in the clear
        assert refused in f.stderr_text()
    finally:
        stop.set()
        t.join()
        srv.close()


def test_token_of_another_accounts_server_is_not_used(procs, db, sim, tmp_path):
    """A cached token (and its api_domain) minted by another accounts server,
    e.g. before a data center change, is refreshed rather than used."""
    s = sim(orgs=[small_org(items=10)])
    p = Pipeline(procs, db, s, tmp_path)
    f = p.start_fetcher()
    p.sync("60001", "warehouses", "full")
    assert db.query("SELECT accounts_url FROM tds.oauth_tokens")[0][0] == s.url
    f.stop()
    dead = f"http://127.0.0.1:{free_port()}"
    db.query("UPDATE tds.oauth_tokens SET accounts_url = %s, api_domain = %s, "
             "expires_at = now() + interval '50 minutes' RETURNING 1", dead, dead)
    before = s.stats()["token"]["refreshes"]
    f.start()
    p.sync("60001", "warehouses", "full", timeout=30)
    assert s.stats()["token"]["refreshes"] == before + 1
    assert db.query("SELECT accounts_url, api_domain <> %s FROM tds.oauth_tokens", dead)[0] == (s.url, True)


def test_unreachable_api_domain_of_a_cached_token_refreshes_once(procs, db, sim, tmp_path):
    s = sim(orgs=[small_org(items=10)])
    p = Pipeline(procs, db, s, tmp_path)
    f = p.start_fetcher()
    p.sync("60001", "warehouses", "full")
    f.stop()
    dead = f"http://127.0.0.1:{free_port()}"
    db.query("UPDATE tds.oauth_tokens SET api_domain = %s, "
             "expires_at = now() + interval '50 minutes' RETURNING 1", dead)
    before = s.stats()["token"]["refreshes"]
    f.start()
    runs = p.sync("60001", "warehouses", "full", timeout=30)
    assert len(runs) == 1, runs
    assert s.stats()["token"]["refreshes"] == before + 1
    assert db.query("SELECT api_domain <> %s FROM tds.oauth_tokens", dead)[0][0]


class StripApiDomain:
    """An accounts server in front of the simulator that leaves api_domain out
    of its token answers, as Zoho may in a refresh answer (ZOHO.md 1.1)."""

    def __init__(self, target):
        import threading
        import urllib.error
        import urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        hits = self.hits = [0]

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                req = urllib.request.Request(target + self.path, data=body, method="POST", headers={
                    "Content-Type": "application/x-www-form-urlencoded"})
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        st, data = r.status, r.read()
                except urllib.error.HTTPError as e:
                    st, data = e.code, e.read()
                try:
                    j = json.loads(data)
                    if "access_token" in j:
                        j.pop("api_domain", None)
                        hits[0] += 1
                    data = json.dumps(j).encode()
                except ValueError:
                    pass
                self.send_response(st)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.srv = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        self.url = f"http://127.0.0.1:{self.srv.server_port}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


class TcpProxy:
    """A TCP relay to the simulator that can be taken down (connections
    refused, open ones cut) and brought back on the same port: a network
    outage."""

    def __init__(self, target_port):
        self.port = free_port()
        self.target = target_port
        self.srv = None
        self.conns = []
        self.up()

    def up(self):
        import socket
        import threading
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.srv = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self):
        import socket
        s, self.srv = self.srv, None
        try:
            s.shutdown(socket.SHUT_RDWR)  # wakes the accept(): refused from now on
        except OSError:
            pass
        s.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.conns = []

    def _accept(self, s):
        import socket
        import threading
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            if self.srv is not s:
                c.close()
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=relay, args=(a, b), daemon=True).start()


def test_an_expired_cached_token_refreshed_without_api_domain_keeps_the_stored_one(
        procs, db, sim, tmp_path):
    """After a restart with the cached token expired, a refresh answer without
    api_domain keeps the row's: one refresh, then the sync. Before, the token
    was refreshed, dropped for want of an api_domain, and refreshed again,
    five times per 10 minutes, and the organization never synced."""
    s = sim(orgs=[small_org(items=10)])
    p = Pipeline(procs, db, s, tmp_path)
    f = p.start_fetcher()
    p.sync("60001", "warehouses", "full")
    f.stop()
    acc = StripApiDomain(s.url)
    try:
        db.query("UPDATE tds.oauth_tokens SET accounts_url = %s, expires_at = now() - interval '1 minute', "
                 "refresh_count = 0, refresh_window_start = NULL RETURNING 1", acc.url)
        p.orgs = [org_spec("60001", accounts_url=acc.url)]
        p.write_config()
        before = s.stats()["token"]["refreshes"]
        f.start()
        runs = p.wait_request(p.request("60001", "warehouses", "full"), timeout=40)
        assert [r["status"] for r in runs] == ["completed"], runs
        time.sleep(2)
        assert s.stats()["token"]["refreshes"] == before + 1
        assert acc.hits[0] == 1
        assert db.query("SELECT api_domain, expires_at > now() + interval '50 minutes' "
                        "FROM tds.oauth_tokens")[0] == (s.url, True)
    finally:
        acc.close()


def test_a_network_outage_keeps_the_token_and_the_refresh_budget(procs, db, sim, tmp_path):
    """Neither the API host nor the accounts server can be reached for a
    while: the calls back off, the token (an hour to live) is kept, the one
    refresh tried to see whether the API host moved never reached Zoho and
    does not count, and a run completes soon after the network is back.
    Before, the outage dropped the token, each refresh retry counted, and the
    organization waited for a refresh."""
    s = sim(orgs=[small_org(items=10)])
    api = TcpProxy(s.port)
    acc = TcpProxy(s.port)
    p = Pipeline(procs, db, s, tmp_path,
                 orgs=[org_spec("60001", accounts_url=f"http://127.0.0.1:{acc.port}")])
    f = p.start_fetcher()
    p.sync("60001", "warehouses", "full")
    f.stop()
    db.query("UPDATE tds.oauth_tokens SET api_domain = %s RETURNING 1", f"http://127.0.0.1:{api.port}")
    f.start()
    p.sync("60001", "warehouses", "full")
    before = s.stats()["token"]["refreshes"]
    row = db.query("SELECT access_token, refresh_count FROM tds.oauth_tokens")[0]
    api.down()
    acc.down()
    rid = p.request("60001", "warehouses", "full")
    wait_until(lambda: re.search(r"warehouses\.list:? .*(Couldn't connect|Connection refused)",
                                 f.stderr_text()), timeout=20, what="calls failing")
    time.sleep(15)
    api.up()
    acc.up()
    back = time.time()
    wait_until(lambda: db.query(
        "SELECT count(*) FROM tds.sync_runs WHERE status = 'completed' AND run_id LIKE %s",
        f"rq{rid}.%")[0][0] >= 1, timeout=30, what="a run completed after the outage")
    print("completed", round(time.time() - back, 1), "s after the outage;", p.runs(rid))
    assert s.stats()["token"]["refreshes"] == before
    tok = db.query("SELECT access_token, refresh_count, expires_at > now() + interval '40 minutes', "
                   "locked_until FROM tds.oauth_tokens")[0]
    assert tok == (row[0], row[1], True, None), tok
    assert "asking the accounts server once whether it moved" in f.stderr_text()


def test_faults_are_survived(procs, db, sim, tmp_path):
    """5xx, resets, truncated bodies and slow answers on the API, and a token
    endpoint that hangs: the sync completes and equals the truth."""
    s = sim(orgs=[small_org(items=120, contacts=40, invoices=5, salesorders=5, groups=2)],
            extra_args=["--minute-ms", "1000", "--rate-per-min", "300"])
    p = Pipeline(procs, db, s, tmp_path,
                 fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000", "TDS_FETCHER_TOKEN_TIMEOUT_MS": "500",
                              "TDS_FETCHER_HTTP_TIMEOUT_MS": "2000", "TDS_FETCHER_MAX_ATTEMPTS": "8"},
                 orgs=[org_spec("60001", rate_per_min=300)])
    s.faults(token_hang_ms=2000)
    f = p.start_fetcher()
    rid = p.request("60001", "items", "full")
    wait_until(lambda: "token refresh failed" in f.stderr_text(), timeout=20,
               what="a token timeout")
    s.faults(clear=True)
    s.faults(p500=0.05, p502=0.03, p503=0.03, p_reset=0.04, p_truncate=0.05, p_slow=0.05,
             slow_ms=300, p_expired_token_200=0.02)
    runs = p.wait_request(rid, timeout=120)
    assert runs[0]["status"] == "completed", runs
    rid2 = p.request("60001", "contacts", "full")
    runs = p.wait_request(rid2, timeout=120)
    assert runs[0]["status"] == "completed", runs
    st = s.stats()["orgs"]["60001"]
    assert st["faults"] > 5, st
    # spurious code 57 under HTTP 200 did not burn the refresh budget
    # (the attempts that hung and timed out, a retry of which may have gone
    # out before the clear, plus the one that succeeded)
    hung = f.stderr_text().count("token refresh failed")
    assert s.stats()["token"]["refreshes"] <= hung + 1
    assert s.stats()["token"]["access_denied"] == 0
    s.faults(clear=True)
    p.compare("60001", "items")
    p.compare("60001", "contacts")


def test_persistent_5xx_fails_the_run_clearly_then_it_is_retried(procs, db, sim, tmp_path):
    s = sim(orgs=[small_org(items=20)])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MAX_ATTEMPTS": "3"})
    p.start_fetcher()
    s.faults(p500=1.0)
    rid = p.request("60001", "items", "full")
    wait_until(lambda: any(r["status"] == "failed" for r in p.runs(rid)), timeout=60,
               what="the run to fail")
    runs = p.runs(rid)
    assert runs[0]["status"] == "failed", runs
    assert "failed 3 times" in runs[0]["error"], runs
    assert db.query("SELECT count(*) FROM tds.alerts WHERE rule = 'zoho_sync_failed'")[0][0] == 1
    # The request stays open and the run is retried after a backoff: records the
    # failed run listed must still get their detail.
    assert db.query("SELECT done_at IS NULL FROM tds.sync_requests WHERE id = %s", rid)[0][0]
    s.faults(p500=0.0)
    runs = p.wait_request(rid, timeout=60)
    assert runs[-1]["status"] == "completed", runs
    p.compare("60001", "items")


def test_a_failed_run_sends_none_of_its_queued_calls(procs, db, sim, tmp_path):
    """A run that fails mid-way withdraws its detail calls not sent yet:
    their answers would be thrown away and the retried run asks again."""
    s = sim(orgs=[small_org(items=5, contacts=300, invoices=5, salesorders=5, groups=2)],
            extra_args=["--minute-ms", "10000", "--rate-per-min", "1000"])
    p = Pipeline(procs, db, s, tmp_path,
                 fetcher_env={"TDS_FETCHER_MINUTE_MS": "10000", "TDS_FETCHER_MAX_ATTEMPTS": "2"},
                 orgs=[org_spec("60001", rate_per_min=1000)])
    f = p.start_fetcher()
    rid = p.request("60001", "contacts", "full")   # a detail call per contact, 100 a second
    wait_until(lambda: s.stats()["orgs"]["60001"]["endpoints"]["contacts.detail"] >= 5,
               timeout=30, what="detail calls", interval=0.01)
    # Every call fails from now on. Each detail call waits out its backoff
    # behind the first tries of the others, so when the first fails twice and
    # ends the run, most of the page's calls wait for their second try.
    s.faults(p500=1.0)
    wait_until(lambda: any(r["status"] == "failed" for r in p.runs(rid)), timeout=30,
               what="the run to fail", interval=0.05)
    before = s.stats()["orgs"]["60001"]["requests"]
    m = re.search(r"\((\d+) calls not sent yet withdrawn\)", f.stderr_text())
    assert m and int(m.group(1)) >= 50, m
    time.sleep(4)
    # Before, those calls went on (at 100 a second); now only the retried
    # run's list call reaches Zoho (two tries, 2 s after the failure).
    sent = s.stats()["orgs"]["60001"]["requests"] - before
    assert sent <= 6, sent
    s.faults(clear=True)
    runs = p.wait_request(rid, timeout=120)
    assert runs[0]["status"] == "failed" and runs[-1]["status"] == "completed", runs
    p.compare("60001", "contacts")


def test_an_entity_the_token_may_not_read_fails_alone(procs, db, sim, tmp_path):
    """Zoho answers code 57 both to a dead token and to a token whose scope
    lacks the module (a self-client created without invoices.READ). The
    invoices run fails, once, with an error naming the scope; the token is
    refreshed at most once and every other entity and fetch by id goes on."""
    s = sim(orgs=[small_org()], extra_args=["--minute-ms", "1000", "--rate-per-min", "400"])
    p = Pipeline(procs, db, s, tmp_path,
                 fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000", "TDS_FETCHER_MAX_ATTEMPTS": "3"},
                 orgs=[org_spec("60001", rate_per_min=400)])
    s.faults(deny=["invoices"])   # HTTP 401 code 57, as for a dead token
    f = p.start_fetcher()
    rid = p.request("60001", "all", "full")
    runs = p.wait_request(rid, timeout=120)
    inv = [r for r in runs if r["entity"] == "invoices"]
    assert len(inv) == 1 and inv[0]["status"] == "failed", runs   # not retried
    assert "ZohoInventory.invoices.READ" in inv[0]["error"], inv
    assert "not authorized" in inv[0]["error"], inv
    for r in runs:
        if r["entity"] != "invoices":
            assert r["status"] == "completed", runs
    st = s.stats()
    assert st["token"]["refreshes"] <= 2, st["token"]   # the first token and at most one more
    assert st["token"]["access_denied"] == 0
    for ent in ALL:
        if ent != "invoices":
            p.compare("60001", ent)
    # Asked again: failed at once, without a call to Zoho or a refresh.
    denied = st["orgs"]["60001"]["denied"]
    assert 1 <= denied <= 6, st["orgs"]["60001"]
    runs = p.wait_request(p.request("60001", "invoices", "full"), timeout=30)
    assert len(runs) == 1 and "invoices.READ" in runs[0]["error"], runs
    # meanwhile fetches by id are answered with the same token
    s.mutate("60001", "contacts", update=1)
    truth = {c["contact_id"]: c for c in s.truth("60001", "contacts")["records"]}
    changed = max(truth.values(), key=lambda c: c["last_modified_time"])
    push_fetches(p.fetch_port, [("60001", "contacts", changed["contact_id"])])
    wait_until(lambda: db.query("SELECT extract(epoch from modified_time)::bigint FROM zoho.contacts "
                                "WHERE contact_id = %s", changed["contact_id"])[0][0]
               == zoho_time_to_epoch(changed["last_modified_time"]), timeout=30,
               what="the fetch by id")
    st = s.stats()
    assert st["orgs"]["60001"]["denied"] == denied, st["orgs"]["60001"]
    assert st["token"]["refreshes"] <= 2, st["token"]
    assert f.metric("tds_fetcher_api_denied_total", {"endpoint": "invoices.list"}) >= 2
    status = json.loads(http_get(f.admin_url + "/status")[1])
    org = status["organizations"][0]
    assert org["token"] == "ok", org
    assert [d["endpoint"] for d in org["denied"]] == ["invoices.list"], org
    assert org["denied"][0]["retry_in_s"] > 600, org


def test_a_books_items_refusal_names_the_settings_scope(procs, db, sim, tmp_path):
    """Zoho Books has no items scope: its items calls need
    ZohoBooks.settings.READ (as the README's scope list says). The refusal's
    advice named ZohoBooks.items.READ, a scope no API console offers."""
    s = sim(orgs=["id=60005,tz=+0300,stock=locations,product=books,items=20,groups=0,"
                  "contacts=5,invoices=5,salesorders=5,warehouses=2"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60005", product="books")])
    s.faults(deny=["items"])
    f = p.start_fetcher()
    runs = p.wait_request(p.request("60005", "items", "full"), timeout=60)
    assert len(runs) == 1 and runs[0]["status"] == "failed", runs
    assert "ZohoBooks.settings.READ" in runs[0]["error"], runs
    assert "items.READ" not in runs[0]["error"], runs
    p.sync("60005", "contacts", "full")   # the rest of the token works
    p.compare("60005", "contacts")
    assert f.metric("tds_fetcher_api_denied_total", {"endpoint": "items.list"}) >= 1
    # A fetch of an item group (journaled before the ingress refused them,
    # say) asks nothing of Books, which has no /itemgroups: dropped, counted.
    before = s.stats()["orgs"]["60005"]["requests"]
    push_fetches(p.fetch_port, [("60005", "item_groups", "223456789")])
    wait_until(lambda: f.metric("tds_fetcher_fetches_dropped_total") == 1, 10, "the fetch dropped")
    assert "fetch of item_groups 223456789 skipped: the organization does not sync item_groups" \
        in f.stderr_text()
    assert s.stats()["orgs"]["60005"]["requests"] == before


def test_a_detail_call_refused_at_once_fails_its_run_without_a_crash(procs, db, sim, tmp_path):
    """An endpoint Zoho refused for want of a scope is not asked again for a
    while: its calls fail at once, inside the call that queues them. A run
    whose list then brings one record to fetch in detail got that answer
    while its batch was still being queued, completed and freed the batch,
    and went on using it (use after free, then a double free: a crash).
    Now the run fails with the refusal and the fetcher goes on."""
    s = sim(orgs=[small_org(invoices=1)], extra_args=["--minute-ms", "1000",
                                                      "--rate-per-min", "400"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000"},
                 orgs=[org_spec("60001", rate_per_min=400)])
    s.faults(deny=["invoices"])
    f = p.start_fetcher()
    inv = s.truth("60001", "invoices")["records"][0]["invoice_id"]
    push_fetches(p.fetch_port, [("60001", "invoices", inv)])   # invoices.detail refused
    wait_until(lambda: (f.metric("tds_fetcher_api_denied_total",
                                 {"endpoint": "invoices.detail"}) or 0) >= 1,
               timeout=20, what="invoices.detail refused")
    s.faults(clear=True)        # the list is asked again; the detail not yet
    runs = p.wait_request(p.request("60001", "invoices", "full"), timeout=30)
    print(f"runs {[(r['status'], r['error']) for r in runs]}")
    assert runs and runs[-1]["status"] == "failed" and "not authorized" in runs[-1]["error"], runs
    assert f.p.poll() is None, "the fetcher died"
    # and it goes on: other entities sync
    p.sync("60001", "contacts", "full", settle=False)
    p.compare("60001", "contacts")


def test_many_requests_held_at_once_are_each_run_once(procs, db, sim, tmp_path):
    """60 sync requests for every entity of one organization: some 300 jobs
    held at once by its owner. The claim skips every request held here; it used
    to skip the first 256 job entries only (one per job, six per request),
    so the requests past them were claimed again each second and their jobs
    queued twice: entities synced twice for one request, the queue growing."""
    n = 60
    # 10 calls a (one-second) minute: the runs go one by one, slower than
    # the requests are claimed (16 a second), so their jobs pile up
    s = sim(orgs=[small_org(items=2, groups=1, contacts=2, invoices=2, salesorders=2)],
            extra_args=["--minute-ms", "1000", "--rate-per-min", "10", "--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000"},
                 orgs=[org_spec("60001", rate_per_min=10)])
    p.start_fetcher()
    rids = [p.request("60001", "all", "full") for _ in range(n)]
    wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_requests WHERE done_at IS NULL "
                                "AND id = ANY(%s)", rids)[0][0] == 0,
               timeout=240, interval=1, what="every request done")
    twice = db.query("SELECT split_part(run_id, '.', 1), entity, count(*) FROM tds.sync_runs "
                     "WHERE split_part(run_id, '.', 1) = ANY(%s) GROUP BY 1, 2 "
                     "HAVING count(*) > 1", [f"rq{r}" for r in rids])
    total = db.query("SELECT count(*) FROM tds.sync_runs WHERE split_part(run_id, '.', 1) = "
                     "ANY(%s)", [f"rq{r}" for r in rids])[0][0]
    print(f"{total} runs for {n} requests of every entity; run twice: {twice[:5]}")
    assert twice == [], twice
    assert total == n * len(ALL)


def test_reconcile_after_a_full_sync_runs_from_memory_when_it_cannot_be_requested(
        procs, db, sim, tmp_path):
    """A full sync queues a reconciliation as a request when it completes;
    when that insert fails, the fetcher runs one from memory. It checked
    for a run already pending while the full run itself still counted as
    one, so the reconciliation never ran (the log said it would)."""
    s = sim(orgs=[small_org(items=5, contacts=3, invoices=3, salesorders=3, groups=1)],
            extra_args=["--minute-ms", "1000", "--rate-per-min", "400"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000"},
                 orgs=[org_spec("60001", rate_per_min=400)])
    db.execute("CREATE FUNCTION pg_temp_refuse() RETURNS trigger LANGUAGE plpgsql AS "
               "$$BEGIN RAISE EXCEPTION 'reconcile requests refused (test)'; END$$")
    db.execute("CREATE TRIGGER refuse_reconcile BEFORE INSERT ON tds.sync_requests FOR EACH ROW "
               "WHEN (NEW.mode = 'reconcile') EXECUTE FUNCTION pg_temp_refuse()")
    f = p.start_fetcher()
    p.wait_request(p.request("60001", "contacts", "full"), timeout=60)
    assert "running it from memory" in f.stderr_text()
    wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_runs WHERE entity = 'contacts' "
                                "AND mode = 'reconcile' AND status = 'completed'")[0][0] == 1,
               timeout=30, what="the reconciliation run from memory")


def test_incremental_after_mutations_then_reconcile(procs, db, sim, tmp_path):
    s = sim(orgs=[small_org(items=250, contacts=20, invoices=20, salesorders=20, groups=3)],
            extra_args=["--minute-ms", "1000", "--rate-per-min", "400"])
    # the items the changed documents name are fetched again by a stock run
    # (test_items_whose_stock_documents_moved_are_fetched_again), not counted here
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000",
                                                      "TDS_FETCHER_STOCK_MS": "3600000"},
                 orgs=[org_spec("60001", rate_per_min=400)])
    p.start_fetcher()
    p.sync("60001", "all", "full", timeout=180)
    cursor = db.query("SELECT cursor FROM tds.sync_state WHERE org_id = '60001' AND entity = 'items'")
    assert cursor and cursor[0][0], cursor
    cur = zoho_time_to_epoch(cursor[0][0])
    for ent in ("items", "contacts", "invoices", "sales_orders"):
        s.mutate("60001", ent, update=4, create=2, delete=2)
    s.reset_stats()
    runs = p.sync("60001", "all", "incremental", timeout=120)
    st = s.stats()["orgs"]["60001"]["endpoints"]
    # only the changed records' details were fetched (a delete may hit an
    # updated record, so count the changes in the truth)
    for ent in ("items", "contacts"):
        changed = [r for r in s.truth("60001", ent)["records"]
                   if zoho_time_to_epoch(r["last_modified_time"]) > cur]
        assert 4 <= len(changed) <= 6, changed
        if ent == "items":   # one batch call for them all
            assert st["itemdetails"] == 1 and st["items.detail"] == 0, (ent, st)
        else:
            assert st[f"{ent}.detail"] == len(changed), (ent, st, len(changed))
    inc = {r["entity"]: r for r in runs}
    assert inc["items"]["mode"] == "incremental"
    for ent in ("items", "contacts", "invoices", "sales_orders"):
        p.compare("60001", ent, pending_deletes=True)   # updates and creates
    # deletes: reconciliation lists ids and confirms the missing ones by id
    runs = p.sync("60001", "all", "reconcile", timeout=120)
    for ent in ("items", "contacts", "invoices", "sales_orders"):
        p.compare("60001", ent)
        deleted = db.query(f"SELECT count(*) FROM zoho.{ENTITIES[ent][0]} WHERE org_id = '60001' "
                           "AND deleted_at IS NOT NULL")[0][0]
        # a delete may hit a record created after the full sync: never here
        had = [d for d in s.truth("60001", ent)["deleted"]
               if db.query(f"SELECT 1 FROM zoho.{ENTITIES[ent][0]} WHERE org_id = '60001' "
                           f"AND {ENTITIES[ent][1]} = %s", d["id"])]
        assert deleted == len(had) >= 1, (ent, deleted, len(had))


def test_reconciliation_fetches_what_is_missing_or_older(procs, db, sim, tmp_path):
    """A reconciliation lists every id with its modified time: it fetches the
    records the database lacks and those it holds at an older version (a
    delete during an incremental walk shifts the pages, and the cursor then
    passes the change it skipped), and confirms the ones Zoho no longer lists."""
    s = sim(orgs=[small_org(items=80)], extra_args=["--rate-per-min", "100000", "--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=100000)])
    p.start_fetcher()
    p.sync("60001", "items", "full")
    m = s.mutate("60001", "items", update=3, create=2, delete=1)
    assert (len(m["updated"]), len(m["created"]), len(m["deleted"])) == (3, 2, 1), m
    s.reset_stats()
    p.sync("60001", "items", "reconcile")
    p.compare("60001", "items")
    st = s.stats()["orgs"]["60001"]["endpoints"]
    # 3 changed and 2 new in one batch call; the id Zoho no longer lists in
    # another (a listing can skip a record that moved), which leaves it out,
    # so a call of its own confirms it gone (1002)
    assert st["itemdetails"] == 2 and st["items.detail"] == 1, st


def test_second_fetcher_takes_over_after_sigkill(procs, db, sim, tmp_path):
    s = sim(orgs=[small_org(items=400, contacts=5, invoices=5, salesorders=5, groups=2)],
            extra_args=["--minute-ms", "1000", "--rate-per-min", "120"])
    # (the fetcher taking over counts the calls its predecessor may have had
    # in flight as ending up to the HTTP timeout later: 5 s here, not 30)
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000",
                                                      "TDS_FETCHER_HTTP_TIMEOUT_MS": "5000"},
                 orgs=[org_spec("60001", rate_per_min=120)])
    f1 = p.start_fetcher("f1")
    wait_until(lambda: db.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0] >= 1,
               timeout=10, what="f1 owns the organization")
    f2 = p.start_fetcher("f2", env={"TDS_FETCHER_BIND": f"tcp://127.0.0.1:{free_port()}"})
    rid = p.request("60001", "items", "full")
    wait_until(lambda: db.query("SELECT records_fetched FROM tds.sync_runs")[0][0] > 150
               if db.query("SELECT count(*) FROM tds.sync_runs")[0][0] else False,
               timeout=30, what="the run under way")
    f1.kill()
    t0 = time.monotonic()
    wait_until(lambda: "acquired organization lock" in f2.stderr_text(), timeout=15,
               what="f2 takes the organization")
    took = time.monotonic() - t0
    runs = p.wait_request(rid, timeout=120)
    print(f"takeover in {took:.1f}s; runs {[(r['status'], r['error']) for r in runs]}")
    assert took < 10
    assert runs[-1]["status"] == "completed", runs
    assert runs[0]["status"] == "failed" and "abandoned" in runs[0]["error"], runs
    p.compare("60001", "items")
    st = s.stats()["orgs"]["60001"]
    assert st["429"] == {"44": 0, "45": 0, "1070": 0}, st


def test_a_new_owner_starts_its_last_success_gauge_from_the_database(procs, db, sim, tmp_path):
    """tds_fetcher_last_success_timestamp_seconds, which the entity-stale
    alert reads, was set only by a run of the fetcher's own: after a restart
    it was absent until a run completed, so runs that hung raised nothing.
    A new owner sets it from tds.sync_state; an entity never synced has none
    (counted from the takeover, a fetcher restarting over and over would
    keep it fresh)."""
    s = sim(orgs=[small_org(items=10, contacts=2, invoices=2, salesorders=2, groups=1)])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001")])
    f1 = p.start_fetcher("f1")
    p.sync("60001", "warehouses", "full")
    done = db.query("SELECT extract(epoch FROM last_success_at)::float8 FROM tds.sync_state "
                    "WHERE org_id = '60001' AND entity = 'warehouses'")[0][0]
    f1.stop()
    f2 = p.start_fetcher("f2")
    gauge = "tds_fetcher_last_success_timestamp_seconds"
    wait_until(lambda: f2.metric(gauge, {"entity": "warehouses"}) is not None, 15,
               "the gauge of the new owner")
    assert abs(f2.metric(gauge, {"entity": "warehouses"}) - done) < 0.01
    assert f2.metric(gauge, {"entity": "items"}) is None


def test_a_fetcher_started_over_keeps_the_minute_limit(procs, db, sim, tmp_path):
    """A fetcher killed halfway through a minute of full-pace calls and
    another started at once (a crash, a rolling deploy): the new owner
    starts from the calls the old one recorded in tds.quota_use and the
    server's minute never holds more than N. Before, it started with an empty
    minute and a quarter minute of credit on top of the old one's calls:
    code 44s."""
    n, minute = 100, 10000
    s = sim(orgs=[small_org(items=5, contacts=1500, invoices=5, salesorders=5, groups=2)],
            extra_args=["--minute-ms", str(minute), "--rate-per-min", str(n)])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": str(minute)},
                 orgs=[org_spec("60001", rate_per_min=n, max_concurrency=10)])
    f1 = p.start_fetcher("f1")
    p.request("60001", "contacts", "full")   # a detail call per contact
    w = RateWatch(s, "60001")
    w.wait_for(n)                            # at full pace
    # Find a minute's start on the simulator's clock, then kill f1 halfway
    # through that minute, with about N/2 of its calls in it.
    fin = s.stats()["orgs"]["60001"]["minutes"]["finished"]
    wait_until(lambda: s.stats()["orgs"]["60001"]["minutes"]["finished"] > fin, timeout=minute / 500,
               interval=0.005, what="a minute boundary")
    time.sleep(minute / 2000)
    _, r_kill, _ = w.sample()
    f1.kill()
    row = db.query("SELECT instance, in_flight, cardinality(done_at), now() - saved_at "
                   "FROM tds.quota_use WHERE org_id = '60001'")
    print(f"killed f1 after {r_kill} calls; its last record: {row}")
    # written within the last second or two, not a stale one
    assert row and row[0][0] == "fetcher.f1" and row[0][3].total_seconds() < 2.5, row
    f2 = p.start_fetcher("f2")
    p.request("60001", "contacts", "full")   # f1's run is abandoned; f2 starts one at once
    wait_until(lambda: "started from the previous owner's quota use" in f2.stderr_text(),
               timeout=15, what="f2 takes the organization over")
    _, r_end, e = w.wait_for(r_kill + 2 * n, timeout=60)
    print(f"f2: {r_end - r_kill} calls since the kill; 429s {e}; "
          f"minutes admitted {s.stats()['orgs']['60001']['minutes']['admitted'][-4:]}")
    assert e == {"44": 0, "45": 0, "1070": 0}, e
    assert all(c <= n for c in s.stats()["orgs"]["60001"]["minutes"]["admitted"])
    # and f2 records its own use in turn
    wait_until(lambda: db.query("SELECT instance FROM tds.quota_use")[0][0] == "fetcher.f2",
               timeout=5, what="f2's record")


def test_a_fetcher_stopped_gently_hands_over_the_whole_minute(procs, db, sim, tmp_path):
    """A fetcher stopped by SIGTERM (a rolling deploy) writes a last quota
    record before it lets its organizations go, marked as such (stopped_at
    equal to saved_at): its successor counts the calls it made and none it
    could have made after. Before, the successor had to assume calls at the
    old pace until the old licence ran out, held for the HTTP timeout and a
    window: here (the default owner check, 2 s) a third of the allowance for
    two windows."""
    n, minute = 100, 10000
    s = sim(orgs=[small_org(items=5, contacts=1500, invoices=5, salesorders=5, groups=2)],
            extra_args=["--minute-ms", str(minute), "--rate-per-min", str(n)])
    p = Pipeline(procs, db, s, tmp_path,
                 fetcher_env={"TDS_FETCHER_MINUTE_MS": str(minute),
                              "TDS_FETCHER_OWNER_CHECK_MS": "2000"},
                 orgs=[org_spec("60001", rate_per_min=n, max_concurrency=10)])
    f1 = p.start_fetcher("f1")
    p.request("60001", "contacts", "full")   # a detail call per contact
    w = RateWatch(s, "60001")
    w.wait_for(n)                            # at full pace
    f1.stop()
    _, r_stop, _ = w.sample()
    assert "recorded the last quota use of 1 organizations" in f1.stderr_text()
    row = db.query("SELECT instance, stopped_at = saved_at, in_flight, cardinality(done_at) "
                   "FROM tds.quota_use WHERE org_id = '60001'")
    print(f"stopped f1 after {r_stop} calls; its last record: {row}")
    assert row and row[0][:2] == ("fetcher.f1", True), row
    f2 = p.start_fetcher("f2")
    wait_until(lambda: "its last record (it stopped" in f2.stderr_text(), timeout=15,
               what="f2 takes the organization over from the last record")
    t_over, r_over, _ = w.sample()
    # f2 runs the open request again; the record's calls leave the window
    # at the pace they were made, so f2 can make about N in each window
    span = 2 * minute / 1000 + 2
    while time.monotonic() < t_over + span:
        time.sleep(0.1)
    _, r_end, e = w.sample()
    got = r_end - r_over
    print(f"f2: {got} calls in the {span:.0f} s after the takeover "
          f"({r_over - r_stop} between the stop and it); 429s {e}; "
          f"minutes admitted {s.stats()['orgs']['60001']['minutes']['admitted'][-4:]}")
    assert e == {"44": 0, "45": 0, "1070": 0}, e
    assert all(c <= n for c in s.stats()["orgs"]["60001"]["minutes"]["admitted"])
    assert got >= 2 * n * 9 // 10, f"f2 made {got} calls in two windows after the takeover"
    # and its own records are not last records
    wait_until(lambda: db.query("SELECT instance, stopped_at FROM tds.quota_use")[0]
               == ("fetcher.f2", None), timeout=5, what="f2's record")


def test_an_owner_that_lost_its_lock_stops_calling_within_its_licence(procs, db, sim, tmp_path):
    """A fetcher whose lock session ends while it lives on (the server ended
    that session; its other connections work) goes on calling until its
    owner check notices, up to TDS_FETCHER_OWNER_CHECK_MS later. The fetcher
    that takes the organization over claims its row in tds.quota_use in the
    statement that reads it, so the old owner's writes stop landing: its
    licence to call is not renewed and it stops within 5 s of its last
    record, as the new owner assumed. Before, each of its writes renewed its
    licence and overwrote the new owner's record until it noticed."""
    n, minute, check = 100, 10000, "40000"
    s = sim(orgs=[small_org(items=5, contacts=1500, invoices=5, salesorders=5, groups=2)],
            extra_args=["--minute-ms", str(minute), "--rate-per-min", str(n)])
    p = Pipeline(procs, db, s, tmp_path,
                 fetcher_env={"TDS_FETCHER_MINUTE_MS": str(minute),
                              "TDS_FETCHER_OWNER_CHECK_MS": check},
                 orgs=[org_spec("60001", rate_per_min=n, max_concurrency=10)])
    f1 = p.start_fetcher("f1")
    p.request("60001", "contacts", "full")   # a detail call per contact: minutes of work
    w = RateWatch(s, "60001")
    w.wait_for(20)
    locks = db.query("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                     "AND objid::text::bigint = hashtext('tds-org:60001')::bigint & 4294967295")
    assert len(locks) == 1, locks
    db.query("SELECT pg_terminate_backend(%s)", locks[0][0])
    f2 = p.start_fetcher("f2", env={"TDS_FETCHER_BIND": f"tcp://127.0.0.1:{free_port()}"})
    wait_until(lambda: "started from the previous owner's quota use" in f2.stderr_text(),
               timeout=10, what="f2 takes the organization over")
    t_over = time.monotonic()
    wait_until(lambda: "another fetcher has claimed this organization's quota record"
               in f1.stderr_text(), timeout=5, what="f1 sees its record claimed")
    calls = "tds_fetcher_api_calls_total"
    rows = set()
    while time.monotonic() < t_over + 6.5:
        rows.add(tuple(db.query("SELECT instance, claim FROM tds.quota_use")[0]))
        time.sleep(0.2)
    stopped = f1.metric(calls, {"org": "60001"})
    while time.monotonic() < t_over + 12:
        rows.add(tuple(db.query("SELECT instance, claim FROM tds.quota_use")[0]))
        time.sleep(0.2)
    later = f1.metric(calls, {"org": "60001"})
    print(f"f1 calls 6.5 s after the takeover {stopped:.0f}, 12 s after {later:.0f}; "
          f"records seen {rows}")
    # f1 still believes it owns the organization: its owner check has not run
    assert "lost ownership" not in f1.stderr_text()
    assert later == stopped, "the old owner went on calling past its licence"
    assert len(rows) == 1 and next(iter(rows))[0] == "fetcher.f2", rows
    assert w.sample()[2] == {"44": 0, "45": 0, "1070": 0}


def test_a_quota_record_read_late_replaces_the_full_window(procs, db, sim, tmp_path):
    """A fetcher that takes an organization over and cannot read its
    tds.quota_use record (the database restarting, say) counts a full window
    of calls and tries again each second. Once the record is read, that
    stand-in goes: calls start within seconds, and the record it writes holds
    only calls made. Before, the stand-in stayed for its whole window and
    was saved as that many calls made, so that the next owner waited out
    the window as well (the chaos test saw a run held for ~58 s after a
    PostgreSQL restart)."""
    n, minute = 100, 20000
    s = sim(orgs=[small_org(items=5, contacts=5, invoices=5, salesorders=5, groups=2)],
            extra_args=["--minute-ms", str(minute), "--rate-per-min", str(n)])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": str(minute)},
                 orgs=[org_spec("60001", rate_per_min=n)])
    wait_until(lambda: db.query("SELECT to_regclass('tds.quota_use') IS NOT NULL")[0][0],
               timeout=30, what="the writer's migrations")
    db.execute("ALTER TABLE tds.quota_use RENAME TO quota_use_away")
    try:
        f1 = p.start_fetcher("f1")
        wait_until(lambda: "could not read the previous owner's quota use" in f1.stderr_text(),
                   timeout=10, what="f1 fails to read the record")
    finally:
        db.execute("ALTER TABLE tds.quota_use_away RENAME TO quota_use")
    t_back = time.monotonic()
    wait_until(lambda: db.query("SELECT count(*) FROM tds.quota_use WHERE instance = 'fetcher.f1'"
                                )[0][0] == 1, timeout=10, what="f1 claims the record")
    runs = p.sync("60001", "items", "full", timeout=60, settle=False)
    took = time.monotonic() - t_back
    done = db.query("SELECT cardinality(done_at) FROM tds.quota_use WHERE org_id = '60001'")[0][0]
    print(f"items synced {took:.1f} s after the record could be read "
          f"({sum(r['api_calls'] for r in runs)} calls); calls in the record: {done}")
    assert took < minute / 2000, "the stand-in window still held the calls"
    assert done is not None and done < n / 2, done
    assert s.stats()["orgs"]["60001"]["429"] == {"44": 0, "45": 0, "1070": 0}


def _keepalive_s(line):
    """The seconds left on an `ss -o` keepalive timer, or None."""
    m = re.search(r"timer:\(keepalive,(?:(\d+)min)?(\d+(?:\.\d+)?)(m?s)", line)
    if not m:
        return None
    secs = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
    return int(m.group(1) or 0) * 60 + secs


def test_database_sessions_probe_a_vanished_peer_within_a_minute(procs, db, pg, sim, tmp_path):
    """The fetcher's connections keep TCP keepalive at 30 s (not the kernel's
    two hours), and the server's end of its organization-lock session does
    too: a fetcher whose node dies without a FIN leaves its organizations
    locked for about a minute, not for hours."""
    s = sim(orgs=[small_org()])
    p = Pipeline(procs, db, s, tmp_path)
    f1 = p.start_fetcher("f1")
    wait_until(lambda: db.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0] >= 1,
               timeout=10, what="f1 owns the organization")

    def socks(flt):
        out = subprocess.run(["ss", "-tnpoH", "state", "established", flt],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        return [ln for ln in out.splitlines() if ln.strip()]

    def sample():
        mine = [ln for ln in socks(f"( dport = :{pg.port} )") if f"pid={f1.p.pid}," in ln]
        ports = {ln.split()[2].rsplit(":", 1)[1] for ln in mine}
        server = [ln for ln in socks(f"( sport = :{pg.port} )")
                  if ln.split()[3].rsplit(":", 1)[1] in ports]
        return mine, server

    # ss shows one timer a socket: one just written to shows its retransmit
    # or delayed-ack timer instead of keepalive for a moment, so look again
    # until the timers settle.
    def probed():
        mine, server = sample()
        client_ok = bool(mine) and all((k := _keepalive_s(ln)) is not None and k <= 30
                                       for ln in mine)
        server_ok = len(server) == len(mine) and any(
            (k := _keepalive_s(ln)) is not None and k <= 30 for ln in server)
        return client_ok and server_ok

    deadline = time.monotonic() + 10
    ok = probed()
    while not ok and time.monotonic() < deadline:
        time.sleep(0.2)
        ok = probed()
    if not ok:
        mine, server = sample()
        assert mine, "no connection of the fetcher to PostgreSQL"
        assert all(k is not None and k <= 30 for k in map(_keepalive_s, mine)), mine
        assert len(server) == len(mine), (server, mine)
        assert any(k is not None and k <= 30 for k in map(_keepalive_s, server)), server


def test_progress_command_says_when_no_fetcher_takes_the_request(db, tmp_path, bins):
    """With no fetcher running, `tds-fetcher sync` waits for one, and after
    15 s says what to check instead of counting seconds in silence."""
    config = tmp_path / "orgs.json"
    config.write_text(json.dumps({"organizations": [org_spec("60001")]}))
    env = dict(os.environ, TDS_DATABASE_URL=db.url, TDS_CONFIG=str(config))
    subprocess.run([bins.path("tds-writer"), "migrate"], env=env, check=True, capture_output=True,
                   timeout=60)
    try:
        r = subprocess.run([bins.path("tds-fetcher"), "sync", "--org", "60001"], env=env,
                           capture_output=True, text=True, timeout=18)
        raise AssertionError(f"sync returned with no fetcher running: {r}")
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    assert "waiting for a fetcher to take the request (0s)" in out, out
    assert "none has; is a tds-fetcher running" in out, out
    assert db.query("SELECT count(*) FROM tds.sync_requests WHERE claimed_by IS NULL")[0][0] == 1


def test_sync_command_succeeds_when_a_retried_run_completes(procs, db, sim, tmp_path, bins):
    """`tds-fetcher sync` judges each entity by its latest run: an attempt
    that failed and was retried is shown, but the exit status is 0."""
    s = sim(orgs=[small_org(items=10)])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MAX_ATTEMPTS": "1"})
    p.start_fetcher()
    p.sync("60001", "warehouses", "full")
    s.faults(p500=1.0)
    env = dict(os.environ, TDS_DATABASE_URL=db.url, TDS_CONFIG=str(p.config),
               TDS_ADMIN_LISTEN="127.0.0.1:1")
    cli = subprocess.Popen([bins.path("tds-fetcher"), "sync", "--org", "60001", "--entity", "warehouses",
                            "--mode", "full"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_runs WHERE status = 'failed'")[0][0] >= 1,
                   timeout=30, what="a failed run")
        s.faults(p500=0.0)
        out, err = cli.communicate(timeout=90)
    finally:
        if cli.poll() is None:
            cli.kill()
    print(out, err)
    assert cli.returncode == 0, (out, err)
    assert re.search(r"warehouses +full +failed ", out), out
    assert re.search(r"warehouses +full +completed ", out), out
    assert "earlier attempt did not complete and was retried" in out, out


def test_sync_command_names_an_entity_that_never_ran(procs, db, sim, tmp_path, bins):
    """`tds-fetcher sync --entity all` judged only the entities that had a
    run: one with none (its run row could not be inserted through all of its
    retries, or a fetcher whose TDS_CONFIG syncs fewer entities, as here) was
    left out, and the command said done and exited 0. Now it names each
    requested entity without a run and exits 1."""
    s = sim(orgs=[small_org(items=5)])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", entities=["warehouses"])])
    p.start_fetcher()
    cli_cfg = tmp_path / "cli.json"
    cli_cfg.write_text(json.dumps({"organizations": [
        dict(org_spec("60001", entities=["warehouses", "item_groups"]), accounts_url=s.url)]}))
    env = dict(os.environ, TDS_DATABASE_URL=db.url, TDS_CONFIG=str(cli_cfg),
               TDS_ADMIN_LISTEN="127.0.0.1:1")
    out = _cli(bins, env, "sync", "--org", "60001", "--entity", "all", "--mode", "full")
    print(out.stdout, out.stderr)
    assert re.search(r"warehouses +full +completed ", out.stdout), out.stdout
    assert re.search(r"^  item_groups +no run", out.stdout, re.M), out.stdout
    assert "without a run of item_groups" in out.stderr, out.stderr
    assert out.returncode == 1, (out.stdout, out.stderr)
    # every requested entity ran: 0, as before
    out = _cli(bins, dict(env, TDS_CONFIG=str(p.config)), "sync", "--org", "60001", "--entity", "all",
               "--mode", "full")
    assert out.returncode == 0 and "no run" not in out.stdout, (out.stdout, out.stderr)
    # One entity the organization does not sync: said at once, nothing
    # queued (it was queued, closed without a run, and exited 1).
    cli_cfg.write_text(json.dumps({"organizations": [
        dict(org_spec("60001", entities=["warehouses"]), accounts_url=s.url),
        dict(org_spec("60009", product="books"), accounts_url=s.url)]}))
    queued = db.query("SELECT count(*) FROM tds.sync_requests")[0][0]
    out = _cli(bins, env, "sync", "--org", "60001", "--entity", "items", "--mode", "full")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "organization '60001' does not sync 'items'" in out.stderr, out.stderr
    out = _cli(bins, env, "sync", "--org", "60009", "--entity", "item_groups", "--mode", "full")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "entity 'item_groups' does not exist in Zoho Books" in out.stderr, out.stderr
    assert db.query("SELECT count(*) FROM tds.sync_requests")[0][0] == queued


def test_following_a_request_reads_its_runs_not_the_table(procs, db, sim, tmp_path, bins):
    """tds-fetcher sync polls the request's runs twice a second. It found
    them by run_id LIKE 'rq<id>.%', which the primary key cannot serve
    outside the C collation: each poll read all of tds.sync_runs (90 days of
    runs; 445 ms a poll at 1.5 million). Now by organization, entity and a
    start not before the request, through sync_runs_org_entity_idx."""
    s = sim(orgs=[small_org(contacts=40)], extra_args=["--limits-off"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=6000)])
    f = p.start_fetcher()
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, started_at, "
               "finished_at, updated_at) SELECT 'old' || g, '60001', 'contacts', 'incremental', "
               "'completed', now() - g * interval '20 seconds', now() - g * interval '20 seconds', "
               "now() - g * interval '20 seconds' FROM generate_series(100, 200000) g")
    db.execute("ANALYZE tds.sync_runs")

    def seq_scans():
        db.execute("SELECT pg_stat_clear_snapshot()")
        return db.query("SELECT seq_scan FROM pg_stat_user_tables "
                        "WHERE schemaname = 'tds' AND relname = 'sync_runs'")[0][0]
    time.sleep(1)
    before = seq_scans()
    env = dict(os.environ, TDS_DATABASE_URL=db.url, TDS_CONFIG=str(p.config),
               TDS_ADMIN_LISTEN=f"127.0.0.1:{f.admin_port}")
    for entity in ("contacts", "all"):
        out = subprocess.run([bins.path("tds-fetcher"), "sync", "--org", "60001", "--entity", entity,
                              "--mode", "full"], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert re.search(r"contacts +full +completed 40 records", out.stdout), out.stdout
    time.sleep(1)   # statistics reach pg_stat_user_tables within a second or so
    assert seq_scans() == before, "a poll read tds.sync_runs whole"


def test_progress_command_follows_a_run(procs, db, sim, tmp_path, bins):
    s = sim(orgs=[small_org(contacts=120)], extra_args=["--minute-ms", "1000", "--rate-per-min", "40"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000"},
                 orgs=[org_spec("60001", rate_per_min=40)])
    f = p.start_fetcher()
    env = dict(os.environ, TDS_DATABASE_URL=db.url, TDS_CONFIG=str(p.config),
               TDS_ADMIN_LISTEN=f"127.0.0.1:{f.admin_port}")
    out = subprocess.run([bins.path("tds-fetcher"), "sync", "--org", "60001", "--entity", "contacts",
                          "--mode", "full"], env=env, capture_output=True, text=True, timeout=120)
    print(out.stdout)
    assert out.returncode == 0, out.stderr
    assert "sync request 1 queued" in out.stdout
    # TDS_ADMIN_LISTEN points at the running fetcher: its quota figure, not "?"
    assert re.search(r"calls left today \d+", out.stdout), out.stdout
    # the first sync: Zoho gives no total and the table is empty, so the bar
    # counts the request's runs and the line no estimate
    running = re.findall(r"^\[([#-]{20})\] 1/1 contacts full: (\d+) records(.*)$", out.stdout, re.M)
    assert running and all(" of ~" not in rest for _, _, rest in running), out.stdout
    # each record walked and written once, though it came twice: in its list
    # page and its detail page
    assert re.search(r"contacts +full +completed 120 records, 240 fetched / 120 written / 0 rejected "
                     r"in \d+ pages, \d+ api calls", out.stdout), out.stdout
    assert "sync request 1 done" in out.stdout
    p.compare("60001", "contacts")
    # again, with every row stored as if only listed, so that the walk asks
    # for 120 details: now the table says how many records the walk will
    # pass, and the bar follows the walk. After the reconciliation the full
    # sync queued, which would fetch those details itself.
    p.settle("60001")
    db.execute("UPDATE zoho.contacts SET is_detail = false, content_hash = 'list-form' "
               "WHERE org_id = '60001'")
    out = subprocess.run([bins.path("tds-fetcher"), "sync", "--org", "60001", "--entity", "contacts",
                          "--mode", "full"], env=env, capture_output=True, text=True, timeout=120)
    print(out.stdout)
    assert out.returncode == 0, out.stderr
    running = re.findall(r"^\[([#-]{20})\] 1/1 contacts full: (\d+) records of ~120,", out.stdout, re.M)
    assert running, out.stdout
    # never shown finished while running, and never behind the records walked
    for bar, walked in running:
        assert bar.count("#") == int(20 * min(int(walked) / 120, 0.99)) and "-" in bar, (bar, walked)
    assert re.search(r"contacts +full +completed 120 records, 240 fetched / 120 written", out.stdout), \
        out.stdout
    p.compare("60001", "contacts")
    # detached, then a bad argument
    out = subprocess.run([bins.path("tds-fetcher"), "sync", "--org", "60001", "--entity", "contacts",
                          "--mode", "incremental", "--detach"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and "queued" in out.stdout
    rid = re.search(r"sync request (\d+) queued", out.stdout).group(1)
    # followed afterwards, as deploy/local/up follows the requests it queued at once
    out = subprocess.run([bins.path("tds-fetcher"), "sync", "--follow", rid], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out
    assert f"following sync request {rid}: incremental contacts for organization 60001" in out.stdout
    assert re.search(rf"^sync request {rid} done:\n  contacts +incremental +completed", out.stdout,
                     re.M), out.stdout
    # the id with a leading zero is the same request (its runs are rq<n>.*): it
    # said the request closed without a run
    out = subprocess.run([bins.path("tds-fetcher"), "sync", "--follow", "0" + rid], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "contacts +incremental +completed" not in out.stderr, out
    assert re.search(r"contacts +incremental +completed", out.stdout), out.stdout
    for args, err in ((["--follow", "99999"], "no sync request 99999"),
                      (["--follow", rid, "--org", "60001"], "--follow takes the request's id alone"),
                      (["--follow", "x1"], "invalid --follow")):
        out = subprocess.run([bins.path("tds-fetcher"), "sync"] + args, env=env,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and err in out.stderr, (args, out)
    out = subprocess.run([bins.path("tds-fetcher"), "sync", "--org", "60001", "--entity", "nope"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    out = _cli(bins, env, "auth", "status")
    assert out.returncode == 0 and "60001" in out.stdout and "ok" in out.stdout
    assert "1000." not in out.stdout  # no token is ever printed
    # Zoho's words reach the terminal without control characters
    db.execute("UPDATE tds.oauth_tokens SET last_error = %s WHERE org_id = '60001'",
               "invalid_code \x1b[2J\x1b]0;x\x07")
    out = _cli(bins, env, "auth", "status")
    assert "invalid_code ?[2J?]0;x?" in out.stdout and "\x1b" not in out.stdout, out.stdout


def test_a_request_for_every_entity_stays_open_while_a_run_waits_for_its_retry(
        procs, db, sim, tmp_path):
    """A request for every entity was closed when its last entity's run
    ended, though an earlier entity's run had failed and its retry was still
    waiting out its backoff: `tds-fetcher sync` saw the request done with
    that entity failed (exit 1), and a restart before the retry lost it. Now
    the request is done when none of its runs is queued or running."""
    s = sim(orgs=[small_org(contacts=3)], extra_args=["--limits-off"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MAX_ATTEMPTS": "3"},
                 orgs=[org_spec("60001", rate_per_min=6000, entities=["warehouses", "contacts"])])
    p.start_fetcher()
    s.faults(p500=1.0)
    try:
        rid = p.request("60001", "all", "full")
        # warehouses fail (three tries, ~1 s) and wait 2 s for their retry;
        # contacts start at once, their list call on its second try by then
        wait_until(lambda: any(r["status"] == "failed" for r in p.runs(rid)), timeout=20,
                   what="the warehouses run to fail", interval=0.01)
    finally:
        s.faults(clear=True)
    runs = p.wait_request(rid, timeout=30)
    print([(r["entity"], r["status"]) for r in runs])
    assert runs[0]["entity"] == "warehouses" and runs[0]["status"] == "failed", runs
    latest = {r["entity"]: r["status"] for r in runs}   # in order of start
    assert latest == {"warehouses": "completed", "contacts": "completed"}, runs
    # closed after the last of its runs ended, not when the last one started ended
    assert db.query("SELECT done_at >= (SELECT max(finished_at) FROM tds.sync_runs WHERE run_id "
                    "LIKE %s) FROM tds.sync_requests WHERE id = %s", f"rq{rid}.%", rid)[0][0]


def test_request_goes_ahead_of_scheduled_runs(procs, db, sim, tmp_path):
    """A fetcher busy with its schedule (every entity due at start) takes a
    request within about a second and runs it right after the current run."""
    s = sim(orgs=[small_org(items=200, contacts=60, invoices=60, salesorders=60, groups=3)],
            extra_args=["--minute-ms", "1000", "--rate-per-min", "150"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=150)],
                 fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000", "TDS_FETCHER_SCHEDULE": "true"})
    p.start_fetcher()
    wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_runs")[0][0] >= 1, timeout=20,
               what="the schedule to start")
    rid = p.request("60001", "invoices", "full")
    t0 = time.monotonic()
    wait_until(lambda: db.query("SELECT claimed_at IS NOT NULL FROM tds.sync_requests WHERE id = %s",
                                rid)[0][0], timeout=5, what="the request to be claimed")
    claimed = time.monotonic() - t0
    runs = p.wait_request(rid, timeout=120)
    assert runs[-1]["status"] == "completed", runs
    between = db.query(
        "SELECT run_id FROM tds.sync_runs WHERE run_id NOT LIKE 'rq%%' AND started_at > "
        "(SELECT claimed_at FROM tds.sync_requests WHERE id = %s) AND started_at < "
        "(SELECT min(started_at) FROM tds.sync_runs WHERE run_id LIKE %s)", rid, f"rq{rid}.%")
    print(f"claimed in {claimed:.2f}s; scheduled runs started between: {between}")
    assert claimed < 2.5
    assert between == [], between


def test_invalid_refresh_token_pauses_the_org(procs, db, sim, tmp_path):
    s = sim(orgs=[small_org(items=10)])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", refresh_token="1000.wrong")])
    f = p.start_fetcher()
    runs = p.wait_request(p.request("60001", "items", "full"), timeout=30)
    assert runs[0]["status"] == "failed" and "paused" in runs[0]["error"], runs
    row = db.query("SELECT status, last_error FROM tds.oauth_tokens WHERE org_id = '60001'")
    assert row[0][0] in ("revoked", "invalid"), row
    assert f.metric("tds_fetcher_token_refresh_failures_total") == 1
    assert f.metric("tds_fetcher_runs_total", {"status": "failed"}) == 1
    # No call made, no quota figure: a 0 here read as a day's quota spent
    # (TdsDailyQuotaLow, the writer's quota_low) beside the token alert.
    assert f.metric("tds_fetcher_quota_remaining", {"org": "60001"}) is None
    assert db.query("SELECT count(*) FROM tds.alerts WHERE rule LIKE 'zoho_token_%%' "
                    "AND severity = 'critical'")[0][0] == 1
    errors = s.stats()["token"]["errors"]
    # paused, not retrying: a second request fails at once without a token call
    runs = p.wait_request(p.request("60001", "items", "full"), timeout=30)
    assert runs[0]["status"] == "failed", runs
    time.sleep(1)
    assert s.stats()["token"]["errors"] == errors
    f.stop()
    f.start()   # a restart does not retry the bad token either
    time.sleep(2)
    assert s.stats()["token"]["errors"] == errors


def test_a_paused_org_tries_again_when_its_credentials_are_fixed(procs, db, sim, tmp_path):
    """An organization paused by a refusal (invalid_client, invalid_code)
    stayed paused after the operator fixed the client secret or the refresh
    token in TDS_CONFIG and restarted, though the file's credentials win.
    The row now names the refused credentials (a hash): the same ones are
    not tried again, other ones are, once each."""
    s = sim(orgs=[small_org(items=10)])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", client_secret="wrong")])
    f = p.start_fetcher()

    def sync_fails():
        runs = p.wait_request(p.request("60001", "warehouses", "full"), timeout=30)
        assert runs[-1]["status"] == "failed" and "paused" in runs[-1]["error"], runs

    def token_row():
        return db.query("SELECT status, failed_credentials FROM tds.oauth_tokens "
                        "WHERE org_id = '60001'")[0]
    sync_fails()
    assert token_row()[0] == "invalid" and s.stats()["token"]["errors"] == 1
    f.stop()
    f.start()       # the same credentials: not tried again
    sync_fails()
    assert s.stats()["token"]["errors"] == 1
    # the secret fixed, the refresh token wrong: tried (once), refused again
    p.orgs = [org_spec("60001", refresh_token="1000.wrong")]
    p.write_config()
    f.stop()
    f.start()
    sync_fails()
    sync_fails()
    assert s.stats()["token"]["errors"] == 2
    assert "configured now differ: trying them" in f.stderr_text()
    st, refused = token_row()   # a hash, not the credentials
    assert st == "revoked" and len(refused) == 64 and "wrong" not in refused, (st, refused)
    # both fixed: the organization syncs
    p.orgs = [org_spec("60001")]
    p.write_config()
    f.stop()
    f.start()
    p.sync("60001", "warehouses", "full", timeout=30)
    assert token_row() == ("ok", None)
    assert s.stats()["token"]["errors"] == 2 and s.stats()["token"]["refreshes"] == 1


def test_access_denied_waits_out_the_lockout(procs, db, sim, tmp_path):
    s = sim(orgs=[small_org(items=10)], extra_args=["--refresh-limit", "1"])
    s.refresh()  # the only refresh allowed in this window is used up elsewhere
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_LOCKOUT_S": "600"})
    p.start_fetcher()
    rid = p.request("60001", "items", "full")
    wait_until(lambda: db.query("SELECT status FROM tds.oauth_tokens WHERE org_id = '60001'")
               == [("locked",)], timeout=20, what="the lockout recorded")
    denied = s.stats()["token"]["access_denied"]
    time.sleep(3)
    assert s.stats()["token"]["access_denied"] == denied == 1   # no retry loop
    lu = db.query("SELECT extract(epoch from locked_until - now()) FROM tds.oauth_tokens")[0][0]
    assert 500 < lu <= 600, lu
    assert db.query("SELECT done_at FROM tds.sync_requests WHERE id = %s", rid)[0][0] is None


def test_access_denied_locks_out_the_whole_family(procs, db, sim, tmp_path):
    """Zoho locks out the refresh token, so every organization that shares
    it. The lockout was recorded for the organization denied only: each of
    its siblings sent a refresh of its own, each denied (extending Zoho's
    lockout) and each raising an alert. Now they wait it out too."""
    ids = ["60001", "60002", "60003"]
    s = sim(orgs=[small_org(i, items=5) for i in ids], extra_args=["--refresh-limit", "1"])
    s.refresh()  # the only refresh allowed in this window is used up elsewhere
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec(i) for i in ids],
                 fetcher_env={"TDS_FETCHER_LOCKOUT_S": "600"})
    f = p.start_fetcher()
    rids = [p.request(i, "warehouses", "full") for i in ids]
    wait_until(lambda: s.stats()["token"]["access_denied"] >= 1, timeout=20, what="a denial")
    # each sibling has asked for a token by now (a request each, waiting)
    wait_until(lambda: f.stderr_text().count("not refreshing for") >= len(ids) - 1 or
               s.stats()["token"]["access_denied"] >= len(ids), timeout=20,
               what="the siblings to wait", interval=0.1)
    time.sleep(2)
    st = s.stats()["token"]
    print(f"\ntoken stats: {st}")
    assert st["access_denied"] == 1, st
    assert db.query("SELECT count(*) FROM tds.alerts WHERE rule = 'zoho_token_lockout'") == [(1,)]
    assert all(db.query("SELECT done_at FROM tds.sync_requests WHERE id = %s", r)[0][0] is None
               for r in rids)


def test_a_lockout_longer_than_the_wait_is_waited_out(procs, db, sim, tmp_path):
    """Zoho's lockout clears only after 15-30 minutes without a try, and each
    try during it starts it over; TDS_FETCHER_LOCKOUT_S (20 minutes) is
    shorter than the longest. A fixed wait shorter than the lockout was
    denied at every retry, re-arming it for good. Now a refresh denied again
    right after a wait waits twice as long (at most twice the setting):
    here the simulator's 3 s lockout against the fetcher's 2 s."""
    s = sim(orgs=[small_org(items=10)],
            extra_args=["--refresh-limit", "1", "--refresh-window-ms", "2000",
                        "--lockout-ms", "3000"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_LOCKOUT_S": "2"})
    f = p.start_fetcher()
    wait_until(lambda: db.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0]
               >= 1, timeout=10, what="the fetcher owns the organization")
    assert s.stats()["token"]["refreshes"] == 0
    # the window's only refresh used up elsewhere, and one more: locked out
    assert s.refresh().status == 200
    assert s.refresh().status == 400
    t0 = time.monotonic()
    rid = p.request("60001", "warehouses", "full")
    wait_until(lambda: db.query("SELECT done_at IS NOT NULL FROM tds.sync_requests "
                                "WHERE id = %s", rid)[0][0], timeout=20,
               what="a token and the sync (a fixed wait is denied for ever)", interval=0.1)
    took = time.monotonic() - t0
    runs = p.runs(rid)
    st = s.stats()["token"]
    print(f"\nsynced {took:.1f} s after the request; token stats: {st}")
    assert runs and runs[-1]["status"] == "completed", runs
    # denied at ~0 s (waits 2 s, the lockout re-armed to 3 s), again at ~2 s
    # (waits 4 s), refreshed at ~6 s
    assert st["access_denied"] == 1 + 2 and st["refreshes"] == 1 + 1, st
    assert took < 12, took
    assert "denied the refresh again right after a lockout (2 in a row), not retrying for 4 s" \
        in f.stderr_text()
    assert db.query("SELECT status, locked_until FROM tds.oauth_tokens "
                    "WHERE org_id = '60001'") == [("ok", None)]


def test_bad_config_is_one_line(procs, bins, tmp_path):
    env = dict(os.environ, TDS_DATABASE_URL="postgresql://x@127.0.0.1:1/x",
               TDS_CONFIG=str(tmp_path / "none.json"), TDS_FETCHER_MAX_INFLIGHT="lots")
    out = subprocess.run([bins.path("tds-fetcher")], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    assert out.stderr == "tds-fetcher: invalid TDS_FETCHER_MAX_INFLIGHT: 'lots' (expected 2..100000)\n" \
        or (out.stderr.startswith("tds-fetcher: invalid TDS_FETCHER_MAX_INFLIGHT") and
            out.stderr.count("\n") == 1), out.stderr
    env["TDS_FETCHER_MAX_INFLIGHT"] = "8"
    # no overlap would skip changes in the cursor's own second (Zoho's filter
    # is strictly after a whole second)
    env["TDS_FETCHER_OVERLAP_S"] = "0"
    out = subprocess.run([bins.path("tds-fetcher")], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    assert out.stderr == "tds-fetcher: invalid TDS_FETCHER_OVERLAP_S: '0' (expected 1..86400)\n"
    env["TDS_FETCHER_OVERLAP_S"] = "1"
    out = subprocess.run([bins.path("tds-fetcher")], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "TDS_CONFIG" in out.stderr
    del env["TDS_DATABASE_URL"]
    out = subprocess.run([bins.path("tds-fetcher"), "--print-config"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "TDS_DATABASE_URL" in out.stderr
    env["TDS_DATABASE_URL"] = "postgresql://user:secretpw@127.0.0.1:1/x"
    out = subprocess.run([bins.path("tds-fetcher"), "--print-config"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "secretpw" not in out.stdout


def test_database_restart_mid_sync(procs, db, pg, sim, tmp_path):
    """PostgreSQL goes away during a run: the fetcher loses its locks (and
    stops fetching), takes them back, and the request still completes."""
    s = sim(orgs=[small_org(contacts=300)],
            extra_args=["--minute-ms", "1000", "--rate-per-min", "100"])
    # (the fetcher taking over counts the calls its predecessor may have had
    # in flight as ending up to the HTTP timeout later: 5 s here, not 30)
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000",
                                                      "TDS_FETCHER_HTTP_TIMEOUT_MS": "5000"},
                 orgs=[org_spec("60001", rate_per_min=100)])
    f = p.start_fetcher()
    rid = p.request("60001", "contacts", "full")   # a detail call per contact
    wait_until(lambda: s.stats()["orgs"]["60001"]["requests"] > 60, timeout=30, what="run under way")
    pg.restart(down_s=1.0)
    runs = p.wait_request(rid, timeout=180)
    assert runs[-1]["status"] == "completed", runs
    p.compare("60001", "contacts")
    assert "lost every organization lock" in f.stderr_text()


def test_schedule_runs_incrementals_and_publishes_events(procs, db, sim, tmp_path, free_port):
    import zmq
    s = sim(orgs=[small_org(items=30)], extra_args=["--daily-limit", "0"])   # no budget to keep
    ev_port = free_port()
    p = Pipeline(procs, db, s, tmp_path,
                 orgs=[org_spec("60001", entities=["warehouses", "items"], incremental_every_s=2)])
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt_string(zmq.SUBSCRIBE, "tds.zoho.")
    sub.connect(f"tcp://127.0.0.1:{ev_port}")
    p.start_fetcher(env={"TDS_FETCHER_SCHEDULE": "true",
                         "TDS_EVENTS_BIND": f"tcp://127.0.0.1:{ev_port}"})

    def modes():
        return db.query("SELECT entity, mode, status FROM tds.sync_runs ORDER BY started_at")
    # never synced: the first run walks everything, later ones are incremental
    wait_until(lambda: sum(1 for e, m, st in modes() if e == "items" and m == "incremental"
                           and st == "completed") >= 2, timeout=40, what="scheduled incrementals")
    runs = modes()
    assert ("items", "full", "completed") in runs, runs
    # warehouses have no modified time: every run lists them all
    assert ("warehouses", "incremental", "completed") in runs, runs
    assert not any(e in ("contacts", "invoices") for e, _, _ in runs), runs
    names = set()
    while sub.poll(100):
        topic, body = sub.recv_multipart()
        names.add(topic.decode())
        json.loads(body)
    for n in ("tds.zoho.sync.started", "tds.zoho.sync.completed", "tds.zoho.api.success",
              "tds.zoho.token.refreshed"):
        assert n in names, names
    sub.close()


def test_an_empty_entity_is_walked_in_full_once(procs, db, sim, tmp_path):
    """An organization with no invoices yet: its first scheduled run walks
    them in full and finds none. That run's start becomes the cursor, so the
    next runs are incrementals, one list call each. Before, the cursor stayed
    empty: every run was a full walk again and queued a reconciliation, two
    list calls an interval for good. An invoice created later is still
    found by the incrementals."""
    s = sim(orgs=[small_org(invoices=0)], extra_args=["--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path,
                 orgs=[org_spec("60001", entities=["invoices"], incremental_every_s=2)])
    p.start_fetcher(env={"TDS_FETCHER_SCHEDULE": "true"})

    def runs():
        return db.query("SELECT mode, status FROM tds.sync_runs WHERE entity = 'invoices' "
                        "ORDER BY started_at")
    wait_until(lambda: sum(1 for m, st in runs() if m == "incremental" and st == "completed")
               >= 3, timeout=40, what="three scheduled incrementals")
    got = runs()
    cursor = db.query("SELECT cursor FROM tds.sync_state WHERE entity = 'invoices'")
    print("runs:", got, "cursor:", cursor)
    assert sum(1 for m, _ in got if m == "full") == 1, got
    assert sum(1 for m, _ in got if m == "reconcile") <= 1, got
    assert cursor and cursor[0][0], cursor
    s.mutate("60001", "invoices", create=2)
    # in detail: the list page's rows come first (CI once compared between)
    wait_until(lambda: [r["is_detail"] for r in p.db_rows("60001", "invoices").values()]
               == [True, True], timeout=30, what="the new invoices written by an incremental")
    p.compare("60001", "invoices")


def test_organizations_sharing_a_refresh_token_share_its_access_token(procs, db, sim, tmp_path):
    """One Zoho user's organizations share one refresh token, and Zoho counts
    refreshes per refresh token (10 in 10 minutes, then a lockout). Eleven
    organizations starting together made eleven refreshes: the eleventh got
    "Access Denied" and its organization was locked out. Now one of them
    refreshes, under the family's lock, and the others take the token it
    stored."""
    ids = [str(60001 + i) for i in range(11)]
    s = sim(orgs=[small_org(i, items=5) for i in ids], extra_args=["--refresh-limit", "10"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec(i) for i in ids])
    p.start_fetcher()
    rids = [p.request(i, "warehouses", "full") for i in ids]
    for rid in rids:
        runs = p.wait_request(rid, timeout=60)
        assert [r["status"] for r in runs] == ["completed"], runs
    st = s.stats()["token"]
    print(f"\ntoken stats: {st}")
    assert st["access_denied"] == 0, st
    assert st["refreshes"] == 1, st
    fam = db.query("SELECT count(DISTINCT family), count(DISTINCT access_token), count(*) "
                   "FROM tds.oauth_tokens")
    assert fam == [(1, 1, 11)], fam


def test_refreshes_that_time_out_count_against_the_family_budget(procs, db, sim, tmp_path):
    """Organizations sharing a refresh token, none refreshed yet, and an
    accounts server that answers after the fetcher gave up, having minted a
    token each time. The family's budget counted only rows that named the
    family, which only a successful refresh wrote: each organization saw
    its own attempts alone, together they passed Zoho's 10 and the refresh
    token was locked out. Every attempt now names its family."""
    ids = [str(60001 + i) for i in range(6)]
    s = sim(orgs=[small_org(i, items=5) for i in ids], extra_args=["--refresh-limit", "10"])
    s.faults(token_hang_ms=1000)
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec(i) for i in ids],
                 fetcher_env={"TDS_FETCHER_TOKEN_TIMEOUT_MS": "200"})
    f = p.start_fetcher()
    for i in ids:
        p.request(i, "warehouses", "full")
    wait_until(lambda: "token refresh budget of 5 per 10 minutes used" in f.stderr_text()
               or s.stats()["token"]["access_denied"] > 0, timeout=20,
               what="the family's budget spent", interval=0.1)
    # every attempt that went out has reached the simulator; the backoffs
    # (1-2 s, then 2-4 s) have passed for each organization at least once
    time.sleep(4)
    st = s.stats()["token"]
    print(f"\ntoken stats: {st}")
    assert st["access_denied"] == 0, st
    assert st["refreshes"] <= 5, st
    rows = db.query("SELECT count(DISTINCT family), count(family), sum(refresh_count) "
                    "FROM tds.oauth_tokens WHERE refresh_count > 0")
    assert rows[0][0] == 1 and rows[0][1] >= 5, rows


def test_refreshes_the_family_budget_refuses_do_not_count(procs, db, sim, tmp_path):
    """Six organizations share a refresh token whose five refreshes of the
    last 10 minutes (the family's budget) were really sent, the oldest 15 s
    before its window ends. Each organization counted its attempt in its own
    row before comparing the family's sum with the budget, and the refused
    attempt stayed counted: every organization then held a count in a window
    of its own, the sum never went under the budget again and the family
    never refreshed. A refused attempt now counts nothing and waits for the
    family's oldest counted attempt to leave its window."""
    ids = [str(60001 + i) for i in range(6)]
    s = sim(orgs=[small_org(i, items=5) for i in ids], extra_args=["--refresh-limit", "10"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec(i) for i in ids])
    _wait_for_token_columns(db)
    fam = hashlib.sha256(b"".join(v.encode() + b"\0" for v in
                                  (s.url, CLIENT_ID, REFRESH_TOKEN))).hexdigest()
    for k, i in enumerate(ids[:5]):   # windows that end 15, 16, ... 19 s from now
        db.execute("INSERT INTO tds.oauth_tokens (org_id, refresh_window_start, refresh_count, "
                   "updated_at, family, status, accounts_url) VALUES (%s, now() - interval "
                   "'10 minutes' + %s * interval '1 second', 1, now(), %s, 'ok', %s)",
                   i, 15 + k, fam, s.url)
    f = p.start_fetcher()
    rids = [p.request(i, "warehouses", "full") for i in ids]
    wait_until(lambda: f.stderr_text().count("token refresh budget of 5 per 10 minutes used")
               >= len(ids), timeout=12, what="every organization refused by the budget",
               interval=0.1)
    assert s.stats()["token"]["refreshes"] == 0
    counts = db.query("SELECT org_id, refresh_count FROM tds.oauth_tokens "
                      "WHERE refresh_count > 0 ORDER BY org_id")
    assert counts == [(i, 1) for i in ids[:5]], counts
    for rid in rids:
        runs = p.wait_request(rid, timeout=40)
        assert [r["status"] for r in runs] == ["completed"], runs
    st = s.stats()["token"]
    print(f"\ntoken stats: {st}")
    assert st["refreshes"] == 1 and st["access_denied"] == 0, st


def test_auth_exchange_names_the_token_family(procs, db, sim, tmp_path, bins):
    """`auth exchange` stored its token with no family, which left the row
    (and its window's refresh count) out of its family until its next
    successful refresh. The row now names the family of the refresh token
    its organization refreshes with (here the file's, which wins), and a
    sibling takes the access token instead of refreshing."""
    s = sim(orgs=[small_org("60001", items=5), small_org("60002", items=5)],
            extra_args=["--grant-code", "1000.grant.one"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001"), org_spec("60002")])
    _wait_for_token_columns(db)
    env = dict(os.environ, TDS_DATABASE_URL=db.url, TDS_CONFIG=str(p.config))
    out = _cli(bins, env, "auth", "exchange", "--org", "60001", "--code", "1000.grant.one")
    assert out.returncode == 0, out.stderr
    p.start_fetcher()
    p.sync("60002", "warehouses", "full", timeout=30)
    st = s.stats()["token"]
    assert st["refreshes"] == 0 and st["code_grants"] == 1, st
    want = hashlib.sha256(b"".join(v.encode() + b"\0" for v in
                                   (s.url, CLIENT_ID, REFRESH_TOKEN))).hexdigest()
    assert db.query("SELECT org_id, family FROM tds.oauth_tokens ORDER BY org_id") == \
        [("60001", want), ("60002", want)]


def test_schedule_runs_although_the_last_run_is_dated_ahead(procs, db, sim, tmp_path):
    """Due times are wall-clock: a run history written by a clock a day ahead
    (or this clock stepped back a day since) put the next incremental a day
    away. A due time further off than one interval is moved up to it."""
    s = sim(orgs=[small_org(items=10)], extra_args=["--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path,
                 orgs=[org_spec("60001", entities=["items"], incremental_every_s=2,
                                reconcile_every_s=3600)])
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, started_at, "
               "finished_at) VALUES ('ahead', '60001', 'items', 'full', 'completed', "
               "now() + interval '1 day', now() + interval '1 day')")
    p.start_fetcher(env={"TDS_FETCHER_SCHEDULE": "true"})
    wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_runs WHERE entity = 'items' "
                                "AND mode = 'incremental' AND status = 'completed'") >= [(1,)],
               timeout=20, what="an incremental run within a few intervals")


def test_schedule_keeps_incrementals_within_the_daily_budget(procs, db, sim, tmp_path):
    """Each scheduled incremental run costs at least one list call. With
    Zoho's daily limit at 172,800 and 2 entities, a quarter of it
    (incremental_budget_pct 25) allows one run of each every 4 s, so runs
    asked for every second are spread to every 4 s; at 100 % every second."""
    s = sim(orgs=[small_org(items=30)], extra_args=["--daily-limit", "172800"])
    p = Pipeline(procs, db, s, tmp_path,
                 orgs=[org_spec("60001", entities=["warehouses", "items"], incremental_every_s=1)])
    f = p.start_fetcher(env={"TDS_FETCHER_SCHEDULE": "true"})

    def starts(entity):
        return [r[0] for r in db.query(
            "SELECT extract(epoch FROM started_at)::float FROM tds.sync_runs "
            "WHERE entity = %s AND mode = 'incremental' AND status = 'completed' "
            "ORDER BY started_at", entity)]
    wait_until(lambda: len(starts("items")) >= 4, timeout=40, what="four scheduled incrementals")
    gaps = [b - a for a, b in zip(starts("items"), starts("items")[1:])]
    # the first interval may still be the configured one (the limit is learned by the first call)
    assert all(g >= 3.5 for g in gaps[1:]), gaps
    assert "incremental syncs every 4 s, not 1 s, to keep them within 25% of the daily " \
           "budget (172800 calls, 0 kept in reserve)" in f.stderr_text(), f.stderr_text()[-3000:]
    st = json.loads(http_get(f.admin_url + "/status")[1])
    assert st["organizations"][0]["incremental_every_s"] == 4, st
    # and with its quota record, for the writer's entity_stale rule
    wait_until(lambda: db.query("SELECT incremental_every_s FROM tds.quota_use "
                                "WHERE org_id = '60001'") == [(4,)],
               timeout=5, what="the stretched interval in tds.quota_use")
    # and as a gauge, for Prometheus's TdsEntityStale
    assert f.metric("tds_fetcher_incremental_interval_seconds", {"org": "60001"}) == 4
    f.stop()

    p.orgs = [org_spec("60001", entities=["warehouses", "items"], incremental_every_s=1,
                       incremental_budget_pct=100)]
    p.write_config()
    f = p.start_fetcher(env={"TDS_FETCHER_SCHEDULE": "true"})
    n0 = len(starts("items"))
    wait_until(lambda: len(starts("items")) >= n0 + 5, timeout=30, what="five more incrementals")
    gaps = [b - a for a, b in zip(starts("items")[n0:], starts("items")[n0 + 1:])]
    assert min(gaps[1:]) < 2.5, gaps
    st = json.loads(http_get(f.admin_url + "/status")[1])
    assert st["organizations"][0]["incremental_every_s"] == 1, st
    wait_until(lambda: db.query("SELECT incremental_every_s FROM tds.quota_use "
                                "WHERE org_id = '60001'") == [(1,)],
               timeout=5, what="the configured interval in tds.quota_use")


def test_an_entity_whose_list_ignores_the_modified_filter_keeps_within_the_budget(procs, db, sim,
                                                                                  tmp_path):
    """ZOHO.md reports an endpoint that takes `last_modified_time` and lists
    every record all the same. An incremental of such an entity walks its
    whole list, a call a page, where the budget counts one a run: with 20,000
    items every 300 s that is 28,800 calls a day, over a plan's quota. The
    fetcher sees the records older than the run's start and holds the next
    incremental of that entity until the calls fit in its slot of the budget.
    Here one call a slot is 2 s (a daily limit of 345,600, a quarter of it for
    2 entities) and a walk is 5 pages: the next waits 10 s. Before, the runs
    came 4.2 s apart (2 s after each walk's end), 5 calls each. When the
    filter works again, so do the 2 s."""
    s = sim(orgs=[small_org(items=100)], extra_args=["--daily-limit", "345600"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_PER_PAGE": "20"},
                 orgs=[org_spec("60001", entities=["warehouses", "items"], incremental_every_s=1)])
    f = p.start_fetcher()
    p.wait_request(p.request("60001", "items", "full"), timeout=60)
    f.stop()

    def runs(since):
        return db.query("SELECT extract(epoch FROM started_at)::float, pages_fetched "
                        "FROM tds.sync_runs WHERE entity = 'items' AND mode = 'incremental' "
                        "AND status = 'completed' AND started_at > to_timestamp(%s) "
                        "ORDER BY started_at", since)

    s.faults(ignore_filter=["items"])
    t0 = time.time()
    f = p.start_fetcher(env={"TDS_FETCHER_SCHEDULE": "true"})
    wait_until(lambda: len(runs(t0)) >= 3, timeout=60, what="three incrementals")
    got = runs(t0)
    gaps = [round(b[0] - a[0], 1) for a, b in zip(got, got[1:])]
    print(f"filter ignored: pages {[r[1] for r in got]}, gaps {gaps} s")
    assert all(r[1] >= 5 for r in got), got       # each walked the whole list
    assert all(g >= 9.5 for g in gaps), gaps       # 5 calls of 2 s each
    assert "the endpoint ignores the last_modified_time filter" in f.stderr_text()
    # listed in /status, due in at most 10 s (0 once it is due, until the
    # next run completes)
    held = json.loads(http_get(f.admin_url + "/status")[1])["organizations"][0]["filter_ignored"]
    assert [h["entity"] for h in held] == ["items"] and 0 <= held[0]["next_in_s"] <= 10, held
    # the filter works again: one page a run, the next hold lifted
    s.faults(ignore_filter=[])
    t1 = time.time()
    wait_until(lambda: len(runs(t1)) >= 3, timeout=30, what="three more incrementals")
    got = runs(t1)
    gaps = [round(b[0] - a[0], 1) for a, b in zip(got, got[1:])]
    print(f"filter honoured: pages {[r[1] for r in got]}, gaps {gaps} s")
    assert all(r[1] == 1 for r in got) and max(gaps) < 8, (got, gaps)   # not 10 s
    assert "incrementals of items back to every 2 s" in f.stderr_text()
    st = json.loads(http_get(f.admin_url + "/status")[1])
    assert st["organizations"][0]["filter_ignored"] == [], st


def test_sigterm_mid_run_then_restart_completes_the_request(procs, db, sim, tmp_path):
    s = sim(orgs=[small_org(contacts=300)],
            extra_args=["--minute-ms", "1000", "--rate-per-min", "100"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000"},
                 orgs=[org_spec("60001", rate_per_min=100)])
    f = p.start_fetcher()
    rid = p.request("60001", "contacts", "full")   # a detail call per contact
    wait_until(lambda: s.stats()["orgs"]["60001"]["requests"] > 50, timeout=30, what="run under way")
    t0 = time.monotonic()
    f.stop()                       # asserts exit 0
    assert time.monotonic() - t0 < 10
    run = p.runs(rid)
    # stopped, not failed: a clean shutdown raises no sync_failed alert
    assert run[0]["status"] == "stopped" and "shut down" in run[0]["error"], run
    f.start()
    runs = p.wait_request(rid, timeout=120)
    assert runs[-1]["status"] == "completed", runs
    p.compare("60001", "contacts")


def test_full_sync_under_updates_and_a_kill_misses_no_record(procs, db, sim, tmp_path):
    """In modified order, every update of a record the walk has passed moves it
    to the end and shifts an unread record onto a page already read: full
    walks and reconciliations go in created order instead. The reconciliation
    after a full sync is a request, so a fetcher killed the moment the full
    sync ends still runs it when it comes back."""
    s = sim(orgs=[small_org(items=600)], extra_args=["--rate-per-min", "100000", "--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_PER_PAGE": "25"},
                 orgs=[org_spec("60001", rate_per_min=100000)])
    f = p.start_fetcher()
    s.stream("60001", rate_per_s=100, seconds=600, entities=["items"], ops="update")
    rid = p.request("60001", "items", "full")
    wait_until(lambda: db.query("SELECT done_at IS NOT NULL FROM tds.sync_requests WHERE id = %s",
                                rid)[0][0], timeout=120, interval=0.005, what="the full sync")
    f.kill()
    assert p.runs(rid)[-1]["status"] == "completed", p.runs(rid)
    # the full walk itself left nothing out (its pages are committed before
    # its request closes; the stream creates and deletes nothing)
    truth = {r["item_id"] for r in s.truth("60001", "items")["records"]}
    skipped = truth - set(p.db_rows("60001", "items"))
    assert not skipped, f"the full walk skipped {len(skipped)} of {len(truth)} items"
    f.start()
    wait_until(lambda: db.query(
        "SELECT (SELECT count(*) FROM tds.sync_requests WHERE done_at IS NULL) + "
        "(SELECT count(*) FROM tds.sync_runs WHERE status = 'running')")[0][0] == 0,
        timeout=120, what="the reconciliation", interval=0.1)
    rec = db.query("SELECT q.requested_by, r.status FROM tds.sync_requests q "
                   "JOIN tds.sync_runs r ON r.run_id = q.run_id "
                   "WHERE q.mode = 'reconcile' AND q.entity = 'items'")
    assert rec and rec[-1][1] == "completed" and "after a full sync" in rec[-1][0], rec
    s.stream("60001", 0, 0)
    updates = s.stats()["orgs"]["60001"]["stream_mutations"]
    assert updates >= 100, updates       # the walks ran under a stream of updates
    # the updates themselves arrive by the next incremental (no webhooks here);
    # a record skipped by both walks would not
    p.sync("60001", "items", "incremental")
    p.compare("60001", "items")


def test_a_request_taken_again_runs_only_what_did_not_complete(procs, db, sim, tmp_path):
    """A full sync of every entity, its fetcher killed while it walks the
    invoices: the next one takes the request again and runs only the
    entities whose run for it did not complete. Before, it walked every
    entity again, each finished one a second time (and queued another
    reconciliation for each), on every restart of a first import."""
    s = sim(orgs=[small_org(invoices=400, contacts=20)],
            extra_args=["--minute-ms", "1000", "--rate-per-min", "40"])
    # (the fetcher taking over counts the calls its predecessor may have had
    # in flight as ending up to the HTTP timeout later: 5 s here, not 30)
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000",
                                                      "TDS_FETCHER_HTTP_TIMEOUT_MS": "5000"},
                 orgs=[org_spec("60001", rate_per_min=40)])
    f = p.start_fetcher()
    rid = p.request("60001", "all", "full")
    wait_until(lambda: any(r["entity"] == "invoices" and r["status"] == "running"
                           for r in p.runs(rid)), timeout=120, what="invoices running")
    f.kill()
    done = sorted(r["entity"] for r in p.runs(rid) if r["status"] == "completed")
    print("completed before the kill:", done)
    assert "invoices" not in done and len(done) >= 2, done
    p.start_fetcher(label="f2")
    runs = p.wait_request(rid, timeout=240)
    print("runs:", [(r["entity"], r["status"]) for r in runs])
    for e in done:
        assert sum(1 for r in runs if r["entity"] == e) == 1, (e, runs)
    assert [r["status"] for r in runs if r["entity"] == "invoices"][-1] == "completed", runs
    assert runs[-1]["status"] == "completed", runs
    for e in ("items", "contacts", "invoices"):
        p.compare("60001", e)


def test_a_request_whose_runs_all_completed_is_closed_when_taken_again(procs, db, sim, tmp_path):
    """A fetcher that died between a request's last run completing and the
    request being closed: the next owner closes it and runs nothing."""
    s = sim(orgs=[small_org()])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001")])
    rid = p.request("60001", "items", "full")
    db.execute("UPDATE tds.sync_requests SET claimed_by = 'gone', claimed_at = now() "
               "WHERE id = %s", rid)
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at) "
               "VALUES (%s, '60001', 'items', 'full', 'completed', now())", f"rq{rid}.items.x")
    f = p.start_fetcher()
    runs = p.wait_request(rid, timeout=30)
    assert [(r["entity"], r["status"]) for r in runs] == [("items", "completed")], runs
    calls = s.stats()["orgs"]["60001"]["endpoints"]
    assert sum(calls.values()) == 0, calls
    assert "every run it needs completed before it was taken again" in f.stderr_text()


def test_incremental_filter_is_written_in_the_offset_zoho_gives(procs, db, sim, tmp_path):
    """The configured timezone_offset goes stale at a DST change (or is typed
    wrong). The cursor and the incremental filter are written in the offset
    Zoho gave the newest record, so they name the same instant whether Zoho
    honours the filter's offset or reads its wall clock in the organization's
    zone. Here the organization is at +0300, the file says +0400, and the
    simulator reads the filter as wall clock: with the configured offset the
    filter landed an hour late and the incremental missed every change."""
    s = sim(orgs=[small_org(items=40)],
            extra_args=["--rate-per-min", "100000", "--daily-limit", "0",
                        "--modified-filter-offset", "ignore"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", tz="+0400", rate_per_min=100000)])
    p.start_fetcher()
    p.sync("60001", "items", "full")
    # the first incremental moves the cursor to now; the second's filter is
    # then within the hour the wrong offset shifts it by
    for _ in range(2):
        m = s.mutate("60001", "items", update=3, create=2)
        assert (len(m["updated"]), len(m["created"])) == (3, 2), m
        p.sync("60001", "items", "incremental")
        p.compare("60001", "items")
    cursor = db.query("SELECT cursor FROM tds.sync_state WHERE org_id = '60001' AND entity = 'items'")
    assert cursor[0][0].endswith("+0300"), cursor


@pytest.mark.parametrize("zoho_clock", [0, -300])
def test_incremental_under_updates_misses_no_change(procs, db, sim, tmp_path, zoho_clock):
    """Filtered on the modified time and listed in created order, an
    incremental walk sees every record changed before it started although
    records keep changing while it pages. In modified order each update of a
    record it had passed skipped an unread one, and with the cursor past it
    that change waited for the record's next one.

    With Zoho's clock 300 s behind the fetcher's (-300), the run's start by
    the fetcher's clock capped nothing: the cursor was the newest change
    seen, past the changes made during the walk to records already passed.
    The Date of Zoho's answers caps it now."""
    s = sim(orgs=[small_org(items=600)], extra_args=["--rate-per-min", "100000", "--daily-limit", "0",
                                                     "--clock-offset", str(zoho_clock)])
    p = Pipeline(procs, db, s, tmp_path,
                 fetcher_env={"TDS_FETCHER_PER_PAGE": "25", "TDS_FETCHER_OVERLAP_S": "1"},
                 orgs=[org_spec("60001", rate_per_min=100000)])
    f = p.start_fetcher()
    p.sync("60001", "items", "full")
    s.stream("60001", rate_per_s=100, seconds=600, entities=["items"], ops="update")
    time.sleep(5)    # a few hundred records changed: an incremental of many pages
    runs = p.sync("60001", "items", "incremental")
    s.stream("60001", 0, 0)
    assert runs[0]["mode"] == "incremental" and runs[0]["pages_fetched"] >= 8, runs
    # the next incremental reads from the first one's cursor (minus 1 s): what
    # the first skipped before its cursor stays stale
    p.sync("60001", "items", "incremental")
    p.compare("60001", "items")
    ahead = re.search(r"clock is about 30[0-3] s ahead of Zoho's", f.stderr_text()) is not None
    assert ahead == (zoho_clock == -300), f.stderr_text()[-2000:]


def test_auth_exchange_stores_a_refresh_token(procs, db, sim, tmp_path, bins):
    s = sim(orgs=[small_org(items=10)], extra_args=["--grant-code", "1000.grant.one"])
    spec = org_spec("60001")
    del spec["refresh_token"]
    # Before `tds-writer migrate`: refused before the code goes to Zoho (it
    # is good for one exchange, which could not be stored)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"organizations": [dict(spec, accounts_url=s.url)]}))
    out = _cli(bins, dict(os.environ, TDS_DATABASE_URL=db.url, TDS_CONFIG=str(bare)),
               "auth", "exchange", "--org", "60001", "--code", "1000.grant.one")
    assert out.returncode == 1 and "run `tds-writer migrate` first" in out.stderr, out.stderr
    assert s.stats()["token"]["code_grants"] == 0, s.stats()["token"]
    p = Pipeline(procs, db, s, tmp_path, orgs=[spec])
    _wait_for_token_columns(db)
    env = dict(os.environ, TDS_DATABASE_URL=db.url, TDS_CONFIG=str(p.config))
    # --code - reads it from standard input (not in the process list or the
    # shell's history); nothing there is a usage error, no call made
    def from_stdin(text):
        return subprocess.run([bins.path("tds-fetcher"), "auth", "exchange", "--org", "60001",
                               "--code", "-"], env=env, input=text, capture_output=True,
                              text=True, timeout=30)
    # an input that ends with no line at all (Ctrl-D at the prompt) took the
    # bytes getline left unwritten for the code (ASan: heap-buffer-overflow)
    for text in (" \n", ""):
        out = from_stdin(text)
        assert out.returncode == 2 and "no grant code on standard input" in out.stderr, out.stderr
        check_sanitizers("auth exchange --code -", out.stderr)
    assert s.stats()["token"]["code_grants"] == 0, s.stats()["token"]
    out = from_stdin("  1000.grant.one\r\n")
    assert out.returncode == 0, out.stderr
    assert "refresh token stored" in out.stdout
    row = db.query("SELECT refresh_token IS NOT NULL, access_token IS NOT NULL, status "
                   "FROM tds.oauth_tokens WHERE org_id = '60001'")
    assert row == [(True, True, "ok")], row
    # a grant code works once
    out = _cli(bins, env, "auth", "exchange", "--org", "60001", "--code", "1000.grant.one")
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "invalid_code" in out.stderr
    out = _cli(bins, env, "auth", "status")
    assert "stored" in out.stdout, out.stdout
    # the daemon uses the stored refresh token and the cached access token
    p.start_fetcher()
    p.sync("60001", "items", "full")
    p.compare("60001", "items")
    assert s.stats()["token"]["refreshes"] == 0


def test_auth_exchange_stores_one_code_for_several_organizations(procs, db, sim, tmp_path, bins):
    """One Zoho user's organizations share a refresh token: `auth exchange
    --org A,B` (or --org repeated) trades one grant code and stores the token
    for each, in one family. Organizations of different clients or data
    centers, or one not in the file, are refused before the code is used.
    Before, each organization needed a code of its own."""
    s = sim(orgs=[small_org(items=10), small_org("60002", items=10)],
            extra_args=["--grant-code", "1000.grant.two"])
    specs = [org_spec("60001"), org_spec("60002")]
    for spec in specs:
        del spec["refresh_token"]
    p = Pipeline(procs, db, s, tmp_path, orgs=specs)
    _wait_for_token_columns(db)
    env = dict(os.environ, TDS_DATABASE_URL=db.url, TDS_CONFIG=str(p.config))
    # another client's organization: refused, the code unused
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"organizations": [
        dict(specs[0], accounts_url=s.url),
        dict(specs[1], org_id="60003", client_id="1000.OTHERCLIENT", accounts_url=s.url)]}))
    out = _cli(bins, dict(env, TDS_CONFIG=str(other)), "auth", "exchange", "--org", "60001,60003",
               "--code", "1000.grant.two")
    assert out.returncode == 2, out.stderr
    assert "organizations 60001 and 60003 differ in data center, client_id or client_secret" \
        in out.stderr and "the code was not used" in out.stderr, out.stderr
    for orgs in ("60001,69999", "60001,", ","):
        out = _cli(bins, env, "auth", "exchange", "--org", orgs, "--code", "1000.grant.two")
        assert out.returncode == 2 and out.stderr.count("\n") == 1, (orgs, out.stderr)
    assert "organization '69999' is not in TDS_CONFIG" in _cli(
        bins, env, "auth", "exchange", "--org", "60001,69999", "--code", "x").stderr
    assert s.stats()["token"]["code_grants"] == 0, s.stats()["token"]
    assert db.query("SELECT count(*) FROM tds.oauth_tokens") == [(0,)]
    # both, one named twice: one exchange, one family
    out = _cli(bins, env, "auth", "exchange", "--org", "60001", "--org", "60002,60001",
               "--code", "1000.grant.two")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "refresh token stored for organizations 60001, 60002", out.stdout
    assert out.stderr == "", out.stderr
    assert s.stats()["token"]["code_grants"] == 1, s.stats()["token"]
    rows = db.query("SELECT org_id, refresh_token IS NOT NULL, access_token IS NOT NULL, status, "
                    "family FROM tds.oauth_tokens ORDER BY org_id")
    assert [r[:4] for r in rows] == [("60001", True, True, "ok"), ("60002", True, True, "ok")], rows
    assert rows[0][4] and rows[0][4] == rows[1][4], rows
    out = _cli(bins, env, "auth", "status")
    assert out.stdout.count(" stored ") == 2, out.stdout
    # the fetcher syncs both with the stored token and the access token stored with it
    p.start_fetcher()
    for org in ("60001", "60002"):
        p.sync(org, "items", "full")
        p.compare(org, "items")
    assert s.stats()["token"]["refreshes"] == 0, s.stats()["token"]


def test_auth_exchange_warns_that_the_config_refresh_token_wins(procs, db, sim, tmp_path, bins):
    """The file's refresh_token is used instead of a stored one: `auth exchange`
    stores the new token (exit 0) but says in one line that the file's must go."""
    s = sim(orgs=[small_org(items=10)], extra_args=["--grant-code", "1000.grant.one"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001")])   # refresh_token in the file
    env = dict(os.environ, TDS_DATABASE_URL=db.url, TDS_CONFIG=str(p.config))
    out = _cli(bins, env, "auth", "exchange", "--org", "60001", "--code", "1000.grant.one")
    assert out.returncode == 0, out.stderr
    assert "refresh token stored" in out.stdout
    assert out.stderr.count("\n") == 1, out.stderr
    assert "warning: TDS_CONFIG sets refresh_token for organization 60001" in out.stderr
    assert "remove it from the file" in out.stderr
    assert "1000." not in out.stderr   # no token in the message


def test_inflight_bytes_bound_the_pages_waiting(procs, db, sim, tmp_path):
    """TDS_FETCHER_MAX_INFLIGHT_BYTES: while the pages in flight hold that many
    bytes no new list page is asked for, whatever the page count allows; the
    pages of the list page already read still go (one detail page), and the
    run completes once the writer acks."""
    s = sim(orgs=[small_org(items=1000, contacts=5, invoices=5, salesorders=5, groups=2)],
            extra_args=["--limits-off"])
    p = Pipeline(procs, db, s, tmp_path,
                 fetcher_env={"TDS_FETCHER_MAX_INFLIGHT_BYTES": "65536"},
                 orgs=[org_spec("60001", rate_per_min=6000)])
    f = p.start_fetcher()
    p.writer.stop()
    rid = p.request("60001", "items", "full")
    wait_until(lambda: f.metric("tds_fetcher_pages_inflight") >= 2, timeout=30,
               what="a list page and its detail page waiting for acks")
    calls = s.stats()["orgs"]["60001"]["requests"]
    time.sleep(2)
    assert s.stats()["orgs"]["60001"]["requests"] == calls   # no further list page
    # 5 list pages of 200 and their details; the page count (32) allowed all 10
    assert f.metric("tds_fetcher_pages_inflight") == 2
    held = f.metric("tds_fetcher_inflight_bytes")
    assert held > 65536, held   # one page may exceed the bound, never a second list page
    st = json.loads(http_get(f.admin_url + "/status")[1])
    assert st["pages_inflight"] == 2 and st["bytes_inflight"] == held, st
    p.writer.start()
    runs = p.wait_request(rid, timeout=120)
    assert runs[0]["status"] == "completed", runs
    p.compare("60001", "items")
    wait_until(lambda: f.metric("tds_fetcher_inflight_bytes") == 0, timeout=10,
               what="the byte gauge back to 0 after the acks")


def test_credits_and_resend_while_the_writer_is_down(procs, db, sim, tmp_path):
    """With the writer gone, at most TDS_FETCHER_MAX_INFLIGHT pages wait for
    acks and the fetcher stops paging; they are sent again after the ack
    timeout, and when the writer is back the run completes exactly."""
    s = sim(orgs=[small_org(items=600, contacts=5, invoices=5, salesorders=5, groups=2)],
            extra_args=["--limits-off"])
    p = Pipeline(procs, db, s, tmp_path,
                 fetcher_env={"TDS_FETCHER_MAX_INFLIGHT": "4", "TDS_FETCHER_ACK_TIMEOUT_MS": "1000"},
                 orgs=[org_spec("60001", rate_per_min=6000)])
    f = p.start_fetcher()
    p.writer.stop()
    rid = p.request("60001", "items", "full")
    wait_until(lambda: f.metric("tds_fetcher_pages_inflight") >= 3, timeout=30,
               what="pages waiting for acks")
    time.sleep(3)
    assert f.metric("tds_fetcher_pages_inflight") <= 4
    calls = s.stats()["orgs"]["60001"]["requests"]
    time.sleep(2)
    assert s.stats()["orgs"]["60001"]["requests"] == calls   # no paging ahead of the writer
    assert "not acked within 1000 ms, sending again" in f.stderr_text()
    p.writer.start()
    runs = p.wait_request(rid, timeout=120)
    assert runs[0]["status"] == "completed", runs
    p.compare("60001", "items")


def test_a_schema_before_migration_5_keeps_counting(procs, db, sim, tmp_path, bins):
    """A fetcher rolled out before migration 005 has run (the Kubernetes job
    may run alongside a rollout): its runs still count pages, records and
    calls, and `tds-fetcher sync` says what is wrong instead of waiting."""
    s = sim(orgs=[small_org(items=50)], extra_args=["--limits-off"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=6000)])
    f = p.start_fetcher()
    db.execute("ALTER TABLE tds.sync_runs DROP COLUMN records_walked")
    rid = p.request("60001", "items", "full")
    wait_until(lambda: db.query("SELECT done_at IS NOT NULL FROM tds.sync_requests WHERE id = %s",
                                rid)[0][0], 120, "the request done")
    status, pages, records, calls = db.query(
        "SELECT status, pages_fetched, records_fetched, api_calls FROM tds.sync_runs "
        "WHERE run_id LIKE %s", f"rq{rid}.%")[0]
    assert status == "completed" and pages >= 2 and records == 100 and calls == 2, \
        (status, pages, records, calls)
    p.compare("60001", "items")
    env = dict(os.environ, TDS_DATABASE_URL=db.url, TDS_CONFIG=str(p.config),
               TDS_ADMIN_LISTEN=f"127.0.0.1:{f.admin_port}")
    out = subprocess.run([bins.path("tds-fetcher"), "sync", "--org", "60001", "--entity", "items"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out
    assert "records_walked" in out.stderr and "tds-writer migrate" in out.stderr, out.stderr
    out = subprocess.run([bins.path("tds-writer"), "status"], env=env, capture_output=True,
                         text=True, timeout=60)
    # `tds-writer status` of this release stops at the runs with the same column named
    assert out.returncode == 1 and "records_walked" in out.stderr, out


def test_a_fetcher_waits_for_its_schema_and_says_so(procs, db, sim, tmp_path):
    """A fetcher started before the database is migrated (a rollout ahead of
    the migration job) takes no organization until the schema is its
    release's: not ready, with the reason, and a log line naming the
    command. Before, it reported ready, took the organization, and sat idle
    with two warnings at its start (its token reads failed every 2 s
    without a word), a webhook's fetch waiting with it."""
    s = sim(orgs=[small_org(items=30)], extra_args=["--limits-off"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=6000)])
    p.writer.stop()
    db.execute("DROP SCHEMA zoho CASCADE")
    db.execute("DROP SCHEMA tds CASCADE")
    f = p.start_fetcher(ready=False)
    want = "database schema at version 0, this release needs"

    def reason():
        try:
            st, body = http_get(f.admin_url + "/readyz", timeout=1.0)
        except OSError:
            return None
        return body if st == 503 and want in body else None
    wait_until(reason, 20, "readyz naming the schema")
    wait_until(lambda: "the database schema is at version 0, this fetcher needs" in f.stderr_text(),
               10, "the schema line in the log")
    assert "tds-writer migrate" in f.stderr_text()
    time.sleep(1.5)   # several owner ticks (300 ms)
    assert db.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0] == 0
    assert s.stats()["orgs"]["60001"]["requests"] == 0
    assert "acquired organization lock" not in f.stderr_text()
    p.writer.start()   # a writer of this release migrates at its start
    wait_until(lambda: http_get(f.admin_url + "/readyz", timeout=1.0)[0] == 200, 20,
               "the fetcher ready once migrated")
    runs = p.wait_request(p.request("60001", "items", "full"), timeout=60)
    assert runs[0]["status"] == "completed", runs
    p.compare("60001", "items")


def test_a_last_quota_record_counts_only_while_it_is_the_records_own_time(procs, db, sim,
                                                                         tmp_path):
    """stopped_at marks a gentle stop's last record only while it equals
    saved_at. A fetcher of a release before migration 023 that takes the
    row over rewrites saved_at and leaves stopped_at as it was: its
    successor must not read that as a last record (it would assume no call
    after it)."""
    s = sim(orgs=[small_org(items=20)], extra_args=["--limits-off"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=6000)])
    f1 = p.start_fetcher("f1")
    runs = p.wait_request(p.request("60001", "items", "full"), timeout=60)
    assert runs[0]["status"] == "completed", runs
    f1.stop()
    assert db.query("SELECT stopped_at = saved_at FROM tds.quota_use "
                    "WHERE org_id = '60001'") == [(True,)]
    # an earlier release claims the row and saves over it (no stopped_at)
    db.execute("UPDATE tds.quota_use SET instance = 'fetcher.old', claim = 'old', "
               "saved_at = saved_at + interval '1 second' WHERE org_id = '60001'")
    f2 = p.start_fetcher("f2")
    wait_until(lambda: "started from the previous owner's quota use" in f2.stderr_text(),
               timeout=15, what="f2 takes the organization over")
    assert "its last record" not in f2.stderr_text()
    # and f2's own records are not last records until it stops
    wait_until(lambda: db.query("SELECT instance, stopped_at FROM tds.quota_use")
               == [("fetcher.f2", None)], timeout=5, what="f2's record")
    f2.stop()
    f3 = p.start_fetcher("f3")
    wait_until(lambda: "started from the previous owner's quota use" in f3.stderr_text(),
               timeout=15, what="f3 takes the organization over")
    assert "its last record (it stopped: no call after it)" in f3.stderr_text()


def test_a_schema_before_migration_20_keeps_the_quota_record(procs, db, sim, tmp_path):
    """A fetcher rolled out before migration 020 has run writes its quota
    record without the incremental interval: its calls are licensed only by
    records that land, so a failing write would stop it calling at all."""
    s = sim(orgs=[small_org(items=50)], extra_args=["--limits-off"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=6000)])
    db.execute("ALTER TABLE tds.quota_use DROP COLUMN incremental_every_s")
    f = p.start_fetcher()
    rid = p.request("60001", "items", "full")
    runs = p.wait_request(rid, timeout=60)
    assert runs[0]["status"] == "completed", runs
    age = db.query("SELECT extract(epoch FROM now() - saved_at)::float FROM tds.quota_use "
                   "WHERE org_id = '60001'")
    assert age and age[0][0] < 3, age
    assert "could not record the organizations' quota use" not in f.stderr_text()


def test_reconcile_confirms_missing_ids_within_the_page_bound(procs, db, sim, tmp_path):
    """Ids the database holds and Zoho no longer lists are confirmed by
    detail calls like a walk's: at most two batches of 200 open, and a
    batch only when its page fits in TDS_FETCHER_MAX_INFLIGHT. Once the walk
    ended, every chunk used to start at once: 1,000 missing ids queued 1,000
    calls and, with the writer away, put 6 pages in flight against a bound
    of 2 (10,000 ids: 50 pages, and the day's quota held by one run)."""
    n = 1000
    # 300 calls a (one-second) minute: a queue of calls lasts long enough to see
    s, p = calls_a_second(procs, db, sim, tmp_path, 300, small_org(contacts=5), fetcher_env={
        "TDS_FETCHER_MAX_INFLIGHT": "2", "TDS_FETCHER_ACK_TIMEOUT_MS": "1000"})
    # rows Zoho no longer has (deleted while nobody listened): ids the
    # simulator answers 1002 for
    db.execute("INSERT INTO zoho.contacts (org_id, contact_id, is_detail, synced_at) "
               "SELECT '60001', (9100000000000000000 + g)::text, true, now() - interval '1 minute' "
               "FROM generate_series(1, %s) g", n)
    f = p.start_fetcher()
    p.writer.stop()
    s.reset_stats()
    rid = p.request("60001", "contacts", "reconcile")
    peak = {"pages": 0, "queued": 0}

    def sample():
        st = json.loads(http_get(f.admin_url + "/status")[1])
        peak["pages"] = max(peak["pages"], st["pages_inflight"])
        peak["queued"] = max(peak["queued"], st["organizations"][0]["api_queued"])
        return st

    def detail_calls():
        return s.stats()["orgs"]["60001"]["endpoints"]["contacts.detail"]

    # the walk's 5 new contacts, then confirmations until the pages fill up
    wait_until(lambda: sample()["pages_inflight"] >= 2 and detail_calls() >= 200, timeout=60,
               what="confirmations waiting for acks", interval=0.05)
    last = -1
    while detail_calls() != last:   # until no call goes out
        last = detail_calls()
        for _ in range(20):
            sample()
            time.sleep(0.1)
    print(f"writer away: {last} detail calls, peak {peak['pages']} pages in flight, "
          f"peak {peak['queued']} calls queued")
    assert peak["pages"] <= 2, peak
    assert f.metric("tds_fetcher_pages_inflight") <= 2
    assert last <= 5 + 2 * 200, last         # no further batch while the pages wait
    assert peak["queued"] <= 2 * 200, peak    # never more than two batches queued
    p.writer.start()
    runs = p.wait_request(rid, timeout=120)
    assert runs[0]["status"] == "completed", runs
    gone = db.query("SELECT count(*) FILTER (WHERE deleted_at IS NOT NULL), count(*) "
                    "FROM zoho.contacts WHERE org_id = '60001' AND contact_id LIKE '91%%'")[0]
    assert gone == (n, n), gone
    assert detail_calls() == 5 + n
    p.compare("60001", "contacts")
