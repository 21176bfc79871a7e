"""The dashboard in a real browser, shared by its tests: Debian's Chromium driven by Playwright, pages
opened with a token and watched for outside requests and console errors, and push servers fed by writing to
Redis as the jobs do (fixtures: browser, watched, injected_dashboard, resumable_dashboard).

Test modules import the fixtures they use from here.
"""
from __future__ import annotations

import json
import re
import shutil

import pytest
import redis

from push_server.protocol import encode_envelope
from rtdash import channels
from stack.services import python_service
from stack.testing import free_port
from waiting import eventually

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



def publish_orders(publisher, day: str, minutes: dict[str, tuple[int, int]],
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
