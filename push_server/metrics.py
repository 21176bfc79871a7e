"""The push server's Prometheus metrics, served at /metrics (rtdash.metrics.MetricsHandler).

One process, so plain prometheus_client objects on this module's own registry
(`REGISTRY`), which holds nothing of any other service. The modules that see
each event count it here: handlers (closes), session (messages sent and
coalesced), the Redis broker (envelopes merged before the fan-out), hub
(resumes from the history, hits and misses); the connections are the hub's, read at each scrape (app.py). Counts grow for the life of the
process; tests read the difference across what they did.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTIONS = Gauge(
    "rtdash_push_connections", "WebSocket connections open now (sessions joined to the hub).",
    registry=REGISTRY)
MESSAGES_SENT = Counter(
    "rtdash_push_messages_sent", "Envelopes written to WebSocket clients.",
    registry=REGISTRY)
MESSAGES_COALESCED = Counter(
    "rtdash_push_messages_coalesced",
    "Envelopes a slow client never got because a newer one of the same channel replaced them in its queue.",
    registry=REGISTRY)
FAN_OUT_MERGED = Counter(
    "rtdash_push_fan_out_merged",
    "Live envelopes merged into a newer one of their channel before the fan-out, because they came faster than "
    "the server delivered (each one still went into the history for resumes).",
    registry=REGISTRY)
CLOSES = Counter(
    "rtdash_push_closes", "WebSocket connections closed, by close code (1000 normal, 1001 server stopping, "
    "1003 bad message, 1005 none received, 1009 too big, 1012 reset, 1013 too slow, ...).",
    ["code"], registry=REGISTRY)
HISTORY_HITS = Counter(
    "rtdash_push_history_hits",
    "Resumes served from the channel's history (the client got exactly the envelopes it missed).",
    registry=REGISTRY)
HISTORY_MISSES = Counter(
    "rtdash_push_history_misses",
    "Resumes the history could not serve (too old or another epoch): the client got a fresh snapshot.",
    registry=REGISTRY)


def count_close(code: int | None) -> None:
    """One closed connection under its close code: the one the client sent or echoed (1005, "no status
    received", when none came: an empty close frame, or the connection lost)."""
    CLOSES.labels(code=str(code if code is not None else 1005)).inc()
