"""The gateway's Kafka publisher: events arrive on the topic with their content; with Kafka down or gone
away, requests are served as fast, events beyond the producer's queue are dropped and counted, and
publishing resumes when Kafka is back."""
from __future__ import annotations

import json
import logging
import statistics
import time
import uuid
from datetime import datetime, timezone

import pytest
from kafka import KafkaConsumer
from tornado.httputil import HTTPHeaders

from producers.gateway.events import EventBuilder, Exchange, TrustedProxies, VisitorIds
from producers.gateway.publisher import KafkaPublisher
from rtdash.contracts import GatewayRequest, from_json, to_json
from rtdash.kafka_admin import ensure_topics
from stack.testing import free_port
from waiting import eventually


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


@pytest.mark.integration
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
        health = eventually(lambda: publisher.health()["published"] >= 3 and publisher.health(),
                            what="3 events counted as published")
        assert health["published"] == 3 and health["queue_depth"] == 0 and health["dropped"] == 0
        assert health["kafka_connected"] is True
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


@pytest.mark.integration
def test_broker_outage_keeps_serving_counts_drops_and_recovers(stack_settings, gateway_topic, kafka,
                                                               make_gateway, caplog):
    caplog.set_level(logging.INFO, logger="rtdash.gateway.publisher")
    publisher = make_publisher(stack_settings, queue_size=50)
    try:
        gw = make_gateway(publisher=publisher)
        first = f"before-{uuid.uuid4().hex[:8]}"
        gw.request("GET", "/echo", headers={"X-Request-Id": first})
        assert first in consume(stack_settings, {first})
        baseline = statistics.median(latency_ms(gw, "/echo", 30))
        published = 31
        eventually(lambda: publisher.health()["published"] == published,
                   what="the first and the baseline's 30 events acknowledged")
        assert publisher.health()["dropped"] == publisher.health()["queue_depth"] == 0   # the queue holds 50

        kafka.stop()
        try:
            # Requests go on at full speed; the producer's queue (50) takes the first events of the
            # outage, and every further event is dropped and counted.
            eventually(lambda: publisher.health()["kafka_connected"] is False, what="kafka_connected false")
            during = latency_ms(gw, "/echo", 200)
            # Each event is published just after its response went out: wait for the last one.
            health = eventually(lambda: (h := publisher.health())["queue_depth"] + h["dropped"] == 200 and h,
                                what="the 200 events queued or dropped")
            assert statistics.median(during) < baseline * 3 + 5, (baseline, statistics.median(during))
            assert max(during) < 500
            assert health["published"] == published and health["failed"] == 0
            assert health["queue_depth"] == 50 and health["dropped"] == 200 - 50, health
            health_resp, body = gw.request("GET", "/_gateway/healthz")
            assert health_resp.status == 200 and json.loads(body)["publisher"]["dropped"] == 150
        finally:
            kafka.start()
            kafka.wait_healthy()

        # The events queued during the outage go out once Kafka is back; then nothing is dropped.
        eventually(lambda: publisher.health()["kafka_connected"] and publisher.health()["queue_depth"] == 0,
                   timeout=60, what="the queued events published")
        assert publisher.health()["published"] == published + 50
        after = {f"after-{i}-{uuid.uuid4().hex[:8]}" for i in range(3)}
        for rid in after:
            gw.request("GET", "/echo", headers={"X-Request-Id": rid})
        found = consume(stack_settings, after, timeout=90)
        assert set(found) == after
        assert publisher.health()["dropped"] == 150
        said = [r.getMessage() for r in caplog.records if r.name == "rtdash.gateway.publisher"]
        assert sum(m.startswith("kafka unavailable") for m in said) == 1, said     # once per outage
        assert sum(m.startswith("event queue full") for m in said) == 1, said
        assert sum(m.startswith("kafka back") for m in said) == 1, said
    finally:
        publisher.stop()


def large_events(count: int) -> list[GatewayRequest]:
    """Events of requests with many large headers, as the gateway builds them (each value cut to 1024)."""
    builder = EventBuilder(visitors=VisitorIds(b"secret", timezone.utc), trusted=TrustedProxies([]))
    headers = HTTPHeaders({f"X-Large-{n}": chr(ord("a") + n) * 20_000 for n in range(16)})
    headers["User-Agent"] = "Mozilla/5.0 " + "u" * 20_000
    return [builder.build(Exchange(
        request_id=f"large-{i}-{uuid.uuid4().hex[:8]}", started_at=datetime.now(timezone.utc), method="GET",
        path="/search", query="q=" + "pan" * 5000, route="shop", status=200, request_bytes=0,
        response_bytes=10, total_ms=1.0, peer_ip="203.0.113.7", request_headers=headers))
        for i in range(count)]


@pytest.mark.integration
def test_large_events_in_an_outage_stay_within_the_byte_bound_and_are_delivered_when_kafka_is_back(
        stack_settings, gateway_topic, kafka):
    """A Kafka outage with large events takes no more memory than RTDASH_GATEWAY_QUEUE_BYTES: the
    producer's queue (librdkafka's own figures) stays within it, the excess is dropped and counted,
    and what was queued is delivered once the broker is back."""
    bound = 256 * 1024
    reports: list[dict] = []
    publisher = make_publisher(stack_settings, queue_size=10_000, queue_bytes=bound,
                               producer_options={"statistics.interval.ms": 100,
                                                 "stats_cb": lambda doc: reports.append(json.loads(doc))})
    try:
        events = large_events(200)
        size = len(to_json(events[0]))
        assert 16 * 1024 < size < 40 * 1024                      # cut to 1024 per value, not 20,000
        assert publisher.publish(events[0])
        eventually(lambda: publisher.health()["published"] == 1, what="the first event published")
        kafka.stop()
        try:
            eventually(lambda: publisher.health()["kafka_connected"] is False, what="kafka_connected false")
            taken = [publisher.publish(e) for e in events[1:]]
            accepted = {e.request_id for e, ok in zip(events[1:], taken) if ok}
            queued = sum(len(to_json(e)) for e, ok in zip(events[1:], taken) if ok)
            health = publisher.health()
            # As many as fit in the bound (librdkafka counts the values), then every further one is
            # dropped and counted.
            assert False in taken, "every event was queued: the queue has no byte bound"
            first_dropped = taken.index(False)
            assert taken == [True] * first_dropped + [False] * (199 - first_dropped)
            assert queued <= bound < queued + len(to_json(events[1 + first_dropped])), (queued, size)
            assert health["queue_depth"] == len(accepted) and health["dropped"] == 199 - len(accepted)
            assert health["queue_bytes"] == queued
            # librdkafka's own figures, from a report made after the last publish.
            seen = len(reports)
            report = eventually(lambda: len(reports) > seen + 1 and reports[-1], what="a producer report")
            assert (report["msg_cnt"], report["msg_size"], report["msg_size_max"]) == (len(accepted), queued, bound)
        finally:
            kafka.start()
            kafka.wait_healthy()
        found = consume(stack_settings, accepted, timeout=90)
        assert set(found) == accepted
        eventually(lambda: (h := publisher.health())["queue_depth"] == 0 and h["queue_bytes"] == 0,
                   timeout=60, what="the queue empty")
        assert publisher.health()["published"] == 1 + len(accepted)
        assert publisher.health()["dropped"] == 199 - len(accepted)
    finally:
        publisher.stop()


def test_kafka_down_publish_never_waits_and_stop_is_bounded(caplog):
    """No broker at all: the first events queue, the rest are dropped, and stopping does not wait for Kafka."""
    caplog.set_level(logging.INFO, logger="rtdash.gateway.publisher")
    publisher = KafkaPublisher(bootstrap_servers=f"127.0.0.1:{free_port()}", topic="gateway", queue_size=5)
    publisher.start()
    event = GatewayRequest(request_id="r1", started_at=datetime.now(timezone.utc), method="GET", path="/",
                           route="shop", query={}, status=200, request_bytes=0, response_bytes=10, total_ms=1.0,
                           gateway_ms=1.0, visitor_id="v1", source="proxy")
    try:
        calls = []
        for _ in range(50):
            t0 = time.perf_counter()
            calls.append(publisher.publish(event))
            assert time.perf_counter() - t0 < 0.05
        assert calls == [True] * 5 + [False] * 45
        eventually(lambda: publisher.health()["last_error"], what="the outage noticed")
        assert publisher.health() == {"queue_depth": 5, "queue_size": 5, "queue_bytes": 5 * len(to_json(event)),
                                      "queue_size_bytes": 64 << 20, "published": 0, "dropped": 45,
                                      "failed": 0, "kafka_connected": False,
                                      "last_error": publisher.health()["last_error"]}
    finally:
        t0 = time.monotonic()
        publisher.stop(timeout=10)
        assert time.monotonic() - t0 < 2
    said = [r.getMessage() for r in caplog.records if r.name == "rtdash.gateway.publisher"]
    assert sorted(m.split(",")[0].split(":")[0] for m in said) == [
        "5 gateway events left unpublished at stop", "event queue full (5 events or 67108864 bytes)",
        "kafka unavailable"], said


def test_topic_preparation_is_tried_again_until_it_succeeds_or_the_publisher_stops(caplog):
    """The gateway creates its topic before serving; Kafka down at start is one outage, logged once."""
    caplog.set_level(logging.INFO, logger="rtdash.gateway.publisher")
    attempts = []

    def prepare() -> None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("no broker yet")

    publisher = KafkaPublisher(bootstrap_servers=f"127.0.0.1:{free_port()}", topic="gateway", queue_size=5,
                               prepare=prepare)
    publisher.start()
    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "rtdash.gateway.publisher"]

    try:
        eventually(lambda: len(said()) >= 2, timeout=10, what="prepared")
    finally:
        publisher.stop(timeout=2)
    assert len(attempts) == 3 and attempts[2] - attempts[0] >= 0.25    # pauses of 0.1 and 0.2 s between
    # (With no broker at all, librdkafka then reports the outage, which is logged as the next one.)
    assert said()[:2] == ["kafka unavailable, gateway events wait in the producer's queue of 5 events and "
                          "67108864 bytes (dropped when it is full): ConnectionError: no broker yet",
                          "kafka back: publishing gateway events to gateway"]

    never = KafkaPublisher(bootstrap_servers=f"127.0.0.1:{free_port()}", topic="gateway", queue_size=5,
                           prepare=lambda: attempts.append(0) or prepare())
    attempts.clear()
    never.start()
    eventually(lambda: len(attempts) >= 1, what="a first attempt")
    t0 = time.monotonic()
    never.stop(timeout=5)
    assert time.monotonic() - t0 < 1 and not never._thread.is_alive()
