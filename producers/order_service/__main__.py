"""Run the order service: ``python -m producers.order_service``.

Listens on RTDASH_BIND_HOST:RTDASH_ORDER_SERVICE_PORT, stores orders in
RTDASH_DATABASE_URL (SQLite under RTDASH_HOME by default) and relays order
events to the Kafka topic RTDASH_ORDERS_TOPIC. Stops cleanly on SIGTERM/SIGINT:
stop accepting, finish the database work, flush the outbox relay.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from tornado.httpserver import HTTPServer

from rtdash.logs import setup_logging
from rtdash.payments import ensure_provider_keys, load_public_key
from rtdash.service import until_stopped
from rtdash.settings import Settings

from .app import make_app
from .relay import RelayProcess
from .store import OrderStore, make_engine
from .writer import GroupWriter

log = logging.getLogger("rtdash.order_service")


async def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    # The event loop and the database writer share the GIL; a shorter switch interval keeps
    # either from waiting up to 5 ms for the other on every handoff.
    sys.setswitchinterval(0.0005)
    ensure_provider_keys(settings.keys_dir)
    engine = make_engine(settings.database, checkpoint_pages=20_000)  # the relay checkpoints
    # SQLite has one writer at a time: one database thread keeps writes in order without lock waits.
    db = ThreadPoolExecutor(max_workers=1 if settings.database.startswith("sqlite") else 8,
                            thread_name_prefix="orders-db")
    store = OrderStore(engine, topic=settings.orders_topic)
    relay = RelayProcess(settings.database, topic=settings.orders_topic, bootstrap_servers=settings.kafka_servers)
    store.on_outbox_write = relay.wake
    relay.start()
    writer = GroupWriter(store, db)
    app = make_app(settings, store=store, db=db, writer=writer, relay=relay,
                   public_key=load_public_key(settings.keys_dir))
    server = HTTPServer(app, max_body_size=max(65536, settings.notify_max_body_bytes), xheaders=False)
    server.listen(settings.order_service_port, address=settings.bind_host)
    log.info("order service listening on http://%s:%d (database %s, topic %s)", settings.bind_host,
             settings.order_service_port, engine.url.render_as_string(hide_password=True), settings.orders_topic)
    await until_stopped()
    log.info("order service stopping")
    server.stop()
    await server.close_all_connections()
    await writer.stop()
    db.shutdown(wait=True)
    await asyncio.get_running_loop().run_in_executor(None, relay.stop)
    engine.dispose()
    log.info("order service stopped")


if __name__ == "__main__":
    import uvloop

    setup_logging()
    uvloop.run(main())
