"""The helpers tests and benchmarks use: free ports and a process's CPU time and children."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from stack.probes import port_open
from stack.testing import children, cpu_seconds, free_port, free_ports

SPIN = """\
import subprocess, sys, time
child = subprocess.Popen(['sleep', '60'])
print(child.pid, flush=True)
started = time.process_time()
while time.process_time() - started < 0.3:
    pass
print('spun', flush=True)
sys.stdin.read()
"""


def test_free_port_is_free_and_can_be_bound():
    port = free_port()
    assert not port_open("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_cpu_seconds_counts_the_work_done_and_children_names_the_direct_children():
    proc = subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        child = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "spun"
        assert 0.3 <= cpu_seconds(proc.pid) < 5
        assert children(proc.pid) == [child]
        assert cpu_seconds(child) < 0.3
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with pytest.raises(ProcessLookupError):
        cpu_seconds(proc.pid)
    assert children(proc.pid) == []


def test_free_ports_are_all_different_and_each_can_be_listened_on():
    """The drill's and the suite's stacks take a dozen ports at once: one `free_port` after another once
    handed out the same port twice, and two services of one stack collided."""
    ports = free_ports(64)
    assert len(set(ports)) == 64
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
