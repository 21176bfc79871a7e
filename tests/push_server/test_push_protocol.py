"""Message shapes: envelopes from Redis and what clients may send."""
from __future__ import annotations

import json

import pytest

from push_server.protocol import ProtocolError, encode_envelope, parse_client_message, parse_envelope


def test_envelope_round_trip_keeps_the_exact_text():
    raw = '{"channel":"orders.today","seq":7,"data":{"date":"2026-11-26","count":3,"amount_cents":123450}}'
    envelope = parse_envelope(raw.encode())
    assert (envelope.channel, envelope.seq, envelope.text) == ("orders.today", 7, raw)
    text = encode_envelope("orders.today", 8, {"count": 1})
    assert json.loads(text) == {"channel": "orders.today", "seq": 8, "data": {"count": 1}}


@pytest.mark.parametrize("raw,reason", [
    ("nope", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    ("[1, 2]", "exactly"),
    ('{"channel": "a", "seq": 1}', "exactly"),
    ('{"channel": "a", "seq": 1, "data": {}, "extra": 1}', "exactly"),
    ('{"channel": "", "seq": 1, "data": {}}', "channel"),
    ('{"channel": 5, "seq": 1, "data": {}}', "channel"),
    ('{"channel": "a", "seq": -1, "data": {}}', "seq"),
    ('{"channel": "a", "seq": 1.5, "data": {}}', "seq"),
    ('{"channel": "a", "seq": true, "data": {}}', "seq"),
    ('{"channel": "a", "seq": "1", "data": {}}', "seq"),
    ('{"channel": "a", "seq": 1, "data": []}', "data"),
])
def test_bad_envelopes_are_refused(raw, reason):
    with pytest.raises(ProtocolError, match=reason):
        parse_envelope(raw)


def test_client_subscribe_message():
    assert parse_client_message('{"subscribe": ["orders.today"]}') == ["orders.today"]
    assert parse_client_message(b'{"subscribe": []}') == []


@pytest.mark.parametrize("raw", [
    '{"subscribe": "orders.today"}', '{"unsubscribe": []}', "[]", '{"subscribe": [1]}', "hello",
    '{"subscribe": [""]}', json.dumps({"subscribe": ["c"] * 65}), json.dumps({"subscribe": ["x" * 200]}),
])
def test_bad_client_messages_are_refused(raw):
    with pytest.raises(ProtocolError):
        parse_client_message(raw)
