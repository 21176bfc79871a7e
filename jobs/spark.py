"""The SparkSession every rtdash job uses, built from the shared settings."""
from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from rtdash.settings import Settings


def connector_jars(jars_dir: Path) -> list[str]:
    """Spark's Kafka connector and the jars it needs beyond pyspark's own."""
    jars = sorted(str(p.resolve()) for p in (jars_dir / "spark").glob("*.jar"))
    if not any("spark-sql-kafka" in j for j in jars):
        raise FileNotFoundError(f"no Spark Kafka connector in {jars_dir / 'spark'}: run `make jars` first")
    return jars


def build_session(settings: Settings, app_name: str) -> SparkSession:
    """Local mode by default; any master through RTDASH_SPARK_MASTER or spark-submit."""
    builder = (SparkSession.builder.appName(app_name)
               .master(settings.spark_master)
               .config("spark.jars", ",".join(connector_jars(settings.jars)))
               .config("spark.driver.memory", settings.spark_driver_memory)
               .config("spark.sql.session.timeZone", settings.timezone)
               .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.adaptive.enabled", "false"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
