#!/usr/bin/python3
"""Generate the bench's organizations file and a file of signed webhook requests.

Writes <out>/orgs.json (N organizations, each with its own webhook secret) and
<out>/requests.txt, one request per line: path, signature, body (tab-separated),
~1 KB JSON bodies over the organizations x entities combinations, each body
distinct (its own record id and modified time).
"""
import hashlib
import hmac
import json
import os
import random
import sys

ENTITIES = [("item", "item_id"), ("contact", "contact_id"),
            ("invoice", "invoice_id"), ("salesorder", "salesorder_id")]


def main():
    out = sys.argv[1]
    n_orgs = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    n_req = int(sys.argv[3]) if len(sys.argv) > 3 else 8000
    os.makedirs(out, exist_ok=True)
    rnd = random.Random(7)
    orgs = []
    for i in range(n_orgs):
        orgs.append({"org_id": "70%08d" % i, "name": "bench %d" % i, "product": "inventory",
                     "data_center": "com", "client_id": "x", "client_secret": "y",
                     "refresh_token": "z", "webhook_secrets": ["benchsecret%04d" % i]})
    with open(os.path.join(out, "orgs.json"), "w") as f:
        json.dump({"organizations": orgs}, f)
    with open(os.path.join(out, "requests.txt"), "w") as f:
        for k in range(n_req):
            org = orgs[k % n_orgs]
            key, idf = ENTITIES[(k // n_orgs) % len(ENTITIES)]
            rec = {idf: str(4600000000000000000 + k), "name": "Bench record %d \u0639\u0631\u0628\u064a" % k,
                   "last_modified_time": "2026-01-05T10:%02d:%02d+0300" % (k // 60 % 60, k % 60),
                   "status": "active", "rate": round(rnd.uniform(1, 999), 2),
                   "description": "x" * 700}
            body = json.dumps({key: rec}, ensure_ascii=False, separators=(",", ":"))
            sig = hmac.new(org["webhook_secrets"][0].encode(), body.encode(), hashlib.sha256).hexdigest()
            f.write("/webhooks/zoho/%s\t%s\t%s\n" % (org["org_id"], sig, body))


if __name__ == "__main__":
    main()
