"""jobs/service.py: several queries in one application, each supervised and reported on its own."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from jobs.service import JobRunner, QuerySpec, serve_health
from rtdash.stack import free_port


def rate_query(name: str, fail_first: list[bool] | None = None):
    """A query on Spark's rate source; the first start fails when `fail_first` holds True."""
    def start(spark, settings):
        if fail_first and fail_first.pop():
            raise RuntimeError("Redis is not up yet")
        return (spark.readStream.format("rate").option("rowsPerSecond", 5).load()
                .writeStream.format("noop").queryName(name).start())
    return start


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_queries_run_side_by_side_and_a_failed_start_is_retried(spark, job_settings):
    specs = [QuerySpec("one", rate_query("svc_one")),
             QuerySpec("two", rate_query("svc_two", [True]), figures=lambda settings: {"late_events": 3})]
    runner = JobRunner(spark, job_settings, specs)
    port = free_port()
    server = serve_health(runner, "127.0.0.1", port)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while (status := health(port))[0] != 200:
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        report = status[1]["queries"]
        assert report["one"]["active"] and report["one"]["restarts"] == 0
        assert report["two"]["active"] and report["two"]["restarts"] == 1
        assert report["two"]["last_error"] == "cannot start: Redis is not up yet"
        assert report["two"]["late_events"] == 3
        assert {q.name for q in spark.streams.active} >= {"svc_one", "svc_two"}
    finally:
        runner.stop()
        server.shutdown()
    assert not {q.name for q in spark.streams.active} & {"svc_one", "svc_two"}
    assert health_after_stop(runner)


def health_after_stop(runner: JobRunner) -> bool:
    return runner.health()["active"] is False


def test_each_query_runs_its_batches_in_the_scheduler_pool_of_its_name(spark, job_settings):
    pools: list[str | None] = []

    def start(spark, settings):
        def record(batch, _batch_id):
            pools.append(batch.sparkSession.sparkContext.getLocalProperty("spark.scheduler.pool"))
        return (spark.readStream.format("rate").option("rowsPerSecond", 5).load()
                .writeStream.foreachBatch(record).queryName("svc_orders").start())

    runner = JobRunner(spark, job_settings, [QuerySpec("orders", start)])
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while len(pools) < 2:
            assert time.monotonic() < deadline, pools
            time.sleep(0.2)
    finally:
        runner.stop()
    assert set(pools) == {"orders"}
    orders_pool = spark._jsc.sc().getPoolForName("orders").get()
    assert (orders_pool.weight(), orders_pool.minShare()) == (8, 2)  # from jobs/fairscheduler.xml
    assert spark.sparkContext.getConf().get("spark.scheduler.mode") == "FAIR"
