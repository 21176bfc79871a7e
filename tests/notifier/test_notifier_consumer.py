"""The notifier's consumer loop on a scripted consumer: offsets are committed only after the gateway answered."""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

import pycurl
import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from kafka.structs import TopicPartition
from tornado.httpserver import HTTPServer
from tornado.testing import AsyncHTTPTestCase, bind_unused_port

from producers.notifier.consumer import ConfirmationSender
from producers.notifier.sms import Delivery, GatewayUnavailable, MessageRejected, SmsClient, confirmation
from producers.sms_gateway.app import MessageLog, make_app
from rtdash.contracts import OrderPaid, to_json
from rtdash.settings import Settings
from stack.testing import free_port
from waiting import eventually

P0 = TopicPartition("orders", 0)
TO = "+8613800000000"


def paid(order_id: str, cents: int = 1234) -> OrderPaid:
    at = datetime(2026, 11, 26, 17, 54, 54, 123000, tzinfo=timezone.utc)
    return OrderPaid(order_id=order_id, trade_no=f"T{order_id}", amount_cents=cents, paid_at=at,
                     trade_status="TRADE_SUCCESS", notify_id=f"N{order_id}", recorded_at=at)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None


def records(*values) -> list[Record]:
    return [Record("orders", 0, offset, to_json(v) if isinstance(v, OrderPaid) else v)
            for offset, v in enumerate(values)]


class ScriptedConsumer:
    """Hands out the given batches, then nothing; records commits; `drained` is set once the script is used up."""

    def __init__(self, *batches: list[Record]):
        self.batches = list(batches)
        self.commits: list[dict[int, int]] = []
        self.closed = False
        self.drained = threading.Event()

    def subscribe(self, topics):
        self.topics = topics

    def poll(self, timeout_ms, max_records):
        if not self.batches:
            self.drained.set()
            threading.Event().wait(timeout_ms / 1000)
            return {}
        return {P0: self.batches.pop(0)}

    def assignment(self):
        return {P0}

    def commit(self, offsets, timeout_ms=None):
        self.commits.append({tp.partition: meta.offset for tp, meta in offsets.items()})

    def close(self, autocommit=True):
        self.closed = True


class Gateway:
    """A scripted send: each call takes the next outcome (an exception is raised), then SENT."""

    def __init__(self, *script):
        self.script = list(script)
        self.calls: list[tuple[str, str, str]] = []

    def send(self, to: str, text: str, key: str) -> Delivery:
        self.calls.append((to, text, key))
        outcome = self.script.pop(0) if self.script else Delivery.SENT
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def sender_for(consumer, gateway, **kwargs) -> ConfirmationSender:
    return ConfirmationSender(lambda: consumer, gateway.send, topic="orders", to=TO,
                              pauses_s=(0.01, 0.02), **kwargs)


def run_until_drained(sender: ConfirmationSender, consumer: ScriptedConsumer) -> None:
    sender.start()
    assert consumer.drained.wait(10)
    sender.stop()


def test_sends_one_confirmation_per_order_with_its_id_as_key_and_commits_after_the_batch():
    consumer, gateway = ScriptedConsumer(records(paid("A1"), paid("A2", 99))), Gateway()
    sender = sender_for(consumer, gateway)
    run_until_drained(sender, consumer)
    assert [key for _, _, key in gateway.calls] == ["A1", "A2"]
    assert gateway.calls[1] == (TO, confirmation(paid("A2", 99)), "A2")
    assert "0.99 yuan" in gateway.calls[1][1] and "A2" in gateway.calls[1][1]
    assert consumer.commits == [{0: 2}] and consumer.closed and consumer.topics == ["orders"]
    assert (sender.status.sent, sender.status.state, sender.status.committed) == (2, "stopped", {"orders:0": 2})


def test_an_order_the_gateway_already_has_counts_as_a_duplicate_and_is_committed():
    consumer, gateway = ScriptedConsumer(records(paid("A1"), paid("A1"))), Gateway(Delivery.SENT, Delivery.DUPLICATE)
    sender = sender_for(consumer, gateway)
    run_until_drained(sender, consumer)
    assert (sender.status.sent, sender.status.duplicates) == (1, 1)
    assert consumer.commits == [{0: 2}]


def test_waits_for_the_gateway_and_commits_nothing_it_did_not_acknowledge():
    down = GatewayUnavailable("connection refused")
    consumer = ScriptedConsumer(records(paid("A1"), paid("A2"), paid("A3")))
    gateway = Gateway(Delivery.SENT, *[down] * 1000)
    sender = sender_for(consumer, gateway)
    sender.start()
    eventually(lambda: len(gateway.calls) >= 5, timeout=10, what="A2 retried, with pauses")
    assert sender.status.state == "waiting for the sms gateway" and "connection refused" in sender.status.last_error
    sender.stop()
    assert {key for _, _, key in gateway.calls} == {"A1", "A2"}
    assert consumer.commits == [{0: 1}]                  # A1, when the outage began; A2 and A3 come again
    assert sender.status.state == "stopped" and consumer.closed


def test_retries_until_the_gateway_is_back_then_goes_on():
    down = GatewayUnavailable("HTTP 503")
    consumer, gateway = ScriptedConsumer(records(paid("A1"), paid("A2"))), Gateway(down, down, down)
    sender = sender_for(consumer, gateway)
    run_until_drained(sender, consumer)
    assert [key for _, _, key in gateway.calls] == ["A1"] * 4 + ["A2"]
    assert sender.status.sent == 2 and sender.status.state == "stopped"
    assert consumer.commits[-1] == {0: 2}


def test_bad_records_and_refused_messages_are_skipped_and_committed():
    consumer = ScriptedConsumer(records(b"not json", None, b'{"order_id": "A0"}', paid("A1"), paid("A2")))
    gateway = Gateway(MessageRejected("HTTP 400: to: String should match pattern"))
    sender = sender_for(consumer, gateway)
    run_until_drained(sender, consumer)
    assert [key for _, _, key in gateway.calls] == ["A1", "A2"]
    status = sender.status
    assert (status.bad_records, status.rejected, status.sent) == (3, 1, 1)
    assert "A1" in status.last_error and consumer.commits == [{0: 5}]


def test_waits_for_kafka_at_start():
    consumer, gateway = ScriptedConsumer(records(paid("A1"))), Gateway()
    attempts = []

    def connect():
        attempts.append(1)
        if len(attempts) < 3:
            raise KafkaTimeoutError("Unable to bootstrap")
        return consumer

    sender = ConfirmationSender(connect, gateway.send, topic="orders", to=TO, pauses_s=(0.01, 0.02))
    run_until_drained(sender, consumer)
    assert len(attempts) == 3 and sender.status.sent == 1


def test_a_broker_gone_while_reading_is_waited_for_and_reading_goes_on():
    """A broker restart makes kafka-python's poll raise a connection error: the notifier waits, as at start."""
    class Outage(ScriptedConsumer):
        def __init__(self, *batches, failures: int):
            super().__init__(*batches)
            self.failures = failures
            self.states: list[str] = []

        def poll(self, timeout_ms, max_records):
            if len(self.batches) == 1 and self.failures:
                self.failures -= 1
                raise KafkaConnectionError("111 ECONNREFUSED")
            return super().poll(timeout_ms, max_records)

    consumer, gateway = Outage(records(paid("A1")), [Record("orders", 0, 1, to_json(paid("A2")))], failures=3), Gateway()
    sender = sender_for(consumer, gateway)
    states = []
    real_note = sender._note_unavailable
    sender._note_unavailable = lambda state, exc: states.append(state) or real_note(state, exc)
    run_until_drained(sender, consumer)
    assert states == ["waiting for kafka"] * 3
    assert [key for _, _, key in gateway.calls] == ["A1", "A2"] and sender.status.sent == 2
    assert sender.status.state == "stopped" and consumer.commits[-1] == {0: 2}


def test_a_failing_consumer_commits_what_was_acknowledged_and_ends_the_service():
    class Broken(ScriptedConsumer):
        def poll(self, timeout_ms, max_records):
            if self.batches:
                return super().poll(timeout_ms, max_records)
            raise RuntimeError("broken")

    consumer, gateway, ended = Broken(records(paid("A1"))), Gateway(), threading.Event()
    sender = sender_for(consumer, gateway, on_exit=ended.set)
    sender.start()
    assert ended.wait(10)
    assert sender.status.state == "failed" and "broken" in sender.status.last_error and not sender.running
    assert consumer.commits == [{0: 1}] and consumer.closed


class SmsClientTest(AsyncHTTPTestCase):
    """The client against the real gateway app: sent, duplicate, refused, unreachable."""

    def get_app(self):
        self.messages = MessageLog()
        return make_app(Settings(_env_file=None), messages=self.messages)

    def send(self, client: SmsClient, *args) -> Delivery:
        return self.io_loop.run_sync(lambda: asyncio.get_running_loop().run_in_executor(None, client.send, *args))

    def test_sent_then_duplicate_then_refused(self):
        client = SmsClient(self.get_url(""))
        assert self.send(client, TO, "hello", "A1") is Delivery.SENT
        assert self.send(client, TO, "hello", "A1") is Delivery.DUPLICATE
        with pytest.raises(MessageRejected, match="HTTP 400: to: String should match pattern"):
            self.send(client, "12345", "hello", "A2")
        assert list(self.messages.messages) == ["A1"]

    def test_messages_share_one_kept_alive_connection(self):
        client = SmsClient(self.get_url(""))
        new_connections = []
        for key in ("A1", "A2", "A3"):
            assert self.send(client, TO, "hello", key) is Delivery.SENT
            new_connections.append(client._curl.getinfo(pycurl.NUM_CONNECTS))
        assert new_connections == [1, 0, 0]
        assert list(self.messages.messages) == ["A1", "A2", "A3"]

    def test_a_gateway_that_closes_each_connection_still_gets_every_message(self):
        closing = HTTPServer(make_app(Settings(_env_file=None), messages=self.messages), no_keep_alive=True)
        sock, port = bind_unused_port()
        closing.add_sockets([sock])
        try:
            client = SmsClient(f"http://127.0.0.1:{port}")
            assert [self.send(client, TO, "hello", key) for key in ("B1", "B2", "B3")] == [Delivery.SENT] * 3
            assert list(self.messages.messages) == ["B1", "B2", "B3"]
        finally:
            closing.stop()

    def test_an_unreachable_gateway_is_unavailable(self):
        with pytest.raises(GatewayUnavailable):
            SmsClient(f"http://127.0.0.1:{free_port()}", timeout_s=2).send(TO, "hello", "A1")
