"""Helpers for test_ingress.py: an organizations file, Zoho-style signing, a
harness that starts tds-ingress with Python stand-ins for the processor (PULL),
the fetcher (PULL) and the writer's ack socket (PUB), and raw HTTP helpers.
"""
import collections
import hashlib
import hmac
import http.client
import json
import os
import socket
import time
import urllib.parse

import msgpack
import zmq

from conftest import free_port, spawn_binding, wait_until

SECRET_A = "rotatednewsecret01"   # org 60001, current
SECRET_A_OLD = "previoussecret001"  # org 60001, still valid during rotation
SECRET_RETIRED = "retiredsecret0001"  # no longer configured anywhere

ORGS = {
    "organizations": [
        {"org_id": "60001", "name": "Signed", "product": "inventory", "data_center": "com",
         "client_id": "x", "client_secret": "y", "refresh_token": "z",
         "webhook_secrets": [SECRET_A, SECRET_A_OLD], "timezone_offset": "+05:30"},
        {"org_id": "60002", "name": "Unsigned on purpose", "product": "books",
         "data_center": "com", "client_id": "x", "client_secret": "y", "refresh_token": "z",
         "webhooks_unsigned": True},
        {"org_id": "60003", "name": "No secret", "product": "inventory", "data_center": "com",
         "client_id": "x", "client_secret": "y", "refresh_token": "z"},
    ]
}


def sign(secret, body, params=None, t_ms=None):
    """hex HMAC-SHA256 over sorted (name+value) query params then the raw body."""
    if isinstance(body, str):
        body = body.encode()
    s = b"".join(k.encode() + v.encode() for k, v in sorted((params or {}).items())) + body
    if t_ms is not None:
        s = f"{t_ms}.".encode() + s
    d = hmac.new(secret.encode(), s, hashlib.sha256).hexdigest()
    return f"t={t_ms},v={d}" if t_ms is not None else d


def item_body(item_id, mtime="2026-01-05T10:00:00+0300", name="Widget", extra=None):
    rec = {"item_id": item_id, "name": name, "sku": f"SKU-{item_id}", "rate": 12.5,
           "status": "active", "last_modified_time": mtime}
    if extra:
        rec.update(extra)
    return json.dumps({"item": rec}, ensure_ascii=False)


class Reply:
    def __init__(self, status, body):
        self.status = status
        self.body = body

    def __repr__(self):
        return f"Reply({self.status}, {self.body[:200]!r})"


class Ingress:
    """tds-ingress plus PULL sockets for events/fetches and a PUB for acks."""

    def __init__(self, procs, tmp, env=None, label="ingress", instance="it1", orgs=None,
                 journal=None, hosts=None):
        """hosts: the name the ingress connects to for "processor", "fetcher" or
        "ack" instead of 127.0.0.1 (the sockets here still bind 127.0.0.1)."""
        hosts = hosts or {}
        self.ctx = zmq.Context()
        self.proc_port, self.fetch_port, self.ack_port = free_port(), free_port(), free_port()
        self.http_port = free_port()
        self.events = self.ctx.socket(zmq.PULL)
        self.events.bind(f"tcp://127.0.0.1:{self.proc_port}")
        self.fetches = self.ctx.socket(zmq.PULL)
        self.fetches.bind(f"tcp://127.0.0.1:{self.fetch_port}")
        # XPUB: a PUB, which also shows the subscriptions (see ack); verboser,
        # so that a second subscriber to a topic (replay beside the ingress)
        # shows too, and each one's leaving
        self.acks = self.ctx.socket(zmq.XPUB)
        self.acks.setsockopt(zmq.XPUB_VERBOSER, 1)
        self.acks.bind(f"tcp://127.0.0.1:{self.ack_port}")
        self.ack_subs = collections.Counter()
        self.cfg = os.path.join(tmp, f"{label}-orgs.json")
        with open(self.cfg, "w") as f:
            json.dump(orgs or ORGS, f)
        self.journal = journal or os.path.join(tmp, f"{label}-journal")
        self.origin = f"ingress.{instance}"
        self.env = {
            "TDS_CONFIG": self.cfg,
            "TDS_INGRESS_JOURNAL_DIR": self.journal,
            "TDS_INGRESS_LISTEN": f"127.0.0.1:{self.http_port}",
            "TDS_PROCESSOR_CONNECT":
                f"tcp://{hosts.get('processor', '127.0.0.1')}:{self.proc_port}",
            "TDS_FETCHER_CONNECT": f"tcp://{hosts.get('fetcher', '127.0.0.1')}:{self.fetch_port}",
            "TDS_ACK_CONNECT": f"tcp://{hosts.get('ack', '127.0.0.1')}:{self.ack_port}",
            "TDS_INSTANCE": instance,
        }
        self.env.update(env or {})
        self.procs = procs

        def repick():   # a new HTTP port, unless the test gave its own
            self.http_port = free_port()
            self.env["TDS_INGRESS_LISTEN"] = f"127.0.0.1:{self.http_port}"
        ours = "TDS_INGRESS_LISTEN" not in (env or {})
        self.proc = spawn_binding(procs, "tds-ingress", label, lambda: self.env,
                                  repick if ours else None)

    # ---- HTTP

    def post(self, org, body, secret=None, params=None, content_type="application/json",
             headers=None, sig=None, timeout=10.0):
        if isinstance(body, str):
            body = body.encode()
        h = {"Content-Type": content_type} if content_type else {}
        if sig is None and secret is not None:
            sig = sign(secret, body, params)
        if sig is not None:
            h["X-Zoho-Webhook-Signature"] = sig
        h.update(headers or {})
        path = f"/webhooks/zoho/{org}"
        if params:
            path += "?" + urllib.parse.urlencode(params)
        return self.request("POST", path, body, h, timeout)

    def request(self, method, path, body=None, headers=None, timeout=10.0):
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return Reply(r.status, r.read())
        finally:
            c.close()

    def raw_socket(self):
        return socket.create_connection(("127.0.0.1", self.http_port), timeout=10)

    # ---- downstream

    def recv(self, sock, n, timeout=10.0):
        """Up to n decoded messages from sock within timeout."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            if sock.poll(50):
                out.append(msgpack.unpackb(sock.recv(), raw=False))
        return out

    def drain(self, sock, quiet_s=0.3):
        out = []
        deadline = time.monotonic() + 30
        while sock.poll(int(quiet_s * 1000)) and time.monotonic() < deadline:
            out.append(msgpack.unpackb(sock.recv(), raw=False))
        return out

    def subscribed(self, origin, timeout=5.0, subscribers=1):
        """Whether `subscribers` subscriptions that take origin's acks have
        arrived (within timeout). A PUB drops what it sends before it has the
        subscription, and the ingress subscribes as it starts: an ack sent
        right after could be lost, and its entry stayed unacked (ZeroMQ's
        slow joiner). So could one sent to a replay just started."""
        deadline = time.monotonic() + timeout
        while True:
            while self.acks.poll(0):
                m = self.acks.recv()
                self.ack_subs[m[1:]] += 1 if m[:1] == b"\x01" else -1
            if sum(c for t, c in self.ack_subs.items()
                   if origin.encode().startswith(t)) >= subscribers:
                return True
            if time.monotonic() >= deadline:
                return False
            self.acks.poll(50)

    def ack(self, ids, origin=None, subscribers=1):
        origin = origin or self.origin
        # sent all the same after the wait: a test may ack no one
        self.subscribed(origin, subscribers=subscribers)
        self.acks.send_multipart([origin.encode(), msgpack.packb(
            {"v": 1, "t": "ack", "id": f"ack-{time.monotonic_ns()}", "origin": origin,
             "ids": list(ids), "rows_written": len(ids), "rows_rejected": 0})])

    def metric(self, name, labels=None):
        return self.proc.metric(name, labels) or 0.0

    def wait_metric(self, name, want, labels=None, timeout=10.0):
        return wait_until(lambda: self.metric(name, labels) == want, timeout,
                          f"{name}{labels or ''} == {want} (now {self.metric(name, labels)})")

    def close(self):
        for s in (self.events, self.fetches, self.acks):
            s.close(0)
        self.ctx.term()
