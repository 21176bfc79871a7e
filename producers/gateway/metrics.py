"""The gateway's Prometheus metrics: its events to Kafka, read from the publisher's own counts.

The publisher counts on the event loop and its poll thread, once
(`Publisher.health`, also on /_gateway/healthz); this collector serves those
counts at each scrape, so there is one count of each.
"""
from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .publisher import Publisher


class PublisherCollector(Collector):
    """Events published, dropped and failed; events and bytes queued; whether Kafka is reachable."""

    def __init__(self, publisher: Publisher):
        self.publisher = publisher

    def collect(self) -> Iterator:
        health = self.publisher.health()
        yield CounterMetricFamily("rtdash_gateway_events_published", "Gateway events Kafka acknowledged.",
                                  value=health["published"])
        yield CounterMetricFamily("rtdash_gateway_events_dropped", "Gateway events dropped: the producer's queue "
                                  "was full (Kafka down or slow) or Kafka refused the event.", value=health["dropped"])
        yield CounterMetricFamily("rtdash_gateway_events_failed", "Gateway events Kafka did not take within the "
                                  "delivery timeout.", value=health["failed"])
        yield GaugeMetricFamily("rtdash_gateway_events_queued", "Gateway events waiting in the producer's queue.",
                                value=health["queue_depth"])
        if "queue_bytes" in health:
            yield GaugeMetricFamily("rtdash_gateway_events_queued_bytes", "Bytes of the gateway events waiting in "
                                    "the producer's queue.", value=health["queue_bytes"])
        yield GaugeMetricFamily("rtdash_gateway_kafka_connected", "1 while Kafka takes the gateway's events, else 0.",
                                value=int(bool(health["kafka_connected"])))
