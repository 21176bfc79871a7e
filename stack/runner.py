"""Process supervision of the local stack: start services in order, stop them leaving nothing behind.

Each `Service` runs in its own process group with its output (stdout and stderr, through a
pipe) in its log file, which rotates when full (stack.logfiles; `Stack` applies the settings'
RTDASH_LOG_MAX_BYTES and RTDASH_LOG_BACKUPS). `Stack`
starts them one by one, waits until each answers its health check and runs its
`on_ready` hook (Kafka creates the topics there) before starting the next, records
the process groups in a state file, and on stop sends SIGTERM to each group in
reverse order (SIGKILL after a grace period), so no process or port is left behind.
`stop_running_stack` (stack.state) does the same from another process (`rtdash down`),
signalling only processes that are still the ones recorded (pid and start time).

`Stack(supervise=True)` (`rtdash up` and `demo`) also keeps each service running: one
that dies is reported at once and restarted with growing pauses (stack.supervision).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from rtdash.settings import Settings

from .logfiles import RotatingLog, copy_output, tail
from .probes import port_open
from .processes import exit_description, process_started, same_process, stop_process_group
from .state import read_state, state_path, write_state
from .supervision import Supervisor

__all__ = ["Service", "Stack", "StackError"]

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
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 3
    process: subprocess.Popen | None = None
    _log: RotatingLog | None = field(default=None, init=False, repr=False)
    _output: threading.Thread | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        if self.prepare:
            self.prepare()
        if self._log is None:
            self._log = RotatingLog(self.log_path, self.log_max_bytes, self.log_backups)
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env}, start_new_session=True)
        self._output = copy_output(self.process.stdout, self._log, self.name)

    def drain_output(self, timeout: float = 5.0) -> None:
        """Wait (at most `timeout` s) until what the exited process wrote is all in its log file."""
        if self._output is not None:
            self._output.join(timeout)

    def wait_healthy(self, stop: threading.Event | None = None) -> None:
        """Wait until the health check passes; StackError when the process exits, the time is up,
        or `stop` is set (the stack is stopping)."""
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                raise StackError(f"{self.name}: the stack is stopping")
            if self.process is not None and self.process.poll() is not None:
                self.drain_output()
                raise StackError(f"{self.name} exited with code {self.process.returncode} while starting; "
                                 f"see {self.log_path}:\n{tail(self.log_path)}")
            if self.health():
                return
            time.sleep(0.2)
        raise StackError(f"{self.name} not healthy after {self.ready_timeout:.0f}s; see {self.log_path}:\n"
                         f"{tail(self.log_path)}")

    def wait_ready(self, stop: threading.Event | None = None) -> None:
        """Wait until healthy, then run the `on_ready` hook once."""
        self.wait_healthy(stop)
        if self.on_ready is not None:
            self.on_ready()

    def start_ready(self, stop: threading.Event | None = None) -> None:
        """Start and wait until ready; stopped again when it never gets ready."""
        self.start()
        try:
            self.wait_ready(stop)
        except BaseException:
            self.stop()
            raise

    def restart(self, stop: threading.Event | None = None) -> None:
        """Stop what is left of the service (a crashed one's other processes too), start it, wait until ready.

        Its `on_ready` hook runs again (Kafka's topics are created only where missing). Raises
        StackError with the log's tail when it does not come back (or `stop` is set), and then
        leaves nothing running.
        """
        self.stop()
        self.start_ready(stop)

    def ended(self) -> str | None:
        """None while the service's process runs, else how it ended ("not running" when it has none)."""
        process = self.process
        if process is None:
            return "not running"
        code = process.poll()
        return None if code is None else exit_description(code)

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
        self.drain_output()
        if self._output is not None and not self._output.is_alive():
            self._log.close()


class Stack:
    """Starts services in order, waits for each to be ready, stops them in reverse order.

    With `supervise`, a thread per service keeps it running once the stack is up (stack.supervision):
    when it dies, `report` gets one line at once (which service, how it ended, where it logs) and
    it is restarted with growing pauses; the state file counts its restarts. Off by default: tests
    and the fault drill kill and restart services themselves (`restart`), which a supervisor
    would race with.
    """

    def __init__(self, settings: Settings, services: list[Service], *, supervise: bool = False,
                 report: Callable[[str], None] | None = None):
        self.settings = settings
        self.services = services
        for service in services:
            service.log_max_bytes, service.log_backups = settings.log_max_bytes, settings.log_backups
        self.supervise = supervise
        self.report = report
        self.state_file = state_path(settings)
        # Times each service was started again after its first start (crashes, fault drills).
        self.restarts: dict[str, int] = {}
        self._stopping = threading.Event()
        self._supervisors: list[threading.Thread] = []
        self._locks = {service.name: threading.Lock() for service in services}  # one restart at a time
        self._state_lock = threading.Lock()

    def start(self, on_step: Callable[[str], None] = lambda _msg: None) -> None:
        self._refuse_if_running()
        busy = [s for s in self.services if s.address and _address_busy(s.address)]
        if busy:
            raise StackError("ports already in use: " + ", ".join(f"{s.name} ({s.address})" for s in busy)
                             + "; stop the other stack (`rtdash down`) or set RTDASH_*_PORT")
        self._stopping = threading.Event()
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
        if self.supervise:
            for service in self.services:
                supervisor = Supervisor(self, service, self._stopping, self.report)
                thread = threading.Thread(target=supervisor.run, daemon=True, name=f"supervise-{service.name}")
                thread.start()
                self._supervisors.append(thread)

    def service(self, name: str) -> Service:
        """The service called `name`; KeyError names the ones there are."""
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"no service {name!r} in the stack (there are {', '.join(s.name for s in self.services)})")

    def restart(self, name: str) -> None:
        """Restart one service of the running stack (`Service.restart`) and count it in the state file;
        StackError when it does not come back."""
        self._restart(self.service(name))

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._supervisors:
            thread.join()
        self._supervisors = []
        for service in reversed(self.services):
            if service.process is not None:
                log.info("stopping %s", service.name)
                service.stop()
        self.state_file.unlink(missing_ok=True)

    def _restart(self, service: Service) -> None:
        with self._locks[service.name]:
            self.restarts[service.name] = self.restarts.get(service.name, 0) + 1
            try:
                service.restart(self._stopping)
            finally:
                self._write_state()

    def _write_state(self) -> None:
        with self._state_lock:
            write_state(self.settings, {
                "runner_pid": os.getpid(),
                "runner_started": process_started(os.getpid()),
                "boot_time": psutil.boot_time(),
                "services": {s.name: self._record(s) for s in self.services
                             if s.process is not None or s.name in self.restarts},
            })

    def _record(self, service: Service) -> dict:
        pid = service.process.pid if service.process is not None else None
        return {"pid": pid, "started": process_started(pid) if pid else None, "address": service.address,
                "log": str(service.log_path), "restarts": self.restarts.get(service.name, 0)}

    def _refuse_if_running(self) -> None:
        state = read_state(self.settings)
        if state and same_process(state.get("runner_pid"), state.get("runner_started")):
            raise StackError(f"a stack is already running (runner pid {state['runner_pid']}); "
                             "`rtdash down` stops it")


def _address_busy(address: str) -> bool:
    hostport = address.split("://", 1)[-1].split("/", 1)[0].split(",")[0]
    host, port = hostport.rsplit(":", 1)
    return port_open(host, int(port))
