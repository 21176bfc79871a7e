"""Prometheus metrics, the one way every rtdash service exposes them: /metrics, request counts, multiprocess mode.

A service defines its metric objects (``rtdash_`` names, units in the names,
labels with small fixed sets of values) on a `CollectorRegistry` of its own,
and serves that registry at ``/metrics`` with `MetricsHandler` (the text
format, prometheus_client's content type). A Tornado application that also
passes ``log_function=request_logger(registry)`` in its settings counts every
request by route and status (``rtdash_http_requests_total``) and times it
(``rtdash_http_request_duration_seconds``), and still writes tornado's access
log line.

A service of several processes (the order service: an HTTP process and a
store process) calls `prepare_multiprocess` in its main process before it
creates any metric it will update and before it starts the others: each
process then writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
(inherited by the processes it starts), and `MetricsHandler` serves all of
them merged by `MultiProcessCollector`: counters summed, gauges as each
metric's ``multiprocess_mode`` says.
"""
from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"

access_log = logging.getLogger("tornado.access")


def multiprocess_dir(home: Path, service: str) -> Path:
    """Where the processes of `service` write their metric values: ``<home>/run/metrics/<service>``."""
    return Path(home) / "run" / "metrics" / service


def prepare_multiprocess(directory: Path) -> Path:
    """Put this process (and those it starts afterwards) in multiprocess mode, writing to `directory`.

    The directory is emptied first: values of an earlier run would otherwise be
    added to this one's. Metric values made before this call stay in this
    process's memory and are not served, so call it before creating any.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.get_value_class()   # chosen when prometheus_client was imported: choose again
    return directory


def exposed_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """What /metrics serves: `registry` itself, or in multiprocess mode every process's values merged."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return registry
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=directory)
    return merged


def exposition(registry: CollectorRegistry, collectors: Iterable[Collector] = ()) -> bytes:
    """The text format of `registry` (merged across processes where set up), then of `collectors`.

    `collectors` read values another way at each scrape (shared memory, a
    database count) and are served as they are, from this process only.
    """
    text = generate_latest(exposed_registry(registry))
    extra = list(collectors)
    if extra:
        others = CollectorRegistry(auto_describe=False)
        for collector in extra:
            others.register(collector)
        text += generate_latest(others)
    return text


class MetricsHandler(tornado.web.RequestHandler):
    """``GET /metrics``: the service's metrics in Prometheus' text format.

    `refresh`, if given, is awaited first (to set gauges read from elsewhere,
    off the event loop); `collectors` are served after the registry.
    """

    def initialize(self, *, registry: CollectorRegistry, refresh: Callable[[], Awaitable[None]] | None = None,
                   collectors: Iterable[Collector] = ()) -> None:
        self.registry = registry
        self.refresh = refresh
        self.collectors = collectors

    async def get(self) -> None:
        if self.refresh is not None:
            await self.refresh()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(exposition(self.registry, self.collectors))


def metrics_route(registry: CollectorRegistry, path: str = METRICS_PATH, **options) -> tuple:
    """The route table entry of `MetricsHandler` for `registry` (options: refresh, collectors)."""
    return (path, MetricsHandler, dict(registry=registry, **options))


_http_metrics: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Counter, Histogram]] = weakref.WeakKeyDictionary()


def http_metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """The request counter and duration histogram of `registry` (made once per registry)."""
    found = _http_metrics.get(registry)
    if found is None:
        requests = Counter("rtdash_http_requests", "HTTP requests answered, by route and status.",
                           ["route", "status"], registry=registry)
        duration = Histogram("rtdash_http_request_duration_seconds", "Time to answer an HTTP request, by route.",
                             ["route"], registry=registry)
        found = _http_metrics[registry] = (requests, duration)
    return found


def route_of(handler: tornado.web.RequestHandler) -> str:
    """The route pattern that matched (``/products/([^/]+)``), not the path: a small fixed set of labels."""
    cls = type(handler)
    for rule in handler.application.wildcard_router.rules:
        if rule.target is cls:
            regex = getattr(rule.matcher, "regex", None)
            return regex.pattern.removesuffix("$") if regex is not None else cls.__name__
    return "other"  # the default handler (404 for unknown paths)


def request_logger(registry: CollectorRegistry) -> Callable[[tornado.web.RequestHandler], None]:
    """A Tornado ``log_function``: count and time each request in `registry`, then log it as tornado does."""
    requests, duration = http_metrics(registry)
    routes: dict[type, str] = {}

    def log_request(handler: tornado.web.RequestHandler) -> None:
        route = routes.get(type(handler))
        if route is None:
            route = routes[type(handler)] = route_of(handler)
        status = handler.get_status()
        elapsed = handler.request.request_time()
        requests.labels(route=route, status=str(status)).inc()
        duration.labels(route=route).observe(elapsed)
        log = access_log.info if status < 400 else access_log.warning if status < 500 else access_log.error
        log("%d %s %.2fms", status, handler._request_summary(), 1000.0 * elapsed)

    return log_request
