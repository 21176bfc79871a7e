"""Traffic job: page views, visitors, logged-in users, hot search terms and route health, live.

Reads the `gateway` topic (one GatewayRequest per request through the
gateway) and after every micro-batch merges the batch's figures into the
day's figures in Redis, publishing the channels of DESIGN.md "Traffic
analytics channels": traffic.today, traffic.per_minute, search.terms.today,
search.terms.recent, search.products.today and routes.per_minute.

The data flow, one module a stage:

    gateway records (jobs.spark.read_topic)
      -> classified events (jobs/traffic_events.py: the rules of
         rtdash/traffic_rules.py as Spark expressions; the query's streaming plan)
      -> per batch: late or not -> facts -> figures (jobs/traffic_figures.py)
      -> merged into Redis by one script, channels published (jobs/traffic_sink.py)

Event time. Every figure is counted at the event's `started_at`, by day and
minute in RTDASH_TIMEZONE. The job's clock is the newest `started_at` it has
counted; "today" is the clock's day, and the recent terms are those of the ten
minutes up to the clock's minute. Events later than RTDASH_TRAFFIC_LATENESS_SECONDS
behind the newest event counted from their own Kafka partition are counted in
the `late_events` figure of the job's health (Redis `<p>:traffic:late`), not in
the dashboard's figures: so a backlog read over several partitions, which
advance by offsets and not in event time, counts exactly what one partition would.

Where the state lives. Not in Spark's state store: a batch is parsed once and
aggregated in one stage into a few figure rows, collected to the driver and
merged into Redis under the exactly-once guard of jobs/checkpoint.py. So the
job keeps no state that grows with the day in the JVM, a restart resumes
exactly, and the state that does grow is evicted in event time (yesterday's
minute detail once the lateness has passed, whole days after
RTDASH_TRAFFIC_KEEP_DAYS). Unique counts are Redis HyperLogLogs (standard
error 0.81%; PFADD is idempotent, so a replayed batch cannot inflate them);
latency percentiles come from a DDSketch-style log histogram with 1% relative
accuracy, merged by adding bucket counts.

Dead letters: records that are not JSON, miss a required field, have a wrong
type or a value out of range (an event starting more than
RTDASH_TRAFFIC_MAX_FUTURE_SECONDS after its record was written included) go to
RTDASH_GATEWAY_DLQ_TOPIC with their original key and value and headers
`rtdash.error` and `rtdash.source`.

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
import time
from datetime import datetime, timedelta, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from jobs.checkpoint import CheckpointLog, checkpoint_location, resume_offsets
from jobs.dead_letters import write_dead_letters
from jobs.service import QuerySpec, run_job
from jobs.spark import read_topic
from jobs.traffic_events import classify
from jobs.traffic_figures import Facts, figures, late_before_ms, with_lateness
from jobs.traffic_sink import TrafficSink
from rtdash.contracts import GatewayRequest, to_json
from rtdash.redis_client import redis_client
from rtdash.settings import Settings

log = logging.getLogger("rtdash.jobs.traffic")

QUERY_NAME = "traffic"
WARMED_UP = "rtdash.traffic.warmedUp"   # a session conf flag: the warm-up ran in this application
WARM_UP_EVENTS = 2_000                  # per warm-up batch: about a second of a busy shop's requests


def query_name(settings: Settings) -> str:
    """`traffic`, qualified when the job reads another topic or writes another prefix (as for orders)."""
    if (settings.gateway_topic, settings.redis_prefix) == ("gateway", "rtdash"):
        return QUERY_NAME
    return f"{QUERY_NAME}[{settings.gateway_topic}->{settings.redis_prefix}]"


def read_gateway(spark: SparkSession, settings: Settings, starting_offsets: str = "earliest") -> DataFrame:
    """The `gateway` topic as a stream of Kafka records."""
    return read_topic(spark, settings, settings.gateway_topic,
                      max_per_batch=settings.spark_max_gateway_events_per_batch, starting_offsets=starting_offsets,
                      # One Spark task per core even when the topic has fewer partitions than the application
                      # has cores: Spark splits each partition's offset range, and every core parses.
                      minPartitions=str(spark.sparkContext.defaultParallelism))


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
        late_before = {partition: late_before_ms(ms, self.settings.traffic_lateness_seconds)
                       for partition, ms in self.sink.partition_clocks().items()}
        rows = figures(self.facts(with_lateness(events, late_before))).toArrow().to_pylist()
        bad = sum(r["n"] for r in rows if r["kind"] == "invalid")
        if bad:
            write_dead_letters(events, self.settings.kafka_servers, self.settings.gateway_dlq_topic)
        result = self.sink.apply(self.checkpoint.batch(batch_id), rows)
        log.info("batch %d: %d events counted, %d late, %d dead letters, %s in %.0f ms", batch_id,
                 result.counted, result.late, bad, "applied" if result.applied else "already applied, skipped",
                 (time.perf_counter() - started) * 1000)


def write_traffic(events: DataFrame, settings: Settings, sink: TrafficSink) -> StreamingQuery:
    """Start the streaming write of `classify`'s output: each batch's figures into `sink`."""
    checkpoint = checkpoint_location(settings, "traffic")
    writer = BatchWriter(settings, sink, CheckpointLog(events.sparkSession, checkpoint))
    warm_up(events.sparkSession, settings, writer.facts)
    return (events.writeStream
            .queryName(query_name(settings))
            .outputMode("append")
            .option("checkpointLocation", checkpoint)
            .trigger(processingTime=f"{settings.spark_trigger_seconds} seconds")
            .foreachBatch(writer)
            .start())


def made_up_requests(n: int, now: datetime) -> list[GatewayRequest]:
    """`n` gateway events of every kind the job counts (page views, searches with results, bots, 404s, 5xx,
    logged-in users, order-centre calls), for the warm-up: none of them reaches Redis."""
    agents = ("Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (iPhone)", "Googlebot/2.1", "Mozilla/5.0 (Macintosh)")
    requests = []
    for i in range(n):
        search = i % 3 == 0
        path = ("/search" if search else f"/products/p{i % 97}" if i % 3 == 1 else
                "/order_center/notify" if i % 29 == 0 else "/")
        requests.append(GatewayRequest(
            request_id=f"warm-up-{i}", started_at=now - timedelta(milliseconds=i), method="GET" if i % 17 else "POST",
            path=path, route=path.split("/")[1] or "home", query={"q": [f"Term {i % 53}"]} if search else {},
            status=(404 if i % 23 == 0 else 503 if i % 41 == 0 else 200), request_bytes=300, response_bytes=2000 + i,
            total_ms=1.5 + (i * 7919) % 400, gateway_ms=0.4, visitor_id=f"v{i % 613}", source="proxy",
            user_id=f"u{i % 89}" if i % 4 == 0 else None, user_agent=agents[i % len(agents)],
            search_term=f"  Term  {i % 53}" if search else None,
            result_product_ids=[f"p{(i + k) % 97}" for k in range(i % 12)] if search else None))
    return requests


def warm_up(spark: SparkSession, settings: Settings, facts: Facts) -> None:
    """Made-up events through a batch's whole Spark job (parse, classify, facts, figures, Arrow), before the
    stream starts, so the query reports healthy only once its batches are fast.

    A fresh JVM runs its first small batches several times slower than a warm one, and its
    compiler threads take a core for a minute or more: the first minute of page views
    would reach the dashboard seconds late (BENCHMARKS.md, traffic_freshness).
    Once per Spark application: a restarted query finds the JVM warm.
    """
    if settings.traffic_warm_up_batches <= 0 or spark.conf.get(WARMED_UP, "false") == "true":
        return
    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    records = spark.createDataFrame(
        [(r.key(), to_json(r), settings.gateway_topic, i % 3, i, now)
         for i, r in enumerate(made_up_requests(WARM_UP_EVENTS, now))],
        "key binary, value binary, topic string, partition int, offset long, timestamp timestamp").cache()
    events = classify(records, settings=settings)
    late_before = {p: late_before_ms(int(now.timestamp() * 1000), settings.traffic_lateness_seconds) for p in range(3)}
    for _ in range(settings.traffic_warm_up_batches):
        figures(facts(with_lateness(events, late_before))).toArrow().to_pylist()
    records.unpersist()
    spark.conf.set(WARMED_UP, "true")
    log.info("warmed up: %d batches of %d made-up events in %.1f s", settings.traffic_warm_up_batches,
             WARM_UP_EVENTS, time.perf_counter() - started)


def start(spark: SparkSession, settings: Settings) -> StreamingQuery:
    """Start the traffic query in `spark` (the job's main, `python -m jobs` and the tests use this)."""
    spark.conf.set("spark.sql.session.timeZone", settings.timezone)
    client = redis_client(settings)
    name = query_name(settings)
    # gateway records (from where Redis says this query got to, when its checkpoint is new)
    #   -> classified events -> per batch: late or not -> facts -> figures -> merged into Redis
    records = read_gateway(spark, settings, resume_offsets(client, settings.redis_prefix, name))
    return write_traffic(classify(records, settings=settings), settings, TrafficSink(client, settings, name))


def health_figures(settings: Settings) -> dict:
    """The traffic query's entry in /healthz: its event-time clock and the late events not counted."""
    client = redis_client(settings, socket_timeout=2)
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
