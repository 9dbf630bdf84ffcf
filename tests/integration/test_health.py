"""/healthz of a stage with nothing to do: each of the four stages is left idle
past its stall threshold (TDS_HEALTH_STALL_MS, lowered so that the test does
not wait 30 s) and must still answer 200. A processor between syncs has no
timer and no input, so only the loop's bounded wait keeps its heartbeat fresh.
"""
import json
import time

import pytest

from conftest import free_port, http_get

STALL_MS = 2000


def _stage_env(name, db, tmp_path):
    if name == "tds-processor":
        return {"TDS_PROCESSOR_BIND": f"tcp://127.0.0.1:{free_port()}",
                "TDS_WRITER_CONNECT": f"tcp://127.0.0.1:{free_port()}"}
    if name == "tds-writer":
        return {"TDS_DATABASE_URL": db.url,
                "TDS_WRITER_BIND": f"tcp://127.0.0.1:{free_port()}",
                "TDS_ACK_BIND": f"tcp://127.0.0.1:{free_port()}"}
    orgs = tmp_path / "orgs.json"
    orgs.write_text(json.dumps({"organizations": [
        {"org_id": "60001", "name": "idle", "product": "inventory", "data_center": "com",
         "accounts_url": f"http://127.0.0.1:{free_port()}", "client_id": "x",
         "client_secret": "y", "refresh_token": "z", "webhooks_unsigned": True}]}))
    common = {"TDS_CONFIG": str(orgs),
              "TDS_PROCESSOR_CONNECT": f"tcp://127.0.0.1:{free_port()}",
              "TDS_ACK_CONNECT": f"tcp://127.0.0.1:{free_port()}"}
    if name == "tds-ingress":
        return dict(common, TDS_INGRESS_JOURNAL_DIR=str(tmp_path / "journal"),
                    TDS_INGRESS_LISTEN=f"127.0.0.1:{free_port()}",
                    TDS_FETCHER_CONNECT=f"tcp://127.0.0.1:{free_port()}")
    return dict(common, TDS_DATABASE_URL=db.url,
                TDS_FETCHER_BIND=f"tcp://127.0.0.1:{free_port()}",
                TDS_FETCHER_SCHEDULE="false")


@pytest.mark.parametrize("name", ["tds-processor", "tds-writer", "tds-ingress", "tds-fetcher"])
def test_idle_stage_stays_healthy(procs, db, tmp_path, name):
    env = _stage_env(name, db, tmp_path)
    env.update({"TDS_HEALTH_STALL_MS": str(STALL_MS), "TDS_INSTANCE": "idle"})
    p = procs.spawn(name, env=env, ready="healthz")
    # Idle for twice the threshold, asking all along: every answer is 200.
    deadline = time.monotonic() + 2 * STALL_MS / 1000 + 0.5
    while time.monotonic() < deadline:
        st, body = http_get(p.admin_url + "/healthz")
        assert (st, body) == (200, "ok\n"), f"{name} /healthz after idling: {st} {body!r}"
        time.sleep(0.25)


def test_stall_threshold_is_checked(procs):
    """Below the loop's own wake-up interval the setting would flap: refused."""
    r = procs.run("tds-processor", ["--print-config"], env={"TDS_HEALTH_STALL_MS": "500"},
                  check=False)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("tds-processor: invalid TDS_HEALTH_STALL_MS: '500'")
