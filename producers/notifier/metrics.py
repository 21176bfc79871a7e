"""The notifier's Prometheus metrics: confirmations by result, read from the consumer's own counts.

The consumer thread counts in `NotifierStatus` (also on /healthz); this
collector serves those counts at each scrape, so there is one count of each.
"""
from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .consumer import NotifierStatus


class NotifierCollector(Collector):
    """``rtdash_notifier_sends_total{result}``, bad records, and whether the consumer runs."""

    def __init__(self, status: NotifierStatus):
        self.status = status

    def collect(self) -> Iterator:
        sends = CounterMetricFamily("rtdash_notifier_sends", "Confirmations sent to the SMS gateway, by result "
                                    "(sent; duplicate: the gateway had it already; rejected: refused, skipped).",
                                    labels=["result"])
        status = self.status
        for result, count in (("sent", status.sent), ("duplicate", status.duplicates), ("rejected", status.rejected)):
            sends.add_metric([result], count)
        yield sends
        yield CounterMetricFamily("rtdash_notifier_bad_records", "Records of the orders topic that are not an "
                                  "OrderPaid (skipped).", value=status.bad_records)
        yield GaugeMetricFamily("rtdash_notifier_consuming", "1 while the consumer reads and sends, else 0 "
                                "(waiting for Kafka or the gateway, stopped).", value=int(status.state == "consuming"))
