"""The push server over real WebSockets (Tornado's test server), with the in-memory broker."""
from __future__ import annotations

import asyncio
import json

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.testing import AsyncHTTPTestCase, gen_test
from tornado.websocket import websocket_connect

from push_server.app import make_app
from push_server.broker import MemoryBroker
from push_server.hub import Hub
from rtdash.settings import Settings


def envelope(channel: str, seq: int, **data) -> str:
    return json.dumps({"channel": channel, "seq": seq, "data": data})


class PushAppTest(AsyncHTTPTestCase):
    def get_app(self):
        self.hub = Hub()
        self.broker = MemoryBroker(self.hub)
        self.settings = Settings(_env_file=None, allowed_origins="http://dash.example")
        return make_app(self.settings, hub=self.hub, broker=self.broker, queue_size=8)

    def connect(self, origin: str = "http://dash.example"):
        return websocket_connect(HTTPRequest(self.get_url("/ws").replace("http", "ws"), headers={"Origin": origin}))

    @gen_test
    async def test_snapshot_first_then_live_messages(self):
        self.broker.publish(envelope("orders.today", 5, date="2026-11-26", count=3, amount_cents=900))
        ws = await self.connect()
        first = json.loads(await ws.read_message())
        assert first == {"channel": "orders.today", "seq": 5,
                         "data": {"date": "2026-11-26", "count": 3, "amount_cents": 900}}
        self.broker.publish(envelope("orders.today", 5, count=999))   # repeated seq: dropped
        self.broker.publish(envelope("orders.today", 6, date="2026-11-26", count=4, amount_cents=1000))
        assert json.loads(await ws.read_message())["data"]["count"] == 4
        ws.close()

    @gen_test
    async def test_subscribe_narrows_channels(self):
        self.broker.publish(envelope("orders.today", 1))
        self.broker.publish(envelope("orders.per_minute", 1, minutes={}))
        ws = await self.connect()
        assert {json.loads(await ws.read_message())["channel"] for _ in range(2)} == {"orders.today",
                                                                                        "orders.per_minute"}
        await ws.write_message(json.dumps({"subscribe": ["orders.per_minute"]}))
        await asyncio.sleep(0.2)  # the server handles the subscribe on its own turn of the loop
        self.broker.publish(envelope("orders.today", 2))
        self.broker.publish(envelope("orders.per_minute", 2, minutes={}))
        # On subscribe the channel's snapshot comes first again, then its live messages only.
        assert [json.loads(await ws.read_message())["seq"] for _ in range(2)] == [1, 2]
        self.broker.publish(envelope("orders.today", 3))
        self.broker.publish(envelope("orders.per_minute", 3, minutes={}))
        assert json.loads(await ws.read_message()) == {"channel": "orders.per_minute", "seq": 3,
                                                       "data": {"minutes": {}}}
        ws.close()

    @gen_test
    async def test_foreign_origin_is_refused(self):
        with self.assertRaises(HTTPClientError) as refused:
            await self.connect(origin="http://evil.example")
        assert refused.exception.code == 403

    @gen_test
    async def test_oversized_message_closes_with_1009(self):
        ws = await self.connect()
        await ws.write_message("x" * 10_000)
        assert await ws.read_message() is None
        assert ws.close_code == 1009

    @gen_test
    async def test_garbage_message_closes_with_1003(self):
        ws = await self.connect()
        await ws.write_message("hello")
        assert await ws.read_message() is None
        assert ws.close_code == 1003

    def test_health_and_dashboard_page(self):
        health = json.loads(self.fetch("/healthz").body)
        assert health == {"status": "ok", "service": "push_server", "redis_connected": True, "clients": 0,
                          "channels": []}
        page = self.fetch("/")
        assert page.code == 200
        body = page.body.decode()
        for element in ('id="orders-count"', 'id="orders-amount"', 'id="conn-state"', 'src="app.js"'):
            assert element in body
        assert "http://" not in body and "https://" not in body   # nothing from outside: works offline
        assert self.fetch("/app.js").code == 200
