"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

The page must show today's totals from the snapshot, flip to "live", and
update without a reload when new orders are paid or shoppers browse; all of it
with no asset from outside the push server (the machine has no internet, like
many shop floors) and nothing the page's Content-Security-Policy refuses.

The page opens with an access token in its fragment (as `rtdash token` and
`make demo` give it). Three tests: paid orders through the whole pipeline
(and the payment-to-screen readout they feed); every traffic panel fed with
envelopes written straight into Redis (its own push server and key prefix, so
the figures are exactly known: live merges, alerts, hostile search terms); and
shoppers from the traffic simulator through the gateway and the traffic job,
with the page compared to the job's Redis snapshots and to the `gateway`
topic. The page's own behaviour (access, resume, readouts, phone width):
test_dashboard_page.py.
"""
from __future__ import annotations

import asyncio
import json
import re
import threading
from datetime import date, datetime, timedelta

import pytest
import redis

from dashboard_browser import (browser, digits, injected_dashboard, on_page, shows_number,  # noqa: F401
                               shows_text, watched)
from paying import paid_on, pay
from rtdash import channels
from waiting import eventually

pytestmark = pytest.mark.integration


def ranked(page, list_id: str) -> list[tuple[str, int]]:
    """(label, count) of each entry of a ranked list, top first."""
    labels = page.locator(f"#{list_id} li.item .label").all_text_contents()
    counts = page.locator(f"#{list_id} li.item .count").all_text_contents()
    return [(label, digits(n)) for label, n in zip(labels, counts)]


def route_row(page, route: str) -> dict[str, str]:
    """The cells of a route's row in the route health table, by class ('' when the row is absent)."""
    row = page.locator(f'#routes-body tr[data-route="{route}"]')
    if row.count() != 1:
        return {}
    keys = ("requests", "errors", "p50", "p95", "requests-5m", "errors-5m", "error-rate")
    cells = {key: row.locator(f"td.{key}").text_content() for key in keys}
    cells["status"] = row.locator("td.status").text_content()
    return cells


def shows_stored_orders(page, store, settings, not_before: date) -> tuple[str, int, int]:
    """Wait until the page shows the stored orders of the day it shows (not before `not_before`):
    that day, its count and its amount in cents."""
    def shown() -> tuple[str, int, int]:
        day = page.text_content("#orders-date")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", day) and day >= not_before.isoformat(), f"the page's day is {day!r}"
        count, amount = paid_on(store, day, settings.tz)
        on_screen = (digits(page.text_content("#orders-count")), digits(page.text_content("#orders-amount")))
        assert on_screen == (count, amount), f"{on_screen} on the page, {(count, amount)} stored for {day}"
        return day, count, amount
    return on_page(page, shown, "the stored orders of the page's day")


def test_dashboard_shows_live_totals_and_updates_without_reload(watched, pipeline, stack_settings, ground_truth):
    first_day = datetime.now(stack_settings.tz).date()
    w = watched(f"http://127.0.0.1:{stack_settings.push_port}")
    _, before, _ = shows_stored_orders(w.page, ground_truth, stack_settings, first_day)

    report = pay(stack_settings, 10, seed=21)
    assert report.accepted_orders == 10
    # Amounts as the page writes them: ¥1,234.50 -> 123450 cents.
    day, count, _ = shows_stored_orders(w.page, ground_truth, stack_settings, first_day)
    assert count >= before + 10 or day > first_day.isoformat()   # the new orders, unless midnight passed
    # Each live orders.today update says when its newest payment was recorded: the page's readout has them.
    on_page(w.page, lambda: int(w.page.get_attribute("#latency", "data-samples")) >= 1, "a payment-to-screen figure")
    assert 0 < int(w.page.get_attribute("#latency", "data-last-ms")) < 60_000
    w.assert_clean()


# --- every traffic panel, fed straight through Redis ---------------------------------------

HOSTILE_TERM = "<script>document.title='owned'</script>"
HOSTILE_MESSAGE = '5xx share 12% on shop <img src=x onerror="document.title=1">'


def test_traffic_panels_show_snapshots_merge_live_minutes_and_raise_alerts(watched, injected_dashboard):
    origin, publisher, settings, _ = injected_dashboard
    # A fixed day that is not the page's today, so the page draws the data's own last hour (as around
    # midnight, when the job counts in event time) and nothing depends on when the test runs.
    now = datetime(2024, 2, 29, 10, 1, 30, tzinfo=settings.tz)
    today, tomorrow = now.date().isoformat(), (now + timedelta(days=1)).date().isoformat()
    this_minute, minute_before = "10:01", "10:00"

    publisher.send("traffic.today", {"date": today, "page_views": 12345, "visitors": 678, "logged_in_users": 90,
                                     "searches": 4321, "bot_requests": 55})
    publisher.send("traffic.per_minute", {"date": today, "minutes": {
        minute_before: {"page_views": 30, "visitors": 12, "requests": 41, "errors": 0},
        this_minute: {"page_views": 12, "visitors": 5, "requests": 20, "errors": 1}}})
    terms = [{"term": "oak table", "count": 40}, {"term": HOSTILE_TERM, "count": 7},
             {"term": "  wool   rug ", "count": 3}, {"term": "椅子", "count": 2}]
    publisher.send("search.terms.today", {"date": today, "terms": terms})
    publisher.send("search.terms.recent", {"window_start": (now - timedelta(minutes=10)).isoformat(),
                                           "window_end": now.isoformat(),
                                           "terms": [{"term": "wool rug", "count": 2}]})
    publisher.send("search.products.today", {"date": today, "products": [
        {"product_id": "p0042", "count": 19, "name": "Oak Table <b>XL</b>"}, {"product_id": "p0007", "count": 4}]})
    publisher.send("routes.per_minute", {"date": today, "minutes": {
        minute_before: {"shop": {"requests": 41, "errors": 0, "p50_ms": 3.25, "p95_ms": 18.0}},
        this_minute: {"shop": {"requests": 20, "errors": 1, "p50_ms": 4.0, "p95_ms": 120.4}}}})
    publisher.send("alerts", {"alerts": []})

    w = watched(origin)
    page = w.page
    # The snapshot of every channel, as sent.
    shows_text(page, "#traffic-page-views", "12,345")
    assert digits(page.text_content("#traffic-visitors")) == 678
    assert digits(page.text_content("#traffic-logged-in")) == 90
    assert digits(page.text_content("#traffic-searches")) == 4321
    assert "55 bot requests" in page.text_content("#traffic-bots")
    assert page.text_content("#traffic-date") == today
    assert digits(page.text_content("#traffic-hour-views")) == 42
    assert digits(page.text_content("#traffic-hour-errors")) == 1
    # Search terms are shoppers' input: shown as text, never markup.
    assert ranked(page, "terms-today") == [(t["term"], t["count"]) for t in terms]
    assert page.locator("#terms-today script, #products-today b").count() == 0
    assert page.title() != "owned"
    assert ranked(page, "terms-recent") == [("wool rug", 2)]
    assert re.fullmatch(r"\d\d:\d\d–\d\d:\d\d", page.text_content("#terms-recent-window"))
    assert ranked(page, "products-today") == [("Oak Table <b>XL</b>", 19), ("p0007", 4)]
    assert page.locator("#products-today li.item .sub").all_text_contents() == ["p0042"]
    assert route_row(page, "shop") == {"requests": "20", "errors": "1", "p50": "4.0 ms", "p95": "120 ms",
                                       "requests-5m": "61", "errors-5m": "1", "error-rate": "1.6%",
                                       "status": "errors"}
    assert page.text_content("#routes-asof").startswith(f"latest minute {this_minute}")
    assert page.is_hidden("#alert-banner") and page.is_hidden("#alerts-pending")

    # Live: a new total; a per-minute message with only the minute that changed is merged into the day.
    publisher.send("traffic.today", {"date": today, "page_views": 12400, "visitors": 680, "logged_in_users": 91,
                                     "searches": 4330, "bot_requests": 55})
    shows_text(page, "#traffic-page-views", "12,400")
    changed = {this_minute: {"page_views": 20, "visitors": 8, "requests": 30, "errors": 3}}
    publisher.send("traffic.per_minute", {"date": today, "minutes": {
        minute_before: {"page_views": 30, "visitors": 12, "requests": 41, "errors": 0}, **changed}},
        live={"date": today, "minutes": changed})
    shows_number(page, "#traffic-hour-views", 50)  # 30 kept + 20 new
    assert digits(page.text_content("#traffic-hour-errors")) == 3
    # A live route message for one route of a minute leaves the minute's other routes alone.
    publisher.send("routes.per_minute", {"date": today, "minutes": {this_minute: {
        "shop": {"requests": 20, "errors": 1, "p50_ms": 4.0, "p95_ms": 120.4},
        "order_center": {"requests": 4, "errors": 4, "p50_ms": 250.0, "p95_ms": 900.0}}}},
        live={"date": today, "minutes": {this_minute: {
            "order_center": {"requests": 4, "errors": 4, "p50_ms": 250.0, "p95_ms": 900.0}}}})
    on_page(page, lambda: route_row(page, "order_center").get("status") == "failing", "order_center failing")
    assert route_row(page, "shop")["requests-5m"] == "61"
    assert [row.get_attribute("data-route") for row in page.locator("#routes-body tr").all()] == [
        "order_center", "shop"]
    publisher.send("search.terms.recent", {"window_start": now.isoformat(), "window_end": now.isoformat(),
                                           "terms": []})
    on_page(page, lambda: page.text_content("#terms-recent li.empty"), "an empty recent list")

    # Alerts: a pending rule is only a quiet chip; a firing one raises the banner; an empty list clears both.
    pending = {"rule": "gateway_5xx_share", "state": "pending", "since": now.isoformat(), "value": 0.12,
               "baseline": None, "message": HOSTILE_MESSAGE}
    publisher.send("alerts", {"alerts": [pending]})
    page.wait_for_selector("#alerts-pending", state="visible", timeout=30_000)
    assert page.text_content("#alerts-pending") == "1 pending"
    assert page.is_hidden("#alert-banner")
    publisher.send("alerts", {"alerts": [dict(pending, state="firing"),
                                         {"rule": "orders_drop", "state": "pending", "since": now.isoformat(),
                                          "value": 3, "baseline": 40, "message": "orders down 92%"}]})
    page.wait_for_selector("#alert-banner", state="visible", timeout=30_000)
    assert page.locator("#alert-list .alert-message").all_text_contents() == [HOSTILE_MESSAGE]
    assert page.locator("#alert-list img").count() == 0
    assert "gateway_5xx_share" in page.text_content("#alert-list .alert-meta")
    assert page.text_content("#alert-title") == "Alert firing"
    assert page.text_content("#alerts-pending") == "1 pending"
    publisher.send("alerts", {"alerts": []})
    page.wait_for_selector("#alert-banner", state="hidden", timeout=30_000)
    assert page.is_hidden("#alerts-pending")

    # A message of a new day replaces the day: yesterday's minutes leave the chart.
    publisher.send("traffic.per_minute", {"date": tomorrow, "minutes": {
        "00:00": {"page_views": 7, "visitors": 7, "requests": 9, "errors": 0}}})
    shows_number(page, "#traffic-hour-views", 7)
    publisher.send("traffic.today", {"date": tomorrow, "page_views": 7, "visitors": 7, "logged_in_users": 0,
                                     "searches": 0, "bot_requests": 0})
    shows_text(page, "#traffic-date", tomorrow)
    assert digits(page.text_content("#traffic-page-views")) == 7

    # The traffic chart is uPlot's canvas, fed the hour shown: page views, visitors, 5xx.
    assert page.locator("#traffic-per-minute canvas").count() >= 1
    assert page.get_attribute("#traffic-per-minute", "data-sums") == "7,7,0"

    # A reload starts from the snapshots and shows the same (the token is kept for the tab).
    page.reload()
    shows_text(page, "#conn-state", "live", timeout=30)
    shows_number(page, "#traffic-page-views", 7)
    assert page.is_hidden("#alert-banner")
    assert on_page(page, lambda: ranked(page, "terms-today"), "terms after a reload")[1] == (HOSTILE_TERM, 7)
    w.assert_clean()


# --- shoppers through the gateway, counted by the traffic job --------------------------------

def snapshot(client: redis.Redis, prefix: str, channel: str) -> dict | None:
    raw = client.get(channels.snapshot_key(prefix, channel))
    return json.loads(raw)["data"] if raw else None


def gateway_partitions(consumer, settings) -> list:
    from kafka import TopicPartition

    topic = settings.gateway_topic
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]


def gateway_end_offsets(settings) -> dict:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=None)
    try:
        return consumer.end_offsets(gateway_partitions(consumer, settings))
    finally:
        consumer.close()


def gateway_log(settings, since: dict, want, timeout: float = 60) -> tuple[list[bytes], list[bytes]]:
    """The whole `gateway` topic and its records after `since`, read to its end once `want(the latter)` holds."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False, group_id=None)
    try:
        partitions = gateway_partitions(consumer, settings)
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list = []

        def this_run() -> list[bytes]:
            return [r.value for r in records if r.offset >= since[TopicPartition(r.topic, r.partition)]]

        def read_to_the_end() -> None:
            for batch in consumer.poll(timeout_ms=500).values():   # the poll's wait paces the checks
                records.extend(batch)
            end = consumer.end_offsets(partitions)
            assert all(consumer.position(p) >= end[p] for p in partitions) and want(this_run()), \
                f"{len(this_run())} records of this run read"

        eventually(read_to_the_end, timeout=timeout, interval=0, what="the gateway topic with this run's records")
        return [r.value for r in records], this_run()
    finally:
        consumer.close()


def shown_traffic(page) -> dict:
    return {name: digits(page.text_content(f"#traffic-{element}")) for name, element in (
        ("page_views", "page-views"), ("visitors", "visitors"), ("logged_in_users", "logged-in"),
        ("searches", "searches"))}


def test_simulated_shoppers_appear_on_the_dashboard_as_the_traffic_job_counts_them(
        watched, push_server, shop_behind_gateway, traffic_query, stack_settings):
    from producers.traffic import TrafficConfig, TrafficSimulator
    from rtdash.contracts import GatewayRequest, from_json
    from traffic_model import Expected

    settings, prefix = stack_settings, stack_settings.redis_prefix
    client = redis.Redis.from_url(settings.redis)
    try:
        traffic_query.processAllAvailable()  # whatever earlier tests sent is counted: a steady start
        before = snapshot(client, prefix, "traffic.today")
        since = gateway_end_offsets(settings)
        w = watched(f"http://127.0.0.1:{settings.push_port}")
        page = w.page

        config = TrafficConfig(users=40, rate=3, duration=20, seed=11, think_time=0.2, bot_share=0.1,
                               logged_in_share=0.4, accounts=50, view_rate=0.8, cart_rate=0.3, pay_rate=0.6)
        simulator = TrafficSimulator(f"http://127.0.0.1:{settings.gateway_port}", config)
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.setdefault("report", asyncio.run(simulator.run())),
                                  name="traffic-simulator")
        runner.start()
        def moved() -> bool:
            """The page counts more page views than before the run, or a day the run started."""
            day = page.text_content("#traffic-date")
            if not re.fullmatch(r"\d{4}-\d\d-\d\d", day):
                return False
            return before is None or day != before["date"] or \
                digits(page.text_content("#traffic-page-views")) > before["page_views"]

        try:
            # While shoppers are still arriving, the page's figures move.
            on_page(page, lambda: moved() or not runner.is_alive(), "page views moving or the run over", 120)
            seen_while_running = runner.is_alive()
        finally:
            runner.join(120)
        assert not runner.is_alive() and "report" in outcome
        assert seen_while_running, "no page view reached the dashboard while the simulator ran"
        report = outcome["report"]
        assert report.errors == 0 and report.statuses.get("5xx", 0) == 0, report.summary()

        # The job catches up with every request the run made, then the page must show its snapshot...
        sent = sum(report.requests.values())
        log, run_log = gateway_log(settings, since, lambda values: sum(
            from_json(GatewayRequest, v).route == "shop" for v in values) >= sent)
        traffic_query.processAllAvailable()
        today = snapshot(client, prefix, "traffic.today")
        on_page(page, lambda: shown_traffic(page) == {k: today[k] for k in shown_traffic(page)},
                f"the page showing {today}")
        assert page.text_content("#traffic-date") == today["date"]
        assert f"{today['bot_requests']:,} bot requests" in page.text_content("#traffic-bots")

        # ... which is what the whole gateway log makes of today, recomputed offline ...
        expected = Expected(settings.tz, settings.traffic_lateness_seconds)
        expected.add_phase(log)
        truth = expected.traffic_today()
        for name in ("visitors", "logged_in_users"):  # approximate distinct counts, within 2%
            assert today[name] == pytest.approx(truth.pop(name), rel=0.02, abs=1), name
        assert {k: v for k, v in today.items() if k in truth} == truth

        # ... and at least every page view the simulator knows it got: GETs of shoppers answered below 400
        # (the simulator's own counts are of the whole run: compared when the run fell on one day).
        run_days = {from_json(GatewayRequest, v).started_at.astimezone(settings.tz).date().isoformat()
                    for v in run_log}
        one_day = run_days == {today["date"]}
        base = before["page_views"] if before and before["date"] == today["date"] else 0
        failed = sum(n for status, n in report.statuses.items() if status not in ("2xx", "3xx"))
        assert report.requests["search"] + report.requests["view"] - failed > 0
        if one_day:
            assert today["page_views"] - base >= report.requests["search"] + report.requests["view"] - failed

        # Search terms and products: the page's lists are the job's, and the run's favourite term is in them.
        terms_today = snapshot(client, prefix, "search.terms.today")
        assert terms_today["terms"] == expected.search_terms_today()["terms"]
        on_page(page, lambda: ranked(page, "terms-today") == [(t["term"], t["count"]) for t in terms_today["terms"]],
                "today's terms on the page")
        favourite = report.searches.most_common(1)[0][0]
        if one_day:
            assert favourite in [label for label, _ in ranked(page, "terms-today")]
        recent = snapshot(client, prefix, "search.terms.recent")
        on_page(page, lambda: ranked(page, "terms-recent") == [(t["term"], t["count"]) for t in recent["terms"]],
                "recent terms on the page")
        assert favourite in [label for label, _ in ranked(page, "terms-recent")]
        products = snapshot(client, prefix, "search.products.today")
        assert [(p["product_id"], p["count"]) for p in products["products"]] == [
            (p["product_id"], p["count"]) for p in expected.search_products_today()["products"]]
        on_page(page, lambda: ranked(page, "products-today") == [(p.get("name") or p["product_id"], p["count"])
                                                                 for p in products["products"]],
                "products on the page")

        # Route health: the shop's row shows the latest minute of the routes as the job stored them.
        def shop_row_is_stored() -> bool:
            minutes = snapshot(client, prefix, "routes.per_minute")["minutes"]
            stored = minutes[max(minutes)].get("shop", {}).get("requests", 0)
            return route_row(page, "shop").get("requests") == f"{stored:,}"

        on_page(page, shop_row_is_stored, "the shop's latest minute on the page")
        assert route_row(page, "shop")["status"] in ("healthy", "errors")
        w.assert_clean()
    finally:
        client.close()
