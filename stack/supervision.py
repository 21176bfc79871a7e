"""Keeping a started stack's services running: a service that dies is reported at once and restarted.

`Stack(supervise=True)` (`rtdash up` and `rtdash demo`) runs one `Supervisor` thread per
service once the whole stack is up. It looks at the service's process every WATCH_S; when
the process has ended it reports one line at once (which service, how it ended, where it
logs) and restarts it through `Stack.restart` (stop what is left, start, wait until
ready, `on_ready` again; the state file counts it). A service that keeps dying soon after
each start is restarted after pauses doubling from RESTART_FIRST_S to RESTART_MAX_S
(rtdash.retry); one that ran RESTART_STEADY_S before dying has died anew, and is restarted
at once. Stopping the stack ends every pause and every wait for readiness.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rtdash.retry import retrying

if TYPE_CHECKING:
    from .runner import Service, Stack

log = logging.getLogger("rtdash.stack")

# Pauses before restarting a service that keeps dying, doubling from the first to the largest.
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
# A service that ran this long before it died has died anew: its pauses start over.
RESTART_STEADY_S = 60.0
# How often a supervisor looks at its service's process.
WATCH_S = 0.5


class Supervisor:
    """Keeps one service of a stack running until `stopping` is set; `run` is its thread's body."""

    def __init__(self, stack: "Stack", service: "Service", stopping: threading.Event,
                 report: Callable[[str], None] | None = None):
        self.stack = stack
        self.service = service
        self.stopping = stopping
        self.report = report
        self._reported: object = None  # the process whose death was reported

    def run(self) -> None:
        from .runner import StackError

        while not self.stopping.is_set():
            try:
                for attempt in retrying(first_s=RESTART_FIRST_S, max_s=RESTART_MAX_S, stop=self.stopping,
                                        on=StackError, log=log, what=f"keeping {self.service.name} running"):
                    with attempt:
                        self._keep_running()
            except StackError:
                return  # it was down as the stack stopped

    def _keep_running(self) -> None:
        """Restart the service if it is down, then watch it. Returns when the stack stops or the service
        died after running RESTART_STEADY_S; StackError when it cannot be restarted or died sooner."""
        from .runner import StackError

        service = self.service
        if self.stopping.is_set():
            return
        ended = service.ended()
        if ended is not None:
            self._notice(ended)
            self.stack.restart(service.name)
            self._say(f"{service.name} restarted (restart {self.stack.restarts[service.name]}), healthy at "
                      f"{service.address or 'its health check'}")
        since = time.monotonic()
        while not self.stopping.wait(WATCH_S):
            ended = service.ended()
            if ended is not None:
                self._notice(ended)
                if time.monotonic() - since < RESTART_STEADY_S:
                    raise StackError(f"{service.name} died ({ended}) {time.monotonic() - since:.0f}s after it started")
                return

    def _notice(self, ended: str) -> None:
        """Report a death once per process (a restart that failed leaves none: nothing new to report)."""
        process = self.service.process
        if process is not None and process is not self._reported:
            self._reported = process
            self._say(f"{self.service.name} died ({ended}), restarting it; its log: {self.service.log_path}")

    def _say(self, line: str) -> None:
        """One line to `report` (the terminal of `rtdash up`), else to the log."""
        if self.report is not None:
            try:
                self.report(line)
                return
            except OSError:
                pass  # e.g. its terminal is gone
        log.warning("%s", line)
