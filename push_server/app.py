"""The push server's Tornado application, built from its dependencies."""
from __future__ import annotations

import itertools
from pathlib import Path

import tornado.web

from rtdash.settings import Settings

from .broker import Broker
from .handlers import DashboardSocketHandler, HealthHandler, IndexHandler
from .hub import Hub
from .protocol import MAX_CLIENT_MESSAGE_BYTES

STATIC = Path(__file__).resolve().parent / "static"


def make_app(settings: Settings, hub: Hub, broker: Broker, *, queue_size: int = 256,
             max_message_size: int = MAX_CLIENT_MESSAGE_BYTES, ping_interval: float = 20) -> tornado.web.Application:
    """The routes: / (dashboard), /static/ (its assets), /ws (envelopes), /healthz.

    `queue_size` bounds each client's queue (a client that falls further behind
    is disconnected); `max_message_size` bounds what a client may send (larger:
    close 1009).
    """
    return tornado.web.Application(
        [
            (r"/", IndexHandler, dict(timezone=settings.timezone)),
            (r"/ws", DashboardSocketHandler, dict(hub=hub, origins=settings.origins, queue_size=queue_size,
                                                  ids=itertools.count(1))),
            (r"/healthz", HealthHandler, dict(hub=hub, broker=broker)),
        ],
        template_path=str(STATIC),
        static_path=str(STATIC),
        websocket_max_message_size=max_message_size,
        websocket_ping_interval=ping_interval,
        websocket_ping_timeout=ping_interval,
    )
