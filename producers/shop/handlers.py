"""The shop's request handlers: each parses its request, calls the store on the database executor, replies.

Every reply is JSON; every error is a 4xx/5xx with ``{"error": "..."}``.
Sessions: ``POST /login`` sets the signed cookie ``shop_session`` (Tornado
signed cookie, HttpOnly, SameSite=Lax) holding the user id. Every response to
an authenticated request carries the header ``X-User-Id: <user id>``, so the
gateway can attribute the request without reading cookies. A tampered or
expired cookie is simply "not logged in". Visitors who are not logged in get
an anonymous cart in the signed cookie ``shop_cart``; it is merged into the
user's cart at login.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import secrets
from concurrent.futures import Executor
from typing import Any, Callable, TypeVar

from pydantic import BaseModel, ValidationError

from rtdash.contracts import describe
from rtdash.web import ApiError, JsonHandler
from rtdash.payments import format_amount

from .orders import OrderServiceClient, OrderServiceError
from .payment import PaymentClient, PaymentError
from .shapes import CartItemRequest, LoginRequest, cart_json, order_json, product_json
from .store import CATEGORIES, ShopError, ShopStore

log = logging.getLogger("rtdash.shop")

SESSION_COOKIE = "shop_session"
CART_COOKIE = "shop_cart"
SESSION_DAYS = 7
MAX_QUERY_CHARS = 100
_USER_ID = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{16,64}$")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class ShopHandler(JsonHandler):
    """JSON replies, the session, the cart key, and store calls on the executor."""

    user_id: str | None = None

    def initialize(self, *, store: ShopStore, db: Executor, payments: PaymentClient,
                   orders: OrderServiceClient) -> None:
        self.store = store
        self.db = db
        self.payments = payments
        self.orders = orders

    def prepare(self) -> None:
        value = self.get_signed_cookie(SESSION_COOKIE, max_age_days=SESSION_DAYS)
        user = value.decode(errors="replace") if value else None
        if user and _USER_ID.match(user):
            self.set_user(user)

    def set_user(self, user: str | None) -> None:
        self.user_id = user
        if user:
            self.set_header("X-User-Id", user)
        else:
            self.clear_header("X-User-Id")

    def clear(self) -> None:
        super().clear()
        if self.user_id:  # error replies clear the headers: keep the user visible to the gateway
            self.set_header("X-User-Id", self.user_id)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call on the database executor; ShopError becomes a 4xx."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.db, functools.partial(fn, *args, **kwargs))
        except ShopError as exc:
            raise ApiError(exc.status, str(exc)) from None

    def body(self, model: type[M]) -> M:
        """The request's fields as `model`, from a JSON object or a urlencoded/multipart form; else a 400."""
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if ctype == "application/json":
                return model.model_validate_json(self.request.body or b"{}")
            return model.model_validate({k: v[-1].decode("utf-8", errors="replace")
                                         for k, v in self.request.body_arguments.items()})
        except ValidationError as exc:
            raise ApiError(400, describe(exc, whole="body")) from None

    def cookie_flags(self) -> dict[str, Any]:
        return {"httponly": True, "samesite": "Lax", "path": "/"}

    def cart_key(self, *, create: bool = False) -> str | None:
        """The cart of this request: the user's when logged in, else the anonymous cart cookie's."""
        if self.user_id:
            return f"user:{self.user_id}"
        token = self.anon_token()
        if token is None and create:
            token = secrets.token_urlsafe(18)
            self.set_signed_cookie(CART_COOKIE, token, expires_days=30, **self.cookie_flags())
        return f"anon:{token}" if token else None

    def anon_token(self) -> str | None:
        value = self.get_signed_cookie(CART_COOKIE, max_age_days=30)
        token = value.decode(errors="replace") if value else None
        return token if token and _TOKEN.match(token) else None


class IndexHandler(ShopHandler):
    def get(self) -> None:
        self.finish({"service": "shop", "user_id": self.user_id, "endpoints": [
            "POST /login", "POST /logout", "GET /search?q=", "GET /categories", "GET /products/<id>",
            "GET /cart", "POST /cart/items", "DELETE /cart/items/<id>", "POST /checkout", "GET /orders/<id>"]})


class HealthHandler(ShopHandler):
    async def get(self) -> None:
        count = await self.run(self.store.product_count)
        self.finish({"status": "ok", "service": "shop", "products": count})


class LoginHandler(ShopHandler):
    async def post(self) -> None:
        login = self.body(LoginRequest)
        user_id = await self.run(self.store.authenticate, login.user, login.password)
        if user_id is None:
            log.info("login refused for %r from %s", login.user[:32], self.request.remote_ip)
            raise ApiError(401, "wrong user or password")
        anon = self.anon_token()
        if anon:
            await self.run(self.store.merge_carts, f"anon:{anon}", f"user:{user_id}")
            self.clear_cookie(CART_COOKIE, path="/")
        self.set_signed_cookie(SESSION_COOKIE, user_id, expires_days=SESSION_DAYS, **self.cookie_flags())
        self.set_user(user_id)
        log.info("login %s", user_id)
        self.finish({"user_id": user_id})


class LogoutHandler(ShopHandler):
    def post(self) -> None:
        self.clear_cookie(SESSION_COOKIE, path="/")
        if self.user_id:
            log.info("logout %s", self.user_id)
        self.finish({"logged_out": self.user_id is not None})


class SearchHandler(ShopHandler):
    async def get(self) -> None:
        q = self.get_query_argument("q", "").strip()
        if not q:
            raise ApiError(400, "query q must not be empty")
        if len(q) > MAX_QUERY_CHARS:
            raise ApiError(400, f"query q longer than {MAX_QUERY_CHARS} characters")
        limit = self.get_query_argument("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= 100:
            raise ApiError(400, "limit must be a whole number from 1 to 100")
        category = self.get_query_argument("category", None)
        if category is not None and category not in CATEGORIES:
            raise ApiError(400, f"unknown category {category[:40]!r}")
        total, rows = await self.run(self.store.search, q, limit=int(limit), category=category)
        self.finish({"query": q, "total": total, "product_ids": [r["id"] for r in rows],
                     "products": [product_json(r) for r in rows]})


class ProductHandler(ShopHandler):
    async def get(self, pid: str) -> None:
        row = await self.run(self.store.product, pid) if len(pid) <= 16 else None
        if row is None:
            raise ApiError(404, f"unknown product {pid[:40]}")
        self.finish(product_json(row))


class CategoriesHandler(ShopHandler):
    async def get(self) -> None:
        self.finish({"categories": await self.run(self.store.categories)})


class CartHandler(ShopHandler):
    async def get(self) -> None:
        key = self.cart_key()
        self.finish(cart_json(await self.run(self.store.cart, key) if key else []))


class CartItemsHandler(ShopHandler):
    async def post(self) -> None:
        item = self.body(CartItemRequest)
        lines = await self.run(self.store.add_to_cart, self.cart_key(create=True), item.product_id, item.qty)
        self.finish(cart_json(lines))


class CartItemHandler(ShopHandler):
    async def delete(self, pid: str) -> None:
        key = self.cart_key()
        self.finish(cart_json(await self.run(self.store.remove_from_cart, key, pid) if key else []))


class CheckoutHandler(ShopHandler):
    """The cart becomes a pending order, placed with its amount in the order service, then paid at the provider.

    The order service must know the order before the provider's notify comes:
    a notify pays only an order placed there, for its amount.
    """

    async def post(self) -> None:
        key = self.cart_key()
        if key is None:
            raise ApiError(409, "cart is empty")
        order = await self.run(self.store.create_order, key, self.user_id)
        try:
            await self.orders.place(order.order_id, order.total_cents)
        except OrderServiceError as exc:
            return await self.not_started(order.order_id, exc, "payment unavailable, try again")
        try:
            payment_id = await self.payments.pay(order.order_id, order.total_cents)
        except PaymentError as exc:
            return await self.not_started(order.order_id, exc, "payment provider unavailable, try again")
        await self.run(self.store.payment_started, order, payment_id)
        log.info("order %s pending: %s yuan, %d items, user %s, payment %s", order.order_id,
                 format_amount(order.total_cents), len(order.lines), self.user_id or "-", payment_id)
        self.set_status(201)
        self.finish({**order_json(order), "payment_id": payment_id})

    async def not_started(self, order_id: str, exc: Exception, message: str) -> None:
        await self.run(self.store.payment_failed, order_id)
        log.warning("order %s: payment not started, cart kept: %s", order_id, exc)
        self.set_status(502)
        self.finish({"error": message, "order_id": order_id})


class OrderHandler(ShopHandler):
    """An order of this session's cart; one not shown paid yet is looked up in the order service, which owns
    payment (a checkout whose provider call failed may have been paid all the same)."""

    async def get(self, order_id: str) -> None:
        key = self.cart_key()
        order = await self.run(self.store.order, order_id, key) if key and len(order_id) <= 64 else None
        if order is None:
            raise ApiError(404, f"unknown order {order_id[:64]}")
        if order.status != "paid":
            try:
                paid = await self.orders.status(order_id) == "paid"
            except OrderServiceError as exc:   # shown as the shop last knew it
                log.warning("order %s: payment status not known: %s", order_id, exc)
                paid = False
            if paid:
                order = await self.run(self.store.payment_done, order)
        self.finish(order_json(order))


class NotFoundHandler(ShopHandler):
    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, f"no such endpoint {self.request.path[:100]}")
