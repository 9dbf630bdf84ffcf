#!/usr/bin/python3
"""tests/bench/bench.py — the benchmark driver behind tests/bench/run.

Starts its own PostgreSQL (initdb in a temp dir, free port, fsync on), the Zoho
simulator and the stages on free loopback ports, measures every figure of
issue 11 several times, and prints one table (median, min–max, the ceiling
measured in the same run, ratio) plus tests/bench/out/latest.json. It never
judges a figure; it exits non-zero only when a measurement could not be made
(a stage failed, rows went missing), and says which.
"""

import argparse
import hashlib
import hmac
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import psycopg2
import psycopg2.extensions

HERE = os.path.dirname(os.path.abspath(__file__))
# the ingress's histogram of its time from a webhook's headers to its 200
ACCEPT = "tds_ingress_accept_seconds"
OWN_NOTE = ("the same paced run, timed by the ingress (tds_ingress_accept_seconds: from the "
            "request's headers to its 200, interpolated within the histogram's bucket): without "
            "wrk's own waits for a CPU, and without the time a request waits in the socket "
            "before the ingress reads it")
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from ports import free_port  # noqa: E402  (tests/ports.py)

# Where the stages' ZeroMQ sockets are: a folder of Unix sockets (ipc://), as
# deploy/local/up has them, or None for loopback TCP (--zmq tcp).
ZMQ_DIR = None


def EP(port):
    """The ZeroMQ endpoint of one socket, named by a port number that is free
    (used as such over TCP, as a name over ipc://)."""
    if ZMQ_DIR:
        return f"ipc://{ZMQ_DIR}/{port}"
    return f"tcp://127.0.0.1:{port}"
PG_BIN = "/usr/lib/postgresql/15/bin"
SECRET = "bench-webhook-secret"

# sizes per mode: full / quick / smoke
SIZES = {
    "full": dict(repeats=3, conns=64, pace=0, half_rate=15000, half_s=5, latency_rate=1000, writer_rows=50000, transform_pages=500, events_rate=20000, events_s=4, ingress_s=5,
                 ingress_orgs=150, e2e_items=200000, scale_items=50000, mem_items=1000000, latency_s=30, latency_preload=50000,
                 quota_records=800, quota_rate=100, quota_minute_ms=2000),
    "quick": dict(repeats=1, conns=64, pace=0, half_rate=15000, half_s=3, latency_rate=1000, writer_rows=20000, transform_pages=100, events_rate=20000, events_s=3, ingress_s=3,
                  ingress_orgs=150, e2e_items=20000, scale_items=20000, mem_items=100000, latency_s=5, latency_preload=20000,
                  quota_records=500, quota_rate=100, quota_minute_ms=1000),
    # smoke: paced, so the backlog behind the ingress stays small
    "smoke": dict(repeats=1, conns=4, pace=50, half_rate=100, half_s=1, latency_rate=200, writer_rows=2000, transform_pages=10, events_rate=2000, events_s=1, ingress_s=1,
                  ingress_orgs=10, e2e_items=1000, scale_items=1000, mem_items=3000, latency_s=2, latency_preload=1000,
                  quota_records=400, quota_rate=100, quota_minute_ms=500),
}


def log(msg):
    print("   " + msg, file=sys.stderr, flush=True)


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def http_json(url, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"{}")


def wait_until(fn, timeout, what, interval=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if fn():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def proc_cpu_s(pid):
    """User and system CPU seconds of one process so far."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def proc_switches(pid):
    """Context switches of every thread of one process so far, voluntary (it
    waited for something) and not (the scheduler took its CPU)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:",
                                        "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def median_min_max(xs):
    return statistics.median(xs), min(xs), max(xs)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- processes

class Proc:
    def __init__(self, name, argv, env, logdir, admin_port=None):
        self.name, self.admin_port = name, admin_port
        self.logpath = os.path.join(logdir, name + ".log")
        self.logf = open(self.logpath, "ab")
        self.p = subprocess.Popen(argv, env=env, stdout=self.logf, stderr=self.logf,
                                  stdin=subprocess.DEVNULL)

    def alive(self):
        return self.p.poll() is None

    def wait_ready(self, path="/readyz", timeout=60):
        def ok():
            if not self.alive():
                raise BenchError(f"{self.name} exited with {self.p.returncode}; "
                                 f"see {self.logpath}")
            http_get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=1)
            return True
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if ok():
                    return self
            except BenchError:
                raise
            except Exception:
                time.sleep(0.05)
        raise BenchError(f"{self.name} not ready within {timeout} s; see {self.logpath}")

    def hwm_kb(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return None

    def cpu_s(self):
        return proc_cpu_s(self.p.pid)

    def switches(self):
        return proc_switches(self.p.pid)

    def stop(self, timeout=15):
        """SIGTERM; returns the exit code (None when it had to be killed)."""
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                self.logf.close()
                return None
        self.logf.close()
        return self.p.returncode


class Postgres:
    """A throwaway cluster: initdb into a temp dir (as postgres when root)."""

    def __init__(self, pg_stats=False, locale="C.UTF-8"):
        # its own temp dir under /tmp: the postgres account must reach it
        self.tmp = tempfile.mkdtemp(prefix="tds-bench-pg-")
        os.chmod(self.tmp, 0o755)
        self.dir = os.path.join(self.tmp, "data")
        self.sock = os.path.join(self.tmp, "sock")
        self.port = free_port()
        os.makedirs(self.dir)
        os.makedirs(self.sock)
        self.root = os.getuid() == 0
        if self.root:
            for d in (self.tmp, self.dir, self.sock):
                shutil.chown(d, "postgres")
        self._run([f"{PG_BIN}/initdb", "-D", self.dir, "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", f"--locale={locale}"])
        self._run([f"{PG_BIN}/pg_ctl", "-D", self.dir, "-l", os.path.join(self.dir, "log"),
                   "-w", "-t", "60", "-o",
                   f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.sock} -c max_connections=200"
                   + (" -c shared_preload_libraries=pg_stat_statements"
                      " -c pg_stat_statements.track_planning=on" if pg_stats else "")
                   + (" " + os.environ["TDS_BENCH_PG_OPTS"]
                      if os.environ.get("TDS_BENCH_PG_OPTS") else ""),
                   "start"])
        self.settings = {}
        with self.connect("postgres") as c, c.cursor() as cur:
            for k in ("fsync", "synchronous_commit", "full_page_writes", "wal_level",
                      "shared_buffers", "max_wal_size", "checkpoint_timeout", "server_version",
                      "lc_collate"):
                cur.execute(f"SHOW {k}")
                self.settings[k] = cur.fetchone()[0]
            if pg_stats:
                cur.execute("CREATE EXTENSION pg_stat_statements")

    def top_statements(self, n=10):
        """The statements that took the most time (planning and execution),
        cluster-wide."""
        return self.query("postgres", "SELECT round(total_exec_time)::bigint, "
                          "round(total_plan_time)::bigint, calls, plans, "
                          "round((total_exec_time / greatest(calls, 1))::numeric, 3), rows, "
                          "round((total_exec_time * 1000 / greatest(rows, 1))::numeric, 1), "
                          "left(regexp_replace(query, '\\s+', ' ', 'g'), 110) "
                          "FROM pg_stat_statements ORDER BY total_exec_time + total_plan_time "
                          "DESC LIMIT %s", n)

    def _run(self, argv):
        if self.root:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"{argv[-1]} failed: {r.stdout}{r.stderr}")

    def url(self, db):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def connect(self, db):
        c = psycopg2.connect(self.url(db))
        c.autocommit = True
        return c

    def create_db(self, name):
        c = self.connect("postgres")
        with c.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
            cur.execute(f"CREATE DATABASE {name}")
        c.close()
        return self.url(name)

    def drop_db(self, name):
        c = self.connect("postgres")
        with c.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.close()

    def query(self, db, sql, *args):
        c = self.connect(db)
        with c.cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall() if cur.description else []
        c.close()
        return rows

    def pids(self):
        """The postmaster and its children now."""
        try:
            with open(os.path.join(self.dir, "postmaster.pid")) as f:
                pm = int(f.readline())
        except (OSError, ValueError):
            return []
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    parts = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(d) == pm or int(parts[1]) == pm:
                out.append(int(d))
        return out

    def cpu_s(self):
        """CPU seconds of the postmaster and all its children so far."""
        total = 0.0
        for pid in self.pids():
            try:
                total += proc_cpu_s(pid)
            except OSError:
                pass
        return total

    def switches(self):
        """Context switches of the postmaster and all its children so far."""
        return sum(proc_switches(pid) for pid in self.pids())

    def stop(self, remove=True):
        try:
            self._run([f"{PG_BIN}/pg_ctl", "-D", self.dir, "-m", "fast", "-w", "stop"])
        except BenchError:
            pass
        if remove:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
        self.sz = SIZES[self.mode]
        self.build = os.path.abspath(args.build_dir)
        self.work = tempfile.mkdtemp(prefix="tds-bench-", dir=args.work_parent)
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs)
        global ZMQ_DIR
        if args.zmq == "ipc":
            ZMQ_DIR = os.path.join(self.work, "zmq")
            os.makedirs(ZMQ_DIR, mode=0o700)
            if len(EP(65535)) - len("ipc://") > 107:
                raise BenchError(f"{ZMQ_DIR}: too long for a Unix socket's path (107 bytes); "
                                 "choose a shorter --work-parent or --zmq tcp")
        self.procs = []
        self.figures = []
        self.notes = []
        self.failures = []
        self.db_proxy = None
        self.sanitized = self._sanitized()
        if (args.latency_processors, args.latency_writers) != (1, 1):
            self.notes.append(f"the latency step ran {args.latency_processors} processor(s) "
                              f"and {args.latency_writers} writer(s)")

    def _sanitized(self):
        try:
            opts = json.load(open(os.path.join(self.build, "meson-info",
                                               "intro-buildoptions.json")))
            d = {o["name"]: o["value"] for o in opts}
            return d.get("b_sanitize", "none") not in ("none", ""), d.get("buildtype", "?")
        except OSError:
            return False, "?"

    def bin(self, rel):
        p = os.path.join(self.build, rel)
        if not os.access(p, os.X_OK):
            raise BenchError(f"missing binary {p} (build first)")
        return p

    # ---- figures

    def figure(self, key, name, unit, values, ceiling=None, target=None, note=None):
        values = [v for v in values if v is not None]
        f = {"key": key, "figure": name, "unit": unit, "values": values,
             "ceiling": ceiling, "target": target, "note": note}
        if values:
            f["median"], f["min"], f["max"] = median_min_max(values)
            if ceiling:
                f["ratio"] = f["median"] / ceiling
        self.figures.append(f)
        m = f.get("median")
        log(f"{name}: {m if m is None else round(m, 3)} {unit}"
            + (f" (ceiling {ceiling:.0f})" if ceiling else ""))
        return f

    # ---- processes

    def spawn(self, name, argv, env, admin=True):
        port = free_port() if admin else None
        e = dict(os.environ)
        e.update({"TDS_LOG_LEVEL": "warn", "TDS_INSTANCE": name})
        e.update(env)
        if admin:
            e["TDS_ADMIN_LISTEN"] = f"127.0.0.1:{port}"
        p = Proc(name, argv, e, self.logs, port)
        self.procs.append(p)
        return p

    def stop(self, p):
        rc = p.stop()
        if p in self.procs:
            self.procs.remove(p)
        if rc != 0:
            self.failures.append(f"{p.name} exited {rc} on SIGTERM (log {p.logpath})")
        with open(p.logpath, errors="replace") as f:
            text = f.read()
        for pat in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if pat in text:
                self.failures.append(f"{p.name}: sanitizer report '{pat}' (log {p.logpath})")
                self.args.keep = True
        return rc

    def start_sim(self, name, extra):
        port = free_port()
        p = self.spawn(name, [self.bin("tests/zohosim/tds-zohosim"), "--listen",
                              f"127.0.0.1:{port}", "--seed", "11", "--refresh-limit", "0",
                              "--max-live-tokens", "0"] + extra, {}, admin=False)
        p.url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_get(p.url + "/_sim/health", 1), 120, f"{name} health")
        return p

    def orgs_file(self, path, orgs, sim_url=None, rate=100000, concurrency=10):
        out = []
        for oid, secret in orgs:
            out.append({"org_id": oid, "name": "bench " + oid, "product": "inventory",
                        "data_center": "com", "accounts_url": sim_url, "api_url": None,
                        "client_id": "1000.SIMCLIENT", "client_secret": "simsecret",
                        "refresh_token": "1000.simrefresh", "webhook_secrets": [secret],
                        "timezone_offset": "+0300", "rate_per_min": rate,
                        "max_concurrency": concurrency, "daily_limit": 100000000,
                        "daily_reserve": 0, "incremental_every_s": 86400,
                        "reconcile_every_s": 864000})
        with open(path, "w") as f:
            json.dump({"organizations": out}, f)
        return path

    def pipeline(self, db, orgs_path, processors=1, ingress=False, fetcher=False,
                 extra_env=None, writers=1):
        """writers + processors (+ fetcher) (+ ingress) on free ports; returns a dict.
        The first writer is stages["writer"], further ones "writer-1" and so on."""
        url = self.pg.url(db)
        r = subprocess.run([self.bin("writer/tds-writer"), "migrate"], capture_output=True,
                           text=True, env=dict(os.environ, TDS_DATABASE_URL=url,
                                               TDS_LOG_LEVEL="warn"))
        if r.returncode != 0:
            raise BenchError(f"tds-writer migrate failed: {r.stderr.strip()[-400:]}")
        wports = [(free_port(), free_port()) for _ in range(writers)]
        wport, aport = wports[0]
        pports = [free_port() for _ in range(processors)]
        fport = free_port()
        base = {"TDS_DATABASE_URL": url, "TDS_CONFIG": orgs_path,
                "TDS_WRITER_CONNECT": ",".join(EP(w) for w, _ in wports),
                "TDS_ACK_CONNECT": ",".join(EP(a) for _, a in wports),
                "TDS_PROCESSOR_CONNECT": ",".join(EP(p) for p in pports),
                "TDS_FETCHER_CONNECT": EP(fport)}
        base.update(extra_env or {})
        pl = {"env": base, "url": url, "push": EP(wport),
              "ack": EP(aport), "stages": {}}
        for i, (w, a) in enumerate(wports):
            name = "writer" if i == 0 else f"writer-{i}"
            pl["stages"][name] = self.spawn(name, [self.bin("writer/tds-writer")], dict(
                base, TDS_DATABASE_URL=self.writer_url(db), TDS_WRITER_BIND=EP(w),
                TDS_ACK_BIND=EP(a)))
        for i, p in enumerate(pports):
            pl["stages"][f"processor-{i}"] = self.spawn(
                f"processor-{i}", [self.bin("processor/tds-processor")],
                dict(base, TDS_PROCESSOR_BIND=EP(p)))
        if fetcher:
            pl["stages"]["fetcher"] = self.spawn("fetcher", [self.bin("fetcher/tds-fetcher")],
                                                 dict(base, TDS_FETCHER_BIND=EP(fport)))
        if ingress:
            hport = free_port()
            pl["hook_port"] = hport
            pl["stages"]["ingress"] = self.spawn("ingress", [self.bin("ingress/tds-ingress")], dict(
                base, TDS_INGRESS_LISTEN=f"127.0.0.1:{hport}",
                TDS_INGRESS_JOURNAL_DIR=os.path.join(self.work, f"journal-{db}"),
                **self.slow_disk_env()))
        for p in pl["stages"].values():
            p.wait_ready()
        return pl

    def writer_url(self, db):
        """The writer's database URL: through the delay proxy with --db-rtt-ms."""
        if self.db_proxy is None:
            return self.pg.url(db)
        return f"postgresql://postgres@127.0.0.1:{self.db_proxy_port}/{db}"

    def slow_disk_env(self):
        """With --journal-sync-ms: the ingress's fsync()/fdatasync() each wait
        that long first (tests/integration/sync_shim.c preloaded), as a slower
        disk's flush would, a network volume's say."""
        if not self.args.journal_sync_ms:
            return {}
        shim = os.path.join(self.build, "tests", "integration", "tds_sync_shim.so")
        if not os.path.exists(shim):
            raise BenchError(f"--journal-sync-ms needs {shim} (built with the tests)")
        return {"LD_PRELOAD": shim, "TDS_TEST_SYNC_SLEEP_MS": str(self.args.journal_sync_ms)}

    def start_db_proxy(self, rtt_ms):
        """tests/bench/delayproxy.py between the writer and PostgreSQL."""
        self.db_proxy_port = free_port()
        self.db_proxy = subprocess.Popen(
            [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "delayproxy.py"),
             str(self.db_proxy_port), "127.0.0.1", str(self.pg.port), str(rtt_ms)],
            stdout=subprocess.PIPE, text=True)
        if self.db_proxy.stdout.readline().strip() != "ready":
            raise BenchError("the delay proxy did not start")
        print(f"the writer reaches PostgreSQL through a proxy adding {rtt_ms:g} ms a round "
              "trip, plus the proxy's own hand-offs (--db-rtt-ms)", flush=True)
        self.notes.append(f"the writer reached PostgreSQL through tests/bench/delayproxy.py: "
                          f"{rtt_ms:g} ms added to each round trip, plus the proxy's own "
                          "hand-offs (--db-rtt-ms)")

    def stop_pipeline(self, pl):
        for name in ("ingress", "fetcher"):
            if name in pl["stages"]:
                self.stop(pl["stages"][name])
        for name, p in pl["stages"].items():
            if name.startswith("processor"):
                self.stop(p)
        for name, p in pl["stages"].items():
            if name.startswith("writer"):
                self.stop(p)

    # ---- 1. writer

    def bench_writer(self):
        db = "wbench"
        self.pg.create_db(db)
        pl = self.pipeline(db, self.orgs_file(os.path.join(self.work, "orgs-w.json"),
                                              [("60001", SECRET)]))
        drv = self.bin("tests/bench/bench_writer")
        rows = self.sz["writer_rows"]
        res = {"copy": [], "new": [], "update": [], "new_stock": [], "update_stock": []}
        try:
            for k in range(self.sz["repeats"]):
                for key in res:
                    mode, _, stock = key.partition("_")
                    r = subprocess.run([drv, mode, "--dsn", pl["url"], "--push", pl["push"],
                                        "--ack", pl["ack"], "--rows", str(rows),
                                        "--stock", "2" if stock else "0"],
                                       capture_output=True, text=True, timeout=900)
                    m = re.search(r"rows_per_s=(\d+)", r.stdout)
                    if r.returncode != 0 or not m:
                        raise BenchError(f"bench_writer {key} failed: {r.stderr.strip()}")
                    res[key].append(float(m.group(1)))
                    log(f"writer repeat {k + 1} {key}: {m.group(1)} rows/s")
        finally:
            self.stop_pipeline(pl)
            self.pg.drop_db(db)
        ceil = statistics.median(res["copy"])
        self.copy_ceiling = ceil
        self.figure("writer_copy", "writer ceiling: plain COPY", "rows/s", res["copy"],
                    note=f"{rows} item rows (~1 KB raw) into an empty LIKE zoho.items table, one tx")
        self.figure("writer_new", "writer: new rows", "rows/s", res["new"], ceil, "≥ 70% of COPY",
                    note=f"{rows} rows, 200 per rows message, all acks received")
        self.figure("writer_update", "writer: updated rows", "rows/s", res["update"], ceil,
                    note="same rows, newer modified_time")
        self.figure("writer_new_stock", "writer: new items with 2 stock rows", "items/s",
                    res["new_stock"],
                    note=f"{rows} items, each with 2 zoho.item_stock rows of every column, "
                         "200 items per rows message")
        self.figure("writer_update_stock", "writer: updated items with 2 stock rows",
                    "items/s", res["update_stock"],
                    note="the same items, newer modified_time; one stock row changed (w0, "
                         "as after a sale), the other as it was")

    # ---- 2. processor

    def bench_processor(self):
        exe = self.bin("tests/unit/processor/bench_processor_transform")
        pages = str(self.sz["transform_pages"])
        vals = []
        for k in range(self.sz["repeats"]):
            r = subprocess.run([exe, pages], capture_output=True, text=True, timeout=600)
            m = re.search(r"([\d.]+) items/s per CPU second", r.stdout)
            if r.returncode != 0 or not m:
                raise BenchError(f"bench_processor_transform failed: {r.stdout}{r.stderr}")
            vals.append(float(m.group(1)))
            log("processor repeat %d: %s" % (k + 1, r.stdout.strip()))
        note = "pages of 200 detail items, CPU time of one thread"
        cyc = self.perf_cycles(exe, pages)
        if cyc is not None:
            note += f"; {cyc:.0f} cycles/record (perf stat)"
        else:
            ns = 1e9 / statistics.median(vals)
            mhz = self.cpu_mhz()
            note += (f"; {ns:.0f} ns CPU/record"
                     + (f" ≈ {ns * mhz / 1000:.0f} cycles at the nominal {mhz:.0f} MHz" if mhz else "")
                     + " (perf has no cycle counter on this machine)")
        self.figure("processor_items", "processor: items on one core", "items/s", vals,
                    note=note)
        cpu, calls = [], []
        for k in range(self.sz["repeats"]):
            c, n = self.processor_events(k)
            cpu.append(c)
            calls.append(n)
        rate = self.sz["events_rate"]
        note = ("tds-processor as a process: item webhook events (bodies of "
                f"{self.events_body / 1000:.1f} KB on average) pushed over "
                f"ZeroMQ/TCP at {rate:,}/s in bursts each millisecond for {self.sz['events_s']} s, "
                "its rows messages pulled; its CPU, its ZeroMQ I/O thread's included, over the "
                "events")
        if all(n is not None for n in calls):
            note += ("; system calls per event (perf stat, raw_syscalls:sys_enter): "
                     + ", ".join(f"{n:.2f}" for n in calls))
        self.figure("processor_event_cpu", f"processor: CPU per webhook event at {rate:,}/s",
                    "us", cpu, note=note)

    def processor_events(self, k):
        """(CPU us, system calls or None) per event of tds-processor taking item
        webhook events at a steady rate, as it does behind the ingress."""
        import msgpack
        import zmq
        rate, secs = self.sz["events_rate"], self.sz["events_s"]
        n = int(rate * secs)
        inp, outp = free_port(), free_port()
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(EP(outp))
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        proc = self.spawn(f"processor-events{k}", [self.bin("processor/tds-processor")], {
            "TDS_PROCESSOR_BIND": EP(inp),
            "TDS_WRITER_CONNECT": EP(outp)})
        got, perf = [0], None
        try:
            proc.wait_ready()
            push.connect(EP(inp))
            loc = {"location_name": "المستودع الرئيسي", "is_primary": True,
                   "location_stock_on_hand": 10, "location_available_stock": 9,
                   "location_actual_available_stock": 9}
            msgs, body_bytes = [], 0
            for j in range(n):
                iid = "48%02d%012d" % (k, j)
                item = {"item_id": iid, "name": f"قميص قطني {j} - Cotton shirt",
                        "sku": f"TEE-{j}", "status": "active", "unit": "pcs", "rate": 19.99,
                        "purchase_rate": "7.50", "tax_percentage": 15, "is_taxable": True,
                        "description": "قميص قطني مريح للاستخدام اليومي " * 6,
                        "stock_on_hand": 12, "available_stock": 12,
                        "locations": [dict(loc, location_id="4815000000000331"),
                                      dict(loc, location_id="4815000000000335",
                                           location_name="Second WH", is_primary=False)],
                        "created_time": "2024-01-15T10:20:30+0300",
                        "last_modified_time": "2024-02-01T08:00:00+0300"}
                body = json.dumps({"item": item}, ensure_ascii=False).encode()
                body_bytes += len(body)
                msgs.append(msgpack.packb({
                    "v": 1, "t": "event", "id": f"ev-{iid}", "org": "60001", "entity": "items",
                    "op": "upsert", "origin": "bench.events", "event_id": f"e-{iid}",
                    "received_ms": int(time.time() * 1000), "zoho_id": iid, "body": body},
                    use_bin_type=True))
            self.events_body = body_bytes / n

            def drain():
                while got[0] < n and pull.poll(10000):
                    pull.recv()
                    got[0] += 1
            rx = threading.Thread(target=drain)
            rx.start()
            if shutil.which("perf"):
                perf_out = os.path.join(self.work, f"processor-events{k}.perf")
                perf = subprocess.Popen(["perf", "stat", "-x,", "-o", perf_out, "-e",
                                         "raw_syscalls:sys_enter", "-p", str(proc.p.pid)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.3)
            c0, t0, burst = proc.cpu_s(), time.monotonic(), max(1, rate // 1000)
            for j in range(0, n, burst):
                for m in msgs[j:j + burst]:
                    push.send(m)
                d = t0 + (j + burst) / rate - time.monotonic()
                if d > 0:
                    time.sleep(d)
            rx.join()
            c1 = proc.cpu_s()
            if got[0] != n:
                raise BenchError(f"processor events: {got[0]} of {n} rows messages came out")
            calls = None
            if perf is not None:
                perf.send_signal(signal.SIGINT)
                perf.wait(timeout=10)
            if perf is not None and os.path.exists(perf_out):  # perf may not attach
                with open(perf_out) as f:
                    for line in f:
                        parts = line.split(",")
                        if len(parts) > 2 and parts[2] == "raw_syscalls:sys_enter" and \
                                parts[0].strip().isdigit():
                            calls = int(parts[0]) / n
            log(f"processor events repeat {k + 1}: {n} at {rate}/s, "
                f"{1e6 * (c1 - c0) / n:.1f} us of CPU each"
                + (f", {calls:.2f} system calls each" if calls is not None else ""))
            return 1e6 * (c1 - c0) / n, calls
        finally:
            if perf is not None and perf.poll() is None:
                perf.kill()
                perf.wait()
            self.stop(proc)
            push.close()
            pull.close()
            ctx.term()

    def perf_cycles(self, exe, pages):
        if not shutil.which("perf"):
            return None
        r = subprocess.run(["perf", "stat", "-x,", "-e", "cycles", exe, pages],
                           capture_output=True, text=True)
        for line in r.stderr.splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[2].startswith("cycles") and parts[0].isdigit():
                return int(parts[0]) / ((int(pages) + 16) * 200)
        return None

    @staticmethod
    def cpu_mhz():
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1])
        except OSError:
            pass
        return None

    # ---- webhook bodies

    # the fields a ~1 KB webhook body keeps of the simulator's detail records
    KEEP = {
        "items": ("name", "sku", "status", "unit", "rate", "purchase_rate", "item_type",
                  "product_type", "brand", "stock_on_hand", "available_stock",
                  "actual_available_stock", "created_time", "last_modified_time", "warehouses"),
        "contacts": ("contact_name", "company_name", "contact_type", "status", "email", "phone",
                     "currency_code", "outstanding_receivable_amount", "payment_terms",
                     "created_time", "last_modified_time", "billing_address"),
    }

    def templates(self, sim, org, entity, n):
        t = http_json(f"{sim.url}/_sim/truth/{org}/{entity}?limit={n}")
        keep = self.KEEP[entity]
        recs = [{k: v for k, v in r.items() if k in keep or k == t["id_field"]}
                for r in t["records"]]
        return recs, t["id_field"], t["detail_key"]

    def make_body(self, tmpl, idf, key, uid, mtime=None):
        rec = dict(tmpl)
        rec[idf] = uid
        if mtime:
            rec["last_modified_time"] = mtime
        return json.dumps({key: rec}, ensure_ascii=False, separators=(",", ":")).encode()

    # ---- 3. ingress + rows applied

    def bench_ingress(self, sim):
        n_orgs = self.sz["ingress_orgs"]
        orgs = [("7%09d" % i, "secret-%d" % i) for i in range(n_orgs)]
        opath = self.orgs_file(os.path.join(self.work, "orgs-i.json"), orgs + [("60001", SECRET)])
        kinds = [self.templates(sim, "60001", e, 20) for e in ("items", "contacts")]
        acc, p50, p99, applied, table_rows, hz = [], [], [], [], [], []
        half_p99, half_rate, half_own = [], [], []
        wrapped, avg_body = 0, 0
        reqfile = os.path.join(self.work, "requests.txt")
        alone = {"acc": [], "p99": [], "half_p99": [], "half_own": [], "half_rate": [], "us": [],
                 "sink_us": []}
        budget = []  # per repeat: {stage: CPU us per webhook applied}
        switches = []  # per repeat: {stage: context switches per webhook applied}
        upd = {"applied": [], "budget": [], "wrapped": 0}  # webhooks for records already stored
        for k in range(self.sz["repeats"]):
            self.ingress_alone(opath, orgs, kinds, k, reqfile, alone)
            # a fresh pipeline each repeat: no backlog carried over from the last one
            db = f"ibench{k}"
            self.pg.create_db(db)
            pl = self.pipeline(db, opath, ingress=True)
            ing = pl["stages"]["ingress"]
            try:
                # /healthz ceiling of the same binary
                hz.append(self.wrk(f"http://127.0.0.1:{ing.admin_port}/healthz", None,
                                   self.sz["ingress_s"])["rps"])
                n_req = int(60000 * self.sz["ingress_s"])  # more than the machine can accept
                avg_body = self.write_requests(reqfile, orgs, kinds, n_req, "47%02d" % k) / n_req
                meters = dict((n, p.cpu_s) for n, p in pl["stages"].items())
                meters["postgres"] = self.pg.cpu_s
                switchers = dict((n, p.switches) for n, p in pl["stages"].items())
                switchers["postgres"] = self.pg.switches
                sw0 = {n: f() for n, f in switchers.items()}
                cpu0 = {n: f() for n, f in meters.items()}
                f0 = self.slow_fsyncs(ing)
                t0_wall = time.time()
                out = self.wrk(f"http://127.0.0.1:{pl['hook_port']}", reqfile,
                               self.sz["ingress_s"])
                cpu1 = {n: f() for n, f in meters.items()}
                f1 = self.slow_fsyncs(ing)
                wrapped += out.get("wrapped", 0)
                if out["non200"] or out["errors"]:
                    self.notes.append(f"ingress repeat {k + 1}: {out['non200']} non-200 replies, "
                                      f"{out['errors']} socket errors")
                acc.append(out["ok"] / out["duration_s"])
                p50.append(out["p50_ms"])
                p99.append(out["p99_ms"])
                # rows committed per second while there is a backlog: from the
                # first webhook the ingress received (its received_at) to the
                # last commit (the writer's applied_at), both on this machine's
                # clock, or over a bounded window when the backlog outlasts it.
                # Not from wrk's start: wrk reads and formats the whole request
                # file before its first request (~4 s for the full run's), and
                # nothing can be applied then. One connection polls every
                # 0.25 s: the poll must not load the PostgreSQL it measures.
                poll = self.pg.connect(db)
                last = [0, None, None]

                def done():
                    with poll.cursor() as cur:
                        cur.execute("SELECT count(*), extract(epoch FROM max(applied_at)), "
                                    "extract(epoch FROM min(received_at)) FROM tds.webhook_events")
                        c, at, first = cur.fetchone()
                    last[:] = [c, float(at) if at is not None else None,
                               float(first) if first is not None else None]
                    return c >= out["ok"]
                try:
                    try:
                        wait_until(done, self.sz["ingress_s"] + 20, "webhook rows",
                                   interval=0.25)
                        drained = "all applied"
                    except RuntimeError:
                        drained = f"{out['ok'] - last[0]} still queued at the end of the window"
                finally:
                    poll.close()
                # CPU each stage spent from wrk's start until the last commit,
                # per webhook applied: what one webhook costs the machine
                # end to end (wrk's own share not counted)
                cpu2 = {n: f() for n, f in meters.items()}
                sw2 = {n: f() for n, f in switchers.items()}
                if last[0]:
                    budget.append({n: (cpu2[n] - cpu0[n]) / last[0] * 1e6 for n in cpu0})
                    switches.append({n: (sw2[n] - sw0[n]) / last[0] for n in sw0})
                t_first = last[2] if last[2] is not None else t0_wall
                applied.append(last[0] / (last[1] - t_first) if last[1] else 0.0)
                self.check_wrk_span(db, out, f"ingress repeat {k + 1}")
                # every row those webhooks wrote: the record, its child rows
                # and the webhook_events row
                n_rows = sum(self.pg.query(db, "SELECT (SELECT count(*) FROM zoho.items) + "
                                               "(SELECT count(*) FROM zoho.item_stock) + "
                                               "(SELECT count(*) FROM zoho.contacts) + "
                                               "(SELECT count(*) FROM zoho.contact_addresses) + "
                                               "(SELECT count(*) FROM zoho.contact_persons) + "
                                               "(SELECT count(*) FROM tds.webhook_events)")[0])
                table_rows.append(n_rows / (last[1] - t_first) if last[1] else 0.0)
                # p99 at half the target rate, with the backlog drained: wrk
                # waits PACE_MS after each response, calibrated so the 64
                # connections together send about half_rate per second
                hr, hp, ho = self.paced_run(dict(pl, ingress=pl["stages"]["ingress"]), orgs,
                                            kinds, k, reqfile)
                half_rate.append(hr)
                half_p99.append(hp)
                half_own.append(ho)
                self.updates_run(db, pl, meters, orgs, kinds, reqfile, k, upd)
                log(f"ingress repeat {k + 1}: {acc[-1]:.0f} accepted/s p50 {p50[-1]:.2f} ms "
                    f"p99 {p99[-1]:.2f} ms; CPU s during wrk: "
                    + ", ".join(f"{n} {cpu1[n] - cpu0[n]:.1f}" for n in cpu0)
                    + f"; journal fdatasyncs over 25 ms: {f1[1] - f0[1]} of {f1[0] - f0[0]}"
                    + f"; applied {applied[-1]:.0f}/s ({drained})"
                    + ("; CPU us per webhook applied: "
                       + ", ".join(f"{n} {u:.1f}" for n, u in budget[-1].items())
                       + "; context switches per webhook applied: "
                       + ", ".join(f"{n} {u:.2f}" for n, u in switches[-1].items())
                       if budget and last[0] else ""))
            finally:
                self.stop_pipeline(pl)
                self.pg.drop_db(db)
        if os.path.exists(reqfile):
            os.unlink(reqfile)
        note = (f"wrk -t2 -c{self.sz['conns']} keep-alive"
                + (f" paced at {self.sz['pace']}/s per connection" if self.sz["pace"] else "")
                + f", {avg_body / 1024:.1f} KB average pre-signed bodies (items with 2 stock rows, "
                f"contacts from the simulator, new ids), {n_orgs} orgs x 2 entities, "
                "journal fdatasync on the real disk, processor+writer+PostgreSQL on the same cores")
        if wrapped:
            note += f"; the request list wrapped {wrapped} times (duplicates were sent)"
        self.figure("ingress_rps", "ingress: durable webhooks accepted", "req/s", acc,
                    statistics.median(hz), "≥ 30,000", note)
        self.figure("ingress_p50", "ingress: latency p50 at max rate", "ms", p50)
        self.figure("ingress_p99", "ingress: latency p99 at max rate", "ms", p99)
        self.figure("ingress_healthz", "ingress ceiling: admin /healthz", "req/s", hz)
        self.figure("ingress_half_p99", f"ingress: latency p99 at {self.sz['half_rate']:,}/s",
                    "ms", half_p99, target="≤ 10",
                    note=f"wrk -c{self.sz['conns']} paced (wait after each response calibrated "
                         f"in up to three short runs) to {self.sz['half_rate']:,} new webhooks/s in all, "
                         f"{self.sz['half_s']} s, after the backlog of the max-rate run was "
                         "applied; rates reached: "
                         + ", ".join(f"{r:,.0f}/s" for r in half_rate))
        self.figure("ingress_half_own_p99",
                    f"ingress: p99 at {self.sz['half_rate']:,}/s, the ingress's own clock", "ms",
                    half_own, note=OWN_NOTE)
        self.figure("ingress_alone_rps", "ingress alone: durable webhooks accepted", "req/s",
                    alone["acc"], statistics.median(hz), None,
                    "the same load and journal, the ingress alone on the machine: a sink "
                    "(tests/bench/bench_sink.c) takes its messages and acks them every 10 ms, as a "
                    "service with an in-memory queue would; ingress CPU per webhook: "
                    + ", ".join(f"{u:.1f} us" for u in alone["us"]) + "; the sink's: "
                    + ", ".join(f"{u:.1f} us" for u in alone["sink_us"]))
        self.figure("ingress_alone_p99", "ingress alone: latency p99 at max rate", "ms", alone["p99"])
        self.figure("ingress_alone_half_p99",
                    f"ingress alone: latency p99 at {self.sz['half_rate']:,}/s", "ms",
                    alone["half_p99"], note="paced as above; rates reached: "
                    + ", ".join(f"{r:,.0f}/s" for r in alone["half_rate"]))
        self.figure("ingress_alone_half_own_p99",
                    f"ingress alone: p99 at {self.sz['half_rate']:,}/s, the ingress's own clock",
                    "ms", alone["half_own"])
        self.figure("webhook_applied", "webhooks applied end to end", "webhooks/s", applied,
                    None, "≥ 20,000",
                    "webhook_events committed / time from the first webhook received (its "
                    "received_at) to the last commit (its applied_at), polled every 0.25 s on one "
                    "connection "
                    f"(window at most {self.sz['ingress_s'] + 20} s)")
        self.figure("webhook_table_rows", "webhook rows written end to end, all tables", "rows/s",
                    table_rows, getattr(self, "copy_ceiling", None), None,
                    "rows those webhooks left in zoho.items, item_stock, contacts, "
                    "contact_addresses, contact_persons and tds.webhook_events / the same time")
        if budget:
            stages = list(budget[0])
            per = {n: statistics.median(b[n] for b in budget) for n in stages}
            totals = [sum(b.values()) for b in budget]
            ncpu = os.cpu_count() or 1
            self.figure("webhook_cpu_us", "pipeline CPU per webhook applied, all stages", "us",
                        totals, None, None,
                        "CPU seconds of the ingress, processor, writer and every PostgreSQL "
                        "process from wrk's start to the last commit / webhooks applied "
                        "(medians: " + ", ".join(f"{n} {u:.1f} us" for n, u in per.items())
                        + "); wrk's own CPU not counted; context switches per webhook "
                        "applied, every thread (medians): "
                        + ", ".join(f"{n} {statistics.median(w[n] for w in switches):.2f}"
                                    for n in stages))
            self.figure("webhook_cpu_ceiling", f"pipeline ceiling on {ncpu} cores at that CPU",
                        "webhooks/s", [ncpu * 1e6 / t for t in totals], None, None,
                        f"{ncpu} cores / CPU per webhook: the most the whole pipeline could "
                        "accept and apply on this machine with its CPU fully used and nothing "
                        "left for the load generator")

        if upd["applied"]:
            self.figure("webhook_update_applied", "webhook updates applied end to end",
                        "webhooks/s", upd["applied"], None, None,
                        "the same load, each webhook a newer version of a record already stored "
                        "(its row updated, its child rows replaced), as most of Zoho's webhooks "
                        "are; measured as above"
                        + (f"; the request list wrapped {upd['wrapped']} times (duplicates were "
                           "sent)" if upd["wrapped"] else ""))
        if upd["budget"]:
            stages = list(upd["budget"][0])
            per = {n: statistics.median(b[n] for b in upd["budget"]) for n in stages}
            self.figure("webhook_update_cpu_us", "pipeline CPU per webhook update applied", "us",
                        [sum(b.values()) for b in upd["budget"]], None, None,
                        "as for new records (medians: "
                        + ", ".join(f"{n} {u:.1f} us" for n, u in per.items()) + ")")

    def updates_run(self, db, pl, meters, orgs, kinds, reqfile, k, upd):
        """Webhooks for records the database already holds, each with a newer
        modified time: the writer's update path (guard, upsert, children
        replaced), which most of Zoho's webhooks take. Applied webhooks/s
        and CPU per webhook, measured as for new records."""
        secret = dict(orgs)
        by_kind = {}
        for recs, idf, key in kinds:
            table = {"item": "items", "contact": "contacts"}[key]
            by_kind[key] = self.pg.query(
                db, f'SELECT org_id, "{idf}" FROM zoho.{table} WHERE org_id = ANY(%s) '
                    "ORDER BY 2", list(secret))
        # interleaved by kind, at most what the machine could take in the run
        n_max = int(60000 * self.sz["ingress_s"])
        targets = []
        for pair in itertools.zip_longest(*by_kind.values()):
            targets.extend((key, r) for key, r in zip(by_kind, pair) if r)
        targets = targets[:n_max]
        if not targets:
            self.notes.append(f"ingress repeat {k + 1}: no records stored to update")
            return
        kind_of = {key: (recs, idf) for recs, idf, key in kinds}
        mtime = "2031-01-01T00:00:00+0000"  # newer than every stored version
        with open(reqfile, "wb") as f:
            for j, (key, (org, uid)) in enumerate(targets):
                recs, idf = kind_of[key]
                body = self.make_body(recs[j % len(recs)], idf, key, uid, mtime)
                sig = hmac.new(secret[org].encode(), body, hashlib.sha256).hexdigest()
                f.write(b"/webhooks/zoho/%s\t%s\t%s\n" % (org.encode(), sig.encode(), body))
        # the paced run's webhooks were all answered before its wrk exited:
        # every webhook the ingress receives from here on is one of these
        t_start = time.time()
        cpu0 = {n: f() for n, f in meters.items()}
        out = self.wrk(f"http://127.0.0.1:{pl['hook_port']}", reqfile, self.sz["ingress_s"])
        upd["wrapped"] += out.get("wrapped", 0)
        if out["non200"] or out["errors"]:
            self.notes.append(f"ingress repeat {k + 1}, updates: {out['non200']} non-200 "
                              f"replies, {out['errors']} socket errors")
        poll = self.pg.connect(db)
        last = [0, None, None]

        def done():
            with poll.cursor() as cur:
                cur.execute("SELECT count(*), extract(epoch FROM max(applied_at)), "
                            "extract(epoch FROM min(received_at)) FROM tds.webhook_events "
                            "WHERE received_at >= to_timestamp(%s)", (t_start - 0.001,))
                c, at, first = cur.fetchone()
            last[:] = [c, float(at) if at is not None else None,
                       float(first) if first is not None else None]
            return c >= min(out["ok"], len(targets))
        try:
            try:
                wait_until(done, self.sz["ingress_s"] + 20, "webhook updates", interval=0.25)
            except RuntimeError:
                self.notes.append(f"ingress repeat {k + 1}, updates: {out['ok'] - last[0]} "
                                  "still queued at the end of the window")
        finally:
            poll.close()
        cpu1 = {n: f() for n, f in meters.items()}
        # they must have been applied as updates: every row written has the
        # new version, none was taken as a new record
        n_new = sum(self.pg.query(db, "SELECT (SELECT count(*) FROM zoho.items WHERE "
                                      "modified_time >= %s) + (SELECT count(*) FROM "
                                      "zoho.contacts WHERE modified_time >= %s)",
                                  mtime, mtime)[0])
        if last[0] and n_new < min(last[0], len(targets)) * 0.99:
            self.failures.append(f"ingress repeat {k + 1}, updates: {last[0]} webhooks applied "
                                 f"but only {n_new} records carry the new version")
        if last[0] and last[1]:
            upd["applied"].append(last[0] / (last[1] - last[2]))
            upd["budget"].append({n: (cpu1[n] - cpu0[n]) / last[0] * 1e6 for n in cpu0})
            log(f"ingress repeat {k + 1}, updates: {out['ok'] / out['duration_s']:.0f} accepted/s, "
                f"applied {upd['applied'][-1]:.0f}/s; CPU us per webhook applied: "
                + ", ".join(f"{n} {u:.1f}" for n, u in upd["budget"][-1].items()))

    def check_wrk_span(self, db, out, tag):
        """accepted/s is wrk's count over wrk's duration: it is only true if the
        ingress received those webhooks within that duration. A wider span of
        received_at means some requests were sent outside wrk's clock (as its
        threads once did while the others read the request file)."""
        span = self.pg.query(db, "SELECT extract(epoch FROM max(received_at) - "
                                 "min(received_at)) FROM tds.webhook_events")[0][0]
        if span is None:
            return
        span, dur = float(span), out["duration_s"]
        if span > dur * 1.2 + 0.1:
            self.failures.append(f"{tag}: the ingress received the webhooks over {span:.2f} s "
                                 f"but wrk timed {dur:.2f} s: accepted/s would be overstated")

    def ingress_alone(self, opath, orgs, kinds, k, reqfile, out):
        """The ingress with nothing behind it but an acking sink: what its own
        cores can take, apart from the processor, writer and PostgreSQL."""
        pull, ack, hport = free_port(), free_port(), free_port()
        sink = subprocess.Popen([self.bin("tests/bench/bench_sink"),
                                 EP(pull), EP(ack)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        journal = os.path.join(self.work, f"journal-alone{k}")
        ing = None
        try:
            ing = self.spawn("ingress-alone", [self.bin("ingress/tds-ingress")], {
                "TDS_CONFIG": opath, "TDS_INGRESS_LISTEN": f"127.0.0.1:{hport}",
                "TDS_INGRESS_JOURNAL_DIR": journal,
                "TDS_PROCESSOR_CONNECT": EP(pull),
                "TDS_FETCHER_CONNECT": EP(free_port()),
                "TDS_ACK_CONNECT": EP(ack), **self.slow_disk_env()})
            ing.wait_ready()
            n_req = int(60000 * self.sz["ingress_s"])
            self.write_requests(reqfile, orgs, kinds, n_req, "45%02d" % k)
            c0, f0, s0 = ing.cpu_s(), self.slow_fsyncs(ing), proc_cpu_s(sink.pid)
            res = self.wrk(f"http://127.0.0.1:{hport}", reqfile, self.sz["ingress_s"])
            c1, f1, s1 = ing.cpu_s(), self.slow_fsyncs(ing), proc_cpu_s(sink.pid)
            if res["non200"] or res["errors"]:
                self.notes.append(f"ingress alone, repeat {k + 1}: {res['non200']} non-200 "
                                  f"replies, {res['errors']} socket errors")
            out["acc"].append(res["ok"] / res["duration_s"])
            out["p99"].append(res["p99_ms"])
            out["us"].append((c1 - c0) / max(res["ok"], 1) * 1e6)
            out["sink_us"].append((s1 - s0) / max(res["ok"], 1) * 1e6)
            hr, hp, ho = self.paced_run({"hook_port": hport, "ingress": ing}, orgs, kinds,
                                        50 + k, reqfile)
            out["half_rate"].append(hr)
            out["half_p99"].append(hp)
            out["half_own"].append(ho)
            log(f"ingress alone, repeat {k + 1}: {out['acc'][-1]:.0f} accepted/s "
                f"p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms, "
                f"{out['us'][-1]:.1f} us of ingress CPU each; journal fdatasyncs over 25 ms: "
                f"{f1[1] - f0[1]} of {f1[0] - f0[0]}")
        finally:
            if ing:
                self.stop(ing)
            sink.terminate()
            try:
                sink.wait(10)
            except subprocess.TimeoutExpired:
                sink.kill()
                sink.wait()
            shutil.rmtree(journal, ignore_errors=True)

    def bench_latency_step(self, sim):
        """webhook → row latency at a steady low rate, a fresh pipeline each repeat."""
        opath = self.orgs_file(os.path.join(self.work, "orgs-l.json"), [("60001", SECRET)])
        kind = self.templates(sim, "60001", "items", 20)
        for k in range(self.sz["repeats"]):
            # a fresh database, as right after set-up: its tables grow from
            # empty while measured, and the stages' sessions start cold
            db = f"lbench{k}"
            self.pg.create_db(db)
            pl = self.pipeline(db, opath, ingress=True, **self.latency_replicas())
            try:
                self.bench_latency(pl, "60001", kind, self.lat_runs)
            finally:
                self.stop_pipeline(pl)
                self.pg.drop_db(db)
            # a database in service: holding the organization's records,
            # vacuumed and analyzed, the stages running for a while
            db = f"lbenchp{k}"
            self.pg.create_db(db)
            pl = self.pipeline(db, opath, ingress=True, **self.latency_replicas())
            try:
                self.preload(pl, db, "60001", kind, self.sz["latency_preload"], k)
                self.bench_latency(pl, "60001", kind, self.lat_pop_runs)
            finally:
                self.stop_pipeline(pl)
                self.pg.drop_db(db)

    def latency_replicas(self):
        """--latency-processors and --latency-writers: the latency step's replicas
        (the ingress spreads webhooks over the processors, each processor its
        rows over the writers, ZeroMQ's round robin)."""
        return {"processors": self.args.latency_processors,
                "writers": self.args.latency_writers}

    def writers_metrics(self, pl):
        """The writers' unlabelled samples, added up over every writer."""
        out = {}
        for name, p in pl["stages"].items():
            if name.startswith("writer"):
                for k, v in self.metrics(p).items():
                    out[k] = out.get(k, 0) + v
        return out

    def preload(self, pl, db, org, kind, n, k):
        """n item webhooks (other ids than the measured ones) sent as fast as
        the pipeline takes them, all applied, then VACUUM ANALYZE: the state
        autovacuum leaves a database in after its first syncs."""
        reqfile = os.path.join(self.work, "preload.req")
        self.write_requests(reqfile, [(org, SECRET)], [kind], n, "46%02d" % k)
        t0 = time.monotonic()
        out = self.wrk(f"http://127.0.0.1:{pl['hook_port']}", reqfile, max(1, n // 10000))
        if out["non200"] or out["errors"]:
            raise BenchError(f"preload: {out['non200']} non-200 replies, "
                             f"{out['errors']} socket errors")
        ing = pl["stages"]["ingress"]
        wait_until(lambda: self.metrics(ing).get("tds_ingress_unacked", 1) == 0, 300,
                   "the preload applied", interval=0.25)
        n_items = self.pg.query(db, "SELECT count(*) FROM zoho.items")[0][0]
        if n_items == 0:
            raise BenchError(f"preload: {out['ok']} webhooks answered 200, no item applied")
        c = self.pg.connect(db)
        try:
            c.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            c.cursor().execute("VACUUM ANALYZE")
        finally:
            c.close()
        log(f"latency: preloaded {n_items:,} items by webhook, vacuumed and analyzed, "
            f"in {time.monotonic() - t0:.1f} s")

    def write_requests(self, path, orgs, kinds, n, prefix):
        """n signed webhook requests with new record ids "<prefix><counter>"."""
        n_orgs, total = len(orgs), 0
        with open(path, "wb") as f:
            for j in range(n):
                oid, sec = orgs[j % n_orgs]
                recs, idf, key = kinds[(j // n_orgs) % len(kinds)]
                body = self.make_body(recs[j % len(recs)], idf, key, "%s%015d" % (prefix, j))
                sig = hmac.new(sec.encode(), body, hashlib.sha256).hexdigest()
                total += len(body)
                f.write(b"/webhooks/zoho/%s\t%s\t%s\n" % (oid.encode(), sig.encode(), body))
        return total

    def paced_run(self, pl, orgs, kinds, k, reqfile):
        """(rate reached, p99 ms by wrk, p99 ms by the ingress's own clock or
        None) with wrk paced to about half_rate webhooks/s."""
        target, conns = self.sz["half_rate"], self.sz["conns"]
        url = f"http://127.0.0.1:{pl['hook_port']}"
        pace = 1000.0 * conns / target  # ms between a response and the next request
        calibrated = False
        for step in range(4):
            # up to three 2-second runs calibrate the wait, then the measured run
            measure = calibrated or step == 3
            secs = self.sz["half_s"] if measure else min(2, self.sz["half_s"])
            # fresh ids every run: a repeated body would be a cheap duplicate
            self.write_requests(reqfile, orgs, kinds, int(target * secs * 1.5) + 1000,
                                "49%d%d" % (k, step))
            ing = pl.get("ingress")
            a0, f0 = (self.hist(ing, ACCEPT), self.slow_fsyncs(ing)) if ing else ({}, (0, 0))
            out = self.wrk(url, reqfile, secs, pace_ms=pace)
            a1, f1 = (self.hist(ing, ACCEPT), self.slow_fsyncs(ing)) if ing else ({}, (0, 0))
            rate = out["ok"] / out["duration_s"]
            if measure:
                break
            # one connection's cycle = pace + latency: keep the latency seen,
            # choose the pace that makes conns / cycle = target
            cycle = 1000.0 * conns / max(rate, 1)
            new_pace = max(0.05, 1000.0 * conns / target - (cycle - pace))
            # within 5% of the target after a correction, or as fast as it goes
            calibrated = step >= 1 and (abs(rate - target) <= 0.05 * target or
                                        (new_pace == 0.05 and pace == 0.05))
            pace = new_pace
        own = self.hist_quantile(a0, a1, 0.99)
        n_ok = a1.get(math.inf, 0) - a0.get(math.inf, 0)
        n_slow = n_ok - (a1.get(0.01, 0) - a0.get(0.01, 0))
        log(f"ingress paced run: {rate:.0f}/s (aimed at {target}/s) p50 {out['p50_ms']:.2f} ms "
            f"p99 {out['p99_ms']:.2f} ms, wait {pace:.2f} ms after each response"
            # the ingress's own clock (headers to 200): apart from wrk's
            # scheduling on the same cores
            + (f"; by the ingress's clock p99 {1000 * own:.2f} ms, {n_slow:.0f} of {n_ok:.0f} "
               f"answered in over 10 ms; journal fdatasyncs over 25 ms: {f1[1] - f0[1]} of "
               f"{f1[0] - f0[0]}" if own is not None else ""))
        return rate, out["p99_ms"], (1000 * own if own is not None else None)

    def wrk(self, url, reqfile, seconds, pace_ms=None):
        threads = 2
        argv = ["wrk", f"-t{threads}", f"-c{self.sz['conns']}", f"-d{seconds}s", "--latency"]
        if reqfile:
            argv += ["-s", os.path.join(HERE, "webhooks.lua")]
        # webhooks.lua's start barrier: each thread's init leaves a file here
        ready = tempfile.mkdtemp(prefix="wrk-ready-", dir=self.work)
        env = dict(os.environ, REQUESTS=reqfile or "", RATE=str(self.sz["pace"]),
                   PACE_MS=f"{pace_ms:.3f}" if pace_ms else "0", WRK_THREADS=str(threads),
                   READY=os.path.join(ready, "thread-"))
        try:
            r = subprocess.run(argv + [url], capture_output=True, text=True, env=env,
                               timeout=seconds + 240)
        finally:
            shutil.rmtree(ready, ignore_errors=True)
        if r.returncode != 0:
            raise BenchError(f"wrk failed: {r.stderr}")
        out = {}
        m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
        out["rps"] = float(m.group(1))
        m = re.search(r"BENCH (.*)", r.stdout)
        if m:
            out.update(json.loads(m.group(1)))
        return out

    # ---- 5. webhook → row latency

    def bench_latency(self, pl, org, kind, runs):
        recs, idf, key = kind
        rate, secs = self.sz["latency_rate"], self.sz["latency_s"]
        n = rate * secs
        lat_url = pl["url"]
        reqfile = os.path.join(self.work, "latency.req")
        with open(reqfile, "wb") as f:
            for j in range(n):
                uid = "48%017d" % j
                body = self.make_body(recs[j % len(recs)], idf, key, uid)
                sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                f.write(b"%s\t/webhooks/zoho/%s\t%s\t%s\n" % (uid.encode(), org.encode(),
                                                              sig.encode(), body))
        # the stages' counters before this run (a preload ran in the same
        # processes): the note's means are of this run alone
        wm0 = self.writers_metrics(pl)
        im0 = self.metrics(pl["stages"]["ingress"])
        wall_start = time.time()
        # One C thread sends at the rate and listens for the writer's NOTIFY
        # (tests/bench/bench_latency.c): little of the cores it measures on.
        # each webhook's send and row times, for a closer look (--keep)
        times = os.path.join(self.work, "latency-%s-%d.txt" % (
            "fresh" if runs is self.lat_runs else "populated", len(runs) + 1))
        r = subprocess.run([self.bin("tests/bench/bench_latency"), "127.0.0.1",
                            str(pl["hook_port"]), org, str(rate), reqfile, lat_url, times],
                           capture_output=True, text=True, timeout=secs + 120)
        m = re.search(r"^BENCH (.*)$", r.stdout, re.M)
        if r.returncode != 0 or not m:
            raise BenchError(f"bench_latency failed ({r.returncode}): {r.stderr.strip()}")
        out = json.loads(m.group(1))
        achieved = out["achieved"]
        wm = self.writers_metrics(pl)
        im = self.metrics(pl["stages"]["ingress"])
        # Where the time goes: from the ingress receiving a webhook to the
        # writer's transaction that applies it beginning (its now()), per row.
        before_txn = self.pg.query(
            lat_url.rsplit("/", 1)[1],
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY "
            "extract(epoch FROM applied_at - received_at)) FROM tds.webhook_events "
            "WHERE received_at >= to_timestamp(%s)", wall_start)[0][0] or [0, 0]
        missing = out["ok"] - out["seen"]
        if out["errors"]:
            self.notes.append(f"latency run: {out['errors']} POSTs failed ({out['error']})")
        if missing:
            self.notes.append(f"latency run: {missing} of {out['ok']} rows not visible within "
                              "30 s of the last POST (left out of the percentiles)")
        if out["truncated"]:
            self.notes.append(f"latency run: {out['truncated']} NOTIFY payloads carried counts, "
                              "not ids (a backlog); their rows were looked up on arrival")
        if out["late"]:
            self.notes.append(f"latency run: {out['late']} of {out['sent']} webhooks sent over "
                              f"1 ms late (at most {out['max_late_ms']:.1f} ms)")
        if not out["seen"]:
            raise BenchError("latency run: no row was seen")
        note = (f"{achieved:.0f} webhooks/s sent for {secs} s by one C thread "
                f"(tests/bench/bench_latency.c) over {out['conns']} keep-alive connections, "
                f"{1e6 * out['cpu_s'] / max(out['sent'], 1):.0f} us of its CPU a webhook; "
                "POST start to NOTIFY tds_changes received")
        self.lat = {"p50": out["p50"], "p99": out["p99"], "max": out["max"]}
        def mean(m, name):
            m0 = wm0 if m is wm else im0
            c = m.get(name + "_count", 0) - m0.get(name + "_count", 0)
            return (m.get(name + "_sum", 0) - m0.get(name + "_sum", 0)) / c if c else 0
        inside = (f"received by the ingress to the writer's transaction begun p50 "
                  f"{1000 * before_txn[0]:.2f} ms p99 {1000 * before_txn[1]:.2f} ms; "
                  f"webhook age at commit (writer metric) {1000 * mean(wm, 'tds_writer_webhook_age_seconds'):.1f} ms on average; "
                  f"writer: {int(wm.get('tds_writer_batches_total', 0) - wm0.get('tds_writer_batches_total', 0))} transactions, "
                  f"{mean(wm, 'tds_writer_batch_rows'):.0f} rows and "
                  f"{1000 * mean(wm, 'tds_writer_commit_seconds'):.1f} ms each on average; "
                  f"ingress: fdatasync {1000 * mean(im, 'tds_ingress_fsync_seconds'):.2f} ms, "
                  f"{mean(im, 'tds_ingress_group_commit_size'):.1f} webhooks per group commit")
        log(f"latency: p50 {out['p50']:.2f} ms p99 {out['p99']:.2f} ms max {out['max']:.2f} ms, "
            f"{achieved:.0f}/s sent; {inside}")
        where = "" if runs is self.lat_runs else ", populated database"
        self.notes.append(f"latency repeat {len(runs) + 1}{where}: {inside}")
        runs.append((self.lat, note))

    @staticmethod
    def metrics(proc):
        """Unlabelled samples of a stage's /metrics (name → value)."""
        out = {}
        try:
            text = http_get(f"http://127.0.0.1:{proc.admin_port}/metrics").decode()
        except OSError:
            return out
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and not line.startswith("#") and "{" not in parts[0]:
                try:
                    out[parts[0]] = float(parts[1])
                except ValueError:
                    pass
        return out

    @staticmethod
    def hist(proc, family):
        """{upper bound: cumulative count} of histogram `family` so far (the
        bound "+Inf" is inf), from the stage's /metrics; {} when unreachable."""
        out = {}
        try:
            text = http_get(f"http://127.0.0.1:{proc.admin_port}/metrics").decode()
        except OSError:
            return out
        for line in text.splitlines():
            m = re.match(r'%s_bucket\{le="([^"]+)"\} (\S+)$' % re.escape(family), line)
            if m:
                out[float(m.group(1))] = float(m.group(2))
        return out

    @classmethod
    def hist_over(cls, proc, family, over):
        """(observations of histogram `family` so far, those over `over` s)."""
        h = cls.hist(proc, family)
        total = h.get(math.inf, 0.0)
        return (int(total), int(total - h.get(float(over), total)))

    @staticmethod
    def hist_quantile(h0, h1, q):
        """The q quantile, in seconds, of what a histogram observed between two
        hist() snapshots, interpolated within its bucket as Prometheus's
        histogram_quantile does; None when nothing was observed."""
        bounds = sorted(h1)
        counts = [h1[b] - h0.get(b, 0.0) for b in bounds]
        if not counts or counts[-1] <= 0:
            return None
        rank, lo, below = q * counts[-1], 0.0, 0.0
        for b, c in zip(bounds, counts):
            if c >= rank:
                if b == math.inf:
                    return lo  # past the last bound: its bound is all we know
                return lo + (b - lo) * (rank - below) / max(c - below, 1e-9)
            lo, below = b, c
        return None

    @classmethod
    def slow_fsyncs(cls, proc, over="0.025"):
        """(fdatasyncs of the ingress journal so far, those slower than `over` s)."""
        return cls.hist_over(proc, "tds_ingress_fsync_seconds", over)

    def latency_figures(self):
        at = f"at {self.sz['latency_rate']:,}/s"
        runs = self.lat_runs
        self.latency_triple("latency", at, runs, runs[-1][1] if runs else None)
        runs = self.lat_pop_runs
        self.latency_triple("latency_pop", f"{at}, populated database", runs,
                            f"{self.sz['latency_preload']:,} items applied by webhook first, "
                            "then VACUUM ANALYZE; new items measured as above" if runs else None)

    def latency_triple(self, key, where, runs, note):
        self.figure(f"{key}_p50", f"webhook to row latency p50 {where}", "ms",
                    [r["p50"] for r, _ in runs], target="≤ 2", note=note)
        self.figure(f"{key}_p99", f"webhook to row latency p99 {where}", "ms",
                    [r["p99"] for r, _ in runs], target="≤ 5")
        self.figure(f"{key}_max", f"webhook to row latency max {where}", "ms",
                    [r["max"] for r, _ in runs])

    # ---- 4. end to end, memory, scaling

    def full_sync(self, sim, org, items, processors=1, tag="e2e"):
        db = tag
        self.pg.create_db(db)
        opath = self.orgs_file(os.path.join(self.work, f"orgs-{tag}.json"), [(org, SECRET)],
                               sim.url)
        pl = self.pipeline(db, opath, processors=processors, fetcher=True,
                           extra_env={"TDS_FETCHER_MINUTE_MS": "1000",
                                      "TDS_FETCHER_SCHEDULE": "false"})
        try:
            self.sync(pl, org, "warehouses", 120)
            meters = dict((n, p.cpu_s) for n, p in pl["stages"].items())
            meters.update(postgres=self.pg.cpu_s, simulator=sim.cpu_s)
            cpu0 = {n: f() for n, f in meters.items()}
            t0 = time.monotonic()
            self.sync(pl, org, "items", 7200)
            dt = time.monotonic() - t0
            cpu = {n: (f() - cpu0[n]) / dt for n, f in meters.items()}
            n, st = self.pg.query(db, "SELECT (SELECT count(*) FROM zoho.items), "
                                      "(SELECT count(*) FROM zoho.item_stock)")[0]
            if n != items:
                self.failures.append(f"{tag}: {n} of {items} items in the database after the sync")
            hwm = {name: p.hwm_kb() for name, p in pl["stages"].items()}
        finally:
            self.stop_pipeline(pl)
            self.pg.drop_db(db)
        log(f"{tag}: {items} items + {st} stock rows in {dt:.1f} s = {items / dt:.0f} items/s, "
            f"peak RSS " + ", ".join(f"{k} {v / 1024:.1f} MB" for k, v in hwm.items())
            + "; CPU cores busy " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
        self.sync_cpu.setdefault(tag, []).append(cpu)
        return items / dt, st, hwm

    def sync(self, pl, org, entity, timeout):
        r = subprocess.run([self.bin("fetcher/tds-fetcher"), "sync", "--org", org, "--entity",
                            entity, "--mode", "full"], capture_output=True, text=True,
                           env=dict(os.environ, TDS_LOG_LEVEL="warn", **pl["env"]),
                           timeout=timeout)
        if r.returncode != 0:
            raise BenchError(f"tds-fetcher sync {entity} failed ({r.returncode}): "
                             f"{(r.stdout + r.stderr).strip()[-600:]}")

    def bench_e2e(self, sim):
        items, big = self.sz["e2e_items"], self.sz["mem_items"]
        one, two, hwm_small, st = [], [], [], 0
        for k in range(self.sz["repeats"]):
            rps, st, hwm = self.full_sync(sim, "60011", items)
            one.append(rps)
            hwm_small.append(hwm)
        scale = self.sz["scale_items"]
        if scale == items:
            one_s = one
        else:
            one_s = [self.full_sync(sim, "60013", scale, tag="e2es1")[0]
                     for _ in range(self.sz["repeats"])]
        for k in range(self.sz["repeats"]):
            rps, _, _ = self.full_sync(sim, "60013" if scale != items else "60011", scale,
                                       processors=2, tag="e2es2")
            two.append(rps)
        _, st_big, hwm_big = self.full_sync(sim, "60012", big, tag="e2ebig")
        ceil = getattr(self, "copy_ceiling", None)
        self.figure("e2e_full_sync", f"end to end full sync, {items // 1000}k items + stock",
                    "items/s", one, ceil, "≥ 50% of COPY",
                    f"simulator limits off, fetcher concurrency 10, {st} stock rows too; "
                    "tds-fetcher sync until the final page commits")
        busy = {}
        for c in self.sync_cpu.get("e2e", []):
            for n, v in c.items():
                busy.setdefault(n, []).append(v)
        self.notes.append("CPU cores busy per stage during the full sync (median): " + ", ".join(
            f"{n} {statistics.median(v):.2f}" for n, v in busy.items()))
        self.figure("scaling_p1", f"scaling: 1 processor, {scale // 1000}k items", "items/s", one_s)
        self.figure("scaling_p2", f"scaling: 2 processors, {scale // 1000}k items", "items/s", two,
                    statistics.median(one_s), note="ratio = 2 processors / 1 processor")
        for stage in ("fetcher", "processor-0", "writer"):
            small = max(h[stage] for h in hwm_small) / 1024
            large = hwm_big[stage] / 1024
            self.figure(f"rss_{stage}_small", f"peak RSS {stage}, {items // 1000}k sync", "MB",
                        [small], target="< 32")
            self.figure(f"rss_{stage}_large", f"peak RSS {stage}, {big // 1000}k sync", "MB",
                        [large], small, "within 20% of the small sync",
                        "ratio = large / small (one run)")

    # ---- 6. quota utilization

    def bench_quota(self):
        rate, minute = self.sz["quota_rate"], self.sz["quota_minute_ms"]
        # contacts: one detail call each (items' details come 100 a call)
        n = self.sz["quota_records"]
        sim = self.start_sim("zohosim-quota", [
            "--rate-per-min", str(rate), "--minute-ms", str(minute), "--concurrency", "10",
            "--daily-limit", "0", "--org", f"id=60021,tz=+0300,stock=warehouses,warehouses=2,"
            f"product=inventory,items=2,groups=2,contacts={n},invoices=2,salesorders=2"])
        util, n429, reqs, full, n_full = [], [], [], [], []
        try:
            for k in range(self.sz["repeats"]):
                db = "quota"
                self.pg.create_db(db)
                opath = self.orgs_file(os.path.join(self.work, "orgs-q.json"),
                                       [("60021", SECRET)], sim.url, rate=rate)
                pl = self.pipeline(db, opath, fetcher=True, extra_env={
                    "TDS_FETCHER_MINUTE_MS": str(minute), "TDS_FETCHER_SCHEDULE": "false"})
                try:
                    self.sync(pl, "60021", "warehouses", 300)
                    s0 = http_json(sim.url + "/_sim/stats")["orgs"]["60021"]
                    t0 = time.monotonic()
                    self.sync(pl, "60021", "contacts", 900)
                    dt = time.monotonic() - t0
                    s1 = http_json(sim.url + "/_sim/stats")["orgs"]["60021"]
                finally:
                    self.stop_pipeline(pl)
                    self.pg.drop_db(db)
                made = s1["requests"] - s0["requests"]
                allowed = rate * dt * 1000 / minute
                c429 = sum(s1["429"].values()) - sum(s0["429"].values())
                util.append(100 * made / allowed)
                n429.append(c429)
                reqs.append(made)
                # the simulator's minutes that ended during the sync, less the
                # first (it began before: the command starting, the fetcher
                # taking the request) and the last (the final page's commit
                # may have ended inside it): the minutes the sync had wholly
                ended = s1["minutes"]["finished"] - s0["minutes"]["finished"]
                counts = s1["minutes"]["admitted"][-ended:][1:-1] if ended > 2 else []
                if counts:
                    full.append(100 * sum(counts) / (rate * len(counts)))
                n_full.append(len(counts))
                log(f"quota repeat {k + 1}: {made} requests in {dt:.1f} s = "
                    f"{dt * 1000 / minute:.2f} minutes x {rate} allowed: {util[-1]:.1f}%, "
                    f"{c429} 429s; in the {len(counts)} minutes wholly inside the sync: "
                    + (f"{counts} requests, {full[-1]:.1f}%" if counts else "none"))
        finally:
            self.stop(sim)
        self.figure("quota_util", f"quota utilization at {rate}/min, whole command", "%", util,
                    100, None, f"simulator minute = {minute} ms; {int(statistics.median(reqs))} "
                    f"requests (list + detail of {n} contacts); requests / (N x minutes from "
                    "the sync command's start to its return): the command's start and end "
                    f"weigh {60000 // minute} times more than with Zoho's 60 s minute")
        self.figure("quota_util_full", f"quota utilization at {rate}/min, per full minute", "%",
                    full, 100, "≥ 99",
                    "requests the simulator admitted in the minutes of its fixed window that "
                    "ended wholly inside the sync (the first and last it touched left out) / "
                    f"(N x those minutes): {', '.join(str(n) for n in n_full)} minutes per repeat")
        self.figure("quota_429", "quota: 429 replies", "count", n429, target="0")

    # ---- all

    def machine(self):
        mem = ""
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1048576:.1f} GiB"
        model = "?"
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        return {"nproc": os.cpu_count(), "cpu": model, "memory": mem, "loadavg": load,
                "kernel": platform.release(), "disk": self.disk()}

    def disk(self):
        r = subprocess.run(["df", "-h", "--output=source,fstype", self.work],
                           capture_output=True, text=True)
        return " ".join(r.stdout.split()[2:]) if r.returncode == 0 else "?"

    def run(self):
        t0 = time.monotonic()
        self.lat_runs, self.lat_pop_runs = [], []
        self.sync_cpu = {}
        if self.args.mem_items:
            self.sz["mem_items"] = self.args.mem_items
        if self.args.latency_rate:
            self.sz["latency_rate"] = self.args.latency_rate
        m = self.machine()
        san, btype = self.sanitized
        print(f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, kernel "
              f"{m['kernel']}, work dir on {m['disk']}; load average at start "
              f"{m['loadavg']}", flush=True)
        print(f"build: {self.build} ({btype}{', SANITIZERS: figures are not representative' if san else ''}); "
              f"mode {self.mode}, {self.sz['repeats']} repeat(s) per figure; ZeroMQ between the "
              f"stages over {'Unix sockets (ipc://)' if ZMQ_DIR else 'loopback TCP'}", flush=True)
        self.pg = Postgres(self.args.pg_stats, self.args.pg_locale)
        if self.args.db_rtt_ms:
            self.start_db_proxy(self.args.db_rtt_ms)
        if self.args.journal_sync_ms:
            print(f"every fsync/fdatasync of the ingress waits {self.args.journal_sync_ms} ms "
                  "first (--journal-sync-ms)", flush=True)
            self.notes.append(f"the ingress's journal was on a slow disk: each fsync/fdatasync "
                              f"waited {self.args.journal_sync_ms} ms first (--journal-sync-ms)")
        s = self.pg.settings
        print(f"postgresql {s['server_version']}: fsync={s['fsync']} synchronous_commit="
              f"{s['synchronous_commit']} full_page_writes={s['full_page_writes']} "
              f"shared_buffers={s['shared_buffers']} max_wal_size={s['max_wal_size']} "
              f"lc_collate={s['lc_collate']} (stock settings, on the same disk)", flush=True)
        sim = None
        try:
            items, big = self.sz["e2e_items"], self.sz["mem_items"]
            sim = self.start_sim("zohosim", [
                "--limits-off",
                "--org", "id=60001,tz=+0300,stock=warehouses,warehouses=2,product=inventory,"
                         "items=200,groups=5,contacts=50,invoices=50,salesorders=5",
                "--org", f"id=60011,tz=+0300,stock=warehouses,warehouses=2,product=inventory,"
                         f"items={items},groups=2,contacts=2,invoices=2,salesorders=2",
                "--org", f"id=60012,tz=+0530,stock=warehouses,warehouses=2,product=inventory,"
                         f"items={big},groups=2,contacts=2,invoices=2,salesorders=2",
                "--org", f"id=60013,tz=+0300,stock=warehouses,warehouses=2,product=inventory,"
                         f"items={self.sz['scale_items']},groups=2,contacts=2,invoices=2,"
                         "salesorders=2"])
            steps = [("writer", self.bench_writer), ("processor", self.bench_processor),
                     ("ingress", lambda: self.bench_ingress(sim)),
                     ("latency", lambda: self.bench_latency_step(sim)),
                     ("e2e", lambda: self.bench_e2e(sim)), ("quota", self.bench_quota)]
            for name, fn in steps:
                if self.args.only and name not in self.args.only.split(","):
                    continue
                print(f"== {name}", file=sys.stderr, flush=True)
                if name == "ingress":
                    self.writer_new_ceiling = next((f["median"] for f in self.figures
                                                    if f["key"] == "writer_new"), None)
                ts = time.monotonic()
                try:
                    fn()
                except (BenchError, RuntimeError, subprocess.TimeoutExpired) as e:
                    self.failures.append(f"{name}: {e}")
                    log(f"FAILED: {e}")
                log(f"({name}: {time.monotonic() - ts:.0f} s)")
                if name == "latency":
                    self.latency_figures()
        finally:
            for p in list(self.procs):
                self.stop(p)
            if self.db_proxy is not None:
                self.db_proxy.kill()
                self.db_proxy.wait()
            if self.args.pg_stats:
                print("\nPostgreSQL statements by total time (execution ms, planning ms, "
                      "calls, plans, execution ms/call, rows, us/row, query):")
                for r in self.pg.top_statements():
                    print("  %8d %7d %8d %7d %9s %9d %7s  %s" % r)
            self.pg.stop(remove=not self.args.keep)
        self.report(m, time.monotonic() - t0)
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return 1 if self.failures else 0

    def report(self, machine, elapsed):
        def fmt(x):
            if x is None:
                return "—"
            if abs(x) >= 100:
                return f"{x:,.0f}"
            if abs(x) >= 10:
                return f"{x:.1f}"
            return f"{x:.2f}"
        rows = [("figure", "unit", "median (min–max)", "ceiling", "ratio", "target")]
        for f in self.figures:
            if "median" in f:
                med = fmt(f["median"])
                if len(f["values"]) > 1:
                    med += f" ({fmt(f['min'])}–{fmt(f['max'])})"
            else:
                med = "n/a"
            ratio = f"{100 * f['ratio']:.0f}%" if f.get("ratio") is not None else "—"
            rows.append((f["figure"], f["unit"], med, fmt(f["ceiling"]), ratio,
                         f["target"] or ""))
        w = [max(len(r[i]) for r in rows) for i in range(6)]
        print()
        for i, r in enumerate(rows):
            print("| " + " | ".join(c.ljust(w[j]) for j, c in enumerate(r)) + " |")
            if i == 0:
                print("|" + "|".join("-" * (x + 2) for x in w) + "|")
        print()
        for f in self.figures:
            if f.get("note"):
                print(f"- {f['figure']}: {f['note']}")
        for n in self.notes:
            print(f"- note: {n}")
        for n in self.failures:
            print(f"- FAILED: {n}")
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        machine["loadavg_end"] = load
        print(f"(whole run {elapsed:.0f} s; load average at the end {load}: the machine is "
              f"shared, other processes' load lowers every figure)")
        path = self.args.json or os.path.join(
            HERE, "out", "smoke.json" if self.mode == "smoke" else "latest.json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        san, btype = self.sanitized
        with open(path, "w") as f:
            json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "mode": self.mode, "machine": machine, "build": self.build,
                       "buildtype": btype, "sanitizers": san, "postgresql": self.pg.settings,
                       "zmq": "ipc" if ZMQ_DIR else "tcp",
                       "figures": self.figures, "notes": self.notes,
                       "failures": self.failures, "elapsed_s": elapsed}, f, indent=1)
        print(f"json: {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", required=True)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true")
    g.add_argument("--smoke", action="store_true")
    ap.add_argument("--only", help="comma-separated steps: writer,processor,ingress,latency,e2e,quota")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    ap.add_argument("--latency-rate", type=int, help="webhooks/s of the latency step "
                    "(default 1,000; the figures are labelled with it)")
    ap.add_argument("--latency-processors", type=int, default=1,
                    help="processor replicas in the latency step (default 1)")
    ap.add_argument("--latency-writers", type=int, default=1,
                    help="writer replicas in the latency step (default 1; the production "
                         "overlay runs 2)")
    ap.add_argument("--mem-items", type=int, help="records of the large memory sync "
                    "(default 1,000,000; --quick 100,000)")
    ap.add_argument("--json", help="where the JSON goes (default tests/bench/out/latest.json, "
                    "smoke.json for --smoke)")
    ap.add_argument("--pg-stats", action="store_true",
                    help="load pg_stat_statements and print the costliest statements at the end")
    ap.add_argument("--pg-locale", default="C.UTF-8",
                    help="the cluster's locale (initdb --locale), hence the collation of its "
                         "text columns and indexes: C.UTF-8 (default) or, as many servers "
                         "are set up, en_US.UTF-8")
    ap.add_argument("--work-parent", default=None, help="where the temp work dir goes")
    ap.add_argument("--zmq", choices=("ipc", "tcp"), default="ipc",
                    help="how the stages' ZeroMQ sockets meet: Unix sockets in the work dir, "
                         "as deploy/local/up has them (default), or loopback TCP")
    ap.add_argument("--db-rtt-ms", type=float, default=0,
                    help="put the writer this many ms of round trip away from PostgreSQL "
                         "(tests/bench/delayproxy.py), as a database on another host")
    ap.add_argument("--journal-sync-ms", type=int, default=0,
                    help="make each fsync/fdatasync of the ingress wait this many ms first, "
                         "as a slower disk's flush would (tests/integration/sync_shim.c)")
    args = ap.parse_args()
    if args.latency_processors < 1 or args.latency_writers < 1:
        ap.error("--latency-processors and --latency-writers: at least 1")
    b = Bench(args)
    try:
        sys.exit(b.run())
    except KeyboardInterrupt:
        for p in list(b.procs):
            p.stop(5)
        raise


if __name__ == "__main__":
    main()
