"""Shoppers through the gateway end to end: the simulator's funnel ends in paid orders on `orders`,
and every request it made is a `gateway` event.

Real processes on the session's Kafka: payment provider, demo shop, gateway and
order service (the session fixture `shop_behind_gateway`); the shop hands each
checkout to the provider, whose signed notify goes back through the gateway to
the order service, whose relay publishes the paid order.
"""
from __future__ import annotations

import asyncio
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from producers.traffic import TrafficConfig, TrafficSimulator
from rtdash.contracts import GatewayRequest, OrderPaid, from_json

pytestmark = pytest.mark.integration


def end_offsets(settings, topic: str) -> dict:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return consumer.end_offsets(partitions)
    finally:
        consumer.close()


def read_topic(settings, topic: str, want, since: dict, timeout: float = 60) -> list:
    """Records of `topic` after the offsets `since`, until want(records) holds (or the timeout)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False,
                             consumer_timeout_ms=1000, group_id=None)
    consumer.assign(list(since))
    for partition, offset in since.items():
        consumer.seek(partition, offset)
    records, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not want(records):
            records += list(consumer)
    finally:
        consumer.close()
    return records


def test_funnel_orders_are_paid_through_the_gateway_and_every_request_is_an_event(
        shop_behind_gateway, stack_settings):
    config = TrafficConfig(users=15, rate=4, duration=4, seed=3, think_time=0.05, view_rate=1.0, cart_rate=0.8,
                           pay_rate=1.0, bot_share=0.1, logged_in_share=0.5, accounts=50)
    simulator = TrafficSimulator(f"http://127.0.0.1:{stack_settings.gateway_port}", config)
    # Other tests share these topics: look only at what this run adds.
    since = {topic: end_offsets(stack_settings, topic)
             for topic in (stack_settings.orders_topic, stack_settings.gateway_topic)}
    report = asyncio.run(simulator.run())
    assert report.errors == 0 and report.statuses.get("5xx", 0) == 0
    assert len(report.orders) >= 3 and report.logins > 0 and report.bot_sessions > 0
    bought = {o["order_id"]: o["total_cents"] for o in report.orders}

    # Paid orders: the order service stored them and the relay put them on `orders`.
    records = read_topic(stack_settings, stack_settings.orders_topic,
                         lambda recs: bought.keys() <= {r.key.decode() for r in recs},
                         since[stack_settings.orders_topic])
    paid = {e.order_id: e.amount_cents for e in (from_json(OrderPaid, r.value) for r in records)
            if e.order_id in bought}
    assert paid == bought

    # Every request the simulator sent through the gateway is one event on `gateway`.
    sent = sum(report.requests.values())
    events = [from_json(GatewayRequest, r.value) for r in
              read_topic(stack_settings, stack_settings.gateway_topic, lambda recs: len(recs) >= sent,
                         since[stack_settings.gateway_topic])]
    shopper_events = [e for e in events if e.route == "shop"]
    assert len(shopper_events) == sent
    searches = [e for e in shopper_events if e.path == "/search"]
    views = [e for e in shopper_events if e.path.startswith("/products/")]
    assert searches and views            # the all(...) checks below are about some events
    assert sorted(e.search_term for e in searches) == sorted(report.searches.elements())
    assert all(e.result_product_ids for e in searches)
    assert all(e.product_id == e.path.rsplit("/", 1)[1] for e in views)
    assert {e.user_id for e in shopper_events if e.user_id} and len({e.visitor_id for e in shopper_events}) > 3
    assert all(e.client_ip is None and e.headers.get("Cookie", "[redacted]") == "[redacted]" for e in events)
    # The provider's notifies came back through the gateway too.
    notifies = [e for e in events if e.route == "order_center"]
    assert len(notifies) >= len(bought)
