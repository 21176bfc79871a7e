"""Message shapes: envelopes from Redis and what clients may send."""
from __future__ import annotations

import json

import pytest

from push_server.protocol import (Position, ProtocolError, encode_envelope, parse_client_message, parse_envelope,
                                  parse_since)


def test_envelope_round_trip_keeps_the_exact_text():
    raw = '{"channel":"orders.today","seq":7,"data":{"date":"2026-11-26","count":3,"amount_cents":123450}}'
    envelope = parse_envelope(raw.encode())
    assert (envelope.channel, envelope.seq, envelope.text) == ("orders.today", 7, raw)
    text = encode_envelope("orders.today", 8, {"count": 1})
    assert json.loads(text) == {"channel": "orders.today", "seq": 8, "data": {"count": 1}}
    # as the jobs write them now: with the channel's epoch, and the snapshot marked
    raw = '{"channel":"orders.today","epoch":"1764514800123456","seq":9,"snapshot":true,"data":{"count":2}}'
    assert encode_envelope("orders.today", 9, {"count": 2}, epoch="1764514800123456", snapshot=True) == raw
    envelope = parse_envelope(raw)
    assert (envelope.epoch, envelope.seq, envelope.snapshot, envelope.text) == ("1764514800123456", 9, True, raw)
    assert (parse_envelope(text).epoch, parse_envelope(text).snapshot) == ("", False)


@pytest.mark.parametrize("raw,reason", [
    ("nope", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    ("[1, 2]", "nothing else"),
    ('{"channel": "a", "seq": 1}', "nothing else"),
    ('{"channel": "a", "seq": 1, "data": {}, "extra": 1}', "nothing else"),
    ('{"channel": "a", "epoch": 5, "seq": 1, "data": {}}', "epoch"),
    ('{"channel": "a", "epoch": "", "seq": 1, "data": {}}', "epoch"),
    ('{"channel": "a", "seq": 1, "snapshot": 1, "data": {}}', "snapshot"),
    ('{"channel": "", "seq": 1, "data": {}}', "channel"),
    ('{"channel": 5, "seq": 1, "data": {}}', "channel"),
    ('{"channel": "a", "seq": -1, "data": {}}', "seq"),
    ('{"channel": "a", "seq": 1.5, "data": {}}', "seq"),
    ('{"channel": "a", "seq": true, "data": {}}', "seq"),
    ('{"channel": "a", "seq": "1", "data": {}}', "seq"),
    ('{"channel": "a", "seq": 1, "data": []}', "data"),
    ('{"channel": "a", "seq": 1, "data": null}', "data"),
])
def test_bad_envelopes_are_refused_saying_why(raw, reason):
    with pytest.raises(ProtocolError, match=reason):
        parse_envelope(raw)


def test_client_subscribe_message():
    assert parse_client_message('{"subscribe": ["orders.today"]}') == ["orders.today"]
    assert parse_client_message(b'{"subscribe": []}') == []


@pytest.mark.parametrize("raw,reason", [
    ("hello", r"^message is not JSON \(expected value at line 1 column 1\)$"),
    (b"\xff\xfe", "^message is not JSON"),
    ("[]", r'^expected \{"subscribe": \[channel, \.\.\.\]\}$'),
    ('{"unsubscribe": []}', '^expected {"subscribe"'),
    ('{"subscribe": [], "also": 1}', '^expected {"subscribe"'),
    ('{"subscribe": "orders.today"}', "^subscribe takes a list of at most 64 channel names of 1 to 128 characters$"),
    ('{"subscribe": [1]}', "^subscribe takes a list"),
    ('{"subscribe": [""]}', "^subscribe takes a list"),
    (json.dumps({"subscribe": ["c"] * 65}), "^subscribe takes a list"),
    (json.dumps({"subscribe": ["x" * 129]}), "^subscribe takes a list"),
])
def test_bad_client_messages_are_refused_saying_why(raw, reason):
    with pytest.raises(ProtocolError, match=reason):
        parse_client_message(raw)


def test_client_subscribe_limits_are_inclusive():
    assert parse_client_message(json.dumps({"subscribe": ["c"] * 64})) == ["c"] * 64
    assert parse_client_message(json.dumps({"subscribe": ["x" * 128]})) == ["x" * 128]


def test_since_gives_each_channels_position():
    assert parse_since("") == {}
    assert parse_since('{"orders.today": {"epoch": "17", "seq": 41}, "alerts": {"epoch": "18", "seq": 0}}') == {
        "orders.today": Position("17", 41), "alerts": Position("18", 0)}


@pytest.mark.parametrize("raw,reason", [
    ("{", "^since is not JSON$"),
    ("[]", "^since must be"),
    ('{"orders.today": 41}', "^since must be"),
    ('{"orders.today": {"seq": 41}}', "^since must be"),
    ('{"orders.today": {"epoch": "", "seq": 41}}', "^since must be"),
    ('{"orders.today": {"epoch": 17, "seq": 41}}', "^since must be"),
    ('{"orders.today": {"epoch": "17", "seq": -1}}', "^since must be"),
    ('{"orders.today": {"epoch": "17", "seq": 1, "x": 1}}', "^since must be"),
    (json.dumps({f"c{i}": {"epoch": "1", "seq": 1} for i in range(65)}), "^since must be"),
])
def test_bad_since_is_refused_saying_why(raw, reason):
    with pytest.raises(ProtocolError, match=reason):
        parse_since(raw)
