"""The notifier's endpoints: ``GET /healthz``, the consumer's state and counts; ``GET /metrics``, the same counts."""
from __future__ import annotations

import dataclasses

import tornado.web
from prometheus_client import CollectorRegistry

from rtdash.metrics import metrics_route, request_logger
from rtdash.settings import Settings

from .consumer import ConfirmationSender
from .metrics import NotifierCollector


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, *, sender: ConfirmationSender, group: str) -> None:
        self.sender = sender
        self.group = group

    def get(self) -> None:
        """200 while the consumer thread runs (also while it waits for Kafka or the gateway), else 503."""
        self.set_status(200 if self.sender.running else 503)
        self.finish({"status": "ok" if self.sender.running else "down", "service": "notifier", "group": self.group,
                     "topic": self.sender.topic, **dataclasses.asdict(self.sender.status)})


def make_app(settings: Settings, *, sender: ConfirmationSender, group: str) -> tornado.web.Application:
    registry = CollectorRegistry()
    return tornado.web.Application([(r"/healthz", HealthHandler, dict(sender=sender, group=group)),
                                    metrics_route(registry, collectors=[NotifierCollector(sender.status)])],
                                   log_function=request_logger(registry))
