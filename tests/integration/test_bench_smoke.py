"""tests/bench/run --smoke: the benchmark still runs end to end and prints every figure.

Uses the build under test (TDS_BUILD_DIR, usually the sanitizer build, which
the bench labels as such) so nothing is rebuilt. It checks that every figure
row of the table carries a number and that the JSON holds the same figures;
it never looks at how fast anything was.
"""

import json
import os
import re
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

FIGURES = [
    "writer_copy", "writer_new", "writer_update", "writer_new_stock", "writer_update_stock",
    "processor_items", "processor_event_cpu",
    "ingress_rps",
    "ingress_p50", "ingress_p99", "ingress_healthz", "ingress_half_p99",
    "ingress_half_own_p99", "ingress_alone_rps", "ingress_alone_p99", "ingress_alone_half_p99",
    "ingress_alone_half_own_p99", "webhook_applied",
    "webhook_table_rows", "webhook_cpu_us", "webhook_cpu_ceiling", "webhook_update_applied",
    "webhook_update_cpu_us", "latency_p50",
    "latency_p99", "latency_max", "latency_pop_p50", "latency_pop_p99", "latency_pop_max",
    "e2e_full_sync", "scaling_p1", "scaling_p2",
    "rss_fetcher_small", "rss_fetcher_large", "rss_processor-0_small", "rss_processor-0_large",
    "rss_writer_small", "rss_writer_large", "quota_util", "quota_util_full", "quota_429",
]

NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?( \(-?[\d,.]+–-?[\d,.]+\))?$")


def test_bench_smoke(tmp_path):
    build = os.path.abspath(os.environ["TDS_BUILD_DIR"])
    out = tmp_path / "smoke.json"
    r = subprocess.run([os.path.join(ROOT, "tests", "bench", "run"), "--smoke", "--build-dir",
                        build, "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    text = r.stdout + r.stderr
    assert r.returncode == 0, f"bench --smoke failed ({r.returncode}):\n{text[-4000:]}"

    rows = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    assert rows and rows[0].startswith("| figure"), r.stdout
    body = rows[1:]
    assert len(body) == len(FIGURES), f"{len(body)} figure rows, expected {len(FIGURES)}:\n{r.stdout}"
    for line in body:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert NUMBER.match(cells[2]), f"figure without a number: {line}"

    data = json.loads(out.read_text())
    got = {f["key"]: f for f in data["figures"]}
    assert sorted(got) == sorted(FIGURES)
    for key in FIGURES:
        assert isinstance(got[key].get("median"), (int, float)), f"{key}: {got[key]}"
    assert data["failures"] == [], data["failures"]
    # the latency step's client (tests/bench/bench_latency.c) got a 200 for
    # every webhook and saw every row announced
    assert "by one C thread" in got["latency_p50"]["note"], got["latency_p50"]
    assert not [n for n in data["notes"] if "POSTs failed" in n or "not visible" in n], \
        data["notes"]
    assert "fsync=on" in r.stdout
    # the stages' links as deploy/local/up has them: Unix sockets
    assert data["zmq"] == "ipc" and "ZeroMQ between the stages over Unix sockets" in r.stdout
