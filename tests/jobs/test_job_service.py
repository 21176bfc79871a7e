"""jobs/service.py: several queries in one application, each supervised and reported on its own."""
from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from jobs import service
from jobs.service import JobRunner, QuerySpec, serve_health
from stack.testing import free_port
from waiting import eventually


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
        status, body = eventually(lambda: (reply := health(port))[0] == 200 and reply, timeout=60,
                                  what="200 from /healthz")
        report = body["queries"]
        assert report["one"]["active"] and report["one"]["restarts"] == 0
        assert report["two"]["active"] and report["two"]["restarts"] == 1
        assert report["two"]["last_error"] == "cannot start: Redis is not up yet"
        assert report["two"]["late_events"] == 3
        assert {q.name for q in spark.streams.active} >= {"svc_one", "svc_two"}
    finally:
        runner.stop()
        server.shutdown()
    assert not {q.name for q in spark.streams.active} & {"svc_one", "svc_two"}
    assert runner.health()["active"] is False


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
        eventually(lambda: len(pools) >= 2, timeout=60, what="two batches of the orders query")
    finally:
        runner.stop()
    assert set(pools) == {"orders"}
    orders_pool = spark._jsc.sc().getPoolForName("orders").get()
    assert (orders_pool.weight(), orders_pool.minShare()) == (8, 2)  # from jobs/fairscheduler.xml
    assert spark.sparkContext.getConf().get("spark.scheduler.mode") == "FAIR"


# --- the supervisor alone: restart pauses, without Spark ---------------------------------

class FailingQuery:
    """A started query that stays active for `runs_s`, then stops with an error."""

    def __init__(self, runs_s: float):
        self.name = "fake"
        self.until = time.monotonic() + runs_s

    @property
    def isActive(self) -> bool:  # noqa: N802 - StreamingQuery's naming
        return time.monotonic() < self.until

    def exception(self):
        return RuntimeError("broker gone\nat org.apache.kafka...")

    def stop(self) -> None:
        self.until = 0.0


NO_SPARK = SimpleNamespace(sparkContext=SimpleNamespace(setLocalProperty=lambda *_: None))


@pytest.fixture
def short_pauses(monkeypatch):
    """Pauses of 10 ms doubling up to 40 ms; a query that ran 300 ms has failed anew."""
    for name, value in (("BACKOFF_FIRST_S", 0.01), ("BACKOFF_MAX_S", 0.04), ("BACKOFF_RESET_AFTER_S", 0.3),
                        ("WATCH_S", 0.01)):
        monkeypatch.setattr(service, name, value)


def test_restart_pauses_double_to_the_cap_and_start_over_after_a_long_run(short_pauses, job_settings, caplog):
    """Four failed starts, a query that runs 0.5 s and fails, one more failed start, then a query that runs."""
    outcomes = ["refused"] * 4 + ["runs 0.5 s"] + ["refused"] + ["runs"]
    running = threading.Event()

    def start(_spark, _settings):
        outcome = outcomes.pop(0)
        if outcome == "refused":
            raise RuntimeError("Redis is not up yet")
        if outcome == "runs":
            running.set()
            return FailingQuery(runs_s=600)
        return FailingQuery(runs_s=0.5)

    runner = JobRunner(NO_SPARK, job_settings, [QuerySpec("orders", start)])
    with caplog.at_level(logging.INFO, logger="rtdash.jobs"):
        runner.start()
        try:
            assert running.wait(30), outcomes
            state = runner.states["orders"]
            assert (state.restarts, state.last_error) == (6, "cannot start: Redis is not up yet")
        finally:
            runner.stop()
    pauses = [float(m.group(1)) for r in caplog.records if (m := re.search(r"retrying in ([0-9.]+)s", r.message))]
    assert pauses == [0.01, 0.02, 0.04, 0.04, 0.01]
    assert any("query orders failed, restarting from its checkpoint" in r.message and "broker gone" in r.message
               and "org.apache" not in r.message for r in caplog.records)


def test_stopping_the_runner_ends_a_restart_pause(monkeypatch, job_settings):
    """SIGTERM during a ten-minute pause: the supervisor ends at once, without starting the query again."""
    monkeypatch.setattr(service, "BACKOFF_FIRST_S", 600.0)
    monkeypatch.setattr(service, "BACKOFF_MAX_S", 600.0)
    starts = []
    refused = threading.Event()

    def start(_spark, _settings):
        starts.append(1)
        refused.set()
        raise RuntimeError("Redis is not up yet")

    runner = JobRunner(NO_SPARK, job_settings, [QuerySpec("orders", start)])
    runner.start()
    assert refused.wait(10)
    began = time.monotonic()
    runner.stop()
    assert time.monotonic() - began < 5 and len(starts) == 1
