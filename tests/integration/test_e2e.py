"""The whole pipeline, end to end: simulator → fetcher → processor → writer → PostgreSQL,
and webhooks through the ingress. Prints its key figures."""
import time

import pytest

from pipeline import Pipeline


def test_full_sync_two_orgs_equals_truth(db, procs, sim, tmp_path):
    s = sim()  # 60001: +0300 warehouses; 60002: +0530 locations
    p = Pipeline(procs, db, s, tmp_path).start()
    for org in p.org_ids:
        t0 = time.monotonic()
        p.sync(org)
        n = db.query("SELECT coalesce(sum(records_written), 0) FROM tds.sync_runs WHERE org_id = %s", org)[0][0]
        print(f"full sync of {org}: {n} records in {time.monotonic() - t0:.2f}s")
        p.assert_equal_truth(org)
