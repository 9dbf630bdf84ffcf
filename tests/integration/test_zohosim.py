"""tds-zohosim against its spec (issue 3), over real HTTP.

Each test starts its own simulator through the `sim` fixture and talks to it
with plain http.client: OAuth success, errors and lockout; auth failures; a
paged walk; the last_modified_time filter; the three 429s and the quota
headers; list vs detail records; warehouses[] vs locations[]; mutations with
signed webhooks checked by a real receiver; fault injection; the truth
endpoint. Speed is measured separately (README.md), not asserted here.
"""

import base64
import hashlib
import hmac
import http.client
import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest

from sim_fixture import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}$")
ID_RE = re.compile(r"^[1-9]\d{18}$")


def api_error(r, status, code):
    assert r.status == status, r
    j = r.json()
    assert j["code"] == code, j
    assert isinstance(j["message"], str) and j["message"]
    return j


# --------------------------------------------------------------- OAuth

def test_refresh_grant_success(sim):
    s = sim()
    r = s.refresh()
    assert r.status == 200
    j = r.json()
    assert j["access_token"].startswith("1000.")
    assert j["api_domain"] == s.url
    assert j["token_type"] == "Bearer"
    assert j["expires_in"] == 3600
    assert "refresh_token" not in j  # Zoho never returns a new one on refresh
    ok = s.get("/items", token=j["access_token"], params={"per_page": 1})
    assert ok.status == 200 and ok.json()["code"] == 0


def test_token_errors_come_with_http_200(sim):
    s = sim()
    r = s.refresh(client_secret="wrong")
    assert r.status == 200 and r.json() == {"error": "invalid_client"}
    r = s.refresh(client_id="1000.OTHER")
    assert r.status == 200 and r.json() == {"error": "invalid_client"}
    r = s.refresh(refresh_token="1000.nope")
    assert r.status == 200 and r.json() == {"error": "invalid_code"}
    r = s.token_request(grant_type="password", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert r.status == 200 and "error" in r.json()


def test_grant_code_is_single_use_and_gives_a_refresh_token(sim):
    s = sim(extra_args=["--grant-code", "1000.code1"])
    form = dict(grant_type="authorization_code", client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET, code="1000.code1")
    r = s.token_request(**form)
    j = r.json()
    assert r.status == 200 and j["refresh_token"] and j["access_token"], j
    assert j["api_domain"] == s.url
    again = s.token_request(**form)
    assert again.status == 200 and again.json() == {"error": "invalid_code"}
    # the new refresh token works
    r2 = s.refresh(refresh_token=j["refresh_token"])
    assert r2.status == 200 and "access_token" in r2.json()


def test_revoked_refresh_token_fails_and_its_access_tokens_die(sim):
    s = sim(extra_args=["--refresh-token", "1000.second"])
    at = s.token(refresh_token="1000.second")
    assert s.get("/items", token=at, params={"per_page": 1}).status == 200
    r = s.request("POST", "/oauth/v2/token/revoke", params={"token": "1000.second"})
    assert r.status == 200 and r.json()["status"] == "success"
    assert s.refresh(refresh_token="1000.second").json() == {"error": "invalid_code"}
    api_error(s.get("/items", token=at), 401, 57)
    bad = s.request("POST", "/oauth/v2/token/revoke", params={"token": "1000.unknown"})
    assert bad.status == 400
    # the other refresh token is untouched
    assert s.refresh().status == 200


def test_too_many_refreshes_gives_access_denied_and_a_lockout(sim):
    s = sim(extra_args=["--refresh-limit", "3", "--refresh-window-ms", "1000",
                        "--lockout-ms", "400"])
    for _ in range(3):
        assert s.refresh().status == 200
    r = s.refresh()
    assert r.status == 400
    j = r.json()
    assert j["error"] == "Access Denied" and j["status"] == "failure"
    assert "too many requests" in j["error_description"]
    rt = [t for t in s.stats()["token"]["refresh_tokens"] if t["token"] == REFRESH_TOKEN][0]
    assert rt["locked"] and rt["access_denied"] == 1 and rt["org"] is None
    time.sleep(0.2)
    assert s.refresh().status == 400  # still locked; the try extends the lockout
    time.sleep(1.2)                    # quiet: lockout and window both over
    assert s.refresh().status == 200
    st = s.stats()["token"]
    assert st["refreshes"] == 4 and st["access_denied"] == 2


def test_live_token_cap_evicts_the_oldest(sim):
    s = sim(extra_args=["--max-live-tokens", "2"])
    t1 = s.refresh().json()["access_token"]
    t2 = s.refresh().json()["access_token"]
    t3 = s.refresh().json()["access_token"]
    api_error(s.get("/items", token=t1), 401, 57)
    assert s.get("/items", token=t2, params={"per_page": 1}).status == 200
    assert s.get("/items", token=t3, params={"per_page": 1}).status == 200


# --------------------------------------------------------------- auth

def test_auth_failures(sim):
    s = sim(orgs=["id=60001,items=10,refresh_token=1000.only60001",
                  "id=60002,items=10"], extra_args=["--token-ttl", "1"])
    api_error(s.get("/items", token=""), 401, 57)
    api_error(s.get("/items", token="1000.bogus"), 401, 57)
    api_error(s.get("/items", token="x", headers={"Authorization": "Basic abc"}), 401, 57)
    # a token of an org-bound refresh token does not open another org
    scoped = s.token(refresh_token="1000.only60001")
    assert s.get("/items", org="60001", token=scoped).status == 200
    api_error(s.get("/items", org="60002", token=scoped), 401, 57)
    # organization_id is required
    api_error(s.get("/items", org=None), 400, 2)
    api_error(s.get("/items", org="99999"), 400, 6041)
    # expiry: --token-ttl 1
    t = s.token(fresh=True)
    assert s.get("/items", token=t).status == 200
    time.sleep(1.1)
    api_error(s.get("/items", token=t), 401, 57)
    # Bearer is accepted too
    t = s.token(fresh=True)
    r = s.get("/items", token="", headers={"Authorization": f"Bearer {t}"})
    assert r.status == 200
    st = s.stats()
    assert st["orgs"]["60001"]["401"] >= 4
    assert st["orgs"]["60001"]["token_refreshes"] == 1
    assert st["orgs"]["60002"]["token_refreshes"] == 0
    bound = [t for t in st["token"]["refresh_tokens"] if t["token"] == "1000.only60001"][0]
    assert bound["org"] == "60001" and bound["refreshes"] == 1


def test_expire_tokens_control(sim):
    s = sim()
    t = s.token()
    s.expire_tokens()
    api_error(s.get("/items", token=t), 401, 57)


# --------------------------------------------------------------- paging, sorting, filters

def test_paged_walk_returns_each_record_once(sim):
    s = sim()
    truth_ids = {r["item_id"] for r in s.truth("60001", "items")["records"]}
    assert len(truth_ids) == 120
    seen, page = [], 1
    while True:
        r = s.get("/items", params={"page": page, "per_page": 7})
        assert r.status == 200
        j = r.json()
        assert j["code"] == 0 and j["message"] == "success"
        pc = j["page_context"]
        for k in ("page", "per_page", "has_more_page", "report_name", "applied_filter",
                  "custom_fields", "sort_column", "sort_order"):
            assert k in pc, pc
        assert pc["page"] == page and pc["per_page"] == 7
        seen += [x["item_id"] for x in j["items"]]
        if not pc["has_more_page"]:
            break
        assert len(j["items"]) == 7
        page += 1
    assert len(seen) == len(set(seen)) == 120
    assert set(seen) == truth_ids
    past = s.get("/items", params={"page": page + 5, "per_page": 7}).json()
    assert past["items"] == [] and past["page_context"]["has_more_page"] is False
    big = s.get("/items", params={"per_page": 500}).json()
    assert big["page_context"]["per_page"] == 200 and len(big["items"]) == 120
    api_error(s.get("/items", params={"page": "0"}), 400, 2)
    api_error(s.get("/items", params={"per_page": "x"}), 400, 2)


def test_every_entity_walks_completely(sim):
    s = sim()
    for path, ent, idf in (("/settings/warehouses", "warehouses", "warehouse_id"),
                           ("/itemgroups", "item_groups", "group_id"),
                           ("/contacts", "contacts", "contact_id"),
                           ("/salesorders", "sales_orders", "salesorder_id"),
                           ("/invoices", "invoices", "invoice_id")):
        got = [x[idf] for x in s.walk(path, per_page=9)]
        truth = [x[idf] for x in s.truth("60001", ent)["records"]]
        assert len(got) == len(set(got)) and set(got) == set(truth), path


def test_sort_columns_and_orders(sim):
    s = sim()
    for col, key in (("last_modified_time", "last_modified_time"),
                     ("created_time", "created_time"), ("name", "name")):
        a = s.walk("/items", params={"sort_column": col, "sort_order": "A"})
        d = s.walk("/items", params={"sort_column": col, "sort_order": "D"})
        assert [x["item_id"] for x in a] == [x["item_id"] for x in reversed(d)], col
        vals = [x[key] for x in a]
        if key == "name":
            assert [v.encode() for v in vals] == sorted(v.encode() for v in vals)
        else:  # same offset in one org: text order is time order
            assert vals == sorted(vals)
    r = s.get("/items", params={"sort_column": "last_modified_time", "sort_order": "D",
                                "per_page": 3}).json()
    assert r["page_context"]["sort_column"] == "last_modified_time"
    assert r["page_context"]["sort_order"] == "D"
    api_error(s.get("/items", params={"sort_column": "bogus"}), 400, 2)
    api_error(s.get("/items", params={"sort_order": "X"}), 400, 2)


def test_last_modified_time_filter_is_strictly_after(sim):
    s = sim()
    recs = s.truth("60001", "items")["records"]
    times = sorted({r["last_modified_time"] for r in recs})
    cut = times[len(times) // 2]
    want = {r["item_id"] for r in recs if r["last_modified_time"] > cut}
    got = s.walk("/items", per_page=13, params={"last_modified_time": cut,
                                               "sort_column": "last_modified_time",
                                               "sort_order": "A"})
    assert {x["item_id"] for x in got} == want
    assert all(x["last_modified_time"] > cut for x in got)
    # the same instant written in another offset selects the same records
    other = s.walk("/items", params={"last_modified_time": shift_offset(cut, "+0000")})
    assert {x["item_id"] for x in other} == want
    # the filter also works with another sort column
    by_name = s.walk("/items", per_page=11, params={"last_modified_time": cut,
                                                   "sort_column": "name"})
    assert {x["item_id"] for x in by_name} == want
    api_error(s.get("/items", params={"last_modified_time": "yesterday"}), 400, 2)
    # a mutation bumps last_modified_time past every generated time
    newest = times[-1]
    upd = s.mutate("60001", "items", update=2)["updated"]
    after = s.walk("/items", params={"last_modified_time": newest})
    assert {x["item_id"] for x in after} == set(upd)
    for x in after:
        assert TIME_RE.match(x["last_modified_time"]) and x["last_modified_time"].endswith("+0300")


def parses(t):
    from datetime import datetime
    try:
        datetime.strptime(t, "%Y-%m-%dT%H:%M:%S%z")
        return True
    except ValueError:
        return False


def shift_offset(t, target):
    """Rewrite a Zoho time (±hhmm) into another offset, same instant."""
    from datetime import datetime, timedelta, timezone
    dt = datetime.strptime(t, "%Y-%m-%dT%H:%M:%S%z")
    sign = 1 if target[0] == "+" else -1
    tz = timezone(sign * timedelta(hours=int(target[1:3]), minutes=int(target[3:5])))
    return dt.astimezone(tz).strftime("%Y-%m-%dT%H:%M:%S%z")


# --------------------------------------------------------------- limits

def test_per_minute_limit_429_code_44(sim):
    s = sim(extra_args=["--rate-per-min", "5", "--minute-ms", "1500"])
    t = s.token()
    codes = [s.get("/items", token=t, params={"per_page": 1}).status for _ in range(5)]
    assert codes == [200] * 5
    r = s.get("/items", token=t)
    api_error(r, 429, 44)
    assert "x-rate-limit-limit" in r.headers and "retry-after" not in r.headers
    # the other organization has its own window
    assert s.get("/items", org="60002", token=t, params={"per_page": 1}).status == 200
    time.sleep(1.6)
    assert s.get("/items", token=t, params={"per_page": 1}).status == 200
    assert s.stats()["orgs"]["60001"]["429"]["44"] == 1


def test_retry_after_switch(sim):
    s = sim(extra_args=["--rate-per-min", "1", "--minute-ms", "5000", "--retry-after"])
    assert s.get("/items", params={"per_page": 1}).status == 200
    r = s.get("/items")
    api_error(r, 429, 44)
    assert 1 <= int(r.headers["retry-after"]) <= 5


def test_concurrency_limit_429_code_1070(sim):
    s = sim(extra_args=["--concurrency", "2"])
    t = s.token()
    s.faults(p_slow=1.0, slow_ms=400)

    def one(_):
        return s.get("/items", token=t, params={"per_page": 1}, timeout=10).status

    with ThreadPoolExecutor(8) as ex:
        statuses = list(ex.map(one, range(8)))
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1, statuses
    s.faults(clear=True)
    r = None
    with ThreadPoolExecutor(1) as ex:
        r = ex.submit(lambda: s.get("/items", token=t, params={"per_page": 1})).result()
    assert r.status == 200
    st = s.stats()["orgs"]["60001"]
    assert st["429"]["1070"] == statuses.count(429)
    assert st["peak_concurrency"] == 2


def test_concurrency_refusal_body(sim):
    s = sim(extra_args=["--concurrency", "1"])
    t = s.token()
    s.faults(p_slow=1.0, slow_ms=500)
    with ThreadPoolExecutor(2) as ex:
        f1 = ex.submit(lambda: s.get("/items", token=t, params={"per_page": 1}))
        time.sleep(0.15)
        r2 = s.get("/items", token=t, params={"per_page": 1})
        assert f1.result().status == 200
    api_error(r2, 429, 1070)


def test_daily_quota_429_code_45_and_headers(sim):
    s = sim(extra_args=["--daily-limit", "3", "--minute-ms", "1000"])  # a day = 1440 s
    t = s.token()
    rem = []
    for _ in range(3):
        r = s.get("/items", token=t, params={"per_page": 1})
        assert r.status == 200
        assert r.headers["x-rate-limit-limit"] == "3"
        rem.append(int(r.headers["x-rate-limit-remaining"]))
        reset = int(r.headers["x-rate-limit-reset"])
        assert 0 < reset <= 1440
    assert rem == [2, 1, 0]
    r = s.get("/items", token=t)
    j = api_error(r, 429, 45)
    assert "3" in j["message"]
    assert r.headers["x-rate-limit-remaining"] == "0"
    assert s.stats()["orgs"]["60001"]["429"]["45"] == 1


def test_daily_quota_resets_with_the_day(sim):
    s = sim(extra_args=["--daily-limit", "2", "--day-ms", "1200"])
    t = s.token()
    assert [s.get("/items", token=t).status for _ in range(3)] == [200, 200, 429]
    time.sleep(1.3)
    assert s.get("/items", token=t).status == 200


def test_rate_limit_headers_on_every_api_response(sim):
    s = sim()
    t = s.token()
    replies = [s.get("/items", token=t, params={"per_page": 1}),
               s.get("/items/1", token=t),                      # 404
               s.get("/items", token=""),                       # 401
               s.get("/nonsense", token=t),                     # 404 code 5
               s.get("/items", token=t, params={"page": "-1"})]  # 400
    for r in replies:
        for h in ("x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset"):
            assert h in r.headers, (r, r.headers)
        assert r.headers["content-type"].startswith("application/json")
    a = int(replies[0].headers["x-rate-limit-remaining"])
    b = int(s.get("/items", token=t, params={"per_page": 1}).headers["x-rate-limit-remaining"])
    assert b < a


def test_limits_can_be_changed_at_run_time(sim):
    s = sim()
    t = s.token()
    s.limits(org="60001", rate_per_min=1)
    assert s.get("/items", token=t).status == 200
    api_error(s.get("/items", token=t), 429, 44)
    s.limits(org="60001", rate_per_min=0)
    assert s.get("/items", token=t).status == 200


# --------------------------------------------------------------- records

LIST_FORBIDDEN = ("line_items", "billing_address", "shipping_address", "contact_persons",
                  "custom_fields", "warehouses", "locations", "items")


def test_list_records_are_abbreviated_and_details_complete(sim):
    s = sim()
    checks = [("/items", "item", "item_id", ("custom_fields", "warehouses", "package_details")),
              ("/contacts", "contact", "contact_id",
               ("billing_address", "shipping_address", "contact_persons", "custom_fields")),
              ("/invoices", "invoice", "invoice_id", ("line_items", "custom_fields", "sub_total")),
              ("/salesorders", "salesorder", "salesorder_id", ("line_items", "custom_fields")),
              ("/itemgroups", "item_group", "group_id", ("items", "attributes"))]
    for path, key, idf, detail_only in checks:
        lst = s.get(path, params={"per_page": 5}).json()[path.strip("/")]
        assert lst
        for rec in lst:
            for k in LIST_FORBIDDEN:
                assert k not in rec, (path, k)
            assert ID_RE.match(rec[idf])
            assert TIME_RE.match(rec["created_time"]) and TIME_RE.match(rec["last_modified_time"])
        d = s.get(f"{path}/{lst[0][idf]}").json()
        assert d["code"] == 0 and d["message"] == "success"
        rec = d[key]
        for k in detail_only:
            assert k in rec, (path, k)
        # the detail record carries everything the list record does, same values
        for k, v in lst[0].items():
            assert rec[k] == v, (path, k)


def test_line_items_reference_real_items_and_sites(sim):
    s = sim()
    item_ids = {r["item_id"] for r in s.truth("60001", "items")["records"]} | \
        {r["id"] for r in s.truth("60001", "items")["deleted"]}
    wh_ids = {r["warehouse_id"] for r in s.truth("60001", "warehouses")["records"]}
    contact_ids = {r["contact_id"] for r in s.truth("60001", "contacts")["records"]}
    for ent in ("invoices", "sales_orders"):
        for doc in s.truth("60001", ent)["records"]:
            assert doc["customer_id"] in contact_ids
            assert doc["line_items"], doc
            subtotal = 0
            for li in doc["line_items"]:
                assert li["item_id"] in item_ids
                assert li["warehouse_id"] in wh_ids
                assert ID_RE.match(li["line_item_id"])
                subtotal += round(li["item_total"] * 100)
            assert subtotal == round(doc["sub_total"] * 100)


def test_item_stock_per_site_sums_to_the_totals(sim):
    s = sim()
    for org, key, p in (("60001", "warehouses", "warehouse_"), ("60002", "locations", "location_")):
        for it in s.truth(org, "items")["records"]:
            sites = it[key]
            assert sites
            for f in ("stock_on_hand", "available_stock", "actual_available_stock",
                      "committed_stock", "actual_committed_stock",
                      "available_for_sale_stock", "actual_available_for_sale_stock"):
                assert it[f] == sum(x[p + f] for x in sites), (org, f)


def test_warehouses_vs_locations(sim):
    s = sim()
    a = s.truth("60001", "items")["records"][0]["item_id"]
    b = s.truth("60002", "items")["records"][0]["item_id"]
    da = s.get(f"/items/{a}", org="60001").json()["item"]
    db_ = s.get(f"/items/{b}", org="60002").json()["item"]
    assert "warehouses" in da and "locations" not in da
    assert "locations" in db_ and "warehouses" not in db_
    assert {"warehouse_id", "warehouse_name", "warehouse_stock_on_hand",
            "warehouse_actual_available_stock"} <= set(da["warehouses"][0])
    assert {"location_id", "location_name", "location_stock_on_hand",
            "location_actual_available_for_sale_stock"} <= set(db_["locations"][0])
    locs = s.get("/locations", org="60002").json()
    assert len(locs["locations"]) == 2 and "location_id" in locs["locations"][0]
    api_error(s.get("/locations", org="60001"), 404, 5)
    whs = s.get("/settings/warehouses", org="60001").json()["warehouses"]
    assert len(whs) == 3 and sum(w["is_primary"] for w in whs) == 1


def test_item_group_detail_has_variants(sim):
    s = sim()
    g = s.truth("60001", "item_groups")["records"][0]
    d = s.get(f"/itemgroups/{g['group_id']}").json()["item_group"]
    assert d["items"] and len(d["items"]) == d["item_count"]
    names = set()
    for v in d["items"]:
        assert v["group_id"] == d["group_id"]
        assert v["attribute_name1"] == d["attribute_name1"] and v["attribute_option_name1"]
        names.add((v["attribute_option_name1"], v["attribute_option_name2"]))
        item = s.get(f"/items/{v['item_id']}").json()["item"]
        assert item["group_id"] == d["group_id"]
    assert len(names) == len(d["items"])  # each variant a distinct option combination
    api_error(s.get("/itemgroups", org="60002", product="books"), 404, 5)


def test_contact_detail_has_addresses_and_persons(sim):
    s = sim()
    c = s.truth("60001", "contacts")["records"][0]
    d = s.get(f"/contacts/{c['contact_id']}").json()["contact"]
    for k in ("address", "city", "zip", "country"):
        assert k in d["billing_address"] and k in d["shipping_address"]
    assert d["contact_persons"] and sum(p["is_primary_contact"] for p in d["contact_persons"]) == 1
    assert all(ID_RE.match(p["contact_person_id"]) for p in d["contact_persons"])


def test_unknown_id_is_404_code_1002(sim):
    s = sim()
    j = api_error(s.get("/items/1010000000000000000"), 404, 1002)
    assert j["message"] == "Item does not exist."
    api_error(s.get("/invoices/abc"), 404, 1002)
    api_error(s.get("/contacts/99999999999999999999999"), 404, 1002)


def test_itemdetails_batch(sim):
    s = sim()
    ids = [r["item_id"] for r in s.truth("60002", "items")["records"][:3]]
    r = s.get("/itemdetails", org="60002", product="books",
              params={"item_ids": ",".join(ids)}).json()
    assert [x["item_id"] for x in r["items"]] == ids
    assert all("locations" in x and "custom_fields" in x for x in r["items"])
    api_error(s.get("/itemdetails", org="60002", product="books"), 400, 2)
    api_error(s.get("/itemdetails", org="60001", product="books"), 400, 6041)  # inventory-only org
    # Inventory too, with the same detail records as GET /items/{id}
    ids = [r["item_id"] for r in s.truth("60001", "items")["records"][:2]]
    r = s.get("/itemdetails", org="60001", params={"item_ids": ",".join(ids) + ",1"}).json()
    assert [x["item_id"] for x in r["items"]] == ids   # the unknown id is left out
    one = s.get(f"/items/{ids[0]}", org="60001").json()["item"]
    assert r["items"][0] == one and "warehouses" in one


def test_itemdetails_no_answers_like_an_unknown_path(sim):
    s = sim(orgs=["id=60001,itemdetails=no,items=5", "id=60002,itemdetails=yes,items=5"])
    ids = [r["item_id"] for r in s.truth("60001", "items")["records"][:2]]
    api_error(s.get("/itemdetails", org="60001", params={"item_ids": ",".join(ids)}), 404, 5)
    assert s.stats()["orgs"]["60001"]["endpoints"]["other"] == 1
    ids = [r["item_id"] for r in s.truth("60002", "items")["records"][:2]]
    assert len(s.get("/itemdetails", org="60002", params={"item_ids": ",".join(ids)})
               .json()["items"]) == 2


def test_data_has_zoho_quirks(sim):
    s = sim()
    text = json.dumps([s.truth("60001", e)["records"] for e in
                       ("items", "contacts", "invoices")], ensure_ascii=False)
    assert re.search("[\u0600-\u06ff]", text)        # Arabic
    assert re.search("[\U0001F300-\U0001FAFF]", text)  # emoji
    items = s.truth("60001", "items")["records"]
    names = [i["name"] for i in items]
    assert any('"' in n for n in names) and any("\\" in n for n in names)
    assert any("\n" in n for n in names)
    blanks = [i for i in items if i["reorder_level"] in ("", " ") or i["purchase_rate"] in ("", " ")]
    assert blanks
    cf = items[0]["custom_fields"]
    assert cf and {"customfield_id", "label", "value", "api_name"} <= set(cf[0])
    invs = s.truth("60001", "invoices")["records"]
    assert all(ID_RE.match(i["invoice_id"]) for i in invs)
    assert all(re.match(r"^\d{4}-\d\d-\d\d$", i["date"]) for i in invs)
    assert all(i["created_time"].endswith("+0300") for i in invs)
    assert all(i["created_time"].endswith("+0530") for i in s.truth("60002", "invoices")["records"])


def test_data_is_deterministic_from_the_seed(sim):
    a, b, c = sim(seed=7), sim(seed=7), sim(seed=8)
    ta, tb, tc = (x.truth("60001", "invoices") for x in (a, b, c))
    assert ta == tb
    assert ta["records"] != tc["records"]


# --------------------------------------------------------------- truth and mutations

def test_truth_matches_the_api_and_tracks_mutations(sim):
    s = sim()
    t = s.truth("60001", "contacts")
    assert t["count"] == 40 and t["deleted"] == [] and t["id_field"] == "contact_id"
    for rec in t["records"][:5]:
        assert s.get(f"/contacts/{rec['contact_id']}").json()["contact"] == rec
    m = s.mutate("60001", "contacts", update=3, create=2, delete=1)
    assert len(m["updated"]) == 3 and len(m["created"]) == 2 and len(m["deleted"]) == 1
    t2 = s.truth("60001", "contacts")
    assert t2["count"] == 41
    live = {r["contact_id"]: r for r in t2["records"]}
    assert set(m["created"]) <= set(live)
    assert m["deleted"][0] not in live
    assert [d["id"] for d in t2["deleted"]] == m["deleted"]
    api_error(s.get(f"/contacts/{m['deleted'][0]}"), 404, 1002)
    old = {r["contact_id"]: r for r in t["records"]}
    for i in m["updated"]:
        if i in live:
            assert live[i]["last_modified_time"] > old[i]["last_modified_time"]
            assert live[i] != old[i]
    # list walk agrees with the truth after mutations
    assert {x["contact_id"] for x in s.walk("/contacts", per_page=9)} == set(live)
    list_form = s.truth("60001", "contacts", form="list")["records"]
    assert all("contact_persons" not in r for r in list_form)


def test_truth_paging_and_errors(sim):
    s = sim()
    part = s.truth("60001", "items", offset=10, limit=5)
    full = s.truth("60001", "items")
    assert part["records"] == full["records"][10:15]
    assert s.request("GET", "/_sim/truth/nope/items").status == 404
    assert s.request("GET", "/_sim/truth/60001/nope").status == 404


def test_mutating_a_variant_bumps_its_group(sim):
    s = sim(orgs=["id=60001,items=12,groups=6,contacts=1,invoices=0,salesorders=0"])
    groups = {g["group_id"]: g for g in s.truth("60001", "item_groups")["records"]}
    upd = s.mutate("60001", "items", update=5)["updated"]
    items = {i["item_id"]: i for i in s.truth("60001", "items")["records"]}
    after = {g["group_id"]: g for g in s.truth("60001", "item_groups")["records"]}
    for iid in upd:
        gid = items[iid]["group_id"]
        if gid:
            assert after[gid]["last_modified_time"] > groups[gid]["last_modified_time"]
            variant = [v for v in after[gid]["items"] if v["item_id"] == iid][0]
            assert variant["last_modified_time"] == items[iid]["last_modified_time"]


def test_invalid_records_for_bad_input_tests(sim):
    s = sim()
    out = s.invalid("60001", "items", n=4)["created"]
    kinds = [x["kind"] for x in out]
    assert kinds == ["bad_id", "bad_number", "bad_date", "bad_modified"]
    recs = s.walk("/items")
    by_kind = {}
    for x in out:
        by_kind[x["kind"]] = [r for r in recs if r["item_id"] == x["id"]][0]
    assert not ID_RE.match(by_kind["bad_id"]["item_id"])
    assert by_kind["bad_number"]["rate"] == "12,34abc"
    assert not parses(by_kind["bad_date"]["created_time"])
    assert not parses(by_kind["bad_modified"]["last_modified_time"])
    assert parses(by_kind["bad_number"]["created_time"])
    t = s.truth("60001", "items")
    assert sorted(x["kind"] for x in t["invalid"]) == sorted(kinds)
    assert s.request("POST", "/_sim/invalid",
                     body={"org": "60001", "entity": "items", "kind": "nope"}).status == 400


def test_control_api_rejects_bad_requests(sim):
    s = sim()
    assert s.request("POST", "/_sim/mutate", body="{not json").status == 400
    assert s.request("POST", "/_sim/mutate", body={"org": "1", "entity": "items"}).status == 400
    assert s.request("POST", "/_sim/mutate",
                     body={"org": "60001", "entity": "warehouses", "delete": 1}).status == 400
    assert s.request("POST", "/_sim/webhooks", body={"org": "60001", "url": "ftp://x"}).status == 400
    assert s.request("GET", "/_sim/nope").status == 404
    assert s.mutate("60001", "warehouses", update=1)["updated"]


# --------------------------------------------------------------- webhooks

class Receiver:
    """A webhook receiver on a free port that verifies Zoho's signature."""

    def __init__(self, secret, fail_first=0):
        self.secret = secret.encode()
        self.got = []
        self.bad = []
        self.fail_left = fail_first
        self.lock = threading.Lock()
        rcv = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                q = parse_qsl(urlsplit(self.path).query, keep_blank_values=True)
                signed = "".join(k + v for k, v in sorted(q)).encode() + raw
                want = hmac.new(rcv.secret, signed, hashlib.sha256).hexdigest()
                sig = self.headers.get("X-Zoho-Webhook-Signature", "")
                with rcv.lock:
                    fail = rcv.fail_left > 0
                    if fail:
                        rcv.fail_left -= 1
                    if not hmac.compare_digest(sig.lower(), want):
                        rcv.bad.append((sig, raw))
                    elif not fail:
                        rcv.got.append((dict(q), json.loads(raw), raw,
                                        self.headers.get("Content-Type")))
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/zoho/hook"
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(secret="s3cretS3cret", fail_first=0):
        r = Receiver(secret, fail_first)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def test_mutations_post_signed_webhooks(sim, receiver, wait_until):
    s = sim()
    rc = receiver()
    s.webhooks("60001", rc.url + "?source=zoho", secret="s3cretS3cret",
               query={"org": "60001"})
    m = s.mutate("60001", "contacts", update=2, create=1, delete=1)
    wait_until(lambda: len(rc.got) >= 4, 10, "4 webhooks")
    assert rc.bad == []
    events = {}
    for q, body, raw, ctype in rc.got:
        assert ctype == "application/json"
        assert q["org"] == "60001" and q["source"] == "zoho"
        assert list(body) == ["contact"]
        events.setdefault(q["event"], []).append(body["contact"])
    assert {c["contact_id"] for c in events["updated"]} == set(m["updated"])
    assert [c["contact_id"] for c in events["created"]] == m["created"]
    assert events["deleted"] == [{"contact_id": m["deleted"][0]}]
    # updated payloads are full detail records, equal to what the API shows now
    for c in events["updated"]:
        if c["contact_id"] not in m["deleted"]:
            assert c == s.get(f"/contacts/{c['contact_id']}").json()["contact"]
            assert "contact_persons" in c
    st = s.stats()["orgs"]["60001"]["webhooks"]
    assert st["delivered"] == 4 and st["pending"] == 0


def test_webhook_signature_in_base64_on_request(sim, receiver, wait_until):
    s = sim()
    rc = receiver()
    s.webhooks("60001", rc.url, secret="s3cretS3cret", encoding="base64")
    s.mutate("60001", "items", update=2)
    wait_until(lambda: len(rc.bad) >= 2, 10, "2 webhooks")
    for sig, raw in rc.bad:  # not hex: the receiver files them as bad
        want = hmac.new(b"s3cretS3cret", b"eventupdated" + raw, hashlib.sha256).digest()
        assert sig == base64.b64encode(want).decode()
    r = s.request("POST", "/_sim/webhooks", body={"org": "60001", "url": rc.url,
                                                  "encoding": "base32"})
    assert r.status == 400 and b"hex or base64" in r.body


def test_webhook_signature_detects_a_wrong_secret(sim, receiver, wait_until):
    s = sim()
    rc = receiver(secret="theRightSecret1")
    s.webhooks("60001", rc.url, secret="aWrongSecret22")
    s.mutate("60001", "items", update=1)
    wait_until(lambda: len(rc.bad) >= 1, 10, "a webhook")
    assert rc.got == []


def test_webhook_retries_per_policy(sim, receiver, wait_until):
    s = sim()
    rc = receiver(fail_first=2)
    s.webhooks("60001", rc.url, secret="s3cretS3cret", retries=3, retry_delay_ms=50)
    m = s.mutate("60001", "contacts", update=1)
    wait_until(lambda: len(rc.got) == 1, 10, "a retried webhook")
    assert rc.got[0][1]["contact"]["contact_id"] == m["updated"][0]
    st = s.stats()["orgs"]["60001"]["webhooks"]
    assert st["attempts"] == 3 and st["failed_attempts"] == 2 and st["delivered"] == 1
    # no retries: one failure and it is given up
    rc2 = receiver(fail_first=1)
    s.webhooks("60001", rc2.url, secret="s3cretS3cret", retries=0)
    s.mutate("60001", "contacts", update=1)
    wait_until(lambda: s.stats()["orgs"]["60001"]["webhooks"]["given_up"] == 1, 10, "give up")
    assert rc2.got == []


def test_webhooks_to_a_dead_receiver_do_not_block_the_api(sim):
    s = sim()
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        dead = sk.getsockname()[1]
    s.webhooks("60001", f"http://127.0.0.1:{dead}/x", secret="s3cretS3cret", retries=1,
               retry_delay_ms=100)
    t0 = time.monotonic()
    s.mutate("60001", "items", update=20)
    assert s.get("/items", params={"per_page": 1}).status == 200
    assert time.monotonic() - t0 < 2.0


def test_mutation_stream_delivers_webhooks_at_a_rate(sim, receiver, wait_until):
    s = sim()
    rc = receiver()
    s.webhooks("60001", rc.url, secret="s3cretS3cret")
    s.stream("60001", rate_per_s=40, seconds=1.0, entities=["items", "contacts"])
    wait_until(lambda: s.stats()["orgs"]["60001"]["stream_mutations"] >= 40, 10, "stream")
    time.sleep(0.3)
    n = s.stats()["orgs"]["60001"]["stream_mutations"]
    assert n == 40
    wait_until(lambda: s.stats()["orgs"]["60001"]["webhooks"]["pending"] == 0, 10, "drain")
    assert rc.bad == []
    keys = {list(b)[0] for _, b, _, _ in rc.got}
    assert keys <= {"item", "contact", "item_group"} and "item" in keys
    assert len(rc.got) >= n


def test_a_stream_stopped_mid_mutation_stops_and_keeps_its_ops(sim):
    """A stream of updates stopped while its thread is mutating makes no
    further change, and never a create or a delete: the stop resets the
    stream's count, and the running loop used to read that as many mutations
    still owed, made in the stop's (mixed) ops."""
    s = sim()
    before = s.truth("60001", "items")
    for _ in range(150):  # a stop lands mid-burst a few times in 150
        s.stream("60001", rate_per_s=100000, seconds=60, entities=["items"], ops="update")
        time.sleep(0.005)
        s.stream("60001", 0, 0)
    time.sleep(0.05)  # a mutation under way at the stop may still finish
    n = s.stats()["orgs"]["60001"]["stream_mutations"]
    time.sleep(0.1)
    assert s.stats()["orgs"]["60001"]["stream_mutations"] == n
    after = s.truth("60001", "items")
    assert after["count"] == before["count"] and after["deleted"] == before["deleted"]
    assert {r["item_id"] for r in after["records"]} == {r["item_id"] for r in before["records"]}


# --------------------------------------------------------------- faults

def test_fault_injection(sim):
    s = sim()
    t = s.token()
    s.faults(p500=1.0)
    api_error(s.get("/items", token=t), 500, 1000)
    s.faults(clear=True, p502=1.0)
    r = s.get("/items", token=t)
    assert r.status == 502 and r.headers["content-type"].startswith("text/html")
    s.faults(clear=True, p503=1.0)
    assert s.get("/items", token=t).status == 503
    s.faults(clear=True, p_expired_token_200=1.0)
    api_error(s.get("/items", token=t), 200, 57)
    s.faults(clear=True, p_truncate=1.0)
    with pytest.raises(http.client.IncompleteRead):
        s.get("/items", token=t)
    s.faults(clear=True, p_reset=1.0)
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        s.get("/items", token=t)
    s.faults(clear=True, p_slow=1.0, slow_ms=300)
    t0 = time.monotonic()
    assert s.get("/items", token=t, params={"per_page": 1}).status == 200
    assert time.monotonic() - t0 >= 0.3
    s.faults(clear=True)
    assert s.get("/items", token=t, params={"per_page": 1}).status == 200
    assert s.stats()["orgs"]["60001"]["faults"] == 7


def test_fault_probabilities_are_partial(sim):
    s = sim(extra_args=["--limits-off"])
    t = s.token()
    s.faults(p500=0.3)
    statuses = [s.get("/items", token=t, params={"per_page": 1}).status for _ in range(200)]
    n = statuses.count(500)
    assert 25 <= n <= 100 and statuses.count(200) == 200 - n


def test_token_endpoint_hang(sim):
    s = sim()
    s.faults(token_hang_ms=3000)
    with pytest.raises((socket.timeout, TimeoutError)):
        s.token_request(timeout=0.5, grant_type="refresh_token", client_id=CLIENT_ID,
                        client_secret=CLIENT_SECRET, refresh_token=REFRESH_TOKEN)
    s.faults(token_hang_ms=0)
    assert s.refresh().status == 200


# --------------------------------------------------------------- robustness, stats, lifecycle

def test_bad_requests_get_zoho_errors_never_a_crash(sim):
    s = sim()
    t = s.token()
    api_error(s.get("/nope", token=t), 404, 5)
    api_error(s.get("/items/1/2", token=t), 404, 5)
    r = s.request("POST", "/inventory/v1/items", params={"organization_id": "60001"},
                  headers={"Authorization": f"Zoho-oauthtoken {t}"}, body="{}")
    api_error(r, 405, 37)
    api_error(s.request("GET", "/whatever"), 404, 5)
    assert s.request("GET", "/oauth/v2/token").status == 405
    big = "x" * (2 * 1024 * 1024)
    assert s.request("POST", "/_sim/mutate", body=big).status == 413
    weird = s.get("/items", token=t, params={"last_modified_time": "2024-01-01T00:00:00+99",
                                             "page": "99999999999999999999"})
    assert weird.status == 400
    assert s.get("/items", token=t, params={"per_page": 1}).status == 200
    assert s.proc.alive()


def test_stats_count_requests_by_endpoint(sim):
    s = sim(extra_args=["--limits-off"])
    s.reset_stats()
    s.token(fresh=True)
    s.get("/items", params={"per_page": 1})
    s.get("/items", params={"per_page": 1})
    iid = s.truth("60001", "items")["records"][0]["item_id"]
    s.get(f"/items/{iid}")
    s.get("/contacts", org="60002", product="books")
    st = s.stats()
    assert st["token"]["refreshes"] == 1
    o1 = st["orgs"]["60001"]
    assert o1["endpoints"]["items.list"] == 2 and o1["endpoints"]["items.detail"] == 1
    assert o1["requests"] == 3
    assert st["orgs"]["60002"]["endpoints"]["contacts.list"] == 1
    assert st["totals"]["requests"] == st["api_requests"] == 4
    assert o1["peak_concurrency"] >= 1
    s.reset_stats()
    assert s.stats()["orgs"]["60001"]["requests"] == 0


def test_organizations_endpoint(sim):
    s = sim()
    j = s.get("/organizations", org=None).json()
    assert [o["organization_id"] for o in j["organizations"]] == ["60001", "60002"]
    j = s.get("/organizations", org=None, product="books").json()
    assert [o["organization_id"] for o in j["organizations"]] == ["60002"]


def test_bad_command_line_exits_2(procs):
    for args in (["--org", "id=1,items=x"], ["--rate-per-min", "-1"], ["--listen", "nohost"],
                 ["--bogus"]):
        r = procs.run("tds-zohosim", args, check=False)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("tds-zohosim: invalid"), r.stderr
    r = procs.run("tds-zohosim", ["--help"])
    for opt in ("--listen", "--org", "--rate-per-min", "--minute-ms", "--refresh-limit",
                "--lockout-ms", "--grant-code", "--daily-limit", "--concurrency"):
        assert opt in r.stdout


def test_sigterm_exits_0_with_connections_open(sim):
    s = sim()
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
    conn.request("GET", "/_sim/health")
    assert conn.getresponse().read()
    s.proc.stop()   # asserts exit 0 within 10 s
    conn.close()


def test_large_org_generates_and_serves(sim):
    s = sim(orgs=["id=70001,items=200000,groups=5000,contacts=20000,invoices=20000,"
                  "salesorders=20000"], extra_args=["--limits-off"], timeout=120)
    t = s.token()
    r = s.get("/items", org="70001", token=t,
              params={"page": 500, "per_page": 200, "sort_column": "last_modified_time"})
    j = r.json()
    assert len(j["items"]) == 200 and j["page_context"]["has_more_page"] is True
    assert s.ctl("GET", "orgs")["orgs"][0]["counts"]["items"] == 200000


def test_sorted_walks_stay_right_across_mutations(sim):
    """Mutations update the sorted views in place; every order must still be
    exactly the order of the data (ties broken by id)."""
    from datetime import datetime
    s = sim(orgs=["id=60001,items=300,groups=30,contacts=50,invoices=10,salesorders=10"])

    def key(col):
        if col == "name":
            return lambda r: (r["name"].encode(), int(r["item_id"]))
        return lambda r: (datetime.strptime(r[col], "%Y-%m-%dT%H:%M:%S%z"), int(r["item_id"]))

    cols = ("name", "last_modified_time", "created_time")
    for round_ in range(3):
        for col in cols:  # builds (round 0) or reuses the views
            got = [x["item_id"] for x in s.walk("/items", per_page=37,
                                                params={"sort_column": col})]
            want = [r["item_id"] for r in sorted(s.truth("60001", "items")["records"],
                                                 key=key(col))]
            assert got == want, (round_, col)
        s.mutate("60001", "items", update=150, create=7, delete=6)
        s.mutate("60001", "item_groups", update=3, delete=2)
    # some updates renamed records (every 4th version), so names moved too
    assert any("(rev " in r["name"] for r in s.truth("60001", "items")["records"])


def test_bare_ids_mode(sim):
    s = sim(orgs=["id=60001,items=20,ids=bare", "id=60002,items=5"])
    lst = s.get("/items", params={"per_page": 3}).json()["items"]
    assert all(isinstance(x["item_id"], int) and len(str(x["item_id"])) == 19 for x in lst)
    raw = s.get("/items", params={"per_page": 1}).body.decode()
    assert re.search(r'"item_id":\d{19}[,}]', raw)
    d = s.get(f"/items/{lst[0]['item_id']}").json()["item"]
    assert d["item_id"] == lst[0]["item_id"] and isinstance(d["warehouses"][0]["warehouse_id"], int)
    other = s.get("/items", org="60002", params={"per_page": 1}).json()["items"][0]
    assert isinstance(other["item_id"], str)


def test_sigterm_does_not_wait_for_a_hanging_webhook_receiver(sim):
    s = sim()
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(4)  # accepts, never answers
        s.webhooks("60001", f"http://127.0.0.1:{lst.getsockname()[1]}/h", secret="s3cretS3cret",
                   timeout_ms=60000)
        s.mutate("60001", "contacts", update=1)
        time.sleep(0.5)
        t0 = time.monotonic()
        s.proc.stop()
        assert time.monotonic() - t0 < 3.0


def test_modified_filter_ge_switch(sim):
    s = sim(extra_args=["--modified-filter", "ge"])
    recs = s.truth("60001", "items")["records"]
    cut = sorted(r["last_modified_time"] for r in recs)[len(recs) // 2]
    got = {x["item_id"] for x in s.walk("/items", params={"last_modified_time": cut})}
    assert got == {r["item_id"] for r in recs if r["last_modified_time"] >= cut}
    assert any(r["last_modified_time"] == cut for r in recs if r["item_id"] in got)


def test_localized_access_denied(sim):
    s = sim(extra_args=["--refresh-limit", "1", "--localized-denied"])
    assert s.refresh().status == 200
    r = s.refresh()
    assert r.status == 400 and r.json()["error"] == "拒绝访问"


def test_one_mutate_request_touches_distinct_records(sim):
    s = sim(orgs=["id=60001,items=10,groups=0,contacts=12,invoices=1,salesorders=1"])
    m = s.mutate("60001", "contacts", update=8, create=2, delete=4)
    assert len(set(m["updated"])) == 8 and len(m["created"]) == 2 and len(set(m["deleted"])) == 4
    assert not (set(m["updated"]) & set(m["deleted"]))
    assert not (set(m["created"]) & set(m["deleted"]))
    m = s.mutate("60001", "items", update=50)
    assert len(m["updated"]) == len(set(m["updated"])) == 10
