"""`rtdash reconcile` on a real stack: its batch figures are the ground truth, it fails on a wrong figure,
and a SIGKILL of the jobs mid-stream leaves the day in agreement (tests/reconcile_day.py sets the day up)."""
from __future__ import annotations

import json
import threading

import pytest
import redis

from rtdash.channels import ORDERS_TODAY, snapshot_key

from paying import pay
from reconcile_day import Day, assert_batch_is_the_truth, caught_up, day_stack, republish, run_reconcile, shoppers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def day(stack_settings, kafka, redis_server, tmp_path_factory) -> Day:
    """A day whose orders the micro-batch orders job counts."""
    with day_stack(stack_settings, tmp_path_factory.mktemp("reconcile-home"), "reconcile",
                   orders_mode="microbatch") as stack:
        yield stack


def test_a_quiet_day_agrees_and_the_batch_figures_are_the_ground_truth(day):
    report = pay(day.settings, 40, rate=40, seed=21, duplicate_share=0.2)
    assert report.accepted_orders > 25 and report.duplicates_sent > 0
    republish(day, 5)
    day.traffic.add_phase(shoppers(day, 120))
    shown = caught_up(day)

    code, rows, output = run_reconcile(day.settings, "--date", shown)
    assert code == 0, output
    assert "every figure agrees" in output
    assert all(row.agrees in ("yes", "within 2%") for row in rows.values()), output
    assert_batch_is_the_truth(rows, day, shown)
    assert rows["orders.today count"].live == rows["orders.today count"].batch


def test_a_tampered_figure_fails_the_reconciliation_and_is_named(day):
    shown = caught_up(day)
    client = redis.Redis.from_url(day.settings.redis)
    key = snapshot_key(day.settings.redis_prefix, ORDERS_TODAY)
    original = client.get(key)
    envelope = json.loads(original)
    envelope["data"]["amount_cents"] += 100
    client.set(key, json.dumps(envelope))
    try:
        code, rows, output = run_reconcile(day.settings, "--settle", "0")
    finally:
        client.set(key, original)
        client.close()
    assert code == 1, output
    assert rows["orders.today amount_cents"].difference == "+100" and rows["orders.today amount_cents"].agrees == "no"
    assert rows["orders.today count"].agrees == "yes"
    assert "differs: orders.today amount_cents, orders.today amount_cents (order database)" in output
    assert shown in output


def test_after_the_jobs_are_killed_mid_stream_and_restarted_the_day_still_agrees(day):
    """The fault drill's disturbance: SIGKILL to the Spark application while orders and events arrive."""
    payments = threading.Thread(target=pay, args=(day.settings, 60), kwargs={"rate": 15, "seed": 22,
                                                                              "duplicate_share": 0.2})
    payments.start()
    before = shoppers(day, 60)
    day.jobs.kill()
    during = shoppers(day, 60)
    payments.join()
    day.traffic.add_phase(before + during)
    day.jobs.restart()
    shown = caught_up(day)

    code, rows, output = run_reconcile(day.settings)
    assert code == 0, output
    assert_batch_is_the_truth(rows, day, shown)
