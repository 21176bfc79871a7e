"""The push server's Tornado application, built from its dependencies."""
from __future__ import annotations

import itertools
from pathlib import Path

import tornado.web

from rtdash.metrics import metrics_route
from rtdash.settings import Settings

from . import metrics
from .access import Access, log_request
from .broker import Broker
from .handlers import AuthCheckHandler, DashboardSocketHandler, HealthHandler, IndexHandler
from .hub import Hub
from .limits import ConnectionLimits
from .protocol import MAX_CLIENT_MESSAGE_BYTES
from .tokens import Tokens

STATIC = Path(__file__).resolve().parent / "static"
# The chart library, installed from npm by `make setup` (or the image's npm stage) and copied here; not in git.
VENDOR_FILES = ("vendor/uPlot.iife.min.js", "vendor/uPlot.min.css")


class MissingAssets(RuntimeError):
    """The dashboard's vendored files are not installed."""


def check_assets(static: Path = STATIC) -> None:
    """Refuse to serve a dashboard that cannot draw its charts, saying how to install what is missing."""
    missing = [name for name in VENDOR_FILES if not (static / name).is_file()]
    if missing:
        raise MissingAssets(f"the dashboard's chart library is missing ({', '.join(missing)} under {static}): "
                            "run `make setup` (npm ci, then copied into push_server/static/vendor/) "
                            "before starting or packaging the push server")


def make_app(settings: Settings, hub: Hub, broker: Broker, *, queue_size: int = 256,
             max_message_size: int = MAX_CLIENT_MESSAGE_BYTES, ping_interval: float = 20,
             tokens: Tokens | None = None) -> tornado.web.Application:
    """The routes: / (dashboard), /static/ (its assets), /ws (envelopes), /auth/check, /healthz, /metrics.

    `queue_size` bounds each client's queue (a client that falls further behind
    is disconnected); `max_message_size` bounds what a client may send (larger:
    close 1009). Raises MissingAssets when the chart library is not installed.
    `tokens` checks the tokens of /ws (default: with the secret of the settings,
    generated under <home>/keys when none is set).
    """
    check_assets()
    metrics.CONNECTIONS.set_function(lambda: hub.clients)   # the hub of the app made last (one per process)
    access = Access.from_settings(settings, tokens)
    limits = ConnectionLimits(total=settings.push_max_connections,
                              per_address=settings.push_max_connections_per_address)
    return tornado.web.Application(
        [
            (r"/", IndexHandler, dict(timezone=settings.timezone, access=access)),
            (r"/ws", DashboardSocketHandler, dict(hub=hub, access=access, limits=limits,
                                                  max_messages_per_second=settings.push_max_messages_per_second,
                                                  queue_size=queue_size, ids=itertools.count(1))),
            (r"/auth/check", AuthCheckHandler, dict(access=access)),
            (r"/healthz", HealthHandler, dict(hub=hub, broker=broker)),
            metrics_route(metrics.REGISTRY),
        ],
        log_function=log_request,
        template_path=str(STATIC),
        static_path=str(STATIC),
        websocket_max_message_size=max_message_size,
        websocket_ping_interval=ping_interval,
        websocket_ping_timeout=ping_interval,
    )
