"""One connected dashboard: a bounded queue and one writer task.

The hub only ever calls `offer`, which never blocks: a client too slow to
drain its queue is disconnected (close code 1013, try again later) rather than
slowing anyone else down or growing memory without bound. A session also never
sends an envelope not newer than the last one it sent on that channel, so a
client sees ``seq`` grow on every channel.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, Protocol

from .protocol import Envelope

log = logging.getLogger("rtdash.push.session")

CLOSE_TOO_SLOW = 1013      # "try again later"
CLOSE_RESET = 1012         # "service restart": reconnect and start from snapshots


class Connection(Protocol):
    async def send(self, text: str) -> None: ...
    def close(self, code: int, reason: str) -> None: ...


class Session:
    """Per-connection state: the queue, the writer task and the last seq offered per channel."""

    def __init__(self, connection: Connection, *, queue_size: int, name: str = "client",
                 on_close: Callable[[Session], None] | None = None):
        self.connection = connection
        self.on_close = on_close
        self.name = name
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue(maxsize=queue_size)
        self.closed = False
        self.last_seq: dict[str, int] = {}
        self._writer = asyncio.get_running_loop().create_task(self._write())

    def offer(self, envelope: Envelope) -> None:
        """Queue an envelope without waiting; disconnect the client if its queue is full."""
        if self.closed:
            return
        last = self.last_seq.get(envelope.channel)
        if last is not None and envelope.seq <= last:
            return
        self.last_seq[envelope.channel] = envelope.seq
        try:
            self.queue.put_nowait(envelope)
        except asyncio.QueueFull:
            log.warning("%s too slow (%d messages queued): disconnecting", self.name, self.queue.qsize())
            self.close(CLOSE_TOO_SLOW, "too slow")

    def reset(self, reason: str) -> None:
        self.close(CLOSE_RESET, reason)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self._writer.cancel()
        self.connection.close(code, reason)
        if self.on_close is not None:
            self.on_close(self)

    async def wait_closed(self) -> None:
        try:
            await self._writer
        except asyncio.CancelledError:
            pass

    async def _write(self) -> None:
        while True:
            envelope = await self.queue.get()
            try:
                await self.connection.send(envelope.text)
            except Exception as exc:  # noqa: BLE001 - the socket is gone: stop writing
                log.info("%s gone while writing: %s", self.name, type(exc).__name__)
                self.closed = True
                return
