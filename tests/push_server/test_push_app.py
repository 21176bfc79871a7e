"""The push server over real WebSockets (Tornado's test server), with the in-memory broker."""
from __future__ import annotations

import asyncio
import json
import re

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.testing import AsyncHTTPTestCase, gen_test
from tornado.websocket import websocket_connect

from dashboard_tokens import SECRET, fixed_tokens, with_token
from push_server.app import make_app
from push_server.broker import MemoryBroker
from push_server.hub import Hub
from push_server.session import CLOSE_TOO_SLOW, Session
from rtdash.settings import Settings
from waiting import eventually_async

ORIGIN = "http://dash.example:8080"


def envelope(channel: str, seq: int, **data) -> str:
    return json.dumps({"channel": channel, "seq": seq, "data": data})


class PushAppTest(AsyncHTTPTestCase):
    def get_app(self):
        self.hub = Hub()
        self.broker = MemoryBroker(self.hub)
        self.settings = Settings(_env_file=None, allowed_origins=f"{ORIGIN},https://other.example",
                                 timezone="Asia/Shanghai", push_port=self.get_http_port(), push_token_secret=SECRET)
        return make_app(self.settings, self.hub, self.broker, queue_size=8, max_message_size=1024)

    def connect(self, origin: str | None = ORIGIN):
        headers = {"Origin": origin} if origin else {}
        url = with_token(self.get_url("/ws").replace("http", "ws"), fixed_tokens().issue())
        return websocket_connect(HTTPRequest(url, headers=headers))

    async def read(self, ws, timeout: float = 5.0) -> dict:
        message = await asyncio.wait_for(ws.read_message(), timeout)
        assert message is not None, f"closed with {ws.close_code}"
        return json.loads(message)

    async def clients(self, count: int) -> None:
        await eventually_async(lambda: self.hub.clients == count, timeout=5, interval=0.01,
                               what=f"{count} clients in the hub")

    @gen_test
    async def test_snapshot_first_then_live_messages(self):
        self.broker.write(envelope("orders.today", 5, date="2026-11-26", count=3, amount_cents=900))
        self.broker.write(envelope("orders.per_minute", 2, date="2026-11-26", minutes={"10:00": {"count": 3}}))
        ws = await self.connect()
        assert await self.read(ws) == {"channel": "orders.per_minute", "seq": 2,
                                       "data": {"date": "2026-11-26", "minutes": {"10:00": {"count": 3}}}}
        assert await self.read(ws) == {"channel": "orders.today", "seq": 5,
                                       "data": {"date": "2026-11-26", "count": 3, "amount_cents": 900}}
        self.broker.publish(envelope("orders.today", 5, count=999))   # repeated seq: dropped
        self.broker.publish(envelope("orders.today", 4, count=998))   # older: dropped
        self.broker.write(envelope("orders.today", 6, date="2026-11-26", count=4, amount_cents=1000))
        assert (await self.read(ws))["data"] == {"date": "2026-11-26", "count": 4, "amount_cents": 1000}
        # The job's live per-minute message carries the changed minutes only; a late joiner
        # still starts from the whole day.
        self.broker.write(envelope("orders.per_minute", 3, date="2026-11-26",
                                   minutes={"10:00": {"count": 3}, "10:01": {"count": 1}}),
                          live=envelope("orders.per_minute", 3, date="2026-11-26", minutes={"10:01": {"count": 1}}))
        assert (await self.read(ws))["data"]["minutes"] == {"10:01": {"count": 1}}
        late = await self.connect()
        first = await self.read(late)
        assert first["seq"] == 3 and set(first["data"]["minutes"]) == {"10:00", "10:01"}
        assert (await self.read(late))["seq"] == 6
        ws.close()
        late.close()

    @gen_test
    async def test_subscribe_narrows_channels(self):
        self.broker.write(envelope("orders.today", 1))
        self.broker.write(envelope("orders.per_minute", 1, minutes={}))
        ws = await self.connect()
        assert {(await self.read(ws))["channel"] for _ in range(2)} == {"orders.today", "orders.per_minute"}
        await ws.write_message(json.dumps({"subscribe": ["orders.per_minute"]}))
        # The server handles the subscribe on its own turn of the loop.
        await eventually_async(lambda: [self.hub.subscriptions(s) for s in self.hub.sessions()]
                               == [{"orders.per_minute"}], timeout=5, interval=0.01, what="the subscribe handled")
        self.broker.write(envelope("orders.today", 2))
        self.broker.write(envelope("orders.per_minute", 2, minutes={}))
        assert await self.read(ws) == {"channel": "orders.per_minute", "seq": 2, "data": {"minutes": {}}}
        ws.close()

    @gen_test
    async def test_allowed_origins_only(self):
        for foreign in ("http://evil.example", "http://dash.example:9999", "https://dash.example:8080", "null"):
            with self.assertRaises(HTTPClientError) as refused:
                await self.connect(origin=foreign)
            assert refused.exception.code == 403, foreign
        assert self.hub.clients == 0
        for allowed in (ORIGIN, "HTTP://Dash.Example:8080/", "https://other.example"):
            ws = await self.connect(origin=allowed)
            await self.clients(1)
            ws.close()
            await self.clients(0)

    @gen_test
    async def test_oversized_message_closes_with_1009(self):
        ws = await self.connect()
        await ws.write_message(json.dumps({"subscribe": ["x" * 100] * 12}))   # over 1024 bytes
        assert await ws.read_message() is None
        assert ws.close_code == 1009
        await self.clients(0)

    @gen_test
    async def test_bad_messages_close_with_1003_saying_why_and_change_nothing(self):
        self.broker.write(envelope("orders.today", 1, count=1))
        other = await self.connect()
        assert (await self.read(other))["seq"] == 1
        for message, reason in (("hello", "message is not JSON (expected value at line 1 column 1)"),
                                ('{"subscribe": "orders.today"}', "subscribe takes a list of at most 64"),
                                ('{"subscribe": [], "unsubscribe": []}', 'expected {"subscribe": [channel, ...]}')):
            ws = await self.connect()
            assert (await self.read(ws))["seq"] == 1
            await ws.write_message(message)
            assert await ws.read_message() is None
            assert ws.close_code == 1003 and ws.close_reason.startswith(reason), ws.close_reason
        await self.clients(1)
        assert [self.hub.subscriptions(s) for s in self.hub.sessions()] == [{"*"}]
        self.broker.write(envelope("orders.today", 2, count=2))
        assert await self.read(other) == {"channel": "orders.today", "seq": 2, "data": {"count": 2}}
        other.close()

    @gen_test(timeout=60)
    async def test_client_that_stops_reading_is_closed_without_blocking_others(self):
        # A Tornado client that never reads stops reading its socket; the server's writes to it then
        # stall (newer envelopes replace the one waiting) and after the stall time it is closed.
        # The reading client gets every message meanwhile.
        self.addCleanup(setattr, Session, "stall_seconds", Session.stall_seconds)
        Session.stall_seconds = 0.5
        slow = await self.connect()
        fast = await self.connect()
        await self.clients(2)
        padding = "x" * 200_000
        for seq in range(1, 101):                          # 20 MB: more than the sockets' buffers hold
            self.broker.write(envelope("orders.today", seq, pad=padding))
            assert (await self.read(fast, timeout=5))["seq"] == seq
        await eventually_async(lambda: self.hub.clients == 1, timeout=10, interval=0.01,
                               what="the client that stopped reading closed")
        self.broker.write(envelope("orders.today", seq + 1, count=1))
        assert await self.read(fast) == {"channel": "orders.today", "seq": seq + 1, "data": {"count": 1}}
        # The slow client finds what was flushed before the cut, then the close: "try again later".
        while await asyncio.wait_for(slow.read_message(), 10) is not None:
            pass
        assert slow.close_code == CLOSE_TOO_SLOW
        fast.close()

    def test_health_reports_redis_and_clients(self):
        health = json.loads(self.fetch("/healthz").body)
        assert health == {"status": "degraded", "service": "push_server", "redis": "disconnected",
                          "redis_connected": False, "clients": 0, "channels": {}}

        async def connected():
            await self.broker.start()
            self.broker.write(envelope("orders.today", 3))
            return await self.connect()

        ws = self.io_loop.run_sync(connected)
        health = json.loads(self.fetch("/healthz").body)
        assert health == {"status": "ok", "service": "push_server", "redis": "connected",
                          "redis_connected": True, "clients": 1, "channels": {"orders.today": 3}}
        ws.close()

    def test_dashboard_page_works_offline(self):
        page = self.fetch("/")
        assert page.code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        body = page.body.decode()
        for element in ('id="orders-count"', 'id="orders-amount"', 'id="conn-state"', 'id="orders-date"',
                        'id="per-minute"', 'data-timezone="Asia/Shanghai"'):
            assert element in body
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', body)
        assert len(assets) == 4   # the chart library's script and style sheet, the page's own
        for asset in assets:
            assert self.fetch(asset).code == 200
        # Nothing from outside: no CDN, no font service; the page works offline.
        for text in [body] + [re.sub(r"/\*!.*?\*/", "", self.fetch(a).body.decode(), flags=re.S) for a in assets]:
            # (a library's licence banner may name its home page)
            assert not re.search(r"(?:https?:)?//(?!www\.w3\.org/2000/svg)[a-z0-9.-]+\.[a-z]", text), text[:80]
        assert "{{" not in body
        assert self.fetch("/nothing-here").code == 404


def test_the_push_server_refuses_to_start_without_the_chart_library(tmp_path):
    import pytest

    from push_server.app import STATIC, MissingAssets, check_assets

    check_assets(STATIC)   # installed by make setup
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "uPlot.min.css").write_text("")
    with pytest.raises(MissingAssets, match=r"vendor/uPlot\.iife\.min\.js .*run `make setup`"):
        check_assets(tmp_path)
