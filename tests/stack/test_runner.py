"""The stack runner: services start in order, get ready, and leave nothing behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

from rtdash.settings import Settings
from stack.probes import http_ok, port_open
from stack.processes import group_alive, pid_alive, stop_process_group
from stack.runner import Service, Stack, StackError
from stack.state import read_state, stop_running_stack
from stack.testing import free_port


def http_service(settings: Settings, name: str, port: int, *, ignore_term: bool = False) -> Service:
    """A real HTTP server process; optionally one that ignores SIGTERM, to test the SIGKILL path."""
    code = ("import http.server, signal, sys\n"
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
            + f"http.server.ThreadingHTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)"
            ".serve_forever()\n")
    return Service(name, [sys.executable, "-c", code], settings.logs_dir / f"{name}.log",
                   health=lambda: http_ok(f"http://127.0.0.1:{port}/"), address=f"http://127.0.0.1:{port}",
                   ready_timeout=15, stop_timeout=2)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(_env_file=None, home=tmp_path)


def test_start_waits_for_health_and_stop_frees_every_port(settings):
    ports = [free_port(), free_port()]
    stack = Stack(settings, [http_service(settings, "first", ports[0]),
                             http_service(settings, "stubborn", ports[1], ignore_term=True)])
    steps: list[str] = []
    stack.start(on_step=steps.append)
    try:
        assert steps == ["starting first", "starting stubborn"]
        assert all(port_open("127.0.0.1", p) for p in ports)
        assert set(read_state(settings)["services"]) == {"first", "stubborn"}
    finally:
        stack.stop()
    assert not any(port_open("127.0.0.1", p) for p in ports)
    assert read_state(settings) is None


def test_a_service_that_dies_fails_start_with_its_log_and_stops_the_rest(settings):
    port = free_port()
    ok = http_service(settings, "ok", port)
    broken = Service("broken", [sys.executable, "-c", "import sys; print('cannot bind'); sys.exit(3)"],
                     settings.logs_dir / "broken.log", health=lambda: False, ready_timeout=10)
    stack = Stack(settings, [ok, broken])
    with pytest.raises(StackError, match=r"broken exited with code 3(.|\n)*cannot bind"):
        stack.start()
    assert not port_open("127.0.0.1", port)


def test_busy_port_is_refused_before_anything_starts(settings):
    port = free_port()
    blocker = http_service(settings, "blocker", port)
    blocker.start()
    try:
        blocker.wait_healthy()
        with pytest.raises(StackError, match="ports already in use: again"):
            Stack(settings, [http_service(settings, "again", port)]).start()
    finally:
        blocker.stop()


def test_down_from_another_process_stops_the_runner_and_its_services(settings, tmp_path):
    port = free_port()
    runner_code = (
        "import signal, threading, sys\n"
        "from rtdash.settings import Settings\n"
        "from stack.runner import Stack\n"
        "sys.path.insert(0, %r)\n"
        "from test_runner import http_service\n"
        "s = Settings(_env_file=None, home=%r)\n"
        "stack = Stack(s, [http_service(s, 'web', %d)])\n"
        "stop = threading.Event()\n"
        "signal.signal(signal.SIGTERM, lambda *_: stop.set())\n"
        "stack.start(); print('up', flush=True); stop.wait(); stack.stop()\n"
    ) % (os.path.dirname(__file__), str(tmp_path), port)
    runner = subprocess.Popen([sys.executable, "-c", runner_code], stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout.readline().strip() == "up"
        assert port_open("127.0.0.1", port)
        assert stop_running_stack(settings) == ["web"]
        assert runner.wait(20) == 0
        assert not port_open("127.0.0.1", port)
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGKILL)
            runner.wait()


class FakeService(Service):
    """A service without a process: healthy from its second check on; records what happens to it."""

    def __init__(self, settings: Settings, name: str, events: list[str], on_ready=None):
        self.checks = 0
        super().__init__(name, [], settings.logs_dir / f"{name}.log", health=self._health,
                         on_ready=on_ready or (lambda: events.append(f"{name} ready")), ready_timeout=5)
        self.events = events

    def _health(self) -> bool:
        self.checks += 1
        if self.checks < 2:
            return False
        self.events.append(f"{self.name} healthy")
        return True

    def start(self) -> None:
        self.events.append(f"start {self.name}")
        self.process = SimpleNamespace(pid=os.getpid(), poll=lambda: None)

    def stop(self) -> None:
        self.events.append(f"stop {self.name}")
        self.process = None


def test_start_runs_each_services_on_ready_once_after_it_is_healthy(settings):
    """Whatever its name: a service called "kafka" gets no special treatment, only its own hook."""
    events: list[str] = []
    stack = Stack(settings, [FakeService(settings, "kafka", events), FakeService(settings, "web", events)])
    stack.start()
    assert events == ["start kafka", "kafka healthy", "kafka ready", "start web", "web healthy", "web ready"]
    stack.stop()
    assert events[-2:] == ["stop web", "stop kafka"]


def test_a_failing_on_ready_fails_start_and_stops_what_started(settings):
    events: list[str] = []

    def refuse() -> None:
        raise StackError("topics not created")

    stack = Stack(settings, [FakeService(settings, "first", events),
                             FakeService(settings, "second", events, on_ready=refuse),
                             FakeService(settings, "third", events)])
    with pytest.raises(StackError, match="topics not created"):
        stack.start()
    assert events == ["start first", "first healthy", "first ready", "start second", "second healthy",
                      "stop second", "stop first"]
    assert read_state(settings) is None


def test_a_zombie_is_gone_but_a_live_member_keeps_its_group_alive():
    """The group's leader exits (unreaped) while the child it started runs on in the same group."""
    leader = subprocess.Popen([sys.executable, "-c", "import subprocess; "
                               "print(subprocess.Popen(['sleep', '60']).pid, flush=True)"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        child = int(leader.stdout.readline())
        os.waitid(os.P_PID, leader.pid, os.WEXITED | os.WNOWAIT)   # exited, left a zombie
        assert not pid_alive(leader.pid)
        assert pid_alive(child) and group_alive(leader.pid)
        stop_process_group(leader.pid, 10)
        assert not group_alive(leader.pid)
        assert not pid_alive(child)
    finally:
        if group_alive(leader.pid):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


LEADER_STOPPING_ITS_CHILD = """
import signal, subprocess, sys
child = subprocess.Popen(["sleep", "60"])
def stop(*_):
    try:
        child.wait(timeout=1)       # a SIGTERM sent to the whole group ends `sleep` at once
        seen = "child already stopped"
    except subprocess.TimeoutExpired:
        seen = "child still running"
    child.terminate()
    child.wait()
    open(sys.argv[1], "w").write(seen)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
signal.pause()
"""


def test_the_leader_is_stopped_first_so_it_can_stop_its_own_children(tmp_path):
    """As the Spark jobs do: on SIGTERM their process stops its queries, then its JVM; the JVM must not
    get a SIGTERM of its own meanwhile."""
    report = tmp_path / "report"
    leader = subprocess.Popen([sys.executable, "-c", LEADER_STOPPING_ITS_CHILD, str(report)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert leader.stdout.readline().strip() == "ready"
        stop_process_group(leader.pid, 10, wait=leader.wait)
        assert report.read_text() == "child still running"
        assert not group_alive(leader.pid)
    finally:
        if group_alive(leader.pid):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
