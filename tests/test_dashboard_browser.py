"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

The page must show today's totals from the snapshot, flip to "live", and
update without a reload when new orders are paid; all of it with no asset from
outside the push server (the machine has no internet, like many shop floors).
"""
from __future__ import annotations

import asyncio
import re
import shutil

import pytest

from producers.payment_provider import PaymentSimulator
from rtdash.payments import load_private_key

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def digits(text: str) -> int:
    return int(re.sub(r"[^0-9]", "", text) or -1)


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
    page.wait_for_function("document.querySelector('#conn-state').textContent.toLowerCase().includes('live')",
                           timeout=30_000)
    count, amount = ground_truth.paid_totals()
    page.wait_for_function(f"document.querySelector('#orders-count').textContent.replace(/[^0-9]/g, '') === '{count}'",
                           timeout=60_000)

    async def pay():
        simulator = PaymentSimulator(stack_settings, load_private_key(stack_settings.keys_dir),
                                     duplicate_share=0, seed=21)
        report = await simulator.run(rate=20, count=10)
        simulator.close()
        return report

    report = asyncio.run(pay())
    assert report.accepted_orders == 10
    count, amount = ground_truth.paid_totals()
    page.wait_for_function(f"document.querySelector('#orders-count').textContent.replace(/[^0-9]/g, '') === '{count}'",
                           timeout=60_000)
    assert digits(page.text_content("#orders-count")) == count
    assert digits(page.text_content("#orders-amount")) == amount  # ¥1,234.50 -> 123450 cents
    assert outside_requests == []
