"""Alerts job: Grafana-style alert rules over the dashboard's per-minute series.

Every RTDASH_ALERTS_EVAL_SECONDS (60 by default) the query evaluates each rule
of RTDASH_ALERT_RULES over whole minutes (the minute in progress is not
complete yet, so a window ends where the current minute begins), reading the
per-minute series the other jobs keep in Redis:

* ``orders_drop``: paid orders in the trailing RTDASH_ALERT_ORDERS_WINDOW_MINUTES
  (60) against the same span before it. Its value is the drop share,
  1 - current / previous (negative when orders grew), its baseline the earlier
  window's count. The condition holds when the drop is at least
  RTDASH_ALERT_ORDERS_DROP_THRESHOLD (0.5) while the earlier window had at least
  RTDASH_ALERT_ORDERS_MIN_VOLUME (20) orders; an earlier window without orders
  gives value 0 and never holds (no division).
* ``gateway_5xx_share``: the share of non-bot gateway requests answered 5xx
  over the trailing RTDASH_ALERT_5XX_WINDOW_MINUTES (5); holds when it is above
  RTDASH_ALERT_5XX_THRESHOLD (0.05) with at least RTDASH_ALERT_5XX_MIN_REQUESTS
  (20) requests in the window (no requests: share 0). No baseline.

A rule whose condition holds becomes ``pending``; once the condition has held
for its pending period (RTDASH_ALERT_ORDERS_PENDING_SECONDS, 300, and
RTDASH_ALERT_5XX_PENDING_SECONDS, 60) it is ``firing``, at once when that
period is 0. A firing rule whose condition no longer holds is ``resolved``
and back to normal; a pending one goes back to normal silently, as in Grafana.
Each change (pending, firing, resolved) is one AlertStateChanged JSON on the
Kafka topic RTDASH_ALERTS_TOPIC, key = rule name; the dashboard channel
``alerts`` carries ``{"alerts": [{"rule", "state", "since", "value",
"baseline", "message"}]}``, the rules pending or firing now, republished
whenever that list or a value in it changes.

Clock: Spark's ``rate-micro-batch`` source gives one row per micro-batch, and
a processing-time trigger of the evaluation interval starts one batch per
interval whether or not anything happened (a drop in orders is a time when
no order arrives; a query on `orders` would have no batch to evaluate in). The
batch's rows are not read: its foreachBatch evaluates the rules at the tick
it belongs to (the wall clock floored to the interval; Spark starts the
batches on multiples of it), so a pending period is measured between
scheduled evaluations and a late batch does not delay a rule by a whole
interval. A stateful Spark operator with processing-time timers
(transformWithState) could be the clock too, but it would have to count
`orders` a second time, with its own dedupe state, to get the series the
orders job already keeps exactly once in Redis.

State lives in Redis, not in the checkpoint, so a restarted query neither
fires again nor forgets a firing rule; the checkpoint only numbers the ticks,
and a batch Spark replays is one more evaluation. One Lua script
(jobs/lua/alerts.lua) per evaluation replaces the rules' states, queues the
state changes in an outbox list and publishes the channel, all or nothing,
and refuses an evaluation older than the last one applied. The driver then
sends the outbox to Kafka with kafka-python's producer and trims what the
broker acknowledged: at least once, kept while Kafka is down (the channel
does not wait for it), a duplicate possible only after a crash between the
acknowledgement and the trim. A few records a day do not need Spark's Kafka
writer, which would run a Spark job per evaluation on the shared cores.

Redis keys (prefix RTDASH_REDIS_PREFIX, dates and minutes in RTDASH_TIMEZONE;
a window before midnight reads yesterday's hashes, a missing field is 0):

    read   <p>:orders:minute:<date>:count       "HH:MM" -> paid orders (jobs/redis_sink.py)
    read   <p>:traffic:minute:<date>:requests   "HH:MM" -> non-bot requests (jobs/traffic.py)
    read   <p>:traffic:minute:<date>:errors     "HH:MM" -> those answered 5xx
    write  <p>:alerts:state                     rule -> {"state", "since", "value", "baseline", "message"}
    write  <p>:alerts:evaluated                 epoch ms of the last evaluation applied
    write  <p>:alerts:outbox                    AlertStateChanged JSON not yet acknowledged by Kafka

plus the snapshot, live and seq keys of `rtdash.channels` for ``alerts``.

Usage:
    python -m jobs.alerts
    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[1]' jobs/alerts.py

`python -m jobs` runs this query in one Spark application with the others.
The query needs no Kafka connector (its source is a clock; it produces with
kafka-python from the driver). Its checkpoint is <RTDASH_HOME>/checkpoints/alerts.

Settings (environment, see README): RTDASH_ALERT_RULES, RTDASH_ALERTS_EVAL_SECONDS,
RTDASH_ALERT_ORDERS_WINDOW_MINUTES, RTDASH_ALERT_ORDERS_DROP_THRESHOLD,
RTDASH_ALERT_ORDERS_MIN_VOLUME, RTDASH_ALERT_ORDERS_PENDING_SECONDS,
RTDASH_ALERT_5XX_WINDOW_MINUTES, RTDASH_ALERT_5XX_THRESHOLD,
RTDASH_ALERT_5XX_MIN_REQUESTS, RTDASH_ALERT_5XX_PENDING_SECONDS,
RTDASH_ALERTS_TOPIC, RTDASH_KAFKA_BOOTSTRAP / RTDASH_KAFKA_PORT,
RTDASH_REDIS_URL, RTDASH_REDIS_PREFIX, RTDASH_TIMEZONE, RTDASH_HOME,
RTDASH_SPARK_MASTER, RTDASH_BIND_HOST and RTDASH_JOBS_HEALTH_PORT (GET /healthz).
The --trigger-seconds argument of the shared job runner does not apply to
this query. SIGTERM or Ctrl-C stops the query and the session.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Protocol
from zoneinfo import ZoneInfo

import redis
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from rtdash.channels import ALERTS, live_channel, seq_key, snapshot_key
from rtdash.contracts import AlertStateChanged, format_ts, parse_ts, to_json
from rtdash.settings import Settings

log = logging.getLogger("rtdash.jobs.alerts")

QUERY_NAME = "alerts"
ORDERS_DROP = "orders_drop"
GATEWAY_5XX_SHARE = "gateway_5xx_share"

# The per-minute series the rules read: hash name by date, field "HH:MM" -> count.
SERIES = {
    "orders": "{prefix}:orders:minute:{date}:count",         # written by jobs/redis_sink.py
    "requests": "{prefix}:traffic:minute:{date}:requests",   # written by jobs/traffic.py
    "errors": "{prefix}:traffic:minute:{date}:errors",
}


# --- the rules: pure, no I/O -----------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """One series summed over `minutes` whole minutes, ending `back` minutes before the current one begins."""

    series: str
    minutes: int
    back: int = 0

    def fields(self, now: datetime, tz: ZoneInfo) -> list[tuple[str, str]]:
        """The (date, "HH:MM") fields of the window at `now`, dates and minutes in `tz`.

        A window across midnight spans two dates. Distinct fields only: on the
        night a clock goes back, the repeated hour shares its fields.
        """
        end = now.astimezone(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=self.back)
        minutes = (end - timedelta(minutes=m) for m in range(self.minutes, 0, -1))
        fields = ((local.strftime("%Y-%m-%d"), local.strftime("%H:%M")) for local in
                  (minute.astimezone(tz) for minute in minutes))
        return list(dict.fromkeys(fields))


@dataclass(frozen=True)
class Reading:
    """A rule's result at one evaluation."""

    holds: bool            # the alert condition
    value: float
    baseline: float | None
    message: str


class Rule(Protocol):
    name: str
    pending: timedelta

    def windows(self) -> tuple[Window, ...]: ...

    def read(self, sums: Mapping[Window, int]) -> Reading: ...


@dataclass(frozen=True)
class OrdersDrop:
    """Paid orders in the trailing window against the window before it."""

    window_minutes: int
    threshold: float
    min_volume: int
    pending: timedelta
    name: str = ORDERS_DROP

    def windows(self) -> tuple[Window, Window]:
        return Window("orders", self.window_minutes), Window("orders", self.window_minutes, self.window_minutes)

    def read(self, sums: Mapping[Window, int]) -> Reading:
        current_window, previous_window = self.windows()
        current, previous = sums[current_window], sums[previous_window]
        drop = 1 - current / previous if previous > 0 else 0.0
        span = f"{self.window_minutes} min"
        if previous < self.min_volume:
            verdict = f"too few in the earlier window to compare (at least {self.min_volume})"
        else:
            verdict = f"{'down' if drop >= 0 else 'up'} {abs(drop):.0%} (alert at a drop of {self.threshold:.0%})"
        return Reading(holds=previous >= self.min_volume and drop >= self.threshold, value=drop,
                       baseline=float(previous),
                       message=f"{current} paid orders in the last {span}, {previous} in the {span} before: "
                               + verdict)


@dataclass(frozen=True)
class ErrorShare:
    """Share of gateway requests answered 5xx in the trailing window."""

    window_minutes: int
    threshold: float
    min_requests: int
    pending: timedelta
    name: str = GATEWAY_5XX_SHARE

    def windows(self) -> tuple[Window, Window]:
        return Window("errors", self.window_minutes), Window("requests", self.window_minutes)

    def read(self, sums: Mapping[Window, int]) -> Reading:
        errors_window, requests_window = self.windows()
        errors, requests = sums[errors_window], sums[requests_window]
        share = errors / requests if requests > 0 else 0.0
        return Reading(holds=requests >= self.min_requests and share > self.threshold, value=share, baseline=None,
                       message=f"{errors} of {requests} gateway requests answered 5xx in the last "
                               f"{self.window_minutes} min ({share:.1%}; alert above {self.threshold:.1%} "
                               f"with at least {self.min_requests} requests)")


def rules_from(settings: Settings) -> list[Rule]:
    """The rules RTDASH_ALERT_RULES names, with their settings."""
    known = {
        ORDERS_DROP: lambda: OrdersDrop(settings.alert_orders_window_minutes, settings.alert_orders_drop_threshold,
                                        settings.alert_orders_min_volume,
                                        timedelta(seconds=settings.alert_orders_pending_seconds)),
        GATEWAY_5XX_SHARE: lambda: ErrorShare(settings.alert_5xx_window_minutes, settings.alert_5xx_threshold,
                                              settings.alert_5xx_min_requests,
                                              timedelta(seconds=settings.alert_5xx_pending_seconds)),
    }
    names = list(dict.fromkeys(name.strip() for name in settings.alert_rules.split(",") if name.strip()))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown alert rules {unknown} in RTDASH_ALERT_RULES (known: {', '.join(known)})")
    return [known[name]() for name in names]


@dataclass(frozen=True)
class AlertState:
    """A rule that is pending or firing (a rule in neither state is normal and has none)."""

    state: str             # "pending" or "firing"
    since: datetime        # when it entered that state
    value: float
    baseline: float | None
    message: str

    def record(self) -> dict:
        return {"state": self.state, "since": format_ts(self.since), "value": self.value,
                "baseline": self.baseline, "message": self.message}

    @classmethod
    def from_record(cls, record: Mapping) -> AlertState:
        return cls(record["state"], parse_ts(record["since"]), record["value"], record["baseline"],
                   record["message"])


def evaluate(rules: Sequence[Rule], states: Mapping[str, AlertState], readings: Mapping[str, Reading],
             now: datetime) -> tuple[dict[str, AlertState], list[AlertStateChanged]]:
    """One evaluation at `now`: (the rules pending or firing afterwards, the state changes to announce).

    Grafana's semantics: a condition that holds makes a normal rule pending
    (firing at once with a pending period of 0); a pending rule fires once the
    condition has held for its pending period; a firing rule stays firing
    while the condition holds and is resolved when it no longer does; a
    pending rule whose condition no longer holds is normal again, silently.
    A rule no longer configured is dropped (resolved if it was firing).
    """
    after: dict[str, AlertState] = {}
    changes: list[AlertStateChanged] = []

    def announce(name: str, state: str, since: datetime, reading: Reading) -> None:
        changes.append(AlertStateChanged(rule=name, state=state, since=since, value=reading.value,
                                         baseline=reading.baseline, message=reading.message, evaluated_at=now))

    for rule in rules:
        reading, before = readings[rule.name], states.get(rule.name)
        if reading.holds:
            if before is None:
                state, since = ("firing" if rule.pending <= timedelta(0) else "pending"), now
            elif before.state == "pending" and now - before.since >= rule.pending:
                state, since = "firing", now
            else:
                state, since = before.state, before.since
            after[rule.name] = AlertState(state, since, reading.value, reading.baseline, reading.message)
            if before is None or before.state != state:
                announce(rule.name, state, since, reading)
        elif before is not None and before.state == "firing":
            announce(rule.name, "resolved", now, reading)
    configured = {rule.name for rule in rules}
    for name, before in states.items():
        if name not in configured and before.state == "firing":
            announce(name, "resolved", now, Reading(False, before.value, before.baseline,
                                                    "rule no longer in RTDASH_ALERT_RULES"))
    return after, changes


def channel_data(states: Mapping[str, AlertState]) -> dict:
    """The `alerts` channel's data: the rules pending or firing, by rule name."""
    return {"alerts": [{"rule": name, **states[name].record()} for name in sorted(states)]}


def tick(epoch_seconds: float, interval_seconds: float) -> datetime:
    """The evaluation a wall-clock time belongs to: the time floored to a multiple of the interval."""
    millis, step = int(epoch_seconds * 1000), max(1, round(interval_seconds * 1000))
    return datetime.fromtimestamp((millis - millis % step) / 1000, timezone.utc)


# --- Redis and Kafka -------------------------------------------------------------------------

def _text(data) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class AlertStore:
    """The rules' series and states in Redis, and the outbox of state changes for Kafka."""

    def __init__(self, client: redis.Redis, prefix: str, tz: ZoneInfo):
        self.client = client
        self.prefix = prefix
        self.tz = tz
        self.states_key = f"{prefix}:alerts:state"
        self.evaluated_key = f"{prefix}:alerts:evaluated"
        self.outbox_key = f"{prefix}:alerts:outbox"
        self._script = client.register_script((resources.files("jobs") / "lua" / "alerts.lua").read_text())
        self._keys = [self.states_key, self.evaluated_key, self.outbox_key, snapshot_key(prefix, ALERTS),
                      live_channel(prefix, ALERTS), seq_key(prefix, ALERTS)]

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
            _text(channel_data(states)), _text([to_json(change).decode() for change in changes])]))

    def outbox(self) -> list[bytes]:
        return self.client.lrange(self.outbox_key, 0, -1)

    def acknowledged(self, count: int) -> None:
        """Drop the first `count` outbox entries (Kafka has them)."""
        self.client.ltrim(self.outbox_key, count, -1)


def deliver(store: AlertStore, settings: Settings) -> int:
    """Send the outbox to Kafka (key = rule name) and trim what was acknowledged; returns how many.

    A producer per delivery: state changes are rare, and no producer outlives
    the query. On a Kafka error the outbox stays for the next evaluation.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    pending = store.outbox()
    if not pending:
        return 0
    producer = None
    try:
        # Bounded waits: with Kafka down, an evaluation gives up after about five seconds.
        producer = KafkaProducer(bootstrap_servers=settings.kafka_servers, client_id="rtdash-alerts", acks="all",
                                 bootstrap_timeout_ms=5_000, max_block_ms=5_000, request_timeout_ms=5_000,
                                 delivery_timeout_ms=10_000)
        sent = [producer.send(settings.alerts_topic, key=json.loads(value)["rule"].encode(), value=value)
                for value in pending]
        for future in sent:
            future.get(timeout=15)
    except (KafkaError, OSError) as exc:
        log.warning("%d alert state changes wait for Kafka: %s", len(pending), exc)
        return 0
    finally:
        if producer is not None:
            producer.close(timeout=5)
    store.acknowledged(len(pending))
    return len(pending)


# --- the query ---------------------------------------------------------------------------------

class Evaluation:
    """foreachBatch: evaluate the rules at the batch's tick, store the result, send the state changes.

    The batch itself (the clock's one row) is not read: no Spark job runs.
    """

    def __init__(self, settings: Settings, rules: Sequence[Rule], store: AlertStore, *,
                 clock: Callable[[], float] = time.time,
                 send: Callable[[AlertStore, Settings], int] = deliver):
        self.settings = settings
        self.rules = list(rules)
        self.store = store
        self.clock = clock
        self.send = send

    def __call__(self, batch: DataFrame | None, batch_id: int) -> None:
        now = tick(self.clock(), self.settings.alerts_eval_seconds)
        sums = self.store.sums([window for rule in self.rules for window in rule.windows()], now)
        readings = {rule.name: rule.read(sums) for rule in self.rules}
        states, changes = evaluate(self.rules, self.store.states(), readings, now)
        outcome = self.store.apply(now, states, changes)
        if outcome < 0:
            log.warning("evaluation %d at %s skipped: a later one was applied", batch_id, format_ts(now))
            return
        for change in changes:
            log.info("alert %s %s: %s", change.rule, change.state, change.message)
        self.send(self.store, self.settings)


def query_name(settings: Settings) -> str:
    """`alerts`, qualified with the Redis prefix when it is not the default (names are unique per session)."""
    return QUERY_NAME if settings.redis_prefix == "rtdash" else f"{QUERY_NAME}[{settings.redis_prefix}]"


def read_ticks(spark: SparkSession) -> DataFrame:
    """The clock: one row per micro-batch, whenever the trigger starts one."""
    return (spark.readStream.format("rate-micro-batch")
            .option("rowsPerBatch", 1).option("numPartitions", 1).load())


def write_alerts(ticks: DataFrame, settings: Settings, evaluation: Evaluation) -> StreamingQuery:
    """One evaluation per tick of the processing-time trigger."""
    return (ticks.writeStream
            .queryName(query_name(settings))
            .outputMode("append")
            .option("checkpointLocation", str((settings.checkpoints_dir / "alerts").resolve()))
            .trigger(processingTime=f"{max(1, round(settings.alerts_eval_seconds * 1000))} milliseconds")
            .foreachBatch(evaluation)
            .start())


def start(spark: SparkSession, settings: Settings) -> StreamingQuery:
    """Start the query in `spark` (the job's main, `python -m jobs` and the tests use this)."""
    rules = rules_from(settings)
    store = AlertStore(redis.Redis.from_url(settings.redis), settings.redis_prefix, settings.tz)
    # ticks -> the rules over the Redis series -> states and channel in Redis, changes to Kafka
    return write_alerts(read_ticks(spark), settings, Evaluation(settings, rules, store))


def main() -> None:
    from jobs.service import QuerySpec, run_job

    run_job([QuerySpec("alerts", start)], app_name="rtdash-alerts", description=__doc__)


if __name__ == "__main__":
    main()
