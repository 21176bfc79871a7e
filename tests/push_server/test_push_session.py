"""Sessions: one bounded queue and one writer each; the slow one is cut off, alone."""
from __future__ import annotations

import asyncio
import json

from push_server.hub import Hub
from push_server.protocol import parse_envelope
from push_server.session import CLOSE_TOO_SLOW, Session


def env(channel: str, seq: int):
    return parse_envelope(json.dumps({"channel": channel, "seq": seq, "data": {}}))


class GatedConnection:
    def __init__(self, open_gate: bool = True):
        self.sent: list[int] = []
        self.closed: tuple[int, str] | None = None
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()

    async def send(self, text):
        await self.gate.wait()
        self.sent.append(json.loads(text)["seq"])

    def close(self, code, reason):
        self.closed = (code, reason)


def test_slow_session_is_disconnected_without_blocking_others():
    async def scenario():
        hub = Hub()
        slow_conn, fast_conn = GatedConnection(open_gate=False), GatedConnection()
        slow, fast = Session(slow_conn, queue_size=3), Session(fast_conn, queue_size=3)
        hub.join(slow)
        hub.join(fast)
        for seq in range(1, 9):
            hub.publish(env("orders.today", seq))
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert slow_conn.closed == (CLOSE_TOO_SLOW, "too slow") and slow.closed
        assert fast_conn.sent == list(range(1, 9)) and fast_conn.closed is None
        await slow.wait_closed()
        assert slow._writer.done()
        slow.offer(env("orders.today", 9))                # a closed session takes nothing more
        assert slow.queue.qsize() <= 3
        fast.close()
        await fast.wait_closed()

    asyncio.run(scenario())


def test_session_never_sends_a_seq_twice_or_backwards():
    async def scenario():
        conn = GatedConnection()
        session = Session(conn, queue_size=10)
        for seq in (1, 2, 2, 1, 3):
            session.offer(env("a", seq))
        session.offer(env("b", 1))
        await asyncio.sleep(0.01)
        assert conn.sent == [1, 2, 3, 1]
        session.close()
        await session.wait_closed()

    asyncio.run(scenario())


def test_writer_stops_when_the_socket_is_gone():
    class Broken(GatedConnection):
        async def send(self, text):
            raise ConnectionError("gone")

    async def scenario():
        session = Session(Broken(), queue_size=2)
        session.offer(env("a", 1))
        await asyncio.sleep(0.01)
        assert session.closed and session._writer.done()

    asyncio.run(scenario())
