"""jobs/orders_realtime.py: the rows on static records, the slot check, then the real-time query on the real
broker with the orders applier (jobs/orders_applier.py) in Redis: each order once, through restarts of both."""
from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
import redis

from jobs.orders_applier import ApplierLoop, ApplierMetrics, OrderRow, OrdersApplier, kafka_consumer
from jobs.orders_realtime import NotEnoughSlots, check_slots, required_slots, start, transform
from kafka_records import dead_letters, order, records
from rtdash.contracts import from_json
from waiting import eventually

PAID_AT = datetime(2026, 11, 26, 15, 59, 30, tzinfo=timezone.utc)
DAY = "2026-11-26"


def test_valid_orders_become_rows_and_the_rest_dead_letters(spark, job_settings):
    values = [order("A", 100, PAID_AT), b"garbage", order("BAD", 0, PAID_AT), order("A", 100, PAID_AT)]
    out = transform(records(spark, values, topic="orders", written_at=PAID_AT, key=b"k"),
                    settings=job_settings).collect()
    assert [r.topic for r in out] == ["orders.rows", "orders.dlq", "orders.dlq", "orders.rows"]
    # stateless: the repeated order is a row again (the applier makes it a no-op)
    assert from_json(OrderRow, out[0].value) == OrderRow(order_id="A", amount_cents=100, date=DAY, minute="15:59",
                                                         recorded_ms=int(PAID_AT.timestamp() * 1000))
    assert out[0].key == b"A" and [(h.key, h.value) for h in out[0].headers] == [("rtdash.source", b"orders:0:0")]
    # dead letters as jobs/dead_letters.py writes them: original key and value, error and source headers
    assert (out[1].key, out[1].value) == (b"k", b"garbage")
    assert [(h.key, h.value) for h in out[1].headers] == [("rtdash.error", b"not a JSON OrderPaid object"),
                                                          ("rtdash.source", b"orders:0:1")]
    assert dict((h.key, h.value) for h in out[2].headers)["rtdash.error"] == b"amount_cents must be positive"


def test_day_and_minute_are_those_of_the_configured_zone(spark, job_settings):
    shanghai = job_settings.model_copy(update={"timezone": "Asia/Shanghai"})
    late = datetime(2026, 11, 26, 16, 30, tzinfo=timezone.utc)   # 00:30 on the 27th in Shanghai
    spark.conf.set("spark.sql.session.timeZone", "Asia/Shanghai")
    try:
        (out,) = transform(records(spark, [order("A", 1, late)], topic="orders", written_at=late),
                           settings=shanghai).collect()
        with pytest.raises(ValueError, match="timeZone"):
            transform(records(spark, [], topic="orders", written_at=late), settings=job_settings)
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    row = from_json(OrderRow, out.value)
    assert (row.date, row.minute) == ("2026-11-27", "00:30")


def test_slots_must_hold_every_partition_and_the_micro_batch_queries():
    assert required_slots(1, 2) == 2 and required_slots(3, 0) == 3
    check_slots(2, 1, 2, topic="orders")
    with pytest.raises(NotEnoughSlots, match=r"2 task slots but needs 4.*'orders' \(3\).*local\[4\]"):
        check_slots(2, 3, 2, topic="orders")


def stored(settings) -> tuple[int, int]:
    client = redis.Redis.from_url(settings.redis)
    try:
        day = client.hgetall(f"{settings.redis_prefix}:orders:day:{DAY}")
    finally:
        client.close()
    return int(day.get(b"count", 0)), int(day.get(b"amount_cents", 0))


@pytest.mark.integration
def test_realtime_query_and_applier_count_each_order_once_through_restarts(spark, kafka, jobs_redis, stack_settings,
                                                                          tmp_path):
    from rtdash.kafka_admin import ensure_topics
    from rtdash.kafka_producer import make_producer

    job = stack_settings.model_copy(update={
        "orders_topic": "orders.rttest", "orders_dlq_topic": "orders.rttest.dlq",
        "orders_realtime_topic": "orders.rttest.rows", "redis_url": jobs_redis, "redis_prefix": "rttest",
        "home": tmp_path, "orders_realtime_batch_seconds": 5})
    ensure_topics(job, [job.orders_topic])
    producer = make_producer(job.kafka_servers, client_id="rtdash-test-orders-realtime")

    def send(values: list[bytes]) -> None:
        for value in values:
            producer.produce(job.orders_topic, value, b"k")
        assert producer.flush(30) == 0, "Kafka did not acknowledge every record"

    def applier_loop() -> ApplierLoop:
        applier = OrdersApplier(redis.Redis.from_url(jobs_redis), job.redis_prefix, ids_ttl_seconds=3600)
        loop = ApplierLoop(job, lambda: kafka_consumer(job, group="rtdash-test-applier"), applier, ApplierMetrics())
        loop.start()
        return loop

    def shows(count: int, amount: int, what: str) -> None:
        eventually(lambda: stored(job) == (count, amount), timeout=60, interval=0.2, what=what)

    query, loop = start(spark, job, microbatch_queries=0), applier_loop()
    try:
        eventually(lambda: loop.ready, timeout=30, what="the applier reading its partitions")
        send([order(f"O{i}", 100 + i, PAID_AT) for i in range(20)]
             + [order("O3", 103, PAID_AT), b"garbage", order("BAD", 0, PAID_AT), order("O7", 107, PAID_AT)])
        first = sum(100 + i for i in range(20))
        shows(20, first, "20 distinct orders counted")
        assert loop.status.repeated >= 2

        # the query restarted from its checkpoint (replaying up to a batch), the applier from its commits
        query.stop()
        loop.stop()
        query, loop = start(spark, job, microbatch_queries=0), applier_loop()
        send([order(f"P{i}", 1000, PAID_AT) for i in range(5)] + [order("O1", 101, PAID_AT)])
        shows(25, first + 5000, "the orders after the restart, each once")
        # a rival applier in another group re-reads the whole topic: every row a no-op
        rival = ApplierLoop(job, lambda: kafka_consumer(job, group="rtdash-test-rival"),
                            OrdersApplier(redis.Redis.from_url(jobs_redis), job.redis_prefix, ids_ttl_seconds=3600),
                            ApplierMetrics())
        rival.start()
        try:
            eventually(lambda: rival.status.repeated >= 25, timeout=30, what="the rival applier re-reading")
            assert rival.status.applied == 0 and stored(job) == (25, first + 5000)
        finally:
            rival.stop()
    finally:
        query.stop()
        loop.stop()
        producer.close()
    letters = {value: headers["rtdash.error"] for value, headers in
               dead_letters(job.kafka_servers, job.orders_dlq_topic).items()}
    assert letters == {order("BAD", 0, PAID_AT): b"amount_cents must be positive",
                       b"garbage": b"not a JSON OrderPaid object"}
    assert not [t for t in threading.enumerate() if t.name == "orders-applier"]
    # each start warmed the path up with a made-up order on a topic of its own, never on the rows topic
    warm_ups = dead_letters(job.kafka_servers, f"{job.orders_realtime_topic}.warmup")
    assert {from_json(OrderRow, value).order_id for value in warm_ups} == {"warm-up"}
