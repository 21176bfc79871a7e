"""`rtdash reconcile` reads the dashboard's channels, not a writer's internals: a day whose orders the
real-time orders query and its applier count (RTDASH_ORDERS_MODE=realtime) is reconciled the same way.

A module of its own, so the micro-batch day's processes (tests/test_reconcile_e2e.py) are gone when it runs.
"""
from __future__ import annotations

import pytest

from stack.testing import free_port

from paying import pay
from reconcile_day import assert_batch_is_the_truth, caught_up, day_stack, republish, run_reconcile, shoppers

pytestmark = pytest.mark.integration


def test_a_day_counted_by_the_real_time_orders_path_agrees_too(stack_settings, kafka, redis_server, tmp_path):
    realtime = {"orders_mode": "realtime", "orders_applier_port": free_port(), "orders_realtime_batch_seconds": 10,
                "spark_master": "local[4]"}
    with day_stack(stack_settings, tmp_path, "reconcile-rt", **realtime) as stack:
        report = pay(stack.settings, 30, rate=30, seed=23, duplicate_share=0.2)
        assert report.accepted_orders > 20
        republish(stack, 5)
        stack.traffic.add_phase(shoppers(stack, 60))
        shown = caught_up(stack)

        code, rows, output = run_reconcile(stack.settings, "--date", shown)
        assert code == 0, output
        assert_batch_is_the_truth(rows, stack, shown)
