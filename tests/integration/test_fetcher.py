"""tds-fetcher against the Zoho simulator, with the real processor and writer:
full and incremental syncs equal the simulator's truth, limits are never
exceeded and every 429 code is survived, tokens are refreshed once and never
past Zoho's budget, faults are survived, ownership moves when a fetcher dies,
and the progress command follows a run to completion.
"""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import http_get, wait_until
from fetcher_util import ENTITIES, Pipeline, RateWatch, org_spec
from sim_fixture import sim  # noqa: F401  (fixture)

ALL = list(ENTITIES)


def small_org(org_id="60001", **kw):
    return (f"id={org_id},tz=+0300,stock=warehouses,product=inventory,items=60,groups=5,"
            f"contacts=30,invoices=30,salesorders=30,warehouses=3" + "".join(
                f",{k}={v}" for k, v in kw.items()))


def test_full_sync_of_every_entity_equals_truth(procs, db, sim, tmp_path):
    s = sim(orgs=[small_org()], extra_args=["--minute-ms", "1000", "--rate-per-min", "400"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000"},
                 orgs=[org_spec("60001", rate_per_min=400)])
    f = p.start_fetcher()
    runs = p.sync("60001", "all", "full", timeout=180)
    assert sorted(r["entity"] for r in runs) == sorted(ALL)
    for ent in ALL:
        p.compare("60001", ent)
    st = s.stats()["orgs"]["60001"]
    assert st["429"] == {"44": 0, "45": 0, "1070": 0}, st
    # each record's detail fetched once, lists paged at 200
    assert st["endpoints"]["items.detail"] == 60
    assert f.metric("tds_fetcher_api_calls_total") == st["requests"]


def test_quota_used_fully_without_429(procs, db, sim, tmp_path):
    """A long full sync against N requests per "minute": at least 99% of N
    each minute, no 429, never over N."""
    n, minute = 60, 3000
    s = sim(orgs=[small_org(items=700, contacts=5, invoices=5, salesorders=5, groups=2)],
            extra_args=["--minute-ms", str(minute), "--rate-per-min", str(n)])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": str(minute)},
                 orgs=[org_spec("60001", rate_per_min=n, max_concurrency=10)])
    f = p.start_fetcher()
    rid = p.request("60001", "items", "full")
    w = RateWatch(s, "60001")
    wait_until(lambda: w.sample()[1] >= 2 * n, timeout=30, what="sync under way")
    t0, r0, _ = w.sample()
    time.sleep(8 * minute / 1000.0)
    t1, r1, e1 = w.sample()
    runs = p.wait_request(rid, timeout=120)
    assert runs[0]["status"] == "completed", runs
    windows = (t1 - t0) * 1000.0 / minute
    util = (r1 - r0) / (windows * n)
    print(f"quota utilization {util:.4f} ({r1 - r0} requests in {windows:.2f} windows of {n})")
    print("latency avg", f.metric("tds_fetcher_api_seconds_sum") / max(1, f.metric("tds_fetcher_api_seconds_count")),
          "peak", s.stats()["orgs"]["60001"]["peak_concurrency"])
    assert e1 == {"44": 0, "45": 0, "1070": 0}, e1
    assert s.stats()["orgs"]["60001"]["429"] == {"44": 0, "45": 0, "1070": 0}
    assert util >= 0.99, util
    assert util <= 1.0 + 1.0 / windows, util
    p.compare("60001", "items")
