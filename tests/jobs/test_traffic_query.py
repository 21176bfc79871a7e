"""jobs/traffic.py on the real broker and Redis against figures recomputed offline from the same log.

A fixed, seeded gateway event log (term variants, bots by User-Agent and by
flag, POSTs, 404s, 5xx, payment notifies, late and malformed events) goes into
Kafka in phases; after each phase the query catches up and every channel's
snapshot is compared with `traffic_model.Expected`: exact for counts and
rankings, within 2% for unique counts and 5% for latency percentiles. The last
phase runs after the query's checkpoint was deleted (Redis kept): the numbers
must still be right. The topic has the gateway's default partitions (3), each
event keyed by its visitor id as the gateway keys it (its partition chosen by
the key here, so the recomputation knows it), so every batch reads several
partitions; the last phase puts partitions far apart in event time.
"""
from __future__ import annotations

import json
import random
import shutil
import zlib
from datetime import timedelta

import pytest
import redis

from jobs.checkpoint import checkpoint_location
from jobs.traffic import start
from kafka_records import dead_letters, records as kafka_records
from rtdash.channels import TRAFFIC_CHANNELS, snapshot_key
from rtdash.contracts import GatewayRequest, to_json
from rtdash.kafka_producer import make_producer
from traffic_model import Expected, utc

pytestmark = pytest.mark.integration

TERMS = ["phone", "Phone ", "ＰＨＯＮＥ", "phone  case", "Phone Case", "straße", "STRASSE", "tv", "laptop",
         "lamp", "desk lamp", "Desk\tLamp", "kettle", "  ", "", "<script>alert(1)</script>"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0", "Mozilla/5.0 (iPhone) Safari/605.1",
          "Mozilla/5.0 (compatible; Googlebot/2.1)", "Mozilla/5.0 (compatible; bingbot/2.0)", "curl/8.5 spider"]
START = utc(2026, 3, 1, 9, 0)


def event(rng: random.Random, at, number: int) -> GatewayRequest:
    """One request of a shopper or crawler, as the gateway would write it."""
    kind = rng.choices(["search", "product", "cart", "missing", "notify", "home"], [40, 30, 8, 5, 5, 12])[0]
    term = None
    products = None
    method, status, route = "GET", 200, "shop"
    if kind == "search":
        term = rng.choice(TERMS)
        path = "/search"
        products = rng.sample([f"P{i:03d}" for i in range(30)], rng.randint(0, 4))
    elif kind == "product":
        path = f"/products/P{rng.randrange(30):03d}"
        status = rng.choices([200, 304, 503], [90, 5, 5])[0]
    elif kind == "cart":
        method, path = "POST", "/cart"
    elif kind == "missing":
        path, status = "/nowhere", 404
    elif kind == "notify":
        method, path, route = "POST", "/order_center/order/alipay/callback", "order_center"
    else:
        path = "/"
    agent = rng.choices(AGENTS, [45, 45, 4, 3, 3])[0]
    return GatewayRequest(
        request_id=f"r{number}", started_at=at, method=method, path=path, route=route,
        query={"q": [term]} if term is not None else {}, status=status, request_bytes=0,
        response_bytes=rng.randint(100, 5000), total_ms=round(rng.lognormvariate(3, 0.8), 3), gateway_ms=0.4,
        visitor_id=f"v{rng.randrange(250):03d}", source="proxy",
        user_id=f"u{rng.randrange(40):02d}" if rng.random() < 0.3 else None, user_agent=agent,
        search_term=term, result_product_ids=products, bot=True if rng.random() < 0.02 else None)


MALFORMED = [b"not json at all", b'["a", "list"]', b'{"request_id": "x"}',
             json.dumps({"request_id": "r", "started_at": "2026-03-01T10:00:00.000Z", "method": "GET", "path": "/",
                         "route": "shop", "query": {}, "status": "two hundred", "request_bytes": 0,
                         "response_bytes": 0, "total_ms": 1.0, "gateway_ms": 0.1, "visitor_id": "v",
                         "source": "proxy"}).encode()]


def visitor_key(value: bytes) -> bytes | None:
    """The gateway's key of an event (its visitor id); None for a record without one (any partition)."""
    try:
        return json.loads(value)["visitor_id"].encode()
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def out_of_range(rng: random.Random) -> list[bytes]:
    bad_status = event(rng, START, 0).__dict__ | {"status": 999}
    negative = event(rng, START, 0).__dict__ | {"total_ms": -5.0}
    future = event(rng, START, 0).__dict__ | {"started_at": utc(2999, 1, 1)}
    return [to_json(GatewayRequest(**fields)) for fields in (bad_status, negative, future)]


@pytest.fixture
def traffic_settings(stack_settings, redis_server, kafka, tmp_path):
    from rtdash.kafka_admin import ensure_topics

    settings = stack_settings.model_copy(update={
        "gateway_topic": "gateway.e2e", "gateway_dlq_topic": "gateway.e2e.dlq", "redis_prefix": "traffice2e",
        "home": tmp_path, "spark_max_gateway_events_per_batch": 700, "traffic_lateness_seconds": 300})
    ensure_topics(settings, [settings.gateway_topic, settings.gateway_dlq_topic])
    return settings


def snapshots(settings) -> dict:
    client = redis.Redis.from_url(settings.redis)
    try:
        return {channel: json.loads(client.get(snapshot_key(settings.redis_prefix, channel)))["data"]
                for channel in TRAFFIC_CHANNELS}
    finally:
        client.close()


def assert_figures(shown: dict, expected: Expected) -> None:
    today = expected.traffic_today()
    for name in ("visitors", "logged_in_users"):
        assert shown["traffic.today"][name] == pytest.approx(today.pop(name), rel=0.02), name
        shown["traffic.today"].pop(name)
    assert shown["traffic.today"] == today
    per_minute = expected.traffic_per_minute()
    assert set(shown["traffic.per_minute"]["minutes"]) == set(per_minute["minutes"])
    for minute, figures in per_minute["minutes"].items():
        got = dict(shown["traffic.per_minute"]["minutes"][minute])
        assert got.pop("visitors") == pytest.approx(figures.pop("visitors"), rel=0.02, abs=1), minute
        assert got == figures, minute
    assert shown["search.terms.today"] == expected.search_terms_today()
    assert shown["search.terms.recent"] == expected.search_terms_recent()
    assert shown["search.products.today"] == expected.search_products_today()
    routes = expected.routes_per_minute()
    assert set(shown["routes.per_minute"]["minutes"]) == set(routes["minutes"])
    for minute, per_route in routes["minutes"].items():
        got = shown["routes.per_minute"]["minutes"][minute]
        assert set(got) == set(per_route), minute
        for route, figures in per_route.items():
            assert (got[route]["requests"], got[route]["errors"]) == (figures["requests"], figures["errors"])
            for q in ("p50_ms", "p95_ms"):
                assert got[route][q] == pytest.approx(figures[q], rel=0.05), (minute, route, q)


def test_every_traffic_figure_matches_the_offline_recomputation(spark, traffic_settings):
    settings = traffic_settings
    rng = random.Random(20260301)
    expected = Expected(settings.tz, settings.traffic_lateness_seconds)
    producer = make_producer(settings.kafka_servers, client_id="rtdash-tests")

    def run_phase(values: list[bytes], partitions: list[int] | None = None) -> None:
        keys = [visitor_key(value) for value in values]
        partitions = partitions or [zlib.crc32(key or b"") % settings.gateway_topic_partitions for key in keys]
        for value, key, partition in zip(values, keys, partitions):
            producer.produce(settings.gateway_topic, key=key, value=value, partition=partition)
        assert producer.flush(30) == 0, "events not acknowledged by Kafka"
        expected.add_phase(values, partitions)
        query = start(spark, settings)
        try:
            query.processAllAvailable()
        finally:
            query.stop()
        assert_figures(snapshots(settings), expected)

    # 1. two hours of traffic in time order (so no event is late), after a few of the day before
    times = sorted(START + timedelta(seconds=rng.uniform(-600, 7200)) for _ in range(3000))
    run_phase([to_json(event(rng, at, i)) for i, at in enumerate(times)] + MALFORMED[:2])
    assert expected.today == "2026-03-01" and expected.late == 0

    # 2. stragglers at or before the clock: within the lateness they count, beyond it they are late
    clock = expected.clock
    stragglers = [clock - timedelta(seconds=rng.uniform(0, 290)) for _ in range(150)]
    stragglers += [clock - timedelta(seconds=rng.uniform(310, 5000)) for _ in range(40)]
    stragglers += [clock - timedelta(days=1)]
    bad = out_of_range(rng)
    run_phase([to_json(event(rng, at, 10_000 + i)) for i, at in enumerate(stragglers)] + MALFORMED[2:] + bad)
    assert expected.late > 30 and expected.invalid == 7
    client = redis.Redis.from_url(settings.redis)
    try:
        assert int(client.get(f"{settings.redis_prefix}:traffic:late")) == expected.late
    finally:
        client.close()

    # 3. the checkpoint deleted, Redis kept: the new query resumes where the applied batches ended
    shutil.rmtree(checkpoint_location(settings, "traffic"))
    later = sorted(clock + timedelta(seconds=rng.uniform(0, 900)) for _ in range(400))
    run_phase([to_json(event(rng, at, 20_000 + i)) for i, at in enumerate(later)])

    # 4. partitions far apart in event time: two hours on partition 0 beside ten minutes on partition 1,
    #    read in batches that take the same share of each: partition 1's events are behind the clock of
    #    all partitions by far more than the lateness, and none is late in its own partition
    late_before = expected.late
    clock = expected.clock
    ahead = sorted(clock + timedelta(seconds=rng.uniform(0, 7200)) for _ in range(700))
    behind = sorted(clock + timedelta(seconds=rng.uniform(0, 600)) for _ in range(700))
    values = [to_json(event(rng, at, 30_000 + i)) for i, at in enumerate(ahead + behind)]
    run_phase(values, [0] * len(ahead) + [1] * len(behind))
    assert expected.late == late_before

    letters = dead_letters(settings.kafka_servers, settings.gateway_dlq_topic)
    assert {value: headers["rtdash.error"] for value, headers in letters.items()} == {
        MALFORMED[0]: b"not a JSON GatewayRequest object", MALFORMED[1]: b"not a JSON GatewayRequest object",
        MALFORMED[2]: b"missing or mistyped field started_at", MALFORMED[3]: b"missing or mistyped field status",
        bad[0]: b"status out of range (100-599)", bad[1]: b"total_ms out of range (0-86400000)",
        bad[2]: b"started_at is in the future"}
    assert all(headers["rtdash.source"].startswith(b"gateway.e2e:") for headers in letters.values())
    assert partitions_written(settings) == settings.gateway_topic_partitions > 1


def partitions_written(settings) -> int:
    """How many of the gateway topic's partitions hold records."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers)
    try:
        topic = settings.gateway_topic
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)])
        return sum(1 for end in ends.values() if end > 0)
    finally:
        consumer.close()



def test_the_warm_up_runs_every_kind_of_event_once_per_application_and_writes_nothing(spark, traffic_settings,
                                                                                      monkeypatch):
    """The made-up events cover what a batch counts (so the warm-up compiles every path); the warm-up
    writes nothing to Redis, and a second start in the same application does not repeat it."""
    import jobs.traffic
    from jobs.traffic import WARMED_UP, made_up_requests, transform, warm_up
    from jobs.traffic_figures import Facts

    now = utc(2026, 3, 1, 12, 0)
    records = kafka_records(spark, [to_json(r) for r in made_up_requests(400, now)], topic="gateway", written_at=now)
    kinds: dict[str, int] = {}
    minute: dict[str, int] = {}
    for row in transform(records, settings=traffic_settings, clock_ms=None).collect():
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + row["n"]
        if row["kind"] == "minute":
            for name in ("page_views", "searches", "bots", "errors"):
                minute[name] = minute.get(name, 0) + row[name]
    assert "invalid" not in kinds and "late" not in kinds
    assert {"minute", "route", "visitor", "user", "term", "product", "clock"} <= set(kinds)
    assert all(minute[name] > 0 for name in ("page_views", "searches", "bots", "errors")), minute

    client = redis.Redis.from_url(traffic_settings.redis)
    keys_before = sorted(client.keys("*"))
    batches = []
    real_figures = jobs.traffic.figures
    monkeypatch.setattr(jobs.traffic, "figures", lambda facts: batches.append(1) or real_figures(facts))
    spark.conf.unset(WARMED_UP)
    settings = traffic_settings.model_copy(update={"traffic_warm_up_batches": 3})
    warm_up(spark, settings, Facts())
    assert len(batches) == 3 and spark.conf.get(WARMED_UP) == "true"
    warm_up(spark, settings, Facts())
    assert len(batches) == 3
    try:
        assert sorted(client.keys("*")) == keys_before
    finally:
        client.close()
