"""The order service in one process: the notify endpoint and the store (idempotency, conflicts, refusals).

The store process is left out here: the intake runs on a thread
(order_service_in_thread.py); tests/test_store_process.py covers the pipe.
"""
from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.exc import IntegrityError
from tornado.testing import AsyncHTTPTestCase

from producers.order_service.store import STORE_ATTEMPTS, ConcurrentWrites, OrderStore, Outcome, SchemaMismatch
from rtdash.contracts import OrderPaid, from_json
from rtdash.database import make_engine
from rtdash.payments import FORM_TYPE, NOTIFY_PATH, PaymentNotify, notify_params, signed
from rtdash.settings import Settings

from order_service_in_thread import in_thread_app

PROVIDER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FORGER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FORM = {"Content-Type": FORM_TYPE}
PAID_AT = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)


class NotifyEndpointTest(AsyncHTTPTestCase):
    def get_app(self):
        self.settings = Settings(home=self.tmp, _env_file=None)
        self.store = OrderStore(make_engine(f"sqlite:///{self.tmp}/orders.db"), topic="orders")
        self.db = ThreadPoolExecutor(1)
        return in_thread_app(self.settings, self.store, self.db, PROVIDER_KEY.public_key())

    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path):
        self.tmp = tmp_path

    def tearDown(self):
        super().tearDown()
        self.db.shutdown()

    def params(self, order_id="ORDER1", cents=12345, **extra):
        params = notify_params(order_id, cents, settings=self.settings, paid_at=PAID_AT)
        return {**params, **extra}

    def post(self, body, headers=FORM):
        if isinstance(body, dict):
            body = urlencode(body)
        return self.fetch(NOTIFY_PATH, method="POST", body=body, headers=headers)

    def totals(self):
        return self.store.paid_totals(), self.store.pending_count()

    def test_paid_notify_stores_order_and_outbox_event(self):
        resp = self.post(signed(self.params(), PROVIDER_KEY))
        assert (resp.code, resp.body) == (200, b"success")
        assert self.totals() == ((1, 12345), 1)
        (row,) = self.store.pending()
        event = from_json(OrderPaid, row.payload)
        assert (row.topic, row.key, event.order_id, event.amount_cents) == ("orders", b"ORDER1", "ORDER1", 12345)
        assert event.paid_at == PAID_AT

    def test_duplicate_notify_answers_success_and_changes_nothing(self):
        body = signed(self.params(), PROVIDER_KEY)
        assert self.post(body).body == b"success"
        assert self.post(body).body == b"success"
        finished = signed(self.params(trade_status="TRADE_FINISHED"), PROVIDER_KEY)
        assert self.post(finished).body == b"success"
        assert self.totals() == ((1, 12345), 1)

    def test_same_order_different_amount_is_refused(self):
        assert self.post(signed(self.params(cents=100), PROVIDER_KEY)).body == b"success"
        resp = self.post(signed(self.params(cents=999), PROVIDER_KEY))
        assert resp.code == 409
        assert b"different amount" in resp.body
        assert self.totals() == ((1, 100), 1)

    def test_unpaid_status_is_acknowledged_but_not_counted(self):
        resp = self.post(signed(self.params(trade_status="WAIT_BUYER_PAY"), PROVIDER_KEY))
        assert resp.body == b"success"
        assert self.totals() == ((0, 0), 0)

    def test_refusals_write_nothing(self):
        good = signed(self.params(), PROVIDER_KEY)
        tampered = dict(good, total_amount="0.01")
        cases = [
            (signed(self.params(), FORGER_KEY), FORM, 400, b"bad signature"),
            (tampered, FORM, 400, b"bad signature"),
            ({k: v for k, v in good.items() if k != "sign"}, FORM, 400, b"missing sign"),
            (signed({k: v for k, v in self.params().items() if k != "trade_no"}, PROVIDER_KEY), FORM, 400,
             b"missing fields: trade_no"),
            (signed(self.params(total_amount="12.345"), PROVIDER_KEY), FORM, 400, b"total_amount"),
            ("%%%not a form", FORM, 400, b"not a valid form"),
            (urlencode(good), {"Content-Type": "application/json"}, 400, b"Content-Type"),
            (urlencode(good) + "&pad=" + "x" * 9000, FORM, 413, b"body larger"),
            (urlencode(good) + "&out_trade_no=ORDER2", FORM, 400, b"appears twice"),
        ]
        for body, headers, code, reason in cases:
            resp = self.post(body, headers)
            assert resp.code == code, (reason, resp.body)
            assert reason in resp.body
        assert self.totals() == ((0, 0), 0)

    def test_other_methods_and_paths(self):
        body = urlencode(signed(self.params(), PROVIDER_KEY))
        resp = self.fetch(NOTIFY_PATH + "?" + body)
        assert (resp.code, resp.headers.get("Allow")) == (405, "POST")
        assert self.fetch(NOTIFY_PATH + "/more", method="POST", body=body, headers=FORM).code == 404
        assert self.fetch("/", method="POST", body=body, headers=FORM).code == 404
        assert self.totals() == ((0, 0), 0)
        # Query string on a POST is not where the notify is read from.
        resp = self.fetch(NOTIFY_PATH + "?" + body, method="POST", body="", headers=FORM)
        assert (resp.code, resp.body) == (400, b"fail: missing sign")

    def test_store_failure_is_a_5xx_so_the_provider_retries(self):
        def broken(_notifies):
            raise RuntimeError("disk full")
        self.store.record_paid_many = broken
        resp = self.post(signed(self.params(), PROVIDER_KEY))
        assert resp.code == 500
        assert resp.body.startswith(b"fail: ")
        assert b"disk full" not in resp.body   # internals stay in the log

    def test_health_reports_outbox(self):
        self.post(signed(self.params(), PROVIDER_KEY))
        resp = self.fetch("/healthz")
        assert resp.code == 200
        assert b'"outbox_pending": 1' in resp.body
        assert b'"kafka_connected": false' in resp.body


def paid(order_id: str, cents: int) -> PaymentNotify:
    return PaymentNotify(order_id, "T" + order_id, cents, "TRADE_SUCCESS", PAID_AT, "N" + order_id)


def test_group_commit_gives_the_outcomes_of_one_by_one_commits(tmp_path):
    """A group with repeats and conflicts gets the outcomes one-by-one commits would give."""
    store = OrderStore(make_engine(f"sqlite:///{tmp_path}/orders.db"), topic="orders")
    assert store.record_paid_many([paid("A", 100)]) == [Outcome.PAID]
    outcomes = store.record_paid_many([paid("A", 100), paid("B", 200), paid("B", 200), paid("B", 999),
                                       paid("A", 5), paid("C", 300)])
    assert outcomes == [Outcome.DUPLICATE, Outcome.PAID, Outcome.DUPLICATE, Outcome.CONFLICT, Outcome.CONFLICT,
                        Outcome.PAID]
    assert store.paid_totals() == (3, 600)
    assert [row.key for row in store.pending()] == [b"A", b"B", b"C"]


class AnotherWriterFirst:
    """Stands in for the orders INSERT: fails `times` times as if another writer had just stored the rows."""

    def __init__(self, insert, times: int):
        self.insert, self.times, self.calls = insert, times, []

    def __call__(self, conn, rows):
        self.calls.append(len(rows))
        if len(self.calls) <= self.times:
            raise IntegrityError("INSERT INTO orders", {}, Exception("UNIQUE constraint failed: orders.order_id"))
        self.insert(conn, rows)


def test_a_group_that_keeps_meeting_a_concurrent_writer_is_refused_after_a_bound(tmp_path):
    """Another writer storing the same orders: the group is stored again, at most STORE_ATTEMPTS times in all."""
    woken: list[int] = []
    store = OrderStore(make_engine(f"sqlite:///{tmp_path}/orders.db"), topic="orders",
                       on_outbox_write=lambda: woken.append(1))
    insert = store._insert_orders.run
    store._insert_orders.run = twice = AnotherWriterFirst(insert, times=2)
    assert store.record_paid_many([paid("A", 100)]) == [Outcome.PAID]       # the third attempt goes through
    assert twice.calls == [1, 1, 1] and woken == [1]

    store._insert_orders.run = always = AnotherWriterFirst(insert, times=STORE_ATTEMPTS)
    with pytest.raises(ConcurrentWrites, match="2 paid orders not stored: each of 3 attempts"):
        store.record_paid_many([paid("B", 200), paid("C", 300)])
    assert always.calls == [2, 2, 2] and woken == [1]
    assert store.paid_totals() == (1, 100) and store.pending_count() == 1   # nothing of the refused group


def test_store_keeps_times_as_epoch_milliseconds(tmp_path):
    store = OrderStore(make_engine(f"sqlite:///{tmp_path}/orders.db"), topic="orders")
    paid_at = datetime(2026, 11, 26, 10, 0, 0, 250000, tzinfo=timezone.utc)
    before = datetime.now(timezone.utc)
    store.record_paid_many([PaymentNotify(out_trade_no="A", trade_no="TA", amount_cents=100,
                                          trade_status="TRADE_SUCCESS", paid_at=paid_at, notify_id="NA")])
    after = datetime.now(timezone.utc)
    with sqlite3.connect(tmp_path / "orders.db") as db:
        (paid_ms, recorded_ms), = db.execute("SELECT paid_at_ms, recorded_at_ms FROM orders")
        (created_ms, published), = db.execute("SELECT created_at_ms, published_at_ms FROM outbox")
    assert paid_ms == 1_795_687_200_250   # 2026-11-26T10:00:00.250Z
    assert int(before.timestamp() * 1000) <= recorded_ms <= int(after.timestamp() * 1000) + 1
    assert (created_ms, published) == (recorded_ms, None)


def test_database_of_another_layout_is_refused_with_the_reason(tmp_path):
    with sqlite3.connect(tmp_path / "orders.db") as db:
        db.execute("CREATE TABLE orders (order_id VARCHAR(64) PRIMARY KEY, trade_no VARCHAR(64), "
                   "amount_cents BIGINT, trade_status VARCHAR(32), paid_at DATETIME, notify_id VARCHAR(64), "
                   "recorded_at DATETIME)")
    with pytest.raises(SchemaMismatch, match="'orders' .* has columns .*paid_at'.*writes .*paid_at_ms"):
        OrderStore(make_engine(f"sqlite:///{tmp_path}/orders.db"), topic="orders")
