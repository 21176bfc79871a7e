"""The running stack's state file, and `rtdash down`, which acts on it from another process.

`<home>/run/stack.json` names the runner and each service's process group: its pid, the
process's start time (a pid alone may name an unrelated process after a crash or a reboot),
its address, log and restarts. It is replaced whole on each change, so a reader (`rtdash
status`, `rtdash down`) never sees half of it.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

import psutil

from rtdash.settings import Settings

from .processes import group_members, pid_alive, process_started, same_process, stop_process_group

log = logging.getLogger("rtdash.stack")


def state_path(settings: Settings) -> Path:
    """Where a running stack records its runner and each service's process group."""
    return settings.home / "run" / "stack.json"


def read_state(settings: Settings) -> dict | None:
    try:
        state = json.loads(state_path(settings).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(settings: Settings, state: dict) -> None:
    """Replace the state file whole (written beside it, then renamed over it)."""
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(state, indent=2))
    os.replace(partial, path)


def this_boot(state: dict) -> bool:
    """The state was written since the machine last started (its processes may still run)."""
    recorded = state.get("boot_time")
    return isinstance(recorded, (int, float)) and abs(recorded - psutil.boot_time()) < 1.0


def stop_running_stack(settings: Settings, timeout: float = 60) -> list[str]:
    """`rtdash down`: ask the runner to stop, then make sure every service it started is gone.

    Only processes that are still the recorded ones (same pid, same start time) are signalled: a
    pid the system has since given to another process is left alone, with a log line. Returns the
    names of the stack's services, none of which runs any more.
    """
    state = read_state(settings)
    if not state:
        return []
    runner, started = state.get("runner_pid"), state.get("runner_started")
    if runner and runner != os.getpid():
        if same_process(runner, started):
            os.kill(runner, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(runner) and same_process(runner, started) and time.monotonic() < deadline:
                time.sleep(0.2)
        elif process_started(runner) is not None:
            log.warning("runner pid %d is another process now (started %s, not %s): left alone",
                        runner, _when(process_started(runner)), _when(started))
    stopped = []
    for name, info in reversed(list(state.get("services", {}).items())):
        _stop_service(name, info, this_boot(state))
        stopped.append(name)
    state_path(settings).unlink(missing_ok=True)
    return stopped


def _stop_service(name: str, info: dict, same_boot: bool) -> None:
    """Stop the service's process group if it is still the one the runner started, else leave it alone."""
    pid, started = info.get("pid"), info.get("started")
    if same_process(pid, started):
        stop_process_group(pid, 20)
    elif process_started(pid) is not None:
        log.warning("%s: pid %d is another process now (started %s, not %s): left alone",
                    name, pid, _when(process_started(pid)), _when(started))
    elif isinstance(pid, int) and pid > 0 and same_boot and isinstance(started, (int, float)):
        # The group's leader is gone; what is left of its group (e.g. a crashed service's child) was
        # started after it in this boot, and the system gives no new process a pid still naming a group.
        members = group_members(pid)
        if members and all(_started_after(member, started) for member in members):
            log.info("%s: stopping the %d processes left of its group %d", name, len(members), pid)
            stop_process_group(pid, 20)


def _started_after(proc: psutil.Process, started: float) -> bool:
    try:
        return proc.create_time() >= started
    except psutil.Error:
        return False


def _when(started: float | None) -> str:
    if not isinstance(started, (int, float)):
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
