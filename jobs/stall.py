"""Is a streaming query stalled? Input waits for it and no micro-batch has completed for too long.

A query that hangs (a sink call that never returns, a task stuck on a lost executor) stays
active: Spark reports no error, and a health check that looks only at `isActive` says all
is well while the dashboard freezes. What tells a stall from a quiet stream is whether
input waits, read from Spark's own reports:

* the query's status says a trigger is running with new data (`isTriggerActive` and
  `isDataAvailable`): a micro-batch is under way; a hung one stays in this state;
* or its last progress shows a source whose `latestOffset` (the newest input when that
  batch was planned) is beyond the `endOffset` it read to: input was left for the next
  batch (a backlog cut by maxOffsetsPerTrigger).

`StallWatch` is looked at regularly; it remembers since when input has been waiting with no
micro-batch completed in between. An idle query (nothing waiting) is never stalled, however
long since its last batch.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any


def input_waiting(progress: Mapping | None, status: Mapping | None) -> bool:
    """True when a micro-batch with new data is running now, or the last one left input behind."""
    if status and status.get("isTriggerActive") and status.get("isDataAvailable"):
        return True
    sources = (progress or {}).get("sources") or []
    return any(offsets_behind(source.get("endOffset"), source.get("latestOffset")) for source in sources)


def offsets_behind(end: Any, latest: Any) -> bool:
    """`latest` is beyond `end`: offsets as Spark reports them (JSON text or parsed), e.g. Kafka's
    {"orders": {"0": 42}} per topic and partition, or a number. Offsets of shapes that cannot be
    compared (or absent, "null") say nothing is behind."""
    return offsets_lag(end, latest) > 0


def offsets_lag(end: Any, latest: Any) -> int | float:
    """How far `latest` is beyond `end`, summed over topics and partitions (0 where they cannot be compared)."""
    end, latest = _parsed(end), _parsed(latest)
    if isinstance(end, dict) and isinstance(latest, dict):
        return sum(offsets_lag(end.get(key), value) for key, value in latest.items())
    if _number(end) and _number(latest):
        return max(0, latest - end)
    return 0


def _parsed(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class StallWatch:
    """Since when input has waited for one query with no micro-batch completed; fed by `look`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_batch: tuple | None = None
        self._waiting_since: float | None = None

    def look(self, progress: Mapping | None, status: Mapping | None, now: float) -> None:
        """Note the query's last progress and status as read at `now` (None for a query not running)."""
        batch = (progress.get("runId"), progress.get("batchId"), progress.get("timestamp")) if progress else None
        waiting = input_waiting(progress, status)
        with self._lock:
            if not waiting:
                self._waiting_since = None
            elif batch != self._last_batch or self._waiting_since is None:
                self._waiting_since = now  # input waits from now: none did, or a micro-batch just completed
            self._last_batch = batch

    def waiting_for(self, now: float) -> float | None:
        """Seconds input has waited with no micro-batch completed, None when none waits."""
        with self._lock:
            return None if self._waiting_since is None else max(0.0, now - self._waiting_since)
