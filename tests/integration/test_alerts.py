"""Alerts (issue 9): every built-in rule fires and resolves under the condition
it watches, notices reach a webhook receiver and an SMTP receiver, an
acknowledgement stops further notices, only one of two writers evaluates and
the other takes over after SIGKILL; `alerts list|ack`, `events tail`, /status.

Database rules are induced by writing the state the other stages would write
(a failed run, an old sync_state, a revoked token, many rejects); metric rules
by stub admin endpoints serving chosen /metrics values and /readyz statuses.
Every rule's `for` is 0 here (TDS_ALERT_<RULE>_FOR_S) so the tests do not wait
for minutes; the for-duration itself is covered by the unit tests and by
test_for_duration_delays_firing.
"""
import json
import re
import subprocess
import threading
import time

import pytest
import zmq

from alerts_util import (SmtpReceiver, StubAdmin, WebhookReceiver, alerts, alerts_env,
                         fetcher_metrics, ingress_metrics)
from conftest import free_port, http_get, wait_until
from sim_fixture import sim  # noqa: F401  (fixture)
from writer_util import WriterHarness, item, items_sets, rows_msg, ts

ORG = "60012345678"


@pytest.fixture
def hook():
    h = WebhookReceiver()
    yield h
    h.close()


@pytest.fixture
def smtp():
    s = SmtpReceiver()
    yield s
    s.close()


def spawn_writer(procs, env, label=None):
    return procs.spawn("tds-writer", env=env, label=label)


def firing(db, rule):
    return alerts(db, rule, "firing")


def resolved(db, rule):
    return alerts(db, rule, "resolved")


# ------------------------------------------------------------------ database rules

DB_RULES = {
    "sync_failed": dict(
        induce=["INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at, "
                "error) VALUES ('r1', %(org)s, 'items', 'incremental', 'failed', now(), "
                "'HTTP 500 from Zoho')"],
        clear=["INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at) "
               "VALUES ('r2', %(org)s, 'items', 'incremental', 'completed', now())"],
        severity="error", entity="items", words=["items", "failed", "HTTP 500 from Zoho"]),
    "sync_stuck": dict(
        induce=["INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, started_at, "
                "updated_at) VALUES ('r3', %(org)s, 'contacts', 'full', 'running', "
                "now() - interval '30 minutes', now() - interval '20 minutes')"],
        clear=["UPDATE tds.sync_runs SET status = 'completed', finished_at = now(), "
               "updated_at = now() WHERE run_id = 'r3'"],
        severity="warning", entity="contacts", words=["r3", "no progress"]),
    "entity_stale": dict(
        induce=["INSERT INTO tds.sync_state (org_id, entity, last_success_at) VALUES "
                "(%(org)s, 'invoices', now() - interval '5 minutes')"],
        clear=["UPDATE tds.sync_state SET last_success_at = now() WHERE entity = 'invoices'"],
        severity="warning", entity="invoices", words=["invoices", "last synced"],
        env={"TDS_ALERT_SYNC_INTERVAL_S": "60"}),
    "token_failed": dict(
        induce=["INSERT INTO tds.oauth_tokens (org_id, status, last_error) VALUES "
                "(%(org)s, 'revoked', 'invalid_code')"],
        clear=["UPDATE tds.oauth_tokens SET status = 'ok', last_error = NULL"],
        severity="critical", entity=None, words=["revoked", "auth exchange"]),
    "rejects_spike": dict(
        induce=["INSERT INTO tds.rejected (stage, org_id, entity, zoho_id, reason) "
                # long, Arabic, and an odd number of bytes before the letters:
                # the summary's 200-byte cut would fall inside a letter
                "SELECT 'processor', %(org)s, 'items', g::text, "
                "'rate is not a number: x' || repeat('أ', 150) FROM generate_series(1, 50) g"],
        clear=["UPDATE tds.rejected SET created_at = now() - interval '1 hour'"],
        severity="warning", entity="items", words=["50", "rejected", "rate is not a number"],
        env={"TDS_ALERT_REJECTS_SPIKE_THRESHOLD": "10"}),
}


@pytest.mark.parametrize("rule", sorted(DB_RULES))
def test_database_rule_fires_and_resolves(procs, db, hook, smtp, rule):
    spec = DB_RULES[rule]
    w = spawn_writer(procs, alerts_env(db, hook, smtp, extra=spec.get("env")))
    wait_until(lambda: w.metric("tds_alert_leader") == 1, 10, "writer evaluating")
    time.sleep(1.5)
    assert alerts(db) == [], "nothing may fire on a quiet database"
    for sql in spec["induce"]:
        db.execute(sql.replace("%(org)s", f"'{ORG}'"))

    rows = wait_until(lambda: firing(db, rule), 10, f"{rule} firing")
    assert len(rows) == 1
    aid, _, sev, org, entity, state, summary, notified, acked, details = rows[0]
    assert (sev, org, entity, notified, acked) == (spec["severity"], ORG, spec["entity"], True,
                                                   None)
    for word in spec["words"]:
        assert word in summary, (word, summary)
    assert details["key"] and "value" in details
    wait_until(lambda: hook.matching("FIRING", rule), 10, "webhook notice")
    wait_until(lambda: smtp.matching("FIRING", rule), 10, "email notice")

    for sql in spec["clear"]:
        db.execute(sql.replace("%(org)s", f"'{ORG}'"))
    wait_until(lambda: resolved(db, rule), 10, f"{rule} resolved")
    assert db.query("SELECT id, resolved_at IS NOT NULL FROM tds.alerts") == [(aid, True)]
    wait_until(lambda: hook.matching("RESOLVED", rule), 10, "webhook resolve notice")
    wait_until(lambda: smtp.matching("RESOLVED", rule), 10, "email resolve notice")
    time.sleep(2)
    assert len(hook.matching(rule)) == 2, hook.texts()
    assert len(smtp.matching(rule)) == 2, smtp.subjects()
    assert '"msg":"alert %d firing' % aid in w.stderr_text()


def test_for_duration_delays_firing(procs, db, hook):
    env = alerts_env(db, hook, extra={"TDS_ALERT_SYNC_FAILED_FOR_S": "4"})
    w = spawn_writer(procs, env)
    wait_until(lambda: w.metric("tds_alert_leader") == 1, 10, "writer evaluating")
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at) "
               "VALUES ('r1', %s, 'items', 'full', 'failed', now())", ORG)
    t0 = time.monotonic()
    wait_until(lambda: firing(db, "sync_failed"), 15, "sync_failed firing")
    assert time.monotonic() - t0 >= 3.5
    # pending that clears before `for` never fires
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at) "
               "VALUES ('r2', %s, 'contacts', 'full', 'failed', now())", ORG)
    time.sleep(1.5)
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at) "
               "VALUES ('r3', %s, 'contacts', 'full', 'completed', now())", ORG)
    time.sleep(5)
    assert [r[4] for r in alerts(db, "sync_failed")] == ["items"]


def test_sync_failed_reads_its_window_not_every_run(procs, db, hook):
    """tds.sync_runs keeps 90 days of runs: hundreds of thousands for a few
    organizations. sync_failed filtered on coalesce(finished_at, updated_at),
    which no index serves, so every cycle read the whole table (0.5-1 s of
    PostgreSQL time at 1.5 million runs, every 15 s). On finished_at it reads
    the window through sync_runs_status_idx."""
    procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": db.url})
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, started_at, "
               "finished_at, updated_at) SELECT 'old' || g, %s, 'items', 'incremental', "
               "CASE WHEN g %% 50 = 0 THEN 'failed' ELSE 'completed' END, "
               "now() - g * interval '20 seconds', now() - g * interval '20 seconds', "
               "now() - g * interval '20 seconds' FROM generate_series(4321, 300000) g", ORG)
    db.execute("ANALYZE tds.sync_runs")
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at) "
               "VALUES ('r1', %s, 'items', 'full', 'failed', now())", ORG)

    def seq_scans():
        db.execute("SELECT pg_stat_clear_snapshot()")
        return db.query("SELECT seq_scan FROM pg_stat_user_tables "
                        "WHERE schemaname = 'tds' AND relname = 'sync_runs'")[0][0]
    w = spawn_writer(procs, alerts_env(db, hook, extra={"TDS_WRITER_PRUNE_INTERVAL_S": "86400"}))
    wait_until(lambda: firing(db, "sync_failed"), 15, "sync_failed firing")
    before, cycles = seq_scans(), w.metric("tds_alert_cycles_total") or 0
    wait_until(lambda: (w.metric("tds_alert_cycles_total") or 0) >= cycles + 4, 20, "four cycles")
    time.sleep(1)   # statistics reach pg_stat_user_tables within a second or so
    assert seq_scans() == before, "a cycle read tds.sync_runs whole"
    assert [r[4] for r in alerts(db, "sync_failed")] == ["items"]


def test_a_lock_held_on_an_alert_row_does_not_stall_the_engine(procs, db, hook):
    """A transaction left open on a firing alert's row (an operator's psql)
    stalled the engine: its UPDATE waited for ever, the cycles stopped, no
    other rule was evaluated, and SIGTERM hung. The alert session has a
    lock_timeout: the cycle fails, the next tries again, SIGTERM exits, and
    the alert resolves once the lock is gone."""
    w = spawn_writer(procs, alerts_env(db, hook))
    wait_until(lambda: w.metric("tds_alert_leader") == 1, 10, "writer evaluating")
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at) "
               "VALUES ('r1', %s, 'items', 'full', 'failed', now())", ORG)
    aid = wait_until(lambda: firing(db, "sync_failed"), 10, "sync_failed firing")[0][0]
    holder = db.connect()
    holder.autocommit = False
    with holder.cursor() as cur:
        cur.execute("SELECT 1 FROM tds.alerts WHERE id = %s FOR UPDATE", (aid,))
    try:
        db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at) "
                   "VALUES ('r2', %s, 'items', 'full', 'completed', now())", ORG)
        time.sleep(2)  # the engine now waits for the row to resolve it
        c0 = w.metric("tds_alert_cycles_total")
        wait_until(lambda: w.metric("tds_alert_cycles_total") >= c0 + 2, 30,
                   "alert cycles going on while the row is locked")
        assert not resolved(db, "sync_failed")
        t0 = time.monotonic()
        w.stop(timeout=15)
        assert time.monotonic() - t0 < 10
    finally:
        holder.rollback()
        holder.close()
    w.start()
    wait_until(lambda: resolved(db, "sync_failed"), 20, "sync_failed resolved")


def test_a_run_stopped_by_a_clean_shutdown_is_no_failure(procs, db, hook):
    """A run whose fetcher shut down cleanly (a rolling deploy) is 'stopped':
    its request is run again, and sync_failed does not count it. Recorded as
    failed before, every restart raised the alert for each run it cut."""
    env = alerts_env(db, hook)
    w = spawn_writer(procs, env)
    wait_until(lambda: w.metric("tds_alert_leader") == 1, 10, "writer evaluating")
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at, "
               "error) VALUES ('s1', %s, 'contacts', 'reconcile', 'stopped', now(), "
               "'fetcher shut down before the run finished')", ORG)
    # a failure beside it shows the rule was evaluated over both
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at, "
               "error) VALUES ('f1', %s, 'items', 'incremental', 'failed', now(), 'boom')", ORG)
    wait_until(lambda: firing(db, "sync_failed"), 15, "sync_failed firing for items")
    time.sleep(1.5)
    assert [r[4] for r in alerts(db, "sync_failed")] == ["items"]


# ------------------------------------------------------------------ metric rules

class Driver:
    """Keeps stub counters moving the way a busy stage's would."""

    def __init__(self, fetcher, ingress):
        self.fetcher, self.ingress = fetcher, ingress
        self.c = dict(ok=0, errors=0, r429=0, sig=0, unacked=0)
        self.rate = dict(ok=10, errors=0, r429=0, sig=0, unacked=0)
        self.quota, self.journal, self.damaged = 5000, 0, 0
        self.stop = False
        self.lock = threading.Lock()
        self.push()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def push(self):
        self.fetcher.set(fetcher_metrics(ORG, self.c["ok"], self.c["errors"], self.c["r429"],
                                         self.quota))
        self.ingress.set(ingress_metrics(self.c["sig"], self.c["unacked"], self.journal,
                                         damaged=self.damaged))

    def run(self):
        while not self.stop:
            with self.lock:
                for k, v in self.rate.items():
                    self.c[k] = max(0, self.c[k] + v)
                self.push()
            time.sleep(0.25)

    def set(self, quota=None, journal=None, damaged=None, **rates):
        with self.lock:
            self.rate.update(rates)
            if quota is not None:
                self.quota = quota
            if journal is not None:
                self.journal = journal
            if damaged is not None:
                self.damaged = damaged
            self.push()

    def close(self):
        self.stop = True
        self.t.join()


METRIC_RULES = {
    # rule: (severity while induced, words in the summary)
    "api_error_rate": ("error", ["Zoho API calls", ORG]),
    "rate_limit_storm": ("error", ["429", ORG]),
    "quota_low": ("warning", ["100 Zoho API calls left", ORG]),
    "signature_failures": ("error", ["signature"]),
    "ingress_unacked": ("error", ["journaled webhooks", "growing"]),
    "journal_bytes": ("warning", ["75% of the journal bound", "805306368 bytes"]),
    "journal_damaged": ("error", ["41 damaged bytes", "incremental sync"]),
    "stage_not_ready": ("error", ["fetcher", "not ready", "503"]),
}


def test_metric_rules_fire_and_resolve(procs, db, hook):
    fetcher, ingress = StubAdmin(), StubAdmin()
    drv = Driver(fetcher, ingress)
    try:
        env = alerts_env(db, hook, scrape=f"{fetcher.url}, {ingress.url}",
                         extra={f"TDS_ALERT_{r.upper()}_WINDOW_S": "3"
                                for r in ("api_error_rate", "rate_limit_storm",
                                          "signature_failures", "ingress_unacked")})
        w = spawn_writer(procs, env)
        fetcher.wait_scrapes(4)
        ingress.wait_scrapes(4)
        time.sleep(1)
        assert alerts(db) == [], "healthy stages raise nothing"

        drv.set(ok=10, errors=10, r429=20, sig=10, unacked=100, quota=100, journal=3 * 2 ** 28,
                damaged=41)
        fetcher.set(ready=503)
        wait_until(lambda: {r[1] for r in firing(db, None)} >= set(METRIC_RULES), 20,
                   "every metric rule firing")
        for rule, (sev, words) in METRIC_RULES.items():
            rows = firing(db, rule)
            assert len(rows) == 1, rows
            assert rows[0][2] == sev, (rule, rows[0])
            for word in words:
                assert word in rows[0][6], (rule, word, rows[0][6])
        assert firing(db, "quota_low")[0][3] == ORG
        assert json.loads(json.dumps(firing(db, "stage_not_ready")[0][9]))["stage"] == "fetcher"
        wait_until(lambda: all(hook.matching("FIRING", r) for r in METRIC_RULES), 10,
                   "a notice per rule")

        drv.set(ok=10, errors=0, r429=0, sig=0, unacked=-200, quota=5000, journal=1000,
                damaged=0)
        fetcher.set(ready=200)
        wait_until(lambda: not firing(db, None), 20, "every metric rule resolved")
        assert {r[1] for r in resolved(db, None)} == set(METRIC_RULES)
        wait_until(lambda: all(hook.matching("RESOLVED", r) for r in METRIC_RULES), 10,
                   "a resolve notice per rule")

        # a stage that stops answering: not ready, at critical
        fetcher.close()
        rows = wait_until(lambda: firing(db, "stage_not_ready"), 10, "unreachable stage")
        assert rows[0][2] == "critical" and "does not answer" in rows[0][6]
        assert rows[0][6].startswith("fetcher at 127.0.0.1:"), rows[0][6]
        assert w.metric("tds_alert_scrape_errors_total") >= 1
    finally:
        drv.close()
        fetcher.close()
        ingress.close()



def test_a_scrape_name_that_does_not_resolve_is_an_alert(procs, db):
    """A name in TDS_ALERT_SCRAPE that does not resolve (a typo, a Service
    deleted) raised nothing and counted no scrape error, while it kept every
    metric alert from resolving. It is a stage_not_ready of its own now."""
    fetcher = StubAdmin()
    try:
        env = alerts_env(db, scrape=f"{fetcher.url},http://nosuch-stage.invalid:9101")
        w = spawn_writer(procs, env)
        rows = wait_until(lambda: firing(db, "stage_not_ready"), 15, "the unresolvable target")
        assert [r[6] for r in rows] == [
            "scrape target http://nosuch-stage.invalid:9101 does not resolve: no stage to ask"]
        assert rows[0][2] == "critical"
        assert w.metric("tds_alert_scrape_errors_total") >= 1
    finally:
        fetcher.close()


def test_a_restart_keeps_the_rate_alerts_firing(procs, db, hook):
    """The rules over a counter's increase (API error rate, 429 storm,
    signature failures, a growing ingress backlog) need this replica's own
    history. A restarted (or new) leader has none: it resolved the alerts it
    had just reloaded as firing, sent RESOLVED, and fired them again, with a
    second FIRING notice, once its history filled. Until its history covers
    a rule's window, the rule's alerts are kept as they are; once it does,
    what is still true stays firing, and what stopped resolves."""
    fetcher, ingress = StubAdmin(), StubAdmin()
    drv = Driver(fetcher, ingress)
    rules = {"api_error_rate", "rate_limit_storm", "signature_failures", "ingress_unacked"}
    try:
        env = alerts_env(db, hook, scrape=f"{fetcher.url}, {ingress.url}",
                         extra={f"TDS_ALERT_{r.upper()}_WINDOW_S": "3" for r in rules})
        w = spawn_writer(procs, env)
        fetcher.wait_scrapes(2)
        drv.set(ok=10, errors=10, r429=20, sig=10, unacked=100)
        wait_until(lambda: {r[1] for r in firing(db, None)} >= rules, 20, "firing")
        wait_until(lambda: all(hook.matching("FIRING", r) for r in rules), 10, "notices")
        before = {r[1]: r[0] for r in firing(db, None) if r[1] in rules}
        w.stop()
        w.start()
        wait_until(lambda: w.metric("tds_alert_leader") == 1, 10, "evaluating again")
        time.sleep(5)   # past the 3 s windows: the history covers them
        after = {r[1]: r[0] for r in firing(db, None) if r[1] in rules}
        assert after == before, (before, after, resolved(db, None))
        assert not any(hook.matching("RESOLVED", r) for r in rules)
        assert all(len(hook.matching("FIRING", r)) == 1 for r in rules), \
            {r: len(hook.matching("FIRING", r)) for r in rules}
        drv.set(ok=10, errors=0, r429=0, sig=0, unacked=-200)
        wait_until(lambda: not (rules & {r[1] for r in firing(db, None)}), 20, "resolved")
    finally:
        drv.close()
        fetcher.close()
        ingress.close()

def test_quota_low_believes_only_the_owner(procs, db):
    """Two fetchers export every organization's quota, but only the owner's
    is current: the other's stays 0 (or stale), with tds_fetcher_org_owned 0.
    quota_low looks at the owner's figure only."""
    owner = StubAdmin(fetcher_metrics(ORG, ok=0, quota=9000, owned=1))
    other = StubAdmin(fetcher_metrics(ORG, ok=0, quota=0, owned=0))
    try:
        spawn_writer(procs, alerts_env(db, scrape=f"{owner.url},{other.url}"))
        owner.wait_scrapes(4)
        other.wait_scrapes(4)
        assert firing(db, "quota_low") == [], "the replica that does not own the org reports 0"

        owner.set(fetcher_metrics(ORG, ok=0, quota=300, owned=1))
        rows = wait_until(lambda: firing(db, "quota_low"), 10, "the owner's quota below the reserve")
        assert len(rows) == 1 and rows[0][3] == ORG, rows
        assert f"org {ORG} has 300 Zoho API calls left" in rows[0][6], rows[0][6]

        # ownership moves: the old owner keeps its stale 300, the new one is at 8000
        owner.set(fetcher_metrics(ORG, ok=0, quota=300, owned=0))
        other.set(fetcher_metrics(ORG, ok=0, quota=8000, owned=1))
        wait_until(lambda: resolved(db, "quota_low"), 10, "quota_low resolved by the new owner")
        assert firing(db, "quota_low") == []
    finally:
        owner.close()
        other.close()


def test_api_error_rate_needs_enough_calls(procs, db):
    fetcher = StubAdmin(fetcher_metrics(ORG, ok=0, errors=0))
    try:
        env = alerts_env(db, scrape=fetcher.url,
                         extra={"TDS_ALERT_API_ERROR_RATE_WINDOW_S": "60"})
        spawn_writer(procs, env)
        fetcher.wait_scrapes(2)
        fetcher.set(fetcher_metrics(ORG, ok=0, errors=5))  # 5 of 5 failed, but only 5 calls
        fetcher.wait_scrapes(3)
        assert firing(db, "api_error_rate") == []
        fetcher.set(fetcher_metrics(ORG, ok=0, errors=25))
        wait_until(lambda: firing(db, "api_error_rate"), 10, "error rate with enough calls")
        assert firing(db, "api_error_rate")[0][2] == "critical"  # 100 % > escalate 50 %
    finally:
        fetcher.close()


# ------------------------------------------------------------------ delivery

def test_webhook_and_email_delivery_with_retries(procs, db, hook, smtp):
    hook.fail_next = 2
    w = spawn_writer(procs, alerts_env(db, hook, smtp))
    db.execute("INSERT INTO tds.oauth_tokens (org_id, status, last_error) VALUES "
               "(%s, 'revoked', 'invalid_code')", ORG)
    wait_until(lambda: hook.messages(), 15, "webhook delivered after retries")
    assert hook.failed == 2
    (aid,) = db.query("SELECT id FROM tds.alerts")[0]
    msg = hook.messages()[0]
    assert hook.bodies[0]["content_type"] == "application/json"
    assert msg["text"].startswith("[tds FIRING critical] token_failed: Zoho refresh token of org")
    att = msg["attachments"][0]
    assert att["color"] == "#7B0000" and att["title"] == msg["text"]
    fields = {f["title"]: f["value"] for f in att["fields"]}
    assert fields["Severity"] == "critical" and fields["Organization"] == ORG
    assert fields["Alert id"] == str(aid) and fields["Rule"] == "token_failed"
    assert w.metric("tds_alert_notifications_total",
                    {"channel": "webhook", "result": "failed"}) == 2
    assert w.metric("tds_alert_notifications_total",
                    {"channel": "webhook", "result": "sent"}) == 1

    wait_until(lambda: smtp.messages, 10, "email delivered")
    mail_from, rcpts, m, raw = smtp.messages[0]
    assert mail_from == "<tds@example.com>"
    assert rcpts == ["<ops@example.com>", "<oncall@example.com>"]
    assert m["From"] == "tds@example.com"
    assert str(m["Subject"]).startswith("[tds FIRING critical] token_failed:")
    assert m["X-Tds-Alert-Id"] == str(aid)
    body = m.get_content()
    assert f"organization: {ORG}" in body and f"tds-writer alerts ack {aid} --by" in body
    assert b"\r\n" in raw


def _fire_and_fail_email(procs, db, hook, env, failures):
    """A writer with env, a token_failed alert fired: its webhook notice
    delivered and `failures` email attempts failed. Returns the writer."""
    w = spawn_writer(procs, env)
    db.execute("INSERT INTO tds.oauth_tokens (org_id, status) VALUES (%s, 'invalid')", ORG)
    wait_until(lambda: hook.matching("FIRING", "token_failed"), 10, "webhook notice")
    wait_until(lambda: (w.metric("tds_alert_notifications_total",
                                 {"channel": "email", "result": "failed"}) or 0) >= failures, 10,
               f"{failures} failed email attempt(s)")
    return w


def test_smtp_credentials_are_never_sent_without_tls(procs, db, hook):
    """With a user and password, an smtp:// server must take STARTTLS: one
    that does not offer it (or an attacker who strips the offer) got the
    password in the clear, as AUTH PLAIN."""
    srv = SmtpReceiver(auth=True)
    try:
        env = alerts_env(db, hook, srv, extra={"TDS_ALERT_SMTP_USER": "alerts",
                                              "TDS_ALERT_SMTP_PASSWORD": "smtp-secret"})
        w = _fire_and_fail_email(procs, db, hook, env, 1)
        assert srv.auths == [] and srv.messages == [], (srv.auths, srv.subjects())
        # the failure is counted just before it is logged
        wait_until(lambda: "could not deliver alert notice" in w.stderr_text(), 5,
                   "the failed attempt logged")
        assert "smtp-secret" not in w.stderr_text()
    finally:
        srv.close()


def test_failing_channel_does_not_block(procs, db, hook):
    """SMTP pointing at a closed port: email retries, the webhook and the
    writer's own work go on."""
    env = alerts_env(db, hook, extra={"TDS_ALERT_SMTP_URL": f"smtp://127.0.0.1:{free_port()}",
                                      "TDS_ALERT_SMTP_FROM": "a@b", "TDS_ALERT_SMTP_TO": "c@d"})
    w = _fire_and_fail_email(procs, db, hook, env, 2)
    st, _ = http_get(w.admin_url + "/readyz")
    assert st == 200
    wait_until(lambda: "could not deliver alert notice" in w.stderr_text(), 5,
               "the failed attempt logged")


# ------------------------------------------------------------------ acknowledgement

def fail_run(db, run_id, entity, org=ORG):
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at, "
               "error) VALUES (%s, %s, %s, 'incremental', 'failed', now(), 'boom')",
               run_id, org, entity)



def test_an_smtp_server_that_never_answers_delays_only_email(procs, db, hook):
    """An SMTP server that takes the connection and never says a word: each
    email attempt waits out the channel timeout (10 s). The webhook notices
    used to wait in the same line, one email timeout each; now each channel
    has its own delivery thread. Shutdown ends an attempt in progress."""
    import socket
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        lsn.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(lsn.accept()[0])
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        env = alerts_env(db, hook, extra={
            "TDS_ALERT_SMTP_URL": f"smtp://127.0.0.1:{lsn.getsockname()[1]}",
            "TDS_ALERT_SMTP_FROM": "a@b", "TDS_ALERT_SMTP_TO": "c@d"})
        w = spawn_writer(procs, env)
        wait_until(lambda: w.metric("tds_alert_leader") == 1, 10, "writer evaluating")
        t0 = time.monotonic()
        for k, entity in enumerate(("items", "contacts", "invoices")):
            fail_run(db, f"silent{k}", entity)
        wait_until(lambda: len(hook.matching("FIRING", "sync_failed")) >= 3, 20,
                   "three webhook notices")
        took = time.monotonic() - t0
        print(f"three webhook notices in {took:.1f} s beside a silent SMTP server")
        assert took < 8, took
        assert held, "no email attempt reached the server"
        t1 = time.monotonic()
        w.stop()
        assert time.monotonic() - t1 < 6, "shutdown waited for the email attempt"
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        lsn.close()

def test_every_notice_given_up_is_logged(procs, db):
    """A notice given up on had its error line counted into the 10 s limit of
    the retry warnings just before it, so with both channels failing a notice
    could be dropped with no line saying so."""
    closed = f"127.0.0.1:{free_port()}"
    w = spawn_writer(procs, alerts_env(db, extra={
        "TDS_ALERT_WEBHOOK_URL": f"http://{closed}/hook", "TDS_ALERT_SMTP_URL": f"smtp://{closed}",
        "TDS_ALERT_SMTP_FROM": "tds@example.com", "TDS_ALERT_SMTP_TO": "ops@example.com",
        "TDS_ALERT_RETRY_MIN_MS": "10"}))
    wait_until(lambda: w.metric("tds_alert_leader") == 1, 10, "writer evaluating")
    fail_run(db, "g1", "items")

    def gave_up():
        return [json.loads(x)["msg"] for x in w.stderr_text().splitlines() if "giving up" in x]
    wait_until(lambda: len(gave_up()) == 2, 40, "both channels giving up")
    assert sorted(m.split(" by ")[1].split(":")[0] for m in gave_up()) == ["email", "webhook"], \
        gave_up()


def test_no_repeats_escalation_and_acknowledgement(procs, db, hook, smtp):
    env = alerts_env(db, hook, smtp)
    writer = spawn_writer(procs, env)
    fail_run(db, "a1", "items")
    wait_until(lambda: hook.matching("FIRING", "items"), 10, "first notice")
    time.sleep(3)  # three more cycles while still firing
    assert len(hook.matching("items")) == 1, hook.texts()
    # worse: three failures in a row escalate error → critical, notified once
    fail_run(db, "a2", "items")
    fail_run(db, "a3", "items")
    wait_until(lambda: hook.matching("ESCALATED critical", "items"), 10, "escalation notice")
    time.sleep(2)
    assert len(hook.matching("items")) == 2

    # acknowledged: escalation is silent, the resolve notice still goes out
    fail_run(db, "b1", "contacts")
    wait_until(lambda: hook.matching("FIRING", "contacts"), 10, "contacts notice")
    (aid,) = db.query("SELECT id FROM tds.alerts WHERE entity = 'contacts'")[0]
    r = procs.run("tds-writer", ["alerts", "ack", str(aid), "--by", "alice"],
                  env={"TDS_DATABASE_URL": db.url})
    assert f"alert {aid} (sync_failed, firing) acknowledged by alice" in r.stdout
    r = procs.run("tds-writer", ["alerts", "ack", str(aid), "--by", "bob"],
                  env={"TDS_DATABASE_URL": db.url}, check=False)
    assert r.returncode == 1 and "already acknowledged by alice" in r.stderr
    r = procs.run("tds-writer", ["alerts", "ack", "99999", "--by", "bob"],
                  env={"TDS_DATABASE_URL": db.url}, check=False)
    assert r.returncode == 1 and "no alert 99999" in r.stderr
    r = procs.run("tds-writer", ["alerts", "ack", str(aid)], env={"TDS_DATABASE_URL": db.url},
                  check=False)
    assert r.returncode == 2
    fail_run(db, "b2", "contacts")
    fail_run(db, "b3", "contacts")
    wait_until(lambda: db.query("SELECT severity FROM tds.alerts WHERE id = %s", aid)
               == [("critical",)], 10, "severity raised in the table")
    time.sleep(2)
    assert len(hook.matching("contacts")) == 1, hook.texts()
    assert len(smtp.matching("contacts")) == 1, smtp.subjects()

    r = procs.run("tds-writer", ["alerts", "list"], env={"TDS_DATABASE_URL": db.url})
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "STATE", "SEVERITY", "RULE"]
    row = next(l for l in lines if l.startswith(str(aid) + " "))
    assert "firing" in row and "critical" in row and "alice" in row and "contacts" in row

    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at) "
               "VALUES ('b4', %s, 'contacts', 'incremental', 'completed', now())", ORG)
    wait_until(lambda: hook.matching("RESOLVED", "contacts"), 10, "resolve notice")
    r = procs.run("tds-writer", ["alerts", "list"], env={"TDS_DATABASE_URL": db.url})
    assert not any(l.startswith(str(aid) + " ") for l in r.stdout.splitlines())
    r = procs.run("tds-writer", ["alerts", "list", "--all"], env={"TDS_DATABASE_URL": db.url})
    assert any(l.startswith(str(aid) + " ") and "resolved" in l for l in r.stdout.splitlines())
    assert writer.alive()


def test_restart_does_not_renotify(procs, db, hook):
    env = alerts_env(db, hook)
    w = spawn_writer(procs, env)
    fail_run(db, "a1", "items")
    wait_until(lambda: hook.matching("FIRING", "items"), 10, "notice")
    w.stop()
    w.start()
    wait_until(lambda: w.metric("tds_alert_leader") == 1, 10, "evaluating again")
    time.sleep(2)
    assert len(hook.matching("items")) == 1
    assert len(firing(db, "sync_failed")) == 1


# ------------------------------------------------------------------ replicas

def test_two_writers_one_evaluates_and_takeover(procs, db, hook):
    a = spawn_writer(procs, alerts_env(db, hook, extra={"TDS_INSTANCE": "writer-a"}), "writer-a")
    b = spawn_writer(procs, alerts_env(db, hook, extra={"TDS_INSTANCE": "writer-b"}), "writer-b")

    def leaders():
        return [p for p in (a, b) if p.metric("tds_alert_leader") == 1]

    wait_until(lambda: len(leaders()) == 1, 10, "one leader")
    time.sleep(2)
    assert len(leaders()) == 1
    leader = leaders()[0]
    other = b if leader is a else a
    assert other.metric("tds_alert_cycles_total") >= 1  # the other one runs, but does not evaluate
    st, body = http_get(other.admin_url + "/status")
    assert st == 200 and json.loads(body)["alerts"]["evaluating"] is False

    fail_run(db, "a1", "items")
    wait_until(lambda: hook.matching("FIRING", "items"), 10, "notice")
    time.sleep(2)
    assert len(firing(db, "sync_failed")) == 1
    assert len(hook.matching("items")) == 1
    (aid,) = db.query("SELECT id FROM tds.alerts")[0]
    assert hook.messages()[0]["attachments"][0]["fields"][-1]["value"] == \
        ("writer-a" if leader is a else "writer-b")

    leader.kill()
    t0 = time.monotonic()
    wait_until(lambda: other.metric("tds_alert_leader") == 1, 10, "takeover")
    took = time.monotonic() - t0
    assert took < 5, took
    time.sleep(2)
    assert len(hook.matching("items")) == 1, "the new leader does not notify again"
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at) "
               "VALUES ('a2', %s, 'items', 'incremental', 'completed', now())", ORG)
    wait_until(lambda: hook.matching("RESOLVED", "items"), 10, "resolved by the new leader")
    assert db.query("SELECT id, state FROM tds.alerts") == [(aid, "resolved")]


def test_a_writer_that_stops_evaluating_exports_no_firing_alerts(procs, db, hook):
    """A writer that lost the evaluation (its connection dropped, another
    session took the lock) kept exporting its last tds_alerts_firing counts,
    so a sum over the replicas counted alerts twice, resolved ones included."""
    w = spawn_writer(procs, alerts_env(db, hook))
    wait_until(lambda: w.metric("tds_alert_leader") == 1, 10, "writer evaluating")
    fail_run(db, "a1", "items")
    wait_until(lambda: w.metric("tds_alerts_firing", {"severity": "error"}) == 1, 10,
               "one error firing")
    holder = db.connect()
    try:
        def take_over():
            with holder.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'tds-writer alerts'")
                cur.execute("SELECT pg_try_advisory_lock(hashtext('tds-alerts'))")
                return cur.fetchone()[0]
        wait_until(take_over, 20, "the alert lock taken from the writer")
        wait_until(lambda: w.metric("tds_alert_leader") == 0, 10, "the writer not evaluating")
        time.sleep(2)
        assert w.metric("tds_alerts_firing", {"severity": "error"}) == 0
    finally:
        holder.close()
    wait_until(lambda: w.metric("tds_alerts_firing", {"severity": "error"}) == 1, 15,
               "evaluating again once the lock is free")



def test_the_evaluating_session_is_probed_by_the_server(procs, db, pg, hook):
    """Leadership is the alert session's advisory lock, idle between cycles.
    The server's end of that session keeps TCP keepalive at 30 s, so a
    leader whose node dies without a FIN gives the lock up in about a
    minute. Before, the server waited for the kernel's default (over two
    hours), and no writer evaluated the rules meanwhile."""
    w = spawn_writer(procs, alerts_env(db, hook))
    wait_until(lambda: w.metric("tds_alert_leader") == 1, 10, "writer evaluating")
    (port,) = db.query("SELECT client_port FROM pg_stat_activity "
                       "WHERE application_name = 'tds-writer alerts'")[0]

    def timer():
        out = subprocess.run(["ss", "-tnoH", "state", "established",
                              f"( sport = :{pg.port} and dport = :{port} )"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        m = re.search(r"timer:\(keepalive,(?:(\d+)min)?(\d+(?:\.\d+)?)(m?s)", out)
        if not m:   # a socket just written to shows another timer for a moment
            return None
        secs = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
        return int(m.group(1) or 0) * 60 + secs
    wait_until(lambda: (t := timer()) is not None and t <= 30, 10,
               "the server's keepalive on the alert session at 30 s")

# ------------------------------------------------------------------ status, config, events

def test_status_json(procs, db):
    env = alerts_env(db, extra={"TDS_ALERT_SYNC_INTERVAL_S": "60"})
    for k in ("TDS_WRITER_BIND", "TDS_ACK_BIND"):
        del env[k]
    h = WriterHarness(procs, db, env=env)
    w = h.proc
    # the windows count what happens after the engine's first snapshot
    wait_until(lambda: (w.metric("tds_alert_cycles_total") or 0) >= 2, 10, "two cycles")
    for n in range(3):
        src, f = rows_msg(ORG, items_sets([item(ORG, str(n), ts(n), f"item {n}")]))
        h.send(f)
        h.wait_acked([src])
    db.execute("INSERT INTO tds.sync_state (org_id, entity, last_success_at) VALUES "
               "(%s, 'items', now() - interval '10 minutes'), (%s, 'contacts', now())", ORG, ORG)
    wait_until(lambda: firing(db, "entity_stale"), 10, "stale alert")

    def status():
        st, body = http_get(w.admin_url + "/status")
        assert st == 200
        return json.loads(body)
    s = wait_until(lambda: (lambda s: s if s["alerts"]["open"] else None)(status()), 10,
                   "status with the open alert")
    assert s["stage"] == "writer" and s["alerts"]["evaluating"] is True
    assert [a["rule"] for a in s["alerts"]["open"]] == ["entity_stale"]
    fresh = {f["entity"]: f for f in s["freshness"]}
    assert fresh["items"]["stale"] is True and fresh["contacts"]["stale"] is False
    assert 590 < fresh["items"]["age_s"] < 700 and fresh["items"]["interval_s"] == 60
    win = s["writer_window"]
    assert set(win) == {"5m", "1h"}
    assert set(win["5m"]) >= {"success_rate", "error_rate", "commit_avg_ms", "commit_p99_ms",
                              "rows_written", "batches"}

    def window_with_rows():
        five = status()["writer_window"]["5m"]
        return five if five["rows_written"] >= 3 else None
    five = wait_until(window_with_rows, 10, "rows in the 5 min window")
    assert five["success_rate"] == 1.0 and five["error_rate"] == 0.0
    assert five["batches"] >= 1 and five["commit_avg_ms"] > 0 and five["commit_p99_ms"] > 0
    assert status()["writer_window"]["1h"]["rows_written"] >= 3
    h.close()


def test_entity_stale_uses_the_interval_the_fetcher_uses(procs, db, hook, tmp_path):
    """On a small Zoho plan the fetcher stretches incremental_every_s to fit
    the daily budget (69 minutes at 1,000 calls a day) and records the
    interval it uses in tds.quota_use. An entity last synced 20 minutes ago
    is not stale for an organization whose fetcher runs every 4140 s, though
    it is configured for 300 s; it still is with no record, or with one its
    fetcher stopped rewriting long ago. Before, all three fired."""
    fresh_q, none_q, old_q = ORG, "60012345679", "60012345680"
    cfg = tmp_path / "orgs.json"
    cfg.write_text(json.dumps({"organizations": [
        {"org_id": o, "incremental_every_s": 300} for o in (fresh_q, none_q, old_q)]}))
    w = spawn_writer(procs, alerts_env(db, hook, extra={"TDS_CONFIG": str(cfg)}))
    wait_until(lambda: w.metric("tds_alert_leader") == 1, 10, "writer evaluating")
    db.execute("INSERT INTO tds.quota_use (org_id, instance, saved_at, in_flight, done_at, "
               "incremental_every_s) VALUES "
               "(%s, 'fetcher.a', now(), 0, '{}', 4140), "
               "(%s, 'fetcher.b', now() - interval '20 minutes', 0, '{}', 4140)",
               fresh_q, old_q)
    db.execute("INSERT INTO tds.sync_state (org_id, entity, last_success_at) VALUES "
               "(%s, 'items', now() - interval '20 minutes'), "
               "(%s, 'items', now() - interval '20 minutes'), "
               "(%s, 'items', now() - interval '20 minutes')", fresh_q, none_q, old_q)

    rows = wait_until(lambda: (lambda r: r if len(r) >= 2 else None)(firing(db, "entity_stale")),
                      10, "entity_stale for the organizations without a current record")
    time.sleep(2.5)  # cycles enough for the third, were it to fire
    rows = firing(db, "entity_stale")
    assert sorted(r[3] for r in rows) == sorted([none_q, old_q]), rows
    for r in rows:
        assert r[2] == "warning" and "300 s interval" in r[6], r
        assert r[9]["interval_s"] == 300 and r[9]["configured_interval_s"] == 300, r

    st, body = http_get(w.admin_url + "/status")
    assert st == 200
    fresh = {f["org"]: f for f in json.loads(body)["freshness"]}
    assert fresh[fresh_q]["interval_s"] == 4140 and fresh[fresh_q]["stale"] is False
    assert fresh[none_q]["interval_s"] == 300 and fresh[none_q]["stale"] is True
    assert fresh[old_q]["interval_s"] == 300 and fresh[old_q]["stale"] is True

    # a recorded interval below the configured one does not lower the floor
    db.execute("UPDATE tds.quota_use SET incremental_every_s = 60, saved_at = now() "
               "WHERE org_id = %s", old_q)
    time.sleep(2.5)
    fresh = {f["org"]: f for f in json.loads(http_get(w.admin_url + "/status")[1])["freshness"]}
    assert fresh[old_q]["interval_s"] == 300 and fresh[old_q]["stale"] is True
    # the fetcher that was gone comes back stretched: the alert resolves
    db.execute("UPDATE tds.quota_use SET incremental_every_s = 4140, saved_at = now() "
               "WHERE org_id = %s", old_q)
    wait_until(lambda: [r[3] for r in resolved(db, "entity_stale")] == [old_q], 10,
               "entity_stale resolved once its fetcher records the interval again")
    assert [r[3] for r in firing(db, "entity_stale")] == [none_q]
    assert not [r for r in alerts(db, "entity_stale") if r[3] == fresh_q]


def test_entity_stale_only_for_what_the_configuration_syncs(procs, db, hook, tmp_path):
    """tds.sync_state keeps the rows of an organization or entity taken out
    of TDS_CONFIG, and entity_stale went on firing for them for ever. With
    TDS_CONFIG it judges only the entities it lists (all of an organization's
    when it lists none); an id written as a number counts too. So do
    token_failed and sync_failed."""
    cfg = tmp_path / "orgs.json"
    cfg.write_text(json.dumps({"organizations": [
        {"org_id": ORG, "incremental_every_s": 60, "entities": ["items"]},
        {"org_id": 777, "incremental_every_s": 60}]}))
    w = spawn_writer(procs, alerts_env(db, hook, extra={"TDS_CONFIG": str(cfg)}))
    wait_until(lambda: w.metric("tds_alert_leader") == 1, 10, "writer evaluating")
    db.execute("INSERT INTO tds.sync_state (org_id, entity, last_success_at) "
               "SELECT o, e, now() - interval '10 minutes' FROM unnest(%s::text[]) o, "
               "unnest(ARRAY['items', 'contacts']) e", [ORG, "777", "60099999999"])
    wait_until(lambda: len(firing(db, "entity_stale")) >= 3, 10, "entity_stale firing")
    time.sleep(2.5)
    assert sorted((r[3], r[4]) for r in firing(db, "entity_stale")) == sorted([
        ("777", "contacts"), ("777", "items"), (ORG, "items")])
    st, body = http_get(w.admin_url + "/status")
    assert {(f["org"], f["entity"]) for f in json.loads(body)["freshness"]} == {
        ("777", "contacts"), ("777", "items"), (ORG, "items")}
    # a revoked token and a failed run of an organization the file no longer
    # lists: no token_failed (critical, it fired for ever) nor sync_failed;
    # the same of a listed one fire
    db.execute("INSERT INTO tds.oauth_tokens (org_id, status) VALUES ('60099999999', 'revoked'), "
               "('777', 'revoked')")
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at, "
               "error) VALUES ('gone-1', '60099999999', 'items', 'incremental', 'failed', now(), "
               "'x'), ('kept-1', '777', 'items', 'incremental', 'failed', now(), 'x')")
    wait_until(lambda: firing(db, "token_failed") and firing(db, "sync_failed"), 10,
               "token_failed and sync_failed firing")
    time.sleep(2.5)
    assert sorted(r[3] for r in firing(db, "token_failed")) == ["777"]
    assert sorted((r[3], r[4]) for r in firing(db, "sync_failed")) == [("777", "items")]


@pytest.mark.parametrize("env,line", [
    ({"TDS_ALERT_SCRAPE": "nonsense"}, "tds-writer: invalid TDS_ALERT_SCRAPE: 'nonsense'"),
    ({"TDS_ALERT_QUOTA_LOW_SEVERITY": "loud"}, "tds-writer: invalid TDS_ALERT_QUOTA_LOW_SEVERITY: 'loud'"),
    ({"TDS_ALERT_SMTP_URL": "smtp://127.0.0.1:25"},
     "tds-writer: missing required setting TDS_ALERT_SMTP_FROM (needed with TDS_ALERT_SMTP_URL)"),
    ({"TDS_ALERT_INTERVAL_S": "0"}, "tds-writer: invalid TDS_ALERT_INTERVAL_S: '0' (expected 1..3600)"),
    # journal_bytes took bytes before it took a share: such a limit would
    # never be reached, and the rule would be off without a word
    ({"TDS_ALERT_JOURNAL_BYTES_THRESHOLD": "858993459"},
     "tds-writer: alert rule journal_bytes: threshold 8.58993e+08, escalate 0.9: its value never "
     "passes 1 (a share), so the rule would never fire"),
    ({"TDS_ALERT_SMTP_URL": "smtp://alerts:pa55@mail.example.com:587", "TDS_ALERT_SMTP_FROM": "a@b",
      "TDS_ALERT_SMTP_TO": "c@d"},
     "tds-writer: invalid TDS_ALERT_SMTP_URL: it carries a user or password; give them in "
     "TDS_ALERT_SMTP_USER and TDS_ALERT_SMTP_PASSWORD (secrets)"),
    ({"TDS_ALERT_SMTP_URL": "ftp://alerts:pa55@mail.example.com"},
     "tds-writer: invalid TDS_ALERT_SMTP_URL: expected smtp:// or smtps://"),
])
def test_bad_alert_config(procs, db, env, line):
    full = alerts_env(db)
    full.update(env)
    r = procs.run("tds-writer", [], env=full, check=False, timeout=20)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [line]


def test_rules_file(procs, db, tmp_path):
    f = tmp_path / "rules.json"
    f.write_text(json.dumps({"rules": {"token_failed": {"severity": "info", "escalate": None}}}))
    env = alerts_env(db, extra={"TDS_ALERT_RULES": str(f)})
    spawn_writer(procs, env)
    db.execute("INSERT INTO tds.oauth_tokens (org_id, status) VALUES (%s, 'revoked')", ORG)
    rows = wait_until(lambda: firing(db, "token_failed"), 10, "token alert")
    assert rows[0][2] == "info"
    f.write_text('{"rules": {"nope": {}}}')
    env = alerts_env(db, extra={"TDS_ALERT_RULES": str(f)})
    r = procs.run("tds-writer", [], env=env, check=False, timeout=20)
    assert r.returncode == 2 and "unknown rule 'nope'" in r.stderr


def test_alerts_off(procs, db):
    w = spawn_writer(procs, alerts_env(db, extra={"TDS_ALERTS": "false"}))
    db.execute("INSERT INTO tds.oauth_tokens (org_id, status) VALUES (%s, 'revoked')", ORG)
    time.sleep(2.5)
    assert alerts(db) == []
    assert w.metric("tds_alert_leader") is None


def test_events_tail(procs, bins):
    ctx = zmq.Context.instance()
    pubs, ports = [], []
    for _ in range(2):
        s = ctx.socket(zmq.PUB)
        port = free_port()
        s.bind(f"tcp://127.0.0.1:{port}")
        pubs.append(s)
        ports.append(port)
    p = subprocess.Popen([bins.require("tds-writer"), "events", "tail", "--connect",
                          ",".join(f"tcp://localhost:{port}" for port in ports), "--count", "4"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        n = 0
        while p.poll() is None and time.monotonic() < deadline:
            for i, s in enumerate(pubs):
                body = {"ts": "2026-01-01T00:00:00Z", "stage": f"stage{i}",
                        "event": "tds.zoho.sync.started", "org": ORG, "n": n}
                s.send_multipart([b"tds.zoho.sync.started", json.dumps(body).encode()])
            n += 1
            time.sleep(0.1)
        out, err = p.communicate(timeout=5)
    finally:
        if p.poll() is None:
            p.kill()
        for s in pubs:
            s.close(0)
    assert p.returncode == 0, err
    events = [json.loads(l) for l in out.splitlines()]
    assert len(events) == 4
    assert all(e["event"] == "tds.zoho.sync.started" for e in events)
    assert {e["stage"] for e in events} == {"stage0", "stage1"}
    r = procs.run("tds-writer", ["events", "tail"], check=False)
    assert r.returncode == 2 and "--connect" in r.stderr


def test_fetcher_recorded_alerts_resolve_with_the_rule(procs, db, hook):
    """The fetcher writes zoho_* rows into tds.alerts when it meets a failure;
    the engine resolves them with its own rule and notifies only once."""
    w = spawn_writer(procs, alerts_env(db, hook))
    wait_until(lambda: w.metric("tds_alert_leader") == 1, 10, "writer evaluating")
    db.execute("INSERT INTO tds.oauth_tokens (org_id, status, last_error) VALUES "
               "(%s, 'revoked', 'invalid_code')", ORG)
    db.execute("INSERT INTO tds.alerts (rule, severity, org_id, summary) VALUES "
               "('zoho_token_revoked', 'critical', %s, 'Zoho refresh token is invalid or revoked')",
               ORG)
    fail_run(db, "r1", "items")
    db.execute("INSERT INTO tds.alerts (rule, severity, org_id, entity, summary) VALUES "
               "('zoho_sync_failed', 'error', %s, 'items', 'boom'), "
               "('zoho_sync_failed', 'error', %s, 'contacts', 'old failure, since cleared')",
               ORG, ORG)
    wait_until(lambda: firing(db, "token_failed") and firing(db, "sync_failed"), 10, "own alerts")
    time.sleep(2)
    # the contacts row has no failing run behind it: resolved; the others stay
    assert db.query("SELECT rule, coalesce(entity, '-'), state FROM tds.alerts "
                    "WHERE rule LIKE 'zoho_%%' ORDER BY id") == [
        ("zoho_token_revoked", "-", "firing"), ("zoho_sync_failed", "items", "firing"),
        ("zoho_sync_failed", "contacts", "resolved")]
    db.execute("UPDATE tds.oauth_tokens SET status = 'ok', last_error = NULL")
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at) "
               "VALUES ('r2', %s, 'items', 'incremental', 'completed', now())", ORG)
    wait_until(lambda: not firing(db, None), 10, "everything resolved")
    wait_until(lambda: len(hook.matching("RESOLVED")) == 2, 10, "two resolve notices")
    time.sleep(1)
    assert len(hook.matching("FIRING")) == 2 and len(hook.texts()) == 4
    assert not hook.matching("zoho_"), "rows the fetcher recorded are not notified again"


# ------------------------------------------------------------------ the real fetcher

def test_real_fetcher_quota_429_storm_and_revoked_token(procs, db, sim, tmp_path, hook):
    """The fetcher against the simulator with limits below what it is told to
    use: its real /metrics raise quota_low and rate_limit_storm; a revoked
    refresh token raises token_failed."""
    from fetcher_util import org_spec
    from sim_fixture import REFRESH_TOKEN
    # contacts: a detail call each, so that the sync keeps asking
    s = sim(orgs=["id=60001,tz=+0300,stock=warehouses,product=inventory,items=5,groups=2,"
                  "contacts=400,invoices=5,salesorders=5,warehouses=2"],
            extra_args=["--minute-ms", "1000", "--rate-per-min", "5"])
    s.limits(org="60001", daily=300)
    rows_port, ack_port, proc_port = free_port(), free_port(), free_port()
    fetch_admin = free_port()
    cfg = tmp_path / "orgs.json"
    cfg.write_text(json.dumps({"organizations": [
        dict(org_spec("60001", rate_per_min=120, max_concurrency=4), accounts_url=s.url)]}))
    env = alerts_env(db, hook, scrape=f"http://127.0.0.1:{fetch_admin}", extra={
        "TDS_WRITER_BIND": f"tcp://127.0.0.1:{rows_port}",
        "TDS_ACK_BIND": f"tcp://127.0.0.1:{ack_port}",
        "TDS_ALERT_RATE_LIMIT_STORM_WINDOW_S": "5"})
    spawn_writer(procs, env)
    procs.spawn("tds-processor", env={
        "TDS_PROCESSOR_BIND": f"tcp://127.0.0.1:{proc_port}",
        "TDS_WRITER_CONNECT": f"tcp://127.0.0.1:{rows_port}"})
    events_port = free_port()
    f = procs.spawn("tds-fetcher", env={
        "TDS_DATABASE_URL": db.url, "TDS_CONFIG": str(cfg),
        "TDS_ADMIN_LISTEN": f"127.0.0.1:{fetch_admin}",
        "TDS_EVENTS_BIND": f"tcp://127.0.0.1:{events_port}",
        "TDS_FETCHER_BIND": f"tcp://127.0.0.1:{free_port()}",
        "TDS_PROCESSOR_CONNECT": f"tcp://127.0.0.1:{proc_port}",
        "TDS_ACK_CONNECT": f"tcp://127.0.0.1:{ack_port}",
        "TDS_FETCHER_SCHEDULE": "false", "TDS_FETCHER_MINUTE_MS": "1000"})
    # the fetcher's own events, live, through `tds-writer events tail`
    tail = subprocess.Popen([procs.bins.require("tds-writer"), "events", "tail", "--connect",
                             f"tcp://localhost:{events_port}", "--topic", "tds.zoho.sync.",
                             "--count", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(0.5)  # let the subscription reach the publisher
    db.execute("INSERT INTO tds.sync_requests (org_id, entity, mode, requested_by) "
               "VALUES ('60001', 'contacts', 'full', 'test')")
    try:
        out, err = tail.communicate(timeout=20)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, err
    ev = json.loads(out)
    assert ev["event"] == "tds.zoho.sync.started" and ev["stage"] == "fetcher", ev
    assert ev["org"] == "60001" and ev["entity"] == "contacts", ev
    rows = wait_until(lambda: firing(db, "rate_limit_storm"), 30, "429 storm from the simulator")
    assert rows[0][3] == "60001"
    assert f.metric("tds_fetcher_429_total") > 0
    rows = wait_until(lambda: firing(db, "quota_low"), 30, "quota below the reserve")
    assert "60001 has" in rows[0][6]
    wait_until(lambda: hook.matching("FIRING", "rate_limit_storm"), 10, "storm notice")

    r = s.request("POST", "/oauth/v2/token/revoke", params={"token": REFRESH_TOKEN})
    assert r.status == 200, r
    s.expire_tokens()
    rows = wait_until(lambda: firing(db, "token_failed"), 60, "revoked token noticed")
    assert rows[0][2] == "critical" and rows[0][3] == "60001"
    wait_until(lambda: hook.matching("FIRING critical", "token_failed"), 10, "token notice")


def test_postgresql_restart_keeps_alerts(procs, db, pg, hook):
    w = spawn_writer(procs, alerts_env(db, hook))
    fail_run(db, "a1", "items")
    wait_until(lambda: hook.matching("FIRING", "items"), 10, "notice")
    pg.restart(down_s=2)
    wait_until(lambda: w.metric("tds_alert_leader") == 1 and
               (w.metric("tds_alert_cycles_total") or 0) > 0, 20, "evaluating again")
    time.sleep(3)
    assert len(hook.matching("items")) == 1, hook.texts()
    assert len(alerts(db)) == 1
    db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, status, finished_at) "
               "VALUES ('a2', %s, 'items', 'incremental', 'completed', now())", ORG)
    wait_until(lambda: hook.matching("RESOLVED", "items"), 15, "resolved after the restart")
    assert [r[5] for r in alerts(db)] == ["resolved"]
    # the session (and with it the lock) was lost and taken again
    assert w.stderr_text().count("now evaluates the alert rules") == 2
