"""free_port() for the integration tests and the bench.

A port the kernel hands out for bind(0) comes from the ephemeral range, where
outgoing connections take their local port too, so one can be taken before the
stage it was meant for binds it ("Address already in use"). Ports are picked
below that range instead, checked free, and never handed out twice in a run.
"""
import random
import socket

_GIVEN = set()


def _below_ephemeral():
    """(low, high) under the kernel's ephemeral range, or None when too few."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return (10000, first - 1) if first - 10000 >= 4000 else None


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    span = _below_ephemeral()
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
