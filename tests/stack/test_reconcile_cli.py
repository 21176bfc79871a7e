"""`rtdash reconcile` refuses what it cannot compare with exit 2 and the reason, before any Spark starts
(1 is kept for figures that differ: tests/test_reconcile_e2e.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stack.testing import free_port

RTDASH = Path(sys.executable).with_name("rtdash")


def run(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RTDASH), "reconcile", *args], capture_output=True, text=True, timeout=60,
                          env=os.environ | {"RTDASH_HOME": str(tmp_path), **env})


def test_a_malformed_date_is_a_usage_error(tmp_path):
    done = run(tmp_path, "--date", "2026-13-01")
    assert done.returncode == 2
    assert "'2026-13-01' is not a date such as" in done.stderr


def test_redis_not_answering_is_exit_2_with_the_reason(tmp_path):
    nothing = str(free_port())   # nothing listens there
    done = run(tmp_path, "--settle", "0", RTDASH_REDIS_PORT=nothing, RTDASH_KAFKA_PORT=nothing)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot reconcile" in done.stderr and f"127.0.0.1:{nothing}" in done.stderr
    assert "Traceback" not in done.stderr
