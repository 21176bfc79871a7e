"""The alerts query's Redis and Kafka side: the series it reads, the states it keeps, the changes it sends.

State lives in Redis, not in the checkpoint, so a restarted query neither
fires again nor forgets a firing rule. One Lua script (jobs/lua/alerts.lua)
per evaluation replaces the rules' states, queues the state changes in an
outbox list and publishes the ``alerts`` channel, all or nothing, and refuses
an evaluation older than the last one applied. The driver then sends the
outbox to Kafka and trims what the broker acknowledged: at least once, kept
while Kafka is down (the channel does not wait for it), a duplicate possible
only after a crash between the acknowledgement and the trim.

Keys (prefix RTDASH_REDIS_PREFIX, dates and minutes in RTDASH_TIMEZONE; a
window before midnight reads yesterday's hashes, a missing field is 0):

    read   <p>:orders:minute:<date>:count       "HH:MM" -> paid orders (jobs/orders_sink.py)
    read   <p>:traffic:minute:<date>:requests   "HH:MM" -> non-bot requests (jobs/traffic_sink.py)
    read   <p>:traffic:minute:<date>:errors     "HH:MM" -> those answered 5xx
    write  <p>:alerts:state                     rule -> {"state", "since", "value", "baseline", "message"}
    write  <p>:alerts:evaluated                 epoch ms of the last evaluation applied
    write  <p>:alerts:outbox                    AlertStateChanged JSON not yet acknowledged by Kafka

plus the stream keys of `rtdash.channels` for ``alerts`` (snapshot, live, seq, epoch, history).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import redis

from jobs.alerts_rules import AlertState, Window, channel_data
from jobs.checkpoint import load_script
from rtdash.channels import ALERTS, HISTORY_SECONDS, HISTORY_SIZE, stream_keys
from rtdash.contracts import AlertStateChanged, to_json
from rtdash.kafka_producer import make_producer
from rtdash.settings import Settings

log = logging.getLogger("rtdash.jobs.alerts")

# The per-minute series the rules read: hash name by date, field "HH:MM" -> count.
SERIES = {
    "orders": "{prefix}:orders:minute:{date}:count",
    "requests": "{prefix}:traffic:minute:{date}:requests",
    "errors": "{prefix}:traffic:minute:{date}:errors",
}

# With Kafka down, a delivery gives up after this long and the outbox waits for the next evaluation.
DELIVERY_TIMEOUT_S = 5.0


def _text(data) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class AlertStore:
    """The rules' series and states in Redis, and the outbox of state changes for Kafka."""

    def __init__(self, client: redis.Redis, prefix: str, tz: ZoneInfo, *, history_size: int = HISTORY_SIZE,
                 history_seconds: float = HISTORY_SECONDS):
        self.client = client
        self.prefix = prefix
        self.tz = tz
        self.history = [history_size, history_seconds]
        self.states_key = f"{prefix}:alerts:state"
        self.evaluated_key = f"{prefix}:alerts:evaluated"
        self.outbox_key = f"{prefix}:alerts:outbox"
        self._script = client.register_script(load_script("alerts", guarded=False))
        self._keys = [self.states_key, self.evaluated_key, self.outbox_key, *stream_keys(prefix, ALERTS)]

    def sums(self, windows: Sequence[Window], now: datetime) -> dict[Window, int]:
        """Each window's total at `now`, read with one HMGET per series and date (one round trip)."""
        read_for: list[Window] = []  # the window of each HMGET in the pipeline
        pipe = self.client.pipeline(transaction=False)
        for window in dict.fromkeys(windows):
            by_date: dict[str, list[str]] = {}
            for date, minute in window.fields(now, self.tz):
                by_date.setdefault(date, []).append(minute)
            for date, minutes in by_date.items():
                pipe.hmget(SERIES[window.series].format(prefix=self.prefix, date=date), minutes)
                read_for.append(window)
        totals = dict.fromkeys(windows, 0)
        for window, values in zip(read_for, pipe.execute()):
            totals[window] += sum(int(v) for v in values if v is not None)
        return totals

    def states(self) -> dict[str, AlertState]:
        return {name.decode(): AlertState.from_record(json.loads(record))
                for name, record in self.client.hgetall(self.states_key).items()}

    def apply(self, now: datetime, states: Mapping[str, AlertState], changes: Sequence[AlertStateChanged]) -> int:
        """Store one evaluation atomically: -1 refused (a later one was applied), 1 published, 0 unchanged."""
        return int(self._script(keys=self._keys, args=[
            int(now.timestamp() * 1000), ALERTS,
            _text({name: _text(state.record()) for name, state in states.items()}),
            _text(channel_data(states)), _text([to_json(change).decode() for change in changes]), *self.history]))

    def outbox(self) -> list[bytes]:
        return self.client.lrange(self.outbox_key, 0, -1)

    def acknowledged(self, count: int) -> None:
        """Drop the first `count` outbox entries (Kafka has them)."""
        self.client.ltrim(self.outbox_key, count, -1)


def deliver(store: AlertStore, settings: Settings) -> int:
    """Send the outbox to Kafka (key = rule name) and trim it once all of it is acknowledged; returns how many.

    A producer per delivery, from the driver: state changes are rare, no producer
    outlives the query, and a few records do not need Spark's Kafka writer (a
    Spark job per evaluation on the shared cores). What Kafka has not acknowledged
    within DELIVERY_TIMEOUT_S stays in the outbox for the next evaluation.
    """
    pending = store.outbox()
    if not pending:
        return 0
    failures: list[str] = []

    def delivered(error, _message) -> None:
        if error is not None:
            failures.append(str(error))

    producer = make_producer(settings.kafka_servers, client_id="rtdash-alerts", acks="all",
                             delivery_timeout_s=DELIVERY_TIMEOUT_S, log_level=2)
    for value in pending:
        producer.produce(settings.alerts_topic, key=json.loads(value)["rule"].encode(), value=value,
                         on_delivery=delivered)
    unsent = producer.flush(DELIVERY_TIMEOUT_S + 1)
    if unsent or failures:
        producer.purge()
        producer.flush(0)
        log.warning("%d alert state changes wait for Kafka: %s", len(pending),
                    failures[0] if failures else f"{unsent} not acknowledged in time")
        return 0
    store.acknowledged(len(pending))
    return len(pending)
