"""The orders applier's script against a real redis-server: each order id counted once, the channels as the
micro-batch sink publishes them."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from jobs.orders_applier import Applied, OrderRow, OrdersApplier, parse_rows, recorded_at
from rtdash.channels import ORDERS_PER_MINUTE, ORDERS_TODAY, live_channel, snapshot_key

PREFIX = "applytest"
TODAY = "2026-11-26"
RECORDED = int(datetime(2026, 11, 26, 15, 59, 31, 250000, tzinfo=timezone.utc).timestamp() * 1000)


def row(order_id: str, cents: int, minute: str = "15:59", date: str = TODAY, recorded_ms: int = RECORDED) -> OrderRow:
    return OrderRow(order_id=order_id, amount_cents=cents, date=date, minute=minute, recorded_ms=recorded_ms)


@pytest.fixture
def applier(redis_client):
    return OrdersApplier(redis_client, PREFIX, ids_ttl_seconds=3600)


def snapshot(client, channel):
    return json.loads(client.get(snapshot_key(PREFIX, channel)))


def day(client, date: str = TODAY) -> tuple[int, int]:
    stored = client.hgetall(f"{PREFIX}:orders:day:{date}")
    return int(stored.get(b"count", 0)), int(stored.get(b"amount_cents", 0))


def test_the_same_order_twice_counts_once(applier, redis_client):
    assert applier.apply([row("A", 100), row("A", 100), row("B", 250)], TODAY) == Applied(2, 1, 0)
    # a replay: the Spark query after a restart, the relay publishing again, the consumer re-reading
    assert applier.apply([row("B", 250), row("A", 100), row("C", 5, "16:00")], TODAY) == Applied(1, 2, 0)
    assert day(redis_client) == (3, 355)
    assert snapshot(redis_client, ORDERS_TODAY)["data"] == {
        "date": TODAY, "count": 3, "amount_cents": 355, "last_recorded_at": "2026-11-26T15:59:31.250+00:00"}
    assert snapshot(redis_client, ORDERS_PER_MINUTE)["data"] == {
        "date": TODAY, "minutes": {"15:59": {"count": 2, "amount_cents": 350}, "16:00": {"count": 1, "amount_cents": 5}}}
    assert 0 < redis_client.ttl(f"{PREFIX}:orders:applied:{TODAY}") <= 3600


def test_live_envelopes_have_the_sinks_shapes_and_a_replay_publishes_nothing(applier, redis_client):
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(live_channel(PREFIX, ORDERS_TODAY), live_channel(PREFIX, ORDERS_PER_MINUTE))
    try:
        applier.ensure_today(TODAY)
        applier.apply([row("A", 100, recorded_ms=RECORDED - 1000), row("B", 200)], TODAY)
        applier.apply([row("A", 100)], TODAY)    # a no-op: no envelope
        received, deadline = [], time.monotonic() + 5
        while len(received) < 5 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.2)
            if message:
                received.append(json.loads(message["data"]))
    finally:
        pubsub.close()
    assert [(e["channel"], e["seq"]) for e in received] == [
        (ORDERS_TODAY, 1), (ORDERS_PER_MINUTE, 1), (ORDERS_TODAY, 2), (ORDERS_PER_MINUTE, 2)]
    assert received[0]["data"] == {"date": TODAY, "count": 0, "amount_cents": 0}
    assert received[1]["data"] == {"date": TODAY, "minutes": {}}
    # the newest recording of the call's orders; the minute channel carries only what changed
    assert received[2]["data"] == {"date": TODAY, "count": 2, "amount_cents": 300,
                                   "last_recorded_at": recorded_at(RECORDED)}
    assert received[3]["data"] == {"date": TODAY, "minutes": {"15:59": {"count": 2, "amount_cents": 300}}}
    assert len({(e["channel"], e["epoch"]) for e in received}) == 2   # one epoch per channel


def test_orders_of_another_day_are_stored_not_published(applier, redis_client):
    applier.apply([row("A", 100)], TODAY)
    applier.apply([row("Y", 7, "23:59", date="2026-11-25")], TODAY)
    assert day(redis_client, "2026-11-25") == (1, 7)
    assert snapshot(redis_client, ORDERS_TODAY)["seq"] == 1
    # a new day: its zero snapshots with the first call, even one with no order of it
    applier.ensure_today("2026-11-27")
    assert snapshot(redis_client, ORDERS_TODAY)["data"] == {"date": "2026-11-27", "count": 0, "amount_cents": 0}
    assert snapshot(redis_client, ORDERS_PER_MINUTE)["data"] == {"date": "2026-11-27", "minutes": {}}


def test_a_day_whose_applied_ids_expired_refuses_rather_than_counts_twice(applier, redis_client):
    applier.apply([row("A", 100)], TODAY)
    redis_client.delete(f"{PREFIX}:orders:applied:{TODAY}")   # its lifetime is over, the totals remain
    assert applier.apply([row("A", 100), row("B", 1)], TODAY) == Applied(0, 0, 2)
    assert day(redis_client) == (1, 100)


def test_large_amounts_stay_exact_integers(applier, redis_client):
    big = 9_999_999_999_999
    applier.apply([row("A", big), row("B", big)], TODAY)
    assert snapshot(redis_client, ORDERS_TODAY)["data"]["amount_cents"] == 2 * big
    assert b"e+" not in redis_client.get(snapshot_key(PREFIX, ORDERS_TODAY))


def test_unreadable_rows_are_reported_not_applied():
    good = json.dumps({"order_id": "A", "amount_cents": 5, "date": TODAY, "minute": "15:59",
                       "recorded_ms": RECORDED}).encode()
    rows, errors = parse_rows([good, b"{", json.dumps({"order_id": "B"}).encode()])
    assert rows == [row("A", 5)]
    assert len(errors) == 2


def test_ids_must_not_outlive_the_totals(redis_client):
    with pytest.raises(ValueError):
        OrdersApplier(redis_client, PREFIX, ids_ttl_seconds=10, ttl_seconds=5)


def test_the_loop_waits_for_a_broker_that_went_away_and_applies_what_comes_after(redis_client, stack_settings):
    """A broker restart makes kafka-python's poll raise a refused connection: the applier asks again, as the
    real-time query and the notifier wait for Kafka, instead of ending (and leaving orders.today behind)."""
    import threading

    from kafka.errors import KafkaConnectionError
    from kafka.structs import TopicPartition

    from jobs.orders_applier import ApplierLoop, ApplierMetrics

    value = json.dumps({"order_id": "K1", "amount_cents": 700, "date": TODAY, "minute": "15:59",
                        "recorded_ms": RECORDED}).encode()

    class Record:
        def __init__(self, payload):
            self.value = payload

    class BrokerRestarting:
        def __init__(self):
            self.script = [KafkaConnectionError("111 ECONNREFUSED")] * 3 + [{TopicPartition("orders.rows", 0): [Record(value)]}]
            self.drained = threading.Event()

        def poll(self, timeout_ms, max_records):
            if not self.script:
                self.drained.set()
                threading.Event().wait(timeout_ms / 1000)
                return {}
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            return step

        def assignment(self):
            return {TopicPartition("orders.rows", 0)}

        def commit_async(self):
            pass

        def commit(self):
            pass

        def close(self):
            pass

    consumer = BrokerRestarting()
    loop = ApplierLoop(stack_settings.model_copy(update={"redis_prefix": PREFIX}), lambda: consumer,
                       OrdersApplier(redis_client, PREFIX, ids_ttl_seconds=3600), ApplierMetrics())
    loop.start()
    try:
        assert consumer.drained.wait(30)
    finally:
        loop.stop()
    assert loop.status.state == "stopped" and loop.status.applied == 1
    assert day(redis_client) == (1, 700)
