"""The payment provider simulator: /pay answers at once, then a signed notify is sent and re-sent until `success`."""
from __future__ import annotations

import json
from urllib.parse import parse_qsl

import tornado.web
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.httpclient import AsyncHTTPClient
from tornado.testing import AsyncTestCase, bind_unused_port, gen_test

from producers.provider.app import make_app
from producers.provider.notify_sender import NotifySender
from rtdash.payments import parse_notify, verify
from rtdash.settings import Settings

from served_apps import ServedApps
from waiting import eventually_async

PROVIDER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Receiver(tornado.web.RequestHandler):
    """A notify endpoint that answers from a script (then `success`) and records what it got."""

    def initialize(self, received: list, script: list) -> None:
        self.received, self.script = received, script

    def post(self) -> None:
        self.received.append(self.request.body)
        status, text = self.script.pop(0) if self.script else (200, "success")
        self.set_status(status)
        self.finish(text)


class ProviderTest(ServedApps, AsyncTestCase):
    def setUp(self):
        super().setUp()
        self.settings = Settings(_env_file=None, timezone="UTC")
        self.received: list[bytes] = []
        self.script: list[tuple[int, str]] = []
        self.receiver_url = self.serve(tornado.web.Application(
            [(r"/notify", Receiver, dict(received=self.received, script=self.script))])) + "/notify"
        self.sender = NotifySender(self.settings, PROVIDER_KEY, delay_s=0.01, max_attempts=4, backoff_s=0.01)
        self.provider_url = self.serve(make_app(self.settings, sender=self.sender))
        self.client = AsyncHTTPClient(force_instance=True)

    def tearDown(self):
        self.io_loop.run_sync(self.sender.close)
        self.client.close()
        self.stop_servers()
        super().tearDown()

    async def sender_done(self) -> None:
        await eventually_async(lambda: self.sender.in_flight == 0, timeout=4,
                               what="every notify delivered or given up")

    async def pay(self, payload) -> tuple[int, dict]:
        resp = await self.client.fetch(self.provider_url + "/pay", method="POST", raise_error=False,
                                       body=payload if isinstance(payload, str) else json.dumps(payload))
        return resp.code, json.loads(resp.body)

    @gen_test
    async def test_pay_sends_a_signed_notify_and_retries_until_success(self):
        self.script.extend([(500, "oops"), (200, "fail"), (400, "fail: busy")])
        code, reply = await self.pay({"out_trade_no": "S1", "amount_cents": 12345, "notify_url": self.receiver_url})
        assert code == 200 and reply["out_trade_no"] == "S1" and reply["trade_no"]
        await self.sender_done()
        assert len(self.received) == 4                 # three refusals, then `success`
        assert len(set(self.received)) == 1           # the same notify re-sent, as Alipay does
        params = dict(parse_qsl(self.received[0].decode()))
        assert verify(params, PROVIDER_KEY.public_key())
        notify = parse_notify(params, public_key=PROVIDER_KEY.public_key(), app_id=self.settings.payment_app_id,
                              seller_id=self.settings.payment_seller_id, tz=self.settings.tz)
        assert (notify.out_trade_no, notify.trade_no, notify.amount_cents, notify.is_paid) == \
            ("S1", reply["trade_no"], 12345, True)
        assert params["total_amount"] == "123.45" and params["sign_type"] == "RSA2"
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert not verify(params, other.public_key())
        stats = self.sender.stats
        assert (stats.accepted, stats.delivered, stats.given_up, stats.attempts) == (1, 1, 0, 4)
        health = json.loads((await self.client.fetch(self.provider_url + "/healthz")).body)
        assert health["delivered"] == 1 and health["in_flight"] == 0

    @gen_test
    async def test_gives_up_after_the_last_attempt(self):
        self.script.extend([(400, "fail: bad signature")] * 10)
        await self.pay({"out_trade_no": "S2", "amount_cents": 1, "notify_url": self.receiver_url})
        await self.sender_done()
        assert len(self.received) == 4
        assert (self.sender.stats.delivered, self.sender.stats.given_up) == (0, 1)

    @gen_test
    async def test_unreachable_receiver_is_retried_then_given_up(self):
        sock, port = bind_unused_port()
        sock.close()
        await self.pay({"out_trade_no": "S3", "amount_cents": 100, "notify_url": f"http://127.0.0.1:{port}/x"})
        await self.sender_done()
        assert (self.sender.stats.attempts, self.sender.stats.given_up) == (4, 1)

    @gen_test
    async def test_repeated_pay_is_the_same_payment_and_a_different_amount_is_refused(self):
        first = await self.pay({"out_trade_no": "S4", "amount_cents": 500, "notify_url": self.receiver_url})
        again = await self.pay({"out_trade_no": "S4", "amount_cents": 500, "notify_url": self.receiver_url})
        assert first == again
        code, reply = await self.pay({"out_trade_no": "S4", "amount_cents": 501, "notify_url": self.receiver_url})
        assert code == 409 and "different amount" in reply["error"]
        await self.sender_done()
        assert len(self.received) == 1

    @gen_test
    async def test_bad_pay_requests_are_400(self):
        cases = [("not json", "body: Invalid JSON"), ("[1]", "body: Input should be an object"),
                 ({"amount_cents": 100}, "out_trade_no: Field required"),
                 ({"out_trade_no": "bad id!", "amount_cents": 100}, "out_trade_no: must be 1-64 letters"),
                 ({"out_trade_no": "S5", "amount_cents": 0}, "amount_cents: Input should be greater than 0"),
                 ({"out_trade_no": "S5", "amount_cents": 1.5}, "amount_cents: Input should be a valid integer"),
                 ({"out_trade_no": "S5", "amount_cents": True}, "amount_cents: Input should be a valid integer"),
                 ({"out_trade_no": "S5", "amount_cents": 10**12}, "amount_cents: Input should be less than"),
                 ({"out_trade_no": "S5", "amount_cents": 100, "notify_url": "file:///etc/passwd"},
                  "notify_url: must be an http(s) URL")]
        for payload, reason in cases:
            code, reply = await self.pay(payload)
            assert code == 400, payload
            assert reply["error"].startswith(reason), (payload, reply)
        assert self.sender.stats.accepted == 0 and self.sender.in_flight == 0
