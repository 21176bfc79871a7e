"""The gateway's application: the route table, what every request shares, and its own health endpoint.

``GET /_gateway/healthz`` reports the routes (names and prefixes) and the publisher's
queue depth and bytes, published / dropped counts and Kafka state; it is the gateway's own path so
that ``/healthz`` stays the upstreams'. ``GET /_gateway/metrics`` serves the same counts to
Prometheus (metrics.py). Every other path goes to `ProxyHandler`, except the upstreams'
own ``/metrics`` (`NOT_ROUTED`), which no route reaches.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import tornado.web
from prometheus_client import CollectorRegistry

from rtdash.metrics import metrics_route
from rtdash.settings import Settings

from .events import EventBuilder, Exchange
from .metrics import PublisherCollector
from .proxy import BODY_CAPTURE_BYTES, DEFAULT_MAX_BODY_BYTES, ProxyHandler
from .publisher import Publisher
from .upstream import Upstream, UpstreamPool

log = logging.getLogger("rtdash.gateway")

HEALTH_PATH = "/_gateway/healthz"
METRICS_PATH = "/_gateway/metrics"
# The upstreams' own Prometheus endpoints: scraped on each service's port from inside, never routed from outside
# (they would tell anyone the shop's request counts).
NOT_ROUTED = ("/metrics",)


@dataclass(frozen=True)
class Route:
    name: str
    prefix: str
    upstream: Upstream


@dataclass
class Gateway:
    """What every proxied request needs; built once by `make_app`."""

    routes: list[Route]
    pool: UpstreamPool
    builder: EventBuilder
    publisher: Publisher
    timeout: float
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    capture_bytes: int = BODY_CAPTURE_BYTES
    started: float = field(default_factory=time.time)

    def match(self, path: str) -> Route | None:
        if any(path == prefix or path.startswith(prefix + "/") for prefix in NOT_ROUTED):
            return None
        for route in self.routes:          # longest prefix first
            if path.startswith(route.prefix):
                return route
        return None

    def publish(self, exchange: Exchange) -> None:
        try:
            self.publisher.publish(self.builder.build(exchange))
        except Exception:  # noqa: BLE001 - analytics never breaks traffic
            log.exception("could not build the event of %s %s", exchange.method, exchange.path)


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, *, gateway: Gateway) -> None:
        self.gw = gateway

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.finish({"status": "ok", "service": "gateway",
                     "uptime_s": round(time.time() - self.gw.started, 1),
                     # Names and prefixes only: like the error replies, nothing here tells a client
                     # where the upstreams are (the gateway logs them when it starts).
                     "routes": [{"name": r.name, "prefix": r.prefix} for r in self.gw.routes],
                     "publisher": self.gw.publisher.health()})


def make_routes(table: list[tuple[str, str, str]]) -> list[Route]:
    routes = [Route(name, prefix, Upstream(url)) for name, prefix, url in table]
    return sorted(routes, key=lambda r: len(r.prefix), reverse=True)


def make_app(settings: Settings, *, publisher: Publisher, builder: EventBuilder | None = None,
             pool: UpstreamPool | None = None, routes: list[tuple[str, str, str]] | None = None,
             max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> tornado.web.Application:
    """The gateway application; `routes` defaults to settings.routes, `builder` to one from settings."""
    gateway = Gateway(routes=make_routes(routes if routes is not None else settings.routes),
                      pool=pool or UpstreamPool(max_body_size=max_body_bytes),
                      builder=builder or EventBuilder.from_settings(settings), publisher=publisher,
                      timeout=settings.gateway_upstream_timeout_seconds, max_body_bytes=max_body_bytes)
    app = tornado.web.Application([
        (HEALTH_PATH, HealthHandler, {"gateway": gateway}),
        metrics_route(CollectorRegistry(), METRICS_PATH, collectors=[PublisherCollector(publisher)]),
        (r".*", ProxyHandler, {"gateway": gateway}),
    ], compress_response=False)
    app.gateway = gateway
    return app
