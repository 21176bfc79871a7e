"""The notebooks run top to bottom against the test stack and agree with the ground truth: the order
store's orders of the day the dashboard shows, and the gateway's events counted by the traffic rules in
plain Python (tests/traffic_model.py)."""
from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
import redis
from kafka import KafkaConsumer
from nbclient import NotebookClient

from bench.gateway_events import ShopperLog
from paying import paid_on, pay
from producers.traffic import TrafficConfig, TrafficSimulator
from rtdash.channels import ORDERS_TODAY, TRAFFIC_TODAY, snapshot_key
from rtdash.kafka_producer import make_producer
from rtdash.traffic_rules import is_page_view, normalise_search_term
from traffic_model import Expected
from waiting import eventually

pytestmark = pytest.mark.integration
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def snapshot_of_the_stored_orders(settings, store, not_before: date, timeout: float = 90) -> dict:
    """The `orders.today` snapshot, once it holds the store's totals of the day it is for (not before
    `not_before`: a snapshot of an earlier day was written before the orders of this test)."""
    client = redis.Redis.from_url(settings.redis)

    def caught_up() -> dict | bool:
        raw = client.get(snapshot_key(settings.redis_prefix, ORDERS_TODAY))
        data = json.loads(raw)["data"] if raw else None
        if data is None or data["date"] < not_before.isoformat():
            return False
        if (data["count"], data["amount_cents"]) != paid_on(store, data["date"], settings.tz):
            return False
        return data

    try:
        return eventually(caught_up, timeout=timeout, interval=0.2, what="the snapshot holding the stored orders")
    finally:
        client.close()


def run_notebook(name: str, settings, monkeypatch, timeout: float = 120) -> dict:
    """Execute notebooks/`name` top to bottom with the stack's settings; the JSON its last cell prints last."""
    for variable, value in settings.child_env().items():
        monkeypatch.setenv(variable, value)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return json.loads(notebook.cells[-1].outputs[-1]["text"].strip().splitlines()[-1])


def test_notebooks_are_committed_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert [cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"] == \
            [[] for cell in notebook.cells if cell.cell_type == "code"], path.name


def topic_values(settings, topic: str) -> list[bytes]:
    """Every record value of `topic`, once the topic has stopped growing (nothing new for three seconds)."""
    def read() -> list[bytes]:
        consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_servers, auto_offset_reset="earliest",
                                 enable_auto_commit=False, group_id=None, consumer_timeout_ms=3000)
        try:
            return [record.value for record in consumer]
        finally:
            consumer.close()

    seen: list[list[bytes]] = [read()]

    def settled() -> list[bytes] | bool:
        seen.append(read())
        return seen[-1] if len(seen[-1]) == len(seen[-2]) else False
    return eventually(settled, timeout=60, interval=0, what=f"{topic} to stop growing")


def test_gateway_notebook_counts_the_day_by_the_traffic_rules_and_follows_the_funnel(
        shop_behind_gateway, stack_settings, monkeypatch):
    config = TrafficConfig(users=20, rate=4, duration=5, seed=8, think_time=0.05, view_rate=0.9, cart_rate=0.8,
                           pay_rate=1.0, bot_share=0.1, logged_in_share=0.5, accounts=50)
    report = asyncio.run(TrafficSimulator(f"http://127.0.0.1:{stack_settings.gateway_port}", config).run())
    assert report.orders and report.errors == 0
    bought = {order["order_id"] for order in report.orders}
    # Paid by the provider's notify through the gateway, then published by the order service's relay.
    eventually(lambda: bought <= {json.loads(v)["order_id"] for v in topic_values(stack_settings,
                                                                               stack_settings.orders_topic)},
               timeout=60, what="the simulated shoppers' orders on the orders topic")
    expected = Expected(stack_settings.tz, stack_settings.traffic_lateness_seconds)
    expected.add_phase(topic_values(stack_settings, stack_settings.gateway_topic))
    truth = expected.traffic_today()

    summary = run_notebook("gateway_traffic.ipynb", stack_settings, monkeypatch, timeout=300)
    assert summary["date"] == truth["date"]
    for name in ("page_views", "visitors", "logged_in_users", "searches", "bot_requests"):
        assert summary[name] == truth[name], name
    searched_terms = {normalise_search_term(e.search_term) for e, bot in expected.counted
                      if is_page_view(e.method, e.status, e.path, bot)
                      and e.started_at.astimezone(stack_settings.tz).date().isoformat() == truth["date"]}
    assert summary["distinct_terms"] == len(searched_terms - {None})
    # Every order of this run was paid through the gateway; no paid order comes without a checkout.
    assert len(bought) <= summary["paid_orders"] <= summary["checkouts"] <= summary["product_views"]
    assert 0 < summary["visitors_checked_out"] <= summary["visitors_viewed_a_product"]


def test_reconcile_notebook_finds_the_day_in_agreement(pipeline, traffic_query, stack_settings, ground_truth,
                                                       monkeypatch):
    first_day = datetime.now(stack_settings.tz).date()
    pay(stack_settings, 20, rate=20, seed=5, duplicate_share=0.2)
    log = ShopperLog(seed=9, visitors=200, users=40)
    producer = make_producer(stack_settings.kafka_servers, client_id="rtdash-tests")
    now = datetime.now(timezone.utc)
    for n in range(30):
        for at, event in log.session(now - timedelta(minutes=3) + timedelta(seconds=2 * n)):
            if at <= now:
                key, value = log.record(event)
                producer.produce(stack_settings.gateway_topic, key=key, value=value)
    assert producer.flush(30) == 0
    shown = snapshot_of_the_stored_orders(stack_settings, ground_truth, first_day)
    client = redis.Redis.from_url(stack_settings.redis)
    try:
        eventually(lambda: (raw := client.get(snapshot_key(stack_settings.redis_prefix, TRAFFIC_TODAY)))
                   and json.loads(raw)["data"]["date"] == shown["date"], timeout=90, what="today's traffic snapshot")
    finally:
        client.close()

    summary = run_notebook("reconcile_day.ipynb", stack_settings, monkeypatch, timeout=300)
    assert summary["ok"] is True, summary["differing"]
    assert summary["date"] == shown["date"]
    stored = paid_on(ground_truth, shown["date"], stack_settings.tz)
    figures = summary["figures"]
    assert (figures["orders.today count (order database)"]["batch"],
            figures["orders.today amount_cents (order database)"]["batch"]) == stored
    assert figures["orders.today count"]["batch"] == stored[0]
    assert figures["traffic.today page_views"]["batch"] > 0


def test_orders_notebook_recomputes_the_dashboard_from_the_topic(pipeline, stack_settings, ground_truth,
                                                                  monkeypatch):
    first_day = datetime.now(stack_settings.tz).date()
    report = pay(stack_settings, 30, rate=30, seed=3, duplicate_share=0.2)
    assert report.accepted_orders > 0
    shown = snapshot_of_the_stored_orders(stack_settings, ground_truth, first_day)

    summary = run_notebook("orders_topic_vs_dashboard.ipynb", stack_settings, monkeypatch)
    assert summary["dashboard"] == shown
    assert summary["topic"] == {"date": shown["date"], "count": shown["count"], "amount_cents": shown["amount_cents"]}
    assert summary["agree"] is True
