"""The notebooks run top to bottom against the test stack and agree with the ground truth (the order
store's orders of the day the dashboard shows)."""
from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import nbformat
import pytest
import redis
from nbclient import NotebookClient

from paying import paid_on, pay
from rtdash.channels import ORDERS_TODAY, snapshot_key
from waiting import eventually

pytestmark = pytest.mark.integration
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def snapshot_of_the_stored_orders(settings, store, not_before: date, timeout: float = 90) -> dict:
    """The `orders.today` snapshot, once it holds the store's totals of the day it is for (not before
    `not_before`: a snapshot of an earlier day was written before the orders of this test)."""
    client = redis.Redis.from_url(settings.redis)

    def caught_up() -> dict | bool:
        raw = client.get(snapshot_key(settings.redis_prefix, ORDERS_TODAY))
        data = json.loads(raw)["data"] if raw else None
        if data is None or data["date"] < not_before.isoformat():
            return False
        if (data["count"], data["amount_cents"]) != paid_on(store, data["date"], settings.tz):
            return False
        return data

    try:
        return eventually(caught_up, timeout=timeout, interval=0.2, what="the snapshot holding the stored orders")
    finally:
        client.close()


def test_orders_notebook_recomputes_the_dashboard_from_the_topic(pipeline, stack_settings, ground_truth,
                                                                  monkeypatch):
    first_day = datetime.now(stack_settings.tz).date()
    report = pay(stack_settings, 30, rate=30, seed=3, duplicate_share=0.2)
    assert report.accepted_orders > 0
    shown = snapshot_of_the_stored_orders(stack_settings, ground_truth, first_day)

    for name, value in stack_settings.child_env().items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(NOTEBOOKS / "orders_topic_vs_dashboard.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    last_output = notebook.cells[-1].outputs[-1]["text"].strip().splitlines()[-1]
    summary = json.loads(last_output)
    assert summary["dashboard"] == shown
    assert summary["topic"] == {"date": shown["date"], "count": shown["count"], "amount_cents": shown["amount_cents"]}
    assert summary["agree"] is True
