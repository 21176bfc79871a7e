"""One connected dashboard: at most one waiting envelope per channel, and one writer task.

The hub only ever calls `offer`, which never blocks. A client that reads
slowly gets the latest state of each channel instead of every intermediate
envelope: a newer envelope replaces the one still waiting on its channel, so
a session holds at most one waiting envelope per channel (plus the one being
written) whatever the publish rate. On the per-minute channels a live
envelope may carry only the minutes that changed, so there the waiting
envelope and the newer one are merged (minutes of both, the newer's value for
a minute in both, as the page merges them); a new day or another epoch
replaces. A client that stops reading (one write unfinished for
`stall_seconds`) is closed with 1013 (try again later).

No task per session: `offer` writes at once when nothing is being written
(the socket usually takes the frame on the spot), else the envelope waits and
goes out when the write in flight has finished.

A session also never sends an envelope not newer than the last one it took on
that channel, so a client sees ``seq`` grow on every channel.
"""
from __future__ import annotations

import asyncio
import logging
import struct
from functools import lru_cache
from typing import Awaitable, Callable, Protocol

from tornado.iostream import IOStream

from . import metrics
from .protocol import Envelope, coalesce

log = logging.getLogger("rtdash.push.session")

CLOSE_TOO_SLOW = 1013      # "try again later": stopped reading, or more channels waiting than allowed
CLOSE_RESET = 1012         # "service restart": reconnect and start from snapshots

DEFAULT_STALL_SECONDS = 30.0


class Connection(Protocol):
    def write(self, text: str) -> Awaitable[None] | None:
        """Start writing `text`: None when it was written at once, else what to wait on until it is."""

    def close(self, code: int, reason: str) -> None: ...


@lru_cache(maxsize=128)
def text_frame(text: str) -> bytes:
    """The WebSocket frame of a text message as a server sends it (RFC 6455: one frame, unmasked).

    Built once per envelope, however many sessions write it (cached by text).
    """
    payload = text.encode()
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x81, size)
    elif size <= 0xFFFF:
        head = struct.pack("!BBH", 0x81, 126, size)
    else:
        head = struct.pack("!BBQ", 0x81, 127, size)
    return head + payload


def write_frame(stream: IOStream, frame: bytes) -> asyncio.Future[None] | None:
    """Write `frame` to a plain (not TLS) Tornado stream: None when the socket took it all at once.

    When nothing of the stream's is waiting to be written, the frame goes straight to the socket, with
    none of the stream's per-write bookkeeping; what the socket does not take, and anything on a
    stream that has data waiting or uses TLS, goes through `stream.write` (which then also reports
    a broken connection).
    """
    if type(stream) is IOStream and not stream._write_buffer and not stream.closed():
        try:
            sent = stream.socket.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0   # the stream's own write below meets the error again and closes the stream
        if sent == len(frame):
            return None
        frame = frame[sent:]
    return stream.write(frame)


class Session:
    """Per-connection state: the envelopes waiting (one per channel), the write in flight, the last seq per channel.

    `queue_size` bounds how many channels may wait at once (more: closed with 1013); `stall_seconds`
    is how long one write may stay unfinished before the client counts as gone (None: the default,
    `Session.stall_seconds`, which the process sets from RTDASH_PUSH_STALL_SECONDS).
    """

    stall_seconds: float = DEFAULT_STALL_SECONDS

    def __init__(self, connection: Connection, *, queue_size: int, name: str = "client",
                 on_close: Callable[[Session], None] | None = None, stall_seconds: float | None = None):
        self.connection = connection
        self.on_close = on_close
        self.name = name
        self.max_waiting = queue_size
        if stall_seconds is not None:
            self.stall_seconds = stall_seconds
        self.waiting: dict[str, Envelope] = {}   # by channel, oldest first
        self.closed = False
        self.last_seq: dict[str, int] = {}
        self._loop = asyncio.get_running_loop()
        self._in_flight: asyncio.Future | None = None
        self._writing_since: float | None = None
        self._watchdog = self._loop.call_later(self.stall_seconds, self._check_stall)

    def offer(self, envelope: Envelope) -> None:
        """Take an envelope without waiting: written now, or it joins, replaces or merges with the one waiting."""
        if self.closed:
            return
        channel = envelope.channel
        last = self.last_seq.get(channel)
        if last is not None and envelope.seq <= last:
            return
        self.last_seq[channel] = envelope.seq
        if self._in_flight is None:         # nothing being written, so nothing waiting either
            self._write(envelope)
            return
        older = self.waiting.get(channel)
        if older is not None:
            self.waiting[channel] = coalesce(older, envelope)
            metrics.MESSAGES_COALESCED.inc()
            return
        if len(self.waiting) >= self.max_waiting:
            log.warning("%s too slow (%d channels waiting): disconnecting", self.name, len(self.waiting))
            self.close(CLOSE_TOO_SLOW, "too slow")
            return
        self.waiting[channel] = envelope

    def reset(self, reason: str) -> None:
        self.close(CLOSE_RESET, reason)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self._watchdog.cancel()
        self.waiting.clear()
        self.connection.close(code, reason)
        if self.on_close is not None:
            self.on_close(self)

    async def wait_closed(self) -> None:
        """Nothing to wait for once closed: a write in flight belongs to the connection, which ends it."""

    def _write(self, envelope: Envelope) -> None:
        """Write `envelope`, then whatever waits, until a write does not finish at once (`_written` goes on)."""
        waiting = self.waiting
        while True:
            try:
                pending = self.connection.write(envelope.text)
            except Exception as exc:  # noqa: BLE001 - the socket is gone: stop writing
                self._gone(exc)
                return
            metrics.MESSAGES_SENT.inc()
            if pending is not None:
                future = asyncio.ensure_future(pending)
                if not future.done():
                    self._in_flight = future
                    self._writing_since = self._loop.time()
                    future.add_done_callback(self._written)
                    return
                if future.cancelled() or future.exception() is not None:
                    self._gone(future.exception())
                    return
            if self.closed or not waiting:
                return
            envelope = waiting.pop(next(iter(waiting)))

    def _written(self, future: asyncio.Future) -> None:
        self._in_flight = None
        self._writing_since = None
        if self.closed:
            return
        if future.cancelled() or future.exception() is not None:
            self._gone(future.exception())
        elif self.waiting:
            self._write(self.waiting.pop(next(iter(self.waiting))))

    def _gone(self, exc: BaseException | None) -> None:
        log.info("%s gone while writing: %s", self.name, type(exc).__name__ if exc else "cancelled")
        self.closed = True
        self._watchdog.cancel()
        self.waiting.clear()

    def _check_stall(self) -> None:
        """Close the session if one write has been unfinished for `stall_seconds`; else look again when it could be."""
        if self.closed:
            return
        now = self._loop.time()
        since = self._writing_since
        if since is not None and now - since >= self.stall_seconds:
            log.warning("%s stopped reading (one write unfinished for %.0f s): disconnecting",
                        self.name, now - since)
            self.close(CLOSE_TOO_SLOW, "stopped reading")
            return
        self._watchdog = self._loop.call_at((since if since is not None else now) + self.stall_seconds,
                                            self._check_stall)
