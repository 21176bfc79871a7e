"""Run the order service: ``python -m producers.order_service``.

Listens on RTDASH_BIND_HOST:RTDASH_ORDER_SERVICE_PORT, stores orders in
RTDASH_DATABASE_URL (SQLite under RTDASH_HOME by default) and relays order
events to the Kafka topic RTDASH_ORDERS_TOPIC. Two processes: this one
answers HTTP (reads each notify's form), a child (store_process.py) takes
them in by groups (verify, parse, store) and runs the outbox relay. Stops cleanly on
SIGTERM/SIGINT: stop accepting, commit what is waiting, let the relay publish
and mark it, then exit. If the child dies, the service stops and says so.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from tornado.httpserver import HTTPServer

from rtdash.logs import setup_logging
from rtdash.payments import ensure_provider_keys, load_public_key
from rtdash.service import until_stopped
from rtdash.settings import Settings

from .app import make_app
from .store import OrderStore, make_engine
from .store_process import StoreProcess
from .writer import GroupWriter

log = logging.getLogger("rtdash.order_service")


async def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    ensure_provider_keys(settings.keys_dir)
    stopping = asyncio.Event()

    def store_exited(code: int | None) -> None:
        log.error("the order store process exited unexpectedly (code %s); stopping the order service", code)
        stopping.set()

    # Reads only (/healthz), but made first: it creates the tables, or refuses a database of
    # another layout, before the store process opens it.
    engine = make_engine(settings.database)
    store = OrderStore(engine, topic=settings.orders_topic)
    # This process answers HTTP; the order store process takes the notifies in and relays the outbox.
    store_process = StoreProcess(settings, on_exit=store_exited)
    store_process.start()
    db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orders-db")
    writer = GroupWriter(store_process.accept)
    app = make_app(settings, store=store, db=db, writer=writer, relay=store_process,
                   public_key=load_public_key(settings.keys_dir))
    server = HTTPServer(app, max_body_size=max(65536, settings.notify_max_body_bytes), xheaders=False)
    server.listen(settings.order_service_port, address=settings.bind_host)
    log.info("order service listening on http://%s:%d (database %s, topic %s)", settings.bind_host,
             settings.order_service_port, engine.url.render_as_string(hide_password=True), settings.orders_topic)
    await until_stopped(stopping)
    log.info("order service stopping")
    server.stop()
    await server.close_all_connections()
    await writer.stop()
    await store_process.stop()
    db.shutdown(wait=True)
    engine.dispose()
    log.info("order service stopped")


if __name__ == "__main__":
    import uvloop

    setup_logging()
    uvloop.run(main())
