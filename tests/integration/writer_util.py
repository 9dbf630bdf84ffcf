"""Helpers for test_writer.py: a Python encoder of `rows` messages that mirrors
common/msg.c (keys v, t, id, org, entity, origin, src, run, mode, page,
received_ms, records_in, final, cursor, sets[table, kind, cols, rows],
rejects[entity, zoho_id, reason, raw]), an ack decoder, and a harness that
starts tds-writer with a PUSH socket for rows and a SUB socket for acks.
"""
import hashlib
import itertools
import json
import time

import msgpack
import zmq

from conftest import free_port, http_get, spawn_binding, wait_until

DETAIL, LIST, DELETE, CHILD = 1, 2, 3, 4

ITEM_OWN = ["name", "sku", "status", "rate", "stock_on_hand", "is_taxable", "created_time"]
ITEM_COLS = ["org_id", "item_id", "modified_time", "raw", "content_hash", "is_detail"] + ITEM_OWN
ITEM_LIST_OWN = ["name", "sku", "status", "rate"]
ITEM_LIST_COLS = ["org_id", "item_id", "modified_time", "raw", "content_hash", "is_detail"] \
    + ITEM_LIST_OWN
STOCK_COLS = ["org_id", "item_id", "warehouse_id", "warehouse_name", "stock_on_hand",
              "actual_available_stock"]

_ids = itertools.count(1)


def ts(minute, second=0):
    """A Zoho-style time text (org offset +0300) at a given minute of one day."""
    return f"2026-01-05T10:{minute:02d}:{second:02d}+0300"


def item(org, item_id, mtime, name, sku=None, rate="1.50", detail=True, stock=None, extra=None):
    """One item record: its DETAIL/LIST row and (for detail) its stock child rows."""
    raw = {"item_id": item_id, "name": name, "sku": sku, "rate": rate,
           "last_modified_time": mtime}
    if extra:
        raw.update(extra)
    if detail:
        raw["warehouses"] = [{"warehouse_id": w, "warehouse_stock_on_hand": q}
                             for w, q in (stock or [])]
    raw_text = json.dumps(raw, sort_keys=True, ensure_ascii=False)
    h = hashlib.sha256(raw_text.encode()).hexdigest()[:32]
    if detail:
        row = [org, item_id, mtime, raw_text, h, "true", name, sku, "active", rate,
               str(sum(float(q) for _, q in (stock or []))), "true", "2025-01-01T00:00:00+0000"]
    else:
        row = [org, item_id, mtime, raw_text, h, "false", name, sku, "active", rate]
    children = [[org, item_id, w, f"WH {w}", q, q] for w, q in (stock or [])] if detail else []
    return row, children


def rowset(table, kind, cols, rows):
    return {"table": table, "kind": kind, "cols": list(cols), "rows": [list(r) for r in rows]}


def items_sets(records, detail=True):
    """Row sets for a list of item(...) results."""
    rows = [r for r, _ in records]
    children = [c for _, ch in records for c in ch]
    if detail:
        sets = [rowset("items", DETAIL, ITEM_COLS, rows)]
        if children:
            sets.append(rowset("item_stock", CHILD, STOCK_COLS, children))
        return sets
    return [rowset("items", LIST, ITEM_LIST_COLS, rows)]


def rows_msg(org, sets, src=None, origin="test.o1", mode="webhook", entity="items", run=None,
             page=0, final=False, cursor=None, rejects=(), received_ms=None, records_in=None):
    """Encode one `rows` message as common/msg.c does (a msgpack map)."""
    src = src or f"ev-{next(_ids):08d}"
    m = {
        "v": 1, "t": "rows", "id": f"rows-{next(_ids):016x}",
        "org": org, "entity": entity, "origin": origin, "src": src, "mode": mode,
        "page": page, "received_ms": received_ms if received_ms is not None
        else int(time.time() * 1000),
        "records_in": records_in if records_in is not None else 0,
        "final": final, "sets": sets,
        "rejects": [{"entity": e, "zoho_id": z, "reason": r, "raw": raw.encode()}
                    for e, z, r, raw in rejects],
    }
    if run is not None:
        m["run"] = run
    if cursor is not None:
        m["cursor"] = cursor
    return src, msgpack.packb(m, use_bin_type=True)


def decode_ack(frames):
    """[origin][map] → (origin topic, decoded map with str keys)."""
    topic = frames[0].decode()
    m = msgpack.unpackb(frames[1], raw=False)
    return topic, m


class WriterHarness:
    """One tds-writer process with a PUSH socket to it and a SUB socket on its acks."""

    def __init__(self, procs, db, origin="test.o1", env=None, label=None, ready="readyz"):
        self.ctx = zmq.Context.instance()
        self.rows_port = free_port()
        self.ack_port = free_port()
        self.origin = origin

        def env_of():
            e = {
                "TDS_DATABASE_URL": db.url,
                "TDS_WRITER_BIND": f"tcp://127.0.0.1:{self.rows_port}",
                "TDS_ACK_BIND": f"tcp://127.0.0.1:{self.ack_port}",
                "TDS_INSTANCE": label or "w",
            }
            e.update(env or {})
            return e

        def repick():
            self.rows_port, self.ack_port = free_port(), free_port()
        # (ports the test gives in env are its own: not picked again)
        ours = not {"TDS_WRITER_BIND", "TDS_ACK_BIND"} & set(env or {})
        self.proc = spawn_binding(procs, "tds-writer", label, env_of,
                                  repick if ours else None, ready=ready)
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(f"tcp://127.0.0.1:{self.rows_port}")
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt_string(zmq.SUBSCRIBE, origin)
        self.sub.connect(f"tcp://127.0.0.1:{self.ack_port}")
        self.acked = set()
        self.acks = []
        time.sleep(0.2)  # let the SUB subscription reach the PUB (slow joiner)

    def send_in_one_batch(self, db, held, frames):
        """Send frames so that the writer takes them in one batch: it is held
        first in a batch of its own (frame `held`, whose upsert waits for a
        lock on zoho.items), the frames queue meanwhile, then the lock goes."""
        locker = db.connect()
        locker.autocommit = False
        try:
            locker.cursor().execute("LOCK TABLE zoho.items IN EXCLUSIVE MODE")
            self.send(held)
            time.sleep(0.5)
            for f in frames:
                self.send(f)
            time.sleep(0.5)
        finally:
            locker.rollback()
            locker.close()

    def send(self, frame):
        self.push.send(frame)

    def poll_acks(self, timeout_ms=50):
        got = []
        while self.sub.poll(timeout_ms):
            topic, m = decode_ack(self.sub.recv_multipart())
            assert topic == self.origin and m["origin"] == self.origin, (topic, m)
            assert m["t"] == "ack"
            self.acks.append(m)
            self.acked.update(m["ids"])
            got.append(m)
            timeout_ms = 0
        return got

    def wait_acked(self, srcs, timeout=20.0, resend=None, every=2.0):
        """Wait for acks of srcs. resend: {src: frame}, sent again every
        `every` seconds while not acked, as upstream does after its ack
        timeout (an ack the writer held for a flush is dropped with a lost
        session, and the message comes again)."""
        want = set(srcs)
        last = [time.monotonic()]

        def done():
            self.poll_acks()
            if resend and time.monotonic() - last[0] >= every:
                last[0] = time.monotonic()
                for src in sorted(want - self.acked):
                    self.send(resend[src])
            return want <= self.acked
        try:
            wait_until(done, timeout, "acks")
        except AssertionError:
            raise AssertionError(f"timed out after {timeout}s waiting for acks of "
                                 f"{len(want - self.acked)} of {len(want)} messages") from None

    def ready(self):
        st, _ = http_get(self.proc.admin_url + "/readyz")
        return st == 200

    def close(self):
        self.push.close(0)
        self.sub.close(0)
