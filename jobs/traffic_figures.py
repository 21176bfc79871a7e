"""The traffic job's per-batch figures: classified events -> late or not -> facts -> summed.

Event time: the job's clock is the newest `started_at` it has counted (kept in
Redis by jobs/traffic_sink.py); it says which day is "today". Lateness is
judged per Kafka partition, where records keep the order they were written
in: an event whose minute starts more than RTDASH_TRAFFIC_LATENESS_SECONDS
before the minute of the newest event counted from its own partition is
late: it is counted in the `late_events` figure of the job's health, not in
the dashboard's figures. (Against the one clock of all partitions, a backlog
read in batches that take the same share of each partition would make the
events of a partition that is behind in event time late.)

Each usable event becomes the facts it contributes (a minute's requests, a
route's latency bucket, a visitor, a user, a search term, a product), one row
per fact, and the facts summed per kind and key are the batch's figures: a few
rows per minute, route, term and product, small enough to collect to the
driver and merge into Redis in one script.
"""
from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import Column, DataFrame, functions as F


def late_before_ms(clock_ms: int | None, lateness_s: int) -> int | None:
    """Events of minutes that start before this are late: the clock's minute, less the lateness.

    Whole minutes, so the bound (a constant in the batch's compiled code) moves
    once a minute, not with every batch.
    """
    if clock_ms is None:
        return None
    return clock_ms // 60_000 * 60_000 - lateness_s * 1000


def with_lateness(events: DataFrame, late_before: int | None | Mapping[int, int | None]) -> DataFrame:
    """`classify`'s rows with `late`: a usable event of a minute before `late_before`, one bound for every
    partition or one per partition (a partition without a bound has nothing late)."""
    late = None
    if isinstance(late_before, Mapping):
        for partition, bound in sorted(late_before.items()):
            if bound is None:
                continue
            before = F.col("minute_ms") < F.lit(bound)
            late = (F.when(F.col("partition") == partition, before) if late is None
                    else late.when(F.col("partition") == partition, before))
    elif late_before is not None:
        late = F.col("minute_ms") < F.lit(late_before)
    return events.withColumn("late", F.lit(False) if late is None else F.coalesce(late, F.lit(False)))


# One row of a batch's figures; `kind` says which columns mean something (see `Facts`).
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
    clock     name (the partition)     latest_ms: the newest event counted from the partition
    Bots give only a `minute` fact with bots = 1 (and the `clock` fact).

    The expressions are built once (the traffic query keeps one instance): each
    is a round of py4j calls, too slow to repeat for every small batch
    (BENCHMARKS.md). Input: `with_lateness`'s rows.
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
            F.when(searched, _fact("product", date=c("date"))),  # one per product, below
            F.when(counted, _fact("clock", name=c("partition"), n=0, latest_ms=c("started_ms"))))).alias("f")
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
