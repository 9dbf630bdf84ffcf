"""tds-fetcher record by record, against the Zoho simulator with the real
processor and writer: fetches by id from the ingress (handed over between
replicas, kept while Zoho refuses them, acked once), rows left in list form
and the sweep that fetches their detail, records Zoho refuses or lists wrong,
items' batch details and stock sites, and the stock that documents move.
The runs, quota, tokens and ownership are in test_fetcher.py.
"""
import json
import math
import re
import time

import pytest

from conftest import free_port, http_get, wait_until
from fetcher_util import (ENTITIES, Pipeline, calls_a_second, org_spec, push_fetches, small_org,
                          zoho_time_to_epoch)
from sim_fixture import sim  # noqa: F401  (fixture)


def send_fetches(port, msgs):
    """Fetch messages (org, entity, zoho id, message id) as an ingress sends
    them: a resend after a late ack has the same message id."""
    import msgpack
    import zmq
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.2)
    for org, entity, zid, mid in msgs:
        sock.send(msgpack.packb({"v": 1, "t": "fetch", "id": mid, "org": org, "entity": entity,
                                 "zoho_id": zid, "origin": "ingress.test"}))
    sock.close()


class Downstream:
    """Stands in for the processor (a PULL socket on its port) and for the
    writer's acks (a PUB socket on its port), so that a test reads each page
    the fetcher sends and acks it when it chooses. Built before the fetcher
    starts (the writer has created the schema by then)."""

    def __init__(self, p):
        import zmq
        p.processor.kill()
        p.writer.stop()
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.bind(f"tcp://127.0.0.1:{p.proc_port}")
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.bind(f"tcp://127.0.0.1:{p.ack_port}")

    def page(self, timeout=10.0):
        import msgpack
        assert self.pull.poll(int(timeout * 1000)), "no page from the fetcher"
        return msgpack.unpackb(self.pull.recv(), raw=False)

    def ack_until_page(self, page, timeout=10.0):
        """Ack page (as the writer does after its COMMIT) until the fetcher
        sends its next page, which is returned."""
        import msgpack
        deadline = time.monotonic() + timeout
        while True:
            self.pub.send_multipart([page["origin"].encode(), msgpack.packb(
                {"v": 1, "t": "ack", "id": f"ack-{time.monotonic_ns()}", "origin": page["origin"],
                 "ids": [page["id"]], "rows_written": 1, "rows_rejected": 0})])
            if self.pull.poll(200):
                return self.page()
            assert time.monotonic() < deadline, f"no page after the ack of {page['id']}"

    def close(self):
        self.pull.close(0)
        self.pub.close(0)
        self.ctx.term()


def test_a_fetch_after_the_daily_reset_goes_out(procs, db, sim, tmp_path):
    """The last answer left no more than the reserve (999 of 1,000) and
    nothing was out; the next call comes after the reset it announced. It
    goes, and its headers tell the new day's figures: it used to stop the
    organization for an hour (the pause kept for "no reset known")."""
    day_ms = 3000
    s = sim(orgs=[small_org(items=10)], extra_args=["--daily-limit", "1000", "--day-ms", str(day_ms)])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", daily_reserve=999)])
    f = p.start_fetcher()
    ids = [r["item_id"] for r in s.truth("60001", "items")["records"]][:2]

    def fetched(i):
        return db.query("SELECT count(*) FROM zoho.items WHERE org_id = '60001' AND is_detail "
                        "AND item_id = %s", i)[0][0] == 1

    push_fetches(p.fetch_port, [("60001", "items", ids[0])])
    wait_until(lambda: fetched(ids[0]), timeout=30, what="the first fetch written")
    assert f.metric("tds_fetcher_quota_remaining", {"org": "60001"}) <= 999
    # past the reset that answer announced (whole seconds, and a second's grain)
    time.sleep(day_ms / 1000 + 2.5)
    t0 = time.monotonic()
    push_fetches(p.fetch_port, [("60001", "items", ids[1])])
    wait_until(lambda: fetched(ids[1]), timeout=10, what="the fetch after the reset written",
               interval=0.05)
    assert time.monotonic() - t0 < 4.0
    assert s.stats()["orgs"]["60001"]["429"]["45"] == 0


def test_a_webhooks_fetch_goes_ahead_of_a_running_full_sync(procs, db, sim, tmp_path):
    """A fetch an ingress waits for goes to the front of the organization's
    API queue, ahead of the detail calls a full run queued (up to two
    batches): at 15 calls a second, behind 200 invoice details it waited
    about 13 s; ahead of them it is written within a few seconds."""
    n = 200
    s, p = calls_a_second(procs, db, sim, tmp_path, 15, small_org(invoices=n))
    p.start_fetcher()
    rid = p.request("60001", "invoices", "full")
    # the list page read, its detail calls queued in list order and the
    # first answers written (a batch sends what it has every second)
    wait_until(lambda: db.query("SELECT count(*) FROM zoho.invoices WHERE org_id = '60001'")[0][0]
               >= 1, timeout=30, what="the first invoices written")
    # the last three listed (created last): their calls are the last queued
    ids = sorted((r["invoice_id"] for r in s.truth("60001", "invoices")["records"]),
                 reverse=True)[:3]
    assert db.query("SELECT count(*) FROM zoho.invoices WHERE invoice_id = ANY(%s)", ids) == [(0,)]
    t0 = time.monotonic()
    push_fetches(p.fetch_port, [("60001", "invoices", i) for i in ids])
    wait_until(lambda: db.query("SELECT count(*) FROM zoho.invoices WHERE org_id = '60001' "
                                "AND is_detail AND invoice_id = ANY(%s)", ids)[0][0] == 3,
               timeout=60, what="the webhooks' invoices fetched", interval=0.05)
    took = time.monotonic() - t0
    detailed = db.query("SELECT count(*) FROM zoho.invoices WHERE org_id = '60001' "
                        "AND is_detail")[0][0]
    assert took < 4.0 and detailed < n, (took, detailed)
    runs = p.wait_request(rid, timeout=60)
    assert [r["status"] for r in runs] == ["completed"], runs


def test_a_webhooks_fetch_goes_ahead_of_the_sweeps(procs, db, sim, tmp_path):
    """In the fetch queue too: a webhook's fetch goes ahead of the sweep's
    (up to 200 rows per entity per look), which nobody waits for. At 10
    calls a second, behind 100 swept items it waited about 10 s."""
    s, p = calls_a_second(procs, db, sim, tmp_path, 10, small_org(items=100),
                           {"TDS_FETCHER_SWEEP_MS": "200"})
    p.start_fetcher()
    p.sync("60001", "items", "full")
    s.reset_stats()
    # as a list write leaves them: list form, the list record's hash
    assert db.query("UPDATE zoho.items SET is_detail = false, content_hash = 'list-form', "
                    "synced_at = now() - interval '1 minute' WHERE org_id = '60001' RETURNING 1")
    wait_until(lambda: s.stats()["orgs"]["60001"]["endpoints"].get("items.detail", 0) >= 3,
               timeout=30, what="the sweep's fetches going out")
    cid = s.truth("60001", "contacts")["records"][0]["contact_id"]
    t0 = time.monotonic()
    push_fetches(p.fetch_port, [("60001", "contacts", cid)])
    wait_until(lambda: db.query("SELECT count(*) FROM zoho.contacts WHERE org_id = '60001' "
                                "AND is_detail AND contact_id = %s", cid)[0][0] == 1,
               timeout=30, what="the webhook's contact fetched", interval=0.05)
    took = time.monotonic() - t0
    left = db.query("SELECT count(*) FROM zoho.items WHERE org_id = '60001' AND NOT is_detail")[0][0]
    assert took < 4.0 and left > 0, (took, left)
    wait_until(lambda: db.query("SELECT count(*) FROM zoho.items WHERE org_id = '60001' "
                                "AND NOT is_detail")[0][0] == 0, timeout=30,
               what="the sweep done")


def test_a_fetch_resent_again_and_again_is_carried_once(procs, db, sim, tmp_path):
    """The ingress sends a fetch again at every ack timeout until the page
    that answers it is committed: in a processor or writer outage, every 10 s
    for as long as it lasts. Each resend joined the fetch still queued, or
    the page in flight that answers it, with one more copy of its (origin,
    message id) pair: memory grew without bound, and the page that acks them
    carried every copy (here 20). A pair already held is not added again."""
    s = sim(orgs=[small_org(items=5)])
    # two pages in flight fill the credits: a third fetch waits in the queue
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MAX_INFLIGHT": "2"})
    d = Downstream(p)
    try:
        f = p.start_fetcher()
        wait_until(lambda: json.loads(http_get(f.admin_url + "/status")[1])
                   ["organizations"][0]["owned"], timeout=10, what="the organization owned")
        a, b, c, e = [r["item_id"] for r in s.truth("60001", "items")["records"]][:4]
        send_fetches(p.fetch_port, [("60001", "items", a, "fe-a"), ("60001", "items", b, "fe-b")])
        pages = {pg["acks"][1]: pg for pg in (d.page(), d.page())}
        assert sorted(pages) == ["fe-a", "fe-b"], pages
        # fe-a's answer is in flight, fe-c waits in the queue; both are sent
        # again and again, then fe-e (queued behind fe-c) says all were taken
        send_fetches(p.fetch_port, [("60001", "items", c, "fe-c")] * 21
                     + [("60001", "items", a, "fe-a")] * 20 + [("60001", "items", e, "fe-e")])
        wait_until(lambda: json.loads(http_get(f.admin_url + "/status")[1])
                   ["organizations"][0]["fetch_queued"] == 2, timeout=10, what="fe-c and fe-e queued")
        # fe-a's page committed: its resends are acked by a page of their own
        late = d.ack_until_page(pages["fe-a"])
        # fe-b's committed: fe-c is asked of Zoho, its page answers every send
        answer = d.ack_until_page(pages["fe-b"])
        print(f"acks of fe-a's resends: {len(late['acks']) // 2}, "
              f"of fe-c's page: {len(answer['acks']) // 2}")
        assert not late.get("records") and answer.get("records"), (late, answer)
        assert late["acks"] == ["ingress.test", "fe-a"], len(late["acks"])
        assert answer["acks"] == ["ingress.test", "fe-c"], len(answer["acks"])
        # every page carries the organization's offset: the processor makes a
        # date-only time midnight there
        assert answer["tz"] == "+0300" and pages["fe-a"]["tz"] == "+0300", answer["tz"]
    finally:
        d.close()


def test_a_fetch_resent_or_swept_while_its_call_is_in_flight_is_asked_once(procs, db, sim,
                                                                           tmp_path):
    """A resend that came while the fetch's call was at Zoho (no page yet to
    join) was queued as a fetch of its own, and so was the sweep's fetch of a
    row in list form whose call was at Zoho: each a second detail call for
    the same record once the first was answered. Now both join the call in
    flight."""
    s = sim(orgs=[small_org(items=5)])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_SWEEP_MS": "200"})
    f = p.start_fetcher()
    p.sync("60001", "items", "full")

    def calls():
        return s.stats()["orgs"]["60001"]["endpoints"].get("items.detail", 0)

    def at_zoho():
        return s.stats()["orgs"]["60001"]["faults"]

    def asked_once(zid, mid, meanwhile):
        """fetch zid; while its call is at Zoho (slow), meanwhile(); the
        detail calls made, once the answer is written."""
        zid = s.mutate("60001", "items", update=1)["updated"][0] if zid is None else zid
        truth = {r["item_id"]: r for r in s.truth("60001", "items")["records"]}
        before, slow = calls(), at_zoho()
        s.faults(p_slow=1.0, slow_ms=2000)
        try:
            send_fetches(p.fetch_port, [("60001", "items", zid, mid)])
            wait_until(lambda: at_zoho() > slow, timeout=10, what="the call at Zoho")
            meanwhile(zid)
        finally:
            s.faults(clear=True)
        _wait_detail_written(db, truth, [zid], 10, "fetched")
        wait_until(lambda: f.metric("tds_fetcher_pages_inflight") == 0, timeout=10,
                   what="the answer acked")
        time.sleep(0.5)   # a second call would go out at once
        return calls() - before

    # the ingress sends it again (its ack is late)
    n = asked_once(None, "fe-x", lambda zid: send_fetches(
        p.fetch_port, [("60001", "items", zid, "fe-x")] * 3))
    print(f"detail calls for a fetch resent while at Zoho: {n}")
    assert n == 1, n

    # the sweep finds the row in list form (as a webhook's abbreviated record leaves it)
    def to_list_form(zid):
        looks = f.stderr_text().count("items rows only in list form")
        db.query("UPDATE zoho.items SET is_detail = false, synced_at = now() - interval "
                 "'1 minute' WHERE item_id = %s RETURNING 1", zid)
        wait_until(lambda: f.stderr_text().count("items rows only in list form") > looks,
                   timeout=5, what="the sweep asking for it")
    n = asked_once(None, "fe-y", to_list_form)
    print(f"detail calls for a fetch swept while at Zoho: {n}")
    assert n == 1, n


def test_fetch_by_id_updates_deletes_and_coalesces(procs, db, sim, tmp_path):
    s = sim(orgs=[small_org(items=40)])
    p = Pipeline(procs, db, s, tmp_path)
    p.start_fetcher()
    p.sync("60001", "items", "full")
    before = {r["item_id"] for r in s.truth("60001", "items")["records"]}
    s.mutate("60001", "items", update=1, create=1, delete=1)
    truth = s.truth("60001", "items")
    now = {r["item_id"]: r for r in truth["records"]}
    created = sorted(set(now) - before)
    deleted = [d["id"] for d in truth["deleted"] if d["id"] in before]
    s.reset_stats()
    # many webhooks for the same record: one fetch in flight, one queued behind
    # it. Each that comes while a call is at Zoho queues (at most) one more
    # after it, as the record may have changed since that call went out: the
    # answers are slowed so that all 20 come during the first call, on a
    # loaded machine too.
    msgs = [("60001", "items", created[0])] * 20
    msgs += [("60001", "items", i) for i in deleted]
    msgs += [("60001", "warehouses", "123"), ("99999", "items", "1")]  # ignored, not fatal
    s.faults(p_slow=1.0, slow_ms=1000)
    table = ENTITIES["items"][0]
    try:
        push_fetches(p.fetch_port, msgs)
        wait_until(lambda: db.query(f"SELECT count(*) FROM zoho.{table} WHERE item_id = %s",
                                    created[0])[0][0] == 1, timeout=30,
                   what="created record fetched")
        for d in deleted:
            wait_until(lambda: db.query(f"SELECT deleted_at IS NOT NULL FROM zoho.{table} "
                                        "WHERE item_id = %s", d)[0][0], timeout=30,
                       what="1002 marks the record deleted")
    finally:
        s.faults(clear=True)
    st = s.stats()["orgs"]["60001"]["endpoints"]
    assert 1 + len(deleted) <= st["items.detail"] <= 2 + len(deleted), st
    row = db.query(f"SELECT is_detail FROM zoho.{table} WHERE item_id = %s", created[0])
    assert row[0][0] is True


def test_no_part_of_a_longer_fetch_message_passes_for_a_fetch(procs, db, sim, tmp_path):
    """A fetch is one frame: the parts after the first are dropped, oversized
    ones included, and an oversized fetch is logged, not fetched."""
    import msgpack
    import zmq
    s = sim(orgs=[small_org(items=5)])
    p = Pipeline(procs, db, s, tmp_path)
    p.start_fetcher()
    p.sync("60001", "items", "full")
    s.mutate("60001", "items", create=3)
    truth = {r["item_id"] for r in s.truth("60001", "items")["records"]}
    have = {r[0] for r in db.query("SELECT item_id FROM zoho.items")}
    a, b, c = sorted(truth - have)

    def fetch(zid):
        return msgpack.packb({"v": 1, "t": "fetch", "id": f"fe-{zid}", "org": "60001",
                              "entity": "items", "zoho_id": zid, "origin": "ingress.test"})
    big = b"\x00" * (1024 * 1024 + 1)
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(f"tcp://127.0.0.1:{p.fetch_port}")
    try:
        sock.send_multipart([fetch(a), big, fetch(b)])
        sock.send_multipart([big, fetch(c)])
    finally:
        sock.close()
    wait_until(lambda: db.query("SELECT 1 FROM zoho.items WHERE item_id = %s", a), 30,
               "the fetch in the first frame")
    time.sleep(1.0)
    assert not db.query("SELECT item_id FROM zoho.items WHERE item_id IN (%s, %s)", b, c)
    assert "received a fetch over 1 MiB (1048577 bytes), skipping" in \
        p.fetchers[0].stderr_text()


def _owner_and_other(procs, db, sim, tmp_path, fetcher_env=None, settle=False):
    """f1 owns 60001, f2 (on its own fetch port) does not; items synced, then
    three changed in Zoho (with settle, only once the reconciliation that
    follows the full sync has ended, so it cannot see them). Returns p, f1,
    f2, f2's port, truth, changed ids."""
    s = sim(orgs=[small_org(items=30)])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env=fetcher_env)
    f1 = p.start_fetcher("f1")
    wait_until(lambda: db.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                "AND granted")[0][0] >= 1, timeout=10, what="f1 owns the organization")
    other_port = free_port()
    f2 = p.start_fetcher("f2", env={"TDS_FETCHER_BIND": f"tcp://127.0.0.1:{other_port}"})
    p.sync("60001", "items", "full")
    if settle:
        wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_runs WHERE finished_at IS NULL")[0][0] == 0,
                   timeout=20, what="the runs to finish")
    s.mutate("60001", "items", update=3)
    truth = {r["item_id"]: r for r in s.truth("60001", "items")["records"]}
    rows = p.db_rows("60001", "items")
    changed = [i for i, r in truth.items()
               if zoho_time_to_epoch(r["last_modified_time"]) != rows[i]["modified"]]
    assert changed
    return p, f1, f2, other_port, truth, changed


def _wait_detail_written(db, truth, ids, timeout, who):
    """Each of these items in zoho.items at its version in Zoho, in detail form."""
    for i in ids:
        want = zoho_time_to_epoch(truth[i]["last_modified_time"])
        wait_until(lambda: db.query("SELECT extract(epoch from modified_time)::bigint, is_detail "
                                    "FROM zoho.items WHERE item_id = %s", i)[0] == (want, True),
                   timeout=timeout, what=f"item {i} {who}")


def test_fetch_by_id_at_a_replica_not_owning_the_org_reaches_the_owner(procs, db, sim, tmp_path):
    p, _, f2, other_port, truth, changed = _owner_and_other(procs, db, sim, tmp_path)
    push_fetches(other_port, [("60001", "items", i) for i in changed])  # f2 does not own 60001
    _wait_detail_written(db, truth, changed, 20, "fetched by the owner")
    assert db.query("SELECT count(*) FROM tds.sync_requests WHERE mode = 'fetch' "
                    "AND (done_at IS NULL OR claimed_by <> 'f1')")[0][0] == 0
    assert "tds_fetcher_fetches_dropped_total 0" in http_get(f2.admin_url + "/metrics")[1]


def test_handed_over_fetch_outlives_an_owner_killed_before_the_commit(procs, db, sim, tmp_path):
    """A fetch handed to the owner through tds.sync_requests stays open until
    the page that answers it is committed. When the owner dies first, the
    replica that takes the organization over claims it again once the lease
    (twice the ack timeout) has run out, and the change lands."""
    p, f1, _, other_port, truth, changed = _owner_and_other(
        procs, db, sim, tmp_path, fetcher_env={"TDS_FETCHER_ACK_TIMEOUT_MS": "1000"})
    # No processor: f1's answers cannot be committed.
    p.processor.kill()
    push_fetches(other_port, [("60001", "items", i) for i in changed])  # f2 hands them to f1
    wait_until(lambda: f1.metric("tds_fetcher_pages_inflight") >= len(changed), timeout=20,
               what="f1 holding the answers")
    open_q = ("SELECT count(*) FROM tds.sync_requests WHERE mode = 'fetch' AND done_at IS NULL "
              "AND claimed_by = %s")
    assert db.query(open_q, "f1")[0][0] == len(changed)
    f1.kill()
    p.processor.start()
    _wait_detail_written(db, truth, changed, 30, "fetched by the new owner")
    wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_requests WHERE mode = 'fetch' "
                                "AND (done_at IS NULL OR claimed_by <> 'f2')")[0][0] == 0,
               timeout=10, what="every request closed by f2")


def test_a_held_fetch_is_not_asked_again_when_its_lease_runs_out(procs, db, sim, tmp_path):
    """A handed-over fetch whose answer waits for the writer longer than the
    lease (here: no processor) stays with the owner that holds it: the claim
    skips what this replica still holds, so Zoho is asked once."""
    # settle: the reconciliation that follows the full sync asks Zoho too, and
    # must not see the changes (rows it left in list form would be swept)
    p, f1, _, other_port, truth, changed = _owner_and_other(
        procs, db, sim, tmp_path, fetcher_env={"TDS_FETCHER_ACK_TIMEOUT_MS": "500"}, settle=True)
    assert db.query("SELECT count(*) FROM zoho.items WHERE NOT is_detail")[0][0] == 0
    p.processor.kill()
    push_fetches(other_port, [("60001", "items", i) for i in changed])  # f2 hands them to f1
    wait_until(lambda: f1.metric("tds_fetcher_pages_inflight") >= len(changed), timeout=20,
               what="f1 holding the answers")
    asked = p.sim.stats()["orgs"]["60001"]["endpoints"].get("items.detail", 0)
    time.sleep(3.0)  # three leases (2 x the ack timeout)
    assert "rows only in list form" not in f1.stderr_text()
    assert p.sim.stats()["orgs"]["60001"]["endpoints"].get("items.detail", 0) == asked
    assert f1.metric("tds_fetcher_pages_inflight") == len(changed)
    assert db.query("SELECT count(*) FROM tds.sync_requests WHERE mode = 'fetch' AND done_at IS NULL "
                    "AND claimed_by = 'f1'")[0][0] == len(changed)
    p.processor.start()
    _wait_detail_written(db, truth, changed, 20, "written")
    wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_requests WHERE mode = 'fetch' "
                                "AND done_at IS NULL")[0][0] == 0,
               timeout=10, what="every request closed")
    assert p.sim.stats()["orgs"]["60001"]["endpoints"].get("items.detail", 0) == asked


def test_a_handed_over_fetch_zoho_refuses_is_closed_not_retried(procs, db, sim, tmp_path):
    """A fetch handed to the owner through tds.sync_requests that Zoho refuses
    outright (400, code 2: no retry mends it) is closed by the owner, not
    left open for it (or the next owner, after the lease) to ask again."""
    # settle: no row in list form for the sweep to ask Zoho about again
    p, f1, _, other_port, truth, changed = _owner_and_other(
        procs, db, sim, tmp_path, fetcher_env={"TDS_FETCHER_ACK_TIMEOUT_MS": "500"}, settle=True)
    s = p.sim
    before = s.stats()["orgs"]["60001"]["faults"]
    s.faults(p400=1.0)
    try:
        push_fetches(other_port, [("60001", "items", i) for i in changed])  # f2 hands them to f1
        wait_until(lambda: all(f"fetch of items {i} failed" in f1.stderr_text() for i in changed),
                   timeout=20, what="f1 refused every fetch")
        wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_requests WHERE mode = 'fetch' "
                                    "AND done_at IS NULL")[0][0] == 0,
                   timeout=10, what="every handed-over request closed")
        assert db.query("SELECT count(*), count(*) FILTER (WHERE claimed_by = 'f1') "
                        "FROM tds.sync_requests WHERE mode = 'fetch'")[0] == (len(changed),
                                                                             len(changed))
        assert f1.metric("tds_fetcher_fetches_dropped_total") >= len(changed)
        # Past twice the lease (2 x the ack timeout), Zoho still refusing: a
        # request asked again would be refused and logged again.
        time.sleep(2.5)
        for i in changed:
            assert f1.stderr_text().count(f"fetch of items {i} failed") == 1
        assert db.query("SELECT count(*) FROM tds.sync_requests WHERE mode = 'fetch' "
                        "AND done_at IS NULL")[0][0] == 0
    finally:
        s.faults(clear=True)
    assert s.stats()["orgs"]["60001"]["faults"] - before >= len(changed)


def test_rows_left_in_list_form_get_their_detail(procs, db, sim, tmp_path):
    """A row only in list form (a webhook's abbreviated record, a variant
    written from its group, a fetch lost with a killed replica) is fetched
    by id without waiting for the next full sync."""
    s = sim(orgs=[small_org(items=20)])
    p = Pipeline(procs, db, s, tmp_path)
    p.start_fetcher()
    p.sync("60001", "items", "full")
    iid, n_stock = db.query("SELECT item_id, (SELECT count(*) FROM zoho.item_stock k WHERE "
                            "k.item_id = i.item_id) FROM zoho.items i ORDER BY 2 DESC LIMIT 1")[0]
    assert n_stock > 0
    # as a LIST write leaves it: list form, the list record's hash
    db.query("UPDATE zoho.items SET is_detail = false, content_hash = 'list-form', "
             "synced_at = now() - interval '1 minute' WHERE item_id = %s RETURNING 1", iid)
    db.query("DELETE FROM zoho.item_stock WHERE item_id = %s RETURNING 1", iid)
    wait_until(lambda: db.query("SELECT is_detail, (SELECT count(*) FROM zoho.item_stock WHERE "
                                "item_id = %s) FROM zoho.items WHERE item_id = %s", iid, iid)[0]
               == (True, n_stock), timeout=30, what="the detail fetched by id")
    p.compare("60001", "items")


def table_writes(db, table):
    """Rows inserted and updated in zoho.<table>, once the writer's session
    has reported them (its counts reach PostgreSQL's statistics within
    about a second of its transactions)."""
    return db.query("SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables "
                    "WHERE schemaname = 'zoho' AND relname = %s", table)[0]


@pytest.mark.parametrize("entity,n", [("items", 450), ("contacts", 40)])
def test_a_walk_writes_each_record_once_in_detail_form(procs, db, sim, tmp_path, entity, n):
    """A record a walk asks the detail of is written once, in detail form:
    its list form waits beside the detail call. Written first from the list
    page and then again from the detail, every record of a first full sync
    was an insert and an update, and its row briefly in list form. Items
    (GET /itemdetails, 100 a call) and contacts (one call each) alike."""
    s = sim(orgs=[small_org(**{entity: n})], extra_args=["--limits-off"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", entities=[entity])])
    p.start_fetcher()
    runs = p.sync("60001", entity, "full")
    assert runs[0]["pages_fetched"] >= 2, runs   # several list pages, several batches
    table = ENTITIES[entity][0]
    wait_until(lambda: table_writes(db, table)[0] >= n, timeout=15,
               what=f"the writer's inserts into zoho.{table} reported")
    time.sleep(1.5)   # and any update after them
    assert table_writes(db, table) == (n, 0)
    p.compare("60001", entity)


def test_a_walk_whose_details_fail_leaves_its_records_in_list_form(procs, db, sim, tmp_path):
    """When the detail calls fail (a 500 past the call's tries fails the
    run, to be tried again later), the list forms held for them are written:
    the records are owed, not absent, as when each list page was written at
    once. The run tried again writes their detail."""
    s = sim(orgs=[small_org(contacts=30)], extra_args=["--limits-off"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", entities=["contacts"])],
                 fetcher_env={"TDS_FETCHER_MAX_ATTEMPTS": "1", "TDS_FETCHER_SWEEP_MS": "600000",
                              "TDS_FETCHER_RUN_RETRY_MS": "4000"})
    ids = [r["contact_id"] for r in s.truth("60001", "contacts")["records"]]
    s.faults(refuse_id=",".join(ids), refuse_status=500)
    p.start_fetcher()
    rid = p.request("60001", "contacts", "full")
    wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_runs WHERE run_id LIKE %s "
                                "AND status = 'failed'", f"rq{rid}.%")[0][0] >= 1,
               timeout=60, what="the first attempt failed")
    wait_until(lambda: db.query("SELECT count(*) FROM zoho.contacts WHERE org_id = '60001'")[0][0]
               == len(ids), timeout=15, what="the list forms written")
    rows = p.db_rows("60001", "contacts")
    assert not any(r["is_detail"] for r in rows.values()), rows
    s.faults(clear=True)
    runs = p.wait_request(rid, timeout=90)
    assert runs[-1]["status"] == "completed", runs
    p.compare("60001", "contacts")


def test_the_sweep_leaves_an_entity_to_its_queued_full_run(procs, db, sim, tmp_path):
    """Rows in list form of an entity whose full run is queued (behind
    another run, as in an `all` sync, where item_groups writes the variants
    in list form before items runs) are left to that run: it asks for them
    100 a call (GET /itemdetails), where the sweep asked one call each."""
    s, p = calls_a_second(procs, db, sim, tmp_path, 20, small_org(items=20, contacts=60),
                           {"TDS_FETCHER_SWEEP_MS": "200"})
    p.start_fetcher()
    p.sync("60001", "items", "full")
    s.reset_stats()
    rc = p.request("60001", "contacts", "full")
    ri = p.request("60001", "items", "full")
    wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_runs WHERE run_id LIKE %s "
                                "AND status = 'running'", f"rq{rc}.%")[0][0] == 1,
               timeout=30, what="the contacts run started")
    # the items, as a list write leaves them (its hash, the list record's), a while ago
    assert db.query("UPDATE zoho.items SET is_detail = false, content_hash = 'list-form', "
                    "synced_at = now() - interval '1 minute' WHERE org_id = '60001' RETURNING 1")
    time.sleep(1.0)   # some five looks of the sweep while the items run waits
    for rid in (rc, ri):
        assert [r["status"] for r in p.wait_request(rid, timeout=60)] == ["completed"]
    wait_until(lambda: db.query("SELECT count(*) FROM zoho.items WHERE org_id = '60001' "
                                "AND NOT is_detail")[0][0] == 0, timeout=30,
               what="the items' detail written")
    st = s.stats()["orgs"]["60001"]["endpoints"]
    assert st.get("items.detail", 0) == 0 and st.get("itemdetails", 0) >= 1, st


def test_rejected_detail_is_not_asked_for_at_every_sweep(procs, db, sim, tmp_path):
    """A row in list form whose detail the processor rejects stays in list
    form: the sweep asks Zoho for it once, then waits (10 min doubling to a
    day, tds.detail_attempts), instead of asking at every look."""
    s = sim(orgs=[small_org(contacts=5)])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_SWEEP_MS": "1000"})
    f = p.start_fetcher()
    p.sync("60001", "contacts", "full")
    bad = str(s.invalid("60001", "contacts", n=1, kind="bad_number")["created"][0]["id"])
    # its list record as a LIST write would have left it
    db.query("INSERT INTO zoho.contacts SELECT (jsonb_populate_record(NULL::zoho.contacts, "
             "to_jsonb(c) || jsonb_build_object('contact_id', %s::text, 'is_detail', false, "
             "'synced_at', now() - interval '1 minute'))).* FROM zoho.contacts c LIMIT 1 "
             "RETURNING 1", bad)
    s.reset_stats()

    def calls():
        return s.stats()["orgs"]["60001"]["endpoints"]["contacts.detail"]

    def rejected():
        return db.query("SELECT count(*) FROM tds.rejected WHERE zoho_id = %s", bad)[0][0]

    wait_until(lambda: rejected() >= 1, timeout=30, what="the detail rejected")
    # some twenty looks, one call
    time.sleep(20)
    assert calls() == 1, calls()
    assert rejected() == 1
    att = db.query("SELECT attempts, round(extract(epoch FROM next_at - asked_at)) "
                   "FROM tds.detail_attempts WHERE zoho_id = %s", bad)
    assert att == [(1, 600)], att
    # once due (as if ten minutes had passed), asked again, then twice as late
    db.query("UPDATE tds.detail_attempts SET next_at = now() WHERE zoho_id = %s RETURNING 1", bad)
    wait_until(lambda: calls() == 2, timeout=30, what="the second attempt")
    wait_until(lambda: rejected() == 2, timeout=30, what="the second rejection")
    att = db.query("SELECT attempts, round(extract(epoch FROM next_at - asked_at)) "
                   "FROM tds.detail_attempts WHERE zoho_id = %s", bad)
    assert att == [(2, 1200)], att
    # a row written again since the last attempt is due at once
    db.query("UPDATE zoho.contacts SET synced_at = now() - interval '1 minute' "
             "WHERE contact_id = %s RETURNING 1", bad)
    wait_until(lambda: calls() == 3, timeout=30, what="the attempt after a write")
    att = db.query("SELECT attempts FROM tds.detail_attempts WHERE zoho_id = %s", bad)
    assert att == [(1,)], att
    time.sleep(3)
    assert calls() == 3
    assert "rows only in list form" in f.stderr_text()


def test_a_record_listed_twice_on_a_page_is_stored_once_with_its_child_rows(procs, db, sim,
                                                                           tmp_path):
    """A list page that holds one record twice went on with both copies, and
    so did the page of their details: in one rows message the writer cannot
    tell two copies' child rows apart, and an identical copy failed the
    record on its child table's key (tds.rejected, the record not stored).
    The fetcher takes one copy; each record's detail is asked once."""
    s = sim(orgs=[small_org(items=30, contacts=30, invoices=30)])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_PER_PAGE": "10"})
    s.faults(repeat_in_list=["items", "contacts", "invoices"])
    f = p.start_fetcher()
    for ent in ("warehouses", "items", "contacts", "invoices"):
        p.wait_request(p.request("60001", ent, "full"), timeout=90)
    for ent in ("items", "contacts", "invoices"):
        p.compare("60001", ent)
    assert db.query("SELECT entity, reason FROM tds.rejected") == []
    st = s.stats()["orgs"]["60001"]["endpoints"]
    assert st["contacts.detail"] == 30 and st["invoices.detail"] == 30, st
    # logged (at most one line per 10 s for the whole fetcher)
    assert "list page 1 of items lists item_id" in f.stderr_text()
    assert "more than once: one copy taken" in f.stderr_text()


def test_a_detail_batch_sends_what_it_has_every_second(procs, db, sim, tmp_path):
    """200 contact details at 20 calls a second: one batch, ten seconds. Its
    records are written as they come (every second), not when the batch
    ends, so a fetcher killed in the middle loses about a second of calls:
    the next one fetches only the details not yet written. Before, nothing
    of the batch was written until its last answer, and the kill lost every
    call made."""
    s = sim(orgs=[small_org(contacts=200)],
            extra_args=["--minute-ms", "1000", "--rate-per-min", "20", "--daily-limit", "0"])
    # (the fetcher taking over counts the calls its predecessor may have had
    # in flight as ending up to the HTTP timeout later: 5 s here, not 30)
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_MINUTE_MS": "1000",
                                                      "TDS_FETCHER_HTTP_TIMEOUT_MS": "5000"},
                 orgs=[org_spec("60001", entities=["contacts"], rate_per_min=20)])
    f = p.start_fetcher()
    rid = p.request("60001", "contacts", "full")

    def detailed():
        return db.query("SELECT count(*) FROM zoho.contacts WHERE is_detail")[0][0]
    wait_until(lambda: s.stats()["orgs"]["60001"]["endpoints"].get("contacts.detail", 0) >= 100,
               timeout=60, interval=0.05, what="100 detail calls")
    wait_until(lambda: detailed() >= 80, timeout=5, what="the details written as they come")
    f.kill()
    before = detailed()
    calls = s.stats()["orgs"]["60001"]["endpoints"]["contacts.detail"]
    print(f"killed after {calls} detail calls, {before} details written")
    s.reset_stats()
    p.start_fetcher(label="f2")
    runs = p.wait_request(rid, timeout=120)
    assert runs[-1]["status"] == "completed", runs
    again = s.stats()["orgs"]["60001"]["endpoints"]["contacts.detail"]
    print(f"the next fetcher made {again} detail calls")
    assert again <= 200 - before, (again, before)
    p.compare("60001", "contacts")


def test_invalid_records_do_not_stop_a_run(procs, db, sim, tmp_path):
    s = sim(orgs=[small_org(items=40)])
    bad = s.invalid("60001", "items", n=4, kind="mixed")["created"]
    p = Pipeline(procs, db, s, tmp_path)
    p.start_fetcher()
    runs = p.sync("60001", "items", "full")
    assert runs[0]["records_rejected"] >= 1, runs
    assert db.query("SELECT count(*) FROM tds.rejected")[0][0] >= 1
    bad_ids = {str(b["id"]) for b in bad}
    truth = {r["item_id"] for r in s.truth("60001", "items")["records"]} - bad_ids
    live = {k for k, v in p.db_rows("60001", "items").items() if not v["deleted"]}
    assert truth <= live, sorted(truth - live)[:5]


def test_a_list_record_with_a_non_utf8_id_does_not_stop_the_entity(procs, db, sim, tmp_path):
    """An id that is not UTF-8 made PostgreSQL refuse the run's id array:
    every run of the entity failed, its cursor never moved. The record is
    now passed on for the processor to reject, its detail not asked for,
    and the run completes."""
    s = sim(orgs=[small_org(contacts=20)])
    bad = str(s.invalid("60001", "contacts", n=1, kind="bad_utf8_id")["created"][0]["id"])
    p = Pipeline(procs, db, s, tmp_path)
    f = p.start_fetcher()
    runs = p.sync("60001", "contacts", "full")
    assert [r["status"] for r in runs] == ["completed"], runs
    assert runs[0]["records_rejected"] == 1, runs
    rej = db.query("SELECT stage, reason FROM tds.rejected WHERE entity = 'contacts'")
    assert len(rej) == 1 and rej[0][0] == "processor", rej
    # (the truth would show the raw byte too: count instead)
    live = {k for k, v in p.db_rows("60001", "contacts").items() if not v["deleted"]}
    assert len(live) == 20 and bad not in live, sorted(live)
    assert db.query("SELECT count(*) FROM zoho.contacts WHERE NOT is_detail")[0][0] == 0
    assert f.metric("tds_fetcher_list_bad_ids_total") >= 1
    assert "has an invalid id" in f.stderr_text()
    # and the next run too: the entity keeps syncing
    runs = p.sync("60001", "contacts", "incremental")
    assert [r["status"] for r in runs] == ["completed"], runs
    assert s.stats()["orgs"]["60001"]["endpoints"]["contacts.detail"] == 20


@pytest.mark.parametrize("status", [200, 400, 500])
def test_a_record_zoho_will_not_serve_does_not_stop_its_entity(procs, db, sim, tmp_path, status):
    """Ten contacts changed, and Zoho refuses one contact's detail every
    time. A 400 (code 2), or a 200 whose code 0 comes without the record:
    the run writes the other nine, leaves that one in
    list form for the sweep, completes and moves the cursor. A 500 (code
    1000) past every try fails the run, as Zoho failing is most often Zoho
    down, until the run's last attempt, which leaves that one in list form
    and completes. Before, every run of the entity failed on it, retried
    five times, and again at every scheduled run, for good. When every
    detail of a batch is refused, Zoho is the trouble, and the run still
    fails to be tried again."""
    s = sim(orgs=[small_org(contacts=20)], extra_args=["--limits-off"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", entities=["contacts"])],
                 fetcher_env={"TDS_FETCHER_MAX_ATTEMPTS": "2", "TDS_FETCHER_SWEEP_MS": "1000",
                              "TDS_FETCHER_RUN_RETRY_MS": "300"})
    f = p.start_fetcher()
    p.sync("60001", "contacts", "full")
    cur0 = db.query("SELECT cursor FROM tds.sync_state WHERE entity = 'contacts'")[0][0]
    upd = s.mutate("60001", "contacts", update=10)["updated"]
    bad = upd[0]
    s.faults(refuse_id=bad, refuse_status=status)
    s.reset_stats()
    rid = p.request("60001", "contacts", "incremental")
    runs = p.wait_request(rid, timeout=150)
    print("runs:", [(r["mode"], r["status"], r["api_calls"], r["error"]) for r in runs])
    if status in (200, 400):
        assert [r["status"] for r in runs] == ["completed"], runs
    else:   # the first attempt and five retries, 0.3 to 4.5 s apart
        assert [r["status"] for r in runs] == ["failed"] * 5 + ["completed"], runs
        waits = [int(m) for m in re.findall(r"contacts incremental run will be retried in (\d+) ms",
                                            f.stderr_text())]
        assert waits == [300, 600, 1200, 2400, 4500], waits
    cur1 = db.query("SELECT cursor FROM tds.sync_state WHERE entity = 'contacts'")[0][0]
    assert zoho_time_to_epoch(cur1) > zoho_time_to_epoch(cur0), (cur0, cur1)
    rows = p.db_rows("60001", "contacts")
    truth = {r["contact_id"]: r for r in s.truth("60001", "contacts")["records"]}
    for cid in upd[1:]:
        assert rows[cid]["is_detail"], cid
        assert rows[cid]["raw"]["contact_name"] == truth[cid]["contact_name"], cid
    # the refused one: its newer list form, not its old detail
    assert not rows[bad]["is_detail"]
    assert rows[bad]["modified"] == zoho_time_to_epoch(truth[bad]["last_modified_time"])
    assert f.metric("tds_fetcher_details_refused_total") == 1
    # (the last attempt's batch may hold that one alone: the others have their detail)
    assert re.search(r"left 1 of \d+ contacts in list form, their detail refused",
                     f.stderr_text()), f.stderr_text()[-3000:]
    # once Zoho serves it again, the sweep writes its detail
    s.faults(refuse_id="")
    db.execute("DELETE FROM tds.detail_attempts")
    # (aged past the 30 s that keep the sweep off a run's own rows)
    db.execute("UPDATE zoho.contacts SET synced_at = now() - interval '1 minute' "
               "WHERE contact_id = %s", bad)
    wait_until(lambda: p.db_rows("60001", "contacts")[bad]["is_detail"], timeout=90,
               what="the sweep's detail of the refused record")
    p.compare("60001", "contacts")

    # every detail of the batch refused: the run fails, as before
    s.faults(refuse_id=s.mutate("60001", "contacts", update=1)["updated"][0],
             refuse_status=status)
    rid = p.request("60001", "contacts", "incremental")
    wait_until(lambda: any(r["status"] == "failed" for r in p.runs(rid)), timeout=60,
               what="a failed run")
    assert "failed" in (p.runs(rid)[0]["error"] or ""), p.runs(rid)
    s.faults(refuse_id="")


def test_stock_sites_locations_are_listed_from_locations(procs, db, sim, tmp_path):
    """An organization migrated to Locations ("stock_sites": "locations") has
    its stock sites listed from GET /locations: zoho.warehouses holds each
    location under its location_id (site_kind 'location', its name), every
    item_stock row names one of them, a renamed location is renamed, and one
    no longer listed is marked deleted by the reconciliation. The same
    organization configured without it is told to set it."""
    spec = ("id=60002,tz=+0530,stock=locations,product=inventory,items=20,groups=2,"
            "contacts=5,invoices=5,salesorders=5,warehouses=3")
    s = sim(orgs=[spec])
    p = Pipeline(procs, db, s, tmp_path,
                 orgs=[org_spec("60002", tz="+0530", stock_sites="locations")])
    f = p.start_fetcher()
    p.sync("60002", "warehouses", "full")
    st = s.stats()["orgs"]["60002"]["endpoints"]
    # the simulator counts a /locations call under warehouses.list as well
    assert st["locations"] >= 1 and st["locations"] == st["warehouses.list"], st

    def sites():
        return db.query("SELECT warehouse_id, warehouse_name, site_kind, is_primary, "
                        "deleted_at IS NOT NULL FROM zoho.warehouses WHERE org_id = '60002' "
                        "ORDER BY warehouse_id")
    truth = sorted(s.get("/locations", org="60002").json()["locations"],
                   key=lambda x: x["location_id"])
    assert len(truth) == 3
    assert sites() == [(t["location_id"], t["location_name"], "location",
                        t["is_primary_location"], False) for t in truth]
    p.sync("60002", "items", "full")
    orphans = db.query("SELECT count(*), count(*) FILTER (WHERE w.warehouse_id IS NULL) "
                       "FROM zoho.item_stock k LEFT JOIN zoho.warehouses w USING (org_id, "
                       "warehouse_id) WHERE k.org_id = '60002'")[0]
    assert orphans[0] > 0 and orphans[1] == 0, orphans
    s.mutate("60002", "warehouses", update=1)
    db.query("INSERT INTO zoho.warehouses (org_id, warehouse_id, warehouse_name, site_kind, "
             "synced_at) VALUES ('60002', '999', 'closed', 'location', now() - interval "
             "'1 day') RETURNING 1")
    p.sync("60002", "warehouses", "full")
    p.sync("60002", "warehouses", "reconcile")
    truth = sorted(s.get("/locations", org="60002").json()["locations"],
                   key=lambda x: x["location_id"])
    assert sites() == [(t["location_id"], t["location_name"], "location",
                        t["is_primary_location"], False) for t in truth] + [
        ("999", "closed", "location", None, True)]
    assert "stock_sites" not in f.stderr_text()

    # configured without stock_sites: the sites come from /settings/warehouses,
    # and the fetcher says what to set, once
    f.stop()
    p.orgs = [org_spec("60002", tz="+0530")]
    p.write_config()
    f.start()
    p.sync("60002", "warehouses", "full")
    p.sync("60002", "warehouses", "full")
    hint = [json.loads(x)["msg"] for x in f.stderr_text().splitlines() if "stock_sites" in x]
    assert len(hint) == 1 and 'set "stock_sites": "locations"' in hint[0], hint


@pytest.mark.parametrize("product,stock", [("books", "locations"), ("inventory", "warehouses")])
def test_items_use_batch_details(procs, db, sim, tmp_path, product, stock):
    """Inventory and Books answer 100 items' details per call (GET
    /itemdetails); ids it leaves out are asked one by one (1002 → deleted)."""
    s = sim(orgs=[f"id=60002,tz=+0530,stock={stock},product={product},items=230,groups=2,"
                  "contacts=5,invoices=5,salesorders=5,warehouses=2"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60002", tz="+0530", product=product)])
    p.start_fetcher()
    runs = p.sync("60002", "items", "full")
    st = s.stats()["orgs"]["60002"]["endpoints"]
    assert st["itemdetails"] == 3 and st["items.detail"] == 0, st
    assert runs[0]["records_walked"] == 230, runs   # each once, the batch calls' too
    p.compare("60002", "items")
    s.mutate("60002", "items", update=3, delete=1)
    s.reset_stats()
    p.sync("60002", "items", "incremental")
    st = s.stats()["orgs"]["60002"]["endpoints"]
    assert st["itemdetails"] == 1 and st["items.detail"] == 0, st
    p.sync("60002", "items", "reconcile")   # the deleted id is confirmed by a single call
    p.compare("60002", "items")
    st = s.stats()["orgs"]["60002"]["endpoints"]
    assert st["items.detail"] == 1, st


def test_items_one_by_one_where_itemdetails_is_unknown(procs, db, sim, tmp_path):
    """An organization whose Zoho answers GET /itemdetails 404 code 5 (an
    unknown path) still syncs: that call's ids are asked one by one, and so
    is every later detail of that organization, with one warning."""
    # 150 calls one by one: without the per-minute limit (not what is tested
    # here), they take seconds instead of a minute and a half
    s = sim(orgs=["id=60001,tz=+0300,stock=warehouses,product=inventory,itemdetails=no,"
                  "items=150,groups=2,contacts=5,invoices=5,salesorders=5,warehouses=2"],
            extra_args=["--rate-per-min", "100000", "--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=100000)])
    f = p.start_fetcher()
    runs = p.sync("60001", "items", "full")
    st = s.stats()["orgs"]["60001"]["endpoints"]
    # 150 ids: two batch calls asked at once, both refused
    assert st["itemdetails"] == 0 and st["other"] == 2, st
    assert st["items.detail"] == 150, st
    assert runs[0]["records_walked"] == 150, runs
    p.compare("60001", "items")
    s.mutate("60001", "items", update=3)
    s.reset_stats()
    p.sync("60001", "items", "incremental")
    st = s.stats()["orgs"]["60001"]["endpoints"]
    assert st["other"] == 0 and st["items.detail"] == 3, st
    p.compare("60001", "items")
    log = f.stderr_text()
    assert log.count("GET /itemdetails refused") == 1, log[-2000:]


@pytest.mark.parametrize("product,stock", [("inventory", "warehouses"), ("books", "locations")])
def test_itemdetails_without_stock_sites_is_not_taken_for_the_whole_item(procs, db, sim, tmp_path,
                                                                         product, stock):
    """A GET /itemdetails whose items come without warehouses[] or
    locations[] (what Inventory's and Books' answer is not confirmed) was
    written as the complete record: every stock row of every item was
    deleted, at every sync. Such an answer is set aside and the
    organization's items are asked one by one (GET /items/{id}, which has
    them), with one warning. Books organizations were left out of that
    check, taken to have no stock per site, and lost their stock rows
    (Books documents warehouses[] in its items too)."""
    s = sim(orgs=[f"id=60001,tz=+0300,stock={stock},product={product},"
                  "items=150,groups=2,contacts=5,invoices=5,salesorders=5,warehouses=2"],
            extra_args=["--rate-per-min", "100000", "--daily-limit", "0",
                        "--itemdetails-stock", "no"])
    p = Pipeline(procs, db, s, tmp_path,
                 orgs=[org_spec("60001", product=product, rate_per_min=100000)])
    f = p.start_fetcher()
    runs = p.sync("60001", "items", "full")
    assert runs[0]["records_walked"] == 150, runs
    st = s.stats()["orgs"]["60001"]["endpoints"]
    assert st["itemdetails"] <= 2 and st["items.detail"] == 150, st
    p.compare("60001", "items")
    truth = s.truth("60001", "items")["records"]
    want = sum(len(r.get("locations") or r.get("warehouses") or []) for r in truth)
    assert want > 0
    assert db.query("SELECT count(*) FROM zoho.item_stock WHERE org_id = '60001'") == [(want,)]
    s.mutate("60001", "items", update=3)
    s.reset_stats()
    p.sync("60001", "items", "incremental")
    st = s.stats()["orgs"]["60001"]["endpoints"]
    assert st["itemdetails"] == 0 and st["items.detail"] == 3, st
    assert db.query("SELECT count(*) FROM zoho.item_stock WHERE org_id = '60001'") == [(want,)]
    log = f.stderr_text()
    assert log.count("without their stock per site") == 1, log[-2000:]
    assert "either" not in log, log[-2000:]


def test_one_item_without_stock_sites_does_not_send_its_organization_back_to_batches(
        procs, db, sim, tmp_path):
    """Item by item because GET /itemdetails leaves the stock sites out, one
    odd item whose own GET /items/{id} has none either sent the whole
    organization back to batches, whose answers, taken as they are, deleted
    the stock rows of every item they wrote (40 rows of 20 changed items in
    a review's probe). One such answer among others that have sites tells
    nothing: the organization stays item by item."""
    s = sim(orgs=["id=60001,tz=+0300,stock=warehouses,product=inventory,"
                  "items=60,groups=2,contacts=5,invoices=5,salesorders=5,warehouses=2"],
            extra_args=["--rate-per-min", "100000", "--daily-limit", "0",
                        "--itemdetails-stock", "no"])
    truth = s.truth("60001", "items")["records"]
    odd = next(r["item_id"] for r in truth if r.get("item_type") == "inventory"
               and r.get("warehouses"))
    s.faults(nostock_id=odd)
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=100000)])
    f = p.start_fetcher()
    p.sync("60001", "items", "full")
    want = {r["item_id"]: len(r.get("warehouses") or []) for r in truth}
    got = dict(db.query("SELECT item_id, count(*) FROM zoho.item_stock WHERE org_id = '60001' "
                        "GROUP BY 1"))
    assert got.get(odd, 0) == 0   # its own detail, the authority, has none
    assert {k: v for k, v in got.items() if k != odd} == \
        {k: v for k, v in want.items() if k != odd and v}, got
    s.mutate("60001", "items", update=20)
    s.reset_stats()
    p.sync("60001", "items", "incremental")
    st = s.stats()["orgs"]["60001"]["endpoints"]
    assert st["itemdetails"] == 0 and st["items.detail"] == 20, st
    truth = s.truth("60001", "items")["records"]
    want = {r["item_id"]: len(r.get("warehouses") or []) for r in truth}
    got = dict(db.query("SELECT item_id, count(*) FROM zoho.item_stock WHERE org_id = '60001' "
                        "GROUP BY 1"))
    assert {k: v for k, v in got.items() if k != odd} == \
        {k: v for k, v in want.items() if k != odd and v}, got
    assert "either" not in f.stderr_text()


def test_items_of_an_organization_with_no_stock_sites_go_back_to_batches(procs, db, sim, tmp_path):
    """Where GET /items/{id} has no stock site either (simulator
    --itemdetails-stock never), asking item by item gains nothing: 10 such
    answers and none with a site send the organization back to GET
    /itemdetails, whose answers are then taken as they are, with one
    warning; its items were otherwise asked one call each, for good (100
    times the calls)."""
    s = sim(orgs=["id=60001,tz=+0300,stock=warehouses,product=books,"
                  "items=150,groups=2,contacts=5,invoices=5,salesorders=5,warehouses=2"],
            extra_args=["--rate-per-min", "100000", "--daily-limit", "0",
                        "--itemdetails-stock", "never"])
    p = Pipeline(procs, db, s, tmp_path,
                 orgs=[org_spec("60001", product="books", rate_per_min=100000)])
    f = p.start_fetcher()
    runs = p.sync("60001", "items", "full")
    assert runs[0]["records_walked"] == 150, runs
    st = s.stats()["orgs"]["60001"]["endpoints"]
    # both batch calls go at once; their items asked one by one until 10
    # single answers came back (all 150 may be queued by then)
    assert st["itemdetails"] <= 2 and 10 <= st["items.detail"] <= 150, st
    assert db.query("SELECT count(*), count(*) FILTER (WHERE is_detail) FROM zoho.items "
                    "WHERE org_id = '60001' AND deleted_at IS NULL") == [(150, 150)]
    assert db.query("SELECT count(*) FROM zoho.item_stock WHERE org_id = '60001'") == [(0,)]
    s.mutate("60001", "items", update=3)
    s.reset_stats()
    p.sync("60001", "items", "incremental")
    st = s.stats()["orgs"]["60001"]["endpoints"]
    assert st["itemdetails"] == 1 and st["items.detail"] == 0, st
    log = f.stderr_text()
    assert log.count("without their stock per site") == 1, log[-2000:]
    assert log.count("no stock per site either") == 1, log[-2000:]


def test_one_html_404_from_itemdetails_does_not_stop_batches(procs, db, sim, tmp_path):
    """A GET /itemdetails answered 404 with an HTML page, not Zoho's JSON (a
    proxy or load balancer in a bad minute), says nothing about the path:
    that call's ids are asked one by one, and later batches still go 100 a
    call. Before, any 404 switched the organization to a call per item for
    the life of the fetcher: up to 100 times the detail calls."""
    s = sim(orgs=[small_org(items=250)], extra_args=["--rate-per-min", "100000", "--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=100000)])
    f = p.start_fetcher()
    s.faults(html404_itemdetails=1)
    p.sync("60001", "items", "full")
    p.compare("60001", "items")
    st = s.stats()["orgs"]["60001"]
    # 250 ids: three batch calls, one refused (a fault, not counted as a
    # served itemdetails call), its ids (100, or the last 50) asked one by one
    assert st["endpoints"]["itemdetails"] == 2 and st["faults"] == 1, st
    assert st["endpoints"]["items.detail"] in (50, 100), st
    s.mutate("60001", "items", update=3)
    s.reset_stats()
    p.sync("60001", "items", "incremental")
    st = s.stats()["orgs"]["60001"]["endpoints"]
    assert st["itemdetails"] == 1 and st["items.detail"] == 0, st
    p.compare("60001", "items")
    log = f.stderr_text()
    assert "one by one from now on" not in log, log[-2000:]
    assert log.count("GET /itemdetails refused") == 1, log[-2000:]


def test_reconcile_marks_deletes_when_itemdetails_refuses_a_deleted_id(procs, db, sim, tmp_path):
    """Should Zoho answer GET /itemdetails 404 code 1002 as a whole when one
    id asked for is deleted (not confirmed; the simulator's
    --itemdetails-missing error), a reconciliation, which asks exactly for
    the ids missing from the listing, failed every time and the deleted
    items were never marked deleted. Now that call's ids are asked one by
    one: the deleted ones get a 1002 each, the others stay as they are."""
    s = sim(orgs=[small_org(items=40)],
            extra_args=["--itemdetails-missing", "error", "--rate-per-min", "100000",
                        "--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=100000)])
    f = p.start_fetcher()
    p.sync("60001", "items", "full")
    m = s.mutate("60001", "items", update=2, delete=3)
    assert (len(m["updated"]), len(m["deleted"])) == (2, 3), m
    s.reset_stats()
    rid = p.request("60001", "items", "reconcile")
    first = wait_until(lambda: [r for r in p.runs(rid) if r["status"] != "running"], timeout=30,
                       what="the reconciliation's first run to end")[0]
    assert first["status"] == "completed", first      # it used to fail: "itemdetails failed"
    p.wait_request(rid, timeout=30)
    p.compare("60001", "items")   # the updated ones too; the deleted ones marked deleted
    assert db.query("SELECT count(*) FROM zoho.items WHERE org_id = '60001' AND "
                    "deleted_at IS NOT NULL") == [(3,)]
    assert sorted(r[0] for r in db.query("SELECT item_id FROM zoho.items WHERE org_id = '60001' "
                                         "AND deleted_at IS NOT NULL")) == sorted(m["deleted"])
    st = s.stats()["orgs"]["60001"]
    # the 2 changed ones in one batch call, the 3 missing in another (404),
    # then each of those one by one (1002 each)
    assert st["endpoints"]["itemdetails"] == 2 and st["endpoints"]["items.detail"] == 3, st
    assert st["404"] == 4, st
    assert "GET /itemdetails answered code 1002" in f.stderr_text()


def test_detail_pages_split_by_bytes(procs, db, sim, tmp_path):
    """TDS_FETCHER_PAGE_MAX_BYTES: the details of a list page that add up to
    more go in several pages (each acked on its own), and the result is the
    same table."""
    s = sim(orgs=[small_org(items=600, contacts=5, invoices=5, salesorders=5, groups=2)],
            extra_args=["--limits-off"])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_PAGE_MAX_BYTES": "65536"},
                 orgs=[org_spec("60001", rate_per_min=6000)])
    p.start_fetcher()
    runs = p.sync("60001", "items", "full")
    p.compare("60001", "items")
    run = runs[0]
    size = db.query("SELECT sum(octet_length(raw::text)) FROM zoho.items "
                    "WHERE org_id = '60001'")[0][0]
    # 3 list pages; the details of each (200 records of 1-3 KB) in at least 4 pages
    assert size > 600 * 1000, size
    assert run["pages_written"] >= 3 * 4, run
    # each page acked; the list pages were not sent on, every record of
    # them new and held for its detail
    assert run["pages_written"] == run["pages_fetched"] - 3, run
    assert run["records_written"] == 600 and run["records_rejected"] == 0, run
    # every record came twice (list, then detail), is written and walked once
    assert run["records_fetched"] == 1200 and run["records_walked"] == 600, run


class FakeIngress:
    """Sends fetches of one record to the fetcher as tds-ingress does: each
    again at every ack timeout (1 s here) until the writer acks it.
    `sends[id]` holds the times each was sent. It connects to the fetch
    port at its first send: a fetcher started after it may have been given
    a new one (its first port taken, fetcher_util.Pipeline)."""

    def __init__(self, p, entity, zoho_id, origin="ingress.test"):
        import zmq
        ctx = zmq.Context.instance()
        self.p = p
        self.entity, self.zoho_id, self.origin = entity, zoho_id, origin
        self.sub = ctx.socket(zmq.SUB)   # the writer's acks to this "ingress"
        self.sub.setsockopt(zmq.SUBSCRIBE, origin.encode())
        self.sub.connect(f"tcp://127.0.0.1:{p.ack_port}")
        self.push = None
        self.sends = {}

    def _connect(self):
        import zmq
        if self.push is None:
            self.push = zmq.Context.instance().socket(zmq.PUSH)
            self.push.setsockopt(zmq.LINGER, 0)
            self.push.connect(f"tcp://127.0.0.1:{self.p.fetch_port}")
        return self.push

    def until_acked(self, mid, seconds):
        """Returns when the fetch was acked (time.monotonic()), or None."""
        import msgpack
        deadline = time.monotonic() + seconds
        t = self.sends.setdefault(mid, [])
        while time.monotonic() < deadline:
            if not t or time.monotonic() - t[-1] >= 1.0:
                self._connect().send(msgpack.packb({"v": 1, "t": "fetch", "id": mid,
                                                    "org": "60001", "entity": self.entity,
                                                    "zoho_id": self.zoho_id,
                                                    "origin": self.origin}))
                t.append(time.monotonic())
            if self.sub.poll(100):
                _, body = self.sub.recv_multipart()
                if mid in msgpack.unpackb(body, raw=False).get("ids", []):
                    return time.monotonic()
        return None

    def close(self):
        self.sub.close(0)
        if self.push is not None:
            self.push.close(0)


def test_a_fetch_refused_while_the_org_is_paused_is_asked_again(procs, db, sim, tmp_path):
    """A fetch that comes while the organization is paused for refused
    credentials gets no call: that is no answer from Zoho. A webhook's fetch
    is kept as an open tds.sync_requests row, one per record, and then acked:
    unacked, its ingress journal entry held its segment and every later one
    and counted toward the unacked bound, both shared by every organization,
    which got 503s once they filled (the pause lasts until an operator comes).
    A handed-over request stays open, and neither it nor a kept row is
    claimed while the pause lasts. Once the credentials are fixed the records deleted in Zoho get their 1002
    and are marked deleted, and the requests are closed. Before the rows,
    the fetch went unacked and the ingress sent it again for as long as the
    pause lasted; before that, it was answered as a fatal failure: acked at
    once and the request closed, the delete lost until the next
    reconciliation (up to a day)."""
    s = sim(orgs=[small_org(items=10)])
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_ACK_TIMEOUT_MS": "500"},
                 orgs=[org_spec("60001", client_secret="wrong")])
    # two items deleted in Zoho that the database still holds: one the
    # webhooks' fetches name, one a fetch handed over by another replica
    gone = ["9100000000000000001", "9100000000000000002"]
    db.execute("INSERT INTO zoho.items (org_id, item_id, is_detail, synced_at) SELECT '60001', g, "
               "true, now() - interval '1 minute' FROM unnest(%s::text[]) g", gone)
    ing = FakeIngress(p, "items", gone[0])
    sends = ing.sends
    def deleted():
        return db.query("SELECT item_id FROM zoho.items WHERE org_id = '60001' AND "
                        "deleted_at IS NOT NULL AND item_id = ANY(%s)", gone)

    def request_open(rq):
        return db.query("SELECT done_at IS NULL FROM tds.sync_requests WHERE id = %s", rq)[0][0]

    def kept():
        return db.query("SELECT id, requested_by FROM tds.sync_requests WHERE mode = 'fetch' "
                        "AND zoho_id = %s AND done_at IS NULL", gone[0])

    try:
        f = p.start_fetcher()
        runs = p.wait_request(p.request("60001", "warehouses", "full"), timeout=30)
        assert runs[-1]["status"] == "failed" and "paused" in runs[-1]["error"], runs
        rq = db.query("INSERT INTO tds.sync_requests (org_id, entity, mode, zoho_id, requested_by) "
                      "VALUES ('60001', 'items', 'fetch', %s, 'f2') RETURNING id", gone[1])[0][0]
        t0 = time.monotonic()
        acked1 = ing.until_acked("fe-paused-1", 10)
        assert acked1 is not None, "a webhook's fetch refused while paused was never acked"
        # a second webhook for the same record: acked, no second row
        acked2 = ing.until_acked("fe-paused-2", 10)
        assert acked2 is not None
        # The handed-over request and the kept row are not claimed while the
        # organization is paused: each claim would be refused without a call
        # and claimed again after every lease (2 x the ack timeout, 1 s
        # here), a row update each for as long as the pause lasts. Before,
        # the handed-over one was refused once a lease.
        time.sleep(3)
        held = f.metric("tds_fetcher_fetches_held_total")
        claimed = db.query("SELECT count(*) FROM tds.sync_requests WHERE mode = 'fetch' "
                           "AND done_at IS NULL AND claimed_at IS NOT NULL")[0][0]
        lines = [ln for ln in f.stderr_text().splitlines() if "fetch of items" in ln and " failed" in ln]
        rows = kept()
        print(f"paused: acked after {acked1 - t0:.2f} s, sends {[len(v) for v in sends.values()]}, "
              f"{held:.0f} fetches held, {claimed} open requests claimed, {len(lines)} log lines, "
              f"kept {rows}, request open {request_open(rq)}")
        assert held == 2 and claimed == 0, (held, claimed)
        assert [len(v) for v in sends.values()] == [1, 1], sends
        assert len(rows) == 1 and "paused" in rows[0][1], rows
        assert f.metric("tds_fetcher_fetches_kept_total") == 2
        assert request_open(rq), "the handed-over request was closed while paused"
        assert "organization paused" in f.stderr_text()
        assert "kept in tds.sync_requests" in f.stderr_text()
        # a line per refusal would fill the log while an organization waits
        # for its operator: at most one per 10 s, saying how many were left out
        assert 1 <= len(lines) <= 2, lines
        assert deleted() == []
        assert s.stats()["orgs"]["60001"]["endpoints"]["items.detail"] == 0
        # the credentials fixed: the organization resumes and both are asked
        # for again from their rows
        p.orgs = [org_spec("60001")]
        p.write_config()
        f.stop()
        f.start()
        wait_until(lambda: len(deleted()) == 2, timeout=30, what="both items marked deleted")
        wait_until(lambda: not request_open(rq) and not kept(), timeout=10,
                   what="both requests closed")
        assert s.stats()["orgs"]["60001"]["endpoints"]["items.detail"] >= 2
    finally:
        ing.close()


def test_a_fetch_of_an_entity_zoho_refuses_to_the_token_is_kept_and_acked(procs, db, sim,
                                                                           tmp_path):
    """A token whose scope lacks one module (a self-client made without
    invoices.READ) gets code 57 for that entity while the rest works. A
    webhook's fetch of such a record is kept as an open tds.sync_requests row
    and acked, as when the organization is paused. Before, it was neither
    acked nor kept: the ingress sent it again at every ack timeout for as long
    as the scope was missing (days, maybe), each logged, and its journal
    entry held its segment and every later one, shared by every
    organization, until the ingress's disk bound gave them all 503s. A
    handed-over request for such an entity is not claimed while Zoho's
    refusal stands (each claim would be refused without a call); once the
    scope is granted, both are fetched and closed."""
    s = sim(orgs=[small_org(items=10, invoices=4)])
    # two tries a call: the first refusal is tried again (the token refreshed
    # once, then backoff) before it counts as the entity refused
    p = Pipeline(procs, db, s, tmp_path, fetcher_env={"TDS_FETCHER_ACK_TIMEOUT_MS": "500",
                                                      "TDS_FETCHER_MAX_ATTEMPTS": "2"})
    s.faults(deny=["invoices"])
    invs = [r["invoice_id"] for r in s.truth("60001", "invoices")["records"][:2]]
    ing = FakeIngress(p, "invoices", invs[0])
    sends = ing.sends
    def open_fetches():
        return db.query("SELECT zoho_id, requested_by, claimed_at IS NOT NULL FROM "
                        "tds.sync_requests WHERE mode = 'fetch' AND done_at IS NULL ORDER BY id")

    def stored():
        return sorted(r[0] for r in db.query(
            "SELECT invoice_id FROM zoho.invoices WHERE org_id = '60001' AND invoice_id = ANY(%s)",
            invs))

    try:
        f = p.start_fetcher()
        # the first webhook's call is refused (code 57, the token otherwise
        # good); the second's is refused without a call
        assert ing.until_acked("fe-denied-1", 15), \
            "a webhook's fetch of a refused entity was never acked"
        assert ing.until_acked("fe-denied-2", 10)
        # another replica's handed-over request for the same entity
        rq = db.query("INSERT INTO tds.sync_requests (org_id, entity, mode, zoho_id, requested_by) "
                      "VALUES ('60001', 'invoices', 'fetch', %s, 'f2') RETURNING id", invs[1])[0][0]
        time.sleep(3)   # a claim each second, a lease of 1 s
        rows = open_fetches()
        lines = [ln for ln in f.stderr_text().splitlines()
                 if "fetch of invoices" in ln and " failed" in ln]
        print(f"sends {[len(v) for v in sends.values()]}, open fetch rows {rows}, "
              f"{f.metric('tds_fetcher_fetches_held_total'):.0f} held, "
              f"{f.metric('tds_fetcher_fetches_kept_total'):.0f} kept, {len(lines)} log lines")
        # the first is acked once its call is refused (sent again meanwhile
        # at each ack timeout), the second at once
        assert len(sends["fe-denied-1"]) <= 8 and len(sends["fe-denied-2"]) <= 2, sends
        assert [(r[0], r[2]) for r in rows] == [(invs[0], False), (invs[1], False)], rows
        assert "zoho refuses invoices.detail" in rows[0][1], rows
        assert f.metric("tds_fetcher_fetches_kept_total") == 2
        assert f.metric("tds_fetcher_fetches_held_total") == 2
        assert 1 <= len(lines) <= 2, lines
        assert "kept in tds.sync_requests until zoho answers it" in lines[0], lines
        assert stored() == []
        # the scope granted (the refusal's backoff is 15 minutes: a restart
        # asks at once); both records are fetched and their requests closed
        s.faults(deny=[])
        f.stop()
        f.start()
        wait_until(lambda: stored() == sorted(invs), timeout=30, what="both invoices stored")
        wait_until(lambda: open_fetches() == [], timeout=10, what="both requests closed")
        assert db.query("SELECT done_at IS NOT NULL FROM tds.sync_requests WHERE id = %s",
                        rq)[0][0]
    finally:
        ing.close()


def test_a_fetch_while_the_daily_budget_is_spent_is_kept_and_acked(procs, db, sim, tmp_path):
    """Once an organization's daily budget is spent (its reserve reached, or
    Zoho's code 45), no call goes out until Zoho's daily reset, maybe hours
    away. A webhook's fetch waited for it in the call queue, unacked: its
    ingress journal entry held that segment and every later one, shared by
    every organization, and counted toward the ingress's unacked bound (an
    organization that takes webhooks unsigned fetches every one). It is now
    kept as an open tds.sync_requests row and acked, as when the organization
    is paused; the row is not claimed before the reset, and is fetched and
    closed after it."""
    day_ms = 30000
    s = sim(orgs=[small_org(items=10)], extra_args=["--daily-limit", "1000", "--day-ms", str(day_ms)])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", daily_reserve=999)],
                 fetcher_env={"TDS_FETCHER_ACK_TIMEOUT_MS": "500"})
    ids = [r["item_id"] for r in s.truth("60001", "items")["records"]][:2]
    ing = FakeIngress(p, "items", ids[1])

    def fetched(i):
        return db.query("SELECT count(*) FROM zoho.items WHERE org_id = '60001' AND is_detail "
                        "AND item_id = %s", i)[0][0] == 1

    def open_fetches():
        return db.query("SELECT zoho_id, requested_by, claimed_at IS NOT NULL FROM "
                        "tds.sync_requests WHERE mode = 'fetch' AND done_at IS NULL ORDER BY id")

    try:
        f = p.start_fetcher()
        push_fetches(p.fetch_port, [("60001", "items", ids[0])])
        wait_until(lambda: fetched(ids[0]), timeout=20, what="the first fetch written")
        # the reserve is reached: the next call waits for the simulator's day to end
        assert ing.until_acked("fe-stopped-1", 10), \
            "a webhook's fetch waited unacked for the daily reset"
        time.sleep(2)   # claims each second: none while the budget is spent
        rows = open_fetches()
        assert [(r[0], r[2]) for r in rows] == [(ids[1], False)], rows
        assert rows[0][1].endswith("fetch held while zoho's daily API budget is spent"), rows
        assert not fetched(ids[1])
        assert "until zoho's daily reset" in f.stderr_text()
        wait_until(lambda: fetched(ids[1]), timeout=day_ms / 1000 + 15,
                   what="the kept fetch made after the reset")
        wait_until(lambda: open_fetches() == [], timeout=10, what="its request closed")
        assert s.stats()["orgs"]["60001"]["429"]["45"] == 0
    finally:
        ing.close()


def _stock_rows(db, org):
    return sorted(db.query("SELECT item_id, warehouse_id, stock_on_hand::text, "
                           "committed_stock::text FROM zoho.item_stock WHERE org_id = %s", org))


def _truth_stock(s, org):
    rows = []
    for r in s.truth(org, "items")["records"]:
        for w in r.get("warehouses") or []:
            rows.append((r["item_id"], w["warehouse_id"], str(w["warehouse_stock_on_hand"]),
                         str(w["warehouse_committed_stock"])))
    return sorted(rows)


def _documents_move_stock(s, p, db, before):
    """Invoices and sales orders of org 60001 changed in the simulator, moving
    their items' stock from `before`; their incrementals run; the stock rows
    follow Zoho's within 30 s."""
    moved = set(s.mutate("60001", "invoices", update=4, moves_stock=True)["stock_moved"])
    moved |= set(s.mutate("60001", "sales_orders", update=2, moves_stock=True)["stock_moved"])
    assert moved and _truth_stock(s, "60001") != before
    p.sync("60001", "invoices", "incremental")
    p.sync("60001", "sales_orders", "incremental")
    wait_until(lambda: _stock_rows(db, "60001") == _truth_stock(s, "60001"), timeout=30,
               what="the stock rows to follow the documents")


def test_items_whose_stock_documents_moved_are_fetched_again(procs, db, sim, tmp_path):
    """Invoices and sales orders move their items' stock while the items'
    own records (and last_modified_time) stay as they were, so no item
    incremental lists them. Writing a document's lines queues its items
    (tds.stock_refresh); the owning fetcher fetches them again with
    GET /itemdetails, without walking the items, and the stock rows follow
    Zoho. The items' sync state is not touched: a stock run is no sync."""
    s = sim(orgs=[small_org()], extra_args=["--rate-per-min", "100000", "--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=100000)],
                 fetcher_env={"TDS_FETCHER_STOCK_MS": "1000"})
    f = p.start_fetcher()
    for ent in ("warehouses", "items", "invoices", "sales_orders"):
        p.sync("60001", ent, "full")
    assert _stock_rows(db, "60001") == _truth_stock(s, "60001")
    # a full sync of documents older than the items' versions queues nothing
    assert db.query("SELECT count(*) FROM tds.stock_refresh") == [(0,)]
    state = db.query("SELECT cursor, last_run_id, last_success_at FROM tds.sync_state "
                     "WHERE org_id = '60001' AND entity = 'items'")
    before = _stock_rows(db, "60001")

    s.reset_stats()
    _documents_move_stock(s, p, db, before)
    wait_until(lambda: db.query("SELECT count(*) FROM tds.stock_refresh") == [(0,)], timeout=10,
               what="tds.stock_refresh emptied")
    p.compare("60001", "items")
    runs = db.query("SELECT entity, status FROM tds.sync_runs WHERE mode = 'stock'")
    assert runs and all(r == ("items", "completed") for r in runs), runs
    st = s.stats()["orgs"]["60001"]["endpoints"]
    # the items' details in batches of 100; no item list walked
    assert st.get("items.list", 0) == 0 and 1 <= st["itemdetails"] <= len(runs), st
    assert db.query("SELECT cursor, last_run_id, last_success_at FROM tds.sync_state "
                    "WHERE org_id = '60001' AND entity = 'items'") == state
    assert "whose stock documents moved" in f.stderr_text()


def test_stock_follows_documents_with_this_host_clock_ahead_of_zoho(procs, db, sim, tmp_path):
    """With this host's clock 180 s ahead of Zoho's, an item fetched now
    carries an observed_at 180 s past any document Zoho changes in the next
    two minutes, and the stock triggers' minute of slack queued none of them:
    their stock rows stayed stale until the daily reconciliation. The fetcher
    records its clock lead (the Date of Zoho's answers) in tds.quota_use and
    the triggers add it to their slack (writer migration 028). Here the
    clocks agree at first and the host's jumps ahead while the fetcher runs:
    the lead recorded follows within seconds. (A first version kept the least
    bound of the last two windows of answers, however old: it stayed at 2 s
    and the stock rows stayed stale.)"""
    s = sim(orgs=[small_org()], extra_args=["--rate-per-min", "100000", "--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=100000)],
                 fetcher_env={"TDS_FETCHER_STOCK_MS": "1000"})
    f = p.start_fetcher()
    p.sync("60001", "warehouses", "full")

    def lead():
        got = db.query("SELECT clock_lead_s FROM tds.quota_use WHERE org_id = '60001'")
        return got[0][0] if got else None

    wait_until(lambda: lead() is not None and 0 <= lead() <= 3, timeout=10, what="a lead near 0")
    s.clock(-180)
    for ent in ("invoices", "sales_orders", "items"):
        p.sync("60001", ent, "full")
    wait_until(lambda: 180 <= (lead() or 0) <= 184, timeout=15, what="the lead of 180 s recorded")
    assert 180 <= f.metric("tds_fetcher_clock_lead_seconds", {"org": "60001"}) <= 184
    wait_until(lambda: db.query("SELECT count(*) FROM tds.stock_refresh") == [(0,)], timeout=30,
               what="tds.stock_refresh emptied")
    assert _stock_rows(db, "60001") == _truth_stock(s, "60001")
    before = _stock_rows(db, "60001")
    # within the lead of the items' fetch, by Zoho's clock
    _documents_move_stock(s, p, db, before)
    p.compare("60001", "items")


def test_a_walk_of_the_items_fetches_those_whose_listed_stock_moved(procs, db, sim, tmp_path):
    """Stock moved by documents this service does not sync (a purchase
    receive, a bill, an adjustment, a transfer) leaves the items'
    last_modified_time and queues nothing in tds.stock_refresh, but the items
    list gives each item's stock totals. A walk of the items (the daily
    reconciliation here) fetches again, in one batch, the detail of every item
    listed at its stored version with other totals, and of no other; the
    next walk finds none."""
    s = sim(orgs=[small_org()], extra_args=["--rate-per-min", "100000", "--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=100000)],
                 fetcher_env={"TDS_FETCHER_STOCK_MS": "3600000"})
    f = p.start_fetcher()
    for ent in ("warehouses", "items"):
        p.sync("60001", ent, "full")
    before = _stock_rows(db, "60001")
    assert before == _truth_stock(s, "60001")
    versions = db.query("SELECT item_id, modified_time FROM zoho.items WHERE org_id = '60001' "
                        "ORDER BY 1")
    # the invoices stand for the documents not synced: none is written here
    moved = set(s.mutate("60001", "invoices", update=5, moves_stock=True)["stock_moved"])
    assert moved and _truth_stock(s, "60001") != before
    truth = {r["item_id"]: r for r in s.truth("60001", "items")["records"]}
    assert all(truth[i]["last_modified_time"] for i in moved)

    s.reset_stats()
    p.sync("60001", "items", "reconcile")
    assert _stock_rows(db, "60001") == _truth_stock(s, "60001")
    p.compare("60001", "items")
    assert db.query("SELECT item_id, modified_time FROM zoho.items WHERE org_id = '60001' "
                    "ORDER BY 1") == versions
    assert db.query("SELECT (SELECT count(*) FROM zoho.invoices), "
                    "(SELECT count(*) FROM tds.stock_refresh)") == [(0, 0)]
    st = s.stats()["orgs"]["60001"]["endpoints"]
    assert st.get("itemdetails") == 1 and st.get("items.detail", 0) == 0, st
    assert f"{len(moved)} items listed at their stored version with figures unlike the stored " \
        "ones (stock_on_hand and the like)" in f.stderr_text()

    s.reset_stats()
    p.sync("60001", "items", "reconcile")
    st = s.stats()["orgs"]["60001"]["endpoints"]
    assert st.get("itemdetails", 0) == 0 and st.get("items.detail", 0) == 0, st
    assert _stock_rows(db, "60001") == _truth_stock(s, "60001")


def test_a_stock_run_zoho_fails_waits_longer_each_time(procs, db, sim, tmp_path):
    """A stock run that fails (Zoho answering 5xx) is not retried as a sync
    run is: the next look is its retry, after a wait that doubles with each
    failure, so a Zoho that is down does not get a run every few seconds all
    day. Its items stay queued. A `stock` request in tds.sync_requests (only
    the fetcher's own look starts such runs) is closed, not left to block
    the requests after it."""
    s = sim(orgs=[small_org()], extra_args=["--rate-per-min", "100000", "--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=100000)],
                 fetcher_env={"TDS_FETCHER_STOCK_MS": "1000", "TDS_FETCHER_MAX_ATTEMPTS": "1"})
    f = p.start_fetcher()
    p.sync("60001", "items", "full")
    bad = p.request("60001", "items", "stock")
    p.sync("60001", "contacts", "full")
    assert db.query("SELECT done_at IS NOT NULL FROM tds.sync_requests WHERE id = %s", bad) \
        == [(True,)]
    ids = [r["item_id"] for r in s.truth("60001", "items")["records"][:3]]
    s.faults(p500=1.0)
    db.execute("INSERT INTO tds.stock_refresh (org_id, item_id, reason) "
               "SELECT '60001', unnest(%s::text[]), 'test'", ids)
    # five failed, not five started: a fifth run started before the faults
    # are cleared may make its call after (CI saw it complete)
    wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_runs WHERE mode = 'stock' "
                                "AND status = 'failed'")[0][0] >= 5,
               timeout=40, what="five failed stock runs")
    s.faults(clear=True)
    runs = db.query("SELECT status, extract(epoch FROM started_at)::float8 FROM tds.sync_runs "
                    "WHERE mode = 'stock' ORDER BY started_at")
    assert all(st == "failed" for st, _ in runs[:5]), runs
    gaps = [b - a for (_, a), (_, b) in zip(runs, runs[1:5])]
    # waits of 1, 2, 4, 8 s, each gap up to a tick (1 s) longer
    assert all(2 ** k - 0.5 <= g <= 2 ** k + 3 for k, g in enumerate(gaps)), gaps
    assert "stock run will be retried" not in f.stderr_text()
    assert db.query("SELECT count(*) FROM tds.stock_refresh") == [(3,)]


def test_an_item_zoho_cannot_serve_does_not_fail_the_items_asked_with_it(procs, db, sim, tmp_path):
    """Zoho answers a GET /itemdetails with every item or none: one item it
    cannot serve (its own GET fails too, HTTP 500) failed the call of the
    others every time, and being queued longest it came first in every
    stock run. A call that fails past its tries where a failure no longer
    fails the run (a stock run here, a sync run's last attempt) is asked
    again in four parts, each tried once, and a part that fails in halves,
    down to that item: the others are fetched and their stock rows follow
    Zoho, that one is put off. Three such items, two of them in one part,
    are all found; with halves at the first level, two items it parted
    failed the run on every attempt. Parts that all fail at the first level
    (Zoho down) fail the run, as the whole call did, a request a part
    later."""
    s = sim(orgs=[small_org()], extra_args=["--rate-per-min", "100000", "--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path, orgs=[org_spec("60001", rate_per_min=100000)],
                 fetcher_env={"TDS_FETCHER_STOCK_MS": "1000", "TDS_FETCHER_MAX_ATTEMPTS": "2"})
    f = p.start_fetcher()
    for ent in ("warehouses", "items", "invoices"):
        p.sync("60001", ent, "full")
    moved = sorted(s.mutate("60001", "invoices", update=8, moves_stock=True)["stock_moved"])
    assert len(moved) >= 3, moved
    bad = moved[len(moved) // 2]
    s.faults(refuse_id=bad, refuse_status=500)
    faults0 = s.stats()["orgs"]["60001"]["faults"]
    p.sync("60001", "invoices", "incremental")

    def others(rows, skip):
        return [r for r in rows if r[0] not in skip]
    wait_until(lambda: db.query("SELECT DISTINCT item_id FROM tds.stock_refresh") == [(bad,)],
               timeout=30, what="every item but the one zoho cannot serve fetched again")
    assert others(_stock_rows(db, "60001"), {bad}) == others(_truth_stock(s, "60001"), {bad})
    run = db.query("SELECT status, api_calls, records_fetched FROM tds.sync_runs "
                   "WHERE mode = 'stock' ORDER BY started_at")[0]
    # the whole call, its four parts, then two calls a halving of the part
    # that failed down to the one item (the items of the invoices' old
    # lines were queued too)
    n = run[2]
    parts = min(4, n)
    least = math.floor(math.log2(max(1, n // parts)))
    most = math.ceil(math.log2(math.ceil(n / parts)))
    assert run[0] == "completed" and n >= len(moved) - 1, run
    assert 1 + parts + 2 * least <= run[1] <= 1 + parts + 2 * most, run
    # requests that failed: the whole call's two tries, its part, then one
    # a halving
    failed = s.stats()["orgs"]["60001"]["faults"] - faults0
    assert 3 + least <= failed <= 3 + most, (failed, run)
    assert db.query("SELECT bool_and(attempts >= 1 AND next_at > now()) FROM tds.stock_refresh") \
        == [(True,)]
    assert "asking for them in parts" in f.stderr_text()

    # three such items among 16: two in the first part (its halves both
    # fail, and both are halved), one in the third; the second and fourth
    # parts are served. Halves at the first level both failed: the run too.
    db.execute("DELETE FROM tds.stock_refresh")
    ids = [r["item_id"] for r in s.truth("60001", "items")["records"]][:16]
    bad3 = [ids[1], ids[2], ids[10]]   # the queue's order: oldest, then id
    s.faults(refuse_id=",".join(bad3), refuse_status=500)
    db.execute("INSERT INTO tds.stock_refresh (org_id, item_id, reason, queued_at) "
               "SELECT '60001', i, 'test', now() - interval '1 hour' + n * interval '1 s' "
               "FROM unnest(%s::text[]) WITH ORDINALITY AS u(i, n)", ids)
    wait_until(lambda: sorted(r[0] for r in db.query(
                   "SELECT DISTINCT item_id FROM tds.stock_refresh")) == sorted(bad3),
               timeout=30, what="every item but the three zoho cannot serve fetched again")
    last = db.query("SELECT status FROM tds.sync_runs WHERE mode = 'stock' "
                    "ORDER BY started_at DESC LIMIT 1")[0][0]
    assert last == "completed", last

    # Zoho down: every part fails (three parts of the three items), and so
    # does the run
    s.faults(refuse_id="", p500=1.0)
    db.execute("DELETE FROM tds.stock_refresh")
    db.execute("INSERT INTO tds.stock_refresh (org_id, item_id, reason) "
               "SELECT '60001', unnest(%s::text[]), 'test'", moved[:3])
    wait_until(lambda: db.query("SELECT count(*) FROM tds.sync_runs WHERE mode = 'stock' "
                                "AND status = 'failed'")[0][0] >= 1,
               timeout=30, what="a failed stock run")
    s.faults(clear=True)
    failed = db.query("SELECT api_calls, error FROM tds.sync_runs WHERE mode = 'stock' "
                      "AND status = 'failed' ORDER BY started_at")[0]
    assert failed[0] == 4 and "itemdetails failed" in failed[1], failed
    wait_until(lambda: db.query("SELECT count(*) FROM tds.stock_refresh") == [(0,)], timeout=30,
               what="the three fetched once zoho is back")
