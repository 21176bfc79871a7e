"""The demo shop's HTTP API (JSON): login, search, products, cart, checkout, orders.

`make_app` is the route table; the handlers are in handlers.py, the JSON they
read and write in shapes.py, the store in store.py.
"""
from __future__ import annotations

import secrets
from concurrent.futures import Executor
from pathlib import Path

import tornado.web
from prometheus_client import CollectorRegistry

from rtdash.keys import ensure_secret
from rtdash.metrics import metrics_route, request_logger
from rtdash.settings import Settings

from .handlers import (CartHandler, CartItemHandler, CartItemsHandler, CategoriesHandler, CheckoutHandler,
                       HealthHandler, IndexHandler, LoginHandler, LogoutHandler, NotFoundHandler, OrderHandler,
                       ProductHandler, SearchHandler)
from .orders import OrderServiceClient
from .payment import PaymentClient
from .store import ShopStore

COOKIE_SECRET_FILE = "shop_cookie_secret"


def ensure_cookie_secret(keys_dir: Path) -> str:
    """The secret that signs the shop's cookies, generated on first start (0600 in a 0700 folder, never committed)."""
    return ensure_secret(keys_dir / COOKIE_SECRET_FILE, lambda: secrets.token_urlsafe(48).encode()).decode().strip()


def make_app(settings: Settings, *, store: ShopStore, db: Executor, payments: PaymentClient,
             orders: OrderServiceClient, cookie_secret: str) -> tornado.web.Application:
    """The shop's routes; the store, executor and clients (provider, order service) reach handlers through
    initialize(). /metrics counts requests by route and status (rtdash.metrics)."""
    deps = dict(store=store, db=db, payments=payments, orders=orders)
    registry = CollectorRegistry()
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
        metrics_route(registry),
    ], cookie_secret=cookie_secret, default_handler_class=NotFoundHandler, default_handler_args=deps,
        log_function=request_logger(registry))
