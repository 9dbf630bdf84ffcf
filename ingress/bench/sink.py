#!/usr/bin/python3
"""Bench stand-in for processor+writer: PULL events, PUB acks in batches.

usage: sink.py PULL_BIND ACK_BIND   (e.g. tcp://127.0.0.1:5557 tcp://127.0.0.1:5559)
Acks each message id to its origin, so the ingress journal is released as in
production. Prints the count on SIGTERM.
"""
import signal
import sys
import time

import msgpack
import zmq


def main():
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 100000)
    pull.bind(sys.argv[1])
    pub = ctx.socket(zmq.PUB)
    pub.bind(sys.argv[2])
    n = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    pending = {}
    last = time.monotonic()
    while not stop:
        if pull.poll(100):
            for _ in range(1000):
                try:
                    m = msgpack.unpackb(pull.recv(zmq.NOBLOCK), raw=False)
                except zmq.Again:
                    break
                pending.setdefault(m["origin"], []).append(m["id"])
                n += 1
        now = time.monotonic()
        if pending and (now - last > 0.01 or sum(map(len, pending.values())) > 500):
            for origin, ids in pending.items():
                pub.send_multipart([origin.encode(), msgpack.packb(
                    {"v": 1, "t": "ack", "id": "ack-%d" % n, "origin": origin, "ids": ids,
                     "rows_written": len(ids), "rows_rejected": 0})])
            pending = {}
            last = now
    print("sink received %d" % n, flush=True)


if __name__ == "__main__":
    main()
