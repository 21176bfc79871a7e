"""The Spark application's /metrics (jobs/metrics.py, served by jobs/service.py): per query, from fake queries.

No Spark: each fake query reports progress in Spark's shapes (offsets as
JSON text), and its `recentProgress` holds every batch it completed, as
Spark's does, so batches completed between two looks are counted too.
"""
from __future__ import annotations

import json
import urllib.request
from types import SimpleNamespace

import pytest

from prometheus_client import CONTENT_TYPE_LATEST

from jobs.service import JobRunner, QuerySpec, serve_health
from rtdash.settings import Settings
from stack.testing import free_port

from scraping import samples, value, values

NO_SPARK = SimpleNamespace(sparkContext=SimpleNamespace(setLocalProperty=lambda *_: None))


class ProgressingQuery:
    """An active query whose micro-batches the test completes; idle reports carry no addBatch, as Spark's."""

    isActive = True  # noqa: N815 - StreamingQuery's naming
    status = {"message": "Waiting for data to arrive", "isDataAvailable": False, "isTriggerActive": False}

    def __init__(self, name: str, topic: str):
        self.name, self.topic = name, topic
        self.recentProgress: list[dict] = []  # noqa: N815
        self.lastProgress: dict | None = None  # noqa: N815
        self.end = 0

    def batch(self, rows: int, ms: int, latest: int) -> None:
        """A micro-batch read `rows` more records in `ms`, with the topic's newest offset at `latest`."""
        self.end += rows
        self._report({"addBatch": ms - 5, "triggerExecution": ms}, rows, latest)

    def idle(self) -> None:
        self._report({"latestOffset": 1, "triggerExecution": 2}, 0, self.end, batch_id=len(self.recentProgress))

    def _report(self, durations: dict, rows: int, latest: int, batch_id: int | None = None) -> None:
        progress = {"runId": "run-1", "batchId": len(self.recentProgress) if batch_id is None else batch_id,
                    "numInputRows": rows, "durationMs": durations,
                    "sources": [{"startOffset": json.dumps({self.topic: {"0": self.end - rows}}),
                                 "endOffset": json.dumps({self.topic: {"0": self.end}}),
                                 "latestOffset": json.dumps({self.topic: {"0": latest}})}]}
        if "addBatch" in durations:
            self.recentProgress.append(progress)
        self.lastProgress = progress

    def exception(self):
        return None

    def stop(self) -> None:
        pass


def test_metrics_count_every_batch_of_each_query_with_rows_durations_and_lag(tmp_path):
    orders, traffic = ProgressingQuery("orders", "orders"), ProgressingQuery("traffic", "gateway")
    runner = JobRunner(NO_SPARK, Settings(_env_file=None, home=tmp_path),
                       [QuerySpec("orders", lambda *_: orders), QuerySpec("traffic", lambda *_: traffic)])
    runner.states["orders"].query, runner.states["traffic"].query = orders, traffic
    port = free_port()
    server = serve_health(runner, "127.0.0.1", port)

    def scrape():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
            return samples(resp.read())

    try:
        orders.batch(rows=10, ms=40, latest=10)
        found = scrape()
        assert values(found, "rtdash_spark_batches_total", "query") == {"orders": 1}
        # three batches between two scrapes, the last one leaving 50 records behind; the traffic query's first
        for rows, ms in ((20, 300), (5, 60), (100, 2000)):
            orders.batch(rows=rows, ms=ms, latest=185)
        traffic.batch(rows=7, ms=30, latest=7)
        found = scrape()
        assert values(found, "rtdash_spark_batches_total", "query") == {"orders": 4, "traffic": 1}
        assert values(found, "rtdash_spark_input_rows_total", "query") == {"orders": 135, "traffic": 7}
        assert values(found, "rtdash_spark_input_lag_records", "query") == {"orders": 50, "traffic": 0}
        assert value(found, "rtdash_spark_batch_duration_seconds_sum", query="orders") == pytest.approx(2.4)
        assert value(found, "rtdash_spark_batch_duration_seconds_bucket", query="orders", le="0.1") == 2
        # an idle report and a scrape that finds nothing new count nothing
        orders.idle()
        found = scrape()
        assert values(found, "rtdash_spark_batches_total", "query") == {"orders": 4, "traffic": 1}
        assert values(found, "rtdash_spark_input_lag_records", "query") == {"orders": 0, "traffic": 0}
    finally:
        server.shutdown()
