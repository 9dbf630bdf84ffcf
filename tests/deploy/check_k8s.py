#!/usr/bin/python3
"""check_k8s — render every kustomize overlay and check what a cluster would get.

Renders deploy/k8s/overlays/<name> with `kubectl kustomize` (the kustomize in
Debian 12's kubectl 1.20 and later), parses the YAML and checks, per overlay:
replica counts; the ingress StatefulSet and its journal claim; probes on
/healthz and /readyz at the admin port; scrape annotations; resources;
securityContext; terminationGracePeriodSeconds above the drain time; the
headless Services every connect endpoint points at (listing ready replicas
only); the webhook Service and Ingress (with an IngressClass);
PodDisruptionBudgets; the migration Job; that the NetworkPolicies let exactly
the pipeline's links through; that secrets are file references into mounted
Secrets; that ingress, fetcher and writer get the organizations file; that
every name deploy/prometheus/prometheus-k8s.yml scrapes is a headless Service
that lists not-ready replicas too (publishNotReadyAddresses), selects its
stage's pods and reaches their admin port; and — when the stage binaries are
built (TDS_BUILD_DIR) —
that every variable a container sets is one its stage knows, every required
one is set, and the stage accepts the values.

Usage: check_k8s.py [--overlay NAME]... [--no-env] [--kubectl PATH] [--k8s-dir DIR]
                    [--prometheus-config FILE]
Never talks to a cluster.
"""

import argparse
import base64
import json
import os
import posixpath
import re
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

K8S = os.path.join(dl.DEPLOY, "k8s")
PROM_K8S = os.path.join(dl.DEPLOY, "prometheus", "prometheus-k8s.yml")
EXPECTED_REPLICAS = {
    "dev": {"ingress": 1, "fetcher": 1, "processor": 1, "writer": 1},
    "prod": {"ingress": 2, "fetcher": 2, "processor": 3, "writer": 2},
}
WORKLOADS = ("Deployment", "StatefulSet", "Job", "DaemonSet")


def render(kubectl, overlay, k8s_dir=K8S):
    path = os.path.join(k8s_dir, "overlays", overlay)
    r = subprocess.run([kubectl, "kustomize", path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed: {r.stderr.strip()}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def quantity(q):
    """Kubernetes quantity → float (cpu cores or bytes)."""
    s = str(q)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    m = re.match(r"^([0-9.]+)([A-Za-z]*)$", s)
    if not m or (m.group(2) and m.group(2) not in units):
        raise ValueError(f"bad quantity {q!r}")
    return float(m.group(1)) * units.get(m.group(2), 1)


def subset(sel, labels):
    return all(labels.get(k) == v for k, v in (sel or {}).items())


class Render:
    def __init__(self, overlay, docs):
        self.overlay = overlay
        self.docs = docs
        self.by_kind = {}
        for d in docs:
            self.by_kind.setdefault(d["kind"], []).append(d)

    def get(self, kind, name):
        for d in self.by_kind.get(kind, []):
            if d["metadata"]["name"] == name:
                return d
        return None

    def all(self, kind):
        return self.by_kind.get(kind, [])


class Container:
    """One container of a workload, with its environment resolved."""

    def __init__(self, rnd, rep, wl, pod, c):
        self.wl = wl
        self.pod = pod
        self.c = c
        self.kind = wl["kind"]
        self.name = f"{rnd.overlay}:{wl['kind']}/{wl['metadata']['name']}/{c['name']}"
        self.stage = dl.stage_of_image(c.get("image", ""))
        self.labels = pod.get("metadata", {}).get("labels", {}) or {}
        self.ns = wl["metadata"].get("namespace")
        self.env = {}
        for cmref in c.get("envFrom", []) or []:
            if "configMapRef" in cmref:
                cm = rnd.get("ConfigMap", cmref["configMapRef"]["name"])
                if rep.check(cm is not None, self.name,
                             f"envFrom ConfigMap {cmref['configMapRef']['name']} is not in the render"):
                    for k, v in (cm.get("data") or {}).items():
                        self.env[cmref.get("prefix", "") + k] = v
            elif "secretRef" in cmref:
                rep.fail(self.name, "envFrom secretRef hides which variables are set; "
                                    "mount the Secret and use file: references")
        for e in c.get("env", []) or []:
            self.env[e["name"]] = e.get("value") if "valueFrom" not in e else None

    def port(self, name_or_number):
        for p in self.c.get("ports", []) or []:
            if name_or_number in (p.get("name"), p.get("containerPort")):
                return p.get("containerPort")
        return None

    def mount_for(self, path):
        """(volume, relative path) for a file path inside this container."""
        best = None
        for m in self.c.get("volumeMounts", []) or []:
            mp = m["mountPath"].rstrip("/")
            if path == mp or path.startswith(mp + "/"):
                if best is None or len(mp) > len(best[0]):
                    best = (mp, m)
        if best is None:
            return None, None
        mp, m = best
        vols = {v["name"]: v for v in self.pod["spec"].get("volumes", []) or []}
        vol = vols.get(m["name"])
        rel = posixpath.relpath(path, mp) if path != mp else ""
        if m.get("subPath"):
            rel = posixpath.join(m["subPath"], rel) if rel else m["subPath"]
        return vol, rel


def projected_keys(vol_src):
    items = vol_src.get("items")
    if items:
        return {i["path"]: i["key"] for i in items}
    return None


def make_file_resolver(rnd, ct):
    def resolve(path):
        vol, rel = ct.mount_for(path)
        if vol is None:
            return f"{path} is not on any mounted volume"
        if "secret" in vol:
            src = vol["secret"]
            keys = projected_keys(src)
            if keys is not None and rel not in keys:
                return f"{path}: Secret volume {src['secretName']} does not project {rel!r}"
            sec = rnd.get("Secret", src["secretName"])
            if sec is not None:
                key = keys[rel] if keys else rel
                data = dict(sec.get("data") or {})
                data.update(sec.get("stringData") or {})
                if key not in data:
                    return f"{path}: Secret {src['secretName']} has no key {key!r}"
            return None
        return f"{path} is on volume {vol['name']}, which is not a Secret"
    return resolve


def check_pod_security(rep, where, pod_spec, c, stage_container):
    psc = pod_spec.get("securityContext", {}) or {}
    csc = c.get("securityContext", {}) or {}
    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    rep.check(non_root is True, where, "runAsNonRoot is not true")
    rep.check(uid is None or uid != 0, where, "runs as uid 0")
    rep.check(csc.get("allowPrivilegeEscalation") is False, where,
              "allowPrivilegeEscalation is not false")
    rep.check(csc.get("readOnlyRootFilesystem") is True, where, "readOnlyRootFilesystem is not true")
    rep.check("ALL" in ((csc.get("capabilities") or {}).get("drop") or []), where,
              "capabilities are not dropped (drop: [ALL])")
    rep.check(not csc.get("privileged"), where, "privileged")
    if stage_container:
        seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        rep.check(seccomp in ("RuntimeDefault", "Localhost"), where, "no seccompProfile RuntimeDefault")


def check_resources(rep, where, c):
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            rep.check(r in (res.get(part) or {}), where, f"resources.{part}.{r} is not set")
    try:
        for r in ("cpu", "memory"):
            req = (res.get("requests") or {}).get(r)
            lim = (res.get("limits") or {}).get(r)
            if req is not None and lim is not None:
                rep.check(quantity(req) <= quantity(lim), where,
                          f"resources.requests.{r} {req} exceeds the limit {lim}")
    except ValueError as e:
        rep.fail(where, str(e))


# ----------------------------------------------------------------- NetworkPolicy

def policy_types(p):
    spec = p["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def peer_matches(peers, who, policy_ns):
    """who: dict(ns, nslabels, labels, external)."""
    if not peers:
        return True
    for peer in peers:
        if "ipBlock" in peer:
            if who["external"]:
                return True
            continue
        if who["external"]:
            continue
        nssel = peer.get("namespaceSelector")
        if nssel is not None:
            if nssel.get("matchExpressions"):
                continue
            if not subset(nssel.get("matchLabels"), who["nslabels"]):
                continue
        elif who["ns"] != policy_ns:
            continue
        psel = peer.get("podSelector")
        if psel is not None:
            if psel.get("matchExpressions"):
                continue
            if not subset(psel.get("matchLabels"), who["labels"]):
                continue
        return True
    return False


def port_matches(ports, port, proto="TCP"):
    if not ports:
        return True
    return any(p.get("port") in (None, port) and p.get("protocol", "TCP") == proto for p in ports)


def traffic_allowed(rnd, src, dst, port):
    """Would the policies in this render let src reach dst:port? src/dst are
    `who` dicts; only pods (not external) are subject to this render's
    policies."""
    pols = rnd.all("NetworkPolicy")

    def selecting(who, kind):
        return [p for p in pols if not who["external"]
                and p["metadata"].get("namespace") == who["ns"]
                and not (p["spec"].get("podSelector") or {}).get("matchExpressions")
                and subset((p["spec"].get("podSelector") or {}).get("matchLabels"), who["labels"])
                and kind in policy_types(p)]

    eg = selecting(src, "Egress")
    eg_ok = not eg or any(
        peer_matches(rule.get("to"), dst, p["metadata"].get("namespace"))
        and port_matches(rule.get("ports"), port)
        for p in eg for rule in (p["spec"].get("egress") or []))
    ing = selecting(dst, "Ingress")
    in_ok = not ing or any(
        peer_matches(rule.get("from"), src, p["metadata"].get("namespace"))
        and port_matches(rule.get("ports"), port)
        for p in ing for rule in (p["spec"].get("ingress") or []))
    return eg_ok and in_ok


# ----------------------------------------------------------------- the checks

def check_overlay(rep, rnd, with_env):
    ov = rnd.overlay
    containers = []
    for kind in WORKLOADS:
        for wl in rnd.all(kind):
            pod = wl["spec"]["template"]
            for c in (pod["spec"].get("initContainers") or []) + pod["spec"]["containers"]:
                containers.append(Container(rnd, rep, wl, pod, c))
    stage_cts = [c for c in containers if c.stage]
    rep.check(stage_cts, ov, "no containers of the tds-zoho-sync images")

    # Every pod: security, resources, grace period.
    for ct in containers:
        check_pod_security(rep, ct.name, ct.pod["spec"], ct.c, bool(ct.stage))
        check_resources(rep, ct.name, ct.c)
        grace = ct.pod["spec"].get("terminationGracePeriodSeconds", 30)
        rep.check(grace > dl.DRAIN_S, ct.name,
                  f"terminationGracePeriodSeconds {grace} is not above the {dl.DRAIN_S} s drain time")
        rep.check(ct.pod["spec"].get("automountServiceAccountToken") is False, ct.name,
                  "automountServiceAccountToken is not false (the stages never call the API)")
        img = ct.c.get("image", "")
        rep.check(":" in img.rsplit("/", 1)[-1] or "@" in img, ct.name,
                  f"image {img!r} has no tag or digest")
        rep.check(not img.endswith(":latest"), ct.name, f"image {img!r} uses :latest")

    # The long-running stages.
    daemons = {}
    for ct in stage_cts:
        if ct.kind == "Job":
            continue
        rep.check(ct.stage not in daemons, ct.name, f"a second workload runs {ct.stage}")
        daemons[ct.stage] = ct
    for st in dl.STAGES:
        if not rep.check(st in daemons, ov, f"no workload runs tds-{st}"):
            continue
        ct = daemons[st]
        wl = ct.wl
        want_kind = "StatefulSet" if st == "ingress" else "Deployment"
        rep.check(wl["kind"] == want_kind, ct.name, f"tds-{st} should be a {want_kind}")
        replicas = wl["spec"].get("replicas", 1)
        exp = EXPECTED_REPLICAS.get(ov, {}).get(st)
        if exp is not None:
            rep.check(replicas == exp, ct.name, f"replicas {replicas}, expected {exp}")
        rep.check(subset(wl["spec"]["selector"].get("matchLabels"), ct.labels), ct.name,
                  "selector does not match the pod template labels")
        # admin port, probes, scrape annotations
        admin = dl.hostport_port(ct.env.get("TDS_ADMIN_LISTEN")) or dl.ADMIN_PORT[st]
        rep.check(ct.port("admin") == admin, ct.name,
                  f"container port 'admin' is {ct.port('admin')}, TDS_ADMIN_LISTEN says {admin}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            hg = (ct.c.get(probe) or {}).get("httpGet")
            if rep.check(hg, ct.name, f"no {probe} with httpGet"):
                rep.check(hg.get("path") == path, ct.name, f"{probe} path {hg.get('path')}, expected {path}")
                rep.check(ct.port(hg.get("port")) == admin, ct.name, f"{probe} is not on the admin port")
        ann = ct.pod.get("metadata", {}).get("annotations") or {}
        rep.check(ann.get("prometheus.io/scrape") == "true", ct.name, "no prometheus.io/scrape: \"true\"")
        rep.check(str(ann.get("prometheus.io/port")) == str(admin), ct.name,
                  f"prometheus.io/port {ann.get('prometheus.io/port')} is not the admin port {admin}")
        rep.check(ann.get("prometheus.io/path", "/metrics") == "/metrics", ct.name, "scrape path is not /metrics")
        # PDB
        pdbs = [p for p in rnd.all("PodDisruptionBudget")
                if subset(p["spec"]["selector"].get("matchLabels"), ct.labels)]
        if rep.check(pdbs, ct.name, "no PodDisruptionBudget selects these pods"):
            p = pdbs[0]["spec"]
            allows = (p.get("maxUnavailable", 0) not in (0, "0", "0%")) if "maxUnavailable" in p \
                else (int(p.get("minAvailable", replicas)) < replicas)
            rep.check(allows, ct.name, "the PodDisruptionBudget allows no voluntary disruption at all")

    # Ingress: per-pod journal volume.
    if "ingress" in daemons:
        ct = daemons["ingress"]
        jdir = ct.env.get("TDS_INGRESS_JOURNAL_DIR", "/var/lib/tds/journal")
        claims = {t["metadata"]["name"] for t in ct.wl["spec"].get("volumeClaimTemplates") or []}
        mounts = {m["mountPath"].rstrip("/"): m["name"] for m in ct.c.get("volumeMounts") or []}
        rep.check(mounts.get(jdir.rstrip("/")) in claims, ct.name,
                  f"the journal dir {jdir} is not on a volumeClaimTemplate (claims: {sorted(claims)})")

    # Upstream → downstream links: headless Services, matching ports, policies.
    ns_of = {st: daemons[st].ns for st in daemons}
    for st, ct in daemons.items():
        for setting, dst in dl.CONNECTS[st].items():
            val = ct.env.get(setting)
            if not rep.check(val, ct.name, f"{setting} is not set (the default points at 127.0.0.1)"):
                continue
            if dst not in daemons:
                continue
            for ep in val.split(","):
                hp = dl.parse_endpoint(ep)
                if not rep.check(hp, ct.name, f"{setting}={val}: not tcp://host:port"):
                    continue
                host, port = hp
                svc_name = host.split(".")[0]
                svc = rnd.get("Service", svc_name)
                if not rep.check(svc, ct.name, f"{setting} points at Service {svc_name}, not in the render"):
                    continue
                where = f"{ov}:Service/{svc_name}"
                rep.check(svc["spec"].get("clusterIP") == "None", where,
                          "not headless (clusterIP: None): upstreams must see every replica")
                rep.check(not svc["spec"].get("publishNotReadyAddresses"), where,
                          f"publishNotReadyAddresses: {setting} would connect to tds-{dst} "
                          "replicas that are not ready; scrape through a Service of its own")
                dct = daemons[dst]
                rep.check(subset(svc["spec"].get("selector"), dct.labels), where,
                          f"selector does not match the tds-{dst} pods")
                sp = [p for p in svc["spec"].get("ports", []) if p["port"] == port]
                if rep.check(sp, where, f"has no port {port} ({setting})"):
                    tp = sp[0].get("targetPort", port)
                    rep.check(dct.port(tp) == port, where,
                              f"port {port} targets {tp!r}, not containerPort {port} of tds-{dst}")
                bport = dl.bind_port(dct.env, dl.BIND_FOR[setting])
                rep.check(bport == port, ct.name,
                          f"{setting} uses port {port} but tds-{dst} binds {dl.BIND_FOR[setting]} on {bport}")
                src = {"ns": ns_of[st], "nslabels": {"kubernetes.io/metadata.name": ns_of[st] or ""},
                       "labels": ct.labels, "external": False}
                dstw = {"ns": ns_of[dst], "nslabels": {"kubernetes.io/metadata.name": ns_of[dst] or ""},
                        "labels": dct.labels, "external": False}
                rep.check(traffic_allowed(rnd, src, dstw, port), ct.name,
                          f"NetworkPolicy blocks tds-{st} → tds-{dst}:{port} ({setting})")

    # NetworkPolicy: the outside world, monitoring, and what must stay closed.
    if rnd.all("NetworkPolicy") and daemons:
        outside = {"ns": None, "nslabels": {}, "labels": {}, "external": True}
        mon = {"ns": "monitoring", "nslabels": {"kubernetes.io/metadata.name": "monitoring"},
               "labels": {"app.kubernetes.io/name": "prometheus"}, "external": False}

        def who(st):
            ct = daemons[st]
            return {"ns": ct.ns, "nslabels": {"kubernetes.io/metadata.name": ct.ns or ""},
                    "labels": ct.labels, "external": False}
        if "ingress" in daemons:
            wport = dl.hostport_port(daemons["ingress"].env.get("TDS_INGRESS_LISTEN")) or 8080
            rep.check(traffic_allowed(rnd, outside, who("ingress"), wport), ov,
                      f"NetworkPolicy blocks webhooks from outside to tds-ingress:{wport}")
        for st, ct in daemons.items():
            admin = dl.hostport_port(ct.env.get("TDS_ADMIN_LISTEN")) or dl.ADMIN_PORT[st]
            rep.check(traffic_allowed(rnd, mon, who(st), admin), ov,
                      f"NetworkPolicy blocks scrapes from namespace monitoring to tds-{st}:{admin}")
        for st in ("fetcher", "writer"):
            if st in daemons and ov == "prod":
                rep.check(traffic_allowed(rnd, who(st), outside, 5432), ov,
                          f"NetworkPolicy blocks tds-{st} → PostgreSQL :5432")
        if "fetcher" in daemons and ov == "prod":
            rep.check(traffic_allowed(rnd, who("fetcher"), outside, 443), ov,
                      "NetworkPolicy blocks tds-fetcher → Zoho :443")
        # Must stay closed: proves the policies are not allow-all.
        closed = [("processor", "fetcher", 5556), ("ingress", "writer", 5558),
                  ("writer", "processor", 5557)]
        for a, b, port in closed:
            if a in daemons and b in daemons:
                rep.check(not traffic_allowed(rnd, who(a), who(b), port), ov,
                          f"NetworkPolicy lets tds-{a} reach tds-{b}:{port}, which the pipeline never uses")
        if "writer" in daemons:
            rep.check(not traffic_allowed(rnd, outside, who("writer"), 5558), ov,
                      "NetworkPolicy lets the outside reach tds-writer:5558")
    else:
        rep.fail(ov, "no NetworkPolicy in the render")

    # Webhooks: Service + Ingress resource reaching the ingress pods' webhook port.
    if "ingress" in daemons:
        ict = daemons["ingress"]
        wport = dl.hostport_port(ict.env.get("TDS_INGRESS_LISTEN")) or 8080
        found = False
        for ing in rnd.all("Ingress"):
            for rule in ing["spec"].get("rules", []):
                for path in (rule.get("http") or {}).get("paths", []):
                    be = path["backend"].get("service") or {}
                    svc = rnd.get("Service", be.get("name"))
                    if not svc or svc["spec"].get("clusterIP") == "None":
                        continue
                    if not subset(svc["spec"].get("selector"), ict.labels):
                        continue
                    bport = be.get("port", {})
                    for sp in svc["spec"].get("ports", []):
                        if bport.get("name") in (None, sp.get("name")) and \
                           bport.get("number") in (None, sp["port"]):
                            if ict.port(sp.get("targetPort", sp["port"])) == wport:
                                found = True
        rep.check(found, ov, f"no Ingress → Service → tds-ingress:{wport} path for webhooks")
        for ing in rnd.all("Ingress"):
            # Without a class only a controller whose class is the cluster's
            # default serves it; a stock ingress-nginx is not the default.
            rep.check(ing["spec"].get("ingressClassName"), f"{ov}:Ingress/{ing['metadata']['name']}",
                      "no spec.ingressClassName: an ingress controller that is not the "
                      "cluster's default IngressClass ignores it")

    # Migration Job.
    jobs = [ct for ct in stage_cts if ct.kind == "Job" and ct.stage == "writer"
            and (ct.c.get("args") or ct.c.get("command") or [])[-1:] == ["migrate"]]
    rep.check(jobs, ov, "no Job runs `tds-writer migrate`")

    # Secrets: never values in prod; file references resolve to mounted Secrets.
    if ov == "prod":
        for s in rnd.all("Secret"):
            rep.fail(f"{ov}:Secret/{s['metadata']['name']}",
                     "the prod render carries a Secret with values; reference one created out of band")
    for st in dl.ORGS_STAGES:
        if st in daemons:
            rep.check(daemons[st].env.get("TDS_CONFIG"), daemons[st].name,
                      "TDS_CONFIG is not set" + (
                          ": the alert rule entity_stale then assumes TDS_ALERT_SYNC_INTERVAL_S "
                          "for every organization instead of its incremental_every_s"
                          if st == "writer" else ""))
    orgs_cm = {}
    for ct in stage_cts:
        cfg = ct.env.get("TDS_CONFIG")
        if cfg:
            vol, rel = ct.mount_for(cfg)
            if not rep.check(vol is not None and "configMap" in vol, ct.name,
                             f"TDS_CONFIG {cfg} is not on a ConfigMap volume"):
                continue
            mnt = [m for m in ct.c.get("volumeMounts") or [] if m["name"] == vol["name"]]
            rep.check(all(m.get("readOnly") for m in mnt), ct.name,
                      f"the organizations file's volume {vol['name']} is not mounted readOnly")
            if ct.kind != "Job":
                orgs_cm[ct.stage] = vol["configMap"]["name"]
            cm = rnd.get("ConfigMap", vol["configMap"]["name"])
            keys = projected_keys(vol["configMap"])
            key = keys.get(rel) if keys else rel
            if not rep.check(cm is not None and key in (cm.get("data") or {}), ct.name,
                             f"ConfigMap {vol['configMap']['name']} has no key {key!r}"):
                continue
            try:
                orgs = json.loads(cm["data"][key])["organizations"]
            except (ValueError, KeyError, TypeError) as e:
                rep.fail(ct.name, f"organizations file in ConfigMap is not valid: {e}")
                continue
            if ct.stage not in dl.ORGS_CREDENTIAL_STAGES:
                continue  # reads only org_id and intervals; mounts no Zoho secrets
            resolve = make_file_resolver(rnd, ct)
            for o in orgs:
                for field in dl.OAUTH_FIELDS:
                    v = o.get(field)
                    if field not in dl.ORGS_CREDENTIALS[ct.stage] and isinstance(v, str) \
                            and v.startswith("file:"):
                        rep.check(resolve(v[5:]) is not None, ct.name,
                                  f"org {o.get('org_id')}: {field}'s file is mounted, but this "
                                  "stage never reads it: leave it out of the pod")
                for field in dl.ORGS_CREDENTIALS[ct.stage]:
                    v = o.get(field)
                    if v is None:
                        continue
                    if rep.check(isinstance(v, str) and v.startswith("file:"), ct.name,
                                 f"org {o.get('org_id')}: {field} is not a file: reference"):
                        err = resolve(v[5:])
                        rep.check(err is None, ct.name, f"org {o.get('org_id')}: {field}: {err}")
                for field in dl.WEBHOOK_FIELDS:
                    for v in o.get(field) or []:
                        if ct.stage not in dl.WEBHOOK_CREDENTIAL_STAGES:
                            if isinstance(v, str) and v.startswith("file:"):
                                rep.check(resolve(v[5:]) is not None, ct.name,
                                          f"org {o.get('org_id')}: a {field} file is mounted, "
                                          "but this stage never reads it: leave it out of the pod")
                            continue
                        if rep.check(isinstance(v, str) and v.startswith("file:"), ct.name,
                                     f"org {o.get('org_id')}: {field} holds one that is not a "
                                     "file: reference"):
                            err = resolve(v[5:])
                            rep.check(err is None, ct.name, f"org {o.get('org_id')}: {field}: {err}")

    if "fetcher" in orgs_cm:
        for st, cm_name in orgs_cm.items():
            rep.check(cm_name == orgs_cm["fetcher"], daemons[st].name,
                      f"TDS_CONFIG comes from ConfigMap {cm_name}, the fetcher's from "
                      f"{orgs_cm['fetcher']}: the stages must read the same organizations")

    # Environment against the stages' own config tables.
    if with_env:
        for ct in stage_cts:
            dl.check_stage_env(rep, ct.name, ct.stage, ct.env, make_file_resolver(rnd, ct))

    # In-cluster dependencies (dev: PostgreSQL and the simulator): the
    # addresses the stages are given lead to a Service with pods behind it,
    # and the NetworkPolicies let the stages (and the simulator's webhooks) through.
    def pods_behind(svc_name):
        svc = rnd.get("Service", svc_name)
        if not svc:
            return None
        sel = svc["spec"].get("selector") or {}
        for c in containers:
            if sel and subset(sel, c.labels):
                return c
        return None

    def who_ct(ct):
        return {"ns": ct.ns, "nslabels": {"kubernetes.io/metadata.name": ct.ns or ""},
                "labels": ct.labels, "external": False}

    def host_port(url, default):
        m = re.match(r"^[a-z]+://(?:[^@/]*@)?([^:/?]+)(?::(\d+))?", url)
        return (m.group(1), int(m.group(2) or default)) if m else (None, None)

    for sec in rnd.all("Secret"):
        raw = (sec.get("data") or {}).get("database-url")
        if not raw:
            continue
        host, port = host_port(base64.b64decode(raw).decode(), 5432)
        w = f"{ov}:Secret/{sec['metadata']['name']}"
        if "." in host or host in ("localhost",) or re.match(r"^[0-9.]+$", host):
            continue  # outside the cluster: covered by the :5432 egress check
        pg = pods_behind(host)
        if rep.check(pg, w, f"database-url host {host!r} is not a Service with pods in the render"):
            users = [c for c in stage_cts if c.stage in ("writer", "fetcher")]
            for c in users:
                rep.check(traffic_allowed(rnd, who_ct(c), who_ct(pg), port), c.name,
                          f"NetworkPolicy blocks the database {host}:{port}")
    if "fetcher" in daemons:
        for cm in rnd.all("ConfigMap"):
            try:
                orgs = json.loads((cm.get("data") or {}).get("orgs.json", "null") or "null")
            except ValueError:
                continue
            for o in (orgs or {}).get("organizations", []):
                for field in ("accounts_url", "api_url"):
                    if not o.get(field):
                        continue
                    host, port = host_port(o[field], 443 if o[field].startswith("https") else 80)
                    if "." in (host or "."):
                        continue
                    dst = pods_behind(host)
                    if rep.check(dst, f"{ov}:ConfigMap/{cm['metadata']['name']}",
                                 f"{field} host {host!r} is not a Service with pods in the render"):
                        rep.check(traffic_allowed(rnd, who_ct(daemons["fetcher"]), who_ct(dst), port),
                                  daemons["fetcher"].name, f"NetworkPolicy blocks {field} {host}:{port}")
                        if "ingress" in daemons:
                            wport = dl.hostport_port(daemons["ingress"].env.get("TDS_INGRESS_LISTEN")) or 8080
                            rep.check(traffic_allowed(rnd, who_ct(dst), who_ct(daemons["ingress"]), wport),
                                      f"{ov}:Service/{host}",
                                      f"NetworkPolicy blocks the simulator's webhooks to tds-ingress:{wport}")
    return daemons


def check_prometheus_k8s(rep, rnd, daemons, path):
    """Every name prometheus-k8s.yml finds targets by (DNS SD) must list each
    replica of the job's stage, ready or not: a Service that lists ready pods
    only drops a replica's target exactly when it turns not ready (writer
    without its database, ingress journal full), so the critical alerts on
    those conditions lose their series before their `for` is over, and a
    stage with no ready replica has no `up` series at all. Checked where the
    names' namespace is the render's (the prod overlay: tds)."""
    where = f"{rnd.overlay}:{os.path.basename(path)}"
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        rep.fail(where, f"cannot read: {e}")
        return
    namespaces = {ct.ns for ct in daemons.values()}
    jobs = set()
    mon = {"ns": "monitoring", "nslabels": {"kubernetes.io/metadata.name": "monitoring"},
           "labels": {"app.kubernetes.io/name": "prometheus"}, "external": False}
    checked = 0
    for sc in cfg.get("scrape_configs") or []:
        job = sc.get("job_name", "")
        m = re.match(r"^tds-(ingress|fetcher|processor|writer)$", job)
        for sd in sc.get("dns_sd_configs") or []:
            for name in sd.get("names") or []:
                w = f"{where}: job {job}: {name}"
                parts = name.split(".")
                ns = parts[1] if len(parts) > 1 else None
                if ns not in namespaces:
                    rep.check(rnd.overlay != "prod", w,
                              f"names namespace {ns!r}; the prod overlay deploys to "
                              f"{', '.join(sorted(str(n) for n in namespaces))}")
                    continue
                checked += 1
                if not rep.check(m, w, "job is not named tds-<stage>"):
                    continue
                st = m.group(1)
                jobs.add(st)
                svc = rnd.get("Service", parts[0])
                if not rep.check(svc, w, f"Service {parts[0]} is not in the render"):
                    continue
                spec = svc["spec"]
                rep.check(spec.get("clusterIP") == "None", w,
                          f"Service {parts[0]} is not headless: DNS answers one virtual IP, "
                          "not one address per replica")
                rep.check(spec.get("publishNotReadyAddresses") is True, w,
                          f"Service {parts[0]} has no publishNotReadyAddresses: true, so DNS lists "
                          "ready replicas only and a replica's target (and the alerts on what made "
                          "it not ready) disappears when it turns not ready")
                if st not in daemons:
                    continue
                ct = daemons[st]
                rep.check(spec.get("selector") and subset(spec.get("selector"), ct.labels), w,
                          f"Service {parts[0]} does not select the tds-{st} pods")
                port = sd.get("port")
                admin = dl.hostport_port(ct.env.get("TDS_ADMIN_LISTEN")) or dl.ADMIN_PORT[st]
                rep.check(port == admin, w, f"port {port} is not tds-{st}'s admin port {admin}")
                rep.check(traffic_allowed(rnd, mon, {"ns": ct.ns, "nslabels": {
                    "kubernetes.io/metadata.name": ct.ns or ""}, "labels": ct.labels,
                    "external": False}, admin), w,
                    f"NetworkPolicy blocks scrapes from namespace monitoring to tds-{st}:{admin}")
    if rnd.overlay == "prod":
        for st in dl.STAGES:
            rep.check(st in jobs, where, f"no DNS SD job tds-{st} for a name in the prod namespace")
    if checked:
        rep.note(f"{rnd.overlay}: {checked} scrape name(s) of {os.path.basename(path)} checked")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--overlay", action="append", help="overlay name (default: all)")
    ap.add_argument("--no-env", action="store_true", help="skip the config-table check")
    ap.add_argument("--kubectl", default=os.environ.get("KUBECTL", "kubectl"))
    ap.add_argument("--k8s-dir", default=K8S, help="the kustomize tree (default: deploy/k8s)")
    ap.add_argument("--prometheus-config", default=PROM_K8S,
                    help="the Kubernetes scrape configuration (default: "
                         "deploy/prometheus/prometheus-k8s.yml)")
    args = ap.parse_args(argv)
    rep = dl.Report("check_k8s")
    if not dl.which(args.kubectl) and not os.path.exists(args.kubectl):
        print(f"check_k8s: {args.kubectl} not found (Debian package kubernetes-client)")
        return 2
    overlays = args.overlay or sorted(os.listdir(os.path.join(args.k8s_dir, "overlays")))
    with_env = not args.no_env
    if with_env:
        missing = [s for s in dl.STAGES if dl.stage_binary(s) is None]
        if missing:
            print(f"check_k8s: stage binaries missing under TDS_BUILD_DIR={dl.build_dir()!r}: "
                  f"{', '.join('tds-' + m for m in missing)} (use --no-env to skip that check)")
            return 2
    for ov in overlays:
        try:
            rnd = Render(ov, render(args.kubectl, ov, args.k8s_dir))
        except RuntimeError as e:
            rep.fail(ov, str(e))
            continue
        n = len(rnd.docs)
        daemons = check_overlay(rep, rnd, with_env)
        check_prometheus_k8s(rep, rnd, daemons, args.prometheus_config)
        rep.note(f"{ov}: rendered {n} objects"
                 + ("" if with_env else " (config-table check skipped)"))
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
