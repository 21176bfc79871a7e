"""The order service's Prometheus metrics, in both of its processes.

The service runs in multiprocess mode (``python -m producers.order_service``
calls `rtdash.metrics.prepare_multiprocess` before anything counts): the
store process counts each notify's result and each group's size where it
takes them in (intake.py), the HTTP process the notifies it refuses before
(app.py), and the HTTP process's /metrics serves both merged. The outbox
figures are read at each scrape where they already are: the relay's
published count in shared memory (`RelayStatus`, also on /healthz), the
backlog from the database.
"""
from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .handoff import RelayStatus

REGISTRY = CollectorRegistry(auto_describe=True)

# What became of a payment notify; every value is listed in NOTIFY_RESULTS.
NOTIFIES = Counter(
    "rtdash_order_notifies", "Payment notifies answered, by result.", ["result"], registry=REGISTRY)
NOTIFY_RESULTS = (
    "paid",                 # paid its order: the order and its event stored
    "duplicate",            # a paid notify for an order paid before
    "not_paid",             # a valid notify of a status that pays nothing
    "unknown_order",        # names an order never placed (404)
    "amount_differs",       # another amount than the order's (409)
    "refused_signature",    # no signature, or a wrong one
    "refused_fields",       # signed, but a field is missing or malformed, or the form is not one
    "refused_request",      # refused by the HTTP process: method, size or Content-Type
)
GROUP_SIZE = Histogram(
    "rtdash_order_group_size_items", "Items (notifies and placed orders) per group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=REGISTRY)

_SIGNATURE_REASONS = ("missing sign", "bad signature")


def refusal_result(reason: str) -> str:
    """The result a refused notify counts under, from the reason it is refused with."""
    return "refused_signature" if reason in _SIGNATURE_REASONS else "refused_fields"


class OutboxCollector(Collector):
    """The outbox relay's figures at each scrape: published (the relay's shared memory) and the backlog.

    `backlog` is set by the /metrics handler just before, from the database on
    its executor (a collector runs on the event loop and must not query).
    """

    def __init__(self, status: RelayStatus):
        self.status = status
        self.backlog = 0

    def collect(self) -> Iterator:
        yield CounterMetricFamily("rtdash_order_outbox_published", "Order events the relay published to Kafka.",
                                  value=self.status.published)
        yield GaugeMetricFamily("rtdash_order_outbox_backlog_events",
                                "Order events stored and not yet published to Kafka.", value=self.backlog)
        yield GaugeMetricFamily("rtdash_order_kafka_connected", "1 while the relay reaches Kafka, else 0.",
                                value=int(self.status.kafka_connected))
