"""The gateway's /_gateway/metrics: events published, dropped and queued, the same counts as its health."""
from __future__ import annotations

import json

from prometheus_client import CONTENT_TYPE_LATEST

from producers.gateway.publisher import MemoryPublisher
from waiting import eventually

from scraping import samples, value


def test_events_published_and_dropped_are_counted_as_the_health_counts_them(make_gateway, support):
    gateway = make_gateway(publisher=MemoryPublisher(queue_size=2))
    for n in range(3):
        assert gateway.request("GET", f"/echo/{n}")[0].status == 200
    eventually(lambda: gateway.publisher.dropped == 1, what="the third event dropped")
    resp, body = gateway.request("GET", "/_gateway/metrics")
    assert resp.status == 200 and resp.getheader("Content-Type") == CONTENT_TYPE_LATEST
    found = samples(body)
    assert value(found, "rtdash_gateway_events_published_total") == 2
    assert value(found, "rtdash_gateway_events_dropped_total") == 1
    assert value(found, "rtdash_gateway_events_queued") == 2
    assert value(found, "rtdash_gateway_kafka_connected") == 0
    health = json.loads(gateway.request("GET", "/_gateway/healthz")[1])["publisher"]
    assert (health["published"], health["dropped"]) == (2, 1)


def test_the_upstreams_own_metrics_are_not_routed(make_gateway):
    """The shop's /metrics is scraped on its own port from inside; through the gateway it is no route."""
    gateway = make_gateway()
    for path in ("/metrics", "/metrics/", "/metrics?name[]=x"):
        resp, body = gateway.request("GET", path)
        assert resp.status == 404 and json.loads(body)["error"].startswith("no gateway route for /metrics"), body
    assert gateway.request("GET", "/metricsfoo")[1] != gateway.request("GET", "/metrics")[1]
