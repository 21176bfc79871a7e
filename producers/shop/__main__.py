"""Run the demo shop: ``python -m producers.shop [--database-url URL] [--provider-url URL] [--notify-url URL]``.

Listens on RTDASH_BIND_HOST:RTDASH_SHOP_PORT (8002). The store is SQLite at
<RTDASH_HOME>/shop.db unless --database-url is given; on the first start of an
empty database the catalogue (--seed, --products) and the demo users
(--users; password of ``userNNNN`` is ``demo-userNNNN``) are generated. The
cookie secret is generated under <RTDASH_HOME>/keys/ on first start. Payments
go to the payment provider simulator (default http://127.0.0.1:<RTDASH_PAYMENT_PROVIDER_PORT>),
which sends its notify to --notify-url (default: the gateway's public notify
path); each order is placed first in the order service's internal API
(RTDASH_ORDER_SERVICE_INTERNAL_URL, default http://127.0.0.1:<RTDASH_ORDER_SERVICE_INTERNAL_PORT>).
Stops cleanly on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from rtdash.database import make_engine
from rtdash.logs import setup_logging
from rtdash.payments import default_notify_url
from rtdash.service import listen, until_stopped
from rtdash.settings import Settings

from .app import ensure_cookie_secret, make_app
from .catalogue import DEFAULT_PRODUCTS, DEFAULT_SEED, DEFAULT_USERS
from .orders import OrderServiceClient
from .payment import PaymentClient, default_provider_url
from .store import ShopStore

log = logging.getLogger("rtdash.shop")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m producers.shop", description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default="", help="SQLAlchemy URL (default: SQLite <home>/shop.db)")
    parser.add_argument("--provider-url", default="", help="payment provider base URL")
    parser.add_argument("--notify-url", default="", help="where the provider sends the payment notify")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="catalogue seed (first start only)")
    parser.add_argument("--products", type=int, default=DEFAULT_PRODUCTS, help="catalogue size (first start)")
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help="demo users (first start)")
    return parser.parse_args(argv)


async def main(settings: Settings | None = None, args: argparse.Namespace | None = None) -> None:
    settings = settings or Settings()
    args = args or parse_args([])
    url = args.database_url or f"sqlite:///{(settings.home / 'shop.db').resolve()}"
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    db = ThreadPoolExecutor(max_workers=1 if url.startswith("sqlite") else 8, thread_name_prefix="shop-db")
    loop = asyncio.get_running_loop()
    store = await loop.run_in_executor(db, ShopStore, engine)
    await loop.run_in_executor(db, lambda: store.seed(seed=args.seed, product_count=args.products,
                                                      user_count=args.users))
    payments = PaymentClient(args.provider_url or default_provider_url(settings),
                             args.notify_url or default_notify_url(settings))
    orders = OrderServiceClient(settings.order_service_internal)
    app = make_app(settings, store=store, db=db, payments=payments, orders=orders,
                   cookie_secret=ensure_cookie_secret(settings.keys_dir))
    server = listen(app, settings, settings.shop_port, max_body_size=64 * 1024, xheaders=False)
    log.info("shop listening on http://%s:%d (database %s, orders %s, payments %s, notify %s)", settings.bind_host,
             settings.shop_port, engine.url.render_as_string(hide_password=True), orders.orders_url,
             payments.pay_url, payments.notify_url)
    await until_stopped()
    log.info("shop stopping")
    server.stop()
    await server.close_all_connections()
    payments.close()
    orders.close()
    db.shutdown(wait=True)
    engine.dispose()
    log.info("shop stopped")


if __name__ == "__main__":
    setup_logging()
    asyncio.run(main(args=parse_args()))
