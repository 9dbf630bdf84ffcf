#!/usr/bin/env python3
"""A TCP proxy that holds every byte for half of RTT_MS in each direction, so
a client behind it sees its server RTT_MS further away: the bench's
--db-rtt-ms puts it between the writer and PostgreSQL, as a database on
another host would be. Order is kept; each chunk is delayed from the moment
it was read. Threads and time.sleep, not asyncio: an event loop's timers
wait in whole milliseconds (epoll), which would double a 0.5 ms delay.

    delayproxy.py LISTEN_PORT TARGET_HOST TARGET_PORT RTT_MS

Prints "ready" once listening; runs until killed.
"""
import queue
import socket
import sys
import threading
import time


def pump(src, dst, delay):
    q = queue.SimpleQueue()

    def read():
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            q.put((time.monotonic() + delay, data))
            if not data:
                return

    def write():
        while True:
            when, data = q.get()
            wait = when - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return

    for fn in (read, write):
        threading.Thread(target=fn, daemon=True).start()


def main():
    port, host, tport, rtt_ms = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    delay = rtt_ms / 2000.0
    ls = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    while True:
        c, _ = ls.accept()
        try:
            s = socket.create_connection((host, tport))
        except OSError:
            c.close()
            continue
        for x in (c, s):
            x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pump(c, s, delay)
        pump(s, c, delay)


if __name__ == "__main__":
    main()
