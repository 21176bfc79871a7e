"""Run the order service: ``python -m producers.order_service``.

Listens on RTDASH_BIND_HOST:RTDASH_ORDER_SERVICE_PORT for payment notifies
(the gateway routes /order_center/ there), and on
RTDASH_ORDER_SERVICE_INTERNAL_HOST:RTDASH_ORDER_SERVICE_INTERNAL_PORT
(127.0.0.1:8005) for the internal API where the shop places its orders
(internal.py), which no gateway route reaches. Stores orders in
RTDASH_DATABASE_URL (SQLite under RTDASH_HOME by default) and relays order
events to the Kafka topic RTDASH_ORDERS_TOPIC. Verifies notifies with the
provider's public key at RTDASH_PROVIDER_PUBLIC_KEY (by default
<RTDASH_HOME>/keys/payment_provider_public.pem), and does not start without
one; it never creates a key. Stops cleanly on
SIGTERM/SIGINT: stop accepting, commit what is waiting, let the relay publish
and mark it, then exit. If the store process dies, the service stops and says so.
Prometheus metrics at /metrics on the public port, both processes' merged
(multiprocess mode, in <RTDASH_HOME>/run/metrics/order_service, emptied at start).

The path of one payment notify, in two processes:

1. app.py, this process: `NotifyEndpoint` reads the request's body (`Received`).
2. writer.py: `GroupWriter` gathers it with the notifies waiting beside it into a group.
3. store_process.py: `StoreProcess.accept` sends the group to the order store
   process over a pipe (handoff.py names the messages: `TakeIn`, `TakenIn`, ...).
4. intake.py, store process: `NotifyIntake` reads each form, verifies its
   signature, parses it and stores the paid ones in one transaction (store.py:
   the order and its outbox row together); one `Reply` per notify goes back.
5. app.py: the reply is written; the relay thread (relay.py) publishes the
   outbox rows to Kafka.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from rtdash.database import make_engine
from rtdash.logs import setup_logging
from rtdash.metrics import multiprocess_dir, prepare_multiprocess
from rtdash.keys import KeyFileError, load_public_key
from rtdash.service import listen, until_stopped
from rtdash.settings import Settings

from .app import make_app
from .internal import MAX_BODY_BYTES as INTERNAL_MAX_BODY_BYTES, make_internal_app
from .store import OrderStore
from .store_process import StoreProcess
from .writer import GroupWriter

log = logging.getLogger("rtdash.order_service")


async def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    try:  # verifying needs the provider's public key, installed beforehand: no key, no start
        load_public_key(settings.provider_public_key_path)
    except KeyFileError as exc:
        raise SystemExit(f"order service not started: {exc}") from None
    # Before the store process starts (it inherits the directory) and before anything counts.
    prepare_multiprocess(multiprocess_dir(settings.home, "order_service"))
    stopping = asyncio.Event()

    def store_exited(code: int | None) -> None:
        log.error("the order store process exited unexpectedly (code %s); stopping the order service", code)
        stopping.set()

    # Reads only (/healthz), but made first: it creates the tables, or refuses a database of
    # another layout, before the store process opens it.
    engine = make_engine(settings.database)
    store = OrderStore(engine, topic=settings.orders_topic)
    store_process = StoreProcess(settings, on_exit=store_exited)
    store_process.start()
    db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orders-db")
    writer = GroupWriter(store_process.accept)
    app = make_app(settings, writer=writer, store=store, db=db, relay_status=store_process.status)
    server = listen(app, settings, settings.order_service_port,
                    max_body_size=max(65536, settings.notify_max_body_bytes), xheaders=False)
    internal = listen(make_internal_app(writer=writer, store=store, db=db), settings,
                      settings.order_service_internal_port, address=settings.order_service_internal_host,
                      max_body_size=INTERNAL_MAX_BODY_BYTES, xheaders=False)
    log.info("order service listening on http://%s:%d, internal API on http://%s:%d (database %s, topic %s)",
             settings.bind_host, settings.order_service_port, settings.order_service_internal_host,
             settings.order_service_internal_port, engine.url.render_as_string(hide_password=True),
             settings.orders_topic)
    await until_stopped(stopping)
    log.info("order service stopping")
    for listener in (server, internal):
        listener.stop()
    for listener in (server, internal):
        await listener.close_all_connections()
    await writer.stop()
    await store_process.stop()
    db.shutdown(wait=True)
    engine.dispose()
    log.info("order service stopped")


if __name__ == "__main__":
    import uvloop

    setup_logging()
    uvloop.run(main())
