"""The orders job's Redis sink: one atomic Lua script per micro-batch.

The script adds a batch's per-minute totals to the running totals and
publishes the dashboard channels, all or nothing, and only once per batch of
the query and its checkpoint (jobs/checkpoint.py): Spark replays a batch after
a failure with the same id and the same data, and the script then changes
nothing. With the checkpoint this keeps the totals exact across restarts. The
script is jobs/lua/orders.lua.

Keys (prefix from RTDASH_REDIS_PREFIX; one Redis instance, not a cluster: the
day keys are derived inside the script):

    <p>:job:<query>:applied                 the guard of jobs/checkpoint.py: query id, batch id, offsets
    <p>:orders:day:<date>                   hash: count, amount_cents
    <p>:orders:minute:<date>:count          hash: "HH:MM" -> orders
    <p>:orders:minute:<date>:amount         hash: "HH:MM" -> cents

plus the stream keys of `rtdash.channels` (snapshot, live, seq, epoch,
history) for `orders.today` and `orders.per_minute`. Day and minute hashes expire eight days after their
last change.

Channels, for the configured "today" only (earlier days are stored, never
published):

* ``orders.today``: ``{"date", "count", "amount_cents"}``, snapshot and live
  message alike, plus ``last_recorded_at`` (ISO 8601, UTC) when a batch with
  orders of today changed it: when the order service recorded the newest of
  their payments, for the page's payment-to-screen readout;
* ``orders.per_minute``: ``{"date", "minutes": {"HH:MM": {"count",
  "amount_cents"}}}``; the snapshot holds every minute of the day, the live
  message only the minutes this batch changed, except on the first message of
  a new day, which carries the whole (usually empty) day so clients replace
  yesterday's chart.

When the stored snapshots are of an earlier day, any call (a batch, or
`ensure_today` at job start) first replaces them with today's totals, so a
dashboard shows today's zero before the day's first order.

JSON is assembled from the integer strings Redis returns, never through
cjson, whose number encoding turns large integers into ``1e+14`` and whose
empty table is ambiguous; batch counts travel to the script as strings too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from jobs.checkpoint import NO_BATCH, Batch, guard_key, load_script
from rtdash.channels import HISTORY_SECONDS, HISTORY_SIZE, ORDERS_PER_MINUTE, ORDERS_TODAY, stream_keys

TTL_SECONDS = 8 * 24 * 3600


@dataclass(frozen=True)
class MinuteTotal:
    """Paid orders of one minute of one day (in RTDASH_TIMEZONE) within one batch."""

    date: str       # YYYY-MM-DD
    minute: str     # HH:MM
    count: int
    amount_cents: int


class OrdersSink:
    """Applies batches of one query to Redis; safe to call again with a batch it has seen."""

    def __init__(self, client: redis.Redis, prefix: str, query: str = "orders_today",
                 ttl_seconds: int = TTL_SECONDS, *, history_size: int = HISTORY_SIZE,
                 history_seconds: float = HISTORY_SECONDS):
        self.client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.history = [history_size, history_seconds]
        self._script = client.register_script(load_script("orders", library=("orders_channels",)))
        self._guard = guard_key(prefix, query)
        self._keys = [self._guard, *stream_keys(prefix, ORDERS_TODAY), *stream_keys(prefix, ORDERS_PER_MINUTE)]

    def apply(self, batch: Batch, today: str, minutes: list[MinuteTotal], last_recorded_at: str = "") -> bool:
        """Add one batch; True if applied, False if this query applied it (or a later one) before.
        `last_recorded_at`: when the newest payment of the batch's orders of today was recorded (ISO 8601)."""
        rows = [[m.date, m.minute, str(m.count), str(m.amount_cents)] for m in minutes]
        return self._run(batch.args(), today, rows, last_recorded_at)

    def ensure_today(self, today: str) -> bool:
        """Give `today` its snapshots (zero before its first order); True if they were replaced."""
        return self._run(NO_BATCH, today, [])

    def last_batch(self) -> tuple[str, int] | None:
        """(query id, batch id) of the last applied batch, None before the first."""
        query_id, batch = self.client.hmget(self._guard, "query_id", "batch")
        return (query_id.decode(), int(batch)) if batch is not None else None

    def _run(self, guard: list[str], today: str, rows: list[list[str]], last_recorded_at: str = "") -> bool:
        payload = json.dumps(rows, separators=(",", ":"))
        return bool(self._script(keys=self._keys, args=[*guard, self.prefix, today, self.ttl_seconds, payload,
                                                        ORDERS_TODAY, ORDERS_PER_MINUTE, *self.history,
                                                        last_recorded_at]))
