"""Process readings and signals for the stack runner: is it alive, is it still the same process, stop its group.

A pid alone does not name a process for long: after a crash or a reboot the system hands the
same number to an unrelated process. The runner therefore records each process's start time
beside its pid, and signals a pid only while both still match (`same_process`).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable

import psutil

log = logging.getLogger("rtdash.stack")

# Two readings of one process's start time agree to the clock tick (10 ms); a different process
# given the same pid started later than this.
START_TOLERANCE_S = 0.05


def process_started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), None when there is no such process."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def same_process(pid: int, started: float | None) -> bool:
    """True while `pid` is the very process that started at `started` (not a later one given its number)."""
    now = process_started(pid)
    return now is not None and isinstance(started, (int, float)) and abs(now - started) <= START_TOLERANCE_S


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


def group_members(pgid: int) -> list[psutil.Process]:
    """The live (not zombie) processes of process group `pgid`."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def group_alive(pgid: int) -> bool:
    """True while a member of process group `pgid` runs; zombies (exited, not reaped) do not count."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(group_members(pgid))


def stop_process_group(pid: int, timeout: float, wait: Callable[[float], object] | None = None) -> None:
    """SIGTERM the leader `pid`, then the rest of its group, SIGKILL the group after `timeout` seconds.

    The leader goes first so that a process which stops its own children can: the Spark jobs stop
    their queries and then their JVM, which a SIGTERM of its own would shut down under them (their
    micro-batches cut off, pages of errors in the log). The rest of the group gets SIGTERM once the
    leader is gone, or after half the timeout. `wait` (the leader's `Popen.wait`, when this process
    started it) reaps the leader.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass   # the leader is gone; what is left of its group is still stopped below
    started = time.monotonic()
    deadline = started + timeout
    group_signalled = False
    while time.monotonic() < deadline:
        if wait is not None:
            try:
                wait(0.2)
            except subprocess.TimeoutExpired:
                pass
        if not group_signalled and (not pid_alive(pid) or time.monotonic() >= started + timeout / 2):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            group_signalled = True
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


def exit_description(code: int) -> str:
    """A Popen return code in words: "exit code 3" or "killed by SIGKILL"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
