"""A supervised stack: a service that dies is reported at once, restarted with growing pauses, and counted.

Also `rtdash up` itself: a closed terminal (SIGHUP) stops everything, and `rtdash status`
shows the restarts. The stack here is one real redis-server on a free port.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rtdash.settings import Settings
from stack import supervision
from stack.probes import port_open, redis_ready
from stack.processes import group_alive, pid_alive, same_process
from stack.runner import Service, Stack
from stack.state import read_state
from stack.services import redis_service
from stack.testing import free_port
from waiting import eventually

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(_env_file=None, home=tmp_path, redis_port=free_port())


@pytest.fixture
def quick_restarts(monkeypatch):
    """Pauses from 10 ms doubling to 40 ms; the supervisor looks every 20 ms."""
    for name, value in (("RESTART_FIRST_S", 0.01), ("RESTART_MAX_S", 0.04), ("WATCH_S", 0.02)):
        monkeypatch.setattr(supervision, name, value)


def restarts_recorded(settings: Settings, name: str) -> int:
    state = read_state(settings) or {}
    return state.get("services", {}).get(name, {}).get("restarts", 0)


def test_a_killed_service_is_reported_at_once_restarted_and_counted(settings, quick_restarts):
    lines: list[str] = []
    stack = Stack(settings, [redis_service(settings, persist=False)], supervise=True, report=lines.append)
    stack.start()
    try:
        first = read_state(settings)["services"]["redis"]
        assert first["restarts"] == 0
        os.killpg(first["pid"], signal.SIGKILL)
        eventually(lambda: restarts_recorded(settings, "redis") == 1, timeout=30, what="redis restarted once")
        assert redis_ready(settings.redis)
        now = read_state(settings)["services"]["redis"]
        assert now["pid"] != first["pid"] and same_process(now["pid"], now["started"])
        eventually(lambda: len(lines) == 2, timeout=5, what=f"the restart reported: {lines}")
        assert lines == [f"redis died (killed by SIGKILL), restarting it; its log: {settings.logs_dir / 'redis.log'}",
                         f"redis restarted (restart 1), healthy at {settings.redis}"]
    finally:
        stack.stop()
    assert not port_open("127.0.0.1", settings.redis_port)
    assert read_state(settings) is None
    assert len(lines) == 2  # stopping the stack is no death


def test_a_service_that_keeps_dying_is_restarted_after_doubling_pauses(settings, quick_restarts, caplog):
    """Healthy at once, dead 0.3 s later, every time: each restart waits longer, up to the cap."""
    flaky = Service("flaky", [sys.executable, "-c", "import time; time.sleep(0.3)"], settings.logs_dir / "flaky.log",
                    health=lambda: True, ready_timeout=5, stop_timeout=2)
    stack = Stack(settings, [flaky], supervise=True)
    with caplog.at_level(logging.WARNING, logger="rtdash.stack"):
        stack.start()
        try:
            eventually(lambda: restarts_recorded(settings, "flaky") >= 5, timeout=30, what="five restarts")
        finally:
            stack.stop()
    pauses = [float(m.group(1)) for r in caplog.records
              if (m := re.search(r"keeping flaky running failed \(attempt \d+\), retrying in ([0-9.]+)s", r.message))]
    assert pauses[:4] == [0.01, 0.02, 0.04, 0.04]


def test_restart_brings_an_unsupervised_service_back_and_counts_it(settings):
    """The fault drill's way: kill a service, then `Stack.restart` it (no supervisor races with it)."""
    stack = Stack(settings, [redis_service(settings, persist=False)])
    stack.start()
    try:
        before = read_state(settings)["services"]["redis"]
        stack.service("redis").kill()
        eventually(lambda: not redis_ready(settings.redis), timeout=10, what="redis gone")
        assert restarts_recorded(settings, "redis") == 0  # nothing brought it back by itself
        stack.restart("redis")
        after = read_state(settings)["services"]["redis"]
        assert after["restarts"] == 1 and after["pid"] != before["pid"] and redis_ready(settings.redis)
        with pytest.raises(KeyError, match="no service 'kafka' in the stack"):
            stack.restart("kafka")
    finally:
        stack.stop()
    assert not port_open("127.0.0.1", settings.redis_port)


def run_cli(tmp_path: Path, settings: Settings, *args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    """`rtdash <args>` in a process of its own, with a local stack of only Redis (on the settings' port)."""
    code = ("import stack.services as services\n"
            "services.local_stack = lambda settings: [services.redis_service(settings, persist=False)]\n"
            "from stack.cli import main\n"
            f"main({list(args)!r}, prog_name='rtdash')\n")
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "PYTHONIOENCODING": "utf-8", "COLUMNS": "200",
           "RTDASH_HOME": str(settings.home), "RTDASH_REDIS_PORT": str(settings.redis_port)}
    return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=stdout,
                            stderr=subprocess.STDOUT, text=True)


def status_row(tmp_path: Path, settings: Settings, name: str) -> list[str]:
    """The cells of `name`'s row in `rtdash status`'s table."""
    status = run_cli(tmp_path, settings, "status")
    out, _ = status.communicate(timeout=60)
    rows = [line for line in out.splitlines() if re.match(rf"\W*{name}\s", line)]
    assert rows, out
    return [cell.strip() for cell in rows[0].strip().strip("│┃").split("│")]


def test_rtdash_up_reports_a_death_restarts_it_shows_it_in_status_and_stops_on_sighup(tmp_path, settings):
    output = tmp_path / "up.out"
    with open(output, "w") as out:
        up = run_cli(tmp_path, settings, "up", stdout=out)
    redis_pid = None
    try:
        eventually(lambda: "dashboard:" in output.read_text() or up.poll() is not None, timeout=60,
                   what="rtdash up started")
        assert up.poll() is None, output.read_text()
        redis_pid = read_state(settings)["services"]["redis"]["pid"]
        assert status_row(tmp_path, settings, "redis")[1:] == [str(redis_pid), settings.redis, "0", "healthy"]

        os.killpg(redis_pid, signal.SIGKILL)
        eventually(lambda: "redis restarted (restart 1)" in output.read_text(), timeout=60, what="redis restarted")
        assert f"redis died (killed by SIGKILL), restarting it; its log: {settings.logs_dir / 'redis.log'}" \
            in output.read_text()
        redis_pid = read_state(settings)["services"]["redis"]["pid"]
        assert status_row(tmp_path, settings, "redis")[1:] == [str(redis_pid), settings.redis, "1", "healthy"]

        up.send_signal(signal.SIGHUP)  # the terminal closed
        assert up.wait(60) == 0, output.read_text()
        assert not port_open("127.0.0.1", settings.redis_port)
        assert not pid_alive(redis_pid)
        assert read_state(settings) is None
        assert output.read_text().rstrip().endswith("stopped")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        if redis_pid and group_alive(redis_pid):
            os.killpg(redis_pid, signal.SIGKILL)
