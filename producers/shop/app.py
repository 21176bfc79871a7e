"""The demo shop's HTTP API (JSON): login, search, products, cart, checkout, orders.

Handlers parse, delegate to the store on the database executor, and reply.
Every error is a 4xx/5xx with a JSON body ``{"error": "..."}``.

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
import json
import logging
import re
import secrets
from concurrent.futures import Executor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar

import tornado.web

from rtdash.payments import format_amount
from rtdash.settings import Settings

from .payment import PaymentClient, PaymentError
from .store import MAX_QTY, CATEGORIES, CartLine, Order, ShopError, ShopStore

log = logging.getLogger("rtdash.shop")

SESSION_COOKIE = "shop_session"
CART_COOKIE = "shop_cart"
SESSION_DAYS = 7
MAX_QUERY_CHARS = 100
COOKIE_SECRET_FILE = "shop_cookie_secret"
_USER_ID = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{16,64}$")
T = TypeVar("T")


def ensure_cookie_secret(keys_dir: Path) -> str:
    """The secret that signs the shop's cookies, generated on first start (never committed)."""
    path = keys_dir / COOKIE_SECRET_FILE
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip()


class ApiError(tornado.web.HTTPError):
    """An error the client caused; `message` goes into the JSON body."""

    def __init__(self, status: int, message: str):
        super().__init__(status)
        self.message = message


# --- JSON shapes ----------------------------------------------------------------------

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


# --- handlers --------------------------------------------------------------------------

class ShopHandler(tornado.web.RequestHandler):
    """JSON replies, the session, the cart key, and store calls on the executor."""

    user_id: str | None = None

    def initialize(self, *, store: ShopStore, db: Executor, payments: PaymentClient | None = None) -> None:
        self.store = store
        self.db = db
        self.payments = payments

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

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            message = exc.message
        elif isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code < 500:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif status_code < 500:
            message = self._reason
        else:
            message = "internal error"
        self.finish({"error": message})

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call on the database executor; ShopError becomes a 4xx."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.db, functools.partial(fn, *args, **kwargs))
        except ShopError as exc:
            raise ApiError(exc.status, str(exc)) from None

    def body(self) -> dict[str, Any]:
        """The request's fields, from a JSON object or a urlencoded/multipart form."""
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                data = json.loads(self.request.body or b"{}")
            except (UnicodeDecodeError, ValueError):
                raise ApiError(400, "body is not valid JSON") from None
            if not isinstance(data, dict):
                raise ApiError(400, "body must be a JSON object")
            return data
        return {k: v[-1].decode("utf-8", errors="replace") for k, v in self.request.body_arguments.items()}

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
        data = self.body()
        user, password = data.get("user", data.get("username")), data.get("password")
        if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
            raise ApiError(400, "give user and password")
        if len(user) > 64 or len(password) > 256:
            raise ApiError(400, "user or password too long")
        user_id = await self.run(self.store.authenticate, user, password)
        if user_id is None:
            log.info("login refused for %r from %s", user[:32], self.request.remote_ip)
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
        data = self.body()
        pid, qty = data.get("product_id"), data.get("qty", 1)
        if not isinstance(pid, str) or not pid or len(pid) > 16:
            raise ApiError(400, "give product_id, e.g. P00042")
        if isinstance(qty, str) and qty.isdigit():
            qty = int(qty)
        if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= MAX_QTY:
            raise ApiError(400, f"qty must be a whole number from 1 to {MAX_QTY}")
        lines = await self.run(self.store.add_to_cart, self.cart_key(create=True), pid, qty)
        self.finish(cart_json(lines))


class CartItemHandler(ShopHandler):
    async def delete(self, pid: str) -> None:
        key = self.cart_key()
        self.finish(cart_json(await self.run(self.store.remove_from_cart, key, pid) if key else []))


class CheckoutHandler(ShopHandler):
    async def post(self) -> None:
        key = self.cart_key()
        if key is None:
            raise ApiError(409, "cart is empty")
        order = await self.run(self.store.create_order, key, self.user_id)
        try:
            payment_id = await self.payments.pay(order.order_id, order.total_cents)
        except PaymentError as exc:
            await self.run(self.store.payment_failed, order.order_id)
            log.warning("order %s: payment not started, cart kept: %s", order.order_id, exc)
            self.set_status(502)
            return self.finish({"error": "payment provider unavailable, try again", "order_id": order.order_id})
        await self.run(self.store.payment_started, order, payment_id)
        log.info("order %s pending: %s yuan, %d items, user %s, payment %s", order.order_id,
                 format_amount(order.total_cents), len(order.lines), self.user_id or "-", payment_id)
        self.set_status(201)
        self.finish({**order_json(order), "payment_id": payment_id})


class OrderHandler(ShopHandler):
    async def get(self, order_id: str) -> None:
        key = self.cart_key()
        order = await self.run(self.store.order, order_id, key) if key and len(order_id) <= 64 else None
        if order is None:
            raise ApiError(404, f"unknown order {order_id[:64]}")
        self.finish(order_json(order))


class NotFoundHandler(ShopHandler):
    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, f"no such endpoint {self.request.path[:100]}")


def make_app(settings: Settings, *, store: ShopStore, db: Executor, payments: PaymentClient,
             cookie_secret: str) -> tornado.web.Application:
    """The shop's routes; the store, executor and payment client reach handlers through initialize()."""
    deps = dict(store=store, db=db, payments=payments)
    return tornado.web.Application([
        (r"/", IndexHandler, deps),
        (r"/healthz", HealthHandler, deps),
        (r"/login", LoginHandler, deps),
        (r"/logout", LogoutHandler, deps),
        (r"/search", SearchHandler, deps),
        (r"/categories", CategoriesHandler, deps),
        (r"/products/([^/]+)", ProductHandler, deps),
        (r"/cart", CartHandler, deps),
        (r"/cart/items", CartItemsHandler, deps),
        (r"/cart/items/([^/]+)", CartItemHandler, deps),
        (r"/checkout", CheckoutHandler, deps),
        (r"/orders/([^/]+)", OrderHandler, deps),
    ], cookie_secret=cookie_secret, default_handler_class=NotFoundHandler, default_handler_args=deps)
