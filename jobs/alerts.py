"""Alerts job: Grafana-style alert rules over the dashboard's per-minute series.

Every RTDASH_ALERTS_EVAL_SECONDS the query evaluates each rule of
RTDASH_ALERT_RULES (``orders_drop``, ``gateway_5xx_share``: jobs/alerts_rules.py)
over the per-minute series the orders and traffic jobs keep in Redis. Each
state change (pending, firing, resolved) is one AlertStateChanged JSON on the
Kafka topic RTDASH_ALERTS_TOPIC, key = rule name; the dashboard channel
``alerts`` carries ``{"alerts": [{"rule", "state", "since", "value",
"baseline", "message"}]}``, the rules pending or firing now, republished
whenever that list or a value in it changes. States, outbox and keys:
jobs/alerts_sink.py.

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
orders job already keeps exactly once in Redis. The checkpoint only numbers
the ticks, and a batch Spark replays is one more evaluation.

Usage:
    python -m jobs.alerts
    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[1]' jobs/alerts.py

`python -m jobs` runs this query in one Spark application with the others.
The query needs no Kafka connector (its source is a clock; the driver
produces the state changes itself). Its checkpoint is <RTDASH_HOME>/checkpoints/alerts.

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

import logging
import time
from collections.abc import Callable, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from jobs.alerts_rules import Rule, evaluate, rules_from, tick
from jobs.alerts_sink import AlertStore, deliver
from jobs.checkpoint import checkpoint_location
from rtdash.contracts import format_ts
from rtdash.redis_client import redis_client
from rtdash.settings import Settings

log = logging.getLogger("rtdash.jobs.alerts")

QUERY_NAME = "alerts"


def query_name(settings: Settings) -> str:
    """`alerts`, qualified with the Redis prefix when it is not the default (names are unique per session)."""
    return QUERY_NAME if settings.redis_prefix == "rtdash" else f"{QUERY_NAME}[{settings.redis_prefix}]"


def read_ticks(spark: SparkSession) -> DataFrame:
    """The clock: one row per micro-batch, whenever the trigger starts one."""
    return (spark.readStream.format("rate-micro-batch")
            .option("rowsPerBatch", 1).option("numPartitions", 1).load())


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


def write_alerts(ticks: DataFrame, settings: Settings, evaluation: Evaluation) -> StreamingQuery:
    """One evaluation per tick of the processing-time trigger."""
    return (ticks.writeStream
            .queryName(query_name(settings))
            .outputMode("append")
            .option("checkpointLocation", checkpoint_location(settings, "alerts"))
            .trigger(processingTime=f"{max(1, round(settings.alerts_eval_seconds * 1000))} milliseconds")
            .foreachBatch(evaluation)
            .start())


def start(spark: SparkSession, settings: Settings) -> StreamingQuery:
    """Start the query in `spark` (the job's main, `python -m jobs` and the tests use this)."""
    rules = rules_from(settings)
    store = AlertStore(redis_client(settings), settings.redis_prefix, settings.tz,
                       history_size=settings.push_history_size, history_seconds=settings.push_history_seconds)
    # ticks -> the rules over the Redis series -> states and channel in Redis, changes to Kafka
    return write_alerts(read_ticks(spark), settings, Evaluation(settings, rules, store))


def main() -> None:
    from jobs.service import QuerySpec, run_job

    run_job([QuerySpec("alerts", start)], app_name="rtdash-alerts", description=__doc__)


if __name__ == "__main__":
    main()
