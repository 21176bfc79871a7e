"""HTTP and WebSocket handlers: parse, delegate to the hub, reply."""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from urllib.parse import urlsplit

import tornado.web
import tornado.websocket

from .broker import Broker
from .hub import Hub
from .protocol import ProtocolError, parse_client_message
from .session import Session

log = logging.getLogger("rtdash.push")

CLOSE_UNSUPPORTED = 1003


class SocketConnection:
    """Adapts a WebSocketHandler to the Session's small Connection interface."""

    def __init__(self, handler: tornado.websocket.WebSocketHandler):
        self.handler = handler

    async def send(self, text: str) -> None:
        # Shielded: when a slow session is cut off its writer is cancelled, but Tornado's own write
        # future must be left to finish (or fail with the stream) by itself.
        await asyncio.shield(self.handler.write_message(text))

    def close(self, code: int, reason: str) -> None:
        self.handler.close(code, reason)


def normalise_origin(origin: str) -> str:
    parts = urlsplit(origin.strip())
    return f"{parts.scheme}://{parts.netloc}".lower()


class DashboardSocketHandler(tornado.websocket.WebSocketHandler):
    """/ws: snapshots first, then live envelopes, for every channel the client gets."""

    def initialize(self, *, hub: Hub, origins: list[str], queue_size: int, ids: itertools.count) -> None:
        self.hub = hub
        self.origins = {normalise_origin(o) for o in origins}
        self.queue_size = queue_size
        self.ids = ids
        self.session: Session | None = None

    def check_origin(self, origin: str) -> bool:
        allowed = normalise_origin(origin) in self.origins
        if not allowed:
            log.warning("refused WebSocket from origin %r (not in RTDASH_ALLOWED_ORIGINS)", origin)
        return allowed

    def open(self) -> None:
        name = f"client #{next(self.ids)} ({self.request.remote_ip})"
        self.session = Session(SocketConnection(self), queue_size=self.queue_size, name=name,
                               on_close=self.hub.leave)
        self.hub.join(self.session)
        log.info("%s connected (%d clients)", name, self.hub.clients)

    def on_message(self, message: str | bytes) -> None:
        try:
            channels = parse_client_message(message)
        except ProtocolError as exc:
            self.close(CLOSE_UNSUPPORTED, str(exc)[:120])
            return
        if self.session is not None and not self.session.closed:
            self.hub.join(self.session, channels)

    def on_close(self) -> None:
        if self.session is None:
            return
        self.session.close(self.close_code or 1000)
        self.hub.leave(self.session)
        log.info("%s disconnected (code %s, %d clients)", self.session.name, self.close_code, self.hub.clients)


class IndexHandler(tornado.web.RequestHandler):
    """The dashboard page; its figures arrive over /ws."""

    def initialize(self, *, timezone: str) -> None:
        self.timezone = timezone

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Content-Security-Policy",
                        "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
        self.set_header("X-Content-Type-Options", "nosniff")

    def get(self) -> None:
        self.render("index.html", timezone=self.timezone, server_time_ms=int(time.time() * 1000))


class HealthHandler(tornado.web.RequestHandler):
    """/healthz: the process answers; whether Redis is reachable and how many clients are connected."""

    def initialize(self, *, hub: Hub, broker: Broker) -> None:
        self.hub = hub
        self.broker = broker

    def get(self) -> None:
        connected = bool(self.broker.connected)
        self.finish({"status": "ok" if connected else "degraded", "service": "push_server",
                     "redis": "connected" if connected else "disconnected", "redis_connected": connected,
                     "clients": self.hub.clients,
                     "channels": {c: self.hub.last_seq(c) for c in self.hub.channels()}})
