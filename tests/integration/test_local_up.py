"""deploy/local/up and deploy/local/down, the newcomer's command, as the README
gives it: installs what is missing (nothing, here), starts PostgreSQL, the
simulator and the four stages, syncs every entity with its progress shown,
and says how to look at the data. Runs the build under test (--build-dir) on
a port block of its own; afterwards every table holds the simulator's
records, signed webhooks to the ingress it started are applied, and the
stages' logs hold no sanitizer report. The shorter tests run down and
lib.sh's functions on their own: pid files, the cluster's socket, tokens.
The last ones: what `tds-fetcher sync --follow` (as `up` runs it) says when
a request cannot move (its fetcher gone, the token refresh failing or
refused), `up` when a stage exits while it follows, a second `up` on the
same state, and port blocks past 65535."""
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time

import psycopg2
import pytest

from conftest import PG_BIN, check_sanitizers, free_port, http_get, wait_until
from fetcher_util import org_spec
from ports import port_block
from pipeline import CHECKS
from sim_fixture import Sim, sim  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(ROOT, "deploy/local/lib.sh")


def _env():
    return {k: v for k, v in os.environ.items() if not k.startswith("TDS_")}


def _lib(*args, check=True):
    """Run one of deploy/local/lib.sh's functions: _lib("pg_url", state, port)."""
    r = subprocess.run(["bash", "-c", '. "$0"; "$@"', LIB, *map(str, args)], env=_env(),
                       capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def _down(state, *extra):
    return subprocess.run([os.path.join(ROOT, "deploy/local/down"), "--state", str(state),
                           *extra], env=_env(), capture_output=True, text=True, timeout=120)


def _pg_running(state):
    """Whether the state's cluster (wherever it lives: pg_home) has a server."""
    data = os.path.realpath(os.path.join(state, "pg"))
    if not os.path.exists(os.path.join(data, "PG_VERSION")):
        return False
    cmd = [os.path.join(PG_BIN, "pg_ctl"), "-D", data, "status"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    return subprocess.run(cmd, cwd="/", capture_output=True).returncode == 0


def _tcp_refused(port):
    with socket.socket() as s:
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def _running(pid):
    """Runs and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _printed_url(text):
    m = re.search(r"^   psql '([^']+)'$", text, re.M)
    assert m, text
    return m.group(1)


def _live_ids(sim, cur, org, ent):
    table, idcol = CHECKS[ent][0], CHECKS[ent][1]
    truth = sim.truth(org, ent)
    invalid = {r["id"] for r in truth.get("invalid", [])}
    want = {str(r[truth["id_field"]]) for r in truth["records"]} - invalid
    cur.execute(f"SELECT {idcol} FROM zoho.{table} WHERE org_id = %s AND deleted_at IS NULL", (org,))
    return want, {r[0] for r in cur.fetchall()}


def _equal(sim, cur, org):
    for ent in CHECKS:
        want, got = _live_ids(sim, cur, org, ent)
        if want != got:
            return f"{ent}: {len(want - got)} missing, {len(got - want)} extra"
    return None


def test_up_syncs_shows_progress_and_down_stops(tmp_path):
    state = tmp_path / "state"
    env = _env()
    # exported TDS_* settings do not reach the stages: four stages binding
    # this one address would not all start
    env["TDS_EVENTS_BIND"] = f"tcp://127.0.0.1:{free_port()}"
    build = os.environ["TDS_BUILD_DIR"]
    out = None
    for _ in range(3):  # a block of ~40 ports, below the ephemeral range
        base = port_block(240)
        out = subprocess.run([os.path.join(ROOT, "deploy/local/up"), "--detach", "--clean",
                              "--build-dir", build, "--state", str(state), "--port-base", str(base),
                              "--items", "400", "--orgs", "1", "--processors", "2",
                              "--trickle", "0"],
                             env=env, capture_output=True, text=True, timeout=600)
        if "ports in use" not in out.stderr:
            break
    try:
        print(out.stdout[:8000])
        assert out.returncode == 0, out.stderr[-3000:]
        text = out.stdout
        assert "all stages ready" in text
        # (not always request 1: the fetcher's own first sync may have queued
        # a reconciliation before `up` queued its request)
        assert re.search(r"^following sync request \d+: full all for organization 60001$", text, re.M)
        assert re.search(r"^sync request \d+ done:$", text, re.M), text
        # one line a run, each record once; items came in list and detail pages
        done = dict(re.findall(r"^  (\w+) +full +completed (\d+) records, \d+ fetched", text, re.M))
        assert set(done) == {"warehouses", "item_groups", "items", "contacts", "sales_orders",
                             "invoices"}, text
        assert done["items"] == "400" and done["contacts"] == "100", done
        # PostgreSQL only on its socket, in a folder of the server's user alone
        assert "Look at the data:" in text
        url = _printed_url(text)
        sockdir = os.path.join(os.path.dirname(os.path.realpath(state / "pg")), "pgsock")
        assert url == f"postgresql://postgres@/tds?host={sockdir}&port={base}", url
        assert stat.S_IMODE(os.stat(sockdir).st_mode) == 0o700
        assert _tcp_refused(base), f"PostgreSQL accepts TCP connections on 127.0.0.1:{base}"
        # every replica asked for is up, each on ports of its own
        admins = {f.name[:-6]: int(f.read_text()) for f in (state / "run").glob("*.admin")}
        assert set(admins) == {"writer-0", "processor-0", "processor-1", "fetcher-0",
                               "ingress-0"}, admins
        for name, port in admins.items():
            assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, name
        # the stages talk over Unix sockets in a folder of this user alone,
        # one bound by each replica; the ZeroMQ ports of old are not listened on
        zdir = state / "run" / "zmq"
        assert stat.S_IMODE(os.stat(zdir).st_mode) == 0o700
        assert sorted(p.name for p in zdir.iterdir() if stat.S_ISSOCK(p.stat().st_mode)) == \
            ["ack-0", "fetcher", "processor-0", "processor-1", "writer-0"], list(zdir.iterdir())
        for off in range(30, 34):
            assert _tcp_refused(base + off), f"a ZeroMQ socket on 127.0.0.1:{base + off}"

        sim = Sim(None, base + 1)
        conn = psycopg2.connect(url)
        conn.autocommit = True
        cur = conn.cursor()
        assert _equal(sim, cur, "60001") is None, _equal(sim, cur, "60001")
        cur.execute("SELECT count(*) FROM zoho.item_stock WHERE org_id = '60001'")
        assert cur.fetchone()[0] >= 400

        # signed webhooks to the ingress `up` started, as its trickle sends them
        sim.webhooks("60001", f"http://127.0.0.1:{base + 2}/webhooks/zoho/60001",
                     secret="demo-webhook-secret")
        sim.stream("60001", rate_per_s=20, seconds=2)
        wait_until(lambda: (cur.execute("SELECT count(*) FROM tds.webhook_events"),
                            cur.fetchone()[0])[1] >= 20, 30, "webhooks applied")
        wait_until(lambda: _equal(sim, cur, "60001") is None, 60, "the tables equal to the truth again")
        cur.execute("SELECT count(*) FROM tds.rejected")
        assert cur.fetchone()[0] == 0
        conn.close()
    finally:
        down = subprocess.run([os.path.join(ROOT, "deploy/local/down"), "--state", str(state)],
                              env=env, capture_output=True, text=True, timeout=120)
        left = list((state / "run").glob("*.pid"))
        logs = {p.name: p.read_text(errors="replace") for p in sorted((state / "logs").glob("*"))
                if p.is_file()}
        # the cluster may live outside the state folder (pytest's folders are
        # root's alone, as /root is): --clean removes it wherever it is
        pg = os.path.realpath(state / "pg")
        clean = subprocess.run([os.path.join(ROOT, "deploy/local/down"), "--state", str(state),
                                "--clean"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not left, f"down left processes behind: {left}"
    for name, text in logs.items():
        check_sanitizers(name, text)
    assert clean.returncode == 0 and not state.exists() and not os.path.exists(pg), clean.stdout


def test_up_with_a_real_organizations_file_asks_for_a_code_then_syncs(tmp_path, sim):
    """TDS_CONFIG names the organizations (here the simulator stands in for
    Zoho, at its own address): an organization without a refresh token stops
    `up` at once with what to do; --auth-code turns a console code into one,
    kept in tds.oauth_tokens, and the sync runs. One code serves both
    organizations of one Zoho user (--auth-code 60001,60002=CODE)."""
    s = sim(orgs=["id=60001,tz=+0300,stock=warehouses,product=inventory,items=60,groups=5,"
                  "contacts=10,invoices=10,salesorders=10,warehouses=2",
                  "id=60002,tz=+0300,stock=warehouses,product=inventory,items=20,groups=2,"
                  "contacts=5,invoices=5,salesorders=5,warehouses=2"],
            extra_args=["--grant-code", "1000.consolecode", "--limits-off"])
    orgs = tmp_path / "orgs.json"
    orgs.write_text(json.dumps({"organizations": [{
        "org_id": org, "product": "inventory", "data_center": "com", "accounts_url": s.url,
        "client_id": "1000.SIMCLIENT", "client_secret": "simsecret",
        "webhook_secrets": ["a-secret"], "timezone_offset": "+0300", "daily_reserve": 0}
        for org in ("60001", "60002")]}))
    state = tmp_path / "state"
    env = _env()
    env["TDS_CONFIG"] = str(orgs)
    build = os.environ["TDS_BUILD_DIR"]

    def up(*extra):
        for _ in range(3):
            base = port_block(240)
            out = subprocess.run([os.path.join(ROOT, "deploy/local/up"), "--detach",
                                  "--build-dir", build, "--state", str(state),
                                  "--port-base", str(base), "--processors", "1", *extra],
                                 env=env, capture_output=True, text=True, timeout=600)
            if "ports in use" not in out.stderr:
                return base, out
        return base, out

    try:
        _, out = up()
        assert out.returncode == 1, (out.stdout[-2000:], out.stderr[-2000:])
        for org in ("60001", "60002"):
            assert f"organization {org} has no refresh token" in out.stderr and \
                f"--auth-code {org}=CODE" in out.stderr, out.stderr
        assert "one code serves all of one Zoho user's organizations" in out.stderr and \
            "--auth-code 60001,60002=CODE" in out.stderr, out.stderr
        assert not list((state / "run").glob("*.pid")), "up left processes behind"
        assert "using the real organizations" in out.stdout and "simulator" not in \
            out.stdout.replace("(no simulator)", ""), out.stdout

        base, out = up("--auth-code", "60001,60002=1000.consolecode")
        print(out.stdout[-4000:])
        assert out.returncode == 0, out.stderr[-3000:]
        assert "refresh token stored for organizations 60001, 60002" in out.stdout
        assert len(re.findall(r"^sync request \d+ done:$", out.stdout, re.M)) == 2, out.stdout
        conn = psycopg2.connect(_printed_url(out.stdout))
        conn.autocommit = True
        cur = conn.cursor()
        for org in ("60001", "60002"):
            assert _equal(s, cur, org) is None, _equal(s, cur, org)
        cur.execute("SELECT count(*) FILTER (WHERE refresh_token IS NOT NULL), "
                    "count(DISTINCT family) FROM tds.oauth_tokens")
        assert cur.fetchone() == (2, 1)
        conn.close()
        assert s.stats()["token"]["code_grants"] == 1, s.stats()["token"]
    finally:
        clean = subprocess.run([os.path.join(ROOT, "deploy/local/down"), "--state", str(state),
                                "--clean"], env=env, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0 and not state.exists(), clean.stdout


def _up_until_it_fails(state, env):
    for _ in range(3):
        base = port_block(240)
        out = subprocess.run([os.path.join(ROOT, "deploy/local/up"), "--detach",
                              "--build-dir", os.environ["TDS_BUILD_DIR"], "--state", str(state),
                              "--port-base", str(base)],
                             env=env, capture_output=True, text=True, timeout=600)
        if "ports in use" not in out.stderr:
            break
    return out


def test_up_stops_what_it_started_when_it_fails(tmp_path):
    """An unreadable TDS_CONFIG stops `up` before anything starts; a failure
    once PostgreSQL runs (here an organizations file that is not JSON) stops
    what it had started, PostgreSQL too."""
    state = tmp_path / "state"
    env = _env()
    try:
        env["TDS_CONFIG"] = str(tmp_path / "nonexistent.json")
        out = _up_until_it_fails(state, env)
        assert out.returncode == 2 and "cannot read TDS_CONFIG" in out.stderr, out.stderr
        assert "starting PostgreSQL" not in out.stdout and not _pg_running(state), out.stdout

        (tmp_path / "orgs.json").write_text("not json\n")
        env["TDS_CONFIG"] = str(tmp_path / "orgs.json")
        out = _up_until_it_fails(state, env)
        assert out.returncode != 0, out.stdout[-2000:]
        assert "starting PostgreSQL" in out.stdout, (out.stdout[-2000:], out.stderr[-2000:])
        assert "stopped what it had started" in out.stderr, out.stderr[-2000:]
        assert not _pg_running(state), "up left PostgreSQL running"
        assert not list((state / "run").glob("*.pid")), "up left processes behind"
    finally:
        clean = _down(state, "--clean")
    assert clean.returncode == 0, clean.stderr


def test_down_signals_only_the_processes_it_started(tmp_path):
    """A pid file left from an earlier run (a reboot since, or the pid reused)
    may name another program now: down signals a pid only while its start
    time is the one recorded, or, in a pid file of an earlier version (the pid
    alone), while it runs one of the project's binaries (tds-*)."""
    run = tmp_path / "state" / "run"
    run.mkdir(parents=True)
    (tmp_path / "state" / "logs").mkdir()
    others = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    ours = tmp_path / "tds-sleep"
    shutil.copy("/bin/sleep", ours)
    old_ours = subprocess.Popen([str(ours), "60"])
    try:
        (run / "fetcher-0.pid").write_text(f"{others[0].pid}\n")     # earlier version's
        (run / "writer-0.pid").write_text(f"{others[1].pid} 1\n")    # started at another time
        (run / "ingress-0.pid").write_text(f"{old_ours.pid}\n")      # earlier version's, ours
        _lib("start_bg", tmp_path / "state", "zohosim", "sleep", "60")  # as up starts one
        started = int((run / "zohosim.pid").read_text().split()[0])
        assert _running(started)
        r = _down(tmp_path / "state")
        assert r.returncode == 0, r.stderr
        assert others[0].poll() is None and others[1].poll() is None, \
            "down signalled a process it had not started"
        assert old_ours.wait(timeout=10) == -signal.SIGTERM
        wait_until(lambda: not _running(started), 10, "the process start_bg started to end")
        assert not list(run.glob("*.pid")), list(run.glob("*.pid"))
    finally:
        for p in others + [old_ours]:
            p.kill()
            p.wait()


def test_down_forgets_the_admin_ports(tmp_path):
    """`up --processors 3` then `up`: the summary's Metrics line lists the
    *.admin files, so down removes them with the pid files."""
    run = tmp_path / "state" / "run"
    run.mkdir(parents=True)
    for name, port in (("processor-2", 20312), ("writer-0", 20013)):
        (run / f"{name}.admin").write_text(f"{port}\n")
    r = _down(tmp_path / "state")
    assert r.returncode == 0, r.stderr
    assert not list(run.glob("*.admin")), list(run.glob("*.admin"))


def test_down_says_what_it_was_given_wrong(tmp_path):
    """`down --state` without a folder printed "$2: unbound variable" for
    ever (no set -e: the shift failed and the loop never ended); `down` of a
    folder that does not exist said "stopped; state kept in" it."""
    down = os.path.join(ROOT, "deploy/local/down")
    for args in (["--state"], ["--clean", "--state"]):
        r = subprocess.run([down, *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and "--state wants a folder" in r.stderr, r
        assert r.stdout == "" and r.stderr.count("\n") == 1, r
    r = _down(tmp_path / "nowhere")
    assert r.returncode == 0 and "nothing to stop: no state folder at" in r.stdout, r
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="a cluster outside the state folder is root's case")
def test_down_stops_a_cluster_kept_outside_a_state_folder_that_is_gone():
    """As root, a state folder the postgres account cannot enter keeps its
    cluster under /var/lib/postgresql/tds-local/ (lib.sh pg_home): with the
    state folder removed by hand, down must still stop and --clean remove
    that cluster, not say there is nothing to stop."""
    top = tempfile.mkdtemp(prefix="tds-local-")   # 0700: postgres cannot enter
    state = os.path.join(top, "state")
    os.makedirs(os.path.join(state, "logs"))
    home = _lib("pg_home", state).stdout.strip()
    assert home.startswith("/var/lib/postgresql/tds-local/"), home
    try:
        r = _lib("start_postgres", state, free_port(), check=False)
        assert r.returncode == 0, r.stderr
        pid = int(open(os.path.join(home, "pg", "postmaster.pid")).readline())
        shutil.rmtree(top)
        r = _down(state, "--clean")
        assert r.returncode == 0 and "nothing to stop" not in r.stdout, r
        assert not os.path.exists(home)
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10, "the cluster stopped")
    finally:
        if os.path.exists(os.path.join(home, "pg", "PG_VERSION")):
            _lib("stop_postgres", state, check=False)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def local_pg():
    """start_postgres's cluster in a state folder whose path holds spaces,
    where the server's user may enter (so the cluster lives in it)."""
    top = tempfile.mkdtemp(prefix="tds local ")
    os.chmod(top, 0o755)
    state = os.path.join(top, "a state")
    os.makedirs(os.path.join(state, "logs"))
    port = free_port()
    try:
        r = _lib("start_postgres", state, port, check=False)
        assert r.returncode == 0, r.stderr
        yield state, port, _lib("pg_url", state, port).stdout.strip()
    finally:
        _lib("stop_postgres", state, check=False)
        shutil.rmtree(top, ignore_errors=True)


def test_postgres_listens_only_on_its_own_socket(local_pg):
    """No TCP: the cluster trusts every connection, and tds.oauth_tokens may
    hold a real organization's refresh token. Its socket folder is the
    server's user's alone; the URL up gives the stages reaches it."""
    state, port, url = local_pg
    sockdir = os.path.join(state, "pgsock")
    assert url == f"postgresql://postgres@/tds?host={sockdir.replace(' ', '%20')}&port={port}"
    st = os.stat(sockdir)
    assert stat.S_IMODE(st.st_mode) == 0o700
    owner = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert st.st_uid == owner
    assert os.path.exists(os.path.join(sockdir, f".s.PGSQL.{port}"))
    assert _tcp_refused(port), f"PostgreSQL accepts TCP connections on 127.0.0.1:{port}"
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT current_database(), current_setting('listen_addresses')")
        assert cur.fetchone() == ("tds", "")
    conn.close()


def test_start_postgres_refuses_a_socket_path_too_long(tmp_path):
    top = tempfile.mkdtemp(prefix="tds-local-")
    try:
        os.chmod(top, 0o755)
        state = os.path.join(top, "s" * 100)
        os.makedirs(os.path.join(state, "logs"))
        r = _lib("start_postgres", state, 20000, check=False)
        assert r.returncode == 1, r.stderr
        assert "longer than a Unix socket path may be (107 bytes)" in r.stderr, r.stderr
        assert not os.path.exists(os.path.join(state, "pg")), "initdb ran all the same"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_demo_run_forgets_only_the_demo_organizations_tokens(local_pg, bins, tmp_path):
    """A demo run's simulator is a new one: its organizations' cached tokens
    go. A real organization's refresh token, stored by a run with TDS_CONFIG
    on the same state folder, stays."""
    state, port, url = local_pg
    env = _env()
    env["TDS_DATABASE_URL"] = url  # the stages connect as up has them do
    r = subprocess.run([bins.require("tds-writer"), "migrate"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("INSERT INTO tds.oauth_tokens (org_id, refresh_token) VALUES "
                "('60001', 'demo'), ('60002', 'demo'), ('777000', 'a real one')")
    orgs = tmp_path / "orgs.json"
    _lib("write_demo_orgs", orgs, 1, 2)
    _lib("forget_demo_tokens", url, orgs)
    cur.execute("SELECT org_id, refresh_token FROM tds.oauth_tokens ORDER BY org_id")
    assert cur.fetchall() == [("777000", "a real one")]
    conn.close()


# ------------------------------------------------ following a request, and `up` while it follows

class _Reader:
    """A process's stdout and stderr as they arrive, each read by a thread."""

    def __init__(self, cmd, env):
        self.p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        self.out, self.err = [], []
        self.threads = [threading.Thread(target=self._pump, args=(f, acc), daemon=True)
                        for f, acc in ((self.p.stdout, self.out), (self.p.stderr, self.err))]
        for t in self.threads:
            t.start()

    @staticmethod
    def _pump(f, acc):
        for line in f:
            acc.append(line)

    def stdout(self):
        return "".join(self.out)

    def stderr(self):
        return "".join(self.err)

    def wait_for(self, text, timeout):
        def seen():
            if isinstance(text, str):
                found = text in self.stdout()
            else:
                found = text.search(self.stdout()) is not None
            if not found and self.p.poll() is not None:
                raise AssertionError(f"exited {self.p.returncode} before {text!r}:\n"
                                     + self.stdout()[-3000:] + self.stderr()[-3000:])
            return found
        try:
            wait_until(seen, timeout, repr(text), interval=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}\nstdout:\n{self.stdout()[-3000:]}\nstderr:\n"
                                 f"{self.stderr()[-3000:]}") from None

    def finish(self, timeout=60):
        """Wait for the exit (SIGTERM to the session first if it still runs)."""
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        for t in self.threads:
            t.join(5)
        return self.p.returncode


def _migrated(db, bins):
    env = _env()
    env["TDS_DATABASE_URL"] = db.url
    r = subprocess.run([bins.require("tds-writer"), "migrate"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def _follow_env(db, tmp_path):
    orgs = tmp_path / "orgs.json"
    orgs.write_text(json.dumps({"organizations": [org_spec("60001", accounts_url="http://127.0.0.1:9")]}))
    env = _env()
    env.update(TDS_DATABASE_URL=db.url, TDS_CONFIG=str(orgs))
    return env


def _claimed_request(db, runs=()):
    """A request for every entity of 60001, claimed by fetcher-0, with a
    running run for each entity in runs."""
    rid = db.query("INSERT INTO tds.sync_requests (org_id, entity, mode, requested_by, claimed_by, "
                   "claimed_at) VALUES ('60001', 'all', 'full', 'test', 'fetcher-0', now()) "
                   "RETURNING id")[0][0]
    for i, ent in enumerate(runs):
        db.execute("INSERT INTO tds.sync_runs (run_id, org_id, entity, mode, records_walked, "
                   "pages_fetched) VALUES (%s, '60001', %s, 'full', 400, 2)", f"rq{rid}.{i}", ent)
    return rid


def _hold_org(db):
    """A session holding organization 60001's lock, as its owning fetcher does (owner.c)."""
    c = db.connect()
    with c.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(hashtext('tds-org:' || '60001'))")
    return c


def test_follow_says_when_the_fetcher_that_took_the_request_is_gone(db, bins, tmp_path):
    """The fetcher that claimed a request is killed: its claim stays, and the
    follow used to say "waiting for a fetcher to take the request (claimed)"
    (no run yet) or repeat the last progress line, for ever. While no
    tds-fetcher holds the organization's lock (owner.c) and nothing moves, it
    now says that fetcher is gone, and once one holds it again, so."""
    _migrated(db, bins)
    env = _follow_env(db, tmp_path)
    owner = _hold_org(db)
    unstarted = _claimed_request(db)
    started = _claimed_request(db, runs=["warehouses"])
    cli = bins.require("tds-fetcher")
    follows = [_Reader([cli, "sync", "--follow", str(rid)], env) for rid in (unstarted, started)]
    try:
        for f in follows:
            f.wait_for("following sync request", 30)
        time.sleep(8)  # the owner holds the lock: nothing is said
        for f in follows:
            assert "gone" not in f.stdout() and f.p.poll() is None, f.stdout()
        owner.close()  # the fetcher dies: its session ends, and the lock with it
        gone = re.compile(r"fetcher-0, which took this request, is gone: no tds-fetcher holds "
                          r"organization 60001")
        for f in follows:
            f.wait_for(gone, 30)
        # the progress line says it too, not only the line above it
        assert re.search(r"^request taken by fetcher-0, waiting for its first run \(\d+s\); "
                         r"fetcher-0 gone: no tds-fetcher holds the organization$",
                         follows[0].stdout(), re.M), follows[0].stdout()
        assert re.search(r"^\[[#-]+\] 1/6 warehouses full: 400 records.*; fetcher-0 gone: no "
                         r"tds-fetcher holds the organization$", follows[1].stdout(), re.M), \
            follows[1].stdout()
        owner = _hold_org(db)  # a fetcher started again
        for f in follows:
            f.wait_for("a tds-fetcher holds organization 60001 again", 30)
            assert f.p.poll() is None  # still following: that fetcher takes the request over
    finally:
        owner.close()
        for f in follows:
            f.finish()


def test_follow_shows_a_token_refresh_that_fails(db, bins, tmp_path):
    """Zoho's token endpoint out of reach (no network, a proxy needed) or the
    organization paused (its refresh token revoked, its client refused): the
    runs wait, and the progress line showed zeros for ever while only the
    fetcher's log said why. The follow now says it, from tds.oauth_tokens."""
    _migrated(db, bins)
    env = _follow_env(db, tmp_path)
    owner = _hold_org(db)
    rid = _claimed_request(db, runs=["warehouses"])
    f = _Reader([bins.require("tds-fetcher"), "sync", "--follow", str(rid)], env)
    try:
        f.wait_for("following sync request", 30)
        db.execute("INSERT INTO tds.oauth_tokens (org_id, status, last_error) "
                   "VALUES ('60001', 'ok', 'token endpoint did not answer')")
        f.wait_for("token refresh failing for organization 60001: token endpoint did not answer", 20)
        f.wait_for(re.compile(r"^\[[#-]+\] 1/6 warehouses full: .*; token refresh failing$", re.M), 20)
        db.execute("UPDATE tds.oauth_tokens SET status = 'revoked', last_error = 'invalid_code'")
        f.wait_for("organization 60001 is paused: Zoho refused its refresh token (invalid_code)", 20)
        assert "tds-fetcher auth exchange --org 60001" in f.stdout(), f.stdout()
        db.execute("UPDATE tds.oauth_tokens SET status = 'invalid', last_error = 'invalid_client'")
        f.wait_for("organization 60001 is paused: Zoho refused its client credentials "
                   "(invalid_client)", 20)
        db.execute("UPDATE tds.oauth_tokens SET status = 'locked', last_error = 'Access Denied', "
                   "locked_until = now() + interval '20 minutes'")
        f.wait_for(re.compile(r"token refresh for organization 60001 is locked out by Zoho until "
                              r".*: Access Denied"), 20)
        db.execute("UPDATE tds.oauth_tokens SET status = 'ok', last_error = NULL, locked_until = NULL")
        f.wait_for("token refresh for organization 60001 works again", 20)
        assert "gone" not in f.stdout(), f.stdout()
    finally:
        owner.close()
        f.finish()


def _up_cmd(state, base, *extra):
    return [os.path.join(ROOT, "deploy/local/up"), "--build-dir", os.environ["TDS_BUILD_DIR"],
            "--state", str(state), "--port-base", str(base), *extra]


def _start_up(state, env, *extra):
    """`up` running, on a port block of its own (another, when one is taken)."""
    for _ in range(3):
        base = port_block(240)
        up = _Reader(_up_cmd(state, base, *extra), env)
        wait_until(lambda: "== starting PostgreSQL" in up.stdout() or "ports in use" in up.stderr()
                   or up.p.poll() is not None, 300, "up to start PostgreSQL", interval=0.1)
        assert up.p.poll() is None or "ports in use" in up.stderr(), (up.stdout(), up.stderr())
        if "ports in use" not in up.stderr():
            return base, up
        up.finish()
    raise AssertionError("no free port block")


def _left_running(state):
    return [f.name for f in (state / "run").glob("*.pid")
            if _running(int(f.read_text().split()[0]))]


def test_up_stops_and_says_why_when_a_stage_dies_while_it_follows(tmp_path):
    """The fetcher killed during the full sync: `up` waited for ever
    ("waiting for a fetcher to take the request (claimed)", or the last
    progress line). It watches its stages while it follows: it names the one
    that exited, shows the end of its log, stops the rest and exits 1."""
    state = tmp_path / "state"
    base, up = _start_up(state, _env(), "--detach", "--orgs", "1", "--trickle", "0")
    try:
        up.wait_for("following sync request", 300)
        Sim(None, base + 1).faults(p_slow=1.0, slow_ms=300)  # the sync cannot end first
        pid = int((state / "run" / "fetcher-0.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        try:
            up.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("up still runs 60 s after its fetcher was killed:\n"
                                 + up.stdout()[-2000:] + up.stderr()[-2000:]) from None
        assert up.finish() == 1, (up.stdout()[-2000:], up.stderr()[-2000:])
        err = up.stderr()
        assert re.search(r"^deploy/local/up: fetcher-0 exited \(killed by signal 9\) during the full "
                         r"sync; the end of .*fetcher-0\.log:$", err, re.M), err
        assert "stopped what it had started" in err, err
        assert not _left_running(state) and not _pg_running(state), _left_running(state)
    finally:
        up.finish()
        _down(state, "--clean")


def test_up_starts_a_stage_again_when_it_exits_after_the_sync(tmp_path):
    """After the full sync, a foreground `up` only slept: a stage that died
    stayed down with nothing said. It now names it, keeps its log as
    <name>.log.1, and starts it again; the fifth exit within 10 minutes is
    left stopped while the rest run on; the simulator stopping ends `up`."""
    state = tmp_path / "state"
    base, up = _start_up(state, _env(), "--orgs", "1", "--items", "200", "--trickle", "0",
                         "--processors", "1")
    run = state / "run"

    def pid_of(name):
        return int((run / f"{name}.pid").read_text().split()[0])

    def ready(name):
        return http_get(f"http://127.0.0.1:{(run / f'{name}.admin').read_text().strip()}/readyz")[0] == 200

    try:
        up.wait_for("running; press Ctrl-C to stop", 300)
        for n in range(1, 5):
            old = pid_of("processor-0")
            os.kill(old, signal.SIGKILL)
            wait_until(lambda: up.stderr().count("processor-0 exited (killed by signal 9); "
                                                 "started again") == n, 20, f"restart {n}")
            wait_until(lambda: pid_of("processor-0") != old, 10, "a new processor-0")
            wait_until(lambda: ready("processor-0"), 30, "processor-0 ready again")
        assert (state / "logs" / "processor-0.log.1").exists()
        assert "processor-0 exited" not in up.stdout()  # the user's screen: stderr
        # the one processor started again takes the ingress's messages: its
        # socket file, left behind by the killed one, was bound anew
        conn = psycopg2.connect(_printed_url(up.stdout()))
        conn.autocommit = True
        cur = conn.cursor()
        sim = Sim(None, base + 1)
        sim.webhooks("60001", f"http://127.0.0.1:{base + 2}/webhooks/zoho/60001",
                     secret="demo-webhook-secret")
        sim.stream("60001", rate_per_s=20, seconds=2)
        wait_until(lambda: (cur.execute("SELECT count(*) FROM tds.webhook_events"),
                            cur.fetchone()[0])[1] >= 20, 30, "webhooks applied")
        conn.close()
        os.kill(pid_of("processor-0"), signal.SIGKILL)
        wait_until(lambda: "processor-0 exited (killed by signal 9), the fifth time in 10 minutes; "
                           "left stopped" in up.stderr(), 20, "left stopped")
        time.sleep(3)
        assert not (run / "processor-0.pid").exists()
        assert up.p.poll() is None and ready("writer-0") and ready("fetcher-0"), up.stderr()[-2000:]
        os.kill(int((run / "zohosim.pid").read_text().split()[0]), signal.SIGKILL)
        up.p.wait(timeout=30)
        assert up.p.returncode == 1, up.stderr()[-2000:]
        assert re.search(r"^deploy/local/up: zohosim stopped; the end of .*zohosim\.log:$",
                         up.stderr(), re.M), up.stderr()[-2000:]
        assert "stopped what it had started" in up.stderr()
        assert not _left_running(state) and not _pg_running(state), _left_running(state)
    finally:
        up.finish()
        _down(state, "--clean")


def test_down_beside_a_foreground_up_stops_that_up_first(tmp_path):
    """deploy/local/down beside a foreground `up`: `up` went on supervising,
    and a stage it saw gone in the moment between its exit and its pid
    file's removal was started again, untracked (the next `up` then found
    its ports in use), and `up` ended saying PostgreSQL had stopped. `down`
    now stops that `up` first (its TERM trap runs down), then the rest."""
    state = tmp_path / "state"
    base, up = _start_up(state, _env(), "--orgs", "1", "--items", "200", "--trickle", "0")
    try:
        up.wait_for("running; press Ctrl-C to stop", 300)
        out = _down(state)
        assert out.returncode == 0, out.stderr
        up.p.wait(timeout=30)
        assert up.p.returncode == 130, (up.p.returncode, up.stderr()[-2000:])
        assert "== stopping" in up.stdout() and "PostgreSQL stopped" not in up.stderr(), \
            (up.stdout()[-1000:], up.stderr()[-2000:])
        assert not _left_running(state) and not _pg_running(state), _left_running(state)
    finally:
        up.finish()
        _down(state, "--clean")


def test_up_shows_why_a_real_organization_does_not_sync(tmp_path):
    """TDS_CONFIG with a refresh token and Zoho's token endpoint out of reach:
    the progress line showed zeros for ever; it now says the token refresh
    fails, and why."""
    orgs = tmp_path / "orgs.json"
    orgs.write_text(json.dumps({"organizations": [{
        "org_id": "777001", "name": "Real", "product": "inventory", "data_center": "com",
        "client_id": "1000.ABC", "client_secret": "xyz", "webhook_secrets": ["s3cret-one"],
        "timezone_offset": "+0300", "refresh_token": "1000.fake",
        "accounts_url": "http://127.0.0.1:9", "api_url": "http://127.0.0.1:9"}]}))
    state = tmp_path / "state"
    env = _env()
    env["TDS_CONFIG"] = str(orgs)
    _, up = _start_up(state, env, "--detach", "--processors", "1")
    try:
        up.wait_for("token refresh failing for organization 777001: ", 180)
        assert up.p.poll() is None  # the fetcher keeps trying: so does the follow
    finally:
        up.finish()  # SIGTERM: up stops what it started
        _down(state, "--clean")
    assert not _left_running(state)


def test_a_second_up_on_the_same_state_takes_over(tmp_path):
    """A foreground `up`, then `up --detach` on the same state: the second
    restarts everything, and the first leaves without stopping anything (its
    Ctrl-C used to run down and stop what the second had started)."""
    state = tmp_path / "state"
    env = _env()
    base, first = _start_up(state, env, "--orgs", "1", "--items", "200", "--trickle", "0")
    try:
        first.wait_for("running; press Ctrl-C to stop", 300)
        second = subprocess.run(_up_cmd(state, base, "--detach", "--orgs", "1", "--items", "200",
                                        "--trickle", "0"),
                                env=env, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stderr[-3000:]
        # the first notices within seconds; still there, it gets the user's Ctrl-C
        try:
            wait_until(lambda: first.p.poll() is not None, 20, "the first up to leave")
        except AssertionError:
            os.kill(first.p.pid, signal.SIGINT)
            first.p.wait(timeout=120)
        # either way the second's processes run on
        running = _left_running(state)
        assert {"fetcher-0.pid", "writer-0.pid", "ingress-0.pid", "zohosim.pid"} <= set(running), \
            (running, first.stdout()[-1500:])
        assert _pg_running(state)
        assert first.p.returncode == 0, first.stderr()
        assert re.search(r"another deploy/local/up \(pid \d+\) took over", first.stderr()), \
            first.stderr()
        assert re.search(r"deploy/local/up \(pid \d+\) runs on this state", second.stdout), \
            second.stdout
    finally:
        first.finish()
        _down(state, "--clean")


def test_up_keeps_the_sockets_in_tmp_when_the_state_path_is_too_long(tmp_path):
    """A Unix socket's path has at most 107 bytes: a state folder deep enough
    that run/zmq/processor-N would not fit gets its ZeroMQ sockets in a
    folder of its own in /tmp (mode 0700, named after the state path), the
    sync runs through them, and down --clean removes that folder too."""
    assert _lib("zmq_home", tmp_path / "s").stdout.strip() == str(tmp_path / "s" / "run" / "zmq")
    state = tmp_path / ("deep" * 20) / "state"
    zdir = _lib("zmq_home", state).stdout.strip()
    assert re.fullmatch(r"/tmp/tds-zmq-[0-9a-f]{16}", zdir), zdir
    out = None
    try:
        for _ in range(3):
            base = port_block(240)
            out = subprocess.run(_up_cmd(state, base, "--detach", "--clean", "--items", "100",
                                         "--orgs", "1", "--processors", "1", "--trickle", "0"),
                                 env=_env(), capture_output=True, text=True, timeout=600)
            if "ports in use" not in out.stderr:
                break
        assert out.returncode == 0, out.stderr[-3000:]
        assert re.search(r"^sync request \d+ done:$", out.stdout, re.M), out.stdout[-3000:]
        assert f"ZeroMQ sockets:        {zdir}/  (ipc://{zdir}/processor-0" in out.stdout
        st = os.stat(zdir)
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
        assert stat.S_ISSOCK(os.stat(os.path.join(zdir, "processor-0")).st_mode)
        assert not (state / "run" / "zmq").exists()
    finally:
        clean = _down(state, "--clean")
    assert clean.returncode == 0 and not os.path.exists(zdir), (clean.stdout, clean.stderr)


def test_up_refuses_a_port_base_out_of_range(tmp_path):
    """The last port of the block (port-base + 13, + 100 for each extra
    replica) must be a port: a Python traceback (OverflowError) said so."""
    for extra, top in ((["--port-base", "65530"], "65643"),
                       (["--port-base", "65450", "--writers", "3"], "65663")):
        r = subprocess.run([os.path.join(ROOT, "deploy/local/up"), "--state", str(tmp_path / "s"),
                            "--build-dir", os.environ["TDS_BUILD_DIR"], *extra],
                           env=_env(), capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and f" to {top} (port-base + " in r.stderr and \
            "out of range" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "installing" not in r.stdout and not (tmp_path / "s").exists(), r.stdout
    r = _lib("check_ports_free", 20000, 70000, check=False)
    assert r.returncode == 1 and r.stderr == "ports out of range: 70000 (choose another --port-base)\n", \
        r.stderr


def test_up_shows_why_the_build_failed(tmp_path):
    """meson and ninja write their errors on stdout, which `up` threw away:
    a build that failed ended `up` after "building" without a word. Its
    output now goes to a file, and its end is shown when it fails. Here a
    copy of deploy/ beside a meson.build that cannot be set up."""
    root = tmp_path / "root"
    shutil.copytree(os.path.join(ROOT, "deploy"), root / "deploy", symlinks=True)
    (root / "meson.build").write_text("project('broken', 'c')\n"
                                      "error('this tree does not build')\n")
    r = subprocess.run([str(root / "deploy/local/up"), "--state", str(tmp_path / "s"),
                        "--build-dir", str(tmp_path / "b")],
                       env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, (r.stdout[-2000:], r.stderr[-2000:])
    assert "this tree does not build" in r.stderr, r.stderr[-2000:]
    assert "meson setup failed (the end of its output is above, all of it in /tmp/tds-build." \
        in r.stderr, r.stderr[-2000:]
    assert "starting PostgreSQL" not in r.stdout, r.stdout[-2000:]
    log = re.search(r"all of it in (/tmp/tds-build\.\w+)\)", r.stderr).group(1)
    assert "this tree does not build" in open(log).read()
    os.unlink(log)
