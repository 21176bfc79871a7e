"""jobs/alerts_sink.py against a real redis-server: series, states, channel, and the outbox while Kafka is down."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from jobs.alerts_rules import AlertState, OrdersDrop, Reading, Window, evaluate
from jobs.alerts_sink import AlertStore, deliver
from rtdash.channels import ALERTS, epoch_key, history_key, live_channel, seq_key, snapshot_key
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
    epoch = redis_client.get(epoch_key(PREFIX, ALERTS)).decode()
    assert envelope == {"channel": "alerts", "epoch": epoch, "seq": 1, "snapshot": True, "data": {"alerts": [
        {"rule": "orders_drop", "state": "firing", "since": "2026-11-26T12:00:00.000Z", "value": 0.75,
         "baseline": 40.0, "message": "down 75%"}]}}
    live_envelope = {k: v for k, v in envelope.items() if k != "snapshot"}
    assert live() == [live_envelope]
    assert [json.loads(v)["state"] for v in store.outbox()] == ["firing"]

    assert store.apply(T0 + MINUTE, firing, []) == 0            # same data: no envelope
    assert live() == [] and snapshot(redis_client)["seq"] == 1
    assert store.apply(T0 - MINUTE, {}, changes) == -1          # older than the last one: refused
    assert store.states() == firing and len(store.outbox()) == 1 and live() == []

    assert store.apply(T0 + 2 * MINUTE, {}, []) == 1            # back to normal: an empty list
    assert snapshot(redis_client) == {"channel": "alerts", "epoch": epoch, "seq": 2, "snapshot": True,
                                      "data": {"alerts": []}}
    second = {"channel": "alerts", "epoch": epoch, "seq": 2, "data": {"alerts": []}}
    assert live() == [second] and store.states() == {}
    assert redis_client.get(seq_key(PREFIX, ALERTS)) == b"2"
    assert [json.loads(f[b"envelope"]) for _, f in redis_client.xrange(history_key(PREFIX, ALERTS))] == [
        live_envelope, second]


def test_state_changes_wait_in_the_outbox_while_kafka_is_down(store, tmp_path):
    """Nothing listens on the Kafka port: delivery gives up within seconds and keeps the outbox."""
    settings = Settings(_env_file=None, home=tmp_path, redis_prefix=PREFIX, kafka_port=free_port())
    at_once = OrdersDrop(60, 0.5, 20, pending=timedelta(0))
    firing, changes = evaluate([at_once], {}, {"orders_drop": Reading(True, 0.75, 40.0, "down 75%")}, T0)
    store.apply(T0, firing, changes)
    started = time.monotonic()
    assert deliver(store, settings) == 0
    assert time.monotonic() - started < 15 and len(store.outbox()) == 1
