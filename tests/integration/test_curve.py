"""CURVE on the ZeroMQ links: with one server keypair on every stage a full
sync lands exactly the simulator's truth; a processor without the keys
cannot deliver rows to a writer that has them."""

import time

import zmq

from pipeline import Pipeline

FAST = ["--rate-per-min", "100000", "--daily-limit", "0"]
ONE_ORG = ["id=60001,tz=+0300,stock=warehouses,product=inventory,items=30,groups=3,contacts=10,"
           "invoices=10,salesorders=10,warehouses=2"]


def _keys():
    pub, sec = zmq.curve_keypair()
    return {"TDS_CURVE_SECRET_KEY": sec.decode(), "TDS_CURVE_PUBLIC_KEY": pub.decode()}


def test_full_sync_encrypted_equals_truth(db, procs, sim, tmp_path):
    assert zmq.has("curve")
    s = sim(orgs=ONE_ORG, extra_args=FAST)
    p = Pipeline(procs, db, s, tmp_path, extra_env=_keys(),
                 org_overrides={"*": {"rate_per_min": 100000}}).start()
    org = p.org_ids[0]
    p.sync(org, timeout=120)
    assert db.query("SELECT count(*) FROM zoho.items WHERE org_id = %s", org)[0][0] == 30
    p.assert_equal_truth(org)


def test_processor_without_keys_cannot_reach_curve_writer(db, procs, sim, tmp_path, wait_until):
    s = sim(orgs=ONE_ORG, extra_args=FAST)
    p = Pipeline(procs, db, s, tmp_path, org_overrides={"*": {"rate_per_min": 100000}})
    base = p.env()
    (w, a), = p.w_ports
    # Only the writer has the keys; fetcher → processor stays in clear, so the
    # pages reach the processor and only its link to the writer is refused.
    procs.spawn("tds-writer", label="writer-curve",
                env=dict(base, **_keys(), TDS_WRITER_BIND=f"tcp://127.0.0.1:{w}",
                         TDS_ACK_BIND=f"tcp://127.0.0.1:{a}"))
    proc = procs.spawn("tds-processor", label="processor-plain",
                       env=dict(base, TDS_PROCESSOR_BIND=f"tcp://127.0.0.1:{p.p_ports[0]}"))
    procs.spawn("tds-fetcher", label="fetcher-plain",
                env=dict(base, TDS_FETCHER_BIND=f"tcp://127.0.0.1:{p.f_ports[0]}"))
    org = p.org_ids[0]
    p.request_sync(org)
    wait_until(lambda: proc.metric("tds_processor_messages_total") > 0, 30,
               "the processor to receive pages")
    time.sleep(3)
    assert db.query("SELECT count(*) FROM zoho.items")[0][0] == 0
    assert db.query("SELECT coalesce(sum(records_written), 0) FROM tds.sync_runs")[0][0] == 0


def test_events_tail_connects_over_curve(procs, tmp_path):
    """`tds-writer events tail` made a plain subscriber whatever the keys: a
    stage's CURVE event socket refused its handshake without a word, and it
    printed nothing for ever. With the pipeline's keys in its environment
    it connects as the stages do; without them it still cannot. The secret
    key may be a file: reference, as docker-compose sets it for the stages
    (it was taken for the key itself: exit 2)."""
    import json
    import subprocess

    from conftest import free_port
    keys = _keys()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.curve_server = True
    pub.curve_secretkey = keys["TDS_CURVE_SECRET_KEY"].encode()
    pub.curve_publickey = keys["TDS_CURVE_PUBLIC_KEY"].encode()
    port = free_port()
    pub.bind(f"tcp://127.0.0.1:{port}")

    def tail(env):
        return subprocess.Popen([procs.bins.require("tds-writer"), "events", "tail", "--connect",
                                 f"tcp://127.0.0.1:{port}", "--count", "1"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    key_file = tmp_path / "curve_secret_key"
    key_file.write_text(keys["TDS_CURVE_SECRET_KEY"] + "\n")
    by_file = dict(keys, TDS_CURVE_SECRET_KEY=f"file:{key_file}")
    plain = keyed = filed = None
    try:
        plain, keyed, filed = tail({}), tail(keys), tail(by_file)
        ev = {"event": "tds.zoho.sync.started", "stage": "fetcher"}
        deadline = time.time() + 15
        while (keyed.poll() is None or filed.poll() is None) and time.time() < deadline:
            pub.send_multipart([b"tds.zoho.sync.started", json.dumps(ev).encode()])
            time.sleep(0.2)
        for p in (keyed, filed):
            out, err = p.communicate(timeout=5)
            assert p.returncode == 0, err
            assert json.loads(out.splitlines()[0]) == ev
        assert plain.poll() is None      # no handshake, nothing printed
        plain.terminate()
        out, _ = plain.communicate(timeout=5)
        assert out == ""
    finally:
        for p in (plain, keyed, filed):
            if p is not None and p.poll() is None:
                p.kill()
        pub.close(0)
        ctx.term()
