"""`rtdash down` signals only the processes the runner started: a pid in a stale state file may name another."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from rtdash.settings import Settings
from stack.processes import group_alive, pid_alive, process_started
from stack.state import read_state, state_path, stop_running_stack, write_state
from waiting import eventually


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(_env_file=None, home=tmp_path)


@pytest.fixture
def unrelated():
    """Live processes the stack never started, each leading its own group as a service's process does."""
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
        started.append(proc)
        return proc
    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def stale_state(settings: Settings, *, runner: tuple[int, float | None], services: dict[str, tuple[int, float | None]]):
    """A state file as a stack that crashed (or ran before a reboot) left it."""
    write_state(settings, {
        "runner_pid": runner[0], "runner_started": runner[1], "boot_time": psutil.boot_time(),
        "services": {name: {"pid": pid, "started": started, "address": "", "log": "", "restarts": 0}
                     for name, (pid, started) in services.items()},
    })


def test_down_leaves_alone_processes_whose_pids_a_stale_state_file_names(settings, unrelated):
    """The pids are live, but their processes started at other times than the file says: not the stack's."""
    as_runner, as_service = unrelated(), unrelated()
    stale_state(settings, runner=(as_runner.pid, process_started(as_runner.pid) - 3600),
                services={"redis": (as_service.pid, process_started(as_service.pid) - 3600)})
    assert stop_running_stack(settings, timeout=5) == ["redis"]
    assert pid_alive(as_runner.pid) and pid_alive(as_service.pid)
    assert read_state(settings) is None


def test_down_leaves_alone_a_pid_from_a_state_file_without_start_times(settings, unrelated):
    """A state file from before start times were recorded proves nothing about its pids."""
    other = unrelated()
    state_path(settings).parent.mkdir(parents=True)
    state_path(settings).write_text(f'{{"runner_pid": {other.pid}, "services": {{"kafka": {{"pid": {other.pid}}}}}}}')
    stop_running_stack(settings, timeout=5)
    assert pid_alive(other.pid)


def test_down_stops_the_processes_whose_pid_and_start_time_both_match(settings, unrelated):
    """The same file with the true start times: then they are the stack's, and are stopped."""
    as_runner, as_service = unrelated(), unrelated()
    stale_state(settings, runner=(as_runner.pid, process_started(as_runner.pid)),
                services={"redis": (as_service.pid, process_started(as_service.pid))})
    assert stop_running_stack(settings, timeout=5) == ["redis"]
    assert as_runner.wait(10) == -signal.SIGTERM
    assert as_service.wait(10) == -signal.SIGTERM


def test_down_stops_what_is_left_of_a_service_whose_leader_died(settings):
    """A crashed service's leader is gone but the child it started runs on in its group: down stops the child."""
    leader = subprocess.Popen([sys.executable, "-c", "import subprocess; "
                               "print(subprocess.Popen(['sleep', '60']).pid, flush=True)"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    started = process_started(leader.pid)
    try:
        child = int(leader.stdout.readline())
        assert leader.wait(10) == 0
        stale_state(settings, runner=(os.getpid(), process_started(os.getpid())),
                    services={"order_service": (leader.pid, started)})
        stop_running_stack(settings, timeout=5)
        eventually(lambda: not pid_alive(child), timeout=10, what="the orphaned child stopped")
    finally:
        if group_alive(leader.pid):
            os.killpg(leader.pid, signal.SIGKILL)
