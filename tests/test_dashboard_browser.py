"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

The page must show today's totals from the snapshot, flip to "live", and
update without a reload when new orders are paid; all of it with no asset from
outside the push server (the machine has no internet, like many shop floors).
"""
from __future__ import annotations

import re
import shutil
import time

import pytest

from paying import pay

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def digits(text: str | None) -> int:
    return int(re.sub(r"[^0-9]", "", text or "") or -1)


def wait_for_text(page, selector: str, predicate, timeout: float = 60) -> str:
    """Poll an element's text from the test side (the page's CSP forbids evaluated scripts)."""
    deadline = time.monotonic() + timeout
    while True:
        text = page.text_content(selector)
        if predicate(text or ""):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} still shows {text!r} after {timeout:.0f}s")
        page.wait_for_timeout(100)


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM):
        pytest.fail("chromium is not installed: `make setup` installs Debian's chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_dashboard_shows_live_totals_and_updates_without_reload(page, pipeline, stack_settings, ground_truth):
    outside_requests: list[str] = []
    origin = f"http://127.0.0.1:{stack_settings.push_port}"
    page.on("request", lambda req: None if req.url.startswith((origin, "ws://127.0.0.1")) or
            req.url.startswith("data:") else outside_requests.append(req.url))
    page.goto(origin + "/")
    wait_for_text(page, "#conn-state", lambda text: text == "live", timeout=30)
    count, amount = ground_truth.paid_totals()
    wait_for_text(page, "#orders-count", lambda text: digits(text) == count)

    report = pay(stack_settings, 10, seed=21)
    assert report.accepted_orders == 10
    count, amount = ground_truth.paid_totals()
    wait_for_text(page, "#orders-count", lambda text: digits(text) == count)
    assert digits(page.text_content("#orders-count")) == count
    assert digits(page.text_content("#orders-amount")) == amount  # ¥1,234.50 -> 123450 cents
    assert outside_requests == []
