"""Sessions: one waiting envelope per channel at most, one writer each; one too far behind is cut off, alone."""
from __future__ import annotations

import asyncio
import json

from push_server.hub import Hub
from push_server.protocol import parse_envelope
from push_server.session import CLOSE_TOO_SLOW, Session
from waiting import eventually_async


def env(channel: str, seq: int):
    return parse_envelope(json.dumps({"channel": channel, "seq": seq, "data": {}}))


class GatedConnection:
    def __init__(self, open_gate: bool = True):
        self.sent: list[int] = []
        self.closed: tuple[int, str] | None = None
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()

    def write(self, text):
        if self.gate.is_set():
            self.sent.append(json.loads(text)["seq"])
            return None
        return self.later(text)

    async def later(self, text):
        await self.gate.wait()
        self.sent.append(json.loads(text)["seq"])

    def close(self, code, reason):
        self.closed = (code, reason)


def test_session_with_more_channels_waiting_than_allowed_is_disconnected_without_blocking_others():
    async def scenario():
        hub = Hub()
        slow_conn, fast_conn = GatedConnection(open_gate=False), GatedConnection()
        slow, fast = Session(slow_conn, queue_size=2), Session(fast_conn, queue_size=2)
        hub.join(slow)
        hub.join(fast)
        for seq, channel in enumerate(("a", "b", "b", "c", "d"), start=1):
            hub.publish(env(channel, seq))
        # The slow client's write of a never finishes; b (twice: coalesced) and c wait; d would be a third channel.
        assert slow_conn.closed == (CLOSE_TOO_SLOW, "too slow") and slow.closed
        assert slow.waiting == {} and slow.last_seq == {"a": 1, "b": 3, "c": 4, "d": 5}
        assert fast_conn.sent == [1, 2, 3, 4, 5] and fast_conn.closed is None
        await slow.wait_closed()
        assert slow_conn.sent == []
        slow.offer(env("e", 6))                           # a closed session takes nothing more
        assert slow.waiting == {} and "e" not in slow.last_seq
        fast.close()
        await fast.wait_closed()

    asyncio.run(scenario())


def test_session_never_sends_a_seq_twice_or_backwards():
    async def scenario():
        conn = GatedConnection()
        session = Session(conn, queue_size=10)
        for channel, seq in (("a", 1), ("a", 2), ("a", 2), ("a", 1), ("a", 3), ("b", 1)):
            session.offer(env(channel, seq))
        assert conn.sent == [1, 2, 3, 1] and not session.waiting
        session.close()
        await session.wait_closed()

    asyncio.run(scenario())


def test_writing_stops_when_the_socket_is_gone():
    class Broken(GatedConnection):
        def write(self, text):
            raise ConnectionError("gone")

    class BrokenLater(GatedConnection):
        async def later(self, text):
            raise ConnectionError("gone")

    async def scenario():
        at_once = Session(Broken(), queue_size=2)
        at_once.offer(env("a", 1))
        assert at_once.closed
        later_conn = BrokenLater(open_gate=False)
        later = Session(later_conn, queue_size=2)
        later.offer(env("a", 1))
        later.offer(env("b", 1))
        assert later.waiting
        await eventually_async(lambda: later.closed, what="the session stops once the write fails")
        assert later.waiting == {} and later_conn.sent == []

    asyncio.run(scenario())
