"""The order service's internal API: the shop places each order here before it asks the provider to pay.

    POST /internal/orders  {"order_id": "S2026...", "amount_cents": 12345}
        201 {"order_id", "amount_cents"}   a new pending order
        200 {"order_id", "amount_cents"}   the same order with the same amount again (idempotent)
        409 {"error"}                      the same order id with another amount; nothing changes
        400 {"error"}                      not a JSON object of those two fields, naming each problem
    GET /internal/orders/<order_id>
        200 {"order_id", "amount_cents", "status": "pending" | "paid", "trade_no", "paid_at"}
        404 {"error"}                      never placed

A payment notify pays only an order placed here, and only for its amount
(store.py). The API is served on a listener of its own
(RTDASH_ORDER_SERVICE_INTERNAL_HOST:RTDASH_ORDER_SERVICE_INTERNAL_PORT,
127.0.0.1:8005 by default), never on the public port that the gateway routes
``/order_center/`` to: whoever can reach the notify path, the payment
provider from the internet included, cannot reach this one, whatever the
gateway's route table says. Placed orders go to the store process with the
notifies (writer.py), so they are stored by its one writer, in its group
commits; the status is read here, on the database executor.
"""
from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import Executor
from datetime import timedelta

import tornado.web
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from rtdash.contracts import describe
from rtdash.payments import MAX_AMOUNT_CENTS
from rtdash.web import ApiError, JsonHandler

from .handoff import PlaceOrder
from .store import EPOCH, OrderStore
from .writer import GroupWriter

log = logging.getLogger("rtdash.order_service")

PLACE_ORDER_PATH = "/internal/orders"
# A placed order's body is two short fields; anything far larger is not one.
MAX_BODY_BYTES = 4096
_ORDER_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")   # as a notify's out_trade_no


class OrderToPlace(BaseModel):
    """``POST /internal/orders``: the shop's order id (as the notify's out_trade_no will say it) and its amount."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    order_id: str
    amount_cents: StrictInt = Field(gt=0, le=MAX_AMOUNT_CENTS)

    @field_validator("order_id")
    @classmethod
    def _order_id(cls, value: str) -> str:
        if not _ORDER_ID.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '_' or '-'")
        return value


class InternalHandler(JsonHandler):
    """JSON replies; errors as ``{"error": ...}``."""

    def initialize(self, *, writer: GroupWriter, store: OrderStore, db: Executor) -> None:
        self.writer = writer
        self.store = store
        self.db = db


class PlacedOrdersHandler(InternalHandler):
    async def post(self) -> None:
        try:
            order = OrderToPlace.model_validate_json(self.request.body or b"")
        except ValidationError as exc:
            raise ApiError(400, describe(exc, whole="body")) from None
        try:
            reply = await self.writer.submit(PlaceOrder(order.order_id, order.amount_cents))
        except Exception as exc:  # noqa: BLE001 - the shop is told to try again; the reason is in the log
            log.error("order %s not placed: %s", order.order_id, exc)
            raise ApiError(503, "the order store is unavailable, try again") from exc
        if reply.status >= 300:
            raise ApiError(reply.status, f"order {order.order_id}: {reply.text}")
        self.set_status(reply.status)
        self.finish({"order_id": order.order_id, "amount_cents": order.amount_cents})


class PlacedOrderHandler(InternalHandler):
    async def get(self, order_id: str) -> None:
        found = None
        if _ORDER_ID.fullmatch(order_id):
            found = await asyncio.get_running_loop().run_in_executor(self.db, self.store.order, order_id)
        if found is None:
            raise ApiError(404, "unknown order")
        paid_at = None if found.paid_at_ms is None else (EPOCH + timedelta(milliseconds=found.paid_at_ms)).isoformat()
        self.finish({"order_id": found.order_id, "amount_cents": found.amount_cents, "status": found.status,
                     "trade_no": found.trade_no, "paid_at": paid_at})


class NotFoundHandler(InternalHandler):
    def prepare(self) -> None:
        raise ApiError(404, "no such endpoint")


def make_internal_app(*, writer: GroupWriter, store: OrderStore, db: Executor) -> tornado.web.Application:
    """The internal API's routes: placed orders go through `writer`; status reads through `store` on `db`."""
    deps = dict(writer=writer, store=store, db=db)
    return tornado.web.Application([
        (PLACE_ORDER_PATH, PlacedOrdersHandler, deps),
        (PLACE_ORDER_PATH + r"/([^/]+)", PlacedOrderHandler, deps),
    ], default_handler_class=NotFoundHandler, default_handler_args=deps)
