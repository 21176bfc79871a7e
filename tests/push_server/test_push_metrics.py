"""The push server's /metrics over real WebSockets (in-memory broker): connections, messages sent, closes by code.

The push server's metric objects live for the process (push_server/metrics.py),
so each test reads what changed across what it did.
"""
from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

from prometheus_client import CONTENT_TYPE_LATEST
from tornado.httpclient import HTTPRequest
from tornado.testing import AsyncHTTPTestCase, gen_test
from tornado.websocket import websocket_connect

from dashboard_tokens import SECRET, fixed_tokens, with_token
from push_server.app import make_app
from push_server.broker import MemoryBroker
from push_server.hub import Hub
from push_server.session import CLOSE_TOO_SLOW
from rtdash.settings import Settings
from waiting import eventually_async

from scraping import samples, value, values

ORIGIN = "http://dash.example:8080"


def envelope(channel: str, seq: int, **data) -> str:
    return json.dumps({"channel": channel, "seq": seq, "data": data})


class PushMetricsTest(AsyncHTTPTestCase):
    def get_app(self):
        self.hub = Hub()
        self.broker = MemoryBroker(self.hub)
        settings = Settings(_env_file=None, allowed_origins=ORIGIN, push_port=self.get_http_port(),
                            push_token_secret=SECRET)
        return make_app(settings, self.hub, self.broker)

    def connect(self, since: dict | None = None):
        url = self.get_url("/ws").replace("http", "ws") + (f"?since={quote(json.dumps(since))}" if since else "")
        url = with_token(url, fixed_tokens().issue())
        return websocket_connect(HTTPRequest(url, headers={"Origin": ORIGIN}))

    async def scrape(self) -> dict:
        resp = await self.http_client.fetch(self.get_url("/metrics"))
        assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
        found = samples(resp.body)
        return {"connections": value(found, "rtdash_push_connections"),
                "sent": value(found, "rtdash_push_messages_sent_total"),
                "closes": values(found, "rtdash_push_closes_total", "code")}

    async def read(self, ws) -> dict:
        message = await asyncio.wait_for(ws.read_message(), 5)
        assert message is not None, f"closed with {ws.close_code}"
        return json.loads(message)

    async def changed(self, before: dict, what: str, **expected) -> None:
        """Wait until every figure moved by `expected` from `before` (closes: by code)."""
        def moved(now: dict) -> bool:
            closes = {code: now["closes"].get(code, 0) - before["closes"].get(code, 0) for code in now["closes"]}
            return all((({c: n for c, n in closes.items() if n} if name == "closes" else now[name] - before[name])
                        == delta) for name, delta in expected.items())
        last = {}

        async def check():
            last.update(await self.scrape())
            return moved(last)
        await eventually_async(check, timeout=5, interval=0.02, what=f"{what}: {expected}, have {last}")

    @gen_test
    async def test_connections_messages_and_closes_are_counted(self):
        self.broker.write(envelope("orders.today", 1, date="2026-11-26", count=1, amount_cents=100))
        self.broker.write(envelope("orders.per_minute", 1, date="2026-11-26", minutes={}))
        before = await self.scrape()
        first, second = await self.connect(), await self.connect()
        for ws in (first, second):                               # the two snapshots each
            assert {(await self.read(ws))["channel"] for _ in range(2)} == {"orders.today", "orders.per_minute"}
        self.broker.write(envelope("orders.today", 2, date="2026-11-26", count=2, amount_cents=300))
        for ws in (first, second):
            assert (await self.read(ws))["seq"] == 2
        await self.changed(before, "two clients, three envelopes each", connections=2, sent=6, closes={})
        first.close(1000)
        await eventually_async(lambda: self.hub.clients == 1, timeout=5, interval=0.01, what="the first one gone")
        (slow,) = self.hub.sessions()
        slow.close(CLOSE_TOO_SLOW, "too slow")
        assert await second.read_message() is None and second.close_code == CLOSE_TOO_SLOW
        await self.changed(before, "both gone", connections=0, sent=6, closes={"1000": 1, "1013": 1})

    @gen_test
    async def test_resumes_count_as_history_hits_or_misses(self):
        for seq in (1, 2, 3):
            self.broker.write(json.dumps({"channel": "orders.today", "epoch": "e1", "seq": seq,
                                          "data": {"date": "2026-11-26", "count": seq, "amount_cents": 100 * seq}}))
        found = samples((await self.http_client.fetch(self.get_url("/metrics"))).body)
        hits, misses = (value(found, f"rtdash_push_history_{kind}_total") for kind in ("hits", "misses"))
        resumed = await self.connect(since={"orders.today": {"epoch": "e1", "seq": 1}})
        assert [(await self.read(resumed))["seq"] for _ in range(2)] == [2, 3]   # what it missed, from the history
        other_epoch = await self.connect(since={"orders.today": {"epoch": "e0", "seq": 1}})
        assert (await self.read(other_epoch))["seq"] == 3                       # the snapshot instead
        found = samples((await self.http_client.fetch(self.get_url("/metrics"))).body)
        assert value(found, "rtdash_push_history_hits_total") - hits == 1
        assert value(found, "rtdash_push_history_misses_total") - misses == 1
        resumed.close()
        other_epoch.close()
