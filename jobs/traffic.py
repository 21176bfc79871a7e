"""Traffic job: page views, visitors, logged-in users, hot search terms and route health, live.

Reads the `gateway` topic (one GatewayRequest per request through the
gateway) and after every micro-batch merges the batch's figures into the
day's figures in Redis, publishing the channels of DESIGN.md "Traffic
analytics channels": traffic.today, traffic.per_minute, search.terms.today,
search.terms.recent, search.products.today and routes.per_minute. The rules
(bot, page view, visitor, logged-in user, search, term normalisation) are
those of rtdash/traffic_rules.py, here as Spark expressions.

Event time. Every figure is counted at the event's `started_at`, by day and
minute in RTDASH_TIMEZONE. The job's clock is the newest `started_at` it has
counted; "today" is the clock's day, and the recent terms are those of the ten
minutes up to the clock's minute. An event whose minute starts more than
RTDASH_TRAFFIC_LATENESS_SECONDS (default 300) before the clock's minute is late:
it is counted in the `late_events` figure of the job's health (Redis
`<p>:traffic:late`), not in the dashboard's figures. An event that starts more
than RTDASH_TRAFFIC_MAX_FUTURE_SECONDS after its record was written to Kafka is
out of range and a dead letter.

Where the state lives. Not in Spark's state store: a batch is parsed once and
aggregated in one stage into a few "figure" rows (per minute, per route and
latency bucket, per visitor and minute, per user, per term and minute, per
product), collected to the driver and merged into Redis by one Lua script
(jobs/lua/traffic.lua) under the exactly-once guard of jobs/checkpoint.py. So
the job keeps no state that grows with the day in the JVM, a restart resumes
exactly, and the state that does grow is evicted in event time (yesterday's
minute detail once the lateness has passed, whole days after
RTDASH_TRAFFIC_KEEP_DAYS). Unique counts are Redis HyperLogLogs (standard
error 0.81%; PFADD is idempotent, so a replayed batch cannot inflate them);
latency percentiles come from a DDSketch-style log histogram with 1% relative
accuracy, merged by adding bucket counts. Redis layout: jobs/traffic_sink.py.

Dead letters: records that are not JSON, miss a required field, have a wrong
type or a value out of range go to RTDASH_GATEWAY_DLQ_TOPIC with their
original key and value and headers `rtdash.error` and `rtdash.source`.

Usage:
    python -m jobs.traffic [--trigger-seconds S]
    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[2]' \
        --jars "$(ls "$PWD"/.jars/spark/*.jar | paste -sd,)" jobs/traffic.py

Arguments:
    --trigger-seconds S   micro-batch interval (default RTDASH_SPARK_TRIGGER_SECONDS)

Settings (environment, see README): RTDASH_KAFKA_BOOTSTRAP / RTDASH_KAFKA_PORT,
RTDASH_REDIS_URL, RTDASH_REDIS_PREFIX, RTDASH_GATEWAY_TOPIC,
RTDASH_GATEWAY_DLQ_TOPIC, RTDASH_TIMEZONE, RTDASH_TRAFFIC_LATENESS_SECONDS,
RTDASH_TRAFFIC_MAX_FUTURE_SECONDS, RTDASH_TRAFFIC_KEEP_DAYS,
RTDASH_SPARK_MAX_GATEWAY_EVENTS_PER_BATCH, RTDASH_HOME (checkpoint in
<home>/checkpoints/traffic), RTDASH_JOBS_HEALTH_PORT. `python -m jobs` runs
this query with the orders and alert queries in one Spark application.
"""
from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timezone
from functools import reduce

import redis
from pyspark.sql import Column, DataFrame, SparkSession, functions as F, types as T
from pyspark.sql.streaming import StreamingQuery

from jobs.checkpoint import CheckpointLog, resume_offsets
from jobs.dead_letters import reason, write_dead_letters
from jobs.service import QuerySpec, run_job
from jobs.spark import read_topic
from jobs.traffic_sink import GAMMA, TrafficSink
from rtdash.contracts import GatewayRequest, spark_schema
from rtdash.traffic_rules import BOT_WORDS, ORDER_CENTER_PREFIX
from rtdash.settings import Settings

log = logging.getLogger("rtdash.jobs.traffic")

QUERY_NAME = "traffic"
# A request longer than a day is not a measurement: out of range.
MAX_TOTAL_MS = 86_400_000.0
MIN_MS = 0.001  # smaller latencies (0 included) share the DDSketch bucket of this one
_LN_GAMMA = math.log(GAMMA)


def query_name(settings: Settings) -> str:
    """`traffic`, qualified when the job reads another topic or writes another prefix (as for orders)."""
    if (settings.gateway_topic, settings.redis_prefix) == ("gateway", "rtdash"):
        return QUERY_NAME
    return f"{QUERY_NAME}[{settings.gateway_topic}->{settings.redis_prefix}]"


# Optional text fields the job never reads. Left out of the parse: the JSON reader then skips
# them instead of copying them (the headers map is a third of a record). A text field takes
# any JSON value, so leaving one out cannot change which records are valid.
UNREAD_FIELDS = frozenset({"headers", "extras", "referrer", "client_ip", "product_id"})


def parse_schema() -> T.StructType:
    """GatewayRequest's schema as the job parses it: maps as raw JSON text, unread text fields left out.

    The job needs only to know that `query` is there; building a map per event
    would be most of the parsing cost.
    """
    schema = spark_schema(GatewayRequest)
    return T.StructType([T.StructField(f.name, T.StringType()) if isinstance(f.dataType, T.MapType) else f
                         for f in schema.fields if f.name not in UNREAD_FIELDS])


def read_gateway(spark: SparkSession, settings: Settings, starting_offsets: str = "earliest") -> DataFrame:
    """The `gateway` topic as a stream of Kafka records."""
    return read_topic(spark, settings, settings.gateway_topic,
                      max_per_batch=settings.spark_max_gateway_events_per_batch, starting_offsets=starting_offsets,
                      # One Spark task per core even when the topic has fewer partitions (the local stack's
                      # has one): Spark splits each partition's offset range, and every core parses.
                      minPartitions=str(spark.sparkContext.defaultParallelism))


def invalid_reason(e: Column, written_at: Column, max_future_s: int) -> Column:
    """Why a parsed record is not a usable GatewayRequest, or null when it is.

    "In the future" is measured against the record's own Kafka timestamp (when
    it was written): a request cannot start after its event was written, a
    replay judges a record as its first reading did, and the expression stays
    the same from batch to batch (Spark compiles it once).
    """
    return reason(
        GatewayRequest, e,
        (~e["status"].between(100, 599), "status out of range (100-599)"),
        (F.isnan(e["total_ms"]) | ~e["total_ms"].between(0, MAX_TOTAL_MS), f"total_ms out of range (0-{MAX_TOTAL_MS:.0f})"),
        (F.unix_millis(e["started_at"]) > F.unix_millis(written_at) + F.lit(max_future_s * 1000),
         "started_at is in the future"))


def normalised_term(term: Column) -> Column:
    """NFKC, case fold, trim, collapse whitespace (rtdash.traffic_rules.normalise_search_term); null if blank.

    ICU4J, which Spark ships for collations, has both steps as static methods,
    so they run on the JVM through `reflect`: no Python worker on the hot path.
    """
    nfkc = F.call_function("reflect", F.lit("com.ibm.icu.text.Normalizer"), F.lit("compose"), term, F.lit(True))
    folded = F.call_function("reflect", F.lit("com.ibm.icu.lang.UCharacter"), F.lit("foldCase"), nfkc, F.lit(True))
    tidy = F.regexp_replace(F.regexp_replace(folded, r"(?U)\s+", " "), r"^ | $", "")
    return F.when(term.isNotNull() & (tidy != ""), tidy)


def classify(records: DataFrame, *, settings: Settings) -> DataFrame:
    """Kafka records -> one row per event with its reason (if bad), day, minute and what it counts as.

    Stateless and the same for every micro-batch: the traffic query runs it as
    its streaming plan, so Spark plans and compiles it once; what depends on
    the job's clock (lateness) is added per batch by `with_lateness`.
    """
    zone = records.sparkSession.conf.get("spark.sql.session.timeZone")
    if zone != settings.timezone:
        raise ValueError(f"spark.sql.session.timeZone is {zone!r} but RTDASH_TIMEZONE is "
                         f"{settings.timezone!r}: days and minutes would be wrong")
    e = F.col("e")
    parsed = records.select("key", "value", "topic", "partition", "offset", "timestamp",
                            F.from_json(F.col("value").cast("string"), parse_schema()).alias("e"))
    checked = parsed.withColumn("reason", invalid_reason(e, F.col("timestamp"),
                                                         settings.traffic_max_future_seconds))
    started_ms = F.unix_millis(e["started_at"])
    agent = F.lower(e["user_agent"])
    bot = F.coalesce(e["bot"], F.lit(False)) | F.coalesce(
        reduce(lambda any_, word: any_ | agent.contains(word), BOT_WORDS[1:], agent.contains(BOT_WORDS[0])),
        F.lit(False))
    page_view = (~bot & (e["method"] == "GET") & e["status"].between(200, 399)
                 & ~e["path"].startswith(ORDER_CENTER_PREFIX))
    return checked.select(
        "key", "value", "topic", "partition", "offset", "reason",
        F.date_format(e["started_at"], "yyyy-MM-dd").alias("date"),
        F.date_format(e["started_at"], "HH:mm").alias("minute"),
        started_ms.alias("started_ms"),
        (F.floor(started_ms / 60_000) * 60_000).alias("minute_ms"),
        bot.alias("bot"),
        page_view.alias("page_view"),
        (e["status"] >= 500).alias("error"),
        e["route"].alias("route"),
        F.ceil(F.log(F.greatest(e["total_ms"], F.lit(MIN_MS))) / F.lit(_LN_GAMMA)).cast("int").alias("bucket"),
        e["visitor_id"].alias("visitor_id"),
        F.when(~bot & (e["status"] < 400), e["user_id"]).alias("user_id"),
        F.when(page_view, normalised_term(e["search_term"])).alias("term"),
        e["result_product_ids"].alias("product_ids"))


def late_before_ms(clock_ms: int | None, lateness_s: int) -> int | None:
    """Events of minutes that start before this are late: the clock's minute, less the lateness.

    Whole minutes, so the bound (a constant in the batch's compiled code) moves
    once a minute, not with every batch.
    """
    if clock_ms is None:
        return None
    return clock_ms // 60_000 * 60_000 - lateness_s * 1000


def with_lateness(events: DataFrame, late_before: int | None) -> DataFrame:
    """`classify`'s rows with `late`: a usable event of a minute before `late_before`."""
    late = F.lit(False) if late_before is None else F.coalesce(F.col("minute_ms") < F.lit(late_before),
                                                                 F.lit(False))
    return events.withColumn("late", late)


# One row of a batch's figures; `kind` says which columns mean something (see `facts`).
FIGURE_COLUMNS = ("kind", "date", "minute", "name", "bucket", "n", "errors", "page_views", "searches", "bots",
                  "latest_ms")


def _fact(kind: str, *, date=None, minute=None, name=None, bucket=None, n=1, errors=0, page_views=0,
          searches=0, bots=0, latest_ms=None) -> Column:
    def lit(value, type_):
        return (value if isinstance(value, Column) else F.lit(value)).cast(type_)
    return F.struct(F.lit(kind).alias("kind"), lit(date, "string").alias("date"),
                    lit(minute, "string").alias("minute"), lit(name, "string").alias("name"),
                    lit(bucket, "int").alias("bucket"), lit(n, "long").alias("n"),
                    lit(errors, "long").alias("errors"), lit(page_views, "long").alias("page_views"),
                    lit(searches, "long").alias("searches"), lit(bots, "long").alias("bots"),
                    lit(latest_ms, "long").alias("latest_ms"))


class Facts:
    """Each event as the facts it contributes, one row per fact (exploded), ready to be summed.

    kind      key columns              counts
    invalid   -                        n: records for the dead letters
    late      date                     n: events beyond the lateness
    minute    date, minute             n: requests, errors (5xx), page_views, searches, bots; latest_ms
    route     date, minute, name, bucket  n: requests in this latency bucket, errors
    visitor   date, minute, name       (distinct visitor ids of page views)
    user      date, name               (distinct logged-in user ids)
    term      date, minute, name       n: searches of the normalised term
    product   date, name               n: searches whose results held the product
    Bots give only a `minute` fact with bots = 1.

    The expressions are built once (the traffic query keeps one instance):
    building them through py4j cost more than a small batch's whole Spark job.
    Input: `with_lateness`'s rows.
    """

    def __init__(self) -> None:
        c = F.col
        counted = c("reason").isNull() & ~c("late")
        human = counted & ~c("bot")
        searched = human & c("term").isNotNull()
        as_int = lambda flag: flag.cast("int")  # noqa: E731
        self._each = F.explode(F.array(
            F.when(c("reason").isNotNull(), _fact("invalid")),
            F.when(c("reason").isNull() & c("late"), _fact("late", date=c("date"))),
            F.when(counted, _fact("minute", date=c("date"), minute=c("minute"), n=as_int(~c("bot")),
                                  errors=as_int(~c("bot") & c("error")), page_views=as_int(c("page_view")),
                                  searches=as_int(c("term").isNotNull()), bots=as_int(c("bot")),
                                  latest_ms=c("started_ms"))),
            F.when(human, _fact("route", date=c("date"), minute=c("minute"), name=c("route"), bucket=c("bucket"),
                                errors=as_int(c("error")))),
            F.when(human & c("page_view"), _fact("visitor", date=c("date"), minute=c("minute"),
                                                 name=c("visitor_id"))),
            F.when(human & c("user_id").isNotNull(), _fact("user", date=c("date"), name=c("user_id"))),
            F.when(searched, _fact("term", date=c("date"), minute=c("minute"), name=c("term"))),
            F.when(searched, _fact("product", date=c("date"))))).alias("f")  # one per product, below
        self._products = F.array_distinct(c("product_ids")).alias("products")
        self._present = c("f").isNotNull()
        # No lambda functions (filter, transform) here: Spark runs a plan node holding one without
        # code generation, and every event passes this one several times (BENCHMARKS.md).
        self._per_product = F.explode_outer(F.when(c("f.kind") == "product", c("products"))).alias("product")
        self._kept = (c("f.kind") != "product") | c("product").isNotNull()
        self._columns = [(F.coalesce(c("product"), c("f.name")) if col == "name" else c(f"f.{col}")).alias(col)
                         for col in FIGURE_COLUMNS]

    def __call__(self, events: DataFrame) -> DataFrame:
        exploded = events.select(self._each, self._products).where(self._present)
        return exploded.select("f", self._per_product).where(self._kept).select(*self._columns)


def figures(fact_rows: DataFrame) -> DataFrame:
    """The facts summed per kind and key: a batch's figures, a few rows per minute, route, term..."""
    keys = ["kind", "date", "minute", "name", "bucket"]
    return fact_rows.groupBy(*keys).agg(*[F.sum(col).alias(col) for col in FIGURE_COLUMNS[5:10]],
                                        F.max("latest_ms").alias("latest_ms"))


def transform(records: DataFrame, *, settings: Settings, clock_ms: int | None) -> DataFrame:
    """Kafka records of one batch -> its figures (FIGURE_COLUMNS): classified -> late or not -> facts -> summed.

    The query runs the same stages, split: `classify` as its streaming plan,
    the rest per micro-batch (BatchWriter).
    """
    late_before = late_before_ms(clock_ms, settings.traffic_lateness_seconds)
    return figures(Facts()(with_lateness(classify(records, settings=settings), late_before)))


class BatchWriter:
    """foreachBatch: the batch's figures in one Spark job, merged into Redis by one script.

    The batch is read once by that job; only a batch with bad records is read a
    second time, to write its dead letters (rare).
    """

    def __init__(self, settings: Settings, sink: TrafficSink, checkpoint: CheckpointLog):
        self.settings = settings
        self.sink = sink
        self.checkpoint = checkpoint
        self.facts = Facts()

    def __call__(self, events: DataFrame, batch_id: int) -> None:
        """`events` is the batch as `classify` left it."""
        started = time.perf_counter()
        late_before = late_before_ms(self.sink.clock_ms(), self.settings.traffic_lateness_seconds)
        rows = figures(self.facts(with_lateness(events, late_before))).toArrow().to_pylist()
        bad = sum(r["n"] for r in rows if r["kind"] == "invalid")
        if bad:
            write_dead_letters(events, self.settings.kafka_servers, self.settings.gateway_dlq_topic)
        result = self.sink.apply(self.checkpoint.batch(batch_id), rows)
        log.info("batch %d: %d events counted, %d late, %d dead letters, %s in %.0f ms", batch_id,
                 result.counted, result.late, bad, "applied" if result.applied else "already applied, skipped",
                 (time.perf_counter() - started) * 1000)


def checkpoint_location(settings: Settings) -> str:
    return str((settings.checkpoints_dir / "traffic").resolve())


def start(spark: SparkSession, settings: Settings) -> StreamingQuery:
    """Start the traffic query in `spark` (the job's main, `python -m jobs` and the tests use this)."""
    spark.conf.set("spark.sql.session.timeZone", settings.timezone)
    client = redis.Redis.from_url(settings.redis)
    name = query_name(settings)
    sink = TrafficSink(client, settings, name)
    checkpoint = checkpoint_location(settings)
    # gateway records (from where Redis says this query got to, when its checkpoint is new)
    #   -> classified events -> per batch: late or not -> facts -> figures -> merged into Redis
    records = read_gateway(spark, settings, resume_offsets(client, settings.redis_prefix, name))
    events = classify(records, settings=settings)
    writer = (events.writeStream
              .queryName(name)
              .outputMode("append")
              .option("checkpointLocation", checkpoint)
              .foreachBatch(BatchWriter(settings, sink, CheckpointLog(spark, checkpoint))))
    if settings.spark_trigger_seconds > 0:
        writer = writer.trigger(processingTime=f"{settings.spark_trigger_seconds} seconds")
    return writer.start()


def health_figures(settings: Settings) -> dict:
    """The traffic query's entry in /healthz: its event-time clock and the late events not counted."""
    client = redis.Redis.from_url(settings.redis, socket_timeout=2)
    try:
        clock, late = client.mget(f"{settings.redis_prefix}:traffic:clock", f"{settings.redis_prefix}:traffic:late")
    finally:
        client.close()
    return {"clock": datetime.fromtimestamp(int(clock) / 1000, timezone.utc).isoformat() if clock else None,
            "late_events": int(late or 0)}


SPEC = QuerySpec("traffic", start, health_figures)


def main() -> None:
    run_job([SPEC], app_name="rtdash-traffic", description=__doc__)


if __name__ == "__main__":
    main()
