"""The payment simulator's HTTP side: every order placed and notified, over kept-alive connections, no proxy."""
from __future__ import annotations

import json
import os
from unittest import mock
from urllib.parse import parse_qsl

import tornado.web
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.testing import AsyncTestCase, gen_test

from producers.order_service.internal import PLACE_ORDER_PATH
from producers.provider.simulator import PaymentSimulator
from rtdash.payments import NOTIFY_PATH
from rtdash.settings import Settings

from served_apps import ServedApps

PROVIDER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class OrderService(tornado.web.RequestHandler):
    """Places orders and answers notifies `success`; notes which connection each request came on."""

    def initialize(self, placed: list, notified: list, connections: set) -> None:
        self.placed, self.notified, self.connections = placed, notified, connections

    def post(self) -> None:
        self.connections.add(id(self.request.connection.stream))
        if self.request.path == PLACE_ORDER_PATH:
            self.placed.append(json.loads(self.request.body)["order_id"])
            self.finish({"status": "placed"})
        else:
            self.notified.append(dict(parse_qsl(self.request.body.decode()))["out_trade_no"])
            self.finish("success")


class PaymentSimulatorTest(ServedApps, AsyncTestCase):
    def setUp(self):
        super().setUp()
        self.placed, self.notified, self.connections = [], [], set()
        handler = (OrderService, dict(placed=self.placed, notified=self.notified, connections=self.connections))
        self.base = self.serve(tornado.web.Application([(PLACE_ORDER_PATH, *handler), (NOTIFY_PATH, *handler)]))

    def tearDown(self):
        self.stop_servers()
        super().tearDown()

    @gen_test(timeout=30)
    async def test_orders_are_placed_and_notified_over_kept_alive_connections_without_the_environments_proxy(self):
        # A proxy in the environment that answers nothing: a simulator that used it would fail every request.
        dead_proxy = "http://127.0.0.1:9"
        with mock.patch.dict(os.environ, {"http_proxy": dead_proxy, "HTTP_PROXY": dead_proxy}):
            simulator = PaymentSimulator(Settings(_env_file=None, timezone="UTC"), PROVIDER_KEY,
                                         url=self.base + NOTIFY_PATH, orders_url=self.base, duplicate_share=0)
            report = await simulator.run(rate=400, count=60)
            simulator.close()
        assert report.errors == 0 and report.accepted_orders == 60
        assert sorted(self.placed) == sorted(self.notified) == sorted(report.accepted_ids)
        # 120 requests; a client that opened a connection per request would have shown 120.
        assert len(self.connections) <= 20

