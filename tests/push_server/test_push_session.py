"""Sessions: one bounded queue and one writer each; the slow one is cut off, alone."""
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
            await asyncio.sleep(0)                        # one turn of the loop: the writers take what they can
        # The slow writer holds seq 1 in its send, 2-4 fill its queue of 3: seq 5 finds it full.
        assert slow_conn.closed == (CLOSE_TOO_SLOW, "too slow") and slow.closed
        assert slow.queue.qsize() == 3 and slow.last_seq == {"orders.today": 5}
        await eventually_async(lambda: fast_conn.sent == list(range(1, 9)), what="the fast client gets 1-8")
        assert fast_conn.closed is None
        await slow.wait_closed()
        assert slow._writer.done() and slow_conn.sent == []
        slow.offer(env("orders.today", 9))                # a closed session takes nothing more
        assert slow.queue.qsize() == 3 and slow.last_seq == {"orders.today": 5}
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
        # Sent in order, and with the queue empty nothing else can follow.
        await eventually_async(lambda: conn.sent == [1, 2, 3, 1] and session.queue.empty(),
                               what="1, 2, 3 on a and 1 on b, once each")
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
        await eventually_async(lambda: session._writer.done(), what="the writer ends")
        assert session.closed and session._writer.exception() is None

    asyncio.run(scenario())
