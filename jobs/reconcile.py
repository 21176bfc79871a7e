"""Reconciliation: one day's dashboard figures recomputed in batch, set against what the live jobs published.

A live number is only worth showing if it agrees with the batch one. For the
day D (in RTDASH_TIMEZONE), this recomputes in batch Spark, from the topics
themselves, what the streaming jobs keep live, and reads the order database's
paid orders of D (ground truth of the order figures):

    orders topic   (offset ranges) -> jobs.orders.transform (parsed, checked, deduplicated by order id)
                                   -> valid orders paid on D -> count, amount, per minute
    gateway topic  (offset ranges) -> jobs.traffic_events.classify -> jobs.traffic_figures (facts, summed)
                                   -> D's page views, visitors, logged-in users, searches, bot requests,
                                      per minute, top 20 search terms and searched products
    order database (SQLAlchemy)    -> paid orders of D -> count, amount, per minute

and compares each figure with the dashboard's snapshot keys in Redis
(rtdash/channels.py: `orders.today`, `orders.per_minute`, `traffic.today`,
`traffic.per_minute`, `search.terms.today`, `search.products.today`), the
contract every writer of those channels keeps, whichever job writes them. The
transformations are the jobs' own functions, so each figure has one
definition; only the day's sums are taken here.

Offset ranges: each partition from the first record written at or after D's
start less `MARGIN` (an event of D can be written a little before D began:
a gateway event up to RTDASH_TRAFFIC_MAX_FUTURE_SECONDS, an order whose
provider clock runs ahead) to the partition's end when the round starts
(orders of D published later, after a Kafka outage, still count live).

Agreement: every figure exactly, except unique counts (visitors, logged-in
users), which the live job counts with HyperLogLogs and may differ by 2%
(DESIGN.md; at least 1 for a minute's visitors). The live figures move while
events arrive, so a round reads Redis first, then the database, then the
topics' ends, and computes the batch figures (again only when the ends
moved); rounds repeat until everything agrees or `settle_seconds` have passed.
On a quiet moment (or for a day that is over) one round agrees; under steady
load the live figures run a batch behind the topics' ends and the last
round's differences are reported.

Another day. The snapshots hold the dashboard's day only (the orders
writer's today, the traffic job's event-time today). For a day they have
moved past (T+1: yesterday, up to a week back) the live figures are read from
the day keys the writers keep and the snapshots are built from
(`<p>:orders:day:D`, `<p>:orders:minute:D:*`, which the micro-batch orders
job and the real-time orders applier both keep; `<p>:traffic:day:D` and the
traffic job's other day keys, RTDASH_TRAFFIC_KEEP_DAYS), `read_stored`. A day
with neither has no live figures, and does not agree.

Gateway events later than the traffic job's lateness are not counted live but
are counted here (the job's health gives `late_events`).

Usage (the `rtdash reconcile` command prints the table and sets the exit status):
    reconcile(spark, settings, day="2026-11-30") -> Reconciliation
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import redis
from pyspark.sql import DataFrame, SparkSession, functions as F
from sqlalchemy import select

from jobs import orders as orders_job
from jobs.traffic_events import classify
from jobs.traffic_figures import Facts, figures, with_lateness
from jobs.traffic_sink import TOP_TODAY
from producers.order_service.store import epoch_ms, orders as orders_table
from rtdash.channels import (ORDERS_PER_MINUTE, ORDERS_TODAY, SEARCH_PRODUCTS_TODAY, SEARCH_TERMS_TODAY,
                             TRAFFIC_PER_MINUTE, TRAFFIC_TODAY, snapshot_key)
from rtdash.database import make_engine
from rtdash.redis_client import redis_client
from rtdash.settings import Settings

log = logging.getLogger("rtdash.jobs.reconcile")

# Records written this long before the day began are read too (see the module's docstring).
MARGIN = timedelta(hours=1)
# The documented error of the live unique counts (DESIGN.md "Traffic analytics channels").
UNIQUE_ERROR = 0.02
CHANNELS = (ORDERS_TODAY, ORDERS_PER_MINUTE, TRAFFIC_TODAY, TRAFFIC_PER_MINUTE, SEARCH_TERMS_TODAY,
            SEARCH_PRODUCTS_TODAY)
TRAFFIC_TOTALS = ("page_views", "visitors", "logged_in_users", "searches", "bot_requests")
MINUTE_FIGURES = ("page_views", "visitors", "requests", "errors")


# --- what is compared ----------------------------------------------------------------------

@dataclass(frozen=True)
class Figure:
    """One row of the comparison: a figure as the dashboard shows it and as the batch recomputed it.

    A row that stands for a whole series (the minutes of a day, a top-20 list)
    gives the entries each side has and, as `differing`, how many entries
    differ; each differing entry has a row of its own.
    """

    name: str
    live: int | None                 # None: the dashboard shows no such figure for the day
    batch: int | None
    allowed: int = 0                 # the largest difference that still agrees (unique counts)
    differing: int | None = None     # series rows only

    @property
    def difference(self) -> int | None:
        if self.differing is not None:
            return self.differing
        return None if self.live is None or self.batch is None else self.live - self.batch

    @property
    def ok(self) -> bool:
        if self.differing is not None:
            return self.differing == 0 and self.live is not None
        return self.live is not None and self.batch is not None and abs(self.live - self.batch) <= self.allowed


@dataclass(frozen=True)
class OrderFigures:
    """Paid orders of one day: count, amount, and (count, amount) per "HH:MM"."""

    count: int = 0
    amount_cents: int = 0
    minutes: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class TrafficFigures:
    """One day's traffic figures, in the shapes of the traffic channels."""

    totals: dict[str, int]                          # TRAFFIC_TOTALS
    minutes: dict[str, dict[str, int]]              # "HH:MM" -> MINUTE_FIGURES
    terms: list[tuple[str, int]]                    # top 20: count desc, then term
    products: list[tuple[str, int]]                 # top 20: count desc, then product id


@dataclass(frozen=True)
class OffsetRange:
    """The records of one topic read: partition -> [start, end)."""

    topic: str
    start: dict[int, int]
    end: dict[int, int]

    @property
    def records(self) -> int:
        return sum(self.end[p] - self.start[p] for p in self.end)

    def describe(self) -> str:
        parts = ", ".join(f"{p}: {self.start[p]}-{self.end[p]}" for p in sorted(self.end))
        return f"{self.topic} partitions {parts} ({self.records} records)"


@dataclass
class Reconciliation:
    """The last round's comparison: every figure, the ranges read and what the reader should know."""

    day: str
    figures: list[Figure]
    ranges: list[OffsetRange]
    notes: list[str] = field(default_factory=list)
    rounds: int = 1

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.figures)

    @property
    def differing(self) -> list[Figure]:
        return [f for f in self.figures if not f.ok]


# --- the batch side: offset ranges, the jobs' transformations --------------------------------

def offset_range(settings: Settings, topic: str, since: datetime) -> OffsetRange:
    """Each partition of `topic` from its first record written at or after `since` to its end now."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=None, enable_auto_commit=False,
                             client_id="rtdash-reconcile")
    try:
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            raise LookupError(f"topic {topic!r} does not exist at {settings.kafka_servers}")
        partitions = [TopicPartition(topic, p) for p in sorted(numbers)]
        end = consumer.end_offsets(partitions)
        found = consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
    finally:
        consumer.close()
    return OffsetRange(topic, {tp.partition: found[tp].offset if found.get(tp) else end[tp] for tp in partitions},
                       {tp.partition: end[tp] for tp in partitions})


def read_range(spark: SparkSession, settings: Settings, offsets: OffsetRange) -> DataFrame:
    """The Kafka records of `offsets`, as a static DataFrame with the columns of the jobs' streaming sources."""
    def as_json(by_partition: dict[int, int]) -> str:
        return json.dumps({offsets.topic: {str(p): o for p, o in by_partition.items()}})

    return (spark.read.format("kafka")
            .option("kafka.bootstrap.servers", settings.kafka_servers)
            .option("assign", json.dumps({offsets.topic: sorted(offsets.end)}))
            .option("startingOffsets", as_json(offsets.start))
            .option("endingOffsets", as_json(offsets.end))
            .option("failOnDataLoss", "false")   # records deleted by retention: read what is left
            .load())


def batch_orders(records: DataFrame, settings: Settings, day: str) -> OrderFigures:
    """The orders job's transform (parse, check, deduplicate by order id), then the valid orders paid on `day`."""
    paid = orders_job.transform(records, settings=settings).where(F.col("valid") & (F.col("date") == day))
    rows = paid.groupBy("minute").agg(F.count(F.lit(1)).alias("count"),
                                      F.sum("amount_cents").alias("amount_cents")).collect()
    minutes = {r["minute"]: (int(r["count"]), int(r["amount_cents"])) for r in rows}
    return OrderFigures(sum(c for c, _ in minutes.values()), sum(a for _, a in minutes.values()), minutes)


def batch_traffic(records: DataFrame, settings: Settings, day: str) -> TrafficFigures:
    """The traffic job's stages (classify -> facts -> figures, nothing late), summed over `day`.

    Unique counts are exact here (distinct ids), where the live job keeps HyperLogLogs.
    """
    day_figures = figures(Facts()(with_lateness(classify(records, settings=settings), None))) \
        .where(F.col("date") == day).cache()
    try:
        minute_rows = day_figures.where(F.col("kind") == "minute").collect()
        visitors = {r["minute"]: r["visitors"] for r in day_figures.where(F.col("kind") == "visitor")
                    .groupBy("minute").agg(F.countDistinct("name").alias("visitors")).collect()}
        uniques = day_figures.agg(
            F.countDistinct(F.when(F.col("kind") == "visitor", F.col("name"))).alias("visitors"),
            F.countDistinct(F.when(F.col("kind") == "user", F.col("name"))).alias("users")).first()
        terms, products = (
            [(r["name"], int(r["count"])) for r in day_figures.where(F.col("kind") == kind).groupBy("name")
             .agg(F.sum("n").alias("count")).orderBy(F.desc("count"), F.asc("name")).limit(TOP_TODAY).collect()]
            for kind in ("term", "product"))
    finally:
        day_figures.unpersist()
    minutes = {r["minute"]: {"page_views": int(r["page_views"]), "visitors": int(visitors.get(r["minute"], 0)),
                             "requests": int(r["n"]), "errors": int(r["errors"])} for r in minute_rows}
    totals = {"page_views": sum(int(r["page_views"]) for r in minute_rows), "visitors": int(uniques["visitors"]),
              "logged_in_users": int(uniques["users"]), "searches": sum(int(r["searches"]) for r in minute_rows),
              "bot_requests": sum(int(r["bots"]) for r in minute_rows)}
    return TrafficFigures(totals, minutes, terms, products)


def database_orders(settings: Settings, day: str) -> OrderFigures:
    """The order database's paid orders of `day` (paid_at in RTDASH_TIMEZONE): the ground truth of orders."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), settings.tz)
    first, last = epoch_ms(start), epoch_ms(start + timedelta(days=1))
    engine = make_engine(settings.database)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(orders_table.c.amount_cents, orders_table.c.paid_at_ms)
                                .where(orders_table.c.paid_at_ms >= first, orders_table.c.paid_at_ms < last)).all()
    finally:
        engine.dispose()
    minutes: dict[str, tuple[int, int]] = {}
    for cents, paid_ms in rows:
        minute = datetime.fromtimestamp(paid_ms / 1000, settings.tz).strftime("%H:%M")
        count, amount = minutes.get(minute, (0, 0))
        minutes[minute] = (count + 1, amount + cents)
    return OrderFigures(len(rows), sum(cents for cents, _ in rows), minutes)


# --- the live side: the snapshot keys ---------------------------------------------------------

@dataclass(frozen=True)
class Live:
    """The dashboard's figures of one day, read from the snapshot keys in one MGET; None where the
    snapshot is missing or of another day (`dates` says which day each channel's snapshot is of)."""

    orders: OrderFigures | None
    traffic: TrafficFigures | None
    dates: dict[str, str | None]


def read_live(client: redis.Redis, prefix: str, day: str) -> Live:
    raw = client.mget([snapshot_key(prefix, channel) for channel in CHANNELS])
    data = {channel: json.loads(value)["data"] if value else None for channel, value in zip(CHANNELS, raw)}
    dates = {channel: (d or {}).get("date") for channel, d in data.items()}
    of_day = {channel: d if d is not None and d.get("date") == day else None for channel, d in data.items()}
    orders = None
    if of_day[ORDERS_TODAY] is not None and of_day[ORDERS_PER_MINUTE] is not None:
        orders = OrderFigures(of_day[ORDERS_TODAY]["count"], of_day[ORDERS_TODAY]["amount_cents"],
                              {m: (v["count"], v["amount_cents"])
                               for m, v in of_day[ORDERS_PER_MINUTE]["minutes"].items()})
    traffic = None
    if all(of_day[c] is not None for c in CHANNELS[2:]):
        traffic = TrafficFigures(
            {name: of_day[TRAFFIC_TODAY][name] for name in TRAFFIC_TOTALS},
            {m: {name: v[name] for name in MINUTE_FIGURES} for m, v in of_day[TRAFFIC_PER_MINUTE]["minutes"].items()},
            [(t["term"], t["count"]) for t in of_day[SEARCH_TERMS_TODAY]["terms"]],
            [(p["product_id"], p["count"]) for p in of_day[SEARCH_PRODUCTS_TODAY]["products"]])
    return Live(orders, traffic, dates)


def read_stored(client: redis.Redis, prefix: str, day: str) -> Live:
    """The figures of a day the snapshots have moved past, from the day keys the writers keep
    (RTDASH_TRAFFIC_KEEP_DAYS, eight days for orders): the same keys both orders writers (the micro-batch
    job and the real-time applier) add to (jobs/orders_sink.py, jobs/traffic_sink.py); None where there are none."""
    def hash_ints(key: str) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in client.hgetall(key).items()}

    def ranking(key: str) -> list[tuple[str, int]]:
        return [(member.decode(), int(-score)) for member, score in client.zrange(key, 0, TOP_TODAY - 1,
                                                                                 withscores=True)]

    orders = None
    totals = hash_ints(f"{prefix}:orders:day:{day}")
    if totals:
        counts, amounts = (hash_ints(f"{prefix}:orders:minute:{day}:{figure}") for figure in ("count", "amount"))
        orders = OrderFigures(totals.get("count", 0), totals.get("amount_cents", 0),
                              {m: (counts[m], amounts.get(m, 0)) for m in counts})
    traffic = None
    day_figures = hash_ints(f"{prefix}:traffic:day:{day}")
    if day_figures:
        per_figure = {name: hash_ints(f"{prefix}:traffic:minute:{day}:{name}") for name in MINUTE_FIGURES}
        traffic = TrafficFigures(
            {"page_views": day_figures.get("page_views", 0),
             "visitors": client.pfcount(f"{prefix}:traffic:visitors:{day}"),
             "logged_in_users": client.pfcount(f"{prefix}:traffic:users:{day}"),
             "searches": day_figures.get("searches", 0), "bot_requests": day_figures.get("bot_requests", 0)},
            {m: {name: per_figure[name].get(m, 0) for name in MINUTE_FIGURES} for m in per_figure["requests"]},
            ranking(f"{prefix}:search:terms:{day}"), ranking(f"{prefix}:search:products:{day}"))
    return Live(orders, traffic, {})


# --- the comparison -----------------------------------------------------------------------------

def unique_allowed(batch: int, at_least: int = 0) -> int:
    """The largest difference of a live unique count from the exact one that is within the documented error."""
    return max(at_least, math.floor(batch * UNIQUE_ERROR))


def series(name: str, live: dict | None, batch: dict, rows) -> list[Figure]:
    """A series (minutes, ranked entries) as one summary row plus a row per differing entry figure.

    `rows(key, live_entry, batch_entry)` gives the figures of one entry (entries missing on a side are None).
    """
    detail: list[Figure] = []
    keys_differing = 0
    for key in [] if live is None else sorted(live.keys() | batch.keys()):
        wrong = [figure for figure in rows(key, live.get(key), batch.get(key)) if not figure.ok]
        keys_differing += bool(wrong)
        detail += wrong
    return [Figure(name, None if live is None else len(live), len(batch),
                   differing=None if live is None else keys_differing), *detail]


def compare_orders(live: OrderFigures | None, batch: OrderFigures, source: str = "") -> list[Figure]:
    """orders.today and orders.per_minute against one batch recomputation (`source` names it in each row)."""
    suffix = f" ({source})" if source else ""

    def minute(key, seen, counted):
        seen, counted = seen or (None, None), counted or (0, 0)
        return [Figure(f"{ORDERS_PER_MINUTE} {key} count{suffix}", seen[0], counted[0]),
                Figure(f"{ORDERS_PER_MINUTE} {key} amount_cents{suffix}", seen[1], counted[1])]

    return [Figure(f"{ORDERS_TODAY} count{suffix}", live and live.count, batch.count),
            Figure(f"{ORDERS_TODAY} amount_cents{suffix}", live and live.amount_cents, batch.amount_cents),
            *series(f"{ORDERS_PER_MINUTE} minutes{suffix}", live and live.minutes, batch.minutes, minute)]


def compare_traffic(live: TrafficFigures | None, batch: TrafficFigures) -> list[Figure]:
    """traffic.today, traffic.per_minute and the top-20 lists against the batch recomputation."""
    def total(name: str) -> Figure:
        unique = name in ("visitors", "logged_in_users")
        return Figure(f"{TRAFFIC_TODAY} {name}", live and live.totals[name], batch.totals[name],
                      unique_allowed(batch.totals[name]) if unique else 0)

    def minute(key, seen, counted):
        seen, counted = seen or {}, counted or dict.fromkeys(MINUTE_FIGURES, 0)
        return [Figure(f"{TRAFFIC_PER_MINUTE} {key} {name}", seen.get(name), counted[name],
                       unique_allowed(counted[name], 1) if name == "visitors" else 0) for name in MINUTE_FIGURES]

    def ranked(channel: str):
        def entry(key, seen, counted):
            return [Figure(f"{channel} {key!r}", seen, counted)]
        return entry

    return [*(total(name) for name in TRAFFIC_TOTALS),
            *series(f"{TRAFFIC_PER_MINUTE} minutes", live and live.minutes, batch.minutes, minute),
            *series(f"{SEARCH_TERMS_TODAY} top {TOP_TODAY}", live and dict(live.terms), dict(batch.terms),
                    ranked(SEARCH_TERMS_TODAY)),
            *series(f"{SEARCH_PRODUCTS_TODAY} top {TOP_TODAY}", live and dict(live.products), dict(batch.products),
                    ranked(SEARCH_PRODUCTS_TODAY))]


# --- one day ------------------------------------------------------------------------------------

def today(settings: Settings) -> str:
    """Today in RTDASH_TIMEZONE, the dashboard's day."""
    return datetime.now(settings.tz).date().isoformat()


def check_sources(settings: Settings) -> None:
    """Reach Redis, both topics and the order database once, so a missing part is reported before Spark starts;
    raises what the client raises (redis.RedisError, kafka.errors.KafkaError, SQLAlchemyError) or LookupError."""
    client = redis_client(settings, socket_timeout=5)
    try:
        client.ping()
    finally:
        client.close()
    for topic in (settings.orders_topic, settings.gateway_topic):
        offset_range(settings, topic, datetime.now(settings.tz))
    engine = make_engine(settings.database)
    try:
        with engine.connect() as conn:
            conn.execute(select(orders_table.c.order_id).limit(1)).all()
    finally:
        engine.dispose()


def reconcile(spark: SparkSession, settings: Settings, day: str | None = None, *,
              settle_seconds: float = 30.0, pause_seconds: float = 1.0) -> Reconciliation:
    """Compare `day` (default today in RTDASH_TIMEZONE) in rounds until it agrees or `settle_seconds` pass."""
    day = day or today(settings)
    date.fromisoformat(day)  # ValueError for a malformed day, before anything is read
    spark.conf.set("spark.sql.session.timeZone", settings.timezone)
    since = datetime.combine(date.fromisoformat(day), datetime.min.time(), settings.tz) - MARGIN
    client = redis_client(settings)
    deadline = None   # set when the first round is done: starting Spark and the first batch take their own time
    cache: dict[tuple, object] = {}
    rounds = 0
    try:
        while True:
            rounds += 1
            live = read_live(client, settings.redis_prefix, day)
            if live.orders is None or live.traffic is None:   # the snapshots are of another day
                stored = read_stored(client, settings.redis_prefix, day)
                live = Live(live.orders or stored.orders, live.traffic or stored.traffic, live.dates)
            paid = database_orders(settings, day)
            ranges = [offset_range(settings, topic, since) for topic in (settings.orders_topic,
                                                                         settings.gateway_topic)]
            key = tuple((r.topic, tuple(sorted(r.end.items()))) for r in ranges)
            if key not in cache:
                cache.clear()
                cache[key] = (batch_orders(read_range(spark, settings, ranges[0]), settings, day),
                              batch_traffic(read_range(spark, settings, ranges[1]), settings, day))
            topic_orders, traffic = cache[key]
            result = Reconciliation(day, [*compare_orders(live.orders, topic_orders),
                                          *compare_orders(live.orders, paid, "order database"),
                                          *compare_traffic(live.traffic, traffic)], ranges, rounds=rounds)
            deadline = deadline or time.monotonic() + settle_seconds
            if result.ok or time.monotonic() + pause_seconds > deadline:
                break
            log.info("round %d: %d figures differ, reading again", rounds, len(result.differing))
            time.sleep(pause_seconds)
    finally:
        client.close()
    result.notes = notes(result, live, settings)
    return result


def notes(result: Reconciliation, live: Live, settings: Settings) -> list[str]:
    """What explains the table: the ranges read, and why a side has no figures."""
    lines = [f"read {r.describe()}" for r in result.ranges]
    for channel, shown in live.dates.items():
        if shown != result.day:
            found = live.orders if channel.startswith("orders.") else live.traffic
            lines.append(f"{channel}: the dashboard's snapshot is of {shown or 'no day (not published)'}, not "
                         f"{result.day}: " + ("live figures read from the day's stored keys" if found is not None
                                              else "no live figures of that day in Redis"))
    if not result.ok:
        lines.append(f"after {result.rounds} round(s) {len(result.differing)} figure(s) differ beyond the "
                     f"documented error (unique counts {UNIQUE_ERROR:.0%}, everything else exact)")
        if result.day == today(settings):
            lines.append("the day is still open: events that arrive while the live jobs catch up show as "
                         "differences; compare at a quiet moment (--settle waits longer) or once the day is over "
                         "(--date)")
    return lines
