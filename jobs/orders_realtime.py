"""Orders, real-time mode: each paid order checked and placed in its day and minute as it arrives.

The `realtime` orders mode (RTDASH_ORDERS_MODE; `microbatch` is the default). A Spark
Structured Streaming query in real-time mode (`trigger(realTime=...)`, Spark
4.1+) reads the `orders` topic and, record by record, with no micro-batch to
wait for:

    Kafka records -> parsed (from_json, the OrderPaid contract) -> checked
    (the micro-batch job's reasons, jobs/orders.py) -> valid: one compact row
    (order id, amount, day and minute in RTDASH_TIMEZONE, when it was
    recorded) to RTDASH_ORDERS_REALTIME_TOPIC, key = order id;
    invalid: a dead letter to RTDASH_ORDERS_DLQ_TOPIC (jobs/dead_letters.py's
    key, value and headers)

in one Kafka sink: each row names its topic. The orders applier
(jobs/orders_applier.py) applies the rows to Redis, once per order id.

What real-time mode allows, and why the query looks like this (measured with
pyspark 4.2.0, BENCHMARKS.md):

* stateless operators only and the update output mode: no dropDuplicates, no
  aggregation. Exactly once is the applier's (a per-day set of applied ids);
* no foreachBatch, and a Python `foreach` writer receives rows only at each
  batch's end: the Kafka sink is the one continuous way out;
* a batch lasts RTDASH_ORDERS_REALTIME_BATCH_SECONDS (at least
  spark.sql.streaming.realTimeMode.minBatchDuration, 5 s): at its end the
  offsets are committed and the records of the next ~0.1-0.4 s wait for the
  next batch to start; a longer batch makes those stalls rarer, and a restart
  replays at most one batch (no-ops at the applier);
* each Kafka partition holds one task slot for the whole batch, and a
  partition without a slot is silently never read: `check_slots` refuses to
  start when the application's slots cannot hold every partition of the
  topic plus one slot for the micro-batch queries beside it;
* no Python runs per record (no UDF), so the query needs no Python worker.

It runs as a Spark application of its own (`rtdash up`'s `orders_realtime`
service), not beside the traffic and alert queries: when a real-time batch
ends, its task slot is free until the next batch's task takes it, and in a
shared application a traffic task may take it first; the next batch's records
then wait for that task (seconds under the gateway's load; BENCHMARKS.md).

Usage:
    python -m jobs.orders_realtime

Settings (environment, see README): RTDASH_KAFKA_BOOTSTRAP, RTDASH_ORDERS_TOPIC,
RTDASH_ORDERS_DLQ_TOPIC, RTDASH_ORDERS_REALTIME_TOPIC, RTDASH_ORDERS_REALTIME_BATCH_SECONDS,
RTDASH_TIMEZONE, RTDASH_ORDERS_REALTIME_SPARK_MASTER (default local[N], N the orders partitions),
RTDASH_HOME (checkpoint in <home>/checkpoints/orders_realtime), RTDASH_BIND_HOST and
RTDASH_ORDERS_REALTIME_HEALTH_PORT (GET /healthz and /metrics as jobs/service.py serves them).
"""
from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession, functions as F
from pyspark.sql.streaming import StreamingQuery

from jobs.checkpoint import checkpoint_location
from jobs.orders import invalid_reason
from jobs.service import QuerySpec, run_job
from jobs.spark import KAFKA_SOURCE_OPTIONS, require_session_zone
from rtdash.contracts import OrderPaid, spark_schema
from rtdash.settings import Settings

log = logging.getLogger("rtdash.jobs.orders_realtime")

QUERY_NAME = "orders_realtime"


class NotEnoughSlots(RuntimeError):
    """The application's task slots cannot hold every real-time partition and the micro-batch queries."""


def query_name(settings: Settings) -> str:
    """`orders_realtime`, qualified when it reads another topic or writes another (so tests can run several)."""
    if (settings.orders_topic, settings.orders_realtime_topic) == ("orders", "orders.rows"):
        return QUERY_NAME
    return f"{QUERY_NAME}[{settings.orders_topic}->{settings.orders_realtime_topic}]"


def transform(records: DataFrame, *, settings: Settings) -> DataFrame:
    """Kafka records -> Kafka sink rows (topic, key, value, headers): one per record, stateless.

    A valid OrderPaid becomes an `OrderRow` (jobs/orders_applier.py) on
    RTDASH_ORDERS_REALTIME_TOPIC, keyed by order id, with the source record in
    header ``rtdash.source``; anything else goes to RTDASH_ORDERS_DLQ_TOPIC as it
    came, with headers ``rtdash.error`` and ``rtdash.source``. Day and minute are
    those of the session time zone, which must be RTDASH_TIMEZONE.
    """
    require_session_zone(records, settings)
    order = F.from_json(F.col("value").cast("string"), spark_schema(OrderPaid))
    checked = records.select("key", "value", "topic", "partition", "offset", order.alias("order")) \
        .withColumn("reason", invalid_reason(F.col("order")))
    valid = F.col("reason").isNull()
    source = F.struct(F.lit("rtdash.source").alias("key"),
                      F.concat_ws(":", "topic", "partition", "offset").cast("binary").alias("value"))
    error = F.struct(F.lit("rtdash.error").alias("key"), F.col("reason").cast("binary").alias("value"))
    row = F.to_json(F.struct(
        F.col("order.order_id").alias("order_id"), F.col("order.amount_cents").alias("amount_cents"),
        F.date_format("order.paid_at", "yyyy-MM-dd").alias("date"),
        F.date_format("order.paid_at", "HH:mm").alias("minute"),
        F.unix_millis("order.recorded_at").alias("recorded_ms")))
    return checked.select(
        F.when(valid, F.lit(settings.orders_realtime_topic)).otherwise(F.lit(settings.orders_dlq_topic)).alias("topic"),
        F.when(valid, F.col("order.order_id").cast("binary")).otherwise(F.col("key")).alias("key"),
        F.when(valid, row.cast("binary")).otherwise(F.col("value")).alias("value"),
        F.when(valid, F.array(source)).otherwise(F.array(error, source)).alias("headers"))


def required_slots(realtime_partitions: int, microbatch_queries: int) -> int:
    """Task slots an application needs: one per partition a real-time query reads, held for its whole
    batch, and one the micro-batch queries take turns on (more make them faster, none starves them)."""
    return realtime_partitions + (1 if microbatch_queries else 0)


def check_slots(slots: int, realtime_partitions: int, microbatch_queries: int, *, topic: str) -> None:
    """Refuse what Spark would accept and then never read: NotEnoughSlots with the numbers and the fix."""
    needed = required_slots(realtime_partitions, microbatch_queries)
    if slots < needed:
        raise NotEnoughSlots(
            f"the Spark application has {slots} task slots but needs {needed}: the real-time orders query "
            f"holds one slot per partition of topic {topic!r} ({realtime_partitions}) for its whole batch, "
            f"and the {microbatch_queries} micro-batch queries need at least one more; a partition without a "
            f"slot would never be read. Give the application more slots (RTDASH_SPARK_MASTER=local[{needed}], "
            f"or executor cores on a cluster) or set RTDASH_ORDERS_MODE=microbatch")


def topic_partitions(settings: Settings, topic: str) -> int:
    """How many partitions `topic` has now (asked of the broker)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, client_id="rtdash-slots",
                             request_timeout_ms=10000, bootstrap_timeout_ms=10000)
    try:
        partitions = consumer.partitions_for_topic(topic)
    finally:
        consumer.close()
    if not partitions:
        raise NotEnoughSlots(f"topic {topic!r} does not exist (or has no partitions) at {settings.kafka_servers}")
    return len(partitions)


def slots_of(spark: SparkSession) -> int:
    """The application's task slots: local[N]'s N, a cluster's executor cores (Spark's default parallelism)."""
    return spark.sparkContext.defaultParallelism


def sink_options(settings: Settings) -> dict[str, str]:
    """The Kafka sink's producer options: the stream and its warm-up share them, and so one cached producer."""
    return {"kafka.bootstrap.servers": settings.kafka_servers,
            "kafka.linger.ms": "0"}    # each row as soon as it is made


def warm_up(spark: SparkSession, settings: Settings) -> None:
    """One made-up paid order through `transform` and the sink's producer, to <rows topic>.warmup, before the
    stream starts: the generated code, the producer and the topic metadata are then ready for the first real
    order, instead of being made while it waits (the first seconds after a start; BENCHMARKS.md)."""
    from datetime import datetime, timezone

    from rtdash.contracts import to_json
    from rtdash.kafka_admin import ensure_topics

    topic = f"{settings.orders_realtime_topic}.warmup"
    ensure_topics(settings, [topic])
    now = datetime.now(timezone.utc)
    order = OrderPaid(order_id="warm-up", trade_no="warm-up", amount_cents=1, paid_at=now,
                      trade_status="TRADE_SUCCESS", notify_id="warm-up", recorded_at=now)
    records = spark.createDataFrame([(b"warm-up", to_json(order), settings.orders_topic, 0, -1)],
                                    "key binary, value binary, topic string, partition int, offset long")
    (transform(records, settings=settings).withColumn("topic", F.lit(topic))
     .write.format("kafka").options(**sink_options(settings)).save())


def start(spark: SparkSession, settings: Settings, *, microbatch_queries: int = 0) -> StreamingQuery:
    """Start the real-time query in `spark`, once its slots are checked and its path warmed up;
    `microbatch_queries` share the application."""
    from rtdash.kafka_admin import ensure_topics

    check_slots(slots_of(spark), topic_partitions(settings, settings.orders_topic), microbatch_queries,
                topic=settings.orders_topic)
    ensure_topics(settings, [settings.orders_realtime_topic, settings.orders_dlq_topic])
    spark.conf.set("spark.sql.session.timeZone", settings.timezone)
    warm_up(spark, settings)
    records = (spark.readStream.format("kafka")
               .option("kafka.bootstrap.servers", settings.kafka_servers)
               .option("subscribe", settings.orders_topic)
               .option("startingOffsets", "earliest")     # replays are no-ops at the applier
               .option("failOnDataLoss", "false")
               .options(**KAFKA_SOURCE_OPTIONS)
               .load())
    return (transform(records, settings=settings).writeStream
            .queryName(query_name(settings))
            .format("kafka")
            .options(**sink_options(settings))
            .outputMode("update")
            .option("checkpointLocation", checkpoint_location(settings, "orders_realtime"))
            .trigger(realTime=f"{settings.orders_realtime_batch_seconds:g} seconds")
            .start())


def spec(microbatch_queries: int = 0) -> QuerySpec:
    """The query as the application's `orders` entry, beside `microbatch_queries` micro-batch queries."""
    return QuerySpec("orders", lambda spark, settings: start(spark, settings, microbatch_queries=microbatch_queries))


def preflight(microbatch_queries: int):
    """The application's check before it starts any query: NotEnoughSlots ends it with the reason."""
    def check(spark: SparkSession, settings: Settings) -> None:
        check_slots(slots_of(spark), topic_partitions(settings, settings.orders_topic), microbatch_queries,
                    topic=settings.orders_topic)
    return check


def own_application(settings: Settings) -> Settings:
    """The settings of the real-time query's own application: its master and its health port."""
    return settings.model_copy(update={"spark_master": settings.orders_realtime_master,
                                       "jobs_health_port": settings.orders_realtime_health_port})


def main() -> None:
    run_job([spec()], app_name="rtdash-orders-realtime", description=__doc__, preflight=preflight(0),
            adapt=own_application)


if __name__ == "__main__":
    main()
