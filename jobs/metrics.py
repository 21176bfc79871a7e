"""The Spark application's Prometheus metrics, per query, from Spark's own progress reports.

Served at /metrics by the health server (jobs/service.py). Each query's
supervisor (and every health request) looks at its progress; `JobMetrics.note`
counts every micro-batch completed since the last look once, from
`recentProgress` when more than one completed in between, so the counts do
not depend on how often anyone looks. A progress counts as a micro-batch when
it has an ``addBatch`` duration: Spark's idle reports (no data) have none.

The lag is the input the query has not read yet: per source and partition,
the newest offset when the last batch was planned (``latestOffset``) minus
the offset it read to (``endOffset``), summed.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from jobs.stall import offsets_lag

BATCH_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def is_batch(progress: Mapping | None) -> bool:
    return bool(progress) and "addBatch" in (progress.get("durationMs") or {})


class JobMetrics:
    """The registry of one job runner: batches, their durations and input rows, and the lag, per query."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.batches = Counter("rtdash_spark_batches", "Micro-batches completed, per query.", ["query"],
                               registry=self.registry)
        self.input_rows = Counter("rtdash_spark_input_rows", "Input rows read by completed micro-batches, per query.",
                                  ["query"], registry=self.registry)
        self.batch_duration = Histogram("rtdash_spark_batch_duration_seconds",
                                        "Duration of each micro-batch (Spark's triggerExecution), per query.",
                                        ["query"], buckets=BATCH_SECONDS, registry=self.registry)
        self.lag = Gauge("rtdash_spark_input_lag_records",
                         "Input not yet read as of the last progress (latest minus end offset), per query.",
                         ["query"], registry=self.registry)
        self._lock = threading.Lock()
        self._last: dict[str, tuple[Any, Any]] = {}   # query -> (runId, batchId) of the last batch counted

    def note(self, name: str, query: Any, progress: Mapping | None) -> None:
        """Count the micro-batches of `query` (spec `name`) completed since the last note; set its lag."""
        if not progress:
            return
        self.lag.labels(query=name).set(sum(offsets_lag(s.get("endOffset"), s.get("latestOffset"))
                                            for s in progress.get("sources") or []))
        new = self._new_batches(name, query, progress)
        for batch in new:
            self.batches.labels(query=name).inc()
            self.input_rows.labels(query=name).inc(batch.get("numInputRows") or 0)
            self.batch_duration.labels(query=name).observe((batch["durationMs"].get("triggerExecution") or 0) / 1000)

    def _new_batches(self, name: str, query: Any, progress: Mapping) -> list[Mapping]:
        run, batch_id = progress.get("runId"), progress.get("batchId")
        with self._lock:
            last = self._last.get(name)
            if last == (run, batch_id) or not is_batch(progress):
                return []
            self._last[name] = (run, batch_id)
        if last is not None and last[0] == run and batch_id == last[1] + 1:
            return [progress]
        after = last[1] if last is not None and last[0] == run else -1
        recent = [p for p in (getattr(query, "recentProgress", None) or [])
                  if is_batch(p) and p.get("runId") == run and after < p.get("batchId", -1) <= batch_id]
        return recent or [progress]
