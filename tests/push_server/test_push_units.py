"""Protocol, hub and session: the push server's pieces without any I/O."""
from __future__ import annotations

import asyncio
import json

import pytest

from push_server.hub import Hub
from push_server.protocol import ProtocolError, parse_client_message, parse_envelope
from push_server.session import CLOSE_TOO_SLOW, Session


def env(channel: str, seq: int, **data):
    return parse_envelope(json.dumps({"channel": channel, "seq": seq, "data": data}))


class Recorder:
    def __init__(self):
        self.got: list[tuple[str, int]] = []
        self.closed: tuple[int, str] | None = None

    def offer(self, envelope):
        self.got.append((envelope.channel, envelope.seq))

    def reset(self, reason):
        self.close(1012, reason)

    def close(self, code, reason):
        self.closed = (code, reason)


@pytest.mark.parametrize("raw,reason", [
    ("nope", "not JSON"), ('{"channel": "a", "seq": 1}', "exactly"), ('{"channel": "", "seq": 1, "data": {}}', "channel"),
    ('{"channel": "a", "seq": -1, "data": {}}', "seq"), ('{"channel": "a", "seq": true, "data": {}}', "seq"),
    ('{"channel": "a", "seq": 1, "data": []}', "data"),
])
def test_bad_envelopes_are_refused(raw, reason):
    with pytest.raises(ProtocolError, match=reason):
        parse_envelope(raw)


def test_client_subscribe_message():
    assert parse_client_message('{"subscribe": ["orders.today"]}') == ["orders.today"]
    for raw in ('{"subscribe": "orders.today"}', '{"unsubscribe": []}', "[]", '{"subscribe": [1]}'):
        with pytest.raises(ProtocolError):
            parse_client_message(raw)


def test_hub_sends_snapshots_first_then_newer_envelopes_only():
    hub = Hub()
    hub.publish(env("orders.today", 3, count=1))
    hub.publish(env("orders.per_minute", 7))
    client = Recorder()
    hub.join(client)
    assert client.got == [("orders.per_minute", 7), ("orders.today", 3)]
    assert hub.publish(env("orders.today", 3)) is False      # repeated
    assert hub.publish(env("orders.today", 2)) is False      # stale
    assert hub.publish(env("orders.today", 4)) is True
    assert client.got[-1] == ("orders.today", 4)
    hub.leave(client)
    hub.publish(env("orders.today", 5))
    assert client.got[-1] == ("orders.today", 4) and hub.clients == 0


def test_subscribing_to_a_channel_sends_only_its_snapshot_and_updates():
    hub = Hub()
    hub.publish(env("orders.today", 1))
    hub.publish(env("orders.per_minute", 1))
    client = Recorder()
    hub.join(client, ["orders.per_minute"])
    hub.publish(env("orders.today", 2))
    hub.publish(env("orders.per_minute", 2))
    assert client.got == [("orders.per_minute", 1), ("orders.per_minute", 2)]


def test_snapshot_numbering_going_back_resets_every_client():
    hub = Hub()
    client = Recorder()
    hub.join(client)
    hub.load_snapshots([env("orders.today", 10), env("orders.per_minute", 3)])
    hub.load_snapshots([env("orders.today", 12), env("orders.per_minute", 3)])   # newer: sent as live
    assert client.got == [("orders.today", 10), ("orders.per_minute", 3), ("orders.today", 12)]
    assert client.closed is None
    hub.load_snapshots([env("orders.today", 1)])      # Redis lost its data: start over
    assert client.closed == (1012, "snapshot numbering restarted")
    assert hub.latest("orders.today").seq == 1 and hub.latest("orders.per_minute") is None


def test_a_channel_missing_after_reconnect_accepts_restarted_numbering():
    hub = Hub()
    hub.load_snapshots([env("orders.today", 40)])
    hub.load_snapshots([])                            # Redis came back empty
    assert hub.publish(env("orders.today", 1)) is True


class SlowConnection:
    def __init__(self):
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.gate = asyncio.Event()

    async def send(self, text):
        await self.gate.wait()
        self.sent.append(text)

    def close(self, code, reason):
        self.closed = (code, reason)


def test_slow_session_is_disconnected_without_blocking_others():
    asyncio.run(_slow_session())


async def _slow_session():
    hub = Hub()
    slow_conn, fast_conn = SlowConnection(), SlowConnection()
    fast_conn.gate.set()
    slow, fast = Session(slow_conn, queue_size=3), Session(fast_conn, queue_size=3)
    hub.join(slow)
    hub.join(fast)
    for seq in range(1, 8):
        hub.publish(env("orders.today", seq))
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert slow_conn.closed == (CLOSE_TOO_SLOW, "too slow")
    assert [json.loads(t)["seq"] for t in fast_conn.sent] == list(range(1, 8))
    fast.close()
