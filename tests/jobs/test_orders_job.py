"""The orders job: its pure stages on small static DataFrames, its Redis sink on a real Redis,
and the whole query on the real Kafka broker."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
import redis
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from jobs.orders import dead_letters, per_minute, transform
from jobs.redis_sink import MinuteTotal, OrdersSink
from rtdash.channels import ORDERS_PER_MINUTE, ORDERS_TODAY, live_channel, snapshot_key
from rtdash.contracts import OrderPaid, to_json
from rtdash.settings import Settings

RECORD_SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
T0 = datetime(2026, 11, 26, 15, 59, 30, tzinfo=timezone.utc)


def order(order_id: str, cents: int, paid_at: datetime = T0) -> bytes:
    return to_json(OrderPaid(order_id=order_id, trade_no="T" + order_id, amount_cents=cents, paid_at=paid_at,
                             trade_status="TRADE_SUCCESS", notify_id="N" + order_id, recorded_at=paid_at))


def records(spark, values: list[bytes]):
    rows = [Row(key=b"k", value=v, topic="orders", partition=0, offset=i, timestamp=T0.replace(tzinfo=None))
            for i, v in enumerate(values)]
    return spark.createDataFrame(rows, RECORD_SCHEMA)


@pytest.fixture(scope="module")
def settings(stack_settings):
    return stack_settings


def test_transform_drops_duplicates_and_flags_bad_records(spark, settings):
    later = datetime(2026, 11, 26, 16, 1, 5, tzinfo=timezone.utc)
    values = [order("A", 1000), order("A", 1000), order("B", 250, later), b"not json at all",
              order("C", -5), order("D", 700).replace(b'"trade_no":"TD",', b"")]
    out = transform(records(spark, values), settings=settings)
    assertDataFrameEqual(
        out.select("valid", "reason", "order_id", "amount_cents", "date", "minute", "offset"),
        [Row(valid=True, reason=None, order_id="A", amount_cents=1000, date="2026-11-26", minute="15:59", offset=0),
         Row(valid=True, reason=None, order_id="B", amount_cents=250, date="2026-11-26", minute="16:01", offset=2),
         Row(valid=False, reason="not a JSON OrderPaid object", order_id=None, amount_cents=None, date=None,
             minute=None, offset=3),
         Row(valid=False, reason="amount_cents must be positive", order_id="C", amount_cents=-5,
             date="2026-11-26", minute="15:59", offset=4),
         Row(valid=False, reason="missing or mistyped field trade_no", order_id="D", amount_cents=700,
             date="2026-11-26", minute="15:59", offset=5)])


def test_day_and_minute_are_those_of_the_configured_zone(spark, settings):
    shanghai = settings.model_copy(update={"timezone": "Asia/Shanghai"})
    spark.conf.set("spark.sql.session.timeZone", "Asia/Shanghai")
    try:
        out = transform(records(spark, [order("A", 1000, datetime(2026, 11, 26, 17, 0, tzinfo=timezone.utc))]),
                        settings=shanghai)
        assert [(r.date, r.minute) for r in out.collect()] == [("2026-11-27", "01:00")]
    finally:
        spark.conf.set("spark.sql.session.timeZone", settings.timezone)


def test_per_minute_totals_and_dead_letters(spark, settings):
    later = datetime(2026, 11, 26, 16, 1, 5, tzinfo=timezone.utc)
    out = transform(records(spark, [order("A", 1000), order("B", 250), order("C", 99, later), b"{}"]),
                    settings=settings)
    assertDataFrameEqual(per_minute(out), [
        Row(valid=True, date="2026-11-26", minute="15:59", count=2, amount_cents=1250),
        Row(valid=True, date="2026-11-26", minute="16:01", count=1, amount_cents=99),
        Row(valid=False, date=None, minute=None, count=1, amount_cents=0)])
    (letter,) = dead_letters(out).collect()
    assert letter.value == b"{}"
    assert {h.key: bytes(h.value) for h in letter.headers} == {
        "rtdash.error": b"not a JSON OrderPaid object", "rtdash.source": b"orders:0:3"}


@pytest.fixture
def sink(redis_server, settings, request):
    client = redis.Redis.from_url(settings.redis)
    prefix = f"t{request.node.name[-20:]}"
    yield OrdersSink(client, prefix)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


def test_sink_applies_a_batch_once_and_publishes_exact_envelopes(sink):
    client = sink.client
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(live_channel(sink.prefix, ORDERS_TODAY), live_channel(sink.prefix, ORDERS_PER_MINUTE))
    pubsub.get_message(timeout=1)
    batch = [MinuteTotal("2026-11-26", "15:59", 2, 1250), MinuteTotal("2026-11-25", "23:59", 1, 5)]
    assert sink.apply(0, "2026-11-26", batch) is True
    assert sink.apply(0, "2026-11-26", batch) is False      # a replayed batch changes nothing
    assert sink.apply(1, "2026-11-26", [MinuteTotal("2026-11-26", "16:00", 1, 100)]) is True
    assert sink.apply(0, "2026-11-26", batch) is False      # an older batch neither
    today = json.loads(client.get(snapshot_key(sink.prefix, ORDERS_TODAY)))
    assert today == {"channel": ORDERS_TODAY, "seq": 2,
                     "data": {"date": "2026-11-26", "count": 3, "amount_cents": 1350}}
    minutes = json.loads(client.get(snapshot_key(sink.prefix, ORDERS_PER_MINUTE)))
    assert minutes["data"] == {"date": "2026-11-26", "minutes": {
        "15:59": {"count": 2, "amount_cents": 1250}, "16:00": {"count": 1, "amount_cents": 100}}}
    published = []
    deadline = time.monotonic() + 5
    while len(published) < 4 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message:
            published.append(json.loads(message["data"]))
    pubsub.close()
    assert [(m["channel"], m["seq"]) for m in published] == [
        (ORDERS_TODAY, 1), (ORDERS_PER_MINUTE, 1), (ORDERS_TODAY, 2), (ORDERS_PER_MINUTE, 2)]
    assert published[3]["data"]["minutes"] == {"16:00": {"count": 1, "amount_cents": 100}}  # only what changed
    assert client.hgetall(f"{sink.prefix}:orders:day:2026-11-25") == {b"count": b"1", b"amount_cents": b"5"}


def test_sink_gives_a_new_day_its_zero_snapshot_once(sink):
    assert sink.ensure_today("2026-11-26") is True
    assert sink.ensure_today("2026-11-26") is False
    snapshot = json.loads(sink.client.get(snapshot_key(sink.prefix, ORDERS_TODAY)))
    assert snapshot["data"] == {"date": "2026-11-26", "count": 0, "amount_cents": 0}


def test_query_on_kafka_counts_each_order_once_across_restarts(spark, kafka, redis_server, settings, tmp_path):
    """The real query: duplicates dropped, bad records dead-lettered, a restart resumes exactly."""
    from kafka import KafkaConsumer, KafkaProducer

    from jobs.orders import start
    from rtdash.stack import ensure_topics

    job = settings.model_copy(update={"orders_topic": "orders.jobtest", "orders_dlq_topic": "orders.jobtest.dlq",
                                      "redis_prefix": "jobtest", "home": tmp_path})
    ensure_topics(job, [job.orders_topic, job.orders_dlq_topic])
    producer = KafkaProducer(bootstrap_servers=job.kafka_servers)
    now = datetime.now(job.tz)

    def send(values):
        for value in values:
            producer.send(job.orders_topic, key=b"k", value=value)
        producer.flush()

    def run_until_caught_up():
        query = start(spark, job)
        try:
            query.processAllAvailable()
        finally:
            query.stop()
        return json.loads(redis.Redis.from_url(job.redis).get(snapshot_key("jobtest", ORDERS_TODAY)))["data"]

    send([order(f"O{i}", 100 + i, now) for i in range(20)] + [order("O3", 103, now), order("O7", 107, now),
                                                               b"garbage", order("BAD", 0, now)])
    assert run_until_caught_up() == {"date": now.date().isoformat(), "count": 20,
                                     "amount_cents": sum(100 + i for i in range(20))}
    send([order(f"P{i}", 1000, now) for i in range(5)] + [order("O1", 101, now)])
    assert run_until_caught_up() == {"date": now.date().isoformat(), "count": 25,
                                     "amount_cents": sum(100 + i for i in range(20)) + 5000}
    producer.close()
    consumer = KafkaConsumer(job.orders_dlq_topic, bootstrap_servers=job.kafka_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    letters = {m.value: dict(m.headers)["rtdash.error"] for m in consumer}
    consumer.close()
    assert letters == {order("BAD", 0, now): b"amount_cents must be positive",
                       b"garbage": b"not a JSON OrderPaid object"}
