"""The `sim` fixture: a running tds-zohosim and a small client for it.

`sim` is a factory (function scope): `s = sim(orgs=[...], extra_args=[...])`
starts the simulator on a free port (through `procs`, so teardown stops it
with SIGTERM, expects exit 0 and scans stderr for sanitizer reports), waits
for its "listening on" line and returns a `Sim`. Org specs are the
simulator's `--org` strings; the default is two small organizations
(60001: +0300, warehouses, inventory; 60002: +0530, locations, both).
"""

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

CLIENT_ID = "1000.SIMCLIENT"
CLIENT_SECRET = "simsecret"
REFRESH_TOKEN = "1000.simrefresh"

DEFAULT_ORGS = [
    "id=60001,tz=+0300,stock=warehouses,product=inventory,items=120,groups=10,contacts=40,"
    "invoices=50,salesorders=50,warehouses=3",
    "id=60002,tz=+0530,stock=locations,product=both,items=80,groups=6,contacts=30,"
    "invoices=40,salesorders=40,warehouses=2",
]


class Reply:
    """status, headers (lower-case keys), raw body bytes and .json()."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"Reply({self.status}, {self.body[:300]!r})"


class Sim:
    def __init__(self, proc, port):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._tokens = {}

    # ---- raw HTTP

    def request(self, method, path, params=None, body=None, headers=None, timeout=10.0):
        """One HTTP request; never raises on HTTP status (returns a Reply)."""
        q = ("?" + urllib.parse.urlencode(params)) if params else ""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers = dict(headers or {}, **{"Content-Type": "application/json"})
            elif isinstance(body, str):
                body = body.encode()
            conn.request(method, path + q, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return Reply(r.status, r.getheaders(), data)
        finally:
            conn.close()

    # ---- OAuth

    def token_request(self, timeout=10.0, **form):
        """POST /oauth/v2/token with form fields; returns the Reply."""
        return self.request("POST", "/oauth/v2/token", body=urllib.parse.urlencode(form),
                            headers={"Content-Type": "application/x-www-form-urlencoded"},
                            timeout=timeout)

    def refresh(self, refresh_token=REFRESH_TOKEN, client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET):
        return self.token_request(grant_type="refresh_token", client_id=client_id,
                                  client_secret=client_secret, refresh_token=refresh_token)

    def token(self, org=None, refresh_token=REFRESH_TOKEN, fresh=False):
        """An access token from the refresh grant, cached per refresh token
        (the simulator limits refreshes like Zoho does)."""
        if fresh or refresh_token not in self._tokens:
            r = self.refresh(refresh_token)
            j = r.json()
            assert r.status == 200 and "access_token" in j, r
            self._tokens[refresh_token] = j["access_token"]
        return self._tokens[refresh_token]

    # ---- API

    def get(self, path, org="60001", token=None, params=None, product="inventory",
            headers=None, timeout=10.0):
        """GET {product base}{path} with organization_id and the token
        (token=None fetches one; token="" sends none)."""
        base = "/inventory/v1" if product == "inventory" else "/books/v3"
        p = dict(params or {})
        if org is not None:
            p["organization_id"] = org
        if token is None:
            token = self.token()
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Zoho-oauthtoken {token}"
        return self.request("GET", base + path, params=p, headers=h, timeout=timeout)

    def walk(self, path, org="60001", per_page=200, product="inventory", params=None,
             key=None):
        """Every record of a paged list, following has_more_page."""
        key = key or path.strip("/").split("/")[-1]
        out, page = [], 1
        while True:
            q = dict(params or {}, page=page, per_page=per_page)
            r = self.get(path, org=org, params=q, product=product)
            assert r.status == 200, r
            j = r.json()
            out.extend(j[key])
            if not j["page_context"]["has_more_page"]:
                return out
            page += 1

    # ---- control API

    def ctl(self, method, path, body=None, params=None):
        r = self.request(method, "/_sim/" + path, params=params, body=body)
        assert r.status == 200, r
        return r.json()

    def truth(self, org, entity, **params):
        return self.ctl("GET", f"truth/{org}/{entity}", params=params or None)

    def mutate(self, org, entity, update=0, create=0, delete=0, moves_stock=None):
        body = {"org": org, "entity": entity, "update": update, "create": create,
                "delete": delete}
        if moves_stock is not None:
            body["moves_stock"] = moves_stock
        return self.ctl("POST", "mutate", body)

    def invalid(self, org, entity, n=1, kind="mixed"):
        return self.ctl("POST", "invalid", {"org": org, "entity": entity, "n": n, "kind": kind})

    def stats(self):
        return self.ctl("GET", "stats")

    def reset_stats(self):
        return self.ctl("POST", "reset-stats", {})

    def faults(self, **kw):
        return self.ctl("POST", "faults", kw)

    def clock(self, offset):
        """Zoho's clock `offset` seconds ahead of this host's from now on."""
        return self.ctl("POST", "clock", {"offset": offset})

    def webhooks(self, org, url, secret="", retries=3, retry_delay_ms=50, timeout_ms=2000,
                 query=None, encoding=None):
        body = {"org": org, "url": url, "secret": secret, "retries": retries,
                "retry_delay_ms": retry_delay_ms, "timeout_ms": timeout_ms}
        if encoding:
            body["encoding"] = encoding
        if query:
            body["query"] = query
        return self.ctl("POST", "webhooks", body)

    def stream(self, org, rate_per_s, seconds, entities=None, ops=None):
        body = {"org": org, "rate_per_s": rate_per_s, "seconds": seconds}
        if entities:
            body["entities"] = entities
        if ops:
            body["ops"] = ops
        return self.ctl("POST", "stream", body)

    def limits(self, org=None, **kw):
        body = dict(kw)
        if org:
            body["org"] = org
        return self.ctl("POST", "limits", body)

    def expire_tokens(self):
        self._tokens.clear()
        return self.ctl("POST", "expire-tokens", {})


@pytest.fixture
def sim(procs, free_port):
    """Factory: sim(orgs=[spec, ...], extra_args=[...], seed=1) -> Sim."""

    def start(orgs=None, extra_args=(), seed=1, timeout=60.0):
        port = free_port()
        args = ["--listen", f"127.0.0.1:{port}", "--seed", str(seed)]
        for spec in (DEFAULT_ORGS if orgs is None else orgs):
            args += ["--org", spec]
        args += list(extra_args)
        p = procs.spawn("tds-zohosim", args=args, admin=False, ready=None, timeout=timeout)
        deadline = time.monotonic() + timeout
        while "listening on" not in p.stdout_text():
            if not p.alive():
                raise AssertionError("tds-zohosim exited early:\n" + p.stderr_text())
            if time.monotonic() > deadline:
                raise AssertionError("tds-zohosim did not start listening")
            time.sleep(0.02)
        return Sim(p, port)

    return start
