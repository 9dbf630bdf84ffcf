#!/usr/bin/python3
"""check_prometheus — deploy/prometheus and deploy/grafana agree and are valid.

Runs `promtool check config` on the three scrape configurations, `promtool check
rules` and `promtool test rules` (every alert fires and resolves under its
condition) on the alerting rules; checks each alert has a severity (info,
warning, error, critical), a summary and a test; checks the Grafana dashboard
is valid JSON with unique panel ids, panels inside the 24-column grid, a
query on every panel, and that every query parses (promtool, via a generated
rules file); and that every tds_* metric named in rules and dashboard is one
of the families the stages expose (deploylib.METRIC_FAMILIES — the live
/metrics comparison is tests/integration/test_deploy.py).

Usage: check_prometheus.py [--promtool PATH]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

PROM = os.path.join(dl.DEPLOY, "prometheus")
DASH = os.path.join(dl.DEPLOY, "grafana", "tds-zoho-sync.json")
SEVERITIES = {"info", "warning", "error", "critical"}


def promtool(rep, tool, *args, what):
    r = subprocess.run([tool, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=120)
    rep.check(r.returncode == 0, what, f"promtool {' '.join(args)} failed:\n{r.stdout.strip()[-3000:]}")
    return r.returncode == 0


def dashboard_exprs(dash):
    out = []
    for p in dash.get("panels", []):
        for sub in [p] + list(p.get("panels", [])):
            for t in sub.get("targets", []) or []:
                out.append((sub.get("title", "?"), t.get("expr", "")))
    return out


def grafana_to_promql(expr):
    return (expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
            .replace("$org", ".*"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--promtool", default="promtool")
    args = ap.parse_args(argv)
    rep = dl.Report("check_prometheus")
    if not dl.which(args.promtool):
        print("check_prometheus: promtool not found (Debian package prometheus)")
        return 2
    families = set().union(*dl.METRIC_FAMILIES.values())

    # Scrape configurations and rules.
    for cfg in ("prometheus.yml", "prometheus-compose.yml", "prometheus-k8s.yml"):
        promtool(rep, args.promtool, "check", "config", os.path.join(PROM, cfg), what=cfg)
    promtool(rep, args.promtool, "check", "rules", os.path.join(PROM, "alerts.yml"), what="alerts.yml")
    cwd = os.getcwd()
    os.chdir(PROM)  # rule_files in the test file are relative to it
    try:
        promtool(rep, args.promtool, "test", "rules", "alerts_test.yml", what="alerts_test.yml")
    finally:
        os.chdir(cwd)

    rules = yaml.safe_load(open(os.path.join(PROM, "alerts.yml")))
    tests = yaml.safe_load(open(os.path.join(PROM, "alerts_test.yml")))
    tested = {t.get("alertname") for tc in tests.get("tests", []) for t in tc.get("alert_rule_test", [])}
    fired = {t.get("alertname") for tc in tests.get("tests", []) for t in tc.get("alert_rule_test", [])
             if t.get("exp_alerts")}
    resolved = {t.get("alertname") for tc in tests.get("tests", []) for t in tc.get("alert_rule_test", [])
                if not t.get("exp_alerts")}
    n_alerts = 0
    for g in rules.get("groups", []):
        for r in g.get("rules", []):
            if "alert" not in r:
                continue
            n_alerts += 1
            name = r["alert"]
            w = f"alerts.yml:{name}"
            rep.check((r.get("labels") or {}).get("severity") in SEVERITIES, w,
                      f"severity {(r.get('labels') or {}).get('severity')!r} is not one of {sorted(SEVERITIES)}")
            rep.check((r.get("annotations") or {}).get("summary"), w, "no summary annotation")
            rep.check(name in fired, w, "no test in alerts_test.yml where it fires")
            rep.check(name in resolved, w, "no test in alerts_test.yml where it is not firing")
            for m in dl.promql_metric_names(r["expr"]):
                rep.check(dl.family_of(m, families), w, f"uses {m}, not a metric family the stages expose")
    for name in tested:
        rep.check(any(r.get("alert") == name for g in rules.get("groups", []) for r in g.get("rules", [])),
                  "alerts_test.yml", f"tests {name}, which alerts.yml does not define")

    # Dashboard.
    try:
        dash = json.load(open(DASH))
    except ValueError as e:
        rep.fail("grafana", f"{DASH} is not valid JSON: {e}")
        return rep.finish()
    ids = [p.get("id") for p in dash.get("panels", [])]
    rep.check(len(ids) == len(set(ids)), "grafana", "panel ids are not unique")
    for p in dash.get("panels", []):
        w = f"grafana:{p.get('title')}"
        gp = p.get("gridPos") or {}
        rep.check(gp and gp.get("x", 0) >= 0 and gp.get("x", 0) + gp.get("w", 0) <= 24, w,
                  "panel is outside the 24-column grid")
        if p.get("type") != "row":
            rep.check(p.get("targets"), w, "panel has no query")
    rows = {p.get("title") for p in dash.get("panels", []) if p.get("type") == "row"}
    for need in ("Throughput", "Latency", "Quota", "Freshness", "Errors per stage"):
        rep.check(need in rows, "grafana", f"no row {need!r}")
    exprs = dashboard_exprs(dash)
    used = set()
    for title, e in exprs:
        for m in dl.promql_metric_names(e):
            used.add(m)
            rep.check(dl.family_of(m, families), f"grafana:{title}",
                      f"uses {m}, not a metric family the stages expose")
    # Every query must parse: promtool parses recording rules.
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:q{i}", "expr": grafana_to_promql(e)} for i, (_, e) in enumerate(exprs)]}]}, f)
        tmp = f.name
    try:
        promtool(rep, args.promtool, "check", "rules", tmp, what="grafana queries")
    finally:
        os.unlink(tmp)
    rep.note(f"{n_alerts} alerts, {len(exprs)} dashboard queries over {len(used)} metric names")
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
