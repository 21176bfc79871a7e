"""The dashboard page in a real browser (Debian's Chromium, Playwright), fed through Redis by push servers of
its own: the bare page explaining how to get in, a refused token forgotten, the token kept for the tab and taken
out of the address bar, the payment-to-screen readout, the change against yesterday, a push server restart the
page gets over by itself, resuming through the jobs' own envelope writer (replayed changes after a push server
restart, a new stream after Redis lost its data), each compared with a fresh page, and a phone's width.
"""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta
from urllib.parse import unquote

import pytest

from dashboard_browser import (access_token, browser, injected_dashboard, on_page, publish_orders,  # noqa: F401
                               resumable_dashboard, shown_orders, shows_number, shows_text, watched)

pytestmark = pytest.mark.integration


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
