"""Where live dashboard data sits in Redis: the contract between jobs and push server.

A Spark job publishes a *channel* (for example ``orders.today``) as JSON
envelopes ``{"channel": str, "epoch": str, "seq": int, "data": {...}}``
(DESIGN.md), all written by jobs/lua/envelope.lua in the job's script:

* ``seq`` comes from INCR ``<prefix>:seq:<channel>``: it grows by one per
  envelope, so a client sees gaps and every push-server process agrees;
* ``epoch`` is kept at ``<prefix>:epoch:<channel>`` and renewed (from Redis's
  clock) whenever the INCR gives 1: the numbering started again, Redis lost
  its data, and a client's seq of the old epoch means nothing any more;
* the envelope holding the whole state, marked ``"snapshot": true``, is SET
  at ``<prefix>:snapshot:<channel>``, so a client that connects, or a push
  server that reconnects to Redis, starts from it;
* the live envelope (for the per-minute channels only what changed) is
  PUBLISHed on ``<prefix>:live:<channel>`` and appended to the stream
  ``<prefix>:history:<channel>`` (field ``envelope``), which keeps at most
  RTDASH_PUSH_HISTORY_SIZE entries of at most RTDASH_PUSH_HISTORY_SECONDS: a
  reconnecting client gets what it missed from there.

The push server PSUBSCRIBEs to `live_pattern(prefix)`.
"""
from __future__ import annotations

ORDERS_TODAY = "orders.today"
ORDERS_PER_MINUTE = "orders.per_minute"
# Traffic channels (jobs/traffic.py), shapes in DESIGN.md "Traffic analytics channels".
TRAFFIC_TODAY = "traffic.today"
TRAFFIC_PER_MINUTE = "traffic.per_minute"
SEARCH_TERMS_TODAY = "search.terms.today"
SEARCH_TERMS_RECENT = "search.terms.recent"
SEARCH_PRODUCTS_TODAY = "search.products.today"
ROUTES_PER_MINUTE = "routes.per_minute"
# Alert rules pending or firing now (jobs/alerts.py).
ALERTS = "alerts"
TRAFFIC_CHANNELS = (TRAFFIC_TODAY, TRAFFIC_PER_MINUTE, SEARCH_TERMS_TODAY, SEARCH_TERMS_RECENT,
                    SEARCH_PRODUCTS_TODAY, ROUTES_PER_MINUTE)
CHANNELS = (ORDERS_TODAY, ORDERS_PER_MINUTE, *TRAFFIC_CHANNELS, ALERTS)

# Defaults of RTDASH_PUSH_HISTORY_SIZE and RTDASH_PUSH_HISTORY_SECONDS: each channel's history.
HISTORY_SIZE = 300
HISTORY_SECONDS = 600.0


def snapshot_key(prefix: str, channel: str) -> str:
    return f"{prefix}:snapshot:{channel}"


def live_channel(prefix: str, channel: str) -> str:
    return f"{prefix}:live:{channel}"


def seq_key(prefix: str, channel: str) -> str:
    return f"{prefix}:seq:{channel}"


def epoch_key(prefix: str, channel: str) -> str:
    return f"{prefix}:epoch:{channel}"


def history_key(prefix: str, channel: str) -> str:
    return f"{prefix}:history:{channel}"


def stream_keys(prefix: str, channel: str) -> list[str]:
    """A channel's keys in the order jobs/lua/envelope.lua takes them: snapshot, live, seq, epoch, history."""
    return [snapshot_key(prefix, channel), live_channel(prefix, channel), seq_key(prefix, channel),
            epoch_key(prefix, channel), history_key(prefix, channel)]


def live_pattern(prefix: str) -> str:
    return f"{prefix}:live:*"


def channel_of(prefix: str, redis_channel: str) -> str:
    """The dashboard channel name of a Redis pub/sub channel name."""
    head = f"{prefix}:live:"
    if not redis_channel.startswith(head):
        raise ValueError(f"{redis_channel!r} is not an rtdash live channel")
    return redis_channel[len(head):]
