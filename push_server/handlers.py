"""HTTP and WebSocket handlers: parse, delegate to the hub, reply."""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time

import tornado.ioloop
import tornado.web
import tornado.websocket

from rtdash.channels import CHANNELS

from . import metrics
from .access import Access, Guarded
from .broker import Broker
from .hub import ALL, Hub
from .limits import CLOSE_TOO_MANY_MESSAGES, ConnectionLimits, MessageRate
from .protocol import ProtocolError, parse_client_message, parse_since
from .session import Session, text_frame, write_frame
from .tokens import Grant, TokenError

log = logging.getLogger("rtdash.push")

CLOSE_UNSUPPORTED = 1003
CLOSE_TOKEN_EXPIRED = 4001
KNOWN_CHANNELS = frozenset(CHANNELS)


class SocketConnection:
    """Adapts a WebSocketHandler to the Session's small Connection interface."""

    def __init__(self, handler: tornado.websocket.WebSocketHandler):
        self.handler = handler

    def write(self, text: str) -> asyncio.Future[None] | None:
        # The frame is built once per envelope (session.text_frame) and written straight to the stream:
        # None when the socket took it at once, else the stream's future of the write.
        connection = self.handler.ws_connection
        if connection is None or connection.is_closing():
            raise tornado.websocket.WebSocketClosedError()
        return write_frame(connection.stream, text_frame(text))

    def close(self, code: int, reason: str) -> None:
        self.handler.close(code, reason)


def subscribe_error(error: str, channel: str) -> str:
    """The message refusing a subscribe: {"error": "unknown channel"|"channel not allowed", "channel": name}."""
    return json.dumps({"error": error, "channel": channel}, ensure_ascii=False)


class DashboardSocketHandler(Guarded, tornado.websocket.WebSocketHandler):
    """/ws: snapshots first, then live envelopes, for every channel the client's token allows.

    Before the upgrade (prepare): Host (403), Origin when there is one (403),
    token (401). Once open: the connection limits (1013, 4029), a timer that
    closes the socket when the token expires (4001), and a message rate (4008).
    A subscribe is taken whole or not at all: one unknown or forbidden channel
    and the client gets an error message, its subscriptions stay as they were
    and the hub keeps nothing of the names.
    """

    def initialize(self, *, hub: Hub, access: Access, limits: ConnectionLimits, max_messages_per_second: float,
                   queue_size: int, ids: itertools.count) -> None:
        self.hub = hub
        self.access = access
        self.limits = limits
        self.max_messages_per_second = max_messages_per_second
        self.queue_size = queue_size
        self.ids = ids
        self.session: Session | None = None
        self.grant: Grant | None = None
        self.admitted = False
        self.rate: MessageRate | None = None
        self.expiry: object | None = None

    def prepare(self) -> None:
        if self.refused_host():
            return
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.access.origin_allowed(origin):
            log.warning("refused WebSocket from origin %r (not in RTDASH_ALLOWED_ORIGINS)", origin[:100])
            self.refuse(403, "origin not allowed", "open the dashboard at an address in RTDASH_ALLOWED_ORIGINS")
            return
        try:
            self.grant = self.access.tokens.verify(self.get_query_argument("token", None))
        except TokenError as exc:
            log.info("refused WebSocket from %s: %s", self.request.remote_ip, exc)
            self.refuse(401, exc.reason, exc.detail)

    def check_origin(self, origin: str) -> bool:
        return self.access.origin_allowed(origin)   # prepare() refused any other already

    def open(self) -> None:
        try:
            since = parse_since(self.get_query_argument("since", ""))   # a reconnecting client's positions
        except ProtocolError as exc:
            self.close(CLOSE_UNSUPPORTED, str(exc)[:120])
            return
        address = self.request.remote_ip
        refusal = self.limits.admit(address)
        if refusal is not None:
            log.warning("refused WebSocket from %s: %s (%d open, %d from it)", address, refusal[1],
                        self.limits.open, self.limits.held_by(address))
            self.close(*refusal)
            return
        self.admitted = True
        grant = self.grant
        assert grant is not None                        # prepare() let only a valid token through
        self.rate = MessageRate(self.max_messages_per_second)
        self.expiry = tornado.ioloop.IOLoop.current().call_later(
            max(0.0, grant.expires_at + self.access.tokens.leeway - time.time()), self.token_expired)
        name = f"client #{next(self.ids)} ({address}{', ' + grant.subject if grant.subject else ''})"
        self.session = Session(SocketConnection(self), queue_size=self.queue_size, name=name,
                               on_close=self.hub.leave)
        self.hub.join(self.session, None if grant.all_channels else sorted(grant.channels & KNOWN_CHANNELS),
                      since=since)
        log.info("%s connected (%d clients)", name, self.hub.clients)

    def token_expired(self) -> None:
        self.expiry = None
        log.info("%s: token expired, closing", self.session.name if self.session else self.request.remote_ip)
        if self.session is not None:
            self.session.close(CLOSE_TOKEN_EXPIRED, "token expired")
        else:
            self.close(CLOSE_TOKEN_EXPIRED, "token expired")

    def refused_channel(self, channels: list[str]) -> str | None:
        """The error message for the first channel of a subscribe the client may not have, if any."""
        grant = self.grant
        for channel in channels:
            if channel not in KNOWN_CHANNELS and channel != ALL:
                return subscribe_error("unknown channel", channel)
            if grant is None or not grant.allows(channel):
                return subscribe_error("channel not allowed", channel)
        return None

    def on_message(self, message: str | bytes) -> None:
        if self.session is None or self.session.closed:
            return
        if self.rate is not None and not self.rate.allow():
            log.warning("%s: over %g messages/s, closing", self.session.name, self.max_messages_per_second)
            self.session.close(CLOSE_TOO_MANY_MESSAGES, "too many messages")
            return
        try:
            channels = parse_client_message(message)
        except ProtocolError as exc:
            self.close(CLOSE_UNSUPPORTED, str(exc)[:120])
            return
        error = self.refused_channel(channels)
        if error is not None:
            self.write_message(error)
            return
        self.hub.join(self.session, channels)

    def on_close(self) -> None:
        metrics.count_close(self.close_code)
        if self.expiry is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(self.expiry)
            self.expiry = None
        if self.admitted:
            self.admitted = False
            self.limits.release(self.request.remote_ip)
        if self.session is None:
            return
        self.session.close(self.close_code or 1000)
        self.hub.leave(self.session)
        log.info("%s disconnected (code %s, %d clients)", self.session.name, self.close_code, self.hub.clients)


class IndexHandler(Guarded, tornado.web.RequestHandler):
    """The dashboard page; its figures arrive over /ws."""

    def initialize(self, *, timezone: str, access: Access) -> None:
        self.timezone = timezone
        self.access = access

    def prepare(self) -> None:
        self.refused_host()

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Content-Security-Policy",
                        "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
        self.set_header("X-Content-Type-Options", "nosniff")

    def get(self) -> None:
        self.render("index.html", timezone=self.timezone, server_time_ms=int(time.time() * 1000))


class AuthCheckHandler(Guarded, tornado.web.RequestHandler):
    """/auth/check: what the token in ``Authorization: Bearer`` allows (200), or why it opens nothing (401).

    A browser never sees why a WebSocket upgrade failed; the page asks here.
    """

    def initialize(self, *, access: Access) -> None:
        self.access = access

    def prepare(self) -> None:
        self.refused_host()

    def get(self) -> None:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        try:
            grant = self.access.tokens.verify(token.strip() if scheme.lower() == "bearer" else None)
        except TokenError as exc:
            self.refuse(401, exc.reason, exc.detail)
            return
        self.set_header("Cache-Control", "no-store")
        self.finish({"sub": grant.subject, "channels": sorted(grant.channels), "expires_at": int(grant.expires_at)})


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
