"""The notifier's /metrics: confirmations by result, the same counts as /healthz, from a consumer run."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

from kafka.structs import TopicPartition
from tornado.testing import AsyncHTTPTestCase

from producers.notifier.app import make_app
from producers.notifier.consumer import ConfirmationSender
from producers.notifier.sms import Delivery, MessageRejected
from rtdash.contracts import OrderPaid, to_json
from rtdash.settings import Settings

from scraping import samples, value, values

P0 = TopicPartition("orders", 0)


class Record:
    def __init__(self, offset: int, value: bytes):
        self.topic, self.partition, self.offset, self.value = "orders", 0, offset, value


def paid(order_id: str) -> bytes:
    at = datetime(2026, 11, 26, 17, 54, 54, tzinfo=timezone.utc)
    return to_json(OrderPaid(order_id=order_id, trade_no=f"T{order_id}", amount_cents=100, paid_at=at,
                             trade_status="TRADE_SUCCESS", notify_id=f"N{order_id}", recorded_at=at))


class OneBatch:
    """A consumer with one batch of records, then nothing; `drained` once it was handed out."""

    def __init__(self, values: list[bytes]):
        self.batch = [Record(offset, v) for offset, v in enumerate(values)]
        self.drained = threading.Event()

    def subscribe(self, topics):
        pass

    def poll(self, timeout_ms, max_records):
        if self.batch:
            batch, self.batch = self.batch, []
            return {P0: batch}
        self.drained.set()
        threading.Event().wait(timeout_ms / 1000)
        return {}

    def assignment(self):
        return {P0}

    def commit(self, offsets, timeout_ms=None):
        pass

    def close(self, autocommit=True):
        pass


def gateway(to: str, text: str, key: str) -> Delivery:
    """Sends A and B, has C already, refuses R."""
    if key == "R":
        raise MessageRejected("HTTP 400: to: String should match pattern")
    return Delivery.DUPLICATE if key == "C" else Delivery.SENT


class NotifierMetricsTest(AsyncHTTPTestCase):
    def get_app(self):
        self.consumer = OneBatch([paid("A"), paid("B"), paid("C"), paid("R"), b"not an event"])
        self.sender = ConfirmationSender(lambda: self.consumer, gateway, topic="orders", to="+8613800000000",
                                         pauses_s=(0.01, 0.02))
        return make_app(Settings(_env_file=None), sender=self.sender, group="rtdash-notifier")

    def tearDown(self):
        self.sender.stop()
        super().tearDown()

    def test_sends_are_counted_by_result_as_healthz_counts_them(self):
        self.sender.start()
        assert self.consumer.drained.wait(10)
        found = samples(self.fetch("/metrics").body)
        assert values(found, "rtdash_notifier_sends_total", "result") == {"sent": 2, "duplicate": 1, "rejected": 1}
        assert value(found, "rtdash_notifier_bad_records_total") == 1
        assert value(found, "rtdash_notifier_consuming") == 1
        health = json.loads(self.fetch("/healthz").body)
        assert (health["sent"], health["duplicates"], health["rejected"], health["bad_records"]) == (2, 1, 1, 1)
