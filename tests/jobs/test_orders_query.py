"""The orders query end to end: a streaming file source standing in for Kafka, then the real broker."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone

import pytest
import redis
from pyspark.sql import Row

from jobs.orders import start, transform, write_orders
from jobs.redis_sink import OrdersSink
from jobs.service import QueryState
from rtdash.channels import ORDERS_PER_MINUTE, ORDERS_TODAY, snapshot_key
from rtdash.contracts import OrderPaid, to_json

RECORD_SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"


def order(order_id: str, cents: int, paid_at: datetime) -> bytes:
    return to_json(OrderPaid(order_id=order_id, trade_no="T" + order_id, amount_cents=cents, paid_at=paid_at,
                             trade_status="TRADE_SUCCESS", notify_id="N" + order_id, recorded_at=paid_at))


def today_data(settings, channel=ORDERS_TODAY) -> dict:
    client = redis.Redis.from_url(settings.redis)
    try:
        return json.loads(client.get(snapshot_key(settings.redis_prefix, channel)))["data"]
    finally:
        client.close()


def test_stream_dedupes_across_batches_and_resumes_exactly_after_restart(spark, job_settings, redis_client, tmp_path):
    """Each file is one micro-batch; duplicates in later batches and after a restart count once."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    incoming, staging = tmp_path / "incoming", tmp_path / "staging"
    incoming.mkdir()
    offsets = iter(range(1000))

    def arrive(name: str, values: list[bytes]) -> None:
        rows = [Row(key=b"k", value=v, topic="orders", partition=0, offset=next(offsets), timestamp=now)
                for v in values]
        spark.createDataFrame(rows, RECORD_SCHEMA).coalesce(1).write.parquet(str(staging / name))
        (part,) = (staging / name).glob("part-*.parquet")
        shutil.move(part, incoming / f"{name}.parquet")

    def run_until_caught_up() -> dict:
        stream = spark.readStream.schema(RECORD_SCHEMA).option("maxFilesPerTrigger", 1).parquet(str(incoming))
        sink = OrdersSink(redis_client, job_settings.redis_prefix, "orders_today")
        query = write_orders(transform(stream, settings=job_settings), job_settings, sink)
        try:
            query.processAllAvailable()
        finally:
            query.stop()
        return today_data(job_settings)

    arrive("1", [order("A", 100, now), order("B", 200, now), order("A", 100, now)])
    arrive("2", [order("B", 200, now), order("C", 300, now)])
    assert run_until_caught_up() == {"date": now.date().isoformat(), "count": 3, "amount_cents": 600}
    assert OrdersSink(redis_client, job_settings.redis_prefix).last_batch()[1] >= 1  # two batches at least

    arrive("3", [order("C", 300, now), order("D", 400, now)])
    assert run_until_caught_up() == {"date": now.date().isoformat(), "count": 4, "amount_cents": 1000}
    assert today_data(job_settings, ORDERS_PER_MINUTE) == {"date": now.date().isoformat(), "minutes": {
        now.strftime("%H:%M"): {"count": 4, "amount_cents": 1000}}}


@pytest.mark.integration
def test_kafka_query_dead_letters_bad_records_and_counts_each_order_once(spark, kafka, jobs_redis, stack_settings,
                                                                         tmp_path):
    """The real query on the real broker: duplicates dropped, bad records dead-lettered, a restart resumes.

    At most 7 records per batch, so the backlog takes several batches and duplicates cross them.
    """
    from kafka import KafkaConsumer, KafkaProducer

    from rtdash.kafka_admin import ensure_topics

    job = stack_settings.model_copy(update={
        "orders_topic": "orders.jobtest", "orders_dlq_topic": "orders.jobtest.dlq", "redis_url": jobs_redis,
        "redis_prefix": "kafkajobtest", "home": tmp_path, "spark_max_orders_per_batch": 7})
    ensure_topics(job, [job.orders_topic, job.orders_dlq_topic])
    now = datetime.now(job.tz)
    producer = KafkaProducer(bootstrap_servers=job.kafka_servers)

    def send(values: list[bytes]) -> None:
        for value in values:
            producer.send(job.orders_topic, key=b"k", value=value)
        producer.flush()

    health = {}   # what /healthz said of the query once it caught up

    def run_until_caught_up() -> dict:
        query = start(spark, job)
        try:
            query.processAllAvailable()
            health.update(QueryState("orders", query).health())
        finally:
            query.stop()
        return today_data(job)

    try:
        send([order(f"O{i}", 100 + i, now) for i in range(20)]
             + [order("O3", 103, now), order("O7", 107, now), b"garbage", order("BAD", 0, now),
                order("HUGE", 10**15, now)])
        assert run_until_caught_up() == {"date": now.date().isoformat(), "count": 20,
                                         "amount_cents": sum(100 + i for i in range(20))}
        client = redis.Redis.from_url(jobs_redis)
        sink = OrdersSink(client, job.redis_prefix, "orders_today[orders.jobtest->kafkajobtest]")
        assert sink.last_batch()[1] == 3  # 25 records, 7 per batch
        first_query = sink.last_batch()[0]
        assert health["active"] and health["last_batch"] == 3 and health["last_batch_ms"] > 0
        send([order(f"P{i}", 1000, now) for i in range(5)] + [order("O1", 101, now)])
        assert run_until_caught_up() == {"date": now.date().isoformat(), "count": 25,
                                         "amount_cents": sum(100 + i for i in range(20)) + 5000}

        # The checkpoint deleted, Redis kept: the new query (new id, batch ids from 0 again) resumes
        # where the applied batches ended, neither skipping its first batches nor re-counting the topic.
        shutil.rmtree(job.checkpoints_dir / "orders")
        send([order(f"Q{i}", 7, now) for i in range(3)])
        assert run_until_caught_up() == {"date": now.date().isoformat(), "count": 28,
                                         "amount_cents": sum(100 + i for i in range(20)) + 5000 + 21}
        query_id, batch_id = sink.last_batch()
        assert query_id != first_query and batch_id == 0
        client.close()
    finally:
        producer.close()
    consumer = KafkaConsumer(job.orders_dlq_topic, bootstrap_servers=job.kafka_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        letters = {m.value: dict(m.headers)["rtdash.error"] for m in consumer}
    finally:
        consumer.close()
    assert letters == {order("BAD", 0, now): b"amount_cents must be positive",
                       order("HUGE", 10**15, now): b"amount_cents out of range (over 999999999)",
                       b"garbage": b"not a JSON OrderPaid object"}
