"""Deployment files (deploy/), checked as far as a machine without a Docker
engine or a cluster can check them.

* The Dockerfile, the compose file (`docker-compose config`), every kustomize
  overlay (`kubectl kustomize`), the Prometheus configs and rules (`promtool
  check` and `promtool test rules`) and the Grafana dashboard pass the scripts
  in tests/deploy/, including the check of every container's environment
  against the stage's own config table (`tds-<stage> --print-config`).
* Those scripts fail on broken copies of the files (so they can fail).
* Every metric name the rules and the dashboard use exists on the stages'
  live /metrics; a real Prometheus scrapes the stages with our config.
* The stages run exactly as the prod overlay configures them — same
  variables, same endpoints, replicas as separate processes on loopback
  addresses — run a sync and apply a webhook.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from conftest import free_port, http_get, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEPLOY_TESTS = os.path.join(ROOT, "tests", "deploy")
sys.path.insert(0, DEPLOY_TESTS)
import deploylib as dl  # noqa: E402

try:
    from sim_fixture import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN
except ImportError:  # the simulator's fixture is not there yet
    CLIENT_ID = CLIENT_SECRET = REFRESH_TOKEN = None


KUBECTL = os.environ.get("KUBECTL", "kubectl")


def need_tool(tool, package):
    if tool == "kubectl":
        tool = KUBECTL
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed (Debian package {package}; tests/run installs it)")


def need_stages():
    missing = [f"tds-{s}" for s in dl.STAGES if dl.stage_binary(s) is None]
    if missing:
        pytest.skip(f"stage binaries not built under TDS_BUILD_DIR: {', '.join(missing)}")


def need_sim():
    if CLIENT_ID is None:
        pytest.skip("the simulator fixture (tests/integration/sim_fixture.py) is missing")


def run_check(script, *args, timeout=600):
    r = subprocess.run([sys.executable, os.path.join(DEPLOY_TESTS, script), *args],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout


def assert_check_ok(script, *args):
    rc, out = run_check(script, *args)
    assert rc == 0, f"{script} {' '.join(args)} exited {rc}:\n{out}"
    return out


# ------------------------------------------------------------------ static checks

def test_dockerfile():
    assert_check_ok("check_dockerfile.py")


def test_compose_file_validates():
    need_tool("docker-compose", "docker-compose")
    assert_check_ok("check_compose.py", "--no-env")


def test_compose_env_matches_stage_config_tables():
    need_tool("docker-compose", "docker-compose")
    need_stages()
    assert_check_ok("check_compose.py")


def test_k8s_overlays_render_and_pass_checks():
    need_tool("kubectl", "kubernetes-client")
    out = assert_check_ok("check_k8s.py", "--no-env")
    for ov in ("dev", "prod"):
        assert f"{ov}: rendered" in out, out


def test_k8s_env_matches_stage_config_tables():
    need_tool("kubectl", "kubernetes-client")
    need_stages()
    assert_check_ok("check_k8s.py")


def test_prometheus_rules_config_and_dashboard():
    need_tool("promtool", "prometheus")
    assert_check_ok("check_prometheus.py")


# ------------------------------------------------------------------ the checks can fail

def _edit(path, old, new):
    with open(path) as f:
        s = f.read()
    assert old in s, f"{old!r} not in {path}"
    with open(path, "w") as f:
        f.write(s.replace(old, new, 1))


K8S_BREAKS = [
    ("overlays/prod/replicas.yaml", "replicas: 3", "replicas: 1", "replicas 1, expected 3"),
    ("base/writer.yaml", "path: /readyz", "path: /healthz", "readinessProbe path /healthz"),
    ("base/fetcher.yaml", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 5",
     "terminationGracePeriodSeconds 5"),
    ("base/processor.yaml", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true",
     "allowPrivilegeEscalation is not false"),
    ("base/processor.yaml", "clusterIP: None", "type: ClusterIP", "not headless"),
    ("base/networkpolicy.yaml", "{protocol: TCP, port: 5558}", "{protocol: TCP, port: 5557}",
     "NetworkPolicy blocks tds-processor → tds-writer:5558"),
    ("base/kustomization.yaml", "TDS_ACK_CONNECT=tcp://tds-writer:5559",
     "TDS_ACK_CONNECT=tcp://tds-writer:5558", "TDS_ACK_CONNECT uses port 5558"),
    ("base/ingress.yaml", "mountPath: /var/lib/tds/journal}", "mountPath: /var/lib/tds/j}",
     "is not on a volumeClaimTemplate"),
    ("base/writer.yaml", "requests: {cpu: 200m, memory: 160Mi}", "requests: {cpu: 200m}",
     "resources.requests.memory is not set"),
    # The scrape Service lists ready replicas only: a not-ready writer's target vanishes.
    ("base/writer.yaml", "  publishNotReadyAddresses: true\n", "",
     "Service tds-writer-metrics has no publishNotReadyAddresses: true"),
    # ...and the data Service must not list them (ZeroMQ would send to them).
    ("base/writer.yaml", "spec:\n  clusterIP: None\n  selector:",
     "spec:\n  clusterIP: None\n  publishNotReadyAddresses: true\n  selector:",
     "would connect to tds-writer replicas that are not ready"),
    ("base/ingress.yaml", "  ingressClassName: nginx\n", "", "no spec.ingressClassName"),
    ("base/kustomization.yaml", "credentials.\n      - TDS_CONFIG=/etc/tds/orgs.json\n",
     "credentials.\n", "TDS_CONFIG is not set: the alert rule entity_stale"),
    # The fetcher takes no webhooks: the webhook secret stays out of its pod.
    ("base/fetcher.yaml", "              - {key: zoho-refresh-token, path: zoho-refresh-token}\n",
     "              - {key: zoho-refresh-token, path: zoho-refresh-token}\n"
     "              - {key: zoho-webhook-secret, path: zoho-webhook-secret}\n",
     "a webhook_secrets file is mounted, but this stage never reads it"),
]


@pytest.mark.parametrize("path,old,new,expect", K8S_BREAKS, ids=[b[3][:40] for b in K8S_BREAKS])
def test_k8s_check_fails_on_broken_manifests(tmp_path, path, old, new, expect):
    need_tool("kubectl", "kubernetes-client")
    tree = tmp_path / "k8s"
    shutil.copytree(os.path.join(dl.DEPLOY, "k8s"), tree)
    _edit(tree / path, old, new)
    rc, out = run_check("check_k8s.py", "--no-env", "--k8s-dir", str(tree))
    assert rc == 1 and expect in out, out


def test_k8s_check_fails_when_prometheus_scrapes_ready_pods_only(tmp_path):
    """prometheus-k8s.yml pointed back at the stages' own Services (ready
    replicas only): a not-ready writer or ingress would drop out of the
    targets, and the critical alerts on it with it."""
    need_tool("kubectl", "kubernetes-client")
    cfg = tmp_path / "prometheus-k8s.yml"
    shutil.copy(os.path.join(dl.DEPLOY, "prometheus", "prometheus-k8s.yml"), cfg)
    _edit(cfg, "[tds-writer-metrics.tds.svc.cluster.local]", "[tds-writer.tds.svc.cluster.local]")
    rc, out = run_check("check_k8s.py", "--no-env", "--overlay", "prod",
                        "--prometheus-config", str(cfg))
    assert rc == 1 and "Service tds-writer has no publishNotReadyAddresses: true" in out, out


def test_k8s_env_check_fails_on_unknown_or_missing_settings(tmp_path):
    need_tool("kubectl", "kubernetes-client")
    need_stages()
    tree = tmp_path / "k8s"
    shutil.copytree(os.path.join(dl.DEPLOY, "k8s"), tree)
    _edit(tree / "base/kustomization.yaml", "      - TDS_PROCESSOR_BIND=tcp://*:5557\n",
          "      - TDS_PROCESSOR_BIND=tcp://*:5557\n      - TDS_PROCESSOR_NO_SUCH_SETTING=1\n")
    _edit(tree / "base/kustomization.yaml",
          "      - TDS_DATABASE_URL=file:/run/secrets/tds/database-url\n      - TDS_WRITER_BIND",
          "      - TDS_WRITER_BIND")
    _edit(tree / "base/kustomization.yaml", "TDS_LOG_LEVEL=info\n      - TDS_ADMIN_LISTEN=0.0.0.0:9102",
          "TDS_LOG_LEVEL=info\n      - TDS_ADMIN_LISTEN=0.0.0.0:notaport")
    rc, out = run_check("check_k8s.py", "--overlay", "prod", "--k8s-dir", str(tree))
    assert rc == 1, out
    assert "sets TDS_PROCESSOR_NO_SUCH_SETTING, which tds-processor does not know" in out, out
    assert "does not set TDS_DATABASE_URL, which tds-writer requires" in out, out
    assert "tds-fetcher rejects this environment" in out, out


COMPOSE_BREAKS = [
    ("secrets: [database_url, zoho_client_id, zoho_client_secret, zoho_refresh_token]",
     "secrets: [database_url, zoho_client_id, zoho_client_secret, zoho_refresh_token, "
     "zoho_webhook_secret]", "a webhook credential's secret is mounted, but this stage never"),
    ("TDS_ACK_CONNECT: tcp://writer:5559", "TDS_ACK_CONNECT: tcp://writer:5560", "uses port 5560"),
    ('      - "${TDS_WEBHOOK_PUBLISH:-8080}:8080"\n', "", "webhook port 8080 is not published"),
    ("      - journal:/var/lib/tds/journal\n", "      - ./journal:/var/lib/tds/journal\n",
     "is not on a named volume"),
    ("    profiles: [demo]\n", "", "not limited to the demo profile"),
    ("      TDS_CONFIG: /etc/tds/orgs.json\n      TDS_WRITER_BIND", "      TDS_WRITER_BIND",
     "TDS_CONFIG is not set: the alert rule entity_stale"),
    ("      processor: {condition: service_healthy}\n      fetcher",
     "      processor: {condition: service_started}\n      fetcher", "without a health condition"),
]


@pytest.mark.parametrize("old,new,expect", COMPOSE_BREAKS, ids=[b[2][:40] for b in COMPOSE_BREAKS])
def test_compose_check_fails_on_broken_file(tmp_path, old, new, expect):
    need_tool("docker-compose", "docker-compose")
    d = tmp_path / "deploy" / "compose"
    shutil.copytree(os.path.join(dl.DEPLOY, "compose"), d)
    _edit(d / "docker-compose.yml", old, new)
    rc, out = run_check("check_compose.py", "--no-env", "--compose-dir", str(d))
    assert rc == 1 and expect in out, out


DOCKERFILE_BREAKS = [
    ("USER 10001:10001", "USER root", "runs as root"),
    ("ARG DEBIAN_IMAGE=debian:12.8-slim", "ARG DEBIAN_IMAGE=debian:latest", "is not pinned"),
    ("COPY --from=build /out/ /", "ADD https://example.com/tds.tar.gz /\nCOPY --from=build /out/ /",
     "ADD from a URL"),
]


@pytest.mark.parametrize("old,new,expect", DOCKERFILE_BREAKS, ids=[b[2] for b in DOCKERFILE_BREAKS])
def test_dockerfile_check_fails_on_broken_file(tmp_path, old, new, expect):
    p = tmp_path / "Dockerfile"
    shutil.copy(os.path.join(dl.DEPLOY, "Dockerfile"), p)
    _edit(p, old, new)
    rc, out = run_check("check_dockerfile.py", str(p))
    assert rc == 1 and expect in out, out


# ------------------------------------------------------------------ live stages

def _write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return str(path)


SMALL_ORG = ("id=60001,tz=+0300,stock=warehouses,product=inventory,items=30,groups=4,"
             "contacts=12,invoices=12,salesorders=12,warehouses=2")


def _sim_orgs_file(tmp_path, sim, org_id, entities, secrets_dir, webhook_secret,
                   rate_per_min=None):
    """An organizations file for the simulator with every credential as a
    file: reference, the way the manifests give them."""
    os.makedirs(secrets_dir, exist_ok=True)
    files = {"zoho-client-id": CLIENT_ID, "zoho-client-secret": CLIENT_SECRET,
             "zoho-refresh-token": REFRESH_TOKEN, "zoho-webhook-secret": webhook_secret}
    for k, v in files.items():
        _write(os.path.join(secrets_dir, k), v + "\n")
    org = {"org_id": org_id, "name": "deploy test", "product": "inventory", "data_center": "com",
           "accounts_url": sim.url, "api_url": sim.url,
           "client_id": f"file:{secrets_dir}/zoho-client-id",
           "client_secret": f"file:{secrets_dir}/zoho-client-secret",
           "refresh_token": f"file:{secrets_dir}/zoho-refresh-token",
           "webhook_secrets": [f"file:{secrets_dir}/zoho-webhook-secret"],
           "entities": list(entities)}
    if rate_per_min:
        org["rate_per_min"] = rate_per_min
    return _write(tmp_path / "orgs.json", json.dumps({"organizations": [org]}), 0o644)


def _start_simple_pipeline(procs, db, sim, tmp_path):
    """One process per stage on free loopback ports, the simulator as Zoho."""
    ports = {k: free_port() for k in ("writer", "ack", "processor", "fetcher", "webhook")}
    secrets = str(tmp_path / "secrets")
    orgs = _sim_orgs_file(tmp_path, sim, "60001", ["items", "contacts"], secrets, "deploytestsecret")
    env = {
        "TDS_DATABASE_URL": db.url,
        "TDS_CONFIG": orgs,
        "TDS_WRITER_BIND": f"tcp://127.0.0.1:{ports['writer']}",
        "TDS_ACK_BIND": f"tcp://127.0.0.1:{ports['ack']}",
        "TDS_WRITER_CONNECT": f"tcp://127.0.0.1:{ports['writer']}",
        "TDS_PROCESSOR_BIND": f"tcp://127.0.0.1:{ports['processor']}",
        "TDS_PROCESSOR_CONNECT": f"tcp://127.0.0.1:{ports['processor']}",
        "TDS_FETCHER_BIND": f"tcp://127.0.0.1:{ports['fetcher']}",
        "TDS_FETCHER_CONNECT": f"tcp://127.0.0.1:{ports['fetcher']}",
        "TDS_ACK_CONNECT": f"tcp://127.0.0.1:{ports['ack']}",
        "TDS_INGRESS_LISTEN": f"127.0.0.1:{ports['webhook']}",
        "TDS_INGRESS_JOURNAL_DIR": str(tmp_path / "journal"),
    }
    # The writer first, until ready: it has migrated the fresh database. A
    # fetcher started before then found no tds.quota_use and waited a full
    # minute window before its first call, and a `sync` command found no
    # tds.sync_requests (exit 1), once the migrations took longer than the
    # other stages' start.
    stages = {"writer": procs.spawn("tds-writer", env=env, ready="readyz", label="deploy-writer")}
    for st in ("processor", "fetcher", "ingress"):
        stages[st] = procs.spawn(f"tds-{st}", env=env, ready="healthz", label=f"deploy-{st}")
    return stages, env, ports


def _families(metrics_text):
    fam = {}
    for line in metrics_text.splitlines():
        m = re.match(r"^# TYPE (\S+) (\S+)", line)
        if m:
            fam[m.group(1)] = m.group(2)
        m = re.match(r"^# HELP (\S+) ", line)
        if m:
            fam.setdefault(m.group(1), "untyped")
    return fam


def _names_in_rules_and_dashboard():
    import yaml
    names = {}
    rules = yaml.safe_load(open(os.path.join(dl.DEPLOY, "prometheus", "alerts.yml")))
    for g in rules["groups"]:
        for r in g["rules"]:
            for n in dl.promql_metric_names(r["expr"]):
                names.setdefault(n, set()).add(f"alerts.yml:{r.get('alert') or r.get('record')}")
    dash = json.load(open(os.path.join(dl.DEPLOY, "grafana", "tds-zoho-sync.json")))
    for p in dash["panels"]:
        for t in p.get("targets", []) or []:
            for n in dl.promql_metric_names(t.get("expr", "")):
                names.setdefault(n, set()).add(f"dashboard:{p['title']}")
    return names


def _resolves(name, fam):
    if name in fam:
        return fam[name] != "histogram"  # a histogram has only _bucket/_sum/_count series
    for suf in dl.HISTOGRAM_SUFFIXES:
        base = name[: -len(suf)] if name.endswith(suf) else None
        if base and fam.get(base) in ("histogram", "summary"):
            return True
    return False


def test_metric_names_exist(db, procs, sim, tmp_path):
    """Every tds_* name in alerts.yml and the dashboard is a family on a
    stage's live /metrics (from its HELP/TYPE lines), after a sync and a
    webhook have gone through so that families registered on first use exist."""
    need_stages()
    need_sim()
    s = sim(orgs=[SMALL_ORG])
    stages, env, ports = _start_simple_pipeline(procs, db, s, tmp_path)
    # Traffic: a full sync of items with two invalid records among them (API
    # calls, pages, rows, rejects, acks), one signed webhook through ingress,
    # then a sync under a 1-request-per-minute limit (429s).
    s.invalid("60001", "items", n=2)
    r = procs.run("tds-fetcher", ["sync", "--org", "60001", "--entity", "items", "--mode", "full"],
                  env=env, timeout=120, check=False)
    s.webhooks("60001", f"http://127.0.0.1:{ports['webhook']}/webhooks/zoho/60001",
               secret="deploytestsecret")
    s.mutate("60001", "contacts", update=1)

    def webhook_answered():
        return (stages["ingress"].metric("tds_ingress_requests_total") or 0) >= 1
    wait_until(webhook_answered, 20, "ingress to answer the simulator's webhook")
    s.limits(org="60001", rate_per_min=1)
    procs.run("tds-fetcher", ["sync", "--org", "60001", "--entity", "contacts", "--mode", "full",
                              "--detach"], env=env, timeout=60, check=False)
    try:
        wait_until(lambda: "tds_fetcher_429_total" in stages["fetcher"].metrics(), 30,
                   "the fetcher to meet a 429")
    except AssertionError:
        pass  # reported below with every other missing name
    s.limits(org="60001", rate_per_min=0)
    fam = {}
    for st, p in stages.items():
        fam.update(_families(p.metrics()))
    names = _names_in_rules_and_dashboard()
    missing = {n: sorted(w) for n, w in names.items() if not _resolves(n, fam)}
    assert not missing, (
        "metric names used by deploy/prometheus/alerts.yml or deploy/grafana that no stage "
        "exposes on /metrics (sync exit " + str(r.returncode) + "):\n"
        + "\n".join(f"  {n}  (used by {', '.join(w)})" for n, w in sorted(missing.items()))
        + "\nfamilies seen: " + ", ".join(sorted(f for f in fam if f.startswith("tds_"))))


def test_prometheus_scrapes_the_stages(db, procs, sim, tmp_path):
    """A real Prometheus with deploy/prometheus/prometheus.yml (targets moved
    to the test's ports) and alerts.yml: all four jobs up, rules loaded, and a
    query returns the writer's database gauge."""
    need_tool("prometheus", "prometheus")
    need_stages()
    need_sim()
    import yaml
    s = sim(orgs=[SMALL_ORG])
    stages, env, ports = _start_simple_pipeline(procs, db, s, tmp_path)
    cfg = yaml.safe_load(open(os.path.join(dl.DEPLOY, "prometheus", "prometheus.yml")))
    cfg["global"]["scrape_interval"] = "1s"
    cfg["global"]["evaluation_interval"] = "1s"
    jobs = {}
    for sc in cfg["scrape_configs"]:
        st = sc["job_name"].replace("tds-", "")
        assert st in stages, sc["job_name"]
        sc["static_configs"][0]["targets"] = [f"127.0.0.1:{stages[st].admin_port}"]
        jobs[sc["job_name"]] = st
    assert sorted(jobs.values()) == sorted(dl.STAGES)
    pdir = tmp_path / "prometheus"
    pdir.mkdir()
    shutil.copy(os.path.join(dl.DEPLOY, "prometheus", "alerts.yml"), pdir / "alerts.yml")
    _write(pdir / "prometheus.yml", yaml.safe_dump(cfg), 0o644)
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    p = subprocess.Popen(["prometheus", f"--config.file={pdir / 'prometheus.yml'}",
                          f"--storage.tsdb.path={pdir / 'data'}",
                          f"--web.listen-address=127.0.0.1:{port}"],
                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        def targets_up():
            st, body = http_get(api + "/targets", timeout=2)
            if st != 200:
                return False
            act = json.loads(body)["data"]["activeTargets"]
            return {t["labels"]["job"] for t in act if t["health"] == "up"} == set(jobs)
        wait_until(targets_up, 60, "Prometheus to scrape all four stages")

        st, body = http_get(api + "/rules", timeout=5)
        groups = json.loads(body)["data"]["groups"]
        n_rules = sum(len(g["rules"]) for g in groups)
        assert n_rules >= 10, body[:2000]

        def db_gauge():
            q = urllib.parse.quote('tds_writer_db_up{job="tds-writer",stage="writer"}')
            st, body = http_get(f"{api}/query?query={q}", timeout=5)
            res = json.loads(body)["data"]["result"]
            return res and float(res[0]["value"][1]) == 1.0
        wait_until(db_gauge, 30, "tds_writer_db_up == 1 in Prometheus")
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


# ------------------------------------------------------------------ as the prod overlay runs them

STAGE_NET = {"ingress": 1, "fetcher": 2, "processor": 3, "writer": 4}


def _loopback(stage, replica):
    """A distinct loopback address per replica (Linux routes all of 127/8 to lo),
    so replicas keep the deployment's ports, as pods and containers keep theirs."""
    return f"127.0.{STAGE_NET[stage] + 100}.{replica + 1}"


class Deployment:
    """What a deployment file says: per stage its environment and replica
    count, which host name leads to which stage, where secrets are mounted,
    and the migration command."""

    def __init__(self, name, envs, replicas, host_stage, secret_prefix, migrate_env,
                 migrate_args, instance_names):
        self.name = name
        self.envs = envs
        self.replicas = replicas
        self.host_stage = host_stage
        self.secret_prefix = secret_prefix
        self.migrate_env = migrate_env
        self.migrate_args = migrate_args
        self.instance_names = instance_names  # stage → replica → what TDS_INSTANCE defaults to there


def _run_as_deployed(dep, db, procs, sim, tmp_path):
    """Start every replica with the deployment's environment, translating only
    what names a place: a host name becomes the list of its replicas'
    loopback addresses (what the headless Service or Docker's DNS answers),
    `*` in a bind becomes the replica's own address, mounted secrets and the
    organizations file become files here, the database is the test's and
    "Zoho" is the simulator. Admin ports are free ports (the process fixture
    polls 127.0.0.1). Then the migration command, a full sync, and a webhook
    to every ingress replica; the database must match the simulator."""
    # A small organization and no rate limit on either side keep the sync short.
    s = sim(orgs=[SMALL_ORG], extra_args=["--limits-off"])
    webhook_secret = "deploy-webhook-secret-1"
    secrets = str(tmp_path / "run-secrets")
    os.makedirs(secrets)
    for name in ("database-url", "database_url"):
        _write(os.path.join(secrets, name), db.url + "\n")
    entities = ["items", "item_groups", "warehouses", "contacts", "invoices", "sales_orders"]
    orgs_path = _sim_orgs_file(tmp_path, s, "60001", entities, secrets, webhook_secret,
                               rate_per_min=6000)

    def translate(st, r, env):
        out = {}
        for k, v in env.items():
            if v is None:
                if k == "TDS_INSTANCE":  # fieldRef metadata.name
                    v = dep.instance_names[st](r)
                else:
                    raise AssertionError(f"tds-{st}: {k} comes from a reference the test cannot follow")
            elif k.endswith("_CONNECT"):
                eps = []
                for ep in v.split(","):
                    host, port = dl.parse_endpoint(ep)
                    dst = dep.host_stage[host]
                    eps += [f"tcp://{_loopback(dst, i)}:{port}" for i in range(dep.replicas[dst])]
                v = ",".join(eps)
            elif k.endswith("_BIND") and v.startswith("tcp://*:"):
                v = v.replace("tcp://*:", f"tcp://{_loopback(st, r)}:")
            elif k == "TDS_INGRESS_LISTEN":
                v = f"{_loopback(st, r)}:{dl.hostport_port(v)}"
            elif k == "TDS_ADMIN_LISTEN":
                v = f"127.0.0.1:{free_port()}"
            elif k == "TDS_INGRESS_JOURNAL_DIR":
                v = str(tmp_path / f"journal-{st}-{r}")
            elif k == "TDS_CONFIG":
                assert v == "/etc/tds/orgs.json", v
                v = orgs_path
            elif v.startswith("file:" + dep.secret_prefix):
                v = "file:" + os.path.join(secrets, v[len("file:" + dep.secret_prefix):])
            out[k] = v
        # Where the deployment leaves TDS_INSTANCE to the default (the host
        # name), each container has its own host name; so does each process here.
        out.setdefault("TDS_INSTANCE", dep.instance_names[st](r))
        return out

    # 1. The migration, as the deployment runs it.
    procs.run("tds-writer", dep.migrate_args, env=translate("writer", 0, dep.migrate_env),
              timeout=120)
    assert db.query("SELECT count(*) FROM tds.schema_migrations")[0][0] >= 1

    # 2. Every replica, downstream first.
    running = {}
    for st in ("writer", "processor", "fetcher", "ingress"):
        for i in range(dep.replicas[st]):
            env = translate(st, i, dep.envs[st])
            running[(st, i)] = (procs.spawn(f"tds-{st}", env=env, ready="readyz", timeout=60,
                                            label=f"{dep.name}-{st}-{i}"), env)

    # 3. A full sync, started the way an operator would (kubectl exec / docker-compose exec).
    fenv = {k: v for k, v in running[("fetcher", 0)][1].items() if k != "TDS_ADMIN_LISTEN"}
    r = procs.run("tds-fetcher", ["sync", "--org", "60001", "--entity", "all", "--mode", "full"],
                  env=fenv, timeout=240, check=False)
    assert r.returncode == 0, f"sync exited {r.returncode}:\n{r.stdout}\n{r.stderr[-3000:]}"
    for ent, table, idf in (("items", "items", "item_id"), ("contacts", "contacts", "contact_id"),
                            ("invoices", "invoices", "invoice_id"),
                            ("sales_orders", "sales_orders", "salesorder_id")):
        truth = {x[idf] for x in s.truth("60001", ent)["records"]}
        got = {row[0] for row in db.query(
            f"SELECT {idf} FROM zoho.{table} WHERE org_id = %s AND deleted_at IS NULL", "60001")}
        assert got == truth, f"{table}: {len(got)} rows, simulator has {len(truth)}"

    # 4. A webhook to every ingress replica, on the port the deployment gives it.
    wport = dl.hostport_port(dep.envs["ingress"].get("TDS_INGRESS_LISTEN")) or 8080
    upd = []
    for i in range(dep.replicas["ingress"]):
        s.webhooks("60001", f"http://{_loopback('ingress', i)}:{wport}/webhooks/zoho/60001",
                   secret=webhook_secret)
        upd += s.mutate("60001", "contacts", update=1)["updated"]
        # Delivered before the next replica's turn, so each replica gets one.
        wait_until(lambda: s.stats()["orgs"]["60001"]["webhooks"]["delivered"] >= len(upd), 20,
                   f"webhook {len(upd)} delivered to ingress replica {i}")

    def applied():
        rows = db.query("SELECT count(*) FROM tds.webhook_events WHERE org_id = %s", "60001")
        return rows[0][0] >= len(upd)
    wait_until(applied, 30, f"{len(upd)} webhooks recorded in tds.webhook_events")
    for cid in upd:
        truth = [x for x in s.truth("60001", "contacts")["records"] if x["contact_id"] == cid][0]
        row = db.query("SELECT raw->>'contact_name' FROM zoho.contacts WHERE org_id = %s AND "
                       "contact_id = %s", "60001", cid)
        assert row and row[0][0] == truth.get("contact_name"), (cid, row, truth.get("contact_name"))


def test_stages_run_as_the_prod_overlay_configures_them(db, procs, sim, tmp_path):
    """The rendered prod overlay: each container's environment (ConfigMap
    envFrom + env), replicas ingress 2, fetcher 2, processor 3, writer 2, the
    headless Services as the connect targets, the migration Job's args."""
    need_tool("kubectl", "kubernetes-client")
    need_stages()
    need_sim()
    import check_k8s
    rnd = check_k8s.Render("prod", check_k8s.render(KUBECTL, "prod"))
    rep = dl.Report("render")
    daemons, job = {}, None
    for kind in ("Deployment", "StatefulSet", "Job"):
        for wl in rnd.all(kind):
            pod = wl["spec"]["template"]
            for c in pod["spec"]["containers"]:
                ct = check_k8s.Container(rnd, rep, wl, pod, c)
                if ct.stage and kind == "Job":
                    job = ct
                elif ct.stage:
                    daemons[ct.stage] = ct
    assert not rep.problems, rep.problems
    assert set(daemons) == set(dl.STAGES) and job is not None
    replicas = {st: ct.wl["spec"].get("replicas", 1) for st, ct in daemons.items()}
    assert replicas == {"ingress": 2, "fetcher": 2, "processor": 3, "writer": 2}
    host_stage = {}
    for svc in rnd.all("Service"):
        for st, ct in daemons.items():
            if svc["spec"].get("selector") and check_k8s.subset(svc["spec"]["selector"], ct.labels):
                host_stage[svc["metadata"]["name"]] = st
    names = {st: (lambda r, st=st, ct=ct: f"{ct.wl['metadata']['name']}-{r}"
                  if ct.wl["kind"] == "StatefulSet" else f"{ct.wl['metadata']['name']}-pod{r}")
             for st, ct in daemons.items()}
    dep = Deployment("k8s", {st: ct.env for st, ct in daemons.items()}, replicas, host_stage,
                     "/run/secrets/tds/", job.env, job.c.get("args") or [], names)
    _run_as_deployed(dep, db, procs, sim, tmp_path)


def test_stages_run_as_the_compose_file_configures_them(db, procs, sim, tmp_path):
    """docker-compose.yml after `docker-compose config` with .env.example:
    each service's environment, the service names as connect targets, the
    migrate service's command, and processor scaled to 3 as the README shows
    (`--scale processor=3`; Docker's DNS answers every replica)."""
    need_tool("docker-compose", "docker-compose")
    need_stages()
    need_sim()
    import check_compose
    cfg = check_compose.compose_config(check_compose.COMPOSE_DIR)
    envs, host_stage, migrate, hostnames = {}, {}, None, {}
    for name, svc in cfg["services"].items():
        st, _ = check_compose.stage_of(svc)
        if st is None:
            continue
        if svc.get("command") == ["migrate"]:
            migrate = svc
            continue
        envs[st] = check_compose.env_of(svc)
        host_stage[name] = st
        hostnames[st] = (svc.get("hostname"), name)
    assert set(envs) == set(dl.STAGES) and migrate is not None
    replicas = {"ingress": 1, "fetcher": 1, "processor": 3, "writer": 1}
    names = {st: (lambda r, st=st: hostnames[st][0] or f"compose-{hostnames[st][1]}-{r + 1}")
             for st in dl.STAGES}
    dep = Deployment("compose", envs, replicas, host_stage, "/run/secrets/",
                     check_compose.env_of(migrate), migrate["command"], names)
    _run_as_deployed(dep, db, procs, sim, tmp_path)
