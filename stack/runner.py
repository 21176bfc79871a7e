"""Process supervision of the local stack: start services in order, stop them leaving nothing behind.

Each `Service` runs in its own process group with its output in its log file. `Stack`
starts them one by one, waits until each answers its health check and runs its
`on_ready` hook (Kafka creates the topics there) before starting the next, records
the process groups in a state file, and on stop sends SIGTERM to each group in
reverse order (SIGKILL after a grace period), so no process or port is left behind.
`stop_running_stack` does the same from another process (`rtdash down`).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from rtdash.settings import Settings

from .probes import port_open

log = logging.getLogger("rtdash.stack")


class StackError(RuntimeError):
    """A service could not start; the message says which, why, and where it logged."""


@dataclass
class Service:
    """One process of the stack: how to run it, how to tell it is healthy, what to do once it is."""
    name: str
    argv: list[str]
    log_path: Path
    health: Callable[[], bool]
    address: str = ""
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[], None] | None = None
    on_ready: Callable[[], None] | None = None
    ready_timeout: float = 60.0
    stop_timeout: float = 20.0
    process: subprocess.Popen | None = None

    def start(self) -> None:
        if self.prepare:
            self.prepare()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, start_new_session=True)

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise StackError(f"{self.name} exited with code {self.process.returncode} while starting; "
                                 f"see {self.log_path}:\n{tail(self.log_path)}")
            if self.health():
                return
            time.sleep(0.2)
        raise StackError(f"{self.name} not healthy after {self.ready_timeout:.0f}s; see {self.log_path}:\n"
                         f"{tail(self.log_path)}")

    def wait_ready(self) -> None:
        """Wait until healthy, then run the `on_ready` hook once."""
        self.wait_healthy()
        if self.on_ready is not None:
            self.on_ready()

    def start_ready(self) -> None:
        """Start and wait until ready; stopped again when it never gets ready."""
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def restart(self) -> None:
        """Stop what is left of the service (a crashed one's other processes too), start it, wait until ready.

        Its `on_ready` hook runs again (Kafka's topics are created only where missing). Raises
        StackError with the log's tail when it does not come back, and then leaves nothing running.
        """
        self.stop()
        self.start_ready()

    def kill(self) -> None:
        """SIGKILL every process of the service at once, as a crash would (fault drills); `restart` or
        `stop` reaps it."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> "Service":
        """Start and wait until ready; stopped on leaving (also when it never got ready)."""
        self.start_ready()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process_group(self.process.pid, self.stop_timeout, wait=self.process.wait)
        self.process = None


def stop_process_group(pid: int, timeout: float, wait: Callable[[float], object] | None = None) -> None:
    """SIGTERM the group led by `pid`, SIGKILL it after `timeout` seconds.

    `wait` (the leader's `Popen.wait`, when this process started it) reaps the leader.
    """
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wait is not None:
            try:
                wait(0.2)
            except subprocess.TimeoutExpired:
                continue
        if not group_alive(pid):
            return
        time.sleep(0.1)
    log.warning("process group %d did not stop in %.0fs, killing it", pid, timeout)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if wait is not None:
        try:
            wait(5)
        except subprocess.TimeoutExpired:
            pass


def group_alive(pgid: int) -> bool:
    """True while a member of process group `pgid` runs; zombies (exited, not reaped) do not count."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; an exited process not yet reaped (a zombie) counts as gone."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Stack:
    """Starts services in order, waits for each to be ready, stops them in reverse order."""

    def __init__(self, settings: Settings, services: list[Service]):
        self.settings = settings
        self.services = services
        self.state_file = state_path(settings)
        # Times each service was started again after its first start (crashes, fault drills).
        self.restarts: dict[str, int] = {}

    def start(self, on_step: Callable[[str], None] = lambda _msg: None) -> None:
        self._refuse_if_running()
        busy = [s for s in self.services if s.address and _address_busy(s.address)]
        if busy:
            raise StackError("ports already in use: " + ", ".join(f"{s.name} ({s.address})" for s in busy)
                             + "; stop the other stack (`rtdash down`) or set RTDASH_*_PORT")
        try:
            for service in self.services:
                on_step(f"starting {service.name}")
                service.start()
                self._write_state()
                service.wait_ready()
                log.info("%s healthy at %s (log %s)", service.name, service.address, service.log_path)
        except BaseException:
            self.stop()
            raise

    def service(self, name: str) -> Service:
        """The service called `name`; KeyError names the ones there are."""
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"no service {name!r} in the stack (there are {', '.join(s.name for s in self.services)})")

    def restart(self, name: str) -> None:
        """Restart one service of the running stack (`Service.restart`) and count it in the state file."""
        service = self.service(name)
        service.restart()
        self.restarts[name] = self.restarts.get(name, 0) + 1
        self._write_state()

    def stop(self) -> None:
        for service in reversed(self.services):
            if service.process is not None:
                log.info("stopping %s", service.name)
                service.stop()
        self.state_file.unlink(missing_ok=True)

    def _write_state(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({
            "runner_pid": os.getpid(),
            "services": {s.name: {"pid": s.process.pid, "address": s.address, "log": str(s.log_path),
                                  "restarts": self.restarts.get(s.name, 0)}
                         for s in self.services if s.process is not None},
        }, indent=2))

    def _refuse_if_running(self) -> None:
        state = read_state(self.settings)
        if state and pid_alive(state.get("runner_pid", -1)):
            raise StackError(f"a stack is already running (runner pid {state['runner_pid']}); "
                             "`rtdash down` stops it")


def _address_busy(address: str) -> bool:
    hostport = address.split("://", 1)[-1].split("/", 1)[0].split(",")[0]
    host, port = hostport.rsplit(":", 1)
    return port_open(host, int(port))


def state_path(settings: Settings) -> Path:
    """Where a running stack records its runner and each service's process group."""
    return settings.home / "run" / "stack.json"


def read_state(settings: Settings) -> dict | None:
    try:
        return json.loads(state_path(settings).read_text())
    except (OSError, ValueError):
        return None


def stop_running_stack(settings: Settings, timeout: float = 60) -> list[str]:
    """`rtdash down`: ask the runner to stop, then make sure every service is gone."""
    state = read_state(settings)
    if not state:
        return []
    runner = state.get("runner_pid")
    if runner and runner != os.getpid() and pid_alive(runner):
        os.kill(runner, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(runner) and time.monotonic() < deadline:
            time.sleep(0.2)
    stopped = []
    for name, info in reversed(list(state.get("services", {}).items())):
        if group_alive(info["pid"]):
            stop_process_group(info["pid"], 20)
        stopped.append(name)
    state_path(settings).unlink(missing_ok=True)
    return stopped
