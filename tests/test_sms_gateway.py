"""The SMS gateway simulator: one message per idempotency key, 400 with a reason for bad input, a journal read back."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tornado.testing import AsyncHTTPTestCase

from producers.sms_gateway.app import MessageLog, MessageRequest, make_app
from rtdash.settings import Settings

MESSAGE = {"to": "+8613800000000", "text": "payment received for order A1", "idempotency_key": "A1"}


class SmsGatewayTest(AsyncHTTPTestCase):
    journal = None

    def get_app(self):
        self.messages = MessageLog(self.journal)
        return make_app(Settings(_env_file=None), messages=self.messages)

    def tearDown(self):
        self.messages.close()
        super().tearDown()

    def post(self, body) -> tuple[int, dict]:
        resp = self.fetch("/messages", method="POST", body=body if isinstance(body, (str, bytes)) else json.dumps(body))
        return resp.code, json.loads(resp.body)

    def recorded(self) -> list[dict]:
        return json.loads(self.fetch("/messages").body)["messages"]

    def test_a_message_is_recorded_and_listed(self):
        code, reply = self.post(MESSAGE)
        assert code == 201 and reply["status"] == "recorded"
        assert reply["message"]["id"] == 1 and reply["message"]["received_at"].endswith("Z")
        assert [(m["to"], m["text"], m["idempotency_key"]) for m in self.recorded()] == \
            [(MESSAGE["to"], MESSAGE["text"], "A1")]

    def test_the_same_key_again_is_a_duplicate_and_records_nothing(self):
        first = self.post(MESSAGE)[1]["message"]
        code, reply = self.post({**MESSAGE, "text": "sent again"})
        assert code == 200 and reply["status"] == "duplicate" and reply["message"] == first
        self.post({**MESSAGE, "idempotency_key": "A2"})
        assert [m["idempotency_key"] for m in self.recorded()] == ["A1", "A2"]
        health = json.loads(self.fetch("/healthz").body)
        assert health == {"status": "ok", "service": "sms_gateway", "messages": 2, "duplicates": 1}

    def test_bad_input_is_a_400_with_the_reason_and_records_nothing(self):
        cases = [
            ("{not json", "Invalid JSON"),
            ("[1, 2]", "body: Input should be an object"),
            ({k: v for k, v in MESSAGE.items() if k != "to"}, "to: Field required"),
            ({**MESSAGE, "to": "13800000000"}, "to: String should match pattern"),
            ({**MESSAGE, "to": 8613800000000}, "to: Input should be a valid string"),
            ({**MESSAGE, "text": ""}, "text: String should have at least 1 character"),
            ({**MESSAGE, "text": "x" * 1001}, "text: String should have at most 1000 characters"),
            ({**MESSAGE, "idempotency_key": ""}, "idempotency_key: String should have at least 1 character"),
            ({**MESSAGE, "idempotencyKey": "A1"}, "idempotencyKey: Extra inputs are not permitted"),
        ]
        for body, reason in cases:
            code, reply = self.post(body)
            assert code == 400, body
            assert reason in reply["error"], (body, reply)
        assert self.recorded() == []


class JournalTest(SmsGatewayTest):
    """The same behaviour with a journal, and what a restart reads back from it."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.journal = Path(self.tmp.name) / "sms" / "messages.jsonl"
        super().setUp()

    def tearDown(self):
        super().tearDown()
        self.tmp.cleanup()

    def test_a_restarted_gateway_knows_the_keys_in_its_journal(self):
        self.post(MESSAGE)
        self.messages.close()
        with self.journal.open("a") as f:
            f.write('{"id": 2, "to": "+86')       # killed in the middle of a line
        restarted = MessageLog(self.journal)
        try:
            assert list(restarted.messages) == ["A1"]
            message, new = restarted.record(MessageRequest(**MESSAGE))
            assert not new and message["id"] == 1
            message, new = restarted.record(MessageRequest(**{**MESSAGE, "idempotency_key": "A2"}))
            assert new and message["id"] == 2
        finally:
            restarted.close()
        again = MessageLog(self.journal)
        again.close()
        assert list(again.messages) == ["A1", "A2"]   # the torn line did not take A2 with it


def test_the_log_keeps_the_newest_messages_only():
    log = MessageLog(max_messages=2)
    for key in ("K1", "K2", "K3"):
        log.record(MessageRequest(**{**MESSAGE, "idempotency_key": key}))
    assert list(log.messages) == ["K2", "K3"]
