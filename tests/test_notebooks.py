"""The notebooks run top to bottom against the test stack and agree with the ground truth."""
from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
import redis
from nbclient import NotebookClient

from paying import pay
from rtdash.channels import ORDERS_TODAY, snapshot_key

pytestmark = pytest.mark.integration
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def wait_for_snapshot(settings, count: int, timeout: float = 90) -> dict:
    client = redis.Redis.from_url(settings.redis)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            raw = client.get(snapshot_key(settings.redis_prefix, ORDERS_TODAY))
            if raw and json.loads(raw)["data"]["count"] == count:
                return json.loads(raw)["data"]
            time.sleep(0.2)
    finally:
        client.close()
    raise AssertionError(f"snapshot never showed {count} orders")


def test_orders_notebook_recomputes_the_dashboard_from_the_topic(pipeline, stack_settings, ground_truth,
                                                                  monkeypatch):
    report = pay(stack_settings, 30, rate=30, seed=3, duplicate_share=0.2)
    assert report.accepted_orders > 0
    count, amount = ground_truth.paid_totals()
    wait_for_snapshot(stack_settings, count)

    for name, value in stack_settings.child_env().items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(NOTEBOOKS / "orders_topic_vs_dashboard.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    last_output = notebook.cells[-1].outputs[-1]["text"].strip().splitlines()[-1]
    summary = json.loads(last_output)
    assert summary["topic"]["count"] == count
    assert summary["topic"]["amount_cents"] == amount
    assert summary["agree"] is True
