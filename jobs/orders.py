"""Orders job: today's paid order count and amount, and orders per minute, live.

Reads the `orders` topic (one OrderPaid event per paid order, written by the
order service's outbox relay), drops duplicate order ids, and after every
micro-batch adds the batch's per-minute totals to today's running totals in
Redis and publishes them to the dashboard channels `orders.today` and
`orders.per_minute`. Days and minutes are those of RTDASH_TIMEZONE.

A micro-batch is the dashboard's latency: an order waits for the batch in
progress and then its own. So a batch runs one Spark job of two stages (read,
then dedupe) and the batch's few orders are summed per minute on the driver
(`minute_totals`), not in a third, shuffled stage; at most
RTDASH_SPARK_MAX_ORDERS_PER_BATCH Kafka records go into one batch, so a
backlog after an outage is caught up in bounded batches.

Exactly once, end to end: the relay publishes at least once and the dedupe
stage drops repeated order ids (within RTDASH_DEDUPE_WATERMARK, by Kafka
timestamp); the checkpoint keeps source offsets and dedupe state; the Redis
sink applies each batch of the query once (jobs/checkpoint.py), so a batch
Spark replays after a crash does not count twice, and a query whose
checkpoint was deleted resumes from the offsets Redis holds. Spark drops a
record whose Kafka timestamp is already behind the watermark (more than
RTDASH_DEDUPE_WATERMARK older than the newest one seen): keep producer clocks
within that. Redis keys and channel shapes: jobs/orders_sink.py.

Dead letters: events that are not a valid OrderPaid go to
RTDASH_ORDERS_DLQ_TOPIC with their original key and value and headers
`rtdash.error` (the reason, e.g. "amount_cents must be positive", or out of
range: over the largest amount a notify can carry, so no sum can overflow in
Redis) and `rtdash.source` (topic:partition:offset of the original); the job
keeps running. Dead letters are at least once: a replayed batch may repeat them.

Usage:
    python -m jobs.orders [--trigger-seconds S]
    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[2]' \
        --jars "$(ls "$PWD"/.jars/spark/*.jar | paste -sd,)" jobs/orders.py

Arguments:
    --trigger-seconds S   micro-batch interval (default RTDASH_SPARK_TRIGGER_SECONDS;
                          0 starts the next batch as soon as data is there)

Settings (environment, see README): RTDASH_KAFKA_BOOTSTRAP / RTDASH_KAFKA_PORT,
RTDASH_REDIS_URL, RTDASH_REDIS_PREFIX, RTDASH_ORDERS_TOPIC,
RTDASH_ORDERS_DLQ_TOPIC, RTDASH_TIMEZONE, RTDASH_SPARK_MASTER,
RTDASH_SPARK_SHUFFLE_PARTITIONS, RTDASH_SPARK_MAX_ORDERS_PER_BATCH,
RTDASH_DEDUPE_WATERMARK, RTDASH_HOME (checkpoint in <home>/checkpoints/orders),
RTDASH_BIND_HOST and RTDASH_JOBS_HEALTH_PORT (GET /healthz: query status, last
batch id, its input rows and how long it took, since the batch time is most of
the dashboard's latency). Under spark-submit its --master and --jars apply.
SIGTERM or Ctrl-C stops the query and the session.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime, timezone

from pyspark.sql import Column, DataFrame, SparkSession, functions as F
from pyspark.sql.streaming import StreamingQuery

from jobs.checkpoint import CheckpointLog, checkpoint_location, resume_offsets
from jobs.dead_letters import reason, write_dead_letters
from jobs.orders_sink import MinuteTotal, OrdersSink
from jobs.service import QuerySpec, run_job
from jobs.spark import read_topic, require_session_zone
from rtdash.contracts import OrderPaid, spark_schema
from rtdash.payments import MAX_AMOUNT_CENTS
from rtdash.redis_client import redis_client
from rtdash.settings import Settings

log = logging.getLogger("rtdash.jobs.orders")

QUERY_NAME = "orders_today"


def query_name(settings: Settings) -> str:
    """`orders_today`, qualified when the job reads another topic or writes another prefix.

    Query names are unique per SparkSession: qualifying them lets several orders
    jobs (another shop's topic, a test's) run side by side in one session.
    """
    if (settings.orders_topic, settings.redis_prefix) == ("orders", "rtdash"):
        return QUERY_NAME
    return f"{QUERY_NAME}[{settings.orders_topic}->{settings.redis_prefix}]"


def read_orders(spark: SparkSession, settings: Settings, starting_offsets: str = "earliest") -> DataFrame:
    """The `orders` topic as a stream of Kafka records (from `starting_offsets` when there is no checkpoint)."""
    return read_topic(spark, settings, settings.orders_topic, max_per_batch=settings.spark_max_orders_per_batch,
                      starting_offsets=starting_offsets)


def invalid_reason(order: Column) -> Column:
    """Why a parsed record is not a usable OrderPaid, or null when it is."""
    return reason(OrderPaid, order,
                  (order["amount_cents"] <= 0, "amount_cents must be positive"),
                  (order["amount_cents"] > MAX_AMOUNT_CENTS, f"amount_cents out of range (over {MAX_AMOUNT_CENTS})"))


def transform(records: DataFrame, *, settings: Settings) -> DataFrame:
    """Kafka records -> one row per distinct order (valid) or per bad record (invalid).

    Stages: parsed (from_json with the contract's schema) -> checked (reason
    for invalid records) -> deduped (order id within the watermark; each
    invalid record keeps a unique key so none is merged away) -> the columns
    the sink needs, with date and minute in RTDASH_TIMEZONE, which must be the
    session time zone (`start` and `build_session` set it).

    Streaming input is deduplicated with `dropDuplicatesWithinWatermark` on the
    Kafka timestamp; Spark refuses that operator on static DataFrames, which
    get the equivalent `dropDuplicates` (tests, backfills).
    """
    require_session_zone(records, settings)
    parsed = records.select(
        "key", "value", "topic", "partition", "offset", F.col("timestamp").alias("kafka_ts"),
        F.from_json(F.col("value").cast("string"), spark_schema(OrderPaid)).alias("order"))
    checked = parsed.withColumn("reason", invalid_reason(F.col("order")))
    keyed = checked.withColumn("dedupe_key", F.when(
        F.col("reason").isNull(), F.col("order.order_id")).otherwise(
        F.concat_ws(":", F.lit("invalid"), F.col("topic"), F.col("partition"), F.col("offset"))))
    if keyed.isStreaming:
        deduped = (keyed.withWatermark("kafka_ts", settings.dedupe_watermark)
                   .dropDuplicatesWithinWatermark(["dedupe_key"]))
    else:
        deduped = keyed.dropDuplicates(["dedupe_key"])
    return deduped.select(
        F.col("reason").isNull().alias("valid"), "reason",
        F.col("order.order_id").alias("order_id"), F.col("order.amount_cents").alias("amount_cents"),
        F.date_format("order.paid_at", "yyyy-MM-dd").alias("date"),
        F.date_format("order.paid_at", "HH:mm").alias("minute"),
        F.unix_millis("order.recorded_at").alias("recorded_ms"),
        "key", "value", "topic", "partition", "offset")


# What the driver needs of each of a batch's orders to sum them per minute.
TOTALS_COLUMNS = ("valid", "date", "minute", "amount_cents")


def minute_totals(orders: Iterable[tuple]) -> tuple[list[MinuteTotal], int]:
    """(count and amount per date and minute of the valid orders, number of invalid records).

    `orders` are rows of `transform`'s output with TOTALS_COLUMNS, in that
    order. Summed here rather than by a Spark aggregation: a batch holds at
    most RTDASH_SPARK_MAX_ORDERS_PER_BATCH rows, and an aggregation's shuffled
    stage would add to every batch, and so to the dashboard's latency (BENCHMARKS.md).
    """
    totals: dict[tuple[str, str], list[int]] = {}
    invalid = 0
    for valid, day, minute, amount_cents in orders:
        if not valid:
            invalid += 1
            continue
        total = totals.setdefault((day, minute), [0, 0])
        total[0] += 1
        total[1] += amount_cents
    return [MinuteTotal(day, minute, count, amount) for (day, minute), (count, amount) in totals.items()], invalid


def last_recorded(rows: Iterable[tuple], today: str) -> str:
    """When the newest payment among the valid orders of `today` was recorded (ISO 8601, UTC, milliseconds),
    '' when there is none; rows have TOTALS_COLUMNS then recorded_ms (the page's payment-to-screen readout)."""
    newest = max((row[4] for row in rows if row[0] and row[1] == today and row[4] is not None), default=None)
    return "" if newest is None else datetime.fromtimestamp(newest / 1000, timezone.utc).isoformat(
        timespec="milliseconds")


class BatchWriter:
    """foreachBatch: one action per batch, dead letters only when there are some.

    The batch is computed once for its per-minute totals; a batch with invalid
    records is computed a second time to write them (rare, so not worth
    caching every batch for).
    """

    def __init__(self, settings: Settings, sink: OrdersSink, checkpoint: CheckpointLog):
        self.settings = settings
        self.sink = sink
        self.checkpoint = checkpoint

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        rows = batch.select(*TOTALS_COLUMNS, "recorded_ms").collect()
        minutes, bad = minute_totals(row[:4] for row in rows)
        if bad:
            write_dead_letters(batch, self.settings.kafka_servers, self.settings.orders_dlq_topic)
        today = datetime.now(self.settings.tz).date().isoformat()
        applied = self.sink.apply(self.checkpoint.batch(batch_id), today, minutes, last_recorded(rows, today))
        log.info("batch %d: %d orders, %d dead letters, %s in %.0f ms", batch_id,
                 sum(m.count for m in minutes), bad, "applied" if applied else "already applied, skipped",
                 (time.perf_counter() - started) * 1000)


def write_orders(orders: DataFrame, settings: Settings, sink: OrdersSink) -> StreamingQuery:
    """Start the streaming write of `transform`'s output: each batch's per-minute totals into `sink`."""
    sink.ensure_today(datetime.now(settings.tz).date().isoformat())  # today's zero before any order
    checkpoint = checkpoint_location(settings, "orders")
    return (orders.writeStream
            .queryName(query_name(settings))
            .outputMode("append")
            .option("checkpointLocation", checkpoint)
            .trigger(processingTime=f"{settings.spark_trigger_seconds} seconds")
            .foreachBatch(BatchWriter(settings, sink, CheckpointLog(orders.sparkSession, checkpoint)))
            .start())


def start(spark: SparkSession, settings: Settings) -> StreamingQuery:
    """Start the query in `spark` (the job's main, the stack runner and the tests use this).

    Sets the session's time zone and shuffle partitions from `settings` first;
    a restarted query keeps the shuffle partitions of its checkpoint.
    """
    spark.conf.set("spark.sql.session.timeZone", settings.timezone)
    spark.conf.set("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
    # No extra batch after each data batch just to move the watermark and evict dedupe state:
    # it would run between an order and the next one, adding a whole batch to their latency.
    # Eviction happens with the next batch that has data instead.
    spark.conf.set("spark.sql.streaming.noDataMicroBatches.enabled", "false")
    client = redis_client(settings)
    sink = OrdersSink(client, settings.redis_prefix, query_name(settings), history_size=settings.push_history_size,
                      history_seconds=settings.push_history_seconds)
    # events (from where Redis says this query got to, when its checkpoint is new)
    #   -> parsed, checked, deduped orders -> per-minute totals in Redis
    records = read_orders(spark, settings, resume_offsets(client, settings.redis_prefix, query_name(settings)))
    return write_orders(transform(records, settings=settings), settings, sink)


def main() -> None:
    run_job([QuerySpec("orders", start)], app_name="rtdash-orders", description=__doc__)


if __name__ == "__main__":
    main()
