"""Helpers for tests and benchmarks that run the stack's services: free ports and process readings.

Tests start Kafka, Redis and rtdash's processes through the same `Service`
definitions as `rtdash up`, each on a port the system hands out; benchmarks read
the CPU time of the processes they measure.
"""
from __future__ import annotations

import socket

import psutil


def free_port() -> int:
    """A TCP port nothing listens on right now (the system's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """`n` different TCP ports nothing listens on right now: all held at once while the system picks, so
    none is handed out twice (one `free_port` after another can return the same port again)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has used so far (all its threads, not its children).

    Raises ProcessLookupError once the process is gone.
    """
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess as exc:
        raise ProcessLookupError(pid) from exc
    return times.user + times.system


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (e.g. the order service's store process); [] once it is gone."""
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []
