"""Dead letters: the records a job cannot use, kept as they came, with the reason.

Each goes to the job's dead-letter topic (`orders.dlq`, `gateway.dlq`) with
its original key and value and two headers: ``rtdash.error`` (why) and
``rtdash.source`` (``topic:partition:offset`` of the original). Written from
the micro-batch before its figures reach Redis, so a bad record never stops a
job; at least once (a replayed batch may repeat them).
"""
from __future__ import annotations

from pyspark.sql import DataFrame, functions as F


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
