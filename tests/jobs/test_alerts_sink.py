"""The alerts job's Redis side against a real redis-server: series, states, channel, outbox, restarts."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from jobs.alerts import AlertState, AlertStore, Evaluation, OrdersDrop, Reading, Window, deliver, evaluate, rules_from
from rtdash.channels import ALERTS, live_channel, seq_key, snapshot_key
from rtdash.settings import Settings
from stack.testing import free_port

PREFIX = "t"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def store(redis_client):
    return AlertStore(redis_client, PREFIX, ZoneInfo("UTC"))


@pytest.fixture
def live(redis_client):
    """What is published on the alerts channel."""
    pubsub = redis_client.pubsub()
    pubsub.subscribe(live_channel(PREFIX, ALERTS))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"

    def received() -> list[dict]:
        messages = []
        while (message := pubsub.get_message(timeout=0.2)) is not None:
            messages.append(json.loads(message["data"]))
        return messages

    yield received
    pubsub.close()


def snapshot(redis_client) -> dict:
    return json.loads(redis_client.get(snapshot_key(PREFIX, ALERTS)))


def test_window_sums_read_the_minute_hashes_of_each_date(redis_client):
    """A window across midnight in Shanghai reads two dates; a minute without a field is 0."""
    redis_client.hset(f"{PREFIX}:orders:minute:2026-11-26:count", mapping={"23:58": 4, "23:59": 5, "23:57": 100})
    redis_client.hset(f"{PREFIX}:orders:minute:2026-11-27:count", mapping={"00:00": 6, "00:02": 100})
    redis_client.hset(f"{PREFIX}:traffic:minute:2026-11-27:requests", mapping={"00:01": 50})
    redis_client.hset(f"{PREFIX}:traffic:minute:2026-11-27:errors", mapping={"00:01": 7})
    store = AlertStore(redis_client, PREFIX, ZoneInfo("Asia/Shanghai"))
    now = datetime(2026, 11, 26, 16, 2, 30, tzinfo=timezone.utc)  # 00:02:30 on the 27th in Shanghai
    windows = [Window("orders", 4), Window("orders", 1, back=4), Window("requests", 5), Window("errors", 5)]
    assert store.sums(windows, now) == dict(zip(windows, [4 + 5 + 6, 100, 50, 7]))


def test_apply_stores_states_queues_changes_and_publishes_only_changed_data(store, redis_client, live):
    at_once = OrdersDrop(60, 0.5, 20, pending=timedelta(0))
    firing, changes = evaluate([at_once], {}, {"orders_drop": Reading(True, 0.75, 40.0, "down 75%")}, T0)
    assert firing == {"orders_drop": AlertState("firing", T0, 0.75, 40.0, "down 75%")}
    assert store.apply(T0, firing, changes) == 1
    assert store.states() == firing
    envelope = snapshot(redis_client)
    assert envelope == {"channel": "alerts", "seq": 1, "data": {"alerts": [
        {"rule": "orders_drop", "state": "firing", "since": "2026-11-26T12:00:00.000Z", "value": 0.75,
         "baseline": 40.0, "message": "down 75%"}]}}
    assert live() == [envelope]
    assert [json.loads(v)["state"] for v in store.outbox()] == ["firing"]

    assert store.apply(T0 + MINUTE, firing, []) == 0            # same data: no envelope
    assert live() == [] and snapshot(redis_client)["seq"] == 1
    assert store.apply(T0 - MINUTE, {}, changes) == -1          # older than the last one: refused
    assert store.states() == firing and len(store.outbox()) == 1 and live() == []

    assert store.apply(T0 + 2 * MINUTE, {}, []) == 1            # back to normal: an empty list
    assert snapshot(redis_client) == {"channel": "alerts", "seq": 2, "data": {"alerts": []}}
    assert live() == [snapshot(redis_client)] and store.states() == {}
    assert redis_client.get(seq_key(PREFIX, ALERTS)) == b"2"


def test_evaluations_survive_a_restart(redis_client, tmp_path):
    """Two evaluators on one Redis (a query and its restart): the firing rule neither fires again nor is
    forgotten, and its state changes wait in the outbox (sending is left out here)."""
    settings = Settings(_env_file=None, home=tmp_path, redis_prefix=PREFIX, kafka_port=free_port(),
                        alert_rules="orders_drop", alert_orders_window_minutes=2, alert_orders_min_volume=10,
                        alert_orders_pending_seconds=60, alerts_eval_seconds=60)
    day = f"{PREFIX}:orders:minute:2026-11-26:count"
    redis_client.hset(day, mapping={"11:56": 10, "11:57": 10})     # the earlier window; nothing since
    clock = [T0.timestamp() + 0.3]

    def evaluation() -> Evaluation:
        return Evaluation(settings, rules_from(settings), AlertStore(redis_client, PREFIX, ZoneInfo("UTC")),
                          clock=lambda: clock[0], send=lambda *_: 0)

    first = evaluation()
    first(None, 0)
    assert first.store.states()["orders_drop"].state == "pending"
    clock[0] += 60
    first(None, 1)
    assert first.store.states()["orders_drop"] == AlertState(
        "firing", T0 + MINUTE, 1.0, 10.0,       # 12:01: 11:59-12:00 against 11:57-11:58
        "0 paid orders in the last 2 min, 10 in the 2 min before: down 100% (alert at a drop of 50%)")

    restarted = evaluation()
    clock[0] += 60                                              # 12:02: the windows moved on one minute
    redis_client.hset(day, mapping={"11:58": 10})
    restarted(None, 0)
    assert restarted.store.states()["orders_drop"].since == T0 + MINUTE
    assert [(c["state"], c["since"]) for c in map(json.loads, restarted.store.outbox())] == [
        ("pending", "2026-11-26T12:00:00.000Z"), ("firing", "2026-11-26T12:01:00.000Z")]

    redis_client.hset(day, mapping={"12:00": 10, "12:01": 10})
    clock[0] += 60
    restarted(None, 1)
    assert restarted.store.states() == {} and snapshot(redis_client)["data"] == {"alerts": []}
    assert [json.loads(v)["state"] for v in restarted.store.outbox()] == ["pending", "firing", "resolved"]


def test_state_changes_wait_in_the_outbox_while_kafka_is_down(store, tmp_path):
    """Nothing listens on the Kafka port: delivery gives up within seconds and keeps the outbox."""
    settings = Settings(_env_file=None, home=tmp_path, redis_prefix=PREFIX, kafka_port=free_port())
    at_once = OrdersDrop(60, 0.5, 20, pending=timedelta(0))
    firing, changes = evaluate([at_once], {}, {"orders_drop": Reading(True, 0.75, 40.0, "down 75%")}, T0)
    store.apply(T0, firing, changes)
    started = time.monotonic()
    assert deliver(store, settings) == 0
    assert time.monotonic() - started < 15 and len(store.outbox()) == 1
