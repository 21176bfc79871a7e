"""HTTP and WebSocket handlers: parse, delegate to the hub, reply."""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

import tornado.web
import tornado.websocket

from .broker import Broker
from .hub import Hub
from .protocol import ProtocolError, parse_client_message
from .session import Session

log = logging.getLogger("rtdash.push")


class SocketConnection:
    """Adapts a WebSocketHandler to the Session's small Connection interface."""

    def __init__(self, handler: tornado.websocket.WebSocketHandler):
        self.handler = handler

    async def send(self, text: str) -> None:
        await self.handler.write_message(text)

    def close(self, code: int, reason: str) -> None:
        self.handler.close(code, reason)


class DashboardSocket(tornado.websocket.WebSocketHandler):
    """/ws: snapshots first, then live envelopes, for every channel the client gets."""

    def initialize(self, *, hub: Hub, origins: list[str], queue_size: int) -> None:
        self.hub = hub
        self.origins = {o.rstrip("/").lower() for o in origins}
        self.queue_size = queue_size
        self.session: Session | None = None

    def check_origin(self, origin: str) -> bool:
        parts = urlsplit(origin)
        allowed = f"{parts.scheme}://{parts.netloc}".lower() in self.origins
        if not allowed:
            log.warning("refused WebSocket from origin %r (not in RTDASH_ALLOWED_ORIGINS)", origin)
        return allowed

    def open(self) -> None:
        self.session = Session(SocketConnection(self), queue_size=self.queue_size,
                               name=f"client {self.request.remote_ip}")
        self.hub.join(self.session)
        log.info("dashboard connected from %s (%d clients)", self.request.remote_ip, self.hub.clients)

    def on_message(self, message: str | bytes) -> None:
        try:
            channels = parse_client_message(message)
        except ProtocolError as exc:
            self.close(1003, str(exc)[:120])
            return
        self.hub.join(self.session, channels)

    def on_close(self) -> None:
        if self.session is not None:
            self.session.close(self.close_code or 1000)
            self.hub.leave(self.session)
        log.info("dashboard disconnected from %s (code %s, %d clients)", self.request.remote_ip,
                 self.close_code, self.hub.clients)


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, *, hub: Hub, broker: Broker) -> None:
        self.hub = hub
        self.broker = broker

    def get(self) -> None:
        self.finish({"status": "ok", "service": "push_server", "redis_connected": self.broker.connected,
                     "clients": self.hub.clients, "channels": self.hub.channels()})


class DashboardHandler(tornado.web.StaticFileHandler):
    """The dashboard page and its assets; never cached stale across versions."""

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:")
