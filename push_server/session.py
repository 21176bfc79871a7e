"""One connected dashboard: a bounded queue and one writer task.

The hub only ever calls `offer`, which never blocks: a client too slow to
drain its queue is disconnected (close code 1013, try again later) rather than
slowing anyone else down or growing memory without bound.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from .protocol import Envelope

log = logging.getLogger("rtdash.push.session")

CLOSE_TOO_SLOW = 1013      # "try again later"
CLOSE_RESET = 1012         # "service restart": reconnect and start from snapshots


class Connection(Protocol):
    async def send(self, text: str) -> None: ...
    def close(self, code: int, reason: str) -> None: ...


class Session:
    def __init__(self, connection: Connection, *, queue_size: int, name: str = "client"):
        self.connection = connection
        self.name = name
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue(maxsize=queue_size)
        self.closed = False
        self._writer = asyncio.get_running_loop().create_task(self._write())

    def offer(self, envelope: Envelope) -> None:
        if self.closed:
            return
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
