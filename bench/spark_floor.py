"""The floor of a Spark micro-batch on this machine: a trivial Kafka -> Redis query.

Reads a topic whose values are send timestamps, and in foreachBatch publishes
them to a Redis channel, with the same session settings and trigger as the
orders job. Whatever latency this shows, no Structured Streaming job here can
beat. Run by bench/e2e_latency.py as its own Spark application:

    python -m bench.spark_floor --topic bench.floor --channel bench:floor
"""
from __future__ import annotations

import argparse
import signal
import threading

import redis
from pyspark.sql import DataFrame, functions as F

from jobs.spark import KAFKA_SOURCE_OPTIONS, build_session
from rtdash.logs import setup_logging
from rtdash.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--channel", required=True)
    args = parser.parse_args()
    setup_logging()
    settings = Settings()
    spark = build_session(settings, "rtdash-bench-floor")
    client = redis.Redis.from_url(settings.redis)

    def publish(batch: DataFrame, batch_id: int) -> None:
        for row in batch.select(F.col("value").cast("string").alias("v")).collect():
            client.publish(args.channel, row.v)
        client.publish(args.channel, f"batch:{batch_id}")

    stream = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", settings.kafka_servers)
              .option("subscribe", args.topic).option("startingOffsets", "latest")
              .options(**KAFKA_SOURCE_OPTIONS).load())
    writer = stream.writeStream.foreachBatch(publish).queryName("floor").option(
        "checkpointLocation", str((settings.checkpoints_dir / "bench-floor").resolve()))
    if settings.spark_trigger_seconds > 0:
        writer = writer.trigger(processingTime=f"{settings.spark_trigger_seconds} seconds")
    query = writer.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5) and query.isActive:
        pass
    query.stop()
    spark.stop()


if __name__ == "__main__":
    main()
