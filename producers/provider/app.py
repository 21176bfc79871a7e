"""The payment provider simulator's HTTP surface: ``POST /pay``, ``/healthz`` and ``/metrics``.

``POST /pay`` with JSON ``{"out_trade_no", "amount_cents", "notify_url"?}``
answers at once with ``{"trade_no": ...}``; the `NotifySender` (notify_sender.py)
then sends the signed notify to ``notify_url`` (default: the gateway's public
notify path) until it is answered ``success``. A repeated ``/pay`` for the
same order and amount returns the same trade_no and sends nothing new; the
same order with another amount is refused (409). A body that is not such an
object gets 400 with the reason, and nothing is paid.
"""
from __future__ import annotations

import logging
import re
from typing import Annotated

import tornado.web
from prometheus_client import CollectorRegistry
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, ValidationError
from pydantic_core import PydanticCustomError

from rtdash.contracts import describe
from rtdash.metrics import metrics_route, request_logger
from rtdash.payments import MAX_AMOUNT_CENTS, default_notify_url, format_amount
from rtdash.settings import Settings
from rtdash.web import JsonHandler

from .notify_sender import AmountConflict, NotifySender

log = logging.getLogger("rtdash.provider")

_ORDER_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def _order_id(value: str) -> str:
    if not _ORDER_ID.match(value):
        raise PydanticCustomError("order_id", "must be 1-64 letters, digits, '_' or '-'")
    return value


def _http_url(value: str | None) -> str | None:
    if not value:
        return None  # the default
    if not value.startswith(("http://", "https://")):
        raise PydanticCustomError("http_url", "must be an http(s) URL")
    return value


class PayRequest(BaseModel):
    """The body of ``POST /pay``; fields it does not name are ignored."""

    model_config = ConfigDict(strict=True, frozen=True)

    out_trade_no: Annotated[str, AfterValidator(_order_id)]
    amount_cents: StrictInt = Field(gt=0, le=MAX_AMOUNT_CENTS)
    notify_url: Annotated[str | None, AfterValidator(_http_url)] = None


class ProviderHandler(JsonHandler):
    def initialize(self, *, settings: Settings, sender: NotifySender) -> None:
        self.cfg = settings
        self.sender = sender


class PayHandler(ProviderHandler):
    def post(self) -> None:
        try:
            pay = PayRequest.model_validate_json(self.request.body)
        except ValidationError as exc:
            raise tornado.web.HTTPError(400, describe(exc, whole="body")) from None
        try:
            trade_no, new = self.sender.pay(pay.out_trade_no, pay.amount_cents,
                                              pay.notify_url or default_notify_url(self.cfg))
        except AmountConflict as exc:
            raise tornado.web.HTTPError(409, str(exc)) from None
        log.info("payment %s for order %s: %s yuan%s", trade_no, pay.out_trade_no, format_amount(pay.amount_cents),
                 "" if new else " (repeated request, same payment)")
        self.finish({"trade_no": trade_no, "out_trade_no": pay.out_trade_no, "amount_cents": pay.amount_cents})


class HealthHandler(ProviderHandler):
    def get(self) -> None:
        stats = self.sender.stats
        self.finish({"status": "ok", "service": "payment_provider", "in_flight": self.sender.in_flight,
                     "accepted": stats.accepted, "delivered": stats.delivered, "given_up": stats.given_up,
                     "attempts": stats.attempts})


def make_app(settings: Settings, *, sender: NotifySender) -> tornado.web.Application:
    deps = dict(settings=settings, sender=sender)
    registry = CollectorRegistry()   # requests by route and status (rtdash.metrics)
    return tornado.web.Application([
        (r"/pay", PayHandler, deps),
        (r"/healthz", HealthHandler, deps),
        metrics_route(registry),
    ], log_function=request_logger(registry))
