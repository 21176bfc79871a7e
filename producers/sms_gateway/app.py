"""The SMS gateway simulator's HTTP surface: it records each message once per idempotency key.

``POST /messages`` with JSON ``{"to", "text", "idempotency_key"}`` records one
message and answers 201 ``{"status": "recorded", "message": {...}}``. The same
``idempotency_key`` again records nothing and answers 200 ``{"status":
"duplicate", "message": <the one recorded first>}``: a client that does not
know whether its first request arrived (it timed out, or it crashed before it
noted the reply) repeats it, and the recipient still gets one message. A body
that is not such an object gets 400 with the reason. ``GET /messages`` lists
what was recorded, oldest first, so tests and people can check that every
paid order got exactly one message.

The messages are kept in memory, the newest `MAX_MESSAGES` of them (a key
older than that would be recorded again). Each one is also appended to a JSON
lines journal, which a restarted gateway reads back, so it still knows the
keys it recorded before; a line is a small write to the page cache, done on
the event loop.
"""
from __future__ import annotations

import json
import logging
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tornado.web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtdash.contracts import describe, format_ts
from rtdash.metrics import metrics_route, request_logger
from rtdash.settings import Settings
from rtdash.web import JsonHandler

log = logging.getLogger("rtdash.sms_gateway")

MAX_MESSAGES = 100_000


class MessageRequest(BaseModel):
    """The body of ``POST /messages``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: str = Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="recipient, E.164 (+ and 7-15 digits)")
    text: str = Field(min_length=1, max_length=1000)
    idempotency_key: str = Field(min_length=1, max_length=128, pattern=r"^\S+$")


class MessageLog:
    """The recorded messages by idempotency key, oldest first: bounded, and journaled when given a path."""

    def __init__(self, journal: Path | None = None, *, max_messages: int = MAX_MESSAGES):
        self.max_messages = max_messages
        self.messages: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.duplicates = 0
        self._last_id = 0
        self._journal = None
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            if journal.exists():
                self._load(journal)
            self._journal = journal.open("a", encoding="utf-8")
            if self._journal.tell() and not journal.read_bytes().endswith(b"\n"):
                self._journal.write("\n")   # end a torn last line, so the next message is a line of its own

    def record(self, request: MessageRequest) -> tuple[dict[str, Any], bool]:
        """(the message recorded for this key, whether it was recorded now)."""
        known = self.messages.get(request.idempotency_key)
        if known is not None:
            self.duplicates += 1
            return known, False
        self._last_id += 1
        message = {"id": self._last_id, **request.model_dump(),
                   "received_at": format_ts(datetime.now(timezone.utc))}
        self._remember(message)
        if self._journal is not None:
            self._journal.write(json.dumps(message, ensure_ascii=False) + "\n")
            self._journal.flush()
        return message, True

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _remember(self, message: dict[str, Any]) -> None:
        self.messages[message["idempotency_key"]] = message
        if len(self.messages) > self.max_messages:
            self.messages.popitem(last=False)

    def _load(self, journal: Path) -> None:
        torn = 0
        with journal.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    message = json.loads(line)
                    self._remember(message)
                    self._last_id = max(self._last_id, message["id"])
                except (ValueError, KeyError, TypeError):
                    torn += 1   # the gateway was killed in the middle of a line
        log.info("read %d messages from %s%s", len(self.messages), journal,
                 f" ({torn} unreadable lines skipped)" if torn else "")


class GatewayHandler(JsonHandler):
    def initialize(self, *, messages: MessageLog) -> None:
        self.messages = messages


class MessagesHandler(GatewayHandler):
    def post(self) -> None:
        try:
            request = MessageRequest.model_validate_json(self.request.body)
        except ValidationError as exc:
            raise tornado.web.HTTPError(400, describe(exc, whole="body")) from None
        message, new = self.messages.record(request)
        if new:
            log.info("message %d to %s recorded (key %s)", message["id"], message["to"], message["idempotency_key"])
        else:
            log.info("key %s seen again: message %d not recorded twice", request.idempotency_key, message["id"])
        self.set_status(201 if new else 200)
        self.finish({"status": "recorded" if new else "duplicate", "message": message})

    def get(self) -> None:
        self.finish({"count": len(self.messages.messages), "messages": list(self.messages.messages.values())})


class HealthHandler(GatewayHandler):
    def get(self) -> None:
        self.finish({"status": "ok", "service": "sms_gateway", "messages": len(self.messages.messages),
                     "duplicates": self.messages.duplicates})


def make_app(settings: Settings, *, messages: MessageLog) -> tornado.web.Application:
    deps = dict(messages=messages)
    registry = CollectorRegistry()   # requests by route and status (rtdash.metrics) at /metrics
    return tornado.web.Application([
        (r"/messages", MessagesHandler, deps),
        (r"/healthz", HealthHandler, deps),
        metrics_route(registry),
    ], log_function=request_logger(registry))
