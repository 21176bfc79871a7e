"""Dead letters: the records a job cannot use, kept as they came, with the reason.

Each goes to the job's dead-letter topic (`orders.dlq`, `gateway.dlq`) with
its original key and value and two headers: ``rtdash.error`` (why) and
``rtdash.source`` (``topic:partition:offset`` of the original). Written from
the micro-batch before its figures reach Redis, so a bad record never stops a
job; at least once (a replayed batch may repeat them).
"""
from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame, functions as F

from rtdash.contracts import required_fields


def reason(event_type: type, parsed: Column, *checks: tuple[Column, str]) -> Column:
    """Why a record parsed (from_json) as `event_type` is unusable, or null: the first failing check.

    The contract's checks come first: a record that is not a JSON object of the
    type, then each required field missing or of the wrong type; then `checks`,
    the job's own (value ranges), as (condition that makes it bad, reason).
    """
    fields = required_fields(event_type)
    name = event_type.__name__
    every = [(parsed.isNull() | F.coalesce(*[parsed[f].cast("string") for f in fields]).isNull(),
              f"not a JSON {name} object")]
    every += [(parsed[f].isNull(), f"missing or mistyped field {f}") for f in fields]
    every += list(checks)
    first, *rest = every
    return reduce(lambda acc, check: acc.when(*check), rest, F.when(*first))


def dead_letters(records: DataFrame) -> DataFrame:
    """Rows with a non-null ``reason`` as Kafka sink rows: original key and value, reason in headers.

    `records` has the Kafka source's ``key``, ``value``, ``topic``, ``partition``
    and ``offset`` columns and a ``reason`` column (null for a usable record).
    """
    return records.filter(F.col("reason").isNotNull()).select(
        "key", "value",
        F.array(
            F.struct(F.lit("rtdash.error").alias("key"), F.col("reason").cast("binary").alias("value")),
            F.struct(F.lit("rtdash.source").alias("key"),
                     F.concat_ws(":", "topic", "partition", "offset").cast("binary").alias("value")),
        ).alias("headers"))


def write_dead_letters(records: DataFrame, bootstrap: str, topic: str) -> None:
    (dead_letters(records).write.format("kafka")
     .option("kafka.bootstrap.servers", bootstrap)
     .option("topic", topic).save())
