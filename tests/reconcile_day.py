"""A day of its own on the test session's Kafka and Redis, for `rtdash reconcile`'s tests.

Topics, Redis prefix, home (order database, checkpoints) and ports of one test
module only, an order service, the Spark jobs' process (`python -m jobs`, as
`rtdash up` runs it) and, in the real-time orders mode, the orders applier.
Paid orders go through the order service (ground truth: its database);
gateway events of shoppers and crawlers go straight to the gateway topic
(ground truth: tests/traffic_model.py, the rules recomputed in plain Python).
The command runs as a user runs it, in a process of its own with its own Spark.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import redis
from sqlalchemy import select

from bench.gateway_events import ShopperLog
from producers.order_service.store import orders
from rtdash.channels import ORDERS_TODAY, TRAFFIC_TODAY, snapshot_key
from rtdash.contracts import OrderPaid, to_json
from rtdash.database import make_engine
from rtdash.kafka_admin import ensure_topics, pipeline_topics
from rtdash.kafka_producer import make_producer
from rtdash.keys import demo_keys
from rtdash.settings import Settings
from stack.drill_checks import read_truth
from stack.runner import Service
from stack.services import python_service, realtime_orders
from stack.testing import free_port

from traffic_model import Expected
from waiting import eventually

RTDASH = Path(sys.executable).with_name("rtdash")


@dataclass
class Day:
    """The module's stack and what it was sent: the traffic model is the traffic figures' ground truth."""

    settings: Settings
    jobs: Service
    traffic: Expected
    log: ShopperLog

    def truth(self, day: str):
        engine = make_engine(self.settings.database)
        try:
            return read_truth(engine, day, self.settings.tz)
        finally:
            engine.dispose()


@contextmanager
def day_stack(stack_settings: Settings, home: Path, name: str, **extra) -> Iterator[Day]:
    """Topics, Redis prefix, home and ports named `name`; an order service, the Spark jobs' process and, in the
    real-time orders mode, the orders applier."""
    update = {"home": home, "redis_prefix": name, "orders_topic": f"orders.{name}",
              "orders_dlq_topic": f"orders.{name}.dlq", "gateway_topic": f"gateway.{name}",
              "gateway_dlq_topic": f"gateway.{name}.dlq", "alerts_topic": f"alerts.{name}", "alert_rules": "",
              "order_service_port": free_port(), "order_service_internal_port": free_port(),
              "order_service_internal_url": "", "jobs_health_port": free_port(),
              "orders_realtime_topic": f"orders.{name}.rows", **extra}
    if "gateway_topic_partitions" in Settings.model_fields:
        update["gateway_topic_partitions"] = 3   # offset ranges over several partitions
    settings = stack_settings.model_copy(update=update)
    demo_keys(settings)
    ensure_topics(settings, pipeline_topics(settings))
    with ExitStack() as services:
        services.enter_context(python_service(settings, "order_service", "producers.order_service",
                                              settings.order_service_port))
        jobs = services.enter_context(python_service(settings, "spark_jobs", "jobs", settings.jobs_health_port,
                                                     ready_timeout=180))
        for applier in realtime_orders(settings):
            services.enter_context(applier)
        yield Day(settings, jobs, Expected(settings.tz, settings.traffic_lateness_seconds),
                  ShopperLog(seed=14, visitors=400, users=60))


def shoppers(day: Day, sessions: int) -> list[bytes]:
    """`sessions` sessions of the last four minutes (none after now) onto the gateway topic; their values."""
    now = datetime.now(timezone.utc)
    producer = make_producer(day.settings.kafka_servers, client_id="rtdash-tests")
    values = []
    for n in range(sessions):
        start = now - timedelta(minutes=4) + timedelta(seconds=60 * n / sessions)
        for at, event in day.log.session(start):
            if at > now:
                break
            key, value = day.log.record(event)
            producer.produce(day.settings.gateway_topic, key=key, value=value)
            values.append(value)
    assert producer.flush(30) == 0, "events not acknowledged by Kafka"
    return values


def republish(day: Day, count: int) -> None:
    """What an at-least-once relay may do: the events of `count` stored orders once more; and a record that is
    not an order (a dead letter for the job)."""
    engine = make_engine(day.settings.database)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(orders).limit(count)).mappings().all()
    finally:
        engine.dispose()
    producer = make_producer(day.settings.kafka_servers, client_id="rtdash-tests")
    for row in rows:
        event = OrderPaid(order_id=row["order_id"], trade_no=row["trade_no"], amount_cents=row["amount_cents"],
                          paid_at=at(row["paid_at_ms"]), trade_status=row["trade_status"],
                          notify_id=row["notify_id"], recorded_at=at(row["recorded_at_ms"]))
        producer.produce(day.settings.orders_topic, key=event.key(), value=to_json(event))
    producer.produce(day.settings.orders_topic, key=b"broken", value=b"not an order")
    assert producer.flush(30) == 0 and len(rows) == count


def at(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, timezone.utc)


def snapshot(settings: Settings, channel: str) -> dict | None:
    client = redis.Redis.from_url(settings.redis)
    try:
        raw = client.get(snapshot_key(settings.redis_prefix, channel))
        return json.loads(raw)["data"] if raw else None
    finally:
        client.close()


def caught_up(day: Day) -> str:
    """Wait until the dashboard shows the database's orders and the model's page views; the day it shows."""
    def holds() -> str:
        orders, traffic = snapshot(day.settings, ORDERS_TODAY), snapshot(day.settings, TRAFFIC_TODAY)
        assert orders is not None and traffic is not None, "no snapshots yet"
        truth = day.truth(orders["date"])
        assert (orders["count"], orders["amount_cents"]) == (truth.count, truth.amount_cents)
        assert traffic["page_views"] == day.traffic.traffic_today()["page_views"]
        return orders["date"]

    return eventually(holds, timeout=180, interval=0.5, what="the dashboard showing what was sent")


@dataclass(frozen=True)
class Row:
    live: int | None
    batch: int | None
    difference: str
    agrees: str


def run_reconcile(settings: Settings, *args: str) -> tuple[int, dict[str, Row], str]:
    """`rtdash reconcile` as a user runs it; (exit status, its table's rows by figure, its output)."""
    proc = subprocess.run([str(RTDASH), "reconcile", *args], env=os.environ | settings.child_env(),
                          capture_output=True, text=True, timeout=300)
    def number(text: str) -> int | None:
        return None if text == "-" else int(text.replace(",", ""))
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) == 5 and cells[0] and cells[0] != "figure":
            rows[cells[0]] = Row(number(cells[1]), number(cells[2]), cells[3], cells[4])
    return proc.returncode, rows, proc.stdout + proc.stderr


def assert_batch_is_the_truth(rows: dict[str, Row], day: Day, shown: str) -> None:
    truth = day.truth(shown)
    expected = day.traffic.traffic_today()
    assert truth.count > 0 and expected["page_views"] > 0 and expected["searches"] > 0
    for source in ("", " (order database)"):
        assert rows[f"orders.today count{source}"].batch == truth.count
        assert rows[f"orders.today amount_cents{source}"].batch == truth.amount_cents
        assert rows[f"orders.per_minute minutes{source}"].batch == len(truth.minutes)
    for name in ("page_views", "visitors", "logged_in_users", "searches", "bot_requests"):
        assert rows[f"traffic.today {name}"].batch == expected[name], name   # the batch's unique counts are exact
    assert rows["traffic.per_minute minutes"].batch == len(day.traffic.traffic_per_minute()["minutes"])
    assert rows["search.terms.today top 20"].batch == len(day.traffic.search_terms_today()["terms"])
    assert rows["search.products.today top 20"].batch == len(day.traffic.search_products_today()["products"])


