"""free_port() and port_block() for the integration tests and the bench.

A port the kernel hands out for bind(0) comes from the ephemeral range, where
outgoing connections take their local port too, so one can be taken before the
stage it was meant for binds it ("Address already in use"). Ports are picked
below that range instead, checked free, and never handed out twice in a run.

When the tests run in several pytest-xdist workers at once (tests/run), each
worker picks from a slice of that range of its own, so two workers never hand
out the same port, and port_block() gives blocks inside the slice.
"""
import os
import random
import socket

_GIVEN = set()
_LOW = 10000


def _below_ephemeral():
    """(low, high) under the kernel's ephemeral range, or None when too few."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return (_LOW, first - 1) if first - _LOW >= 4000 else None


def _worker_span():
    """This worker's (low, high): the range below the ephemeral one, cut in as
    many slices as there are xdist workers; the whole range outside xdist."""
    span = _below_ephemeral()
    if span is None:
        return None
    try:
        worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    except ValueError:
        return span
    if count <= 1 or not 0 <= worker < count:
        return span
    width = (span[1] - span[0] + 1) // count
    return (span[0] + worker * width, span[0] + (worker + 1) * width - 1)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    span = _worker_span()
    for _ in range(200 if span else 0):
        port = random.randint(*span)
        if port in _GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_block(width):
    """The first port of `width` consecutive ports in this worker's slice, at a
    multiple of 100 (not checked free: the caller's program says when one is
    taken, and the caller asks again)."""
    span = _worker_span() or (20000, 31099)
    low = (span[0] + 99) // 100 * 100
    high = span[1] - width + 1
    if high < low:
        raise RuntimeError(f"no block of {width} ports in {span}")
    return random.randrange(low, high + 1, 100)
