"""The machine a benchmark ran on, in the words BENCHMARKS.md records it with."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import psutil


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor())


def machine() -> str:
    """E.g. '2 cores (Intel(R) Xeon(R) Processor), 23 GiB RAM, Linux 6.18.44'."""
    memory_gib = psutil.virtual_memory().total // (1024 ** 3)
    return f"{os.cpu_count()} cores ({cpu_model()}), {memory_gib} GiB RAM, {platform.system()} {platform.release()}"


def load_average() -> str:
    """The 1-minute load average, as text: the machine's other work before a run."""
    return f"{os.getloadavg()[0]:.2f}"


# --- where the CPU goes ----------------------------------------------------------------------

def _busy_ticks() -> int:
    """CPU ticks the whole machine spent busy (all but idle and iowait) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def _process_ticks() -> tuple[dict[int, int], dict[int, int]]:
    """Every living process: pid -> parent pid, and pid -> CPU ticks (its own and its reaped children's)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[1])
        ticks[int(entry.name)] = int(stat[11]) + int(stat[12]) + int(stat[13]) + int(stat[14])
    return parents, ticks


class CpuShares:
    """Cores each named process tree used between `start()` and `stop()`, and the rest of the machine's.

    A process counts for the nearest of its ancestors (itself included) that
    has a name, so a child with a name of its own (a service the bench started)
    is left out of its parent's share. Processes that ended within the window
    are not seen.
    """

    REST = "rest of the machine"

    def __init__(self, roots: dict[str, int]):
        self.names = {pid: name for name, pid in roots.items()}

    def _by_name(self) -> dict[str, int]:
        parents, ticks = _process_ticks()
        shares = dict.fromkeys(self.names.values(), 0)
        for pid, total in ticks.items():
            p = pid
            while p > 1 and p not in self.names:
                p = parents.get(p, 0)
            if p in self.names:
                shares[self.names[p]] += total
        return shares

    def start(self) -> None:
        self.t0, self.busy0, self.shares0 = time.perf_counter(), _busy_ticks(), self._by_name()

    def stop(self) -> dict[str, float]:
        hz = os.sysconf("SC_CLK_TCK")
        elapsed = time.perf_counter() - self.t0
        shares = self._by_name()
        used = {name: max(0, shares[name] - self.shares0[name]) for name in shares}
        used[self.REST] = max(0, _busy_ticks() - self.busy0 - sum(used.values()))
        return {name: ticks / hz / elapsed for name, ticks in used.items()}
