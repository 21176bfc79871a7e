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

    lastProgress = None  # noqa: N815 - StreamingQuery's naming
    status = {"message": "Waiting for data to arrive", "isDataAvailable": False, "isTriggerActive": False}

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


# --- stalled queries: input waits and no micro-batch completes (a fake query and clock, no Spark) ---

class ReportingQuery:
    """An active query whose last progress and status the test sets, in Spark's shapes (offsets as JSON text)."""

    name = "fake_orders"
    isActive = True  # noqa: N815 - StreamingQuery's naming

    def __init__(self):
        self.lastProgress = None  # noqa: N815
        self.status = IDLE

    def exception(self):
        return None

    def stop(self) -> None:
        pass

    def batch(self, batch_id: int, end: int, latest: int) -> None:
        """Micro-batch `batch_id` completed, having read to offset `end` of the topic's newest `latest`."""
        self.lastProgress = {
            "runId": "run-1", "batchId": batch_id, "timestamp": f"2026-11-30T12:00:{batch_id:02d}.000Z",
            "numInputRows": 10, "durationMs": {"triggerExecution": 40},
            "sources": [{"description": "KafkaV2[Subscribe[orders]]", "startOffset": json.dumps({"orders": {"0": 0}}),
                         "endOffset": json.dumps({"orders": {"0": end}}),
                         "latestOffset": json.dumps({"orders": {"0": latest}})}]}


IDLE = {"message": "Waiting for data to arrive", "isDataAvailable": False, "isTriggerActive": False}
PROCESSING = {"message": "Processing new data", "isDataAvailable": True, "isTriggerActive": True}


@pytest.fixture
def watched(tmp_path):
    """A runner of one fake query with a clock the test moves; the stall limit is 120 s."""
    from rtdash.settings import Settings

    now = [1000.0]
    query = ReportingQuery()
    runner = JobRunner(NO_SPARK, Settings(_env_file=None, home=tmp_path, jobs_stall_seconds=120),
                       [QuerySpec("orders", lambda *_: query)], clock=lambda: now[0])
    runner.states["orders"].query = query

    def at(seconds: float) -> dict:
        now[0] = 1000.0 + seconds
        return runner.health()
    return SimpleNamespace(runner=runner, query=query, at=at)


def test_a_micro_batch_that_never_completes_is_reported_stalled_after_the_limit(watched):
    watched.query.batch(1, end=10, latest=10)
    watched.query.status = PROCESSING  # batch 2 has started with new data, and hangs
    assert watched.at(0)["healthy"] is True
    before = watched.at(119)
    assert (before["healthy"], before["queries"]["orders"]["input_waiting_s"]) == (True, 119.0)
    after = watched.at(121)
    assert (after["healthy"], after["status"], after["active"]) == (False, "stalled", True)
    assert after["queries"]["orders"]["stalled"] is True
    assert after["reason"] == ("query orders: input has waited 121s with no micro-batch completed "
                               "(limit 120s; Spark says: Processing new data)")
    # it completes at last, with nothing left behind: healthy again
    watched.query.batch(2, end=25, latest=25)
    watched.query.status = IDLE
    recovered = watched.at(122)
    assert (recovered["healthy"], recovered["queries"]["orders"]["input_waiting_s"]) == (True, None)
    assert "reason" not in recovered


def test_an_idle_query_is_healthy_however_long_since_its_last_batch(watched):
    watched.query.batch(7, end=42, latest=42)
    for seconds in (0, 121, 3600, 86_400):
        health = watched.at(seconds)
        assert health["healthy"] is True and health["status"] == "ok"
        assert health["queries"]["orders"]["input_waiting_s"] is None


def test_a_backlog_left_behind_counts_while_no_batch_completes_but_steady_batches_are_healthy(watched):
    """A backlog cut by maxOffsetsPerTrigger: fine while batches keep completing, stalled when they stop."""
    for n, seconds in enumerate(range(0, 600, 30)):  # a batch every 30 s, each leaving input behind
        watched.query.batch(n, end=1000 * (n + 1), latest=50_000)
        assert watched.at(seconds)["healthy"] is True
    assert watched.at(570 + 120)["healthy"] is True
    stalled = watched.at(570 + 121)
    assert stalled["healthy"] is False and stalled["queries"]["orders"]["input_waiting_s"] == 121.0


def test_the_health_endpoint_answers_503_with_the_reason_when_a_query_stalls(watched):
    port = free_port()
    server = serve_health(watched.runner, "127.0.0.1", port)
    try:
        watched.query.batch(1, end=10, latest=10)
        watched.query.status = PROCESSING
        watched.at(0)
        assert health(port)[0] == 200
        watched.at(200)
        status, body = health(port)
        assert status == 503 and body["status"] == "stalled"
        assert body["reason"].startswith("query orders: input has waited 200s")
    finally:
        server.shutdown()


def test_offsets_behind_compares_each_partition_and_ignores_what_cannot_be_compared():
    from jobs.stall import offsets_behind

    assert offsets_behind('{"orders": {"0": 5, "1": 9}}', '{"orders": {"0": 5, "1": 10}}') is True
    assert offsets_behind('{"orders": {"0": 5, "1": 9}}', '{"orders": {"0": 5, "1": 9}}') is False
    assert offsets_behind({"orders": {"0": 7}}, {"orders": {"0": 6}}) is False
    assert offsets_behind(3, 4) is True
    assert offsets_behind("null", '{"orders": {"0": 5}}') is False
    assert offsets_behind('{"orders": {"0": 5}}', None) is False
    assert offsets_behind("not json", "4") is False


def test_a_supervised_query_is_looked_at_between_health_requests(short_pauses, job_settings, monkeypatch):
    """The stall watch starts counting when the supervisor sees input waiting, not at the next request."""
    monkeypatch.setattr(service, "LOOK_S", 0.01)
    query = ReportingQuery()
    query.batch(1, end=10, latest=10)
    query.status = PROCESSING
    now = [0.0]
    runner = JobRunner(NO_SPARK, job_settings, [QuerySpec("orders", lambda *_: query)], clock=lambda: now[0])
    runner.start()
    try:
        eventually(lambda: runner.states["orders"].stall.waiting_for(0.0) is not None, timeout=10,
                   what="the supervisor's first look")
        now[0] = 121.0
        assert runner.health()["queries"]["orders"]["stalled"] is True
    finally:
        runner.stop()
