"""Fixtures for the integration suites: real PostgreSQL, real stage binaries.

Nothing here is mocked. `pg` is a throwaway PostgreSQL 15 cluster made with
initdb in a temporary folder on a free port; `db` gives each test a fresh
database on it. `procs` spawns the built binaries (from TDS_BUILD_DIR) on free
ports, waits for their admin endpoints against a deadline, and at teardown
stops them with SIGTERM, expects exit 0, and fails the test if a sanitizer
reported anything in a process's stderr.
"""

import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ports import free_port  # noqa: E402,F401  (tests/ports.py; imported from here by the tests)

PG_BIN = os.environ.get("TDS_PG_BIN", "/usr/lib/postgresql/15/bin")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "WARNING: ThreadSanitizer",
                     "SUMMARY: UndefinedBehaviorSanitizer")


# The longest files first: tests/run spreads whole files over its workers in
# this order, and one that takes a third of the run must not start last.
LONGEST_FIRST = ("test_fetcher.py", "test_fetcher_records.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = os.path.basename(str(item.fspath))
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: the files' own order otherwise


def wait_until(fn, timeout=20.0, what="condition", interval=0.02):
    """Poll fn() until it returns a truthy value; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - report the last one
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


def relay(a, b):
    """One direction of a TCP relay: copy what socket a receives to b until
    either side ends, then close both. Run one thread each way."""
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for x in (a, b):
        try:
            x.close()
        except OSError:
            pass


def http_get(url, timeout=5.0):
    """(status, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


# --------------------------------------------------------------- binaries

class Bins:
    def __init__(self, build_dir):
        self.build_dir = build_dir

    def path(self, name):
        for sub in ("ingress", "fetcher", "processor", "writer", "tests/zohosim", ""):
            p = os.path.join(self.build_dir, sub, name)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return p
        return None

    def require(self, name):
        p = self.path(name)
        if p is None:
            raise AssertionError(f"binary {name} not found under {self.build_dir}")
        return p


@pytest.fixture(scope="session")
def bins():
    build = os.environ.get("TDS_BUILD_DIR")
    if not build:
        raise AssertionError("TDS_BUILD_DIR is not set (tests/run sets it)")
    return Bins(os.path.abspath(build))


# --------------------------------------------------------------- PostgreSQL

def _pg_user():
    """initdb refuses to run as root: use the 'postgres' account when root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise AssertionError("running as root but there is no 'postgres' user; "
                             "install postgresql (tests/run does)")


class PgCluster:
    """A throwaway cluster: initdb into a temp dir, started. fsync is off (nothing here
    outlives a test run), commits wait for their WAL flush as by default; conf: more
    postgresql.conf lines, which override these."""

    def __init__(self, conf=""):
        self.user = _pg_user()
        self.tmp = tempfile.mkdtemp(prefix="tds-pg-")
        os.chmod(self.tmp, 0o755)
        self.datadir = os.path.join(self.tmp, "data")
        self.sockdir = os.path.join(self.tmp, "sock")
        self.logfile = os.path.join(self.tmp, "postgres.log")
        os.mkdir(self.sockdir)
        if self.user:
            os.chown(self.tmp, self.user.pw_uid, self.user.pw_gid)
            os.chown(self.sockdir, self.user.pw_uid, self.user.pw_gid)
        self.port = free_port()
        self.superuser = "postgres"
        self._run([os.path.join(PG_BIN, "initdb"), "-D", self.datadir, "-U", self.superuser,
                   "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.sockdir}'\n"
                    "fsync = off\nfull_page_writes = off\n"
                    "max_connections = 200\nshared_buffers = 256MB\n"
                    "log_min_messages = warning\n" + conf)
        self.start()

    def _run(self, cmd, check=True):
        if self.user:
            cmd = ["runuser", "-u", self.user.pw_name, "--"] + cmd
        return subprocess.run(cmd, check=check, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)

    def start(self):
        r = self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir, "-l", self.logfile,
                       "-w", "-t", "30", "start"], check=False)
        if r.returncode != 0:
            log = open(self.logfile).read() if os.path.exists(self.logfile) else ""
            raise AssertionError(f"could not start PostgreSQL: {r.stdout}\n{log}")

    def stop(self, mode="fast"):
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir, "-m", mode, "-w",
                   "stop"], check=False)

    def restart(self, down_s=0.0):
        self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()

    def dsn(self, dbname="postgres"):
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={self.superuser}"

    def url(self, dbname="postgres"):
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{dbname}"

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.tmp, ignore_errors=True)

    def create_database(self, name):
        import psycopg2
        c = psycopg2.connect(self.dsn())
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        c.close()
        return Database(self, name)

    def walwriter_pid(self):
        import psycopg2
        c = psycopg2.connect(self.dsn())
        try:
            with c.cursor() as cur:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'")
                return cur.fetchone()[0]
        finally:
            c.close()

    def crash(self):
        """Kill every process of the cluster at once, as a power cut would: what
        was only in PostgreSQL's WAL buffers is gone. start() recovers."""
        with open(os.path.join(self.datadir, "postmaster.pid")) as f:
            pm = int(f.readline())
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(pm)], capture_output=True,
                                                   text=True).stdout.split()]
        for pid in [pm] + children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # a backend whose session had just ended
        # Gone, not even a zombie: a new postmaster takes a live pid in its
        # lock file for another server.
        wait_until(lambda: not any(os.path.exists(f"/proc/{p}") for p in [pm] + children), 20,
                   "the cluster's processes gone")


# A cluster whose commits do not wait for their WAL flush, and where nothing
# else flushes once its WAL writer is stopped (SIGSTOP, by the test): the
# background writer, checkpoints and autovacuum, whose page writes would flush
# the WAL first, are off.
LAZY_PG_CONF = ("synchronous_commit = off\nbgwriter_lru_maxpages = 0\nautovacuum = off\n"
                "checkpoint_timeout = 1h\nmax_wal_size = 10GB\n")


@pytest.fixture
def lazy_pg():
    cluster = PgCluster(conf=LAZY_PG_CONF)
    yield cluster
    cluster.destroy()


class Database:
    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.dsn = cluster.dsn(name)
        self.url = cluster.url(name)

    def connect(self):
        import psycopg2
        c = psycopg2.connect(self.dsn)
        c.autocommit = True
        return c

    def query(self, sql, *params):
        c = self.connect()
        try:
            with c.cursor() as cur:
                cur.execute(sql, params or None)
                return cur.fetchall() if cur.description else []
        finally:
            c.close()

    def execute(self, sql, *params):
        c = self.connect()
        try:
            with c.cursor() as cur:
                cur.execute(sql, params or None)
        finally:
            c.close()

    def flush_wal(self):
        """A commit that waits for its WAL flush: everything before it is on disk then."""
        c = self.connect()
        try:
            with c.cursor() as cur:
                cur.execute("SET synchronous_commit = on")
                cur.execute("CREATE TABLE IF NOT EXISTS flush_mark (n int)")
                cur.execute("INSERT INTO flush_mark VALUES (1)")
        finally:
            c.close()

    def wal_flushed_behind(self):
        """True while WAL written by commits is not yet on disk."""
        return self.query("SELECT pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()")[0][0]


@pytest.fixture(scope="session")
def pg():
    cluster = PgCluster()
    yield cluster
    cluster.destroy()


_db_counter = itertools.count(1)


@pytest.fixture
def db(pg):
    import psycopg2
    name = f"t{os.getpid()}_{next(_db_counter)}"
    yield pg.create_database(name)
    # Leave the database behind if PostgreSQL is down; the cluster goes anyway.
    try:
        c = psycopg2.connect(pg.dsn())
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.close()
    except Exception:  # noqa: BLE001
        pass


# --------------------------------------------------------------- processes

class Proc:
    def __init__(self, procs, name, path, env, args, admin, ready, timeout):
        self.procs = procs
        self.name = name
        self.path = path
        self.args = list(args)
        self.env = dict(env)
        self.ready = ready
        self.timeout = timeout
        self.admin_port = None
        if admin:
            self.admin_port = free_port()
            self.env.setdefault("TDS_ADMIN_LISTEN", f"127.0.0.1:{self.admin_port}")
            self.admin_port = int(self.env["TDS_ADMIN_LISTEN"].rsplit(":", 1)[1])
        self.env.setdefault("TDS_LOG_LEVEL", "info")
        self.starts = 0
        self.logs = []
        self.p = None
        self.start()

    @property
    def admin_url(self):
        return f"http://127.0.0.1:{self.admin_port}" if self.admin_port else None

    def start(self):
        self.starts += 1
        log = os.path.join(self.procs.tmp, f"{self.name}.{self.starts}.stderr")
        self.logs.append(log)
        full_env = dict(os.environ)
        full_env.update(self.env)
        full_env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        full_env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self._errf = open(log, "wb")
        self._outf = open(log.replace(".stderr", ".stdout"), "wb")
        self.p = subprocess.Popen([self.path] + self.args, env=full_env,
                                  stdout=self._outf, stderr=self._errf,
                                  stdin=subprocess.DEVNULL)
        if self.ready:
            try:
                self.wait_ready()
            except BaseException:
                # not left running unseen: a Proc that fails here in
                # procs.spawn is never handed back, nor stopped at teardown
                self.kill()
                raise
        return self

    def wait_ready(self, timeout=None):
        """Until the stage answers 200 on its readiness path; a stage that
        exits meanwhile fails at once, not at the timeout."""
        path = "/" + self.ready
        exited = []

        def ok():
            if self.p.poll() is not None:
                exited.append(self.p.returncode)
                return True
            try:
                st, _ = http_get(self.admin_url + path, timeout=1.0)
                return st == 200
            except OSError:
                return False
        wait_until(ok, timeout or self.timeout, f"{self.name} {path}")
        if exited:
            text = self.stderr_text()[-4000:]
            for port in sorted(set(re.findall(r"127\.0\.0\.1:(\d+)'?: Address already in use",
                                              text))):
                text += f"\nport {port} now: " + ("; ".join(port_holders(int(port))) or "free")
            raise AssertionError(f"{self.name} exited with {exited[0]}:\n" + text)

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def stop(self, timeout=10.0, expect=0):
        """SIGTERM and wait; assert the exit status (0 by default)."""
        if self.p is None:
            return None
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                self._close()
                raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM")
        rc = self.p.returncode
        self._close()
        if expect is not None:
            assert rc == expect, (f"{self.name} exited with {rc}, expected {expect}:\n"
                                  + self.stderr_text()[-4000:])
        return rc

    def kill(self):
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self._close()

    def restart(self):
        if self.alive():
            self.stop()
        return self.start()

    def _close(self):
        for f in (getattr(self, "_errf", None), getattr(self, "_outf", None)):
            if f and not f.closed:
                f.close()

    def stderr_text(self, all_runs=False):
        out = []
        for log in (self.logs if all_runs else self.logs[-1:]):
            try:
                with open(log, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(out)

    def stdout_text(self):
        try:
            with open(self.logs[-1].replace(".stderr", ".stdout"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def metrics(self):
        st, body = http_get(self.admin_url + "/metrics")
        assert st == 200, f"{self.name} /metrics answered {st}"
        return body

    def metric(self, name, labels=None, text=None):
        """Sum of the samples of `name` whose labels include `labels`, from
        `text` (one scrape, so that several figures agree) or a new scrape."""
        total = 0.0
        found = False
        for line in (self.metrics() if text is None else text).splitlines():
            if not line or line.startswith("#"):
                continue
            head, _, val = line.rpartition(" ")
            mname, _, lab = head.partition("{")
            if mname != name:
                continue
            if labels and not all(f'{k}="{v}"' in lab for k, v in labels.items()):
                continue
            total += float(val)
            found = True
        return total if found else None


class Procs:
    def __init__(self, bins, tmp):
        self.bins = bins
        self.tmp = tmp
        self.all = []

    def spawn(self, name, env=None, args=(), admin=True, ready="readyz", timeout=20.0,
              label=None):
        path = self.bins.require(name)
        p = Proc(self, label or f"{name}-{len(self.all)}", path, env or {}, args, admin,
                 ready, timeout)
        self.all.append(p)
        return p

    def run(self, name, args=(), env=None, timeout=60.0, check=True):
        """Run a binary to completion (a CLI subcommand); returns CompletedProcess."""
        full_env = dict(os.environ)
        full_env.update(env or {})
        r = subprocess.run([self.bins.require(name)] + list(args), env=full_env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
        check_sanitizers(f"{name} {' '.join(args)}", r.stderr)
        if check and r.returncode != 0:
            raise AssertionError(f"{name} {' '.join(args)} exited {r.returncode}:\n"
                                 f"{r.stdout}\n{r.stderr}")
        return r


def port_holders(port):
    """Who holds TCP `port` on this machine, from /proc/net/tcp{,6}: lines
    "STATE pid N (command)" (pid unknown for a socket no process here owns)."""
    states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            col = row.split()
            if len(col) > 9 and int(col[1].rsplit(":", 1)[1], 16) == port:
                inodes[col[9]] = states.get(col[3], f"state {col[3]}")
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
                except OSError:
                    cmd = "?"
                found[link[8:-1]] = f"pid {pid} ({cmd[:200]})"
    return [f"{st} {found.get(i, 'pid unknown')}" for i, st in inodes.items()]


def spawn_binding(procs, name, label, env_of, repick, **kw):
    """procs.spawn() for a stage that binds ports the test picked. A port
    free_port() found free can be taken before the stage binds it (the stage
    says "Address already in use" and exits 1; seen in CI, by what is not
    known: the failure names who holds it now). `repick()` gives the stage
    new ports and it is started again; `env_of()` builds its environment
    from them. Callers start the stages that bind before those that connect
    to them, so the new ports reach every stage that uses them."""
    label = label or f"{name}-{len(procs.all)}"   # the name procs.spawn gives
    for attempt in range(3):
        try:
            return procs.spawn(name, label=label, env=env_of(), **kw)
        except AssertionError as e:
            if "Address already in use" not in str(e) or repick is None or attempt == 2:
                raise
            # its logs kept beside the next attempt's, and read for reports
            for log in (os.path.join(procs.tmp, f"{label}.1.stdout"),
                        os.path.join(procs.tmp, f"{label}.1.stderr")):
                kept = f"{log}.bind-{attempt + 1}"
                if os.path.exists(log):
                    os.replace(log, kept)
            kept = os.path.join(procs.tmp, f"{label}.1.stderr.bind-{attempt + 1}")
            if os.path.exists(kept):
                with open(kept, "rb") as f:
                    check_sanitizers(f"{label} (a port taken)", f.read().decode("utf-8", "replace"))
            print(f"{label}: a port was taken before it bound; new ports")
            repick()


def check_sanitizers(what, text):
    for m in SANITIZER_MARKERS:
        if m in text:
            i = text.index(m)
            raise AssertionError(f"sanitizer report from {what}:\n{text[max(0, i - 200):i + 3000]}")


@pytest.fixture
def procs(bins, tmp_path):
    ps = Procs(bins, str(tmp_path))
    yield ps
    errors = []
    for p in reversed(ps.all):
        try:
            if p.alive():
                p.stop()
        except AssertionError as e:
            errors.append(str(e))
    for p in ps.all:
        try:
            check_sanitizers(p.name, p.stderr_text(all_runs=True))
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors))


class Resolver:
    """Names under ".tds-test" whose addresses a test sets while stages run.

    A stage started with `env` resolves those names through
    tests/integration/resolve_shim.c (preloaded): a name resolves to the
    addresses set() last gave it, and not at all before or after clear().
    """

    def __init__(self, bins, path):
        self.path = str(path)
        self.names = {}
        shim = os.path.join(bins.build_dir, "tests", "integration", "tds_resolve_shim.so")
        if not os.path.isfile(shim):
            raise AssertionError(f"{shim} not built")
        self._write()
        # The shim is preloaded ahead of the sanitizer runtime: tell ASan so.
        self.env = {"LD_PRELOAD": shim, "TDS_TEST_HOSTS": self.path,
                    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:verify_asan_link_order=0"}

    def set(self, name, *addrs):
        assert name.endswith(".tds-test"), name
        self.names[name] = list(addrs)
        self._write()

    def clear(self, name):
        self.names.pop(name, None)
        self._write()

    def _write(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for name, addrs in self.names.items():
                for a in addrs:
                    f.write(f"{name} {a}\n")
        os.replace(tmp, self.path)  # a stage never reads half a file


@pytest.fixture
def resolver(bins, tmp_path):
    return Resolver(bins, tmp_path / "tds-test-hosts")


@pytest.fixture(name="free_port")
def free_port_fixture():
    return free_port


@pytest.fixture(name="wait_until")
def wait_until_fixture():
    return wait_until


# The simulator's fixtures (`sim`) live beside this file; other areas' helper
# modules are imported by their own tests.
if os.path.exists(os.path.join(os.path.dirname(__file__), "sim_fixture.py")):
    from sim_fixture import *  # noqa: E402,F401,F403
