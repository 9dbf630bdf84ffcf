"""tds-processor between a test sender and (a) a test PULL socket standing in
for the writer, (b) the real tds-writer with PostgreSQL.

The sender encodes `page` and `event` messages the way common/msg.c does; the
rows the processor pushes are decoded and checked value by value; with the
writer in the loop the rows are checked in the zoho tables and tds.rejected.
"""
import contextlib
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import msgpack
import pytest
import zmq

from conftest import free_port, http_get, wait_until

DETAIL, LIST, DELETE, CHILD = 1, 2, 3, 4
ORG = "60001"

ITEM = {
    "item_id": "4815000000044208", "name": "قميص قطني - أزرق", "sku": "TEE-BL-M",
    "status": "active", "unit": "pcs", "rate": 19.99, "purchase_rate": "7.50",
    "reorder_level": "", "tax_percentage": 15, "is_taxable": True,
    "stock_on_hand": 12, "available_stock": 12, "actual_available_stock": 12,
    "custom_fields": [{"label": "Season", "value": "SS24", "api_name": "cf_season"}],
    "locations": [
        {"location_id": "4815000000000331", "location_name": "Main WH", "is_primary": True,
         "location_stock_on_hand": 10, "location_available_stock": "10",
         "location_actual_available_stock": 9},
        {"location_id": "4815000000000335", "location_name": "المستودع الثاني",
         "is_primary": False, "location_stock_on_hand": "2", "location_available_stock": " "}],
    "created_time": "2024-01-15T10:20:30+0530",
    "last_modified_time": "2024-02-01T08:00:00+0530",
}


def page_msg(records, mid, origin="test.o1", entity="items", detail=True, run="run-1",
             page=1, final=False, cursor=None, deleted=()):
    m = {"v": 1, "t": "page", "id": mid, "org": ORG, "entity": entity, "run": run,
         "mode": "full", "origin": origin, "page": page, "fetched_ms": 1700000000000,
         "detail": detail, "final": final, "deleted_ids": list(deleted),
         "records": [r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()
                     for r in records]}
    if cursor is not None:
        m["cursor"] = cursor
    return msgpack.packb(m, use_bin_type=True)


def event_msg(body, event_id, entity="items", op="upsert", zoho_id=None, origin="test.o1"):
    m = {"v": 1, "t": "event", "id": "ev-" + event_id, "org": ORG, "entity": entity,
         "op": op, "origin": origin, "event_id": event_id, "received_ms": 1700000000001,
         "body": body if isinstance(body, bytes) else json.dumps(body).encode()}
    if zoho_id is not None:
        m["zoho_id"] = zoho_id
    return msgpack.packb(m, use_bin_type=True)


def as_dicts(rowset):
    return [dict(zip(rowset["cols"], r)) for r in rowset["rows"]]


class Harness:
    """A processor with a PUSH socket into it and a PULL socket for its output."""

    def __init__(self, procs, out_port=None, env=None, ready="readyz"):
        self.ctx = zmq.Context.instance()
        self.in_port = free_port()
        self.out_port = out_port or free_port()
        e = {"TDS_PROCESSOR_BIND": f"tcp://127.0.0.1:{self.in_port}",
             "TDS_WRITER_CONNECT": f"tcp://127.0.0.1:{self.out_port}",
             "TDS_INSTANCE": "t1"}
        e.update(env or {})
        self.proc = procs.spawn("tds-processor", env=e, ready=ready)
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(f"tcp://127.0.0.1:{self.in_port}")
        self.pull = None

    def listen(self):
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(f"tcp://127.0.0.1:{self.out_port}")

    def recv(self, timeout_ms=10000):
        assert self.pull.poll(timeout_ms), "no rows message from the processor"
        return msgpack.unpackb(self.pull.recv(), raw=False)

    def close(self):
        self.push.close(0)
        if self.pull is not None:
            self.pull.close(0)


@pytest.fixture
def harness(procs):
    h = Harness(procs)
    h.listen()
    yield h
    h.close()


def test_detail_page_rows(harness):
    bad = dict(ITEM, item_id="4815000000044209", rate="12,50")
    other = dict(ITEM, item_id="4815000000044210", locations=[])
    harness.push.send(page_msg([ITEM, bad, other], "pg-1", deleted=["4815000000000001"]))
    m = harness.recv()
    assert m["t"] == "rows" and m["src"] == "pg-1" and m["origin"] == "test.o1"
    assert m["org"] == ORG and m["run"] == "run-1" and m["mode"] == "full"
    assert m["page"] == 1 and m["records_in"] == 3 and m["final"] is False
    assert m["received_ms"] == 1700000000000
    sets = {(s["table"], s["kind"]): s for s in m["sets"]}
    items = as_dicts(sets[("items", DETAIL)])
    assert [r["item_id"] for r in items] == ["4815000000044208", "4815000000044210"]
    r = items[0]
    assert r["org_id"] == ORG and r["is_detail"] == "true"
    assert r["name"] == "قميص قطني - أزرق" and r["rate"] == "19.99"
    assert r["purchase_rate"] == "7.50" and r["reorder_level"] is None
    assert r["modified_time"] == "2024-02-01 08:00:00+05:30"
    assert json.loads(r["custom_fields"]) == {"Season": "SS24"}
    assert json.loads(r["raw"])["item_id"] == "4815000000044208"
    assert len(r["content_hash"]) == 32
    stock = as_dicts(sets[("item_stock", CHILD)])
    assert [(s["item_id"], s["warehouse_id"], s["site_kind"]) for s in stock] == [
        ("4815000000044208", "4815000000000331", "location"),
        ("4815000000044208", "4815000000000335", "location")]
    assert stock[0]["stock_on_hand"] == "10" and stock[0]["actual_available_stock"] == "9"
    assert stock[1]["warehouse_name"] == "المستودع الثاني" and stock[1]["available_stock"] is None
    dels = as_dicts(sets[("items", DELETE)])
    assert dels == [{"org_id": ORG, "item_id": "4815000000000001"}]
    assert len(m["rejects"]) == 1
    rj = m["rejects"][0]
    assert rj["zoho_id"] == "4815000000044209" and rj["entity"] == "items"
    assert rj["reason"] == "invalid number in field 'rate': '12,50'"
    assert json.loads(rj["raw"])["rate"] == "12,50"
    p = harness.proc
    # two records and one delete became rows
    assert p.metric("tds_processor_records_total", {"entity": "items"}) == 3
    assert p.metric("tds_processor_rejects_total",
                    {"entity": "items", "reason": "invalid_number"}) == 1
    assert p.metric("tds_processor_messages_total", {"type": "page"}) == 1
    assert p.metric("tds_processor_transform_seconds_count") == 1


def test_event_list_and_final_page(harness):
    harness.push.send(event_msg({"item": {"item_id": "77", "name": "Mug", "rate": "4.5",
                                          "last_modified_time": "2024-01-01T00:00:00Z"}}, "e1"))
    m = harness.recv()
    assert m["src"] == "ev-e1" and m["mode"] == "webhook" and m.get("run") is None
    assert m["received_ms"] == 1700000000001
    (s,) = m["sets"]
    assert s["table"] == "items" and s["kind"] == LIST  # no stock sites: a list-shaped body
    assert s["cols"] == ["org_id", "item_id", "modified_time", "raw", "content_hash",
                         "is_detail", "name", "rate"]
    harness.push.send(event_msg(b"", "e2", op="delete", zoho_id="77"))
    m = harness.recv()
    assert m["sets"][0]["kind"] == DELETE and m["sets"][0]["rows"] == [[ORG, "77"]]
    harness.push.send(page_msg([], "pg-final", final=True, cursor="2024-02-01T08:00:00+0530",
                               page=2))
    m = harness.recv()
    assert m["final"] is True and m["cursor"] == "2024-02-01T08:00:00+0530"
    assert m["sets"] == [] and m["rejects"] == [] and m["page"] == 2


class _HookSink:
    """Takes the simulator's webhook deliveries: (query, body bytes) each."""

    def __init__(self):
        self.got = []
        self.lock = threading.Lock()
        sink = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                q = dict(parse_qsl(urlsplit(self.path).query))
                with sink.lock:
                    sink.got.append((q, raw))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_simulator_webhooks_are_details(harness, sim):
    """The simulator's webhooks carry the full detail record, as Zoho's
    default payload does: each one is a DETAIL with its child rows, for every
    entity, in an organization with warehouses[] and one with locations[].
    A body with less (a custom payload) is a LIST (tests/unit/processor)."""
    entity_of = {"item": "items", "item_group": "item_groups", "contact": "contacts",
                 "invoice": "invoices", "salesorder": "sales_orders"}
    children = {"items": ["item_stock"], "contacts": ["contact_addresses", "contact_persons"],
                "invoices": ["invoice_lines"], "sales_orders": ["sales_order_lines"],
                "item_groups": []}
    s = sim()
    sink = _HookSink()
    try:
        want = 0
        for org in ("60001", "60002"):
            s.webhooks(org, sink.url)
            for entity in ("items", "item_groups", "contacts", "invoices", "sales_orders"):
                m = s.mutate(org, entity, update=2, create=1)
                want += len(m["updated"]) + len(m["created"])
            wait_until(lambda: len(sink.got) >= want, 20, f"{want} webhooks")
            s.webhooks(org, "")
        seen = set()
        for n, (q, raw) in enumerate(sink.got):
            if q.get("event") == "deleted":
                continue
            (key,) = json.loads(raw)
            entity = entity_of[key]
            harness.push.send(event_msg(raw, f"sim-{n}", entity=entity))
            m = harness.recv()
            assert m["rejects"] == [], m["rejects"]
            kinds = {(st["table"], st["kind"]) for st in m["sets"]}
            assert (entity, DETAIL) in kinds and (entity, LIST) not in kinds, \
                (entity, kinds, raw[:300])
            for child in children[entity]:
                assert (child, CHILD) in kinds, (entity, child, kinds)
            seen.add(entity)
        assert seen == set(entity_of.values()), seen
    finally:
        sink.close()


def test_dead_letters(harness):
    harness.push.send(b"\x93not a map")
    m = harness.recv()
    assert m["mode"] == "deadletter" and m["org"] == "" and m["origin"] == "processor.t1"
    (rj,) = m["rejects"]
    assert rj["reason"].startswith("dead letter: undecodable message")
    assert rj["raw"].startswith(b"hex:93")
    newer = msgpack.packb({"v": 99, "t": "page", "id": "x", "org": ORG, "entity": "items",
                           "origin": "o"}, use_bin_type=True)
    harness.push.send(newer)
    m = harness.recv()
    assert m["mode"] == "deadletter"
    assert harness.proc.metric("tds_processor_dead_letters_total") == 2
    # still working afterwards
    harness.push.send(page_msg([ITEM], "pg-after"))
    assert harness.recv()["src"] == "pg-after"


def test_multi_frame_messages_are_one_dead_letter(harness):
    """A message of several frames is one dead letter, whichever of its frames
    is over the size limit: none of its other frames passes for a message."""
    big = b"\x00" * (64 * 1024 * 1024 + 1)  # over the frame limit, under the wire limit
    harness.push.send_multipart([big, page_msg([ITEM], "pg-tail-1")])
    harness.push.send_multipart([page_msg([ITEM], "pg-head-2"), big, page_msg([ITEM], "pg-tail-2")])
    harness.push.send(page_msg([ITEM], "pg-next"))
    got = [harness.recv(20000) for _ in range(3)]
    what = [m["rejects"][0]["reason"].split(" (")[0] if m["mode"] == "deadletter" else m["src"]
            for m in got]
    assert what == ["dead letter: frame over the size limit",
                    "dead letter: multi-frame message", "pg-next"]
    assert not harness.pull.poll(500), "a frame of a dead-lettered message came out"
    assert harness.proc.metric("tds_processor_dead_letters_total") == 2


def test_back_pressure_then_drain(procs):
    """No writer: the processor parks one rows message and stops reading; the
    input backs up in ZeroMQ, not in the processor. A writer that appears later
    gets everything, in order."""
    h = Harness(procs, env={"TDS_PROCESSOR_HWM": "5"})
    try:
        n = 40
        h.push.setsockopt(zmq.SNDTIMEO, 100)
        sent = 0
        for i in range(n):
            try:
                h.push.send(page_msg([dict(ITEM, item_id=str(1000 + i))], f"pg-{i}"))
                sent += 1
            except zmq.Again:
                break

        def blocked():
            st, body = http_get(h.proc.admin_url + "/status")
            return st == 200 and json.loads(body)["waiting_for_writer"]
        wait_until(blocked, 10, "processor to wait for the writer")
        handled = h.proc.metric("tds_processor_messages_total", {"type": "page"})
        assert handled is not None and handled < sent  # it stopped reading
        h.listen()
        got = [h.recv()["src"] for _ in range(sent)]
        assert got == [f"pg-{i}" for i in range(sent)]
    finally:
        h.close()


def test_sigterm_while_waiting_for_writer(procs):
    """SIGTERM with a rows message parked and no writer: exit 0 within 10 s."""
    h = Harness(procs)
    try:
        h.push.send(page_msg([ITEM], "pg-1"))

        def blocked():
            st, body = http_get(h.proc.admin_url + "/status")
            return st == 200 and json.loads(body)["waiting_for_writer"]
        wait_until(blocked, 10, "processor to wait for the writer")
        t0 = time.monotonic()
        h.proc.stop()  # asserts exit 0
        assert time.monotonic() - t0 < 10
    finally:
        h.close()


def test_sigterm_while_a_writer_does_not_read(procs):
    """SIGTERM with the queue to a connected writer full and one rows message
    parked: the wait for the writer and the socket's linger together stay
    under the 10 s that a stage has to exit."""
    h = Harness(procs, env={"TDS_PROCESSOR_HWM": "2"})
    sink = h.ctx.socket(zmq.PULL)
    sink.setsockopt(zmq.LINGER, 0)
    sink.setsockopt(zmq.RCVHWM, 1)
    sink.setsockopt(zmq.RCVBUF, 4096)
    sink.bind(f"tcp://127.0.0.1:{h.out_port}")
    try:
        h.push.setsockopt(zmq.SNDTIMEO, 100)
        big = [dict(ITEM, item_id=str(5000 + i), description="x" * 2000) for i in range(200)]

        def blocked():
            # parked, with more than its HWM handed on: the writer took the
            # first ones, so the queue to it is full, not still connecting
            st, body = http_get(h.proc.admin_url + "/status")
            handled = h.proc.metric("tds_processor_messages_total", {"type": "page"}) or 0
            return st == 200 and json.loads(body)["waiting_for_writer"] and handled > 4
        for i in range(400):  # ~0.5 MB of rows each: the socket buffers fill
            if blocked():
                break
            with contextlib.suppress(zmq.Again):
                h.push.send(page_msg(big, f"pg-{i}"))
            time.sleep(0.02)
        wait_until(blocked, 10, "processor to wait for the writer")
        t0 = time.monotonic()
        h.proc.stop()  # asserts exit 0
        took = time.monotonic() - t0
        assert took < 10, f"exited after {took:.1f} s"
    finally:
        sink.close(0)
        h.close()


def test_sigterm_exits_zero(harness):
    harness.push.send(page_msg([ITEM], "pg-1"))
    harness.recv()
    t0 = time.monotonic()
    harness.proc.stop()  # asserts exit 0
    assert time.monotonic() - t0 < 10


def test_writer_name_resolved_after_start(procs, resolver):
    """TDS_WRITER_CONNECT names a host with no address yet (a headless Service
    before any writer is ready): the processor is alive but not ready, keeps
    what it got, and delivers once the name resolves; when the name moves to
    another address (a writer pod replaced), rows follow it."""
    ctx = zmq.Context.instance()
    port = free_port()
    env = dict(resolver.env, TDS_WRITER_CONNECT=f"tcp://writer.tds-test:{port}")
    h = Harness(procs, out_port=port, env=env, ready="healthz")
    pulls = []
    try:
        wait_until(lambda: http_get(h.proc.admin_url + "/readyz") ==
                   (503, "not ready: no writer to send rows to (TDS_WRITER_CONNECT resolves to "
                         "no address)\n"), 10, "/readyz to say there is no writer")
        for addr in ("127.0.0.1", "127.0.0.2"):
            pull = ctx.socket(zmq.PULL)
            pull.setsockopt(zmq.LINGER, 0)
            pull.bind(f"tcp://{addr}:{port}")
            pulls.append(pull)
        h.push.send(page_msg([ITEM], "pg-early"))
        assert not pulls[0].poll(1500) and not pulls[1].poll(0), "rows with no address to go to"

        resolver.set("writer.tds-test", "127.0.0.1")
        assert pulls[0].poll(10000), "no rows after the writer's name resolved"
        assert msgpack.unpackb(pulls[0].recv(), raw=False)["src"] == "pg-early"
        wait_until(lambda: http_get(h.proc.admin_url + "/readyz")[0] == 200, 10, "ready")

        resolver.set("writer.tds-test", "127.0.0.2")
        pulls[0].close(0)  # the old writer goes away

        def moved():
            h.push.send(page_msg([ITEM], f"pg-moved-{time.monotonic_ns()}"))
            return pulls[1].poll(500)
        wait_until(moved, 15, "rows to reach the writer's new address")
        assert msgpack.unpackb(pulls[1].recv(), raw=False)["src"].startswith("pg-moved-")
    finally:
        for p in pulls:
            p.close(0)
        h.close()


def test_bad_config(procs):
    r = procs.run("tds-processor", env={"TDS_PROCESSOR_HWM": "0"}, check=False)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == \
        "tds-processor: invalid TDS_PROCESSOR_HWM: '0' (expected 1..100000)"
    r = procs.run("tds-processor", args=["--print-config"], check=False)
    assert r.returncode == 0 and "TDS_PROCESSOR_BIND=tcp://127.0.0.1:5557" in r.stdout


# ---------------------------------------------------------------- with the writer

def _have_writer(bins):
    return bins.path("tds-writer") is not None


@contextlib.contextmanager
def into_writer(procs, db, bins):
    """A processor (Harness) pushing into the real tds-writer on db. Yields the
    harness and wait_acked(ids), which waits for the writer's acks of those
    input messages."""
    if not _have_writer(bins):
        pytest.skip("tds-writer is not built")
    ctx = zmq.Context.instance()
    w_port, ack_port = free_port(), free_port()
    procs.spawn("tds-writer", env={"TDS_DATABASE_URL": db.url,
                                   "TDS_WRITER_BIND": f"tcp://127.0.0.1:{w_port}",
                                   "TDS_ACK_BIND": f"tcp://127.0.0.1:{ack_port}",
                                   "TDS_INSTANCE": "w1"})
    h = Harness(procs, out_port=w_port)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt_string(zmq.SUBSCRIBE, "test.o1")
    sub.connect(f"tcp://127.0.0.1:{ack_port}")
    time.sleep(0.3)
    acked = set()

    def wait_acked(ids):
        def done():
            while sub.poll(50):
                frames = sub.recv_multipart()
                m = msgpack.unpackb(frames[1], raw=False)
                assert frames[0] == b"test.o1" and m["origin"] == "test.o1"
                acked.update(m["ids"])
            return set(ids) <= acked
        wait_until(done, 30, f"acks for {ids}")

    try:
        yield h, wait_acked
    finally:
        sub.close(0)
        h.close()


def test_processor_into_writer(procs, db, bins):
    with into_writer(procs, db, bins) as (h, wait_acked):
        bad = dict(ITEM, item_id="4815000000044209", rate="abc")
        contact = {"contact_id": "260815000000098001", "contact_name": "مؤسسة النور",
                   "contact_type": "Customer", "customer_sub_type": "business",
                   "payment_terms": 30, "credit_limit": "50000.00",
                   "outstanding_receivable_amount": 1369.66,
                   "billing_address": {"address": "King Fahd Rd", "city": "Riyadh", "zip": 94588},
                   "shipping_address": {"address": "", "city": "Jeddah"},
                   "contact_persons": [{"contact_person_id": "260815000000098003",
                                        "first_name": "Sara", "is_primary_contact": True}],
                   "last_modified_time": "2026-06-09T09:45:21-0400"}
        invoice = {"invoice_id": "982000000567114", "invoice_number": "INV-3", "status": "sent",
                   "date": "2024-02-29", "due_date": "", "customer_id": "260815000000098001",
                   "total": "162.74", "balance": 162.74, "exchange_rate": 1.0,
                   "line_items": [{"line_item_id": "982000000567021", "item_id": "4815000000044208",
                                   "quantity": 2, "rate": "77.50", "item_total": 155.0}],
                   "last_modified_time": "2024-03-01T11:30:00+0300"}
        h.push.send(page_msg([ITEM, bad], "pg-items"))
        h.push.send(page_msg([contact], "pg-contacts", entity="contacts", run="run-2"))
        h.push.send(page_msg([invoice], "pg-invoices", entity="invoices", run="run-3"))
        wait_acked(["pg-items", "pg-contacts", "pg-invoices"])

        rows = db.query("SELECT item_id, name, rate::text, purchase_rate::text, reorder_level, "
                        "is_detail, modified_time = '2024-02-01T02:30:00Z'::timestamptz, "
                        "custom_fields->>'Season' FROM zoho.items WHERE org_id = %s", ORG)
        assert rows == [("4815000000044208", "قميص قطني - أزرق", "19.99", "7.50", None, True,
                         True, "SS24")]
        stock = db.query("SELECT warehouse_id, warehouse_name, site_kind, is_primary, "
                         "stock_on_hand::text, available_stock::text FROM zoho.item_stock "
                         "WHERE org_id = %s ORDER BY warehouse_id", ORG)
        assert stock == [("4815000000000331", "Main WH", "location", True, "10", "10"),
                         ("4815000000000335", "المستودع الثاني", "location", False, "2", None)]
        rej = db.query("SELECT stage, org_id, entity, zoho_id, reason FROM tds.rejected")
        assert rej == [("processor", ORG, "items", "4815000000044209",
                        "invalid number in field 'rate': 'abc'")] or \
            [r[1:] for r in rej] == [(ORG, "items", "4815000000044209",
                                      "invalid number in field 'rate': 'abc'")]
        c = db.query("SELECT contact_type, customer_sub_type, payment_terms, credit_limit::text, "
                     "outstanding_receivable_amount::text FROM zoho.contacts")
        assert c == [("customer", "business", 30, "50000.00", "1369.66")]
        a = db.query("SELECT address_type, position, address, city, zip FROM "
                     "zoho.contact_addresses ORDER BY address_type")
        assert a == [("billing", 1, "King Fahd Rd", "Riyadh", "94588"),
                     ("shipping", 1, "", "Jeddah", None)]
        assert db.query("SELECT contact_person_id, first_name, is_primary_contact "
                        "FROM zoho.contact_persons") == [("260815000000098003", "Sara", True)]
        inv = db.query("SELECT invoice_number, date::text, due_date, total::text, balance::text, "
                       "exchange_rate::text FROM zoho.invoices")
        assert inv == [("INV-3", "2024-02-29", None, "162.74", "162.74", "1.0")]
        assert db.query("SELECT line_item_id, position, quantity::text, rate::text, "
                        "item_total::text FROM zoho.invoice_lines") == \
            [("982000000567021", 1, "2", "77.50", "155.0")]

        # the same page again changes nothing; a list record never wipes stock rows
        h.push.send(page_msg([ITEM], "pg-items-again"))
        lst = {k: ITEM[k] for k in ("item_id", "name", "sku", "rate", "last_modified_time")}
        h.push.send(page_msg([lst], "pg-items-list", detail=False))
        h.push.send(event_msg(b"", "del-1", op="delete", zoho_id="4815000000044208"))
        wait_acked(["pg-items-again", "pg-items-list", "ev-del-1"])
        assert db.query("SELECT count(*) FROM zoho.item_stock")[0][0] == 2
        assert db.query("SELECT is_detail, deleted_at IS NOT NULL FROM zoho.items") == \
            [(True, True)]

        # a frame that is not a message is kept in tds.rejected, not dropped
        h.push.send(b"\xc1 not msgpack")
        wait_until(lambda: db.query("SELECT count(*) FROM tds.rejected WHERE reason LIKE "
                                    "'dead letter: undecodable message%%'")[0][0] == 1,
                   20, "the dead letter in tds.rejected")

        # a page whose rows do not fit in one message (105,000 invoice lines; at most
        # 100,000 rows of a table) is acked, with its records in tds.rejected and its
        # delete applied, instead of being dropped and sent again for ever
        big = [{"invoice_id": f"98200000099{i}", "invoice_number": f"INV-B{i}",
                "last_modified_time": "2024-03-01T11:30:00+0300",
                "line_items": [{"line_item_id": f"{i + 1}{k:05d}"} for k in range(35000)]}
               for i in range(3)]
        h.push.send(page_msg(big, "pg-big", entity="invoices", run="run-4",
                             deleted=["982000000567114"]))
        wait_acked(["pg-big"])
        rej = db.query("SELECT zoho_id, left(reason, 48), length(raw) FROM tds.rejected "
                       "WHERE entity = 'invoices' ORDER BY zoho_id")
        assert rej == [(f"98200000099{i}", "page too large: the rows of its 3 records exceed",
                        65536) for i in range(3)], rej
        assert db.query("SELECT deleted_at IS NOT NULL FROM zoho.invoices "
                        "WHERE invoice_id = '982000000567114'") == [(True,)]
        assert db.query("SELECT count(*) FROM zoho.invoices WHERE invoice_id LIKE "
                        "'98200000099_'")[0][0] == 0
        assert db.query("SELECT count(*) FROM zoho.invoice_lines WHERE invoice_id LIKE "
                        "'98200000099_'")[0][0] == 0


def _staging_tables(db):
    """The writer session's staging tables (temporary, _tds_s<n>)."""
    return db.query("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = "
                    "c.relnamespace WHERE n.nspname LIKE 'pg\\_temp\\_%%' "
                    "AND c.relname LIKE '\\_tds\\_s%%'")[0][0]


def test_the_writer_stages_whole_records_before_the_first_batch(procs, db, bins):
    """A new writer session makes the staging tables and statements of every
    table's whole records (a detail's or a webhook's rows, and their child
    rows) before its first batch, from the column lists the processor sends:
    the first items, contacts and invoices through the processor make none
    of their own (writer/apply.c, prewarm())."""
    with into_writer(procs, db, bins) as (h, wait_acked):
        seen = []

        def settled():
            seen.append(_staging_tables(db))
            return len(seen) > 1 and seen[-1] == seen[-2] >= 7
        wait_until(settled, 20, "the writer's staging tables made", interval=0.2)
        before = seen[-1]
        contact = {"contact_id": "260815000000098101", "contact_name": "مؤسسة الفجر",
                   "contact_type": "customer", "status": "active",
                   "billing_address": {"address": "Olaya St", "city": "Riyadh"},
                   "shipping_address": {"address": "", "city": "Dammam"},
                   "contact_persons": [{"contact_person_id": "260815000000098103",
                                        "first_name": "Ali"}],
                   "last_modified_time": "2026-06-09T09:45:21-0400"}
        invoice = {"invoice_id": "982000000567214", "invoice_number": "INV-9", "status": "sent",
                   "customer_id": "260815000000098101", "total": "10.00",
                   "line_items": [{"line_item_id": "982000000567221",
                                   "item_id": "4815000000044208", "quantity": 1}],
                   "last_modified_time": "2024-03-01T11:30:00+0300"}
        h.push.send(page_msg([ITEM], "pw-items"))
        h.push.send(page_msg([contact], "pw-contacts", entity="contacts", run="run-2"))
        h.push.send(page_msg([invoice], "pw-invoices", entity="invoices", run="run-3"))
        wait_acked(["pw-items", "pw-contacts", "pw-invoices"])
        assert db.query("SELECT count(*) FROM zoho.item_stock")[0][0] == 2
        assert db.query("SELECT count(*) FROM zoho.contact_addresses")[0][0] == 2
        assert db.query("SELECT count(*) FROM zoho.invoice_lines")[0][0] == 1
        assert _staging_tables(db) == before, (before, _staging_tables(db))


def test_variant_without_time_yields_to_item_detail(procs, db, bins):
    """An item group's variant without its own last_modified_time is a LIST
    row with no time: the item's own detail, older than the group's edit,
    still replaces it (with its stock rows), and arriving first it is not
    overwritten by the variant."""
    variant = {"item_id": "4815000000044301", "name": "Tee - Red / S", "sku": "TEE-RD-S",
               "rate": 21, "status": "active", "attribute_option_name1": "Red"}
    early = {"item_id": "4815000000044302", "name": "Tee - Red / M", "sku": "TEE-RD-M",
             "rate": 21, "status": "active", "attribute_option_name1": "Red"}
    group = {"group_id": "4815000000044300", "group_name": "Tee", "attribute_name1": "Color",
             "last_modified_time": "2024-03-01T00:00:00+0000", "items": [variant, early]}

    def detail(rec, name):
        return dict(ITEM, **dict(rec, name=name), group_id=group["group_id"], group_name="Tee",
                    last_modified_time="2024-02-01T00:00:00+0000")

    with into_writer(procs, db, bins) as (h, wait_acked):
        h.push.send(page_msg([detail(early, "Tee - Red / M (item)")], "pg-early"))
        wait_acked(["pg-early"])
        h.push.send(page_msg([group], "pg-group", entity="item_groups", run="run-g"))
        wait_acked(["pg-group"])
        h.push.send(page_msg([detail(variant, "Tee - Red / S (item)")], "pg-item"))
        wait_acked(["pg-item"])
    rows = db.query("SELECT item_id, name, is_detail, modified_time = '2024-02-01Z'::timestamptz, "
                    "group_id FROM zoho.items ORDER BY item_id")
    assert rows == [("4815000000044301", "Tee - Red / S (item)", True, True, "4815000000044300"),
                    ("4815000000044302", "Tee - Red / M (item)", True, True, "4815000000044300")], \
        rows
    stock = db.query("SELECT item_id, count(*) FROM zoho.item_stock GROUP BY 1 ORDER BY 1")
    assert stock == [("4815000000044301", 2), ("4815000000044302", 2)], stock
    assert db.query("SELECT count(*) FROM tds.rejected")[0][0] == 0


def test_number_out_of_range_is_a_reject(procs, db, bins):
    """A number PostgreSQL's numeric cannot hold, in a field no column maps
    (it is in raw jsonb) or in a custom field (custom_fields jsonb), rejects
    its record in the processor, naming the field; the writer gets the rest
    of the page and rejects nothing."""
    raw = b'{"item_id":"4815000000044401","name":"Scale","package_weight":1e999999}'
    cf = (b'{"item_id":"4815000000044402","name":"Thin","custom_fields":'
          b'[{"label":"Thickness","value":0.' + b"0" * 16383 + b'1}]}')
    with into_writer(procs, db, bins) as (h, wait_acked):
        h.push.send(page_msg([ITEM, raw, cf], "pg-range"))
        wait_acked(["pg-range"])
        assert h.proc.metric("tds_processor_rejects_total",
                             {"entity": "items", "reason": "invalid_number"}) == 2
    assert db.query("SELECT item_id FROM zoho.items") == [(ITEM["item_id"],)]
    # refused while parsing, so before the id was read (as for invalid UTF-8)
    rej = db.query("SELECT stage, reason, substring(raw from '\"item_id\":\"([0-9]+)\"') "
                   "FROM tds.rejected ORDER BY 3")
    assert rej == [("processor", "number out of range in field 'package_weight'",
                    "4815000000044401"),
                   ("processor", "number out of range in field 'value'", "4815000000044402")], rej


def test_webhook_with_empty_child_lists_is_partial(procs, db, bins):
    """A webhook body with an empty child list ("line_items": [],
    "contact_persons": [] and {} addresses, "locations": []) and little else
    is a partial record, not Zoho's detail: written as LIST, it sets only the
    columns it carries, leaves the stored child rows alone and marks the row
    for a detail fetch (is_detail false). Before, each was a DETAIL: the
    invoice's status, total and customer_id became NULL and its line was
    deleted, the contact lost its persons and addresses, the item its stock,
    and each, a current detail, was never fetched again."""
    contact = {"contact_id": "260815000000098001", "contact_name": "مؤسسة النور",
               "contact_type": "customer", "status": "active", "email": "a@example.com",
               "billing_address": {"address": "King Fahd Rd", "city": "Riyadh"},
               "shipping_address": {"address": "", "city": "Jeddah"},
               "contact_persons": [{"contact_person_id": "260815000000098003",
                                    "first_name": "Sara"}],
               "last_modified_time": "2024-02-01T00:00:00+0000"}
    invoice = {"invoice_id": "982000000567114", "invoice_number": "INV-3", "status": "sent",
               "customer_id": "260815000000098001", "total": "162.74",
               "line_items": [{"line_item_id": "982000000567021", "quantity": 2}],
               "last_modified_time": "2024-02-01T00:00:00+0000"}
    later = "2024-06-01T00:00:00+0000"
    with into_writer(procs, db, bins) as (h, wait_acked):
        h.push.send(page_msg([ITEM], "pg-items"))
        h.push.send(page_msg([contact], "pg-contacts", entity="contacts", run="run-2"))
        h.push.send(page_msg([invoice], "pg-invoices", entity="invoices", run="run-3"))
        wait_acked(["pg-items", "pg-contacts", "pg-invoices"])
        h.push.send(event_msg({"invoice": {"invoice_id": invoice["invoice_id"],
                                           "invoice_number": "INV-3", "line_items": [],
                                           "last_modified_time": later}},
                              "inv", entity="invoices"))
        h.push.send(event_msg({"contact": {"contact_id": contact["contact_id"],
                                           "contact_name": "مؤسسة النور", "contact_persons": [],
                                           "billing_address": {}, "shipping_address": {},
                                           "last_modified_time": later}},
                              "con", entity="contacts"))
        h.push.send(event_msg({"item": {"item_id": ITEM["item_id"], "name": ITEM["name"],
                                        "locations": [], "last_modified_time": later}}, "itm"))
        wait_acked(["ev-inv", "ev-con", "ev-itm"])
    assert db.query("SELECT status, total::text, customer_id, is_detail FROM zoho.invoices") == \
        [("sent", "162.74", "260815000000098001", False)]
    assert db.query("SELECT line_item_id FROM zoho.invoice_lines") == [("982000000567021",)]
    assert db.query("SELECT status, contact_type, email, is_detail FROM zoho.contacts") == \
        [("active", "customer", "a@example.com", False)]
    assert db.query("SELECT address_type, city FROM zoho.contact_addresses ORDER BY 1") == \
        [("billing", "Riyadh"), ("shipping", "Jeddah")]
    assert db.query("SELECT count(*) FROM zoho.contact_persons")[0][0] == 1
    assert db.query("SELECT sku, rate::text, is_detail FROM zoho.items") == \
        [("TEE-BL-M", "19.99", False)]
    assert db.query("SELECT count(*) FROM zoho.item_stock")[0][0] == 2
    assert db.query("SELECT count(*) FROM tds.rejected")[0][0] == 0


def test_custom_fields_sharing_a_label_lose_no_value(procs, db, bins):
    """Two custom fields labelled alike, the second without an api_name: it is
    keyed by its customfield_id; with none either, the record is rejected
    with the reason (counted under duplicate_key), not stored with one value
    lost. Before, both were keyed "Seg" and jsonb kept only the last."""
    def item(iid, second):
        return dict(ITEM, item_id=iid, custom_fields=[
            {"label": "Seg", "value": 1.50, "api_name": "cf_a"}, dict(second, label="Seg")])
    with into_writer(procs, db, bins) as (h, wait_acked):
        h.push.send(page_msg([item("4815000000044501", {"value": "x", "customfield_id": "77"}),
                              item("4815000000044502", {"value": "x"})], "pg-cf"))
        wait_acked(["pg-cf"])
        assert h.proc.metric("tds_processor_rejects_total",
                             {"entity": "items", "reason": "duplicate_key"}) == 1
    assert db.query("SELECT item_id, custom_fields::text FROM zoho.items") == \
        [("4815000000044501", '{"77": "x", "Seg": 1.5}')]
    assert db.query("SELECT zoho_id, reason FROM tds.rejected") == \
        [("4815000000044502", "duplicate custom field key 'Seg' in field 'custom_fields[1]': "
                              "no api_name or customfield_id that no other field has")]
