"""The outbox relay on a real Kafka broker: everything published once marked, nothing skipped.

The relay marks what Kafka acknowledged in one write every `mark_interval_s`
(or when the outbox goes quiet) and reads past rows it sent but has not
marked yet; these tests check that this bookkeeping neither loses a row (a row
that commits late with a lower id, as with several writers on PostgreSQL) nor
leaves acknowledged rows unmarked. One test has no broker at all: the relay
keeps the rows and tries again until it is stopped.
"""
from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone

import pytest
from kafka import KafkaConsumer

from producers.order_service.relay import OutboxRelay, Wakeup
from producers.order_service.store import OrderStore, epoch_ms, outbox
from rtdash.database import make_engine
from rtdash.kafka_admin import ensure_topics
from stack.testing import free_port
from waiting import eventually


def test_wakeup_never_blocks_and_folds_posts_into_one():
    wake = Wakeup()
    assert wake.wait(0.01) is False
    started = time.perf_counter()
    for _ in range(1000):
        wake.set()                       # nobody waiting: must not block
    assert time.perf_counter() - started < 1.0
    assert wake.wait(0.01) is True       # all the posts are one wake-up...
    assert wake.wait(0.01) is False      # ...and they are used up
    threading.Timer(0.05, wake.set).start()
    assert wake.wait(5) is True          # a post from another thread wakes a waiter


def add_rows(store: OrderStore, topic: str, keys: list[str], ids: list[int] | None = None) -> None:
    now = epoch_ms(datetime.now(timezone.utc))
    rows = [dict(topic=topic, key=k.encode(), payload=f'{{"order_id":"{k}"}}'.encode(), created_at_ms=now)
            for k in keys]
    if ids:
        rows = [dict(r, id=i) for r, i in zip(rows, ids)]
    with store.engine.begin() as conn:
        conn.execute(outbox.insert(), rows)
    store.on_outbox_write()


def keys_in(settings, topic: str, expected: int) -> list[str]:
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_servers, auto_offset_reset="earliest",
                             consumer_timeout_ms=2000, group_id=None)
    seen: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                seen += [m.key.decode() for m in batch]
    finally:
        consumer.close()
    return seen


def test_relay_keeps_the_rows_while_kafka_is_down_and_stops_at_once(tmp_path):
    store = OrderStore(make_engine(f"sqlite:///{tmp_path}/orders.db"), topic="orders")
    relay = OutboxRelay(store, bootstrap_servers=f"127.0.0.1:{free_port()}")   # nothing listens there
    relay.send_timeout_s = 0.5                 # a batch fails after half a second, not ten
    store.on_outbox_write = relay.wake
    add_rows(store, "orders", ["A", "B"])
    relay.start()
    try:
        eventually(lambda: relay.status.last_error, timeout=30, what="the relay reports the failed publishing")
        assert not relay.status.kafka_connected and relay.status.published == 0
        assert store.pending_count() == 2      # the rows wait in the outbox
    finally:
        started = time.monotonic()
        relay.stop()
    assert time.monotonic() - started < relay.max_backoff_s   # a pause between attempts ends with the stop
    assert store.pending_count() == 2


@pytest.fixture()
def start_relay(tmp_path, stack_settings, kafka):
    """Start a relay (with the given mark interval) over a fresh outbox and a topic of its own."""
    started: list[OutboxRelay] = []

    def start(mark_interval_s: float) -> tuple[OrderStore, OutboxRelay, str]:
        topic = f"relay-test-{uuid.uuid4().hex[:8]}"
        ensure_topics(stack_settings, [topic])
        store = OrderStore(make_engine(f"sqlite:///{tmp_path}/orders-{topic}.db"), topic=topic)
        relay = OutboxRelay(store, bootstrap_servers=stack_settings.kafka_servers, mark_interval_s=mark_interval_s)
        store.on_outbox_write = relay.wake
        relay.start()
        started.append(relay)
        return store, relay, topic

    yield start
    for relay in started:
        relay.stop()


def test_relay_connects_before_the_first_order_waits_for_it(start_relay):
    store, relay, _ = start_relay(mark_interval_s=0.3)
    eventually(lambda: relay.status.kafka_connected, timeout=10, what="the relay connected to Kafka")
    assert relay.status.published == 0 and store.pending_count() == 0


def test_relay_publishes_each_row_once_and_marks_them_when_quiet(start_relay, stack_settings):
    store, relay, topic = start_relay(mark_interval_s=0.3)
    keys = [f"K{i:04d}" for i in range(1200)]          # more than one read (batch 500)
    for start in range(0, len(keys), 100):
        add_rows(store, topic, keys[start:start + 100])
    eventually(lambda: store.pending_count() == 0, what="every row marked published")
    assert relay.status.published == len(keys)
    assert sorted(keys_in(stack_settings, topic, len(keys))) == keys


def test_relay_picks_up_a_row_that_committed_late_with_a_lower_id(start_relay, stack_settings):
    store, relay, topic = start_relay(mark_interval_s=2.0)
    add_rows(store, topic, ["late-high-1", "late-high-2"], ids=[100, 101])
    eventually(lambda: relay.status.published == 2, what="the two high rows published")
    assert store.pending_count() == 2                 # sent, not marked: the next read starts after 101
    add_rows(store, topic, ["late-low"], ids=[50])    # commits now, below what was sent
    eventually(lambda: store.pending_count() == 0, what="the late row published and every row marked")
    assert relay.status.published == 3
    assert sorted(keys_in(stack_settings, topic, 3)) == ["late-high-1", "late-high-2", "late-low"]


def test_stop_marks_what_kafka_acknowledged(start_relay, stack_settings):
    store, relay, topic = start_relay(mark_interval_s=3600)
    add_rows(store, topic, ["S1", "S2", "S3"])
    eventually(lambda: relay.status.published == 3, what="the three rows published")
    assert store.pending_count() == 3                   # sent, not marked yet (interval not reached)
    relay.stop()
    assert store.pending_count() == 0
    assert sorted(keys_in(stack_settings, topic, 3)) == ["S1", "S2", "S3"]
