"""What every rtdash service process shares at its edge: bounded HTTP listeners, waiting for the signal to stop.

`listen` is the one way a service serves HTTP: a tornado HTTPServer with the
limits of settings (RTDASH_MAX_CONNECTIONS, RTDASH_IDLE_TIMEOUT_SECONDS,
RTDASH_BODY_TIMEOUT_SECONDS), so no client can hold a service's memory or file
descriptors for long: one connection beyond the limit is answered 503 and
closed at once, a connection that sends no complete request head for the idle
timeout is closed (kept-alive ones between requests, and slow senders of a head
alike), and so is one whose request body has not arrived within the body
timeout of its head.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream, StreamClosedError

from rtdash.settings import Settings

log = logging.getLogger("rtdash.service")

# What a connection beyond the limit reads before it is closed.
_REFUSAL_BODY = b'{"error": "too many connections"}'
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
           b"Retry-After: 1\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY))


class LimitedHTTPServer(HTTPServer):
    """An HTTPServer that holds at most `max_connections` client connections; `refused` counts the others.

    A connection counts from accept until tornado lets go of it (closed, or handed over to a
    WebSocket). The first refusal of a busy spell is logged; the spell ends when a slot frees up.
    """

    def initialize(self, *args: Any, max_connections: int, **kwargs: Any) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        self.open_connections = 0
        self.refused = 0
        self._full = False

    def handle_stream(self, stream: IOStream, address: tuple) -> None:
        if self.open_connections >= self.max_connections:
            self.refused += 1
            if not self._full:
                self._full = True
                log.warning("%d connections open, the limit: refusing new ones until one closes",
                            self.max_connections)
            try:
                stream.write(REFUSAL).add_done_callback(lambda done: (done.exception(), stream.close()))
            except StreamClosedError:
                pass                         # gone already
            return
        self.open_connections += 1
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        self.open_connections -= 1
        self._full = False
        super().on_close(server_conn)


def listen(app: Any, settings: Settings, port: int, *, address: str | None = None,
           **options: Any) -> LimitedHTTPServer:
    """Serve `app` on `address` (default settings.bind_host):`port` within the limits of `settings`.

    `options` are HTTPServer's others (max_body_size, xheaders, decompress_request...).
    """
    server = LimitedHTTPServer(app, max_connections=settings.max_connections,
                               idle_connection_timeout=settings.idle_timeout_seconds,
                               body_timeout=settings.body_timeout_seconds, **options)
    server.listen(port, address=settings.bind_host if address is None else address)
    return server


async def until_stopped(stop: asyncio.Event | None = None) -> None:
    """Return on SIGTERM or SIGINT (or when `stop` is set), with the handlers removed again.

    Services call this after they started listening and shut down cleanly after
    it returns: stop accepting, finish in-flight work, close background tasks.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
