"""The order service in one process: the notify endpoint and the store (placed orders, idempotency, refusals).

The store process is left out here: the intake runs on a thread
(order_service_in_thread.py); tests/order_service/test_store_process.py covers the pipe,
test_internal.py the internal API where orders are placed.
"""
from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import quote, urlencode

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.exc import IntegrityError
from tornado.testing import AsyncHTTPTestCase

from producers.order_service.handoff import PlaceOrder
from producers.order_service.store import (STORE_ATTEMPTS, ConcurrentWrites, OrderStore, Outcome, SchemaMismatch,
                                           placed_orders)
from rtdash.contracts import OrderPaid, from_json
from rtdash.database import make_engine
from rtdash.payments import (FORM_TYPE, NOTIFY_PATH, PaymentNotify, form_params, notify_params, parse_notify,
                             signed, verify)
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

    def place(self, order_id="ORDER1", cents=12345):
        """The shop placed the order (the internal API's own tests are in test_internal.py)."""
        assert self.store.take_in([PlaceOrder(order_id, cents)]) == [Outcome.PLACED]

    def post(self, body, headers=FORM):
        if isinstance(body, dict):
            body = urlencode(body)
        return self.fetch(NOTIFY_PATH, method="POST", body=body, headers=headers)

    def totals(self):
        return self.store.paid_totals(), self.store.pending_count()

    def test_paid_notify_stores_order_and_outbox_event(self):
        self.place()
        assert self.store.order("ORDER1").status == "pending"
        resp = self.post(signed(self.params(), PROVIDER_KEY))
        assert (resp.code, resp.body) == (200, b"success")
        assert self.totals() == ((1, 12345), 1)
        (row,) = self.store.pending()
        event = from_json(OrderPaid, row.payload)
        assert (row.topic, row.key, event.order_id, event.amount_cents) == ("orders", b"ORDER1", "ORDER1", 12345)
        assert event.paid_at == PAID_AT
        order = self.store.order("ORDER1")
        assert (order.status, order.amount_cents, order.trade_no) == ("paid", 12345, event.trade_no)

    def test_duplicate_notify_answers_success_and_changes_nothing(self):
        self.place()
        body = signed(self.params(), PROVIDER_KEY)
        assert self.post(body).body == b"success"
        assert self.post(body).body == b"success"
        finished = signed(self.params(trade_status="TRADE_FINISHED"), PROVIDER_KEY)
        assert self.post(finished).body == b"success"
        assert self.totals() == ((1, 12345), 1)

    def test_paid_order_notified_again_with_another_amount_is_refused(self):
        self.place(cents=100)
        assert self.post(signed(self.params(cents=100), PROVIDER_KEY)).body == b"success"
        resp = self.post(signed(self.params(cents=999), PROVIDER_KEY))
        assert (resp.code, resp.body) == (409, b"fail: total_amount differs from the order's amount")
        assert self.totals() == ((1, 100), 1)

    def test_notify_for_an_order_never_placed_is_refused_and_changes_nothing(self):
        for status in ("TRADE_SUCCESS", "TRADE_FINISHED", "WAIT_BUYER_PAY"):
            resp = self.post(signed(self.params("NEVER1", trade_status=status), PROVIDER_KEY))
            assert (resp.code, resp.body) == (404, b"fail: unknown order"), status
        assert self.totals() == ((0, 0), 0)            # no paid order, nothing in the outbox
        assert self.store.order("NEVER1") is None     # nor is it placed by the notify

    def test_notify_with_another_amount_than_the_order_is_refused_and_changes_nothing(self):
        self.place(cents=100)
        for cents in (99, 101, 9_999_00):
            resp = self.post(signed(self.params(cents=cents), PROVIDER_KEY))
            assert (resp.code, resp.body) == (409, b"fail: total_amount differs from the order's amount"), cents
        assert self.totals() == ((0, 0), 0)
        assert self.store.order("ORDER1").status == "pending"
        assert self.post(signed(self.params(cents=100), PROVIDER_KEY)).body == b"success"   # the right one pays
        assert self.totals() == ((1, 100), 1)

    def test_signed_text_re_split_into_another_amount_cannot_pay_it(self):
        """The signed text joins ``k=v`` with ``&`` and escapes nothing: a text field the buyer chose can
        carry ``&total_amount=...``, and the same signature then covers a form that says another amount."""
        self.place(cents=100)
        injected = "Tea&total_amount=9999.00&trade_no=2026000000000000000000009999&trade_status=TRADE_SUCCESS" \
                   "&voucher_detail_list="
        genuine = signed(self.params(cents=100, subject=injected), PROVIDER_KEY)   # what the provider signed
        # The attacker's re-split: subject ends before the injected '&', and the genuine amount, trade_no
        # and trade_status become the tail of a field that sorts after them.
        resplit = {k: v for k, v in genuine.items() if k not in ("subject", "total_amount", "trade_no",
                                                                  "trade_status")}
        resplit.update(subject="Tea", total_amount="9999.00", trade_no="2026000000000000000000009999",
                       trade_status="TRADE_SUCCESS", voucher_detail_list=(
                           f"&total_amount=1.00&trade_no={genuine['trade_no']}&trade_status=TRADE_SUCCESS"))
        # Without the amount check this would pay 9,999 yuan: the signature holds and every field parses.
        assert verify(resplit, PROVIDER_KEY.public_key())
        forged = parse_notify(form_params(urlencode(resplit).encode()), public_key=PROVIDER_KEY.public_key(),
                              app_id=self.settings.payment_app_id, seller_id=self.settings.payment_seller_id,
                              tz=self.settings.provider_tz)
        assert (forged.out_trade_no, forged.amount_cents, forged.is_paid) == ("ORDER1", 999_900, True)
        resp = self.post(resplit)
        assert (resp.code, resp.body) == (409, b"fail: total_amount differs from the order's amount")
        assert self.totals() == ((0, 0), 0) and self.store.order("ORDER1").status == "pending"
        assert self.post(genuine).body == b"success"       # the genuine notify pays the order, for 1 yuan
        assert self.totals() == ((1, 100), 1)

    def full_notify(self):
        """Every parameter of an Alipay async notify, as Alipay sends it (UTF-8, percent-encoded)."""
        self.place("2026112600001", 8850)
        return dict(
            self.params("2026112600001", 8850), notify_time="2026-11-26 17:54:55", notify_type="trade_status_sync",
            charset="utf-8", version="1.0", auth_app_id=self.settings.payment_app_id,
            out_biz_no="HZRF001", buyer_id="2088102177846880", buyer_logon_id="159****5620",
            seller_email="shop@example.com", receipt_amount="88.50", invoice_amount="88.50",
            buyer_pay_amount="88.50", point_amount="0.00", refund_fee="0.00", subject="测试商品：铸铁锅 & 茶壶",
            body="订单备注：请尽快发货（谢谢）", gmt_create="2026-11-26 17:54:40",
            fund_bill_list='[{"amount":"88.50","fundChannel":"ALIPAYACCOUNT"}]',
            passback_params=quote("merchantBizType=3C&merchantBizNo=2016010101111"),
            voucher_detail_list='[{"amount":"0.00","merchantContribute":"0.00","name":"立减",'
                                '"type":"ALIPAY_DISCOUNT_VOUCHER"}]')

    def test_a_full_alipay_notify_with_chinese_text_and_json_values_is_accepted(self):
        resp = self.post(signed(self.full_notify(), PROVIDER_KEY))
        assert (resp.code, resp.body) == (200, b"success")
        assert self.totals() == ((1, 8850), 1)

    def test_a_notify_signed_by_alipays_official_sdk_is_accepted(self):
        """The signed text is built exactly as Alipay's own SDK builds it (alipay-sdk-python's SignatureUtils)."""
        from alipay.aop.api.util.SignatureUtils import get_sign_content, sign_with_rsa2

        params = self.full_notify()
        pkcs1 = PROVIDER_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()).decode()
        body = "".join(line for line in pkcs1.splitlines() if not line.startswith("-----"))
        params["sign_type"] = "RSA2"
        params["sign"] = sign_with_rsa2(body, get_sign_content({k: v for k, v in params.items()
                                                                 if k not in ("sign", "sign_type")}), "utf-8")
        resp = self.post(params)
        assert (resp.code, resp.body) == (200, b"success")
        assert self.totals() == ((1, 8850), 1)

    def test_unpaid_status_is_acknowledged_but_not_counted(self):
        self.place()
        resp = self.post(signed(self.params(trade_status="WAIT_BUYER_PAY"), PROVIDER_KEY))
        assert resp.body == b"success"
        assert self.totals() == ((0, 0), 0)
        assert self.store.order("ORDER1").status == "pending"

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
        # The internal API (placing orders) is not served on the public port at all.
        placing = self.fetch("/internal/orders", method="POST", body='{"order_id": "X1", "amount_cents": 100}',
                             headers={"Content-Type": "application/json"})
        assert placing.code == 404 and self.store.order("X1") is None
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
        self.store.take_in = broken
        resp = self.post(signed(self.params(), PROVIDER_KEY))
        assert resp.code == 500
        assert resp.body.startswith(b"fail: ")
        assert b"disk full" not in resp.body   # internals stay in the log

    def test_health_reports_outbox(self):
        self.place()
        self.post(signed(self.params(), PROVIDER_KEY))
        resp = self.fetch("/healthz")
        assert resp.code == 200
        assert b'"outbox_pending": 1' in resp.body
        assert b'"kafka_connected": false' in resp.body


def paid(order_id: str, cents: int, status: str = "TRADE_SUCCESS") -> PaymentNotify:
    return PaymentNotify(order_id, "T" + order_id, cents, status, PAID_AT, "N" + order_id)


def test_group_commit_gives_the_outcomes_of_one_by_one_commits(tmp_path):
    """A group with placements, repeats and refusals gets the outcomes one-by-one commits would give."""
    store = OrderStore(make_engine(f"sqlite:///{tmp_path}/orders.db"), topic="orders")
    assert store.take_in([PlaceOrder("A", 100)]) == [Outcome.PLACED]
    assert store.take_in([paid("A", 100)]) == [Outcome.PAID]
    outcomes = store.take_in([
        paid("A", 100), PlaceOrder("B", 200), paid("B", 200), paid("B", 200), paid("B", 999), paid("A", 5),
        paid("C", 300), PlaceOrder("C", 300), PlaceOrder("C", 300), PlaceOrder("C", 301),
        paid("D", 50, "WAIT_BUYER_PAY"), PlaceOrder("D", 50), paid("D", 50, "WAIT_BUYER_PAY"), paid("C", 300),
        PlaceOrder("A", 100)])
    assert outcomes == [
        Outcome.DUPLICATE, Outcome.PLACED, Outcome.PAID, Outcome.DUPLICATE, Outcome.AMOUNT_DIFFERS,
        Outcome.AMOUNT_DIFFERS, Outcome.UNKNOWN_ORDER, Outcome.PLACED, Outcome.PLACED_BEFORE, Outcome.AMOUNT_DIFFERS,
        Outcome.UNKNOWN_ORDER, Outcome.PLACED, Outcome.NOT_PAID, Outcome.PAID, Outcome.PLACED_BEFORE]
    assert store.paid_totals() == (3, 600)
    assert [row.key for row in store.pending()] == [b"A", b"B", b"C"]
    assert [(o.status, o.amount_cents) for o in map(store.order, "ABCD")] == [
        ("paid", 100), ("paid", 200), ("paid", 300), ("pending", 50)]
    assert store.order("E") is None


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
    assert store.take_in([PlaceOrder("A", 100), PlaceOrder("B", 200), PlaceOrder("C", 300)]) == [Outcome.PLACED] * 3
    insert = store._insert_orders.run
    store._insert_orders.run = twice = AnotherWriterFirst(insert, times=2)
    assert store.take_in([paid("A", 100)]) == [Outcome.PAID]                # the third attempt goes through
    assert twice.calls == [1, 1, 1] and woken == [1]

    store._insert_orders.run = always = AnotherWriterFirst(insert, times=STORE_ATTEMPTS)
    with pytest.raises(ConcurrentWrites, match="a group of 2 not stored: each of 3 attempts"):
        store.take_in([paid("B", 200), paid("C", 300)])
    assert always.calls == [2, 2, 2] and woken == [1]
    assert store.paid_totals() == (1, 100) and store.pending_count() == 1   # nothing of the refused group


def test_store_keeps_times_as_epoch_milliseconds(tmp_path):
    store = OrderStore(make_engine(f"sqlite:///{tmp_path}/orders.db"), topic="orders")
    store.take_in([PlaceOrder("A", 100)])
    paid_at = datetime(2026, 11, 26, 10, 0, 0, 250000, tzinfo=timezone.utc)
    before = datetime.now(timezone.utc)
    store.take_in([PaymentNotify(out_trade_no="A", trade_no="TA", amount_cents=100,
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


def test_an_order_database_from_before_placed_orders_gains_the_table_and_keeps_its_paid_orders(tmp_path):
    """A database made before orders were placed: its paid orders stay, the new table is added."""
    url = f"sqlite:///{tmp_path}/orders.db"
    store = OrderStore(make_engine(url), topic="orders")
    store.take_in([PlaceOrder("A", 100), paid("A", 100)])
    store.engine.dispose()
    with sqlite3.connect(tmp_path / "orders.db") as db:
        db.execute("DROP TABLE placed_orders")
    again = OrderStore(make_engine(url), topic="orders")
    assert again.paid_totals() == (1, 100)
    assert again.take_in([PlaceOrder("B", 200), paid("B", 200)]) == [Outcome.PLACED, Outcome.PAID]
    with again.engine.connect() as conn:
        assert conn.execute(placed_orders.select()).all() != []


def test_sqlite_commits_are_durable_through_an_os_crash(tmp_path):
    """WAL with synchronous=FULL: a commit is synced to disk before a notify is answered `success`."""
    engine = make_engine(f"sqlite:///{tmp_path}/orders.db")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2   # FULL (NORMAL is 1)
    engine.dispose()
