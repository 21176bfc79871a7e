"""The order service's internal API: the shop places orders there (idempotent, validated) and reads their status."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select
from tornado.testing import AsyncHTTPTestCase

from producers.order_service.internal import PLACE_ORDER_PATH
from producers.order_service.store import OrderStore, Outcome, placed_orders
from rtdash.database import make_engine
from rtdash.payments import PaymentNotify
from rtdash.settings import Settings

from order_service_in_thread import in_internal_app, in_thread_writer

PROVIDER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JSON = {"Content-Type": "application/json"}
PAID_AT = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)


class InternalApiTest(AsyncHTTPTestCase):
    def get_app(self):
        settings = Settings(home=self.tmp, _env_file=None)
        self.store = OrderStore(make_engine(f"sqlite:///{self.tmp}/orders.db"), topic="orders")
        self.db = ThreadPoolExecutor(1)
        writer = in_thread_writer(settings, self.store, self.db, PROVIDER_KEY.public_key())
        return in_internal_app(writer, self.store, self.db)

    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path):
        self.tmp = tmp_path

    def tearDown(self):
        super().tearDown()
        self.db.shutdown()
        self.store.engine.dispose()

    def place(self, body, headers=JSON):
        if not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        resp = self.fetch(PLACE_ORDER_PATH, method="POST", body=body, headers=headers)
        return resp.code, json.loads(resp.body)

    def placed(self) -> list[tuple[str, int]]:
        with self.store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(placed_orders.c.order_id, placed_orders.c.amount_cents))]

    def test_placing_an_order_is_idempotent_for_the_same_amount_and_refused_for_another(self):
        order = {"order_id": "S20261126175454ab12", "amount_cents": 12345}
        assert self.place(order) == (201, order)
        assert self.place(order) == (200, order)              # the shop may send it again: one order
        code, reply = self.place({**order, "amount_cents": 999})
        assert code == 409 and "another amount" in reply["error"]
        assert self.placed() == [("S20261126175454ab12", 12345)]

    def test_bad_bodies_are_refused_with_the_reason_and_place_nothing(self):
        cases = [
            ("{not json", "body: Invalid JSON"),
            ("", "body: Invalid JSON"),
            ("[1, 2]", "body: Input should be an object"),
            ({"order_id": "A1"}, "amount_cents: Field required"),
            ({"amount_cents": 100}, "order_id: Field required"),
            ({"order_id": "A1", "amount_cents": 0}, "amount_cents: Input should be greater than 0"),
            ({"order_id": "A1", "amount_cents": -5}, "amount_cents: Input should be greater than 0"),
            ({"order_id": "A1", "amount_cents": 1.5}, "amount_cents: Input should be a valid integer"),
            ({"order_id": "A1", "amount_cents": "100"}, "amount_cents: Input should be a valid integer"),
            ({"order_id": "A1", "amount_cents": True}, "amount_cents: Input should be a valid integer"),
            ({"order_id": "A1", "amount_cents": 1_000_000_000}, "amount_cents: Input should be less than"),
            ({"order_id": "A1\n", "amount_cents": 100}, "order_id: Value error, must be 1-64 letters"),
            ({"order_id": "A1&total_amount=1", "amount_cents": 100}, "order_id: Value error"),
            ({"order_id": "A" * 65, "amount_cents": 100}, "order_id: Value error"),
            ({"order_id": "", "amount_cents": 100}, "order_id: Value error"),
            ({"order_id": 7, "amount_cents": 100}, "order_id: Input should be a valid string"),
            ({"order_id": "A1", "amount_cents": 100, "status": "paid"}, "status: Extra inputs are not permitted"),
        ]
        for body, reason in cases:
            code, reply = self.place(body)
            assert code == 400 and reason in reply["error"], (body, reply)
        assert self.placed() == []

    def test_an_order_reads_pending_until_a_notify_pays_it(self):
        assert self.fetch(f"{PLACE_ORDER_PATH}/A1").code == 404
        self.place({"order_id": "A1", "amount_cents": 100})
        resp = self.fetch(f"{PLACE_ORDER_PATH}/A1")
        assert (resp.code, json.loads(resp.body)) == (200, {"order_id": "A1", "amount_cents": 100,
                                                            "status": "pending", "trade_no": None, "paid_at": None})
        notify = PaymentNotify("A1", "2026T1", 100, "TRADE_SUCCESS", PAID_AT, "N1")
        assert self.store.take_in([notify]) == [Outcome.PAID]
        assert json.loads(self.fetch(f"{PLACE_ORDER_PATH}/A1").body) == {
            "order_id": "A1", "amount_cents": 100, "status": "paid", "trade_no": "2026T1",
            "paid_at": "2026-11-26T10:00:00+00:00"}
        assert self.place({"order_id": "A1", "amount_cents": 100})[0] == 200   # placed again once paid: same order
        for path in (f"{PLACE_ORDER_PATH}/A1%0A", f"{PLACE_ORDER_PATH}/{'A' * 65}", "/internal", "/"):
            resp = self.fetch(path)
            assert resp.code == 404 and "error" in json.loads(resp.body), path

    def test_a_failing_store_is_a_503_and_places_nothing(self):
        def broken(_items):
            raise RuntimeError("disk full")
        self.store.take_in = broken
        code, reply = self.place({"order_id": "A1", "amount_cents": 100})
        assert (code, reply) == (503, {"error": "the order store is unavailable, try again"})
        with self.store.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(placed_orders)).scalar_one() == 0
