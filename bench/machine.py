"""The machine a benchmark ran on, in the words BENCHMARKS.md records it with."""
from __future__ import annotations

import os
import platform
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
