"""With the real Kafka broker: events arrive on the topic; a broker outage neither slows nor breaks traffic."""
from __future__ import annotations

import statistics
import time
import uuid

import pytest
from kafka import KafkaConsumer

from producers.gateway.publisher import KafkaPublisher
from rtdash.contracts import GatewayRequest, from_json
from rtdash.kafka_admin import ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway_topic(kafka, stack_settings):
    ensure_topics(stack_settings, [stack_settings.gateway_topic])
    return stack_settings.gateway_topic


def make_publisher(settings, **kwargs) -> KafkaPublisher:
    publisher = KafkaPublisher(bootstrap_servers=settings.kafka_servers, topic=settings.gateway_topic,
                               queue_size=kwargs.pop("queue_size", settings.gateway_queue_size), **kwargs)
    publisher.start()
    return publisher


def consume(settings, request_ids: set[str], timeout: float = 60) -> dict[str, tuple[bytes, GatewayRequest]]:
    """The events with these request ids (key, event), read from the start of the topic."""
    found: dict[str, tuple[bytes, GatewayRequest]] = {}
    consumer = KafkaConsumer(settings.gateway_topic, bootstrap_servers=settings.kafka_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=1000)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not request_ids <= set(found):
            for record in consumer:
                event = from_json(GatewayRequest, record.value)
                if event.request_id in request_ids:
                    found[event.request_id] = (record.key, event)
                if request_ids <= set(found):
                    break
    finally:
        consumer.close()
    return found


def wait_for(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_events_arrive_on_the_topic(stack_settings, gateway_topic, make_gateway):
    publisher = make_publisher(stack_settings)
    try:
        gw = make_gateway(publisher=publisher)
        ids = {name: f"kafka-{name}-{uuid.uuid4().hex[:8]}" for name in ("search", "product", "login")}
        gw.request("GET", "/search?q=cast+iron", headers={"X-Request-Id": ids["search"], "User-Agent": "ua"})
        gw.request("GET", "/products/P00042", headers={"X-Request-Id": ids["product"]})
        gw.request("POST", "/order_center/order/alipay/callback", body=b"a=1",
                   headers={"X-Request-Id": ids["login"], "Content-Type": "application/x-www-form-urlencoded",
                            "Cookie": "secret"})
        found = consume(stack_settings, set(ids.values()))
        assert set(found) == set(ids.values())
        key, search = found[ids["search"]]
        assert key == search.visitor_id.encode()
        assert search.search_term == "cast iron" and search.result_product_ids == ["P00001", "P00002", "P00003"]
        assert found[ids["product"]][1].product_id == "P00042"
        callback = found[ids["login"]][1]
        assert callback.route == "order_center" and callback.method == "POST" and callback.request_bytes == 3
        assert callback.headers["Cookie"] == "[redacted]"
        wait_for(lambda: publisher.health()["published"] >= 3, what="published count")
        assert publisher.health()["kafka_connected"] is True
    finally:
        publisher.stop()


def latency_ms(gw, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp, _ = gw.request("GET", path)
        out.append((time.perf_counter() - t0) * 1000)
        assert resp.status == 200
    return out


def test_broker_outage_keeps_serving_counts_drops_and_recovers(stack_settings, gateway_topic, kafka,
                                                               make_gateway):
    publisher = make_publisher(stack_settings, queue_size=20, batch_size=5, send_timeout_s=1.0,
                               max_backoff_s=1.0)
    try:
        gw = make_gateway(publisher=publisher)
        first = f"before-{uuid.uuid4().hex[:8]}"
        gw.request("GET", "/echo", headers={"X-Request-Id": first})
        assert first in consume(stack_settings, {first})
        baseline = statistics.median(latency_ms(gw, "/echo", 30))

        kafka.stop()
        try:
            # Requests go on at full speed; once Kafka has been silent for send_timeout_s the
            # publisher holds back, the queue fills, and every further event is dropped and counted.
            during = latency_ms(gw, "/echo", 60)
            wait_for(lambda: publisher.health()["kafka_connected"] is False, what="kafka_connected false")
            before = publisher.health()
            during += latency_ms(gw, "/echo", 100)
            health = publisher.health()
            assert statistics.median(during) < baseline * 3 + 5, (baseline, statistics.median(during))
            assert max(during) < 500
            # Beyond the room left in the queue, and one batch (5) the thread may send to probe Kafka.
            room = 20 - before["queue_depth"] + 5
            assert health["dropped"] - before["dropped"] >= 100 - room, (before, health)
            assert health["queue_depth"] == 20
            health_resp, body = gw.request("GET", "/_gateway/healthz")
            assert health_resp.status == 200 and b'"dropped"' in body
        finally:
            kafka.start()
            kafka.wait_healthy()

        # The queue still holds events from the outage; once Kafka takes them there is room again.
        wait_for(lambda: publisher.health()["kafka_connected"] and publisher.health()["queue_depth"] == 0,
                 timeout=60, what=f"publisher to catch up ({publisher.health()})")
        dropped = publisher.health()["dropped"]
        after = {f"after-{i}-{uuid.uuid4().hex[:8]}" for i in range(3)}
        for rid in after:
            gw.request("GET", "/echo", headers={"X-Request-Id": rid})
        found = consume(stack_settings, after, timeout=90)
        assert set(found) == after
        assert publisher.health()["dropped"] == dropped          # nothing dropped once Kafka is back
    finally:
        publisher.stop()
