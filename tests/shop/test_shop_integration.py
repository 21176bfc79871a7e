"""Shop + payment provider + the real order service: a checkout becomes a paid order with the right amount.

The three services run in-process on free ports (the order service's intake
on a thread, no store process, no outbox relay: Kafka is not part of this
test; its internal API on a listener of its own, as in the service). The
checkout places the order in the order service, the provider's notify pays
it, and the shop's order then shows paid. A second test starts the shop and
the provider as processes, checks /healthz and a clean SIGTERM stop.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from tornado.httpclient import AsyncHTTPClient
from tornado.testing import AsyncTestCase, gen_test

from producers.order_service.store import OrderStore, orders
from producers.provider.app import make_app as provider_app
from producers.provider.notify_sender import NotifySender
from producers.shop.app import make_app as shop_app
from producers.shop.catalogue import generate_catalogue
from producers.shop.orders import OrderServiceClient
from producers.shop.payment import PaymentClient
from producers.shop.store import ShopStore
from rtdash.database import make_engine
from rtdash.keys import demo_keys
from rtdash.payments import NOTIFY_PATH
from rtdash.settings import Settings
from stack.testing import free_port

from order_service_in_thread import in_internal_app, in_thread_app, in_thread_writer
from served_apps import ServedApps
from waiting import eventually, eventually_async

PROVIDER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ROOT = Path(__file__).resolve().parents[2]


class CheckoutToPaidOrderTest(ServedApps, AsyncTestCase):
    @pytest.fixture(autouse=True)
    def _deps(self, tmp_path, shop_db_url, browser_cls):
        self.tmp, self.shop_db_url, self.Browser = tmp_path, shop_db_url, browser_cls

    def setUp(self):
        super().setUp()
        self.settings = Settings(_env_file=None, home=self.tmp, timezone="UTC")
        self.executors, self.engines = [], []
        order_engine = self.engine(f"sqlite:///{self.tmp}/orders.db")
        self.order_store = OrderStore(order_engine, topic="orders")
        order_db = self.executor()
        writer = in_thread_writer(self.settings, self.order_store, order_db, PROVIDER_KEY.public_key())
        orders_url = self.serve(in_thread_app(self.settings, self.order_store, order_db, PROVIDER_KEY.public_key(),
                                              writer=writer))
        self.orders = OrderServiceClient(self.serve(in_internal_app(writer, self.order_store, order_db)))
        self.sender = NotifySender(self.settings, PROVIDER_KEY, delay_s=0.01, backoff_s=0.01)
        provider_url = self.serve(provider_app(self.settings, sender=self.sender))
        self.payments = PaymentClient(provider_url, orders_url + NOTIFY_PATH)
        shop = shop_app(self.settings, store=ShopStore(self.engine(self.shop_db_url)), db=self.executor(),
                        payments=self.payments, orders=self.orders, cookie_secret="test-secret")
        self.shop_url = self.serve(shop)
        self.client = AsyncHTTPClient(force_instance=True)

    def engine(self, url):
        self.engines.append(make_engine(url))
        return self.engines[-1]

    def executor(self):
        self.executors.append(ThreadPoolExecutor(1))
        return self.executors[-1]

    def tearDown(self):
        self.io_loop.run_sync(self.sender.close)
        self.payments.close()
        self.orders.close()
        self.client.close()
        self.stop_servers()
        for executor in self.executors:
            executor.shutdown()
        for engine in self.engines:
            engine.dispose()
        super().tearDown()

    @gen_test(timeout=30)
    async def test_checkout_leads_to_a_paid_order_in_the_order_service(self):
        shopper = self.Browser(self.client.fetch, self.shop_url)
        login = await shopper.acall("POST", "/login", {"user": "user0001", "password": "demo-user0001"})
        assert login.code == 200
        found = json.loads((await shopper.acall("GET", "/search?q=teapot")).body)
        picked = found["product_ids"][:2]
        assert len(picked) == 2
        for pid in picked:
            assert (await shopper.acall("GET", f"/products/{pid}")).code == 200
            assert (await shopper.acall("POST", "/cart/items", {"product_id": pid, "qty": 2})).code == 200
        resp = await shopper.acall("POST", "/checkout")
        assert resp.code == 201, resp.body
        order = json.loads(resp.body)
        prices = {p.id: p.price_cents for p in generate_catalogue()}
        assert order["total_cents"] == sum(2 * prices[pid] for pid in picked)

        await eventually_async(lambda: self.sender.in_flight == 0, what="the notify delivered")
        assert self.sender.stats.delivered == 1
        with self.order_store.engine.connect() as conn:
            row = conn.execute(select(orders).where(orders.c.order_id == order["order_id"])).mappings().one()
        assert row["amount_cents"] == order["total_cents"]
        assert row["trade_no"] == order["payment_id"] and row["trade_status"] == "TRADE_SUCCESS"
        assert self.order_store.paid_totals() == (1, order["total_cents"])
        assert self.order_store.pending_count() == 1  # its OrderPaid event waits in the outbox
        seen = json.loads((await shopper.acall("GET", f"/orders/{order['order_id']}")).body)
        assert (seen["order_id"], seen["status"], seen["total_cents"]) == (order["order_id"], "paid",
                                                                          order["total_cents"])


class ProcessExited(Exception):
    """The service's process ended while the test waited for it: the wait ends there."""


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> dict:
    def health() -> dict | bool:
        if proc.poll() is not None:
            raise ProcessExited(proc.communicate()[1])
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return json.loads(resp.read())
        except OSError:
            return False   # not listening yet
    return eventually(health, timeout=timeout, interval=0.1, what=f"{url} answers")


def test_services_run_as_processes_and_stop_on_sigterm(tmp_path):
    env = dict(os.environ, RTDASH_HOME=str(tmp_path), RTDASH_SHOP_PORT=str(free_port()),
               RTDASH_PAYMENT_PROVIDER_PORT=str(free_port()), PYTHONUNBUFFERED="1")
    demo_keys(Settings(_env_file=None, home=tmp_path))   # the provider signs with it and creates none
    commands = {
        "shop": ([sys.executable, "-m", "producers.shop", "--users", "5"], env["RTDASH_SHOP_PORT"]),
        "payment_provider": ([sys.executable, "-m", "producers.provider"], env["RTDASH_PAYMENT_PROVIDER_PORT"]),
    }
    procs = {}
    try:
        for name, (cmd, port) in commands.items():
            procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True)
        for name, (_, port) in commands.items():
            health = _wait_healthy(f"http://127.0.0.1:{port}/healthz", procs[name])
            assert health["status"] == "ok" and health["service"] == name
        assert (tmp_path / "shop.db").exists()
        assert (tmp_path / "keys" / "shop_cookie_secret").exists()
        for name, proc in procs.items():
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == 0, err
            assert "stopped" in err, err
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
