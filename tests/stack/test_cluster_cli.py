"""`rtdash cluster up` in one terminal, `rtdash status` and `rtdash cluster down` in another, as a user runs them.

The cluster runs on free ports under a temporary RTDASH_HOME; `down` must leave no process of it
and no port open, and must not touch a local stack's state file.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stack.cluster import cluster_settings, master_json
from stack.probes import port_open
from stack.processes import group_alive
from stack.state import read_state, state_path
from stack.testing import free_port
from rtdash.settings import Settings
from waiting import eventually

pytestmark = pytest.mark.integration

RTDASH = [sys.executable, "-m", "stack.cli"] if not (Path(sys.executable).parent / "rtdash").exists() \
    else [str(Path(sys.executable).parent / "rtdash")]


def test_cluster_up_status_and_down(tmp_path):
    ui = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RTDASH_")},
           "RTDASH_HOME": str(tmp_path), "RTDASH_SPARK_CLUSTER_PORT": str(free_port()),
           "RTDASH_SPARK_CLUSTER_UI_PORT": str(free_port()), "RTDASH_SPARK_WORKER_UI_PORT": str(ui),
           "RTDASH_SPARK_WORKERS": "2", "RTDASH_JOBS_HEALTH_PORT": str(free_port())}
    settings = Settings(_env_file=None, home=tmp_path, spark_cluster_port=int(env["RTDASH_SPARK_CLUSTER_PORT"]),
                        spark_cluster_ui_port=int(env["RTDASH_SPARK_CLUSTER_UI_PORT"]), spark_worker_ui_port=ui)
    up = subprocess.Popen(RTDASH + ["cluster", "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          start_new_session=True, text=True)
    try:
        def two_workers() -> bool:
            if up.poll() is not None:
                raise RuntimeError(f"rtdash cluster up exited with {up.returncode}:\n{up.stdout.read()}")
            state = read_state(cluster_settings(settings)) or {}
            return len(state.get("services", {})) == 3 and \
                len([w for w in (master_json(settings) or {}).get("workers", []) if w["state"] == "ALIVE"]) == 2

        eventually(two_workers, timeout=240, interval=0.5, what="a master and two workers")
        groups = [info["pid"] for info in read_state(cluster_settings(settings))["services"].values()]
        assert not state_path(settings).exists(), "the cluster's state is its own, not the local stack's"

        status = subprocess.run(RTDASH + ["status"], env=env, capture_output=True, text=True, timeout=120)
        assert (f"spark cluster: master spark://127.0.0.1:{settings.spark_cluster_port} (ALIVE), web UI "
                f"http://127.0.0.1:{settings.spark_cluster_ui_port}, 2 workers alive") in status.stdout, status.stdout
        assert "no application running" in status.stdout

        down = subprocess.run(RTDASH + ["cluster", "down"], env=env, capture_output=True, text=True, timeout=120)
        assert down.stdout.strip() == "stopped spark_worker_2, spark_worker_1, spark_master", down.stdout
        assert up.wait(60) == 0
        assert not any(group_alive(pgid) for pgid in groups)
        ports = (settings.spark_cluster_port, settings.spark_cluster_ui_port, ui, ui + 1)
        assert not any(port_open("127.0.0.1", port) for port in ports)
        assert read_state(cluster_settings(settings)) is None
    finally:
        if up.poll() is None:
            os.killpg(up.pid, 15)
            up.wait(60)
