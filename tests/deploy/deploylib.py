"""deploylib — what the deployment checks share.

Owns: asking a stage binary which settings it knows (`--print-config`), which
of them are required and which are secrets; checking one container's
environment against that; finding the stage a container runs; small report
helpers. Never edits the manifests and never talks to a cluster or a Docker
engine.
"""

import atexit
import json
import os
import re
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEPLOY = os.path.join(ROOT, "deploy")
STAGES = ("ingress", "fetcher", "processor", "writer")
# Drain after SIGTERM is at most 10 s (BRIEF); the grace period must exceed it.
DRAIN_S = 10
# Default admin ports (BRIEF): ingress 9101, fetcher 9102, processor 9103, writer 9104.
ADMIN_PORT = {"ingress": 9101, "fetcher": 9102, "processor": 9103, "writer": 9104}


class Report:
    """Collects problems; a check script prints them and exits 1 if any."""

    def __init__(self, name):
        self.name = name
        self.problems = []
        self.notes = []

    def fail(self, where, msg):
        self.problems.append(f"{where}: {msg}")

    def check(self, cond, where, msg):
        if not cond:
            self.fail(where, msg)
        return bool(cond)

    def note(self, msg):
        self.notes.append(msg)

    def finish(self):
        for n in self.notes:
            print(f"{self.name}: {n}")
        for p in self.problems:
            print(f"{self.name}: FAIL {p}")
        if self.problems:
            print(f"{self.name}: {len(self.problems)} problem(s)")
            return 1
        print(f"{self.name}: ok")
        return 0


def build_dir():
    d = os.environ.get("TDS_BUILD_DIR")
    return os.path.abspath(d) if d else None


def stage_binary(stage, bdir=None):
    bdir = bdir or build_dir()
    if not bdir:
        return None
    for sub in (stage, ""):
        p = os.path.join(bdir, sub, f"tds-{stage}")
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def stage_of_image(image):
    """'registry/tds-zoho-sync/writer:0.1.0' → 'writer' (None for other images)."""
    if not image:
        return None
    m = re.search(r"tds-zoho-sync/(ingress|fetcher|processor|writer)(?:[:@]|$)", image)
    return m.group(1) if m else None


# A valid organizations file for running --print-config locally: every secret
# inline, so nothing outside this file is needed.
_DUMMY_ORGS = {
    "organizations": [{
        "org_id": "60000000001", "name": "check", "product": "inventory",
        "data_center": "com", "client_id": "1000.CHECK", "client_secret": "check-secret",
        "refresh_token": "1000.check.refresh", "webhook_secrets": ["check-webhook-secret"],
        "entities": ["items"],
    }]
}
_DUMMY_VALUES = {
    "TDS_DATABASE_URL": "postgresql://tds@127.0.0.1:1/tds",
}


class StageConfig:
    """The settings table of one stage, as its binary prints it."""

    def __init__(self, stage, known, required, secret, defaults):
        self.stage = stage
        self.known = known          # set of names
        self.required = required    # names whose absence stops start-up
        self.secret = secret        # names printed masked
        self.defaults = defaults    # name → printed value with only required ones set

    def __repr__(self):
        return (f"StageConfig({self.stage}: {len(self.known)} settings, "
                f"required={sorted(self.required)})")


_cache = {}


def _base_env():
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    return env


def _tmpdir():
    d = os.path.join(tempfile.gettempdir(), f"tds-deploy-check-{os.getpid()}")
    if not os.path.isdir(d):
        os.makedirs(d, exist_ok=True)
        atexit.register(shutil.rmtree, d, True)  # gone with the process that made it
    return d


def dummy_orgs_file():
    p = os.path.join(_tmpdir(), "orgs.json")
    if not os.path.exists(p):
        with open(p, "w") as f:
            json.dump(_DUMMY_ORGS, f)
    return p


def run_print_config(binary, env, timeout=20):
    return subprocess.run([binary, "--print-config"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def parse_print_config(text):
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(TDS_[A-Z0-9_]+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def stage_config(stage, bdir=None):
    """Ask tds-<stage> for its table. Required settings are found the way an
    operator meets them: start from an empty environment and add each one the
    binary says is missing, until --print-config succeeds."""
    key = (stage, bdir or build_dir())
    if key in _cache:
        return _cache[key]
    binary = stage_binary(stage, bdir)
    if binary is None:
        raise FileNotFoundError(f"tds-{stage} not found under TDS_BUILD_DIR={build_dir()!r}")
    env = _base_env()
    required = set()
    for _ in range(32):
        r = run_print_config(binary, env)
        if r.returncode == 0:
            break
        m = re.search(r"missing required setting (TDS_[A-Z0-9_]+)", r.stderr)
        if not m:
            raise RuntimeError(f"tds-{stage} --print-config exited {r.returncode}: "
                               f"{r.stderr.strip()[-2000:]}")
        name = m.group(1)
        if name in required:
            raise RuntimeError(f"tds-{stage} keeps asking for {name}: {r.stderr.strip()}")
        required.add(name)
        env[name] = dummy_orgs_file() if name == "TDS_CONFIG" else _DUMMY_VALUES.get(name, "x")
    else:
        raise RuntimeError(f"tds-{stage} --print-config never succeeded")
    printed = parse_print_config(r.stdout)
    if not printed:
        raise RuntimeError(f"tds-{stage} --print-config printed no NAME=value lines")
    secret = {k for k, v in printed.items() if v == "********"}
    # A secret that is unset prints "(unset)", not the mask: probe those too by
    # setting each unset one to a dummy value and seeing whether it is masked.
    unset = [k for k, v in printed.items() if v == "(unset)"]
    batches = [unset] if unset else []
    while batches:
        batch = batches.pop()
        env2 = dict(env)
        for k in batch:
            env2[k] = "probe-value"
        r2 = run_print_config(binary, env2)
        if r2.returncode == 0:
            for k, v in parse_print_config(r2.stdout).items():
                if k in batch and v == "********":
                    secret.add(k)
        elif len(batch) > 1:  # some setting refused the probe value: one at a time
            batches.extend([k] for k in batch)
    sc = StageConfig(stage, set(printed), required, secret, printed)
    _cache[key] = sc
    return sc


def check_stage_env(rep, where, stage, env, resolve_file=None):
    """Check one container's environment (name → value, None = from a
    reference we cannot see) against the stage's table:
      * every TDS_* name it sets is one the stage knows;
      * every required setting is set;
      * secrets are given as file:/env: references, never inline;
      * the values themselves pass the stage's own parser (--print-config
        with this environment, secrets and TDS_CONFIG swapped for local files).
    resolve_file(path) may tell whether a file: reference is backed by a
    mounted secret; it returns an error text or None."""
    sc = stage_config(stage)
    names = set(env)
    for n in sorted(names):
        if not rep.check(n in sc.known, where,
                         f"sets {n}, which tds-{stage} does not know "
                         f"(known: {', '.join(sorted(sc.known))})"):
            continue
    for n in sorted(sc.required - names):
        rep.fail(where, f"does not set {n}, which tds-{stage} requires")
    for n in sorted(names & sc.secret):
        v = env[n]
        if v is None:
            continue
        if not (v.startswith("file:") or v.startswith("env:")):
            rep.fail(where, f"{n} is a secret but is given inline; use file:/path from a Secret")
        elif v.startswith("file:") and resolve_file:
            err = resolve_file(v[5:])
            if err:
                rep.fail(where, f"{n}={v}: {err}")
        elif v.startswith("env:"):
            rep.check(v[4:] in env, where, f"{n}={v} names a variable the container does not set")
    for n in sorted(names - sc.secret):
        v = env[n]
        if v is not None and (v.startswith("file:") or v.startswith("env:")):
            rep.fail(where, f"{n}={v} is a reference, but tds-{stage} does not resolve "
                            f"references for {n} (not a secret setting)")
    # Let the binary parse the values.
    penv = _base_env()
    for n, v in env.items():
        if n not in sc.known or v is None:
            continue
        if n in sc.secret:
            v = _DUMMY_VALUES.get(n, "dummy-secret")
        elif n == "TDS_CONFIG":
            v = dummy_orgs_file()
        penv[n] = v
    for n in sc.required - names:
        penv[n] = dummy_orgs_file() if n == "TDS_CONFIG" else _DUMMY_VALUES.get(n, "x")
    r = run_print_config(stage_binary(stage), penv)
    rep.check(r.returncode == 0, where,
              f"tds-{stage} rejects this environment: {r.stderr.strip()[-500:]}")


def which(tool):
    return shutil.which(tool)


def parse_endpoint(ep):
    """'tcp://tds-writer:5559' → ('tds-writer', 5559); None if not tcp://host:port."""
    m = re.match(r"^tcp://([^:/]+):(\d+)$", ep.strip())
    return (m.group(1), int(m.group(2))) if m else None


def hostport_port(s):
    m = re.match(r"^.*:(\d+)$", s or "")
    return int(m.group(1)) if m else None


# The stages that read the organizations file (TDS_CONFIG), and which of its
# credentials each resolves (file:/env: references), so must have mounted.
# The writer reads only org_id and incremental_every_s (its alert rule
# entity_stale, writer/ALERTS.md): without the file it assumes
# TDS_ALERT_SYNC_INTERVAL_S for every organization. The ingress resolves only
# the webhook secrets (tds_orgs_load_webhooks): the OAuth ones are not its to
# hold.
ORGS_STAGES = ("ingress", "fetcher", "writer")
ORGS_CREDENTIAL_STAGES = ("ingress", "fetcher")
OAUTH_FIELDS = ("client_id", "client_secret", "refresh_token")
ORGS_CREDENTIALS = {"ingress": (), "fetcher": OAUTH_FIELDS}
# The organizations' webhook credentials (lists): read by the ingress only.
WEBHOOK_FIELDS = ("webhook_secrets", "webhook_tokens")
WEBHOOK_CREDENTIAL_STAGES = ("ingress",)


# Which setting of which stage connects to which downstream stage.
CONNECTS = {
    "ingress": {"TDS_PROCESSOR_CONNECT": "processor", "TDS_FETCHER_CONNECT": "fetcher",
                "TDS_ACK_CONNECT": "writer"},
    "fetcher": {"TDS_PROCESSOR_CONNECT": "processor", "TDS_ACK_CONNECT": "writer"},
    "processor": {"TDS_WRITER_CONNECT": "writer"},
    "writer": {},
}
# The bind setting (of the downstream stage) each connect setting must match.
BIND_FOR = {"TDS_PROCESSOR_CONNECT": "TDS_PROCESSOR_BIND", "TDS_FETCHER_CONNECT": "TDS_FETCHER_BIND",
            "TDS_ACK_CONNECT": "TDS_ACK_BIND", "TDS_WRITER_CONNECT": "TDS_WRITER_BIND"}
DEFAULT_BIND = {"TDS_PROCESSOR_BIND": 5557, "TDS_FETCHER_BIND": 5556, "TDS_ACK_BIND": 5559,
                "TDS_WRITER_BIND": 5558}


def bind_port(env, name):
    v = env.get(name)
    if not v:
        return DEFAULT_BIND[name]
    m = re.match(r"^tcp://[^:]+:(\d+)$", v.split(",")[0].strip())
    return int(m.group(1)) if m else None


# Metric families the stages expose and deploy/prometheus + deploy/grafana use.
# The live check (tests/integration/test_deploy.py::test_metric_names_exist)
# compares every name used there with the stages' real /metrics.
METRIC_FAMILIES = {
    "ingress": {"tds_ingress_requests_total", "tds_ingress_signature_failures_total",
                "tds_ingress_duplicates_total", "tds_ingress_journal_bytes",
                "tds_ingress_journal_held_ratio", "tds_ingress_unacked",
                "tds_ingress_group_commit_size", "tds_ingress_fsync_seconds",
                "tds_ingress_accept_seconds", "tds_ingress_journal_no_space",
                "tds_ingress_dead_letters_total", "tds_ingress_unacked_full",
                "tds_ingress_bad_acks_total", "tds_ingress_headers_cut_total",
                "tds_ingress_journal_errors_total", "tds_ingress_journal_delete_errors_total",
                "tds_ingress_journal_torn_at_start", "tds_ingress_journal_damaged_bytes_at_start"},
    "fetcher": {"tds_fetcher_api_calls_total", "tds_fetcher_api_seconds", "tds_fetcher_429_total",
                "tds_fetcher_quota_remaining", "tds_fetcher_org_owned",
                "tds_fetcher_tokens_refreshed_total",
                "tds_fetcher_pages_inflight", "tds_fetcher_inflight_bytes", "tds_fetcher_run_records",
                "tds_fetcher_runs_total",
                "tds_fetcher_last_success_timestamp_seconds",
                "tds_fetcher_incremental_interval_seconds",
                "tds_fetcher_token_refresh_failures_total"},
    "processor": {"tds_processor_records_total", "tds_processor_rejects_total",
                  "tds_processor_messages_total", "tds_processor_dead_letters_total"},
    "writer": {"tds_writer_rows_written_total", "tds_writer_batches_total", "tds_writer_batch_rows",
               "tds_writer_commit_seconds", "tds_writer_rejects_total", "tds_writer_reconnects_total",
               "tds_writer_acks_sent_total", "tds_writer_db_up", "tds_writer_webhook_age_seconds",
               "tds_writer_dead_letters_total"},
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promql_metric_names(expr):
    """Every tds_* metric name an expression mentions (label values and
    strings removed first)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(re.findall(r"\b(tds_[a-zA-Z0-9_:]+)\b", e))


def family_of(name, families):
    """'x_bucket' → 'x' when x is a known family; a known name → itself."""
    if name in families:
        return name
    for suf in HISTOGRAM_SUFFIXES:
        if name.endswith(suf) and name[: -len(suf)] in families:
            return name[: -len(suf)]
    return None
