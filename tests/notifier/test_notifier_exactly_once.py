"""Exactly one SMS per paid order, end to end: the real notifier on the real Kafka and SMS gateway, killed with
SIGKILL mid-stream and restarted, with order events that arrive twice.

Ground truth is the set of order ids this test produced to a topic of its own;
what was sent is the gateway's journal, one line per message it recorded.
"""
from __future__ import annotations

import json
import os
import random
import signal
import urllib.request
import uuid
from collections import Counter
from datetime import datetime, timezone

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from rtdash.contracts import OrderPaid, to_json
from rtdash.kafka_producer import make_producer
from rtdash.payments import format_amount
from rtdash.kafka_admin import ensure_topics
from stack.services import python_service
from stack.testing import free_port
from waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(stack_settings, kafka, tmp_path):
    """The session's Kafka; a topic (two partitions), ports and a home of this test's own."""
    settings = stack_settings.model_copy(update={
        "home": tmp_path / "home", "sms_gateway_port": free_port(), "notifier_health_port": free_port(),
        "orders_topic": f"orders.notifier-{uuid.uuid4().hex[:8]}", "orders_topic_partitions": 2})
    ensure_topics(settings, [settings.orders_topic])
    yield settings
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers)
    try:
        admin.delete_topics([settings.orders_topic])
    finally:
        admin.close()


PAID_AT = datetime(2026, 11, 26, 17, 54, 54, 123000, tzinfo=timezone.utc)


def paid(order_id: str, cents: int) -> OrderPaid:
    return OrderPaid(order_id=order_id, trade_no=f"T-{order_id}", amount_cents=cents, paid_at=PAID_AT,
                     trade_status="TRADE_SUCCESS", notify_id=f"N-{order_id}", recorded_at=PAID_AT)


def with_repeats(events: list[OrderPaid], repeats: list[OrderPaid], rng: random.Random) -> list[OrderPaid]:
    """`events` with each of `repeats` inserted again at a random later place."""
    out = list(events)
    for event in repeats:
        out.insert(rng.randint(out.index(event) + 1 if event in out else 0, len(out)), event)
    return out


def produce(settings, events: list[OrderPaid]) -> None:
    producer = make_producer(settings.kafka_servers, client_id="rtdash-test-notifier", acks="all")
    for event in events:
        producer.produce(settings.orders_topic, to_json(event), event.key())
    assert producer.flush(30) == 0, "Kafka did not acknowledge every order"


def end_offsets(settings) -> dict[str, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=None)
    try:
        partitions = [TopicPartition(settings.orders_topic, p)
                      for p in consumer.partitions_for_topic(settings.orders_topic)]
        return {f"{tp.topic}:{tp.partition}": offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_one_message_per_order_through_a_sigkill_and_repeated_events(settings):
    rng = random.Random(9)
    first = [paid(f"O{i:04d}", 100 + i) for i in range(600)]
    second = [paid(f"O{i:04d}", 100 + i) for i in range(600, 800)]
    amounts = {e.order_id: e.amount_cents for e in first + second}
    # Repeated events: some inside the first stretch, some of its orders again after the restart.
    produce(settings, with_repeats(first, rng.sample(first, 60), rng))
    group = f"notifier-test-{uuid.uuid4().hex[:8]}"
    gateway_url = f"http://127.0.0.1:{settings.sms_gateway_port}"
    health_url = f"http://127.0.0.1:{settings.notifier_health_port}/healthz"

    def notifier():
        return python_service(settings, "notifier", "producers.notifier", settings.notifier_health_port,
                              args=["--group", group, "--max-records", "50"])

    def recorded() -> int:
        return get_json(gateway_url + "/healthz")["messages"]

    with python_service(settings, "sms_gateway", "producers.sms_gateway", settings.sms_gateway_port):
        killed = notifier()
        killed.start()
        try:
            killed.wait_healthy()
            eventually(lambda: recorded() >= 150, timeout=90, what="the first 150 messages")
            os.killpg(killed.process.pid, signal.SIGKILL)
            killed.process.wait(10)
        finally:
            killed.stop()
        at_kill = recorded()
        assert at_kill < len(first), "the notifier was done before the kill: no mid-stream kill tested"

        produce(settings, with_repeats(second, rng.sample(first, 60), rng))
        restarted = notifier()
        with restarted:
            eventually(lambda: recorded() >= len(amounts), timeout=90, what="every order's message")
            ends = end_offsets(settings)
            health = eventually(lambda: (h := get_json(health_url))["committed"] == ends and h, timeout=90,
                                what="the notifier to commit the whole topic")
            process = restarted.process
        assert process.returncode == 0, "the notifier did not stop cleanly on SIGTERM"

        listed = get_json(gateway_url + "/messages")["messages"]
    journal = [json.loads(line) for line in (settings.home / "sms_gateway" / "messages.jsonl").open()]

    # Exactly one message per order, for that order: the journal has every message the gateway recorded.
    assert Counter(m["idempotency_key"] for m in journal) == Counter(list(amounts))
    assert sorted(m["idempotency_key"] for m in listed) == sorted(amounts)
    for message in journal:
        order = message["idempotency_key"]
        assert f"{format_amount(amounts[order])} yuan for order {order} " in message["text"]
    # The repeats after the restart reached the gateway and were recognised there.
    assert health["duplicates"] >= 60 and health["state"] == "consuming" and health["last_error"] is None
    assert health["sent"] == len(amounts) - at_kill
