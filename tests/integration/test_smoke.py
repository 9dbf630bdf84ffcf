"""The foundation's end-to-end smoke test: PostgreSQL and all four stages.

Each binary starts with its admin port, answers /healthz and /metrics, and
stops with exit 0 on SIGTERM, with no sanitizer report.
"""
from conftest import http_get


def _stage_env(db, ports):
    return {
        "TDS_DATABASE_URL": db.url,
        "TDS_WRITER_BIND": f"tcp://127.0.0.1:{ports['writer']}",
        "TDS_ACK_BIND": f"tcp://127.0.0.1:{ports['ack']}",
        "TDS_WRITER_CONNECT": f"tcp://127.0.0.1:{ports['writer']}",
        "TDS_PROCESSOR_BIND": f"tcp://127.0.0.1:{ports['processor']}",
        "TDS_PROCESSOR_CONNECT": f"tcp://127.0.0.1:{ports['processor']}",
        "TDS_FETCHER_BIND": f"tcp://127.0.0.1:{ports['fetcher']}",
        "TDS_FETCHER_CONNECT": f"tcp://127.0.0.1:{ports['fetcher']}",
        "TDS_ACK_CONNECT": f"tcp://127.0.0.1:{ports['ack']}",
    }


def test_all_stages_start_serve_and_stop(db, procs, free_port, tmp_path):
    ports = {k: free_port() for k in ("writer", "ack", "processor", "fetcher", "webhook")}
    orgs = tmp_path / "orgs.json"
    orgs.write_text('{"organizations": [{"org_id": "1", "name": "t", "product": "inventory",'
                    ' "data_center": "com", "client_id": "c", "client_secret": "s",'
                    ' "refresh_token": "r", "webhook_secrets": ["w"]}]}')
    env = _stage_env(db, ports)
    env["TDS_CONFIG"] = str(orgs)
    env["TDS_INGRESS_LISTEN"] = f"127.0.0.1:{ports['webhook']}"
    env["TDS_INGRESS_JOURNAL_DIR"] = str(tmp_path / "journal")
    started = []
    for name in ("tds-writer", "tds-processor", "tds-fetcher", "tds-ingress"):
        started.append(procs.spawn(name, env=env, ready="healthz"))
    for p in started:
        st, _ = http_get(p.admin_url + "/healthz")
        assert st == 200, p.name
        st, body = http_get(p.admin_url + "/metrics")
        assert st == 200, p.name
        assert "# TYPE" in body, f"{p.name} /metrics has no families:\n{body[:500]}"
    for p in reversed(started):
        assert p.stop() == 0

