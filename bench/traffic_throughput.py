"""Traffic query throughput: how fast the traffic job catches up a backlog of gateway events.

Starts Kafka and Redis under a temporary RTDASH_HOME on free ports, writes a
day of believable gateway events (bench/gateway_events.py: shoppers' searches
with Zipf terms and their result product ids, product views, carts, checkouts
with their payment notifies, 404s, 5xx, crawlers, logged-in users; event times
over one day with a daily curve, in time order) into the `gateway` topic as
fast as the producer goes (values serialised with rtdash.contracts.to_json
before the clock starts), and only then runs, in one SparkSession of
jobs.spark.build_session, one after the other on the same records:

1. a bare query: the same Kafka source (jobs.traffic.read_gateway, so the same
   options and maxOffsetsPerTrigger) with a foreachBatch that only counts;
2. a parse-only query: the same source, each record parsed as the traffic job
   parses it (from_json with its schema, every field materialised) and nothing
   else: the floor under any job that reads this JSON;
3. the traffic query (jobs.traffic.start), the whole job: parse, classify,
   facts, one aggregation, PFADD and the Lua merge into Redis;
4. the bare query again, so the ratio is taken against the machine of the
   same minutes (the mean of both bare runs).

A first bare pass, before these, warms the JVM up (Spark's Kafka read path is
compiled then) and is shown but not compared with.

Rates: events / (end of the last batch - start of the first), from Spark's
progress reports; "warm" leaves out the first batch (planning, code
generation, JIT). Per traffic batch the table splits foreachBatch into the
Spark job (toArrow of the figures), Python on the driver (rows to dicts, the
script's payload), the PFADD pipeline and the Lua script.
The figures in Redis are checked against the log's own tallies at the end
(exact for counts, 2% for unique counts). The CPU other processes of the
machine used during each phase is shown, in cores.

One module of more than 300 lines on purpose: a benchmark is one experiment,
read from top to bottom (set-up, the three timed queries, the checks, the
report), and its parts serve no other code.

The topic has the partitions the local stack gives it (RTDASH_GATEWAY_TOPIC_PARTITIONS,
3; --partitions to change). Spark runs in local mode (local[2]) unless --master names
another master; `--master cluster` starts a standalone master and RTDASH_SPARK_WORKERS
workers of stack/cluster.py on free ports for the run (the application takes every
worker's cores, one executor each), so the same log can be read in local mode and on
the cluster. Targets (issue 9): traffic >= 80,000 events/s and >= 30% of the bare
query's rate, on 2 cores.

Usage:
    .venv/bin/python -m bench.traffic_throughput [--events 2000000] [--batch 500000]
        [--partitions 3] [--master local[2]|cluster|spark://host:port] [--seed 7] [--keep]
"""
from __future__ import annotations

import argparse
import gc
import heapq
import json
import math
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import redis
from confluent_kafka import Producer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.machine import CpuShares, load_average, machine
from bench.gateway_events import ShopperLog
from rtdash.contracts import GatewayRequest
from producers.traffic import daily_curve
from rtdash.channels import TRAFFIC_PER_MINUTE, TRAFFIC_TODAY, snapshot_key
from rtdash.settings import Settings
from rtdash.kafka_admin import ensure_topics
from stack.kafka import kafka_service
from stack.services import redis_service
from stack.testing import free_port

console = Console()
TARGET_RATE = 80_000
TARGET_SHARE = 0.30


# --- the event log ---------------------------------------------------------------------------

def session_starts(rng: random.Random, day: datetime, n: int) -> list[datetime]:
    """`n` session starts over `day`, denser in the evening (producers.traffic.daily_curve), sorted."""
    starts = []
    while len(starts) < n:
        at = day + timedelta(seconds=rng.uniform(0, 86_400))
        if rng.random() * 1.8 < daily_curve(at):
            starts.append(at)
    return sorted(starts)


def generate(log: ShopperLog, day: datetime, events: int) -> list[tuple[bytes, bytes]]:
    """`events` serialised gateway records (key, value) of `day`, in event-time order."""
    out: list[tuple[bytes, bytes]] = []
    pending: list[tuple[datetime, int, GatewayRequest]] = []  # heap: sessions overlap in time
    seq = 0
    with Progress(TextColumn("generating the event log"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("", total=events)
        for start in session_starts(log.rng, day, math.ceil(events / 4)):
            while pending and pending[0][0] <= start and len(out) < events:
                out.append(log.record(heapq.heappop(pending)[2]))
            if len(out) >= events:
                break
            for at, event in log.session(start):
                if at < day + timedelta(days=1):  # a session late in the evening ends at midnight
                    heapq.heappush(pending, (at, seq, event))
                    seq += 1
            if len(out) % 10_000 < 6:
                progress.update(task, completed=len(out))
        while pending and len(out) < events:
            out.append(log.record(heapq.heappop(pending)[2]))
    if len(out) < events:
        raise SystemExit(f"the log ran out of sessions at {len(out)} events")
    return out


def load(settings: Settings, records: list[tuple[bytes, bytes]]) -> float:
    """Write `records` to the gateway topic as fast as librdkafka goes; returns events/s."""
    producer = Producer({"bootstrap.servers": settings.kafka_servers, "acks": 1, "linger.ms": 20,
                         "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000,
                         "queue.buffering.max.kbytes": 1_048_576})
    failed: list[str] = []

    def report(err, _msg) -> None:
        if err is not None:
            failed.append(str(err))

    topic = settings.gateway_topic
    with Progress(TextColumn("writing to Kafka"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("", total=len(records))
        started = time.perf_counter()
        for i, (key, value) in enumerate(records):
            while True:
                try:
                    producer.produce(topic, value, key, on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 20_000 == 0:
                producer.poll(0)
                progress.update(task, completed=i)
        producer.flush(120)
        elapsed = time.perf_counter() - started
    if failed or len(producer) != 0:
        raise SystemExit(f"Kafka refused {len(failed)} records ({failed[:1]}), {len(producer)} unsent")
    return len(records) / elapsed


# --- the queries ---------------------------------------------------------------------------

@dataclass
class Stages:
    """foreachBatch timings of the traffic query, per batch (ms)."""

    batch: dict[int, dict[str, float]] = field(default_factory=dict)
    to_arrow_ms: list[float] = field(default_factory=list)  # every DataFrame.toArrow of the current batch


def instrument_traffic(stages: Stages) -> None:
    """Time the parts of jobs.traffic's foreachBatch: the whole call, the sink, its PFADD pipeline and script."""
    import jobs.traffic as traffic

    class TimedSink(traffic.TrafficSink):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            script = self._script

            def timed(*a, **kw):
                t = time.perf_counter()
                try:
                    return script(*a, **kw)
                finally:
                    self.current["lua_ms"] = (time.perf_counter() - t) * 1000
            self._script = timed
            self.current: dict[str, float] = {}

        def _add_unique(self, visitors, users):
            t = time.perf_counter()
            try:
                return super()._add_unique(visitors, users)
            finally:
                self.current["pfadd_ms"] = (time.perf_counter() - t) * 1000
                self.current["ids"] = len(visitors) + len(users)

        def apply(self, batch, rows):
            t = time.perf_counter()
            try:
                return super().apply(batch, rows)
            finally:
                self.current["sink_ms"] = (time.perf_counter() - t) * 1000
                self.current["figure_rows"] = len(rows)

    class TimedWriter(traffic.BatchWriter):
        def __call__(self, batch, batch_id):
            self.sink.current = {}
            stages.to_arrow_ms.clear()
            t = time.perf_counter()
            super().__call__(batch, batch_id)
            total = (time.perf_counter() - t) * 1000
            timing = dict(self.sink.current, total_ms=total, spark_ms=sum(stages.to_arrow_ms))
            timing["python_ms"] = (total - timing["spark_ms"] - timing.get("pfadd_ms", 0.0)
                                   - timing.get("lua_ms", 0.0))
            stages.batch[batch_id] = timing

    traffic.TrafficSink = TimedSink
    traffic.BatchWriter = TimedWriter
    from pyspark.sql.classic.dataframe import DataFrame  # the class jobs.traffic's batches are
    to_arrow = DataFrame.toArrow

    def timed_to_arrow(df):
        t = time.perf_counter()
        try:
            return to_arrow(df)
        finally:
            stages.to_arrow_ms.append((time.perf_counter() - t) * 1000)
    DataFrame.toArrow = timed_to_arrow


def start_plain(spark, settings: Settings, checkpoint: Path, name: str, each_batch):
    """The same Kafka source as the traffic query (jobs.traffic.read_gateway), with `each_batch` as foreachBatch."""
    from jobs.traffic import read_gateway

    return (read_gateway(spark, settings, "earliest").writeStream.queryName(name)
            .option("checkpointLocation", str(checkpoint)).foreachBatch(each_batch).start())


def start_bare(spark, settings: Settings, checkpoint: Path):
    """The same Kafka source as the traffic query, and a foreachBatch that only counts its records."""
    counted: list[int] = []

    def count(batch, _batch_id: int) -> None:
        counted.append(batch.count())

    query = start_plain(spark, settings, checkpoint, "bare_count", count)
    query.counted = counted  # type: ignore[attr-defined]
    return query


def start_parse_only(spark, settings: Settings, checkpoint: Path):
    """The same source, and a foreachBatch that only parses each record as the traffic job does (its
    parsed_value, every field materialised): the floor under any job that reads this JSON."""
    from jobs.traffic_events import parsed_value

    def parse(batch, _batch_id: int) -> None:
        batch.select(parsed_value().alias("e")).select("e.*").write.format("noop").mode("overwrite").save()

    return start_plain(spark, settings, checkpoint, "parse_only", parse)


@dataclass
class Run:
    name: str
    batches: list[dict]                    # Spark's progress reports, in order
    other_cores: float
    events: int = 0
    seconds: float = 0.0
    warm_events: int = 0
    warm_seconds: float = 0.0

    def __post_init__(self) -> None:
        def at(progress: dict) -> float:
            return datetime.fromisoformat(progress["timestamp"].replace("Z", "+00:00")).timestamp()

        def end(progress: dict) -> float:
            return at(progress) + progress["durationMs"]["triggerExecution"] / 1000

        data = [b for b in self.batches if b["numInputRows"] > 0]
        self.batches = data
        self.events = sum(b["numInputRows"] for b in data)
        self.seconds = end(data[-1]) - at(data[0])
        if len(data) > 1:
            self.warm_events = self.events - data[0]["numInputRows"]
            self.warm_seconds = end(data[-1]) - at(data[1])

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def warm_rate(self) -> float:
        return self.warm_events / self.warm_seconds if self.warm_seconds else float("nan")


def run_query(name: str, start, events: int, timeout: float = 900) -> Run:
    """Start a query, wait until Spark reports `events` rows processed, stop it; its batches and rates."""
    meter = CpuShares({"bench": os.getpid()})   # this process's tree: the query's JVM, Kafka, Redis
    meter.start()
    query = start()
    try:
        with Progress(TextColumn(f"{name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("", total=events)
            deadline = time.monotonic() + timeout
            done = 0
            while done < events:
                if not query.isActive:
                    raise SystemExit(f"{name} stopped: {query.exception()}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name}: {done} of {events} events after {timeout:.0f} s")
                time.sleep(0.25)
                done = sum(p["numInputRows"] for p in query.recentProgress)
                progress.update(task, completed=done)
        other = meter.stop()[CpuShares.REST]
        batches = list(query.recentProgress)
    finally:
        query.stop()
    if done != events:
        raise SystemExit(f"{name} read {done} events, the topic holds {events}")
    return Run(name, batches, other)


# --- checks and report ---------------------------------------------------------------------

def check_redis(settings: Settings, log: ShopperLog, events: int) -> list[str]:
    """The dashboard's figures against the log's own tallies; returns the problems found."""
    client = redis.Redis.from_url(settings.redis)
    try:
        today = json.loads(client.get(snapshot_key(settings.redis_prefix, TRAFFIC_TODAY)))["data"]
        minutes = json.loads(client.get(snapshot_key(settings.redis_prefix, TRAFFIC_PER_MINUTE)))["data"]["minutes"]
    finally:
        client.close()
    c = log.counts
    console.print(f"traffic.today: {today}")
    problems = []
    for name, want in (("page_views", c["page_views"]), ("searches", c["searches"]),
                       ("bot_requests", c["bot_requests"])):
        if today[name] != want or want <= 0:
            problems.append(f"{name} {today[name]}, the log has {want}")
    for name, want in (("visitors", len(log.viewers)), ("logged_in_users", len(log.users))):
        if not want or abs(today[name] - want) > 0.02 * want:
            problems.append(f"{name} {today[name]}, the log has {want} (2% allowed)")
    requests = sum(m["requests"] for m in minutes.values())
    if requests != c["requests"] - c["bot_requests"]:
        problems.append(f"per-minute requests sum to {requests}, the log has {c['requests'] - c['bot_requests']}")
    if c["requests"] != events:
        problems.append(f"the log tallied {c['requests']} requests of {events}")
    return problems


def report(runs: list[Run], stages: Stages, settings: Settings, args, load_rate: float, problems: list[str],
           load_before: str) -> None:
    bare = [r for r in runs if r.name in ("bare 1", "bare 2")]
    traffic = next(r for r in runs if r.name == "traffic")
    bare_rate = statistics.fmean(r.rate for r in bare)
    bare_warm = statistics.fmean(r.warm_rate for r in bare)

    table = Table(title=f"{traffic.events:,} gateway events, batches of at most {args.batch:,}")
    for col in ("query", "batches", "seconds", "events/s", "warm events/s", "other processes (cores)"):
        table.add_column(col, justify="right" if col != "query" else "left")
    lines = ["| query | batches | seconds | events/s | warm events/s (first batch left out) | "
             "other processes, cores |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in runs:
        cells = [r.name, str(len(r.batches)), f"{r.seconds:.1f}", f"{r.rate:,.0f}", f"{r.warm_rate:,.0f}",
                 f"{r.other_cores:.2f}"]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)

    detail = Table(title="traffic batches (ms)")
    cols = ("batch", "rows", "trigger", "addBatch", "latestOffset", "planning", "walCommit", "commitOffsets",
            "Spark job (toArrow)", "Python", "PFADD", "Lua", "figure rows")
    for col in cols:
        detail.add_column(col, justify="right")
    dlines = ["| " + " | ".join(cols) + " |", "|" + " ---: |" * len(cols)]
    for b in traffic.batches:
        d, s = b["durationMs"], stages.batch.get(b["batchId"], {})
        cells = [str(b["batchId"]), f"{b['numInputRows']:,}"] + [
            f"{d.get(k, 0):,}" for k in ("triggerExecution", "addBatch", "latestOffset", "queryPlanning",
                                        "walCommit", "commitOffsets")] + [
            f"{s.get(k, 0):,.0f}" for k in ("spark_ms", "python_ms", "pfadd_ms", "lua_ms")] + [
            f"{s.get('figure_rows', 0):,}"]
        detail.add_row(*cells)
        dlines.append("| " + " | ".join(cells) + " |")
    console.print(detail)

    share, warm_share = traffic.rate / bare_rate, traffic.warm_rate / bare_warm
    parse_only = next(r for r in runs if r.name == "parse only")
    verdict = [
        f"traffic {traffic.rate:,.0f} events/s (warm {traffic.warm_rate:,.0f}): target >= {TARGET_RATE:,}: "
        f"{'met' if traffic.rate >= TARGET_RATE else 'missed'}",
        f"traffic / bare {share:.0%} (warm {warm_share:.0%}): target >= {TARGET_SHARE:.0%}: "
        f"{'met' if share >= TARGET_SHARE else 'missed'}",
        f"parse only / bare {parse_only.rate / bare_rate:.0%} (warm {parse_only.warm_rate / bare_warm:.0%}): the "
        f"share no job that parses this JSON can exceed; traffic / parse only {traffic.rate / parse_only.rate:.0%}",
        f"loader {load_rate:,.0f} events/s into {args.partitions} partition(s); load average before the run "
        f"{load_before}",
        "Redis figures: " + ("match the log" if not problems else "; ".join(problems)),
    ]
    for line in verdict:
        console.print(line)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "traffic_throughput.md").write_text(
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}; {traffic.events:,} events, "
        f"Spark master {args.master} ({settings.spark_master}); "
        f"maxOffsetsPerTrigger {args.batch:,}, {args.partitions} partition(s), shuffle partitions "
        f"{settings.spark_shuffle_partitions}.\n\n" + "\n".join(lines) + "\n\n" + "\n".join(dlines) + "\n\n"
        + "\n".join(f"- {line}" for line in verdict) + "\n")
    console.print(f"written to {out / 'traffic_throughput.md'}")


def spark_cluster(settings: Settings, master: str):
    """`master` of the run: local mode or a given master as is; "cluster" starts stack/cluster.py's master and
    workers on free ports (a context manager either way, stopping what it started)."""
    from contextlib import nullcontext

    if master != "cluster":
        return nullcontext(settings.model_copy(update={"spark_master": master}))
    from stack.cluster import cluster_services, cluster_settings, master_url
    from stack.runner import Stack

    own = settings.model_copy(update={"spark_cluster_port": free_port(), "spark_cluster_ui_port": free_port(),
                                      "spark_worker_ui_port": 0})
    own = own.model_copy(update={"spark_master": master_url(own)})

    class Running:
        def __enter__(self) -> Settings:
            self.runner = Stack(cluster_settings(own), cluster_services(own))
            with console.status("starting the Spark cluster"):
                self.runner.start()
            # The driver (this process) binds to and advertises the loopback, as the cluster's processes do.
            os.environ["SPARK_LOCAL_IP"] = own.bind_host
            return own

        def __exit__(self, *_exc) -> None:
            self.runner.stop()

    return Running()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=500_000, help="maxOffsetsPerTrigger of both queries")
    parser.add_argument("--partitions", type=int, default=Settings.model_fields["gateway_topic_partitions"].default,
                        help="partitions of the gateway topic (default: the stack's)")
    parser.add_argument("--master", default="local[2]",
                        help="Spark master: local[N], spark://host:port, or `cluster` (a standalone master and "
                             "RTDASH_SPARK_WORKERS workers started for the run)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temporary RTDASH_HOME (logs, checkpoints)")
    args = parser.parse_args()
    load_before = load_average()

    home = Path(tempfile.mkdtemp(prefix="rtdash-bench-traffic-"))
    settings = Settings(_env_file=None, home=home, kafka_port=free_port(), kafka_controller_port=free_port(),
                        redis_port=free_port(), gateway_topic_partitions=args.partitions,
                        spark_max_gateway_events_per_batch=args.batch)
    day = datetime.combine(date.today() - timedelta(days=1), datetime.min.time(), timezone.utc)
    log = ShopperLog(seed=args.seed)
    records = generate(log, day, args.events)
    console.print(f"event log: {len(records):,} events of {day:%Y-%m-%d}, "
                  f"{sum(len(v) for _, v in records) / len(records):.0f} bytes each on average; {dict(log.counts)}")

    runs: list[Run] = []
    stages = Stages()
    spark = None
    try:
        with kafka_service(settings), redis_service(settings, persist=False), \
                spark_cluster(settings, args.master) as settings:
            ensure_topics(settings, [settings.gateway_topic, settings.gateway_dlq_topic])
            load_rate = load(settings, records)
            del records
            gc.collect()
            console.print(f"loaded at {load_rate:,.0f} events/s")
            from jobs import traffic
            from jobs.spark import build_session

            with console.status("starting Spark"):
                spark = build_session(settings, "rtdash-bench-traffic-throughput")
            instrument_traffic(stages)
            # the JVM's first pass over the topic compiles the Kafka read path: not compared with
            runs.append(run_query("bare, JVM warm-up",
                                  lambda: start_bare(spark, settings, home / "checkpoints" / "bare0"), args.events))
            runs.append(run_query("bare 1", lambda: start_bare(spark, settings, home / "checkpoints" / "bare1"),
                                  args.events))
            runs.append(run_query("parse only", lambda: start_parse_only(spark, settings, home / "checkpoints" / "parse"),
                                  args.events))
            runs.append(run_query("traffic", lambda: traffic.start(spark, settings), args.events))
            runs.append(run_query("bare 2", lambda: start_bare(spark, settings, home / "checkpoints" / "bare2"),
                                  args.events))
            problems = check_redis(settings, log, args.events)
            spark.stop()
            spark = None
    finally:
        if spark is not None:
            spark.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    report(runs, stages, settings, args, load_rate, problems, load_before)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
