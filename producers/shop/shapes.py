"""The shop API's JSON: the request bodies it reads (pydantic models) and the replies it writes.

A body is a JSON object or a urlencoded/multipart form with the same fields
(a form's values are text, so a quantity may come as ``"3"``). Fields a model
does not name are ignored.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

from .store import MAX_QTY, CartLine, Order


def _digits_as_int(value: Any) -> Any:
    """A quantity written as digits (a form field, or a JSON string) is that number; anything else is checked as is."""
    return int(value) if isinstance(value, str) and value.isdigit() else value


class LoginRequest(BaseModel):
    """``POST /login``: a demo user and their password (``user`` may also be sent as ``username``)."""

    model_config = ConfigDict(strict=True, frozen=True)

    user: str = Field(min_length=1, max_length=64, validation_alias=AliasChoices("user", "username"))
    password: str = Field(min_length=1, max_length=256)


class CartItemRequest(BaseModel):
    """``POST /cart/items``: a product and how many of it to add (1 when not given)."""

    model_config = ConfigDict(strict=True, frozen=True)

    product_id: str = Field(min_length=1, max_length=16)
    qty: Annotated[StrictInt, BeforeValidator(_digits_as_int), Field(ge=1, le=MAX_QTY)] = 1


def product_json(row: dict) -> dict:
    """A product as the API shows it; search results leave the description out."""
    keys = ("id", "name", "category", "price_cents", "description")
    return {k: row[k] for k in keys if k in row}


def cart_json(lines: list[CartLine]) -> dict:
    return {"items": [{"product_id": line.product_id, "name": line.name, "price_cents": line.price_cents,
                       "qty": line.qty, "subtotal_cents": line.subtotal_cents} for line in lines],
            "count": sum(line.qty for line in lines),
            "total_cents": sum(line.subtotal_cents for line in lines)}


def order_json(order: Order) -> dict:
    return {"order_id": order.order_id, "status": order.status, "total_cents": order.total_cents,
            "payment_id": order.payment_id, "user_id": order.user_id,
            "created_at": _utc(order.created_at).isoformat(), **cart_json(order.lines)}


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; the store writes UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
