"""Helpers for test_alerts.py: receivers for the alert channels and a stub
admin endpoint for the scrape-based rules.

- WebhookReceiver: an HTTP server thread that records every POST body (JSON)
  and can be told to fail the next N requests with 500.
- SmtpReceiver: a minimal SMTP server (socketserver, RFC 5321 subset: EHLO/HELO,
  MAIL, RCPT, DATA, RSET, NOOP, QUIT) recording envelope and message. Written
  here so the suite needs no extra package.
- StubAdmin: serves /metrics with text the test sets, and /readyz with a
  status the test sets; like a stage's admin port.
"""
import email
import email.policy
import json
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import free_port


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # noqa: D401 - keep pytest output clean
        pass


class WebhookReceiver:
    def __init__(self):
        self.port = free_port()
        self.bodies = []
        self.fail_next = 0
        self.failed = 0
        self.lock = threading.Lock()
        outer = self

        class H(_Quiet):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                with outer.lock:
                    if outer.fail_next > 0:
                        outer.fail_next -= 1
                        outer.failed += 1
                        code = 500
                    else:
                        outer.bodies.append({"content_type": self.headers.get("Content-Type"),
                                             "json": json.loads(raw)})
                        code = 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"

    def messages(self):
        with self.lock:
            return [b["json"] for b in self.bodies]

    def texts(self):
        return [m["text"] for m in self.messages()]

    def matching(self, *words):
        return [t for t in self.texts() if all(w in t for w in words)]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


class SmtpReceiver:
    def __init__(self, auth=False):
        self.port = free_port()
        self.messages = []  # (mail_from, [rcpt], email.message.EmailMessage)
        self.auths = []     # AUTH command lines received (offered with auth=True)
        self.lock = threading.Lock()
        outer = self

        class H(socketserver.StreamRequestHandler):
            def reply(self, line):
                self.wfile.write((line + "\r\n").encode())
                self.wfile.flush()

            def handle(self):
                self.reply("220 test-smtp ESMTP ready")
                mail_from, rcpts = None, []
                while True:
                    line = self.rfile.readline(4096)
                    if not line:
                        return
                    cmd = line.decode("utf-8", "replace").rstrip("\r\n")
                    verb = cmd.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        if verb == "EHLO":
                            self.wfile.write(b"250-test-smtp\r\n250-8BITMIME\r\n"
                                             + (b"250-AUTH PLAIN LOGIN\r\n" if auth else b"")
                                             + b"250 SIZE 1000000\r\n")
                            self.wfile.flush()
                        else:
                            self.reply("250 test-smtp")
                    elif verb == "MAIL":
                        mail_from, rcpts = cmd.split(":", 1)[1].strip().split(" ")[0], []
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        rcpts.append(cmd.split(":", 1)[1].strip())
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 end with <CRLF>.<CRLF>")
                        data = []
                        while True:
                            ln = self.rfile.readline(65536)
                            if not ln or ln == b".\r\n":
                                break
                            if ln.startswith(b".."):
                                ln = ln[1:]
                            data.append(ln)
                        raw = b"".join(data)
                        msg = email.message_from_bytes(raw, policy=email.policy.default)
                        with outer.lock:
                            outer.messages.append((mail_from, list(rcpts), msg, raw))
                        self.reply("250 OK queued")
                    elif verb == "AUTH" and auth:
                        with outer.lock:
                            outer.auths.append(cmd)
                        self.reply("235 2.7.0 Authentication successful")
                    elif verb == "RSET":
                        mail_from, rcpts = None, []
                        self.reply("250 OK")
                    elif verb == "NOOP":
                        self.reply("250 OK")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 not implemented")

        class S(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.srv = S(("127.0.0.1", self.port), H)
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}"

    def subjects(self):
        with self.lock:
            return [str(m["Subject"]) for _, _, m, _ in self.messages]

    def matching(self, *words):
        return [s for s in self.subjects() if all(w in s for w in words)]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


class StubAdmin:
    """A stage's admin port as seen by the scraper."""

    def __init__(self, metrics="", ready=200):
        self.port = free_port()
        self.metrics = metrics
        self.ready = ready
        self.lock = threading.Lock()
        self.scrapes = 0
        outer = self

        class H(_Quiet):
            def do_GET(self):
                with outer.lock:
                    if self.path == "/metrics":
                        outer.scrapes += 1
                        code, body = 200, outer.metrics
                    elif self.path == "/readyz":
                        code = outer.ready
                        body = "ready\n" if code == 200 else "not ready: database unreachable\n"
                    else:
                        code, body = 404, "not found\n"
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()
        self.running = True

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def set(self, metrics=None, ready=None):
        with self.lock:
            if metrics is not None:
                self.metrics = metrics
            if ready is not None:
                self.ready = ready

    def wait_scrapes(self, n, timeout=10):
        start = self.scrapes
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.scrapes >= start + n:
                return
            time.sleep(0.05)
        raise AssertionError(f"stub admin on {self.port} not scraped {n} more times")

    def close(self):
        if self.running:
            self.srv.shutdown()
            self.srv.server_close()
            self.running = False


def fetcher_metrics(org, ok=0, errors=0, r429=0, quota=5000, owned=1):
    """Metric families of a fetcher with chosen counter values; `owned` is
    its tds_fetcher_org_owned for the organization (None: not exported)."""
    owned_text = ("" if owned is None else
                  "# TYPE tds_fetcher_org_owned gauge\n"
                  f'tds_fetcher_org_owned{{org="{org}"}} {owned}\n')
    return owned_text + (
        "# HELP tds_fetcher_api_calls_total Zoho API calls by organization, endpoint and status\n"
        "# TYPE tds_fetcher_api_calls_total counter\n"
        f'tds_fetcher_api_calls_total{{org="{org}",endpoint="/items",status="200"}} {ok}\n'
        f'tds_fetcher_api_calls_total{{org="{org}",endpoint="/items",status="500"}} {errors}\n'
        f'tds_fetcher_api_calls_total{{org="{org}",endpoint="/items",status="429"}} {r429}\n'
        "# TYPE tds_fetcher_429_total counter\n"
        f'tds_fetcher_429_total{{org="{org}",code="44"}} {r429}\n'
        "# TYPE tds_fetcher_quota_remaining gauge\n"
        f'tds_fetcher_quota_remaining{{org="{org}"}} {quota}\n'
    )


def ingress_metrics(sig=0, unacked=0, journal=0, max_bytes=2 ** 30, damaged=0):
    """An ingress's metrics; `journal` bytes held of a bound of max_bytes,
    `damaged` bytes its journal skipped at start."""
    return (
        "# TYPE tds_ingress_signature_failures_total counter\n"
        f'tds_ingress_signature_failures_total{{reason="mismatch"}} {sig}\n'
        'tds_ingress_signature_failures_total{reason="missing"} 0\n'
        "# TYPE tds_ingress_unacked gauge\n"
        f"tds_ingress_unacked {unacked}\n"
        "# TYPE tds_ingress_journal_bytes gauge\n"
        f"tds_ingress_journal_bytes {journal}\n"
        "# TYPE tds_ingress_journal_held_ratio gauge\n"
        f"tds_ingress_journal_held_ratio {journal / max_bytes}\n"
        "# TYPE tds_ingress_journal_damaged_bytes_at_start gauge\n"
        f"tds_ingress_journal_damaged_bytes_at_start {damaged}\n"
    )


def alerts_env(db, hook=None, smtp=None, scrape="", interval=1, extra=None):
    """Writer environment for alert tests: every rule fires without delay
    unless the test says otherwise."""
    env = {
        "TDS_DATABASE_URL": db.url,
        "TDS_WRITER_BIND": f"tcp://127.0.0.1:{free_port()}",
        "TDS_ACK_BIND": f"tcp://127.0.0.1:{free_port()}",
        "TDS_ALERT_INTERVAL_S": str(interval),
        "TDS_ALERT_SCRAPE": scrape,
        "TDS_ALERT_RETRY_MIN_MS": "100",
        "TDS_ALERT_SCRAPE_TIMEOUT_MS": "500",
    }
    for rule in ("sync_failed", "sync_stuck", "entity_stale", "token_failed", "rejects_spike",
                 "api_error_rate", "rate_limit_storm", "quota_low", "signature_failures",
                 "ingress_unacked", "journal_bytes", "stage_not_ready"):
        env[f"TDS_ALERT_{rule.upper()}_FOR_S"] = "0"
    if hook:
        env["TDS_ALERT_WEBHOOK_URL"] = hook.url
    if smtp:
        env.update({"TDS_ALERT_SMTP_URL": smtp.url, "TDS_ALERT_SMTP_FROM": "tds@example.com",
                    "TDS_ALERT_SMTP_TO": "ops@example.com,oncall@example.com"})
    env.update(extra or {})
    return env


def alerts(db, rule=None, state=None):
    sql = ("SELECT id, rule, severity, org_id, entity, state, summary, notified_at IS NOT NULL, "
           "acknowledged_by, details FROM tds.alerts WHERE true")
    args = []
    if rule:
        sql += " AND rule = %s"
        args.append(rule)
    if state:
        sql += " AND state = %s"
        args.append(state)
    return db.query(sql + " ORDER BY id", *args)
