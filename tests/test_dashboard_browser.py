"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

The page must show today's totals from the snapshot, flip to "live", and
update without a reload when new orders are paid or shoppers browse; all of it
with no asset from outside the push server (the machine has no internet, like
many shop floors) and nothing the page's Content-Security-Policy refuses.

The page opens with an access token in its fragment (as `rtdash token` and
`make demo` give it). Tests: paid orders through the whole pipeline; every
traffic panel fed with envelopes written straight into Redis (its own push
server and key prefix, so the figures are exactly known: live merges, alerts,
hostile search terms); the bare page explaining how to get in; the token kept
for the tab and taken out of the address bar; the payment-to-screen readout;
a push server restart the page gets over by itself, equal to a fresh page
afterwards; a phone's width; and shoppers from the traffic simulator through
the gateway and the traffic job, with the page compared to the job's Redis
snapshots and to the `gateway` topic.
"""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
import time
from datetime import date, datetime, timedelta
from urllib.parse import unquote

import pytest
import redis

from paying import paid_on, pay
from push_server.protocol import encode_envelope
from rtdash import channels
from stack.services import python_service
from stack.testing import free_port
from waiting import eventually

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def digits(text: str | None) -> int:
    return int(re.sub(r"[^0-9]", "", text or "") or -1)


def on_page(page, condition, what: str, timeout: float = 60):
    """`eventually` for what the page shows, read from the test side (the page's CSP forbids evaluated
    scripts, so Playwright's wait_for_function cannot run); pauses through Playwright so the page's
    events are handled meanwhile."""
    return eventually(condition, timeout=timeout, interval=0.1, what=what,
                      sleep=lambda seconds: page.wait_for_timeout(seconds * 1000))


def shows_text(page, selector: str, text: str, timeout: float = 60) -> None:
    """Wait until `selector` shows exactly `text` (Playwright's own waiting)."""
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_have_text(text, timeout=timeout * 1000)


def shows_number(page, selector: str, number: int, timeout: float = 60) -> None:
    """Wait until the digits of `selector`'s text make `number` (1,234 and ¥12.34 alike)."""
    def shown():
        text = page.text_content(selector)
        assert digits(text) == number, f"{selector} shows {text!r}"
    on_page(page, shown, f"{selector} showing {number}", timeout)


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


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM):
        pytest.fail("chromium is not installed: `make setup` installs Debian's chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def access_token(settings) -> str:
    """A token for the push servers of `settings`, as `rtdash token` makes it (the secret under their home)."""
    from push_server.tokens import Tokens

    return Tokens.from_settings(settings).issue(ttl=3600)


class Watched:
    """A page that records every request to another origin and every console error (CSP refusals among them)."""

    def __init__(self, browser, origin: str, token: str | None, init_script: str | None = None, **context):
        self.context = browser.new_context(**context)
        if init_script:      # run before the page's own scripts (through the DevTools protocol, not the page)
            self.context.add_init_script(init_script)
        self.page = self.context.new_page()
        self.origin = origin
        self.token = token
        self.sockets: list[str] = []
        self.page.on("websocket", lambda ws: self.sockets.append(ws.url))
        self.outside_requests: list[str] = []
        self.console_errors: list[str] = []
        self.page.on("request", self._request)
        self.page.on("console", lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.console_errors.append(str(exc)))

    def _request(self, req) -> None:
        if not req.url.startswith((self.origin, "ws://127.0.0.1", "data:")):
            self.outside_requests.append(req.url)

    def open(self, live: bool) -> None:
        self.page.goto(self.origin + "/" + (f"#token={self.token}" if self.token else ""))
        if live:
            shows_text(self.page, "#conn-state", "live", timeout=30)

    def assert_clean(self, *, except_with: tuple[str, ...] = ()) -> None:
        """No outside request and no console error (but those containing one of `except_with`, when expected)."""
        assert self.outside_requests == []
        assert [e for e in self.console_errors if not any(part in e for part in except_with)] == []


@pytest.fixture
def watched(browser, stack_settings):
    """Opens the dashboard of an origin in a context of its own, with a valid token unless told otherwise."""
    pages: list[Watched] = []
    token = access_token(stack_settings)

    def open_page(origin: str, *, token: str | None = token, live: bool = True, init_script: str | None = None,
                  **context) -> Watched:
        """The page, once it shows "live" (unless `live` is False: a page that should not get in)."""
        pages.append(Watched(browser, origin, token, init_script, **context))
        pages[-1].open(live and token is not None)
        return pages[-1]

    yield open_page
    for w in pages:
        w.context.close()


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

class Publisher:
    """Writes envelopes the way the jobs do: INCR the seq, SET the snapshot, PUBLISH the live message."""

    def __init__(self, client: redis.Redis, prefix: str):
        self.client = client
        self.prefix = prefix

    def send(self, channel: str, data: dict, live: dict | None = None) -> int:
        """`data` becomes the snapshot; `live` (default: the same) is what is published."""
        seq = self.client.incr(channels.seq_key(self.prefix, channel))
        self.client.set(channels.snapshot_key(self.prefix, channel), encode_envelope(channel, seq, data))
        self.client.publish(channels.live_channel(self.prefix, channel),
                            encode_envelope(channel, seq, data if live is None else live))
        return seq


@pytest.fixture(scope="module")
def injected_dashboard(stack_settings, redis_server):
    """A push server of its own on the session's Redis, under a key prefix no job writes to."""
    settings = stack_settings.model_copy(update={"redis_prefix": "dashboard-test", "push_port": free_port()})
    client = redis.Redis.from_url(settings.redis)
    with python_service(settings, "push_server_dashboard_test", "push_server", settings.push_port) as service:
        try:
            yield f"http://127.0.0.1:{settings.push_port}", Publisher(client, settings.redis_prefix), settings, service
        finally:
            client.close()


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


def publish_orders(publisher: Publisher, day: str, minutes: dict[str, tuple[int, int]],
                   changed: list[str] | None = None, **extra) -> None:
    """orders.today and orders.per_minute as the orders job writes them: the day's totals, every minute in the
    snapshot, only the `changed` minutes (default: all) live."""
    per_minute = {m: {"count": n, "amount_cents": c} for m, (n, c) in minutes.items()}
    publisher.send("orders.today", {"date": day, "count": sum(n for n, _ in minutes.values()),
                                    "amount_cents": sum(c for _, c in minutes.values()), **extra})
    publisher.send("orders.per_minute", {"date": day, "minutes": per_minute},
                   live={"date": day, "minutes": {m: per_minute[m] for m in (changed or per_minute)}})


def shown_orders(page) -> dict:
    """What the sales panel shows, as numbers, and the sums of the orders chart's data."""
    figures = {name: digits(page.text_content(f"#orders-{name}")) for name in ("count", "amount", "hour")}
    return figures | {"chart": page.get_attribute("#per-minute", "data-sums")}


def test_bare_page_explains_how_to_get_in_and_opens_no_socket(watched, injected_dashboard):
    origin, *_ = injected_dashboard
    w = watched(origin, token=None)
    w.page.wait_for_selector("#access", state="visible", timeout=30_000)
    assert w.page.is_hidden("#dashboard")
    explanation = w.page.text_content("#access")
    assert "rtdash token" in explanation and "make demo" in explanation
    assert w.page.text_content("#access-example") == origin + "/#token=<the token>"
    assert w.sockets == []
    w.assert_clean()


@pytest.mark.parametrize("kind", ["expired", "foreign"])
def test_a_refused_token_is_forgotten_and_the_page_explains_how_to_get_in(watched, injected_dashboard,
                                                                          stack_settings, kind):
    from push_server.tokens import Tokens

    origin, *_ = injected_dashboard
    if kind == "expired":
        token = Tokens.from_settings(stack_settings).issue(ttl=60, now=time.time() - 3600)
    else:
        token = Tokens(b"another-secret-0123456789abcdef-0123456789").issue(ttl=3600)
    w = watched(origin, token=token, live=False)
    w.page.wait_for_selector("#access", state="visible", timeout=30_000)
    reason = {"expired": "token expired", "foreign": "token invalid"}[kind]
    assert w.page.text_content("#access-reason") == f"The server refused the access token ({reason})."
    assert w.page.is_hidden("#dashboard") and w.page.text_content("#conn-state") == "signed out"
    w.page.goto(origin + "/")      # forgotten: the tab has no token any more
    w.page.wait_for_selector("#access", state="visible", timeout=30_000)
    assert w.page.text_content("#access-reason") == "This dashboard needs an access token."
    # the refused upgrade and /auth/check's answer
    w.assert_clean(except_with=("HTTP Authentication failed", "status of 401"))


def test_token_is_kept_for_the_tab_and_taken_out_of_the_address_bar(watched, injected_dashboard):
    origin, *_ = injected_dashboard
    w = watched(origin)
    assert w.page.url == origin + "/"
    assert w.sockets and all("token=" in url for url in w.sockets)
    w.page.goto(origin + "/")      # the same tab without the fragment: still signed in
    shows_text(w.page, "#conn-state", "live", timeout=30)
    assert w.page.is_hidden("#access")
    w.assert_clean()


def test_payment_to_screen_readout_counts_live_updates_only(watched, injected_dashboard):
    origin, publisher, settings, _ = injected_dashboard
    now = datetime.now(settings.tz)
    day, minute = now.date().isoformat(), now.strftime("%H:%M")
    long_ago = (now - timedelta(hours=2)).isoformat()
    publish_orders(publisher, day, {minute: (1, 100)}, last_recorded_at=long_ago)
    w = watched(origin)
    shows_number(w.page, "#orders-count", 1)
    assert w.page.get_attribute("#latency", "data-samples") == "0"   # the snapshot is not a live update
    assert w.page.text_content("#latency-note") == "no order paid in the last minute"

    recorded = datetime.now(settings.tz) - timedelta(milliseconds=1500)
    publish_orders(publisher, day, {minute: (2, 300)}, last_recorded_at=recorded.isoformat(timespec="milliseconds"))
    on_page(w.page, lambda: w.page.get_attribute("#latency", "data-samples") == "1", "one latency sample")
    shown_ms = int(w.page.get_attribute("#latency", "data-last-ms"))
    assert 1500 - 50 <= shown_ms < 1500 + 10_000   # the page's clock is the server's, read to within a few ms
    for figure in ("last", "p50", "max"):   # one sample: all three are it
        text = w.page.text_content(f"#latency-{figure}")
        assert text.endswith(" s") and abs(float(text[:-2]) - shown_ms / 1000) <= 0.01, (figure, text)
    w.assert_clean()


def test_page_gets_over_a_push_server_restart_by_itself_and_equals_a_fresh_page(watched, injected_dashboard):
    origin, publisher, settings, service = injected_dashboard
    now = datetime.now(settings.tz)
    day, minute = now.date().isoformat(), now.strftime("%H:%M")
    earlier = (now - timedelta(minutes=3)).strftime("%H:%M")
    minutes = {earlier: (4, 4000), minute: (3, 900)} if earlier < minute else {minute: (7, 4900)}
    publish_orders(publisher, day, minutes)
    w = watched(origin)
    shows_number(w.page, "#orders-count", 7)
    assert shown_orders(w.page) == {"count": 7, "amount": 4900, "hour": 7, "chart": "7"}

    service.stop()
    shows_text(w.page, "#conn-state", re.compile("reconnecting"), timeout=30)
    # While the server is away, orders are paid: live messages nobody receives, the snapshots change.
    minutes[minute] = (minutes[minute][0] + 5, minutes[minute][1] + 500)
    publish_orders(publisher, day, minutes, changed=[minute])
    service.start_ready()

    shows_text(w.page, "#conn-state", "live", timeout=60)
    shows_number(w.page, "#orders-count", 12)
    fresh = watched(origin)
    shows_number(fresh.page, "#orders-count", 12)
    assert shown_orders(w.page) == shown_orders(fresh.page) == {"count": 12, "amount": 5400, "hour": 12,
                                                                "chart": "12"}
    # and it keeps up afterwards: a live minute merged like a fresh page's
    minutes[minute] = (minutes[minute][0] + 1, minutes[minute][1] + 1)
    publish_orders(publisher, day, minutes, changed=[minute])
    shows_number(w.page, "#orders-count", 13)
    shows_number(fresh.page, "#orders-count", 13)
    on_page(w.page, lambda: shown_orders(w.page) == shown_orders(fresh.page), "the same figures on both pages")
    w.assert_clean(except_with=("ERR_CONNECTION_REFUSED",))   # the tries while the server was away
    fresh.assert_clean()


def test_kpi_cards_compare_with_the_same_time_yesterday_where_this_browser_showed_it(watched, injected_dashboard):
    origin, publisher, settings, _ = injected_dashboard
    now = datetime.now(settings.tz)
    day, minute = now.date().isoformat(), now.strftime("%H:%M")
    yesterday = (now - timedelta(days=1)).date().isoformat()
    then = (now - timedelta(minutes=2)).strftime("%H:%M")     # the nearest sample at most 5 minutes earlier
    publish_orders(publisher, day, {minute: (5, 1000)})
    samples = {then: {"orders-count": 4, "orders-amount": 1250}, "00:00": {"orders-count": 1}}
    w = watched(origin, init_script=f"localStorage.setItem('rtdash.kpis.{yesterday}', '{json.dumps(samples)}')")
    shows_number(w.page, "#orders-count", 5)
    assert w.page.text_content("#orders-count-delta") == f"▲ +25% vs yesterday {then}"
    assert w.page.text_content("#orders-amount-delta") == f"▼ -20% vs yesterday {then}"
    assert w.page.text_content("#traffic-page-views-delta") == "vs yesterday: not known"
    w.assert_clean()


def test_phone_width_shows_the_cards_without_sideways_scrolling(watched, injected_dashboard):
    origin, publisher, settings, _ = injected_dashboard
    now = datetime.now(settings.tz)
    publish_orders(publisher, now.date().isoformat(), {now.strftime("%H:%M"): (123456, 987654321)})
    w = watched(origin, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    shows_number(w.page, "#orders-count", 123456)
    on_page(w.page, lambda: w.page.evaluate("document.documentElement.scrollWidth") <= 390,
            "the page no wider than the phone")
    cards = w.page.locator(".kpi").all()
    assert len(cards) == 9
    for card in cards[:2]:
        assert card.is_visible()
        box = card.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["y"] < 844
    for chart in ("#per-minute", "#traffic-per-minute"):
        box = w.page.locator(chart + " canvas").first.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    w.assert_clean()


# --- resume: the jobs' own envelope writer (epochs, history), a push server and a Redis of its own ---

class StreamPublisher:
    """Publishes as every job does, through jobs/lua/envelope.lua: a seq and epoch per channel, the snapshot
    marked as such, the live envelope appended to the channel's history and published."""

    def __init__(self, client: redis.Redis, settings):
        from importlib import resources

        from rtdash.channels import stream_keys

        envelope = (resources.files("jobs") / "lua" / "envelope.lua").read_text()
        self.script = client.register_script(envelope + """
return publish_envelope(stream_keys(1), ARGV[1], ARGV[2], ARGV[3] ~= '' and ARGV[3] or nil,
                        history_bound(ARGV[4], ARGV[5]))""")
        self.keys = lambda channel: stream_keys(settings.redis_prefix, channel)
        self.bound = [settings.push_history_size, settings.push_history_seconds]

    def send(self, channel: str, data: dict, live: dict | None = None) -> int:
        text = lambda d: json.dumps(d, separators=(",", ":"))   # noqa: E731
        return self.script(keys=self.keys(channel),
                           args=[channel, text(data), "" if live is None else text(live), *self.bound])


@pytest.fixture(scope="module")
def resumable_dashboard(tmp_path_factory):
    """A Redis and a push server of their own (both restarted by the test), written to as the jobs write."""
    from stack.services import redis_service
    from rtdash.settings import Settings

    settings = Settings(_env_file=None, home=tmp_path_factory.mktemp("resume-home"), redis_port=free_port(),
                        push_port=free_port())
    with redis_service(settings, persist=False) as redis_server:
        client = redis.Redis.from_url(settings.redis)
        try:
            with python_service(settings, "push_server", "push_server", settings.push_port) as push:
                yield f"http://127.0.0.1:{settings.push_port}", StreamPublisher(client, settings), settings, \
                    push, redis_server
        finally:
            client.close()


def test_page_resumes_with_what_it_missed_and_starts_over_after_redis_lost_its_data(watched, resumable_dashboard):
    origin, publisher, settings, push, redis_server = resumable_dashboard
    now = datetime.now(settings.tz)
    day, minute = now.date().isoformat(), now.strftime("%H:%M")
    earlier = (now - timedelta(minutes=3)).strftime("%H:%M")
    minutes = {earlier: (4, 4000), minute: (3, 900)} if earlier < minute else {minute: (7, 4900)}
    publish_orders(publisher, day, minutes)
    w = watched(origin, token=access_token(settings))
    shows_number(w.page, "#orders-count", 7)
    assert "since=" not in w.sockets[-1]

    # The push server goes away; two batches are paid meanwhile: live changes the page did not receive.
    push.stop()
    for extra in (2, 3):
        minutes[minute] = (minutes[minute][0] + extra, minutes[minute][1] + 100 * extra)
        publish_orders(publisher, day, minutes, changed=[minute])
    push.start_ready()
    shows_number(w.page, "#orders-count", 12)
    since = json.loads(unquote(w.sockets[-1].split("since=", 1)[1]))
    assert set(since) >= {"orders.today", "orders.per_minute"}   # it resumed, and got the changes replayed
    fresh = watched(origin, token=access_token(settings))
    shows_number(fresh.page, "#orders-count", 12)
    assert shown_orders(w.page) == shown_orders(fresh.page) == {"count": 12, "amount": 5400, "hour": 12,
                                                                "chart": "12"}

    # Redis loses everything: the jobs start new streams (new epochs) from what they count afterwards.
    redis_server.stop()
    redis_server.start_ready()
    publish_orders(publisher, day, {minute: (2, 222)})
    for page in (w.page, fresh.page):
        shows_number(page, "#orders-count", 2)
        on_page(page, lambda p=page: shown_orders(p) == {"count": 2, "amount": 222, "hour": 2, "chart": "2"},
                "the new stream alone on the page")
    newest = watched(origin, token=access_token(settings))
    assert shown_orders(newest.page) == shown_orders(w.page)
    for page in (w, fresh, newest):
        page.assert_clean(except_with=("ERR_CONNECTION_REFUSED",))


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
