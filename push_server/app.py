"""The push server's Tornado application, built from its dependencies."""
from __future__ import annotations

from pathlib import Path

import tornado.web

from rtdash.settings import Settings

from .broker import Broker
from .handlers import DashboardHandler, DashboardSocket, HealthHandler
from .hub import Hub
from .protocol import MAX_CLIENT_MESSAGE_BYTES

STATIC = Path(__file__).resolve().parent / "static"


def make_app(settings: Settings, *, hub: Hub, broker: Broker, queue_size: int = 256) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/ws", DashboardSocket, dict(hub=hub, origins=settings.origins, queue_size=queue_size)),
            (r"/healthz", HealthHandler, dict(hub=hub, broker=broker)),
            (r"/(.*)", DashboardHandler, dict(path=str(STATIC), default_filename="index.html")),
        ],
        websocket_max_message_size=MAX_CLIENT_MESSAGE_BYTES,
        websocket_ping_interval=20,
        websocket_ping_timeout=20,
    )
