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
sink applies each batch id once, so a batch Spark replays after a crash does
not count twice. (Spark drops a record whose Kafka timestamp is already
behind the watermark, i.e. more than RTDASH_DEDUPE_WATERMARK older than the
newest one seen: keep producer clocks within that.) Redis keys and channel
shapes: `jobs/redis_sink.py`. Events that are not a valid OrderPaid go to the dead-letter
topic (RTDASH_ORDERS_DLQ_TOPIC) with their original key and value and headers
`rtdash.error` (the reason, e.g. "amount_cents must be positive") and
`rtdash.source` (topic:partition:offset of the original); the job keeps
running. Dead letters are at least once: a replayed batch may repeat them.

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
RTDASH_DEDUPE_WATERMARK, RTDASH_HOME
(checkpoint in <home>/checkpoints/orders), RTDASH_BIND_HOST and
RTDASH_ORDERS_JOB_HEALTH_PORT (GET /healthz: query status, last batch id, its
input rows and how long it took, since the batch time is most of the dashboard's
latency). Under spark-submit its --master and --jars apply. SIGTERM or Ctrl-C
stops the query and the session.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from functools import reduce
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis
from pyspark.sql import Column, DataFrame, SparkSession, functions as F
from pyspark.sql.streaming import StreamingQuery

from jobs.redis_sink import MinuteTotal, OrdersSink
from jobs.spark import KAFKA_SOURCE_OPTIONS
from rtdash.contracts import OrderPaid, required_fields, spark_schema
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


def read_orders(spark: SparkSession, settings: Settings) -> DataFrame:
    """The `orders` topic as a stream of Kafka records."""
    return (spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", settings.kafka_servers)
            .option("subscribe", settings.orders_topic)
            .option("startingOffsets", "earliest")
            .option("failOnDataLoss", "false")
            .option("maxOffsetsPerTrigger", str(settings.spark_max_orders_per_batch))
            # A broker outage must not kill the query: keep asking for offsets until it is back.
            .option("fetchOffset.numRetries", "1000000")
            .option("fetchOffset.retryIntervalMs", "1000")
            .options(**KAFKA_SOURCE_OPTIONS)
            .load())


def invalid_reason(order: Column) -> Column:
    """Why a parsed record is not a usable OrderPaid, or null when it is."""
    fields = required_fields(OrderPaid)
    checks = [(order.isNull() | F.coalesce(*[order[name].cast("string") for name in fields]).isNull(),
               "not a JSON OrderPaid object")]
    checks += [(order[name].isNull(), f"missing or mistyped field {name}") for name in fields]
    checks += [(order["amount_cents"] <= 0, "amount_cents must be positive")]
    first, *rest = checks
    return reduce(lambda acc, check: acc.when(*check), rest, F.when(*first))


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
    zone = records.sparkSession.conf.get("spark.sql.session.timeZone")
    if zone != settings.timezone:
        raise ValueError(f"spark.sql.session.timeZone is {zone!r} but RTDASH_TIMEZONE is "
                         f"{settings.timezone!r}: days and minutes would be wrong")
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
        "key", "value", "topic", "partition", "offset")


# What the driver needs of each of a batch's orders to sum them per minute.
TOTALS_COLUMNS = ("valid", "date", "minute", "amount_cents")


def minute_totals(orders: Iterable[tuple]) -> tuple[list[MinuteTotal], int]:
    """(count and amount per date and minute of the valid orders, number of invalid records).

    `orders` are rows of `transform`'s output with TOTALS_COLUMNS, in that
    order. Summed here rather than by a Spark aggregation: a batch holds at
    most RTDASH_SPARK_MAX_ORDERS_PER_BATCH rows, and the aggregation's shuffle
    stage cost each batch 75 ms of the dashboard's latency (BENCHMARKS.md).
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


def dead_letters(orders: DataFrame) -> DataFrame:
    """Invalid records as Kafka sink rows: original key and value, reason in headers."""
    return orders.filter(~F.col("valid")).select(
        "key", "value",
        F.array(
            F.struct(F.lit("rtdash.error").alias("key"), F.col("reason").cast("binary").alias("value")),
            F.struct(F.lit("rtdash.source").alias("key"),
                     F.concat_ws(":", "topic", "partition", "offset").cast("binary").alias("value")),
        ).alias("headers"))


class BatchWriter:
    """foreachBatch: one action per batch, dead letters only when there are some.

    The batch is computed once for its per-minute totals; a batch with invalid
    records is computed a second time to write them (rare, so not worth
    caching every batch for).
    """

    def __init__(self, settings: Settings, sink: OrdersSink):
        self.settings = settings
        self.sink = sink

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        minutes, bad = minute_totals(batch.select(*TOTALS_COLUMNS).collect())
        if bad:
            (dead_letters(batch).write.format("kafka")
             .option("kafka.bootstrap.servers", self.settings.kafka_servers)
             .option("topic", self.settings.orders_dlq_topic).save())
        today = datetime.now(self.settings.tz).date().isoformat()
        applied = self.sink.apply(batch_id, today, minutes)
        log.info("batch %d: %d orders, %d dead letters, %s in %.0f ms", batch_id,
                 sum(m.count for m in minutes), bad, "applied" if applied else "already applied, skipped",
                 (time.perf_counter() - started) * 1000)


def write_orders(orders: DataFrame, settings: Settings, sink: OrdersSink) -> StreamingQuery:
    """Start the streaming write of `transform`'s output: each batch's per-minute totals into `sink`."""
    sink.ensure_today(datetime.now(settings.tz).date().isoformat())  # today's zero before any order
    writer = (orders.writeStream
              .queryName(query_name(settings))
              .outputMode("append")
              .option("checkpointLocation", str((settings.checkpoints_dir / "orders").resolve()))
              .foreachBatch(BatchWriter(settings, sink)))
    if settings.spark_trigger_seconds > 0:
        writer = writer.trigger(processingTime=f"{settings.spark_trigger_seconds} seconds")
    return writer.start()


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
    sink = OrdersSink(redis.Redis.from_url(settings.redis), settings.redis_prefix)
    # events -> parsed, checked, deduped orders -> per-minute totals in Redis
    orders = transform(read_orders(spark, settings), settings=settings)
    return write_orders(orders, settings, sink)


# --- running as a service ------------------------------------------------------------------

class JobState:
    """What the health endpoint reports; written by the supervisor, read by the HTTP thread."""

    def __init__(self) -> None:
        self.query: StreamingQuery | None = None
        self.restarts = 0
        self.last_error: str | None = None

    def health(self) -> dict:
        query = self.query
        progress = query.lastProgress if query is not None else None
        active = query is not None and query.isActive
        name = query.name if query is not None else QUERY_NAME
        return {"status": "ok" if active else "starting", "service": "orders_job", "query": name,
                "active": active, "query_status": query.status["message"] if active else None,
                "restarts": self.restarts, "last_error": self.last_error,
                "last_batch": progress["batchId"] if progress else None,
                "last_input_rows": progress["numInputRows"] if progress else None,
                "last_batch_ms": progress["durationMs"].get("triggerExecution") if progress else None}


def serve_health(state: JobState, host: str, port: int) -> ThreadingHTTPServer:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            health = state.health()
            body = json.dumps(health).encode()
            if self.path != "/healthz":
                self.send_response(404)
            else:
                self.send_response(200 if health["active"] else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Health)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def supervise(spark: SparkSession, settings: Settings, state: JobState, stop: threading.Event) -> None:
    """Run the query until `stop`; if it fails (or cannot start), restart it from the checkpoint with backoff."""
    backoff = 1.0
    while not stop.is_set():
        started = time.monotonic()
        try:
            state.query = start(spark, settings)
        except Exception as exc:  # noqa: BLE001 - e.g. Redis not up yet: retry like a failed query
            state.last_error = f"cannot start: {exc}"
        else:
            log.info("query %s started (checkpoint %s)", QUERY_NAME, settings.checkpoints_dir / "orders")
            while not stop.is_set() and state.query.isActive:
                stop.wait(0.5)  # supervision only; the data path is Spark's own
            if stop.is_set():
                try:
                    state.query.stop()
                except Exception as exc:  # noqa: BLE001 - stopTimeout passed; the session stop ends it
                    log.warning("query %s did not stop in time: %s", QUERY_NAME, str(exc).splitlines()[0])
                return
            error = state.query.exception()
            state.last_error = str(error) if error else "query stopped"
        state.restarts += 1
        if time.monotonic() - started > 60:
            backoff = 1.0  # it ran for a while: this is a new failure, not the same one again
        log.error("query %s failed, restarting from the checkpoint in %.0fs: %s", QUERY_NAME, backoff,
                  state.last_error.splitlines()[0])
        stop.wait(backoff)
        backoff = min(backoff * 2, 30.0)


def main() -> None:
    from jobs.spark import build_session
    from rtdash.logs import setup_logging

    parser = argparse.ArgumentParser(
        description="Today's paid orders, from Kafka to Redis (other settings: RTDASH_*, see the module docstring).")
    parser.add_argument("--trigger-seconds", type=float, default=None,
                        help="micro-batch interval; 0 starts the next batch as soon as data is there")
    args = parser.parse_args()
    setup_logging()
    settings = Settings()
    if args.trigger_seconds is not None:
        settings = settings.model_copy(update={"spark_trigger_seconds": args.trigger_seconds})
    spark = build_session(settings, "rtdash-orders")
    state = JobState()
    health = serve_health(state, settings.bind_host, settings.jobs_health_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("orders job running; health on http://%s:%d/healthz", settings.bind_host,
             settings.jobs_health_port)
    try:
        supervise(spark, settings, state, stop)
    finally:
        health.shutdown()
        spark.stop()
        log.info("orders job stopped")


if __name__ == "__main__":
    main()
