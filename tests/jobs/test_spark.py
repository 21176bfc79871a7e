"""The shared session helper: its jar lookup and the settings it gives every job's session."""
from __future__ import annotations

import sys

import pytest

from jobs.spark import CHECKPOINT_FILE_MANAGER, LOCAL_CHECKPOINT_FILE_MANAGER, build_session, connector_jars


def test_connector_jars_are_absolute_and_a_missing_connector_says_make_jars(tmp_path):
    with pytest.raises(FileNotFoundError, match="make jars"):
        connector_jars(tmp_path)
    (tmp_path / "spark").mkdir()
    for name in ("spark-sql-kafka-0-10_2.13-4.2.0.jar", "kafka-clients-3.9.2.jar", "notes.txt"):
        (tmp_path / "spark" / name).write_text("")
    assert connector_jars(tmp_path) == [str(tmp_path / "spark" / "kafka-clients-3.9.2.jar"),
                                        str(tmp_path / "spark" / "spark-sql-kafka-0-10_2.13-4.2.0.jar")]


def test_checkpoints_use_the_local_file_manager_unless_one_is_configured(spark, stack_settings):
    assert spark.conf.get(CHECKPOINT_FILE_MANAGER) == LOCAL_CHECKPOINT_FILE_MANAGER
    configured = "org.apache.spark.sql.execution.streaming.checkpointing.FileContextBasedCheckpointFileManager"
    spark.conf.set(CHECKPOINT_FILE_MANAGER, configured)  # as `spark-submit --conf` would
    try:
        assert build_session(stack_settings, "rtdash-tests") is spark
        assert spark.conf.get(CHECKPOINT_FILE_MANAGER) == configured
    finally:
        spark.conf.set(CHECKPOINT_FILE_MANAGER, LOCAL_CHECKPOINT_FILE_MANAGER)


def test_local_mode_runs_the_parallel_collector(spark):
    beans = spark._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    assert {bean.getName() for bean in beans} == {"PS Scavenge", "PS MarkSweep"}


def test_python_workers_run_the_drivers_interpreter(spark):
    # not the first `python3` on the PATH, which may lack the project's packages or be another version
    assert spark.sparkContext.parallelize([0], 1).map(lambda _: sys.executable).collect() == [sys.executable]


def test_the_driver_binds_and_advertises_the_loopback(spark):
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.driver.host") == "127.0.0.1"
    assert conf.get("spark.driver.bindAddress") == "127.0.0.1"
    # what the driver's block manager tells executors to connect to
    assert spark._jsc.sc().env().blockManager().blockManagerId().host() == "127.0.0.1"


def test_a_query_stopped_inside_its_foreach_batch_is_told_from_a_failure_without_overflowing_the_stack(spark):
    """Spark tells a stop from a failure by matching the Python error's text with PROXY_ERROR, a pattern that
    recurses once per character: the traffic query's errors at a stop (a cancelled job's stack trace) are
    tens of thousands of characters, past what a default 1 MB thread stack holds."""
    proxy_error = spark._jvm.org.apache.spark.sql.execution.streaming.runtime.StreamExecution.PROXY_ERROR()
    trace = ("py4j.protocol.Py4JJavaError: An error occurred while calling o812.toArrow.\n"
             ": org.apache.spark.SparkException: Job 437 cancelled because the query was stopped\n"
             + "\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:2935)\n"
             * 450)
    assert len(trace) > 40_000   # a 16 MB stack overflows here too
    assert proxy_error.findFirstIn(trace + "Caused by: java.lang.InterruptedException\n").isDefined()
    assert not proxy_error.findFirstIn(trace).isDefined()
