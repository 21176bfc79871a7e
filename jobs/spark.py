"""The SparkSession every rtdash job uses, built from the shared settings."""
from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from rtdash.settings import Settings


# How Structured Streaming writes its offset, commit and state files. The checkpoints live
# under RTDASH_HOME, on a local disk with one job per checkpoint: there the plain FileSystem
# manager's write-then-rename is as safe as Spark's default FileContext manager, and it writes
# a batch's two log files several times faster, which every micro-batch, and so the
# dashboard's latency, waits for (BENCHMARKS.md).
CHECKPOINT_FILE_MANAGER = "spark.sql.streaming.checkpointFileManagerClass"
LOCAL_CHECKPOINT_FILE_MANAGER = \
    "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"


# Options of every Kafka source of the jobs. A micro-batch's task asks the broker for its
# records; when the topic has nothing more, the broker holds the fetch open for
# fetch.max.wait.ms (500 by default) before answering. At a few orders per second every batch
# would wait that long: 20 ms keeps the wait a small part of a batch (BENCHMARKS.md).
KAFKA_SOURCE_OPTIONS = {"kafka.fetch.max.wait.ms": "20"}


# The driver's thread stacks. Stopping a query while its foreachBatch runs in Python makes Spark
# match the Python error's text against a regular expression to tell a stop from a failure. The
# match recurses about 400 bytes of stack per character, so on that long text it ran past the
# default 1 MB stack: every stop of the traffic query ended in a StackOverflowError and thousands of
# lines of log instead of a clean stop. 32 MB holds some 75,000 characters; stack memory is
# committed only as it is used.
DRIVER_JAVA_OPTIONS = "-Xss32m"


def read_topic(spark: SparkSession, settings: Settings, topic: str, *, max_per_batch: int,
               starting_offsets: str = "earliest", **options: str) -> DataFrame:
    """`topic` as a stream of Kafka records, with what every rtdash job's source needs.

    `starting_offsets` applies only when the query has no checkpoint yet;
    `options` are the job's own (e.g. minPartitions).
    """
    return (spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", settings.kafka_servers)
            .option("subscribe", topic)
            .option("startingOffsets", starting_offsets)
            .option("failOnDataLoss", "false")
            .option("maxOffsetsPerTrigger", str(max_per_batch))
            # A broker outage must not kill the query: keep asking for offsets until it is back.
            .option("fetchOffset.numRetries", "1000000")
            .option("fetchOffset.retryIntervalMs", "1000")
            .options(**KAFKA_SOURCE_OPTIONS, **options)
            .load())


def require_session_zone(records: DataFrame, settings: Settings) -> None:
    """Refuse a session whose time zone is not RTDASH_TIMEZONE: the jobs take days and minutes from it."""
    zone = records.sparkSession.conf.get("spark.sql.session.timeZone")
    if zone != settings.timezone:
        raise ValueError(f"spark.sql.session.timeZone is {zone!r} but RTDASH_TIMEZONE is "
                         f"{settings.timezone!r}: days and minutes would be wrong")


def connector_jars(root: Path) -> list[str]:
    """Absolute paths of Spark's Kafka connector and the jars it needs beyond pyspark's own.

    `root` is the jars directory of the settings (``.jars`` by default); `make jars`
    puts the connector in its ``spark/`` folder.
    """
    folder = Path(root) / "spark"
    jars = sorted(str(p.resolve()) for p in folder.glob("*.jar"))
    if not any(Path(j).name.startswith("spark-sql-kafka") for j in jars):
        raise FileNotFoundError(f"no Spark Kafka connector in {folder}: run `make jars` first")
    return jars


def scheduler_pools(settings: Settings) -> str:
    """jobs/fairscheduler.xml as a file Spark can open: the package's own, or a copy under RTDASH_HOME when the
    jobs are imported from a zip (spark-submit --py-files puts it before the installed package)."""
    pools = resources.files("jobs") / "fairscheduler.xml"
    if isinstance(pools, Path):
        return str(pools)
    copy = (Path(settings.home) / "run" / "fairscheduler.xml").resolve()
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(pools.read_text())
    return str(copy)


def build_session(settings: Settings, app_name: str, *, ui: bool = False) -> SparkSession:
    """Local mode by default; any master through RTDASH_SPARK_MASTER or spark-submit.

    Under spark-submit the JVM is already running: its ``--master`` and ``--jars``
    apply and the ones of the settings are not used.
    """
    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ and settings.spark_master.startswith("local"):
        # Read by the JVM pyspark is about to launch: without it Spark looks up the hostname, and
        # when that resolves to a loopback address it takes the machine's other interface instead.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
        # Python workers (the warm-up's createDataFrame, foreachBatch helpers) run this interpreter, with
        # its packages, rather than whatever `python3` comes first on the PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (builder.master(settings.spark_master)
                   .config("spark.jars", ",".join(connector_jars(settings.jars)))
                   .config("spark.driver.memory", settings.spark_driver_memory))
        if settings.spark_master.startswith("local"):
            # In local mode the driver's JVM runs the micro-batches too. The parallel collector,
            # not G1: on a small machine G1's concurrent threads take CPU from the batches, and
            # with G1 the slowest batches were slower (BENCHMARKS.md).
            builder = (builder.config("spark.driver.extraJavaOptions", f"-XX:+UseParallelGC {DRIVER_JAVA_OPTIONS}")
                       # Driver and executors share one JVM: bind and advertise the loopback, like
                       # every other service, not whatever interface the hostname resolves to.
                       .config("spark.driver.bindAddress", "127.0.0.1")
                       .config("spark.driver.host", "127.0.0.1"))
    spark = (builder
             .config("spark.sql.session.timeZone", settings.timezone)
             .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
             .config("spark.ui.enabled", str(ui).lower())
             .config("spark.ui.showConsoleProgress", "false")
             # A query waiting on an unreachable broker would hold up SIGTERM for a minute.
             .config("spark.sql.streaming.stopTimeout", "10s")
             # Micro-batches are small: adaptive re-planning costs more than it saves.
             .config("spark.sql.adaptive.enabled", "false")
             # Several queries share the application's task slots: each runs in a pool of its own
             # name (jobs/service.py), and the orders pool gets free slots first.
             .config("spark.scheduler.mode", "FAIR")
             .config("spark.scheduler.allocation.file", scheduler_pools(settings))
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    if spark.conf.get(CHECKPOINT_FILE_MANAGER, None) is None:  # a spark-submit --conf wins
        spark.conf.set(CHECKPOINT_FILE_MANAGER, LOCAL_CHECKPOINT_FILE_MANAGER)
    return spark
