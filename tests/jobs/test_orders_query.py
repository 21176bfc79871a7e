"""jobs/orders.py end to end: a streaming file source standing in for Kafka, then the real broker.

Orders are paid at a fixed time, and the figures are read from the day's
hashes the sink keeps (jobs/orders_sink.py), not from the `orders.today`
snapshot, which follows the wall clock's day: a run at midnight passes too.
"""
from __future__ import annotations

import shutil
from datetime import datetime, timezone

import pytest
import redis

from jobs.orders import start, transform, write_orders
from jobs.orders_sink import OrdersSink
from jobs.service import QueryState
from kafka_records import RECORD_SCHEMA, dead_letters, order, records

PAID_AT = datetime(2026, 11, 26, 15, 59, 30, tzinfo=timezone.utc)
DAY, MINUTE = "2026-11-26", "15:59"


def stored(settings, date: str = DAY) -> dict:
    """The paid orders of `date` as the sink stored them: the day's count and amount, and each minute's."""
    client = redis.Redis.from_url(settings.redis)
    prefix = settings.redis_prefix
    try:
        day = client.hgetall(f"{prefix}:orders:day:{date}")
        counts = client.hgetall(f"{prefix}:orders:minute:{date}:count")
        amounts = client.hgetall(f"{prefix}:orders:minute:{date}:amount")
    finally:
        client.close()
    return {"count": int(day.get(b"count", 0)), "amount_cents": int(day.get(b"amount_cents", 0)),
            "minutes": {minute.decode(): {"count": int(count), "amount_cents": int(amounts[minute])}
                        for minute, count in counts.items()}}


def paid(count: int, amount_cents: int) -> dict:
    """What `stored` holds when `count` orders of `amount_cents` in all were paid, all at PAID_AT."""
    return {"count": count, "amount_cents": amount_cents,
            "minutes": {MINUTE: {"count": count, "amount_cents": amount_cents}}}


def test_stream_dedupes_across_batches_and_resumes_exactly_after_restart(spark, job_settings, redis_client, tmp_path):
    """Each file is one micro-batch; duplicates in later batches and after a restart count once."""
    incoming, staging = tmp_path / "incoming", tmp_path / "staging"
    incoming.mkdir()
    arrived: list[bytes] = []

    def arrive(name: str, values: list[bytes]) -> None:
        batch = records(spark, values, topic="orders", written_at=PAID_AT, first_offset=len(arrived))
        arrived.extend(values)
        batch.coalesce(1).write.parquet(str(staging / name))
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
        return stored(job_settings)

    arrive("1", [order("A", 100, PAID_AT), order("B", 200, PAID_AT), order("A", 100, PAID_AT)])
    arrive("2", [order("B", 200, PAID_AT), order("C", 300, PAID_AT)])
    assert run_until_caught_up() == paid(3, 600)
    assert OrdersSink(redis_client, job_settings.redis_prefix).last_batch()[1] >= 1  # two batches at least

    arrive("3", [order("C", 300, PAID_AT), order("D", 400, PAID_AT)])
    assert run_until_caught_up() == paid(4, 1000)


@pytest.mark.integration
def test_kafka_query_dead_letters_bad_records_and_counts_each_order_once(spark, kafka, jobs_redis, stack_settings,
                                                                         tmp_path):
    """The real query on the real broker: duplicates dropped, bad records dead-lettered, a restart resumes.

    At most 7 records per batch, so the backlog takes several batches and duplicates cross them.
    """
    from rtdash.kafka_admin import ensure_topics
    from rtdash.kafka_producer import make_producer

    job = stack_settings.model_copy(update={
        "orders_topic": "orders.jobtest", "orders_dlq_topic": "orders.jobtest.dlq", "redis_url": jobs_redis,
        "redis_prefix": "kafkajobtest", "home": tmp_path, "spark_max_orders_per_batch": 7})
    ensure_topics(job, [job.orders_topic, job.orders_dlq_topic])
    producer = make_producer(job.kafka_servers, client_id="rtdash-test-orders-query")

    def send(values: list[bytes]) -> None:
        for value in values:
            producer.produce(job.orders_topic, value, b"k")
        assert producer.flush(30) == 0, "Kafka did not acknowledge every record"

    health = {}   # what /healthz said of the query once it caught up

    def run_until_caught_up() -> dict:
        query = start(spark, job)
        try:
            query.processAllAvailable()
            health.update(QueryState("orders", query).health())
        finally:
            query.stop()
        return stored(job)

    try:
        send([order(f"O{i}", 100 + i, PAID_AT) for i in range(20)]
             + [order("O3", 103, PAID_AT), order("O7", 107, PAID_AT), b"garbage", order("BAD", 0, PAID_AT),
                order("HUGE", 10**15, PAID_AT)])
        first_orders = sum(100 + i for i in range(20))
        assert run_until_caught_up() == paid(20, first_orders)
        client = redis.Redis.from_url(jobs_redis)
        sink = OrdersSink(client, job.redis_prefix, "orders_today[orders.jobtest->kafkajobtest]")
        assert sink.last_batch()[1] == 3  # 25 records, 7 per batch
        first_query = sink.last_batch()[0]
        assert health["active"] and health["last_batch"] == 3 and health["last_batch_ms"] > 0
        send([order(f"P{i}", 1000, PAID_AT) for i in range(5)] + [order("O1", 101, PAID_AT)])
        assert run_until_caught_up() == paid(25, first_orders + 5000)

        # The checkpoint deleted, Redis kept: the new query (new id, batch ids from 0 again) resumes
        # where the applied batches ended, neither skipping its first batches nor re-counting the topic.
        shutil.rmtree(job.checkpoints_dir / "orders")
        send([order(f"Q{i}", 7, PAID_AT) for i in range(3)])
        assert run_until_caught_up() == paid(28, first_orders + 5000 + 21)
        query_id, batch_id = sink.last_batch()
        assert query_id != first_query and batch_id == 0
        client.close()
    finally:
        producer.close()
    letters = {value: headers["rtdash.error"] for value, headers in
               dead_letters(job.kafka_servers, job.orders_dlq_topic).items()}
    assert letters == {order("BAD", 0, PAID_AT): b"amount_cents must be positive",
                       order("HUGE", 10**15, PAID_AT): b"amount_cents out of range (over 999999999)",
                       b"garbage": b"not a JSON OrderPaid object"}
