"""The notifier's health endpoint: ``GET /healthz`` with the consumer's state and counters."""
from __future__ import annotations

import dataclasses

import tornado.web

from rtdash.settings import Settings

from .consumer import ConfirmationSender


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
    return tornado.web.Application([(r"/healthz", HealthHandler, dict(sender=sender, group=group))])
