"""rtdash/metrics.py and the services that use nothing more of it: /metrics counts requests by route and status.

Each test drives real requests through a service's own `make_app` and reads
its /metrics with prometheus_client's parser; the SMS gateway and the payment
provider have nothing to count but their requests.
"""
from __future__ import annotations

import json

import tornado.web
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from tornado.testing import AsyncHTTPTestCase

from producers.provider.app import make_app as provider_app
from producers.provider.notify_sender import NotifySender
from producers.sms_gateway.app import MessageLog, make_app as sms_app
from rtdash.metrics import metrics_route, request_logger
from rtdash.settings import Settings

from scraping import samples, value

MESSAGE = {"to": "+8613800000000", "text": "payment received for order A1", "idempotency_key": "A1"}


class Hello(tornado.web.RequestHandler):
    def get(self, name: str) -> None:
        if name == "nobody":
            raise tornado.web.HTTPError(404)
        self.finish(f"hello {name}")


class Backlog:
    """A collector read at each scrape (as services serve counts kept elsewhere)."""

    def __init__(self) -> None:
        self.size = 0

    def collect(self):
        yield GaugeMetricFamily("test_backlog_items", "Items waiting.", value=self.size)


class HelperTest(AsyncHTTPTestCase):
    def get_app(self):
        self.registry = CollectorRegistry()
        self.orders = Counter("test_orders", "Orders.", registry=self.registry)
        self.backlog = Backlog()
        return tornado.web.Application([(r"/hello/([a-z]+)", Hello), metrics_route(self.registry,
                                                                                  collectors=[self.backlog])],
                                       log_function=request_logger(self.registry))

    def scrape(self):
        resp = self.fetch("/metrics")
        assert resp.code == 200 and resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
        return samples(resp.body)

    def test_requests_are_counted_by_route_pattern_and_status_and_the_registry_is_served(self):
        for name in ("ann", "bob", "nobody"):
            self.fetch(f"/hello/{name}")
        self.fetch("/nowhere")
        self.orders.inc(3)
        self.backlog.size = 7
        found = self.scrape()
        assert value(found, "rtdash_http_requests_total", route="/hello/([a-z]+)", status="200") == 2
        assert value(found, "rtdash_http_requests_total", route="/hello/([a-z]+)", status="404") == 1
        assert value(found, "rtdash_http_requests_total", route="other", status="404") == 1
        assert value(found, "rtdash_http_request_duration_seconds_count", route="/hello/([a-z]+)") == 3
        assert value(found, "test_orders_total") == 3
        assert value(found, "test_backlog_items") == 7
        # the scrape itself is counted once it is answered
        assert value(self.scrape(), "rtdash_http_requests_total", route="/metrics", status="200") == 1


class SmsGatewayMetricsTest(AsyncHTTPTestCase):
    def get_app(self):
        self.messages = MessageLog(None)
        return sms_app(Settings(_env_file=None), messages=self.messages)

    def tearDown(self):
        self.messages.close()
        super().tearDown()

    def test_messages_recorded_duplicated_and_refused_are_counted_by_status(self):
        for body in (MESSAGE, MESSAGE, {**MESSAGE, "idempotency_key": "A2"}, {"to": "x"}):
            self.fetch("/messages", method="POST", body=json.dumps(body))
        self.fetch("/healthz")
        found = samples(self.fetch("/metrics").body)
        assert {(dict(k)["route"], dict(k)["status"]): v for (n, k), v in found.items()
                if n == "rtdash_http_requests_total"} == {("/messages", "201"): 2, ("/messages", "200"): 1,
                                                          ("/messages", "400"): 1, ("/healthz", "200"): 1}


class ProviderMetricsTest(AsyncHTTPTestCase):
    def get_app(self):
        settings = Settings(_env_file=None, timezone="UTC")
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sender = NotifySender(settings, key, delay_s=0.01, max_attempts=1, backoff_s=0.01)
        return provider_app(settings, sender=self.sender)

    def tearDown(self):
        self.io_loop.run_sync(self.sender.close)
        super().tearDown()

    def test_pay_requests_are_counted_by_status(self):
        for body in ("{not json", json.dumps({"out_trade_no": "O1"})):
            assert self.fetch("/pay", method="POST", body=body).code == 400
        self.fetch("/healthz")
        found = samples(self.fetch("/metrics").body)
        assert value(found, "rtdash_http_requests_total", route="/pay", status="400") == 2
        assert value(found, "rtdash_http_requests_total", route="/healthz", status="200") == 1
