"""The whole pipeline, end to end: simulator → fetcher → processor → writer → PostgreSQL,
and webhooks through the ingress. Prints its key figures."""
import hashlib
import hmac
import json
import time
import urllib.parse
import urllib.request

import pytest

from conftest import wait_until
from pipeline import SECRET, Pipeline


def test_full_sync_two_orgs_equals_truth(db, procs, sim, tmp_path):
    # 60001: +0300 warehouses; 60002: +0530 locations. Limits high: this test is
    # about correctness; the limiter has its own tests.
    s = sim(extra_args=["--rate-per-min", "100000", "--daily-limit", "0"])
    p = Pipeline(procs, db, s, tmp_path, org_overrides={"*": {"rate_per_min": 100000}}).start()
    for org in p.org_ids:
        t0 = time.monotonic()
        p.sync(org)
        n = db.query("SELECT coalesce(sum(records_written), 0) FROM tds.sync_runs WHERE org_id = %s", org)[0][0]
        print(f"full sync of {org}: {n} records in {time.monotonic() - t0:.2f}s")
        p.assert_equal_truth(org)


def _fast_sim(sim, **kw):
    return sim(extra_args=["--rate-per-min", "100000", "--daily-limit", "0"], **kw)


def _fast_pipeline(procs, db, s, tmp_path, **kw):
    return Pipeline(procs, db, s, tmp_path, org_overrides={"*": {"rate_per_min": 100000}},
                    **kw).start()


def test_incremental_reconcile_and_webhooks(db, procs, sim, tmp_path):
    s = _fast_sim(sim)
    p = _fast_pipeline(procs, db, s, tmp_path)
    org = p.org_ids[0]
    p.sync(org)
    p.assert_equal_truth(org)

    # Changes in Zoho with no webhook: the incremental sync finds them.
    s.mutate(org, "items", update=7, create=3)
    s.mutate(org, "contacts", update=4, create=2)
    s.mutate(org, "invoices", update=5)
    p.sync(org, mode="incremental")
    p.assert_equal_truth(org)

    # Deletes with no webhook: reconciliation marks them.
    gone = s.mutate(org, "items", delete=3)
    s.mutate(org, "contacts", delete=2)
    p.sync(org, mode="reconcile")
    p.assert_equal_truth(org)
    n = db.query("SELECT count(*) FROM zoho.items WHERE org_id = %s AND deleted_at IS NOT NULL", org)[0][0]
    assert n >= 3, (n, gone)

    # Webhooks: each mutation arrives signed at the ingress and lands within a second.
    p.hook_up_webhooks()
    t0 = time.monotonic()
    s.mutate(org, "items", update=10, create=2, delete=2)
    s.mutate(org, "contacts", update=5, delete=1)
    s.mutate(org, "sales_orders", update=5, create=1)
    p.wait_equal_truth(org, timeout=10)
    print(f"webhook mutations applied in {time.monotonic() - t0:.3f}s")

    # Nothing is left for an incremental sync to do: no row is rewritten.
    # The sales orders' lines queued their items' stock (tds.stock_refresh),
    # whose run rewrites an item whose stock the simulator moved: that run
    # comes first (TDS_FETCHER_STOCK_MS), or it may land inside the check.
    wait_until(lambda: db.query("SELECT count(*) FROM tds.stock_refresh WHERE org_id = %s",
                                org)[0][0] == 0 and p.runs_settled(), 30,
               "the stock refresh the sales orders queued")
    before = db.query("SELECT now()")[0][0]
    p.sync(org, mode="incremental")
    p.assert_equal_truth(org)
    rewritten = db.query("SELECT count(*) FROM zoho.items WHERE org_id = %s AND synced_at > %s",
                         org, before)[0][0]
    assert rewritten == 0, f"{rewritten} item rows rewritten by an incremental sync with no changes"


def test_replicas_like_kubernetes(db, procs, sim, tmp_path, wait_until):
    """Two ingresses, two fetchers, three processors, two writers; every upstream
    connects to every downstream replica."""
    s = _fast_sim(sim)
    p = _fast_pipeline(procs, db, s, tmp_path, writers=2, processors=3, fetchers=2,
                       ingresses=2)
    t0 = time.monotonic()
    for org in p.org_ids:
        p.request_sync(org)
    wait_until(lambda: db.query(
        "SELECT count(*) FROM tds.sync_requests WHERE done_at IS NULL")[0][0] == 0
        and p.runs_settled(), 120, "both organizations' syncs to finish", interval=0.3)
    print(f"two orgs synced by 2 fetchers / 3 processors / 2 writers in {time.monotonic() - t0:.2f}s")
    for org in p.org_ids:
        p.assert_equal_truth(org)
    # Each organization was fetched by exactly one fetcher (nobody was killed).
    for org in p.org_ids:
        callers = [f.name for f in p.fetchers
                   if (f.metric("tds_fetcher_api_calls_total", {"org": org}) or 0) > 0]
        assert len(callers) == 1, f"org {org} fetched by {callers}"
    # The work was spread over the processors and writers.
    busy = [x.name for x in p.processors if (x.metric("tds_processor_records_total") or 0) > 0]
    assert len(busy) >= 2, f"only {busy} processed records"
    # Webhooks through both ingresses.
    for i, org in enumerate(p.org_ids):
        s.webhooks(org, p.webhook_url(org, i), secret="e2e-webhook-secret", retries=10,
                   retry_delay_ms=200)
        s.mutate(org, "items", update=10, create=2, delete=1)
    for org in p.org_ids:
        p.wait_equal_truth(org, timeout=15)


def test_bad_records_rejected_rest_synced(db, procs, sim, tmp_path):
    """Invalid records in Zoho land in tds.rejected with their reasons while
    everything else syncs."""
    s = _fast_sim(sim)
    p = _fast_pipeline(procs, db, s, tmp_path)
    org = p.org_ids[0]
    made = {}
    for ent in ("items", "contacts", "invoices"):
        made[ent] = s.invalid(org, ent, n=4)["created"]
    p.sync(org)
    p.assert_equal_truth(org)
    rows = db.query("SELECT entity, zoho_id, reason, raw FROM tds.rejected WHERE org_id = %s", org)
    print(f"rejected: {len(rows)}; reasons: {sorted({r[2].split(':')[0] for r in rows})}")
    for ent, recs in made.items():
        got = [r for r in rows if r[0] == ent]
        assert len({r[3] for r in got}) >= len(recs), (ent, recs, got)
        for r in got:
            assert r[2] and r[3], r


def test_webhook_to_row_latency(db, procs, sim, tmp_path):
    """Mutations in the simulator, delivered as signed webhooks, are visible
    (NOTIFY tds_changes) well within a second; prints p50/p99/max."""
    import json as _json
    import select

    s = _fast_sim(sim)
    p = _fast_pipeline(procs, db, s, tmp_path)
    org = p.org_ids[0]
    p.sync(org, entity="items")
    p.hook_up_webhooks()
    conn = db.connect()
    conn.cursor().execute("LISTEN tds_changes")
    lat = []
    for _ in range(40):
        t0 = time.monotonic()
        ids = {r["id"] if isinstance(r, dict) else r
               for r in s.mutate(org, "items", update=1).get("updated", [])}
        assert ids, "simulator returned no updated id"
        seen = False
        while not seen and time.monotonic() - t0 < 5:
            if select.select([conn], [], [], 0.5)[0]:
                conn.poll()
                while conn.notifies:
                    n = conn.notifies.pop(0)
                    payload = _json.loads(n.payload)
                    touched = set(payload.get("tables", {}).get("items", []) or [])
                    if ids & touched:
                        seen = True
        assert seen, f"no NOTIFY for {ids} within 5 s"
        lat.append((time.monotonic() - t0) * 1000)
    lat.sort()
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]
    # the writer's own measure: ingress receipt to commit, one sample per webhook
    w = p.writers[0]
    # Count, sum and bucket from one scrape: a webhook committed between two
    # scrapes would set them apart (more come than the 40 waited for).
    scrape = w.metrics()
    n_age = w.metric("tds_writer_webhook_age_seconds_count", text=scrape)
    age = w.metric("tds_writer_webhook_age_seconds_sum", text=scrape) / n_age if n_age else None
    print(f"webhook to row (sanitizer build): p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms; "
          f"writer: {n_age} webhooks committed {age * 1000 if age else 0:.1f} ms after the ingress "
          "received them, on average")
    assert lat[-1] < 1000, f"a webhook took {lat[-1]:.0f} ms to become a row"
    assert n_age and n_age >= 40, n_age
    assert 0 < age < 1, age
    assert w.metric("tds_writer_webhook_age_seconds_bucket", {"le": "1"}, text=scrape) == n_age
    conn.close()


def _post_signed(url, body, params):
    """A webhook as Zoho signs it: HMAC-SHA256 over the sorted query
    parameters (name and value) followed by the raw body."""
    signed = "".join(k + v for k, v in sorted(params.items())) + body
    sig = hmac.new(SECRET.encode(), signed.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(url + "?" + urllib.parse.urlencode(params), data=body.encode(),
                                 method="POST", headers={"Content-Type": "application/json",
                                                         "X-Zoho-Webhook-Signature": sig})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def test_id_only_webhooks_survive_a_fetcher_killed_before_the_commit(db, procs, sim, tmp_path,
                                                                      wait_until):
    """A webhook without the record is fetched by id. The ingress keeps it in
    its journal until the writer commits the page that answers it, so a
    fetcher killed with that page in flight loses nothing: the ingress sends
    the fetch again after its ack timeout."""
    s = _fast_sim(sim)
    p = _fast_pipeline(procs, db, s, tmp_path, extra_env={"TDS_INGRESS_ACK_TIMEOUT_MS": "1000"})
    org = p.org_ids[0]
    p.sync(org)
    p.assert_equal_truth(org)
    ing, fetcher = p.ingresses[0], p.fetchers[0]

    def post_ids(ids):
        for zid in ids:
            assert _post_signed(p.webhook_url(org), json.dumps({"item_id": zid}),
                                {"entity": "items"}) == 200

    # Flowing: each fetch is answered, written, and only then released.
    post_ids(s.mutate(org, "items", update=4)["updated"])
    p.wait_equal_truth(org, timeout=20, entities=["items"])
    wait_until(lambda: ing.metric("tds_ingress_unacked") == 0, 10, "fetch entries acked")

    # No processor: the answers cannot be committed. The fetcher fetches them
    # and is killed with the pages in flight.
    for pr in p.processors:
        pr.kill()
    post_ids(s.mutate(org, "items", update=5)["updated"])
    wait_until(lambda: fetcher.metric("tds_fetcher_pages_inflight") >= 5, 20,
               "the fetcher holding the five answers")
    assert ing.metric("tds_ingress_unacked") == 5
    fetcher.kill()
    for pr in p.processors:
        pr.start()
    fetcher.start()
    t0 = time.monotonic()
    p.wait_equal_truth(org, timeout=30, entities=["items"])
    wait_until(lambda: ing.metric("tds_ingress_unacked") == 0, 10, "fetch entries acked")
    assert ing.metric("tds_ingress_resends_total") >= 5
    print(f"five fetches lost with the fetcher were asked again and applied in "
          f"{time.monotonic() - t0:.2f}s")


def test_a_fetch_resent_while_its_answer_is_in_flight_is_not_fetched_again(db, procs, sim,
                                                                             tmp_path, wait_until):
    """The ingress sends a fetch again when its ack is late (here: no
    processor, so the answering page cannot be committed). The fetcher joins
    the resends to the page in flight, or acks them at once once it is
    committed: one call to Zoho per change, however late the ack."""
    s = _fast_sim(sim)
    p = _fast_pipeline(procs, db, s, tmp_path, extra_env={"TDS_INGRESS_ACK_TIMEOUT_MS": "500"})
    org = p.org_ids[0]
    p.sync(org)
    ing, fetcher = p.ingresses[0], p.fetchers[0]

    def detail_calls():
        return s.stats()["orgs"][org]["endpoints"].get("items.detail", 0)

    before = detail_calls()
    for pr in p.processors:
        pr.kill()
    ids = s.mutate(org, "items", update=3)["updated"]
    for zid in ids:
        assert _post_signed(p.webhook_url(org), json.dumps({"item_id": zid}),
                            {"entity": "items"}) == 200
    wait_until(lambda: fetcher.metric("tds_fetcher_pages_inflight") >= 3, 20,
               "the fetcher holding the three answers")
    # every fetch is sent again at least twice while its answer waits
    wait_until(lambda: ing.metric("tds_ingress_resends_total") >= 6, 20, "resends")
    for pr in p.processors:
        pr.start()
    p.wait_equal_truth(org, timeout=30, entities=["items"])
    wait_until(lambda: ing.metric("tds_ingress_unacked") == 0, 10, "fetch entries acked")
    assert detail_calls() - before == 3


def test_an_id_only_webhook_zoho_refuses_is_released_not_asked_again(db, procs, sim, tmp_path,
                                                                      wait_until):
    """A fetch by id that Zoho refuses outright (400, code 2: no retry mends
    it) is logged, counted as dropped and acked to the ingress: the journal
    releases it instead of sending it again after every ack timeout, and
    the fetcher does not call Zoho for it again."""
    s = _fast_sim(sim)
    p = _fast_pipeline(procs, db, s, tmp_path, extra_env={"TDS_INGRESS_ACK_TIMEOUT_MS": "500"})
    org = p.org_ids[0]
    p.sync(org)
    ing, fetcher = p.ingresses[0], p.fetchers[0]
    # a stored, unchanged item: nothing else has a reason to fetch it
    zid = str(s.truth(org, "items", limit=1)["records"][0]["item_id"])

    def refused():
        return s.stats()["orgs"][org]["faults"]

    def detail_calls():
        return s.stats()["orgs"][org]["endpoints"].get("items.detail", 0)

    before_400, before_calls = refused(), detail_calls()
    s.faults(p400=1.0)
    try:
        assert _post_signed(p.webhook_url(org), json.dumps({"item_id": zid}),
                            {"entity": "items"}) == 200
        wait_until(lambda: f"fetch of items {zid} failed" in fetcher.stderr_text(), 10,
                   "the refused fetch by id")
        wait_until(lambda: ing.metric("tds_ingress_unacked") == 0, 10,
                   "the refused fetch released by the ingress")
        # (a slow machine may resend once before the release; none after it)
        released_resends = ing.metric("tds_ingress_resends_total") or 0
    finally:
        s.faults(clear=True)
    assert refused() > before_400
    assert fetcher.metric("tds_fetcher_fetches_dropped_total") >= 1
    # four ack timeouts later: not sent again, not fetched again
    time.sleep(2)
    assert ing.metric("tds_ingress_unacked") == 0
    assert (ing.metric("tds_ingress_resends_total") or 0) == released_resends
    assert detail_calls() == before_calls
    assert fetcher.stderr_text().count(f"fetch of items {zid} failed") == 1


def test_an_id_only_webhook_of_a_paused_org_leaves_the_ingress_journal(db, procs, sim, tmp_path,
                                                                        wait_until):
    """An organization whose credentials Zoho refused is paused until an
    operator fixes them, maybe days. The fetch its id-only webhook asks for
    waits in tds.sync_requests, and the ingress is acked: its journal entry
    no longer holds that segment and every later one, nor counts toward the
    unacked bound, both shared by every organization. Once the credentials
    are fixed the record is fetched. Before, the entry stayed unacked and was
    sent again at every ack timeout for as long as the pause lasted."""
    s = _fast_sim(sim)
    # (the fetcher's ack timeout sets the lease after which a request its
    # predecessor claimed is taken again: 2 s here, 60 s by default)
    p = Pipeline(procs, db, s, tmp_path, extra_env={"TDS_INGRESS_ACK_TIMEOUT_MS": "500",
                                                    "TDS_FETCHER_ACK_TIMEOUT_MS": "1000"},
                 org_overrides={"*": {"rate_per_min": 100000, "client_secret": "wrong"}}).start()
    org = p.org_ids[0]
    ing, fetcher = p.ingresses[0], p.fetchers[0]
    zid = str(s.truth(org, "items", limit=1)["records"][0]["item_id"])

    def item():
        return db.query("SELECT is_detail FROM zoho.items WHERE org_id = %s AND item_id = %s",
                        org, zid)

    def kept():
        return db.query("SELECT done_at IS NULL FROM tds.sync_requests WHERE org_id = %s "
                        "AND mode = 'fetch' AND zoho_id = %s", org, zid)

    assert _post_signed(p.webhook_url(org), json.dumps({"item_id": zid}),
                        {"entity": "items"}) == 200
    wait_until(lambda: ing.metric("tds_ingress_unacked") == 0, 15,
               "the paused organization's fetch acked to the ingress")
    resends = ing.metric("tds_ingress_resends_total") or 0
    # the fetcher logs the refusal after it has kept the fetch and acked it
    wait_until(lambda: "organization paused" in fetcher.stderr_text(), 5,
               "the fetcher's line about the paused organization")
    assert kept() == [(True,)]
    assert item() == []
    time.sleep(2)   # four ack timeouts: not sent again
    assert (ing.metric("tds_ingress_resends_total") or 0) == resends
    assert ing.metric("tds_ingress_unacked") == 0
    print(f"paused: acked with {resends:.0f} resends, the fetch kept in tds.sync_requests")

    # the credentials fixed: the fetcher's restart resumes the organization
    # and the kept fetch runs
    p._write_orgs({"*": {"rate_per_min": 100000}})
    fetcher.stop()
    fetcher.start()
    wait_until(lambda: kept() == [(False,)], 30, "the kept request answered and closed")
    assert item() == [(True,)]
